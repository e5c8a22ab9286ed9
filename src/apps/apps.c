/* Apps and pool groups (apps.h): spec checks, revisions, activation in the
 * router, the figures the API shows, and the apps' event logs. Package
 * uploads are apps-upload.c; what is about images (container apps' and
 * image pool groups' fields, pulls, pins, upgrades) apps-image.c. */
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
        "runtime", "package", "packageImage", "entrypoint", "settings", "concurrency", "minInstances", "maxInstances",
        "idleTimeoutSeconds", "timeoutSeconds", "cpu", "memory", "poolGroup", "egress",
        /* container apps */
        "image", "port", "command", "args", "env", "readinessPath", "auth", NULL,
};
/* Not "egress": its policy changes in place, the instances follow at once;
 * nor "auth" (apps-auth.c), asked of memory at each request.
 * A revision of a container app also has "imageId", the image its `image`
 * (or its pool group's) resolved to; one of a pool group whose upgrade
 * policy is newRevision may have "poolVersion"; one of a function with
 * `packageImage` has "packageDigest" (the artifact it resolved to) and
 * "package" (its archive's digest). */
static const char *const revision_fields[] = {
        "runtime", "package", "packageImage", "entrypoint", "settings", "cpu", "memory", "poolGroup",
        "image", "port", "command", "args", "env", "readinessPath", NULL,
};
/* Fields only container apps have: a function spec with one is refused. */
static const char *const image_only_fields[] = {"image", "port", "command", "args", "env", "readinessPath", NULL};
static const char *const pool_fields[] = {"runtime", "ready", "cpu", "memory", "startupBoost", "version", "upgrade",
                                          NULL};
/* runtime and version are refused by apps_pool_image_spec, saying why. */
static const char *const image_pool_fields[] = {"image",   "ready",       "cpu",     "memory", "startupBoost",
                                                "upgrade", "placeholder", "command", "args",   "env",
                                                "port",    "readinessPath", "runtime", "version", NULL};
static const char *const boost_fields[] = {"cpu", "seconds", NULL};
static const char *const upgrade_fields[] = {"maxUnavailable", "apps", NULL};

/* Revisions kept per app. */
#define REVISIONS_KEPT 20

static int pool_from_spec(lg_apps *a, const char *name, const json_t *spec, bool strict, struct lg_pool_spec *ps,
                          struct apps_pool_hold *hold, struct lg_error *err);

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
        a->images = cfg->images;
        a->image_jobs = cfg->image_jobs;
        a->no_network = cfg->no_network;
        a->jobs.tail = &a->jobs.head;
        a->pkg_jobs.tail = &a->pkg_jobs.head;
        pthread_mutex_init(&a->pkg_mu, NULL);
        a->lazy_ops = cfg->lazy_ops;
        a->insecure_registries = cfg->insecure_registries;
        a->lazy_ud = cfg->lazy_ud;
        if (cfg->lazy_dir && !(a->lazy_dir = strdup(cfg->lazy_dir))) {
                free(a->logs_dir);
                free(a);
                return lg_error_set(err, ENOMEM, "apps");
        }
        *ret = a;
        return 0;
}

void lg_apps_free(lg_apps *a) {
        if (!a)
                return;
        apps_upload_drop_queued(a);
        apps_pulls_free(a);
        apps_packages_free(a);
        pthread_mutex_destroy(&a->pkg_mu);
        apps_auth_free(a);
        free(a->logs_dir);
        free(a);
}

void apps_key(char *buf, size_t cap, const char *ns, const char *name) { snprintf(buf, cap, "%s/%s", ns, name); }

void apps_strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

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

bool apps_check_env(const json_t *spec, const char *field, char *err, size_t errlen) {
        json_t *env = json_object_get(spec, field);
        if (!env)
                return true;
        if (!json_is_object(env) || json_object_size(env) > 1000) {
                snprintf(err, errlen, "`%s` must be an object of at most 1000 strings", field);
                return false;
        }
        const char *k;
        json_t *v;
        json_object_foreach(env, k, v) {
                if (!valid_env_name(k) || !json_is_string(v) || json_string_length(v) > 32768 ||
                    memchr(json_string_value(v), '\0', json_string_length(v))) {
                        snprintf(err, errlen,
                                 "%s `%.64s`: names are [A-Za-z_][A-Za-z0-9_]* (not LEGION_*), "
                                 "values strings of at most 32 KiB",
                                 !strcmp(field, "settings") ? "setting" : field, k);
                        return false;
                }
        }
        return true;
}

