/* Warm pools for job roles (docs/jobs.md): sandboxes made ahead of use so
 * that a job's executors, driver and indexes start in milliseconds, and
 * the start of a role's sandbox, from a pool or made on demand, with the
 * same result either way.
 *
 * A warm sandbox is made through the node agent at a low CPU priority
 * (LG_AGENT_LOW_PRIO), detachable, under the state root given here
 * (<run>/job-sandboxes), with the id `jw-<hex>`: a rootfs (the host's
 * /usr read-only, or an image's layers), its own namespaces, an address
 * on the node's network with no tenant when networking is on, a cgroup
 * (pids only, so that limits can be set when it is taken), an empty
 * mount point /job and the runtimes directory bound read-only at
 * /opt/legion/runtime; no process runs in it. lg_jobpool_start takes one
 * of a pool with the same rootfs (and network) and, in one trip to the
 * agent's thread pool, binds the role's files read-only at /job, sets its
 * limits (memory, CPU quota), assigns its address to the role's tenant
 * and starts its workload (lg_agent_start with in.start.mount). With none
 * ready, a sandbox is made on demand (id `jr-<hex>`) with the files bound
 * at creation and the workload started in the create's trip: warm =
 * false. The pool then makes a replacement (lg_warm_used, after the
 * start, so that it does not compete with it).
 *
 * Pools of pre-imported Dask processes (lg_jobpool_set_dask) hold warm
 * sandboxes already running Python with `distributed` imported, waiting
 * on their worker control channel: a dask-worker, dask-scheduler or
 * dask-driver role takes one of those first (16 executors registered
 * with their scheduler in 0.35 s instead of 3-8 s on 2 cores).
 *
 * Pools are named ("default": the host rootfs); several may have the same
 * rootfs, and a start takes from any of them. Changing a pool's rootfs
 * destroys its warm sandboxes and makes new ones; lowering its count
 * destroys the extra ones (node/warm.h: backoff after failed makes, the
 * last error kept).
 *
 * What a started role becomes is its owner's (src/jobs: exit watch on the
 * pidfd, status, destroy, detach and adopt through the agent by id);
 * nothing here remembers it. A warm sandbox a previous legiond left is
 * not started, so it died with it (sandbox.h) and lg_sandbox_gc, or the
 * jobs' sweep of the state root, removes what is left.
 *
 * Threading: the loop's thread only, which the agent must share.
 * Callbacks: never from inside the call that submits them; always on the
 * loop. Errors: >= 0 or -errno, err saying why. Memory: everything a
 * call takes is copied; lg_jobpool_json's value is the caller's. Ownership:
 * the agent and the network are the caller's and outlive the pool;
 * lg_jobpool_free destroys the warm sandboxes (waiting, running the loop,
 * for those being made) and abandons the starts under way: their
 * sandboxes are destroyed and their callbacks never run. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"
#include "node/agent.h"

typedef struct lg_jobpool lg_jobpool;

struct lg_jobpool_config {
        uv_loop_t *loop;
        struct lg_agent *agent;   /* required */
        struct lg_net *net;       /* the agent's; NULL = networking off */
        const char *state_root;   /* <run>/job-sandboxes; required */
        /* Bound read-only at /opt/legion/runtime in warm sandboxes; a role
         * asking for another one is made on demand. NULL = none. */
        const char *runtimes_dir;
        /* Pre-imported Dask executors (lg_jobpool_set_dask): where their
         * logs wait for a role (the roles' logs' filesystem: a taken one's
         * log is linked to the role's log_file); NULL = no such pools.
         * log_max_bytes: their cap (0 = 10 MiB). */
        const char *logs_dir;
        uint64_t log_max_bytes;
};

/* -EINVAL: no loop, agent or state root. */
int lg_jobpool_new(const struct lg_jobpool_config *cfg, lg_jobpool **ret, struct lg_error *err);
/* Destroys the warm sandboxes (not started roles). NULL is fine. */
void lg_jobpool_free(lg_jobpool *p);

/* image_id NULL: the host rootfs (n_layers 0); else the image's layer
 * directories, uppermost first. */
struct lg_jobpool_rootfs {
        const char *image_id;
        const char *const *layers;
        size_t n_layers;
};

