/* Tests of lg_lazy_build / lg_lazy_mount (src/lazy/lazy.h) on the real
 * kernel and mkfs.erofs (root; skipped with a message otherwise): a tree
 * of every kind of entry is built at 4 KiB and 1 MiB chunks, mounted and
 * compared entry by entry with its source (bytes, type, mode, owner,
 * mtime, xattrs, device numbers, symlink targets, hardlinks); the chunk
 * table covers the BLOB exactly with the right sha256s, identical files
 * share chunks, the store keeps one copy of each, and a second layer
 * sharing a file adds only its new chunks. Also an empty tree, bad
 * arguments and a missing mkfs.erofs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "cas/cas.h"
#include "lazy/lazy.h"
#include "test-ok.h"

static char W[PATH_MAX];
static bool can_run;

static void pathf(char *buf, const char *fmt, const char *a) { snprintf(buf, PATH_MAX, fmt, W, a); }

static int setup(void **state) {
        (void) state;
        snprintf(W, sizeof(W), "/tmp/test-lazy-build-XXXXXX");
        assert_non_null(mkdtemp(W));
        return 0;
}

static bool mounted_below(const char *dir) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        assert_non_null(f);
        char line[4096];
        bool found = false;
        while (fgets(line, sizeof(line), f))
                if (strstr(line, dir))
                        found = true;
        fclose(f);
        return found;
}

static int teardown(void **state) {
        (void) state;
        char mnt[PATH_MAX];
        pathf(mnt, "%s/%s", "mnt");
        (void) umount2(mnt, MNT_DETACH); /* after a failed test */
        assert_false(mounted_below(W));
        assert_int_equal(lg_rm_rf(W), 0);
        return 0;
}

static void write_file(const char *path, const void *buf, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(lg_write_all(fd, buf, len), 0);
        close(fd);
}

static void fill(uint8_t *b, size_t len, unsigned seed) {
        uint32_t x = seed * 2654435761u + 1;
        for (size_t i = 0; i < len; i++) {
                x ^= x << 13, x ^= x >> 17, x ^= x << 5;
                b[i] = (uint8_t) x;
        }
}

static void set_time(const char *path, time_t sec, long nsec) {
        struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
        assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/* The source tree: every kind of entry an image layer has. */
static void make_tree(const char *src) {
        char p[PATH_MAX], q[PATH_MAX];
        assert_int_equal(mkdir(src, 0755), 0);
#define P(name) (snprintf(p, sizeof(p), "%s/%s", src, name), p)
        write_file(P("a"), "hello\n", 6);
        assert_int_equal(chown(p, 1000, 1001), 0);
        assert_int_equal(chmod(p, 0640), 0);
        assert_int_equal(setxattr(p, "user.foo", "bar", 3, 0), 0);
        assert_int_equal(setxattr(p, "trusted.lg", "t", 1, 0), 0);
        write_file(P("a2"), "hello\n", 6);
        snprintf(q, sizeof(q), "%s/a", src);
        assert_int_equal(link(q, P("hard")), 0);
        static uint8_t big[3 << 20];
        fill(big, sizeof(big), 7);
        write_file(P("big"), big, sizeof(big));
        write_file(P("big2"), big, sizeof(big));
        write_file(P("odd"), big + 5, 200001);
        write_file(P("empty"), "", 0);
        write_file(P("suid"), "#!/bin/sh\n", 10);
        assert_int_equal(chmod(p, 04755), 0);
        assert_int_equal(symlink("a", P("sym")), 0);
        assert_int_equal(lchown(p, 5, 6), 0);
        assert_int_equal(symlink("/nonexistent/target", P("dangling")), 0);
        assert_int_equal(mkdir(P("opq"), 0700), 0);
        assert_int_equal(setxattr(p, "trusted.overlay.opaque", "y", 1, 0), 0);
        write_file(P("opq/inner"), big + 100, 70000);
        assert_int_equal(mkdir(P("d"), 0755), 0);
        assert_int_equal(mkdir(P("d/e"), 0750), 0);
        write_file(P("d/e/f"), "f\n", 2);
        assert_int_equal(mknod(P("wh"), S_IFCHR | 0, makedev(0, 0)), 0);
        assert_int_equal(mknod(P("null"), S_IFCHR | 0666, makedev(1, 3)), 0);
        assert_int_equal(mkfifo(P("fifo"), 0600), 0);
        assert_int_equal(mknod(P("blk"), S_IFBLK | 0600, makedev(7, 99)), 0);
        int sk = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", P("sock"));
        assert_int_equal(bind(sk, (struct sockaddr *) &sun, sizeof(sun)), 0);
        close(sk);
        int fd = open(P("holey"), O_WRONLY | O_CREAT, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 2 << 20), 0);
        assert_int_equal(pwrite(fd, "x", 1, 1500000), 1);
        close(fd);
        /* mtimes last, children before parents. */
        const char *all[] = {"a", "a2", "big", "big2", "odd", "empty", "suid", "sym", "dangling", "opq/inner",
                             "opq", "d/e/f", "d/e", "d", "wh", "null", "fifo", "holey", "blk", "sock"};
        for (size_t i = 0; i < ARRAY_SIZE(all); i++)
                set_time(P(all[i]), 1000000000 + (time_t) i * 3600, (long) i * 1000003);
        set_time(src, 999999999, 5);
#undef P
}

