/* Test application, threaded server harness and raw client for the HTTP
 * tests (see test-http-harness.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include "test-http-harness.h"

struct app_stats app_stats;
static atomic_int outstanding;

int app_outstanding(void) { return atomic_load(&outstanding); }

/* ------------------------------------------------------------------------
 * The application
 * --------------------------------------------------------------------- */

static char pattern[1 << 20];
static pthread_once_t pattern_once = PTHREAD_ONCE_INIT;
static void pattern_init(void) {
        for (size_t i = 0; i < sizeof(pattern); i++)
                pattern[i] = pattern_byte(i);
}

/* State of a request the application answers asynchronously; freed when
 * the request is ended and no write callback is pending. */
struct job {
        struct lg_http_request *req;
        uv_loop_t *loop;
        uv_timer_t timer;
        bool has_timer, ended;
        int writes;
        uint64_t n, sent, count;
        char chunk[16384];
};

static void job_free_cb(uv_handle_t *h) { free(h->data); }

static void job_maybe_free(struct job *j) {
        if (!j->ended || j->writes > 0)
                return;
        if (j->has_timer) {
                j->has_timer = false;
                uv_close((uv_handle_t *) &j->timer, job_free_cb);
                return;
        }
        if (!uv_is_closing((uv_handle_t *) &j->timer))
                free(j);
}

static struct job *job_new(struct lg_http_request *req, uv_loop_t *loop) {
        struct job *j = calloc(1, sizeof(*j));
        assert_non_null(j);
        j->req = req;
        j->loop = loop;
        j->timer.data = j;
        atomic_fetch_add(&outstanding, 1);
        return j;
}

/* End the request (once). */
static void job_end(struct job *j, int how) {
        if (j->ended)
                return;
        j->ended = true;
        if (j->has_timer)
                uv_timer_stop(&j->timer);
        if (how == 0)
                lg_http_response_end(j->req);
        else
                lg_http_response_abort(j->req);
        atomic_fetch_add(&app_stats.ended, 1);
        atomic_fetch_sub(&outstanding, 1);
        job_maybe_free(j);
}

static void job_on_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) req;
        struct job *j = ud;
        atomic_fetch_add(&app_stats.aborts, 1);
        atomic_store(&app_stats.last_abort_reason, reason);
        job_end(j, 1);
}

/* /stream-echo */
static void se_written(void *ud, int status) {
        (void) status;
        struct job *j = ud;
        j->writes--;
        if (!j->ended)
                lg_http_request_resume(j->req);
        job_maybe_free(j);
}

static void se_data(struct lg_http_request *req, const char *data, size_t len, void *ud) {
        struct job *j = ud;
        lg_http_request_pause(req);
        j->writes++;
        if (lg_http_response_write(req, data, len, se_written, j) < 0) {
                j->writes--;
                lg_http_request_resume(req);
        }
}

static void se_end(struct lg_http_request *req, void *ud) {
        (void) req;
        job_end(ud, 0);
}

/* /upload */
static void up_data(struct lg_http_request *req, const char *data, size_t len, void *ud) {
        (void) req;
        struct job *j = ud;
        for (size_t i = 0; i < len; i++)
                if (data[i] != pattern_byte(j->count + i)) {
                        j->n = 1; /* corrupt */
                        break;
                }
        j->count += len;
}

static void up_end(struct lg_http_request *req, void *ud) {
        struct job *j = ud;
        char buf[64];
        int n = snprintf(buf, sizeof(buf), "%llu%s", (unsigned long long) j->count, j->n ? " corrupt" : "");
        j->ended = true;
        lg_http_respond(req, 200, NULL, 0, buf, (size_t) n);
        atomic_fetch_add(&app_stats.ended, 1);
        atomic_fetch_sub(&outstanding, 1);
        job_maybe_free(j);
}

