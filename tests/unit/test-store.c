/* Unit tests of the store against real SQLite files in a temporary
 * directory: names, CRUD, optimistic concurrency, apply, events and their
 * trimming, transactions, revisions, tokens (hash-only storage), blob
 * records, migrations and locking between two handles. Selectors and the
 * kill -9 durability test have their own files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>

#include "store/store-internal.h"
#include "test-store-fixture.h"

static json_t *J(const char *text) {
        json_error_t je;
        json_t *v = json_loads(text, 0, &je);
        if (!v)
                fail_msg("bad test JSON %s: %s", text, je.text);
        return v;
}

/* json_equal against a literal; frees nothing of a. */
static void assert_json(const json_t *a, const char *text) {
        json_t *b = J(text);
        if (!json_equal(a, b)) {
                char *s = json_dumps(a, JSON_SORT_KEYS);
                fail_msg("got %s, want %s", s, text);
        }
        json_decref(b);
}

static int64_t current_rv(lg_store *st) {
        struct lg_error err = {0};
        int64_t rv = -1;
        OK(lg_store_current_rv(st, &rv, &err));
        return rv;
}

/* ---- names -------------------------------------------------------------- */

static void test_names(void **state) {
        (void) state;
        static const char *const good[] = {"a", "0", "web", "my-app-2", "a1b2",
                                           "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123"};
        static const char *const bad[] = {"", "-a", "a-", "A", "my_app", "my.app", "a b", "../x", "a/b",
                                          "é", "a\n", "x'; DROP TABLE resources;--",
                                          "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234"};
        for (size_t i = 0; i < ARRAY_SIZE(good); i++)
                assert_true(lg_store_valid_name(good[i]));
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                assert_false(lg_store_valid_name(bad[i]));
        assert_false(lg_store_valid_name(NULL));

        assert_true(lg_store_valid_kind("App"));
        assert_true(lg_store_valid_kind("PoolGroup"));
        assert_false(lg_store_valid_kind("app"));
        assert_false(lg_store_valid_kind("Pool-Group"));
        assert_false(lg_store_valid_kind(""));
        assert_false(lg_store_valid_kind(NULL));

        assert_true(lg_store_valid_label_key("app"));
        assert_true(lg_store_valid_label_key("app.kubernetes.io/name"));
        assert_true(lg_store_valid_label_key("Tier_1.x"));
        assert_false(lg_store_valid_label_key(""));
        assert_false(lg_store_valid_label_key("/x"));
        assert_false(lg_store_valid_label_key("a/"));
        assert_false(lg_store_valid_label_key("a/b/c"));
        assert_false(lg_store_valid_label_key("Example.com/x"));
        assert_false(lg_store_valid_label_key("-x"));
        assert_false(lg_store_valid_label_key("a b"));
        assert_true(lg_store_valid_label_value(""));
        assert_true(lg_store_valid_label_value("v1.2_3-x"));
        assert_false(lg_store_valid_label_value("a,b"));
        assert_false(lg_store_valid_label_value("x "));

        char buf[32];
        int64_t t;
        assert_int_equal(lg_store_format_time(0, buf, sizeof(buf)), 0);
        assert_string_equal(buf, "1970-01-01T00:00:00Z");
        assert_int_equal(lg_store_parse_time("2024-02-29T23:59:59Z", &t), 0);
        assert_int_equal(lg_store_format_time(t, buf, sizeof(buf)), 0);
        assert_string_equal(buf, "2024-02-29T23:59:59Z");
        assert_true(lg_store_parse_time("2024-02-29 23:59:59Z", &t) < 0);
        assert_true(lg_store_parse_time("2024-02-29T23:59:59+01:00", &t) < 0);
}

/* ---- resources ---------------------------------------------------------- */

