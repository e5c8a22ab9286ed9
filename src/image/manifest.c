/* Manifests and image configs: parsing an OCI or Docker schema 2 manifest
 * and its config into struct lg_image, and lg_image_commit, the one path
 * by which an image whose blobs are stored (by import or pull) becomes an
 * image: check the blobs, extract the layers, record it in the index. */
#include <inttypes.h>
#include <jansson.h>
#include <string.h>
#include <time.h>

#include "image/image-internal.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"

int lg_image_layer_compression(const char *mt) {
        static const struct {
                const char *type;
                int comp;
        } types[] = {
                {"application/vnd.oci.image.layer.v1.tar", 0},
                {"application/vnd.oci.image.layer.v1.tar+gzip", 1},
                {"application/vnd.oci.image.layer.v1.tar+zstd", 2},
                {"application/vnd.oci.image.layer.nondistributable.v1.tar", 0},
                {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", 1},
                {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", 2},
                {"application/vnd.docker.image.rootfs.diff.tar", 0},
                {"application/vnd.docker.image.rootfs.diff.tar.gzip", 1},
                {"application/vnd.docker.image.rootfs.diff.tar.zstd", 2},
                {"application/vnd.docker.image.rootfs.foreign.diff.tar", 0},
                {"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", 1},
        };
        if (!mt)
                return -1;
        for (size_t i = 0; i < ARRAY_SIZE(types); i++)
                if (!strcmp(mt, types[i].type))
                        return types[i].comp;
        return -1;
}

void lg_image_manifest_free(struct lg_image_manifest *m) {
        if (!m)
                return;
        free(m->layers);
        m->layers = NULL;
        m->n_layers = 0;
}

void lg_image_strv_free(char **v) {
        if (!v)
                return;
        for (size_t i = 0; v[i]; i++)
                free(v[i]);
        free(v);
}

int lg_image_strv_dup(char *const *v, char ***ret) {
        *ret = NULL;
        if (!v)
                return 0;
        size_t n = 0;
        while (v[n])
                n++;
        char **c = calloc(n + 1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (!(c[i] = strdup(v[i]))) {
                        lg_image_strv_free(c);
                        return -ENOMEM;
                }
        *ret = c;
        return 0;
}

/* Keep lg_image_clear and lg_image_copy in step with struct lg_image. */
void lg_image_clear(struct lg_image *img) {
        if (!img)
                return;
        lg_image_strv_free(img->names);
        lg_image_strv_free(img->layer_dirs);
        lg_image_strv_free(img->layer_digests);
        lg_image_strv_free(img->entrypoint);
        lg_image_strv_free(img->cmd);
        lg_image_strv_free(img->env);
        free(img->working_dir);
        free(img->user);
        memset(img, 0, sizeof(*img));
}

void lg_image_free(struct lg_image *img) {
        lg_image_clear(img);
        free(img);
}

static int strdup_opt(const char *s, char **ret) {
        *ret = NULL;
        return s && !(*ret = strdup(s)) ? -ENOMEM : 0;
}

int lg_image_copy(const struct lg_image *src, char *const *names, struct lg_image **ret) {
        *ret = NULL;
        struct lg_image *img = malloc(sizeof(*img));
        if (!img)
                return -ENOMEM;
        *img = *src;
        img->names = img->layer_dirs = img->layer_digests = img->entrypoint = img->cmd = img->env = NULL;
        img->working_dir = img->user = NULL;
        if (lg_image_strv_dup(names, &img->names) < 0 || lg_image_strv_dup(src->layer_dirs, &img->layer_dirs) < 0 ||
            lg_image_strv_dup(src->layer_digests, &img->layer_digests) < 0 ||
            lg_image_strv_dup(src->entrypoint, &img->entrypoint) < 0 || lg_image_strv_dup(src->cmd, &img->cmd) < 0 ||
            lg_image_strv_dup(src->env, &img->env) < 0 || strdup_opt(src->working_dir, &img->working_dir) < 0 ||
            strdup_opt(src->user, &img->user) < 0) {
                lg_image_free(img);
                return -ENOMEM;
        }
        *ret = img;
        return 0;
}

/* A descriptor's digest and size; what names it in messages. */
static int descriptor(json_t *d, char digest[LG_DIGEST_MAX], uint64_t *size, const char *what,
                      struct lg_error *err) {
        if (!json_is_object(d))
                return lg_error_setm(err, EINVAL, "manifest: %s is not an object", what);
        const char *dg = json_string_value(json_object_get(d, "digest"));
        json_t *sz = json_object_get(d, "size");
        char hex[65];
        int r = lg_image_digest_hex(dg, hex, what, err);
        if (r < 0)
                return lg_error_wrap(err, r, "manifest");
        if (!json_is_integer(sz) || json_integer_value(sz) < 0)
                return lg_error_setm(err, EINVAL, "manifest: %s has no valid size", what);
        snprintf(digest, LG_DIGEST_MAX, "sha256:%s", hex);
        *size = (uint64_t) json_integer_value(sz);
        return 0;
}

int lg_image_manifest_parse(const lg_image_store *st, const char *text, size_t len, struct lg_image_manifest *m,
                            struct lg_error *err) {
        memset(m, 0, sizeof(*m));
        json_error_t je;
        json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
        if (!root)
                return lg_error_setm(err, EINVAL, "manifest is not valid JSON: %s (line %d)", je.text, je.line);
        int r = 0;
        if (!json_is_object(root)) {
                r = lg_error_setm(err, EINVAL, "manifest is not a JSON object");
                goto out;
        }
        json_t *sv = json_object_get(root, "schemaVersion");
        const char *mt = json_string_value(json_object_get(root, "mediaType"));
        if (json_is_integer(sv) && json_integer_value(sv) == 1) {
                r = lg_error_setm(err, ENOTSUP, "Docker image manifest schema 1 is not supported (deprecated by "
                                                "Docker; push the image again with a current client)");
                goto out;
        }
        if (!json_is_integer(sv) || json_integer_value(sv) != 2) {
                r = lg_error_setm(err, EINVAL, "manifest: schemaVersion is not 2");
                goto out;
        }
        if (mt && (!strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST))) {
                r = lg_error_setm(err, ENOTSUP, "manifest is an image index (%s): a platform must be chosen first",
                                  mt);
                goto out;
        }
        if (!mt && json_object_get(root, "manifests")) {
                r = lg_error_setm(err, ENOTSUP, "manifest is an image index: a platform must be chosen first");
                goto out;
        }
        if (mt && strcmp(mt, MT_OCI_MANIFEST) != 0 && strcmp(mt, MT_DOCKER_MANIFEST) != 0) {
                char shown[128];
                lg_printable(mt, shown, sizeof(shown));
                r = lg_error_setm(err, ENOTSUP, "manifest media type `%s` is not supported", shown);
                goto out;
        }
        json_t *cfg = json_object_get(root, "config");
        r = descriptor(cfg, m->config, &m->config_size, "config", err);
        if (r < 0)
                goto out;
        const char *cmt = json_string_value(json_object_get(cfg, "mediaType"));
        if (!cmt || (strcmp(cmt, MT_OCI_CONFIG) != 0 && strcmp(cmt, MT_DOCKER_CONFIG) != 0)) {
                char shown[128];
                lg_printable(cmt, shown, sizeof(shown));
                r = lg_error_setm(err, ENOTSUP, "config media type `%s` is not supported (not a container image?)",
                                  shown);
                goto out;
        }
        json_t *layers = json_object_get(root, "layers");
        if (!json_is_array(layers)) {
                r = lg_error_setm(err, EINVAL, "manifest: layers is not an array");
                goto out;
        }
        size_t n = json_array_size(layers);
        if (n > st->lim.max_layers) {
                r = lg_error_setm(err, EINVAL, "manifest has %zu layers, more than the limit of %u", n,
                                  st->lim.max_layers);
                goto out;
        }
        m->layers = calloc(n + 1, sizeof(*m->layers));
        if (!m->layers) {
                r = lg_error_set(err, ENOMEM, "parse manifest");
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                json_t *l = json_array_get(layers, i);
                char what[32];
                snprintf(what, sizeof(what), "layer %zu", i);
                r = descriptor(l, m->layers[i].digest, &m->layers[i].size, what, err);
                if (r < 0)
                        goto out;
                const char *lmt = json_string_value(json_object_get(l, "mediaType"));
                if (lg_image_layer_compression(lmt) < 0) {
                        char shown[128];
                        lg_printable(lmt, shown, sizeof(shown));
                        r = lg_error_setm(err, ENOTSUP, "manifest: layer %zu media type `%s` is not supported", i,
                                          shown);
                        goto out;
                }
                snprintf(m->layers[i].media_type, sizeof(m->layers[i].media_type), "%s", lmt);
                m->n_layers++;
        }
out:
        json_decref(root);
        if (r < 0)
                lg_image_manifest_free(m);
        return r;
}

/* RFC 3339 ("2024-01-02T03:04:05.123Z", "...+02:00") to seconds; 0 if
 * it is not one. */
static int64_t parse_time(const char *s) {
        if (!s)
                return 0;
        struct tm tm = {0};
        const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return 0;
        if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++) {
                }
        int64_t off = 0;
        if (*p == 'Z' || *p == 'z') {
                p++;
        } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
                int hh = (p[1] - '0') * 10 + (p[2] - '0'), mm = (p[4] - '0') * 10 + (p[5] - '0');
                off = (int64_t) (hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
                p += 6;
        } else {
                return 0;
        }
        if (*p)
                return 0;
        time_t t = timegm(&tm);
        if (t == (time_t) -1)
                return 0;
        return (int64_t) t - off;
}

/* A NULL-terminated copy of a JSON array of strings (NULL for null or
 * absent). */
static int strv_from_json(json_t *a, char ***ret, const char *what, struct lg_error *err) {
        *ret = NULL;
        if (!a || json_is_null(a))
                return 0;
        if (!json_is_array(a))
                return lg_error_setm(err, EINVAL, "config: %s is not an array of strings", what);
        size_t n = json_array_size(a);
        char **v = calloc(n + 1, sizeof(*v));
        if (!v)
                return lg_error_set(err, ENOMEM, "parse config");
        for (size_t i = 0; i < n; i++) {
                const char *s = json_string_value(json_array_get(a, i));
                if (!s) {
                        lg_image_strv_free(v);
                        return lg_error_setm(err, EINVAL, "config: %s[%zu] is not a string", what, i);
                }
                if (!(v[i] = strdup(s))) {
                        lg_image_strv_free(v);
                        return lg_error_set(err, ENOMEM, "parse config");
                }
        }
        *ret = v;
        return 0;
}

static int opt_string(json_t *o, const char *key, char **ret, struct lg_error *err) {
        *ret = NULL;
        json_t *v = json_object_get(o, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v))
                return lg_error_setm(err, EINVAL, "config: %s is not a string", key);
        if (!*json_string_value(v))
                return 0;
        if (!(*ret = strdup(json_string_value(v))))
                return lg_error_set(err, ENOMEM, "parse config");
        return 0;
}

