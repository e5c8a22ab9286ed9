/* /v1/sessionpools: session pools and sessions over HTTP. The session
 * manager is src/session (lg_sessions); here the calls are read, checked as
 * far as HTTP goes, and handed to it, and executions and file transfers go
 * to the session's sandbox through the router (docs/api.md, "Sessions"). */
#include <stdio.h>
#include <string.h>

#include "api/api-internal.h"

/* The namespace of a /v1/sessionpools call: ?namespace=, else the token's,
 * else (admin) "default". */
static const char *call_ns(struct api_call *c) {
        const char *ns = lg_http_request_param(c->req, "namespace");
        if (ns && *ns)
                return ns;
        return api_is_admin(c) ? "default" : c->token.namespace;
}

/* The call's identifier, or NULL with 400 answered. */
static const char *call_identifier(struct api_call *c) {
        const char *id = lg_http_request_param(c->req, "identifier");
        struct lg_error err = {0};
        if (lg_session_id_check(id, &err) < 0) {
                lg_http_respond_error(c->req, 400, "BadRequest", "%s", err.msg);
                return NULL;
        }
        return id;
}

/* The session for (pool, identifier), bound on first use (see
 * lg_sessions_open). Answers the request itself (404, 429, 410) and returns
 * NULL when it cannot. */
static lg_session *open_session(struct api_call *c, const char *ns, const char *pool, const char *id,
                                unsigned flags) {
        struct lg_error err = {0};
        lg_session *s = NULL;
        int r = lg_sessions_open(c->api->sessions, ns, pool, id, flags, &s, &err);
        switch (r) {
        case 0: return s;
        case -ENOENT: api_store_error(c->req, r, &err); break;
        case -EUSERS: lg_http_respond_error(c->req, 429, "TooManySessions", "%s", err.msg); break;
        case -ENOLINK: lg_http_respond_error(c->req, 410, "SessionLost", "%s", err.msg); break;
        case -EINVAL: lg_http_respond_error(c->req, 400, "BadRequest", "%s", err.msg); break;
        case -ENOMEM: lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory"); break;
        default: lg_http_respond_error(c->req, 500, "Internal", "%s", err.msg); break;
        }
        return NULL;
}

/* The worker's rules for the path of a file written with PUT (segments
 * after /files, decoded), so that an upload it would refuse binds no
 * session. A multipart POST names its files in the body, which the worker
 * reads as it streams: those names are checked there only. */
static bool upload_path_ok(struct api_call *c) {
        struct lg_error err = {0};
        int r = lg_session_file_path_check(c->seg + 4, c->nseg > 4 ? c->nseg - 4 : 0, &err);
        if (r == -ENAMETOOLONG)
                lg_http_respond_error(c->req, 400, "NameTooLong", "%s", err.msg);
        else if (r < 0)
                lg_http_respond_error(c->req, 400, "InvalidPath", "%s", err.msg);
        return r >= 0;
}

/* An execution. Its body is read and checked here, as the worker would
 * check it, before the session is bound: a request that is refused binds
 * no sandbox to its identifier and counts against no maxSessions. Then the
 * body goes to the session's sandbox through the router. */
struct execution {
        struct api_call c;
        char ns[LG_STORE_NAME_MAX + 1], pool[LG_STORE_NAME_MAX + 1];
        char *body;
        size_t len, cap;
        bool out_of_memory;
};

static void execution_free(struct execution *x) {
        if (!x)
                return;
        free(x->body);
        free(x);
}

static void execution_data(struct lg_http_request *req, const char *data, size_t len, void *ud) {
        struct execution *x = ud;
        (void) req;
        if (x->out_of_memory)
                return;
        if (len > x->cap - x->len) {
                /* The server enforces LG_SESSION_MAX_CODE: len fits. */
                size_t cap = x->cap ? x->cap : 4096;
                while (cap - x->len < len)
                        cap *= 2;
                char *b = realloc(x->body, cap);
                if (!b) {
                        x->out_of_memory = true;
                        return;
                }
                x->body = b;
                x->cap = cap;
        }
        memcpy(x->body + x->len, data, len);
        x->len += len;
}

