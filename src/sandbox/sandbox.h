/* The sandbox runtime: create, start, wait for, signal, measure and destroy
 * an isolated sandbox described by a spec.
 *
 * A sandbox is a process tree under legion-init (PID 1) in its own user, pid,
 * mount, ipc, uts, cgroup and (by default) network namespaces, limited by a
 * cgroup, rooted in an overlay of read-only layers plus a size-limited tmpfs
 * upper (or, with no layers, a tmpfs root showing the host's /usr read-only),
 * with seccomp, no_new_privs, no capabilities and rlimits.
 *
 * Lifecycle, as in the OCI runtimes: lg_sandbox_create() builds everything
 * that does not depend on the workload and leaves the sandbox's first
 * process waiting for it; lg_sandbox_start() (the spec's workload) or
 * lg_sandbox_start_with() (one given now) lets it go. Destroy kills every process,
 * removes the cgroup and the state directory; the mounts die with the mount
 * namespace. Sandboxes die with their owner (PR_SET_PDEATHSIG and EOF on
 * the control socket), and lg_sandbox_gc() removes what a dead owner left.
 *
 * Detachable sandboxes (spec.detachable) outlive their owner once started,
 * so that a daemon can be restarted or upgraded, even after kill -9,
 * without killing its workloads:
 * - Owner gone (exit, crash, lg_sandbox_detach): legion-init keeps the
 *   sandbox running and listens on <state>/sandboxes/<id>/control.sock
 *   (0600, bound by the owner, the path outside the sandbox's mount
 *   namespace; init takes only peers outside its pid namespace).
 * - lg_sandbox_adopt() connects there and gives a handle equivalent to the
 *   created one: signal, control socket (exec, specialize), stats, limits,
 *   mount, poll/wait with the workload's status, destroy. The newest
 *   controller wins: an older handle's control socket reads EOF.
 * - A workload that exits while nobody is attached: init kills the rest,
 *   then keeps its exit status and waits for an owner; the adopter reads
 *   op=exit and wait/poll report the status as for a created sandbox.
 * - Not adoptable (legion-init gone, record damaged, no answer): adopt
 *   destroys what is left (cgroup, uid range, state) and says why.
 * - Not started yet (a warm sandbox waiting for its launch): dies with its
 *   owner as before; gc removes it.
 * An adopted sandbox is not the adopter's child: the host's init (or the
 * nearest subreaper) reaps its legion-init after it exits; the status
 * comes from legion-init's op=exit, or reads as killed (SIGKILL) when
 * legion-init itself was killed. lg_sandbox_list() names the sandboxes a
 * previous owner left; adopt and destroy is how to stop one on purpose.
 *
 * Handles are not thread-safe; one thread drives one sandbox. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"

struct lg_bind {
        const char *src; /* host path */
        const char *dst; /* absolute path inside the sandbox */
        bool readonly;
        /* A read-only directory seen through an overlay of its own rather
         * than bound: the same files and page cache, but inodes of this
         * sandbox's own, so an inotify or fanotify watch inside does not
         * see the host or other sandboxes open them (a bind shares the
         * host's inodes, and their events). The price: the overlay caches
         * lookups, so a file the host adds later may stay unseen. src must
         * not contain ':', ',' or '\\' (overlay option syntax). */
        bool private_inodes;
};

/* Called in the owner after the sandbox's namespaces exist and before its
 * first process continues: the place to move a veth into the network
 * namespace (/proc/<pid>/ns/net). Return 0 or -errno. */
typedef int (*lg_net_hook)(pid_t pid, void *userdata, struct lg_error *err);

struct lg_sandbox_spec {
        const char *id;          /* [A-Za-z0-9_.-]{1,64}; NULL = random */
        const char *state_root;  /* NULL = $LEGION_RUN_DIR or /run/legion */

        /* Root filesystem: read-only layers, uppermost first, joined under a
         * writable tmpfs upper of rootfs_bytes. No layers = host rootfs:
         * a tmpfs root with /usr of the host bound read-only. */
        const char *const *layers;
        size_t n_layers;
        uint64_t rootfs_bytes;   /* 0 = 64 MiB */
        bool readonly_root;      /* root mounted read-only; /tmp stays writable */
        const struct lg_bind *binds;
        size_t n_binds;
        /* Empty directories made before the root turns read-only: where
         * lg_sandbox_mount() will later attach code or data. */
        const char *const *mount_points;
        size_t n_mount_points;

