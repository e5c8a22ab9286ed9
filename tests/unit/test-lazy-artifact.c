/* Unit tests of src/image/lazy-artifact.c: build and parse of the lazy
 * artifact's manifest and config, and the referrers index, with hostile
 * input: wrong types, missing fields, bad digests, duplicate keys and
 * layers, blobs the manifest does not carry, sizes over the limits. A
 * valid artifact is built, then each case breaks one thing in its JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cas/cas.h"
#include "image/lazy-artifact.h"
#include "test-ok.h"

static void sha(const void *buf, size_t len, char out[72]) {
        uint8_t md[32];
        struct lg_digest d;
        assert_int_equal(lg_sha256(buf, len, md), 0);
        lg_digest_from_bytes(md, &d);
        snprintf(out, 72, "sha256:%s", d.hex);
}

static void dg(const char *seed, char out[72]) { sha(seed, strlen(seed), out); }

/* A valid artifact of two layers, the second without prefetch. */
static struct lg_lazy_layer L[2];
static struct lg_lazy_artifact A;
static char *CFG, *MAN;
static size_t CFG_LEN, MAN_LEN;

static int setup(void **state) {
        (void) state;
        memset(L, 0, sizeof(L));
        const char *names[2] = {"a", "b"};
        for (int i = 0; i < 2; i++) {
                char s[32];
                snprintf(s, sizeof(s), "layer-%s", names[i]);
                dg(s, L[i].layer);
                snprintf(s, sizeof(s), "diff-%s", names[i]);
                dg(s, L[i].diff_id);
                snprintf(s, sizeof(s), "meta-%s", names[i]);
                dg(s, L[i].meta.digest);
                L[i].meta.size = 8192;
                snprintf(s, sizeof(s), "chunks-%s", names[i]);
                dg(s, L[i].chunks.digest);
                L[i].chunks.size = 32 + 48 * 3;
                snprintf(s, sizeof(s), "blob-%s", names[i]);
                dg(s, L[i].blob.digest);
                L[i].blob.size = 3 * 65536;
        }
        dg("prefetch-a", L[0].prefetch.digest);
        L[0].prefetch.size = 12;
        memset(&A, 0, sizeof(A));
        A.chunk_size = 65536;
        A.layers = L;
        A.n_layers = 2;
        snprintf(A.subject.media_type, sizeof(A.subject.media_type), "application/vnd.oci.image.manifest.v1+json");
        dg("image", A.subject.digest);
        A.subject.size = 1234;
        struct lg_error err = {0};
        OK(lg_lazy_artifact_build(&A, &CFG, &CFG_LEN, &MAN, &MAN_LEN, &err));
        return 0;
}

static int teardown(void **state) {
        (void) state;
        free(CFG);
        free(MAN);
        return 0;
}

static void test_roundtrip(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct lg_lazy_artifact a;
        char d[72];
        sha(MAN, MAN_LEN, d);
        assert_string_equal(d, A.digest);
        OK(lg_lazy_manifest_parse(MAN, MAN_LEN, A.digest, &a, &err));
        assert_string_equal(a.digest, A.digest);
        assert_string_equal(a.subject.digest, A.subject.digest);
        assert_string_equal(a.subject.media_type, A.subject.media_type);
        assert_int_equal(a.subject.size, 1234);
        assert_string_equal(a.config.digest, A.config.digest);
        assert_int_equal(a.n_blobs, 7);
        OK(lg_lazy_config_parse(&a, CFG, CFG_LEN, &err));
        assert_int_equal(a.chunk_size, 65536);
        assert_int_equal(a.n_layers, 2);
        for (int i = 0; i < 2; i++) {
                assert_string_equal(a.layers[i].layer, L[i].layer);
                assert_string_equal(a.layers[i].diff_id, L[i].diff_id);
                assert_string_equal(a.layers[i].meta.digest, L[i].meta.digest);
                assert_int_equal(a.layers[i].meta.size, L[i].meta.size);
                assert_string_equal(a.layers[i].chunks.digest, L[i].chunks.digest);
                assert_int_equal(a.layers[i].chunks.size, L[i].chunks.size);
                assert_string_equal(a.layers[i].blob.digest, L[i].blob.digest);
                assert_int_equal(a.layers[i].blob.size, L[i].blob.size);
        }
        assert_string_equal(a.layers[0].prefetch.digest, L[0].prefetch.digest);
        assert_int_equal(a.layers[0].prefetch.size, 12);
        assert_string_equal(a.layers[1].prefetch.digest, "");
        lg_lazy_artifact_clear(&a);

        /* The same input gives the same bytes. */
        char *c2, *m2;
        size_t cl2, ml2;
        struct lg_lazy_artifact b = A;
        OK(lg_lazy_artifact_build(&b, &c2, &cl2, &m2, &ml2, &err));
        assert_int_equal(ml2, MAN_LEN);
        assert_memory_equal(m2, MAN, MAN_LEN);
        free(c2);
        free(m2);
}

