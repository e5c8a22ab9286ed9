/* One container of a pod, on legiond's loop: resolve or pull its image
 * (pulls on the thread pool, retried with back-off as kubelet does:
 * ErrImagePull, then ImagePullBackOff), create its sandbox on the thread
 * pool, start it, watch its pidfd, and on exit record the terminated state
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
        uv_work_t w;
        lg_sandbox *sb;
        void (*done)(void *arg);
        void *arg;
};

static void destroy_work(uv_work_t *w) {
        struct destroy_job *j = w->data;
        lg_sandbox_destroy(j->sb);
}

static void destroy_done(uv_work_t *w, int status) {
        (void) status;
        struct destroy_job *j = w->data;
        void (*done)(void *) = j->done;
        void *arg = j->arg;
        free(j);
        done(arg);
}

bool pods_destroy_later(uv_loop_t *loop, lg_sandbox *sb, void (*done)(void *arg), void *arg) {
        struct destroy_job *j = calloc(1, sizeof(*j));
        if (j) {
                *j = (struct destroy_job){.sb = sb, .done = done, .arg = arg};
                j->w.data = j;
                if (uv_queue_work(loop, &j->w, destroy_work, destroy_done) == 0)
                        return true;
                free(j);
        }
        lg_sandbox_destroy(sb);
        return false;
}

static void exited_destroyed(void *arg) {
        struct pod *pod = arg;
        pod->jobs--;
        pod_release(pod);
}

/* Removing an exited sandbox (cgroups, state directory, uid range) is
 * done on the thread pool after the terminated state is written: on a busy
 * machine those rmdirs took milliseconds, and the client waits for the
 * status, not for the cleanup. Its processes are gone already (legion-init
 * was reaped), so nothing of it runs or holds the image's layers. */
static void destroy_later(struct pod *pod, lg_sandbox *sb) {
        if (pods_destroy_later(pod->mgr->loop, sb, exited_destroyed, pod))
                pod->jobs++;
}

static void take_exit(struct ctr *c, const struct lg_sandbox_status *st) {
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
        struct lg_sandbox_stats stats;
        if (st->kind != LG_EXIT_OOM && code != 0 && lg_sandbox_stats(c->sb, &stats) == 0 && stats.oom_kills > 0)
                reason = "OOMKilled";
        stop_exit_poll(c); /* before destroy closes the pidfd it watches */
        /* Queued first: the job keeps the pod's memory while ctr_exited
         * may finish a deletion. */
        destroy_later(c->pod, c->sb);
        c->sb = NULL;
        ctr_exited(c, code, sig, reason, NULL);
}

static void on_exit_poll(uv_poll_t *h, int status, int events) {
        (void) events;
        struct exit_poll *p = (struct exit_poll *) h;
        struct ctr *c = p->c;
        struct lg_sandbox_status st;
        if (!c->sb)
                return;
        int r = lg_sandbox_poll(c->sb, &st);
        if (r == 0 && status >= 0)
                return; /* not yet */
        if (r < 0)
                st = (struct lg_sandbox_status){.kind = LG_EXIT_SIGNAL, .signal = SIGKILL};
        take_exit(c, &st);
}

