/* Unit tests of the image store (src/image): names, blobs, import of
 * docker-save and OCI layout archives (uncompressed, gzip and zstd layers),
 * the image fields, layers in overlayfs form (checked by mounting an
 * overlay), dedupe, digest and diff id checks (hostile layers are in
 * test-extract.c, with the packages' hostile archives), bad
 * manifests and configs, remove and GC, images left dangling by a tag that
 * moved (found by id, listed untagged, kept by GC while pinned, hostile
 * index entries), and two threads committing images that share a layer.
 *
 * Archives and images are built here with libarchive's writer and jansson.
 * Needs root (mknod, trusted.* xattrs, overlay mounts): skipped otherwise.
 * Work happens in $LG_IMAGE_TEST_DIR if set, else /dev/shm or /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "common/util.h"
#include "image/image-internal.h"
#include "image/image.h"

static char W[PATH_MAX];       /* work dir of one test */
static char STORE[PATH_MAX];   /* W/store */

static void pathf(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *buf, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf, PATH_MAX, fmt, ap);
        va_end(ap);
        assert_true(n > 0 && n < PATH_MAX);
}

static int setup_work(void **state) {
        (void) state;
        const char *base = getenv("LG_IMAGE_TEST_DIR");
        struct stat st;
        if (!base || !*base)
                base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
        pathf(W, "%s/lg-image-test-XXXXXX", base);
        if (!mkdtemp(W))
                return -1;
        pathf(STORE, "%s/store", W);
        return 0;
}

static int teardown_work(void **state) {
        (void) state;
        lg_rm_rf(W);
        return 0;
}

/* ---- building tars ------------------------------------------------------ */

#include "archive-kit.h"
#include "image-kit.h"

/* Store and commit; the commit's result. */
static int commit_image(lg_image_store *st, const struct timg *im, const char *name, struct lg_image **ret,
                        struct lg_error *err) {
        ingest(st, im);
        return lg_image_commit(st, im->mdigest, name, NULL, NULL, ret, err);
}

/* A one-layer image of es. */
static int commit_layer(lg_image_store *st, const struct te *es, size_t n, struct lg_error *err) {
        struct timg im = {0};
        make_layer(&im, es, n, 1);
        finish_image(&im, NULL, false);
        int r = commit_image(st, &im, "test/hostile", NULL, err);
        free_image(&im);
        return r;
}

/* ---- archives ----------------------------------------------------------- */

static void tar_file(struct archive *a, const char *path, const void *d, size_t n) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, path);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t) n);
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        if (n)
                assert_int_equal(archive_write_data(a, d, n), (la_ssize_t) n);
        archive_entry_free(e);
}

static void tar_symlink(struct archive *a, const char *path, const char *target) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, path);
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_perm(e, 0777);
        archive_entry_set_symlink(e, target);
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        archive_entry_free(e);
}

static struct archive *open_archive(const char *path, int comp) {
        struct archive *a = new_writer(comp);
        assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
        return a;
}

static void close_archive(struct archive *a) {
        assert_int_equal(archive_write_close(a), ARCHIVE_OK);
        archive_write_free(a);
}

static void tar_blob(struct archive *a, const void *d, size_t n) {
        char dg[LG_DIGEST_MAX], p[128];
        sha256(d, n, dg);
        snprintf(p, sizeof(p), "blobs/sha256/%s", dg + 7);
        tar_file(a, p, d, n);
}

/* An OCI layout archive of im. With nested, index.json points at an image
 * index holding im for linux/amd64 and a missing arm64 one. */
