/* Building the lazy form of a tree (lazy.h): mkfs.erofs writes the
 * metadata image and the BLOB, a private mount of the result tells by
 * FIEMAP where every regular file's chunks are in the BLOB, and those
 * boundaries make the chunk table; the chunks go into the chunk store.
 * Also the erofs mount and unmount of a layer. */
#include "lazy/lazy.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include <openssl/evp.h>

#include "cas/cas.h"

#define NO_MKFS_MSG "lazy images need " LG_LAZY_MKFS " (Debian package erofs-utils)"
#define NO_EROFS_MSG                                                                                  \
        "lazy images need a kernel with erofs mountable from a file "                                \
        "(CONFIG_EROFS_FS, CONFIG_EROFS_FS_BACKED_BY_FILE; Linux 6.12 or later)"
#define FIEMAP_BATCH 256

/* The full path of mkfs.erofs found on PATH. */
static int find_mkfs(char *buf, size_t cap, struct lg_error *err) {
        const char *path = getenv("PATH");
        if (!path || !*path)
                path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        for (const char *p = path; *p;) {
                const char *end = strchrnul(p, ':');
                if (end > p && (size_t) snprintf(buf, cap, "%.*s/" LG_LAZY_MKFS, (int) (end - p), p) < cap &&
                    access(buf, X_OK) == 0)
                        return 0;
                p = *end ? end + 1 : end;
        }
        return lg_error_setm(err, ENOTSUP, NO_MKFS_MSG);
}

int lg_lazy_check(bool need_mkfs, struct lg_error *err) {
        char mkfs[PATH_MAX];
        int r;
        if (need_mkfs && (r = find_mkfs(mkfs, sizeof(mkfs), err)) < 0)
                return r;
        /* A modular erofs not loaded yet is not listed, but mount(2) loads
         * it: then its module directory says it is there. */
        _cleanup_fclose_ FILE *f = fopen("/proc/filesystems", "re");
        if (!f)
                return lg_error_set(err, errno, "open /proc/filesystems");
        char line[128];
        while (fgets(line, sizeof(line), f))
                if (!strcmp(line, "\terofs\n"))
                        return 0;
        struct utsname u;
        char mod[PATH_MAX];
        if (uname(&u) == 0) {
                snprintf(mod, sizeof(mod), "/lib/modules/%s/kernel/fs/erofs", u.release);
                if (access(mod, F_OK) == 0)
                        return 0;
        }
        return lg_error_setm(err, ENOTSUP, NO_EROFS_MSG);
}

static int mount_erofs(const char *meta, const char *blob, const char *dir, unsigned long flags,
                       struct lg_error *err) {
        char opts[PATH_MAX + 16];
        if (strchr(blob, ','))
                return lg_error_setm(err, EINVAL, "cannot mount with a blob path holding a comma: `%s`", blob);
        if ((size_t) snprintf(opts, sizeof(opts), "device=%s", blob) >= sizeof(opts))
                return lg_error_setm(err, ENAMETOOLONG, "blob path too long");
        if (mount(meta, dir, "erofs", flags, opts) < 0) {
                int e = errno;
                /* ENODEV: no erofs; ENOTBLK: erofs that cannot use a file. */
                if (e == ENODEV || e == ENOTBLK)
                        return lg_error_setm(err, ENOTSUP, NO_EROFS_MSG);
                return lg_error_set(err, e, "mount erofs `%s` (device `%s`) at `%s`", meta, blob, dir);
        }
        return 0;
}

int lg_lazy_mount(const char *meta, const char *blob, const char *dir, struct lg_error *err) {
        return mount_erofs(meta, blob, dir, MS_RDONLY, err);
}

