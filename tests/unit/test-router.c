/* The router (src/router) on a real libuv loop, with a fake provider whose
 * instances are real HTTP servers (src/http) on Unix sockets. Everything
 * runs on one loop in the test's thread: a front server hands requests to
 * the router, the test's HTTP client sends them, the fake's instances
 * answer them.
 *
 * Routes of a fake instance (the body of a 200 is the instance's id):
 *   /          answers at once
 *   /hold      held until the test releases it (fake_release_all)
 *   /sleep?ms=N answers after N ms
 * A request for /<app>/<rest> reaches app "t/<app>" with target /<rest>.
 *
 * No assertion depends on how fast anything is: the test waits for states
 * (run_until); a guard timer only stops a test that would hang. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#include "router/router.h"

#define GUARD_MS 20000

/* ---- the fake provider -------------------------------------------------- */

struct fake;

struct fake_req {
        struct fake_req *next;
        struct fake_inst *inst;
        struct lg_http_request *req;
        uv_timer_t timer; /* /sleep */
        bool held;
};

struct fake_inst {
        struct fake *fk;
        struct fake_inst *next;
        uint64_t handle;
        char app[64];
        unsigned revision;
        char net_policy[64];
        char image[80], ready_path[32], argv[128]; /* argv: command then args, ' '-joined */
        unsigned port;
        uint64_t memory_bytes;
        char id[32];
        char sock[160];
        struct lg_http_server *srv;
        uv_timer_t start_timer;
        lg_router_ready_cb ready;
        lg_router_exit_cb exited;
        void *ud;
        bool live;       /* started, neither destroyed nor reported exited */
        bool is_ready, destroyed, crashed, cold, fail;
        unsigned active, max_active, served;
        struct fake_req *reqs;
};

struct fake {
        uv_loop_t *loop;
        char dir[64];
        struct fake_inst *insts;
        unsigned started, destroyed;
        unsigned start_delay_ms; /* before an instance is ready */
        unsigned placeholders;   /* ready at once (not cold), then start_delay_ms */
        unsigned cold_started;
        /* Failing starts: the next fail_starts fail (UINT_MAX: all), with
         * fail_status and fail_message, reported from the loop; or at once
         * from start (sync_fail), or as a "success" without info (no_info). */
        unsigned fail_starts;
        int fail_status;
        const char *fail_message;
        bool sync_fail, no_info;
        /* When each start came and each failure was reported (lg_now_ns). */
        uint64_t start_ns[64], fail_ns[64];
        unsigned failed;
};

static void freq_closed(uv_handle_t *h) { free(h->data); }

static void freq_end(struct fake_req *fr) {
        struct fake_inst *fi = fr->inst;
        for (struct fake_req **pp = &fi->reqs; *pp; pp = &(*pp)->next)
                if (*pp == fr) {
                        *pp = fr->next;
                        break;
                }
        fi->active--;
        uv_timer_stop(&fr->timer);
        uv_close((uv_handle_t *) &fr->timer, freq_closed);
}

static void freq_answer(struct fake_req *fr) {
        struct fake_inst *fi = fr->inst;
        struct lg_http_request *req = fr->req;
        freq_end(fr);
        lg_http_respond(req, 200, NULL, 0, fi->id, strlen(fi->id));
}

static void on_sleep_done(uv_timer_t *t) { freq_answer(t->data); }

static void on_freq_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) reason;
        freq_end(ud);
        lg_http_response_abort(req);
}

static void inst_on_request(struct lg_http_request *req, void *ud) {
        struct fake_inst *fi = ud;
        struct fake_req *fr = calloc(1, sizeof(*fr));
        assert_non_null(fr);
        fr->inst = fi;
        fr->req = req;
        uv_timer_init(fi->fk->loop, &fr->timer);
        fr->timer.data = fr;
        fr->next = fi->reqs;
        fi->reqs = fr;
        fi->served++;
        if (++fi->active > fi->max_active)
                fi->max_active = fi->active;
        lg_http_request_on_abort(req, on_freq_abort, fr);
        const char *path = lg_http_request_path(req);
        if (!strcmp(path, "/hold")) {
                fr->held = true;
        } else if (!strcmp(path, "/sleep")) {
                const char *ms = lg_http_request_param(req, "ms");
                uv_timer_start(&fr->timer, on_sleep_done, ms ? strtoull(ms, NULL, 10) : 0, 0);
        } else {
                freq_answer(fr);
        }
}

static void inst_server_closed(void *ud) {
        struct fake_inst *fi = ud;
        fi->srv = NULL;
}

/* Close its server and abort its connections, as a process that is gone. */
static void inst_close(struct fake_inst *fi) {
        if (!fi->srv)
                return;
        lg_http_server_close(fi->srv, inst_server_closed, fi);
        if (fi->srv)
                lg_http_server_close(fi->srv, inst_server_closed, fi);
}

static void on_inst_start(uv_timer_t *t) {
        struct fake_inst *fi = t->data;
        struct fake *fk = fi->fk;
        if (fi->fail || fk->no_info) {
                fi->live = false; /* the provider destroys what failed */
                if (fk->failed < ARRAY_SIZE(fk->fail_ns))
                        fk->fail_ns[fk->failed] = lg_now_ns();
                fk->failed++;
                fi->ready(fi->ud, fk->no_info ? 0 : fk->fail_status, fk->fail_message, NULL);
                return;
        }
        struct lg_http_server_config cfg = {.on_request = inst_on_request, .userdata = fi};
        struct lg_error err = {0};
        assert_int_equal(lg_http_server_new(fi->fk->loop, &cfg, &fi->srv, &err), 0);
        assert_int_equal(lg_http_server_listen_unix(fi->srv, fi->sock, &err), 0);
        char addr[200];
        snprintf(addr, sizeof(addr), "unix:%s", fi->sock);
        fi->is_ready = true;
        struct lg_router_instance_info info = {.id = fi->id, .address = addr, .start_ns = 1, .cold = fi->cold};
        fi->ready(fi->ud, 0, NULL, &info);
}

