/* The router (router.h): per-app instances, concurrency slots, the request
 * queue, forwarding with streaming in both directions, and scaling.
 *
 * Lifetimes: an app owns its instances (struct rinst) and its queue. A
 * forwarded request (struct fwd) references its instance; an instance is
 * freed only once no forward references it. Forwards stream without
 * copying: each body piece is written with a completion callback while the
 * source is paused, and the source resumes when the write is done. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "router/router.h"

/* Request times kept per app for scaling out. */
#define SERVICE_SAMPLES 8
/* Concurrency samples kept, one per tick: 60 s at the default tick. */
#define STABLE_WINDOW 60
/* Crash loops: an exit this soon after ready is a failure, and an instance
 * up this long ends a streak; the wait stops doubling at this many times
 * the base. */
#define EARLY_EXIT_MS 60000
#define BACKOFF_MAX_SHIFT 5 /* 32 times */

enum rstate { R_STARTING, R_READY, R_DRAINING, R_DEAD };

struct app;

struct rinst {
        struct app *app;
        struct rinst *next;
        uint64_t handle;        /* the provider's name for it, while live */
        bool live;              /* started and neither destroyed nor gone */
        char *id, *log_dir;     /* from the provider once ready */
        char net_address[16];   /* "" = none */
        struct lg_http_upstream *up;
        enum rstate state;
        unsigned gen;           /* the app's gen when it started: current while equal */
        unsigned active;
        unsigned refs;          /* forwards pointing here */
        uint64_t last_used;
        uint64_t t_start;
        uint64_t ready_at;      /* now_ms when it became ready; 0: adopted (up since before) */
        uint64_t expect_ready_ns; /* when it was expected to be ready (lg_now_ns) */
        bool first_served;
};

struct pending {
        struct pending *next, *prev;
        struct app *app;
        struct lg_http_request *req;
        uv_timer_t deadline;
        uint64_t arrived;
        struct lg_router_body body; /* read by the caller; owned here */
        char target[];
};

struct fwd {
        struct app *app;
        struct rinst *ri;
        struct fwd *prev, *next; /* in the app's in-flight list, while counted */
        struct lg_http_request *req;
        struct lg_http_call *call;
        uint64_t arrived;
        uint64_t sent;          /* when it went to its instance */
        unsigned writes;        /* zero-copy writes not yet completed */
        bool req_ended, call_done, response_started, cold, counted;
};

struct app {
        struct app *next;
        lg_router *router;
        char *key, *pool, *entrypoint, *code_dir, *identifier, *net_policy;
        char **env;
        char *image, *ready_path; /* image apps; NULL = none */
        char **command, **args;   /* NULL = none */
        struct lg_route_config cfg;
        /* Bumped by a new revision, or a new egress policy name (the
         * instances' network assignment is made once, at their start):
         * instances of an older gen drain. */
        unsigned gen;
        struct rinst *instances;
        struct pending *qhead, *qtail;
        struct fwd *fhead, *ftail; /* in flight, oldest first */
        unsigned queued, active;
        /* The last SERVICE_SAMPLES times an instance took per request,
         * first requests of an instance left out (scale_up). */
        uint64_t service[SERVICE_SAMPLES];
        unsigned service_n;
        bool removed;
        unsigned samples[STABLE_WINDOW]; /* peak concurrency of each tick */
        unsigned sample_pos, sample_n;
        unsigned peak_this_second;
        /* Crash loop: no instance starts before this (now_ms); 0 = none.
         * The streak itself is st.failures. */
        uint64_t backoff_until;
        struct lg_route_stats st;
};

struct lg_router {
        uv_loop_t *loop;
        const struct lg_router_provider_ops *provider;
        void *provider_data;
        unsigned tick_ms;
        unsigned backoff_ms;
        struct lg_http_client *client;
        struct app *apps;
        uv_timer_t tick;
        uv_timer_t recheck;        /* scale_up again while a queue waits (scale_up) */
        /* How long instances took to be ready, as the router saw it, with
         * a placeholder and without; 0 = none seen yet. */
        uint64_t start_warm_ns, start_cold_ns;
        lg_router_log_fn log;
        void *log_data;
        int closing; /* handles still closing after lg_router_free */
};

static void dispatch(struct app *a);
static void app_maybe_free(struct app *a);
static void pending_remove(struct pending *p);

