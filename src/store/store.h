/* The store of legiond: the control plane's state as a generic resource
 * document store in the spirit of the Kubernetes API server (apps, pool
 * groups, namespaces, pods, session pools, jobs all use one mechanism), plus
 * app revisions, API tokens and blob records. SQLite by default; the backend
 * is an ops table (store-internal.h) so that PostgreSQL can be added later.
 * docs/store.md describes the model.
 *
 * Conventions: functions return >= 0 on success or a negative errno and fill
 * err (may be NULL) with a one-line message. The errnos that carry meaning:
 *   -EINVAL    bad input (name, selector, labels, document)   -> HTTP 400
 *   -ENOENT    no such object                                  -> 404
 *   -EEXIST    create of a name that exists                    -> 409
 *   -ESTALE    expected resource version does not match        -> 409
 *   -EBUSY     blob still referenced; transaction already open -> 409
 *   -E2BIG     document over its size limit                    -> 413
 *   -EIDRM     events_since from a version older than the
 *              oldest kept event: relist and watch again       -> 410 Gone
 *   -EKEYEXPIRED  token past its expiry                        -> 401
 *   -EOPNOTSUPP   database schema newer than this binary
 *
 * Ownership: every json_t passed in is only read (deep-copied when kept);
 * every result is owned by the caller and freed with its _free function.
 * Result pointers (ret) may be NULL when the caller does not need them.
 *
 * Threading: one thread (legiond's event loop) uses a store handle; calls
 * are synchronous. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"

#define LG_STORE_NAME_MAX 63          /* names, namespaces, kinds */
#define LG_STORE_DOC_MAX (1u << 20)   /* spec, status: serialized bytes */
#define LG_STORE_LABELS_MAX 64        /* labels per object */
#define LG_STORE_EVENTS_KEEP 10000    /* default length of the event log */

typedef struct lg_store lg_store;

/* ---- names ---------------------------------------------------------------- */

/* DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, 1..63 chars. Names of
 * objects and namespaces. */
bool lg_store_valid_name(const char *s);
/* Kind: [A-Z][A-Za-z0-9]*, 1..63 chars ("App", "PoolGroup"). */
bool lg_store_valid_kind(const char *s);
/* Label keys and values, as in Kubernetes: key = [prefix/]name, prefix a
 * DNS-1123 subdomain (<= 253), name [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?
 * (<= 63); a value is empty or matches name. */
bool lg_store_valid_label_key(const char *s);
bool lg_store_valid_label_value(const char *s);
/* A JSON object of at most LG_STORE_LABELS_MAX valid key -> string value. */
int lg_store_check_labels(const json_t *labels, struct lg_error *err);

/* RFC 3339 UTC with second precision ("2024-05-01T12:00:00Z"); buf holds at
 * least 32 bytes. Returns 0 or -EINVAL (unrepresentable time). */
int lg_store_format_time(int64_t t, char *buf, size_t size);
int lg_store_parse_time(const char *s, int64_t *ret);

/* ---- opening -------------------------------------------------------------- */

enum lg_store_sync {
        /* fsync the WAL at every commit: an acknowledged write survives a
         * kill -9 and a power cut. The default. */
        LG_STORE_SYNC_FULL = 0,
        /* No fsync at commit: survives kill -9 of legiond but a host crash
         * may lose the last commits. For benchmarks and scratch stores. */
        LG_STORE_SYNC_NORMAL = 1,
};

struct lg_store_options {
        unsigned events_keep; /* event log length; 0 = LG_STORE_EVENTS_KEEP */
        enum lg_store_sync sync;
        unsigned busy_timeout_ms; /* wait for another process' lock; 0 = 5000 */
};

/* Open (creating it on demand, mode 0600) the store at location: a file
 * path ("$LEGION_HOME/legion.db") or "sqlite:PATH". Applies pending schema
 * migrations; fails with -EOPNOTSUPP on a database written by a newer
 * Legion. opts may be NULL. */
int lg_store_open(const char *location, const struct lg_store_options *opts,
                  lg_store **ret, struct lg_error *err);
/* Close (rolling back a transaction left open). NULL is fine. */
void lg_store_close(lg_store *st);
static inline void lg_store_closep(lg_store **p) { lg_store_close(*p); }
#define _cleanup_store_ _cleanup_(lg_store_closep)

/* PRAGMA integrity_check (or the backend's equivalent) plus the store's own
 * invariants (resource versions below the counter). 0 or -EUCLEAN. */
int lg_store_check(lg_store *st, struct lg_error *err);

/* The store-wide resource version: the revision of the last write. */
int lg_store_current_rv(lg_store *st, int64_t *ret, struct lg_error *err);

/* ---- transactions --------------------------------------------------------- */

