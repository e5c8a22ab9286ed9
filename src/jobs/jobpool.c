/* Warm pools for job roles (jobpool.h): named pools of sandboxes made
 * ahead through the node agent, kept by the node's warm-pool component
 * (node/warm.h), the way src/pod/pods-warm.c keeps warm pod sandboxes;
 * and the start of a role, in a taken warm sandbox (files, limits,
 * tenant and workload in one lg_agent_start) or in one made on demand
 * (one create that starts it). Everything runs on the loop; the agent
 * does the work on its thread pool. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobpool.h"
#include "node/warm.h"
#include "store/store.h"

#define ROOTFS_BYTES (1ull << 30) /* the writable root's tmpfs (memory counts in the cgroup) */
#define PIDS_MAX 4096             /* every role has a cgroup: limits, OOM detection */
#define FILES_DIR "/job"
#define RUNTIME_DIR "/opt/legion/runtime"

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
        struct lg_bind bind;
        bool made;
};

/* One role being started. */
struct start {
        struct start *prev, *next;
        lg_jobpool *jp;
        lg_jobpool_cb cb;
        void *userdata;
        uint64_t t0;
        bool warm, abandoned;
        char pool[LG_STORE_NAME_MAX + 1]; /* whose refill it owes ("" = none) */
        lg_agent_req req;
        struct lg_sandbox_spec spec;     /* on demand */
        struct lg_sandbox_launch launch; /* warm */
        struct lg_bind binds[2];
        struct rootfs *rootfs;
        char **argv, **envp;
        char *cwd, *hostname, *files_dir, *runtimes_dir, *log_file;
        uint64_t log_max_bytes, cpu_millis, memory_bytes;
        bool network;
        struct lg_agent_net net;
        int pidfd;
        char address[64];
};

struct lg_jobpool {
        uv_loop_t *loop;
        lg_agent *agent;
        lg_net *net;
        char *state_root, *runtimes_dir;
        lg_warm *warm;
        struct pool *pools;
        struct start *starts;
        unsigned n_making, n_starting;
};

static const char *const job_mount_points[] = {FILES_DIR};

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

static void wsb_free(struct wsb *ws) {
        rootfs_unref(ws->rootfs);
        free(ws);
}