/* ---- manifest cases ---------------------------------------------------------- */

typedef void (*mutate_fn)(json_t *doc);

static json_t *blob_at(json_t *doc, size_t i) { return json_array_get(json_object_get(doc, "layers"), i); }

static void m_schema_string(json_t *d) { json_object_set_new(d, "schemaVersion", json_string("2")); }
static void m_schema_1(json_t *d) { json_object_set_new(d, "schemaVersion", json_integer(1)); }
static void m_no_media_type(json_t *d) { json_object_del(d, "mediaType"); }
static void m_index_media_type(json_t *d) {
        json_object_set_new(d, "mediaType", json_string("application/vnd.oci.image.index.v1+json"));
}
static void m_no_artifact_type(json_t *d) { json_object_del(d, "artifactType"); }
static void m_other_artifact_type(json_t *d) { json_object_set_new(d, "artifactType", json_string("x/y")); }
static void m_artifact_type_number(json_t *d) { json_object_set_new(d, "artifactType", json_integer(7)); }
static void m_no_config(json_t *d) { json_object_del(d, "config"); }
static void m_config_array(json_t *d) { json_object_set_new(d, "config", json_array()); }
static void m_config_media_type(json_t *d) {
        json_object_set_new(json_object_get(d, "config"), "mediaType",
                            json_string("application/vnd.oci.image.config.v1+json"));
}
static void m_config_digest_md5(json_t *d) {
        json_object_set_new(json_object_get(d, "config"), "digest", json_string("md5:d41d8cd98f00b204e9800998ecf8427e"));
}
static void m_config_digest_upper(json_t *d) {
        json_t *c = json_object_get(d, "config");
        char s[72];
        snprintf(s, sizeof(s), "%s", json_string_value(json_object_get(c, "digest")));
        s[10] = 'A';
        json_object_set_new(c, "digest", json_string(s));
}
static void m_config_digest_short(json_t *d) {
        json_object_set_new(json_object_get(d, "config"), "digest", json_string("sha256:abcd"));
}
static void m_config_size_negative(json_t *d) { json_object_set_new(json_object_get(d, "config"), "size", json_integer(-1)); }
static void m_config_size_string(json_t *d) { json_object_set_new(json_object_get(d, "config"), "size", json_string("10")); }
static void m_config_size_real(json_t *d) { json_object_set_new(json_object_get(d, "config"), "size", json_real(10.0)); }
static void m_config_size_huge(json_t *d) {
        json_object_set_new(json_object_get(d, "config"), "size", json_integer(2 << 20));
}
static void m_no_subject(json_t *d) { json_object_del(d, "subject"); }
static void m_subject_index(json_t *d) {
        json_object_set_new(json_object_get(d, "subject"), "mediaType",
                            json_string("application/vnd.oci.image.index.v1+json"));
}
static void m_subject_no_digest(json_t *d) { json_object_del(json_object_get(d, "subject"), "digest"); }
static void m_no_layers(json_t *d) { json_object_del(d, "layers"); }
static void m_layers_object(json_t *d) { json_object_set_new(d, "layers", json_object()); }
static void m_layers_empty(json_t *d) { json_object_set_new(d, "layers", json_array()); }
static void m_layers_many(json_t *d) {
        json_t *ls = json_object_get(d, "layers");
        while (json_array_size(ls) <= 4 * LG_LAZY_LAYERS_MAX)
                json_array_append(ls, json_array_get(ls, 0));
}
static void m_blob_not_object(json_t *d) { json_array_set_new(json_object_get(d, "layers"), 0, json_string("x")); }
static void m_blob_unknown_type(json_t *d) {
        json_object_set_new(blob_at(d, 0), "mediaType", json_string("application/vnd.oci.image.layer.v1.tar"));
}
static void m_blob_type_null(json_t *d) { json_object_set_new(blob_at(d, 0), "mediaType", json_null()); }
static void m_blob_bad_digest(json_t *d) { json_object_set_new(blob_at(d, 1), "digest", json_string("sha256:../../x")); }
static void m_meta_huge(json_t *d) { json_object_set_new(blob_at(d, 0), "size", json_integer(1ll << 31)); }
static void m_chunks_huge(json_t *d) { json_object_set_new(blob_at(d, 1), "size", json_integer(1ll << 31)); }