static void write_oci(const char *path, const struct timg *im, const char *ref, bool nested, int comp) {
        struct archive *a = open_archive(path, comp);
        tar_file(a, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", 30);
        for (size_t i = 0; i < im->n; i++)
                tar_blob(a, im->l[i].blob.p, im->l[i].blob.len);
        tar_blob(a, im->config, strlen(im->config));
        tar_blob(a, im->manifest, strlen(im->manifest));
        json_t *desc = json_pack("{s:s,s:s,s:I}", "mediaType", "application/vnd.oci.image.manifest.v1+json", "digest",
                                 im->mdigest, "size", (json_int_t) strlen(im->manifest));
        if (nested) {
                json_object_set_new(desc, "platform", json_pack("{s:s,s:s}", "os", "linux", "architecture", "amd64"));
                json_t *other = json_pack("{s:s,s:s,s:i,s:{s:s,s:s}}", "mediaType",
                                          "application/vnd.oci.image.manifest.v1+json", "digest",
                                          "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                                          "size", 10, "platform", "os", "linux", "architecture", "arm64");
                json_t *idx = json_pack("{s:i,s:s,s:[o,o]}", "schemaVersion", 2, "mediaType",
                                        "application/vnd.oci.image.index.v1+json", "manifests", other, desc);
                char *text = json_dumps(idx, JSON_COMPACT);
                json_decref(idx);
                tar_blob(a, text, strlen(text));
                char dg[LG_DIGEST_MAX];
                sha256(text, strlen(text), dg);
                desc = json_pack("{s:s,s:s,s:I}", "mediaType", "application/vnd.oci.image.index.v1+json", "digest", dg,
                                 "size", (json_int_t) strlen(text));
                free(text);
        }
        if (ref)
                json_object_set_new(desc, "annotations", json_pack("{s:s}", "org.opencontainers.image.ref.name", ref));
        json_t *index = json_pack("{s:i,s:[o]}", "schemaVersion", 2, "manifests", desc);
        char *text = json_dumps(index, JSON_COMPACT);
        json_decref(index);
        tar_file(a, "index.json", text, strlen(text));
        free(text);
        close_archive(a);
}

/* A docker save archive of im: <n>/layer.tar, <config hex>.json,
 * manifest.json; the last layer is a symlink to the first when dup_link. */
static void write_docker(const char *path, const struct timg *im, const char *tag, int comp) {
        struct archive *a = open_archive(path, comp);
        json_t *layers = json_array();
        for (size_t i = 0; i < im->n; i++) {
                char p[64];
                snprintf(p, sizeof(p), "%zu/VERSION", i);
                tar_file(a, p, "1.0", 3);
                snprintf(p, sizeof(p), "%zu/layer.tar", i);
                bool dup = false;
                for (size_t k = 0; k < i; k++)
                        if (!strcmp(im->l[k].digest, im->l[i].digest)) {
                                char t[64];
                                snprintf(t, sizeof(t), "../%zu/layer.tar", k);
                                tar_symlink(a, p, t);
                                dup = true;
                                break;
                        }
                if (!dup)
                        tar_file(a, p, im->l[i].blob.p, im->l[i].blob.len);
                json_array_append_new(layers, json_string(p));
        }
        char cfgname[80];
        snprintf(cfgname, sizeof(cfgname), "%s.json", im->cdigest + 7);
        tar_file(a, cfgname, im->config, strlen(im->config));
        json_t *m = json_pack("[{s:s,s:o,s:o}]", "Config", cfgname, "RepoTags",
                              tag ? json_pack("[s]", tag) : json_null(), "Layers", layers);
        char *text = json_dumps(m, JSON_COMPACT);
        json_decref(m);
        tar_file(a, "manifest.json", text, strlen(text));
        free(text);
        close_archive(a);
}

/* ---- checks ------------------------------------------------------------- */

static size_t count_dir(const char *rel) {
        char p[PATH_MAX];
        pathf(p, "%s/%s", STORE, rel);
        DIR *d = opendir(p);
        if (!d)
                return 0;
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

static bool exists_in(const char *dir, const char *rel) {
        char p[PATH_MAX];
        pathf(p, "%s/%s", dir, rel);
        struct stat st;
        return lstat(p, &st) == 0;
}

static void stat_in(const char *dir, const char *rel, struct stat *st) {
        char p[PATH_MAX];
        pathf(p, "%s/%s", dir, rel);
        assert_int_equal(lstat(p, st), 0);
}

static const char *const CFG =
        "{\"Entrypoint\":[\"/bin/sh\",\"-c\"],\"Cmd\":[\"echo hi\"],\"Env\":[\"PATH=/usr/bin:/bin\",\"A=b c\"],"
        "\"WorkingDir\":\"/srv\",\"User\":\"1000:1000\"}";

static const struct te BASE[] = {
        {"bin/", D, NULL, 0, 0, 0, 0},
        {"bin/sh", F, "#!fake shell\n", 0755, 0, 0, 0},
        {"etc/", D, NULL, 0, 0, 0, 0},
        {"etc/os-release", F, "ID=test\n", 0, 0, 0, 0},
        {"srv/app.txt", F, "app\n", 0, 1000, 1000, 0},
};

static const struct te TOP[] = {
        {"etc/motd", F, "hello\n", 0, 0, 0, 0},
};

static void make_basic(struct timg *im, int comp, bool docker) {
        memset(im, 0, sizeof(*im));
        make_layer(im, BASE, ARRAY_SIZE(BASE), comp);
        make_layer(im, TOP, ARRAY_SIZE(TOP), comp);
        finish_image(im, CFG, docker);
}

/* a = BASE + TOP, b = BASE + another top: BASE is shared. */
static void make_pair(struct timg *a, struct timg *b) {
        static const struct te other[] = {{"etc/other", F, "o\n", 0, 0, 0, 0}};
        make_basic(a, 1, false);
        memset(b, 0, sizeof(*b));
        make_layer(b, BASE, ARRAY_SIZE(BASE), 1);
        make_layer(b, other, 1, 1);
        finish_image(b, NULL, false);
}

static void check_basic(const struct lg_image *img, const struct timg *im) {
        assert_string_equal(img->id, im->cdigest);
        assert_string_equal(img->os, "linux");
        assert_string_equal(img->architecture, "amd64");
        assert_int_equal(img->created, 1704164645);
        assert_int_equal(img->n_layers, 2);
        /* Uppermost first. */
        assert_string_equal(img->layer_digests[0], im->l[1].digest);
        assert_string_equal(img->layer_digests[1], im->l[0].digest);
        char want[PATH_MAX];
        pathf(want, "%s/layers/%s", STORE, im->l[1].digest + 7);
        assert_string_equal(img->layer_dirs[0], want);
        assert_int_equal(img->size, im->l[0].blob.len + im->l[1].blob.len);
        assert_non_null(img->entrypoint);
        assert_string_equal(img->entrypoint[0], "/bin/sh");
        assert_string_equal(img->entrypoint[1], "-c");
        assert_null(img->entrypoint[2]);
        assert_string_equal(img->cmd[0], "echo hi");
        assert_null(img->cmd[1]);
        assert_string_equal(img->env[1], "A=b c");
        assert_string_equal(img->working_dir, "/srv");
        assert_string_equal(img->user, "1000:1000");
        assert_true(exists_in(img->layer_dirs[1], "bin/sh"));
        assert_true(exists_in(img->layer_dirs[0], "etc/motd"));
        assert_false(exists_in(img->layer_dirs[0], "bin"));
        struct stat st;
        stat_in(img->layer_dirs[1], "srv/app.txt", &st);
        assert_int_equal(st.st_uid, 1000);
        stat_in(img->layer_dirs[1], "bin/sh", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
}

/* ---- tests -------------------------------------------------------------- */

static void test_normalize(void **state) {
        (void) state;
        static const struct {
                const char *in, *out;
        } ok[] = {
                {"busybox", "docker.io/library/busybox:latest"},
                {"busybox:1.36", "docker.io/library/busybox:1.36"},
                {"user/app", "docker.io/user/app:latest"},
                {"docker.io/busybox", "docker.io/library/busybox:latest"},
                {"index.docker.io/library/busybox:1", "docker.io/library/busybox:1"},
                {"127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"},
                {"localhost/a/b", "localhost/a/b:latest"},
                {"localhost:5000/a", "localhost:5000/a:latest"},
                {"ghcr.io/o/p_q.r__s-t--u:v1.2-3_x", "ghcr.io/o/p_q.r__s-t--u:v1.2-3_x"},
                {"busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                 "docker.io/library/busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
                {"Registry.Example/x", "Registry.Example/x:latest"},
                {"[::1]:5000/x", "[::1]:5000/x:latest"},
        };
        char buf[512];
        for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
                struct lg_error err = {0};
                int r = lg_image_normalize(ok[i].in, buf, sizeof(buf), &err);
                if (r < 0)
                        fail_msg("%s: %s", ok[i].in, err.msg);
                assert_string_equal(buf, ok[i].out);
        }
        static const char *const bad[] = {
                "", "Busybox", "user/App", "a//b", "a/", "/a", "a:", "a:-x", "a@sha256:12", "a@md5:00",
                "-a", "a-", "a..b", "a___b", "exa mple", "a:b:c", "bad-.host/x", "a\nb",
                "x:toolongtag0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                struct lg_error err = {0};
                if (lg_image_normalize(bad[i], buf, sizeof(buf), &err) != -EINVAL)
                        fail_msg("accepted `%s` as `%s`", bad[i], buf);
                assert_true(err.msg[0] != '\0');
        }
        assert_int_equal(lg_image_normalize("busybox", buf, 10, NULL), -ENAMETOOLONG);
}

struct progress {
        int read, extract, done;
        uint64_t last_read, total;
};

static void on_progress(void *ud, const char *phase, const char *what, uint64_t done, uint64_t total) {
        struct progress *p = ud;
        assert_non_null(what);
        if (!strcmp(phase, "read")) {
                p->read++;
                assert_true(done >= p->last_read);
                assert_true(done <= total);
                p->last_read = done;
                p->total = total;
        } else if (!strcmp(phase, "extract")) {
                p->extract++;
                assert_true(done <= total);
        } else if (!strcmp(phase, "done")) {
                p->done++;
        } else {
                fail_msg("unknown phase %s", phase);
        }
}

static void test_import_docker_save(void **state) {
        (void) state;
        struct timg im;
        make_basic(&im, 0, false);
        char arch[PATH_MAX];
        pathf(arch, "%s/img.tar", W);
        write_docker(arch, &im, "example.com/team/app:1.0", 0);
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct lg_image *img = NULL;
        struct progress p = {0};
        int r = lg_image_import(st, arch, NULL, on_progress, &p, &img, &err);
        if (r < 0)
                fail_msg("%s", err.msg);
        struct stat ast;
        assert_int_equal(stat(arch, &ast), 0);
        assert_true(p.read > 0 && p.extract > 0 && p.done == 1);
        assert_int_equal(p.last_read, (uint64_t) ast.st_size);
        check_basic(img, &im);
        assert_string_equal(img->names[0], "example.com/team/app:1.0");
        assert_null(img->names[1]);
        /* The manifest was made up: a Docker schema 2 one, stored. */
        assert_int_equal(lg_image_blob_exists(st, img->digest), 1);
        char id[72], digest[72];
        strcpy(id, img->id);
        strcpy(digest, img->digest);
        lg_image_free(img);

        /* Found by name, id, id prefix (with or without sha256:), digest. */
        const char *refs[] = {"example.com/team/app:1.0", id, id + 7, NULL, NULL, digest};
        char p12[32], ps[40];
        snprintf(p12, sizeof(p12), "%.12s", id + 7);
        snprintf(ps, sizeof(ps), "sha256:%.12s", id + 7);
        refs[3] = p12;
        refs[4] = ps;
        for (size_t i = 0; i < ARRAY_SIZE(refs); i++) {
                r = lg_image_get(st, refs[i], &img, &err);
                if (r < 0)
                        fail_msg("%s: %s", refs[i], err.msg);
                check_basic(img, &im);
                lg_image_free(img);
        }
        assert_int_equal(lg_image_get(st, "example.com/team/app:2.0", &img, &err), -ENOENT);
        assert_null(img);
        assert_int_equal(lg_image_get(st, "sha256:abc", &img, &err), -EINVAL);
        assert_int_equal(lg_image_get(st, "NotAName", &img, &err), -EINVAL);

        /* Again with another name: same image, two names, nothing new. */
        size_t blobs = count_dir("blobs/sha256"), layers = count_dir("layers");
        r = lg_image_import(st, arch, "other:tag", NULL, NULL, &img, &err);
        if (r < 0)
                fail_msg("%s", err.msg);
        assert_string_equal(img->names[0], "docker.io/library/other:tag");
        assert_string_equal(img->names[1], "example.com/team/app:1.0");
        lg_image_free(img);
        assert_int_equal(count_dir("blobs/sha256"), blobs);
        assert_int_equal(count_dir("layers"), layers);
        assert_int_equal(count_dir("tmp"), 0);

        struct lg_image **list;
        size_t n;
        assert_int_equal(lg_image_list(st, &list, &n, &err), 0);
        assert_int_equal(n, 1);
        lg_image_list_free(list, n);

        /* The same image from an OCI archive: another manifest, the same id.
         * Removing by id removes both. */
        pathf(arch, "%s/img-oci.tar", W);
        write_oci(arch, &im, "example.com/team/app:oci", false, 0);
        assert_int_equal(lg_image_import(st, arch, NULL, NULL, NULL, NULL, &err), 0);
        assert_int_equal(lg_image_list(st, &list, &n, &err), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0]->id, list[1]->id);
        lg_image_list_free(list, n);
        assert_int_equal(lg_image_remove(st, id, &err), 0);
        assert_int_equal(lg_image_list(st, &list, &n, &err), 0);
        assert_int_equal(n, 0);
        lg_image_list_free(list, n);
        lg_image_store_close(st);
        free_image(&im);
}

static void test_import_docker_save_dup_layer_gzip(void **state) {
        (void) state;
        /* Layers A, B, A (a symlink in the archive); the outer tar gzip'd. */
        struct timg im = {0};
        make_layer(&im, BASE, ARRAY_SIZE(BASE), 1);
        make_layer(&im, TOP, ARRAY_SIZE(TOP), 1);
        make_layer(&im, BASE, ARRAY_SIZE(BASE), 1);
        finish_image(&im, NULL, true);
        assert_string_equal(im.l[0].digest, im.l[2].digest);
        char arch[PATH_MAX];
        pathf(arch, "%s/img.tar.gz", W);
        write_docker(arch, &im, NULL, 1);
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct lg_image *img = NULL;
        int r = lg_image_import(st, arch, NULL, NULL, NULL, &img, &err);
        if (r < 0)
                fail_msg("%s", err.msg);
        assert_null(img->names[0]); /* untagged, found by id */
        /* The duplicate is listed once, at its uppermost place. */
        assert_int_equal(img->n_layers, 2);
        assert_string_equal(img->layer_digests[0], im.l[0].digest);
        assert_string_equal(img->layer_digests[1], im.l[1].digest);
        assert_null(img->layer_dirs[2]);
        char id[72];
        strcpy(id, img->id);
        lg_image_free(img);
        assert_int_equal(lg_image_get(st, id, &img, &err), 0);
        lg_image_free(img);
        lg_image_store_close(st);
        free_image(&im);
}

static void test_import_oci(void **state) {
        (void) state;
        for (int comp = 0; comp < 3; comp++) {
                struct timg im;
                make_basic(&im, comp, false);
                char arch[PATH_MAX];
                pathf(arch, "%s/oci-%d.tar", W, comp);
                /* comp 1: the archive itself gzip'd; comp 2: a nested index. */
                write_oci(arch, &im, comp == 0 ? "1.0" : "reg.example:5000/ns/img:v2", comp == 2, comp == 1 ? 1 : 0);
                lg_image_store *st;
                struct lg_error err = {0};
                assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
                struct lg_image *img = NULL;
                int r = lg_image_import(st, arch, NULL, NULL, NULL, &img, &err);
                if (r < 0)
                        fail_msg("comp %d: %s", comp, err.msg);
                check_basic(img, &im);
                assert_string_equal(img->digest, im.mdigest); /* the archive's manifest, kept */
                if (comp == 0)
                        assert_null(img->names[0]); /* a bare tag names no repository */
                else
                        assert_string_equal(img->names[0], "reg.example:5000/ns/img:v2");
                lg_image_free(img);
                lg_image_store_close(st);
                free_image(&im);
        }
}

static void test_zstd_layer_direct(void **state) {
        (void) state;
        struct timg im;
        make_basic(&im, 2, false);
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct lg_image *img = NULL;
        int r = commit_image(st, &im, "zstd:1", &img, &err);
        if (r < 0)
                fail_msg("%s", err.msg);
        check_basic(img, &im);
        char json[PATH_MAX], buf[512];
        pathf(json, "layers/%s.json", im.l[0].digest + 7);
        int dfd = open(STORE, O_RDONLY | O_DIRECTORY);
        assert_true(lg_read_file_at(dfd, json, buf, sizeof(buf)) > 0);
        close(dfd);
        assert_non_null(strstr(buf, im.l[0].diff_id));
        lg_image_free(img);
        lg_image_store_close(st);
        free_image(&im);
}

static void test_whiteouts_overlay(void **state) {
        (void) state;
        static const struct te lower[] = {
                {"a/x", F, "x\n", 0, 0, 0, 0},
                {"a/y", F, "y\n", 0, 0, 0, 0},
                {"f", F, "f\n", 0, 0, 0, 0},
                {"o/old", F, "old\n", 0, 0, 0, 0},
                {"o/sub/deep", F, "deep\n", 0, 0, 0, 0},
        };
        static const struct te upper[] = {
                {"a/.wh.x", F, "", 0, 0, 0, 0},
                {".wh.f", F, "", 0, 0, 0, 0},
                {"o/", D, NULL, 0, 0, 0, 0},
                {"o/.wh..wh..opq", F, "", 0, 0, 0, 0},
                {"o/new", F, "new\n", 0, 0, 0, 0},
                {".wh..wh.plnk", D, NULL, 0, 0, 0, 0},
                {".wh..wh.plnk/123.456", F, "aufs", 0, 0, 0, 0},
        };
        struct timg im = {0};
        make_layer(&im, lower, ARRAY_SIZE(lower), 1);
        make_layer(&im, upper, ARRAY_SIZE(upper), 1);
        finish_image(&im, NULL, false);
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct lg_image *img = NULL;
        int r = commit_image(st, &im, "wh", &img, &err);
        if (r < 0)
                fail_msg("%s", err.msg);
        struct stat s;
        stat_in(img->layer_dirs[0], "a/x", &s);
        assert_true(S_ISCHR(s.st_mode));
        assert_int_equal(s.st_rdev, makedev(0, 0));
        assert_int_equal(s.st_uid, 0);
        stat_in(img->layer_dirs[0], "f", &s);
        assert_true(S_ISCHR(s.st_mode));
        assert_false(exists_in(img->layer_dirs[0], "a/.wh.x"));
        assert_false(exists_in(img->layer_dirs[0], "o/.wh..wh..opq"));
        assert_false(exists_in(img->layer_dirs[0], ".wh..wh.plnk"));
        char o[PATH_MAX], v[8] = "";
        pathf(o, "%s/o", img->layer_dirs[0]);
        assert_int_equal(lgetxattr(o, "trusted.overlay.opaque", v, sizeof(v)), 1);
        assert_int_equal(v[0], 'y');

        /* What a sandbox sees: an overlay of the two. */
        char mnt[PATH_MAX], opts[3 * PATH_MAX];
        pathf(mnt, "%s/mnt", W);
        assert_int_equal(mkdir(mnt, 0755), 0);
        snprintf(opts, sizeof(opts), "lowerdir=%s:%s", img->layer_dirs[0], img->layer_dirs[1]);
        if (mount("overlay", mnt, "overlay", MS_RDONLY, opts) < 0)
                fail_msg("mount overlay: %s", strerror(errno));
        bool x = exists_in(mnt, "a/x"), y = exists_in(mnt, "a/y"), f = exists_in(mnt, "f");
        bool old = exists_in(mnt, "o/old"), deep = exists_in(mnt, "o/sub"), nw = exists_in(mnt, "o/new");
        umount2(mnt, MNT_DETACH);
        assert_false(x);
        assert_true(y);
        assert_false(f);
        assert_false(old);
        assert_false(deep);
        assert_true(nw);
        lg_image_free(img);
        lg_image_store_close(st);
        free_image(&im);
}

/* Nothing of a failed extraction may stay: no layer dir, tmp/ empty, no
 * image recorded. */
static void assert_clean(lg_image_store *st) {
        assert_int_equal(count_dir("tmp"), 0);
        struct lg_image **list;
        size_t n;
        struct lg_error err = {0};
        assert_int_equal(lg_image_list(st, &list, &n, &err), 0);
        assert_int_equal(n, 0);
        lg_image_list_free(list, n);
        DIR *d;
        char p[PATH_MAX];
        pathf(p, "%s/layers", STORE);
        assert_non_null(d = opendir(p));
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        fail_msg("layer %s left behind", de->d_name);
        closedir(d);
}

static void test_neutralised(void **state) {
        (void) state;
        static const struct te es[] = {
                {"/abs/file", F, "abs", 0, 0, 0, 0},
                {"./dot/./file", F, "dot", 0, 0, 0, 0},
                {"suid", F, "s", 04755, 0, 0, 0},
                {"sgid-dir/", D, NULL, 02775, 0, 0, 0},
                {"sticky/", D, NULL, 01777, 0, 0, 0},
                {"highuid", F, "h", 0, 100000, 70000, 0},
                {"user", F, "u", 0, 1000, 50, 0},
                {"dev/null", C, NULL, 0, 0, 0, 0},
                {"fifo", P, NULL, 0, 0, 0, 0},
                {"abs-link", L, "/etc/passwd", 0, 0, 0, 0},
                {"hard", H, "user", 0, 0, 0, 0},
                {"dup", F, "first", 0, 0, 0, 0},
                {"dup", F, "second", 0, 0, 0, 0},
                {"d2/x", F, "x", 0, 0, 0, 0},
                {"d2", F, "now a file", 0, 0, 0, 0},
                {"d3/", D, NULL, 0700, 0, 0, 0},
                {"d3/", D, NULL, 0750, 0, 0, 0},
        };
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct timg im = {0};
        make_layer(&im, es, ARRAY_SIZE(es), 0);
        finish_image(&im, NULL, false);
        struct lg_image *img = NULL;
        int r = commit_image(st, &im, NULL, &img, &err);
        if (r < 0)
                fail_msg("%s", err.msg);
        const char *L0 = img->layer_dirs[0];
        struct stat s;
        char buf[64];
        int dfd = open(L0, O_RDONLY | O_DIRECTORY);
        assert_int_equal(lg_read_file_at(dfd, "abs/file", buf, sizeof(buf)), 3);
        assert_int_equal(lg_read_file_at(dfd, "dot/file", buf, sizeof(buf)), 3);
        assert_int_equal(lg_read_file_at(dfd, "dup", buf, sizeof(buf)), 6);
        assert_int_equal(lg_read_file_at(dfd, "d2", buf, sizeof(buf)), 10);
        close(dfd);
        stat_in(L0, "suid", &s);
        assert_int_equal(s.st_mode & 07777, 0755);
        stat_in(L0, "sgid-dir", &s);
        assert_int_equal(s.st_mode & 07777, 0775);
        stat_in(L0, "sticky", &s);
        assert_int_equal(s.st_mode & 07777, 01777);
        stat_in(L0, "highuid", &s);
        assert_int_equal(s.st_uid, 65534);
        assert_int_equal(s.st_gid, 65534);
        stat_in(L0, "user", &s);
        assert_int_equal(s.st_uid, 1000);
        assert_int_equal(s.st_gid, 50);
        assert_int_equal(s.st_nlink, 2);
        stat_in(L0, "hard", &s);
        assert_int_equal(s.st_nlink, 2);
        assert_false(exists_in(L0, "dev/null"));
        stat_in(L0, "fifo", &s);
        assert_true(S_ISFIFO(s.st_mode));
        stat_in(L0, "abs-link", &s);
        assert_true(S_ISLNK(s.st_mode));
        char t[64] = "";
        char p[PATH_MAX];
        pathf(p, "%s/abs-link", L0);
        assert_int_equal(readlink(p, t, sizeof(t)), 11);
        assert_memory_equal(t, "/etc/passwd", 11);
        stat_in(L0, "d3", &s);
        assert_int_equal(s.st_mode & 07777, 0750);
        lg_image_free(img);
        lg_image_store_close(st);
        free_image(&im);
}

static void test_limits(void **state) {
        (void) state;
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        lg_image_store_set_limits(st, &(struct lg_image_limits){.layer_bytes = 1 << 20, .layer_entries = 5,
                                                                .path_len = 64, .depth = 4});
        static const struct te bomb[] = {{"zeros", F, NULL, 0, 0, 0, 8u << 20}};
        assert_int_equal(commit_layer(st, bomb, 1, &err), -EFBIG);
        assert_non_null(strstr(err.msg, "limit"));
        assert_clean(st);
        static const struct te many[] = {{"1", F, "", 0, 0, 0, 0}, {"2", F, "", 0, 0, 0, 0}, {"3", F, "", 0, 0, 0, 0},
                                         {"4", F, "", 0, 0, 0, 0}, {"5", F, "", 0, 0, 0, 0}, {"6", F, "", 0, 0, 0, 0}};
        assert_int_equal(commit_layer(st, many, 6, &err), -E2BIG);
        assert_clean(st);
        static const struct te deep[] = {{"a/b/c/d/e", F, "", 0, 0, 0, 0}};
        assert_int_equal(commit_layer(st, deep, 1, &err), -ENAMETOOLONG);
        static const struct te longp[] = {
                {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", F, "", 0, 0, 0, 0}};
        assert_int_equal(commit_layer(st, longp, 1, &err), -ENAMETOOLONG);
        assert_clean(st);
        /* Blob size limit of a writer. */
        struct lg_image_blob_writer *w;
        char dg[LG_DIGEST_MAX];
        sha256("0123456789", 10, dg);
        assert_int_equal(lg_image_blob_begin(st, dg, 5, &w, &err), 0);
        assert_int_equal(lg_image_blob_write(w, "0123456789", 10, &err), -EFBIG);
        lg_image_blob_abort(w);
        assert_int_equal(lg_image_blob_exists(st, dg), 0);
        assert_int_equal(count_dir("tmp"), 0);
        lg_image_store_close(st);
}

static void test_digests(void **state) {
        (void) state;
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        /* A blob that is not what it claims to be. */
        char dg[LG_DIGEST_MAX];
        sha256("right", 5, dg);
        struct lg_image_blob_writer *w;
        assert_int_equal(lg_image_blob_begin(st, dg, 0, &w, &err), 0);
        assert_int_equal(lg_image_blob_write(w, "wrong", 5, &err), 0);
        assert_int_equal(lg_image_blob_commit(w, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, "mismatch"));
        assert_int_equal(lg_image_blob_exists(st, dg), 0);
        assert_int_equal(count_dir("tmp"), 0);
        assert_int_equal(count_dir("blobs/sha256"), 0);
        /* Malformed and unsupported digests. */
        assert_int_equal(lg_image_blob_begin(st, "sha256:xyz", 0, &w, &err), -EINVAL);
        assert_int_equal(lg_image_blob_begin(st, "sha512:00", 0, &w, &err), -ENOTSUP);
        assert_int_equal(lg_image_blob_begin(st, NULL, 0, &w, &err), -EINVAL);
        assert_int_equal(lg_image_blob_begin(st, "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", 0, &w, &err), -EINVAL);
        /* Right blob: stored 0444; again: present. */
        assert_int_equal(lg_image_blob_begin(st, dg, 0, &w, &err), 0);
        assert_int_equal(lg_image_blob_write(w, "right", 5, &err), 0);
        assert_int_equal(lg_image_blob_commit(w, &err), 0);
        assert_int_equal(lg_image_blob_begin(st, dg, 0, &w, &err), 1);
        assert_null(w);
        char *text;
        size_t len;
        assert_int_equal(lg_image_blob_read(st, dg, 100, &text, &len, &err), 0);
        assert_int_equal(len, 5);
        assert_string_equal(text, "right");
        free(text);
        assert_int_equal(lg_image_blob_read(st, dg, 4, &text, &len, &err), -EFBIG);
        struct stat s;
        char p[PATH_MAX];
        pathf(p, "%s/blobs/sha256/%s", STORE, dg + 7);
        assert_int_equal(stat(p, &s), 0);
        assert_int_equal(s.st_mode & 0777, 0444);

        /* Diff id mismatch: the config names another uncompressed digest. */
        struct timg im;
        make_basic(&im, 1, false);
        strcpy(im.l[1].diff_id, im.l[0].diff_id);
        free(im.config);
        free(im.manifest);
        finish_image(&im, NULL, false);
        assert_int_equal(commit_image(st, &im, "bad:diffid", NULL, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, "diff id mismatch"));
        assert_int_equal(count_dir("tmp"), 0);
        char l1[PATH_MAX];
        pathf(l1, "layers/%s", im.l[1].digest + 7);
        assert_false(exists_in(STORE, l1));
        /* The layer extracted by the good path is then rejected by a config
         * that lies about it too. */
        free_image(&im);
        make_basic(&im, 1, false);
        assert_int_equal(commit_image(st, &im, "good:1", NULL, &err), 0);
        strcpy(im.l[1].diff_id, im.l[0].diff_id);
        free(im.config);
        free(im.manifest);
        finish_image(&im, "{\"Cmd\":[\"x\"]}", false);
        assert_int_equal(commit_image(st, &im, "bad:diffid", NULL, &err), -EBADMSG);
        /* Manifest size of a layer that does not match its blob. */
        free_image(&im);
        make_basic(&im, 1, false);
        ingest(st, &im);
        json_t *m = json_loads(im.manifest, 0, NULL);
        json_object_set_new(json_array_get(json_object_get(m, "layers"), 0), "size", json_integer(3));
        char *mt = json_dumps(m, JSON_COMPACT);
        json_decref(m);
        put_blob(st, mt, strlen(mt));
        sha256(mt, strlen(mt), dg);
        free(mt);
        assert_int_equal(lg_image_commit(st, dg, NULL, NULL, NULL, NULL, &err), -EBADMSG);
        free_image(&im);
        lg_image_store_close(st);
}

/* Commit a manifest (text) whose blobs are the basic image's. */
static int commit_manifest_text(lg_image_store *st, const char *text, struct lg_error *err) {
        char dg[LG_DIGEST_MAX];
        put_blob(st, text, strlen(text));
        sha256(text, strlen(text), dg);
        return lg_image_commit(st, dg, "bad:manifest", NULL, NULL, NULL, err);
}

static void test_bad_manifests(void **state) {
        (void) state;
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct timg im;
        make_basic(&im, 1, false);
        ingest(st, &im);
        char tmpl[4096];
        snprintf(tmpl, sizeof(tmpl),
                 "{\"schemaVersion\":2,\"mediaType\":\"%%s\",\"config\":{\"mediaType\":\"%%s\",\"size\":%zu,"
                 "\"digest\":\"%s\"},\"layers\":[{\"mediaType\":\"%%s\",\"size\":%zu,\"digest\":\"%s\"}]}",
                 strlen(im.config), im.cdigest, im.l[0].blob.len, im.l[0].digest);
        static const struct {
                const char *mt, *cmt, *lmt;
                int want;
        } cases[] = {
                {"application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.config.v1+json",
                 "application/vnd.oci.image.layer.v1.tar+gzip", -ENOTSUP},
                {"application/vnd.docker.distribution.manifest.v1+prettyjws", "application/vnd.oci.image.config.v1+json",
                 "application/vnd.oci.image.layer.v1.tar+gzip", -ENOTSUP},
                {"application/vnd.oci.image.manifest.v1+json", "application/vnd.cncf.helm.config.v1+json",
                 "application/vnd.oci.image.layer.v1.tar+gzip", -ENOTSUP},
                {"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json",
                 "application/x-tar+bzip2", -ENOTSUP},
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                char text[8192];
                snprintf(text, sizeof(text), tmpl, cases[i].mt, cases[i].cmt, cases[i].lmt);
                int r = commit_manifest_text(st, text, &err);
                if (r != cases[i].want)
                        fail_msg("case %zu: %d %s", i, r, err.msg);
        }
        static const char *const einval[] = {
                "not json",
                "[]",
                "{\"schemaVersion\":3}",
                "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"}",
                "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
                "\"digest\":\"sha256:zz\",\"size\":1},\"layers\":[]}",
                "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
                "\"digest\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\",\"size\":-1},"
                "\"layers\":[]}",
        };
        for (size_t i = 0; i < ARRAY_SIZE(einval); i++) {
                int r = commit_manifest_text(st, einval[i], &err);
                if (r != -EINVAL)
                        fail_msg("einval case %zu: %d %s", i, r, err.msg);
        }
        assert_int_equal(commit_manifest_text(st, "{\"schemaVersion\":1,\"name\":\"x\"}", &err), -ENOTSUP);
        assert_non_null(strstr(err.msg, "schema 1"));
        /* Malformed configs. */
        static const char *const configs[] = {
                "not json",
                "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",                     /* count */
                "{\"config\":{\"Env\":\"A=b\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:x\"]}}",
                "{\"config\":{\"Cmd\":[1]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
                "{\"rootfs\":{\"type\":\"other\",\"diff_ids\":[]}}",
        };
        for (size_t i = 0; i < ARRAY_SIZE(configs); i++) {
                char cdg[LG_DIGEST_MAX], text[8192];
                put_blob(st, configs[i], strlen(configs[i]));
                sha256(configs[i], strlen(configs[i]), cdg);
                snprintf(text, sizeof(text),
                         "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
                         "\"size\":%zu,\"digest\":\"%s\"},\"layers\":[{\"mediaType\":"
                         "\"application/vnd.oci.image.layer.v1.tar+gzip\",\"size\":%zu,\"digest\":\"%s\"}]}",
                         strlen(configs[i]), cdg, im.l[0].blob.len, im.l[0].digest);
                int r = commit_manifest_text(st, text, &err);
                if (r != -EINVAL)
                        fail_msg("config case %zu: %d %s", i, r, err.msg);
        }
        /* Missing blob. */
        assert_int_equal(lg_image_commit(st, "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                                         NULL, NULL, NULL, NULL, &err),
                         -ENOENT);
        struct lg_image **list;
        size_t n;
        assert_int_equal(lg_image_list(st, &list, &n, &err), 0);
        assert_int_equal(n, 0);
        lg_image_list_free(list, n);

        /* Archives that are not images. */
        char arch[PATH_MAX];
        pathf(arch, "%s/junk.tar", W);
        struct archive *a = open_archive(arch, 0);
        tar_file(a, "hello.txt", "hi", 2);
        close_archive(a);
        assert_int_equal(lg_image_import(st, arch, NULL, NULL, NULL, NULL, &err), -EINVAL);
        int fd = open(arch, O_WRONLY | O_TRUNC);
        assert_int_equal(lg_write_all(fd, "garbage garbage garbage", 23), 0);
        close(fd);
        assert_int_equal(lg_image_import(st, arch, NULL, NULL, NULL, NULL, &err), -EBADMSG);
        a = open_archive(arch, 0);
        tar_file(a, "../evil", "x", 1);
        close_archive(a);
        assert_int_equal(lg_image_import(st, arch, NULL, NULL, NULL, NULL, &err), -EINVAL);
        a = open_archive(arch, 0);
        tar_file(a, "manifest.json", "[{\"Config\":\"c.json\",\"Layers\":[\"missing/layer.tar\"]}]", 52);
        tar_file(a, "c.json", im.config, strlen(im.config));
        close_archive(a);
        assert_int_equal(lg_image_import(st, arch, NULL, NULL, NULL, NULL, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "missing"));
        assert_int_equal(lg_image_import(st, arch, "Bad Name", NULL, NULL, NULL, &err), -EINVAL);
        assert_int_equal(lg_image_list(st, &list, &n, &err), 0);
        assert_int_equal(n, 0);
        lg_image_list_free(list, n);
        free_image(&im);
        lg_image_store_close(st);
}

static void test_remove_gc(void **state) {
        (void) state;
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct timg a, b;
        make_pair(&a, &b);
        struct lg_image *ia = NULL, *ib = NULL;
        assert_int_equal(commit_image(st, &a, "a:1", &ia, &err), 0);
        assert_int_equal(commit_image(st, &b, "b:1", &ib, &err), 0);
        assert_int_equal(lg_image_index_add(st, a.mdigest, a.cdigest, "docker.io/library/a:2", &err), 0);
        assert_int_equal(count_dir("blobs/sha256"), 7);
        assert_int_equal(count_dir("layers"), 6);
        struct lg_image_gc_result g;
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.blobs_removed + g.layers_removed, 0);

        /* Removing one name keeps the image while it has another. */
        struct lg_image *img = NULL;
        assert_int_equal(lg_image_remove(st, "a:1", &err), 0);
        assert_int_equal(lg_image_get(st, "a:2", &img, &err), 0);
        lg_image_free(img);
        assert_int_equal(lg_image_remove(st, "a:1", &err), -ENOENT);
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.blobs_removed, 0); /* a:2 still names it */
        assert_int_equal(lg_image_remove(st, "docker.io/library/a:2", &err), 0);

        /* a's own: manifest, config, top layer blob + its dir; keep the top
         * layer's dir as if a sandbox ran on it. */
        const char *keep_dirs[] = {ia->layer_dirs[0]};
        struct lg_image_gc_keep keep = {.layers = keep_dirs, .n_layers = 1};
        assert_int_equal(lg_image_gc(st, &keep, &g, &err), 0);
        assert_int_equal(g.blobs_removed, 3);
        assert_int_equal(g.layers_removed, 0);
        assert_true(g.bytes_freed > 0);
        assert_int_equal(count_dir("blobs/sha256"), 4);
        assert_true(exists_in(ia->layer_dirs[0], "etc/motd"));
        assert_true(exists_in(ib->layer_dirs[1], "bin/sh"));
        assert_int_equal(lg_image_get(st, "a:1", &img, &err), -ENOENT);
        /* Now without keep: the dir goes too; b is whole. */
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.blobs_removed, 0);
        assert_int_equal(g.layers_removed, 1);
        assert_false(exists_in(ia->layer_dirs[0], "."));
        assert_int_equal(count_dir("layers"), 4);
        assert_int_equal(count_dir("tmp"), 0);
        assert_int_equal(lg_image_get(st, "b:1", &img, &err), 0);
        lg_image_free(img);

        /* Remove by id: every name goes; then everything goes. */
        assert_int_equal(lg_image_index_add(st, b.mdigest, b.cdigest, "docker.io/library/b:2", &err), 0);
        assert_int_equal(lg_image_remove(st, ib->id, &err), 0);
        assert_int_equal(lg_image_get(st, "b:2", &img, &err), -ENOENT);
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.blobs_removed, 4);
        assert_int_equal(g.layers_removed, 2);
        assert_int_equal(count_dir("blobs/sha256"), 0);
        assert_int_equal(count_dir("layers"), 0);

        /* A blob written but not committed yet survives GC in this handle. */
        put_blob(st, a.config, strlen(a.config));
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.blobs_removed, 0);
        /* GC while another handle has the store open: refused. */
        lg_image_store *other_st;
        assert_int_equal(lg_image_store_open(STORE, &other_st, &err), 0);
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), -EBUSY);
        lg_image_store_close(other_st);
        lg_image_store_close(st);
        /* A fresh handle does not know the pending blob: it goes. */
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.blobs_removed, 1);
        lg_image_store_close(st);
        lg_image_free(ia);
        lg_image_free(ib);
        free_image(&a);
        free_image(&b);
}