static int fake_start(void *provider, const struct lg_router_instance_spec *spec, lg_router_ready_cb ready,
                      lg_router_exit_cb exited, void *ud, uint64_t *handle, struct lg_error *err) {
        struct fake *fk = provider;
        if (fk->sync_fail)
                return lg_error_setm(err, ENETUNREACH, "%s", fk->fail_message);
        struct fake_inst *fi = calloc(1, sizeof(*fi));
        assert_non_null(fi);
        fi->fk = fk;
        if (fk->started < ARRAY_SIZE(fk->start_ns))
                fk->start_ns[fk->started] = lg_now_ns();
        fi->handle = ++fk->started;
        fi->fail = fk->fail_starts > 0;
        if (fk->fail_starts && fk->fail_starts != UINT_MAX)
                fk->fail_starts--;
        snprintf(fi->app, sizeof(fi->app), "%s", spec->app);
        fi->revision = spec->revision;
        snprintf(fi->net_policy, sizeof(fi->net_policy), "%s", spec->net_policy ? spec->net_policy : "");
        snprintf(fi->image, sizeof(fi->image), "%s", spec->image ? spec->image : "");
        snprintf(fi->ready_path, sizeof(fi->ready_path), "%s", spec->ready_path ? spec->ready_path : "");
        fi->port = spec->port;
        fi->memory_bytes = spec->memory_bytes;
        for (const char *const *v = spec->command; v && *v; v++)
                snprintf(fi->argv + strlen(fi->argv), sizeof(fi->argv) - strlen(fi->argv), "c:%s ", *v);
        for (const char *const *v = spec->args; v && *v; v++)
                snprintf(fi->argv + strlen(fi->argv), sizeof(fi->argv) - strlen(fi->argv), "a:%s ", *v);
        snprintf(fi->id, sizeof(fi->id), "i%u-r%u", fk->started, spec->revision);
        snprintf(fi->sock, sizeof(fi->sock), "%s/%s.sock", fk->dir, fi->id);
        fi->ready = ready;
        fi->exited = exited;
        fi->ud = ud;
        fi->live = true;
        uv_timer_init(fk->loop, &fi->start_timer);
        fi->start_timer.data = fi;
        fi->cold = fk->placeholders == 0;
        fk->placeholders -= !fi->cold;
        fk->cold_started += fi->cold;
        uv_timer_start(&fi->start_timer, on_inst_start, fi->cold ? fk->start_delay_ms : 0, 0);
        fi->next = fk->insts;
        fk->insts = fi;
        *handle = fi->handle;
        return 0;
}

static struct fake_inst *fake_find(struct fake *fk, uint64_t handle) {
        for (struct fake_inst *fi = fk->insts; fi; fi = fi->next)
                if (fi->handle == handle)
                        return fi;
        return NULL;
}

static void fake_destroy(void *provider, uint64_t handle) {
        struct fake_inst *fi = fake_find(provider, handle);
        assert_non_null(fi);
        /* Never twice, never after its exit was reported. */
        assert_true(fi->live);
        fi->live = false;
        fi->destroyed = true;
        fi->fk->destroyed++;
        uv_timer_stop(&fi->start_timer);
        inst_close(fi);
}

static unsigned fake_placeholders(void *provider, const char *pool) {
        (void) pool;
        return ((struct fake *) provider)->placeholders;
}

static const struct lg_router_provider_ops fake_ops = {
        .start = fake_start, .destroy = fake_destroy, .placeholders = fake_placeholders};

/* The instance's process dies: its connections go. */
static void fake_crash(struct fake_inst *fi) {
        assert_true(fi->live && fi->is_ready);
        fi->crashed = true;
        inst_close(fi);
}

/* The provider notices and reports the exit, unless the router destroyed
 * the instance first. */
static void fake_report_exit_as(struct fake_inst *fi, const char *status) {
        if (!fi->live)
                return;
        fi->live = false;
        fi->exited(fi->ud, status);
}
static void fake_report_exit(struct fake_inst *fi) { fake_report_exit_as(fi, "crashed"); }

static unsigned fake_live(struct fake *fk, const char *app) {
        unsigned n = 0;
        for (struct fake_inst *fi = fk->insts; fi; fi = fi->next)
                n += fi->live && (!app || !strcmp(fi->app, app));
        return n;
}

static unsigned fake_started(struct fake *fk, const char *app) {
        unsigned n = 0;
        for (struct fake_inst *fi = fk->insts; fi; fi = fi->next)
                n += !strcmp(fi->app, app);
        return n;
}

static unsigned fake_held(struct fake *fk) {
        unsigned n = 0;
        for (struct fake_inst *fi = fk->insts; fi; fi = fi->next)
                for (struct fake_req *fr = fi->reqs; fr; fr = fr->next)
                        n += fr->held;
        return n;
}

static void fake_release_all(struct fake *fk) {
        for (struct fake_inst *fi = fk->insts; fi; fi = fi->next)
                for (struct fake_req *fr = fi->reqs, *next; fr; fr = next) {
                        next = fr->next;
                        if (fr->held)
                                freq_answer(fr);
                }
}

static struct fake_inst *fake_by_id(struct fake *fk, const char *id) {
        for (struct fake_inst *fi = fk->insts; fi; fi = fi->next)
                if (!strcmp(fi->id, id))
                        return fi;
        return NULL;
}

/* ---- the test bench: loop, front server, router, client ----------------- */

struct call {
        struct t *t;
        int status;
        int err;
        bool done;
        char retry_after[16];
        char body[1024];
        size_t len;
};

struct t {
        uv_loop_t loop;
        struct fake fk;
        lg_router *router;
        struct lg_http_server *front;
        struct lg_http_client *client;
        struct lg_http_upstream *up;
        char front_sock[128];
        uv_timer_t guard;
        bool guard_fired;
        struct call calls[256];
        unsigned ncalls;
};

/* The router's log lines of the current test, one per line. */
static char logbuf[1 << 16];
static size_t loglen;

static void test_log(const char *key, const char *line, void *ud) {
        (void) ud;
        int n = snprintf(logbuf + loglen, sizeof(logbuf) - loglen, "[%s] %s\n", key, line);
        if (n > 0 && (size_t) n < sizeof(logbuf) - loglen)
                loglen += (size_t) n;
        if (getenv("ROUTER_TEST_LOG"))
                fprintf(stderr, "[%s] %s\n", key, line);
}

static enum lg_http_body_mode front_on_head(struct lg_http_request *req, void *ud) {
        (void) req;
        (void) ud;
        return LG_HTTP_BODY_STREAM;
}

static void front_on_request(struct lg_http_request *req, void *ud) {
        struct t *t = ud;
        const char *target = lg_http_request_target(req);
        const char *slash = strchr(target + 1, '/');
        char key[64];
        snprintf(key, sizeof(key), "t/%.*s", slash ? (int) (slash - target - 1) : 0, target + 1);
        lg_router_handle(t->router, req, key, slash ? slash : "/");
}

static void on_guard(uv_timer_t *h) {
        struct t *t = h->data;
        t->guard_fired = true;
}

/* Run the loop until pred(t, arg) holds; fail if that takes GUARD_MS. */
static void run_until_(struct t *t, bool (*pred)(struct t *, const void *), const void *arg, const char *what) {
        t->guard_fired = false;
        uv_timer_start(&t->guard, on_guard, GUARD_MS, 0);
        while (!pred(t, arg) && !t->guard_fired)
                uv_run(&t->loop, UV_RUN_ONCE);
        uv_timer_stop(&t->guard);
        if (t->guard_fired) {
                struct lg_route_stats st;
                if (lg_router_stats(t->router, "t/a", &st) == 0)
                        fprintf(stderr, "t/a: %u ready, %u starting, %u active, %u queued; %u started\n",
                                st.instances, st.starting, st.active, st.queued, t->fk.started);
                fail_msg("still waiting for: %s", what);
        }
}
#define run_until(t, pred, arg) run_until_(t, pred, arg, #pred "(" #arg ")")

