/* /api/v1/namespaces/{ns}/pods: the Kubernetes Pod API (docs/pods.md,
 * "API"): create, get, list (label and field selectors, Tables), replace,
 * patch (merge, strategic-as-merge, JSON patch), graceful delete. Watch and
 * logs stream and live in api-pods-stream.c.
 *
 * Store shape (pod.h): labels = metadata.labels; spec = {"spec", and
 * "annotations"}; status = {"status", "deletionTimestamp",
 * "deletionGracePeriodSeconds"}. Every write is followed by
 * lg_pods_sync() so that the pod manager acts on it. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/api-internal.h"

/* ---- field selectors -------------------------------------------------------------- */

static const char *const pod_fields[] = {"metadata.name",   "metadata.namespace", "status.phase",
                                         "spec.nodeName",   "spec.restartPolicy", "spec.schedulerName",
                                         "status.podIP",    "spec.hostNetwork",   "status.nominatedNodeName",
                                         NULL};

/* The value of a supported field of a Pod document, as a string. */
static void pod_field(const json_t *pod, const char *field, char *buf, size_t cap) {
        const char *dot = strchr(field, '.');
        char top[16];
        snprintf(top, sizeof(top), "%.*s", (int) (dot - field), field);
        json_t *v = json_object_get(json_object_get(pod, top), dot + 1);
        if (json_is_boolean(v))
                snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
        else if (!strcmp(field, "spec.hostNetwork"))
                snprintf(buf, cap, "false");
        else
                snprintf(buf, cap, "%s", json_string_value(v) ? json_string_value(v) : "");
}

/* "a=b,c!=d" with \ escapes, as Kubernetes' fields.ParseSelector. */
int kube_field_selector_parse(const char *s, struct kube_fsel *fs, struct lg_error *err) {
        memset(fs, 0, sizeof(*fs));
        if (!s || !*s)
                return 0;
        const char *p = s;
        while (*p) {
                if (fs->n >= ARRAY_SIZE(fs->req))
                        return lg_error_setm(err, EINVAL, "too many field selector requirements");
                struct kube_freq *q = &fs->req[fs->n];
                size_t k = 0;
                while (*p && *p != '=' && *p != '!' && *p != ',' && k < sizeof(q->field) - 1)
                        q->field[k++] = *p++;
                q->field[k] = '\0';
                if (*p == '!' && p[1] == '=') {
                        q->neg = true;
                        p += 2;
                } else if (*p == '=') {
                        p += p[1] == '=' ? 2 : 1;
                } else {
                        return lg_error_setm(err, EINVAL, "invalid field selector `%.200s`: expected an operator",
                                             s);
                }
                size_t v = 0;
                while (*p && *p != ',') {
                        if (*p == '\\' && p[1])
                                p++;
                        if (v >= sizeof(q->value) - 1)
                                return lg_error_setm(err, EINVAL, "field selector value too long");
                        q->value[v++] = *p++;
                }
                q->value[v] = '\0';
                if (*p == ',')
                        p++;
                bool known = false;
                for (size_t i = 0; pod_fields[i] && !known; i++)
                        known = !strcmp(q->field, pod_fields[i]);
                if (!known)
                        return lg_error_setm(err, EINVAL, "field label not supported: %s", q->field);
                fs->n++;
        }
        return 0;
}

bool kube_field_selector_matches(const struct kube_fsel *fs, const json_t *pod) {
        for (size_t i = 0; i < fs->n; i++) {
                char v[256];
                pod_field(pod, fs->req[i].field, v, sizeof(v));
                if (!strcmp(v, fs->req[i].value) == fs->req[i].neg)
                        return false;
        }
        return true;
}

/* ---- helpers --------------------------------------------------------------------------- */

/* The node pods run on: spec.nodeName, status.hostIP's owner. */
const char *kube_node_name(void) {
        static char name[65];
        if (!name[0] && (gethostname(name, sizeof(name) - 1) < 0 || !name[0]))
                snprintf(name, sizeof(name), "legion");
        return name;
}

static json_t *body_json(struct lg_http_request *req) {
        size_t len = 0;
        const char *body = lg_http_request_body(req, &len);
        const char *ct = lg_http_request_header(req, "Content-Type");
        if (ct && (strstr(ct, "yaml") || strstr(ct, "protobuf"))) {
                kube_status(req, 415, "UnsupportedMediaType", NULL,
                            "the body of the request was in an unknown format - accepted media types include: "
                            "application/json");
                return NULL;
        }
        if (!body || !len) {
                kube_status(req, 400, "BadRequest", NULL, "%s", "a JSON object body is required");
                return NULL;
        }
        json_error_t je;
        json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
        if (!doc) {
                kube_status(req, 400, "BadRequest", NULL, "malformed JSON at line %d column %d: %s", je.line,
                            je.column, je.text);
                return NULL;
        }
        if (!json_is_object(doc)) {
                json_decref(doc);
                kube_status(req, 400, "BadRequest", NULL, "%s", "the body must be a JSON object");
                return NULL;
        }
        return doc;
}