/* /big: chunked, alternating copied and zero-copy writes paced by callbacks. */
static void big_next(struct job *j);
static void big_written(void *ud, int status) {
        struct job *j = ud;
        j->writes--;
        if (j->ended) {
                job_maybe_free(j);
                return;
        }
        if (status < 0) {
                job_end(j, 1);
                return;
        }
        big_next(j);
}

static void big_next(struct job *j) {
        while (j->sent < j->n && !j->ended) {
                size_t len = j->n - j->sent < sizeof(j->chunk) ? (size_t) (j->n - j->sent) : sizeof(j->chunk);
                for (size_t i = 0; i < len; i++)
                        j->chunk[i] = pattern_byte(j->sent + i);
                bool zero_copy = (j->count++ % 2) == 0;
                j->sent += len;
                if (zero_copy) {
                        j->writes++;
                        if (lg_http_response_write(j->req, j->chunk, len, big_written, j) < 0) {
                                j->writes--;
                                job_end(j, 1);
                        }
                        return;
                }
                if (lg_http_response_write(j->req, j->chunk, len, NULL, NULL) < 0) {
                        job_end(j, 1);
                        return;
                }
        }
        if (!j->ended)
                job_end(j, 0);
}

/* /big-cl: zero copy from the static pattern. */
static void bigcl_written(void *ud, int status) {
        struct job *j = ud;
        j->writes--;
        if (status < 0 && !j->ended)
                job_end(j, 1);
        else
                job_maybe_free(j);
}

/* /zc-order: each write's callback must come from the loop, after the
 * callbacks of the writes made before it. */
struct zc_write {
        struct job *j;
        int idx;
};

static int zc_next; /* the index whose callback is due (loop thread only) */
static bool zc_in_write;

static void zc_written(void *ud, int status) {
        struct zc_write *w = ud;
        struct job *j = w->j;
        if (zc_in_write)
                atomic_fetch_add(&app_stats.zc_inside, 1);
        if (w->idx != zc_next)
                atomic_fetch_add(&app_stats.zc_out_of_order, 1);
        zc_next = w->idx + 1;
        free(w);
        bigcl_written(j, status);
}

static void zc_order(struct lg_http_request *req, uv_loop_t *loop) {
        static const char small[] = "0123456789";
        static const struct lg_http_header text = {"Content-Type", "text/plain"};
        struct job *j = job_new(req, loop);
        lg_http_request_on_abort(req, job_on_abort, j);
        assert_int_equal(lg_http_response_start(req, 200, &text, 1, 5 * 10 + 4 * (int64_t) sizeof(pattern)), 0);
        zc_next = 0;
        for (int i = 0; i < 9 && !j->ended; i++) {
                struct zc_write *w = calloc(1, sizeof(*w));
                assert_non_null(w);
                *w = (struct zc_write){j, i};
                bool big = i >= 3 && i < 7;
                j->writes++;
                zc_in_write = true;
                int r = lg_http_response_write(req, big ? pattern : small, big ? sizeof(pattern) : 10, zc_written, w);
                zc_in_write = false;
                if (r < 0) {
                        free(w);
                        j->writes--;
                        job_end(j, 1);
                        return;
                }
                atomic_fetch_add(r == 1 ? &app_stats.zc_at_once : &app_stats.zc_queued, 1);
        }
        job_end(j, 0);
}

/* /hold */
static void hold_fire(uv_timer_t *t) {
        struct job *j = t->data;
        if (j->ended)
                return;
        j->ended = true;
        lg_http_respond(j->req, 200, NULL, 0, "held", 4);
        atomic_fetch_add(&app_stats.ended, 1);
        atomic_fetch_sub(&outstanding, 1);
        job_maybe_free(j);
}

/* /follow */
static void follow_tick(uv_timer_t *t) {
        struct job *j = t->data;
        char line[64];
        int n = snprintf(line, sizeof(line), "line %llu\n", (unsigned long long) j->count++);
        if (lg_http_response_write(j->req, line, (size_t) n, NULL, NULL) < 0)
                return; /* the abort callback ends it */
        atomic_fetch_add(&app_stats.follow_lines, 1);
}

