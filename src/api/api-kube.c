/* The Kubernetes-compatible API (docs/pods.md, "API"): authentication and
 * metav1.Status errors for everything under /api, /apis, /openapi and
 * /version, discovery, the namespaces and events kubectl reads, and the
 * meta.k8s.io/v1 Table that `kubectl get` asks for. Pods themselves are in
 * api-pods.c (CRUD, patch) and api-pods-stream.c (watch, logs).
 *
 * Discovery answers the legacy forms only: kubectl 1.32 asks /api and /apis
 * for aggregated discovery (apidiscovery.k8s.io/v2) first, and falls back to
 * the legacy documents when the Content-Type of the answer says plain
 * application/json. OpenAPI: both kubectl versions validate `apply`
 * manifests against the server's OpenAPI; /openapi/v2 and /openapi/v3 answer
 * 404, which kubectl takes as "the server publishes no schema" and skips
 * client-side validation; the server validates strictly anyway (every
 * unsupported field is a 422). */
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "api/api-internal.h"
#include "kube/kube.h"

#define KUBE_VERSION_MAJOR "1"
#define KUBE_VERSION_MINOR "29"

/* ---- responses ------------------------------------------------------------------ */

int kube_json(struct lg_http_request *req, int status, json_t *doc) {
        if (!doc)
                return lg_http_respond_error(req, 500, "Internal", "%s", "out of memory");
        char *s = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        if (!s)
                return lg_http_respond_error(req, 500, "Internal", "%s", "cannot encode the response");
        size_t n = strlen(s);
        s[n] = '\n';
        static const struct lg_http_header h[] = {{"Content-Type", "application/json"}};
        int r = lg_http_respond(req, status, h, 1, s, n + 1);
        free(s);
        return r;
}

json_t *kube_status_doc(int code, const char *reason, json_t *details, const char *msg) {
        json_t *st = json_pack("{s:s, s:s, s:{}, s:s, s:s, s:s, s:i}", "kind", "Status", "apiVersion", "v1",
                               "metadata", "status", "Failure", "message", msg, "reason", reason, "code", code);
        if (st && details)
                json_object_set(st, "details", details);
        json_decref(details);
        return st;
}

void kube_status(struct lg_http_request *req, int code, const char *reason, json_t *details, const char *fmt, ...) {
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        kube_json(req, code, kube_status_doc(code, reason, details, msg));
}

void kube_not_found(struct lg_http_request *req, const char *kind, const char *name) {
        kube_status(req, 404, "NotFound", json_pack("{s:s, s:s}", "name", name, "kind", kind), "%s \"%s\" not found",
                    kind, name);
}

void kube_store_error(struct lg_http_request *req, int r, const struct lg_error *err, const char *name) {
        const char *msg = err && err->msg[0] ? err->msg : strerror(-r);
        switch (r) {
        case -ENOENT: return kube_not_found(req, "pods", name);
        case -EEXIST:
                return kube_status(req, 409, "AlreadyExists", json_pack("{s:s, s:s}", "name", name, "kind", "pods"),
                                   "pods \"%s\" already exists", name);
        case -ESTALE:
                return kube_status(req, 409, "Conflict", json_pack("{s:s, s:s}", "name", name, "kind", "pods"),
                                   "Operation cannot be fulfilled on pods \"%s\": the object has been modified; "
                                   "please apply your changes to the latest version and try again",
                                   name);
        case -EINVAL: return kube_status(req, 400, "BadRequest", NULL, "%s", msg);
        case -E2BIG:
        case -EFBIG: return kube_status(req, 413, "RequestEntityTooLarge", NULL, "%s", msg);
        case -EIDRM: return kube_status(req, 410, "Expired", NULL, "%s", msg);
        default: return kube_status(req, 500, "InternalError", NULL, "%s", msg);
        }
}

/* ---- access ------------------------------------------------------------------------ */

/* The namespace exists and the caller may use it; else a 404 Status (also
 * for another namespace's token: names do not leak). */
bool kube_ns(struct api_call *c, const char *ns) {
        if (!lg_store_valid_name(ns) || !(api_is_admin(c) || !strcmp(c->token.namespace, ns))) {
                kube_not_found(c->req, "namespaces", ns);
                return false;
        }
        struct lg_resource *r = NULL;
        int rc = lg_store_get(c->api->store, LG_KEY("Namespace", "", ns), &r, NULL);
        lg_resource_free(r);
        if (rc < 0) {
                kube_not_found(c->req, "namespaces", ns);
                return false;
        }
        return true;
}

