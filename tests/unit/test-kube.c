/* Unit tests of src/kube: ages (duration.HumanDuration at each boundary),
 * RFC 3339 times, kubectl's STATUS / READY / RESTARTS of pods in every
 * state legiond writes and some it does not (init containers, sidecars, a
 * lost node), and resource.Quantity, exact and with hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kube/kube.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- times ------------------------------------------------------------------ */

static void test_duration(void **state) {
        (void) state;
        static const struct {
                int64_t s;
                const char *want;
        } cases[] = {
                {-2, "<invalid>"},  {-1, "0s"},       {0, "0s"},           {59, "59s"},          {119, "119s"},
                {120, "2m"},        {125, "2m5s"},    {599, "9m59s"},      {600, "10m"},         {10799, "179m"},
                {10800, "3h"},      {10860, "3h1m"},  {8 * 3600 - 1, "7h59m"}, {8 * 3600, "8h"}, {47 * 3600, "47h"},
                {48 * 3600, "2d"},  {51 * 3600, "2d3h"}, {8 * 86400 - 1, "7d23h"}, {8 * 86400, "8d"},
                {729 * 86400, "729d"}, {730 * 86400, "2y"}, {731 * 86400, "2y1d"}, {8 * 365 * 86400 - 1, "7y364d"},
                {8 * 365 * 86400, "8y"}, {INT64_MAX, "292471208677y"}, {INT64_MIN, "<invalid>"},
        };
        char buf[32];
        for (size_t i = 0; i < N(cases); i++) {
                lg_kube_duration(cases[i].s, buf, sizeof(buf));
                if (strcmp(buf, cases[i].want))
                        fail_msg("%lld s: `%s`, want `%s`", (long long) cases[i].s, buf, cases[i].want);
        }
        /* Truncated, still terminated. */
        char small[4];
        assert_string_equal(lg_kube_duration(125, small, sizeof(small)), "2m5");
}

static void test_time_and_age(void **state) {
        (void) state;
        int64_t t;
        assert_int_equal(lg_kube_parse_time("2026-01-02T03:04:05Z", &t), 0);
        assert_int_equal(t, 1767323045);
        assert_int_equal(lg_kube_parse_time("2026-01-02T03:04:05.123456Z", &t), 0);
        assert_int_equal(t, 1767323045);
        assert_int_equal(lg_kube_parse_time("2026-01-02T04:04:05+01:00", &t), 0);
        assert_int_equal(t, 1767323045);
        assert_int_equal(lg_kube_parse_time("2026-01-02T02:34:05-00:30", &t), 0);
        assert_int_equal(t, 1767323045);
        static const char *const bad[] = {
                "", "2026", "2026-01-02", "2026-01-02T03:04:05", "2026-01-02 03:04:05Z", "2026-01-02T03:04:05ZZ",
                "2026-13-02T03:04:05Z", "2026-02-31T03:04:05Z", "2026-01-02T24:04:05Z", "2026-01-02T03:04:05.Z",
                "2026-01-02T03:04:05+0100", "2026-01-02T03:04:05+01:00x", "+026-01-02T03:04:05Z",
                "2026-01-02T03:04:05 Z", "2026-01-0\x01T03:04:05Z",
        };
        for (size_t i = 0; i < N(bad); i++)
                if (lg_kube_parse_time(bad[i], &t) != -EINVAL)
                        fail_msg("`%s` was taken as a time", bad[i]);
        assert_int_equal(lg_kube_parse_time(NULL, &t), -EINVAL);

        char buf[32];
        assert_string_equal(lg_kube_age("2026-01-02T03:04:05Z", 1767323045 + 200, buf, sizeof(buf)), "3m20s");
        assert_string_equal(lg_kube_age("2026-01-02T03:04:05Z", 1767323045 - 5, buf, sizeof(buf)), "<invalid>");
        /* kubectl's translateTimestampSince of a zero time: no 56y. */
        assert_string_equal(lg_kube_age(NULL, 1767323045, buf, sizeof(buf)), "<unknown>");
        assert_string_equal(lg_kube_age("yesterday", 1767323045, buf, sizeof(buf)), "<unknown>");
}