struct mcase {
        const char *name;
        mutate_fn fn;
        int code;
        const char *msg;
};

static const struct mcase MCASES[] = {
        {"schemaVersion string", m_schema_string, EINVAL, "schemaVersion"},
        {"schemaVersion 1", m_schema_1, EINVAL, "schemaVersion"},
        {"no mediaType", m_no_media_type, EINVAL, "`mediaType` is missing"},
        {"index mediaType", m_index_media_type, EINVAL, "`mediaType` is"},
        {"no artifactType", m_no_artifact_type, EINVAL, "`artifactType` is missing"},
        {"other artifactType", m_other_artifact_type, EINVAL, "`artifactType` is `x/y`"},
        {"artifactType number", m_artifact_type_number, EINVAL, "`artifactType` is not a string"},
        {"no config", m_no_config, EINVAL, "config is not an object"},
        {"config array", m_config_array, EINVAL, "config is not an object"},
        {"config media type", m_config_media_type, EINVAL, "config's media type"},
        {"config md5", m_config_digest_md5, EINVAL, "not a sha256 digest"},
        {"config digest upper", m_config_digest_upper, EINVAL, "not a sha256 digest"},
        {"config digest short", m_config_digest_short, EINVAL, "not a sha256 digest"},
        {"config size -1", m_config_size_negative, EINVAL, "`size` is not a size"},
        {"config size string", m_config_size_string, EINVAL, "`size` is not a size"},
        {"config size real", m_config_size_real, EINVAL, "`size` is not a size"},
        {"config size huge", m_config_size_huge, EFBIG, "`size` is over"},
        {"no subject", m_no_subject, EINVAL, "subject is not an object"},
        {"subject index", m_subject_index, EINVAL, "not an image manifest"},
        {"subject no digest", m_subject_no_digest, EINVAL, "`digest` is missing"},
        {"no layers", m_no_layers, EINVAL, "`layers` is missing"},
        {"layers object", m_layers_object, EINVAL, "`layers` is not an array"},
        {"layers empty", m_layers_empty, EINVAL, "0 blobs"},
        {"layers many", m_layers_many, EFBIG, "1025 blobs"},
        {"blob not object", m_blob_not_object, EINVAL, "blob 0 is not an object"},
        {"blob unknown type", m_blob_unknown_type, EINVAL, "unknown media type"},
        {"blob type null", m_blob_type_null, EINVAL, "`mediaType` is not a string"},
        {"blob bad digest", m_blob_bad_digest, EINVAL, "not a sha256 digest"},
        {"meta huge", m_meta_huge, EFBIG, "over"},
        {"chunks huge", m_chunks_huge, EFBIG, "over"},
};

static char *mutated(const char *json, size_t len, mutate_fn fn) {
        json_t *doc = json_loadb(json, len, 0, NULL);
        assert_non_null(doc);
        fn(doc);
        char *s = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        assert_non_null(s);
        return s;
}

static void test_manifest_hostile(void **state) {
        (void) state;
        for (size_t i = 0; i < ARRAY_SIZE(MCASES); i++) {
                const struct mcase *c = &MCASES[i];
                char *s = mutated(MAN, MAN_LEN, c->fn);
                struct lg_error err = {0};
                struct lg_lazy_artifact a;
                int r = lg_lazy_manifest_parse(s, strlen(s), NULL, &a, &err);
                if (r != -c->code || !strstr(err.msg, c->msg))
                        fail_msg("%s: %d `%s` (want %d `%s`)", c->name, r, err.msg, -c->code, c->msg);
                assert_null(a.blobs);
                free(s);
        }
        static const char *const raw[] = {
                "", "[]", "null", "{", "\"x\"",
                /* duplicate keys */
                "{\"schemaVersion\":2,\"schemaVersion\":2}",
        };
        for (size_t i = 0; i < ARRAY_SIZE(raw); i++) {
                struct lg_error err = {0};
                struct lg_lazy_artifact a;
                assert_int_equal(lg_lazy_manifest_parse(raw[i], strlen(raw[i]), NULL, &a, &err), -EINVAL);
        }
        /* A manifest over 4 MiB is not read. */
        size_t big = (4u << 20) + 1;
        char *b = malloc(big);
        memset(b, ' ', big);
        struct lg_error err = {0};
        struct lg_lazy_artifact a;
        assert_int_equal(lg_lazy_manifest_parse(b, big, NULL, &a, &err), -EFBIG);
        free(b);
}

/* ---- config cases -------------------------------------------------------------- */

