/* Warm pools for job roles (jobpool.h): named pools of sandboxes made
 * ahead through the node agent, kept by the node's warm-pool component
 * (node/warm.h), the way src/pod/pods-warm.c keeps warm pod sandboxes;
 * and the start of a role, in a taken warm sandbox (files, limits,
 * tenant and workload in one lg_agent_start) or in one made on demand
 * (one create that starts it). Everything runs on the loop; the agent
 * does the work on its thread pool. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/proto.h"
#include "jobs/jobpool.h"
#include "node/warm.h"
#include "store/store.h"

#define ROOTFS_BYTES (1ull << 30) /* the writable root's tmpfs (memory counts in the cgroup) */
#define PIDS_MAX 4096             /* every role has a cgroup: limits, OOM detection */
/* A warm sandbox's CPU weight while it waits (node.c's placeholders have the same). */
#define WARM_CPU_WEIGHT 10
#define FILES_DIR "/job"
#define RUNTIME_DIR "/opt/legion/runtime"
#define DEFAULT_LOG_MAX (10ull << 20)
#define WARM_LOG_PREFIX ".warm-"

enum kind { PLAIN, DASK }; /* DASK: pre-imported Dask executors */

/* A rootfs, shared by a pool and the sandboxes made from it (a create
 * reads its layers off the loop, and the pool may change meanwhile). */
struct rootfs {
        unsigned refs;
        char *image_id; /* NULL = host */
        char **layers;
        size_t n_layers;
};

struct pool {
        struct pool *next;
        lg_jobpool *jp;
        char name[LG_STORE_NAME_MAX + 1];
        struct rootfs *rootfs;
        enum kind kind;
        unsigned target;
        lg_warm_pool *wp;
        uint64_t made;
        bool used;                /* taken or missed while starts ran: refill when they are done */
};

/* One warm sandbox: being made (req under way), then ready. */
struct wsb {
        lg_warm_item wi; /* first: the pool gives it back */
        lg_jobpool *jp;
        struct pool *pool; /* NULL once discarded */
        struct rootfs *rootfs;
        lg_agent_req req;
        struct lg_sandbox_spec spec;
        struct lg_bind binds[2];
        bool made;
        char log[4200];    /* DASK: its log until a role takes it */
        struct import_watch *watch; /* DASK: until its imports are done */
};

/* A DASK sandbox's control channel read until its worker says its
 * imports are done (op=ready phase=imported): only then is it ready. A
 * uv_poll_t is closed asynchronously, so it lives apart from the wsb. */
struct import_watch {
        uv_poll_t h;
        struct wsb *ws; /* NULL once closed */
};

/* One role being started. */
struct start {
        struct start *prev, *next;
        lg_jobpool *jp;
        lg_jobpool_cb cb;
        void *userdata;
        uint64_t t0;
        bool warm, preimported, abandoned;
        char id[LG_AGENT_ID_MAX];
        lg_agent_req req;
        struct lg_sandbox_spec spec;     /* on demand */
        struct lg_sandbox_launch launch; /* warm */
        struct lg_bind binds[3];
        struct rootfs *rootfs;
        char **argv, **envp;
        char *cwd, *hostname, *files_dir, *runtimes_dir, *log_file;
        uint64_t log_max_bytes, cpu_millis, memory_bytes;
        bool network;
        struct lg_agent_net net;
        int pidfd;
        char address[64];
        /* DASK: the requests readying a pre-imported executor (mount,
         * limits, tenant: submitted together), the first failure. */
        lg_agent_req prep[3];
        unsigned prep_pending;
        int prep_result;
        struct lg_error prep_err;
        int control_fd;
        pid_t init_pid;
};

struct lg_jobpool {
        uv_loop_t *loop;
        lg_agent *agent;
        lg_net *net;
        char *state_root, *runtimes_dir, *logs_dir;
        uint64_t log_max;
        int nice;          /* legiond's own: a taken pre-imported executor's */
        lg_warm *warm;
        struct pool *pools;
        struct start *starts;
        unsigned n_making, n_starting, n_watches;
};

static const char *const job_mount_points[] = {FILES_DIR};
static const char *const dask_argv[] = {"python3", "-I", RUNTIME_DIR "/python", "dask-executor", NULL};
static const char *const dask_env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8", NULL};

/* ---- small things ------------------------------------------------------------- */

/* A copy of v (NULL for NULL or empty); -ENOMEM as NULL with *r set. */
static char **strv_copy(const char *const *v, int *r) {
        char **c = lg_strv_dup(v);
        if (!c && v && v[0])
                *r = -ENOMEM;
        return c;
}

static int dup_str(const char *s, char **ret) {
        *ret = NULL;
        return s && !(*ret = strdup(s)) ? -ENOMEM : 0;
}

static void rootfs_unref(struct rootfs *rf) {
        if (!rf || --rf->refs)
                return;
        free(rf->image_id);
        lg_strv_free(rf->layers);
        free(rf);
}

static struct rootfs *rootfs_ref(struct rootfs *rf) {
        rf->refs++;
        return rf;
}

