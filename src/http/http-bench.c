/* http-bench: servers for measuring the HTTP module with wrk (not installed).
 *
 *   http-bench hello PORT [UNIX_PATH]     "hello" on 127.0.0.1:PORT (and a Unix socket)
 *   http-bench proxy PORT UPSTREAM        reverse proxy to UPSTREAM ("unix:/path" or
 *                                         "host:port"), streaming both ways with
 *                                         backpressure, the way the router does
 *
 * The proxy is also the reference for using the server and client together:
 * the request body is forwarded with pause / write / resume, the response
 * the same way back, and the per-request state is freed once the request is
 * ended, the call is done and no write callback is pending. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "http/http.h"

static struct lg_http_upstream *upstream;

static void hello(struct lg_http_request *req, void *ud) {
        (void) ud;
        static const struct lg_http_header h = {"Content-Type", "text/plain"};
        lg_http_respond(req, 200, &h, 1, "hello\n", 6);
}

struct px {
        struct lg_http_request *req;
        struct lg_http_call *call;
        int writes;
        bool req_done, call_done;
};

static void px_maybe_free(struct px *p) {
        if (p->req_done && p->call_done && p->writes == 0)
                free(p);
}

static void px_req_written(void *ud, int status) {
        (void) status;
        struct px *p = ud;
        p->writes--;
        if (!p->req_done)
                lg_http_request_resume(p->req);
        px_maybe_free(p);
}

static void px_req_data(struct lg_http_request *req, const char *data, size_t len, void *ud) {
        struct px *p = ud;
        if (p->call_done)
                return;
        lg_http_request_pause(req);
        p->writes++;
        if (lg_http_call_write(p->call, data, len, px_req_written, p) < 0) {
                p->writes--;
                lg_http_request_resume(req);
        }
}

static void px_req_end(struct lg_http_request *req, void *ud) {
        (void) req;
        struct px *p = ud;
        if (!p->call_done)
                lg_http_call_end(p->call);
}

static void px_resp_written(void *ud, int status) {
        (void) status;
        struct px *p = ud;
        p->writes--;
        if (!p->call_done)
                lg_http_call_resume(p->call);
        px_maybe_free(p);
}

static void px_on_response(struct lg_http_call *call, void *ud) {
        struct px *p = ud;
        const struct lg_http_header *h;
        size_t n = lg_http_call_headers(call, &h);
        lg_http_response_start(p->req, lg_http_call_status(call), h, n, lg_http_call_content_length(call));
}

static void px_on_data(struct lg_http_call *call, const char *data, size_t len, void *ud) {
        struct px *p = ud;
        p->writes++;
        int r = lg_http_response_write(p->req, data, len, px_resp_written, p);
        if (r < 0)
                p->writes--;
        else if (r == 0)
                lg_http_call_pause(call);
}

static void px_on_done(struct lg_http_call *call, int err, void *ud) {
        struct px *p = ud;
        p->call_done = true;
        if (!p->req_done) {
                p->req_done = true;
                if (err == 0)
                        lg_http_response_end(p->req);
                else if (lg_http_call_status(call) == 0)
                        lg_http_respond_error(p->req, err == -ETIMEDOUT ? 504 : 502, "BadGateway", "%s",
                                              lg_http_call_error(call));
                else
                        lg_http_response_abort(p->req);
        }
        px_maybe_free(p);
}

static const struct lg_http_call_ops px_ops = {px_on_response, px_on_data, px_on_done};

static void px_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) reason;
        struct px *p = ud;
        if (!p->call_done) {
                p->call_done = true;
                lg_http_call_cancel(p->call);
        }
        if (!p->req_done) {
                p->req_done = true;
                lg_http_response_abort(req);
        }
        px_maybe_free(p);
}

static enum lg_http_body_mode px_head(struct lg_http_request *req, void *ud) {
        (void) req;
        (void) ud;
        return LG_HTTP_BODY_STREAM;
}

static void px_request(struct lg_http_request *req, void *ud) {
        (void) ud;
        struct px *p = calloc(1, sizeof(*p));
        if (!p) {
                lg_http_respond_error(req, 503, "Unavailable", "out of memory");
                return;
        }
        p->req = req;
        const struct lg_http_header *h;
        size_t n = lg_http_request_headers(req, &h);
        int64_t cl = lg_http_request_content_length(req);
        int r = lg_http_call_start(upstream, lg_http_request_method(req), lg_http_request_target(req), h, n, cl,
                                   &px_ops, p, &p->call);
        if (r < 0) {
                lg_http_respond_error(req, 502, "BadGateway", "cannot start the upstream request: %s",
                                      strerror(-r));
                free(p);
                return;
        }
        lg_http_request_on_abort(req, px_abort, p);
        if (cl != 0)
                lg_http_request_read(req, px_req_data, px_req_end, p);
}

int main(int argc, char **argv) {
        if (argc < 3) {
                fprintf(stderr, "usage: %s hello PORT [UNIX] | proxy PORT UPSTREAM\n", argv[0]);
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);
        uv_loop_t *loop = uv_default_loop();
        struct lg_error err = {0};
        /* All the load comes from one address (wrk on 127.0.0.1). */
        struct lg_http_server_config cfg = {.on_request = hello, .max_connections = 10000,
                                            .max_connections_per_addr = UINT_MAX};
        struct lg_http_client *cl = NULL;
        if (strcmp(argv[1], "proxy") == 0) {
                if (argc < 4)
                        return 2;
                struct lg_http_client_config ccfg = {.max_idle = 1024};
                if (lg_http_client_new(loop, &ccfg, &cl, &err) < 0 ||
                    lg_http_upstream_new(cl, argv[3], &upstream, &err) < 0) {
                        fprintf(stderr, "%s\n", err.msg);
                        return 1;
                }
                cfg.on_head = px_head;
                cfg.on_request = px_request;
        }
        struct lg_http_server *srv;
        if (lg_http_server_new(loop, &cfg, &srv, &err) < 0 ||
            lg_http_server_listen_tcp(srv, "127.0.0.1", (uint16_t) atoi(argv[2]), &err) < 0 ||
            (strcmp(argv[1], "hello") == 0 && argc > 3 && lg_http_server_listen_unix(srv, argv[3], &err) < 0)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
        }
        fprintf(stderr, "listening on 127.0.0.1:%d\n", lg_http_server_port(srv));
        return uv_run(loop, UV_RUN_DEFAULT);
}
