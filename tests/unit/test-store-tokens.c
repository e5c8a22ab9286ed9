/* Unit tests of the store's token cache (src/store/token-cache.c) through
 * lg_store_token_lookup, on a real SQLite file: a known token is answered
 * from the cache, a deleted one is refused at the very next lookup, expiry
 * holds for cached tokens (a test clock), each token keeps its own
 * namespace, the cache stays bounded, and transactions rolled back leave
 * nothing wrong behind. The hash-only storage of tokens is in test-store.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test-store-fixture.h"

static struct lg_token_cache_stats stats(struct fx *f) {
        struct lg_token_cache_stats s;
        lg_token_cache_stats(f->st->tokens, &s);
        return s;
}

static void test_hit(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        char secret[LG_TOKEN_SECRET_SIZE];
        struct lg_token t, found;
        OK(lg_store_token_create(f->st, "team-a", "ci", 0, &t, secret, &err));
        OK(lg_store_token_lookup(f->st, secret, &found, &err));
        assert_int_equal(stats(f).misses, 1);
        assert_int_equal(stats(f).hits, 0);
        for (int i = 0; i < 3; i++) {
                memset(&found, 0, sizeof(found));
                OK(lg_store_token_lookup(f->st, secret, &found, &err));
                assert_string_equal(found.id, t.id);
                assert_string_equal(found.namespace, "team-a");
                assert_string_equal(found.description, "ci");
                assert_int_equal(found.created_at, t.created_at);
        }
        assert_int_equal(stats(f).hits, 3);
        assert_int_equal(stats(f).misses, 1);
        assert_int_equal(stats(f).entries, 1);
        /* Unknown secrets are not cached: they miss every time. */
        char wrong[LG_TOKEN_SECRET_SIZE];
        strcpy(wrong, secret);
        wrong[20] = wrong[20] == 'a' ? 'b' : 'a';
        for (int i = 0; i < 2; i++)
                FAILS(lg_store_token_lookup(f->st, wrong, NULL, &err), ENOENT);
        assert_int_equal(stats(f).misses, 3);
        assert_int_equal(stats(f).entries, 1);
        /* A prefix or an extension of a cached secret is another token. */
        secret[LG_TOKEN_SECRET_SIZE - 2] = '\0';
        FAILS(lg_store_token_lookup(f->st, secret, NULL, &err), ENOENT);
        explicit_bzero(secret, sizeof(secret));
}

static void test_delete_invalidates(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        char a[LG_TOKEN_SECRET_SIZE], b[LG_TOKEN_SECRET_SIZE];
        struct lg_token ta, tb;
        OK(lg_store_token_create(f->st, "team-a", NULL, 0, &ta, a, &err));
        OK(lg_store_token_create(f->st, "team-a", NULL, 0, &tb, b, &err));
        OK(lg_store_token_lookup(f->st, a, NULL, &err));
        OK(lg_store_token_lookup(f->st, b, NULL, &err));
        OK(lg_store_token_lookup(f->st, a, NULL, &err));
        assert_int_equal(stats(f).hits, 1); /* a is in the cache */
        OK(lg_store_token_delete(f->st, ta.id, &err));
        FAILS(lg_store_token_lookup(f->st, a, NULL, &err), ENOENT);
        FAILS(lg_store_token_lookup(f->st, a, NULL, &err), ENOENT);
        assert_int_equal(stats(f).entries, 1);
        /* The other token of the namespace is untouched, still cached. */
        uint64_t hits = stats(f).hits;
        OK(lg_store_token_lookup(f->st, b, NULL, &err));
        assert_int_equal(stats(f).hits, hits + 1);

        /* A delete rolled back: the token is valid again (read from the
         * database, then cached again). */
        OK(lg_store_begin(f->st, &err));
        OK(lg_store_token_delete(f->st, tb.id, &err));
        FAILS(lg_store_token_lookup(f->st, b, NULL, &err), ENOENT);
        lg_store_rollback(f->st);
        OK(lg_store_token_lookup(f->st, b, NULL, &err));
        hits = stats(f).hits;
        OK(lg_store_token_lookup(f->st, b, NULL, &err));
        assert_int_equal(stats(f).hits, hits + 1);

        /* A token created and looked up inside a transaction that is rolled
         * back never existed: the cache must not have kept it. */
        char c[LG_TOKEN_SECRET_SIZE];
        OK(lg_store_begin(f->st, &err));
        OK(lg_store_token_create(f->st, "team-a", NULL, 0, NULL, c, &err));
        OK(lg_store_token_lookup(f->st, c, NULL, &err));
        lg_store_rollback(f->st);
        FAILS(lg_store_token_lookup(f->st, c, NULL, &err), ENOENT);
        explicit_bzero(a, sizeof(a));
        explicit_bzero(b, sizeof(b));
        explicit_bzero(c, sizeof(c));
}