/* 422 Invalid: `Pod "x" is invalid: f: m` or `[f1: m1, f2: m2]`. Steals causes. */
static void invalid(struct lg_http_request *req, const char *name, json_t *causes) {
        char msg[1800];
        size_t n = json_array_size(causes);
        /* name is at most 253 characters: the prefix leaves room. */
        size_t off = (size_t) snprintf(msg, sizeof(msg), "Pod \"%s\" is invalid: %s", name, n > 1 ? "[" : "");
        off += lg_pod_causes_format(causes, msg + off, sizeof(msg) - off - 7);
        if (n > 1)
                snprintf(msg + off, sizeof(msg) - off, "]");
        kube_json(req, 422,
                  kube_status_doc(422, "Invalid", json_pack("{s:s, s:s, s:o}", "name", name, "kind", "Pod", "causes", causes),
                                  msg));
}

/* The request's kind and apiVersion name a v1 Pod (400 otherwise). */
static bool check_type(struct lg_http_request *req, const json_t *body) {
        const char *av = json_string_value(json_object_get(body, "apiVersion"));
        const char *kind = json_string_value(json_object_get(body, "kind"));
        if (av && strcmp(av, "v1")) {
                kube_status(req, 400, "BadRequest", NULL,
                            "the API version in the data (%.64s) does not match the expected API version (v1)", av);
                return false;
        }
        if (kind && strcmp(kind, "Pod")) {
                kube_status(req, 400, "BadRequest", NULL,
                            "the kind in the data (%.64s) does not match the expected kind (Pod)", kind);
                return false;
        }
        return true;
}

/* Validate a Pod document (create and update): the defaulted spec, or NULL
 * with the request answered. */
static json_t *validate_pod(struct lg_http_request *req, const char *ns, const char *url_name, json_t *body) {
        if (!check_type(req, body))
                return NULL;
        json_t *md = json_object_get(body, "metadata");
        const char *name = json_string_value(json_object_get(md, "name"));
        const char *bns = json_string_value(json_object_get(md, "namespace"));
        if (bns && strcmp(bns, ns)) {
                kube_status(req, 400, "BadRequest", NULL,
                            "the namespace of the provided object does not match the namespace sent on the request");
                return NULL;
        }
        if (url_name && name && strcmp(name, url_name)) {
                kube_status(req, 400, "BadRequest", NULL,
                            "the name of the object (%.64s) does not match the name on the URL (%.64s)", name,
                            url_name);
                return NULL;
        }
        json_t *causes = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(body, k, v) {
                if (strcmp(k, "apiVersion") && strcmp(k, "kind") && strcmp(k, "metadata") && strcmp(k, "spec") &&
                    strcmp(k, "status"))
                        json_array_append_new(causes, json_pack("{s:s, s:s, s:s}", "reason", "FieldValueForbidden",
                                                                "message", "Forbidden: unknown field", "field", k));
        }
        if (!md)
                json_array_append_new(causes, json_pack("{s:s, s:s, s:s}", "reason", "FieldValueRequired", "message",
                                                        "Required value", "field", "metadata.name"));
        else
                lg_pod_check_metadata(md, causes);
        json_t *spec = NULL;
        if (!json_object_get(body, "spec"))
                json_array_append_new(causes, json_pack("{s:s, s:s, s:s}", "reason", "FieldValueRequired", "message",
                                                        "Required value", "field", "spec"));
        else if (lg_podspec_check(json_object_get(body, "spec"), &spec, causes) == 0) {
                const char *node = json_string_value(json_object_get(spec, "nodeName"));
                if (!node || !*node)
                        json_object_set_new(spec, "nodeName", json_string(kube_node_name()));
                else if (strcmp(node, kube_node_name()))
                        json_array_append_new(causes,
                                              json_pack("{s:s, s:s, s:s}", "reason", "FieldValueInvalid", "message",
                                                        "Invalid value: this Legion node is the only node",
                                                        "field", "spec.nodeName"));
        }
        if (json_array_size(causes)) {
                json_decref(spec);
                invalid(req, name && lg_store_valid_name(name) ? name : "", causes);
                return NULL;
        }
        json_decref(causes);
        return spec;
}

static json_t *labels_of(const json_t *body) {
        json_t *l = json_object_get(json_object_get(body, "metadata"), "labels");
        return l ? json_incref(l) : json_object();
}

