/* Safe extraction (extract.h) with libarchive's readers; the tree is
 * written by hand relative to directory fds, never with
 * archive_write_disk. Shared by code packages and image layers: the flags
 * choose between their rules where they differ, the walk, the limits and
 * the checks are one.
 *
 * Tar archives go through two chained readers: the first only decompresses
 * (format "raw"), the second parses tar from what the first hands it, so
 * every uncompressed byte passes one place where it is counted and hashed
 * (an OCI layer's diff id covers the whole stream). Zip needs the archive's
 * central directory, so an archive that may be zip is read by one seekable
 * reader, its stream counted by libarchive. */
#include "extract/extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <openssl/evp.h>

#define DEFAULT_ENTRIES 65536ull
#define DEFAULT_TOTAL (512ull << 20)
#define DEFAULT_FILE (256ull << 20)
#define DEFAULT_PATH_LEN 1024u
#define DEFAULT_DEPTH 64u
#define DEFAULT_RATIO 200u
#define DEFAULT_RATIO_GRACE (16ull << 20)
#define BUF_SIZE (64 * 1024)
#define NOBODY 65534
#define TMP_PREFIX ".tmp-x-"

void lg_extract_limits_resolve(const struct lg_extract_limits *in, struct lg_extract_limits *out) {
        struct lg_extract_limits l = in ? *in : (struct lg_extract_limits){0};
        if (!l.max_entries)
                l.max_entries = DEFAULT_ENTRIES;
        if (!l.max_total_bytes)
                l.max_total_bytes = DEFAULT_TOTAL;
        if (!l.max_file_bytes)
                l.max_file_bytes = DEFAULT_FILE;
        if (l.max_file_bytes > l.max_total_bytes)
                l.max_file_bytes = l.max_total_bytes;
        if (!l.max_stream_bytes)
                l.max_stream_bytes = UINT64_MAX;
        if (!l.max_path_len || l.max_path_len > PATH_MAX - 1)
                l.max_path_len = l.max_path_len ? PATH_MAX - 1 : DEFAULT_PATH_LEN;
        if (!l.max_depth)
                l.max_depth = DEFAULT_DEPTH;
        if (!l.max_ratio)
                l.max_ratio = DEFAULT_RATIO;
        if (!l.ratio_grace_bytes)
                l.ratio_grace_bytes = DEFAULT_RATIO_GRACE;
        *out = l;
}

/* ---- paths ------------------------------------------------------------------ */

int lg_extract_path(const char *raw, char *out, unsigned max_len, unsigned max_depth, size_t *depth, char *why,
                    size_t why_cap) {
        size_t len = 0, d = 0;
        for (const char *p = raw; *p;) {
                const char *end = strchrnul(p, '/');
                size_t n = (size_t) (end - p);
                if (n == 2 && p[0] == '.' && p[1] == '.') {
                        snprintf(why, why_cap, "path has a `..` component");
                        return -EINVAL;
                }
                if (n > 0 && !(n == 1 && p[0] == '.')) {
                        if (n > NAME_MAX) {
                                snprintf(why, why_cap, "a path component is longer than %d bytes", NAME_MAX);
                                return -ENAMETOOLONG;
                        }
                        if (++d > max_depth) {
                                snprintf(why, why_cap, "path is deeper than %u components", max_depth);
                                return -ENAMETOOLONG;
                        }
                        if (len + (len ? 1 : 0) + n > max_len) {
                                snprintf(why, why_cap, "path is longer than %u bytes", max_len);
                                return -ENAMETOOLONG;
                        }
                        if (len)
                                out[len++] = '/';
                        memcpy(out + len, p, n);
                        len += n;
                }
                p = *end ? end + 1 : end;
        }
        out[len] = '\0';
        *depth = d;
        return 0;
}

const char *lg_extract_symlink_unsafe(size_t parent_depth, const char *target) {
        if (!target || !*target)
                return "symlink has an empty target";
        if (target[0] == '/')
                return "symlink target is absolute";
        if (strlen(target) >= 4096)
                return "symlink target is too long";
        bool seen_name = false;
        size_t up = 0;
        const char *p = target;
        while (*p) {
                const char *end = strchrnul(p, '/');
                size_t len = (size_t) (end - p);
                if (len == 2 && p[0] == '.' && p[1] == '.') {
                        if (seen_name)
                                return "symlink target has `..` after a name";
                        if (++up > parent_depth)
                                return "symlink target leaves the package";
                } else if (len > 0 && !(len == 1 && p[0] == '.')) {
                        seen_name = true;
                }
                p = *end ? end + 1 : end;
        }
        return NULL;
}

/* ---- removing trees ------------------------------------------------------- */

static int rm_children(int fd, unsigned depth) {
        if (depth > 4096) {
                close(fd);
                return -ELOOP;
        }
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -ENOMEM;
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) == 0)
                        continue;
                if (errno != EISDIR && errno != EPERM) {
                        if (errno != ENOENT && r == 0)
                                r = -errno;
                        continue;
                }
                int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0) {
                        if (r == 0)
                                r = -errno;
                        continue;
                }
                (void) fchmod(sub, 0700);
                int q = rm_children(sub, depth + 1);
                if (q < 0 && r == 0)
                        r = q;
                if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) < 0 && r == 0)
                        r = -errno;
                /* A directory may be rewound; entries already gone are fine. */
                rewinddir(d);
        }
        closedir(d);
        return r;
}

