/* HTTP/1.1 client with per-upstream keep-alive pools, for the router.
 *
 * An upstream is one address with a LIFO list of idle connections (read
 * while idle, so an upstream closing one is noticed) and a list of active
 * ones. A call takes an idle connection or opens a new one; its request head
 * is formatted at start and sent together with the first body write (or at
 * once when there is no body). When the response is complete and the request
 * fully written, the connection goes back to the pool.
 *
 * A connection struct lives while its handles are open (refs: stream and
 * timer) plus while queued on the deferred "kick" list. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "http/http-internal.h"

#define DEF_MAX_IDLE 64u
#define DEF_IDLE_TIMEOUT 30000u
#define DEF_CONNECT_TIMEOUT 5000u
#define DEF_TIMEOUT 60000u
#define DEF_MAX_HEAD (64u << 10)
#define MAX_RESP_HEADERS 1000u
#define CALL_POOL_MAX 256u

union cstream_u {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
};

struct cconn;

struct lg_http_client {
        uv_loop_t *loop;
        struct lg_http_client_config cfg;
        uv_idle_t kick;
        bool kick_on;
        struct cconn *kick_head, *kick_tail;
        struct http_wr *done_wrs; /* write callbacks to run from the loop */
        struct http_pool rbufs;
        struct http_wr_pool wrs;
        struct lg_http_call *free_calls;
        unsigned nfree_calls;
        struct lg_http_upstream *ups;
        unsigned nconns;
        bool closing, finishing;
        void (*done)(void *ud);
        void *done_ud;
};

struct lg_http_upstream {
        struct lg_http_client *cl;
        struct lg_http_upstream *prev, *next;
        bool is_unix, freed;
        char *path;
        struct sockaddr_storage addr;
        char *host; /* Host header value */
        char *name; /* for messages */
        struct cconn *idle, *active;
        unsigned nidle, nactive, nconns;
        uint64_t connects, reuses;
};

enum { L_NONE, L_IDLE, L_ACTIVE };

struct cconn {
        union cstream_u h;
        uv_timer_t timer;
        uv_connect_t connect_req;
        struct lg_http_upstream *up;
        struct cconn *prev, *next, *kick_next;
        int list;
        http_parser parser;
        struct http_head head;
        char *rbuf;
        size_t rpos, rlen;
        bool pinned;
        struct lg_http_call *call;
        int refs;
        bool connected, closing, reading, in_parse, in_kick, timer_on, keep_alive_ok;
        uint64_t timer_due, idle_since, last_io, connect_start;
        uint64_t rx; /* bytes received for the current call */
        unsigned writes;
        size_t trailer_bytes;
};

struct lg_http_call {
        struct lg_http_client *cl;
        struct lg_http_upstream *up;
        struct cconn *conn;
        struct lg_http_call *next_free;
        const struct lg_http_call_ops *ops;
        void *ud;
        char *head;
        size_t head_len, head_cap;
        int64_t body_len;
        uint64_t body_written;
        struct http_wr *queue, *queue_tail; /* not yet submitted */
        uint64_t timeout_ms;
        const struct http_head *rhead; /* response headers, in the connection */
        int status;
        int64_t resp_cl;
        int error;
        bool head_sent, sent_any, ended, body_issued, reused, retried, idempotent, is_head;
        bool got_response, resp_done, skip_msg, paused, canceled, finishing;
        char errmsg[240];
};

static int c_on_message_begin(http_parser *p);
static int c_on_header_field(http_parser *p, const char *at, size_t len);
static int c_on_header_value(http_parser *p, const char *at, size_t len);
static int c_on_headers_complete(http_parser *p);
static int c_on_body(http_parser *p, const char *at, size_t len);
static int c_on_message_complete(http_parser *p);

static const http_parser_settings csettings = {
        .on_message_begin = c_on_message_begin,
        .on_header_field = c_on_header_field,
        .on_header_value = c_on_header_value,
        .on_headers_complete = c_on_headers_complete,
        .on_body = c_on_body,
        .on_message_complete = c_on_message_complete,
};

static void cconn_close(struct cconn *c);
static struct cconn *cconn_new(struct lg_http_upstream *up);
static void cconn_connect(struct cconn *c);
static void cconn_after_io(struct cconn *c);
static void cconn_arm(struct cconn *c);
static void cconn_process(struct cconn *c);
static void cconn_unref(struct cconn *c);
static void call_check_done(struct lg_http_call *call);
static void client_maybe_done(struct lg_http_client *cl);

static inline uint64_t cnow(const struct lg_http_client *cl) { return uv_now(cl->loop); }

/* ------------------------------------------------------------------------
 * Lists, deferred work, lifetime
 * --------------------------------------------------------------------- */

static void list_remove(struct cconn *c) {
        struct lg_http_upstream *up = c->up;
        if (c->list == L_NONE)
                return;
        struct cconn **head = c->list == L_IDLE ? &up->idle : &up->active;
        if (c->prev)
                c->prev->next = c->next;
        else
                *head = c->next;
        if (c->next)
                c->next->prev = c->prev;
        if (c->list == L_IDLE)
                up->nidle--;
        else
                up->nactive--;
        c->prev = c->next = NULL;
        c->list = L_NONE;
}

static void list_push(struct cconn *c, int which) {
        struct lg_http_upstream *up = c->up;
        list_remove(c);
        struct cconn **head = which == L_IDLE ? &up->idle : &up->active;
        c->prev = NULL;
        c->next = *head;
        if (*head)
                (*head)->prev = c;
        *head = c;
        c->list = which;
        if (which == L_IDLE)
                up->nidle++;
        else
                up->nactive++;
}