int lg_lazy_umount(const char *dir, struct lg_error *err) {
        if (umount2(dir, UMOUNT_NOFOLLOW) == 0)
                return 0;
        if (errno == EBUSY && umount2(dir, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
                return 0;
        return lg_error_set(err, errno, "unmount `%s`", dir);
}

/* Run mkfs.erofs; its stderr's last line goes into the error. */
static int run_mkfs(const char *src, const char *meta, const char *blob, uint32_t chunk_size, struct lg_error *err) {
        char mkfs[PATH_MAX], cs[32], blobarg[PATH_MAX + 16];
        int r = find_mkfs(mkfs, sizeof(mkfs), err);
        if (r < 0)
                return r;
        snprintf(cs, sizeof(cs), "--chunksize=%" PRIu32, chunk_size);
        if ((size_t) snprintf(blobarg, sizeof(blobarg), "--blobdev=%s", blob) >= sizeof(blobarg))
                return lg_error_setm(err, ENAMETOOLONG, "blob path too long");
        char *argv[] = {mkfs, "--quiet", cs, blobarg, "--preserve-mtime", (char *) meta, (char *) src, NULL};
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return lg_error_set(err, errno, "pipe");
        _cleanup_close_ int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0) {
                r = lg_error_set(err, errno, "open /dev/null");
                close(pipefd[0]);
                close(pipefd[1]);
                return r;
        }
        pid_t pid = fork();
        if (pid < 0) {
                r = lg_error_set(err, errno, "fork " LG_LAZY_MKFS);
                close(pipefd[0]);
                close(pipefd[1]);
                return r;
        }
        if (pid == 0) {
                /* System calls only until exec: the parent may have threads. */
                if (dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(pipefd[1], 2) < 0)
                        _exit(126);
                lg_close_all_except(NULL, 0);
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                execv(mkfs, argv);
                _exit(127);
        }
        close(pipefd[1]);
        /* Keep the last line of what it says (warnings come first). */
        char out[4096];
        size_t n = 0;
        for (;;) {
                if (n == sizeof(out) - 1) { /* keep the second half */
                        memmove(out, out + sizeof(out) / 2, n - sizeof(out) / 2);
                        n -= sizeof(out) / 2;
                }
                ssize_t k = read(pipefd[0], out + n, sizeof(out) - 1 - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                n += (size_t) k;
        }
        close(pipefd[0]);
        out[n] = '\0';
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return lg_error_set(err, errno, "wait for " LG_LAZY_MKFS);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
                out[--n] = '\0';
        char *last = strrchr(out, '\n');
        char shown[300];
        lg_printable(last ? last + 1 : out, shown, sizeof(shown));
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
                return lg_error_setm(err, ENOTSUP, NO_MKFS_MSG);
        return lg_error_setm(err, EIO, LG_LAZY_MKFS " of `%s` failed (%s %d): %s", src,
                             WIFEXITED(status) ? "exit" : "signal",
                             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), shown);
}

/* Boundaries of BLOB pieces, collected from every file's extents. */
struct bounds {
        uint64_t *v;
        size_t n, cap;
};

static int bounds_add(struct bounds *b, uint64_t x) {
        if (b->n == b->cap && lg_grow((void **) &b->v, &b->cap, b->n, sizeof(*b->v), 1024) < 0)
                return -ENOMEM;
        b->v[b->n++] = x;
        return 0;
}

struct walk {
        struct bounds b;
        uint32_t chunk_size;
        uint64_t blob_size;
        struct fiemap *fm;
        struct lg_error *err;
};

/* The boundaries of one extent: its ends and, when FIEMAP merged chunks
 * that lie one after the other in BLOB, the chunk boundaries inside. */
static int add_extent(struct walk *w, const struct fiemap_extent *e, const char *name) {
        if (e->fe_flags & FIEMAP_EXTENT_DATA_INLINE)
                return 0; /* in the metadata image, not in BLOB */
        if (e->fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_NOT_ALIGNED))
                return lg_error_setm(w->err, EIO, "built layer: `%s` has an extent of unexpected kind %#x", name,
                                     e->fe_flags);
        uint64_t len = (e->fe_length + LG_CHUNK_ALIGN - 1) / LG_CHUNK_ALIGN * LG_CHUNK_ALIGN;
        uint64_t p = e->fe_physical, l = e->fe_logical;
        if (p % LG_CHUNK_ALIGN || l % LG_CHUNK_ALIGN || len == 0 || p > w->blob_size || len > w->blob_size - p)
                return lg_error_setm(w->err, EIO,
                                     "built layer: `%s` has an extent %" PRIu64 "+%" PRIu64 " outside the %" PRIu64
                                     " byte blob or unaligned",
                                     name, p, len, w->blob_size);
        int r;
        if ((r = bounds_add(&w->b, p)) < 0 || (r = bounds_add(&w->b, p + len)) < 0)
                return lg_error_setm(w->err, -r, "out of memory");
        for (uint64_t m = (l / w->chunk_size + 1) * w->chunk_size; m < l + len; m += w->chunk_size)
                if ((r = bounds_add(&w->b, p + (m - l))) < 0)
                        return lg_error_setm(w->err, -r, "out of memory");
        return 0;
}

