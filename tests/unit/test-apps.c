/* Unit tests of the apps module (src/apps) against a real store and blob
 * store in a temporary directory, on a real libuv loop, with recording ops
 * in place of the node and the router: pool groups, the package upload
 * pipeline (good, refused and cancelled uploads), app specs, the revision
 * rules of activation, deletion and the event logs; container apps and
 * image pool groups against a real image store holding two small images:
 * hostile specs, revisions on a moved tag, pool upgrades, pins. */
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

#include "apps/apps.h"
#include "image/image-internal.h"

struct rec {
        int pool_sets, pool_deletes, route_sets, route_removes;
        struct lg_pool_spec pool;
        char pool_name[64], pool_deleted[64], removed[160];
        char key[160], code_dir[4096], entrypoint[64], env[4][64], route_pool[64];
        unsigned revision, concurrency, min_instances, max_instances;
        uint64_t cpu_millis;
        bool routed; /* route_stats answers for key */
        /* image fields of the last route and pool */
        char image[80], ready_path[64], command0[64], pool_image[80];
        unsigned port, pool_port;
        uint64_t memory_bytes;
        bool pool_process;
};

static int rec_pool_set(void *ud, const struct lg_pool_spec *ps, struct lg_error *err) {
        (void) err;
        struct rec *r = ud;
        r->pool_sets++;
        r->pool = *ps;
        snprintf(r->pool_name, sizeof(r->pool_name), "%s", ps->name);
        snprintf(r->pool_image, sizeof(r->pool_image), "%s", ps->image ? ps->image : "");
        r->pool_port = ps->port;
        r->pool_process = ps->start_process;
        r->pool.name = r->pool.runtime = r->pool.image = r->pool.ready_path = r->pool.version = NULL;
        r->pool.command = r->pool.args = r->pool.env = NULL;
        return 0;
}

static void rec_pool_delete(void *ud, const char *name) {
        struct rec *r = ud;
        r->pool_deletes++;
        snprintf(r->pool_deleted, sizeof(r->pool_deleted), "%s", name);
}

static int rec_pool_stats(void *ud, const char *name, struct lg_pool_stats *ret) {
        (void) ud;
        if (strcmp(name, "python3"))
                return -ENOENT;
        *ret = (struct lg_pool_stats){.ready = 2, .taken = 5};
        return 0;
}

static int rec_route_set(void *ud, const struct lg_route_config *cfg, struct lg_error *err) {
        (void) err;
        struct rec *r = ud;
        r->route_sets++;
        r->routed = true;
        snprintf(r->key, sizeof(r->key), "%s", cfg->key);
        snprintf(r->code_dir, sizeof(r->code_dir), "%s", cfg->code_dir ? cfg->code_dir : "");
        snprintf(r->entrypoint, sizeof(r->entrypoint), "%s", cfg->entrypoint ? cfg->entrypoint : "");
        snprintf(r->route_pool, sizeof(r->route_pool), "%s", cfg->pool ? cfg->pool : "");
        snprintf(r->image, sizeof(r->image), "%s", cfg->image ? cfg->image : "");
        snprintf(r->ready_path, sizeof(r->ready_path), "%s", cfg->ready_path ? cfg->ready_path : "");
        snprintf(r->command0, sizeof(r->command0), "%s", cfg->command && cfg->command[0] ? cfg->command[0] : "");
        r->port = cfg->port;
        r->memory_bytes = cfg->memory_bytes;
        memset(r->env, 0, sizeof(r->env));
        for (size_t i = 0; cfg->env && cfg->env[i] && i < 4; i++)
                snprintf(r->env[i], sizeof(r->env[i]), "%s", cfg->env[i]);
        r->revision = cfg->revision;
        r->concurrency = cfg->concurrency;
        r->min_instances = cfg->min_instances;
        r->max_instances = cfg->max_instances;
        r->cpu_millis = cfg->cpu_millis;
        return 0;
}

static void rec_route_remove(void *ud, const char *key) {
        struct rec *r = ud;
        r->route_removes++;
        r->routed = false;
        snprintf(r->removed, sizeof(r->removed), "%s", key);
}

static int rec_route_stats(void *ud, const char *key, struct lg_route_stats *ret) {
        struct rec *r = ud;
        if (!r->routed || strcmp(key, r->key))
                return -ENOENT;
        *ret = (struct lg_route_stats){.revision = r->revision, .instances = 1, .requests = 7};
        return 0;
}

static void rec_route_addresses(void *ud, const char *key, void (*fn)(const char *address, void *fud), void *fud) {
        struct rec *r = ud;
        if (r->routed && !strcmp(key, r->key)) {
                fn("10.200.0.5", fud);
                fn("10.200.0.9", fud);
        }
}

static const struct lg_apps_ops ops = {
        .pool_set = rec_pool_set,
        .pool_delete = rec_pool_delete,
        .pool_stats = rec_pool_stats,
        .route_set = rec_route_set,
        .route_remove = rec_route_remove,
        .route_stats = rec_route_stats,
        .route_addresses = rec_route_addresses,
};

struct fx {
        char dir[64];
        uv_loop_t loop;
        lg_store *store;
        struct lg_blobstore *blobs;
        lg_image_store *images;
        lg_image_jobs *image_jobs;
        lg_apps *apps;
        struct rec rec;
        char pkg[80];  /* digest of a good package */
        char pkg2[80]; /* of another */
};

static json_t *js(const char *text) {
        json_error_t je;
        json_t *j = json_loads(text, JSON_ALLOW_NUL, &je);
        if (!j)
                fail_msg("bad test JSON %s: %s", text, je.text);
        return j;
}

/* ---- uploads ------------------------------------------------------------------ */

struct result {
        int calls, status;
        char digest[80], msg[512];
        uint64_t files;
};

static void on_upload(int status, const struct lg_package *pkg, const struct lg_error *err, void *ud) {
        struct result *res = ud;
        res->calls++;
        res->status = status;
        if (pkg) {
                snprintf(res->digest, sizeof(res->digest), "%s", pkg->digest);
                res->files = pkg->info->n_files;
        } else {
                snprintf(res->msg, sizeof(res->msg), "%s", err->msg);
        }
}

/* The bytes of a tar.gz of a directory holding main.py with text. */
static char *make_package(struct fx *f, const char *text, size_t *len) {
        char src[128], out[128];
        snprintf(src, sizeof(src), "%s/src", f->dir);
        snprintf(out, sizeof(out), "%s/pkg.tgz", f->dir);
        mkdir(src, 0700);
        char path[160];
        snprintf(path, sizeof(path), "%s/main.py", src);
        FILE *fp = fopen(path, "w");
        fputs(text, fp);
        fclose(fp);
        int fd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        struct lg_error err = {0};
        OK(lg_pkg_pack_dir(src, fd, NULL, NULL, &err));
        struct stat st;
        fstat(fd, &st);
        char *buf = malloc((size_t) st.st_size);
        assert_int_equal(pread(fd, buf, (size_t) st.st_size, 0), st.st_size);
        close(fd);
        *len = (size_t) st.st_size;
        return buf;
}

/* Upload bytes in chunks and run the loop until its job is done. */
static void upload(struct fx *f, const char *data, size_t len, struct result *res) {
        struct lg_error err = {0};
        lg_apps_upload *u = NULL;
        OK(lg_apps_upload_begin(f->apps, &u, &err));
        for (size_t off = 0; off < len; off += 100)
                lg_apps_upload_write(u, data + off, len - off < 100 ? len - off : 100);
        OK(lg_apps_upload_finish(u, on_upload, res, &err));
        assert_int_equal(res->calls, 0); /* never from inside the call */
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(res->calls, 1);
}

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof(*f));
        strcpy(f->dir, "/tmp/lg-apps-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        struct lg_error err = {0};
        char path[160], logs[160];
        uv_loop_init(&f->loop);
        snprintf(path, sizeof(path), "%s/legion.db", f->dir);
        if (lg_store_open(path, NULL, &f->store, &err) < 0)
                return -1;
        snprintf(path, sizeof(path), "%s/packages", f->dir);
        if (lg_blobstore_open(path, &f->blobs, &err) < 0)
                return -1;
        snprintf(path, sizeof(path), "%s/images", f->dir);
        if (lg_image_store_open(path, &f->images, &err) < 0)
                return -1;
        snprintf(logs, sizeof(logs), "%s/logs", f->dir);
        snprintf(path, sizeof(path), "%s/tmp", f->dir);
        mkdir(path, 0700);
        struct lg_image_jobs_config jc = {.loop = &f->loop, .images = f->images, .tmp_dir = path};
        if (lg_image_jobs_new(&jc, &f->image_jobs, &err) < 0)
                return -1;
        struct lg_apps_config cfg = {.loop = &f->loop, .store = f->store, .blobs = f->blobs, .logs_dir = logs,
                                     .ops = &ops, .ud = &f->rec, .images = f->images, .image_jobs = f->image_jobs};
        if (lg_apps_new(&cfg, &f->apps, &err) < 0)
                return -1;
        *state = f;
        return 0;
}