/* ---- pods ------------------------------------------------------------------- */

#define NOW 1767323045 /* 2026-01-02T03:04:05Z */

static json_t *pod(const char *fmt) {
        json_error_t e;
        json_t *p = json_loads(fmt, 0, &e);
        if (!p)
                fail_msg("bad test JSON: %s: %s", e.text, fmt);
        return p;
}

static void expect(const char *doc, const char *status, int ready, int total, const char *restarts) {
        json_t *p = pod(doc);
        struct lg_kube_pod_summary s;
        char r[64];
        lg_kube_pod_summarize(p, &s);
        lg_kube_pod_restarts(&s, NOW, r, sizeof(r));
        if (strcmp(s.status, status) || s.ready != ready || s.total != total || strcmp(r, restarts))
                fail_msg("%s\n=> `%s` %d/%d `%s`, want `%s` %d/%d `%s`", doc, s.status, s.ready, s.total, r, status,
                         ready, total, restarts);
        json_decref(p);
}

#define ONE "\"spec\":{\"containers\":[{\"name\":\"a\"}]}"
#define TWO "\"spec\":{\"containers\":[{\"name\":\"a\"},{\"name\":\"b\"}]}"
#define DELETING "\"metadata\":{\"deletionTimestamp\":\"2026-01-02T03:04:00Z\"}"
#define RUNNING(n, ready) "{\"name\":\"" n "\",\"ready\":" ready ",\"restartCount\":0,\"state\":{\"running\":{}}}"

