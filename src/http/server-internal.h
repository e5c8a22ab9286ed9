/* The HTTP server's insides shared by server.c (connections, parsing,
 * timers) and server-api.c (the request and response API handlers use). */
#pragma once

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "http/http-internal.h"

#define DEF_MAX_BODY (8u << 20)
#define DEF_MAX_HEAD (64u << 10)
#define PARSER_MAX_HEAD (80u << 10)
#define DEF_MAX_HEADERS 100u
#define DEF_MAX_CONNS 1024u
#define DEF_MAX_CONNS_PER_ADDR 256u
#define DEF_HEADER_TIMEOUT 10000u
#define DEF_IDLE_TIMEOUT 60000u
#define DEF_BODY_TIMEOUT 60000u
#define DEF_WRITE_TIMEOUT 60000u
#define LINGER_MS 2000u
#define DISCARD_MAX (256u << 10)
#define BODY_KEEP_MAX (64u << 10)
#define MAX_LISTENERS 8

union stream_u {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
};

struct ssl_ctx_st; /* OpenSSL's SSL_CTX */
struct http_tls;   /* tls.c: a connection's TLS state */

struct listener {
        union stream_u h;
        struct lg_http_server *srv;
        bool is_unix;
        char *path;
        struct ssl_ctx_st *tls_ctx; /* a TLS listener's context, else NULL */
};

/* A client address as the per-address limit counts it (server-limits.c). */
struct peer_addr {
        uint8_t b[16];
};

/* Open connections per client address: open addressing, linear probing,
 * at most half full; a slot with n == 0 is empty. */
struct peer_table {
        struct peer_slot *slots;
        size_t cap, used;
        uint64_t seed[2]; /* SipHash key, random: nobody can aim at one probe chain */
};

enum conn_state {
        C_IDLE,   /* no byte of the next request yet */
        C_HEAD,   /* reading a head */
        C_ACTIVE, /* head complete: body, handler, response */
};

struct lg_http_server {
        uv_loop_t *loop;
        struct lg_http_server_config cfg;
        struct listener *listeners[MAX_LISTENERS];
        size_t nlisteners;
        unsigned listeners_open; /* listener handles not yet closed */
        struct lg_http_request *conns;
        unsigned nconns; /* open sockets */
        unsigned nlive;  /* allocated connection structs */
        struct peer_table peers;
        /* Connections never authenticated and without a request in flight,
         * longest there first: the ones closed to make room (server-limits.c). */
        struct lg_http_request *anon_head, *anon_tail;
        uv_idle_t kick;
        bool kick_on;
        struct lg_http_request *kick_head, *kick_tail;
        struct http_pool rbufs;
        struct http_wr_pool wrs;
        char *scratch;
        size_t scratch_cap;
        int closing; /* 0, 1 graceful, 2 abort */
        bool finishing;
        void (*done)(void *ud);
        void *done_ud;
};

struct lg_http_request {
        union stream_u h;
        uv_timer_t timer;
        uv_shutdown_t shutdown_req;
        struct lg_http_server *srv;
        struct lg_http_request *prev, *next, *kick_next;
        http_parser parser;
        int refs;
        bool is_unix;
        struct http_tls *tls; /* NULL for plain connections */

        /* connection state */
        bool closing;       /* uv_close called */
        bool lingering;     /* final response queued, draining input */
        bool in_kick, in_parse;
        bool parse_stopped; /* nothing more is parsed on this connection */
        bool reading;
        bool fresh;         /* no request yet on this connection */
        bool timer_on;
        bool msg_begun;
        bool authenticated; /* lg_http_request_set_authenticated was called */
        bool peer_counted;  /* counted in srv->peers under `peer` */
        bool in_anon;       /* on the srv->anon_* list */
        struct peer_addr peer;
        struct lg_http_request *anon_prev, *anon_next;
        enum conn_state state;
        uint64_t timer_due, state_since, last_read, write_since, linger_until;
        char *rbuf;
        size_t rpos, rlen;
        bool pinned; /* bytes before rpos are still referenced */
        struct http_head head;
        size_t trailer_bytes;

