/* Unit tests of the readiness probe (node/probe.h) against a libuv server
 * on loopback: a port nobody listens on, one bound but never listening,
 * a server that opens late, HTTP answers 200/301/500, hostile or missing
 * status lines, a silent server, TCP-only mode, cancel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node/probe.h"
#include "test-ok.h"

/* ---- a tiny server: answers each connection with `reply`, then closes;
 * reply NULL = accepts and says nothing. */
struct server {
        uv_tcp_t tcp;
        const char *reply;
        unsigned port;
        unsigned accepted;
        bool open;
};

struct conn {
        uv_tcp_t tcp;
        uv_write_t wr;
        bool silent;
};

static void conn_closed(uv_handle_t *h) { free(h->data); }
static void conn_written(uv_write_t *w, int status) {
        (void) status;
        struct conn *c = w->data;
        uv_close((uv_handle_t *) &c->tcp, conn_closed);
}
static void conn_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
        (void) h;
        static char sink[4096];
        *b = uv_buf_init(sink, (unsigned) (n < sizeof(sink) ? n : sizeof(sink)));
}
static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
        (void) b;
        struct conn *c = s->data;
        if (n < 0 && !uv_is_closing((uv_handle_t *) &c->tcp))
                uv_close((uv_handle_t *) &c->tcp, conn_closed);
}

static void on_conn(uv_stream_t *srv, int status) {
        struct server *s = srv->data;
        assert_int_equal(status, 0);
        struct conn *c = calloc(1, sizeof(*c));
        uv_tcp_init(srv->loop, &c->tcp);
        c->tcp.data = c;
        c->wr.data = c;
        assert_int_equal(uv_accept(srv, (uv_stream_t *) &c->tcp), 0);
        s->accepted++;
        if (!s->reply) {
                uv_read_start((uv_stream_t *) &c->tcp, conn_alloc, conn_read);
                return;
        }
        uv_buf_t b = uv_buf_init((char *) s->reply, (unsigned) strlen(s->reply));
        uv_write(&c->wr, (uv_stream_t *) &c->tcp, &b, 1, conn_written);
}

static void server_listen(uv_loop_t *loop, struct server *s, unsigned port) {
        struct sockaddr_in sa;
        uv_ip4_addr("127.0.0.1", (int) port, &sa);
        uv_tcp_init(loop, &s->tcp);
        s->tcp.data = s;
        assert_int_equal(uv_tcp_bind(&s->tcp, (struct sockaddr *) &sa, 0), 0);
        assert_int_equal(uv_listen((uv_stream_t *) &s->tcp, 16, on_conn), 0);
        int len = sizeof(sa);
        uv_tcp_getsockname(&s->tcp, (struct sockaddr *) &sa, &len);
        s->port = ntohs(sa.sin_port);
        s->open = true;
}

static void server_close(struct server *s) {
        if (s->open)
                uv_close((uv_handle_t *) &s->tcp, NULL);
        s->open = false;
}

/* A port free right now (bound, then let go). */
static unsigned free_port(int *keep_fd) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        socklen_t len = sizeof(sa);
        getsockname(fd, (struct sockaddr *) &sa, &len);
        if (keep_fd)
                *keep_fd = fd;
        else
                close(fd);
        return ntohs(sa.sin_port);
}

struct result {
        bool called;
        unsigned calls;
        int status;
        char message[512];
};

static void on_probe(lg_probe *p, int status, const char *message, void *ud) {
        (void) p;
        struct result *r = ud;
        r->called = true;
        r->calls++;
        r->status = status;
        snprintf(r->message, sizeof(r->message), "%s", message ? message : "");
}

static void run_probe(uv_loop_t *loop, unsigned port, const char *path, uint64_t timeout_ms, struct result *r) {
        struct lg_error err = {0};
        struct lg_probe_config cfg = {.loop = loop, .ip = "127.0.0.1", .port = port, .path = path,
                                      .timeout_ms = timeout_ms, .interval_ms = 10, .attempt_ms = 100};
        lg_probe *p;
        *r = (struct result){0};
        OK(lg_probe_start(&cfg, on_probe, r, &p, &err));
        assert_false(r->called); /* never from inside start */
        while (!r->called)
                uv_run(loop, UV_RUN_ONCE);
}

static void drain(uv_loop_t *loop) {
        uv_run(loop, UV_RUN_NOWAIT);
        while (uv_loop_alive(loop))
                uv_run(loop, UV_RUN_ONCE);
}