static void test_crud(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        json_t *spec = J("{\"runtime\":\"python3\",\"memory\":268435456,\"env\":{\"A\":\"1\"}}");
        json_t *labels = J("{\"tier\":\"web\",\"app.kubernetes.io/name\":\"shop\"}");

        assert_int_equal(current_rv(f->st), 0);
        _cleanup_resource_ struct lg_resource *a = NULL;
        OK(lg_store_create(f->st, LG_KEY("App", "default", "shop"), labels, spec, NULL, &a, &err));
        assert_string_equal(a->kind, "App");
        assert_string_equal(a->namespace, "default");
        assert_string_equal(a->name, "shop");
        assert_int_equal(strlen(a->uid), 36);
        assert_int_equal(a->uid[14], '4');
        assert_int_equal(a->resource_version, 1);
        assert_int_equal(a->generation, 1);
        assert_true(a->created_at > 1700000000);
        assert_true(json_equal(a->spec, spec));
        assert_json(a->status, "{}");

        /* The document has the Kubernetes shape. */
        json_t *doc = lg_resource_to_json(a);
        assert_non_null(doc);
        assert_string_equal(json_string_value(json_object_get(doc, "kind")), "App");
        json_t *meta = json_object_get(doc, "metadata");
        assert_string_equal(json_string_value(json_object_get(meta, "resourceVersion")), "1");
        assert_string_equal(json_string_value(json_object_get(meta, "namespace")), "default");
        assert_string_equal(json_string_value(json_object_get(meta, "uid")), a->uid);
        assert_int_equal(strlen(json_string_value(json_object_get(meta, "creationTimestamp"))), 20);
        _cleanup_resource_ struct lg_resource *back = NULL;
        OK(lg_resource_from_json(doc, &back, &err));
        assert_string_equal(back->uid, a->uid);
        assert_int_equal(back->resource_version, 1);
        assert_true(json_equal(back->labels, labels));
        json_decref(doc);

        FAILS(lg_store_create(f->st, LG_KEY("App", "default", "shop"), NULL, NULL, NULL, NULL, &err),
              EEXIST);
        assert_non_null(strstr(err.msg, "App default/shop already exists"));
        assert_int_equal(current_rv(f->st), 1);

        /* Same name, other namespace or kind: other objects. Cluster-scoped too. */
        OK(lg_store_create(f->st, LG_KEY("App", "team-b", "shop"), NULL, NULL, NULL, NULL, &err));
        OK(lg_store_create(f->st, LG_KEY("PoolGroup", "default", "shop"), NULL, NULL, NULL, NULL, &err));
        OK(lg_store_create(f->st, LG_KEY("Namespace", "", "team-b"), NULL, NULL, NULL, NULL, &err));
        _cleanup_resource_ struct lg_resource *ns = NULL;
        OK(lg_store_get(f->st, LG_KEY("Namespace", "", "team-b"), &ns, &err));
        doc = lg_resource_to_json(ns);
        assert_null(json_object_get(json_object_get(doc, "metadata"), "namespace"));
        json_decref(doc);

        _cleanup_resource_ struct lg_resource *g = NULL;
        OK(lg_store_get(f->st, LG_KEY("App", "default", "shop"), &g, &err));
        assert_string_equal(g->uid, a->uid);
        assert_true(json_equal(g->spec, spec));
        assert_true(json_equal(g->labels, labels));
        FAILS(lg_store_get(f->st, LG_KEY("App", "default", "nope"), NULL, &err), ENOENT);
        assert_non_null(strstr(err.msg, "App default/nope not found"));

        struct lg_resource_list l;
        OK(lg_store_list(f->st, "App", NULL, NULL, &l, &err));
        assert_int_equal(l.n, 2);
        assert_string_equal(l.items[0]->namespace, "default");
        assert_string_equal(l.items[1]->namespace, "team-b");
        assert_int_equal(l.resource_version, 4);
        lg_resource_list_free(&l);
        OK(lg_store_list(f->st, "App", "team-b", NULL, &l, &err));
        assert_int_equal(l.n, 1);
        lg_resource_list_free(&l);
        OK(lg_store_list(f->st, "App", "", NULL, &l, &err));
        assert_int_equal(l.n, 0);
        lg_resource_list_free(&l);
        OK(lg_store_list(f->st, "Namespace", "", NULL, &l, &err));
        assert_int_equal(l.n, 1);
        lg_resource_list_free(&l);

        /* A spec change bumps generation and resource version. */
        json_t *spec2 = J("{\"runtime\":\"python3\",\"memory\":536870912,\"env\":{\"A\":\"1\"}}");
        _cleanup_resource_ struct lg_resource *u = NULL;
        assert_int_equal(lg_store_update(f->st, LG_KEY("App", "default", "shop"), 1, NULL, spec2, &u, &err), 1);
        assert_int_equal(u->generation, 2);
        assert_int_equal(u->resource_version, 5);
        assert_true(json_equal(u->labels, labels));
        assert_string_equal(u->uid, a->uid);
        assert_int_equal(u->created_at, a->created_at);
        /* Same spec (other key order): nothing written. */
        json_t *spec2b = J("{\"env\":{\"A\":\"1\"},\"memory\":536870912,\"runtime\":\"python3\"}");
        lg_resource_free(u);
        u = NULL;
        assert_int_equal(lg_store_update(f->st, LG_KEY("App", "default", "shop"), 0, NULL, spec2b, &u, &err), 0);
        assert_int_equal(u->resource_version, 5);
        assert_int_equal(current_rv(f->st), 5);
        /* Labels only: new resource version, same generation. */
        json_t *labels2 = J("{\"tier\":\"api\"}");
        lg_resource_free(u);
        u = NULL;
        assert_int_equal(lg_store_update(f->st, LG_KEY("App", "default", "shop"), 5, labels2, NULL, &u, &err), 1);
        assert_int_equal(u->generation, 2);
        assert_int_equal(u->resource_version, 6);
        assert_json(u->labels, "{\"tier\":\"api\"}");

        /* Status: new resource version, same generation, spec untouched. */
        json_t *status = J("{\"phase\":\"Ready\",\"instances\":3}");
        lg_resource_free(u);
        u = NULL;
        assert_int_equal(lg_store_update_status(f->st, LG_KEY("App", "default", "shop"), 6, status, &u, &err), 1);
        assert_int_equal(u->generation, 2);
        assert_int_equal(u->resource_version, 7);
        assert_true(json_equal(u->status, status));
        assert_true(json_equal(u->spec, spec2));
        assert_int_equal(lg_store_update_status(f->st, LG_KEY("App", "default", "shop"), 0, status, NULL, &err), 0);
        FAILS(lg_store_update(f->st, LG_KEY("App", "default", "gone"), 0, NULL, spec, NULL, &err), ENOENT);

        /* Delete hands back the last state at the deletion's version. */
        _cleanup_resource_ struct lg_resource *d = NULL;
        OK(lg_store_delete(f->st, LG_KEY("App", "default", "shop"), 0, &d, &err));
        assert_int_equal(d->resource_version, 8);
        assert_true(json_equal(d->status, status));
        FAILS(lg_store_get(f->st, LG_KEY("App", "default", "shop"), NULL, &err), ENOENT);
        FAILS(lg_store_delete(f->st, LG_KEY("App", "default", "shop"), 0, NULL, &err), ENOENT);
        _cleanup_resource_ struct lg_resource *again = NULL;
        OK(lg_store_create(f->st, LG_KEY("App", "default", "shop"), NULL, spec, NULL, &again, &err));
        assert_string_not_equal(again->uid, a->uid);
        assert_int_equal(again->generation, 1);
        assert_int_equal(again->resource_version, 9);

        /* Everything survives a reopen. */
        lg_store_close(f->st);
        assert_int_equal(fx_open(f, NULL), 0);
        assert_int_equal(current_rv(f->st), 9);
        _cleanup_resource_ struct lg_resource *r2 = NULL;
        OK(lg_store_get(f->st, LG_KEY("App", "default", "shop"), &r2, &err));
        assert_string_equal(r2->uid, again->uid);
        OK(lg_store_check(f->st, &err));

        json_decref(spec);
        json_decref(spec2);
        json_decref(spec2b);
        json_decref(labels);
        json_decref(labels2);
        json_decref(status);
}

static void test_conflicts(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        json_t *s1 = J("{\"v\":1}"), *s2 = J("{\"v\":2}"), *s3 = J("{\"v\":3}");
        _cleanup_resource_ struct lg_resource *a = NULL;
        OK(lg_store_create(f->st, LG_KEY("App", "ns", "x"), NULL, s1, NULL, &a, &err));
        int64_t seen = a->resource_version;

        /* Two writers read the same version; the second one loses. */
        assert_int_equal(lg_store_update(f->st, LG_KEY("App", "ns", "x"), seen, NULL, s2, NULL, &err), 1);
        FAILS(lg_store_update(f->st, LG_KEY("App", "ns", "x"), seen, NULL, s3, NULL, &err), ESTALE);
        assert_non_null(strstr(err.msg, "conflict"));
        FAILS(lg_store_update_status(f->st, LG_KEY("App", "ns", "x"), seen, s3, NULL, &err), ESTALE);
        FAILS(lg_store_delete(f->st, LG_KEY("App", "ns", "x"), seen, NULL, &err), ESTALE);
        _cleanup_resource_ struct lg_resource *g = NULL;
        OK(lg_store_get(f->st, LG_KEY("App", "ns", "x"), &g, &err));
        assert_true(json_equal(g->spec, s2));
        assert_int_equal(g->generation, 2);
        /* A failed conditional write leaves no trace. */
        assert_int_equal(current_rv(f->st), g->resource_version);
        /* With the fresh version it works. */
        assert_int_equal(lg_store_update(f->st, LG_KEY("App", "ns", "x"), g->resource_version, NULL, s3, NULL, &err), 1);
        OK(lg_store_delete(f->st, LG_KEY("App", "ns", "x"), g->resource_version + 1, NULL, &err));
        json_decref(s1);
        json_decref(s2);
        json_decref(s3);
}