/* images.json replaced with text, as another (or an older) legiond might
 * have written it. */
static void put_index(const char *text) {
        char p[PATH_MAX], tmp[PATH_MAX];
        pathf(p, "%s/images.json", STORE);
        pathf(tmp, "%s/images.json.new", STORE);
        FILE *f = fopen(tmp, "w");
        assert_non_null(f);
        assert_int_equal(fputs(text, f) >= 0, 1);
        assert_int_equal(fclose(f), 0);
        assert_int_equal(rename(tmp, p), 0);
}

static bool index_has(const char *what) {
        char p[PATH_MAX];
        pathf(p, "%s/images.json", STORE);
        json_t *j = json_load_file(p, 0, NULL);
        assert_non_null(j);
        char *text = json_dumps(j, JSON_COMPACT);
        bool has = strstr(text, what) != NULL;
        free(text);
        json_decref(j);
        return has;
}

/* A tag moves (web:1 pulled again with other content): the image it left
 * stays, dangling, found by id, listed untagged, after a reopen too; GC
 * keeps it while its id is pinned and drops it (and what it alone used)
 * when not; remove by id; old and hostile index entries. */
static void test_dangling(void **state) {
        (void) state;
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct timg a, b;
        make_pair(&a, &b);
        assert_int_equal(commit_image(st, &a, "127.0.0.1:5000/web:1", NULL, &err), 0);
        assert_false(index_has("dangling"));
        assert_int_equal(commit_image(st, &b, "127.0.0.1:5000/web:1", NULL, &err), 0);
        struct lg_image *img = NULL;
        assert_int_equal(lg_image_get(st, "127.0.0.1:5000/web:1", &img, &err), 0);
        assert_string_equal(img->id, b.cdigest);
        assert_false(img->dangling);
        lg_image_free(img);
        /* The old one by id, full or a prefix, and by manifest digest. */
        char prefix[20];
        snprintf(prefix, sizeof(prefix), "%.12s", a.cdigest + 7);
        const char *refs[] = {a.cdigest, prefix, a.mdigest};
        for (size_t i = 0; i < ARRAY_SIZE(refs); i++) {
                assert_int_equal(lg_image_get(st, refs[i], &img, &err), 0);
                assert_string_equal(img->id, a.cdigest);
                assert_true(img->dangling);
                assert_null(img->names[0]);
                assert_int_equal(img->n_layers, 2);
                assert_true(exists_in(img->layer_dirs[0], "etc/motd"));
                lg_image_free(img);
        }
        assert_true(index_has("\"dangling\":true"));
        /* Listed: the named one first, then the untagged one. */
        struct lg_image **list = NULL;
        size_t n = 0;
        assert_int_equal(lg_image_list(st, &list, &n, &err), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0]->id, b.cdigest);
        assert_string_equal(list[0]->names[0], "127.0.0.1:5000/web:1");
        assert_false(list[0]->dangling);
        assert_string_equal(list[1]->id, a.cdigest);
        assert_null(list[1]->names[0]);
        assert_true(list[1]->dangling);
        lg_image_list_free(list, n);
        /* A new handle (legiond restarted) finds it too. */
        lg_image_store_close(st);
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        assert_int_equal(lg_image_get(st, a.cdigest, &img, &err), 0);
        assert_true(img->dangling);
        lg_image_free(img);

        /* GC keeps it while pinned: nothing goes. */
        struct lg_image_gc_result g;
        const char *pin_a[] = {"sha256:0000000000000000000000000000000000000000000000000000000000000000", a.cdigest};
        struct lg_image_gc_keep keep = {.ids = pin_a, .n_ids = 2};
        assert_int_equal(lg_image_gc(st, &keep, &g, &err), 0);
        assert_int_equal(g.images_removed + g.blobs_removed + g.layers_removed, 0);
        assert_int_equal(lg_image_get(st, a.cdigest, &img, &err), 0);
        lg_image_free(img);
        /* Unpinned (only b, which is named anyway): it goes with its own
         * manifest, config and top layer; the shared base stays for b. */
        const char *pin_b[] = {b.cdigest};
        keep = (struct lg_image_gc_keep){.ids = pin_b, .n_ids = 1};
        assert_int_equal(lg_image_gc(st, &keep, &g, &err), 0);
        assert_int_equal(g.images_removed, 1);
        assert_int_equal(g.blobs_removed, 3);
        assert_int_equal(g.layers_removed, 1);
        assert_int_equal(lg_image_get(st, a.cdigest, &img, &err), -ENOENT);
        assert_false(index_has("dangling"));
        assert_int_equal(lg_image_get(st, "127.0.0.1:5000/web:1", &img, &err), 0);
        assert_true(exists_in(img->layer_dirs[1], "bin/sh"));
        lg_image_free(img);

        /* The tag moves back to a: b dangles; a name given to b again ends
         * that; moving it away again and removing b by id drops it. */
        assert_int_equal(commit_image(st, &a, "127.0.0.1:5000/web:1", NULL, &err), 0);
        assert_int_equal(lg_image_get(st, b.cdigest, &img, &err), 0);
        assert_true(img->dangling);
        lg_image_free(img);
        assert_int_equal(lg_image_index_add(st, b.mdigest, b.cdigest, "docker.io/library/b:1", &err), 0);
        assert_int_equal(lg_image_get(st, b.cdigest, &img, &err), 0);
        assert_false(img->dangling);
        assert_string_equal(img->names[0], "docker.io/library/b:1");
        lg_image_free(img);
        assert_false(index_has("dangling"));
        assert_int_equal(lg_image_index_add(st, a.mdigest, a.cdigest, "docker.io/library/b:1", &err), 0);
        assert_true(index_has("\"dangling\":true"));
        assert_int_equal(lg_image_remove(st, b.cdigest, &err), 0);
        assert_int_equal(lg_image_get(st, b.cdigest, &img, &err), -ENOENT);
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.images_removed, 0);
        assert_int_equal(g.blobs_removed, 3);

        /* An index written before "dangling" existed: an image without
         * names is an untagged import, kept by GC. */
        char text[1024];
        snprintf(text, sizeof(text),
                 "{\"version\":1,\"images\":[{\"manifest\":\"%s\",\"id\":\"%s\",\"names\":[]}]}", a.mdigest,
                 a.cdigest);
        put_index(text);
        assert_int_equal(lg_image_get(st, a.cdigest, &img, &err), 0);
        assert_false(img->dangling);
        lg_image_free(img);
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.images_removed + g.blobs_removed + g.layers_removed, 0);
        assert_int_equal(lg_image_get(st, a.cdigest, &img, &err), 0);
        lg_image_free(img);

        /* Hostile entries: a dangling that is no boolean makes the index
         * corrupt (nothing found, GC refuses and removes nothing); a
         * dangling image with names is a named one. */
        static const char *const bad[] = {"\"yes\"", "1", "null", "{}", "[true]"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                snprintf(text, sizeof(text),
                         "{\"images\":[{\"manifest\":\"%s\",\"id\":\"%s\",\"names\":[],\"dangling\":%s}]}", a.mdigest,
                         a.cdigest, bad[i]);
                put_index(text);
                assert_int_equal(lg_image_get(st, a.cdigest, &img, &err), -EBADMSG);
                assert_non_null(strstr(err.msg, "entry 0 is malformed"));
                assert_int_equal(lg_image_gc(st, NULL, &g, &err), -EBADMSG);
                assert_int_equal(count_dir("layers"), 4); /* 2 dirs + 2 .json */
        }
        snprintf(text, sizeof(text),
                 "{\"images\":[{\"manifest\":\"%s\",\"id\":\"%s\",\"names\":[\"docker.io/library/x:1\", 7],"
                 "\"dangling\":true}]}",
                 a.mdigest, a.cdigest);
        put_index(text);
        assert_int_equal(lg_image_get(st, a.cdigest, &img, &err), 0);
        assert_false(img->dangling);
        assert_string_equal(img->names[0], "docker.io/library/x:1");
        lg_image_free(img);
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.images_removed + g.blobs_removed + g.layers_removed, 0);
        /* Dangling with no names at all (the key absent), unpinned: GC
         * drops it and rewrites the index. */
        snprintf(text, sizeof(text), "{\"images\":[{\"manifest\":\"%s\",\"id\":\"%s\",\"dangling\":true}]}",
                 a.mdigest, a.cdigest);
        put_index(text);
        assert_int_equal(lg_image_get(st, a.cdigest, &img, &err), 0);
        assert_true(img->dangling);
        lg_image_free(img);
        assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
        assert_int_equal(g.images_removed, 1);
        assert_int_equal(count_dir("layers"), 0);
        assert_int_equal(count_dir("blobs/sha256"), 0);
        assert_int_equal(lg_image_list(st, &list, &n, &err), 0);
        assert_int_equal(n, 0);
        lg_image_list_free(list, n);
        lg_image_store_close(st);
        free_image(&a);
        free_image(&b);
}

