/* Masters of the dask engine: Master records in the store (kind "Master",
 * namespaced), each a dask-scheduler in a detachable sandbox of its own on
 * the node's network, its address assigned to the master's namespace
 * (started with jobs_sandbox_start, watched with jobs_exit_watch_start,
 * adopted with jobs_sandbox_adopt at restore: jobs-run.c's calls over the
 * node agent). Ready once a TCP connection to IP:8786 is accepted
 * (node/probe.h). Deleted by the user, or when idle (no job) for
 * keepAliveSeconds; a master that failed is idle too, and goes the same
 * way. A master serves one job at a time: jobs-internal.h's "Masters"
 * says how a job acquires, is granted and releases one. It holds its cpu
 * and memory of the jobs' capacity from its deploy until its sandbox is
 * gone; its status.usage meters them per second from the recorded start,
 * so that a restart neither loses nor counts twice.
 *
 * Callbacks into the job core (a grant, a refusal, a loss) run from a
 * timer of their own (the kick), never from inside the call that caused
 * them.
 *
 * Lifetimes: a master is in the list while its record exists; its memory
 * stays until every request and handle of it is over (refs). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/spec.h"
#include "jobs/engine.h"
#include "jobs/jobs-internal.h"
#include "node/probe.h"

#define DEFAULT_KEEP_ALIVE 600
#define MAX_KEEP_ALIVE (366u * 24 * 3600)
#define READY_TIMEOUT_MS 120000
#define METER_MS 10000
#define STORE_RETRY_MS 10000

enum mphase { M_STARTING, M_READY, M_FAILED };
static const char *const phase_names[] = {"Starting", "Ready", "Failed"};

/* What the holder is to be told at the next kick. */
enum notify { N_NONE, N_GRANT, N_REFUSE, N_LOST };

struct master {
        lg_jobs *jobs;
        struct master *next;
        int refs;
        bool linked;
        char ns[LG_STORE_NAME_MAX + 1], name[LG_STORE_NAME_MAX + 1];
        json_t *spec;                     /* normalized */
        char engine[16];
        char *image;                      /* "" = host rootfs */
        struct lg_image *img;
        uint64_t cpu_millis, memory_bytes, keep_alive_s;
        bool holds_cap;                   /* cpu and memory taken from the jobs' capacity */

        enum mphase phase;
        char reason[32], message[512];
        char address[80], ip[LG_NET_IP_MAX];
        int64_t started_ms, finished_ms;  /* its sandbox ran (epoch ms); 0 = not (yet) */
        int64_t idle_since_ms;            /* 0 = held by a job */

        /* The job holding it, "" = idle. */
        char job[LG_STORE_NAME_MAX + 1];
        jobs_master_cb cb;                /* NULL once granted, refused or cancelled */
        void *cb_data;
        bool reused;                      /* it was there before the job: grant.reused */
        enum notify notify;
        struct lg_error why;              /* of a refusal or a loss */

        /* The sandbox: its id once known (records keep it), has_sb while
         * it exists and no destroy was submitted. */
        char sb_id[LG_AGENT_ID_MAX];
        bool has_sb;
        bool starting;                    /* a start or adopt under way */
        int pidfd;
        jobs_exit_watch *watch;
        lg_probe *probe;
        char *log_path;

        uv_timer_t idle_timer;
};

typedef struct jobs_masters jobs_masters;
struct jobs_masters {
        lg_jobs *jobs;
        struct master *list;
        unsigned live;                    /* masters and handles not yet freed */
        uv_timer_t kick, meter;
        bool freeing;
};

static const char *const master_env[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                         "HOME=/tmp", "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1", NULL};

/* ---- the spec ------------------------------------------------------------------ */

