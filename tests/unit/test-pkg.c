/* Unit tests of the pkg module: the blob store (digests, dedup, size limit,
 * crash leftovers), extraction of good archives in every format, lying
 * headers, decompression bombs, corrupt input and a deterministic mutation
 * loop through the package wrapper, and the directory packer. The hostile
 * paths, symlinks and file types are in test-extract.c, run against the
 * package and the layer rules alike.
 *
 * Archives are built here with libarchive's writer (no external tools).
 * Work happens in $LG_PKG_TEST_DIR if set, else in /dev/shm when it exists
 * (extraction syncfs()s, which is free on tmpfs), else in /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "common/util.h"
#include "pkg/pkg-internal.h"
#include "pkg/pkg.h"

/* ------------------------------------------------------------------ */
/* Work directory: W/arch (archives), W/canary (must never change), and
 * extraction into W/pkg, so a temporary root is W/.tmp-x-*: "../canary"
 * from inside it reaches the canary. */

static char W[PATH_MAX];
static char bombs[PATH_MAX]; /* generated once for the whole run */

static void pathf(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *buf, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf, PATH_MAX, fmt, ap);
        va_end(ap);
        assert_true(n > 0 && n < PATH_MAX);
}

static const char *work_base(void) {
        const char *env = getenv("LG_PKG_TEST_DIR"); /* e.g. /tmp, to run on a disk */
        if (env && *env)
                return env;
        struct stat st;
        return stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                                                                                                 : "/tmp";
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        assert_true(fd >= 0);
        assert_int_equal(lg_write_all(fd, data, len), 0);
        assert_int_equal(fchmod(fd, mode), 0);
        close(fd);
}

/* Whole file into a malloc'd buffer (NUL-terminated). */
static char *read_file(const char *path, size_t *len) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return NULL;
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        char *buf = malloc((size_t) st.st_size + 1);
        assert_non_null(buf);
        assert_int_equal(lg_read_all(fd, buf, (size_t) st.st_size), st.st_size);
        buf[st.st_size] = '\0';
        close(fd);
        if (len)
                *len = (size_t) st.st_size;
        return buf;
}

static size_t count_entries(const char *dir, const char *prefix) {
        DIR *d = opendir(dir);
        assert_non_null(d);
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
                    (!prefix || !strncmp(de->d_name, prefix, strlen(prefix))))
                        n++;
        closedir(d);
        return n;
}

static int setup_work(void **state) {
        (void) state;
        pathf(W, "%s/lg-pkg-XXXXXX", work_base());
        if (!mkdtemp(W))
                return -1;
        char p[PATH_MAX];
        pathf(p, "%s/arch", W);
        mkdir(p, 0755);
        pathf(p, "%s/canary", W);
        mkdir(p, 0755);
        pathf(p, "%s/canary/keep", W);
        write_file(p, "canary\n", 7, 0644);
        return 0;
}

static int teardown_work(void **state) {
        (void) state;
        lg_rm_rf(W);
        return 0;
}

/* The canary is untouched and W holds only arch, canary and (when
 * extracted) pkg: no temporary directory, no stray file. */
static void assert_clean(bool pkg_expected) {
        char p[PATH_MAX];
        pathf(p, "%s/canary", W);
        assert_int_equal(count_entries(p, NULL), 1);
        pathf(p, "%s/canary/keep", W);
        char *c = read_file(p, NULL);
        assert_non_null(c);
        assert_string_equal(c, "canary\n");
        free(c);
        assert_int_equal(count_entries(W, NULL), pkg_expected ? 3 : 2);
        pathf(p, "%s/pkg", W);
        assert_int_equal(access(p, F_OK) == 0, pkg_expected);
}

/* ------------------------------------------------------------------ */
/* Building archives. */

enum fmt { F_TAR, F_TGZ, F_ZIP, F_ZIP_STORE, F_TZST, F_TBZ2, F_TXZ, F_TGZGZ, F_USTAR };
static const char *const fmt_names[] = {"tar", "tar.gz", "zip", "zip(store)", "tar.zst",
                                        "tar.bz2", "tar.xz", "tar.gz.gz", "ustar"};

struct ent {
        const char *path;
        char type;            /* 'f' file, 'd' dir, 'l' symlink, 'h' hard link, 'c' chr, 'b' blk, 'p' fifo, 's' sock */
        mode_t perm;          /* 0: 0644 / 0755 */
        const char *data;     /* file content, or link target */
};

static struct archive *writer_new(enum fmt f) {
        struct archive *a = archive_write_new();
        assert_non_null(a);
        switch (f) {
        case F_ZIP:
        case F_ZIP_STORE:
                assert_int_equal(archive_write_set_format_zip(a), ARCHIVE_OK);
                if (f == F_ZIP_STORE)
                        assert_int_equal(archive_write_set_options(a, "zip:compression=store"), ARCHIVE_OK);
                break;
        case F_USTAR:
                assert_int_equal(archive_write_set_format_ustar(a), ARCHIVE_OK);
                break;
        default:
                assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
                break;
        }
        switch (f) {
        case F_TGZ: assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK); break;
        case F_TGZGZ:
                assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
                assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
                break;
        case F_TZST: assert_int_equal(archive_write_add_filter_zstd(a), ARCHIVE_OK); break;
        case F_TBZ2: assert_int_equal(archive_write_add_filter_bzip2(a), ARCHIVE_OK); break;
        case F_TXZ: assert_int_equal(archive_write_add_filter_xz(a), ARCHIVE_OK); break;
        default: break;
        }
        assert_int_equal(archive_write_set_bytes_in_last_block(a, 1), ARCHIVE_OK);
        return a;
}

static void build(const char *path, enum fmt f, const struct ent *ents, size_t n) {
        struct archive *a = writer_new(f);
        assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
        struct archive_entry *e = archive_entry_new();
        for (size_t i = 0; i < n; i++) {
                const struct ent *x = &ents[i];
                archive_entry_clear(e);
                archive_entry_set_pathname(e, x->path);
                archive_entry_set_mtime(e, 1700000000, 0);
                size_t len = 0;
                switch (x->type) {
                case 'f':
                        archive_entry_set_filetype(e, AE_IFREG);
                        len = x->data ? strlen(x->data) : 0;
                        break;
                case 'd': archive_entry_set_filetype(e, AE_IFDIR); break;
                case 'l':
                        archive_entry_set_filetype(e, AE_IFLNK);
                        archive_entry_set_symlink(e, x->data);
                        break;
                case 'h':
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_hardlink(e, x->data);
                        break;
                case 'c': archive_entry_set_filetype(e, AE_IFCHR); archive_entry_set_rdev(e, makedev(1, 3)); break;
                case 'b': archive_entry_set_filetype(e, AE_IFBLK); archive_entry_set_rdev(e, makedev(8, 0)); break;
                case 'p': archive_entry_set_filetype(e, AE_IFIFO); break;
                case 's': archive_entry_set_filetype(e, AE_IFSOCK); break;
                default: fail();
                }
                archive_entry_set_perm(e, x->perm ? x->perm : (x->type == 'd' ? 0755 : 0644));
                archive_entry_set_size(e, (la_int64_t) len);
                int r = archive_write_header(a, e);
                if (r < ARCHIVE_WARN) /* WARN: a non-ASCII name in the C locale, written as is */
                        fail_msg("write header of %s: %s", x->path, archive_error_string(a));
                if (len)
                        assert_int_equal(archive_write_data(a, x->data, len), (la_ssize_t) len);
        }
        archive_entry_free(e);
        assert_int_equal(archive_write_close(a), ARCHIVE_OK);
        archive_write_free(a);
}

/* nfiles entries of size bytes of zeros each, streamed (never in memory). */
static void build_zeros(const char *path, enum fmt f, unsigned nfiles, uint64_t size) {
        struct archive *a = writer_new(f);
        assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
        struct archive_entry *e = archive_entry_new();
        const size_t chunk = 1 << 20;
        char *zeros = calloc(1, chunk);
        assert_non_null(zeros);
        for (unsigned i = 0; i < nfiles; i++) {
                char name[32];
                snprintf(name, sizeof(name), "zero%03u", i);
                archive_entry_clear(e);
                archive_entry_set_pathname(e, name);
                archive_entry_set_filetype(e, AE_IFREG);
                archive_entry_set_perm(e, 0644);
                archive_entry_set_size(e, (la_int64_t) size);
                assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
                for (uint64_t left = size; left > 0;) {
                        size_t n = left < chunk ? (size_t) left : chunk;
                        assert_int_equal(archive_write_data(a, zeros, n), (la_ssize_t) n);
                        left -= n;
                }
        }
        free(zeros);
        archive_entry_free(e);
        assert_int_equal(archive_write_close(a), ARCHIVE_OK);
        archive_write_free(a);
}

