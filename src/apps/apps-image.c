/* The image side of apps (apps.h): container app and image pool group
 * fields, the images they resolve to, pulls (held by a deploy, or in the
 * background after a restart when an image has gone), the pins that keep
 * those images from GC and removal, and what an image changes in a pool
 * group's apps (its upgrade policy). Specs, revisions and activation as a
 * whole are apps.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/apps-internal.h"
#include "common/spec.h"

/* A pull: held by a request (done is the caller's), or in the background
 * (the pool group or app is made active when it lands). A failed
 * background pull stays (job NULL, failed) for the status until the next
 * put or pull of its key. */
struct lg_apps_pull {
        lg_apps_pull *next;
        lg_apps *a;
        char key[160]; /* pool group name, or "ns/name" */
        bool pool, background, failed;
        char ref[512];
        lg_image_job *job;
        /* A package image's fetch instead (apps-package.c). */
        bool package;
        struct apps_pkg_job *pkg;
        lg_image_progress_fn progress;
        lg_image_done_fn done;
        void *ud;
        char phase[16], what[160];
        uint64_t bytes, total;
        char error[512];
};

/* ---- specs -------------------------------------------------------------------- */

bool apps_is_image_spec(const json_t *spec) {
        return json_object_get(spec, "image") ||
               (!json_object_get(spec, "runtime") && !json_object_get(spec, "package") &&
                json_object_get(spec, "poolGroup"));
}

/* spec[field], when there, an array of at most 256 strings of at most 4 KiB
 * without NUL (an argv). */
static bool check_strv(const json_t *spec, const char *field, char *msg, size_t cap) {
        json_t *v = json_object_get(spec, field), *x;
        size_t i;
        if (!v)
                return true;
        bool ok = json_is_array(v) && json_array_size(v) <= 256;
        json_array_foreach(v, i, x) ok = ok && json_is_string(x) && json_string_length(x) <= 4096 &&
                                         !memchr(json_string_value(x), '\0', json_string_length(x));
        if (!ok)
                snprintf(msg, cap, "`%s` must be an array of at most 256 strings (each at most 4 KiB)", field);
        return ok;
}

/* An argv of spec[field]: NULL when absent (or out of memory: *oom). */
static char **strv_of(const json_t *spec, const char *field, bool *oom) {
        json_t *v = json_object_get(spec, field), *x;
        size_t i;
        if (!json_is_array(v))
                return NULL;
        char **out = calloc(json_array_size(v) + 1, sizeof(char *));
        json_array_foreach(v, i, x) {
                if (out && !(out[i] = strdup(json_string_value(x)))) {
                        apps_strv_free(out);
                        out = NULL;
                }
        }
        if (!out)
                *oom = true;
        return out;
}

/* The port, 1-65535: 0 when absent or not one. */
static unsigned port_of(const json_t *spec) {
        json_t *v = json_object_get(spec, "port");
        return json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 65535
                       ? (unsigned) json_integer_value(v)
                       : 0;
}

/* readinessPath goes into a request line: printable ASCII, no spaces. */
static bool check_ready_path(const json_t *spec, char *msg, size_t cap) {
        json_t *v = json_object_get(spec, "readinessPath");
        if (!v)
                return true;
        const char *p = json_string_value(v);
        bool ok = p && p[0] == '/' && json_string_length(v) <= 1024 && strlen(p) == json_string_length(v);
        for (; ok && *p; p++)
                ok = *p > 0x20 && *p < 0x7f;
        if (!ok)
                snprintf(msg, cap, "`readinessPath` must be a path such as \"/healthz\" (printable, no spaces, at "
                                   "most 1024 bytes)");
        return ok;
}

/* The image of spec's `image` field normalized into ref. */
static bool check_ref(const json_t *spec, char *ref, size_t refcap, char *msg, size_t cap) {
        json_t *v = json_object_get(spec, "image");
        struct lg_error e = {0};
        if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) > 500 ||
            strlen(json_string_value(v)) != json_string_length(v) ||
            lg_image_normalize(json_string_value(v), ref, refcap, &e) < 0) {
                snprintf(msg, cap, "`image` must be an image reference such as \"127.0.0.1:5000/web:1\"%s%s%s",
                         e.msg[0] ? " (" : "", e.msg, e.msg[0] ? ")" : "");
                return false;
        }
        return true;
}

