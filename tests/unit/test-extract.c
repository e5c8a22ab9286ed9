/* Unit tests of the safe extractor (src/extract), in both of its modes:
 * packages (LG_EXTRACT_PACKAGE) and OCI layers (LG_EXTRACT_OCI_LAYER).
 *
 * The hostile archives of the two extractors this module replaced
 * (test-pkg.c's paths, symlinks and types, test-image.c's hostile layers)
 * are one table here, each case run in both modes with what each must do:
 * refuse it, or (a layer) take it in its own form. Nothing may ever be
 * written outside the tree (canaries beside it and in /tmp), and a refused
 * archive leaves nothing, not even its temporary directory. Then limits,
 * corrupt and truncated archives and mutations of good ones, in both
 * modes; layer specifics: replacement, owners, whiteouts, the diff id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <openssl/evp.h>

#include "extract/extract.h"

/* Entries are written {path, type, data} with the rest zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static char W[PATH_MAX];

static int setup(void **state) {
        (void) state;
        snprintf(W, sizeof(W), "/tmp/test-extract-XXXXXX");
        assert_non_null(mkdtemp(W));
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/out", W);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof(p), "%s/canary", W);
        assert_int_equal(mkdir(p, 0755), 0);
        return 0;
}

static int teardown(void **state) {
        (void) state;
        assert_int_equal(lg_rm_rf(W), 0);
        return 0;
}

/* ---- building archives ---------------------------------------------------- */

#include "archive-kit.h"

enum fmt { TAR, TGZ, TZST, ZIP }; /* new_writer's comp */

/* ---- running ---------------------------------------------------------------- */

static void pathf(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *buf, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, PATH_MAX, fmt, ap);
        va_end(ap);
}

static size_t count(const char *dir) {
        DIR *d = opendir(dir);
        assert_non_null(d);
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
        closedir(d);
        return n;
}

/* Nothing outside the tree, ever; nothing at all after a failure. */
static void assert_contained(bool failed) {
        char p[PATH_MAX];
        pathf(p, "%s/canary", W);
        assert_int_equal(count(p), 0);
        pathf(p, "%s", W);
        assert_int_equal(count(p), 2); /* out, canary */
        struct stat s;
        assert_int_equal(stat("/tmp/lg-extract-escape", &s), -1);
        assert_int_equal(stat("/etc/passwd-lg-extract", &s), -1);
        if (failed) {
                pathf(p, "%s/out", W);
                assert_int_equal(count(p), 0);
        }
}

static void clear_out(void) {
        char p[PATH_MAX];
        pathf(p, "%s/out/t", W);
        (void) lg_rm_rf(p);
}

