/* HTTP/1.1 server and client on libuv + http-parser, for legiond's API server
 * and the router (data path). See docs/http.md for the design.
 *
 * Threading: everything here runs on one uv_loop_t and is not thread-safe.
 * The process must ignore SIGPIPE (libuv writes with write(2)).
 *
 * Callbacks: no callback is ever invoked from inside the API call that could
 * trigger it; they all run from the loop (I/O, timers, a deferred "kick").
 *
 * Memory: the library never logs. Functions return >= 0 or a negative errno.
 *
 * Writes: every function that takes data plus a lg_http_write_cb works the
 * same way on both sides:
 *   - cb != NULL: zero copy. `data` must stay valid until cb(ud, status) is
 *     called; cb is called exactly once (status 0, or < 0 when the data could
 *     not be written, e.g. -ECANCELED when the connection went away), always
 *     from the loop, possibly after the request/call itself has ended.
 *   - cb == NULL: the data is copied when it cannot be written at once, so
 *     the caller may reuse the buffer when the call returns.
 *   - When the function returns < 0, nothing was accepted and cb is not
 *     called.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "common/util.h"

/* A name/value pair of NUL-terminated strings: headers (both directions)
 * and decoded query parameters. */
struct lg_http_header {
        const char *name;
        const char *value;
};

typedef void (*lg_http_write_cb)(void *ud, int status);

/* ------------------------------------------------------------------------
 * Server
 * --------------------------------------------------------------------- */

struct lg_http_server;
/* One request in flight on a connection. Valid from on_request (or on_head)
 * until the handler ends it with lg_http_respond(), lg_http_response_end()
 * or lg_http_response_abort() -- even when the client has gone away in the
 * meantime (see lg_http_request_on_abort). The handler must end every
 * request it was given by on_request exactly once. */
struct lg_http_request;

enum lg_http_body_mode {
        /* The server reads the whole body (up to max_body, else it answers
         * 413 itself), then calls on_request. */
        LG_HTTP_BODY_BUFFER = 0,
        /* on_request is called right after the head; the handler reads the
         * body with lg_http_request_read() whenever it is ready (the body is
         * not read before that, so a request can be held). */
        LG_HTTP_BODY_STREAM = 1,
};

struct lg_http_server_config {
        /* Optional: called when the head is complete, to choose how the body
         * is read. It may look at the request and set its userdata, but must
         * not respond or keep the pointer. NULL means always BUFFER. */
        enum lg_http_body_mode (*on_head)(struct lg_http_request *req, void *userdata);
        /* Required: the request, with its body (BUFFER) or without (STREAM).
         * From here the handler owns req until it ends it. */
        void (*on_request)(struct lg_http_request *req, void *userdata);
        void *userdata;

        size_t max_body;            /* buffered body limit, default 8 MiB (413) */
        size_t max_head;            /* request line + headers, default 64 KiB, at
                                     * most 80 KiB (431; 414 for the target) */
        unsigned max_headers;       /* default 100 (431) */
        /* Default 1024. A connection beyond it is let in by closing the
         * one that never authenticated (lg_http_request_set_authenticated)
         * and has waited longest without a request in flight (idle, or
         * still sending its head); when there is none, it is answered 503
         * TooManyConnections and closed. */
        unsigned max_connections;
        /* Default 256; UINT_MAX: no limit. Connections open at once from one
         * client address: an IPv4 address (also as ::ffff:a.b.c.d), or an
         * IPv6 /64 network (one client is usually given a whole /64).
         * Beyond it a new connection from that address is answered 429
         * TooManyConnections and closed; other addresses are not affected.
         * Unix-socket connections are not counted. */
        unsigned max_connections_per_addr;
        uint64_t header_timeout_ms; /* default 10 s for the whole head (408 + close) */
        uint64_t idle_timeout_ms;   /* default 60 s between keep-alive requests */
        /* Default 0: none. Otherwise connections that never authenticated
         * are closed after this long without a request in progress (from the
         * accept, and between requests), where authenticated ones get
         * header_timeout_ms and idle_timeout_ms. Set it only when the
         * handler calls lg_http_request_set_authenticated. */
        uint64_t unauth_idle_timeout_ms;
        uint64_t body_timeout_ms;   /* default 60 s without body bytes while reading (408) */
        uint64_t write_timeout_ms;  /* default 60 s for a write to complete (abort) */
};