static json_t *layer_at(json_t *doc, size_t i) { return json_array_get(json_object_get(doc, "layers"), i); }

static void c_chunk_0(json_t *d) { json_object_set_new(d, "chunkSize", json_integer(0)); }
static void c_chunk_3000(json_t *d) { json_object_set_new(d, "chunkSize", json_integer(3000)); }
static void c_chunk_not_pow2(json_t *d) { json_object_set_new(d, "chunkSize", json_integer(65536 + 4096)); }
static void c_chunk_2k(json_t *d) { json_object_set_new(d, "chunkSize", json_integer(2048)); }
static void c_chunk_8m(json_t *d) { json_object_set_new(d, "chunkSize", json_integer(8 << 20)); }
static void c_chunk_string(json_t *d) { json_object_set_new(d, "chunkSize", json_string("65536")); }
static void c_no_chunk(json_t *d) { json_object_del(d, "chunkSize"); }
static void c_no_layers(json_t *d) { json_object_del(d, "layers"); }
static void c_layers_string(json_t *d) { json_object_set_new(d, "layers", json_string("x")); }
static void c_layers_empty(json_t *d) { json_object_set_new(d, "layers", json_array()); }
static void c_layers_many(json_t *d) {
        json_t *ls = json_object_get(d, "layers");
        while (json_array_size(ls) <= LG_LAZY_LAYERS_MAX)
                json_array_append(ls, json_array_get(ls, 1));
}
static void c_layer_not_object(json_t *d) { json_array_set_new(json_object_get(d, "layers"), 1, json_integer(1)); }
static void c_no_layer(json_t *d) { json_object_del(layer_at(d, 0), "layer"); }
static void c_no_diff(json_t *d) { json_object_del(layer_at(d, 0), "diffId"); }
static void c_no_meta(json_t *d) { json_object_del(layer_at(d, 0), "meta"); }
static void c_no_chunks(json_t *d) { json_object_del(layer_at(d, 1), "chunks"); }
static void c_no_blob(json_t *d) { json_object_del(layer_at(d, 1), "blob"); }
static void c_no_blob_size(json_t *d) { json_object_del(layer_at(d, 1), "blobSize"); }
static void c_meta_number(json_t *d) { json_object_set_new(layer_at(d, 0), "meta", json_integer(5)); }
static void c_diff_bad(json_t *d) { json_object_set_new(layer_at(d, 0), "diffId", json_string("sha256:zz")); }
static void c_layer_bad(json_t *d) { json_object_set_new(layer_at(d, 0), "layer", json_string("sha512:00")); }
static void c_meta_absent(json_t *d) {
        char s[72];
        dg("not in the manifest", s);
        json_object_set_new(layer_at(d, 0), "meta", json_string(s));
}
static void c_meta_is_chunks(json_t *d) {
        json_object_set(layer_at(d, 0), "meta", json_object_get(layer_at(d, 0), "chunks"));
}
static void c_blob_size_wrong(json_t *d) { json_object_set_new(layer_at(d, 0), "blobSize", json_integer(3 * 65536 + 1)); }
static void c_blob_size_negative(json_t *d) { json_object_set_new(layer_at(d, 0), "blobSize", json_integer(-5)); }
static void c_duplicate_layer(json_t *d) {
        json_object_set(layer_at(d, 1), "layer", json_object_get(layer_at(d, 0), "layer"));
}
static void c_prefetch_absent(json_t *d) {
        char s[72];
        dg("no such prefetch", s);
        json_object_set_new(layer_at(d, 1), "prefetch", json_string(s));
}
static void c_prefetch_null(json_t *d) { json_object_set_new(layer_at(d, 0), "prefetch", json_null()); }

/* Changes to the manifest's blob sizes, for the format checks. */
static void mb_chunks_size(json_t *d) { json_object_set_new(blob_at(d, 1), "size", json_integer(32 + 48 * 3 + 1)); }
static void mb_chunks_short(json_t *d) { json_object_set_new(blob_at(d, 1), "size", json_integer(16)); }
static void mb_prefetch_size(json_t *d) { json_object_set_new(blob_at(d, 3), "size", json_integer(13)); }

struct ccase {
        const char *name;
        mutate_fn cfg, man;
        int code;
        const char *msg;
};

