/* Unit tests of the content-addressed store (src/cas): writes and dedup,
 * expected digests, limits, reads, verification of a damaged blob, crash
 * leftovers cleaned only when alone, GC and the exclusive lock, and
 * hostile digests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cas/cas.h"

#define ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static char W[PATH_MAX];

static int setup(void **state) {
        (void) state;
        snprintf(W, sizeof(W), "/tmp/test-cas-XXXXXX");
        assert_non_null(mkdtemp(W));
        return 0;
}

static int teardown(void **state) {
        (void) state;
        assert_int_equal(lg_rm_rf(W), 0);
        return 0;
}

static lg_cas *open_store(const struct lg_cas_options *o) {
        lg_cas *cas;
        struct lg_error err = {0};
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/store", W);
        if (lg_cas_open(p, o, &cas, &err) < 0)
                fail_msg("open: %s", err.msg);
        return cas;
}

static size_t count(const char *sub, const char *prefix) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/store/%s", W, sub);
        DIR *d = opendir(p);
        assert_non_null(d);
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && !strncmp(de->d_name, prefix, strlen(prefix)))
                        n++;
        closedir(d);
        return n;
}

static void test_put_get(void **state) {
        (void) state;
        lg_cas *cas = open_store(NULL);
        struct lg_error err = {0};
        struct lg_digest d;
        assert_int_equal(lg_cas_put(cas, "abc", 3, &d, &err), 0);
        assert_string_equal(d.hex, ABC);
        /* Dedup: the second copy is dropped, 1 says so. */
        assert_int_equal(lg_cas_put(cas, "abc", 3, &d, &err), 1);
        assert_int_equal(lg_cas_put(cas, "", 0, &d, &err), 0);
        assert_string_equal(d.hex, EMPTY);
        uint64_t size = 0;
        assert_int_equal(lg_cas_stat(cas, ABC, &size), 0);
        assert_int_equal(size, 3);
        char p[PATH_MAX], want[PATH_MAX];
        assert_int_equal(lg_cas_path(cas, ABC, p, sizeof(p)), 0);
        snprintf(want, sizeof(want), "%s/store/blobs/sha256/%s", W, ABC);
        assert_string_equal(p, want);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0444);
        char *text;
        size_t len;
        assert_int_equal(lg_cas_read(cas, ABC, 3, &text, &len, &err), 0);
        assert_int_equal(len, 3);
        assert_string_equal(text, "abc");
        free(text);
        assert_int_equal(lg_cas_read(cas, ABC, 2, &text, &len, &err), -EFBIG);
        assert_null(text);
        int fd = lg_cas_get(cas, ABC, &err);
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(lg_cas_verify(cas, ABC, &err), 0);
        struct lg_digest *v;
        size_t n;
        assert_int_equal(lg_cas_list(cas, &v, &n, &err), 0);
        assert_int_equal(n, 2);
        assert_string_equal(v[0].hex, ABC); /* sorted */
        assert_string_equal(v[1].hex, EMPTY);
        free(v);
        assert_int_equal(lg_cas_remove(cas, ABC, &err), 0);
        assert_int_equal(lg_cas_stat(cas, ABC, NULL), -ENOENT);
        assert_int_equal(lg_cas_get(cas, ABC, &err), -ENOENT);
        assert_int_equal(lg_cas_remove(cas, ABC, &err), -ENOENT);
        assert_int_equal(count("tmp", ""), 0);
        lg_cas_close(cas);
}

