/* The node agent: instances and their specialization (node.h). Pool
 * groups are in node-pool.c, restart records and adoption in
 * node-adopt.c; node-internal.h holds what they share.
 *
 * Every sandbox here runs a language worker under legion-init with
 * --worker-control: the worker's frames reach us on the sandbox's control
 * socket marked via=worker. Frames are read without ever blocking, since
 * after specialization the worker runs code we do not trust: a half frame
 * must not stall the daemon.
 *
 * A sandbox goes STARTING (worker importing) -> READY (placeholder in its
 * pool) -> SPECIALIZING (code mounted, specialize sent) -> SERVING, or to
 * DEAD from any state. Each has a listening Unix socket made by us and
 * handed to it as fd 4, on which the worker serves HTTP once specialized.
 *
 * The sandboxes themselves are the node agent's (agent.h): creating,
 * mounting the code, changing the CPU, reading the exit status and
 * destroying are requests that run off the loop. An instance's memory
 * lives while a request of it is under way or a handle of it is open
 * (refs), so that lg_instance_destroy may come at any moment: it closes
 * the handles and queues the destroy behind whatever runs.
 *
 * Surviving a restart (node-adopt.c): every sandbox is detachable. A SERVING instance has
 * a record, <run>/instances/<id> (app, revision, pool, identifier, cpu),
 * written when it becomes ready and removed when it goes. At start the
 * node adopts (through the agent) the sandboxes a previous legiond left
 * and holds those with a record until their app revision claims them
 * (lg_node_instance_adopt); the rest (placeholders, instances still
 * specializing) are destroyed, those that cannot be adopted are "lost",
 * and the adopted ones no app claims go too (lg_node_adopted_release).
 * lg_node_detach_all leaves SERVING instances running for the next
 * legiond; their socket files and records stay with them. */
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "common/proto.h"
#include "node/node-internal.h"

static const struct {
        const char *runtime;
        const char *argv[5];
} runtimes[] = {
        /* Running the directory puts it, with the legion_runtime package, on sys.path. */
        {"python3", {"python3", "-I", "/opt/legion/runtime/python", "python", NULL}},
        {"node", {"node", "/opt/legion/runtime/node/worker.js", NULL}},
        {"custom", {"python3", "-I", "/opt/legion/runtime/python", "custom", NULL}},
        {"session", {"python3", "-I", "/opt/legion/runtime/python", "session", NULL}},
};

const char *const *node_runtime_argv(const char *runtime) {
        for (size_t i = 0; i < ARRAY_SIZE(runtimes); i++)
                if (!strcmp(runtimes[i].runtime, runtime))
                        return runtimes[i].argv;
        return NULL;
}

static void spec_free(struct lg_instance_spec *s);

void node_env_free(char **env) {
        if (!env)
                return;
        for (char **e = env; *e; e++)
                free(*e);
        free(env);
}
static void instance_kill(lg_instance *inst, const char *why);
static void on_boost_end(uv_timer_t *t);

/* ---- instance lifetime ---------------------------------------------- */

void node_unref(lg_instance *inst) {
        if (--inst->refs > 0)
                return;
        lg_node *node = inst->node;
        if (inst->all_prev)
                inst->all_prev->all_next = inst->all_next;
        else
                node->all = inst->all_next;
        if (inst->all_next)
                inst->all_next->all_prev = inst->all_prev;
        node->live--;
        free(inst->rbuf);
        free(inst->app);
        free(inst->identifier);
        free(inst->pool_name);
        free(inst->net_policy);
        free(inst->ready_path);
        free(inst->fail_why);
        node_env_free(inst->env);
        lg_image_launch_clear(&inst->launch);
        free(inst);
}

static void handle_closed(uv_handle_t *h) { node_unref(h->data); }

/* A new instance among the node's live ones (freed by node_unref). */
void node_all_link(lg_instance *inst) {
        lg_node *node = inst->node;
        inst->all_next = node->all;
        if (node->all)
                node->all->all_prev = inst;
        node->all = inst;
        node->live++;
}
static void req_done(lg_agent_req *req) { node_unref(req->data); }

/* Tear the sandbox down: close our handles (the polls first let go of
 * its fds), then queue its destroy behind whatever request of it runs
 * (a create still under way included). The struct goes when the last
 * request and handle are done. */
