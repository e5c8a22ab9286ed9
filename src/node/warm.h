/* Warm pools: sandboxes made ahead of use, kept per key, for whoever
 * needs one at once (function placeholders and session pools in node.c;
 * later warm pod sandboxes).
 *
 * A key names what a pool's sandboxes are made from (a language worker
 * or an image, cpu and memory, disk, environment; later a network
 * profile): a sandbox made for one key is only ever taken from that
 * key's pool. A pool keeps `target` sandboxes ready or being made. This
 * component decides when to make one (refill on an idle handle, one per
 * loop turn across every pool, so that requests interleave), backs off
 * after failed makes (100 ms doubling to 30 s; or, with
 * LG_WARM_RETRY_WHEN_USED, not before the pool is used again) and keeps
 * why the last one failed, and counts what was made, taken and missed.
 * Making and destroying sandboxes is the owner's, through its ops (with
 * the node agent, at low priority: LG_AGENT_LOW_PRIO or a low CPU weight).
 *
 * Items: the owner embeds an lg_warm_item in its per-sandbox struct; the
 * pool links it. An item is added when its making starts (starting),
 * becomes ready, and leaves by being taken, failing (counts for the
 * backoff), being removed (died when ready, destroyed by its owner) or
 * being discarded by the pool (target lowered, pool deleted: ops->discard
 * then owns it, to destroy it).
 *
 * Rolling replacement: when what a pool's sandboxes are made from
 * changes (a new key), the owner sets the new key's pool and retires the
 * old one into it (lg_warm_pool_retire). The old pool is then *outgoing*:
 * it makes nothing, its starting items are discarded, and its ready ones
 * are discarded one at a time as its successor's become ready, so that
 *   - a discard never leaves fewer than target - max_unavailable ready
 *     across the successor and its outgoing pools (takes may: that is use);
 *   - the successor makes only while its items and those of its outgoing
 *     pools together are fewer than its target (no surge: never more
 *     sandboxes than the target, so a replacement costs no extra memory);
 * until the outgoing pool is empty, and then it is deleted (freed) by the
 * component. Old items are never re-made or moved into the new pool: a
 * take from the successor only ever gets an item made for its key; the
 * owner may take from an outgoing pool (lg_warm_pool_outgoing) for a use
 * its old key still fits. The replacement stalls, keeping the old items,
 * while the successor's makes fail.
 *
 * Threading: the loop's thread only; ops run on it, never from inside
 * the call that added the item. Memory: pools are freed by
 * lg_warm_pool_delete and lg_warm_free, which discard their items. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"

typedef struct lg_warm lg_warm;
typedef struct lg_warm_pool lg_warm_pool;
typedef struct lg_warm_item lg_warm_item;

struct lg_warm_item {
        /* Private: set by the pool. */
        lg_warm_item *next;
        lg_warm_pool *pool; /* NULL once out of it */
        bool ready;
};

struct lg_warm_ops {
        /* Start making one sandbox for p: lg_warm_add() its item before
         * returning 0, then lg_warm_ready() or lg_warm_failed() it. < 0:
         * nothing started (counts as a failure, err says why). */
        int (*make)(lg_warm_pool *p, void *data, struct lg_error *err);
        /* item left the pool unused: destroy it. */
        void (*discard)(lg_warm_item *item, void *data);
};

enum lg_warm_retry {
        LG_WARM_RETRY_BACKOFF,   /* retry after 100 ms << failures, at most 30 s */
        LG_WARM_RETRY_WHEN_USED, /* not before lg_warm_used (a broken image: one try per use) */
};

struct lg_warm_pool_config {
        const char *key;
        unsigned target;
        enum lg_warm_retry retry;
        const struct lg_warm_ops *ops;
        void *data;
        /* While it replaces outgoing pools: at most this many fewer ready
         * than target by a discard of theirs; 0 = 1. */
        unsigned max_unavailable;
};

struct lg_warm_stats {
        unsigned ready, starting;
        uint64_t made, taken, missed;
        unsigned failures;       /* failed makes in a row (0 once one is ready) */
        char last_error[256];    /* why the last one failed, "" if none */
        /* Rolling replacement: ready or starting in the pool's outgoing
         * pools; rolling: it has some. outgoing: it is one itself. */
        unsigned outdated;
        bool rolling, outgoing;
};

int lg_warm_new(uv_loop_t *loop, lg_warm **ret, struct lg_error *err);
/* Delete every pool (discarding its items) and close the handles; the
 * memory goes once the loop has run their close callbacks. */
void lg_warm_free(lg_warm *w);

/* Create the pool of key, or change its target (and ops, data): beyond
 * the target, ready items are discarded; below it, refill. A new target
 * also ends a backoff. An outgoing pool of that key becomes a current one
 * again (a change undone while rolling: its items fit the key). */
int lg_warm_pool_set(lg_warm *w, const struct lg_warm_pool_config *cfg, lg_warm_pool **ret, struct lg_error *err);
/* Any pool of key, current or outgoing. */
lg_warm_pool *lg_warm_pool_find(lg_warm *w, const char *key);
/* Discard its items (ready and starting) and free it, with its outgoing
 * pools. NULL is fine. */
void lg_warm_pool_delete(lg_warm_pool *p);
/* Rolling replacement (above): old becomes an outgoing pool of successor,
 * and so do old's own outgoing pools. From then on the component owns
 * old: it frees it once empty (or with successor), so the caller keeps
 * no pointer to it. -EINVAL: the same pool, or successor is outgoing. */
int lg_warm_pool_retire(lg_warm_pool *old, lg_warm_pool *successor);
/* p's outgoing pools: the first after prev (NULL: the first), NULL when
 * no more. A pointer is good until control returns to the loop. */
lg_warm_pool *lg_warm_pool_outgoing(const lg_warm_pool *p, const lg_warm_pool *prev);
const char *lg_warm_pool_key(const lg_warm_pool *p);
void lg_warm_pool_stats(const lg_warm_pool *p, struct lg_warm_stats *ret);

/* A ready item, out of the pool (the caller's now); NULL when none is
 * ready (counted as missed, and the refill starts). A take does not start
 * the refill: call lg_warm_used once what was taken has started, so that
 * making its replacement does not compete with that start for the CPUs. */
lg_warm_item *lg_warm_take(lg_warm_pool *p);
/* The pool's key was used (taken or not): refill, and RETRY_WHEN_USED may
 * try again. */
void lg_warm_used(lg_warm_pool *p);

void lg_warm_add(lg_warm_pool *p, lg_warm_item *item);
void lg_warm_ready(lg_warm_item *item);
/* Making or readying it failed: out of the pool, the pool backs off. */
void lg_warm_failed(lg_warm_item *item, const char *why);
/* Out of the pool without counting a failure. No-op when not in one. */
void lg_warm_remove(lg_warm_item *item);