static void test_refused(void **state) {
        (void) state;
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct result r;
        unsigned port = free_port(NULL);
        run_probe(&loop, port, NULL, 300, &r);
        assert_int_equal(r.status, -ETIMEDOUT);
        char want[64];
        snprintf(want, sizeof(want), "port %u never opened within 300 ms", port);
        assert_string_equal(r.message, want);
        run_probe(&loop, port, "/healthz", 1500, &r);
        assert_int_equal(r.status, -ETIMEDOUT);
        snprintf(want, sizeof(want), "port %u never opened within 1.5 s", port);
        assert_string_equal(r.message, want);
        drain(&loop);
        assert_int_equal(uv_loop_close(&loop), 0);
}

/* Bound, never listening: connections are refused as well. */
static void test_never_listening(void **state) {
        (void) state;
        uv_loop_t loop;
        uv_loop_init(&loop);
        int fd;
        unsigned port = free_port(&fd);
        struct result r;
        run_probe(&loop, port, "/", 200, &r);
        assert_int_equal(r.status, -ETIMEDOUT);
        assert_non_null(strstr(r.message, "never opened within 200 ms"));
        close(fd);
        drain(&loop);
        assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_http_status(void **state) {
        (void) state;
        static const struct {
                const char *reply;
                int status;
                const char *message;
        } cases[] = {
                {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, ""},
                {"HTTP/1.0 204 No Content\r\n\r\n", 0, ""},
                {"HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n", 0, ""},
                {"HTTP/1.1 500 Internal Server Error\r\n\r\n", -EPROTO, "GET /healthz answered 500 within 300 ms"},
                {"HTTP/1.1 404 Not Found\r\n\r\n", -EPROTO, "GET /healthz answered 404 within 300 ms"},
                {"HTTP/1.1 199 Odd\r\n\r\n", -EPROTO, "GET /healthz answered 199 within 300 ms"},
                /* Hostile status lines: no HTTP answer at all. */
                {"", -EPROTO, "GET /healthz gave no HTTP answer within 300 ms"},
                {"SSH-2.0-OpenSSH_9.6\r\n", -EPROTO, "GET /healthz gave no HTTP answer within 300 ms"},
                {"HTTP/1.1 2000 OK\r\n\r\n", -EPROTO, "GET /healthz gave no HTTP answer within 300 ms"},
                {"HTTP/1.1 20\r\n", -EPROTO, "GET /healthz gave no HTTP answer within 300 ms"},
                {"HTTP/1.1 099 x\r\n", -EPROTO, "GET /healthz gave no HTTP answer within 300 ms"},
                {"HTTP/1.1 2x0 OK\r\n", -EPROTO, "GET /healthz gave no HTTP answer within 300 ms"},
                {"http/1.1 200 OK\r\n", -EPROTO, "GET /healthz gave no HTTP answer within 300 ms"},
                {"HTTP/1.1  200 OK\r\n", -EPROTO, "GET /healthz gave no HTTP answer within 300 ms"},
                {"\r\nHTTP/1.1 200 OK\r\n", -EPROTO, "GET /healthz gave no HTTP answer within 300 ms"},
                {"HTTP/1.1 200", 0, ""}, /* then EOF: no reason phrase is still a status line */
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                uv_loop_t loop;
                uv_loop_init(&loop);
                struct server s = {.reply = cases[i].reply};
                server_listen(&loop, &s, 0);
                struct result r;
                run_probe(&loop, s.port, "/healthz", 300, &r);
                if (r.status != cases[i].status || strcmp(r.message, cases[i].message))
                        fail_msg("reply %zu `%s`: %d `%s`", i, cases[i].reply, r.status, r.message);
                assert_true(s.accepted >= 1);
                server_close(&s);
                drain(&loop);
                assert_int_equal(uv_loop_close(&loop), 0);
        }
}

/* A line longer than the probe reads, never ending. */
static void test_long_line(void **state) {
        (void) state;
        static char reply[8192];
        memset(reply, 'A', sizeof(reply) - 1);
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct server s = {.reply = reply};
        server_listen(&loop, &s, 0);
        struct result r;
        run_probe(&loop, s.port, "/", 200, &r);
        assert_int_equal(r.status, -EPROTO);
        assert_string_equal(r.message, "GET / gave no HTTP answer within 200 ms");
        server_close(&s);
        drain(&loop);
        assert_int_equal(uv_loop_close(&loop), 0);
}

/* Accepts, never answers: each try ends at attempt_ms. */
static void test_silent(void **state) {
        (void) state;
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct server s = {.reply = NULL};
        server_listen(&loop, &s, 0);
        struct result r;
        run_probe(&loop, s.port, "/ready", 350, &r);
        assert_int_equal(r.status, -EPROTO);
        assert_string_equal(r.message, "GET /ready gave no HTTP answer within 350 ms");
        assert_true(s.accepted >= 2); /* tried again after the silent one */
        /* TCP only: the accept is enough. */
        run_probe(&loop, s.port, NULL, 350, &r);
        assert_int_equal(r.status, 0);
        server_close(&s);
        drain(&loop);
        assert_int_equal(uv_loop_close(&loop), 0);
}

/* The server opens after the probe began: tries go on until it does. */
static void late_open(uv_timer_t *t) {
        struct server *s = t->data;
        server_listen(t->loop, s, s->port);
        uv_close((uv_handle_t *) t, NULL);
}

static void test_late_open(void **state) {
        (void) state;
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct server s = {.reply = "HTTP/1.1 200 OK\r\n\r\n", .port = free_port(NULL)};
        uv_timer_t t;
        uv_timer_init(&loop, &t);
        t.data = &s;
        uv_timer_start(&t, late_open, 100, 0);
        struct result r;
        run_probe(&loop, s.port, "/", 60000, &r);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.calls, 1);
        server_close(&s);
        drain(&loop);
        assert_int_equal(r.calls, 1);
        assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_cancel(void **state) {
        (void) state;
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct server s = {.reply = NULL};
        server_listen(&loop, &s, 0);
        struct lg_error err = {0};
        struct result r = {0};
        struct lg_probe_config cfg = {.loop = &loop, .ip = "127.0.0.1", .port = s.port, .path = "/"};
        lg_probe *p;
        OK(lg_probe_start(&cfg, on_probe, &r, &p, &err));
        while (s.accepted == 0)
                uv_run(&loop, UV_RUN_ONCE);
        lg_probe_cancel(p); /* mid-try */
        OK(lg_probe_start(&cfg, on_probe, &r, &p, &err));
        lg_probe_cancel(p); /* before any try */
        lg_probe_cancel(NULL);
        server_close(&s);
        drain(&loop);
        assert_false(r.called);
        assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_bad_config(void **state) {
        (void) state;
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct lg_error err = {0};
        lg_probe *p;
        struct result r;
        static const struct lg_probe_config bad[] = {
                {.ip = "10.0.0.1.5", .port = 80},  {.ip = "::1", .port = 80},
                {.ip = NULL, .port = 80},          {.ip = "127.0.0.1", .port = 0},
                {.ip = "127.0.0.1", .port = 70000}, {.ip = "127.0.0.1", .port = 80, .path = "healthz"},
                {.ip = "127.0.0.1", .port = 80, .path = "/a b"}, {.ip = "127.0.0.1", .port = 80, .path = "/a\r\nX: y"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                struct lg_probe_config c = bad[i];
                c.loop = &loop;
                assert_int_equal(lg_probe_start(&c, on_probe, &r, &p, &err), -EINVAL);
        }
        assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_parse_status(void **state) {
        (void) state;
        assert_int_equal(lg_probe_parse_status("HTTP/1.1 200 OK", 15), 200);
        assert_int_equal(lg_probe_parse_status("HTTP/1.0 302", 12), 302);
        assert_int_equal(lg_probe_parse_status("HTTP/1.1 503\r", 13), 503);
        static const char *const bad[] = {"", "HTTP/1.1", "HTTP/1.1 ", "HTTP/1.1 20", "HTTP/1.1 2000",
                                          "HTTP/1.1 20a", "HTTP/x.1 200", "HTTP/1.1-200", "HTTP/11 200",
                                          "HTTP/1.1 000", "XTTP/1.1 200", "HTTP/1.1 200OK"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                assert_int_equal(lg_probe_parse_status(bad[i], strlen(bad[i])), -EPROTO);
        char buf[32];
        lg_probe_fmt_ms(60000, buf, sizeof(buf));
        assert_string_equal(buf, "60 s");
        lg_probe_fmt_ms(2500, buf, sizeof(buf));
        assert_string_equal(buf, "2.5 s");
        lg_probe_fmt_ms(200, buf, sizeof(buf));
        assert_string_equal(buf, "200 ms");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_status), cmocka_unit_test(test_bad_config),
                cmocka_unit_test(test_refused),      cmocka_unit_test(test_never_listening),
                cmocka_unit_test(test_http_status),  cmocka_unit_test(test_long_line),
                cmocka_unit_test(test_silent),       cmocka_unit_test(test_late_open),
                cmocka_unit_test(test_cancel),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
