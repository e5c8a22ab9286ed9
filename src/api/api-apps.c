/* Apps over HTTP: /v1/namespaces/{ns}/apps[/{name}[/logs]] and the data
 * path /fn/{namespace}/{app}/... The app logic (specs, revisions,
 * activation, images) is src/apps (lg_apps); here requests become its
 * calls and its results responses, logs are streamed, and a put whose
 * image must be pulled first is held (or streams the pull's progress as
 * NDJSON, as POST /v1/images/pull does) until the pull ends. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "api/api-internal.h"

void api_apps(struct api_call *c, const char *ns) {
        if (!api_ns_exists(c, ns))
                return;
        if (strcmp(lg_http_request_method(c->req), "GET")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET (PUT .../apps/NAME to deploy)");
                return;
        }
        struct lg_error err = {0};
        struct lg_selector *sel = NULL;
        const char *ls = lg_http_request_param(c->req, "labelSelector");
        if (ls && lg_selector_parse(ls, &sel, &err) < 0) {
                lg_http_respond_error(c->req, 400, "BadRequest", "%s", err.msg);
                return;
        }
        struct lg_resource_list l = {0};
        int r = lg_store_list(c->api->store, "App", ns, sel, &l, &err);
        lg_selector_free(sel);
        if (r < 0)
                return api_store_error(c->req, r, &err);
        json_t *items = json_array();
        for (size_t i = 0; i < l.n; i++)
                json_array_append_new(items, lg_apps_json(c->api->apps, l.items[i]));
        lg_resource_list_free(&l);
        api_json(c->req, 200, json_pack("{s:o}", "items", items));
}

/* ---- puts that may pull an image first -------------------------------------- */

struct held_put {
        struct lg_api *api;
        struct lg_http_request *req;
        lg_apps_pull *pull;
        char ns[LG_STORE_NAME_MAX + 1], name[LG_STORE_NAME_MAX + 1];
        bool pool, ndjson;
        json_t *spec, *labels;
};

static void held_free(struct held_put *h) {
        json_decref(h->spec);
        json_decref(h->labels);
        free(h);
}

static void held_error(struct held_put *h, int status, const char *code, const char *msg) {
        if (h->ndjson) {
                api_ndjson_line(h->req, json_pack("{s:{s:s, s:s, s:i}}", "error", "code", code, "message", msg,
                                                  "status", status));
                lg_http_response_end(h->req);
        } else {
                lg_http_respond_error(h->req, status, code, "%s", msg);
        }
}

/* Store, make active and answer; frees h. */
static void held_finish(struct held_put *h) {
        struct lg_error err = {0};
        struct lg_resource *res = NULL;
        lg_apps *apps = h->api->apps;
        int applied = h->pool ? lg_apps_pool_put(apps, h->name, h->spec, &res, &err)
                              : lg_apps_put(apps, h->ns, h->name, h->labels, h->spec, &res, &err);
        int r = applied;
        if (r >= 0 && !h->pool && (r = lg_apps_activate(apps, h->ns, h->name, &err)) < 0)
                r = -EIO; /* stored, but not routed: the server's failure */
        if (r < 0) {
                char msg[sizeof(err.msg)];
                api_error_text(r, &err, msg, sizeof(msg));
                struct api_status st = api_store_status(r);
                held_error(h, st.status, st.code, msg);
        } else {
                json_t *doc = h->pool ? lg_apps_pool_json(apps, res) : lg_apps_json(apps, res);
                if (h->ndjson) {
                        api_ndjson_line(h->req, json_pack("{s:o}", h->pool ? "poolGroup" : "app", doc));
                        lg_http_response_end(h->req);
                } else {
                        api_json(h->req, applied == LG_STORE_CREATED ? 201 : 200, doc);
                }
        }
        lg_resource_free(res);
        held_free(h);
}