/* A pool group python3 and two uploaded packages. */
static int setup_app(void **state) {
        if (setup(state) < 0)
                return -1;
        struct fx *f = *state;
        struct lg_error err = {0};
        json_t *pool = js("{\"runtime\": \"python3\", \"ready\": 1, \"memory\": \"256Mi\"}");
        int r = lg_apps_pool_put(f->apps, "python3", pool, NULL, &err);
        json_decref(pool);
        if (r < 0)
                return -1;
        const char *texts[2] = {"print(1)\n", "print(2)\n"};
        char *digests[2] = {f->pkg, f->pkg2};
        for (int i = 0; i < 2; i++) {
                size_t len;
                char *data = make_package(f, texts[i], &len);
                struct result res = {0};
                upload(f, data, len, &res);
                free(data);
                if (res.status < 0)
                        return -1;
                snprintf(digests[i], sizeof(f->pkg), "%s", res.digest);
        }
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        lg_apps_free(f->apps);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        lg_image_jobs_free(f->image_jobs);
        assert_int_equal(uv_loop_close(&f->loop), 0);
        lg_blobstore_close(f->blobs);
        lg_image_store_close(f->images);
        lg_store_close(f->store);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static void test_uploads(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        size_t len;
        char *data = make_package(f, "print('hi')\n", &len);
        struct result good = {0};
        upload(f, data, len, &good);
        assert_int_equal(good.status, 0);
        assert_int_equal(good.files, 1);
        struct lg_blob b;
        OK(lg_store_blob_get(f->store, good.digest, &b, &err));
        assert_int_equal(b.size, len);
        assert_int_equal(lg_blob_exists(f->blobs, good.digest), 1);

        /* Not an archive: refused, and nothing of it kept. */
        static const char junk[] = "this is no archive at all, just words and words";
        struct lg_digest *list = NULL;
        size_t before = 0, after = 0;
        OK(lg_blob_list(f->blobs, &list, &before, &err));
        free(list);
        struct result bad = {0};
        upload(f, junk, sizeof(junk), &bad);
        assert_true(bad.status < 0);
        assert_true(bad.msg[0] != '\0');
        OK(lg_blob_list(f->blobs, &list, &after, &err));
        free(list);
        assert_int_equal(after, before);
        /* The same good bytes again: the same package, still kept. */
        struct result again = {0};
        upload(f, data, len, &again);
        assert_int_equal(again.status, 0);
        assert_string_equal(again.digest, good.digest);

        /* Two finished, the second cancelled while it waits for the first:
         * only the first reports. */
        lg_apps_upload *u1 = NULL, *u2 = NULL, *u3 = NULL;
        struct result r1 = {0}, r2 = {0};
        OK(lg_apps_upload_begin(f->apps, &u1, &err));
        OK(lg_apps_upload_begin(f->apps, &u2, &err));
        OK(lg_apps_upload_begin(f->apps, &u3, &err));
        lg_apps_upload_write(u1, data, len);
        lg_apps_upload_write(u2, data, len);
        OK(lg_apps_upload_finish(u1, on_upload, &r1, &err));
        OK(lg_apps_upload_finish(u2, on_upload, &r2, &err));
        lg_apps_upload_cancel(u2);
        lg_apps_upload_cancel(u3); /* still being written */
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(r1.calls, 1);
        assert_int_equal(r1.status, 0);
        assert_int_equal(r2.calls, 0);
        free(data);
}

static void test_upload_too_large(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_blobstore_set_max_bytes(f->blobs, 1000);
        assert_int_equal(lg_apps_upload_max_bytes(f->apps), 1000);
        lg_apps_upload *u = NULL;
        OK(lg_apps_upload_begin(f->apps, &u, &err));
        char buf[600] = {0};
        lg_apps_upload_write(u, buf, sizeof(buf));
        lg_apps_upload_write(u, buf, sizeof(buf));
        struct result res = {0};
        err = (struct lg_error){0};
        assert_int_equal(lg_apps_upload_finish(u, on_upload, &res, &err), -EFBIG);
        assert_true(err.msg[0] != '\0');
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(res.calls, 0);
}

static void test_pool_groups(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        json_t *s = js("{\"runtime\": \"python3\", \"ready\": 3, \"cpu\": \"500m\", \"memory\": \"128Mi\", "
                       "\"startupBoost\": {\"cpu\": 2, \"seconds\": 10}}");
        struct lg_resource *res = NULL;
        assert_int_equal(lg_apps_pool_put(f->apps, "python3", s, &res, &err), LG_STORE_CREATED);
        json_decref(s);
        assert_string_equal(f->rec.pool_name, "python3");
        assert_int_equal(f->rec.pool.ready, 3);
        assert_int_equal(f->rec.pool.cpu_millis, 500);
        assert_int_equal(f->rec.pool.memory_bytes, 128ull << 20);
        assert_int_equal(f->rec.pool.boost_cpu_millis, 2000);
        assert_int_equal(f->rec.pool.boost_seconds, 10);
        assert_true(f->rec.pool.network); /* function instances get an address */
        json_t *doc = lg_apps_pool_json(f->apps, res);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "status"), "taken")), 5);
        json_decref(doc);
        lg_resource_free(res);

        int sets = f->rec.pool_sets;
        static const struct { const char *spec, *word; } bad[] = {
                {"{\"runtime\": \"python3\", \"color\": 1}", "unknown field in a pool group: `color`"},
                {"{\"runtime\": \"python3\", \"startupBoost\": {\"cpu\": 1, \"seconds\": 1, \"x\": 1}}",
                 "unknown field in startupBoost: `x`"},
                {"{\"runtime\": \"ruby\"}", "`runtime`"},
                {"{}", "`runtime`"},
                {"{\"runtime\": \"node\", \"ready\": 1001}", "`ready`"},
                {"{\"runtime\": \"node\", \"ready\": -1}", "`ready`"},
                {"{\"runtime\": \"node\", \"cpu\": \"0m\"}", "`cpu`"},
                {"{\"runtime\": \"node\", \"memory\": \"1Ki\"}", "`memory`"},
                {"{\"runtime\": \"node\", \"startupBoost\": 5}", "`startupBoost`"},
                {"{\"runtime\": \"node\", \"startupBoost\": {\"cpu\": 1}}", "`startupBoost.seconds`"},
                {"{\"runtime\": \"node\", \"startupBoost\": {\"cpu\": 1, \"seconds\": 3601}}",
                 "`startupBoost.seconds`"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                s = js(bad[i].spec);
                err = (struct lg_error){0};
                int r = lg_apps_pool_put(f->apps, "bad", s, NULL, &err);
                json_decref(s);
                if (r != -EINVAL || !strstr(err.msg, bad[i].word))
                        fail_msg("%s: %d `%s`", bad[i].spec, r, err.msg);
        }
        assert_int_equal(f->rec.pool_sets, sets);
        assert_int_equal(lg_store_get(f->store, LG_KEY("PoolGroup", "", "bad"), NULL, NULL), -ENOENT);

        OK(lg_apps_pool_delete(f->apps, "python3", &err));
        assert_string_equal(f->rec.pool_deleted, "python3");
        assert_int_equal(lg_apps_pool_delete(f->apps, "python3", &err), -ENOENT);
        assert_int_equal(f->rec.pool_deletes, 1);
}

static int put(struct fx *f, const char *name, const char *spec_fmt, const char *pkg, struct lg_error *err) {
        char text[1024];
        snprintf(text, sizeof(text), spec_fmt, pkg);
        json_t *s = js(text);
        int r = lg_apps_put(f->apps, "ns", name, NULL, s, NULL, err);
        json_decref(s);
        return r;
}

