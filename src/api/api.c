/* legiond's HTTP API: routing, authentication, and the resources other
 * than apps (namespaces, tokens, packages, pool groups). Conventions
 * (docs/api.md): JSON bodies, errors as {"error":{"code","message"}} with
 * the right status, bearer tokens scoped to a namespace, 404 rather than
 * 403 across namespaces so that names do not leak. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "api/api-internal.h"

/* ---- helpers ------------------------------------------------------------- */

bool api_is_admin(const struct api_call *c) { return !strcmp(c->token.namespace, LG_TOKEN_ADMIN); }

bool api_ns_allowed(struct api_call *c, const char *ns) {
        if (api_is_admin(c) || !strcmp(c->token.namespace, ns))
                return true;
        lg_http_respond_error(c->req, 404, "NotFound", "namespace `%s` not found", ns);
        return false;
}

bool api_ns_exists(struct api_call *c, const char *ns) {
        if (!api_ns_allowed(c, ns))
                return false;
        struct lg_resource *r = NULL;
        int rc = lg_store_get(c->api->store, LG_KEY("Namespace", "", ns), &r, NULL);
        lg_resource_free(r);
        if (rc < 0) {
                lg_http_respond_error(c->req, 404, "NotFound", "namespace `%s` not found", ns);
                return false;
        }
        return true;
}

int api_json(struct lg_http_request *req, int status, json_t *doc) {
        char *s = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        if (!s)
                return lg_http_respond_error(req, 500, "Internal", "%s", "cannot encode the response");
        size_t n = strlen(s);
        s[n] = '\n'; /* the NUL is not needed by respond; a newline reads better */
        static const struct lg_http_header h[] = {{"Content-Type", "application/json"}};
        int r = lg_http_respond(req, status, h, 1, s, n + 1);
        free(s);
        return r;
}

void api_error_text(int r, const struct lg_error *err, char *buf, size_t cap) {
        /* "App default/x not found: No such file or directory" reads better
         * without the errno text lg_error_set appends. */
        snprintf(buf, cap, "%s", err && err->msg[0] ? err->msg : strerror(-r));
        char suffix[128];
        snprintf(suffix, sizeof(suffix), ": %s", strerror(-r));
        size_t bl = strlen(buf), sl = strlen(suffix);
        if (bl > sl && !strcmp(buf + bl - sl, suffix))
                buf[bl - sl] = '\0';
}

struct api_status api_store_status(int r) {
        switch (r) {
        case -ENOENT: return (struct api_status){404, "NotFound"};
        case -EEXIST:
        case -ESTALE:
        case -EBUSY: return (struct api_status){409, "Conflict"};
        case -EINVAL: return (struct api_status){400, "BadRequest"};
        case -EFBIG:
        case -E2BIG: return (struct api_status){413, "TooLarge"};
        default: return (struct api_status){500, "Internal"};
        }
}

void api_store_error(struct lg_http_request *req, int r, const struct lg_error *err) {
        char msg[sizeof(err->msg)];
        api_error_text(r, err, msg, sizeof(msg));
        struct api_status s = api_store_status(r);
        lg_http_respond_error(req, s.status, s.code, "%s", msg);
}

json_t *api_body_json(struct lg_http_request *req) {
        size_t len = 0;
        const char *body = lg_http_request_body(req, &len);
        if (!body || len == 0) {
                lg_http_respond_error(req, 400, "BadRequest", "%s", "a JSON object body is required");
                return NULL;
        }
        json_error_t je;
        json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
        if (!doc) {
                lg_http_respond_error(req, 400, "BadRequest", "malformed JSON at line %d column %d: %s", je.line,
                                      je.column, je.text);
                return NULL;
        }
        if (!json_is_object(doc)) {
                json_decref(doc);
                lg_http_respond_error(req, 400, "BadRequest", "%s", "the body must be a JSON object");
                return NULL;
        }
        return doc;
}

bool api_only_fields(struct lg_http_request *req, const json_t *obj, const char *what,
                     const char *const *allowed) {
        struct lg_error err = {0};
        if (lg_spec_only_fields(obj, what, allowed, &err) == 0)
                return true;
        lg_http_respond_error(req, 400, "BadRequest", "%s", err.msg);
        return false;
}

