/* Apps and pool groups (apps.h): spec checks, revisions, activation in the
 * router, the figures the API shows, and the apps' event logs. Package
 * uploads are apps-upload.c. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "apps/apps-internal.h"
#include "common/spec.h"
#include "net/net.h"

const char *const lg_app_fields[] = {
        "runtime", "package", "entrypoint", "settings", "concurrency", "minInstances", "maxInstances",
        "idleTimeoutSeconds", "timeoutSeconds", "cpu", "memory", "poolGroup", "egress", NULL,
};
/* Not "egress": its policy changes in place, the instances follow at once. */
static const char *const revision_fields[] = {
        "runtime", "package", "entrypoint", "settings", "cpu", "memory", "poolGroup", NULL,
};
static const char *const pool_fields[] = {"runtime", "ready", "cpu", "memory", "startupBoost", NULL};
static const char *const boost_fields[] = {"cpu", "seconds", NULL};

/* Revisions kept per app. */
#define REVISIONS_KEPT 20

int lg_apps_new(const struct lg_apps_config *cfg, lg_apps **ret, struct lg_error *err) {
        lg_apps *a = calloc(1, sizeof(*a));
        if (!a || !(a->logs_dir = strdup(cfg->logs_dir))) {
                free(a);
                return lg_error_set(err, ENOMEM, "apps");
        }
        a->loop = cfg->loop;
        a->store = cfg->store;
        a->blobs = cfg->blobs;
        a->ops = cfg->ops;
        a->ud = cfg->ud;
        a->tenants = cfg->tenants;
        a->jobs.tail = &a->jobs.head;
        *ret = a;
        return 0;
}

void lg_apps_free(lg_apps *a) {
        if (!a)
                return;
        apps_upload_drop_queued(a);
        free(a->logs_dir);
        free(a);
}

static void app_key(char *buf, size_t cap, const char *ns, const char *name) { snprintf(buf, cap, "%s/%s", ns, name); }

/* ---- app specs ------------------------------------------------------------------ */

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

/* Everything about an app spec that can be checked: -EINVAL with one
 * message in err; the store's failures (other than "not found") in serr. */