static void test_validation(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        static const char *const hostile[] = {
                "x'; DROP TABLE resources;--", "../../etc/passwd", "a\"b", "A", "", "a b", "a\nb",
                "\xff\xfe", "%s%s%n", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234",
        };
        for (size_t i = 0; i < ARRAY_SIZE(hostile); i++) {
                FAILS(lg_store_create(f->st, LG_KEY("App", "default", hostile[i]), NULL, NULL, NULL, NULL, &err), EINVAL);
                /* The message never echoes the hostile name. */
                if (hostile[i][0])
                        assert_null(strstr(err.msg, hostile[i]));
                if (hostile[i][0]) /* "" is the cluster scope */
                        FAILS(lg_store_create(f->st, LG_KEY("App", hostile[i], "x"), NULL, NULL, NULL, NULL, &err), EINVAL);
                if (!lg_store_valid_kind(hostile[i]))
                        FAILS(lg_store_get(f->st, LG_KEY(hostile[i], "default", "x"), NULL, &err), EINVAL);
                struct lg_resource_list l;
                FAILS(lg_store_list(f->st, "App", hostile[i][0] ? hostile[i] : "-", NULL, &l, &err), EINVAL);
        }
        FAILS(lg_store_get(f->st, NULL, NULL, &err), EINVAL);
        FAILS(lg_store_get(f->st, LG_KEY("App", NULL, "x"), NULL, &err), EINVAL);
        FAILS(lg_store_get(f->st, LG_KEY("App", "a", NULL), NULL, &err), EINVAL);

        json_t *arr = J("[1,2]");
        FAILS(lg_store_create(f->st, LG_KEY("App", "a", "x"), NULL, arr, NULL, NULL, &err), EINVAL);
        FAILS(lg_store_create(f->st, LG_KEY("App", "a", "x"), NULL, NULL, arr, NULL, &err), EINVAL);
        FAILS(lg_store_create(f->st, LG_KEY("App", "a", "x"), arr, NULL, NULL, NULL, &err), EINVAL);
        static const char *const bad_labels[] = {
                "{\"a\":1}", "{\"a b\":\"x\"}", "{\"a\":\"x y\"}", "{\"\":\"x\"}",
                "{\"a\":\"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234\"}",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad_labels); i++) {
                json_t *l = J(bad_labels[i]);
                FAILS(lg_store_create(f->st, LG_KEY("App", "a", "x"), l, NULL, NULL, NULL, &err), EINVAL);
                json_decref(l);
        }
        json_t *nul = json_object();
        json_object_set_new(nul, "a", json_stringn("x\0y", 3));
        FAILS(lg_store_create(f->st, LG_KEY("App", "a", "x"), nul, NULL, NULL, NULL, &err), EINVAL);
        json_decref(nul);
        json_t *many = json_object();
        for (int i = 0; i <= LG_STORE_LABELS_MAX; i++) {
                char k[16];
                snprintf(k, sizeof(k), "k%d", i);
                json_object_set_new(many, k, json_string("v"));
        }
        FAILS(lg_store_create(f->st, LG_KEY("App", "a", "x"), many, NULL, NULL, NULL, &err), EINVAL);
        json_decref(many);

        /* Over the size limit: 413-style error, nothing written. */
        char *bigs = malloc(LG_STORE_DOC_MAX + 1);
        memset(bigs, 'x', LG_STORE_DOC_MAX);
        bigs[LG_STORE_DOC_MAX] = '\0';
        json_t *big = json_pack("{s:s}", "blob", bigs);
        FAILS(lg_store_create(f->st, LG_KEY("App", "a", "x"), NULL, big, NULL, NULL, &err), E2BIG);
        FAILS(lg_store_get(f->st, LG_KEY("App", "a", "x"), NULL, &err), ENOENT);
        assert_int_equal(current_rv(f->st), 0);
        free(bigs);
        json_decref(big);

        /* Hostile content inside documents is data: stored and read back verbatim. */
        json_t *evil = json_pack("{s:s, s:s, s:s%}", "sql", "'); DROP TABLE resources; --",
                                 "quote", "\"'`\\", "nul", "a\0b", (size_t) 3);
        _cleanup_resource_ struct lg_resource *r = NULL;
        OK(lg_store_create(f->st, LG_KEY("App", "a", "evil"), NULL, evil, evil, NULL, &err));
        OK(lg_store_get(f->st, LG_KEY("App", "a", "evil"), &r, &err));
        assert_true(json_equal(r->spec, evil));
        assert_true(json_equal(r->status, evil));
        struct lg_event_list ev;
        OK(lg_store_events_since(f->st, 0, "App", NULL, 0, &ev, &err));
        assert_int_equal(ev.n, 1);
        assert_true(json_equal(ev.items[0].object->spec, evil));
        lg_event_list_free(&ev);
        json_decref(evil);
        json_decref(arr);
        OK(lg_store_check(f->st, &err));
}

static void test_apply(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        json_t *spec = J("{\"image\":\"nginx\"}"), *spec2 = J("{\"image\":\"caddy\"}");
        json_t *labels = J("{\"a\":\"1\"}");
        _cleanup_resource_ struct lg_resource *r1 = NULL, *r2 = NULL, *r3 = NULL, *r4 = NULL;
        assert_int_equal(lg_store_apply(f->st, LG_KEY("App", "d", "w"), labels, spec, &r1, &err), LG_STORE_CREATED);
        assert_int_equal(lg_store_apply(f->st, LG_KEY("App", "d", "w"), labels, spec, &r2, &err), LG_STORE_UNCHANGED);
        assert_int_equal(r2->resource_version, r1->resource_version);
        assert_string_equal(r2->uid, r1->uid);
        /* labels NULL: don't care. */
        assert_int_equal(lg_store_apply(f->st, LG_KEY("App", "d", "w"), NULL, spec, NULL, &err), LG_STORE_UNCHANGED);
        assert_int_equal(lg_store_apply(f->st, LG_KEY("App", "d", "w"), labels, spec2, &r3, &err), LG_STORE_UPDATED);
        assert_int_equal(r3->generation, 2);
        assert_int_equal(r3->resource_version, r1->resource_version + 1);
        json_t *labels2 = J("{\"a\":\"2\"}");
        assert_int_equal(lg_store_apply(f->st, LG_KEY("App", "d", "w"), labels2, spec2, &r4, &err), LG_STORE_UPDATED);
        assert_int_equal(r4->generation, 2);
        assert_int_equal(current_rv(f->st), 3);
        json_decref(spec);
        json_decref(spec2);
        json_decref(labels);
        json_decref(labels2);
}

