/* OCI images: a content-addressed store of blobs and extracted layers on
 * disk, import of image archives (docker save, OCI layout / oci-archive),
 * pull from an OCI registry (pull.c, on the client of registry.h), and
 * the image config that a sandbox is made from. docs/images.md describes the layout and formats.
 *
 * On-disk layout under <dir> ($LEGION_HOME/images):
 *
 *   lock                         flock: shared while a handle is open,
 *                                exclusive while cleaning at open / GC
 *   index.lock                   flock: exclusive while images.json changes
 *   blobs/sha256/<hex>           manifests, configs and compressed layers,
 *                                mode 0444, verified against their digest
 *   layers/<hex>/                the extracted tree of layer blob <hex>, in
 *                                overlayfs form (whiteouts as 0/0 char
 *                                devices, opaque dirs with the
 *                                trusted.overlay.opaque xattr), read-only,
 *                                used as an overlay lower dir by sandboxes
 *   layers/<hex>.json            { "diffId": "sha256:...", "size": N }, and
 *                                "lazy": true for a lazy layer: then
 *                                layers/<hex>/ is the mount point of its
 *                                EROFS image (lazy/layers/<hex>/, see
 *                                lg_image_store_set_lazy)
 *   images.json                  name -> manifest digest; replaced by
 *                                rename, so it is never half-written
 *   tmp/                         downloads and extractions in progress;
 *                                emptied at open
 *
 * Names are normalized as Docker does: "busybox" is
 * "docker.io/library/busybox:latest"; "127.0.0.1:5000/x:1" keeps its
 * registry. An image is also found by its id (the config digest,
 * "sha256:<hex>" or a unique prefix of at least 12 hex digits), also once
 * no name points at it: when a name moves to another image (a tag pulled
 * again), the image it left stays, dangling, for what runs it by id.
 *
 * Threading: a store handle may be used from several threads at once
 * (legiond imports and pulls on its thread pool); the index is updated
 * under an internal mutex plus the flock, so a CLI and a daemon may share a
 * store.
 *
 * Errors: >= 0 on success, negative errno with err filled:
 *   -ENOENT    no such image or blob
 *   -EINVAL    bad reference, manifest, config or unsafe archive entry
 *              (the message names the entry and the reason)
 *   -EBADMSG   corrupt archive; a digest that does not match
 *   -EFBIG     a size limit (blob, layer, total, compression ratio)
 *   -ENOTSUP   a media type, platform or manifest schema not supported
 *   -EACCES    registry authentication failed (401/403)
 *   -EHOSTUNREACH / -ECONNREFUSED / -ETIMEDOUT  registry unreachable
 *   -EBUSY     image in use (rm without force) */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"
#include "image/registry.h" /* struct lg_registry_auth */

struct lg_mirrors; /* image/mirrors.h */

typedef struct lg_image_store lg_image_store;

/* What a sandbox needs of an image, and what `legion image inspect` shows. */
struct lg_image {
        char id[72];            /* "sha256:<config hex>" */
        char digest[72];        /* "sha256:<manifest hex>" */
        char **names;           /* normalized names pointing at it, NULL-terminated */
        bool dangling;          /* no names: its last one moved to another image
                                 * (Docker's `<none>`); found by id, GC drops it
                                 * unless kept */
        uint64_t size;          /* sum of the compressed layer sizes */
        int64_t created;        /* from the config, seconds since the epoch; 0 = unknown */
        char os[32], architecture[32];
        /* Host paths of the extracted layers, uppermost first (as
         * lg_sandbox_spec.layers wants them). */
        char **layer_dirs;
        size_t n_layers;
        char **layer_digests;   /* "sha256:..." compressed, same order */
        /* From the image config; NULL when the image does not set them. */
        char **entrypoint;      /* NULL-terminated */
        char **cmd;             /* NULL-terminated */
        char **env;             /* "K=V", NULL-terminated */
        char *working_dir;
        char *user;             /* "uid[:gid]" or "name[:group]", as in the config */
};
void lg_image_free(struct lg_image *img);
static inline void lg_image_freep(struct lg_image **p) { lg_image_free(*p); }
#define _cleanup_image_ _cleanup_(lg_image_freep)

