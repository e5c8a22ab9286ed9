/* Warm pools (src/node/warm.c) on a real libuv loop with a fake ops table:
 * items are plain structs the test readies, fails or takes by hand, so
 * every state a replacement passes through is seen.
 *
 * Rolling replacement: a pool of key "gen0" full, then its key changes.
 * Every discard checks the rule (a discard never leaves fewer than
 * target - max_unavailable ready over the pools of the group), every make
 * checks that no more than target items live at once (no surge), every
 * take from the successor checks it got an item made for its key; at the
 * end the old pool is empty and gone and its items were all discarded
 * (none taken, none re-made). No assertion depends on how fast anything
 * is: backoffs are waited for by running the loop until the timer fires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/warm.h"

#define MAX_ITEMS 256

struct fake;

struct item {
        lg_warm_item witem; /* first: the ops get this back */
        struct fake *f;
        int gen;            /* the key it was made for */
        bool ready, gone;   /* gone: discarded, taken or failed */
};

struct gen {
        struct fake *f;
        int gen;
        char key[16];
};

struct fake {
        uv_loop_t loop;
        lg_warm *w;
        struct gen gens[8];
        struct item *items[MAX_ITEMS];
        unsigned n_items;
        unsigned target, max_unavailable; /* of the current pool group */
        unsigned ready, live;             /* over every gen: ready, ready or starting */
        unsigned discarded[8], made[8];
        unsigned min_ready_after_discard; /* the lowest ready count a discard of a ready item left */
        unsigned max_live;                /* the most items live at once */
        unsigned fail_every;              /* make fails every Nth time; 0: never */
        unsigned makes;
        bool check_no_surge;
};

static int fake_make(lg_warm_pool *p, void *data, struct lg_error *err) {
        struct gen *g = data;
        struct fake *f = g->f;
        f->makes++;
        if (f->fail_every && f->makes % f->fail_every == 0)
                return lg_error_set(err, EIO, "no sandbox this time");
        assert_true(f->n_items < MAX_ITEMS);
        struct item *it = calloc(1, sizeof(*it));
        assert_non_null(it);
        it->f = f;
        it->gen = g->gen;
        f->items[f->n_items++] = it;
        f->live++;
        f->made[g->gen]++;
        if (f->live > f->max_live)
                f->max_live = f->live;
        /* No surge: never more than target sandboxes at once. */
        if (f->check_no_surge)
                assert_true(f->live <= f->target);
        lg_warm_add(p, &it->witem);
        return 0;
}

static void fake_discard(lg_warm_item *wi, void *data) {
        struct gen *g = data;
        struct item *it = (struct item *) wi;
        struct fake *f = it->f;
        assert_int_equal(it->gen, g->gen);
        assert_false(it->gone);
        assert_null(wi->pool); /* out of the pool before it is discarded */
        it->gone = true;
        f->live--;
        f->discarded[it->gen]++;
        if (it->ready) {
                f->ready--;
                if (f->ready < f->min_ready_after_discard)
                        f->min_ready_after_discard = f->ready;
        }
}

static const struct lg_warm_ops fake_ops = {.make = fake_make, .discard = fake_discard};

static void fake_init(struct fake *f) {
        memset(f, 0, sizeof(*f));
        assert_int_equal(uv_loop_init(&f->loop), 0);
        struct lg_error err = {0};
        assert_int_equal(lg_warm_new(&f->loop, &f->w, &err), 0);
        for (int i = 0; i < 8; i++) {
                f->gens[i] = (struct gen){.f = f, .gen = i};
                snprintf(f->gens[i].key, sizeof(f->gens[i].key), "gen%d", i);
        }
        f->min_ready_after_discard = ~0u;
}

static void fake_fini(struct fake *f) {
        lg_warm_free(f->w);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&f->loop), 0);
        for (unsigned i = 0; i < f->n_items; i++) {
                /* Every item ended: made ones are discarded, taken or failed. */
                assert_true(f->items[i]->gone);
                free(f->items[i]);
        }
}

static lg_warm_pool *set(struct fake *f, int gen, unsigned target, unsigned max_unavailable) {
        struct lg_error err = {0};
        struct lg_warm_pool_config c = {.key = f->gens[gen].key, .target = target, .retry = LG_WARM_RETRY_BACKOFF,
                                        .ops = &fake_ops, .data = &f->gens[gen], .max_unavailable = max_unavailable};
        lg_warm_pool *p = NULL;
        assert_int_equal(lg_warm_pool_set(f->w, &c, &p, &err), 0);
        f->target = target;
        f->max_unavailable = max_unavailable ? max_unavailable : 1;
        return p;
}

/* Turn the loop until the refill has nothing more to do now. */
static void spin(struct fake *f) {
        for (int i = 0; i < 64; i++)
                uv_run(&f->loop, UV_RUN_NOWAIT);
}

static struct item *oldest_starting(struct fake *f) {
        for (unsigned i = 0; i < f->n_items; i++)
                if (!f->items[i]->gone && !f->items[i]->ready)
                        return f->items[i];
        return NULL;
}