static void test_list_selector(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        static const char *const objs[][2] = {
                {"a", "{\"env\":\"prod\",\"tier\":\"web\"}"},
                {"b", "{\"env\":\"dev\",\"tier\":\"web\"}"},
                {"c", "{\"env\":\"prod\"}"},
                {"d", "{}"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(objs); i++) {
                json_t *l = J(objs[i][1]);
                OK(lg_store_create(f->st, LG_KEY("App", "n", objs[i][0]), l, NULL, NULL, NULL, &err));
                json_decref(l);
        }
        static const struct {
                const char *sel;
                const char *want;
        } cases[] = {
                {"", "abcd"},
                {"env=prod", "ac"},
                {"env==prod,tier=web", "a"},
                {"env!=prod", "bd"},
                {"tier", "ab"},
                {"!tier", "cd"},
                {"env in (dev, prod)", "abc"},
                {"env notin (prod)", "bd"},
                {"env=prod,!tier", "c"},
                {"env=staging", ""},
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                _cleanup_selector_ struct lg_selector *sel = NULL;
                OK(lg_selector_parse(cases[i].sel, &sel, &err));
                struct lg_resource_list l;
                OK(lg_store_list(f->st, "App", "n", sel, &l, &err));
                char got[8] = "";
                for (size_t j = 0; j < l.n && j + 1 < sizeof(got); j++)
                        got[j] = l.items[j]->name[0];
                if (strcmp(got, cases[i].want) != 0)
                        fail_msg("selector `%s`: got %s, want %s", cases[i].sel, got, cases[i].want);
                lg_resource_list_free(&l);
        }
}

/* ---- events --------------------------------------------------------------- */

static void test_events(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        json_t *s1 = J("{\"v\":1}"), *s2 = J("{\"v\":2}");
        OK(lg_store_create(f->st, LG_KEY("App", "a", "x"), NULL, s1, NULL, NULL, &err));     /* 1 */
        OK(lg_store_create(f->st, LG_KEY("App", "b", "y"), NULL, s1, NULL, NULL, &err));     /* 2 */
        OK(lg_store_create(f->st, LG_KEY("PoolGroup", "", "p"), NULL, s1, NULL, NULL, &err)); /* 3 */
        OK(lg_store_update(f->st, LG_KEY("App", "a", "x"), 0, NULL, s2, NULL, &err));        /* 4 */
        OK(lg_store_delete(f->st, LG_KEY("App", "a", "x"), 0, NULL, &err));                  /* 5 */

        struct lg_event_list ev;
        OK(lg_store_events_since(f->st, 0, NULL, NULL, 0, &ev, &err));
        assert_int_equal(ev.n, 5);
        assert_int_equal(ev.resource_version, 5);
        for (size_t i = 0; i < ev.n; i++)
                assert_int_equal(ev.items[i].resource_version, (int64_t) i + 1);
        lg_event_list_free(&ev);

        OK(lg_store_events_since(f->st, 0, "App", "a", 0, &ev, &err));
        assert_int_equal(ev.n, 3);
        assert_int_equal(ev.items[0].type, LG_EVENT_ADDED);
        assert_int_equal(ev.items[1].type, LG_EVENT_MODIFIED);
        assert_int_equal(ev.items[1].object->generation, 2);
        assert_true(json_equal(ev.items[1].object->spec, s2));
        assert_int_equal(ev.items[2].type, LG_EVENT_DELETED);
        assert_int_equal(ev.items[2].resource_version, 5);
        assert_int_equal(ev.items[2].object->resource_version, 5);
        assert_true(json_equal(ev.items[2].object->spec, s2));
        assert_string_equal(lg_event_type_name(ev.items[2].type), "DELETED");
        lg_event_list_free(&ev);

        OK(lg_store_events_since(f->st, 1, "App", NULL, 0, &ev, &err));
        assert_int_equal(ev.n, 3); /* 2, 4, 5 */
        assert_int_equal(ev.items[0].resource_version, 2);
        lg_event_list_free(&ev);
        OK(lg_store_events_since(f->st, 0, NULL, "", 0, &ev, &err));
        assert_int_equal(ev.n, 1);
        assert_string_equal(ev.items[0].object->kind, "PoolGroup");
        lg_event_list_free(&ev);

        /* Paging with a limit: the bookmark is the last event handed out. */
        OK(lg_store_events_since(f->st, 0, "App", NULL, 2, &ev, &err));
        assert_int_equal(ev.n, 2);
        assert_int_equal(ev.resource_version, 2);
        lg_event_list_free(&ev);
        /* Nothing matches: the bookmark still moves to the current version. */
        OK(lg_store_events_since(f->st, 3, "PoolGroup", NULL, 0, &ev, &err));
        assert_int_equal(ev.n, 0);
        assert_int_equal(ev.resource_version, 5);
        lg_event_list_free(&ev);
        OK(lg_store_events_since(f->st, 99, NULL, NULL, 0, &ev, &err));
        assert_int_equal(ev.n, 0);
        assert_int_equal(ev.resource_version, 99);
        lg_event_list_free(&ev);
        FAILS(lg_store_events_since(f->st, -1, NULL, NULL, 0, &ev, &err), EINVAL);
        FAILS(lg_store_events_since(f->st, 0, "app", NULL, 0, &ev, &err), EINVAL);

        /* A no-op write makes no event. */
        assert_int_equal(lg_store_update(f->st, LG_KEY("App", "b", "y"), 0, NULL, s1, NULL, &err), 0);
        OK(lg_store_events_since(f->st, 5, NULL, NULL, 0, &ev, &err));
        assert_int_equal(ev.n, 0);
        lg_event_list_free(&ev);
        json_decref(s1);
        json_decref(s2);
}

static void test_events_trim(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_store_close(f->st);
        assert_int_equal(fx_open(f, &(struct lg_store_options){.events_keep = 5}), 0);

        struct lg_event_list ev;
        for (int i = 0; i < 12; i++) {
                json_t *s = json_pack("{s:i}", "i", i);
                OK(lg_store_apply(f->st, LG_KEY("App", "a", i % 2 ? "odd" : "even"), NULL, s, NULL, &err));
                json_decref(s);
        }
        /* Kept: 8..12. A watcher at 7 or later is fine, before that it is gone. */
        OK(lg_store_events_since(f->st, 7, NULL, NULL, 0, &ev, &err));
        assert_int_equal(ev.n, 5);
        assert_int_equal(ev.items[0].resource_version, 8);
        lg_event_list_free(&ev);
        FAILS(lg_store_events_since(f->st, 6, NULL, NULL, 0, &ev, &err), EIDRM);
        assert_non_null(strstr(err.msg, "too old"));
        assert_int_equal(ev.n, 0);
        FAILS(lg_store_events_since(f->st, 0, "App", "a", 0, &ev, &err), EIDRM);

        /* The floor persists across a reopen with a larger log. */
        lg_store_close(f->st);
        assert_int_equal(fx_open(f, &(struct lg_store_options){.events_keep = 100}), 0);
        FAILS(lg_store_events_since(f->st, 6, NULL, NULL, 0, &ev, &err), EIDRM);
        OK(lg_store_events_since(f->st, 7, NULL, NULL, 0, &ev, &err));
        assert_int_equal(ev.n, 5);
        lg_event_list_free(&ev);

        /* The table itself holds no more than events_keep rows. */
        sqlite3 *db;
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), min(resource_version) FROM events", -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(s, 0), 5);
        assert_int_equal(sqlite3_column_int(s, 1), 8);
        sqlite3_finalize(s);
        sqlite3_close(db);
}

