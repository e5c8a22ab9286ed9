/* The sandbox's root filesystem, built by its first process while it is
 * still host root in a fresh mount namespace (before it drops into its user
 * namespace, see sandbox.c for why):
 *
 *   <mnt>        tmpfs, size-limited, owned by the sandbox's root uid
 *   <mnt>/l<N>   each read-only layer, mounted idmapped so that host uids
 *                0..65535 show as the sandbox's own (root-owned files of a
 *                layer belong to the sandbox's root, with nothing chowned)
 *   <mnt>/root   overlay of the layers with <mnt>/upper on top,
 *                or with no layers <mnt> itself is the root and the host's
 *                /usr is seen through a read-only overlay of its own
 *
 * then /proc (private to the pid namespace, with the usual paths masked),
 * a minimal /dev, extra binds, an optional read-only root, and pivot_root.
 * Runs between clone and exec: system calls and stack buffers only. */
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "sandbox/sandbox-internal.h"

int lg_child_fail(struct lg_child_error *e, int err, const char *fmt, ...) {
        if (err < 0)
                err = -err;
        if (err == 0)
                err = EIO;
        e->err = err;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t) n < sizeof(e->msg))
                snprintf(e->msg + n, sizeof(e->msg) - n, ": %s", strerror(err));
        return -err;
}

#define TRY(e, expr, ...)                                               \
        do {                                                            \
                if ((expr) < 0)                                         \
                        return lg_child_fail((e), errno, __VA_ARGS__);  \
        } while (0)

/* Paths under /proc the sandbox must not read (host kernel state) or write. */
static const char *const proc_masked[] = {
        "proc/kcore", "proc/keys", "proc/timer_list", "proc/sched_debug",
        "proc/latency_stats", "proc/sysrq-trigger",
};
/* legion-init's memory (this process is PID 1, and execs legion-init).
 * legion-init is non-dumpable, but a workload that keeps CAP_SYS_PTRACE in
 * the sandbox's user namespace passes the kernel's access check anyway, and
 * could write legion-init's code through these files. They are sealed
 * with a nodev, read-only /dev/null: any open fails with EACCES. */
static const char *const proc_sealed[] = {
        "proc/1/mem", "proc/1/task/1/mem",
};
static const char *const proc_readonly[] = {
        "proc/sys", "proc/irq", "proc/bus", "proc/fs",
};

struct devnode {
        const char *name;
        unsigned major, minor;
};
static const struct devnode devnodes[] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
        {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
};

/* The host directory src, read-only at dst (relative to the new root), with
 * inodes of this sandbox's own. Not a bind: inotify and fanotify watches
 * attach to inodes, and a bind shares the host's, so a watch on dst/X
 * would see the host and every other sandbox open X. An overlay has inodes
 * of its own: opening a file through it notifies the overlay's inode and
 * the host's, never another overlay's, and no sandbox can reach the host's
 * inode. Without an upper layer it is read-only and needs two lower ones;
 * the second is the empty mount point it covers. It is mounted by host
 * root without an idmap, so the host's root-owned files show as nobody's,
 * as through a bind; unlike a bind, it shows no mounts under src. */
static int mount_private_view(const char *src, const char *dst, struct lg_child_error *e) {
        char opts[2 * PATH_MAX + 16];
        snprintf(opts, sizeof(opts), "lowerdir=%s:%s", src, dst);
        TRY(e, mount("overlay", dst, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, opts),
            "mount the overlay of `%s` on `/%s`", src, dst);
        return 0;
}

/* Bind src on dst and make that read-only, nosuid, nodev and noexec
 * (a nodev /dev/null cannot even be opened). */
static int bind_sealed(const char *src, const char *dst, unsigned long rec, struct lg_child_error *e) {
        TRY(e, mount(src, dst, NULL, MS_BIND | rec, NULL), "bind `%s` on `/%s`", src, dst);
        TRY(e, mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL),
            "remount `/%s` read-only", dst);
        return 0;
}

static int write_small_file(int dirfd, const char *path, const char *data, mode_t mode) {
        int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -1;
        int r = lg_write_all(fd, data, strlen(data));
        close(fd);
        if (r < 0) {
                errno = -r;
                return -1;
        }
        return 0;
}

/* /etc/hosts and /etc/resolv.conf in etcfd, as the sandbox's root (fsuid
 * set by the caller): the hostname on the sandbox's network address (or on
 * 127.0.1.1 without one) and the nameserver it may reach (none without
 * one). Whatever was there (an image's file, or its symlink into /run as
 * systemd-resolved images have) is replaced, so an image's resolver never
 * points at an address the sandbox cannot reach. */