int jobs_master_spec(const json_t *spec, char *name, json_t **ret, struct lg_error *err) {
        char p[160];
        if (!json_is_object(spec))
                return lg_error_setm(err, EINVAL, "the master spec must be a JSON object");
        static const char *const allowed[] = {"name", "engine", "image", "cpu", "memory", "keepAliveSeconds", NULL};
        int r = lg_spec_only_fields(spec, "the master spec", allowed, err);
        if (r < 0)
                return r;
        /* A string with a NUL would be read shorter than it is stored. */
        for (size_t i = 0; allowed[i]; i++) {
                const json_t *x = json_object_get(spec, allowed[i]);
                if (json_is_string(x) && json_string_length(x) != strlen(json_string_value(x)))
                        return lg_error_setm(err, EINVAL, "bad `%s`: a string without NUL is wanted", allowed[i]);
        }
        const char *n = json_string_value(json_object_get(spec, "name"));
        if (!n)
                return lg_error_setm(err, EINVAL, "bad `name`: a master needs a name (a string)");
        if (!lg_store_valid_name(n)) {
                lg_printable(n, p, sizeof(p));
                return lg_error_setm(err, EINVAL, "bad `name`: `%s` (a DNS-1123 label: a-z, 0-9, '-', at most 63)",
                                     p);
        }
        const json_t *v;
        const char *engine = "dask";
        if ((v = json_object_get(spec, "engine")) && !(engine = json_string_value(v)))
                return lg_error_setm(err, EINVAL, "bad `engine`: a string is wanted");
        if (strcmp(engine, "dask")) {
                lg_printable(engine, p, sizeof(p));
                return lg_error_setm(err, EINVAL, "bad `engine`: `%s` has no master (masters are \"dask\")", p);
        }
        const char *image = "";
        if ((v = json_object_get(spec, "image")) && !(image = json_string_value(v)))
                return lg_error_setm(err, EINVAL, "bad `image`: a string is wanted (\"\" = the host rootfs)");
        if (strlen(image) > 255)
                return lg_error_setm(err, EINVAL, "bad `image`: not an image reference");
        for (const char *c = image; *c; c++)
                if ((unsigned char) *c <= ' ' || *c == 0x7f) {
                        lg_printable(image, p, sizeof(p));
                        return lg_error_setm(err, EINVAL, "bad `image`: `%s` is not an image reference", p);
                }
        uint64_t c = 0, b = 0;
        json_t *cpu = json_object_get(spec, "cpu"), *mem = json_object_get(spec, "memory");
        if (cpu && lg_spec_cpu(cpu, &c) < 0)
                return lg_error_setm(err, EINVAL, "bad `cpu`: CPUs as \"2\", \"0.5\" or \"500m\", at most 1024");
        if (mem && lg_spec_memory(mem, &b) < 0)
                return lg_error_setm(err, EINVAL, "bad `memory`: bytes as \"512Mi\" or \"8g\", from 4 MiB to 64 GiB");
        json_int_t keep = DEFAULT_KEEP_ALIVE;
        if ((v = json_object_get(spec, "keepAliveSeconds"))) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_KEEP_ALIVE)
                        return lg_error_setm(err, EINVAL,
                                             "bad `keepAliveSeconds`: whole seconds from 0 (kept until deleted) "
                                             "to %u", MAX_KEEP_ALIVE);
                keep = json_integer_value(v);
        }
        /* Numbers are written as strings, as the job spec has them. */
        json_t *cpu_s = !cpu                  ? json_string("1")
                        : json_is_string(cpu) ? json_incref(cpu)
                                              : json_sprintf("%llum", (unsigned long long) c);
        json_t *mem_s = !mem                  ? json_string("1Gi")
                        : json_is_string(mem) ? json_incref(mem)
                                              : json_sprintf("%llu", (unsigned long long) b);
        json_t *out = json_pack("{s:s, s:s, s:o, s:o, s:I}", "engine", engine, "image", image, "cpu", cpu_s, "memory",
                                mem_s, "keepAliveSeconds", keep);
        if (!out)
                return lg_error_set(err, ENOMEM, "master spec");
        snprintf(name, LG_STORE_NAME_MAX + 1, "%s", n);
        *ret = out;
        return 0;
}

/* ---- lifetime ------------------------------------------------------------------ */

static void master_unref(struct master *m) {
        if (--m->refs > 0)
                return;
        jobs_masters *mm = m->jobs->masters;
        json_decref(m->spec);
        free(m->image);
        lg_image_free(m->img);
        free(m->log_path);
        free(m);
        mm->live--;
}

static void timer_closed(uv_handle_t *h) { master_unref(h->data); }

static struct master *find(jobs_masters *mm, const char *ns, const char *name) {
        for (struct master *m = mm->list; m; m = m->next)
                if (!strcmp(m->ns, ns) && !strcmp(m->name, name))
                        return m;
        return NULL;
}

static void on_kick(uv_timer_t *t);

static void kick_soon(jobs_masters *mm) {
        if (!mm->freeing)
                uv_timer_start(&mm->kick, on_kick, 0, 0);
}

/* A master from a normalized spec (jobs_master_spec), not yet linked. */
static struct master *master_new(lg_jobs *jobs, const char *ns, const char *name, const json_t *spec) {
        struct master *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        m->jobs = jobs;
        m->refs = 1;
        m->pidfd = -1;
        jobs->masters->live++;
        snprintf(m->ns, sizeof(m->ns), "%s", ns);
        snprintf(m->name, sizeof(m->name), "%s", name);
        m->spec = json_deep_copy(spec);
        snprintf(m->engine, sizeof(m->engine), "%s", json_string_value(json_object_get(spec, "engine")));
        m->image = strdup(json_string_value(json_object_get(spec, "image")));
        if (lg_spec_cpu(json_object_get(spec, "cpu"), &m->cpu_millis) < 0 ||
            lg_spec_memory(json_object_get(spec, "memory"), &m->memory_bytes) < 0)
                m->cpu_millis = 0; /* not from jobs_master_spec: refused below */
        m->keep_alive_s = (uint64_t) json_integer_value(json_object_get(spec, "keepAliveSeconds"));
        if (asprintf(&m->log_path, "%s/%s/masters/%s/master.log", jobs->jobs_dir, ns, name) < 0)
                m->log_path = NULL;
        if (!m->spec || !m->image || !m->log_path || !m->cpu_millis) {
                master_unref(m);
                return NULL;
        }
        uv_timer_init(jobs->loop, &m->idle_timer);
        m->idle_timer.data = m;
        m->refs++; /* the timer's, until closed */
        return m;
}

/* Not linked after all: its timer closed, its memory freed after. */
static void master_drop(struct master *m) {
        uv_close((uv_handle_t *) &m->idle_timer, timer_closed);
        master_unref(m);
}

static void link_master(struct master *m) {
        jobs_masters *mm = m->jobs->masters;
        m->next = mm->list;
        mm->list = m;
        m->linked = true;
}

/* Its cpu and memory from the jobs' capacity. force (restore): what
 * exists is counted, even beyond the capacity. */
