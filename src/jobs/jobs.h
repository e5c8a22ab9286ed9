/* Serverless jobs (`legion submit`, issue 14; docs/jobs.md): a job runs
 * role sandboxes through the node agent (node/agent.h) and deletes them at
 * its end. Two engines behind one interface (engine.h): "dask" (a master
 * running dask-scheduler, a driver running the user's script with the
 * scheduler's address, N executors running dask-worker) and "indexed"
 * (completions copies of any command, parallelism at a time, each index
 * retried, as a Kubernetes indexed Job). Masters kept after a job or
 * deployed alone are Master resources (masters.c); role sandboxes come
 * from warm pools (jobpool.h) when one is ready.
 *
 * Store: kind "Job" (namespaced; spec = the normalized submit spec, status
 * as /work/wt/plan/DESIGN-14.md "Store shapes" and docs/jobs.md say) and
 * kind "Master". Every status change is written to the store and told to
 * the job's watches.
 *
 * Sandboxes: every role sandbox is detachable, under <run_dir>/job-sandboxes.
 * lg_jobs_detach_all leaves them running for the next legiond, whose
 * lg_jobs_restore adopts them and resumes each job; what cannot be adopted
 * is lost (the job ends with the reason that role's loss means), and
 * sandboxes in that root no job or master claims are destroyed.
 *
 * Logs: <jobs_dir>/<ns>/<job>/<role>.log (driver.log, master.log,
 * executor-<i>.log, index-<i>.log), written by legion-init, kept after the
 * sandboxes are gone, removed with the job.
 *
 * Threading: everything here runs on cfg->loop's thread and is not
 * thread-safe; blocking work (sandbox creation, destruction) runs on the
 * agent's thread pool.
 *
 * Callbacks: watch callbacks run from the loop, never from inside the call
 * that caused the change; a callback may remove its own watch or any other.
 *
 * Memory: the library never logs. Functions return >= 0 or a negative
 * errno with err (may be NULL) saying why. Every json_t passed in is only
 * read; struct lg_resource results and json_t results are the caller's
 * (lg_resource_free, lg_resource_list_free, json_decref). The loop, store,
 * agent, net, image store and blob store of the config are the caller's and
 * must outlive the lg_jobs; strings of the config are copied. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"
#include "store/store.h"

typedef struct lg_jobs lg_jobs;
struct lg_agent;
struct lg_net;
struct lg_image_store;
struct lg_blobstore;

struct lg_jobs_config {
        uv_loop_t *loop;
        lg_store *store;
        struct lg_agent *agent;           /* the node agent; required */
        struct lg_net *net;               /* NULL = networking off (dask refused) */
        struct lg_image_store *images;    /* NULL = only the host rootfs */
        struct lg_blobstore *packages;    /* uploaded packages (job files); NULL = none */
        const char *packages_dir;         /* where their extracted trees are (as apps find them) */
        const char *run_dir;              /* sandbox state: <run_dir>/job-sandboxes */
        const char *jobs_dir;             /* logs: <jobs_dir>/<ns>/<job>/ */
        const char *runtimes_dir;         /* bound at /opt/legion/runtime */
        uint64_t cpu_capacity_millis;     /* 0 = 4 x CPUs */
        uint64_t memory_capacity_bytes;   /* 0 = 75% of MemTotal */
        unsigned warm;                    /* "default" pool's ready count; 0 = no pool */
        uint64_t log_max_bytes;           /* per role log; 0 = 10 MiB */
};
int lg_jobs_new(const struct lg_jobs_config *cfg, lg_jobs **ret, struct lg_error *err);
void lg_jobs_free(lg_jobs *jobs);       /* destroys every role sandbox (not the records) */
void lg_jobs_detach_all(lg_jobs *jobs); /* shutting down: leave running roles for the next legiond */
int lg_jobs_restore(lg_jobs *jobs, struct lg_error *err); /* at start: adopt, resume, clean */

/* Jobs. Errors: -EINVAL bad spec (err names the field), -E2BIG more than the
 * node gives jobs, -EEXIST name taken, -ENOENT unknown package, image or
 * master, -ENETUNREACH dask without networking, -EBUSY (delete of a master
 * in use). ret: the stored Job (the caller frees). */
int lg_jobs_submit(lg_jobs *jobs, const char *ns, const json_t *spec, struct lg_resource **ret, struct lg_error *err);
int lg_jobs_get(lg_jobs *jobs, const char *ns, const char *name, struct lg_resource **ret, struct lg_error *err);
int lg_jobs_list(lg_jobs *jobs, const char *ns /* NULL: all */, struct lg_resource_list *ret, struct lg_error *err);
int lg_jobs_stop(lg_jobs *jobs, const char *ns, const char *name, const char *why, struct lg_error *err);
int lg_jobs_delete(lg_jobs *jobs, const char *ns, const char *name, struct lg_error *err);
json_t *lg_job_to_json(const struct lg_resource *r); /* {"name","namespace","uid","createdAt","spec","status"} */
/* role: "driver", "master", "executor", "index"; index for the last two.
 * -ENOENT: no such job or role. */
int lg_jobs_log_path(lg_jobs *jobs, const char *ns, const char *name, const char *role, unsigned index, char *buf,
                     size_t cap);
int lg_jobs_log_active(lg_jobs *jobs, const char *ns, const char *name, const char *role, unsigned index);
/* Told of the job's status as it is now, then of every change (the
 * attach stream, log -f), each on a loop turn of its own (changes within
 * one turn come as one: the latest). A job ends with its final phase,
 * then finishedAt once its last sandbox is gone; the watch stays until
 * unwatched. */
typedef struct lg_jobs_watch lg_jobs_watch;
typedef void (*lg_jobs_watch_cb)(const struct lg_resource *job, void *userdata);
int lg_jobs_watch_add(lg_jobs *jobs, const char *ns, const char *name, lg_jobs_watch_cb cb, void *userdata,
                      lg_jobs_watch **ret, struct lg_error *err);
void lg_jobs_watch_remove(lg_jobs_watch *w); /* NULL is fine */

/* Masters (src/jobs/masters.c). */
int lg_jobs_master_deploy(lg_jobs *jobs, const char *ns,
                          const json_t *spec /* {"name", "engine", "image", "cpu", "memory", "keepAliveSeconds"} */,
                          struct lg_resource **ret, struct lg_error *err);
int lg_jobs_master_get(lg_jobs *jobs, const char *ns, const char *name, struct lg_resource **ret,
                       struct lg_error *err);
int lg_jobs_master_list(lg_jobs *jobs, const char *ns, struct lg_resource_list *ret, struct lg_error *err);
int lg_jobs_master_delete(lg_jobs *jobs, const char *ns, const char *name, struct lg_error *err); /* -EBUSY in use */
json_t *lg_master_to_json(const struct lg_resource *r);

/* Warm pools for roles. spec {"image": ""|ref, "ready": N}. */
int lg_jobs_pool_set(lg_jobs *jobs, const char *name, const json_t *spec, struct lg_error *err);
int lg_jobs_pool_delete(lg_jobs *jobs, const char *name, struct lg_error *err);
json_t *lg_jobs_pools_json(lg_jobs *jobs); /* [{"name","image","ready","making","taken","missed","made","lastError"}] */
