/* Apps -- functions (a language worker running an uploaded package) and
 * container apps (an OCI image serving HTTP): specs, revisions and their
 * activation in the router, pool groups (the warm placeholders apps start
 * from, language workers or an image), the app event logs, the package
 * upload pipeline, and the images apps and pool groups use: pulled before
 * they are stored, kept from GC and removal while used (docs/api.md,
 * "Apps", "Pool groups", "Packages"; docs/container-apps.md).
 *
 * What a revision is: the part of an app's spec that needs new instances
 * (runtime, package, entrypoint, settings, image with the id it resolved
 * to, port, command, args, env, readinessPath, cpu, memory, pool group).
 * Changing it makes revision N+1, and activating it has the router drain
 * revision N; scaling settings (concurrency, min/max instances, timeouts)
 * change in place. Apps, their revisions and pool groups live in the store
 * (kinds "App", "PoolGroup"); the router and the node hold what is active,
 * reached through lg_apps_ops only, so that the module runs without them.
 *
 * Threading: one libuv loop, not thread-safe; package jobs run on libuv's
 * thread pool one at a time and touch only the blob store there.
 * Callbacks: the ops are called synchronously from inside the lg_apps_*
 * calls and must not call back into the module; an upload's completion
 * callback runs from the loop, never from inside the call that started it.
 * Memory: the library never logs (apps' events go to their log files, see
 * lg_apps_log); functions return >= 0 or a negative errno with err set;
 * strings and JSON given are borrowed for the call; JSON and resources
 * returned belong to the caller. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"
#include "image/jobs.h"
#include "node/node.h"
#include "pkg/pkg.h"
#include "router/router.h"
#include "store/store.h"
#include "tenant/tenant.h"

typedef struct lg_apps lg_apps;

/* What the module needs of the node and the router. */
struct lg_apps_ops {
        int (*pool_set)(void *ud, const struct lg_pool_spec *spec, struct lg_error *err);
        void (*pool_delete)(void *ud, const char *name);
        /* < 0 when the node has no such pool. */
        int (*pool_stats)(void *ud, const char *name, struct lg_pool_stats *ret);
        int (*route_set)(void *ud, const struct lg_route_config *cfg, struct lg_error *err);
        void (*route_remove)(void *ud, const char *key);
        /* < 0 when there is no such route. */
        int (*route_stats)(void *ud, const char *key, struct lg_route_stats *ret);
        /* fn for the network address of each ready instance of the route
         * (status "addresses"); may be NULL. */
        void (*route_addresses)(void *ud, const char *key, void (*fn)(const char *address, void *fud), void *fud);
};

struct lg_apps_config {
        uv_loop_t *loop;
        lg_store *store;
        struct lg_blobstore *blobs;
        const char *logs_dir; /* <logs_dir>/<ns>/<app>.log */
        const struct lg_apps_ops *ops;
        void *ud;             /* the ops' */
        lg_tenants *tenants;  /* apps' egress policies; NULL: none */
        /* Container apps and image pool groups; NULL: refused. */
        lg_image_store *images;
        lg_image_jobs *image_jobs;
        bool no_network; /* legiond --network off: container apps and image pools refused */
        /* Package images (`packageImage`): $LEGION_HOME/lazy, where their
         * lazy layers (layers/<hex>), marks (packages/<hex>) and mount
         * points (mnt/pkg-<hex>) go, and the node's lazy mounts (the ops
         * the image store has: attach and detach, called from libuv's
         * thread pool only). NULL lazy_ops: package images are fetched
         * whole and extracted. NULL lazy_dir: package images are refused. */
        const char *lazy_dir;
        const struct lg_image_lazy_ops *lazy_ops;
        void *lazy_ud;
        /* Registries ("host[:port]") package images and pushes reach over
         * plain HTTP besides 127.0.0.1 and localhost; NULL-terminated,
         * may be NULL. Borrowed for the life of the module. */
        const char *const *insecure_registries;
};

