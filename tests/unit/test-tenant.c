/* Unit tests of src/tenant: the API's JSON for egress policies and a
 * namespace's network on good and hostile input (wrong types, unknown
 * fields, oversized and embedded-NUL strings, too many entries, bad
 * addresses, tables and interface names), and namespaces against a real
 * store without an lg_net: a refused change leaves the store as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tenant/tenant.h"
#include "test-ok.h"

static json_t *js(const char *s) {
        json_error_t je;
        json_t *v = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!v)
                fail_msg("bad test JSON %s: %s", s, je.text);
        return v;
}

static int policy(const char *s, unsigned flags, struct lg_net_policy *p, struct lg_error *err) {
        json_t *v = js(s);
        int r = lg_tenant_policy_parse(v, flags, "`egress`", p, err);
        json_decref(v);
        return r;
}

static void test_policy_good(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct lg_net_policy p;
        OK(policy("\"on\"", 0, &p, &err));
        assert_int_equal(p.egress, LG_NET_EGRESS_ON);
        OK(policy("\"off\"", 0, &p, &err));
        assert_int_equal(p.egress, LG_NET_EGRESS_OFF);
        OK(policy("true", LG_TENANT_POLICY_BOOL, &p, &err));
        assert_int_equal(p.egress, LG_NET_EGRESS_ON);
        OK(policy("false", LG_TENANT_POLICY_BOOL, &p, &err));
        assert_int_equal(p.egress, LG_NET_EGRESS_OFF);
        OK(policy("{\"allow\": [\"198.51.100.0/24\", \"203.0.113.5:443\", \"10.0.0.0/8:8000-8999\"]}", 0, &p, &err));
        assert_int_equal(p.egress, LG_NET_EGRESS_ALLOW);
        assert_int_equal(p.n_allow, 3);
        assert_int_equal(p.allow[1].prefix_len, 32);
        assert_int_equal(p.allow[1].port_lo, 443);
        assert_int_equal(p.allow[2].port_lo, 8000);
        assert_int_equal(p.allow[2].port_hi, 8999);
        /* LG_NET_ALLOW_MAX entries exactly. */
        char big[LG_NET_ALLOW_MAX * 24 + 32] = "{\"allow\": [";
        for (int i = 0; i < LG_NET_ALLOW_MAX; i++)
                snprintf(big + strlen(big), sizeof(big) - strlen(big), "%s\"198.51.100.%d\"", i ? ", " : "", i);
        strcat(big, "]}");
        OK(policy(big, 0, &p, &err));
        assert_int_equal(p.n_allow, LG_NET_ALLOW_MAX);
}