/* Extract data (len bytes) with o into W/out/t. */
static int run_buf(const void *data, size_t len, const struct lg_extract_opts *o, struct lg_extract_info *info,
                   struct lg_error *err) {
        char a[PATH_MAX], p[PATH_MAX];
        pathf(a, "%s/archive", W);
        int fd = open(a, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(lg_write_all(fd, data, len), 0);
        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        unlink(a);
        pathf(p, "%s/out", W);
        int out = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(out >= 0);
        memset(err, 0, sizeof(*err));
        int r = lg_extract_tree(fd, out, out, "t", o, info, err);
        close(out);
        close(fd);
        if (r < 0) {
                assert_true(err->msg[0] != '\0');
                assert_null(strchr(err->msg, '\n'));
        }
        assert_contained(r < 0);
        return r;
}

static const struct lg_extract_opts PKG = {.flags = LG_EXTRACT_PACKAGE, .what = "package"};
static const struct lg_extract_opts LAYER = {.flags = LG_EXTRACT_OCI_LAYER, .what = "layer"};

static int run(const struct te *es, size_t n, enum fmt f, const struct lg_extract_opts *o, struct lg_error *err) {
        struct buf b;
        make_tar(es, n, f, &b);
        struct lg_extract_info info;
        int r = run_buf(b.p, b.len, o, &info, err);
        free(b.p);
        return r;
}

/* ---- the hostile table: both modes -------------------------------------------- */

#define OK 0
#define E(x) (-(x))
#define T(...) ((const struct te[]){__VA_ARGS__})
#define N(...) (sizeof((const struct te[]){__VA_ARGS__}) / sizeof(struct te))
#define CASE(name, pkg, layer, ...) {name, T(__VA_ARGS__), N(__VA_ARGS__), pkg, layer}

static void test_hostile(void **state) {
        (void) state;
        const struct {
                const char *name;
                const struct te *es;
                size_t n;
                int pkg, layer; /* what each mode must return */
        } cases[] = {
                /* Paths. */
                CASE("absolute", E(EINVAL), OK, {"ok", F, "x"}, {"/tmp/lg-extract-escape", F, "x"}),
                CASE("dotdot", E(EINVAL), E(EINVAL), {"ok", F, "x"}, {"../canary/pwned", F, "x"}),
                CASE("dotdot inside", E(EINVAL), E(EINVAL), {"a/../../canary/pwned", F, "x"}),
                CASE("dotdot dir", E(EINVAL), E(EINVAL), {"a/b/..", D}),
                CASE("dotdot alone", E(EINVAL), E(EINVAL), {"..", D}),
                CASE("file as root", E(EINVAL), E(EINVAL), {".", F, "x"}),
                CASE("symlink as root", E(EINVAL), E(EINVAL), {".", L, "x"}),
                CASE("through a file", E(EINVAL), E(EINVAL), {"a", F, "x"}, {"a/b", F, "x"}),
                CASE("dir over file", E(EINVAL), OK, {"a", F, "x"}, {"a/", D}, {"a/b", F, "x"}),
                CASE("duplicate", E(EINVAL), OK, {"a", F, "x"}, {"a", F, "y"}),
                CASE("file over dir", E(EINVAL), OK, {"a/", D}, {"a", F, "y"}),
                /* Symlinks. */
                CASE("symlink escapes", E(EINVAL), OK, {"ok", F, "x"}, {"l", L, "../canary"}),
                CASE("symlink absolute", E(EINVAL), OK, {"ok", F, "x"}, {"l", L, "/etc"}),
                CASE("symlink deep escape", E(EINVAL), OK, {"ok", F, "x"}, {"d/e/l", L, "../../../canary/keep"}),
                CASE("symlink dotdot after name", E(EINVAL), OK, {"ok", F, "x"}, {"l", L, "a/../../canary"}),
                CASE("symlink chain", E(EINVAL), OK, {"ok", F, "x"}, {"d1/d2/s", L, "../.."},
                     {"l", L, "d1/d2/s/../../.."}),
                CASE("symlink empty", E(EINVAL), E(EINVAL), {"l", L, ""}),
                CASE("write through symlink in", E(EINVAL), E(EINVAL), {"sub/", D}, {"l", L, "sub"},
                     {"l/pwned", F, "x"}),
                CASE("write through symlink out", E(EINVAL), E(EINVAL), {"ok", F, "x"}, {"l", L, "/etc"},
                     {"l/passwd-lg-extract", F, "pwned"}),
                CASE("write through relative symlink out", E(EINVAL), E(EINVAL), {"d/", D},
                     {"d/up", L, "../../../../../../tmp"}, {"d/up/lg-extract-escape", F, "pwned"}),
                CASE("write through symlink to self", E(EINVAL), E(EINVAL), {"l", L, "."}, {"l/l/x", F, "x"}),
                CASE("dir through symlink", E(EINVAL), E(EINVAL), {"a/b/", D}, {"a/l", L, "b"}, {"a/l/c/d", D}),
                CASE("file over symlink", E(EINVAL), OK, {"t", F, "keep"}, {"l", L, "t"}, {"l", F, "pwned"}),
                CASE("symlink over symlink", E(EINVAL), OK, {"ok", F, "x"}, {"l", L, "t"}, {"l", L, "u"}),
                /* Hard links. */
                CASE("hard link inside", E(EINVAL), OK, {"a", F, "x"}, {"h", H, "a"}),
                CASE("hard link outside", E(EINVAL), E(EINVAL), {"ok", F, "x"}, {"h", H, "/etc/passwd"}),
                CASE("hard link missing", E(EINVAL), E(EINVAL), {"a", F, "a"}, {"h", H, "b"}),
                CASE("hard link dotdot", E(EINVAL), E(EINVAL), {"ok", F, "x"}, {"h", H, "../x"}),
                CASE("hard link through symlink", E(EINVAL), E(EINVAL), {"ok", F, "x"}, {"l", L, "/etc"},
                     {"h", H, "l/passwd"}),
                CASE("hard link to itself", E(EINVAL), E(EINVAL), {"ok", F, "x"}, {"h", H, "h"}),
                CASE("hard link to a dir", E(EINVAL), E(EINVAL), {"ok", F, "x"}, {"d/", D}, {"h", H, "d"}),
                /* Special files: never created. */
                CASE("char device", E(EINVAL), OK, {"ok", F, "x"}, {"null", C}),
                CASE("block device", E(EINVAL), OK, {"ok", F, "x"}, {"sda", B}),
                CASE("fifo", E(EINVAL), OK, {"ok", F, "x"}, {"fifo", P}),
                /* Whiteouts: a layer's, a package's plain names. */
                CASE("bad whiteout", OK, E(EINVAL), {"a/.wh..", F, ""}),
                CASE("whiteout through symlink", E(EINVAL), E(EINVAL), {"ok", F, "x"}, {"l", L, "/etc"},
                     {"l/.wh.passwd", F, ""}),
                CASE("whiteout of the canary", E(EINVAL), E(EINVAL), {"ok", F, "x"}, {"../.wh.canary", F, ""}),
        };
        struct lg_error err;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                for (int mode = 0; mode < 2; mode++) {
                        int want = mode ? cases[i].layer : cases[i].pkg;
                        int r = run(cases[i].es, cases[i].n, TAR, mode ? &LAYER : &PKG, &err);
                        if (r != want)
                                fail_msg("%s (%s): got %d (%s), want %d", cases[i].name, mode ? "layer" : "package",
                                         r, err.msg, want);
                        if (r < 0 && r != -E2BIG)
                                assert_non_null(strstr(err.msg, "entry `"));
                        clear_out();
                }
                /* Packages: the same as zip, where zip can say it. */
                bool zippable = true;
                for (size_t k = 0; k < cases[i].n; k++)
                        zippable &= cases[i].es[k].type == F || cases[i].es[k].type == D || cases[i].es[k].type == L;
                if (zippable) {
                        int r = run(cases[i].es, cases[i].n, ZIP, &PKG, &err);
                        if (r != cases[i].pkg)
                                fail_msg("%s (zip): got %d (%s)", cases[i].name, r, err.msg);
                        clear_out();
                }
        }
}