/* Progress of an import or pull, for progress bars: phase is "read",
 * "download", "extract" or "done"; what names the blob or file; done and
 * total are bytes (total 0 when unknown). Called from the thread doing the
 * work, often; keep it cheap. */
typedef void (*lg_image_progress_cb)(void *ud, const char *phase, const char *what,
                                     uint64_t done, uint64_t total);

int lg_image_store_open(const char *dir, lg_image_store **ret, struct lg_error *err);
void lg_image_store_close(lg_image_store *st); /* NULL is fine */
static inline void lg_image_store_closep(lg_image_store **p) { lg_image_store_close(*p); }
#define _cleanup_image_store_ _cleanup_(lg_image_store_closep)

/* Normalize a reference: "busybox" -> "docker.io/library/busybox:latest";
 * keeps "@sha256:..." digests. -EINVAL for a malformed one. */
int lg_image_normalize(const char *ref, char *buf, size_t cap, struct lg_error *err);

/* A reference normalized and split into what a registry client needs:
 * -EINVAL for a malformed one, a registry host or repository outside the
 * grammar (they go into URLs), a bad tag, or a digest that is not sha256. */
struct lg_image_ref {
        char name[512];       /* normalized */
        char registry[256];   /* as named: "docker.io", "127.0.0.1:5000" */
        char repository[256]; /* "library/busybox" */
        char reference[80];   /* the tag, or "sha256:<hex>" */
        bool by_digest;
};
int lg_image_ref_split(const char *ref, struct lg_image_ref *ret, struct lg_error *err);

/* Import a `docker save` tar or an OCI image layout tar (oci-archive),
 * plain or gzip-compressed. name (may be NULL) tags the image; without it
 * the archive's own tags (RepoTags / org.opencontainers.image.ref.name) are
 * used, and an archive with neither is imported untagged (found by id).
 * An archive with several images imports them all; ret describes the
 * first. Layers and blobs already present are not written again. */
int lg_image_import(lg_image_store *st, const char *path, const char *name,
                    lg_image_progress_cb progress, void *ud, struct lg_image **ret,
                    struct lg_error *err);

/* Pull ref from its registry (distribution API v2): an image index or
 * manifest list is resolved to linux/amd64; Docker schema 2 and OCI
 * manifests; gzip, zstd and uncompressed layers; every blob verified
 * against its digest. Blobs and layers present are not fetched again. */
int lg_image_pull(lg_image_store *st, const char *ref, const struct lg_registry_auth *auth,
                  lg_image_progress_cb progress, void *ud, struct lg_image **ret,
                  struct lg_error *err);

/* Find an image by name (normalized first) or id. */
int lg_image_get(lg_image_store *st, const char *ref, struct lg_image **ret,
                 struct lg_error *err);

/* Every image, by first name; images with several names appear once. */
int lg_image_list(lg_image_store *st, struct lg_image ***ret, size_t *n, struct lg_error *err);
void lg_image_list_free(struct lg_image **list, size_t n);

/* Remove a name; the image goes with its last name. By id, the image (and
 * any other manifest with that id) goes, named, untagged or dangling. The
 * image's blobs and layers stay until lg_image_gc. */
int lg_image_remove(lg_image_store *st, const char *ref, struct lg_error *err);

/* What GC must leave alone besides what the index refers to. */
struct lg_image_gc_keep {
        /* Extracted layer dirs of sandboxes still running (paths or hex). */
        const char *const *layers;
        size_t n_layers;
        /* Ids ("sha256:<hex>") of images still used by id (an app revision,
         * a pool group): dangling images with these ids stay indexed. */
        const char *const *ids;
        size_t n_ids;
};

/* Drop dangling images whose id keep does not name from the index, then
 * remove blobs and layers that no indexed image refers to, skipping the
 * layers in keep (keep may be NULL). Images imported untagged stay.
 * Reports what went. */
struct lg_image_gc_result {
        uint64_t images_removed; /* dangling images dropped from the index */
        uint64_t blobs_removed, layers_removed, bytes_freed;
        uint64_t chunks_removed; /* from the lazy chunk store (their bytes are in bytes_freed) */
        uint64_t packages_removed; /* package images' lazy layers (jobs' extra_gc_run) */
};
int lg_image_gc(lg_image_store *st, const struct lg_image_gc_keep *keep, struct lg_image_gc_result *ret,
                struct lg_error *err);

