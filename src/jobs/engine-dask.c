/* The dask engine: a master (dask-scheduler; the job's own, one of its
 * roles, unless masters.c gives it a kept or deployed one, or the spec
 * names an address), then a driver (the user's script, run by
 * runtimes/python/legion_runtime/dask_driver.py once the executors joined)
 * and N executors (dask-worker with --nthreads = cores and --memory-limit
 * = memory), started together once the master accepts connections. The
 * driver's exit decides: 0 Succeeded, else DriverFailed (OOMKilled when
 * the OOM killer took it); an executor or the master ending while the
 * driver runs fails the job (ExecutorLost, MasterLost). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs/engine.h"
#include "node/probe.h"

#define MASTER_READY_MS 60000

const char *const jobs_dask_scheduler_argv[] = {"dask-scheduler", "--host", "0.0.0.0", "--port", "8786",
                                                "--no-dashboard", NULL};

struct dask {
        struct role *master; /* its own, NULL otherwise */
        lg_probe *probe;
        bool launched;       /* driver and executors asked for */
};

static int normalize(lg_jobs *jobs, json_t *spec, struct lg_error *err) {
        (void) jobs;
        static const char *const indexed_only[] = {"completions", "parallelism", "retries", NULL};
        for (size_t i = 0; indexed_only[i]; i++)
                if (json_object_get(spec, indexed_only[i]))
                        return lg_error_setm(err, EINVAL, "bad `%s`: only the indexed engine has it", indexed_only[i]);
        json_t *file = json_object_get(spec, "file"), *cmd = json_object_get(spec, "command");
        if (!file && !cmd)
                return lg_error_setm(err, EINVAL, "bad `file`: the dask engine needs a driver script (`file`) or a "
                                                  "`command`");
        if (file && cmd)
                return lg_error_setm(err, EINVAL, "bad `command`: give `file` or `command`, not both");
        if (file && !json_object_get(spec, "package"))
                return lg_error_setm(err, EINVAL, "bad `file`: it names a file of the job's package, and there is no "
                                                  "`package`");
        json_t *master = json_object_get(spec, "master");
        if (master && json_is_true(json_object_get(spec, "keepAlive")))
                return lg_error_setm(err, EINVAL, "bad `keepAlive`: it keeps a master the job makes, and `master` "
                                                  "names one");
        return 0;
}

static bool wants_master(const json_t *spec) {
        return !json_object_get(spec, "master") && !json_is_true(json_object_get(spec, "keepAlive"));
}

static void need(const json_t *spec, bool own_master, uint64_t *cpu, uint64_t *mem) {
        uint64_t c, m;
        jobs_spec_resources(spec, "driver", &c, &m);
        *cpu = c;
        *mem = m;
        jobs_spec_resources(spec, "executors", &c, &m);
        json_int_t n = json_integer_value(json_object_get(json_object_get(spec, "executors"), "count"));
        *cpu += c * (uint64_t) n;
        *mem += m * (uint64_t) n;
        if (own_master) {
                jobs_spec_resources(spec, "masterResources", &c, &m);
                *cpu += c;
                *mem += m;
        }
}

static struct dask *state(struct job *j) {
        if (!j->eng_state)
                j->eng_state = calloc(1, sizeof(struct dask));
        return j->eng_state;
}

