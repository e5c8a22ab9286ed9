/* The layout of lg_apps, shared by apps.c, apps-image.c and apps-upload.c. */
#pragma once

#include <pthread.h>

#include "apps/apps.h"

/* The image an image pool group's placeholders are made from, as last
 * given to the node (apps-image.c). */
struct apps_pool_image {
        struct apps_pool_image *next;
        char *name;
        char *ref, *version; /* NULL when it has none */
        char id[72];         /* "" for a language worker pool */
};

struct lg_apps {
        uv_loop_t *loop;
        lg_store *store;
        struct lg_blobstore *blobs;
        char *logs_dir;
        const struct lg_apps_ops *ops;
        void *ud;
        lg_tenants *tenants;
        lg_image_store *images;
        lg_image_jobs *image_jobs;
        bool no_network;
        struct apps_auth *auth; /* apps-auth.c */
        /* Package jobs: the one running and the ones waiting for it. */
        struct {
                lg_apps_upload *running;
                lg_apps_upload *head, **tail;
        } jobs;
        /* Image pulls (held by a request, or in the background after a
         * restart) and failed background ones, for the status. */
        lg_apps_pull *pulls;
        struct apps_pool_image *pool_images;
        /* Package images (apps-package.c): the lazy store and mounts, the
         * packages resolved on this node, and the fetch jobs (one runs at
         * a time, so that two apps of one package never mount it twice). */
        char *lazy_dir;
        const struct lg_image_lazy_ops *lazy_ops;
        void *lazy_ud;
        const char *const *insecure_registries;
        struct apps_pkg *pkgs;
        struct {
                struct apps_pkg_job *running;
                struct apps_pkg_job *head, **tail;
        } pkg_jobs;
        /* A package job and a package GC's removals never overlap: each
         * holds pkg_mu (threads of the pool); a GC removes nothing when a
         * job ran (pkg_gen moved) since it took its keep list. */
        pthread_mutex_t pkg_mu;
        uint64_t pkg_gen;
};

/* Extract package digest again as a package job on the thread pool (never
 * on the loop), then lg_apps_activate app key ("ns/name"); a failure goes
 * to the app's log. 0 when queued. */
int apps_reextract(lg_apps *a, const char *key, const char *digest, struct lg_error *err);
/* lg_apps_free: drop the uploads waiting for their job. */
void apps_upload_drop_queued(lg_apps *a);

/* ---- apps.c, shared with apps-image.c ---- */
/* spec[field], when there, is an object of environment variables (names
 * as settings have them): false with err saying what is wrong. */
bool apps_check_env(const json_t *spec, const char *field, char *err, size_t errlen);
void apps_key(char *buf, size_t cap, const char *ns, const char *name);
void apps_strv_free(char **v); /* NULL-terminated; NULL is fine */
/* Route app at revision rev. */
int apps_activate_rev(lg_apps *a, const struct lg_resource *app, const struct lg_revision *rev,
                      struct lg_error *err);

/* ---- apps-image.c ---- */

/* What an image app spec resolves to. */
struct apps_image_app {
        char ref[512];     /* normalized */
        char id[72];       /* "" while the image is not in the store */
};
/* True for the spec of an image app: it has `image`, or no `runtime`
 * and a pool group (lg_apps_put finds out whether that runs an image). */
bool apps_is_image_spec(const json_t *spec);
/* The checks of an image app spec beyond the shared ones: -EINVAL with
 * msg; the store's errors in serr. pool is its pool group (may be NULL).
 * An image not in the store leaves ret->id "". */
int apps_image_check(lg_apps *a, const json_t *spec, const struct lg_resource *pool, struct apps_image_app *ret,
                     char *msg, size_t cap, struct lg_error *serr);
/* Route fields of an image app's revision into cfg (arrays allocated into
 * hold, freed by apps_image_route_free). 1 when the image is missing and
 * a background pull was started instead (nothing to route yet). */
struct apps_route_hold {
        char **command, **args;
        char image[72];
};
int apps_image_route(lg_apps *a, const struct lg_resource *app, const json_t *rs, struct lg_route_config *cfg,
                     struct apps_route_hold *hold, struct lg_error *err);
void apps_image_route_free(struct apps_route_hold *hold);
/* The image half of pool_from_spec: the fields of an image pool group
 * (-EINVAL naming the bad one; unknown fields are the caller's), into ps
 * with arrays allocated into hold (hold->ref the normalized image). Then
 * resolve: ps->image = the id, or -ENOENT when not in the store. */
