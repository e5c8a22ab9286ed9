/* The router's requests: the queue with its deadlines, forwarding to an
 * instance's slot with streaming in both directions (router-internal.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "router/router-internal.h"

/* ---- forwarding --------------------------------------------------------- */

static void fwd_maybe_free(struct fwd *f) {
        if (!f->req_ended || !f->call_done || f->writes > 0)
                return;
        struct rinst *ri = f->ri;
        struct app *a = f->app;
        ri->refs--;
        free(f);
        if (ri->state == R_DRAINING && ri->active == 0)
                router_inst_kill(ri, NULL);
        else
                router_inst_free_if_unused(ri);
        router_dispatch(a);
}

/* The instance slot is free again once the response is complete. */
static void fwd_release_slot(struct fwd *f) {
        if (f->counted) {
                struct app *a = f->app;
                if (f->prev)
                        f->prev->next = f->next;
                else
                        a->fhead = f->next;
                if (f->next)
                        f->next->prev = f->prev;
                else
                        a->ftail = f->prev;
                f->counted = false;
                f->ri->active--;
                f->app->active--;
                f->ri->last_used = now_ms();
        }
}

/* status 0: the response is complete; else it failed: an error answer
 * (fmt: its message) if none has started, or the response cut. */
static void fwd_end_request(struct fwd *f, int status, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void fwd_end_request(struct fwd *f, int status, const char *code, const char *fmt, ...) {
        if (f->req_ended)
                return;
        f->req_ended = true;
        if (status && !f->response_started) {
                /* Counted only when someone is there to receive it. */
                if (!lg_http_request_aborted(f->req)) {
                        f->app->st.errors_5xx++;
                        if (status == 504)
                                f->app->st.timeouts_504++;
                }
                char msg[768];
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(msg, sizeof(msg), fmt, ap);
                va_end(ap);
                lg_http_respond_error(f->req, status, code, "%s", msg);
        } else if (status) {
                lg_http_response_abort(f->req);
        } else {
                lg_http_response_end(f->req);
        }
}

static void on_resp_written(void *ud, int status) {
        struct fwd *f = ud;
        f->writes--;
        if (status == 0 && !f->call_done)
                lg_http_call_resume(f->call);
        fwd_maybe_free(f);
}

static void on_call_response(struct lg_http_call *call, void *ud) {
        struct fwd *f = ud;
        const struct lg_http_header *hdrs;
        size_t n = lg_http_call_headers(call, &hdrs);
        int status = lg_http_call_status(call);
        if (f->req_ended)
                return;
        if (lg_http_response_start(f->req, status, hdrs, n, lg_http_call_content_length(call)) < 0) {
                lg_http_call_cancel(call);
                f->call_done = true;
                fwd_release_slot(f);
                fwd_end_request(f, 502, "BadGateway", "%s", "cannot relay the response");
                fwd_maybe_free(f);
                return;
        }
        f->response_started = true;
        if (f->cold && f->ri && !f->ri->first_served) {
                uint64_t ns = lg_now_ns() - f->arrived;
                struct lg_route_stats *st = &f->app->st;
                st->cold_start_ns_last = ns;
                st->cold_start_ns_total += ns;
                if (!st->cold_start_ns_min || ns < st->cold_start_ns_min)
                        st->cold_start_ns_min = ns;
                if (ns > st->cold_start_ns_max)
                        st->cold_start_ns_max = ns;
        }
        if (f->ri) {
                f->ri->first_served = true;
                if (f->ri->state == R_READY)
                        router_streak_end(f->app, f->ri, "answered a request");
        }
}

static void on_call_data(struct lg_http_call *call, const char *data, size_t len, void *ud) {
        struct fwd *f = ud;
        if (f->req_ended)
                return;
        f->writes++;
        int r = lg_http_response_write(f->req, data, len, on_resp_written, f);
        if (r < 0)
                f->writes--;
        else if (r == 0)
                lg_http_call_pause(call); /* queued: on_resp_written resumes */
}

static void on_call_done(struct lg_http_call *call, int error, void *ud) {
        struct fwd *f = ud;
        f->call_done = true;
        f->call = NULL;
        if (error == 0 && f->counted && !f->cold) {
                struct app *a = f->app;
                a->service[a->service_n++ % SERVICE_SAMPLES] = lg_now_ns() - f->sent;
                if (a->service_n == 2 * SERVICE_SAMPLES)
                        a->service_n = SERVICE_SAMPLES; /* same slot, no wrap */
        }
        fwd_release_slot(f);
        if (error == 0) {
                fwd_end_request(f, 0, NULL, "%s", "");
        } else if (error == -ETIMEDOUT) {
                fwd_end_request(f, 504, "Timeout", "app `%s` did not answer in time", f->app->key);
        } else {
                /* The instance broke mid-request: it is not trusted again.
                 * A connection that fails most often means its process
                 * died; its exit report, which says why, comes a little
                 * later: the instance waits for it, and so does this
                 * request's 502 (router.c, "Broken instances"). */
                struct rinst *ri = f->ri;
                char why[256];
                snprintf(why, sizeof(why), "request failed: %s", lg_http_call_error(call));
                bool conn = error == -ECONNRESET || error == -ECONNREFUSED;
                if (conn)
                        router_inst_broke(ri, lg_http_call_error(call));
                if (ri->state == R_BROKEN && conn && !f->req_ended && !f->response_started) {
                        f->held = true;
                        f->next = ri->held;
                        ri->held = f;
                        router_dispatch(f->app); /* what waits needs another instance */
                        return;
                }
                fwd_end_request(f, 502, "BadGateway", "app `%s` failed: %s", f->app->key,
                                ri->exit_text[0] ? ri->exit_text : lg_http_call_error(call));
                if (error != -ECANCELED && ri->state != R_DEAD && ri->state != R_BROKEN)
                        router_inst_kill(ri, why);
        }
        fwd_maybe_free(f);
}

void router_answer_held(struct rinst *ri, const char *detail) {
        while (ri->held) {
                struct fwd *f = ri->held;
                ri->held = f->next;
                f->next = NULL;
                f->held = false;
                fwd_end_request(f, 502, "BadGateway", "app `%s` failed: %s", f->app->key, detail);
                fwd_maybe_free(f);
        }
}

static const struct lg_http_call_ops call_ops = {
        .on_response = on_call_response,
        .on_data = on_call_data,
        .on_done = on_call_done,
};

static void on_req_written(void *ud, int status) {
        struct fwd *f = ud;
        f->writes--;
        if (status == 0 && !f->req_ended)
                lg_http_request_resume(f->req);
        fwd_maybe_free(f);
}

static void on_req_data(struct lg_http_request *req, const char *data, size_t len, void *ud) {
        struct fwd *f = ud;
        if (f->call_done)
                return;
        lg_http_request_pause(req);
        f->writes++;
        if (lg_http_call_write(f->call, data, len, on_req_written, f) < 0) {
                f->writes--;
                lg_http_request_resume(req);
        }
}

static void on_req_end(struct lg_http_request *req, void *ud) {
        struct fwd *f = ud;
        (void) req;
        if (!f->call_done && f->call)
                lg_http_call_end(f->call);
}

static void on_req_abort(struct lg_http_request *req, int reason, void *ud) {
        struct fwd *f = ud;
        (void) reason;
        (void) req;
        if (f->held) {
                for (struct fwd **pp = &f->ri->held; *pp; pp = &(*pp)->next)
                        if (*pp == f) {
                                *pp = f->next;
                                break;
                        }
                f->next = NULL;
                f->held = false;
        }
        if (!f->call_done && f->call) {
                lg_http_call_cancel(f->call);
                f->call = NULL;
                f->call_done = true;
                fwd_release_slot(f);
        }
        if (!f->req_ended) {
                f->req_ended = true;
                lg_http_response_abort(f->req);
        }
        fwd_maybe_free(f);
}

/* body: the caller's copy of the request body (freed here), or none
 * (data NULL) to stream the request's own. */
static void forward(struct app *a, struct rinst *ri, struct lg_http_request *req, const char *target,
                    struct lg_router_body body, uint64_t arrived, bool cold) {
        _cleanup_free_ char *body_data = body.data;
        struct fwd *f = calloc(1, sizeof(*f));
        if (!f) {
                lg_http_respond_error(req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        f->app = a;
        f->ri = ri;
        f->req = req;
        f->arrived = arrived;
        f->cold = cold;
        f->counted = true;
        f->sent = lg_now_ns();
        f->prev = a->ftail;
        if (a->ftail)
                a->ftail->next = f;
        else
                a->fhead = f;
        a->ftail = f;
        ri->active++;
        ri->refs++;
        a->active++;
        a->st.requests++;
        const struct lg_http_header *all;
        size_t n_all = lg_http_request_headers(req, &all);
        /* The caller's token or app key is for legiond, not for the function. */
        struct lg_http_header hdrs[128];
        size_t n = 0;
        for (size_t i = 0; i < n_all && n < ARRAY_SIZE(hdrs); i++)
                if (strcasecmp(all[i].name, "Authorization") != 0 && strcasecmp(all[i].name, "x-legion-key") != 0)
                        hdrs[n++] = all[i];
        int64_t len = body_data ? (int64_t) body.len : lg_http_request_content_length(req);
        lg_http_request_on_abort(req, on_req_abort, f);
        int r = lg_http_call_start(ri->up, lg_http_request_method(req), target, hdrs, n, len, &call_ops, f,
                                   &f->call);
        if (r < 0) {
                f->call_done = true;
                fwd_release_slot(f);
                fwd_end_request(f, 502, "BadGateway", "cannot reach app `%s`: %s", a->key, strerror(-r));
                fwd_maybe_free(f);
                return;
        }
        lg_http_call_set_timeout(f->call, (uint64_t) timeout_s(a) * 1000);
        if (body_data) {
                /* Without a write callback the client copies what it
                 * cannot write at once: the body can go right away. */
                if (lg_http_call_write(f->call, body_data, body.len, NULL, NULL) < 0 ||
                    lg_http_call_end(f->call) < 0)
                        on_req_abort(req, -EIO, f);
        } else if (len != 0 && lg_http_request_read(req, on_req_data, on_req_end, f) < 0)
                on_req_abort(req, -EFBIG, f);
}

/* The least busy ready instance with a free slot. */
static struct rinst *pick(struct app *a) {
        struct rinst *best = NULL;
        for (struct rinst *ri = a->instances; ri; ri = ri->next)
                if (ri->state == R_READY && ri->active < concurrency(a) && (!best || ri->active < best->active))
                        best = ri;
        return best;
}

static void pending_closed(uv_handle_t *h) {
        struct pending *p = h->data;
        free(p->body.data);
        free(p);
}

void router_pending_remove(struct pending *p) {
        struct app *a = p->app;
        if (p->prev)
                p->prev->next = p->next;
        else
                a->qhead = p->next;
        if (p->next)
                p->next->prev = p->prev;
        else
                a->qtail = p->prev;
        a->queued--;
        uv_timer_stop(&p->deadline);
        uv_close((uv_handle_t *) &p->deadline, pending_closed);
}

void router_dispatch(struct app *a) {
        while (a->qhead) {
                struct rinst *ri = pick(a);
                if (!ri)
                        break;
                struct pending *p = a->qhead;
                /* Off the queue before forward, which may dispatch again;
                 * p itself (and its target) is freed only once its timer
                 * has closed, on a later turn of the loop. */
                router_pending_remove(p);
                struct lg_router_body body = p->body;
                p->body = (struct lg_router_body){0};
                forward(a, ri, p->req, p->target, body, p->arrived, !ri->first_served);
        }
        if (a->qhead)
                router_scale_up(a);
        while (a->qhead && router_backoff_left(a) > 0 && router_live_instances(a) == 0) {
                struct lg_http_request *req = a->qhead->req;
                router_pending_remove(a->qhead);
                router_respond_backoff(a, req);
        }
        unsigned c = a->active + a->queued;
        if (c > a->peak_this_second)
                a->peak_this_second = c;
}

static void on_deadline(uv_timer_t *t) {
        struct pending *p = t->data;
        struct app *a = p->app;
        struct lg_http_request *req = p->req;
        router_pending_remove(p);
        a->st.timeouts_504++;
        a->st.errors_5xx++;
        lg_http_respond_error(req, 504, "Timeout", "no instance of `%s` could take the request within %u s",
                              a->key, timeout_s(a));
}

static void on_pending_abort(struct lg_http_request *req, int reason, void *ud) {
        struct pending *p = ud;
        (void) reason;
        router_pending_remove(p);
        lg_http_response_abort(req);
}

/* ---- requests ------------------------------------------------------------ */

void lg_router_handle(lg_router *r, struct lg_http_request *req, const char *key, const char *target) {
        lg_router_handle_body(r, req, key, target, (struct lg_router_body){0});
}

void lg_router_handle_body(lg_router *r, struct lg_http_request *req, const char *key, const char *target,
                           struct lg_router_body body) {
        _cleanup_free_ char *body_data = body.data;
        struct app *a = router_find_app(r, key);
        if (!a) {
                lg_http_respond_error(req, 404, "NotFound", "app `%s` not found", key);
                return;
        }
        uint64_t arrived = lg_now_ns();
        if (!a->qhead) {
                struct rinst *ri = pick(a);
                if (ri) {
                        forward(a, ri, req, target, (struct lg_router_body){TAKE_PTR(body_data), body.len},
                                arrived, false);
                        return;
                }
        }
        if (a->queued >= queue_max(a)) {
                a->st.rejected_429++;
                lg_http_respond_error(req, 429, "QueueFull",
                                      "app `%s`: request queue is full (%u waiting, limit %u); retry later",
                                      a->key, a->queued, queue_max(a));
                return;
        }
        size_t tl = strlen(target);
        struct pending *p = calloc(1, sizeof(*p) + tl + 1);
        if (!p) {
                lg_http_respond_error(req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        memcpy(p->target, target, tl + 1);
        p->app = a;
        p->req = req;
        p->arrived = arrived;
        p->body = (struct lg_router_body){TAKE_PTR(body_data), body.len};
        p->prev = a->qtail;
        if (a->qtail)
                a->qtail->next = p;
        else
                a->qhead = p;
        a->qtail = p;
        a->queued++;
        uv_timer_init(r->loop, &p->deadline);
        p->deadline.data = p;
        uv_timer_start(&p->deadline, on_deadline, (uint64_t) timeout_s(a) * 1000, 0);
        lg_http_request_on_abort(req, on_pending_abort, p);
        router_dispatch(a);
}
