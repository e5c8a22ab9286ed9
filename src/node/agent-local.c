/* The local node agent backend: drives the sandboxes of this machine
 * (src/sandbox) from libuv's thread pool.
 *
 * Each sandbox is an entry, found by id in a hash table, with a queue of
 * the requests submitted for it: the head runs on a pool thread while
 * the others wait, because an lg_sandbox handle is not thread-safe (one
 * thread drives one sandbox at a time). Only that thread touches the
 * entry's handle while its request runs; the loop touches the queue and
 * the table, and reads the handle only between two requests. Sandboxes
 * die with the thread that made them (PR_SET_PDEATHSIG): libuv's pool
 * threads live as long as the process, so that is legiond's life.
 * At most MAX_DESTROYS destroys run at once; the others wait their turn
 * at the head of their sandbox's queue.
 *
 * Network: an entry holds its sandbox's address (reserved at create,
 * reclaimed at adopt) and releases it on the same pool thread that
 * destroyed the sandbox. Only a sandbox that made its network namespace
 * holds one: a pod's container that joined another's namespace sees the
 * same eth0 after a restart, and must not take the address too. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/agent-backend.h"

#define LOW_PRIO_NICE 10
/* Destroys running at once: the rest wait, so that a wave of them (scale
 * to zero, a pool reshaped) cannot take every thread of libuv's pool
 * (4 by default) from the creates and mounts a request waits for. */
#define MAX_DESTROYS 2

struct entry {
        struct entry *hnext;
        char id[LG_AGENT_ID_MAX];
        char *state_dir;
        lg_sandbox *sb;
        struct lg_net_addr addr;   /* ip "" = none; the pool thread's, as sb */
        lg_agent_req *head, *tail; /* head runs while busy */
        bool busy;
        bool destroying;           /* a destroy is queued: nothing more is taken */
        bool gone;                 /* destroyed, or never made: removed when its queue ends */
};

struct local {
        struct lg_agent base;
        char *state_root;
        lg_net *net;               /* NULL = no networking */
        struct entry **buckets;
        size_t n_buckets, n_entries;
        int nice;                  /* legiond's own */
        unsigned destroys;         /* running on the pool */
        lg_agent_req *waiting, *waiting_tail; /* destroys waiting for a turn (linked by next) */
};

static struct local *to_local(lg_agent *a) { return (struct local *) a; }

/* ---- the table ---------------------------------------------------------------- */

static size_t hash(const char *s, size_t n) {
        uint64_t h = 1469598103934665603ull; /* FNV-1a */
        for (; *s; s++)
                h = (h ^ (unsigned char) *s) * 1099511628211ull;
        return (size_t) (h % n);
}

static struct entry *find(struct local *L, const char *id) {
        for (struct entry *e = L->buckets[hash(id, L->n_buckets)]; e; e = e->hnext)
                if (!strcmp(e->id, id))
                        return e;
        return NULL;
}

static void grow(struct local *L) {
        size_t n = L->n_buckets * 2;
        struct entry **b = calloc(n, sizeof(*b));
        if (!b)
                return; /* longer chains, still correct */
        for (size_t i = 0; i < L->n_buckets; i++)
                for (struct entry *e = L->buckets[i], *next; e; e = next) {
                        next = e->hnext;
                        size_t h = hash(e->id, n);
                        e->hnext = b[h];
                        b[h] = e;
                }
        free(L->buckets);
        L->buckets = b;
        L->n_buckets = n;
}

static struct entry *insert(struct local *L, const char *id) {
        struct entry *e = calloc(1, sizeof(*e));
        if (!e)
                return NULL;
        snprintf(e->id, sizeof(e->id), "%s", id);
        if (L->n_entries >= L->n_buckets * 2)
                grow(L);
        size_t h = hash(id, L->n_buckets);
        e->hnext = L->buckets[h];
        L->buckets[h] = e;
        L->n_entries++;
        return e;
}

static void remove_entry(struct local *L, struct entry *e) {
        for (struct entry **pp = &L->buckets[hash(e->id, L->n_buckets)]; *pp; pp = &(*pp)->hnext)
                if (*pp == e) {
                        *pp = e->hnext;
                        break;
                }
        L->n_entries--;
        free(e->state_dir);
        free(e);
}

/* ---- the work, on a pool thread ------------------------------------------------- */

