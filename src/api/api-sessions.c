/* Session pools and sessions: sandboxes for untrusted code, keyed by an
 * identifier (docs/api.md, "Sessions").
 *
 * A session pool is a node pool group of session-worker placeholders
 * (runtimes/session): a writable root whose /mnt/data holds the session's
 * files, no network beyond loopback. A session is a
 * router entry "ns/pool/identifier" with one instance and concurrency 1: the
 * router gives it a placeholder on first use (bound to that identifier for
 * good), serializes its executions in a bounded queue with deadlines, and
 * streams file transfers. Everything runs on the one loop, so concurrent
 * first calls with the same identifier meet the same entry and exactly one
 * sandbox is bound. The manager here counts sessions against maxSessions,
 * keeps each one's cooldown, and ends it (sandbox and files gone) when the
 * cooldown passes without a call. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/api-internal.h"

#define SESSION_KEY_MAX (LG_STORE_NAME_MAX * 2 + 130)
/* Limits of an execution, checked here and handed to the worker, which
 * checks them too (LEGION_SESSION_MAX_CODE, LEGION_SESSION_MAX_TIMEOUT). */
#define SESSION_MAX_CODE (16u << 20)
#define SESSION_MAX_TIMEOUT_S 600
/* The worker's file path rules (runtimes/session/supervisor.py,
 * split_path and the reserved upload prefix), checked here first. */
#define SESSION_FILE_NAME_MAX 255
#define SESSION_FILE_PATH_MAX 1024
#define SESSION_UPLOAD_PREFIX ".legion-upload-"

struct session {
        struct session *next;
        char key[SESSION_KEY_MAX];   /* ns/pool/identifier */
        char pool[2 * LG_STORE_NAME_MAX + 2]; /* ns/pool */
        char identifier[129];
        int64_t created_at, last_used; /* wall clock, seconds */
        uint64_t executions;
        unsigned cooldown_s;
        uv_timer_t cooldown;
        struct lg_daemon *d;
        bool ended;
};

static struct session *sessions;

static const char *const pool_fields[] = {
        "name", "runtime", "ready", "maxSessions", "cooldownSeconds", "egress", "cpu", "memory",
        "maxFileBytes", "maxSessionBytes", NULL,
};

static bool valid_identifier(const char *s) {
        size_t n = strlen(s);
        if (n < 4 || n > 128)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '-' || *p == '_' || *p == '.' || *p == ':'))
                        return false;
        return true;
}

/* The namespace of a /v1/sessionpools call: ?namespace=, else the token's,
 * else (admin) "default". */
static const char *call_ns(struct api_call *c) {
        const char *ns = lg_http_request_param(c->req, "namespace");
        if (ns && *ns)
                return ns;
        return api_is_admin(c) ? "default" : c->token.namespace;
}

static void node_pool_name(char *buf, size_t cap, const char *ns, const char *pool) {
        snprintf(buf, cap, "sessions/%s/%s", ns, pool);
}

static unsigned spec_uint(const json_t *spec, const char *k, unsigned def) {
        json_t *v = json_object_get(spec, k);
        return json_is_integer(v) ? (unsigned) json_integer_value(v) : def;
}

/* Validate a pool spec (answering 400 when req is given) and register its
 * placeholders with the node. */