static json_t *annotations_of(const json_t *body) {
        json_t *a = json_object_get(json_object_get(body, "metadata"), "annotations");
        return a ? json_incref(a) : json_object();
}

/* res: the Pod as the write returned it. */
static void sync_pod(struct api_call *c, const struct lg_resource *res) {
        lg_pods_sync(c->api->pods, res, NULL);
}

static bool dry_run(struct lg_http_request *req) {
        const char *d = lg_http_request_param(req, "dryRun");
        return d && !strcmp(d, "All");
}

/* ---- create ------------------------------------------------------------------------------- */

static void create_pod(struct api_call *c, const char *ns) {
        json_t *body = body_json(c->req);
        if (!body)
                return;
        json_t *spec = validate_pod(c->req, ns, NULL, body);
        if (!spec) {
                json_decref(body);
                return;
        }
        const char *name = json_string_value(json_object_get(json_object_get(body, "metadata"), "name"));
        /* The host's network namespace reaches legiond's own API and every
         * host listener on loopback: Kubernetes' restricted Pod Security
         * Standard forbids it to tenants, and so do we. */
        if (json_is_true(json_object_get(spec, "hostNetwork")) && !api_is_admin(c)) {
                kube_status(c->req, 403, "Forbidden", json_pack("{s:s, s:s}", "name", name, "kind", "pods"),
                            "pods \"%s\" is forbidden: host namespaces (hostNetwork=true) need an admin token; "
                            "a namespace token may not run pods on the host's network",
                            name);
                json_decref(spec);
                json_decref(body);
                return;
        }
        json_t *labels = labels_of(body);
        json_t *sdoc = json_pack("{s:o, s:o}", "spec", spec, "annotations", annotations_of(body));
        json_t *status = json_pack("{s:{s:s, s:s}}", "status", "phase", "Pending", "qosClass", lg_pod_qos_class(spec));
        struct lg_resource *res = NULL;
        struct lg_error err = {0};
        int r;
        if (dry_run(c->req)) {
                /* Everything a create checks, without the write. */
                r = lg_store_get(c->api->store, LG_KEY("Pod", ns, name), NULL, NULL);
                if (r == 0)
                        r = -EEXIST;
                else {
                        res = calloc(1, sizeof(*res));
                        r = res ? 0 : -ENOMEM;
                        if (res) {
                                snprintf(res->kind, sizeof(res->kind), "Pod");
                                snprintf(res->namespace, sizeof(res->namespace), "%s", ns);
                                snprintf(res->name, sizeof(res->name), "%s", name);
                                res->created_at = time(NULL);
                                res->labels = json_incref(labels);
                                res->spec = json_incref(sdoc);
                                res->status = json_incref(status);
                        }
                }
        } else {
                r = lg_store_create(c->api->store, LG_KEY("Pod", ns, name), labels, sdoc, status, &res, &err);
        }
        json_decref(labels);
        json_decref(sdoc);
        json_decref(status);
        if (r < 0) {
                kube_store_error(c->req, r, &err, name);
                json_decref(body);
                return;
        }
        json_decref(body);
        if (!dry_run(c->req))
                sync_pod(c, res);
        kube_json(c->req, 201, lg_pod_to_json(res));
        lg_resource_free(res);
}

/* ---- get and list ---------------------------------------------------------------------------- */

static void respond_pod(struct api_call *c, int status, const struct lg_resource *res) {
        json_t *doc = lg_pod_to_json(res);
        if (doc && kube_wants_table(c->req)) {
                json_t *t = kube_pod_table(&doc, 1, json_string_value(json_object_get(json_object_get(doc, "metadata"),
                                                                                      "resourceVersion")),
                                           lg_http_request_param(c->req, "includeObject"));
                json_decref(doc);
                doc = t;
        }
        kube_json(c->req, status, doc);
}

static void get_pod(struct api_call *c, const char *ns, const char *name) {
        struct lg_resource *res = NULL;
        struct lg_error err = {0};
        int r = lg_store_get(c->api->store, LG_KEY("Pod", ns, name), &res, &err);
        if (r < 0)
                return kube_store_error(c->req, r, &err, name);
        respond_pod(c, 200, res);
        lg_resource_free(res);
}

/* The selectors of a list or watch (400 Status when malformed). */
bool kube_selectors(struct api_call *c, struct lg_selector **sel, struct kube_fsel *fs) {
        struct lg_error err = {0};
        if (lg_selector_parse(lg_http_request_param(c->req, "labelSelector"), sel, &err) < 0) {
                kube_status(c->req, 400, "BadRequest", NULL, "unable to parse requirement: %s", err.msg);
                return false;
        }
        if (kube_field_selector_parse(lg_http_request_param(c->req, "fieldSelector"), fs, &err) < 0) {
                lg_selector_free(*sel);
                *sel = NULL;
                kube_status(c->req, 400, "BadRequest", NULL, "%s", err.msg);
                return false;
        }
        return true;
}

