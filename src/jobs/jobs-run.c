/* Role sandboxes of jobs, through the node agent (node/agent.h), in the
 * patterns of src/pod/pods-run.c: a detachable sandbox under
 * <run_dir>/job-sandboxes taken from a warm pool or made and started in
 * one agent trip (jobpool.h), its exit watched on legion-init's pidfd and then
 * asked of the agent (lg_agent_status: how it ended, OOM kills of its
 * cgroup), its destroy queued in every final state, adoption after a
 * restart. Here too: one role instance's life (start, exit, kill), its
 * status entry, and the metering of what it was given. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs/engine.h"
#include "jobs/jobpool.h"
#include "jobs/jobs-internal.h"


struct start_ctx {
        lg_jobs *jobs;
        jobs_start_cb cb;
        void *ud;
        /* adopt */
        lg_agent_req req;
        lg_agent_req assign_req; /* the address back to its namespace */
        bool assign;
        char net_namespace[64];
};

static void pool_started(int status, const struct lg_jobpool_started *ps, const struct lg_error *err, void *ud) {
        struct start_ctx *c = ud;
        lg_jobs *jobs = c->jobs;
        jobs->pending_reqs--;
        struct jobs_started s = {.pidfd = -1};
        if (status >= 0) {
                snprintf(s.id, sizeof(s.id), "%s", ps->id);
                s.warm = ps->warm;
                snprintf(s.address, sizeof(s.address), "%s", ps->address);
                s.pidfd = ps->pidfd;
                s.start_ns = ps->start_ns;
                if (jobs->freeing) {
                        /* lg_jobs_free waits for this: nobody wants it now. */
                        lg_agent_destroy(jobs->agent, NULL, ps->id, NULL);
                        status = -ECANCELED;
                }
        }
        c->cb(status < 0 ? status : 0, status < 0 ? NULL : &s, err, c->ud);
        free(c);
}

/* Through the warm pools (jobpool.h): a warm sandbox of the same rootfs
 * when one is ready, else one made now. */
int jobs_sandbox_start(lg_jobs *jobs, const struct jobs_sandbox *sb, jobs_start_cb cb, void *userdata,
                       struct lg_error *err) {
        struct start_ctx *c = calloc(1, sizeof(*c));
        if (!c)
                return lg_error_set(err, ENOMEM, "sandbox");
        c->jobs = jobs;
        c->cb = cb;
        c->ud = userdata;
        struct lg_jobpool_role role = {
                .rootfs = {.image_id = sb->image_id, .layers = sb->layers, .n_layers = sb->n_layers},
                .argv = sb->argv,
                .envp = sb->envp,
                .cwd = sb->cwd,
                .hostname = sb->hostname,
                .files_dir = sb->files_dir,
                .runtimes_dir = sb->runtimes_dir,
                .log_file = sb->log_file,
                .log_max_bytes = sb->log_max_bytes,
                .cpu_millis = sb->cpu_millis,
                .memory_bytes = sb->memory_bytes,
                .network = sb->network && jobs->net,
                .net_namespace = sb->net_namespace,
                .net_policy = sb->net_policy,
        };
        int r = lg_jobpool_start(jobs->pool, &role, pool_started, c, err);
        if (r < 0) {
                free(c);
                return r;
        }
        jobs->pending_reqs++;
        return 0;
}

struct destroy_ctx {
        lg_jobs *jobs;
        lg_agent_req req;
        void (*done)(void *arg);
        void *arg;
};

static void destroyed(lg_agent_req *req) {
        struct destroy_ctx *d = req->data;
        d->jobs->pending_reqs--;
        void (*done)(void *) = d->done;
        void *arg = d->arg;
        free(d);
        if (done)
                done(arg);
}