/* ---- lazy layers (docs/lazy-images.md) ------------------------------------
 *
 * A lazy layer is mounted, not extracted: layers/<hex>.json says
 * "lazy": true and layers/<hex>/ is the mount point of its EROFS image,
 * whose data the node's fetcher reads from the registry on demand. The
 * image library never talks to the fetcher: legiond hands it these ops.
 * They block (a mount, a round trip to the fetcher) and are called from
 * the thread doing a pull, GC or lg_image_lazy_attach_all, never from the
 * loop; they must be safe to call from several threads at once. */
struct lg_image_lazy_status {
        uint64_t chunks, local_chunks; /* of the layer's chunk table */
        uint64_t bytes, local_bytes;
        uint64_t fetched_bytes;        /* by the fetcher since it attached */
        uint64_t misses, errors;
};

struct lg_image_lazy_ops {
        /* Make the fetcher serve layer hex (lazy/layers/<hex>/ is complete)
         * and mount it read-only at mountpoint. */
        int (*attach)(void *ud, const char *layer_hex, const char *mountpoint, struct lg_error *err);
        /* Unmount mountpoint (lazily when busy) and drop the layer from the
         * fetcher. */
        int (*detach)(void *ud, const char *layer_hex, const char *mountpoint, struct lg_error *err);
        /* May be NULL. The fetcher's figures of an attached layer. */
        int (*status)(void *ud, const char *layer_hex, struct lg_image_lazy_status *ret, struct lg_error *err);
};

/* Where lazy layers and chunks live (lazy_dir: $LEGION_HOME/lazy, made if
 * missing) and how to mount them (ops NULL: lazy pulls fall back to full
 * ones; convert and inspect still work). lazy_auto: a pull that does not
 * say is lazy when it can (legiond's --lazy-images). Call before the store
 * is shared with other threads; ops and ud must outlive the store. */
int lg_image_store_set_lazy(lg_image_store *st, const char *lazy_dir, const struct lg_image_lazy_ops *ops,
                            void *ud, bool lazy_auto, struct lg_error *err);

/* Registry mirrors (mirrors.h; legiond --registry-mirror, copied): a lazy
 * pull records them in each layer's source.json, where the fetcher tries
 * them before the origin, and fetches from them the small blobs the
 * origin does not give. Call before the store is shared with other
 * threads. */
int lg_image_store_set_mirrors(lg_image_store *st, const struct lg_mirrors *m, struct lg_error *err);

/* Mount every lazy layer of the store that is not mounted (legiond's
 * start, before pods and apps are adopted). A layer that fails is said in
 * err and the others are still tried; the first failure is returned.
 * *attached counts the layers mounted now (may be NULL). */
int lg_image_lazy_attach_all(lg_image_store *st, unsigned *attached, struct lg_error *err);

/* Whether layer digest ("sha256:...") is lazy here: 1 with *ret its
 * figures (chunks and bytes of its BLOB, how many are in the node's chunk
 * store), 0 when the layer is extracted (bytes and local_bytes are then
 * its size uncompressed, 0 when unknown). Reads the chunk table and stats
 * the chunks: a few milliseconds for a large layer. */
int lg_image_layer_lazy_status(lg_image_store *st, const char *layer_digest, struct lg_image_lazy_status *ret);

/* Convert an image to lazy form: each layer's extracted tree becomes
 * lazy/layers/<hex>/ (meta.erofs, chunks, source.json {"local": true})
 * with its chunks in the chunk store; a layer with a lazy form already
 * (converted before with the same chunk size, or pulled lazily) is kept.
 * With push_auth (NULL: no push), the lazy artifact goes to the
 * registry of the image's name (ref when it is a name, else the image's
 * first one). Blocks (mkfs.erofs, a mount per layer). */
