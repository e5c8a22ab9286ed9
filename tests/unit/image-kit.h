/* Building OCI images in memory (layers from archive-kit.h's tars, config
 * and manifest with jansson) and storing their blobs, for the unit tests of
 * the image store. Static, so each test program has its own copy; include
 * after cmocka.h, archive-kit.h, jansson.h, openssl/evp.h and
 * image/image-internal.h. */
#pragma once

static void sha256(const void *d, size_t n, char out[LG_DIGEST_MAX]) {
        unsigned char md[32];
        unsigned len = 0;
        EVP_Digest(d, n, md, &len, EVP_sha256(), NULL);
        strcpy(out, "sha256:");
        for (int i = 0; i < 32; i++)
                sprintf(out + 7 + 2 * i, "%02x", md[i]);
}

/* ---- building images ---------------------------------------------------- */

struct tlayer {
        struct buf blob;
        char digest[LG_DIGEST_MAX], diff_id[LG_DIGEST_MAX];
        const char *mt;
};

struct timg {
        struct tlayer l[8];
        size_t n;
        char *config, *manifest;
        char cdigest[LG_DIGEST_MAX], mdigest[LG_DIGEST_MAX];
};

static void make_layer(struct timg *im, const struct te *es, size_t n, int comp) {
        struct tlayer *l = &im->l[im->n++];
        struct buf raw;
        make_tar(es, n, 0, &raw);
        sha256(raw.p, raw.len, l->diff_id);
        if (comp) {
                free(raw.p);
                make_tar(es, n, comp, &l->blob);
        } else {
                l->blob = raw;
        }
        sha256(l->blob.p, l->blob.len, l->digest);
        static const char *const mts[] = {"application/vnd.oci.image.layer.v1.tar",
                                          "application/vnd.oci.image.layer.v1.tar+gzip",
                                          "application/vnd.oci.image.layer.v1.tar+zstd"};
        l->mt = mts[comp];
}

/* Config and manifest for the layers made so far. cfg: the "config"
 * object (JSON text, may be NULL); docker: Docker media types. */
static void finish_image(struct timg *im, const char *cfg, bool docker) {
        json_t *ids = json_array();
        for (size_t i = 0; i < im->n; i++)
                json_array_append_new(ids, json_string(im->l[i].diff_id));
        json_t *c = json_pack("{s:s,s:s,s:s,s:{s:s,s:o}}", "architecture", "amd64", "os", "linux", "created",
                              "2024-01-02T03:04:05.5Z", "rootfs", "type", "layers", "diff_ids", ids);
        if (cfg)
                json_object_set_new(c, "config", json_loads(cfg, 0, NULL));
        im->config = json_dumps(c, JSON_COMPACT);
        json_decref(c);
        sha256(im->config, strlen(im->config), im->cdigest);
        json_t *ls = json_array();
        for (size_t i = 0; i < im->n; i++)
                json_array_append_new(ls, json_pack("{s:s,s:I,s:s}", "mediaType",
                                                    docker ? "application/vnd.docker.image.rootfs.diff.tar.gzip"
                                                           : im->l[i].mt,
                                                    "size", (json_int_t) im->l[i].blob.len, "digest",
                                                    im->l[i].digest));
        json_t *m = json_pack("{s:i,s:s,s:{s:s,s:I,s:s},s:o}", "schemaVersion", 2, "mediaType",
                              docker ? "application/vnd.docker.distribution.manifest.v2+json"
                                     : "application/vnd.oci.image.manifest.v1+json",
                              "config", "mediaType",
                              docker ? "application/vnd.docker.container.image.v1+json"
                                     : "application/vnd.oci.image.config.v1+json",
                              "size", (json_int_t) strlen(im->config), "digest", im->cdigest, "layers", ls);
        im->manifest = json_dumps(m, JSON_COMPACT);
        json_decref(m);
        sha256(im->manifest, strlen(im->manifest), im->mdigest);
}

static void free_image(struct timg *im) {
        for (size_t i = 0; i < im->n; i++)
                free(im->l[i].blob.p);
        free(im->config);
        free(im->manifest);
        memset(im, 0, sizeof(*im));
}

static void put_blob(lg_image_store *st, const void *d, size_t n) {
        char dg[LG_DIGEST_MAX];
        sha256(d, n, dg);
        struct lg_image_blob_writer *w;
        struct lg_error err = {0};
        int r = lg_image_blob_begin(st, dg, 0, &w, &err);
        assert_true(r >= 0);
        if (r == 1)
                return;
        assert_int_equal(lg_image_blob_write(w, d, n, &err), 0);
        assert_int_equal(lg_image_blob_commit(w, &err), 0);
}

/* Store every blob of im, as a pull would. */
static void ingest(lg_image_store *st, const struct timg *im) {
        for (size_t i = 0; i < im->n; i++)
                put_blob(st, im->l[i].blob.p, im->l[i].blob.len);
        put_blob(st, im->config, strlen(im->config));
        put_blob(st, im->manifest, strlen(im->manifest));
}
