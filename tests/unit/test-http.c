/* Tests of the HTTP module: client and server together on one loop (round
 * trips, streaming with backpressure, keep-alive pools, held and aborted
 * requests, upstream errors, graceful close), and the server alone against a
 * raw socket client (keep-alive, HTTP/1.0, chunked, 100-continue,
 * pipelining, limits and timeouts with their JSON errors). Real sockets on
 * 127.0.0.1 and Unix sockets in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "test-http-harness.h"

/* ------------------------------------------------------------------------
 * Client and server on one loop
 * --------------------------------------------------------------------- */

struct env {
        uv_loop_t loop;
        struct lg_http_server *srv;
        struct lg_http_client *cl;
        struct lg_http_upstream *tcp, *unx;
        int port;
        char dir[64], sock[128], addr[64], uaddr[160];
        bool srv_closed, cl_closed;
};

static void env_start(struct env *e, struct lg_http_server_config *scfg, struct lg_http_client_config *ccfg) {
        memset(e, 0, sizeof(*e));
        assert_int_equal(uv_loop_init(&e->loop), 0);
        struct lg_http_server_config defcfg = {0};
        if (!scfg)
                scfg = &defcfg;
        app_config(scfg, &e->loop);
        struct lg_error err = {0};
        assert_int_equal(lg_http_server_new(&e->loop, scfg, &e->srv, &err), 0);
        assert_int_equal(lg_http_server_listen_tcp(e->srv, "127.0.0.1", 0, &err), 0);
        e->port = lg_http_server_port(e->srv);
        snprintf(e->dir, sizeof(e->dir), "/tmp/lg-http-XXXXXX");
        assert_non_null(mkdtemp(e->dir));
        snprintf(e->sock, sizeof(e->sock), "%s/s.sock", e->dir);
        assert_int_equal(lg_http_server_listen_unix(e->srv, e->sock, &err), 0);
        assert_int_equal(lg_http_client_new(&e->loop, ccfg, &e->cl, &err), 0);
        snprintf(e->addr, sizeof(e->addr), "127.0.0.1:%d", e->port);
        snprintf(e->uaddr, sizeof(e->uaddr), "unix:%s", e->sock);
        assert_int_equal(lg_http_upstream_new(e->cl, e->addr, &e->tcp, &err), 0);
        assert_int_equal(lg_http_upstream_new(e->cl, e->uaddr, &e->unx, &err), 0);
}

static void on_srv_closed(void *ud) { ((struct env *) ud)->srv_closed = true; }
static void on_cl_closed(void *ud) { ((struct env *) ud)->cl_closed = true; }

static void env_stop(struct env *e) {
        if (!e->cl_closed)
                lg_http_client_close(e->cl, on_cl_closed, e);
        lg_http_server_close(e->srv, on_srv_closed, e);
        lg_http_server_close(e->srv, on_srv_closed, e); /* abort what is left */
        uv_run(&e->loop, UV_RUN_DEFAULT);
        assert_true(e->srv_closed);
        assert_true(e->cl_closed);
        assert_int_equal(uv_loop_close(&e->loop), 0);
        assert_int_equal(app_outstanding(), 0);
        assert_int_equal(access(e->sock, F_OK), -1);
        rmdir(e->dir);
}

/* Run the loop until *flag or the loop runs dry. */
static void run_until(struct env *e, const bool *flag) {
        while (!*flag)
                if (uv_run(&e->loop, UV_RUN_ONCE) == 0 && !*flag)
                        fail_msg("loop ran dry");
}

/* A call and what came back. */
struct res {
        struct env *e;
        bool done, got_response;
        int err, status;
        int64_t cl;
        char *body;
        size_t len;
        char ctype[128];
        char conn_hdr[64];
        char errmsg[256];
        int pause_every, ndata;
        uv_timer_t resume;
        struct lg_http_call *call;
        int writes_done;
        int cancel_after_bytes; /* > 0: cancel once this much arrived */
        bool canceled;
};

static void res_on_response(struct lg_http_call *call, void *ud) {
        struct res *r = ud;
        r->got_response = true;
        r->status = lg_http_call_status(call);
        r->cl = lg_http_call_content_length(call);
        const char *ct = lg_http_call_header(call, "content-type");
        snprintf(r->ctype, sizeof(r->ctype), "%s", ct ? ct : "");
        const char *c = lg_http_call_header(call, "CONNECTION");
        snprintf(r->conn_hdr, sizeof(r->conn_hdr), "%s", c ? c : "");
        const struct lg_http_header *h;
        size_t n = lg_http_call_headers(call, &h);
        assert_true(n >= 1);
}

static void res_resume(uv_timer_t *t) {
        struct res *r = t->data;
        lg_http_call_resume(r->call);
}

static void res_on_data(struct lg_http_call *call, const char *data, size_t len, void *ud) {
        struct res *r = ud;
        char *n = realloc(r->body, r->len + len + 1);
        assert_non_null(n);
        r->body = n;
        memcpy(r->body + r->len, data, len);
        r->len += len;
        r->body[r->len] = '\0';
        r->ndata++;
        if (r->cancel_after_bytes > 0 && r->len >= (size_t) r->cancel_after_bytes) {
                r->canceled = true;
                r->done = true;
                lg_http_call_cancel(call);
                return;
        }
        if (r->pause_every && r->ndata % r->pause_every == 0) {
                lg_http_call_pause(call);
                uv_timer_start(&r->resume, res_resume, 1, 0);
        }
}

static void res_on_done(struct lg_http_call *call, int err, void *ud) {
        struct res *r = ud;
        r->done = true;
        r->err = err;
        r->status = lg_http_call_status(call);
        snprintf(r->errmsg, sizeof(r->errmsg), "%s", lg_http_call_error(call));
        if (err == 0) {
                /* Headers stay readable until on_done returns. */
                const char *ct = lg_http_call_header(call, "content-type");
                assert_string_equal(ct ? ct : "", r->ctype);
        }
}

static const struct lg_http_call_ops res_ops = {res_on_response, res_on_data, res_on_done};

static void res_init(struct res *r, struct env *e) {
        memset(r, 0, sizeof(*r));
        r->e = e;
        uv_timer_init(&e->loop, &r->resume);
        r->resume.data = r;
}

static void res_free(struct res *r) {
        uv_close((uv_handle_t *) &r->resume, NULL);
        uv_run(&r->e->loop, UV_RUN_NOWAIT);
        free(r->body);
        r->body = NULL;
}

