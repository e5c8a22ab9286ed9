/* Function packages as OCI artifacts (lazy-package.h): the push of a
 * package's archive and lazy form, and on a node the resolve of such an
 * artifact, the fetch of its lazy part into the lazy store, or of its
 * archive (the fallback). The artifact's format is lazy-artifact.h's;
 * blobs go through the registry client (registry.h), which verifies what
 * it reads whole against its digest. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "image/image-internal.h"
#include "image/lazy-artifact.h"
#include "image/lazy-package.h"
#include "image/registry.h"
#include "lazy/chunks.h"
#include "lazy/lazy.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"

#define META_MAX (256ull << 20)   /* the EROFS metadata of a package's tree */
#define CHUNKS_MAX (64ull << 20)  /* 1.4 M chunks: 87 GiB at 64 KiB */

/* ---- small helpers ------------------------------------------------------- */

/* A whole small blob into memory (NUL-terminated), verified. */
static int fetch_small(lg_registry *reg, const char *digest, uint64_t size, uint64_t max, const char *what,
                       char **ret, struct lg_error *err) {
        if (size > max)
                return lg_error_setm(err, EFBIG, "the package's %s is %llu bytes, more than %llu", what,
                                     (unsigned long long) size, (unsigned long long) max);
        size_t len = 0;
        int r = lg_registry_blob_read(reg, digest, size, ret, &len, err);
        if (r < 0)
                return lg_error_wrap(err, r, "the package's %s", what);
        if (len != size) {
                free(*ret);
                *ret = NULL;
                return lg_error_setm(err, EBADMSG, "the package's %s is %zu bytes, not %llu", what, len,
                                     (unsigned long long) size);
        }
        return 0;
}

static int sink_fd(void *ud, const void *buf, size_t len, struct lg_error *err) {
        int r = lg_write_all(*(int *) ud, buf, len);
        return r < 0 ? lg_error_set(err, -r, "write") : 0;
}

/* A blob into a new file at path, verified (by the client); removed on
 * failure. */
static int fetch_file(lg_registry *reg, const char *digest, uint64_t size, const char *path, const char *what,
                      struct lg_error *err) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return lg_error_set(err, errno, "create `%s`", path);
        int r = lg_registry_blob_get(reg, digest, size, sink_fd, &fd, err);
        if (r < 0)
                lg_error_wrap(err, r, "the package's %s", what);
        if (r >= 0 && fsync(fd) < 0)
                r = lg_error_set(err, errno, "fsync `%s`", path);
        if (r < 0)
                unlink(path);
        return r < 0 ? r : 0;
}

/* ---- push ------------------------------------------------------------------ */

/* Push the file at path as a blob into b. */
static int push_file(lg_registry *reg, const char *path, struct lg_lazy_blob *b, struct lg_error *err) {
        int r = lg_registry_blob_push_path(reg, path, b->digest, &b->size, err);
        return r < 0 ? lg_error_wrap(err, r, "push `%s`", path) : 0;
}

/* Build the lazy form of p->tree in dir and push its blobs into l. */
static int push_lazy(lg_registry *reg, const struct lg_package_push *p, const char *dir, struct lg_lazy_layer *l,
                     struct lg_package_pushed *ret, struct lg_error *err) {
        uint32_t cs = p->chunk_size ? p->chunk_size : 65536;
        struct lg_lazy_build_result res = {0};
        int r = lg_lazy_build(p->tree, dir, cs, NULL, &res, err);
        if (r < 0)
                return lg_error_wrap(err, r, "lazy form of the package");
        static const char *const files[] = {LG_LAZY_META, LG_LAZY_CHUNKS, LG_LAZY_BLOB};
        struct lg_lazy_blob *blobs[] = {&l->meta, &l->chunks, &l->blob};
        char path[4200];
        for (int i = 0; i < 3 && r >= 0; i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
                r = push_file(reg, path, blobs[i], err);
        }
        if (r < 0)
                return r;
        ret->lazy = true;
        ret->meta_size = res.meta_size;
        ret->blob_size = res.blob_size;
        ret->n_chunks = res.n_chunks;
        ret->chunk_size = cs;
        return 0;
}