static void held_progress(const struct lg_image_progress *p, void *ud) {
        struct held_put *h = ud;
        api_ndjson_line(h->req, api_progress_json(p));
}

static void held_abort(struct lg_http_request *req, int reason, void *ud) {
        struct held_put *h = ud;
        (void) reason;
        /* The image still lands; nothing is stored. */
        lg_apps_pull_cancel(h->pull);
        held_free(h);
        lg_http_response_abort(req);
}

/* "app `web`" / "pool group `web`" */
static void held_what(const struct held_put *h, char *buf, size_t cap) {
        snprintf(buf, cap, "%s `%s`", h->pool ? "pool group" : "app", h->name);
}

static void held_pulled(const struct lg_image_job_result *res, void *ud) {
        struct held_put *h = ud;
        lg_http_request_on_abort(h->req, NULL, NULL);
        if (res->status >= 0)
                return held_finish(h);
        char why[600], msg[1200], what[100];
        api_error_text(res->status, res->err, why, sizeof(why));
        held_what(h, what, sizeof(what));
        const char *pkg = h->pool ? NULL : json_string_value(json_object_get(h->spec, "packageImage"));
        if (pkg)
                snprintf(msg, sizeof(msg), "%s: package image `%s` could not be fetched: %s", what, pkg, why);
        else
                snprintf(msg, sizeof(msg), "%s: image `%s` could not be pulled: %s", what,
                         json_string_value(json_object_get(h->spec, "image")), why);
        /* The registry's fault (or unreachable): a bad gateway; otherwise
         * the image cannot be had as given. */
        bool upstream = res->registry || res->status == -ECONNREFUSED || res->status == -EHOSTUNREACH ||
                        res->status == -ENETUNREACH || res->status == -ETIMEDOUT || res->status == -ECONNRESET;
        held_error(h, upstream ? 502 : 422, pkg ? "PackageFetchFailed" : "ImagePullFailed", msg);
        held_free(h);
}