struct apps_pool_hold {
        char **command, **args, **env;
        char id[72], ref[512];
};
int apps_pool_image_spec(lg_apps *a, const char *name, const json_t *spec, struct lg_pool_spec *ps,
                         struct apps_pool_hold *hold, struct lg_error *err);
int apps_pool_image_resolve(lg_apps *a, struct lg_pool_spec *ps, struct apps_pool_hold *hold, struct lg_error *err);
void apps_pool_hold_free(struct apps_pool_hold *hold);
/* The node now runs pool group name (spec) from image id (ref), or as a
 * language worker pool (both NULL): remembered; with `upgrade.apps:
 * newRevision`, a new id (or version) gives its apps a new revision. */
int apps_pool_image_set(lg_apps *a, const char *name, const json_t *spec, const char *ref, const char *id);
const struct apps_pool_image *apps_pool_image_get(lg_apps *a, const char *name);
void apps_pool_forget(lg_apps *a, const char *name);
/* Start pulling ref for pool group name (ns NULL) or app ns/name: done
 * NULL = in the background (the pool group or app is made active when it
 * lands; a failure is kept for the status). */
int apps_pull_start(lg_apps *a, const char *ns, const char *name, const char *ref, lg_image_progress_fn progress,
                    lg_image_done_fn done, void *ud, lg_apps_pull **ret, struct lg_error *err);
/* In the background, unless one runs already. */
int apps_pull_background(lg_apps *a, const char *ns, const char *name, const char *ref, struct lg_error *err);
/* Forget a failed background pull (a new put came). */
void apps_pull_forget(lg_apps *a, const char *ns, const char *name);
/* The pull (running or failed) of a pool group (ns NULL) or app; NULL: none. */
json_t *apps_pull_json(lg_apps *a, const char *ns, const char *name);
/* lg_apps_free: cancel the pulls, forget the pool images and layers. */
void apps_pulls_free(lg_apps *a);
/* Start fetching package image ref for app ns/name (apps-package.c does
 * the work): held (done given) or in the background (activated when
 * ready), as apps_pull_start. */
int apps_pull_start_package(lg_apps *a, const char *ns, const char *name, const char *ref, const char *hex,
                            lg_image_done_fn done, void *ud, lg_apps_pull **ret, struct lg_error *err);

/* ---- apps-package.c ---- */
/* A function spec's code: `package` (an uploaded package) or
 * `packageImage` (a package artifact in a registry), exactly one. For
 * packageImage: ret->ref normalized and, once this node has fetched it,
 * ret->digest (the artifact's manifest) and ret->hex (its archive), ""
 * before. -EINVAL with msg. */
struct apps_pkg_image {
        char ref[512];
        char digest[72];
        char hex[65];
};
int apps_package_image_check(lg_apps *a, const json_t *spec, struct apps_pkg_image *ret, char *msg, size_t cap);
/* The code directory of a revision with packageImage: 0 with code set (the
 * lazy mount, or the extracted tree); 1 when it is being made ready (the
 * app is activated when it is, a failure goes to its log); < 0. */
int apps_package_image_code(lg_apps *a, const struct lg_resource *app, const json_t *rs, char *code, size_t cap,
                            struct lg_error *err);
/* status.package of a function app whose latest revision is rs. */
json_t *apps_package_status(lg_apps *a, const json_t *rs);
/* A fetch job: ref (hex, when known from a revision, "" otherwise); done
 * from the loop with a result whose img is NULL, unless cancelled. */
struct apps_pkg_job;
int apps_pkg_job_start(lg_apps *a, const char *ref, const char *hex, lg_image_done_fn done, void *ud,
                       struct apps_pkg_job **ret, struct lg_error *err);
void apps_pkg_job_cancel(struct apps_pkg_job *j);
void apps_packages_free(lg_apps *a);

/* ---- apps.c, for apps-image.c ---- */
/* "K=V" of the object spec[field]; NULL when out of memory. */
char **apps_env_strings(const json_t *spec, const char *field);
/* A new revision of app: its latest with field set to value, routed. 1
 * when made, 0 when the latest had it already. */
int apps_rerevision(lg_apps *a, const struct lg_resource *app, const char *field, const char *value,
                    struct lg_error *err);
/* apps-auth.c: spec `auth` (-EINVAL with err; absent: token); the
 * in-memory table lg_apps_auth reads (set to token = dropped); an app's
 * keys deleted with it. */
int apps_auth_parse(const json_t *spec, enum lg_app_auth *ret, struct lg_error *err);
int apps_auth_set(lg_apps *a, const char *ns, const char *name, enum lg_app_auth auth);
void apps_auth_free(lg_apps *a);
int apps_keys_delete_all(lg_apps *a, const char *ns, const char *name, struct lg_error *err);