static void test_revisions(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        const char *v1 = "{\"runtime\": \"python3\", \"package\": \"%s\", \"settings\": {\"A\": \"1\"}}";
        assert_int_equal(put(f, "web", v1, f->pkg, &err), LG_STORE_CREATED);
        /* Stored, not routed until activated. */
        assert_int_equal(f->rec.route_sets, 0);
        OK(lg_apps_activate(f->apps, "ns", "web", &err));
        assert_string_equal(f->rec.key, "ns/web");
        assert_int_equal(f->rec.revision, 1);
        assert_string_equal(f->rec.route_pool, "python3");
        assert_string_equal(f->rec.env[0], "A=1");
        assert_int_equal(f->rec.concurrency, 10);
        assert_int_equal(f->rec.max_instances, 10);
        char main_py[4200];
        snprintf(main_py, sizeof(main_py), "%s/main.py", f->rec.code_dir);
        assert_int_equal(access(main_py, R_OK), 0);

        /* The same spec again: no new revision. */
        assert_int_equal(put(f, "web", v1, f->pkg, &err), LG_STORE_UNCHANGED);
        OK(lg_apps_activate(f->apps, "ns", "web", &err));
        assert_int_equal(f->rec.revision, 1);
        /* Scaling settings change in place. */
        const char *scaled = "{\"runtime\": \"python3\", \"package\": \"%s\", \"settings\": {\"A\": \"1\"}, "
                             "\"concurrency\": 3, \"minInstances\": 1, \"maxInstances\": 4, \"timeoutSeconds\": 5}";
        assert_int_equal(put(f, "web", scaled, f->pkg, &err), LG_STORE_UPDATED);
        OK(lg_apps_activate(f->apps, "ns", "web", &err));
        assert_int_equal(f->rec.revision, 1);
        assert_int_equal(f->rec.concurrency, 3);
        assert_int_equal(f->rec.min_instances, 1);
        assert_int_equal(f->rec.max_instances, 4);
        /* Settings, code, cpu, entrypoint: each a new revision. */
        const char *changes[] = {
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"settings\": {\"A\": \"2\"}}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"settings\": {\"A\": \"2\"}, \"cpu\": \"250m\"}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"settings\": {\"A\": \"2\"}, \"cpu\": \"250m\", "
                "\"entrypoint\": \"main:app\"}",
        };
        for (unsigned i = 0; i < 3; i++) {
                assert_int_equal(put(f, "web", changes[i], f->pkg, &err), LG_STORE_UPDATED);
                OK(lg_apps_activate(f->apps, "ns", "web", &err));
                assert_int_equal(f->rec.revision, 2 + i);
        }
        assert_int_equal(f->rec.cpu_millis, 250);
        assert_string_equal(f->rec.entrypoint, "main:app");
        assert_int_equal(put(f, "web", changes[2], f->pkg2, &err), LG_STORE_UPDATED);
        OK(lg_apps_activate(f->apps, "ns", "web", &err));
        assert_int_equal(f->rec.revision, 5);
        /* The old package is no longer referenced by the app. */
        struct lg_blob b;
        OK(lg_store_blob_get(f->store, f->pkg, &b, &err));
        assert_int_equal(b.refs, 0);

        /* Refused specs change nothing. */
        static const char *const bad[] = {
                "{\"runtime\": \"node\", \"package\": \"%s\"}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"poolGroup\": \"none\"}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"minInstances\": 5, \"maxInstances\": 2}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"settings\": {\"LEGION_X\": \"1\"}}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"settings\": {\"1A\": \"1\"}}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"settings\": {\"A\": 1}}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"memory\": \"1Gi\"}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"cpu\": \"fast\"}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"concurrency\": 0}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"color\": \"red\"}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"entrypoint\": 5}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"egress\": true}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"egress\": \"198.51.100.0/24\"}",
                "{\"runtime\": \"python3\", \"package\": \"%s\", \"egress\": {\"allow\": [\"10.0.0.1/8\"]}}",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                err = (struct lg_error){0};
                int r = put(f, "web", bad[i], f->pkg, &err);
                if (r != -EINVAL || !err.msg[0] || (strstr(bad[i], "egress") && !strstr(err.msg, "`egress`")))
                        fail_msg("%s: %d `%s`", bad[i], r, err.msg);
        }
        /* A good egress is no new revision: its policy changes in place. */
        assert_int_equal(put(f, "web", "{\"runtime\": \"python3\", \"package\": \"%s\", \"settings\": {\"A\": "
                                       "\"2\"}, \"cpu\": \"250m\", \"entrypoint\": \"main:app\", \"egress\": "
                                       "{\"allow\": [\"198.51.100.0/24:443\"]}}",
                             f->pkg2, &err),
                         LG_STORE_UPDATED);
        char missing[80];
        memset(missing, 'a', 64);
        missing[64] = '\0';
        assert_int_equal(put(f, "web", "{\"runtime\": \"python3\", \"package\": \"%s\"}", missing, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "was not uploaded"));
        assert_int_equal(put(f, "web", "{\"runtime\": \"python3\", \"package\": \"%s\"}", "../../etc", &err),
                         -EINVAL);
        json_t *notobj = js("[1]");
        assert_int_equal(lg_apps_put(f->apps, "ns", "web", NULL, notobj, NULL, &err), -EINVAL);
        json_decref(notobj);
        OK(lg_apps_activate(f->apps, "ns", "web", &err));
        assert_int_equal(f->rec.revision, 5);

        /* The package's tree went missing: activation extracts it again,
         * on the thread pool, never on the loop, and routes the app once
         * the tree is back. */
        OK(lg_blob_delete_extracted(f->blobs, f->pkg2, &err));
        int sets = f->rec.route_sets;
        char tree[256];
        OK(lg_blob_extracted_path(f->blobs, f->pkg2, tree, sizeof(tree)));
        OK(lg_apps_activate(f->apps, "ns", "web", &err));
        assert_int_equal(access(tree, F_OK), -1);
        assert_int_equal(f->rec.route_sets, sets);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(f->rec.route_sets, sets + 1);
        snprintf(main_py, sizeof(main_py), "%s/main.py", f->rec.code_dir);
        assert_int_equal(access(main_py, R_OK), 0);
        /* A tree that cannot come back (the blob is gone too): refused at
         * once, with the reason (what the replay at start-up reports),
         * and nothing is routed. */
        OK(lg_blob_delete_extracted(f->blobs, f->pkg2, &err));
        OK(lg_blob_delete(f->blobs, f->pkg2, &err));
        assert_int_equal(lg_apps_activate(f->apps, "ns", "web", &err), -ENOENT);
        assert_non_null(strstr(err.msg, "is missing"));
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(f->rec.route_sets, sets + 1);

        struct lg_resource *res = NULL;
        OK(lg_store_get(f->store, LG_KEY("App", "ns", "web"), &res, &err));
        json_t *doc = lg_apps_json(f->apps, res);
        json_t *st = json_object_get(doc, "status");
        assert_string_equal(json_string_value(json_object_get(st, "url")), "/fn/ns/web/");
        assert_int_equal(json_integer_value(json_object_get(st, "revision")), 5);
        assert_int_equal(json_integer_value(json_object_get(st, "requests")), 7);
        /* The network address of each running instance. */
        json_t *addresses = json_object_get(st, "addresses");
        assert_int_equal(json_array_size(addresses), 2);
        assert_string_equal(json_string_value(json_array_get(addresses, 0)), "10.200.0.5");
        assert_string_equal(json_string_value(json_array_get(addresses, 1)), "10.200.0.9");
        json_decref(doc);
        lg_resource_free(res);

        OK(lg_apps_delete(f->apps, "ns", "web", &err));
        assert_string_equal(f->rec.removed, "ns/web");
        assert_int_equal(lg_apps_activate(f->apps, "ns", "web", &err), -ENOENT);
        assert_int_equal(lg_apps_delete(f->apps, "ns", "web", &err), -ENOENT);
        assert_int_equal(f->rec.route_removes, 1);
}

static void test_logs(void **state) {
        struct fx *f = *state;
        lg_apps_log("ns/web", "instance i-1 started", f->apps);
        lg_apps_log("no-slash", "ignored", f->apps);
        char path[256], buf[256] = "";
        assert_int_equal(lg_apps_log_path(f->apps, "ns/web", path, sizeof(path)), 0);
        FILE *fp = fopen(path, "r");
        assert_non_null(fp);
        assert_non_null(fgets(buf, sizeof(buf), fp));
        fclose(fp);
        assert_non_null(strstr(buf, " legion: instance i-1 started\n"));
        assert_int_equal(lg_apps_log_path(f->apps, "no-slash", path, sizeof(path)), -EINVAL);
        assert_int_equal(lg_apps_log_path(f->apps, "ns/web", path, 8), -ENAMETOOLONG);
}

/* ---- container apps and image pool groups -------------------------------------- */

static void put_blob(struct fx *f, const char *data, size_t len, char digest[LG_DIGEST_MAX]) {
        struct lg_error e = {0};
        if (lg_image_blob_put(f->images, data, len, digest, &e) < 0)
                fail_msg("blob: %s", e.msg);
}

/* An image of one layer holding /srv/<file> (tar made by tar(1)), tagged
 * name, with Cmd ["httpd"]; its id in id. */