static void list_pods(struct api_call *c, const char *ns) {
        _cleanup_selector_ struct lg_selector *sel = NULL;
        struct kube_fsel fs;
        if (!kube_selectors(c, &sel, &fs))
                return;
        struct lg_resource_list l = {0};
        struct lg_error err = {0};
        int r = lg_store_list(c->api->store, "Pod", ns, sel, &l, &err);
        if (r < 0)
                return kube_store_error(c->req, r, &err, "");
        json_t **docs = calloc(l.n ? l.n : 1, sizeof(*docs));
        size_t n = 0;
        for (size_t i = 0; docs && i < l.n; i++) {
                json_t *d = lg_pod_to_json(l.items[i]);
                if (d && kube_field_selector_matches(&fs, d))
                        docs[n++] = d;
                else
                        json_decref(d);
        }
        char rv[24];
        snprintf(rv, sizeof(rv), "%lld", (long long) l.resource_version);
        lg_resource_list_free(&l);
        if (!docs)
                return kube_status(c->req, 500, "InternalError", NULL, "out of memory");
        json_t *out;
        if (kube_wants_table(c->req)) {
                out = kube_pod_table(docs, n, rv, lg_http_request_param(c->req, "includeObject"));
                for (size_t i = 0; i < n; i++)
                        json_decref(docs[i]);
        } else {
                json_t *items = json_array();
                for (size_t i = 0; i < n; i++)
                        json_array_append_new(items, docs[i]);
                out = json_pack("{s:s, s:s, s:{s:s}, s:o}", "kind", "PodList", "apiVersion", "v1", "metadata",
                                "resourceVersion", rv, "items", items);
        }
        free(docs);
        kube_json(c->req, 200, out);
}

/* ---- update and patch ---------------------------------------------------------------------- */

/* json_equal, with two absent values equal. */
static bool same_value(const json_t *a, const json_t *b) { return (!a && !b) || json_equal(a, b); }

/* Write new labels and annotations of res if the rest of new_doc equals
 * the stored pod (Kubernetes allows no other change here); answer. */
static void update_meta(struct api_call *c, const struct lg_resource *res, json_t *new_doc, int64_t expected_rv,
                        int ok_status) {
        json_t *old = lg_pod_to_json(res);
        json_t *nmd = json_object_get(new_doc, "metadata");
        json_t *causes = json_array();
        if (!json_is_object(nmd)) {
                json_array_append_new(causes, json_pack("{s:s, s:s, s:s}", "reason", "FieldValueRequired", "message",
                                                        "Required value", "field", "metadata"));
        } else {
                if (!json_object_get(nmd, "name"))
                        json_object_set_new(nmd, "name", json_string(res->name));
                lg_pod_check_metadata(nmd, causes);
        }
        if (!json_array_size(causes)) {
                /* The spec as the client sends it back, defaulted like at create. */
                json_t *spec = NULL;
                json_t *sc = json_array();
                bool same = lg_podspec_check(json_object_get(new_doc, "spec"), &spec, sc) == 0;
                if (same) {
                        const char *node = json_string_value(json_object_get(spec, "nodeName"));
                        if (!node || !*node)
                                json_object_set_new(spec, "nodeName", json_string(kube_node_name()));
                        same = json_equal(spec, json_object_get(old, "spec"));
                }
                json_decref(spec);
                json_decref(sc);
                json_t *om = json_object_get(old, "metadata");
                const char *nns = json_string_value(json_object_get(nmd, "namespace"));
                const char *uid = json_string_value(json_object_get(nmd, "uid"));
                same = same && !strcmp(json_string_value(json_object_get(nmd, "name")), res->name) &&
                       (!nns || !strcmp(nns, res->namespace)) &&
                       same_value(json_object_get(nmd, "deletionTimestamp"), json_object_get(om, "deletionTimestamp"));
                if (uid && strcmp(uid, res->uid)) {
                        json_decref(old);
                        json_decref(causes);
                        return kube_status(c->req, 409, "Conflict",
                                           json_pack("{s:s, s:s}", "name", res->name, "kind", "pods"),
                                           "Precondition failed: UID in precondition: %s, UID in object meta: %s",
                                           uid, res->uid);
                }
                if (!same)
                        json_array_append_new(
                                causes, json_pack("{s:s, s:s, s:s}", "reason", "FieldValueForbidden", "message",
                                                  "Forbidden: pod updates may not change fields other than "
                                                  "metadata.labels and metadata.annotations",
                                                  "field", "spec"));
        }
        json_decref(old);
        if (json_array_size(causes))
                return invalid(c->req, res->name, causes);
        json_decref(causes);
        json_t *labels = labels_of(new_doc);
        json_t *sdoc = json_pack("{s:O, s:o}", "spec", json_object_get(res->spec, "spec"), "annotations",
                                 annotations_of(new_doc));
        struct lg_resource *out = NULL;
        struct lg_error err = {0};
        int r = dry_run(c->req) ? 0
                                : lg_store_update(c->api->store, LG_KEY("Pod", res->namespace, res->name), expected_rv,
                                                  labels, sdoc, &out, &err);
        json_decref(labels);
        json_decref(sdoc);
        if (r < 0)
                return kube_store_error(c->req, r, &err, res->name);
        if (r > 0)
                sync_pod(c, out);
        respond_pod(c, ok_status, out ? out : res);
        lg_resource_free(out);
}