static struct t *t_new_backoff(unsigned tick_ms, unsigned backoff_ms) {
        loglen = 0;
        logbuf[0] = '\0';
        struct t *t = calloc(1, sizeof(*t));
        assert_non_null(t);
        assert_int_equal(uv_loop_init(&t->loop), 0);
        t->fk.loop = &t->loop;
        snprintf(t->fk.dir, sizeof(t->fk.dir), "/tmp/lg-test-router-XXXXXX");
        assert_non_null(mkdtemp(t->fk.dir));
        struct lg_error err = {0};
        struct lg_router_config rc = {.loop = &t->loop, .provider = &fake_ops, .provider_data = &t->fk,
                                      .log = test_log, .tick_ms = tick_ms, .backoff_ms = backoff_ms};
        assert_int_equal(lg_router_new(&rc, &t->router, &err), 0);
        struct lg_http_server_config sc = {.on_head = front_on_head, .on_request = front_on_request, .userdata = t};
        assert_int_equal(lg_http_server_new(&t->loop, &sc, &t->front, &err), 0);
        snprintf(t->front_sock, sizeof(t->front_sock), "%s/front.sock", t->fk.dir);
        assert_int_equal(lg_http_server_listen_unix(t->front, t->front_sock, &err), 0);
        struct lg_http_client_config cc = {0};
        assert_int_equal(lg_http_client_new(&t->loop, &cc, &t->client, &err), 0);
        assert_int_equal(lg_http_upstream_new(t->client, t->front_sock, &t->up, &err), 0);
        uv_timer_init(&t->loop, &t->guard);
        t->guard.data = t;
        return t;
}

static struct t *t_new(unsigned tick_ms) { return t_new_backoff(tick_ms, 0); }

static void front_closed(void *ud) {
        struct t *t = ud;
        t->front = NULL;
}



static void t_free(struct t *t) {
        lg_router_free(t->router);
        lg_http_upstream_free(t->up);
        lg_http_client_close(t->client, NULL, NULL);
        lg_http_server_close(t->front, front_closed, t);
        if (t->front)
                lg_http_server_close(t->front, front_closed, t);
        for (struct fake_inst *fi = t->fk.insts; fi; fi = fi->next) {
                inst_close(fi);
                uv_close((uv_handle_t *) &fi->start_timer, NULL);
        }
        uv_close((uv_handle_t *) &t->guard, NULL);
        uv_run(&t->loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&t->loop), 0);
        for (struct fake_inst *fi = t->fk.insts, *next; fi; fi = next) {
                next = fi->next;
                assert_null(fi->reqs);
                free(fi);
        }
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", t->fk.dir);
        assert_int_equal(system(cmd), 0);
        free(t);
}

static void call_on_response(struct lg_http_call *call, void *ud) {
        struct call *c = ud;
        c->status = lg_http_call_status(call);
        const struct lg_http_header *h;
        size_t n = lg_http_call_headers(call, &h);
        for (size_t i = 0; i < n; i++)
                if (!strcasecmp(h[i].name, "Retry-After"))
                        snprintf(c->retry_after, sizeof(c->retry_after), "%s", h[i].value);
}

static void call_on_data(struct lg_http_call *call, const char *data, size_t len, void *ud) {
        struct call *c = ud;
        (void) call;
        size_t n = len < sizeof(c->body) - 1 - c->len ? len : sizeof(c->body) - 1 - c->len;
        memcpy(c->body + c->len, data, n);
        c->len += n;
        c->body[c->len] = '\0';
}

static void call_on_done(struct lg_http_call *call, int error, void *ud) {
        struct call *c = ud;
        c->err = error;
        c->status = lg_http_call_status(call);
        c->done = true;
}

static const struct lg_http_call_ops call_ops = {call_on_response, call_on_data, call_on_done};

/* GET /<app><target> through the front server; the result fills in later. */
static struct call *send_get(struct t *t, const char *app, const char *target) {
        assert_true(t->ncalls < sizeof(t->calls) / sizeof(t->calls[0]));
        struct call *c = &t->calls[t->ncalls++];
        c->t = t;
        char path[256];
        snprintf(path, sizeof(path), "/%s%s", app, target);
        struct lg_http_call *call;
        assert_int_equal(lg_http_call_start(t->up, "GET", path, NULL, 0, 0, &call_ops, c, &call), 0);
        return c;
}

static void set_app(struct t *t, const struct lg_route_config *cfg) {
        struct lg_error err = {0};
        assert_int_equal(lg_router_set(t->router, cfg, &err), 0);
}

static struct lg_route_stats stats(struct t *t, const char *key) {
        struct lg_route_stats st;
        assert_int_equal(lg_router_stats(t->router, key, &st), 0);
        return st;
}

/* ---- predicates for run_until ------------------------------------------- */

static bool is_done(struct t *t, const void *c) {
        (void) t;
        return ((const struct call *) c)->done;
}
static bool all_done(struct t *t, const void *arg) {
        (void) arg;
        for (unsigned i = 0; i < t->ncalls; i++)
                if (!t->calls[i].done)
                        return false;
        return true;
}
static bool n_held(struct t *t, const void *n) { return fake_held(&t->fk) >= *(const unsigned *) n; }
static bool n_queued(struct t *t, const void *n) {
        return stats(t, "t/a").queued >= *(const unsigned *) n;
}
static bool is_destroyed(struct t *t, const void *fi) {
        (void) t;
        return ((const struct fake_inst *) fi)->destroyed;
}
static bool none_live(struct t *t, const void *app) { return fake_live(&t->fk, app) == 0; }

static void on_run_for(uv_timer_t *h) { ((struct t *) h->data)->guard_fired = true; }

/* Let the loop run for ms (to show that something does NOT happen). */
static void run_for(struct t *t, uint64_t ms) {
        t->guard_fired = false;
        uv_timer_start(&t->guard, on_run_for, ms, 0);
        while (!t->guard_fired)
                uv_run(&t->loop, UV_RUN_ONCE);
}

/* Release held requests until every call is answered. */
static void release_until_all_done(struct t *t) {
        static const unsigned one = 1;
        while (!all_done(t, NULL)) {
                fake_release_all(&t->fk);
                t->guard_fired = false;
                uv_timer_start(&t->guard, on_guard, GUARD_MS, 0);
                while (!all_done(t, NULL) && !n_held(t, &one) && !t->guard_fired)
                        uv_run(&t->loop, UV_RUN_ONCE);
                uv_timer_stop(&t->guard);
                if (t->guard_fired)
                        fail_msg("calls still not answered");
        }
}

static struct lg_route_config app_cfg(const char *key, unsigned revision) {
        return (struct lg_route_config){.key = key, .revision = revision, .pool = "p", .idle_timeout_s = 300};
}

/* ---- tests -------------------------------------------------------------- */

/* An instance never has more requests than its concurrency; the rest wait
 * in the queue and go as slots free up. */
