/* The lazy artifact (lazy-artifact.h): build and strict parsing of its
 * manifest, config and the referrers index; pushing it with its blobs and
 * finding it again, on the registry client (registry.h). */
#include <string.h>

#include <jansson.h>

#include "image/image-internal.h"
#include "image/lazy-artifact.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"

#define MANIFEST_MAX (4u << 20)
#define CHUNK_MIN 4096u
#define CHUNK_MAX (4u << 20)
/* Sizes of the blobs of one layer: the chunk table holds at most 16M
 * chunks of 48 bytes after its 32-byte head (src/lazy/chunks.h), the
 * prefetch record a u32 per chunk. */
#define CHUNKS_HEAD 32u
#define CHUNK_ENTRY 48u
#define CHUNKS_N_MAX (16u << 20)
#define META_MAX (1ull << 30)
#define BLOB_MAX (1ull << 40)

void lg_lazy_artifact_clear(struct lg_lazy_artifact *a) {
        if (!a)
                return;
        free(a->layers);
        free(a->blobs);
        memset(a, 0, sizeof(*a));
}

/* ---- strict JSON reading ------------------------------------------------------- */

/* A string field: required (absent is an error) or optional (*ret NULL). */
static int get_str(json_t *obj, const char *key, bool required, const char **ret, const char *what,
                   struct lg_error *err) {
        json_t *v = json_object_get(obj, key);
        *ret = NULL;
        if (!v) {
                if (required)
                        return lg_error_setm(err, EINVAL, "%s: `%s` is missing", what, key);
                return 0;
        }
        if (!json_is_string(v))
                return lg_error_setm(err, EINVAL, "%s: `%s` is not a string", what, key);
        *ret = json_string_value(v);
        return 0;
}

static int get_digest(json_t *obj, const char *key, bool required, char out[72], const char *what,
                      struct lg_error *err) {
        const char *s;
        int r = get_str(obj, key, required, &s, what, err);
        out[0] = '\0';
        if (r < 0 || !s)
                return r;
        if (!lg_image_digest_valid(s))
                return lg_error_setm(err, EINVAL, "%s: `%s` is not a sha256 digest", what, key);
        memcpy(out, s, 72);
        return 0;
}

static int get_size(json_t *obj, const char *key, uint64_t max, uint64_t *ret, const char *what,
                    struct lg_error *err) {
        json_t *v = json_object_get(obj, key);
        if (!v)
                return lg_error_setm(err, EINVAL, "%s: `%s` is missing", what, key);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return lg_error_setm(err, EINVAL, "%s: `%s` is not a size", what, key);
        if ((uint64_t) json_integer_value(v) > max)
                return lg_error_setm(err, EFBIG, "%s: `%s` is over %llu", what, key, (unsigned long long) max);
        *ret = (uint64_t) json_integer_value(v);
        return 0;
}

/* A string field that must be exactly want. */
static int want_str(json_t *obj, const char *key, const char *want, const char *what, struct lg_error *err) {
        const char *s;
        int r = get_str(obj, key, true, &s, what, err);
        if (r < 0)
                return r;
        if (strcmp(s, want)) {
                char p[80];
                lg_printable(s, p, sizeof(p));
                return lg_error_setm(err, EINVAL, "%s: `%s` is `%s`, not %s", what, key, p, want);
        }
        return 0;
}

/* A descriptor: mediaType, digest, size (at most max), artifactType. */
static int get_desc(json_t *d, uint64_t max, struct lg_oci_descriptor *ret, const char *what,
                    struct lg_error *err) {
        memset(ret, 0, sizeof(*ret));
        if (!json_is_object(d))
                return lg_error_setm(err, EINVAL, "%s is not an object", what);
        const char *mt, *at;
        int r = get_str(d, "mediaType", true, &mt, what, err);
        if (r >= 0)
                r = get_str(d, "artifactType", false, &at, what, err);
        if (r >= 0)
                r = get_digest(d, "digest", true, ret->digest, what, err);
        if (r >= 0)
                r = get_size(d, "size", max, &ret->size, what, err);
        if (r < 0)
                return r;
        if (strlen(mt) >= sizeof(ret->media_type) || (at && strlen(at) >= sizeof(ret->artifact_type)))
                return lg_error_setm(err, EINVAL, "%s: a media type is too long", what);
        snprintf(ret->media_type, sizeof(ret->media_type), "%s", mt);
        snprintf(ret->artifact_type, sizeof(ret->artifact_type), "%s", at ? at : "");
        return 0;
}