int lg_apps_new(const struct lg_apps_config *cfg, lg_apps **ret, struct lg_error *err);
/* Uploads not yet running are dropped (their callbacks never run); one
 * whose job runs must be let finish first. NULL is fine. */
void lg_apps_free(lg_apps *a);

/* ---- apps -------------------------------------------------------------------- */

/* The fields an app spec may have. */
extern const char *const lg_app_fields[];

/* Store spec (and labels, may be NULL) as app ns/name: checked first
 * (-EINVAL "app `x`: `runtime` must be ..."; the package must be uploaded
 * and the pool group exist and run the same runtime; an image app's image
 * must be in the store -- lg_apps_prepare pulls it -- and its pool group
 * run the same image), then in one
 * transaction the object, a new revision when the revision's fields
 * changed, and the package references; the newest 20 revisions are kept.
 * Returns the store's LG_STORE_CREATED, _UPDATED or _UNCHANGED; *ret (may
 * be NULL) the object.
 * It is not routed yet: lg_apps_activate does that. */
int lg_apps_put(lg_apps *a, const char *ns, const char *name, const json_t *labels, const json_t *spec,
                struct lg_resource **ret, struct lg_error *err);
/* Route app ns/name's latest revision: a new revision drains the
 * instances of the old. If its package's tree has gone, the package is
 * extracted again on the thread pool (never on the loop) and the app is
 * routed once that is done (0 returned meanwhile; a failure goes to the
 * app's log). */
int lg_apps_activate(lg_apps *a, const char *ns, const char *name, struct lg_error *err);
/* Remove the app from the store and the router. */
int lg_apps_delete(lg_apps *a, const char *ns, const char *name, struct lg_error *err);
/* The API document of a stored app: the resource with status.url and,
 * while routed, the router's figures. NULL when out of memory. */
json_t *lg_apps_json(lg_apps *a, const struct lg_resource *app);

/* ---- access (apps-auth.c) ----------------------------------------------------------- */

/* Who may call an app's URL (spec `auth`, changed in place: no new
 * revision). token (the default): an API token that may use the namespace;
 * keys: one of the app's keys, or such a token; none: anyone who reaches
 * legiond's port (docs/security.md). */
enum lg_app_auth { LG_APP_AUTH_TOKEN, LG_APP_AUTH_KEYS, LG_APP_AUTH_NONE };

const char *lg_app_auth_name(enum lg_app_auth auth);
/* App ns/name's auth, from memory (no store read: it is asked on every
 * data-path request before any credential is checked). An app not known
 * is LG_APP_AUTH_TOKEN, as a token app is: callers cannot tell them apart. */
enum lg_app_auth lg_apps_auth(lg_apps *a, const char *ns, const char *name);

/* App keys (lg_store_app_key_*): -ENOENT when the app does not exist. The
 * secret goes to secret once; the store keeps its hash. A key works only on
 * its app's data path, and only while the app's auth is keys; deleting the
 * app deletes its keys. */
int lg_apps_key_create(lg_apps *a, const char *ns, const char *name, const char *description,
                       struct lg_token *ret, char secret[LG_TOKEN_SECRET_SIZE], struct lg_error *err);
int lg_apps_key_list(lg_apps *a, const char *ns, const char *name, struct lg_token_list *ret,
                     struct lg_error *err);
/* -ENOENT when id is not a key of that app. */
int lg_apps_key_delete(lg_apps *a, const char *ns, const char *name, const char *id, struct lg_error *err);

/* ---- pool groups --------------------------------------------------------------- */

/* Check a pool group spec (unknown fields included), store it, and declare
 * its placeholders to the node. -EINVAL with err saying what is wrong;
 * the store's errors. *ret (may be NULL) the stored object. An image pool
 * group's image must be in the store (lg_apps_prepare pulls it). A new
 * image or version has the node replace the placeholders gradually; with
 * `upgrade.apps: newRevision` the pool's apps get a new revision at once. */
int lg_apps_pool_put(lg_apps *a, const char *name, const json_t *spec, struct lg_resource **ret,
                     struct lg_error *err);