static int64_t test_now;
static int64_t test_clock(void) { return test_now; }

static void test_expiry(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        char secret[LG_TOKEN_SECRET_SIZE];
        test_now = lg_store_now();
        lg_store_set_clock(f->st, test_clock);
        OK(lg_store_token_create(f->st, "team-a", NULL, test_now + 10, NULL, secret, &err));
        OK(lg_store_token_lookup(f->st, secret, NULL, &err));
        OK(lg_store_token_lookup(f->st, secret, NULL, &err));
        assert_int_equal(stats(f).hits, 1); /* cached while valid */
        test_now += 9;
        OK(lg_store_token_lookup(f->st, secret, NULL, &err));
        test_now += 1;
        FAILS(lg_store_token_lookup(f->st, secret, NULL, &err), EKEYEXPIRED);
        assert_int_equal(stats(f).hits, 3); /* refused from the cache itself */
        FAILS(lg_store_token_lookup(f->st, secret, NULL, &err), EKEYEXPIRED);
        explicit_bzero(secret, sizeof(secret));
}

static void test_namespaces(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        char a[LG_TOKEN_SECRET_SIZE], b[LG_TOKEN_SECRET_SIZE], adm[LG_TOKEN_SECRET_SIZE];
        struct lg_token ta, found;
        OK(lg_store_token_create(f->st, "team-a", NULL, 0, &ta, a, &err));
        OK(lg_store_token_create(f->st, "team-b", NULL, 0, NULL, b, &err));
        OK(lg_store_token_create(f->st, LG_TOKEN_ADMIN, NULL, 0, NULL, adm, &err));
        for (int round = 0; round < 2; round++) { /* from the database, then from the cache */
                OK(lg_store_token_lookup(f->st, a, &found, &err));
                assert_string_equal(found.namespace, "team-a");
                OK(lg_store_token_lookup(f->st, b, &found, &err));
                assert_string_equal(found.namespace, "team-b");
                OK(lg_store_token_lookup(f->st, adm, &found, &err));
                assert_string_equal(found.namespace, LG_TOKEN_ADMIN);
        }
        assert_int_equal(stats(f).hits, 3);
        /* Deleting team-a's token leaves the others' scopes as they were. */
        OK(lg_store_token_delete(f->st, ta.id, &err));
        FAILS(lg_store_token_lookup(f->st, a, &found, &err), ENOENT);
        OK(lg_store_token_lookup(f->st, b, &found, &err));
        assert_string_equal(found.namespace, "team-b");
        OK(lg_store_token_lookup(f->st, adm, &found, &err));
        assert_string_equal(found.namespace, LG_TOKEN_ADMIN);
        assert_int_equal(stats(f).hits, 5);
        explicit_bzero(a, sizeof(a));
        explicit_bzero(b, sizeof(b));
        explicit_bzero(adm, sizeof(adm));
}

/* More tokens than the cache holds: every one still works, the cache stays
 * at its bound, and deleting one that was pushed out works too. */
static void test_bounded(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        enum { N = 600 };
        char(*sec)[LG_TOKEN_SECRET_SIZE] = calloc(N, LG_TOKEN_SECRET_SIZE);
        struct lg_token *t = calloc(N, sizeof(*t));
        OK(lg_store_begin(f->st, &err));
        for (int i = 0; i < N; i++)
                OK(lg_store_token_create(f->st, "team-a", NULL, 0, &t[i], sec[i], &err));
        OK(lg_store_commit(f->st, &err));
        for (int round = 0; round < 2; round++)
                for (int i = 0; i < N; i++)
                        OK(lg_store_token_lookup(f->st, sec[i], NULL, &err));
        struct lg_token_cache_stats s = stats(f);
        assert_true(s.entries > 0 && s.entries < N);
        assert_int_equal(s.hits + s.misses, 2 * N);
        for (int i = 0; i < N; i += 7) {
                OK(lg_store_token_delete(f->st, t[i].id, &err));
                FAILS(lg_store_token_lookup(f->st, sec[i], NULL, &err), ENOENT);
        }
        for (int i = 1; i < N; i += 7)
                OK(lg_store_token_lookup(f->st, sec[i], NULL, &err));
        explicit_bzero(sec, (size_t) N * LG_TOKEN_SECRET_SIZE);
        free(sec);
        free(t);
}