void jobs_sandbox_destroy(lg_jobs *jobs, const char *id, void (*done)(void *arg), void *arg) {
        struct destroy_ctx *d = calloc(1, sizeof(*d));
        if (d) {
                d->jobs = jobs;
                d->done = done;
                d->arg = arg;
                d->req.data = d;
                if (lg_agent_destroy(jobs->agent, &d->req, id, destroyed) == 0) {
                        jobs->pending_reqs++;
                        return;
                }
                free(d);
        }
        /* Out of memory, or no such sandbox: the agent still destroys
         * what it knows, nobody told; done now. */
        lg_agent_destroy(jobs->agent, NULL, id, NULL);
        if (done)
                done(arg);
}

static void adopt_answer(struct start_ctx *c) {
        const lg_agent_req *req = &c->req;
        struct jobs_started s = {.pidfd = -1};
        if (req->result >= 0) {
                snprintf(s.id, sizeof(s.id), "%s", req->id);
                s.pidfd = req->out.pidfd;
                snprintf(s.address, sizeof(s.address), "%s", req->out.net.ip);
        }
        c->cb(req->result < 0 ? req->result : 0, req->result < 0 ? NULL : &s, &req->err, c->ud);
        free(c);
}

/* Best effort: without its assignment the role reaches DNS only. */
static void assigned(lg_agent_req *req) {
        struct start_ctx *c = req->data;
        c->jobs->pending_reqs--;
        adopt_answer(c);
}

static void adopted(lg_agent_req *req) {
        struct start_ctx *c = req->data;
        lg_jobs *jobs = c->jobs;
        jobs->pending_reqs--;
        if (req->result >= 0 && jobs->freeing) {
                lg_agent_destroy(jobs->agent, NULL, req->id, NULL);
                req->result = -ECANCELED;
        }
        if (req->result >= 0 && c->assign && req->out.net.ip[0]) {
                c->assign_req.data = c;
                if (lg_agent_net_assign(jobs->agent, &c->assign_req, req->id, c->net_namespace, NULL, assigned) == 0) {
                        jobs->pending_reqs++;
                        return;
                }
        }
        adopt_answer(c);
}

int jobs_sandbox_adopt(lg_jobs *jobs, const char *id, const char *net_namespace, jobs_start_cb cb, void *userdata,
                       struct lg_error *err) {
        struct start_ctx *c = calloc(1, sizeof(*c));
        if (!c)
                return lg_error_set(err, ENOMEM, "adopt");
        c->jobs = jobs;
        c->cb = cb;
        c->ud = userdata;
        c->assign = net_namespace && *net_namespace && jobs->net;
        if (c->assign)
                snprintf(c->net_namespace, sizeof(c->net_namespace), "%s", net_namespace);
        c->req.data = c;
        int r = lg_agent_adopt_in(jobs->agent, &c->req, jobs->state_root, id, adopted);
        if (r < 0) {
                free(c);
                return lg_error_set(err, -r, "adopt sandbox `%s`", id);
        }
        jobs_claim(jobs, id);
        jobs->pending_reqs++;
        return 0;
}

static void detached(lg_agent_req *req) {
        lg_jobs *jobs = req->data;
        jobs->pending_reqs--;
        free(req);
}

void jobs_sandbox_detach(lg_jobs *jobs, const char *id) {
        lg_agent_req *req = calloc(1, sizeof(*req));
        if (req) {
                req->data = jobs;
                if (lg_agent_detach(jobs->agent, req, id, detached) == 0) {
                        jobs->pending_reqs++;
                        return;
                }
                free(req);
        }
}

/* ---- exit watch --------------------------------------------------------------- */

struct jobs_exit_watch {
        lg_jobs *jobs;
        uv_poll_t poll;
        lg_agent_req req;
        char id[LG_AGENT_ID_MAX];
        jobs_exit_cb cb;
        void *ud;
        bool stopped, asking, closed;
};

static void watch_maybe_free(jobs_exit_watch *w) {
        if (w->stopped && !w->asking && w->closed)
                free(w);
}

static void watch_poll_closed(uv_handle_t *h) {
        jobs_exit_watch *w = h->data;
        w->closed = true;
        w->jobs->pending_reqs--;
        watch_maybe_free(w);
}

