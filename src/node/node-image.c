/* Image pools and image instances (node.h, "Image instances").
 *
 * An image instance is a sandbox made from an image's layers with an
 * address on the node's network and the image's own server as its
 * workload (src/image/launch.h builds the command line, environment,
 * directory and user, as for pods). There is no worker and no control
 * frame: the instance is ready when the probe (probe.h) says so, and it
 * ended when legion-init's pidfd polls readable (then the agent's status
 * says how). Three ways to get one:
 *
 * - on demand (no pool, or its pool is empty): created and started in
 *   one request with its tenant, then probed;
 * - from a warm sandbox of an image pool (the default placeholder mode):
 *   made ahead with the layers, address (no tenant) and cgroup but no
 *   process, at a low priority; taking it is one lg_agent_start with the
 *   launch, the limits, the priority raised and the tenant, then probed;
 * - from a started placeholder (mode "process"): the pool's own server
 *   already runs and passed the probe before the pool counted it ready;
 *   taking it raises its limits and priority and assigns the tenant.
 *
 * Failures before any sandbox is asked for (no network, image missing,
 * no command) reach ready_cb from the instance's timer, never from
 * inside lg_node_instance_start, with the statuses node.h lists.
 *
 * Images are looked up once per id and kept for the node's life (an id
 * names immutable content); lookups by name go to the store each time,
 * since a tag may move. Both read small files on the loop, as pods do. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/node-internal.h"

#define IMAGE_PIDS 256
#define IMAGE_DEFAULT_MEMORY (256ull << 20)

static const char no_network[] = "container apps need the node network (legiond --network on)";

/* ---- helpers ------------------------------------------------------------ */

static uint64_t fnv_strv(uint64_t h, const char *const *v) {
        for (size_t i = 0; v && v[i]; i++)
                for (const char *c = v[i];; c++) {
                        h = (h ^ (unsigned char) *c) * 1099511628211ull;
                        if (!*c)
                                break;
                }
        return (h ^ 0xff) * 1099511628211ull; /* the end of a list */
}

/* The last line its server wrote to stderr, printable, "" if none. */
static void last_stderr_line(lg_instance *inst, char *buf, size_t cap) {
        buf[0] = '\0';
        const char *dir = lg_agent_state_dir(inst->node->agent, inst->id);
        char path[PATH_MAX], tail[1024];
        if (!dir || snprintf(path, sizeof(path), "%s/stderr.log", dir) >= (int) sizeof(path))
                return;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat st;
        if (fd < 0)
                return;
        ssize_t n = -1;
        if (fstat(fd, &st) == 0) {
                off_t off = st.st_size > (off_t) sizeof(tail) - 1 ? st.st_size - (off_t) sizeof(tail) + 1 : 0;
                n = pread(fd, tail, sizeof(tail) - 1, off);
        }
        close(fd);
        if (n <= 0)
                return;
        while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' '))
                n--;
        tail[n] = '\0';
        char *line = strrchr(tail, '\n');
        lg_printable(line ? line + 1 : tail, buf, cap);
}

/* why, plus ": <last line of stderr>" when there is one. */
static void with_stderr(lg_instance *inst, const char *why, char *buf, size_t cap) {
        char line[256];
        last_stderr_line(inst, line, sizeof(line));
        snprintf(buf, cap, "%s%s%s", why, line[0] ? ": " : "", line);
}

/* ---- the node's images -------------------------------------------------- */

int node_image_get(lg_node *node, const char *ref, const struct lg_image **ret, struct lg_error *err) {
        if (!node->images)
                return lg_error_setm(err, EOPNOTSUPP, "this node has no image store");
        for (size_t i = 0; i < node->n_imgs; i++)
                if (!strcmp(node->imgs[i]->id, ref)) {
                        *ret = node->imgs[i];
                        return 0;
                }
        struct lg_image *img = NULL;
        struct lg_error e = {0};
        int r = lg_image_get(node->images, ref, &img, &e);
        if (r == -ENOENT)
                return lg_error_setm(err, ENOENT, "image `%s` is not in the store", ref);
        if (r < 0)
                return lg_error_setm(err, -r, "image `%s`: %s", ref, e.msg);
        for (size_t i = 0; i < node->n_imgs; i++)
                if (!strcmp(node->imgs[i]->id, img->id)) {
                        lg_image_free(img);
                        *ret = node->imgs[i];
                        return 0;
                }
        if (lg_grow((void **) &node->imgs, &node->cap_imgs, node->n_imgs, sizeof(*node->imgs), 4) < 0) {
                lg_image_free(img);
                return lg_error_set(err, ENOMEM, "keep image `%s`", ref);
        }
        node->imgs[node->n_imgs++] = img;
        *ret = img;
        return 0;
}