static json_t *load(const void *buf, size_t len, size_t max, const char *what, int *r, struct lg_error *err) {
        if (len > max) {
                *r = lg_error_setm(err, EFBIG, "%s is over %zu bytes", what, max);
                return NULL;
        }
        json_error_t je;
        json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(doc)) {
                *r = lg_error_setm(err, EINVAL, "%s is not a JSON object%s%s", what, doc ? "" : ": ", doc ? "" : je.text);
                json_decref(doc);
                return NULL;
        }
        *r = 0;
        return doc;
}

static int dump(json_t *doc, char **ret, size_t *len, struct lg_error *err) {
        char *s = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        if (!s)
                return lg_error_set(err, ENOMEM, "JSON");
        *ret = s;
        *len = strlen(s);
        return 0;
}

static bool chunk_size_ok(uint64_t cs) { return cs >= CHUNK_MIN && cs <= CHUNK_MAX && !(cs & (cs - 1)); }

/* ---- build --------------------------------------------------------------------- */

static json_t *desc_json(const char *mt, const struct lg_lazy_blob *b) {
        return json_pack("{s:s, s:s, s:I}", "mediaType", mt, "digest", b->digest, "size", (json_int_t) b->size);
}

/* The manifest man (stolen; NULL: out of memory) into *manifest and its
 * digest into a->digest; on failure *config is freed too. */
static int manifest_out(struct lg_lazy_artifact *a, json_t *man, char **config, char **manifest,
                        size_t *manifest_len, const char *what, struct lg_error *err) {
        int r = man ? dump(man, manifest, manifest_len, err) : lg_error_set(err, ENOMEM, "%s", what);
        json_decref(man);
        if (r < 0) {
                free(*config);
                *config = NULL;
                return r;
        }
        lg_image_digest_buf(*manifest, *manifest_len, a->digest);
        return 0;
}

/* A package's artifact: the archive, then its lazy form's blobs (if any);
 * the config as an image's artifact has, or "{}"; no subject. */
static int package_build(struct lg_lazy_artifact *a, char **config, size_t *config_len, char **manifest,
                         size_t *manifest_len, struct lg_error *err) {
        const struct lg_lazy_layer *l = a->n_layers ? &a->layers[0] : NULL;
        if (a->n_layers != (a->no_lazy ? 0u : 1u) || !lg_image_digest_valid(a->archive.digest))
                return lg_error_setm(err, EINVAL, "package artifact: an archive and %s", a->no_lazy ? "no layer" : "one layer");
        if (l && !chunk_size_ok(a->chunk_size))
                return lg_error_setm(err, EINVAL, "package artifact: chunk size %u is not a power of two in 4 KiB..4 MiB",
                                     a->chunk_size);
        if (l && (strcmp(l->layer, a->archive.digest) || strcmp(l->diff_id, a->archive.digest) ||
                  !lg_image_digest_valid(l->meta.digest) || !lg_image_digest_valid(l->chunks.digest) ||
                  !lg_image_digest_valid(l->blob.digest) || l->prefetch.digest[0]))
                return lg_error_setm(err, EINVAL, "package artifact: its layer is not of its archive");
        json_t *man_layers = json_array(), *cfg = NULL;
        int r = man_layers && !json_array_append_new(man_layers, desc_json(LG_PACKAGE_ARCHIVE_TYPE, &a->archive))
                        ? 0
                        : lg_error_set(err, ENOMEM, "package artifact");
        if (r >= 0 && l)
                cfg = json_pack("{s:I, s:[{s:s, s:s, s:s, s:s, s:s, s:I}]}", "chunkSize", (json_int_t) a->chunk_size,
                                "layers", "layer", l->layer, "diffId", l->diff_id, "meta", l->meta.digest, "chunks",
                                l->chunks.digest, "blob", l->blob.digest, "blobSize", (json_int_t) l->blob.size);
        else if (r >= 0)
                cfg = json_object();
        if (r >= 0 && (!cfg || (l && (json_array_append_new(man_layers, desc_json(LG_LAZY_META_TYPE, &l->meta)) < 0 ||
                                      json_array_append_new(man_layers, desc_json(LG_LAZY_CHUNKS_TYPE, &l->chunks)) < 0 ||
                                      json_array_append_new(man_layers, desc_json(LG_LAZY_BLOB_TYPE, &l->blob)) < 0))))
                r = lg_error_set(err, ENOMEM, "package artifact");
        if (r >= 0)
                r = dump(cfg, config, config_len, err);
        json_decref(cfg);
        if (r < 0) {
                json_decref(man_layers);
                return r;
        }
        lg_image_digest_buf(*config, *config_len, a->config.digest);
        a->config.size = *config_len;
        json_t *man = json_pack("{s:i, s:s, s:s, s:o, s:o}", "schemaVersion", 2, "mediaType", MT_OCI_MANIFEST,
                                "artifactType", LG_PACKAGE_ARTIFACT_TYPE, "config",
                                desc_json(l ? LG_LAZY_CONFIG_TYPE : LG_OCI_EMPTY_TYPE, &a->config), "layers",
                                man_layers);
        return manifest_out(a, man, config, manifest, manifest_len, "package artifact", err);
}