static uint64_t param_u64(struct lg_http_request *req, const char *name, uint64_t def) {
        const char *v = lg_http_request_param(req, name);
        return v ? strtoull(v, NULL, 10) : def;
}

static void info(struct lg_http_request *req) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        assert_non_null(f);
        fprintf(f, "method=%s\ntarget=%s\npath=%s\nquery=%s\n", lg_http_request_method(req),
                lg_http_request_target(req), lg_http_request_path(req), lg_http_request_query(req));
        const char *const *segs;
        int n = lg_http_request_segments(req, &segs);
        fprintf(f, "segs=%d", n);
        for (int i = 0; i < n; i++)
                fprintf(f, "%s%s", i ? "|" : ":", segs[i]);
        const struct lg_http_header *ps;
        n = lg_http_request_params(req, &ps);
        fprintf(f, "\nparams=%d", n);
        for (int i = 0; i < n; i++)
                fprintf(f, "%s%s=%s", i ? "|" : ":", ps[i].name, ps[i].value);
        const char *x = lg_http_request_header(req, "X-TEST");
        fprintf(f, "\nx-test=%s\nversion=%d\ncl=%lld\n", x ? x : "(none)", lg_http_request_version(req),
                (long long) lg_http_request_content_length(req));
        size_t blen;
        lg_http_request_body(req, &blen);
        fprintf(f, "body=%zu\nheaders=%zu\n", blen, lg_http_request_headers(req, NULL));
        fclose(f);
        const struct lg_http_header h = {"Content-Type", "text/plain"};
        lg_http_respond(req, 200, &h, 1, buf, len);
        free(buf);
}

static enum lg_http_body_mode app_on_head(struct lg_http_request *req, void *ud) {
        (void) ud;
        const char *p = lg_http_request_path(req);
        if (!strcmp(p, "/stream-echo") || !strcmp(p, "/stream-reject") || !strcmp(p, "/upload"))
                return LG_HTTP_BODY_STREAM;
        return LG_HTTP_BODY_BUFFER;
}