static int parse_config(const char *text, size_t len, struct lg_image *img, struct lg_image_manifest *m,
                        struct lg_error *err) {
        json_error_t je;
        json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
        if (!root)
                return lg_error_setm(err, EINVAL, "config is not valid JSON: %s (line %d)", je.text, je.line);
        int r = 0;
        if (!json_is_object(root)) {
                r = lg_error_setm(err, EINVAL, "config is not a JSON object");
                goto out;
        }
        const char *os = json_string_value(json_object_get(root, "os"));
        const char *arch = json_string_value(json_object_get(root, "architecture"));
        snprintf(img->os, sizeof(img->os), "%s", os ? os : "");
        snprintf(img->architecture, sizeof(img->architecture), "%s", arch ? arch : "");
        img->created = parse_time(json_string_value(json_object_get(root, "created")));
        json_t *c = json_object_get(root, "config");
        if (c && !json_is_null(c)) {
                if (!json_is_object(c)) {
                        r = lg_error_setm(err, EINVAL, "config: config is not an object");
                        goto out;
                }
                if ((r = strv_from_json(json_object_get(c, "Entrypoint"), &img->entrypoint, "Entrypoint", err)) < 0 ||
                    (r = strv_from_json(json_object_get(c, "Cmd"), &img->cmd, "Cmd", err)) < 0 ||
                    (r = strv_from_json(json_object_get(c, "Env"), &img->env, "Env", err)) < 0 ||
                    (r = opt_string(c, "WorkingDir", &img->working_dir, err)) < 0 ||
                    (r = opt_string(c, "User", &img->user, err)) < 0)
                        goto out;
        }
        json_t *rootfs = json_object_get(root, "rootfs");
        const char *type = json_string_value(json_object_get(rootfs, "type"));
        json_t *ids = json_object_get(rootfs, "diff_ids");
        if (!type || strcmp(type, "layers") != 0 || !json_is_array(ids)) {
                r = lg_error_setm(err, EINVAL, "config: rootfs is not {\"type\": \"layers\", \"diff_ids\": [...]}");
                goto out;
        }
        if (json_array_size(ids) != m->n_layers) {
                r = lg_error_setm(err, EINVAL, "config lists %zu layer diff ids, the manifest %zu layers",
                                  json_array_size(ids), m->n_layers);
                goto out;
        }
        for (size_t i = 0; i < m->n_layers; i++) {
                char hex[65], what[48];
                snprintf(what, sizeof(what), "config: rootfs.diff_ids[%zu]", i);
                r = lg_image_digest_hex(json_string_value(json_array_get(ids, i)), hex, what, err);
                if (r < 0)
                        goto out;
                snprintf(m->layers[i].diff_id, sizeof(m->layers[i].diff_id), "sha256:%s", hex);
        }
out:
        json_decref(root);
        return r;
}