static const struct ccase CCASES[] = {
        {"chunkSize 0", c_chunk_0, NULL, EINVAL, "power of two"},
        {"chunkSize 3000", c_chunk_3000, NULL, EINVAL, "power of two"},
        {"chunkSize 69632", c_chunk_not_pow2, NULL, EINVAL, "power of two"},
        {"chunkSize 2048", c_chunk_2k, NULL, EINVAL, "power of two"},
        {"chunkSize 8 MiB", c_chunk_8m, NULL, EFBIG, "`chunkSize` is over"},
        {"chunkSize string", c_chunk_string, NULL, EINVAL, "`chunkSize` is not a size"},
        {"no chunkSize", c_no_chunk, NULL, EINVAL, "`chunkSize` is missing"},
        {"no layers", c_no_layers, NULL, EINVAL, "`layers` is missing"},
        {"layers string", c_layers_string, NULL, EINVAL, "`layers` is not an array"},
        {"layers empty", c_layers_empty, NULL, EINVAL, "0 layers"},
        {"layers many", c_layers_many, NULL, EFBIG, "257 layers"},
        {"layer not object", c_layer_not_object, NULL, EINVAL, "layer 1 is not an object"},
        {"no layer", c_no_layer, NULL, EINVAL, "`layer` is missing"},
        {"no diffId", c_no_diff, NULL, EINVAL, "`diffId` is missing"},
        {"no meta", c_no_meta, NULL, EINVAL, "`meta` is missing"},
        {"no chunks", c_no_chunks, NULL, EINVAL, "`chunks` is missing"},
        {"no blob", c_no_blob, NULL, EINVAL, "`blob` is missing"},
        {"no blobSize", c_no_blob_size, NULL, EINVAL, "`blobSize` is missing"},
        {"meta number", c_meta_number, NULL, EINVAL, "`meta` is not a string"},
        {"diffId bad", c_diff_bad, NULL, EINVAL, "`diffId` is not a sha256 digest"},
        {"layer sha512", c_layer_bad, NULL, EINVAL, "`layer` is not a sha256 digest"},
        {"meta not in manifest", c_meta_absent, NULL, EINVAL, "not among the manifest's blobs"},
        {"meta is the chunks blob", c_meta_is_chunks, NULL, EINVAL, "not among the manifest's blobs as " LG_LAZY_META_TYPE},
        {"blobSize wrong", c_blob_size_wrong, NULL, EINVAL, "`blobSize` 196609, the manifest says 196608"},
        {"blobSize negative", c_blob_size_negative, NULL, EINVAL, "`blobSize` is not a size"},
        {"duplicate layer", c_duplicate_layer, NULL, EINVAL, "is there twice"},
        {"prefetch not in manifest", c_prefetch_absent, NULL, EINVAL, "not among the manifest's blobs"},
        {"prefetch null", c_prefetch_null, NULL, EINVAL, "`prefetch` is not a string"},
        {"chunk table size", NULL, mb_chunks_size, EINVAL, "a chunk table of 177 bytes"},
        {"chunk table short", NULL, mb_chunks_short, EINVAL, "a chunk table of 16 bytes"},
        {"prefetch size", NULL, mb_prefetch_size, EINVAL, "a prefetch record of 13 bytes"},
};

static void test_config_hostile(void **state) {
        (void) state;
        for (size_t i = 0; i < ARRAY_SIZE(CCASES); i++) {
                const struct ccase *c = &CCASES[i];
                struct lg_error err = {0};
                struct lg_lazy_artifact a;
                char *man = c->man ? mutated(MAN, MAN_LEN, c->man) : strdup(MAN);
                OK(lg_lazy_manifest_parse(man, strlen(man), NULL, &a, &err));
                char *cfg = c->cfg ? mutated(CFG, CFG_LEN, c->cfg) : strdup(CFG);
                /* The manifest names the config it carries. */
                sha(cfg, strlen(cfg), a.config.digest);
                a.config.size = strlen(cfg);
                int r = lg_lazy_config_parse(&a, cfg, strlen(cfg), &err);
                if (r != -c->code || !strstr(err.msg, c->msg))
                        fail_msg("%s: %d `%s` (want %d `%s`)", c->name, r, err.msg, -c->code, c->msg);
                assert_null(a.layers);
                assert_int_equal(a.n_layers, 0);
                lg_lazy_artifact_clear(&a);
                free(man);
                free(cfg);
        }
        /* Bytes that are not the config the manifest names. */
        struct lg_error err = {0};
        struct lg_lazy_artifact a;
        OK(lg_lazy_manifest_parse(MAN, MAN_LEN, NULL, &a, &err));
        char *cfg = strdup(CFG);
        cfg[CFG_LEN - 2] ^= 1;
        assert_int_equal(lg_lazy_config_parse(&a, cfg, CFG_LEN, &err), -EBADMSG);
        assert_int_equal(lg_lazy_config_parse(&a, CFG, CFG_LEN - 1, &err), -EBADMSG);
        free(cfg);
        /* Duplicate keys, not JSON. */
        static const char *const raw[] = {"{\"chunkSize\":65536,\"chunkSize\":4096,\"layers\":[]}", "[]", "nope"};
        for (size_t i = 0; i < ARRAY_SIZE(raw); i++) {
                sha(raw[i], strlen(raw[i]), a.config.digest);
                a.config.size = strlen(raw[i]);
                assert_int_equal(lg_lazy_config_parse(&a, raw[i], strlen(raw[i]), &err), -EINVAL);
        }
        lg_lazy_artifact_clear(&a);
}

