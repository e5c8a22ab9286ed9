/* Unit tests of label selectors: the grammar, the matching rules, and
 * hostile input (a selector comes straight from a query string): every
 * string either parses or fails with -EINVAL and a one-line printable
 * message; nothing crashes, leaks or reads out of bounds (run under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "store/store.h"

static json_t *labels(const char *text) {
        json_error_t je;
        json_t *v = json_loads(text, 0, &je);
        if (!v)
                fail_msg("bad test JSON %s", text);
        return v;
}

static bool sel_matches(const char *sel_text, const char *labels_text) {
        struct lg_error err = {0};
        _cleanup_selector_ struct lg_selector *sel = NULL;
        int r = lg_selector_parse(sel_text, &sel, &err);
        if (r < 0)
                fail_msg("`%s` did not parse: %s", sel_text, err.msg);
        json_t *l = labels(labels_text);
        bool m = lg_selector_matches(sel, l);
        json_decref(l);
        return m;
}

static void test_matching(void **state) {
        (void) state;
        static const struct {
                const char *sel, *labels;
                bool want;
        } cases[] = {
                {"", "{}", true},
                {"   ", "{\"a\":\"b\"}", true},
                {"a=b", "{\"a\":\"b\"}", true},
                {"a=b", "{\"a\":\"c\"}", false},
                {"a=b", "{}", false},
                {"a==b", "{\"a\":\"b\"}", true},
                {"a = b", "{\"a\":\"b\"}", true},
                {"a=", "{\"a\":\"\"}", true},
                {"a=", "{}", false},
                {"a!=b", "{\"a\":\"c\"}", true},
                {"a!=b", "{}", true},
                {"a!=b", "{\"a\":\"b\"}", false},
                {"a", "{\"a\":\"\"}", true},
                {"a", "{\"b\":\"a\"}", false},
                {"!a", "{\"b\":\"a\"}", true},
                {"! a", "{\"a\":\"x\"}", false},
                {"a in (x,y)", "{\"a\":\"y\"}", true},
                {"a in (x, y )", "{\"a\":\"z\"}", false},
                {"a in (x)", "{}", false},
                {"a in(x)", "{\"a\":\"x\"}", true},
                {"a notin (x,y)", "{\"a\":\"z\"}", true},
                {"a notin (x,y)", "{}", true},
                {"a notin (x,y)", "{\"a\":\"x\"}", false},
                {"a=b,c!=d,e", "{\"a\":\"b\",\"e\":\"\"}", true},
                {"a=b,c!=d,e", "{\"a\":\"b\",\"c\":\"d\",\"e\":\"\"}", false},
                {"a=b,c!=d,e", "{\"a\":\"b\"}", false},
                {"app.kubernetes.io/name=shop", "{\"app.kubernetes.io/name\":\"shop\"}", true},
                {"in", "{\"in\":\"1\"}", true},
                {"in in (in)", "{\"in\":\"in\"}", true},
                {"notin notin (x)", "{\"notin\":\"y\"}", true},
                {"a=b, a=c", "{\"a\":\"b\"}", false},
                {"\ta\t=\tb\t", "{\"a\":\"b\"}", true},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                if (sel_matches(cases[i].sel, cases[i].labels) != cases[i].want)
                        fail_msg("`%s` on %s: want %d", cases[i].sel, cases[i].labels, cases[i].want);

        /* NULL selector and NULL text: everything. */
        json_t *l = labels("{\"a\":\"b\"}");
        assert_true(lg_selector_matches(NULL, l));
        struct lg_selector *sel = NULL;
        assert_int_equal(lg_selector_parse(NULL, &sel, NULL), 0);
        assert_true(lg_selector_matches(sel, l));
        lg_selector_free(sel);
        json_decref(l);
        lg_selector_free(NULL);
}

static void check_rejected(const char *s) {
        struct lg_error err = {0};
        struct lg_selector *sel = NULL;
        int r = lg_selector_parse(s, &sel, &err);
        if (r != -EINVAL)
                fail_msg("`%s` gave %d, want -EINVAL", s, r);
        assert_null(sel);
        assert_int_equal(err.code, EINVAL);
        assert_non_null(strstr(err.msg, "selector"));
        for (const char *p = err.msg; *p; p++)
                if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7e)
                        fail_msg("message of `%s` has byte 0x%02x", s, (unsigned char) *p);
}