int lg_http_server_new(uv_loop_t *loop, const struct lg_http_server_config *cfg,
                       struct lg_http_server **ret, struct lg_error *err);
/* Listen on host ("127.0.0.1", "0.0.0.0", "::1", "::", "localhost") and port
 * (0: ephemeral, see lg_http_server_port). */
int lg_http_server_listen_tcp(struct lg_http_server *srv, const char *host, uint16_t port,
                              struct lg_error *err);
/* Listen on a Unix socket; an existing socket file at path is replaced, and
 * the file is removed on close. */
int lg_http_server_listen_unix(struct lg_http_server *srv, const char *path, struct lg_error *err);
/* Listen with TLS (1.2 or 1.3; OpenSSL) on host and port: cert_file is a
 * PEM chain, the server's certificate first; key_file its PEM private key
 * (EC or RSA). Requests come to the same on_head/on_request as plain ones,
 * and everything (streamed bodies, zero-copy writes, whose callbacks run
 * once the encrypted bytes are written, pause, keep-alive) works the same.
 * ALPN: "http/1.1" when offered, else none (never h2). The TLS handshake
 * must finish within header_timeout_ms of the accept, with the first
 * request head (or within unauth_idle_timeout_ms, when that is shorter).
 * Errors (bad files, key not matching) leave nothing open. */
int lg_http_server_listen_tls(struct lg_http_server *srv, const char *host, uint16_t port, const char *cert_file,
                              const char *key_file, struct lg_error *err);
/* The bound port of the first plain TCP listener, or -ENOENT. */
int lg_http_server_port(const struct lg_http_server *srv);
/* The bound port of the first TLS listener, or -ENOENT. */
int lg_http_server_tls_port(const struct lg_http_server *srv);
/* Number of open connections (for metrics and tests). */
unsigned lg_http_server_connections(const struct lg_http_server *srv);
/* First call: stop listening, close idle connections, let requests in flight
 * finish (their responses get "Connection: close"). Second call: abort every
 * connection (abort callbacks run with -ECANCELED). done(ud) runs once the
 * last connection is gone and every request has been ended by its handler;
 * srv is freed right after done returns. */
void lg_http_server_close(struct lg_http_server *srv, void (*done)(void *ud), void *ud);

/* --- the request --- */
const char *lg_http_request_method(const struct lg_http_request *req);  /* "GET" */
const char *lg_http_request_target(const struct lg_http_request *req);  /* raw, as sent */
const char *lg_http_request_path(const struct lg_http_request *req);    /* raw, no query */
const char *lg_http_request_query(const struct lg_http_request *req);   /* raw, no '?', maybe "" */
/* Percent-decoded path segments: "/a/b%2Fc/" gives {"a", "b/c", ""}; "/"
 * gives none. Returns the count, or -EINVAL for a malformed path (bad
 * escape, %00, not origin-form). */
int lg_http_request_segments(const struct lg_http_request *req, const char *const **segs);
/* Decoded query parameters in order ('+' is a space; "a" alone has value
 * ""). Returns the count or -EINVAL for a malformed query. */