static void test_concurrency_limit(void **state) {
        (void) state;
        struct t *t = t_new(0);
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.concurrency = 2;
        cfg.max_instances = 1;
        set_app(t, &cfg);
        for (int i = 0; i < 6; i++)
                send_get(t, "a", "/hold");
        unsigned two = 2, four = 4;
        run_until(t, n_held, &two);
        run_until(t, n_queued, &four);
        assert_int_equal(stats(t, "t/a").active, 2);
        release_until_all_done(t);
        assert_int_equal(t->fk.started, 1);
        assert_int_equal(t->fk.insts->served, 6);
        assert_int_equal(t->fk.insts->max_active, 2);
        for (unsigned i = 0; i < t->ncalls; i++) {
                assert_int_equal(t->calls[i].status, 200);
                assert_string_equal(t->calls[i].body, t->fk.insts->id);
        }
        t_free(t);
}

/* A full queue answers 429 naming its limit; the rest are served. */
static void test_queue_full(void **state) {
        (void) state;
        struct t *t = t_new(0);
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.max_instances = 1;
        cfg.queue_max = 2;
        set_app(t, &cfg);
        send_get(t, "a", "/hold");
        unsigned one = 1, two = 2;
        run_until(t, n_held, &one);
        send_get(t, "a", "/");
        send_get(t, "a", "/");
        run_until(t, n_queued, &two);
        struct call *over = send_get(t, "a", "/");
        run_until(t, is_done, over);
        assert_int_equal(over->status, 429);
        assert_non_null(strstr(over->body, "QueueFull"));
        assert_non_null(strstr(over->body, "limit 2"));
        release_until_all_done(t);
        for (unsigned i = 0; i < 3; i++)
                assert_int_equal(t->calls[i].status, 200);
        assert_int_equal(stats(t, "t/a").rejected_429, 1);
        t_free(t);
}

/* A request that waits in the queue past the app's deadline gets 504:
 * here its instance never gets ready. So does one that its instance does
 * not answer in time. */
static void test_deadline(void **state) {
        (void) state;
        struct t *t = t_new(0);
        t->fk.start_delay_ms = 10 * GUARD_MS;
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.max_instances = 1;
        cfg.timeout_s = 1;
        set_app(t, &cfg);
        struct call *queued = send_get(t, "a", "/");
        run_until(t, is_done, queued);
        assert_int_equal(queued->status, 504);
        assert_non_null(strstr(queued->body, "\"Timeout\""));
        assert_non_null(strstr(queued->body, "within 1 s"));
        assert_int_equal(stats(t, "t/a").timeouts_504, 1);
        assert_int_equal(stats(t, "t/a").queued, 0);
        t_free(t);

        t = t_new(0);
        set_app(t, &cfg);
        struct call *held = send_get(t, "a", "/hold");
        run_until(t, is_done, held);
        assert_int_equal(held->status, 504);
        assert_non_null(strstr(held->body, "did not answer in time"));
        assert_int_equal(stats(t, "t/a").timeouts_504, 1);
        t_free(t);
}

/* An instance that dies mid-request: that request gets 502, the instance
 * is not used again, and what waits gets a replacement. Both orders of
 * what the router learns first: the exit, or the connection failing and
 * then no exit report at all (the provider is silent: the router waits
 * for one a while, then destroys it). */
static void test_crash(void **state) {
        (void) state;
        for (int exit_first = 0; exit_first <= 1; exit_first++) {
                struct t *t = t_new(0);
                struct lg_route_config cfg = app_cfg("t/a", 1);
                cfg.max_instances = 1;
                set_app(t, &cfg);
                struct call *victim = send_get(t, "a", "/hold");
                unsigned one = 1;
                run_until(t, n_held, &one);
                struct call *waiting = send_get(t, "a", "/");
                run_until(t, n_queued, &one);
                struct fake_inst *first = t->fk.insts;
                fake_crash(first);
                if (exit_first)
                        fake_report_exit(first);
                else
                        run_until(t, is_done, victim);
                run_until(t, all_done, NULL);
                fake_report_exit(first);
                assert_int_equal(victim->status, 502);
                assert_non_null(strstr(victim->body, "BadGateway"));
                assert_int_equal(waiting->status, 200);
                assert_int_equal(t->fk.started, 2);
                assert_string_not_equal(waiting->body, first->id);
                assert_true(fake_by_id(&t->fk, waiting->body)->live);
                /* Gone on its own, or destroyed by the router when no exit
                 * came; not both. */
                assert_int_equal(first->destroyed, !exit_first);
                if (!exit_first)
                        assert_non_null(strstr(logbuf, "(no exit reported within"));
                /* The replacement takes what comes next. */
                struct call *next = send_get(t, "a", "/");
                run_until(t, is_done, next);
                assert_string_equal(next->body, waiting->body);
                t_free(t);
        }
}

/* An idle instance that dies is not given the next request. */
static void test_crash_idle(void **state) {
        (void) state;
        struct t *t = t_new(0);
        struct lg_route_config cfg = app_cfg("t/a", 1);
        set_app(t, &cfg);
        struct call *c = send_get(t, "a", "/");
        run_until(t, is_done, c);
        struct fake_inst *first = t->fk.insts;
        fake_crash(first);
        fake_report_exit(first);
        struct call *next = send_get(t, "a", "/");
        run_until(t, is_done, next);
        assert_int_equal(next->status, 200);
        assert_string_not_equal(next->body, first->id);
        assert_int_equal(t->fk.started, 2);
        assert_false(first->destroyed);
        t_free(t);
}

/* A new revision: the old instance finishes its request, takes no new one,
 * and is destroyed; new requests go to an instance of the new revision. */
static void test_drain_new_revision(void **state) {
        (void) state;
        struct t *t = t_new(0);
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.concurrency = 2;
        cfg.max_instances = 2;
        set_app(t, &cfg);
        struct call *warm = send_get(t, "a", "/");
        run_until(t, is_done, warm);
        struct fake_inst *old = fake_by_id(&t->fk, warm->body);
        assert_non_null(old);
        struct call *inflight = send_get(t, "a", "/hold");
        unsigned one = 1;
        run_until(t, n_held, &one);
        assert_int_equal(old->active, 1);

        cfg.revision = 2;
        set_app(t, &cfg);
        /* old has a free slot, but belongs to the old revision. */
        struct call *after = send_get(t, "a", "/");
        run_until(t, is_done, after);
        assert_int_equal(after->status, 200);
        struct fake_inst *fresh = fake_by_id(&t->fk, after->body);
        assert_non_null(fresh);
        assert_ptr_not_equal(fresh, old);
        assert_int_equal(fresh->revision, 2);
        assert_false(old->destroyed); /* still has a request */
        assert_int_equal(stats(t, "t/a").draining, 1);

        fake_release_all(&t->fk);
        run_until(t, is_done, inflight);
        assert_int_equal(inflight->status, 200);
        assert_string_equal(inflight->body, old->id);
        run_until(t, is_destroyed, old);
        assert_int_equal(old->served, 2);
        struct call *later = send_get(t, "a", "/");
        run_until(t, is_done, later);
        assert_string_equal(later->body, fresh->id);
        assert_int_equal(stats(t, "t/a").draining, 0);
        t_free(t);
}

/* An app that gets an egress policy of its own (another policy name, same
 * revision): its instances were assigned the namespace's at their start,
 * so new ones replace them; the same name again changes nothing. */