static int pool_apply_node(struct lg_daemon *d, struct lg_http_request *req, const char *ns, const char *name,
                           const json_t *spec) {
        char err[256] = "", pname[160];
        uint64_t cpu = 0, mem = 256ull << 20, max_file = 100ull << 20, max_bytes = 1ull << 30;
        json_t *v;
        const char *rt = json_string_value(json_object_get(spec, "runtime"));
        if (rt && strcmp(rt, "python3"))
                snprintf(err, sizeof(err), "`runtime` must be python3");
        static const struct { const char *k; long long lo, hi; } ints[] = {
                {"ready", 0, 1000}, {"maxSessions", 1, 100000}, {"cooldownSeconds", 1, 86400},
        };
        for (size_t i = 0; !err[0] && i < ARRAY_SIZE(ints); i++) {
                v = json_object_get(spec, ints[i].k);
                if (v && (!json_is_integer(v) || json_integer_value(v) < ints[i].lo ||
                          json_integer_value(v) > ints[i].hi))
                        snprintf(err, sizeof(err), "`%s` must be an integer from %lld to %lld", ints[i].k,
                                 ints[i].lo, ints[i].hi);
        }
        v = json_object_get(spec, "egress");
        if (!err[0] && v && !json_is_boolean(v))
                snprintf(err, sizeof(err), "`egress` must be true or false");
        /* Sessions have no egress of their own yet (no NAT'd network), and
         * the host's network namespace is no substitute: it reaches
         * legiond's API and every host listener on loopback. A pool stored
         * with it by an older legiond is restored without it (req NULL). */
        if (!err[0] && req && json_is_true(v))
                snprintf(err, sizeof(err), "%s",
                         "`egress: true` is not available: sessions have no network of their own yet, and "
                         "Legion will not run untrusted code on the host's network");
        if (!err[0] && (v = json_object_get(spec, "cpu")) && api_parse_cpu(v, &cpu) < 0)
                snprintf(err, sizeof(err), "`cpu` must be CPUs (0.5) or millicores (\"500m\")");
        if (!err[0] && (v = json_object_get(spec, "memory")) && api_parse_memory(v, &mem) < 0)
                snprintf(err, sizeof(err), "`memory` must be a size from 4Mi to 64Gi");
        if (!err[0] && (v = json_object_get(spec, "maxFileBytes")) && api_parse_memory(v, &max_file) < 0)
                snprintf(err, sizeof(err), "`maxFileBytes` must be a size from 4Mi to 64Gi");
        if (!err[0] && (v = json_object_get(spec, "maxSessionBytes")) && api_parse_memory(v, &max_bytes) < 0)
                snprintf(err, sizeof(err), "`maxSessionBytes` must be a size from 4Mi to 64Gi");
        if (err[0]) {
                if (req)
                        lg_http_respond_error(req, 400, "BadRequest", "session pool `%s`: %s", name, err);
                return -EINVAL;
        }
        char e_file[64], e_bytes[64], e_mem[64], e_code[64], e_timeout[64];
        snprintf(e_code, sizeof(e_code), "LEGION_SESSION_MAX_CODE=%u", SESSION_MAX_CODE);
        snprintf(e_timeout, sizeof(e_timeout), "LEGION_SESSION_MAX_TIMEOUT=%u", SESSION_MAX_TIMEOUT_S);
        snprintf(e_file, sizeof(e_file), "LEGION_SESSION_MAX_FILE=%llu", (unsigned long long) max_file);
        snprintf(e_bytes, sizeof(e_bytes), "LEGION_SESSION_MAX_BYTES=%llu", (unsigned long long) max_bytes);
        /* The sandbox cannot read its cgroup: tell the worker its memory
         * limit so that "out of memory" can name it. */
        snprintf(e_mem, sizeof(e_mem), "LEGION_SESSION_MEMORY_LIMIT=%llu", (unsigned long long) mem);
        const char *env[] = {e_file, e_bytes, e_mem, e_code, e_timeout, NULL};
        node_pool_name(pname, sizeof(pname), ns, name);
        struct lg_pool_spec ps = {
                .name = pname,
                .runtime = "session",
                .ready = spec_uint(spec, "ready", 1),
                .cpu_millis = cpu,
                .memory_bytes = mem,
                .writable_root = true,
                /* The files' tmpfs, with room for the interpreter's /tmp. */
                .disk_bytes = max_bytes + (64ull << 20),
                .env = env,
        };
        return lg_node_pool_set(d->node, &ps, NULL);
}

static struct session *find_session(const char *key) {
        for (struct session *s = sessions; s; s = s->next)
                if (!s->ended && !strcmp(s->key, key))
                        return s;
        return NULL;
}

static unsigned count_sessions(const char *pool) {
        unsigned n = 0;
        for (struct session *s = sessions; s; s = s->next)
                n += !s->ended && !strcmp(s->pool, pool);
        return n;
}

static void session_closed(uv_handle_t *h) { free(h->data); }

static void session_end(struct session *s, const char *why) {
        if (s->ended)
                return;
        s->ended = true;
        lg_api_app_log(s->pool, why, s->d);
        lg_router_remove(s->d->router, s->key);
        for (struct session **pp = &sessions; *pp; pp = &(*pp)->next)
                if (*pp == s) {
                        *pp = s->next;
                        break;
                }
        uv_timer_stop(&s->cooldown);
        uv_close((uv_handle_t *) &s->cooldown, session_closed);
}

static void on_cooldown(uv_timer_t *t) {
        struct session *s = t->data;
        char why[300];
        snprintf(why, sizeof(why), "session `%s` ended after %u s without a call", s->identifier, s->cooldown_s);
        session_end(s, why);
}

static void session_touch(struct session *s) {
        s->last_used = time(NULL);
        uv_timer_start(&s->cooldown, on_cooldown, (uint64_t) s->cooldown_s * 1000, 0);
}