static int take_capacity(struct master *m, bool force, char *waiting, size_t cap, struct lg_error *err) {
        int r = jobs_capacity_take(m->jobs, m->cpu_millis, m->memory_bytes, waiting, cap, err);
        if (r < 0 && force) {
                m->jobs->cpu_used += m->cpu_millis;
                m->jobs->mem_used += m->memory_bytes;
                r = 0;
        }
        m->holds_cap = r >= 0;
        return r;
}

static void give_capacity(struct master *m) {
        if (!m->holds_cap)
                return;
        m->holds_cap = false;
        if (!m->jobs->masters->freeing)
                jobs_capacity_give(m->jobs, m->cpu_millis, m->memory_bytes);
}

/* ---- status ------------------------------------------------------------------ */

static json_t *status_json(const struct master *m) {
        char t[40];
        json_t *usage = jobs_usage_new();
        jobs_usage_add(usage, "master", m->started_ms, m->finished_ms ? m->finished_ms : jobs_now_ms(),
                       m->cpu_millis, m->memory_bytes);
        json_t *st = json_pack("{s:s, s:s, s:o*}", "phase", phase_names[m->phase], "job", m->job, "usage", usage);
        if (!st)
                return NULL;
        if (m->reason[0])
                json_object_set_new(st, "reason", json_string(m->reason));
        if (m->message[0])
                json_object_set_new(st, "message", json_string(m->message));
        if (m->address[0])
                json_object_set_new(st, "address", json_string(m->address));
        if (m->sb_id[0])
                json_object_set_new(st, "sandbox", json_string(m->sb_id));
        int64_t times[] = {m->idle_since_ms, m->started_ms, m->finished_ms};
        const char *names[] = {"idleSince", "startedAt", "finishedAt"};
        for (size_t i = 0; i < ARRAY_SIZE(times); i++)
                if (times[i]) {
                        jobs_format_ms(times[i], t, sizeof(t));
                        json_object_set_new(st, names[i], json_string(t));
                }
        return st;
}

static void write_status(struct master *m) {
        if (!m->linked)
                return;
        json_t *st = status_json(m);
        struct lg_error e = {0};
        /* A failed write changes nothing here: the next one writes it all. */
        if (st)
                (void) lg_store_update_status(m->jobs->store, LG_KEY(JOBS_MASTER_KIND, m->ns, m->name), 0, st, NULL,
                                              &e);
        json_decref(st);
}

/* ---- idle -------------------------------------------------------------------- */

static void master_unlink(struct master *m, bool remove_log);

static void on_idle_timeout(uv_timer_t *t) {
        struct master *m = t->data;
        if (!m->linked || m->job[0])
                return;
        struct lg_error e = {0};
        int r = lg_store_delete(m->jobs->store, LG_KEY(JOBS_MASTER_KIND, m->ns, m->name), 0, NULL, &e);
        if (r < 0 && r != -ENOENT) {
                uv_timer_start(&m->idle_timer, on_idle_timeout, STORE_RETRY_MS, 0);
                return;
        }
        master_unlink(m, true);
}

static void arm_idle(struct master *m) {
        uv_timer_stop(&m->idle_timer);
        if (m->job[0] || !m->linked || m->keep_alive_s == 0)
                return;
        int64_t left = m->idle_since_ms + (int64_t) m->keep_alive_s * 1000 - jobs_now_ms();
        uv_timer_start(&m->idle_timer, on_idle_timeout, left > 0 ? (uint64_t) left : 0, 0);
}

/* No job holds it (any more): idle from now, its keep-alive runs. */
static void set_idle(struct master *m) {
        m->job[0] = '\0';
        m->cb = NULL;
        m->cb_data = NULL;
        m->notify = N_NONE;
        if (!m->idle_since_ms)
                m->idle_since_ms = jobs_now_ms();
        arm_idle(m);
}

/* ---- the sandbox ---------------------------------------------------------------- */

struct destroy_ctx {
        struct master *m;
        char *trash;                      /* a log directory moved aside, or NULL */
};

static void rm_work(uv_work_t *w) {
        struct destroy_ctx *d = w->data;
        lg_rm_rf(d->trash);
}

static void rm_done(uv_work_t *w, int status) {
        (void) status;
        struct destroy_ctx *d = w->data;
        struct master *m = d->m;
        free(d->trash);
        free(d);
        free(w);
        master_unref(m);
}

/* Its sandbox is gone (or there was none): the capacity back, the log
 * directory removed off the loop. */
static void destroyed(void *arg) {
        struct destroy_ctx *d = arg;
        struct master *m = d->m;
        give_capacity(m);
        uv_work_t *w = d->trash ? calloc(1, sizeof(*w)) : NULL;
        if (w) {
                w->data = d;
                if (uv_queue_work(m->jobs->loop, w, rm_work, rm_done) == 0)
                        return;
                free(w);
        }
        free(d->trash);
        free(d);
        master_unref(m);
}

/* Queue the destroy of its sandbox (if it has one), then destroyed():
 * trash (taken) is removed after it. */
static void destroy_sandbox(struct master *m, char *trash) {
        if (m->probe) {
                lg_probe_cancel(m->probe);
                m->probe = NULL;
        }
        jobs_exit_watch_stop(m->watch); /* before the destroy closes the pidfd it watches */
        m->watch = NULL;
        struct destroy_ctx *d = calloc(1, sizeof(*d));
        if (!d) {
                free(trash);
                if (m->has_sb)
                        jobs_sandbox_destroy(m->jobs, m->sb_id, NULL, NULL);
                m->has_sb = false;
                give_capacity(m);
                return;
        }
        d->m = m;
        d->trash = trash;
        m->refs++;
        if (!m->has_sb) {
                destroyed(d);
                return;
        }
        m->has_sb = false;
        m->pidfd = -1;
        if (!m->finished_ms)
                m->finished_ms = jobs_now_ms();
        jobs_sandbox_destroy(m->jobs, m->sb_id, destroyed, d);
}