static void watch_close(jobs_exit_watch *w) {
        w->stopped = true;
        if (!uv_is_closing((uv_handle_t *) &w->poll)) {
                uv_poll_stop(&w->poll);
                uv_close((uv_handle_t *) &w->poll, watch_poll_closed);
        }
}

static void on_exit_poll(uv_poll_t *h, int status, int events);

/* How it ended: the agent's status, or killed when it cannot say. */
static void watch_report(jobs_exit_watch *w, const lg_agent_req *req) {
        struct lg_sandbox_status st = {.kind = LG_EXIT_SIGNAL, .signal = SIGKILL, .shell_status = 137};
        if (req->result >= 0 && req->out.exited == 1)
                st = req->out.status;
        /* As containerd reports it: any OOM kill in the cgroup (the
         * workload's shell may survive the process it lost). */
        if (st.kind != LG_EXIT_OOM && st.shell_status != 0 && req->out.stats_result == 0 &&
            req->out.stats.oom_kills > 0)
                st.kind = LG_EXIT_OOM;
        char exit[64];
        lg_sandbox_status_string(&st, exit, sizeof(exit));
        jobs_exit_cb cb = w->cb;
        void *ud = w->ud;
        watch_close(w);
        cb(&st, exit, ud);
}

static void on_status(lg_agent_req *req) {
        jobs_exit_watch *w = req->data;
        w->jobs->pending_reqs--;
        w->asking = false;
        if (w->stopped) {
                watch_maybe_free(w);
                return;
        }
        if (req->result >= 0 && req->out.exited == 0) {
                uv_poll_start(&w->poll, UV_READABLE, on_exit_poll);
                return;
        }
        watch_report(w, req);
}

/* legion-init's pidfd is readable: the agent reaps it and says how it
 * ended. Level-triggered: quiet until it answers. */
static void on_exit_poll(uv_poll_t *h, int status, int events) {
        (void) status;
        (void) events;
        jobs_exit_watch *w = h->data;
        uv_poll_stop(&w->poll);
        if (w->stopped)
                return;
        w->req.data = w;
        if (lg_agent_status(w->jobs->agent, &w->req, w->id, on_status) < 0) {
                w->req.result = -ESRCH;
                watch_report(w, &w->req);
                return;
        }
        w->asking = true;
        w->jobs->pending_reqs++;
}

int jobs_exit_watch_start(lg_jobs *jobs, const char *id, int pidfd, jobs_exit_cb cb, void *userdata,
                          jobs_exit_watch **ret) {
        jobs_exit_watch *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        int r = uv_poll_init(jobs->loop, &w->poll, pidfd);
        if (r < 0) {
                free(w);
                return r;
        }
        w->jobs = jobs;
        w->poll.data = w;
        w->cb = cb;
        w->ud = userdata;
        snprintf(w->id, sizeof(w->id), "%s", id);
        jobs->pending_reqs++; /* the handle, until closed */
        uv_poll_start(&w->poll, UV_READABLE, on_exit_poll);
        *ret = w;
        return 0;
}

void jobs_exit_watch_stop(jobs_exit_watch *w) {
        if (!w || w->stopped)
                return;
        watch_close(w);
}

/* ---- roles --------------------------------------------------------------------- */

struct role *role_new(struct job *j, const char *kind, unsigned index, unsigned attempt, uint64_t cpu_millis,
                      uint64_t memory_bytes) {
        if (lg_grow((void **) &j->roles, &j->cap_roles, j->n_roles, sizeof(*j->roles), 8) < 0)
                return NULL;
        struct role *r = calloc(1, sizeof(*r));
        if (!r)
                return NULL;
        r->job = j;
        snprintf(r->kind, sizeof(r->kind), "%s", kind);
        r->index = index;
        r->attempt = attempt;
        r->cpu_millis = cpu_millis;
        r->memory_bytes = memory_bytes;
        j->roles[j->n_roles++] = r;
        return r;
}