static void image_in_use(lg_node *node, const char *id, struct lg_strlist *ids, struct lg_strlist *layers) {
        for (size_t i = 0; i < ids->n; i++)
                if (!strcmp(ids->v[i], id))
                        return;
        lg_strlist_add(ids, id);
        const struct lg_image *img = NULL;
        struct lg_error err = {0};
        /* Not in the store any more (removed with force): nothing of it
         * is left to keep. */
        if (node_image_get(node, id, &img, &err) < 0)
                return;
        for (size_t i = 0; layers && i < img->n_layers; i++)
                lg_strlist_add(layers, img->layer_dirs[i]);
}

int lg_node_images_in_use(lg_node *node, bool warm, struct lg_strlist *ids, struct lg_strlist *layers) {
        if (!node || !node->images)
                return 0;
        for (lg_instance *inst = node->all; inst; inst = inst->all_next)
                if (inst->image && inst->image_id[0] && (warm || !inst->witem.pool))
                        image_in_use(node, inst->image_id, ids, layers);
        for (struct pool *p = node->pools; warm && p; p = p->next)
                if (p->img && !p->deleted)
                        image_in_use(node, p->img->id, ids, layers);
        return ids->status < 0 ? ids->status : layers ? layers->status : 0;
}

void node_images_free(lg_node *node) {
        for (size_t i = 0; i < node->n_imgs; i++)
                lg_image_free(node->imgs[i]);
        free(node->imgs);
        node->imgs = NULL;
        node->n_imgs = node->cap_imgs = 0;
}

/* ---- pools -------------------------------------------------------------- */

int node_image_pool_prepare(lg_node *node, const struct lg_pool_spec *spec, const struct lg_image **img,
                            struct lg_error *err) {
        if (!node->net)
                return lg_error_setm(err, ENETUNREACH, "%s", no_network);
        if (!spec->image || !*spec->image)
                return lg_error_setm(err, EINVAL, "pool group `%s`: runtime image needs an image", spec->name);
        int r = node_image_get(node, spec->image, img, err);
        if (r < 0)
                return r;
        if (!spec->start_process)
                return 0;
        if (spec->port < 1 || spec->port > 65535)
                return lg_error_setm(err, EINVAL, "pool group `%s`: placeholder mode process needs a port (1-65535)",
                                     spec->name);
        if (spec->ready_path && *spec->ready_path && spec->ready_path[0] != '/')
                return lg_error_setm(err, EINVAL, "pool group `%s`: the readiness path must start with /", spec->name);
        /* Its server must have a command line (each placeholder builds its own). */
        struct lg_image_launch_in in = {.command = spec->command, .args = spec->args, .env = spec->env};
        struct lg_image_launch launch = {0};
        r = lg_image_launch_build(*img, &in, &launch, err);
        lg_image_launch_clear(&launch);
        return r < 0 ? lg_error_wrap(err, r, "pool group `%s`", spec->name) : 0;
}

void node_image_pool_clear(struct pool *p) {
        node_env_free(p->command);
        node_env_free(p->args);
        free(p->ready_path);
        p->command = p->args = NULL;
        p->ready_path = NULL;
        p->img = NULL;
}