void node_instance_release(lg_instance *inst) {
        if (inst->released)
                return;
        inst->released = true;
        inst->state = ST_DEAD;
        if (inst->polls) {
                if (!inst->image)
                        uv_close((uv_handle_t *) &inst->ctl_poll, handle_closed);
                uv_close((uv_handle_t *) &inst->exit_poll, handle_closed);
                inst->polls = false;
        }
        uv_close((uv_handle_t *) &inst->timer, handle_closed);
        lg_probe_cancel(inst->probe);
        inst->probe = NULL;
        inst->control_fd = inst->pidfd = -1;
        /* -ESRCH: its create failed, nothing to destroy. Detached: it
         * runs on, with its socket and record, for the next legiond. */
        inst->destroy_req.data = inst;
        if (!inst->never_made &&
            (inst->detached ? lg_agent_detach(inst->node->agent, &inst->destroy_req, inst->id, req_done)
                            : lg_agent_destroy(inst->node->agent, &inst->destroy_req, inst->id, req_done)) == 0)
                inst->refs++;
        if (!inst->detached && !inst->never_made) {
                char path[PATH_MAX];
                node_record_path(inst, path, sizeof(path));
                unlink(path);
                unlink(inst->sock);
        }
        spec_free(inst->want);
        inst->want = NULL;
}

/* A request changing the sandbox's CPU that nothing waits for. A failure
 * leaves it the share it had (a placeholder's low weight, the boosted
 * quota): it still serves, and the next instance is not affected. */
static void updated(lg_agent_req *req) {
        lg_instance *inst = req->data;
        free(req);
        node_unref(inst);
}

void node_instance_update(lg_instance *inst, const struct lg_agent_limits *lim) {
        if (inst->released || !lim->set)
                return;
        lg_agent_req *req = calloc(1, sizeof(*req));
        if (!req)
                return;
        req->data = inst;
        if (lg_agent_update(inst->node->agent, req, inst->id, lim, updated) < 0) {
                free(req);
                return;
        }
        inst->refs++;
}

static void instance_update(lg_instance *inst, unsigned set, uint64_t cpu_millis, uint64_t cpu_weight) {
        struct lg_agent_limits lim = {.set = set, .cpu_millis = cpu_millis, .cpu_weight = cpu_weight};
        node_instance_update(inst, &lim);
}

/* Taken from its pool: the normal CPU weight, and its own quota at once
 * when there is no startup boost. */
static void instance_taken_update(lg_instance *inst) {
        instance_update(inst, LG_AGENT_SET_WEIGHT | (inst->set_cpu_on_take ? LG_AGENT_SET_CPU : 0),
                        inst->cpu_millis, 100);
}

/* A taken placeholder's specialization is over (served or failed): its
 * pool makes the replacement now, not beside the specialization. */
static void refill_after_take(lg_instance *inst) {
        struct pool *p = inst->pool_name ? node_find_pool(inst->node, inst->pool_name) : NULL;
        if (p && p->warm)
                lg_warm_used(p->warm);
}

static void fail_ready(lg_instance *inst, int status, const char *message) {
        refill_after_take(inst);
        lg_instance_ready_cb cb = inst->ready_cb;
        inst->ready_cb = NULL;
        if (cb)
                cb(inst, status, message, inst->userdata);
}

/* An instance or placeholder is gone or must go: tell whoever waits. */
void node_instance_end(lg_instance *inst, int status, const char *why) {
        enum inst_state was = inst->state;
        if (was == ST_DEAD)
                return;
        /* A worker that dies before it is ready would die again: back
         * off rather than recreate it in a tight loop. */
        if (was == ST_STARTING)
                lg_warm_failed(&inst->witem, why);
        else
                lg_warm_remove(&inst->witem);
        lg_instance_exit_cb exit_cb = was == ST_SERVING ? inst->exit_cb : NULL;
        node_instance_release(inst);
        /* The callbacks may destroy it: it lives until we are done. */
        inst->refs++;
        if (was == ST_SPECIALIZING)
                fail_ready(inst, status, why);
        else if (exit_cb)
                exit_cb(inst, why, inst->userdata);
        node_unref(inst);
}

static void instance_kill(lg_instance *inst, const char *why) { node_instance_end(inst, -EIO, why); }

void node_instance_served(lg_instance *inst) {
        inst->state = ST_SERVING;
        inst->ready_ns = lg_now_ns() - inst->t_start;
        refill_after_take(inst);
        /* Without its record the next legiond would not know what it
         * serves: it would be replaced. */
        (void) node_record_write(inst);
        uv_timer_stop(&inst->timer);
        if (inst->boost_ms)
                uv_timer_start(&inst->timer, on_boost_end, inst->boost_ms, 0);
        fail_ready(inst, 0, NULL);
}

void lg_instance_destroy(lg_instance *inst) {
        if (!inst)
                return;
        inst->ready_cb = NULL;
        inst->exit_cb = NULL;
        lg_warm_remove(&inst->witem);
        node_instance_release(inst);
}

/* ---- control socket ----------------------------------------------------- */