static void make_image(struct fx *f, const char *name, const char *file, char id[80]) {
        char cmd[512], path[256];
        snprintf(cmd, sizeof(cmd), "rm -rf %s/img && mkdir -p %s/img/srv && echo %s > %s/img/srv/%s && "
                                   "tar -C %s/img --numeric-owner --owner=0 --group=0 -cf %s/layer.tar .",
                 f->dir, f->dir, file, f->dir, file, f->dir, f->dir);
        assert_int_equal(system(cmd), 0);
        snprintf(path, sizeof(path), "%s/layer.tar", f->dir);
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        char layer[65536];
        size_t len = fread(layer, 1, sizeof(layer), fp);
        fclose(fp);
        char ld[LG_DIGEST_MAX], cd[LG_DIGEST_MAX], md[LG_DIGEST_MAX];
        put_blob(f, layer, len, ld);
        char config[512], manifest[1024];
        snprintf(config, sizeof(config),
                 "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"httpd\"]},"
                 "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\"]}}",
                 ld);
        put_blob(f, config, strlen(config), cd);
        snprintf(manifest, sizeof(manifest),
                 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                 "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\","
                 "\"size\":%zu},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\","
                 "\"digest\":\"%s\",\"size\":%zu}]}",
                 cd, strlen(config), ld, len);
        put_blob(f, manifest, strlen(manifest), md);
        struct lg_error e = {0};
        struct lg_image *img = NULL;
        if (lg_image_commit(f->images, md, name, NULL, NULL, &img, &e) < 0)
                fail_msg("commit %s: %s", name, e.msg);
        snprintf(id, 80, "%s", img->id);
        lg_image_free(img);
}

/* Two images: test/web:1 (id1) and test/web:2 (id2), a python3 pool. */
struct imgfx {
        char id1[80], id2[80];
};
static struct imgfx ids;

static int setup_images(void **state) {
        if (setup_app(state) < 0)
                return -1;
        struct fx *f = *state;
        make_image(f, "test/web:1", "one", ids.id1);
        make_image(f, "test/web:2", "two", ids.id2);
        return strcmp(ids.id1, ids.id2) ? 0 : -1;
}

static int put_text(struct fx *f, const char *name, const char *text, struct lg_error *err) {
        json_t *s = js(text);
        *err = (struct lg_error){0};
        int r = lg_apps_put(f->apps, "ns", name, NULL, s, NULL, err);
        json_decref(s);
        return r;
}

static int pool_text(struct fx *f, const char *name, const char *text, struct lg_error *err) {
        json_t *s = js(text);
        *err = (struct lg_error){0};
        int r = lg_apps_pool_put(f->apps, name, s, NULL, err);
        json_decref(s);
        return r;
}

static json_t *condition_of(json_t *doc, const char *type) {
        json_t *c;
        size_t i;
        json_array_foreach(json_object_get(json_object_get(doc, "status"), "conditions"), i, c) if (
                !strcmp(json_string_value(json_object_get(c, "type")), type)) return c;
        return NULL;
}

struct pulled {
        int calls, status;
        bool registry;
};

static void on_pulled(const struct lg_image_job_result *res, void *ud) {
        struct pulled *p = ud;
        p->calls++;
        p->status = res->status;
        p->registry = res->registry;
}

static void test_image_specs_hostile(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        OK(pool_text(f, "web", "{\"image\": \"test/web:1\", \"ready\": 1, \"memory\": \"128Mi\"}", &err));
        OK(pool_text(f, "proc", "{\"image\": \"test/web:1\", \"placeholder\": \"process\", \"port\": 8080, "
                                "\"command\": [\"httpd\"], \"env\": {\"A\": \"1\"}}",
                     &err));
        char pkgspec[256];
        snprintf(pkgspec, sizeof(pkgspec), "{\"runtime\": \"python3\", \"package\": \"%s\", \"port\": 80}", f->pkg);
        char long_path[1200] = "{\"image\": \"test/web:1\", \"port\": 80, \"readinessPath\": \"/";
        memset(long_path + strlen(long_path), 'a', 1030);
        strcat(long_path, "\"}");
        const struct {
                const char *spec, *word;
        } bad[] = {
                {"{\"image\": \"test/web:1\"}", "`port`"},
                {"{\"image\": \"test/web:1\", \"port\": 0}", "`port`"},
                {"{\"image\": \"test/web:1\", \"port\": 65536}", "`port`"},
                {"{\"image\": \"test/web:1\", \"port\": \"80\"}", "`port`"},
                {"{\"image\": \"test/web:1\", \"port\": 80.5}", "`port`"},
                {"{\"image\": \"\", \"port\": 80}", "`image` must be an image reference"},
                {"{\"image\": 5, \"port\": 80}", "`image` must be an image reference"},
                {"{\"image\": null, \"port\": 80}", "`image` must be an image reference"},
                {"{\"image\": \"Bad Ref::\", \"port\": 80}", "`image` must be an image reference"},
                {"{\"image\": \"test/web:1\\u0000x\", \"port\": 80}", "`image` must be an image reference"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"runtime\": \"python3\"}", "takes no `runtime`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"entrypoint\": \"main\"}", "takes no `entrypoint`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"settings\": {}}", "takes no `settings`"},
                {pkgspec, "`port` is a field of container apps"},
                {"{\"port\": 80}", "`runtime` must be python3, node or custom (or `image`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"command\": \"httpd -f\"}", "`command` must be an array"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"command\": [1]}", "`command` must be an array"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"args\": [\"a\", null]}", "`args` must be an array"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"args\": [\"a\\u0000b\"]}", "`args` must be an array"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"env\": []}", "`env` must be an object"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"env\": {\"LEGION_X\": \"1\"}}", "env `LEGION_X`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"env\": {\"1A\": \"1\"}}", "env `1A`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"env\": {\"A=B\": \"1\"}}", "env `A=B`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"env\": {\"A\": 1}}", "env `A`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"readinessPath\": \"healthz\"}", "`readinessPath`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"readinessPath\": \"/a b\"}", "`readinessPath`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"readinessPath\": \"/a\\r\\nX: y\"}", "`readinessPath`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"readinessPath\": 7}", "`readinessPath`"},
                {long_path, "`readinessPath`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"memory\": \"1Ti\"}", "`memory`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"imag\": 1}", "unknown field in an app spec: `imag`"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"poolGroup\": \"python3\"}",
                 "pool group `python3` runs python3 workers, not an image"},
                {"{\"poolGroup\": \"python3\", \"port\": 80}", "pool group `python3` runs python3 workers"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"poolGroup\": \"nope\"}", "pool group `nope` does not exist"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"poolGroup\": \"../x\"}", "`poolGroup` must be the name"},
                {"{\"image\": \"test/web:1\", \"port\": 80, \"poolGroup\": 5}", "`poolGroup` must be the name"},
                {"{\"image\": \"test/web:2\", \"port\": 80, \"poolGroup\": \"web\"}",
                 "is not the image of pool group `web`"},
                {"{\"poolGroup\": \"web\", \"port\": 80, \"memory\": \"256Mi\"}", "up to the pool group's"},
                {"{\"poolGroup\": \"proc\", \"port\": 9090}", "starts its own server (placeholder `process`): leave `port`"},
                {"{\"poolGroup\": \"proc\", \"command\": [\"sh\"]}", "leave `command` out"},
                {"{\"poolGroup\": \"proc\", \"env\": {\"A\": \"2\"}}", "leave `env` out"},
                {"{\"image\": \"test/absent:1\", \"port\": 80}", "image `docker.io/test/absent:1` is not in the image store"},
        };
        int sets = f->rec.route_sets;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int r = put_text(f, "bad", bad[i].spec, &err);
                if (r != -EINVAL || !strstr(err.msg, bad[i].word))
                        fail_msg("%s: %d `%s`", bad[i].spec, r, err.msg);
        }
        assert_int_equal(lg_store_get(f->store, LG_KEY("App", "ns", "bad"), NULL, NULL), -ENOENT);
        assert_int_equal(f->rec.route_sets, sets);
        /* The same checks before a pull; a pull that cannot start says so. */
        json_t *s = js("{\"image\": \"test/web:1\", \"port\": 0}");
        assert_int_equal(lg_apps_prepare(f->apps, "ns", "bad", s, NULL, NULL, NULL, NULL, &err), -EINVAL);
        json_decref(s);
        s = js("{\"image\": \"test/web:1\", \"port\": 80}");
        assert_int_equal(lg_apps_prepare(f->apps, "ns", "bad", s, NULL, NULL, NULL, NULL, &err), 1);
        json_decref(s);
        /* A pull from nowhere: done says why, nothing is stored. */
        s = js("{\"image\": \"127.0.0.1:1/absent:1\", \"port\": 80}");
        struct pulled p = {0};
        lg_apps_pull *pull = NULL;
        OK(lg_apps_prepare(f->apps, "ns", "bad", s, NULL, on_pulled, &p, &pull, &err));
        assert_int_equal(p.calls, 0);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(p.calls, 1);
        assert_true(p.status < 0 && p.registry);
        json_decref(s);

        const struct {
                const char *spec, *word;
        } bad_pools[] = {
                {"{\"image\": \"test/web:1\", \"runtime\": \"python3\"}", "takes no `runtime`"},
                {"{\"image\": \"test/web:1\", \"version\": \"3\"}", "`version` is for language workers"},
                {"{\"image\": \"\"}", "`image` must be an image reference"},
                {"{\"image\": [\"test/web:1\"]}", "`image` must be an image reference"},
                {"{\"image\": \"test/web:1\", \"placeholder\": \"warm\"}", "`placeholder` must be"},
                {"{\"image\": \"test/web:1\", \"placeholder\": 1}", "`placeholder` must be"},
                {"{\"image\": \"test/web:1\", \"placeholder\": \"process\"}", "placeholder `process` needs `port`"},
                {"{\"image\": \"test/web:1\", \"port\": 80}", "`port` is only for placeholder `process`"},
                {"{\"image\": \"test/web:1\", \"command\": [\"x\"]}", "`command` is only for placeholder `process`"},
                {"{\"image\": \"test/web:1\", \"placeholder\": \"process\", \"port\": 80, \"command\": \"x\"}",
                 "`command` must be an array"},
                {"{\"image\": \"test/web:1\", \"placeholder\": \"process\", \"port\": 80, \"readinessPath\": \"x\"}",
                 "`readinessPath`"},
                {"{\"image\": \"test/web:1\", \"placeholder\": \"process\", \"port\": 80, \"env\": {\"LEGION_A\": \"\"}}",
                 "env `LEGION_A`"},
                {"{\"image\": \"test/web:1\", \"upgrade\": 1}", "`upgrade` must be an object"},
                {"{\"image\": \"test/web:1\", \"upgrade\": {\"apps\": \"sometimes\"}}", "`upgrade.apps` must be"},
                {"{\"image\": \"test/web:1\", \"upgrade\": {\"maxUnavailable\": 0}}", "`upgrade.maxUnavailable`"},
                {"{\"image\": \"test/web:1\", \"upgrade\": {\"surge\": 1}}", "unknown field in upgrade: `surge`"},
                {"{\"image\": \"test/web:1\", \"startupBoost\": {\"cpu\": 1}}", "`startupBoost.seconds`"},
                {"{\"image\": \"test/web:1\", \"colour\": 1}", "unknown field in an image pool group: `colour`"},
                {"{\"runtime\": \"node\", \"version\": 18}", "`version` must be a string"},
                {"{\"runtime\": \"node\", \"port\": 80}", "unknown field in a pool group: `port`"},
                {"{\"image\": \"test/absent:1\"}", "is not in the image store"},
        };
        int psets = f->rec.pool_sets;
        for (size_t i = 0; i < sizeof(bad_pools) / sizeof(bad_pools[0]); i++) {
                int r = pool_text(f, "badpool", bad_pools[i].spec, &err);
                if (r != -EINVAL || !strstr(err.msg, bad_pools[i].word))
                        fail_msg("%s: %d `%s`", bad_pools[i].spec, r, err.msg);
        }
        assert_int_equal(f->rec.pool_sets, psets);
        assert_int_equal(lg_store_get(f->store, LG_KEY("PoolGroup", "", "badpool"), NULL, NULL), -ENOENT);

        /* legiond --network off: neither, said so. */
        lg_apps_free(f->apps);
        char logs[160];
        snprintf(logs, sizeof(logs), "%s/logs", f->dir);
        struct lg_apps_config cfg = {.loop = &f->loop, .store = f->store, .blobs = f->blobs, .logs_dir = logs,
                                     .ops = &ops, .ud = &f->rec, .images = f->images, .image_jobs = f->image_jobs,
                                     .no_network = true};
        OK(lg_apps_new(&cfg, &f->apps, &err));
        assert_int_equal(put_text(f, "bad", "{\"image\": \"test/web:1\", \"port\": 80}", &err), -EINVAL);
        assert_non_null(strstr(err.msg, "need the node network (legiond --network on)"));
        assert_int_equal(pool_text(f, "badpool", "{\"image\": \"test/web:1\"}", &err), -EINVAL);
        assert_non_null(strstr(err.msg, "need the node network"));
}