/* ---- transactions --------------------------------------------------------- */

static int64_t hook_rv;
static int hook_calls;
static void hook(void *userdata, int64_t rv) {
        (*(int *) userdata)++;
        hook_rv = rv;
}

static void test_transactions(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        hook_calls = 0;
        lg_store_set_commit_hook(f->st, hook, &hook_calls);

        OK(lg_store_create(f->st, LG_KEY("App", "a", "pre"), NULL, NULL, NULL, NULL, &err));
        assert_int_equal(hook_calls, 1);
        assert_int_equal(hook_rv, 1);

        /* Rolled back: nothing of it stays, not even resource versions. */
        OK(lg_store_begin(f->st, &err));
        assert_true(lg_store_in_transaction(f->st));
        FAILS(lg_store_begin(f->st, &err), EBUSY);
        OK(lg_store_create(f->st, LG_KEY("App", "a", "x"), NULL, NULL, NULL, NULL, &err));
        OK(lg_store_create(f->st, LG_KEY("App", "a", "y"), NULL, NULL, NULL, NULL, &err));
        OK(lg_store_get(f->st, LG_KEY("App", "a", "x"), NULL, &err)); /* visible inside */
        lg_store_rollback(f->st);
        assert_false(lg_store_in_transaction(f->st));
        FAILS(lg_store_get(f->st, LG_KEY("App", "a", "x"), NULL, &err), ENOENT);
        assert_int_equal(current_rv(f->st), 1);
        assert_int_equal(hook_calls, 1);

        /* A failing call inside undoes only itself. */
        OK(lg_store_begin(f->st, &err));
        OK(lg_store_create(f->st, LG_KEY("App", "a", "x"), NULL, NULL, NULL, NULL, &err));
        FAILS(lg_store_create(f->st, LG_KEY("App", "a", "pre"), NULL, NULL, NULL, NULL, &err), EEXIST);
        FAILS(lg_store_update(f->st, LG_KEY("App", "a", "x"), 99, NULL, NULL, NULL, &err), ESTALE);
        OK(lg_store_create(f->st, LG_KEY("App", "a", "y"), NULL, NULL, NULL, NULL, &err));
        OK(lg_store_commit(f->st, &err));
        assert_int_equal(hook_calls, 2);
        assert_int_equal(hook_rv, 3);
        assert_int_equal(current_rv(f->st), 3);
        struct lg_event_list ev;
        OK(lg_store_events_since(f->st, 1, NULL, NULL, 0, &ev, &err));
        assert_int_equal(ev.n, 2);
        assert_string_equal(ev.items[0].object->name, "x");
        assert_string_equal(ev.items[1].object->name, "y");
        lg_event_list_free(&ev);
        FAILS(lg_store_commit(f->st, &err), EINVAL);

        /* The scope guard rolls back on an early return. */
        {
                OK(lg_store_begin(f->st, &err));
                _cleanup_store_tx_ lg_store *tx = f->st;
                OK(lg_store_create(f->st, LG_KEY("App", "a", "z"), NULL, NULL, NULL, NULL, &err));
        }
        assert_false(lg_store_in_transaction(f->st));
        FAILS(lg_store_get(f->st, LG_KEY("App", "a", "z"), NULL, &err), ENOENT);
        {
                OK(lg_store_begin(f->st, &err));
                _cleanup_store_tx_ lg_store *tx = f->st;
                OK(lg_store_create(f->st, LG_KEY("App", "a", "z"), NULL, NULL, NULL, NULL, &err));
                OK(lg_store_commit(TAKE_PTR(tx), &err));
        }
        OK(lg_store_get(f->st, LG_KEY("App", "a", "z"), NULL, &err));
        assert_int_equal(hook_calls, 3);

        /* A transaction without writes fires no hook; close rolls back. */
        OK(lg_store_begin(f->st, &err));
        OK(lg_store_commit(f->st, &err));
        assert_int_equal(hook_calls, 3);
        OK(lg_store_begin(f->st, &err));
        OK(lg_store_create(f->st, LG_KEY("App", "a", "lost"), NULL, NULL, NULL, NULL, &err));
        lg_store_close(f->st);
        assert_int_equal(fx_open(f, NULL), 0);
        FAILS(lg_store_get(f->st, LG_KEY("App", "a", "lost"), NULL, &err), ENOENT);
        OK(lg_store_check(f->st, &err));
}

/* Two handles on one file, as legiond and an offline tool would be: the
 * writer lock is waited for (busy_timeout) and then reported as -EBUSY. */
static void test_locking(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_store *other;
        OK(lg_store_open(f->path, &(struct lg_store_options){.busy_timeout_ms = 100}, &other, &err));
        OK(lg_store_begin(f->st, &err));
        OK(lg_store_create(f->st, LG_KEY("App", "a", "x"), NULL, NULL, NULL, NULL, &err));
        uint64_t t0 = lg_now_ns();
        FAILS(lg_store_create(other, LG_KEY("App", "a", "y"), NULL, NULL, NULL, NULL, &err), EBUSY);
        assert_true(lg_now_ns() - t0 >= 90 * 1000000ull);
        /* Readers are not blocked by the writer (WAL) and see the last commit. */
        FAILS(lg_store_get(other, LG_KEY("App", "a", "x"), NULL, &err), ENOENT);
        OK(lg_store_commit(f->st, &err));
        OK(lg_store_get(other, LG_KEY("App", "a", "x"), NULL, &err));
        OK(lg_store_create(other, LG_KEY("App", "a", "y"), NULL, NULL, NULL, NULL, &err));
        assert_int_equal(current_rv(f->st), 2);
        lg_store_close(other);
}

/* ---- revisions ------------------------------------------------------------ */