static void test_build_refuses(void **state) {
        (void) state;
        struct lg_error err = {0};
        char *c = NULL, *m = NULL;
        size_t cl, ml;
        struct lg_lazy_artifact a = A;
        a.chunk_size = 1000;
        assert_int_equal(lg_lazy_artifact_build(&a, &c, &cl, &m, &ml, &err), -EINVAL);
        a = A;
        a.n_layers = 0;
        assert_int_equal(lg_lazy_artifact_build(&a, &c, &cl, &m, &ml, &err), -EINVAL);
        struct lg_lazy_layer two[2] = {L[0], L[0]};
        a = A;
        a.layers = two;
        assert_int_equal(lg_lazy_artifact_build(&a, &c, &cl, &m, &ml, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "twice"));
        two[1] = L[1];
        snprintf(two[1].blob.digest, 72, "sha256:nothex");
        assert_int_equal(lg_lazy_artifact_build(&a, &c, &cl, &m, &ml, &err), -EINVAL);
        a = A;
        snprintf(a.subject.media_type, sizeof(a.subject.media_type), "application/vnd.oci.image.index.v1+json");
        assert_int_equal(lg_lazy_artifact_build(&a, &c, &cl, &m, &ml, &err), -EINVAL);
        assert_null(c);
        assert_null(m);
}

/* ---- the referrers index ----------------------------------------------------------- */

static struct lg_oci_descriptor entry(const char *seed, const char *type) {
        struct lg_oci_descriptor d = {.size = 100};
        snprintf(d.media_type, sizeof(d.media_type), "application/vnd.oci.image.manifest.v1+json");
        snprintf(d.artifact_type, sizeof(d.artifact_type), "%s", type);
        dg(seed, d.digest);
        return d;
}