static void count_write(void *ud, int status) {
        struct res *r = ud;
        (void) status;
        r->writes_done++;
}

/* Start a call; the body goes in pieces of `piece` bytes, zero copy. */
static struct lg_http_call *start_call(struct lg_http_upstream *up, struct res *r, const char *method,
                                       const char *target, const struct lg_http_header *h, size_t nh,
                                       const char *body, size_t len, bool chunked, size_t piece) {
        struct lg_http_call *call;
        int64_t bl = chunked ? -1 : (int64_t) len;
        assert_int_equal(lg_http_call_start(up, method, target, h, nh, bl, &res_ops, r, &call), 0);
        r->call = call;
        for (size_t off = 0; off < len;) {
                size_t n = len - off < piece ? len - off : piece;
                assert_int_equal(lg_http_call_write(call, body + off, n, count_write, r), 0);
                off += n;
        }
        if (chunked || len > 0)
                assert_int_equal(lg_http_call_end(call), 0);
        return call;
}

/* A fresh result, the whole call, and its end. */
static void do_call(struct env *e, struct lg_http_upstream *up, struct res *r, const char *method, const char *target,
                    const char *body, size_t len, bool chunked) {
        res_init(r, e);
        start_call(up, r, method, target, NULL, 0, body, len, chunked, 100000);
        run_until(r->e, &r->done);
}

static char *make_pattern(size_t n) {
        char *b = malloc(n + 1);
        assert_non_null(b);
        for (size_t i = 0; i < n; i++)
                b[i] = pattern_byte(i);
        b[n] = '\0';
        return b;
}

static void test_hello(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        struct lg_http_upstream *ups[] = {e.tcp, e.unx};
        for (size_t i = 0; i < 2; i++) {
                struct res r;
                do_call(&e, ups[i], &r, "GET", "/hello", NULL, 0, false);
                assert_int_equal(r.err, 0);
                assert_int_equal(r.status, 200);
                assert_int_equal(r.cl, 5);
                assert_string_equal(r.body, "hello");
                assert_string_equal(r.ctype, "text/plain");
                res_free(&r);
        }
        struct res r;
        do_call(&e, e.tcp, &r, "GET", "/nope", NULL, 0, false);
        assert_int_equal(r.status, 404);
        assert_string_equal(r.body, "{\"error\":{\"code\":\"NotFound\",\"message\":\"no route for /nope\"}}");
        assert_string_equal(r.ctype, "application/json");
        res_free(&r);
        env_stop(&e);
}

static void test_echo_buffered(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        static const size_t sizes[] = {0, 1, 1000, 100000, 3 << 20};
        for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
                for (int chunked = 0; chunked < 2; chunked++)
                        for (int u = 0; u < 2; u++) {
                                char *body = make_pattern(sizes[i]);
                                struct res r;
                                do_call(&e, u ? e.unx : e.tcp, &r, "POST", "/echo", body, sizes[i], chunked);
                                assert_int_equal(r.err, 0);
                                assert_int_equal(r.status, 200);
                                assert_int_equal(r.len, sizes[i]);
                                assert_true(sizes[i] == 0 || memcmp(r.body, body, sizes[i]) == 0);
                                assert_int_equal(r.writes_done, (int) ((sizes[i] + 99999) / 100000));
                                res_free(&r);
                                free(body);
                        }
        env_stop(&e);
}

/* The proxy pattern: server streams the body back with pause/write/resume,
 * the client pauses now and then; several MB, chunked and with a length. */
static void test_stream_echo(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        size_t n = 5 << 20;
        char *body = make_pattern(n);
        for (int chunked = 0; chunked < 2; chunked++) {
                struct res r;
                res_init(&r, &e);
                r.pause_every = 3;
                start_call(chunked ? e.unx : e.tcp, &r, "PUT", "/stream-echo", NULL, 0, body, n, chunked, 65536);
                run_until(&e, &r.done);
                assert_int_equal(r.err, 0);
                assert_int_equal(r.status, 200);
                assert_int_equal(r.cl, chunked ? -1 : (int64_t) n);
                assert_int_equal(r.len, n);
                assert_memory_equal(r.body, body, n);
                res_free(&r);
        }
        /* Streamed upload counted by the handler. */
        struct res r;
        res_init(&r, &e);
        start_call(e.tcp, &r, "POST", "/upload", NULL, 0, body, n, true, 1 << 20);
        run_until(&e, &r.done);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "5242880");
        res_free(&r);
        /* Over the handler's limit: 413 from the server, abort callback. */
        int aborts = atomic_load(&app_stats.aborts);
        res_init(&r, &e);
        start_call(e.tcp, &r, "POST", "/upload?limit=1000", NULL, 0, body, 100000, false, 100000);
        run_until(&e, &r.done);
        assert_int_equal(r.status, 413);
        assert_string_equal(r.body, "{\"error\":{\"code\":\"TooLarge\",\"message\":\"request body exceeds 1000 bytes\"}}");
        res_free(&r);
        while (atomic_load(&app_stats.aborts) == aborts)
                uv_run(&e.loop, UV_RUN_ONCE);
        assert_int_equal(atomic_load(&app_stats.last_abort_reason), -EFBIG);
        /* Rejected without reading the body; the connection is not reused. */
        res_init(&r, &e);
        start_call(e.tcp, &r, "POST", "/stream-reject", NULL, 0, body, 2 << 20, false, 1 << 20);
        run_until(&e, &r.done);
        assert_int_equal(r.status, 403);
        res_free(&r);
        free(body);
        env_stop(&e);
}

static void test_download(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        struct res r;
        res_init(&r, &e);
        r.pause_every = 5;
        start_call(e.tcp, &r, "GET", "/big?n=6000000", NULL, 0, NULL, 0, false, 1);
        run_until(&e, &r.done);
        assert_int_equal(r.err, 0);
        assert_int_equal(r.cl, -1);
        assert_int_equal(r.len, 6000000);
        char *want = make_pattern(6000000);
        assert_memory_equal(r.body, want, 6000000);
        res_free(&r);
        do_call(&e, e.unx, &r, "GET", "/big-cl?n=1048576", NULL, 0, false);
        assert_int_equal(r.err, 0);
        assert_int_equal(r.cl, 1048576);
        assert_int_equal(r.len, 1048576);
        assert_memory_equal(r.body, want, 1048576);
        res_free(&r);
        /* HEAD: a length, no body. */
        do_call(&e, e.tcp, &r, "HEAD", "/hello", NULL, 0, false);
        assert_int_equal(r.err, 0);
        assert_int_equal(r.cl, 5);
        assert_int_equal(r.len, 0);
        res_free(&r);
        free(want);
        env_stop(&e);
}

