/* Safe extraction of archives into directory trees, shared by code packages
 * (src/pkg: zip and tar uploads) and image layers (src/image: OCI tar
 * layers with whiteouts). One reader, one set of checks; the flags say what
 * an archive may hold and how it becomes a tree.
 *
 * Whatever the flags, nothing is ever written outside the tree:
 *   - every path is normalized and checked before anything is created: no
 *     `..` component, a leading '/' refused (or dropped with
 *     LG_EXTRACT_STRIP_SLASH), length and depth limits;
 *   - parents are entered one component at a time with O_NOFOLLOW, so no
 *     entry is ever created through a symlink (even one made earlier by the
 *     same archive) or a file;
 *   - files are created with O_CREAT|O_EXCL|O_NOFOLLOW;
 *   - hard links are refused, or (LG_EXTRACT_HARDLINKS) must name a file
 *     extracted earlier from the same archive, found by the same walk;
 *   - device nodes and sockets are never created: refused, or skipped with
 *     LG_EXTRACT_SKIP_SPECIAL;
 *   - sizes are counted as data comes out of the decompressor, never taken
 *     from headers: entries, file and total bytes, the uncompressed stream,
 *     the compression ratio;
 *   - the tree is built in a temporary directory (mode 0700) and renamed
 *     into place only once complete and synced; a failure leaves nothing.
 *
 * Threading: a call is self-contained (no globals); calls for different
 * trees may run in parallel threads. It blocks on disk I/O for as long as
 * the archive takes: never call it on an event loop (legiond runs it on
 * uv_queue_work).
 *
 * Errors: >= 0 or a negative errno, the struct lg_error filled with a
 * one-line message naming the entry ("entry `a/b`: ..."); the library never
 * logs. -EINVAL an unsafe or unsupported entry, -ENAMETOOLONG a path over
 * the limits, -EFBIG a size limit, -E2BIG too many entries, -EBADMSG not an
 * archive, corrupt data, or a stream digest that is not the expected one,
 * -ENOTSUP a compression that is not accepted.
 *
 * Memory: info holds no allocation; nothing is kept after a call. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"

enum lg_extract_flags {
        /* zip archives as well as tar, and bzip2, xz and lz4 besides gzip
         * and zstd. The archive must be a regular file (zip is read by its
         * central directory, as unzip does). */
        LG_EXTRACT_ZIP = 1 << 0,
        /* A leading '/' is dropped; else an absolute path is refused. */
        LG_EXTRACT_STRIP_SLASH = 1 << 1,
        /* Later entries replace earlier ones, as tar does (a directory over
         * a directory keeps it); else a duplicate entry is refused. */
        LG_EXTRACT_REPLACE = 1 << 2,
        /* Hard links to files earlier in the archive; else refused. */
        LG_EXTRACT_HARDLINKS = 1 << 3,
        /* Owners kept (0..65535, else 65534, nobody) and permission bits
         * kept but setuid and setgid; else owners are ignored and modes
         * normalized (files 0644, or 0755 with any x bit; directories
         * 0755). */
        LG_EXTRACT_OWNERS = 1 << 4,
        /* Symlinks with any target, kept as they are (nothing here follows
         * them; an absolute one resolves in a sandbox's root); else the
         * target must be relative and stay inside the tree
         * (lg_extract_symlink_unsafe). */
        LG_EXTRACT_ANY_SYMLINK = 1 << 5,
        /* Character and block devices and sockets are skipped and FIFOs
         * kept; else each is refused. */
        LG_EXTRACT_SKIP_SPECIAL = 1 << 6,
        /* OCI whiteouts: `.wh.NAME` becomes the overlayfs whiteout NAME (a
         * 0/0 character device), `.wh..wh..opq` marks its directory opaque
         * (trusted.overlay.opaque=y), other `.wh..wh.*` (aufs bookkeeping)
         * are skipped with what is below them. */
        LG_EXTRACT_WHITEOUTS = 1 << 7,
        /* The archive must hold a regular file (and at least one entry). */
        LG_EXTRACT_NEED_FILE = 1 << 8,
};

/* Code packages: zip or tar, strict. */
#define LG_EXTRACT_PACKAGE (LG_EXTRACT_ZIP | LG_EXTRACT_NEED_FILE)
/* OCI image layers: tar (plain, gzip, zstd) in overlayfs form. */
#define LG_EXTRACT_OCI_LAYER                                                                                        \
        (LG_EXTRACT_STRIP_SLASH | LG_EXTRACT_REPLACE | LG_EXTRACT_HARDLINKS | LG_EXTRACT_OWNERS |                   \
         LG_EXTRACT_ANY_SYMLINK | LG_EXTRACT_SKIP_SPECIAL | LG_EXTRACT_WHITEOUTS)