/* Create the pool name (DNS-1123 label, at most 63 characters) or change
 * it: ready sandboxes kept made. -EINVAL: bad name or rootfs. */
int lg_jobpool_set(lg_jobpool *p, const char *name, const struct lg_jobpool_rootfs *rootfs, unsigned ready,
                   struct lg_error *err);
/* The same for a pool of pre-imported Dask processes: each warm sandbox
 * runs `python3 -I /opt/legion/runtime/python dask-executor` (at nice
 * +10, as it is made), ready once it has imported `distributed`, the
 * commands below, dask.array and dask.bag, waiting on its worker control
 * channel. A role whose command is `dask-worker ARGS`, `dask-scheduler
 * ARGS` or `python3 /opt/legion/runtime/python dask-driver ARGS` takes one
 * when one is ready: its files are bound, limits set, address assigned
 * and the process's priority restored, then `op=specialize` hands it
 * what to run, ARGS, the environment and the working directory, and it
 * runs that in the same process (start_ns: call -> specialize sent). The role's log is the warm one's, linked at
 * log_file (which must not exist yet; its cap is the config's) and its
 * hostname stays the sandbox id. A plain pool or a new sandbox serves it
 * otherwise. -EINVAL: no runtimes_dir or logs_dir in the config, or as
 * lg_jobpool_set. A pool changing kind makes its sandboxes anew. */
int lg_jobpool_set_dask(lg_jobpool *p, const char *name, const struct lg_jobpool_rootfs *rootfs, unsigned ready,
                        struct lg_error *err);
/* Destroys its warm sandboxes. -ENOENT: no such pool. */
int lg_jobpool_delete(lg_jobpool *p, const char *name);
/* [{"name", "image" ("" = host), "kind" ("plain" | "dask-executor"),
 *   "ready" (its target), "readyNow", "making", "taken", "missed",
 *   "made", "lastError"}] */
json_t *lg_jobpool_json(lg_jobpool *p);

/* Start a role's sandbox: a warm one of a pool with the same rootfs when
 * one is ready, else one made now. Everything below is copied. */
struct lg_jobpool_role {
        struct lg_jobpool_rootfs rootfs;
        const char *const *argv, *const *envp; /* argv required; envp NULL or empty = PATH, HOME, LANG */
        const char *cwd, *hostname;             /* NULL = "/", the sandbox id */
        const char *files_dir;                  /* bound read-only at /job; NULL = none */
        const char *runtimes_dir;               /* bound read-only at /opt/legion/runtime; NULL = none */
        const char *log_file;                   /* stdout and stderr (host path, kept after destroy) */
        uint64_t log_max_bytes;                 /* 0 = 1 MiB */
        uint64_t cpu_millis, memory_bytes;      /* 0 = no limit */
        /* An address on the node's network assigned to net_namespace (it
         * must exist: lg_net_namespace_set) with net_policy (NULL or "" =
         * the namespace's); false: loopback only. -EOPNOTSUPP without
         * networking. */
        bool network;
        const char *net_namespace, *net_policy;
};

struct lg_jobpool_started {
        char id[LG_AGENT_ID_MAX]; /* the sandbox (under state_root; detachable) */
        bool warm;                /* taken from a pool */
        bool preimported;         /* a pre-imported Dask process (lg_jobpool_set_dask) */
        char address[64];         /* "" = none */
        int pidfd;                /* the agent's: readable at exit; valid until a destroy is submitted */
        uint64_t start_ns;        /* call -> workload started */
};

/* status >= 0: s is the started role (valid during the call); < 0: it
 * could not be started, nothing is left of it, err says why. */
typedef void (*lg_jobpool_cb)(int status, const struct lg_jobpool_started *s, const struct lg_error *err,
                              void *userdata);
/* 0: cb runs exactly once later (status < 0: nothing is left of it).
 * < 0: nothing was started, cb never runs: -EINVAL (no argv, a relative
 * path, a bad namespace or policy name, err names it), -EOPNOTSUPP
 * (network without networking). */
int lg_jobpool_start(lg_jobpool *p, const struct lg_jobpool_role *role, lg_jobpool_cb cb, void *userdata,
                     struct lg_error *err);