int lg_extract_rm_tree_at(int dfd, const char *name) {
        if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
                return 0;
        if (errno != EISDIR && errno != EPERM)
                return -errno;
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        (void) fchmod(fd, 0700);
        int r = rm_children(fd, 0);
        if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && r == 0)
                r = -errno;
        return r;
}

/* ---- the walk: directories entered without following symlinks ------------- */

/* The directories below rootfd, each component opened from its parent with
 * O_NOFOLLOW|O_DIRECTORY. The last directory entered stays open and a walk
 * starts below it when it can (entries come mostly depth-first). */
struct walk {
        int rootfd;          /* not owned */
        int fd;              /* the last directory entered (owned), or -1 */
        size_t len;
        char path[PATH_MAX]; /* its path below the root */
        uint64_t n_created;
        char fail_path[PATH_MAX];
        const char *fail_why; /* after a failure: what went wrong, at fail_path */
};

static void walk_forget(struct walk *w) {
        if (w->fd >= 0)
                close(w->fd);
        w->fd = -1;
        w->len = 0;
}

static int walk_fail(struct walk *w, const char *why, int errnum, const char *path, size_t len) {
        w->fail_why = why;
        memcpy(w->fail_path, path, len);
        w->fail_path[len] = '\0';
        return -errnum;
}

static int walk_enter(struct walk *w, int dfd, const char *name, bool create, const char *path, size_t len) {
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && create) {
                if (mkdirat(dfd, name, 0755) < 0 && errno != EEXIST)
                        return walk_fail(w, "create directory", errno, path, len);
                fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd >= 0) {
                        if (fchmod(fd, 0755) < 0) { /* the umask may have taken bits away */
                                int e = errno;
                                close(fd);
                                return walk_fail(w, "chmod directory", e, path, len);
                        }
                        w->n_created++;
                }
        }
        if (fd >= 0)
                return fd;
        int e = errno;
        if (e == ENOENT && !create)
                return -ENOENT;
        struct stat s;
        if (fstatat(dfd, name, &s, AT_SYMLINK_NOFOLLOW) == 0) {
                if (S_ISLNK(s.st_mode))
                        return walk_fail(w, "path goes through the symlink", EINVAL, path, len);
                if (!S_ISDIR(s.st_mode))
                        return walk_fail(w, "path goes through the file", EINVAL, path, len);
        }
        return walk_fail(w, "open directory", e, path, len);
}

/* The fd of directory path[0..plen) (borrowed: the root, or the directory
 * kept open, valid until the next walk). A missing directory is created
 * 0755 when create is set, else -ENOENT alone. */
static int walk_to(struct walk *w, const char *path, size_t plen, bool create) {
        if (plen == 0)
                return w->rootfd;
        if (w->fd >= 0 && w->len == plen && memcmp(w->path, path, plen) == 0)
                return w->fd;
        int fd = w->rootfd;
        size_t pos = 0;
        if (w->fd >= 0 && w->len < plen && path[w->len] == '/' && memcmp(w->path, path, w->len) == 0) {
                fd = w->fd;
                pos = w->len + 1;
        }
        bool owned = false;
        while (pos < plen) {
                const char *p = path + pos;
                const char *end = memchr(p, '/', plen - pos);
                size_t n = end ? (size_t) (end - p) : plen - pos;
                char comp[NAME_MAX + 1];
                if (n > NAME_MAX)
                        return walk_fail(w, "open directory", ENAMETOOLONG, path, pos + n);
                memcpy(comp, p, n);
                comp[n] = '\0';
                int nfd = walk_enter(w, fd, comp, create, path, pos + n);
                if (owned)
                        close(fd);
                if (nfd < 0)
                        return nfd;
                fd = nfd;
                owned = true;
                pos += n + 1;
        }
        if (w->fd >= 0)
                close(w->fd);
        w->fd = fd;
        memcpy(w->path, path, plen);
        w->path[plen] = '\0';
        w->len = plen;
        return fd;
}

/* ---- one extraction ---------------------------------------------------------- */

struct xctx {
        const struct lg_extract_opts *o;
        unsigned flags;
        struct lg_extract_limits lim;
        struct lg_error *err;
        const char *what;
        int fd; /* the archive */
        uint64_t archive_size, archive_read;
        struct archive *a;   /* the entries */
        struct archive *raw; /* tar: the decompressor in front of a */
        EVP_MD_CTX *md;      /* tar: the stream's sha256 */
        int cb_err;          /* an error a callback set (err filled) */
        int rootfd;
        struct lg_extract_info info;
        bool root_set;
        mode_t root_mode;
        uid_t root_uid;
        gid_t root_gid;
        char name[160];      /* the entry, printable, for messages */
        char amsg[200];
        char path[PATH_MAX]; /* its normalized path */
        size_t depth;
        struct walk walk;
        unsigned char rbuf[BUF_SIZE]; /* from the archive */
        unsigned char ubuf[BUF_SIZE]; /* tar: uncompressed, to the tar reader */
        unsigned char dbuf[BUF_SIZE]; /* file data */
};