/* 0 in a field means its default; UINT64_MAX / UINT32_MAX lifts a limit. */
struct lg_extract_limits {
        uint64_t max_entries;       /* 65536 */
        uint64_t max_total_bytes;   /* sum of file sizes, as written: 512 MiB */
        uint64_t max_file_bytes;    /* one file: 256 MiB (never above the total) */
        uint64_t max_stream_bytes;  /* the uncompressed stream (tar only): no limit */
        uint32_t max_path_len;      /* bytes of a normalized path: 1024 */
        uint32_t max_depth;         /* components of a path: 64 */
        uint32_t max_ratio;         /* bytes out per byte of archive: 200 ... */
        uint64_t ratio_grace_bytes; /* ... checked once more than this came out: 16 MiB */
};

/* The limits with every 0 replaced by its default. */
void lg_extract_limits_resolve(const struct lg_extract_limits *in, struct lg_extract_limits *out);

struct lg_extract_opts {
        unsigned flags;                /* enum lg_extract_flags */
        struct lg_extract_limits lim;
        /* What the archive is, for messages: "package" (the default), or
         * "layer sha256:0123456789ab": "package has more than N entries". */
        const char *what;
        /* Prefix of entry messages ("layer ...: entry `x`: ..."); NULL for
         * none. */
        const char *entry_prefix;
        /* The sha256 (64 hex) the uncompressed stream must have, its
         * padding included (an OCI diff id); NULL for any. Not with
         * LG_EXTRACT_ZIP. */
        const char *expect_sha256;
        /* Called as the archive is read: bytes read so far, its size. */
        void (*progress)(void *ud, uint64_t done, uint64_t total);
        void *ud;
};

struct lg_extract_info {
        uint64_t n_entries;
        uint64_t n_files;      /* regular files */
        uint64_t n_dirs;       /* directories, the root excluded */
        uint64_t n_symlinks;
        uint64_t total_bytes;  /* sum of the regular files' sizes */
        uint64_t stream_bytes; /* the uncompressed stream (tar), else 0 */
        char stream_sha256[65]; /* its sha256 (tar), else "" */
};

/* Extract the archive read from archive_fd into a new directory
 * dst_dfd/dst_name. The tree is built in tmp_dfd/.tmp-x-<random> (tmp_dfd
 * on dst_dfd's file system; it may be dst_dfd), synced and renamed into
 * place with RENAME_NOREPLACE. Returns 0 when extracted, 1 when
 * dst_dfd/dst_name appeared meanwhile (a concurrent extraction: ours is
 * dropped and info describes ours). The root gets the archive's `.` entry's
 * mode and owner with LG_EXTRACT_OWNERS (else 0755, root-owned). info may
 * be NULL. */
int lg_extract_tree(int archive_fd, int tmp_dfd, int dst_dfd, const char *dst_name, const struct lg_extract_opts *o,
                    struct lg_extract_info *info, struct lg_error *err);

/* Why a symlink whose parent directory is parent_depth components below the
 * root may not point at target, or NULL if it may. The target must be
 * relative, and of the form (../)*(name/)*: its leading `..` components may
 * climb at most to the root, and no `..` may follow a name (after a name
 * that is itself a symlink, a lexical `..` would not be the real one).
 * `.` and empty components are ignored. The rule of packages, also used
 * when packing one (src/pkg/pack.c). */
const char *lg_extract_symlink_unsafe(size_t parent_depth, const char *target);

/* An archive entry's path in normal form: empty and `.` components go (a
 * leading '/' with them), `..` is refused, and so are a component over
 * NAME_MAX bytes, more than max_depth components and more than max_len
 * bytes (max_len < PATH_MAX). 0 with out and *depth (the components) set,
 * or -EINVAL / -ENAMETOOLONG with why set to the reason ("path has a `..`
 * component"). Also for names inside archives read without extracting
 * them (image import). */
int lg_extract_path(const char *raw, char *out, unsigned max_len, unsigned max_depth, size_t *depth, char *why,
                    size_t why_cap);

/* Remove dfd/name, a tree, without following symlinks or crossing mounts,
 * making directories writable first (layer trees may hold 0555 ones). */
int lg_extract_rm_tree_at(int dfd, const char *name);
