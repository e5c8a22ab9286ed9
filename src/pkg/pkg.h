/* Code packages: a content-addressed blob store for uploaded archives, safe
 * extraction of an archive into a read-only tree (bind-mounted at /code in
 * sandboxes), and packing a directory into a deterministic tar.gz.
 *
 * On-disk layout of a store (see docs/packages.md):
 *
 *   <dir>/lock                      flock: exclusive while cleaning at open,
 *                                   shared while a handle is open
 *   <dir>/blobs/sha256/<hex>        a blob, mode 0444, never half-written
 *   <dir>/blobs/sha256/.tmp-*       an upload in progress
 *   <dir>/extracted/<hex>/          the extracted tree of blob <hex>
 *   <dir>/extracted/.tmp-*          an extraction (or a deletion) in progress
 *
 * Temporary entries left by a crash are removed by lg_blobstore_open() when
 * no other handle has the store open (in this or another process).
 *
 * Functions return >= 0 on success and a negative errno on failure, and fill
 * the optional struct lg_error with a one-line message. Errors a caller maps
 * to an HTTP status:
 *   -EFBIG        a size limit (blob size, file, total, compression ratio)
 *   -E2BIG        too many entries in the archive ("package has more than
 *                 N entries")
 *   -ENAMETOOLONG a path longer or deeper than the limits
 *   -EINVAL       a bad digest, or an unsafe or unsupported archive entry
 *                 (the message names the entry and the reason), or a
 *                 package without any file
 *   -EBADMSG      not an archive, or a corrupt or truncated one; a digest
 *                 that does not match the expected one
 *   -ENOENT       no such blob
 *   -EEXIST       an extraction's destination exists and is not a directory
 *
 * A store handle holds only file descriptors and a limit: its functions may be
 * called from several threads at once. A writer is used by one thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cas/cas.h"
#include "common/util.h"

#define LG_BLOB_DEFAULT_MAX_BYTES (100ull << 20)
/* Entries a package may have by default: what a zip without Zip64 can count
 * (a 16-bit field), so any archive a plain zip tool makes fits, and well
 * above the production node_modules or site-packages of typical functions.
 * It bounds the work (files created, then removed) a hostile package can
 * cause. */
#define LG_PKG_DEFAULT_MAX_ENTRIES 65536ull

struct lg_blobstore;
struct lg_blob_writer;

/* Open (creating the directories) the store rooted at dir. */
int lg_blobstore_open(const char *dir, struct lg_blobstore **ret, struct lg_error *err);
void lg_blobstore_close(struct lg_blobstore *bs);

/* Largest blob accepted by put/write; 0 restores the default (100 MiB). */
void lg_blobstore_set_max_bytes(struct lg_blobstore *bs, uint64_t max_bytes);
uint64_t lg_blobstore_max_bytes(const struct lg_blobstore *bs);

/* Incremental upload: begin, write chunks as they arrive, then commit or
 * abort. The content goes to a temporary file in the blob directory while its
 * sha256 is computed; commit fsyncs it and renames it to its digest (if that
 * blob exists already, the copy is dropped and the same digest returned).
 *
 * A write that would take the blob over the limit fails with -EFBIG and
 * removes the temporary file at once; after any failed write, further writes
 * and commit return the same error. Commit and abort always free the writer;
 * abort(NULL) is a no-op. */
int lg_blob_begin(struct lg_blobstore *bs, struct lg_blob_writer **ret, struct lg_error *err);
int lg_blob_write(struct lg_blob_writer *w, const void *buf, size_t len, struct lg_error *err);
/* expect: NULL, or the digest the content must have (-EBADMSG otherwise,
 * and nothing is stored). */
int lg_blob_commit(struct lg_blob_writer *w, const char *expect, struct lg_digest *ret,
                   struct lg_error *err);
void lg_blob_abort(struct lg_blob_writer *w);
uint64_t lg_blob_written(const struct lg_blob_writer *w);

/* Store everything readable from fd (until EOF). */
int lg_blob_put_fd(struct lg_blobstore *bs, int fd, struct lg_digest *ret, struct lg_error *err);

/* Read-only fd of a blob (O_CLOEXEC). */
int lg_blob_open(struct lg_blobstore *bs, const char *digest, struct lg_error *err);
/* Path of a blob (whether or not it exists). -ENAMETOOLONG if cap is short. */
int lg_blob_path(struct lg_blobstore *bs, const char *digest, char *buf, size_t cap);
/* 1 if the blob exists, 0 if not, -EINVAL for a bad digest. */
int lg_blob_exists(struct lg_blobstore *bs, const char *digest);
int lg_blob_delete(struct lg_blobstore *bs, const char *digest, struct lg_error *err);
/* Every blob's digest, sorted; *ret is one allocation for free(). */
int lg_blob_list(struct lg_blobstore *bs, struct lg_digest **ret, size_t *n, struct lg_error *err);