static int check_app_spec(lg_apps *a, const json_t *spec, char *err, size_t errlen, struct lg_error *serr) {
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
        int r = lg_store_blob_get(a->store, pkg, &b, serr);
        if (r == -ENOENT) {
                snprintf(err, errlen, "package `%.12s` was not uploaded", pkg);
                return -EINVAL;
        }
        if (r < 0)
                return r;
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
        struct lg_net_policy np;
        struct lg_error perr = {0};
        if ((v = json_object_get(spec, "egress")) && lg_tenant_policy_parse(v, 0, "`egress`", &np, &perr) < 0) {
                snprintf(err, errlen, "%s", perr.msg);
                return -EINVAL;
        }
        const char *pool = json_string_value(json_object_get(spec, "poolGroup"));
        if (json_object_get(spec, "poolGroup") && !pool) {
                snprintf(err, errlen, "`poolGroup` must be a string");
                return -EINVAL;
        }
        struct lg_resource *pr = NULL;
        r = lg_store_get(a->store, LG_KEY("PoolGroup", "", pool ? pool : runtime), &pr, serr);
        if (r == -ENOENT) {
                snprintf(err, errlen, "pool group `%s` does not exist", pool ? pool : runtime);
                return -EINVAL;
        }
        if (r < 0)
                return r;
        r = 0;
        const char *prt = json_string_value(json_object_get(pr->spec, "runtime"));
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
        for (size_t i = 0; rev && revision_fields[i]; i++) {
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

int lg_apps_put(lg_apps *a, const char *ns, const char *name, const json_t *labels, const json_t *spec,
                struct lg_resource **ret, struct lg_error *err) {
        char msg[512];
        if (!json_is_object(spec))
                return lg_error_setm(err, EINVAL, "%s", "`spec` must be an object");
        int r = lg_spec_only_fields(spec, "an app spec", lg_app_fields, err);
        if (r < 0)
                return r;
        if (labels && (r = lg_store_check_labels(labels, err)) < 0)
                return r;
        r = check_app_spec(a, spec, msg, sizeof(msg), err);
        if (r == -EINVAL)
                return lg_error_setm(err, EINVAL, "app `%s`: %s", name, msg);
        if (r < 0)
                return r;
        const struct lg_resource_key *key = LG_KEY("App", ns, name);
        _cleanup_(json_decrefp) json_t *rev = revision_spec(spec);
        if (!rev)
                return lg_error_set(err, ENOMEM, "app `%s`", name);
        struct lg_resource *old = NULL, *res = NULL;
        r = lg_store_get(a->store, key, &old, err);
        if (r < 0 && r != -ENOENT)
                return r;
        int64_t number = 0;
        r = lg_store_begin(a->store, err);
        if (r >= 0)
                r = lg_store_apply(a->store, key, labels, spec, &res, err);
        int applied = r;
        if (r >= 0)
                r = lg_store_revision_add(a->store, key, rev, &number, err);
        const char *pkg = json_string_value(json_object_get(spec, "package"));
        const char *old_pkg = old ? json_string_value(json_object_get(old->spec, "package")) : NULL;
        if (r >= 0 && (!old_pkg || strcmp(old_pkg, pkg)))
                r = lg_store_blob_ref(a->store, pkg, key, err);
        if (r >= 0 && old_pkg && strcmp(old_pkg, pkg))
                r = lg_store_blob_unref(a->store, old_pkg, key, err);
        if (r >= 0)
                r = lg_store_commit(a->store, err);
        else
                lg_store_rollback(a->store);
        lg_resource_free(old);
        if (r < 0) {
                lg_resource_free(res);
                return r;
        }
        /* Old revisions are only history: failing to trim them is no
         * failure of the put, and the next put trims again. */
        struct lg_error prune_err = {0};
        (void) lg_store_revision_prune(a->store, key, REVISIONS_KEPT, &prune_err);
        if (ret)
                *ret = res;
        else
                lg_resource_free(res);
        return applied;
}

/* Route app (the stored object) at revision rev. */
static int activate(lg_apps *a, const struct lg_resource *app, const struct lg_revision *rev,
                    struct lg_error *err) {
        const char *ns = app->namespace, *name = app->name;
        const json_t *rs = rev->spec;
        const char *runtime = json_string_value(json_object_get(rs, "runtime"));
        const char *pool = json_string_value(json_object_get(rs, "poolGroup"));
        const char *pkg = json_string_value(json_object_get(rs, "package"));
        char code[4096], key[160];
        /* Extracted at upload. If the tree went missing, it is extracted
         * again as a package job, off the loop, which activates the app
         * when it is back: routed a little later. */
        if (lg_blob_extracted_path(a->blobs, pkg ? pkg : "", code, sizeof(code)) < 0)
                return lg_error_set(err, ENOENT, "package of app `%s/%s` is missing", ns, name);
        if (access(code, F_OK) < 0) {
                /* Only a tree can come back, from the package's bytes:
                 * without them the app cannot be made live, said now. */
                if (lg_blob_exists(a->blobs, pkg) <= 0)
                        return lg_error_set(err, ENOENT, "package of app `%s/%s` is missing", ns, name);
                app_key(key, sizeof(key), ns, name);
                return apps_reextract(a, key, pkg, err);
        }
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
        app_key(key, sizeof(key), ns, name);
        /* Its instances' policy, before any is started or taken back. */
        int r = lg_tenants_egress_set(a->tenants, ns, "app", name, json_object_get(app->spec, "egress"), err);
        if (r < 0) {
                for (size_t j = 0; env && j < i; j++)
                        free(env[j]);
                free(env);
                return r;
        }
        /* Its instances are assigned that policy; none: their namespace's. */
        char policy[LG_NET_NAME_MAX];
        lg_tenant_policy_name(policy, sizeof(policy), ns, "app", name);
        bool own_egress = json_object_get(app->spec, "egress") != NULL;
        struct lg_route_config cfg = {
                .key = key,
                .net_policy = own_egress ? policy : NULL,
                .revision = (unsigned) rev->number,
                .pool = pool ? pool : runtime,
                .entrypoint = json_string_value(json_object_get(rs, "entrypoint")),
                .env = (const char *const *) env,
                .code_dir = code,
                .cpu_millis = cpu,
                .concurrency = (unsigned) spec_int(app->spec, "concurrency", 10),
                .min_instances = (unsigned) spec_int(app->spec, "minInstances", 0),
                .max_instances = (unsigned) spec_int(app->spec, "maxInstances", 10),
                .idle_timeout_s = (unsigned) spec_int(app->spec, "idleTimeoutSeconds", 300),
                .timeout_s = (unsigned) spec_int(app->spec, "timeoutSeconds", 60),
        };
        r = env && i == n ? a->ops->route_set(a->ud, &cfg, err) : lg_error_set(err, ENOMEM, "settings");
        for (size_t j = 0; env && j < i; j++)
                free(env[j]);
        free(env);
        return r;
}

int lg_apps_restore_app(lg_apps *a, const struct lg_resource *app, struct lg_error *err) {
        _cleanup_revision_ struct lg_revision *rev = NULL;
        int r = lg_store_revision_get(a->store, LG_KEY("App", app->namespace, app->name), 0, &rev, err);
        return r < 0 ? r : activate(a, app, rev, err);
}

int lg_apps_activate(lg_apps *a, const char *ns, const char *name, struct lg_error *err) {
        struct lg_resource *res = NULL;
        int r = lg_store_get(a->store, LG_KEY("App", ns, name), &res, err);
        if (r >= 0)
                r = lg_apps_restore_app(a, res, err);
        lg_resource_free(res);
        return r;
}

int lg_apps_delete(lg_apps *a, const char *ns, const char *name, struct lg_error *err) {
        int r = lg_store_delete(a->store, LG_KEY("App", ns, name), 0, NULL, err);
        if (r < 0)
                return r;
        char key[160];
        app_key(key, sizeof(key), ns, name);
        a->ops->route_remove(a->ud, key);
        /* Its instances are drained under it: gone with them in lg_net
         * (sandboxes assigned to a deleted policy are unassigned). */
        struct lg_error ignored = {0};
        lg_tenants_policy_set(a->tenants, ns, "app", name, NULL, &ignored);
        return 0;
}

static void add_address(const char *address, void *ud) { json_array_append_new(ud, json_string(address)); }

json_t *lg_apps_json(lg_apps *a, const struct lg_resource *r) {
        json_t *doc = lg_resource_to_json(r);
        if (!doc)
                return NULL;
        char key[160];
        app_key(key, sizeof(key), r->namespace, r->name);
        struct lg_route_stats st;
        json_t *status = json_object_get(doc, "status");
        if (!json_is_object(status)) {
                status = json_object();
                json_object_set_new(doc, "status", status);
        }
        char url[200];
        snprintf(url, sizeof(url), "/fn/%s/%s/", r->namespace, r->name);
        json_object_set_new(status, "url", json_string(url));
        if (a->ops->route_stats(a->ud, key, &st) == 0) {
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
                json_t *addresses = json_array();
                if (a->ops->route_addresses)
                        a->ops->route_addresses(a->ud, key, add_address, addresses);
                json_object_set_new(status, "addresses", addresses);
        }
        return doc;
}

/* ---- pool groups --------------------------------------------------------------- */

/* Check a pool group spec and fill the node's view of it (strict: unknown
 * fields are refused too). */
static int pool_from_spec(const char *name, const json_t *spec, bool strict, struct lg_pool_spec *ps,
                          struct lg_error *err) {
        memset(ps, 0, sizeof(*ps));
        ps->name = name;
        int r;
        if (strict && (r = lg_spec_only_fields(spec, "a pool group", pool_fields, err)) < 0)
                return r;
        ps->runtime = json_string_value(json_object_get(spec, "runtime"));
        /* Function instances are on the node's network (when it has one). */
        ps->network = true;
        const char *bad = NULL;
        if (!ps->runtime ||
            (strcmp(ps->runtime, "python3") && strcmp(ps->runtime, "node") && strcmp(ps->runtime, "custom")))
                bad = "`runtime` must be python3, node or custom";
        json_t *ready = json_object_get(spec, "ready");
        if (!bad && ready &&
            (!json_is_integer(ready) || json_integer_value(ready) < 0 || json_integer_value(ready) > 1000))
                bad = "`ready` must be an integer from 0 to 1000";
        ps->ready = ready ? (unsigned) json_integer_value(ready) : 1;
        json_t *v;
        if (!bad && (v = json_object_get(spec, "cpu")) && lg_spec_cpu(v, &ps->cpu_millis) < 0)
                bad = "`cpu` must be CPUs (0.5) or millicores (\"500m\")";
        if (!bad && (v = json_object_get(spec, "memory")) && lg_spec_memory(v, &ps->memory_bytes) < 0)
                bad = "`memory` must be a size from 4Mi to 64Gi (\"256Mi\")";
        json_t *boost = json_object_get(spec, "startupBoost");
        if (!bad && boost) {
                if (!json_is_object(boost))
                        bad = "`startupBoost` must be an object {cpu, seconds}";
                else if (strict && (r = lg_spec_only_fields(boost, "startupBoost", boost_fields, err)) < 0)
                        return r;
                else if (!(v = json_object_get(boost, "cpu")) || lg_spec_cpu(v, &ps->boost_cpu_millis) < 0)
                        bad = "`startupBoost.cpu` must be CPUs or millicores";
                else if (!json_is_integer(v = json_object_get(boost, "seconds")) || json_integer_value(v) < 1 ||
                         json_integer_value(v) > 3600)
                        bad = "`startupBoost.seconds` must be an integer from 1 to 3600";
                else
                        ps->boost_seconds = (unsigned) json_integer_value(v);
        }
        if (bad)
                return lg_error_setm(err, EINVAL, "pool group `%s`: %s", name, bad);
        return 0;
}

int lg_apps_pool_put(lg_apps *a, const char *name, const json_t *spec, struct lg_resource **ret,
                     struct lg_error *err) {
        struct lg_pool_spec ps;
        int r = pool_from_spec(name, spec, true, &ps, err);
        if (r < 0)
                return r;
        struct lg_resource *res = NULL;
        int applied = lg_store_apply(a->store, LG_KEY("PoolGroup", "", name), NULL, spec, &res, err);
        if (applied < 0)
                return applied;
        r = lg_apps_restore_pool(a, res, err);
        if (r < 0) {
                lg_resource_free(res);
                return r;
        }
        if (ret)
                *ret = res;
        else
                lg_resource_free(res);
        return applied;
}

int lg_apps_restore_pool(lg_apps *a, const struct lg_resource *pool, struct lg_error *err) {
        struct lg_pool_spec ps;
        int r = pool_from_spec(pool->name, pool->spec, false, &ps, err);
        return r < 0 ? r : a->ops->pool_set(a->ud, &ps, err);
}

int lg_apps_pool_delete(lg_apps *a, const char *name, struct lg_error *err) {
        int r = lg_store_delete(a->store, LG_KEY("PoolGroup", "", name), 0, NULL, err);
        if (r < 0)
                return r;
        a->ops->pool_delete(a->ud, name);
        return 0;
}

json_t *lg_apps_pool_json(lg_apps *a, const struct lg_resource *r) {
        json_t *doc = json_pack("{s:s, s:O}", "name", r->name, "spec", r->spec);
        struct lg_pool_stats ps;
        if (doc && a->ops->pool_stats(a->ud, r->name, &ps) == 0) {
                json_object_set_new(doc, "status",
                                    json_pack("{s:i, s:i, s:I, s:I, s:I}", "ready", ps.ready, "starting", ps.starting,
                                              "created", (json_int_t) ps.created, "taken", (json_int_t) ps.taken,
                                              "onDemand", (json_int_t) ps.on_demand));
                if (ps.failures)
                        json_object_set_new(json_object_get(doc, "status"), "lastError",
                                            json_pack("{s:i, s:s}", "failures", ps.failures, "message",
                                                      ps.last_error));
        }
        return doc;
}

/* ---- logs ----------------------------------------------------------------------- */

int lg_apps_log_path(lg_apps *a, const char *key, char *buf, size_t cap) {
        const char *slash = strchr(key, '/');
        if (!slash)
                return -EINVAL;
        return snprintf(buf, cap, "%s/%.*s/%s.log", a->logs_dir, (int) (slash - key), key, slash + 1) < (int) cap
                       ? 0
                       : -ENAMETOOLONG;
}

void lg_apps_log(const char *key, const char *line, void *ud) {
        lg_apps *a = ud;
        char path[4096];
        if (lg_apps_log_path(a, key, path, sizeof(path)) < 0)
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
