/* One container of a pod, on legiond's loop: resolve or pull its image
 * (pulls on the thread pool, retried with back-off as kubelet does:
 * ErrImagePull, then ImagePullBackOff), create and start its sandbox with
 * the node agent's requests (off the loop), watch its pidfd, ask the agent
 * how it ended, and on exit record the terminated state
 * and restart it per restartPolicy with kubelet's back-off (CrashLoopBackOff:
 * immediately the first time, then base, 2 x base, ... up to 30 x base;
 * back to immediate after a run of 10 minutes). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pod/pods-internal.h"

#define LONG_RUN_MS (10 * 60 * 1000)
#define ERR_PULL_SHOW_MS 1000 /* ErrImagePull shows this long before ImagePullBackOff */

enum { PULL_WAIT_ERR = 1, PULL_WAIT_BACKOFF = 2 };

static void time_now(char *buf, size_t cap) { lg_store_format_time(pod_now(), buf, cap); }

void ctr_set_waiting(struct ctr *c, const char *reason, const char *message) {
        json_t *w = json_pack("{s:s}", "reason", reason);
        if (message && *message)
                json_object_set_new(w, "message", json_string(message));
        json_decref(c->state);
        c->state = json_pack("{s:o}", "waiting", w);
}

static uint64_t backoff_delay(const struct ctr *c, unsigned streak) {
        uint64_t base = c->pod->mgr->backoff_ms, max = base * 30;
        if (streak == 0)
                return 0;
        uint64_t d = base;
        for (unsigned i = 1; i < streak && d < max; i++)
                d *= 2;
        return d < max ? d : max;
}

static void fmt_duration(uint64_t ms, char *buf, size_t cap) {
        if (ms >= 60000 && ms % 60000 == 0)
                snprintf(buf, cap, "%llum0s", (unsigned long long) (ms / 60000));
        else if (ms >= 60000)
                snprintf(buf, cap, "%llum%llus", (unsigned long long) (ms / 60000),
                         (unsigned long long) (ms % 60000 / 1000));
        else if (ms % 1000 == 0)
                snprintf(buf, cap, "%llus", (unsigned long long) (ms / 1000));
        else
                snprintf(buf, cap, "%llums", (unsigned long long) ms);
}

static const char *pull_policy(const struct ctr *c) {
        const char *p = json_string_value(json_object_get(c->spec, "imagePullPolicy"));
        return p ? p : "IfNotPresent";
}

/* ---- handles ---------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

void ctr_init_handles(struct ctr *c) {
        uv_timer_init(c->pod->mgr->loop, &c->timer);
        c->timer.data = c;
        c->pod->handles++;
}

static void handle_closed(uv_handle_t *h) {
        struct pod *pod = h->data;
        pod->handles--;
        pod_release(pod);
}

static void stop_exit_poll(struct ctr *c);

void ctr_close_handles(struct ctr *c) {
        stop_exit_poll(c);
        uv_timer_stop(&c->timer);
        c->timer.data = c->pod;
        uv_close((uv_handle_t *) &c->timer, handle_closed);
}

/* The exit poll is made for each run: a uv_poll_t is bound to its fd. */
struct exit_poll {
        uv_poll_t h;
        struct ctr *c;
};

static void poll_closed(uv_handle_t *h) {
        struct exit_poll *p = (struct exit_poll *) h;
        struct pod *pod = p->c->pod;
        free(p);
        pod->handles--;
        pod_release(pod);
}

static void stop_exit_poll(struct ctr *c) {
        struct exit_poll *p = c->exit_poll;
        if (!p)
                return;
        c->exit_poll = NULL;
        uv_poll_stop(&p->h);
        uv_close((uv_handle_t *) &p->h, poll_closed);
}

void ctr_free(struct ctr *c) {
        json_decref(c->state);
        json_decref(c->last_state);
        lg_image_free(c->img);
        free(c->pull_ref);
        ctr_free_sandbox_spec(c);
        free(c->name);
}

bool ctr_active(const struct ctr *c) {
        return c->phase != C_DONE && c->phase != C_BLOCKED;
}

bool ctr_will_restart(const struct ctr *c, int exit_code) {
        const char *p = c->pod->restart_policy;
        if (c->pod->deleting || c->pod->deadline_exceeded || c->pod->unlinked)
                return false;
        return !strcmp(p, "Always") || (!strcmp(p, "OnFailure") && exit_code != 0);
}