/* What a layer makes of what a package refuses. */
static void test_layer_forms(void **state) {
        (void) state;
        static const struct te es[] = {
                {"/abs/file", F, "abs"},
                {"./dot/./file", F, "dot"},
                {"suid", F, "s", 04755},
                {"sgid-dir/", D, NULL, 02775},
                {"sticky/", D, NULL, 01777},
                {"highuid", F, "h", 0, 100000, 70000},
                {"user", F, "u", 0, 1000, 50},
                {"dev/null", C},
                {"fifo", P},
                {"abs-link", L, "/etc/passwd"},
                {"hard", H, "user"},
                {"dup", F, "first"},
                {"dup", F, "second"},
                {"d2/x", F, "x"},
                {"d2", F, "now a file"},
                {"d3/", D, NULL, 0700},
                {"d3/", D, NULL, 0750},
                {"gone", F, "x"},
                {".wh.gone", F, ""},
                {"opq/", D},
                {"opq/.wh..wh..opq", F, ""},
                {".wh..wh.plnk/123", F, "aufs"},
        };
        struct lg_error err;
        int r = run(es, sizeof(es) / sizeof(es[0]), TGZ, &LAYER, &err);
        if (r != 0)
                fail_msg("%s", err.msg);
        char p[PATH_MAX], t[64];
        struct stat s;
#define AT(rel) (pathf(p, "%s/out/t/%s", W, rel), p)
        assert_int_equal(lstat(AT("abs/file"), &s), 0);
        assert_int_equal(lstat(AT("dot/file"), &s), 0);
        assert_int_equal(lstat(AT("dup"), &s), 0);
        assert_int_equal(s.st_size, 6);
        assert_int_equal(lstat(AT("d2"), &s), 0);
        assert_true(S_ISREG(s.st_mode));
        assert_int_equal(lstat(AT("suid"), &s), 0);
        assert_int_equal(s.st_mode & 07777, 0755);
        assert_int_equal(lstat(AT("sgid-dir"), &s), 0);
        assert_int_equal(s.st_mode & 07777, 0775);
        assert_int_equal(lstat(AT("sticky"), &s), 0);
        assert_int_equal(s.st_mode & 07777, 01777);
        assert_int_equal(lstat(AT("highuid"), &s), 0);
        assert_int_equal(s.st_uid, 65534);
        assert_int_equal(s.st_gid, 65534);
        assert_int_equal(lstat(AT("user"), &s), 0);
        assert_int_equal(s.st_uid, 1000);
        assert_int_equal(s.st_nlink, 2);
        assert_int_equal(lstat(AT("dev/null"), &s), -1);
        assert_int_equal(lstat(AT("fifo"), &s), 0);
        assert_true(S_ISFIFO(s.st_mode));
        assert_int_equal(readlink(AT("abs-link"), t, sizeof(t)), 11);
        assert_int_equal(lstat(AT("d3"), &s), 0);
        assert_int_equal(s.st_mode & 07777, 0750);
        assert_int_equal(lstat(AT("gone"), &s), 0);
        assert_true(S_ISCHR(s.st_mode) && s.st_rdev == 0);
        assert_int_equal(lstat(AT(".wh.gone"), &s), -1);
        assert_int_equal(lgetxattr(AT("opq"), "trusted.overlay.opaque", t, sizeof(t)), 1);
        assert_int_equal(lstat(AT(".wh..wh.plnk"), &s), -1);
#undef AT
}

