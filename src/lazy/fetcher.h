/* The lazy fetcher: the process that serves every lazy layer's BLOB file
 * ($LEGION_HOME/run/lazy/blobs/<layerhex>, a FUSE file EROFS reads as its
 * device) from the node's chunk store, fetching missing chunks by HTTP
 * range from the layer's registry, verified, before answering
 * (docs/lazy-images.md, DESIGN-13.md "P2 fetcher").
 *
 *   legiond lazy-fetcher --home H --fd N [--resume] [--rate BYTES_PER_S]
 *                        [--timeout-ms MS]
 *
 * Read path: a READ's chunks come from the store (verified by it); a miss
 * is fetched now together with up to 1 MiB of the following missing chunks
 * of the layer in one range request, each chunk verified against its
 * sha256 and put in the store, then served. One fetch per chunk at a time
 * (readers of a chunk being fetched wait for that fetch). A READ that
 * cannot have all its chunks within the timeout (default 10 s), or whose
 * chunk fails verification, is answered EIO: never zeros, never bytes not
 * verified. A layer whose source is {"local":true} is never fetched.
 *
 * Background: for every known layer, the chunks of its prefetch record
 * first (4 in parallel), then, at --rate (default 64 MiB/s; 0: none), every
 * other missing chunk; all of it pauses while a READ waits for a miss.
 * The first read of each chunk is recorded (layers/<hex>/accessed and
 * prefetch/<blobhex>, u32 LE chunk indexes) for the next attachment.
 *
 * Threading: everything here may be called from any thread; the fetcher
 * runs its own fetch threads. Memory: handles are the caller's to free.
 * Errors: >= 0 or a negative errno with struct lg_error; nothing logs. */
#pragma once

#include <stdint.h>

#include "common/util.h"
#include "lazy/fuse-proto.h"

struct lg_fetcher_config {
        const char *home;       /* $LEGION_HOME */
        unsigned timeout_ms;    /* a READ's deadline; 0: 10000 */
        uint64_t rate;          /* hydration bytes/s; 0: none */
        unsigned fetch_threads; /* misses fetched at once; 0: 8 */
        unsigned bg_threads;    /* prefetch and hydration; 0: 4 */
};

typedef struct lg_fetcher lg_fetcher;

/* Open the chunk store, load every layer of $home/lazy/layers that has
 * `chunks` and `source.json`, start the fetch threads. */
int lg_fetcher_new(const struct lg_fetcher_config *cfg, lg_fetcher **ret, struct lg_error *err);
/* From now on a READ that would wait for a fetch returns LG_FUSE_LEAVE:
 * unanswered, the kernel keeps it for the next fetcher (--resume). Called
 * on SIGTERM before the FUSE server stops, so that a stop ends at once and
 * a restart costs no reader an error. */
void lg_fetcher_stop(lg_fetcher *f);
/* Stop the threads and free. A fetch still under way after a second (a
 * registry that hangs) is not waited for: the fetcher is then left to the
 * process's end, not freed. NULL is fine. */
void lg_fetcher_free(lg_fetcher *f);

/* The FUSE operations over the layer table, for lg_fuse_server_start. */
void lg_fetcher_fuse_ops(lg_fetcher *f, struct lg_fuse_ops *ops);

/* Know (again) layer hex: rescan, load it, start its background fetching.
 * -ENOENT when lazy/layers/<hex> lacks chunks or source.json, -EEXIST when
 * its node id is another layer's. */
int lg_fetcher_attach(lg_fetcher *f, const char *hex, struct lg_error *err);
/* Forget layer hex (its background work stops; a read of it fails) until
 * it is attached again. -ENOENT when unknown. */
int lg_fetcher_detach(lg_fetcher *f, const char *hex, struct lg_error *err);

struct lg_fetcher_status {
        uint64_t chunks, local_chunks, bytes, local_bytes;
        uint64_t fetched_bytes; /* by this fetcher, verified */
        uint64_t misses;        /* READ chunks that had to be fetched */
        uint64_t errors;        /* READs answered EIO, chunks failing verification */
};
int lg_fetcher_status(lg_fetcher *f, const char *hex, struct lg_fetcher_status *ret, struct lg_error *err);

/* Control socket ($home/run/lazy/fetcher.sock, stream, one JSON object per
 * line each way): {"op":"attach"|"detach"|"status","layer":hex},
 * {"op":"ping"}. Served by a thread of its own. */
typedef struct lg_fetcher_ctl lg_fetcher_ctl;
int lg_fetcher_ctl_start(lg_fetcher *f, const char *path, lg_fetcher_ctl **ret, struct lg_error *err);
void lg_fetcher_ctl_free(lg_fetcher_ctl *c);
/* One request line (without its newline) to its answer (malloc'ed, no
 * newline); what the socket thread does with each line. */
char *lg_fetcher_ctl_answer(lg_fetcher *f, const char *line, size_t len);

/* `legiond lazy-fetcher ...` (argv[0] is "lazy-fetcher"): the process. */
int lg_lazy_fetcher_main(int argc, char **argv);
