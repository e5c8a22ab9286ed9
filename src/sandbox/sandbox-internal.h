/* What the sandbox modules share and nobody else sees: the "plan" that the
 * owner computes before clone and the sandbox's first process carries out.
 *
 * Everything the child needs is prepared here, in the owner, so that the
 * child between clone and exec does nothing but system calls: no malloc, no
 * locks, nothing a multi-threaded owner could leave half-held. */
#pragma once

#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <linux/capability.h>
#include <linux/filter.h>

#include "common/proto.h"
#include "sandbox/cgroup.h"
#include "sandbox/sandbox.h"

/* The handle (sandbox.c: create, start and the rest; adopt.c: adopt and
 * detach). */
struct lg_sandbox {
        char id[65];
        char state_root[PATH_MAX];
        char dir[PATH_MAX];
        pid_t pid;
        int pidfd;
        int sync_fd;      /* owner end, until started */
        int control_fd;   /* owner end of the legion-init control socket */
        lg_cgroup *cg;
        struct lg_cgroup_limits limits;
        bool has_slot;
        unsigned slot;
        uid_t host_uid;
        bool started, exited;
        /* Detachable (spec->detachable): outlives this handle. Adopted:
         * made by another owner, so not our child (no waitid). */
        bool detachable, adopted;
        struct lg_sandbox_status status;

        /* What a launch needs from the spec: legion-init's fixed options
         * and the defaults of what the launch leaves out. */
        bool worker_control;
        size_t n_extra;
        bool capture_logs;
        uint64_t log_max;
        uint64_t nofile;
        /* The spec's own workload, sent by lg_sandbox_start. */
        struct lg_msg launch;
};

/* Host uid/gid ranges: sandbox N maps root to LG_UID_BASE + N * LG_UID_RANGE.
 * As many ranges as the 32-bit id space holds above the base, less the
 * last one, which would contain (uid_t) -1, "no id" to the kernel: 65,279,
 * so that a host can hold more than 10,000 sandboxes. */
#define LG_UID_BASE 0x01000000u
#define LG_UID_RANGE 65536u
#define LG_UID_SLOTS ((unsigned) ((0x100000000ull - LG_UID_BASE) / LG_UID_RANGE - 1))

struct lg_plan_bind {
        char src[PATH_MAX];
        char dst[PATH_MAX]; /* relative to the new root, no leading '/' */
        bool readonly;
        bool is_dir;
        bool private_inodes; /* an overlay, not a bind (struct lg_bind) */
};

struct lg_plan {
        /* Paths on the host, in the child's mount namespace. */
        char mnt[PATH_MAX];   /* scratch tmpfs mount point */
        char root[PATH_MAX];  /* the new root: mnt or mnt/root */
        char tmpfs_opts[128];
        char overlay_opts[8192];
        /* Layers, each mounted idmapped at <mnt>/l<N> before the overlay. */
        const char *const *layers;
        size_t n_layers;
        bool host_rootfs;
        bool readonly_root;
        bool has_lib64;
        struct lg_plan_bind *binds;
        size_t n_binds;
        const char *const *mount_points;
        size_t n_mount_points;
        char hostname[64];    /* for the host-rootfs /etc/hostname and /etc/hosts */
        char net_address[INET6_ADDRSTRLEN]; /* "" = none (spec.net_address) */
        char nameserver[INET6_ADDRSTRLEN];  /* "" = none (spec.nameserver) */
        uid_t host_uid;       /* root inside = this uid outside */

        bool new_net;
        int join_net_fd;      /* setns into these as host root; -1 = none */
        int join_ipc_fd;
        int sysctl_fd;        /* O_PATH of the host's /proc/sys, for the
                               * new network namespace's sysctls; -1 = none */
        bool new_cgroupns;
        uint64_t nofile, nproc; /* nofile: set by the child from the launch */
        uint64_t caps_keep;
        uint64_t caps_init;   /* held by legion-init only (not in the bounding
                               * set): CAP_SETUID/SETGID to drop to run_uid;
                               * set by the child from the launch */
        int cap_last;
        const struct sock_fprog *seccomp; /* NULL = none */

        /* fds the child uses; all CLOEXEC in the owner. */
        int init_fd;          /* O_PATH of legion-init */
        int userns_fd;        /* the sandbox's user namespace, maps written */
        int sync_fd;          /* child end: reads go-ahead bytes, writes reports */
        int control_fd;       /* becomes fd 3 in the sandbox */
        int attach_fd;        /* detachable: legion-init's listening socket
                               * (after the extra fds); -1 = none */
        int stdio[3];
        int extra[16];        /* become fds 4.. in the sandbox */
        size_t n_extra;
};

/* Report the child sends on sync_fd. */
enum lg_child_msg {
        LG_CHILD_USERNS = 'U', /* in its user and net ns: run the net hook */
        LG_CHILD_READY = 'R',  /* set up; waiting for start */
        LG_CHILD_ERROR = 'E',  /* followed by struct lg_child_error */
};
struct lg_child_error {
        int err;
        char msg[256];
};

/* Go-ahead bytes the owner sends. */
#define LG_OWNER_GO 'G'      /* in the cgroup: set up the rootfs */
#define LG_OWNER_MAPPED 'M'  /* net hook done */
/* Then, to start, the owner sends the launch (launch.c); EOF on the sync
 * socket (it is close-on-exec) means legion-init runs. */