int lg_lazy_artifact_build(struct lg_lazy_artifact *a, char **config, size_t *config_len, char **manifest,
                           size_t *manifest_len, struct lg_error *err) {
        *config = *manifest = NULL;
        if (a->package)
                return package_build(a, config, config_len, manifest, manifest_len, err);
        if (!chunk_size_ok(a->chunk_size))
                return lg_error_setm(err, EINVAL, "lazy artifact: chunk size %u is not a power of two in 4 KiB..4 MiB",
                                     a->chunk_size);
        if (a->n_layers == 0 || a->n_layers > LG_LAZY_LAYERS_MAX)
                return lg_error_setm(err, EINVAL, "lazy artifact: %zu layers (1..%u)", a->n_layers, LG_LAZY_LAYERS_MAX);
        if (!lg_image_digest_valid(a->subject.digest) ||
            (strcmp(a->subject.media_type, MT_OCI_MANIFEST) && strcmp(a->subject.media_type, MT_DOCKER_MANIFEST)))
                return lg_error_setm(err, EINVAL, "lazy artifact: the subject is not an image manifest");
        json_t *cfg_layers = json_array(), *man_layers = json_array();
        json_t *cfg = json_pack("{s:I, s:o}", "chunkSize", (json_int_t) a->chunk_size, "layers", cfg_layers);
        int r = cfg && man_layers ? 0 : lg_error_set(err, ENOMEM, "lazy artifact");
        for (size_t i = 0; r >= 0 && i < a->n_layers; i++) {
                const struct lg_lazy_layer *l = &a->layers[i];
                bool pf = l->prefetch.digest[0];
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(a->layers[j].layer, l->layer))
                                r = lg_error_setm(err, EINVAL, "lazy artifact: layer %s is there twice", l->layer);
                if (r < 0)
                        break;
                if (!lg_image_digest_valid(l->layer) || !lg_image_digest_valid(l->diff_id) ||
                    !lg_image_digest_valid(l->meta.digest) || !lg_image_digest_valid(l->chunks.digest) ||
                    !lg_image_digest_valid(l->blob.digest) || (pf && !lg_image_digest_valid(l->prefetch.digest))) {
                        r = lg_error_setm(err, EINVAL, "lazy artifact: layer %zu has a malformed digest", i);
                        break;
                }
                json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "layer", l->layer, "diffId", l->diff_id,
                                      "meta", l->meta.digest, "chunks", l->chunks.digest, "blob", l->blob.digest,
                                      "blobSize", (json_int_t) l->blob.size);
                if (e && pf)
                        json_object_set_new(e, "prefetch", json_string(l->prefetch.digest));
                if (!e || json_array_append_new(cfg_layers, e) < 0 ||
                    json_array_append_new(man_layers, desc_json(LG_LAZY_META_TYPE, &l->meta)) < 0 ||
                    json_array_append_new(man_layers, desc_json(LG_LAZY_CHUNKS_TYPE, &l->chunks)) < 0 ||
                    json_array_append_new(man_layers, desc_json(LG_LAZY_BLOB_TYPE, &l->blob)) < 0 ||
                    (pf && json_array_append_new(man_layers, desc_json(LG_LAZY_PREFETCH_TYPE, &l->prefetch)) < 0))
                        r = lg_error_set(err, ENOMEM, "lazy artifact");
        }
        if (r >= 0)
                r = dump(cfg, config, config_len, err);
        json_decref(cfg);
        if (r < 0) {
                json_decref(man_layers);
                free(*config);
                *config = NULL;
                return r;
        }
        lg_image_digest_buf(*config, *config_len, a->config.digest);
        a->config.size = *config_len;
        json_t *man = json_pack("{s:i, s:s, s:s, s:o, s:o, s:{s:s, s:s, s:I}}", "schemaVersion", 2, "mediaType",
                                MT_OCI_MANIFEST, "artifactType", LG_LAZY_ARTIFACT_TYPE, "config",
                                desc_json(LG_LAZY_CONFIG_TYPE, &a->config), "layers", man_layers, "subject",
                                "mediaType", a->subject.media_type, "digest", a->subject.digest, "size",
                                (json_int_t) a->subject.size);
        return manifest_out(a, man, config, manifest, manifest_len, "lazy artifact", err);
}

