/* The indexed engine: completions copies of any command, parallelism at
 * a time, lowest index first, each with LEGION_JOB_INDEX and
 * JOB_COMPLETION_INDEX (Kubernetes' name) and LEGION_JOB_ATTEMPT. An index
 * that exits 0 succeeded; else it is tried again after 1 s x 2^attempt
 * (at most 10 s) until it failed retries + 1 times (as Kubernetes'
 * backoffLimitPerIndex): then the job fails with BackoffLimitExceeded and
 * the running indexes are deleted. All succeeded: Succeeded. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/engine.h"

#define BACKOFF_BASE_MS 1000
#define BACKOFF_MAX_MS 10000

enum idx_phase { I_PENDING, I_RUNNING, I_BACKOFF, I_SUCCEEDED, I_FAILED };

struct idx {
        enum idx_phase phase;
        unsigned attempts; /* started so far */
        int64_t due_ms;    /* I_BACKOFF: tried again from then */
};

struct indexed {
        unsigned completions, parallelism, retries;
        unsigned succeeded, failed, active;
        struct idx ix[];
};

static int normalize(lg_jobs *jobs, json_t *spec, struct lg_error *err) {
        (void) jobs;
        static const char *const dask_only[] = {"file", "master", NULL};
        for (size_t i = 0; dask_only[i]; i++)
                if (json_object_get(spec, dask_only[i]))
                        return lg_error_setm(err, EINVAL, "bad `%s`: the indexed engine has no %s", dask_only[i],
                                             i == 0 ? "driver script (it runs `command`)" : "master");
        if (json_is_true(json_object_get(spec, "keepAlive")))
                return lg_error_setm(err, EINVAL, "bad `keepAlive`: the indexed engine has no master to keep");
        if (!json_object_get(spec, "command"))
                return lg_error_setm(err, EINVAL, "bad `command`: the indexed engine needs a command");
        json_int_t count = json_integer_value(json_object_get(json_object_get(spec, "executors"), "count"));
        const char *fields[] = {"completions", "parallelism", "retries"};
        /* Every attempt is a role in the status (at most 1 MiB): bounded. */
        long long lo[] = {1, 1, 0}, hi[] = {1000, 256, 20};
        for (size_t i = 0; i < 3; i++) {
                json_t *v = json_object_get(spec, fields[i]);
                long long def = i == 0   ? count
                                : i == 1 ? json_integer_value(json_object_get(spec, "completions"))
                                         : 3;
                if (i == 1 && def > hi[1])
                        def = hi[1];
                if (!v) {
                        json_object_set_new(spec, fields[i], json_integer(def));
                        continue;
                }
                if (!json_is_integer(v) || json_integer_value(v) < lo[i] || json_integer_value(v) > hi[i])
                        return lg_error_setm(err, EINVAL, "bad `%s`: an integer from %lld to %lld is wanted",
                                             fields[i], lo[i], hi[i]);
        }
        return 0;
}

static void need(const json_t *spec, bool own_master, uint64_t *cpu, uint64_t *mem) {
        (void) own_master;
        uint64_t c, m;
        jobs_spec_resources(spec, "executors", &c, &m);
        json_int_t n = json_integer_value(json_object_get(spec, "parallelism"));
        json_int_t total = json_integer_value(json_object_get(spec, "completions"));
        if (total < n)
                n = total;
        *cpu = c * (uint64_t) n;
        *mem = m * (uint64_t) n;
}

static struct indexed *state(struct job *j) {
        if (j->eng_state)
                return j->eng_state;
        unsigned n = (unsigned) json_integer_value(json_object_get(j->spec, "completions"));
        struct indexed *x = calloc(1, sizeof(*x) + n * sizeof(struct idx));
        if (!x)
                return NULL;
        x->completions = n;
        x->parallelism = (unsigned) json_integer_value(json_object_get(j->spec, "parallelism"));
        x->retries = (unsigned) json_integer_value(json_object_get(j->spec, "retries"));
        j->eng_state = x;
        return x;
}

static void fill(struct job *j);

static void on_timer(uv_timer_t *t) { fill(t->data); }