static void test_image_revisions(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        const char *spec = "{\"image\": \"test/web:1\", \"port\": 8080, \"command\": [\"httpd\", \"-f\"], "
                           "\"readinessPath\": \"/healthz\", \"memory\": \"64Mi\", \"env\": {\"GREETING\": \"hi\"}}";
        assert_int_equal(put_text(f, "site", spec, &err), LG_STORE_CREATED);
        OK(lg_apps_activate(f->apps, "ns", "site", &err));
        assert_int_equal(f->rec.revision, 1);
        assert_string_equal(f->rec.image, ids.id1);
        assert_string_equal(f->rec.route_pool, ""); /* no pool: made on demand */
        assert_int_equal(f->rec.port, 8080);
        assert_string_equal(f->rec.ready_path, "/healthz");
        assert_string_equal(f->rec.command0, "httpd");
        assert_int_equal(f->rec.memory_bytes, 64ull << 20);
        assert_string_equal(f->rec.env[0], "GREETING=hi");
        assert_string_equal(f->rec.code_dir, "");
        /* The same spec: no new revision. Scaling: none either. */
        assert_int_equal(put_text(f, "site", spec, &err), LG_STORE_UNCHANGED);
        OK(lg_apps_activate(f->apps, "ns", "site", &err));
        assert_int_equal(f->rec.revision, 1);
        /* The tag moved to another image: the same spec is a new revision. */
        char moved[80];
        make_image(f, "test/web:1", "moved", moved);
        assert_string_not_equal(moved, ids.id1);
        assert_int_equal(put_text(f, "site", spec, &err), LG_STORE_UNCHANGED);
        OK(lg_apps_activate(f->apps, "ns", "site", &err));
        assert_int_equal(f->rec.revision, 2);
        assert_string_equal(f->rec.image, moved);
        /* Any revision field: a new one. */
        OK(put_text(f, "site", "{\"image\": \"test/web:1\", \"port\": 8081}", &err));
        OK(lg_apps_activate(f->apps, "ns", "site", &err));
        assert_int_equal(f->rec.revision, 3);
        assert_int_equal(f->rec.port, 8081);
        assert_string_equal(f->rec.command0, "");
        /* Status: the image and conditions. */
        struct lg_resource *res = NULL;
        OK(lg_store_get(f->store, LG_KEY("App", "ns", "site"), &res, &err));
        json_t *doc = lg_apps_json(f->apps, res);
        json_t *image = json_object_get(json_object_get(doc, "status"), "image");
        assert_string_equal(json_string_value(json_object_get(image, "ref")), "docker.io/test/web:1");
        assert_string_equal(json_string_value(json_object_get(image, "id")), moved);
        assert_string_equal(json_string_value(json_object_get(condition_of(doc, "ImagePulled"), "status")), "True");
        assert_string_equal(json_string_value(json_object_get(condition_of(doc, "Ready"), "status")), "True");
        json_decref(doc);
        lg_resource_free(res);
        /* A function becomes a container app and back: packages follow. */
        char text[256];
        snprintf(text, sizeof(text), "{\"runtime\": \"python3\", \"package\": \"%s\"}", f->pkg);
        OK(put_text(f, "flip", text, &err));
        OK(put_text(f, "flip", "{\"image\": \"test/web:2\", \"port\": 80}", &err));
        OK(put_text(f, "flip", text, &err));
        OK(lg_apps_activate(f->apps, "ns", "flip", &err));
        assert_string_equal(f->rec.image, "");
        assert_string_not_equal(f->rec.code_dir, "");
}