static size_t xattrs(const char *path, char *buf, size_t cap) {
        ssize_t n = llistxattr(path, buf, cap);
        assert_true(n >= 0);
        /* Sort the NUL-separated names for comparing. */
        char *names[64];
        size_t k = 0;
        for (char *s = buf; s < buf + n; s += strlen(s) + 1)
                names[k++] = s;
        for (size_t i = 0; i < k; i++)
                for (size_t j = i + 1; j < k; j++)
                        if (strcmp(names[i], names[j]) > 0) {
                                char *t = names[i];
                                names[i] = names[j];
                                names[j] = t;
                        }
        static char out[8192];
        size_t o = 0;
        out[0] = '\0';
        for (size_t i = 0; i < k; i++) {
                char v[256];
                ssize_t vl = lgetxattr(path, names[i], v, sizeof(v));
                assert_true(vl >= 0);
                o += (size_t) snprintf(out + o, sizeof(out) - o, "%s=%.*s;", names[i], (int) vl, v);
        }
        memcpy(buf, out, o + 1);
        return k;
}

static void compare_file(const char *a, const char *b, off_t size) {
        _cleanup_free_ uint8_t *x = malloc(size + 1), *y = malloc(size + 1);
        int fa = open(a, O_RDONLY), fb = open(b, O_RDONLY);
        assert_true(fa >= 0 && fb >= 0);
        assert_int_equal(lg_read_all(fa, x, size + 1), size);
        assert_int_equal(lg_read_all(fb, y, size + 1), size);
        assert_memory_equal(x, y, size);
        close(fa);
        close(fb);
}

/* Every entry of src against the same path below mnt. */
static size_t compare_tree(const char *src, const char *mnt) {
        DIR *d = opendir(src);
        assert_non_null(d);
        struct dirent *de;
        size_t n = 0;
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                char a[PATH_MAX], b[PATH_MAX];
                snprintf(a, sizeof(a), "%s/%s", src, de->d_name);
                snprintf(b, sizeof(b), "%s/%s", mnt, de->d_name);
                struct stat sa, sb;
                assert_int_equal(lstat(a, &sa), 0);
                if (lstat(b, &sb) < 0)
                        fail_msg("%s missing in the mount", b);
                if (sa.st_mode != sb.st_mode || sa.st_uid != sb.st_uid || sa.st_gid != sb.st_gid)
                        fail_msg("%s: mode/owner %o %u:%u, want %o %u:%u", b, sb.st_mode, sb.st_uid, sb.st_gid,
                                 sa.st_mode, sa.st_uid, sa.st_gid);
                if (sa.st_mtim.tv_sec != sb.st_mtim.tv_sec || sa.st_mtim.tv_nsec != sb.st_mtim.tv_nsec)
                        fail_msg("%s: mtime %ld.%09ld, want %ld.%09ld", b, sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec,
                                 sa.st_mtim.tv_sec, sa.st_mtim.tv_nsec);
                assert_int_equal(sa.st_nlink, sb.st_nlink);
                char xa[8192], xb[8192];
                xattrs(a, xa, sizeof(xa));
                xattrs(b, xb, sizeof(xb));
                if (strcmp(xa, xb))
                        fail_msg("%s: xattrs `%s`, want `%s`", b, xb, xa);
                if (S_ISREG(sa.st_mode)) {
                        assert_int_equal(sa.st_size, sb.st_size);
                        compare_file(a, b, sa.st_size);
                } else if (S_ISLNK(sa.st_mode)) {
                        char la[PATH_MAX] = {0}, lb[PATH_MAX] = {0};
                        assert_true(readlink(a, la, sizeof(la)) > 0);
                        assert_true(readlink(b, lb, sizeof(lb)) > 0);
                        assert_string_equal(la, lb);
                } else if (S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) {
                        assert_int_equal(sa.st_rdev, sb.st_rdev);
                } else if (S_ISDIR(sa.st_mode)) {
                        n += compare_tree(a, b);
                }
                n++;
        }
        closedir(d);
        return n;
}