/* The id of ref in the store: 0, or -ENOENT ("" then), or its failure. */
static int resolve(lg_apps *a, const char *ref, char id[72], struct lg_error *err) {
        struct lg_image *img = NULL;
        id[0] = '\0';
        int r = lg_image_get(a->images, ref, &img, err);
        if (r >= 0) {
                snprintf(id, 72, "%s", img->id);
        }
        lg_image_free(img);
        return r;
}

int apps_image_check(lg_apps *a, const json_t *spec, const struct lg_resource *pool, struct apps_image_app *ret,
                     char *msg, size_t cap, struct lg_error *serr) {
        static const char *const function_only[] = {"runtime", "package", "entrypoint", "settings", NULL};
        memset(ret, 0, sizeof(*ret));
        for (size_t i = 0; function_only[i]; i++)
                if (json_object_get(spec, function_only[i])) {
                        snprintf(msg, cap,
                                 "a container app (with `image`) takes no `%s`: that is for functions (a "
                                 "container app's settings go in `env`)",
                                 function_only[i]);
                        return -EINVAL;
                }
        if (!a->images) {
                snprintf(msg, cap, "container apps need the image store, which this node has not");
                return -EINVAL;
        }
        /* The router reaches an instance at its address. */
        if (a->no_network) {
                snprintf(msg, cap, "container apps need the node network (legiond --network on)");
                return -EINVAL;
        }
        const json_t *ps = pool ? pool->spec : NULL;
        if (pool && !json_object_get(ps, "image")) {
                const char *rt = json_string_value(json_object_get(ps, "runtime"));
                snprintf(msg, cap,
                         "pool group `%s` runs %s workers, not an image: a function needs `runtime` and "
                         "`package`, a container app an image pool group or none",
                         pool->name, rt ? rt : "language");
                return -EINVAL;
        }
        const struct apps_pool_image *pi = pool ? apps_pool_image_get(a, pool->name) : NULL;
        if (pool && (!pi || !pi->id[0])) {
                snprintf(msg, cap, "pool group `%s` has no image ready yet (see its status)", pool->name);
                return -EINVAL;
        }
        if (json_object_get(spec, "image")) {
                if (!check_ref(spec, ret->ref, sizeof(ret->ref), msg, cap))
                        return -EINVAL;
                int r = resolve(a, ret->ref, ret->id, serr);
                if (r < 0 && r != -ENOENT)
                        return r;
                if (pi && strcmp(ret->id, pi->id)) {
                        snprintf(msg, cap,
                                 "`image` `%s` is not the image of pool group `%s` (%s, %.19s): leave `image` "
                                 "out to use the pool's",
                                 ret->ref, pool->name, pi->ref, pi->id);
                        return -EINVAL;
                }
        } else {
                snprintf(ret->ref, sizeof(ret->ref), "%s", pi->ref);
                snprintf(ret->id, sizeof(ret->id), "%s", pi->id);
        }
        const char *mode = ps ? json_string_value(json_object_get(ps, "placeholder")) : NULL;
        if (mode && !strcmp(mode, "process")) {
                /* Its placeholders run the pool's server already. */
                static const char *const inherited[] = {"command", "args", "env", "port", NULL};
                for (size_t i = 0; inherited[i]; i++) {
                        json_t *mine = json_object_get(spec, inherited[i]);
                        if (mine && !json_equal(mine, json_object_get(ps, inherited[i]))) {
                                snprintf(msg, cap,
                                         "pool group `%s` starts its own server (placeholder `process`): leave "
                                         "`%s` out, or make it the pool's",
                                         pool->name, inherited[i]);
                                return -EINVAL;
                        }
                }
        } else if (!port_of(spec)) {
                snprintf(msg, cap, "`port` (where the image's server listens) must be an integer from 1 to 65535");
                return -EINVAL;
        }
        if (!check_strv(spec, "command", msg, cap) || !check_strv(spec, "args", msg, cap) ||
            !apps_check_env(spec, "env", msg, cap) || !check_ready_path(spec, msg, cap))
                return -EINVAL;
        return 0;
}