int node_image_pool_set(struct pool *p, const struct lg_pool_spec *spec, const struct lg_image *img,
                        struct lg_error *err) {
        node_image_pool_clear(p);
        p->spec.image = p->spec.ready_path = NULL;
        p->spec.command = p->spec.args = NULL;
        if (!img)
                return 0;
        p->img = img;
        node_env_free(p->env);
        p->env = lg_strv_dup(spec->env); /* its own only: no worker's */
        p->command = lg_strv_dup(spec->command);
        p->args = lg_strv_dup(spec->args);
        p->ready_path = spec->ready_path && *spec->ready_path ? strdup(spec->ready_path) : NULL;
        if ((spec->env && spec->env[0] && !p->env) || (spec->command && spec->command[0] && !p->command) ||
            (spec->args && spec->args[0] && !p->args) || (spec->ready_path && *spec->ready_path && !p->ready_path)) {
                node_image_pool_clear(p);
                return lg_error_set(err, ENOMEM, "allocate pool");
        }
        p->spec.image = img->id;
        p->spec.command = (const char *const *) p->command;
        p->spec.args = (const char *const *) p->args;
        p->spec.ready_path = p->ready_path;
        p->spec.network = true;
        return 0;
}

void node_image_pool_key(const struct pool *p, char *buf, size_t cap) {
        uint64_t h = 1469598103934665603ull;
        h = fnv_strv(h, (const char *const *) p->command);
        h = fnv_strv(h, (const char *const *) p->args);
        h = fnv_strv(h, (const char *const *) p->env);
        snprintf(buf, cap,
                 "image:%s mode=%s cmd=%016llx port=%u path=%s cpu=%llu boost=%llu mem=%llu disk=%llu group=%s",
                 p->img->id, p->spec.start_process ? "process" : "sandbox", (unsigned long long) h,
                 p->spec.start_process ? p->spec.port : 0, p->ready_path ? p->ready_path : "",
                 (unsigned long long) p->spec.cpu_millis, (unsigned long long) p->spec.boost_cpu_millis,
                 (unsigned long long) p->spec.memory_bytes, (unsigned long long) p->spec.disk_bytes, p->name);
}

/* ---- readiness and exit --------------------------------------------------- */

static void probed(lg_probe *probe, int status, const char *message, void *ud) {
        (void) probe;
        lg_instance *inst = ud;
        inst->probe = NULL; /* it frees itself */
        if (status < 0) {
                char why[800];
                with_stderr(inst, message, why, sizeof(why));
                node_instance_end(inst, status, why);
                return;
        }
        if (inst->state == ST_STARTING) {
                /* A started placeholder: ready for a take. */
                inst->state = ST_READY;
                lg_warm_ready(&inst->witem);
        } else if (inst->state == ST_SPECIALIZING) {
                node_instance_served(inst);
        }
}

static void probe(lg_instance *inst) {
        snprintf(inst->http_addr, sizeof(inst->http_addr), "%s:%u", inst->ip, inst->port);
        struct lg_probe_config cfg = {.loop = inst->node->loop, .ip = inst->ip, .port = inst->port,
                                      .path = inst->ready_path, .timeout_ms = inst->node->ready_timeout_ms};
        struct lg_error err = {0};
        int r = lg_probe_start(&cfg, probed, inst, &inst->probe, &err);
        if (r < 0)
                node_instance_end(inst, r, err.msg);
}

/* How it ended, for exit_cb: "Exited(3)", "OOMKilled", "Killed(9)"
 * (then ": " and the last line of its stderr, when there is one). */
static void exit_text(const struct lg_sandbox_status *st, char *buf, size_t cap) {
        if (st->kind == LG_EXIT_OOM)
                snprintf(buf, cap, "OOMKilled");
        else if (st->kind == LG_EXIT_SIGNAL)
                snprintf(buf, cap, "Killed(%d)", st->signal);
        else
                snprintf(buf, cap, "Exited(%d)", st->code);
}

