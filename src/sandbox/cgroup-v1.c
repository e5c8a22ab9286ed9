/* cgroup v1 backend: one group per controller hierarchy, at
 * <root>/<controller>/<parent>/<name> for memory, cpu, cpuacct, pids and
 * freezer. Hierarchies are found by their directory under the mount root,
 * which may be a mount (cpu/) or a symlink to a co-mounted one
 * (cpu -> cpu,cpuacct); co-mounted controllers share one directory, told
 * apart by device and inode, so nothing is created or written twice.
 *
 * Controllers that are not mounted are skipped; asking for a limit that
 * needs one fails with -EOPNOTSUPP, and statistics from one read as 0.
 *
 * With a memory limit, socket buffers are limited as well, through
 * memory.kmem.tcp.limit_in_bytes (v1_set_sock).
 *
 * Killing uses the freezer (as runc and crun do) so that nothing can fork or
 * exit-and-recycle its pid between reading cgroup.procs and the kill. */
#include "sandbox/cgroup-internal.h"

#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

enum { V1_MEMORY, V1_CPU, V1_CPUACCT, V1_PIDS, V1_FREEZER, V1_NCTRL };

static const char *const v1_dirs[V1_NCTRL] = {
        [V1_MEMORY] = "memory",
        [V1_CPU] = "cpu",
        [V1_CPUACCT] = "cpuacct",
        [V1_PIDS] = "pids",
        [V1_FREEZER] = "freezer",
};

struct v1_hier {
        const char *dir; /* controller directory it was reached through */
        dev_t dev;
        ino_t ino;
        int parent_fd;   /* O_PATH fd of <dir>/<parent>, for rmdir */
        int fd;          /* the group directory, or -1 if it is missing */
        bool created;    /* made by create (rollback removes only these) */
};

struct v1_cgroup {
        struct lg_cgroup head;
        struct v1_hier h[V1_NCTRL];
        size_t n;
        int idx[V1_NCTRL]; /* controller -> index in h, or -1 */
};

#define V1(cg) ((struct v1_cgroup *) (cg))

static struct v1_hier *hier(struct v1_cgroup *c, int ctrl) {
        int i = c->idx[ctrl];
        if (i < 0 || c->h[i].fd < 0)
                return NULL;
        return &c->h[i];
}

static int v1_fail(struct v1_cgroup *c, const struct v1_hier *h, const char *file,
                   const char *value, int r, struct lg_error *err) {
        return lg_error_set(err, -r, "write `%s` to `%s/%s/%s/%s/%s`", value, c->head.root,
                            h->dir, c->head.parent, c->head.name, file);
}

static int v1_write(struct v1_cgroup *c, const struct v1_hier *h, const char *file,
                    const char *value, struct lg_error *err) {
        int r = lg_write_file_at(h->fd, file, value, false);
        return r < 0 ? v1_fail(c, h, file, value, r, err) : 0;
}