static int start_index(struct job *j, struct indexed *x, unsigned i) {
        uint64_t cpu, mem;
        jobs_spec_resources(j->spec, "executors", &cpu, &mem);
        struct role *r = role_new(j, "index", i, x->ix[i].attempts, cpu, mem);
        if (!r)
                return -ENOMEM;
        /* command + args */
        const json_t *cmd = json_object_get(j->spec, "command"), *args = json_object_get(j->spec, "args");
        size_t n = json_array_size(cmd) + json_array_size(args), k = 0;
        const char **argv = calloc(n + 1, sizeof(char *));
        if (!argv)
                return -ENOMEM;
        for (size_t a = 0; a < json_array_size(cmd); a++)
                argv[k++] = json_string_value(json_array_get(cmd, a));
        for (size_t a = 0; a < json_array_size(args); a++)
                argv[k++] = json_string_value(json_array_get(args, a));
        char e1[48], e2[48], e3[48];
        snprintf(e1, sizeof(e1), "LEGION_JOB_INDEX=%u", i);
        snprintf(e2, sizeof(e2), "JOB_COMPLETION_INDEX=%u", i);
        snprintf(e3, sizeof(e3), "LEGION_JOB_ATTEMPT=%u", x->ix[i].attempts);
        const char *env[] = {e1, e2, e3, NULL};
        int ret = role_start(r, argv, env);
        free(argv);
        if (ret < 0) {
                r->state = ROLE_EXITED;
                snprintf(r->exit, sizeof(r->exit), "StartFailed");
                return ret;
        }
        x->ix[i].phase = I_RUNNING;
        x->ix[i].attempts++;
        x->active++;
        return 0;
}

/* Start indexes while a slot is free: the lowest pending one, or one
 * whose back-off is over; the timer wakes for the next back-off. */
static void fill(struct job *j) {
        struct indexed *x = state(j);
        if (!x || job_final(j) || j->detached)
                return;
        int64_t now = jobs_now_ms(), next_due = 0;
        for (unsigned i = 0; i < x->completions && x->active < x->parallelism; i++) {
                struct idx *ix = &x->ix[i];
                if (ix->phase == I_BACKOFF && ix->due_ms > now) {
                        if (!next_due || ix->due_ms < next_due)
                                next_due = ix->due_ms;
                        continue;
                }
                if (ix->phase != I_PENDING && ix->phase != I_BACKOFF)
                        continue;
                int r = start_index(j, x, i);
                if (r < 0) {
                        job_finish(j, JOB_FAILED, "StartFailed", "index %u: %s", i, strerror(-r));
                        return;
                }
        }
        uv_timer_stop(&j->engine_timer);
        if (next_due)
                uv_timer_start(&j->engine_timer, on_timer, (uint64_t) (next_due - now), 0);
}

static void start(struct job *j) {
        if (!state(j)) {
                job_finish(j, JOB_FAILED, "StartFailed", "out of memory");
                return;
        }
        fill(j);
}

static void role_started(struct job *j, struct role *r) {
        (void) r;
        job_set_running(j);
}

static void index_failed(struct job *j, struct indexed *x, unsigned i, const char *exit) {
        struct idx *ix = &x->ix[i];
        x->failed++;
        if (ix->attempts > x->retries) {
                ix->phase = I_FAILED;
                job_finish(j, JOB_FAILED, "BackoffLimitExceeded", "index %u failed %u times: %s", i, ix->attempts,
                           exit);
                return;
        }
        uint64_t delay = BACKOFF_BASE_MS;
        for (unsigned k = 1; k < ix->attempts && delay < BACKOFF_MAX_MS; k++)
                delay *= 2;
        if (delay > BACKOFF_MAX_MS)
                delay = BACKOFF_MAX_MS;
        ix->phase = I_BACKOFF;
        ix->due_ms = jobs_now_ms() + (int64_t) delay;
}