static void app_on_request(struct lg_http_request *req, void *ud) {
        uv_loop_t *loop = ud;
        const char *p = lg_http_request_path(req);
        const struct lg_http_header text = {"Content-Type", "text/plain"};
        atomic_fetch_add(&app_stats.requests, 1);
        pthread_once(&pattern_once, pattern_init);
        if (!strcmp(p, "/hello")) {
                lg_http_respond(req, 200, &text, 1, "hello", 5);
        } else if (!strcmp(p, "/auth")) {
                lg_http_request_set_authenticated(req);
                lg_http_respond(req, 200, &text, 1, "authenticated", 13);
        } else if (!strcmp(p, "/echo")) {
                size_t len;
                const void *b = lg_http_request_body(req, &len);
                const char *ct = lg_http_request_header(req, "content-type");
                const struct lg_http_header h = {"Content-Type", ct ? ct : "application/octet-stream"};
                lg_http_respond(req, 200, &h, 1, b, len);
        } else if (!strcmp(p, "/stream-echo")) {
                struct job *j = job_new(req, loop);
                lg_http_request_on_abort(req, job_on_abort, j);
                int64_t cl = lg_http_request_content_length(req);
                assert_int_equal(lg_http_request_read(req, se_data, se_end, j), 0);
                assert_int_equal(lg_http_response_start(req, 200, NULL, 0, cl), 0);
        } else if (!strcmp(p, "/stream-reject")) {
                lg_http_respond_error(req, 403, "Forbidden", "not you");
        } else if (!strcmp(p, "/upload")) {
                struct job *j = job_new(req, loop);
                lg_http_request_set_body_limit(req, param_u64(req, "limit", UINT64_MAX));
                lg_http_request_on_abort(req, job_on_abort, j);
                if (lg_http_request_read(req, up_data, up_end, j) < 0)
                        return; /* 413 sent; the abort callback ends it */
        } else if (!strcmp(p, "/big")) {
                struct job *j = job_new(req, loop);
                j->n = param_u64(req, "n", 0);
                if (j->n > (16u << 20))
                        j->n = 16u << 20;
                lg_http_request_on_abort(req, job_on_abort, j);
                assert_int_equal(lg_http_response_start(req, 200, &text, 1, -1), 0);
                big_next(j);
        } else if (!strcmp(p, "/big-cl")) {
                struct job *j = job_new(req, loop);
                uint64_t n = param_u64(req, "n", 0);
                if (n > sizeof(pattern))
                        n = sizeof(pattern);
                lg_http_request_on_abort(req, job_on_abort, j);
                assert_int_equal(lg_http_response_start(req, 200, &text, 1, (int64_t) n), 0);
                for (uint64_t off = 0; off < n && !j->ended;) {
                        size_t len = n - off < 65536 ? (size_t) (n - off) : 65536;
                        /* pattern_byte(i) depends on i, so copy from the right offset. */
                        j->writes++;
                        if (lg_http_response_write(req, pattern + off, len, bigcl_written, j) < 0) {
                                j->writes--;
                                job_end(j, 1);
                                return;
                        }
                        off += len;
                }
                job_end(j, 0);
        } else if (!strcmp(p, "/zc-order")) {
                zc_order(req, loop);
        } else if (!strcmp(p, "/hold")) {
                struct job *j = job_new(req, loop);
                lg_http_request_on_abort(req, job_on_abort, j);
                uv_timer_init(loop, &j->timer);
                j->has_timer = true;
                uv_timer_start(&j->timer, hold_fire, param_u64(req, "ms", 10), 0);
        } else if (!strcmp(p, "/hang")) {
                struct job *j = job_new(req, loop);
                lg_http_request_on_abort(req, job_on_abort, j);
        } else if (!strcmp(p, "/follow")) {
                struct job *j = job_new(req, loop);
                lg_http_request_on_abort(req, job_on_abort, j);
                assert_int_equal(lg_http_response_start(req, 200, &text, 1, -1), 0);
                uv_timer_init(loop, &j->timer);
                j->has_timer = true;
                uv_timer_start(&j->timer, follow_tick, 0, 5);
        } else if (!strcmp(p, "/abort-mid")) {
                assert_int_equal(lg_http_response_start(req, 200, &text, 1, 1000), 0);
                assert_int_equal(lg_http_response_write(req, "0123456789", 10, NULL, NULL), 0);
                lg_http_response_abort(req);
        } else if (!strcmp(p, "/flaky")) {
                static char seen[256][64];
                static int nseen;
                char peer[64];
                assert_int_equal(lg_http_request_peer(req, peer, sizeof(peer)), 0);
                for (int i = 0; i < nseen; i++)
                        if (!strcmp(seen[i], peer)) {
                                lg_http_response_abort(req);
                                return;
                        }
                snprintf(seen[nseen++ % 256], sizeof(seen[0]), "%s", peer);
                lg_http_respond(req, 200, &text, 1, "fresh", 5);
        } else if (!strcmp(p, "/abort-now")) {
                lg_http_response_abort(req);
        } else if (!strncmp(p, "/info", 5)) {
                info(req);
        } else if (!strcmp(p, "/peer")) {
                char buf[128];
                assert_int_equal(lg_http_request_peer(req, buf, sizeof(buf)), 0);
                lg_http_respond(req, 200, &text, 1, buf, strlen(buf));
        } else {
                lg_http_respond_error(req, 404, "NotFound", "no route for %s", p);
        }
}

void app_config(struct lg_http_server_config *cfg, uv_loop_t *loop) {
        cfg->on_head = app_on_head;
        cfg->on_request = app_on_request;
        cfg->userdata = loop;
}

/* ------------------------------------------------------------------------
 * Threaded server
 * --------------------------------------------------------------------- */

