/* Internals shared by the cgroup dispatcher (cgroup.c) and its two backends
 * (cgroup-v1.c, cgroup-v2.c): the ops table each backend fills in, the common
 * head of every handle, and small cgroupfs helpers. Nothing here is for
 * callers outside src/sandbox/cgroup*.c except the unit test, which uses the
 * ADOPT flag, the weight conversion and the command line check. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "sandbox/cgroup.h"

/* Flags for lg_cgroup_create_flags. */
enum {
        /* Accept a group directory that already exists instead of failing
         * with -EEXIST. Only the unit test uses it: on a fake cgroupfs made of
         * ordinary directories mkdir creates no control files, so the test
         * lays the group out in advance and then lets create fill it in.
         * Production code never passes it, so create always owns a fresh
         * group there. */
        LG_CGROUP_CREATE_ADOPT = 1u << 0,
};

/* The fields of a set_limits: the dispatcher passes only those that differ
 * from what the group has (a fresh group has no limit at all), so that a
 * change of one limit on the start path is one write. */
enum {
        LG_CG_MEMORY = 1u << 0,     /* memory_max (and swap with it) */
        LG_CG_CPU_MAX = 1u << 1,    /* cpu_quota_us and cpu_period_us */
        LG_CG_CPU_WEIGHT = 1u << 2, /* cpu_weight, never 0 here */
        LG_CG_PIDS = 1u << 3,       /* pids_max */
};

struct lg_cgroup_ops {
        enum lg_cgroup_version version;
        /* mkdir the group (and the parent on demand) and open it. */
        int (*create)(const char *mount_root, const char *parent, const char *name,
                      unsigned flags, lg_cgroup **ret, struct lg_error *err);
        int (*open)(const char *mount_root, const char *parent, const char *name,
                    lg_cgroup **ret);
        /* Write the fields in `which` (LG_CG_*), 0 as "no limit". */
        int (*set_limits)(lg_cgroup *cg, const struct lg_cgroup_limits *limits,
                          unsigned which, struct lg_error *err);
        int (*add_pid)(lg_cgroup *cg, pid_t pid);
        int (*dirfd)(lg_cgroup *cg);
        int (*get_stats)(lg_cgroup *cg, struct lg_cgroup_stats *ret);
        int (*kill_all)(lg_cgroup *cg);
        int (*destroy)(lg_cgroup *cg);
        /* Undo a create whose limits failed: rmdir only what create made.
         * Nothing has been added to the group yet, so nothing is killed. */
        void (*rollback)(lg_cgroup *cg);
        void (*free)(lg_cgroup *cg);
        int (*list)(const char *mount_root, const char *parent, char ***ret);
};

extern const struct lg_cgroup_ops lg_cgroup_v1_ops;
extern const struct lg_cgroup_ops lg_cgroup_v2_ops;

/* Head of every handle; each backend embeds it as its first member. The
 * strings are kept only to name files in error messages: all I/O goes
 * through directory fds. */
struct lg_cgroup {
        const struct lg_cgroup_ops *ops;
        char *root;
        char *parent;
        char *name;
        /* What the group's limits are, as far as known: set by create and
         * each set_limits that succeeded; an opened group's are unknown. */
        struct lg_cgroup_limits applied;
        bool applied_known;
};

/* create with flags (see LG_CGROUP_CREATE_ADOPT); lg_cgroup_create is this
 * with flags 0. */
int lg_cgroup_create_flags(const char *mount_root, enum lg_cgroup_version version,
                           const char *parent, const char *name,
                           const struct lg_cgroup_limits *limits, unsigned flags,
                           lg_cgroup **ret, struct lg_error *err);

/* cpu.weight (v2, 1..10000) to cpu.shares (v1, 2..262144) by the linear map
 * runc and crun use, so that weight 1 -> 2, 10000 -> 262144 and 100 -> 2597:
 *     shares = 2 + ((weight - 1) * 262142) / 9999
 * (crun's inverse is weight = 1 + ((shares - 2) * 9999) / 262142). */
uint64_t lg_cgroup_weight_to_shares(uint64_t weight);

/* Whether a kernel command line (the text of /proc/cmdline) turns socket
 * memory accounting off for v2 memory cgroups: a cgroup.memory= argument
 * with a "nosocket" item. Arguments after "--" are init's and do not count.
 * (cgroup-v2.c) */
bool lg_cg_cmdline_nosocket(const char *cmdline);

/* Fill the common head (strdup of the three strings). */
int lg_cg_head_init(struct lg_cgroup *h, const struct lg_cgroup_ops *ops,
                    const char *root, const char *parent, const char *name);
void lg_cg_head_done(struct lg_cgroup *h);

/* Open parent (a relative path such as "legion" or "a/b") under dirfd as an
 * O_PATH directory, creating missing components with mode 0755. *created is
 * set when at least the last component was made by this call. */
int lg_cg_open_parent(int dirfd, const char *parent, bool *created);

/* Read a file holding one unsigned decimal number. */
int lg_cg_read_u64_at(int dirfd, const char *file, uint64_t *ret);

/* Find the "key value" line of a flat keyed file (cpu.stat, memory.events,
 * memory.oom_control). A file without the key yields 0, because older
 * kernels simply lack some keys (oom_kill appeared in 4.13). */
int lg_cg_read_keyed_at(int dirfd, const char *file, const char *key, uint64_t *ret);

/* The same on a buffer already read: 1 found (*ret set), 0 not found. */
int lg_cg_keyed_find(const char *buf, const char *key, uint64_t *ret);

/* ENOENT -> 0 and *ret = 0: used for statistics the kernel or the enabled
 * controllers do not provide. */
int lg_cg_optional(int r, uint64_t *ret);

/* SIGKILL every pid listed in dirfd/cgroup.procs. Returns how many were
 * listed (0 = empty group) or -errno. */
int lg_cg_kill_procs_at(int dirfd);

/* Whether dirfd/cgroup.procs lists no process: 1 empty, 0 not, or -errno. */
int lg_cg_procs_empty_at(int dirfd);

/* rmdir parent_fd/name, retrying while it is busy for up to timeout_ns and
 * removing child groups on the way. ENOENT is success. */
int lg_cg_rmdir_at(int parent_fd, const char *name, uint64_t timeout_ns);

/* Names of the subdirectories of dirfd/path, NULL-terminated; returns the
 * count. A missing directory is an empty list. */
int lg_cg_list_dirs_at(int dirfd, const char *path, char ***ret);

/* Sleep for *step_us then double it, up to 10 ms: polling the cgroupfs for
 * "frozen" or "empty" usually succeeds within a few hundred microseconds, so
 * start small and back off. */
void lg_cg_backoff(unsigned *step_us);

/* Bounds on waiting for the kernel, in nanoseconds. */
#define LG_CG_FREEZE_TIMEOUT_NS (1000ULL * 1000 * 1000)
#define LG_CG_EMPTY_TIMEOUT_NS (2000ULL * 1000 * 1000)
#define LG_CG_RMDIR_TIMEOUT_NS (1000ULL * 1000 * 1000)