static int check_rootfs(const struct lg_jobpool_rootfs *r, struct lg_error *err) {
        if (!r->image_id)
                return r->n_layers ? lg_error_setm(err, EINVAL, "layers without an image") : 0;
        if (!*r->image_id || !r->n_layers || !r->layers)
                return lg_error_setm(err, EINVAL, "image `%s` without layers", r->image_id);
        for (size_t i = 0; i < r->n_layers; i++)
                if (!r->layers[i] || r->layers[i][0] != '/')
                        return lg_error_setm(err, EINVAL, "image `%s`: layer %zu is not an absolute path",
                                             r->image_id, i);
        return 0;
}

static struct rootfs *rootfs_new(const struct lg_jobpool_rootfs *r) {
        struct rootfs *rf = calloc(1, sizeof(*rf));
        if (!rf)
                return NULL;
        rf->refs = 1;
        int bad = 0;
        if (r->image_id) {
                rf->layers = calloc(r->n_layers + 1, sizeof(char *));
                bad = !rf->layers || dup_str(r->image_id, &rf->image_id) < 0;
                for (size_t i = 0; !bad && i < r->n_layers; i++, rf->n_layers++)
                        bad = dup_str(r->layers[i], &rf->layers[i]) < 0;
        }
        if (bad) {
                rootfs_unref(rf);
                return NULL;
        }
        return rf;
}

static bool same_rootfs(const struct rootfs *rf, const struct lg_jobpool_rootfs *r) {
        if (!rf->image_id || !r->image_id)
                return !rf->image_id && !r->image_id;
        if (strcmp(rf->image_id, r->image_id) || rf->n_layers != r->n_layers)
                return false;
        for (size_t i = 0; i < r->n_layers; i++)
                if (strcmp(rf->layers[i], r->layers[i]))
                        return false;
        return true;
}

/* What every role sandbox has, warm or not: rootfs, cgroup, detachable. */
static void base_spec(lg_jobpool *jp, const struct rootfs *rf, struct lg_sandbox_spec *s) {
        lg_sandbox_spec_init(s);
        s->state_root = jp->state_root;
        s->layers = (const char *const *) rf->layers;
        s->n_layers = rf->n_layers;
        s->rootfs_bytes = ROOTFS_BYTES;
        s->pids_max = PIDS_MAX;
        /* Started, it outlives legiond; the next one adopts it. */
        s->detachable = true;
}

/* The host rootfs has the host's /usr but an /etc of its own: the Debian
 * alternatives its libraries link through (numpy's libblas.so.3 ->
 * /etc/alternatives/...) come along, read-only. Added to binds[*n]. */
static void host_binds(const struct rootfs *rf, struct lg_bind *binds, size_t *n) {
        if (!rf->n_layers && access("/etc/alternatives", F_OK) == 0)
                binds[(*n)++] = (struct lg_bind){.src = "/etc/alternatives", .dst = "/etc/alternatives",
                                                 .readonly = true};
}

static void random_id(const char *prefix, char *buf) {
        char hex[17];
        lg_random_hex(hex, 8);
        snprintf(buf, LG_AGENT_ID_MAX, "%s-%s", prefix, hex);
}

/* ---- warm sandboxes ----------------------------------------------------------- */

static void destroy_sb(lg_jobpool *jp, const char *id) {
        /* The agent keeps the request; lg_agent_free waits for it. */
        lg_agent_destroy(jp->agent, NULL, id, NULL);
}

/* Its log goes too (a DASK one's, kept by destroy otherwise). */
static void wsb_free(struct wsb *ws) {
        if (ws->log[0])
                unlink(ws->log);
        rootfs_unref(ws->rootfs);
        free(ws);
}

static void watch_closed(uv_handle_t *h) {
        struct import_watch *w = (struct import_watch *) h;
        lg_jobpool *jp = w->h.data;
        jp->n_watches--;
        free(w);
}

/* Before anything closes the control fd it polls (a destroy). */
static void watch_stop(struct wsb *ws) {
        struct import_watch *w = ws->watch;
        if (!w)
                return;
        ws->watch = NULL;
        w->ws = NULL;
        w->h.data = ws->jp;
        uv_close((uv_handle_t *) &w->h, watch_closed);
}

/* Making it failed (the create, or its worker before saying ready):
 * counts for the pool's backoff. */
static void make_failed(struct wsb *ws, const char *why) {
        watch_stop(ws);
        if (ws->req.result >= 0)
                destroy_sb(ws->jp, ws->req.id);
        if (ws->pool)
                lg_warm_failed(&ws->wi, why);
        wsb_free(ws);
}

static void on_import(uv_poll_t *h, int status, int events) {
        (void) events;
        struct import_watch *w = (struct import_watch *) h;
        struct wsb *ws = w->ws;
        struct lg_msg m;
        lg_msg_init(&m);
        /* A frame is written whole: readable means it is there. */
        int r = status < 0 ? status : lg_msg_recv(ws->req.out.control_fd, &m);
        const char *op = r > 0 ? lg_msg_get(&m, "op") : NULL, *phase = r > 0 ? lg_msg_get(&m, "phase") : NULL;
        if (op && !strcmp(op, "ready") && phase && !strcmp(phase, "imported")) {
                watch_stop(ws);
                ws->pool->made++;
                lg_warm_ready(&ws->wi);
        } else if (!op || !strcmp(op, "exit") || !strcmp(op, "error")) {
                char why[300];
                const char *msg = r > 0 ? lg_msg_get(&m, "message") : NULL;
                snprintf(why, sizeof(why), "the pre-imported executor of `%s` ended before it was ready%s%s",
                         ws->req.id, msg ? ": " : "", msg ? msg : "");
                make_failed(ws, why);
        } /* else noise: wait on */
        lg_msg_free(&m);
}