/* ---- exit and restart ------------------------------------------------------ */

static void schedule_restart(struct ctr *c, json_t *term) {
        uint64_t ran = uv_now(c->pod->mgr->loop) - c->run_started_ms;
        if (c->started_once && ran >= LONG_RUN_MS)
                c->crash_streak = 0;
        uint64_t delay = backoff_delay(c, c->crash_streak);
        c->crash_streak++;
        json_decref(c->last_state);
        c->last_state = json_pack("{s:O}", "terminated", term);
        if (delay == 0) {
                json_decref(c->state);
                c->state = json_pack("{s:O}", "terminated", term);
                c->phase = C_IDLE;
                pod_changed(c->pod);
                if (c->phase == C_IDLE)
                        ctr_advance(c);
                return;
        }
        char d[32], msg[512];
        fmt_duration(delay, d, sizeof(d));
        snprintf(msg, sizeof(msg), "back-off %s restarting failed container=%s pod=%s_%s(%s)", d, c->name,
                 c->pod->name, c->pod->ns, c->pod->uid);
        ctr_set_waiting(c, "CrashLoopBackOff", msg);
        c->phase = C_BACKOFF;
        uv_timer_start(&c->timer, on_timer, delay, 0);
        pod_changed(c->pod);
}

/* The run ended (or never began): record it, then restart or stop. */
static void ctr_exited(struct ctr *c, int exit_code, int signal, const char *reason, const char *message) {
        char now[40], started[40];
        time_now(now, sizeof(now));
        if (c->run_started)
                lg_store_format_time(c->run_started, started, sizeof(started));
        else
                snprintf(started, sizeof(started), "%s", now);
        json_t *term = json_pack("{s:i, s:s, s:s, s:s}", "exitCode", exit_code, "reason", reason, "startedAt",
                                 started, "finishedAt", now);
        if (signal)
                json_object_set_new(term, "signal", json_integer(signal));
        if (message && *message)
                json_object_set_new(term, "message", json_string(message));
        if (c->container_id[0])
                json_object_set_new(term, "containerID", json_string(c->container_id));
        if (ctr_will_restart(c, exit_code)) {
                schedule_restart(c, term);
        } else {
                json_decref(c->state);
                c->state = json_pack("{s:O}", "terminated", term);
                c->phase = C_DONE;
                pod_changed(c->pod);
        }
        json_decref(term);
}

struct destroy_job {
        lg_agent_req req;
        void (*done)(void *arg);
        void *arg;
};

static void destroyed(lg_agent_req *req) {
        struct destroy_job *j = req->data;
        void (*done)(void *) = j->done;
        void *arg = j->arg;
        free(j);
        if (done)
                done(arg);
}

bool pods_destroy(lg_pods *m, const char *id, void (*done)(void *arg), void *arg) {
        struct destroy_job *j = calloc(1, sizeof(*j));
        if (j) {
                j->done = done;
                j->arg = arg;
                j->req.data = j;
                if (lg_agent_destroy(m->agent, &j->req, id, destroyed) == 0)
                        return true;
                free(j);
        }
        /* Out of memory: the agent still destroys it, nobody told. */
        lg_agent_destroy(m->agent, NULL, id, NULL);
        return false;
}

static void exited_destroyed(void *arg) {
        struct pod *pod = arg;
        pod->jobs--;
        pod_release(pod);
}

/* Its destroy queued at the agent (cgroups, state directory, uid range
 * removed off the loop): on a busy machine those rmdirs took
 * milliseconds, and the client waits for the status, not for the
 * cleanup. The pod's memory stays until it is done. */
static void destroy_sandbox(struct ctr *c) {
        if (!c->has_sb)
                return;
        stop_exit_poll(c); /* before the destroy closes the pidfd it watches */
        c->has_sb = false;
        c->pidfd = -1;
        struct pod *pod = c->pod;
        if (!pod->unlinked && pod->net_sb[0] && !strcmp(c->sb_id, pod->net_sb)) {
                /* Its address is the pod's while the pod's network
                 * namespace lives: kept until the pod goes. */
                pod->net_sb_kept = true;
                return;
        }
        if (pods_destroy(pod->mgr, c->sb_id, exited_destroyed, pod))
                pod->jobs++;
}

