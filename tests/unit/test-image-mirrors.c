/* Tests of the registry mirror list (src/image/mirrors.h): source.json's
 * "mirrors" parsed strictly (hostile input refused whole), written back
 * the same, copied; the skip table; whole-blob reads trying each mirror in
 * turn (unreachable ones on loopback ports nothing listens on). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "image/mirrors.h"
#include "test-ok.h"

static int parse(const char *text, struct lg_mirrors *m) {
        json_error_t je;
        json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
        assert_non_null(j);
        struct lg_error err = {0};
        int r = lg_mirrors_from_json(j, m, &err);
        if (r < 0)
                assert_true(err.msg[0] != '\0');
        json_decref(j);
        return r;
}

static void test_parse_roundtrip(void **state) {
        (void) state;
        struct lg_mirrors m;
        struct lg_error err = {0};
        OK(lg_mirrors_from_json(NULL, &m, &err));
        assert_int_equal(m.n, 0);
        const char *good = "[{\"registry\":\"10.0.0.5:7070\",\"insecure\":true,\"username\":\"legion\","
                           "\"password\":\"lgt_x\"},{\"registry\":\"[::1]:7071\"}]";
        OK(parse(good, &m));
        assert_int_equal(m.n, 2);
        assert_string_equal(m.v[0].registry, "10.0.0.5:7070");
        assert_true(m.v[0].insecure);
        assert_string_equal(m.v[0].username, "legion");
        assert_string_equal(m.v[0].password, "lgt_x");
        assert_null(m.v[1].username);
        assert_false(m.v[1].insecure);
        json_t *back = lg_mirrors_to_json(&m);
        json_t *want = json_loads(good, 0, NULL);
        json_object_set_new(json_array_get(want, 1), "insecure", json_false());
        assert_true(json_equal(back, want));
        json_decref(back);
        json_decref(want);
        struct lg_mirrors c;
        OK(lg_mirrors_copy(&m, &c, &err));
        assert_int_equal(c.n, 2);
        assert_string_equal(c.v[1].registry, "[::1]:7071");
        assert_ptr_not_equal(c.v[0].password, m.v[0].password);
        lg_mirrors_clear(&m);
        lg_mirrors_clear(&c);
        lg_mirrors_clear(&c); /* twice is fine */
}