/* Corrupt layer blobs (each one stored under its own digest, so only the
 * content is wrong): every one fails cleanly or, when the damage missed
 * the data, still matches its diff id. Truncated archives fail too. */
static void test_corruption(void **state) {
        (void) state;
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct timg im;
        make_basic(&im, 1, false);
        struct buf orig = im.l[0].blob;
        unsigned seed = 12345;
        for (int round = 0; round < 60; round++) {
                struct timg bad = {0};
                bad.n = 1;
                bad.l[0] = im.l[0];
                bad.l[0].blob.p = malloc(orig.len);
                memcpy(bad.l[0].blob.p, orig.p, orig.len);
                size_t len = orig.len;
                seed = seed * 1103515245 + 12345;
                if (round % 3 == 2)
                        len = (seed >> 8) % orig.len; /* truncated */
                else
                        bad.l[0].blob.p[(seed >> 8) % orig.len] ^= (char) (1 + (seed >> 20) % 255);
                bad.l[0].blob.len = len;
                sha256(bad.l[0].blob.p, len, bad.l[0].digest);
                finish_image(&bad, NULL, false);
                int r = commit_image(st, &bad, "corrupt:1", NULL, &err);
                if (r < 0) {
                        if (r != -EBADMSG && r != -EINVAL)
                                fail_msg("round %d: %d %s", round, r, err.msg);
                        assert_true(err.msg[0] != '\0');
                        assert_int_equal(count_dir("tmp"), 0);
                        char l[PATH_MAX];
                        pathf(l, "layers/%s", bad.l[0].digest + 7);
                        assert_false(exists_in(STORE, l));
                }
                free(bad.config);
                free(bad.manifest);
                free(bad.l[0].blob.p);
        }
        /* A truncated archive. */
        char arch[PATH_MAX];
        pathf(arch, "%s/t.tar.gz", W);
        write_oci(arch, &im, "x.io/t:1", false, 1);
        struct stat s;
        assert_int_equal(stat(arch, &s), 0);
        assert_int_equal(truncate(arch, s.st_size / 2), 0);
        assert_int_equal(lg_image_import(st, arch, NULL, NULL, NULL, NULL, &err), -EBADMSG);
        assert_int_equal(count_dir("tmp"), 0);
        assert_int_equal(lg_image_get(st, "x.io/t:1", &(struct lg_image *){NULL}, &err), -ENOENT);
        free_image(&im);
        lg_image_store_close(st);
}

