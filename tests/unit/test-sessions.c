/* Unit tests of the session manager (src/session) on a real libuv loop and
 * store with recording ops in place of the node and the router:
 * identifiers, pool specs (hostile ones too), binding on first use and
 * only then, maxSessions, a lost sandbox (410), cooldown expiry, pool
 * deletion, and the worker's checks of executions and file paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session/session.h"
#include "test-ok.h"

/* What the manager asked of the node and the router. */
struct rec {
        int pool_sets, pool_deletes, route_sets, route_removes;
        char pool_name[160], pool_deleted[160], route_key[400], removed[400], identifier[200], log[400];
        struct lg_pool_spec pool;
        char env[8][80];
        unsigned max_instances, concurrency, idle_timeout_s;
        int sandboxes;      /* what route_sandboxes answers */
        int route_set_fail; /* route_set fails with this when < 0 */
};

static int rec_pool_set(void *ud, const struct lg_pool_spec *ps, struct lg_error *err) {
        (void) err;
        struct rec *r = ud;
        r->pool_sets++;
        snprintf(r->pool_name, sizeof(r->pool_name), "%s", ps->name);
        r->pool = *ps;
        r->pool.name = r->pool.runtime = NULL;
        r->pool.env = NULL;
        memset(r->env, 0, sizeof(r->env));
        for (size_t i = 0; ps->env && ps->env[i] && i < 8; i++)
                snprintf(r->env[i], sizeof(r->env[i]), "%s", ps->env[i]);
        return 0;
}

static void rec_pool_delete(void *ud, const char *name) {
        struct rec *r = ud;
        r->pool_deletes++;
        snprintf(r->pool_deleted, sizeof(r->pool_deleted), "%s", name);
}

static int rec_pool_stats(void *ud, const char *name, struct lg_pool_stats *ret) {
        (void) ud;
        (void) name;
        *ret = (struct lg_pool_stats){.ready = 3, .starting = 1, .failures = 2};
        snprintf(ret->last_error, sizeof(ret->last_error), "no runtime");
        return 0;
}

static int rec_route_set(void *ud, const struct lg_route_config *cfg, struct lg_error *err) {
        struct rec *r = ud;
        if (r->route_set_fail < 0)
                return lg_error_setm(err, -r->route_set_fail, "router says no");
        r->route_sets++;
        snprintf(r->route_key, sizeof(r->route_key), "%s", cfg->key);
        snprintf(r->identifier, sizeof(r->identifier), "%s", cfg->identifier ? cfg->identifier : "");
        r->max_instances = cfg->max_instances;
        r->concurrency = cfg->concurrency;
        r->idle_timeout_s = cfg->idle_timeout_s;
        return 0;
}

static void rec_route_remove(void *ud, const char *key) {
        struct rec *r = ud;
        r->route_removes++;
        snprintf(r->removed, sizeof(r->removed), "%s", key);
}

static int rec_route_sandboxes(void *ud, const char *key) {
        (void) key;
        return ((struct rec *) ud)->sandboxes;
}

static void rec_log(void *ud, const char *pool_key, const char *line) {
        struct rec *r = ud;
        snprintf(r->log, sizeof(r->log), "%s: %s", pool_key, line);
}

/* The route's instances' network addresses: one, for the route "ns/p/user-1". */
static void rec_route_addresses(void *ud, const char *key, void (*fn)(const char *address, void *fud), void *fud) {
        (void) ud;
        if (!strcmp(key, "ns/p/user-1"))
                fn("10.200.0.9", fud);
}

static const struct lg_sessions_ops ops = {
        .route_addresses = rec_route_addresses,
        .pool_set = rec_pool_set,
        .pool_delete = rec_pool_delete,
        .pool_stats = rec_pool_stats,
        .route_set = rec_route_set,
        .route_remove = rec_route_remove,
        .route_sandboxes = rec_route_sandboxes,
        .log = rec_log,
};