static void test_rejected(void **state) {
        (void) state;
        static const char *const bad[] = {
                ",", "a,", ",a", "a,,b", "=", "=b", "a=b=c", "a===b", "a!b", "a!", "a in", "a in ()",
                "a in (", "a in (x", "a in (x,", "a in (x,)", "a in x", "a notin", "a in (x) y",
                "a in ((x))", "a b", "!", "!a=b", "!!a", "a=b c", "a=(b)", "a=b;c", "a=b)", "a<b",
                "a>1", "a in (x y)", "a=b,", "a&b", "a|b", "'a'='b'", "a='b'", "a=b' OR '1'='1",
                "a=\"b\"", "-a=b", "a-=b", "/a=b", "a/=b", "a/b/c=d", "A.com/b=c", "a=b\n",
                "a=\xc3\xa9", "\xff", "a\x01=b", "a=b\x7f", "a in (x)(y)", "a notin(x) ,",
                "a=abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234",
                "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234=x",
                "%s%n%s%n", "a=%n", "a\\=b",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                check_rejected(bad[i]);

        /* Messages name the offset and show at most one escaped byte. */
        struct lg_error err = {0};
        struct lg_selector *sel = NULL;
        assert_int_equal(lg_selector_parse("env=prod,tier in web", &sel, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "offset 17"));
        assert_int_equal(lg_selector_parse("a=\x01", &sel, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "0x01"));
        assert_int_equal(lg_selector_parse("a=b,", &sel, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "(end)"));
}

static void test_limits(void **state) {
        (void) state;
        /* Longer than the limit. */
        size_t n = 1 << 20;
        char *s = malloc(n + 1);
        memset(s, 'a', n);
        s[n] = '\0';
        check_rejected(s);
        /* Many requirements. */
        char *p = s;
        for (int i = 0; i < 65; i++)
                p += sprintf(p, "%sk%d", i ? "," : "", i);
        check_rejected(s);
        /* 64 is fine. */
        p = s;
        for (int i = 0; i < 64; i++)
                p += sprintf(p, "%sk%d", i ? "," : "", i);
        struct lg_selector *sel = NULL;
        assert_int_equal(lg_selector_parse(s, &sel, NULL), 0);
        lg_selector_free(sel);
        /* A set with too many values. */
        p = s + sprintf(s, "a in (");
        for (int i = 0; i < 65; i++)
                p += sprintf(p, "%sv%d", i ? "," : "", i);
        strcpy(p, ")");
        check_rejected(s);
        /* Deep nesting of nothing, blanks only up to the limit. */
        memset(s, ' ', 4096);
        s[4096] = '\0';
        assert_int_equal(lg_selector_parse(s, &sel, NULL), 0);
        lg_selector_free(sel);
        free(s);
}

/* Random strings over an alphabet of the grammar's own characters plus
 * hostile bytes, and mutations of valid selectors: every one must parse or
 * fail cleanly, and a parsed one must be usable for matching. */
static void test_fuzz(void **state) {
        (void) state;
        static const char alphabet[] = "ab=!,() \tin notin.-_/x\x01\xff'\"\\;%";
        static const char *const seeds[] = {
                "a=b,c!=d,e", "a in (x,y),!b", "app.kubernetes.io/name notin (x, y)", "x==y",
        };
        unsigned seed = 12345;
        char buf[96];
        json_t *l = labels("{\"a\":\"b\",\"in\":\"x\",\"e\":\"\"}");
        size_t ok = 0, rejected = 0;
        for (int iter = 0; iter < 200000; iter++) {
                size_t len;
                if (iter % 2 == 0) {
                        len = (size_t) rand_r(&seed) % (sizeof(buf) - 1);
                        for (size_t i = 0; i < len; i++)
                                buf[i] = alphabet[(size_t) rand_r(&seed) % (sizeof(alphabet) - 1)];
                } else {
                        const char *s = seeds[(size_t) rand_r(&seed) % 4];
                        len = strlen(s);
                        memcpy(buf, s, len);
                        int edits = 1 + rand_r(&seed) % 3;
                        for (int e = 0; e < edits; e++)
                                buf[(size_t) rand_r(&seed) % len] =
                                        alphabet[(size_t) rand_r(&seed) % (sizeof(alphabet) - 1)];
                }
                buf[len] = '\0';
                struct lg_error err = {0};
                struct lg_selector *sel = NULL;
                int r = lg_selector_parse(buf, &sel, &err);
                if (r == 0) {
                        ok++;
                        (void) lg_selector_matches(sel, l);
                        lg_selector_free(sel);
                } else {
                        rejected++;
                        if (r != -EINVAL || !err.msg[0] || strchr(err.msg, '\n'))
                                fail_msg("`%s`: %d %s", buf, r, err.msg);
                        assert_null(sel);
                }
        }
        /* Both outcomes were exercised. */
        assert_true(ok > 1000);
        assert_true(rejected > 1000);
        json_decref(l);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_matching),
                cmocka_unit_test(test_rejected),
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_fuzz),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