static int open_ns(pid_t pid, const char *ns) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int) pid, ns);
        return open(path, O_RDONLY | O_CLOEXEC);
}

/* The sandbox's namespaces exist, its first process waits: the veth. */
struct attach {
        lg_net *net;
        const struct lg_net_addr *addr;
};

static int attach_hook(pid_t pid, void *data, struct lg_error *err) {
        struct attach *a = data;
        return lg_net_attach(a->net, pid, a->addr, err);
}

static int networking_off(struct lg_error *err) {
        return lg_error_setm(err, EOPNOTSUPP, "networking is off on this node");
}

/* The sandbox's address to a tenant: namespace "" = none asked. */
static int assign(struct local *L, struct entry *e, const struct lg_agent_net *net, struct lg_error *err) {
        if (!net->namespace[0])
                return 0;
        if (!L->net)
                return networking_off(err);
        if (!e->addr.ip[0])
                return lg_error_setm(err, ENOENT, "sandbox `%s` has no network address", e->id);
        int r = lg_net_assign(L->net, e->addr.ip, net->namespace, net->policy[0] ? net->policy : NULL, err);
        return r < 0 ? lg_error_wrap(err, r, "sandbox `%s`", e->id) : r;
}

/* Give the address back (the sandbox is gone, or never came to be). */
static int release(struct local *L, struct entry *e, struct lg_error *err) {
        if (!e->addr.ip[0])
                return 0;
        int r = lg_net_release(L->net, &e->addr, err);
        e->addr = (struct lg_net_addr){0};
        return r;
}

/* 1 when pid's network namespace is its own (made in its own user
 * namespace, as src/sandbox makes it), 0 when joined or the host's. */
static int owns_netns(pid_t pid) {
        char path[64];
        struct stat user, owner;
        snprintf(path, sizeof(path), "/proc/%d/ns/user", (int) pid);
        if (stat(path, &user) < 0)
                return -errno;
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int) pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        int ufd = ioctl(fd, NS_GET_USERNS);
        int r = ufd < 0 ? -errno : 0;
        close(fd);
        if (r < 0)
                return r == -EPERM ? 0 : r; /* EPERM: owned by an ancestor of ours (the host's) */
        r = fstat(ufd, &owner) < 0 ? -errno : owner.st_ino == user.st_ino && owner.st_dev == user.st_dev;
        close(ufd);
        return r;
}

/* After lg_sandbox_adopt: the address its namespace holds, held again. */
static int reclaim(struct local *L, struct entry *e, struct lg_error *err) {
        if (!L->net)
                return 0;
        pid_t pid = lg_sandbox_pid(e->sb);
        int r = owns_netns(pid);
        /* Its workload ended while nobody was attached: legion-init killed
         * everything inside, so the namespace and the address it held are
         * gone; nothing to take back (its kept exit status still is). */
        if (r == -ENOENT || r == -ESRCH) {
                e->addr = (struct lg_net_addr){0};
                return 0;
        }
        if (r < 0)
                return lg_error_set(err, -r, "the network namespace of sandbox `%s`", e->id);
        if (r == 0)
                return 0;
        struct lg_error why = {0};
        r = lg_net_reclaim(L->net, pid, &e->addr, &why);
        if (r == -ENOENT) { /* made without an address */
                e->addr = (struct lg_net_addr){0};
                return 0;
        }
        if (r < 0) {
                e->addr = (struct lg_net_addr){0};
                *err = why;
                return lg_error_wrap(err, r, "take back the address of sandbox `%s`", e->id);
        }
        return 0;
}