/* ---- parse --------------------------------------------------------------------- */

static uint64_t blob_max(const char *mt, bool package) {
        if (package && !strcmp(mt, LG_PACKAGE_ARCHIVE_TYPE))
                return LG_PACKAGE_ARCHIVE_MAX;
        if (!strcmp(mt, LG_LAZY_META_TYPE))
                return META_MAX;
        if (!strcmp(mt, LG_LAZY_CHUNKS_TYPE))
                return CHUNKS_HEAD + (uint64_t) CHUNK_ENTRY * CHUNKS_N_MAX;
        if (!strcmp(mt, LG_LAZY_BLOB_TYPE))
                return BLOB_MAX;
        if (!strcmp(mt, LG_LAZY_PREFETCH_TYPE))
                return 4ull * CHUNKS_N_MAX;
        return 0;
}

int lg_lazy_manifest_parse(const void *buf, size_t len, const char *digest, struct lg_lazy_artifact *ret,
                           struct lg_error *err) {
        memset(ret, 0, sizeof(*ret));
        const char *what = "lazy artifact manifest";
        int r;
        json_t *doc = load(buf, len, MANIFEST_MAX, what, &r, err);
        if (!doc)
                return r;
        json_t *sv = json_object_get(doc, "schemaVersion");
        if (!json_is_integer(sv) || json_integer_value(sv) != 2)
                r = lg_error_setm(err, EINVAL, "%s: `schemaVersion` is not 2", what);
        if (r >= 0)
                r = want_str(doc, "mediaType", MT_OCI_MANIFEST, what, err);
        const char *at = NULL;
        if (r >= 0 && (r = get_str(doc, "artifactType", true, &at, what, err)) >= 0 &&
            !(ret->package = !strcmp(at, LG_PACKAGE_ARTIFACT_TYPE)))
                r = want_str(doc, "artifactType", LG_LAZY_ARTIFACT_TYPE, what, err);
        struct lg_oci_descriptor d;
        if (r >= 0)
                r = get_desc(json_object_get(doc, "config"), LG_LAZY_CONFIG_MAX, &d, "lazy artifact config", err);
        /* A package without lazy form: the OCI empty config. */
        if (r >= 0 && ret->package && !strcmp(d.media_type, LG_OCI_EMPTY_TYPE))
                ret->no_lazy = true;
        else if (r >= 0 && strcmp(d.media_type, LG_LAZY_CONFIG_TYPE))
                r = lg_error_setm(err, EINVAL, "%s: the config's media type is not %s", what, LG_LAZY_CONFIG_TYPE);
        if (r >= 0) {
                memcpy(ret->config.digest, d.digest, sizeof(d.digest));
                ret->config.size = d.size;
        }
        if (r >= 0 && !ret->package)
                r = get_desc(json_object_get(doc, "subject"), MANIFEST_MAX, &ret->subject, "lazy artifact subject",
                             err);
        if (r >= 0 && !ret->package && strcmp(ret->subject.media_type, MT_OCI_MANIFEST) &&
            strcmp(ret->subject.media_type, MT_DOCKER_MANIFEST))
                r = lg_error_setm(err, EINVAL, "%s: the subject is not an image manifest", what);
        json_t *layers = json_object_get(doc, "layers");
        if (r >= 0 && !json_is_array(layers))
                r = lg_error_setm(err, EINVAL, "%s: `layers` is %s", what, layers ? "not an array" : "missing");
        size_t n = r >= 0 ? json_array_size(layers) : 0;
        if (r >= 0 && (n == 0 || n > 4 * LG_LAZY_LAYERS_MAX))
                r = lg_error_setm(err, n ? EFBIG : EINVAL, "%s: %zu blobs (1..%u)", what, n, 4 * LG_LAZY_LAYERS_MAX);
        if (r >= 0 && !(ret->blobs = calloc(n, sizeof(*ret->blobs))))
                r = lg_error_set(err, ENOMEM, "%s", what);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                char w[64];
                snprintf(w, sizeof(w), "lazy artifact blob %zu", i);
                struct lg_oci_descriptor *b = &ret->blobs[i];
                r = get_desc(json_array_get(layers, i), UINT64_MAX, b, w, err);
                uint64_t max = r >= 0 ? blob_max(b->media_type, ret->package) : 0;
                if (r >= 0 && !max) {
                        char p[80];
                        lg_printable(b->media_type, p, sizeof(p));
                        r = lg_error_setm(err, EINVAL, "%s: unknown media type `%s`", w, p);
                } else if (r >= 0 && b->size > max) {
                        r = lg_error_setm(err, EFBIG, "%s: %llu bytes, over %llu", w, (unsigned long long) b->size,
                                          (unsigned long long) max);
                }
                ret->n_blobs = i + 1;
                if (r >= 0 && !strcmp(b->media_type, LG_PACKAGE_ARCHIVE_TYPE)) {
                        if (ret->archive.digest[0])
                                r = lg_error_setm(err, EINVAL, "%s: a second package archive", w);
                        memcpy(ret->archive.digest, b->digest, sizeof(b->digest));
                        ret->archive.size = b->size;
                }
        }
        if (r >= 0 && ret->package && !ret->archive.digest[0])
                r = lg_error_setm(err, EINVAL, "%s: a package artifact without a blob of type %s", what,
                                  LG_PACKAGE_ARCHIVE_TYPE);
        if (r >= 0 && digest)
                snprintf(ret->digest, sizeof(ret->digest), "%s", digest);
        json_decref(doc);
        if (r < 0)
                lg_lazy_artifact_clear(ret);
        return r;
}