/* It can serve no more: Failed, its sandbox destroyed (capacity back once
 * gone), its job told. */
static void master_fail(struct master *m, const char *reason, const char *message) {
        if (m->phase != M_FAILED && !m->starting)
                destroy_sandbox(m, NULL);
        m->phase = M_FAILED;
        m->address[0] = '\0';
        snprintf(m->reason, sizeof(m->reason), "%s", reason);
        snprintf(m->message, sizeof(m->message), "%s", message);
        if (!m->finished_ms && m->started_ms)
                m->finished_ms = jobs_now_ms();
        if (m->job[0] && m->cb) {
                m->notify = N_REFUSE;
                lg_error_setm(&m->why, EIO, "master %s failed: %s: %s", m->name, reason, message);
                kick_soon(m->jobs->masters);
        } else if (m->job[0]) {
                m->notify = N_LOST;
                lg_error_setm(&m->why, EPIPE, "master %s lost: %s: %s", m->name, reason, message);
                kick_soon(m->jobs->masters);
        } else {
                set_idle(m);
        }
        write_status(m);
}

/* The last line of a log, for messages ("" when none). */
void jobs_log_last_line(const char *path, char *buf, size_t cap) {
        buf[0] = '\0';
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        char tail[1024];
        off_t end = lseek(fd, 0, SEEK_END);
        off_t off = end > (off_t) sizeof(tail) - 1 ? end - (off_t) sizeof(tail) + 1 : 0;
        ssize_t n = lg_pread_all(fd, tail, sizeof(tail) - 1, off);
        if (n <= 0)
                return;
        tail[n] = '\0';
        while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' '))
                tail[--n] = '\0';
        char *line = strrchr(tail, '\n');
        lg_printable(line ? line + 1 : tail, buf, cap);
}

static void exited(const struct lg_sandbox_status *st, const char *exit, void *userdata) {
        struct master *m = userdata;
        m->watch = NULL; /* over: freed by jobs-run.c */
        char line[300], msg[512];
        jobs_log_last_line(m->log_path, line, sizeof(line));
        snprintf(msg, sizeof(msg), "dask-scheduler ended: %s%s%s", exit, line[0] ? ": " : "", line);
        master_fail(m, st->kind == LG_EXIT_OOM ? "OOMKilled" : "MasterExited", msg);
}

static void probed(lg_probe *probe, int status, const char *message, void *userdata) {
        (void) probe;
        struct master *m = userdata;
        m->probe = NULL;
        if (status < 0) {
                char msg[400];
                snprintf(msg, sizeof(msg), "dask-scheduler: %s", message ? message : "never ready");
                master_fail(m, "NotReady", msg);
                return;
        }
        m->phase = M_READY;
        m->reason[0] = m->message[0] = '\0';
        snprintf(m->address, sizeof(m->address), "tcp://%s:%d", m->ip, JOBS_DASK_PORT);
        if (m->job[0] && m->cb) {
                m->notify = N_GRANT;
                kick_soon(m->jobs->masters);
        }
        write_status(m);
}

/* A start or adopt answered: its sandbox runs (watch it, probe it) or
 * it failed with reason. */
static void sandbox_back(struct master *m, int status, const struct jobs_started *s, const struct lg_error *err,
                         const char *reason, const char *prefix) {
        m->starting = false;
        if (status >= 0) {
                snprintf(m->sb_id, sizeof(m->sb_id), "%s", s->id);
                snprintf(m->ip, sizeof(m->ip), "%s", s->address);
                m->pidfd = s->pidfd;
                m->has_sb = true;
        }
        if (!m->linked) {
                destroy_sandbox(m, NULL);
                return;
        }
        char msg[600];
        if (status < 0) {
                snprintf(msg, sizeof(msg), "%s%s", prefix, err && err->msg[0] ? err->msg : strerror(-status));
                master_fail(m, reason, msg);
                give_capacity(m); /* nothing of it is left */
                return;
        }
        if (m->phase == M_FAILED) {
                /* Failed meanwhile (a restore found its job gone): the sandbox goes. */
                destroy_sandbox(m, NULL);
                return;
        }
        if (!m->started_ms)
                m->started_ms = jobs_now_ms();
        if (!m->ip[0]) {
                master_fail(m, reason, "the sandbox has no address on the node network");
                return;
        }
        if (jobs_exit_watch_start(m->jobs, m->sb_id, m->pidfd, exited, m, &m->watch) < 0) {
                m->watch = NULL;
                master_fail(m, reason, "cannot watch the sandbox");
                return;
        }
        struct lg_probe_config pc = {.loop = m->jobs->loop, .ip = m->ip, .port = JOBS_DASK_PORT,
                                     .timeout_ms = READY_TIMEOUT_MS, .interval_ms = 50};
        struct lg_error e = {0};
        if (lg_probe_start(&pc, probed, m, &m->probe, &e) < 0) {
                m->probe = NULL;
                master_fail(m, "NotReady", e.msg);
                return;
        }
        write_status(m);
}

static void started(int status, const struct jobs_started *s, const struct lg_error *err, void *userdata) {
        struct master *m = userdata;
        sandbox_back(m, status, s, err, "StartFailed", "");
        master_unref(m);
}