        const char *const *argv; /* NULL = no workload: init idles (placeholder) */
        const char *const *envp; /* NULL = a minimal PATH/HOME/TERM environment */
        const char *cwd;         /* NULL = "/" */
        const char *hostname;    /* NULL = the id, cut to 63 chars */

        /* Resources. 0 means "no limit" / "default". A sandbox with no limit
         * at all gets no cgroup (its pid namespace holds it together); then
         * lg_sandbox_stats answers -ENODATA. */
        uint64_t memory_bytes;
        uint64_t cpu_millis;     /* quota: 500 = half a CPU */
        uint64_t cpu_weight;     /* 1..10000, 100 = default */
        uint64_t pids_max;
        uint64_t nofile;         /* RLIMIT_NOFILE, 0 = 1024 */

        bool share_net;          /* false: own network namespace with lo up */
        /* Join another sandbox's network / IPC namespace (an fd of
         * /proc/<pid>/ns/net, ns/ipc) instead of making one: the containers
         * of a pod. -1 = own (lg_sandbox_spec_init sets -1). join_netns_fd
         * wins over share_net. The fds stay the caller's. */
        int join_netns_fd;
        int join_ipcns_fd;
        lg_net_hook net_hook;
        void *net_hook_data;
        /* A sandbox with an address on the node's network (net.h): its
         * address and the resolver it may reach (the DNS forwarder on the
         * gateway, dns.h), both IP literals. Either set: /etc/hosts has
         * localhost and "<net_address>\t<hostname>", /etc/resolv.conf
         * "nameserver <nameserver>" (host rootfs: nsswitch resolves hosts
         * by files then dns). With layers the files are written into the
         * writable upper (the layers stay untouched), replacing the
         * image's. NULL, NULL = as without a network: the host rootfs gets
         * 127.0.1.1 for the hostname and an empty resolv.conf, an image
         * keeps its own files. */
        const char *net_address;
        const char *nameserver;

        uint64_t caps_keep;      /* bit mask of CAP_* to keep; 0 = drop all */
        bool no_seccomp;         /* for debugging only */

        /* stdio: with capture_logs, stdout/stderr go to <state>/stdout.log and
         * stderr.log capped at log_max_bytes each (0 = 1 MiB) and stdin is
         * /dev/null. Otherwise the sandbox uses stdio_fds (-1 = /dev/null). */
        bool capture_logs;
        uint64_t log_max_bytes;
        /* With capture_logs: stdout and stderr both go, interleaved in
         * order, to this host file instead (O_APPEND|O_CREAT, 0640; kept
         * after destroy), capped at log_max_bytes like the state logs. */
        const char *log_file;
        int stdio_fds[3];

        /* The workload (and processes started with op=exec) run as this
         * uid/gid inside the sandbox, with no supplementary groups;
         * legion-init stays root and drops for them. */
        bool run_as_set;
        uid_t run_uid;
        gid_t run_gid;

        /* Give the workload a control socket (fd 3) for specialize. */
        bool worker_control;

        /* Outlives its owner once started (see the top of this file). */
        bool detachable;

        /* Further fds handed to the workload as fds 4, 5, ... (at most 16),
         * e.g. the listening socket a function instance serves on. */
        const int *extra_fds;
        size_t n_extra_fds;

        /* Host uid/gid that root inside maps to, with 65536 ids.
         * 0 = allocate a free range per sandbox. */
        uid_t host_uid_base;
};

/* Fill a spec with defaults (stdio to /dev/null, no limits). */
void lg_sandbox_spec_init(struct lg_sandbox_spec *spec);

enum lg_exit_kind {
        LG_EXIT_RUNNING = 0,
        LG_EXIT_CODE,      /* exited normally with code */
        LG_EXIT_SIGNAL,    /* killed by signal */
        LG_EXIT_OOM,       /* killed by the memory cgroup: "OOMKilled" */
};

struct lg_sandbox_status {
        enum lg_exit_kind kind;
        int code;    /* exit code for LG_EXIT_CODE */
        int signal;  /* for LG_EXIT_SIGNAL / LG_EXIT_OOM */
        /* Conventional shell exit status: code, or 128 + signal. */
        int shell_status;
};

struct lg_sandbox_stats {
        uint64_t cpu_usage_ns;
        uint64_t memory_current;
        uint64_t memory_peak;
        uint64_t oom_kills;
        uint64_t pids_current;
};