static int64_t parse_rv(const json_t *doc) {
        const char *s = json_string_value(json_object_get(json_object_get(doc, "metadata"), "resourceVersion"));
        return s ? strtoll(s, NULL, 10) : 0;
}

static void replace_pod(struct api_call *c, const char *ns, const char *name) {
        json_t *body = body_json(c->req);
        if (!body)
                return;
        if (!check_type(c->req, body)) {
                json_decref(body);
                return;
        }
        struct lg_resource *res = NULL;
        struct lg_error err = {0};
        int r = lg_store_get(c->api->store, LG_KEY("Pod", ns, name), &res, &err);
        if (r < 0) {
                json_decref(body);
                return kube_store_error(c->req, r, &err, name);
        }
        const char *bname = json_string_value(json_object_get(json_object_get(body, "metadata"), "name"));
        const char *bns = json_string_value(json_object_get(json_object_get(body, "metadata"), "namespace"));
        if ((bname && strcmp(bname, name)) || (bns && strcmp(bns, ns)))
                kube_status(c->req, 400, "BadRequest", NULL,
                            "the name and namespace of the object must match the URL");
        else
                update_meta(c, res, body, parse_rv(body), 200);
        json_decref(body);
        lg_resource_free(res);
}

/* RFC 7386 merge patch; strategic merge patches are applied the same way
 * (for maps they are the same), with $patch: replace|delete|merge honoured
 * and $setElementOrder / $retainKeys ignored (they only order or prune
 * lists, which no allowed change has). */
static int merge_patch(json_t *target, const json_t *patch, bool strategic, char *bad, size_t cap) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *) patch, k, v) {
                if (strategic && k[0] == '$') {
                        if (!strncmp(k, "$setElementOrder/", 17) || !strcmp(k, "$retainKeys") || !strcmp(k, "$patch"))
                                continue;
                        snprintf(bad, cap, "unsupported strategic merge patch directive `%.64s`", k);
                        return -EINVAL;
                }
                if (json_is_null(v)) {
                        json_object_del(target, k);
                        continue;
                }
                json_t *t = json_object_get(target, k);
                const char *directive = strategic ? json_string_value(json_object_get(v, "$patch")) : NULL;
                if (directive && !strcmp(directive, "delete")) {
                        json_object_del(target, k);
                        continue;
                }
                if (json_is_object(v) && json_is_object(t) && !(directive && !strcmp(directive, "replace"))) {
                        int r = merge_patch(t, v, strategic, bad, cap);
                        if (r < 0)
                                return r;
                        continue;
                }
                json_t *copy = json_deep_copy(v);
                if (json_is_object(copy)) {
                        json_t *empty = json_object();
                        /* Strip directives and nulls as a merge into {} does. */
                        int r = merge_patch(empty, copy, strategic, bad, cap);
                        json_decref(copy);
                        if (r < 0) {
                                json_decref(empty);
                                return r;
                        }
                        copy = empty;
                }
                json_object_set_new(target, k, copy);
        }
        return 0;
}

/* RFC 6901 pointer: the parent container of the target and its last token. */
static json_t *pointer_parent(json_t *doc, const char *ptr, char *last, size_t cap) {
        if (*ptr != '/')
                return NULL;
        json_t *cur = doc;
        const char *p = ptr + 1;
        for (;;) {
                const char *end = strchr(p, '/');
                size_t n = end ? (size_t) (end - p) : strlen(p);
                char tok[256];
                size_t o = 0;
                for (size_t i = 0; i < n && o < sizeof(tok) - 1; i++) {
                        if (p[i] == '~' && i + 1 < n && (p[i + 1] == '0' || p[i + 1] == '1')) {
                                tok[o++] = p[i + 1] == '0' ? '~' : '/';
                                i++;
                        } else
                                tok[o++] = p[i];
                }
                tok[o] = '\0';
                if (!end) {
                        snprintf(last, cap, "%s", tok);
                        return cur;
                }
                if (json_is_object(cur))
                        cur = json_object_get(cur, tok);
                else if (json_is_array(cur)) {
                        char *e;
                        long idx = strtol(tok, &e, 10);
                        cur = *e || idx < 0 ? NULL : json_array_get(cur, (size_t) idx);
                } else
                        return NULL;
                if (!cur)
                        return NULL;
                p = end + 1;
        }
}

