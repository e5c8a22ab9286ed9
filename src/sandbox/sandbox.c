/* Sandbox lifecycle: the owner's side (plan, clone, uid maps, cgroup, wait,
 * destroy) and the sandbox's first process up to the exec of legion-init.
 *
 * Order of events, and why:
 *   owner: clone3(NEWNS|NEWPID|NEWIPC), into the cgroup
 *   child: as host root in its new mount ns, build the root and pivot into
 *          it (host root can bind any path and mknod /dev nodes; an
 *          unprivileged child could not even reach a bind source under
 *          /root; layers are mounted idmapped into the sandbox's user
 *          namespace, which the owner made beforehand with its uid map:
 *          root inside = an unprivileged host range), then joins that user
 *          namespace and unshares UTS and network namespaces inside it
 *   owner: runs the network hook (veth) if any
 *   child: become that root; bring lo up; report ready and wait for the
 *          launch (lg_sandbox_create returns here)
 *   owner: start: sends the launch (launch.c): command line, environment,
 *          working directory, hostname, run user, log fd
 *   child: set the hostname, chdir, stdio; drop rlimits, capabilities,
 *          no_new_privs, seccomp; exec legion-init, which runs the workload
 * Everything that depends on the workload comes after the launch, so a
 * sandbox can be made before its workload is known (warm pod sandboxes);
 * the drop still comes before anything of the workload runs.
 * The mount, pid and ipc namespaces are owned by the host's user
 * namespace, so the sandbox's root has no capability over them at all: it
 * cannot mount, unmount or remount anything, whatever capabilities it keeps.
 * The network and UTS namespaces are created in the user namespace, so the
 * sandbox owns its loopback (its hostname stays fixed: sethostname is in
 * the seccomp denylist). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/proto.h"
#include "sandbox/cgroup.h"
#include "sandbox/sandbox-internal.h"

static const char *const default_env[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root", "LANG=C.UTF-8", NULL,
};

void lg_sandbox_spec_init(struct lg_sandbox_spec *spec) {
        memset(spec, 0, sizeof(*spec));
        spec->stdio_fds[0] = spec->stdio_fds[1] = spec->stdio_fds[2] = -1;
        spec->join_netns_fd = spec->join_ipcns_fd = -1;
}

bool lg_sandbox_valid_id(const char *id) {
        size_t n = strlen(id);
        if (n == 0 || n > 64 || id[0] == '.')
                return false;
        for (const char *p = id; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
                        return false;
        return true;
}

/* The cgroup manager's view of this host, worked out once. */
static int host_cgroup(enum lg_cgroup_version *ver, const char **root, const char **parent) {
        static enum lg_cgroup_version cached;
        static int result = 1;
        *root = getenv("LEGION_CGROUP_ROOT");
        if (!*root || !**root)
                *root = "/sys/fs/cgroup";
        *parent = getenv("LEGION_CGROUP_PARENT");
        if (!*parent || !**parent)
                *parent = "legion";
        if (result > 0)
                result = lg_cgroup_detect(*root, &cached);
        *ver = cached;
        return result;
}

int lg_sandbox_favor_dynmods(struct lg_error *err) {
        enum lg_cgroup_version ver;
        const char *root, *parent;
        int r = host_cgroup(&ver, &root, &parent);
        if (r < 0 || ver != LG_CGROUP_V1)
                return lg_error_set(err, EOPNOTSUPP, "favordynmods is only needed on cgroup v1");
        _cleanup_close_ int fs = fsopen("cgroup", FSOPEN_CLOEXEC);
        if (fs < 0)
                return lg_error_set(err, errno, "fsopen cgroup");
        /* "none" with a name: a hierarchy with no controller, so it never
         * competes with the host's. Every legiond shares the one of this
         * name; the kernel counts the favoring per hierarchy. */
        if (fsconfig(fs, FSCONFIG_SET_FLAG, "none", NULL, 0) < 0 ||
            fsconfig(fs, FSCONFIG_SET_STRING, "name", "legion-favordynmods", 0) < 0)
                return lg_error_set(err, errno, "configure a named cgroup hierarchy");
        if (fsconfig(fs, FSCONFIG_SET_FLAG, "favordynmods", NULL, 0) < 0)
                return lg_error_set(err, errno == EINVAL ? EOPNOTSUPP : errno,
                                    "this kernel has no favordynmods cgroup option");
        if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
                return lg_error_set(err, errno, "create a favordynmods cgroup hierarchy");
        int m = fsmount(fs, FSMOUNT_CLOEXEC, 0);
        if (m < 0)
                return lg_error_set(err, errno, "mount a favordynmods cgroup hierarchy");
        return m;
}

/* A helper's group <parent>/<name>, opened (made first when create). */
static int helper_cgroup(const char *name, bool create, lg_cgroup **ret, const char **parent,
                         struct lg_error *err) {
        enum lg_cgroup_version ver;
        const char *root;
        int r = host_cgroup(&ver, &root, parent);
        if (r < 0)
                return lg_error_set(err, r, "no usable cgroup hierarchy at `%s`", root);
        if (!lg_sandbox_valid_id(name))
                return lg_error_setm(err, EINVAL, "bad cgroup name `%s`", name);
        static const struct lg_cgroup_limits none = {0};
        r = create ? lg_cgroup_create(root, ver, *parent, name, &none, ret, err) : -EEXIST;
        if (r == -EEXIST)
                r = lg_cgroup_open(root, ver, *parent, name, ret);
        return r < 0 ? lg_error_set(err, r, "cgroup `%s/%s`", *parent, name) : 0;
}

int lg_sandbox_cgroup_place(const char *name, pid_t pid, struct lg_error *err) {
        _cleanup_cgroup_ lg_cgroup *cg = NULL;
        const char *parent;
        int r = helper_cgroup(name, true, &cg, &parent, err);
        if (r < 0)
                return r;
        r = lg_cgroup_add_pid(cg, pid);
        return r < 0 ? lg_error_set(err, r, "move pid %d into cgroup `%s/%s`", (int) pid, parent, name) : 0;
}

int lg_sandbox_cgroup_remove(const char *name, struct lg_error *err) {
        _cleanup_cgroup_ lg_cgroup *cg = NULL;
        const char *parent;
        int r = helper_cgroup(name, false, &cg, &parent, err);
        if (r == -ENOENT)
                return 0;
        if (r >= 0 && (r = lg_cgroup_destroy(cg)) < 0)
                lg_error_set(err, r, "remove cgroup `%s/%s`", parent, name);
        return r;
}

/* legion-init: $LEGION_INIT, else beside the running binary, else in the
 * libexec directory next to its bin directory. */
static int open_init(struct lg_error *err) {
        const char *env = getenv("LEGION_INIT");
        if (env && *env) {
                int fd = open(env, O_PATH | O_CLOEXEC);
                return fd >= 0 ? fd : lg_error_set(err, errno, "open legion-init `%s` ($LEGION_INIT)", env);
        }
        char self[PATH_MAX], path[PATH_MAX + 32];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n < 0)
                return lg_error_set(err, errno, "readlink `/proc/self/exe`");
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
                *slash = '\0';
        static const char *const rel[] = {"legion-init", "../libexec/legion-init", "../legion-init"};
        for (size_t i = 0; i < ARRAY_SIZE(rel); i++) {
                snprintf(path, sizeof(path), "%s/%s", self, rel[i]);
                int fd = open(path, O_PATH | O_CLOEXEC);
                if (fd >= 0)
                        return fd;
        }
        return lg_error_set(err, ENOENT, "find legion-init beside `%s` (set $LEGION_INIT)", self);
}