static void test_index(void **state) {
        (void) state;
        struct lg_error err = {0};
        char *i1, *i2, *i3;
        size_t l1, l2, l3;
        struct lg_oci_descriptor lazy1 = entry("lazy1", LG_LAZY_ARTIFACT_TYPE), sig = entry("sig", "application/x.sig"),
                                 lazy2 = entry("lazy2", LG_LAZY_ARTIFACT_TYPE), got;
        OK(lg_lazy_index_merge(NULL, 0, &lazy1, &i1, &l1, &err));
        OK(lg_lazy_index_find(i1, l1, LG_LAZY_ARTIFACT_TYPE, &got, &err));
        assert_string_equal(got.digest, lazy1.digest);
        assert_int_equal(got.size, 100);
        assert_int_equal(lg_lazy_index_find(i1, l1, "application/x.sig", &got, &err), -ENOENT);
        /* Someone else's entry stays; ours is replaced. */
        OK(lg_lazy_index_merge(i1, l1, &sig, &i2, &l2, &err));
        OK(lg_lazy_index_merge(i2, l2, &lazy2, &i3, &l3, &err));
        json_t *doc = json_loadb(i3, l3, 0, NULL);
        json_t *ms = json_object_get(doc, "manifests");
        assert_int_equal(json_array_size(ms), 2);
        assert_string_equal(json_string_value(json_object_get(json_array_get(ms, 0), "digest")), sig.digest);
        assert_string_equal(json_string_value(json_object_get(json_array_get(ms, 1), "digest")), lazy2.digest);
        json_decref(doc);
        OK(lg_lazy_index_find(i3, l3, LG_LAZY_ARTIFACT_TYPE, &got, &err));
        assert_string_equal(got.digest, lazy2.digest);
        OK(lg_lazy_index_find(i3, l3, "application/x.sig", &got, &err));
        assert_string_equal(got.digest, sig.digest);
        free(i1);
        free(i2);
        free(i3);

        /* Hostile indexes: refused by find and merge alike. */
        char d[72];
        dg("x", d);
        char bad[8][512];
        snprintf(bad[0], 512, "{\"schemaVersion\":2,\"manifests\":{}}");
        snprintf(bad[1], 512, "{\"schemaVersion\":2}");
        snprintf(bad[2], 512, "{\"schemaVersion\":\"2\",\"manifests\":[]}");
        snprintf(bad[3], 512, "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"a\",\"digest\":\"sha256:x\",\"size\":1}]}");
        snprintf(bad[4], 512, "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"a\",\"digest\":\"%s\",\"size\":-1}]}", d);
        snprintf(bad[5], 512, "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"a\",\"digest\":\"%s\",\"size\":1,"
                              "\"artifactType\":5}]}", d);
        snprintf(bad[6], 512, "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                              "\"manifests\":[]}");
        snprintf(bad[7], 512, "{\"schemaVersion\":2,\"manifests\":[],\"manifests\":[]}");
        for (int i = 0; i < 8; i++) {
                char *out = NULL;
                size_t ol;
                if (lg_lazy_index_find(bad[i], strlen(bad[i]), LG_LAZY_ARTIFACT_TYPE, &got, &err) != -EINVAL)
                        fail_msg("find accepted %s", bad[i]);
                if (lg_lazy_index_merge(bad[i], strlen(bad[i]), &lazy1, &out, &ol, &err) != -EINVAL)
                        fail_msg("merge accepted %s", bad[i]);
                assert_null(out);
        }
        /* Too many entries. */
        json_t *big = json_pack("{s:i, s:[]}", "schemaVersion", 2, "manifests");
        for (unsigned i = 0; i < LG_LAZY_INDEX_MAX; i++)
                json_array_append_new(json_object_get(big, "manifests"),
                                      json_pack("{s:s, s:s, s:i, s:s}", "mediaType", "a", "digest", d, "size", 1,
                                                "artifactType", "application/x.other"));
        char *bs = json_dumps(big, JSON_COMPACT);
        char *out = NULL;
        size_t ol;
        assert_int_equal(lg_lazy_index_merge(bs, strlen(bs), &lazy1, &out, &ol, &err), -EFBIG);
        json_array_append_new(json_object_get(big, "manifests"), json_pack("{s:s, s:s, s:i}", "mediaType", "a", "digest", d, "size", 1));
        free(bs);
        bs = json_dumps(big, JSON_COMPACT);
        assert_int_equal(lg_lazy_index_find(bs, strlen(bs), LG_LAZY_ARTIFACT_TYPE, &got, &err), -EFBIG);
        free(bs);
        json_decref(big);
        /* An incomplete entry to add. */
        struct lg_oci_descriptor none = {0};
        assert_int_equal(lg_lazy_index_merge(NULL, 0, &none, &out, &ol, &err), -EINVAL);
}

/* ---- packages (docs/packages.md) ------------------------------------------------- */

/* A package's artifact: the archive and one layer of it, or the archive
 * alone (no_lazy). */
static void build_package(bool no_lazy, struct lg_lazy_layer *l, char **cfg, size_t *cfg_len, char **man,
                          size_t *man_len) {
        struct lg_lazy_artifact p = {.package = true, .no_lazy = no_lazy, .chunk_size = 65536};
        dg("archive", p.archive.digest);
        p.archive.size = 5000;
        *l = L[1];
        memcpy(l->layer, p.archive.digest, 72);
        memcpy(l->diff_id, p.archive.digest, 72);
        p.layers = no_lazy ? NULL : l;
        p.n_layers = no_lazy ? 0 : 1;
        struct lg_error err = {0};
        OK(lg_lazy_artifact_build(&p, cfg, cfg_len, man, man_len, &err));
}

static void pm_no_archive(json_t *d) { json_array_remove(json_object_get(d, "layers"), 0); }
static void pm_two_archives(json_t *d) { json_array_append(json_object_get(d, "layers"), blob_at(d, 0)); }
static void pm_archive_huge(json_t *d) { json_object_set_new(blob_at(d, 0), "size", json_integer((1ll << 30) + 1)); }
static void pm_lazy_type(json_t *d) {
        json_object_set_new(d, "artifactType", json_string(LG_LAZY_ARTIFACT_TYPE));
}
static void pm_empty_config_lazy(json_t *d) {
        json_object_set_new(json_object_get(d, "config"), "mediaType", json_string(LG_OCI_EMPTY_TYPE));
}
static void pc_two_layers(json_t *d) { json_array_append(json_object_get(d, "layers"), layer_at(d, 0)); }
static void pc_other_layer(json_t *d) {
        char s[72];
        dg("another archive", s);
        json_object_set_new(layer_at(d, 0), "layer", json_string(s));
}