static void on_frame(lg_instance *inst, struct lg_msg *m) {
        const char *op = lg_msg_get(m, "op");
        const char *via = lg_msg_get(m, "via");
        const char *phase = lg_msg_get(m, "phase");
        if (!op)
                return;
        if (via && !strcmp(via, "worker")) {
                if (!strcmp(op, "ready") && phase && !strcmp(phase, "placeholder") && inst->state == ST_STARTING) {
                        inst->state = ST_READY;
                        lg_warm_ready(&inst->witem);
                        return;
                }
                if (!strcmp(op, "ready") && phase && !strcmp(phase, "specialized") &&
                    inst->state == ST_SPECIALIZING) {
                        node_instance_served(inst);
                        return;
                }
                if (!strcmp(op, "error")) {
                        const char *msg = lg_msg_get(m, "message");
                        const char *type = lg_msg_get(m, "type");
                        char text[1024];
                        snprintf(text, sizeof(text), "%s%s%s", type ? type : "", type ? ": " : "",
                                 msg ? msg : "the worker reported an error");
                        instance_kill(inst, text);
                }
                return;
        }
        /* legion-init's own report: the workload is gone. */
        if (!strcmp(op, "exit")) {
                long long v;
                char text[128];
                if (lg_msg_get_int(m, "signal", &v) == 0)
                        snprintf(text, sizeof(text), "worker killed by signal %lld", v);
                else if (lg_msg_get_int(m, "code", &v) == 0)
                        snprintf(text, sizeof(text), "worker exited with code %lld", v);
                else
                        snprintf(text, sizeof(text), "worker exited");
                instance_kill(inst, text);
        }
}

/* Read what is there, parse every whole frame, keep the rest. */
static void on_control(uv_poll_t *h, int status, int events) {
        lg_instance *inst = h->data;
        (void) events;
        if (status < 0 || inst->state == ST_DEAD) {
                instance_kill(inst, "control socket failed");
                return;
        }
        int fd = inst->control_fd;
        for (;;) {
                if (inst->rcap - inst->rlen < 4096) {
                        size_t cap = inst->rcap ? inst->rcap * 2 : 8192;
                        if (cap > LG_PROTO_MAX + 8) {
                                instance_kill(inst, "control frame too large");
                                return;
                        }
                        char *b = realloc(inst->rbuf, cap);
                        if (!b) {
                                instance_kill(inst, "out of memory");
                                return;
                        }
                        inst->rbuf = b;
                        inst->rcap = cap;
                }
                /* fds are never expected from a sandbox: MSG_CMSG_CLOEXEC and
                 * a zero-size control buffer make the kernel drop them. */
                ssize_t n = recv(fd, inst->rbuf + inst->rlen, inst->rcap - inst->rlen,
                                 MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        break;
                if (n <= 0) {
                        instance_kill(inst, n == 0 ? "sandbox closed its control socket" : "control socket error");
                        return;
                }
                inst->rlen += (size_t) n;
                while (inst->rlen >= 4 && inst->state != ST_DEAD) {
                        uint32_t len = (uint32_t) (unsigned char) inst->rbuf[0] |
                                       (uint32_t) (unsigned char) inst->rbuf[1] << 8 |
                                       (uint32_t) (unsigned char) inst->rbuf[2] << 16 |
                                       (uint32_t) (unsigned char) inst->rbuf[3] << 24;
                        if (len == 0 || len > LG_PROTO_MAX) {
                                instance_kill(inst, "malformed control frame");
                                return;
                        }
                        if (inst->rlen < 4 + (size_t) len)
                                break;
                        struct lg_msg m;
                        lg_msg_init(&m);
                        if (lg_msg_parse(&m, inst->rbuf + 4, len) < 0) {
                                lg_msg_free(&m);
                                instance_kill(inst, "malformed control frame");
                                return;
                        }
                        memmove(inst->rbuf, inst->rbuf + 4 + len, inst->rlen - 4 - len);
                        inst->rlen -= 4 + (size_t) len;
                        on_frame(inst, &m);
                        lg_msg_free(&m);
                }
                if (inst->state == ST_DEAD)
                        return;
        }
}

/* The agent reaps it and says how it ended. */
static void on_status(lg_agent_req *req) {
        lg_instance *inst = req->data;
        inst->status_asked = false;
        if (inst->state != ST_DEAD) {
                /* Drain what the sandbox said last (op=exit) before deciding why. */
                on_control(&inst->ctl_poll, 0, UV_READABLE);
        }
        if (inst->state != ST_DEAD) {
                char text[64] = "sandbox exited";
                if (req->result >= 0 && req->out.exited == 1)
                        lg_sandbox_status_string(&req->out.status, text, sizeof(text));
                instance_kill(inst, text);
        }
        node_unref(inst);
}

static void on_exit_poll(uv_poll_t *h, int status, int events) {
        lg_instance *inst = h->data;
        (void) status;
        (void) events;
        if (inst->state == ST_DEAD || inst->status_asked)
                return;
        /* Level-triggered: quiet until the agent answers. */
        uv_poll_stop(&inst->exit_poll);
        inst->status_req.data = inst;
        if (lg_agent_status(inst->node->agent, &inst->status_req, inst->id,
                            inst->image ? node_image_status : on_status) < 0) {
                instance_kill(inst, "sandbox exited");
                return;
        }
        inst->status_asked = true;
        inst->refs++;
}

/* ---- making sandboxes ------------------------------------------------- */

lg_instance *node_instance_new(lg_node *node) {
        lg_instance *inst = calloc(1, sizeof(*inst));
        if (!inst)
                return NULL;
        inst->node = node;
        inst->t_start = lg_now_ns();
        inst->listen_fd = inst->control_fd = inst->pidfd = -1;
        char hex[17];
        lg_random_hex(hex, 8);
        snprintf(inst->id, sizeof(inst->id), "i-%s", hex);
        uv_timer_init(node->loop, &inst->timer);
        inst->timer.data = inst;
        inst->refs = 1; /* the timer */
        node_all_link(inst);
        return inst;
}

static int listen_socket(const char *path, struct lg_error *err) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return lg_error_set(err, ENAMETOOLONG, "socket path `%s`", path);
        strcpy(sa.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return lg_error_set(err, errno, "socket");
        unlink(path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 512) < 0) {
                int r = lg_error_set(err, errno, "listen on `%s`", path);
                close(fd);
                return r;
        }
        return fd;
}

