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
        uv_idle_t notify;             /* watches are told on a loop turn of their own */
        bool notify_armed;
        bool handles_open;
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
bool jobs_claimed(const lg_jobs *jobs, const char *id);

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
/* A master for a starting job (named, else an idle Master of the
 * namespace with the same engine and image, else with keep_alive a new
 * Master `<job>-master` or master_name, its capacity its own: -EAGAIN
 * with waiting saying what is not free, -E2BIG):
 *   1        it is (or becomes) the job's: cb runs exactly once, later
 *            (status 0: ready, g filled; < 0: it could not be made);
 *   0        none named, none kept that fits, no keepAlive: the job makes
 *            its own master as one of its roles;
 *   -EAGAIN  busy: waiting says "master m1 is busy with job j2"; the job
 *            asks again when jobs_kick tells it;
 *   -ENOENT  the named master does not exist; other -errno. */
int jobs_master_acquire(lg_jobs *jobs, const struct jobs_master_want *w, jobs_master_cb cb, void *userdata,
                        char *waiting, size_t cap, struct lg_error *err);
/* cb with status < 0: the job holds no master. A master lost after its
 * grant is told with jobs_master_lost (the job releases it then). */
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
/* Check and fill in a Master spec {"name", "engine", "image", "cpu",
 * "memory", "keepAliveSeconds"}: *ret without "name" (the caller's),
 * every default filled in, name copied (LG_STORE_NAME_MAX + 1). -EINVAL
 * naming the field. */
int jobs_master_spec(const json_t *spec, char *name, json_t **ret, struct lg_error *err);
/* "<jobs_dir>/<ns>/masters/<name>/master.log": a Master's log (a job
 * served by one shows it as its master's). -ENOENT: not names. */
int jobs_master_log_path(lg_jobs *jobs, const char *ns, const char *name, char *buf, size_t cap);
/* The last line of a log file, printable ("" when none): for messages
 * such as "driver exited with 1: <line>". */
void jobs_log_last_line(const char *path, char *buf, size_t cap);

/* ---- jobs and their roles (jobs.c, jobs-run.c, engine-*.c) ----------------- */

enum job_phase { JOB_PENDING, JOB_STARTING, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_STOPPED };
enum role_state { ROLE_WAITING, ROLE_STARTING, ROLE_RUNNING, ROLE_EXITED, ROLE_DELETED, ROLE_LOST };

/* One instance of a role (an index's attempt k is its own instance). */
struct role {
        struct job *job;
        char kind[12];                 /* "master", "driver", "executor", "index" */
        unsigned index, attempt;
        enum role_state state;
        char sb[LG_AGENT_ID_MAX];      /* its sandbox, "" before one is made */
        bool has_sb;                   /* the sandbox exists and no destroy was submitted */
        bool starting;                 /* jobs_sandbox_start under way */
        bool adopting;                 /* jobs_sandbox_adopt under way (restore) */
        bool killed;                   /* role_kill: destroyed as soon as it is made */
        int pidfd;                     /* adopted: watched once every role is back */
        jobs_exit_watch *watch;
        char exit[64];                 /* "Exited(0)", "OOMKilled", "" */
        bool warm;
        uint64_t cpu_millis, memory_bytes;
        double ready_ms;               /* admission (or the call) -> workload started */
        int64_t started_ms, finished_ms; /* epoch ms, 0 = not yet */
        char address[64];
};