/* Zero-copy response writes (the router's): one the socket takes whole
 * returns 1, so that a proxy need not pause its source, and still calls back
 * from the loop; callbacks run in the order of the writes, also across
 * writes that went out at once and writes that were queued. */
static void test_zero_copy_at_once(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        struct res r;
        for (int t = 0; t < 2; t++) {
                atomic_store(&app_stats.zc_at_once, 0);
                atomic_store(&app_stats.zc_queued, 0);
                do_call(&e, t ? e.unx : e.tcp, &r, "GET", "/zc-order", NULL, 0, false);
                assert_int_equal(r.err, 0);
                assert_int_equal(r.len, 5 * 10 + 4 * (1 << 20));
                assert_memory_equal(r.body, "0123456789012345678901234567890123456789", 30);
                char *want = make_pattern(1 << 20);
                for (int i = 0; i < 4; i++)
                        assert_memory_equal(r.body + 30 + ((size_t) i << 20), want, 1 << 20);
                assert_memory_equal(r.body + 30 + (4u << 20), "01234567890123456789", 20);
                free(want);
                res_free(&r);
                /* The first three go out at once into an empty socket; 4 MiB
                 * do not: what follows them is queued. */
                assert_int_equal(atomic_load(&app_stats.zc_at_once) >= 3, 1);
                assert_int_equal(atomic_load(&app_stats.zc_at_once) + atomic_load(&app_stats.zc_queued), 9);
                assert_int_equal(atomic_load(&app_stats.zc_inside), 0);
                assert_int_equal(atomic_load(&app_stats.zc_out_of_order), 0);
        }
        env_stop(&e);
}

static void test_keepalive_reuse(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        char first[128] = "";
        for (int i = 0; i < 20; i++) {
                struct res r;
                do_call(&e, e.tcp, &r, i % 2 ? "GET" : "POST", "/peer", NULL, 0, false);
                assert_int_equal(r.err, 0);
                if (i == 0)
                        snprintf(first, sizeof(first), "%s", r.body);
                /* The same client port every time: one accepted connection. */
                assert_string_equal(r.body, first);
                res_free(&r);
        }
        struct lg_http_upstream_stats st;
        lg_http_upstream_stats(e.tcp, &st);
        assert_int_equal(st.connects, 1);
        assert_int_equal(st.reuses, 19);
        assert_int_equal(st.idle, 1);
        assert_int_equal(st.active, 0);
        assert_int_equal(lg_http_server_connections(e.srv), 1);
        env_stop(&e);
}

static void test_concurrent(void **state) {
        (void) state;
        struct lg_http_client_config ccfg = {.max_idle = 16};
        struct env e;
        env_start(&e, NULL, &ccfg);
        enum { N = 64 };
        for (int round = 0; round < 2; round++) {
                static struct res rs[N];
                static char bodies[N][32];
                for (int i = 0; i < N; i++) {
                        res_init(&rs[i], &e);
                        int n = snprintf(bodies[i], sizeof(bodies[i]), "body %d.%d", round, i);
                        start_call(i % 2 ? e.unx : e.tcp, &rs[i], "POST", "/echo", NULL, 0, bodies[i], (size_t) n,
                                   i % 3 == 0, 1000);
                }
                for (int i = 0; i < N; i++) {
                        run_until(&e, &rs[i].done);
                        assert_int_equal(rs[i].err, 0);
                        assert_int_equal(rs[i].status, 200);
                        assert_string_equal(rs[i].body, bodies[i]);
                        res_free(&rs[i]);
                }
        }
        struct lg_http_upstream_stats st;
        lg_http_upstream_stats(e.tcp, &st);
        assert_int_equal(st.active, 0);
        assert_true(st.idle <= 16);
        assert_true(st.connects <= 32 + 32 - 16);
        assert_true(st.reuses >= 16);
        env_stop(&e);
}

static void test_held(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        struct res r[3];
        for (int i = 0; i < 3; i++) {
                res_init(&r[i], &e);
                start_call(e.tcp, &r[i], "GET", i == 1 ? "/hold?ms=50" : "/hold?ms=1", NULL, 0, NULL, 0, false, 1);
        }
        for (int i = 0; i < 3; i++) {
                run_until(&e, &r[i].done);
                assert_int_equal(r[i].err, 0);
                assert_string_equal(r[i].body, "held");
                res_free(&r[i]);
        }
        env_stop(&e);
}

static void run_until_count(struct env *e, atomic_int *v, int want) {
        while (atomic_load(v) < want)
                if (uv_run(&e->loop, UV_RUN_ONCE) == 0)
                        fail_msg("loop ran dry");
}

static void test_client_abort(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        /* A held request whose client goes away. */
        int aborts = atomic_load(&app_stats.aborts);
        int reqs = atomic_load(&app_stats.requests);
        struct res r;
        res_init(&r, &e);
        struct lg_http_call *call = start_call(e.tcp, &r, "GET", "/hang", NULL, 0, NULL, 0, false, 1);
        run_until_count(&e, &app_stats.requests, reqs + 1);
        assert_int_equal(app_outstanding(), 1);
        lg_http_call_cancel(call);
        run_until_count(&e, &app_stats.aborts, aborts + 1);
        assert_int_equal(atomic_load(&app_stats.last_abort_reason), -ECONNRESET);
        assert_int_equal(app_outstanding(), 0);
        assert_false(r.done);
        res_free(&r);
        /* A long streaming response (logs --follow) whose client goes away. */
        res_init(&r, &e);
        r.cancel_after_bytes = 40;
        start_call(e.unx, &r, "GET", "/follow", NULL, 0, NULL, 0, false, 1);
        run_until(&e, &r.done);
        assert_true(r.canceled);
        assert_int_equal(r.status, 200);
        run_until_count(&e, &app_stats.aborts, aborts + 2);
        assert_int_equal(app_outstanding(), 0);
        res_free(&r);
        env_stop(&e);
}

