/* HTTP/1.1 server on libuv + http-parser.
 *
 * One struct lg_http_request per connection: it carries the connection and
 * the request in flight on it (requests on one connection are handled one
 * after the other; pipelined ones wait in the read buffer). The struct lives
 * while its handles are open or the handler owns the request, counted in
 * `refs` (2 for the stream and timer handles, 1 while the handler owns the
 * request, 1 while queued on the deferred "kick" list).
 *
 * Reading: the read buffer comes from a pool when bytes arrive and goes back
 * when everything in it was parsed. The socket is read while the buffer has
 * room, also while a request is held, so that a client going away is seen.
 * Parsing stops (http_parser_pause) while the handler holds a request, when
 * its consumer paused the body, and after each message until its response
 * is finished.
 *
 * Writing: uv_try_write when nothing is queued (the common, synchronous
 * case); the rest copied, or zero copy through uv_write when the caller gives
 * a callback, which runs from the loop also when the bytes went out at once. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "http/http-internal.h"

#include "http/server-internal.h"


static int on_message_begin(http_parser *p);
static int on_url(http_parser *p, const char *at, size_t len);
static int on_header_field(http_parser *p, const char *at, size_t len);
static int on_header_value(http_parser *p, const char *at, size_t len);
static int on_headers_complete(http_parser *p);
static int on_body(http_parser *p, const char *at, size_t len);
static int on_message_complete(http_parser *p);

static const http_parser_settings settings = {
        .on_message_begin = on_message_begin,
        .on_url = on_url,
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_body = on_body,
        .on_message_complete = on_message_complete,
};

static void conn_process(struct lg_http_request *c);
static void conn_check(struct lg_http_request *c);
static void conn_after_io(struct lg_http_request *c);
static void conn_arm(struct lg_http_request *c);
void http_srv_conn_close(struct lg_http_request *c, int reason);
static void conn_unref(struct lg_http_request *c);
static void server_maybe_done(struct lg_http_server *srv);

static inline uint64_t now_ms(const struct lg_http_server *srv) { return uv_now(srv->loop); }

/* ------------------------------------------------------------------------
 * Deferred work
 * --------------------------------------------------------------------- */

static void on_kick(uv_idle_t *h);

void http_srv_conn_kick(struct lg_http_request *c) {
        struct lg_http_server *srv = c->srv;
        if (c->in_kick)
                return;
        c->in_kick = true;
        c->refs++;
        c->kick_next = NULL;
        if (srv->kick_tail)
                srv->kick_tail->kick_next = c;
        else
                srv->kick_head = c;
        srv->kick_tail = c;
        if (!srv->kick_on) {
                uv_idle_start(&srv->kick, on_kick);
                srv->kick_on = true;
        }
}

static void conn_notify_abort(struct lg_http_request *c) {
        if (!c->abort_pending)
                return;
        c->abort_pending = false;
        if (c->owned && c->on_abort)
                c->on_abort(c, c->aborted, c->abort_ud);
}

void http_srv_conn_flush_head(struct lg_http_request *c);

void http_srv_conn_defer_wr(struct lg_http_request *c, struct http_wr *wr) {
        struct http_wr **pp = &c->done_wrs;
        while (*pp)
                pp = &(*pp)->next;
        wr->next = NULL;
        *pp = wr;
        http_srv_conn_kick(c);
}

/* The callbacks of writes completed before the loop could run them, in the
 * order the writes were made. */
static void conn_run_done_wrs(struct lg_http_request *c) {
        while (c->done_wrs) {
                struct http_wr *wr = c->done_wrs;
                c->done_wrs = wr->next;
                lg_http_write_cb cb = wr->cb;
                void *ud = wr->ud;
                http_wr_put(&c->srv->wrs, wr);
                if (cb)
                        cb(ud, c->closing ? -ECANCELED : 0);
        }
}

static void conn_run_deferred(struct lg_http_request *c) {
        conn_run_done_wrs(c);
        conn_notify_abort(c);
        if (c->closing)
                return;
        if (c->head_pending && c->resp_started)
                http_srv_conn_flush_head(c);
        conn_check(c);
        conn_process(c);
        if (c->tls && !c->closing)
                http_tls_drain(c); /* plaintext TLS held while the server did not read */
}

static void on_kick(uv_idle_t *h) {
        struct lg_http_server *srv = h->data;
        struct lg_http_request *list = srv->kick_head;
        srv->kick_head = srv->kick_tail = NULL;
        while (list) {
                struct lg_http_request *c = list;
                list = c->kick_next;
                c->in_kick = false;
                conn_run_deferred(c);
                conn_unref(c);
        }
        if (!srv->kick_head && srv->kick_on) {
                uv_idle_stop(&srv->kick);
                srv->kick_on = false;
        }
}

/* ------------------------------------------------------------------------
 * Lifetime
 * --------------------------------------------------------------------- */

static void conn_free(struct lg_http_request *c) {
        struct lg_http_server *srv = c->srv;
        if (c->prev)
                c->prev->next = c->next;
        else
                srv->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        http_pool_put(&srv->rbufs, c->rbuf);
        http_head_free(&c->head);
        free(c->segs);
        free(c->params);
        free(c->body);
        free(c->hbuf);
        http_tls_conn_free(c->tls);
        while (c->done_wrs) {
                struct http_wr *wr = c->done_wrs;
                c->done_wrs = wr->next;
                http_wr_put(&srv->wrs, wr);
        }
        free(c);
        srv->nlive--;
        server_maybe_done(srv);
}

static void conn_unref(struct lg_http_request *c) {
        if (--c->refs == 0)
                conn_free(c);
}

static void on_stream_closed(uv_handle_t *h) {
        struct lg_http_request *c = h->data;
        c->srv->nconns--;
        http_srv_peer_release(c);
        /* A held request may still point into the read buffer. */
        if (!c->owned) {
                http_pool_put(&c->srv->rbufs, c->rbuf);
                c->rbuf = NULL;
        }
        conn_notify_abort(c);
        conn_unref(c);
}

static void on_timer_closed(uv_handle_t *h) { conn_unref(h->data); }

/* Close now. reason: what the handler's abort callback gets if it still
 * owns the request (0 = -ECONNRESET). */