static void test_image_pools(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        assert_int_equal(pool_text(f, "web", "{\"image\": \"test/web:1\", \"ready\": 2, \"upgrade\": "
                                             "{\"maxUnavailable\": 2, \"apps\": \"newRevision\"}}",
                                   &err),
                         LG_STORE_CREATED);
        assert_string_equal(f->rec.pool_image, ids.id1);
        assert_int_equal(f->rec.pool.ready, 2);
        assert_int_equal(f->rec.pool.max_unavailable, 2);
        assert_false(f->rec.pool_process);
        OK(pool_text(f, "lazy", "{\"image\": \"test/web:1\"}", &err));
        OK(pool_text(f, "proc", "{\"image\": \"test/web:1\", \"placeholder\": \"process\", \"port\": 8080}", &err));
        assert_true(f->rec.pool_process);
        assert_int_equal(f->rec.pool_port, 8080);

        /* Apps of the pool: the pool's image unless they name the same. */
        OK(put_text(f, "a", "{\"poolGroup\": \"web\", \"port\": 80}", &err));
        OK(lg_apps_activate(f->apps, "ns", "a", &err));
        assert_string_equal(f->rec.route_pool, "web");
        assert_string_equal(f->rec.image, ""); /* the pool's */
        OK(put_text(f, "b", "{\"poolGroup\": \"lazy\", \"image\": \"test/web:1\", \"port\": 80}", &err));
        OK(lg_apps_activate(f->apps, "ns", "b", &err));
        OK(put_text(f, "c", "{\"poolGroup\": \"proc\"}", &err));
        OK(lg_apps_activate(f->apps, "ns", "c", &err));
        assert_int_equal(f->rec.port, 8080); /* the pool's server */
        OK(put_text(f, "d", "{\"poolGroup\": \"proc\", \"port\": 8080}", &err));

        /* newRevision: a new image gives its apps a new revision now. */
        int sets = f->rec.route_sets;
        OK(pool_text(f, "web", "{\"image\": \"test/web:2\", \"ready\": 2, \"upgrade\": {\"apps\": \"newRevision\"}}",
                     &err));
        assert_string_equal(f->rec.pool_image, ids.id2);
        assert_int_equal(f->rec.route_sets, sets + 1);
        assert_string_equal(f->rec.key, "ns/a");
        assert_int_equal(f->rec.revision, 2);
        _cleanup_revision_ struct lg_revision *rev = NULL;
        OK(lg_store_revision_get(f->store, LG_KEY("App", "ns", "a"), 0, &rev, &err));
        assert_string_equal(json_string_value(json_object_get(rev->spec, "imageId")), ids.id2);
        /* The same image again: nothing. nextInstance: nothing either. */
        OK(pool_text(f, "web", "{\"image\": \"test/web:2\", \"ready\": 3, \"upgrade\": {\"apps\": \"newRevision\"}}",
                     &err));
        OK(pool_text(f, "lazy", "{\"image\": \"test/web:2\"}", &err));
        assert_int_equal(f->rec.route_sets, sets + 1);

        /* Pool status: its image. */
        struct lg_resource *res = NULL;
        OK(lg_store_get(f->store, LG_KEY("PoolGroup", "", "web"), &res, &err));
        json_t *doc = lg_apps_pool_json(f->apps, res);
        json_t *img = json_object_get(json_object_get(doc, "status"), "image");
        assert_string_equal(json_string_value(json_object_get(img, "id")), ids.id2);
        assert_string_equal(json_string_value(json_object_get(img, "ref")), "docker.io/test/web:2");
        json_decref(doc);
        lg_resource_free(res);

        /* Pins: the pools' and apps' images are in use, by name. */
        char who[200];
        assert_int_equal(lg_apps_image_user(f->apps, ids.id2, who, sizeof(who)), 1);
        assert_non_null(strstr(who, "pool group `"));
        struct lg_image *i2 = NULL;
        OK(lg_image_get(f->images, ids.id2, &i2, &err));
        char layer2[4096];
        snprintf(layer2, sizeof(layer2), "%s", i2->layer_dirs[0]);
        lg_image_free(i2);
        /* Its layers and id are kept also once its tag moved (the store
         * keeps it, dangling, until GC leaves out an id not listed). */
        char moved[80];
        make_image(f, "test/web:2", "moved", moved);
        OK(lg_image_get(f->images, ids.id2, &i2, &err));
        assert_true(i2->dangling);
        lg_image_free(i2);
        char **dirs = NULL;
        size_t n = 0;
        struct lg_strlist l = {0};
        OK(lg_apps_images_in_use(f->apps, &l));
        OK(lg_strlist_take(&l, &dirs, &n));
        bool listed = false;
        for (size_t i = 0; i < n; i++) {
                listed = listed || !strcmp(dirs[i], ids.id2);
                for (size_t k = 0; k < i; k++)
                        assert_string_not_equal(dirs[k], dirs[i]); /* each once */
        }
        for (size_t i = 0; i < n; i++)
                free(dirs[i]);
        free(dirs);
        assert_true(listed);
        dirs = NULL;
        n = 0;
        OK(lg_apps_layers_in_use(f->apps, &l));
        OK(lg_strlist_take(&l, &dirs, &n));
        bool found = false;
        for (size_t i = 0; i < n; i++) {
                found = found || !strcmp(dirs[i], layer2);
                free(dirs[i]);
        }
        free(dirs);
        assert_true(found);
        OK(lg_apps_delete(f->apps, "ns", "c", &err));
        OK(lg_apps_delete(f->apps, "ns", "d", &err));
        OK(lg_apps_pool_delete(f->apps, "proc", &err));
        OK(lg_apps_delete(f->apps, "ns", "b", &err));
        assert_int_equal(lg_apps_image_user(f->apps, ids.id1, who, sizeof(who)), 0);
        OK(lg_apps_pool_delete(f->apps, "web", &err));
        OK(lg_apps_pool_delete(f->apps, "lazy", &err));
        /* App a's revision still names id2. */
        assert_int_equal(lg_apps_image_user(f->apps, ids.id2, who, sizeof(who)), 1);
        assert_string_equal(who, "app `ns/a`");
}

/* ---- access (apps-auth.c) ----------------------------------------------------- */

static enum lg_app_auth auth_of(struct fx *f, const char *ns, const char *name) {
        return lg_apps_auth(f->apps, ns, name);
}