/* The manifest's blob digest of media type mt; its size into b. */
static int find_blob(const struct lg_lazy_artifact *a, const char *digest, const char *mt, struct lg_lazy_blob *b,
                     const char *what, struct lg_error *err) {
        for (size_t i = 0; i < a->n_blobs; i++)
                if (!strcmp(a->blobs[i].digest, digest)) {
                        if (strcmp(a->blobs[i].media_type, mt))
                                continue;
                        memcpy(b->digest, digest, 72);
                        b->size = a->blobs[i].size;
                        return 0;
                }
        return lg_error_setm(err, EINVAL, "%s: %s is not among the manifest's blobs as %s", what, digest, mt);
}

int lg_lazy_config_parse(struct lg_lazy_artifact *a, const void *buf, size_t len, struct lg_error *err) {
        const char *what = "lazy artifact config";
        free(a->layers);
        a->layers = NULL;
        a->n_layers = 0;
        char got[72];
        lg_image_digest_buf(buf, len, got);
        if (len != a->config.size || strcmp(got, a->config.digest))
                return lg_error_setm(err, EBADMSG, "%s: %zu bytes of %s, the manifest says %llu of %s", what, len, got,
                                     (unsigned long long) a->config.size, a->config.digest);
        int r;
        json_t *doc = load(buf, len, LG_LAZY_CONFIG_MAX, what, &r, err);
        if (!doc)
                return r;
        uint64_t cs = 0;
        r = get_size(doc, "chunkSize", CHUNK_MAX, &cs, what, err);
        if (r >= 0 && !chunk_size_ok(cs))
                r = lg_error_setm(err, EINVAL, "%s: `chunkSize` %llu is not a power of two in 4 KiB..4 MiB", what,
                                  (unsigned long long) cs);
        json_t *layers = json_object_get(doc, "layers");
        if (r >= 0 && !json_is_array(layers))
                r = lg_error_setm(err, EINVAL, "%s: `layers` is %s", what, layers ? "not an array" : "missing");
        size_t n = r >= 0 ? json_array_size(layers) : 0;
        if (r >= 0 && (n == 0 || n > LG_LAZY_LAYERS_MAX))
                r = lg_error_setm(err, n ? EFBIG : EINVAL, "%s: %zu layers (1..%u)", what, n, LG_LAZY_LAYERS_MAX);
        struct lg_lazy_layer *ls = r >= 0 ? calloc(n, sizeof(*ls)) : NULL;
        if (r >= 0 && !ls)
                r = lg_error_set(err, ENOMEM, "%s", what);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                char w[64];
                snprintf(w, sizeof(w), "lazy artifact layer %zu", i);
                json_t *e = json_array_get(layers, i);
                struct lg_lazy_layer *l = &ls[i];
                char d[72];
                if (!json_is_object(e))
                        r = lg_error_setm(err, EINVAL, "%s is not an object", w);
                if (r >= 0)
                        r = get_digest(e, "layer", true, l->layer, w, err);
                if (r >= 0)
                        r = get_digest(e, "diffId", true, l->diff_id, w, err);
                if (r >= 0)
                        r = get_digest(e, "meta", true, d, w, err);
                if (r >= 0)
                        r = find_blob(a, d, LG_LAZY_META_TYPE, &l->meta, w, err);
                if (r >= 0)
                        r = get_digest(e, "chunks", true, d, w, err);
                if (r >= 0)
                        r = find_blob(a, d, LG_LAZY_CHUNKS_TYPE, &l->chunks, w, err);
                if (r >= 0)
                        r = get_digest(e, "blob", true, d, w, err);
                if (r >= 0)
                        r = find_blob(a, d, LG_LAZY_BLOB_TYPE, &l->blob, w, err);
                uint64_t bs = 0;
                if (r >= 0)
                        r = get_size(e, "blobSize", BLOB_MAX, &bs, w, err);
                if (r >= 0 && bs != l->blob.size)
                        r = lg_error_setm(err, EINVAL, "%s: `blobSize` %llu, the manifest says %llu", w,
                                          (unsigned long long) bs, (unsigned long long) l->blob.size);
                if (r >= 0)
                        r = get_digest(e, "prefetch", false, d, w, err);
                if (r >= 0 && d[0])
                        r = find_blob(a, d, LG_LAZY_PREFETCH_TYPE, &l->prefetch, w, err);
                /* What the chunk table and prefetch record formats allow. */
                if (r >= 0 && (l->chunks.size < CHUNKS_HEAD || (l->chunks.size - CHUNKS_HEAD) % CHUNK_ENTRY))
                        r = lg_error_setm(err, EINVAL, "%s: a chunk table of %llu bytes", w,
                                          (unsigned long long) l->chunks.size);
                if (r >= 0 && l->prefetch.digest[0] && l->prefetch.size % 4)
                        r = lg_error_setm(err, EINVAL, "%s: a prefetch record of %llu bytes", w,
                                          (unsigned long long) l->prefetch.size);
                for (size_t j = 0; r >= 0 && j < i; j++)
                        if (!strcmp(ls[j].layer, l->layer))
                                r = lg_error_setm(err, EINVAL, "%s: layer %s is there twice", w, l->layer);
        }
        /* A package's one layer is its archive's. */
        if (r >= 0 && a->package && (n != 1 || strcmp(ls[0].layer, a->archive.digest)))
                r = lg_error_setm(err, EINVAL, "%s: a package's must have one layer, of its archive", what);
        json_decref(doc);
        if (r < 0) {
                free(ls);
                return r;
        }
        a->chunk_size = (uint32_t) cs;
        a->layers = ls;
        a->n_layers = n;
        return 0;
}