static void test_hostile(void **state) {
        (void) state;
        static const char *const bad[] = {
                "{}", "\"x\"", "[1]", "[null]", "[{}]", "[{\"registry\":5}]", "[{\"registry\":\"\"}]",
                "[{\"registry\":\"a b\"}]", "[{\"registry\":\"a/b\"}]", "[{\"registry\":\"a\\nb\"}]",
                "[{\"registry\":\"h:1\",\"insecure\":\"yes\"}]", "[{\"registry\":\"h:1\",\"username\":1}]",
                "[{\"registry\":\"h:1\",\"password\":null}]", "[{\"registry\":\"h:1\",\"extra\":1}]",
                "[{\"registry\":\"h:1\"},{\"registry\":\"h:2\"},{\"registry\":\"h:3\"},{\"registry\":\"h:4\"},"
                "{\"registry\":\"h:5\"},{\"registry\":\"h:6\"},{\"registry\":\"h:7\"},{\"registry\":\"h:8\"},"
                "{\"registry\":\"h:9\"}]",
                "[{\"registry\":\"h:1\"},{\"registry\":\"\\u00e9\"}]",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct lg_mirrors m;
                assert_int_not_equal(parse(bad[i], &m), 0);
                assert_int_equal(m.n, 0); /* nothing half made */
        }
        char longname[400];
        memset(longname, 'a', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        struct lg_mirrors m = {0};
        struct lg_error err = {0};
        assert_int_equal(lg_mirrors_add(&m, longname, NULL, NULL, true, &err), -EINVAL);
        assert_int_equal(lg_mirrors_add(&m, NULL, NULL, NULL, true, &err), -EINVAL);
        for (int i = 0; i < LG_MIRRORS_MAX; i++)
                OK(lg_mirrors_add(&m, "h:1", NULL, NULL, true, &err));
        assert_int_equal(lg_mirrors_add(&m, "h:1", NULL, NULL, true, &err), -E2BIG);
        lg_mirrors_clear(&m);
}

static void test_skip(void **state) {
        (void) state;
        struct lg_mirror_skip s = {0};
        assert_true(lg_mirror_skip_usable(&s, 0));
        assert_true(lg_mirror_skip_usable(&s, 1));
        lg_mirror_skip_failed(&s, 1);
        assert_true(lg_mirror_skip_usable(&s, 0));
        assert_false(lg_mirror_skip_usable(&s, 1));
        assert_false(lg_mirror_skip_usable(&s, LG_MIRRORS_MAX)); /* out of range: never */
        lg_mirror_skip_failed(&s, LG_MIRRORS_MAX);                /* ignored */
        /* The time left is the skip time (no clock games in tests: only
         * that it is in the future and at most 30 s away). */
        uint64_t left = atomic_load(&s.until[1]) - lg_now_ns();
        assert_true(left > 0 && left <= LG_MIRROR_SKIP_NS);
}

static int sink(void *ud, const void *buf, size_t len, struct lg_error *err) {
        (void) ud, (void) buf, (void) len, (void) err;
        return 0;
}

static int restarts;
static int restart(void *ud) {
        (void) ud;
        restarts++;
        return 0;
}

static void test_blob_get_unreachable(void **state) {
        (void) state;
        struct lg_mirrors m = {0};
        struct lg_error err = {0};
        const char *d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        assert_int_equal(lg_mirrors_blob_get(&m, "r", d, 1, sink, restart, NULL, &err), -ENOENT);
        /* Port 1 on loopback: refused at once. Each mirror tried, the sink
         * restarted between tries, the last error returned. */
        OK(lg_mirrors_add(&m, "127.0.0.1:1", NULL, NULL, true, &err));
        OK(lg_mirrors_add(&m, "127.0.0.1:2", "u", "p", true, &err));
        restarts = 0;
        int r = lg_mirrors_blob_get(&m, "r", d, 1, sink, restart, NULL, &err);
        assert_true(r < 0 && r != -ENOENT);
        assert_int_equal(restarts, 1);
        assert_non_null(strstr(err.msg, "127.0.0.1:2"));
        lg_mirrors_clear(&m);
}

static int accepts;
static int accept_all(void *ud, const void *buf) {
        (void) ud, (void) buf;
        accepts++;
        return 0;
}

/* Ranges: each mirror that fails is skipped for the layer; once all are,
 * none is tried (-ENOENT: the caller goes to the origin at once). */
static void test_range_skips(void **state) {
        (void) state;
        struct lg_mirrors m = {0};
        struct lg_error err = {0};
        OK(lg_mirrors_add(&m, "127.0.0.1:1", NULL, NULL, true, &err));
        OK(lg_mirrors_add(&m, "127.0.0.1:2", NULL, NULL, true, &err));
        struct lg_mirror_skip skip = {0};
        struct lg_mirror_clients cl = {0};
        const char *d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        char buf[16];
        accepts = 0;
        int r = lg_mirrors_range(&m, &skip, &cl, "r", d, 0, buf, sizeof(buf), accept_all, NULL, &err);
        assert_true(r < 0 && r != -ENOENT);
        assert_false(lg_mirror_skip_usable(&skip, 0));
        assert_false(lg_mirror_skip_usable(&skip, 1));
        assert_int_equal(lg_mirrors_range(&m, &skip, &cl, "r", d, 0, buf, sizeof(buf), accept_all, NULL, &err),
                         -ENOENT);
        assert_int_equal(accepts, 0);
        /* Another layer has its own skip table: tried again. */
        struct lg_mirror_skip other = {0};
        r = lg_mirrors_range(&m, &other, &cl, "r", d, 0, buf, sizeof(buf), accept_all, NULL, &err);
        assert_true(r < 0 && r != -ENOENT);
        lg_mirror_clients_close(&cl);
        lg_mirrors_clear(&m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_roundtrip),
                cmocka_unit_test(test_hostile),
                cmocka_unit_test(test_skip),
                cmocka_unit_test(test_blob_get_unreachable),
                cmocka_unit_test(test_range_skips),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