        /* the request */
        const char *target, *path, *query;
        const char **segs;
        size_t segcap;
        int nsegs;
        struct lg_http_header *params;
        size_t paramcap;
        int nparams;
        int version;
        int64_t content_length;
        bool expect_continue, continue_sent, is_head, keep_alive;
        enum lg_http_body_mode mode;
        bool dispatched; /* on_request was called */
        bool owned;      /* ... and the handler has not ended it */
        bool body_done, body_reading, paused, discard;
        uint64_t body_limit, body_received;
        char *body;
        size_t body_cap;
        const char *body_ptr;
        size_t body_len;
        void *userdata;
        lg_http_abort_cb on_abort;
        void *abort_ud;
        lg_http_data_cb on_data;
        lg_http_end_cb on_end;
        void *body_ud;
        int aborted;
        bool abort_pending;

        /* the response */
        bool resp_started, resp_ended, resp_chunked, resp_no_body, close_after, head_pending;
        int64_t resp_cl;
        uint64_t resp_written;
        char *hbuf;
        size_t hcap, hlen;
        unsigned writes;
        struct http_wr *done_wrs;
};

int http_srv_body_too_large(struct lg_http_request *c, uint64_t limit);
void http_srv_conn_close(struct lg_http_request *c, int reason);
void http_srv_conn_flush_head(struct lg_http_request *c);
ssize_t http_srv_conn_format_head(struct lg_http_request *c, char **buf, size_t *cap, int status,
                                const struct lg_http_header *hdrs, size_t n, int64_t cl,
                                const char *content_type);
void http_srv_conn_kick(struct lg_http_request *c);
void http_srv_conn_release(struct lg_http_request *c);
void http_srv_conn_send_continue(struct lg_http_request *c);
/* 0 queued or written, 1 written at once with wr->cb (which runs from the
 * loop), < 0 failed (wr->cb will not run). */
int http_srv_conn_submit(struct lg_http_request *c, struct http_wr *wr, bool stable);
/* Complete wr (its callback) from the loop, after those deferred before. */
void http_srv_conn_defer_wr(struct lg_http_request *c, struct http_wr *wr);
void http_srv_on_write(uv_write_t *w, int status);

/* server-limits.c: who may connect. http_srv_admit decides on a connection
 * just accepted (per-address and global limits, making room by closing the
 * longest idle unauthenticated connection) and answers and closes it when
 * refused (false). http_srv_anon_update keeps the anon list true after a
 * change of state, authenticated, lingering or closing;
 * http_srv_peer_release uncounts a closed connection. */
bool http_srv_admit(struct listener *l, struct lg_http_request *c);
void http_srv_anon_update(struct lg_http_request *c);
void http_srv_peer_release(struct lg_http_request *c);
void http_srv_peers_free(struct lg_http_server *srv);

/* tls.c: TLS under a connection (see there). The server calls the read
 * start/stop functions instead of libuv's on TLS connections, encrypts what
 * it submits, calls http_tls_drain from its deferred kick, and
 * http_tls_linger when it begins a lingering close (close_notify, queued
 * before the FIN; from then on its own callbacks read the socket raw). */
int http_tls_ctx_new(const char *cert_file, const char *key_file, struct ssl_ctx_st **ret,
                     struct lg_error *err);
void http_tls_ctx_free(struct ssl_ctx_st *ctx);
int http_tls_conn_new(struct lg_http_request *c, struct ssl_ctx_st *ctx);
void http_tls_conn_free(struct http_tls *t);
int http_tls_read_start(struct lg_http_request *c, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
void http_tls_read_stop(struct lg_http_request *c);
void http_tls_drain(struct lg_http_request *c);
int http_tls_encrypt(struct lg_http_request *c, struct http_wr *wr);
void http_tls_linger(struct lg_http_request *c);
