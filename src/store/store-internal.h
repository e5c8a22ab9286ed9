/* Internals of the store: the ops table a backend fills in, the common head
 * of every handle, and helpers shared by the generic layer (store.c,
 * store-meta.c, selector.c) and the backends (store-sqlite.c).
 *
 * The split: the generic layer validates input, computes every value
 * (resource versions, generations, uids, events, token hashes), composes
 * the row operations below inside transactions, and writes the error
 * messages. A backend is only storage: each op is one or two SQL
 * statements, runs inside whatever transaction the generic layer opened, and
 * never decides anything. A new backend (PostgreSQL) is a new ops table.
 * Nothing here is for callers outside src/store/ except the unit tests. */
#pragma once

#include "store/store.h"

/* A resource as a backend writes it: the object plus its documents already
 * serialized (canonical: compact, sorted keys). */
struct lg_store_row {
        const struct lg_resource *r;
        const char *labels;
        const char *spec;
        const char *status;
};

/* List callbacks get ownership of the item (the resource or revision is
 * theirs to keep or free; fixed-size records are copied). A negative return
 * stops the listing and is passed up. */
typedef int (*lg_store_resource_fn)(struct lg_resource *r, void *userdata);
typedef int (*lg_store_event_fn)(int64_t rv, enum lg_event_type type, const char *object_json,
                                 void *userdata);
typedef int (*lg_store_revision_fn)(struct lg_revision *rev, void *userdata);
typedef int (*lg_store_token_fn)(const struct lg_token *t, void *userdata);
typedef int (*lg_store_blob_fn)(const struct lg_blob *b, void *userdata);
typedef int (*lg_store_ref_fn)(const struct lg_resource_ref *ref, void *userdata);

/* Every op returns >= 0 or -errno with err (which may be NULL) filled,
 * except for "not found" (-ENOENT) and "key taken" (-EEXIST), which come
 * back without a message: the generic layer writes one naming the object. */
struct lg_store_ops {
        const char *name;
        void (*close)(lg_store *st);

        /* Transactions. begin opens a top-level one (write = take the write
         * lock now, so that a write never fails half way on a lock upgrade);
         * savepoint/release/rollback_to run one call inside a caller's
         * transaction. Only one savepoint level is ever used. */
        int (*begin)(lg_store *st, bool write, struct lg_error *err);
        int (*commit)(lg_store *st, struct lg_error *err);
        void (*rollback)(lg_store *st);
        int (*savepoint)(lg_store *st, struct lg_error *err);
        int (*release)(lg_store *st, struct lg_error *err);
        void (*rollback_to)(lg_store *st);
        int (*check)(lg_store *st, struct lg_error *err);

        /* The store-wide resource version: bump and read. */
        int (*next_rv)(lg_store *st, int64_t *ret, struct lg_error *err);
        int (*current_rv)(lg_store *st, int64_t *ret, struct lg_error *err);

        int (*res_get)(lg_store *st, const struct lg_resource_key *key, struct lg_resource **ret,
                       struct lg_error *err);
        /* namespace NULL = all; ordered by namespace, name. */
        int (*res_list)(lg_store *st, const char *kind, const char *namespace,
                        lg_store_resource_fn fn, void *userdata, struct lg_error *err);
        int (*res_insert)(lg_store *st, const struct lg_store_row *row, struct lg_error *err);
        /* Rewrite the row with row->r's key (never its primary key: the
         * children hang off it). -ENOENT when absent. */
        int (*res_update)(lg_store *st, const struct lg_store_row *row, struct lg_error *err);
        /* Delete with its children (revisions, blob references). */
        int (*res_delete)(lg_store *st, const struct lg_resource_key *key, struct lg_error *err);

        /* The event log. trim drops events with rv <= upto and records upto
         * as the floor (the highest rv ever trimmed; it only grows). */
        int (*event_append)(lg_store *st, int64_t rv, enum lg_event_type type,
                            const struct lg_resource *r, const char *object_json,
                            struct lg_error *err);
        int (*event_trim)(lg_store *st, int64_t upto, struct lg_error *err);
        int (*event_floor)(lg_store *st, int64_t *ret, struct lg_error *err);
        int (*event_list)(lg_store *st, int64_t after, const char *kind, const char *namespace,
                          size_t limit, lg_store_event_fn fn, void *userdata,
                          struct lg_error *err);

        /* number 0 = the latest; -ENOENT when there is none. */
        int (*rev_get)(lg_store *st, const struct lg_resource_key *key, int64_t number,
                       struct lg_revision **ret, struct lg_error *err);
        int (*rev_insert)(lg_store *st, const struct lg_resource_key *key, int64_t number,
                          int64_t created_at, const char *spec, struct lg_error *err);
        int (*rev_list)(lg_store *st, const struct lg_resource_key *key, lg_store_revision_fn fn,
                        void *userdata, struct lg_error *err);
        /* Delete revisions numbered below `below`; returns how many. */
        int (*rev_prune)(lg_store *st, const struct lg_resource_key *key, int64_t below,
                         struct lg_error *err);

        int (*tok_insert)(lg_store *st, const struct lg_token *t, const char *hash,
                          struct lg_error *err);
        int (*tok_find)(lg_store *st, const char *hash, struct lg_token *ret,
                        struct lg_error *err);
        /* app NULL: the API tokens (of namespace, or all); else the keys
         * of app namespace/app. */
        int (*tok_list)(lg_store *st, const char *namespace, const char *app, lg_store_token_fn fn,
                        void *userdata, struct lg_error *err);
        int (*tok_delete)(lg_store *st, const char *id, struct lg_error *err);

