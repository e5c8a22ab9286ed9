/* `legion image convert --push`: the lazy artifact of a converted image
 * goes to the registry of the image's name (lazy-artifact.h does the
 * artifact, the blobs and the referrers index). A converted layer keeps
 * no BLOB (its chunks are in the chunk store): it is made again here from
 * the chunks, each verified as it is read, into lazy/tmp/push-<rand>/,
 * and must hash to the BLOB digest recorded at convert. A node's prefetch
 * record of the BLOB (lazy/prefetch/<blob hex>, from its own reads) goes
 * along when there is one. */
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/image-internal.h"
#include "image/lazy-artifact.h"
#include "lazy/lazy.h"

/* Registry and repository of a normalized name "HOST/REPO[:TAG][@DIGEST]". */
static int split_name(const char *name, char host[256], char repo[256], struct lg_error *err) {
        const char *slash = strchr(name, '/');
        if (!slash || (size_t) (slash - name) >= 256)
                return lg_error_setm(err, EINVAL, "`%s` names no registry", name);
        snprintf(host, 256, "%.*s", (int) (slash - name), name);
        const char *rest = slash + 1;
        size_t len = strcspn(rest, "@");
        const char *last = memrchr(rest, '/', len);
        const char *colon = memchr(last ? last : rest, ':', len - (size_t) ((last ? last : rest) - rest));
        if (colon)
                len = (size_t) (colon - rest);
        if (len == 0 || len >= 256)
                return lg_error_setm(err, EINVAL, "`%s` names no repository", name);
        snprintf(repo, 256, "%.*s", (int) len, rest);
        return 0;
}

/* The name to push to: ref when it is one of img's names, else its first. */
static int push_name(const char *ref, const struct lg_image *img, char out[512], struct lg_error *err) {
        char norm[512];
        bool named = lg_image_normalize(ref, norm, sizeof(norm), NULL) >= 0;
        for (size_t i = 0; named && img->names && img->names[i]; i++)
                if (!strcmp(img->names[i], norm)) {
                        snprintf(out, 512, "%s", norm);
                        return 0;
                }
        if (!img->names || !img->names[0])
                return lg_error_setm(err, EINVAL, "image %.19s has no name, so no registry to push to", img->id);
        snprintf(out, 512, "%s", img->names[0]);
        return 0;
}

/* The BLOB of lazy layer hex, made again from the chunk store into path,
 * checked against digest. */
static int assemble_blob(lg_image_store *st, lg_chunk_store *cs, const char *hex, const char *digest,
                         const char *path, struct lg_error *err) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/layers/%s/" LG_LAZY_CHUNKS, st->lazy_dir, hex);
        lg_chunk_table *t = NULL;
        int r = lg_chunk_table_load(p, &t, err);
        if (r < 0)
                return r;
        uint64_t have = 0;
        (void) lg_chunk_store_local(cs, t, &have, NULL);
        if (have < lg_chunk_table_count(t)) {
                r = lg_error_setm(err, ENOENT,
                                  "layer %.12s is lazy here and only %llu of its %zu chunks are local (pull the image "
                                  "with --lazy never to push its lazy form)",
                                  hex, (unsigned long long) have, lg_chunk_table_count(t));
                lg_chunk_table_free(t);
                return r;
        }
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        void *buf = malloc(lg_chunk_table_chunk_size(t));
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (fd < 0)
                r = lg_error_set(err, errno, "create `%s`", path);
        else if (!buf || !md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
                r = lg_error_set(err, ENOMEM, "push");
        for (size_t i = 0; r >= 0 && i < lg_chunk_table_count(t); i++) {
                const struct lg_chunk *c = lg_chunk_table_at(t, i);
                if ((r = lg_chunk_store_get(cs, c->sha256, buf, c->length, err)) < 0)
                        r = lg_error_wrap(err, r, "layer %.12s, chunk %zu", hex, i);
                else if ((r = lg_pwrite_all(fd, buf, c->length, (off_t) c->offset)) < 0)
                        r = lg_error_set(err, r, "write `%s`", path);
                else
                        EVP_DigestUpdate(md, buf, c->length);
        }
        unsigned char sum[32];
        unsigned n = 0;
        char got[72] = "sha256:";
        if (r >= 0 && EVP_DigestFinal_ex(md, sum, &n) == 1)
                for (unsigned i = 0; i < 32; i++)
                        snprintf(got + 7 + 2 * i, 3, "%02x", sum[i]);
        if (r >= 0 && strcmp(got, digest))
                r = lg_error_setm(err, EBADMSG, "layer %.12s: its chunks make a BLOB of %.19s, not %.19s", hex, got,
                                  digest);
        EVP_MD_CTX_free(md);
        free(buf);
        lg_chunk_table_free(t);
        return r;
}