/* ---- limits ---------------------------------------------------------------- */

static void test_limits(void **state) {
        (void) state;
        struct lg_error err;
        struct te many[12];
        char names[12][8];
        for (int i = 0; i < 12; i++) {
                snprintf(names[i], sizeof(names[i]), "f%02d", i);
                many[i] = (struct te){names[i], F, "x"};
        }
        static const struct te longp[] = {{"aaaaaaaaaa/bbbbbbbbbb/cccccccccc/dddddddddd/eeeeeeeeee/f", F, "x"}};
        char comp[300];
        memset(comp, 'n', 256);
        comp[256] = '\0';
        struct te longc[] = {{comp, F, "x"}};
        static const struct te zeros[] = {{"zero", F, NULL, 0, 0, 0, 32u << 20}};
        static const struct te two[] = {{"z1", F, NULL, 0, 0, 0, 768u << 10}, {"z2", F, NULL, 0, 0, 0, 768u << 10}};
        for (int mode = 0; mode < 2; mode++) {
                struct lg_extract_opts o = mode ? LAYER : PKG;
                o.lim.max_entries = 11;
                assert_int_equal(run(many, 12, TAR, &o, &err), -E2BIG);
                assert_non_null(strstr(err.msg, "more than 11 entries"));
                o.lim.max_entries = 12;
                assert_int_equal(run(many, 12, TAR, &o, &err), 0);
                clear_out();
                o = mode ? LAYER : PKG;
                o.lim.max_path_len = 50;
                assert_int_equal(run(longp, 1, TAR, &o, &err), -ENAMETOOLONG);
                assert_non_null(strstr(err.msg, "longer than 50 bytes"));
                o = mode ? LAYER : PKG;
                o.lim.max_depth = 5;
                assert_int_equal(run(longp, 1, TAR, &o, &err), -ENAMETOOLONG);
                assert_non_null(strstr(err.msg, "deeper than 5 components"));
                o.lim.max_depth = 6;
                assert_int_equal(run(longp, 1, TAR, &o, &err), 0);
                clear_out();
                assert_int_equal(run(longc, 1, TAR, mode ? &LAYER : &PKG, &err), -ENAMETOOLONG);
                /* 32 MiB of zeros: the file limit, the ratio (a package), the
                 * stream limit (a layer), counted as the bytes come out. */
                o = mode ? LAYER : PKG;
                o.lim.max_file_bytes = 1 << 20;
                assert_int_equal(run(zeros, 1, TGZ, &o, &err), -EFBIG);
                assert_non_null(strstr(err.msg, "limit of 1 MiB"));
                o = mode ? LAYER : PKG;
                if (mode) {
                        o.lim.max_stream_bytes = 1 << 20;
                        assert_int_equal(run(zeros, 1, TZST, &o, &err), -EFBIG);
                        assert_non_null(strstr(err.msg, "uncompressed content is larger than the limit of 1 MiB"));
                } else {
                        assert_int_equal(run(zeros, 1, TGZ, &o, &err), -EFBIG);
                        assert_non_null(strstr(err.msg, "decompression bomb"));
                }
                o = mode ? LAYER : PKG;
                o.lim.max_total_bytes = 1 << 20;
                o.lim.max_ratio = UINT32_MAX;
                assert_int_equal(run(two, 2, TZST, &o, &err), -EFBIG);
                assert_non_null(strstr(err.msg, "`z2`"));
                assert_non_null(strstr(err.msg, "expands to more than the limit of 1 MiB"));
        }
}

