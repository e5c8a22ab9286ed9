/* cgroup manager front end: detects the cgroupfs layout, validates names and
 * limits, and dispatches to the v1 or v2 backend's ops table. It also holds
 * the small cgroupfs helpers both backends share (keyed-file parsing, the
 * kill loop over cgroup.procs, rmdir with retry, directory listing).
 *
 * Everything works on directory fds: a handle keeps the group's dirfd(s),
 * and control files are opened relative to them, so starting a sandbox costs
 * a handful of syscalls per controller and no path walks from the root. */
#include "sandbox/cgroup-internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>

#define NAME_MAX_LEN 128
#define PARENT_MAX_LEN 1024

/* One path component: what the kernel would accept as a cgroup name and
 * what cannot escape the parent. */
static bool component_valid(const char *s, size_t len) {
        if (len == 0 || len > NAME_MAX_LEN)
                return false;
        if (memchr(s, '/', len))
                return false;
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
                return false;
        return true;
}

static bool name_valid(const char *name) {
        return name && component_valid(name, strlen(name));
}

/* The parent may be nested ("legion/pool-a"); each component must be a
 * valid name, so it can neither be absolute nor climb out with "..". */
static bool parent_valid(const char *parent) {
        if (!parent)
                return false;
        size_t len = strlen(parent);
        if (len == 0 || len > PARENT_MAX_LEN)
                return false;
        const char *p = parent;
        for (;;) {
                const char *slash = strchr(p, '/');
                size_t n = slash ? (size_t) (slash - p) : strlen(p);
                if (!component_valid(p, n))
                        return false;
                if (!slash)
                        return true;
                p = slash + 1;
        }
}

static const struct lg_cgroup_ops *ops_for(enum lg_cgroup_version version) {
        switch (version) {
        case LG_CGROUP_V1:
                return &lg_cgroup_v1_ops;
        case LG_CGROUP_V2:
                return &lg_cgroup_v2_ops;
        }
        return NULL;
}