/* `package`: the digest of a package uploaded to this node. */
static int check_uploaded_package(lg_apps *a, const json_t *spec, char *err, size_t errlen, struct lg_error *serr) {
        const char *pkg = json_string_value(json_object_get(spec, "package"));
        if (!pkg || !lg_digest_valid(pkg)) {
                snprintf(err, errlen, "`package` must be the sha256 digest of an uploaded package (or "
                                      "`packageImage` a package in a registry)");
                return -EINVAL;
        }
        struct lg_blob b;
        int r = lg_store_blob_get(a->store, pkg, &b, serr);
        if (r == -ENOENT) {
                snprintf(err, errlen, "package `%.12s` was not uploaded", pkg);
                return -EINVAL;
        }
        return r < 0 ? r : 0;
}

/* The fields of a function app: runtime, package (or packageImage, into
 * pimg), entrypoint, settings. */
static int check_function_fields(lg_apps *a, const json_t *spec, struct apps_pkg_image *pimg, char *err,
                                 size_t errlen, struct lg_error *serr) {
        const char *runtime = json_string_value(json_object_get(spec, "runtime"));
        if (!runtime || (strcmp(runtime, "python3") && strcmp(runtime, "node") && strcmp(runtime, "custom"))) {
                snprintf(err, errlen, "`runtime` must be python3, node or custom (or `image`, an OCI image "
                                      "reference, for a container app)");
                return -EINVAL;
        }
        for (size_t i = 0; image_only_fields[i]; i++)
                if (json_object_get(spec, image_only_fields[i])) {
                        snprintf(err, errlen, "`%s` is a field of container apps (with `image`), not of functions",
                                 image_only_fields[i]);
                        return -EINVAL;
                }
        int r = json_object_get(spec, "packageImage") ? apps_package_image_check(a, spec, pimg, err, errlen)
                                                       : check_uploaded_package(a, spec, err, errlen, serr);
        if (r < 0)
                return r;
        json_t *ep = json_object_get(spec, "entrypoint");
        if (ep && (!json_is_string(ep) || json_string_length(ep) > 1024)) {
                snprintf(err, errlen, "`entrypoint` must be a string");
                return -EINVAL;
        }
        return apps_check_env(spec, "settings", err, errlen) ? 0 : -EINVAL;
}

/* Everything about an app spec that can be checked: -EINVAL with one
 * message in err; the store's failures (other than "not found") in serr.
 * A container app's image resolves into img (id "" when not in the store). */