static void made(lg_agent_req *req) {
        struct wsb *ws = req->data;
        lg_jobpool *jp = ws->jp;
        jp->n_making--;
        ws->made = true;
        if (req->result < 0) {
                make_failed(ws, req->err.msg);
        } else if (!ws->pool) { /* discarded while being made */
                destroy_sb(jp, req->id);
                wsb_free(ws);
        } else if (ws->pool->kind == DASK) {
                /* Ready once its imports are done (on_import). */
                struct import_watch *w = calloc(1, sizeof(*w));
                if (!w || uv_poll_init(jp->loop, &w->h, req->out.control_fd) < 0) {
                        free(w);
                        make_failed(ws, "cannot watch its control channel");
                        return;
                }
                w->ws = ws;
                ws->watch = w;
                jp->n_watches++;
                uv_poll_start(&w->h, UV_READABLE, on_import);
        } else {
                ws->pool->made++;
                lg_warm_ready(&ws->wi);
        }
}

static int warm_make(lg_warm_pool *wp, void *data, struct lg_error *err) {
        struct pool *pl = data;
        lg_jobpool *jp = pl->jp;
        struct wsb *ws = calloc(1, sizeof(*ws));
        if (!ws)
                return lg_error_set(err, ENOMEM, "out of memory");
        ws->jp = jp;
        ws->pool = pl;
        ws->rootfs = rootfs_ref(pl->rootfs);
        base_spec(jp, ws->rootfs, &ws->spec);
        ws->spec.mount_points = job_mount_points;
        ws->spec.n_mount_points = 1;
        size_t nb = 0;
        if (jp->runtimes_dir)
                ws->binds[nb++] = (struct lg_bind){.src = jp->runtimes_dir, .dst = RUNTIME_DIR, .readonly = true};
        host_binds(ws->rootfs, ws->binds, &nb);
        ws->spec.binds = ws->binds;
        ws->spec.n_binds = nb;
        ws->req.data = ws;
        /* Its address while it waits (no tenant: it reaches DNS only);
         * the role that takes it gets it. */
        ws->req.in.create.net = (struct lg_agent_net){.attach = jp->net != NULL};
        char id[LG_AGENT_ID_MAX];
        random_id("jw", id);
        unsigned flags = LG_AGENT_LOW_PRIO;
        /* nice +10 ranks it only among the processes of its own cgroup:
         * against a job's roles its cgroup needs a low CPU weight too, or
         * a pool refilling during a job (16 pre-imported executors
         * importing Dask) takes the CPUs as much as the job does (bench/jobs
         * saw the computation 1.85x slower than from a plain pool). A take
         * sets the limits with no weight: back to the default (sandbox.h). */
        ws->spec.cpu_weight = WARM_CPU_WEIGHT;
        if (pl->kind == DASK) {
                /* Started now, at nice +10 like its legion-init: the
                 * imports compete little with the roles running. */
                snprintf(ws->log, sizeof(ws->log), "%s/" WARM_LOG_PREFIX "%s.log", jp->logs_dir, id);
                ws->spec.argv = dask_argv;
                ws->spec.envp = dask_env;
                ws->spec.cwd = "/tmp";
                ws->spec.worker_control = true;
                ws->spec.capture_logs = true;
                ws->spec.log_file = ws->log;
                ws->spec.log_max_bytes = jp->log_max;
                flags |= LG_AGENT_START_NOW;
        }
        int r = lg_agent_create(jp->agent, &ws->req, id, &ws->spec, flags, made);
        if (r < 0) {
                wsb_free(ws);
                return lg_error_set(err, -r, "create a warm sandbox for job pool `%s`", pl->name);
        }
        jp->n_making++;
        lg_warm_add(wp, &ws->wi);
        return 0;
}

static void warm_discard(lg_warm_item *item, void *data) {
        (void) data;
        struct wsb *ws = (struct wsb *) item;
        ws->pool = NULL;
        if (ws->made) {
                watch_stop(ws);
                destroy_sb(ws->jp, ws->req.id);
                wsb_free(ws);
        } /* else made() destroys it */
}

static const struct lg_warm_ops warm_ops = {.make = warm_make, .discard = warm_discard};

/* ---- pools -------------------------------------------------------------------- */

static struct pool *find_pool(lg_jobpool *jp, const char *name) {
        for (struct pool *pl = jp->pools; pl; pl = pl->next)
                if (!strcmp(pl->name, name))
                        return pl;
        return NULL;
}

static void pool_free(struct pool *pl) {
        lg_warm_pool_delete(pl->wp);
        rootfs_unref(pl->rootfs);
        free(pl);
}