/* What the loop thread touches; see test-http-harness.h. */
struct harness_run {
        uv_loop_t loop;
        uv_async_t async;
        pthread_t thread;
        struct lg_http_server *srv;
        atomic_bool closed;
        int close_calls;
        char dir[64];
        struct harness_run *next; /* on `running` */
};

/* Servers whose thread runs and that no harness_join has taken yet (the
 * test thread's only). */
static struct harness_run *running;

static void *loop_thread(void *arg) {
        struct harness_run *run = arg;
        uv_run(&run->loop, UV_RUN_DEFAULT);
        return NULL;
}

static void on_async_closed(uv_handle_t *hd) { (void) hd; }

static void on_server_closed(void *ud) {
        struct harness_run *run = ud;
        atomic_store(&run->closed, true);
        uv_close((uv_handle_t *) &run->async, on_async_closed);
}

static void on_async(uv_async_t *a) {
        struct harness_run *run = a->data;
        if (atomic_load(&run->closed))
                return;
        while (run->close_calls > 0) {
                run->close_calls--;
                lg_http_server_close(run->srv, on_server_closed, run);
        }
}

/* Take run off `running` and join its thread; true when it ended cleanly
 * (server closed, loop empty), and then run is freed. */
static bool run_join(struct harness_run *run) {
        for (struct harness_run **p = &running; *p; p = &(*p)->next)
                if (*p == run) {
                        *p = run->next;
                        break;
                }
        pthread_join(run->thread, NULL);
        bool ok = atomic_load(&run->closed) && uv_loop_close(&run->loop) == 0;
        if (ok)
                free(run); /* else leaked: handles may still point into it */
        return ok;
}

/* Servers of tests that failed (their harness_stop never came): abort,
 * so that their handlers end what they hold, and join. */
static void harness_reap(void) {
        while (running) {
                struct harness_run *run = running;
                if (!atomic_load(&run->closed)) {
                        run->close_calls = 2;
                        uv_async_send(&run->async);
                }
                char dir[sizeof(run->dir)];
                memcpy(dir, run->dir, sizeof(dir));
                (void) run_join(run);
                rmdir(dir);
        }
}

void harness_start(struct harness *h, struct lg_http_server_config *cfg) {
        harness_start_tls(h, cfg, NULL, NULL);
}

void harness_start_tls(struct harness *h, struct lg_http_server_config *cfg, const char *cert, const char *key) {
        static bool at_exit;
        if (!at_exit) {
                /* Before the exit's other handlers (OpenSSL's) run. */
                atexit(harness_reap);
                at_exit = true;
        }
        harness_reap();
        memset(h, 0, sizeof(*h));
        struct harness_run *run = calloc(1, sizeof(*run));
        assert_non_null(run);
        h->run = run;
        assert_int_equal(uv_loop_init(&run->loop), 0);
        app_config(cfg, &run->loop);
        struct lg_error err = {0};
        assert_int_equal(lg_http_server_new(&run->loop, cfg, &h->srv, &err), 0);
        run->srv = h->srv;
        if (cert) {
                /* The TLS listener first: the plain port must still be found. */
                int r = lg_http_server_listen_tls(h->srv, "127.0.0.1", 0, cert, key, &err);
                if (r < 0)
                        fail_msg("listen_tls: %s", err.msg);
                h->tls_port = lg_http_server_tls_port(h->srv);
                assert_true(h->tls_port > 0);
        }
        assert_int_equal(lg_http_server_listen_tcp(h->srv, "127.0.0.1", 0, &err), 0);
        h->port = lg_http_server_port(h->srv);
        assert_true(h->port > 0);
        assert_int_not_equal(h->port, h->tls_port);
        snprintf(h->dir, sizeof(h->dir), "/tmp/lg-http-XXXXXX");
        assert_non_null(mkdtemp(h->dir));
        snprintf(h->sock, sizeof(h->sock), "%s/http.sock", h->dir);
        assert_int_equal(lg_http_server_listen_unix(h->srv, h->sock, &err), 0);
        memcpy(run->dir, h->dir, sizeof(run->dir));
        assert_int_equal(uv_async_init(&run->loop, &run->async, on_async), 0);
        run->async.data = run;
        assert_int_equal(pthread_create(&run->thread, NULL, loop_thread, run), 0);
        run->next = running;
        running = run;
}