static int check_app_spec(lg_apps *a, const json_t *spec, struct apps_image_app *img, struct apps_pkg_image *pimg,
                          char *err, size_t errlen, struct lg_error *serr) {
        bool image = apps_is_image_spec(spec);
        int r;
        if (!image && (r = check_function_fields(a, spec, pimg, err, errlen, serr)) < 0)
                return r;
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
        if (json_object_get(spec, "poolGroup") && (!pool || !lg_store_valid_name(pool))) {
                snprintf(err, errlen, "`poolGroup` must be the name of a pool group");
                return -EINVAL;
        }
        const char *runtime = json_string_value(json_object_get(spec, "runtime"));
        /* A function always runs in a pool group (its runtime's by
         * default); a container app without one is made on demand. */
        struct lg_resource *pr = NULL;
        if (pool || !image) {
                r = lg_store_get(a->store, LG_KEY("PoolGroup", "", pool ? pool : runtime), &pr, serr);
                if (r == -ENOENT) {
                        snprintf(err, errlen, "pool group `%s` does not exist", pool ? pool : runtime);
                        return -EINVAL;
                }
                if (r < 0)
                        return r;
        }
        r = 0;
        const char *prt = pr ? json_string_value(json_object_get(pr->spec, "runtime")) : NULL;
        if (image) {
                r = apps_image_check(a, spec, pr, img, err, errlen, serr);
        } else if (!prt || strcmp(prt, runtime)) {
                snprintf(err, errlen, "pool group `%s` runs %s, not %s", pr->name, prt ? prt : "an image", runtime);
                r = -EINVAL;
        }
        json_t *mem = json_object_get(spec, "memory");
        uint64_t pool_mem = pr ? 256ull << 20 : 64ull << 30;
        json_t *pm = pr ? json_object_get(pr->spec, "memory") : NULL;
        if (pm)
                lg_spec_memory(pm, &pool_mem);
        if (!r && mem && (lg_spec_memory(mem, &u) < 0 || u > pool_mem)) {
                snprintf(err, errlen, "`memory` must be a size from 4Mi up to %s%llu bytes (\"256Mi\")",
                         pr ? "the pool group's " : "", (unsigned long long) pool_mem);
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
        enum lg_app_auth auth;
        struct lg_error aerr = {0};
        if (apps_auth_parse(spec, &auth, &aerr) < 0)
                return lg_error_setm(err, EINVAL, "app `%s`: %s", name, aerr.msg);
        struct apps_image_app img = {0};
        struct apps_pkg_image pimg = {0};
        r = check_app_spec(a, spec, &img, &pimg, msg, sizeof(msg), err);
        if (r == -EINVAL)
                return lg_error_setm(err, EINVAL, "app `%s`: %s", name, msg);
        if (r < 0)
                return r;
        if (pimg.ref[0] && !pimg.digest[0])
                return lg_error_setm(err, EINVAL,
                                     "app `%s`: package image `%s` was not fetched by this node (a deploy through "
                                     "the API fetches it)",
                                     name, pimg.ref);
        if (img.ref[0] && !img.id[0])
                return lg_error_setm(err, EINVAL,
                                     "app `%s`: image `%s` is not in the image store (a deploy through the API "
                                     "pulls it; or `legion image pull` it first)",
                                     name, img.ref);
        const struct lg_resource_key *key = LG_KEY("App", ns, name);
        _cleanup_(json_decrefp) json_t *rev = revision_spec(spec);
        if (!rev || (img.id[0] && json_object_set_new(rev, "imageId", json_string(img.id)) < 0) ||
            (pimg.digest[0] && (json_object_set_new(rev, "packageDigest", json_string(pimg.digest)) < 0 ||
                                json_object_set_new(rev, "package", json_string(pimg.hex)) < 0)))
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
        /* Container apps have no package. */
        if (r >= 0 && pkg && (!old_pkg || strcmp(old_pkg, pkg)))
                r = lg_store_blob_ref(a->store, pkg, key, err);
        if (r >= 0 && old_pkg && (!pkg || strcmp(old_pkg, pkg)))
                r = lg_store_blob_unref(a->store, old_pkg, key, err);
        if (r >= 0)
                r = lg_store_commit(a->store, err);
        else
                lg_store_rollback(a->store);
        lg_resource_free(old);
        /* In place, from the next request on (no revision, no routing). */
        if (r >= 0 && (r = apps_auth_set(a, ns, name, auth)) < 0)
                lg_error_set(err, -r, "app `%s`: auth", name);
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

char **apps_env_strings(const json_t *spec, const char *field) {
        json_t *obj = json_object_get(spec, field);
        size_t n = json_object_size(obj), i = 0;
        char **env = calloc(n + 1, sizeof(char *));
        const char *k;
        json_t *v;
        json_object_foreach(obj, k, v) {
                if (env && asprintf(&env[i], "%s=%s", k, json_string_value(v)) >= 0)
                        i++;
        }
        if (env && i < n) {
                apps_strv_free(env);
                return NULL;
        }
        return env;
}

/* A function's code: 0 with code set, 1 when its tree is being extracted
 * again (routed once that is done), < 0 when it cannot come back. */
static int function_code(lg_apps *a, const struct lg_resource *app, const json_t *rs, char *code, size_t cap,
                         struct lg_error *err) {
        const char *ns = app->namespace, *name = app->name;
        const char *pkg = json_string_value(json_object_get(rs, "package"));
        if (json_object_get(rs, "packageImage"))
                return apps_package_image_code(a, app, rs, code, cap, err);
        /* Extracted at upload. If the tree went missing, it is extracted
         * again as a package job, off the loop, which activates the app
         * when it is back: routed a little later. */
        if (lg_blob_extracted_path(a->blobs, pkg ? pkg : "", code, cap) < 0)
                return lg_error_set(err, ENOENT, "package of app `%s/%s` is missing", ns, name);
        if (access(code, F_OK) == 0)
                return 0;
        /* Only a tree can come back, from the package's bytes: without
         * them the app cannot be made live, said now. */
        if (lg_blob_exists(a->blobs, pkg) <= 0)
                return lg_error_set(err, ENOENT, "package of app `%s/%s` is missing", ns, name);
        char key[160];
        apps_key(key, sizeof(key), ns, name);
        int r = apps_reextract(a, key, pkg, err);
        return r < 0 ? r : 1;
}

int apps_activate_rev(lg_apps *a, const struct lg_resource *app, const struct lg_revision *rev,
                      struct lg_error *err) {
        const char *ns = app->namespace, *name = app->name;
        const json_t *rs = rev->spec;
        const char *runtime = json_string_value(json_object_get(rs, "runtime"));
        const char *pool = json_string_value(json_object_get(rs, "poolGroup"));
        char code[4096], key[160];
        apps_key(key, sizeof(key), ns, name);
        bool image = !runtime;
        struct apps_route_hold hold = {0};
        uint64_t cpu = 0;
        json_t *cv = json_object_get(rs, "cpu");
        if (cv)
                lg_spec_cpu(cv, &cpu);
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
                .cpu_millis = cpu,
                .concurrency = (unsigned) spec_int(app->spec, "concurrency", 10),
                .min_instances = (unsigned) spec_int(app->spec, "minInstances", 0),
                .max_instances = (unsigned) spec_int(app->spec, "maxInstances", 10),
                .idle_timeout_s = (unsigned) spec_int(app->spec, "idleTimeoutSeconds", 300),
                .timeout_s = (unsigned) spec_int(app->spec, "timeoutSeconds", 60),
        };
        int r = image ? apps_image_route(a, app, rs, &cfg, &hold, err)
                      : function_code(a, app, rs, code, sizeof(code), err);
        if (r != 0) {
                /* Not yet (a package or image on its way back), or never. */
                apps_image_route_free(&hold);
                return r < 0 ? r : 0;
        }
        if (!image)
                cfg.code_dir = code;
        /* Its instances' policy, before any is started or taken back. */
        r = lg_tenants_egress_set(a->tenants, ns, "app", name, json_object_get(app->spec, "egress"), err);
        char **env = r < 0 ? NULL : apps_env_strings(rs, image ? "env" : "settings");
        cfg.env = (const char *const *) env;
        if (r >= 0)
                r = env ? a->ops->route_set(a->ud, &cfg, err) : lg_error_set(err, ENOMEM, "settings");
        apps_strv_free(env);
        apps_image_route_free(&hold);
        return r;
}

int lg_apps_restore_app(lg_apps *a, const struct lg_resource *app, struct lg_error *err) {
        _cleanup_revision_ struct lg_revision *rev = NULL;
        enum lg_app_auth auth;
        struct lg_error ignored = {0};
        /* A stored auth not understood is the default, the safest. */
        if (apps_auth_parse(app->spec, &auth, &ignored) < 0)
                auth = LG_APP_AUTH_TOKEN;
        int r = apps_auth_set(a, app->namespace, app->name, auth);
        if (r < 0)
                return lg_error_set(err, -r, "app `%s/%s`: auth", app->namespace, app->name);
        r = lg_store_revision_get(a->store, LG_KEY("App", app->namespace, app->name), 0, &rev, err);
        return r < 0 ? r : apps_activate_rev(a, app, rev, err);
}

int lg_apps_activate(lg_apps *a, const char *ns, const char *name, struct lg_error *err) {
        struct lg_resource *res = NULL;
        int r = lg_store_get(a->store, LG_KEY("App", ns, name), &res, err);
        if (r >= 0)
                r = lg_apps_restore_app(a, res, err);
        lg_resource_free(res);
        return r;
}

int apps_rerevision(lg_apps *a, const struct lg_resource *app, const char *field, const char *value,
                    struct lg_error *err) {
        const struct lg_resource_key *key = LG_KEY("App", app->namespace, app->name);
        _cleanup_revision_ struct lg_revision *rev = NULL;
        int r = lg_store_revision_get(a->store, key, 0, &rev, err);
        if (r < 0)
                return r;
        const char *now = json_string_value(json_object_get(rev->spec, field));
        if (now && !strcmp(now, value))
                return 0;
        _cleanup_(json_decrefp) json_t *spec = json_deep_copy(rev->spec);
        if (!spec || json_object_set_new(spec, field, json_string(value)) < 0)
                return lg_error_set(err, ENOMEM, "app `%s/%s`", app->namespace, app->name);
        int64_t number = 0;
        r = lg_store_revision_add(a->store, key, spec, &number, err);
        if (r <= 0)
                return r;
        struct lg_error prune_err = {0};
        (void) lg_store_revision_prune(a->store, key, REVISIONS_KEPT, &prune_err);
        r = lg_apps_restore_app(a, app, err);
        return r < 0 ? r : 1;
}

int lg_apps_prepare(lg_apps *a, const char *ns, const char *name, const json_t *spec,
                    lg_image_progress_fn progress, lg_image_done_fn done, void *ud, lg_apps_pull **ret,
                    struct lg_error *err) {
        char ref[512];
        int r;
        if (!json_is_object(spec))
                return lg_error_setm(err, EINVAL, "%s", "`spec` must be an object");
        if (ns) {
                char msg[512];
                struct apps_image_app img = {0};
                struct apps_pkg_image pimg = {0};
                if ((r = lg_spec_only_fields(spec, "an app spec", lg_app_fields, err)) < 0)
                        return r;
                r = check_app_spec(a, spec, &img, &pimg, msg, sizeof(msg), err);
                if (r == -EINVAL)
                        return lg_error_setm(err, EINVAL, "app `%s`: %s", name, msg);
                /* A package image is resolved at every deploy (its tag
                 * may have moved), fetched when new to the node. */
                if (r >= 0 && pimg.ref[0])
                        return apps_pull_start_package(a, ns, name, pimg.ref, NULL, done, ud, ret, err);
                if (r < 0 || !img.ref[0] || img.id[0])
                        return r < 0 ? r : 1;
                snprintf(ref, sizeof(ref), "%s", img.ref);
        } else {
                struct lg_pool_spec ps;
                struct apps_pool_hold hold;
                r = pool_from_spec(a, name, spec, true, &ps, &hold, err);
                snprintf(ref, sizeof(ref), "%s", hold.ref);
                apps_pool_hold_free(&hold);
                if (r != -ENOENT)
                        return r < 0 ? r : 1;
        }
        return apps_pull_start(a, ns, name, ref, progress, done, ud, ret, err);
}

int lg_apps_delete(lg_apps *a, const char *ns, const char *name, struct lg_error *err) {
        /* Its keys go with it: an app made again under the name starts
         * without them. */
        int r = lg_store_begin(a->store, err);
        if (r >= 0)
                r = apps_keys_delete_all(a, ns, name, err);
        if (r >= 0)
                r = lg_store_delete(a->store, LG_KEY("App", ns, name), 0, NULL, err);
        if (r >= 0)
                r = lg_store_commit(a->store, err);
        else
                lg_store_rollback(a->store);
        if (r < 0)
                return r;
        (void) apps_auth_set(a, ns, name, LG_APP_AUTH_TOKEN); /* a removal: cannot fail */
        char key[160];
        apps_key(key, sizeof(key), ns, name);
        a->ops->route_remove(a->ud, key);
        /* Its instances are drained under it: gone with them in lg_net
         * (sandboxes assigned to a deleted policy are unassigned). */
        struct lg_error ignored = {0};
        lg_tenants_policy_set(a->tenants, ns, "app", name, NULL, &ignored);
        return 0;
}

static void add_address(const char *address, void *ud) { json_array_append_new(ud, json_string(address)); }

static json_t *condition(const char *type, bool ok, const char *reason, const char *message) {
        return json_pack("{s:s, s:s, s:s, s:s}", "type", type, "status", ok ? "True" : "False", "reason", reason,
                         "message", message);
}

/* status.image and the ImagePulled condition of a container app. */
enum pull_state { PULL_NONE, PULL_RUNNING, PULL_FAILED };

static void image_status(lg_apps *a, const struct lg_resource *r, json_t *status, json_t *conds,
                         enum pull_state *pulling) {
        _cleanup_revision_ struct lg_revision *rev = NULL;
        struct lg_error err = {0};
        const char *id = NULL;
        if (lg_store_revision_get(a->store, LG_KEY("App", r->namespace, r->name), 0, &rev, &err) >= 0)
                id = json_string_value(json_object_get(rev->spec, "imageId"));
        const char *given = json_string_value(json_object_get(r->spec, "image"));
        const char *pool = json_string_value(json_object_get(r->spec, "poolGroup"));
        const struct apps_pool_image *pi = pool ? apps_pool_image_get(a, pool) : NULL;
        char ref[512] = "";
        if (!given || lg_image_normalize(given, ref, sizeof(ref), &err) < 0)
                snprintf(ref, sizeof(ref), "%s", given ? given : pi && pi->ref ? pi->ref : "");
        json_object_set_new(status, "image", json_pack("{s:s, s:s?}", "ref", ref, "id", id));
        json_t *pull = apps_pull_json(a, r->namespace, r->name);
        char msg[800];
        struct lg_image *img = NULL;
        if (pull) {
                const char *e = json_string_value(json_object_get(pull, "error"));
                if (e)
                        snprintf(msg, sizeof(msg), "image `%s` could not be pulled: %s", ref, e);
                else
                        snprintf(msg, sizeof(msg), "pulling `%s`: %s %s %lld/%lld bytes", ref,
                                 json_string_value(json_object_get(pull, "phase")),
                                 json_string_value(json_object_get(pull, "what")),
                                 (long long) json_integer_value(json_object_get(pull, "done")),
                                 (long long) json_integer_value(json_object_get(pull, "total")));
                json_array_append_new(conds, condition("ImagePulled", false, e ? "ImagePullFailed" : "Pulling", msg));
                json_object_set_new(status, "pull", pull);
                *pulling = e ? PULL_FAILED : PULL_RUNNING;
        } else if (a->images && id && lg_image_get(a->images, id, &img, &err) >= 0) {
                snprintf(msg, sizeof(msg), "image %.19s is in the store", id);
                json_array_append_new(conds, condition("ImagePulled", true, "Pulled", msg));
        } else {
                snprintf(msg, sizeof(msg), "image `%s` is not in the store", ref);
                json_array_append_new(conds, condition("ImagePulled", false, "ImageMissing", msg));
        }
        lg_image_free(img);
}

/* status.package and the PackageFetched condition of a function with a
 * package image. */
static void package_status(lg_apps *a, const struct lg_resource *r, json_t *status, json_t *conds,
                           enum pull_state *pulling) {
        _cleanup_revision_ struct lg_revision *rev = NULL;
        struct lg_error err = {0};
        json_t *pkg = NULL;
        if (lg_store_revision_get(a->store, LG_KEY("App", r->namespace, r->name), 0, &rev, &err) >= 0)
                pkg = apps_package_status(a, rev->spec);
        json_t *pull = apps_pull_json(a, r->namespace, r->name);
        const char *ref = json_string_value(json_object_get(r->spec, "packageImage"));
        char msg[800];
        if (pull) {
                const char *e = json_string_value(json_object_get(pull, "error"));
                if (e)
                        snprintf(msg, sizeof(msg), "package image `%s` could not be fetched: %s", ref, e);
                else
                        snprintf(msg, sizeof(msg), "fetching package image `%s`", ref);
                json_array_append_new(conds, condition("PackageFetched", false, e ? "PackageFetchFailed" : "Fetching",
                                                       msg));
                json_object_set_new(status, "pull", pull);
                *pulling = e ? PULL_FAILED : PULL_RUNNING;
        } else if (pkg) {
                bool lazy = json_is_true(json_object_get(pkg, "lazy"));
                snprintf(msg, sizeof(msg), "package %.19s is %s", json_string_value(json_object_get(pkg, "digest")),
                         lazy ? "mounted lazily" : "extracted");
                json_array_append_new(conds, condition("PackageFetched", true, lazy ? "Mounted" : "Extracted", msg));
        }
        if (pkg)
                json_object_set_new(status, "package", pkg);
}

/* The Ready condition from the router's figures (st NULL: not routed). */
static json_t *ready_condition(const struct lg_route_stats *st, enum pull_state pulling) {
        char msg[600];
        if (!st && pulling == PULL_RUNNING)
                return condition("Ready", false, "ImagePulling", "waiting for its image (see ImagePulled)");
        if (!st && pulling == PULL_FAILED)
                return condition("Ready", false, "ImagePullFailed", "its image could not be pulled (see ImagePulled)");
        if (!st)
                return condition("Ready", false, "NotActive", "the app is not routed (see `legion app logs`)");
        if (st->failures) {
                bool backoff = st->backoff_ms_left > 0;
                int n = snprintf(msg, sizeof(msg), "%u failure%s in a row, the last: %s", st->failures,
                                 st->failures == 1 ? "" : "s", st->last_message[0] ? st->last_message : "?");
                if (backoff && n > 0 && (size_t) n < sizeof(msg))
                        snprintf(msg + n, sizeof(msg) - (size_t) n, "; next start in %.1f s",
                                 (double) st->backoff_ms_left / 1000);
                json_t *c = condition("Ready", st->instances > 0,
                                      backoff ? "CrashLoopBackOff" : st->last_reason[0] ? st->last_reason : "StartFailed",
                                      msg);
                json_object_set_new(c, "failures", json_integer(st->failures));
                json_object_set_new(c, "lastReason", json_string(st->last_reason));
                if (st->last_failure_unix_ms) {
                        char ts[40];
                        time_t t = (time_t) (st->last_failure_unix_ms / 1000);
                        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
                        json_object_set_new(c, "lastFailureTime", json_string(ts));
                }
                return c;
        }
        if (st->instances)
                return condition("Ready", true, "Serving", "instances are serving");
        return condition("Ready", true, "ScaledToZero", "no instance runs; the next request starts one");
}

json_t *lg_apps_json(lg_apps *a, const struct lg_resource *r) {
        json_t *doc = lg_resource_to_json(r);
        if (!doc)
                return NULL;
        char key[160];
        apps_key(key, sizeof(key), r->namespace, r->name);
        struct lg_route_stats st;
        json_t *status = json_object_get(doc, "status");
        if (!json_is_object(status)) {
                status = json_object();
                json_object_set_new(doc, "status", status);
        }
        char url[200];
        snprintf(url, sizeof(url), "/fn/%s/%s/", r->namespace, r->name);
        json_object_set_new(status, "url", json_string(url));
        bool routed = a->ops->route_stats(a->ud, key, &st) == 0;
        if (routed) {
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
        json_t *conds = json_array();
        enum pull_state pulling = PULL_NONE;
        if (apps_is_image_spec(r->spec))
                image_status(a, r, status, conds, &pulling);
        else if (json_object_get(r->spec, "packageImage"))
                package_status(a, r, status, conds, &pulling);
        json_array_insert_new(conds, 0, ready_condition(routed ? &st : NULL, pulling));
        json_object_set_new(status, "conditions", conds);
        return doc;
}

/* ---- pool groups --------------------------------------------------------------- */

/* Check a pool group spec and fill the node's view of it (strict: unknown
 * fields are refused too); arrays go into hold. An image pool group's
 * image is resolved last: -ENOENT (hold->ref set) when it is not in the
 * store, after every other check passed. */
static int pool_from_spec(lg_apps *a, const char *name, const json_t *spec, bool strict, struct lg_pool_spec *ps,
                          struct apps_pool_hold *hold, struct lg_error *err) {
        memset(ps, 0, sizeof(*ps));
        memset(hold, 0, sizeof(*hold));
        ps->name = name;
        int r;
        bool image = json_object_get(spec, "image") != NULL;
        if (strict && (r = lg_spec_only_fields(spec, image ? "an image pool group" : "a pool group",
                                               image ? image_pool_fields : pool_fields, err)) < 0)
                return r;
        /* Function instances are on the node's network (when it has one);
         * an image's must be (the router reaches them there). */
        ps->network = true;
        const char *bad = NULL;
        json_t *v = NULL;
        if (!image) {
                ps->runtime = json_string_value(json_object_get(spec, "runtime"));
                if (!ps->runtime ||
                    (strcmp(ps->runtime, "python3") && strcmp(ps->runtime, "node") && strcmp(ps->runtime, "custom")))
                        bad = "`runtime` must be python3, node or custom (or `image`, an OCI image reference)";
                else if ((v = json_object_get(spec, "version")) &&
                         (!json_is_string(v) || !json_string_length(v) || json_string_length(v) > 128 ||
                          strlen(json_string_value(v)) != json_string_length(v)))
                        bad = "`version` must be a string of 1 to 128 characters";
                ps->version = json_string_value(v);
        }
        json_t *ready = json_object_get(spec, "ready");
        if (!bad && ready &&
            (!json_is_integer(ready) || json_integer_value(ready) < 0 || json_integer_value(ready) > 1000))
                bad = "`ready` must be an integer from 0 to 1000";
        ps->ready = ready && json_is_integer(ready) ? (unsigned) json_integer_value(ready) : 1;
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
        json_t *up = json_object_get(spec, "upgrade");
        if (!bad && up) {
                const char *apps = json_string_value(json_object_get(up, "apps"));
                if (!json_is_object(up))
                        bad = "`upgrade` must be an object {maxUnavailable, apps}";
                else if (strict && (r = lg_spec_only_fields(up, "upgrade", upgrade_fields, err)) < 0)
                        return r;
                else if ((v = json_object_get(up, "maxUnavailable")) &&
                         (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000))
                        bad = "`upgrade.maxUnavailable` must be an integer from 1 to 1000";
                else if (json_object_get(up, "apps") &&
                         (!apps || (strcmp(apps, "nextInstance") && strcmp(apps, "newRevision"))))
                        bad = "`upgrade.apps` must be \"nextInstance\" (apps' next new instances come from the "
                              "new placeholders) or \"newRevision\" (apps get a new revision at once)";
                ps->max_unavailable = json_is_integer(v) ? (unsigned) json_integer_value(v) : 0;
        }
        if (bad)
                return lg_error_setm(err, EINVAL, "pool group `%s`: %s", name, bad);
        if (image && (r = apps_pool_image_spec(a, name, spec, ps, hold, err)) < 0)
                return r;
        return image ? apps_pool_image_resolve(a, ps, hold, err) : 0;
}

/* The node runs the pool group: declare it and remember its image. */
static int pool_set(lg_apps *a, const char *name, const json_t *spec, struct lg_pool_spec *ps,
                    struct apps_pool_hold *hold, struct lg_error *err) {
        int r = a->ops->pool_set(a->ud, ps, err);
        if (r >= 0)
                r = apps_pool_image_set(a, name, spec, ps->image ? hold->ref : NULL, ps->image);
        apps_pool_hold_free(hold);
        return r == -ENOMEM ? lg_error_set(err, ENOMEM, "pool group `%s`", name) : r;
}

int lg_apps_pool_put(lg_apps *a, const char *name, const json_t *spec, struct lg_resource **ret,
                     struct lg_error *err) {
        struct lg_pool_spec ps;
        struct apps_pool_hold hold;
        int r = pool_from_spec(a, name, spec, true, &ps, &hold, err);
        if (r == -ENOENT)
                r = lg_error_setm(err, EINVAL,
                                  "pool group `%s`: image `%s` is not in the image store (a put through the API "
                                  "pulls it; or `legion image pull` it first)",
                                  name, hold.ref);
        /* Stored only when the node takes it (it refuses, e.g., an image
         * pool without a network). */
        struct lg_resource *res = NULL;
        if (r >= 0)
                r = lg_store_begin(a->store, err);
        int applied = r < 0 ? r : lg_store_apply(a->store, LG_KEY("PoolGroup", "", name), NULL, spec, &res, err);
        if (applied >= 0)
                r = pool_set(a, name, spec, &ps, &hold, err);
        else
                apps_pool_hold_free(&hold);
        if (applied >= 0 && r >= 0)
                r = lg_store_commit(a->store, err);
        else if (applied >= 0 || r >= 0)
                lg_store_rollback(a->store);
        if (applied < 0 || r < 0) {
                lg_resource_free(res);
                return applied < 0 ? applied : r;
        }
        apps_pull_forget(a, NULL, name);
        if (ret)
                *ret = res;
        else
                lg_resource_free(res);
        return applied;
}

int lg_apps_restore_pool(lg_apps *a, const struct lg_resource *pool, struct lg_error *err) {
        struct lg_pool_spec ps;
        struct apps_pool_hold hold;
        int r = pool_from_spec(a, pool->name, pool->spec, false, &ps, &hold, err);
        if (r == -ENOENT) {
                /* Its image went: pulled again, the pool made then. */
                r = apps_pull_background(a, NULL, pool->name, hold.ref, err);
                apps_pool_hold_free(&hold);
                return r;
        }
        if (r < 0) {
                apps_pool_hold_free(&hold);
                return r;
        }
        return pool_set(a, pool->name, pool->spec, &ps, &hold, err);
}

int lg_apps_pool_delete(lg_apps *a, const char *name, struct lg_error *err) {
        int r = lg_store_delete(a->store, LG_KEY("PoolGroup", "", name), 0, NULL, err);
        if (r < 0)
                return r;
        a->ops->pool_delete(a->ud, name);
        apps_pool_forget(a, name);
        apps_pull_forget(a, NULL, name);
        return 0;
}

json_t *lg_apps_pool_json(lg_apps *a, const struct lg_resource *r) {
        json_t *doc = json_pack("{s:s, s:O}", "name", r->name, "spec", r->spec);
        struct lg_pool_stats ps;
        json_t *status = NULL;
        if (doc && a->ops->pool_stats(a->ud, r->name, &ps) == 0) {
                status = json_pack("{s:i, s:i, s:I, s:I, s:I, s:i, s:i, s:b}", "ready", ps.ready, "starting",
                                   ps.starting, "created", (json_int_t) ps.created, "taken", (json_int_t) ps.taken,
                                   "onDemand", (json_int_t) ps.on_demand, "updated", ps.updated, "outdated",
                                   ps.outdated, "rolling", ps.rolling);
                if (ps.failures)
                        json_object_set_new(status, "lastError", json_pack("{s:i, s:s}", "failures", ps.failures,
                                                                           "message", ps.last_error));
        }
        const struct apps_pool_image *pi = apps_pool_image_get(a, r->name);
        json_t *pull = apps_pull_json(a, NULL, r->name);
        if (doc && ((pi && pi->id[0]) || pull) && !status)
                status = json_object();
        if (pi && pi->id[0])
                json_object_set_new(status, "image", json_pack("{s:s, s:s}", "ref", pi->ref, "id", pi->id));
        if (pull)
                json_object_set_new(status, "pull", pull);
        if (doc && status)
                json_object_set_new(doc, "status", status);
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
