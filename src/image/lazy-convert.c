/* `legion image convert` (lg_image_convert, image.h): an image's extracted
 * layers become lazy layers (docs/lazy-images.md). Each layer's tree goes
 * through lg_lazy_build (src/lazy) into lazy/tmp/, its chunks into the
 * node's chunk store; the BLOB itself is dropped (its chunks are the
 * store's) and made again from the chunks when it is pushed. The finished
 * directory is renamed to lazy/layers/<hex>/ with source.json
 * {"local": true, "digest": <BLOB digest>} and the marker `image` (GC of
 * the image store removes only lazy layers it made). */
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "extract/extract.h"
#include "image/image-internal.h"
#include "lazy/lazy.h"

void lg_image_convert_result_clear(struct lg_image_convert_result *r) {
        if (!r)
                return;
        free(r->layers);
        memset(r, 0, sizeof(*r));
}

static int cmp_sha(const void *a, const void *b) { return memcmp(a, b, 32); }

/* The bytes of t's distinct chunks. */
static uint64_t unique_bytes(const lg_chunk_table *t) {
        size_t n = lg_chunk_table_count(t);
        struct ent {
                uint8_t sha[32];
                uint32_t len;
        } *v = malloc((n ? n : 1) * sizeof(*v));
        if (!v)
                return 0;
        for (size_t i = 0; i < n; i++) {
                memcpy(v[i].sha, lg_chunk_table_at(t, i)->sha256, 32);
                v[i].len = lg_chunk_table_at(t, i)->length;
        }
        qsort(v, n, sizeof(*v), cmp_sha);
        uint64_t sum = 0;
        for (size_t i = 0; i < n; i++)
                if (i == 0 || memcmp(v[i].sha, v[i - 1].sha, 32))
                        sum += v[i].len;
        free(v);
        return sum;
}

/* Figures of the lazy form in lazy/layers/<hex>/ into out; -ENOENT when
 * there is none. */
static int existing_form(lg_image_store *st, const char *hex, struct lg_image_convert_layer *out,
                         struct lg_error *err) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/layers/%s/chunks", st->lazy_dir, hex);
        if (access(p, F_OK) < 0)
                return -ENOENT;
        lg_chunk_table *t = NULL;
        int r = lg_chunk_table_load(p, &t, err);
        if (r < 0)
                return lg_error_wrap(err, r, "lazy layer %.12s", hex);
        out->chunk_size = lg_chunk_table_chunk_size(t);
        out->blob_size = lg_chunk_table_blob_size(t);
        out->chunks = lg_chunk_table_count(t);
        out->unique_bytes = unique_bytes(t);
        lg_chunk_table_free(t);
        struct stat s;
        snprintf(p, sizeof(p), "%s/layers/%s/meta.erofs", st->lazy_dir, hex);
        out->meta_size = stat(p, &s) == 0 ? (uint64_t) s.st_size : 0;
        r = lg_image_lazy_source_digest(st, hex, out->blob_digest, err);
        return r < 0 ? r : 0;
}

/* Build layer l's lazy form and put it in place. */
static int build_layer(lg_image_store *st, lg_chunk_store *cs, const char *hex, uint32_t chunk_size,
                       struct lg_image_convert_layer *out, struct lg_error *err) {
        char rnd[17], tmp[PATH_MAX], src[PATH_MAX], p[PATH_MAX];
        int r = lg_random_hex(rnd, 8);
        if (r < 0)
                return lg_error_set(err, r, "make a temporary name");
        snprintf(tmp, sizeof(tmp), "%s/tmp/convert-%s", st->lazy_dir, rnd);
        snprintf(src, sizeof(src), "%s/layers/%s", st->dir, hex);
        if (mkdir(tmp, 0700) < 0)
                return lg_error_set(err, errno, "create `%s`", tmp);
        struct lg_lazy_build_result res = {0};
        r = lg_lazy_build(src, tmp, chunk_size, cs, &res, err);
        if (r < 0) {
                lg_error_wrap(err, r, "layer %.12s", hex);
                goto fail;
        }
        /* The chunks are in the store: the BLOB is made again from them
         * if it is pushed. */
        snprintf(p, sizeof(p), "%s/blob", tmp);
        if (unlink(p) < 0 && errno != ENOENT) {
                r = lg_error_set(err, errno, "remove `%s`", p);
                goto fail;
        }
        json_t *source = json_pack("{s:b,s:s}", "local", 1, "digest", res.blob_digest);
        r = lg_image_lazy_write_source(tmp, source, err);
        json_decref(source);
        if (r < 0)
                goto fail;
        if ((r = lg_image_lazy_install(st, tmp, hex, true, err)) < 0)
                goto fail;
        out->blob_size = res.blob_size;
        out->meta_size = res.meta_size;
        out->chunks = res.n_chunks;
        out->unique_bytes = res.unique_bytes;
        out->chunk_size = chunk_size;
        snprintf(out->blob_digest, sizeof(out->blob_digest), "%s", res.blob_digest);
        return 0;
fail:
        (void) lg_rm_rf(tmp);
        return r;
}