/* ---- namespaces (lg_tenants: the namespace and its network) ---------------- */

/* A refused namespace change: a bad value or an interface the host does
 * not have are the caller's (400); the rest as the store's. */
static void tenant_error(struct lg_http_request *req, int r, const struct lg_error *err) {
        if (r == -ENODEV || r == -EINVAL)
                lg_http_respond_error(req, 400, "BadRequest", "%s", err->msg);
        else
                api_store_error(req, r, err);
}

/* GET /v1/pods/warm (admin): the warm pod sandboxes (docs/pods.md). */
static void api_pods_warm(struct api_call *c) {
        if (strcmp(lg_http_request_method(c->req), "GET")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET");
                return;
        }
        if (!api_is_admin(c)) {
                lg_http_respond_error(c->req, 403, "Forbidden", "%s", "the warm pod sandboxes need an admin token");
                return;
        }
        json_t *doc = lg_pods_warm_json(c->api->pods);
        if (!doc) {
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        api_json(c->req, 200, doc);
}

static void api_namespaces(struct api_call *c) {
        const char *m = lg_http_request_method(c->req);
        struct lg_error err = {0};
        if (!strcmp(m, "GET")) {
                struct lg_resource_list l = {0};
                int r = lg_store_list(c->api->store, "Namespace", "", NULL, &l, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                json_t *items = json_array();
                for (size_t i = 0; i < l.n; i++)
                        if (api_is_admin(c) || !strcmp(l.items[i]->name, c->token.namespace))
                                json_array_append_new(items, lg_tenants_json(l.items[i]));
                lg_resource_list_free(&l);
                api_json(c->req, 200, json_pack("{s:o}", "items", items));
                return;
        }
        if (strcmp(m, "POST")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET or POST");
                return;
        }
        if (!api_is_admin(c)) {
                lg_http_respond_error(c->req, 403, "Forbidden", "%s", "creating namespaces needs an admin token");
                return;
        }
        json_t *body = api_body_json(c->req);
        if (!body)
                return;
        static const char *const fields[] = {"name", "network", NULL};
        if (!api_only_fields(c->req, body, "a namespace", fields)) {
                json_decref(body);
                return;
        }
        struct lg_resource *res = NULL;
        int r = lg_tenants_create(c->api->tenants, json_string_value(json_object_get(body, "name")),
                                  json_object_get(body, "network"), &res, &err);
        json_decref(body);
        if (r < 0)
                return tenant_error(c->req, r, &err);
        api_json(c->req, r == LG_STORE_CREATED ? 201 : 200, lg_tenants_json(res));
        lg_resource_free(res);
}

static void api_namespace(struct api_call *c, const char *ns) {
        const char *m = lg_http_request_method(c->req);
        if (!api_ns_exists(c, ns))
                return;
        struct lg_error err = {0};
        struct lg_resource *res = NULL;
        if (!strcmp(m, "GET")) {
                int r = lg_store_get(c->api->store, LG_KEY("Namespace", "", ns), &res, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                api_json(c->req, 200, lg_tenants_json(res));
                lg_resource_free(res);
                return;
        }
        if (strcmp(m, "DELETE") && strcmp(m, "PUT")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET, PUT or DELETE");
                return;
        }
        if (!api_is_admin(c)) {
                lg_http_respond_error(c->req, 403, "Forbidden", "%s namespaces needs an admin token",
                                      strcmp(m, "PUT") ? "deleting" : "changing");
                return;
        }
        if (!strcmp(m, "PUT")) {
                json_t *body = api_body_json(c->req);
                if (!body)
                        return;
                /* A name in the body, as POST has it, must be this one. */
                static const char *const fields[] = {"name", "network", NULL};
                const char *name = json_string_value(json_object_get(body, "name"));
                if (!api_only_fields(c->req, body, "a namespace", fields)) {
                        json_decref(body);
                        return;
                }
                if (json_object_get(body, "name") && (!name || strcmp(name, ns))) {
                        lg_http_respond_error(c->req, 400, "BadRequest", "`name` must be `%s` (the path's) if given",
                                              ns);
                        json_decref(body);
                        return;
                }
                int r = lg_tenants_set(c->api->tenants, ns, json_object_get(body, "network"), &res, &err);
                json_decref(body);
                if (r < 0)
                        return tenant_error(c->req, r, &err);
                api_json(c->req, 200, lg_tenants_json(res));
                lg_resource_free(res);
                return;
        }
        int r = lg_tenants_delete(c->api->tenants, ns, &err);
        if (r < 0)
                return api_store_error(c->req, r, &err);
        lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
}

/* ---- tokens --------------------------------------------------------------- */

static json_t *token_json(const struct lg_token *t) {
        char ct[32];
        lg_store_format_time(t->created_at, ct, sizeof(ct));
        json_t *doc = json_pack("{s:s, s:s, s:s, s:s}", "id", t->id, "namespace", t->namespace, "description",
                                t->description, "createdAt", ct);
        if (doc && t->app[0])
                json_object_set_new(doc, "app", json_string(t->app));
        return doc;
}

/* The tokens of namespace ns, or with app the keys of app ns/app
 * (lg_apps: -ENOENT when there is no such app). */
static int token_list(struct api_call *c, const char *ns, const char *app, struct lg_token_list *l,
                      struct lg_error *err) {
        return app ? lg_apps_key_list(c->api->apps, ns, app, l, err) : lg_store_token_list(c->api->store, ns, l, err);
}

/* /v1/namespaces/{ns}/tokens[/{id}], and with app the app's keys
 * /v1/namespaces/{ns}/apps/{app}/keys[/{id}]: the same rows, an app key
 * being a token scoped to one app (docs/api.md, "Authentication"). */
static void api_tokens(struct api_call *c, const char *ns, const char *app, const char *id) {
        const char *m = lg_http_request_method(c->req);
        struct lg_error err = {0};
        if (!api_ns_exists(c, ns))
                return;
        if (id) {
                if (strcmp(m, "DELETE")) {
                        lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use DELETE");
                        return;
                }
                int r = 0;
                if (app) {
                        r = lg_apps_key_delete(c->api->apps, ns, app, id, &err);
                } else {
                        struct lg_token_list l = {0};
                        r = lg_store_token_list(c->api->store, ns, &l, &err);
                        bool found = false;
                        for (size_t i = 0; r >= 0 && i < l.n; i++)
                                found |= !strcmp(l.items[i].id, id);
                        lg_token_list_free(&l);
                        if (r >= 0 && !found) {
                                lg_http_respond_error(c->req, 404, "NotFound", "token `%s` not found", id);
                                return;
                        }
                        if (r >= 0)
                                r = lg_store_token_delete(c->api->store, id, &err);
                }
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
                return;
        }
        if (!strcmp(m, "GET")) {
                struct lg_token_list l = {0};
                int r = token_list(c, ns, app, &l, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                json_t *items = json_array();
                for (size_t i = 0; i < l.n; i++)
                        json_array_append_new(items, token_json(&l.items[i]));
                lg_token_list_free(&l);
                api_json(c->req, 200, json_pack("{s:o}", "items", items));
                return;
        }
        if (strcmp(m, "POST")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET or POST");
                return;
        }
        size_t len = 0;
        lg_http_request_body(c->req, &len);
        json_t *body = len ? api_body_json(c->req) : json_object();
        if (!body)
                return;
        static const char *const fields[] = {"description", NULL};
        if (!api_only_fields(c->req, body, app ? "an app key" : "a token", fields)) {
                json_decref(body);
                return;
        }
        const char *desc = json_string_value(json_object_get(body, "description"));
        struct lg_token t;
        char secret[LG_TOKEN_SECRET_SIZE];
        int r = app ? lg_apps_key_create(c->api->apps, ns, app, desc ? desc : "", &t, secret, &err)
                    : lg_store_token_create(c->api->store, ns, desc ? desc : "", 0, &t, secret, &err);
        json_decref(body);
        if (r < 0)
                return api_store_error(c->req, r, &err);
        json_t *doc = token_json(&t);
        json_object_set_new(doc, app ? "key" : "token", json_string(secret));
        explicit_bzero(secret, sizeof(secret));
        api_json(c->req, 201, doc);
}

/* ---- packages (streamed upload, see lg_apps_upload_*) ----------------------- */

static void upload_error(struct lg_http_request *req, int r, const struct lg_error *err) {
        if (r == -EFBIG)
                lg_http_respond_error(req, 413, "TooLarge", "%s", err->msg);
        else if (r == -E2BIG || r == -EINVAL || r == -EPERM || r == -EBADMSG || r == -ELOOP ||
                 r == -ENAMETOOLONG || r == -EILSEQ || r == -ENOTDIR || r == -EEXIST || r == -EPROTO)
                lg_http_respond_error(req, 400, "BadPackage", "%s", err->msg);
        else
                lg_http_respond_error(req, 500, "Internal", "%s", err->msg[0] ? err->msg : strerror(-r));
}

static void upload_data(struct lg_http_request *req, const char *data, size_t len, void *ud) {
        (void) req;
        lg_apps_upload_write(ud, data, len);
}

static void upload_done(int status, const struct lg_package *pkg, const struct lg_error *err, void *ud) {
        struct lg_http_request *req = ud;
        if (status < 0)
                return upload_error(req, status, err);
        json_t *top = json_array();
        for (size_t i = 0; i < pkg->info->n_top; i++)
                json_array_append_new(top, json_string(pkg->info->top[i]));
        api_json(req, 201,
                 json_pack("{s:s, s:I, s:I, s:I, s:o}", "digest", pkg->digest, "size", (json_int_t) pkg->size, "files",
                           (json_int_t) pkg->info->n_files, "bytes", (json_int_t) pkg->info->total_bytes, "top", top));
}

static void upload_end(struct lg_http_request *req, void *ud) {
        struct lg_error err = {0};
        int r = lg_apps_upload_finish(ud, upload_done, req, &err);
        if (r < 0)
                upload_error(req, r, &err);
}

static void upload_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) reason;
        lg_apps_upload_cancel(ud);
        lg_http_response_abort(req);
}

static void api_packages(struct api_call *c, const char *ns) {
        const char *m = lg_http_request_method(c->req);
        if (!api_ns_exists(c, ns))
                return;
        if (strcmp(m, "POST")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s",
                                      "POST a zip or tar.gz archive as the request body");
                return;
        }
        struct lg_error err = {0};
        lg_apps_upload *u = NULL;
        int r = lg_apps_upload_begin(c->api->apps, &u, &err);
        if (r < 0) {
                lg_http_respond_error(c->req, 500, "Internal", "%s", err.msg);
                return;
        }
        lg_http_request_set_body_limit(c->req, lg_apps_upload_max_bytes(c->api->apps));
        lg_http_request_on_abort(c->req, upload_abort, u);
        if (lg_http_request_read(c->req, upload_data, upload_end, u) < 0) {
                /* The server answered 413 itself; abort will follow. */
        }
}

/* ---- package pushes (POST /v1/packages/push?ref=REF, lg_apps_push_*) ----- */

static void push_data(struct lg_http_request *req, const char *data, size_t len, void *ud) {
        (void) req;
        lg_apps_push_write(ud, data, len);
}

static void push_done(int status, const struct lg_apps_pushed *p, const struct lg_error *err, bool registry,
                      void *ud) {
        struct lg_http_request *req = ud;
        if (status < 0 && registry)
                return (void) lg_http_respond_error(req, 502, "RegistryFailed", "%s", err->msg);
        if (status < 0)
                return upload_error(req, status, err);
        json_t *doc = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:b}", "ref", p->ref, "digest", p->digest, "archive",
                                p->archive, "size", (json_int_t) p->size, "files", (json_int_t) p->info->n_files,
                                "bytes", (json_int_t) p->info->total_bytes, "lazy", p->lazy);
        if (doc && p->lazy)
                json_object_set_new(doc, "lazyForm",
                                    json_pack("{s:I, s:I, s:I, s:i}", "metaSize", (json_int_t) p->meta_size,
                                              "blobSize", (json_int_t) p->blob_size, "chunks",
                                              (json_int_t) p->n_chunks, "chunkSize", (int) p->chunk_size));
        api_json(req, 201, doc);
}