static int v1_alloc(const char *root, const char *parent, const char *name,
                    struct v1_cgroup **ret) {
        struct v1_cgroup *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < V1_NCTRL; i++) {
                c->h[i].parent_fd = c->h[i].fd = -1;
                c->idx[i] = -1;
        }
        int r = lg_cg_head_init(&c->head, &lg_cgroup_v1_ops, root, parent, name);
        if (r < 0) {
                free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static void v1_free(lg_cgroup *cg) {
        struct v1_cgroup *c = V1(cg);
        for (size_t i = 0; i < c->n; i++) {
                lg_closep(&c->h[i].fd);
                lg_closep(&c->h[i].parent_fd);
        }
        lg_cg_head_done(&c->head);
        free(c);
}

static inline void v1_freep(struct v1_cgroup **c) {
        if (*c)
                v1_free(&(*c)->head);
}

/* Find the mounted controllers and fold co-mounted ones together. stat
 * follows the cpu -> cpu,cpuacct symlinks, so both names land on the same
 * (dev, ino). */
static void v1_scan(int rootfd, struct v1_cgroup *c) {
        for (int i = 0; i < V1_NCTRL; i++) {
                struct stat st;
                if (fstatat(rootfd, v1_dirs[i], &st, 0) < 0 || !S_ISDIR(st.st_mode))
                        continue;
                size_t j;
                for (j = 0; j < c->n; j++)
                        if (c->h[j].dev == st.st_dev && c->h[j].ino == st.st_ino)
                                break;
                if (j == c->n) {
                        c->h[j].dir = v1_dirs[i];
                        c->h[j].dev = st.st_dev;
                        c->h[j].ino = st.st_ino;
                        c->n++;
                }
                c->idx[i] = (int) j;
        }
}

/* Charges of the group must reach the parent so that a limit on "legion"
 * (set by an operator) covers every sandbox. Kernels since 5.x force
 * use_hierarchy to 1 and some drop the file; older ones inherit the value
 * at mkdir time, so set it right after making the parent, while it has no
 * children and the write is still allowed. */
static int v1_parent_use_hierarchy(int parent_fd) {
        char buf[16];
        ssize_t n = lg_read_file_at(parent_fd, "memory.use_hierarchy", buf, sizeof(buf));
        if (n == -ENOENT)
                return 0;
        if (n < 0)
                return (int) n;
        if (strcmp(buf, "0") != 0)
                return 0;
        return lg_write_file_at(parent_fd, "memory.use_hierarchy", "1", false);
}

static void v1_rollback(lg_cgroup *cg) {
        struct v1_cgroup *c = V1(cg);
        for (size_t i = 0; i < c->n; i++)
                if (c->h[i].created && c->h[i].parent_fd >= 0 &&
                    unlinkat(c->h[i].parent_fd, c->head.name, AT_REMOVEDIR) == 0)
                        c->h[i].created = false;
}

static int v1_create(const char *root, const char *parent, const char *name, unsigned flags,
                     lg_cgroup **ret, struct lg_error *err) {
        _cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return lg_error_set(err, errno, "open `%s`", root);

        _cleanup_(v1_freep) struct v1_cgroup *c = NULL;
        int r = v1_alloc(root, parent, name, &c);
        if (r < 0)
                return lg_error_set(err, -r, "cgroup handle");
        v1_scan(rootfd, c);
        if (c->n == 0)
                return lg_error_set(err, EOPNOTSUPP,
                                    "no cgroup v1 controller (memory, cpu, cpuacct, pids, freezer) under `%s`",
                                    root);

        for (size_t i = 0; i < c->n; i++) {
                struct v1_hier *h = &c->h[i];
                char path[PATH_MAX];
                bool made = false;

                if ((size_t) snprintf(path, sizeof(path), "%s/%s", h->dir, parent) >= sizeof(path)) {
                        r = lg_error_set(err, ENAMETOOLONG, "cgroup parent `%s`", parent);
                        goto fail;
                }
                h->parent_fd = lg_cg_open_parent(rootfd, path, &made);
                if (h->parent_fd < 0) {
                        r = lg_error_set(err, -h->parent_fd, "create `%s/%s`", root, path);
                        h->parent_fd = -1;
                        goto fail;
                }
                if (made && c->idx[V1_MEMORY] == (int) i) {
                        r = v1_parent_use_hierarchy(h->parent_fd);
                        if (r < 0) {
                                r = lg_error_set(err, -r, "enable memory.use_hierarchy in `%s/%s`",
                                                 root, path);
                                goto fail;
                        }
                }

                if (mkdirat(h->parent_fd, name, 0755) == 0)
                        h->created = true;
                else if (!(errno == EEXIST && (flags & LG_CGROUP_CREATE_ADOPT))) {
                        r = lg_error_set(err, errno, "mkdir `%s/%s/%s`", root, path, name);
                        goto fail;
                }
                h->fd = openat(h->parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (h->fd < 0) {
                        r = lg_error_set(err, errno, "open `%s/%s/%s`", root, path, name);
                        goto fail;
                }
        }
        *ret = &TAKE_PTR(c)->head;
        return 0;
fail:
        v1_rollback(&c->head);
        return r;
}

static int v1_open(const char *root, const char *parent, const char *name, lg_cgroup **ret) {
        _cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return -errno;
        _cleanup_(v1_freep) struct v1_cgroup *c = NULL;
        int r = v1_alloc(root, parent, name, &c);
        if (r < 0)
                return r;
        v1_scan(rootfd, c);

        /* A crashed owner may have left the group in only some hierarchies;
         * open what is there so destroy can finish the job. */
        bool any = false;
        for (size_t i = 0; i < c->n; i++) {
                struct v1_hier *h = &c->h[i];
                char path[PATH_MAX];
                if ((size_t) snprintf(path, sizeof(path), "%s/%s", h->dir, parent) >= sizeof(path))
                        return -ENAMETOOLONG;
                h->parent_fd = openat(rootfd, path, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (h->parent_fd < 0) {
                        if (errno != ENOENT)
                                return -errno;
                        continue;
                }
                h->fd = openat(h->parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (h->fd < 0) {
                        if (errno != ENOENT)
                                return -errno;
                        continue;
                }
                any = true;
        }
        if (!any)
                return -ENOENT;
        *ret = &TAKE_PTR(c)->head;
        return 0;
}

/* A byte limit as the memory files take it: -1 is none. */
static void v1_bytes(char *v, size_t size, uint64_t max) {
        if (max)
                snprintf(v, size, "%llu", (unsigned long long) max);
        else
                snprintf(v, size, "-1");
}

/* memory.memsw.limit_in_bytes (memory + swap) must never be below
 * memory.limit_in_bytes, so the order depends on the direction: lowering
 * writes the limit first, raising must move memsw first. Rather than read
 * both values back, try the limit first (right for a fresh group, whose
 * values are unlimited) and, when the kernel refuses with EINVAL because
 * memsw is below the new value, raise memsw and retry.
 *
 * memsw equal to the limit leaves no room for swap. Without swap accounting
 * (no memsw files) the best we can do is swappiness 0. */
static int v1_set_memory(struct v1_cgroup *c, struct v1_hier *h, uint64_t max,
                         struct lg_error *err) {
        char v[32];
        bool memsw_done = false;
        v1_bytes(v, sizeof(v), max);

        int r = lg_write_file_at(h->fd, "memory.limit_in_bytes", v, false);
        if (r == -EINVAL) {
                int r2 = lg_write_file_at(h->fd, "memory.memsw.limit_in_bytes", v, false);
                if (r2 == 0) {
                        memsw_done = true;
                        r = lg_write_file_at(h->fd, "memory.limit_in_bytes", v, false);
                }
        }
        if (r < 0)
                return v1_fail(c, h, "memory.limit_in_bytes", v, r, err);
        if (memsw_done)
                return 0;

        r = lg_write_file_at(h->fd, "memory.memsw.limit_in_bytes", v, false);
        if (r == -ENOENT) {
                if (max)
                        (void) lg_write_file_at(h->fd, "memory.swappiness", "0", false);
                return 0;
        }
        if (r < 0)
                return v1_fail(c, h, "memory.memsw.limit_in_bytes", v, r, err);
        return 0;
}

/* v1 charges socket buffers (TCP and UDP; AF_UNIX ones count as kmem in
 * the memory counter) to a counter of their own, memory.kmem.tcp.*, and
 * only in groups whose memory.kmem.tcp.limit_in_bytes has been written
 * once: that first write turns the accounting on for sockets made after
 * it (mm/memcontrol-v1.c, memcg_update_tcp_max). Without it a sandbox's
 * unread buffers are bounded by nothing but the host-wide tcp_mem, so one
 * sandbox can starve TCP for the whole host. The limit is the memory limit:
 * a workload that fits in v2, where both share one counter, fits here too,
 * and the worst case is twice the limit (plus about a page per socket the
 * kernel lets through over the limit; the sockets themselves are kmem, in
 * the memory limit). Written after the memory limit, before any process
 * is in a fresh group.
 *
 * The kernel cannot lower the limit below what sockets already hold
 * (EBUSY; nothing reclaims socket buffers), and a kernel without the file
 * cannot bound them: both are errors when a limit is asked for. */
static int v1_set_sock(struct v1_cgroup *c, struct v1_hier *h, uint64_t max,
                       struct lg_error *err) {
        char v[32];
        v1_bytes(v, sizeof(v), max);
        int r = lg_write_file_at(h->fd, "memory.kmem.tcp.limit_in_bytes", v, false);
        if (r == -ENOENT && !max)
                return 0;
        if (r == -ENOENT)
                return lg_error_set(err, EOPNOTSUPP,
                                    "no memory.kmem.tcp.limit_in_bytes in `%s/%s/%s/%s`: this kernel cannot charge socket buffers to a v1 memory cgroup, so a memory limit would not bound them",
                                    c->head.root, h->dir, c->head.parent, c->head.name);
        if (r == -EBUSY)
                return lg_error_set(err, EBUSY,
                                    "write `%s` to `%s/%s/%s/%s/memory.kmem.tcp.limit_in_bytes`: the group's sockets hold more than that",
                                    v, c->head.root, h->dir, c->head.parent, c->head.name);
        if (r < 0)
                return v1_fail(c, h, "memory.kmem.tcp.limit_in_bytes", v, r, err);
        return 0;
}

/* Each write is validated as a (period, quota) pair against the value the
 * other file holds at that moment, including the hierarchical check against
 * a parent's bandwidth, so one order can be refused where the other is
 * accepted. Period first (runc's order) is always right for a fresh group,
 * whose quota is unlimited; on EINVAL retry quota first. */
static int v1_set_cpu_max(struct v1_cgroup *c, struct v1_hier *h, uint64_t quota,
                          uint64_t period, struct lg_error *err) {
        char q[32], p[32];
        if (quota)
                snprintf(q, sizeof(q), "%llu", (unsigned long long) quota);
        else
                snprintf(q, sizeof(q), "-1");
        snprintf(p, sizeof(p), "%llu", (unsigned long long) period);

        int r = lg_write_file_at(h->fd, "cpu.cfs_period_us", p, false);
        if (r == -EINVAL) {
                r = v1_write(c, h, "cpu.cfs_quota_us", q, err);
                if (r < 0)
                        return r;
                return v1_write(c, h, "cpu.cfs_period_us", p, err);
        }
        if (r < 0)
                return v1_fail(c, h, "cpu.cfs_period_us", p, r, err);
        return v1_write(c, h, "cpu.cfs_quota_us", q, err);
}

static int v1_missing(struct v1_cgroup *c, const char *ctrl, struct lg_error *err) {
        return lg_error_set(err, EOPNOTSUPP, "%s controller not mounted under `%s` (or the group is missing there)",
                            ctrl, c->head.root);
}

static int v1_set_limits(lg_cgroup *cg, const struct lg_cgroup_limits *l, unsigned which,
                         struct lg_error *err) {
        struct v1_cgroup *c = V1(cg);
        struct v1_hier *h;
        char v[32];
        int r;

        if (which & LG_CG_MEMORY) {
                h = hier(c, V1_MEMORY);
                if (h) {
                        r = v1_set_memory(c, h, l->memory_max, err);
                        if (r < 0)
                                return r;
                        r = v1_set_sock(c, h, l->memory_max, err);
                        if (r < 0)
                                return r;
                } else if (l->memory_max)
                        return v1_missing(c, "memory", err);
        }

        if (which & (LG_CG_CPU_MAX | LG_CG_CPU_WEIGHT)) {
                h = hier(c, V1_CPU);
                if (!h) {
                        if (l->cpu_quota_us || l->cpu_weight)
                                return v1_missing(c, "cpu", err);
                } else {
                        if (which & LG_CG_CPU_MAX) {
                                r = v1_set_cpu_max(c, h, l->cpu_quota_us, l->cpu_period_us, err);
                                if (r < 0)
                                        return r;
                        }
                        if (which & LG_CG_CPU_WEIGHT) {
                                snprintf(v, sizeof(v), "%llu",
                                         (unsigned long long) lg_cgroup_weight_to_shares(l->cpu_weight));
                                r = v1_write(c, h, "cpu.shares", v, err);
                                if (r < 0)
                                        return r;
                        }
                }
        }

        if (which & LG_CG_PIDS) {
                h = hier(c, V1_PIDS);
                if (h) {
                        if (l->pids_max)
                                snprintf(v, sizeof(v), "%llu", (unsigned long long) l->pids_max);
                        else
                                snprintf(v, sizeof(v), "max");
                        r = v1_write(c, h, "pids.max", v, err);
                        if (r < 0)
                                return r;
                } else if (l->pids_max)
                        return v1_missing(c, "pids", err);
        }
        return 0;
}

/* The pid goes into every hierarchy; until the last write it is only
 * partly confined, so callers add it before letting the child run. */
static int v1_add_pid(lg_cgroup *cg, pid_t pid) {
        struct v1_cgroup *c = V1(cg);
        char v[16];
        snprintf(v, sizeof(v), "%d", (int) pid);
        for (size_t i = 0; i < c->n; i++) {
                if (c->h[i].fd < 0)
                        continue;
                int r = lg_write_file_at(c->h[i].fd, "cgroup.procs", v, false);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int v1_dirfd(lg_cgroup *cg) {
        (void) cg;
        return -EOPNOTSUPP;
}

static int v1_get_stats(lg_cgroup *cg, struct lg_cgroup_stats *s) {
        struct v1_cgroup *c = V1(cg);
        struct v1_hier *h;
        int r;

        if ((h = hier(c, V1_CPUACCT))) {
                r = lg_cg_optional(lg_cg_read_u64_at(h->fd, "cpuacct.usage", &s->cpu_usage_ns),
                                   &s->cpu_usage_ns);
                if (r < 0)
                        return r;
        }
        if ((h = hier(c, V1_MEMORY))) {
                r = lg_cg_optional(lg_cg_read_u64_at(h->fd, "memory.usage_in_bytes", &s->memory_current),
                                   &s->memory_current);
                if (r < 0)
                        return r;
                r = lg_cg_optional(lg_cg_read_u64_at(h->fd, "memory.max_usage_in_bytes", &s->memory_peak),
                                   &s->memory_peak);
                if (r < 0)
                        return r;
                /* Socket buffers are a counter apart on v1 (v1_set_sock);
                 * add them, as v2's memory.current has them. The sum of
                 * the two peaks is an upper bound of the real peak. */
                uint64_t sock, sock_peak;
                r = lg_cg_optional(lg_cg_read_u64_at(h->fd, "memory.kmem.tcp.usage_in_bytes", &sock), &sock);
                if (r < 0)
                        return r;
                r = lg_cg_optional(lg_cg_read_u64_at(h->fd, "memory.kmem.tcp.max_usage_in_bytes", &sock_peak),
                                   &sock_peak);
                if (r < 0)
                        return r;
                s->memory_current += sock;
                s->memory_peak += sock_peak;
                r = lg_cg_optional(lg_cg_read_keyed_at(h->fd, "memory.oom_control", "oom_kill", &s->oom_kills),
                                   &s->oom_kills);
                if (r < 0)
                        return r;
        }
        if ((h = hier(c, V1_PIDS))) {
                r = lg_cg_optional(lg_cg_read_u64_at(h->fd, "pids.current", &s->pids_current),
                                   &s->pids_current);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* 1 when no hierarchy lists a process, 0 when one does, or -errno. A group
 * directory removed under us counts as empty. */
static int v1_all_empty(struct v1_cgroup *c) {
        for (size_t i = 0; i < c->n; i++) {
                if (c->h[i].fd < 0)
                        continue;
                int r = lg_cg_procs_empty_at(c->h[i].fd);
                if (r == -ENOENT)
                        continue;
                if (r <= 0)
                        return r;
        }
        return 1;
}

static int v1_kill_each(struct v1_cgroup *c) {
        for (size_t i = 0; i < c->n; i++) {
                if (c->h[i].fd < 0)
                        continue;
                int r = lg_cg_kill_procs_at(c->h[i].fd);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        return 0;
}

/* Freeze and wait for FROZEN (FREEZING while tasks are still on their way).
 * A task stuck in uninterruptible sleep can keep the group FREEZING; after
 * the bound we go on and kill anyway, which the retry loop then mops up. */
static void v1_freeze(struct v1_hier *fz) {
        if (lg_write_file_at(fz->fd, "freezer.state", "FROZEN", false) < 0)
                return;
        uint64_t deadline = lg_now_ns() + LG_CG_FREEZE_TIMEOUT_NS;
        unsigned step = 20;
        for (;;) {
                char st[32];
                ssize_t n = lg_read_file_at(fz->fd, "freezer.state", st, sizeof(st));
                if (n < 0 || strcmp(st, "FROZEN") == 0 || lg_now_ns() >= deadline)
                        return;
                lg_cg_backoff(&step);
        }
}

static int v1_kill_all(lg_cgroup *cg) {
        struct v1_cgroup *c = V1(cg);

        /* Nothing can join an empty group but us, so empty stays empty: the
         * common case after the sandbox's init has exited. */
        int r = v1_all_empty(c);
        if (r != 0)
                return r < 0 ? r : 0;

        /* Kill from the frozen hierarchy's list: those pids cannot exit and
         * be reused before the signal lands. Stragglers that are only in
         * another hierarchy (a half-done add_pid) are caught below. */
        struct v1_hier *fz = hier(c, V1_FREEZER);
        if (fz) {
                v1_freeze(fz);
                r = lg_cg_kill_procs_at(fz->fd);
                if (r == -ENOENT)
                        r = 0;
        } else
                r = v1_kill_each(c);
        /* SIGKILL is delivered when the tasks thaw. */
        if (fz)
                (void) lg_write_file_at(fz->fd, "freezer.state", "THAWED", false);
        if (r < 0)
                return r;

        uint64_t deadline = lg_now_ns() + LG_CG_EMPTY_TIMEOUT_NS;
        unsigned step = 50;
        for (;;) {
                r = v1_all_empty(c);
                if (r != 0)
                        return r < 0 ? r : 0;
                if (lg_now_ns() >= deadline)
                        return -EBUSY;
                lg_cg_backoff(&step);
                /* Catch stragglers of other hierarchies and, without a
                 * freezer, anything forked meanwhile. */
                r = v1_kill_each(c);
                if (r < 0)
                        return r;
        }
}

static int v1_destroy(lg_cgroup *cg) {
        struct v1_cgroup *c = V1(cg);
        int kr = v1_kill_all(cg);
        int ret = 0;
        for (size_t i = 0; i < c->n; i++) {
                if (c->h[i].fd < 0 || c->h[i].parent_fd < 0)
                        continue;
                int r = lg_cg_rmdir_at(c->h[i].parent_fd, c->head.name, LG_CG_RMDIR_TIMEOUT_NS);
                if (r < 0 && ret == 0)
                        ret = r;
                if (r == 0)
                        c->h[i].created = false;
        }
        /* A failed kill only matters if it left the group behind. */
        if (ret < 0 && kr < 0)
                return kr;
        return ret;
}

static int v1_list(const char *root, const char *parent, char ***ret) {
        _cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return -errno;
        /* Every group has a memory directory; fall back to another
         * hierarchy only where memory is not mounted. */
        static const int order[] = { V1_MEMORY, V1_PIDS, V1_CPU, V1_CPUACCT, V1_FREEZER };
        for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
                struct stat st;
                const char *dir = v1_dirs[order[i]];
                if (fstatat(rootfd, dir, &st, 0) < 0 || !S_ISDIR(st.st_mode))
                        continue;
                char path[PATH_MAX];
                if ((size_t) snprintf(path, sizeof(path), "%s/%s", dir, parent) >= sizeof(path))
                        return -ENAMETOOLONG;
                return lg_cg_list_dirs_at(rootfd, path, ret);
        }
        return -EOPNOTSUPP;
}

const struct lg_cgroup_ops lg_cgroup_v1_ops = {
        .version = LG_CGROUP_V1,
        .create = v1_create,
        .open = v1_open,
        .set_limits = v1_set_limits,
        .add_pid = v1_add_pid,
        .dirfd = v1_dirfd,
        .get_stats = v1_get_stats,
        .kill_all = v1_kill_all,
        .destroy = v1_destroy,
        .rollback = v1_rollback,
        .free = v1_free,
        .list = v1_list,
};