/* Group writes: every call between begin and commit lands atomically or not
 * at all. A call that fails inside the transaction undoes only its own
 * effects (it runs under a savepoint); the transaction stays usable. Without
 * begin, every call is its own transaction. Transactions do not nest:
 * begin while one is open is -EBUSY. */
int lg_store_begin(lg_store *st, struct lg_error *err);
int lg_store_commit(lg_store *st, struct lg_error *err);
void lg_store_rollback(lg_store *st);
bool lg_store_in_transaction(const lg_store *st);

/* Scope guard: `_cleanup_store_tx_ lg_store *tx = st;` after a successful
 * begin rolls back on every early return; commit with
 * `lg_store_commit(TAKE_PTR(tx), err)`. */
static inline void lg_store_txp(lg_store **p) {
        if (*p && lg_store_in_transaction(*p))
                lg_store_rollback(*p);
}
#define _cleanup_store_tx_ _cleanup_(lg_store_txp)

/* Called after every commit that wrote resource events, with the resource
 * version of the last one: the place to wake watchers. fn may be NULL. */
void lg_store_set_commit_hook(lg_store *st, void (*fn)(void *userdata, int64_t rv),
                              void *userdata);

/* ---- resources ------------------------------------------------------------ */

/* Names one object. namespace is "" for cluster-scoped kinds (Namespace,
 * PoolGroup, Node). */
struct lg_resource_key {
        const char *kind;
        const char *namespace;
        const char *name;
};
#define LG_KEY(k, ns, n) (&(const struct lg_resource_key){(k), (ns), (n)})

struct lg_resource {
        char kind[LG_STORE_NAME_MAX + 1];
        char namespace[LG_STORE_NAME_MAX + 1];
        char name[LG_STORE_NAME_MAX + 1];
        char uid[37];             /* random UUID (v4), new for every create */
        int64_t resource_version; /* store rv of the last write of this object */
        int64_t generation;       /* 1 at create, +1 at every spec change */
        int64_t created_at;       /* seconds since the epoch, UTC */
        int64_t updated_at;
        json_t *labels;           /* object of strings; never NULL */
        json_t *spec;             /* object; never NULL */
        json_t *status;           /* object; never NULL ({} until set) */
};

void lg_resource_free(struct lg_resource *r);
static inline void lg_resource_freep(struct lg_resource **p) { lg_resource_free(*p); }
#define _cleanup_resource_ _cleanup_(lg_resource_freep)

/* The Kubernetes-shaped document:
 *   {"kind", "metadata": {"name", "namespace" (absent when ""), "uid",
 *    "resourceVersion": "N" (a string, as Kubernetes has it), "generation",
 *    "creationTimestamp", "updateTimestamp", "labels"}, "spec", "status"}
 * (the API layer adds apiVersion). NULL only when out of memory. */
json_t *lg_resource_to_json(const struct lg_resource *r);
/* The inverse, validating every field: -EINVAL with a message. */
int lg_resource_from_json(const json_t *doc, struct lg_resource **ret, struct lg_error *err);

struct lg_resource_list {
        struct lg_resource **items; /* ordered by namespace, name */
        size_t n;
        int64_t resource_version;   /* store rv the list was read at: watch from here */
};
void lg_resource_list_free(struct lg_resource_list *l); /* frees the contents */

/* Create; labels, spec and status may be NULL (= {}). -EEXIST when the key
 * is taken. */
int lg_store_create(lg_store *st, const struct lg_resource_key *key, const json_t *labels,
                    const json_t *spec, const json_t *status, struct lg_resource **ret,
                    struct lg_error *err);

int lg_store_get(lg_store *st, const struct lg_resource_key *key, struct lg_resource **ret,
                 struct lg_error *err);

/* List objects of a kind, in one namespace (namespace NULL = all, "" =
 * cluster-scoped ones), matching sel (NULL = all). */
struct lg_selector;
int lg_store_list(lg_store *st, const char *kind, const char *namespace,
                  const struct lg_selector *sel, struct lg_resource_list *ret,
                  struct lg_error *err);

/* Replace labels and/or spec (NULL = keep). expected_rv > 0 makes it
 * conditional: -ESTALE when the object's resource version differs.
 * A spec change bumps generation. Returns 1 when written, 0 when nothing
 * changed (no new resource version, no event; ret is the current object). */
int lg_store_update(lg_store *st, const struct lg_resource_key *key, int64_t expected_rv,
                    const json_t *labels, const json_t *spec, struct lg_resource **ret,
                    struct lg_error *err);

/* Replace status only (generation unchanged). Same return convention. */
int lg_store_update_status(lg_store *st, const struct lg_resource_key *key,
                           int64_t expected_rv, const json_t *status,
                           struct lg_resource **ret, struct lg_error *err);