static void push_end(struct lg_http_request *req, void *ud) {
        struct lg_error err = {0};
        int r = lg_apps_push_finish(ud, push_done, req, &err);
        if (r < 0)
                upload_error(req, r, &err);
}

static void push_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) reason;
        lg_apps_push_cancel(ud);
        lg_http_response_abort(req);
}

/* legiond pushes to the registry named: an admin's, as image pulls are. */
static void api_package_push(struct api_call *c) {
        if (strcmp(lg_http_request_method(c->req), "POST")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s",
                                      "POST the package (a zip or tar.gz) with ?ref=REGISTRY/REPO:TAG");
                return;
        }
        if (!api_is_admin(c)) {
                lg_http_respond_error(c->req, 403, "Forbidden", "%s", "pushing packages needs an admin token");
                return;
        }
        const char *ref = lg_http_request_param(c->req, "ref");
        const char *lazy = lg_http_request_param(c->req, "lazy");
        const char *cs = lg_http_request_param(c->req, "chunkSize");
        const char *insecure = lg_http_request_param(c->req, "insecure");
        long long chunk = 0;
        if (!ref || (lazy && strcmp(lazy, "true") && strcmp(lazy, "false")) ||
            (insecure && strcmp(insecure, "true") && strcmp(insecure, "false")) ||
            (cs && lg_parse_int(cs, 4096, 4 << 20, &chunk) < 0)) {
                lg_http_respond_error(c->req, 400, "BadRequest", "%s",
                                      "give ?ref=REGISTRY/REPO:TAG, optionally &lazy=true|false, "
                                      "&insecure=true|false (plain HTTP) and &chunkSize=BYTES (4096 to 4194304)");
                return;
        }
        struct lg_error err = {0};
        lg_apps_push *p = NULL;
        int r = lg_apps_push_begin(c->api->apps, ref, (uint32_t) chunk, lazy && !strcmp(lazy, "false"),
                                   insecure && !strcmp(insecure, "true"), &p, &err);
        if (r < 0) {
                lg_http_respond_error(c->req, r == -EINVAL ? 400 : r == -ENOTSUP ? 422 : 500,
                                      r == -EINVAL ? "BadRequest" : "Internal", "%s", err.msg);
                return;
        }
        lg_http_request_set_body_limit(c->req, LG_APPS_PUSH_MAX);
        lg_http_request_on_abort(c->req, push_abort, p);
        if (lg_http_request_read(c->req, push_data, push_end, p) < 0) {
                /* The server answered 413 itself; abort will follow. */
        }
}