/* The physical extents of a file of the mount, as chunk indexes. */
static size_t chunk_indexes(const char *path, const lg_chunk_table *t, ssize_t *out, size_t cap) {
        int fd = open(path, O_RDONLY);
        assert_true(fd >= 0);
        struct {
                struct fiemap fm;
                struct fiemap_extent e[1024];
        } f = {0};
        f.fm.fm_length = FIEMAP_MAX_OFFSET;
        f.fm.fm_extent_count = 1024;
        assert_int_equal(ioctl(fd, FS_IOC_FIEMAP, &f.fm), 0);
        close(fd);
        size_t n = 0;
        for (unsigned i = 0; i < f.fm.fm_mapped_extents && n < cap; i++)
                out[n++] = lg_chunk_table_find(t, f.e[i].fe_physical);
        return n;
}

static size_t count_store(void) {
        char p[PATH_MAX];
        pathf(p, "%s/%s", "store/chunks");
        size_t n = 0;
        DIR *d = opendir(p);
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                char sub[PATH_MAX];
                snprintf(sub, sizeof(sub), "%s/%s", p, de->d_name);
                DIR *s = opendir(sub);
                assert_non_null(s);
                struct dirent *e;
                while ((e = readdir(s)))
                        n += lg_digest_valid(e->d_name);
                closedir(s);
        }
        closedir(d);
        return n;
}

static int cmp_sha(const void *a, const void *b) { return memcmp(a, b, 32); }

/* Distinct sha256s of tables. */
static size_t distinct(lg_chunk_table **t, size_t nt) {
        size_t total = 0, k = 0;
        for (size_t i = 0; i < nt; i++)
                total += lg_chunk_table_count(t[i]);
        uint8_t(*v)[32] = malloc((total + 1) * 32);
        for (size_t i = 0; i < nt; i++)
                for (size_t j = 0; j < lg_chunk_table_count(t[i]); j++)
                        memcpy(v[k++], lg_chunk_table_at(t[i], j)->sha256, 32);
        qsort(v, k, 32, cmp_sha);
        size_t n = 0;
        for (size_t i = 0; i < k; i++)
                n += i == 0 || memcmp(v[i], v[i - 1], 32);
        free(v);
        return n;
}

/* The table against BLOB: coverage, every sha256. */
static void check_table(const lg_chunk_table *t, const char *blob, uint32_t cs) {
        struct stat st;
        assert_int_equal(stat(blob, &st), 0);
        assert_int_equal(lg_chunk_table_blob_size(t), st.st_size);
        assert_int_equal(lg_chunk_table_chunk_size(t), cs);
        int fd = open(blob, O_RDONLY);
        assert_true(fd >= 0);
        _cleanup_free_ uint8_t *buf = malloc(cs);
        uint64_t at = 0;
        for (size_t i = 0; i < lg_chunk_table_count(t); i++) {
                const struct lg_chunk *c = lg_chunk_table_at(t, i);
                assert_int_equal(c->offset, at);
                assert_int_equal(lg_pread_all(fd, buf, c->length, (off_t) c->offset), c->length);
                uint8_t md[32];
                assert_int_equal(lg_sha256(buf, c->length, md), 0);
                assert_memory_equal(md, c->sha256, 32);
                at += c->length;
        }
        assert_int_equal(at, (uint64_t) st.st_size);
        close(fd);
}