struct job {
        lg_jobs *jobs;
        struct job *next;
        char ns[LG_STORE_NAME_MAX + 1], name[LG_STORE_NAME_MAX + 1], uid[40];
        json_t *spec;                  /* normalized */
        const struct jobs_engine *eng;
        void *eng_state;               /* the engine's own */
        enum job_phase phase;
        char reason[32], message[512], waiting[256];
        int64_t submitted_ms, started_ms, finished_ms;
        uint64_t admitted_ns;          /* lg_now_ns at admission: readyMs */
        struct role **roles;
        size_t n_roles, cap_roles;
        uint64_t need_cpu, need_mem;   /* what admission takes */
        bool holds_capacity;
        bool own_master;               /* its master is one of its roles */
        struct jobs_master_grant master; /* address "" = none yet */
        bool master_held;              /* granted by masters.c: released at the end */
        bool master_acquiring;         /* masters.c's cb due */
        struct lg_image *img;          /* NULL = host rootfs */
        char *files_dir;               /* the package's tree, NULL = none */
        int busy;                      /* starts, adopts, destroys under way */
        uv_timer_t deadline, meter, engine_timer;
        int handles;                   /* open handles */
        bool handles_closed;
        bool deleted;                  /* its record is gone: write nothing */
        bool unlinked;                 /* out of jobs->jobs */
        bool detached;                 /* legiond shutting down: roles left running */
        bool done_written;             /* finishedAt written */
};

static inline bool job_final(const struct job *j) { return j->phase >= JOB_SUCCEEDED; }
const char *job_phase_name(enum job_phase p);
int job_phase_parse(const char *s, enum job_phase *ret);

/* jobs.c */
/* The submit spec checked and normalized (every default filled in). */
int jobs_spec_normalize(lg_jobs *jobs, const json_t *in, json_t **ret, struct lg_error *err);
/* cpu and memory of a {"cpu", "memory"} field of a normalized spec. */
void jobs_spec_resources(const json_t *spec, const char *field, uint64_t *cpu_millis, uint64_t *memory_bytes);
/* A job in memory, appended to jobs->jobs (submit order). */
struct job *job_new(lg_jobs *jobs, const char *ns, const char *name, const char *uid, const json_t *spec);
/* Restore: its state from the stored status; then admitted, resumed or settled. */
int job_restore_record(lg_jobs *jobs, const struct lg_resource *r);
/* Write the status (and tell the watches, on the next loop turn). */
void job_changed(struct job *j);
/* The job's final state; its roles are destroyed, finishedAt when the last
 * is gone. A second call does nothing. */
void job_finish(struct job *j, enum job_phase phase, const char *reason, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Back to Pending (a busy master): capacity given back, waitingFor set. */
void job_requeue(struct job *j, const char *waiting);
/* The deadline (maxDurationSeconds from startedAt) and the metering writes. */
void job_arm_timers(struct job *j);
/* Starting -> Running (first index, or the driver, started). */
void job_set_running(struct job *j);
/* Something the job held is gone (a role's destroy, a start that came
 * back): memory freed and finishedAt written once nothing is left. */
void job_unbusy(struct job *j);
/* "<jobs_dir>/<ns>/<job>" */
void job_log_dir(const struct job *j, char *buf, size_t cap);

/* jobs-run.c */
struct role *role_new(struct job *j, const char *kind, unsigned index, unsigned attempt, uint64_t cpu_millis,
                      uint64_t memory_bytes);
/* "driver", "master", "executor-2", "index-5" */
void role_label(const struct role *r, char *buf, size_t cap);
/* Start its sandbox with argv and the job's environment plus extra (K=V,
 * NULL-terminated, may be NULL). The engine is told by role_started,
 * role_exited or role_failed. -errno: nothing started (role_failed not
 * called). */
int role_start(struct role *r, const char *const *argv, const char *const *extra_env);
/* Kill it: its sandbox destroyed (a start under way: as soon as it is
 * made), state Deleted. Nothing is told to the engine. */
void role_kill(struct role *r);
/* Restore: take back its sandbox (state Running in the record). */
int role_adopt(struct role *r);
/* Shutting down: leave its sandbox running. */
void role_detach(struct role *r);
void role_free(struct role *r);
/* Roles still running (or being started). */
unsigned job_live_roles(const struct job *j);
/* The status "roles" and "usage" (now: running roles up to now). */
json_t *roles_json(const struct job *j);
json_t *usage_json(const struct job *j, int64_t now_ms);
/* Load a role of a stored status (restore). */
struct role *role_load(struct job *j, const json_t *doc);
/* The last line of a role's log (messages), "" when none. */
void role_last_log_line(const struct role *r, char *buf, size_t cap);