struct lg_image_convert_layer {
        char digest[72];        /* the layer, "sha256:..." (compressed) */
        char blob_digest[72];   /* of its EROFS BLOB */
        uint64_t blob_size, meta_size, chunks;
        uint64_t unique_bytes;  /* bytes of its distinct chunks */
        uint32_t chunk_size;
        bool reused;            /* the lazy form was there */
};
struct lg_image_convert_result {
        char id[72], digest[72];
        struct lg_image_convert_layer *layers; /* manifest order (lowest first) */
        size_t n_layers;
        uint64_t elapsed_ns;
        bool pushed;
        char pushed_to[512];    /* the name pushed to */
        char artifact[72];      /* the artifact manifest's digest */
};
void lg_image_convert_result_clear(struct lg_image_convert_result *r);
int lg_image_convert(lg_image_store *st, const char *ref, uint32_t chunk_size, const struct lg_registry_auth *push_auth,
                     lg_image_progress_cb progress, void *ud, struct lg_image_convert_result *ret,
                     struct lg_error *err);

/* Lazy pulls: how a pull went. */
enum lg_image_lazy_mode {
        LG_IMAGE_LAZY_DEFAULT = 0, /* the store's (lg_image_store_set_lazy) */
        LG_IMAGE_LAZY_AUTO,        /* lazy when the registry has the lazy form and this node can mount it */
        LG_IMAGE_LAZY_NEVER,
};
struct lg_image_pull_layer {
        char digest[72];
        char how[8];            /* "lazy" (mounted), "local" (extracted already) */
        bool made;              /* this pull made the lazy layer */
};
struct lg_image_pull_report {
        bool lazy;              /* pulled lazily */
        char reason[300];       /* when not: why */
        struct lg_image_pull_layer *layers; /* manifest order; lazy pulls only */
        size_t n_layers;
};
void lg_image_pull_report_clear(struct lg_image_pull_report *r);

/* lg_image_pull, lazily as lazy says: after the image manifest is
 * resolved, its lazy artifact is looked up in the registry; when there is
 * one and this node can mount it, the small part of each layer not here
 * yet (EROFS meta, chunk table, prefetch list) is fetched and the layer
 * mounted (ops->attach) instead of pulled, and the image is recorded as a
 * full pull records it (same id and digest). Layers present extracted
 * stay as they are. Anything about the lazy form that does not work is
 * no error: the pull goes on in full and report->reason says why (report
 * may be NULL). */
int lg_image_pull_lazy(lg_image_store *st, const char *ref, const struct lg_registry_auth *auth,
                       enum lg_image_lazy_mode lazy, lg_image_progress_cb progress, void *ud, struct lg_image **ret,
                       struct lg_image_pull_report *report, struct lg_error *err);

/* ---- ingest: the steps import and pull share ---------------------------- */

/* Write a blob into the store, verifying it against expect ("sha256:<hex>",
 * required). Returns 0 with *ret a writer, or 1 when the blob is already
 * present (*ret is NULL: skip the data). A blob larger than max_bytes
 * (0 = the store's default) fails with -EFBIG. blob_commit checks the
 * digest and moves the blob into place; commit and abort both free w
 * (never call abort after commit). Blobs written or found present stay
 * safe from lg_image_gc in this handle until lg_image_commit uses them. */
struct lg_image_blob_writer;
int lg_image_blob_begin(lg_image_store *st, const char *expect, uint64_t max_bytes,
                        struct lg_image_blob_writer **ret, struct lg_error *err);
int lg_image_blob_write(struct lg_image_blob_writer *w, const void *buf, size_t len,
                        struct lg_error *err);
int lg_image_blob_commit(struct lg_image_blob_writer *w, struct lg_error *err);
void lg_image_blob_abort(struct lg_image_blob_writer *w); /* NULL is fine */
/* 1 if the blob "sha256:<hex>" is in the store, 0 if not. */
int lg_image_blob_exists(lg_image_store *st, const char *digest);
/* Read a stored blob (at most max bytes) into a NUL-terminated buffer. */
int lg_image_blob_read(lg_image_store *st, const char *digest, uint64_t max, char **ret,
                       size_t *len, struct lg_error *err);

/* Record an image whose manifest, config and layer blobs are all stored:
 * parse the manifest (OCI or Docker schema 2) and config, extract each
 * layer not yet extracted (verifying its diff id), and point name (may be
 * NULL) at it. */
int lg_image_commit(lg_image_store *st, const char *manifest_digest, const char *name,
                    lg_image_progress_cb progress, void *ud, struct lg_image **ret,
                    struct lg_error *err);