static int do_create(struct local *L, struct entry *e, lg_agent_req *req) {
        struct lg_sandbox_spec spec = *req->in.create.spec;
        unsigned flags = req->in.create.flags;
        const struct lg_agent_net *net = &req->in.create.net;
        spec.id = e->id;
        if (!spec.state_root)
                spec.state_root = L->state_root;
        struct attach at = {L->net, &e->addr};
        if (net->attach) {
                if (!L->net)
                        return networking_off(&req->err);
                if (spec.share_net || spec.join_netns_fd >= 0 || spec.net_hook)
                        return lg_error_setm(&req->err, EINVAL,
                                             "sandbox `%s`: an address needs a network namespace of its own", e->id);
                int r = lg_net_reserve(L->net, &e->addr, &req->err);
                if (r < 0)
                        return r;
                /* /etc/hosts and /etc/resolv.conf inside say so. */
                spec.net_address = e->addr.ip;
                spec.nameserver = lg_net_gateway(L->net);
                spec.net_hook = attach_hook;
                spec.net_hook_data = &at;
        } else if (net->namespace[0]) {
                return lg_error_setm(&req->err, EINVAL, "sandbox `%s`: a namespace without an address", e->id);
        }
        /* A lower priority for this thread while it works, and so for the
         * sandbox's first process it clones (which does most of the
         * work, the mounts): made ahead, it must compete little with the
         * sandbox being used right now. */
        pid_t tid = gettid();
        int old = 0;
        bool reniced = false;
        if (flags & LG_AGENT_LOW_PRIO) {
                errno = 0;
                old = getpriority(PRIO_PROCESS, (id_t) tid);
                reniced = !(old == -1 && errno) &&
                          setpriority(PRIO_PROCESS, (id_t) tid, old + LOW_PRIO_NICE > 19 ? 19 : old + LOW_PRIO_NICE) == 0;
        }
        int r = lg_sandbox_create(&spec, &e->sb, &req->err);
        /* Its policy before its workload's first packet. */
        if (r >= 0)
                r = assign(L, e, net, &req->err);
        if (r >= 0 && (flags & LG_AGENT_START_NOW))
                r = lg_sandbox_start(e->sb, &req->err);
        if (r >= 0 && (flags & LG_AGENT_OPEN_NS)) {
                /* While it surely lives: it waits for its start, or runs. */
                pid_t pid = lg_sandbox_pid(e->sb);
                req->out.ipcns_fd = open_ns(pid, "ipc");
                if (req->out.ipcns_fd >= 0 && !spec.share_net)
                        req->out.netns_fd = open_ns(pid, "net");
                if (req->out.ipcns_fd < 0 || (!spec.share_net && req->out.netns_fd < 0))
                        r = lg_error_set(&req->err, errno, "open the namespaces of sandbox `%s`", e->id);
        }
        if (reniced)
                setpriority(PRIO_PROCESS, (id_t) tid, old);
        if (r < 0) {
                if (req->out.ipcns_fd >= 0)
                        close(req->out.ipcns_fd);
                if (req->out.netns_fd >= 0)
                        close(req->out.netns_fd);
                req->out.ipcns_fd = req->out.netns_fd = -1;
                lg_sandbox_destroy(e->sb);
                e->sb = NULL;
                /* The create's error is the one to tell; an address whose
                 * release fails stays held until legiond restarts (its
                 * link went with the namespace). */
                struct lg_error ignored = {0};
                release(L, e, &ignored);
                return r;
        }
        req->out.net = e->addr;
        req->out.pid = lg_sandbox_pid(e->sb);
        req->out.control_fd = lg_sandbox_control_fd(e->sb);
        req->out.pidfd = lg_sandbox_pidfd(e->sb);
        return 0;
}

static int do_update(struct local *L, struct entry *e, lg_agent_req *req, const struct lg_agent_limits *l) {
        int r = 0;
        if (l->set & LG_AGENT_SET_LIMITS)
                r = lg_sandbox_set_limits(e->sb, l->memory_bytes, l->cpu_millis, l->cpu_weight, l->pids_max,
                                          &req->err);
        if (r >= 0 && (l->set & LG_AGENT_SET_CPU))
                r = lg_sandbox_set_cpu(e->sb, l->cpu_millis, &req->err);
        if (r >= 0 && (l->set & LG_AGENT_SET_WEIGHT))
                r = lg_sandbox_set_cpu_weight(e->sb, l->cpu_weight, &req->err);
        if (r >= 0 && (l->set & LG_AGENT_SET_PRIO) &&
            setpriority(PRIO_PROCESS, (id_t) lg_sandbox_pid(e->sb), L->nice) < 0)
                r = lg_error_set(&req->err, errno, "set the priority of sandbox `%s`", e->id);
        return r;
}