void node_image_status(lg_agent_req *req) {
        lg_instance *inst = req->data;
        inst->status_asked = false;
        if (inst->state != ST_DEAD) {
                bool known = req->result >= 0 && req->out.exited == 1;
                const struct lg_sandbox_status *st = &req->out.status;
                char text[64], why[1200];
                if (!known)
                        snprintf(text, sizeof(text), "Exited");
                else
                        exit_text(st, text, sizeof(text));
                if (inst->state == ST_STARTING || inst->state == ST_SPECIALIZING) {
                        char how[96], before[600];
                        if (!known)
                                snprintf(how, sizeof(how), "exited");
                        else if (st->kind == LG_EXIT_OOM)
                                snprintf(how, sizeof(how), "was OOMKilled (out of memory)");
                        else if (st->kind == LG_EXIT_SIGNAL)
                                snprintf(how, sizeof(how), "was killed by signal %d", st->signal);
                        else
                                snprintf(how, sizeof(how), "exited with code %d", st->code);
                        if (inst->probe && lg_probe_connected(inst->probe) && inst->ready_path)
                                snprintf(before, sizeof(before), "%s before GET %s answered 2xx/3xx", how,
                                         inst->ready_path);
                        else
                                snprintf(before, sizeof(before), "%s before port %u opened", how, inst->port);
                        with_stderr(inst, before, why, sizeof(why));
                } else {
                        /* "Exited(4): <its last stderr line>": the app's log
                         * keeps why after its logs went with the sandbox. */
                        with_stderr(inst, text, why, sizeof(why));
                }
                node_instance_end(inst, -ECHILD, why);
        }
        node_unref(inst);
}

/* ---- making -------------------------------------------------------------- */

/* The sandbox of an image instance; the workload (launch) only when it
 * starts at once. */
static void image_sandbox_spec(lg_instance *inst, const struct lg_image *img, uint64_t disk_bytes,
                               uint64_t memory, uint64_t cpu, uint64_t weight, const struct lg_image_launch *l) {
        struct lg_sandbox_spec *s = &inst->sspec;
        lg_sandbox_spec_init(s);
        s->id = inst->id;
        s->state_root = inst->node->sandbox_dir;
        lg_image_sandbox_layers(img, disk_bytes, s);
        s->memory_bytes = memory;
        s->cpu_millis = cpu;
        s->cpu_weight = weight;
        s->pids_max = IMAGE_PIDS;
        s->capture_logs = true; /* <state>/stdout.log and stderr.log, as workers' */
        s->detachable = true;
        if (l) {
                s->argv = (const char *const *) l->argv;
                s->envp = (const char *const *) l->env;
                s->cwd = l->cwd;
                s->run_as_set = l->run_as_set;
                s->run_uid = l->uid;
                s->run_gid = l->gid;
        }
}

void node_image_created(lg_instance *inst) {
        if (!inst->ip[0]) {
                node_instance_end(inst, -ENETUNREACH, "the sandbox got no address on the node network");
        } else if (inst->state == ST_STARTING && !inst->port) {
                inst->state = ST_READY; /* a warm sandbox: no process yet */
                lg_warm_ready(&inst->witem);
        } else {
                probe(inst);
        }
}

static int create(lg_instance *inst, unsigned flags, const struct lg_agent_net *net, struct lg_error *err) {
        inst->create_req.data = inst;
        inst->create_req.in.create.net = *net;
        int r = lg_agent_create(inst->node->agent, &inst->create_req, inst->id, &inst->sspec, flags, node_create_done);
        if (r < 0)
                return lg_error_set(err, -r, "create sandbox `%s`", inst->id);
        inst->refs++;
        inst->creating = true;
        return 0;
}

int node_image_placeholder(struct pool *p, lg_instance **ret, struct lg_error *err) {
        lg_node *node = p->node;
        if (!node->net)
                return lg_error_setm(err, ENETUNREACH, "%s", no_network);
        lg_instance *inst = node_instance_new(node);
        if (!inst)
                return lg_error_set(err, ENOMEM, "allocate instance");
        inst->image = true;
        inst->state = ST_STARTING;
        snprintf(inst->image_id, sizeof(inst->image_id), "%s", p->img->id);
        uint64_t mem = p->spec.memory_bytes ? p->spec.memory_bytes : IMAGE_DEFAULT_MEMORY;
        uint64_t cpu = p->spec.boost_cpu_millis ? p->spec.boost_cpu_millis : p->spec.cpu_millis;
        bool process = p->spec.start_process;
        int r = 0;
        if (process) {
                /* Its own copy of the pool's server: the pool may change
                 * while the create, which reads it, runs. */
                inst->port = p->spec.port;
                inst->ready_path = p->ready_path ? strdup(p->ready_path) : NULL;
                struct lg_image_launch_in in = {.command = (const char *const *) p->command,
                                                .args = (const char *const *) p->args,
                                                .env = (const char *const *) p->env};
                if (p->ready_path && !inst->ready_path)
                        r = lg_error_set(err, ENOMEM, "allocate instance");
                else
                        r = lg_image_launch_build(p->img, &in, &inst->launch, err);
        }
        image_sandbox_spec(inst, p->img, p->spec.disk_bytes, mem, cpu, PLACEHOLDER_CPU_WEIGHT,
                           process ? &inst->launch : NULL);
        /* Made ahead, at a low priority: a take's start must not wait
         * behind the refill it triggers. */
        struct lg_agent_net net = {.attach = true};
        if (r >= 0)
                r = create(inst, LG_AGENT_LOW_PRIO | (process ? LG_AGENT_START_NOW : 0), &net, err);
        if (r < 0) {
                inst->never_made = true;
                node_instance_release(inst);
                return r;
        }
        p->created++;
        *ret = inst;
        return 0;
}