static void test_upstream_errors(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        struct lg_error err = {0};
        /* Connection refused: a port nobody listens on. */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        socklen_t al = sizeof(a);
        getsockname(fd, (struct sockaddr *) &a, &al);
        close(fd);
        char addr[64];
        snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(a.sin_port));
        struct lg_http_upstream *dead, *missing;
        assert_int_equal(lg_http_upstream_new(e.cl, addr, &dead, &err), 0);
        char path[256];
        snprintf(path, sizeof(path), "%s/missing.sock", e.dir);
        assert_int_equal(lg_http_upstream_new(e.cl, path, &missing, &err), 0);
        struct lg_http_upstream *ups[] = {dead, missing};
        for (int i = 0; i < 2; i++) {
                struct res r;
                do_call(&e, ups[i], &r, "POST", "/echo", "abc", 3, i == 1);
                assert_int_equal(r.err, -ECONNREFUSED);
                assert_int_equal(r.status, 0);
                assert_int_equal(r.writes_done, 1); /* before on_done */
                assert_non_null(strstr(r.errmsg, "connect"));
                res_free(&r);
        }
        lg_http_upstream_free(dead);
        lg_http_upstream_free(missing);

        /* Closed before any response. */
        struct res r;
        do_call(&e, e.tcp, &r, "GET", "/abort-now", NULL, 0, false);
        assert_int_equal(r.err, -ECONNRESET);
        assert_int_equal(r.status, 0);
        res_free(&r);
        /* Closed in the middle of the response. */
        do_call(&e, e.unx, &r, "GET", "/abort-mid", NULL, 0, false);
        assert_int_equal(r.err, -ECONNRESET);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.len, 10);
        assert_non_null(strstr(r.errmsg, "middle"));
        res_free(&r);
        /* Timeout; the server sees the client go. */
        int aborts = atomic_load(&app_stats.aborts);
        res_init(&r, &e);
        struct lg_http_call *call = start_call(e.tcp, &r, "GET", "/hang", NULL, 0, NULL, 0, false, 1);
        lg_http_call_set_timeout(call, 50);
        run_until(&e, &r.done);
        assert_int_equal(r.err, -ETIMEDOUT);
        res_free(&r);
        run_until_count(&e, &app_stats.aborts, aborts + 1);
        /* Still fine afterwards. */
        do_call(&e, e.tcp, &r, "GET", "/hello", NULL, 0, false);
        assert_int_equal(r.err, 0);
        res_free(&r);
        env_stop(&e);
}

/* A pooled connection the upstream closes when reused: GET is retried on a
 * new connection, a POST is not. */
static void test_stale_retry(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        struct res r;
        do_call(&e, e.tcp, &r, "GET", "/flaky", NULL, 0, false);
        assert_string_equal(r.body, "fresh");
        res_free(&r);
        do_call(&e, e.tcp, &r, "GET", "/flaky", NULL, 0, false);
        assert_int_equal(r.err, 0);
        assert_string_equal(r.body, "fresh");
        res_free(&r);
        struct lg_http_upstream_stats st;
        lg_http_upstream_stats(e.tcp, &st);
        assert_int_equal(st.connects, 2);
        assert_int_equal(st.reuses, 1);
        do_call(&e, e.tcp, &r, "POST", "/flaky", "x", 1, false);
        assert_int_equal(r.err, -ECONNRESET);
        res_free(&r);
        env_stop(&e);
}

static void test_client_close_inflight(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        struct res r;
        res_init(&r, &e);
        int reqs = atomic_load(&app_stats.requests);
        start_call(e.tcp, &r, "GET", "/hang", NULL, 0, NULL, 0, false, 1);
        struct res r2;
        res_init(&r2, &e);
        struct lg_http_call *c2;
        /* Still connecting when the client closes. */
        assert_int_equal(lg_http_call_start(e.unx, "POST", "/echo", NULL, 0, 10, &res_ops, &r2, &c2), 0);
        assert_int_equal(lg_http_call_write(c2, "0123", 4, count_write, &r2), 0);
        run_until_count(&e, &app_stats.requests, reqs + 1);
        lg_http_client_close(e.cl, on_cl_closed, &e);
        run_until(&e, &r.done);
        run_until(&e, &r2.done);
        assert_int_equal(r.err, -ECANCELED);
        assert_int_equal(r2.err, -ECANCELED);
        assert_int_equal(r2.writes_done, 1);
        run_until(&e, &e.cl_closed);
        res_free(&r);
        res_free(&r2);
        env_stop(&e);
}

static void test_graceful_close(void **state) {
        (void) state;
        struct env e;
        env_start(&e, NULL, NULL);
        /* An idle keep-alive connection and a held request. */
        struct res r;
        do_call(&e, e.unx, &r, "GET", "/hello", NULL, 0, false);
        res_free(&r);
        int reqs = atomic_load(&app_stats.requests);
        res_init(&r, &e);
        start_call(e.tcp, &r, "GET", "/hold?ms=30", NULL, 0, NULL, 0, false, 1);
        run_until_count(&e, &app_stats.requests, reqs + 1);
        lg_http_server_close(e.srv, on_srv_closed, &e);
        run_until(&e, &r.done);
        assert_int_equal(r.err, 0);
        assert_string_equal(r.body, "held");
        assert_string_equal(r.conn_hdr, "close");
        res_free(&r);
        run_until(&e, &e.srv_closed);
        /* Nobody listens any more. */
        do_call(&e, e.tcp, &r, "GET", "/hello", NULL, 0, false);
        assert_int_equal(r.err, -ECONNREFUSED);
        res_free(&r);
        lg_http_client_close(e.cl, on_cl_closed, &e);
        uv_run(&e.loop, UV_RUN_DEFAULT);
        assert_true(e.cl_closed);
        assert_int_equal(uv_loop_close(&e.loop), 0);
        rmdir(e.dir);

        /* A request that never ends: the second close aborts it. */
        env_start(&e, NULL, NULL);
        int aborts = atomic_load(&app_stats.aborts);
        reqs = atomic_load(&app_stats.requests);
        res_init(&r, &e);
        start_call(e.tcp, &r, "GET", "/hang", NULL, 0, NULL, 0, false, 1);
        run_until_count(&e, &app_stats.requests, reqs + 1);
        lg_http_server_close(e.srv, on_srv_closed, &e);
        for (int i = 0; i < 20; i++)
                uv_run(&e.loop, UV_RUN_NOWAIT);
        assert_false(e.srv_closed);
        lg_http_server_close(e.srv, on_srv_closed, &e);
        run_until(&e, &e.srv_closed);
        assert_int_equal(atomic_load(&app_stats.aborts), aborts + 1);
        assert_int_equal(atomic_load(&app_stats.last_abort_reason), -ECANCELED);
        run_until(&e, &r.done);
        assert_int_equal(r.err, -ECONNRESET);
        res_free(&r);
        lg_http_client_close(e.cl, on_cl_closed, &e);
        uv_run(&e.loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&e.loop), 0);
        rmdir(e.dir);
}

