/* Connection limits of the HTTP server under attack: one client address
 * holding connections must not lock the others out (the per-address cap),
 * idle connections that never authenticated go after a short timeout while
 * authenticated ones stay, and a full server makes room by closing the
 * unauthenticated connection idle longest. Attackers connect from
 * 127.0.0.2..5 and victims from 127.0.0.1 (all of 127.0.0.0/8 is loopback),
 * so the per-address limits are tested for real. Each attack is also run
 * without the defence it tests (calibration), where it must succeed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "test-http-harness.h"

#define REQ(path) "GET " path " HTTP/1.1\r\nHost: x\r\n\r\n"

/* Connect from src and send one request: the status of the answer (the
 * refusal a connection over a limit gets at once, else the request's), or
 * -1 when none came. *resp is kept when given (free it). */
static int ask(struct raw *r, const char *src, int port, const char *req, struct raw_resp *keep) {
        struct raw_resp resp;
        if (raw_tcp_from(r, src, port) < 0 || raw_puts(r, req) < 0 || raw_response(r, &resp, false) < 0)
                return -1;
        int st = resp.status;
        if (keep)
                *keep = resp;
        else
                raw_resp_free(&resp);
        return st;
}

/* A request on a connection already open: its status, or -1. */
static int again(struct raw *r, const char *req) {
        struct raw_resp resp;
        if (raw_puts(r, req) < 0 || raw_response(r, &resp, false) < 0)
                return -1;
        raw_resp_free(&resp);
        return resp.status;
}

static void expect_refusal(struct raw_resp *resp, int status, const char *what, const char *limit) {
        assert_int_equal(resp->status, status);
        assert_non_null(resp->body);
        assert_non_null(strstr(resp->body, "\"code\":\"TooManyConnections\""));
        if (!strstr(resp->body, what) || !strstr(resp->body, limit))
                fail_msg("refusal does not name `%s` and `%s`: %s", what, limit, resp->body);
        assert_string_equal(raw_header(resp, "Connection"), "close");
        raw_resp_free(resp);
}

/* ------------------------------------------------------------------------
 * (a) one address cannot lock out another
 * --------------------------------------------------------------------- */

#define LOCK_MAX 32
#define LOCK_TRIES 40

/* 127.0.0.2 opens LOCK_TRIES connections, one after the other, each with
 * one request (/auth: a tenant with a valid token, whose connections may
 * not be closed to make room; /hello: anybody), and keeps those it gets.
 * Then 127.0.0.1 asks: its status. *admitted: how many the attacker got. */
static int lockout(unsigned per_addr, const char *attack_req, int *admitted) {
        struct lg_http_server_config cfg = {.max_connections = LOCK_MAX, .max_connections_per_addr = per_addr};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw att[LOCK_TRIES], victim;
        struct raw_resp resp;
        *admitted = 0;
        for (int i = 0; i < LOCK_TRIES; i++) {
                int st = ask(&att[i], "127.0.0.2", h.port, attack_req, &resp);
                if (st == 200) {
                        (*admitted)++;
                        raw_resp_free(&resp);
                        continue;
                }
                if (st < 0)
                        fail_msg("attacker connection %d got no answer", i);
                /* Refused: by the cap (429), or by the full server (503). */
                if (per_addr == UINT_MAX)
                        expect_refusal(&resp, 503, "limit of 32 connections", "32");
                else
                        expect_refusal(&resp, 429, "127.0.0.2", "limit per client address");
                assert_true(raw_wait_close(&att[i]));
        }
        struct raw_resp vr = {0};
        int st = ask(&victim, "127.0.0.1", h.port, REQ("/hello"), &vr);
        if (st == 503)
                expect_refusal(&vr, 503, "limit of 32 connections", "32");
        else
                raw_resp_free(&vr);
        raw_close(&victim);
        for (int i = 0; i < LOCK_TRIES; i++)
                raw_close(&att[i]);
        harness_stop(&h, false);
        return st;
}

