/* The engines behind one interface: what differs between a dask job and
 * an indexed one (the spec's fields, the roles made, what an exit means)
 * is here; jobs.c and jobs-run.c hold what is common (records, capacity,
 * the Pending queue, sandboxes, exit watches, destroy, metering).
 *
 * Every op runs on the loop. An op that ends the job calls job_finish
 * (jobs-internal.h's job API below); the engine never destroys sandboxes
 * itself: role_kill does. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "jobs/jobs-internal.h"

struct jobs_engine {
        const char *name; /* "dask", "indexed" */
        /* Check and fill in the engine's fields of a spec being normalized
         * (the common fields are done). -EINVAL with err naming the field. */
        int (*normalize)(lg_jobs *jobs, json_t *spec, struct lg_error *err);
        /* What the job holds of the node's capacity while it runs; with
         * own_master, its own master too. */
        void (*need)(const json_t *spec, bool own_master, uint64_t *cpu_millis, uint64_t *memory_bytes);
        /* Does a job of this spec make its own master unless masters.c has
         * one for it? (counted in its need) */
        bool (*wants_master)(const json_t *spec);
        /* Admitted (phase Starting): make its roles. */
        void (*start)(struct job *j);
        /* A role's workload started (role->state Running). */
        void (*role_started)(struct job *j, struct role *r);
        /* A role's workload ended (its sandbox is being destroyed). */
        void (*role_exited)(struct job *j, struct role *r, const struct lg_sandbox_status *st);
        /* A role's sandbox could not be made, or (restore) taken back. */
        void (*role_failed)(struct job *j, struct role *r, const char *why);
        /* Restore: the roles of the record were adopted or lost: go on. */
        void (*resume)(struct job *j);
        /* Engine fields of the status ("indexed"), may be NULL. */
        void (*status)(const struct job *j, json_t *status);
        /* The job ended: timers stopped, state freed (may be NULL). */
        void (*stop)(struct job *j);
};

extern const struct jobs_engine jobs_engine_dask;
extern const struct jobs_engine jobs_engine_indexed;
const struct jobs_engine *jobs_engine_find(const char *name);

/* dask-scheduler's command line (masters.c starts the same). */
extern const char *const jobs_dask_scheduler_argv[];
