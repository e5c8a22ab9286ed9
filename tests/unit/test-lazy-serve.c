/* Tests of lg_lazy_serve (src/lazy/serve.h) on a home made by hand (no
 * root, no mkfs.erofs): a BLOB cut into chunks with a table written in the
 * DESIGN-13 format, its chunks in the chunk store, a lazy layer naming it
 * in source.json, an image store blob, small files and a prefetch record.
 * Whole reads and ranges equal the original; a chunk neither local nor
 * obtainable is -EIO; a chunk missing or damaged in the store is read
 * through the FUSE blob file (here a plain file standing in for it) and
 * verified, wrong bytes there are -EBADMSG; hostile digests and names;
 * a file whose content changes is found by its new digest only; the
 * async calls run off the loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cas/cas.h"
#include "lazy/chunkstore.h"
#include "lazy/serve.h"
#include "test-ok.h"

#define CS 65536u
#define NCH 5
#define LAST 10000u
#define BLOB_SIZE (CS * (NCH - 1) + LAST)

static char W[PATH_MAX];
static uint8_t blob[BLOB_SIZE];
static uint8_t meta[20000];
static char blob_digest[80], layer[65];
static uint8_t chunk_sha[NCH][32];

static void hexs(const uint8_t md[32], char out[65]) {
        for (int i = 0; i < 32; i++)
                sprintf(out + 2 * i, "%02x", md[i]);
}

static void digest_of(const void *b, size_t n, char out[80]) {
        uint8_t md[32];
        char h[65];
        assert_int_equal(lg_sha256(b, n, md), 0);
        hexs(md, h);
        snprintf(out, 80, "sha256:%s", h);
}

static void fill(uint8_t *b, size_t len, unsigned seed) {
        uint32_t x = seed * 2654435761u + 1;
        for (size_t i = 0; i < len; i++) {
                x ^= x << 13, x ^= x >> 17, x ^= x << 5;
                b[i] = (uint8_t) x;
        }
}

static void write_file(const char *path, const void *buf, size_t len) {
        (void) unlink(path);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(lg_write_all(fd, buf, len), 0);
        close(fd);
}

static void put_le(uint8_t *p, uint64_t v, int n) {
        for (int i = 0; i < n; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

static void pathf(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *buf, const char *fmt, ...) {
        char rel[PATH_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rel, sizeof(rel), fmt, ap);
        va_end(ap);
        snprintf(buf, PATH_MAX, "%s/%s", W, rel);
}

static void write_source(bool local) {
        char p[PATH_MAX], text[512];
        pathf(p, "lazy/layers/%s/source.json", layer);
        snprintf(text, sizeof(text),
                 local ? "{\"local\":true,\"digest\":\"%s\"}"
                       : "{\"registry\":\"127.0.0.1:1\",\"repository\":\"r\",\"digest\":\"%s\",\"insecure\":true}",
                 blob_digest);
        write_file(p, text, strlen(text));
}

static int setup(void **state) {
        (void) state;
        snprintf(W, sizeof(W), "/tmp/test-lazy-serve-XXXXXX");
        assert_non_null(mkdtemp(W));
        fill(blob, sizeof(blob), 7);
        fill(meta, sizeof(meta), 8);
        digest_of(blob, sizeof(blob), blob_digest);
        memset(layer, 'a', 64);
        layer[64] = '\0';
        char p[PATH_MAX];
        pathf(p, "images/blobs/sha256");
        assert_int_equal(lg_mkdir_p(p, 0755), 0);
        pathf(p, "lazy/layers/%s", layer);
        assert_int_equal(lg_mkdir_p(p, 0755), 0);
        pathf(p, "lazy/prefetch");
        assert_int_equal(lg_mkdir_p(p, 0755), 0);
        pathf(p, "fuse");
        assert_int_equal(lg_mkdir_p(p, 0755), 0);
        /* The chunk table, by hand. */
        size_t tlen = 32 + 48 * NCH;
        uint8_t t[32 + 48 * NCH];
        memcpy(t, "LGCHUNK1", 8);
        put_le(t + 8, 1, 4);
        put_le(t + 12, CS, 4);
        put_le(t + 16, BLOB_SIZE, 8);
        put_le(t + 24, NCH, 8);
        lg_chunk_store *cs;
        struct lg_error err = {0};
        pathf(p, "lazy");
        OK(lg_chunk_store_open(p, &cs, &err));
        for (int i = 0; i < NCH; i++) {
                uint32_t len = i == NCH - 1 ? LAST : CS;
                uint8_t *e = t + 32 + 48 * i;
                assert_int_equal(lg_sha256(blob + (size_t) i * CS, len, chunk_sha[i]), 0);
                put_le(e, (uint64_t) i * CS, 8);
                put_le(e + 8, len, 4);
                put_le(e + 12, 0, 4);
                memcpy(e + 16, chunk_sha[i], 32);
                OK(lg_chunk_store_put(cs, chunk_sha[i], blob + (size_t) i * CS, len, &err));
        }
        lg_chunk_store_close(cs);
        pathf(p, "lazy/layers/%s/chunks", layer);
        write_file(p, t, tlen);
        pathf(p, "lazy/layers/%s/meta.erofs", layer);
        write_file(p, meta, sizeof(meta));
        write_source(false);
        return 0;
}