typedef struct lg_sandbox lg_sandbox;

int lg_sandbox_create(const struct lg_sandbox_spec *spec, lg_sandbox **ret,
                      struct lg_error *err);
/* Start the workload of the spec (argv, envp, cwd, hostname, run user,
 * stdio). Errors of those (a working directory that does not exist)
 * show here. */
int lg_sandbox_start(lg_sandbox *sb, struct lg_error *err);

/* A workload given at start instead of the spec's: a sandbox made before
 * its workload was known (a warm pod sandbox) receives it here. Its
 * first process applies it (hostname, working directory, stdio, rlimits,
 * run user), then drops capabilities, sets no_new_privs and seccomp, and
 * executes legion-init: the workload never runs with more than a spec'd
 * sandbox's would. The spec's argv, envp, cwd, hostname and run user are
 * ignored; its binds, layers, namespaces, caps_keep, worker_control and
 * extra fds stay. With the host rootfs, /etc/hostname and /etc/hosts
 * keep the spec's hostname (they are written at create); the kernel's
 * hostname is the launch's. At most 1 MiB (LG_PROTO_MAX) of command line
 * and environment. */
struct lg_sandbox_launch {
        const char *const *argv; /* NULL = no workload: init idles */
        const char *const *envp; /* NULL = a minimal PATH/HOME/LANG environment */
        const char *cwd;         /* NULL = "/" */
        const char *hostname;    /* NULL = the sandbox id, cut to 63 chars */
        bool run_as_set;         /* as in the spec */
        uid_t run_uid;
        gid_t run_gid;
        /* stdout and stderr, interleaved in order, to this host file
         * (opened O_APPEND|O_CREAT, 0640, by the library) or to log_fd (the
         * caller's; -1 = none), capped at log_max_bytes (0 = 1 MiB) by
         * legion-init; stdin is /dev/null. Neither: the spec's stdio. */
        const char *log_file;
        int log_fd;
        uint64_t log_max_bytes;
        uint64_t nofile;         /* RLIMIT_NOFILE; 0 = the spec's */
};
/* Zero, log_fd -1. */
void lg_sandbox_launch_init(struct lg_sandbox_launch *l);
int lg_sandbox_start_with(lg_sandbox *sb, const struct lg_sandbox_launch *l, struct lg_error *err);

/* Set every cgroup limit of a sandbox (made with at least one limit, so
 * that it has a cgroup; -ENODATA otherwise), as in the spec: memory bytes
 * (swap off), CPU quota in millicores, weight 1..10000 (0 = default),
 * pids; 0 = none. Meant for the time between create and start (a warm
 * sandbox taken for a workload), but works at any time. */
int lg_sandbox_set_limits(lg_sandbox *sb, uint64_t memory_bytes, uint64_t cpu_millis, uint64_t cpu_weight,
                          uint64_t pids_max, struct lg_error *err);

/* Block until the workload (and so the sandbox) has exited. */
int lg_sandbox_wait(lg_sandbox *sb, struct lg_sandbox_status *status);
/* A pidfd of legion-init that polls readable when the sandbox exited. */
int lg_sandbox_pidfd(lg_sandbox *sb);
/* Non-blocking: 1 and status filled if exited, 0 if still running. */
int lg_sandbox_poll(lg_sandbox *sb, struct lg_sandbox_status *status);

/* Send a signal to legion-init, which forwards it to the workload. */
int lg_sandbox_signal(lg_sandbox *sb, int sig);
/* -ENODATA for a sandbox made without limits (it has no cgroup). */
int lg_sandbox_stats(lg_sandbox *sb, struct lg_sandbox_stats *ret);

/* Change the CPU quota (millicores, 0 = none) of a running sandbox: startup
 * boost gives an instance more CPU for its first seconds, then this. */
int lg_sandbox_set_cpu(lg_sandbox *sb, uint64_t cpu_millis, struct lg_error *err);
/* Change the CPU weight (1..10000, 100 = default) of a running sandbox. */
int lg_sandbox_set_cpu_weight(lg_sandbox *sb, uint64_t weight, struct lg_error *err);

/* Bind host path src at dst inside a running sandbox (delayed mount: the
 * code package of a placeholder that is being specialized). dst is created
 * if missing. Done by a short-lived helper that enters the sandbox's mount
 * namespace, so the caller may be multi-threaded. */