struct thr {
        lg_image_store *st;
        const struct timg *im;
        const char *name;
        int r;
        struct lg_error err;
};

static void *commit_thread(void *p) {
        struct thr *t = p;
        t->r = lg_image_commit(t->st, t->im->mdigest, t->name, NULL, NULL, NULL, &t->err);
        return NULL;
}

static void test_concurrent_commits(void **state) {
        (void) state;
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        for (int round = 0; round < 4; round++) {
                struct timg a, b;
                make_pair(&a, &b);
                ingest(st, &a);
                ingest(st, &b);
                struct thr ta = {st, &a, "a:1", 0, {0}}, tb = {st, &b, "b:1", 0, {0}};
                pthread_t pa, pb;
                assert_int_equal(pthread_create(&pa, NULL, commit_thread, &ta), 0);
                assert_int_equal(pthread_create(&pb, NULL, commit_thread, &tb), 0);
                pthread_join(pa, NULL);
                pthread_join(pb, NULL);
                if (ta.r < 0 || tb.r < 0)
                        fail_msg("%s / %s", ta.err.msg, tb.err.msg);
                struct lg_image **list;
                size_t n;
                assert_int_equal(lg_image_list(st, &list, &n, &err), 0);
                assert_int_equal(n, 2);
                assert_string_equal(list[0]->names[0], "docker.io/library/a:1");
                assert_string_equal(list[1]->names[0], "docker.io/library/b:1");
                assert_string_equal(list[0]->layer_dirs[1], list[1]->layer_dirs[1]);
                assert_true(exists_in(list[0]->layer_dirs[1], "bin/sh"));
                lg_image_list_free(list, n);
                assert_int_equal(count_dir("layers"), 6);
                assert_int_equal(count_dir("tmp"), 0);
                assert_int_equal(lg_image_remove(st, "a:1", &err), 0);
                assert_int_equal(lg_image_remove(st, "b:1", &err), 0);
                struct lg_image_gc_result g;
                assert_int_equal(lg_image_gc(st, NULL, &g, &err), 0);
                assert_int_equal(count_dir("layers"), 0);
                free_image(&a);
                free_image(&b);
        }
        lg_image_store_close(st);
}