const char *const node_placeholder_env[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/tmp", "LANG=C.UTF-8", "LEGION_LISTEN_FD=4", "PYTHONDONTWRITEBYTECODE=1", NULL,
};
static const char *const placeholder_mount_points[] = {"/code", "/mnt/data"};

static void spec_free(struct lg_instance_spec *s) {
        if (!s)
                return;
        free((char *) s->pool);
        free((char *) s->app);
        free((char *) s->entrypoint);
        free((char *) s->code_dir);
        free((char *) s->identifier);
        free((char *) s->net_policy);
        if (s->env)
                for (size_t i = 0; s->env[i]; i++)
                        free((char *) s->env[i]);
        free((void *) s->env);
        free(s);
}

static struct lg_instance_spec *spec_dup(const struct lg_instance_spec *in) {
        struct lg_instance_spec *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        *s = *in;
        size_t n = 0;
        while (in->env && in->env[n])
                n++;
        s->pool = strdup(in->pool);
        s->app = strdup(in->app);
        s->entrypoint = in->entrypoint ? strdup(in->entrypoint) : NULL;
        s->code_dir = in->code_dir ? strdup(in->code_dir) : NULL;
        s->identifier = in->identifier ? strdup(in->identifier) : NULL;
        s->net_policy = in->net_policy ? strdup(in->net_policy) : NULL;
        const char **env = calloc(n + 1, sizeof(char *));
        s->env = env;
        bool ok = s->pool && s->app && env && (!in->entrypoint || s->entrypoint) &&
                  (!in->code_dir || s->code_dir) && (!in->identifier || s->identifier) &&
                  (!in->net_policy || s->net_policy);
        for (size_t i = 0; ok && i < n; i++)
                ok = (env[i] = strdup(in->env[i])) != NULL;
        if (!ok) {
                spec_free(s);
                return NULL;
        }
        return s;
}

static int specialize(lg_instance *inst, struct lg_error *err);

/* Watch its control socket and its exit. */
void node_watch(lg_instance *inst) {
        uv_loop_t *loop = inst->node->loop;
        uv_poll_init(loop, &inst->exit_poll, inst->pidfd);
        inst->exit_poll.data = inst;
        inst->polls = true;
        inst->refs++;
        uv_poll_start(&inst->exit_poll, UV_READABLE, on_exit_poll);
        if (inst->image)
                return; /* no worker: nothing on the control socket */
        uv_poll_init(loop, &inst->ctl_poll, inst->control_fd);
        inst->ctl_poll.data = inst;
        inst->refs++;
        uv_poll_start(&inst->ctl_poll, UV_READABLE, on_control);
}