static void arch_path(char *buf, const char *name) { pathf(buf, "%s/arch/%s", W, name); }

/* Extract archive into W/pkg; fill *err. */
static int extract(const char *archive, const struct lg_pkg_limits *lim, struct lg_pkg_info *info,
                   struct lg_error *err) {
        char dest[PATH_MAX];
        pathf(dest, "%s/pkg", W);
        memset(err, 0, sizeof(*err));
        return lg_pkg_extract(archive, dest, lim, info, err);
}

/* The extraction must fail with -errnum, a one-line message holding each of
 * the (NULL-terminated) words, and leave nothing behind. */
static void expect_fail_lim(const char *archive, const struct lg_pkg_limits *lim, int errnum, ...) {
        struct lg_error err;
        struct lg_pkg_info info;
        int r = extract(archive, lim, &info, &err);
        if (r != -errnum)
                fail_msg("%s: got %d (%s), want -%d", archive, r, err.msg, errnum);
        assert_null(strchr(err.msg, '\n'));
        va_list ap;
        va_start(ap, errnum);
        for (const char *w; (w = va_arg(ap, const char *));)
                if (!strstr(err.msg, w))
                        fail_msg("message `%s` lacks `%s`", err.msg, w);
        va_end(ap);
        assert_null(info.top);
        assert_int_equal(info.n_files, 0);
        assert_clean(false);
}
#define expect_fail(archive, errnum, ...) expect_fail_lim(archive, NULL, errnum, __VA_ARGS__, NULL)

/* Build ents as one archive of format f and expect that failure. */
#define hostile(f, ents, errnum, ...)                                              \
        do {                                                                      \
                char _p[PATH_MAX];                                                \
                arch_path(_p, "hostile");                                         \
                build(_p, f, ents, ARRAY_SIZE(ents));                             \
                expect_fail(_p, errnum, __VA_ARGS__);                             \
                unlink(_p);                                                       \
        } while (0)

/* ------------------------------------------------------------------ */
/* Blob store. */