static void execution_end(struct lg_http_request *req, void *ud) {
        struct execution *x = ud;
        if (x->out_of_memory) {
                lg_http_respond_error(req, 503, "Overloaded", "%s", "out of memory");
                return execution_free(x);
        }
        /* The worker's checks, with its messages. */
        struct lg_error err = {0};
        if (lg_session_execution_check(x->body, x->len, &err) < 0) {
                lg_http_respond_error(req, 400, "BadRequest", "%s", err.msg);
                return execution_free(x);
        }
        const char *id = lg_http_request_param(req, "identifier");
        lg_session *s = open_session(&x->c, x->ns, x->pool, id, LG_SESSION_CREATE | LG_SESSION_EXECUTE);
        if (!s)
                return execution_free(x);
        lg_router *router = api_router(x->c.api, req);
        if (!router)
                return execution_free(x);
        struct lg_router_body body = {TAKE_PTR(x->body), x->len};
        lg_router_handle_body(router, req, lg_session_key(s), "/execute", body);
        execution_free(x);
}

static void execution_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) reason;
        execution_free(ud);
        lg_http_response_abort(req);
}

static void execution_read(struct api_call *c, const char *ns, const char *pool) {
        struct execution *x = calloc(1, sizeof(*x));
        if (!x) {
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        x->c = *c;
        /* The call's segments and token live in the dispatcher's frame. */
        x->c.seg = NULL;
        x->c.nseg = 0;
        snprintf(x->ns, sizeof(x->ns), "%s", ns);
        snprintf(x->pool, sizeof(x->pool), "%s", pool);
        lg_http_request_set_body_limit(c->req, LG_SESSION_MAX_CODE);
        lg_http_request_on_abort(c->req, execution_abort, x);
        if (lg_http_request_read(c->req, execution_data, execution_end, x) < 0) {
                /* The server answered 413 itself; abort follows. */
        }
}

static void api_session_pool(struct api_call *c, const char *ns, const char *name, const char *sub,
                             const char *rest) {
        struct lg_error err = {0};
        struct lg_resource *pool = NULL;
        const char *m = lg_http_request_method(c->req);
        int r = lg_store_get(c->api->store, LG_KEY("SessionPool", ns, name), &pool, &err);
        if (r < 0 && !(sub == NULL && !strcmp(m, "PUT")))
                return api_store_error(c->req, r, &err);
        if (!sub) {
                if (!strcmp(m, "GET")) {
                        json_t *doc = lg_resource_to_json(pool);
                        json_object_set_new(doc, "status", lg_sessions_pool_status(c->api->sessions, ns, name, true));
                        api_json(c->req, 200, doc);
                } else if (!strcmp(m, "DELETE")) {
                        r = lg_sessions_pool_delete(c->api->sessions, ns, name, &err);
                        if (r < 0)
                                api_store_error(c->req, r, &err);
                        else
                                lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
                } else {
                        lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET or DELETE");
                }
                lg_resource_free(pool);
                return;
        }
        if (!strcmp(sub, "sessions")) {
                if (!rest) {
                        api_json(c->req, 200, lg_sessions_list_json(c->api->sessions, ns, name));
                } else {
                        lg_session *s = lg_sessions_find(c->api->sessions, ns, name, rest);
                        if (!s)
                                lg_http_respond_error(c->req, 404, "NotFound", "no session `%.128s` in pool `%s`",
                                                      rest, name);
                        else if (!strcmp(m, "DELETE")) {
                                lg_sessions_end(c->api->sessions, s, "session deleted");
                                lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
                        } else
                                api_json(c->req, 200, lg_session_json(s));
                }
                lg_resource_free(pool);
                return;
        }
        bool exec = !strcmp(sub, "executions");
        if (!exec && strcmp(sub, "files")) {
                lg_resource_free(pool);
                lg_http_respond_error(c->req, 404, "NotFound", "no such endpoint `%s`", lg_http_request_path(c->req));
                return;
        }
        if (exec && strcmp(m, "POST")) {
                lg_resource_free(pool);
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "POST {\"code\": ...}");
                return;
        }
        const char *id = call_identifier(c);
        if (!id) {
                lg_resource_free(pool);
                return;
        }
        if (exec) {
                execution_read(c, ns, pool->name);
                lg_resource_free(pool);
                return;
        }
        /* Uploads make a session; reading files or deleting them in one
         * that does not exist is a 404. */
        bool create = !strcmp(m, "PUT") || !strcmp(m, "POST");
        if (create && !upload_path_ok(c)) {
                lg_resource_free(pool);
                return;
        }
        lg_session *s = open_session(c, ns, pool->name, id, create ? LG_SESSION_CREATE : 0);
        lg_resource_free(pool);
        if (!s)
                return;
        char target[4200];
        snprintf(target, sizeof(target), "/files%s%s", rest ? "/" : "", rest ? rest : "");
        lg_router *router = api_router(c->api, c->req);
        if (router)
                lg_router_handle(router, c->req, lg_session_key(s), target);
}

