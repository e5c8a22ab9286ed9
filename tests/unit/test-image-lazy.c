/* Unit tests of lazy layers in the image store (src/image/lazy-image.c):
 * an image whose layer is lazy (layers/<hex>.json "lazy": true, no layer
 * blob) commits and loads as any other; lg_image_lazy_attach_all mounts
 * the lazy layers that are not mounted through the ops, and only those.
 *
 * Needs root for the image store's layers (owners, xattrs): skipped
 * otherwise; the convert and GC tests need erofs (mkfs.erofs, the kernel's
 * erofs from a file) too. Work happens in /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "image/image-internal.h"
#include "image/image.h"
#include "lazy/chunkstore.h"
#include "lazy/lazy.h"

#include "archive-kit.h"
#include "test-ok.h"
#include "image-kit.h"

static char W[PATH_MAX], STORE[PATH_MAX], LAZY[PATH_MAX];

static int setup_work(void **state) {
        (void) state;
        /* Not /dev/shm: erofs does not mount a file on tmpfs (ENOTBLK). */
        const char *base = "/tmp";
        snprintf(W, sizeof(W), "%s/lg-image-lazy-test-XXXXXX", base);
        if (!mkdtemp(W))
                return -1;
        snprintf(STORE, sizeof(STORE), "%s/images", W);
        snprintf(LAZY, sizeof(LAZY), "%s/lazy", W);
        return 0;
}

static int teardown_work(void **state) {
        (void) state;
        /* A failed test may leave a layer mounted: never remove through it. */
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/layers", STORE);
        DIR *d = opendir(p);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                char m[PATH_MAX];
                snprintf(m, sizeof(m), "%s/%s", p, de->d_name);
                if (de->d_name[0] != '.')
                        (void) umount2(m, MNT_DETACH);
        }
        if (d)
                closedir(d);
        lg_rm_rf(W);
        return 0;
}

/* Fake ops: count attaches and remember the last mount point. */
struct fake {
        unsigned attached, detached;
        char last_hex[65], last_mnt[PATH_MAX];
        int fail;
};

static int fake_attach(void *ud, const char *hex, const char *mnt, struct lg_error *err) {
        struct fake *f = ud;
        if (f->fail)
                return lg_error_setm(err, EIO, "no fetcher");
        f->attached++;
        snprintf(f->last_hex, sizeof(f->last_hex), "%s", hex);
        snprintf(f->last_mnt, sizeof(f->last_mnt), "%s", mnt);
        return 0;
}

static int fake_detach(void *ud, const char *hex, const char *mnt, struct lg_error *err) {
        (void) hex, (void) mnt, (void) err;
        ((struct fake *) ud)->detached++;
        return 0;
}

static const struct lg_image_lazy_ops fake_ops = {.attach = fake_attach, .detach = fake_detach};

static void write_at(const char *dir, const char *name, const char *text) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(lg_write_all(fd, text, strlen(text)), 0);
        close(fd);
}

/* A lazy layer's record and mount point, as a lazy pull leaves them. */
static void fake_lazy_layer(const struct tlayer *l) {
        char name[96], text[256], p[PATH_MAX];
        snprintf(name, sizeof(name), "layers/%s.json", l->digest + 7);
        snprintf(text, sizeof(text), "{\"diffId\": \"%s\", \"size\": 1, \"lazy\": true}\n", l->diff_id);
        write_at(STORE, name, text);
        snprintf(p, sizeof(p), "%s/layers/%s", STORE, l->digest + 7);
        assert_int_equal(mkdir(p, 0755), 0);
}

/* Layer 0 (lower) to be lazy, layer 1 full. */
static void two_layers(struct timg *im) {
        const struct te a[] = {{.path = "a", .type = F, .data = "lazy"}};
        const struct te b[] = {{.path = "b", .type = F, .data = "full"}};
        make_layer(im, a, 1, 1);
        make_layer(im, b, 1, 1);
        finish_image(im, NULL, false);
}

