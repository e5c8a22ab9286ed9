/* Unit tests of the image jobs (src/image/jobs.c) on a real libuv loop and
 * image store, with recording ops in place of the pod manager: an import
 * of bytes that are no archive (refused, named "the archive", nothing left
 * in the temporary directory), an empty one, cancellation while reading
 * and while queued, GC with the layers in use asked for, a pull from a
 * registry that is not there, removal of what does not exist. Imports and
 * pulls that succeed are tested end to end (tests/e2e/test_images.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test-ok.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/image-internal.h"
#include "image/jobs.h"

struct rec {
        int layer_calls, removed;
        bool warm;
        int fail; /* layers_in_use fails with this when < 0 */
        bool named; /* image_user: every image is a pool group's */
        int id_calls, id_fail; /* images_in_use: calls; fails with id_fail when < 0 */
        int extra_prepared, extra_ran, extra_freed, extra_fail; /* extra_gc_*; prepare fails with extra_fail */
};

static int rec_layers(void *ud, bool warm, char ***ret, size_t *n) {
        struct rec *r = ud;
        r->layer_calls++;
        r->warm = warm;
        if (r->fail < 0)
                return r->fail;
        *ret = calloc(1, sizeof(char *));
        (*ret)[0] = strdup("/nowhere/layer");
        *n = 1;
        return 0;
}

static void rec_removed(void *ud, const char *id) {
        (void) id;
        ((struct rec *) ud)->removed++;
}

static int rec_user(void *ud, const char *id, char *who, size_t cap) {
        (void) id;
        snprintf(who, cap, "pool group `web`");
        return ((struct rec *) ud)->named;
}

static int rec_ids(void *ud, char ***ret, size_t *n) {
        struct rec *r = ud;
        r->id_calls++;
        if (r->id_fail < 0)
                return r->id_fail;
        *ret = calloc(2, sizeof(char *));
        (*ret)[0] = strdup("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        *n = 1;
        return 0;
}

/* The extra GC's job is the rec itself. */
static int rec_extra_prepare(void *ud, void **job, struct lg_error *err) {
        struct rec *r = ud;
        r->extra_prepared++;
        if (r->extra_fail < 0)
                return lg_error_setm(err, -r->extra_fail, "cannot list the package images in use");
        *job = r;
        return 0;
}

static int rec_extra_run(void *job, uint64_t *removed, struct lg_error *err) {
        (void) err;
        ((struct rec *) job)->extra_ran++;
        *removed = 3;
        return 0;
}

static void rec_extra_free(void *job) { ((struct rec *) job)->extra_freed++; }

static const struct lg_image_jobs_ops ops = {rec_layers,        rec_removed,   rec_user,      rec_ids,
                                             rec_extra_prepare, rec_extra_run, rec_extra_free};

struct fx {
        char dir[64], tmp[96];
        uv_loop_t loop;
        lg_image_store *st;
        lg_image_jobs *jobs;
        struct rec rec;
};

struct done {
        int calls, progress, status;
        bool registry, has_gc;
        uint64_t packages_removed;
        char msg[512];
};

static void on_done(const struct lg_image_job_result *res, void *ud) {
        struct done *d = ud;
        d->calls++;
        d->status = res->status;
        d->registry = res->registry;
        d->has_gc = res->gc != NULL;
        d->packages_removed = res->gc ? res->gc->packages_removed : 0;
        snprintf(d->msg, sizeof(d->msg), "%s", res->status < 0 ? res->err->msg : "");
}

static void on_progress(const struct lg_image_progress *p, void *ud) {
        (void) p;
        ((struct done *) ud)->progress++;
}

static int setup(void **state) {
        struct fx *f = calloc(1, sizeof(*f));
        strcpy(f->dir, "/tmp/lg-imgjobs-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        struct lg_error err = {0};
        char path[96];
        snprintf(path, sizeof(path), "%s/images", f->dir);
        snprintf(f->tmp, sizeof(f->tmp), "%s/tmp", f->dir);
        uv_loop_init(&f->loop);
        if (lg_image_store_open(path, &f->st, &err) < 0)
                return -1;
        struct lg_image_jobs_config cfg = {.loop = &f->loop, .images = f->st, .tmp_dir = f->tmp, .ops = &ops,
                                           .ud = &f->rec};
        if (lg_image_jobs_new(&cfg, &f->jobs, &err) < 0)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fx *f = *state;
        uv_run(&f->loop, UV_RUN_DEFAULT);
        lg_image_jobs_free(f->jobs);
        assert_int_equal(uv_loop_close(&f->loop), 0);
        lg_image_store_close(f->st);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static size_t tmp_entries(struct fx *f) {
        DIR *d = opendir(f->tmp);
        size_t n = 0;
        for (struct dirent *e; d && (e = readdir(d));)
                n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
        if (d)
                closedir(d);
        return n;
}

static void test_import_refused(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_image_job *job = NULL;
        OK(lg_image_import_begin(f->jobs, "busybox:1", &job, &err));
        /* The file is unlinked as soon as it is made. */
        assert_int_equal(tmp_entries(f), 0);
        static const char junk[] = "not a tar, not a docker save, not an OCI layout";
        for (int i = 0; i < 100; i++)
                lg_image_import_write(job, junk, sizeof(junk));
        struct done d = {0};
        OK(lg_image_import_finish(job, on_progress, on_done, &d, &err));
        assert_int_equal(d.calls, 0); /* never from inside the call */
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.calls, 1);
        assert_true(d.status < 0);
        assert_false(d.registry);
        assert_null(strstr(d.msg, "/proc/self/fd"));
        assert_non_null(strstr(d.msg, "the archive"));
        assert_int_equal(tmp_entries(f), 0);
}

static void test_import_empty(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_image_job *job = NULL;
        OK(lg_image_import_begin(f->jobs, NULL, &job, &err));
        struct done d = {0};
        assert_int_equal(lg_image_import_finish(job, NULL, on_done, &d, &err), -ENODATA);
        assert_non_null(strstr(err.msg, "must be an image archive"));
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.calls, 0);
}

static void test_cancel(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_image_job *reading = NULL, *queued = NULL;
        OK(lg_image_import_begin(f->jobs, NULL, &reading, &err));
        lg_image_import_write(reading, "x", 1);
        lg_image_job_cancel(reading); /* the client went away mid-upload */
        OK(lg_image_import_begin(f->jobs, NULL, &queued, &err));
        lg_image_import_write(queued, "x", 1);
        struct done d = {0};
        OK(lg_image_import_finish(queued, on_progress, on_done, &d, &err));
        lg_image_job_cancel(queued); /* on the thread pool: finishes there */
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.calls, 0);
        assert_int_equal(d.progress, 0);
}