void pod_net_sb_destroy(struct pod *pod) {
        if (pod->net_sb_kept && pods_destroy(pod->mgr, pod->net_sb, exited_destroyed, pod))
                pod->jobs++;
        pod->net_sb_kept = false;
        pod->net_sb[0] = '\0';
}

static void take_exit(struct ctr *c, const lg_agent_req *req) {
        const struct lg_sandbox_status *st = &req->out.status;
        struct lg_sandbox_status killed = {.kind = LG_EXIT_SIGNAL, .signal = SIGKILL};
        if (req->result < 0 || req->out.exited != 1)
                st = &killed;
        int code = 0, sig = 0;
        const char *reason;
        switch (st->kind) {
        case LG_EXIT_OOM:
                code = 137;
                reason = "OOMKilled";
                break;
        case LG_EXIT_SIGNAL:
                sig = st->signal;
                code = 128 + st->signal;
                reason = "Error";
                break;
        default:
                code = st->code;
                reason = code == 0 ? "Completed" : "Error";
                break;
        }
        /* As containerd reports it: any OOM kill in the container's cgroup
         * (the workload's shell may survive the process it lost). */
        if (st->kind != LG_EXIT_OOM && code != 0 && req->out.stats_result == 0 && req->out.stats.oom_kills > 0)
                reason = "OOMKilled";
        /* Queued first: the job keeps the pod's memory while ctr_exited
         * may finish a deletion. */
        destroy_sandbox(c);
        ctr_exited(c, code, sig, reason, NULL);
}

static void on_exit_poll(uv_poll_t *h, int status, int events);

static void on_status(lg_agent_req *req) {
        struct ctr *c = req->data;
        struct pod *pod = c->pod;
        pod->jobs--;
        if (c->phase != C_RUNNING || !c->has_sb) {
                /* Killed meanwhile: ctr_kill took it. */
                pod_release(pod);
                return;
        }
        if (req->result >= 0 && req->out.exited == 0 && c->exit_poll) {
                /* Not yet: watch again. */
                uv_poll_start(&c->exit_poll->h, UV_READABLE, on_exit_poll);
                return;
        }
        take_exit(c, req);
}

/* legion-init's pidfd is readable: the agent reaps it and says how it
 * ended. Level-triggered: quiet until it answers. */
static void on_exit_poll(uv_poll_t *h, int status, int events) {
        (void) events;
        (void) status;
        struct exit_poll *p = (struct exit_poll *) h;
        struct ctr *c = p->c;
        if (!c->has_sb)
                return;
        uv_poll_stop(&p->h);
        c->status_req.data = c;
        if (lg_agent_status(c->pod->mgr->agent, &c->status_req, c->sb_id, on_status) < 0) {
                c->status_req.result = -ESRCH;
                take_exit(c, &c->status_req);
                return;
        }
        c->pod->jobs++;
}

/* The killed container's sandbox is gone: a deletion may finish. */
static void kill_done(lg_agent_req *req) {
        struct ctr *c = req->data;
        struct pod *pod = c->pod;
        pod->jobs--;
        c->killing = false;
        if (pod->unlinked)
                pod_release(pod);
        else
                pod_changed(pod);
}

void ctr_kill(struct ctr *c, const char *reason, const char *message) {
        switch (c->phase) {
        case C_RUNNING: {
                /* SIGKILL to legion-init, everything dies, off the loop.
                 * Terminated now; a deletion finishes once it is gone
                 * (killing holds it). */
                stop_exit_poll(c); /* before the destroy closes the pidfd it watches */
                c->has_sb = false;
                c->pidfd = -1;
                c->kill_req.data = c;
                if (lg_agent_destroy(c->pod->mgr->agent, &c->kill_req, c->sb_id, kill_done) == 0) {
                        c->pod->jobs++;
                        c->killing = true;
                }
                c->phase = C_DONE; /* before ctr_exited: no restart either way */
                ctr_exited(c, 137, SIGKILL, reason, message);
                break;
        }
        case C_BACKOFF:
        case C_PULL_WAIT:
        case C_IDLE:
        case C_WAIT_NS:
        case C_BLOCKED:
                uv_timer_stop(&c->timer);
                c->phase = C_DONE;
                break;
        default:
                break; /* a job is queued: its done callback sees the pod's flags */
        }
}