/* close_calls is read by the loop thread only inside on_async, after
 * uv_async_send's barrier. */
void harness_close(struct harness *h) {
        h->run->close_calls = 1;
        uv_async_send(&h->run->async);
}

void harness_join(struct harness *h) {
        struct harness_run *run = h->run;
        h->run = NULL;
        assert_true(run_join(run));
        assert_int_equal(access(h->sock, F_OK), -1); /* removed on close */
        rmdir(h->dir);
}

void harness_stop(struct harness *h, bool abort_too) {
        h->run->close_calls = abort_too ? 2 : 1;
        uv_async_send(&h->run->async);
        harness_join(h);
}

/* ------------------------------------------------------------------------
 * Raw client
 * --------------------------------------------------------------------- */

static void set_timeouts(int fd) {
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* A blocking stream socket connected to a (rcvbuf > 0: that receive buffer,
 * set before connecting; from: bound to that address first); r->fd is -1 on
 * failure. */
static int raw_connect(struct raw *r, const struct sockaddr *a, socklen_t alen, int rcvbuf,
                       const struct sockaddr_in *from) {
        memset(r, 0, sizeof(*r));
        r->fd = socket(a->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (r->fd < 0)
                return -errno;
        if (rcvbuf > 0)
                setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        set_timeouts(r->fd);
        if (a->sa_family == AF_INET) {
                int one = 1;
                setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        if ((from && bind(r->fd, (const struct sockaddr *) from, sizeof(*from)) < 0) ||
            connect(r->fd, a, alen) < 0) {
                int e = -errno;
                close(r->fd);
                r->fd = -1;
                return e;
        }
        return 0;
}

int raw_tcp(struct raw *r, int port) { return raw_tcp_rcvbuf(r, port, 0); }

int raw_tcp_from(struct raw *r, const char *src, int port) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct sockaddr_in from = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, src, &from.sin_addr) != 1) {
                memset(r, 0, sizeof(*r));
                r->fd = -1;
                return -EINVAL;
        }
        return raw_connect(r, (struct sockaddr *) &a, sizeof(a), 0, &from);
}

int raw_tcp_rcvbuf(struct raw *r, int port, int rcvbuf) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        return raw_connect(r, (struct sockaddr *) &a, sizeof(a), rcvbuf, NULL);
}

int raw_unix(struct raw *r, const char *path) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
        return raw_connect(r, (struct sockaddr *) &a, sizeof(a), 0, NULL);
}

void raw_close(struct raw *r) {
        if (r->fd >= 0)
                close(r->fd);
        r->fd = -1;
        free(r->buf);
        r->buf = NULL;
        r->len = r->cap = 0;
}