/* The bearer token. kubectl sends a kubeconfig's token only over TLS,
 * so kubeconfigs point at legiond's HTTPS listener (`legion kubeconfig`,
 * docs/pods.md). */
static bool kube_authenticate(struct api_call *c) {
        const char *h = lg_http_request_header(c->req, "Authorization");
        const char *secret = NULL;
        if (h && strncasecmp(h, "Bearer ", 7) == 0)
                secret = h + 7;
        if (!secret) {
                kube_status(c->req, 401, "Unauthorized", NULL, "%s",
                            lg_http_request_tls(c->req)
                                    ? "Unauthorized: missing `Authorization: Bearer <token>`"
                                    : "Unauthorized: missing `Authorization: Bearer <token>` (kubectl sends "
                                      "tokens only over HTTPS: see `legion kubeconfig`)");
                return false;
        }
        int r = lg_store_token_lookup(c->api->store, secret, &c->token, NULL);
        if (r >= 0 && c->token.app[0]) {
                kube_status(c->req, 401, "Unauthorized", NULL, "%s",
                            "Unauthorized: an app key opens only its app's URL, not the API");
                return false;
        }
        if (r < 0) {
                kube_status(c->req, 401, "Unauthorized", NULL, "Unauthorized: %s",
                            r == -EKEYEXPIRED ? "the token has expired" : "invalid token");
                return false;
        }
        lg_http_request_set_authenticated(c->req);
        return true;
}

/* ---- tables ------------------------------------------------------------------------- */

/* Accept: application/json;as=Table;v=v1;g=meta.k8s.io (kubectl get). */
bool kube_wants_table(struct lg_http_request *req) {
        const char *a = lg_http_request_header(req, "Accept");
        if (!a)
                return false;
        /* Each media range: look for as=Table with g=meta.k8s.io and v=v1. */
        const char *p = a;
        while (p && *p) {
                const char *end = strchr(p, ',');
                size_t n = end ? (size_t) (end - p) : strlen(p);
                char range[256];
                snprintf(range, sizeof(range), "%.*s", (int) (n < sizeof(range) ? n : sizeof(range) - 1), p);
                for (char *q = range; *q; q++)
                        if (*q == ' ')
                                memmove(q, q + 1, strlen(q));
                if (strstr(range, ";as=Table") && strstr(range, ";g=meta.k8s.io") && strstr(range, ";v=v1") &&
                    !strstr(range, ";v=v1beta1"))
                        return true;
                p = end ? end + 1 : NULL;
        }
        return false;
}

static json_t *column(const char *name, const char *type, const char *format, int priority, const char *desc) {
        return json_pack("{s:s, s:s, s:s, s:s, s:i}", "name", name, "type", type, "format", format, "description",
                         desc, "priority", priority);
}

