/* Warm pools (warm.h): per-key lists of sandboxes made ahead, their
 * refill, backoff and counters, and the rolling replacement of a pool by
 * its successor. The sandboxes are the owner's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "node/warm.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 30000

struct lg_warm_pool {
        lg_warm *w;
        lg_warm_pool *next;
        char *key;
        unsigned target;
        enum lg_warm_retry retry;
        const struct lg_warm_ops *ops;
        void *data;
        lg_warm_item *items;       /* starting and ready */
        unsigned n_ready, n_starting;
        uint64_t made, taken, missed;
        unsigned failures;
        uint64_t retry_at_ms;      /* RETRY_BACKOFF */
        bool wait_use;             /* RETRY_WHEN_USED: failed, not used since */
        char last_error[256];
        lg_warm_pool *successor;   /* outgoing: the pool replacing it */
        unsigned max_unavailable;
};

struct lg_warm {
        uv_loop_t *loop;
        lg_warm_pool *pools;
        uv_idle_t refill;
        bool refill_active;
        uv_timer_t retry;          /* wakes the refill after a backoff */
        int open_handles;          /* while closing: the memory goes with the last */
};

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

static void on_refill(uv_idle_t *h);

static void schedule(lg_warm *w) {
        if (w->refill_active)
                return;
        w->refill_active = true;
        uv_idle_start(&w->refill, on_refill);
}

static void on_retry(uv_timer_t *t) { schedule(t->data); }

static void pool_failed(lg_warm_pool *p, const char *why) {
        p->failures++;
        unsigned shift = p->failures < 9 ? p->failures : 9;
        uint64_t delay = (uint64_t) BACKOFF_FIRST_MS << shift;
        p->retry_at_ms = now_ms() + (delay > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay);
        p->wait_use = p->retry == LG_WARM_RETRY_WHEN_USED;
        snprintf(p->last_error, sizeof(p->last_error), "%s", why && *why ? why : "failed");
}

/* The ready and all items of p's outgoing pools. */
static void outgoing_counts(const lg_warm_pool *p, unsigned *ready, unsigned *all) {
        *ready = *all = 0;
        for (const lg_warm_pool *q = p->w->pools; q; q = q->next)
                if (q->successor == p) {
                        *ready += q->n_ready;
                        *all += q->n_ready + q->n_starting;
                }
}

/* No surge: the outgoing pools' items count against the target. */
static bool wants(const lg_warm_pool *p) {
        if (p->successor)
                return false;
        unsigned out_ready, out_all;
        outgoing_counts(p, &out_ready, &out_all);
        return p->n_ready + p->n_starting + out_all < p->target;
}

static void trim(lg_warm_pool *p);
static void roll(lg_warm *w);

/* Give up what a lower target or a replacement left over, then make what
 * is missing, one per loop turn. */
static void on_refill(uv_idle_t *h) {
        lg_warm *w = h->data;
        uint64_t now = now_ms(), wake = 0;
        roll(w);
        for (lg_warm_pool *p = w->pools; p; p = p->next)
                trim(p);
        for (lg_warm_pool *p = w->pools; p; p = p->next) {
                if (!wants(p) || p->wait_use)
                        continue;
                if (p->retry_at_ms > now) {
                        /* Backing off after failures: come back then. */
                        if (!wake || p->retry_at_ms < wake)
                                wake = p->retry_at_ms;
                        continue;
                }
                struct lg_error err = {0};
                if (p->ops->make(p, p->data, &err) < 0) {
                        pool_failed(p, err.msg);
                        if (!p->wait_use && (!wake || p->retry_at_ms < wake))
                                wake = p->retry_at_ms;
                        continue;
                }
                p->made++;
                return;
        }
        uv_idle_stop(h);
        w->refill_active = false;
        if (wake)
                uv_timer_start(&w->retry, on_retry, wake - now, 0);
}

/* ---- items -------------------------------------------------------------------- */

/* refill: make its replacement now (a removal or failure); a take
 * leaves that to lg_warm_used, once the taker's start is done. */
