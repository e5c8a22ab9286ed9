/* Host-header routing (src/api/api-host.c): which app a Host names with
 * `legiond --fn-domain D` ("APP.NS.D") and without (the ".fn." rule), fed
 * hostile Host values; and the check of a --fn-domain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "api/api.h"

static bool route(const char *host, const char *domain, const char *want_ns, const char *want_app) {
        char ns[LG_STORE_NAME_MAX + 1] = "?", app[LG_STORE_NAME_MAX + 1] = "?";
        bool got = lg_api_host_app(host, domain, ns, app);
        if (got && want_ns) {
                assert_string_equal(ns, want_ns);
                assert_string_equal(app, want_app);
        }
        return got;
}

static void test_domain(void **state) {
        (void) state;
        const char *d = "apps.example.com";
        assert_true(route("web.team.apps.example.com", d, "team", "web"));
        assert_true(route("web.team.apps.example.com:8080", d, "team", "web"));
        assert_true(route("web.team.apps.example.com.", d, "team", "web"));
        assert_true(route("web.team.apps.example.com.:80", d, "team", "web"));
        assert_true(route("WEB.Team.APPS.example.COM", d, "team", "web"));
        assert_true(route("web.team.APPS.EXAMPLE.COM", "Apps.Example.Com", "team", "web"));
        /* Labels are passed on as they are (the API checks them as names:
         * 404); only their count and length are decided here. */
        assert_true(route("we_b.t%m.apps.example.com", d, "t%m", "we_b"));
        char big[300];
        snprintf(big, sizeof(big), "%.63s.%.63s.%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", d);
        assert_true(route(big, d, NULL, NULL));
        snprintf(big, sizeof(big), "%.64s.ns.%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", d);
        assert_false(route(big, d, NULL, NULL));
        snprintf(big, sizeof(big), "app.%.64s.%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", d);
        assert_false(route(big, d, NULL, NULL));
        const char *no[] = {
                NULL, "", ":", ":80", ".", "..", "apps.example.com", "team.apps.example.com",
                ".apps.example.com", "..apps.example.com", "web..apps.example.com", ".team.apps.example.com",
                "x.web.team.apps.example.com", "web.team.apps.example.comx", "web.team.xapps.example.com",
                "web.teamapps.example.com", "web.team.apps.example.co", "web.team.apps.example.com:",
                "web.team.apps.example.com:http", "web.team.apps.example.com:123456", "web.team.apps.example.com:-1",
                "web.team.apps.example.com..", "[::1]:80", "[web.team.apps.example.com]",
                "web.team.fn.localhost", "web.team.apps.example.com/x", "web.team.apps.example.com:80:80",
                "web.team.apps.example.com\r\nx", "web.team.apps.example.com x",
        };
        for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
                if (route(no[i], d, NULL, NULL))
                        fail_msg("`%s` routed to an app", no[i] ? no[i] : "(null)");
        /* A very long Host. */
        char huge[70000];
        memset(huge, 'a', sizeof(huge) - 1);
        huge[sizeof(huge) - 1] = '\0';
        assert_false(route(huge, d, NULL, NULL));
        memcpy(huge + sizeof(huge) - 1 - strlen(d) - 1, ".", 1);
        memcpy(huge + sizeof(huge) - 1 - strlen(d), d, strlen(d));
        assert_false(route(huge, d, NULL, NULL));
}

/* Without a domain: "APP.NS.fn.<anything>", as legiond always did. */
static void test_fn_rule(void **state) {
        (void) state;
        assert_true(route("hello.default.fn.localhost:7070", NULL, "default", "hello"));
        assert_true(route("a.b.fn.", NULL, "b", "a"));
        assert_false(route("hello.default.apps.example.com", NULL, NULL, NULL));
        assert_false(route("default.fn.localhost", NULL, NULL, NULL));
        assert_false(route(".b.fn.x", NULL, NULL, NULL));
        assert_false(route("a..fn.x", NULL, NULL, NULL));
        assert_false(route(NULL, NULL, NULL, NULL));
        assert_false(route("", NULL, NULL, NULL));
}

static void test_domain_check(void **state) {
        (void) state;
        struct lg_error err = {0};
        const char *good[] = {"apps.example.com", "localhost", "a", "x-1.y", "APPS.Example.com"};
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                if (lg_api_fn_domain_check(good[i], &err) < 0)
                        fail_msg("`%s` refused: %s", good[i], err.msg);
        char long_label[80], long_name[300];
        memset(long_label, 'a', 64);
        long_label[64] = '\0';
        memset(long_name, 'a', 254);
        for (int i = 1; i < 254; i += 2)
                long_name[i] = '.';
        long_name[254] = '\0';
        const char *bad[] = {NULL, "", ".", "..", ".apps.example.com", "apps.example.com.", "apps..example.com",
                             "-apps.example.com", "apps-.example.com", "apps.example.com:80", "apps example",
                             "apps/x", "*.example.com", "app\xc3\xa9.com", long_label, long_name};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                err = (struct lg_error){0};
                if (lg_api_fn_domain_check(bad[i], &err) != -EINVAL)
                        fail_msg("`%s` accepted", bad[i] ? bad[i] : "(null)");
                assert_non_null(strstr(err.msg, "--fn-domain"));
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_domain),
                cmocka_unit_test(test_fn_rule),
                cmocka_unit_test(test_domain_check),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