int lg_package_push(const struct lg_package_push *p, struct lg_package_pushed *ret, struct lg_error *err) {
        memset(ret, 0, sizeof(*ret));
        struct lg_image_ref ref;
        int r = lg_image_ref_split(p->ref, &ref, err);
        if (r < 0)
                return r;
        if (ref.by_digest)
                return lg_error_setm(err, EINVAL, "push to a tag (`%s` names a digest)", ref.name);
        _cleanup_registry_ lg_registry *reg = NULL;
        r = lg_registry_open(ref.registry, ref.repository, p->auth, &reg, err);
        if (r < 0)
                return r;
        struct lg_lazy_layer layer = {0};
        struct lg_lazy_artifact a = {.package = true, .no_lazy = p->without_lazy};
        r = push_file(reg, p->archive, &a.archive, err);
        if (r >= 0 && strcmp(a.archive.digest + 7, p->archive_hex))
                r = lg_error_setm(err, EBADMSG, "the package archive changed while it was pushed");
        ret->archive_size = a.archive.size;
        char dir[4200] = "", rnd[17];
        if (r >= 0 && !p->without_lazy && (r = lg_random_hex(rnd, 8)) >= 0) {
                snprintf(dir, sizeof(dir), "%s/push-%s", p->tmp_dir, rnd);
                if (lg_mkdir_p(dir, 0700) < 0)
                        r = lg_error_set(err, errno, "create `%s`", dir);
                else
                        r = push_lazy(reg, p, dir, &layer, ret, err);
                memcpy(layer.layer, a.archive.digest, sizeof(layer.layer));
                memcpy(layer.diff_id, a.archive.digest, sizeof(layer.diff_id));
                a.layers = &layer;
                a.n_layers = 1;
                a.chunk_size = ret->chunk_size;
        }
        /* The artifact: lazy-artifact.h's, of a package. */
        char *config = NULL, *manifest = NULL;
        size_t config_len = 0, manifest_len = 0;
        if (r >= 0)
                r = lg_lazy_artifact_build(&a, &config, &config_len, &manifest, &manifest_len, err);
        if (r >= 0 && (r = lg_registry_blob_push_buf(reg, config, config_len, NULL, err)) < 0)
                lg_error_wrap(err, r, "push the package config");
        if (r >= 0 && (r = lg_registry_manifest_push(reg, ref.reference, MT_OCI_MANIFEST, manifest, manifest_len,
                                                     ret->digest, err)) < 0)
                lg_error_wrap(err, r, "push the package manifest");
        free(config);
        free(manifest);
        if (dir[0])
                lg_rm_rf(dir);
        return r < 0 ? r : 0;
}

/* ---- resolve ----------------------------------------------------------------- */

int lg_package_resolve(const struct lg_image_ref *ref, const struct lg_registry_auth *auth,
                       struct lg_package_artifact *ret, struct lg_error *err) {
        memset(ret, 0, sizeof(*ret));
        _cleanup_registry_ lg_registry *reg = NULL;
        int r = lg_registry_open(ref->registry, ref->repository, auth, &reg, err);
        if (r < 0)
                return r;
        struct lg_registry_manifest m = {0};
        struct lg_lazy_artifact a = {0};
        r = lg_registry_manifest_get(reg, ref->reference, MT_OCI_MANIFEST, &m, err);
        if (r >= 0 && (r = lg_lazy_manifest_parse(m.buf, m.len, m.digest, &a, err)) >= 0 && !a.package)
                r = lg_error_setm(err, EINVAL, "its artifactType is " LG_LAZY_ARTIFACT_TYPE " (an image's lazy form)");
        if (r == -EINVAL || r == -EFBIG)
                lg_error_wrap(err, r = -EINVAL, "`%s` is not a legion package", ref->name);
        lg_registry_manifest_clear(&m);
        if (r < 0) {
                lg_lazy_artifact_clear(&a);
                return r;
        }
        snprintf(ret->digest, sizeof(ret->digest), "%s", a.digest);
        snprintf(ret->archive, sizeof(ret->archive), "%s", a.archive.digest);
        ret->archive_size = a.archive.size;
        /* The lazy form's problems are no failure: the archive is the
         * fallback, and the reason is kept. */
        char *config = NULL;
        size_t len = 0;
        struct lg_error cerr = {0};
        if (a.no_lazy)
                snprintf(ret->lazy_reason, sizeof(ret->lazy_reason), "the artifact has no lazy form (only the archive)");
        else if (lg_registry_blob_read(reg, a.config.digest, LG_LAZY_CONFIG_MAX, &config, &len, &cerr) < 0 ||
                 lg_lazy_config_parse(&a, config, len, &cerr) < 0)
                snprintf(ret->lazy_reason, sizeof(ret->lazy_reason), "%s", cerr.msg);
        else {
                const struct lg_lazy_layer *l = &a.layers[0];
                ret->lazy = true;
                ret->chunk_size = a.chunk_size;
                snprintf(ret->meta, sizeof(ret->meta), "%s", l->meta.digest);
                snprintf(ret->chunks, sizeof(ret->chunks), "%s", l->chunks.digest);
                snprintf(ret->blob, sizeof(ret->blob), "%s", l->blob.digest);
                ret->meta_size = l->meta.size;
                ret->chunks_size = l->chunks.size;
                ret->blob_size = l->blob.size;
        }
        free(config);
        lg_lazy_artifact_clear(&a);
        return 0;
}

/* ---- fetch ------------------------------------------------------------------- */

static bool is_local_registry(const char *host) {
        return !strncmp(host, "127.0.0.1", 9) || !strncmp(host, "localhost", 9) || !strncmp(host, "[::1]", 5);
}