/* The agent made the sandbox and started the worker (or could not). */
void node_create_done(lg_agent_req *req) {
        lg_instance *inst = req->data;
        inst->creating = false;
        if (inst->listen_fd >= 0)
                close(inst->listen_fd); /* the sandbox has its own copy */
        inst->listen_fd = -1;
        if (inst->released) {
                node_unref(inst);
                return;
        }
        if (req->result < 0) {
                char why[600];
                snprintf(why, sizeof(why), "cannot create a sandbox: %s",
                         req->err.msg[0] ? req->err.msg : strerror(-req->result));
                lg_warm_failed(&inst->witem, why);
                node_instance_release(inst);
                fail_ready(inst, req->result, why);
                node_unref(inst);
                return;
        }
        inst->control_fd = req->out.control_fd;
        inst->pidfd = req->out.pidfd;
        memcpy(inst->ip, req->out.net.ip, sizeof(inst->ip));
        node_watch(inst);
        if (inst->image) {
                node_image_created(inst);
        } else if (inst->want) {
                /* Taken while being made (on demand). */
                struct lg_error err = {0};
                if (specialize(inst, &err) < 0)
                        instance_kill(inst, err.msg);
                instance_taken_update(inst);
        }
        node_unref(inst);
}

/* The tenant of an instance of app ("namespace/..."): its namespace and
 * policy (NULL = the namespace's). */
int node_net_tenant(const char *app, const char *policy, struct lg_agent_net *net, struct lg_error *err) {
        size_t n = strcspn(app, "/");
        if (n == 0 || n >= sizeof(net->namespace) || (policy && strlen(policy) >= sizeof(net->policy)))
                return lg_error_setm(err, EINVAL, "`%s`: no namespace to put its network address in", app);
        snprintf(net->namespace, sizeof(net->namespace), "%.*s", (int) n, app);
        snprintf(net->policy, sizeof(net->policy), "%s", policy ? policy : "");
        return 0;
}

bool node_pool_network(const struct pool *p) { return p->spec.network && p->node->net; }

/* Start making a sandbox for pool p; it becomes usable in create_done.
 * for: the instance it is made for (on demand), NULL for a placeholder. */
int node_make_sandbox(lg_node *node, struct pool *p, const struct lg_instance_spec *for_spec, lg_instance **ret,
                        struct lg_error *err) {
        bool placeholder = !for_spec;
        const char *const *argv = node_runtime_argv(p->runtime);
        if (!argv)
                return lg_error_set(err, EINVAL, "unknown runtime `%s`", p->runtime);
        lg_instance *inst = node_instance_new(node);
        if (!inst)
                return lg_error_set(err, ENOMEM, "allocate instance");
        /* Until the create is submitted there is no sandbox to destroy. */
        inst->never_made = true;
        snprintf(inst->sock, sizeof(inst->sock), "%s/%s.sock", node->sock_dir, inst->id);
        snprintf(inst->http_addr, sizeof(inst->http_addr), "unix:%s", inst->sock);
        inst->listen_fd = listen_socket(inst->sock, err);
        if (inst->listen_fd < 0) {
                int r = inst->listen_fd;
                node_instance_release(inst);
                return r;
        }
        struct lg_sandbox_spec *spec = &inst->sspec;
        lg_sandbox_spec_init(spec);
        spec->id = inst->id;
        spec->state_root = node->sandbox_dir;
        spec->binds = &node->runtime_bind;
        spec->n_binds = 1;
        /* Sessions keep their files in /mnt/data, made owned by the
         * sandbox's root on its writable root. */
        spec->mount_points = placeholder_mount_points;
        spec->n_mount_points = p->spec.writable_root ? 2 : 1;
        spec->argv = argv;
        /* Its own copy: the create reads it off the loop, and the pool's
         * may be replaced (lg_node_pool_set) before it does. */
        inst->env = lg_strv_dup((const char *const *) p->env);
        if (p->env && !inst->env) {
                close(inst->listen_fd);
                unlink(inst->sock);
                node_instance_release(inst);
                return lg_error_set(err, ENOMEM, "allocate instance");
        }
        spec->envp = inst->env ? (const char *const *) inst->env : node_placeholder_env;
        spec->cwd = "/tmp";
        /* Code and runtime are read-only; /tmp is the sandbox's scratch.
         * Session pools keep files under /mnt/data: a writable root. */
        spec->readonly_root = !p->spec.writable_root;
        spec->rootfs_bytes = p->spec.disk_bytes;
        spec->memory_bytes = p->spec.memory_bytes ? p->spec.memory_bytes : 256ull << 20;
        spec->cpu_millis = p->spec.boost_cpu_millis ? p->spec.boost_cpu_millis : p->spec.cpu_millis;
        spec->pids_max = 256;
        /* Placeholders import at a low CPU weight: refilling the pool must
         * not slow down the one being specialized right now. Taken, an
         * instance gets the normal weight. */
        spec->cpu_weight = PLACEHOLDER_CPU_WEIGHT;
        spec->capture_logs = true;
        spec->worker_control = true;
        spec->detachable = true;
        spec->extra_fds = &inst->listen_fd;
        spec->n_extra_fds = 1;
        inst->create_req.data = inst;
        /* Its address while it waits; on demand, its tenant too. */
        inst->create_req.in.create.net = (struct lg_agent_net){.attach = node_pool_network(p)};
        if (node_pool_network(p) && for_spec &&
            node_net_tenant(for_spec->app, for_spec->net_policy, &inst->create_req.in.create.net, err) < 0) {
                close(inst->listen_fd);
                unlink(inst->sock);
                node_instance_release(inst);
                return -EINVAL;
        }
        /* A placeholder is also created at a lower priority: the refill
         * that a take starts must not slow the specialization (its mount
         * runs on the thread pool too). On demand, a request waits. */
        int r = lg_agent_create(node->agent, &inst->create_req, inst->id, spec,
                                LG_AGENT_START_NOW | (placeholder ? LG_AGENT_LOW_PRIO : 0), node_create_done);
        if (r < 0) {
                lg_error_set(err, -r, "create sandbox `%s`", inst->id);
                close(inst->listen_fd);
                unlink(inst->sock);
                node_instance_release(inst);
                return r;
        }
        inst->never_made = false;
        inst->refs++; /* the create */
        inst->creating = true;
        p->created++;
        *ret = inst;
        return 0;
}
/* ---- specialization -------------------------------------------------- */