int lg_image_lazy_push(lg_image_store *st, struct lg_chunk_store *cs, const char *ref, const struct lg_image *img,
                       const struct lg_image_manifest *m, struct lg_image_convert_result *ret,
                       const struct lg_registry_auth *auth, lg_image_progress_cb progress, void *ud,
                       struct lg_error *err) {
        char name[512], host[256], repo[256];
        int r = push_name(ref, img, name, err);
        if (r >= 0)
                r = split_name(name, host, repo, err);
        if (r < 0)
                return r;
        uint32_t chunk_size = ret->n_layers ? ret->layers[0].chunk_size : 0;
        for (size_t i = 0; i < ret->n_layers; i++)
                if (ret->layers[i].chunk_size != chunk_size)
                        return lg_error_setm(err, EINVAL,
                                             "the layers' lazy forms have chunk sizes %u and %u: one artifact has one "
                                             "(convert with --chunk-size)",
                                             chunk_size, ret->layers[i].chunk_size);
        char tmp[PATH_MAX], rnd[17];
        if ((r = lg_random_hex(rnd, 8)) < 0)
                return lg_error_set(err, r, "make a temporary name");
        snprintf(tmp, sizeof(tmp), "%s/tmp/push-%s", st->lazy_dir, rnd);
        if (mkdir(tmp, 0700) < 0)
                return lg_error_set(err, errno, "create `%s`", tmp);
        struct lg_lazy_push_layer *pl = calloc(m->n_layers + 1, sizeof(*pl));
        char(*paths)[4][PATH_MAX] = calloc(m->n_layers + 1, sizeof(*paths));
        size_t n = 0;
        if (!pl || !paths)
                r = lg_error_set(err, ENOMEM, "push");
        for (size_t i = 0; i < m->n_layers && r >= 0; i++) {
                const struct lg_image_convert_layer *cl = &ret->layers[i];
                const char *hex = cl->digest + 7;
                bool dup = false;
                for (size_t k = 0; k < n && !dup; k++)
                        dup = !strcmp(pl[k].layer, cl->digest);
                if (dup)
                        continue;
                if (progress)
                        progress(ud, "push", cl->digest, 0, cl->blob_size);
                snprintf(paths[n][0], PATH_MAX, "%s/layers/%s/" LG_LAZY_META, st->lazy_dir, hex);
                snprintf(paths[n][1], PATH_MAX, "%s/layers/%s/" LG_LAZY_CHUNKS, st->lazy_dir, hex);
                snprintf(paths[n][2], PATH_MAX, "%s/%s.blob", tmp, hex);
                snprintf(paths[n][3], PATH_MAX, "%s/prefetch/%s", st->lazy_dir, cl->blob_digest + 7);
                r = assemble_blob(st, cs, hex, cl->blob_digest, paths[n][2], err);
                pl[n] = (struct lg_lazy_push_layer){
                        .layer = cl->digest,
                        .diff_id = m->layers[i].diff_id,
                        .meta = paths[n][0],
                        .chunks = paths[n][1],
                        .blob = paths[n][2],
                        .prefetch = access(paths[n][3], F_OK) == 0 ? paths[n][3] : NULL,
                };
                n++;
        }
        lg_registry *reg = NULL;
        if (r >= 0 && (r = lg_registry_open(host, repo, auth, &reg, err)) >= 0)
                r = lg_lazy_artifact_push(reg, img->digest, chunk_size, pl, n, ret->artifact, err);
        if (r >= 0) {
                ret->pushed = true;
                snprintf(ret->pushed_to, sizeof(ret->pushed_to), "%s", name);
        } else {
                lg_error_wrap(err, r, "push the lazy form to %s", name);
        }
        lg_registry_close(reg);
        free(pl);
        free(paths);
        (void) lg_rm_rf(tmp);
        return r;
}
