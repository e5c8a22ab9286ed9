/* What the jobs library's files share (jobs.c: records, specs, capacity,
 * the Pending queue, stop, delete, watch; jobs-run.c: role sandboxes,
 * their exit, destroy, metering; jobs-restore.c: adoption after a
 * restart; engine-*.c: the engines behind engine.h; masters.c: Master
 * resources; jobpool.c: warm pools).
 *
 * Everything runs on the loop of struct lg_jobs. Sandboxes are the node
 * agent's (node/agent.h), named by id; every role sandbox is detachable
 * under jobs->state_root (<run_dir>/job-sandboxes).
 *
 * The calls between jobs.c and masters.c (H2) are in "Masters" below:
 * a job acquires a master (granted through a callback with its address,
 * or a reason to wait), releases it at its end; masters take capacity
 * like jobs do, start their scheduler sandbox with jobs_sandbox_start,
 * watch it with jobs_exit_watch_start and claim their sandboxes at
 * restore so that the orphan sweep leaves them. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "image/image.h"
#include "jobs/jobs.h"
#include "net/net.h"
#include "node/agent.h"
#include "pkg/pkg.h"
#include "sandbox/sandbox.h"
#include "store/store.h"

#define JOBS_SANDBOX_DIR "job-sandboxes"
#define JOBS_DASK_PORT 8786
#define JOBS_KIND "Job"
#define JOBS_MASTER_KIND "Master"

struct jobs_masters; /* masters.c's state */
struct lg_jobpool;   /* jobpool.h */
struct job;
struct role;
struct jobs_engine;

struct lg_jobs {
        uv_loop_t *loop;
        lg_store *store;
        lg_agent *agent;
        lg_net *net;                  /* NULL = networking off */
        lg_image_store *images;       /* NULL = host rootfs only */
        struct lg_blobstore *packages;
        char *packages_dir;
        char *state_root;             /* <run_dir>/job-sandboxes */
        char *jobs_dir;
        char *runtimes_dir;
        uint64_t cpu_cap, mem_cap;    /* what the node gives jobs and masters */
        uint64_t cpu_used, mem_used;  /* held by admitted jobs and existing masters */
        unsigned warm;
        uint64_t log_max_bytes;
        struct job *jobs;             /* jobs this legiond drives (not final, or roles being destroyed) */
        struct lg_jobs_watch *watches;
        struct lg_jobpool *pool;      /* NULL until jobpool lands / warm 0 */
        struct jobs_masters *masters; /* masters.c */
        char **claimed;               /* restore: sandboxes adopted (the sweep leaves them) */
        size_t n_claimed, cap_claimed;
        uv_idle_t kick;               /* pending jobs try again on the next loop turn */
        bool kick_armed;
        bool detaching;               /* lg_jobs_detach_all: roles are left running */
        bool freeing;
        int pending_reqs;             /* agent requests under way (lg_jobs_free waits) */
};

/* ---- time ------------------------------------------------------------------ */

int64_t jobs_now_ms(void);                                  /* wall clock, epoch ms */
void jobs_format_ms(int64_t ms, char *buf, size_t cap);     /* RFC 3339 with milliseconds (>= 32 bytes) */
int jobs_parse_ms(const char *s, int64_t *ret);             /* the inverse (seconds precision accepted) */

/* ---- capacity (jobs.c) ----------------------------------------------------- */

/* Take cpu/mem of the node's job capacity: -E2BIG (err says so) when it is
 * more than the whole capacity, -EAGAIN when more than is free now
 * (waiting: "4 vCPU and 8 GiB (free now: 2 vCPU, 30 GiB)"). */
int jobs_capacity_take(lg_jobs *jobs, uint64_t cpu_millis, uint64_t memory_bytes, char *waiting, size_t cap,
                       struct lg_error *err);
/* Give it back; pending jobs are tried again (jobs_kick). */
void jobs_capacity_give(lg_jobs *jobs, uint64_t cpu_millis, uint64_t memory_bytes);
/* Something a pending job may wait for freed (capacity, a master):
 * pending jobs try again in submit order, on the next loop turn. */
void jobs_kick(lg_jobs *jobs);

/* ---- rootfs and files ------------------------------------------------------ */

/* An image ref to its image (layers); "" or NULL = host rootfs (*ret
 * NULL). -ENOENT: not in the store. */
int jobs_image_resolve(lg_jobs *jobs, const char *image, struct lg_image **ret, struct lg_error *err);
/* The extracted tree of an uploaded package ("sha256:<hex>" or "<hex>").
 * -ENOENT: unknown package. */
int jobs_package_dir(lg_jobs *jobs, const char *package, char *buf, size_t cap, struct lg_error *err);

/* ---- role sandboxes (jobs-run.c) ------------------------------------------ */

/* One role's sandbox: the fields of lg_jobpool_role (jobpool.h). Copied
 * by jobs_sandbox_start. */
