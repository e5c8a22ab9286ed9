/* Pieces shared by the files of the image module (store.c, manifest.c,
 * layer.c, import.c, ref.c); not part of its interface, except the limits
 * setter that tests use. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cas/cas.h"
#include "image/image.h"
#include "image/mirrors.h"

#define LG_DIGEST_MAX 72 /* "sha256:" + 64 hex + NUL, rounded */

/* Size and shape limits of a store; 0 fields take the defaults. */
struct lg_image_limits {
        uint64_t blob_bytes;      /* one blob (compressed layer): 8 GiB */
        uint64_t json_bytes;      /* a manifest, index or config: 4 MiB */
        uint64_t layer_bytes;     /* a layer's uncompressed tar stream: 16 GiB */
        uint64_t layer_entries;   /* entries of one layer: 1,000,000 */
        uint64_t archive_entries; /* entries of an imported archive: 100,000 */
        uint64_t archive_bytes;   /* its uncompressed content: 64 GiB */
        unsigned path_len;        /* a path inside a layer: 4,096 bytes */
        unsigned depth;           /* its components: 256 */
        unsigned max_layers;      /* layers of one image: 256 */
};
void lg_image_store_set_limits(lg_image_store *st, const struct lg_image_limits *lim);

/* A digest seen by a writer or commit of this handle, not yet recorded in
 * the index: GC leaves it alone. */
struct lg_image_pending {
        char hex[65];
        unsigned n;
};

struct lg_image_index_cache;

struct lg_image_store {
        char *dir;
        int dirfd;
        lg_cas *cas;    /* blobs/sha256, tmp/ and the store's lock */
        pthread_mutex_t mu; /* index, pending set */
        struct lg_image_limits lim;
        struct lg_image_pending *pending;
        size_t n_pending, cap_pending;
        struct lg_image_index_cache *cache; /* lg_image_get's, under mu (index.c) */
        /* Lazy layers (lazy-image.c); set once before the store is shared. */
        char *lazy_dir;  /* NULL: no lazy layers made or pulled here */
        int lazy_dirfd;
        const struct lg_image_lazy_ops *lazy_ops;
        void *lazy_ud;
        bool lazy_auto;
        struct lg_mirrors mirrors; /* legiond --registry-mirror; set once */
        /* Held while a layer's chunks go into the chunk store ahead of its
         * table's place in lazy/layers/ (convert), while lazy layers go in
         * and are mounted (a lazy pull), and by GC of the chunk store. */
        pthread_mutex_t lazy_mu;
};

/* ---- store.c ---- */

/* "sha256:<64 lowercase hex>" -> hex (65 bytes with NUL). -ENOTSUP for
 * another algorithm, -EINVAL for a malformed digest. what names it for the
 * message. */
int lg_image_digest_hex(const char *digest, char hex[65], const char *what, struct lg_error *err);
bool lg_image_is_hex(const char *s, size_t n);
/* d is "sha256:<64 lowercase hex>". */
bool lg_image_digest_valid(const char *d);
/* "sha256:<hex>" of 32 digest bytes / of a buffer. */
void lg_image_digest_of(const uint8_t md[32], char out[LG_DIGEST_MAX]);
void lg_image_digest_buf(const void *buf, size_t len, char out[LG_DIGEST_MAX]);

/* Protect hex from GC (count it up) / release it once (all: entirely). */
int lg_image_pending_add(lg_image_store *st, const char *hex);
void lg_image_pending_drop(lg_image_store *st, const char *hex, bool all);

/* The blob's size, or -ENOENT. */
int lg_image_blob_stat(lg_image_store *st, const char *hex, uint64_t *size);

/* Writer with no expected digest: the digest is whatever was written;
 * commit returns it in digest_out (and 1 when it was present already). */
int lg_image_blob_begin_any(lg_image_store *st, uint64_t max_bytes, struct lg_image_blob_writer **ret,
                            struct lg_error *err);
int lg_image_blob_commit_any(struct lg_image_blob_writer *w, char digest_out[LG_DIGEST_MAX],
                             struct lg_error *err);
/* Store a whole buffer as a blob; digest_out gets its digest. */
int lg_image_blob_put(lg_image_store *st, const void *buf, size_t len, char digest_out[LG_DIGEST_MAX],
                      struct lg_error *err);

/* Record manifest (with config id) in the index, pointing name (NULL: only
 * make sure the image is recorded) at it. */
int lg_image_index_add(lg_image_store *st, const char *manifest, const char *config, const char *name,
                       struct lg_error *err);

/* Free lg_image_get's cache (NULL is fine). */
void lg_image_index_cache_free(struct lg_image_index_cache *c);

/* A temporary name in tmp/: "<what><16 hex>". */
int lg_image_tmp_name(char *buf, size_t cap, const char *what);

/* ---- manifest.c ---- */

struct lg_image_layer_desc {
        char digest[LG_DIGEST_MAX];
        char media_type[128];
        uint64_t size;
        char diff_id[LG_DIGEST_MAX]; /* from the config */
};

struct lg_image_manifest {
        char config[LG_DIGEST_MAX];
        uint64_t config_size;
        struct lg_image_layer_desc *layers;
        size_t n_layers;
};
void lg_image_manifest_free(struct lg_image_manifest *m);