/* ---- the referrers index ------------------------------------------------------------ */

/* Parse a referrers index: its `manifests`, each a valid descriptor. */
static json_t *load_index(const void *buf, size_t len, int *r, struct lg_error *err) {
        const char *what = "referrers index";
        json_t *doc = load(buf, len, MANIFEST_MAX, what, r, err);
        if (!doc)
                return NULL;
        json_t *sv = json_object_get(doc, "schemaVersion");
        json_t *ms = json_object_get(doc, "manifests");
        const char *mt;
        if (!json_is_integer(sv) || json_integer_value(sv) != 2)
                *r = lg_error_setm(err, EINVAL, "%s: `schemaVersion` is not 2", what);
        else if ((*r = get_str(doc, "mediaType", false, &mt, what, err)) >= 0 && mt && strcmp(mt, MT_OCI_INDEX))
                *r = lg_error_setm(err, EINVAL, "%s: `mediaType` is not %s", what, MT_OCI_INDEX);
        else if (*r >= 0 && !json_is_array(ms))
                *r = lg_error_setm(err, EINVAL, "%s: `manifests` is %s", what, ms ? "not an array" : "missing");
        else if (*r >= 0 && json_array_size(ms) > LG_LAZY_INDEX_MAX)
                *r = lg_error_setm(err, EFBIG, "%s: over %u entries", what, LG_LAZY_INDEX_MAX);
        for (size_t i = 0; *r >= 0 && i < json_array_size(ms); i++) {
                char w[64];
                struct lg_oci_descriptor d;
                snprintf(w, sizeof(w), "referrers index entry %zu", i);
                *r = get_desc(json_array_get(ms, i), MANIFEST_MAX, &d, w, err);
        }
        if (*r < 0) {
                json_decref(doc);
                return NULL;
        }
        return doc;
}