static void signalled(lg_agent_req *req) { free(req); }

void ctr_term(struct ctr *c) {
        if (c->phase == C_RUNNING && c->has_sb) {
                /* Gone already, or no memory: the grace period ends in a kill. */
                lg_agent_req *req = calloc(1, sizeof(*req));
                if (req && lg_agent_signal(c->pod->mgr->agent, req, c->sb_id, SIGTERM, signalled) < 0)
                        free(req);
        } else {
                ctr_stop(c);
        }
}

void ctr_stop(struct ctr *c) {
        if (c->phase == C_RUNNING || c->phase == C_CREATING || c->phase == C_PULLING || c->phase == C_DONE)
                return;
        uv_timer_stop(&c->timer);
        c->phase = C_DONE;
}

void ctr_restart_now(struct ctr *c) {
        c->phase = C_IDLE;
        c->run_started_ms = uv_now(c->pod->mgr->loop);
        ctr_exited(c, 137, 0, "Error", "legiond restarted");
}

/* ---- image pull ------------------------------------------------------------ */

static void pull_work(uv_work_t *w) {
        struct ctr *c = w->data;
        struct lg_registry_auth auth = {0};
        c->pull_result = lg_image_pull(c->pod->mgr->images, c->pull_ref, &auth, NULL, NULL, &c->pull_img,
                                       &c->pull_err);
}

static void pull_done(uv_work_t *w, int status) {
        struct ctr *c = w->data;
        struct pod *pod = c->pod;
        pod->jobs--;
        if (status < 0 && c->pull_result >= 0)
                c->pull_result = status;
        if (pod->unlinked || pod->deleting || pod->deadline_exceeded) {
                lg_image_free(c->pull_img);
                c->pull_img = NULL;
                c->phase = C_DONE;
                if (pod->unlinked)
                        pod_release(pod);
                else
                        pod_changed(pod);
                return;
        }
        if (c->pull_result < 0) {
                lg_image_free(c->pull_img);
                c->pull_img = NULL;
                c->pull_failures++;
                char msg[700];
                snprintf(msg, sizeof(msg), "failed to pull image \"%s\": %s",
                         json_string_value(json_object_get(c->spec, "image")),
                         c->pull_err.msg[0] ? c->pull_err.msg : strerror(-c->pull_result));
                ctr_set_waiting(c, "ErrImagePull", msg);
                c->phase = C_PULL_WAIT;
                c->pull_stage = PULL_WAIT_ERR;
                uint64_t d = backoff_delay(c, c->pull_failures);
                uv_timer_start(&c->timer, on_timer, d < ERR_PULL_SHOW_MS ? d : ERR_PULL_SHOW_MS, 0);
                pod_changed(pod);
                return;
        }
        lg_image_free(c->img);
        c->img = c->pull_img;
        c->pull_img = NULL;
        c->pull_failures = 0;
        c->pulled_this_start = true;
        c->phase = C_IDLE;
        ctr_advance(c);
}

static void start_pull(struct ctr *c, const char *image) {
        free(c->pull_ref);
        c->pull_ref = strdup(image);
        if (!c->pull_ref) {
                ctr_set_waiting(c, "ErrImagePull", "out of memory");
                c->phase = C_BLOCKED;
                pod_changed(c->pod);
                return;
        }
        c->pull_err = (struct lg_error){0};
        c->pull_result = 0;
        c->pull_img = NULL;
        c->phase = C_PULLING;
        if (!c->started_once && c->pull_failures == 0)
                ctr_set_waiting(c, "ContainerCreating", NULL);
        c->pull_work.data = c;
        c->pod->jobs++;
        int r = uv_queue_work(c->pod->mgr->loop, &c->pull_work, pull_work, pull_done);
        if (r < 0) {
                c->pod->jobs--;
                c->pull_result = r;
                c->pull_work.data = c;
                c->pod->jobs++;
                pull_done(&c->pull_work, r);
                return;
        }
        pod_changed(c->pod);
}