/* layer_dirs and layer_digests, uppermost first. A layer that occurs twice
 * is listed once, at its uppermost place: overlayfs refuses the same lower
 * dir twice, and the upper copy's files and whiteouts cover all that the
 * lower copy would do. */
static int fill_layers(lg_image_store *st, struct lg_image *img, const struct lg_image_manifest *m,
                       struct lg_error *err) {
        img->layer_dirs = calloc(m->n_layers + 1, sizeof(char *));
        img->layer_digests = calloc(m->n_layers + 1, sizeof(char *));
        if (!img->layer_dirs || !img->layer_digests)
                return lg_error_set(err, ENOMEM, "allocate image");
        size_t k = 0;
        for (size_t i = m->n_layers; i-- > 0;) {
                const struct lg_image_layer_desc *l = &m->layers[i];
                bool dup = false;
                for (size_t j = 0; j < k; j++)
                        dup |= !strcmp(img->layer_digests[j], l->digest);
                img->size += l->size;
                if (dup)
                        continue;
                if (asprintf(&img->layer_dirs[k], "%s/layers/%s", st->dir, l->digest + 7) < 0) {
                        img->layer_dirs[k] = NULL;
                        return lg_error_set(err, ENOMEM, "allocate image");
                }
                if (!(img->layer_digests[k] = strdup(l->digest)))
                        return lg_error_set(err, ENOMEM, "allocate image");
                k++;
        }
        img->n_layers = k;
        return 0;
}

