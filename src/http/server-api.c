/* The HTTP server's public request and response API (http.h): request
 * accessors, streamed request bodies, responses. The connection machinery
 * they sit on is in server.c. */
#include <stdarg.h>
#include <strings.h>
#include <sys/stat.h>

#include "http/server-internal.h"

/* ------------------------------------------------------------------------
 * Request accessors
 * --------------------------------------------------------------------- */

const char *lg_http_request_method(const struct lg_http_request *req) {
        return http_method_str((enum http_method) req->parser.method);
}
const char *lg_http_request_target(const struct lg_http_request *req) { return req->target; }
const char *lg_http_request_path(const struct lg_http_request *req) { return req->path; }
const char *lg_http_request_query(const struct lg_http_request *req) { return req->query; }

int lg_http_request_segments(const struct lg_http_request *req, const char *const **segs) {
        if (segs)
                *segs = req->nsegs > 0 ? req->segs : NULL;
        return req->nsegs;
}

int lg_http_request_params(const struct lg_http_request *req, const struct lg_http_header **params) {
        if (params)
                *params = req->nparams > 0 ? req->params : NULL;
        return req->nparams;
}

const char *lg_http_request_param(const struct lg_http_request *req, const char *name) {
        for (int i = 0; i < req->nparams; i++)
                if (strcmp(req->params[i].name, name) == 0)
                        return req->params[i].value;
        return NULL;
}

const char *lg_http_request_header(const struct lg_http_request *req, const char *name) {
        return http_head_get(&req->head, name);
}

size_t lg_http_request_headers(const struct lg_http_request *req, const struct lg_http_header **hdrs) {
        if (hdrs)
                *hdrs = req->head.hdrs;
        return req->head.n;
}

int lg_http_request_version(const struct lg_http_request *req) { return req->version; }
int64_t lg_http_request_content_length(const struct lg_http_request *req) { return req->content_length; }

const void *lg_http_request_body(const struct lg_http_request *req, size_t *len) {
        if (len)
                *len = req->body_len;
        return req->body_len ? req->body_ptr : NULL;
}

void lg_http_request_set_userdata(struct lg_http_request *req, void *userdata) { req->userdata = userdata; }
void *lg_http_request_userdata(const struct lg_http_request *req) { return req->userdata; }

int lg_http_request_peer(const struct lg_http_request *req, char *buf, size_t cap) {
        if (req->is_unix) {
                snprintf(buf, cap, "unix");
                return 0;
        }
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        int r = uv_tcp_getpeername(&req->h.tcp, (struct sockaddr *) &ss, &len);
        if (r < 0)
                return r;
        char ip[INET6_ADDRSTRLEN];
        if (ss.ss_family == AF_INET) {
                struct sockaddr_in *a = (struct sockaddr_in *) &ss;
                inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
                snprintf(buf, cap, "%s:%u", ip, ntohs(a->sin_port));
        } else {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;
                inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
                snprintf(buf, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
        }
        return 0;
}

int lg_http_request_peer_cred(const struct lg_http_request *req, pid_t *pid, uid_t *uid, gid_t *gid) {
        if (!req->is_unix)
                return -ENOTSOCK;
        uv_os_fd_t fd;
        int r = uv_fileno(&req->h.handle, &fd);
        if (r < 0)
                return r;
        struct ucred uc;
        socklen_t l = sizeof(uc);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &l) < 0)
                return -errno;
        if (pid)
                *pid = uc.pid;
        if (uid)
                *uid = uc.uid;
        if (gid)
                *gid = uc.gid;
        return 0;
}

void lg_http_request_on_abort(struct lg_http_request *req, lg_http_abort_cb cb, void *ud) {
        req->on_abort = cb;
        req->abort_ud = ud;
        if (cb && req->aborted && req->owned && !req->closing) {
                /* Aborted before the callback was set: still tell. */
                req->abort_pending = true;
                http_srv_conn_kick(req);
        }
}