void role_free(struct role *r) { free(r); }

static bool role_indexed(const struct role *r) { return !strcmp(r->kind, "executor") || !strcmp(r->kind, "index"); }

void role_label(const struct role *r, char *buf, size_t cap) {
        if (role_indexed(r))
                snprintf(buf, cap, "%s-%u", r->kind, r->index);
        else
                snprintf(buf, cap, "%s", r->kind);
}

static void role_log_path(const struct role *r, char *buf, size_t cap) {
        char dir[3000], label[32];
        job_log_dir(r->job, dir, sizeof(dir));
        role_label(r, label, sizeof(label));
        snprintf(buf, cap, "%s/%s.log", dir, label);
}

void role_last_log_line(const struct role *r, char *buf, size_t cap) {
        char path[4096];
        role_log_path(r, path, sizeof(path));
        jobs_log_last_line(path, buf, cap);
}

/* The role's instance is over: its sandbox goes. */
static void role_destroyed(void *arg) {
        struct job *j = arg;
        job_unbusy(j);
}

static void role_drop_sandbox(struct role *r) {
        struct job *j = r->job;
        jobs_exit_watch_stop(r->watch); /* before the destroy closes the pidfd it watches */
        r->watch = NULL;
        if (!r->has_sb)
                return;
        r->has_sb = false;
        j->busy++;
        jobs_sandbox_destroy(j->jobs, r->sb, role_destroyed, j);
}

static void role_exit(const struct lg_sandbox_status *st, const char *exit, void *userdata) {
        struct role *r = userdata;
        struct job *j = r->job;
        r->watch = NULL; /* gone after this callback */
        r->state = ROLE_EXITED;
        r->finished_ms = jobs_now_ms();
        snprintf(r->exit, sizeof(r->exit), "%s", exit);
        /* Queued first: workers gone as soon as possible after an exit. */
        role_drop_sandbox(r);
        if (!job_final(j) && !j->detached)
                j->eng->role_exited(j, r, st);
        job_changed(j);
}

static void role_watch(struct role *r, int pidfd) {
        struct job *j = r->job;
        if (jobs_exit_watch_start(j->jobs, r->sb, pidfd, role_exit, r, &r->watch) < 0) {
                /* Cannot see it end: it goes now, as if it had died. */
                struct lg_sandbox_status st = {.kind = LG_EXIT_SIGNAL, .signal = SIGKILL, .shell_status = 137};
                char exit[64];
                lg_sandbox_status_string(&st, exit, sizeof(exit));
                role_exit(&st, exit, r);
        }
}

static void role_started_cb(int status, const struct jobs_started *s, const struct lg_error *err, void *ud) {
        struct role *r = ud;
        struct job *j = r->job;
        r->starting = false;
        if (status < 0) {
                r->state = ROLE_EXITED;
                snprintf(r->exit, sizeof(r->exit), "StartFailed");
                if (!job_final(j) && !j->detached && !r->killed)
                        j->eng->role_failed(j, r, err && err->msg[0] ? err->msg : strerror(-status));
                job_changed(j);
                job_unbusy(j);
                return;
        }
        snprintf(r->sb, sizeof(r->sb), "%s", s->id);
        snprintf(r->address, sizeof(r->address), "%s", s->address);
        r->has_sb = true;
        r->warm = s->warm;
        r->started_ms = jobs_now_ms();
        r->ready_ms = (double) s->start_ns / 1e6;
        if (j->detached && !r->killed) {
                /* legiond is going down: it runs on for the next one. */
                r->state = ROLE_RUNNING;
                r->has_sb = false;
                jobs_sandbox_detach(j->jobs, r->sb);
                job_unbusy(j);
                return;
        }
        if (r->killed || job_final(j)) {
                r->state = ROLE_DELETED;
                r->finished_ms = r->started_ms;
                role_drop_sandbox(r);
                job_changed(j);
                job_unbusy(j);
                return;
        }
        r->state = ROLE_RUNNING;
        role_watch(r, s->pidfd);
        if (r->state == ROLE_RUNNING)
                j->eng->role_started(j, r);
        job_changed(j);
        job_unbusy(j);
}