int raw_write(struct raw *r, const void *data, size_t len) {
        const char *p = data;
        while (len > 0) {
                ssize_t n = send(r->fd, p, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

int raw_puts(struct raw *r, const char *s) { return raw_write(r, s, strlen(s)); }

struct rr {
        struct raw_resp *resp;
        bool done, head;
        int last;
};

static int rr_field(http_parser *p, const char *at, size_t len) {
        struct rr *x = p->data;
        struct raw_resp *rs = x->resp;
        if (x->last != 1) {
                if (rs->nhdrs >= 64)
                        return 0;
                rs->nhdrs++;
                rs->names[rs->nhdrs - 1][0] = rs->values[rs->nhdrs - 1][0] = '\0';
        }
        x->last = 1;
        strncat(rs->names[rs->nhdrs - 1], at, len < 63 ? len : 63);
        return 0;
}

static int rr_value(http_parser *p, const char *at, size_t len) {
        struct rr *x = p->data;
        struct raw_resp *rs = x->resp;
        x->last = 2;
        if (rs->nhdrs == 0)
                return 0;
        size_t have = strlen(rs->values[rs->nhdrs - 1]);
        if (have + len < 511)
                strncat(rs->values[rs->nhdrs - 1], at, len);
        return 0;
}

static int rr_headers(http_parser *p) {
        struct rr *x = p->data;
        x->resp->status = p->status_code;
        x->resp->keep_alive = http_should_keep_alive(p);
        x->resp->chunked = p->flags & F_CHUNKED;
        return x->head ? 1 : 0;
}

static int rr_body(http_parser *p, const char *at, size_t len) {
        struct rr *x = p->data;
        struct raw_resp *rs = x->resp;
        char *n = realloc(rs->body, rs->body_len + len + 1);
        assert_non_null(n);
        rs->body = n;
        memcpy(rs->body + rs->body_len, at, len);
        rs->body_len += len;
        rs->body[rs->body_len] = '\0';
        return 0;
}

static int rr_done(http_parser *p) {
        struct rr *x = p->data;
        x->done = true;
        x->resp->keep_alive = http_should_keep_alive(p);
        http_parser_pause(p, 1);
        return 0;
}

static const http_parser_settings rr_settings = {
        .on_header_field = rr_field,
        .on_header_value = rr_value,
        .on_headers_complete = rr_headers,
        .on_body = rr_body,
        .on_message_complete = rr_done,
};

int raw_response(struct raw *r, struct raw_resp *resp, bool head) {
        memset(resp, 0, sizeof(*resp));
        struct rr x = {.resp = resp, .head = head};
        http_parser p;
        http_parser_init(&p, HTTP_RESPONSE);
        p.data = &x;
        size_t off = 0;
        for (;;) {
                if (off < r->len) {
                        size_t n = http_parser_execute(&p, &rr_settings, r->buf + off, r->len - off);
                        off += n;
                        if (x.done)
                                break;
                        if (HTTP_PARSER_ERRNO(&p) != HPE_OK)
                                return -1;
                        continue;
                }
                off = r->len = 0;
                if (r->cap < 65536) {
                        r->buf = realloc(r->buf, 65536);
                        assert_non_null(r->buf);
                        r->cap = 65536;
                }
                ssize_t n = recv(r->fd, r->buf, r->cap, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        http_parser_execute(&p, &rr_settings, NULL, 0);
                        if (x.done)
                                break;
                        return -1;
                }
                r->len = (size_t) n;
        }
        memmove(r->buf, r->buf + off, r->len - off);
        r->len -= off;
        return 0;
}

void raw_resp_free(struct raw_resp *resp) {
        free(resp->body);
        resp->body = NULL;
}

const char *raw_header(const struct raw_resp *resp, const char *name) {
        for (int i = 0; i < resp->nhdrs; i++)
                if (strcasecmp(resp->names[i], name) == 0)
                        return resp->values[i];
        return NULL;
}

bool raw_wait_close(struct raw *r) {
        char buf[4096];
        r->len = 0;
        for (;;) {
                ssize_t n = recv(r->fd, buf, sizeof(buf), 0);
                if (n == 0)
                        return true;
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == ECONNRESET;
                }
        }
}

ssize_t raw_oneshot(int port, const void *data, size_t len, char *out, size_t cap) {
        struct raw r;
        if (raw_tcp(&r, port) < 0)
                return -1;
        (void) raw_write(&r, data, len);
        shutdown(r.fd, SHUT_WR);
        size_t got = 0;
        char buf[4096];
        for (;;) {
                ssize_t n = recv(r.fd, buf, sizeof(buf), 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                if (out && got < cap) {
                        size_t k = (size_t) n < cap - got ? (size_t) n : cap - got;
                        memcpy(out + got, buf, k);
                }
                got += (size_t) n;
        }
        if (out && cap)
                out[got < cap ? got : cap - 1] = '\0';
        raw_close(&r);
        return (ssize_t) got;
}
