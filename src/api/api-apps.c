/* Apps: validation, revisions, activation in the router, logs, and the
 * data path /fn/{namespace}/{app}/...
 *
 * What a revision is: the part of an app's spec that needs new instances
 * (runtime, package, entrypoint, settings, cpu, pool group). Changing it
 * makes revision N+1 and the router drains revision N; scaling settings
 * (concurrency, min/max instances, timeouts) change in place. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api-internal.h"

static const char *const app_fields[] = {
        "runtime", "package", "entrypoint", "settings", "concurrency", "minInstances", "maxInstances",
        "idleTimeoutSeconds", "timeoutSeconds", "cpu", "memory", "poolGroup", NULL,
};
static const char *const revision_fields[] = {
        "runtime", "package", "entrypoint", "settings", "cpu", "memory", "poolGroup", NULL,
};

static bool valid_env_name(const char *k) {
        if (!*k || (*k >= '0' && *k <= '9') || !strncmp(k, "LEGION_", 7))
                return false;
        for (const char *p = k; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
                        return false;
        return strlen(k) <= 128;
}

static bool int_field(const json_t *spec, const char *name, long long lo, long long hi, long long *ret,
                      char *err, size_t errlen) {
        json_t *v = json_object_get(spec, name);
        if (!v)
                return true;
        if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
                snprintf(err, errlen, "`%s` must be an integer from %lld to %lld", name, lo, hi);
                return false;
        }
        *ret = json_integer_value(v);
        return true;
}

/* Everything about an app spec that can be checked, with one message. */
static int check_app_spec(struct lg_daemon *d, const json_t *spec, char *err, size_t errlen) {
        const char *runtime = json_string_value(json_object_get(spec, "runtime"));
        if (!runtime || (strcmp(runtime, "python3") && strcmp(runtime, "node") && strcmp(runtime, "custom"))) {
                snprintf(err, errlen, "`runtime` must be python3, node or custom");
                return -EINVAL;
        }
        const char *pkg = json_string_value(json_object_get(spec, "package"));
        if (!pkg || !lg_digest_valid(pkg)) {
                snprintf(err, errlen, "`package` must be the sha256 digest of an uploaded package");
                return -EINVAL;
        }
        struct lg_blob b;
        if (lg_store_blob_get(d->store, pkg, &b, NULL) < 0) {
                snprintf(err, errlen, "package `%.12s` was not uploaded", pkg);
                return -EINVAL;
        }
        json_t *ep = json_object_get(spec, "entrypoint");
        if (ep && (!json_is_string(ep) || json_string_length(ep) > 1024)) {
                snprintf(err, errlen, "`entrypoint` must be a string");
                return -EINVAL;
        }
        json_t *settings = json_object_get(spec, "settings");
        if (settings) {
                if (!json_is_object(settings) || json_object_size(settings) > 1000) {
                        snprintf(err, errlen, "`settings` must be an object of at most 1000 strings");
                        return -EINVAL;
                }
                const char *k;
                json_t *v;
                json_object_foreach(settings, k, v) {
                        if (!valid_env_name(k) || !json_is_string(v) || json_string_length(v) > 32768 ||
                            memchr(json_string_value(v), '\0', json_string_length(v))) {
                                snprintf(err, errlen,
                                         "setting `%.64s`: names are [A-Za-z_][A-Za-z0-9_]* (not LEGION_*), "
                                         "values strings of at most 32 KiB",
                                         k);
                                return -EINVAL;
                        }
                }
        }
        long long conc = 10, minI = 0, maxI = 10, x;
        if (!int_field(spec, "concurrency", 1, 1000, &conc, err, errlen) ||
            !int_field(spec, "minInstances", 0, 1000, &minI, err, errlen) ||
            !int_field(spec, "maxInstances", 1, 1000, &maxI, err, errlen) ||
            !int_field(spec, "idleTimeoutSeconds", 1, 86400, &x, err, errlen) ||
            !int_field(spec, "timeoutSeconds", 1, 3600, &x, err, errlen))
                return -EINVAL;
        if (minI > maxI) {
                snprintf(err, errlen, "`minInstances` (%lld) is above `maxInstances` (%lld)", minI, maxI);
                return -EINVAL;
        }
        uint64_t u;
        json_t *v;
        if ((v = json_object_get(spec, "cpu")) && lg_spec_cpu(v, &u) < 0) {
                snprintf(err, errlen, "`cpu` must be CPUs (0.5) or millicores (\"500m\")");
                return -EINVAL;
        }
        const char *pool = json_string_value(json_object_get(spec, "poolGroup"));
        if (json_object_get(spec, "poolGroup") && !pool) {
                snprintf(err, errlen, "`poolGroup` must be a string");
                return -EINVAL;
        }
        struct lg_resource *pr = NULL;
        if (lg_store_get(d->store, LG_KEY("PoolGroup", "", pool ? pool : runtime), &pr, NULL) < 0) {
                snprintf(err, errlen, "pool group `%s` does not exist", pool ? pool : runtime);
                return -EINVAL;
        }
        const char *prt = json_string_value(json_object_get(pr->spec, "runtime"));
        int r = 0;
        if (!prt || strcmp(prt, runtime)) {
                snprintf(err, errlen, "pool group `%s` runs %s, not %s", pr->name, prt ? prt : "?", runtime);
                r = -EINVAL;
        }
        json_t *mem = json_object_get(spec, "memory");
        uint64_t pool_mem = 256ull << 20;
        json_t *pm = json_object_get(pr->spec, "memory");
        if (pm)
                lg_spec_memory(pm, &pool_mem);
        if (!r && mem && (lg_spec_memory(mem, &u) < 0 || u > pool_mem)) {
                snprintf(err, errlen, "`memory` must be a size up to the pool group's %llu bytes",
                         (unsigned long long) pool_mem);
                r = -EINVAL;
        }
        lg_resource_free(pr);
        return r;
}