int role_start(struct role *r, const char *const *argv, const char *const *extra_env) {
        struct job *j = r->job;
        lg_jobs *jobs = j->jobs;
        char log[4096], dir[3000], hostname[64], label[32], line[64];
        struct lg_error err = {0};
        job_log_dir(j, dir, sizeof(dir));
        lg_mkdir_p(dir, 0750);
        role_log_path(r, log, sizeof(log));
        if (r->attempt > 0) {
                /* The attempts of an index share its log. */
                _cleanup_close_ int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
                int n = snprintf(line, sizeof(line), "--- attempt %u ---\n", r->attempt);
                if (fd >= 0)
                        (void) lg_write_all(fd, line, (size_t) n); /* a marker; the log goes on without it */
        }
        role_label(r, label, sizeof(label));
        snprintf(hostname, sizeof(hostname), "%.40s-%s", j->name, label);

        /* Environment: PATH and HOME, the job's, the role's, the user's. */
        struct lg_strlist env = {0};
        char buf[1024];
        lg_strlist_add(&env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        lg_strlist_add(&env, "HOME=/tmp");
        lg_strlist_add(&env, "LANG=C.UTF-8");
        snprintf(buf, sizeof(buf), "LEGION_JOB_NAME=%s", j->name);
        lg_strlist_add(&env, buf);
        snprintf(buf, sizeof(buf), "LEGION_JOB_NAMESPACE=%s", j->ns);
        lg_strlist_add(&env, buf);
        snprintf(buf, sizeof(buf), "LEGION_ROLE=%s", r->kind);
        lg_strlist_add(&env, buf);
        if (j->files_dir)
                lg_strlist_add(&env, "PYTHONPATH=/job");
        for (size_t i = 0; extra_env && extra_env[i]; i++)
                lg_strlist_add(&env, extra_env[i]);
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(j->spec, "env"), k, v) {
                char *kv = NULL;
                if (asprintf(&kv, "%s=%s", k, json_string_value(v)) >= 0) {
                        lg_strlist_add(&env, kv);
                        free(kv);
                }
        }
        lg_strlist_add(&env, ""); /* its slot becomes the NULL that ends envp */
        char **envp = NULL;
        size_t n_env = 0;
        if (lg_strlist_take(&env, &envp, &n_env) < 0)
                return -ENOMEM;
        free(envp[n_env - 1]);
        envp[n_env - 1] = NULL;

        struct jobs_sandbox sb = {
                .image_id = j->img ? j->img->id : NULL,
                .layers = j->img ? (const char *const *) j->img->layer_dirs : NULL,
                .n_layers = j->img ? j->img->n_layers : 0,
                .argv = argv,
                .envp = (const char *const *) envp,
                .cwd = j->files_dir ? "/job" : "/",
                .hostname = hostname,
                .files_dir = j->files_dir,
                .runtimes_dir = jobs->runtimes_dir,
                .log_file = log,
                .log_max_bytes = jobs->log_max_bytes,
                .cpu_millis = r->cpu_millis,
                .memory_bytes = r->memory_bytes,
                .network = jobs->net != NULL,
                .net_namespace = j->ns,
        };
        int ret = jobs_sandbox_start(jobs, &sb, role_started_cb, r, &err);
        lg_strv_free(envp);
        if (ret < 0)
                return ret;
        r->state = ROLE_STARTING;
        r->starting = true;
        j->busy++;
        return 0;
}

void role_kill(struct role *r) {
        struct job *j = r->job;
        r->killed = true;
        if (r->starting || r->adopting)
                return; /* its callback destroys it */
        if (r->state == ROLE_RUNNING) {
                r->state = ROLE_DELETED;
                r->finished_ms = jobs_now_ms();
        }
        if (r->has_sb || r->watch)
                role_drop_sandbox(r);
        (void) j;
}