int lg_http_request_aborted(const struct lg_http_request *req) { return req->aborted; }

/* ------------------------------------------------------------------------
 * Streamed bodies
 * --------------------------------------------------------------------- */

int lg_http_request_read(struct lg_http_request *req, lg_http_data_cb on_data, lg_http_end_cb on_end, void *ud) {
        struct lg_http_request *c = req;
        if (!c->owned || c->mode != LG_HTTP_BODY_STREAM || c->body_reading)
                return -EINVAL;
        if (c->aborted || c->closing)
                return -ECONNRESET;
        if (c->content_length > 0 && (uint64_t) c->content_length > c->body_limit) {
                http_srv_body_too_large(c, c->body_limit);
                return -EFBIG;
        }
        c->body_reading = true;
        c->on_data = on_data;
        c->on_end = on_end;
        c->body_ud = ud;
        http_srv_conn_send_continue(c);
        if (!c->in_parse)
                http_srv_conn_kick(c);
        return 0;
}

void lg_http_request_set_body_limit(struct lg_http_request *req, uint64_t max) { req->body_limit = max; }

void lg_http_request_pause(struct lg_http_request *req) {
        if (req->owned && req->mode == LG_HTTP_BODY_STREAM)
                req->paused = true;
}

void lg_http_request_resume(struct lg_http_request *req) {
        if (!req->paused)
                return;
        req->paused = false;
        req->pinned = false;
        if (!req->closing && !req->in_parse)
                http_srv_conn_kick(req);
}

/* ------------------------------------------------------------------------
 * Responses
 * --------------------------------------------------------------------- */

/* Common checks; returns 1 to go on, or <= 0 (the request is released when
 * `release`). */
static int resp_precheck(struct lg_http_request *c, bool release) {
        if (!c->owned)
                return -EINVAL;
        if (c->aborted || c->closing || c->lingering) {
                if (release)
                        http_srv_conn_release(c);
                return -ECONNRESET;
        }
        return 1;
}

static int resp_fail(struct lg_http_request *c, int r) {
        http_srv_conn_close(c, r);
        http_srv_conn_release(c);
        return r;
}

int lg_http_respond(struct lg_http_request *req, int status, const struct lg_http_header *hdrs, size_t nhdrs,
                    const void *body, size_t len) {
        struct lg_http_request *c = req;
        int r = resp_precheck(c, true);
        if (r <= 0)
                return r;
        if (c->resp_started)
                return resp_fail(c, -EINVAL);
        struct lg_http_server *srv = c->srv;
        ssize_t hl = http_srv_conn_format_head(c, &srv->scratch, &srv->scratch_cap, status, hdrs, nhdrs, (int64_t) len, NULL);
        if (hl < 0)
                return resp_fail(c, (int) hl);
        c->resp_started = true;
        struct http_wr *wr = http_wr_get(&srv->wrs);
        if (!wr)
                return resp_fail(c, -ENOMEM);
        wr->bufs[0] = uv_buf_init(srv->scratch, (unsigned) hl);
        wr->nbufs = 1;
        if (!c->resp_no_body && len > 0)
                wr->bufs[wr->nbufs++] = uv_buf_init((char *) body, (unsigned) len);
        r = http_srv_conn_submit(c, wr, false);
        http_srv_conn_release(c);
        return r;
}