static int pool_set(lg_jobpool *jp, const char *name, const struct lg_jobpool_rootfs *rootfs, unsigned ready,
                    enum kind kind, struct lg_error *err) {
        if (!name || !lg_store_valid_name(name)) {
                char n[80];
                lg_printable(name, n, sizeof(n));
                return lg_error_setm(err, EINVAL, "job pool name `%s`: want a DNS-1123 label", n);
        }
        struct lg_jobpool_rootfs host = {0};
        if (!rootfs)
                rootfs = &host;
        int r = check_rootfs(rootfs, err);
        if (r < 0)
                return r;
        struct pool *pl = find_pool(jp, name);
        bool fresh = !pl;
        if (fresh) {
                if (!(pl = calloc(1, sizeof(*pl))))
                        return lg_error_set(err, ENOMEM, "out of memory");
                pl->jp = jp;
                snprintf(pl->name, sizeof(pl->name), "%s", name);
        }
        if (fresh || !same_rootfs(pl->rootfs, rootfs) || pl->kind != kind) {
                struct rootfs *rf = rootfs_new(rootfs);
                if (!rf) {
                        if (fresh)
                                free(pl);
                        return lg_error_set(err, ENOMEM, "out of memory");
                }
                /* Sandboxes of the old rootfs go; new ones are made. */
                lg_warm_pool_delete(pl->wp);
                pl->wp = NULL;
                rootfs_unref(pl->rootfs);
                pl->rootfs = rf;
                pl->kind = kind;
        }
        pl->target = ready;
        struct lg_warm_pool_config wc = {.key = pl->name, .target = ready, .retry = LG_WARM_RETRY_BACKOFF,
                                         .ops = &warm_ops, .data = pl};
        r = lg_warm_pool_set(jp->warm, &wc, &pl->wp, err);
        if (r < 0) {
                /* Out of memory: a pool that cannot keep its count is gone. */
                if (!fresh)
                        lg_jobpool_delete(jp, name);
                else
                        pool_free(pl);
                return r;
        }
        if (fresh) {
                pl->next = jp->pools;
                jp->pools = pl;
        }
        return 0;
}

int lg_jobpool_set(lg_jobpool *jp, const char *name, const struct lg_jobpool_rootfs *rootfs, unsigned ready,
                   struct lg_error *err) {
        return pool_set(jp, name, rootfs, ready, PLAIN, err);
}

int lg_jobpool_set_dask(lg_jobpool *jp, const char *name, const struct lg_jobpool_rootfs *rootfs, unsigned ready,
                        struct lg_error *err) {
        if (!jp->runtimes_dir || !jp->logs_dir)
                return lg_error_setm(err, EINVAL, "pre-imported Dask executors need the runtimes and a logs directory");
        return pool_set(jp, name, rootfs, ready, DASK, err);
}

int lg_jobpool_delete(lg_jobpool *jp, const char *name) {
        for (struct pool **pp = &jp->pools; *pp; pp = &(*pp)->next)
                if (!strcmp((*pp)->name, name ? name : "")) {
                        struct pool *pl = *pp;
                        *pp = pl->next;
                        pool_free(pl);
                        return 0;
                }
        return -ENOENT;
}

json_t *lg_jobpool_json(lg_jobpool *jp) {
        json_t *a = json_array();
        for (struct pool *pl = jp ? jp->pools : NULL; a && pl; pl = pl->next) {
                struct lg_warm_stats st;
                lg_warm_pool_stats(pl->wp, &st);
                json_array_append_new(
                        a, json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:I, s:I, s:I, s:s}", "name", pl->name, "image",
                                     pl->rootfs->image_id ? pl->rootfs->image_id : "", "kind",
                                     pl->kind == DASK ? "dask-executor" : "plain", "ready", (int) pl->target,
                                     "readyNow", (int) st.ready, "making", (int) st.starting, "taken",
                                     (json_int_t) st.taken, "missed", (json_int_t) st.missed, "made",
                                     (json_int_t) pl->made, "lastError", st.last_error));
        }
        return a;
}

/* ---- starting a role ---------------------------------------------------------- */

static void start_free(struct start *s) {
        lg_jobpool *jp = s->jp;
        if (s->prev)
                s->prev->next = s->next;
        else
                jp->starts = s->next;
        if (s->next)
                s->next->prev = s->prev;
        rootfs_unref(s->rootfs);
        lg_strv_free(s->argv);
        lg_strv_free(s->envp);
        free(s->cwd);
        free(s->hostname);
        free(s->files_dir);
        free(s->runtimes_dir);
        free(s->log_file);
        free(s);
}

/* Pools used (a take, or a miss: pool->used) refill once no start is
 * under way, so that making replacements (creates on the same thread
 * pool, mounts on the same CPUs) does not delay the starts of a job's
 * other roles. */
static void refill_used(lg_jobpool *jp) {
        if (jp->n_starting)
                return;
        for (struct pool *pl = jp->pools; pl; pl = pl->next)
                if (pl->used) {
                        pl->used = false;
                        lg_warm_used(pl->wp);
                }
}

static int create_on_demand(struct start *s, struct lg_error *err);

static void finish(struct start *s, int status, const struct lg_error *err) {
        lg_jobpool *jp = s->jp;
        jp->n_starting--;
        if (s->abandoned) {
                if (status >= 0)
                        destroy_sb(jp, s->id);
                start_free(s);
                return;
        }
        struct lg_jobpool_started st = {.warm = s->warm, .preimported = s->preimported, .pidfd = s->pidfd,
                                        .start_ns = lg_now_ns() - s->t0};
        if (status >= 0) {
                snprintf(st.id, sizeof(st.id), "%s", s->id);
                snprintf(st.address, sizeof(st.address), "%s", s->address);
        } else {
                st.pidfd = -1;
        }
        /* err may be the request's, which goes with s. */
        struct lg_error e = err ? *err : (struct lg_error){0};
        lg_jobpool_cb cb = s->cb;
        void *ud = s->userdata;
        start_free(s);
        cb(status, &st, &e, ud);
        refill_used(jp);
}