static void build_and_compare(uint32_t cs) {
        if (!can_run)
                skip();
        char src[PATH_MAX], out[PATH_MAX], mnt[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
        pathf(src, "%s/%s", "src");
        pathf(out, "%s/%s", "out");
        pathf(mnt, "%s/%s", "mnt");
        pathf(p, "%s/%s", "store");
        make_tree(src);
        lg_chunk_store *store;
        struct lg_error err = {0};
        OK(lg_chunk_store_open(p, &store, &err));
        struct lg_lazy_build_result res;
        OK(lg_lazy_build(src, out, cs, store, &res, &err));
        assert_true(res.meta_size > 0);
        assert_true(res.n_chunks > 0);
        assert_int_equal(strncmp(res.blob_digest, "sha256:", 7), 0);
        /* No leftover mount point in out. */
        DIR *d = opendir(out);
        struct dirent *de;
        size_t entries = 0;
        while ((de = readdir(d)))
                entries += de->d_name[0] != '.';
        closedir(d);
        assert_int_equal(entries, 3);

        lg_chunk_table *t;
        snprintf(p, sizeof(p), "%s/chunks", out);
        OK(lg_chunk_table_load(p, &t, &err));
        snprintf(q, sizeof(q), "%s/blob", out);
        check_table(t, q, cs);
        assert_int_equal(res.blob_size, lg_chunk_table_blob_size(t));
        assert_int_equal(res.n_chunks, lg_chunk_table_count(t));
        /* The store keeps one copy of each distinct chunk, all local. */
        assert_int_equal(count_store(), distinct(&t, 1));
        uint64_t lc, lb;
        OK(lg_chunk_store_local(store, t, &lc, &lb));
        assert_int_equal(lc, lg_chunk_table_count(t));
        assert_int_equal(lb, res.blob_size);
        uint64_t unique = 0;
        for (size_t i = 0; i < lg_chunk_table_count(t); i++) {
                bool seen = false;
                for (size_t j = 0; j < i && !seen; j++)
                        seen = !memcmp(lg_chunk_table_at(t, j)->sha256, lg_chunk_table_at(t, i)->sha256, 32);
                if (!seen)
                        unique += lg_chunk_table_at(t, i)->length;
        }
        assert_int_equal(res.unique_bytes, unique);
        /* The big file: 3 MiB of distinct data = 3 MiB / cs chunks, the
         * blob holds it once although two files have it. */
        assert_true(res.blob_size < 2 * (3u << 20));

        snprintf(p, sizeof(p), "%s/meta.erofs", out);
        assert_int_equal(mkdir(mnt, 0700), 0);
        OK(lg_lazy_mount(p, q, mnt, &err));
        size_t n = compare_tree(src, mnt);
        assert_int_equal(n, 21); /* every entry of make_tree was seen */
        struct stat sa, sb;
        snprintf(p, sizeof(p), "%s/a", mnt);
        snprintf(q, sizeof(q), "%s/hard", mnt);
        assert_int_equal(stat(p, &sa), 0);
        assert_int_equal(stat(q, &sb), 0);
        assert_int_equal(sa.st_ino, sb.st_ino); /* a hardlink stays one */
        /* Identical files use the same chunks: the table shows them once. */
        ssize_t ia[1024], ib[1024];
        snprintf(p, sizeof(p), "%s/big", mnt);
        snprintf(q, sizeof(q), "%s/big2", mnt);
        size_t na = chunk_indexes(p, t, ia, 1024), nb = chunk_indexes(q, t, ib, 1024);
        assert_int_equal(na, (3u << 20) / cs);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) {
                assert_true(ia[i] >= 0);
                assert_int_equal(ia[i], ib[i]);
        }
        OK(lg_lazy_umount(mnt, &err));
        assert_int_equal(lg_lazy_umount(mnt, &err), -EINVAL);

        /* A second layer with one file of the first and one new: the store
         * grows by the new chunks only. */
        char src2[PATH_MAX], out2[PATH_MAX];
        pathf(src2, "%s/%s", "src2");
        pathf(out2, "%s/%s", "out2");
        assert_int_equal(mkdir(src2, 0755), 0);
        snprintf(p, sizeof(p), "%s/big", src);
        snprintf(q, sizeof(q), "%s/copy", src2);
        {
                static uint8_t big[3 << 20];
                fill(big, sizeof(big), 7);
                write_file(q, big, sizeof(big));
        }
        snprintf(q, sizeof(q), "%s/new", src2);
        write_file(q, "new\n", 4);
        size_t before = count_store();
        OK(lg_lazy_build(src2, out2, cs, store, &res, &err));
        lg_chunk_table *t2;
        snprintf(p, sizeof(p), "%s/chunks", out2);
        OK(lg_chunk_table_load(p, &t2, &err));
        lg_chunk_table *both[] = {t, t2};
        assert_int_equal(count_store(), distinct(both, 2));
        assert_int_equal(count_store(), before + 1); /* "new\n" */
        lg_chunk_table_free(t2);
        lg_chunk_table_free(t);
        lg_chunk_store_close(store);
}