int lg_http_request_params(const struct lg_http_request *req, const struct lg_http_header **params);
/* First parameter called name, NULL if absent or the query is malformed. */
const char *lg_http_request_param(const struct lg_http_request *req, const char *name);
/* Header lookup, case-insensitive; the first one when repeated. */
const char *lg_http_request_header(const struct lg_http_request *req, const char *name);
size_t lg_http_request_headers(const struct lg_http_request *req, const struct lg_http_header **hdrs);
int lg_http_request_version(const struct lg_http_request *req); /* 10 or 11 */
/* Content-Length, -1 for a chunked body, 0 when there is none. */
int64_t lg_http_request_content_length(const struct lg_http_request *req);
/* The buffered body (BUFFER mode; NULL/0 otherwise). Valid until the request ends. */
const void *lg_http_request_body(const struct lg_http_request *req, size_t *len);
void lg_http_request_set_userdata(struct lg_http_request *req, void *userdata);
void *lg_http_request_userdata(const struct lg_http_request *req);
/* Peer: "127.0.0.1:4242", "[::1]:4242" or "unix". */
int lg_http_request_peer(const struct lg_http_request *req, char *buf, size_t cap);
/* Did the request come over TLS? */
bool lg_http_request_tls(const struct lg_http_request *req);
/* Credentials of the peer process on a Unix socket (-ENOTSOCK on TCP). */
int lg_http_request_peer_cred(const struct lg_http_request *req, pid_t *pid, uid_t *uid, gid_t *gid);

/* The request proved who sent it (e.g. a valid token): its connection
 * counts as authenticated from now on, for the rest of its life. Such
 * connections get idle_timeout_ms instead of unauth_idle_timeout_ms and are
 * never closed to make room under max_connections. Only the handler that
 * owns req may call it. */
void lg_http_request_set_authenticated(struct lg_http_request *req);

/* Called (from the loop) when the request can no longer be answered: the
 * client closed or reset the connection (-ECONNRESET; as in nginx, an EOF
 * from the client while its request is pending counts, so a client must not
 * half-close), the server answered it itself (-EFBIG body over the limit,
 * -ETIMEDOUT body or write timeout, -EPROTO malformed body), or the server is
 * being aborted (-ECANCELED). The handler must still end the request
 * (lg_http_respond etc. then just release it). Never called after the
 * handler ended the request; when the connection closes with response writes
 * pending, their callbacks (status < 0) run first, and a handler that ends
 * the request there gets no abort callback. */
typedef void (*lg_http_abort_cb)(struct lg_http_request *req, int reason, void *ud);
void lg_http_request_on_abort(struct lg_http_request *req, lg_http_abort_cb cb, void *ud);
/* 0, or the reason the request was aborted. */
int lg_http_request_aborted(const struct lg_http_request *req);

/* --- streamed request bodies (STREAM mode) --- */
typedef void (*lg_http_data_cb)(struct lg_http_request *req, const char *data, size_t len, void *ud);
typedef void (*lg_http_end_cb)(struct lg_http_request *req, void *ud);
/* Start reading the body: on_data for each piece, then on_end once (also for
 * an empty body). Sends "100 Continue" when the client asked for it (call it
 * before lg_http_response_start, or the response says Connection: close).
 * `data` is valid during on_data only -- unless the handler calls
 * lg_http_request_pause() in on_data, in which case it stays valid until
 * lg_http_request_resume(). Fails with -EFBIG (and the server answers 413)
 * when Content-Length exceeds the body limit. */
int lg_http_request_read(struct lg_http_request *req, lg_http_data_cb on_data, lg_http_end_cb on_end,
                         void *ud);
/* Limit for a streamed body (default: none); beyond it the server answers
 * 413 if no response was started, and the request is aborted with -EFBIG. */
void lg_http_request_set_body_limit(struct lg_http_request *req, uint64_t max);
/* Backpressure: no on_data until resume. */
void lg_http_request_pause(struct lg_http_request *req);
void lg_http_request_resume(struct lg_http_request *req);

/* --- responses ---
 * The server owns the framing headers: Content-Length, Transfer-Encoding,
 * Connection, Keep-Alive, Date and other hop-by-hop headers in `hdrs` are
 * ignored, so headers from an upstream can be passed through as they are.
 * Names must be tokens and values must not contain CR or LF. No body is sent
 * for HEAD requests and 1xx/204/304 statuses. Status: 200..999. */

/* A whole response; body is copied if it cannot be written at once. Ends
 * (and releases) the request whatever it returns. */
