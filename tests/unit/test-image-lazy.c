/* Unit tests of lazy layers in the image store (src/image/lazy-image.c):
 * an image whose layer is lazy (layers/<hex>.json "lazy": true, no layer
 * blob) commits and loads as any other; lg_image_lazy_attach_all mounts
 * the lazy layers that are not mounted through the ops, and only those.
 *
 * Needs root for the image store's layers (owners, xattrs): skipped
 * otherwise. Work happens in /dev/shm or /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "image/image-internal.h"
#include "image/image.h"

#include "archive-kit.h"
#include "image-kit.h"

static char W[PATH_MAX], STORE[PATH_MAX], LAZY[PATH_MAX];

static int setup_work(void **state) {
        (void) state;
        struct stat st;
        const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
        snprintf(W, sizeof(W), "%s/lg-image-lazy-test-XXXXXX", base);
        if (!mkdtemp(W))
                return -1;
        snprintf(STORE, sizeof(STORE), "%s/images", W);
        snprintf(LAZY, sizeof(LAZY), "%s/lazy", W);
        return 0;
}

static int teardown_work(void **state) {
        (void) state;
        lg_rm_rf(W);
        return 0;
}

/* Fake ops: count attaches and remember the last mount point. */
struct fake {
        unsigned attached, detached;
        char last_hex[65], last_mnt[PATH_MAX];
        int fail;
};

static int fake_attach(void *ud, const char *hex, const char *mnt, struct lg_error *err) {
        struct fake *f = ud;
        if (f->fail)
                return lg_error_setm(err, EIO, "no fetcher");
        f->attached++;
        snprintf(f->last_hex, sizeof(f->last_hex), "%s", hex);
        snprintf(f->last_mnt, sizeof(f->last_mnt), "%s", mnt);
        return 0;
}

static int fake_detach(void *ud, const char *hex, const char *mnt, struct lg_error *err) {
        (void) hex, (void) mnt, (void) err;
        ((struct fake *) ud)->detached++;
        return 0;
}

static const struct lg_image_lazy_ops fake_ops = {.attach = fake_attach, .detach = fake_detach};

static void write_at(const char *dir, const char *name, const char *text) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(lg_write_all(fd, text, strlen(text)), 0);
        close(fd);
}

/* A lazy layer's record and mount point, as a lazy pull leaves them. */
static void fake_lazy_layer(const struct tlayer *l) {
        char name[96], text[256], p[PATH_MAX];
        snprintf(name, sizeof(name), "layers/%s.json", l->digest + 7);
        snprintf(text, sizeof(text), "{\"diffId\": \"%s\", \"size\": 1, \"lazy\": true}\n", l->diff_id);
        write_at(STORE, name, text);
        snprintf(p, sizeof(p), "%s/layers/%s", STORE, l->digest + 7);
        assert_int_equal(mkdir(p, 0755), 0);
}

/* Layer 0 (lower) to be lazy, layer 1 full. */
static void two_layers(struct timg *im) {
        const struct te a[] = {{.path = "a", .type = F, .data = "lazy"}};
        const struct te b[] = {{.path = "b", .type = F, .data = "full"}};
        make_layer(im, a, 1, 1);
        make_layer(im, b, 1, 1);
        finish_image(im, NULL, false);
}

static void test_attach_all(void **state) {
        (void) state;
        if (geteuid() != 0)
                skip();
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        unsigned n = 99;
        /* Without ops there is nothing to mount. */
        assert_int_equal(lg_image_lazy_attach_all(st, &n, &err), 0);
        assert_int_equal(n, 0);
        struct fake f = {0};
        assert_int_equal(lg_image_store_set_lazy(st, LAZY, &fake_ops, &f, true, &err), 0);
        struct stat s;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/layers", LAZY);
        assert_int_equal(stat(p, &s), 0);

        struct timg im = {0};
        two_layers(&im);
        fake_lazy_layer(&im.l[0]);
        /* A full layer's record: never attached. */
        char name[96];
        snprintf(name, sizeof(name), "layers/%s.json", im.l[1].digest + 7);
        write_at(STORE, name, "{\"diffId\": \"sha256:00\", \"size\": 1}\n");
        assert_int_equal(lg_image_lazy_attach_all(st, &n, &err), 0);
        assert_int_equal(n, 1);
        assert_int_equal(f.attached, 1);
        assert_string_equal(f.last_hex, im.l[0].digest + 7);
        snprintf(p, sizeof(p), "%s/layers/%s", STORE, im.l[0].digest + 7);
        char *real = realpath(p, NULL);
        assert_non_null(real);
        assert_string_equal(f.last_mnt, real);
        free(real);
        /* A failure is said, with the layer. */
        f.fail = 1;
        assert_int_equal(lg_image_lazy_attach_all(st, &n, &err), -EIO);
        assert_non_null(strstr(err.msg, "no fetcher"));
        assert_int_equal(n, 0);
        free_image(&im);
        lg_image_store_close(st);
}

/* An image whose lower layer is lazy commits without that layer's blob,
 * extracts the other and loads with both layer dirs. */
static void test_commit_with_lazy_layer(void **state) {
        (void) state;
        if (geteuid() != 0)
                skip();
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct timg im = {0};
        two_layers(&im);
        put_blob(st, im.l[1].blob.p, im.l[1].blob.len);
        put_blob(st, im.config, strlen(im.config));
        put_blob(st, im.manifest, strlen(im.manifest));
        /* Without the lazy record, the missing blob fails the commit. */
        assert_int_equal(lg_image_commit(st, im.mdigest, "test/lazy:1", NULL, NULL, NULL, &err), -ENOENT);
        fake_lazy_layer(&im.l[0]);
        struct lg_image *img = NULL;
        assert_int_equal(lg_image_commit(st, im.mdigest, "test/lazy:1", NULL, NULL, &img, &err), 0);
        assert_int_equal(img->n_layers, 2);
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/b", img->layer_dirs[0]);
        struct stat s;
        assert_int_equal(stat(p, &s), 0);
        assert_non_null(strstr(img->layer_dirs[1], im.l[0].digest + 7));
        lg_image_free(img);
        free_image(&im);
        lg_image_store_close(st);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_attach_all, setup_work, teardown_work),
                cmocka_unit_test_setup_teardown(test_commit_with_lazy_layer, setup_work, teardown_work),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
