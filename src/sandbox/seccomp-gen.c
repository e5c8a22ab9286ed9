/* seccomp-gen: build-time generator of the sandbox's seccomp filter.
 *
 * libseccomp compiles the denylist below into a classic BPF program for the
 * build's architecture, and this writes it out as a C array
 * (seccomp-filter.h) that the sandbox library loads with one prctl. So no
 * sandbox start, nor any process that starts sandboxes, runs the compiler
 * or even loads libseccomp. */
#include <errno.h>
#include <linux/filter.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

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
        /* tracing, introspection of other processes, kernel memory;
         * pidfd_getfd would take legion-init's control socket from a
         * workload that kept CAP_SYS_PTRACE, process_madvise reaches into
         * another process's memory the same way */
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
        "process_madvise",
        "perf_event_open", "bpf", "lookup_dcookie", "syslog",
        /* keys, handles, userfaultfd: frequent in kernel exploits */
        "keyctl", "add_key", "request_key", "open_by_handle_at",
        "name_to_handle_at", "userfaultfd",
        /* io_uring bypasses the seccomp view of every call it makes */
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        /* host-wide settings */
        "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
        /* (sethostname and setdomainname too, by a second filter that the
         * sandbox's first process loads once it has set the hostname; the
         * address families a sandbox may open sockets of are checked there
         * as well: late_filter in security.c) */
        "vhangup", "iopl", "ioperm",
        "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl",
        "get_kernel_syms", "query_module", "vm86", "vm86old",
        "pciconfig_read", "pciconfig_write", "pciconfig_iobase",
};

static int add_deny(scmp_filter_ctx ctx, const char *name) {
        int nr = seccomp_syscall_resolve_name(name);
        if (nr == __NR_SCMP_ERROR)
                return 0; /* not on this architecture */
        return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
}

static int fail(const char *what, int r) {
        fprintf(stderr, "seccomp-gen: %s: %s\n", what, strerror(r < 0 ? -r : r));
        return 1;
}

int main(int argc, char **argv) {
        if (argc != 2) {
                fprintf(stderr, "usage: seccomp-gen OUTPUT.h\n");
                return 2;
        }
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx)
                return fail("seccomp_init", -ENOMEM);
        /* Only the native ABI: a 32-bit or x32 call would dodge the rules, so
         * libseccomp's default for a foreign architecture (kill) applies. */
        for (size_t i = 0; i < ARRAY_SIZE(denied_syscalls); i++) {
                int r = add_deny(ctx, denied_syscalls[i]);
                if (r < 0)
                        return fail(denied_syscalls[i], r);
        }
        /* New user namespaces would hand the sandbox fresh capabilities. */
        int r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                                 SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
        if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                     SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
        /* clone3 passes its flags in memory that seccomp cannot read: answer
         * ENOSYS so that libc falls back to clone, which we can inspect. */
        if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
        if (r < 0)
                return fail("namespace rules", r);
        int memfd = memfd_create("seccomp", MFD_CLOEXEC);
        if (memfd < 0 || (r = seccomp_export_bpf(ctx, memfd)) < 0)
                return fail("export", memfd < 0 ? -errno : r);
        struct stat st;
        if (fstat(memfd, &st) < 0 || st.st_size <= 0 || st.st_size % sizeof(struct sock_filter))
                return fail("export size", -EINVAL);
        size_t n = (size_t) st.st_size / sizeof(struct sock_filter);
        struct sock_filter *prog = malloc((size_t) st.st_size);
        if (!prog || pread(memfd, prog, (size_t) st.st_size, 0) != st.st_size)
                return fail("read back", -EIO);
        FILE *out = fopen(argv[1], "w");
        if (!out)
                return fail(argv[1], -errno);
        fprintf(out, "/* Generated by seccomp-gen (src/sandbox/seccomp-gen.c) at build time. */\n"
                     "#pragma once\n#include <linux/filter.h>\n\n"
                     "static const struct sock_filter lg_seccomp_filter[%zu] = {\n", n);
        for (size_t i = 0; i < n; i++)
                fprintf(out, "        {0x%04x, %u, %u, 0x%08x},\n", prog[i].code, prog[i].jt, prog[i].jf, prog[i].k);
        fprintf(out, "};\n");
        if (fclose(out) != 0)
                return fail(argv[1], -errno);
        seccomp_release(ctx);
        free(prog);
        return 0;
}