static void adopted(int status, const struct jobs_started *s, const struct lg_error *err, void *userdata) {
        struct master *m = userdata;
        sandbox_back(m, status, s, err, "MasterLost", "master lost while legiond was down: ");
        master_unref(m);
}

/* Make its sandbox: dask-scheduler started at once, its address assigned
 * to the master's namespace before it runs. */
static int start_sandbox(struct master *m, struct lg_error *err) {
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s", m->log_path);
        *strrchr(dir, '/') = '\0';
        int r = lg_mkdir_p(dir, 0750);
        if (r < 0)
                return lg_error_set(err, -r, "master log directory `%s`", dir);
        struct jobs_sandbox sb = {
                .image_id = m->img ? m->img->id : NULL,
                .layers = m->img ? (const char *const *) m->img->layer_dirs : NULL,
                .n_layers = m->img ? m->img->n_layers : 0,
                .argv = jobs_dask_scheduler_argv, /* a job's own master's: a pre-imported pool serves both */
                .envp = master_env,
                .hostname = m->name,
                .log_file = m->log_path,
                .log_max_bytes = m->jobs->log_max_bytes,
                .cpu_millis = m->cpu_millis,
                .memory_bytes = m->memory_bytes,
                .network = true,
                .net_namespace = m->ns,
        };
        r = jobs_sandbox_start(m->jobs, &sb, started, m, err);
        if (r < 0)
                return r;
        m->starting = true;
        m->refs++;
        return 0;
}

/* Out of the list (its record is gone): everything of it stops, its
 * sandbox is destroyed, and with remove_log its log directory after it
 * (moved aside now: a master of the same name made meanwhile keeps its
 * own). */
static void master_unlink(struct master *m, bool remove_log) {
        jobs_masters *mm = m->jobs->masters;
        if (!m->linked)
                return;
        for (struct master **pp = &mm->list; *pp; pp = &(*pp)->next)
                if (*pp == m) {
                        *pp = m->next;
                        break;
                }
        m->linked = false;
        m->notify = N_NONE;
        uv_timer_stop(&m->idle_timer);
        uv_close((uv_handle_t *) &m->idle_timer, timer_closed);
        char *trash = NULL, dir[4200], hex[17];
        if (remove_log) {
                snprintf(dir, sizeof(dir), "%s", m->log_path);
                *strrchr(dir, '/') = '\0';
                if (lg_random_hex(hex, 8) == 0 &&
                    asprintf(&trash, "%s/%s/masters/.deleted-%s", m->jobs->jobs_dir, m->ns, hex) >= 0 &&
                    rename(dir, trash) < 0) {
                        free(trash);
                        trash = NULL;
                }
        }
        if (m->starting) {
                /* Its start comes back: destroyed then (sandbox_back), the
                 * capacity back after. */
                free(trash);
        } else {
                destroy_sandbox(m, trash);
        }
        master_unref(m); /* the list's */
}

/* ---- the kick: callbacks out of the calls that caused them ------------------- */

static void on_kick(uv_timer_t *t) {
        jobs_masters *mm = t->data;
again:
        for (struct master *m = mm->list; m; m = m->next) {
                if (m->notify == N_NONE)
                        continue;
                enum notify n = m->notify;
                m->notify = N_NONE;
                struct lg_error e = m->why;
                jobs_master_cb cb = m->cb;
                void *ud = m->cb_data;
                char job[LG_STORE_NAME_MAX + 1];
                snprintf(job, sizeof(job), "%s", m->job);
                if (n == N_GRANT && cb) {
                        struct jobs_master_grant g = {.reused = m->reused, .kept = true};
                        snprintf(g.name, sizeof(g.name), "%s", m->name);
                        snprintf(g.address, sizeof(g.address), "%s", m->address);
                        m->cb = NULL;
                        cb(0, &g, NULL, ud);
                } else if (n == N_REFUSE && cb) {
                        /* The job fails without a master: it holds none. */
                        set_idle(m);
                        write_status(m);
                        cb(-EIO, NULL, &e, ud);
                } else if (n == N_LOST) {
                        jobs_master_lost(m->jobs, m->ns, job, e.msg);
                }
                goto again; /* a callback may change the list */
        }
}

static void on_meter(uv_timer_t *t) {
        jobs_masters *mm = t->data;
        for (struct master *m = mm->list; m; m = m->next)
                if (m->has_sb && m->started_ms)
                        write_status(m);
}

/* ---- the handle ------------------------------------------------------------------ */

static void mm_timer_closed(uv_handle_t *h) {
        jobs_masters *mm = h->data;
        mm->live--;
}

int jobs_masters_new(lg_jobs *jobs, struct lg_error *err) {
        jobs_masters *mm = calloc(1, sizeof(*mm));
        if (!mm)
                return lg_error_set(err, ENOMEM, "masters");
        mm->jobs = jobs;
        uv_timer_init(jobs->loop, &mm->kick);
        uv_timer_init(jobs->loop, &mm->meter);
        mm->kick.data = mm->meter.data = mm;
        uv_timer_start(&mm->meter, on_meter, METER_MS, METER_MS);
        uv_unref((uv_handle_t *) &mm->meter);
        jobs->masters = mm;
        return 0;
}