static void work(uv_work_t *w) {
        lg_agent_req *req = w->data;
        struct entry *e = req->entry;
        struct local *L = to_local(req->agent);
        int r = 0;
        switch (req->op) {
        case LG_AGENT_CREATE:
                r = do_create(L, e, req);
                break;
        case LG_AGENT_ADOPT:
                /* Blocks until its legion-init answers (seconds at most). */
                r = lg_sandbox_adopt(req->in.adopt.state_root ? req->in.adopt.state_root : L->state_root, e->id,
                                     &e->sb, &req->err);
                if (r >= 0 && (r = reclaim(L, e, &req->err)) < 0) {
                        /* Kept running, it would lose its address to the
                         * sweep and to the next sandbox. */
                        lg_sandbox_destroy(e->sb);
                        e->sb = NULL;
                }
                if (r >= 0) {
                        req->out.pid = lg_sandbox_pid(e->sb);
                        req->out.control_fd = lg_sandbox_control_fd(e->sb);
                        req->out.pidfd = lg_sandbox_pidfd(e->sb);
                        req->out.net = e->addr;
                } else {
                        e->sb = NULL;
                }
                break;
        case LG_AGENT_START:
                if (req->in.start.mount.src)
                        r = lg_sandbox_mount(e->sb, req->in.start.mount.src, req->in.start.mount.dst,
                                             req->in.start.mount.readonly, &req->err);
                if (r >= 0)
                        r = do_update(L, e, req, &req->in.start.limits);
                if (r >= 0)
                        r = assign(L, e, &req->in.start.net, &req->err);
                if (r >= 0)
                        r = req->in.start.launch ? lg_sandbox_start_with(e->sb, req->in.start.launch, &req->err)
                                                 : lg_sandbox_start(e->sb, &req->err);
                break;
        case LG_AGENT_MOUNT:
                r = lg_sandbox_mount(e->sb, req->in.mount.src, req->in.mount.dst, req->in.mount.readonly,
                                     &req->err);
                break;
        case LG_AGENT_UPDATE:
                r = do_update(L, e, req, &req->in.update);
                break;
        case LG_AGENT_SIGNAL:
                r = lg_sandbox_signal(e->sb, req->in.signal);
                if (r < 0)
                        lg_error_set(&req->err, -r, "signal %d to sandbox `%s`", req->in.signal, e->id);
                break;
        case LG_AGENT_STATUS:
                r = lg_sandbox_poll(e->sb, &req->out.status);
                if (r < 0) {
                        lg_error_set(&req->err, -r, "status of sandbox `%s`", e->id);
                        break;
                }
                req->out.exited = r;
                req->out.stats_result = lg_sandbox_stats(e->sb, &req->out.stats);
                r = 0;
                break;
        case LG_AGENT_DETACH:
                r = lg_sandbox_detach(e->sb);
                e->sb = NULL;
                if (r < 0)
                        lg_error_set(&req->err, -r, "detach sandbox `%s`", e->id);
                break;
        case LG_AGENT_NET_ASSIGN:
                r = assign(L, e, &req->in.assign, &req->err);
                break;
        case LG_AGENT_DESTROY:
                r = lg_sandbox_destroy(e->sb);
                e->sb = NULL;
                if (r < 0) {
                        lg_error_set(&req->err, -r, "destroy sandbox `%s`", e->id);
                        struct lg_error ignored = {0}; /* the first error is the one told */
                        release(L, e, &ignored);
                } else if ((r = release(L, e, &req->err)) < 0) {
                        lg_error_wrap(&req->err, r, "release the address of sandbox `%s`", e->id);
                }
                break;
        }
        req->result = r;
}

/* ---- the queue, on the loop -------------------------------------------------------- */

static void done(uv_work_t *w, int status);

static void run(lg_agent_req *req) {
        struct entry *e = req->entry;
        struct local *L = to_local(req->agent);
        e->busy = true;
        if (req->op == LG_AGENT_DESTROY) {
                if (L->destroys >= MAX_DESTROYS) {
                        /* It is the last of its sandbox's queue (nothing
                         * is taken after a destroy): next is free. */
                        req->next = NULL;
                        if (L->waiting_tail)
                                L->waiting_tail->next = req;
                        else
                                L->waiting = req;
                        L->waiting_tail = req;
                        return;
                }
                L->destroys++;
        }
        req->work.data = req;
        int r = uv_queue_work(req->agent->loop, &req->work, work, done);
        if (r < 0) /* cannot happen with both callbacks given; never silently */
                abort();
}