/* ---- routes --------------------------------------------------------------------- */

int apps_image_route(lg_apps *a, const struct lg_resource *app, const json_t *rs, struct lg_route_config *cfg,
                     struct apps_route_hold *hold, struct lg_error *err) {
        const char *pool = json_string_value(json_object_get(rs, "poolGroup"));
        const char *id = json_string_value(json_object_get(rs, "imageId"));
        if (!a->images)
                return lg_error_setm(err, ENOTSUP, "app `%s/%s`: this node has no image store", app->namespace,
                                     app->name);
        cfg->pool = pool;
        if (!pool) {
                /* Made on demand from the image: it must be here. */
                int r = resolve(a, id ? id : "", hold->image, err);
                if (r == -ENOENT) {
                        char ref[512];
                        const char *given = json_string_value(json_object_get(rs, "image"));
                        struct lg_error e = {0};
                        if (!given || lg_image_normalize(given, ref, sizeof(ref), &e) < 0)
                                return lg_error_setm(err, ENOENT, "app `%s/%s`: its image is missing",
                                                     app->namespace, app->name);
                        r = apps_pull_background(a, app->namespace, app->name, ref, err);
                        return r < 0 ? r : 1;
                }
                if (r < 0)
                        return r;
                cfg->image = hold->image;
        }
        /* With a pool, image NULL: the pool's (its new one after an
         * upgrade: the next instance follows it). */
        bool oom = false;
        hold->command = strv_of(rs, "command", &oom);
        hold->args = strv_of(rs, "args", &oom);
        if (oom)
                return lg_error_set(err, ENOMEM, "app `%s/%s`", app->namespace, app->name);
        cfg->command = (const char *const *) hold->command;
        cfg->args = (const char *const *) hold->args;
        cfg->port = port_of(rs);
        if (!cfg->port && pool) {
                /* Placeholder `process`: the pool's server's port (from the
                 * store: at a restart the pool may still wait for its image). */
                struct lg_resource *pr = NULL;
                if (lg_store_get(a->store, LG_KEY("PoolGroup", "", pool), &pr, err) >= 0)
                        cfg->port = port_of(pr->spec);
                lg_resource_free(pr);
        }
        cfg->ready_path = json_string_value(json_object_get(rs, "readinessPath"));
        json_t *mem = json_object_get(rs, "memory");
        if (mem)
                lg_spec_memory(mem, &cfg->memory_bytes);
        cfg->entrypoint = NULL;
        return 0;
}

void apps_image_route_free(struct apps_route_hold *hold) {
        apps_strv_free(hold->command);
        apps_strv_free(hold->args);
        hold->command = hold->args = NULL;
}

/* ---- pool groups ----------------------------------------------------------------- */