static int file_extents(struct walk *w, int fd, const char *name) {
        uint64_t start = 0;
        for (;;) {
                memset(w->fm, 0, sizeof(*w->fm));
                w->fm->fm_start = start;
                w->fm->fm_length = FIEMAP_MAX_OFFSET - start;
                w->fm->fm_extent_count = FIEMAP_BATCH;
                if (ioctl(fd, FS_IOC_FIEMAP, w->fm) < 0)
                        return lg_error_set(w->err, errno, "FIEMAP of `%s` in the built layer", name);
                if (w->fm->fm_mapped_extents == 0)
                        return 0;
                const struct fiemap_extent *last = NULL;
                for (unsigned i = 0; i < w->fm->fm_mapped_extents; i++) {
                        int r = add_extent(w, &w->fm->fm_extents[i], name);
                        if (r < 0)
                                return r;
                        last = &w->fm->fm_extents[i];
                }
                if (last->fe_flags & FIEMAP_EXTENT_LAST)
                        return 0;
                start = last->fe_logical + last->fe_length;
        }
}

/* Every regular file below dirfd (one directory of the mount); path is
 * its name for messages. No symlink is followed, the mount is not left. */
static int walk_dir(struct walk *w, int dirfd, const char *path, unsigned depth) {
        if (depth > 4096)
                return lg_error_setm(w->err, ELOOP, "built layer: directories nested too deep at `%s`", path);
        int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return lg_error_set(w->err, errno, "walk `%s`", path);
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return lg_error_set(w->err, errno, "walk `%s`", path);
        }
        int r = 0;
        struct dirent *de;
        char sub[PATH_MAX];
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
                struct stat st;
                if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = lg_error_set(w->err, errno, "stat `%s`", sub);
                        break;
                }
                if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
                        continue;
                int cfd = openat(dirfd, de->d_name,
                                 O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
                if (cfd < 0) {
                        r = lg_error_set(w->err, errno, "open `%s`", sub);
                        break;
                }
                if (S_ISDIR(st.st_mode))
                        r = walk_dir(w, cfd, sub, depth + 1);
                else if (st.st_size > 0)
                        r = file_extents(w, cfd, sub);
                close(cfd);
                if (r < 0)
                        break;
        }
        closedir(d);
        return r;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

/* The chunks of BLOB from the boundaries: sorted, deduplicated, with 0
 * and the end; a piece longer than a chunk (bytes no file uses) is cut. */
static int make_chunks(struct walk *w, struct lg_chunk **ret, size_t *n_ret) {
        int r;
        if ((r = bounds_add(&w->b, 0)) < 0 || (r = bounds_add(&w->b, w->blob_size)) < 0)
                return lg_error_setm(w->err, ENOMEM, "out of memory");
        qsort(w->b.v, w->b.n, sizeof(*w->b.v), cmp_u64);
        struct lg_chunk *c = NULL;
        size_t n = 0, cap = 0;
        for (size_t i = 0; i + 1 < w->b.n; i++)
                for (uint64_t at = w->b.v[i]; at < w->b.v[i + 1];) {
                        uint64_t len = w->b.v[i + 1] - at;
                        if (len > w->chunk_size)
                                len = w->chunk_size;
                        if (n == cap && lg_grow((void **) &c, &cap, n, sizeof(*c), 256) < 0) {
                                free(c);
                                return lg_error_setm(w->err, ENOMEM, "out of memory");
                        }
                        c[n++] = (struct lg_chunk){.offset = at, .length = (uint32_t) len};
                        at += len;
                }
        *ret = c;
        *n_ret = n;
        return 0;
}