static void on_timer(uv_timer_t *t) {
        struct ctr *c = t->data;
        if (c->phase == C_PULL_WAIT && c->pull_stage == PULL_WAIT_ERR) {
                char msg[600];
                snprintf(msg, sizeof(msg), "Back-off pulling image \"%s\"",
                         json_string_value(json_object_get(c->spec, "image")));
                ctr_set_waiting(c, "ImagePullBackOff", msg);
                c->pull_stage = PULL_WAIT_BACKOFF;
                uint64_t d = backoff_delay(c, c->pull_failures);
                uv_timer_start(&c->timer, on_timer, d > ERR_PULL_SHOW_MS ? d - ERR_PULL_SHOW_MS : 0, 0);
                pod_changed(c->pod);
                return;
        }
        if (c->phase == C_PULL_WAIT || c->phase == C_BACKOFF) {
                c->phase = C_IDLE;
                ctr_advance(c);
        }
}

/* ---- sandbox creation ------------------------------------------------------ */

static void create_failed(struct ctr *c, const char *msg) {
        ctr_exited(c, 128, 0, "ContainerCannotRun", msg);
}

static void close_fd(int *fd) {
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

static void create_new(struct ctr *c);

/* The pod went away (deleted, past its deadline, unlinked) while a
 * request of this creation ran: its sandbox goes. true when it did. */
static bool creation_abandoned(struct ctr *c) {
        struct pod *pod = c->pod;
        if (!(pod->unlinked || pod->deleting || pod->deadline_exceeded))
                return false;
        destroy_sandbox(c);
        if (c->from_warm) {
                c->from_warm = false;
                close_fd(&c->ns_net);
                close_fd(&c->ns_ipc);
                c->makes_ns = false;
                pod->ns_pending = false;
        }
        c->phase = C_DONE;
        if (pod->unlinked) {
                pod_release(pod);
                return true;
        }
        pod_wake_ns_waiters(pod);
        pod_changed(pod);
        return true;
}

/* Limits or start failed: the sandbox goes. A warm one died waiting,
 * say: a new one is made as usual. */
static void start_failed(struct ctr *c, const lg_agent_req *req) {
        struct pod *pod = c->pod;
        char msg[600];
        snprintf(msg, sizeof(msg), "%s", req->err.msg[0] ? req->err.msg : strerror(-req->result));
        destroy_sandbox(c);
        if (c->from_warm) {
                c->from_warm = false;
                c->warm_tried = true;
                close_fd(&c->ns_net);
                close_fd(&c->ns_ipc);
                memcpy(c->container_id, c->prev_container_id, sizeof(c->container_id));
                create_new(c);
                return;
        }
        create_failed(c, msg);
        pod_wake_ns_waiters(pod);
}

/* A started sandbox: watch it, show it running. */
static void ctr_running(struct ctr *c) {
        struct pod *pod = c->pod;
        struct exit_poll *p = calloc(1, sizeof(*p));
        if (!p || uv_poll_init(pod->mgr->loop, &p->h, c->pidfd) < 0) {
                free(p);
                destroy_sandbox(c);
                create_failed(c, "cannot watch the sandbox");
                pod_wake_ns_waiters(pod);
                return;
        }
        p->c = c;
        pod->handles++;
        c->exit_poll = p;
        c->phase = C_RUNNING;
        c->started_once = true;
        char now[40];
        lg_store_format_time(c->run_started, now, sizeof(now));
        json_decref(c->state);
        c->state = json_pack("{s:{s:s}}", "running", "startedAt", now);
        uv_poll_start(&p->h, UV_READABLE, on_exit_poll);
        pod_wake_ns_waiters(pod);
        pod_changed(pod);
        /* After the status is written: the next pod of this image finds
         * a warm sandbox (made at low priority on the thread pool). */
        if (c->warm_fit && c->img)
                warm_used(pod->mgr, c->img);
}

static void start_done(lg_agent_req *req) {
        struct ctr *c = req->data;
        struct pod *pod = c->pod;
        pod->jobs--;
        if (creation_abandoned(c))
                return;
        if (req->result < 0) {
                start_failed(c, req);
                return;
        }
        if (c->from_warm) {
                /* Its namespaces become the pod's. */
                c->from_warm = false;
                c->makes_ns = false;
                pod->ns_pending = false;
                pod->netns_fd = c->ns_net;
                pod->ipcns_fd = c->ns_ipc;
                c->ns_net = c->ns_ipc = -1;
                if (pod->pod_ip[0])
                        snprintf(pod->net_sb, sizeof(pod->net_sb), "%s", c->sb_id);
        }
        ctr_running(c);
}

/* Limits, then the workload, into a created (or warm) sandbox, in one
 * request: it runs (start_done). A warm one goes back to legiond's
 * priority. */
static void ctr_start(struct ctr *c) {
        const struct lg_sandbox_spec *s = &c->sspec;
        struct pod *pod = c->pod;
        c->run_started = pod_now();
        c->run_started_ms = uv_now(pod->mgr->loop);
        snprintf(c->container_id, sizeof(c->container_id), "legion://%s", c->sb_id);
        struct lg_agent_limits lim = {.set = LG_AGENT_SET_LIMITS | (c->from_warm ? LG_AGENT_SET_PRIO : 0),
                                      .memory_bytes = s->memory_bytes, .cpu_millis = s->cpu_millis,
                                      .cpu_weight = s->cpu_weight, .pids_max = s->pids_max};
        c->start_req.data = c;
        /* A warm sandbox has its address: its tenant comes with the start. */
        c->start_req.in.start.net = (struct lg_agent_net){0};
        if (c->from_warm && pod->pod_ip[0] && pod_networked(pod))
                pod_tenant(pod, &c->start_req.in.start.net);
        int r = lg_agent_start(pod->mgr->agent, &c->start_req, c->sb_id, &c->launch, &lim, start_done);
        if (r >= 0) {
                pod->jobs++;
                return;
        }
        c->start_req.result = lg_error_set(&c->start_req.err, -r, "start sandbox `%s`", c->sb_id);
        start_failed(c, &c->start_req);
}

/* A create or adopt request answered: the container holds its sandbox
 * when it succeeded. */
static bool took_sandbox(struct ctr *c, const lg_agent_req *req) {
        if (req->result < 0)
                return false;
        snprintf(c->sb_id, sizeof(c->sb_id), "%s", req->id);
        c->has_sb = true;
        c->pidfd = req->out.pidfd;
        return true;
}

bool pod_networked(const struct pod *pod) { return !pod->host_network && pod->mgr->net; }

void pod_tenant(const struct pod *pod, struct lg_agent_net *net) {
        snprintf(net->namespace, sizeof(net->namespace), "%s", pod->ns);
        snprintf(net->policy, sizeof(net->policy), "%s", pod->net_policy);
}

static void create_done(lg_agent_req *req) {
        struct ctr *c = req->data;
        struct pod *pod = c->pod;
        pod->jobs--;
        bool ok = took_sandbox(c, req);
        if (c->makes_ns) {
                c->makes_ns = false;
                pod->ns_pending = false;
                if (ok && !pod->unlinked) {
                        pod->ipcns_fd = req->out.ipcns_fd;
                        pod->netns_fd = req->out.netns_fd;
                        snprintf(pod->pod_ip, sizeof(pod->pod_ip), "%s", req->out.net.ip);
                        if (pod->pod_ip[0])
                                snprintf(pod->net_sb, sizeof(pod->net_sb), "%s", req->id);
                } else {
                        close_fd(&req->out.ipcns_fd);
                        close_fd(&req->out.netns_fd);
                }
        }
        if (creation_abandoned(c))
                return;
        if (!ok) {
                create_failed(c, req->err.msg[0] ? req->err.msg : strerror(-req->result));
                pod_wake_ns_waiters(pod);
                return;
        }
        ctr_start(c);
}

/* A new sandbox for c (create_done); makes_ns: it opens the pod's
 * namespaces. */
static void create_new(struct ctr *c) {
        struct pod *pod = c->pod;
        c->ns_net = c->ns_ipc = -1;
        c->phase = C_CREATING;
        c->create_req.data = c;
        /* The sandbox that makes the pod's network namespace gives it its
         * address, assigned to the pod's tenant before the workload runs;
         * the pod's other containers join it. */
        c->create_req.in.create.net = (struct lg_agent_net){.attach = c->makes_ns && pod_networked(pod)};
        if (c->create_req.in.create.net.attach)
                pod_tenant(pod, &c->create_req.in.create.net);
        int r = lg_agent_create(pod->mgr->agent, &c->create_req, NULL, &c->sspec, c->makes_ns ? LG_AGENT_OPEN_NS : 0,
                                create_done);
        if (r < 0) {
                char msg[128];
                snprintf(msg, sizeof(msg), "queue sandbox creation: %s", strerror(-r));
                if (c->makes_ns) {
                        c->makes_ns = false;
                        pod->ns_pending = false;
                }
                create_failed(c, msg);
                pod_wake_ns_waiters(pod);
                return;
        }
        pod->jobs++;
        pod_changed(pod);
}

/* ---- taken back after a legiond restart ------------------------------------ */

static void assigned(lg_agent_req *req) { free(req); }

/* An adopted pod's address back to its tenant (assignments do not
 * survive a restart). Best effort: without it the pod reaches DNS only. */
static void reassign(struct pod *pod, const char *sb_id) {
        lg_agent_req *req = calloc(1, sizeof(*req));
        if (req && lg_agent_net_assign(pod->mgr->agent, req, sb_id, pod->ns, pod->net_policy, assigned) < 0)
                free(req);
}

static void adopt_done(lg_agent_req *req) {
        struct ctr *c = req->data;
        struct pod *pod = c->pod;
        lg_pods *m = pod->mgr;
        pod->jobs--;
        m->adopting--;
        bool ok = took_sandbox(c, req);
        if (c->makes_ns) {
                /* Its namespaces become the pod's, for the containers
                 * that start again later. */
                c->makes_ns = false;
                pod->ns_pending = false;
                if (ok && !pod->unlinked) {
                        char path[64];
                        snprintf(path, sizeof(path), "/proc/%d/ns/ipc", (int) req->out.pid);
                        pod->ipcns_fd = open(path, O_RDONLY | O_CLOEXEC);
                        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int) req->out.pid);
                        pod->netns_fd = pod->host_network ? -1 : open(path, O_RDONLY | O_CLOEXEC);
                        snprintf(pod->pod_ip, sizeof(pod->pod_ip), "%s", req->out.net.ip);
                        if (pod->pod_ip[0])
                                snprintf(pod->net_sb, sizeof(pod->net_sb), "%s", req->id);
                        if (pod->pod_ip[0] && pod_networked(pod))
                                reassign(pod, req->id);
                }
        }
        if (creation_abandoned(c))
                return;
        if (!ok) {
                /* Its sandbox did not survive: restarted as before. */
                pod_wake_ns_waiters(pod);
                ctr_restart_now(c);
                return;
        }
        /* Its layers stay in use (image GC's keep list); best effort. */
        const char *image = json_string_value(json_object_get(c->spec, "image"));
        if (!c->img && image && m->images)
                lg_image_get(m->images, image, &c->img, NULL);
        c->run_started_ms = uv_now(m->loop);
        ctr_running(c);
}

