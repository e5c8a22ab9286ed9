/* What the router's files share. router.c: apps, their instances and
 * crash loops, the API; router-forward.c: requests, the queue, and
 * forwarding with streaming in both directions; router-scale.c: scaling
 * out and the tick (concurrency samples, idle instances, minInstances).
 *
 * Lifetimes: an app owns its instances (struct rinst) and its queue. A
 * forwarded request (struct fwd) references its instance; an instance is
 * freed only once no forward references it. Forwards stream without
 * copying: each body piece is written with a completion callback while the
 * source is paused, and the source resumes when the write is done.
 *
 * One libuv loop, not thread-safe, as router.h says. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

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
/* How long a broken instance waits for its exit report (router.c,
 * "Broken instances"): the provider learns why a process ended a little
 * after its sockets closed (the agent reaps it off the loop). */
#define EXIT_WAIT_MS 2000

/* R_BROKEN: a forward failed on its connection; it takes no request and
 * waits for its exit report, or EXIT_WAIT_MS, before it goes. */
enum rstate { R_STARTING, R_READY, R_DRAINING, R_BROKEN, R_DEAD };

struct fwd;

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
        /* R_BROKEN: until when (now_ms) its exit report is waited for, the
         * connection's error, and the forwards whose 502 waits for it
         * (linked by next). */
        uint64_t broken_until;
        char broke[256];
        struct fwd *held;
        char exit_text[320];    /* "instance ID exited: Exited(4): ..." once reported; "" before */
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
        bool held;               /* in ri->held, its 502 waiting for the exit report */
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
         * first requests of an instance left out (router_scale_up). */
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
        uv_timer_t recheck;        /* scale_up again while a queue waits (router_scale_up) */
        uv_timer_t exit_wait;      /* the first broken instance's wait ends (router.c) */
        /* How long instances took to be ready, as the router saw it, with
         * a placeholder and without; 0 = none seen yet. */
        uint64_t start_warm_ns, start_cold_ns;
        lg_router_log_fn log;
        void *log_data;
        int closing; /* handles still closing after lg_router_free */
};

/* router.c */
void router_log(struct app *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct app *router_find_app(lg_router *r, const char *key);
void router_app_maybe_free(struct app *a); /* a removed app with nothing left goes */
void router_inst_free_if_unused(struct rinst *ri);
void router_inst_kill(struct rinst *ri, const char *why); /* why NULL: not logged */
/* A forward to a ready or draining instance failed on its connection
 * (error: the connection's): R_BROKEN, waiting for its exit report. */
void router_inst_broke(struct rinst *ri, const char *error);
/* expect_ns: how long it should take to be ready (router-scale.c);
 * -EAGAIN while the app backs off. */
int router_start_instance(struct app *a, uint64_t expect_ns);
/* Crash loops: the wait left (0: none), instances of the current revision
 * that are ready or starting, the end of a streak, the 503. */
uint64_t router_backoff_left(const struct app *a);
unsigned router_live_instances(const struct app *a);
void router_streak_end(struct app *a, const struct rinst *ri, const char *why);
void router_respond_backoff(struct app *a, struct lg_http_request *req);

/* router-forward.c */
void router_dispatch(struct app *a);           /* queued requests to free slots; scale out */
void router_pending_remove(struct pending *p); /* off the queue; the caller answers it */
/* Answer the forwards held by a broken instance: 502 saying detail. ri
 * stays (not R_DEAD yet); the forwards go. */
void router_answer_held(struct rinst *ri, const char *detail);

/* router-scale.c */
void router_capacity(const struct app *a, unsigned *live, unsigned *free_slots);
void router_scale_up(struct app *a);
void router_on_tick(uv_timer_t *t);
void router_on_recheck(uv_timer_t *h);

static inline uint64_t now_ms(void) { return lg_now_ns() / 1000000; }

static inline unsigned concurrency(const struct app *a) { return a->cfg.concurrency ? a->cfg.concurrency : 1; }
static inline unsigned max_instances(const struct app *a) { return a->cfg.max_instances ? a->cfg.max_instances : 10; }
static inline unsigned queue_max(const struct app *a) {
        return a->cfg.queue_max ? a->cfg.queue_max : 100 * max_instances(a);
}
static inline unsigned timeout_s(const struct app *a) { return a->cfg.timeout_s ? a->cfg.timeout_s : 60; }
static inline uint64_t idle_timeout_ms(const struct app *a) {
        if (a->cfg.idle_timeout_ms)
                return a->cfg.idle_timeout_ms;
        return (uint64_t) (a->cfg.idle_timeout_s ? a->cfg.idle_timeout_s : 300) * 1000;
}