/* A Table for pods (a list, or one watch event's object); steals nothing. */
json_t *kube_pod_table(json_t *const *pods, size_t n, const char *rv, const char *include) {
        json_t *cols = json_array();
        json_array_append_new(cols, column("Name", "string", "name", 0,
                                           "Name must be unique within a namespace."));
        json_array_append_new(cols, column("Ready", "string", "", 0,
                                           "The aggregate readiness state of this pod for accepting traffic."));
        json_array_append_new(cols, column("Status", "string", "", 0,
                                           "The aggregate status of the containers in this pod."));
        json_array_append_new(cols, column("Restarts", "string", "", 0,
                                           "The number of times the containers in this pod have been restarted."));
        json_array_append_new(cols, column("Age", "string", "", 0, "CreationTimestamp is a timestamp representing "
                                                                   "the server time when this object was created."));
        json_array_append_new(cols, column("IP", "string", "", 1, "IP address allocated to the pod."));
        json_array_append_new(cols, column("Node", "string", "", 1, "Name of the node the pod is on."));
        json_array_append_new(cols, column("Nominated Node", "string", "", 1,
                                           "Name of the node where the pod is nominated to run."));
        json_array_append_new(cols, column("Readiness Gates", "string", "", 1, "Pod readiness gates."));
        json_t *rows = json_array();
        for (size_t i = 0; i < n; i++) {
                const json_t *pod = pods[i];
                json_t *md = json_object_get(pod, "metadata");
                char ready[48], restarts[64], age[32];
                struct lg_kube_pod_summary sum;
                int64_t now = (int64_t) time(NULL);
                lg_kube_pod_summarize(pod, &sum);
                snprintf(ready, sizeof(ready), "%d/%d", sum.ready, sum.total);
                lg_kube_pod_restarts(&sum, now, restarts, sizeof(restarts));
                lg_kube_age(json_string_value(json_object_get(md, "creationTimestamp")), now, age, sizeof(age));
                const char *ip = json_string_value(json_object_get(json_object_get(pod, "status"), "podIP"));
                const char *node = json_string_value(json_object_get(json_object_get(pod, "spec"), "nodeName"));
                const char *nom =
                        json_string_value(json_object_get(json_object_get(pod, "status"), "nominatedNodeName"));
                json_t *cells = json_pack("[s, s, s, s, s, s, s, s, s]", json_string_value(json_object_get(md, "name")),
                                          ready, sum.status, restarts, age, ip && *ip ? ip : "<none>",
                                          node && *node ? node : "<none>", nom && *nom ? nom : "<none>", "<none>");
                json_t *row = json_pack("{s:o}", "cells", cells);
                if (include && !strcmp(include, "Object"))
                        json_object_set(row, "object", (json_t *) pod);
                else if (!include || strcmp(include, "None"))
                        json_object_set_new(row, "object",
                                            json_pack("{s:s, s:s, s:O}", "kind", "PartialObjectMetadata",
                                                      "apiVersion", "meta.k8s.io/v1", "metadata", md));
                json_array_append_new(rows, row);
        }
        return json_pack("{s:s, s:s, s:{s:s}, s:o, s:o}", "kind", "Table", "apiVersion", "meta.k8s.io/v1", "metadata",
                         "resourceVersion", rv ? rv : "", "columnDefinitions", cols, "rows", rows);
}

/* ---- discovery ------------------------------------------------------------------------- */

static json_t *resource(const char *name, const char *kind, bool namespaced, const char *verbs, bool pods) {
        json_t *v = json_array();
        char buf[200];
        snprintf(buf, sizeof(buf), "%s", verbs);
        for (char *save = NULL, *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save))
                json_array_append_new(v, json_string(t));
        json_t *r = json_pack("{s:s, s:s, s:b, s:s, s:o}", "name", name, "singularName", "", "namespaced", namespaced,
                              "kind", kind, "verbs", v);
        if (pods) {
                json_object_set_new(r, "singularName", json_string("pod"));
                json_object_set_new(r, "shortNames", json_pack("[s]", "po"));
                json_object_set_new(r, "categories", json_pack("[s]", "all"));
        } else if (!strchr(name, '/')) {
                char singular[64];
                snprintf(singular, sizeof(singular), "%.*s", (int) strlen(name) - 1, name);
                json_object_set_new(r, "singularName", json_string(singular));
                if (!strcmp(name, "namespaces"))
                        json_object_set_new(r, "shortNames", json_pack("[s]", "ns"));
                if (!strcmp(name, "events"))
                        json_object_set_new(r, "shortNames", json_pack("[s]", "ev"));
        }
        return r;
}

static void discovery(struct api_call *c) {
        const char *const *seg = c->seg;
        int n = c->nseg;
        if (strcmp(lg_http_request_method(c->req), "GET"))
                return kube_status(c->req, 405, "MethodNotAllowed", NULL, "the server does not allow this method");
        if (n == 1 && !strcmp(seg[0], "version")) {
                kube_json(c->req, 200,
                          json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "major", KUBE_VERSION_MAJOR,
                                    "minor", KUBE_VERSION_MINOR, "gitVersion",
                                    "v" KUBE_VERSION_MAJOR "." KUBE_VERSION_MINOR ".0-legion", "gitCommit", "",
                                    "gitTreeState", "clean", "buildDate", "1970-01-01T00:00:00Z", "goVersion",
                                    "none", "compiler", "legion", "platform", "linux/amd64"));
                return;
        }
        if (n == 1 && !strcmp(seg[0], "api")) {
                kube_json(c->req, 200,
                          json_pack("{s:s, s:[s], s:[{s:s, s:s}]}", "kind", "APIVersions", "versions", "v1",
                                    "serverAddressByClientCIDRs", "clientCIDR", "0.0.0.0/0", "serverAddress", ""));
                return;
        }
        if (n == 1 && !strcmp(seg[0], "apis")) {
                kube_json(c->req, 200, json_pack("{s:s, s:s, s:[]}", "kind", "APIGroupList", "apiVersion", "v1", "groups"));
                return;
        }
        if (n == 2 && !strcmp(seg[0], "api") && !strcmp(seg[1], "v1")) {
                json_t *res = json_array();
                json_array_append_new(
                        res, resource("pods", "Pod", true, "create delete get list patch update watch",
                                      true));
                json_array_append_new(res, resource("pods/log", "Pod", true, "get", false));
                json_array_append_new(res, resource("pods/status", "Pod", true, "get", false));
                json_array_append_new(res, resource("namespaces", "Namespace", false, "get list", false));
                json_array_append_new(res, resource("events", "Event", true, "list", false));
                kube_json(c->req, 200,
                          json_pack("{s:s, s:s, s:s, s:o}", "kind", "APIResourceList", "apiVersion", "v1",
                                    "groupVersion", "v1", "resources", res));
                return;
        }
        kube_status(c->req, 404, "NotFound", NULL, "the server could not find the requested resource");
}