static json_t *revision_spec(const json_t *spec) {
        json_t *rev = json_object();
        for (size_t i = 0; revision_fields[i]; i++) {
                json_t *v = json_object_get(spec, revision_fields[i]);
                if (v)
                        json_object_set(rev, revision_fields[i], v);
        }
        return rev;
}

static long long spec_int(const json_t *spec, const char *name, long long def) {
        json_t *v = json_object_get(spec, name);
        return json_is_integer(v) ? json_integer_value(v) : def;
}

int api_app_activate(struct lg_daemon *d, const char *ns, const char *name, struct lg_error *err) {
        struct lg_resource *res = NULL;
        struct lg_revision *rev = NULL;
        int r = lg_store_get(d->store, LG_KEY("App", ns, name), &res, err);
        if (r >= 0)
                r = lg_store_revision_get(d->store, LG_KEY("App", ns, name), 0, &rev, err);
        if (r < 0) {
                lg_resource_free(res);
                return r;
        }
        const json_t *rs = rev->spec;
        const char *runtime = json_string_value(json_object_get(rs, "runtime"));
        const char *pool = json_string_value(json_object_get(rs, "poolGroup"));
        const char *pkg = json_string_value(json_object_get(rs, "package"));
        char code[4096], key[160];
        struct lg_pkg_info info = {0};
        /* Extracted at upload; again here if the directory went missing. */
        if (lg_blob_extracted_path(d->blobs, pkg ? pkg : "", code, sizeof(code)) < 0 ||
            (access(code, F_OK) < 0 && lg_blob_extract(d->blobs, pkg, NULL, &info, err) < 0)) {
                lg_pkg_info_free(&info);
                lg_resource_free(res);
                lg_revision_free(rev);
                return lg_error_set(err, ENOENT, "package of app `%s/%s` is missing", ns, name);
        }
        lg_pkg_info_free(&info);
        json_t *settings = json_object_get(rs, "settings");
        size_t n = json_object_size(settings);
        char **env = calloc(n + 1, sizeof(char *));
        size_t i = 0;
        const char *k;
        json_t *v;
        json_object_foreach(settings, k, v) {
                if (env && asprintf(&env[i], "%s=%s", k, json_string_value(v)) >= 0)
                        i++;
        }
        uint64_t cpu = 0;
        json_t *cv = json_object_get(rs, "cpu");
        if (cv)
                lg_spec_cpu(cv, &cpu);
        snprintf(key, sizeof(key), "%s/%s", ns, name);
        struct lg_route_config cfg = {
                .key = key,
                .revision = (unsigned) rev->number,
                .pool = pool ? pool : runtime,
                .entrypoint = json_string_value(json_object_get(rs, "entrypoint")),
                .env = (const char *const *) env,
                .code_dir = code,
                .cpu_millis = cpu,
                .concurrency = (unsigned) spec_int(res->spec, "concurrency", 10),
                .min_instances = (unsigned) spec_int(res->spec, "minInstances", 0),
                .max_instances = (unsigned) spec_int(res->spec, "maxInstances", 10),
                .idle_timeout_s = (unsigned) spec_int(res->spec, "idleTimeoutSeconds", 300),
                .timeout_s = (unsigned) spec_int(res->spec, "timeoutSeconds", 60),
        };
        r = env ? lg_router_set(d->router, &cfg, err) : lg_error_set(err, ENOMEM, "settings");
        for (size_t j = 0; env && j < i; j++)
                free(env[j]);
        free(env);
        lg_resource_free(res);
        lg_revision_free(rev);
        return r;
}