static void test_helpers(void **state) {
        (void) state;
        char out[64];
        assert_int_equal(lg_http_pct_decode("a%2Fb+c", 7, out, false), 5);
        assert_string_equal(out, "a/b+c");
        assert_int_equal(lg_http_pct_decode("a%2Fb+c", 7, out, true), 5);
        assert_string_equal(out, "a/b c");
        assert_int_equal(lg_http_pct_decode("%zz", 3, out, false), -EINVAL);
        assert_int_equal(lg_http_pct_decode("%4", 2, out, false), -EINVAL);
        assert_int_equal(lg_http_pct_decode("%", 1, out, false), -EINVAL);
        assert_int_equal(lg_http_pct_decode("a%00", 4, out, false), -EINVAL);
        char j[128];
        lg_http_error_json(j, sizeof(j), "Bad", "say \"hi\"\n\\");
        assert_string_equal(j, "{\"error\":{\"code\":\"Bad\",\"message\":\"say \\\"hi\\\"\\u000a\\\\\"}}");
        lg_http_error_json(j, 40, "Code", "a very long message that does not fit at all");
        assert_true(strlen(j) < 40);
        assert_string_equal(j + strlen(j) - 3, "\"}}");
        struct lg_http_client *cl;
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct lg_error err = {0};
        assert_int_equal(lg_http_client_new(&loop, NULL, &cl, &err), 0);
        struct lg_http_upstream *up;
        static const char *const bad[] = {"", "host", ":80", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:70000",
                                          "example.com:80", "unix:", "1.2.3.4:8x"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                assert_true(lg_http_upstream_new(cl, bad[i], &up, &err) < 0);
        assert_int_equal(lg_http_upstream_new(cl, "[::1]:8080", &up, &err), 0);
        assert_int_equal(lg_http_upstream_new(cl, "localhost:8080", &up, &err), 0);
        struct lg_http_call *call;
        assert_int_equal(lg_http_call_start(up, "G ET", "/", NULL, 0, 0, &res_ops, NULL, &call), -EINVAL);
        assert_int_equal(lg_http_call_start(up, "GET", "/a b", NULL, 0, 0, &res_ops, NULL, &call), -EINVAL);
        const struct lg_http_header evil = {"X", "a\r\nInjected: 1"};
        assert_int_equal(lg_http_call_start(up, "GET", "/", &evil, 1, 0, &res_ops, NULL, &call), -EINVAL);
        lg_http_client_close(cl, NULL, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&loop), 0);
}

/* ------------------------------------------------------------------------
 * The client against a scripted upstream
 * --------------------------------------------------------------------- */

/* A thread that accepts one connection per script entry, reads the request
 * head, writes the canned bytes, then reads until the client closes. */
struct script {
        int lfd, port;
        const char *const *answers;
        const size_t *lens;
        int n;
        pthread_t th;
};

static void *script_thread(void *arg) {
        struct script *sc = arg;
        for (int i = 0; i < sc->n; i++) {
                int fd = accept(sc->lfd, NULL, NULL);
                if (fd < 0)
                        break;
                char buf[65536];
                size_t got = 0;
                while (got < sizeof(buf) - 1) {
                        ssize_t k = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
                        if (k <= 0)
                                break;
                        got += (size_t) k;
                        buf[got] = '\0';
                        if (strstr(buf, "\r\n\r\n"))
                                break;
                }
                size_t len = sc->lens && sc->lens[i] ? sc->lens[i] : strlen(sc->answers[i]);
                (void) !send(fd, sc->answers[i], len, MSG_NOSIGNAL);
                shutdown(fd, SHUT_WR);
                if (i == sc->n - 1) /* the last one reads the body it did not wait for */
                        while (recv(fd, buf, sizeof(buf), 0) > 0)
                                ;
                close(fd);
        }
        return NULL;
}

static void script_start(struct script *sc, const char *const *answers, const size_t *lens, int n) {
        sc->answers = answers;
        sc->lens = lens;
        sc->n = n;
        sc->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_int_equal(bind(sc->lfd, (struct sockaddr *) &a, sizeof(a)), 0);
        assert_int_equal(listen(sc->lfd, 16), 0);
        socklen_t al = sizeof(a);
        getsockname(sc->lfd, (struct sockaddr *) &a, &al);
        sc->port = ntohs(a.sin_port);
        assert_int_equal(pthread_create(&sc->th, NULL, script_thread, sc), 0);
}

static void script_stop(struct script *sc) {
        pthread_join(sc->th, NULL);
        close(sc->lfd);
}