void api_put_with_pull(struct api_call *c, const char *ns, const char *name, json_t *spec, json_t *labels) {
        struct held_put *h = calloc(1, sizeof(*h));
        if (!h) {
                json_decref(spec);
                json_decref(labels);
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        h->api = c->api;
        h->req = c->req;
        h->pool = !ns;
        h->spec = spec;
        h->labels = labels;
        h->ndjson = api_wants_ndjson(c->req);
        snprintf(h->ns, sizeof(h->ns), "%s", ns ? ns : "");
        snprintf(h->name, sizeof(h->name), "%s", name);
        struct lg_error err = {0};
        int r = lg_apps_prepare(c->api->apps, ns, name, spec, h->ndjson ? held_progress : NULL, held_pulled, h,
                                &h->pull, &err);
        if (r < 0) {
                char msg[sizeof(err.msg)];
                api_error_text(r, &err, msg, sizeof(msg));
                if (r == -EINVAL) {
                        lg_http_respond_error(c->req, 400, "BadRequest", "%s", msg);
                } else {
                        char what[100];
                        held_what(h, what, sizeof(what));
                        lg_http_respond_error(c->req, r == -ENOTSUP ? 422 : 500, "ImagePullFailed", "%s: %s", what,
                                              msg);
                }
                held_free(h);
                return;
        }
        if (h->ndjson)
                api_ndjson_start(c->req);
        if (r == 1)
                return held_finish(h);
        lg_http_request_on_abort(c->req, held_abort, h);
}

static void app_put(struct api_call *c, const char *ns, const char *name) {
        if (!lg_store_valid_name(name)) {
                lg_http_respond_error(c->req, 400, "BadRequest",
                                      "invalid app name `%s`: 1-63 of [a-z0-9-], starting and ending with a "
                                      "letter or digit",
                                      name);
                return;
        }
        json_t *body = api_body_json(c->req);
        if (!body)
                return;
        /* {"spec": {...}, "labels": {...}} or the spec itself. */
        json_t *spec = json_object_get(body, "spec");
        json_t *labels = json_object_get(body, "labels");
        static const char *const outer[] = {"spec", "labels", NULL};
        if (spec) {
                if (!api_only_fields(c->req, body, "an app", outer)) {
                        json_decref(body);
                        return;
                }
        } else {
                spec = body;
                labels = NULL;
        }
        json_incref(spec);
        json_incref(labels);
        json_decref(body);
        api_put_with_pull(c, ns, name, spec, labels);
}

void api_app(struct api_call *c, const char *ns, const char *name) {
        if (!api_ns_exists(c, ns))
                return;
        const char *m = lg_http_request_method(c->req);
        struct lg_error err = {0};
        if (!strcmp(m, "PUT"))
                return app_put(c, ns, name);
        struct lg_resource *res = NULL;
        const struct lg_resource_key *key = LG_KEY("App", ns, name);
        if (!strcmp(m, "GET")) {
                int r = lg_store_get(c->api->store, key, &res, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                api_json(c->req, 200, lg_apps_json(c->api->apps, res));
                lg_resource_free(res);
                return;
        }
        if (strcmp(m, "DELETE")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET, PUT or DELETE");
                return;
        }
        int r = lg_apps_delete(c->api->apps, ns, name, &err);
        if (r < 0)
                return api_store_error(c->req, r, &err);
        lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
}

/* ---- logs ----------------------------------------------------------------- */

/* A log source being followed: the app's event log or an instance's
 * stdout/stderr, with the offset read so far. */
struct follow_src {
        char path[4200];
        char prefix[64];
        off_t off;
};

struct follow {
        struct lg_api *api;
        struct lg_http_request *req;
        char key[160];
        uv_timer_t timer;
        struct follow_src src[64];
        size_t n;
        bool done;
};

static void follow_add(struct follow *f, const char *path, const char *prefix, off_t off) {
        for (size_t i = 0; i < f->n; i++)
                if (!strcmp(f->src[i].path, path))
                        return;
        if (f->n >= ARRAY_SIZE(f->src))
                return;
        snprintf(f->src[f->n].path, sizeof(f->src[f->n].path), "%s", path);
        snprintf(f->src[f->n].prefix, sizeof(f->src[f->n].prefix), "%s", prefix);
        f->src[f->n].off = off;
        f->n++;
}

static void add_instance(const struct lg_router_instance *inst, void *ud) {
        struct follow *f = ud;
        if (!inst->log_dir)
                return;
        char path[4200], prefix[64];
        snprintf(prefix, sizeof(prefix), "[%s] ", inst->id);
        snprintf(path, sizeof(path), "%s/stdout.log", inst->log_dir);
        follow_add(f, path, prefix, 0);
        snprintf(path, sizeof(path), "%s/stderr.log", inst->log_dir);
        follow_add(f, path, prefix, 0);
}

/* Append whole new lines of every source to out, each with its prefix. */
static void follow_collect(struct follow *f, char **out, size_t *len) {
        FILE *m = open_memstream(out, len);
        if (!m)
                return;
        for (size_t i = 0; i < f->n; i++) {
                FILE *in = fopen(f->src[i].path, "re");
                if (!in)
                        continue;
                struct stat st;
                /* A capped log was compacted under us: start over. */
                if (fstat(fileno(in), &st) == 0 && st.st_size < f->src[i].off)
                        f->src[i].off = 0;
                fseeko(in, f->src[i].off, SEEK_SET);
                char *line = NULL;
                size_t cap = 0;
                ssize_t n;
                while ((n = getline(&line, &cap, in)) > 0 && line[n - 1] == '\n') {
                        fputs(f->src[i].prefix, m);
                        fwrite(line, 1, (size_t) n, m);
                        f->src[i].off += n;
                }
                free(line);
                fclose(in);
        }
        fclose(m);
}

static void follow_closed(uv_handle_t *h) { free(h->data); }

static void follow_stop(struct follow *f) {
        if (f->done)
                return;
        f->done = true;
        uv_timer_stop(&f->timer);
        uv_close((uv_handle_t *) &f->timer, follow_closed);
}

static void follow_tick(uv_timer_t *t) {
        struct follow *f = t->data;
        if (f->api->router)
                lg_router_each_instance(f->api->router, f->key, add_instance, f);
        char *out = NULL;
        size_t len = 0;
        follow_collect(f, &out, &len);
        if (len && lg_http_response_write(f->req, out, len, NULL, NULL) < 0) {
                lg_http_response_abort(f->req);
                follow_stop(f);
        }
        free(out);
}

static void follow_abort(struct lg_http_request *req, int reason, void *ud) {
        struct follow *f = ud;
        (void) reason;
        lg_http_response_abort(req);
        follow_stop(f);
}

void api_app_logs(struct api_call *c, const char *ns, const char *name) {
        if (!api_ns_exists(c, ns))
                return;
        struct lg_resource *res = NULL;
        struct lg_error err = {0};
        int r = lg_store_get(c->api->store, LG_KEY("App", ns, name), &res, &err);
        lg_resource_free(res);
        if (r < 0)
                return api_store_error(c->req, r, &err);
        const char *tail = lg_http_request_param(c->req, "tail");
        long long want = 0;
        if (tail && lg_parse_int(tail, 0, INT32_MAX, &want) < 0) {
                lg_http_respond_error(c->req, 400, "BadRequest", "`tail` must be a whole number of lines, given `%.32s`",
                                      tail);
                return;
        }
        struct follow *f = calloc(1, sizeof(*f));
        if (!f) {
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        f->api = c->api;
        f->req = c->req;
        snprintf(f->key, sizeof(f->key), "%s/%s", ns, name);
        char path[4096];
        if (lg_apps_log_path(c->api->apps, f->key, path, sizeof(path)) == 0)
                follow_add(f, path, "", 0);
        if (c->api->router)
                lg_router_each_instance(c->api->router, f->key, add_instance, f);
        char *out = NULL;
        size_t len = 0;
        follow_collect(f, &out, &len);
        size_t skip = 0;
        if (tail && out) {
                size_t lines = 0;
                for (size_t i = len; i > 0 && want > 0; i--)
                        if (out[i - 1] == '\n' && i != len && ++lines == (size_t) want) {
                                skip = i;
                                break;
                        }
                if (want <= 0)
                        skip = len;
        }
        static const struct lg_http_header h[] = {{"Content-Type", "text/plain; charset=utf-8"}};
        const char *follow = lg_http_request_param(c->req, "follow");
        if (!follow || !strcmp(follow, "false") || !strcmp(follow, "0")) {
                lg_http_respond(c->req, 200, h, 1, out ? out + skip : "", out ? len - skip : 0);
                free(out);
                free(f);
                return;
        }
        lg_http_response_start(c->req, 200, h, 1, -1);
        if (out && len > skip)
                lg_http_response_write(c->req, out + skip, len - skip, NULL, NULL);
        free(out);
        uv_timer_init(c->api->loop, &f->timer);
        f->timer.data = f;
        uv_timer_start(&f->timer, follow_tick, 250, 250);
        lg_http_request_on_abort(c->req, follow_abort, f);
}

/* ---- data path ------------------------------------------------------------ */

void api_data_path(struct lg_api *api, struct lg_http_request *req, const char *ns, const char *app,
                   const char *target) {
        char key[160];
        if (!lg_store_valid_name(ns) || !lg_store_valid_name(app)) {
                lg_http_respond_error(req, 404, "NotFound", "app `%.64s/%.64s` not found", ns, app);
                return;
        }
        snprintf(key, sizeof(key), "%s/%s", ns, app);
        lg_router *router = api_router(api, req);
        if (router)
                lg_router_handle(router, req, key, target);
}