static void test_drain_new_policy(void **state) {
        (void) state;
        struct t *t = t_new(0);
        struct lg_route_config cfg = app_cfg("t/a", 1);
        set_app(t, &cfg);
        struct call *first = send_get(t, "a", "/");
        run_until(t, is_done, first);
        struct fake_inst *old = fake_by_id(&t->fk, first->body);
        assert_non_null(old);
        assert_string_equal(old->net_policy, "");
        set_app(t, &cfg); /* the same: kept */
        cfg.net_policy = "t/app/a";
        set_app(t, &cfg);
        run_until(t, is_destroyed, old);
        struct call *after = send_get(t, "a", "/");
        run_until(t, is_done, after);
        struct fake_inst *fresh = fake_by_id(&t->fk, after->body);
        assert_non_null(fresh);
        assert_ptr_not_equal(fresh, old);
        assert_string_equal(fresh->net_policy, "t/app/a");
        set_app(t, &cfg);
        struct call *again = send_get(t, "a", "/");
        run_until(t, is_done, again);
        assert_string_equal(again->body, fresh->id);
        assert_false(fresh->destroyed);
        t_free(t);
}

/* An image app's fields reach the provider, copied at set: the caller's
 * strings may change or go afterwards. */
static void test_image_fields(void **state) {
        (void) state;
        struct t *t = t_new(0);
        char image[] = "sha256:0123", path[] = "/healthz", c0[] = "python3", a0[] = "-m", a1[] = "http.server";
        const char *command[] = {c0, NULL}, *args[] = {a0, a1, NULL};
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.image = image;
        cfg.command = command;
        cfg.args = args;
        cfg.port = 8080;
        cfg.ready_path = path;
        cfg.memory_bytes = 128 << 20;
        set_app(t, &cfg);
        memset(image, 'x', sizeof(image) - 1);
        memset(path, 'x', sizeof(path) - 1);
        c0[0] = a0[0] = a1[0] = 'x';
        command[0] = args[0] = NULL;
        struct call *c = send_get(t, "a", "/");
        run_until(t, is_done, c);
        assert_int_equal(c->status, 200);
        struct fake_inst *fi = t->fk.insts;
        assert_string_equal(fi->image, "sha256:0123");
        assert_string_equal(fi->ready_path, "/healthz");
        assert_string_equal(fi->argv, "c:python3 a:-m a:http.server ");
        assert_int_equal(fi->port, 8080);
        assert_int_equal(fi->memory_bytes, 128 << 20);
        /* A language-worker app: none of them. */
        struct lg_route_config plain = app_cfg("t/b", 1);
        set_app(t, &plain);
        struct call *b = send_get(t, "b", "/");
        run_until(t, is_done, b);
        fi = t->fk.insts;
        assert_string_equal(fi->app, "t/b");
        assert_string_equal(fi->image, "");
        assert_string_equal(fi->argv, "");
        assert_int_equal(fi->port, 0);
        t_free(t);
}

/* A queue the instances cannot take starts more, up to maxInstances. */
static void test_scale_up_under_queue(void **state) {
        (void) state;
        struct t *t = t_new(0);
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.max_instances = 3;
        set_app(t, &cfg);
        for (int i = 0; i < 5; i++)
                send_get(t, "a", "/hold");
        unsigned three = 3;
        run_until(t, n_held, &three);
        assert_int_equal(t->fk.started, 3);
        assert_int_equal(fake_live(&t->fk, "t/a"), 3);
        release_until_all_done(t);
        for (unsigned i = 0; i < t->ncalls; i++)
                assert_int_equal(t->calls[i].status, 200);
        assert_int_equal(t->fk.started, 3);
        for (struct fake_inst *fi = t->fk.insts; fi; fi = fi->next)
                assert_int_equal(fi->max_active, 1);
        t_free(t);
}

/* Idle instances go after the idle timeout, down to zero, but never below
 * minInstances. */
static void test_scale_to_zero(void **state) {
        (void) state;
        struct t *t = t_new(5);
        struct lg_route_config zero = app_cfg("t/z", 1);
        zero.idle_timeout_ms = 30;
        set_app(t, &zero);
        struct lg_route_config keep = app_cfg("t/m", 1);
        keep.idle_timeout_ms = 30;
        keep.min_instances = 1;
        set_app(t, &keep);
        struct call *m = send_get(t, "m", "/");
        struct call *z = send_get(t, "z", "/");
        run_until(t, all_done, NULL);
        assert_int_equal(z->status, 200);
        assert_int_equal(m->status, 200);
        run_until(t, none_live, "t/z");
        assert_int_equal(fake_started(&t->fk, "t/z"), 1);
        assert_int_equal(stats(t, "t/z").instances, 0);
        /* Both were idle for as long; the kept one stays, the same one,
         * however many more idle timeouts pass. */
        run_for(t, 4 * 30);
        assert_int_equal(fake_live(&t->fk, "t/m"), 1);
        assert_int_equal(fake_started(&t->fk, "t/m"), 1);
        /* And a request after zero starts one again. */
        struct call *again = send_get(t, "z", "/");
        run_until(t, is_done, again);
        assert_int_equal(again->status, 200);
        assert_int_equal(fake_started(&t->fk, "t/z"), 2);
        t_free(t);
}

/* How many different instances answered. */
static unsigned answered_by(struct t *t) {
        unsigned n = 0;
        for (unsigned i = 0; i < t->ncalls; i++) {
                bool seen = false;
                for (unsigned j = 0; j < i && !seen; j++)
                        seen = !strcmp(t->calls[j].body, t->calls[i].body);
                n += !seen;
        }
        return n;
}

/* A burst of quick requests at an app whose instances take long (1 s) to
 * start: the first instance answers the whole burst long before a second
 * one could be ready, so (nearly) none is started; the router once started
 * 4 at a time, up to maxInstances, all ready after the burst was over.
 * (A machine so loaded that 30 requests take as long as a start might
 * start one more.) */
static void test_burst_no_overshoot(void **state) {
        (void) state;
        struct t *t = t_new(0);
        t->fk.start_delay_ms = 1000;
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.max_instances = 100;
        set_app(t, &cfg);
        for (int i = 0; i < 30; i++)
                send_get(t, "a", "/");
        run_until(t, all_done, NULL);
        for (unsigned i = 0; i < t->ncalls; i++)
                assert_int_equal(t->calls[i].status, 200);
        assert_true(t->fk.started <= 2);
        assert_int_equal(stats(t, "t/a").starting, 0);
        t_free(t);

        /* With placeholders: those may be taken, but no instance that
         * would be made without one (as slow as above). */
        t = t_new(0);
        t->fk.start_delay_ms = 1000;
        t->fk.placeholders = 2;
        set_app(t, &cfg);
        for (int i = 0; i < 20; i++)
                send_get(t, "a", "/");
        run_until(t, all_done, NULL);
        for (unsigned i = 0; i < t->ncalls; i++)
                assert_int_equal(t->calls[i].status, 200);
        assert_int_equal(t->fk.cold_started, 0);
        assert_int_equal(answered_by(t), t->fk.started);
        t_free(t);
}

/* Slow requests: waiting for a slot is longer than waiting for a new
 * instance, so the queue does start more, past one batch of starts. */