static void started(lg_agent_req *req) {
        struct start *s = req->data;
        if (req->result >= 0) {
                if (!s->warm) {
                        snprintf(s->id, sizeof(s->id), "%s", req->id);
                        s->pidfd = req->out.pidfd;
                        snprintf(s->address, sizeof(s->address), "%s", req->out.net.ip);
                }
                finish(s, req->result, &req->err);
                return;
        }
        if (s->warm)
                destroy_sb(s->jp, req->id); /* a failed create left nothing; a failed start did */
        if (s->warm && !s->abandoned) {
                /* A warm sandbox that would not take it (its legion-init
                 * died while it waited): one made now instead. */
                s->warm = false;
                struct lg_error err = {0};
                if (create_on_demand(s, &err) >= 0)
                        return;
                finish(s, err.code ? -err.code : -EIO, &err);
                return;
        }
        finish(s, req->result, &req->err);
}

/* The workload, limits, tenant and files into a warm sandbox, one trip. */
static int start_warm(struct start *s, struct wsb *ws, struct lg_error *err) {
        lg_jobpool *jp = s->jp;
        s->warm = true;
        snprintf(s->id, sizeof(s->id), "%s", ws->req.id);
        s->pidfd = ws->req.out.pidfd;
        snprintf(s->address, sizeof(s->address), "%s", ws->req.out.net.ip);
        lg_sandbox_launch_init(&s->launch);
        s->launch.argv = (const char *const *) s->argv;
        s->launch.envp = (const char *const *) s->envp;
        s->launch.cwd = s->cwd;
        s->launch.hostname = s->hostname;
        s->launch.log_file = s->log_file;
        s->launch.log_max_bytes = s->log_max_bytes;
        struct lg_agent_limits lim = {.set = LG_AGENT_SET_LIMITS | LG_AGENT_SET_PRIO,
                                      .memory_bytes = s->memory_bytes, .cpu_millis = s->cpu_millis,
                                      .pids_max = PIDS_MAX};
        s->req = (lg_agent_req){.data = s};
        s->req.in.start.net = s->net;
        if (s->files_dir)
                s->req.in.start.mount.src = s->files_dir, s->req.in.start.mount.dst = FILES_DIR,
                s->req.in.start.mount.readonly = true;
        wsb_free(ws);
        int r = lg_agent_start(jp->agent, &s->req, s->id, &s->launch, &lim, started);
        if (r < 0) {
                destroy_sb(jp, s->id);
                return lg_error_set(err, -r, "start job sandbox `%s`", s->id);
        }
        return 0;
}

/* A sandbox made and started in one create: the same as a warm one
 * taken (files bound at creation instead of mounted). */
static int create_on_demand(struct start *s, struct lg_error *err) {
        lg_jobpool *jp = s->jp;
        struct lg_sandbox_spec *sp = &s->spec;
        base_spec(jp, s->rootfs, sp);
        size_t n = 0;
        if (s->runtimes_dir)
                s->binds[n++] = (struct lg_bind){.src = s->runtimes_dir, .dst = RUNTIME_DIR, .readonly = true};
        if (s->files_dir)
                s->binds[n++] = (struct lg_bind){.src = s->files_dir, .dst = FILES_DIR, .readonly = true};
        host_binds(s->rootfs, s->binds, &n);
        sp->binds = s->binds;
        sp->n_binds = n;
        sp->argv = (const char *const *) s->argv;
        sp->envp = (const char *const *) s->envp;
        sp->cwd = s->cwd;
        sp->hostname = s->hostname;
        sp->capture_logs = s->log_file != NULL;
        sp->log_file = s->log_file;
        sp->log_max_bytes = s->log_max_bytes;
        sp->memory_bytes = s->memory_bytes;
        sp->cpu_millis = s->cpu_millis;
        s->req = (lg_agent_req){.data = s};
        s->req.in.create.net = s->net;
        s->req.in.create.net.attach = s->network;
        char id[LG_AGENT_ID_MAX];
        random_id("jr", id);
        int r = lg_agent_create(jp->agent, &s->req, id, sp, LG_AGENT_START_NOW, started);
        return r < 0 ? lg_error_set(err, -r, "create job sandbox `%s`", id) : 0;
}

/* A ready warm sandbox of kind for the role, from any pool with its
 * rootfs; NULL when none (a miss counted on the first such pool). */