/* Driver and executors, together, once the master is there. */
static void launch(struct job *j) {
        struct dask *d = state(j);
        if (!d || d->launched || job_final(j))
                return;
        d->launched = true;
        json_int_t n = json_integer_value(json_object_get(json_object_get(j->spec, "executors"), "count"));
        char addr_env[128], num_env[48];
        snprintf(addr_env, sizeof(addr_env), "DASK_SCHEDULER_ADDRESS=%s", j->master.address);
        snprintf(num_env, sizeof(num_env), "LEGION_NUM_EXECUTORS=%lld", (long long) n);
        /* Unbuffered: the log shows the driver's lines as they come, in
         * order with its traceback (the last line is the job's message). */
        const char *env[] = {addr_env, num_env, "PYTHONUNBUFFERED=1", NULL};

        /* The driver: dask-driver waits for the executors, then runs the
         * script (or execs the command). */
        uint64_t cpu, mem;
        jobs_spec_resources(j->spec, "driver", &cpu, &mem);
        struct role *drv = role_new(j, "driver", 0, 0, cpu, mem);
        const json_t *cmd = json_object_get(j->spec, "command"), *args = json_object_get(j->spec, "args");
        size_t max = 6 + json_array_size(cmd) + json_array_size(args), k = 0;
        const char **argv = calloc(max, sizeof(char *));
        char script[1100];
        if (!drv || !argv) {
                free(argv);
                job_finish(j, JOB_FAILED, "StartFailed", "out of memory");
                return;
        }
        argv[k++] = "python3";
        argv[k++] = "/opt/legion/runtime/python";
        argv[k++] = "dask-driver";
        if (cmd) {
                argv[k++] = "--exec";
                for (size_t a = 0; a < json_array_size(cmd); a++)
                        argv[k++] = json_string_value(json_array_get(cmd, a));
        } else {
                snprintf(script, sizeof(script), "/job/%s", json_string_value(json_object_get(j->spec, "file")));
                argv[k++] = script;
        }
        for (size_t a = 0; a < json_array_size(args); a++)
                argv[k++] = json_string_value(json_array_get(args, a));
        int r = role_start(drv, argv, env);
        free(argv);
        if (r < 0) {
                job_finish(j, JOB_FAILED, "StartFailed", "driver: %s", strerror(-r));
                return;
        }

        jobs_spec_resources(j->spec, "executors", &cpu, &mem);
        char threads[24], memlimit[32], name[32];
        snprintf(threads, sizeof(threads), "%llu", (unsigned long long) ((cpu + 999) / 1000));
        snprintf(memlimit, sizeof(memlimit), "%llu", (unsigned long long) mem);
        for (json_int_t i = 0; i < n && !job_final(j); i++) {
                snprintf(name, sizeof(name), "executor-%lld", (long long) i);
                const char *wargv[] = {"dask-worker", j->master.address, "--name", name, "--nthreads", threads,
                                       "--memory-limit", memlimit, "--no-nanny", "--no-dashboard",
                                       "--death-timeout", "30", "--local-directory", "/tmp", NULL};
                struct role *ex = role_new(j, "executor", (unsigned) i, 0, cpu, mem);
                if (!ex || (r = role_start(ex, wargv, env)) < 0) {
                        job_finish(j, JOB_FAILED, "StartFailed", "executor %lld: %s", (long long) i,
                                   strerror(ex ? -r : ENOMEM));
                        return;
                }
        }
}

static void master_ready(lg_probe *probe, int status, const char *message, void *userdata) {
        struct job *j = userdata;
        struct dask *d = j->eng_state;
        (void) probe;
        d->probe = NULL;
        if (status < 0) {
                job_finish(j, JOB_FAILED, "StartFailed", "master: %s", message);
                return;
        }
        job_changed(j);
        launch(j);
}

/* A master this job made and keeps (keepAlive) is a Master of its own,
 * whose log goes with it; the job's master.log is a second link to the
 * same file, so that it stays with the job after the Master is deleted
 * (lg_jobs_log_path falls back to it). Best effort. */
static void keep_master_log(struct job *j) {
        char from[4096], dir[3000], to[4096];
        if (jobs_master_log_path(j->jobs, j->ns, j->master.name, from, sizeof(from)) < 0)
                return;
        job_log_dir(j, dir, sizeof(dir));
        lg_mkdir_p(dir, 0750);
        snprintf(to, sizeof(to), "%s/master.log", dir);
        (void) link(from, to); /* without it the log goes with the Master */
}