int lg_lazy_index_merge(const void *old, size_t old_len, const struct lg_oci_descriptor *add, char **ret,
                        size_t *ret_len, struct lg_error *err) {
        *ret = NULL;
        if (!lg_image_digest_valid(add->digest) || !add->artifact_type[0] || !add->media_type[0])
                return lg_error_setm(err, EINVAL, "referrers index: the entry to add is incomplete");
        int r = 0;
        json_t *doc = old ? load_index(old, old_len, &r, err)
                          : json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX, "manifests");
        if (!doc)
                return r < 0 ? r : lg_error_set(err, ENOMEM, "referrers index");
        json_t *ms = json_object_get(doc, "manifests");
        /* One artifact of a type per subject: the new one replaces it. */
        for (size_t i = json_array_size(ms); i-- > 0;) {
                json_t *e = json_array_get(ms, i);
                const char *at = json_string_value(json_object_get(e, "artifactType"));
                const char *dg = json_string_value(json_object_get(e, "digest"));
                if ((at && !strcmp(at, add->artifact_type)) || !strcmp(dg, add->digest))
                        json_array_remove(ms, i);
        }
        json_t *e = json_pack("{s:s, s:s, s:I, s:s}", "mediaType", add->media_type, "digest", add->digest, "size",
                              (json_int_t) add->size, "artifactType", add->artifact_type);
        if (!e || json_array_append_new(ms, e) < 0)
                r = lg_error_set(err, ENOMEM, "referrers index");
        if (r >= 0 && json_array_size(ms) > LG_LAZY_INDEX_MAX)
                r = lg_error_setm(err, EFBIG, "referrers index: over %u entries", LG_LAZY_INDEX_MAX);
        if (r >= 0)
                r = dump(doc, ret, ret_len, err);
        json_decref(doc);
        return r;
}

int lg_lazy_index_find(const void *buf, size_t len, const char *artifact_type, struct lg_oci_descriptor *ret,
                       struct lg_error *err) {
        memset(ret, 0, sizeof(*ret));
        int r;
        json_t *doc = load_index(buf, len, &r, err);
        if (!doc)
                return r;
        json_t *ms = json_object_get(doc, "manifests");
        r = -ENOENT;
        for (size_t i = json_array_size(ms); i-- > 0 && r == -ENOENT;) {
                struct lg_oci_descriptor d;
                get_desc(json_array_get(ms, i), MANIFEST_MAX, &d, "entry", err); /* checked by load_index */
                if (!strcmp(d.artifact_type, artifact_type)) {
                        *ret = d;
                        r = 0;
                }
        }
        json_decref(doc);
        if (r == -ENOENT)
                return lg_error_setm(err, ENOENT, "the referrers index has no %s", artifact_type);
        return r;
}

/* ---- with a registry ---------------------------------------------------------------- */

/* The image manifest subject as a descriptor, from the registry. */
static int subject_desc(lg_registry *r, const char *subject, struct lg_oci_descriptor *ret, struct lg_error *err) {
        struct lg_registry_manifest m;
        int rc = lg_registry_manifest_get(r, subject, MT_OCI_MANIFEST ", " MT_DOCKER_MANIFEST, &m, err);
        if (rc < 0)
                return lg_error_wrap(err, rc, "the image of the lazy artifact");
        memset(ret, 0, sizeof(*ret));
        json_t *doc = json_loadb(m.buf, m.len, 0, NULL);
        const char *mt = json_string_value(json_object_get(doc, "mediaType"));
        if (!mt)
                mt = m.media_type;
        if (strcmp(mt, MT_OCI_MANIFEST) && strcmp(mt, MT_DOCKER_MANIFEST))
                rc = lg_error_setm(err, EINVAL, "%s on %s is not an image manifest", subject, lg_registry_host(r));
        snprintf(ret->media_type, sizeof(ret->media_type), "%s", mt);
        memcpy(ret->digest, m.digest, sizeof(ret->digest));
        ret->size = m.len;
        json_decref(doc);
        lg_registry_manifest_clear(&m);
        return rc;
}

static int push_file(lg_registry *r, const char *path, struct lg_lazy_blob *b, struct lg_error *err) {
        int rc = lg_registry_blob_push_path(r, path, b->digest, &b->size, err);
        return rc < 0 ? rc : 0;
}

