/* Unit tests of the common helpers: size parsing (with hostile input),
 * error formatting, mkdir -p and rm -rf (which must not cross mounts or
 * follow symlinks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "common/util.h"

static void test_parse_size(void **state) {
        (void) state;
        uint64_t v;
        assert_int_equal(lg_parse_size("0", &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(lg_parse_size("64M", &v), 0);
        assert_int_equal(v, 64ull << 20);
        assert_int_equal(lg_parse_size("256Mi", &v), 0);
        assert_int_equal(v, 256ull << 20);
        assert_int_equal(lg_parse_size("1G", &v), 0);
        assert_int_equal(v, 1ull << 30);
        assert_int_equal(lg_parse_size("512k", &v), 0);
        assert_int_equal(v, 512ull << 10);
        assert_int_equal(lg_parse_size("12345", &v), 0);
        assert_int_equal(v, 12345);
        static const char *const bad[] = {"", "M", "-1", "1X", "1MM", "1 M", " 1", "99999999999999999999",
                                          "18446744073709551615T", "0x10", "1.5G"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                assert_true(lg_parse_size(bad[i], &v) < 0);
        assert_true(lg_parse_size(NULL, &v) < 0);
}

static void test_parse_millis(void **state) {
        (void) state;
        static const struct {
                const char *s;
                uint64_t want;
        } good[] = {
                {"1", 1000}, {"0.5", 500}, {"2.25", 2250}, {"500m", 500}, {"1m", 1}, {".5", 500},
                {"3.", 3000}, {"0.0005", 1}, {"0.1234", 123}, {"0.1235", 124}, {"1024", 1024000},
                {"0.333333333333333333333333", 333},
        };
        uint64_t v;
        for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
                assert_int_equal(lg_parse_millis(good[i].s, 1024000, &v), 0);
                assert_int_equal(v, good[i].want);
        }
        /* What strtod would take, and more: never a value. */
        static const char *const bad[] = {
                "", ".", "m", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e3", "1E-3", "0x10", "0x1p4",
                "-1", "+1", " 1", "1 ", "1.5m", "1.2.3", "1mm", "1k", "1,5", "١",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                v = 77;
                assert_int_equal(lg_parse_millis(bad[i], 1024000, &v), -EINVAL);
                assert_int_equal(v, 77);
        }
        static const char *const out_of_range[] = {
                "0", "0m", "0.0004", "1025", "1024001m", "99999999999999999999999", "18446744073709551615m",
        };
        for (size_t i = 0; i < ARRAY_SIZE(out_of_range); i++)
                assert_int_equal(lg_parse_millis(out_of_range[i], 1024000, &v), -ERANGE);
        assert_int_equal(lg_parse_millis(NULL, 1024000, &v), -EINVAL);
}