int apps_pool_image_spec(lg_apps *a, const char *name, const json_t *spec, struct lg_pool_spec *ps,
                         struct apps_pool_hold *hold, struct lg_error *err) {
        char msg[400] = "";
        ps->runtime = "image";
        const char *mode = json_string_value(json_object_get(spec, "placeholder"));
        bool process = mode && !strcmp(mode, "process");
        if (json_object_get(spec, "runtime"))
                snprintf(msg, sizeof(msg), "an image pool group takes no `runtime` (its placeholders are made from "
                                           "the image)");
        else if (json_object_get(spec, "version"))
                snprintf(msg, sizeof(msg), "`version` is for language workers: an image pool group changes "
                                           "with its `image`");
        else if (!check_ref(spec, hold->ref, sizeof(hold->ref), msg, sizeof(msg)))
                ;
        else if (json_object_get(spec, "placeholder") && (!mode || (!process && strcmp(mode, "sandbox"))))
                snprintf(msg, sizeof(msg), "`placeholder` must be \"sandbox\" (made, not started) or \"process\" "
                                           "(the pool's server started and ready)");
        else if (process && !port_of(spec))
                snprintf(msg, sizeof(msg), "placeholder `process` needs `port` (where the server listens), an "
                                           "integer from 1 to 65535");
        if (!msg[0] && !process) {
                static const char *const process_only[] = {"command", "args", "env", "port", "readinessPath", NULL};
                for (size_t i = 0; process_only[i]; i++)
                        if (json_object_get(spec, process_only[i])) {
                                snprintf(msg, sizeof(msg),
                                         "`%s` is only for placeholder `process`: a warm sandbox runs no process "
                                         "until an app takes it (the app gives its own)",
                                         process_only[i]);
                                break;
                        }
        }
        if (!msg[0] && process) {
                if (check_strv(spec, "command", msg, sizeof(msg)) && check_strv(spec, "args", msg, sizeof(msg)) &&
                    apps_check_env(spec, "env", msg, sizeof(msg)))
                        check_ready_path(spec, msg, sizeof(msg));
        }
        if (msg[0])
                return lg_error_setm(err, EINVAL, "pool group `%s`: %s", name, msg);
        if (!a->images)
                return lg_error_setm(err, EINVAL, "pool group `%s`: this node has no image store", name);
        if (a->no_network)
                return lg_error_setm(err, EINVAL, "pool group `%s`: image pools need the node network (legiond "
                                                  "--network on)", name);
        bool oom = false;
        hold->command = strv_of(spec, "command", &oom);
        hold->args = strv_of(spec, "args", &oom);
        if (json_object_get(spec, "env") && !(hold->env = apps_env_strings(spec, "env")))
                oom = true;
        if (oom)
                return lg_error_set(err, ENOMEM, "pool group `%s`", name);
        ps->start_process = process;
        ps->command = (const char *const *) hold->command;
        ps->args = (const char *const *) hold->args;
        ps->env = (const char *const *) hold->env;
        ps->port = port_of(spec);
        ps->ready_path = json_string_value(json_object_get(spec, "readinessPath"));
        return 0;
}

int apps_pool_image_resolve(lg_apps *a, struct lg_pool_spec *ps, struct apps_pool_hold *hold,
                            struct lg_error *err) {
        int r = resolve(a, hold->ref, hold->id, err);
        ps->image = hold->id;
        return r;
}

void apps_pool_hold_free(struct apps_pool_hold *hold) {
        apps_strv_free(hold->command);
        apps_strv_free(hold->args);
        apps_strv_free(hold->env);
        hold->command = hold->args = hold->env = NULL;
}

const struct apps_pool_image *apps_pool_image_get(lg_apps *a, const char *name) {
        for (struct apps_pool_image *p = a->pool_images; p; p = p->next)
                if (!strcmp(p->name, name))
                        return p;
        return NULL;
}

void apps_pool_forget(lg_apps *a, const char *name) {
        for (struct apps_pool_image **pp = &a->pool_images; *pp; pp = &(*pp)->next)
                if (!strcmp((*pp)->name, name)) {
                        struct apps_pool_image *p = *pp;
                        *pp = p->next;
                        free(p->name);
                        free(p->ref);
                        free(p->version);
                        free(p);
                        return;
                }
}

/* A pool group's apps whose policy is newRevision get one now: field
 * ("imageId" or "poolVersion") of their latest revision becomes value. */
static void rerevision_apps(lg_apps *a, const char *pool, const char *field, const char *value) {
        struct lg_resource_list l = {0};
        struct lg_error err = {0};
        if (lg_store_list(a->store, "App", NULL, NULL, &l, &err) < 0)
                return;
        for (size_t i = 0; i < l.n; i++) {
                const char *p = json_string_value(json_object_get(l.items[i]->spec, "poolGroup"));
                if (!p || strcmp(p, pool))
                        continue;
                char key[160], line[700];
                apps_key(key, sizeof(key), l.items[i]->namespace, l.items[i]->name);
                int r = apps_rerevision(a, l.items[i], field, value, &err);
                if (r > 0)
                        snprintf(line, sizeof(line), "pool group `%s` upgraded (%s %.19s): new revision (upgrade "
                                                     "policy newRevision)",
                                 pool, field, value);
                else if (r < 0)
                        snprintf(line, sizeof(line), "pool group `%s` upgraded, but no new revision: %s", pool,
                                 err.msg);
                if (r != 0)
                        lg_apps_log(key, line, a);
        }
        lg_resource_list_free(&l);
}