static void test_auth(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        const char *plain = "{\"runtime\": \"python3\", \"package\": \"%s\"}";
        const char *pub = "{\"runtime\": \"python3\", \"package\": \"%s\", \"auth\": \"none\"}";
        const char *keyed = "{\"runtime\": \"python3\", \"package\": \"%s\", \"auth\": \"keys\"}";
        assert_int_equal(put(f, "web", plain, f->pkg, &err), LG_STORE_CREATED);
        assert_int_equal(auth_of(f, "ns", "web"), LG_APP_AUTH_TOKEN);
        /* In place: the table changes at the put, no new revision. */
        assert_int_equal(put(f, "web", pub, f->pkg, &err), LG_STORE_UPDATED);
        assert_int_equal(auth_of(f, "ns", "web"), LG_APP_AUTH_NONE);
        _cleanup_revision_ struct lg_revision *rev = NULL;
        OK(lg_store_revision_get(f->store, LG_KEY("App", "ns", "web"), 0, &rev, &err));
        assert_int_equal(rev->number, 1);
        assert_int_equal(put(f, "web", keyed, f->pkg, &err), LG_STORE_UPDATED);
        assert_int_equal(auth_of(f, "ns", "web"), LG_APP_AUTH_KEYS);
        /* Hostile values: refused, nothing changed. */
        const char *bad[] = {"\"NONE\"", "\"\"", "1", "null", "true", "{\"a\": 1}", "[\"none\"]", "\"none \"",
                             "\"nonex\"", "\"toke\""};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                char spec[256];
                snprintf(spec, sizeof(spec), "{\"runtime\": \"python3\", \"package\": \"%%s\", \"auth\": %s}", bad[i]);
                assert_int_equal(put(f, "web", spec, f->pkg, &err), -EINVAL);
                assert_non_null(strstr(err.msg, "`auth` must be token, keys or none"));
                assert_int_equal(auth_of(f, "ns", "web"), LG_APP_AUTH_KEYS);
        }
        /* A NUL inside (the API's parser refuses it before; lg_apps too). */
        char text[256];
        snprintf(text, sizeof(text), plain, f->pkg);
        json_t *nul = js(text);
        json_object_set_new(nul, "auth", json_stringn("none\0x", 6));
        assert_int_equal(lg_apps_put(f->apps, "ns", "web", NULL, nul, NULL, &err), -EINVAL);
        json_decref(nul);
        assert_int_equal(auth_of(f, "ns", "web"), LG_APP_AUTH_KEYS);
        /* Unknown apps and names that are no apps: token, as token apps. */
        assert_int_equal(auth_of(f, "ns", "we"), LG_APP_AUTH_TOKEN);
        assert_int_equal(auth_of(f, "ns", "webb"), LG_APP_AUTH_TOKEN);
        assert_int_equal(auth_of(f, "other", "web"), LG_APP_AUTH_TOKEN);
        assert_int_equal(auth_of(f, "ns/web", ""), LG_APP_AUTH_TOKEN);
        assert_int_equal(auth_of(f, NULL, "web"), LG_APP_AUTH_TOKEN);
        assert_int_equal(lg_apps_auth(NULL, "ns", "web"), LG_APP_AUTH_TOKEN);
        char longname[600];
        memset(longname, 'a', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        assert_int_equal(auth_of(f, longname, longname), LG_APP_AUTH_TOKEN);

        /* Many apps put in any order: each keeps its own (the sorted table). */
        enum { N = 150 };
        for (int i = 0; i < N; i++) {
                int j = (i * 37) % N; /* 37 and 150 are coprime: every j once */
                char name[32];
                snprintf(name, sizeof(name), "a%d", j);
                assert_true(put(f, name, j % 3 == 0 ? plain : j % 3 == 1 ? pub : keyed, f->pkg, &err) >= 0);
        }
        for (int j = 0; j < N; j++) {
                char name[32];
                snprintf(name, sizeof(name), "a%d", j);
                assert_int_equal(auth_of(f, "ns", name),
                                 j % 3 == 0 ? LG_APP_AUTH_TOKEN : j % 3 == 1 ? LG_APP_AUTH_NONE : LG_APP_AUTH_KEYS);
        }

        /* Keys: of an existing app only, found with their app, listed
         * without secrets, deleted through their own app only. */
        struct lg_token t, found, other;
        char secret[LG_TOKEN_SECRET_SIZE], secret2[LG_TOKEN_SECRET_SIZE];
        assert_int_equal(lg_apps_key_create(f->apps, "ns", "nope", "x", &t, secret, &err), -ENOENT);
        OK(lg_apps_key_create(f->apps, "ns", "web", "ci", &t, secret, &err));
        OK(lg_apps_key_create(f->apps, "ns", "a1", NULL, &other, secret2, &err));
        assert_memory_equal(secret, LG_APP_KEY_PREFIX, strlen(LG_APP_KEY_PREFIX));
        OK(lg_store_token_lookup(f->store, secret, &found, &err));
        assert_string_equal(found.app, "web");
        assert_string_equal(found.namespace, "ns");
        struct lg_token_list l = {0};
        OK(lg_apps_key_list(f->apps, "ns", "web", &l, &err));
        assert_int_equal(l.n, 1);
        assert_string_equal(l.items[0].id, t.id);
        lg_token_list_free(&l);
        OK(lg_store_token_list(f->store, "ns", &l, &err)); /* the API's tokens: no key among them */
        assert_int_equal(l.n, 0);
        lg_token_list_free(&l);
        assert_int_equal(lg_apps_key_delete(f->apps, "ns", "a1", t.id, &err), -ENOENT);
        assert_int_equal(lg_apps_key_delete(f->apps, "ns", "web", "../../x", &err), -ENOENT);
        OK(lg_store_token_lookup(f->store, secret, NULL, &err));
        /* Deleting the app deletes its keys and its row; others stay. */
        OK(lg_apps_delete(f->apps, "ns", "web", &err));
        assert_int_equal(lg_store_token_lookup(f->store, secret, NULL, &err), -ENOENT);
        assert_int_equal(auth_of(f, "ns", "web"), LG_APP_AUTH_TOKEN);
        OK(lg_store_token_lookup(f->store, secret2, NULL, &err));
        assert_int_equal(auth_of(f, "ns", "a1"), LG_APP_AUTH_NONE);
        OK(lg_apps_key_delete(f->apps, "ns", "a1", other.id, &err));
        assert_int_equal(lg_store_token_lookup(f->store, secret2, NULL, &err), -ENOENT);
        /* Restore sets it from the stored spec (legiond's start: a new
         * lg_apps on the same store). */
        struct lg_resource *res = NULL;
        OK(lg_store_get(f->store, LG_KEY("App", "ns", "a2"), &res, &err));
        char logs[160];
        snprintf(logs, sizeof(logs), "%s/logs", f->dir);
        struct lg_apps_config cfg = {.loop = &f->loop, .store = f->store, .blobs = f->blobs, .logs_dir = logs,
                                     .ops = &ops, .ud = &f->rec};
        lg_apps *again = NULL;
        OK(lg_apps_new(&cfg, &again, &err));
        assert_int_equal(lg_apps_auth(again, "ns", "a2"), LG_APP_AUTH_TOKEN);
        OK(lg_apps_restore_app(again, res, &err));
        assert_int_equal(lg_apps_auth(again, "ns", "a2"), LG_APP_AUTH_KEYS);
        lg_apps_free(again);
        lg_resource_free(res);
}

/* A function whose code is a package image (`packageImage`): its field
 * checks, a node without lazy store, a deploy whose registry cannot be
 * reached (refused from the loop, nothing stored), and a put of a package
 * this node never fetched. */
struct pkg_done {
        int calls, status;
        bool registry;
        char msg[512];
};

static void on_pkg_done(const struct lg_image_job_result *res, void *ud) {
        struct pkg_done *d = ud;
        d->calls++;
        d->status = res->status;
        d->registry = res->registry;
        snprintf(d->msg, sizeof(d->msg), "%s", res->status < 0 ? res->err->msg : "");
}

static void test_package_images(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        /* legiond without a lazy store takes none. */
        assert_int_equal(put_text(f, "p", "{\"runtime\": \"python3\", \"packageImage\": \"127.0.0.1:1/code/x:v1\"}",
                                  &err),
                         -EINVAL);
        assert_non_null(strstr(err.msg, "takes no `packageImage`"));
        char logs[160], lazy[160];
        snprintf(logs, sizeof(logs), "%s/logs", f->dir);
        snprintf(lazy, sizeof(lazy), "%s/lazy", f->dir);
        struct lg_apps_config cfg = {.loop = &f->loop, .store = f->store, .blobs = f->blobs, .logs_dir = logs,
                                     .ops = &ops, .ud = &f->rec, .lazy_dir = lazy};
        lg_apps *a = NULL;
        OK(lg_apps_new(&cfg, &a, &err));
        char both[300];
        snprintf(both, sizeof(both),
                 "{\"runtime\": \"python3\", \"package\": \"%s\", \"packageImage\": \"127.0.0.1:1/c:v1\"}", f->pkg);
        const struct {
                const char *spec, *word;
        } bad[] = {
                {both, "exclude each other"},
                {"{\"runtime\": \"python3\", \"packageImage\": \"\"}", "`packageImage` must be a package reference"},
                {"{\"runtime\": \"python3\", \"packageImage\": 5}", "`packageImage` must be a package reference"},
                {"{\"runtime\": \"python3\", \"packageImage\": null}", "`packageImage` must be a package reference"},
                {"{\"runtime\": \"python3\", \"packageImage\": \"Bad Ref::\"}", "`packageImage` must be"},
                {"{\"runtime\": \"python3\", \"packageImage\": \"127.0.0.1:1/c:v1\\u0000x\"}", "`packageImage` must be"},
                {"{\"runtime\": \"python3\", \"packageImage\": \"127.0.0.1:1/c@sha256:12\"}", "`packageImage` must be"},
                {"{\"runtime\": \"python3\", \"packageImage\": \"127.0.0.1:1/c:v1\", \"port\": 80}",
                 "`port` is a field of container apps"},
                {"{\"packageImage\": \"127.0.0.1:1/c:v1\"}", "`runtime` must be"},
                /* Well-formed, but this node never fetched it: only a
                 * deploy through the API (lg_apps_prepare) stores it. */
                {"{\"runtime\": \"python3\", \"packageImage\": \"127.0.0.1:1/c:v1\"}", "was not fetched by this node"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                json_t *spec = js(bad[i].spec);
                err = (struct lg_error){0};
                int r = lg_apps_put(a, "ns", "p", NULL, spec, NULL, &err);
                json_decref(spec);
                if (r != -EINVAL || !strstr(err.msg, bad[i].word))
                        fail_msg("spec %zu: %d `%s`, wanted `%s`", i, r, err.msg, bad[i].word);
        }
        /* A deploy: the fetch runs off the loop and fails at the registry
         * (nothing listens on port 1); done says so, nothing is stored. */
        json_t *spec = js("{\"runtime\": \"python3\", \"packageImage\": \"127.0.0.1:1/code/x:v1\"}");
        struct pkg_done d = {0};
        lg_apps_pull *pull = NULL;
        OK(lg_apps_prepare(a, "ns", "p", spec, NULL, on_pkg_done, &d, &pull, &err));
        assert_int_equal(d.calls, 0); /* never from inside the call */
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.calls, 1);
        assert_true(d.status < 0);
        assert_true(d.registry);
        assert_non_null(strstr(d.msg, "127.0.0.1:1"));
        struct lg_resource *res = NULL;
        assert_int_equal(lg_store_get(f->store, LG_KEY("App", "ns", "p"), &res, &err), -ENOENT);
        /* One cancelled before its job ran: no callback. */
        d = (struct pkg_done){0};
        OK(lg_apps_prepare(a, "ns", "p", spec, NULL, on_pkg_done, &d, &pull, &err));
        lg_apps_pull_cancel(pull);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.calls, 0);
        json_decref(spec);
        lg_apps_free(a);
}