/* ---- taking ---------------------------------------------------------------- */

static void fail_now(uv_timer_t *t) {
        lg_instance *inst = t->data;
        node_instance_end(inst, inst->fail_status, inst->fail_why ? inst->fail_why : "cannot start");
}

/* A failure of the instance, told from its timer (never from inside
 * lg_node_instance_start). */
static void fail_soon(lg_instance *inst, int status, const char *why, bool made) {
        inst->never_made = !made;
        inst->fail_status = status < 0 ? status : -EIO;
        inst->fail_why = strdup(why);
        inst->state = ST_SPECIALIZING;
        uv_timer_start(&inst->timer, fail_now, 0, 0);
}

static void started(lg_agent_req *req) {
        lg_instance *inst = req->data;
        if (!inst->released) {
                if (req->result < 0) {
                        char why[700];
                        snprintf(why, sizeof(why), "cannot start: %s",
                                 req->err.msg[0] ? req->err.msg : strerror(-req->result));
                        node_instance_end(inst, req->result, why);
                } else {
                        probe(inst);
                }
        }
        node_unref(inst);
}

static void assigned(lg_agent_req *req) {
        lg_instance *inst = req->data;
        if (!inst->released) {
                if (req->result < 0) {
                        char why[700];
                        snprintf(why, sizeof(why), "cannot give its network address to its namespace: %s",
                                 req->err.msg);
                        node_instance_end(inst, req->result, why);
                } else {
                        node_instance_served(inst);
                }
        }
        node_unref(inst);
}