/* Limits of an extraction. 0 in a field means its default; a limit can be
 * lifted by setting it to UINT64_MAX / UINT32_MAX. */
struct lg_pkg_limits {
        uint64_t max_total_bytes;   /* sum of file sizes, counted as written: 512 MiB */
        uint64_t max_file_bytes;    /* one file: 256 MiB (never above the total) */
        uint64_t max_entries;       /* archive entries: LG_PKG_DEFAULT_MAX_ENTRIES */
        uint32_t max_path_len;      /* bytes of a normalized path: 1024 */
        uint32_t max_depth;         /* components of a path: 64 */
        uint32_t max_ratio;         /* bytes out per byte of archive: 200 ... */
        uint64_t ratio_grace_bytes; /* ... checked once more than this came out: 16 MiB */
};

/* The limits with every 0 replaced by its default. */
void lg_pkg_limits_resolve(const struct lg_pkg_limits *in, struct lg_pkg_limits *out);

struct lg_pkg_info {
        uint64_t n_files;     /* regular files */
        uint64_t n_dirs;      /* directories, excluding the root */
        uint64_t n_symlinks;
        uint64_t total_bytes; /* sum of the regular files' sizes */
        char **top;           /* top-level names, sorted, NULL-terminated; bytes
                               * as in the archive, not necessarily UTF-8 */
        size_t n_top;
};
void lg_pkg_info_free(struct lg_pkg_info *info);

/* Extract the archive at blob_path (zip, tar, tar.gz/.bz2/.xz/.zst/.lz4)
 * into dest_dir, which must not be a path with a symlink the caller does not
 * trust. The tree is built in a temporary directory beside dest_dir and
 * renamed into place only when complete; on any failure nothing is left.
 * Returns 0 when extracted, 1 when dest_dir already existed (nothing is done
 * and info describes the existing tree) or was created meanwhile by a
 * concurrent extraction (whose tree is kept). limits and info may be NULL;
 * free info with lg_pkg_info_free(). Leftover temporaries of a crash are
 * removed by lg_blobstore_open() for trees under a store.
 *
 * Rejected (the whole package, -EINVAL, the message naming the entry):
 * absolute paths, `..` components, paths through a symlink or a file,
 * duplicate entries, symlinks whose target is absolute or leaves the tree,
 * hard links, devices, FIFOs, sockets. Modes are normalized (files 0644,
 * or 0755 if any x bit was set; directories 0755), owners are ignored. */
int lg_pkg_extract(const char *blob_path, const char *dest_dir, const struct lg_pkg_limits *limits,
                   struct lg_pkg_info *info, struct lg_error *err);

/* lg_pkg_extract() of a stored blob into <store>/extracted/<digest>. */
int lg_blob_extract(struct lg_blobstore *bs, const char *digest, const struct lg_pkg_limits *limits,
                    struct lg_pkg_info *info, struct lg_error *err);
int lg_blob_extracted_path(struct lg_blobstore *bs, const char *digest, char *buf, size_t cap);
/* Remove <store>/extracted/<digest> (renamed aside first, so a crash never
 * leaves a half-removed tree under the digest's name). */
int lg_blob_delete_extracted(struct lg_blobstore *bs, const char *digest, struct lg_error *err);

struct lg_pkg_pack_info {
        uint64_t n_files, n_dirs, n_symlinks, total_bytes;
        uint64_t n_skipped; /* symlinks leaving the tree, special files, filtered */
};

struct lg_pkg_pack_opts {
        /* Called for each entry (path relative to src_dir, no leading "./");
         * return true to leave it (and, for a directory, all below) out. */
        bool (*skip)(const char *relpath, bool is_dir, void *userdata);
        void *userdata;
};

/* Write a tar.gz of src_dir's contents to out_fd. The output depends only
 * on the names, contents, symlink targets and x bits: entries in bytewise
 * order, mtime 0, owner 0, modes 0644/0755. Symlinks are kept when their
 * target stays inside src_dir (the rule of lg_pkg_extract), otherwise
 * skipped, as are devices, FIFOs, sockets and out_fd's own file if it lies
 * inside src_dir. opts and info may be NULL. */
int lg_pkg_pack_dir(const char *src_dir, int out_fd, const struct lg_pkg_pack_opts *opts,
                    struct lg_pkg_pack_info *info, struct lg_error *err);
/* The same for several files and directories (`legion submit --file
 * --files`): each goes in under its last name ("data/" as data/..., "."
 * as the directory's own name), symlinks among the paths given followed;
 * -EINVAL when two would have the same name. */
int lg_pkg_pack_paths(const char *const *paths, size_t n, int out_fd, const struct lg_pkg_pack_opts *opts,
                      struct lg_pkg_pack_info *info, struct lg_error *err);