static void on_ckick(uv_idle_t *h);

static void client_kick_start(struct lg_http_client *cl) {
        if (!cl->kick_on && !cl->finishing) {
                uv_idle_start(&cl->kick, on_ckick);
                cl->kick_on = true;
        }
}

static void cconn_kick(struct cconn *c) {
        struct lg_http_client *cl = c->up->cl;
        if (c->in_kick)
                return;
        c->in_kick = true;
        c->refs++;
        c->kick_next = NULL;
        if (cl->kick_tail)
                cl->kick_tail->kick_next = c;
        else
                cl->kick_head = c;
        cl->kick_tail = c;
        client_kick_start(cl);
}

/* Run wr's callback from the loop with `status`. */
static void defer_wr(struct lg_http_client *cl, struct http_wr *wr, int status) {
        wr->status = status;
        wr->next = cl->done_wrs;
        cl->done_wrs = wr;
        client_kick_start(cl);
}

static void on_ckick(uv_idle_t *h) {
        struct lg_http_client *cl = h->data;
        while (cl->done_wrs) {
                struct http_wr *wr = cl->done_wrs;
                cl->done_wrs = wr->next;
                lg_http_write_cb cb = wr->cb;
                void *ud = wr->ud;
                int st = wr->status;
                http_wr_put(&cl->wrs, wr);
                if (cb)
                        cb(ud, st);
        }
        struct cconn *list = cl->kick_head;
        cl->kick_head = cl->kick_tail = NULL;
        while (list) {
                struct cconn *c = list;
                list = c->kick_next;
                c->in_kick = false;
                cconn_process(c);
                cconn_unref(c);
        }
        if (!cl->kick_head && !cl->done_wrs && cl->kick_on) {
                uv_idle_stop(&cl->kick);
                cl->kick_on = false;
        }
        client_maybe_done(cl);
}

static void upstream_destroy(struct lg_http_upstream *up) {
        struct lg_http_client *cl = up->cl;
        if (up->prev)
                up->prev->next = up->next;
        else
                cl->ups = up->next;
        if (up->next)
                up->next->prev = up->prev;
        free(up->path);
        free(up->host);
        free(up->name);
        free(up);
}

static void cconn_free(struct cconn *c) {
        struct lg_http_upstream *up = c->up;
        struct lg_http_client *cl = up->cl;
        list_remove(c);
        http_pool_put(&cl->rbufs, c->rbuf);
        http_head_free(&c->head);
        free(c);
        cl->nconns--;
        if (--up->nconns == 0 && up->freed)
                upstream_destroy(up);
        client_maybe_done(cl);
}

static void cconn_unref(struct cconn *c) {
        if (--c->refs == 0)
                cconn_free(c);
}

static void call_free(struct lg_http_call *call) {
        struct lg_http_client *cl = call->cl;
        if (cl->nfree_calls >= CALL_POOL_MAX || cl->finishing) {
                free(call->head);
                free(call);
                return;
        }
        call->next_free = cl->free_calls;
        cl->free_calls = call;
        cl->nfree_calls++;
}

/* Queued (never submitted) writes get -ECANCELED from the loop. */
static void call_drop_queue(struct lg_http_call *call) {
        while (call->queue) {
                struct http_wr *wr = call->queue;
                call->queue = wr->next;
                defer_wr(call->cl, wr, -ECANCELED);
        }
        call->queue_tail = NULL;
}

/* The end of a call: on_done (unless cancelled), then free it. */
static void call_finish(struct lg_http_call *call, int error) {
        if (call->finishing)
                return;
        call->finishing = true;
        call->conn = NULL;
        /* Queued writes never reached the socket: their callbacks run now,
         * before on_done, as promised. */
        while (call->queue) {
                struct http_wr *wr = call->queue;
                call->queue = wr->next;
                lg_http_write_cb cb = wr->cb;
                void *ud = wr->ud;
                http_wr_put(&call->cl->wrs, wr);
                if (cb)
                        cb(ud, -ECANCELED);
        }
        call->queue_tail = NULL;
        if (error < 0 && !call->errmsg[0])
                snprintf(call->errmsg, sizeof(call->errmsg), "%s: %s", call->up->name, strerror(-error));
        if (!call->canceled && call->ops->on_done)
                call->ops->on_done(call, error, call->ud);
        call_free(call);
}

static void on_cstream_closed(uv_handle_t *h) {
        struct cconn *c = h->data;
        struct lg_http_call *call = c->call;
        if (call) {
                c->call = NULL;
                int err = call->error;
                if (!err && !call->resp_done)
                        err = -ECONNRESET;
                call_finish(call, call->resp_done ? 0 : err);
        }
        cconn_unref(c);
}

static void on_ctimer_closed(uv_handle_t *h) { cconn_unref(h->data); }

static void cconn_close(struct cconn *c) {
        if (c->closing)
                return;
        c->closing = true;
        c->reading = false;
        list_remove(c);
        uv_close(&c->h.handle, on_cstream_closed);
        uv_close((uv_handle_t *) &c->timer, on_ctimer_closed);
}

/* The connection failed: retry the call on a new connection when that is
 * safe, else record the error for on_done (run when the handle is closed). */