void role_detach(struct role *r) {
        jobs_exit_watch_stop(r->watch); /* before the agent closes the pidfd it watches */
        r->watch = NULL;
        if (!r->has_sb)
                return;
        r->has_sb = false;
        jobs_sandbox_detach(r->job->jobs, r->sb);
}

static void role_adopted(int status, const struct jobs_started *s, const struct lg_error *err, void *ud) {
        struct role *r = ud;
        struct job *j = r->job;
        (void) err;
        r->adopting = false;
        if (status < 0) {
                r->state = ROLE_LOST;
                r->finished_ms = jobs_now_ms();
                snprintf(r->exit, sizeof(r->exit), "Lost");
        } else {
                r->has_sb = true;
                r->pidfd = s->pidfd;
                if (s->address[0])
                        snprintf(r->address, sizeof(r->address), "%s", s->address);
                if (r->killed || job_final(j))
                        role_kill(r);
        }
        /* Once every role of the job is back: watch them, the engine goes on. */
        bool all = true;
        for (size_t i = 0; i < j->n_roles; i++)
                all = all && !j->roles[i]->adopting;
        if (all && !j->detached) {
                for (size_t i = 0; i < j->n_roles; i++) {
                        struct role *x = j->roles[i];
                        if (x->has_sb && !x->watch && x->state == ROLE_RUNNING)
                                role_watch(x, x->pidfd);
                }
                if (!job_final(j))
                        j->eng->resume(j);
                job_changed(j);
        }
        job_unbusy(j);
}

int role_adopt(struct role *r) {
        struct job *j = r->job;
        struct lg_error err = {0};
        int ret = jobs_sandbox_adopt(j->jobs, r->sb, j->jobs->net ? j->ns : NULL, role_adopted, r, &err);
        if (ret < 0)
                return ret;
        r->adopting = true;
        j->busy++;
        return 0;
}

unsigned job_live_roles(const struct job *j) {
        unsigned n = 0;
        for (size_t i = 0; i < j->n_roles; i++) {
                const struct role *r = j->roles[i];
                n += r->starting || r->adopting || r->has_sb;
        }
        return n;
}

static const char *const role_states[] = {"Waiting", "Starting", "Running", "Exited", "Deleted", "Lost"};

json_t *roles_json(const struct job *j) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < j->n_roles; i++) {
                const struct role *r = j->roles[i];
                char t[40];
                json_t *o = json_pack("{s:s, s:I, s:I, s:s, s:s, s:b, s:I, s:I}", "role", r->kind, "index",
                                      (json_int_t) r->index, "attempt", (json_int_t) r->attempt, "sandbox", r->sb,
                                      "state", role_states[r->state], "warm", r->warm, "cpuMillis",
                                      (json_int_t) r->cpu_millis, "memoryBytes", (json_int_t) r->memory_bytes);
                if (!o)
                        continue;
                if (r->exit[0])
                        json_object_set_new(o, "exit", json_string(r->exit));
                if (r->address[0])
                        json_object_set_new(o, "address", json_string(r->address));
                if (r->started_ms) {
                        json_object_set_new(o, "readyMs", json_real(round(r->ready_ms * 10) / 10));
                        jobs_format_ms(r->started_ms, t, sizeof(t));
                        json_object_set_new(o, "startedAt", json_string(t));
                }
                if (r->finished_ms) {
                        jobs_format_ms(r->finished_ms, t, sizeof(t));
                        json_object_set_new(o, "finishedAt", json_string(t));
                }
                json_array_append_new(a, o);
        }
        return a;
}