static json_t *app_json(struct lg_daemon *d, const struct lg_resource *r) {
        json_t *doc = lg_resource_to_json(r);
        char key[160];
        snprintf(key, sizeof(key), "%s/%s", r->namespace, r->name);
        struct lg_route_stats st;
        json_t *status = json_object_get(doc, "status");
        if (!json_is_object(status)) {
                status = json_object();
                json_object_set_new(doc, "status", status);
        }
        char url[200];
        snprintf(url, sizeof(url), "/fn/%s/%s/", r->namespace, r->name);
        json_object_set_new(status, "url", json_string(url));
        if (lg_router_stats(d->router, key, &st) == 0) {
                json_object_set_new(status, "revision", json_integer(st.revision));
                json_object_set_new(status, "instances", json_integer(st.instances));
                json_object_set_new(status, "starting", json_integer(st.starting));
                json_object_set_new(status, "draining", json_integer(st.draining));
                json_object_set_new(status, "activeRequests", json_integer(st.active));
                json_object_set_new(status, "queuedRequests", json_integer(st.queued));
                json_object_set_new(status, "requests", json_integer((json_int_t) st.requests));
                json_object_set_new(status, "errors5xx", json_integer((json_int_t) st.errors_5xx));
                json_object_set_new(status, "rejected429", json_integer((json_int_t) st.rejected_429));
                json_object_set_new(status, "timeouts504", json_integer((json_int_t) st.timeouts_504));
                json_t *cs = json_pack("{s:I}", "count", (json_int_t) st.cold_starts);
                if (st.cold_start_ns_total) {
                        json_object_set_new(cs, "lastMs", json_real(st.cold_start_ns_last / 1e6));
                        json_object_set_new(cs, "minMs", json_real(st.cold_start_ns_min / 1e6));
                        json_object_set_new(cs, "maxMs", json_real(st.cold_start_ns_max / 1e6));
                }
                json_object_set_new(status, "coldStarts", cs);
        }
        return doc;
}

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
        int r = lg_store_list(c->d->store, "App", ns, sel, &l, &err);
        lg_selector_free(sel);
        if (r < 0)
                return api_store_error(c->req, r, &err);
        json_t *items = json_array();
        for (size_t i = 0; i < l.n; i++)
                json_array_append_new(items, app_json(c->d, l.items[i]));
        lg_resource_list_free(&l);
        api_json(c->req, 200, json_pack("{s:o}", "items", items));
}

static void app_put(struct api_call *c, const char *ns, const char *name) {
        struct lg_daemon *d = c->d;
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
        char msg[512];
        struct lg_error err = {0};
        if (!json_is_object(spec) || !api_only_fields(c->req, spec, "an app spec", app_fields)) {
                if (!json_is_object(spec))
                        lg_http_respond_error(c->req, 400, "BadRequest", "%s", "`spec` must be an object");
                json_decref(body);
                return;
        }
        if (labels && lg_store_check_labels(labels, &err) < 0) {
                lg_http_respond_error(c->req, 400, "BadRequest", "%s", err.msg);
                json_decref(body);
                return;
        }
        if (check_app_spec(d, spec, msg, sizeof(msg)) < 0) {
                lg_http_respond_error(c->req, 400, "BadRequest", "app `%s`: %s", name, msg);
                json_decref(body);
                return;
        }
        const struct lg_resource_key *key = LG_KEY("App", ns, name);
        struct lg_resource *old = NULL, *res = NULL;
        lg_store_get(d->store, key, &old, NULL);
        json_t *rev = revision_spec(spec);
        int64_t number = 0;
        int r = lg_store_begin(d->store, &err);
        if (r >= 0)
                r = lg_store_apply(d->store, key, labels, spec, &res, &err);
        int applied = r;
        if (r >= 0)
                r = lg_store_revision_add(d->store, key, rev, &number, &err);
        const char *pkg = json_string_value(json_object_get(spec, "package"));
        const char *old_pkg = old ? json_string_value(json_object_get(old->spec, "package")) : NULL;
        if (r >= 0 && (!old_pkg || strcmp(old_pkg, pkg)))
                r = lg_store_blob_ref(d->store, pkg, key, &err);
        if (r >= 0 && old_pkg && strcmp(old_pkg, pkg))
                r = lg_store_blob_unref(d->store, old_pkg, key, &err);
        if (r >= 0)
                r = lg_store_commit(d->store, &err);
        else
                lg_store_rollback(d->store);
        json_decref(rev);
        json_decref(body);
        lg_resource_free(old);
        if (r < 0) {
                lg_resource_free(res);
                return api_store_error(c->req, r, &err);
        }
        lg_store_revision_prune(d->store, key, 20, NULL);
        r = api_app_activate(d, ns, name, &err);
        if (r < 0) {
                lg_resource_free(res);
                lg_http_respond_error(c->req, 500, "Internal", "%s", err.msg);
                return;
        }
        api_json(c->req, applied == LG_STORE_CREATED ? 201 : 200, app_json(d, res));
        lg_resource_free(res);
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
                int r = lg_store_get(c->d->store, key, &res, &err);
                if (r < 0)
                        return api_store_error(c->req, r, &err);
                api_json(c->req, 200, app_json(c->d, res));
                lg_resource_free(res);
                return;
        }
        if (strcmp(m, "DELETE")) {
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET, PUT or DELETE");
                return;
        }
        int r = lg_store_delete(c->d->store, key, 0, NULL, &err);
        if (r < 0)
                return api_store_error(c->req, r, &err);
        char k[160];
        snprintf(k, sizeof(k), "%s/%s", ns, name);
        lg_router_remove(c->d->router, k);
        lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
}