/* ---- namespaces and events --------------------------------------------------------------- */

static json_t *namespace_doc(const struct lg_resource *r) {
        char t[32], rv[24];
        lg_store_format_time(r->created_at, t, sizeof(t));
        snprintf(rv, sizeof(rv), "%lld", (long long) r->resource_version);
        return json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s}, s:{s:[s]}, s:{s:s}}", "kind", "Namespace", "apiVersion",
                         "v1", "metadata", "name", r->name, "uid", r->uid, "resourceVersion", rv,
                         "creationTimestamp", t, "spec", "finalizers", "kubernetes", "status", "phase", "Active");
}

static json_t *namespace_table(json_t *items, const char *rv) {
        json_t *rows = json_array();
        size_t i;
        json_t *ns;
        json_array_foreach(items, i, ns) {
                json_t *md = json_object_get(ns, "metadata");
                char age[32];
                lg_kube_age(json_string_value(json_object_get(md, "creationTimestamp")), (int64_t) time(NULL), age,
                            sizeof(age));
                json_array_append_new(
                        rows, json_pack("{s:[s, s, s], s:{s:s, s:s, s:O}}", "cells",
                                        json_string_value(json_object_get(md, "name")), "Active", age, "object", "kind",
                                        "PartialObjectMetadata", "apiVersion", "meta.k8s.io/v1", "metadata", md));
        }
        json_t *cols = json_array();
        json_array_append_new(cols, column("Name", "string", "name", 0, "Name must be unique within a namespace."));
        json_array_append_new(cols, column("Status", "string", "", 0, "The status of the namespace"));
        json_array_append_new(cols, column("Age", "string", "", 0, "CreationTimestamp of the namespace."));
        return json_pack("{s:s, s:s, s:{s:s}, s:o, s:o}", "kind", "Table", "apiVersion", "meta.k8s.io/v1", "metadata",
                         "resourceVersion", rv, "columnDefinitions", cols, "rows", rows);
}

static void namespaces(struct api_call *c, const char *name) {
        if (strcmp(lg_http_request_method(c->req), "GET"))
                return kube_status(c->req, 405, "MethodNotAllowed", NULL,
                                   "namespaces are managed with `legion ns`; this API only reads them");
        struct lg_error err = {0};
        if (name) {
                if (!kube_ns(c, name))
                        return;
                struct lg_resource *r = NULL;
                int rc = lg_store_get(c->api->store, LG_KEY("Namespace", "", name), &r, &err);
                if (rc < 0)
                        return kube_not_found(c->req, "namespaces", name);
                json_t *doc = namespace_doc(r);
                lg_resource_free(r);
                if (kube_wants_table(c->req)) {
                        char rv[24];
                        json_t *items = json_pack("[o]", doc);
                        snprintf(rv, sizeof(rv), "%s",
                                 json_string_value(json_object_get(json_object_get(doc, "metadata"), "resourceVersion")));
                        doc = namespace_table(items, rv);
                        json_decref(items);
                }
                kube_json(c->req, 200, doc);
                return;
        }
        struct lg_resource_list l = {0};
        int rc = lg_store_list(c->api->store, "Namespace", "", NULL, &l, &err);
        if (rc < 0)
                return kube_store_error(c->req, rc, &err, "");
        json_t *items = json_array();
        for (size_t i = 0; i < l.n; i++)
                if (api_is_admin(c) || !strcmp(l.items[i]->name, c->token.namespace))
                        json_array_append_new(items, namespace_doc(l.items[i]));
        char rv[24];
        snprintf(rv, sizeof(rv), "%lld", (long long) l.resource_version);
        lg_resource_list_free(&l);
        if (kube_wants_table(c->req)) {
                json_t *t = namespace_table(items, rv);
                json_decref(items);
                kube_json(c->req, 200, t);
                return;
        }
        kube_json(c->req, 200,
                  json_pack("{s:s, s:s, s:{s:s}, s:o}", "kind", "NamespaceList", "apiVersion", "v1", "metadata",
                            "resourceVersion", rv, "items", items));
}