static json_t *pointer_get(json_t *doc, const char *ptr) {
        if (!*ptr)
                return doc;
        char last[256];
        json_t *parent = pointer_parent(doc, ptr, last, sizeof(last));
        if (json_is_object(parent))
                return json_object_get(parent, last);
        if (json_is_array(parent)) {
                char *e;
                long idx = strtol(last, &e, 10);
                return *e || idx < 0 ? NULL : json_array_get(parent, (size_t) idx);
        }
        return NULL;
}

static int pointer_remove(json_t *doc, const char *ptr, json_t **removed) {
        char last[256];
        json_t *parent = pointer_parent(doc, ptr, last, sizeof(last));
        char *e;
        if (json_is_object(parent) && json_object_get(parent, last)) {
                *removed = json_incref(json_object_get(parent, last));
                json_object_del(parent, last);
                return 0;
        }
        long idx = strtol(last, &e, 10);
        if (json_is_array(parent) && !*e && idx >= 0 && (size_t) idx < json_array_size(parent)) {
                *removed = json_incref(json_array_get(parent, (size_t) idx));
                json_array_remove(parent, (size_t) idx);
                return 0;
        }
        return -ENOENT;
}

static int pointer_add(json_t *doc, const char *ptr, json_t *value /* stolen */) {
        char last[256];
        json_t *parent = pointer_parent(doc, ptr, last, sizeof(last));
        if (json_is_object(parent))
                return json_object_set_new(parent, last, value) ? -EINVAL : 0;
        if (json_is_array(parent)) {
                char *e;
                long idx = !strcmp(last, "-") ? (long) json_array_size(parent) : strtol(last, &e, 10);
                if ((strcmp(last, "-") && *e) || idx < 0 || (size_t) idx > json_array_size(parent)) {
                        json_decref(value);
                        return -ENOENT;
                }
                return json_array_insert_new(parent, (size_t) idx, value) ? -EINVAL : 0;
        }
        json_decref(value);
        return -ENOENT;
}

static int json_patch(json_t *doc, const json_t *ops, char *bad, size_t cap) {
        if (!json_is_array(ops)) {
                snprintf(bad, cap, "a JSON patch must be a list of operations");
                return -EINVAL;
        }
        size_t i;
        json_t *op;
        json_array_foreach(ops, i, op) {
                const char *o = json_string_value(json_object_get(op, "op"));
                const char *path = json_string_value(json_object_get(op, "path"));
                const char *from = json_string_value(json_object_get(op, "from"));
                json_t *value = json_object_get(op, "value");
                int r = -EINVAL;
                if (!o || !path || (*path && *path != '/')) {
                        snprintf(bad, cap, "operation %zu: `op` and a `path` pointer are required", i);
                        return -EINVAL;
                }
                json_t *tmp = NULL;
                if (!strcmp(o, "add") && value)
                        r = pointer_add(doc, path, json_deep_copy(value));
                else if (!strcmp(o, "remove"))
                        r = pointer_remove(doc, path, &tmp);
                else if (!strcmp(o, "replace") && value) {
                        r = pointer_remove(doc, path, &tmp);
                        if (r == 0)
                                r = pointer_add(doc, path, json_deep_copy(value));
                } else if ((!strcmp(o, "move") || !strcmp(o, "copy")) && from) {
                        json_t *src = pointer_get(doc, from);
                        if (!src)
                                r = -ENOENT;
                        else if (!strcmp(o, "copy"))
                                r = pointer_add(doc, path, json_deep_copy(src));
                        else if ((r = pointer_remove(doc, from, &tmp)) == 0)
                                r = pointer_add(doc, path, json_incref(tmp));
                } else if (!strcmp(o, "test") && value) {
                        json_t *cur = pointer_get(doc, path);
                        if (!cur || !json_equal(cur, value)) {
                                snprintf(bad, cap, "operation %zu: test failed at `%.200s`", i, path);
                                return -EINVAL;
                        }
                        r = 0;
                } else {
                        snprintf(bad, cap, "operation %zu: unsupported op `%.32s` or missing value", i, o);
                        return -EINVAL;
                }
                json_decref(tmp);
                if (r < 0) {
                        snprintf(bad, cap, "operation %zu (%s): no such path `%.200s`", i, o,
                                 from && strcmp(o, "add") ? from : path);
                        return r;
                }
        }
        return 0;
}

