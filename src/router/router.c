/* The router (router.h): apps, their instances from start to end, crash
 * loops, and the API. What the files share: router-internal.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "router/router-internal.h"

void router_log(struct app *a, const char *fmt, ...) {
        if (!a->router->log)
                return;
        char line[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        a->router->log(a->key, line, a->router->log_data);
}

/* Running average: the first sample, then 1/weight of each new one. */
static void ewma(uint64_t *avg, uint64_t sample, unsigned weight) {
        if (!*avg)
                *avg = sample ? sample : 1;
        else
                *avg = (uint64_t) ((int64_t) *avg + ((int64_t) sample - (int64_t) *avg) / (int64_t) weight);
}

/* ---- instances ---------------------------------------------------------- */

void router_inst_free_if_unused(struct rinst *ri) {
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
        router_app_maybe_free(a);
}

/* Tell the provider to destroy it, unless it is gone already. */
static void rinst_destroy(struct rinst *ri) {
        if (ri->live) {
                ri->live = false;
                ri->app->router->provider->destroy(ri->app->router->provider_data, ri->handle);
        }
}

void router_inst_kill(struct rinst *ri, const char *why) {
        if (ri->state == R_DEAD)
                return;
        if (why)
                router_log(ri->app, "instance %s removed: %s", ri->id ? ri->id : "(starting)", why);
        ri->state = R_DEAD;
        rinst_destroy(ri);
        router_inst_free_if_unused(ri);
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

uint64_t router_backoff_left(const struct app *a) {
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
        lg_printable_message(message ? message : "error", st->last_message, sizeof(st->last_message));
        st->last_failure_unix_ms = unix_ms();
        uint64_t delay = backoff_delay(a->router->backoff_ms, st->failures);
        a->backoff_until = delay ? now_ms() + delay : 0;
        char wait[32];
        if (delay < 1000)
                snprintf(wait, sizeof(wait), "%llu ms", (unsigned long long) delay);
        else
                snprintf(wait, sizeof(wait), "%.1f s", delay / 1e3);
        if (delay)
                router_log(a, "CrashLoopBackOff: %u failures in a row (the last %s); no instance starts for %s",
                        st->failures, reason, wait);
        else
                router_log(a, "%u failure in a row (%s); the next instance may start at once", st->failures, reason);
}

/* An instance of the current revision serves, or has been up long
 * enough: whatever failed before is over. */
void router_streak_end(struct app *a, const struct rinst *ri, const char *why) {
        if (!a->st.failures)
                return;
        router_log(a, "instance %s %s: the %u failures in a row before it are forgiven", ri->id ? ri->id : "?", why,
                a->st.failures);
        a->st.failures = 0;
        a->backoff_until = 0;
}

/* Instances of the current revision that are ready or starting. */
unsigned router_live_instances(const struct app *a) {
        unsigned live, free_slots;
        router_capacity(a, &live, &free_slots);
        return live;
}

/* While backing off, nothing serves the app: what comes is answered at
 * once, with when to try again. */
void router_respond_backoff(struct app *a, struct lg_http_request *req) {
        unsigned secs = (unsigned) ((router_backoff_left(a) + 999) / 1000);
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
        router_log(a, "an instance failed to start: %s: %s", reason, message);
        record_failure(a, reason, message);
        /* Requests waiting for this revision would only meet the same
         * failure: answer them now rather than loop on new instances. */
        if (router_live_instances(a) > 0)
                return;
        while (a->qhead) {
                struct lg_http_request *req = a->qhead->req;
                router_pending_remove(a->qhead);
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
                        router_log(a, "an instance of an older revision failed to start: %s", message ? message : "error");
                router_inst_free_if_unused(ri);
                return;
        }
        struct lg_error err = {0};
        ri->id = strdup(info->id);
        ri->log_dir = info->log_dir ? strdup(info->log_dir) : NULL;
        snprintf(ri->net_address, sizeof(ri->net_address), "%s", info->net_address ? info->net_address : "");
        if (!ri->id || (info->log_dir && !ri->log_dir)) {
                router_inst_kill(ri, "out of memory");
                return;
        }
        if (lg_http_upstream_new(a->router->client, info->address, &ri->up, &err) < 0) {
                router_inst_kill(ri, err.msg);
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
                router_log(a, "instance %s taken back after a legiond restart", ri->id);
        else
                router_log(a, "instance %s ready in %.1f ms (%s)", ri->id, info->start_ns / 1e6,
                        info->cold ? "no placeholder ready" : "from a placeholder");
        if (ri->state == R_DRAINING && ri->active == 0) {
                router_inst_kill(ri, NULL);
                return;
        }
        router_dispatch(a);
}

static void on_instance_exit(void *ud, const char *status) {
        struct rinst *ri = ud;
        struct app *a = ri->app;
        ri->live = false; /* gone already */
        if (!status)
                status = "exited";
        router_log(a, "instance %s exited: %s", ri->id ? ri->id : "(starting)", status);
        /* What the requests it broke say (those still waiting, and those
         * whose failure comes after this). */
        snprintf(ri->exit_text, sizeof(ri->exit_text), "instance %s exited: %s", ri->id ? ri->id : "(starting)",
                 status);
        uint64_t up = ri->ready_at ? now_ms() - ri->ready_at : UINT64_MAX;
        /* A broken one was ready and of the current revision when its
         * connection failed; it still is unless a new one came since. */
        bool current = ri->state == R_READY || (ri->state == R_BROKEN && ri->gen == a->gen);
        if (current && !a->removed && up < EARLY_EXIT_MS) {
                char msg[300];
                snprintf(msg, sizeof(msg), "instance %s exited %.1f s after it was ready: %s", ri->id, up / 1e3,
                         status);
                record_failure(a, "Crashed", msg);
        }
        if (ri->state == R_BROKEN)
                router_answer_held(ri, ri->exit_text);
        ri->state = R_DEAD;
        bool removed = a->removed;
        router_inst_free_if_unused(ri); /* frees a removed app with its last instance */
        /* In-flight forwards see their connection fail (502); what is
         * queued gets a new instance, or 503 while backing off. */
        if (!removed)
                router_dispatch(a);
}

/* ---- broken instances -----------------------------------------------------
 * A forward that fails on its connection most often means the instance's
 * process died: the kernel closes its sockets first, and the provider
 * learns how it ended ("Exited(4): <its last stderr line>") a little
 * later. Destroyed at once, the instance would never report it, and the
 * app's log and the 502 would not say why it died, nor would the crash
 * count for the crash loop. So it takes no more requests (a replacement
 * may start at once) and waits for its exit report, at most EXIT_WAIT_MS,
 * holding the 502s of the requests it broke; without a report it is
 * destroyed then, with the connection's error, and counts as a crash all
 * the same. */

static void on_exit_wait(uv_timer_t *h);

void router_inst_broke(struct rinst *ri, const char *error) {
        if (ri->state != R_READY && ri->state != R_DRAINING)
                return; /* broken or gone already */
        lg_router *r = ri->app->router;
        ri->state = R_BROKEN;
        snprintf(ri->broke, sizeof(ri->broke), "%s", error);
        ri->broken_until = now_ms() + EXIT_WAIT_MS;
        if (!uv_is_active((uv_handle_t *) &r->exit_wait))
                uv_timer_start(&r->exit_wait, on_exit_wait, EXIT_WAIT_MS, 0);
}

/* No exit report in time: it goes with the connection's error. */
static void broken_give_up(struct rinst *ri) {
        struct app *a = ri->app;
        uint64_t up = ri->ready_at ? now_ms() - ri->ready_at : UINT64_MAX;
        if (ri->gen == a->gen && !a->removed && up < EARLY_EXIT_MS) {
                char msg[400];
                snprintf(msg, sizeof(msg), "instance %s removed %.1f s after it was ready: request failed: %s",
                         ri->id, up / 1e3, ri->broke);
                record_failure(a, "Crashed", msg);
        }
        router_answer_held(ri, ri->broke);
        char why[300];
        snprintf(why, sizeof(why), "request failed: %s (no exit reported within %u ms)", ri->broke, EXIT_WAIT_MS);
        router_inst_kill(ri, why);
}

static void on_exit_wait(uv_timer_t *h) {
        lg_router *r = h->data;
        uint64_t next;
        for (;;) {
                uint64_t now = now_ms();
                struct rinst *due = NULL;
                next = UINT64_MAX;
                for (struct app *a = r->apps; a && !due; a = a->next)
                        for (struct rinst *ri = a->instances; ri && !due; ri = ri->next)
                                if (ri->state == R_BROKEN && ri->broken_until <= now)
                                        due = ri;
                                else if (ri->state == R_BROKEN && ri->broken_until - now < next)
                                        next = ri->broken_until - now;
                if (!due)
                        break;
                broken_give_up(due); /* may free its app: look again from the start */
        }
        if (next != UINT64_MAX)
                uv_timer_start(h, on_exit_wait, next, 0);
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
int router_start_instance(struct app *a, uint64_t expect_ns) {
        if (router_backoff_left(a) > 0)
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
                router_inst_free_if_unused(ri);
                start_failed(a, rc, err.msg);
                return rc;
        }
        ri->live = true;
        a->st.cold_starts++;
        return 0;
}

/* ---- apps ---------------------------------------------------------------- */

struct app *router_find_app(lg_router *r, const char *key) {
        for (struct app *a = r->apps; a; a = a->next)
                if (!a->removed && !strcmp(a->key, key))
                        return a;
        return NULL;
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
        struct app *a = router_find_app(r, cfg->key);
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
                        if (ri->gen == a->gen || ri->state == R_DEAD || ri->state == R_BROKEN)
                                continue; /* a broken one goes when its wait ends */
                        if (ri->state == R_STARTING) {
                                ri->state = R_DRAINING; /* killed when it reports */
                                continue;
                        }
                        ri->state = R_DRAINING;
                        if (ri->active == 0)
                                router_inst_kill(ri, new_revision ? "replaced by a new revision"
                                                            : "replaced: the app's egress policy is another");
                }
        }
        take_adopted(a);
        router_dispatch(a);
        return 0;
}