struct role *role_load(struct job *j, const json_t *o) {
        const char *kind = json_string_value(json_object_get(o, "role"));
        if (!kind)
                return NULL;
        struct role *r = role_new(j, kind, (unsigned) json_integer_value(json_object_get(o, "index")),
                                  (unsigned) json_integer_value(json_object_get(o, "attempt")),
                                  (uint64_t) json_integer_value(json_object_get(o, "cpuMillis")),
                                  (uint64_t) json_integer_value(json_object_get(o, "memoryBytes")));
        if (!r)
                return NULL;
        const char *s;
        if ((s = json_string_value(json_object_get(o, "sandbox"))))
                snprintf(r->sb, sizeof(r->sb), "%s", s);
        if ((s = json_string_value(json_object_get(o, "exit"))))
                snprintf(r->exit, sizeof(r->exit), "%s", s);
        if ((s = json_string_value(json_object_get(o, "address"))))
                snprintf(r->address, sizeof(r->address), "%s", s);
        r->warm = json_is_true(json_object_get(o, "warm"));
        r->ready_ms = json_number_value(json_object_get(o, "readyMs"));
        if ((s = json_string_value(json_object_get(o, "startedAt"))))
                jobs_parse_ms(s, &r->started_ms);
        if ((s = json_string_value(json_object_get(o, "finishedAt"))))
                jobs_parse_ms(s, &r->finished_ms);
        s = json_string_value(json_object_get(o, "state"));
        r->state = ROLE_DELETED;
        for (size_t i = 0; s && i < ARRAY_SIZE(role_states); i++)
                if (!strcmp(s, role_states[i]))
                        r->state = (enum role_state) i;
        return r;
}

/* ---- metering ------------------------------------------------------------------ */

json_t *jobs_usage_new(void) {
        return json_pack("{s:f, s:f, s:I, s:{}}", "vcpuSeconds", 0.0, "memoryGiBSeconds", 0.0, "seconds",
                         (json_int_t) 0, "byRole");
}

static void usage_add_to(json_t *o, int64_t seconds, uint64_t cpu_millis, uint64_t memory_bytes) {
        double vcpu = (double) seconds * (double) cpu_millis / 1000.0;
        double gib = (double) seconds * (double) memory_bytes / (double) (1ull << 30);
        json_object_set_new(o, "vcpuSeconds", json_real(json_number_value(json_object_get(o, "vcpuSeconds")) + vcpu));
        json_object_set_new(o, "memoryGiBSeconds",
                            json_real(json_number_value(json_object_get(o, "memoryGiBSeconds")) + gib));
        json_object_set_new(o, "seconds",
                            json_integer(json_integer_value(json_object_get(o, "seconds")) + seconds));
}

void jobs_usage_add(json_t *usage, const char *role, int64_t started_ms, int64_t finished_ms, uint64_t cpu_millis,
                    uint64_t memory_bytes) {
        if (!usage || !started_ms)
                return;
        int64_t ms = finished_ms > started_ms ? finished_ms - started_ms : 0;
        int64_t seconds = (ms + 999) / 1000;
        if (seconds < 1)
                seconds = 1; /* started: at least a second */
        usage_add_to(usage, seconds, cpu_millis, memory_bytes);
        json_t *by = json_object_get(usage, "byRole");
        if (!by) {
                by = json_object();
                json_object_set_new(usage, "byRole", by);
        }
        json_t *o = json_object_get(by, role);
        if (!o) {
                o = json_pack("{s:f, s:f, s:I}", "vcpuSeconds", 0.0, "memoryGiBSeconds", 0.0, "seconds",
                              (json_int_t) 0);
                json_object_set_new(by, role, o);
        }
        usage_add_to(o, seconds, cpu_millis, memory_bytes);
}

json_t *usage_json(const struct job *j, int64_t now_ms) {
        json_t *u = jobs_usage_new();
        for (size_t i = 0; u && i < j->n_roles; i++) {
                const struct role *r = j->roles[i];
                if (!r->started_ms)
                        continue;
                int64_t end = r->finished_ms ? r->finished_ms : now_ms;
                jobs_usage_add(u, r->kind, r->started_ms, end, r->cpu_millis, r->memory_bytes);
        }
        return u;
}