static void cconn_fail(struct cconn *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cconn_fail(struct cconn *c, int err, const char *fmt, ...) {
        if (c->closing)
                return;
        struct lg_http_call *call = c->call;
        if (call && !call->finishing) {
                bool quiet = c->rx == 0 && !call->got_response && !call->body_issued;
                if (err == -ECONNRESET && call->reused && !call->retried && quiet &&
                    (!call->sent_any || call->idempotent) && !c->up->freed) {
                        /* A pooled connection the upstream had closed: once
                         * more on a new one. */
                        struct cconn *n = cconn_new(c->up);
                        if (n) {
                                c->call = NULL;
                                call->conn = n;
                                n->call = call;
                                call->retried = true;
                                call->reused = false;
                                call->head_sent = call->sent_any = false;
                                cconn_close(c);
                                cconn_connect(n);
                                return;
                        }
                }
                call->error = err;
                va_list ap;
                va_start(ap, fmt);
                int n = snprintf(call->errmsg, sizeof(call->errmsg), "%s: ", call->up->name);
                if (n > 0 && (size_t) n < sizeof(call->errmsg))
                        vsnprintf(call->errmsg + n, sizeof(call->errmsg) - (size_t) n, fmt, ap);
                va_end(ap);
        }
        cconn_close(c);
}

/* ------------------------------------------------------------------------
 * Writing
 * --------------------------------------------------------------------- */

static void on_cwrite(uv_write_t *w, int status) {
        struct http_wr *wr = container_of(w, struct http_wr, req);
        struct cconn *c = wr->owner;
        struct lg_http_client *cl = c->up->cl;
        lg_http_write_cb cb = wr->cb;
        void *ud = wr->ud;
        c->writes--;
        c->last_io = cnow(cl);
        http_wr_put(&cl->wrs, wr);
        if (status < 0 && !c->closing)
                cconn_fail(c, -ECONNRESET, "write: %s", uv_strerror(status));
        if (cb)
                cb(ud, status);
        if (!c->closing && c->call) {
                if (c->call->resp_done)
                        call_check_done(c->call);
                if (!c->closing)
                        cconn_arm(c);
        }
}

static int cconn_submit(struct cconn *c, struct http_wr *wr, bool stable) {
        struct lg_http_client *cl = c->up->cl;
        size_t total = 0;
        for (unsigned i = 0; i < wr->nbufs; i++)
                total += wr->bufs[i].len;
        wr->len = total;
        wr->owner = c;
        if (!wr->cb && !wr->copy && c->writes == 0 && uv_stream_get_write_queue_size(&c->h.stream) == 0) {
                int r = uv_try_write(&c->h.stream, wr->bufs, wr->nbufs);
                if (r == (int) total) {
                        http_wr_put(&cl->wrs, wr);
                        return 0;
                }
                if (r < 0 && r != UV_EAGAIN) {
                        http_wr_put(&cl->wrs, wr);
                        cconn_fail(c, -ECONNRESET, "write: %s", uv_strerror(r));
                        return 0; /* reported through on_done */
                }
                if (r > 0 || !stable) {
                        if (http_wr_copy_rest(wr, r > 0 ? (size_t) r : 0) < 0) {
                                http_wr_put(&cl->wrs, wr);
                                cconn_fail(c, -ENOMEM, "out of memory");
                                return 0;
                        }
                }
        } else if (!wr->cb && !wr->copy && !stable) {
                if (http_wr_copy_rest(wr, 0) < 0) {
                        http_wr_put(&cl->wrs, wr);
                        return -ENOMEM;
                }
        }
        int r = uv_write(&wr->req, &c->h.stream, wr->bufs, wr->nbufs, on_cwrite);
        if (r < 0) {
                /* The callback will not run: run it from the loop. */
                defer_wr(cl, wr, r);
                cconn_fail(c, -ECONNRESET, "write: %s", uv_strerror(r));
                return 0;
        }
        c->writes++;
        return 0;
}

/* Put the request head in front of wr's buffers. */
static void wr_prepend_head(struct lg_http_call *call, struct http_wr *wr) {
        memmove(&wr->bufs[1], &wr->bufs[0], wr->nbufs * sizeof(wr->bufs[0]));
        wr->bufs[0] = uv_buf_init(call->head, (unsigned) call->head_len);
        wr->nbufs++;
        call->head_sent = true;
        call->sent_any = true;
}

static bool call_ready(const struct lg_http_call *call) {
        return call->conn && call->conn->connected && !call->conn->closing && !call->queue;
}

/* Submit wr for the call now, or queue it until the connection is up. */
static int call_push(struct lg_http_call *call, struct http_wr *wr) {
        if (!call_ready(call)) {
                if (!wr->cb && http_wr_copy_rest(wr, 0) < 0) {
                        http_wr_put(&call->cl->wrs, wr);
                        return -ENOMEM;
                }
                wr->next = NULL;
                if (call->queue_tail)
                        call->queue_tail->next = wr;
                else
                        call->queue = wr;
                call->queue_tail = wr;
                return 0;
        }
        if (!call->head_sent)
                wr_prepend_head(call, wr);
        if (wr->user)
                call->body_issued = true;
        return cconn_submit(call->conn, wr, false);
}

static void call_send_head_alone(struct lg_http_call *call) {
        struct http_wr *wr = http_wr_get(&call->cl->wrs);
        if (!wr) {
                cconn_fail(call->conn, -ENOMEM, "out of memory");
                return;
        }
        wr_prepend_head(call, wr);
        (void) cconn_submit(call->conn, wr, true);
}

/* Connected: send what is waiting. */
static void call_flush(struct lg_http_call *call) {
        struct cconn *c = call->conn;
        while (call->queue && c == call->conn && !c->closing) {
                struct http_wr *wr = call->queue;
                call->queue = wr->next;
                if (!call->queue)
                        call->queue_tail = NULL;
                if (!call->head_sent)
                        wr_prepend_head(call, wr);
                if (wr->user)
                        call->body_issued = true;
                (void) cconn_submit(c, wr, true);
        }
        if (c == call->conn && !c->closing && !call->head_sent && call->ended)
                call_send_head_alone(call);
}

/* ------------------------------------------------------------------------
 * Reading
 * --------------------------------------------------------------------- */

static void on_calloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        (void) suggested;
        struct cconn *c = h->data;
        http_rbuf_alloc(&c->up->cl->rbufs, &c->rbuf, &c->rpos, &c->rlen, c->pinned, buf);
}