static int cmp_chunk_sha(const void *a, const void *b) {
        return memcmp(((const struct lg_chunk *) a)->sha256, ((const struct lg_chunk *) b)->sha256, 32);
}

/* Hash every chunk (and BLOB as a whole), put them into the store. */
static int hash_chunks(int blobfd, struct lg_chunk *c, size_t n, uint32_t chunk_size, lg_chunk_store *store,
                       struct lg_lazy_build_result *res, struct lg_error *err) {
        _cleanup_free_ uint8_t *buf = malloc(chunk_size);
        _cleanup_free_ struct lg_chunk *sorted = NULL;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        int r = 0;
        if (!buf || !md) {
                EVP_MD_CTX_free(md);
                return lg_error_setm(err, ENOMEM, "out of memory");
        }
        if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
                r = lg_error_setm(err, EIO, "sha256 init failed");
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                ssize_t got = lg_pread_all(blobfd, buf, c[i].length, (off_t) c[i].offset);
                if (got != (ssize_t) c[i].length) {
                        r = lg_error_set(err, got < 0 ? (int) -got : EIO, "read blob at %" PRIu64, c[i].offset);
                        goto out;
                }
                if (lg_sha256(buf, c[i].length, c[i].sha256) < 0 || EVP_DigestUpdate(md, buf, c[i].length) != 1) {
                        r = lg_error_setm(err, EIO, "sha256 failed");
                        goto out;
                }
                if (store && (r = lg_chunk_store_put(store, c[i].sha256, buf, c[i].length, err)) < 0)
                        goto out;
        }
        uint8_t whole[EVP_MAX_MD_SIZE];
        unsigned wl = 0;
        if (EVP_DigestFinal_ex(md, whole, &wl) != 1 || wl != 32) {
                r = lg_error_setm(err, EIO, "sha256 final failed");
                goto out;
        }
        struct lg_digest d;
        lg_digest_from_bytes(whole, &d);
        snprintf(res->blob_digest, sizeof(res->blob_digest), "sha256:%s", d.hex);

        /* Distinct chunks by content (mkfs dedups within a layer, but the
         * pieces no file uses may repeat others). */
        if (!(sorted = malloc((n ? n : 1) * sizeof(*sorted)))) {
                r = lg_error_setm(err, ENOMEM, "out of memory");
                goto out;
        }
        if (n)
                memcpy(sorted, c, n * sizeof(*c));
        qsort(sorted, n, sizeof(*sorted), cmp_chunk_sha);
        res->unique_bytes = 0;
        for (size_t i = 0; i < n; i++)
                if (i == 0 || memcmp(sorted[i].sha256, sorted[i - 1].sha256, 32))
                        res->unique_bytes += sorted[i].length;
        r = 0;
out:
        EVP_MD_CTX_free(md);
        return r;
}

static int file_size(const char *path, uint64_t *ret, struct lg_error *err) {
        struct stat st;
        if (stat(path, &st) < 0)
                return lg_error_set(err, errno, "stat `%s`", path);
        *ret = (uint64_t) st.st_size;
        return 0;
}

