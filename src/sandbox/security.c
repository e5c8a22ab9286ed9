/* Hardening of the sandbox's processes: rlimits, the capability bounding
 * set, no_new_privs, a seccomp denylist and the final capability sets.
 *
 * The seccomp filter is compiled by libseccomp once per process and kept as
 * a classic BPF program; each sandbox loads that program with one prctl, so
 * the (slow) compiler never runs on the start path. */
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "sandbox/sandbox-internal.h"

/* Denied with EPERM: system calls that reach kernel state outside the
 * sandbox or widen the kernel's attack surface, and that a function or a
 * code interpreter has no business making. */
static const char *const denied_syscalls[] = {
        /* mounts and the new mount API */
        "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
        "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
        /* namespaces: joining others', or nesting (user ns handled below) */
        "setns",
        /* kernel and module loading, rebooting */
        "kexec_load", "kexec_file_load", "init_module", "finit_module",
        "delete_module", "create_module", "reboot",
        /* tracing, introspection of other processes, kernel memory */
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
        "perf_event_open", "bpf", "lookup_dcookie", "syslog",
        /* keys, handles, userfaultfd: frequent in kernel exploits */
        "keyctl", "add_key", "request_key", "open_by_handle_at",
        "name_to_handle_at", "userfaultfd",
        /* io_uring bypasses the seccomp view of every call it makes */
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        /* host-wide settings */
        "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
        "sethostname", "setdomainname", "vhangup", "iopl", "ioperm",
        "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl",
        "get_kernel_syms", "query_module", "vm86", "vm86old",
        "pciconfig_read", "pciconfig_write", "pciconfig_iobase",
};

static pthread_once_t seccomp_once = PTHREAD_ONCE_INIT;
static struct sock_fprog seccomp_prog;
static int seccomp_result;
static char seccomp_errmsg[256];

static int add_deny(scmp_filter_ctx ctx, const char *name) {
        int nr = seccomp_syscall_resolve_name(name);
        if (nr == __NR_SCMP_ERROR)
                return 0; /* not on this architecture */
        return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
}

static void build_seccomp(void) {
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        int r = ctx ? 0 : -ENOMEM;
        const char *what = "seccomp_init";

        /* Only the native ABI: a 32-bit or x32 call would dodge the rules, so
         * libseccomp's default for a foreign architecture (kill) applies. */
        for (size_t i = 0; r == 0 && i < ARRAY_SIZE(denied_syscalls); i++) {
                r = add_deny(ctx, denied_syscalls[i]);
                what = denied_syscalls[i];
        }
        /* New user namespaces would hand the sandbox fresh capabilities. */
        if (r == 0) {
                what = "unshare";
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                                     SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
        }
        if (r == 0) {
                what = "clone";
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                     SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
        }
        /* clone3 passes its flags in memory that seccomp cannot read: answer
         * ENOSYS so that libc falls back to clone, which we can inspect. */
        if (r == 0) {
                what = "clone3";
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
        }

        int memfd = -1;
        if (r == 0) {
                what = "export";
                memfd = memfd_create("legion-seccomp", MFD_CLOEXEC);
                r = memfd < 0 ? -errno : seccomp_export_bpf(ctx, memfd);
        }
        if (r == 0) {
                struct stat st;
                void *buf = NULL;
                if (fstat(memfd, &st) < 0 || st.st_size <= 0 ||
                    st.st_size % sizeof(struct sock_filter) != 0)
                        r = -EINVAL;
                else if (!(buf = malloc(st.st_size)))
                        r = -ENOMEM;
                else if (pread(memfd, buf, st.st_size, 0) != st.st_size)
                        r = -EIO;
                if (r == 0) {
                        seccomp_prog.len = st.st_size / sizeof(struct sock_filter);
                        seccomp_prog.filter = buf; /* kept for the process's life */
                } else {
                        free(buf);
                }
        }
        if (memfd >= 0)
                close(memfd);
        if (ctx)
                seccomp_release(ctx);
        seccomp_result = r;
        if (r < 0)
                snprintf(seccomp_errmsg, sizeof(seccomp_errmsg), "build seccomp filter (%s)", what);
}

int lg_seccomp_program(const struct sock_fprog **ret, struct lg_error *err) {
        pthread_once(&seccomp_once, build_seccomp);
        if (seccomp_result < 0)
                return lg_error_set(err, -seccomp_result, "%s", seccomp_errmsg);
        *ret = &seccomp_prog;
        return 0;
}

int lg_cap_last(void) {
        static int cached = -1;
        if (cached >= 0)
                return cached;
        char buf[16];
        if (lg_read_file_at(AT_FDCWD, "/proc/sys/kernel/cap_last_cap", buf, sizeof(buf)) > 0)
                cached = atoi(buf);
        if (cached <= 0)
                cached = CAP_LAST_CAP;
        return cached;
}

/* In the child, after it became root of its own user namespace: nothing it
 * holds from here on is worth anything outside, and what remains is cut to
 * what the spec keeps. */
int lg_security_apply(const struct lg_plan *p, struct lg_child_error *e) {
        struct rlimit rl = {p->nofile, p->nofile};
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                return lg_child_fail(e, errno, "setrlimit NOFILE");
        rl = (struct rlimit){0, 0};
        if (setrlimit(RLIMIT_CORE, &rl) < 0)
                return lg_child_fail(e, errno, "setrlimit CORE");
        if (p->nproc) {
                rl = (struct rlimit){p->nproc, p->nproc};
                if (setrlimit(RLIMIT_NPROC, &rl) < 0)
                        return lg_child_fail(e, errno, "setrlimit NPROC");
        }

        for (int cap = 0; cap <= p->cap_last; cap++) {
                if (p->caps_keep & (1ULL << cap))
                        continue;
                if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
                        return lg_child_fail(e, errno, "drop capability %d from the bounding set", cap);
        }
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
                return lg_child_fail(e, errno, "clear ambient capabilities");
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return lg_child_fail(e, errno, "set no_new_privs");
        if (p->seccomp && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, p->seccomp, 0, 0) < 0)
                return lg_child_fail(e, errno, "load seccomp filter");

        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        memset(data, 0, sizeof(data));
        for (int i = 0; i < 2; i++) {
                uint32_t keep = (uint32_t) (p->caps_keep >> (32 * i));
                data[i].effective = data[i].permitted = data[i].inheritable = keep;
        }
        if (syscall(SYS_capset, &hdr, data) < 0)
                return lg_child_fail(e, errno, "set capabilities");
        return 0;
}