static void test_writer(void **state) {
        (void) state;
        lg_cas *cas = open_store(&(struct lg_cas_options){.max_bytes = 8});
        struct lg_error err = {0};
        lg_cas_writer *w;
        struct lg_digest d;
        /* Expected digest: a mismatch stores nothing. */
        assert_int_equal(lg_cas_begin(cas, 0, &w, &err), 0);
        assert_int_equal(lg_cas_write(w, "ab", 2, &err), 0);
        assert_int_equal(lg_cas_write(w, "d", 1, &err), 0);
        assert_int_equal(lg_cas_written(w), 3);
        assert_int_equal(lg_cas_commit(w, ABC, &d, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, "digest mismatch"));
        assert_int_equal(count("blobs/sha256", ""), 0);
        assert_int_equal(count("tmp", ""), 0);
        /* And a match stores it. */
        assert_int_equal(lg_cas_begin(cas, 0, &w, &err), 0);
        assert_int_equal(lg_cas_write(w, "a", 1, &err), 0);
        assert_int_equal(lg_cas_write(w, "bc", 2, &err), 0);
        assert_int_equal(lg_cas_commit(w, ABC, &d, &err), 0);
        assert_string_equal(d.hex, ABC);
        /* The store's limit, and a writer's own: the temporary goes at
         * once, and the error sticks. */
        assert_int_equal(lg_cas_begin(cas, 0, &w, &err), 0);
        assert_int_equal(lg_cas_write(w, "12345678", 8, &err), 0);
        assert_int_equal(count("tmp", ".tmp-"), 1);
        assert_int_equal(lg_cas_write(w, "9", 1, &err), -EFBIG);
        assert_non_null(strstr(err.msg, "larger than the limit of 8 bytes"));
        assert_int_equal(count("tmp", ""), 0);
        memset(&err, 0, sizeof(err));
        assert_int_equal(lg_cas_write(w, "", 0, &err), -EFBIG);
        assert_non_null(strstr(err.msg, "larger than the limit"));
        assert_int_equal(lg_cas_commit(w, NULL, &d, &err), -EFBIG);
        assert_int_equal(lg_cas_begin(cas, 2, &w, &err), 0);
        assert_int_equal(lg_cas_write(w, "abc", 3, &err), -EFBIG);
        lg_cas_abort(w);
        lg_cas_abort(NULL);
        /* Abort leaves nothing. */
        assert_int_equal(lg_cas_begin(cas, 0, &w, &err), 0);
        assert_int_equal(lg_cas_write(w, "x", 1, &err), 0);
        lg_cas_abort(w);
        assert_int_equal(count("tmp", ""), 0);
        assert_int_equal(count("blobs/sha256", ""), 1);
        /* put_fd with the store's limit. */
        int p[2];
        assert_int_equal(pipe(p), 0);
        assert_int_equal(write(p[1], "123456789", 9), 9);
        close(p[1]);
        assert_int_equal(lg_cas_put_fd(cas, p[0], &d, &err), -EFBIG);
        close(p[0]);
        lg_cas_set_max_bytes(cas, 0);
        assert_int_equal(lg_cas_max_bytes(cas), 100ull << 20);
        lg_cas_close(cas);
}

static void test_verify_damaged(void **state) {
        (void) state;
        lg_cas *cas = open_store(NULL);
        struct lg_error err = {0};
        struct lg_digest d;
        assert_int_equal(lg_cas_put(cas, "abc", 3, &d, &err), 0);
        char p[PATH_MAX];
        assert_int_equal(lg_cas_path(cas, ABC, p, sizeof(p)), 0);
        assert_int_equal(chmod(p, 0644), 0);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs("abd", f);
        fclose(f);
        assert_int_equal(lg_cas_verify(cas, ABC, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, "damaged"));
        /* Not a regular file under a digest's name. */
        assert_int_equal(unlink(p), 0);
        assert_int_equal(mkdir(p, 0755), 0);
        assert_int_equal(lg_cas_stat(cas, ABC, NULL), -EBADMSG);
        assert_int_equal(rmdir(p), 0);
        assert_int_equal(symlink("/etc/passwd", p), 0);
        assert_true(lg_cas_get(cas, ABC, &err) < 0); /* never followed */
        assert_int_equal(lg_cas_stat(cas, ABC, NULL), -EBADMSG);
        lg_cas_close(cas);
}

static int alone_calls;
static int on_alone(int rootfd, void *ud, struct lg_error *err) {
        (void) err;
        assert_true(rootfd >= 0);
        assert_ptr_equal(ud, &alone_calls);
        alone_calls++;
        return 0;
}

static void test_crash_leftovers(void **state) {
        (void) state;
        struct lg_cas_options o = {.tmp_dir = "blobs/sha256", .on_alone = on_alone, .ud = &alone_calls};
        lg_cas *cas = open_store(&o);
        assert_int_equal(alone_calls, 1);
        lg_cas_close(cas);
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/store/blobs/sha256/.tmp-put-0123456789abcdef", W);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fclose(f);
        snprintf(p, sizeof(p), "%s/store/blobs/sha256/.tmp-x", W);
        assert_int_equal(mkdir(p, 0700), 0);
        snprintf(p, sizeof(p), "%s/store/blobs/sha256/.tmp-x/f", W);
        f = fopen(p, "w");
        assert_non_null(f);
        fclose(f);
        assert_int_equal(count("blobs/sha256", ".tmp-"), 2);
        cas = open_store(&o);
        assert_int_equal(alone_calls, 2);
        assert_int_equal(count("blobs/sha256", ".tmp-"), 0);
        /* A write in progress survives a second open, and that open is not
         * alone. */
        struct lg_error err = {0};
        lg_cas_writer *w;
        assert_int_equal(lg_cas_begin(cas, 0, &w, &err), 0);
        assert_int_equal(lg_cas_write(w, "abc", 3, &err), 0);
        lg_cas *cas2 = open_store(&o);
        assert_int_equal(alone_calls, 2);
        assert_int_equal(count("blobs/sha256", ".tmp-"), 1);
        assert_int_equal(lg_cas_lock_alone(cas, &err), -EBUSY);
        struct lg_digest d;
        assert_int_equal(lg_cas_commit(w, NULL, &d, &err), 0);
        assert_int_equal(lg_cas_stat(cas2, ABC, NULL), 0);
        lg_cas_close(cas2);
        assert_int_equal(lg_cas_lock_alone(cas, &err), 0);
        lg_cas_unlock_alone(cas);
        /* Back to shared: another handle opens, not alone. */
        cas2 = open_store(&o);
        assert_int_equal(alone_calls, 2);
        lg_cas_close(cas2);
        lg_cas_close(cas);
        lg_cas_close(NULL);
}