void router_app_maybe_free(struct app *a) {
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
        struct app *a = router_find_app(r, key);
        if (!a)
                return;
        /* Marked removed only after its instances are dealt with: killing
         * the last one must not free the app under us. */
        while (a->qhead) {
                struct pending *p = a->qhead;
                struct lg_http_request *req = p->req;
                router_pending_remove(p);
                lg_http_respond_error(req, 404, "NotFound", "app `%s` was deleted", key);
        }
        for (struct rinst *ri = a->instances, *next; ri; ri = next) {
                next = ri->next;
                if (ri->state == R_READY && ri->active == 0)
                        router_inst_kill(ri, "app deleted");
                else if (ri->state != R_DEAD && ri->state != R_BROKEN)
                        ri->state = R_DRAINING;
        }
        a->removed = true;
        router_app_maybe_free(a);
}

int lg_router_stats(lg_router *r, const char *key, struct lg_route_stats *ret) {
        struct app *a = router_find_app(r, key);
        if (!a)
                return -ENOENT;
        *ret = a->st;
        ret->instances = ret->starting = ret->draining = 0;
        for (struct rinst *ri = a->instances; ri; ri = ri->next) {
                ret->instances += ri->state == R_READY;
                ret->starting += ri->state == R_STARTING;
                ret->draining += ri->state == R_DRAINING || ri->state == R_BROKEN; /* going */
        }
        ret->active = a->active;
        ret->queued = a->queued;
        ret->backoff_ms_left = router_backoff_left(a);
        return 0;
}