static void test_client_scripted(void **state) {
        (void) state;
        static char bighead[100000];
        memcpy(bighead, "HTTP/1.1 200 OK\r\nX-Big: ", 25);
        memset(bighead + 25, 'x', sizeof(bighead) - 30);
        memcpy(bighead + sizeof(bighead) - 5, "\r\n\r\n", 5);
        static const char *const answers[] = {
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok",
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nclose-delimited body",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\nX-T: 1\r\n\r\n",
                "garbage\r\n\r\n",
                bighead,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!",
        };
        static const size_t lens[] = {0, 0, 0, 0, sizeof(bighead), 0, 0, 0};
        struct script sc;
        script_start(&sc, answers, lens, (int) ARRAY_SIZE(answers));
        struct env e;
        env_start(&e, NULL, NULL);
        char addr[64];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", sc.port);
        struct lg_http_upstream *up = NULL;
        struct lg_error err = {0};
        /* A new upstream (so a new connection) for every answer. */
#define NEXT_UPSTREAM()                                                            \
        do {                                                                       \
                if (up)                                                            \
                        lg_http_upstream_free(up);                                 \
                assert_int_equal(lg_http_upstream_new(e.cl, addr, &up, &err), 0); \
        } while (0)
        struct res r;
        NEXT_UPSTREAM();
        /* 1xx responses are skipped. */
        do_call(&e, up, &r, "GET", "/", NULL, 0, false);
        assert_int_equal(r.err, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "ok");
        res_free(&r);
        NEXT_UPSTREAM();
        do_call(&e, up, &r, "GET", "/", NULL, 0, false);
        assert_int_equal(r.err, 0);
        assert_int_equal(r.cl, -1);
        assert_string_equal(r.body, "close-delimited body");
        res_free(&r);
        NEXT_UPSTREAM();
        do_call(&e, up, &r, "GET", "/", NULL, 0, false);
        assert_int_equal(r.err, 0);
        assert_string_equal(r.body, "ok!!!");
        res_free(&r);
        static const int want[] = {-EPROTO, -EPROTO, -EPROTO, -ECONNRESET};
        for (int i = 0; i < 4; i++) {
                NEXT_UPSTREAM();
                do_call(&e, up, &r, "POST", "/", NULL, 0, false);
                if (r.err != want[i])
                        fail_msg("answer %d: error %d (%s)", 3 + i, r.err, r.errmsg);
                res_free(&r);
        }
        /* Answered while the body is still being written: done with the
         * answer, every write callback before on_done. */
        NEXT_UPSTREAM();
        res_init(&r, &e);
        char *body = make_pattern(1 << 20);
        struct lg_http_call *call;
        assert_int_equal(lg_http_call_start(up, "POST", "/", NULL, 0, 4 << 20, &res_ops, &r, &call), 0);
        assert_int_equal(lg_http_call_write(call, body, 1 << 20, count_write, &r), 0);
        while (!r.got_response)
                uv_run(&e.loop, UV_RUN_ONCE);
        if (!r.done)
                assert_int_equal(lg_http_call_write(call, body, 1 << 20, count_write, &r), 0);
        int issued = r.done ? 1 : 2;
        run_until(&e, &r.done);
        assert_int_equal(r.err, 0);
        assert_int_equal(r.status, 413);
        assert_string_equal(r.body, "big!");
        assert_int_equal(r.writes_done, issued);
        res_free(&r);
        free(body);
        env_stop(&e);
        script_stop(&sc);
}

/* ------------------------------------------------------------------------
 * Raw client against the threaded server
 * --------------------------------------------------------------------- */

static void get(struct raw *c, const char *req, struct raw_resp *resp, int status) {
        assert_int_equal(raw_puts(c, req), 0);
        if (raw_response(c, resp, strncmp(req, "HEAD", 4) == 0) < 0)
                fail_msg("no response to %.60s", req);
        if (resp->status != status)
                fail_msg("status %d, want %d, for %.60s", resp->status, status, req);
}