static void test_attach_all(void **state) {
        (void) state;
        if (geteuid() != 0)
                skip();
        lg_image_store *st;
        struct lg_error err = {0};
        OK(lg_image_store_open(STORE, &st, &err));
        unsigned n = 99;
        /* Without ops there is nothing to mount. */
        OK(lg_image_lazy_attach_all(st, &n, &err));
        assert_int_equal(n, 0);
        struct fake f = {0};
        OK(lg_image_store_set_lazy(st, LAZY, &fake_ops, &f, true, &err));
        struct stat s;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/layers", LAZY);
        assert_int_equal(stat(p, &s), 0);

        struct timg im = {0};
        two_layers(&im);
        fake_lazy_layer(&im.l[0]);
        /* A full layer's record: never attached. */
        char name[96];
        snprintf(name, sizeof(name), "layers/%s.json", im.l[1].digest + 7);
        write_at(STORE, name, "{\"diffId\": \"sha256:00\", \"size\": 1}\n");
        OK(lg_image_lazy_attach_all(st, &n, &err));
        assert_int_equal(n, 1);
        assert_int_equal(f.attached, 1);
        assert_string_equal(f.last_hex, im.l[0].digest + 7);
        snprintf(p, sizeof(p), "%s/layers/%s", STORE, im.l[0].digest + 7);
        char *real = realpath(p, NULL);
        assert_non_null(real);
        assert_string_equal(f.last_mnt, real);
        free(real);
        /* A failure is said, with the layer. */
        f.fail = 1;
        assert_int_equal(lg_image_lazy_attach_all(st, &n, &err), -EIO);
        assert_non_null(strstr(err.msg, "no fetcher"));
        assert_int_equal(n, 0);
        free_image(&im);
        lg_image_store_close(st);
}

/* An image whose lower layer is lazy commits without that layer's blob,
 * extracts the other and loads with both layer dirs. */
static void test_commit_with_lazy_layer(void **state) {
        (void) state;
        if (geteuid() != 0)
                skip();
        lg_image_store *st;
        struct lg_error err = {0};
        OK(lg_image_store_open(STORE, &st, &err));
        struct timg im = {0};
        two_layers(&im);
        put_blob(st, im.l[1].blob.p, im.l[1].blob.len);
        put_blob(st, im.config, strlen(im.config));
        put_blob(st, im.manifest, strlen(im.manifest));
        /* Without the lazy record, the missing blob fails the commit. */
        assert_int_equal(lg_image_commit(st, im.mdigest, "test/lazy:1", NULL, NULL, NULL, &err), -ENOENT);
        fake_lazy_layer(&im.l[0]);
        struct lg_image *img = NULL;
        OK(lg_image_commit(st, im.mdigest, "test/lazy:1", NULL, NULL, &img, &err));
        assert_int_equal(img->n_layers, 2);
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/b", img->layer_dirs[0]);
        struct stat s;
        assert_int_equal(stat(p, &s), 0);
        assert_non_null(strstr(img->layer_dirs[1], im.l[0].digest + 7));
        lg_image_free(img);
        free_image(&im);
        lg_image_store_close(st);
}

/* ---- convert and GC ------------------------------------------------------------- */

static bool exists_in(const char *dir, const char *hex, const char *name) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/layers/%s%s%s", dir, hex, name ? "/" : "", name ? name : "");
        struct stat s;
        return lstat(p, &s) == 0;
}

/* Chunks in the node's chunk store: its regular files. */
static unsigned n_chunks;

static int count_file(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        (void) path, (void) st, (void) ftw;
        n_chunks += type == FTW_F;
        return 0;
}

static unsigned count_chunks(void) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/chunks", LAZY);
        n_chunks = 0;
        (void) nftw(p, count_file, 16, FTW_PHYS);
        return n_chunks;
}

/* A file of n bytes of pseudo-random content from seed (no two 4 KiB
 * blocks alike, so that chunks are distinct). */
static char *noise(size_t n, unsigned seed) {
        char *p = malloc(n + 1);
        assert_non_null(p);
        uint32_t x = seed * 2654435761u + 1;
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13, x ^= x >> 17, x ^= x << 5;
                p[i] = (char) ('a' + x % 26);
        }
        p[n] = '\0';
        return p;
}

static int lazy_ready(void) {
        struct lg_error err = {0};
        return geteuid() == 0 && lg_lazy_check(true, &err) == 0;
}

/* Image A: layer SHARED (a 200 KiB file) under layer ONLY_A (a 100 KiB
 * file); image B: SHARED's content as its own layer with another name
 * (a different layer digest, the same chunks) and a small one. */
struct two {
        struct timg a, b;
        char *big, *other;
};