static void done(uv_work_t *w, int status) {
        (void) status; /* never cancelled: requests are not */
        lg_agent_req *req = w->data;
        struct entry *e = req->entry;
        struct local *L = to_local(req->agent);
        if (req->op == LG_AGENT_DESTROY) {
                L->destroys--;
                lg_agent_req *next = L->waiting;
                if (next) {
                        L->waiting = next->next;
                        if (!L->waiting)
                                L->waiting_tail = NULL;
                        next->next = NULL;
                        run(next);
                }
        }
        e->head = req->next;
        if (!e->head)
                e->tail = NULL;
        req->next = NULL;
        if (req->op == LG_AGENT_CREATE || req->op == LG_AGENT_ADOPT) {
                if (req->result >= 0 && e->sb && !(e->state_dir = strdup(lg_sandbox_state_dir(e->sb))))
                        req->result = lg_error_set(&req->err, ENOMEM, "out of memory");
                if (req->result < 0)
                        e->gone = true;
        }
        if (req->op == LG_AGENT_DESTROY || req->op == LG_AGENT_DETACH)
                e->gone = true;
        if (e->gone) {
                /* What waits behind a failed create: nothing left to act
                 * on. The id is free before anyone hears of it. */
                lg_agent_req *q = e->head;
                char id[LG_AGENT_ID_MAX];
                memcpy(id, e->id, sizeof(id));
                remove_entry(L, e);
                lg_agent_complete(req);
                while (q) {
                        lg_agent_req *next = q->next;
                        q->next = NULL;
                        q->result = lg_error_setm(&q->err, ESRCH, "sandbox `%s` does not exist", id);
                        lg_agent_complete(q);
                        q = next;
                }
                return;
        }
        if (e->head)
                run(e->head);
        else
                e->busy = false;
        lg_agent_complete(req);
}

static int local_submit(lg_agent *a, lg_agent_req *req) {
        struct local *L = to_local(a);
        struct entry *e;
        if (req->op == LG_AGENT_CREATE || req->op == LG_AGENT_ADOPT) {
                if (!req->id[0]) {
                        char hex[17];
                        lg_random_hex(hex, 8);
                        snprintf(req->id, sizeof(req->id), "sb-%s", hex);
                }
                if (find(L, req->id))
                        return -EEXIST;
                if (!(e = insert(L, req->id)))
                        return -ENOMEM;
        } else {
                e = find(L, req->id);
                if (!e || e->destroying || e->gone)
                        return -ESRCH;
        }
        if (req->op == LG_AGENT_DESTROY || req->op == LG_AGENT_DETACH)
                e->destroying = true;
        req->entry = e;
        if (e->tail)
                e->tail->next = req;
        else
                e->head = req;
        e->tail = req;
        if (!e->busy)
                run(req);
        return 0;
}

static const char *local_state_dir(lg_agent *a, const char *id) {
        struct entry *e = find(to_local(a), id);
        return e && !e->destroying ? e->state_dir : NULL;
}

static void local_free(lg_agent *a) {
        struct local *L = to_local(a);
        for (size_t i = 0; i < L->n_buckets; i++)
                for (struct entry *e = L->buckets[i]; e; e = e->hnext)
                        if (!e->destroying && !e->gone)
                                lg_agent_destroy(a, NULL, e->id, NULL);
        /* Every entry leaves the table when its last request is done. */
        while (a->pending)
                uv_run(a->loop, UV_RUN_ONCE);
        free(L->buckets);
        free(L->state_root);
        free(L);
}

static const struct lg_agent_ops local_ops = {
        .name = "local",
        .submit = local_submit,
        .free = local_free,
        .state_dir = local_state_dir,
};

int lg_agent_local_new(uv_loop_t *loop, const char *state_root, lg_net *net, lg_agent **ret, struct lg_error *err) {
        struct local *L = calloc(1, sizeof(*L));
        if (!L)
                return lg_error_set(err, ENOMEM, "allocate the node agent");
        L->base.ops = &local_ops;
        L->net = net;
        L->base.loop = loop;
        L->n_buckets = 256;
        L->buckets = calloc(L->n_buckets, sizeof(*L->buckets));
        L->state_root = state_root ? strdup(state_root) : NULL;
        if (!L->buckets || (state_root && !L->state_root)) {
                free(L->buckets);
                free(L->state_root);
                free(L);
                return lg_error_set(err, ENOMEM, "allocate the node agent");
        }
        errno = 0;
        L->nice = getpriority(PRIO_PROCESS, 0);
        if (L->nice == -1 && errno)
                L->nice = 0;
        *ret = &L->base;
        return 0;
}
