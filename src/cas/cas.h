/* The content-addressed store shared by code packages (src/pkg) and images
 * (src/image): blobs named by the sha256 of their content.
 *
 * On-disk layout below a store's root (what src/pkg and src/image kept
 * before they shared this module; an existing $LEGION_HOME loads as is):
 *
 *   <root>/lock                 flock: exclusive while cleaning at open and
 *                               during lg_cas_lock_alone, shared otherwise
 *   <root>/blobs/sha256/<hex>   a blob, mode 0444, never half-written
 *   <root>/<tmp_dir>/.tmp-*     a write in progress (tmp_dir is the
 *                               caller's: the packages store keeps them in
 *                               blobs/sha256, the image store in tmp)
 *
 * Writes are atomic: content streams into a temporary file while its sha256
 * is computed, is fsynced, made read-only and renamed to its digest with
 * RENAME_NOREPLACE, then the directory is fsynced. A digest that exists
 * already makes the copy redundant (dedup). Temporaries a crash leaves are
 * removed by lg_cas_open when no other handle has the store open, in this
 * or another process.
 *
 * Digests are 64 lowercase hex characters (struct lg_digest); the callers
 * add "sha256:" where their formats want it.
 *
 * Threading: a store handle holds file descriptors and a limit; its
 * functions may be called from several threads at once. A writer is used
 * by one thread at a time. Nothing here runs a loop or calls back except
 * the open and GC hooks, synchronously.
 *
 * Errors: >= 0 or a negative errno, with the optional struct lg_error
 * filled with a one-line message; the library never logs. The errors a
 * caller maps to a status:
 *   -EINVAL  a malformed digest
 *   -ENOENT  no such blob
 *   -EFBIG   a write over the writer's limit
 *   -EBADMSG content that does not match its digest (a writer's expected
 *            digest, or lg_cas_verify of a damaged blob); a blob that is not
 *            a regular file
 *   -EBUSY   lg_cas_lock_alone while another handle has the store open
 *
 * Memory: handles and writers are the caller's to close / commit or abort
 * (close(NULL) and abort(NULL) are no-ops); lg_cas_list and lg_cas_read
 * return one malloc'd block for free(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define LG_DIGEST_HEX_LEN 64
#define LG_CAS_TMP_PREFIX ".tmp-"

/* A sha256 digest as 64 lowercase hex characters and a NUL. */
struct lg_digest {
        char hex[LG_DIGEST_HEX_LEN + 1];
};

/* True for exactly 64 characters of [0-9a-f]. */
bool lg_digest_valid(const char *hex);
/* The sha256 of a buffer as 32 bytes: 0, or -EIO when libcrypto fails. */
int lg_sha256(const void *buf, size_t len, uint8_t md[32]);
/* 32 digest bytes <-> 64 lowercase hex; from_hex: -EINVAL unless
 * lg_digest_valid(hex). */
void lg_digest_from_bytes(const uint8_t md[32], struct lg_digest *ret);
int lg_digest_to_bytes(const char *hex, uint8_t md[32]);

typedef struct lg_cas lg_cas;
typedef struct lg_cas_writer lg_cas_writer;

struct lg_cas_options {
        /* Where writers make their temporary files, relative to the root
         * and on its file system (created 0700 if missing): "tmp" unless
         * given. Its LG_CAS_TMP_PREFIX entries are removed at open when the
         * store is not open elsewhere. */
        const char *tmp_dir;
        /* The default limit of a writer: 100 MiB unless given. */
        uint64_t max_bytes;
        /* Called at open, under the exclusive lock, when no other handle
         * has the store open (after the store's own temporaries went): for
         * the caller's own crash leftovers. A negative return fails the
         * open. May be NULL. */
        int (*on_alone)(int rootfd, void *ud, struct lg_error *err);
        void *ud;
};

/* Open (creating the directories) the store rooted at dir; o may be
 * NULL. */
int lg_cas_open(const char *dir, const struct lg_cas_options *o, lg_cas **ret, struct lg_error *err);
void lg_cas_close(lg_cas *cas);
/* The root (absolute when dir was) and an fd of it, both owned by the
 * handle. */
const char *lg_cas_root(const lg_cas *cas);
int lg_cas_rootfd(const lg_cas *cas);

/* The default limit of writers; 0 restores 100 MiB. */
void lg_cas_set_max_bytes(lg_cas *cas, uint64_t max_bytes);
uint64_t lg_cas_max_bytes(const lg_cas *cas);

/* Incremental write: begin, write chunks as they come, commit or abort.
 * max_bytes: 0 for the store's default. A write over the limit fails with
 * -EFBIG and drops the temporary file at once; after any failed write,
 * further writes and the commit return that error again. expect: NULL, or
 * the digest the content must have (the commit fails with -EBADMSG and
 * stores nothing otherwise). Commit returns 0 when stored, 1 when the blob
 * was there already, and always frees the writer. */
int lg_cas_begin(lg_cas *cas, uint64_t max_bytes, lg_cas_writer **ret, struct lg_error *err);
int lg_cas_write(lg_cas_writer *w, const void *buf, size_t len, struct lg_error *err);
int lg_cas_commit(lg_cas_writer *w, const char *expect, struct lg_digest *ret, struct lg_error *err);
void lg_cas_abort(lg_cas_writer *w);
uint64_t lg_cas_written(const lg_cas_writer *w);
/* A whole buffer / everything readable from fd until EOF, with the
 * store's default limit. 0 stored, 1 present already. */
int lg_cas_put(lg_cas *cas, const void *buf, size_t len, struct lg_digest *ret, struct lg_error *err);
int lg_cas_put_fd(lg_cas *cas, int fd, struct lg_digest *ret, struct lg_error *err);

/* A read-only fd of a blob (O_CLOEXEC). */
int lg_cas_get(lg_cas *cas, const char *hex, struct lg_error *err);
/* Its size: 0, -ENOENT, -EINVAL (bad digest), -EBADMSG (not a regular
 * file). size may be NULL. */
int lg_cas_stat(lg_cas *cas, const char *hex, uint64_t *size);
/* The whole blob, NUL-terminated, when it is at most max bytes (-EFBIG
 * otherwise). */
int lg_cas_read(lg_cas *cas, const char *hex, uint64_t max, char **ret, size_t *len, struct lg_error *err);
/* Hash the stored content again: 0, or -EBADMSG when it no longer matches
 * its name. */
int lg_cas_verify(lg_cas *cas, const char *hex, struct lg_error *err);
/* <root>/blobs/sha256/<hex>, whether or not it exists. -EINVAL,
 * -ENAMETOOLONG. */
int lg_cas_path(const lg_cas *cas, const char *hex, char *buf, size_t cap);
int lg_cas_remove(lg_cas *cas, const char *hex, struct lg_error *err);
/* Every blob's digest, sorted. */
int lg_cas_list(lg_cas *cas, struct lg_digest **ret, size_t *n, struct lg_error *err);

/* Remove every blob keep() does not claim. Run it under lg_cas_lock_alone
 * when other processes may be between writing a blob and recording that
 * they use it. */
struct lg_cas_gc_result {
        uint64_t removed, bytes_freed;
};
int lg_cas_gc(lg_cas *cas, bool (*keep)(const char *hex, void *ud), void *ud, struct lg_cas_gc_result *ret,
              struct lg_error *err);

/* Take the store's lock exclusively (no other handle, in any process, has
 * the store open): 0, or -EBUSY. lg_cas_unlock_alone goes back to the
 * shared lock every handle holds. */
int lg_cas_lock_alone(lg_cas *cas, struct lg_error *err);
void lg_cas_unlock_alone(lg_cas *cas);
