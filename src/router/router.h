/* The router: the data path of functions. For each app revision it keeps
 * its instances, forwards requests to them over keep-alive Unix-socket
 * connections with a hard per-instance concurrency limit, holds what they
 * cannot take in a bounded queue with a deadline (429 when full, 504 when
 * the deadline passes), answers 502 when an instance fails mid-request and
 * replaces it, scales out under load and back to zero when idle.
 *
 * Scaling out: a request that finds no free slot waits in the queue, and
 * the free slots of instances still starting count as capacity (as
 * Knative's activator counts capacity in flight). Beyond that, an instance
 * is started only when waiting for it beats waiting for a slot: when the
 * queue, worked off by the ready and starting instances at the observed
 * time per request, would take longer to drain than a new instance takes
 * to be ready (start times seen so far, with a placeholder when the
 * provider has one waiting, else without); at most 4 start at once, up to
 * maxInstances. So a burst that the first instances answer within
 * milliseconds starts none that would come up after it is over, and slow
 * requests start as many as their queue needs.
 * Scaling in: idle instances (past idleTimeoutSeconds without a request)
 * are destroyed, but never below minInstances nor below what the average
 * concurrency over the stable window (60 s) needs.
 *
 * Crash loops: a failure is a start that fails (the provider's status,
 * mapped to a reason: -ETIMEDOUT PortNeverOpened, -EPROTO ReadinessFailed,
 * -ECHILD ExitedAtStart, -ENOENT ImageMissing, else StartFailed) or an
 * instance of the current revision exiting on its own within 60 s of
 * being ready (Crashed). The requests a failed start leaves with no
 * instance get 502 naming the reason. After the first failure in a row
 * the next start may come at once; after the n-th (n >= 2), none before
 * backoff_ms * 2^(n-2), at most 32 * backoff_ms (legiond
 * --app-backoff-ms, default 1000), as pods' CrashLoopBackOff. While that
 * wait runs and no instance is live, requests get 503 CrashLoopBackOff
 * with Retry-After, and minInstances waits too. An instance that answers
 * a request, or stays up 60 s, ends the streak; so does a new revision.
 * Each failure and the end of a streak are app log lines. An instance
 * whose connection fails (its process died, most often) takes no more
 * requests and waits up to 2 s for its exit report, so that the app's log,
 * the 502s of the requests it broke and the failure say how it ended;
 * without a report it is destroyed then and counts as Crashed too.
 *
 * Instances come from a provider (struct lg_router_provider_ops below), so
 * the router knows nothing of sandboxes and runs in tests against a fake.
 *
 * Threading: one libuv loop, not thread-safe. Callbacks (log, provider
 * start/destroy) run on it. Memory: everything passed in is copied; the
 * router never logs except through log. Errors: >= 0 or a negative errno,
 * with struct lg_error. */
#pragma once

#include <stdint.h>
#include <uv.h>

#include "common/util.h"
#include "http/http.h"

typedef struct lg_router lg_router;

/* Called with app log lines (instance events, specialization errors). */
typedef void (*lg_router_log_fn)(const char *key, const char *line, void *userdata);

/* ---- where instances come from ------------------------------------------
 * The router asks a provider (legiond: the node agent through
 * src/node/node-provider.h; tests: a fake) for instances through this ops
 * table. Calls carry everything the provider needs and name an instance by
 * the handle start returns; the provider never sees the router's structures
 * (ud is only handed back). All on the router's loop; callbacks never run
 * from inside start or destroy. */

/* What an instance is made for (copied by start as it needs). */
struct lg_router_instance_spec {
        const char *pool;         /* pool group to take a placeholder from */
        const char *app;          /* "namespace/name" */
        unsigned revision;
        const char *entrypoint;   /* NULL = the runtime's default */
        const char *const *env;   /* K=V, NULL-terminated; may be NULL */
        const char *code_dir;     /* host directory mounted at /code; NULL = none */
        const char *identifier;   /* sessions: the identifier bound to it */
        uint64_t cpu_millis;
        const char *net_policy;   /* its egress policy (net.h); NULL = its namespace's */
        /* Image instances (container apps); image NULL = a language worker. */
        const char *image;        /* image id "sha256:..."; NULL = the pool's */
        const char *const *command, *const *args; /* NULL-terminated; NULL = the image's */
        unsigned port;            /* its HTTP server's port */
        const char *ready_path;   /* "/healthz": HTTP GET 2xx/3xx = ready; NULL = TCP connect */
        uint64_t memory_bytes;    /* 0 = the pool's */
};

/* A ready instance; the strings are valid during the callback only. */
struct lg_router_instance_info {
        const char *id;           /* for logs and `legion app logs` */
        const char *address;      /* its HTTP server: "unix:/path" (see lg_http_upstream_new) */
        const char *log_dir;      /* NULL: none */
        const char *net_address;  /* its address on the node's network; NULL: none */
        bool cold;                /* no placeholder was ready */
        bool adopted;             /* running since before a legiond restart */
        uint64_t start_ns;        /* how long the provider took to make it ready */
};

/* Exactly once per start unless destroy comes first: status 0 and info, or
 * status < 0 and message (the instance is then gone: no destroy). The
 * status names the reason (see "Crash loops" above). */
typedef void (*lg_router_ready_cb)(void *ud, int status, const char *message,
                                   const struct lg_router_instance_info *info);
/* A ready instance died on its own (crash, OOM): status text, e.g.
 * "OOMKilled". It is gone: no destroy. */
typedef void (*lg_router_exit_cb)(void *ud, const char *status);