static int teardown(void **state) {
        (void) state;
        assert_int_equal(lg_rm_rf(W), 0);
        return 0;
}

static lg_lazy_serve *serve_new(bool fuse) {
        char images[PATH_MAX], lazy[PATH_MAX], fdir[PATH_MAX];
        pathf(images, "images");
        pathf(lazy, "lazy");
        pathf(fdir, "fuse");
        struct lg_lazy_serve_config cfg = {.images_dir = images, .lazy_dir = lazy, .fuse_dir = fuse ? fdir : NULL};
        lg_lazy_serve *s = NULL;
        struct lg_error err = {0};
        OK(lg_lazy_serve_new(&cfg, &s, &err));
        return s;
}

/* The whole blob digest equals want, and some ranges. */
static void check_reads(lg_lazy_serve *s, const char *digest, const uint8_t *want, size_t size, const char *kind) {
        struct lg_error err = {0};
        lg_lazy_serve_blob *b = NULL;
        uint64_t n = 0;
        OK(lg_lazy_serve_open(s, digest, &b, &n, &err));
        assert_int_equal(n, size);
        assert_string_equal(lg_lazy_serve_blob_kind(b), kind);
        uint8_t *buf = malloc(size + 1);
        OK(lg_lazy_serve_read(b, 0, buf, size, &err));
        assert_memory_equal(buf, want, size);
        static const uint64_t r[][2] = {{0, 1}, {65535, 2}, {65536, 65536}, {100, 200000}, {4096, 70000}};
        for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
                if (r[i][0] + r[i][1] > size)
                        continue;
                OK(lg_lazy_serve_read(b, r[i][0], buf, r[i][1], &err));
                assert_memory_equal(buf, want + r[i][0], r[i][1]);
        }
        OK(lg_lazy_serve_read(b, size - 1, buf, 1, &err));
        assert_int_equal(buf[0], want[size - 1]);
        assert_int_equal(lg_lazy_serve_read(b, size, buf, 1, &err), -ERANGE);
        assert_int_equal(lg_lazy_serve_read(b, 1, buf, size, &err), -ERANGE);
        assert_int_equal(lg_lazy_serve_read(b, UINT64_MAX, buf, 2, &err), -ERANGE);
        free(buf);
        lg_lazy_serve_blob_close(b);
}

static void test_lazy_blob(void **state) {
        (void) state;
        lg_lazy_serve *s = serve_new(false);
        check_reads(s, blob_digest, blob, sizeof(blob), "lazy");
        lg_lazy_serve_free(s);
}