static json_t *session_json(const struct session *s) {
        char created[32], last[32], expires[32];
        lg_store_format_time(s->created_at, created, sizeof(created));
        lg_store_format_time(s->last_used, last, sizeof(last));
        lg_store_format_time(s->last_used + s->cooldown_s, expires, sizeof(expires));
        return json_pack("{s:s, s:s, s:s, s:s, s:I, s:i}", "identifier", s->identifier, "createdAt", created,
                         "lastActivity", last, "expiresAt", expires, "executions", (json_int_t) s->executions,
                         "cooldownSeconds", s->cooldown_s);
}

/* The call's identifier, or NULL with 400 answered. */
static const char *call_identifier(struct api_call *c) {
        const char *id = lg_http_request_param(c->req, "identifier");
        if (!id || !valid_identifier(id)) {
                lg_http_respond_error(c->req, 400, "BadRequest",
                                      "`identifier` must be 4 to 128 of [A-Za-z0-9._:-], given `%.40s`",
                                      id ? id : "");
                return NULL;
        }
        return id;
}

/* The session for (pool, identifier), bound on first use. Answers the
 * request itself (404 / 429) and returns NULL when it cannot. Everything
 * that can refuse the request must be checked before: binding is what a
 * refused request must not do. */
static struct session *get_session(struct api_call *c, const char *ns, const char *pool_name,
                                   const json_t *pool_spec, const char *id, bool create) {
        char key[SESSION_KEY_MAX], pkey[sizeof(((struct session *) 0)->pool)];
        snprintf(pkey, sizeof(pkey), "%s/%s", ns, pool_name);
        snprintf(key, sizeof(key), "%s/%s", pkey, id);
        struct session *s = find_session(key);
        if (s) {
                session_touch(s);
                return s;
        }
        if (!create) {
                lg_http_respond_error(c->req, 404, "NotFound", "no session `%s` in pool `%s`", id, pool_name);
                return NULL;
        }
        unsigned max = spec_uint(pool_spec, "maxSessions", 100), n = count_sessions(pkey);
        if (n >= max) {
                lg_http_respond_error(c->req, 429, "TooManySessions",
                                      "session pool `%s` has reached maxSessions (%u of %u in use); end a session "
                                      "or wait for one to cool down",
                                      pool_name, n, max);
                return NULL;
        }
        s = calloc(1, sizeof(*s));
        if (!s) {
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return NULL;
        }
        snprintf(s->key, sizeof(s->key), "%s", key);
        snprintf(s->pool, sizeof(s->pool), "%s", pkey);
        snprintf(s->identifier, sizeof(s->identifier), "%s", id);
        s->d = c->d;
        s->created_at = time(NULL);
        s->cooldown_s = spec_uint(pool_spec, "cooldownSeconds", 300);
        char pname[160];
        node_pool_name(pname, sizeof(pname), ns, pool_name);
        struct lg_route_config cfg = {
                .key = key,
                .revision = 1,
                .pool = pname,
                .identifier = id,
                .concurrency = 1,
                .min_instances = 0,
                .max_instances = 1,
                /* The session ends by its cooldown here, never by the router. */
                .idle_timeout_s = s->cooldown_s + 3600,
                .timeout_s = 660,
                .queue_max = 16,
        };
        struct lg_error err = {0};
        if (lg_router_set(c->d->router, &cfg, &err) < 0) {
                free(s);
                lg_http_respond_error(c->req, 500, "Internal", "%s", err.msg);
                return NULL;
        }
        uv_timer_init(c->d->loop, &s->cooldown);
        s->cooldown.data = s;
        s->next = sessions;
        sessions = s;
        session_touch(s);
        char line[300];
        snprintf(line, sizeof(line), "session `%s` started", id);
        lg_api_app_log(pkey, line, c->d);
        return s;
}

/* A session whose sandbox died (not just its interpreter, which the worker
 * restarts itself) has lost everything: say so rather than hand out a
 * fresh sandbox under the same identifier without a word. */
static bool session_lost(struct api_call *c, struct session *s) {
        struct lg_route_stats st;
        if (s->executions == 0 || lg_router_stats(c->d->router, s->key, &st) < 0)
                return false;
        if (st.instances + st.starting > 0)
                return false;
        lg_http_respond_error(c->req, 410, "SessionLost",
                              "session `%s` lost its sandbox; its variables and files are gone. The next call "
                              "starts a new session",
                              s->identifier);
        session_end(s, "session lost its sandbox");
        return true;
}