int lg_image_load(lg_image_store *st, const char *manifest_digest, struct lg_image *img,
                  struct lg_image_manifest *mret, struct lg_error *err) {
        memset(img, 0, sizeof(*img));
        if (mret)
                memset(mret, 0, sizeof(*mret));
        _cleanup_free_ char *mtext = NULL, *ctext = NULL;
        size_t mlen, clen;
        struct lg_image_manifest m;
        int r = lg_image_blob_read(st, manifest_digest, st->lim.json_bytes, &mtext, &mlen, err);
        if (r < 0)
                return lg_error_wrap(err, r, "manifest");
        r = lg_image_manifest_parse(st, mtext, mlen, &m, err);
        if (r < 0)
                return r;
        r = lg_image_blob_read(st, m.config, st->lim.json_bytes, &ctext, &clen, err);
        if (r < 0) {
                r = lg_error_wrap(err, r, "config");
                goto out;
        }
        r = parse_config(ctext, clen, img, &m, err);
        if (r < 0)
                goto out;
        snprintf(img->id, sizeof(img->id), "%s", m.config);
        snprintf(img->digest, sizeof(img->digest), "%s", manifest_digest);
        r = fill_layers(st, img, &m, err);
out:
        if (r < 0) {
                lg_image_clear(img);
                lg_image_manifest_free(&m);
        } else if (mret) {
                *mret = m;
        } else {
                lg_image_manifest_free(&m);
        }
        return r;
}