int lg_package_fetch_lazy(const struct lg_image_ref *ref, const struct lg_registry_auth *auth,
                          const struct lg_package_artifact *a, const char *lazy_dir, struct lg_error *err) {
        if (!a->lazy)
                return lg_error_setm(err, ENOTSUP, "%s", a->lazy_reason);
        char dest[4096], tmp[4096], path[4200];
        snprintf(dest, sizeof(dest), "%s/layers/%s", lazy_dir, a->archive + 7);
        snprintf(path, sizeof(path), "%s/chunks", dest);
        if (access(path, F_OK) == 0)
                return 1;
        char rnd[17];
        lg_random_hex(rnd, 8);
        snprintf(tmp, sizeof(tmp), "%s/tmp/pkg-%s", lazy_dir, rnd);
        if (lg_mkdir_p(tmp, 0700) < 0)
                return lg_error_set(err, errno, "create `%s`", tmp);
        snprintf(path, sizeof(path), "%s/layers", lazy_dir);
        lg_mkdir_p(path, 0700);
        lg_registry *reg = NULL;
        int r = lg_registry_open(ref->registry, ref->repository, auth, &reg, err);
        char *chunks = NULL;
        if (r >= 0 && a->meta_size > META_MAX)
                r = lg_error_setm(err, EFBIG, "the package's EROFS meta is %llu bytes, more than 256 MiB",
                                  (unsigned long long) a->meta_size);
        if (r >= 0) {
                snprintf(path, sizeof(path), "%s/meta.erofs", tmp);
                r = fetch_file(reg, a->meta, a->meta_size, path, "EROFS meta", err);
        }
        if (r >= 0)
                r = fetch_small(reg, a->chunks, a->chunks_size, CHUNKS_MAX, "chunk table", &chunks, err);
        lg_chunk_table *t = NULL;
        if (r >= 0 && (r = lg_chunk_table_parse(chunks, a->chunks_size, &t, err)) < 0)
                lg_error_wrap(err, r, "the package's chunk table");
        if (r >= 0 && lg_chunk_table_blob_size(t) != a->blob_size)
                r = lg_error_setm(err, EINVAL, "the package's chunk table describes a blob of %llu bytes, not %llu",
                                  (unsigned long long) lg_chunk_table_blob_size(t), (unsigned long long) a->blob_size);
        lg_chunk_table_free(t);
        if (r >= 0) {
                snprintf(path, sizeof(path), "%s/chunks", tmp);
                _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                r = fd < 0 ? -errno : lg_write_all(fd, chunks, a->chunks_size);
                if (r >= 0 && fsync(fd) < 0)
                        r = -errno;
                if (r < 0)
                        lg_error_set(err, -r, "write `%s`", path);
        }
        free(chunks);
        lg_registry_close(reg);
        if (r >= 0) {
                /* Where the fetcher finds the blob (credentials too: 0600). */
                bool insecure = (auth && auth->insecure) || is_local_registry(ref->registry);
                json_t *src = json_pack("{s:s, s:s, s:s, s:b}", "registry", ref->registry, "repository",
                                        ref->repository, "digest", a->blob, "insecure", insecure);
                if (src && auth && auth->username && *auth->username) {
                        json_object_set_new(src, "username", json_string(auth->username));
                        json_object_set_new(src, "password", json_string(auth->password ? auth->password : ""));
                }
                snprintf(path, sizeof(path), "%s/source.json", tmp);
                r = src ? json_dump_file(src, path, JSON_COMPACT) : -1;
                json_decref(src);
                if (r < 0 || chmod(path, 0600) < 0)
                        r = lg_error_set(err, EIO, "write `%s`", path);
        }
        if (r >= 0 && rename(tmp, dest) < 0) {
                /* Another fetch of the same package won the race: its copy stays. */
                r = errno == EEXIST || errno == ENOTEMPTY ? 1 : lg_error_set(err, errno, "rename to `%s`", dest);
        }
        if (r != 0)
                lg_rm_rf(tmp);
        return r;
}

int lg_package_fetch_archive(const struct lg_image_ref *ref, const struct lg_registry_auth *auth,
                             const struct lg_package_artifact *a, const char *path, uint64_t max_bytes,
                             struct lg_error *err) {
        if (a->archive_size > max_bytes) {
                char lim[64];
                lg_fmt_size(max_bytes, lim, sizeof(lim));
                return lg_error_setm(err, EFBIG, "the package archive is %llu bytes, more than the limit of %s",
                                     (unsigned long long) a->archive_size, lim);
        }
        lg_registry *reg = NULL;
        int r = lg_registry_open(ref->registry, ref->repository, auth, &reg, err);
        if (r >= 0)
                r = fetch_file(reg, a->archive, a->archive_size, path, "archive", err);
        lg_registry_close(reg);
        return r;
}