void http_srv_conn_close(struct lg_http_request *c, int reason) {
        if (c->closing)
                return;
        c->closing = true;
        c->reading = false;
        http_srv_anon_update(c);
        if (c->owned && !c->aborted) {
                c->aborted = reason ? reason : -ECONNRESET;
                c->abort_pending = true;
        }
        uv_close(&c->h.handle, on_stream_closed);
        uv_close((uv_handle_t *) &c->timer, on_timer_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
        struct lg_http_request *c = req->data;
        if (c->closing)
                return;
        if (status < 0) {
                http_srv_conn_close(c, 0);
                return;
        }
        /* Everything is written: now give the client LINGER_MS. */
        c->linger_until = now_ms(c->srv) + LINGER_MS;
        conn_arm(c);
}

/* Finish the connection gracefully: once queued writes are out, send FIN,
 * then read and drop whatever the client still sends (so that it gets to
 * read our response instead of a reset) until EOF or LINGER_MS. */
static void conn_linger(struct lg_http_request *c) {
        if (c->closing || c->lingering)
                return;
        c->lingering = true;
        c->parse_stopped = true;
        http_srv_anon_update(c);
        c->linger_until = UINT64_MAX; /* set once the writes are out */
        c->shutdown_req.data = c;
        if (c->tls) {
                http_tls_linger(c); /* close_notify, queued before the FIN */
                if (c->closing)
                        return;
        }
        if (uv_shutdown(&c->shutdown_req, &c->h.stream, on_shutdown) < 0) {
                http_srv_conn_close(c, 0);
                return;
        }
        if (!c->pinned)
                c->rpos = c->rlen = 0;
        if (!c->in_parse)
                conn_after_io(c);
}

/* The handler is done with the request (ended or aborted it). */
void http_srv_conn_release(struct lg_http_request *c) {
        c->resp_ended = true;
        c->owned = false;
        c->on_abort = NULL;
        c->abort_pending = false;
        c->on_data = NULL;
        c->on_end = NULL;
        if (!c->closing) {
                if (!c->body_done && !c->close_after && !c->parse_stopped) {
                        /* Drop the rest of a small body and keep the connection. */
                        c->discard = true;
                        c->paused = false;
                        c->pinned = false;
                }
                if (!c->in_parse)
                        http_srv_conn_kick(c);
        }
        conn_unref(c);
}

/* ------------------------------------------------------------------------
 * Writing
 * --------------------------------------------------------------------- */

void http_srv_on_write(uv_write_t *w, int status) {
        struct http_wr *wr = container_of(w, struct http_wr, req);
        struct lg_http_request *c = wr->owner;
        struct lg_http_server *srv = c->srv;
        lg_http_write_cb cb = wr->cb;
        void *ud = wr->ud;
        c->writes--;
        c->write_since = now_ms(srv);
        http_wr_put(&srv->wrs, wr);
        if (status < 0 && !c->closing)
                http_srv_conn_close(c, -ECONNRESET);
        /* Writes made before this one and written at once come first. */
        conn_run_done_wrs(c);
        if (cb)
                cb(ud, status);
        if (!c->closing) {
                conn_check(c);
                if (!c->closing && !c->in_parse)
                        conn_arm(c);
        }
}

/* Submit wr (bufs filled). The bytes are tried at once when nothing is
 * queued. Without a callback what remains is copied (unless `stable`: the
 * buffers outlive the write). With one, what remains is written from the
 * caller's buffers, and a write that went out whole completes from the loop
 * (http_srv_conn_defer_wr) and returns 1: the caller need not wait for it to
 * read more (a proxy need not pause its source), and no uv_write is queued,
 * whose completion costs libuv an epoll_ctl. */
int http_srv_conn_submit(struct lg_http_request *c, struct http_wr *wr, bool stable) {
        struct lg_http_server *srv = c->srv;
        wr->owner = c;
        /* TLS: what goes out is the ciphertext, in wr's own copy. */
        if (c->tls) {
                int r = http_tls_encrypt(c, wr);
                if (r < 0)
                        return r;
                stable = true;
        }
        size_t total = 0;
        for (unsigned i = 0; i < wr->nbufs; i++)
                total += wr->bufs[i].len;
        wr->len = total;
        if (c->writes == 0 && uv_stream_get_write_queue_size(&c->h.stream) == 0) {
                int r = uv_try_write(&c->h.stream, wr->bufs, wr->nbufs);
                if (r == (int) total) {
                        if (!wr->cb) {
                                http_wr_put(&srv->wrs, wr);
                                return 0;
                        }
                        http_srv_conn_defer_wr(c, wr);
                        return 1;
                }
                if (r < 0 && r != UV_EAGAIN) {
                        http_wr_put(&srv->wrs, wr);
                        http_srv_conn_close(c, -ECONNRESET);
                        return -ECONNRESET;
                }
                if (r > 0 && wr->cb) {
                        http_wr_skip(wr, (size_t) r);
                } else if (!wr->cb && (r > 0 || !stable)) {
                        int q = http_wr_copy_rest(wr, r > 0 ? (size_t) r : 0);
                        if (q < 0) {
                                http_wr_put(&srv->wrs, wr);
                                http_srv_conn_close(c, -ENOMEM);
                                return q;
                        }
                }
        } else if (!wr->cb && !stable) {
                int q = http_wr_copy_rest(wr, 0);
                if (q < 0) {
                        http_wr_put(&srv->wrs, wr);
                        return q;
                }
        }
        int r = uv_write(&wr->req, &c->h.stream, wr->bufs, wr->nbufs, http_srv_on_write);
        if (r < 0) {
                http_wr_put(&srv->wrs, wr);
                http_srv_conn_close(c, -ECONNRESET);
                return -ECONNRESET;
        }
        if (c->writes++ == 0)
                c->write_since = now_ms(srv);
        return 0;
}

static int conn_write_static(struct lg_http_request *c, const char *s, size_t len) {
        struct http_wr *wr = http_wr_get(&c->srv->wrs);
        if (!wr)
                return -ENOMEM;
        wr->bufs[0] = uv_buf_init((char *) s, (unsigned) len);
        wr->nbufs = 1;
        return http_srv_conn_submit(c, wr, true);
}

void http_srv_conn_send_continue(struct lg_http_request *c) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (!c->expect_continue || c->continue_sent || c->closing || (c->resp_started && !c->head_pending))
                return;
        c->continue_sent = true;
        (void) conn_write_static(c, cont, sizeof(cont) - 1);
}

/* Will this response be the last on the connection? */
static bool conn_will_close(const struct lg_http_request *c) {
        if (c->close_after || !c->keep_alive || c->srv->closing)
                return true;
        if (!c->body_done) {
                if (c->expect_continue && !c->continue_sent)
                        return true;
                if (c->content_length < 0)
                        return true;
                if ((uint64_t) c->content_length - c->body_received > DISCARD_MAX)
                        return true;
        }
        return false;
}

static bool status_has_no_body(int status) { return status < 200 || status == 204 || status == 304; }