/* The worker's rules for the path of a file written with PUT (segments
 * after /files, decoded), so that an upload it would refuse binds no
 * session. A multipart POST names its files in the body, which the worker
 * reads as it streams: those names are checked there only. */
static bool upload_path_ok(struct api_call *c) {
        size_t total = 0;
        for (int i = 4; i < c->nseg; i++) {
                size_t n = strlen(c->seg[i]);
                if (n > SESSION_FILE_NAME_MAX) {
                        lg_http_respond_error(c->req, 400, "NameTooLong", "a file name is longer than %d bytes",
                                              SESSION_FILE_NAME_MAX);
                        return false;
                }
                total += n + (i > 4);
        }
        if (total > SESSION_FILE_PATH_MAX) {
                lg_http_respond_error(c->req, 400, "NameTooLong", "the file path is longer than %d bytes",
                                      SESSION_FILE_PATH_MAX);
                return false;
        }
        if (c->nseg > 4 && !strncmp(c->seg[c->nseg - 1], SESSION_UPLOAD_PREFIX, strlen(SESSION_UPLOAD_PREFIX))) {
                lg_http_respond_error(c->req, 400, "InvalidPath", "names starting with `%s` are reserved",
                                      SESSION_UPLOAD_PREFIX);
                return false;
        }
        return true;
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
                /* The server enforces SESSION_MAX_CODE: len fits. */
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

/* The worker's checks of an execution body (runtimes/session/supervisor.py,
 * do_execute), with its messages. */
static bool execution_body_ok(struct lg_http_request *req, const char *body, size_t len) {
        json_error_t jerr;
        _cleanup_(json_decrefp) json_t *doc = json_loadb(body ? body : "", len, 0, &jerr);
        if (!doc) {
                lg_http_respond_error(req, 400, "BadRequest", "the body is not JSON: %s", jerr.text);
                return false;
        }
        if (!json_is_object(doc)) {
                lg_http_respond_error(req, 400, "BadRequest", "%s",
                                      "the body must be a JSON object {\"code\": \"...\", \"timeoutSeconds\": 30}");
                return false;
        }
        if (!json_is_string(json_object_get(doc, "code"))) {
                lg_http_respond_error(req, 400, "BadRequest", "%s", "`code` must be a string");
                return false;
        }
        json_t *t = json_object_get(doc, "timeoutSeconds");
        if (t && !json_is_null(t) &&
            !(json_is_number(t) && json_number_value(t) > 0 && json_number_value(t) <= SESSION_MAX_TIMEOUT_S)) {
                lg_http_respond_error(req, 400, "BadRequest",
                                      "`timeoutSeconds` must be a number above 0 and at most %d",
                                      SESSION_MAX_TIMEOUT_S);
                return false;
        }
        return true;
}

static void execution_end(struct lg_http_request *req, void *ud) {
        struct execution *x = ud;
        if (x->out_of_memory) {
                lg_http_respond_error(req, 503, "Overloaded", "%s", "out of memory");
                return execution_free(x);
        }
        if (!execution_body_ok(req, x->body, x->len))
                return execution_free(x);
        /* The pool may have gone while the body came. */
        struct lg_error err = {0};
        struct lg_resource *pool = NULL;
        int r = lg_store_get(x->c.d->store, LG_KEY("SessionPool", x->ns, x->pool), &pool, &err);
        if (r < 0) {
                api_store_error(req, r, &err);
                return execution_free(x);
        }
        const char *id = lg_http_request_param(req, "identifier");
        struct session *s = get_session(&x->c, x->ns, x->pool, pool->spec, id, true);
        lg_resource_free(pool);
        if (!s || session_lost(&x->c, s))
                return execution_free(x);
        s->executions++;
        struct lg_router_body body = {TAKE_PTR(x->body), x->len};
        lg_router_handle_body(x->c.d->router, req, s->key, "/execute", body);
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
        lg_http_request_set_body_limit(c->req, SESSION_MAX_CODE);
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
        int r = lg_store_get(c->d->store, LG_KEY("SessionPool", ns, name), &pool, &err);
        if (r < 0 && !(sub == NULL && !strcmp(m, "PUT")))
                return api_store_error(c->req, r, &err);
        if (!sub) {
                if (!strcmp(m, "GET")) {
                        json_t *doc = lg_resource_to_json(pool);
                        char pkey[160], pname[160];
                        snprintf(pkey, sizeof(pkey), "%s/%s", ns, name);
                        node_pool_name(pname, sizeof(pname), ns, name);
                        struct lg_pool_stats ps = {0};
                        lg_node_pool_stats(c->d->node, pname, &ps);
                        json_object_set_new(doc, "status",
                                            json_pack("{s:i, s:i, s:i}", "ready", ps.ready, "starting", ps.starting,
                                                      "sessions", count_sessions(pkey)));
                        if (ps.failures)
                                json_object_set_new(json_object_get(doc, "status"), "lastError",
                                                    json_pack("{s:i, s:s}", "failures", ps.failures, "message",
                                                              ps.last_error));
                        api_json(c->req, 200, doc);
                } else if (!strcmp(m, "DELETE")) {
                        char pkey[160], pname[160];
                        snprintf(pkey, sizeof(pkey), "%s/%s", ns, name);
                        for (struct session *s = sessions, *next; s; s = next) {
                                next = s->next;
                                if (!strcmp(s->pool, pkey))
                                        session_end(s, "session pool deleted");
                        }
                        node_pool_name(pname, sizeof(pname), ns, name);
                        lg_node_pool_delete(c->d->node, pname);
                        r = lg_store_delete(c->d->store, LG_KEY("SessionPool", ns, name), 0, NULL, &err);
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
                char pkey[160];
                snprintf(pkey, sizeof(pkey), "%s/%s", ns, name);
                if (!rest) {
                        json_t *items = json_array();
                        for (struct session *s = sessions; s; s = s->next)
                                if (!strcmp(s->pool, pkey))
                                        json_array_append_new(items, session_json(s));
                        api_json(c->req, 200, json_pack("{s:o}", "items", items));
                } else {
                        char key[SESSION_KEY_MAX];
                        snprintf(key, sizeof(key), "%s/%s", pkey, rest);
                        struct session *s = find_session(key);
                        if (!s)
                                lg_http_respond_error(c->req, 404, "NotFound", "no session `%.128s` in pool `%s`",
                                                      rest, name);
                        else if (!strcmp(m, "DELETE")) {
                                session_end(s, "session deleted");
                                lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
                        } else
                                api_json(c->req, 200, session_json(s));
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
        struct session *s = get_session(c, ns, pool->name, pool->spec, id, create);
        lg_resource_free(pool);
        if (!s || session_lost(c, s))
                return;
        char target[4200];
        snprintf(target, sizeof(target), "/files%s%s", rest ? "/" : "", rest ? rest : "");
        lg_router_handle(c->d->router, c->req, s->key, target);
}

static void api_session_pools_root(struct api_call *c, const char *ns) {
        struct lg_error err = {0};
        const char *m = lg_http_request_method(c->req);
        if (!strcmp(m, "GET")) {
                struct lg_resource_list l = {0};
                int r = lg_store_list(c->d->store, "SessionPool", ns, NULL, &l, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                json_t *items = json_array();
                for (size_t i = 0; i < l.n; i++) {
                        json_t *doc = lg_resource_to_json(l.items[i]);
                        char pkey[160];
                        snprintf(pkey, sizeof(pkey), "%s/%s", ns, l.items[i]->name);
                        json_object_set_new(doc, "status", json_pack("{s:i}", "sessions", count_sessions(pkey)));
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
        json_t *spec = api_body_json(c->req);
        if (!spec)
                return;
        json_object_del(spec, "name");
        if (!api_only_fields(c->req, spec, "a session pool", pool_fields) ||
            pool_apply_node(c->d, c->req, ns, name, spec) < 0) {
                json_decref(spec);
                return;
        }
        if (!json_object_get(spec, "runtime"))
                json_object_set_new(spec, "runtime", json_string("python3"));
        struct lg_error err = {0};
        struct lg_resource *res = NULL;
        int r = lg_store_apply(c->d->store, LG_KEY("SessionPool", ns, name), NULL, spec, &res, &err);
        json_decref(spec);
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

int api_sessions_restore(struct lg_daemon *d, struct lg_error *err) {
        struct lg_resource_list l = {0};
        int r = lg_store_list(d->store, "SessionPool", NULL, NULL, &l, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < l.n; i++)
                pool_apply_node(d, NULL, l.items[i]->namespace, l.items[i]->name, l.items[i]->spec);
        lg_resource_list_free(&l);
        return 0;
}

bool api_sessions_streams(struct lg_http_request *req) {
        const char *const *seg;
        int n = lg_http_request_segments(req, &seg);
        return n >= 4 && !strcmp(seg[0], "v1") && !strcmp(seg[1], "sessionpools") &&
               (!strcmp(seg[3], "executions") || !strcmp(seg[3], "files"));
}