static void test_parse_int(void **state) {
        (void) state;
        long long v;
        assert_int_equal(lg_parse_int("0", 0, 10, &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(lg_parse_int("-7", -10, 10, &v), 0);
        assert_int_equal(v, -7);
        assert_int_equal(lg_parse_int("9223372036854775807", 0, LLONG_MAX, &v), 0);
        assert_true(v == LLONG_MAX);
        static const char *const bad[] = {"", "-", "+1", " 1", "1 ", "1x", "nan", "inf", "0x10", "1e3", "1.0", "--1"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                assert_int_equal(lg_parse_int(bad[i], LLONG_MIN, LLONG_MAX, &v), -EINVAL);
        assert_int_equal(lg_parse_int("11", 0, 10, &v), -ERANGE);
        assert_int_equal(lg_parse_int("-1", 0, 10, &v), -ERANGE);
        assert_int_equal(lg_parse_int("99999999999999999999", LLONG_MIN, LLONG_MAX, &v), -ERANGE);
        assert_int_equal(lg_parse_int(NULL, 0, 1, &v), -EINVAL);
}

static void test_error(void **state) {
        (void) state;
        struct lg_error e = {0};
        assert_int_equal(lg_error_set(&e, ENOENT, "open `%s`", "/x"), -ENOENT);
        assert_string_equal(e.msg, "open `/x`: No such file or directory");
        assert_int_equal(e.code, ENOENT);
        assert_int_equal(lg_error_wrap(&e, -ENOENT, "load config"), -ENOENT);
        assert_string_equal(e.msg, "load config: open `/x`: No such file or directory");
        /* errno 0 must never read as success. */
        assert_int_equal(lg_error_set(NULL, 0, "x"), -EIO);
}

static void test_mkdir_rm(void **state) {
        (void) state;
        char dir[] = "/tmp/lg-util-XXXXXX";
        assert_non_null(mkdtemp(dir));
        char path[256], target[256];
        snprintf(path, sizeof(path), "%s/a/b/c", dir);
        assert_int_equal(lg_mkdir_p(path, 0755), 0);
        assert_int_equal(lg_mkdir_p(path, 0755), 0);
        snprintf(path, sizeof(path), "%s/a/b/c/file", dir);
        assert_int_equal(lg_write_file_at(AT_FDCWD, path, "data\n", true), 0);
        char buf[16];
        assert_int_equal(lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)), 4);
        assert_string_equal(buf, "data");

        /* A symlink to a directory outside must be removed, not followed. */
        char outside[] = "/tmp/lg-util-out-XXXXXX";
        assert_non_null(mkdtemp(outside));
        snprintf(target, sizeof(target), "%s/keep", outside);
        assert_int_equal(lg_write_file_at(AT_FDCWD, target, "keep", true), 0);
        snprintf(path, sizeof(path), "%s/a/link", dir);
        assert_int_equal(symlink(outside, path), 0);

        assert_int_equal(lg_rm_rf(dir), 0);
        assert_int_equal(access(dir, F_OK), -1);
        assert_int_equal(access(target, F_OK), 0);
        assert_int_equal(lg_rm_rf(outside), 0);
        assert_int_equal(lg_rm_rf("/tmp/lg-util-does-not-exist"), 0);
}

static void test_utf8_fix(void **state) {
        (void) state;
        char b[64];
        /* Valid text is left as it is. */
        strcpy(b, "ab \xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80");
        size_t n = strlen(b);
        assert_int_equal(lg_utf8_fix(b, n, false), n);
        assert_string_equal(b, "ab \xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80");
        /* Bytes that begin nothing valid become '?'. */
        strcpy(b, "a\xff\xc0\x80\xed\xa0\x80z");
        n = strlen(b);
        assert_int_equal(lg_utf8_fix(b, n, false), n);
        assert_string_equal(b, "a??????z");
        /* A character cut by the end waits for the rest, unless at the end. */
        strcpy(b, "ok\xe2\x9c");
        assert_int_equal(lg_utf8_fix(b, 4, false), 2);
        assert_int_equal(lg_utf8_fix(b, 4, true), 4);
        assert_string_equal(b, "ok??");
        strcpy(b, "\xf0");
        assert_int_equal(lg_utf8_fix(b, 1, false), 0);
        strcpy(b, "\xf0x");
        assert_int_equal(lg_utf8_fix(b, 2, false), 2);
        assert_string_equal(b, "?x");
        assert_int_equal(lg_utf8_fix(b, 0, false), 0);
}

static void test_random_hex(void **state) {
        (void) state;
        char a[17], b[17];
        assert_int_equal(lg_random_hex(a, 8), 0);
        assert_int_equal(lg_random_hex(b, 8), 0);
        assert_int_equal(strlen(a), 16);
        assert_string_not_equal(a, b);
        assert_true(lg_random_hex(a, 65) < 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_size),
                cmocka_unit_test(test_parse_millis),
                cmocka_unit_test(test_parse_int),
                cmocka_unit_test(test_error),
                cmocka_unit_test(test_mkdir_rm),
                cmocka_unit_test(test_random_hex),
                cmocka_unit_test(test_utf8_fix),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