static void test_files(void **state) {
        (void) state;
        lg_lazy_serve *s = serve_new(false);
        char d[80], p[PATH_MAX];
        /* An image store blob. */
        static const char cfg[] = "{\"config\":{}}";
        digest_of(cfg, strlen(cfg), d);
        pathf(p, "images/blobs/sha256/%s", d + 7);
        write_file(p, cfg, strlen(cfg));
        check_reads(s, d, (const uint8_t *) cfg, strlen(cfg), "file");
        /* The layer's meta and chunk table by the sha256 of their content. */
        digest_of(meta, sizeof(meta), d);
        check_reads(s, d, meta, sizeof(meta), "file");
        uint8_t t[32 + 48 * NCH];
        pathf(p, "lazy/layers/%s/chunks", layer);
        int fd = open(p, O_RDONLY);
        assert_int_equal(lg_pread_all(fd, t, sizeof(t), 0), (ssize_t) sizeof(t));
        close(fd);
        digest_of(t, sizeof(t), d);
        check_reads(s, d, t, sizeof(t), "file");
        /* A prefetch record: found by its digest; once it grows, by the
         * new digest only (the cache notices the change). */
        uint8_t rec[8] = {1, 0, 0, 0, 3, 0, 0, 0};
        char d2[80];
        pathf(p, "lazy/prefetch/%s", blob_digest + 7);
        write_file(p, rec, 4);
        digest_of(rec, 4, d);
        check_reads(s, d, rec, 4, "file");
        fd = open(p, O_WRONLY | O_APPEND);
        assert_int_equal(lg_write_all(fd, rec + 4, 4), 0);
        close(fd);
        digest_of(rec, 8, d2);
        struct lg_error err = {0};
        lg_lazy_serve_blob *b = NULL;
        uint64_t n;
        assert_int_equal(lg_lazy_serve_open(s, d, &b, &n, &err), -ENOENT);
        assert_null(b);
        check_reads(s, d2, rec, 8, "file");
        lg_lazy_serve_free(s);
}

static void test_hostile(void **state) {
        (void) state;
        lg_lazy_serve *s = serve_new(true);
        struct lg_error err = {0};
        lg_lazy_serve_blob *b = NULL;
        uint64_t n;
        char big[200];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        const char *bad[] = {"", "sha256:", "sha256:abc", "sha512:" "0000000000000000000000000000000000000000000000000000000000000000",
                             "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                             "sha256:../../../../../../../../../../../../../../../../etc/passwd..",
                             "sha256:00000000000000000000000000000000000000000000000000000000000000000",
                             "SHA256:0000000000000000000000000000000000000000000000000000000000000000", big};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_int_equal(lg_lazy_serve_open(s, bad[i], &b, &n, &err), -EINVAL);
        assert_int_equal(lg_lazy_serve_open(s, NULL, &b, &n, &err), -EINVAL);
        char zero[80];
        snprintf(zero, sizeof(zero), "sha256:%064d", 0);
        assert_int_equal(lg_lazy_serve_open(s, zero, &b, &n, &err), -ENOENT);
        /* Symlinks are not followed: not in the image store, not as a
         * layer's file, not as source.json. */
        char p[PATH_MAX], d[80];
        pathf(p, "images/blobs/sha256/%064d", 0);
        assert_int_equal(symlink("/etc/hostname", p), 0);
        assert_int_equal(lg_lazy_serve_open(s, zero, &b, &n, &err), -ENOENT);
        char other[65];
        memset(other, 'b', 64);
        other[64] = '\0';
        pathf(p, "lazy/layers/%s", other);
        assert_int_equal(mkdir(p, 0755), 0);
        pathf(p, "lazy/layers/%s/meta.erofs", other);
        assert_int_equal(symlink("/etc/hostname", p), 0);
        char host[4096];
        int hfd = open("/etc/hostname", O_RDONLY);
        if (hfd >= 0) {
                ssize_t hl = lg_pread_all(hfd, host, sizeof(host), 0);
                close(hfd);
                assert_true(hl >= 0);
                digest_of(host, (size_t) hl, d);
                assert_int_equal(lg_lazy_serve_open(s, d, &b, &n, &err), -ENOENT);
        }
        /* A source.json that is a symlink to another layer's: ignored. */
        pathf(p, "lazy/layers/%s/source.json", other);
        char target[PATH_MAX];
        pathf(target, "lazy/layers/%s/source.json", layer);
        assert_int_equal(symlink(target, p), 0);
        /* A directory that is not a layer name, and source.json garbage. */
        pathf(p, "lazy/layers/not-hex");
        assert_int_equal(mkdir(p, 0755), 0);
        pathf(p, "lazy/layers/%s/source.json", layer);
        write_file(p, "{\"digest\": 5", 12);
        assert_int_equal(lg_lazy_serve_open(s, blob_digest, &b, &n, &err), -ENOENT);
        write_file(p, "{\"digest\": \"sha256:../x\"}", 25);
        assert_int_equal(lg_lazy_serve_open(s, blob_digest, &b, &n, &err), -ENOENT);
        write_source(false);
        OK(lg_lazy_serve_open(s, blob_digest, &b, &n, &err));
        lg_lazy_serve_blob_close(b);
        /* A chunk table that is garbage: the table's parser refuses it. */
        pathf(p, "lazy/layers/%s/chunks", layer);
        write_file(p, "LGCHUNK1garbage", 15);
        assert_true(lg_lazy_serve_open(s, blob_digest, &b, &n, &err) < 0);
        lg_lazy_serve_free(s);
}