void lg_sandbox_launch_init(struct lg_sandbox_launch *l) {
        memset(l, 0, sizeof(*l));
        l->log_fd = -1;
}

/* The launch payload (launch.c): legion-init's whole command line, the
 * environment, and what the child applies itself before exec. */
static int build_launch(const lg_sandbox *sb, const struct lg_sandbox_launch *l, struct lg_msg *m,
                        struct lg_error *err) {
        const char *cwd = l->cwd ? l->cwd : "/";
        if (cwd[0] != '/')
                return lg_error_set(err, EINVAL, "working directory `%s` must be absolute", cwd);
        if (strlen(cwd) >= PATH_MAX)
                return lg_error_set(err, ENAMETOOLONG, "working directory is too long");
        if (l->run_as_set && (l->run_uid >= LG_UID_RANGE || l->run_gid >= LG_UID_RANGE))
                return lg_error_set(err, EINVAL, "user %u:%u is outside the sandbox's %u ids", (unsigned) l->run_uid,
                                    (unsigned) l->run_gid, LG_UID_RANGE);
        char host[64];
        snprintf(host, sizeof(host), "%s", l->hostname && *l->hostname ? l->hostname : sb->id);
        uint64_t nofile = l->nofile ? l->nofile : sb->nofile;
        /* Never above what the owner may grant: the child cannot raise it. */
        struct rlimit hard;
        if (getrlimit(RLIMIT_NOFILE, &hard) == 0 && hard.rlim_max != RLIM_INFINITY && nofile > hard.rlim_max)
                nofile = hard.rlim_max;
        bool logs = l->log_file || l->log_fd >= 0;
        uint64_t log_max = logs ? l->log_max_bytes : sb->capture_logs ? sb->log_max : 0;
        if ((logs || sb->capture_logs) && !log_max)
                log_max = 1u << 20;

        int r = 0;
        lg_msg_reset(m);
#define ADD(k, v) \
        if (r >= 0) \
        r = lg_msg_add(m, k, v)
#define ADDF(k, ...) \
        if (r >= 0) \
        r = lg_msg_addf(m, k, __VA_ARGS__)
        ADD("op", "launch");
        ADD("hostname", host);
        ADD("cwd", cwd);
        ADDF("nofile", "%llu", (unsigned long long) nofile);
        ADD("setids", l->run_as_set ? "1" : "0");
        ADD("arg", "legion-init");
        ADD("arg", "--control-fd");
        ADD("arg", "3");
        if (log_max) {
                ADD("arg", "--log-max");
                ADDF("arg", "%llu", (unsigned long long) log_max);
        }
        if (sb->worker_control)
                ADD("arg", "--worker-control");
        if (l->run_as_set) {
                ADD("arg", "--user");
                ADDF("arg", "%u:%u", (unsigned) l->run_uid, (unsigned) l->run_gid);
        }
        if (sb->n_extra) {
                ADD("arg", "--pass-fds");
                ADDF("arg", "%zu", sb->n_extra);
        }
        if (sb->detachable) {
                ADD("arg", "--attach-fd");
                ADDF("arg", "%zu", 4 + sb->n_extra);
        }
        ADD("arg", "--");
        for (size_t i = 0; l->argv && l->argv[i]; i++)
                ADD("arg", l->argv[i]);
        for (const char *const *e = l->envp ? l->envp : default_env; *e; e++)
                ADD("env", *e);
#undef ADD
#undef ADDF
        if (r == -EMSGSIZE)
                return lg_error_set(err, E2BIG, "the command line and environment exceed %u bytes", LG_PROTO_MAX);
        return r < 0 ? lg_error_set(err, -r, "build the launch") : 0;
}