static void test_revisions(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        json_t *s1 = J("{\"code\":\"sha256:aa\"}"), *s2 = J("{\"code\":\"sha256:bb\"}");
        int64_t n = -1;
        FAILS(lg_store_revision_add(f->st, LG_KEY("App", "a", "web"), s1, &n, &err), ENOENT);
        OK(lg_store_create(f->st, LG_KEY("App", "a", "web"), NULL, s1, NULL, NULL, &err));
        FAILS(lg_store_revision_get(f->st, LG_KEY("App", "a", "web"), 0, NULL, &err), ENOENT);
        assert_int_equal(lg_store_revision_add(f->st, LG_KEY("App", "a", "web"), s1, &n, &err), 1);
        assert_int_equal(n, 1);
        assert_int_equal(lg_store_revision_add(f->st, LG_KEY("App", "a", "web"), s1, &n, &err), 0);
        assert_int_equal(n, 1);
        assert_int_equal(lg_store_revision_add(f->st, LG_KEY("App", "a", "web"), s2, &n, &err), 1);
        assert_int_equal(n, 2);
        /* Back to an older spec is a new revision: only the latest counts. */
        assert_int_equal(lg_store_revision_add(f->st, LG_KEY("App", "a", "web"), s1, &n, &err), 1);
        assert_int_equal(n, 3);
        /* Revisions are not resource writes. */
        assert_int_equal(current_rv(f->st), 1);

        _cleanup_revision_ struct lg_revision *latest = NULL, *second = NULL;
        OK(lg_store_revision_get(f->st, LG_KEY("App", "a", "web"), 0, &latest, &err));
        assert_int_equal(latest->number, 3);
        assert_true(json_equal(latest->spec, s1));
        OK(lg_store_revision_get(f->st, LG_KEY("App", "a", "web"), 2, &second, &err));
        assert_true(json_equal(second->spec, s2));
        FAILS(lg_store_revision_get(f->st, LG_KEY("App", "a", "web"), 7, NULL, &err), ENOENT);
        FAILS(lg_store_revision_get(f->st, LG_KEY("App", "a", "web"), -1, NULL, &err), EINVAL);

        struct lg_revision_list l;
        OK(lg_store_revision_list(f->st, LG_KEY("App", "a", "web"), &l, &err));
        assert_int_equal(l.n, 3);
        for (size_t i = 0; i < l.n; i++)
                assert_int_equal(l.items[i].number, (int64_t) i + 1);
        lg_revision_list_free(&l);
        FAILS(lg_store_revision_list(f->st, LG_KEY("App", "a", "nope"), &l, &err), ENOENT);

        assert_int_equal(lg_store_revision_prune(f->st, LG_KEY("App", "a", "web"), 2, &err), 1);
        assert_int_equal(lg_store_revision_prune(f->st, LG_KEY("App", "a", "web"), 2, &err), 0);
        FAILS(lg_store_revision_prune(f->st, LG_KEY("App", "a", "web"), 0, &err), EINVAL);
        OK(lg_store_revision_list(f->st, LG_KEY("App", "a", "web"), &l, &err));
        assert_int_equal(l.n, 2);
        assert_int_equal(l.items[0].number, 2);
        lg_revision_list_free(&l);
        /* Numbers keep counting after a prune. */
        assert_int_equal(lg_store_revision_add(f->st, LG_KEY("App", "a", "web"), s2, &n, &err), 1);
        assert_int_equal(n, 4);

        /* Deleting the object deletes its revisions; a new object starts at 1. */
        OK(lg_store_delete(f->st, LG_KEY("App", "a", "web"), 0, NULL, &err));
        OK(lg_store_create(f->st, LG_KEY("App", "a", "web"), NULL, s1, NULL, NULL, &err));
        OK(lg_store_revision_list(f->st, LG_KEY("App", "a", "web"), &l, &err));
        assert_int_equal(l.n, 0);
        lg_revision_list_free(&l);
        assert_int_equal(lg_store_revision_add(f->st, LG_KEY("App", "a", "web"), s2, &n, &err), 1);
        assert_int_equal(n, 1);
        OK(lg_store_check(f->st, &err));
        json_decref(s1);
        json_decref(s2);
}

/* ---- tokens --------------------------------------------------------------- */

/* Whether needle occurs in the file at path (missing file: no). */
static bool file_contains(const char *path, const char *needle) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        struct stat sb;
        assert_int_equal(fstat(fd, &sb), 0);
        char *buf = malloc((size_t) sb.st_size + 1);
        assert_int_equal(lg_pread_all(fd, buf, (size_t) sb.st_size, 0), sb.st_size);
        bool found = memmem(buf, (size_t) sb.st_size, needle, strlen(needle)) != NULL;
        free(buf);
        return found;
}

static bool store_files_contain(struct fx *f, const char *needle) {
        char wal[160];
        snprintf(wal, sizeof(wal), "%s-wal", f->path);
        return file_contains(f->path, needle) || file_contains(wal, needle);
}