static void on_boost_end(uv_timer_t *t) {
        lg_instance *inst = t->data;
        instance_update(inst, LG_AGENT_SET_CPU, inst->cpu_millis, 0);
}

static void on_specialize_timeout(uv_timer_t *t) {
        lg_instance *inst = t->data;
        if (inst->state == ST_STARTING || inst->state == ST_SPECIALIZING) {
                inst->state = ST_SPECIALIZING;
                instance_kill(inst, "timed out waiting for the worker to become ready");
        }
}

static int send_specialize(lg_instance *inst, const struct lg_instance_spec *spec, struct lg_error *err) {
        struct lg_msg m;
        char rev[16];
        lg_msg_init(&m);
        snprintf(rev, sizeof(rev), "%u", spec->revision);
        int r = lg_msg_add(&m, "op", "specialize");
        if (r >= 0)
                r = lg_msg_add(&m, "app", spec->app);
        if (r >= 0)
                r = lg_msg_add(&m, "revision", rev);
        if (r >= 0 && spec->entrypoint && *spec->entrypoint)
                r = lg_msg_add(&m, "entrypoint", spec->entrypoint);
        if (r >= 0 && spec->code_dir)
                r = lg_msg_add(&m, "workdir", "/code");
        if (r >= 0 && spec->identifier)
                r = lg_msg_add(&m, "identifier", spec->identifier);
        for (size_t i = 0; r >= 0 && spec->env && spec->env[i]; i++)
                r = lg_msg_add(&m, "env", spec->env[i]);
        if (r >= 0)
                r = lg_msg_send(inst->control_fd, &m);
        lg_msg_free(&m);
        return r < 0 ? lg_error_set(err, r, "send specialize to `%s`", inst->id) : 0;
}

/* A step on the way to specialize is over (failed: why, after prefix):
 * the last one sends specialize; a failure ends the instance. */
static void step_done(lg_agent_req *req, const char *prefix, bool last) {
        lg_instance *inst = req->data;
        if (!inst->released) {
                struct lg_error err = {0};
                int r = req->result;
                if (r < 0)
                        lg_error_setm(&err, -r, "%s%s", prefix, req->err.msg);
                else if (last && inst->want)
                        r = send_specialize(inst, inst->want, &err);
                if (r < 0 || last) {
                        spec_free(inst->want);
                        inst->want = NULL;
                }
                if (r < 0)
                        instance_kill(inst, err.msg);
        }
        node_unref(inst);
}

/* The code is at /code: send specialize. */
static void mounted(lg_agent_req *req) { step_done(req, "", true); }

/* A taken placeholder's address is its tenant's now (the mount, if any,
 * waits behind this in the sandbox's queue; an adopted instance wants
 * nothing more). */
static void assigned(lg_agent_req *req) {
        lg_instance *inst = req->data;
        step_done(req, "cannot give its network address to its namespace: ",
                  !inst->released && inst->want && !inst->want->code_dir);
}