static void test_raw_keepalive(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {0};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw c;
        struct raw_resp resp;
        assert_int_equal(raw_tcp(&c, h.port), 0);
        for (int i = 0; i < 3; i++) {
                get(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &resp, 200);
                assert_string_equal(resp.body, "hello");
                assert_true(resp.keep_alive);
                assert_non_null(raw_header(&resp, "Date"));
                assert_string_equal(raw_header(&resp, "Content-Length"), "5");
                raw_resp_free(&resp);
        }
        /* HEAD: the length, no body, the connection goes on. */
        get(&c, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n", &resp, 200);
        assert_string_equal(raw_header(&resp, "Content-Length"), "5");
        assert_int_equal(resp.body_len, 0);
        raw_resp_free(&resp);
        /* Pipelined: three requests in one write, answers in order. */
        assert_int_equal(raw_puts(&c, "GET /info/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                                      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                                      "GET /info/3 HTTP/1.1\r\nHost: x\r\n\r\n"),
                         0);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_non_null(strstr(resp.body, "path=/info/1\n"));
        raw_resp_free(&resp);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_string_equal(resp.body, "abc");
        raw_resp_free(&resp);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_non_null(strstr(resp.body, "path=/info/3\n"));
        raw_resp_free(&resp);
        /* Answered without reading a small body: it is dropped and the
         * connection goes on. */
        get(&c, "PUT /stream-reject HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", &resp, 403);
        assert_null(raw_header(&resp, "Connection"));
        raw_resp_free(&resp);
        get(&c, "PUT /stream-reject HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            &resp, 403);
        assert_string_equal(raw_header(&resp, "Connection"), "close");
        raw_resp_free(&resp);
        assert_true(raw_wait_close(&c));
        raw_close(&c);
        assert_int_equal(raw_tcp(&c, h.port), 0);
        /* Connection: close is honoured. */
        get(&c, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &resp, 200);
        assert_string_equal(raw_header(&resp, "Connection"), "close");
        raw_resp_free(&resp);
        assert_true(raw_wait_close(&c));
        raw_close(&c);

        /* HTTP/1.0: close by default, keep-alive on request. */
        assert_int_equal(raw_tcp(&c, h.port), 0);
        get(&c, "GET /hello HTTP/1.0\r\n\r\n", &resp, 200);
        assert_false(resp.keep_alive);
        raw_resp_free(&resp);
        assert_true(raw_wait_close(&c));
        raw_close(&c);
        assert_int_equal(raw_tcp(&c, h.port), 0);
        get(&c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &resp, 200);
        assert_string_equal(raw_header(&resp, "Connection"), "keep-alive");
        raw_resp_free(&resp);
        /* A streamed response of unknown length to HTTP/1.0 is close-delimited. */
        get(&c, "GET /big?n=100000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &resp, 200);
        assert_false(resp.chunked);
        assert_int_equal(resp.body_len, 100000);
        assert_null(raw_header(&resp, "Transfer-Encoding"));
        raw_resp_free(&resp);
        raw_close(&c);

        /* Over the Unix socket. */
        assert_int_equal(raw_unix(&c, h.sock), 0);
        get(&c, "GET /peer HTTP/1.1\r\nHost: x\r\n\r\n", &resp, 200);
        assert_string_equal(resp.body, "unix");
        raw_resp_free(&resp);
        raw_close(&c);
        harness_stop(&h, false);
}

static void test_raw_parsing(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {0};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw c;
        struct raw_resp resp;
        assert_int_equal(raw_tcp(&c, h.port), 0);
        get(&c,
            "GET /info/a%2Fb/c%20d/?x=1&y=a+b&z&w=%41&&e= HTTP/1.1\r\nHost: x\r\nx-TEST:  spaced value \r\n"
            "X-Other: 1\r\n\r\n",
            &resp, 200);
        assert_non_null(strstr(resp.body, "method=GET\n"));
        assert_non_null(strstr(resp.body, "path=/info/a%2Fb/c%20d/\n"));
        assert_non_null(strstr(resp.body, "query=x=1&y=a+b&z&w=%41&&e=\n"));
        assert_non_null(strstr(resp.body, "segs=4:info|a/b|c d|\n"));
        assert_non_null(strstr(resp.body, "params=5:x=1|y=a b|z=|w=A|e=\n"));
        assert_non_null(strstr(resp.body, "x-test=spaced value\n"));
        assert_non_null(strstr(resp.body, "version=11\n"));
        assert_non_null(strstr(resp.body, "headers=3\n"));
        raw_resp_free(&resp);
        get(&c, "GET /info/%zz?a=%zz HTTP/1.1\r\nHost: x\r\n\r\n", &resp, 200);
        assert_non_null(strstr(resp.body, "segs=-22\n"));
        assert_non_null(strstr(resp.body, "params=-22\n"));
        raw_resp_free(&resp);
        get(&c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &resp, 404);
        raw_resp_free(&resp);
        get(&c, "GET http://example.com/info/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", &resp, 200);
        assert_non_null(strstr(resp.body, "path=/info/abs\n"));
        assert_non_null(strstr(resp.body, "params=1:q=1\n"));
        raw_resp_free(&resp);
        /* Chunked request body with extensions and a trailer. */
        get(&c,
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n",
            &resp, 200);
        assert_string_equal(resp.body, "abc0123456789abcdef");
        raw_resp_free(&resp);
        get(&c, "POST /info/cl HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            &resp, 200);
        assert_non_null(strstr(resp.body, "cl=-1\nbody=5\n"));
        raw_resp_free(&resp);
        raw_close(&c);
        harness_stop(&h, false);
}

static void test_raw_expect(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {0};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw c;
        struct raw_resp resp;
        assert_int_equal(raw_tcp(&c, h.port), 0);
        /* Buffered: 100 at once, then the answer. */
        get(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", &resp, 100);
        raw_resp_free(&resp);
        assert_int_equal(raw_puts(&c, "hello"), 0);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_int_equal(resp.status, 200);
        assert_string_equal(resp.body, "hello");
        raw_resp_free(&resp);
        /* Streamed: 100 when the handler reads. */
        get(&c, "PUT /stream-echo HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", &resp,
            100);
        raw_resp_free(&resp);
        assert_int_equal(raw_puts(&c, "xyz"), 0);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_string_equal(resp.body, "xyz");
        raw_resp_free(&resp);
        /* Rejected before reading: no 100, final answer, connection closed. */
        get(&c, "PUT /stream-reject HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            &resp, 403);
        assert_string_equal(raw_header(&resp, "Connection"), "close");
        raw_resp_free(&resp);
        assert_true(raw_wait_close(&c));
        raw_close(&c);
        /* Too large: 413 at once. */
        assert_int_equal(raw_tcp(&c, h.port), 0);
        get(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 8388609\r\n\r\n", &resp,
            413);
        assert_string_equal(resp.body, "{\"error\":{\"code\":\"TooLarge\",\"message\":\"request body exceeds "
                                       "8388608 bytes\"}}");
        raw_resp_free(&resp);
        assert_true(raw_wait_close(&c));
        raw_close(&c);
        /* Unknown expectation. */
        assert_int_equal(raw_tcp(&c, h.port), 0);
        get(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n", &resp, 417);
        raw_resp_free(&resp);
        raw_close(&c);
        harness_stop(&h, false);
}

/* Limits: 413 while the client is still sending, 431, 414, and the JSON. */
static void test_raw_limits(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {.max_body = 100000};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw c;
        struct raw_resp resp;
        /* Content-Length over the limit, body under way: 413, then close. */
        assert_int_equal(raw_tcp(&c, h.port), 0);
        assert_int_equal(raw_puts(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"), 0);
        char *junk = make_pattern(300000);
        (void) raw_write(&c, junk, 300000); /* may fail once the server closed */
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_int_equal(resp.status, 413);
        assert_string_equal(resp.body,
                            "{\"error\":{\"code\":\"TooLarge\",\"message\":\"request body exceeds 100000 bytes\"}}");
        assert_string_equal(raw_header(&resp, "Content-Type"), "application/json");
        raw_resp_free(&resp);
        raw_close(&c);
        /* Chunked over the limit. */
        assert_int_equal(raw_tcp(&c, h.port), 0);
        assert_int_equal(raw_puts(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"), 0);
        for (int i = 0; i < 5; i++) {
                char line[32];
                snprintf(line, sizeof(line), "%x\r\n", 30000);
                if (raw_puts(&c, line) < 0 || raw_write(&c, junk, 30000) < 0 || raw_puts(&c, "\r\n") < 0)
                        break;
        }
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_int_equal(resp.status, 413);
        raw_resp_free(&resp);
        raw_close(&c);
        free(junk);
        /* Headers too large. */
        size_t big = 70000;
        char *req = malloc(big + 200);
        int n = snprintf(req, 200, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: ");
        memset(req + n, 'a', big);
        strcpy(req + n + big, "\r\n\r\n");
        assert_int_equal(raw_tcp(&c, h.port), 0);
        (void) raw_puts(&c, req);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_int_equal(resp.status, 431);
        assert_non_null(strstr(resp.body, "\"code\":\"HeadersTooLarge\""));
        raw_resp_free(&resp);
        raw_close(&c);
        /* Too many headers. */
        char *p = req;
        p += sprintf(p, "GET /hello HTTP/1.1\r\nHost: x\r\n");
        for (int i = 0; i < 120; i++)
                p += sprintf(p, "X-%d: %d\r\n", i, i);
        strcpy(p, "\r\n");
        assert_int_equal(raw_tcp(&c, h.port), 0);
        (void) raw_puts(&c, req);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_int_equal(resp.status, 431);
        raw_resp_free(&resp);
        raw_close(&c);
        /* Target too long. */
        n = snprintf(req, 200, "GET /");
        memset(req + n, 'a', big);
        strcpy(req + n + big, " HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(raw_tcp(&c, h.port), 0);
        (void) raw_puts(&c, req);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_int_equal(resp.status, 414);
        raw_resp_free(&resp);
        raw_close(&c);
        free(req);
        harness_stop(&h, false);
}

static void test_raw_timeouts(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {
                .header_timeout_ms = 150, .idle_timeout_ms = 150, .body_timeout_ms = 150, .write_timeout_ms = 150};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw c;
        struct raw_resp resp;
        /* Partial head: 408 and close. */
        assert_int_equal(raw_tcp(&c, h.port), 0);
        assert_int_equal(raw_puts(&c, "GET /hello HTTP/1.1\r\nHost"), 0);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_int_equal(resp.status, 408);
        assert_non_null(strstr(resp.body, "\"code\":\"RequestTimeout\""));
        raw_resp_free(&resp);
        assert_true(raw_wait_close(&c));
        raw_close(&c);
        /* Slowloris: one byte every 20 ms never completes the head. */
        assert_int_equal(raw_tcp(&c, h.port), 0);
        const char *slow = "GET /hello HTTP/1.1\r\nHost: x\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        size_t sent = 0;
        for (; slow[sent]; sent++) {
                if (raw_write(&c, slow + sent, 1) < 0)
                        break;
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
                char peek;
                if (recv(c.fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
                        break;
        }
        assert_true(slow[sent] != '\0');
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_int_equal(resp.status, 408);
        raw_resp_free(&resp);
        raw_close(&c);
        /* Idle keep-alive connection closed. */
        assert_int_equal(raw_tcp(&c, h.port), 0);
        get(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &resp, 200);
        raw_resp_free(&resp);
        assert_true(raw_wait_close(&c));
        raw_close(&c);
        /* A body that stops coming. */
        assert_int_equal(raw_tcp(&c, h.port), 0);
        assert_int_equal(raw_puts(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"), 0);
        assert_int_equal(raw_response(&c, &resp, false), 0);
        assert_int_equal(resp.status, 408);
        raw_resp_free(&resp);
        raw_close(&c);
        /* A client that does not read: the write timeout cuts it (the
         * handler ends the request on its failed write or abort callback). */
        int ended = atomic_load(&app_stats.ended);
        assert_int_equal(raw_tcp_rcvbuf(&c, h.port, 4096), 0);
        assert_int_equal(raw_puts(&c, "GET /big?n=100000000 HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
        for (int i = 0; i < 1000 && atomic_load(&app_stats.ended) == ended; i++) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        assert_int_equal(atomic_load(&app_stats.ended), ended + 1);
        assert_int_equal(app_outstanding(), 0);
        raw_close(&c);
        harness_stop(&h, false);
}

/* Three authenticated connections fill the server: nothing can be closed to
 * make room (test-http-limits.c has the unauthenticated side). */
static void test_raw_max_connections(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {.max_connections = 3};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw c[3], extra;
        struct raw_resp resp;
        for (int i = 0; i < 3; i++) {
                assert_int_equal(raw_tcp(&c[i], h.port), 0);
                get(&c[i], "GET /auth HTTP/1.1\r\nHost: x\r\n\r\n", &resp, 200);
                raw_resp_free(&resp);
        }
        assert_int_equal(raw_tcp(&extra, h.port), 0);
        assert_int_equal(raw_response(&extra, &resp, false), 0);
        assert_int_equal(resp.status, 503);
        assert_non_null(strstr(resp.body, "TooManyConnections"));
        raw_resp_free(&resp);
        assert_true(raw_wait_close(&extra));
        raw_close(&extra);
        /* Once one goes, another gets in (the server may need a moment). */
        raw_close(&c[0]);
        bool ok = false;
        for (int i = 0; i < 2000 && !ok; i++) {
                assert_int_equal(raw_tcp(&extra, h.port), 0);
                assert_int_equal(raw_puts(&extra, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
                if (raw_response(&extra, &resp, false) == 0 && resp.status == 200)
                        ok = true;
                raw_resp_free(&resp);
                raw_close(&extra);
                struct timespec ts = {0, 5 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        assert_true(ok);
        raw_close(&c[1]);
        raw_close(&c[2]);
        harness_stop(&h, false);
}

/* The server closes while a client is in the middle of a request head and
 * another holds a request: the first is dropped, the second answered. */
static void test_raw_close_with_clients(void **state) {
        (void) state;
        struct lg_http_server_config cfg = {0};
        struct harness h;
        harness_start(&h, &cfg);
        struct raw a, b;
        struct raw_resp resp;
        assert_int_equal(raw_tcp(&a, h.port), 0);
        assert_int_equal(raw_puts(&a, "GET /hel"), 0);
        assert_int_equal(raw_tcp(&b, h.port), 0);
        assert_int_equal(raw_puts(&b, "GET /hold?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
        while (app_outstanding() == 0) {
                struct timespec ts = {0, 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        harness_close(&h);
        assert_true(raw_wait_close(&a));
        assert_int_equal(raw_response(&b, &resp, false), 0);
        assert_int_equal(resp.status, 200);
        assert_string_equal(resp.body, "held");
        assert_string_equal(raw_header(&resp, "Connection"), "close");
        raw_resp_free(&resp);
        assert_true(raw_wait_close(&b));
        raw_close(&a);
        raw_close(&b);
        harness_join(&h);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_helpers),
                cmocka_unit_test(test_hello),
                cmocka_unit_test(test_echo_buffered),
                cmocka_unit_test(test_stream_echo),
                cmocka_unit_test(test_download),
                cmocka_unit_test(test_zero_copy_at_once),
                cmocka_unit_test(test_keepalive_reuse),
                cmocka_unit_test(test_concurrent),
                cmocka_unit_test(test_held),
                cmocka_unit_test(test_client_abort),
                cmocka_unit_test(test_upstream_errors),
                cmocka_unit_test(test_stale_retry),
                cmocka_unit_test(test_client_close_inflight),
                cmocka_unit_test(test_graceful_close),
                cmocka_unit_test(test_client_scripted),
                cmocka_unit_test(test_raw_keepalive),
                cmocka_unit_test(test_raw_parsing),
                cmocka_unit_test(test_raw_expect),
                cmocka_unit_test(test_raw_limits),
                cmocka_unit_test(test_raw_timeouts),
                cmocka_unit_test(test_raw_max_connections),
                cmocka_unit_test(test_raw_close_with_clients),
        };
        if (getenv("HTTP_TEST"))
                cmocka_set_test_filter(getenv("HTTP_TEST"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
