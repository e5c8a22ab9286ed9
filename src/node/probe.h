/* Readiness of an HTTP server that legiond did not write (an image
 * instance): connect to ip:port over TCP again and again until it
 * answers, or a deadline passes.
 *
 * Without a path the server is ready once a TCP connection is accepted.
 * With one, each connection sends `GET <path> HTTP/1.1` and reads the
 * status line: 2xx or 3xx is ready; anything else (another status, a
 * line that is not HTTP, the connection closed or silent) counts as a
 * failed try, and the next one follows. Tries are one at a time, the
 * first ones 1 ms apart, the pause doubling up to interval_ms (a cold
 * start waits for the port to open, so the first tries are close), each
 * bounded by attempt_ms. Nothing blocks: it is libuv TCP and timers on the
 * caller's loop.
 *
 * The callback runs exactly once, on the loop, never from inside
 * lg_probe_start, unless lg_probe_cancel comes first:
 *   0           ready
 *   -ETIMEDOUT  the port never accepted a connection before the deadline
 *               ("port 8080 never opened within 60 s")
 *   -EPROTO     it did, but no try was answered 2xx/3xx before the
 *               deadline ("GET /healthz answered 500 within 60 s", or
 *               "... gave no HTTP answer within 60 s")
 * message is valid during the callback only. The probe is freed after
 * its callback returns (do not cancel it then).
 *
 * Threading: the loop's thread. Memory: the config's strings are copied. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"

typedef struct lg_probe lg_probe;
typedef void (*lg_probe_cb)(lg_probe *probe, int status, const char *message, void *userdata);

struct lg_probe_config {
        uv_loop_t *loop;
        const char *ip;        /* IPv4 literal */
        unsigned port;         /* 1-65535 */
        const char *path;      /* "/healthz"; NULL or "" = a TCP connect is enough */
        uint64_t timeout_ms;   /* the deadline from the start; 0 = 60 s */
        uint64_t interval_ms;  /* the longest pause between tries (from 1 ms, doubling); 0 = 50 ms */
        uint64_t attempt_ms;   /* one try at most (connect, answer); 0 = 1 s */
};

/* -EINVAL: a bad address, port or path (one with spaces or control characters). */
int lg_probe_start(const struct lg_probe_config *cfg, lg_probe_cb cb, void *userdata, lg_probe **ret,
                   struct lg_error *err);
/* Some try got a TCP connection accepted (the port is open). */
bool lg_probe_connected(const lg_probe *probe);
/* Stop; the callback never runs. NULL is fine. */
void lg_probe_cancel(lg_probe *probe);
/* How a duration is written in the messages: "60 s", "1.5 s", "200 ms". */
void lg_probe_fmt_ms(uint64_t ms, char *buf, size_t cap);
/* Parse an HTTP status line ("HTTP/1.1 200 OK"): the status (100-999),
 * or -EPROTO when it is not one. len bytes, no CRLF needed. */
int lg_probe_parse_status(const char *line, size_t len);