int lg_lazy_build(const char *src_dir, const char *out_dir, uint32_t chunk_size, lg_chunk_store *store,
                  struct lg_lazy_build_result *ret, struct lg_error *err) {
        if (chunk_size < LG_CHUNK_SIZE_MIN || chunk_size > LG_CHUNK_SIZE_MAX || (chunk_size & (chunk_size - 1)))
                return lg_error_setm(err, EINVAL, "chunk size %" PRIu32 " is not a power of two in 4 KiB..4 MiB",
                                     chunk_size);
        int r = lg_lazy_check(true, err);
        if (r < 0)
                return r;
        struct stat st;
        if (stat(src_dir, &st) < 0)
                return lg_error_set(err, errno, "stat `%s`", src_dir);
        if (!S_ISDIR(st.st_mode))
                return lg_error_setm(err, ENOTDIR, "`%s` is not a directory", src_dir);
        if ((r = lg_mkdir_p(out_dir, 0755)) < 0)
                return lg_error_set(err, -r, "create `%s`", out_dir);
        char meta[PATH_MAX], blob[PATH_MAX], chunks[PATH_MAX], mnt[PATH_MAX];
        if ((size_t) snprintf(meta, sizeof(meta), "%s/" LG_LAZY_META, out_dir) >= sizeof(meta) ||
            (size_t) snprintf(blob, sizeof(blob), "%s/" LG_LAZY_BLOB, out_dir) >= sizeof(blob) ||
            (size_t) snprintf(chunks, sizeof(chunks), "%s/" LG_LAZY_CHUNKS, out_dir) >= sizeof(chunks) ||
            (size_t) snprintf(mnt, sizeof(mnt), "%s/.mnt-XXXXXX", out_dir) >= sizeof(mnt))
                return lg_error_setm(err, ENAMETOOLONG, "path too long: `%s`", out_dir);
        if (strchr(blob, ','))
                return lg_error_setm(err, EINVAL, "cannot build into a path holding a comma: `%s`", out_dir);
        (void) unlink(meta);
        (void) unlink(blob);
        (void) unlink(chunks);
        if ((r = run_mkfs(src_dir, meta, blob, chunk_size, err)) < 0)
                return r;
        /* A tree without file data: mkfs may leave no BLOB at all. */
        _cleanup_close_ int blobfd = open(blob, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (blobfd < 0)
                return lg_error_set(err, errno, "open `%s`", blob);
        struct lg_lazy_build_result res = {0};
        if ((r = file_size(blob, &res.blob_size, err)) < 0 || (r = file_size(meta, &res.meta_size, err)) < 0)
                return r;

        struct walk w = {.chunk_size = chunk_size, .blob_size = res.blob_size, .err = err};
        _cleanup_free_ struct fiemap *fm =
                calloc(1, sizeof(struct fiemap) + FIEMAP_BATCH * sizeof(struct fiemap_extent));
        if (!fm)
                return lg_error_setm(err, ENOMEM, "out of memory");
        w.fm = fm;
        _cleanup_free_ struct lg_chunk *c = NULL;
        size_t n = 0;
        lg_chunk_table *t = NULL;
        if (!mkdtemp(mnt))
                return lg_error_set(err, errno, "create a mount point in `%s`", out_dir);
        /* Only this build looks at the mount: 0700, no devices, no exec. */
        if (res.blob_size > 0) {
                if ((r = mount_erofs(meta, blob, mnt, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, err)) < 0) {
                        (void) rmdir(mnt);
                        return r;
                }
                (void) mount(NULL, mnt, NULL, MS_PRIVATE, NULL);
                int mfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (mfd < 0)
                        r = lg_error_set(err, errno, "open `%s`", mnt);
                else {
                        r = walk_dir(&w, mfd, "", 0);
                        close(mfd);
                }
                struct lg_error uerr = {0};
                int u = lg_lazy_umount(mnt, &uerr);
                if (r >= 0 && u < 0) {
                        *err = uerr;
                        r = u;
                }
        }
        (void) rmdir(mnt);
        if (r >= 0)
                r = make_chunks(&w, &c, &n);
        free(w.b.v);
        if (r < 0)
                return r;
        if ((r = hash_chunks(blobfd, c, n, chunk_size, store, &res, err)) < 0)
                return r;
        if ((r = lg_chunk_table_new(chunk_size, res.blob_size, c, n, &t, err)) < 0)
                return lg_error_wrap(err, r, "built layer");
        r = lg_chunk_table_save(t, chunks, err);
        lg_chunk_table_free(t);
        if (r < 0)
                return r;
        if (store && (r = lg_chunk_store_sync(store, err)) < 0)
                return r;
        if (fsync(blobfd) < 0)
                return lg_error_set(err, errno, "fsync `%s`", blob);
        res.n_chunks = n;
        if (ret)
                *ret = res;
        return 0;
}
