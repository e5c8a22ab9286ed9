/* Unit test of the start-up replay (src/replay): a store written as a
 * legiond would leave it -- namespaces (one with a network no legiond
 * would accept), pool groups, session pools (one broken), apps with
 * several revisions, one whose package has gone -- replayed into real
 * lg_tenants (without a node network), lg_apps and lg_sessions whose ops
 * record, in order, what reached the node and the router. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test-ok.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replay/replay.h"

/* "pool:NAME" and "route:KEY@REV", in call order. */
static char events[32][160];
static size_t n_events;

static void event(const char *fmt, const char *s, unsigned n) {
        if (n_events < 32)
                snprintf(events[n_events++], sizeof(events[0]), fmt, s, n);
}

static int find_event(const char *e) {
        for (size_t i = 0; i < n_events; i++)
                if (!strcmp(events[i], e))
                        return (int) i;
        fail_msg("no event `%s`", e);
        return -1;
}

static int pool_set(void *ud, const struct lg_pool_spec *ps, struct lg_error *err) {
        (void) ud, (void) err;
        event("pool:%s", ps->name, 0);
        return 0;
}
static void pool_delete(void *ud, const char *name) { (void) ud, (void) name; }
static int pool_stats(void *ud, const char *name, struct lg_pool_stats *ret) {
        (void) ud, (void) name, (void) ret;
        return -ENOENT;
}
static int route_set(void *ud, const struct lg_route_config *cfg, struct lg_error *err) {
        (void) ud, (void) err;
        event("route:%s@%u", cfg->key, cfg->revision);
        return 0;
}
static void route_remove(void *ud, const char *key) { (void) ud, (void) key; }
static int route_stats(void *ud, const char *key, struct lg_route_stats *ret) {
        (void) ud, (void) key, (void) ret;
        return -ENOENT;
}
static int route_sandboxes(void *ud, const char *key) {
        (void) ud, (void) key;
        return -ENOENT;
}
static void log_line(void *ud, const char *key, const char *line) { (void) ud, (void) key, (void) line; }

static const struct lg_apps_ops apps_ops = {pool_set,     pool_delete, pool_stats, route_set,
                                            route_remove, route_stats, NULL};
static const struct lg_sessions_ops sessions_ops = {
        .pool_set = pool_set,         .pool_delete = pool_delete,         .pool_stats = pool_stats,
        .route_set = route_set,       .route_remove = route_remove,       .route_sandboxes = route_sandboxes,
        .log = log_line,
};

struct report {
        char what[8][200];
        size_t n;
};

static void on_report(const char *kind, const struct lg_resource *r, const struct lg_error *why, void *ud) {
        struct report *rep = ud;
        assert_true(why->msg[0] != '\0');
        if (rep->n < 8)
                snprintf(rep->what[rep->n++], sizeof(rep->what[0]), "%s %s/%s", kind, r->namespace, r->name);
}

static json_t *js(const char *fmt, const char *arg) {
        char text[1024];
        snprintf(text, sizeof(text), fmt, arg);
        json_error_t je;
        json_t *j = json_loads(text, 0, &je);
        if (!j)
                fail_msg("bad test JSON %s: %s", text, je.text);
        return j;
}

/* Store a package made of one file with text, as an upload would. */
static void add_package(const char *dir, lg_store *st, struct lg_blobstore *bs, const char *text, char *digest) {
        struct lg_error err = {0};
        char src[128], path[160], out[128];
        snprintf(src, sizeof(src), "%s/src", dir);
        mkdir(src, 0700);
        snprintf(path, sizeof(path), "%s/main.py", src);
        FILE *fp = fopen(path, "w");
        fputs(text, fp);
        fclose(fp);
        snprintf(out, sizeof(out), "%s/pkg.tgz", dir);
        int fd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        OK(lg_pkg_pack_dir(src, fd, NULL, NULL, &err));
        lseek(fd, 0, SEEK_SET);
        struct lg_digest dg;
        OK(lg_blob_put_fd(bs, fd, &dg, &err));
        struct stat sb;
        fstat(fd, &sb);
        close(fd);
        OK(lg_blob_extract(bs, dg.hex, NULL, NULL, &err));
        OK(lg_store_blob_put(st, dg.hex, (uint64_t) sb.st_size, "application/octet-stream", NULL, &err));
        strcpy(digest, dg.hex);
}