/* Submit the assignment of its address to the tenant of app. */
int node_assign_tenant(lg_instance *inst, const char *app, const char *policy, struct lg_error *err) {
        struct lg_agent_net t;
        int r = node_net_tenant(app, policy, &t, err);
        if (r < 0)
                return r;
        inst->net_req.data = inst;
        r = lg_agent_net_assign(inst->node->agent, &inst->net_req, inst->id, t.namespace, t.policy, assigned);
        if (r < 0)
                return lg_error_set(err, -r, "give the network address of `%s` to namespace `%s`", inst->id,
                                    t.namespace);
        inst->refs++;
        return 0;
}

/* The placeholder is up (or was already): its address to its tenant,
 * mount the code (a helper forks into its mount namespace: off the
 * loop), then specialize. */
static int specialize(lg_instance *inst, struct lg_error *err) {
        bool assigning = inst->assign;
        if (assigning) {
                inst->assign = false;
                int r = node_assign_tenant(inst, inst->want->app, inst->want->net_policy, err);
                if (r < 0)
                        return r;
        }
        if (!inst->want->code_dir) {
                if (assigning)
                        return 0; /* assigned() sends it */
                int r = send_specialize(inst, inst->want, err);
                spec_free(inst->want);
                inst->want = NULL;
                return r;
        }
        inst->mount_req.data = inst;
        int r = lg_agent_mount(inst->node->agent, &inst->mount_req, inst->id, inst->want->code_dir, "/code", true,
                               mounted);
        if (r < 0)
                return lg_error_set(err, -r, "mount the code in `%s`", inst->id);
        inst->refs++;
        return 0;
}

int lg_node_instance_start(lg_node *node, const struct lg_instance_spec *spec,
                           lg_instance_ready_cb ready_cb, lg_instance_exit_cb exit_cb,
                           void *userdata, lg_instance **ret, struct lg_error *err) {
        bool no_pool = !spec->pool || !*spec->pool;
        struct pool *p = no_pool ? NULL : node_find_pool(node, spec->pool);
        if (!p && !(no_pool && spec->image && *spec->image))
                return lg_error_set(err, ENOENT, "pool group `%s` does not exist", no_pool ? "" : spec->pool);
        lg_instance *inst;
        int r;
        if (!p || p->img || (spec->image && *spec->image)) {
                /* Its failures reach ready_cb, from the loop. */
                r = node_image_start(node, p, spec, &inst, err);
                if (r < 0)
                        return r;
                inst->ready_cb = ready_cb;
                inst->exit_cb = exit_cb;
                inst->userdata = userdata;
                *ret = inst;
                return 0;
        }
        inst = p->warm ? (lg_instance *) lg_warm_take(p->warm) : NULL;
        if (!inst) {
                /* Empty pool, or a burst larger than it: make one now. The
                 * worker's imports and the specialize are then sequential,
                 * but the request still succeeds. */
                r = node_make_sandbox(node, p, spec, &inst, err);
                if (r < 0)
                        return r;
                inst->cold = true;
                p->on_demand++;
        }
        inst->t_start = lg_now_ns();
        inst->ready_cb = ready_cb;
        inst->exit_cb = exit_cb;
        inst->userdata = userdata;
        free(inst->app);
        free(inst->identifier);
        free(inst->pool_name);
        inst->app = strdup(spec->app);
        inst->identifier = spec->identifier ? strdup(spec->identifier) : NULL;
        inst->pool_name = strdup(spec->pool);
        inst->revision = spec->revision;
        free(inst->net_policy);
        inst->net_policy = spec->net_policy ? strdup(spec->net_policy) : NULL;
        /* A placeholder's address had no tenant; made on demand, it has. */
        inst->assign = !inst->creating && inst->ip[0];
        /* An app without its own cpu gets the pool group's once boosted. */
        inst->cpu_millis = spec->cpu_millis ? spec->cpu_millis : p->spec.cpu_millis;
        /* The placeholder runs with the pool's boosted CPU; the instance
         * keeps it for boost_seconds after it is ready, then gets its own. */
        inst->boost_ms = p->spec.boost_cpu_millis ? (uint64_t) p->spec.boost_seconds * 1000 : 0;
        inst->set_cpu_on_take = !inst->boost_ms && inst->cpu_millis != p->spec.cpu_millis;
        /* On demand, the specialize frame waits in the socket until the
         * worker finishes its imports and reads it; create_done sends it. */
        inst->state = ST_SPECIALIZING;
        inst->want = spec_dup(spec);
        r = inst->want ? 0 : lg_error_set(err, ENOMEM, "copy instance spec");
        if (r >= 0 && !inst->creating) {
                /* The mount first: the request waits on it. */
                r = specialize(inst, err);
                instance_taken_update(inst);
        }
        if (r < 0) {
                inst->ready_cb = NULL;
                refill_after_take(inst);
                node_instance_release(inst);
                return r;
        }
        uv_timer_start(&inst->timer, on_specialize_timeout, node->specialize_timeout_ms, 0);
        *ret = inst;
        return 0;
}
/* ---- accessors and setup ------------------------------------------------ */