int node_image_start(lg_node *node, struct pool *p, const struct lg_instance_spec *spec, lg_instance **ret,
                     struct lg_error *err) {
        struct lg_error e = {0};
        int fail = 0;
        const struct lg_image *img = p ? p->img : NULL;
        if (!node->net)
                fail = lg_error_setm(&e, ENETUNREACH, "%s", no_network);
        else if (spec->image && *spec->image)
                fail = node_image_get(node, spec->image, &img, &e);
        else if (!img)
                fail = lg_error_setm(&e, EINVAL, "pool group `%s` does not run images", p ? p->name : "");
        bool process_pool = p && p->img && p->spec.start_process;
        unsigned port = spec->port ? spec->port : process_pool ? p->spec.port : 0;
        if (!fail && (port < 1 || port > 65535))
                fail = lg_error_setm(&e, EINVAL, "an image instance needs a port (1-65535)");
        const char *ready_path = spec->ready_path && *spec->ready_path ? spec->ready_path
                                 : process_pool && !spec->port ? p->ready_path : NULL;

        /* A warm sandbox of this very image, or a new one. */
        lg_instance *inst = !fail && p && p->warm && p->img == img ? (lg_instance *) lg_warm_take(p->warm) : NULL;
        bool warm = inst != NULL;
        bool waiting = warm && !inst->port; /* made with no process */
        if (!inst && !(inst = node_instance_new(node)))
                return lg_error_set(err, ENOMEM, "allocate instance");
        inst->image = true;
        inst->t_start = lg_now_ns();
        free(inst->app);
        free(inst->identifier);
        free(inst->pool_name);
        free(inst->net_policy);
        inst->app = strdup(spec->app);
        inst->identifier = spec->identifier ? strdup(spec->identifier) : NULL;
        inst->pool_name = p ? strdup(p->name) : NULL;
        inst->revision = spec->revision;
        inst->net_policy = spec->net_policy ? strdup(spec->net_policy) : NULL;
        if (!warm || waiting) {
                inst->port = port;
                free(inst->ready_path);
                inst->ready_path = ready_path ? strdup(ready_path) : NULL;
        }
        if (img)
                snprintf(inst->image_id, sizeof(inst->image_id), "%s", img->id);
        uint64_t pool_cpu = p ? p->spec.cpu_millis : 0;
        inst->cpu_millis = spec->cpu_millis ? spec->cpu_millis : pool_cpu;
        inst->boost_ms = p && p->spec.boost_cpu_millis ? (uint64_t) p->spec.boost_seconds * 1000 : 0;
        uint64_t cpu = inst->boost_ms ? p->spec.boost_cpu_millis : inst->cpu_millis;
        inst->memory_bytes = spec->memory_bytes ? spec->memory_bytes
                             : p && p->spec.memory_bytes ? p->spec.memory_bytes : IMAGE_DEFAULT_MEMORY;
        inst->state = ST_SPECIALIZING;
        *ret = inst;
        if (!inst->app || (spec->identifier && !inst->identifier) || (p && !inst->pool_name) ||
            (spec->net_policy && !inst->net_policy) || (ready_path && (!warm || waiting) && !inst->ready_path))
                fail = fail ? fail : lg_error_set(&e, ENOMEM, "allocate instance");
        struct lg_agent_net tenant = {.attach = true};
        if (!fail)
                fail = node_net_tenant(spec->app, spec->net_policy, &tenant, &e);
        /* Its workload: the app's (or, from a process pool, the pool's). */
        if (!fail && (!warm || waiting)) {
                bool pools = process_pool && !spec->command && !spec->args;
                struct lg_image_launch_in in = {
                        .command = pools ? (const char *const *) p->command : spec->command,
                        .args = pools ? (const char *const *) p->args : spec->args,
                        .env = spec->env && spec->env[0] ? spec->env : pools ? (const char *const *) p->env : NULL,
                };
                fail = lg_image_launch_build(img, &in, &inst->launch, &e);
        }
        struct lg_agent_limits lim = {.set = LG_AGENT_SET_LIMITS | (warm ? LG_AGENT_SET_PRIO : 0),
                                      .memory_bytes = inst->memory_bytes, .cpu_millis = cpu, .cpu_weight = 100,
                                      .pids_max = IMAGE_PIDS};
        if (!fail && !warm) {
                /* On demand: made and started with its tenant in one request. */
                inst->cold = true;
                if (p) {
                        p->on_demand++;
                        p->created++;
                }
                image_sandbox_spec(inst, img, p ? p->spec.disk_bytes : 0, inst->memory_bytes, cpu, 100,
                                   &inst->launch);
                fail = create(inst, LG_AGENT_START_NOW, &tenant, &e);
        } else if (!fail && waiting) {
                /* Launch, limits, priority and tenant in one trip. */
                lg_sandbox_launch_init(&inst->slaunch);
                lg_image_launch_apply(&inst->launch, &inst->slaunch);
                inst->start_req.data = inst;
                inst->start_req.in.start.net = tenant;
                fail = lg_agent_start(node->agent, &inst->start_req, inst->id, &inst->slaunch, &lim, started);
                if (fail < 0)
                        lg_error_set(&e, -fail, "start `%s`", inst->id);
                else
                        inst->refs++;
        } else if (!fail) {
                /* A started placeholder: its own limits, then its tenant;
                 * ready once the address is the tenant's. */
                node_instance_update(inst, &lim);
                inst->net_req.data = inst;
                fail = lg_agent_net_assign(node->agent, &inst->net_req, inst->id, tenant.namespace, tenant.policy,
                                           assigned);
                if (fail < 0)
                        lg_error_set(&e, -fail, "give the network address of `%s` to namespace `%s`", inst->id,
                                     tenant.namespace);
                else
                        inst->refs++;
        }
        if (fail < 0)
                fail_soon(inst, fail, e.msg, warm || inst->creating);
        return 0;
}