static void chunk_path(int i, char *p) {
        char dir[PATH_MAX];
        pathf(dir, "lazy");
        lg_chunk_store *cs;
        struct lg_error err = {0};
        OK(lg_chunk_store_open(dir, &cs, &err));
        assert_int_equal(lg_chunk_store_path(cs, chunk_sha[i], p, PATH_MAX), 0);
        lg_chunk_store_close(cs);
}

/* Chunk 2 not local: -EIO without a way to get it, read through the FUSE
 * blob file when there is one, verified there. */
static void test_missing_chunk(void **state) {
        (void) state;
        char p[PATH_MAX], f[PATH_MAX];
        chunk_path(2, p);
        assert_int_equal(unlink(p), 0);
        struct lg_error err = {0};
        uint8_t buf[100];
        for (int fuse = 0; fuse < 2; fuse++) {
                /* Converted here ("local"), or no fetcher: -EIO for that
                 * chunk only. */
                write_source(!fuse);
                lg_lazy_serve *s = serve_new(fuse);
                lg_lazy_serve_blob *b = NULL;
                uint64_t n;
                OK(lg_lazy_serve_open(s, blob_digest, &b, &n, &err));
                OK(lg_lazy_serve_read(b, CS + 5, buf, 100, &err));
                assert_memory_equal(buf, blob + CS + 5, 100);
                assert_int_equal(lg_lazy_serve_read(b, 2 * CS + 5, buf, 100, &err), -EIO);
                assert_non_null(strstr(err.msg, "chunk 2"));
                OK(lg_lazy_serve_read(b, 3 * CS, buf, 100, &err));
                lg_lazy_serve_blob_close(b);
                lg_lazy_serve_free(s);
        }
        /* The node's FUSE blob file has it. */
        pathf(f, "fuse/%s", layer);
        write_file(f, blob, sizeof(blob));
        lg_lazy_serve *s = serve_new(true);
        check_reads(s, blob_digest, blob, sizeof(blob), "lazy");
        /* ... but gives wrong bytes: -EBADMSG, never those bytes. */
        uint8_t *bad = malloc(sizeof(blob));
        memcpy(bad, blob, sizeof(blob));
        bad[2 * CS + 77] ^= 1;
        write_file(f, bad, sizeof(blob));
        lg_lazy_serve_blob *b = NULL;
        uint64_t n;
        OK(lg_lazy_serve_open(s, blob_digest, &b, &n, &err));
        assert_int_equal(lg_lazy_serve_read(b, 2 * CS, buf, 100, &err), -EBADMSG);
        assert_int_equal(lg_lazy_serve_read(b, 0, bad, sizeof(blob), &err), -EBADMSG);
        /* ... or too few. */
        assert_int_equal(truncate(f, 2 * CS + 10), 0);
        assert_int_equal(lg_lazy_serve_read(b, 2 * CS, buf, 100, &err), -EBADMSG);
        lg_lazy_serve_blob_close(b);
        /* A chunk damaged in the store is not served: it is read through
         * the FUSE file instead (the store drops the damaged file). */
        write_file(f, blob, sizeof(blob));
        chunk_path(1, p);
        assert_int_equal(chmod(p, 0644), 0);
        int fd = open(p, O_WRONLY);
        assert_int_equal(lg_pwrite_all(fd, "X", 1, 10), 0);
        close(fd);
        OK(lg_lazy_serve_open(s, blob_digest, &b, &n, &err));
        OK(lg_lazy_serve_read(b, CS, buf, 100, &err));
        assert_memory_equal(buf, blob + CS, 100);
        assert_int_equal(access(p, F_OK), -1);
        lg_lazy_serve_blob_close(b);
        free(bad);
        lg_lazy_serve_free(s);
}

