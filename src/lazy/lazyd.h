/* legiond's side of lazy layers (docs/lazy-images.md): the node's one
 * lazy fetcher process (`legiond lazy-fetcher`, src/lazy/fetcher*.c) and
 * the EROFS mounts of lazy layers whose blobs it serves.
 *
 * The fetcher serves the FUSE filesystem $LEGION_HOME/run/lazy/blobs (one
 * file per layer blob) on a /dev/fuse fd that is both the fetcher's fd 3
 * and kept here, so the connection outlives either of them:
 * - the fetcher outlives legiond as detachable sandboxes do (its own
 *   session and its own cgroup <parent>/lazy-fetcher-<id>, out of
 *   legiond's; pid in run/lazy/fetcher.pid). A new lg_lazyd takes over a
 *   living one: it checks /proc/PID/cmdline is this home's fetcher and
 *   takes the device back with pidfd_getfd(2); the mounts stay as they are.
 * - a fetcher that exits is started again with --resume on the kept fd
 *   (the kernel sends again what the dead one had read: reads do not
 *   fail), at once the first time, then after a pause doubling up to 5 s
 *   while it keeps dying within a second of its start.
 * - with neither alive the FUSE connection is gone: a new lg_lazyd
 *   unmounts the dead FUSE mount and every EROFS mount under the home
 *   (their blobs went with it), so that the image store mounts its lazy
 *   layers again (lg_image_lazy_attach_all) on a new connection.
 * Nothing is started until the first attach (or a fetcher is adopted): a
 * node without lazy layers has no fetcher and no FUSE mount.
 * lg_lazyd_stop_all (legiond --stop-all) first aborts the FUSE connection
 * (every read it holds fails with an error, so that the sandboxes reading
 * can be killed: one waiting on a fetcher that never answers cannot), then
 * ends the fetcher and removes its mounts and cgroup.
 *
 * Threading: lg_lazyd_new and lg_lazyd_free on the loop's thread; the
 * fetcher is watched there (a pidfd polled on the loop). attach, detach
 * and status block (a round trip to the fetcher's control socket
 * run/lazy/fetcher.sock, a mount) and may be called from any thread,
 * several at once: the image store's thread-pool jobs.
 *
 * Callbacks: cfg.log is called on the loop's thread, never from inside an
 * API call, with one line about the fetcher (started, taken over, exited
 * and started again): the library never logs.
 *
 * Memory: lg_lazyd copies its config and home. lg_lazyd_free leaves the
 * fetcher and the mounts for the next legiond; its handles close on the
 * loop's next run (run it once more, as legiond does before exiting).
 *
 * Errors: >= 0 or a negative errno with err filled:
 *   -ENOENT     no lazy form of that layer in $LEGION_HOME/lazy/layers
 *   -EINVAL     a layer hex that is not 64 lowercase hex digits
 *   -ENODEV     no FUSE here (/dev/fuse), -ENOTSUP no EROFS
 *   -ETIMEDOUT  the fetcher did not answer
 *   -EPROTO     an answer of the fetcher that does not parse
 *   -EIO        the fetcher's own refusal (its message in err) */
#pragma once

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "common/util.h"
#include "image/image.h"

typedef struct lg_lazyd lg_lazyd;

struct lg_lazyd_config {
        /* Hydration cap of the fetcher in bytes per second (its --rate);
         * 0 = no background hydration, only reads and prefetch. */
        uint64_t rate;
        /* A read whose chunk cannot be had within this long answers EIO
         * (the fetcher's --timeout-ms); 0 = 10000. */
        unsigned fetch_timeout_ms;
        /* The binary started as `EXE lazy-fetcher --home H --fd 3 ...`;
         * NULL = /proc/self/exe (legiond itself). */
        const char *exe;
        /* One line for legiond's log (on the loop's thread); may be NULL. */
        void (*log)(void *ud, const char *line);
        void *ud;
};

/* Defaults of legiond's --lazy-rate and --lazy-fetch-timeout-ms. */
#define LG_LAZYD_DEFAULT_RATE (64ull << 20)
#define LG_LAZYD_DEFAULT_TIMEOUT_MS 10000u

/* Make run/lazy/blobs, take over a living fetcher of home (or clean what a
 * dead one left). */
int lg_lazyd_new(uv_loop_t *loop, const char *home, const struct lg_lazyd_config *cfg, lg_lazyd **ret,
                 struct lg_error *err);

/* Start the fetcher if none runs, tell it about layer_hex
 * ({"op":"attach"}), then mount $LEGION_HOME/lazy/layers/<hex>/meta.erofs
 * as EROFS at mountpoint (made if missing) with the blob
 * run/lazy/blobs/<hex> as its device. Already mounted there: success. */
int lg_lazyd_attach(lg_lazyd *d, const char *layer_hex, const char *mountpoint, struct lg_error *err);
/* Unmount mountpoint (lazily when busy; not mounted is fine), then tell
 * the fetcher to drop the layer (no fetcher running is fine). */
int lg_lazyd_detach(lg_lazyd *d, const char *layer_hex, const char *mountpoint, struct lg_error *err);
/* The fetcher's figures of the layer ({"op":"status"}). */
int lg_lazyd_status(lg_lazyd *d, const char *layer_hex, struct lg_image_lazy_status *ret, struct lg_error *err);

/* The fetcher's pid (0: none runs now) and how many times it was started
 * again after exiting, for tests and the log. */
pid_t lg_lazyd_fetcher_pid(lg_lazyd *d);
unsigned lg_lazyd_restarts(lg_lazyd *d);

/* Close the handle; the fetcher and the mounts stay. NULL is fine. */
void lg_lazyd_free(lg_lazyd *d);

/* legiond --stop-all: end home's fetcher (SIGTERM, SIGKILL after 2 s),
 * unmount every EROFS mount under home and the FUSE mount, remove the
 * fetcher's cgroup and pid file. *stopped: 1 when a fetcher was running.
 * Nothing there is success. */
int lg_lazyd_stop_all(const char *home, int *stopped, struct lg_error *err);