/* ---- logs ----------------------------------------------------------------- */

static int app_log_path(struct lg_daemon *d, const char *key, char *buf, size_t cap) {
        const char *slash = strchr(key, '/');
        if (!slash)
                return -EINVAL;
        return snprintf(buf, cap, "%s/%.*s/%s.log", d->logs_dir, (int) (slash - key), key, slash + 1) < (int) cap
                       ? 0
                       : -ENAMETOOLONG;
}

void lg_api_app_log(const char *key, const char *line, void *userdata) {
        struct lg_daemon *d = userdata;
        char path[4096];
        if (app_log_path(d, key, path, sizeof(path)) < 0)
                return;
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", path);
        *strrchr(dir, '/') = '\0';
        lg_mkdir_p(dir, 0700);
        /* Capped: at 1 MiB the log moves to .1 and starts again. */
        struct stat st;
        if (stat(path, &st) == 0 && st.st_size > (1 << 20)) {
                char old[4100];
                snprintf(old, sizeof(old), "%s.1", path);
                rename(path, old);
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0)
                return;
        char ts[32], buf[1200];
        time_t now = time(NULL);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        int n = snprintf(buf, sizeof(buf), "%s legion: %s\n", ts, line);
        if (n > 0)
                (void) lg_write_all(fd, buf, (size_t) n > sizeof(buf) - 1 ? sizeof(buf) - 1 : (size_t) n);
        close(fd);
}

/* A log source being followed: the app's event log or an instance's
 * stdout/stderr, with the offset read so far. */
struct follow_src {
        char path[4200];
        char prefix[64];
        off_t off;
};

struct follow {
        struct lg_daemon *d;
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

static void add_instance(const char *id, const char *dir, void *ud) {
        struct follow *f = ud;
        char path[4200], prefix[64];
        snprintf(prefix, sizeof(prefix), "[%s] ", id);
        snprintf(path, sizeof(path), "%s/stdout.log", dir);
        follow_add(f, path, prefix, 0);
        snprintf(path, sizeof(path), "%s/stderr.log", dir);
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
        lg_router_each_instance(f->d->router, f->key, add_instance, f);
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
        int r = lg_store_get(c->d->store, LG_KEY("App", ns, name), &res, &err);
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
        f->d = c->d;
        f->req = c->req;
        snprintf(f->key, sizeof(f->key), "%s/%s", ns, name);
        char path[4096];
        if (app_log_path(c->d, f->key, path, sizeof(path)) == 0)
                follow_add(f, path, "", 0);
        lg_router_each_instance(c->d->router, f->key, add_instance, f);
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
        uv_timer_init(c->d->loop, &f->timer);
        f->timer.data = f;
        uv_timer_start(&f->timer, follow_tick, 250, 250);
        lg_http_request_on_abort(c->req, follow_abort, f);
}

/* ---- data path ------------------------------------------------------------ */

void api_data_path(struct lg_daemon *d, struct lg_http_request *req, const char *ns, const char *app,
                   const char *target) {
        char key[160];
        if (!lg_store_valid_name(ns) || !lg_store_valid_name(app)) {
                lg_http_respond_error(req, 404, "NotFound", "app `%.64s/%.64s` not found", ns, app);
                return;
        }
        snprintf(key, sizeof(key), "%s/%s", ns, app);
        lg_router_handle(d->router, req, key, target);
}