static void test_one_address_cannot_lock_out_another(void **state) {
        (void) state;
        int admitted;
        /* Calibration: without the per-address cap, one address's
         * authenticated idle connections fill the server and the other
         * client is refused. */
        assert_int_equal(lockout(UINT_MAX, REQ("/auth"), &admitted), 503);
        assert_int_equal(admitted, LOCK_MAX);
        /* With it, the attacker gets its 8 and the other client gets in. */
        assert_int_equal(lockout(8, REQ("/auth"), &admitted), 200);
        assert_int_equal(admitted, 8);
        /* The same with unauthenticated connections, as in the report. */
        assert_int_equal(lockout(8, REQ("/hello"), &admitted), 200);
        assert_int_equal(admitted, 8);
}

/* ------------------------------------------------------------------------
 * (b) unauthenticated idle connections go sooner
 * --------------------------------------------------------------------- */

static void test_unauthenticated_idle_closed_sooner(void **state) {
        (void) state;
        /* The head timeout is longer than the raw client waits (10 s), so a
         * silent connection closed in time was closed by the short one. Not
         * shorter: a client must connect and send within it. */
        struct lg_http_server_config cfg = {.unauth_idle_timeout_ms = 1000, .header_timeout_ms = 30000};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw authed, anon, silent;
        /* authed goes idle first: with the short timeout it would be closed
         * before anon. */
        assert_int_equal(ask(&authed, "127.0.0.1", h.port, REQ("/auth"), NULL), 200);
        assert_int_equal(ask(&anon, "127.0.0.1", h.port, REQ("/hello"), NULL), 200);
        assert_int_equal(raw_tcp(&silent, h.port), 0);
        assert_true(raw_wait_close(&anon));
        assert_true(raw_wait_close(&silent));
        /* Still open, and still keep-alive, after both were closed. */
        struct raw_resp resp;
        assert_int_equal(raw_puts(&authed, REQ("/hello")), 0);
        assert_int_equal(raw_response(&authed, &resp, false), 0);
        assert_int_equal(resp.status, 200);
        assert_true(resp.keep_alive);
        raw_resp_free(&resp);
        raw_close(&authed);
        raw_close(&anon);
        raw_close(&silent);
        harness_stop(&h, false);
}

/* ------------------------------------------------------------------------
 * (c) the cap is per address
 * --------------------------------------------------------------------- */

#define CAP 4

/* A connection from src answered 200; a refused attempt is retried, for
 * connections the server has not seen close yet. */
static void ask_admitted(struct raw *c, const char *src, int port) {
        int st = -1;
        for (int t = 0; t < 2000 && st != 200; t++) {
                st = ask(c, src, port, REQ("/hello"), NULL);
                if (st != 200) {
                        raw_close(c);
                        struct timespec ts = {0, 5 * 1000 * 1000};
                        nanosleep(&ts, NULL);
                }
        }
        assert_int_equal(st, 200);
}

static void fill(struct raw *c, const char *src, int port) {
        for (int i = 0; i < CAP; i++)
                ask_admitted(&c[i], src, port);
}

static void expect_capped(const char *src, int port, int cap) {
        struct raw r;
        struct raw_resp resp;
        assert_int_equal(ask(&r, src, port, REQ("/hello"), &resp), 429);
        char who[64];
        snprintf(who, sizeof(who), "%s already has %d connections open", src, cap);
        expect_refusal(&resp, 429, who, "limit per client address");
        assert_true(raw_wait_close(&r));
        raw_close(&r);
}

static void test_cap_is_per_address(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {.max_connections = 64, .max_connections_per_addr = CAP};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw a[CAP], b[CAP], c;
        fill(a, "127.0.0.2", h.port);
        expect_capped("127.0.0.2", h.port, CAP);
        /* Other addresses have their own CAP. */
        fill(b, "127.0.0.3", h.port);
        expect_capped("127.0.0.3", h.port, CAP);
        assert_int_equal(ask(&c, "127.0.0.1", h.port, REQ("/hello"), NULL), 200);
        raw_close(&c);
        /* The connections refused did not count, and those closed are
         * uncounted: after closing all of 127.0.0.2's it gets CAP again
         * (retrying until the server has seen the closes), not more. */
        for (int i = 0; i < CAP; i++)
                raw_close(&a[i]);
        fill(a, "127.0.0.2", h.port);
        expect_capped("127.0.0.2", h.port, CAP);
        for (int i = 0; i < CAP; i++) {
                assert_int_equal(again(&a[i], REQ("/hello")), 200);
                assert_int_equal(again(&b[i], REQ("/hello")), 200);
                raw_close(&a[i]);
                raw_close(&b[i]);
        }
        harness_stop(&h, false);
}