int ctr_adopt(struct ctr *c) {
        struct pod *pod = c->pod;
        if (strncmp(c->container_id, "legion://", 9))
                return -ENOENT;
        if (pod->ipcns_fd < 0 && !pod->ns_pending) {
                pod->ns_pending = true;
                c->makes_ns = true;
        }
        c->phase = C_CREATING;
        c->create_req.data = c;
        int r = lg_agent_adopt_in(pod->mgr->agent, &c->create_req, pod->mgr->state_root, c->container_id + 9,
                                  adopt_done);
        if (r < 0) {
                if (c->makes_ns) {
                        c->makes_ns = false;
                        pod->ns_pending = false;
                }
                c->phase = C_IDLE;
                return r;
        }
        pod->jobs++;
        pod->mgr->adopting++;
        return 0;
}

static void detached(lg_agent_req *req) { free(req); }

void ctr_detach(struct ctr *c) {
        if (c->phase != C_RUNNING || !c->has_sb)
                return;
        stop_exit_poll(c); /* before the agent closes the pidfd it watches */
        lg_agent_req *req = calloc(1, sizeof(*req));
        if (req && lg_agent_detach(c->pod->mgr->agent, req, c->sb_id, detached) < 0)
                free(req);
        c->has_sb = false;
        c->pidfd = -1;
        c->phase = C_DONE;
}