int apps_pool_image_set(lg_apps *a, const char *name, const json_t *spec, const char *ref, const char *id) {
        struct apps_pool_image *p = (struct apps_pool_image *) apps_pool_image_get(a, name);
        const char *version = json_string_value(json_object_get(spec, "version"));
        const char *upgrade = json_string_value(json_object_get(json_object_get(spec, "upgrade"), "apps"));
        bool new_image = p && id && strcmp(p->id, id);
        bool new_version = p && !id && strcmp(p->version ? p->version : "", version ? version : "");
        if (!p) {
                if (!(p = calloc(1, sizeof(*p))) || !(p->name = strdup(name))) {
                        free(p);
                        return -ENOMEM;
                }
                p->next = a->pool_images;
                a->pool_images = p;
        }
        free(p->ref);
        free(p->version);
        p->ref = ref ? strdup(ref) : NULL;
        p->version = version ? strdup(version) : NULL;
        snprintf(p->id, sizeof(p->id), "%s", id ? id : "");
        if (upgrade && !strcmp(upgrade, "newRevision") && (new_image || new_version))
                rerevision_apps(a, name, id ? "imageId" : "poolVersion", id ? id : version ? version : "");
        return 0;
}

/* ---- pulls ------------------------------------------------------------------------- */

static lg_apps_pull *pull_find(lg_apps *a, const char *ns, const char *name);

static void pull_unlink(lg_apps_pull *p) {
        for (lg_apps_pull **pp = &p->a->pulls; *pp; pp = &(*pp)->next)
                if (*pp == p) {
                        *pp = p->next;
                        return;
                }
}

static void pull_progress(const struct lg_image_progress *pr, void *ud) {
        lg_apps_pull *p = ud;
        snprintf(p->phase, sizeof(p->phase), "%s", pr->phase ? pr->phase : "");
        snprintf(p->what, sizeof(p->what), "%s", pr->what ? pr->what : "");
        p->bytes = pr->done;
        p->total = pr->total;
        if (p->progress)
                p->progress(pr, p->ud);
}

static void pull_done(const struct lg_image_job_result *res, void *ud) {
        lg_apps_pull *p = ud;
        lg_apps *a = p->a;
        p->job = NULL;
        p->pkg = NULL;
        const char *what = p->package ? "package image" : "image";
        if (!p->background) {
                pull_unlink(p);
                p->done(res, p->ud);
                free(p);
                return;
        }
        char line[800];
        struct lg_error err = {0};
        if (res->status < 0) {
                /* Kept for the status until the next put. */
                p->failed = true;
                snprintf(p->error, sizeof(p->error), "%s", res->err ? res->err->msg : strerror(-res->status));
                snprintf(line, sizeof(line), "%s `%s` could not be pulled: %s", what, p->ref, p->error);
                if (!p->pool)
                        lg_apps_log(p->key, line, a);
                return;
        }
        pull_unlink(p);
        struct lg_resource *res_obj = NULL;
        int r;
        if (p->pool) {
                r = lg_store_get(a->store, LG_KEY("PoolGroup", "", p->key), &res_obj, &err);
                if (r >= 0)
                        r = lg_apps_restore_pool(a, res_obj, &err);
        } else {
                char ns[160];
                const char *slash = strchr(p->key, '/');
                snprintf(ns, sizeof(ns), "%.*s", (int) (slash - p->key), p->key);
                r = lg_store_get(a->store, LG_KEY("App", ns, slash + 1), &res_obj, &err);
                /* The tag may have moved: the revision follows the image
                 * that came. */
                if (r >= 0 && res->img)
                        r = apps_rerevision(a, res_obj, "imageId", res->img->id, &err);
                if (r >= 0)
                        r = lg_apps_activate(a, ns, slash + 1, &err);
                snprintf(line, sizeof(line), "%s `%s` pulled%s%s", what, p->ref, r < 0 ? ", but: " : "",
                         r < 0 ? err.msg : "");
                lg_apps_log(p->key, line, a);
        }
        lg_resource_free(res_obj);
        free(p);
}