static bool is_push_path(struct lg_http_request *req) {
        const char *const *seg;
        int n = lg_http_request_segments(req, &seg);
        return n == 3 && !strcmp(seg[0], "v1") && !strcmp(seg[1], "packages") && !strcmp(seg[2], "push");
}

/* ---- routing ------------------------------------------------------------- */

/* The Host-header form of the data path (lg_api_host_app): with
 * --fn-domain D, "APP.NS.D"; without, "APP.NS.fn.<anything>" (for example
 * hello.default.fn.localhost:7070). Either routes like /fn/NS/APP with the
 * whole path. Names are DNS labels, so they fit in a host name as they are. */
static bool host_route(struct lg_api *api, struct lg_http_request *req, char *ns, char *app) {
        return lg_api_host_app(lg_http_request_header(req, "Host"), api->fn_domain, ns, app);
}

static bool is_data_path(struct lg_http_request *req, const char **ns, const char **app) {
        const char *const *seg;
        int n = lg_http_request_segments(req, &seg);
        if (n >= 3 && !strcmp(seg[0], "fn")) {
                *ns = seg[1];
                *app = seg[2];
                return true;
        }
        return false;
}

enum lg_http_body_mode lg_api_on_head(struct lg_http_request *req, void *userdata) {
        struct lg_api *api = userdata;
        const char *ns, *app;
        const char *const *seg;
        int n = lg_http_request_segments(req, &seg);
        char hns[LG_STORE_NAME_MAX + 1], happ[LG_STORE_NAME_MAX + 1];
        if (is_data_path(req, &ns, &app) || host_route(api, req, hns, happ))
                return LG_HTTP_BODY_STREAM;
        /* POST /v1/namespaces/{ns}/packages: archives are streamed to disk. */
        if (n == 4 && !strcmp(seg[0], "v1") && !strcmp(seg[3], "packages") &&
            !strcmp(lg_http_request_method(req), "POST"))
                return LG_HTTP_BODY_STREAM;
        if (api_sessions_streams(req) || api_images_streams(req) || is_push_path(req))
                return LG_HTTP_BODY_STREAM;
        return LG_HTTP_BODY_BUFFER;
}