static void test_pod_status(void **state) {
        (void) state;
        expect("{" ONE ",\"status\":{\"phase\":\"Running\",\"containerStatuses\":[" RUNNING("a", "true") "]}}",
               "Running", 1, 1, "0");
        expect("{" ONE ",\"status\":{\"phase\":\"Pending\",\"containerStatuses\":[{\"name\":\"a\",\"ready\":false,"
               "\"restartCount\":0,\"state\":{\"waiting\":{\"reason\":\"ContainerCreating\"}}}]}}",
               "ContainerCreating", 0, 1, "0");
        /* Restarts with the latest restart's age. */
        expect("{" ONE ",\"status\":{\"phase\":\"Running\",\"containerStatuses\":[{\"name\":\"a\",\"ready\":false,"
               "\"restartCount\":4,\"state\":{\"waiting\":{\"reason\":\"CrashLoopBackOff\"}},\"lastState\":"
               "{\"terminated\":{\"exitCode\":1,\"reason\":\"Error\",\"finishedAt\":\"2026-01-02T03:03:35Z\"}}}]}}",
               "CrashLoopBackOff", 0, 1, "4 (30s ago)");
        expect("{" TWO ",\"status\":{\"phase\":\"Running\",\"containerStatuses\":["
               "{\"name\":\"a\",\"ready\":true,\"restartCount\":1,\"state\":{\"running\":{}},\"lastState\":"
               "{\"terminated\":{\"finishedAt\":\"2026-01-02T02:04:05Z\"}}},"
               "{\"name\":\"b\",\"ready\":true,\"restartCount\":2,\"state\":{\"running\":{}},\"lastState\":"
               "{\"terminated\":{\"finishedAt\":\"2026-01-02T03:02:05Z\"}}}]}}",
               "Running", 2, 2, "3 (2m ago)");
        /* Terminated: reason, else signal, else exit code; the first
         * container's state wins. */
        expect("{" ONE ",\"status\":{\"phase\":\"Failed\",\"containerStatuses\":[{\"name\":\"a\",\"restartCount\":0,"
               "\"state\":{\"terminated\":{\"exitCode\":137,\"reason\":\"OOMKilled\"}}}]}}",
               "OOMKilled", 0, 1, "0");
        expect("{" ONE ",\"status\":{\"phase\":\"Failed\",\"containerStatuses\":[{\"name\":\"a\",\"restartCount\":0,"
               "\"state\":{\"terminated\":{\"exitCode\":0,\"signal\":9}}}]}}",
               "Signal:9", 0, 1, "0");
        expect("{" ONE ",\"status\":{\"phase\":\"Failed\",\"containerStatuses\":[{\"name\":\"a\",\"restartCount\":0,"
               "\"state\":{\"terminated\":{\"exitCode\":3,\"reason\":\"\"}}}]}}",
               "ExitCode:3", 0, 1, "0");
        expect("{" TWO ",\"status\":{\"phase\":\"Running\",\"containerStatuses\":[{\"name\":\"a\",\"restartCount\":0,"
               "\"state\":{\"waiting\":{\"reason\":\"ImagePullBackOff\"}}},{\"name\":\"b\",\"restartCount\":0,"
               "\"state\":{\"terminated\":{\"exitCode\":1,\"reason\":\"Error\"}}}]}}",
               "ImagePullBackOff", 0, 2, "0");
        /* A container still running beside a Completed one. */
        expect("{" TWO ",\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}],"
               "\"containerStatuses\":[{\"name\":\"a\",\"restartCount\":0,\"state\":{\"terminated\":{\"exitCode\":0,"
               "\"reason\":\"Completed\"}}}," RUNNING("b", "true") "]}}",
               "Running", 1, 2, "0");
        expect("{" TWO ",\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\"}],"
               "\"containerStatuses\":[{\"name\":\"a\",\"restartCount\":0,\"state\":{\"terminated\":{\"exitCode\":0,"
               "\"reason\":\"Completed\"}}}," RUNNING("b", "true") "]}}",
               "NotReady", 1, 2, "0");
        /* status.reason over the phase; no phase is an empty STATUS. */
        expect("{" ONE ",\"status\":{\"phase\":\"Failed\",\"reason\":\"DeadlineExceeded\"}}", "DeadlineExceeded", 0, 1,
               "0");
        expect("{" ONE ",\"status\":{}}", "", 0, 1, "0");
        expect("{}", "", 0, 0, "0");
        /* Deletion: Terminating unless the phase is terminal; Unknown for a
         * lost node. */
        expect("{" ONE "," DELETING ",\"status\":{\"phase\":\"Running\",\"containerStatuses\":[" RUNNING("a", "true")
               "]}}",
               "Terminating", 1, 1, "0");
        expect("{" ONE "," DELETING ",\"status\":{\"phase\":\"Succeeded\",\"containerStatuses\":[{\"name\":\"a\","
               "\"restartCount\":0,\"state\":{\"terminated\":{\"exitCode\":0,\"reason\":\"Completed\"}}}]}}",
               "Completed", 0, 1, "0");
        expect("{" ONE "," DELETING ",\"status\":{\"phase\":\"Running\",\"reason\":\"NodeLost\"}}", "Unknown", 0, 1,
               "0");
        expect("{" ONE ",\"status\":{\"phase\":\"Pending\",\"conditions\":[{\"type\":\"PodScheduled\","
               "\"status\":\"False\",\"reason\":\"SchedulingGated\"}]}}",
               "SchedulingGated", 0, 1, "0");
}

#define INIT2 "\"spec\":{\"initContainers\":[{\"name\":\"i1\"},{\"name\":\"i2\"}],\"containers\":[{\"name\":\"a\"}]}"