/* A pull of ref for ns/name (ns NULL: pool group name), not started. */
static lg_apps_pull *pull_new(lg_apps *a, const char *ns, const char *name, const char *ref,
                              lg_image_progress_fn progress, lg_image_done_fn done, void *ud) {
        lg_apps_pull *p = calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        p->a = a;
        p->pool = !ns;
        if (ns)
                apps_key(p->key, sizeof(p->key), ns, name);
        else
                snprintf(p->key, sizeof(p->key), "%s", name);
        snprintf(p->ref, sizeof(p->ref), "%s", ref);
        p->background = !done;
        p->progress = progress;
        p->done = done;
        p->ud = ud;
        return p;
}

/* A pull whose start went r: listed (and *ret, may be NULL), or freed. */
static int pull_started(lg_apps *a, lg_apps_pull *p, int r, lg_apps_pull **ret) {
        if (r < 0) {
                free(p);
                return r;
        }
        p->next = a->pulls;
        a->pulls = p;
        if (ret)
                *ret = p;
        return 0;
}

int apps_pull_start_package(lg_apps *a, const char *ns, const char *name, const char *ref, const char *hex,
                            lg_image_done_fn done, void *ud, lg_apps_pull **ret, struct lg_error *err) {
        lg_apps_pull *p = pull_find(a, ns, name);
        if (!done && p && p->background && !p->failed)
                return 0; /* one runs already */
        apps_pull_forget(a, ns, name);
        p = pull_new(a, ns, name, ref, NULL, done, ud);
        if (!p)
                return lg_error_set(err, ENOMEM, "package image `%s`", ref);
        p->package = true;
        return pull_started(a, p, apps_pkg_job_start(a, ref, hex, pull_done, p, &p->pkg, err), ret);
}

int apps_pull_start(lg_apps *a, const char *ns, const char *name, const char *ref, lg_image_progress_fn progress,
                    lg_image_done_fn done, void *ud, lg_apps_pull **ret, struct lg_error *err) {
        if (!a->image_jobs)
                return lg_error_setm(err, ENOTSUP, "image `%s` is not here, and this node cannot pull", ref);
        lg_apps_pull *p = pull_new(a, ns, name, ref, progress, done, ud);
        if (!p)
                return lg_error_set(err, ENOMEM, "pull `%s`", ref);
        return pull_started(a, p,
                            lg_image_pull_start(a->image_jobs, ref, NULL, LG_IMAGE_LAZY_DEFAULT, pull_progress,
                                                pull_done, p, &p->job, err),
                            ret);
}

static lg_apps_pull *pull_find(lg_apps *a, const char *ns, const char *name) {
        char key[160];
        if (ns)
                apps_key(key, sizeof(key), ns, name);
        else
                snprintf(key, sizeof(key), "%s", name);
        for (lg_apps_pull *p = a->pulls; p; p = p->next)
                if (p->pool == !ns && !strcmp(p->key, key))
                        return p;
        return NULL;
}

void apps_pull_forget(lg_apps *a, const char *ns, const char *name) {
        lg_apps_pull *p = pull_find(a, ns, name);
        if (p && p->failed) {
                pull_unlink(p);
                free(p);
        }
}

int apps_pull_background(lg_apps *a, const char *ns, const char *name, const char *ref, struct lg_error *err) {
        lg_apps_pull *p = pull_find(a, ns, name);
        if (p && p->background && !p->failed)
                return 0;
        apps_pull_forget(a, ns, name);
        return apps_pull_start(a, ns, name, ref, NULL, NULL, NULL, NULL, err);
}

void lg_apps_pull_cancel(lg_apps_pull *p) {
        if (!p)
                return;
        if (p->job)
                lg_image_job_cancel(p->job);
        if (p->pkg)
                apps_pkg_job_cancel(p->pkg);
        pull_unlink(p);
        free(p);
}

void apps_pulls_free(lg_apps *a) {
        while (a->pulls)
                lg_apps_pull_cancel(a->pulls);
        while (a->pool_images)
                apps_pool_forget(a, a->pool_images->name);
}