static const char ABC_SHA[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
static const char EMPTY_SHA[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

static struct lg_blobstore *store_open(void) {
        char p[PATH_MAX];
        pathf(p, "%s/store", W);
        struct lg_blobstore *bs = NULL;
        struct lg_error err = {0};
        int r = lg_blobstore_open(p, &bs, &err);
        if (r < 0)
                fail_msg("open store: %s", err.msg);
        return bs;
}

static size_t store_tmp_count(void) {
        char p[PATH_MAX];
        pathf(p, "%s/store/blobs/sha256", W);
        size_t n = count_entries(p, LG_PKG_TMP_PREFIX);
        pathf(p, "%s/store/extracted", W);
        return n + count_entries(p, LG_PKG_TMP_PREFIX);
}

static void test_digest_valid(void **state) {
        (void) state;
        assert_true(lg_digest_valid(ABC_SHA));
        assert_true(lg_digest_valid(EMPTY_SHA));
        char s[80];
        strcpy(s, ABC_SHA);
        s[0] = 'B';
        assert_false(lg_digest_valid(s)); /* uppercase */
        strcpy(s, ABC_SHA);
        s[63] = '\0';
        assert_false(lg_digest_valid(s)); /* 63 characters */
        strcpy(s, ABC_SHA);
        strcat(s, "0");
        assert_false(lg_digest_valid(s)); /* 65 */
        strcpy(s, ABC_SHA);
        s[10] = 'g';
        assert_false(lg_digest_valid(s));
        strcpy(s, ABC_SHA);
        s[10] = '/';
        assert_false(lg_digest_valid(s));
        assert_false(lg_digest_valid(""));
        assert_false(lg_digest_valid(NULL));
        assert_false(lg_digest_valid("../../../../etc/passwd"));
        assert_false(lg_digest_valid("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f200"));
}

static void test_blob_put(void **state) {
        (void) state;
        struct lg_blobstore *bs = store_open();
        struct lg_error err = {0};
        struct lg_blob_writer *w;
        assert_int_equal(lg_blob_begin(bs, &w, &err), 0);
        assert_int_equal(store_tmp_count(), 1);
        assert_int_equal(lg_blob_write(w, "a", 1, &err), 0);
        assert_int_equal(lg_blob_write(w, "", 0, &err), 0);
        assert_int_equal(lg_blob_write(w, "bc", 2, &err), 0);
        assert_int_equal(lg_blob_written(w), 3);
        struct lg_digest d;
        assert_int_equal(lg_blob_commit(w, NULL, &d, &err), 0);
        assert_string_equal(d.hex, ABC_SHA);
        assert_int_equal(store_tmp_count(), 0);

        assert_int_equal(lg_blob_exists(bs, ABC_SHA), 1);
        assert_int_equal(lg_blob_exists(bs, EMPTY_SHA), 0);
        char p[PATH_MAX], want[PATH_MAX];
        assert_int_equal(lg_blob_path(bs, ABC_SHA, p, sizeof(p)), 0);
        pathf(want, "%s/store/blobs/sha256/%s", W, ABC_SHA);
        assert_string_equal(p, want);
        assert_int_equal(lg_blob_path(bs, ABC_SHA, p, 10), -ENAMETOOLONG);
        struct stat st;
        assert_int_equal(stat(want, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0444);

        int fd = lg_blob_open(bs, ABC_SHA, &err);
        assert_true(fd >= 0);
        char buf[8] = {0};
        assert_int_equal(lg_read_all(fd, buf, sizeof(buf)), 3);
        assert_string_equal(buf, "abc");
        close(fd);

        /* An empty blob is a blob. */
        assert_int_equal(lg_blob_begin(bs, &w, &err), 0);
        assert_int_equal(lg_blob_commit(w, NULL, &d, &err), 0);
        assert_string_equal(d.hex, EMPTY_SHA);

        struct lg_digest *list;
        size_t n;
        assert_int_equal(lg_blob_list(bs, &list, &n, &err), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].hex, ABC_SHA);
        assert_string_equal(list[1].hex, EMPTY_SHA);
        free(list);

        assert_int_equal(lg_blob_delete(bs, EMPTY_SHA, &err), 0);
        assert_int_equal(lg_blob_exists(bs, EMPTY_SHA), 0);
        assert_int_equal(lg_blob_delete(bs, EMPTY_SHA, &err), -ENOENT);
        assert_int_equal(lg_blob_open(bs, EMPTY_SHA, &err), -ENOENT);
        lg_blobstore_close(bs);
}

static void test_blob_dedup(void **state) {
        (void) state;
        struct lg_blobstore *bs = store_open();
        struct lg_error err = {0};
        char src[PATH_MAX];
        pathf(src, "%s/src", W);
        size_t len = 3 << 20;
        char *data = malloc(len);
        assert_non_null(data);
        for (size_t i = 0; i < len; i++)
                data[i] = (char) (i * 7 + i / 4096);
        write_file(src, data, len, 0644);

        struct lg_digest d1, d2, d3;
        int fd = open(src, O_RDONLY | O_CLOEXEC);
        assert_int_equal(lg_blob_put_fd(bs, fd, &d1, &err), 0);
        close(fd);
        fd = open(src, O_RDONLY | O_CLOEXEC);
        assert_int_equal(lg_blob_put_fd(bs, fd, &d2, &err), 0);
        close(fd);
        assert_string_equal(d1.hex, d2.hex);

        /* Same content in odd-sized chunks, with the expected digest. */
        struct lg_blob_writer *w;
        assert_int_equal(lg_blob_begin(bs, &w, &err), 0);
        for (size_t off = 0; off < len;) {
                size_t n = 1 + (off * 31) % 70000;
                if (n > len - off)
                        n = len - off;
                assert_int_equal(lg_blob_write(w, data + off, n, &err), 0);
                off += n;
        }
        assert_int_equal(lg_blob_commit(w, d1.hex, &d3, &err), 0);
        assert_string_equal(d1.hex, d3.hex);

        struct lg_digest *list;
        size_t n;
        assert_int_equal(lg_blob_list(bs, &list, &n, &err), 0);
        assert_int_equal(n, 1);
        free(list);
        assert_int_equal(store_tmp_count(), 0);

        /* A wrong expected digest stores nothing. */
        assert_int_equal(lg_blob_begin(bs, &w, &err), 0);
        assert_int_equal(lg_blob_write(w, "abc", 3, &err), 0);
        assert_int_equal(lg_blob_commit(w, EMPTY_SHA, &d3, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, ABC_SHA));
        assert_int_equal(lg_blob_exists(bs, ABC_SHA), 0);
        assert_int_equal(store_tmp_count(), 0);
        /* A malformed one is refused. */
        assert_int_equal(lg_blob_begin(bs, &w, &err), 0);
        assert_int_equal(lg_blob_commit(w, "nope", &d3, &err), -EINVAL);
        assert_int_equal(store_tmp_count(), 0);
        free(data);
        lg_blobstore_close(bs);
}

static void test_blob_limit(void **state) {
        (void) state;
        struct lg_blobstore *bs = store_open();
        assert_int_equal(lg_blobstore_max_bytes(bs), 100ull << 20);
        lg_blobstore_set_max_bytes(bs, 1 << 20);
        assert_int_equal(lg_blobstore_max_bytes(bs), 1 << 20);
        struct lg_error err = {0};
        char *chunk = calloc(1, 600 << 10);
        assert_non_null(chunk);

        struct lg_blob_writer *w;
        assert_int_equal(lg_blob_begin(bs, &w, &err), 0);
        assert_int_equal(lg_blob_write(w, chunk, 600 << 10, &err), 0);
        assert_int_equal(lg_blob_write(w, chunk, 600 << 10, &err), -EFBIG);
        assert_non_null(strstr(err.msg, "limit of 1 MiB"));
        /* The temporary file is gone at once; the writer stays failed. */
        assert_int_equal(store_tmp_count(), 0);
        memset(&err, 0, sizeof(err));
        assert_int_equal(lg_blob_write(w, chunk, 1, &err), -EFBIG);
        assert_non_null(strstr(err.msg, "limit of 1 MiB"));
        struct lg_digest d;
        assert_int_equal(lg_blob_commit(w, NULL, &d, &err), -EFBIG);
        assert_int_equal(store_tmp_count(), 0);

        /* Exactly the limit is fine. */
        assert_int_equal(lg_blob_begin(bs, &w, &err), 0);
        assert_int_equal(lg_blob_write(w, chunk, 600 << 10, &err), 0);
        assert_int_equal(lg_blob_write(w, chunk, 424 << 10, &err), 0);
        assert_int_equal(lg_blob_commit(w, NULL, &d, &err), 0);

        /* put_fd over the limit. */
        char src[PATH_MAX];
        pathf(src, "%s/big", W);
        write_file(src, chunk, 600 << 10, 0644);
        int fd = open(src, O_WRONLY | O_APPEND | O_CLOEXEC);
        assert_int_equal(lg_write_all(fd, chunk, 600 << 10), 0);
        close(fd);
        fd = open(src, O_RDONLY | O_CLOEXEC);
        assert_int_equal(lg_blob_put_fd(bs, fd, &d, &err), -EFBIG);
        close(fd);
        assert_int_equal(store_tmp_count(), 0);

        /* Abort drops everything. */
        assert_int_equal(lg_blob_begin(bs, &w, &err), 0);
        assert_int_equal(lg_blob_write(w, chunk, 100, &err), 0);
        assert_int_equal(store_tmp_count(), 1);
        lg_blob_abort(w);
        lg_blob_abort(NULL);
        assert_int_equal(store_tmp_count(), 0);
        struct lg_digest *list;
        size_t n;
        assert_int_equal(lg_blob_list(bs, &list, &n, &err), 0);
        assert_int_equal(n, 1);
        free(list);
        free(chunk);
        lg_blobstore_close(bs);
}

static void test_blob_bad_digest(void **state) {
        (void) state;
        struct lg_blobstore *bs = store_open();
        struct lg_error err = {0};
        static const char *const bad[] = {"", "..", "../../../etc/passwd", "abc",
                                          "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
                                          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
                                          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0",
                                          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a/",
                                          ".tmp-put-0123456789abcdef"};
        char p[PATH_MAX];
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                assert_int_equal(lg_blob_exists(bs, bad[i]), -EINVAL);
                assert_int_equal(lg_blob_open(bs, bad[i], &err), -EINVAL);
                assert_non_null(strstr(err.msg, "invalid digest"));
                assert_int_equal(lg_blob_delete(bs, bad[i], &err), -EINVAL);
                assert_int_equal(lg_blob_path(bs, bad[i], p, sizeof(p)), -EINVAL);
                assert_int_equal(lg_blob_extract(bs, bad[i], NULL, NULL, &err), -EINVAL);
                assert_int_equal(lg_blob_delete_extracted(bs, bad[i], &err), -EINVAL);
        }
        assert_int_equal(lg_blob_exists(bs, NULL), -EINVAL);
        lg_blobstore_close(bs);
}

/* Leftovers of a crash are removed at open, unless another handle is using
 * the store (its upload in progress must survive). */
static void test_blob_crash_leftovers(void **state) {
        (void) state;
        struct lg_blobstore *bs = store_open();
        lg_blobstore_close(bs);
        char p[PATH_MAX];
        pathf(p, "%s/store/blobs/sha256/.tmp-put-0123456789abcdef", W);
        write_file(p, "half", 4, 0600);
        pathf(p, "%s/store/extracted/.tmp-x-0123456789abcdef", W);
        assert_int_equal(mkdir(p, 0700), 0);
        pathf(p, "%s/store/extracted/.tmp-x-0123456789abcdef/sub", W);
        assert_int_equal(mkdir(p, 0700), 0);
        pathf(p, "%s/store/extracted/.tmp-x-0123456789abcdef/sub/f", W);
        write_file(p, "x", 1, 0600);
        pathf(p, "%s/store/blobs/sha256/%s", W, ABC_SHA);
        write_file(p, "abc", 3, 0444);
        assert_int_equal(store_tmp_count(), 2);

        bs = store_open();
        assert_int_equal(store_tmp_count(), 0);
        assert_int_equal(lg_blob_exists(bs, ABC_SHA), 1); /* real blobs stay */

        struct lg_error err = {0};
        struct lg_blob_writer *w;
        assert_int_equal(lg_blob_begin(bs, &w, &err), 0);
        assert_int_equal(lg_blob_write(w, "abc", 3, &err), 0);
        struct lg_blobstore *bs2 = store_open(); /* must not clean w's file */
        assert_int_equal(store_tmp_count(), 1);
        struct lg_digest d;
        assert_int_equal(lg_blob_commit(w, NULL, &d, &err), 0);
        assert_string_equal(d.hex, ABC_SHA);
        lg_blobstore_close(bs2);
        lg_blobstore_close(bs);
}

/* ------------------------------------------------------------------ */
/* Extraction: good archives. */

static const struct ent good_ents[] = {
        {"bin/", 'd', 0, NULL},
        {"bin/run", 'f', 0775, "#!/bin/sh\necho hi\n"},
        {"lib/a/b/c/deep.txt", 'f', 0, "deep\n"},   /* parents implied */
        {"README", 'f', 0600, "read me\n"},
        {"lib/link", 'l', 0, "a/b/c/deep.txt"},
        {"lib/a/up", 'l', 0, "../../README"},
        {"top", 'l', 0, "lib"},
        {"./dot/./x//y", 'f', 0, "xy"},
        {"empty", 'f', 0, ""},
};

static void check_good_tree(const struct lg_pkg_info *info) {
        char p[PATH_MAX], t[PATH_MAX];
        struct stat st;
        static const struct {
                const char *path, *content;
                mode_t mode;
        } files[] = {{"bin/run", "#!/bin/sh\necho hi\n", 0755},
                     {"lib/a/b/c/deep.txt", "deep\n", 0644},
                     {"README", "read me\n", 0644},
                     {"dot/x/y", "xy", 0644},
                     {"empty", "", 0644},
                     {"lib/link", "deep\n", 0644},
                     {"lib/a/up", "read me\n", 0644},
                     {"top/a/b/c/deep.txt", "deep\n", 0644}};
        for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
                pathf(p, "%s/pkg/%s", W, files[i].path);
                char *c = read_file(p, NULL);
                if (!c)
                        fail_msg("missing %s", files[i].path);
                assert_string_equal(c, files[i].content);
                free(c);
                assert_int_equal(stat(p, &st), 0);
                assert_int_equal(st.st_mode & 07777, files[i].mode);
        }
        pathf(p, "%s/pkg/lib/link", W);
        assert_int_equal(lstat(p, &st), 0);
        assert_true(S_ISLNK(st.st_mode));
        ssize_t n = readlink(p, t, sizeof(t) - 1);
        assert_true(n > 0);
        t[n] = '\0';
        assert_string_equal(t, "a/b/c/deep.txt");
        static const char *const dirs[] = {"", "bin", "lib", "lib/a", "lib/a/b", "lib/a/b/c", "dot", "dot/x"};
        for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
                pathf(p, "%s/pkg/%s", W, dirs[i]);
                assert_int_equal(lstat(p, &st), 0);
                assert_true(S_ISDIR(st.st_mode));
                assert_int_equal(st.st_mode & 07777, 0755);
        }
        pathf(p, "%s/pkg/README", W);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mtime, 1700000000);

        assert_int_equal(info->n_files, 5);
        assert_int_equal(info->n_symlinks, 3);
        assert_int_equal(info->n_dirs, 7);
        assert_int_equal(info->total_bytes, strlen("#!/bin/sh\necho hi\n") + 5 + 8 + 2);
        assert_int_equal(info->n_top, 6);
        static const char *const top[] = {"README", "bin", "dot", "empty", "lib", "top"};
        for (size_t i = 0; i < 6; i++)
                assert_string_equal(info->top[i], top[i]);
        assert_null(info->top[6]);
}

