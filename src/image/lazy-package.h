/* Function packages in an OCI registry (docs/packages.md, "Packages in a
 * registry"): push a package -- its archive and its lazy form (EROFS meta,
 * chunk table and blob, src/lazy) -- as one artifact of artifactType
 * application/vnd.legion.package.v1, and on a node resolve such an
 * artifact, fetch its small lazy part (meta and chunk table) into the
 * node's lazy store so that the fetcher can serve the rest by range, or,
 * as the fallback, fetch and verify the archive.
 *
 * The artifact is the lazy artifact of images (lazy-artifact.h) in its
 * package variant: artifactType application/vnd.legion.package.v1, no
 * subject, the archive (application/vnd.legion.package.archive.v1; a zip
 * or tar[.gz] lg_pkg_extract takes) as one more blob, and one lazy layer
 * whose "layer" is the archive's digest -- or none, with the OCI empty
 * config, for an artifact without lazy form.
 *
 * Threading: every function blocks (registry round trips, mkfs.erofs) and
 * runs on a worker thread; no state is shared between calls.
 * Memory: strings given are borrowed; results are plain structs.
 * Errors: >= 0 or a negative errno with err set. -EINVAL: a bad reference or
 * an artifact that is not a package (the message says what is wrong);
 * -EBADMSG: a blob that does not match its digest; -ENOENT: no such
 * manifest; the registry client's errors otherwise (-EACCES,
 * -ECONNREFUSED, ...). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"
#include "image/image.h"

#include "image/lazy-artifact.h" /* LG_PACKAGE_ARTIFACT_TYPE, the format */

/* Push: the archive (its sha256 hex given) and tree (the archive
 * extracted) to ref. The lazy form is built under tmp_dir (removed after)
 * with chunk_size (0: 64 KiB); without_lazy pushes the archive alone. */
struct lg_package_push {
        const char *ref;
        const struct lg_registry_auth *auth; /* NULL: anonymous */
        const char *archive, *archive_hex;
        const char *tree;
        const char *tmp_dir;
        uint32_t chunk_size;
        bool without_lazy;
};
struct lg_package_pushed {
        char digest[72];      /* of the artifact's manifest */
        bool lazy;
        uint64_t archive_size, meta_size, blob_size, n_chunks;
        uint32_t chunk_size;
};
int lg_package_push(const struct lg_package_push *p, struct lg_package_pushed *ret, struct lg_error *err);

/* What a package artifact holds, its blobs' digests "sha256:<hex>". */
struct lg_package_artifact {
        char digest[72];      /* its manifest's */
        char archive[72];
        uint64_t archive_size;
        bool lazy;            /* the lazy form is there and well-formed */
        char lazy_reason[300]; /* why not, when !lazy */
        uint32_t chunk_size;
        char meta[72], chunks[72], blob[72];
        uint64_t meta_size, chunks_size, blob_size;
};

/* GET the manifest and (for the lazy form) the config, and check both. */
int lg_package_resolve(const struct lg_image_ref *ref, const struct lg_registry_auth *auth,
                       struct lg_package_artifact *ret, struct lg_error *err);

/* Fetch meta and chunk table into <lazy_dir>/layers/<archive hex>/ with
 * its source.json (the registry holds the blob), built in <lazy_dir>/tmp
 * and renamed into place: 0 made, 1 present already. The chunk table is
 * parsed and must describe a blob of the artifact's blobSize. */
int lg_package_fetch_lazy(const struct lg_image_ref *ref, const struct lg_registry_auth *auth,
                          const struct lg_package_artifact *a, const char *lazy_dir, struct lg_error *err);

/* Fetch the archive into a new file path (mode 0600), verified against
 * its digest; nothing is left at path on failure. Refused when larger than
 * max_bytes. */
int lg_package_fetch_archive(const struct lg_image_ref *ref, const struct lg_registry_auth *auth,
                             const struct lg_package_artifact *a, const char *path, uint64_t max_bytes,
                             struct lg_error *err);