static void test_pod_init_containers(void **state) {
        (void) state;
        expect("{" INIT2 ",\"status\":{\"phase\":\"Pending\",\"initContainerStatuses\":[{\"name\":\"i1\","
               "\"restartCount\":0,\"state\":{\"terminated\":{\"exitCode\":0}}},{\"name\":\"i2\",\"restartCount\":0,"
               "\"state\":{\"running\":{}}}]}}",
               "Init:1/2", 0, 1, "0");
        expect("{" INIT2 ",\"status\":{\"phase\":\"Pending\",\"initContainerStatuses\":[{\"name\":\"i1\","
               "\"restartCount\":3,\"state\":{\"waiting\":{\"reason\":\"CrashLoopBackOff\"}},\"lastState\":{"
               "\"terminated\":{\"finishedAt\":\"2026-01-02T03:04:00Z\"}}}]}}",
               "Init:CrashLoopBackOff", 0, 1, "3 (5s ago)");
        expect("{" INIT2 ",\"status\":{\"phase\":\"Pending\",\"initContainerStatuses\":[{\"name\":\"i1\","
               "\"restartCount\":0,\"state\":{\"waiting\":{\"reason\":\"PodInitializing\"}}}]}}",
               "Init:0/2", 0, 1, "0");
        expect("{" INIT2 ",\"status\":{\"phase\":\"Failed\",\"initContainerStatuses\":[{\"name\":\"i1\","
               "\"restartCount\":0,\"state\":{\"terminated\":{\"exitCode\":2}}}]}}",
               "Init:ExitCode:2", 0, 1, "0");
        expect("{" INIT2 ",\"status\":{\"phase\":\"Failed\",\"initContainerStatuses\":[{\"name\":\"i1\","
               "\"restartCount\":0,\"state\":{\"terminated\":{\"exitCode\":1,\"reason\":\"Error\"}}}]}}",
               "Init:Error", 0, 1, "0");
        /* A sidecar (restartPolicy Always) counts in READY; once
         * initialized, only its restarts count with the containers'. */
        expect("{\"spec\":{\"initContainers\":[{\"name\":\"s\",\"restartPolicy\":\"Always\"}],\"containers\":"
               "[{\"name\":\"a\"}]},\"status\":{\"phase\":\"Running\",\"initContainerStatuses\":[{\"name\":\"s\","
               "\"restartCount\":1,\"started\":true,\"ready\":true,\"state\":{\"running\":{}}}],"
               "\"containerStatuses\":[" RUNNING("a", "true") "]}}",
               "Running", 2, 2, "1");
}

/* ---- quantities ------------------------------------------------------------- */

static int bytes_of(const char *s, uint64_t *v) {
        json_t *j = json_string(s);
        int r = lg_kube_quantity_bytes(j, v);
        json_decref(j);
        return r;
}

static int millis_of(const char *s, uint64_t *v) {
        json_t *j = json_string(s);
        int r = lg_kube_quantity_millis(j, v);
        json_decref(j);
        return r;
}

static void test_quantity_exact(void **state) {
        (void) state;
        static const struct {
                const char *s;
                uint64_t bytes;
        } b[] = {
                {"0", 0},
                {"-0", 0},
                {"1", 1},
                {"+5", 5},
                {"5.", 5},
                {"64Mi", 64ull << 20},
                {"1.5Ki", 1536},
                {"1k", 1000},
                {"1e3", 1000},
                {"1E3", 1000},
                {"1e+3", 1000},
                {"1E", 1000000000000000000ull},
                {"1Ei", 1ull << 60},
                {"15Ei", 15ull << 60},
                {"18446744073709551615", UINT64_MAX},
                {"0000000000000000000000000000064", 64},
                /* Fractional bytes round up, as Quantity.Value(). */
                {"0.5", 1},
                {".5", 1},
                {"100m", 1},
                {"1n", 1},
                {"1e-30", 1},
                {"0.000000000000000000000000000000000000000000000001", 1},
                {"1.000000000000000000001", 2},
                {"1.5", 2},
                {"0.1Ki", 103},
                {"0e30", 0},
        };
        uint64_t v;
        for (size_t i = 0; i < N(b); i++) {
                int r = bytes_of(b[i].s, &v);
                if (r != 0 || v != b[i].bytes)
                        fail_msg("bytes of `%s`: %d, %llu, want %llu", b[i].s, r, (unsigned long long) v,
                                 (unsigned long long) b[i].bytes);
        }
        static const struct {
                const char *s;
                uint64_t millis;
        } m[] = {
                {"500m", 500},   {"0.5", 500},   {"1", 1000},    {"2.5", 2500},          {"0.0001", 1},
                {"1n", 1},       {"1u", 1},      {"1e-3", 1},    {"100", 100000},        {"1k", 1000000},
                {"999999999999999.999", 999999999999999999ull}, {"0.1Ki", 102400},
        };
        for (size_t i = 0; i < N(m); i++) {
                int r = millis_of(m[i].s, &v);
                if (r != 0 || v != m[i].millis)
                        fail_msg("millis of `%s`: %d, %llu, want %llu", m[i].s, r, (unsigned long long) v,
                                 (unsigned long long) m[i].millis);
        }
        /* JSON numbers: reals by their shortest decimal form. */
        json_t *j = json_real(0.1);
        assert_int_equal(lg_kube_quantity_millis(j, &v), 0);
        assert_int_equal(v, 100);
        json_decref(j);
        j = json_real(0.5);
        assert_int_equal(lg_kube_quantity_bytes(j, &v), 0);
        assert_int_equal(v, 1);
        json_decref(j);
        j = json_integer(2);
        assert_int_equal(lg_kube_quantity_millis(j, &v), 0);
        assert_int_equal(v, 2000);
        json_decref(j);
        j = json_integer(-1);
        assert_int_equal(lg_kube_quantity_bytes(j, &v), -EINVAL);
        json_decref(j);
        j = json_real(1e300);
        assert_int_equal(lg_kube_quantity_bytes(j, &v), -ERANGE);
        json_decref(j);

        long double x;
        j = json_string("-1.5Gi");
        assert_int_equal(lg_kube_quantity_parse(j, &x), 0);
        assert_true(x == -1.5L * (1 << 30));
        json_decref(j);
}