/* Many addresses, one connection each, closed in a scattered order: every
 * address closed gets in again, every one still open is refused (the
 * counting table grows and removes entries right). */
#define MANY 300

static void src_of(int i, char *buf, size_t cap) { snprintf(buf, cap, "127.0.%d.%d", 1 + i / 200, 1 + i % 200); }

static void test_many_addresses(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {.max_connections = 1024, .max_connections_per_addr = 1};
        struct harness h;
        harness_start(&h, &cfg);
        static struct raw c[MANY];
        char src[32];
        for (int i = 0; i < MANY; i++) {
                src_of(i, src, sizeof(src));
                assert_int_equal(ask(&c[i], src, h.port, REQ("/hello"), NULL), 200);
        }
        for (int i = MANY - 1; i >= 0; i--)
                if (i % 3 != 1)
                        raw_close(&c[i]);
        for (int i = 0; i < MANY; i++) {
                src_of(i, src, sizeof(src));
                if (i % 3 != 1)
                        ask_admitted(&c[i], src, h.port);
                else
                        expect_capped(src, h.port, 1);
        }
        for (int i = 0; i < MANY; i++)
                raw_close(&c[i]);
        harness_stop(&h, false);
}

/* ------------------------------------------------------------------------
 * A full server makes room
 * --------------------------------------------------------------------- */

#define ROOM_ADDRS 4
#define ROOM_MAX (ROOM_ADDRS * CAP)

/* ROOM_ADDRS addresses take CAP connections each, which fills the server:
 * the first connection sends half a head and stalls, the others make one
 * request (/auth when `authed`) and wait. Then 127.0.0.1 connects twice. */
static void full_server(bool authed) {
        struct lg_http_server_config cfg = {.max_connections = ROOM_MAX, .max_connections_per_addr = CAP};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw att[ROOM_MAX], v1, v2;
        for (int i = 0; i < ROOM_MAX; i++) {
                char src[32];
                snprintf(src, sizeof(src), "127.0.0.%d", 2 + i / CAP);
                if (i == 0 && !authed) {
                        assert_int_equal(raw_tcp_from(&att[0], src, h.port), 0);
                        assert_int_equal(raw_puts(&att[0], "GET /hel"), 0);
                        continue;
                }
                assert_int_equal(ask(&att[i], src, h.port, authed ? REQ("/auth") : REQ("/hello"), NULL), 200);
        }
        struct raw_resp resp;
        if (authed) {
                /* Calibration: nothing may go, so the newcomer is refused. */
                assert_int_equal(ask(&v1, "127.0.0.1", h.port, REQ("/hello"), &resp), 503);
                expect_refusal(&resp, 503, "limit of 16 connections", "none idle before authenticating");
                raw_close(&v1);
        } else {
                /* Each newcomer takes the place of the connection waiting
                 * longest: the stalled head, then the first idle one. */
                assert_int_equal(ask(&v1, "127.0.0.1", h.port, REQ("/hello"), NULL), 200);
                assert_true(raw_wait_close(&att[0]));
                assert_int_equal(ask(&v2, "127.0.0.1", h.port, REQ("/hello"), NULL), 200);
                assert_true(raw_wait_close(&att[1]));
                assert_int_equal(again(&att[2], REQ("/hello")), 200);
                assert_int_equal(again(&v1, REQ("/hello")), 200);
                raw_close(&v1);
                raw_close(&v2);
        }
        for (int i = 0; i < ROOM_MAX; i++)
                raw_close(&att[i]);
        harness_stop(&h, false);
}

static void test_full_server_closes_idle_unauthenticated(void **state) {
        (void) state;
        full_server(true);
        full_server(false);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_one_address_cannot_lock_out_another),
                cmocka_unit_test(test_unauthenticated_idle_closed_sooner),
                cmocka_unit_test(test_cap_is_per_address),
                cmocka_unit_test(test_many_addresses),
                cmocka_unit_test(test_full_server_closes_idle_unauthenticated),
        };
        if (getenv("HTTP_TEST"))
                cmocka_set_test_filter(getenv("HTTP_TEST"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