        int (*blob_insert)(lg_store *st, const struct lg_blob *b, struct lg_error *err);
        int (*blob_get)(lg_store *st, const char *digest, struct lg_blob *ret,
                        struct lg_error *err);
        int (*blob_list)(lg_store *st, const struct lg_blob_filter *filter, lg_store_blob_fn fn,
                         void *userdata, struct lg_error *err);
        int (*blob_delete)(lg_store *st, const char *digest, struct lg_error *err);
        /* 1 inserted, 0 already there. */
        int (*ref_insert)(lg_store *st, const char *digest, const struct lg_resource_key *key,
                          struct lg_error *err);
        int (*ref_delete)(lg_store *st, const char *digest, const struct lg_resource_key *key,
                          struct lg_error *err);
        int (*ref_list)(lg_store *st, const char *digest, lg_store_ref_fn fn, void *userdata,
                        struct lg_error *err);
};

/* Head of every handle; a backend embeds it as its first member. */
struct lg_store {
        const struct lg_store_ops *ops;
        unsigned events_keep;
        bool in_tx;          /* a caller's lg_store_begin is open */
        int64_t pending_rv;  /* last event rv written in the open transaction */
        int64_t saved_rv;    /* pending_rv when the current savepoint began */
        void (*hook)(void *userdata, int64_t rv);
        void *hook_userdata;
        struct lg_token_cache *tokens; /* made at the first lookup */
        int64_t (*clock)(void);        /* NULL: lg_store_now; tests set it */
};

/* The SQLite backend. target_version 0 = the latest schema; the tests pass
 * an older one to build a database as an older legiond left it. */
int lg_store_sqlite_open(const char *path, const struct lg_store_options *opts,
                         int target_version, lg_store **ret, struct lg_error *err);
extern const int lg_store_sqlite_schema_version; /* the latest */

/* ---- helpers shared with the backends ----------------------------------- */

/* A resource with empty documents, for a backend to fill. */
struct lg_resource *lg_resource_new(void);
/* Parse a stored document (an object) into *ret. -EUCLEAN when it is not
 * one: the database was written by something else. */
int lg_store_load_doc(const char *text, json_t **ret, struct lg_error *err);
/* Canonical text of a document: compact, keys sorted. NULL on ENOMEM. */
char *lg_store_dump(const json_t *doc);
/* Copy a NUL-terminated string of at most size-1 bytes; -EUCLEAN if longer
 * (only for values read back from the database). */
int lg_store_copy_field(char *dst, size_t size, const char *src);
/* Current time, seconds since the epoch. */
int64_t lg_store_now(void);
/* The handle's clock for token expiry: lg_store_now unless a test set one
 * with lg_store_set_clock. */
int64_t lg_store_clock(const lg_store *st);
void lg_store_set_clock(lg_store *st, int64_t (*now)(void));

/* ---- the token cache (token-cache.c) ------------------------------------ */

/* Tokens found by lg_store_token_lookup, keyed by the SHA-256 of their
 * secret; bounded, least recently used out. One per handle, same thread. */
#define LG_TOKEN_DIGEST_SIZE 32
struct lg_token_cache;
struct lg_token_cache_stats {
        uint64_t hits, misses; /* lookups answered from the cache, or not */
        uint64_t entries;      /* tokens held now */
};
int lg_token_cache_new(struct lg_token_cache **ret); /* 0 or -ENOMEM */
void lg_token_cache_free(struct lg_token_cache *tc);
/* SHA-256 of a presented secret (with the cache's own digest context). */
int lg_token_cache_digest(struct lg_token_cache *tc, const char *secret, size_t len,
                          unsigned char md[static LG_TOKEN_DIGEST_SIZE]);
/* true with *ret filled on a hit. Expiry is the caller's to check. */
bool lg_token_cache_get(struct lg_token_cache *tc, const unsigned char md[static LG_TOKEN_DIGEST_SIZE],
                        struct lg_token *ret);
void lg_token_cache_put(struct lg_token_cache *tc, const unsigned char md[static LG_TOKEN_DIGEST_SIZE],
                        const struct lg_token *t);
/* Drop the entry of token id, if any. tc may be NULL. */
void lg_token_cache_forget(struct lg_token_cache *tc, const char *id);
/* For the tests: the handle's cache counters (zero before the first
 * lookup). */
void lg_token_cache_stats(const struct lg_token_cache *tc, struct lg_token_cache_stats *ret);

/* ---- the generic layer's own helpers (store.c) --------------------------- */

/* Run one call atomically: a top-level transaction when the caller has none
 * open, else a savepoint inside theirs. leave commits (or releases) when
 * r >= 0 and rolls back otherwise; it returns r or the commit's error. */
int lg_store_tx_enter(lg_store *st, bool write, struct lg_error *err);
int lg_store_tx_leave(lg_store *st, int r, struct lg_error *err);

/* -EINVAL with a message unless kind, namespace ("" allowed) and name are
 * valid. */
int lg_store_check_key(const struct lg_resource_key *key, struct lg_error *err);
/* 0, or -ENOENT with "<key> not found" unless the object exists. */
int lg_store_must_exist(lg_store *st, const struct lg_resource_key *key, struct lg_error *err);
/* "App default/web" or "Namespace web", for messages. */
const char *lg_store_key_str(const struct lg_resource_key *key, char buf[static 200]);

/* A growable array of fixed-size items that a list callback fills, handed
 * over to the caller's list at the end. err and what are for the message of
 * a failed push, made there rather than guessed from -ENOMEM later (a
 * backend's -ENOMEM comes with its own message). */
struct lg_store_vec {
        void *items;
        size_t n, cap, size;
        struct lg_error *err;
        const char *what;
};
/* Append a copy of the size bytes at item: 0, or -ENOMEM with err filled. */
int lg_store_vec_push(struct lg_store_vec *v, const void *item);