/* Everything the child needs, resolved in the owner. */
static int build_plan(const struct lg_sandbox_spec *spec, const lg_sandbox *sb,
                      struct lg_plan *p, struct lg_error *err) {
        memset(p, 0, sizeof(*p));
        snprintf(p->mnt, sizeof(p->mnt), "%s/mnt", sb->dir);
        p->host_rootfs = spec->n_layers == 0;
        if (p->host_rootfs)
                snprintf(p->root, sizeof(p->root), "%s", p->mnt);
        else
                snprintf(p->root, sizeof(p->root), "%s/root", p->mnt);
        uint64_t size = spec->rootfs_bytes ? spec->rootfs_bytes : 64ull << 20;
        snprintf(p->tmpfs_opts, sizeof(p->tmpfs_opts), "size=%llu,mode=0755,uid=%u,gid=%u",
                 (unsigned long long) size, sb->host_uid, sb->host_uid);

        if (!p->host_rootfs) {
                size_t off = (size_t) snprintf(p->overlay_opts, sizeof(p->overlay_opts), "lowerdir=");
                for (size_t i = 0; i < spec->n_layers; i++) {
                        const char *l = spec->layers[i];
                        if (l[0] != '/' || strpbrk(l, ":,"))
                                return lg_error_set(err, EINVAL, "layer `%s` must be an absolute path without ':' or ','", l);
                        struct stat st;
                        if (stat(l, &st) < 0 || !S_ISDIR(st.st_mode))
                                return lg_error_set(err, errno ? errno : ENOTDIR, "layer `%s`", l);
                        off += (size_t) snprintf(p->overlay_opts + off, sizeof(p->overlay_opts) - off,
                                                 "%s%s/l%zu", i ? ":" : "", p->mnt, i);
                        if (off >= sizeof(p->overlay_opts))
                                return lg_error_set(err, E2BIG, "too many layers");
                }
                off += (size_t) snprintf(p->overlay_opts + off, sizeof(p->overlay_opts) - off,
                                         ",upperdir=%s/upper,workdir=%s/work", p->mnt, p->mnt);
                if (off >= sizeof(p->overlay_opts))
                        return lg_error_set(err, E2BIG, "too many layers");
        }
        p->layers = spec->layers;
        p->n_layers = spec->n_layers;
        p->readonly_root = spec->readonly_root;
        p->has_lib64 = access("/usr/lib64", F_OK) == 0;

        if (spec->n_binds) {
                p->binds = calloc(spec->n_binds, sizeof(*p->binds));
                if (!p->binds)
                        return lg_error_set(err, ENOMEM, "allocate binds");
        }
        for (size_t i = 0; i < spec->n_binds; i++) {
                const struct lg_bind *b = &spec->binds[i];
                struct stat st;
                if (!b->src || !b->dst || b->src[0] != '/' || b->dst[0] != '/')
                        return lg_error_set(err, EINVAL, "bind `%s:%s`: both paths must be absolute",
                                            b->src ? b->src : "", b->dst ? b->dst : "");
                if (strstr(b->dst, "/../") || !strcmp(b->dst + strlen(b->dst) - (strlen(b->dst) >= 3 ? 3 : 0), "/.."))
                        return lg_error_set(err, EINVAL, "bind destination `%s` contains `..`", b->dst);
                if (stat(b->src, &st) < 0)
                        return lg_error_set(err, errno, "bind source `%s`", b->src);
                const char *dst = b->dst;
                while (*dst == '/')
                        dst++;
                if (!*dst)
                        return lg_error_set(err, EINVAL, "bind destination `/` is not allowed");
                if (b->private_inodes && (!b->readonly || !S_ISDIR(st.st_mode) || strpbrk(b->src, ":,\\")))
                        return lg_error_set(err, EINVAL,
                                            "bind `%s`: private inodes need a read-only directory whose path has "
                                            "no `:`, `,` or `\\`",
                                            b->src);
                snprintf(p->binds[i].src, PATH_MAX, "%s", b->src);
                snprintf(p->binds[i].dst, PATH_MAX, "%s", dst);
                p->binds[i].readonly = b->readonly;
                p->binds[i].is_dir = S_ISDIR(st.st_mode);
                p->binds[i].private_inodes = b->private_inodes;
        }
        p->n_binds = spec->n_binds;
        for (size_t i = 0; i < spec->n_mount_points; i++) {
                const char *mp = spec->mount_points[i];
                if (!mp || mp[0] != '/' || strstr(mp, "/..") || !mp[1])
                        return lg_error_set(err, EINVAL, "mount point `%s` must be an absolute path without `..`",
                                            mp ? mp : "");
        }
        p->mount_points = spec->mount_points;
        p->n_mount_points = spec->n_mount_points;

        snprintf(p->hostname, sizeof(p->hostname), "%s", spec->hostname ? spec->hostname : sb->id);
        const struct { const char *what, *val; char *dst; } addrs[] = {
                {"net_address", spec->net_address, p->net_address},
                {"nameserver", spec->nameserver, p->nameserver},
        };
        for (size_t i = 0; i < ARRAY_SIZE(addrs); i++) {
                unsigned char bin[sizeof(struct in6_addr)];
                const char *v = addrs[i].val;
                if (!v)
                        continue;
                if (inet_pton(AF_INET, v, bin) != 1 && inet_pton(AF_INET6, v, bin) != 1)
                        return lg_error_setm(err, EINVAL, "%s `%.64s` is not an IP address", addrs[i].what, v);
                snprintf(addrs[i].dst, INET6_ADDRSTRLEN, "%s", v);
        }
        p->host_uid = sb->host_uid;
        p->new_net = !spec->share_net && spec->join_netns_fd < 0;
        p->join_net_fd = spec->join_netns_fd;
        p->join_ipc_fd = spec->join_ipcns_fd;
        p->sysctl_fd = -1;
        p->attach_fd = -1;
        p->new_cgroupns = true;
        p->caps_keep = spec->caps_keep;
        p->cap_last = lg_cap_last();
        if (!spec->no_seccomp) {
                int r = lg_seccomp_program(&p->seccomp, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Best effort, in the child's new network namespace: workloads without
 * capabilities may bind ports below 1024 (Kubernetes images expect port
 * 80) and use ICMP echo sockets. The sandbox's /proc/sys is read-only, so
 * the host's is used through an fd the owner opened: a net sysctl is
 * looked up in the network namespace of whoever opens it. */
static void net_sysctls(int sysctl_fd) {
        static const struct {
                const char *path, *value;
        } vals[] = {
                {"net/ipv4/ip_unprivileged_port_start", "0"},
                {"net/ipv4/ping_group_range", "0 65535"},
        };
        if (sysctl_fd < 0)
                return;
        for (size_t i = 0; i < ARRAY_SIZE(vals); i++) {
                int fd = openat(sysctl_fd, vals[i].path, O_WRONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                (void) !write(fd, vals[i].value, strlen(vals[i].value));
                close(fd);
        }
}

static int loopback_up(void) {
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0)
                return -errno;
        struct ifreq ifr;
        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
        int r = 0;
        if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
                r = -errno;
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (r == 0 && ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
                r = -errno;
        close(s);
        return r;
}

/* Move fd out of the way of 0..3 and the extra fds 4..19, keeping it open
 * across exec only if it is placed there by dup2 later. */
static int lift_fd(int fd) {
        return fd < 0 ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 64);
}

static int child_read_go(int fd, char expect) {
        char c;
        ssize_t n;
        do
                n = read(fd, &c, 1);
        while (n < 0 && errno == EINTR);
        return n == 1 && c == expect ? 0 : -1;
}

static int child_setup_fds(const struct lg_plan *p, int ctl, const int stdio[3], const int *extra, int attach,
                           struct lg_child_error *e) {
        for (int i = 0; i < 3; i++) {
                int fd = stdio[i];
                if (fd < 0) {
                        fd = open("/dev/null", (i == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
                        if (fd < 0)
                                return lg_child_fail(e, errno, "open `/dev/null`");
                }
                if (dup2(fd, i) < 0)
                        return lg_child_fail(e, errno, "dup2 stdio %d", i);
        }
        if (dup2(ctl, 3) < 0)
                return lg_child_fail(e, errno, "dup2 control socket");
        for (size_t i = 0; i < p->n_extra; i++)
                if (dup2(extra[i], 4 + (int) i) < 0)
                        return lg_child_fail(e, errno, "dup2 extra fd %zu", i);
        /* legion-init's attach socket comes after the workload's fds
         * (--attach-fd); init keeps it from the workload. */
        unsigned next = 4 + (unsigned) p->n_extra;
        if (attach >= 0 && dup2(attach, (int) next++) < 0)
                return lg_child_fail(e, errno, "dup2 attach socket");
        /* Whatever else the owner had open stays out of the sandbox. */
        if (syscall(SYS_close_range, next, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
                return lg_child_fail(e, errno, "close_range");
        return 0;
}

static _Noreturn void child_main(struct lg_plan *p) {
        struct lg_child_error e = {0};
        int sync_fd = p->sync_fd;
        char msg = LG_CHILD_ERROR;

        /* The sandbox dies with its owner (with the owning thread, strictly). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Drop every other fd of the owner now: a listener held here would
         * outlive a crashed owner and block its restart. */
        int keep[28] = {p->sync_fd,  p->control_fd, p->init_fd,     p->userns_fd,   p->stdio[0], p->stdio[1],
                        p->stdio[2], p->join_net_fd, p->join_ipc_fd, p->sysctl_fd, p->attach_fd};
        size_t nkeep = 11;
        for (size_t i = 0; i < p->n_extra; i++)
                keep[nkeep++] = p->extra[i];
        lg_close_all_except(keep, nkeep);
        if (child_read_go(sync_fd, LG_OWNER_GO) < 0)
                _exit(1);
        setsid();
        if (p->new_cgroupns && unshare(CLONE_NEWCGROUP) < 0) {
                lg_child_fail(&e, errno, "unshare cgroup namespace");
                goto fail;
        }
        if (lg_rootfs_enter(p, &e) < 0)
                goto fail;
        /* Another sandbox's namespaces are owned by its user namespace:
         * only host root may join them, so before we join our own. */
        if (p->join_ipc_fd >= 0 && setns(p->join_ipc_fd, CLONE_NEWIPC) < 0) {
                lg_child_fail(&e, errno, "join the IPC namespace");
                goto fail;
        }
        if (p->join_net_fd >= 0 && setns(p->join_net_fd, CLONE_NEWNET) < 0) {
                lg_child_fail(&e, errno, "join the network namespace");
                goto fail;
        }
        if (setns(p->userns_fd, CLONE_NEWUSER) < 0) {
                lg_child_fail(&e, errno, "join the sandbox's user namespace");
                goto fail;
        }
        /* Joining a user namespace changes credentials, which clears the
         * parent-death signal: arm it again before waiting on the owner. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Made inside the user namespace, the network namespace is the
         * sandbox's own: it may configure its loopback. So is the UTS
         * namespace, so that the hostname, known only at start, can be set
         * after the credentials changed (the workload still cannot:
         * sethostname is in the seccomp denylist). */
        if (unshare(CLONE_NEWUTS | (p->new_net ? CLONE_NEWNET : 0)) < 0) {
                lg_child_fail(&e, errno, "unshare UTS and network namespaces");
                goto fail;
        }
        if (p->new_net)
                net_sysctls(p->sysctl_fd);
        msg = LG_CHILD_USERNS;
        if (write(sync_fd, &msg, 1) != 1 || child_read_go(sync_fd, LG_OWNER_MAPPED) < 0)
                _exit(1);
        if (setresgid(0, 0, 0) < 0 || setgroups(0, NULL) < 0 || setresuid(0, 0, 0) < 0) {
                lg_child_fail(&e, errno, "become root of the user namespace");
                goto fail;
        }
        /* A credential change clears the parent-death signal: set it again.
         * Should the owner have died in between, the next read on the sync
         * socket sees EOF and we exit. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (p->new_net) {
                int r = loopback_up();
                if (r < 0) {
                        lg_child_fail(&e, r, "bring up loopback");
                        goto fail;
                }
        }
        /* PID 1 of a pid namespace drops signals it has no handler for,
         * even the owner's: a SIGTERM sent right after start would be lost
         * before legion-init blocks it and opens its signalfd. Blocked
         * signals stay pending across exec, so block them here. */
        sigset_t fwd;
        sigemptyset(&fwd);
        static const int fwd_sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD};
        for (size_t i = 0; i < ARRAY_SIZE(fwd_sigs); i++)
                sigaddset(&fwd, fwd_sigs[i]);
        sigprocmask(SIG_BLOCK, &fwd, NULL);
        if (lg_security_prepare(p, &e) < 0)
                goto fail;

        /* Ready: everything that does not depend on the workload is built,
         * the bounding set dropped, no_new_privs and the seccomp denylist
         * on. What does depend on it (hostname, working directory, stdio,
         * run user, nofile) comes with the launch; then the hostname
         * filter and the final capability sets: all before legion-init,
         * so nothing the workload runs ever sees more. */
        msg = LG_CHILD_READY;
        if (write(sync_fd, &msg, 1) != 1)
                _exit(1);
        struct lg_child_launch l;
        int r = lg_launch_recv(sync_fd, &l, &e);
        if (r == 0)
                _exit(1);
        if (r < 0)
                goto fail;
        /* Launched: a detachable sandbox no longer dies with its owner
         * (legion-init takes a new one on its attach socket). Before the
         * launch it does: a half-made sandbox has nobody to adopt it. */
        if (p->attach_fd >= 0)
                prctl(PR_SET_PDEATHSIG, 0);
        if (sethostname(l.hostname, strlen(l.hostname)) < 0) {
                lg_child_fail(&e, errno, "sethostname");
                goto fail;
        }
        if (chdir(l.cwd) < 0) {
                lg_child_fail(&e, errno, "chdir `%s`", l.cwd);
                goto fail;
        }
        /* Every fd still needed moves above 0..3 before those are filled,
         * or dup2 would overwrite one of them. */
        int stdio[3];
        if (l.log_fd >= 0) {
                int log = lift_fd(l.log_fd);
                stdio[0] = -1;
                stdio[1] = stdio[2] = log;
        } else {
                for (int i = 0; i < 3; i++)
                        stdio[i] = lift_fd(p->stdio[i]);
        }
        int ctl = lift_fd(p->control_fd);
        int init_fd = lift_fd(p->init_fd);
        int attach = lift_fd(p->attach_fd);
        int extra[16];
        for (size_t i = 0; i < p->n_extra; i++)
                extra[i] = lift_fd(p->extra[i]);
        sync_fd = lift_fd(sync_fd);
        if (child_setup_fds(p, ctl, stdio, extra, attach, &e) < 0)
                goto fail;
        p->nofile = l.nofile;
        p->caps_init = l.setids ? LG_CAPS_INIT : 0;
        if (lg_security_finish(p, &e) < 0)
                goto fail;
        syscall(SYS_execveat, init_fd, "", l.argv, l.envp, AT_EMPTY_PATH);
        lg_child_fail(&e, errno, "exec legion-init");
fail:
        msg = LG_CHILD_ERROR;
        {
                char buf[1 + sizeof(e)];
                buf[0] = msg;
                memcpy(buf + 1, &e, sizeof(e));
                (void) !write(sync_fd, buf, sizeof(buf));
        }
        _exit(1);
}

/* Read the child's next report. Returns the message byte, or -errno with
 * err filled (the child's own message for LG_CHILD_ERROR). */
static int owner_read(lg_sandbox *sb, struct lg_error *err) {
        char buf[1 + sizeof(struct lg_child_error)];
        ssize_t n;
        do
                n = recv(sb->sync_fd, buf, sizeof(buf), 0);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return lg_error_set(err, errno, "read from sandbox `%s`", sb->id);
        if (n == 0)
                return 0;
        if (buf[0] == LG_CHILD_ERROR && (size_t) n == sizeof(buf)) {
                struct lg_child_error e;
                memcpy(&e, buf + 1, sizeof(e));
                e.msg[sizeof(e.msg) - 1] = '\0';
                if (err) {
                        err->code = e.err ? e.err : EIO;
                        snprintf(err->msg, sizeof(err->msg), "sandbox `%s`: %s", sb->id, e.msg);
                }
                return -(e.err ? e.err : EIO);
        }
        return (unsigned char) buf[0];
}

static int owner_send(lg_sandbox *sb, char c) {
        return send(sb->sync_fd, &c, 1, MSG_NOSIGNAL) == 1 ? 0 : -errno;
}

static int write_id_map(pid_t pid, const char *file, uid_t base, struct lg_error *err) {
        char path[64], map[64];
        snprintf(path, sizeof(path), "/proc/%d/%s", (int) pid, file);
        snprintf(map, sizeof(map), "0 %u %u\n", base, LG_UID_RANGE);
        int r = lg_write_file_at(AT_FDCWD, path, map, false);
        return r < 0 ? lg_error_set(err, -r, "write `%s`", path) : 0;
}

/* The sandbox's user namespace, made before the sandbox itself so that its
 * first process can mount layers idmapped into it while still host root.
 * A helper process lives just long enough for its maps to be written and
 * its namespace to be opened. */
static int make_userns(uid_t base, struct lg_error *err) {
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) < 0)
                return lg_error_set(err, errno, "pipe");
        pid_t pid = (pid_t) syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, NULL);
        if (pid < 0) {
                int r = lg_error_set(err, errno, "create user namespace");
                close(pfd[0]);
                close(pfd[1]);
                return r;
        }
        if (pid == 0) {
                char c;
                /* Only its own pipe: a copy of another thread's pipe would
                 * keep that helper from ever seeing EOF. */
                lg_close_all_except(&pfd[0], 1);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                (void) !read(pfd[0], &c, 1);
                _exit(0);
        }
        close(pfd[0]);
        char path[64];
        int r = write_id_map(pid, "uid_map", base, err);
        if (r >= 0)
                r = write_id_map(pid, "gid_map", base, err);
        int fd = -1;
        if (r >= 0) {
                snprintf(path, sizeof(path), "/proc/%d/ns/user", (int) pid);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        r = lg_error_set(err, errno, "open `%s`", path);
        }
        close(pfd[1]);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        return r < 0 ? r : fd;
}

static pid_t clone_child(int cgroup_fd, bool new_ipc, int *pidfd) {
        struct clone_args args;
        memset(&args, 0, sizeof(args));
        /* No CLONE_NEWUTS: the child makes its UTS namespace inside the
         * sandbox's user namespace, where it can set the hostname at start. */
        args.flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_PIDFD;
        if (new_ipc)
                args.flags |= CLONE_NEWIPC;
        args.pidfd = (uint64_t) (uintptr_t) pidfd;
        args.exit_signal = SIGCHLD;
        if (cgroup_fd >= 0) {
                args.flags |= CLONE_INTO_CGROUP;
                args.cgroup = (uint64_t) cgroup_fd;
        }
        return (pid_t) syscall(SYS_clone3, &args, sizeof(args));
}

/* The cgroup limits of a sandbox's resources. */
static struct lg_cgroup_limits limits_of(uint64_t memory_bytes, uint64_t cpu_millis, uint64_t cpu_weight,
                                         uint64_t pids_max) {
        return (struct lg_cgroup_limits){
                .memory_max = memory_bytes,
                .cpu_quota_us = cpu_millis * 100, /* of a 100 ms period */
                .cpu_period_us = 100000,
                .cpu_weight = cpu_weight,
                .pids_max = pids_max,
        };
}

static int create_cgroup(const struct lg_sandbox_spec *spec, lg_sandbox *sb, struct lg_error *err) {
        enum lg_cgroup_version ver;
        const char *root, *parent;
        int r = host_cgroup(&ver, &root, &parent);
        if (r < 0)
                return lg_error_set(err, r, "no usable cgroup hierarchy at `%s`", root);
        struct lg_cgroup_limits *lim = &sb->limits;
        *lim = limits_of(spec->memory_bytes, spec->cpu_millis, spec->cpu_weight, spec->pids_max);
        char desc[PATH_MAX + 128];
        /* No limit asked for, no cgroup: the pid namespace already keeps
         * every process together and kills them with legion-init, so a
         * cgroup would only cost time (mkdir, attach, rmdir in each v1
         * hierarchy: a fifth of a start). Stats need one, though. */
        if (!lim->memory_max && !lim->cpu_quota_us && !lim->cpu_weight && !lim->pids_max) {
                snprintf(desc, sizeof(desc), "0 - - %s", sb->id);
                return lg_state_write_owner(sb->dir, desc, sb->has_slot ? sb->slot : 0);
        }
        snprintf(desc, sizeof(desc), "%d %s %s %s", (int) ver, root, parent, sb->id);
        /* Record the owner before the cgroup exists: a crash in between leaves
         * a record gc can follow, never an untracked cgroup. */
        r = lg_state_write_owner(sb->dir, desc, sb->has_slot ? sb->slot : 0);
        if (r < 0)
                return lg_error_set(err, r, "write owner record in `%s`", sb->dir);
        return lg_cgroup_create(root, ver, parent, sb->id, lim, &sb->cg, err);
}

static int open_log(const char *dir, const char *name, struct lg_error *err) {
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        /* Read-write: legion-init keeps the newest half when a log hits its cap. */
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
        return fd >= 0 ? fd : lg_error_set(err, errno, "open log `%s`", path);
}

int lg_sandbox_create(const struct lg_sandbox_spec *spec, lg_sandbox **ret, struct lg_error *err) {
        struct lg_plan plan;
        _cleanup_close_ int init_fd = -1, child_sync = -1, child_ctl = -1, out_log = -1, err_log = -1,
                            userns_fd = -1, sysctl_fd = -1, attach_fd = -1;
        int ctl[2] = {-1, -1}, sync[2] = {-1, -1};
        int r;

        memset(&plan, 0, sizeof(plan));
        lg_sandbox *sb = calloc(1, sizeof(*sb));
        if (!sb)
                return lg_error_set(err, ENOMEM, "allocate sandbox");
        sb->pidfd = sb->sync_fd = sb->control_fd = -1;
        sb->pid = -1;
        lg_msg_init(&sb->launch);

        /* Until sb->dir is set, destroy removes nothing on disk: a directory
         * that already existed belongs to another sandbox. */
        char dir[PATH_MAX];
        if (spec->id && !lg_sandbox_valid_id(spec->id)) {
                r = lg_error_set(err, EINVAL, "invalid sandbox id `%s` (1-64 of [A-Za-z0-9_.-])", spec->id);
                goto fail;
        }
        if (spec->id)
                snprintf(sb->id, sizeof(sb->id), "%s", spec->id);
        else if ((r = lg_random_hex(sb->id, 8)) < 0) {
                r = lg_error_set(err, r, "generate sandbox id");
                goto fail;
        }
        r = lg_state_root(spec->state_root, sb->state_root, sizeof(sb->state_root));
        if (r < 0) {
                r = lg_error_set(err, r, "state directory must be an absolute path of at most 2048 bytes");
                goto fail;
        }
        /* The sandbox's first process walks this path to mount its scratch
         * tmpfs, but nobody needs to list it: 0711. */
        snprintf(dir, sizeof(dir), "%s/sandboxes", sb->state_root);
        r = lg_mkdir_p(dir, 0711);
        if (r < 0) {
                r = lg_error_set(err, r, "create `%s`", dir);
                goto fail;
        }
        snprintf(dir, sizeof(dir), "%s/sandboxes/%s", sb->state_root, sb->id);
        if (mkdir(dir, 0711) < 0) {
                r = lg_error_set(err, errno, errno == EEXIST ? "sandbox `%s` already exists" : "create sandbox `%s`",
                                 sb->id);
                goto fail;
        }
        snprintf(sb->dir, sizeof(sb->dir), "%s", dir);
        char mnt[PATH_MAX + 8];
        snprintf(mnt, sizeof(mnt), "%s/mnt", sb->dir);
        if (mkdir(mnt, 0755) < 0) {
                r = lg_error_set(err, errno, "create `%s`", mnt);
                goto fail;
        }

        if (spec->host_uid_base) {
                sb->host_uid = spec->host_uid_base;
        } else {
                r = lg_uid_slot_alloc(sb->id, &sb->slot);
                if (r < 0) {
                        r = lg_error_set(err, r, r == -EUSERS ? "all %u uid ranges are in use" : "allocate a uid range",
                                         LG_UID_SLOTS);
                        goto fail;
                }
                sb->has_slot = true;
                sb->host_uid = LG_UID_BASE + sb->slot * LG_UID_RANGE;
        }

        r = create_cgroup(spec, sb, err);
        if (r < 0)
                goto fail;

        r = build_plan(spec, sb, &plan, err);
        if (r < 0)
                goto fail;
        init_fd = open_init(err);
        if (init_fd < 0) {
                r = init_fd;
                goto fail;
        }
        sb->worker_control = spec->worker_control;
        sb->detachable = spec->detachable;
        sb->n_extra = spec->n_extra_fds;
        sb->capture_logs = spec->capture_logs;
        sb->log_max = spec->log_max_bytes;
        sb->nofile = spec->nofile ? spec->nofile : 1024;
        struct lg_sandbox_launch own = {
                .argv = spec->argv,
                .envp = spec->envp,
                .cwd = spec->cwd,
                .hostname = spec->hostname,
                .run_as_set = spec->run_as_set,
                .run_uid = spec->run_uid,
                .run_gid = spec->run_gid,
                .log_fd = -1,
        };
        r = build_launch(sb, &own, &sb->launch, err);
        if (r < 0)
                goto fail;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) < 0 ||
            socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sync) < 0) {
                r = lg_error_set(err, errno, "socketpair");
                goto fail;
        }
        sb->control_fd = ctl[0];
        child_ctl = ctl[1];
        sb->sync_fd = sync[0];
        child_sync = sync[1];

        for (int i = 0; i < 3; i++)
                plan.stdio[i] = spec->stdio_fds[i];
        if (spec->capture_logs && spec->log_file) {
                /* One file for both: legion-init sees the same inode on 1
                 * and 2 and feeds both through one pipe, in order. */
                out_log = open(spec->log_file, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
                if (out_log < 0) {
                        r = lg_error_set(err, errno, "open log `%s`", spec->log_file);
                        goto fail;
                }
                plan.stdio[0] = -1;
                plan.stdio[1] = plan.stdio[2] = out_log;
        } else if (spec->capture_logs) {
                out_log = open_log(sb->dir, "stdout.log", err);
                if (out_log < 0) {
                        r = out_log;
                        goto fail;
                }
                err_log = open_log(sb->dir, "stderr.log", err);
                if (err_log < 0) {
                        r = err_log;
                        goto fail;
                }
                plan.stdio[0] = -1;
                plan.stdio[1] = out_log;
                plan.stdio[2] = err_log;
        }
        userns_fd = make_userns(sb->host_uid, err);
        if (userns_fd < 0) {
                r = userns_fd;
                goto fail;
        }
        plan.userns_fd = userns_fd;
        if (plan.new_net) {
                sysctl_fd = open("/proc/sys", O_PATH | O_DIRECTORY | O_CLOEXEC);
                plan.sysctl_fd = sysctl_fd; /* -1: sysctls left as they are */
        }
        if (spec->n_extra_fds > ARRAY_SIZE(plan.extra)) {
                r = lg_error_set(err, E2BIG, "at most %zu extra fds", ARRAY_SIZE(plan.extra));
                goto fail;
        }
        for (size_t i = 0; i < spec->n_extra_fds; i++)
                plan.extra[i] = spec->extra_fds[i];
        plan.n_extra = spec->n_extra_fds;
        if (sb->detachable) {
                attach_fd = lg_attach_listen(sb->dir, err);
                if (attach_fd < 0) {
                        r = attach_fd;
                        goto fail;
                }
                plan.attach_fd = attach_fd;
        }
        plan.init_fd = init_fd;
        plan.sync_fd = child_sync;
        plan.control_fd = child_ctl;

        int cgfd = sb->cg ? lg_cgroup_dirfd(sb->cg) : -1;
        sb->pid = clone_child(cgfd >= 0 ? cgfd : -1, plan.join_ipc_fd < 0, &sb->pidfd);
        if (sb->pid < 0) {
                r = lg_error_set(err, errno, "clone3");
                goto fail;
        }
        if (sb->pid == 0)
                child_main(&plan);

        /* Owner from here on. */
        child_sync = (close(child_sync), -1);
        child_ctl = (close(child_ctl), -1);
        attach_fd = (attach_fd >= 0 ? close(attach_fd) : 0, -1);
        /* Detachable: the record an adopting owner reads, and the uid
         * range held in legion-init's name, not ours (gc frees ranges
         * whose holder is gone). */
        if (sb->detachable && ((r = lg_sandbox_write_record(sb)) < 0 ||
                               (sb->has_slot && (r = lg_uid_slot_hold(sb->slot, sb->pid, sb->id)) < 0))) {
                r = lg_error_set(err, r, "record detachable sandbox `%s`", sb->id);
                goto fail;
        }
        if (sb->cg && cgfd < 0 && (r = lg_cgroup_add_pid(sb->cg, sb->pid)) < 0) {
                r = lg_error_set(err, r, "move sandbox `%s` into its cgroup", sb->id);
                goto fail;
        }
        r = owner_send(sb, LG_OWNER_GO);
        if (r < 0) {
                r = lg_error_set(err, r, "start sandbox `%s` setup", sb->id);
                goto fail;
        }
        r = owner_read(sb, err);
        if (r != LG_CHILD_USERNS) {
                if (r >= 0)
                        r = lg_error_set(err, EPROTO, "sandbox `%s` died during setup", sb->id);
                goto fail;
        }
        r = 0;
        if (spec->net_hook)
                r = spec->net_hook(sb->pid, spec->net_hook_data, err);
        if (r >= 0 && (r = owner_send(sb, LG_OWNER_MAPPED)) < 0)
                r = lg_error_set(err, r, "resume sandbox `%s`", sb->id);
        if (r < 0)
                goto fail;
        r = owner_read(sb, err);
        if (r != LG_CHILD_READY) {
                if (r >= 0)
                        r = lg_error_set(err, EPROTO, "sandbox `%s` died during setup", sb->id);
                goto fail;
        }
        free(plan.binds);
        *ret = sb;
        return 0;

fail:
        free(plan.binds);
        lg_sandbox_destroy(sb);
        return r < 0 ? r : -EIO;
}

/* Hand the waiting child its launch; EOF on the sync socket (close-on-exec
 * in the child) means legion-init is running, a report means it failed. */
static int launch(lg_sandbox *sb, const struct lg_msg *m, int log_fd, struct lg_error *err) {
        if (sb->started)
                return lg_error_set(err, EALREADY, "sandbox `%s` is already started", sb->id);
        if (sb->sync_fd < 0)
                return lg_error_set(err, ESRCH, "sandbox `%s` is not waiting to start", sb->id);
        int r = lg_launch_send(sb->sync_fd, m, log_fd), rr = 0;
        /* A child that failed or died has reported it before its end of
         * the socket closed: prefer that to the send's EPIPE. A send that
         * failed otherwise leaves the child waiting; the caller destroys. */
        struct pollfd pfd = {sb->sync_fd, POLLIN, 0};
        if (r >= 0 || poll(&pfd, 1, 0) == 1)
                rr = owner_read(sb, err);
        close(sb->sync_fd);
        sb->sync_fd = -1;
        lg_msg_free(&sb->launch);
        if (rr < 0)
                return rr;
        if (r < 0)
                return lg_error_set(err, -r, "start sandbox `%s`", sb->id);
        if (rr != 0)
                return lg_error_set(err, EPROTO, "unexpected report from sandbox `%s`", sb->id);
        sb->started = true;
        return 0;
}

int lg_sandbox_start(lg_sandbox *sb, struct lg_error *err) {
        return launch(sb, &sb->launch, -1, err);
}

int lg_sandbox_start_with(lg_sandbox *sb, const struct lg_sandbox_launch *l, struct lg_error *err) {
        if (sb->started)
                return lg_error_set(err, EALREADY, "sandbox `%s` is already started", sb->id);
        struct lg_msg m;
        lg_msg_init(&m);
        int r = build_launch(sb, l, &m, err);
        _cleanup_close_ int log = -1;
        if (r >= 0 && l->log_file) {
                log = open(l->log_file, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
                if (log < 0)
                        r = lg_error_set(err, errno, "open log `%s`", l->log_file);
        }
        if (r >= 0)
                r = launch(sb, &m, l->log_file ? log : l->log_fd, err);
        lg_msg_free(&m);
        return r;
}

/* The cgroup writes only the limits that changed: raising the weight of a
 * taken placeholder is one write. */
static int apply_limits(lg_sandbox *sb, const struct lg_cgroup_limits *lim, struct lg_error *err) {
        if (!sb->cg)
                return lg_error_set(err, ENODATA, "sandbox `%s` was made without limits", sb->id);
        int r = lg_cgroup_set_limits(sb->cg, lim, err);
        if (r < 0)
                return r;
        sb->limits = *lim;
        /* An adopting owner must know them: it writes all it knows. */
        if (sb->detachable && (r = lg_sandbox_write_record(sb)) < 0)
                return lg_error_set(err, r, "record the limits of sandbox `%s`", sb->id);
        return 0;
}

int lg_sandbox_set_limits(lg_sandbox *sb, uint64_t memory_bytes, uint64_t cpu_millis, uint64_t cpu_weight,
                          uint64_t pids_max, struct lg_error *err) {
        /* 0 leaves the group's weight as it is: the default, unless one
         * was set before, which goes back to the default. */
        if (!cpu_weight && sb->limits.cpu_weight)
                cpu_weight = 100;
        struct lg_cgroup_limits lim = limits_of(memory_bytes, cpu_millis, cpu_weight, pids_max);
        return apply_limits(sb, &lim, err);
}

/* Turn legion-init's own wait status plus its last op=exit report into the
 * workload's status; SIGKILL with an OOM kill counted is "OOMKilled". */
static void finish_status(lg_sandbox *sb, const siginfo_t *si) {
        struct lg_sandbox_status *st = &sb->status;
        bool have_exit = false;
        struct lg_msg m;
        lg_msg_init(&m);
        while (sb->started && lg_msg_recv(sb->control_fd, &m) == 1) {
                const char *op = lg_msg_get(&m, "op");
                long long v;
                if (op && !strcmp(op, "exit")) {
                        if (lg_msg_get_int(&m, "signal", &v) == 0) {
                                st->kind = LG_EXIT_SIGNAL;
                                st->signal = (int) v;
                                have_exit = true;
                        } else if (lg_msg_get_int(&m, "code", &v) == 0) {
                                st->kind = LG_EXIT_CODE;
                                st->code = (int) v;
                                have_exit = true;
                        }
                }
                lg_msg_reset(&m);
        }
        lg_msg_free(&m);
        if (!have_exit) {
                if (si->si_code == CLD_EXITED) {
                        st->kind = LG_EXIT_CODE;
                        st->code = si->si_status;
                } else {
                        st->kind = LG_EXIT_SIGNAL;
                        st->signal = si->si_status;
                }
        }
        if (st->kind == LG_EXIT_SIGNAL && st->signal == SIGKILL) {
                struct lg_cgroup_stats cs;
                if (sb->cg && lg_cgroup_get_stats(sb->cg, &cs) == 0 && cs.oom_kills > 0)
                        st->kind = LG_EXIT_OOM;
        }
        st->shell_status = st->kind == LG_EXIT_CODE ? st->code : 128 + st->signal;
        sb->exited = true;
}

/* waitid on a pidfd. An event loop may have made the pidfd non-blocking
 * (libuv does, to poll it), and then waitid answers EAGAIN instead of
 * waiting: wait for it to become readable, as blocking would have. */
static int wait_pidfd(int pidfd, siginfo_t *si, int flags) {
        for (;;) {
                memset(si, 0, sizeof(*si));
                if (waitid(P_PIDFD, (id_t) pidfd, si, WEXITED | flags) == 0)
                        return 0;
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return -errno;
                if (flags & WNOHANG)
                        return 0; /* still running: si_pid stays 0 */
                struct pollfd pfd = {pidfd, POLLIN, 0};
                if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                        return -errno;
        }
}

static int reap(lg_sandbox *sb, int flags, struct lg_sandbox_status *status) {
        if (!sb->exited) {
                siginfo_t si;
                int r = sb->adopted ? lg_adopted_wait(sb->pidfd, &si, flags) : wait_pidfd(sb->pidfd, &si, flags);
                if (r < 0)
                        return r;
                if (si.si_pid == 0)
                        return 0;
                finish_status(sb, &si);
        }
        if (status)
                *status = sb->status;
        return 1;
}

int lg_sandbox_wait(lg_sandbox *sb, struct lg_sandbox_status *status) {
        if (sb->pidfd < 0)
                return -ESRCH;
        int r = reap(sb, 0, status);
        return r < 0 ? r : 0;
}

int lg_sandbox_poll(lg_sandbox *sb, struct lg_sandbox_status *status) {
        return sb->pidfd < 0 ? -ESRCH : reap(sb, WNOHANG, status);
}

int lg_sandbox_pidfd(lg_sandbox *sb) { return sb->pidfd; }
int lg_sandbox_control_fd(lg_sandbox *sb) { return sb->control_fd; }
const char *lg_sandbox_id(const lg_sandbox *sb) { return sb->id; }
pid_t lg_sandbox_pid(const lg_sandbox *sb) { return sb->pid; }
uid_t lg_sandbox_host_uid(const lg_sandbox *sb) { return sb->host_uid; }
const char *lg_sandbox_state_dir(const lg_sandbox *sb) { return sb->dir; }

int lg_sandbox_signal(lg_sandbox *sb, int sig) {
        if (sb->exited || sb->pidfd < 0)
                return -ESRCH;
        return syscall(SYS_pidfd_send_signal, sb->pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

int lg_sandbox_stats(lg_sandbox *sb, struct lg_sandbox_stats *ret) {
        struct lg_cgroup_stats cs;
        if (!sb->cg)
                return -ENODATA; /* no limits, no cgroup to measure */
        int r = lg_cgroup_get_stats(sb->cg, &cs);
        if (r < 0)
                return r;
        *ret = (struct lg_sandbox_stats){
                .cpu_usage_ns = cs.cpu_usage_ns,
                .memory_current = cs.memory_current,
                .memory_peak = cs.memory_peak,
                .oom_kills = cs.oom_kills,
                .pids_current = cs.pids_current,
        };
        return 0;
}

int lg_sandbox_set_cpu(lg_sandbox *sb, uint64_t cpu_millis, struct lg_error *err) {
        struct lg_cgroup_limits lim = sb->limits;
        lim.cpu_quota_us = cpu_millis * 100;
        return apply_limits(sb, &lim, err);
}

int lg_sandbox_set_cpu_weight(lg_sandbox *sb, uint64_t weight, struct lg_error *err) {
        struct lg_cgroup_limits lim = sb->limits;
        lim.cpu_weight = weight;
        return apply_limits(sb, &lim, err);
}

/* In a helper process: enter the sandbox's mount namespace and attach the
 * detached tree there. The sandbox's mount namespace belongs to the host's
 * user namespace, so host root may do this; the sandbox itself may not. */
static _Noreturn void mount_helper(int pidfd, pid_t pid, int tree, const char *dst, uid_t uid, int report) {
        int stage = 0, e = 0;
        char path[PATH_MAX];
        /* setns puts us at the namespace's original root, not at the root
         * the sandbox pivoted into: take that from its PID 1 first. */
        snprintf(path, sizeof(path), "/proc/%d/root", (int) pid);
        int rootfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0 || setns(pidfd, CLONE_NEWNS) < 0 || fchdir(rootfd) < 0 || chroot(".") < 0) {
                e = errno;
                goto out;
        }
        stage = 1;
        /* Mount points made here belong to the sandbox's root, like the
         * rest of its tree. */
        setfsuid(uid);
        setfsgid(uid);
        snprintf(path, sizeof(path), "%s", dst);
        for (char *p = path + 1;; p++) {
                bool last = *p == '\0';
                if (*p != '/' && !last)
                        continue;
                *p = '\0';
                if (mkdir(path, 0755) < 0 && errno != EEXIST) {
                        int mkdir_err = errno;
                        struct stat st;
                        if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
                                e = mkdir_err;
                                goto out;
                        }
                }
                if (last)
                        break;
                *p = '/';
        }
        setfsuid(0);
        setfsgid(0);
        stage = 2;
        if (move_mount(tree, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                e = errno;
out:;
        int msg[2] = {stage, e};
        (void) !write(report, msg, sizeof(msg));
        _exit(e ? 1 : 0);
}

int lg_sandbox_mount(lg_sandbox *sb, const char *src, const char *dst, bool readonly, struct lg_error *err) {
        static const char *const stages[] = {"enter the mount namespace of", "create the mount point in",
                                             "attach the mount in"};
        if (!dst || dst[0] != '/' || strstr(dst, "/..") || strlen(dst) >= PATH_MAX - 1)
                return lg_error_set(err, EINVAL, "mount destination `%s` must be an absolute path without `..`",
                                    dst ? dst : "");
        if (sb->exited || sb->pidfd < 0)
                return lg_error_set(err, ESRCH, "sandbox `%s` is not running", sb->id);
        _cleanup_close_ int tree = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
        if (tree < 0)
                return lg_error_set(err, errno, "open `%s`", src);
        struct mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
        if (readonly)
                attr.attr_set |= MOUNT_ATTR_RDONLY;
        if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
                return lg_error_set(err, errno, "set mount flags of `%s`", src);
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) < 0)
                return lg_error_set(err, errno, "pipe");
        pid_t pid = fork();
        if (pid < 0) {
                int r = lg_error_set(err, errno, "fork");
                close(pfd[0]);
                close(pfd[1]);
                return r;
        }
        if (pid == 0) {
                int keep[] = {sb->pidfd, tree, pfd[1]};
                lg_close_all_except(keep, ARRAY_SIZE(keep));
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                mount_helper(sb->pidfd, sb->pid, tree, dst, sb->host_uid, pfd[1]);
        }
        close(pfd[1]);
        int msg[2] = {0, EIO};
        ssize_t n = lg_read_all(pfd[0], msg, sizeof(msg));
        close(pfd[0]);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        if (n != (ssize_t) sizeof(msg))
                return lg_error_set(err, EIO, "mount helper for sandbox `%s` died", sb->id);
        if (msg[1])
                return lg_error_set(err, msg[1], "mount `%s` at `%s`: %s sandbox `%s`", src, dst,
                                    stages[msg[0] < 3 && msg[0] >= 0 ? msg[0] : 0], sb->id);
        return 0;
}

int lg_sandbox_status_string(const struct lg_sandbox_status *st, char *buf, size_t len) {
        switch (st->kind) {
        case LG_EXIT_RUNNING: return snprintf(buf, len, "Running");
        case LG_EXIT_CODE: return snprintf(buf, len, "Exited(%d)", st->code);
        case LG_EXIT_SIGNAL: return snprintf(buf, len, "Signaled(%s)", sigabbrev_np(st->signal) ? sigabbrev_np(st->signal) : "?");
        case LG_EXIT_OOM: return snprintf(buf, len, "OOMKilled");
        }
        return snprintf(buf, len, "Unknown");
}

int lg_sandbox_destroy(lg_sandbox *sb) {
        if (!sb)
                return 0;
        int ret = 0, r;
        if (sb->pidfd >= 0 && !sb->exited) {
                /* Killing PID 1 of the pid namespace kills every process in it. */
                syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
                siginfo_t si;
                /* Reaped before the uid range is freed: a zombie still
                 * holds its uid. An adopted one is reaped by whoever
                 * adopted the orphan (the host's init); gone is enough. */
                if (sb->adopted)
                        lg_adopted_wait(sb->pidfd, &si, 0);
                else
                        wait_pidfd(sb->pidfd, &si, 0);
        }
        if (sb->cg) {
                r = lg_cgroup_destroy(sb->cg);
                if (r < 0 && ret == 0)
                        ret = r;
                lg_cgroup_free(sb->cg);
        }
        /* The uid range is free once nothing holds its uids, a zombie
         * included; an adopted legion-init is reaped by its reaper when
         * that one gets to it (the host's init: later, maybe seconds).
         * Until then the range stays held in legion-init's name (as every
         * detachable sandbox's is, lg_uid_slot_hold), and gc frees it once
         * it is gone. */
        bool zombie = sb->adopted && sb->pidfd >= 0 && lg_pidfd_alive(sb->pidfd);
        if (sb->pidfd >= 0)
                close(sb->pidfd);
        if (sb->sync_fd >= 0)
                close(sb->sync_fd);
        if (sb->control_fd >= 0)
                close(sb->control_fd);
        if (sb->dir[0]) {
                r = lg_rm_rf(sb->dir);
                if (r < 0 && ret == 0)
                        ret = r;
        }
        if (sb->has_slot && !zombie)
                lg_uid_slot_free(sb->slot);
        lg_msg_free(&sb->launch);
        free(sb);
        return ret;
}