/* App keys: token rows scoped to one app, found with it, kept out of the
 * API's token lists, refused for scopes that are no names. */
static void test_app_keys(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        char secret[LG_TOKEN_SECRET_SIZE], tsecret[LG_TOKEN_SECRET_SIZE];
        struct lg_token k, t, found;
        OK(lg_store_token_create(f->st, "team-a", "api", 0, &t, tsecret, &err));
        assert_string_equal(t.app, "");
        OK(lg_store_app_key_create(f->st, "team-a", "web", "hook", &k, secret, &err));
        assert_memory_equal(secret, LG_APP_KEY_PREFIX, strlen(LG_APP_KEY_PREFIX));
        assert_int_equal(strlen(secret), LG_TOKEN_SECRET_SIZE - 1);
        for (int i = 0; i < 2; i++) { /* from the database, then from the cache */
                OK(lg_store_token_lookup(f->st, secret, &found, &err));
                assert_string_equal(found.app, "web");
                assert_string_equal(found.namespace, "team-a");
                assert_string_equal(found.id, k.id);
                OK(lg_store_token_lookup(f->st, tsecret, &found, &err));
                assert_string_equal(found.app, "");
        }
        struct lg_token_list l = {0};
        OK(lg_store_token_list(f->st, "team-a", &l, &err));
        assert_int_equal(l.n, 1);
        assert_string_equal(l.items[0].id, t.id);
        lg_token_list_free(&l);
        OK(lg_store_token_list(f->st, NULL, &l, &err));
        for (size_t i = 0; i < l.n; i++)
                assert_string_not_equal(l.items[i].id, k.id);
        lg_token_list_free(&l);
        OK(lg_store_app_key_list(f->st, "team-a", "web", &l, &err));
        assert_int_equal(l.n, 1);
        assert_string_equal(l.items[0].app, "web");
        assert_string_equal(l.items[0].description, "hook");
        lg_token_list_free(&l);
        OK(lg_store_app_key_list(f->st, "team-a", "we", &l, &err));
        assert_int_equal(l.n, 0);
        lg_token_list_free(&l);
        OK(lg_store_app_key_list(f->st, "team-b", "web", &l, &err));
        assert_int_equal(l.n, 0);
        lg_token_list_free(&l);
        /* Hostile scopes. */
        const char *bad[][2] = {{NULL, "web"}, {"team-a", NULL}, {"", "web"}, {"team-a", ""},
                                {"*", "web"}, {"team-a", "*"}, {"team-a", "../web"}, {"Team", "web"},
                                {"team-a", "web/x"}, {"team-a", "a' OR '1'='1"},
                                {"team-a", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                FAILS(lg_store_app_key_create(f->st, bad[i][0], bad[i][1], NULL, NULL, secret, &err), EINVAL);
                FAILS(lg_store_app_key_list(f->st, bad[i][0], bad[i][1], &l, &err), EINVAL);
        }
        FAILS(lg_store_app_key_create(f->st, "team-a", "web", "bad\ndesc", NULL, secret, &err), EINVAL);
        /* Deleted as tokens are: at once, cache included. */
        OK(lg_store_token_delete(f->st, k.id, &err));
        FAILS(lg_store_token_lookup(f->st, secret, NULL, &err), ENOENT);
        explicit_bzero(secret, sizeof(secret));
        explicit_bzero(tsecret, sizeof(tsecret));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_hit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_delete_invalidates, setup, teardown),
                cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
                cmocka_unit_test_setup_teardown(test_namespaces, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bounded, setup, teardown),
                cmocka_unit_test_setup_teardown(test_app_keys, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