int lg_apps_pool_delete(lg_apps *a, const char *name, struct lg_error *err);
/* {"name", "spec", "status"?: {"ready", "starting", "created", "taken",
 * "onDemand", "updated", "outdated", "rolling", "lastError"?, "image"?:
 * {"ref", "id"}, "pull"?: {...}}}. NULL when out of memory. */
json_t *lg_apps_pool_json(lg_apps *a, const struct lg_resource *pool);

/* ---- images (apps-image.c) ------------------------------------------------------- */

typedef struct lg_apps_pull lg_apps_pull;

/* Before lg_apps_put (ns given) or lg_apps_pool_put (ns NULL) of spec:
 * check it as the put will, and when it names an image the store lacks,
 * pull it. 1: nothing to pull, put now; 0: pulling, *ret the pull:
 * progress (may be NULL) as it goes, then done exactly once from the loop
 * (res->status < 0: failed, res->err says why, res->registry whether the
 * registry failed), unless cancelled first; nothing is stored either way.
 * < 0: spec refused (-EINVAL, err) or the pull could not start. */
int lg_apps_prepare(lg_apps *a, const char *ns, const char *name, const json_t *spec,
                    lg_image_progress_fn progress, lg_image_done_fn done, void *ud, lg_apps_pull **ret,
                    struct lg_error *err);
/* The client went away: no callback runs (the image still lands). */
void lg_apps_pull_cancel(lg_apps_pull *p);
/* Add to l the extracted layer directories of every image a pool group or
 * an app's latest revision uses, for lg_image_gc's keep list. Returns
 * l->status (-ENOMEM: an add failed). */
int lg_apps_layers_in_use(lg_apps *a, struct lg_strlist *l);
/* Add the ids of those images (each once) to l, for lg_image_gc's keep
 * ids: a dangling one (its tag moved) stays indexed while used. */
int lg_apps_images_in_use(lg_apps *a, struct lg_strlist *l);
/* 1 when image id is used by a pool group or an app's latest revision,
 * who then naming it ("pool group `web`", "app `default/site`"); 0 when not. */
int lg_apps_image_user(lg_apps *a, const char *image_id, char *who, size_t cap);

/* ---- package images (apps-package.c) ----------------------------------------- */

/* The archive digests (hex) of the package images the stored revisions of
 * every app use (all kept revisions: an older one's instances may still
 * drain), added to l. Returns l->status. */
int lg_apps_packages_in_use(lg_apps *a, struct lg_strlist *l);
/* GC of package images' lazy layers, for the image GC (its jobs' ops
 * extra_gc_*): prepare, on the loop, takes what is in use (every stored
 * revision's package); run, on the thread pool, unmounts (lazy ops'
 * detach) and removes the lazy layers (<lazy_dir>/packages/<hex> marks
 * them) not in use, so that the chunk GC after it drops their chunks, and
 * frees job. *job NULL: nothing to do. *removed counts the layers. */
int lg_apps_package_gc_prepare(lg_apps *a, void **job, struct lg_error *err);
int lg_apps_package_gc_run(void *job, uint64_t *removed, struct lg_error *err);
void lg_apps_package_gc_free(void *job); /* a job that never ran */

/* ---- package pushes (apps-package.c) ---------------------------------------------- */

/* `legion package push`: the archive streamed to a temporary file, then on
 * the thread pool extracted (the package rules), its lazy form built and
 * both pushed to a registry as a package artifact (image/lazy-package.h);
 * nothing is kept on the node. */
typedef struct lg_apps_push lg_apps_push;
struct lg_apps_pushed {
        const char *ref;        /* normalized */
        const char *digest;     /* of the artifact's manifest */
        const char *archive;    /* sha256 hex of the archive */
        uint64_t size;          /* of the archive */
        const struct lg_pkg_info *info;
        bool lazy;
        uint64_t meta_size, blob_size, n_chunks;
        uint32_t chunk_size;
};
/* Exactly once, from the loop, unless cancelled first; pushed is NULL when
 * status < 0 (err says why; registry: the registry's failure). */
