/* After a test program that makes sandboxes: what its failed tests left
 * running (detachable sandboxes outlive their test), its state, and the
 * now empty parent cgroup of the run in each hierarchy. Static inline:
 * include in the test's .c. */
#pragma once

#include <dirent.h>
#include <stdio.h>
#include <unistd.h>

#include "common/util.h"
#include "sandbox/sandbox.h"

/* state_root: where the sandboxes' state lives (removed); cleanup_dir: a
 * directory to remove with it (NULL: none); parent: LEGION_CGROUP_PARENT. */
static inline void sandbox_cleanup(const char *state_root, const char *cleanup_dir, const char *parent) {
        char **left = NULL;
        lg_sandbox_gc(state_root, NULL);
        if (lg_sandbox_list(state_root, &left, NULL) > 0)
                for (char **id = left; *id; id++) {
                        lg_sandbox *sb = NULL;
                        if (lg_sandbox_adopt(state_root, *id, &sb, NULL) >= 0)
                                lg_sandbox_destroy(sb);
                }
        lg_sandbox_list_free(left);
        lg_rm_rf(state_root);
        if (cleanup_dir)
                lg_rm_rf(cleanup_dir);
        char path[512];
        snprintf(path, sizeof(path), "/sys/fs/cgroup/%s", parent);
        rmdir(path);
        DIR *d = opendir("/sys/fs/cgroup");
        for (struct dirent *de; d && (de = readdir(d));) {
                snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/%s", de->d_name, parent);
                if (de->d_name[0] != '.')
                        rmdir(path);
        }
        if (d)
                closedir(d);
}