static void test_slow_requests_scale_out(void **state) {
        (void) state;
        struct t *t = t_new(0);
        t->fk.start_delay_ms = 20;
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.max_instances = 10;
        set_app(t, &cfg);
        for (int i = 0; i < 10; i++)
                send_get(t, "a", "/sleep?ms=300");
        run_until(t, all_done, NULL);
        for (unsigned i = 0; i < t->ncalls; i++)
                assert_int_equal(t->calls[i].status, 200);
        assert_true(t->fk.started >= 5);
        assert_true(answered_by(t) >= 5);
        t_free(t);
}


/* ---- failed starts and crash loops -------------------------------------- */

static bool n_failures(struct t *t, const void *n) {
        return stats(t, "t/a").failures >= *(const unsigned *) n;
}
static bool n_started(struct t *t, const void *n) { return t->fk.started >= *(const unsigned *) n; }

/* A bench whose provider fails its next n starts (UINT_MAX: all) with
 * status and message. */
static struct t *t_failing(unsigned tick_ms, unsigned backoff_ms, unsigned n, int status, const char *message) {
        struct t *t = t_new_backoff(tick_ms, backoff_ms);
        t->fk.fail_starts = n;
        t->fk.fail_status = status;
        t->fk.fail_message = message;
        return t;
}

/* GET /a/ and wait for its answer. */
static struct call *get_a(struct t *t) {
        struct call *c = send_get(t, "a", "/");
        run_until(t, is_done, c);
        return c;
}

/* A start that fails answers 502 naming the reason, and the next request
 * starts another at once; after the second failure in a row the app backs
 * off: 503 CrashLoopBackOff with Retry-After and what failed, no start. */
static void test_failed_start_502_then_503(void **state) {
        (void) state;
        struct t *t = t_failing(0, 60000, UINT_MAX, -ETIMEDOUT, "port 8080 never opened within 60 s");
        struct lg_route_config cfg = app_cfg("t/a", 1);
        set_app(t, &cfg);
        struct call *c = get_a(t);
        assert_int_equal(c->status, 502);
        assert_non_null(strstr(c->body, "InstanceFailed"));
        assert_non_null(strstr(c->body, "failed to start: PortNeverOpened: port 8080 never opened within 60 s"));
        struct lg_route_stats st = stats(t, "t/a");
        assert_int_equal(st.failures, 1);
        assert_int_equal(st.backoff_ms_left, 0);
        assert_string_equal(st.last_reason, "PortNeverOpened");
        assert_string_equal(st.last_message, "port 8080 never opened within 60 s");
        assert_true(st.last_failure_unix_ms > 1700000000000);

        c = get_a(t); /* at once: a second start */
        assert_int_equal(c->status, 502);
        assert_int_equal(t->fk.started, 2);
        st = stats(t, "t/a");
        assert_int_equal(st.failures, 2);
        assert_true(st.backoff_ms_left > 0 && st.backoff_ms_left <= 60000);

        for (int i = 0; i < 3; i++) {
                c = get_a(t);
                assert_int_equal(c->status, 503);
                assert_non_null(strstr(c->body, "\"CrashLoopBackOff\""));
                assert_non_null(strstr(c->body, "app `t/a` is in CrashLoopBackOff: 2 failures in a row, the last "
                                                "PortNeverOpened: port 8080 never opened within 60 s; the next "
                                                "start in "));
                unsigned long secs = strtoul(c->retry_after, NULL, 10);
                assert_true(secs >= 1 && secs <= 60);
        }
        assert_int_equal(t->fk.started, 2);
        assert_int_equal(stats(t, "t/a").errors_5xx, 5);
        assert_non_null(strstr(logbuf, "an instance failed to start: PortNeverOpened: port 8080 never opened"));
        assert_non_null(strstr(logbuf, "CrashLoopBackOff: 2 failures in a row (the last PortNeverOpened); "
                                       "no instance starts for 60.0 s"));
        t_free(t);
}

/* Each status names its reason. */
static void test_failure_reasons(void **state) {
        (void) state;
        static const struct {
                int status;
                const char *reason;
        } cases[] = {{-ETIMEDOUT, "PortNeverOpened"}, {-EPROTO, "ReadinessFailed"}, {-ECHILD, "ExitedAtStart"},
                     {-ENOENT, "ImageMissing"},       {-ENETUNREACH, "StartFailed"}, {-EIO, "StartFailed"}};
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                struct t *t = t_new(0);
                t->fk.fail_starts = 1;
                t->fk.fail_status = cases[i].status;
                t->fk.fail_message = "why";
                struct lg_route_config cfg = app_cfg("t/a", 1);
                set_app(t, &cfg);
                struct call *c = get_a(t);
                assert_int_equal(c->status, 502);
                assert_string_equal(stats(t, "t/a").last_reason, cases[i].reason);
                char want[64];
                snprintf(want, sizeof(want), "failed to start: %s: why", cases[i].reason);
                assert_non_null(strstr(c->body, want));
                t_free(t);
        }
}

/* The wait doubles from the second failure on, up to 32 times the base:
 * minInstances keeps trying, and no start comes before its wait is over
 * (times taken on the loop: a later start is fine, an earlier one not). */
static void test_backoff_doubles(void **state) {
        (void) state;
        const unsigned base = 10, n = 9;
        struct t *t = t_failing(2, base, UINT_MAX, -EPROTO, "GET /healthz answered 500 within 60 s");
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.min_instances = 1;
        set_app(t, &cfg);
        run_until(t, n_failures, &n);
        const char *p = logbuf;
        for (unsigned k = 1; k < n; k++) {
                /* after failure k (1-based), start k+1 waits delay(k) */
                uint64_t delay = k < 2 ? 0 : (uint64_t) base << (k - 2 < 5 ? k - 2 : 5);
                uint64_t waited = t->fk.start_ns[k] - t->fk.fail_ns[k - 1];
                assert_true(waited + 1000000 >= delay * 1000000); /* ms clock: 1 ms of rounding */
                char line[128];
                if (k == 1)
                        snprintf(line, sizeof(line), "1 failure in a row (ReadinessFailed); the next instance "
                                                     "may start at once");
                else
                        snprintf(line, sizeof(line), "CrashLoopBackOff: %u failures in a row (the last "
                                 "ReadinessFailed); no instance starts for %llu ms", k, (unsigned long long) delay);
                p = strstr(p, line);
                if (!p)
                        fail_msg("no `%s` in the log (in order):\n%s", line, logbuf);
        }
        /* capped: 32 x base from the 7th failure on */
        assert_non_null(strstr(logbuf, "8 failures in a row (the last ReadinessFailed); no instance starts for 320 ms"));
        t_free(t);
}

/* An instance that serves ends the streak; the reason stays to be seen.
 * The next failure is then the first again: no wait. */