static void test_tokens(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        char secret[LG_TOKEN_SECRET_SIZE], admin[LG_TOKEN_SECRET_SIZE];
        struct lg_token t, ta, found;
        OK(lg_store_token_create(f->st, "team-a", "ci deploys", 0, &t, secret, &err));
        OK(lg_store_token_create(f->st, LG_TOKEN_ADMIN, NULL, 0, &ta, admin, &err));
        assert_int_equal(strlen(secret), LG_TOKEN_SECRET_SIZE - 1);
        assert_memory_equal(secret, "lgn_", 4);
        assert_int_equal(strlen(t.id), 16);
        assert_string_not_equal(secret, admin);

        OK(lg_store_token_lookup(f->st, secret, &found, &err));
        assert_string_equal(found.id, t.id);
        assert_string_equal(found.namespace, "team-a");
        assert_string_equal(found.description, "ci deploys");
        OK(lg_store_token_lookup(f->st, admin, &found, &err));
        assert_string_equal(found.namespace, "*");
        char wrong[LG_TOKEN_SECRET_SIZE];
        strcpy(wrong, secret);
        wrong[10] = wrong[10] == 'a' ? 'b' : 'a';
        FAILS(lg_store_token_lookup(f->st, wrong, NULL, &err), ENOENT);
        FAILS(lg_store_token_lookup(f->st, "", NULL, &err), ENOENT);
        FAILS(lg_store_token_lookup(f->st, "' OR 1=1 --", NULL, &err), ENOENT);
        FAILS(lg_store_token_lookup(f->st, NULL, NULL, &err), ENOENT);
        char huge[4096];
        memset(huge, 'a', sizeof(huge) - 1);
        huge[sizeof(huge) - 1] = '\0';
        FAILS(lg_store_token_lookup(f->st, huge, NULL, &err), ENOENT);

        /* Only the hash is stored: not the secret, not its random part. */
        char hash_hex[65];
        {
                unsigned char md[32];
                unsigned int len;
                assert_true(EVP_Digest(secret, strlen(secret), md, &len, EVP_sha256(), NULL));
                for (int i = 0; i < 32; i++)
                        snprintf(hash_hex + 2 * i, 3, "%02x", md[i]);
        }
        assert_true(store_files_contain(f, hash_hex)); /* the probe works */
        assert_false(store_files_contain(f, secret));
        assert_false(store_files_contain(f, secret + 4));
        assert_false(store_files_contain(f, admin + 4));
        lg_store_close(f->st); /* checkpoint the WAL into the main file */
        f->st = NULL;
        assert_true(file_contains(f->path, hash_hex));
        assert_false(file_contains(f->path, secret + 4));
        assert_int_equal(fx_open(f, NULL), 0);

        struct lg_token_list l;
        OK(lg_store_token_list(f->st, NULL, &l, &err));
        assert_int_equal(l.n, 2);
        lg_token_list_free(&l);
        OK(lg_store_token_list(f->st, "team-a", &l, &err));
        assert_int_equal(l.n, 1);
        assert_string_equal(l.items[0].id, t.id);
        lg_token_list_free(&l);
        OK(lg_store_token_list(f->st, "*", &l, &err));
        assert_int_equal(l.n, 1);
        lg_token_list_free(&l);

        OK(lg_store_token_delete(f->st, t.id, &err));
        FAILS(lg_store_token_lookup(f->st, secret, NULL, &err), ENOENT);
        FAILS(lg_store_token_delete(f->st, t.id, &err), ENOENT);
        FAILS(lg_store_token_delete(f->st, "x' OR '1'='1", &err), EINVAL);
        OK(lg_store_token_lookup(f->st, admin, NULL, &err));

        /* Expiry. */
        OK(lg_store_token_create(f->st, "team-a", "old", lg_store_now() - 1, NULL, secret, &err));
        FAILS(lg_store_token_lookup(f->st, secret, NULL, &err), EKEYEXPIRED);
        OK(lg_store_token_create(f->st, "team-a", "new", lg_store_now() + 3600, NULL, secret, &err));
        OK(lg_store_token_lookup(f->st, secret, NULL, &err));

        FAILS(lg_store_token_create(f->st, "Team A", NULL, 0, NULL, secret, &err), EINVAL);
        FAILS(lg_store_token_create(f->st, "**", NULL, 0, NULL, secret, &err), EINVAL);
        FAILS(lg_store_token_create(f->st, NULL, NULL, 0, NULL, secret, &err), EINVAL);
        FAILS(lg_store_token_create(f->st, "a", "line\nbreak", 0, NULL, secret, &err), EINVAL);
        FAILS(lg_store_token_create(f->st, "a", NULL, -5, NULL, secret, &err), EINVAL);
        explicit_bzero(secret, sizeof(secret));
        explicit_bzero(admin, sizeof(admin));
}

/* ---- blobs ---------------------------------------------------------------- */

static void test_blobs(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        const char *d1 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        const char *d2 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        struct lg_blob b;
        assert_int_equal(lg_store_blob_put(f->st, d1, 0, "application/zip", &b, &err), 1);
        assert_int_equal(b.refs, 0);
        assert_int_equal(lg_store_blob_put(f->st, d1, 0, "application/zip", &b, &err), 0);
        FAILS(lg_store_blob_put(f->st, d1, 5, "application/zip", NULL, &err), EINVAL);
        assert_int_equal(lg_store_blob_put(f->st, d2, 5, "application/gzip", NULL, &err), 1);
        FAILS(lg_store_blob_put(f->st, "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", 0, "x", NULL, &err), EINVAL);
        FAILS(lg_store_blob_put(f->st, "abc", 0, "x", NULL, &err), EINVAL);
        FAILS(lg_store_blob_put(f->st, d1, 0, "", NULL, &err), EINVAL);
        FAILS(lg_store_blob_put(f->st, d1, UINT64_MAX, "x", NULL, &err), EINVAL);
        FAILS(lg_store_blob_get(f->st, "0000000000000000000000000000000000000000000000000000000000000000", NULL, &err), ENOENT);

        FAILS(lg_store_blob_ref(f->st, d1, LG_KEY("App", "a", "web"), &err), ENOENT);
        OK(lg_store_create(f->st, LG_KEY("App", "a", "web"), NULL, NULL, NULL, NULL, &err));
        OK(lg_store_create(f->st, LG_KEY("App", "a", "api"), NULL, NULL, NULL, NULL, &err));
        assert_int_equal(lg_store_blob_ref(f->st, d1, LG_KEY("App", "a", "web"), &err), 1);
        assert_int_equal(lg_store_blob_ref(f->st, d1, LG_KEY("App", "a", "web"), &err), 0);
        assert_int_equal(lg_store_blob_ref(f->st, d1, LG_KEY("App", "a", "api"), &err), 1);
        OK(lg_store_blob_get(f->st, d1, &b, &err));
        assert_int_equal(b.refs, 2);
        assert_string_equal(b.media_type, "application/zip");

        struct lg_resource_ref_list refs;
        OK(lg_store_blob_referrers(f->st, d1, &refs, &err));
        assert_int_equal(refs.n, 2);
        assert_string_equal(refs.items[0].name, "api");
        assert_string_equal(refs.items[1].name, "web");
        lg_resource_ref_list_free(&refs);

        struct lg_blob_list l;
        OK(lg_store_blob_list(f->st, NULL, &l, &err));
        assert_int_equal(l.n, 2);
        assert_string_equal(l.items[0].digest, d2); /* by digest */
        lg_blob_list_free(&l);
        OK(lg_store_blob_list(f->st, &(struct lg_blob_filter){.unreferenced = true}, &l, &err));
        assert_int_equal(l.n, 1);
        assert_string_equal(l.items[0].digest, d2);
        lg_blob_list_free(&l);
        OK(lg_store_blob_list(f->st, &(struct lg_blob_filter){.created_before = 1}, &l, &err));
        assert_int_equal(l.n, 0);
        lg_blob_list_free(&l);

        FAILS(lg_store_blob_delete(f->st, d1, &err), EBUSY);
        OK(lg_store_blob_unref(f->st, d1, LG_KEY("App", "a", "api"), &err));
        FAILS(lg_store_blob_unref(f->st, d1, LG_KEY("App", "a", "api"), &err), ENOENT);
        /* The last reference goes with its object. */
        OK(lg_store_delete(f->st, LG_KEY("App", "a", "web"), 0, NULL, &err));
        OK(lg_store_blob_get(f->st, d1, &b, &err));
        assert_int_equal(b.refs, 0);
        OK(lg_store_blob_delete(f->st, d1, &err));
        FAILS(lg_store_blob_delete(f->st, d1, &err), ENOENT);
        OK(lg_store_check(f->st, &err));
}

/* ---- migrations and files ------------------------------------------------- */

static void exec_sql(const char *path, const char *sql) {
        sqlite3 *db;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        char *msg = NULL;
        if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
                fail_msg("%s: %s", sql, msg);
        sqlite3_close(db);
}