void jobs_masters_free(lg_jobs *jobs) {
        jobs_masters *mm = jobs ? jobs->masters : NULL;
        if (!mm)
                return;
        mm->freeing = true;
        while (mm->list)
                master_unlink(mm->list, false);
        mm->live += 2;
        uv_close((uv_handle_t *) &mm->kick, mm_timer_closed);
        uv_close((uv_handle_t *) &mm->meter, mm_timer_closed);
        while (mm->live > 0)
                uv_run(jobs->loop, UV_RUN_ONCE);
        jobs->masters = NULL;
        free(mm);
}

void jobs_masters_detach_all(lg_jobs *jobs) {
        jobs_masters *mm = jobs->masters;
        for (struct master *m = mm ? mm->list : NULL; m; m = m->next) {
                if (m->probe) {
                        lg_probe_cancel(m->probe);
                        m->probe = NULL;
                }
                jobs_exit_watch_stop(m->watch);
                m->watch = NULL;
                if (m->has_sb)
                        jobs_sandbox_detach(jobs, m->sb_id);
                m->has_sb = false;
                m->pidfd = -1;
                m->holds_cap = false; /* the next legiond counts it */
        }
}

/* ---- the public calls ---------------------------------------------------------- */

/* A master made now (deploy, or a job's keepAlive): recorded Starting, its
 * sandbox on its way. */
static int make_master(lg_jobs *jobs, const char *ns, const char *name, const json_t *spec, char *waiting,
                       size_t wcap, struct master **ret, struct lg_error *err) {
        jobs_masters *mm = jobs->masters;
        if (!jobs->net)
                return lg_error_setm(err, ENETUNREACH, "the dask engine needs the node network (legiond --network on)");
        if (find(mm, ns, name))
                return lg_error_setm(err, EEXIST, "master `%s` exists in namespace `%s`", name, ns);
        struct master *m = master_new(jobs, ns, name, spec);
        if (!m)
                return lg_error_set(err, ENOMEM, "master");
        int r = jobs_image_resolve(jobs, m->image, &m->img, err);
        if (r >= 0 && (r = take_capacity(m, false, waiting, wcap, err)) < 0)
                lg_error_wrap(err, r, "master `%s`", name);
        if (r < 0) {
                master_drop(m);
                return r;
        }
        json_t *st = status_json(m);
        r = st ? lg_store_create(jobs->store, LG_KEY(JOBS_MASTER_KIND, ns, name), NULL, spec, st, NULL, err)
               : lg_error_set(err, ENOMEM, "master");
        json_decref(st);
        if (r < 0) {
                give_capacity(m);
                master_drop(m);
                return r;
        }
        link_master(m);
        m->idle_since_ms = jobs_now_ms();
        struct lg_error se = {0};
        if (start_sandbox(m, &se) < 0) {
                master_fail(m, "StartFailed", se.msg);
                give_capacity(m);
        } else {
                arm_idle(m);
                write_status(m);
        }
        *ret = m;
        return 0;
}

int lg_jobs_master_deploy(lg_jobs *jobs, const char *ns, const json_t *spec, struct lg_resource **ret,
                          struct lg_error *err) {
        char name[LG_STORE_NAME_MAX + 1], p[80];
        if (!ns || !lg_store_valid_name(ns)) {
                lg_printable(ns, p, sizeof(p));
                return lg_error_setm(err, EINVAL, "namespace `%s` is not a DNS-1123 label", p);
        }
        json_t *norm = NULL;
        int r = jobs_master_spec(spec, name, &norm, err);
        struct master *m = NULL;
        if (r >= 0)
                r = make_master(jobs, ns, name, norm, NULL, 0, &m, err);
        if (r == -EAGAIN)
                r = -EBUSY; /* not free now: a conflict with what runs (409), not a wait */
        json_decref(norm);
        if (r >= 0 && ret)
                r = lg_store_get(jobs->store, LG_KEY(JOBS_MASTER_KIND, ns, name), ret, err);
        return r < 0 ? r : 0;
}

static int not_found(const char *ns, const char *name, struct lg_error *err) {
        char p[80], q[80];
        lg_printable(name, p, sizeof(p));
        lg_printable(ns, q, sizeof(q));
        return lg_error_setm(err, ENOENT, "master `%s` not found in namespace `%s`", p, q);
}

int lg_jobs_master_get(lg_jobs *jobs, const char *ns, const char *name, struct lg_resource **ret,
                       struct lg_error *err) {
        int r = lg_store_get(jobs->store, LG_KEY(JOBS_MASTER_KIND, ns, name), ret, err);
        return r == -ENOENT || r == -EINVAL ? not_found(ns, name, err) : r;
}

int lg_jobs_master_list(lg_jobs *jobs, const char *ns, struct lg_resource_list *ret, struct lg_error *err) {
        return lg_store_list(jobs->store, JOBS_MASTER_KIND, ns, NULL, ret, err);
}

int lg_jobs_master_delete(lg_jobs *jobs, const char *ns, const char *name, struct lg_error *err) {
        struct master *m = ns && name ? find(jobs->masters, ns, name) : NULL;
        if (m && m->job[0] && m->phase != M_FAILED)
                return lg_error_setm(err, EBUSY, "master `%s` is in use by job `%s`", m->name, m->job);
        int r = lg_store_delete(jobs->store, LG_KEY(JOBS_MASTER_KIND, ns, name), 0, NULL, err);
        if (r == -ENOENT || r == -EINVAL)
                return not_found(ns, name, err);
        if (r < 0)
                return r;
        if (m)
                master_unlink(m, true);
        return 0;
}