/* Format a response head into *buf. cl: Content-Length, or -1 for chunked /
 * close-delimited. Sets the response framing fields of c. */
ssize_t http_srv_conn_format_head(struct lg_http_request *c, char **buf, size_t *cap, int status,
                                const struct lg_http_header *hdrs, size_t n, int64_t cl,
                                const char *content_type) {
        if (status < 200 || status > 999)
                return -EINVAL;
        const char *reason = http_reason(status);
        size_t datelen;
        const char *date = http_date_line(&datelen);
        size_t need = 64 + strlen(reason) + http_headers_size(hdrs, n) + 128 + datelen +
                      (content_type ? strlen(content_type) + 20 : 0);
        int r = http_reserve(buf, cap, need);
        if (r < 0)
                return r;
        char *b = *buf;
        bool no_body = c->is_head || status_has_no_body(status);
        bool close = conn_will_close(c);
        c->resp_no_body = no_body;
        c->resp_cl = cl;
        c->resp_chunked = false;
        if (cl < 0 && !no_body) {
                if (c->version >= 11)
                        c->resp_chunked = true;
                else
                        close = true; /* close-delimited */
        }
        c->close_after = close;

        size_t pos = HTTP_PUT_LIT(b, 0, "HTTP/1.1 ");
        pos = http_put_u64(b, pos, (uint64_t) status);
        b[pos++] = ' ';
        pos = http_put(b, pos, reason, strlen(reason));
        pos = HTTP_PUT_LIT(b, pos, "\r\n");
        if (content_type) {
                pos = HTTP_PUT_LIT(b, pos, "Content-Type: ");
                pos = http_put(b, pos, content_type, strlen(content_type));
                pos = HTTP_PUT_LIT(b, pos, "\r\n");
        }
        ssize_t p2 = http_put_headers(b, pos, hdrs, n, false, NULL);
        if (p2 < 0)
                return p2;
        pos = (size_t) p2;
        if (cl >= 0) {
                if (!status_has_no_body(status)) {
                        pos = HTTP_PUT_LIT(b, pos, "Content-Length: ");
                        pos = http_put_u64(b, pos, (uint64_t) cl);
                        pos = HTTP_PUT_LIT(b, pos, "\r\n");
                }
        } else if (c->resp_chunked) {
                pos = HTTP_PUT_LIT(b, pos, "Transfer-Encoding: chunked\r\n");
        }
        if (close)
                pos = HTTP_PUT_LIT(b, pos, "Connection: close\r\n");
        else if (c->version < 11)
                pos = HTTP_PUT_LIT(b, pos, "Connection: keep-alive\r\n");
        pos = http_put(b, pos, date, datelen);
        pos = HTTP_PUT_LIT(b, pos, "\r\n");
        return (ssize_t) pos;
}

/* An error response produced by the server itself; then the connection is
 * closed gracefully. The handler, if it owns the request, gets its abort
 * callback with abort_reason. */
