/* The lazy artifact of an image (docs/lazy-images.md, DESIGN-13): an OCI
 * 1.1 artifact manifest that refers to an image manifest (its `subject`)
 * and carries, per image layer, the layer's lazy form: the EROFS metadata
 * image (meta), the chunk table (chunks), the EROFS data blob read by range
 * (blob) and optionally the prefetch record (prefetch).
 *
 *   manifest: {"schemaVersion":2,
 *              "mediaType":"application/vnd.oci.image.manifest.v1+json",
 *              "artifactType":"application/vnd.legion.lazy.v1",
 *              "config":{"mediaType":"application/vnd.legion.lazy.config.v1+json",..},
 *              "layers":[meta, chunks, blob, (prefetch) of layer 0, then layer 1, ...],
 *              "subject":{the image manifest's descriptor}}
 *   config:   {"chunkSize":65536,"layers":[{"layer":"sha256:<compressed digest>",
 *              "diffId":"sha256:..","meta":"sha256:..","chunks":"sha256:..",
 *              "blob":"sha256:..","blobSize":N,"prefetch":"sha256:.."(optional)}]}
 *
 * It is found through the referrers of the image manifest: the OCI 1.1
 * referrers API where the registry has it, else the tag-schema index at
 * tag "sha256-<image manifest hex>" (docker-registry 2.8), an OCI index
 * whose `manifests` name each artifact with its artifactType.
 *
 * Parsers are strict (they read what registries and other nodes send):
 * every known field has its type, digests are sha256, sizes are in range,
 * JSON objects have no duplicate keys, a layer appears once, each blob the
 * config names is in the manifest with its media type and size; unknown
 * fields are ignored (later versions may add some).
 *
 * Threading: the functions keep no state; the registry ones use the
 * client given (one per thread, see registry.h). Memory: the caller frees
 * what comes back (free(), lg_lazy_artifact_clear). The library never logs.
 * Errors: negative errno with err filled: -EINVAL malformed (the message
 * says which field), -EFBIG over a limit, -ENOENT no lazy artifact, and the
 * registry's errors (registry.h). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "image/registry.h"

#define LG_LAZY_ARTIFACT_TYPE "application/vnd.legion.lazy.v1"
#define LG_LAZY_CONFIG_TYPE "application/vnd.legion.lazy.config.v1+json"
#define LG_LAZY_META_TYPE "application/vnd.legion.erofs.meta.v1"
#define LG_LAZY_CHUNKS_TYPE "application/vnd.legion.chunks.v1"
#define LG_LAZY_BLOB_TYPE "application/vnd.legion.erofs.blob.v1"
#define LG_LAZY_PREFETCH_TYPE "application/vnd.legion.prefetch.v1"
/* A function package (docs/packages.md, "Packages in a registry"): the
 * same artifact with this artifactType, no subject, one more blob (the
 * package archive) and at most one layer, whose `layer` and `diffId` are
 * the archive's digest; without lazy form its config is the OCI empty
 * descriptor ("{}"), and it has no layer. */
#define LG_PACKAGE_ARTIFACT_TYPE "application/vnd.legion.package.v1"
#define LG_PACKAGE_ARCHIVE_TYPE "application/vnd.legion.package.archive.v1"
#define LG_OCI_EMPTY_TYPE "application/vnd.oci.empty.v1+json"
#define LG_PACKAGE_ARCHIVE_MAX (1ull << 30)

#define LG_LAZY_CONFIG_MAX (1u << 20)   /* the config blob */
#define LG_LAZY_LAYERS_MAX 256u         /* layers of one artifact (the store's max) */
#define LG_LAZY_INDEX_MAX 1024u         /* entries of a referrers index */

/* An OCI descriptor (what this module reads of one). */
struct lg_oci_descriptor {
        char media_type[128];
        char digest[72];
        uint64_t size;
        char artifact_type[128];        /* "" when absent */
};

/* A blob of the artifact; digest "" when absent (only prefetch may be). */
struct lg_lazy_blob {
        char digest[72];
        uint64_t size;
};