static void patch_pod(struct api_call *c, const char *ns, const char *name) {
        const char *ct = lg_http_request_header(c->req, "Content-Type");
        char type[64] = "";
        if (ct)
                snprintf(type, sizeof(type), "%.*s", (int) strcspn(ct, "; "), ct);
        bool merge = !strcmp(type, "application/merge-patch+json");
        bool strategic = !strcmp(type, "application/strategic-merge-patch+json");
        bool jsonp = !strcmp(type, "application/json-patch+json");
        if (!merge && !strategic && !jsonp)
                return kube_status(c->req, 415, "UnsupportedMediaType", NULL,
                                   "the body of the request was in an unknown format - accepted media types "
                                   "include: application/json-patch+json, application/merge-patch+json, "
                                   "application/strategic-merge-patch+json");
        size_t len = 0;
        const char *body = lg_http_request_body(c->req, &len);
        json_error_t je;
        json_t *patch = body && len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &je) : NULL;
        if (!patch)
                return kube_status(c->req, 400, "BadRequest", NULL, "malformed patch: %s",
                                   body && len ? je.text : "empty body");
        if (!jsonp && !json_is_object(patch)) {
                json_decref(patch);
                return kube_status(c->req, 400, "BadRequest", NULL, "a merge patch must be a JSON object");
        }
        struct lg_resource *res = NULL;
        struct lg_error err = {0};
        int r = lg_store_get(c->api->store, LG_KEY("Pod", ns, name), &res, &err);
        if (r < 0) {
                json_decref(patch);
                return kube_store_error(c->req, r, &err, name);
        }
        /* A copy: the document shares its spec and labels with res. */
        json_t *shared = lg_pod_to_json(res);
        json_t *doc = json_deep_copy(shared);
        json_decref(shared);
        char bad[400] = "";
        r = jsonp ? json_patch(doc, patch, bad, sizeof(bad)) : merge_patch(doc, patch, strategic, bad, sizeof(bad));
        json_decref(patch);
        if (r < 0)
                kube_status(c->req, jsonp ? 422 : 400, jsonp ? "Invalid" : "BadRequest", NULL, "%s", bad);
        else if (!json_is_object(doc))
                kube_status(c->req, 400, "BadRequest", NULL, "the patch must leave a Pod object");
        else if (!check_type(c->req, doc))
                ;
        else {
                /* A resourceVersion the patch sets is a precondition. */
                int64_t rv = parse_rv(doc);
                update_meta(c, res, doc, rv == res->resource_version ? 0 : rv, 200);
        }
        json_decref(doc);
        lg_resource_free(res);
}

/* ---- delete --------------------------------------------------------------------------------------- */