/* Delete, with its revisions and blob references. ret is the last state,
 * its resource_version the deletion's. expected_rv as for update. */
int lg_store_delete(lg_store *st, const struct lg_resource_key *key, int64_t expected_rv,
                    struct lg_resource **ret, struct lg_error *err);

/* Idempotent create: absent -> create; present with the same spec and
 * labels (labels NULL = don't care) -> no-op; otherwise update. */
enum lg_store_apply_result {
        LG_STORE_UNCHANGED = 0,
        LG_STORE_CREATED = 1,
        LG_STORE_UPDATED = 2,
};
int lg_store_apply(lg_store *st, const struct lg_resource_key *key, const json_t *labels,
                   const json_t *spec, struct lg_resource **ret, struct lg_error *err);

/* ---- label selectors ------------------------------------------------------ */

/* Kubernetes label selector syntax, requirements separated by ',' (all must
 * hold): `k=v`, `k==v`, `k!=v` (true when k is absent), `k in (v1,v2)`,
 * `k notin (v1)` (true when k is absent), `k` (exists), `!k` (absent).
 * "" or NULL selects everything. Bad input -> -EINVAL naming the offset. */
int lg_selector_parse(const char *s, struct lg_selector **ret, struct lg_error *err);
bool lg_selector_matches(const struct lg_selector *sel, const json_t *labels);
void lg_selector_free(struct lg_selector *sel);
static inline void lg_selector_freep(struct lg_selector **p) { lg_selector_free(*p); }
#define _cleanup_selector_ _cleanup_(lg_selector_freep)

/* ---- watch ---------------------------------------------------------------- */

enum lg_event_type {
        LG_EVENT_ADDED = 1,
        LG_EVENT_MODIFIED = 2,
        LG_EVENT_DELETED = 3,
};
const char *lg_event_type_name(enum lg_event_type t); /* "ADDED", ... */

struct lg_event {
        int64_t resource_version;
        enum lg_event_type type;
        struct lg_resource *object; /* state after the write; last state for DELETED */
};

struct lg_event_list {
        struct lg_event *items; /* ascending resource_version */
        size_t n;
        /* Every event up to here has been considered: the next call passes
         * this as after_rv (a bookmark, also when no event matched). */
        int64_t resource_version;
};
void lg_event_list_free(struct lg_event_list *l);

/* Events with resource_version > after_rv, of a kind (NULL = all) in a
 * namespace (NULL = all), at most limit (0 = no limit). -EIDRM when after_rv
 * predates the oldest event kept: the caller must relist. */
int lg_store_events_since(lg_store *st, int64_t after_rv, const char *kind,
                          const char *namespace, size_t limit, struct lg_event_list *ret,
                          struct lg_error *err);

/* ---- revisions (of apps, or any kind) ------------------------------------- */

struct lg_revision {
        int64_t number; /* 1, 2, ... per object */
        int64_t created_at;
        json_t *spec;
};
void lg_revision_free(struct lg_revision *rev);
static inline void lg_revision_freep(struct lg_revision **p) { lg_revision_free(*p); }
#define _cleanup_revision_ _cleanup_(lg_revision_freep)

struct lg_revision_list {
        struct lg_revision *items; /* ascending number */
        size_t n;
};
void lg_revision_list_free(struct lg_revision_list *l);

/* Record spec as a new revision of an existing object unless it equals the
 * latest. *ret_number is the new or latest number. Returns 1 when added,
 * 0 when the latest already had this spec. */
int lg_store_revision_add(lg_store *st, const struct lg_resource_key *key, const json_t *spec,
                          int64_t *ret_number, struct lg_error *err);
/* number 0 = the latest. */
int lg_store_revision_get(lg_store *st, const struct lg_resource_key *key, int64_t number,
                          struct lg_revision **ret, struct lg_error *err);
int lg_store_revision_list(lg_store *st, const struct lg_resource_key *key,
                           struct lg_revision_list *ret, struct lg_error *err);
/* Keep only the newest keep (>= 1) revisions; returns how many went. */
int lg_store_revision_prune(lg_store *st, const struct lg_resource_key *key, unsigned keep,
                            struct lg_error *err);

/* ---- API tokens ----------------------------------------------------------- */

#define LG_TOKEN_PREFIX "lgn_"
#define LG_APP_KEY_PREFIX "lgk_"
#define LG_TOKEN_SECRET_SIZE 69 /* "lgn_" + 64 hex + NUL */
#define LG_TOKEN_ID_SIZE 17     /* 16 hex + NUL */
#define LG_TOKEN_ADMIN "*"
#define LG_TOKEN_DESC_MAX 255