static void api_session_pools_root(struct api_call *c, const char *ns) {
        struct lg_error err = {0};
        const char *m = lg_http_request_method(c->req);
        if (!strcmp(m, "GET")) {
                struct lg_resource_list l = {0};
                int r = lg_store_list(c->api->store, "SessionPool", ns, NULL, &l, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                json_t *items = json_array();
                for (size_t i = 0; i < l.n; i++) {
                        json_t *doc = lg_resource_to_json(l.items[i]);
                        json_object_set_new(doc, "status",
                                            lg_sessions_pool_status(c->api->sessions, ns, l.items[i]->name, false));
                        json_array_append_new(items, doc);
                }
                lg_resource_list_free(&l);
                api_json(c->req, 200, json_pack("{s:o}", "items", items));
                return;
        }
        lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET, or PUT /v1/sessionpools/NAME");
}

static void pool_put(struct api_call *c, const char *ns, const char *name) {
        if (!lg_store_valid_name(name)) {
                lg_http_respond_error(c->req, 400, "BadRequest", "invalid session pool name `%s`", name);
                return;
        }
        _cleanup_(json_decrefp) json_t *spec = api_body_json(c->req);
        if (!spec)
                return;
        struct lg_error err = {0};
        struct lg_resource *res = NULL;
        int r = lg_sessions_pool_put(c->api->sessions, ns, name, spec, &res, &err);
        if (r == -EOPNOTSUPP) /* egress on a node without networking */
                return (void) lg_http_respond_error(c->req, 409, "Conflict", "%s", err.msg);
        if (r < 0)
                return api_store_error(c->req, r, &err);
        api_json(c->req, r == LG_STORE_CREATED ? 201 : 200, lg_resource_to_json(res));
        lg_resource_free(res);
}

/* /v1/sessionpools[/{pool}[/{sub}[/{rest...}]]] */
void api_sessions(struct api_call *c) {
        const char *ns = call_ns(c);
        if (!api_ns_exists(c, ns))
                return;
        if (c->nseg == 2) {
                if (!strcmp(lg_http_request_method(c->req), "POST")) {
                        /* POST with the name in the body, like PUT .../{name}. */
                        size_t len = 0;
                        const char *body = lg_http_request_body(c->req, &len);
                        json_t *doc = body ? json_loadb(body, len, 0, NULL) : NULL;
                        const char *name = json_string_value(json_object_get(doc, "name"));
                        char nm[LG_STORE_NAME_MAX + 1];
                        snprintf(nm, sizeof(nm), "%s", name ? name : "");
                        json_decref(doc);
                        if (!nm[0]) {
                                lg_http_respond_error(c->req, 400, "BadRequest", "%s",
                                                      "a session pool needs a `name`");
                                return;
                        }
                        return pool_put(c, ns, nm);
                }
                return api_session_pools_root(c, ns);
        }
        const char *name = c->seg[2];
        if (c->nseg == 3 && !strcmp(lg_http_request_method(c->req), "PUT"))
                return pool_put(c, ns, name);
        const char *sub = c->nseg >= 4 ? c->seg[3] : NULL;
        /* The rest of the path, as sent (still percent-encoded), for files;
         * its decoded segments must not climb out. */
        const char *rest = NULL;
        if (c->nseg >= 5) {
                for (int i = 4; i < c->nseg; i++)
                        if (!strcmp(c->seg[i], "..") || !strcmp(c->seg[i], ".") || !c->seg[i][0] ||
                            strchr(c->seg[i], '/')) {
                                lg_http_respond_error(c->req, 400, "BadPath", "%s",
                                                      "file paths may not contain `..`, `.`, empty or encoded `/` parts");
                                return;
                        }
                const char *path = lg_http_request_path(c->req);
                for (int i = 0; i < 4 && path; i++)
                        path = strchr(path + 1, '/');
                rest = path ? path + 1 : NULL;
        }
        api_session_pool(c, ns, name, sub, rest);
}

bool api_sessions_streams(struct lg_http_request *req) {
        const char *const *seg;
        int n = lg_http_request_segments(req, &seg);
        return n >= 4 && !strcmp(seg[0], "v1") && !strcmp(seg[1], "sessionpools") &&
               (!strcmp(seg[3], "executions") || !strcmp(seg[3], "files"));
}