static void delete_pod(struct api_call *c, const char *ns, const char *name) {
        size_t len = 0;
        lg_http_request_body(c->req, &len);
        json_t *opts = len ? body_json(c->req) : json_object();
        if (!opts)
                return;
        const char *kind = json_string_value(json_object_get(opts, "kind"));
        if (kind && strcmp(kind, "DeleteOptions")) {
                json_decref(opts);
                return kube_status(c->req, 400, "BadRequest", NULL, "the body must be DeleteOptions, not %.64s", kind);
        }
        struct lg_resource *res = NULL;
        struct lg_error err = {0};
        int r = lg_store_get(c->api->store, LG_KEY("Pod", ns, name), &res, &err);
        if (r < 0) {
                json_decref(opts);
                return kube_store_error(c->req, r, &err, name);
        }
        json_t *pre = json_object_get(opts, "preconditions");
        char uidbuf[64], rvbuf[32];
        const char *puid = json_string_value(json_object_get(pre, "uid"));
        const char *prv = json_string_value(json_object_get(pre, "resourceVersion"));
        /* Copies: opts goes before they are used. */
        if (puid)
                puid = (snprintf(uidbuf, sizeof(uidbuf), "%s", puid), uidbuf);
        if (prv)
                prv = (snprintf(rvbuf, sizeof(rvbuf), "%s", prv), rvbuf);
        json_t *grace_v = json_object_get(opts, "gracePeriodSeconds");
        const char *qgrace = lg_http_request_param(c->req, "gracePeriodSeconds");
        json_int_t grace = json_integer_value(json_object_get(json_object_get(res->spec, "spec"),
                                                              "terminationGracePeriodSeconds"));
        bool bad_grace = false;
        if (json_is_integer(grace_v))
                grace = json_integer_value(grace_v);
        else if (grace_v && !json_is_null(grace_v))
                bad_grace = true;
        else if (qgrace) {
                char *e;
                grace = strtoll(qgrace, &e, 10);
                bad_grace = *e || !*qgrace;
        }
        if (grace < 0)
                grace = 1; /* Kubernetes: negative means "the minimum" */
        bool dry = dry_run(c->req) || json_is_array(json_object_get(opts, "dryRun"));
        json_decref(opts);
        if (bad_grace) {
                lg_resource_free(res);
                return kube_status(c->req, 400, "BadRequest", NULL, "gracePeriodSeconds must be an integer");
        }
        if (puid && strcmp(puid, res->uid)) {
                kube_status(c->req, 409, "Conflict", json_pack("{s:s, s:s}", "name", name, "kind", "pods"),
                            "Precondition failed: UID in precondition: %s, UID in object meta: %s", puid, res->uid);
                lg_resource_free(res);
                return;
        }
        if (prv && strtoll(prv, NULL, 10) != res->resource_version) {
                kube_status(c->req, 409, "Conflict", json_pack("{s:s, s:s}", "name", name, "kind", "pods"),
                            "Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object "
                            "meta: %lld",
                            prv, (long long) res->resource_version);
                lg_resource_free(res);
                return;
        }
        json_t *old_grace = json_object_get(res->status, "deletionGracePeriodSeconds");
        if (dry || (old_grace && json_integer_value(old_grace) <= grace)) {
                /* Already being deleted at least as fast. */
                respond_pod(c, 200, res);
                lg_resource_free(res);
                return;
        }
        json_t *st = json_deep_copy(res->status);
        char now[32];
        if (!json_object_get(st, "deletionTimestamp")) {
                lg_store_format_time(time(NULL), now, sizeof(now));
                json_object_set_new(st, "deletionTimestamp", json_string(now));
        }
        json_object_set_new(st, "deletionGracePeriodSeconds", json_integer(grace));
        struct lg_resource *out = NULL;
        r = lg_store_update_status(c->api->store, LG_KEY("Pod", ns, name), res->resource_version, st, &out, &err);
        json_decref(st);
        lg_resource_free(res);
        if (r < 0)
                return kube_store_error(c->req, r, &err, name);
        sync_pod(c, out);
        respond_pod(c, 200, out);
        lg_resource_free(out);
}

/* ---- routing ------------------------------------------------------------------------------------- */

void api_pods(struct api_call *c, const char *ns, const char *name, const char *sub) {
        const char *m = lg_http_request_method(c->req);
        if (!ns) {
                if (!api_is_admin(c))
                        return kube_status(c->req, 403, "Forbidden",
                                           json_pack("{s:s}", "kind", "pods"),
                                           "pods is forbidden: a namespace token cannot list pods at the cluster "
                                           "scope; use -n %s",
                                           c->token.namespace);
                if (strcmp(m, "GET"))
                        return kube_status(c->req, 405, "MethodNotAllowed", NULL, "use GET");
                if (kube_param_true(c->req, "watch"))
                        return kube_watch_pods(c, NULL);
                return list_pods(c, NULL);
        }
        if (!kube_ns(c, ns))
                return;
        if (!name) {
                if (!strcmp(m, "GET"))
                        return kube_param_true(c->req, "watch") ? kube_watch_pods(c, ns) : list_pods(c, ns);
                if (!strcmp(m, "POST"))
                        return create_pod(c, ns);
                return kube_status(c->req, 405, "MethodNotAllowed", NULL, "use GET or POST on a pod list");
        }
        if (!lg_store_valid_name(name))
                return kube_not_found(c->req, "pods", name);
        if (sub && !strcmp(sub, "log")) {
                if (strcmp(m, "GET"))
                        return kube_status(c->req, 405, "MethodNotAllowed", NULL, "use GET");
                return kube_pod_log(c, ns, name);
        }
        if (sub && strcmp(sub, "status"))
                return kube_status(c->req, 404, "NotFound", NULL,
                                   "the server could not find the requested resource (pods/%.32s is not supported "
                                   "by Legion)",
                                   sub);
        if (!strcmp(m, "GET"))
                return get_pod(c, ns, name);
        if (sub)
                return kube_status(c->req, 405, "MethodNotAllowed", NULL,
                                   "pod status is written by Legion's pod manager; it is read-only here");
        if (!strcmp(m, "PUT"))
                return replace_pod(c, ns, name);
        if (!strcmp(m, "PATCH"))
                return patch_pod(c, ns, name);
        if (!strcmp(m, "DELETE"))
                return delete_pod(c, ns, name);
        kube_status(c->req, 405, "MethodNotAllowed", NULL, "use GET, PUT, PATCH or DELETE on a pod");
}