struct lg_lazy_layer {
        char layer[72];                 /* the image layer (compressed) digest */
        char diff_id[72];
        struct lg_lazy_blob meta, chunks, blob, prefetch;
};

struct lg_lazy_artifact {
        char digest[72];                /* the artifact manifest's */
        struct lg_oci_descriptor subject; /* the image manifest */
        struct lg_lazy_blob config;
        uint32_t chunk_size;
        struct lg_lazy_layer *layers;
        size_t n_layers;
        /* The manifest's layers, as parsed (lg_lazy_manifest_parse). */
        struct lg_oci_descriptor *blobs;
        size_t n_blobs;
        /* A package's artifact (LG_PACKAGE_ARTIFACT_TYPE; subject unused):
         * its archive, and whether its config is the OCI empty one (no
         * lazy form: no config to parse). */
        bool package, no_lazy;
        struct lg_lazy_blob archive;
};
void lg_lazy_artifact_clear(struct lg_lazy_artifact *a); /* frees the arrays, zeroes a */

/* The config and manifest of a: from chunk_size, subject and each layer
 * (layer, diff_id, and every blob's digest and size; prefetch optional).
 * Sets a->config and a->digest. The same input gives the same bytes. A
 * package (a->package): archive instead of subject, and one layer of the
 * archive, or none with no_lazy (then *config is "{}"). */
int lg_lazy_artifact_build(struct lg_lazy_artifact *a, char **config, size_t *config_len, char **manifest,
                           size_t *manifest_len, struct lg_error *err);

/* Parse an artifact manifest of digest (may be NULL: not recorded) into
 * *ret: subject, config, blobs (layers stay empty until the config). A
 * package's artifact is taken too (ret->package, its archive, no_lazy
 * when its config is the OCI empty one); callers that want one kind check
 * ret->package. */
int lg_lazy_manifest_parse(const void *buf, size_t len, const char *digest, struct lg_lazy_artifact *ret,
                           struct lg_error *err);
/* Parse the config blob of a parsed manifest into a->chunk_size and
 * a->layers: buf must match a->config (digest, size), and every blob it
 * names must be among a->blobs with its media type; blobSize is the
 * blob's size. A package's has exactly one layer, of its archive. */
int lg_lazy_config_parse(struct lg_lazy_artifact *a, const void *buf, size_t len, struct lg_error *err);

/* A referrers index with add merged in (old may be NULL: a new index):
 * entries of other artifact types stay as they are; an entry of add's
 * artifact type is replaced (one artifact of a type per subject). */
int lg_lazy_index_merge(const void *old, size_t old_len, const struct lg_oci_descriptor *add, char **ret,
                        size_t *ret_len, struct lg_error *err);
/* The last entry of artifact_type in a referrers index; -ENOENT none. */
int lg_lazy_index_find(const void *buf, size_t len, const char *artifact_type, struct lg_oci_descriptor *ret,
                       struct lg_error *err);

/* ---- with a registry ---------------------------------------------------- */

/* Local files of one layer's lazy form (prefetch may be NULL). */
struct lg_lazy_push_layer {
        const char *layer, *diff_id;    /* digests from the image */
        const char *meta, *chunks, *blob, *prefetch; /* paths */
};

/* Push the lazy artifact of image manifest subject (which must be in the
 * repository): every file as a blob (skipped when present), the config,
 * the artifact manifest (by digest), then, unless the registry indexes
 * referrers itself, the referrers index at tag "sha256-<subject hex>"
 * merged with what is there. digest_out gets the artifact's digest. */
int lg_lazy_artifact_push(lg_registry *r, const char *subject, uint32_t chunk_size,
                          const struct lg_lazy_push_layer *layers, size_t n_layers, char digest_out[72],
                          struct lg_error *err);

/* Find and read the lazy artifact of image manifest subject: referrers,
 * the artifact manifest, its config, all parsed and checked (its subject
 * must be subject). -ENOENT when there is none. */
int lg_lazy_artifact_find(lg_registry *r, const char *subject, struct lg_lazy_artifact *ret,
                          struct lg_error *err);