int lg_router_each_instance(lg_router *r, const char *key,
                            void (*fn)(const struct lg_router_instance *inst, void *ud), void *ud) {
        struct app *a = router_find_app(r, key);
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
        uv_timer_start(&r->tick, router_on_tick, r->tick_ms, r->tick_ms);
        uv_timer_init(loop, &r->recheck);
        r->recheck.data = r;
        uv_timer_init(loop, &r->exit_wait);
        r->exit_wait.data = r;
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
                        router_pending_remove(p);
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
                        if (ri->state == R_BROKEN)
                                router_answer_held(ri, ri->broke);
                        if (ri->state != R_DEAD) {
                                ri->state = R_DEAD;
                                rinst_destroy(ri);
                        }
                        bool last = next == NULL;
                        router_inst_free_if_unused(ri); /* may free a with the last one */
                        if (last)
                                break;
                        ri = next;
                }
                if (!has_instances)
                        router_app_maybe_free(a);
        }
        uv_timer_stop(&r->tick);
        r->tick.data = r;
        r->closing = 4;
        uv_close((uv_handle_t *) &r->tick, router_tick_closed);
        uv_close((uv_handle_t *) &r->recheck, router_tick_closed);
        uv_close((uv_handle_t *) &r->exit_wait, router_tick_closed);
        lg_http_client_close(r->client, router_client_closed, r);
}