static void test_policy_hostile(void **state) {
        (void) state;
        static const struct {
                const char *json;
                const char *says;
        } bad[] = {
                {"true", "`egress` must be"},           /* booleans only for session pools */
                {"null", "`egress` must be"},
                {"1", "`egress` must be"},
                {"[\"on\"]", "`egress` must be"},
                {"\"ON\"", "`egress` must be"},
                {"\"\"", "`egress` must be"},
                {"\"198.51.100.0/24\"", "`egress` must be"}, /* a list is {"allow": [...]} */
                {"{}", "`allow` must be a list"},
                {"{\"allow\": \"198.51.100.0/24\"}", "`allow` must be a list"},
                {"{\"allow\": null}", "`allow` must be a list"},
                {"{\"allow\": [], \"deny\": []}", "unknown field in `egress`: `deny`"},
                {"{\"allow\": [1]}", "`allow[0]`"},
                {"{\"allow\": [\"198.51.100.0/24\", null]}", "`allow[1]`"},
                {"{\"allow\": [\"\"]}", "`allow[0]`"},
                {"{\"allow\": [[\"198.51.100.0/24\"]]}", "`allow[0]`"},
                {"{\"allow\": [\"198.51.100.0\\u0000/24\"]}", "`allow[0]`"}, /* an embedded NUL */
                {"{\"allow\": [\"198.51.100.1/24\"]}", "`egress`"},          /* host bits */
                {"{\"allow\": [\"198.51.100.0/33\"]}", "`egress`"},
                {"{\"allow\": [\"198.51.100.0:0\"]}", "`egress`"},
                {"{\"allow\": [\"198.51.100.0:65536\"]}", "`egress`"},
                {"{\"allow\": [\"198.51.100.0:9-8\"]}", "`egress`"},
                {"{\"allow\": [\"example.com\"]}", "`egress`"},
                {"{\"allow\": [\"2001:db8::/32\"]}", "`egress`"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                struct lg_error err = {0};
                struct lg_net_policy p;
                int r = policy(bad[i].json, 0, &p, &err);
                if (r != -EINVAL || !strstr(err.msg, bad[i].says))
                        fail_msg("%s: %d `%s`, want -EINVAL saying `%s`", bad[i].json, r, err.msg, bad[i].says);
        }
        struct lg_error err = {0};
        struct lg_net_policy p;
        /* Longer than an entry can be, and more entries than allowed. */
        char s[4096];
        snprintf(s, sizeof(s), "{\"allow\": [\"198.51.100.0/24:%0200d\"]}", 1);
        assert_int_equal(policy(s, 0, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "`allow[0]`"));
        strcpy(s, "{\"allow\": [");
        for (int i = 0; i <= LG_NET_ALLOW_MAX; i++)
                snprintf(s + strlen(s), sizeof(s) - strlen(s), "%s\"198.51.100.%d\"", i ? ", " : "", i);
        strcat(s, "]}");
        assert_int_equal(policy(s, 0, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "at most 64"));
}

static int network(const char *s, struct lg_net_namespace *ns, json_t **norm, struct lg_error *err) {
        json_t *v = s ? js(s) : NULL;
        struct lg_net_policy p;
        int r = lg_tenant_network_parse(v, ns, &p, norm, err);
        json_decref(v);
        return r;
}

static void test_network(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct lg_net_namespace ns;
        json_t *n = NULL;
        OK(network(NULL, &ns, &n, &err));
        char *d = json_dumps(n, JSON_SORT_KEYS | JSON_COMPACT);
        assert_string_equal(d, "{\"egress\":\"on\",\"isolation\":\"namespace\"}");
        free(d);
        json_decref(n);
        assert_false(ns.isolate_sandboxes);
        assert_string_equal(ns.snat, "");
        OK(network("{\"egress\": {\"allow\": [\"198.51.100.0/24\"]}, \"isolation\": \"sandbox\", \"snat\": "
                   "\"192.0.2.7\", \"via\": {\"interface\": \"vnet-a\", \"gateway\": \"192.0.2.1\"}}",
                   &ns, &n, &err));
        assert_true(ns.isolate_sandboxes);
        assert_string_equal(ns.snat, "192.0.2.7");
        assert_string_equal(ns.via_interface, "vnet-a");
        assert_string_equal(ns.via_gateway, "192.0.2.1");
        assert_string_equal(json_string_value(json_object_get(n, "isolation")), "sandbox");
        json_decref(n);
        OK(network("{\"via\": {\"table\": 100}}", &ns, NULL, &err));
        assert_int_equal(ns.via_table, 100);
        OK(network("{\"via\": {\"table\": 4294967295}}", &ns, NULL, &err));
        assert_int_equal(ns.via_table, 4294967295u);

        static const struct {
                const char *json;
                const char *says;
        } bad[] = {
                {"[]", "`network` must be an object"},
                {"\"on\"", "`network` must be an object"},
                {"{\"egres\": \"on\"}", "unknown field in `network`: `egres`"},
                {"{\"egress\": \"maybe\"}", "`network.egress` must be"},
                {"{\"egress\": true}", "`network.egress` must be"},
                {"{\"egress\": {\"allow\": [\"10.0.0.1/8\"]}}", "`network.egress`"},
                {"{\"isolation\": \"none\"}", "`network.isolation`"},
                {"{\"isolation\": null}", "`network.isolation`"},
                {"{\"snat\": \"192.0.2.300\"}", "`network.snat`"},
                {"{\"snat\": \"2001:db8::1\"}", "`network.snat`"},
                {"{\"snat\": 3221225985}", "`network.snat`"},
                {"{\"via\": \"eth1\"}", "`network.via` must be"},
                {"{\"via\": {}}", "either an `interface` or a `table`"},
                {"{\"via\": {\"interface\": \"eth1\", \"table\": 100}}", "either an `interface` or a `table`"},
                {"{\"via\": {\"interface\": \"eth1\", \"metric\": 1}}", "unknown field in `network.via`: `metric`"},
                {"{\"via\": {\"interface\": \"\"}}", "`network.via.interface`"},
                {"{\"via\": {\"interface\": \"a-very-long-name\"}}", "`network.via.interface`"}, /* 16 bytes */
                {"{\"via\": {\"interface\": \"../etc\"}}", "`network.via.interface`"},
                {"{\"via\": {\"interface\": \"..\"}}", "`network.via.interface`"},
                {"{\"via\": {\"interface\": \"eth 1\"}}", "`network.via.interface`"},
                {"{\"via\": {\"interface\": \"eth1\\n\"}}", "`network.via.interface`"},
                {"{\"via\": {\"interface\": \"eth1\", \"gateway\": \"gw\"}}", "`network.via.gateway`"},
                {"{\"via\": {\"table\": 100, \"gateway\": \"192.0.2.1\"}}", "needs `network.via.interface`"},
                {"{\"via\": {\"table\": 0}}", "`network.via.table`"},
                {"{\"via\": {\"table\": 254}}", "`network.via.table`"},
                {"{\"via\": {\"table\": 4294967296}}", "`network.via.table`"},
                {"{\"via\": {\"table\": \"100\"}}", "`network.via.table`"},
                {"{\"via\": {\"table\": -1}}", "`network.via.table`"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                n = NULL;
                int r = network(bad[i].json, &ns, &n, &err);
                if (r != -EINVAL || !strstr(err.msg, bad[i].says))
                        fail_msg("%s: %d `%s`, want -EINVAL saying `%s`", bad[i].json, r, err.msg, bad[i].says);
                assert_null(n);
        }
}

struct fx {
        char dir[64];
        lg_store *store;
        lg_tenants *t;
};

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof(*f));
        struct lg_error err = {0};
        strcpy(f->dir, "/tmp/lg-tenant-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        char path[96];
        snprintf(path, sizeof(path), "%s/legion.db", f->dir);
        if (lg_store_open(path, NULL, &f->store, &err) < 0 || lg_tenants_new(f->store, NULL, &f->t, &err) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        lg_tenants_free(f->t);
        lg_store_close(f->store);
        lg_rm_rf(f->dir);
        free(f);
        return 0;
}

static char *stored_network(struct fx *f, const char *name) {
        struct lg_resource *r = NULL;
        if (lg_store_get(f->store, LG_KEY("Namespace", "", name), &r, NULL) < 0)
                return NULL;
        char *s = json_dumps(json_object_get(r->spec, "network"), JSON_SORT_KEYS | JSON_COMPACT);
        lg_resource_free(r);
        return s;
}

static void test_namespaces(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        struct lg_resource *r = NULL;
        assert_int_equal(lg_tenants_create(f->t, "team-a", NULL, &r, &err), LG_STORE_CREATED);
        json_t *doc = lg_tenants_json(r);
        assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "network"), "egress")), "on");
        json_decref(doc);
        lg_resource_free(r);
        /* Again without a network: what it has is kept. */
        json_t *net = js("{\"egress\": \"off\", \"isolation\": \"sandbox\"}");
        assert_int_equal(lg_tenants_set(f->t, "team-a", net, NULL, &err), LG_STORE_UPDATED);
        json_decref(net);
        assert_int_equal(lg_tenants_create(f->t, "team-a", NULL, NULL, &err), LG_STORE_UNCHANGED);
        char *s = stored_network(f, "team-a");
        assert_string_equal(s, "{\"egress\":\"off\",\"isolation\":\"sandbox\"}");
        free(s);

        /* Refused: nothing stored, nothing changed. */
        net = js("{\"egress\": {\"allow\": [\"198.51.100.0/33\"]}}");
        assert_int_equal(lg_tenants_create(f->t, "team-b", net, NULL, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "namespace `team-b`"));
        assert_null(stored_network(f, "team-b"));
        assert_int_equal(lg_tenants_set(f->t, "team-a", net, NULL, &err), -EINVAL);
        assert_int_equal(lg_tenants_create(f->t, "team-a", net, NULL, &err), -EINVAL);
        json_decref(net);
        s = stored_network(f, "team-a");
        assert_string_equal(s, "{\"egress\":\"off\",\"isolation\":\"sandbox\"}");
        free(s);
        net = js("{\"egress\": \"on\"}");
        assert_int_equal(lg_tenants_set(f->t, "nope", net, NULL, &err), -ENOENT);
        assert_int_equal(lg_tenants_create(f->t, "Bad_Name", net, NULL, &err), -EINVAL);
        assert_int_equal(lg_tenants_set(f->t, "team-a", NULL, NULL, &err), -EINVAL);
        assert_int_equal(lg_tenants_set(f->t, "team-a", net, NULL, &err), LG_STORE_UPDATED);
        assert_int_equal(lg_tenants_set(f->t, "team-a", net, NULL, &err), LG_STORE_UNCHANGED);
        json_decref(net);

        /* A namespace stored before namespaces had a network. */
        OK(lg_store_create(f->store, LG_KEY("Namespace", "", "old"), NULL, NULL, NULL, &r, &err));
        doc = lg_tenants_json(r);
        s = json_dumps(json_object_get(doc, "network"), JSON_SORT_KEYS | JSON_COMPACT);
        assert_string_equal(s, "{\"egress\":\"on\",\"isolation\":\"namespace\"}");
        free(s);
        json_decref(doc);
        OK(lg_tenants_restore(f->t, r, &err));
        lg_resource_free(r);

        /* Delete: not while it has apps, session pools or pods. */
        OK(lg_store_create(f->store, LG_KEY("App", "team-a", "hello"), NULL, NULL, NULL, NULL, &err));
        assert_int_equal(lg_tenants_delete(f->t, "team-a", &err), -EBUSY);
        assert_non_null(strstr(err.msg, "1 app"));
        OK(lg_store_create(f->store, LG_KEY("SessionPool", "team-a", "interp"), NULL, NULL, NULL, NULL, &err));
        OK(lg_store_create(f->store, LG_KEY("Pod", "team-a", "web"), NULL, NULL, NULL, NULL, &err));
        OK(lg_store_create(f->store, LG_KEY("Pod", "team-a", "db"), NULL, NULL, NULL, NULL, &err));
        assert_int_equal(lg_tenants_delete(f->t, "team-a", &err), -EBUSY);
        assert_string_equal(err.msg, "namespace `team-a` still has 1 app, 1 session pool, 2 pods");
        OK(lg_store_delete(f->store, LG_KEY("App", "team-a", "hello"), 0, NULL, &err));
        OK(lg_store_delete(f->store, LG_KEY("SessionPool", "team-a", "interp"), 0, NULL, &err));
        assert_int_equal(lg_tenants_delete(f->t, "team-a", &err), -EBUSY);
        assert_string_equal(err.msg, "namespace `team-a` still has 2 pods");
        OK(lg_store_delete(f->store, LG_KEY("Pod", "team-a", "web"), 0, NULL, &err));
        OK(lg_store_delete(f->store, LG_KEY("Pod", "team-a", "db"), 0, NULL, &err));
        char *kept = stored_network(f, "team-a"); /* refused: nothing changed */
        assert_non_null(kept);
        free(kept);
        OK(lg_tenants_delete(f->t, "team-a", &err));
        assert_null(stored_network(f, "team-a"));
        assert_int_equal(lg_tenants_delete(f->t, "team-a", &err), -ENOENT);
        /* No lg_net: named policies are nothing to do. */
        struct lg_net_policy p = {.egress = LG_NET_EGRESS_ON};
        OK(lg_tenants_policy_set(f->t, "old", "app", "hello", &p, &err));
        char name[LG_NET_NAME_MAX];
        lg_tenant_policy_name(name, sizeof(name), "old", "pod", "web");
        assert_string_equal(name, "old/pod/web");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_policy_good),
                cmocka_unit_test(test_policy_hostile),
                cmocka_unit_test(test_network),
                cmocka_unit_test_setup_teardown(test_namespaces, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