static void on_cread(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void cconn_update_reading(struct cconn *c) {
        if (c->closing || !c->connected)
                return;
        struct lg_http_call *call = c->call;
        bool want = !c->rbuf || c->rlen < HTTP_RBUF_SIZE || (!c->pinned && c->rpos > 0);
        if (call && (call->paused || call->resp_done))
                want = false;
        if (want && !c->reading) {
                if (uv_read_start(&c->h.stream, on_calloc, on_cread) == 0)
                        c->reading = true;
        } else if (!want && c->reading) {
                uv_read_stop(&c->h.stream);
                c->reading = false;
        }
}

static void cconn_after_io(struct cconn *c) {
        if (c->closing)
                return;
        if (c->rbuf && c->rpos == c->rlen && !c->pinned) {
                c->rpos = c->rlen = 0;
                http_pool_put(&c->up->cl->rbufs, c->rbuf);
                c->rbuf = NULL;
        }
        cconn_update_reading(c);
        cconn_arm(c);
}

static void cconn_process(struct cconn *c) {
        if (c->closing || c->in_parse)
                return;
        struct lg_http_call *call = c->call;
        while (call && c->call == call && !c->closing && c->rpos < c->rlen && !call->paused && !call->resp_done) {
                if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
                        http_parser_pause(&c->parser, 0);
                c->in_parse = true;
                size_t n = http_parser_execute(&c->parser, &csettings, c->rbuf + c->rpos, c->rlen - c->rpos);
                c->in_parse = false;
                c->rpos += n;
                if (c->closing || c->call != call)
                        break;
                enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
                if (e == HPE_PAUSED)
                        continue;
                if (e != HPE_OK) {
                        cconn_fail(c, -EPROTO, "malformed response: %s", http_errno_description(e));
                        break;
                }
                if (n == 0)
                        break;
        }
        if (!c->closing && c->call == call && call && call->resp_done)
                call_check_done(call);
        if (!c->closing)
                cconn_after_io(c);
}

static void on_cread(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
        (void) buf;
        struct cconn *c = s->data;
        if (c->closing)
                return;
        struct lg_http_call *call = c->call;
        if (nread > 0) {
                c->last_io = cnow(c->up->cl);
                c->rlen += (size_t) nread;
                c->rx += (uint64_t) nread;
                if (!call) {
                        cconn_close(c); /* bytes on an idle connection */
                        return;
                }
                cconn_process(c);
                return;
        }
        if (nread == 0)
                return;
        if (nread == UV_ENOBUFS) {
                uv_read_stop(s);
                c->reading = false;
                return;
        }
        uv_read_stop(s);
        c->reading = false;
        if (!call || call->resp_done) {
                c->keep_alive_ok = false;
                if (call)
                        call_check_done(call);
                else
                        cconn_close(c);
                return;
        }
        if (nread == UV_EOF && call->got_response) {
                /* End of a close-delimited body? */
                c->in_parse = true;
                if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
                        http_parser_pause(&c->parser, 0);
                http_parser_execute(&c->parser, &csettings, NULL, 0);
                c->in_parse = false;
                if (c->closing || c->call != call)
                        return;
                if (call->resp_done) {
                        c->keep_alive_ok = false;
                        call_check_done(call);
                        return;
                }
        }
        if (nread == UV_EOF)
                cconn_fail(c, -ECONNRESET, "upstream closed the connection %s",
                           call->got_response ? "in the middle of the response" : "before responding");
        else
                cconn_fail(c, -ECONNRESET, "read: %s", uv_strerror((int) nread));
}

/* ------------------------------------------------------------------------
 * Parser callbacks
 * --------------------------------------------------------------------- */

static int c_on_message_begin(http_parser *p) {
        struct cconn *c = p->data;
        http_head_reset(&c->head);
        c->trailer_bytes = 0;
        return 0;
}

static int c_head_error(struct cconn *c, int r) {
        if (r == -E2BIG || r == -EMLINK)
                cconn_fail(c, -EPROTO, "response head too large");
        else
                cconn_fail(c, r == -ENOMEM ? -ENOMEM : -EPROTO, "malformed response head");
        return -1;
}

static int c_trailer(struct cconn *c, size_t len) {
        c->trailer_bytes += len;
        return c->trailer_bytes > c->up->cl->cfg.max_head ? c_head_error(c, -E2BIG) : 0;
}

static int c_on_header_field(http_parser *p, const char *at, size_t len) {
        struct cconn *c = p->data;
        if (c->call->got_response)
                return c_trailer(c, len);
        int r = http_head_field(&c->head, at, len);
        return r < 0 ? c_head_error(c, r) : 0;
}

static int c_on_header_value(http_parser *p, const char *at, size_t len) {
        struct cconn *c = p->data;
        if (c->call->got_response)
                return c_trailer(c, len);
        int r = http_head_value(&c->head, at, len);
        return r < 0 ? c_head_error(c, r) : 0;
}

static int c_on_headers_complete(http_parser *p) {
        struct cconn *c = p->data;
        struct lg_http_call *call = c->call;
        int status = p->status_code;
        if (status >= 100 && status < 200) {
                if (status == 101) {
                        cconn_fail(c, -EPROTO, "unexpected 101 Switching Protocols");
                        return -1;
                }
                call->skip_msg = true; /* 100 Continue, 103 Early Hints */
                return 0;
        }
        int r = http_head_finish(&c->head, 0, NULL);
        if (r < 0)
                return c_head_error(c, r);
        call->status = status;
        call->got_response = true;
        call->rhead = &c->head;
        if (p->flags & F_CHUNKED)
                call->resp_cl = -1;
        else if (p->content_length == ULLONG_MAX)
                call->resp_cl = -1;
        else
                call->resp_cl = (int64_t) p->content_length;
        c->keep_alive_ok = http_should_keep_alive(p);
        if (call->ops->on_response)
                call->ops->on_response(call, call->ud);
        if (c->closing || c->call != call)
                return -1;
        return call->is_head ? 1 : 0;
}

static int c_on_body(http_parser *p, const char *at, size_t len) {
        struct cconn *c = p->data;
        struct lg_http_call *call = c->call;
        if (call->ops->on_data)
                call->ops->on_data(call, at, len, call->ud);
        if (c->closing || c->call != call)
                return -1;
        if (call->paused) {
                c->pinned = true;
                http_parser_pause(p, 1);
        }
        return 0;
}

static int c_on_message_complete(http_parser *p) {
        struct cconn *c = p->data;
        struct lg_http_call *call = c->call;
        if (call->skip_msg) {
                call->skip_msg = false;
                http_head_reset(&c->head);
                return 0;
        }
        call->resp_done = true;
        http_parser_pause(p, 1);
        return 0;
}

/* ------------------------------------------------------------------------
 * Completion
 * --------------------------------------------------------------------- */

static void cconn_to_idle(struct cconn *c) {
        struct lg_http_upstream *up = c->up;
        c->call = NULL;
        c->pinned = false;
        c->rx = 0;
        http_parser_init(&c->parser, HTTP_RESPONSE);
        c->parser.data = c;
        c->idle_since = cnow(up->cl);
        list_push(c, L_IDLE);
        cconn_after_io(c);
}

/* The response is complete: finish the call once the request is written. */
static void call_check_done(struct lg_http_call *call) {
        struct cconn *c = call->conn;
        if (!c || !call->resp_done || call->finishing)
                return;
        struct lg_http_upstream *up = c->up;
        struct lg_http_client *cl = up->cl;
        if (!call->ended || call->queue || !call->head_sent) {
                /* Answered before the request was complete: the connection
                 * cannot carry another request. on_done(0) on close. */
                cconn_close(c);
                return;
        }
        if (c->writes > 0)
                return; /* on_cwrite calls again */
        bool reuse = c->keep_alive_ok && c->rpos == c->rlen && !c->closing && !up->freed && !cl->closing &&
                     up->nidle < cl->cfg.max_idle;
        c->call = NULL;
        call->conn = NULL;
        if (reuse) {
                cconn_to_idle(c);
        } else {
                cconn_close(c);
        }
        call_finish(call, 0);
}

/* ------------------------------------------------------------------------
 * Timers
 * --------------------------------------------------------------------- */

static uint64_t cadd(uint64_t a, uint64_t b) { return b > UINT64_MAX - a ? UINT64_MAX : a + b; }

static bool call_waiting(const struct cconn *c) {
        const struct lg_http_call *call = c->call;
        if (!call)
                return false;
        return c->writes > 0 || (call->ended && call->head_sent && !call->resp_done && !call->paused);
}

static uint64_t cconn_deadline(const struct cconn *c) {
        const struct lg_http_client_config *cfg = &c->up->cl->cfg;
        if (!c->connected)
                return cadd(c->connect_start, cfg->connect_timeout_ms);
        if (!c->call)
                return cadd(c->idle_since, cfg->idle_timeout_ms);
        if (c->call->timeout_ms && call_waiting(c))
                return cadd(c->last_io, c->call->timeout_ms);
        return UINT64_MAX;
}

static void on_ctimer(uv_timer_t *t);

static void cconn_arm(struct cconn *c) {
        if (c->closing)
                return;
        uint64_t d = cconn_deadline(c);
        if (d == UINT64_MAX)
                return; /* a running timer fires once, finds nothing and stays off */
        if (c->timer_on && c->timer_due <= d)
                return;
        uint64_t now = cnow(c->up->cl);
        uv_timer_start(&c->timer, on_ctimer, d > now ? d - now : 0, 0);
        c->timer_on = true;
        c->timer_due = d;
}

static void on_ctimer(uv_timer_t *t) {
        struct cconn *c = t->data;
        c->timer_on = false;
        uint64_t now = cnow(c->up->cl);
        uint64_t d = cconn_deadline(c);
        if (now >= d) {
                if (!c->connected)
                        cconn_fail(c, -ETIMEDOUT, "connect timed out after %llu ms",
                                   (unsigned long long) c->up->cl->cfg.connect_timeout_ms);
                else if (!c->call)
                        cconn_close(c);
                else
                        cconn_fail(c, -ETIMEDOUT, "no response within %llu ms",
                                   (unsigned long long) c->call->timeout_ms);
                return;
        }
        cconn_arm(c);
}

/* ------------------------------------------------------------------------
 * Connections
 * --------------------------------------------------------------------- */

static void on_cconnect(uv_connect_t *req, int status) {
        struct cconn *c = req->data;
        if (c->closing)
                return;
        if (status < 0) {
                cconn_fail(c, -ECONNREFUSED, "connect: %s", uv_strerror(status));
                return;
        }
        c->connected = true;
        c->last_io = cnow(c->up->cl);
        if (!c->up->is_unix)
                uv_tcp_nodelay(&c->h.tcp, 1);
        if (c->call)
                call_flush(c->call);
        cconn_after_io(c);
}

static struct cconn *cconn_new(struct lg_http_upstream *up) {
        struct lg_http_client *cl = up->cl;
        struct cconn *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->up = up;
        int r = up->is_unix ? uv_pipe_init(cl->loop, &c->h.pipe, 0) : uv_tcp_init(cl->loop, &c->h.tcp);
        if (r < 0) {
                free(c);
                return NULL;
        }
        uv_timer_init(cl->loop, &c->timer);
        c->h.handle.data = c;
        c->timer.data = c;
        c->connect_req.data = c;
        c->refs = 2;
        up->nconns++;
        cl->nconns++;
        up->connects++;
        c->head.limit = cl->cfg.max_head;
        c->head.max_hdrs = MAX_RESP_HEADERS;
        http_parser_init(&c->parser, HTTP_RESPONSE);
        c->parser.data = c;
        c->connect_start = cnow(cl);
        list_push(c, L_ACTIVE);
        return c;
}

static void cconn_connect(struct cconn *c) {
        struct lg_http_upstream *up = c->up;
        if (up->is_unix) {
                uv_pipe_connect(&c->connect_req, &c->h.pipe, up->path, on_cconnect);
        } else {
                int r = uv_tcp_connect(&c->connect_req, &c->h.tcp, (const struct sockaddr *) &up->addr,
                                       on_cconnect);
                if (r < 0) {
                        cconn_fail(c, -ECONNREFUSED, "connect: %s", uv_strerror(r));
                        return;
                }
        }
        cconn_arm(c);
}

/* Give the call a connection: an idle one (most recently used first), or a
 * new one. */
static int call_attach(struct lg_http_call *call) {
        struct lg_http_upstream *up = call->up;
        struct cconn *c = NULL;
        if (!call->retried && up->idle) {
                c = up->idle;
                list_push(c, L_ACTIVE);
                up->reuses++;
                call->reused = true;
                c->call = call;
                call->conn = c;
                c->rx = 0;
                c->last_io = cnow(up->cl);
                if (call->ended)
                        call_send_head_alone(call);
                if (!c->closing)
                        cconn_after_io(c);
                return 0;
        }
        c = cconn_new(up);
        if (!c)
                return -ENOMEM;
        call->reused = false;
        c->call = call;
        call->conn = c;
        cconn_connect(c);
        return 0;
}

/* ------------------------------------------------------------------------
 * Public: client and upstreams
 * --------------------------------------------------------------------- */

int lg_http_client_new(uv_loop_t *loop, const struct lg_http_client_config *cfg, struct lg_http_client **ret,
                       struct lg_error *err) {
        if (!loop || !ret)
                return lg_error_set(err, EINVAL, "http client: missing loop");
        struct lg_http_client *cl = calloc(1, sizeof(*cl));
        if (!cl)
                return lg_error_set(err, ENOMEM, "http client");
        cl->loop = loop;
        if (cfg)
                cl->cfg = *cfg;
        if (!cl->cfg.max_idle)
                cl->cfg.max_idle = DEF_MAX_IDLE;
        if (!cl->cfg.idle_timeout_ms)
                cl->cfg.idle_timeout_ms = DEF_IDLE_TIMEOUT;
        if (!cl->cfg.connect_timeout_ms)
                cl->cfg.connect_timeout_ms = DEF_CONNECT_TIMEOUT;
        if (!cl->cfg.timeout_ms)
                cl->cfg.timeout_ms = DEF_TIMEOUT;
        if (!cl->cfg.max_head)
                cl->cfg.max_head = DEF_MAX_HEAD;
        cl->rbufs.size = HTTP_RBUF_SIZE;
        int r = uv_idle_init(loop, &cl->kick);
        if (r < 0) {
                free(cl);
                return lg_error_set(err, -r, "http client: idle handle");
        }
        cl->kick.data = cl;
        *ret = cl;
        return 0;
}

static void on_ckick_closed(uv_handle_t *h) {
        struct lg_http_client *cl = h->data;
        void (*done)(void *) = cl->done;
        void *ud = cl->done_ud;
        http_pool_clear(&cl->rbufs);
        http_wr_pool_clear(&cl->wrs);
        while (cl->free_calls) {
                struct lg_http_call *call = cl->free_calls;
                cl->free_calls = call->next_free;
                free(call->head);
                free(call);
        }
        free(cl);
        if (done)
                done(ud);
}

static void client_maybe_done(struct lg_http_client *cl) {
        if (!cl->closing || cl->finishing || cl->nconns || cl->ups || cl->done_wrs || cl->kick_head)
                return;
        cl->finishing = true;
        if (cl->kick_on) {
                uv_idle_stop(&cl->kick);
                cl->kick_on = false;
        }
        uv_close((uv_handle_t *) &cl->kick, on_ckick_closed);
}

static void upstream_release(struct lg_http_upstream *up, bool cancel_active) {
        up->freed = true;
        while (up->idle)
                cconn_close(up->idle);
        if (cancel_active) {
                for (struct cconn *c = up->active, *n; c; c = n) {
                        n = c->next;
                        cconn_fail(c, -ECANCELED, "the HTTP client is closing");
                }
        }
        if (up->nconns == 0)
                upstream_destroy(up);
}

void lg_http_client_close(struct lg_http_client *cl, void (*done)(void *ud), void *ud) {
        if (cl->closing)
                return;
        cl->closing = true;
        cl->done = done;
        cl->done_ud = ud;
        for (struct lg_http_upstream *up = cl->ups, *n; up; up = n) {
                n = up->next;
                upstream_release(up, true);
        }
        if (cl->done_wrs || cl->kick_head)
                client_kick_start(cl);
        client_maybe_done(cl);
}

int lg_http_upstream_new(struct lg_http_client *cl, const char *address, struct lg_http_upstream **ret,
                         struct lg_error *err) {
        if (cl->closing)
                return lg_error_set(err, ECANCELED, "http client is closing");
        if (!address || !*address)
                return lg_error_set(err, EINVAL, "empty upstream address");
        struct lg_http_upstream *up = calloc(1, sizeof(*up));
        if (!up)
                return lg_error_set(err, ENOMEM, "upstream");
        up->cl = cl;
        int r = 0;
        const char *path = NULL;
        if (strncmp(address, "unix:", 5) == 0)
                path = address + 5;
        else if (address[0] == '/')
                path = address;
        if (path) {
                if (!*path || strlen(path) >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
                        r = lg_error_set(err, ENAMETOOLONG, "bad Unix socket path in `%s`", address);
                        goto fail;
                }
                up->is_unix = true;
                up->path = strdup(path);
                up->host = strdup("localhost");
        } else {
                const char *colon = strrchr(address, ':');
                char host[128];
                if (!colon || colon == address || (size_t) (colon - address) >= sizeof(host)) {
                        r = lg_error_set(err, EINVAL, "upstream `%s` is not host:port", address);
                        goto fail;
                }
                memcpy(host, address, (size_t) (colon - address));
                host[colon - address] = '\0';
                char *end;
                errno = 0;
                unsigned long port = strtoul(colon + 1, &end, 10);
                if (errno || *end || end == colon + 1 || port == 0 || port > 65535) {
                        r = lg_error_set(err, EINVAL, "bad port in upstream `%s`", address);
                        goto fail;
                }
                const char *h = host;
                size_t hl = strlen(host);
                if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
                        host[hl - 1] = '\0';
                        h = host + 1;
                } else if (strcmp(host, "localhost") == 0) {
                        h = "127.0.0.1";
                }
                if (uv_ip4_addr(h, (int) port, (struct sockaddr_in *) &up->addr) != 0 &&
                    uv_ip6_addr(h, (int) port, (struct sockaddr_in6 *) &up->addr) != 0) {
                        r = lg_error_set(err, EINVAL, "upstream host in `%s` is not an IP address", address);
                        goto fail;
                }
                up->host = strdup(address);
        }
        up->name = strdup(address);
        if ((up->is_unix && !up->path) || !up->host || !up->name) {
                r = lg_error_set(err, ENOMEM, "upstream");
                goto fail;
        }
        up->next = cl->ups;
        if (cl->ups)
                cl->ups->prev = up;
        cl->ups = up;
        *ret = up;
        return 0;
fail:
        free(up->path);
        free(up->host);
        free(up->name);
        free(up);
        return r;
}