struct lg_router_provider_ops {
        /* Start making an instance; *handle names it from now on. On
         * failure (< 0, err set) no callback runs. */
        int (*start)(void *provider, const struct lg_router_instance_spec *spec, lg_router_ready_cb ready,
                     lg_router_exit_cb exited, void *ud, uint64_t *handle, struct lg_error *err);
        /* Destroy a live instance (starting or ready); no callback for it
         * runs afterwards. */
        void (*destroy)(void *provider, uint64_t handle);
        /* Optional (NULL: none assumed): how many instances of pool could
         * be ready at once, i.e. placeholders waiting. Scaling uses it to
         * tell how soon a new instance would be ready. */
        unsigned (*placeholders)(void *provider, const char *pool);
        /* Take back an instance of app's revision that a previous legiond
         * left running (may be NULL: none ever). 1 with *handle and *info
         * (its strings valid until the next call on the provider) for an
         * instance already ready; 0 when none is left. No callback runs
         * from inside; exited may run later, as for a started one. */
        int (*adopt)(void *provider, const char *app, unsigned revision, lg_router_ready_cb ready,
                     lg_router_exit_cb exited, void *ud, uint64_t *handle, struct lg_router_instance_info *info);
};

struct lg_router_config {
        uv_loop_t *loop;
        const struct lg_router_provider_ops *provider; /* must outlive the router */
        void *provider_data;
        lg_router_log_fn log;     /* may be NULL */
        void *log_data;
        /* Period of the scaling tick (concurrency samples, idle and
         * minInstances checks); 0 = 1000. Tests use a few ms. */
        unsigned tick_ms;
        /* Crash-loop backoff base (see "Crash loops" above); 0 = 1000. */
        unsigned backoff_ms;
};

struct lg_route_config {
        const char *key;          /* "namespace/name" */
        unsigned revision;
        const char *pool;         /* pool group of its placeholders */
        const char *entrypoint;
        const char *const *env;   /* K=V, NULL-terminated */
        const char *code_dir;     /* NULL: no code (sessions) */
        const char *identifier;   /* sessions: sent with specialize */
        uint64_t cpu_millis;
        const char *net_policy;   /* instances' egress policy; NULL = the namespace's. Another
                                   * name (not another content) replaces the instances, as a
                                   * new revision does */
        unsigned concurrency;     /* per instance; 0 = 1 */
        unsigned min_instances;
        unsigned max_instances;   /* 0 = 10 */
        unsigned idle_timeout_s;  /* 0 = 300 */
        unsigned idle_timeout_ms; /* when set, instead of idle_timeout_s (tests) */
        unsigned timeout_s;       /* request deadline incl. queueing; 0 = 60 */
        unsigned queue_max;       /* 0 = 100 per allowed instance */
        /* Image apps (see lg_router_instance_spec); image NULL = none. */
        const char *image;
        const char *const *command, *const *args;
        unsigned port;
        const char *ready_path;
        uint64_t memory_bytes;
};

struct lg_route_stats {
        unsigned revision;
        unsigned instances, starting, draining;
        unsigned active, queued;
        uint64_t requests, cold_starts, errors_5xx, rejected_429, timeouts_504;
        uint64_t cold_start_ns_last, cold_start_ns_total;
        uint64_t cold_start_ns_min, cold_start_ns_max;
        /* Crash loops (of the current revision; a new one starts clean). */
        unsigned failures;            /* failed starts or early exits in a row; 0 once one serves */
        uint64_t backoff_ms_left;     /* 0: not backing off */
        char last_reason[32];         /* "PortNeverOpened", "ReadinessFailed", "ExitedAtStart", "Crashed",
                                       * "ImageMissing", "StartFailed"; "" none. Kept when a streak ends */
        char last_message[256];       /* printable (lg_printable_message), "" none */
        int64_t last_failure_unix_ms; /* 0: none */
};

int lg_router_new(const struct lg_router_config *cfg, lg_router **ret, struct lg_error *err);
/* Destroy every instance, fail queued requests with 503. */
void lg_router_free(lg_router *r);

/* Add an app or move it to a new revision: the old revision's instances
 * finish their requests (drain) and are destroyed, never reused. The same
 * revision again only updates scaling settings. */
int lg_router_set(lg_router *r, const struct lg_route_config *cfg, struct lg_error *err);
/* Remove an app: queued requests get 404, instances are drained. */
void lg_router_remove(lg_router *r, const char *key);

/* Forward a request (in LG_HTTP_BODY_STREAM mode) to key's instances;
 * target is the path and query the function sees ("/", "/x?y=1"). */
void lg_router_handle(lg_router *r, struct lg_http_request *req, const char *key, const char *target);
/* A request body the caller has already read (to check it before it
 * commits to anything). */
struct lg_router_body {
        char *data; /* malloc'd; NULL for none */
        size_t len;
};
/* The same with the body read by the caller: it is sent instead of the
 * request's own, and always freed by the router (also when the request is
 * refused or aborted). */
void lg_router_handle_body(lg_router *r, struct lg_http_request *req, const char *key, const char *target,
                           struct lg_router_body body);

int lg_router_stats(lg_router *r, const char *key, struct lg_route_stats *ret);
/* One live instance, as lg_router_each_instance shows it; the strings
 * are valid during the call. */
struct lg_router_instance {
        const char *id;
        const char *log_dir;     /* NULL: none */
        const char *net_address; /* "" = none */
        bool ready;              /* serving the app's current generation */
};
/* Calls fn for each live instance of the app that has reported (its log
 * directory for `legion app logs`, its address for the app's status);
 * returns how many. */
int lg_router_each_instance(lg_router *r, const char *key,
                            void (*fn)(const struct lg_router_instance *inst, void *ud), void *ud);
