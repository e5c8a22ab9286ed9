/* Unit tests of the chunk store (src/lazy/chunkstore.h): put/get/has and
 * the on-disk layout, verification on put, a damaged stored chunk found
 * and removed at get (changed bytes, truncated, replaced by a directory),
 * lengths, GC against keep tables and old temporaries, local counts, and
 * threads putting and getting the same chunks at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <utime.h>

#include "cas/cas.h"
#include "lazy/chunkstore.h"
#include "test-ok.h"

static char W[PATH_MAX];

static int setup(void **state) {
        (void) state;
        snprintf(W, sizeof(W), "/tmp/test-lazy-store-XXXXXX");
        assert_non_null(mkdtemp(W));
        return 0;
}

static int teardown(void **state) {
        (void) state;
        assert_int_equal(lg_rm_rf(W), 0);
        return 0;
}

static lg_chunk_store *open_store(void) {
        lg_chunk_store *s;
        struct lg_error err = {0};
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/lazy", W);
        OK(lg_chunk_store_open(p, &s, &err));
        return s;
}

/* Chunk k: len bytes derived from k. */
static void fill(uint8_t *buf, size_t len, unsigned k) {
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t) (i * 7 + k * 13 + (i >> 8));
}

static void sha_of(const void *buf, size_t len, uint8_t sha[32]) { assert_int_equal(lg_sha256(buf, len, sha), 0); }

static void test_put_get(void **state) {
        (void) state;
        lg_chunk_store *s = open_store();
        struct lg_error err = {0};
        uint8_t buf[8192], out[8192], sha[32];
        fill(buf, sizeof(buf), 1);
        sha_of(buf, sizeof(buf), sha);
        assert_int_equal(lg_chunk_store_has(s, sha), 0);
        assert_int_equal(lg_chunk_store_get(s, sha, out, sizeof(out), &err), -ENOENT);
        assert_int_equal(lg_chunk_store_put(s, sha, buf, sizeof(buf), &err), 0);
        assert_int_equal(lg_chunk_store_put(s, sha, buf, sizeof(buf), &err), 1);
        assert_int_equal(lg_chunk_store_has(s, sha), 1);
        OK(lg_chunk_store_get(s, sha, out, sizeof(out), &err));
        assert_memory_equal(out, buf, sizeof(buf));
        OK(lg_chunk_store_sync(s, &err));

        /* The layout: chunks/<hh>/<hex>, 0444. */
        struct lg_digest d;
        lg_digest_from_bytes(sha, &d);
        char p[PATH_MAX], q[PATH_MAX];
        snprintf(p, sizeof(p), "%s/lazy/chunks/%.2s/%s", W, d.hex, d.hex);
        OK(lg_chunk_store_path(s, sha, q, sizeof(q)));
        assert_string_equal(p, q);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0444);
        assert_int_equal(st.st_size, sizeof(buf));

        /* Verify on put: bytes that do not match store nothing. */
        uint8_t other[32];
        memcpy(other, sha, 32);
        other[0] ^= 1;
        assert_int_equal(lg_chunk_store_put(s, other, buf, sizeof(buf), &err), -EBADMSG);
        assert_int_equal(lg_chunk_store_has(s, other), 0);
        /* Asking for another length: -EINVAL, the good chunk stays. */
        assert_int_equal(lg_chunk_store_get(s, sha, out, 4096, &err), -EINVAL);
        assert_int_equal(lg_chunk_store_has(s, sha), 1);
        /* The empty chunk works too. */
        uint8_t esha[32];
        sha_of("", 0, esha);
        assert_int_equal(lg_chunk_store_put(s, esha, "", 0, &err), 0);
        OK(lg_chunk_store_get(s, esha, out, 0, &err));
        /* No temporaries left. */
        snprintf(p, sizeof(p), "%s/lazy/tmp", W);
        assert_int_equal(rmdir(p), 0);
        lg_chunk_store_close(s);
        lg_chunk_store_close(NULL);
}

static void damage(const char *path, int how) {
        assert_int_equal(chmod(path, 0644), 0);
        if (how == 0) { /* flip one byte in the middle */
                int fd = open(path, O_RDWR);
                assert_true(fd >= 0);
                uint8_t c;
                assert_int_equal(pread(fd, &c, 1, 100), 1);
                c ^= 0x40;
                assert_int_equal(pwrite(fd, &c, 1, 100), 1);
                close(fd);
        } else if (how == 1) { /* truncated */
                assert_int_equal(truncate(path, 4096), 0);
        } else if (how == 2) { /* zeros of the right length (a crash) */
                int fd = open(path, O_RDWR);
                static uint8_t z[8192];
                assert_int_equal(pwrite(fd, z, sizeof(z), 0), (ssize_t) sizeof(z));
                close(fd);
        } else { /* not a file */
                assert_int_equal(unlink(path), 0);
                assert_int_equal(mkdir(path, 0700), 0);
        }
}

static void test_damaged(void **state) {
        (void) state;
        lg_chunk_store *s = open_store();
        struct lg_error err = {0};
        uint8_t buf[8192], out[8192], sha[32];
        for (int how = 0; how < 4; how++) {
                fill(buf, sizeof(buf), 2);
                sha_of(buf, sizeof(buf), sha);
                assert_int_equal(lg_chunk_store_put(s, sha, buf, sizeof(buf), &err), 0);
                char p[PATH_MAX];
                OK(lg_chunk_store_path(s, sha, p, sizeof(p)));
                damage(p, how);
                assert_int_equal(lg_chunk_store_get(s, sha, out, sizeof(out), &err), -EBADMSG);
                assert_non_null(strstr(err.msg, "removed"));
                assert_int_equal(lg_chunk_store_has(s, sha), 0);
                if (how == 3)
                        assert_int_equal(rmdir(p), -1); /* the directory went too */
                /* And it can be stored again. */
                assert_int_equal(lg_chunk_store_put(s, sha, buf, sizeof(buf), &err), 0);
                OK(lg_chunk_store_get(s, sha, out, sizeof(out), &err));
                assert_memory_equal(out, buf, sizeof(buf));
                assert_int_equal(unlink(p), 0);
        }
        lg_chunk_store_close(s);
}