void ctr_kill(struct ctr *c, const char *reason, const char *message) {
        switch (c->phase) {
        case C_RUNNING: {
                stop_exit_poll(c); /* before destroy closes the pidfd it watches */
                lg_sandbox_destroy(c->sb); /* SIGKILL to legion-init: everything dies */
                c->sb = NULL;
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

void ctr_term(struct ctr *c) {
        if (c->phase == C_RUNNING && c->sb)
                lg_sandbox_signal(c->sb, SIGTERM);
        else
                ctr_stop(c);
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

static int open_ns(pid_t pid, const char *ns) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int) pid, ns);
        return open(path, O_RDONLY | O_CLOEXEC);
}

int pods_open_ns(lg_sandbox *sb, bool net, int *ipcns, int *netns, struct lg_error *err) {
        pid_t pid = lg_sandbox_pid(sb);
        *ipcns = open_ns(pid, "ipc");
        *netns = net ? open_ns(pid, "net") : -1;
        if (*ipcns < 0 || (net && *netns < 0))
                return lg_error_set(err, errno, "open the namespaces of sandbox `%s`", lg_sandbox_id(sb));
        return 0;
}

static void create_work(uv_work_t *w) {
        struct ctr *c = w->data;
        c->create_result = lg_sandbox_create(&c->sspec, &c->new_sb, &c->create_err);
        if (c->create_result >= 0 && c->makes_ns)
                c->create_result = pods_open_ns(c->new_sb, !c->sspec.share_net, &c->ns_ipc, &c->ns_net,
                                                &c->create_err);
}

static void create_failed(struct ctr *c, const char *msg) {
        ctr_exited(c, 128, 0, "ContainerCannotRun", msg);
}

static int ctr_start(struct ctr *c, lg_sandbox *sb, struct lg_error *err);
static void ctr_running(struct ctr *c, lg_sandbox *sb);

static void create_done(uv_work_t *w, int status) {
        struct ctr *c = w->data;
        struct pod *pod = c->pod;
        pod->jobs--;
        if (status < 0 && c->create_result >= 0)
                c->create_result = lg_error_set(&c->create_err, -status, "sandbox creation cancelled");
        if (c->makes_ns) {
                c->makes_ns = false;
                pod->ns_pending = false;
                if (c->create_result >= 0 && !pod->unlinked) {
                        pod->ipcns_fd = c->ns_ipc;
                        pod->netns_fd = c->ns_net;
                } else {
                        if (c->ns_ipc >= 0)
                                close(c->ns_ipc);
                        if (c->ns_net >= 0)
                                close(c->ns_net);
                }
                c->ns_ipc = c->ns_net = -1;
        }
        lg_sandbox *sb = c->new_sb;
        c->new_sb = NULL;
        if (pod->unlinked || pod->deleting || pod->deadline_exceeded) {
                lg_sandbox_destroy(sb);
                c->phase = C_DONE;
                if (pod->unlinked) {
                        pod_release(pod);
                        return;
                }
                pod_wake_ns_waiters(pod);
                pod_changed(pod);
                return;
        }
        if (c->create_result < 0) {
                create_failed(c, c->create_err.msg[0] ? c->create_err.msg : strerror(-c->create_result));
                pod_wake_ns_waiters(pod);
                return;
        }
        struct lg_error err = {0};
        if (ctr_start(c, sb, &err) < 0) {
                lg_sandbox_destroy(sb);
                create_failed(c, err.msg);
                pod_wake_ns_waiters(pod);
                return;
        }
        ctr_running(c, sb);
}

/* Limits and workload into a created (or warm) sandbox: it runs. */
static int ctr_start(struct ctr *c, lg_sandbox *sb, struct lg_error *err) {
        const struct lg_sandbox_spec *s = &c->sspec;
        c->run_started = pod_now();
        c->run_started_ms = uv_now(c->pod->mgr->loop);
        snprintf(c->container_id, sizeof(c->container_id), "legion://%s", lg_sandbox_id(sb));
        int r = lg_sandbox_set_limits(sb, s->memory_bytes, s->cpu_millis, s->cpu_weight, s->pids_max, err);
        if (r < 0)
                return r;
        return lg_sandbox_start_with(sb, &c->launch, err);
}

/* A started sandbox: watch it, show it running. */
static void ctr_running(struct ctr *c, lg_sandbox *sb) {
        struct pod *pod = c->pod;
        struct exit_poll *p = calloc(1, sizeof(*p));
        if (!p || uv_poll_init(pod->mgr->loop, &p->h, lg_sandbox_pidfd(sb)) < 0) {
                free(p);
                lg_sandbox_destroy(sb);
                create_failed(c, "cannot watch the sandbox");
                pod_wake_ns_waiters(pod);
                return;
        }
        p->c = c;
        pod->handles++;
        c->exit_poll = p;
        c->sb = sb;
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

/* The pod's first container in a warm sandbox of its image: its
 * namespaces become the pod's. 1 = running, 0 = none could be used (the
 * caller makes one). */
static int start_warm(struct ctr *c) {
        struct pod *pod = c->pod;
        lg_sandbox *sb;
        int netns, ipcns;
        if (!warm_take(pod->mgr, c->img, &sb, &netns, &ipcns))
                return 0;
        struct lg_error err = {0};
        char last_id[sizeof(c->container_id)];
        memcpy(last_id, c->container_id, sizeof(last_id));
        if (ctr_start(c, sb, &err) < 0) {
                /* It died waiting, say: a new one is made as usual. */
                lg_sandbox_destroy(sb);
                close(netns);
                close(ipcns);
                memcpy(c->container_id, last_id, sizeof(last_id));
                return 0;
        }
        c->makes_ns = false;
        pod->ns_pending = false;
        pod->netns_fd = netns;
        pod->ipcns_fd = ipcns;
        c->phase = C_CREATING;
        ctr_running(c, sb);
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
        if (c->warm_fit && start_warm(c))
                return;
        c->new_sb = NULL;
        c->ns_net = c->ns_ipc = -1;
        c->create_result = 0;
        c->create_err = (struct lg_error){0};
        c->phase = C_CREATING;
        c->create_work.data = c;
        pod->jobs++;
        int r = uv_queue_work(pod->mgr->loop, &c->create_work, create_work, create_done);
        if (r < 0) {
                c->create_result = lg_error_set(&c->create_err, -r, "queue sandbox creation");
                create_done(&c->create_work, 0);
                return;
        }
        pod_changed(pod);
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