/* ---- corrupt, truncated and mutated archives ------------------------------ */

static uint32_t seed = 12345;
static uint32_t rnd(void) {
        seed = seed * 1103515245 + 12345;
        return seed >> 8;
}

static void test_corrupt_and_fuzz(void **state) {
        (void) state;
        static const struct te good[] = {
                {"bin/", D},          {"bin/run", F, "#!/bin/sh\necho hi\n", 0755}, {"lib/a/b/deep", F, "deep"},
                {"lib/link", L, "a/b/deep"}, {"README", F, "read me"},            {"empty", F, ""},
        };
        static const enum fmt fmts[] = {TAR, TGZ, TZST, ZIP};
        struct lg_error err;
        unsigned refused = 0, taken = 0;
        for (size_t fi = 0; fi < sizeof(fmts) / sizeof(fmts[0]); fi++) {
                struct buf b;
                make_tar(good, sizeof(good) / sizeof(good[0]), fmts[fi], &b);
                for (int mode = 0; mode < 2; mode++) {
                        if (mode && fmts[fi] == ZIP)
                                continue;
                        const struct lg_extract_opts *o = mode ? &LAYER : &PKG;
                        struct lg_extract_info info;
                        /* Whole, it extracts. */
                        if (run_buf(b.p, b.len, o, &info, &err) != 0)
                                fail_msg("fmt %zu mode %d: %s", fi, mode, err.msg);
                        assert_int_equal(info.n_files, 4);
                        clear_out();
                        /* Cut anywhere: refused or (a tar cut in its padding)
                         * whole; never anything outside. */
                        for (size_t cut = 0; cut < b.len; cut += 1 + b.len / 97) {
                                int r = run_buf(b.p, cut, o, &info, &err);
                                assert_true(r <= 0);
                                r < 0 ? refused++ : taken++;
                                clear_out();
                        }
                        /* Mutated. */
                        char *z = malloc(b.len);
                        assert_non_null(z);
                        for (int it = 0; it < 300; it++) {
                                memcpy(z, b.p, b.len);
                                for (unsigned m = 1 + rnd() % 4; m; m--)
                                        z[rnd() % b.len] = (char) rnd();
                                int r = run_buf(z, b.len, o, &info, &err);
                                assert_true(r <= 0);
                                r < 0 ? refused++ : taken++;
                                clear_out();
                        }
                        free(z);
                }
                free(b.p);
        }
        print_message("    cut and mutated: %u refused, %u taken\n", refused, taken);
        assert_true(refused > taken);
        /* Not an archive at all; empty. */
        assert_int_equal(run_buf("hello, world\n", 13, &PKG, NULL, &err), -EBADMSG);
        assert_true(run_buf("hello, world\n", 13, &LAYER, NULL, &err) < 0);
        assert_int_equal(run_buf("", 0, &PKG, NULL, &err), -EBADMSG);
}