json_t *lg_master_to_json(const struct lg_resource *r) {
        char t[40];
        lg_store_format_time(r->created_at, t, sizeof(t));
        return json_pack("{s:s, s:s, s:s, s:s, s:O, s:O}", "name", r->name, "namespace", r->namespace, "uid", r->uid,
                         "createdAt", t, "spec", r->spec, "status", r->status);
}

int jobs_master_log_path(lg_jobs *jobs, const char *ns, const char *name, char *buf, size_t cap) {
        if (!lg_store_valid_name(ns) || !lg_store_valid_name(name))
                return -ENOENT;
        snprintf(buf, cap, "%s/%s/masters/%s/master.log", jobs->jobs_dir, ns, name);
        return 0;
}

/* ---- for the job core ------------------------------------------------------------ */

static void hold(struct master *m, const struct jobs_master_want *w, bool reused, jobs_master_cb cb, void *ud) {
        snprintf(m->job, sizeof(m->job), "%s", w->job);
        m->cb = cb;
        m->cb_data = ud;
        m->reused = reused;
        m->idle_since_ms = 0;
        uv_timer_stop(&m->idle_timer);
        m->notify = m->phase == M_READY ? N_GRANT : N_NONE;
        if (m->notify != N_NONE)
                kick_soon(m->jobs->masters);
        write_status(m);
}

/* "1", "500m"; "1Gi", "512Mi", bytes: as a person would write them. */
static json_t *resources_spec(const struct jobs_master_want *w, const char *name) {
        char cpu[32], mem[32];
        if (w->cpu_millis % 1000 == 0)
                snprintf(cpu, sizeof(cpu), "%llu", (unsigned long long) (w->cpu_millis / 1000));
        else
                snprintf(cpu, sizeof(cpu), "%llum", (unsigned long long) w->cpu_millis);
        if (w->memory_bytes % (1ull << 30) == 0)
                snprintf(mem, sizeof(mem), "%lluGi", (unsigned long long) (w->memory_bytes >> 30));
        else if (w->memory_bytes % (1ull << 20) == 0)
                snprintf(mem, sizeof(mem), "%lluMi", (unsigned long long) (w->memory_bytes >> 20));
        else
                snprintf(mem, sizeof(mem), "%llu", (unsigned long long) w->memory_bytes);
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "name", name, "engine", w->engine ? w->engine : "dask",
                         "image", w->image ? w->image : "", "cpu", cpu, "memory", mem, "keepAliveSeconds",
                         (json_int_t) w->keep_alive_seconds);
}

static int busy(const struct master *m, char *waiting, size_t cap, struct lg_error *err) {
        if (waiting)
                snprintf(waiting, cap, "master %s is busy with job %s", m->name, m->job);
        return lg_error_setm(err, EAGAIN, "master %s is busy with job %s", m->name, m->job);
}

static int failed(struct master *m, const char *job, struct lg_error *err) {
        if (!strcmp(m->job, job)) {
                /* Its job asking again after a restart: it was lost meanwhile. */
                set_idle(m);
                write_status(m);
        }
        return lg_error_setm(err, ENOENT, "master %s failed: %s: %s", m->name, m->reason, m->message);
}

int jobs_master_acquire(lg_jobs *jobs, const struct jobs_master_want *w, jobs_master_cb cb, void *userdata,
                        char *waiting, size_t cap, struct lg_error *err) {
        jobs_masters *mm = jobs->masters;
        const char *image = w->image ? w->image : "", *engine = w->engine ? w->engine : "dask";
        struct master *m = NULL;
        if (w->name && *w->name) {
                if (!(m = find(mm, w->ns, w->name)))
                        return not_found(w->ns, w->name, err);
                if (m->phase == M_FAILED)
                        return failed(m, w->job, err);
                if (m->job[0] && strcmp(m->job, w->job))
                        return busy(m, waiting, cap, err);
                hold(m, w, true, cb, userdata);
                return 1;
        }
        /* An idle one of the namespace with the same engine and image,
         * Ready ones first. */
        for (struct master *x = mm->list; x; x = x->next) {
                if (strcmp(x->ns, w->ns) || x->phase == M_FAILED || strcmp(x->engine, engine) || strcmp(x->image, image))
                        continue;
                if (!strcmp(x->job, w->job)) {
                        m = x;
                        break;
                }
                if (!x->job[0] && (!m || (x->phase == M_READY && m->phase != M_READY)))
                        m = x;
        }
        if (m) {
                hold(m, w, true, cb, userdata);
                return 1;
        }
        if (!w->keep_alive)
                return 0;
        /* keepAlive: the job's master is a Master from the start. */
        char name[LG_STORE_NAME_MAX + 1];
        if (w->master_name && *w->master_name)
                snprintf(name, sizeof(name), "%s", w->master_name);
        else if (snprintf(name, sizeof(name), "%s-master", w->job) >= (int) sizeof(name))
                return lg_error_setm(err, EINVAL, "job name `%s` too long for a kept master's name", w->job);
        if ((m = find(mm, w->ns, name))) {
                if (m->phase != M_FAILED) {
                        if (m->job[0] && strcmp(m->job, w->job))
                                return busy(m, waiting, cap, err);
                        hold(m, w, true, cb, userdata);
                        return 1;
                }
                /* A failed one of that name is replaced. */
                struct lg_error e = {0};
                if (m->job[0] && strcmp(m->job, w->job))
                        return busy(m, waiting, cap, err);
                int r = lg_store_delete(jobs->store, LG_KEY(JOBS_MASTER_KIND, w->ns, name), 0, NULL, &e);
                if (r < 0 && r != -ENOENT)
                        return lg_error_setm(err, -r, "replace failed master %s: %s", name, e.msg);
                master_unlink(m, true);
        }
        json_t *in = resources_spec(w, name), *norm = NULL;
        char n2[LG_STORE_NAME_MAX + 1];
        int r = in ? jobs_master_spec(in, n2, &norm, err) : lg_error_set(err, ENOMEM, "master");
        json_decref(in);
        if (r >= 0)
                r = make_master(jobs, w->ns, name, norm, waiting, cap, &m, err);
        json_decref(norm);
        if (r < 0)
                return r;
        hold(m, w, false, cb, userdata);
        if (m->phase == M_FAILED) {
                /* Its sandbox could not even be asked for: refused at the kick. */
                m->notify = N_REFUSE;
                lg_error_setm(&m->why, EIO, "master %s failed: %s: %s", m->name, m->reason, m->message);
                kick_soon(mm);
        }
        return 1;
}