static void test_quantity_hostile(void **state) {
        (void) state;
        uint64_t v = 42;
        /* Garbage and the forms Kubernetes refuses. */
        static const char *const bad[] = {
                "",     " 1",   "1 ",    "1Mi ",  "abc",  "1ki",  "1K",   "1Mib", "1e",   "1e+",  "1ee3", "1e3Mi",
                "0x10", "inf",  "nan",   "1.2.3", "--1",  "+-1",  "+",    "-",    ".",    "Mi",   "1Mi5", "1m3",
                "1,5",  "1_000", "1e3.5", "1E+",  "e3",   "\xff", "1\n",  "1Mi\t", "١",    "1 Mi", "1.5.Ki",
        };
        for (size_t i = 0; i < N(bad); i++) {
                int r = bytes_of(bad[i], &v);
                if (r != -EINVAL)
                        fail_msg("`%s` gave %d, not -EINVAL", bad[i], r);
        }
        /* A NUL inside the JSON string: not "1". */
        json_t *j = json_stringn("1\0Gi", 4);
        assert_int_equal(lg_kube_quantity_bytes(j, &v), -EINVAL);
        json_decref(j);
        json_t *others[] = {json_null(), json_true(), json_object(), json_array(), NULL};
        for (size_t i = 0; i < N(others); i++) {
                assert_int_equal(lg_kube_quantity_bytes(others[i], &v), -EINVAL);
                json_decref(others[i]);
        }
        /* Negative: a value, but no size. */
        static const char *const neg[] = {"-1", "-1Mi", "-0.000000001", "-1e-30"};
        for (size_t i = 0; i < N(neg); i++) {
                assert_int_equal(bytes_of(neg[i], &v), -EINVAL);
                assert_int_equal(millis_of(neg[i], &v), -EINVAL);
        }
        /* Overflow, huge exponents and huge numbers: -ERANGE, no wrap. */
        static const char *const big[] = {"18446744073709551616", "16Ei", "18446744073709551615Ki", "1e20",
                                          "1e30", "99999999999999999999999999999999999999999999", "1.8446744073709551616e19"};
        for (size_t i = 0; i < N(big); i++) {
                int r = bytes_of(big[i], &v);
                if (r != -ERANGE)
                        fail_msg("`%s` gave %d (%llu), not -ERANGE", big[i], r, (unsigned long long) v);
        }
        assert_int_equal(millis_of("1e15", &v), -ERANGE);
        assert_int_equal(millis_of("1Ei", &v), -ERANGE);
        assert_int_equal(bytes_of("1e31", &v), -ERANGE);
        assert_int_equal(bytes_of("1e-31", &v), -ERANGE);
        assert_int_equal(bytes_of("1e999", &v), -ERANGE);
        assert_int_equal(bytes_of("1e99999999999999999999999999999999", &v), -ERANGE);
        assert_int_equal(bytes_of("1e-99999999999999999999999999999999", &v), -ERANGE);
        /* Long inputs: 100,000 digits either side of the point. */
        size_t n = 100000;
        char *s = malloc(n + 4);
        assert_non_null(s);
        memset(s, '9', n);
        s[n] = '\0';
        assert_int_equal(bytes_of(s, &v), -ERANGE);
        memcpy(s, "0.", 2);
        memset(s + 2, '0', n - 2);
        s[n] = '1';
        s[n + 1] = '\0';
        assert_int_equal(bytes_of(s, &v), 0);
        assert_int_equal(v, 1);
        assert_int_equal(millis_of(s, &v), 0);
        assert_int_equal(v, 1);
        memset(s, '0', n);
        s[n] = '7';
        s[n + 1] = '\0';
        assert_int_equal(bytes_of(s, &v), 0);
        assert_int_equal(v, 7);
        free(s);
        /* Beyond long double is -ERANGE; within it, a value. */
        long double x;
        j = json_string("1e30");
        assert_int_equal(lg_kube_quantity_parse(j, &x), 0);
        assert_true(isfinite(x) && x > 1e29L);
        json_decref(j);
        s = malloc(6000);
        assert_non_null(s);
        memset(s, '9', 5999);
        s[5999] = '\0';
        j = json_string(s);
        assert_int_equal(lg_kube_quantity_parse(j, &x), -ERANGE);
        json_decref(j);
        free(s);
}

