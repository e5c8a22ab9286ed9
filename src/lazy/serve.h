/* What a node serves to other nodes as a registry mirror that holds only
 * blobs (docs/lazy-images.md, "Fetching from another legiond"): the bytes
 * of a blob named by its digest, whole or by range, found among
 *   1. the image store's blobs (images/blobs/sha256/<hex>);
 *   2. the small files of lazy layers: lazy/layers/<hex>/{meta.erofs,
 *      chunks,prefetch} and lazy/prefetch/<blob hex>, by the sha256 of
 *      their current content;
 *   3. a lazy layer's BLOB (the digest in its source.json), assembled
 *      chunk by chunk from the node's chunk store, every chunk verified
 *      against its sha256; a chunk not local is read through the node's
 *      own FUSE blob file run/lazy/blobs/<layer hex>, which makes the
 *      node's fetcher fetch it (the node acts as a cache), and verified
 *      again.
 * legiond's /v2 routes (src/api/api-v2.c) translate HTTP to this.
 *
 * Threading: lg_lazy_serve_new/free and the *_async functions run on the
 * loop given at new; their callbacks run on that loop, never from inside
 * the call. The blocking functions (lg_lazy_serve_open, _read) may run on
 * any thread, several at once on one lg_lazy_serve; one blob handle is
 * used by one thread at a time (it keeps the last chunk it read).
 *
 * Memory: strings passed in are copied. A blob handle is the caller's to
 * close (lg_lazy_serve_blob_close, NULL is fine) when no read of it is in
 * flight; every handle must be closed and every async call have called
 * back before lg_lazy_serve_free. The library never logs.
 *
 * Errors: >= 0 or a negative errno with err filled:
 *   -EINVAL   a malformed digest ("sha256:" and 64 lowercase hex only)
 *   -ENOENT   the node has no such blob
 *   -ERANGE   a read past the end
 *   -EBADMSG  bytes that do not match their sha256 (a chunk)
 *   -EIO      a chunk the node cannot have (not local, no fetcher) or a
 *             file that changed under the read */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"

typedef struct lg_lazy_serve lg_lazy_serve;
typedef struct lg_lazy_serve_blob lg_lazy_serve_blob;

struct lg_lazy_serve_config {
        uv_loop_t *loop;          /* for the *_async functions; may be NULL without them */
        const char *images_dir;   /* $LEGION_HOME/images (blobs/sha256/<hex>); NULL: none */
        const char *lazy_dir;     /* $LEGION_HOME/lazy; NULL: no lazy layers */
        const char *fuse_dir;     /* $LEGION_HOME/run/lazy/blobs; NULL: local chunks only */
};

int lg_lazy_serve_new(const struct lg_lazy_serve_config *cfg, lg_lazy_serve **ret, struct lg_error *err);
void lg_lazy_serve_free(lg_lazy_serve *s);

/* Find digest ("sha256:<hex>"): *ret the handle, *size its bytes. */
int lg_lazy_serve_open(lg_lazy_serve *s, const char *digest, lg_lazy_serve_blob **ret, uint64_t *size,
                       struct lg_error *err);
/* Exactly len bytes from off into buf (off + len <= size, else -ERANGE). */
int lg_lazy_serve_read(lg_lazy_serve_blob *b, uint64_t off, void *buf, size_t len, struct lg_error *err);
void lg_lazy_serve_blob_close(lg_lazy_serve_blob *b);
/* "file" or "lazy": what the blob is (for logs and tests). */
const char *lg_lazy_serve_blob_kind(const lg_lazy_serve_blob *b);

/* Threads of libuv's pool the async calls take at most; more calls wait
 * their turn (in order). */
#define LG_LAZY_SERVE_THREADS 2

/* The same off the loop (uv_queue_work). The callbacks get the status,
 * the error (valid during the callback) and, for open, the handle and
 * size (the callback owns the handle). 0 when queued; < 0 (nothing
 * queued, no callback) when the work cannot be queued. */
typedef void (*lg_lazy_serve_open_cb)(void *ud, int status, lg_lazy_serve_blob *b, uint64_t size,
                                      const struct lg_error *err);
typedef void (*lg_lazy_serve_read_cb)(void *ud, int status, const struct lg_error *err);
int lg_lazy_serve_open_async(lg_lazy_serve *s, const char *digest, lg_lazy_serve_open_cb cb, void *ud);
/* buf must stay valid until cb. */
int lg_lazy_serve_read_async(lg_lazy_serve_blob *b, uint64_t off, void *buf, size_t len, lg_lazy_serve_read_cb cb,
                             void *ud);
