/* Hostile input to the HTTP server: a corpus of malformed requests with the
 * status each must get (JSON error bodies, connection closed), then a
 * deterministic random-mutation loop of a few thousand requests, whole or
 * split into pieces, that must never crash, hang or leak (run it under
 * -Dsanitize=true). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "test-http-harness.h"

static int status_of(const char *out) {
        int st = 0;
        if (sscanf(out, "HTTP/1.1 %d ", &st) != 1)
                return 0;
        return st;
}

struct hcase {
        const char *name;
        const char *data;
        size_t len; /* 0: strlen */
        int status; /* first status expected; 0: no response */
};

#define BIN(s) s, sizeof(s) - 1

static const struct hcase corpus[] = {
        {"garbage", "garbage\r\n\r\n", 0, 400},
        {"no target", "GET\r\n\r\n", 0, 400},
        {"lowercase method", "get / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400},
        {"unknown method", "FROB / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400},
        {"long method", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\n\r\n", 0, 400},
        {"no version (HTTP/0.9)", "GET /hello\r\nHost: x\r\n\r\n", 0, 505},
        {"bad version", "GET /hello HTTP/x.1\r\nHost: x\r\n\r\n", 0, 400},
        {"HTTP/9.9", "GET /hello HTTP/9.9\r\nHost: x\r\n\r\n", 0, 505},
        {"HTTP/2.0 line", "GET /hello HTTP/2.0\r\nHost: x\r\n\r\n", 0, 505},
        {"HTTP/1.2", "GET /hello HTTP/1.2\r\nHost: x\r\n\r\n", 0, 505},
        {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, 400},
        {"TLS hello", BIN("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\r\n\r\n"), 400},
        {"no Host", "GET /hello HTTP/1.1\r\n\r\n", 0, 400},
        {"two Hosts", "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, 400},
        {"header without colon", "GET /hello HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 0, 400},
        {"space in header name", "GET /hello HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n", 0, 400},
        {"header high bytes", BIN("GET /hello HTTP/1.1\r\nHost: x\r\nX\xff\xfe: 1\r\n\r\n"), 400},
        {"NUL in target", BIN("GET /he\0llo HTTP/1.1\r\nHost: x\r\n\r\n"), 400},
        {"NUL in header value", BIN("GET /hello HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n"), 400},
        {"CR alone", "GET /hello HTTP/1.1\rHost: x\r\n\r\n", 0, 400},
        {"negative Content-Length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 0, 400},
        {"overflowing Content-Length",
         "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0, 400},
        {"Content-Length 2^64", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n", 0,
         400},
        {"Content-Length 2^64-1",
         "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n", 0, 400},
        {"huge Content-Length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n", 0,
         413},
        {"Content-Length 10^19", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000000000000\r\n\r\n", 0,
         413},
        {"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0, 404},
        {"target not a path", "GET hello HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400},
        {"Content-Length with space", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n", 0, 400},
        {"Content-Length hex", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 0, 400},
        {"two Content-Lengths", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
         0, 400},
        {"Content-Length and chunked",
         "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
         0, 400},
        {"chunked and Content-Length",
         "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
         0, 400},
        {"TE gzip", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 0, 400},
        {"TE chunked, gzip", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc", 0, 400},
        {"TE chunked then identity",
         "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
         0, 400},
        {"bad chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
         0, 400},
        {"overflowing chunk size",
         "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nab\r\n", 0, 400},
        {"negative chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n", 0,
         400},
        {"chunk without CRLF", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
         0, 400},
        {"huge chunk to streaming",
         "PUT /upload?limit=10 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n", 0, 0},
        {"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 0, 501},
        {"bad absolute URL", "GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", 0, 400},
        {"Expect on 1.0", "POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\na", 0, 417},
        {"only line breaks", "\r\n\r\n\r\n\r\n", 0, 0},
        {"truncated body", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab", 0, 0},
        {"truncated head", "GET /hello HTTP/1.1\r\nHost: x\r\n", 0, 0},
        {"empty", "", 0, 0},
        /* Accepted oddities. */
        {"bare LF", "GET /hello HTTP/1.1\nHost: x\n\n", 0, 200},
        {"obs-fold", "GET /hello HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 0, 200},
        {"upgrade ignored", "GET /hello HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 0,
         200},
        {"leading CRLF", "\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 0, 200},
        {"then garbage", "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n", 0, 200},
};

static void test_corpus(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {.header_timeout_ms = 2000};
        struct harness h;
        harness_start(&h, &cfg);
        static char out[1 << 16];
        int bad = 0;
        for (size_t i = 0; i < ARRAY_SIZE(corpus); i++) {
                const struct hcase *t = &corpus[i];
                size_t len = t->len ? t->len : strlen(t->data);
                ssize_t n = raw_oneshot(h.port, t->data, len, out, sizeof(out));
                int st = status_of(out);
                if (st != t->status) {
                        print_error("%s: got status %d, want %d (%zd bytes: %.200s)\n", t->name, st, t->status, n,
                                    out);
                        bad++;
                        continue;
                }
                if (st >= 400 && st != 404) {
                        /* A JSON error from the server, then the end. */
                        const char *body = strstr(out, "\r\n\r\n");
                        assert_non_null(body);
                        if (strncmp(body + 4, "{\"error\":{\"code\":\"", 18) != 0)
                                fail_msg("%s: body %s", t->name, body + 4);
                        if (!strstr(out, "Connection: close\r\n"))
                                fail_msg("%s: no Connection: close in %s", t->name, out);
                }
        }
        assert_int_equal(bad, 0);
        /* Huge headers and a huge target, then two more requests after the
         * 400 of "then garbage" style are covered above; the server is fine. */
        size_t big = 100000;
        char *req = malloc(big + 100);
        int k = snprintf(req, 100, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ");
        memset(req + k, 'x', big);
        memcpy(req + k + big, "\r\n\r\n", 4);
        raw_oneshot(h.port, req, k + big + 4, out, sizeof(out));
        assert_int_equal(status_of(out), 431);
        k = snprintf(req, 100, "GET /");
        memset(req + k, 'x', big);
        memcpy(req + k + big, " HTTP/1.1\r\n\r\n", 13);
        raw_oneshot(h.port, req, k + big + 13, out, sizeof(out));
        assert_int_equal(status_of(out), 414);
        free(req);
        raw_oneshot(h.port, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 33, out, sizeof(out));
        assert_int_equal(status_of(out), 200);
        harness_stop(&h, false);
        assert_int_equal(app_outstanding(), 0);
}

/* xorshift64*, fixed seed: the same mutations every run. */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        return rng * 2685821657736338717ull;
}
static size_t rndn(size_t n) { return n ? (size_t) (rnd() % n) : 0; }

static const char *const templates[] = {
        "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /info/a%2Fb/c?x=1&y=%41+b HTTP/1.1\r\nHost: x\r\nX-Test: 1\r\nAccept: */*\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":[1,2,3]}",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nT: 1\r\n\r\n",
        "PUT /stream-echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n0123456789",
        "PUT /stream-echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "PUT /upload?limit=20 HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\nabcdefghijklmnopqrstuvwxyz0123",
        "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /hello HTTP/1.0\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /peer "
        "HTTP/1.1\r\nHost: x\r\n\r\n",
        "HEAD /big?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /big?n=70000 HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /stream-reject HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "GET /abort-mid HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /hold?ms=1 HTTP/1.1\r\nHost: x\r\n\r\n",
};

static const char *const tokens[] = {"\r\n", "\r\n\r\n", ":", " ", "\0", "%", "%00", "?", "&", "=", "chunked",
                                     "Content-Length: ", "Transfer-Encoding: chunked\r\n", "Expect: 100-continue\r\n",
                                     "Connection: close\r\n", "99999999999999999999", "-1", "ffffffff", "\xff",
                                     "HTTP/1.0", "HTTP/2.0", "\t", "0\r\n\r\n"};

static size_t mutate(char *buf, size_t len, size_t cap) {
        int n = 1 + (int) rndn(4);
        for (int m = 0; m < n; m++) {
                size_t pos = rndn(len + 1);
                switch (rndn(8)) {
                case 0: /* flip a byte */
                        if (len)
                                buf[rndn(len)] ^= (char) (1 + rndn(255));
                        break;
                case 1: /* random byte */
                        if (len + 1 < cap) {
                                memmove(buf + pos + 1, buf + pos, len - pos);
                                buf[pos] = (char) rndn(256);
                                len++;
                        }
                        break;
                case 2: /* delete a range */
                        if (len) {
                                size_t p = rndn(len), l = 1 + rndn(8);
                                if (p + l > len)
                                        l = len - p;
                                memmove(buf + p, buf + p + l, len - p - l);
                                len -= l;
                        }
                        break;
                case 3: { /* insert a token */
                        const char *t = tokens[rndn(ARRAY_SIZE(tokens))];
                        size_t tl = t[0] ? strlen(t) : 1;
                        if (len + tl < cap) {
                                memmove(buf + pos + tl, buf + pos, len - pos);
                                memcpy(buf + pos, t, tl);
                                len += tl;
                        }
                        break;
                }
                case 4: /* duplicate a range */
                        if (len) {
                                size_t p = rndn(len), l = 1 + rndn(40);
                                if (p + l > len)
                                        l = len - p;
                                if (len + l < cap) {
                                        memmove(buf + p + l, buf + p, len - p);
                                        len += l;
                                }
                        }
                        break;
                case 5: /* truncate */
                        len = pos;
                        break;
                case 6: /* a digit into a big number */
                        for (size_t i = 0; i < len; i++) {
                                size_t j = (pos + i) % len;
                                if (buf[j] >= '0' && buf[j] <= '9') {
                                        buf[j] = (char) ('0' + rndn(10));
                                        if (len + 3 < cap) {
                                                memmove(buf + j + 3, buf + j, len - j);
                                                memcpy(buf + j, "999", 3);
                                                len += 3;
                                        }
                                        break;
                                }
                        }
                        break;
                default: /* swap case of letters */
                        for (size_t i = pos; i < len && i < pos + 10; i++)
                                if ((buf[i] | 0x20) >= 'a' && (buf[i] | 0x20) <= 'z')
                                        buf[i] ^= 0x20;
                        break;
                }
        }
        return len;
}

static void test_mutations(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {.header_timeout_ms = 500, .body_timeout_ms = 500, .max_body = 4096,
                                            .max_head = 2048, .max_headers = 20};
        struct harness h;
        harness_start(&h, &cfg);
        enum { ITER = 5000 };
        static char buf[8192], out[4096];
        int statuses[600] = {0};
        for (int it = 0; it < ITER; it++) {
                const char *t = templates[rndn(ARRAY_SIZE(templates))];
                size_t len = strlen(t);
                memcpy(buf, t, len);
                len = mutate(buf, len, sizeof(buf));
                if (it % 5 == 0) {
                        /* In pieces, to resume the parser anywhere. */
                        struct raw c;
                        assert_int_equal(raw_tcp(&c, h.port), 0);
                        for (size_t off = 0; off < len;) {
                                size_t l = 1 + rndn(16);
                                if (off + l > len)
                                        l = len - off;
                                if (raw_write(&c, buf + off, l) < 0)
                                        break;
                                off += l;
                        }
                        shutdown(c.fd, SHUT_WR);
                        (void) raw_wait_close(&c);
                        raw_close(&c);
                } else {
                        raw_oneshot(h.port, buf, len, out, sizeof(out));
                        int st = status_of(out);
                        if (st >= 0 && st < 600)
                                statuses[st]++;
                }
        }
        print_message("mutations: %d requests, statuses:", ITER);
        for (int i = 0; i < 600; i++)
                if (statuses[i])
                        print_message(" %d:%d", i, statuses[i]);
        print_message("\n");
        /* Both accepted and rejected requests were produced. */
        assert_true(statuses[200] > 0);
        assert_true(statuses[400] > 0);
        /* Still serving, nothing held. */
        raw_oneshot(h.port, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 33, out, sizeof(out));
        assert_int_equal(status_of(out), 200);
        for (int i = 0; i < 1000 && app_outstanding() > 0; i++)
                usleep(10000);
        assert_int_equal(app_outstanding(), 0);
        harness_stop(&h, false);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_corpus),
                cmocka_unit_test(test_mutations),
        };
        if (getenv("HTTP_TEST"))
                cmocka_set_test_filter(getenv("HTTP_TEST"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