static void app_log(struct app *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void app_log(struct app *a, const char *fmt, ...) {
        if (!a->router->log)
                return;
        char line[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        a->router->log(a->key, line, a->router->log_data);
}

static uint64_t now_ms(void) { return lg_now_ns() / 1000000; }

/* Running average: the first sample, then 1/weight of each new one. */
static void ewma(uint64_t *avg, uint64_t sample, unsigned weight) {
        if (!*avg)
                *avg = sample ? sample : 1;
        else
                *avg = (uint64_t) ((int64_t) *avg + ((int64_t) sample - (int64_t) *avg) / (int64_t) weight);
}

static unsigned concurrency(const struct app *a) { return a->cfg.concurrency ? a->cfg.concurrency : 1; }
static unsigned max_instances(const struct app *a) { return a->cfg.max_instances ? a->cfg.max_instances : 10; }
static unsigned queue_max(const struct app *a) {
        return a->cfg.queue_max ? a->cfg.queue_max : 100 * max_instances(a);
}
static unsigned timeout_s(const struct app *a) { return a->cfg.timeout_s ? a->cfg.timeout_s : 60; }
static uint64_t idle_timeout_ms(const struct app *a) {
        if (a->cfg.idle_timeout_ms)
                return a->cfg.idle_timeout_ms;
        return (uint64_t) (a->cfg.idle_timeout_s ? a->cfg.idle_timeout_s : 300) * 1000;
}

/* ---- instances ---------------------------------------------------------- */

static void rinst_free_if_unused(struct rinst *ri) {
        if (ri->state != R_DEAD || ri->refs > 0)
                return;
        struct app *a = ri->app;
        for (struct rinst **pp = &a->instances; *pp; pp = &(*pp)->next)
                if (*pp == ri) {
                        *pp = ri->next;
                        break;
                }
        if (ri->up)
                lg_http_upstream_free(ri->up);
        free(ri->id);
        free(ri->log_dir);
        free(ri);
        app_maybe_free(a);
}

/* Tell the provider to destroy it, unless it is gone already. */
static void rinst_destroy(struct rinst *ri) {
        if (ri->live) {
                ri->live = false;
                ri->app->router->provider->destroy(ri->app->router->provider_data, ri->handle);
        }
}

static void rinst_kill(struct rinst *ri, const char *why) {
        if (ri->state == R_DEAD)
                return;
        if (why)
                app_log(ri->app, "instance %s removed: %s", ri->id ? ri->id : "(starting)", why);
        ri->state = R_DEAD;
        rinst_destroy(ri);
        rinst_free_if_unused(ri);
}

/* ---- crash loops ----------------------------------------------------------
 * Failures in a row of the current revision (st.failures), and the wait
 * before the next start (backoff_until); router.h "Crash loops". */

static const char *failure_reason(int status) {
        switch (status) {
        case -ETIMEDOUT:
                return "PortNeverOpened";
        case -EPROTO:
                return "ReadinessFailed";
        case -ECHILD:
                return "ExitedAtStart";
        case -ENOENT:
                return "ImageMissing";
        default:
                return "StartFailed";
        }
}

/* The wait after the n-th failure in a row: none after the first (a
 * one-off failure costs nothing), then the base, doubling, capped. */
static uint64_t backoff_delay(unsigned base_ms, unsigned n) {
        if (n < 2)
                return 0;
        return (uint64_t) base_ms << (n - 2 < BACKOFF_MAX_SHIFT ? n - 2 : BACKOFF_MAX_SHIFT);
}

static uint64_t backoff_left(const struct app *a) {
        uint64_t now = now_ms();
        return a->backoff_until > now ? a->backoff_until - now : 0;
}

static int64_t unix_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void record_failure(struct app *a, const char *reason, const char *message) {
        struct lg_route_stats *st = &a->st;
        st->failures++;
        snprintf(st->last_reason, sizeof(st->last_reason), "%s", reason);
        /* It reaches logs, JSON and the 503's message: one printable line. */
        lg_printable(message ? message : "error", st->last_message, sizeof(st->last_message));
        st->last_failure_unix_ms = unix_ms();
        uint64_t delay = backoff_delay(a->router->backoff_ms, st->failures);
        a->backoff_until = delay ? now_ms() + delay : 0;
        char wait[32];
        if (delay < 1000)
                snprintf(wait, sizeof(wait), "%llu ms", (unsigned long long) delay);
        else
                snprintf(wait, sizeof(wait), "%.1f s", delay / 1e3);
        if (delay)
                app_log(a, "CrashLoopBackOff: %u failures in a row (the last %s); no instance starts for %s",
                        st->failures, reason, wait);
        else
                app_log(a, "%u failure in a row (%s); the next instance may start at once", st->failures, reason);
}

/* An instance of the current revision serves, or has been up long
 * enough: whatever failed before is over. */
static void streak_end(struct app *a, const struct rinst *ri, const char *why) {
        if (!a->st.failures)
                return;
        app_log(a, "instance %s %s: the %u failures in a row before it are forgiven", ri->id ? ri->id : "?", why,
                a->st.failures);
        a->st.failures = 0;
        a->backoff_until = 0;
}

static void capacity(const struct app *a, unsigned *live, unsigned *free_slots);

/* Instances of the current revision that are ready or starting. */
static unsigned live_instances(const struct app *a) {
        unsigned live, free_slots;
        capacity(a, &live, &free_slots);
        return live;
}

/* While backing off, nothing serves the app: what comes is answered at
 * once, with when to try again. */
static void respond_backoff(struct app *a, struct lg_http_request *req) {
        unsigned secs = (unsigned) ((backoff_left(a) + 999) / 1000);
        char msg[768], body[1024], retry[16];
        snprintf(msg, sizeof(msg),
                 "app `%s` is in CrashLoopBackOff: %u failures in a row, the last %s: %s; the next start in %u s",
                 a->key, a->st.failures, a->st.last_reason, a->st.last_message, secs ? secs : 1);
        snprintf(retry, sizeof(retry), "%u", secs ? secs : 1);
        size_t n = lg_http_error_json(body, sizeof(body), "CrashLoopBackOff", msg);
        const struct lg_http_header h[] = {{"Content-Type", "application/json"}, {"Retry-After", retry}};
        a->st.errors_5xx++;
        lg_http_respond(req, 503, h, ARRAY_SIZE(h), body, n);
}

/* A start for the current revision failed (ri is dead already). */
static void start_failed(struct app *a, int status, const char *message) {
        const char *reason = failure_reason(status);
        if (!message)
                message = "error";
        app_log(a, "an instance failed to start: %s: %s", reason, message);
        record_failure(a, reason, message);
        /* Requests waiting for this revision would only meet the same
         * failure: answer them now rather than loop on new instances. */
        if (live_instances(a) > 0)
                return;
        while (a->qhead) {
                struct lg_http_request *req = a->qhead->req;
                pending_remove(a->qhead);
                a->st.errors_5xx++;
                lg_http_respond_error(req, 502, "InstanceFailed", "app `%s` failed to start: %s: %s", a->key, reason,
                                      a->st.last_message);
        }
}

static void on_instance_ready(void *ud, int status, const char *message, const struct lg_router_instance_info *info) {
        struct rinst *ri = ud;
        struct app *a = ri->app;
        if (status < 0 || !info) {
                ri->live = false; /* the provider already destroyed it */
                bool current = ri->state == R_STARTING && !a->removed;
                ri->state = R_DEAD;
                if (current)
                        start_failed(a, status < 0 ? status : -EIO, message);
                else
                        app_log(a, "an instance of an older revision failed to start: %s", message ? message : "error");
                rinst_free_if_unused(ri);
                return;
        }
        struct lg_error err = {0};
        ri->id = strdup(info->id);
        ri->log_dir = info->log_dir ? strdup(info->log_dir) : NULL;
        snprintf(ri->net_address, sizeof(ri->net_address), "%s", info->net_address ? info->net_address : "");
        if (!ri->id || (info->log_dir && !ri->log_dir)) {
                rinst_kill(ri, "out of memory");
                return;
        }
        if (lg_http_upstream_new(a->router->client, info->address, &ri->up, &err) < 0) {
                rinst_kill(ri, err.msg);
                return;
        }
        ri->state = ri->gen == a->gen && !a->removed ? R_READY : R_DRAINING;
        ri->last_used = now_ms();
        ri->ready_at = info->adopted ? 0 : ri->last_used;
        /* An instance taken back says nothing of how long a start takes. */
        uint64_t *learnt = info->cold ? &a->router->start_cold_ns : &a->router->start_warm_ns;
        if (!info->adopted)
                ewma(learnt, lg_now_ns() - ri->t_start, 4);
        if (info->adopted)
                app_log(a, "instance %s taken back after a legiond restart", ri->id);
        else
                app_log(a, "instance %s ready in %.1f ms (%s)", ri->id, info->start_ns / 1e6,
                        info->cold ? "no placeholder ready" : "from a placeholder");
        if (ri->state == R_DRAINING && ri->active == 0) {
                rinst_kill(ri, NULL);
                return;
        }
        dispatch(a);
}

static void on_instance_exit(void *ud, const char *status) {
        struct rinst *ri = ud;
        struct app *a = ri->app;
        ri->live = false; /* gone already */
        if (!status)
                status = "exited";
        app_log(a, "instance %s exited: %s", ri->id ? ri->id : "(starting)", status);
        uint64_t up = ri->ready_at ? now_ms() - ri->ready_at : UINT64_MAX;
        bool early = ri->state == R_READY && !a->removed && up < EARLY_EXIT_MS;
        ri->state = R_DEAD;
        if (early) {
                char msg[300];
                snprintf(msg, sizeof(msg), "instance %s exited %.1f s after it was ready: %s", ri->id, up / 1e3,
                         status);
                record_failure(a, "Crashed", msg);
        }
        bool removed = a->removed;
        rinst_free_if_unused(ri); /* frees a removed app with its last instance */
        /* In-flight forwards see their connection fail (502); what is
         * queued gets a new instance, or 503 while backing off. */
        if (!removed)
                dispatch(a);
}

/* Instances of this revision that a previous legiond left running. */
static void take_adopted(struct app *a) {
        lg_router *r = a->router;
        while (r->provider->adopt && !a->removed) {
                struct rinst *ri = calloc(1, sizeof(*ri));
                if (!ri)
                        return;
                struct lg_router_instance_info info;
                if (r->provider->adopt(r->provider_data, a->key, a->cfg.revision, on_instance_ready, on_instance_exit,
                                       ri, &ri->handle, &info) <= 0) {
                        free(ri);
                        return;
                }
                ri->app = a;
                ri->gen = a->gen;
                ri->state = R_STARTING;
                ri->t_start = lg_now_ns();
                ri->live = true;
                ri->next = a->instances;
                a->instances = ri;
                on_instance_ready(ri, 0, NULL, &info);
        }
}

/* expect_ns: how long it should take to be ready (start_expect_ns). */
static int start_instance(struct app *a, uint64_t expect_ns) {
        if (backoff_left(a) > 0)
                return -EAGAIN; /* crash loop: not yet */
        struct rinst *ri = calloc(1, sizeof(*ri));
        if (!ri)
                return -ENOMEM;
        ri->app = a;
        ri->gen = a->gen;
        ri->state = R_STARTING;
        ri->t_start = lg_now_ns();
        ri->expect_ready_ns = ri->t_start + expect_ns;
        struct lg_router_instance_spec spec = {
                .pool = a->pool,
                .app = a->key,
                .revision = a->cfg.revision,
                .entrypoint = a->entrypoint,
                .env = (const char *const *) a->env,
                .code_dir = a->code_dir,
                .identifier = a->identifier,
                .cpu_millis = a->cfg.cpu_millis,
                .net_policy = a->net_policy,
                .image = a->image,
                .command = (const char *const *) a->command,
                .args = (const char *const *) a->args,
                .port = a->cfg.port,
                .ready_path = a->ready_path,
                .memory_bytes = a->cfg.memory_bytes,
        };
        struct lg_error err = {0};
        ri->next = a->instances;
        a->instances = ri;
        lg_router *r = a->router;
        int rc = r->provider->start(r->provider_data, &spec, on_instance_ready, on_instance_exit, ri, &ri->handle,
                                    &err);
        if (rc < 0) {
                ri->state = R_DEAD;
                rinst_free_if_unused(ri);
                start_failed(a, rc, err.msg);
                return rc;
        }
        ri->live = true;
        a->st.cold_starts++;
        return 0;
}

/* Instances of the current revision, and the slots they will offer. */
static void capacity(const struct app *a, unsigned *live, unsigned *free_slots) {
        *live = 0;
        *free_slots = 0;
        for (struct rinst *ri = a->instances; ri; ri = ri->next) {
                if (ri->state != R_READY && ri->state != R_STARTING)
                        continue;
                (*live)++;
                *free_slots += concurrency(a) - (ri->active < concurrency(a) ? ri->active : concurrency(a));
        }
}

/* ---- scaling out ---------------------------------------------------------
 * A request that finds no free slot waits in the queue, and capacity
 * already on its way counts: the free slots of instances still starting
 * (as Knative's activator counts capacity in flight). Beyond that, an
 * instance is started only when waiting for it beats waiting for a slot:
 * when the queue, worked off by the ready and starting instances at the
 * observed time per request (each starting one from when it should be
 * ready), would take longer to drain than a new instance takes to be ready
 * (the start times seen so far, with a placeholder when the provider has
 * one waiting, else without). A burst that the placeholders answer within
 * milliseconds so starts no instance that would come up after it is over;
 * slow requests start as many as their queue needs. The time per request
 * is known from requests answered and from the age of the oldest one in
 * flight (service_ns), which grows: re-checked every RECHECK_MS while a
 * queue waits. */

/* At most this many instances of one app start at once: instances started
 * together share the CPUs and are all late; more start as these come up. */
#define MAX_STARTING 4
#define RECHECK_MS 5
/* Start times assumed before any was seen. */
#define DEFAULT_START_WARM_NS (20 * 1000000ull)
#define DEFAULT_START_COLD_NS (500 * 1000000ull)

static uint64_t start_expect_ns(const lg_router *r, bool placeholder) {
        if (placeholder)
                return r->start_warm_ns ? r->start_warm_ns : DEFAULT_START_WARM_NS;
        return r->start_cold_ns ? r->start_cold_ns : DEFAULT_START_COLD_NS;
}

static int cmp_u64(const void *x, const void *y) {
        uint64_t a = *(const uint64_t *) x, b = *(const uint64_t *) y;
        return a < b ? -1 : a > b;
}

/* Time per request, for deciding on a start expected to take expect ns;
 * 0 when nothing is known. Evidence: the median of the recent request
 * times, from 3 on (an instance's first requests are left out: on a
 * loaded machine they are several times slower, and counting them made a
 * burst of quick requests look slow); and the oldest request in flight,
 * whose age is a lower bound -- always for a placeholder (cheap, ready in
 * milliseconds), else once it is older than the start would take. */
static uint64_t service_ns(const struct app *a, uint64_t now, uint64_t expect, bool placeholder) {
        uint64_t s = 0;
        unsigned n = a->service_n < SERVICE_SAMPLES ? a->service_n : SERVICE_SAMPLES;
        if (n >= 3) {
                uint64_t v[SERVICE_SAMPLES];
                memcpy(v, a->service, n * sizeof(v[0]));
                qsort(v, n, sizeof(v[0]), cmp_u64);
                s = v[n / 2];
        }
        uint64_t age = a->fhead ? now - a->fhead->sent : 0;
        if ((placeholder || age >= expect) && age > s)
                s = age;
        return s;
}

/* From now, how long until the queue is worked off: each slot takes a
 * request every svc ns, those of starting instances from when they are
 * expected ready. */
static uint64_t drain_ns(const struct app *a, uint64_t now, uint64_t svc) {
        uint64_t at[64];
        size_t n = 0;
        double slots = 0, conc = concurrency(a);
        for (const struct rinst *ri = a->instances; ri; ri = ri->next) {
                if (ri->state == R_READY && ri->gen == a->gen)
                        slots += conc;
                else if (ri->state == R_STARTING && n < ARRAY_SIZE(at))
                        at[n++] = ri->expect_ready_ns > now ? ri->expect_ready_ns - now : 0;
        }
        qsort(at, n, sizeof(at[0]), cmp_u64);
        double work = (double) a->queued * (double) svc; /* slot-ns */
        double t = 0;
        for (size_t i = 0; i <= n; i++) {
                double until = i < n ? (double) at[i] : INFINITY;
                if (slots > 0 && work <= slots * (until - t))
                        return (uint64_t) (t + work / slots);
                if (i == n)
                        break;
                work -= slots * (until - t);
                t = until;
                slots += conc;
        }
        return UINT64_MAX; /* no capacity at all */
}

static void on_recheck(uv_timer_t *h);

static void scale_up(struct app *a) {
        lg_router *r = a->router;
        unsigned live, free_slots, starting = 0;
        capacity(a, &live, &free_slots);
        for (struct rinst *ri = a->instances; ri; ri = ri->next)
                starting += ri->state == R_STARTING;
        if (a->queued <= free_slots || live >= max_instances(a) || starting >= MAX_STARTING || a->removed)
                return;
        uint64_t now = lg_now_ns();
        unsigned warm = r->provider->placeholders ? r->provider->placeholders(r->provider_data, a->pool) : 0;
        while (a->queued > free_slots && live < max_instances(a) && starting < MAX_STARTING) {
                uint64_t expect = start_expect_ns(r, warm > 0);
                uint64_t svc = service_ns(a, now, expect, warm > 0);
                /* Someone has to serve the queue; beyond that, start one
                 * only if the queue would still be there when it is ready. */
                if (live > 0 && drain_ns(a, now, svc) <= expect) {
                        if (!uv_is_active((uv_handle_t *) &r->recheck))
                                uv_timer_start(&r->recheck, on_recheck, RECHECK_MS, 0);
                        return;
                }
                if (start_instance(a, expect) < 0)
                        break;
                warm -= warm > 0;
                live++;
                starting++;
                free_slots += concurrency(a);
        }
}

static void on_recheck(uv_timer_t *h) {
        lg_router *r = h->data;
        for (struct app *a = r->apps; a; a = a->next)
                if (a->qhead && !a->removed)
                        scale_up(a);
}

/* ---- forwarding --------------------------------------------------------- */

static void fwd_maybe_free(struct fwd *f) {
        if (!f->req_ended || !f->call_done || f->writes > 0)
                return;
        struct rinst *ri = f->ri;
        struct app *a = f->app;
        ri->refs--;
        free(f);
        if (ri->state == R_DRAINING && ri->active == 0)
                rinst_kill(ri, NULL);
        else
                rinst_free_if_unused(ri);
        dispatch(a);
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

static void fwd_end_request(struct fwd *f, int status, const char *code, const char *fmt, const char *detail) {
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
                lg_http_respond_error(f->req, status, code, fmt, detail);
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
                        streak_end(f->app, f->ri, "answered a request");
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
                fwd_end_request(f, 0, NULL, NULL, NULL);
        } else if (error == -ETIMEDOUT) {
                fwd_end_request(f, 504, "Timeout", "%s", "the function did not answer in time");
        } else {
                /* The instance broke mid-request: it is not trusted again. */
                char why[256];
                snprintf(why, sizeof(why), "request failed: %s", lg_http_call_error(call));
                fwd_end_request(f, 502, "BadGateway", "the function failed: %s", lg_http_call_error(call));
                if (error != -ECANCELED && f->ri->state != R_DEAD)
                        rinst_kill(f->ri, why);
        }
        fwd_maybe_free(f);
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
                fwd_end_request(f, 502, "BadGateway", "cannot reach the function: %s", strerror(-r));
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

static void pending_remove(struct pending *p) {
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

static void dispatch(struct app *a) {
        while (a->qhead) {
                struct rinst *ri = pick(a);
                if (!ri)
                        break;
                struct pending *p = a->qhead;
                /* Off the queue before forward, which may dispatch again;
                 * p itself (and its target) is freed only once its timer
                 * has closed, on a later turn of the loop. */
                pending_remove(p);
                struct lg_router_body body = p->body;
                p->body = (struct lg_router_body){0};
                forward(a, ri, p->req, p->target, body, p->arrived, !ri->first_served);
        }
        if (a->qhead)
                scale_up(a);
        while (a->qhead && backoff_left(a) > 0 && live_instances(a) == 0) {
                struct lg_http_request *req = a->qhead->req;
                pending_remove(a->qhead);
                respond_backoff(a, req);
        }
        unsigned c = a->active + a->queued;
        if (c > a->peak_this_second)
                a->peak_this_second = c;
}

static void on_deadline(uv_timer_t *t) {
        struct pending *p = t->data;
        struct app *a = p->app;
        struct lg_http_request *req = p->req;
        pending_remove(p);
        a->st.timeouts_504++;
        a->st.errors_5xx++;
        lg_http_respond_error(req, 504, "Timeout", "no instance of `%s` could take the request within %u s",
                              a->key, timeout_s(a));
}

static void on_pending_abort(struct lg_http_request *req, int reason, void *ud) {
        struct pending *p = ud;
        (void) reason;
        pending_remove(p);
        lg_http_response_abort(req);
}

/* ---- apps ---------------------------------------------------------------- */

static struct app *find_app(lg_router *r, const char *key) {
        for (struct app *a = r->apps; a; a = a->next)
                if (!a->removed && !strcmp(a->key, key))
                        return a;
        return NULL;
}

void lg_router_handle(lg_router *r, struct lg_http_request *req, const char *key, const char *target) {
        lg_router_handle_body(r, req, key, target, (struct lg_router_body){0});
}

void lg_router_handle_body(lg_router *r, struct lg_http_request *req, const char *key, const char *target,
                           struct lg_router_body body) {
        _cleanup_free_ char *body_data = body.data;
        struct app *a = find_app(r, key);
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
        dispatch(a);
}

static void strv_free(char **v) {
        for (char **e = v; e && *e; e++)
                free(*e);
        free(v);
}

/* A copy of a NULL-terminated array; NULL stays NULL. 0 or -ENOMEM. */
static int strv_dup(const char *const *v, char ***ret) {
        *ret = NULL;
        if (!v)
                return 0;
        size_t n = 0;
        while (v[n])
                n++;
        char **c = calloc(n + 1, sizeof(char *));
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (!(c[i] = strdup(v[i]))) {
                        strv_free(c);
                        return -ENOMEM;
                }
        *ret = c;
        return 0;
}

static void free_cfg_strings(struct app *a) {
        free(a->pool);
        free(a->entrypoint);
        free(a->code_dir);
        free(a->identifier);
        free(a->net_policy);
        free(a->image);
        free(a->ready_path);
        strv_free(a->env);
        strv_free(a->command);
        strv_free(a->args);
        a->pool = a->entrypoint = a->code_dir = a->identifier = a->net_policy = a->image = a->ready_path = NULL;
        a->env = a->command = a->args = NULL;
}

/* Copies a string that may be NULL: false when out of memory. */
static bool dup_opt(const char *s, char **ret) {
        *ret = s ? strdup(s) : NULL;
        return !s || *ret;
}

static int copy_cfg(struct app *a, const struct lg_route_config *cfg) {
        free_cfg_strings(a);
        static const char *const none[] = {NULL};
        bool ok = strv_dup(cfg->env ? cfg->env : none, &a->env) == 0 &&
                  strv_dup(cfg->command, &a->command) == 0 && strv_dup(cfg->args, &a->args) == 0;
        a->pool = strdup(cfg->pool ? cfg->pool : "");
        ok &= a->pool && dup_opt(cfg->entrypoint, &a->entrypoint) && dup_opt(cfg->code_dir, &a->code_dir) &&
              dup_opt(cfg->identifier, &a->identifier) && dup_opt(cfg->net_policy, &a->net_policy) &&
              dup_opt(cfg->image, &a->image) && dup_opt(cfg->ready_path, &a->ready_path);
        a->cfg = *cfg;
        /* The copy points at nothing of the caller's. */
        a->cfg.key = a->key;
        a->cfg.pool = a->pool;
        a->cfg.entrypoint = a->entrypoint;
        a->cfg.env = (const char *const *) a->env;
        a->cfg.code_dir = a->code_dir;
        a->cfg.identifier = a->identifier;
        a->cfg.net_policy = a->net_policy;
        a->cfg.image = a->image;
        a->cfg.command = (const char *const *) a->command;
        a->cfg.args = (const char *const *) a->args;
        a->cfg.ready_path = a->ready_path;
        return ok ? 0 : -ENOMEM;
}

int lg_router_set(lg_router *r, const struct lg_route_config *cfg, struct lg_error *err) {
        struct app *a = find_app(r, cfg->key);
        if (!a) {
                a = calloc(1, sizeof(*a));
                if (!a || !(a->key = strdup(cfg->key))) {
                        free(a);
                        return lg_error_set(err, ENOMEM, "allocate app");
                }
                a->router = r;
                a->next = r->apps;
                r->apps = a;
        }
        bool new_revision = a->cfg.revision != cfg->revision;
        bool new_policy = strcmp(a->net_policy ? a->net_policy : "", cfg->net_policy ? cfg->net_policy : "") != 0;
        if (copy_cfg(a, cfg) < 0)
                return lg_error_set(err, ENOMEM, "copy app settings");
        a->st.revision = cfg->revision;
        if (new_revision) {
                /* Another image or settings: the old one's failures say
                 * nothing of it. */
                a->st.failures = 0;
                a->st.last_reason[0] = a->st.last_message[0] = '\0';
                a->st.last_failure_unix_ms = 0;
                a->backoff_until = 0;
        }
        if (new_revision || new_policy) {
                a->gen++;
                /* Old instances finish what they have and go; they are never
                 * specialized again nor given new requests. */
                for (struct rinst *ri = a->instances, *next; ri; ri = next) {
                        next = ri->next;
                        if (ri->gen == a->gen || ri->state == R_DEAD)
                                continue;
                        if (ri->state == R_STARTING) {
                                ri->state = R_DRAINING; /* killed when it reports */
                                continue;
                        }
                        ri->state = R_DRAINING;
                        if (ri->active == 0)
                                rinst_kill(ri, new_revision ? "replaced by a new revision"
                                                            : "replaced: the app's egress policy is another");
                }
        }
        take_adopted(a);
        dispatch(a);
        return 0;
}

static void app_maybe_free(struct app *a) {
        if (!a->removed || a->instances || a->qhead)
                return;
        lg_router *r = a->router;
        for (struct app **pp = &r->apps; *pp; pp = &(*pp)->next)
                if (*pp == a) {
                        *pp = a->next;
                        break;
                }
        free_cfg_strings(a);
        free(a->key);
        free(a);
}

void lg_router_remove(lg_router *r, const char *key) {
        struct app *a = find_app(r, key);
        if (!a)
                return;
        /* Marked removed only after its instances are dealt with: killing
         * the last one must not free the app under us. */
        while (a->qhead) {
                struct pending *p = a->qhead;
                struct lg_http_request *req = p->req;
                pending_remove(p);
                lg_http_respond_error(req, 404, "NotFound", "app `%s` was deleted", key);
        }
        for (struct rinst *ri = a->instances, *next; ri; ri = next) {
                next = ri->next;
                if (ri->state == R_READY && ri->active == 0)
                        rinst_kill(ri, "app deleted");
                else if (ri->state != R_DEAD)
                        ri->state = R_DRAINING;
        }
        a->removed = true;
        app_maybe_free(a);
}

/* Each tick (a second by default): record concurrency, keep minInstances,
 * retire idle ones beyond what the stable window needs. */
static void on_tick(uv_timer_t *t) {
        lg_router *r = t->data;
        uint64_t now = now_ms();
        for (struct app *a = r->apps, *next; a; a = next) {
                next = a->next;
                if (a->removed)
                        continue;
                a->samples[a->sample_pos] = a->peak_this_second;
                a->sample_pos = (a->sample_pos + 1) % STABLE_WINDOW;
                if (a->sample_n < STABLE_WINDOW)
                        a->sample_n++;
                a->peak_this_second = a->active + a->queued;
                uint64_t sum = 0;
                /* The window is the idle timeout when that is shorter: an
                 * app that may idle 1 s must not be kept warm for 60. */
                uint64_t idle_ticks = (idle_timeout_ms(a) + r->tick_ms - 1) / r->tick_ms;
                unsigned window = idle_ticks < STABLE_WINDOW ? (unsigned) idle_ticks : STABLE_WINDOW;
                unsigned used = a->sample_n < window ? a->sample_n : window;
                sum = 0;
                for (unsigned i = 0; i < used; i++)
                        sum += a->samples[(a->sample_pos + STABLE_WINDOW - 1 - i) % STABLE_WINDOW];
                double avg = used ? (double) sum / used : 0;
                unsigned stable = (unsigned) ceil(avg / concurrency(a));
                unsigned keep = stable > a->cfg.min_instances ? stable : a->cfg.min_instances;

                unsigned live = 0, free_slots;
                capacity(a, &live, &free_slots);
                for (struct rinst *ri = a->instances; ri && a->st.failures; ri = ri->next)
                        if (ri->state == R_READY && (!ri->ready_at || now - ri->ready_at >= EARLY_EXIT_MS))
                                streak_end(a, ri, "is up for 60 s");
                for (struct rinst *ri = a->instances, *rn; ri && live > keep; ri = rn) {
                        rn = ri->next;
                        if (ri->state != R_READY || ri->active > 0 ||
                            now - ri->last_used < idle_timeout_ms(a))
                                continue;
                        char why[64];
                        snprintf(why, sizeof(why), "idle for %.3g s", idle_timeout_ms(a) / 1e3);
                        rinst_kill(ri, why);
                        live--;
                }
                while (live < a->cfg.min_instances && live < max_instances(a)) {
                        if (start_instance(a, start_expect_ns(r, false)) < 0)
                                break;
                        live++;
                }
        }
}

int lg_router_stats(lg_router *r, const char *key, struct lg_route_stats *ret) {
        struct app *a = find_app(r, key);
        if (!a)
                return -ENOENT;
        *ret = a->st;
        ret->instances = ret->starting = ret->draining = 0;
        for (struct rinst *ri = a->instances; ri; ri = ri->next) {
                ret->instances += ri->state == R_READY;
                ret->starting += ri->state == R_STARTING;
                ret->draining += ri->state == R_DRAINING;
        }
        ret->active = a->active;
        ret->queued = a->queued;
        ret->backoff_ms_left = backoff_left(a);
        return 0;
}

int lg_router_each_instance(lg_router *r, const char *key,
                            void (*fn)(const struct lg_router_instance *inst, void *ud), void *ud) {
        struct app *a = find_app(r, key);
        int n = 0;
        for (struct rinst *ri = a ? a->instances : NULL; ri; ri = ri->next)
                if (ri->live && ri->id) {
                        struct lg_router_instance inst = {.id = ri->id, .log_dir = ri->log_dir,
                                                          .net_address = ri->net_address,
                                                          .ready = ri->state == R_READY};
                        fn(&inst, ud);
                        n++;
                }
        return n;
}

int lg_router_new(const struct lg_router_config *cfg, lg_router **ret, struct lg_error *err) {
        if (!cfg->loop || !cfg->provider || !cfg->provider->start || !cfg->provider->destroy)
                return lg_error_set(err, EINVAL, "router: a loop and a provider with start and destroy are needed");
        lg_router *r = calloc(1, sizeof(*r));
        if (!r)
                return lg_error_set(err, ENOMEM, "allocate router");
        r->loop = cfg->loop;
        r->provider = cfg->provider;
        r->provider_data = cfg->provider_data;
        r->tick_ms = cfg->tick_ms ? cfg->tick_ms : 1000;
        r->backoff_ms = cfg->backoff_ms ? cfg->backoff_ms : 1000;
        r->log = cfg->log;
        r->log_data = cfg->log_data;
        struct lg_http_client_config cc = {.max_idle = 64};
        uv_loop_t *loop = r->loop;
        int rc = lg_http_client_new(loop, &cc, &r->client, err);
        if (rc < 0) {
                free(r);
                return rc;
        }
        uv_timer_init(loop, &r->tick);
        r->tick.data = r;
        uv_timer_start(&r->tick, on_tick, r->tick_ms, r->tick_ms);
        uv_timer_init(loop, &r->recheck);
        r->recheck.data = r;
        *ret = r;
        return 0;
}

/* The router itself goes once its timers and its HTTP client are closed;
 * they close on the loop, in any order. */
static void router_release(lg_router *r) {
        if (--r->closing == 0)
                free(r);
}
static void router_tick_closed(uv_handle_t *h) { router_release(h->data); }
static void router_client_closed(void *ud) { router_release(ud); }

void lg_router_free(lg_router *r) {
        if (!r)
                return;
        for (struct app *a = r->apps, *next_app; a; a = next_app) {
                next_app = a->next;
                while (a->qhead) {
                        struct pending *p = a->qhead;
                        struct lg_http_request *req = p->req;
                        pending_remove(p);
                        lg_http_respond_error(req, 503, "ShuttingDown", "%s", "legiond is shutting down");
                }
                /* Removed first, so that freeing its last instance frees
                 * the app; instances a forward still points at go when the
                 * client below cancels that forward. */
                a->removed = true;
                struct rinst *ri = a->instances;
                bool has_instances = ri != NULL;
                while (ri) {
                        struct rinst *next = ri->next;
                        if (ri->state != R_DEAD) {
                                ri->state = R_DEAD;
                                rinst_destroy(ri);
                        }
                        bool last = next == NULL;
                        rinst_free_if_unused(ri); /* may free a with the last one */
                        if (last)
                                break;
                        ri = next;
                }
                if (!has_instances)
                        app_maybe_free(a);
        }
        uv_timer_stop(&r->tick);
        r->tick.data = r;
        r->closing = 3;
        uv_close((uv_handle_t *) &r->tick, router_tick_closed);
        uv_close((uv_handle_t *) &r->recheck, router_tick_closed);
        lg_http_client_close(r->client, router_client_closed, r);
}
