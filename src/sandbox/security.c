/* Hardening of the sandbox's processes: rlimits, the capability bounding
 * set, no_new_privs, a seccomp denylist and the final capability sets; in
 * two steps, before the sandbox reports ready (most of it, and the costly
 * filter load) and after its launch (what depends on the workload).
 *
 * The seccomp filter is compiled by libseccomp at build time (seccomp-gen)
 * into a classic BPF program; each sandbox loads it with one prctl, so no
 * compiler runs, and libseccomp is not even loaded, on the start path. */
#include <fcntl.h>
#include <stddef.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "sandbox/sandbox-internal.h"

/* The denylist (src/sandbox/seccomp-gen.c), compiled at build time. */
#include "seccomp-filter.h"

static const struct sock_fprog seccomp_prog = {
        .len = ARRAY_SIZE(lg_seccomp_filter),
        .filter = (struct sock_filter *) lg_seccomp_filter,
};

int lg_seccomp_program(const struct sock_fprog **ret, struct lg_error *err) {
        (void) err;
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

/* The second filter, loaded by the sandbox's first process once it has
 * set the hostname (filters stack and the strictest answer wins; the first
 * one already refuses every foreign ABI, so nr and the arguments here are
 * the native ABI's):
 *   - sethostname and setdomainname: EPERM, which the first filter leaves
 *     to this one because the launch sets the hostname with it loaded;
 *   - socket and socketpair: only the address families a function, a
 *     session or a pod has a use for. The others reach past the sandbox's
 *     network namespace (AF_VSOCK talks to the host and the hypervisor
 *     whatever the netns) or are rarely used kernel code (AF_PACKET,
 *     AF_KEY, AF_TIPC, AF_RDS, AF_ALG, AF_BLUETOOTH, ...): EAFNOSUPPORT,
 *     what a kernel without them answers, so programs fall back quietly.
 * The family is an int: only the low 32 bits of the argument count, as
 * the kernel reads them. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG0_LOW offsetof(struct seccomp_data, args[0])
#else
#define ARG0_LOW (offsetof(struct seccomp_data, args[0]) + sizeof(uint32_t))
#endif
static const struct sock_filter late_filter[] = {
        /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sethostname, 11, 0),
        /* 2 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setdomainname, 10, 0),
        /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 2, 0),
        /* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socketpair, 1, 0),
        /* 5 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* 6 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0_LOW),
        /* 7 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 4, 0),
        /* 8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET, 3, 0),
        /* 9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, 2, 0),
        /* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, 1, 0),
        /* 11 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EAFNOSUPPORT & SECCOMP_RET_DATA)),
        /* 12 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* 13 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
};

/* In the child, after it became root of its own user namespace and before
 * it reports ready: what does not depend on the workload. Nothing it holds
 * from here on is worth anything outside; the effective capabilities stay
 * (in its own namespaces) until lg_security_finish. */
int lg_security_prepare(const struct lg_plan *p, struct lg_child_error *e) {
        struct rlimit rl = {0, 0};
        if (setrlimit(RLIMIT_CORE, &rl) < 0)
                return lg_child_fail(e, errno, "setrlimit CORE");
        if (p->nproc) {
                rl = (struct rlimit){p->nproc, p->nproc};
                if (setrlimit(RLIMIT_NPROC, &rl) < 0)
                        return lg_child_fail(e, errno, "setrlimit NPROC");
        }

        /* A capability enters the inheritable set only while it is in the
         * bounding set: put caps_init there before the bounding set drops
         * it (the launch says whether legion-init keeps it). */
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        memset(data, 0, sizeof(data));
        if (syscall(SYS_capget, &hdr, data) < 0)
                return lg_child_fail(e, errno, "get capabilities");
        for (int i = 0; i < 2; i++)
                data[i].inheritable |= (uint32_t) (LG_CAPS_INIT >> (32 * i));
        if (syscall(SYS_capset, &hdr, data) < 0)
                return lg_child_fail(e, errno, "set inheritable capabilities");
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
        /* The big filter is loaded (and compiled by the kernel) here, off
         * the start path. */
        if (p->seccomp && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, p->seccomp, 0, 0) < 0)
                return lg_child_fail(e, errno, "load seccomp filter");
        return 0;
}

/* After the launch, once the hostname is set: the nofile limit, the
 * late filter, and the final capability sets. */
int lg_security_finish(const struct lg_plan *p, struct lg_child_error *e) {
        struct rlimit rl = {p->nofile, p->nofile};
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                return lg_child_fail(e, errno, "setrlimit NOFILE");
        static const struct sock_fprog late_prog = {
                .len = ARRAY_SIZE(late_filter),
                .filter = (struct sock_filter *) late_filter,
        };
        if (p->seccomp && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &late_prog, 0, 0) < 0)
                return lg_child_fail(e, errno, "load seccomp filter");

        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        memset(data, 0, sizeof(data));
        for (int i = 0; i < 2; i++) {
                /* caps_init is in the inheritable set but not the bounding
                 * set: exec'd as root, legion-init gets it; its children
                 * drop every set when they change to the run user. */
                uint32_t keep = (uint32_t) ((p->caps_keep | p->caps_init) >> (32 * i));
                data[i].effective = data[i].permitted = data[i].inheritable = keep;
        }
        if (syscall(SYS_capset, &hdr, data) < 0)
                return lg_child_fail(e, errno, "set capabilities");
        return 0;
}