static void make_ready(struct item *it) {
        it->ready = true;
        it->f->ready++;
        lg_warm_ready(&it->witem);
}

static struct item *take(struct fake *f, lg_warm_pool *p) {
        struct item *it = (struct item *) lg_warm_take(p);
        if (!it)
                return NULL;
        assert_false(it->gone);
        it->gone = true;
        f->live--;
        if (it->ready)
                f->ready--;
        return it;
}

/* Fill pool gen0 to target, everything ready. */
static lg_warm_pool *full_pool(struct fake *f, unsigned target) {
        lg_warm_pool *p = set(f, 0, target, 1);
        for (unsigned n = 0; n < 4 * target + 8; n++) {
                spin(f);
                struct item *it = oldest_starting(f);
                if (!it)
                        break;
                make_ready(it);
        }
        spin(f);
        struct lg_warm_stats st;
        lg_warm_pool_stats(p, &st);
        assert_int_equal(st.ready, target);
        return p;
}

/* Change the key: the new pool, the old retired into it. */
static lg_warm_pool *change(struct fake *f, lg_warm_pool *old, int gen, unsigned target, unsigned max_unavailable) {
        lg_warm_pool *p = set(f, gen, target, max_unavailable);
        assert_int_equal(lg_warm_pool_retire(old, p), 0);
        return p;
}

/* Run the replacement to its end: ready what starts, one at a time; wait
 * out backoffs. Returns the steps taken. */
static unsigned roll_out(struct fake *f, lg_warm_pool *cur, int gen) {
        unsigned steps = 0;
        for (;; steps++) {
                assert_true(steps < 1000);
                spin(f);
                struct lg_warm_stats st;
                lg_warm_pool_stats(cur, &st);
                if (st.ready == f->target && !st.rolling)
                        break;
                struct item *it = oldest_starting(f);
                if (it) {
                        assert_int_equal(it->gen, gen); /* old pools make nothing */
                        make_ready(it);
                } else {
                        uv_run(&f->loop, UV_RUN_ONCE); /* a backoff */
                }
        }
        return steps;
}

static void check_ended(struct fake *f, lg_warm_pool *cur, int gen, int old_gen) {
        struct lg_warm_stats st;
        lg_warm_pool_stats(cur, &st);
        assert_int_equal(st.ready, f->target);
        assert_int_equal(st.outdated, 0);
        assert_false(st.rolling);
        assert_false(st.outgoing);
        assert_null(lg_warm_pool_outgoing(cur, NULL));
        assert_null(lg_warm_pool_find(f->w, f->gens[old_gen].key)); /* deleted */
        /* Every old item was discarded: none is left, none went elsewhere. */
        assert_int_equal(f->discarded[old_gen], f->made[old_gen]);
        for (unsigned i = 0; i < f->n_items; i++)
                if (!f->items[i]->gone)
                        assert_int_equal(f->items[i]->gen, gen);
}

/* Ready 5, max unavailable 1: one at a time, never fewer than 4 ready. */
static void test_roll_one_at_a_time(void **state) {
        (void) state;
        struct fake f;
        fake_init(&f);
        lg_warm_pool *old = full_pool(&f, 5);
        f.check_no_surge = true;
        lg_warm_pool *cur = change(&f, old, 1, 5, 1);
        /* Stats while it rolls: 4 old ready (one made room), one new starting. */
        spin(&f);
        struct lg_warm_stats st;
        lg_warm_pool_stats(cur, &st);
        assert_true(st.rolling);
        assert_int_equal(st.outdated, 4);
        assert_int_equal(st.starting, 1);
        lg_warm_pool_stats(lg_warm_pool_outgoing(cur, NULL), &st);
        assert_true(st.outgoing);
        roll_out(&f, cur, 1);
        assert_int_equal(f.min_ready_after_discard, 4);
        assert_int_equal(f.max_live, 5);
        assert_int_equal(f.made[1], 5);
        check_ended(&f, cur, 1, 0);
        fake_fini(&f);
}

/* Max unavailable 2 of 6, with makes failing now and then (the pool
 * backs off: the replacement waits, the old items stay) and takes from
 * the new pool in between (they get new items only). */
static void test_roll_failures_and_takes(void **state) {
        (void) state;
        struct fake f;
        fake_init(&f);
        lg_warm_pool *old = full_pool(&f, 6);
        f.check_no_surge = true;
        f.fail_every = 4;
        lg_warm_pool *cur = change(&f, old, 1, 6, 2);
        unsigned takes = 0;
        for (unsigned steps = 0;; steps++) {
                assert_true(steps < 1000);
                spin(&f);
                struct lg_warm_stats st;
                lg_warm_pool_stats(cur, &st);
                if (st.ready == f.target && !st.rolling)
                        break;
                if (steps % 3 == 2 && takes < 3) {
                        struct item *it = take(&f, cur);
                        if (it) {
                                assert_int_equal(it->gen, 1);
                                takes++;
                                lg_warm_used(cur);
                        }
                }
                struct item *it = oldest_starting(&f);
                if (it)
                        make_ready(it);
                else
                        uv_run(&f.loop, UV_RUN_ONCE);
        }
        assert_int_equal(takes, 3);
        assert_true(f.min_ready_after_discard >= 4);
        check_ended(&f, cur, 1, 0);
        fake_fini(&f);
}