static lg_chunk_table *table_of(uint8_t bufs[][4096], size_t n) {
        struct lg_chunk c[8];
        for (size_t i = 0; i < n; i++) {
                c[i].offset = i * 4096;
                c[i].length = 4096;
                sha_of(bufs[i], 4096, c[i].sha256);
        }
        lg_chunk_table *t;
        struct lg_error err = {0};
        OK(lg_chunk_table_new(4096, n * 4096, c, n, &t, &err));
        return t;
}

static void test_gc_local(void **state) {
        (void) state;
        lg_chunk_store *s = open_store();
        struct lg_error err = {0};
        static uint8_t b[6][4096];
        for (unsigned i = 0; i < 6; i++)
                fill(b[i], 4096, 10 + i);
        lg_chunk_table *t1 = table_of(b, 3);      /* 0 1 2 */
        lg_chunk_table *t2 = table_of(b + 2, 3);  /* 2 3 4 */
        uint8_t sha[32];
        for (unsigned i = 0; i < 6; i++) {
                sha_of(b[i], 4096, sha);
                assert_true(lg_chunk_store_put(s, sha, b[i], 4096, &err) >= 0);
        }
        uint64_t c, by;
        OK(lg_chunk_store_local(s, t1, &c, &by));
        assert_int_equal(c, 3);
        assert_int_equal(by, 3 * 4096);

        /* A temporary of a crash, old, and one in progress. */
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/lazy/tmp/.chunk-old", W);
        assert_int_equal(lg_write_file_at(AT_FDCWD, p, "x", true), 0);
        struct utimbuf ut = {time(NULL) - 7200, time(NULL) - 7200};
        assert_int_equal(utime(p, &ut), 0);
        snprintf(p, sizeof(p), "%s/lazy/tmp/.chunk-new", W);
        assert_int_equal(lg_write_file_at(AT_FDCWD, p, "x", true), 0);
        /* A file that is not a chunk stays. */
        snprintf(p, sizeof(p), "%s/lazy/chunks/README", W);
        assert_int_equal(lg_write_file_at(AT_FDCWD, p, "x", true), 0);

        lg_chunk_table *keep[] = {t1, t2};
        uint64_t removed = 99, bytes = 99;
        OK(lg_chunk_store_gc(s, keep, 2, &removed, &bytes, &err));
        assert_int_equal(removed, 1); /* chunk 5 */
        assert_int_equal(bytes, 4096);
        sha_of(b[5], 4096, sha);
        assert_int_equal(lg_chunk_store_has(s, sha), 0);
        sha_of(b[4], 4096, sha);
        assert_int_equal(lg_chunk_store_has(s, sha), 1);
        assert_int_equal(access(p, F_OK), 0);
        snprintf(p, sizeof(p), "%s/lazy/tmp/.chunk-new", W);
        assert_int_equal(access(p, F_OK), 0);
        snprintf(p, sizeof(p), "%s/lazy/tmp/.chunk-old", W);
        assert_int_equal(access(p, F_OK), -1);

        OK(lg_chunk_store_gc(s, keep + 1, 1, &removed, &bytes, &err));
        assert_int_equal(removed, 2); /* chunks 0 1 */
        OK(lg_chunk_store_local(s, t1, &c, &by));
        assert_int_equal(c, 1);
        assert_int_equal(by, 4096);
        OK(lg_chunk_store_gc(s, NULL, 0, &removed, NULL, &err));
        assert_int_equal(removed, 3);
        OK(lg_chunk_store_local(s, t2, &c, NULL));
        assert_int_equal(c, 0);
        lg_chunk_table_free(t1);
        lg_chunk_table_free(t2);
        lg_chunk_store_close(s);
}

struct worker {
        lg_chunk_store *s;
        int failures;
};

static void *work(void *p) {
        struct worker *w = p;
        uint8_t buf[16384], out[16384], sha[32];
        struct lg_error err = {0};
        for (unsigned round = 0; round < 200; round++) {
                unsigned k = round % 16;
                fill(buf, sizeof(buf), 100 + k);
                sha_of(buf, sizeof(buf), sha);
                if (lg_chunk_store_put(w->s, sha, buf, sizeof(buf), &err) < 0 ||
                    lg_chunk_store_get(w->s, sha, out, sizeof(out), &err) < 0 || memcmp(out, buf, sizeof(buf)))
                        w->failures++;
        }
        return NULL;
}

static void test_threads(void **state) {
        (void) state;
        lg_chunk_store *s = open_store();
        struct worker w[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
                w[i] = (struct worker){s, 0};
                assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
                pthread_join(th[i], NULL);
                assert_int_equal(w[i].failures, 0);
        }
        uint64_t removed;
        struct lg_error err = {0};
        OK(lg_chunk_store_gc(s, NULL, 0, &removed, NULL, &err));
        assert_int_equal(removed, 16);
        lg_chunk_store_close(s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
                cmocka_unit_test_setup_teardown(test_damaged, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gc_local, setup, teardown),
                cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
