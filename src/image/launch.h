/* What a sandbox made from an image runs: the command line (command/args
 * against ENTRYPOINT/CMD, Kubernetes' rules), environment (image Env, then
 * the caller's, same name: the caller's wins; PATH defaulted), working
 * directory, user (image User or the caller's, names looked up in the
 * image's etc/passwd and etc/group). Pods (src/pod) and image instances
 * (src/node) both build their workload here, so the two agree.
 *
 * Threading: no shared state; any thread may call any function here.
 * lg_image_launch_build reads etc/passwd and etc/group from the image's
 * layer directories (small blocking reads, at most 4 MiB each): off the
 * event loop, or accept that cost where it is called today (pods).
 *
 * Memory and ownership: the caller's inputs (img, in and the strings they
 * point to) are only read during the call and may go right after it. A
 * built lg_image_launch owns every string it holds; free them with
 * lg_image_launch_clear. lg_image_launch_apply and lg_image_sandbox_layers
 * copy pointers, not strings: the source must outlive the struct filled.
 * The library never logs.
 *
 * Errors: >= 0 on success, negative errno with err filled:
 *   -EINVAL    no command at all (neither command nor args and the image has
 *              no ENTRYPOINT or CMD; message "no command specified: ..."),
 *              a working directory that is not absolute, a caller env entry
 *              that is not NAME=value
 *   -ENOENT    the user or group is not in the image's etc/passwd or
 *              etc/group (Kubernetes: CreateContainerConfigError)
 *   -ERANGE    the uid or gid is outside the 65536 ids a sandbox has
 *   -ENOMEM    out of memory */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"
#include "image/image.h"
#include "sandbox/sandbox.h"

/* The caller's part. Every field may be NULL (in itself may be NULL: the
 * image's everything). */
struct lg_image_launch_in {
        const char *const *command; /* replaces ENTRYPOINT, CMD is then dropped; NULL or empty = the image's */
        const char *const *args;    /* replaces CMD; NULL or empty = the image's */
        const char *const *env;     /* "K=V", NULL-terminated; may be NULL */
        const char *hostname;       /* adds HOSTNAME= unless image or env set it; NULL = none */
        const char *user;           /* "uid[:gid]" or "name[:group]"; NULL or "" = the image's User */
        const char *cwd;            /* NULL or "" = the image's WorkingDir ("/" when none); absolute */
};

struct lg_image_launch {
        char **argv, **env;         /* NULL-terminated */
        char *cwd;                  /* "/" when the image sets none */
        bool run_as_set;            /* false: neither image nor caller names a user (stays root, as
                                     * lg_sandbox_launch.run_as_set false does) */
        uid_t uid;
        gid_t gid;
};

/* Build ret (cleared first; left cleared on failure). Checked in this
 * order: command line, environment, working directory, user. */
int lg_image_launch_build(const struct lg_image *img, const struct lg_image_launch_in *in,
                          struct lg_image_launch *ret, struct lg_error *err);
/* Frees the members and zeroes l; NULL is fine. */
void lg_image_launch_clear(struct lg_image_launch *l);

/* Point sl's argv, envp, cwd and user at l's (hostname, logs and nofile
 * are the caller's to set). l must outlive sl's use. */
void lg_image_launch_apply(const struct lg_image_launch *l, struct lg_sandbox_launch *sl);

/* The root filesystem of a sandbox made from img: s->layers (img's layer
 * dirs, uppermost first), n_layers and rootfs_bytes (the writable upper;
 * 0 = the sandbox default). img must outlive s's use. */
void lg_image_sandbox_layers(const struct lg_image *img, uint64_t rootfs_bytes, struct lg_sandbox_spec *s);