static void made(lg_agent_req *req) {
        struct wsb *ws = req->data;
        lg_jobpool *jp = ws->jp;
        jp->n_making--;
        ws->made = true;
        if (req->result < 0) {
                if (ws->pool)
                        lg_warm_failed(&ws->wi, req->err.msg);
                wsb_free(ws);
        } else if (!ws->pool) { /* discarded while being made */
                destroy_sb(jp, req->id);
                wsb_free(ws);
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
        if (jp->runtimes_dir) {
                ws->bind = (struct lg_bind){.src = jp->runtimes_dir, .dst = RUNTIME_DIR, .readonly = true};
                ws->spec.binds = &ws->bind;
                ws->spec.n_binds = 1;
        }
        ws->req.data = ws;
        /* Its address while it waits (no tenant: it reaches DNS only);
         * the role that takes it gets it. */
        ws->req.in.create.net = (struct lg_agent_net){.attach = jp->net != NULL};
        char id[LG_AGENT_ID_MAX];
        random_id("jw", id);
        int r = lg_agent_create(jp->agent, &ws->req, id, &ws->spec, LG_AGENT_LOW_PRIO, made);
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

int lg_jobpool_set(lg_jobpool *jp, const char *name, const struct lg_jobpool_rootfs *rootfs, unsigned ready,
                   struct lg_error *err) {
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
        if (fresh || !same_rootfs(pl->rootfs, rootfs)) {
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
                        a, json_pack("{s:s, s:s, s:i, s:i, s:i, s:I, s:I, s:I, s:s}", "name", pl->name, "image",
                                     pl->rootfs->image_id ? pl->rootfs->image_id : "", "ready", (int) pl->target,
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

/* A pool was used (a take, or a miss): its refill waits until no start
 * is under way, so that making replacements (creates on the same
 * thread pool, mounts on the same CPUs) does not delay the starts of a
 * job's other roles. */
static void note_used(lg_jobpool *jp, const char *name) {
        struct pool *pl = name[0] ? find_pool(jp, name) : NULL;
        if (pl)
                pl->used = true;
        if (jp->n_starting)
                return;
        for (pl = jp->pools; pl; pl = pl->next)
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
                        destroy_sb(jp, s->req.id);
                start_free(s);
                return;
        }
        struct lg_jobpool_started st = {.warm = s->warm, .pidfd = s->pidfd, .start_ns = lg_now_ns() - s->t0};
        if (status >= 0) {
                snprintf(st.id, sizeof(st.id), "%s", s->req.id);
                snprintf(st.address, sizeof(st.address), "%s", s->address);
        } else {
                st.pidfd = -1;
        }
        /* err may be the request's, which goes with s. */
        struct lg_error e = err ? *err : (struct lg_error){0};
        char pool[sizeof(s->pool)];
        memcpy(pool, s->pool, sizeof(pool));
        lg_jobpool_cb cb = s->cb;
        void *ud = s->userdata;
        start_free(s);
        cb(status, &st, &e, ud);
        note_used(jp, pool);
}

static void started(lg_agent_req *req) {
        struct start *s = req->data;
        if (req->result >= 0) {
                if (!s->warm) {
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
        char id[LG_AGENT_ID_MAX];
        snprintf(id, sizeof(id), "%s", ws->req.id);
        wsb_free(ws);
        int r = lg_agent_start(jp->agent, &s->req, id, &s->launch, &lim, started);
        if (r < 0) {
                destroy_sb(jp, id);
                return lg_error_set(err, -r, "start job sandbox `%s`", id);
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

/* A ready warm sandbox for the role, from any pool with its rootfs;
 * NULL when none (a miss counted on the first such pool). */
static struct wsb *take_warm(lg_jobpool *jp, const struct lg_jobpool_role *role, char *pool_name) {
        /* Warm sandboxes have an address iff networking is on, and the
         * node's runtimes. */
        if (role->network != (jp->net != NULL))
                return NULL;
        if (role->runtimes_dir && (!jp->runtimes_dir || strcmp(role->runtimes_dir, jp->runtimes_dir)))
                return NULL;
        struct pool *first = NULL;
        for (struct pool *pl = jp->pools; pl; pl = pl->next) {
                if (!pl->target || !same_rootfs(pl->rootfs, &role->rootfs))
                        continue;
                if (!first)
                        first = pl;
                struct lg_warm_stats st;
                lg_warm_pool_stats(pl->wp, &st);
                if (!st.ready)
                        continue;
                struct wsb *ws = (struct wsb *) lg_warm_take(pl->wp);
                if (ws) {
                        snprintf(pool_name, LG_STORE_NAME_MAX + 1, "%s", pl->name);
                        return ws;
                }
        }
        if (first) {
                lg_warm_take(first->wp); /* NULL: counted as missed */
                snprintf(pool_name, LG_STORE_NAME_MAX + 1, "%s", first->name);
        }
        return NULL;
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
        struct wsb *ws = take_warm(jp, role, s->pool);
        r = ws ? start_warm(s, ws, err) : create_on_demand(s, err);
        if (r < 0) {
                char pool[sizeof(s->pool)];
                memcpy(pool, s->pool, sizeof(pool));
                start_free(s);
                note_used(jp, pool);
                return r;
        }
        jp->n_starting++;
        return 0;
}

/* ---- the whole -------------------------------------------------------------------- */

int lg_jobpool_new(const struct lg_jobpool_config *cfg, lg_jobpool **ret, struct lg_error *err) {
        if (!cfg || !cfg->loop || !cfg->agent || !cfg->state_root || cfg->state_root[0] != '/')
                return lg_error_setm(err, EINVAL, "a job pool needs a loop, an agent and an absolute state root");
        int r = check_path("runtimes directory", cfg->runtimes_dir, err);
        if (r < 0)
                return r;
        lg_jobpool *jp = calloc(1, sizeof(*jp));
        if (!jp)
                return lg_error_set(err, ENOMEM, "out of memory");
        jp->loop = cfg->loop;
        jp->agent = cfg->agent;
        jp->net = cfg->net;
        if (dup_str(cfg->state_root, &jp->state_root) < 0 || dup_str(cfg->runtimes_dir, &jp->runtimes_dir) < 0) {
                lg_jobpool_free(jp);
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        r = lg_mkdir_p(jp->state_root, 0700);
        if (r < 0) {
                lg_jobpool_free(jp);
                return lg_error_set(err, -r, "create `%s`", cfg->state_root);
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
        while (jp->n_making || jp->n_starting)
                uv_run(jp->loop, UV_RUN_ONCE);
        if (jp->warm) {
                lg_warm_free(jp->warm);
                uv_run(jp->loop, UV_RUN_NOWAIT); /* its handles close */
        }
        free(jp->state_root);
        free(jp->runtimes_dir);
        free(jp);
}