static void unlink_item_refill(lg_warm_item *item, bool refill) {
        lg_warm_pool *p = item->pool;
        for (lg_warm_item **pp = &p->items; *pp; pp = &(*pp)->next)
                if (*pp == item) {
                        *pp = item->next;
                        break;
                }
        if (item->ready)
                p->n_ready--;
        else
                p->n_starting--;
        item->pool = NULL;
        item->next = NULL;
        item->ready = false;
        if (refill)
                schedule(p->w);
}

static void unlink_item(lg_warm_item *item) { unlink_item_refill(item, true); }

void lg_warm_add(lg_warm_pool *p, lg_warm_item *item) {
        item->pool = p;
        item->ready = false;
        item->next = p->items;
        p->items = item;
        p->n_starting++;
}

void lg_warm_ready(lg_warm_item *item) {
        lg_warm_pool *p = item->pool;
        if (!p || item->ready)
                return;
        item->ready = true;
        p->n_starting--;
        p->n_ready++;
        p->failures = 0;
        p->last_error[0] = '\0';
        /* Made while the target went down (a pool set to `ready: 0` while
         * its placeholders were starting), or an outgoing pool may now
         * give one up: from the refill, not here, since the owner is still
         * in its own callback. */
        if (p->n_ready + p->n_starting > p->target || p->successor || lg_warm_pool_outgoing(p, NULL))
                schedule(p->w);
}

void lg_warm_failed(lg_warm_item *item, const char *why) {
        lg_warm_pool *p = item->pool;
        if (!p)
                return;
        unlink_item(item);
        pool_failed(p, why);
}

void lg_warm_remove(lg_warm_item *item) {
        if (item->pool)
                unlink_item(item);
}

/* Oldest ready first: the items list is newest first. */
lg_warm_item *lg_warm_take(lg_warm_pool *p) {
        lg_warm_item *found = NULL;
        for (lg_warm_item *i = p->items; i; i = i->next)
                if (i->ready)
                        found = i;
        if (!found) {
                p->missed++;
                schedule(p->w);
                return NULL;
        }
        unlink_item_refill(found, false);
        p->taken++;
        return found;
}

void lg_warm_used(lg_warm_pool *p) {
        if (p->wait_use) {
                p->wait_use = false;
                p->retry_at_ms = 0;
        }
        schedule(p->w);
}

/* ---- pools -------------------------------------------------------------------- */

lg_warm_pool *lg_warm_pool_find(lg_warm *w, const char *key) {
        for (lg_warm_pool *p = w->pools; p; p = p->next)
                if (!strcmp(p->key, key))
                        return p;
        return NULL;
}

static void discard(lg_warm_item *item) {
        lg_warm_pool *p = item->pool;
        unlink_item(item);
        p->ops->discard(item, p->data);
}

/* Newest first: the oldest are the most likely to be done importing. */
static lg_warm_item *newest_ready(lg_warm_pool *p) {
        for (lg_warm_item *i = p->items; i; i = i->next)
                if (i->ready)
                        return i;
        return NULL;
}

/* Give up ready items beyond the target. Outgoing pools: roll. */
static void trim(lg_warm_pool *p) {
        while (!p->successor && p->n_ready + p->n_starting > p->target && p->n_ready)
                discard(newest_ready(p));
}

static void pool_free(lg_warm_pool *p) {
        lg_warm *w = p->w;
        for (lg_warm_pool **pp = &w->pools; *pp; pp = &(*pp)->next)
                if (*pp == p) {
                        *pp = p->next;
                        break;
                }
        while (p->items)
                discard(p->items);
        free(p->key);
        free(p);
}

/* Outgoing pools give way to their successors (warm.h): starting items
 * at once (they are not available yet, and would only hold memory the
 * successor's need), ready ones while the successor and outgoing pools
 * keep target - max_unavailable ready without it; empty ones are freed. */