/* The pod's first container in a warm sandbox of its image: its
 * namespaces become the pod's once it runs. 1 = taken, 0 = none ready
 * (the caller makes one). */
static int start_warm(struct ctr *c) {
        struct pod *pod = c->pod;
        char ip[LG_NET_IP_MAX];
        if (!warm_take(pod->mgr, c->img, c->sb_id, &c->pidfd, &c->ns_net, &c->ns_ipc, ip))
                return 0;
        snprintf(pod->pod_ip, sizeof(pod->pod_ip), "%s", ip);
        c->has_sb = true;
        c->from_warm = true;
        memcpy(c->prev_container_id, c->container_id, sizeof(c->container_id));
        c->phase = C_CREATING;
        ctr_start(c);
        if (c->phase == C_CREATING)
                pod_changed(pod);
        return 1;
}

void pod_wake_ns_waiters(struct pod *pod) {
        for (size_t i = 0; i < pod->n_ctrs; i++)
                if (pod->ctrs[i].phase == C_WAIT_NS) {
                        pod->ctrs[i].phase = C_IDLE;
                        ctr_advance(&pod->ctrs[i]);
                }
}

/* Move the log of the run before to <name>.previous.log. */
static void rotate_log(struct ctr *c) {
        char dir[4096], cur[4300], prev[4300];
        pod_log_dir(c->pod, dir, sizeof(dir));
        snprintf(cur, sizeof(cur), "%s/%s.log", dir, c->name);
        snprintf(prev, sizeof(prev), "%s/%s.previous.log", dir, c->name);
        if (rename(cur, prev) < 0 && errno == ENOENT)
                unlink(prev);
}