/* The token (or app key) a request presents: Authorization's bearer, or
 * on the data path the x-legion-key header. false when it has none or an
 * unknown or expired one, answered 401 -- the same answers whichever app
 * the request names, so that they tell nothing about it. */
static bool credential(struct lg_api *api, struct lg_http_request *req, bool data_path, struct lg_token *tok) {
        const char *h = lg_http_request_header(req, "Authorization");
        const char *secret = h && strncasecmp(h, "Bearer ", 7) == 0 ? h + 7 : NULL;
        const char *key = data_path ? lg_http_request_header(req, "x-legion-key") : NULL;
        if (key)
                secret = key;
        if (!secret) {
                lg_http_respond_error(req, 401, "Unauthorized", "%s",
                                      "missing `Authorization: Bearer <token>` (see $LEGION_HOME/admin.token)");
                return false;
        }
        struct lg_error err = {0};
        int r = lg_store_token_lookup(api->store, secret, tok, &err);
        if (r == -EKEYEXPIRED) {
                lg_http_respond_error(req, 401, "Unauthorized", "%s", "the token has expired");
                return false;
        }
        if (r < 0) {
                lg_http_respond_error(req, 401, "Unauthorized", "%s", key ? "invalid app key" : "invalid token");
                return false;
        }
        return true;
}