static struct wsb *take_warm(lg_jobpool *jp, const struct lg_jobpool_role *role, enum kind kind) {
        /* Warm sandboxes have an address iff networking is on, and the
         * node's runtimes. */
        if (role->network != (jp->net != NULL))
                return NULL;
        if (role->runtimes_dir && (!jp->runtimes_dir || strcmp(role->runtimes_dir, jp->runtimes_dir)))
                return NULL;
        struct pool *first = NULL;
        for (struct pool *pl = jp->pools; pl; pl = pl->next) {
                if (!pl->target || pl->kind != kind || !same_rootfs(pl->rootfs, &role->rootfs))
                        continue;
                if (!first)
                        first = pl;
                struct lg_warm_stats st;
                lg_warm_pool_stats(pl->wp, &st);
                if (!st.ready)
                        continue;
                struct wsb *ws = (struct wsb *) lg_warm_take(pl->wp);
                if (ws) {
                        pl->used = true;
                        return ws;
                }
        }
        if (first) {
                lg_warm_take(first->wp); /* NULL: counted as missed */
                first->used = true;
        }
        return NULL;
}

/* ---- pre-imported Dask executors ------------------------------------------------ */

/* What a pre-imported Dask process runs for a role (dask_executor.py's
 * run=), and where the role's arguments start in its argv: dask-worker
 * ARGS, dask-scheduler ARGS, python3 /opt/legion/runtime/python
 * dask-driver ARGS (dask_driver.py). NULL: none of those. */
static const char *preimported_run(const char *const *argv, size_t *first) {
        const char *b = strrchr(argv[0], '/');
        b = b ? b + 1 : argv[0];
        *first = 1;
        if (!strcmp(b, "dask-worker"))
                return "worker";
        if (!strcmp(b, "dask-scheduler"))
                return "scheduler";
        if (!strcmp(b, "python3") && argv[1] && !strcmp(argv[1], RUNTIME_DIR "/python") && argv[2] &&
            !strcmp(argv[2], "dask-driver")) {
                *first = 3;
                return "driver";
        }
        return NULL;
}

/* A role a pre-imported process can serve: one of those commands, a log
 * that is not there yet (the warm one's becomes it) with the pool's cap. */
static bool preimport_fits(lg_jobpool *jp, const struct lg_jobpool_role *role) {
        size_t first;
        if (!jp->logs_dir || !role->log_file || !preimported_run(role->argv, &first) ||
            (role->log_max_bytes && role->log_max_bytes != jp->log_max))
                return false;
        return access(role->log_file, F_OK) < 0 && errno == ENOENT;
}

/* The executor's processes (and their threads) back to legiond's
 * priority: made at nice +10, and the agent restores legion-init's only. */
static void renice_workload(pid_t init, int nice) {
        char path[128], buf[4096];
        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int) init, (int) init);
        if (lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) <= 0)
                return;
        for (char *p = buf, *end;; p = end) {
                long pid = strtol(p, &end, 10);
                if (end == p || pid <= 0)
                        break;
                snprintf(path, sizeof(path), "/proc/%ld/task", pid);
                DIR *d = opendir(path);
                for (struct dirent *de; d && (de = readdir(d));)
                        if (de->d_name[0] != '.')
                                setpriority(PRIO_PROCESS, (id_t) atoi(de->d_name), nice);
                if (d)
                        closedir(d);
        }
}

/* What to run, its arguments, the environment and the working
 * directory, to the process waiting on its control channel
 * (dask_executor.py). */
static int send_specialize(struct start *s, struct lg_error *err) {
        struct lg_msg m;
        size_t first;
        const char *run = preimported_run((const char *const *) s->argv, &first);
        lg_msg_init(&m);
        int r = lg_msg_add(&m, "op", "specialize");
        if (r >= 0)
                r = lg_msg_add(&m, "id", s->id);
        if (r >= 0)
                r = lg_msg_add(&m, "run", run);
        for (size_t i = first; r >= 0 && s->argv[i]; i++)
                r = lg_msg_add(&m, "arg", s->argv[i]);
        for (size_t i = 0; r >= 0 && s->envp && s->envp[i]; i++)
                r = lg_msg_add(&m, "env", s->envp[i]);
        if (r >= 0)
                r = lg_msg_add(&m, "workdir", s->cwd ? s->cwd : "/");
        if (r >= 0)
                r = lg_msg_send(s->control_fd, &m);
        lg_msg_free(&m);
        return r < 0 ? lg_error_set(err, -r, "send specialize to job sandbox `%s`", s->id) : 0;
}

/* Its files, limits and tenant are set (or one failed): specialize it,
 * or make one on demand instead. */
static void prepared(lg_agent_req *req) {
        struct start *s = req->data;
        if (req->result < 0 && s->prep_result >= 0) {
                s->prep_result = req->result;
                s->prep_err = req->err;
        }
        if (--s->prep_pending)
                return;
        lg_jobpool *jp = s->jp;
        struct lg_error err = s->prep_err;
        int r = s->prep_result;
        if (r >= 0 && !s->abandoned) {
                renice_workload(s->init_pid, jp->nice);
                r = send_specialize(s, &err);
        }
        if (r >= 0 || s->abandoned) {
                if (r < 0)
                        destroy_sb(jp, s->id);
                finish(s, r, &err); /* abandoned and r >= 0: destroys it */
                return;
        }
        destroy_sb(jp, s->id);
        s->warm = s->preimported = false;
        struct lg_error e2 = {0};
        if (create_on_demand(s, &e2) >= 0)
                return;
        finish(s, e2.code ? -e2.code : -EIO, &e2);
}

/* The role's log is the warm executor's (linked: legion-init keeps
 * writing the same file); then files, limits and tenant, submitted
 * together (they run in order, one after the other); prepared() ends it.
 * < 0: nothing is left of ws, the caller makes one on demand. */