void lg_http_upstream_free(struct lg_http_upstream *up) {
        if (up && !up->freed)
                upstream_release(up, false);
}

void lg_http_upstream_stats(const struct lg_http_upstream *up, struct lg_http_upstream_stats *st) {
        st->connects = up->connects;
        st->reuses = up->reuses;
        st->idle = up->nidle;
        st->active = up->nactive;
}

/* ------------------------------------------------------------------------
 * Public: calls
 * --------------------------------------------------------------------- */

static bool method_idempotent(const char *m) {
        static const char *const idem[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
        for (size_t i = 0; i < ARRAY_SIZE(idem); i++)
                if (strcmp(m, idem[i]) == 0)
                        return true;
        return false;
}

static bool target_ok(const char *t) {
        if (!*t)
                return false;
        for (const unsigned char *p = (const unsigned char *) t; *p; p++)
                if (*p <= 0x20 || *p == 0x7f)
                        return false;
        return true;
}

int lg_http_call_start(struct lg_http_upstream *up, const char *method, const char *target,
                       const struct lg_http_header *hdrs, size_t nhdrs, int64_t body_length,
                       const struct lg_http_call_ops *ops, void *ud, struct lg_http_call **ret) {
        struct lg_http_client *cl = up->cl;
        if (cl->closing)
                return -ECANCELED;
        if (up->freed || !method || !target || !ops || body_length < -1)
                return -EINVAL;
        size_t ml = strlen(method), tl = strlen(target);
        if (!http_is_token(method, ml) || !target_ok(target))
                return -EINVAL;
        struct lg_http_call *call = cl->free_calls;
        if (call) {
                cl->free_calls = call->next_free;
                cl->nfree_calls--;
                char *head = call->head;
                size_t cap = call->head_cap;
                memset(call, 0, sizeof(*call));
                call->head = head;
                call->head_cap = cap;
        } else {
                call = calloc(1, sizeof(*call));
                if (!call)
                        return -ENOMEM;
        }
        call->cl = cl;
        call->up = up;
        call->ops = ops;
        call->ud = ud;
        call->body_len = body_length;
        call->timeout_ms = cl->cfg.timeout_ms;
        call->idempotent = method_idempotent(method);
        call->is_head = strcmp(method, "HEAD") == 0;
        call->ended = body_length == 0;

        size_t need = ml + tl + 64 + http_headers_size(hdrs, nhdrs) + strlen(up->host) + 64;
        int r = http_reserve(&call->head, &call->head_cap, need);
        if (r < 0)
                goto fail;
        char *b = call->head;
        size_t pos = http_put(b, 0, method, ml);
        b[pos++] = ' ';
        pos = http_put(b, pos, target, tl);
        pos = HTTP_PUT_LIT(b, pos, " HTTP/1.1\r\n");
        bool host = false;
        ssize_t p2 = http_put_headers(b, pos, hdrs, nhdrs, true, &host);
        if (p2 < 0) {
                r = (int) p2;
                goto fail;
        }
        pos = (size_t) p2;
        if (!host) {
                pos = HTTP_PUT_LIT(b, pos, "Host: ");
                pos = http_put(b, pos, up->host, strlen(up->host));
                pos = HTTP_PUT_LIT(b, pos, "\r\n");
        }
        if (body_length > 0 || (body_length == 0 && strcmp(method, "GET") && !call->is_head)) {
                pos = HTTP_PUT_LIT(b, pos, "Content-Length: ");
                pos = http_put_u64(b, pos, (uint64_t) body_length);
                pos = HTTP_PUT_LIT(b, pos, "\r\n");
        } else if (body_length < 0) {
                pos = HTTP_PUT_LIT(b, pos, "Transfer-Encoding: chunked\r\n");
        }
        pos = HTTP_PUT_LIT(b, pos, "\r\n");
        call->head_len = pos;

        r = call_attach(call);
        if (r < 0)
                goto fail;
        *ret = call;
        return 0;
fail:
        call_free(call);
        return r;
}

int lg_http_call_write(struct lg_http_call *call, const void *data, size_t len, lg_http_write_cb cb, void *ud) {
        if (call->canceled || call->finishing || call->ended)
                return -EINVAL;
        if (call->error || !call->conn || call->conn->closing)
                return -EPIPE;
        if (call->body_len >= 0 && call->body_written + len > (uint64_t) call->body_len)
                return -EINVAL;
        struct http_wr *wr = http_wr_get(&call->cl->wrs);
        if (!wr)
                return -ENOMEM;
        wr->cb = cb;
        wr->ud = ud;
        if (len == 0) {
                defer_wr(call->cl, wr, 0);
                return 0;
        }
        wr->user = true;
        bool chunked = call->body_len < 0;
        if (chunked) {
                size_t pl = http_chunk_prefix(wr->chunk, len);
                wr->bufs[wr->nbufs++] = uv_buf_init(wr->chunk, (unsigned) pl);
        }
        wr->bufs[wr->nbufs++] = uv_buf_init((char *) data, (unsigned) len);
        if (chunked)
                wr->bufs[wr->nbufs++] = uv_buf_init((char *) "\r\n", 2);
        int r = call_push(call, wr);
        if (r < 0)
                return r;
        call->body_written += len;
        if (call->body_len >= 0 && call->body_written == (uint64_t) call->body_len) {
                call->ended = true;
                if (call->conn)
                        call->conn->last_io = cnow(call->cl);
        }
        if (call->conn && !call->conn->closing)
                cconn_arm(call->conn);
        return 0;
}

int lg_http_call_end(struct lg_http_call *call) {
        if (call->canceled || call->finishing)
                return -EINVAL;
        if (call->ended)
                return 0;
        if (call->body_len >= 0)
                return -EINVAL; /* fewer bytes than announced */
        if (call->error || !call->conn || call->conn->closing)
                return -EPIPE;
        static const char last[] = "0\r\n\r\n";
        struct http_wr *wr = http_wr_get(&call->cl->wrs);
        if (!wr)
                return -ENOMEM;
        wr->bufs[wr->nbufs++] = uv_buf_init((char *) last, sizeof(last) - 1);
        wr->copy = NULL;
        int r;
        if (!call_ready(call)) {
                /* Static data: queue without copying. */
                wr->next = NULL;
                if (call->queue_tail)
                        call->queue_tail->next = wr;
                else
                        call->queue = wr;
                call->queue_tail = wr;
                r = 0;
        } else {
                if (!call->head_sent)
                        wr_prepend_head(call, wr);
                r = cconn_submit(call->conn, wr, true);
        }
        if (r < 0)
                return r;
        call->ended = true;
        if (call->conn && !call->conn->closing) {
                call->conn->last_io = cnow(call->cl);
                cconn_arm(call->conn);
        }
        return 0;
}

void lg_http_call_pause(struct lg_http_call *call) {
        if (call->canceled || call->finishing)
                return;
        call->paused = true;
        if (call->conn && !call->conn->in_parse)
                cconn_update_reading(call->conn);
}

void lg_http_call_resume(struct lg_http_call *call) {
        if (!call->paused || call->canceled || call->finishing)
                return;
        call->paused = false;
        struct cconn *c = call->conn;
        if (c && !c->closing) {
                c->pinned = false;
                c->last_io = cnow(call->cl);
                if (!c->in_parse)
                        cconn_kick(c);
        }
}

void lg_http_call_set_timeout(struct lg_http_call *call, uint64_t ms) {
        call->timeout_ms = ms;
        if (call->conn && !call->conn->closing && !call->conn->in_parse)
                cconn_arm(call->conn);
}

void lg_http_call_cancel(struct lg_http_call *call) {
        if (call->canceled || call->finishing)
                return;
        call->canceled = true;
        struct cconn *c = call->conn;
        if (c) {
                c->call = NULL;
                call->conn = NULL;
                cconn_close(c);
        }
        call_drop_queue(call);
        call->finishing = true;
        call_free(call);
}

int lg_http_call_status(const struct lg_http_call *call) { return call->status; }

const char *lg_http_call_header(const struct lg_http_call *call, const char *name) {
        return call->rhead ? http_head_get(call->rhead, name) : NULL;
}

size_t lg_http_call_headers(const struct lg_http_call *call, const struct lg_http_header **hdrs) {
        if (hdrs)
                *hdrs = call->rhead ? call->rhead->hdrs : NULL;
        return call->rhead ? call->rhead->n : 0;
}

int64_t lg_http_call_content_length(const struct lg_http_call *call) { return call->resp_cl; }

const char *lg_http_call_error(const struct lg_http_call *call) { return call->errmsg; }