static void test_success_resets(void **state) {
        (void) state;
        struct t *t = t_failing(0, 5, 3, -ECHILD, "exited with code 3 before port 8080 opened: boom");
        struct lg_route_config cfg = app_cfg("t/a", 1);
        set_app(t, &cfg);
        struct call *c;
        unsigned tries = 0;
        do {
                struct lg_route_stats st = stats(t, "t/a");
                if (st.backoff_ms_left)
                        run_for(t, st.backoff_ms_left + 1);
                c = get_a(t);
                assert_true(++tries < 100);
        } while (c->status != 200);
        assert_int_equal(t->fk.started, 4);
        struct lg_route_stats st = stats(t, "t/a");
        assert_int_equal(st.failures, 0);
        assert_int_equal(st.backoff_ms_left, 0);
        assert_string_equal(st.last_reason, "ExitedAtStart");
        assert_non_null(strstr(logbuf, "answered a request: the 3 failures in a row before it are forgiven"));
        /* It crashes now: a first failure again, and the next request
         * starts one at once. */
        struct fake_inst *fi = fake_by_id(&t->fk, c->body);
        fake_crash(fi);
        fake_report_exit(fi);
        st = stats(t, "t/a");
        assert_int_equal(st.failures, 1);
        assert_int_equal(st.backoff_ms_left, 0);
        assert_string_equal(st.last_reason, "Crashed");
        c = get_a(t);
        assert_int_equal(c->status, 200);
        assert_int_equal(t->fk.started, 5);
        t_free(t);
}

/* A new revision starts clean: its first request starts an instance at
 * once, and its stats show no failure of the old one. */
static void test_new_revision_resets(void **state) {
        (void) state;
        struct t *t = t_failing(0, 60000, 2, -ENOENT, "image sha256:ab not in the store");
        struct lg_route_config cfg = app_cfg("t/a", 1);
        set_app(t, &cfg);
        assert_int_equal(get_a(t)->status, 502);
        assert_int_equal(get_a(t)->status, 502);
        assert_int_equal(get_a(t)->status, 503);
        assert_true(stats(t, "t/a").backoff_ms_left > 0);
        set_app(t, &cfg); /* the same revision: still backing off */
        assert_int_equal(get_a(t)->status, 503);
        cfg.revision = 2;
        set_app(t, &cfg);
        struct lg_route_stats st = stats(t, "t/a");
        assert_int_equal(st.failures, 0);
        assert_int_equal(st.backoff_ms_left, 0);
        assert_string_equal(st.last_reason, "");
        assert_string_equal(st.last_message, "");
        assert_int_equal(st.last_failure_unix_ms, 0);
        struct call *c = get_a(t);
        assert_int_equal(c->status, 200);
        assert_int_equal(t->fk.started, 3);
        t_free(t);
}

/* minInstances does not start instances while the app backs off: the
 * tick runs every 2 ms, the wait is a minute. */
static void test_min_instances_wait(void **state) {
        (void) state;
        struct t *t = t_failing(2, 60000, UINT_MAX, -ETIMEDOUT, "port 8080 never opened within 60 s");
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.min_instances = 2;
        set_app(t, &cfg);
        unsigned two = 2;
        run_until(t, n_failures, &two);
        unsigned started = t->fk.started;
        assert_true(started >= 2 && started <= 3); /* both minInstances may have been on their way */
        run_for(t, 100);
        assert_int_equal(t->fk.started, started);
        assert_true(stats(t, "t/a").backoff_ms_left > 0);
        t_free(t);
}

/* An instance that exits on its own soon after it was ready is a failure
 * (Crashed): two in a row back off, and what is queued when the second
 * goes gets 503, as what comes after. An instance that had answered was
 * already forgiven; one that is busy but never answered was not. */
static void test_early_exit_counts(void **state) {
        (void) state;
        struct t *t = t_new_backoff(2, 60000);
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.min_instances = 1;
        cfg.max_instances = 1;
        set_app(t, &cfg);
        unsigned one = 1, two = 2;
        run_until(t, n_started, &one);
        struct fake_inst *first = t->fk.insts;
        while (!first->is_ready)
                uv_run(&t->loop, UV_RUN_ONCE);
        fake_crash(first);
        fake_report_exit(first);
        struct lg_route_stats st = stats(t, "t/a");
        assert_int_equal(st.failures, 1);
        assert_string_equal(st.last_reason, "Crashed");
        char want[128];
        snprintf(want, sizeof(want), "instance %s exited ", first->id);
        assert_non_null(strstr(st.last_message, want));
        assert_non_null(strstr(st.last_message, "after it was ready: crashed"));
        assert_int_equal(st.backoff_ms_left, 0);
        /* minInstances brings a second one at once; it takes a request
         * that it holds (no answer yet), and another waits for it. */
        run_until(t, n_started, &two);
        struct call *held = send_get(t, "a", "/hold");
        run_until(t, n_held, &one);
        struct call *queued = send_get(t, "a", "/");
        run_until(t, n_queued, &one);
        struct fake_inst *second = t->fk.insts;
        assert_ptr_not_equal(second, first);
        run_for(t, 20); /* ticks: being up a few ms forgives nothing */
        assert_int_equal(stats(t, "t/a").failures, 1);
        fake_crash(second);
        fake_report_exit(second);
        run_until(t, all_done, NULL);
        assert_int_equal(held->status, 502);
        assert_int_equal(queued->status, 503);
        assert_non_null(strstr(queued->body, "2 failures in a row, the last Crashed: instance"));
        assert_true(queued->retry_after[0]);
        assert_int_equal(get_a(t)->status, 503);
        run_for(t, 20);
        assert_int_equal(t->fk.started, 2);
        t_free(t);
}

/* What a provider may hand over that it should not: a failure from start
 * itself, a message with control bytes, bytes that are not UTF-8 and far
 * too long, no message, a "success" without info, an exit without a
 * status. Each counts once and comes out as one printable line. */
static void test_odd_failures(void **state) {
        (void) state;
        struct t *t = t_new_backoff(0, 60000);
        t->fk.sync_fail = true;
        t->fk.fail_message = "container apps need the node network (legiond --network on)";
        struct lg_route_config cfg = app_cfg("t/a", 1);
        set_app(t, &cfg);
        struct call *c = get_a(t);
        assert_int_equal(c->status, 502);
        assert_non_null(strstr(c->body, "failed to start: StartFailed: container apps need the node network"));
        assert_int_equal(stats(t, "t/a").failures, 1);
        assert_int_equal(t->fk.started, 0);
        t_free(t);

        char hostile[2000];
        memset(hostile, 'x', sizeof(hostile) - 1);
        hostile[sizeof(hostile) - 1] = '\0';
        static const char head[] = "line1\nline2\r\"q\"\\ \x01\xff\xfe`b`";
        memcpy(hostile, head, sizeof(head) - 1);
        t = t_failing(0, 60000, UINT_MAX, -EPROTO, hostile);
        set_app(t, &cfg);
        c = get_a(t);
        assert_int_equal(c->status, 502);
        struct lg_route_stats st = stats(t, "t/a");
        assert_true(strlen(st.last_message) < sizeof(st.last_message));
        /* Control bytes and bytes that are not UTF-8 go; backquotes,
         * which the messages put around names, stay. */
        assert_non_null(strstr(st.last_message, "line1?line2?\"q\"\\ ???`b`"));
        assert_null(strchr(st.last_message, '\n'));
        assert_null(strchr(c->body, '\n'));
        assert_true(strlen(st.last_message) > 200);
        assert_non_null(strstr(st.last_message, "...")); /* cut, and says so */
        t->fk.fail_message = NULL;
        c = get_a(t);
        assert_int_equal(c->status, 502);
        assert_non_null(strstr(c->body, "failed to start: ReadinessFailed: error"));
        c = get_a(t);
        assert_int_equal(c->status, 503);
        assert_non_null(strstr(c->body, "the last ReadinessFailed: error; the next start in "));
        t_free(t);

        t = t_new(0);
        t->fk.no_info = true;
        set_app(t, &cfg);
        c = get_a(t);
        assert_int_equal(c->status, 502);
        assert_string_equal(stats(t, "t/a").last_reason, "StartFailed");
        t->fk.no_info = false;
        c = get_a(t);
        assert_int_equal(c->status, 200);
        struct fake_inst *fi = fake_by_id(&t->fk, c->body);
        fake_crash(fi);
        fi->live = false;
        fi->exited(fi->ud, NULL);
        assert_non_null(strstr(stats(t, "t/a").last_message, "after it was ready: exited"));
        t_free(t);
}