static void master_granted(int status, const struct jobs_master_grant *g, const struct lg_error *err, void *ud) {
        struct job *j = ud;
        if (!j->master_acquiring)
                return; /* cancelled */
        j->master_acquiring = false;
        if (status < 0) {
                job_finish(j, JOB_FAILED, "StartFailed", "master: %s", err && err->msg[0] ? err->msg : strerror(-status));
                return;
        }
        j->master = *g;
        j->master_held = true;
        if (g->kept && !g->reused)
                keep_master_log(j);
        if (g->reused && j->own_master && j->holds_capacity) {
                /* Counted as its own at admission: a kept one serves it. */
                uint64_t cpu, mem;
                jobs_spec_resources(j->spec, "masterResources", &cpu, &mem);
                j->own_master = false;
                j->need_cpu -= cpu;
                j->need_mem -= mem;
                jobs_capacity_give(j->jobs, cpu, mem);
        }
        job_changed(j);
        launch(j);
}

static void start_own_master(struct job *j) {
        uint64_t cpu, mem;
        jobs_spec_resources(j->spec, "masterResources", &cpu, &mem);
        struct role *m = role_new(j, "master", 0, 0, cpu, mem);
        struct dask *d = state(j);
        if (!m || !d) {
                job_finish(j, JOB_FAILED, "StartFailed", "out of memory");
                return;
        }
        d->master = m;
        int r = role_start(m, jobs_dask_scheduler_argv, NULL);
        if (r < 0)
                job_finish(j, JOB_FAILED, "StartFailed", "master: %s", strerror(-r));
}

static void start(struct job *j) {
        const json_t *master = json_object_get(j->spec, "master");
        const char *address = json_string_value(json_object_get(master, "address"));
        if (!state(j)) {
                job_finish(j, JOB_FAILED, "StartFailed", "out of memory");
                return;
        }
        if (address) {
                /* A scheduler Legion does not run. */
                snprintf(j->master.address, sizeof(j->master.address), "%s", address);
                launch(j);
                return;
        }
        uint64_t cpu, mem;
        jobs_spec_resources(j->spec, "masterResources", &cpu, &mem);
        struct jobs_master_want w = {
                .ns = j->ns,
                .job = j->name,
                .engine = "dask",
                .image = json_string_value(json_object_get(j->spec, "image")),
                .name = master ? json_string_value(json_object_get(master, "name")) : "",
                .keep_alive = json_is_true(json_object_get(j->spec, "keepAlive")),
                .master_name = json_string_value(json_object_get(j->spec, "masterName")),
                .keep_alive_seconds = (uint64_t) json_integer_value(json_object_get(j->spec, "keepAliveSeconds")),
                .cpu_millis = cpu,
                .memory_bytes = mem,
        };
        char waiting[256] = "";
        struct lg_error err = {0};
        j->master_acquiring = true;
        int r = jobs_master_acquire(j->jobs, &w, master_granted, j, waiting, sizeof(waiting), &err);
        if (r == 1)
                return;
        j->master_acquiring = false;
        if (r == 0) {
                if (w.keep_alive || master) {
                        job_finish(j, JOB_FAILED, "StartFailed", "master: masters.c made none");
                        return;
                }
                start_own_master(j);
        } else if (r == -EAGAIN) {
                job_requeue(j, waiting[0] ? waiting : "a master");
        } else {
                job_finish(j, JOB_FAILED, "StartFailed", "master: %s", err.msg[0] ? err.msg : strerror(-r));
        }
}

static void role_started(struct job *j, struct role *r) {
        struct dask *d = state(j);
        if (!strcmp(r->kind, "driver")) {
                job_set_running(j);
                return;
        }
        if (r != d->master)
                return;
        if (!r->address[0]) {
                job_finish(j, JOB_FAILED, "StartFailed", "master: it has no address on the node network");
                return;
        }
        snprintf(j->master.address, sizeof(j->master.address), "tcp://%s:%d", r->address, JOBS_DASK_PORT);
        struct lg_probe_config pc = {.loop = j->jobs->loop, .ip = r->address, .port = JOBS_DASK_PORT,
                                     .timeout_ms = MASTER_READY_MS, .interval_ms = 20};
        struct lg_error err = {0};
        if (lg_probe_start(&pc, master_ready, j, &d->probe, &err) < 0)
                job_finish(j, JOB_FAILED, "StartFailed", "master: %s", err.msg);
}