static void test_extract_formats(void **state) {
        (void) state;
        static const enum fmt fmts[] = {F_TAR, F_TGZ, F_ZIP, F_ZIP_STORE, F_TZST, F_TBZ2, F_TXZ, F_USTAR};
        for (size_t i = 0; i < ARRAY_SIZE(fmts); i++) {
                char a[PATH_MAX], dest[PATH_MAX];
                arch_path(a, "good");
                build(a, fmts[i], good_ents, ARRAY_SIZE(good_ents));
                struct lg_error err;
                struct lg_pkg_info info;
                int r = extract(a, NULL, &info, &err);
                if (r != 0)
                        fail_msg("%s: %d %s", fmt_names[fmts[i]], r, err.msg);
                check_good_tree(&info);
                lg_pkg_info_free(&info);
                assert_clean(true);
                pathf(dest, "%s/pkg", W);
                assert_int_equal(lg_rm_rf(dest), 0);
                unlink(a);
        }
}

static void test_extract_twice(void **state) {
        (void) state;
        char a[PATH_MAX], b[PATH_MAX], p[PATH_MAX];
        arch_path(a, "good.tgz");
        build(a, F_TGZ, good_ents, ARRAY_SIZE(good_ents));
        struct lg_error err;
        struct lg_pkg_info info;
        assert_int_equal(extract(a, NULL, &info, &err), 0);
        lg_pkg_info_free(&info);
        pathf(p, "%s/pkg/README", W);
        struct stat st1, st2;
        assert_int_equal(stat(p, &st1), 0);
        /* Again: a no-op, with the same description of the tree. */
        assert_int_equal(extract(a, NULL, &info, &err), 1);
        check_good_tree(&info);
        lg_pkg_info_free(&info);
        assert_int_equal(stat(p, &st2), 0);
        assert_int_equal(st1.st_ino, st2.st_ino);
        /* Whatever the archive: the destination is content-addressed. */
        static const struct ent other[] = {{"other", 'f', 0, "x"}};
        arch_path(b, "other.tar");
        build(b, F_TAR, other, 1);
        assert_int_equal(extract(b, NULL, NULL, &err), 1);
        pathf(p, "%s/pkg/other", W);
        assert_int_equal(access(p, F_OK), -1);
        assert_clean(true);
        /* A destination that is a file is an error. */
        pathf(p, "%s/pkg", W);
        lg_rm_rf(p);
        write_file(p, "x", 1, 0644);
        assert_int_equal(extract(a, NULL, NULL, &err), -EEXIST);
        unlink(p);
}

/* "tar -C dir ." style: a "./" root entry and "./"-prefixed names; zips
 * without directory entries; a trailing-slash destination. */
static void test_extract_dot_root(void **state) {
        (void) state;
        static const struct ent ents[] = {
                {"./", 'd', 0, NULL}, {"./app.py", 'f', 0, "print(1)\n"}, {"./pkg/", 'd', 01777, NULL},
                {"./pkg/__init__.py", 'f', 0, ""}, {"./pkg/", 'd', 0, NULL}, /* repeated directory: fine */
        };
        char a[PATH_MAX], dest[PATH_MAX], p[PATH_MAX];
        arch_path(a, "dot.tgz");
        build(a, F_TGZ, ents, ARRAY_SIZE(ents));
        struct lg_error err = {0};
        struct lg_pkg_info info;
        pathf(dest, "%s/pkg/", W);
        int r = lg_pkg_extract(a, dest, NULL, &info, &err);
        if (r != 0)
                fail_msg("%s", err.msg);
        assert_int_equal(info.n_files, 2);
        assert_int_equal(info.n_dirs, 1);
        assert_int_equal(info.n_top, 2);
        assert_string_equal(info.top[0], "app.py");
        assert_string_equal(info.top[1], "pkg");
        lg_pkg_info_free(&info);
        struct stat st;
        pathf(p, "%s/pkg/pkg", W);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0755); /* sticky bit gone */
        assert_clean(true);
}

/* Names are bytes: UTF-8 names come out as they went in, whatever the
 * locale (zip and pax both record them). */
static void test_extract_utf8(void **state) {
        (void) state;
        static const struct ent ents[] = {{"h\xc3\xa9llo/\xe2\x9c\x93.txt", 'f', 0, "ok"},
                                          {"\xe6\x97\xa5\xe6\x9c\xac", 'l', 0, "h\xc3\xa9llo"}};
        static const enum fmt fmts[] = {F_ZIP, F_TGZ};
        for (size_t i = 0; i < ARRAY_SIZE(fmts); i++) {
                char a[PATH_MAX], p[PATH_MAX];
                arch_path(a, "utf8");
                build(a, fmts[i], ents, ARRAY_SIZE(ents));
                struct lg_error err;
                struct lg_pkg_info info;
                int r = extract(a, NULL, &info, &err);
                if (r != 0)
                        fail_msg("%s: %s", fmt_names[fmts[i]], err.msg);
                assert_int_equal(info.n_top, 2);
                assert_string_equal(info.top[0], "h\xc3\xa9llo");
                lg_pkg_info_free(&info);
                pathf(p, "%s/pkg/\xe6\x97\xa5\xe6\x9c\xac/\xe2\x9c\x93.txt", W);
                char *c = read_file(p, NULL);
                assert_non_null(c);
                assert_string_equal(c, "ok");
                free(c);
                pathf(p, "%s/pkg", W);
                lg_rm_rf(p);
        }
        /* Bytes that are not UTF-8 are fine in a name, and turn into '?' in
         * the message (which may end up in JSON). */
        static const struct ent bad[] = {{"x\xff\xfe/../y", 'f', 0, "x"}};
        hostile(F_TAR, bad, EINVAL, "`x?" "?/../y`");
}

/* setuid, setgid and sticky bits are stripped, modes normalized, whatever
 * the umask. */
static void test_extract_modes(void **state) {
        (void) state;
        static const struct ent ents[] = {
                {"suid", 'f', 04755, "x"}, {"sgid", 'f', 02644, "x"}, {"sticky/", 'd', 01777, NULL},
                {"odd", 'f', 0100, "x"}, {"none", 'f', 0, "x"}, {"ro", 'f', 0400, "x"}, {"d/", 'd', 0700, NULL},
                {"implied/f", 'f', 06777, "x"},
        };
        static const struct {
                const char *path;
                mode_t mode;
        } want[] = {{"suid", 0755}, {"sgid", 0644}, {"sticky", 0755}, {"odd", 0755}, {"none", 0644},
                    {"ro", 0644},   {"d", 0755},    {"implied", 0755}, {"implied/f", 0755}, {"", 0755}};
        char a[PATH_MAX], p[PATH_MAX];
        arch_path(a, "modes.tar");
        build(a, F_TAR, ents, ARRAY_SIZE(ents));
        mode_t old = umask(077);
        struct lg_error err;
        int r = extract(a, NULL, NULL, &err);
        umask(old);
        if (r != 0)
                fail_msg("%s", err.msg);
        for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
                struct stat st;
                pathf(p, "%s/pkg/%s", W, want[i].path);
                assert_int_equal(lstat(p, &st), 0);
                if ((st.st_mode & 07777) != want[i].mode)
                        fail_msg("%s: mode %o, want %o", want[i].path, st.st_mode & 07777, want[i].mode);
        }
        assert_clean(true);
}

/* ------------------------------------------------------------------ */
/* Extraction: lying headers, bombs, limits, corruption. Each fails whole,
 * naming the entry. */

/* Overwrite a field of a tar header and recompute its checksum. */
static void patch_tar_header(char *hdr, size_t off, const char *val, size_t n) {
        memcpy(hdr + off, val, n);
        memset(hdr + 148, ' ', 8);
        unsigned sum = 0;
        for (size_t i = 0; i < 512; i++)
                sum += (unsigned char) hdr[i];
        char ck[8];
        snprintf(ck, sizeof(ck), "%06o", sum);
        memcpy(hdr + 148, ck, 7);
}

/* Sizes in headers are not trusted: a zip whose directory claims 100 bytes
 * for a 32 MiB member, and a tar header whose size was lowered. */