/* An instance of an old revision that fails or exits early counts for
 * nothing: the current revision has its own record. */
static void test_old_revision_failures_ignored(void **state) {
        (void) state;
        struct t *t = t_new(0);
        t->fk.start_delay_ms = 50;
        t->fk.fail_starts = 1;
        t->fk.fail_status = -ETIMEDOUT;
        struct lg_route_config cfg = app_cfg("t/a", 1);
        set_app(t, &cfg);
        struct call *c = send_get(t, "a", "/"); /* starts one of revision 1, which will fail */
        unsigned one = 1;
        run_until(t, n_started, &one);
        cfg.revision = 2;
        set_app(t, &cfg); /* the request waits for one of revision 2 */
        run_until(t, is_done, c);
        assert_int_equal(c->status, 200);
        assert_int_equal(t->fk.failed, 1);
        assert_int_equal(stats(t, "t/a").failures, 0);
        assert_non_null(strstr(logbuf, "an instance of an older revision failed to start"));

        /* A busy instance of revision 2 drains when revision 3 comes, and
         * crashes then. */
        struct call *held = send_get(t, "a", "/hold");
        run_until(t, n_held, &one);
        struct fake_inst *old = fake_by_id(&t->fk, c->body);
        cfg.revision = 3;
        set_app(t, &cfg);
        fake_crash(old);
        fake_report_exit(old);
        run_until(t, is_done, held);
        assert_int_equal(stats(t, "t/a").failures, 0);
        t_free(t);
}


static bool n_going(struct t *t, const void *n) { return stats(t, "t/a").draining >= *(const unsigned *) n; }

/* An instance crashes right after it was ready: the router sees its
 * connection fail first, and the exit report (with its last stderr line)
 * comes just after. The request it broke gets a 502 saying why, and so
 * does the app's log; the instance is not destroyed (it is gone), and the
 * crash counts for the crash loop: a second one in a row backs off, and
 * the 503 says why too. */
static void test_crash_reason_after_connection(void **state) {
        (void) state;
        static const char why[] = "Exited(4): pyweb: exiting on request";
        struct t *t = t_new_backoff(0, 60000);
        struct lg_route_config cfg = app_cfg("t/a", 1);
        cfg.max_instances = 1;
        set_app(t, &cfg);
        struct call *victim = send_get(t, "a", "/hold");
        unsigned one = 1, two = 2;
        run_until(t, n_held, &one);
        struct call *waiting = send_get(t, "a", "/");
        run_until(t, n_queued, &one);
        struct fake_inst *first = t->fk.insts;
        fake_crash(first);
        /* The router saw the connection fail: the broken instance no
         * longer counts and a replacement starts for what waits. */
        run_until(t, n_started, &two);
        assert_false(victim->done); /* its 502 waits for the exit report */
        fake_report_exit_as(first, why);
        run_until(t, all_done, NULL);
        assert_int_equal(victim->status, 502);
        char want[160];
        snprintf(want, sizeof(want), "app `t/a` failed: instance %s exited: %s", first->id, why);
        if (!strstr(victim->body, want))
                fail_msg("no `%s` in the 502: %s", want, victim->body);
        assert_int_equal(waiting->status, 200);
        assert_false(first->destroyed);
        snprintf(want, sizeof(want), "instance %s exited: %s", first->id, why);
        assert_non_null(strstr(logbuf, want));
        struct lg_route_stats st = stats(t, "t/a");
        assert_int_equal(st.failures, 0); /* the replacement answered: forgiven */
        assert_string_equal(st.last_reason, "Crashed");
        assert_non_null(strstr(st.last_message, why));

        /* Two instances in a row that break on their first request: the
         * second failure backs off. */
        struct fake_inst *second = fake_by_id(&t->fk, waiting->body);
        assert_non_null(second);
        fake_crash(second);
        fake_report_exit_as(second, "Exited(1)");
        assert_int_equal(stats(t, "t/a").failures, 1);
        victim = send_get(t, "a", "/hold");
        run_until(t, n_held, &one);
        struct fake_inst *third = t->fk.insts;
        assert_ptr_not_equal(third, second);
        fake_crash(third);
        run_until(t, n_going, &one);
        fake_report_exit_as(third, why);
        run_until(t, is_done, victim);
        assert_int_equal(victim->status, 502);
        assert_non_null(strstr(victim->body, why));
        st = stats(t, "t/a");
        assert_int_equal(st.failures, 2);
        assert_true(st.backoff_ms_left > 0);
        struct call *c = get_a(t);
        assert_int_equal(c->status, 503);
        assert_non_null(strstr(c->body, "2 failures in a row, the last Crashed: instance"));
        assert_non_null(strstr(c->body, why));
        assert_int_equal(t->fk.started, 3);
        assert_int_equal(t->fk.destroyed, 0);
        t_free(t);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_concurrency_limit),
                cmocka_unit_test(test_queue_full),
                cmocka_unit_test(test_deadline),
                cmocka_unit_test(test_crash),
                cmocka_unit_test(test_crash_idle),
                cmocka_unit_test(test_drain_new_revision),
                cmocka_unit_test(test_drain_new_policy),
                cmocka_unit_test(test_image_fields),
                cmocka_unit_test(test_scale_up_under_queue),
                cmocka_unit_test(test_scale_to_zero),
                cmocka_unit_test(test_burst_no_overshoot),
                cmocka_unit_test(test_slow_requests_scale_out),
                cmocka_unit_test(test_failed_start_502_then_503),
                cmocka_unit_test(test_failure_reasons),
                cmocka_unit_test(test_backoff_doubles),
                cmocka_unit_test(test_success_resets),
                cmocka_unit_test(test_new_revision_resets),
                cmocka_unit_test(test_min_instances_wait),
                cmocka_unit_test(test_early_exit_counts),
                cmocka_unit_test(test_odd_failures),
                cmocka_unit_test(test_old_revision_failures_ignored),
                cmocka_unit_test(test_crash_reason_after_connection),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