static void roll(lg_warm *w) {
        for (lg_warm_pool *o = w->pools, *next; o; o = next) {
                next = o->next;
                lg_warm_pool *s = o->successor;
                if (!s)
                        continue;
                for (lg_warm_item *i = o->items, *inext; i; i = inext) {
                        inext = i->next;
                        if (!i->ready)
                                discard(i);
                }
                unsigned max_u = s->max_unavailable ? s->max_unavailable : 1;
                unsigned floor = s->target > max_u ? s->target - max_u : 0;
                while (o->n_ready) {
                        unsigned out_ready, out_all;
                        outgoing_counts(s, &out_ready, &out_all);
                        if (out_ready + s->n_ready - 1 < floor)
                                break;
                        discard(newest_ready(o));
                }
                if (!o->items)
                        pool_free(o);
        }
}

int lg_warm_pool_set(lg_warm *w, const struct lg_warm_pool_config *cfg, lg_warm_pool **ret, struct lg_error *err) {
        lg_warm_pool *p = lg_warm_pool_find(w, cfg->key);
        if (!p) {
                p = calloc(1, sizeof(*p));
                if (!p || !(p->key = strdup(cfg->key))) {
                        free(p);
                        return lg_error_set(err, ENOMEM, "allocate warm pool");
                }
                p->w = w;
                p->next = w->pools;
                w->pools = p;
        }
        p->target = cfg->target;
        p->retry = cfg->retry;
        p->ops = cfg->ops;
        p->data = cfg->data;
        p->max_unavailable = cfg->max_unavailable;
        p->successor = NULL; /* current again, if it was outgoing */
        p->retry_at_ms = 0;
        p->wait_use = false;
        trim(p);
        schedule(w);
        if (ret)
                *ret = p;
        return 0;
}

void lg_warm_pool_delete(lg_warm_pool *p) {
        if (!p)
                return;
        lg_warm_pool *o;
        while ((o = lg_warm_pool_outgoing(p, NULL)))
                pool_free(o);
        pool_free(p);
}

int lg_warm_pool_retire(lg_warm_pool *old, lg_warm_pool *successor) {
        if (old == successor || successor->successor || old->w != successor->w)
                return -EINVAL;
        for (lg_warm_pool *q = old->w->pools; q; q = q->next)
                if (q->successor == old)
                        q->successor = successor;
        old->successor = successor;
        schedule(old->w);
        return 0;
}

lg_warm_pool *lg_warm_pool_outgoing(const lg_warm_pool *p, const lg_warm_pool *prev) {
        for (lg_warm_pool *q = prev ? prev->next : p->w->pools; q; q = q->next)
                if (q->successor == p)
                        return q;
        return NULL;
}

const char *lg_warm_pool_key(const lg_warm_pool *p) { return p->key; }

void lg_warm_pool_stats(const lg_warm_pool *p, struct lg_warm_stats *ret) {
        *ret = (struct lg_warm_stats){.ready = p->n_ready, .starting = p->n_starting, .made = p->made,
                                      .taken = p->taken, .missed = p->missed, .failures = p->failures,
                                      .outgoing = p->successor != NULL};
        for (const lg_warm_pool *q = p->w->pools; q; q = q->next)
                if (q->successor == p) {
                        ret->outdated += q->n_ready + q->n_starting;
                        ret->rolling = true;
                }
        snprintf(ret->last_error, sizeof(ret->last_error), "%s", p->last_error);
}

int lg_warm_new(uv_loop_t *loop, lg_warm **ret, struct lg_error *err) {
        lg_warm *w = calloc(1, sizeof(*w));
        if (!w)
                return lg_error_set(err, ENOMEM, "allocate warm pools");
        w->loop = loop;
        uv_idle_init(loop, &w->refill);
        w->refill.data = w;
        uv_timer_init(loop, &w->retry);
        w->retry.data = w;
        *ret = w;
        return 0;
}

static void closed(uv_handle_t *h) {
        lg_warm *w = h->data;
        if (--w->open_handles == 0)
                free(w);
}

void lg_warm_free(lg_warm *w) {
        if (!w)
                return;
        while (w->pools)
                lg_warm_pool_delete(w->pools);
        w->open_handles = 2;
        uv_close((uv_handle_t *) &w->refill, closed);
        uv_close((uv_handle_t *) &w->retry, closed);
}