static void test_lying_headers(void **state) {
        (void) state;
        char a[PATH_MAX];
        arch_path(a, "lie.zip");
        build_zeros(a, F_ZIP, 1, 32 << 20);
        size_t len;
        char *z = read_file(a, &len);
        assert_non_null(z);
        size_t patched = 0;
        for (size_t i = 0; i + 46 <= len; i++) {
                if (memcmp(z + i, "PK\x01\x02", 4) == 0) { /* central directory: usize at +24 */
                        uint32_t v = 100;
                        memcpy(z + i + 24, &v, 4);
                        patched++;
                } else if (memcmp(z + i, "PK\x03\x04", 4) == 0) { /* local header: usize at +22 */
                        uint32_t v;
                        memcpy(&v, z + i + 22, 4);
                        if (v != 0 && v != 0xffffffff) {
                                v = 100;
                                memcpy(z + i + 22, &v, 4);
                        }
                }
        }
        assert_int_equal(patched, 1);
        write_file(a, z, len, 0644);
        free(z);
        struct lg_pkg_limits lim = {.max_file_bytes = 1 << 20};
        struct lg_error err;
        int r = extract(a, &lim, NULL, &err);
        /* Our count stops it at 1 MiB, before libarchive sees the lie. */
        assert_int_equal(r, -EFBIG);
        assert_non_null(strstr(err.msg, "`zero000`: file is larger than the limit of 1 MiB"));
        assert_clean(false);
        unlink(a);

        /* tar: a size lowered in the header makes the data read as headers. */
        char data[4096];
        memset(data, 'A', sizeof(data));
        data[sizeof(data) - 1] = '\0';
        const struct ent e2[2] = {{"a", 'f', 0, data}, {"b", 'f', 0, "b"}};
        arch_path(a, "lie.tar");
        build(a, F_USTAR, e2, 2);
        z = read_file(a, &len);
        patch_tar_header(z, 124, "00000000144", 11); /* 100 */
        write_file(a, z, len, 0644);
        free(z);
        expect_fail(a, EBADMSG, "corrupt");
        /* ... and raised: the archive ends before the data does. */
        build(a, F_USTAR, e2, 2);
        z = read_file(a, &len);
        patch_tar_header(z, 124, "00000100000", 11);
        write_file(a, z, len, 0644);
        free(z);
        expect_fail(a, EBADMSG, "`a`", "corrupt data");
        unlink(a);

        /* A file turned into a FIFO by its typeflag alone. */
        static const struct ent one[] = {{"sock", 'f', 0, NULL}};
        arch_path(a, "raw.tar");
        build(a, F_USTAR, one, 1);
        z = read_file(a, &len);
        patch_tar_header(z, 156, "6", 1); /* FIFO by typeflag */
        write_file(a, z, len, 0644);
        free(z);
        expect_fail(a, EINVAL, "`sock`", "FIFO");
        unlink(a);
}

static void test_bombs(void **state) {
        (void) state;
        char gz[PATH_MAX], zip[PATH_MAX], many[PATH_MAX];
        pathf(gz, "%s/zeros-1g.tgz", bombs);
        pathf(zip, "%s/zeros-1g.zip", bombs);
        pathf(many, "%s/zeros-64x16m.tgz", bombs);
        struct stat st;
        assert_int_equal(stat(gz, &st), 0);
        print_message("    1 GiB of zeros: tar.gz %lld bytes", (long long) st.st_size);
        assert_int_equal(stat(zip, &st), 0);
        print_message(", zip %lld bytes\n", (long long) st.st_size);

        /* Default limits: the header's size alone is over the file limit. */
        expect_fail(gz, EFBIG, "`zero000`", "limit of 256 MiB");
        expect_fail(zip, EFBIG, "`zero000`", "limit of 256 MiB");

        /* With the size limits lifted the ratio stops it, early: counted
         * as the bytes come out, whatever the headers say. */
        struct lg_pkg_limits lim = {.max_total_bytes = UINT64_MAX, .max_file_bytes = UINT64_MAX};
        uint64_t t0 = lg_now_ns();
        expect_fail_lim(gz, &lim, EFBIG, "`zero000`", "decompression bomb", "200 times", NULL);
        expect_fail_lim(zip, &lim, EFBIG, "`zero000`", "decompression bomb", NULL);
        uint64_t ms = (lg_now_ns() - t0) / 1000000;
        print_message("    stopped both by ratio in %" PRIu64 " ms\n", ms);

        /* Ratio lifted: the total limit stops it, counted across files. */
        struct lg_pkg_limits lim2 = {.max_total_bytes = 100 << 20, .max_ratio = UINT32_MAX};
        expect_fail_lim(many, &lim2, EFBIG, "`zero006`", "limit of 100 MiB", NULL);
        struct lg_pkg_limits lim3 = {.max_file_bytes = 8 << 20, .max_ratio = UINT32_MAX};
        expect_fail_lim(many, &lim3, EFBIG, "`zero000`", "limit of 8 MiB", NULL);
}

static void test_limits(void **state) {
        (void) state;
        char a[PATH_MAX];
        arch_path(a, "many.tar");
        struct ent ents[12];
        char names[12][16];
        for (int i = 0; i < 12; i++) {
                snprintf(names[i], sizeof(names[i]), "f%02d", i);
                ents[i] = (struct ent){names[i], 'f', 0, "x"};
        }
        build(a, F_TAR, ents, 12);
        struct lg_pkg_limits lim = {.max_entries = 11};
        expect_fail_lim(a, &lim, E2BIG, "more than 11 entries", NULL);
        lim.max_entries = 12;
        struct lg_error err;
        assert_int_equal(extract(a, &lim, NULL, &err), 0);
        char p[PATH_MAX];
        pathf(p, "%s/pkg", W);
        lg_rm_rf(p);

        static const struct ent longp[] = {{"aaaaaaaaaa/bbbbbbbbbb/cccccccccc/dddddddddd/eeeeeeeeee/f", 'f', 0, "x"}};
        build(a, F_TAR, longp, 1);
        struct lg_pkg_limits l2 = {.max_path_len = 50};
        expect_fail_lim(a, &l2, ENAMETOOLONG, "longer than 50 bytes", NULL);
        struct lg_pkg_limits l3 = {.max_depth = 5};
        expect_fail_lim(a, &l3, ENAMETOOLONG, "deeper than 5 components", NULL);
        l3.max_depth = 6;
        assert_int_equal(extract(a, &l3, NULL, &err), 0);
        lg_rm_rf(p);

        char comp[300];
        memset(comp, 'n', 256);
        comp[256] = '\0';
        struct ent longc[] = {{comp, 'f', 0, "x"}};
        build(a, F_TAR, longc, 1);
        expect_fail(a, ENAMETOOLONG, "longer than 255 bytes");

        /* Compression layers: one. */
        arch_path(a, "double.tgz.gz");
        build(a, F_TGZGZ, good_ents, ARRAY_SIZE(good_ents));
        expect_fail(a, EINVAL, "more than one compression layer");
}

/* The default entry limit, LG_PKG_DEFAULT_MAX_ENTRIES: a package of exactly
 * that many (empty files, as tar.gz) is extracted whole; one more entry
 * fails with the limit named and nothing left behind. */
static void test_entry_limit(void **state) {
        (void) state;
        const unsigned n = (unsigned) LG_PKG_DEFAULT_MAX_ENTRIES;
        struct lg_pkg_limits lim;
        lg_pkg_limits_resolve(NULL, &lim);
        assert_int_equal(lim.max_entries, LG_PKG_DEFAULT_MAX_ENTRIES);
        char a[PATH_MAX], p[PATH_MAX];
        arch_path(a, "at-limit.tgz");
        build_zeros(a, F_TGZ, n, 0);
        struct lg_error err;
        struct lg_pkg_info info;
        int r = extract(a, NULL, &info, &err);
        if (r != 0)
                fail_msg("%u entries: %s", n, err.msg);
        assert_int_equal(info.n_files, n);
        lg_pkg_info_free(&info);
        pathf(p, "%s/pkg", W);
        assert_int_equal(count_entries(p, NULL), n);
        assert_int_equal(lg_rm_rf(p), 0);
        unlink(a);

        arch_path(a, "over-limit.tgz");
        build_zeros(a, F_TGZ, n + 1, 0);
        char want[64];
        snprintf(want, sizeof(want), "package has more than %u entries", n);
        expect_fail(a, E2BIG, want); /* and nothing left behind */
        /* The message is the limit alone, without an errno's text. */
        assert_int_equal(extract(a, NULL, NULL, &err), -E2BIG);
        assert_string_equal(err.msg, want);
        unlink(a);
}

