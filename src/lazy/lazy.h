/* Lazy layers: build the lazy form of a layer's tree (an EROFS metadata
 * image, the BLOB with every regular file's data chunk by chunk, and the
 * chunk table of the BLOB), and mount / unmount one. The fetcher, the
 * image store and packages build on this (docs/lazy-images.md).
 *
 * What survives a build (mkfs.erofs 1.5 with --preserve-mtime, checked by
 * tests/unit/test-lazy-build.c on this kernel): regular files (bytes,
 * mode incl. setuid/sticky, owner, mtime to the nanosecond), empty files,
 * directories, symlinks, hardlinks (one inode, its link count), fifos,
 * sockets, character and block devices (so 0/0 whiteouts) and xattrs of
 * every namespace mkfs can read (user.*, trusted.* incl. trusted.overlay.*,
 * security.*). Limits: atime and ctime are not kept (mkfs stores one
 * time); files with holes come back dense (holes read as zeros, as
 * they did; mkfs dedups identical chunks within a layer, so runs of zeros
 * cost one chunk per layer); a tree without file data gives an empty
 * BLOB and a table of no chunks (it mounts). The tree must be readable
 * by the caller (root for owners and trusted.* xattrs to be kept).
 *
 * Threading: everything here blocks (fork/exec and wait of mkfs.erofs,
 * mount(2), reading the whole BLOB) and must run off any event loop (a
 * thread-pool job). Functions keep no global state; builds of different
 * out_dirs may run at once. Nothing calls back.
 *
 * Errors: >= 0 or a negative errno, with the optional struct lg_error
 * filled with a one-line message; the library never logs. -ENOTSUP: the
 * node cannot do it (no mkfs.erofs on PATH: "lazy images need mkfs.erofs
 * (Debian package erofs-utils)", or a kernel without erofs mounted from a
 * file); -EINVAL: a bad argument (chunk size, a path with a comma); -EIO:
 * mkfs.erofs failed (its last line of stderr in the message) or the built
 * image is not what we expect; else the errno of a system call.
 *
 * Memory: nothing is returned that must be freed; results are copied into
 * the caller's struct. Root (CAP_SYS_ADMIN) is needed to mount. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"
#include "lazy/chunks.h"
#include "lazy/chunkstore.h"

#define LG_LAZY_MKFS "mkfs.erofs"
#define LG_LAZY_META "meta.erofs"
#define LG_LAZY_BLOB "blob"
#define LG_LAZY_CHUNKS "chunks"

struct lg_lazy_build_result {
        uint64_t blob_size;    /* bytes of BLOB */
        uint64_t meta_size;    /* bytes of meta.erofs */
        uint64_t n_chunks;     /* chunks in the table */
        uint64_t unique_bytes; /* bytes of the table's distinct chunks (by sha256) */
        char blob_digest[72];  /* "sha256:<hex>" of BLOB */
};

/* 0 when this node can mount lazy layers (the kernel has erofs), and with
 * need_mkfs also build them (mkfs.erofs on PATH); else -ENOTSUP saying
 * what is missing. Cheap; does not mount. */
int lg_lazy_check(bool need_mkfs, struct lg_error *err);

/* From the tree src_dir (overlay form) write out_dir/meta.erofs,
 * out_dir/blob and out_dir/chunks (out_dir is created if missing; files of
 * these names in it are replaced); put every chunk into store when it is
 * not NULL, then sync the store. chunk_size: a power of two in
 * 4 KiB..4 MiB. The result is mounted in a private temporary directory
 * below out_dir while its chunks are found, and unmounted before the
 * return, also on failure. ret may be NULL. */
int lg_lazy_build(const char *src_dir, const char *out_dir, uint32_t chunk_size, lg_chunk_store *store,
                  struct lg_lazy_build_result *ret, struct lg_error *err);

/* mount(2) meta at dir as erofs with device=blob, read-only (no other
 * flags: a layer's setuid files and devices work as from an extracted
 * layer). blob must not contain a comma. */
int lg_lazy_mount(const char *meta, const char *blob, const char *dir, struct lg_error *err);
/* Unmount dir; lazily (MNT_DETACH) when it is busy. -EINVAL when dir is
 * not a mount point. */
int lg_lazy_umount(const char *dir, struct lg_error *err);
