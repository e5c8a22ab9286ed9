/* cgroup v2 backend: one group at <root>/<parent>/<name> in the unified
 * hierarchy. The memory, cpu and pids controllers are enabled in
 * cgroup.subtree_control of every level from the mount root down to the
 * parent, as far as each level offers them in cgroup.controllers; a mount
 * that offers none (the `unified` mount of a hybrid host) still gives groups
 * for tracking and killing, just no limits. A limit whose controller is not
 * there fails with -EOPNOTSUPP naming the controller: we find out from the
 * control file being absent, which is how the kernel says "not enabled",
 * instead of reading cgroup.controllers on every create.
 *
 * Socket buffers are charged to memory.current, so the memory limit bounds
 * them, unless the kernel was booted with cgroup.memory=nosocket: then a
 * memory limit is refused (v2_sock_charged).
 *
 * The group's directory fd is kept open for clone3(CLONE_INTO_CGROUP), which
 * places the child in the group atomically at fork. */
#include "sandbox/cgroup-internal.h"

#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

struct v2_cgroup {
        struct lg_cgroup head;
        int parent_fd; /* O_PATH fd of <root>/<parent>, for rmdir */
        int fd;        /* the group directory */
        bool created;
};

#define V2(cg) ((struct v2_cgroup *) (cg))

/* The controllers we want, as bits, in the order they are written. */
enum { V2_CPU = 1u << 0, V2_MEMORY = 1u << 1, V2_PIDS = 1u << 2 };
static const struct {
        const char *name;
        unsigned bit;
} v2_wanted[] = {
        { "cpu", V2_CPU },
        { "memory", V2_MEMORY },
        { "pids", V2_PIDS },
};
#define V2_WANTED_MASK (V2_CPU | V2_MEMORY | V2_PIDS)

static int v2_fail(struct v2_cgroup *c, const char *file, const char *value, int r,
                   struct lg_error *err) {
        return lg_error_set(err, -r, "write `%s` to `%s/%s/%s/%s`", value, c->head.root,
                            c->head.parent, c->head.name, file);
}