static void test_corrupt(void **state) {
        (void) state;
        char a[PATH_MAX], p[PATH_MAX];
        /* Good archives with random (incompressible) content, then cut. */
        static char noise[200000];
        uint32_t s = 12345;
        for (size_t i = 0; i < sizeof(noise) - 1; i++) {
                s = s * 1103515245 + 12345;
                noise[i] = (char) ('!' + (s >> 16) % 90);
        }
        static const struct ent ents[] = {{"a", 'f', 0, noise}, {"b", 'f', 0, "b"}};
        static const enum fmt fmts[] = {F_TAR, F_TGZ, F_ZIP, F_ZIP_STORE, F_TZST, F_TXZ, F_TBZ2};
        for (size_t i = 0; i < ARRAY_SIZE(fmts); i++) {
                arch_path(a, "cut");
                build(a, fmts[i], ents, ARRAY_SIZE(ents));
                size_t len;
                char *z = read_file(a, &len);
                static const double cuts[] = {0.1, 0.5, 0.9};
                for (size_t c = 0; c < ARRAY_SIZE(cuts); c++) {
                        write_file(a, z, (size_t) ((double) len * cuts[c]), 0644);
                        struct lg_error err;
                        int r = extract(a, NULL, NULL, &err);
                        if (r >= 0)
                                fail_msg("%s cut at %.0f%%: extracted", fmt_names[fmts[i]], cuts[c] * 100);
                        assert_true(r == -EBADMSG || r == -EINVAL);
                        assert_clean(false);
                }
                /* Flip bytes in the middle of the data. */
                for (size_t k = len / 3; k < len / 3 + 16; k++)
                        z[k] ^= 0x55;
                write_file(a, z, len, 0644);
                struct lg_error err;
                int r = extract(a, NULL, NULL, &err);
                /* Formats without a checksum may not notice: plain tar, and
                 * zstd frames written without the optional checksum. */
                if (r >= 0) {
                        if (fmts[i] != F_TAR && fmts[i] != F_TZST)
                                fail_msg("%s with flipped bytes extracted", fmt_names[fmts[i]]);
                        pathf(p, "%s/pkg", W);
                        lg_rm_rf(p);
                } else {
                        assert_true(r == -EBADMSG || r == -EINVAL);
                }
                assert_clean(false);
                free(z);
                unlink(a);
        }

        /* Empty things. */
        arch_path(a, "empty.tar");
        build(a, F_TAR, NULL, 0);
        expect_fail(a, EINVAL, "archive is empty");
        arch_path(a, "empty.zip");
        build(a, F_ZIP, NULL, 0);
        expect_fail(a, EINVAL, "archive is empty");
        arch_path(a, "empty.tgz");
        build(a, F_TGZ, NULL, 0);
        expect_fail(a, EINVAL, "archive is empty");
        static const struct ent dirs[] = {{"a/", 'd', 0, NULL}, {"a/b/", 'd', 0, NULL}, {"l", 'l', 0, "a"}};
        arch_path(a, "dirs.tar");
        build(a, F_TAR, dirs, ARRAY_SIZE(dirs));
        expect_fail(a, EINVAL, "no files");
        arch_path(a, "zero");
        write_file(a, "", 0, 0644);
        expect_fail(a, EBADMSG, "empty");

        /* Not an archive. */
        arch_path(a, "text");
        const char *txt = "def handler(event):\n    return 42\n";
        write_file(a, txt, strlen(txt), 0644);
        expect_fail(a, EBADMSG, "not a valid archive");
        arch_path(a, "noise");
        write_file(a, noise, sizeof(noise), 0644);
        expect_fail(a, EBADMSG, "not a valid archive");
        /* A gzip stream of something that is not a tar. */
        arch_path(a, "plain.gz");
        struct archive *w = archive_write_new();
        archive_write_set_format_raw(w);
        archive_write_add_filter_gzip(w);
        assert_int_equal(archive_write_open_filename(w, a), ARCHIVE_OK);
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, "x");
        archive_entry_set_filetype(e, AE_IFREG);
        assert_int_equal(archive_write_header(w, e), ARCHIVE_OK);
        archive_write_data(w, txt, strlen(txt));
        archive_entry_free(e);
        archive_write_close(w);
        archive_write_free(w);
        expect_fail(a, EBADMSG, "not a valid archive");
        /* Not a file at all. */
        pathf(p, "%s/arch", W);
        struct lg_error err;
        assert_int_equal(extract(p, NULL, NULL, &err), -EINVAL);
        pathf(p, "%s/arch/missing", W);
        assert_int_equal(extract(p, NULL, NULL, &err), -ENOENT);
        assert_clean(false);
}

/* ------------------------------------------------------------------ */
/* Deterministic mutation loop: thousands of damaged archives; none may
 * crash, touch the canary, leave a temporary behind, or produce a tree with
 * anything but normalized files, directories and inside symlinks. */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return (uint32_t) (rng >> 11);
}

/* Names chosen so that one byte turns them hostile: "x." -> "..",
 * "u" -> "t" (through a symlink), "d/s2" -> "../..." */
static const struct ent fuzz_ents[] = {
        {"d/", 'd', 0, NULL},
        {"d/f1", 'f', 0, "hello"},
        {"x./canary/pwned", 'f', 0, "pwned"},
        {"s", 'l', 0, "x./canary"},
        {"t", 'l', 0, "d"},
        {"u/f", 'f', 0, "through"},
        {"d/s2", 'l', 0, "../d/f1"},
        {"e", 'f', 0755, "#!/bin/sh\n"},
        {"f", 'f', 0, "ffff"},
        {"x./y", 'f', 0, "y"},
};

static void tar_fix_checksums(unsigned char *z, size_t len) {
        for (size_t off = 0; off + 512 <= len;) {
                unsigned char *h = z + off;
                bool zero = true;
                for (size_t i = 0; i < 512 && zero; i++)
                        zero = h[i] == 0;
                if (zero)
                        break;
                memset(h + 148, ' ', 8);
                unsigned sum = 0;
                for (size_t i = 0; i < 512; i++)
                        sum += h[i];
                char ck[8];
                snprintf(ck, sizeof(ck), "%06o", sum);
                memcpy(h + 148, ck, 7);
                char sz[13];
                memcpy(sz, h + 124, 12);
                sz[12] = '\0';
                unsigned long long size = strtoull(sz, NULL, 8);
                if (size > len)
                        break;
                off += 512 + ((size + 511) & ~511ull);
        }
}

/* Offsets of the headers of a tar (before mutation). */
static size_t tar_headers(const unsigned char *z, size_t len, size_t *offs, size_t cap) {
        size_t n = 0;
        for (size_t off = 0; off + 512 <= len && n < cap;) {
                bool zero = true;
                for (size_t i = 0; i < 512 && zero; i++)
                        zero = z[off + i] == 0;
                if (zero)
                        break;
                offs[n++] = off;
                char sz[13];
                memcpy(sz, z + off + 124, 12);
                sz[12] = '\0';
                off += 512 + ((strtoull(sz, NULL, 8) + 511) & ~511ull);
        }
        return n;
}

static const unsigned char interesting[] = {'.', '/', '\0', '0', '1', '2', '3', '4', '5', '6', '7',
                                            't', 'u', 'x', 'L', 'K', 'x', 'g', 0xff, 0x80, ' '};

/* Replace a byte of one of the names at every place the name occurs. */
static void mutate_names(unsigned char *z, size_t len) {
        const struct ent *e = &fuzz_ents[rnd() % ARRAY_SIZE(fuzz_ents)];
        const char *s = (rnd() % 3 == 0 && e->type == 'l') ? e->data : e->path;
        size_t sl = strlen(s);
        size_t at = rnd() % sl;
        unsigned char v = interesting[rnd() % sizeof(interesting)];
        for (size_t i = 0; i + sl <= len; i++)
                if (memcmp(z + i, s, sl) == 0)
                        z[i + at] = v;
}

static void verify_tree(int dfd, size_t depth) {
        DIR *d = fdopendir(dup(dfd));
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                struct stat st;
                assert_int_equal(fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW), 0);
                if (S_ISREG(st.st_mode)) {
                        assert_true((st.st_mode & 07777) == 0644 || (st.st_mode & 07777) == 0755);
                        assert_int_equal(st.st_nlink, 1);
                } else if (S_ISDIR(st.st_mode)) {
                        assert_int_equal(st.st_mode & 07777, 0755);
                        int sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        assert_true(sub >= 0);
                        verify_tree(sub, depth + 1);
                        close(sub);
                } else if (S_ISLNK(st.st_mode)) {
                        char t[PATH_MAX];
                        ssize_t n = readlinkat(dfd, de->d_name, t, sizeof(t) - 1);
                        assert_true(n > 0);
                        t[n] = '\0';
                        if (lg_extract_symlink_unsafe(depth, t))
                                fail_msg("unsafe symlink %s -> %s", de->d_name, t);
                } else {
                        fail_msg("special file %s", de->d_name);
                }
        }
        closedir(d);
}

