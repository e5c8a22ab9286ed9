/* Shared pieces of the HTTP tests: a test application (the handler behind
 * the routes below), a server running its own loop in a thread, and a raw
 * blocking socket client for byte-exact and hostile input.
 *
 * Routes of the test application:
 *   GET  /hello                  200 "hello"
 *   GET  /auth                   marks the connection authenticated
 *                                (lg_http_request_set_authenticated); 200
 *   *    /echo                   BUFFER; echoes the body (Content-Type kept)
 *   *    /stream-echo            STREAM; echoes the body as it arrives, with
 *                                backpressure (pause, write, resume)
 *   *    /stream-reject          STREAM; answers 403 without reading the body
 *   *    /upload                 STREAM; counts body bytes, answers the count
 *   GET  /big?n=N                N pattern bytes, chunked, copied writes
 *   GET  /big-cl?n=N             N (<= 1 MiB) pattern bytes, Content-Length, zero copy
 *   GET  /zc-order               3 x "0123456789", 4 x 1 MiB of pattern, 2 x
 *                                "0123456789", all zero copy; counts in app_stats
 *   *    /flaky                  answers the first request of a connection, cuts
 *                                the connection on the next one
 *   GET  /hold?ms=N              answers "held" after N ms
 *   GET  /hang                   never answers; ends the request on abort
 *   GET  /follow                 a line every 5 ms until the client goes away
 *   GET  /abort-mid              Content-Length 1000, 10 bytes, then abort
 *   GET  /abort-now              closes the connection without a response
 *   *    /info/...               text dump of what the server parsed
 *   GET  /peer                   the peer address
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "http/http.h"

/* Counters the application keeps (atomic: read from the test thread). */
struct app_stats {
        atomic_int requests;
        atomic_int aborts;      /* abort callbacks */
        atomic_int ended;       /* requests ended by the handler */
        atomic_int follow_lines;
        atomic_int last_abort_reason;
        /* /zc-order: writes that went out at once (1) or were queued (0),
         * callbacks run inside lg_http_response_write or out of order. */
        atomic_int zc_at_once, zc_queued, zc_inside, zc_out_of_order;
};
extern struct app_stats app_stats;

/* Fill cfg with the application's callbacks (userdata = loop). */
void app_config(struct lg_http_server_config *cfg, uv_loop_t *loop);
/* Requests still held by the application (hold/hang/follow): answered or
 * ended when the server closes them. */
int app_outstanding(void);

/* Deterministic pattern byte i of a body. */
static inline char pattern_byte(size_t i) { return (char) ('a' + (i * 7 + i / 251) % 26); }

/* A server on 127.0.0.1:<ephemeral> and <dir>/http.sock, loop in a thread.
 * What the thread uses (loop, server) is on the heap, not in the caller's
 * struct harness: a failing assertion leaves the test by longjmp with the
 * server still running, and its thread must not go on using a dead stack
 * frame. The next harness_start, or the exit, aborts and joins such a
 * server. */
struct harness_run;
struct harness {
        struct harness_run *run;
        struct lg_http_server *srv;
        int port;
        int tls_port; /* harness_start_tls only */
        char dir[64];
        char sock[128];
};
void harness_start(struct harness *h, struct lg_http_server_config *cfg);
/* The same plus a TLS listener on 127.0.0.1:<ephemeral> (h->tls_port). */
void harness_start_tls(struct harness *h, struct lg_http_server_config *cfg, const char *cert, const char *key);
/* Graceful close (and abort if `abort_too`), join, check the loop is empty. */
void harness_stop(struct harness *h, bool abort_too);
/* harness_stop(h, false) in two halves, for a test that acts in between:
 * begin the graceful close; wait for the server to be gone and check. */
void harness_close(struct harness *h);
void harness_join(struct harness *h);

/* Raw blocking client. */
struct raw {
        int fd;
        char *buf;
        size_t len, cap;
};
struct raw_resp {
        int status;
        int nhdrs;
        char names[64][64];
        char values[64][512];
        char *body;
        size_t body_len;
        bool keep_alive;
        bool chunked;
};
int raw_tcp(struct raw *r, int port);
/* With a small receive buffer set before connecting (a client that reads slowly). */
int raw_tcp_rcvbuf(struct raw *r, int port, int rcvbuf);
/* From a given local IPv4 address (127.0.0.0/8 gives many: tests of
 * per-address limits). */
int raw_tcp_from(struct raw *r, const char *src, int port);
int raw_unix(struct raw *r, const char *path);
void raw_close(struct raw *r);
int raw_write(struct raw *r, const void *data, size_t len);
int raw_puts(struct raw *r, const char *s);
/* Read one response (a 1xx counts as one). head: the request was HEAD.
 * Returns 0, or -1 on EOF/timeout/garbage. */
int raw_response(struct raw *r, struct raw_resp *resp, bool head);
void raw_resp_free(struct raw_resp *resp);
const char *raw_header(const struct raw_resp *resp, const char *name);
/* True when the server closes the connection (EOF or reset) within 10 s;
 * data arriving meanwhile is dropped. */
bool raw_wait_close(struct raw *r);
/* Send everything, shut down writing, read until EOF (or 10 s): for
 * fire-and-forget hostile input. Returns the bytes read (first `cap` kept). */
ssize_t raw_oneshot(int port, const void *data, size_t len, char *out, size_t cap);