static void test_gc(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_image_job *job = NULL;
        struct done d = {0};
        OK(lg_image_gc_start(f->jobs, on_done, &d, &job, &err));
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.calls, 1);
        assert_int_equal(d.status, 0);
        assert_true(d.has_gc);
        /* Warm sandboxes' layers are kept too. */
        assert_int_equal(f->rec.layer_calls, 1);
        assert_true(f->rec.warm);
        /* And the images run by id (dangling ones stay indexed). */
        assert_int_equal(f->rec.id_calls, 1);
        /* The extra GC (package images) ran once, its count in the result. */
        assert_int_equal(f->rec.extra_prepared, 1);
        assert_int_equal(f->rec.extra_ran, 1);
        assert_int_equal(f->rec.extra_freed, 0);
        assert_int_equal(d.packages_removed, 3);
        /* Without the list of layers in use, no GC. */
        f->rec.fail = -ENOMEM;
        struct done d2 = {0};
        assert_int_equal(lg_image_gc_start(f->jobs, on_done, &d2, &job, &err), -ENOMEM);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d2.calls, 0);
        /* Nor without the list of images in use. */
        f->rec.fail = 0;
        f->rec.id_fail = -EIO;
        assert_int_equal(lg_image_gc_start(f->jobs, on_done, &d2, &job, &err), -EIO);
        assert_non_null(strstr(err.msg, "images in use"));
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d2.calls, 0);
        /* Nor without the extra GC's list. */
        f->rec.id_fail = 0;
        f->rec.extra_fail = -EIO;
        assert_int_equal(lg_image_gc_start(f->jobs, on_done, &d2, &job, &err), -EIO);
        assert_non_null(strstr(err.msg, "package images in use"));
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d2.calls, 0);
        assert_int_equal(f->rec.extra_ran, 1);
        /* A cancelled GC: its extra job is run (a job on the thread pool
         * still runs; cancel only drops the callback) or freed, once. */
        f->rec.extra_fail = 0;
        OK(lg_image_gc_start(f->jobs, on_done, &d2, &job, &err));
        lg_image_job_cancel(job);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d2.calls, 0);
        assert_int_equal(f->rec.extra_prepared, 3);
        assert_int_equal(f->rec.extra_ran + f->rec.extra_freed, 2);
}

static void test_pull_unreachable(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        lg_image_job *job = NULL;
        struct done d = {0};
        struct lg_registry_auth auth = {.username = "u", .password = "secret", .insecure = true};
        /* Port 1 on loopback: nothing listens, the connection is refused. */
        OK(lg_image_pull_start(f->jobs, "127.0.0.1:1/nothing:1", &auth, LG_IMAGE_LAZY_DEFAULT, on_progress, on_done, &d, &job, &err));
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.calls, 1);
        assert_true(d.status < 0);
        assert_true(d.registry);
}

static void test_remove_missing(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        assert_int_equal(lg_image_jobs_remove(f->jobs, "nothing:1", false, &err), -ENOENT);
        assert_int_equal(lg_image_jobs_remove(f->jobs, "Bad Ref!", true, &err) < 0, 1);
        assert_int_equal(f->rec.removed, 0);
}

/* An image a pool group or app names is not removed, even with force. */
static void test_remove_named(void **state) {
        struct fx *f = *state;
        struct lg_error err = {0};
        char cd[LG_DIGEST_MAX], md[LG_DIGEST_MAX], manifest[512];
        const char *config = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},"
                             "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
        OK(lg_image_blob_put(f->st, config, strlen(config), cd, &err));
        snprintf(manifest, sizeof(manifest),
                 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                 "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\","
                 "\"size\":%zu},\"layers\":[]}",
                 cd, strlen(config));
        OK(lg_image_blob_put(f->st, manifest, strlen(manifest), md, &err));
        struct lg_image *img = NULL;
        OK(lg_image_commit(f->st, md, "test/used:1", NULL, NULL, &img, &err));
        lg_image_free(img);
        f->rec.named = true;
        assert_int_equal(lg_image_jobs_remove(f->jobs, "test/used:1", true, &err), -EBUSY);
        assert_non_null(strstr(err.msg, "is used by pool group `web`"));
        assert_int_equal(f->rec.removed, 0);
        f->rec.named = false;
        OK(lg_image_jobs_remove(f->jobs, "test/used:1", false, &err));
        assert_int_equal(f->rec.removed, 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_import_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_import_empty, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_gc, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pull_unreachable, setup, teardown),
                cmocka_unit_test_setup_teardown(test_remove_missing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_remove_named, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