/* Parse a manifest (OCI or Docker schema 2); -ENOTSUP for an index, a
 * schema 1 manifest, or an unknown media type. */
int lg_image_manifest_parse(const lg_image_store *st, const char *json, size_t len, struct lg_image_manifest *m,
                            struct lg_error *err);

/* Free a NULL-terminated string array (NULL is fine) / copy one (NULL
 * stays NULL); -ENOMEM. */
void lg_image_strv_free(char **v);
int lg_image_strv_dup(char *const *v, char ***ret);

/* A copy of src with names (NULL-terminated) for its names; -ENOMEM. */
int lg_image_copy(const struct lg_image *src, char *const *names, struct lg_image **ret);

/* Free what img holds (not img itself). */
void lg_image_clear(struct lg_image *img);

/* Fill img from the manifest and config blobs named by manifest_digest:
 * everything but names. With m non-NULL, the parsed manifest (with the
 * config's diff ids) is returned too. */
int lg_image_load(lg_image_store *st, const char *manifest_digest, struct lg_image *img,
                  struct lg_image_manifest *m, struct lg_error *err);

/* ---- layer.c ---- */

/* Extract layer blob hex (of media type media_type) into layers/<hex>/
 * unless it is there, checking its uncompressed digest against diff_id.
 * 0 extracted, 1 present already. */
int lg_image_layer_extract(lg_image_store *st, const struct lg_image_layer_desc *l,
                           lg_image_progress_cb progress, void *ud, struct lg_error *err);

/* Write layers/<hex>.json {"diffId", "size"[, "lazy": true]}, replaced
 * by rename; a lazy layer's record is never replaced: 1 when one is
 * there. */
int lg_image_layer_write_record(lg_image_store *st, const char *hex, const char *diff_id, uint64_t size, bool lazy,
                                struct lg_error *err);

/* The compression a layer media type uses: 0 none, 1 gzip, 2 zstd; -1 not
 * a layer type. */
int lg_image_layer_compression(const char *media_type);

/* ---- lazy-image.c ---- */

/* 1 when layers/<hex>.json marks layer hex as lazy, 0 when not (or there
 * is no record). */
int lg_image_layer_is_lazy(lg_image_store *st, const char *hex);

/* Write source (a JSON object, not stolen) as dir/source.json (0600: it
 * may hold credentials) and the marker dir/image (the lazy layer is the
 * image store's, not a package's). */
struct json_t;
int lg_image_lazy_write_source(const char *dir, struct json_t *source, struct lg_error *err);
/* The BLOB digest in lazy/layers/<hex>/source.json. */
int lg_image_lazy_source_digest(lg_image_store *st, const char *hex, char out[72], struct lg_error *err);
/* Move the finished lazy layer dir tmp to lazy/layers/<hex>: 0 done; when
 * one is there, replace swaps it out (and removes it), else tmp is
 * removed and 1 returned. */
int lg_image_lazy_install(lg_image_store *st, const char *tmp, const char *hex, bool replace, struct lg_error *err);

/* GC of lazy layers (under the index lock): every lazy layer keeps() does
 * not claim is unmounted (ops->detach) and goes with its record, mount
 * point and lazy/layers/<hex>; then the lazy forms converted here of
 * layers keeps() does not claim. Counted in res. */
int lg_image_lazy_gc(lg_image_store *st, bool (*keeps)(const char *hex, void *ud), void *ud,
                     struct lg_image_gc_result *res, struct lg_error *err);
/* Remove the chunks that no table under lazy/layers/ names. */
int lg_image_lazy_chunk_gc(lg_image_store *st, struct lg_image_gc_result *res, struct lg_error *err);

/* lazy-pull.c: with the image manifest (mtext, its digest) resolved and
 * its config stored, make each layer that is not here a lazy layer (its
 * small blobs fetched from reg, mounted): 1 when every layer is lazy or
 * local now (report->layers says which; the layers are pinned against GC
 * until the commit), 0 when not (nothing made is left; report->reason
 * says why). */
int lg_image_lazy_pull_layers(lg_image_store *st, lg_registry *reg, const struct lg_registry_auth *auth,
                              const char *manifest_digest, const char *mtext, size_t mlen,
                              lg_image_progress_cb progress, void *ud, struct lg_image_pull_report *report);
/* A prefetch record from a registry (path): u32 LE chunk indexes, each
 * below n (the layer's chunks), at most 16 Mi of them; -EBADMSG else. */
int lg_image_lazy_prefetch_check(const char *path, size_t n, struct lg_error *err);
/* A lazy pull that failed after lg_image_lazy_pull_layers: remove the
 * lazy layers it made, unpin the others. */
void lg_image_lazy_pull_undo(lg_image_store *st, struct lg_image_pull_report *report);

/* lazy-push.c: push the lazy artifact of a converted image (ret's layers)
 * to the registry of ref's name (or img's first). */
struct lg_chunk_store;
int lg_image_lazy_push(lg_image_store *st, struct lg_chunk_store *cs, const char *ref, const struct lg_image *img,
                       const struct lg_image_manifest *m, struct lg_image_convert_result *ret,
                       const struct lg_registry_auth *auth, lg_image_progress_cb progress, void *ud,
                       struct lg_error *err);

/* ---- ref.c ---- */

/* Split a normalized name into repository (up to ':' tag / '@' digest). */
bool lg_image_ref_is_digest(const char *s);