static bool keep_abc(const char *hex, void *ud) {
        (*(int *) ud)++;
        return !strcmp(hex, ABC);
}

static void test_gc(void **state) {
        (void) state;
        lg_cas *cas = open_store(NULL);
        struct lg_error err = {0};
        struct lg_digest d;
        assert_int_equal(lg_cas_put(cas, "abc", 3, &d, &err), 0);
        assert_int_equal(lg_cas_put(cas, "0123456789", 10, &d, &err), 0);
        assert_int_equal(lg_cas_put(cas, "", 0, &d, &err), 0);
        int asked = 0;
        struct lg_cas_gc_result res;
        assert_int_equal(lg_cas_gc(cas, keep_abc, &asked, &res, &err), 0);
        assert_int_equal(asked, 3);
        assert_int_equal(res.removed, 2);
        assert_int_equal(res.bytes_freed, 10);
        assert_int_equal(lg_cas_stat(cas, ABC, NULL), 0);
        assert_int_equal(count("blobs/sha256", ""), 1);
        lg_cas_close(cas);
}

static void test_hostile_digests(void **state) {
        (void) state;
        lg_cas *cas = open_store(NULL);
        struct lg_error err = {0};
        static const char *const bad[] = {
                "", "abc", ABC "0", "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
                "../../../../../../../../../../../../../../../../../../../../../etc/passwd",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a/",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a\n",
                "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", ".tmp-put-0123456789abcdef",
        };
        char p[PATH_MAX], *text;
        size_t len;
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                assert_false(lg_digest_valid(bad[i]));
                assert_int_equal(lg_cas_stat(cas, bad[i], NULL), -EINVAL);
                assert_int_equal(lg_cas_get(cas, bad[i], &err), -EINVAL);
                assert_non_null(strstr(err.msg, "invalid digest"));
                assert_int_equal(lg_cas_remove(cas, bad[i], &err), -EINVAL);
                assert_int_equal(lg_cas_path(cas, bad[i], p, sizeof(p)), -EINVAL);
                assert_int_equal(lg_cas_read(cas, bad[i], 100, &text, &len, &err), -EINVAL);
                assert_int_equal(lg_cas_verify(cas, bad[i], &err), -EINVAL);
                lg_cas_writer *w;
                struct lg_digest d;
                assert_int_equal(lg_cas_begin(cas, 0, &w, &err), 0);
                assert_int_equal(lg_cas_commit(w, bad[i], &d, &err), -EINVAL);
        }
        assert_false(lg_digest_valid(NULL));
        assert_int_equal(lg_cas_stat(cas, NULL, NULL), -EINVAL);
        assert_int_equal(count("tmp", ""), 0);
        assert_int_equal(count("blobs/sha256", ""), 0);
        lg_cas_close(cas);
        /* Bad stores. */
        assert_int_equal(lg_cas_open("", NULL, &cas, &err), -EINVAL);
        assert_int_equal(lg_cas_open(NULL, NULL, &cas, &err), -EINVAL);
        snprintf(p, sizeof(p), "%s/store", W);
        assert_int_equal(lg_cas_open(p, &(struct lg_cas_options){.tmp_dir = "../out"}, &cas, &err), -EINVAL);
        assert_int_equal(lg_cas_open(p, &(struct lg_cas_options){.tmp_dir = "/tmp"}, &cas, &err), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
                cmocka_unit_test_setup_teardown(test_writer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_verify_damaged, setup, teardown),
                cmocka_unit_test_setup_teardown(test_crash_leftovers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gc, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hostile_digests, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