static void role_exited(struct job *j, struct role *r, const struct lg_sandbox_status *st) {
        struct indexed *x = state(j);
        if (!x || r->index >= x->completions)
                return;
        x->active--;
        if (st->kind == LG_EXIT_CODE && st->code == 0) {
                x->ix[r->index].phase = I_SUCCEEDED;
                x->succeeded++;
                if (x->succeeded == x->completions) {
                        job_finish(j, JOB_SUCCEEDED, "Completed", "%u of %u indexes succeeded", x->succeeded,
                                   x->completions);
                        return;
                }
        } else {
                index_failed(j, x, r->index, r->exit);
                if (job_final(j))
                        return;
        }
        fill(j);
}

static void role_failed(struct job *j, struct role *r, const char *why) {
        job_finish(j, JOB_FAILED, "StartFailed", "index %u: %s", r->index, why);
}

/* After a restart: each index's state from its latest attempt. */
static void resume(struct job *j) {
        struct indexed *x = state(j);
        if (!x) {
                job_finish(j, JOB_FAILED, "StartFailed", "out of memory");
                return;
        }
        memset(x->ix, 0, x->completions * sizeof(struct idx));
        x->succeeded = x->failed = x->active = 0;
        for (size_t k = 0; k < j->n_roles; k++) {
                const struct role *r = j->roles[k];
                if (r->index >= x->completions)
                        continue;
                struct idx *ix = &x->ix[r->index];
                if (r->attempt + 1 > ix->attempts)
                        ix->attempts = r->attempt + 1;
                if (r->state == ROLE_EXITED && strcmp(r->exit, "Exited(0)"))
                        x->failed++;
        }
        for (unsigned i = 0; i < x->completions; i++) {
                struct idx *ix = &x->ix[i];
                const struct role *last = NULL;
                for (size_t k = 0; k < j->n_roles; k++)
                        if (j->roles[k]->index == i && (!last || j->roles[k]->attempt >= last->attempt))
                                last = j->roles[k];
                if (!last)
                        ix->phase = I_PENDING;
                else if (last->has_sb || last->adopting)
                        ix->phase = I_RUNNING, x->active++;
                else if (last->state == ROLE_EXITED && !strcmp(last->exit, "Exited(0)"))
                        ix->phase = I_SUCCEEDED, x->succeeded++;
                else if (last->state == ROLE_EXITED || last->state == ROLE_LOST) {
                        if (last->state == ROLE_LOST)
                                x->failed++;
                        if (ix->attempts > x->retries) {
                                job_finish(j, JOB_FAILED, "BackoffLimitExceeded", "index %u failed %u times: %s", i,
                                           ix->attempts, last->exit[0] ? last->exit : "Lost");
                                return;
                        }
                        ix->phase = I_BACKOFF;
                        ix->due_ms = 0;
                } else {
                        ix->phase = I_PENDING; /* deleted, or never made */
                }
        }
        if (x->succeeded == x->completions) {
                job_finish(j, JOB_SUCCEEDED, "Completed", "%u of %u indexes succeeded", x->succeeded, x->completions);
                return;
        }
        if (x->active)
                job_set_running(j);
        fill(j);
}

static void status(const struct job *j, json_t *s) {
        const struct indexed *x = j->eng_state;
        unsigned completions = (unsigned) json_integer_value(json_object_get(j->spec, "completions"));
        json_object_set_new(s, "indexed",
                            json_pack("{s:I, s:I, s:I, s:I}", "completions", (json_int_t) completions, "succeeded",
                                      (json_int_t) (x ? x->succeeded : 0), "failed", (json_int_t) (x ? x->failed : 0),
                                      "active", (json_int_t) (x ? x->active : 0)));
}

/* Ended: the indexes still running were deleted. */
static void stop(struct job *j) {
        struct indexed *x = j->eng_state;
        uv_timer_stop(&j->engine_timer);
        if (x)
                x->active = 0;
}

const struct jobs_engine jobs_engine_indexed = {
        .name = "indexed",
        .normalize = normalize,
        .need = need,
        .wants_master = NULL,
        .start = start,
        .role_started = role_started,
        .role_exited = role_exited,
        .role_failed = role_failed,
        .resume = resume,
        .status = status,
        .stop = stop,
};