/* The blob is stored with the size the manifest gives. */
static int check_blob(lg_image_store *st, const char *digest, uint64_t size, const char *what,
                      struct lg_error *err) {
        uint64_t have;
        int r = lg_image_blob_stat(st, digest + 7, &have);
        if (r == -ENOENT)
                return lg_error_setm(err, ENOENT, "%s blob %s is not in the store", what, digest);
        if (r < 0)
                return lg_error_set(err, r, "%s blob %s", what, digest);
        if (have != size)
                return lg_error_setm(err, EBADMSG, "%s blob %s is %" PRIu64 " bytes, the manifest says %" PRIu64,
                                     what, digest, have, size);
        return 0;
}

static void pending_all(lg_image_store *st, const char *mhex, const struct lg_image_manifest *m, bool add) {
        const char *hexes[2] = {mhex, m && m->config[0] ? m->config + 7 : NULL};
        for (size_t i = 0; i < 2; i++)
                if (hexes[i]) {
                        if (add)
                                (void) lg_image_pending_add(st, hexes[i]);
                        else
                                lg_image_pending_drop(st, hexes[i], true);
                }
        for (size_t i = 0; m && i < m->n_layers; i++) {
                if (add)
                        (void) lg_image_pending_add(st, m->layers[i].digest + 7);
                else
                        lg_image_pending_drop(st, m->layers[i].digest + 7, true);
        }
}

int lg_image_commit(lg_image_store *st, const char *manifest_digest, const char *name,
                    lg_image_progress_cb progress, void *ud, struct lg_image **ret, struct lg_error *err) {
        if (ret)
                *ret = NULL;
        char mhex[65], norm[512] = "";
        int r = lg_image_digest_hex(manifest_digest, mhex, "manifest", err);
        if (r < 0)
                return r;
        if (name && *name) {
                r = lg_image_normalize(name, norm, sizeof(norm), err);
                if (r < 0)
                        return r;
        }
        char mdigest[LG_DIGEST_MAX];
        snprintf(mdigest, sizeof(mdigest), "sha256:%s", mhex);
        /* From here until the index has it, GC leaves it alone. */
        (void) lg_image_pending_add(st, mhex);
        struct lg_image img;
        struct lg_image_manifest m;
        r = lg_image_load(st, mdigest, &img, &m, err);
        if (r < 0) {
                lg_image_pending_drop(st, mhex, true);
                return r;
        }
        lg_image_clear(&img);
        pending_all(st, NULL, &m, true);
        r = check_blob(st, m.config, m.config_size, "config", err);
        for (size_t i = 0; i < m.n_layers && r >= 0; i++) {
                char what[32];
                snprintf(what, sizeof(what), "layer %zu", i);
                /* A lazy layer is mounted from its EROFS form: no blob. */
                if (!lg_image_layer_is_lazy(st, m.layers[i].digest + 7))
                        r = check_blob(st, m.layers[i].digest, m.layers[i].size, what, err);
        }
        for (size_t i = 0; i < m.n_layers && r >= 0; i++)
                r = lg_image_layer_extract(st, &m.layers[i], progress, ud, err);
        if (r >= 0)
                r = lg_image_index_add(st, mdigest, m.config, norm[0] ? norm : NULL, err);
        pending_all(st, mhex, &m, false);
        lg_image_manifest_free(&m);
        if (r < 0)
                return r;
        if (progress)
                progress(ud, "done", mdigest, 0, 0);
        if (ret)
                return lg_image_get(st, mdigest, ret, err);
        return 0;
}