struct lg_token {
        char id[LG_TOKEN_ID_SIZE];             /* public handle for list and delete */
        char namespace[LG_STORE_NAME_MAX + 1]; /* a namespace, or "*" (admin) */
        char description[LG_TOKEN_DESC_MAX + 1];
        int64_t created_at;
        int64_t expires_at;                    /* 0 = never */
        /* "" for an API token. Otherwise an app key: it opens only the
         * data path of app namespace/app (docs/security.md), never the API. */
        char app[LG_STORE_NAME_MAX + 1];
};

struct lg_token_list {
        struct lg_token *items; /* by created_at, id */
        size_t n;
};
void lg_token_list_free(struct lg_token_list *l);

/* Make a token for namespace (or "*"). The secret goes to secret (print it
 * once, then wipe it): the store keeps only its SHA-256. description may be
 * NULL; printable, at most 255 bytes. */
int lg_store_token_create(lg_store *st, const char *namespace, const char *description,
                          int64_t expires_at, struct lg_token *ret,
                          char secret[LG_TOKEN_SECRET_SIZE], struct lg_error *err);
/* Find the token a client presented. -ENOENT unknown, -EKEYEXPIRED expired.
 * Tokens found are cached by the handle (docs/store.md): a known token costs
 * a SHA-256 and no database read; lg_store_token_delete through the same
 * handle takes effect at the next lookup. */
int lg_store_token_lookup(lg_store *st, const char *secret, struct lg_token *ret,
                          struct lg_error *err);
/* The API tokens (app keys are not among them); namespace NULL = every one. */
int lg_store_token_list(lg_store *st, const char *namespace, struct lg_token_list *ret,
                        struct lg_error *err);
/* Tokens and app keys alike. */
int lg_store_token_delete(lg_store *st, const char *id, struct lg_error *err);

/* App keys: tokens scoped to app namespace/app ("lgk_" + 64 hex), kept as
 * hashes as tokens are and found by lg_store_token_lookup (ret->app set).
 * The app need not exist (lg_apps checks). */
int lg_store_app_key_create(lg_store *st, const char *namespace, const char *app, const char *description,
                            struct lg_token *ret, char secret[LG_TOKEN_SECRET_SIZE], struct lg_error *err);
int lg_store_app_key_list(lg_store *st, const char *namespace, const char *app, struct lg_token_list *ret,
                          struct lg_error *err);

/* ---- blob records --------------------------------------------------------- */

#define LG_BLOB_MEDIA_TYPE_MAX 255

/* A content-addressed blob whose bytes live on disk elsewhere. */
struct lg_blob {
        char digest[65]; /* sha256, lowercase hex */
        uint64_t size;
        char media_type[LG_BLOB_MEDIA_TYPE_MAX + 1];
        int64_t created_at;
        int64_t refs;    /* objects referring to it */
};

struct lg_blob_list {
        struct lg_blob *items; /* by digest */
        size_t n;
};
void lg_blob_list_free(struct lg_blob_list *l);

struct lg_blob_filter {
        bool unreferenced;     /* only blobs no object refers to (GC candidates) */
        int64_t created_before; /* only blobs created before this time; 0 = any */
};

/* Record a blob. Returns 1 when new, 0 when already recorded with the same
 * size (-EINVAL if the size differs). */
int lg_store_blob_put(lg_store *st, const char *digest, uint64_t size, const char *media_type,
                      struct lg_blob *ret, struct lg_error *err);
int lg_store_blob_get(lg_store *st, const char *digest, struct lg_blob *ret,
                      struct lg_error *err);
int lg_store_blob_list(lg_store *st, const struct lg_blob_filter *filter,
                       struct lg_blob_list *ret, struct lg_error *err);
/* -EBUSY while referenced. */
int lg_store_blob_delete(lg_store *st, const char *digest, struct lg_error *err);
/* Reference a blob from an object (both must exist). 1 new, 0 existed. The
 * reference goes away with the object. */
int lg_store_blob_ref(lg_store *st, const char *digest, const struct lg_resource_key *key,
                      struct lg_error *err);
int lg_store_blob_unref(lg_store *st, const char *digest, const struct lg_resource_key *key,
                        struct lg_error *err);

struct lg_resource_ref {
        char kind[LG_STORE_NAME_MAX + 1];
        char namespace[LG_STORE_NAME_MAX + 1];
        char name[LG_STORE_NAME_MAX + 1];
};
struct lg_resource_ref_list {
        struct lg_resource_ref *items;
        size_t n;
};
void lg_resource_ref_list_free(struct lg_resource_ref_list *l);
/* The objects referring to a blob. */
int lg_store_blob_referrers(lg_store *st, const char *digest, struct lg_resource_ref_list *ret,
                            struct lg_error *err);