int lg_cgroup_detect(const char *mount_root, enum lg_cgroup_version *ret) {
        struct statfs sfs;
        if (!mount_root || !ret)
                return -EINVAL;
        if (statfs(mount_root, &sfs) < 0)
                return -errno;
        if (sfs.f_type == CGROUP2_SUPER_MAGIC) {
                *ret = LG_CGROUP_V2;
                return 0;
        }
        /* A single v1 hierarchy mounted at the root is not a layout we can
         * drive: there is no per-controller directory to pick. */
        if (sfs.f_type == CGROUP_SUPER_MAGIC)
                return -EOPNOTSUPP;

        _cleanup_close_ int fd = open(mount_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        /* Fake trees in tests are ordinary directories: recognise them by
         * what the kernel would have put there. */
        if (faccessat(fd, "cgroup.controllers", F_OK, 0) == 0) {
                *ret = LG_CGROUP_V2;
                return 0;
        }
        static const char *const v1_markers[] = { "memory", "cpu" };
        for (size_t i = 0; i < ARRAY_SIZE(v1_markers); i++) {
                struct stat st;
                if (fstatat(fd, v1_markers[i], &st, 0) == 0 && S_ISDIR(st.st_mode)) {
                        *ret = LG_CGROUP_V1;
                        return 0;
                }
        }
        return -EOPNOTSUPP;
}

uint64_t lg_cgroup_weight_to_shares(uint64_t weight) {
        if (weight < 1)
                weight = 1;
        if (weight > 10000)
                weight = 10000;
        return 2 + ((weight - 1) * 262142) / 9999;
}

/* Reject what the kernel would reject anyway, but with a message that names
 * the field, and fill in the default period so backends see one value. */
static int normalize_limits(const struct lg_cgroup_limits *in, struct lg_cgroup_limits *out,
                            struct lg_error *err) {
        *out = in ? *in : (struct lg_cgroup_limits) { 0 };
        if (out->cpu_weight > 10000)
                return lg_error_set(err, EINVAL, "cpu weight %llu out of range 1..10000",
                                    (unsigned long long) out->cpu_weight);
        if (out->cpu_period_us == 0)
                out->cpu_period_us = 100000;
        return 0;
}

/* The fields of l that differ from old (NULL: not known, so all of them).
 * A cpu_weight of 0 leaves the weight as it is: never a change. */
static unsigned changed_fields(const struct lg_cgroup_limits *l, const struct lg_cgroup_limits *old) {
        unsigned which = 0;
        if (!old || l->memory_max != old->memory_max)
                which |= LG_CG_MEMORY;
        if (!old || l->cpu_quota_us != old->cpu_quota_us || l->cpu_period_us != old->cpu_period_us)
                which |= LG_CG_CPU_MAX;
        if (l->cpu_weight && (!old || l->cpu_weight != old->cpu_weight))
                which |= LG_CG_CPU_WEIGHT;
        if (!old || l->pids_max != old->pids_max)
                which |= LG_CG_PIDS;
        return which;
}

/* Apply the changed fields of l (normalized) and remember what the group
 * has now; after a failure part of it may have been written: unknown. */
static int apply_limits(lg_cgroup *cg, const struct lg_cgroup_limits *l, const struct lg_cgroup_limits *old,
                        struct lg_error *err) {
        unsigned which = changed_fields(l, old);
        int r = which ? cg->ops->set_limits(cg, l, which, err) : 0;
        if (r < 0) {
                cg->applied_known = false;
                return r;
        }
        uint64_t weight = l->cpu_weight ? l->cpu_weight : old ? old->cpu_weight : 0;
        cg->applied = *l;
        cg->applied.cpu_weight = weight;
        cg->applied_known = true;
        return 0;
}

int lg_cgroup_create_flags(const char *mount_root, enum lg_cgroup_version version,
                           const char *parent, const char *name,
                           const struct lg_cgroup_limits *limits, unsigned flags,
                           lg_cgroup **ret, struct lg_error *err) {
        const struct lg_cgroup_ops *ops = ops_for(version);
        struct lg_cgroup_limits l;
        int r;

        if (!ops || !mount_root || !ret)
                return lg_error_set(err, EINVAL, "cgroup create: bad arguments");
        if (!parent_valid(parent))
                return lg_error_set(err, EINVAL, "invalid cgroup parent `%s`", parent ? parent : "");
        if (!name_valid(name))
                return lg_error_set(err, EINVAL, "invalid cgroup name `%s`", name ? name : "");
        r = normalize_limits(limits, &l, err);
        if (r < 0)
                return r;

        _cleanup_cgroup_ lg_cgroup *cg = NULL;
        r = ops->create(mount_root, parent, name, flags, &cg, err);
        if (r < 0)
                return r;
        /* A fresh group has no limit: only what is asked for is written. */
        const struct lg_cgroup_limits fresh = {.cpu_period_us = 100000};
        r = apply_limits(cg, &l, &fresh, err);
        if (r < 0) {
                ops->rollback(cg);
                return r;
        }
        *ret = TAKE_PTR(cg);
        return 0;
}

int lg_cgroup_create(const char *mount_root, enum lg_cgroup_version version,
                     const char *parent, const char *name,
                     const struct lg_cgroup_limits *limits, lg_cgroup **ret,
                     struct lg_error *err) {
        return lg_cgroup_create_flags(mount_root, version, parent, name, limits, 0, ret, err);
}

int lg_cgroup_open(const char *mount_root, enum lg_cgroup_version version,
                   const char *parent, const char *name, lg_cgroup **ret) {
        const struct lg_cgroup_ops *ops = ops_for(version);
        if (!ops || !mount_root || !ret || !parent_valid(parent) || !name_valid(name))
                return -EINVAL;
        return ops->open(mount_root, parent, name, ret);
}

int lg_cgroup_add_pid(lg_cgroup *cg, pid_t pid) {
        if (!cg || pid <= 0)
                return -EINVAL;
        return cg->ops->add_pid(cg, pid);
}

int lg_cgroup_dirfd(lg_cgroup *cg) {
        if (!cg)
                return -EINVAL;
        return cg->ops->dirfd(cg);
}

int lg_cgroup_set_limits(lg_cgroup *cg, const struct lg_cgroup_limits *limits,
                         struct lg_error *err) {
        struct lg_cgroup_limits l;
        if (!cg || !limits)
                return lg_error_set(err, EINVAL, "cgroup set limits: bad arguments");
        int r = normalize_limits(limits, &l, err);
        if (r < 0)
                return r;
        return apply_limits(cg, &l, cg->applied_known ? &cg->applied : NULL, err);
}

int lg_cgroup_get_stats(lg_cgroup *cg, struct lg_cgroup_stats *ret) {
        if (!cg || !ret)
                return -EINVAL;
        *ret = (struct lg_cgroup_stats) { 0 };
        return cg->ops->get_stats(cg, ret);
}

int lg_cgroup_kill_all(lg_cgroup *cg) {
        if (!cg)
                return -EINVAL;
        return cg->ops->kill_all(cg);
}

int lg_cgroup_destroy(lg_cgroup *cg) {
        if (!cg)
                return -EINVAL;
        return cg->ops->destroy(cg);
}

void lg_cgroup_free(lg_cgroup *cg) {
        if (cg)
                cg->ops->free(cg);
}

int lg_cgroup_list(const char *mount_root, enum lg_cgroup_version version,
                   const char *parent, char ***ret) {
        const struct lg_cgroup_ops *ops = ops_for(version);
        if (!ops || !mount_root || !ret || !parent_valid(parent))
                return -EINVAL;
        return ops->list(mount_root, parent, ret);
}


/* ---- helpers shared by the backends ---- */

int lg_cg_head_init(struct lg_cgroup *h, const struct lg_cgroup_ops *ops,
                    const char *root, const char *parent, const char *name) {
        h->ops = ops;
        h->root = strdup(root);
        h->parent = strdup(parent);
        h->name = strdup(name);
        if (!h->root || !h->parent || !h->name) {
                lg_cg_head_done(h);
                return -ENOMEM;
        }
        return 0;
}

void lg_cg_head_done(struct lg_cgroup *h) {
        free(h->root);
        free(h->parent);
        free(h->name);
        h->root = h->parent = h->name = NULL;
}

int lg_cg_open_parent(int dirfd, const char *parent, bool *created) {
        *created = false;
        /* Fast path: the parent is made once and then reused by every group. */
        int fd = openat(dirfd, parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT)
                return fd >= 0 ? fd : -errno;

        char buf[PARENT_MAX_LEN + 1];
        size_t len = strlen(parent);
        if (len >= sizeof(buf))
                return -ENAMETOOLONG;
        memcpy(buf, parent, len + 1);

        /* Walk down one component at a time so each mkdirat is relative to
         * the fd of the level above it. */
        _cleanup_close_ int cur = -1;
        char *comp = buf;
        for (;;) {
                char *slash = strchr(comp, '/');
                if (slash)
                        *slash = '\0';
                int at = cur >= 0 ? cur : dirfd;
                if (mkdirat(at, comp, 0755) == 0)
                        *created = true;
                else if (errno == EEXIST)
                        *created = false;
                else
                        return -errno;
                int next = openat(at, comp, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (next < 0)
                        return -errno;
                if (cur >= 0)
                        close(cur);
                cur = next;
                if (!slash)
                        return TAKE_FD(cur);
                comp = slash + 1;
        }
}

int lg_cg_read_u64_at(int dirfd, const char *file, uint64_t *ret) {
        char buf[64];
        ssize_t n = lg_read_file_at(dirfd, file, buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(buf, &end, 10);
        if (errno || end == buf || buf[0] == '-' || (*end != '\0' && *end != '\n'))
                return -EBADMSG;
        *ret = v;
        return 0;
}

int lg_cg_keyed_find(const char *buf, const char *key, uint64_t *ret) {
        size_t klen = strlen(key);
        for (const char *line = buf; line && *line;) {
                if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
                        const char *num = line + klen + 1;
                        char *end;
                        errno = 0;
                        unsigned long long v = strtoull(num, &end, 10);
                        if (errno || end == num || *num == '-' || (*end != '\0' && *end != '\n'))
                                return -EBADMSG;
                        *ret = v;
                        return 1;
                }
                line = strchr(line, '\n');
                if (line)
                        line++;
        }
        return 0;
}

int lg_cg_read_keyed_at(int dirfd, const char *file, const char *key, uint64_t *ret) {
        char buf[4096];
        ssize_t n = lg_read_file_at(dirfd, file, buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        *ret = 0;
        int r = lg_cg_keyed_find(buf, key, ret);
        return r < 0 ? r : 0;
}

int lg_cg_optional(int r, uint64_t *ret) {
        if (r == -ENOENT) {
                *ret = 0;
                return 0;
        }
        return r;
}

/* Stream cgroup.procs in chunks: a group may list more pids than fit in a
 * stack buffer, and a number can straddle two reads. */
static int for_each_pid_at(int dirfd, bool do_kill) {
        _cleanup_close_ int fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        char buf[4096];
        long long cur = -1;
        int count = 0;
        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                for (ssize_t i = 0; i <= n; i++) {
                        /* i == n at EOF flushes the last number. */
                        char c = i < n ? buf[i] : (n == 0 ? '\n' : 0);
                        if (c >= '0' && c <= '9') {
                                cur = (cur < 0 ? 0 : cur * 10) + (c - '0');
                                if (cur > INT32_MAX)
                                        return -EBADMSG;
                        } else if (c != 0 && cur >= 0) {
                                count++;
                                /* ESRCH: it exited between the read and now. */
                                if (do_kill && kill((pid_t) cur, SIGKILL) < 0 && errno != ESRCH)
                                        return -errno;
                                cur = -1;
                        }
                }
                if (n == 0)
                        return count;
        }
}

int lg_cg_kill_procs_at(int dirfd) {
        return for_each_pid_at(dirfd, true);
}

int lg_cg_procs_empty_at(int dirfd) {
        char buf[16];
        ssize_t n = lg_read_file_at(dirfd, "cgroup.procs", buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        return n == 0;
}

static void remove_children(int parent_fd, const char *name) {
        int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                (void) lg_cg_rmdir_at(dirfd(d), de->d_name, 0);
        }
        closedir(d);
}

int lg_cg_rmdir_at(int parent_fd, const char *name, uint64_t timeout_ns) {
        uint64_t deadline = lg_now_ns() + timeout_ns;
        unsigned step = 50;
        bool children_done = false;
        for (;;) {
                if (unlinkat(parent_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
                        return 0;
                /* cgroupfs says EBUSY both for live processes and for child
                 * groups; anything else (ENOTEMPTY on a plain directory,
                 * EACCES) will not go away by waiting. */
                if (errno != EBUSY)
                        return -errno;
                if (!children_done) {
                        children_done = true;
                        remove_children(parent_fd, name);
                        continue;
                }
                if (lg_now_ns() >= deadline)
                        return -EBUSY;
                lg_cg_backoff(&step);
                children_done = false;
        }
}

static int strv_push(char ***v, size_t *n, size_t *cap, const char *s) {
        if (*n + 2 > *cap) {
                size_t nc = *cap ? *cap * 2 : 8;
                char **nv = realloc(*v, nc * sizeof(char *));
                if (!nv)
                        return -ENOMEM;
                *v = nv;
                *cap = nc;
        }
        char *dup = strdup(s);
        if (!dup)
                return -ENOMEM;
        (*v)[(*n)++] = dup;
        (*v)[*n] = NULL;
        return 0;
}

int lg_cg_list_dirs_at(int dir_fd, const char *path, char ***ret) {
        char **v = calloc(1, sizeof(char *));
        size_t n = 0, cap = 1;
        if (!v)
                return -ENOMEM;
        int fd = openat(dir_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT) {
                        *ret = v;
                        return 0;
                }
                int r = -errno;
                free(v);
                return r;
        }
        DIR *d = fdopendir(fd);
        if (!d) {
                int r = -errno;
                close(fd);
                free(v);
                return r;
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                bool is_dir = de->d_type == DT_DIR;
                if (de->d_type == DT_UNKNOWN) {
                        struct stat st;
                        is_dir = fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                                 S_ISDIR(st.st_mode);
                }
                if (!is_dir)
                        continue;
                r = strv_push(&v, &n, &cap, de->d_name);
                if (r < 0)
                        break;
        }
        closedir(d);
        if (r < 0) {
                lg_strv_free(v);
                return r;
        }
        *ret = v;
        return (int) n;
}

void lg_cg_backoff(unsigned *step_us) {
        struct timespec ts = { .tv_sec = 0, .tv_nsec = (long) *step_us * 1000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        if (*step_us < 10000)
                *step_us *= 2;
}