static void test_package(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct lg_lazy_layer l;
        char *cfg, *man;
        size_t cfg_len, man_len;
        build_package(false, &l, &cfg, &cfg_len, &man, &man_len);
        struct lg_lazy_artifact a;
        OK(lg_lazy_manifest_parse(man, man_len, NULL, &a, &err));
        assert_true(a.package);
        assert_false(a.no_lazy);
        assert_string_equal(a.archive.digest, l.layer);
        assert_int_equal(a.archive.size, 5000);
        assert_string_equal(a.subject.digest, "");
        assert_int_equal(a.n_blobs, 4);
        OK(lg_lazy_config_parse(&a, cfg, cfg_len, &err));
        assert_int_equal(a.n_layers, 1);
        assert_string_equal(a.layers[0].blob.digest, L[1].blob.digest);
        lg_lazy_artifact_clear(&a);
        /* Hostile package manifests. */
        const struct mcase pm[] = {
                {"no archive", pm_no_archive, EINVAL, "without a blob of type"},
                {"two archives", pm_two_archives, EINVAL, "a second package archive"},
                {"archive huge", pm_archive_huge, EFBIG, "over"},
                /* An image's lazy artifact carries no archive. */
                {"lazy type", pm_lazy_type, EINVAL, "subject is not an object"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(pm); i++) {
                char *s = mutated(man, man_len, pm[i].fn);
                int r = lg_lazy_manifest_parse(s, strlen(s), NULL, &a, &err);
                if (r != -pm[i].code || !strstr(err.msg, pm[i].msg))
                        fail_msg("%s: %d `%s` (want %d `%s`)", pm[i].name, r, err.msg, -pm[i].code, pm[i].msg);
                assert_null(a.blobs);
                free(s);
        }
        /* An image's artifact does not take the archive's media type. */
        char *s = mutated(MAN, MAN_LEN, pm_two_archives);
        json_t *doc = json_loads(s, 0, NULL);
        free(s);
        json_object_set_new(blob_at(doc, 0), "mediaType", json_string(LG_PACKAGE_ARCHIVE_TYPE));
        s = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        assert_int_equal(lg_lazy_manifest_parse(s, strlen(s), NULL, &a, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "unknown media type"));
        free(s);
        /* The OCI empty config is a package's without lazy form only. */
        s = mutated(MAN, MAN_LEN, pm_empty_config_lazy);
        assert_int_equal(lg_lazy_manifest_parse(s, strlen(s), NULL, &a, &err), -EINVAL);
        free(s);
        /* Hostile package configs: a layer that is not the archive's, two. */
        const struct {
                const char *name;
                mutate_fn fn;
        } pc[] = {{"two layers", pc_two_layers}, {"other layer", pc_other_layer}};
        for (size_t i = 0; i < ARRAY_SIZE(pc); i++) {
                OK(lg_lazy_manifest_parse(man, man_len, NULL, &a, &err));
                char *c = mutated(cfg, cfg_len, pc[i].fn);
                sha(c, strlen(c), a.config.digest);
                a.config.size = strlen(c);
                int r = lg_lazy_config_parse(&a, c, strlen(c), &err);
                if (r != -EINVAL || (!strstr(err.msg, "one layer, of its archive") && !strstr(err.msg, "twice")))
                        fail_msg("%s: %d `%s`", pc[i].name, r, err.msg);
                assert_null(a.layers);
                lg_lazy_artifact_clear(&a);
                free(c);
        }
        free(cfg);
        free(man);
        /* Without lazy form: the archive alone, config "{}". */
        build_package(true, &l, &cfg, &cfg_len, &man, &man_len);
        assert_string_equal(cfg, "{}");
        OK(lg_lazy_manifest_parse(man, man_len, NULL, &a, &err));
        assert_true(a.package && a.no_lazy);
        assert_int_equal(a.n_blobs, 1);
        lg_lazy_artifact_clear(&a);
        free(cfg);
        free(man);
        /* Build refuses a layer that is not of the archive, and two. */
        struct lg_lazy_artifact p = {.package = true, .chunk_size = 65536, .layers = L, .n_layers = 1};
        dg("archive", p.archive.digest);
        assert_int_equal(lg_lazy_artifact_build(&p, &cfg, &cfg_len, &man, &man_len, &err), -EINVAL);
        p.n_layers = 2;
        assert_int_equal(lg_lazy_artifact_build(&p, &cfg, &cfg_len, &man, &man_len, &err), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_roundtrip),
                cmocka_unit_test(test_manifest_hostile),
                cmocka_unit_test(test_config_hostile),
                cmocka_unit_test(test_build_refuses),
                cmocka_unit_test(test_index),
                cmocka_unit_test(test_package),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