typedef void (*lg_apps_push_cb)(int status, const struct lg_apps_pushed *pushed, const struct lg_error *err,
                                bool registry, void *ud);
#define LG_APPS_PUSH_MAX (1ull << 30)
/* ref is checked now (-EINVAL); chunk_size 0: 64 KiB; without_lazy: the
 * archive alone; insecure: plain HTTP (as a registry of
 * insecure_registries is). */
int lg_apps_push_begin(lg_apps *a, const char *ref, uint32_t chunk_size, bool without_lazy, bool insecure,
                       lg_apps_push **ret, struct lg_error *err);
void lg_apps_push_write(lg_apps_push *p, const void *data, size_t len);
int lg_apps_push_finish(lg_apps_push *p, lg_apps_push_cb cb, void *ud, struct lg_error *err);
void lg_apps_push_cancel(lg_apps_push *p);

/* ---- restore ------------------------------------------------------------------- */

/* At start: a stored pool group or app made active again, as the store
 * has it (what was stored is not checked again beyond what the node needs).
 * An image missing from the store is pulled in the background (0 returned;
 * the status shows the pull), and the pool group or app made active when
 * it is there. */
int lg_apps_restore_pool(lg_apps *a, const struct lg_resource *pool, struct lg_error *err);
int lg_apps_restore_app(lg_apps *a, const struct lg_resource *app, struct lg_error *err);

/* ---- logs ------------------------------------------------------------------------ */

/* Append "<time> legion: line" to the log of key "ns/name" (an app, or a
 * session pool), capped: at 1 MiB it moves to .1 and starts again. Best
 * effort, as a log is. Fits lg_router_log_fn with a as userdata. */
void lg_apps_log(const char *key, const char *line, void *a);
/* That log's path. -EINVAL for a key without '/', -ENAMETOOLONG. */
int lg_apps_log_path(lg_apps *a, const char *key, char *buf, size_t cap);

/* ---- package uploads ----------------------------------------------------------- */

/* A package arrives chunk by chunk into the blob store (each chunk's
 * sha256 and write are cheap, on the loop). What can take seconds -- the
 * commit's fsync, the extraction and the removal of a refused tree -- is a
 * job on libuv's thread pool. Jobs run one at a time in arrival order: the
 * pool has four threads, shared with sandbox creation and image jobs, and
 * uploads in parallel must not take them all. A good package is recorded
 * in the store (and kept, even if the client has gone); a refused one is
 * removed unless the same bytes were uploaded before. */
typedef struct lg_apps_upload lg_apps_upload;

struct lg_package {
        const char *digest; /* sha256 hex */
        uint64_t size;      /* of the archive */
        const struct lg_pkg_info *info;
};

/* Exactly once per finished upload, from the loop, unless cancelled first.
 * status 0: kept; < 0: refused (-EFBIG, -EINVAL, -ELOOP, ... as pkg.h says; err
 * tells why); pkg is NULL then. The upload is freed after it returns. */
typedef void (*lg_apps_upload_cb)(int status, const struct lg_package *pkg, const struct lg_error *err,
                                  void *ud);

int lg_apps_upload_begin(lg_apps *a, lg_apps_upload **ret, struct lg_error *err);
/* The largest archive accepted (bytes). */
uint64_t lg_apps_upload_max_bytes(lg_apps *a);
/* A chunk of the body. A failure is kept and reported by finish. */
void lg_apps_upload_write(lg_apps_upload *u, const void *data, size_t len);
/* The body is complete: queue its job. < 0 when a write had failed: the
 * upload is freed, and cb is never called. */
int lg_apps_upload_finish(lg_apps_upload *u, lg_apps_upload_cb cb, void *ud, struct lg_error *err);
/* The client went away: the callback will not run. A job already running
 * finishes (a good package is kept); otherwise the upload is dropped. */
void lg_apps_upload_cancel(lg_apps_upload *u);