/* The API: an API token, never an app key. */
static bool authenticate(struct lg_api *api, struct lg_http_request *req, struct lg_token *tok) {
        if (!credential(api, req, false, tok))
                return false;
        if (tok->app[0]) {
                lg_http_respond_error(req, 401, "Unauthorized", "%s",
                                      "an app key opens only its app's URL, not the API");
                return false;
        }
        /* Its connection now gets the full keep-alive time (http.h). */
        lg_http_request_set_authenticated(req);
        return true;
}

/* A call of app ns/app (docs/security.md, "Public apps"): the app's auth
 * is asked of memory before any credential is looked at. none: anyone,
 * and the connection stays an anonymous one (its short idle time, first
 * to be closed under max-connections). keys: one of its keys or a token
 * that may use the namespace; token: such a token. An app not known is
 * token, so without a token its answer is the 401 a token app gives. */
static void data_call(struct api_call *c, const char *ns, const char *app, const char *target) {
        enum lg_app_auth auth = lg_apps_auth(c->api->apps, ns, app);
        if (auth != LG_APP_AUTH_NONE) {
                if (!credential(c->api, c->req, true, &c->token))
                        return;
                if (c->token.app[0]) {
                        /* The same answer for any other app, whatever its auth. */
                        if (auth != LG_APP_AUTH_KEYS || strcmp(c->token.namespace, ns) || strcmp(c->token.app, app)) {
                                lg_http_respond_error(c->req, 401, "Unauthorized", "%s",
                                                      "this app key is not for this app");
                                return;
                        }
                } else if (!api_ns_allowed(c, ns)) {
                        return;
                }
                lg_http_request_set_authenticated(c->req);
        }
        api_data_path(c->api, c->req, ns, app, target);
}