static void test_fuzz(void **state) {
        (void) state;
        static const enum fmt fmts[] = {F_USTAR, F_ZIP_STORE, F_ZIP, F_TGZ};
        unsigned char *base[ARRAY_SIZE(fmts)];
        size_t blen[ARRAY_SIZE(fmts)];
        char a[PATH_MAX], dest[PATH_MAX];
        arch_path(a, "fuzz");
        pathf(dest, "%s/pkg", W);
        for (size_t i = 0; i < ARRAY_SIZE(fmts); i++) {
                build(a, fmts[i], fuzz_ents, ARRAY_SIZE(fuzz_ents));
                base[i] = (unsigned char *) read_file(a, &blen[i]);
                /* Unmutated, it extracts. */
                struct lg_error err;
                int r = extract(a, NULL, NULL, &err);
                if (r != 0)
                        fail_msg("base %s: %s", fmt_names[fmts[i]], err.msg);
                lg_rm_rf(dest);
        }
        size_t hoffs[64];
        size_t nh = tar_headers(base[0], blen[0], hoffs, 64);
        assert_true(nh >= ARRAY_SIZE(fuzz_ents));

        const unsigned iterations = 4000;
        unsigned ok = 0, failed = 0, by_errno[4] = {0};
        struct lg_pkg_limits lim = {.max_total_bytes = 1 << 20, .max_entries = 1000};
        unsigned char *z = malloc(65536 + 1024);
        assert_non_null(z);
        for (unsigned it = 0; it < iterations; it++) {
                size_t which = rnd() % ARRAY_SIZE(fmts);
                size_t len = blen[which];
                assert_true(len <= 65536);
                memcpy(z, base[which], len);
                unsigned kind = rnd() % 4;
                unsigned nmut = 1 + rnd() % 3;
                for (unsigned m = 0; m < nmut; m++) {
                        if (kind == 0 && fmts[which] == F_USTAR) {
                                /* A header field, then a valid checksum. */
                                static const struct {
                                        size_t off, len;
                                } fields[] = {{0, 100}, {100, 8}, {124, 12}, {156, 1}, {157, 100}, {345, 155}};
                                size_t h = hoffs[rnd() % nh];
                                size_t f = rnd() % ARRAY_SIZE(fields);
                                size_t at = h + fields[f].off + rnd() % fields[f].len;
                                z[at] = rnd() % 2 ? interesting[rnd() % sizeof(interesting)] : (unsigned char) rnd();
                        } else if (kind == 1) {
                                mutate_names(z, len);
                        } else if (kind == 2) {
                                z[rnd() % len] = (unsigned char) rnd();
                        } else {
                                z[rnd() % len] ^= (unsigned char) (1u << (rnd() % 8));
                        }
                }
                if (fmts[which] == F_USTAR && rnd() % 4 != 0)
                        tar_fix_checksums(z, len);
                if (rnd() % 16 == 0)
                        len = rnd() % len;
                write_file(a, z, len, 0644);

                struct lg_error err = {0};
                struct lg_pkg_info info;
                int r = lg_pkg_extract(a, dest, &lim, &info, &err);
                assert_true(r == 0 || r < 0);
                if (r == 0) {
                        ok++;
                        int fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                        assert_true(fd >= 0);
                        verify_tree(fd, 0);
                        close(fd);
                        lg_pkg_info_free(&info);
                        assert_clean(true);
                        assert_int_equal(lg_rm_rf(dest), 0);
                } else {
                        failed++;
                        assert_true(err.msg[0] != '\0');
                        assert_null(strchr(err.msg, '\n'));
                        by_errno[r == -EINVAL ? 0 : r == -EBADMSG ? 1 : r == -EFBIG ? 2 : 3]++;
                        assert_clean(false);
                }
                /* Nothing above W either: the canary is a sibling of the temporaries. */
                char p[PATH_MAX];
                pathf(p, "%s/pwned", W);
                assert_int_equal(access(p, F_OK), -1);
        }
        print_message("    %u mutations: %u extracted, %u refused (EINVAL %u, EBADMSG %u, EFBIG %u, other %u)\n",
                      iterations, ok, failed, by_errno[0], by_errno[1], by_errno[2], by_errno[3]);
        assert_true(failed > iterations / 10);
        free(z);
        for (size_t i = 0; i < ARRAY_SIZE(fmts); i++)
                free(base[i]);
}

/* ------------------------------------------------------------------ */
/* The blob store with extraction. */

static void test_blob_extract(void **state) {
        (void) state;
        struct lg_blobstore *bs = store_open();
        char a[PATH_MAX], p[PATH_MAX];
        arch_path(a, "good.zip");
        build(a, F_ZIP, good_ents, ARRAY_SIZE(good_ents));
        struct lg_error err = {0};
        struct lg_digest d;
        int fd = open(a, O_RDONLY | O_CLOEXEC);
        assert_int_equal(lg_blob_put_fd(bs, fd, &d, &err), 0);
        close(fd);
        struct lg_pkg_info info;
        int r = lg_blob_extract(bs, d.hex, NULL, &info, &err);
        if (r != 0)
                fail_msg("%s", err.msg);
        assert_int_equal(info.n_files, 5);
        lg_pkg_info_free(&info);
        assert_int_equal(lg_blob_extract(bs, d.hex, NULL, &info, &err), 1);
        assert_int_equal(info.n_files, 5);
        assert_int_equal(info.n_top, 6);
        lg_pkg_info_free(&info);
        assert_int_equal(lg_blob_extracted_path(bs, d.hex, p, sizeof(p)), 0);
        char want[PATH_MAX];
        pathf(want, "%s/store/extracted/%s", W, d.hex);
        assert_string_equal(p, want);
        pathf(p, "%s/README", want);
        assert_int_equal(access(p, R_OK), 0);
        assert_int_equal(store_tmp_count(), 0);

        assert_int_equal(lg_blob_delete_extracted(bs, d.hex, &err), 0);
        assert_int_equal(access(want, F_OK), -1);
        assert_int_equal(lg_blob_delete_extracted(bs, d.hex, &err), -ENOENT);
        assert_int_equal(store_tmp_count(), 0);
        assert_int_equal(lg_blob_exists(bs, d.hex), 1);

        /* A hostile blob leaves no trace in extracted/. */
        static const struct ent bad[] = {{"ok", 'f', 0, "x"}, {"../x", 'f', 0, "x"}};
        build(a, F_TGZ, bad, 2);
        fd = open(a, O_RDONLY | O_CLOEXEC);
        assert_int_equal(lg_blob_put_fd(bs, fd, &d, &err), 0);
        close(fd);
        assert_int_equal(lg_blob_extract(bs, d.hex, NULL, NULL, &err), -EINVAL);
        pathf(p, "%s/store/extracted", W);
        assert_int_equal(count_entries(p, NULL), 0);
        assert_int_equal(lg_blob_extract(bs, EMPTY_SHA, NULL, NULL, &err), -ENOENT);
        lg_blobstore_close(bs);
}

/* ------------------------------------------------------------------ */
/* Packing a directory. */

static bool skip_git(const char *rel, bool is_dir, void *ud) {
        (*(int *) ud)++;
        return is_dir && !strcmp(rel, ".git");
}

static void make_src(const char *src) {
        char p[PATH_MAX];
        assert_int_equal(lg_mkdir_p(src, 0755), 0);
        pathf(p, "%s/lib/sub", src);
        assert_int_equal(lg_mkdir_p(p, 0700), 0);
        pathf(p, "%s/.git", src);
        assert_int_equal(mkdir(p, 0755), 0);
        pathf(p, "%s/.git/HEAD", src);
        write_file(p, "ref", 3, 0644);
        pathf(p, "%s/main.py", src);
        write_file(p, "print('hi')\n", 12, 0600);
        pathf(p, "%s/run.sh", src);
        write_file(p, "#!/bin/sh\n", 10, 04750);
        pathf(p, "%s/lib/sub/data.bin", src);
        write_file(p, "\0\1\2", 3, 0644);
        char longname[200];
        memset(longname, 'L', 150);
        longname[150] = '\0';
        pathf(p, "%s/lib/%s", src, longname); /* needs a pax header */
        write_file(p, "long", 4, 0644);
        pathf(p, "%s/lib/na\xc3\xafve-\xe2\x9c\x93.txt", src); /* UTF-8 name */
        write_file(p, "\xc3\xa9", 2, 0644);
        pathf(p, "%s/lib/in", src);
        assert_int_equal(symlink("sub/data.bin", p), 0);
        pathf(p, "%s/lib/up", src);
        assert_int_equal(symlink("../main.py", p), 0);
        pathf(p, "%s/out", src);
        assert_int_equal(symlink("../../etc/passwd", p), 0); /* leaves: skipped */
        pathf(p, "%s/abs", src);
        assert_int_equal(symlink("/etc/passwd", p), 0); /* skipped */
        pathf(p, "%s/fifo", src);
        assert_int_equal(mkfifo(p, 0644), 0); /* skipped */
}