static int convert_layer(lg_image_store *st, lg_chunk_store *cs, const struct lg_image_layer_desc *l,
                         uint32_t chunk_size, struct lg_image_convert_layer *out, struct lg_error *err) {
        const char *hex = l->digest + 7;
        snprintf(out->digest, sizeof(out->digest), "%s", l->digest);
        bool lazy = lg_image_layer_is_lazy(st, hex) == 1;
        int r = existing_form(st, hex, out, err);
        if (r < 0 && r != -ENOENT)
                return r;
        if (r >= 0 && (lazy || out->chunk_size == chunk_size)) {
                out->reused = true;
                return 0;
        }
        if (lazy)
                return lg_error_setm(err, EBADMSG, "lazy layer %.12s has no lazy form in `%s/layers`", hex,
                                     st->lazy_dir);
        memset(out, 0, sizeof(*out));
        snprintf(out->digest, sizeof(out->digest), "%s", l->digest);
        return build_layer(st, cs, hex, chunk_size, out, err);
}

int lg_image_convert(lg_image_store *st, const char *ref, uint32_t chunk_size, const struct lg_registry_auth *push_auth,
                     lg_image_progress_cb progress, void *ud, struct lg_image_convert_result *ret,
                     struct lg_error *err) {
        memset(ret, 0, sizeof(*ret));
        uint64_t t0 = lg_now_ns();
        if (!st->lazy_dir)
                return lg_error_setm(err, ENOTSUP, "lazy images are not set up on this node");
        if (!chunk_size)
                chunk_size = LG_CHUNK_SIZE_DEFAULT;
        if (chunk_size < LG_CHUNK_SIZE_MIN || chunk_size > LG_CHUNK_SIZE_MAX || (chunk_size & (chunk_size - 1)))
                return lg_error_setm(err, EINVAL, "chunk size %" PRIu32 " is not a power of two from %u to %u bytes",
                                     chunk_size, LG_CHUNK_SIZE_MIN, LG_CHUNK_SIZE_MAX);
        struct lg_image *img = NULL;
        int r = lg_image_get(st, ref, &img, err);
        if (r < 0)
                return r;
        snprintf(ret->id, sizeof(ret->id), "%s", img->id);
        snprintf(ret->digest, sizeof(ret->digest), "%s", img->digest);
        struct lg_image full;
        struct lg_image_manifest m;
        r = lg_image_load(st, img->digest, &full, &m, err);
        if (r < 0) {
                lg_image_free(img);
                return r;
        }
        lg_image_clear(&full);
        /* GC leaves the layers alone while they are read. */
        for (size_t i = 0; i < m.n_layers; i++)
                (void) lg_image_pending_add(st, m.layers[i].digest + 7);
        lg_chunk_store *cs = NULL;
        if (!(ret->layers = calloc(m.n_layers + 1, sizeof(*ret->layers))))
                r = lg_error_set(err, ENOMEM, "convert");
        else
                r = lg_chunk_store_open(st->lazy_dir, &cs, err);
        for (size_t i = 0; i < m.n_layers && r >= 0; i++) {
                const struct lg_image_layer_desc *l = &m.layers[i];
                if (progress)
                        progress(ud, "convert", l->digest, 0, l->size);
                pthread_mutex_lock(&st->lazy_mu);
                r = convert_layer(st, cs, l, chunk_size, &ret->layers[i], err);
                pthread_mutex_unlock(&st->lazy_mu);
                ret->n_layers++;
                if (r >= 0 && progress)
                        progress(ud, "convert", l->digest, l->size, l->size);
        }
        if (r >= 0 && cs)
                r = lg_chunk_store_sync(cs, err);
        if (r >= 0 && push_auth)
                r = lg_image_lazy_push(st, cs, ref, img, &m, ret, push_auth, progress, ud, err);
        for (size_t i = 0; i < m.n_layers; i++)
                lg_image_pending_drop(st, m.layers[i].digest + 7, false);
        lg_chunk_store_close(cs);
        lg_image_manifest_free(&m);
        lg_image_free(img);
        if (r < 0) {
                lg_image_convert_result_clear(ret);
                return r;
        }
        ret->elapsed_ns = lg_now_ns() - t0;
        if (progress)
                progress(ud, "done", ret->digest, 0, 0);
        return 0;
}