void lg_api_on_request(struct lg_http_request *req, void *userdata) {
        struct lg_api *api = userdata;
        const char *const *seg;
        int n = lg_http_request_segments(req, &seg);
        struct api_call c = {.api = api, .req = req, .seg = seg, .nseg = n};
        /* An app's host name is all the app's: its /healthz, /api/... and
         * /version are its own, not legiond's. */
        char hns[LG_STORE_NAME_MAX + 1], happ[LG_STORE_NAME_MAX + 1];
        if (host_route(api, req, hns, happ))
                return data_call(&c, hns, happ, lg_http_request_target(req));
        if (n == 1 && !strcmp(seg[0], "healthz")) {
                api_json(req, 200, json_pack("{s:s}", "status", "ok"));
                return;
        }
        /* The Kubernetes API authenticates itself: its 401 is a Status. */
        if (api_kube_path(seg, n))
                return api_kube(&c);
        /* The registry API answers in its own form, also its 401. */
        if (n >= 1 && !strcmp(seg[0], "v2"))
                return api_v2(&c);
        const char *ns, *app;
        if (is_data_path(req, &ns, &app)) {
                /* The function sees the path after /fn/{ns}/{app}. */
                const char *target = lg_http_request_target(req);
                const char *p = target;
                for (int i = 0; i < 3 && p; i++)
                        p = strchr(p + 1, '/');
                const char *q = strchr(target, '?');
                char buf[8192];
                if (!p || (q && p > q))
                        snprintf(buf, sizeof(buf), "/%s", q ? q : "");
                else
                        snprintf(buf, sizeof(buf), "%s", p);
                return data_call(&c, ns, app, buf);
        }
        if (!authenticate(api, req, &c.token))
                return;
        if (n >= 2 && !strcmp(seg[0], "v1") && !strcmp(seg[1], "images"))
                return api_images(&c);
        if (is_push_path(req))
                return api_package_push(&c);
        if (n == 3 && !strcmp(seg[0], "v1") && !strcmp(seg[1], "pods") && !strcmp(seg[2], "warm"))
                return api_pods_warm(&c);
        if (api_jobs_path(seg, n))
                return api_jobs(&c);
        if (n < 2 || strcmp(seg[0], "v1")) {
                lg_http_respond_error(req, 404, "NotFound", "no such endpoint `%s`", lg_http_request_path(req));
                return;
        }
        if (!strcmp(seg[1], "namespaces")) {
                if (n == 2)
                        return api_namespaces(&c);
                if (n == 3)
                        return api_namespace(&c, seg[2]);
                if (n >= 4 && !strcmp(seg[3], "tokens") && n <= 5)
                        return api_tokens(&c, seg[2], NULL, n == 5 ? seg[4] : NULL);
                if (n == 4 && !strcmp(seg[3], "packages"))
                        return api_packages(&c, seg[2]);
                if (n == 4 && !strcmp(seg[3], "apps"))
                        return api_apps(&c, seg[2]);
                if (n == 5 && !strcmp(seg[3], "apps"))
                        return api_app(&c, seg[2], seg[4]);
                if (n == 6 && !strcmp(seg[3], "apps") && !strcmp(seg[5], "logs"))
                        return api_app_logs(&c, seg[2], seg[4]);
                if ((n == 6 || n == 7) && !strcmp(seg[3], "apps") && !strcmp(seg[5], "keys"))
                        return api_tokens(&c, seg[2], seg[4], n == 7 ? seg[6] : NULL);
        }
        if (!strcmp(seg[1], "poolgroups") && n <= 3)
                return api_pools(&c, n == 3 ? seg[2] : NULL);
        if (!strcmp(seg[1], "sessionpools"))
                return api_sessions(&c);
        lg_http_respond_error(req, 404, "NotFound", "no such endpoint `%s`", lg_http_request_path(req));
}

int lg_api_new(const struct lg_api_config *cfg, lg_api **ret, struct lg_error *err) {
        lg_api *api = calloc(1, sizeof(*api));
        if (!api)
                return lg_error_set(err, ENOMEM, "api");
        api->loop = cfg->loop;
        api->store = cfg->store;
        api->apps = cfg->apps;
        api->tenants = cfg->tenants;
        api->sessions = cfg->sessions;
        api->pods = cfg->pods;
        api->jobs = cfg->jobs;
        api->images = cfg->images;
        api->image_jobs = cfg->image_jobs;
        api->router = cfg->router;
        api->blobs = cfg->blobs;
        api->fn_domain = cfg->fn_domain;
        api_kube_init(api);
        *ret = api;
        return 0;
}

static void api_closed(uv_handle_t *h) { free(h->data); }

void lg_api_stop(lg_api *api) {
        api->router = NULL;
        api_jobs_stop(api);
}

lg_router *api_router(lg_api *api, struct lg_http_request *req) {
        if (!api->router)
                lg_http_respond_error(req, 503, "Unavailable", "%s", "legiond is stopping");
        return api->router;
}

void lg_api_free(lg_api *api) {
        if (!api)
                return;
        lg_store_set_commit_hook(api->store, NULL, NULL);
        api->kick.data = api;
        uv_close((uv_handle_t *) &api->kick, api_closed);
}