static void test_pack(void **state) {
        (void) state;
        char src[PATH_MAX], out1[PATH_MAX], out2[PATH_MAX], p[PATH_MAX];
        pathf(src, "%s/src", W);
        make_src(src);
        pathf(out1, "%s/arch/one.tgz", W);
        pathf(out2, "%s/arch/two.tgz", W);
        int calls = 0;
        struct lg_pkg_pack_opts opts = {.skip = skip_git, .userdata = &calls};
        struct lg_pkg_pack_info pi;
        struct lg_error err = {0};
        int fd = open(out1, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int r = lg_pkg_pack_dir(src, fd, &opts, &pi, &err);
        if (r < 0)
                fail_msg("%s", err.msg);
        close(fd);
        assert_true(calls > 0);
        assert_int_equal(pi.n_files, 5);
        assert_int_equal(pi.n_dirs, 2);
        assert_int_equal(pi.n_symlinks, 2);
        assert_int_equal(pi.n_skipped, 4); /* .git, out, abs, fifo */
        assert_int_equal(pi.total_bytes, 12 + 10 + 3 + 4 + 2);

        /* Deterministic: other mtimes, modes (beyond x) and a second later. */
        sleep(1);
        pathf(p, "%s/main.py", src);
        assert_int_equal(chmod(p, 0644), 0);
        struct timespec ts[2] = {{.tv_sec = 12345, .tv_nsec = 0}, {.tv_sec = 12345, .tv_nsec = 0}};
        assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
        fd = open(out2, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        calls = 0;
        assert_int_equal(lg_pkg_pack_dir(src, fd, &opts, NULL, &err), 0);
        close(fd);
        size_t l1, l2;
        char *b1 = read_file(out1, &l1), *b2 = read_file(out2, &l2);
        assert_int_equal(l1, l2);
        assert_memory_equal(b1, b2, l1);
        free(b1);
        free(b2);

        /* It extracts to the same tree. */
        struct lg_pkg_info info;
        r = extract(out1, NULL, &info, &err);
        if (r != 0)
                fail_msg("%s", err.msg);
        assert_int_equal(info.n_files, 5);
        assert_int_equal(info.n_symlinks, 2);
        assert_int_equal(info.n_top, 3);
        assert_string_equal(info.top[0], "lib");
        assert_string_equal(info.top[1], "main.py");
        assert_string_equal(info.top[2], "run.sh");
        lg_pkg_info_free(&info);
        struct stat st;
        pathf(p, "%s/pkg/run.sh", W);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0755);
        pathf(p, "%s/pkg/lib/up", W);
        char *c = read_file(p, NULL);
        assert_string_equal(c, "print('hi')\n");
        free(c);
        pathf(p, "%s/pkg/lib/sub", W);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0755);
        pathf(p, "%s/pkg/out", W);
        assert_int_equal(lstat(p, &st), -1);
        pathf(p, "%s/pkg/lib/na\xc3\xafve-\xe2\x9c\x93.txt", W);
        c = read_file(p, NULL);
        assert_non_null(c);
        assert_string_equal(c, "\xc3\xa9");
        free(c);
        pathf(p, "%s/pkg", W);
        lg_rm_rf(p);

        /* Writing the archive inside the directory: it leaves itself out. */
        pathf(p, "%s/self.tgz", src);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_int_equal(lg_pkg_pack_dir(src, fd, NULL, &pi, &err), 0);
        close(fd);
        assert_int_equal(pi.n_files, 6); /* with .git/HEAD now */
        assert_int_equal(pi.n_skipped, 4); /* out, abs, fifo, self.tgz */
        assert_int_equal(extract(p, NULL, NULL, &err), 0);
        pathf(p, "%s/pkg/self.tgz", W);
        assert_int_equal(access(p, F_OK), -1);
        pathf(p, "%s/pkg", W);
        lg_rm_rf(p);

        pathf(p, "%s/missing", W);
        assert_int_equal(lg_pkg_pack_dir(p, 1, NULL, NULL, &err), -ENOENT);
}


/* The skip sees names as in the archive. */
static bool skip_src_git(const char *rel, bool is_dir, void *ud) {
        (*(int *) ud)++;
        return is_dir && !strcmp(rel, "src/.git");
}

/* Packing files and directories each under its name (legion submit). */
static void test_pack_paths(void **state) {
        (void) state;
        char src[PATH_MAX], file[PATH_MAX], link[PATH_MAX], dot[PATH_MAX], out[PATH_MAX], p[PATH_MAX];
        pathf(src, "%s/src", W);
        make_src(src);
        pathf(file, "%s/app.py", W);
        write_file(file, "print(1)\n", 9, 0644);
        pathf(link, "%s/input.txt", W);
        pathf(p, "%s/main.py", src);
        assert_int_equal(symlink(p, link), 0); /* named: followed */
        pathf(dot, "%s/src/lib/sub/.", W);
        pathf(out, "%s/arch/paths.tgz", W);
        char data[PATH_MAX];
        pathf(data, "%s/src/", W); /* a trailing slash: still `src` */
        const char *paths[] = {file, data, link, dot};
        int calls = 0;
        struct lg_pkg_pack_opts opts = {.skip = skip_src_git, .userdata = &calls};
        struct lg_pkg_pack_info pi;
        struct lg_error err = {0};
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int r = lg_pkg_pack_paths(paths, 4, fd, &opts, &pi, &err);
        close(fd);
        if (r < 0)
                fail_msg("%s", err.msg);
        struct lg_pkg_info info;
        r = extract(out, NULL, &info, &err);
        if (r != 0)
                fail_msg("%s", err.msg);
        assert_int_equal(info.n_top, 4);
        assert_string_equal(info.top[0], "app.py");
        assert_string_equal(info.top[1], "input.txt");
        assert_string_equal(info.top[2], "src");
        assert_string_equal(info.top[3], "sub");
        lg_pkg_info_free(&info);
        pathf(p, "%s/pkg/input.txt", W);
        char *c = read_file(p, NULL);
        assert_string_equal(c, "print('hi')\n");
        free(c);
        pathf(p, "%s/pkg/src/lib/up", W); /* a symlink inside a directory stays one */
        struct stat st;
        assert_int_equal(lstat(p, &st), 0);
        assert_true(S_ISLNK(st.st_mode));
        pathf(p, "%s/pkg/src/.git", W); /* the skip applies below the tops */
        assert_int_equal(access(p, F_OK), -1);
        pathf(p, "%s/pkg/sub/data.bin", W);
        assert_int_equal(access(p, F_OK), 0);
        pathf(p, "%s/pkg/src/out", W); /* leaves the tree: skipped */
        assert_int_equal(lstat(p, &st), -1);
        pathf(p, "%s/pkg", W);
        lg_rm_rf(p);

        /* Two paths of one name, a missing one, a FIFO: refused. */
        char other[PATH_MAX];
        pathf(other, "%s/src/lib/sub", W);
        const char *twice[] = {dot, other};
        fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_int_equal(lg_pkg_pack_paths(twice, 2, fd, NULL, NULL, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "`sub`"));
        pathf(p, "%s/missing", W);
        const char *missing[] = {p};
        assert_int_equal(lg_pkg_pack_paths(missing, 1, fd, NULL, NULL, &err), -ENOENT);
        pathf(p, "%s/src/fifo", W);
        const char *fifo[] = {p};
        assert_int_equal(lg_pkg_pack_paths(fifo, 1, fd, NULL, NULL, &err), -EINVAL);
        close(fd);
}

/* ------------------------------------------------------------------ */

static int setup_bombs(void **state) {
        (void) state;
        pathf(bombs, "%s/lg-pkg-bombs-XXXXXX", work_base());
        if (!mkdtemp(bombs))
                return -1;
        char p[PATH_MAX];
        pathf(p, "%s/zeros-1g.tgz", bombs);
        build_zeros(p, F_TGZ, 1, 1ull << 30);
        pathf(p, "%s/zeros-1g.zip", bombs);
        build_zeros(p, F_ZIP, 1, 1ull << 30);
        pathf(p, "%s/zeros-64x16m.tgz", bombs);
        build_zeros(p, F_TGZ, 64, 16 << 20);
        return 0;
}

static int teardown_bombs(void **state) {
        (void) state;
        lg_rm_rf(bombs);
        return 0;
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_work, teardown_work)

int main(void) {
        const struct CMUnitTest tests[] = {
                T(test_digest_valid),
                T(test_blob_put),
                T(test_blob_dedup),
                T(test_blob_limit),
                T(test_blob_bad_digest),
                T(test_blob_crash_leftovers),
                T(test_extract_formats),
                T(test_extract_twice),
                T(test_extract_dot_root),
                T(test_extract_utf8),
                T(test_extract_modes),
                T(test_lying_headers),
                T(test_limits),
                T(test_entry_limit),
                T(test_corrupt),
                T(test_bombs),
                T(test_fuzz),
                T(test_blob_extract),
                T(test_pack),
                T(test_pack_paths),
        };
        return cmocka_run_group_tests(tests, setup_bombs, teardown_bombs);
}
