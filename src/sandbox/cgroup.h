/* cgroup manager: one interface over two backends, cgroup v1 (a controller
 * per hierarchy under <root>/<controller>/, as on hybrid hosts) and cgroup v2
 * (the unified hierarchy). Each sandbox gets one group named after it under a
 * common parent (by default "legion"). The backends are ops tables in
 * cgroup-v1.c and cgroup-v2.c; this header is all a caller sees.
 *
 * The mount root is a parameter so that tests can point the manager at a
 * fake cgroupfs tree made of ordinary directories and files. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"

enum lg_cgroup_version {
        LG_CGROUP_V1 = 1,
        LG_CGROUP_V2 = 2,
};

struct lg_cgroup_limits {
        uint64_t memory_max;    /* bytes; 0 = no limit. With a limit, swap is off
                                 * and socket buffers count (on v1 against a
                                 * limit of their own of the same size, for
                                 * sockets made after the first limit). */
        uint64_t cpu_quota_us;  /* CPU time per period; 0 = no quota */
        uint64_t cpu_period_us; /* 0 = 100000 */
        uint64_t cpu_weight;    /* 1..10000 (v2 scale, 100 = default); 0 = leave */
        uint64_t pids_max;      /* 0 = no limit */
};

struct lg_cgroup_stats {
        uint64_t cpu_usage_ns;
        uint64_t memory_current; /* socket buffers included, on v1 too */
        uint64_t memory_peak;    /* v1: sum of the memory and socket peaks */
        uint64_t oom_kills;
        uint64_t pids_current;
};

typedef struct lg_cgroup lg_cgroup;

/* Work out which layout mount_root ("/sys/fs/cgroup" normally) has: v2 when
 * mount_root itself is the unified hierarchy (cgroup.controllers present at
 * its top), v1 when it holds per-controller directories (memory/, cpu/, ...). */
int lg_cgroup_detect(const char *mount_root, enum lg_cgroup_version *ret);

/* Create <parent>/<name> (parent created on demand, controllers enabled on the
 * way down on v2) and apply limits. Fails with -EEXIST if the group exists. */
int lg_cgroup_create(const char *mount_root, enum lg_cgroup_version version,
                     const char *parent, const char *name,
                     const struct lg_cgroup_limits *limits, lg_cgroup **ret,
                     struct lg_error *err);

/* Open an existing group (used to clean up groups left by a crashed owner). */
int lg_cgroup_open(const char *mount_root, enum lg_cgroup_version version,
                   const char *parent, const char *name, lg_cgroup **ret);

/* Move a process into the group (every controller on v1). */
int lg_cgroup_add_pid(lg_cgroup *cg, pid_t pid);

/* On v2, an O_DIRECTORY fd of the group usable with clone3's
 * CLONE_INTO_CGROUP; -EOPNOTSUPP on v1. The fd stays owned by cg. */
int lg_cgroup_dirfd(lg_cgroup *cg);

/* Change limits of a live group (startup boost lowers cpu later). Only
 * the limits that differ from those create or the last set_limits applied
 * are written (all of them on a group from lg_cgroup_open). */
int lg_cgroup_set_limits(lg_cgroup *cg, const struct lg_cgroup_limits *limits,
                         struct lg_error *err);

int lg_cgroup_get_stats(lg_cgroup *cg, struct lg_cgroup_stats *ret);

/* SIGKILL every process in the group and wait (bounded) until it is empty:
 * cgroup.kill on v2 when the kernel has it, else freeze, kill, thaw. */
int lg_cgroup_kill_all(lg_cgroup *cg);

/* Kill everything, then rmdir the group in every hierarchy. The handle is
 * still to be freed with lg_cgroup_free. Removing a group that is already
 * gone is success. */
int lg_cgroup_destroy(lg_cgroup *cg);

/* Free the handle (NULL is fine). Does not touch the cgroupfs. */
void lg_cgroup_free(lg_cgroup *cg);

/* List the child group names under parent (for garbage collection).
 * *ret is a NULL-terminated array to free with lg_strv_free. */
int lg_cgroup_list(const char *mount_root, enum lg_cgroup_version version,
                   const char *parent, char ***ret);


static inline void lg_cgroup_freep(lg_cgroup **p) { lg_cgroup_free(*p); }
#define _cleanup_cgroup_ _cleanup_(lg_cgroup_freep)