static void make_two(struct two *t) {
        t->big = noise(200 << 10, 1);
        t->other = noise(100 << 10, 2);
        const struct te shared[] = {{.path = "usr", .type = D}, {.path = "usr/big", .type = F, .data = t->big}};
        const struct te only_a[] = {{.path = "a", .type = F, .data = t->other}};
        const struct te shared2[] = {{.path = "opt", .type = D}, {.path = "opt/big", .type = F, .data = t->big}};
        const struct te only_b[] = {{.path = "b", .type = F, .data = "b"}};
        make_layer(&t->a, shared, 2, 1);
        make_layer(&t->a, only_a, 1, 1);
        finish_image(&t->a, NULL, false);
        make_layer(&t->b, shared2, 2, 1);
        make_layer(&t->b, only_b, 1, 1);
        finish_image(&t->b, NULL, false);
}

static void free_two(struct two *t) {
        free_image(&t->a);
        free_image(&t->b);
        free(t->big);
        free(t->other);
}

static void test_convert(void **state) {
        (void) state;
        if (!lazy_ready())
                skip();
        lg_image_store *st;
        struct lg_error err = {0};
        OK(lg_image_store_open(STORE, &st, &err));
        struct lg_image_convert_result res;
        /* Not set up: refused, saying so. */
        assert_int_equal(lg_image_convert(st, "test/a:1", 0, NULL, NULL, NULL, &res, &err), -ENOTSUP);
        OK(lg_image_store_set_lazy(st, LAZY, NULL, NULL, true, &err));
        assert_int_equal(lg_image_convert(st, "test/none:1", 0, NULL, NULL, NULL, &res, &err), -ENOENT);
        struct two t = {0};
        make_two(&t);
        ingest(st, &t.a);
        OK(lg_image_commit(st, t.a.mdigest, "test/a:1", NULL, NULL, NULL, &err));
        assert_int_equal(lg_image_convert(st, "test/a:1", 3000, NULL, NULL, NULL, &res, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "power of two"));

        OK(lg_image_convert(st, "test/a:1", 0, NULL, NULL, NULL, &res, &err));
        assert_string_equal(res.digest, t.a.mdigest);
        assert_int_equal(res.n_layers, 2);
        for (size_t i = 0; i < 2; i++) {
                const struct lg_image_convert_layer *l = &res.layers[i];
                const char *hex = t.a.l[i].digest + 7;
                assert_string_equal(l->digest, t.a.l[i].digest);
                assert_false(l->reused);
                assert_int_equal(l->chunk_size, 65536);
                assert_true(l->blob_size >= (i == 0 ? 200u << 10 : 100u << 10));
                assert_true(l->chunks >= (i == 0 ? 4u : 2u));
                assert_true(l->unique_bytes > 0 && l->unique_bytes <= l->blob_size);
                assert_true(l->meta_size > 0);
                assert_true(exists_in(LAZY, hex, "meta.erofs"));
                assert_true(exists_in(LAZY, hex, "chunks"));
                assert_true(exists_in(LAZY, hex, "source.json"));
                assert_true(exists_in(LAZY, hex, "image"));
                assert_false(exists_in(LAZY, hex, "blob"));
                /* The extracted layer stays as it was. */
                assert_true(exists_in(STORE, hex, NULL));
                assert_int_equal(lg_image_layer_is_lazy(st, hex), 0);
                char dg[72];
                OK(lg_image_lazy_source_digest(st, hex, dg, &err));
                assert_string_equal(dg, l->blob_digest);
        }
        unsigned chunks_a = count_chunks();
        assert_true(chunks_a >= 6);
        /* source.json is the owner's alone. */
        char p[PATH_MAX];
        struct stat s;
        snprintf(p, sizeof(p), "%s/layers/%s/source.json", LAZY, t.a.l[0].digest + 7);
        assert_int_equal(stat(p, &s), 0);
        assert_int_equal(s.st_mode & 0777, 0600);
        uint64_t blob0 = res.layers[0].blob_size;
        lg_image_convert_result_clear(&res);

        /* Again: nothing built. */
        OK(lg_image_convert(st, "test/a:1", 0, NULL, NULL, NULL, &res, &err));
        assert_true(res.layers[0].reused && res.layers[1].reused);
        assert_int_equal(res.layers[0].blob_size, blob0);
        lg_image_convert_result_clear(&res);
        /* Another chunk size: built again. */
        OK(lg_image_convert(st, "test/a:1", 16384, NULL, NULL, NULL, &res, &err));
        assert_false(res.layers[0].reused);
        assert_int_equal(res.layers[0].chunk_size, 16384);
        assert_true(res.layers[0].chunks >= 13);
        lg_image_convert_result_clear(&res);
        OK(lg_image_convert(st, "test/a:1", 0, NULL, NULL, NULL, &res, &err));
        lg_image_convert_result_clear(&res);

        /* B shares A's big file: its chunks are stored once. */
        ingest(st, &t.b);
        OK(lg_image_commit(st, t.b.mdigest, "test/b:1", NULL, NULL, NULL, &err));
        struct lg_image_gc_result g;
        /* GC of the 16 KiB chunks no table names any more. */
        OK(lg_image_gc(st, NULL, &g, &err));
        assert_true(g.chunks_removed > 0);
        assert_int_equal(count_chunks(), chunks_a);
        OK(lg_image_convert(st, "test/b:1", 0, NULL, NULL, NULL, &res, &err));
        unsigned chunks_ab = count_chunks();
        /* B's big file's chunks are A's: B adds only its small layer's
         * (and what differs in the shared layer's tail, if anything). */
        assert_true(chunks_ab - chunks_a < 3);
        lg_image_convert_result_clear(&res);

        /* A goes: its own layer's lazy form and chunks go, the shared
         * chunks stay for B. */
        OK(lg_image_remove(st, "test/a:1", &err));
        OK(lg_image_gc(st, NULL, &g, &err));
        assert_false(exists_in(LAZY, t.a.l[0].digest + 7, NULL));
        assert_false(exists_in(LAZY, t.a.l[1].digest + 7, NULL));
        assert_true(exists_in(LAZY, t.b.l[0].digest + 7, "chunks"));
        assert_true(g.chunks_removed >= 2);
        unsigned left = count_chunks();
        assert_int_equal(left, chunks_ab - g.chunks_removed);
        assert_true(left >= 4);
        /* A package's lazy form (no `image` marker) is not the store's. */
        snprintf(p, sizeof(p), "%s/layers/%064d", LAZY, 7);
        assert_int_equal(mkdir(p, 0700), 0);
        OK(lg_image_remove(st, "test/b:1", &err));
        OK(lg_image_gc(st, NULL, &g, &err));
        assert_int_equal(count_chunks(), 0);
        assert_int_equal(stat(p, &s), 0);
        free_two(&t);
        lg_image_store_close(st);
}