json_t *apps_pull_json(lg_apps *a, const char *ns, const char *name) {
        lg_apps_pull *p = pull_find(a, ns, name);
        if (!p)
                return NULL;
        if (p->failed)
                return json_pack("{s:s, s:s}", p->package ? "packageImage" : "image", p->ref, "error", p->error);
        if (p->package)
                return json_pack("{s:s, s:s}", "packageImage", p->ref, "phase", "fetch");
        return json_pack("{s:s, s:s, s:s, s:I, s:I}", "image", p->ref, "phase", p->phase[0] ? p->phase : "start",
                         "what", p->what, "done", (json_int_t) p->bytes, "total", (json_int_t) p->total);
}

/* ---- pins ----------------------------------------------------------------------------- */

/* Calls fn with each image id a pool group or an app's latest revision
 * uses and who uses it, until fn returns true. */
static void each_image(lg_apps *a, bool (*fn)(const char *id, const char *who, void *ud), void *ud) {
        char who[200];
        for (struct apps_pool_image *p = a->pool_images; p; p = p->next) {
                snprintf(who, sizeof(who), "pool group `%s`", p->name);
                if (p->id[0] && fn(p->id, who, ud))
                        return;
        }
        struct lg_resource_list l = {0};
        struct lg_error err = {0};
        if (lg_store_list(a->store, "App", NULL, NULL, &l, &err) < 0)
                return;
        bool stop = false;
        for (size_t i = 0; i < l.n && !stop; i++) {
                if (!apps_is_image_spec(l.items[i]->spec))
                        continue;
                _cleanup_revision_ struct lg_revision *rev = NULL;
                if (lg_store_revision_get(a->store, LG_KEY("App", l.items[i]->namespace, l.items[i]->name), 0, &rev,
                                          &err) < 0)
                        continue;
                const char *id = json_string_value(json_object_get(rev->spec, "imageId"));
                snprintf(who, sizeof(who), "app `%s/%s`", l.items[i]->namespace, l.items[i]->name);
                stop = id && fn(id, who, ud);
        }
        lg_resource_list_free(&l);
}

/* each_image's callbacks collect into l. */
struct strs {
        lg_apps *a;
        struct lg_strlist *l;
};

static bool add_layers(const char *id, const char *who, void *ud) {
        struct strs *l = ud;
        (void) who;
        /* By id: an image whose tag moved stays in the store (dangling)
         * while GC is told its id is in use. */
        struct lg_image *img = NULL;
        struct lg_error err = {0};
        if (lg_image_get(l->a->images, id, &img, &err) < 0)
                return false;
        for (size_t i = 0; i < img->n_layers; i++)
                lg_strlist_add(l->l, img->layer_dirs[i]);
        lg_image_free(img);
        return l->l->status < 0;
}

int lg_apps_layers_in_use(lg_apps *a, struct lg_strlist *l) {
        struct strs c = {.a = a, .l = l};
        if (a->images)
                each_image(a, add_layers, &c);
        return l->status;
}

static bool add_id(const char *id, const char *who, void *ud) {
        struct strs *c = ud;
        (void) who;
        for (size_t i = 0; i < c->l->n; i++)
                if (!strcmp(c->l->v[i], id))
                        return false;
        lg_strlist_add(c->l, id);
        return c->l->status < 0;
}

int lg_apps_images_in_use(lg_apps *a, struct lg_strlist *l) {
        struct strs c = {.a = a, .l = l};
        each_image(a, add_id, &c);
        return l->status;
}

struct user {
        const char *id;
        char *who;
        size_t cap;
        bool found;
};

static bool find_user(const char *id, const char *who, void *ud) {
        struct user *u = ud;
        if (strcmp(id, u->id))
                return false;
        snprintf(u->who, u->cap, "%s", who);
        return u->found = true;
}

int lg_apps_image_user(lg_apps *a, const char *image_id, char *who, size_t cap) {
        struct user u = {image_id, who, cap, false};
        each_image(a, find_user, &u);
        return u.found;
}