static int cmp(const char *a, const char *b) {
        json_t *x = json_string(a), *y = json_string(b);
        int c = 99, r = lg_kube_quantity_cmp(x, y, &c);
        json_decref(x);
        json_decref(y);
        if (r < 0)
                fail_msg("cmp `%s` `%s`: %d", a, b, r);
        return c;
}

static void test_quantity_cmp(void **state) {
        (void) state;
        assert_int_equal(cmp("0.5", "500m"), 0);
        assert_int_equal(cmp("1Ki", "1024"), 0);
        assert_int_equal(cmp("1e3", "1k"), 0);
        assert_int_equal(cmp("1Gi", "1G"), 1);
        assert_int_equal(cmp("1G", "1Gi"), -1);
        assert_int_equal(cmp("-1", "1"), -1);
        assert_int_equal(cmp("-2", "-1"), -1);
        assert_int_equal(cmp("-0", "0"), 0);
        /* Rounded up to nano units first, as Kubernetes. */
        assert_int_equal(cmp("0.1n", "1n"), 0);
        assert_int_equal(cmp("1.1n", "1n"), 1);
        /* Beyond the exact range, by value. */
        assert_int_equal(cmp("1e30", "1e29"), 1);
        assert_int_equal(cmp("-1e30", "1"), -1);
        assert_int_equal(cmp("1e30", "1e30"), 0);
        char huge[6000];
        memset(huge, '9', sizeof(huge) - 1);
        huge[sizeof(huge) - 1] = '\0';
        assert_int_equal(cmp(huge, "1e30"), 1);
        huge[0] = '-';
        assert_int_equal(cmp(huge, "-1e30"), -1);
        json_t *a = json_string("1"), *b = json_string("x"), *c = json_real(0.5), *d = json_string("500m");
        int r;
        assert_int_equal(lg_kube_quantity_cmp(a, b, &r), -EINVAL);
        assert_int_equal(lg_kube_quantity_cmp(b, a, &r), -EINVAL);
        assert_int_equal(lg_kube_quantity_cmp(c, d, &r), 0);
        assert_int_equal(r, 0);
        json_decref(a);
        json_decref(b);
        json_decref(c);
        json_decref(d);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_duration),
                cmocka_unit_test(test_time_and_age),
                cmocka_unit_test(test_pod_status),
                cmocka_unit_test(test_pod_init_containers),
                cmocka_unit_test(test_quantity_exact),
                cmocka_unit_test(test_quantity_hostile),
                cmocka_unit_test(test_quantity_cmp),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