int lg_http_respond_error(struct lg_http_request *req, int status, const char *code, const char *fmt, ...) {
        char msg[1024], body[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        size_t blen = lg_http_error_json(body, sizeof(body), code, msg);
        const struct lg_http_header h = {"Content-Type", "application/json"};
        return lg_http_respond(req, status, &h, 1, body, blen);
}

int lg_http_response_start(struct lg_http_request *req, int status, const struct lg_http_header *hdrs,
                           size_t nhdrs, int64_t content_length) {
        struct lg_http_request *c = req;
        int r = resp_precheck(c, false);
        if (r <= 0)
                return r;
        if (c->resp_started)
                return -EINVAL;
        ssize_t hl = http_srv_conn_format_head(c, &c->hbuf, &c->hcap, status, hdrs, nhdrs, content_length, NULL);
        if (hl < 0)
                return (int) hl;
        c->hlen = (size_t) hl;
        c->resp_started = true;
        c->head_pending = true;
        c->resp_written = 0;
        http_srv_conn_kick(c);
        return 0;
}

int lg_http_response_write(struct lg_http_request *req, const void *data, size_t len, lg_http_write_cb cb,
                           void *ud) {
        struct lg_http_request *c = req;
        if (!c->owned || !c->resp_started)
                return -EINVAL;
        if (c->aborted || c->closing || c->lingering)
                return -ECONNRESET;
        if (c->resp_cl >= 0 && !c->resp_no_body && c->resp_written + len > (uint64_t) c->resp_cl)
                return -EINVAL;
        struct http_wr *wr = http_wr_get(&c->srv->wrs);
        if (!wr)
                return -ENOMEM;
        wr->cb = cb;
        wr->ud = ud;
        if (c->resp_no_body || len == 0) {
                /* Nothing to send: complete from the loop. */
                http_srv_conn_defer_wr(c, wr);
                return 0;
        }
        if (c->head_pending) {
                wr->bufs[wr->nbufs++] = uv_buf_init(c->hbuf, (unsigned) c->hlen);
                c->head_pending = false;
        }
        if (c->resp_chunked) {
                size_t pl = http_chunk_prefix(wr->chunk, len);
                wr->bufs[wr->nbufs++] = uv_buf_init(wr->chunk, (unsigned) pl);
        }
        wr->bufs[wr->nbufs++] = uv_buf_init((char *) data, (unsigned) len);
        if (c->resp_chunked)
                wr->bufs[wr->nbufs++] = uv_buf_init((char *) "\r\n", 2);
        c->resp_written += len;
        return http_srv_conn_submit(c, wr, false);
}

size_t lg_http_response_queued(const struct lg_http_request *req) {
        return req->closing ? 0 : uv_stream_get_write_queue_size(&req->h.stream);
}

int lg_http_response_end(struct lg_http_request *req) {
        struct lg_http_request *c = req;
        int r = resp_precheck(c, true);
        if (r <= 0)
                return r;
        if (!c->resp_started)
                return resp_fail(c, -EINVAL);
        int ret = 0;
        if (c->resp_chunked) {
                static const char last[] = "0\r\n\r\n";
                struct http_wr *wr = http_wr_get(&c->srv->wrs);
                if (!wr)
                        return resp_fail(c, -ENOMEM);
                if (c->head_pending) {
                        wr->bufs[wr->nbufs++] = uv_buf_init(c->hbuf, (unsigned) c->hlen);
                        c->head_pending = false;
                }
                wr->bufs[wr->nbufs++] = uv_buf_init((char *) last, sizeof(last) - 1);
                ret = http_srv_conn_submit(c, wr, true);
        } else if (c->head_pending) {
                http_srv_conn_flush_head(c);
        }
        if (!c->closing && c->resp_cl >= 0 && !c->resp_no_body && c->resp_written < (uint64_t) c->resp_cl) {
                /* Short: the client must see the connection end. */
                c->close_after = true;
                ret = -EPIPE;
        }
        http_srv_conn_release(c);
        return ret;
}

void lg_http_response_abort(struct lg_http_request *req) {
        struct lg_http_request *c = req;
        if (!c->owned)
                return;
        c->on_abort = NULL;
        c->abort_pending = false;
        /* Lingering while the handler still owns the request means the
         * server answered it itself (413, 408, ...): that answer is whole
         * and on its way, and the lingering close is what lets a client
         * still sending read it. Closing now would reset the connection
         * under it, so the handler's abort, typically from its abort
         * callback, only releases the request. */
        if (!c->closing && !c->lingering)
                http_srv_conn_close(c, 0);
        c->abort_pending = false;
        http_srv_conn_release(c);
}