/* A failing successor stalls the replacement: the old items stay (the
 * unavailability limit holds however long it fails). */
static void test_roll_stalls_while_failing(void **state) {
        (void) state;
        struct fake f;
        fake_init(&f);
        lg_warm_pool *old = full_pool(&f, 4);
        f.fail_every = 1;
        lg_warm_pool *cur = change(&f, old, 1, 4, 1);
        for (int i = 0; i < 3; i++) {
                spin(&f);
                uv_run(&f.loop, UV_RUN_ONCE); /* the backoff's timer */
        }
        spin(&f);
        struct lg_warm_stats st;
        lg_warm_pool_stats(cur, &st);
        assert_true(st.failures >= 2);
        assert_int_equal(st.ready, 0);
        assert_int_equal(st.outdated, 3);
        assert_int_equal(f.ready, 3);
        /* Deleting the group deletes its outgoing pool too. */
        lg_warm_pool_delete(cur);
        assert_null(lg_warm_pool_find(f.w, "gen0"));
        assert_null(lg_warm_pool_find(f.w, "gen1"));
        assert_int_equal(f.live, 0);
        fake_fini(&f);
}

/* Two changes in a row (gen0 -> gen1 -> gen2) while rolling, then one
 * undone (gen2 -> gen1 again while gen1 is outgoing): each outgoing pool
 * ends empty and deleted, the limit holds throughout. */
static void test_roll_changes_in_a_row(void **state) {
        (void) state;
        struct fake f;
        fake_init(&f);
        lg_warm_pool *old = full_pool(&f, 6);
        f.check_no_surge = true;
        lg_warm_pool *p1 = change(&f, old, 1, 6, 2);
        for (int i = 0; i < 3; i++) {
                spin(&f);
                struct item *it = oldest_starting(&f);
                assert_non_null(it);
                make_ready(it);
        }
        spin(&f);
        lg_warm_pool *p2 = change(&f, p1, 2, 6, 2);
        struct lg_warm_stats st;
        lg_warm_pool_stats(p2, &st);
        assert_true(st.rolling);
        /* Both gen0 and gen1 give way to gen2. */
        lg_warm_pool *o1 = lg_warm_pool_outgoing(p2, NULL), *o2 = lg_warm_pool_outgoing(p2, o1);
        assert_non_null(o1);
        assert_non_null(o2);
        assert_null(lg_warm_pool_outgoing(p2, o2));
        for (int i = 0; i < 2; i++) {
                spin(&f);
                struct item *it = oldest_starting(&f);
                assert_non_null(it);
                make_ready(it);
        }
        spin(&f);
        /* Undo: gen1 (outgoing, with items left) is the key again. */
        lg_warm_pool *back = lg_warm_pool_find(f.w, "gen1");
        assert_non_null(back);
        unsigned gen1_before = f.made[1];
        lg_warm_pool *p1b = change(&f, p2, 1, 6, 2);
        assert_ptr_equal(p1b, back);
        roll_out(&f, p1b, 1);
        assert_true(f.min_ready_after_discard >= 4);
        assert_true(f.max_live <= 6);
        assert_true(f.made[1] > gen1_before);
        check_ended(&f, p1b, 1, 0);
        check_ended(&f, p1b, 1, 2);
        fake_fini(&f);
}

/* A lower target with the new key (5 -> 2, max unavailable 1): old ones
 * go down to 1, then one for one. */
static void test_roll_smaller_target(void **state) {
        (void) state;
        struct fake f;
        fake_init(&f);
        lg_warm_pool *old = full_pool(&f, 5);
        lg_warm_pool *cur = change(&f, old, 1, 2, 1);
        f.check_no_surge = true;
        roll_out(&f, cur, 1);
        assert_int_equal(f.min_ready_after_discard, 1);
        assert_int_equal(f.made[1], 2);
        check_ended(&f, cur, 1, 0);
        fake_fini(&f);
}

/* Misuse is refused: retiring into itself or into an outgoing pool. */
static void test_retire_refused(void **state) {
        (void) state;
        struct fake f;
        fake_init(&f);
        lg_warm_pool *a = set(&f, 0, 1, 1), *b = set(&f, 1, 1, 1);
        assert_int_equal(lg_warm_pool_retire(a, a), -EINVAL);
        assert_int_equal(lg_warm_pool_retire(a, b), 0);
        lg_warm_pool *c = set(&f, 2, 1, 1);
        assert_int_equal(lg_warm_pool_retire(c, a), -EINVAL);
        lg_warm_pool_delete(c);
        fake_fini(&f);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_roll_one_at_a_time),
                cmocka_unit_test(test_roll_failures_and_takes),
                cmocka_unit_test(test_roll_stalls_while_failing),
                cmocka_unit_test(test_roll_changes_in_a_row),
                cmocka_unit_test(test_roll_smaller_target),
                cmocka_unit_test(test_retire_refused),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