static int entry_error(struct xctx *x, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int entry_error(struct xctx *x, int errnum, const char *fmt, ...) {
        char why[384];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        const char *pre = x->o->entry_prefix;
        return lg_error_setm(x->err, errnum, "%s%sentry `%s`: %s", pre ? pre : "", pre ? ": " : "", x->name, why);
}

/* An entry's failing system call: its errno text appended. */
static int entry_errno(struct xctx *x, int errnum, const char *what) {
        return entry_error(x, errnum, "%s: %s", what, strerror(errnum < 0 ? -errnum : errnum));
}

static const char *archive_msg(struct xctx *x, struct archive *a) {
        const char *s = archive_error_string(a);
        lg_printable(s ? s : "unknown error", x->amsg, sizeof(x->amsg));
        return x->amsg;
}

/* ---- reading ---- */

static la_ssize_t cb_read(struct archive *a, void *ud, const void **buf) {
        struct xctx *x = ud;
        for (;;) {
                ssize_t n = read(x->fd, x->rbuf, sizeof(x->rbuf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        archive_set_error(a, errno, "read error");
                        return -1;
                }
                x->archive_read += (uint64_t) n;
                if (x->o->progress)
                        x->o->progress(x->o->ud, x->archive_read, x->archive_size);
                *buf = x->rbuf;
                return n;
        }
}

static la_int64_t cb_skip(struct archive *a, void *ud, la_int64_t request) {
        (void) a;
        struct xctx *x = ud;
        off_t cur = lseek(x->fd, 0, SEEK_CUR);
        if (cur < 0 || request <= 0 || (uint64_t) cur >= x->archive_size)
                return 0;
        if ((uint64_t) request > x->archive_size - (uint64_t) cur)
                request = (la_int64_t) (x->archive_size - (uint64_t) cur);
        if (lseek(x->fd, cur + request, SEEK_SET) < 0)
                return 0; /* libarchive then reads instead */
        return request;
}

static la_int64_t cb_seek(struct archive *a, void *ud, la_int64_t off, int whence) {
        struct xctx *x = ud;
        off_t r = lseek(x->fd, off, whence);
        if (r < 0) {
                archive_set_error(a, errno, "seek error");
                return ARCHIVE_FATAL;
        }
        return r;
}

/* Every uncompressed byte of a tar: counted against the stream limit and
 * hashed. */
static int feed_stream(struct xctx *x, const void *buf, size_t n) {
        x->info.stream_bytes += n;
        if (x->info.stream_bytes > x->lim.max_stream_bytes) {
                char lim[32];
                lg_fmt_size(x->lim.max_stream_bytes, lim, sizeof(lim));
                x->cb_err = lg_error_setm(x->err, EFBIG, "%s: uncompressed content is larger than the limit of %s",
                                          x->what, lim);
                return -1;
        }
        if (EVP_DigestUpdate(x->md, buf, n) != 1) {
                x->cb_err = lg_error_setm(x->err, EIO, "sha256 update failed");
                return -1;
        }
        return 0;
}

static la_ssize_t cb_tar_read(struct archive *a, void *ud, const void **buf) {
        struct xctx *x = ud;
        la_ssize_t n = archive_read_data(x->raw, x->ubuf, sizeof(x->ubuf));
        if (n < 0) {
                x->cb_err = lg_error_setm(x->err, EBADMSG, "%s: corrupt compressed data: %s", x->what,
                                          archive_msg(x, x->raw));
                archive_set_error(a, EIO, "decompression failed");
                return -1;
        }
        if (n > 0 && feed_stream(x, x->ubuf, (size_t) n) < 0) {
                archive_set_error(a, EFBIG, "limit");
                return -1;
        }
        *buf = x->ubuf;
        return n;
}

/* Decompression bomb guard: what came out (data, or the decompressed
 * stream with its headers) against the archive's size. */
static int check_ratio(struct xctx *x) {
        uint64_t out = x->info.total_bytes;
        la_int64_t stream = x->raw ? (la_int64_t) x->info.stream_bytes : archive_filter_bytes(x->a, 0);
        if (stream > 0 && (uint64_t) stream > out)
                out = (uint64_t) stream;
        if (out <= x->lim.ratio_grace_bytes)
                return 0;
        uint64_t allowed;
        if (__builtin_mul_overflow(x->archive_size, (uint64_t) x->lim.max_ratio, &allowed) || out <= allowed)
                return 0;
        char size[32];
        lg_fmt_size(x->archive_size, size, sizeof(size));
        return entry_error(x, EFBIG, "%s expands to more than %u times its archive's size of %s (decompression bomb?)",
                           x->what, x->lim.max_ratio, size);
}

/* The current entry's data to out_fd (or nowhere when out_fd < 0), counted
 * against the limits. */
static int read_data(struct xctx *x, int out_fd) {
        uint64_t mine = 0;
        for (;;) {
                la_ssize_t n = archive_read_data(x->a, x->dbuf, sizeof(x->dbuf));
                if (n == 0)
                        return 0;
                if (n < 0)
                        return x->cb_err ? x->cb_err
                                         : entry_error(x, EBADMSG, "corrupt data: %s", archive_msg(x, x->a));
                if (out_fd < 0)
                        continue;
                mine += (uint64_t) n;
                x->info.total_bytes += (uint64_t) n;
                char lim[32];
                if (mine > x->lim.max_file_bytes) {
                        lg_fmt_size(x->lim.max_file_bytes, lim, sizeof(lim));
                        return entry_error(x, EFBIG, "file is larger than the limit of %s", lim);
                }
                if (x->info.total_bytes > x->lim.max_total_bytes) {
                        lg_fmt_size(x->lim.max_total_bytes, lim, sizeof(lim));
                        return entry_error(x, EFBIG, "%s expands to more than the limit of %s", x->what, lim);
                }
                int r = check_ratio(x);
                if (r < 0)
                        return r;
                if ((r = lg_write_all(out_fd, x->dbuf, (size_t) n)) < 0)
                        return entry_errno(x, r, "write");
        }
}

/* ---- entries ---- */

/* The directory fd of path[0..len), borrowed, missing ones created (or
 * -ENOENT alone when create is not set). */
static int parent_of(struct xctx *x, const char *path, size_t len, bool create) {
        int fd = walk_to(&x->walk, path, len, create);
        if (fd >= 0 || fd == -ENOENT)
                return fd;
        if (fd == -EINVAL)
                return entry_error(x, EINVAL, "%s `%s`", x->walk.fail_why, x->walk.fail_path);
        char what[PATH_MAX + 64];
        snprintf(what, sizeof(what), "%s `%s`", x->walk.fail_why, x->walk.fail_path);
        return entry_errno(x, fd, what);
}

/* Room for a new entry at pfd/name. With LG_EXTRACT_REPLACE whatever is
 * there goes, except a directory when keep_dir (1 then); else anything
 * there is a duplicate. */
static int make_room(struct xctx *x, int pfd, const char *name, bool keep_dir) {
        struct stat s;
        if (fstatat(pfd, name, &s, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : entry_errno(x, errno, "stat");
        if (S_ISDIR(s.st_mode) && keep_dir)
                return 1;
        if (!(x->flags & LG_EXTRACT_REPLACE))
                return entry_error(x, EINVAL, "duplicate entry (the path exists already)");
        if (S_ISDIR(s.st_mode))
                walk_forget(&x->walk); /* the kept parent may be inside it */
        int r = lg_extract_rm_tree_at(pfd, name);
        return r < 0 ? entry_errno(x, r, "replace the earlier entry") : 0;
}

static void owner(struct archive_entry *e, uid_t *uid, gid_t *gid) {
        la_int64_t u = archive_entry_uid(e), g = archive_entry_gid(e);
        *uid = u >= 0 && u < 65536 ? (uid_t) u : NOBODY;
        *gid = g >= 0 && g < 65536 ? (gid_t) g : NOBODY;
}

static mode_t perm(struct archive_entry *e) { return archive_entry_perm(e) & 01777; /* no setuid/setgid */ }

/* Owner and mode of what fd (or pfd/name, a non-symlink) is. */
static int set_meta(struct xctx *x, struct archive_entry *e, int fd, bool dir) {
        if (!(x->flags & LG_EXTRACT_OWNERS)) {
                mode_t mode = dir || (archive_entry_mode(e) & 0111) ? 0755 : 0644;
                return fchmod(fd, mode) < 0 ? entry_errno(x, errno, "chmod") : 0;
        }
        uid_t uid;
        gid_t gid;
        owner(e, &uid, &gid);
        /* chown before chmod: chown clears the mode's special bits anyway. */
        if (fchown(fd, uid, gid) < 0 || fchmod(fd, perm(e)) < 0)
                return entry_errno(x, errno, "set owner and mode");
        return 0;
}

static int make_file(struct xctx *x, struct archive_entry *e, int pfd, const char *name) {
        int r = make_room(x, pfd, name, false);
        if (r < 0)
                return r;
        _cleanup_close_ int fd =
                openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0)
                return errno == EEXIST ? entry_error(x, EINVAL, "duplicate entry (the path exists already)")
                                       : entry_errno(x, errno, "create file");
        if ((r = read_data(x, fd)) < 0 || (r = set_meta(x, e, fd, false)) < 0)
                return r;
        if (archive_entry_mtime_is_set(e)) {
                long ns = archive_entry_mtime_nsec(e);
                struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                                         {.tv_sec = archive_entry_mtime(e), .tv_nsec = ns >= 0 && ns < 1000000000 ? ns : 0}};
                (void) futimens(fd, ts); /* cosmetic: a bad time is not an error */
        }
        if (close(TAKE_FD(fd)) < 0)
                return entry_errno(x, errno, "close");
        x->info.n_files++;
        return 0;
}

static int make_dir(struct xctx *x, struct archive_entry *e, int pfd, const char *name) {
        if (!(x->flags & LG_EXTRACT_OWNERS)) {
                /* Explicit directory entries may come after their contents:
                 * one that exists is fine; created 0755 by the walk. */
                int fd = parent_of(x, x->path, strlen(x->path), true);
                return fd < 0 ? fd : read_data(x, -1);
        }
        int r = make_room(x, pfd, name, true);
        if (r < 0)
                return r;
        if (r == 0) {
                if (mkdirat(pfd, name, 0700) < 0)
                        return entry_errno(x, errno, "create directory");
                x->walk.n_created++;
        }
        _cleanup_close_ int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return entry_errno(x, errno, "open directory");
        return (r = set_meta(x, e, fd, true)) < 0 ? r : read_data(x, -1);
}

static int make_symlink(struct xctx *x, struct archive_entry *e, int pfd, const char *name) {
        const char *target = archive_entry_symlink(e);
        if (!target)
                target = archive_entry_symlink_utf8(e);
        char t[160];
        lg_printable(target, t, sizeof(t));
        if (!(x->flags & LG_EXTRACT_ANY_SYMLINK)) {
                const char *why = lg_extract_symlink_unsafe(x->depth - 1, target);
                if (why)
                        return entry_error(x, EINVAL, "%s (`%s`)", why, t);
        } else if (!target || !*target) {
                return entry_error(x, EINVAL, "symlink without a target");
        } else if (strlen(target) >= 4096) {
                return entry_error(x, ENAMETOOLONG, "symlink target is longer than 4095 bytes");
        }
        int r = make_room(x, pfd, name, false);
        if (r < 0)
                return r;
        if (symlinkat(target, pfd, name) < 0)
                return errno == EEXIST ? entry_error(x, EINVAL, "duplicate entry (the path exists already)")
                                       : entry_errno(x, errno, "create symlink");
        if (x->flags & LG_EXTRACT_OWNERS) {
                uid_t uid;
                gid_t gid;
                owner(e, &uid, &gid);
                if (fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                        return entry_errno(x, errno, "set owner");
        }
        x->info.n_symlinks++;
        return read_data(x, -1);
}

static int make_fifo(struct xctx *x, struct archive_entry *e, int pfd, const char *name) {
        int r = make_room(x, pfd, name, false);
        if (r < 0)
                return r;
        if (mknodat(pfd, name, S_IFIFO | 0600, 0) < 0)
                return entry_errno(x, errno, "create FIFO");
        uid_t uid;
        gid_t gid;
        owner(e, &uid, &gid);
        /* fchmodat cannot skip symlinks, but this is a FIFO just made. */
        if (fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 || fchmodat(pfd, name, perm(e), 0) < 0)
                return entry_errno(x, errno, "set owner and mode");
        return read_data(x, -1);
}

static int make_hardlink(struct xctx *x, const char *rawtarget, int pfd, const char *name) {
        char target[PATH_MAX], shown[160], why[96];
        size_t tdepth;
        int r = lg_extract_path(rawtarget, target, x->lim.max_path_len, x->lim.max_depth, &tdepth, why, sizeof(why));
        if (r < 0)
                return entry_error(x, -r, "hard link: %s", why);
        lg_printable(target, shown, sizeof(shown));
        if (tdepth == 0 || !strcmp(target, x->path))
                return entry_error(x, EINVAL, "hard link to `%s`: not a file of this archive", shown);
        char *slash = strrchr(target, '/');
        size_t plen = slash ? (size_t) (slash - target) : 0;
        const char *tname = slash ? slash + 1 : target;
        /* The link's own parent fd may be the directory the walk keeps,
         * which the walk to the target replaces: keep a copy. */
        _cleanup_close_ int own = pfd == x->rootfd ? -1 : fcntl(pfd, F_DUPFD_CLOEXEC, 3);
        if (pfd != x->rootfd && own < 0)
                return entry_errno(x, errno, "dup");
        if (own >= 0)
                pfd = own;
        int tfd = parent_of(x, target, plen, false);
        if (tfd == -ENOENT)
                return entry_error(x, EINVAL, "hard link to `%s`, which is not earlier in this archive", shown);
        if (tfd < 0)
                return tfd;
        struct stat s;
        if (fstatat(tfd, tname, &s, AT_SYMLINK_NOFOLLOW) < 0)
                return entry_error(x, EINVAL, "hard link to `%s`, which is not earlier in this archive", shown);
        if (S_ISDIR(s.st_mode) || S_ISCHR(s.st_mode))
                return entry_error(x, EINVAL, "hard link to `%s`, which is not a file", shown);
        if ((r = make_room(x, pfd, name, false)) < 0)
                return r;
        /* make_room may have made the walk forget it: walk to the target again. */
        tfd = parent_of(x, target, plen, false);
        if (tfd < 0)
                return tfd == -ENOENT ? entry_error(x, EINVAL, "hard link to `%s`, which it replaced", shown) : tfd;
        if (linkat(tfd, tname, pfd, name, 0) < 0)
                return entry_errno(x, errno, "hard link");
        return read_data(x, -1);
}

static int whiteout(struct xctx *x, int pfd, const char *name) {
        if (!strcmp(name, ".wh..wh..opq")) {
                if (fsetxattr(pfd, "trusted.overlay.opaque", "y", 1, 0) < 0)
                        return entry_errno(x, errno, "mark the directory opaque");
                return read_data(x, -1);
        }
        if (!strncmp(name, ".wh..wh.", 8))
                return read_data(x, -1); /* aufs bookkeeping */
        const char *victim = name + 4;
        if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
                return entry_error(x, EINVAL, "malformed whiteout");
        int r = make_room(x, pfd, victim, false);
        if (r < 0)
                return r;
        if (mknodat(pfd, victim, S_IFCHR | 0, makedev(0, 0)) < 0)
                return entry_errno(x, errno, "create whiteout");
        if (fchownat(pfd, victim, 0, 0, AT_SYMLINK_NOFOLLOW) < 0)
                return entry_errno(x, errno, "chown whiteout");
        return read_data(x, -1);
}

/* What an entry's type allows: 0 go on, 1 skip it, or an error. */
static int check_type(struct xctx *x, mode_t type) {
        bool skip = x->flags & LG_EXTRACT_SKIP_SPECIAL;
        switch (type) {
        case AE_IFREG: case AE_IFDIR: case AE_IFLNK: return 0;
        case AE_IFIFO: return skip ? 0 : entry_error(x, EINVAL, "FIFOs are not allowed");
        case AE_IFCHR: return skip ? 1 : entry_error(x, EINVAL, "character devices are not allowed");
        case AE_IFBLK: return skip ? 1 : entry_error(x, EINVAL, "block devices are not allowed");
        case AE_IFSOCK: return skip ? 1 : entry_error(x, EINVAL, "sockets are not allowed");
        default: return entry_error(x, EINVAL, "unsupported file type 0%o", (unsigned) type);
        }
}

static int do_entry(struct xctx *x, struct archive_entry *e) {
        const char *raw = archive_entry_pathname(e);
        if (!raw)
                raw = archive_entry_pathname_utf8(e);
        lg_printable(raw, x->name, sizeof(x->name));
        if (++x->info.n_entries > x->lim.max_entries)
                return lg_error_setm(x->err, E2BIG, "%s has more than %" PRIu64 " entries", x->what,
                                     x->lim.max_entries);
        if (!raw || !*raw)
                return entry_error(x, EINVAL, "entry without a name");
        const char *link = archive_entry_hardlink(e);
        if (!link)
                link = archive_entry_hardlink_utf8(e);
        if (link && !(x->flags & LG_EXTRACT_HARDLINKS)) {
                char t[160];
                lg_printable(link, t, sizeof(t));
                return entry_error(x, EINVAL, "hard links are not supported (link to `%s`)", t);
        }
        mode_t type = archive_entry_filetype(e);
        int r = link ? 0 : check_type(x, type);
        if (r != 0)
                return r < 0 ? r : read_data(x, -1);
        if (raw[0] == '/' && !(x->flags & LG_EXTRACT_STRIP_SLASH))
                return entry_error(x, EINVAL, "absolute path");
        char why[96];
        r = lg_extract_path(raw, x->path, x->lim.max_path_len, x->lim.max_depth, &x->depth, why, sizeof(why));
        if (r < 0)
                return entry_error(x, -r, "%s", why);
        if (x->depth == 0) {
                /* "./": the root itself. */
                if (type != AE_IFDIR || link)
                        return entry_error(x, EINVAL, "the root of the %s must be a directory",
                                           x->flags & LG_EXTRACT_WHITEOUTS ? "layer" : "package");
                owner(e, &x->root_uid, &x->root_gid);
                x->root_mode = perm(e);
                x->root_set = true;
                return read_data(x, -1);
        }
        if (!link && type == AE_IFREG && archive_entry_size_is_set(e) &&
            (uint64_t) archive_entry_size(e) > x->lim.max_file_bytes) {
                /* Early refusal only: the real check counts the data. */
                char lim[32];
                lg_fmt_size(x->lim.max_file_bytes, lim, sizeof(lim));
                return entry_error(x, EFBIG, "file is larger than the limit of %s", lim);
        }
        if (x->flags & LG_EXTRACT_WHITEOUTS) {
                /* Inside an aufs bookkeeping directory (.wh..wh.plnk/...):
                 * skipped with it. */
                for (const char *p = x->path; (p = strstr(p, ".wh..wh.")); p++)
                        if (p == x->path || p[-1] == '/') {
                                if (strchr(p, '/'))
                                        return read_data(x, -1);
                                break;
                        }
        }
        char *slash = strrchr(x->path, '/');
        size_t plen = slash ? (size_t) (slash - x->path) : 0;
        const char *name = slash ? slash + 1 : x->path;
        int pfd = parent_of(x, x->path, plen, true);
        if (pfd < 0)
                return pfd;
        if ((x->flags & LG_EXTRACT_WHITEOUTS) && !strncmp(name, ".wh.", 4))
                return whiteout(x, pfd, name);
        if (link)
                return make_hardlink(x, link, pfd, name);
        switch (type) {
        case AE_IFREG: return make_file(x, e, pfd, name);
        case AE_IFDIR: return make_dir(x, e, pfd, name);
        case AE_IFLNK: return make_symlink(x, e, pfd, name);
        default: return make_fifo(x, e, pfd, name);
        }
}

/* ---- the whole archive ---- */

static bool filter_available(int code) {
        switch (code) {
        case ARCHIVE_FILTER_GZIP: return archive_zlib_version() != NULL;
        case ARCHIVE_FILTER_BZIP2: return archive_bzlib_version() != NULL;
        case ARCHIVE_FILTER_XZ: return archive_liblzma_version() != NULL;
        case ARCHIVE_FILTER_ZSTD: return archive_libzstd_version() != NULL;
        case ARCHIVE_FILTER_LZ4: return archive_liblz4_version() != NULL;
        default: return false;
        }
}

/* The decompressors built into libarchive, never one that would run an
 * external program: gzip and zstd, and with LG_EXTRACT_ZIP bzip2, xz and
 * lz4 too. */
static int add_filters(struct xctx *x, struct archive *a) {
        static const struct {
                int code;
                int (*add)(struct archive *);
                bool more;
        } filters[] = {
                {ARCHIVE_FILTER_GZIP, archive_read_support_filter_gzip, false},
                {ARCHIVE_FILTER_ZSTD, archive_read_support_filter_zstd, false},
                {ARCHIVE_FILTER_BZIP2, archive_read_support_filter_bzip2, true},
                {ARCHIVE_FILTER_XZ, archive_read_support_filter_xz, true},
                {ARCHIVE_FILTER_LZ4, archive_read_support_filter_lz4, true},
        };
        for (size_t i = 0; i < ARRAY_SIZE(filters); i++) {
                if (filters[i].more && !(x->flags & LG_EXTRACT_ZIP))
                        continue;
                if (filter_available(filters[i].code) && filters[i].add(a) != ARCHIVE_OK)
                        return -1;
        }
        return 0;
}

static int open_readers(struct xctx *x) {
        x->a = archive_read_new();
        if (!x->a || add_filters(x, x->a) < 0 || archive_read_support_format_tar(x->a) != ARCHIVE_OK)
                return lg_error_set(x->err, ENOMEM, "create archive reader");
        if (x->flags & LG_EXTRACT_ZIP) {
                if (archive_read_support_format_zip(x->a) != ARCHIVE_OK)
                        return lg_error_set(x->err, ENOMEM, "create archive reader");
                archive_read_set_callback_data(x->a, x);
                archive_read_set_read_callback(x->a, cb_read);
                archive_read_set_skip_callback(x->a, cb_skip);
                archive_read_set_seek_callback(x->a, cb_seek);
                if (archive_read_open1(x->a) != ARCHIVE_OK)
                        return lg_error_setm(x->err, EBADMSG, "not a valid archive: %s", archive_msg(x, x->a));
                return 0;
        }
        /* tar: the decompressor first, hashing what it hands the tar reader. */
        x->raw = archive_read_new();
        x->md = EVP_MD_CTX_new();
        if (!x->raw || add_filters(x, x->raw) < 0 || archive_read_support_format_raw(x->raw) != ARCHIVE_OK ||
            !x->md || EVP_DigestInit_ex(x->md, EVP_sha256(), NULL) != 1)
                return lg_error_set(x->err, ENOMEM, "create archive reader");
        if (archive_read_open(x->raw, x, NULL, cb_read, NULL) != ARCHIVE_OK)
                return lg_error_setm(x->err, EBADMSG, "%s: %s", x->what, archive_msg(x, x->raw));
        struct archive_entry *re;
        int ar = archive_read_next_header(x->raw, &re);
        if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
                return lg_error_setm(x->err, EBADMSG, "%s: %s", x->what, archive_msg(x, x->raw));
        if (archive_filter_count(x->raw) > 2)
                return lg_error_setm(x->err, EINVAL, "%s has more than one compression layer (%s)", x->what,
                                     archive_filter_name(x->raw, 0));
        if (archive_read_open(x->a, x, NULL, cb_tar_read, NULL) != ARCHIVE_OK)
                return x->cb_err ? x->cb_err
                                 : lg_error_setm(x->err, EBADMSG, "%s is not a tar archive: %s", x->what,
                                                 archive_msg(x, x->a));
        return 0;
}

/* A tar's stream to its end (the padding after the tar's end counts in its
 * digest), then the digest, checked. */
static int finish_stream(struct xctx *x) {
        for (;;) {
                la_ssize_t n = archive_read_data(x->raw, x->ubuf, sizeof(x->ubuf));
                if (n == 0)
                        break;
                if (n < 0)
                        return lg_error_setm(x->err, EBADMSG, "%s: corrupt compressed data: %s", x->what,
                                             archive_msg(x, x->raw));
                if (feed_stream(x, x->ubuf, (size_t) n) < 0)
                        return x->cb_err;
        }
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        if (EVP_DigestFinal_ex(x->md, md, &mdlen) != 1 || mdlen != 32)
                return lg_error_setm(x->err, EIO, "sha256 final failed");
        for (unsigned i = 0; i < 32; i++)
                snprintf(x->info.stream_sha256 + 2 * i, 3, "%02x", md[i]);
        const char *want = x->o->expect_sha256;
        if (want && strcmp(want, x->info.stream_sha256) != 0)
                return lg_error_setm(x->err, EBADMSG, "%s: diff id mismatch: expected sha256:%s, the content is sha256:%s",
                                     x->what, want, x->info.stream_sha256);
        return 0;
}

static int run(struct xctx *x) {
        int r = open_readers(x);
        if (r < 0)
                return r;
        for (;;) {
                struct archive_entry *e;
                int ar = archive_read_next_header(x->a, &e);
                if (ar == ARCHIVE_EOF)
                        break;
                /* ARCHIVE_RETRY (a damaged header libarchive would skip) is
                 * corruption too: only OK and WARN (e.g. a name libarchive
                 * could not convert) yield an entry. */
                if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
                        if (x->cb_err)
                                return x->cb_err;
                        if (x->info.n_entries == 0)
                                return lg_error_setm(x->err, EBADMSG, "not a valid archive: %s", archive_msg(x, x->a));
                        return lg_error_setm(x->err, EBADMSG, "corrupt archive after %" PRIu64 " entries: %s",
                                             x->info.n_entries, archive_msg(x, x->a));
                }
                if (x->info.n_entries == 0 && !x->raw && archive_filter_count(x->a) > 2)
                        return lg_error_setm(x->err, EINVAL, "archive has more than one compression layer (%s)",
                                             archive_filter_name(x->a, 0));
                if ((r = check_ratio(x)) < 0 || (r = do_entry(x, e)) < 0)
                        return r;
        }
        if (x->raw && (r = finish_stream(x)) < 0)
                return r;
        if (x->flags & LG_EXTRACT_NEED_FILE) {
                if (x->info.n_entries == 0)
                        return lg_error_setm(x->err, EINVAL, "archive is empty");
                if (x->info.n_files == 0)
                        return lg_error_setm(x->err, EINVAL, "%s contains no files", x->what);
        }
        return 0;
}

int lg_extract_tree(int archive_fd, int tmp_dfd, int dst_dfd, const char *dst_name, const struct lg_extract_opts *o,
                    struct lg_extract_info *info, struct lg_error *err) {
        if (info)
                memset(info, 0, sizeof(*info));
        if (!o || !dst_name || !*dst_name || strchr(dst_name, '/') || !strcmp(dst_name, ".") || !strcmp(dst_name, ".."))
                return lg_error_setm(err, EINVAL, "bad extraction destination");
        if ((o->flags & LG_EXTRACT_ZIP) && o->expect_sha256)
                return lg_error_setm(err, EINVAL, "a stream digest is for tar archives only");
        struct stat st;
        if (fstat(archive_fd, &st) < 0)
                return lg_error_set(err, errno, "stat the archive");
        if ((o->flags & LG_EXTRACT_ZIP) && !S_ISREG(st.st_mode))
                return lg_error_setm(err, EINVAL, "the archive is not a regular file");
        if (S_ISREG(st.st_mode) && st.st_size == 0)
                return lg_error_setm(err, EBADMSG, "not an archive: the file is empty");

        struct xctx *x = calloc(1, sizeof(*x));
        if (!x)
                return lg_error_set(err, ENOMEM, "allocate extraction");
        x->o = o;
        x->flags = o->flags;
        x->err = err;
        x->what = o->what && *o->what ? o->what : "package";
        x->fd = archive_fd;
        x->archive_size = S_ISREG(st.st_mode) ? (uint64_t) st.st_size : 0;
        x->rootfd = -1;
        x->walk.fd = -1;
        lg_extract_limits_resolve(&o->lim, &x->lim);
        char tmp[64] = "";
        char hex[17];
        int r = lg_random_hex(hex, 8);
        if (r < 0) {
                r = lg_error_set(err, r, "make a temporary name");
                goto out;
        }
        snprintf(tmp, sizeof(tmp), TMP_PREFIX "%s", hex);
        if (mkdirat(tmp_dfd, tmp, 0700) < 0) {
                r = lg_error_set(err, errno, "create the temporary `%s`", tmp);
                tmp[0] = '\0';
                goto out;
        }
        x->rootfd = openat(tmp_dfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (x->rootfd < 0) {
                r = lg_error_set(err, errno, "open the temporary `%s`", tmp);
                goto out;
        }
        x->walk.rootfd = x->rootfd;
        if ((r = run(x)) < 0)
                goto out;
        x->info.n_dirs = x->walk.n_created;
        bool own = (x->flags & LG_EXTRACT_OWNERS) && x->root_set;
        if ((x->flags & LG_EXTRACT_OWNERS) && fchown(x->rootfd, own ? x->root_uid : 0, own ? x->root_gid : 0) < 0) {
                r = lg_error_set(err, errno, "set the owner of the tree");
                goto out;
        }
        /* Durable before it is visible: one syncfs rather than an fsync per file. */
        if (fchmod(x->rootfd, own ? x->root_mode : 0755) < 0 || syncfs(x->rootfd) < 0) {
                r = lg_error_set(err, errno, "sync the tree");
                goto out;
        }
        if (renameat2(tmp_dfd, tmp, dst_dfd, dst_name, RENAME_NOREPLACE) == 0) {
                r = 0;
        } else if (errno == EEXIST || errno == ENOTEMPTY) {
                r = 1; /* extracted meanwhile by someone else; ours is dropped */
        } else if (errno == EINVAL || errno == ENOSYS) {
                /* No RENAME_NOREPLACE: rename(2) replaces only an empty directory. */
                r = renameat(tmp_dfd, tmp, dst_dfd, dst_name) == 0 ? 0
                    : errno == EEXIST || errno == ENOTEMPTY    ? 1
                                                               : -errno;
        } else {
                r = -errno;
        }
        if (r < 0) {
                r = lg_error_set(err, r, "move the tree to `%s`", dst_name);
                goto out;
        }
        if (r == 0) {
                tmp[0] = '\0';
                (void) fsync(dst_dfd);
        }
        if (info)
                *info = x->info;
out:
        if (x->a)
                archive_read_free(x->a);
        if (x->raw)
                archive_read_free(x->raw);
        EVP_MD_CTX_free(x->md);
        walk_forget(&x->walk);
        if (x->rootfd >= 0)
                close(x->rootfd);
        if (tmp[0])
                (void) lg_extract_rm_tree_at(tmp_dfd, tmp);
        free(x);
        return r;
}