struct jobs_sandbox {
        const char *image_id;             /* NULL = host rootfs */
        const char *const *layers;
        size_t n_layers;
        const char *const *argv, *const *envp;
        const char *cwd, *hostname;
        const char *files_dir;            /* bound read-only at /job; NULL = none */
        const char *runtimes_dir;         /* bound read-only at /opt/legion/runtime; NULL = none */
        const char *log_file;
        uint64_t log_max_bytes;
        uint64_t cpu_millis, memory_bytes;
        bool network;                     /* an address on the node's network */
        const char *net_namespace;        /* assigned to it (its egress policy) */
        const char *net_policy;
};
struct jobs_started {
        char id[LG_AGENT_ID_MAX];         /* the sandbox (detachable, under state_root) */
        bool warm;                        /* taken from a warm pool */
        char address[64];                 /* "" = none */
        int pidfd;                        /* the agent's: readable at exit; valid until a destroy is submitted */
        uint64_t start_ns;                /* call -> workload started */
};
typedef void (*jobs_start_cb)(int status, const struct jobs_started *s, const struct lg_error *err, void *userdata);
/* Make (or take warm) and start a sandbox. 0: cb runs exactly once, later
 * (status < 0: nothing is left of it). */
int jobs_sandbox_start(lg_jobs *jobs, const struct jobs_sandbox *sb, jobs_start_cb cb, void *userdata,
                       struct lg_error *err);
/* Destroy a sandbox at the agent; done(arg) once it is gone (may be NULL). */
void jobs_sandbox_destroy(lg_jobs *jobs, const char *id, void (*done)(void *arg), void *arg);
/* Adopt a sandbox of state_root left by a previous legiond (restore).
 * cb: status < 0 when it could not be adopted (it is destroyed then);
 * s->address: its address, assigned again to net_namespace when given. */
int jobs_sandbox_adopt(lg_jobs *jobs, const char *id, const char *net_namespace, jobs_start_cb cb, void *userdata,
                       struct lg_error *err);
/* Leave a sandbox running for the next legiond. */
void jobs_sandbox_detach(lg_jobs *jobs, const char *id);

/* Exit watch: the pidfd polled on the loop, then lg_agent_status. cb runs
 * once, with how the workload ended (OOM: st->kind == LG_EXIT_OOM, or an
 * OOM kill counted in its cgroup), unless stopped first. Stop it before
 * submitting the sandbox's destroy (the pidfd closes then). */
typedef struct jobs_exit_watch jobs_exit_watch;
typedef void (*jobs_exit_cb)(const struct lg_sandbox_status *st, const char *exit /* "Exited(0)", "OOMKilled" */,
                             void *userdata);
int jobs_exit_watch_start(lg_jobs *jobs, const char *id, int pidfd, jobs_exit_cb cb, void *userdata,
                          jobs_exit_watch **ret);
void jobs_exit_watch_stop(jobs_exit_watch *w); /* NULL is fine */

/* Restore: a sandbox of state_root someone took back; the orphan sweep
 * (after every restore) destroys those nobody claimed. */
void jobs_claim(lg_jobs *jobs, const char *id);

/* ---- metering --------------------------------------------------------------- */

/* One role instance's use added to usage ({"vcpuSeconds",
 * "memoryGiBSeconds", "seconds", "byRole": {role: {same three}}}):
 * seconds = ceil(finished - started), at least 1 once started. */
void jobs_usage_add(json_t *usage, const char *role, int64_t started_ms, int64_t finished_ms, uint64_t cpu_millis,
                    uint64_t memory_bytes);
json_t *jobs_usage_new(void);

/* ---- masters (masters.c, H2) ----------------------------------------------- */

struct jobs_master_want {
        const char *ns, *job;
        const char *engine;               /* "dask" */
        const char *image;                /* "" = host rootfs */
        const char *name;                 /* spec master.name: that Master; "" = none named */
        bool keep_alive;                  /* a Master kept after the job (<job>-master or master_name) */
        const char *master_name;
        uint64_t keep_alive_seconds;
        uint64_t cpu_millis, memory_bytes; /* masterResources */
};
struct jobs_master_grant {
        char name[LG_STORE_NAME_MAX + 1];
        char address[80];                 /* "tcp://IP:8786" */
        bool reused, kept;
};
typedef void (*jobs_master_cb)(int status, const struct jobs_master_grant *g, const struct lg_error *err,
                               void *userdata);
/* A master for a starting job:
 *   1        it is (or becomes) the job's: cb runs exactly once, later
 *            (status 0: ready, g filled; < 0: it could not be made);
 *   0        none named, none kept that fits, no keepAlive: the job makes
 *            its own master as one of its roles;
 *   -EAGAIN  busy: waiting says "master m1 is busy with job j2"; the job
 *            asks again when jobs_kick tells it;
 *   -ENOENT  the named master does not exist; other -errno. */
int jobs_master_acquire(lg_jobs *jobs, const struct jobs_master_want *w, jobs_master_cb cb, void *userdata,
                        char *waiting, size_t cap, struct lg_error *err);
/* The job stopped before cb ran: cb never runs. */
void jobs_master_cancel(lg_jobs *jobs, const char *ns, const char *job);
/* The job is over: its master is idle again (kept) for the next. */
void jobs_master_release(lg_jobs *jobs, const char *ns, const char *master, const char *job);
/* masters.c -> jobs.c: the master the job holds died (MasterLost). */
void jobs_master_lost(lg_jobs *jobs, const char *ns, const char *job, const char *why);
int jobs_masters_new(lg_jobs *jobs, struct lg_error *err);
void jobs_masters_free(lg_jobs *jobs);
void jobs_masters_detach_all(lg_jobs *jobs);
/* Adopt kept and deployed masters' sandboxes (jobs_claim each). */
int jobs_masters_restore(lg_jobs *jobs, struct lg_error *err);