static void start_create(struct ctr *c) {
        struct pod *pod = c->pod;
        if (pod->ipcns_fd < 0) {
                if (pod->ns_pending) {
                        c->phase = C_WAIT_NS;
                        return;
                }
                c->makes_ns = true;
                pod->ns_pending = true;
        }
        const char *reason = NULL;
        struct lg_error err = {0};
        if (ctr_build_sandbox_spec(c, &reason, &err) < 0) {
                if (c->makes_ns) {
                        c->makes_ns = false;
                        pod->ns_pending = false;
                }
                ctr_set_waiting(c, reason ? reason : "CreateContainerError", err.msg);
                c->phase = C_BLOCKED;
                pod_changed(pod);
                pod_wake_ns_waiters(pod);
                return;
        }
        char dir[4096];
        pod_log_dir(pod, dir, sizeof(dir));
        lg_mkdir_p(dir, 0750);
        if (c->started_once) {
                c->restart_count++;
                rotate_log(c);
        }
        if (!c->started_once && !json_object_get(c->state, "terminated"))
                ctr_set_waiting(c, "ContainerCreating", NULL);
        c->warm_fit = warm_fits(c);
        c->warm_tried = false;
        if (c->warm_fit && start_warm(c))
                return;
        create_new(c);
}

void ctr_advance(struct ctr *c) {
        struct pod *pod = c->pod;
        if (c->phase != C_IDLE)
                return;
        if (pod->unlinked || pod->deleting || pod->deadline_exceeded) {
                c->phase = C_DONE;
                return;
        }
        const char *image = json_string_value(json_object_get(c->spec, "image"));
        const char *policy = pull_policy(c);
        bool always = !strcmp(policy, "Always");
        if (!image || !*image) {
                ctr_set_waiting(c, "InvalidImageName", "the container has no image");
                c->phase = C_BLOCKED;
                pod_changed(pod);
                return;
        }
        if (always && !c->pulled_this_start) {
                start_pull(c, image);
                return;
        }
        if (!c->img) {
                struct lg_image *img = NULL;
                struct lg_error err = {0};
                int r = pod->mgr->images ? lg_image_get(pod->mgr->images, image, &img, &err) : -ENOENT;
                if (r < 0) {
                        if (r == -EINVAL) {
                                ctr_set_waiting(c, "InvalidImageName", err.msg);
                                c->phase = C_BLOCKED;
                                pod_changed(pod);
                                return;
                        }
                        if (!strcmp(policy, "Never")) {
                                char msg[600];
                                snprintf(msg, sizeof(msg),
                                         "Container image \"%s\" is not present with pull policy of Never", image);
                                ctr_set_waiting(c, "ErrImageNeverPull", msg);
                                c->phase = C_BLOCKED;
                                pod_changed(pod);
                                return;
                        }
                        start_pull(c, image);
                        return;
                }
                c->img = img;
        }
        snprintf(c->image_id, sizeof(c->image_id), "%s", c->img->id);
        if (always)
                c->pulled_this_start = false; /* the next start pulls again */
        start_create(c);
}
