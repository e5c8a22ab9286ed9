/* The FUSE protocol spoken directly on /dev/fuse (<linux/fuse.h>), for the
 * lazy fetcher's one-directory filesystem of layer blobs
 * ($LEGION_HOME/run/lazy/blobs/<layerhex>, docs/lazy-images.md).
 *
 * Not libfuse: the filesystem must outlive its server. legiond keeps the
 * /dev/fuse fd; a fetcher started after one died serves the same connection
 * without INIT and asks the kernel to send again what the dead one had read
 * (lg_lazy_fuse_resend, FUSE_NOTIFY_RESEND, kernel >= 6.9). So node ids and
 * file handles carry no server state: the ops below map a node id to a
 * layer by a stable function of its name, and any server answers for nodes
 * another handed out.
 *
 * The tree is a root directory (node 1) of regular files, read-only, mode
 * 0444, owner root. Operations answered: INIT, LOOKUP, GETATTR, OPEN (with
 * FOPEN_DIRECT_IO: no page cache of ours under EROFS's), READ, RELEASE,
 * FLUSH, FORGET, BATCH_FORGET, STATFS, OPENDIR, READDIR, RELEASEDIR,
 * INTERRUPT (ignored: a read ends within its deadline anyway), DESTROY;
 * anything else ENOSYS.
 *
 * Threading: lg_fuse_server_start starts `threads` threads reading the
 * device; the ops are called from them concurrently and must be
 * thread-safe. lg_fuse_server_stop may be called from any thread.
 *
 * Memory: the server copies its config; ops->ud stays the caller's and must
 * outlive the server. The fd stays the caller's (never closed here).
 * Errors: >= 0 or a negative errno, with struct lg_error; nothing logs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"

/* Open /dev/fuse (O_CLOEXEC) and mount(2) it at dir as "fuse" with
 * fd=N,rootmode=40000,user_id=0,group_id=0,allow_other (read-only, nosuid,
 * nodev, noexec). allow_other because sandbox processes run with mapped
 * uids and EROFS reads the blob file in their context. *fd: the device,
 * the caller's to keep and serve. */
int lg_lazy_fuse_mount(const char *dir, int *fd, struct lg_error *err);

/* Ask the kernel to queue again every request read from fd's connection
 * but not answered (FUSE_NOTIFY_RESEND): what a dead server had taken.
 * 0 or -errno (-EINVAL from kernels before 6.9, which lack it). */
int lg_lazy_fuse_resend(int fd);

#define LG_FUSE_LEAVE (-EINPROGRESS)

struct lg_fuse_ops {
        /* A name in the root: its node id (> 1) and size; -ENOENT. */
        int (*lookup)(void *ud, const char *name, uint64_t *node, uint64_t *size);
        /* A node's size; -ENOENT when no file has that node. */
        int (*getattr)(void *ud, uint64_t node, uint64_t *size);
        /* Up to len bytes at off into buf: the count (less than len only at
         * the end of the file), or -errno (the READ answers it), or
         * LG_FUSE_LEAVE: no answer, the request stays with the kernel for
         * the next server (a server stopping for a restart). */
        ssize_t (*read)(void *ud, uint64_t node, uint64_t off, size_t len, void *buf);
        /* The root's entry with the smallest node id above `after`: 1 with
         * node, name (NUL-terminated, < 256 bytes) filled; 0 at the end. */
        int (*next)(void *ud, uint64_t after, uint64_t *node, char name[256]);
        void *ud;
};

struct lg_fuse_config {
        int fd;                 /* /dev/fuse, mounted */
        bool resume;            /* a connection another server set up: send
                                 * FUSE_NOTIFY_RESEND first, expect no INIT */
        unsigned threads;       /* readers of the device, default 8 */
        struct lg_fuse_ops ops;
};

typedef struct lg_fuse_server lg_fuse_server;

int lg_fuse_server_start(const struct lg_fuse_config *cfg, lg_fuse_server **ret, struct lg_error *err);
/* An fd readable once the server has ended: stopped, or the connection
 * went away (unmounted or aborted: -ENODEV from the device). */
int lg_fuse_server_done_fd(lg_fuse_server *s);
/* 0 when stopped or unmounted, else the error that ended the server. */
int lg_fuse_server_status(lg_fuse_server *s, struct lg_error *err);
/* End the readers (each finishes the request it is answering). */
void lg_fuse_server_stop(lg_fuse_server *s);
/* Stop, join the threads and free. NULL is fine. */
void lg_fuse_server_free(lg_fuse_server *s);