struct fx {
        char dir[64];
        uv_loop_t loop;
        lg_store *store;
        struct rec rec;
        lg_sessions *m;
};

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof(*f));
        struct lg_error err = {0};
        strcpy(f->dir, "/tmp/lg-sessions-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        char path[96];
        snprintf(path, sizeof(path), "%s/legion.db", f->dir);
        if (lg_store_open(path, NULL, &f->store, &err) < 0)
                return -1;
        uv_loop_init(&f->loop);
        f->rec.sandboxes = 1;
        if (lg_sessions_new(&f->loop, f->store, &ops, &f->rec, &f->m, &err) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        lg_sessions_free(f->m);
        uv_run(&f->loop, UV_RUN_DEFAULT); /* the sessions' timers close */
        assert_int_equal(uv_loop_close(&f->loop), 0);
        lg_store_close(f->store);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static json_t *spec(const char *text) {
        json_error_t je;
        json_t *j = json_loads(text, 0, &je);
        if (!j)
                fail_msg("bad test JSON %s: %s", text, je.text);
        return j;
}

/* Store pool ns/name with the spec text. */
static void put_pool(struct fx *f, const char *name, const char *text) {
        struct lg_error err = {0};
        json_t *s = spec(text);
        OK(lg_sessions_pool_put(f->m, "ns", name, s, NULL, &err));
        json_decref(s);
}

static void test_identifiers(void **state) {
        (void) state;
        struct lg_error err = {0};
        static const char *const good[] = {"abcd", "user-1.session_2:x", "AAAA", NULL};
        for (size_t i = 0; good[i]; i++)
                assert_int_equal(lg_session_id_check(good[i], &err), 0);
        char long_ok[129], too_long[130];
        memset(long_ok, 'a', 128);
        long_ok[128] = '\0';
        memset(too_long, 'a', 129);
        too_long[129] = '\0';
        assert_int_equal(lg_session_id_check(long_ok, &err), 0);
        static const char *const bad[] = {"", "abc", "ab/cd", "../../x", "a b c d", "abcd%2f", "abc\xc3\xa9",
                                          "abcd\n", "ab\tcd", "abc*", NULL};
        for (size_t i = 0; bad[i]; i++) {
                err = (struct lg_error){0};
                assert_int_equal(lg_session_id_check(bad[i], &err), -EINVAL);
                assert_non_null(strstr(err.msg, "`identifier`"));
        }
        assert_int_equal(lg_session_id_check(too_long, &err), -EINVAL);
        assert_int_equal(lg_session_id_check(NULL, &err), -EINVAL);
}

static void test_pool_put(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        json_t *s = spec("{\"name\": \"p\"}");
        struct lg_resource *res = NULL;
        assert_int_equal(lg_sessions_pool_put(f->m, "ns", "p", s, &res, &err), LG_STORE_CREATED);
        json_decref(s);
        assert_string_equal(json_string_value(json_object_get(res->spec, "runtime")), "python3");
        assert_null(json_object_get(res->spec, "name"));
        lg_resource_free(res);
        assert_string_equal(f->rec.pool_name, "sessions/ns/p");
        assert_int_equal(f->rec.pool.ready, 1);
        assert_int_equal(f->rec.pool.memory_bytes, 256ull << 20);
        assert_true(f->rec.pool.writable_root);
        assert_false(f->rec.pool.network); /* no egress: loopback only */
        assert_int_equal(f->rec.pool.disk_bytes, (1ull << 30) + (64ull << 20));
        assert_string_equal(f->rec.env[0], "LEGION_SESSION_MAX_FILE=104857600");
        assert_string_equal(f->rec.env[2], "LEGION_SESSION_MEMORY_LIMIT=268435456");

        s = spec("{\"ready\": 0, \"cpu\": \"500m\", \"memory\": \"64Mi\", \"maxSessionBytes\": \"16Mi\"}");
        assert_int_equal(lg_sessions_pool_put(f->m, "ns", "p", s, NULL, &err), LG_STORE_UPDATED);
        json_decref(s);
        assert_int_equal(f->rec.pool.ready, 0);
        assert_int_equal(f->rec.pool.cpu_millis, 500);
        assert_int_equal(f->rec.pool.memory_bytes, 64ull << 20);
        assert_int_equal(f->rec.pool.disk_bytes, (16ull << 20) + (64ull << 20));

        int sets = f->rec.pool_sets;
        static const struct { const char *spec, *word; } bad[] = {
                {"{\"color\": \"red\"}", "unknown field in a session pool: `color`"},
                {"{\"runtime\": \"node\"}", "session pool `q`: `runtime`"},
                {"{\"ready\": -1}", "`ready`"},
                {"{\"ready\": 1001}", "`ready`"},
                {"{\"ready\": \"5\"}", "`ready`"},
                {"{\"ready\": 1.5}", "`ready`"},
                {"{\"maxSessions\": 0}", "`maxSessions`"},
                {"{\"maxSessions\": 9223372036854775807}", "`maxSessions`"},
                {"{\"cooldownSeconds\": 86401}", "`cooldownSeconds`"},
                {"{\"cooldownSeconds\": {\"a\": 1}}", "`cooldownSeconds`"},
                {"{\"egress\": \"yes\"}", "`egress` must be"},
                {"{\"egress\": 1}", "`egress` must be"},
                {"{\"egress\": null}", "`egress` must be"},
                {"{\"egress\": {\"allow\": []}}", "`egress`"},
                {"{\"egress\": {\"allow\": [\"198.51.100.0/33\"]}}", "`egress`"},
                {"{\"egress\": {\"deny\": [\"198.51.100.0/24\"]}}", "`deny`"},
                {"{\"cpu\": \"lots\"}", "`cpu`"},
                {"{\"cpu\": -1}", "`cpu`"},
                {"{\"cpu\": 1e300}", "`cpu`"},
                {"{\"memory\": 1}", "`memory`"},
                {"{\"memory\": \"65Gi\"}", "`memory`"},
                {"{\"maxFileBytes\": [1]}", "`maxFileBytes`"},
                {"{\"maxSessionBytes\": \"1Ti\"}", "`maxSessionBytes`"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                s = spec(bad[i].spec);
                err = (struct lg_error){0};
                int r = lg_sessions_pool_put(f->m, "ns", "q", s, NULL, &err);
                json_decref(s);
                if (r != -EINVAL || !strstr(err.msg, bad[i].word))
                        fail_msg("%s: %d `%s`", bad[i].spec, r, err.msg);
        }
        assert_int_equal(f->rec.pool_sets, sets);
        assert_int_equal(lg_store_get(f->store, LG_KEY("SessionPool", "ns", "q"), NULL, NULL), -ENOENT);
        /* Egress needs the node's network: without one it is refused,
         * saying why, and nothing is declared or stored. */
        static const char *const needs_net[] = {"true", "\"on\"", "{\"allow\": [\"198.51.100.0/24\"]}"};
        for (size_t i = 0; i < ARRAY_SIZE(needs_net); i++) {
                char buf[128];
                snprintf(buf, sizeof(buf), "{\"egress\": %s}", needs_net[i]);
                s = spec(buf);
                assert_int_equal(lg_sessions_pool_put(f->m, "ns", "q", s, NULL, &err), -EOPNOTSUPP);
                json_decref(s);
                assert_non_null(strstr(err.msg, "networking is off"));
        }
        assert_int_equal(f->rec.pool_sets, sets);
        assert_int_equal(lg_store_get(f->store, LG_KEY("SessionPool", "ns", "q"), NULL, NULL), -ENOENT);
        s = spec("{\"egress\": \"off\"}");
        assert_int_equal(lg_sessions_pool_put(f->m, "ns", "q", s, NULL, &err), LG_STORE_CREATED);
        json_decref(s);
        assert_false(f->rec.pool.network);
        /* Stored by an older legiond with egress: never the host's
         * network; a node without its own refuses it, saying so. */
        sets = f->rec.pool_sets;
        s = spec("{\"egress\": true}");
        OK(lg_store_apply(f->store, LG_KEY("SessionPool", "ns", "old"), NULL, s, &res, &err));
        json_decref(s);
        assert_int_equal(lg_sessions_restore_pool(f->m, res, &err), -EOPNOTSUPP);
        lg_resource_free(res);
        assert_int_equal(f->rec.pool_sets, sets);
}

static lg_session *open_ok(struct fx *f, const char *pool, const char *id, unsigned flags) {
        struct lg_error err = {0};
        lg_session *s = NULL;
        int r = lg_sessions_open(f->m, "ns", pool, id, flags, &s, &err);
        if (r < 0)
                fail_msg("open %s: %d %s", id, r, err.msg);
        return s;
}

static void test_bind_once(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        put_pool(f, "p", "{\"cooldownSeconds\": 60}");
        lg_session *s = NULL;
        /* Reading files of a session that is not there binds nothing. */
        assert_int_equal(lg_sessions_open(f->m, "ns", "p", "user-1", 0, &s, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "no session `user-1` in pool `p`"));
        assert_int_equal(f->rec.route_sets, 0);
        assert_int_equal(lg_sessions_open(f->m, "ns", "p", "a/b/c", LG_SESSION_CREATE, &s, &err), -EINVAL);
        assert_int_equal(f->rec.route_sets, 0);

        s = open_ok(f, "p", "user-1", LG_SESSION_CREATE);
        assert_int_equal(f->rec.route_sets, 1);
        assert_string_equal(f->rec.route_key, "ns/p/user-1");
        assert_string_equal(lg_session_key(s), "ns/p/user-1");
        assert_string_equal(f->rec.identifier, "user-1");
        assert_int_equal(f->rec.max_instances, 1);
        assert_int_equal(f->rec.concurrency, 1);
        /* The cooldown ends it, not the router's idle timeout. */
        assert_true(f->rec.idle_timeout_s > 60);
        assert_string_equal(f->rec.log, "ns/p: session `user-1` started");
        /* The same identifier meets the same session. */
        assert_ptr_equal(open_ok(f, "p", "user-1", LG_SESSION_CREATE | LG_SESSION_EXECUTE), s);
        assert_ptr_equal(open_ok(f, "p", "user-1", 0), s);
        assert_int_equal(f->rec.route_sets, 1);
        assert_ptr_equal(lg_sessions_find(f->m, "ns", "p", "user-1"), s);
        assert_null(lg_sessions_find(f->m, "ns", "q", "user-1"));
        assert_null(lg_sessions_find(f->m, "other", "p", "user-1"));

        json_t *doc = lg_session_json(s);
        assert_string_equal(json_string_value(json_object_get(doc, "identifier")), "user-1");
        assert_int_equal(json_integer_value(json_object_get(doc, "executions")), 1);
        assert_int_equal(json_integer_value(json_object_get(doc, "cooldownSeconds")), 60);
        assert_string_equal(json_string_value(json_object_get(doc, "address")), "10.200.0.9");
        assert_non_null(json_object_get(doc, "expiresAt"));
        json_decref(doc);
        doc = lg_sessions_list_json(f->m, "ns", "p");
        assert_int_equal(json_array_size(json_object_get(doc, "items")), 1);
        json_decref(doc);

        lg_sessions_end(f->m, s, "session deleted");
        assert_int_equal(f->rec.route_removes, 1);
        assert_string_equal(f->rec.removed, "ns/p/user-1");
        assert_string_equal(f->rec.log, "ns/p: session deleted");
        assert_null(lg_sessions_find(f->m, "ns", "p", "user-1"));
        /* A router that refuses: no session is counted. */
        f->rec.route_set_fail = -ENOMEM;
        assert_int_equal(lg_sessions_open(f->m, "ns", "p", "user-2", LG_SESSION_CREATE, &s, &err), -ENOMEM);
        assert_int_equal(lg_sessions_count(f->m, "ns", "p"), 0);
}

static void test_max_sessions(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        put_pool(f, "p", "{\"maxSessions\": 2}");
        put_pool(f, "q", "{}");
        lg_session *a = open_ok(f, "p", "aaaa", LG_SESSION_CREATE);
        open_ok(f, "p", "bbbb", LG_SESSION_CREATE);
        open_ok(f, "q", "cccc", LG_SESSION_CREATE); /* another pool does not count */
        assert_int_equal(lg_sessions_count(f->m, "ns", "p"), 2);
        lg_session *s = NULL;
        assert_int_equal(lg_sessions_open(f->m, "ns", "p", "dddd", LG_SESSION_CREATE, &s, &err), -EUSERS);
        assert_non_null(strstr(err.msg, "maxSessions (2 of 2 in use)"));
        assert_int_equal(f->rec.route_sets, 3);
        /* The ones it has still answer. */
        assert_ptr_equal(open_ok(f, "p", "aaaa", LG_SESSION_CREATE), a);
        lg_sessions_end(f->m, a, "session deleted");
        open_ok(f, "p", "dddd", LG_SESSION_CREATE);

        json_t *st = lg_sessions_pool_status(f->m, "ns", "p", true);
        assert_int_equal(json_integer_value(json_object_get(st, "sessions")), 2);
        assert_int_equal(json_integer_value(json_object_get(st, "ready")), 3);
        assert_string_equal(json_string_value(json_object_get(json_object_get(st, "lastError"), "message")),
                            "no runtime");
        json_decref(st);
        st = lg_sessions_pool_status(f->m, "ns", "p", false);
        assert_int_equal(json_object_size(st), 1);
        json_decref(st);

        /* Deleting pool p ends its sessions only. */
        OK(lg_sessions_pool_delete(f->m, "ns", "p", &err));
        assert_int_equal(lg_store_get(f->store, LG_KEY("SessionPool", "ns", "p"), NULL, NULL), -ENOENT);
        assert_int_equal(lg_sessions_open(f->m, "ns", "p", "aaaa", LG_SESSION_CREATE, &s, &err), -ENOENT);
        assert_string_equal(f->rec.pool_deleted, "sessions/ns/p");
        assert_int_equal(lg_sessions_count(f->m, "ns", "p"), 0);
        assert_int_equal(lg_sessions_count(f->m, "ns", "q"), 1);
}

static void test_lost(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        put_pool(f, "p", "{}");
        /* Files only, no code ran: a session whose sandbox is not up yet is
         * not lost. */
        open_ok(f, "p", "files", LG_SESSION_CREATE);
        f->rec.sandboxes = 0;
        open_ok(f, "p", "files", 0);
        f->rec.sandboxes = 1;
        open_ok(f, "p", "exec", LG_SESSION_CREATE | LG_SESSION_EXECUTE);
        f->rec.sandboxes = -ENOENT; /* no route at all: nothing to say */
        open_ok(f, "p", "exec", LG_SESSION_EXECUTE);
        f->rec.sandboxes = 0;
        lg_session *s = NULL;
        assert_int_equal(lg_sessions_open(f->m, "ns", "p", "exec", LG_SESSION_CREATE | LG_SESSION_EXECUTE, &s,
                                          &err),
                         -ENOLINK);
        assert_non_null(strstr(err.msg, "session `exec` lost its sandbox"));
        assert_string_equal(f->rec.removed, "ns/p/exec");
        assert_null(lg_sessions_find(f->m, "ns", "p", "exec"));
        /* The next call starts a new session. */
        int sets = f->rec.route_sets;
        open_ok(f, "p", "exec", LG_SESSION_CREATE | LG_SESSION_EXECUTE);
        assert_int_equal(f->rec.route_sets, sets + 1);
}

static void test_cooldown(void **state) {
        struct fx *f = *state;
        put_pool(f, "p", "{\"cooldownSeconds\": 1}");
        open_ok(f, "p", "short", LG_SESSION_CREATE);
        /* The cooldown timer is the loop's only handle: the loop returns
         * once it has fired and the session has ended. */
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(lg_sessions_count(f->m, "ns", "p"), 0);
        assert_string_equal(f->rec.removed, "ns/p/short");
        assert_string_equal(f->rec.log, "ns/p: session `short` ended after 1 s without a call");
}

static void test_execution_check(void **state) {
        (void) state;
        struct lg_error err = {0};
        static const char *const good[] = {
                "{\"code\": \"1 + 1\"}",
                "{\"code\": \"\", \"timeoutSeconds\": 600}",
                "{\"code\": \"x\", \"timeoutSeconds\": 0.5}",
                "{\"code\": \"x\", \"timeoutSeconds\": null}",
        };
        for (size_t i = 0; i < ARRAY_SIZE(good); i++)
                if (lg_session_execution_check(good[i], strlen(good[i]), &err) < 0)
                        fail_msg("%s: %s", good[i], err.msg);
        static const char *const bad[] = {
                "", "null", "[]", "\"code\"", "{", "{}", "{\"code\": 1}", "{\"code\": null}",
                "{\"code\": \"x\", \"timeoutSeconds\": 0}", "{\"code\": \"x\", \"timeoutSeconds\": 601}",
                "{\"code\": \"x\", \"timeoutSeconds\": -1}", "{\"code\": \"x\", \"timeoutSeconds\": \"30\"}",
                "{\"code\": \"x\", \"timeoutSeconds\": 1e999}", "{\"code\": \"\xff\xfe\"}", "{\"code\": \"x\"} junk",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                err = (struct lg_error){0};
                if (lg_session_execution_check(bad[i], strlen(bad[i]), &err) != -EINVAL || !err.msg[0])
                        fail_msg("accepted %s", bad[i]);
        }
        assert_int_equal(lg_session_execution_check(NULL, 0, &err), -EINVAL);
        /* A NUL inside the body is no end of it. */
        assert_int_equal(lg_session_execution_check("{\"code\": \"x\"}\0junk", 18, &err), -EINVAL);
}

static void test_file_paths(void **state) {
        (void) state;
        struct lg_error err = {0};
        char n255[256], n256[257];
        memset(n255, 'a', 255);
        n255[255] = '\0';
        memset(n256, 'a', 256);
        n256[256] = '\0';
        const char *ok[] = {"dir", n255};
        assert_int_equal(lg_session_file_path_check(ok, 2, &err), 0);
        const char *too_long[] = {"dir", n256};
        assert_int_equal(lg_session_file_path_check(too_long, 2, &err), -ENAMETOOLONG);
        /* Four names of 255 and their slashes: 1,023 bytes; a fifth goes over. */
        const char *deep[] = {n255, n255, n255, n255, "x"};
        assert_int_equal(lg_session_file_path_check(deep, 4, &err), 0);
        assert_int_equal(lg_session_file_path_check(deep, 5, &err), -ENAMETOOLONG);
        const char *reserved[] = {"dir", ".legion-upload-123"};
        assert_int_equal(lg_session_file_path_check(reserved, 2, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "reserved"));
        const char *reserved_dir[] = {".legion-upload-123", "f"};
        assert_int_equal(lg_session_file_path_check(reserved_dir, 2, &err), 0);
        assert_int_equal(lg_session_file_path_check(NULL, 0, &err), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_identifiers),
                cmocka_unit_test_setup_teardown(test_pool_put, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bind_once, setup, teardown),
                cmocka_unit_test_setup_teardown(test_max_sessions, setup, teardown),
                cmocka_unit_test_setup_teardown(test_lost, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cooldown, setup, teardown),
                cmocka_unit_test(test_execution_check),
                cmocka_unit_test(test_file_paths),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