/* Legion records no events: an empty list, so that `kubectl describe` works. */
static void events(struct api_call *c) {
        if (strcmp(lg_http_request_method(c->req), "GET"))
                return kube_status(c->req, 405, "MethodNotAllowed", NULL, "events are read-only");
        int64_t rv = 0;
        lg_store_current_rv(c->api->store, &rv, NULL);
        char rvs[24];
        snprintf(rvs, sizeof(rvs), "%lld", (long long) rv);
        kube_json(c->req, 200,
                  json_pack("{s:s, s:s, s:{s:s}, s:[]}", "kind", "EventList", "apiVersion", "v1", "metadata",
                            "resourceVersion", rvs, "items"));
}

/* An OpenAPI v2 document with no definitions: kubectl's client-side
 * validation finds no schema for Pod and skips, and its query-parameter
 * check finds no server-side field validation (the server validates every
 * Pod strictly anyway). v3 is a 404, after which kubectl 1.32 falls back
 * to v2; kubectl refuses to apply when v2 is missing too. */
static void openapi(struct api_call *c) {
        if (c->nseg != 2 || strcmp(c->seg[1], "v2"))
                return kube_status(c->req, 404, "NotFound", NULL, "%s",
                                   "Legion publishes no OpenAPI v3 schema; the server validates every Pod itself");
        const char *a = lg_http_request_header(c->req, "Accept");
        if (a && strstr(a, "protobuf")) {
                /* An empty message is the empty openapi_v2.Document. */
                static const struct lg_http_header h[] = {
                        {"Content-Type", "application/octet-stream"}};
                lg_http_respond(c->req, 200, h, 1, "", 0);
                return;
        }
        kube_json(c->req, 200,
                  json_pack("{s:s, s:{s:s, s:s}, s:{}, s:{}}", "swagger", "2.0", "info", "title", "Legion", "version",
                            "v1", "paths", "definitions"));
}

/* ---- routing ---------------------------------------------------------------------------------- */

bool api_kube_path(const char *const *seg, int nseg) {
        return nseg >= 1 && (!strcmp(seg[0], "api") || !strcmp(seg[0], "apis") || !strcmp(seg[0], "openapi") ||
                             !strcmp(seg[0], "version"));
}

void api_kube(struct api_call *c) {
        if (!kube_authenticate(c))
                return;
        const char *const *seg = c->seg;
        int n = c->nseg;
        if (!strcmp(seg[0], "openapi"))
                return openapi(c);
        if (n <= 2 || strcmp(seg[0], "api") || strcmp(seg[1], "v1"))
                return discovery(c);
        /* /api/v1/... */
        if (!strcmp(seg[2], "pods") && n == 3)
                return api_pods(c, NULL, NULL, NULL);
        if (!strcmp(seg[2], "events") && n == 3) {
                if (!api_is_admin(c))
                        return kube_status(c->req, 403, "Forbidden", NULL,
                                           "listing events in all namespaces needs an admin token");
                return events(c);
        }
        if (strcmp(seg[2], "namespaces"))
                return kube_status(c->req, 404, "NotFound", NULL, "the server could not find the requested resource");
        if (n == 3)
                return namespaces(c, NULL);
        if (n == 4)
                return namespaces(c, seg[3]);
        if (n == 5 && !strcmp(seg[4], "events")) {
                if (!kube_ns(c, seg[3]))
                        return;
                return events(c);
        }
        if (!strcmp(seg[4], "pods") && n <= 7)
                return api_pods(c, seg[3], n >= 6 ? seg[5] : NULL, n == 7 ? seg[6] : NULL);
        kube_status(c->req, 404, "NotFound", NULL, "the server could not find the requested resource");
}