static int write_hosts_resolv(const struct lg_plan *p, int etcfd, struct lg_child_error *e) {
        char hosts[256], resolv[128] = "";
        snprintf(hosts, sizeof(hosts), "127.0.0.1\tlocalhost\n::1\tlocalhost\n%s\t%s\n",
                 p->net_address[0] ? p->net_address : "127.0.1.1", p->hostname);
        /* timeout:2: the forwarder answers at once or tries its next
         * upstream; the resolver's default of 5 s only delays failure. */
        if (p->nameserver[0])
                snprintf(resolv, sizeof(resolv), "nameserver %s\noptions timeout:2 attempts:2\n", p->nameserver);
        static const char *const names[] = {"hosts", "resolv.conf"};
        const char *data[] = {hosts, resolv};
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
                if (unlinkat(etcfd, names[i], 0) < 0 && errno != ENOENT)
                        return lg_child_fail(e, errno, "replace `/etc/%s`", names[i]);
                TRY(e, write_small_file(etcfd, names[i], data[i], 0644), "write `/etc/%s`", names[i]);
        }
        return 0;
}

/* An image root on the sandbox's network: its /etc/hosts and resolv.conf
 * written through the overlay, so into the upper (the layers are shared
 * and read-only), as the sandbox's root. */
static int image_net_etc(const struct lg_plan *p, int rootfd, struct lg_child_error *e) {
        setfsuid(p->host_uid);
        setfsgid(p->host_uid);
        int r = 0;
        if (mkdirat(rootfd, "etc", 0755) < 0 && errno != EEXIST)
                r = lg_child_fail(e, errno, "mkdir `/etc`");
        int etcfd = r < 0 ? -1 : openat(rootfd, "etc", O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (r == 0 && etcfd < 0)
                r = lg_child_fail(e, errno, "open `/etc` (not a directory in the image?)");
        if (r == 0)
                r = write_hosts_resolv(p, etcfd, e);
        if (etcfd >= 0)
                close(etcfd);
        setfsuid(0);
        setfsgid(0);
        return r;
}

/* The skeleton of a root made from the host's /usr: the usual merged-/usr
 * links, empty mount points and a minimal /etc. Created with the sandbox's
 * root as fsuid so that the sandbox owns (and may change) all of it. */
static int populate_host_root(const struct lg_plan *p, int rootfd, struct lg_child_error *e) {
        static const struct { const char *path; mode_t mode; } dirs[] = {
                {"usr", 0755}, {"etc", 0755}, {"tmp", 01777}, {"root", 0700},
                {"proc", 0555}, {"dev", 0755}, {"run", 0755}, {"var", 0755},
                {"var/tmp", 01777}, {"home", 0755}, {"mnt", 0755}, {"sys", 0555},
        };
        static const struct { const char *target, *link; } links[] = {
                {"usr/bin", "bin"}, {"usr/sbin", "sbin"}, {"usr/lib", "lib"},
        };
        setfsuid(p->host_uid);
        setfsgid(p->host_uid);
        for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
                if (mkdirat(rootfd, dirs[i].path, dirs[i].mode) < 0 && errno != EEXIST)
                        return lg_child_fail(e, errno, "mkdir `/%s`", dirs[i].path);
        /* mkdir applies the umask; /tmp must be sticky and world-writable. */
        fchmodat(rootfd, "tmp", 01777, 0);
        fchmodat(rootfd, "var/tmp", 01777, 0);
        for (size_t i = 0; i < ARRAY_SIZE(links); i++)
                TRY(e, symlinkat(links[i].target, rootfd, links[i].link), "symlink `/%s`", links[i].link);
        if (p->has_lib64)
                TRY(e, symlinkat("usr/lib64", rootfd, "lib64"), "symlink `/lib64`");

        TRY(e, write_small_file(rootfd, "etc/passwd",
                                "root:x:0:0:root:/root:/bin/sh\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", 0644),
            "write `/etc/passwd`");
        TRY(e, write_small_file(rootfd, "etc/group", "root:x:0:\nnogroup:x:65534:\n", 0644),
            "write `/etc/group`");
        TRY(e, write_small_file(rootfd, "etc/hostname", p->hostname, 0644), "write `/etc/hostname`");
        TRY(e, write_small_file(rootfd, "etc/nsswitch.conf",
                                p->nameserver[0] ? "passwd: files\ngroup: files\nhosts: files dns\n"
                                                 : "passwd: files\ngroup: files\nhosts: files\n", 0644),
            "write `/etc/nsswitch.conf`");
        int etcfd = openat(rootfd, "etc", O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (etcfd < 0)
                return lg_child_fail(e, errno, "open `/etc`");
        int r = write_hosts_resolv(p, etcfd, e);
        close(etcfd);
        if (r < 0)
                return r;
        setfsuid(0);
        setfsgid(0);

        return mount_private_view("/usr", "usr", e);
}

/* mkdir -p relative to the new root, as the sandbox's root, for a mount
 * point that the layers or skeleton do not have. */
static int make_mount_point(const struct lg_plan *p, const char *rel, bool dir) {
        char buf[PATH_MAX];
        snprintf(buf, sizeof(buf), "%s", rel);
        setfsuid(p->host_uid);
        setfsgid(p->host_uid);
        int ret = 0;
        for (char *s = buf; ; s++) {
                if (*s != '/' && *s != '\0')
                        continue;
                bool last = *s == '\0';
                *s = '\0';
                if (last && !dir) {
                        int fd = open(buf, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
                        if (fd < 0 && errno != EEXIST && errno != EISDIR)
                                ret = -errno;
                        if (fd >= 0)
                                close(fd);
                } else if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
                        ret = -errno;
                }
                if (last || ret < 0)
                        break;
                *s = '/';
        }
        setfsuid(0);
        setfsgid(0);
        return ret;
}

static int mount_binds(const struct lg_plan *p, struct lg_child_error *e) {
        for (size_t i = 0; i < p->n_binds; i++) {
                const struct lg_plan_bind *b = &p->binds[i];
                int r = make_mount_point(p, b->dst, b->is_dir);
                if (r < 0)
                        return lg_child_fail(e, r, "create mount point `/%s`", b->dst);
                if (b->private_inodes) {
                        r = mount_private_view(b->src, b->dst, e);
                        if (r < 0)
                                return r;
                        continue;
                }
                TRY(e, mount(b->src, b->dst, NULL, MS_BIND | MS_REC, NULL),
                    "bind `%s` to `/%s`", b->src, b->dst);
                unsigned long fl = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV;
                if (b->readonly)
                        fl |= MS_RDONLY;
                TRY(e, mount(NULL, b->dst, NULL, fl, NULL), "remount `/%s`", b->dst);
        }
        return 0;
}

static int mount_proc(struct lg_child_error *e) {
        TRY(e, mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount `/proc`");
        for (size_t i = 0; i < ARRAY_SIZE(proc_masked); i++) {
                if (access(proc_masked[i], F_OK) < 0)
                        continue;
                TRY(e, mount("dev/null", proc_masked[i], NULL, MS_BIND, NULL), "mask `/%s`", proc_masked[i]);
        }
        for (size_t i = 0; i < ARRAY_SIZE(proc_sealed); i++) {
                int r = bind_sealed("dev/null", proc_sealed[i], 0, e);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < ARRAY_SIZE(proc_readonly); i++) {
                if (access(proc_readonly[i], F_OK) < 0)
                        continue;
                int r = bind_sealed(proc_readonly[i], proc_readonly[i], MS_REC, e);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A tmpfs /dev with real device nodes (we are still host root, so mknod
 * works and costs less than a bind mount per node), a private devpts, and
 * /dev/shm for the sandbox's own IPC namespace. */
static int mount_dev(const struct lg_plan *p, struct lg_child_error *e) {
        char opts[96];
        snprintf(opts, sizeof(opts), "size=64k,mode=0755,uid=%u,gid=%u", p->host_uid, p->host_uid);
        TRY(e, mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, opts), "mount `/dev`");
        int devfd = open("dev", O_DIRECTORY | O_CLOEXEC);
        if (devfd < 0)
                return lg_child_fail(e, errno, "open `/dev`");
        int ret = 0;
        for (size_t i = 0; i < ARRAY_SIZE(devnodes) && ret == 0; i++) {
                if (mknodat(devfd, devnodes[i].name, S_IFCHR | 0666,
                            makedev(devnodes[i].major, devnodes[i].minor)) < 0 ||
                    fchmodat(devfd, devnodes[i].name, 0666, 0) < 0)
                        ret = lg_child_fail(e, errno, "mknod `/dev/%s`", devnodes[i].name);
        }
        static const struct { const char *target, *link; } links[] = {
                {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
                {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
                {"pts/ptmx", "ptmx"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(links) && ret == 0; i++)
                if (symlinkat(links[i].target, devfd, links[i].link) < 0)
                        ret = lg_child_fail(e, errno, "symlink `/dev/%s`", links[i].link);
        if (ret == 0 && (mkdirat(devfd, "pts", 0755) < 0 || mkdirat(devfd, "shm", 01777) < 0))
                ret = lg_child_fail(e, errno, "mkdir in `/dev`");
        close(devfd);
        if (ret < 0)
                return ret;
        TRY(e, mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                     "newinstance,ptmxmode=0666,mode=0620"),
            "mount `/dev/pts`");
        snprintf(opts, sizeof(opts), "size=%s,mode=1777,uid=%u,gid=%u", "64m", p->host_uid, p->host_uid);
        TRY(e, mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts), "mount `/dev/shm`");
        return 0;
}

/* Mount a layer read-only at dst, idmapped into the sandbox's user
 * namespace. A filesystem without idmapped mount support gets a plain
 * read-only bind: files then show as nobody-owned and only the upper layer
 * is the sandbox's, but the sandbox still runs. */
static int mount_layer(const struct lg_plan *p, const char *src, const char *dst,
                       struct lg_child_error *e) {
        TRY(e, mkdir(dst, 0755), "mkdir `%s`", dst);
        int fd = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (fd < 0)
                return lg_child_fail(e, errno, "open layer `%s`", src);
        struct mount_attr attr = {
                .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                .userns_fd = (uint64_t) p->userns_fd,
        };
        if (mount_setattr(fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0) {
                attr.attr_set &= ~(uint64_t) MOUNT_ATTR_IDMAP;
                if (errno != EINVAL && errno != EPERM && errno != EOPNOTSUPP) {
                        int r = lg_child_fail(e, errno, "idmap layer `%s`", src);
                        close(fd);
                        return r;
                }
                if (mount_setattr(fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0) {
                        int r = lg_child_fail(e, errno, "make layer `%s` read-only", src);
                        close(fd);
                        return r;
                }
        }
        int r = move_mount(fd, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH);
        if (r < 0)
                r = lg_child_fail(e, errno, "attach layer `%s`", src);
        close(fd);
        return r;
}

int lg_rootfs_enter(const struct lg_plan *p, struct lg_child_error *e) {
        /* Nothing we mount may propagate back to the host. */
        TRY(e, mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "make `/` private");
        TRY(e, mount("tmpfs", p->mnt, "tmpfs", MS_NOSUID | MS_NODEV, p->tmpfs_opts),
            "mount scratch tmpfs on `%s`", p->mnt);

        if (!p->host_rootfs) {
                char upper[PATH_MAX + 8], work[PATH_MAX + 8];
                snprintf(upper, sizeof(upper), "%s/upper", p->mnt);
                snprintf(work, sizeof(work), "%s/work", p->mnt);
                for (size_t i = 0; i < p->n_layers; i++) {
                        char dst[PATH_MAX + 16];
                        snprintf(dst, sizeof(dst), "%s/l%zu", p->mnt, i);
                        int r = mount_layer(p, p->layers[i], dst, e);
                        if (r < 0)
                                return r;
                }
                TRY(e, mkdir(upper, 0755), "mkdir `%s`", upper);
                TRY(e, mkdir(work, 0700), "mkdir `%s`", work);
                TRY(e, mkdir(p->root, 0755), "mkdir `%s`", p->root);
                /* The root directory of the overlay takes its owner from the
                 * upper directory: make it the sandbox's root. */
                TRY(e, chown(upper, p->host_uid, p->host_uid), "chown `%s`", upper);
                TRY(e, mount("overlay", p->root, "overlay", MS_NOSUID | MS_NODEV, p->overlay_opts),
                    "mount overlay on `%s`", p->root);
        }

        int rootfd = open(p->root, O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return lg_child_fail(e, errno, "open `%s`", p->root);
        int r = fchdir(rootfd);
        if (r == 0 && p->host_rootfs)
                r = populate_host_root(p, rootfd, e);
        else if (r == 0 && (p->net_address[0] || p->nameserver[0]))
                r = image_net_etc(p, rootfd, e);
        else if (r < 0)
                r = lg_child_fail(e, errno, "chdir `%s`", p->root);
        close(rootfd);
        if (r < 0)
                return r;

        /* Layers may lack the mount points; create them in the upper. */
        static const char *const needed[] = {"proc", "dev", "tmp"};
        for (size_t i = 0; i < ARRAY_SIZE(needed); i++) {
                r = make_mount_point(p, needed[i], true);
                if (r < 0)
                        return lg_child_fail(e, r, "create `/%s`", needed[i]);
        }

        r = mount_dev(p, e);
        if (r < 0)
                return r;
        r = mount_proc(e);
        if (r < 0)
                return r;
        r = mount_binds(p, e);
        if (r < 0)
                return r;
        for (size_t i = 0; i < p->n_mount_points; i++) {
                r = make_mount_point(p, p->mount_points[i] + 1, true);
                if (r < 0)
                        return lg_child_fail(e, r, "create mount point `%s`", p->mount_points[i]);
        }

        if (p->readonly_root) {
                TRY(e, mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, p->tmpfs_opts), "mount `/tmp`");
                TRY(e, chmod("tmp", 01777), "chmod `/tmp`");
                TRY(e, mount(NULL, ".", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL),
                    "remount the root read-only");
        }

        /* pivot_root(".", ".") stacks the old root on top of the new one;
         * detaching it leaves only the new root, with no directory needed. */
        TRY(e, syscall(SYS_pivot_root, ".", "."), "pivot_root into `%s`", p->root);
        TRY(e, umount2(".", MNT_DETACH), "detach the old root");
        TRY(e, chdir("/"), "chdir `/`");
        return 0;
}