static void conn_error(struct lg_http_request *c, int status, const char *code, int abort_reason,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void conn_error(struct lg_http_request *c, int status, const char *code, int abort_reason,
                       const char *fmt, ...) {
        if (c->closing || c->lingering)
                return;
        c->parse_stopped = true;
        if (c->owned && !c->aborted) {
                c->aborted = abort_reason;
                c->abort_pending = true;
                http_srv_conn_kick(c);
        }
        if (c->resp_ended && !c->owned) {
                /* The handler's response is complete (maybe still being
                 * written): let it go out, then end the connection. */
                c->close_after = true;
                conn_linger(c);
                return;
        }
        if (c->resp_started) {
                /* A response is under way: all we can do is cut it. */
                http_srv_conn_close(c, abort_reason);
                return;
        }
        char msg[256], body[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        size_t blen = lg_http_error_json(body, sizeof(body), code, msg);
        c->close_after = true;
        struct lg_http_server *srv = c->srv;
        ssize_t hl = http_srv_conn_format_head(c, &srv->scratch, &srv->scratch_cap, status, NULL, 0, (int64_t) blen,
                                      "application/json");
        if (hl < 0) {
                http_srv_conn_close(c, abort_reason);
                return;
        }
        c->resp_started = true;
        struct http_wr *wr = http_wr_get(&srv->wrs);
        if (!wr) {
                http_srv_conn_close(c, abort_reason);
                return;
        }
        wr->bufs[0] = uv_buf_init(srv->scratch, (unsigned) hl);
        wr->nbufs = 1;
        if (!c->resp_no_body)
                wr->bufs[wr->nbufs++] = uv_buf_init(body, (unsigned) blen);
        if (http_srv_conn_submit(c, wr, false) < 0)
                return;
        conn_linger(c);
}

void http_srv_conn_flush_head(struct lg_http_request *c) {
        c->head_pending = false;
        struct http_wr *wr = http_wr_get(&c->srv->wrs);
        if (!wr) {
                http_srv_conn_close(c, -ENOMEM);
                return;
        }
        wr->bufs[0] = uv_buf_init(c->hbuf, (unsigned) c->hlen);
        wr->nbufs = 1;
        (void) http_srv_conn_submit(c, wr, true);
}

/* ------------------------------------------------------------------------
 * Reading and parsing
 * --------------------------------------------------------------------- */

static bool conn_can_parse(const struct lg_http_request *c) {
        if (c->state != C_ACTIVE)
                return true;
        if (c->body_done)
                return false; /* the response is not finished yet */
        if (c->discard)
                return true;
        if (c->mode == LG_HTTP_BODY_STREAM && c->dispatched && (!c->body_reading || c->paused))
                return c->resp_ended; /* held or paused, unless the handler is done */
        return true;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        (void) suggested;
        struct lg_http_request *c = h->data;
        http_rbuf_alloc(&c->srv->rbufs, &c->rbuf, &c->rpos, &c->rlen, c->pinned, buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_update_reading(struct lg_http_request *c) {
        if (c->closing)
                return;
        bool want;
        if (c->lingering)
                want = !c->pinned || !c->rbuf || c->rlen < HTTP_RBUF_SIZE;
        else
                want = !c->rbuf || c->rlen < HTTP_RBUF_SIZE || (!c->pinned && c->rpos > 0);
        if (want && !c->reading) {
                if ((c->tls ? http_tls_read_start(c, on_alloc, on_read)
                            : uv_read_start(&c->h.stream, on_alloc, on_read)) == 0)
                        c->reading = true;
        } else if (!want && c->reading) {
                if (c->tls)
                        http_tls_read_stop(c);
                else
                        uv_read_stop(&c->h.stream);
                c->reading = false;
        }
}

static void conn_after_io(struct lg_http_request *c) {
        if (c->closing)
                return;
        if (c->rbuf && c->rpos == c->rlen && !c->pinned) {
                c->rpos = c->rlen = 0;
                http_pool_put(&c->srv->rbufs, c->rbuf);
                c->rbuf = NULL;
        }
        conn_update_reading(c);
        conn_arm(c);
}

static void conn_parse_error(struct lg_http_request *c, enum http_errno e) {
        if (e == HPE_HEADER_OVERFLOW && c->head.last == HEAD_URL)
                conn_error(c, 414, "URITooLong", -EPROTO, "request target exceeds %zu bytes",
                           c->srv->cfg.max_head);
        else if (e == HPE_HEADER_OVERFLOW)
                conn_error(c, 431, "HeadersTooLarge", -EPROTO, "request head exceeds %zu bytes",
                           c->srv->cfg.max_head);
        else
                conn_error(c, 400, "BadRequest", -EPROTO, "malformed request: %s", http_errno_description(e));
}

static void conn_process(struct lg_http_request *c) {
        if (c->closing || c->in_parse)
                return;
        while (!c->parse_stopped && c->rpos < c->rlen && conn_can_parse(c)) {
                if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
                        http_parser_pause(&c->parser, 0);
                c->in_parse = true;
                size_t n = http_parser_execute(&c->parser, &settings, c->rbuf + c->rpos, c->rlen - c->rpos);
                c->in_parse = false;
                c->rpos += n;
                if (c->closing || c->parse_stopped)
                        break;
                enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
                if (e == HPE_PAUSED)
                        continue;
                if (e != HPE_OK) {
                        conn_parse_error(c, e);
                        break;
                }
                if (n == 0)
                        break;
        }
        if (c->lingering && !c->pinned)
                c->rpos = c->rlen;
        /* The handler may have ended the request from a parser callback. */
        conn_check(c);
        conn_after_io(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
        (void) buf;
        struct lg_http_request *c = s->data;
        if (c->closing)
                return;
        if (nread > 0) {
                c->last_read = now_ms(c->srv);
                if (c->lingering) {
                        if (!c->pinned)
                                c->rpos = c->rlen = 0;
                        conn_after_io(c);
                        return;
                }
                c->rlen += (size_t) nread;
                if (c->state == C_IDLE) {
                        c->state = C_HEAD;
                        c->state_since = c->last_read;
                }
                conn_process(c);
                return;
        }
        if (nread == 0)
                return;
        if (nread == UV_ENOBUFS) {
                if (c->tls)
                        http_tls_read_stop(c);
                else
                        uv_read_stop(s);
                c->reading = false;
                return;
        }
        /* EOF or error: the client is gone (an EOF while a response is
         * pending counts as going away, as in nginx). */
        http_srv_conn_close(c, -ECONNRESET);
}

/* ------------------------------------------------------------------------
 * Parser callbacks
 * --------------------------------------------------------------------- */

static int head_error(struct lg_http_request *c, int r, bool url) {
        const struct lg_http_server_config *cfg = &c->srv->cfg;
        if (r == -E2BIG && url)
                conn_error(c, 414, "URITooLong", -EPROTO, "request target exceeds %zu bytes", cfg->max_head);
        else if (r == -E2BIG)
                conn_error(c, 431, "HeadersTooLarge", -EPROTO, "request head exceeds %zu bytes", cfg->max_head);
        else if (r == -EMLINK)
                conn_error(c, 431, "HeadersTooLarge", -EPROTO, "more than %u request headers", cfg->max_headers);
        else if (r == -ENOMEM)
                conn_error(c, 503, "Unavailable", -ENOMEM, "out of memory");
        else if (r == -EBADMSG)
                conn_error(c, 400, "BadRequest", -EPROTO, "invalid header name");
        else
                conn_error(c, 400, "BadRequest", -EPROTO, "malformed request head");
        return -1;
}

static int on_message_begin(http_parser *p) {
        struct lg_http_request *c = p->data;
        http_head_reset(&c->head);
        c->msg_begun = true;
        c->fresh = false;
        c->trailer_bytes = 0;
        if (c->state == C_IDLE) {
                c->state = C_HEAD;
                c->state_since = now_ms(c->srv);
        }
        return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
        struct lg_http_request *c = p->data;
        int r = http_head_url(&c->head, at, len);
        return r < 0 ? head_error(c, r, true) : 0;
}

static int trailer_bytes(struct lg_http_request *c, size_t len) {
        c->trailer_bytes += len;
        if (c->trailer_bytes > c->srv->cfg.max_head)
                return head_error(c, -E2BIG, false);
        return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
        struct lg_http_request *c = p->data;
        if (c->state == C_ACTIVE)
                return trailer_bytes(c, len);
        int r = http_head_field(&c->head, at, len);
        return r < 0 ? head_error(c, r, false) : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
        struct lg_http_request *c = p->data;
        if (c->state == C_ACTIVE)
                return trailer_bytes(c, len);
        int r = http_head_value(&c->head, at, len);
        return r < 0 ? head_error(c, r, false) : 0;
}

/* Split the target into raw path and query, decoded segments and params,
 * all in `ex` (room for 4 * (target length + 2)). */
static int conn_parse_target(struct lg_http_request *c, char *ex) {
        const char *t = c->head.buf;
        size_t tl = c->head.url_len;
        const char *ps = t, *qs = NULL;
        size_t pl = tl, ql = 0;
        bool origin = tl > 0 && t[0] == '/';
        if (origin) {
                const char *q = memchr(t, '?', tl), *h = memchr(t, '#', tl);
                if (h && q && q > h)
                        q = NULL;
                const char *pe = q ? q : (h ? h : t + tl);
                pl = (size_t) (pe - t);
                if (q) {
                        qs = q + 1;
                        ql = (size_t) ((h ? h : t + tl) - qs);
                }
        } else {
                struct http_parser_url u;
                http_parser_url_init(&u);
                if (http_parser_parse_url(t, tl, 0, &u) == 0 && (u.field_set & (1 << UF_HOST))) {
                        origin = true;
                        if (u.field_set & (1 << UF_PATH)) {
                                ps = t + u.field_data[UF_PATH].off;
                                pl = u.field_data[UF_PATH].len;
                        } else {
                                ps = "/";
                                pl = 1;
                        }
                        if (u.field_set & (1 << UF_QUERY)) {
                                qs = t + u.field_data[UF_QUERY].off;
                                ql = u.field_data[UF_QUERY].len;
                        }
                }
        }
        if (!origin && !(tl == 1 && t[0] == '*' && c->parser.method == HTTP_OPTIONS) &&
            c->parser.method != HTTP_CONNECT)
                return -EINVAL;
        char *o = ex;
        memcpy(o, ps, pl);
        o[pl] = '\0';
        c->path = o;
        o += pl + 1;
        memcpy(o, qs ? qs : "", ql);
        o[ql] = '\0';
        c->query = o;
        o += ql + 1;

        /* Segments. */
        c->nsegs = -EINVAL;
        if (origin && pl > 0 && ps[0] == '/') {
                size_t n = 0;
                for (size_t i = 0; i < pl; i++)
                        n += ps[i] == '/';
                if (pl == 1)
                        n = 0;
                if (n > c->segcap) {
                        void *s = realloc(c->segs, n * sizeof(*c->segs));
                        if (!s)
                                return -ENOMEM;
                        c->segs = s;
                        c->segcap = n;
                }
                int k = 0;
                bool ok = true;
                for (size_t i = 1; n > 0 && i <= pl; k++) {
                        size_t j = i;
                        while (j < pl && ps[j] != '/')
                                j++;
                        ssize_t d = lg_http_pct_decode(ps + i, j - i, o, false);
                        if (d < 0) {
                                ok = false;
                                break;
                        }
                        c->segs[k] = o;
                        o += d + 1;
                        i = j + 1;
                }
                if (ok)
                        c->nsegs = k;
        }

        /* Parameters. */
        size_t np = 0;
        for (size_t i = 0; i < ql; i++)
                np += qs[i] == '&';
        np += ql > 0;
        if (np > c->paramcap) {
                void *s = realloc(c->params, np * sizeof(*c->params));
                if (!s)
                        return -ENOMEM;
                c->params = s;
                c->paramcap = np;
        }
        int k = 0;
        c->nparams = 0;
        for (size_t i = 0; i < ql;) {
                size_t j = i;
                while (j < ql && qs[j] != '&')
                        j++;
                if (j > i) {
                        const char *eq = memchr(qs + i, '=', j - i);
                        size_t kl = eq ? (size_t) (eq - (qs + i)) : j - i;
                        ssize_t d1 = lg_http_pct_decode(qs + i, kl, o, true);
                        if (d1 < 0) {
                                c->nparams = -EINVAL;
                                break;
                        }
                        c->params[k].name = o;
                        o += d1 + 1;
                        size_t vl = eq ? j - i - kl - 1 : 0;
                        ssize_t d2 = lg_http_pct_decode(eq ? eq + 1 : "", vl, o, true);
                        if (d2 < 0) {
                                c->nparams = -EINVAL;
                                break;
                        }
                        c->params[k].value = o;
                        o += d2 + 1;
                        k++;
                }
                i = j + 1;
        }
        if (c->nparams == 0)
                c->nparams = k;
        return 0;
}

static void conn_dispatch(struct lg_http_request *c) {
        c->dispatched = true;
        c->owned = true;
        c->refs++;
        c->srv->cfg.on_request(c, c->srv->cfg.userdata);
}

static int on_headers_complete(http_parser *p) {
        struct lg_http_request *c = p->data;
        struct lg_http_server *srv = c->srv;
        char *ex;
        int r = http_head_finish(&c->head, 4 * (c->head.url_len + 2), &ex);
        if (r < 0)
                return head_error(c, r, false);
        c->target = c->head.buf;
        r = conn_parse_target(c, ex);
        if (r == -EINVAL) {
                conn_error(c, 400, "BadRequest", -EPROTO, "invalid request target");
                return -1;
        }
        if (r < 0)
                return head_error(c, r, false);
        c->state = C_ACTIVE;
        http_srv_anon_update(c);
        c->last_read = now_ms(srv);
        c->version = p->http_major * 10 + p->http_minor;
        c->is_head = p->method == HTTP_HEAD;

        if (p->http_major != 1 || p->http_minor > 1) {
                conn_error(c, 505, "VersionNotSupported", -EPROTO, "HTTP/%u.%u is not supported",
                           p->http_major, p->http_minor);
                return -1;
        }
        c->keep_alive = http_should_keep_alive(p) && !p->upgrade;
        if (p->method == HTTP_CONNECT) {
                conn_error(c, 501, "NotImplemented", -EPROTO, "CONNECT is not supported");
                return -1;
        }
        const char *host = NULL;
        int nhost = 0;
        bool te = false, cl = false;
        const char *expect = NULL;
        for (size_t i = 0; i < c->head.n; i++) {
                const char *n = c->head.hdrs[i].name;
                if (strcasecmp(n, "host") == 0) {
                        host = c->head.hdrs[i].value;
                        nhost++;
                } else if (strcasecmp(n, "transfer-encoding") == 0) {
                        te = true;
                } else if (strcasecmp(n, "content-length") == 0) {
                        cl = true;
                } else if (strcasecmp(n, "expect") == 0) {
                        expect = c->head.hdrs[i].value;
                }
        }
        if (nhost > 1 || (c->version == 11 && !host)) {
                conn_error(c, 400, "BadRequest", -EPROTO, "%s Host header",
                           nhost > 1 ? "more than one" : "missing");
                return -1;
        }
        bool chunked = p->flags & F_CHUNKED;
        if (te && (!chunked || cl)) {
                conn_error(c, 400, "BadRequest", -EPROTO,
                           chunked ? "both Content-Length and Transfer-Encoding"
                                   : "unsupported Transfer-Encoding");
                return -1;
        }
        if (expect) {
                if (c->version == 11 && strcasecmp(expect, "100-continue") == 0) {
                        c->expect_continue = true;
                } else {
                        conn_error(c, 417, "ExpectationFailed", -EPROTO, "unsupported Expect: %.64s", expect);
                        return -1;
                }
        }
        if (!chunked && p->content_length != ULLONG_MAX && p->content_length > INT64_MAX) {
                conn_error(c, 413, "TooLarge", -EFBIG, "request body exceeds %zu bytes", srv->cfg.max_body);
                return -1;
        }
        if (chunked)
                c->content_length = -1;
        else if (p->content_length == ULLONG_MAX)
                c->content_length = 0;
        else
                c->content_length = (int64_t) p->content_length;

        c->mode = srv->cfg.on_head ? srv->cfg.on_head(c, srv->cfg.userdata) : LG_HTTP_BODY_BUFFER;
        if (c->closing || c->parse_stopped)
                return -1;
        if (c->mode != LG_HTTP_BODY_STREAM) {
                c->mode = LG_HTTP_BODY_BUFFER;
                if (c->content_length > 0 && (uint64_t) c->content_length > srv->cfg.max_body) {
                        conn_error(c, 413, "TooLarge", -EFBIG, "request body exceeds %zu bytes",
                                   srv->cfg.max_body);
                        return -1;
                }
                http_srv_conn_send_continue(c);
                return 0;
        }
        conn_dispatch(c);
        if (c->closing || c->parse_stopped)
                return -1;
        if (!conn_can_parse(c))
                http_parser_pause(p, 1);
        return 0;
}

int http_srv_body_too_large(struct lg_http_request *c, uint64_t limit) {
        conn_error(c, 413, "TooLarge", -EFBIG, "request body exceeds %llu bytes", (unsigned long long) limit);
        return -1;
}

static int on_body(http_parser *p, const char *at, size_t len) {
        struct lg_http_request *c = p->data;
        c->body_received += len;
        if (c->discard || (c->dispatched && !c->owned))
                return 0;
        if (c->mode == LG_HTTP_BODY_BUFFER) {
                size_t max = c->srv->cfg.max_body;
                if (c->body_received > max)
                        return http_srv_body_too_large(c, max);
                if (c->body_received == len && c->content_length == (int64_t) len) {
                        /* The whole body in one piece: use it in place. */
                        c->body_ptr = at;
                        c->pinned = true;
                        return 0;
                }
                size_t want = c->content_length > 0 ? (size_t) c->content_length : c->body_received;
                if (want < c->body_received)
                        want = c->body_received;
                if (http_reserve(&c->body, &c->body_cap, want) < 0) {
                        conn_error(c, 503, "Unavailable", -ENOMEM, "out of memory");
                        return -1;
                }
                memcpy(c->body + c->body_received - len, at, len);
                return 0;
        }
        if (c->body_received > c->body_limit)
                return http_srv_body_too_large(c, c->body_limit);
        if (c->on_data)
                c->on_data(c, at, len, c->body_ud);
        if (c->closing || c->parse_stopped)
                return -1;
        if (c->paused && c->owned) {
                c->pinned = true;
                http_parser_pause(p, 1);
        }
        return 0;
}

static int on_message_complete(http_parser *p) {
        struct lg_http_request *c = p->data;
        if (c->state != C_ACTIVE)
                return 0;
        c->body_done = true;
        if (c->mode == LG_HTTP_BODY_BUFFER && !c->dispatched) {
                if (c->body_ptr) {
                        c->body_len = c->body_received;
                } else {
                        c->body_ptr = c->body;
                        c->body_len = c->body_received;
                }
                conn_dispatch(c);
        } else if (c->owned && c->body_reading && c->on_end) {
                c->on_end(c, c->body_ud);
        }
        if (c->closing || c->parse_stopped)
                return -1;
        conn_check(c);
        if (c->closing || c->parse_stopped)
                return -1;
        if (!conn_can_parse(c))
                http_parser_pause(p, 1);
        return 0;
}

/* ------------------------------------------------------------------------
 * Request lifecycle
 * --------------------------------------------------------------------- */

static void conn_reset_request(struct lg_http_request *c) {
        struct lg_http_server *srv = c->srv;
        c->state = C_IDLE;
        http_srv_anon_update(c);
        c->state_since = now_ms(srv);
        c->msg_begun = false;
        c->target = c->path = c->query = NULL;
        c->nsegs = c->nparams = 0;
        c->content_length = 0;
        c->expect_continue = c->continue_sent = c->is_head = false;
        c->mode = LG_HTTP_BODY_BUFFER;
        c->dispatched = c->owned = false;
        c->body_done = c->body_reading = c->paused = c->discard = false;
        c->pinned = false;
        c->body_limit = UINT64_MAX;
        c->body_received = 0;
        c->body_ptr = NULL;
        c->body_len = 0;
        if (c->body_cap > BODY_KEEP_MAX) {
                free(c->body);
                c->body = NULL;
                c->body_cap = 0;
        }
        c->userdata = NULL;
        c->on_abort = NULL;
        c->abort_ud = NULL;
        c->on_data = NULL;
        c->on_end = NULL;
        c->body_ud = NULL;
        c->aborted = 0;
        c->abort_pending = false;
        c->resp_started = c->resp_ended = c->resp_chunked = c->resp_no_body = false;
        c->close_after = c->head_pending = false;
        c->resp_cl = 0;
        c->resp_written = 0;
}

/* Is the request in flight finished? Then go on with the next one, or end
 * the connection. */
static void conn_check(struct lg_http_request *c) {
        if (c->closing || c->lingering || c->state != C_ACTIVE)
                return;
        if (c->owned || !c->resp_ended || c->writes > 0 || c->head_pending || c->done_wrs)
                return;
        if (!c->body_done) {
                if (c->discard && !c->close_after)
                        return; /* still dropping the body */
                conn_linger(c);
                return;
        }
        if (c->close_after || !c->keep_alive || c->srv->closing) {
                conn_linger(c);
                return;
        }
        conn_reset_request(c);
        if (!c->in_parse && c->rpos < c->rlen)
                http_srv_conn_kick(c);
        if (!c->in_parse)
                conn_after_io(c);
}

/* ------------------------------------------------------------------------
 * Timers
 * --------------------------------------------------------------------- */

static uint64_t add_ms(uint64_t a, uint64_t b) { return b > UINT64_MAX - a ? UINT64_MAX : a + b; }

static bool conn_body_wait(const struct lg_http_request *c) {
        return c->state == C_ACTIVE && !c->body_done && conn_can_parse(c) && c->rpos == c->rlen;
}

/* How long a connection may wait for its next request to begin: the head
 * timeout before the first, idle_timeout_ms after -- or less while no
 * request on it was authenticated (unauth_idle_timeout_ms). */
static uint64_t conn_idle_ms(const struct lg_http_request *c) {
        const struct lg_http_server_config *cfg = &c->srv->cfg;
        uint64_t t = c->fresh ? cfg->header_timeout_ms : cfg->idle_timeout_ms;
        if (!c->authenticated && cfg->unauth_idle_timeout_ms && cfg->unauth_idle_timeout_ms < t)
                t = cfg->unauth_idle_timeout_ms;
        return t;
}

static uint64_t conn_deadline(const struct lg_http_request *c) {
        const struct lg_http_server_config *cfg = &c->srv->cfg;
        uint64_t d = UINT64_MAX;
        if (c->writes > 0)
                d = add_ms(c->write_since, cfg->write_timeout_ms);
        if (c->lingering)
                return c->linger_until < d ? c->linger_until : d;
        uint64_t s = UINT64_MAX;
        if (c->state == C_IDLE)
                s = add_ms(c->state_since, conn_idle_ms(c));
        else if (c->state == C_HEAD)
                s = add_ms(c->state_since, cfg->header_timeout_ms);
        else if (conn_body_wait(c))
                s = add_ms(c->last_read, cfg->body_timeout_ms);
        return s < d ? s : d;
}

static void on_timer(uv_timer_t *t);

static void conn_arm(struct lg_http_request *c) {
        if (c->closing)
                return;
        uint64_t d = conn_deadline(c);
        if (d == UINT64_MAX)
                return; /* a running timer fires once, finds nothing and stays off */
        if (c->timer_on && c->timer_due <= d)
                return; /* fires early and re-arms */
        uint64_t now = now_ms(c->srv);
        uv_timer_start(&c->timer, on_timer, d > now ? d - now : 0, 0);
        c->timer_on = true;
        c->timer_due = d;
}

static void on_timer(uv_timer_t *t) {
        struct lg_http_request *c = t->data;
        const struct lg_http_server_config *cfg = &c->srv->cfg;
        c->timer_on = false;
        uint64_t now = now_ms(c->srv);
        if (c->writes > 0 && now >= add_ms(c->write_since, cfg->write_timeout_ms)) {
                http_srv_conn_close(c, -ETIMEDOUT);
                return;
        } else if (c->lingering) {
                if (now >= c->linger_until) {
                        http_srv_conn_close(c, 0);
                        return;
                }
        } else if (c->state == C_IDLE && now >= add_ms(c->state_since, conn_idle_ms(c))) {
                http_srv_conn_close(c, 0);
                return;
        } else if (c->state == C_HEAD && now >= add_ms(c->state_since, cfg->header_timeout_ms)) {
                if (!c->msg_begun) {
                        http_srv_conn_close(c, 0); /* only stray line breaks */
                        return;
                }
                conn_error(c, 408, "RequestTimeout", -ETIMEDOUT, "request head not received within %llu ms",
                           (unsigned long long) cfg->header_timeout_ms);
        } else if (conn_body_wait(c) && now >= add_ms(c->last_read, cfg->body_timeout_ms)) {
                conn_error(c, 408, "RequestTimeout", -ETIMEDOUT, "no request body data for %llu ms",
                           (unsigned long long) cfg->body_timeout_ms);
        }
        conn_arm(c);
}

/* ------------------------------------------------------------------------
 * Accepting
 * --------------------------------------------------------------------- */

static void on_connection(uv_stream_t *ls, int status) {
        struct listener *l = ls->data;
        struct lg_http_server *srv = l->srv;
        if (status < 0)
                return;
        struct lg_http_request *c = calloc(1, sizeof(*c));
        if (!c)
                return;
        c->srv = srv;
        c->is_unix = l->is_unix;
        int r = l->is_unix ? uv_pipe_init(srv->loop, &c->h.pipe, 0) : uv_tcp_init(srv->loop, &c->h.tcp);
        if (r < 0) {
                free(c);
                return;
        }
        uv_timer_init(srv->loop, &c->timer);
        c->h.handle.data = c;
        c->timer.data = c;
        c->refs = 2;
        c->next = srv->conns;
        if (srv->conns)
                srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
        srv->nlive++;
        c->head.limit = srv->cfg.max_head;
        c->head.max_hdrs = srv->cfg.max_headers;
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        c->body_limit = UINT64_MAX;
        c->state = C_IDLE;
        c->fresh = true;
        c->state_since = now_ms(srv);
        if (uv_accept(ls, &c->h.stream) < 0) {
                http_srv_conn_close(c, 0);
                return;
        }
        if (!http_srv_admit(l, c))
                return;
        if (l->tls_ctx && http_tls_conn_new(c, l->tls_ctx) < 0) {
                http_srv_conn_close(c, 0);
                return;
        }
        if (!l->is_unix)
                uv_tcp_nodelay(&c->h.tcp, 1);
        conn_after_io(c);
}

/* ------------------------------------------------------------------------
 * Server
 * --------------------------------------------------------------------- */

int lg_http_server_new(uv_loop_t *loop, const struct lg_http_server_config *cfg, struct lg_http_server **ret,
                       struct lg_error *err) {
        if (!loop || !cfg || !cfg->on_request || !ret)
                return lg_error_set(err, EINVAL, "http server: missing loop, config or on_request");
        struct lg_http_server *srv = calloc(1, sizeof(*srv));
        if (!srv)
                return lg_error_set(err, ENOMEM, "http server");
        srv->loop = loop;
        srv->cfg = *cfg;
        struct lg_http_server_config *c = &srv->cfg;
        if (!c->max_body)
                c->max_body = DEF_MAX_BODY;
        if (!c->max_head)
                c->max_head = DEF_MAX_HEAD;
        if (c->max_head > PARSER_MAX_HEAD)
                c->max_head = PARSER_MAX_HEAD;
        if (!c->max_headers)
                c->max_headers = DEF_MAX_HEADERS;
        if (!c->max_connections)
                c->max_connections = DEF_MAX_CONNS;
        if (!c->max_connections_per_addr)
                c->max_connections_per_addr = DEF_MAX_CONNS_PER_ADDR;
        if (!c->header_timeout_ms)
                c->header_timeout_ms = DEF_HEADER_TIMEOUT;
        if (!c->idle_timeout_ms)
                c->idle_timeout_ms = DEF_IDLE_TIMEOUT;
        if (!c->body_timeout_ms)
                c->body_timeout_ms = DEF_BODY_TIMEOUT;
        if (!c->write_timeout_ms)
                c->write_timeout_ms = DEF_WRITE_TIMEOUT;
        srv->rbufs.size = HTTP_RBUF_SIZE;
        int r = uv_idle_init(loop, &srv->kick);
        if (r < 0) {
                free(srv);
                return lg_error_set(err, -r, "http server: idle handle");
        }
        srv->kick.data = srv;
        *ret = srv;
        return 0;
}

static void on_listener_closed(uv_handle_t *h) {
        struct listener *l = h->data;
        struct lg_http_server *srv = l->srv;
        if (l->path)
                unlink(l->path);
        free(l->path);
        http_tls_ctx_free(l->tls_ctx);
        free(l);
        srv->listeners_open--;
        server_maybe_done(srv);
}

static int listener_add(struct lg_http_server *srv, struct listener *l, struct lg_error *err, const char *what) {
        int r = uv_listen(&l->h.stream, 1024, on_connection);
        if (r < 0) {
                free(l->path);
                l->path = NULL; /* not ours to remove */
                uv_close(&l->h.handle, on_listener_closed);
                return lg_error_set(err, -r, "listen on %s", what);
        }
        srv->listeners[srv->nlisteners++] = l;
        return 0;
}

/* tls_ctx (may be NULL) belongs to the listener from here on, also when
 * this fails. */
static int listen_tcp(struct lg_http_server *srv, const char *host, uint16_t port, struct ssl_ctx_st *tls_ctx,
                      struct lg_error *err) {
        if (srv->closing || srv->nlisteners >= MAX_LISTENERS) {
                http_tls_ctx_free(tls_ctx);
                return lg_error_set(err, EBUSY, "http server: cannot add a listener");
        }
        if (!host || strcmp(host, "localhost") == 0)
                host = "127.0.0.1";
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        if (uv_ip4_addr(host, port, (struct sockaddr_in *) &ss) != 0 &&
            uv_ip6_addr(host, port, (struct sockaddr_in6 *) &ss) != 0) {
                http_tls_ctx_free(tls_ctx);
                return lg_error_set(err, EINVAL, "invalid listen address `%s`", host);
        }
        struct listener *l = calloc(1, sizeof(*l));
        if (!l) {
                http_tls_ctx_free(tls_ctx);
                return lg_error_set(err, ENOMEM, "listener");
        }
        l->srv = srv;
        int r = uv_tcp_init(srv->loop, &l->h.tcp);
        if (r < 0) {
                free(l);
                http_tls_ctx_free(tls_ctx);
                return lg_error_set(err, -r, "tcp handle");
        }
        l->tls_ctx = tls_ctx;
        l->h.handle.data = l;
        srv->listeners_open++;
        char what[96];
        snprintf(what, sizeof(what), "%s:%u", host, port);
        r = uv_tcp_bind(&l->h.tcp, (const struct sockaddr *) &ss, 0);
        if (r < 0) {
                uv_close(&l->h.handle, on_listener_closed);
                return lg_error_set(err, -r, "bind %s", what);
        }
        return listener_add(srv, l, err, what);
}

int lg_http_server_listen_tcp(struct lg_http_server *srv, const char *host, uint16_t port, struct lg_error *err) {
        return listen_tcp(srv, host, port, NULL, err);
}

int lg_http_server_listen_tls(struct lg_http_server *srv, const char *host, uint16_t port, const char *cert_file,
                              const char *key_file, struct lg_error *err) {
        if (srv->closing || srv->nlisteners >= MAX_LISTENERS)
                return lg_error_set(err, EBUSY, "http server: cannot add a listener");
        struct ssl_ctx_st *ctx;
        int r = http_tls_ctx_new(cert_file, key_file, &ctx, err);
        if (r < 0)
                return r;
        return listen_tcp(srv, host, port, ctx, err);
}

int lg_http_server_listen_unix(struct lg_http_server *srv, const char *path, struct lg_error *err) {
        if (srv->closing || srv->nlisteners >= MAX_LISTENERS)
                return lg_error_set(err, EBUSY, "http server: cannot add a listener");
        if (!path || !*path || strlen(path) >= sizeof(((struct sockaddr_un *) 0)->sun_path))
                return lg_error_set(err, ENAMETOOLONG, "bad Unix socket path");
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(path);
        struct listener *l = calloc(1, sizeof(*l));
        if (!l)
                return lg_error_set(err, ENOMEM, "listener");
        l->srv = srv;
        l->is_unix = true;
        int r = uv_pipe_init(srv->loop, &l->h.pipe, 0);
        if (r < 0) {
                free(l);
                return lg_error_set(err, -r, "pipe handle");
        }
        l->h.handle.data = l;
        srv->listeners_open++;
        r = uv_pipe_bind(&l->h.pipe, path);
        if (r < 0) {
                uv_close(&l->h.handle, on_listener_closed);
                return lg_error_set(err, -r, "bind `%s`", path);
        }
        l->path = strdup(path);
        return listener_add(srv, l, err, path);
}

static int listener_port(const struct lg_http_server *srv, bool tls) {
        for (size_t i = 0; i < srv->nlisteners; i++) {
                const struct listener *l = srv->listeners[i];
                if (l->is_unix || (l->tls_ctx != NULL) != tls)
                        continue;
                struct sockaddr_storage ss;
                int len = sizeof(ss);
                if (uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *) &ss, &len) < 0)
                        return -EIO;
                if (ss.ss_family == AF_INET)
                        return ntohs(((struct sockaddr_in *) &ss)->sin_port);
                if (ss.ss_family == AF_INET6)
                        return ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
        }
        return -ENOENT;
}

int lg_http_server_port(const struct lg_http_server *srv) { return listener_port(srv, false); }

int lg_http_server_tls_port(const struct lg_http_server *srv) { return listener_port(srv, true); }

unsigned lg_http_server_connections(const struct lg_http_server *srv) { return srv->nconns; }

static void on_kick_closed(uv_handle_t *h) {
        struct lg_http_server *srv = h->data;
        void (*done)(void *) = srv->done;
        void *ud = srv->done_ud;
        http_pool_clear(&srv->rbufs);
        http_wr_pool_clear(&srv->wrs);
        http_srv_peers_free(srv);
        free(srv->scratch);
        free(srv);
        if (done)
                done(ud);
}

static void server_maybe_done(struct lg_http_server *srv) {
        if (!srv->closing || srv->finishing || srv->listeners_open || srv->nlive)
                return;
        srv->finishing = true;
        if (srv->kick_on)
                uv_idle_stop(&srv->kick);
        uv_close((uv_handle_t *) &srv->kick, on_kick_closed);
}

void lg_http_server_close(struct lg_http_server *srv, void (*done)(void *ud), void *ud) {
        if (srv->finishing)
                return;
        if (srv->closing == 0) {
                srv->closing = 1;
                srv->done = done;
                srv->done_ud = ud;
                for (size_t i = 0; i < srv->nlisteners; i++)
                        uv_close(&srv->listeners[i]->h.handle, on_listener_closed);
                srv->nlisteners = 0;
                for (struct lg_http_request *c = srv->conns, *n; c; c = n) {
                        n = c->next;
                        if (c->state != C_ACTIVE && !c->lingering)
                                http_srv_conn_close(c, 0);
                }
        } else {
                srv->closing = 2;
                if (done) {
                        srv->done = done;
                        srv->done_ud = ud;
                }
                for (struct lg_http_request *c = srv->conns, *n; c; c = n) {
                        n = c->next;
                        http_srv_conn_close(c, -ECANCELED);
                }
        }
        server_maybe_done(srv);
}