/* launch.c: the workload hand-off on the sync socket. */
struct lg_msg;
/* Owner: send a launch payload (proto fields, "op=launch" first) and the
 * log fd (-1 = none) on the sync socket. */
int lg_launch_send(int sync_fd, const struct lg_msg *m, int log_fd);
/* What the child takes from a launch; the strings live in its memory. */
struct lg_child_launch {
        const char *hostname;
        const char *cwd;
        char *const *argv;    /* legion-init's whole command line */
        char *const *envp;
        uint64_t nofile;
        bool setids;          /* legion-init drops to a run user: keep SETUID/SETGID for it */
        int log_fd;           /* stdout and stderr; -1 = the spec's stdio */
};
/* Child: wait for the launch. 1 = received, 0 = EOF (the owner is gone or
 * destroys the sandbox), -errno with e filled. System calls only. */
int lg_launch_recv(int sync_fd, struct lg_child_launch *ret, struct lg_child_error *e);

/* rootfs.c: run in the child, as host root in its new mount namespace.
 * Builds the root, pivots into it. On failure fills e and returns -errno. */
int lg_rootfs_enter(const struct lg_plan *plan, struct lg_child_error *e);

/* security.c */
/* The compiled seccomp denylist, built once per process. */
int lg_seccomp_program(const struct sock_fprog **ret, struct lg_error *err);
int lg_cap_last(void);
/* In the child, before ready: rlimits but nofile, bounding set,
 * no_new_privs, the seccomp denylist but sethostname/setdomainname. */
int lg_security_prepare(const struct lg_plan *plan, struct lg_child_error *e);
/* After the launch (hostname set): nofile, a second seccomp filter for
 * sethostname/setdomainname, the final capability sets. */
int lg_security_finish(const struct lg_plan *plan, struct lg_child_error *e);
/* What legion-init may keep to drop to a run user (inheritable only). */
#define LG_CAPS_INIT ((1ULL << CAP_SETUID) | (1ULL << CAP_SETGID))

/* state.c: the state directory of each sandbox and the uid ranges. */
int lg_state_root(const char *spec_root, char *buf, size_t len);
int lg_uid_slot_alloc(const char *id, unsigned *ret);
void lg_uid_slot_free(unsigned slot);
/* The owner record lets gc tell a live owner from a dead one. */
int lg_state_write_owner(const char *dir, const char *cgroup_desc, unsigned slot);
int lg_state_owner_alive(const char *dir);
int lg_state_read(const char *dir, char *cgroup_desc, size_t len, unsigned *slot);
/* Field 22 of /proc/<pid>/stat: with the pid, names one process for good. */
int lg_process_start_time(pid_t pid, unsigned long long *ret);
/* The uid range's holder becomes pid (a detachable sandbox's legion-init,
 * which outlives the owner that allocated it). */
int lg_uid_slot_hold(unsigned slot, pid_t pid, const char *id);
/* The cgroup of an owner record's description; *ret NULL for a sandbox
 * made without one. */
int lg_state_open_cgroup(const char *desc, lg_cgroup **ret);
/* Remove what is left of a sandbox whose legion-init is dead or killed:
 * its cgroup (killing what is in it), uid range (unless free_slot is
 * false: a zombie still holds it) and state directory. */
int lg_state_remove(const char *dir, bool free_slot);

/* The record of a detachable sandbox, <dir>/sandbox: what an adopting
 * owner needs that the owner record does not hold. Written at create and
 * whenever the limits change. */
struct lg_state_record {
        pid_t pid;                 /* legion-init, and its start time */
        unsigned long long start;
        uid_t host_uid;
        bool worker_control, capture_logs;
        size_t n_extra;
        uint64_t log_max, nofile;
        struct lg_cgroup_limits limits;
};
int lg_state_write_record(const char *dir, const struct lg_state_record *rec);
int lg_state_read_record(const char *dir, struct lg_state_record *rec);
/* 1 if dir holds a detachable sandbox whose legion-init still runs. */
int lg_state_adoptable(const char *dir);
/* The socket a new owner connects to, relative to the state directory. */
#define LG_ATTACH_SOCKET "control.sock"

bool lg_sandbox_valid_id(const char *id);

/* adopt.c */
/* Bound at <dir>/control.sock, 0600, listening: legion-init's attach
 * socket. Returns the fd (close-on-exec) or -errno with err filled. */
int lg_attach_listen(const char *dir, struct lg_error *err);
/* Write a detachable sandbox's record from its handle. */
int lg_sandbox_write_record(const lg_sandbox *sb);
/* wait_pidfd for a sandbox that is not our child: wait (or, with WNOHANG,
 * look) until its legion-init has exited; si_pid stays 0 while it runs.
 * Its status comes from op=exit; si says SIGKILL when there was none. */
int lg_adopted_wait(int pidfd, siginfo_t *si, int flags);
/* Whether the process is still there: running, or a zombie its parent
 * has not reaped (which still holds its uid). */
bool lg_pidfd_alive(int pidfd);

/* Set in the child for the failure report; returns -err. */
int lg_child_fail(struct lg_child_error *e, int err, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