/* GC of package images' lazy layers: a layer some stored revision names
 * stays (an older revision's too), the others go with their marks, and a
 * mounted one is detached first through the ops (here: none mounted, so
 * detach is not called). */
static int rec_detach_calls;
static int rec_detach(void *ud, const char *hex, const char *mp, struct lg_error *err) {
        (void) ud, (void) hex, (void) mp, (void) err;
        rec_detach_calls++;
        return 0;
}

static void test_package_gc(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        char lazy[160], path[400];
        snprintf(lazy, sizeof(lazy), "%s/lazy", f->dir);
        static const struct lg_image_lazy_ops lops = {.detach = rec_detach};
        struct lg_apps_config cfg = {.loop = &f->loop, .store = f->store, .blobs = f->blobs, .logs_dir = lazy,
                                     .ops = &ops, .ud = &f->rec, .lazy_dir = lazy, .lazy_ops = &lops};
        lg_apps *a = NULL;
        OK(lg_apps_new(&cfg, &a, &err));
        const char *hex[3] = {"1111111111111111111111111111111111111111111111111111111111111111",
                              "2222222222222222222222222222222222222222222222222222222222222222",
                              "3333333333333333333333333333333333333333333333333333333333333333"};
        for (int i = 0; i < 3; i++) {
                snprintf(path, sizeof(path), "%s/layers/%s", lazy, hex[i]);
                OK(lg_mkdir_p(path, 0700));
                snprintf(path, sizeof(path), "%s/packages", lazy);
                OK(lg_mkdir_p(path, 0700));
                snprintf(path, sizeof(path), "%s/packages/%s", lazy, hex[i]);
                OK(lg_write_file_at(AT_FDCWD, path, "x", true));
        }
        /* App web: revision 1 of package 1, revision 2 of package 2. */
        const struct lg_resource_key *key = LG_KEY("App", "ns", "web");
        json_t *spec = js("{\"runtime\": \"python3\", \"packageImage\": \"127.0.0.1:1/c:v1\"}");
        OK(lg_store_apply(f->store, key, NULL, spec, NULL, &err));
        for (int i = 0; i < 2; i++) {
                json_t *rev = json_deep_copy(spec);
                json_object_set_new(rev, "package", json_string(hex[i]));
                json_object_set_new(rev, "packageDigest", json_string("sha256:0"));
                int64_t n = 0;
                OK(lg_store_revision_add(f->store, key, rev, &n, &err));
                json_decref(rev);
        }
        json_decref(spec);
        void *job = NULL;
        uint64_t removed = 0;
        /* A package fetch queued or running: nothing goes this time. */
        json_t *dspec = js("{\"runtime\": \"python3\", \"packageImage\": \"127.0.0.1:1/code/x:v1\"}");
        struct pkg_done d = {0};
        lg_apps_pull *pull = NULL;
        OK(lg_apps_prepare(a, "ns", "other", dspec, NULL, on_pkg_done, &d, &pull, &err));
        OK(lg_apps_package_gc_prepare(a, &job, &err));
        assert_null(job);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.calls, 1);
        /* One that ran after the keep list was taken: nothing goes either. */
        OK(lg_apps_package_gc_prepare(a, &job, &err));
        assert_non_null(job);
        OK(lg_apps_prepare(a, "ns", "other", dspec, NULL, on_pkg_done, &d, &pull, &err));
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.calls, 2);
        OK(lg_apps_package_gc_run(job, &removed, &err));
        assert_int_equal(removed, 0);
        json_decref(dspec);
        OK(lg_apps_package_gc_prepare(a, &job, &err));
        assert_non_null(job);
        OK(lg_apps_package_gc_run(job, &removed, &err));
        assert_int_equal(removed, 1);
        assert_int_equal(rec_detach_calls, 0);
        for (int i = 0; i < 3; i++) {
                snprintf(path, sizeof(path), "%s/layers/%s", lazy, hex[i]);
                assert_int_equal(access(path, F_OK) == 0, i < 2);
                snprintf(path, sizeof(path), "%s/packages/%s", lazy, hex[i]);
                assert_int_equal(access(path, F_OK) == 0, i < 2);
        }
        /* The app gone: the rest go. A job prepared but never run is freed. */
        OK(lg_apps_delete(a, "ns", "web", &err));
        OK(lg_apps_package_gc_prepare(a, &job, &err));
        lg_apps_package_gc_free(job);
        OK(lg_apps_package_gc_prepare(a, &job, &err));
        OK(lg_apps_package_gc_run(job, &removed, &err));
        assert_int_equal(removed, 2);
        snprintf(path, sizeof(path), "%s/layers/%s", lazy, hex[0]);
        assert_int_equal(access(path, F_OK), -1);
        lg_apps_free(a);
}

/* At restart, an image gone from the store is pulled in the background,
 * and the status says how that went. */
static void test_image_restore_pulls(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        json_t *spec = js("{\"image\": \"127.0.0.1:1/gone:1\", \"ready\": 1}");
        struct lg_resource *pool = NULL, *app = NULL;
        OK(lg_store_apply(f->store, LG_KEY("PoolGroup", "", "gone"), NULL, spec, &pool, &err));
        json_decref(spec);
        int sets = f->rec.pool_sets, routes = f->rec.route_sets;
        OK(lg_apps_restore_pool(f->apps, pool, &err));
        json_t *doc = lg_apps_pool_json(f->apps, pool);
        assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(doc, "status"), "pull"),
                                                              "image")),
                            "127.0.0.1:1/gone:1");
        json_decref(doc);
        spec = js("{\"image\": \"127.0.0.1:1/gone:1\", \"port\": 80}");
        OK(lg_store_apply(f->store, LG_KEY("App", "ns", "lost"), NULL, spec, &app, &err));
        json_t *rev = js("{\"image\": \"127.0.0.1:1/gone:1\", \"port\": 80, \"imageId\": "
                         "\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"}");
        int64_t number;
        OK(lg_store_revision_add(f->store, LG_KEY("App", "ns", "lost"), rev, &number, &err));
        json_decref(rev);
        json_decref(spec);
        OK(lg_apps_restore_app(f->apps, app, &err));
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(f->rec.pool_sets, sets);
        assert_int_equal(f->rec.route_sets, routes);
        doc = lg_apps_pool_json(f->apps, pool);
        assert_non_null(json_string_value(json_object_get(json_object_get(json_object_get(doc, "status"), "pull"),
                                                          "error")));
        json_decref(doc);
        doc = lg_apps_json(f->apps, app);
        json_t *c = condition_of(doc, "ImagePulled");
        assert_string_equal(json_string_value(json_object_get(c, "status")), "False");
        assert_string_equal(json_string_value(json_object_get(c, "reason")), "ImagePullFailed");
        assert_string_equal(json_string_value(json_object_get(condition_of(doc, "Ready"), "reason")), "ImagePullFailed");
        json_decref(doc);
        char path[256], line[512] = "";
        OK(lg_apps_log_path(f->apps, "ns/lost", path, sizeof(path)));
        FILE *fp = fopen(path, "r");
        assert_non_null(fp);
        assert_non_null(fgets(line, sizeof(line), fp));
        fclose(fp);
        assert_non_null(strstr(line, "image `127.0.0.1:1/gone:1` could not be pulled"));
        lg_resource_free(pool);
        lg_resource_free(app);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_uploads, setup, teardown),
                cmocka_unit_test_setup_teardown(test_upload_too_large, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pool_groups, setup, teardown),
                cmocka_unit_test_setup_teardown(test_revisions, setup_app, teardown),
                cmocka_unit_test_setup_teardown(test_logs, setup, teardown),
                cmocka_unit_test_setup_teardown(test_image_specs_hostile, setup_images, teardown),
                cmocka_unit_test_setup_teardown(test_image_revisions, setup_images, teardown),
                cmocka_unit_test_setup_teardown(test_image_pools, setup_images, teardown),
                cmocka_unit_test_setup_teardown(test_image_restore_pulls, setup_images, teardown),
                cmocka_unit_test_setup_teardown(test_auth, setup_app, teardown),
                cmocka_unit_test_setup_teardown(test_package_images, setup_app, teardown),
                cmocka_unit_test_setup_teardown(test_package_gc, setup_app, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
