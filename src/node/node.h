/* The node agent: warm pools of placeholder sandboxes and their
 * specialization into instances of an app revision.
 *
 * A pool group keeps `ready` placeholders: sandboxes already created with a
 * language worker started, its imports done, waiting on its control socket.
 * Specializing takes one (or creates one on demand when the pool is empty),
 * mounts the app's code at /code inside it, sends `specialize` and reports
 * when the worker is ready to serve HTTP on the instance's Unix socket. An
 * instance belongs to its app revision for the rest of its life.
 *
 * Everything runs on one libuv loop; callbacks run on it. The sandboxes
 * are made, mounted into, changed and destroyed through the node agent's
 * requests (node/agent.h), off the loop: no call here blocks.
 *
 * Network: placeholders of a pool with `network` get an address while
 * they wait; taking one assigns it to the app's namespace and policy
 * before the code is mounted and the worker specialized, so the code's
 * first packet goes out under its tenant's rules. An instance adopted
 * after a restart keeps its address and is assigned again when its app
 * takes it back.
 *
 * Image instances (node-image.c) run an OCI image's own HTTP server
 * instead of a language worker: a sandbox made from the image's layers
 * (lg_node_config.images), with an address on the node's network (they
 * need it: the router reaches them at "ip:port"), its stdout and stderr
 * in <log_dir>/stdout.log and stderr.log. There is no worker: legiond
 * decides readiness itself (node/probe.h) by connecting to the port, or
 * by GET ready_path answered 2xx/3xx, within ready_timeout_ms. A pool
 * group of runtime "image" keeps warm sandboxes of its image: made
 * (layers, address, cgroup) with no process yet, started at take with
 * the app's command, limits and tenant in one trip; or, with
 * start_process, already serving the pool's own command and ready (a
 * take then only assigns the tenant and limits). ready_cb's failure
 * statuses for them:
 *   -ETIMEDOUT   the port never opened within the timeout
 *   -EPROTO      the readiness GET never answered 2xx/3xx within it
 *   -ECHILD      the process exited before it was ready
 *   -ENOENT      the image is not in the store
 *   -ENETUNREACH no node network (legiond --network off)
 *   other        the sandbox could not be made or started
 * with a message saying why (the last line of its stderr when there is
 * one). exit_cb's status text: "Exited(3)", "OOMKilled", "Killed(9)",
 * followed by ": <last line of stderr>" when there is one. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"

typedef struct lg_node lg_node;
typedef struct lg_instance lg_instance;

struct lg_agent;
struct lg_net;
struct lg_image_store;

struct lg_node_config {
        uv_loop_t *loop;
        struct lg_agent *agent;   /* sandboxes (node/agent.h); NULL = a local one of its own */
        struct lg_net *net;       /* the node's network (net/net.h; the agent's); NULL = off */
        const char *run_dir;      /* sandbox state and instance sockets */
        const char *runtimes_dir; /* runtimes/ of this installation */
        uint64_t specialize_timeout_ms; /* 0 = 30 s */
        struct lg_image_store *images; /* image pools and instances; NULL: refused. The caller's, outlives the node */
        uint64_t ready_timeout_ms;     /* image instances: port open / readiness within this; 0 = 60 s */
};

struct lg_pool_spec {
        const char *name;
        const char *runtime;      /* "python3", "node", "custom", "session", "image" */
        unsigned ready;           /* placeholders kept warm */
        uint64_t cpu_millis;      /* 0 = no quota */
        uint64_t memory_bytes;    /* 0 = 256 MiB */
        uint64_t boost_cpu_millis;/* startup boost; 0 = none */
        unsigned boost_seconds;
        /* Session pools: a writable root of disk_bytes (files under
         * /mnt/data live there) and extra environment for the worker.
         * Placeholders always get a network namespace of their own with
         * only loopback: never the host's. */
        bool writable_root;
        uint64_t disk_bytes;
        const char *const *env;   /* K=V, NULL-terminated; may be NULL */
        /* An address on the node's network (lg_node_config.net; ignored
         * when NULL): a placeholder gets one while it waits, with no
         * tenant (it reaches DNS only); an instance is assigned to its
         * app's namespace (lg_instance_spec) before its code runs.
         * Otherwise the sandbox's network namespace has loopback only.
         * Image pools always have one. */
        bool network;
        /* Runtime "image": the image (an id "sha256:..." or a name in
         * lg_node_config.images); its warm sandboxes are made from it. */
        const char *image;
        /* Placeholder mode "process": the warm sandboxes run the pool's
         * own server (command/args, env above, port, ready_path) and are
         * ready only once it answers; otherwise they wait with no process. */
        bool start_process;
        const char *const *command, *const *args; /* NULL = the image's */
        unsigned port;            /* with start_process: required */
        const char *ready_path;   /* with start_process: NULL = a TCP connect */
        const char *version;      /* language workers: any change of it is a new key; NULL = none */
        unsigned max_unavailable; /* rolling replacement; 0 = 1 */
};

struct lg_pool_stats {
        unsigned ready;           /* placeholders of the current shape waiting (= updated) */
        unsigned starting;        /* placeholders being made */
        uint64_t created, taken, on_demand;
        unsigned failures;        /* creations failed in a row (0 once one succeeds) */
        char last_error[256];     /* why the last creation failed, "" if none */
        unsigned updated, outdated; /* ready of the current key; ready or starting of outgoing ones */
        bool rolling;             /* a rolling replacement is under way */
};