/* Fake ops that really mount: a lazy layer built here (meta.erofs and
 * blob kept) mounted at its layer dir; detach unmounts. */
struct real {
        unsigned attached, detached;
};

static int real_attach(void *ud, const char *hex, const char *mnt, struct lg_error *err) {
        char meta[PATH_MAX], blob[PATH_MAX];
        snprintf(meta, sizeof(meta), "%s/layers/%s/meta.erofs", LAZY, hex);
        snprintf(blob, sizeof(blob), "%s/keep-%s", W, hex);
        ((struct real *) ud)->attached++;
        return lg_lazy_mount(meta, blob, mnt, err);
}

static int real_detach(void *ud, const char *hex, const char *mnt, struct lg_error *err) {
        (void) hex;
        ((struct real *) ud)->detached++;
        return lg_lazy_umount(mnt, err);
}

static const struct lg_image_lazy_ops real_ops = {.attach = real_attach, .detach = real_detach};

/* GC of a mounted lazy layer: detached, then gone with its record; one a
 * sandbox uses stays mounted. */
static void test_gc_lazy_layer(void **state) {
        (void) state;
        if (!lazy_ready())
                skip();
        lg_image_store *st;
        struct lg_error err = {0};
        OK(lg_image_store_open(STORE, &st, &err));
        struct real rops = {0};
        OK(lg_image_store_set_lazy(st, LAZY, &real_ops, &rops, true, &err));
        struct two t = {0};
        make_two(&t);
        /* A's lower layer made lazy: built from a tree of its own. */
        ingest(st, &t.a);
        OK(lg_image_commit(st, t.a.mdigest, "test/a:1", NULL, NULL, NULL, &err));
        const char *hex = t.a.l[0].digest + 7;
        char src[PATH_MAX], out[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
        snprintf(src, sizeof(src), "%s/layers/%s", STORE, hex);
        snprintf(out, sizeof(out), "%s/layers/%s", LAZY, hex);
        lg_chunk_store *cs;
        OK(lg_chunk_store_open(LAZY, &cs, &err));
        OK(lg_lazy_build(src, out, 65536, cs, NULL, &err));
        lg_chunk_store_close(cs);
        snprintf(from, sizeof(from), "%s/blob", out);
        snprintf(to, sizeof(to), "%s/keep-%s", W, hex);
        assert_int_equal(rename(from, to), 0);
        json_t *source = json_pack("{s:s,s:s,s:s}", "registry", "127.0.0.1:1", "repository", "x", "digest",
                                   t.a.l[0].digest);
        OK(lg_image_lazy_write_source(out, source, &err));
        json_decref(source);
        /* The extracted tree goes; the layer is lazy from now on. */
        assert_int_equal(lg_rm_rf(src), 0);
        fake_lazy_layer(&t.a.l[0]);
        unsigned n;
        OK(lg_image_lazy_attach_all(st, &n, &err));
        assert_int_equal(n, 1);
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/usr/big", src);
        struct stat s;
        assert_int_equal(stat(p, &s), 0);
        assert_int_equal(s.st_size, 200 << 10);
        struct lg_image_lazy_status ls;
        assert_int_equal(lg_image_layer_lazy_status(st, t.a.l[0].digest, &ls), 1);
        assert_true(ls.chunks >= 4);
        assert_int_equal(ls.local_chunks, ls.chunks);
        assert_int_equal(ls.local_bytes, ls.bytes);
        assert_int_equal(lg_image_layer_lazy_status(st, t.a.l[1].digest, &ls), 0);
        /* Mounted already: not again. */
        OK(lg_image_lazy_attach_all(st, &n, &err));
        assert_int_equal(n, 0);

        OK(lg_image_remove(st, "test/a:1", &err));
        /* In use by a sandbox: stays. */
        const char *used[] = {src};
        struct lg_image_gc_keep keep = {.layers = used, .n_layers = 1};
        struct lg_image_gc_result g;
        OK(lg_image_gc(st, &keep, &g, &err));
        assert_int_equal(rops.detached, 0);
        assert_int_equal(stat(p, &s), 0);
        assert_true(exists_in(LAZY, hex, "chunks"));
        unsigned chunks = count_chunks();
        assert_true(chunks >= 4);
        OK(lg_image_gc(st, NULL, &g, &err));
        assert_int_equal(rops.detached, 1);
        assert_false(exists_in(STORE, hex, NULL));
        char rec[96];
        snprintf(rec, sizeof(rec), "%s.json", hex);
        assert_false(exists_in(STORE, rec, NULL));
        assert_false(exists_in(LAZY, hex, NULL));
        assert_int_equal(count_chunks(), 0);
        assert_int_equal(g.layers_removed, 1); /* the other went at the first GC */
        assert_true(g.chunks_removed >= 4);
        free_two(&t);
        lg_image_store_close(st);
}

/* Prefetch records come from registries: hostile ones are refused. */
static void test_prefetch_check(void **state) {
        (void) state;
        struct lg_error err = {0};
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/prefetch", W);
        static const struct {
                const char *bytes;
                size_t len, n;
                int want;
        } cases[] = {
                {"", 0, 10, 0},                                    /* nothing recorded */
                {"\x01\x00\x00\x00\x09\x00\x00\x00", 8, 10, 0}, /* chunks 1 and 9 of 10 */
                {"\x0a\x00\x00\x00", 4, 10, -EBADMSG},            /* chunk 10 of 10 */
                {"\xff\xff\xff\xff", 4, 10, -EBADMSG},            /* far past the end */
                {"\x01\x00\x00", 3, 10, -EBADMSG},                 /* not whole indexes */
                {"\x00\x00\x00\x00", 4, 0, -EBADMSG},             /* a table of no chunks */
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                assert_true(fd >= 0);
                assert_int_equal(lg_write_all(fd, cases[i].bytes, cases[i].len), 0);
                close(fd);
                int r = lg_image_lazy_prefetch_check(p, cases[i].n, &err);
                if (r != cases[i].want)
                        fail_msg("case %zu: %d (%s), want %d", i, r, err.msg, cases[i].want);
        }
        /* Over 16 Mi indexes (a sparse file: no bytes written). */
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (64 << 20) + 4), 0);
        close(fd);
        assert_int_equal(lg_image_lazy_prefetch_check(p, 10, &err), -EBADMSG);
        assert_int_equal(lg_image_lazy_prefetch_check("/nonexistent/prefetch", 10, &err), -ENOENT);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_attach_all, setup_work, teardown_work),
                cmocka_unit_test_setup_teardown(test_prefetch_check, setup_work, teardown_work),
                cmocka_unit_test_setup_teardown(test_commit_with_lazy_layer, setup_work, teardown_work),
                cmocka_unit_test_setup_teardown(test_convert, setup_work, teardown_work),
                cmocka_unit_test_setup_teardown(test_gc_lazy_layer, setup_work, teardown_work),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