const char *lg_instance_id(const lg_instance *inst) { return inst->id; }
const char *lg_instance_socket(const lg_instance *inst) { return inst->sock; }
bool lg_instance_cold(const lg_instance *inst) { return inst->cold; }
uint64_t lg_instance_start_ns(const lg_instance *inst) { return inst->ready_ns; }
const char *lg_instance_address(const lg_instance *inst) { return inst->ip[0] ? inst->ip : NULL; }
const char *lg_instance_http_address(const lg_instance *inst) { return inst->http_addr; }
const char *lg_instance_log_dir(const lg_instance *inst) {
        return inst->released || inst->creating ? NULL : lg_agent_state_dir(inst->node->agent, inst->id);
}

int lg_node_new(const struct lg_node_config *cfg, lg_node **ret, struct lg_error *err) {
        lg_node *node = calloc(1, sizeof(*node));
        if (!node)
                return lg_error_set(err, ENOMEM, "allocate node");
        node->loop = cfg->loop;
        node->agent = cfg->agent;
        node->net = cfg->net;
        node->specialize_timeout_ms = cfg->specialize_timeout_ms ? cfg->specialize_timeout_ms : 30000;
        node->images = cfg->images;
        node->ready_timeout_ms = cfg->ready_timeout_ms ? cfg->ready_timeout_ms : 60000;
        if (asprintf(&node->run_dir, "%s", cfg->run_dir) < 0 ||
            asprintf(&node->sandbox_dir, "%s/sandboxes-root", cfg->run_dir) < 0 ||
            asprintf(&node->sock_dir, "%s/sockets", cfg->run_dir) < 0 ||
            asprintf(&node->runtimes_dir, "%s", cfg->runtimes_dir) < 0) {
                lg_node_free(node);
                return lg_error_set(err, ENOMEM, "allocate node");
        }
        int r = lg_mkdir_p(node->sock_dir, 0700);
        if (r >= 0 && asprintf(&node->inst_dir, "%s/instances", cfg->run_dir) < 0)
                r = -ENOMEM;
        if (r >= 0)
                r = lg_mkdir_p(node->inst_dir, 0700);
        if (r < 0) {
                r = lg_error_set(err, r, "create `%s`", node->sock_dir);
                lg_node_free(node);
                return r;
        }
        /* What a previous run left: sandboxes whose legion-init is gone
         * are removed here; those still running are adopted below. */
        lg_sandbox_gc(node->sandbox_dir, NULL);
        if (!node->agent) {
                r = lg_agent_local_new(node->loop, node->sandbox_dir, node->net, &node->agent, err);
                if (r < 0) {
                        lg_node_free(node);
                        return r;
                }
                node->own_agent = true;
        }
        /* Its own inodes: a session watching the workers' files would see
         * other instances start. */
        node->runtime_bind = (struct lg_bind){.src = node->runtimes_dir, .dst = "/opt/legion/runtime",
                                              .readonly = true, .private_inodes = true};
        r = lg_warm_new(node->loop, &node->warm, err);
        if (r < 0) {
                lg_node_free(node);
                return r;
        }
        node_adopt_left(node);
        *ret = node;
        return 0;
}

void lg_node_free(lg_node *node) {
        if (!node)
                return;
        /* Placeholders are discarded with their warm pools. */
        lg_warm_free(node->warm);
        lg_node_adopted_release(node, NULL, NULL);
        /* Instances still serving (the router is not freed at exit) go
         * too, nobody told; their destroys run off the loop, waited for. */
        for (lg_instance *inst = node->all; inst; inst = inst->all_next) {
                inst->ready_cb = NULL;
                inst->exit_cb = NULL;
                node_instance_release(inst);
        }
        while (node->live)
                uv_run(node->loop, UV_RUN_ONCE);
        uv_run(node->loop, UV_RUN_NOWAIT); /* the warm pools' handles close */
        for (struct pool *p = node->pools, *next; p; p = next) {
                next = p->next;
                free(p->name);
                free(p->runtime);
                free(p->version);
                node_env_free(p->env);
                node_image_pool_clear(p);
                free(p);
        }
        if (node->own_agent)
                lg_agent_free(node->agent);
        free(node->run_dir);
        free(node->sandbox_dir);
        free(node->sock_dir);
        free(node->runtimes_dir);
        free(node->inst_dir);
        free(node->lost);
        node_images_free(node);
        free(node);
}