void jobs_master_cancel(lg_jobs *jobs, const char *ns, const char *job) {
        for (struct master *m = jobs->masters->list; m; m = m->next)
                if (!strcmp(m->ns, ns) && !strcmp(m->job, job)) {
                        set_idle(m);
                        write_status(m);
                        return;
                }
}

void jobs_master_release(lg_jobs *jobs, const char *ns, const char *master, const char *job) {
        struct master *m = find(jobs->masters, ns, master);
        if (!m || strcmp(m->job, job))
                return;
        set_idle(m);
        write_status(m);
}

/* ---- restore ------------------------------------------------------------------ */

static bool job_running(lg_jobs *jobs, const char *ns, const char *job) {
        struct lg_resource *r = NULL;
        struct lg_error e = {0};
        if (lg_store_get(jobs->store, LG_KEY(JOBS_KIND, ns, job), &r, &e) < 0)
                return false; /* gone (or unreadable): nobody will release it */
        const char *phase = json_string_value(json_object_get(r->status, "phase"));
        bool live = !phase || !strcmp(phase, "Pending") || !strcmp(phase, "Starting") || !strcmp(phase, "Running");
        lg_resource_free(r);
        return live;
}

static void restore_one(lg_jobs *jobs, const struct lg_resource *r) {
        char name[LG_STORE_NAME_MAX + 1];
        struct lg_error e = {0};
        json_t *spec = json_deep_copy(r->spec), *norm = NULL;
        if (!spec || json_object_set_new(spec, "name", json_string(r->name)) < 0 ||
            jobs_master_spec(spec, name, &norm, &e) < 0) {
                json_decref(spec);
                return; /* not one this legiond can run: shown as it is */
        }
        json_decref(spec);
        struct master *m = master_new(jobs, r->namespace, r->name, norm);
        json_decref(norm);
        if (!m)
                return;
        const json_t *st = r->status;
        const char *phase = json_string_value(json_object_get(st, "phase"));
        const char *sb = json_string_value(json_object_get(st, "sandbox"));
        const char *job = json_string_value(json_object_get(st, "job"));
        snprintf(m->reason, sizeof(m->reason), "%s", json_string_value(json_object_get(st, "reason")) ?: "");
        snprintf(m->message, sizeof(m->message), "%s", json_string_value(json_object_get(st, "message")) ?: "");
        int64_t *times[] = {&m->started_ms, &m->finished_ms, &m->idle_since_ms};
        const char *names[] = {"startedAt", "finishedAt", "idleSince"};
        for (size_t i = 0; i < ARRAY_SIZE(times); i++)
                if (jobs_parse_ms(json_string_value(json_object_get(st, names[i])), times[i]) < 0)
                        *times[i] = 0;
        if (sb)
                snprintf(m->sb_id, sizeof(m->sb_id), "%s", sb);
        if (job && *job && job_running(jobs, m->ns, job))
                snprintf(m->job, sizeof(m->job), "%s", job);
        else if (!m->idle_since_ms)
                m->idle_since_ms = jobs_now_ms();
        if (jobs_image_resolve(jobs, m->image, &m->img, &e) < 0)
                m->img = NULL; /* removed since: only the image GC's keep list misses it */
        link_master(m);
        if (phase && !strcmp(phase, "Failed")) {
                m->phase = M_FAILED;
                if (!m->job[0])
                        set_idle(m);
                write_status(m);
                return;
        }
        m->phase = M_STARTING;
        arm_idle(m);
        take_capacity(m, true, NULL, 0, &e);
        if (!m->sb_id[0] || jobs_sandbox_adopt(jobs, m->sb_id, m->ns, adopted, m, &e) < 0) {
                char msg[600];
                snprintf(msg, sizeof(msg), "master lost while legiond was down: %s",
                         m->sb_id[0] ? e.msg : "its sandbox was never made");
                master_fail(m, "MasterLost", msg);
                give_capacity(m);
                return;
        }
        m->starting = true;
        m->refs++;
        write_status(m);
}

int jobs_masters_restore(lg_jobs *jobs, struct lg_error *err) {
        struct lg_resource_list l = {0};
        int r = lg_store_list(jobs->store, JOBS_MASTER_KIND, NULL, NULL, &l, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < l.n; i++)
                if (!find(jobs->masters, l.items[i]->namespace, l.items[i]->name))
                        restore_one(jobs, l.items[i]);
        lg_resource_list_free(&l);
        return 0;
}