static int64_t query_one(const char *path, const char *sql) {
        sqlite3 *db;
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        int64_t v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        sqlite3_close(db);
        return v;
}

static void test_migrations(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_store_close(f->st);
        f->st = NULL;
        unlink(f->path);

        /* A database as the first schema left it, made by the real code. */
        lg_store *old;
        OK(lg_store_sqlite_open(f->path, NULL, 1, &old, &err));
        json_t *spec = J("{\"v\":1}");
        OK(lg_store_create(old, LG_KEY("App", "a", "web"), NULL, spec, NULL, NULL, &err));
        lg_store_close(old);
        assert_int_equal(query_one(f->path, "SELECT value FROM legion_meta WHERE key = 'schema_version'"), 1);
        assert_int_equal(query_one(f->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'revisions'"), 0);

        assert_int_equal(fx_open(f, NULL), 0);
        _cleanup_resource_ struct lg_resource *r = NULL;
        OK(lg_store_get(f->st, LG_KEY("App", "a", "web"), &r, &err));
        assert_true(json_equal(r->spec, spec));
        int64_t n;
        assert_int_equal(lg_store_revision_add(f->st, LG_KEY("App", "a", "web"), spec, &n, &err), 1);
        char secret[LG_TOKEN_SECRET_SIZE];
        OK(lg_store_token_create(f->st, "a", NULL, 0, NULL, secret, &err));
        OK(lg_store_check(f->st, &err));
        lg_store_close(f->st);
        f->st = NULL;
        assert_int_equal(query_one(f->path, "SELECT value FROM legion_meta WHERE key = 'schema_version'"),
                         lg_store_sqlite_schema_version);

        /* A version-1 database written by hand from the frozen v1 schema (so
         * that an edit of a shipped migration shows up here). */
        unlink(f->path);
        exec_sql(f->path,
                 "CREATE TABLE legion_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                 "INSERT INTO legion_meta VALUES ('resource_version', 2), ('events_floor', 0), "
                 "('schema_version', 1);"
                 "CREATE TABLE resources (kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,"
                 " uid TEXT NOT NULL UNIQUE, resource_version INTEGER NOT NULL, generation INTEGER NOT NULL,"
                 " labels TEXT NOT NULL, spec TEXT NOT NULL, status TEXT NOT NULL,"
                 " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
                 " PRIMARY KEY (kind, namespace, name));"
                 "CREATE TABLE events (resource_version INTEGER PRIMARY KEY, type TEXT NOT NULL,"
                 " kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, object TEXT NOT NULL);"
                 "CREATE INDEX events_by_kind ON events (kind, namespace, resource_version);"
                 "INSERT INTO resources VALUES ('App', 'a', 'old', '00000000-0000-4000-8000-000000000000',"
                 " 2, 1, '{}', '{\"v\":1}', '{}', 1700000000, 1700000000);");
        assert_int_equal(fx_open(f, NULL), 0);
        OK(lg_store_get(f->st, LG_KEY("App", "a", "old"), NULL, &err));
        _cleanup_resource_ struct lg_resource *c = NULL;
        OK(lg_store_create(f->st, LG_KEY("App", "a", "new"), NULL, NULL, NULL, &c, &err));
        assert_int_equal(c->resource_version, 3);
        assert_int_equal(lg_store_revision_add(f->st, LG_KEY("App", "a", "old"), spec, &n, &err), 1);
        OK(lg_store_check(f->st, &err));
        lg_store_close(f->st);
        f->st = NULL;

        /* Newer than us: refused with a clear message, nothing touched. */
        exec_sql(f->path, "UPDATE legion_meta SET value = 99 WHERE key = 'schema_version'");
        FAILS(lg_store_open(f->path, NULL, &f->st, &err), EOPNOTSUPP);
        assert_non_null(strstr(err.msg, "schema version 99"));
        assert_non_null(strstr(err.msg, "upgrade"));
        assert_int_equal(query_one(f->path, "SELECT value FROM legion_meta WHERE key = 'schema_version'"), 99);

        /* Some other program's database. */
        unlink(f->path);
        exec_sql(f->path, "CREATE TABLE users (id INTEGER)");
        FAILS(lg_store_open(f->path, NULL, &f->st, &err), EINVAL);
        assert_non_null(strstr(err.msg, "not a Legion store"));
        /* Not a database at all. */
        unlink(f->path);
        assert_int_equal(lg_write_file_at(AT_FDCWD, f->path, "this is not sqlite, it is just text, long enough to have a header", true), 0);
        FAILS(lg_store_open(f->path, NULL, &f->st, &err), EUCLEAN);
        unlink(f->path);
        json_decref(spec);

        /* A fresh store: 0600, WAL mode. */
        assert_int_equal(fx_open(f, NULL), 0);
        OK(lg_store_create(f->st, LG_KEY("App", "a", "x"), NULL, NULL, NULL, NULL, &err));
        struct stat sb;
        assert_int_equal(stat(f->path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
        char wal[160];
        snprintf(wal, sizeof(wal), "%s-wal", f->path);
        assert_int_equal(stat(wal, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
}

static void test_locations(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_store *st;
        char p[192], link[192];
        snprintf(p, sizeof(p), "sqlite:%s/other.db", f->dir);
        OK(lg_store_open(p, NULL, &st, &err));
        lg_store_close(st);
        FAILS(lg_store_open("postgres://db/legion", NULL, &st, &err), EPROTONOSUPPORT);
        FAILS(lg_store_open("", NULL, &st, &err), EINVAL);
        snprintf(p, sizeof(p), "%s/no/such/dir/x.db", f->dir);
        FAILS(lg_store_open(p, NULL, &st, &err), ENOENT);
        /* A symlink planted at the path is refused. */
        snprintf(link, sizeof(link), "%s/link.db", f->dir);
        assert_int_equal(symlink(f->path, link), 0);
        FAILS(lg_store_open(link, NULL, &st, &err), ELOOP);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_names),
                cmocka_unit_test_setup_teardown(test_crud, setup, teardown),
                cmocka_unit_test_setup_teardown(test_conflicts, setup, teardown),
                cmocka_unit_test_setup_teardown(test_validation, setup, teardown),
                cmocka_unit_test_setup_teardown(test_apply, setup, teardown),
                cmocka_unit_test_setup_teardown(test_list_selector, setup, teardown),
                cmocka_unit_test_setup_teardown(test_events, setup, teardown),
                cmocka_unit_test_setup_teardown(test_events_trim, setup, teardown),
                cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
                cmocka_unit_test_setup_teardown(test_locking, setup, teardown),
                cmocka_unit_test_setup_teardown(test_revisions, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
                cmocka_unit_test_setup_teardown(test_blobs, setup, teardown),
                cmocka_unit_test_setup_teardown(test_migrations, setup, teardown),
                cmocka_unit_test_setup_teardown(test_locations, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