int lg_sandbox_mount(lg_sandbox *sb, const char *src, const char *dst, bool readonly,
                     struct lg_error *err);

/* The host end of the control socket (legion-init protocol). Owned by sb. */
int lg_sandbox_control_fd(lg_sandbox *sb);

const char *lg_sandbox_id(const lg_sandbox *sb);
pid_t lg_sandbox_pid(const lg_sandbox *sb);       /* legion-init, host pid */
uid_t lg_sandbox_host_uid(const lg_sandbox *sb);  /* what root inside maps to */
const char *lg_sandbox_state_dir(const lg_sandbox *sb);

/* Kill every process, remove the cgroup, state directory and uid range, and
 * free the handle. NULL is fine. Returns the first error met, having still
 * tried every step. */
int lg_sandbox_destroy(lg_sandbox *sb);

/* On cgroup v1, moving a process into a cgroup (every sandbox with
 * limits) takes the kernel's cgroup threadgroup rwsem for writing, and the
 * writer first waits for a normal RCU grace period unless that rwsem is in
 * its "favor dynamic modifications" mode: a millisecond when the machine is
 * idle, tens of them when another CPU is busy in the kernel (a network
 * namespace being torn down). This turns the mode on for as long as the
 * returned fd stays open, by holding a detached mount (fsmount, attached
 * nowhere) of an empty named v1 hierarchy made with the favordynmods
 * option; closing the fd, or the process dying, destroys the hierarchy and
 * turns the mode back off. Host-wide price: forks and exits use a shared
 * counter instead of a per-CPU one while it is on. Turning it on waits for
 * one grace period. Returns the fd, or -EOPNOTSUPP where it is not needed
 * (cgroup v2 clones straight into the cgroup) or the kernel has no such
 * option (before 6.0), or another -errno. */
int lg_sandbox_favor_dynmods(struct lg_error *err);

/* A helper process that must outlive its owner as detachable sandboxes
 * do (legiond's lazy-image fetcher, src/lazy/lazyd.h): moved into a group
 * <parent>/<name> of its own, made with no limits when missing, out of the
 * owner's group, so that a service manager stopping the owner's group
 * leaves it running. name follows lg_sandbox_valid_id. */
int lg_sandbox_cgroup_place(const char *name, pid_t pid, struct lg_error *err);
/* Kill whatever is left in that group and remove it; a group that is not
 * there is success. */
int lg_sandbox_cgroup_remove(const char *name, struct lg_error *err);

/* Remove sandboxes under state_root whose owner process is gone: kill what
 * is left of them, remove their cgroups, state and uid ranges. Detachable
 * sandboxes whose legion-init still runs are left to be adopted. Returns
 * the number cleaned or -errno. */
int lg_sandbox_gc(const char *state_root, struct lg_error *err);

/* Take over a detachable sandbox left by an owner that is gone (or that
 * still runs: the newest owner wins), by id under state_root (NULL = as
 * in the spec). Blocks until legion-init answers on its attach socket
 * (at most LG_SANDBOX_ADOPT_TIMEOUT_MS). On failure the sandbox is
 * destroyed (-ENOENT: there was none) and err says why. */
#define LG_SANDBOX_ADOPT_TIMEOUT_MS 10000
int lg_sandbox_adopt(const char *state_root, const char *id, lg_sandbox **ret, struct lg_error *err);

/* Free the handle and leave the sandbox running for the next owner to
 * adopt: for an owner about to exit (a still-running owner would keep
 * its legion-init as an unreaped child once it exits). A sandbox that is
 * not detachable, not started or has exited is destroyed instead. */
int lg_sandbox_detach(lg_sandbox *sb);

/* The ids of the sandboxes under state_root whose owner is gone: the ones
 * to adopt, or to adopt and destroy. *ret is NULL-terminated, freed with
 * lg_sandbox_list_free. Returns how many. */
int lg_sandbox_list(const char *state_root, char ***ret, struct lg_error *err);
void lg_sandbox_list_free(char **ids);

/* "Exited(0)", "Signaled(TERM)", "OOMKilled": how status is shown to people. */
int lg_sandbox_status_string(const struct lg_sandbox_status *st, char *buf, size_t len);

static inline void lg_sandbox_destroyp(lg_sandbox **p) { lg_sandbox_destroy(*p); }
#define _cleanup_sandbox_ _cleanup_(lg_sandbox_destroyp)