int lg_http_respond(struct lg_http_request *req, int status, const struct lg_http_header *hdrs,
                    size_t nhdrs, const void *body, size_t len);
/* {"error":{"code":code,"message":...}} with Content-Type application/json.
 * Ends the request. */
int lg_http_respond_error(struct lg_http_request *req, int status, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Start a streamed response: content_length >= 0 sends Content-Length,
 * -1 chunked encoding (close-delimited for HTTP/1.0 clients). The head is
 * sent with the first write, or from the loop if none comes first. */
int lg_http_response_start(struct lg_http_request *req, int status, const struct lg_http_header *hdrs,
                           size_t nhdrs, int64_t content_length);
/* Write body data (see "Writes" above). -ECONNRESET once aborted; -EINVAL
 * beyond the Content-Length. Empty writes are allowed. With cb, returns 1
 * when the data went to the kernel at once: cb still runs from the loop, but
 * a proxy need not pause its source until then (0: queued, wait for cb). */
int lg_http_response_write(struct lg_http_request *req, const void *data, size_t len, lg_http_write_cb cb,
                           void *ud);
/* Bytes accepted by response writes but not yet handed to the kernel. */
size_t lg_http_response_queued(const struct lg_http_request *req);
/* End a streamed response and release the request. Pending write callbacks
 * still run. If fewer bytes than the Content-Length were written, the
 * connection is closed and -EPIPE returned. */
int lg_http_response_end(struct lg_http_request *req);
/* Give up: close the connection (a started response is cut short) and
 * release the request. When the server answered the request itself (413,
 * 408, 400 while the body was read: the abort callback's -EFBIG,
 * -ETIMEDOUT, -EPROTO), it only releases it: that answer and the graceful
 * close after it go on, so that a client still sending reads the answer. */
void lg_http_response_abort(struct lg_http_request *req);

/* ------------------------------------------------------------------------
 * Client (the router's side towards function instances)
 * --------------------------------------------------------------------- */

struct lg_http_client;
struct lg_http_upstream; /* one address with its pool of keep-alive connections */
struct lg_http_call;     /* one request/response exchange */

struct lg_http_client_config {
        unsigned max_idle;           /* idle connections kept per upstream, default 64 */
        uint64_t idle_timeout_ms;    /* idle connection lifetime in the pool, default 30 s */
        uint64_t connect_timeout_ms; /* default 5 s (-ETIMEDOUT) */
        uint64_t timeout_ms;         /* default 60 s that the upstream may stay silent while a call
                                      * waits on it (-ETIMEDOUT); per call: lg_http_call_set_timeout */
        size_t max_head;             /* response head limit, default 64 KiB (-EPROTO) */
};

int lg_http_client_new(uv_loop_t *loop, const struct lg_http_client_config *cfg,
                       struct lg_http_client **ret, struct lg_error *err);
/* Closes idle connections and fails calls in flight with -ECANCELED (their
 * on_done runs); upstreams not yet freed are freed. done(ud) runs when all
 * is released; the client is freed right after. */
void lg_http_client_close(struct lg_http_client *cl, void (*done)(void *ud), void *ud);

/* address: "unix:/path/x.sock" or "/path/x.sock", or "host:port" with host
 * an IPv4 literal, "[v6]" or "localhost". */
int lg_http_upstream_new(struct lg_http_client *cl, const char *address, struct lg_http_upstream **ret,
                         struct lg_error *err);
/* Closes the idle connections; calls in flight finish normally (their
 * connections are then closed). */
void lg_http_upstream_free(struct lg_http_upstream *up);
struct lg_http_upstream_stats {
        uint64_t connects; /* connections opened (successfully or not) */
        uint64_t reuses;   /* calls that got an idle pooled connection */
        unsigned idle;     /* idle connections now in the pool */
        unsigned active;   /* connections carrying a call now */
};
void lg_http_upstream_stats(const struct lg_http_upstream *up, struct lg_http_upstream_stats *st);

struct lg_http_call_ops {
        /* The response head arrived: lg_http_call_status/_header(s)/_content_length. */
        void (*on_response)(struct lg_http_call *call, void *ud);
        /* A piece of the response body; valid during the callback unless
         * lg_http_call_pause() is called in it (then until resume). */
        void (*on_data)(struct lg_http_call *call, const char *data, size_t len, void *ud);
        /* The end, exactly once unless the call was cancelled: error 0 when
         * the response was complete, else
         *   -ECONNREFUSED  could not connect (refused, no such socket, ...),
         *   -ECONNRESET    the upstream closed/reset the connection before the
         *                  response was complete (status > 0 tells whether the
         *                  head had arrived),
         *   -ETIMEDOUT     connect or response timeout,
         *   -EPROTO        malformed or oversized response,
         *   -ECANCELED     the client is being closed.
         * lg_http_call_error() has a one-line description. Every write
         * callback of the call has run before on_done; call is freed when
         * on_done returns. */
        void (*on_done)(struct lg_http_call *call, int error, void *ud);
};

/* Start a request. hdrs may be a server request's headers as they are: the
 * client owns the framing and hop-by-hop headers (Connection,
 * Content-Length, Transfer-Encoding, Keep-Alive, TE, Trailer, Upgrade,
 * Expect, Proxy-Connection are dropped) and adds Host when missing.
 * body_length: 0 no body; > 0 Content-Length; -1 chunked. Everything passed
 * is copied. `ops` must stay valid for the life of the call. A call that
 * fails on a reused pooled connection before any byte of response is retried
 * once on a new connection when that is safe: nothing of it had been sent,
 * or it is idempotent (GET HEAD PUT DELETE OPTIONS TRACE) and none of its
 * body had been sent. Never calls back from inside this function. */
int lg_http_call_start(struct lg_http_upstream *up, const char *method, const char *target,
                       const struct lg_http_header *hdrs, size_t nhdrs, int64_t body_length,
                       const struct lg_http_call_ops *ops, void *ud, struct lg_http_call **ret);
/* Request body data (see "Writes" above). -EINVAL beyond body_length. */
int lg_http_call_write(struct lg_http_call *call, const void *data, size_t len, lg_http_write_cb cb,
                       void *ud);
/* The request body is complete (required for body_length -1, optional
 * otherwise). -EINVAL if fewer than body_length bytes were written. */
int lg_http_call_end(struct lg_http_call *call);
void lg_http_call_pause(struct lg_http_call *call);
void lg_http_call_resume(struct lg_http_call *call);
/* Override the client's timeout_ms for this call (0: none). */
void lg_http_call_set_timeout(struct lg_http_call *call, uint64_t ms);
/* Stop: no more callbacks except pending write callbacks (-ECANCELED);
 * the connection is closed; call is freed. */
void lg_http_call_cancel(struct lg_http_call *call);

/* Valid from on_response until on_done returns. */
int lg_http_call_status(const struct lg_http_call *call); /* 0 before the head */
const char *lg_http_call_header(const struct lg_http_call *call, const char *name);
size_t lg_http_call_headers(const struct lg_http_call *call, const struct lg_http_header **hdrs);
/* Response Content-Length, -1 when not known (chunked or close-delimited). */
int64_t lg_http_call_content_length(const struct lg_http_call *call);
/* One-line description of the error given to on_done ("" if none). */
const char *lg_http_call_error(const struct lg_http_call *call);

/* ------------------------------------------------------------------------
 * Helpers
 * --------------------------------------------------------------------- */

/* Percent-decode src[0..len) into dst (room for len + 1), NUL-terminated;
 * plus_space turns '+' into ' ' (query strings). Returns the decoded
 * length, or -EINVAL for a bad escape or a decoded NUL. */
ssize_t lg_http_pct_decode(const char *src, size_t len, char *dst, bool plus_space);
/* The JSON error body {"error":{"code":...,"message":...}} into buf
 * (escaped, truncated to fit); returns its length. */
size_t lg_http_error_json(char *buf, size_t cap, const char *code, const char *msg);