static void test_replay(void **state) {
        (void) state;
        struct lg_error err = {0};
        char dir[] = "/tmp/lg-replay-XXXXXX", path[160], logs[160];
        assert_non_null(mkdtemp(dir));
        uv_loop_t loop;
        uv_loop_init(&loop);
        lg_store *st = NULL;
        struct lg_blobstore *bs = NULL;
        snprintf(path, sizeof(path), "%s/legion.db", dir);
        OK(lg_store_open(path, NULL, &st, &err));
        snprintf(path, sizeof(path), "%s/packages", dir);
        OK(lg_blobstore_open(path, &bs, &err));
        snprintf(logs, sizeof(logs), "%s/logs", dir);
        lg_apps *apps = NULL;
        lg_sessions *sessions = NULL;
        struct lg_apps_config ac = {.loop = &loop, .store = st, .blobs = bs, .logs_dir = logs, .ops = &apps_ops};
        OK(lg_apps_new(&ac, &apps, &err));
        OK(lg_sessions_new(&loop, st, &sessions_ops, NULL, &sessions, &err));

        /* What an earlier legiond stored. */
        lg_tenants *tenants = NULL;
        OK(lg_tenants_new(st, NULL, &tenants, &err));
        OK(lg_tenants_create(tenants, "team", NULL, NULL, &err));
        json_t *bad = js("{\"network\": {\"isolation\": \"%s\"}}", "nobody");
        OK(lg_store_apply(st, LG_KEY("Namespace", "", "odd"), NULL, bad, NULL, &err));
        json_decref(bad);
        json_t *s = js("{\"runtime\": \"%s\", \"ready\": 2}", "python3");
        OK(lg_store_apply(st, LG_KEY("PoolGroup", "", "python3"), NULL, s, NULL, &err));
        json_decref(s);
        s = js("{\"runtime\": \"%s\", \"ready\": 1, \"egress\": false}", "python3");
        OK(lg_store_apply(st, LG_KEY("SessionPool", "team", "old"), NULL, s, NULL, &err));
        json_decref(s);
        s = js("{\"ready\": \"%s\"}", "many");
        OK(lg_store_apply(st, LG_KEY("SessionPool", "team", "broken"), NULL, s, NULL, &err));
        json_decref(s);
        char pkg1[80], pkg2[80], gone[80];
        add_package(dir, st, bs, "print(1)\n", pkg1);
        add_package(dir, st, bs, "print(2)\n", pkg2);
        add_package(dir, st, bs, "print(3)\n", gone);
        const char *fmt = "{\"runtime\": \"python3\", \"package\": \"%s\"}";
        s = js(fmt, pkg1);
        OK(lg_apps_put(apps, "team", "web", NULL, s, NULL, &err));
        json_decref(s);
        s = js(fmt, pkg2);
        OK(lg_apps_put(apps, "team", "web", NULL, s, NULL, &err));
        json_decref(s);
        s = js(fmt, gone);
        OK(lg_apps_put(apps, "default", "lost", NULL, s, NULL, &err));
        json_decref(s);
        /* That package's bytes and tree are gone since. */
        OK(lg_blob_delete_extracted(bs, gone, &err));
        OK(lg_blob_delete(bs, gone, &err));
        assert_int_equal(n_events, 0);

        struct report rep = {0};
        struct lg_replay_stats stats = {0};
        struct lg_replay_targets t = {
                .store = st, .tenants = tenants, .apps = apps, .sessions = sessions, .pods = NULL};
        OK(lg_replay(&t, on_report, &rep, &stats, &err));
        assert_int_equal(stats.restored, 4);
        assert_int_equal(stats.failed, 3);
        assert_int_equal(rep.n, 3);
        assert_string_equal(rep.what[0], "Namespace /odd");
        assert_string_equal(rep.what[1], "SessionPool team/broken");
        assert_string_equal(rep.what[2], "App default/lost");
        /* The latest revision is routed, after the pools it starts from. */
        int pool = find_event("pool:python3");
        int spool = find_event("pool:sessions/team/old");
        int route = find_event("route:team/web@2");
        assert_true(pool < route);
        assert_true(spool < route);
        assert_int_equal(n_events, 3);

        lg_sessions_free(sessions);
        lg_apps_free(apps);
        lg_tenants_free(tenants);
        uv_run(&loop, UV_RUN_DEFAULT);
        assert_int_equal(uv_loop_close(&loop), 0);
        lg_blobstore_close(bs);
        lg_store_close(st);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        assert_int_equal(system(cmd), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_replay),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