static int start_preimported(struct start *s, struct wsb *ws, struct lg_error *err) {
        lg_jobpool *jp = s->jp;
        snprintf(s->id, sizeof(s->id), "%s", ws->req.id);
        if (link(ws->log, s->log_file) < 0) {
                int r = lg_error_set(err, errno, "link `%s` to `%s`", ws->log, s->log_file);
                destroy_sb(jp, s->id);
                wsb_free(ws);
                return r;
        }
        s->warm = s->preimported = true;
        s->pidfd = ws->req.out.pidfd;
        s->control_fd = ws->req.out.control_fd;
        s->init_pid = ws->req.out.pid;
        snprintf(s->address, sizeof(s->address), "%s", ws->req.out.net.ip);
        wsb_free(ws); /* its log's warm name */
        struct lg_agent_limits lim = {.set = LG_AGENT_SET_LIMITS | LG_AGENT_SET_PRIO,
                                      .memory_bytes = s->memory_bytes, .cpu_millis = s->cpu_millis,
                                      .pids_max = PIDS_MAX};
        s->prep_pending = 0;
        s->prep_result = 0;
        for (size_t i = 0; i < ARRAY_SIZE(s->prep); i++)
                s->prep[i] = (lg_agent_req){.data = s};
        int r = 0;
        if (s->files_dir && (r = lg_agent_mount(jp->agent, &s->prep[0], s->id, s->files_dir, FILES_DIR, true,
                                                prepared)) >= 0)
                s->prep_pending++;
        if (r >= 0 && (r = lg_agent_update(jp->agent, &s->prep[1], s->id, &lim, prepared)) >= 0)
                s->prep_pending++;
        if (r >= 0 && s->net.namespace[0] &&
            (r = lg_agent_net_assign(jp->agent, &s->prep[2], s->id, s->net.namespace, s->net.policy, prepared)) >= 0)
                s->prep_pending++;
        if (r < 0) {
                s->prep_result = lg_error_set(&s->prep_err, -r, "ready job sandbox `%s`", s->id);
                if (!s->prep_pending) {
                        *err = s->prep_err;
                        destroy_sb(jp, s->id);
                        return r;
                }
        }
        return 0;
}

static int check_path(const char *what, const char *path, struct lg_error *err) {
        if (!path || (path[0] == '/' && !strstr(path, "/../") && strlen(path) < 4096))
                return 0;
        char p[120];
        lg_printable(path, p, sizeof(p));
        return lg_error_setm(err, EINVAL, "%s `%s`: want an absolute path", what, p);
}

static int check_role(lg_jobpool *jp, const struct lg_jobpool_role *role, struct lg_error *err) {
        if (!role || !role->argv || !role->argv[0] || !role->argv[0][0])
                return lg_error_setm(err, EINVAL, "a job role needs a command");
        for (size_t i = 0; role->envp && role->envp[i]; i++)
                if (!strchr(role->envp[i], '=') || role->envp[i][0] == '=') {
                        char e[80];
                        lg_printable(role->envp[i], e, sizeof(e));
                        return lg_error_setm(err, EINVAL, "environment entry `%s`: want NAME=VALUE", e);
                }
        int r;
        if ((r = check_rootfs(&role->rootfs, err)) < 0 || (r = check_path("working directory", role->cwd, err)) < 0 ||
            (r = check_path("files directory", role->files_dir, err)) < 0 ||
            (r = check_path("runtimes directory", role->runtimes_dir, err)) < 0 ||
            (r = check_path("log file", role->log_file, err)) < 0)
                return r;
        if (role->hostname && (!*role->hostname || strlen(role->hostname) > 63 || strchr(role->hostname, '/')))
                return lg_error_setm(err, EINVAL, "hostname: want 1 to 63 characters");
        if (!role->network)
                return 0;
        if (!jp->net)
                return lg_error_setm(err, EOPNOTSUPP, "networking is off on this node");
        if (!role->net_namespace || !lg_store_valid_name(role->net_namespace)) {
                char n[80];
                lg_printable(role->net_namespace, n, sizeof(n));
                return lg_error_setm(err, EINVAL, "network namespace `%s`: want a DNS-1123 label", n);
        }
        const char *pol = role->net_policy ? role->net_policy : "";
        if (strlen(pol) >= LG_NET_NAME_MAX)
                return lg_error_setm(err, EINVAL, "network policy name longer than %d", LG_NET_NAME_MAX - 1);
        for (const char *c = pol; *c; c++)
                if (*c <= ' ' || *c >= 0x7f) {
                        char n[80];
                        lg_printable(pol, n, sizeof(n));
                        return lg_error_setm(err, EINVAL, "network policy `%s`: bad character", n);
                }
        return 0;
}