int lg_lazy_artifact_push(lg_registry *r, const char *subject, uint32_t chunk_size,
                          const struct lg_lazy_push_layer *layers, size_t n_layers, char digest_out[72],
                          struct lg_error *err) {
        if (n_layers == 0 || n_layers > LG_LAZY_LAYERS_MAX)
                return lg_error_setm(err, EINVAL, "lazy artifact: %zu layers (1..%u)", n_layers, LG_LAZY_LAYERS_MAX);
        struct lg_lazy_artifact a = {.chunk_size = chunk_size};
        int rc = subject_desc(r, subject, &a.subject, err);
        if (rc < 0)
                return rc;
        if (!(a.layers = calloc(n_layers, sizeof(*a.layers))))
                return lg_error_set(err, ENOMEM, "lazy artifact");
        a.n_layers = n_layers;
        for (size_t i = 0; rc >= 0 && i < n_layers; i++) {
                const struct lg_lazy_push_layer *p = &layers[i];
                struct lg_lazy_layer *l = &a.layers[i];
                if (!lg_image_digest_valid(p->layer) || !lg_image_digest_valid(p->diff_id)) {
                        rc = lg_error_setm(err, EINVAL, "lazy artifact: layer %zu has a malformed digest", i);
                        break;
                }
                memcpy(l->layer, p->layer, 72);
                memcpy(l->diff_id, p->diff_id, 72);
                rc = push_file(r, p->meta, &l->meta, err);
                if (rc >= 0)
                        rc = push_file(r, p->chunks, &l->chunks, err);
                if (rc >= 0)
                        rc = push_file(r, p->blob, &l->blob, err);
                if (rc >= 0 && p->prefetch)
                        rc = push_file(r, p->prefetch, &l->prefetch, err);
        }
        char *cfg = NULL, *man = NULL;
        size_t cfg_len = 0, man_len = 0;
        if (rc >= 0)
                rc = lg_lazy_artifact_build(&a, &cfg, &cfg_len, &man, &man_len, err);
        if (rc >= 0)
                rc = lg_registry_blob_push_buf(r, cfg, cfg_len, NULL, err);
        bool indexed = false;
        if (rc >= 0)
                rc = lg_registry_manifest_push_subject(r, NULL, MT_OCI_MANIFEST, man, man_len, digest_out, &indexed, err);
        free(cfg);
        /* A registry that answers OCI-Subject indexes the artifact itself;
         * else (OCI 1.1) the tag schema: read, merge, write the index. Two
         * pushes racing on one tag can lose one entry; the artifact stays
         * and a later push adds it again. */
        if (rc >= 0 && !indexed) {
                char tag[72], *idx = NULL;
                size_t idx_len = 0;
                struct lg_registry_manifest old = {0};
                struct lg_oci_descriptor add = {.size = man_len};
                snprintf(add.media_type, sizeof(add.media_type), "%s", MT_OCI_MANIFEST);
                snprintf(add.artifact_type, sizeof(add.artifact_type), "%s", LG_LAZY_ARTIFACT_TYPE);
                memcpy(add.digest, a.digest, 72);
                rc = lg_registry_referrers_tag(subject, tag, err);
                int g = rc >= 0 ? lg_registry_manifest_get(r, tag, MT_OCI_INDEX, &old, err) : rc;
                if (g < 0 && g != -ENOENT)
                        rc = g;
                if (rc >= 0)
                        rc = lg_lazy_index_merge(g < 0 ? NULL : old.buf, old.len, &add, &idx, &idx_len, err);
                if (rc >= 0)
                        rc = lg_registry_manifest_push(r, tag, MT_OCI_INDEX, idx, idx_len, NULL, err);
                free(idx);
                lg_registry_manifest_clear(&old);
        }
        free(man);
        lg_lazy_artifact_clear(&a);
        return rc < 0 ? rc : 0;
}

int lg_lazy_artifact_find(lg_registry *r, const char *subject, struct lg_lazy_artifact *ret,
                          struct lg_error *err) {
        memset(ret, 0, sizeof(*ret));
        struct lg_registry_manifest idx, man;
        int rc = lg_registry_referrers(r, subject, &idx, NULL, err);
        if (rc < 0)
                return rc;
        struct lg_oci_descriptor d;
        rc = lg_lazy_index_find(idx.buf, idx.len, LG_LAZY_ARTIFACT_TYPE, &d, err);
        lg_registry_manifest_clear(&idx);
        if (rc < 0)
                return rc;
        rc = lg_registry_manifest_get(r, d.digest, MT_OCI_MANIFEST, &man, err);
        if (rc < 0)
                return lg_error_wrap(err, rc, "lazy artifact");
        rc = lg_lazy_manifest_parse(man.buf, man.len, man.digest, ret, err);
        lg_registry_manifest_clear(&man);
        if (rc >= 0 && strcmp(ret->subject.digest, subject))
                rc = lg_error_setm(err, EINVAL, "lazy artifact %s refers to %s, not to %s", d.digest,
                                   ret->subject.digest, subject);
        char *cfg = NULL;
        size_t cfg_len = 0;
        if (rc >= 0)
                rc = lg_registry_blob_read(r, ret->config.digest, LG_LAZY_CONFIG_MAX, &cfg, &cfg_len, err);
        if (rc >= 0)
                rc = lg_lazy_config_parse(ret, cfg, cfg_len, err);
        free(cfg);
        if (rc < 0)
                lg_lazy_artifact_clear(ret);
        return rc;
}