static int v2_alloc(const char *root, const char *parent, const char *name,
                    struct v2_cgroup **ret) {
        struct v2_cgroup *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->parent_fd = c->fd = -1;
        int r = lg_cg_head_init(&c->head, &lg_cgroup_v2_ops, root, parent, name);
        if (r < 0) {
                free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static void v2_free(lg_cgroup *cg) {
        struct v2_cgroup *c = V2(cg);
        lg_closep(&c->fd);
        lg_closep(&c->parent_fd);
        lg_cg_head_done(&c->head);
        free(c);
}

static inline void v2_freep(struct v2_cgroup **c) {
        if (*c)
                v2_free(&(*c)->head);
}

/* Parse a space-separated controller list ("cpu io memory pids") into bits
 * of the ones we want. The kernel never shows a '+', but a fake tree holds
 * what we wrote ("+cpu +memory"), so a leading '+' is skipped. */
static int v2_read_mask(int dirfd, const char *file, unsigned *ret) {
        char buf[512];
        ssize_t n = lg_read_file_at(dirfd, file, buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        unsigned mask = 0;
        char *save = NULL;
        for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
                for (size_t i = 0; i < ARRAY_SIZE(v2_wanted); i++)
                        if (strcmp(tok + (tok[0] == '+'), v2_wanted[i].name) == 0)
                                mask |= v2_wanted[i].bit;
        *ret = mask;
        return 0;
}

/* Enable at one level what it offers and lacks, in a single write: the
 * kernel applies the whole list or nothing. `shown` names the level in
 * messages. */
static int v2_enable_level(int fd, const char *shown, struct lg_error *err) {
        unsigned avail, on;
        int r = v2_read_mask(fd, "cgroup.controllers", &avail);
        if (r < 0)
                return lg_error_set(err, -r, "read `%s/cgroup.controllers`", shown);
        r = v2_read_mask(fd, "cgroup.subtree_control", &on);
        if (r < 0)
                return lg_error_set(err, -r, "read `%s/cgroup.subtree_control`", shown);
        unsigned missing = avail & V2_WANTED_MASK & ~on;
        if (!missing)
                return 0;

        char cmd[64] = "";
        size_t len = 0;
        for (size_t i = 0; i < ARRAY_SIZE(v2_wanted); i++)
                if (missing & v2_wanted[i].bit)
                        len += (size_t) snprintf(cmd + len, sizeof(cmd) - len, "%s+%s",
                                                 len ? " " : "", v2_wanted[i].name);
        r = lg_write_file_at(fd, "cgroup.subtree_control", cmd, false);
        if (r < 0)
                /* EBUSY here is the "no internal processes" rule: the level
                 * holds processes itself, e.g. a container's own cgroup. */
                return lg_error_set(err, -r, "write `%s` to `%s/cgroup.subtree_control`", cmd, shown);
        return 0;
}

/* Make memory, cpu and pids reach children of the parent. The parent
 * already delegating all three is the normal case after the first sandbox,
 * and one read settles it; otherwise walk down from the mount root. */
static int v2_enable_controllers(int rootfd, int parent_fd, const char *root,
                                 const char *parent, struct lg_error *err) {
        unsigned on;
        if (v2_read_mask(parent_fd, "cgroup.subtree_control", &on) == 0 &&
            (on & V2_WANTED_MASK) == V2_WANTED_MASK)
                return 0;

        int r = v2_enable_level(rootfd, root, err);
        if (r < 0)
                return r;

        char buf[PATH_MAX], shown[PATH_MAX];
        if ((size_t) snprintf(buf, sizeof(buf), "%s", parent) >= sizeof(buf))
                return lg_error_set(err, ENAMETOOLONG, "cgroup parent `%s`", parent);
        _cleanup_close_ int cur = -1;
        for (char *comp = buf;;) {
                char *slash = strchr(comp, '/');
                if (slash)
                        *slash = '\0';
                snprintf(shown, sizeof(shown), "%s/%.*s", root,
                         (int) (comp - buf + (ptrdiff_t) strlen(comp)), parent);
                int next = openat(cur >= 0 ? cur : rootfd, comp, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (next < 0)
                        return lg_error_set(err, errno, "open `%s`", shown);
                lg_closep(&cur);
                cur = next;
                r = v2_enable_level(cur, shown, err);
                if (r < 0)
                        return r;
                if (!slash)
                        return 0;
                comp = slash + 1;
        }
}

static void v2_rollback(lg_cgroup *cg) {
        struct v2_cgroup *c = V2(cg);
        if (c->created && unlinkat(c->parent_fd, c->head.name, AT_REMOVEDIR) == 0)
                c->created = false;
}

static int v2_create(const char *root, const char *parent, const char *name, unsigned flags,
                     lg_cgroup **ret, struct lg_error *err) {
        _cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return lg_error_set(err, errno, "open `%s`", root);

        _cleanup_(v2_freep) struct v2_cgroup *c = NULL;
        int r = v2_alloc(root, parent, name, &c);
        if (r < 0)
                return lg_error_set(err, -r, "cgroup handle");

        bool made;
        c->parent_fd = lg_cg_open_parent(rootfd, parent, &made);
        if (c->parent_fd < 0) {
                r = c->parent_fd;
                c->parent_fd = -1;
                return lg_error_set(err, -r, "create `%s/%s`", root, parent);
        }
        r = v2_enable_controllers(rootfd, c->parent_fd, root, parent, err);
        if (r < 0)
                return r;

        if (mkdirat(c->parent_fd, name, 0755) == 0)
                c->created = true;
        else if (!(errno == EEXIST && (flags & LG_CGROUP_CREATE_ADOPT)))
                return lg_error_set(err, errno, "mkdir `%s/%s/%s`", root, parent, name);
        c->fd = openat(c->parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->fd < 0) {
                r = lg_error_set(err, errno, "open `%s/%s/%s`", root, parent, name);
                v2_rollback(&c->head);
                return r;
        }
        *ret = &TAKE_PTR(c)->head;
        return 0;
}

static int v2_open(const char *root, const char *parent, const char *name, lg_cgroup **ret) {
        _cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return -errno;
        _cleanup_(v2_freep) struct v2_cgroup *c = NULL;
        int r = v2_alloc(root, parent, name, &c);
        if (r < 0)
                return r;
        c->parent_fd = openat(rootfd, parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (c->parent_fd < 0)
                return -errno;
        c->fd = openat(c->parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->fd < 0)
                return -errno;
        *ret = &TAKE_PTR(c)->head;
        return 0;
}

static int v2_missing(struct v2_cgroup *c, const char *ctrl, const char *file,
                      struct lg_error *err) {
        return lg_error_set(err, EOPNOTSUPP,
                            "%s controller not available for `%s/%s/%s` (no %s; the controller is not in the parent's cgroup.controllers)",
                            ctrl, c->head.root, c->head.parent, c->head.name, file);
}

/* Write one limit. A missing file means the controller is not enabled for
 * the group: an error when a limit was asked for, nothing to undo when the
 * value is "no limit". */
static int v2_write_limit(struct v2_cgroup *c, const char *ctrl, const char *file,
                          const char *value, bool is_limit, struct lg_error *err) {
        int r = lg_write_file_at(c->fd, file, value, false);
        if (r == -ENOENT)
                return is_limit ? v2_missing(c, ctrl, file, err) : 1;
        if (r < 0)
                return v2_fail(c, file, value, r, err);
        return 0;
}

/* Strip one pair of double quotes, as the kernel does around an argument
 * (`"a=b"`) or a value (`a="b"`). */
static void unquote(const char **s, const char **end) {
        if (*s < *end && **s == '"') {
                (*s)++;
                if (*end > *s && (*end)[-1] == '"')
                        (*end)--;
        }
}

bool lg_cg_cmdline_nosocket(const char *cmdline) {
        static const char param[] = "cgroup.memory=";
        const size_t plen = sizeof(param) - 1;
        for (const char *p = cmdline;;) {
                p += strspn(p, " \t\n");
                size_t len = strcspn(p, " \t\n");
                if (len == 0)
                        return false;
                /* What follows "--" is for init, not the kernel. */
                if (len == 2 && p[0] == '-' && p[1] == '-')
                        return false;
                const char *arg = p, *end = p + len;
                p = end;
                unquote(&arg, &end);
                if ((size_t) (end - arg) < plen || strncmp(arg, param, plen) != 0)
                        continue;
                const char *tok = arg + plen;
                unquote(&tok, &end);
                for (;;) {
                        const char *comma = memchr(tok, ',', (size_t) (end - tok));
                        const char *tend = comma ? comma : end;
                        if (tend - tok == 8 && strncmp(tok, "nosocket", 8) == 0)
                                return true;
                        if (!comma)
                                break;
                        tok = comma + 1;
                }
        }
}

/* Whether this kernel charges socket buffers to v2 memory cgroups: it
 * does, into the same memory.current the limit bounds, unless booted with
 * cgroup.memory=nosocket (mm/memcontrol.c enables socket accounting for
 * each new group only without it). memory.stat shows a "sock" line either
 * way, so the command line is the only witness. Read once per process: it
 * cannot change before the next boot. An unreadable /proc/cmdline is taken
 * as the default. */
static bool v2_sock_charged(void) {
        static int known; /* 0 not read yet, 1 charged, 2 not */
        int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
        if (v == 0) {
                char buf[8192];
                ssize_t n = lg_read_file_at(AT_FDCWD, "/proc/cmdline", buf, sizeof(buf));
                v = n >= 0 && lg_cg_cmdline_nosocket(buf) ? 2 : 1;
                __atomic_store_n(&known, v, __ATOMIC_RELAXED);
        }
        return v == 1;
}

static int v2_set_limits(lg_cgroup *cg, const struct lg_cgroup_limits *l, unsigned which,
                         struct lg_error *err) {
        struct v2_cgroup *c = V2(cg);
        char v[64];
        int r;

        /* A memory limit that socket buffers escape would let one sandbox
         * starve TCP for the whole host (the only bound left is tcp_mem). */
        if ((which & LG_CG_MEMORY) && l->memory_max && !v2_sock_charged())
                return lg_error_set(err, EOPNOTSUPP,
                                    "memory limit for `%s/%s/%s`: the kernel was booted with cgroup.memory=nosocket, so socket buffers would escape it",
                                    c->head.root, c->head.parent, c->head.name);

        if (which & LG_CG_MEMORY) {
                if (l->memory_max)
                        snprintf(v, sizeof(v), "%llu", (unsigned long long) l->memory_max);
                else
                        snprintf(v, sizeof(v), "max");
                r = v2_write_limit(c, "memory", "memory.max", v, l->memory_max != 0, err);
                if (r < 0)
                        return r;
                /* Swap goes with the memory limit. memory.swap.max is absent
                 * without swap accounting, and then there is nothing to do. */
                if (r == 0) {
                        r = lg_write_file_at(c->fd, "memory.swap.max", "0", false);
                        if (r < 0 && r != -ENOENT)
                                return v2_fail(c, "memory.swap.max", "0", r, err);
                }
        }

        if (which & LG_CG_CPU_MAX) {
                if (l->cpu_quota_us)
                        snprintf(v, sizeof(v), "%llu %llu", (unsigned long long) l->cpu_quota_us,
                                 (unsigned long long) l->cpu_period_us);
                else
                        snprintf(v, sizeof(v), "max %llu", (unsigned long long) l->cpu_period_us);
                r = v2_write_limit(c, "cpu", "cpu.max", v, l->cpu_quota_us != 0, err);
                if (r < 0)
                        return r;
        }

        if (which & LG_CG_CPU_WEIGHT) {
                snprintf(v, sizeof(v), "%llu", (unsigned long long) l->cpu_weight);
                r = v2_write_limit(c, "cpu", "cpu.weight", v, true, err);
                if (r < 0)
                        return r;
        }

        if (which & LG_CG_PIDS) {
                if (l->pids_max)
                        snprintf(v, sizeof(v), "%llu", (unsigned long long) l->pids_max);
                else
                        snprintf(v, sizeof(v), "max");
                r = v2_write_limit(c, "pids", "pids.max", v, l->pids_max != 0, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int v2_add_pid(lg_cgroup *cg, pid_t pid) {
        char v[16];
        snprintf(v, sizeof(v), "%d", (int) pid);
        return lg_write_file_at(V2(cg)->fd, "cgroup.procs", v, false);
}

static int v2_dirfd(lg_cgroup *cg) {
        return V2(cg)->fd;
}

static int v2_get_stats(lg_cgroup *cg, struct lg_cgroup_stats *s) {
        int fd = V2(cg)->fd;
        uint64_t usec = 0;
        int r;

        /* cpu.stat exists without the cpu controller (usage is core
         * accounting); the memory and pids files only with theirs. */
        r = lg_cg_optional(lg_cg_read_keyed_at(fd, "cpu.stat", "usage_usec", &usec), &usec);
        if (r < 0)
                return r;
        s->cpu_usage_ns = usec * 1000;
        r = lg_cg_optional(lg_cg_read_u64_at(fd, "memory.current", &s->memory_current),
                           &s->memory_current);
        if (r < 0)
                return r;
        /* memory.peak appeared in 5.19. */
        r = lg_cg_optional(lg_cg_read_u64_at(fd, "memory.peak", &s->memory_peak), &s->memory_peak);
        if (r < 0)
                return r;
        r = lg_cg_optional(lg_cg_read_keyed_at(fd, "memory.events", "oom_kill", &s->oom_kills),
                           &s->oom_kills);
        if (r < 0)
                return r;
        return lg_cg_optional(lg_cg_read_u64_at(fd, "pids.current", &s->pids_current),
                              &s->pids_current);
}

/* 1 when nothing lives in the group or below it, 0 if something does.
 * cgroup.events "populated" covers descendants; kernels without it (before
 * 4.x) fall back to the group's own cgroup.procs. */
static int v2_empty(struct v2_cgroup *c) {
        char buf[128];
        uint64_t populated;
        if (lg_read_file_at(c->fd, "cgroup.events", buf, sizeof(buf)) >= 0 &&
            lg_cg_keyed_find(buf, "populated", &populated) > 0)
                return populated == 0;
        int r = lg_cg_procs_empty_at(c->fd);
        return r == -ENOENT ? 1 : r;
}

/* Before cgroup.kill (5.14): freeze (5.2+) so nothing forks or recycles a
 * pid while we walk cgroup.procs, kill, thaw. */
static int v2_kill_frozen(struct v2_cgroup *c) {
        bool frozen = lg_write_file_at(c->fd, "cgroup.freeze", "1", false) == 0;
        if (frozen) {
                uint64_t deadline = lg_now_ns() + LG_CG_FREEZE_TIMEOUT_NS;
                unsigned step = 20;
                uint64_t f = 0;
                while (lg_cg_read_keyed_at(c->fd, "cgroup.events", "frozen", &f) == 0 && f != 1 &&
                       lg_now_ns() < deadline)
                        lg_cg_backoff(&step);
        }
        int r = lg_cg_kill_procs_at(c->fd);
        if (frozen)
                (void) lg_write_file_at(c->fd, "cgroup.freeze", "0", false);
        return r < 0 && r != -ENOENT ? r : 0;
}

static int v2_kill_all(lg_cgroup *cg) {
        struct v2_cgroup *c = V2(cg);

        int r = v2_empty(c);
        if (r != 0)
                return r < 0 ? r : 0;

        /* cgroup.kill SIGKILLs the whole subtree and keeps racing forks out. */
        r = lg_write_file_at(c->fd, "cgroup.kill", "1", false);
        bool have_kill = r == 0;
        if (r == -ENOENT)
                r = v2_kill_frozen(c);
        if (r < 0)
                return r;

        uint64_t deadline = lg_now_ns() + LG_CG_EMPTY_TIMEOUT_NS;
        unsigned step = 50;
        for (;;) {
                r = v2_empty(c);
                if (r != 0)
                        return r < 0 ? r : 0;
                if (lg_now_ns() >= deadline)
                        return -EBUSY;
                lg_cg_backoff(&step);
                if (!have_kill) {
                        r = v2_kill_frozen(c);
                        if (r < 0)
                                return r;
                }
        }
}

static int v2_destroy(lg_cgroup *cg) {
        struct v2_cgroup *c = V2(cg);
        int kr = v2_kill_all(cg);
        int r = lg_cg_rmdir_at(c->parent_fd, c->head.name, LG_CG_RMDIR_TIMEOUT_NS);
        if (r == 0)
                c->created = false;
        /* A failed kill only matters if it left the group behind. */
        if (r < 0 && kr < 0)
                return kr;
        return r;
}

static int v2_list(const char *root, const char *parent, char ***ret) {
        _cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return -errno;
        return lg_cg_list_dirs_at(rootfd, parent, ret);
}

const struct lg_cgroup_ops lg_cgroup_v2_ops = {
        .version = LG_CGROUP_V2,
        .create = v2_create,
        .open = v2_open,
        .set_limits = v2_set_limits,
        .add_pid = v2_add_pid,
        .dirfd = v2_dirfd,
        .get_stats = v2_get_stats,
        .kill_all = v2_kill_all,
        .destroy = v2_destroy,
        .rollback = v2_rollback,
        .free = v2_free,
        .list = v2_list,
};