/* What an instance is made for. */
struct lg_instance_spec {
        const char *pool;         /* pool group to take a placeholder from */
        const char *app;          /* "namespace/name" */
        unsigned revision;
        const char *entrypoint;   /* runtime-specific; NULL = the default */
        const char *const *env;   /* K=V, NULL-terminated; may be NULL */
        const char *code_dir;     /* host directory mounted at /code (ro); NULL = none */
        const char *identifier;   /* sessions: the identifier bound to it */
        uint64_t cpu_millis;      /* the instance's own limit after boost */
        /* Pools with network: the instance's egress policy (net.h; a
         * policy of the app's namespace, the part of app before its first
         * '/'), NULL = the namespace's own. */
        const char *net_policy;
        /* Image instances */
        const char *image;           /* id; NULL = the pool's (a pool of runtime "image") */
        const char *const *command, *const *args; /* NULL = the image's (or the pool's started process) */
        unsigned port;               /* required for image instances */
        const char *ready_path;      /* "/healthz": HTTP GET answered 2xx/3xx = ready; NULL = TCP connect */
        uint64_t memory_bytes;       /* 0 = the pool's */
};

/* status < 0: failed, and message says why (the instance is gone). */
typedef void (*lg_instance_ready_cb)(lg_instance *inst, int status, const char *message, void *userdata);
/* The instance died on its own (crash, OOM): status text, e.g. "OOMKilled". */
typedef void (*lg_instance_exit_cb)(lg_instance *inst, const char *status, void *userdata);

int lg_node_new(const struct lg_node_config *cfg, lg_node **ret, struct lg_error *err);
/* Destroy every placeholder and instance, waiting (running the loop)
 * for their destroys; then the agent, if it is the node's own. */
void lg_node_free(lg_node *node);

/* Create or update a pool group; placeholders are made in the background.
 * A new shape (version, image, cpu, memory...) replaces the placeholders
 * gradually, at most spec.max_unavailable fewer ready at a time, and never
 * more than `ready` at once (node-pool.c); the old ones are destroyed, and
 * instances always get the new shape. */
int lg_node_pool_set(lg_node *node, const struct lg_pool_spec *spec, struct lg_error *err);
int lg_node_pool_delete(lg_node *node, const char *name);
int lg_node_pool_stats(lg_node *node, const char *name, struct lg_pool_stats *ret);

/* Start specializing an instance; ready_cb runs exactly once, unless the
 * instance is destroyed first. exit_cb runs if it dies later. */
int lg_node_instance_start(lg_node *node, const struct lg_instance_spec *spec,
                           lg_instance_ready_cb ready_cb, lg_instance_exit_cb exit_cb,
                           void *userdata, lg_instance **ret, struct lg_error *err);
/* Destroy: remove its socket and queue the destroy of its sandbox (off
 * the loop); returns at once, no callback runs after. NULL is fine. */
void lg_instance_destroy(lg_instance *inst);

/* ---- surviving a restart (node-adopt.c) ----
 * lg_node_new adopts the sandboxes a previous legiond left: instances that
 * were serving an app revision wait for it here; placeholders and
 * instances not yet serving are destroyed (replaced); instances whose
 * sandbox could not be adopted are "lost". */

/* Take an adopted instance of app's revision, if one waits: 1 and *ret,
 * already serving (ready_cb is never called for it; exit_cb as usual), or
 * 0 when none is left. */
int lg_node_instance_adopt(lg_node *node, const char *app, unsigned revision, lg_instance_ready_cb ready_cb,
                           lg_instance_exit_cb exit_cb, void *userdata, lg_instance **ret);
/* Each adopted instance not yet taken (lost_why NULL) and each lost one
 * (lost_why says why); identifier is that of a session, or NULL. */
void lg_node_each_adopted(lg_node *node, void (*fn)(const char *app, unsigned revision, const char *identifier,
                                                   const char *lost_why, void *ud),
                          void *ud);
/* After every app and session was restored: destroy the adopted instances
 * nobody took, and report them and the lost ones to log (app, line). */
void lg_node_adopted_release(lg_node *node, void (*log)(const char *app, const char *line, void *ud), void *ud);
/* Shutting down without stopping the workloads: every serving instance is
 * left running (its sandbox detached, its socket and record kept) for the
 * next legiond; destroying its handle afterwards only frees it. */
void lg_node_detach_all(lg_node *node);

struct lg_node_lost {
        char id[40], app[400], identifier[160], why[600];
        unsigned revision;
};

const char *lg_instance_id(const lg_instance *inst);
bool lg_instance_adopted(const lg_instance *inst);       /* taken over after a restart */
const char *lg_instance_socket(const lg_instance *inst); /* HTTP on this Unix socket */
bool lg_instance_cold(const lg_instance *inst);          /* no placeholder was ready */
uint64_t lg_instance_start_ns(const lg_instance *inst);  /* time to ready */
const char *lg_instance_log_dir(const lg_instance *inst);
/* Its address on the node's network ("10.200.0.7"), NULL when it has none. */
const char *lg_instance_address(const lg_instance *inst);
/* The images its sandboxes are made from, for image GC's keep lists:
 * each image id once into ids and, when layers is not NULL, its layer
 * dirs into layers; with warm, those of pool groups and their
 * placeholders too, otherwise only of instances made for an app (taken,
 * adopted or being made). Returns < 0 (-ENOMEM) when an add failed. */
int lg_node_images_in_use(lg_node *node, bool warm, struct lg_strlist *ids, struct lg_strlist *layers);

/* The instance's HTTP server for the router: "unix:/path" (workers) or
 * "10.200.0.7:8080" (images). Valid while the handle is. */
const char *lg_instance_http_address(const lg_instance *inst);