/* ---- async -------------------------------------------------------------------- */

struct async_state {
        lg_lazy_serve_blob *b;
        uint64_t size;
        int open_status, read_status, calls;
        uint8_t buf[1000];
};

static void on_read(void *ud, int status, const struct lg_error *err) {
        (void) err;
        struct async_state *a = ud;
        a->read_status = status;
        a->calls++;
}

static void on_open(void *ud, int status, lg_lazy_serve_blob *b, uint64_t size, const struct lg_error *err) {
        (void) err;
        struct async_state *a = ud;
        a->open_status = status;
        a->b = b;
        a->size = size;
        a->calls++;
        if (status >= 0)
                assert_int_equal(lg_lazy_serve_read_async(b, 2 * CS - 500, a->buf, sizeof(a->buf), on_read, a), 0);
}

static int order[8], n_order;
static void on_open_n(void *ud, int status, lg_lazy_serve_blob *b, uint64_t size, const struct lg_error *err) {
        (void) size, (void) err;
        assert_int_equal(status, 0);
        order[n_order++] = (int) (intptr_t) ud;
        lg_lazy_serve_blob_close(b);
}

static void test_async(void **state) {
        (void) state;
        uv_loop_t loop;
        assert_int_equal(uv_loop_init(&loop), 0);
        char images[PATH_MAX], lazy[PATH_MAX];
        pathf(images, "images");
        pathf(lazy, "lazy");
        struct lg_lazy_serve_config cfg = {.loop = &loop, .images_dir = images, .lazy_dir = lazy};
        lg_lazy_serve *s = NULL;
        struct lg_error err = {0};
        OK(lg_lazy_serve_new(&cfg, &s, &err));
        struct async_state a = {0}, bad = {0};
        assert_int_equal(lg_lazy_serve_open_async(s, blob_digest, on_open, &a), 0);
        assert_int_equal(lg_lazy_serve_open_async(s, "sha256:nope", on_open, &bad), 0);
        assert_int_equal(a.calls + bad.calls, 0); /* never from inside the call */
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(a.calls, 2);
        assert_int_equal(a.open_status, 0);
        assert_int_equal(a.read_status, 0);
        assert_int_equal(a.size, sizeof(blob));
        assert_memory_equal(a.buf, blob + 2 * CS - 500, sizeof(a.buf));
        assert_int_equal(bad.calls, 1);
        assert_int_equal(bad.open_status, -EINVAL);
        assert_null(bad.b);
        /* More calls than threads it takes: they wait their turn, and all
         * are answered. */
        n_order = 0;
        for (intptr_t i = 0; i < 8; i++)
                assert_int_equal(lg_lazy_serve_open_async(s, blob_digest, on_open_n, (void *) i), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(n_order, 8);
        int seen = 0;
        for (int i = 0; i < 8; i++)
                seen |= 1 << order[i];
        assert_int_equal(seen, 0xff);
        lg_lazy_serve_blob_close(a.b);
        lg_lazy_serve_free(s);
        assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_lazy_blob, setup, teardown),
                cmocka_unit_test_setup_teardown(test_files, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hostile, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing_chunk, setup, teardown),
                cmocka_unit_test_setup_teardown(test_async, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