static void test_build_4k(void **state) {
        (void) state;
        build_and_compare(4096);
}

static void test_build_1m(void **state) {
        (void) state;
        build_and_compare(1u << 20);
}

static void test_empty_tree(void **state) {
        (void) state;
        if (!can_run)
                skip();
        char src[PATH_MAX], out[PATH_MAX], mnt[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
        pathf(src, "%s/%s", "src");
        pathf(out, "%s/%s", "out");
        pathf(mnt, "%s/%s", "mnt");
        assert_int_equal(mkdir(src, 0755), 0);
        assert_int_equal(mkdir(mnt, 0755), 0);
        snprintf(p, sizeof(p), "%s/only-a-dir", src);
        assert_int_equal(mkdir(p, 0711), 0);
        struct lg_error err = {0};
        struct lg_lazy_build_result res;
        OK(lg_lazy_build(src, out, 65536, NULL, &res, &err));
        assert_int_equal(res.blob_size, 0);
        assert_int_equal(res.n_chunks, 0);
        lg_chunk_table *t;
        snprintf(p, sizeof(p), "%s/chunks", out);
        OK(lg_chunk_table_load(p, &t, &err));
        assert_int_equal(lg_chunk_table_count(t), 0);
        lg_chunk_table_free(t);
        snprintf(p, sizeof(p), "%s/meta.erofs", out);
        snprintf(q, sizeof(q), "%s/blob", out);
        /* Whether the kernel takes an empty device file is its business;
         * when it does, the tree is there. */
        if (lg_lazy_mount(p, q, mnt, &err) == 0) {
                assert_int_equal(compare_tree(src, mnt), 1);
                OK(lg_lazy_umount(mnt, &err));
        } else {
                print_message("note: an empty blob does not mount: %s\n", err.msg);
        }
}

static void test_bad_args(void **state) {
        (void) state;
        if (!can_run)
                skip();
        char src[PATH_MAX], out[PATH_MAX];
        pathf(src, "%s/%s", "src");
        pathf(out, "%s/%s", "out");
        assert_int_equal(mkdir(src, 0755), 0);
        struct lg_error err = {0};
        assert_int_equal(lg_lazy_build(src, out, 3000, NULL, NULL, &err), -EINVAL);
        assert_int_equal(lg_lazy_build(src, out, 8u << 20, NULL, NULL, &err), -EINVAL);
        char f[PATH_MAX];
        snprintf(f, sizeof(f), "%s/file", src);
        write_file(f, "x", 1);
        assert_int_equal(lg_lazy_build(f, out, 65536, NULL, NULL, &err), -ENOTDIR);
        pathf(f, "%s/%s", "no,comma");
        assert_int_equal(lg_lazy_build(src, f, 65536, NULL, NULL, &err), -EINVAL);
        /* mkfs.erofs failing: a source it cannot read. */
        pathf(f, "%s/%s", "missing");
        assert_int_equal(lg_lazy_build(f, out, 65536, NULL, NULL, &err), -ENOENT);
        /* No mkfs.erofs on PATH. */
        char *path = strdup(getenv("PATH"));
        setenv("PATH", "/nonexistent", 1);
        assert_int_equal(lg_lazy_build(src, out, 65536, NULL, NULL, &err), -ENOTSUP);
        assert_non_null(strstr(err.msg, "erofs-utils"));
        assert_int_equal(lg_lazy_check(true, &err), -ENOTSUP);
        OK(lg_lazy_check(false, &err));
        setenv("PATH", path, 1);
        free(path);
}

int main(void) {
        struct lg_error err = {0};
        if (geteuid() != 0)
                print_message("lazy-build: skipped, needs root (mount, owners, trusted.* xattrs)\n");
        else if (lg_lazy_check(true, &err) < 0)
                print_message("lazy-build: skipped: %s\n", err.msg);
        else
                can_run = true;
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_build_4k, setup, teardown),
                cmocka_unit_test_setup_teardown(test_build_1m, setup, teardown),
                cmocka_unit_test_setup_teardown(test_empty_tree, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