static void role_exited(struct job *j, struct role *r, const struct lg_sandbox_status *st) {
        char label[32], line[300];
        role_label(r, label, sizeof(label));
        if (!strcmp(r->kind, "driver")) {
                if (st->kind == LG_EXIT_CODE && st->code == 0) {
                        job_finish(j, JOB_SUCCEEDED, "Completed", "driver exited with 0");
                } else if (st->kind == LG_EXIT_OOM) {
                        job_finish(j, JOB_FAILED, "OOMKilled", "driver OOMKilled");
                } else {
                        role_last_log_line(r, line, sizeof(line));
                        if (st->kind == LG_EXIT_CODE)
                                job_finish(j, JOB_FAILED, "DriverFailed", "driver exited with %d%s%s", st->code,
                                           line[0] ? ": " : "", line);
                        else
                                job_finish(j, JOB_FAILED, "DriverFailed", "driver %s%s%s", r->exit, line[0] ? ": " : "",
                                           line);
                }
        } else if (!strcmp(r->kind, "master")) {
                if (st->kind == LG_EXIT_OOM)
                        job_finish(j, JOB_FAILED, "OOMKilled", "master OOMKilled");
                else
                        job_finish(j, JOB_FAILED, "MasterLost", "master %s", r->exit);
        } else {
                job_finish(j, JOB_FAILED, "ExecutorLost", "executor %u: %s", r->index, r->exit);
        }
}

static void role_failed(struct job *j, struct role *r, const char *why) {
        char label[32];
        role_label(r, label, sizeof(label));
        job_finish(j, JOB_FAILED, "StartFailed", "%s: %s", label, why);
}

/* After a restart: a role lost while legiond was down ends the job. */
static void resume(struct job *j) {
        struct dask *d = state(j);
        bool driver = false;
        for (size_t i = 0; i < j->n_roles; i++) {
                struct role *r = j->roles[i];
                if (!strcmp(r->kind, "master"))
                        d->master = r;
                if (!strcmp(r->kind, "driver"))
                        driver = true;
                if (r->state != ROLE_LOST)
                        continue;
                if (!strcmp(r->kind, "driver"))
                        job_finish(j, JOB_FAILED, "DriverFailed", "driver lost while legiond was down");
                else if (!strcmp(r->kind, "master"))
                        job_finish(j, JOB_FAILED, "MasterLost", "master lost while legiond was down");
                else
                        job_finish(j, JOB_FAILED, "ExecutorLost", "executor %u lost while legiond was down", r->index);
                return;
        }
        if (driver) {
                d->launched = true;
                return;
        }
        /* It was starting: with its master there, the rest comes now. */
        if (j->master.address[0] && (!d->master || d->master->has_sb))
                launch(j);
        else
                job_finish(j, JOB_FAILED, "StartFailed", "legiond restarted while the job's master was starting");
}

static void stop(struct job *j) {
        struct dask *d = j->eng_state;
        if (d && d->probe) {
                lg_probe_cancel(d->probe);
                d->probe = NULL;
        }
}

const struct jobs_engine jobs_engine_dask = {
        .name = "dask",
        .normalize = normalize,
        .need = need,
        .wants_master = wants_master,
        .start = start,
        .role_started = role_started,
        .role_exited = role_exited,
        .role_failed = role_failed,
        .resume = resume,
        .stop = stop,
};

const struct jobs_engine *jobs_engine_find(const char *name) {
        if (!name)
                return NULL;
        if (!strcmp(name, "dask"))
                return &jobs_engine_dask;
        if (!strcmp(name, "indexed"))
                return &jobs_engine_indexed;
        return NULL;
}