static void test_store_open(void **state) {
        (void) state;
        lg_image_store *st;
        struct lg_error err = {0};
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        lg_image_store_close(st);
        /* Leftovers of a crash in tmp/ go at the next open. */
        char p[PATH_MAX];
        pathf(p, "%s/tmp/layer-dead/sub", STORE);
        assert_int_equal(lg_mkdir_p(p, 0555), 0);
        pathf(p, "%s/tmp/blob-dead", STORE);
        int fd = open(p, O_WRONLY | O_CREAT, 0444);
        close(fd);
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        assert_int_equal(count_dir("tmp"), 0);
        /* ... but not while someone else has the store open. */
        pathf(p, "%s/tmp/blob-busy", STORE);
        fd = open(p, O_WRONLY | O_CREAT, 0444);
        close(fd);
        lg_image_store *st2;
        assert_int_equal(lg_image_store_open(STORE, &st2, &err), 0);
        assert_int_equal(count_dir("tmp"), 1);
        lg_image_store_close(st2);
        lg_image_store_close(st);
        /* A corrupt index is an error, not an empty store. */
        pathf(p, "%s/images.json", STORE);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_int_equal(lg_write_all(fd, "{", 1), 0);
        close(fd);
        assert_int_equal(lg_image_store_open(STORE, &st, &err), 0);
        struct lg_image **list;
        size_t n;
        assert_int_equal(lg_image_list(st, &list, &n, &err), -EBADMSG);
        lg_image_store_close(st);
        lg_image_store_close(NULL);
        assert_int_equal(lg_image_store_open("", &st, &err), -EINVAL);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_work, teardown_work)

int main(void) {
        if (geteuid() != 0) {
                fprintf(stderr, "test-image: skipped, needs root (mknod, trusted xattrs, overlay mounts)\n");
                return 77;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_normalize),
                T(test_store_open),
                T(test_import_docker_save),
                T(test_import_docker_save_dup_layer_gzip),
                T(test_import_oci),
                T(test_zstd_layer_direct),
                T(test_whiteouts_overlay),
                T(test_neutralised),
                T(test_limits),
                T(test_digests),
                T(test_bad_manifests),
                T(test_remove_gc),
                T(test_dangling),
                T(test_corruption),
                T(test_concurrent_commits),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