/* ---- the stream digest (a layer's diff id) -------------------------------------- */

static void test_diff_id(void **state) {
        (void) state;
        static const struct te es[] = {{"a", F, "a"}};
        struct buf tar, gz;
        make_tar(es, 1, TAR, &tar);
        make_tar(es, 1, TGZ, &gz);
        unsigned char md[32];
        unsigned len = 0;
        EVP_Digest(tar.p, tar.len, md, &len, EVP_sha256(), NULL);
        char want[65];
        for (int i = 0; i < 32; i++)
                snprintf(want + 2 * i, 3, "%02x", md[i]);
        struct lg_extract_opts o = LAYER;
        o.expect_sha256 = want;
        struct lg_extract_info info;
        struct lg_error err;
        /* Of the uncompressed stream, whatever the compression. */
        assert_int_equal(run_buf(gz.p, gz.len, &o, &info, &err), 0);
        assert_string_equal(info.stream_sha256, want);
        assert_int_equal(info.stream_bytes, tar.len);
        clear_out();
        want[0] = want[0] == '0' ? '1' : '0';
        assert_int_equal(run_buf(gz.p, gz.len, &o, &info, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, "diff id mismatch"));
        /* zip has no one stream. */
        o = PKG;
        o.expect_sha256 = want;
        assert_int_equal(run_buf(gz.p, gz.len, &o, &info, &err), -EINVAL);
        free(tar.p);
        free(gz.p);
}

/* The package rule for symlink targets, alone. */
static void test_symlink_rule(void **state) {
        (void) state;
        assert_null(lg_extract_symlink_unsafe(0, "a"));
        assert_null(lg_extract_symlink_unsafe(1, "../a"));
        assert_null(lg_extract_symlink_unsafe(0, "./a/./b/"));
        assert_non_null(lg_extract_symlink_unsafe(0, "../a"));
        assert_non_null(lg_extract_symlink_unsafe(3, "a/../b"));
        assert_non_null(lg_extract_symlink_unsafe(3, "/a"));
        assert_non_null(lg_extract_symlink_unsafe(3, ""));
        assert_non_null(lg_extract_symlink_unsafe(3, NULL));
        char longt[5000];
        memset(longt, 'a', sizeof(longt) - 1);
        longt[sizeof(longt) - 1] = '\0';
        assert_non_null(lg_extract_symlink_unsafe(3, longt));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_hostile, setup, teardown),
                cmocka_unit_test_setup_teardown(test_layer_forms, setup, teardown),
                cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
                cmocka_unit_test_setup_teardown(test_corrupt_and_fuzz, setup, teardown),
                cmocka_unit_test_setup_teardown(test_diff_id, setup, teardown),
                cmocka_unit_test(test_symlink_rule),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