int lg_jobpool_start(lg_jobpool *jp, const struct lg_jobpool_role *role, lg_jobpool_cb cb, void *userdata,
                     struct lg_error *err) {
        uint64_t t0 = lg_now_ns();
        if (!cb)
                return lg_error_setm(err, EINVAL, "no callback");
        int r = check_role(jp, role, err);
        if (r < 0)
                return r;
        struct start *s = calloc(1, sizeof(*s));
        if (!s)
                return lg_error_set(err, ENOMEM, "out of memory");
        s->jp = jp;
        s->t0 = t0;
        s->cb = cb;
        s->userdata = userdata;
        s->pidfd = -1;
        s->next = jp->starts;
        if (jp->starts)
                jp->starts->prev = s;
        jp->starts = s;
        r = 0;
        s->argv = strv_copy(role->argv, &r);
        s->envp = strv_copy(role->envp, &r);
        if (r < 0 || dup_str(role->cwd, &s->cwd) < 0 || dup_str(role->hostname, &s->hostname) < 0 ||
            dup_str(role->files_dir, &s->files_dir) < 0 || dup_str(role->runtimes_dir, &s->runtimes_dir) < 0 ||
            dup_str(role->log_file, &s->log_file) < 0 || !(s->rootfs = rootfs_new(&role->rootfs))) {
                start_free(s);
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        s->log_max_bytes = role->log_max_bytes;
        s->cpu_millis = role->cpu_millis;
        s->memory_bytes = role->memory_bytes;
        s->network = role->network;
        if (role->network) {
                snprintf(s->net.namespace, sizeof(s->net.namespace), "%s", role->net_namespace);
                snprintf(s->net.policy, sizeof(s->net.policy), "%s", role->net_policy ? role->net_policy : "");
        }
        struct wsb *ws = preimport_fits(jp, role) ? take_warm(jp, role, DASK) : NULL;
        r = -1;
        if (ws) {
                struct lg_error ignored = {0}; /* then it is made on demand */
                r = start_preimported(s, ws, &ignored);
        }
        if (r < 0) {
                s->warm = s->preimported = false;
                ws = take_warm(jp, role, PLAIN);
                r = ws ? start_warm(s, ws, err) : create_on_demand(s, err);
        }
        if (r < 0) {
                start_free(s);
                refill_used(jp);
                return r;
        }
        jp->n_starting++;
        return 0;
}

/* ---- the whole -------------------------------------------------------------------- */

/* The logs of pre-imported executors a previous legiond made: they died
 * with it, never started a role (made if missing). */
static int sweep_warm_logs(const char *dir) {
        int r = lg_mkdir_p(dir, 0750);
        if (r < 0)
                return r;
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d)
                return -errno;
        fd = -1; /* the DIR's now */
        for (struct dirent *de; (de = readdir(d));)
                if (!strncmp(de->d_name, WARM_LOG_PREFIX "jw-", strlen(WARM_LOG_PREFIX "jw-")))
                        unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
        return 0;
}

int lg_jobpool_new(const struct lg_jobpool_config *cfg, lg_jobpool **ret, struct lg_error *err) {
        if (!cfg || !cfg->loop || !cfg->agent || !cfg->state_root || cfg->state_root[0] != '/')
                return lg_error_setm(err, EINVAL, "a job pool needs a loop, an agent and an absolute state root");
        int r = check_path("runtimes directory", cfg->runtimes_dir, err);
        if (r < 0 || (r = check_path("logs directory", cfg->logs_dir, err)) < 0)
                return r;
        lg_jobpool *jp = calloc(1, sizeof(*jp));
        if (!jp)
                return lg_error_set(err, ENOMEM, "out of memory");
        jp->loop = cfg->loop;
        jp->agent = cfg->agent;
        jp->net = cfg->net;
        jp->log_max = cfg->log_max_bytes ? cfg->log_max_bytes : DEFAULT_LOG_MAX;
        errno = 0;
        jp->nice = getpriority(PRIO_PROCESS, 0);
        if (jp->nice == -1 && errno)
                jp->nice = 0;
        if (dup_str(cfg->state_root, &jp->state_root) < 0 || dup_str(cfg->runtimes_dir, &jp->runtimes_dir) < 0 ||
            dup_str(cfg->logs_dir, &jp->logs_dir) < 0) {
                lg_jobpool_free(jp);
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        r = lg_mkdir_p(jp->state_root, 0700);
        if (r < 0) {
                lg_jobpool_free(jp);
                return lg_error_set(err, -r, "create `%s`", cfg->state_root);
        }
        if (jp->logs_dir && (r = sweep_warm_logs(jp->logs_dir)) < 0) {
                lg_jobpool_free(jp);
                return lg_error_set(err, -r, "logs directory `%s`", cfg->logs_dir);
        }
        r = lg_warm_new(jp->loop, &jp->warm, err);
        if (r < 0) {
                jp->warm = NULL;
                lg_jobpool_free(jp);
                return r;
        }
        *ret = jp;
        return 0;
}

void lg_jobpool_free(lg_jobpool *jp) {
        if (!jp)
                return;
        while (jp->pools) {
                struct pool *pl = jp->pools;
                jp->pools = pl->next;
                pool_free(pl);
        }
        for (struct start *s = jp->starts; s; s = s->next)
                s->abandoned = true;
        /* Creates and starts under way: their callbacks destroy what
         * they made. */
        while (jp->n_making || jp->n_starting || jp->n_watches)
                uv_run(jp->loop, UV_RUN_ONCE);
        if (jp->warm) {
                lg_warm_free(jp->warm);
                uv_run(jp->loop, UV_RUN_NOWAIT); /* its handles close */
        }
        free(jp->state_root);
        free(jp->runtimes_dir);
        free(jp->logs_dir);
        free(jp);
}
