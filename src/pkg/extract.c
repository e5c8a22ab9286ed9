/* Safe extraction of an uploaded archive with libarchive's reader; the tree
 * is written by hand (never archive_write_disk), relative to a directory fd:
 *
 * - every path is normalized and checked (no absolute path, no `..`, length
 *   and depth limits) before anything is created;
 * - parents are walked one component at a time with O_NOFOLLOW|O_DIRECTORY,
 *   so no entry is ever created through a symlink (or a file);
 * - files are created with O_CREAT|O_EXCL|O_NOFOLLOW: nothing is overwritten
 *   and an existing symlink is never followed; a duplicate entry is refused;
 * - symlinks are checked with lg_pkg_symlink_unsafe() before they exist;
 * - hard links, devices, FIFOs and sockets are refused;
 * - sizes are counted as data comes out of the decompressor, never taken from
 *   headers; the compression ratio is watched on the decompressed stream too.
 *
 * All of it happens in a temporary directory beside the destination (mode
 * 0700 until complete), renamed into place once synced; any failure removes
 * it. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "pkg/pkg-internal.h"

#define DEFAULT_TOTAL (512ull << 20)
#define DEFAULT_FILE (256ull << 20)
#define DEFAULT_PATH_LEN 1024u
#define DEFAULT_DEPTH 64u
#define DEFAULT_RATIO 200u
#define DEFAULT_RATIO_GRACE (16ull << 20)
#define DATA_BUF (64 * 1024)
#define READ_BUF (64 * 1024)

void lg_pkg_limits_resolve(const struct lg_pkg_limits *in, struct lg_pkg_limits *out) {
        struct lg_pkg_limits l = in ? *in : (struct lg_pkg_limits){0};
        if (!l.max_total_bytes)
                l.max_total_bytes = DEFAULT_TOTAL;
        if (!l.max_file_bytes)
                l.max_file_bytes = DEFAULT_FILE;
        if (l.max_file_bytes > l.max_total_bytes)
                l.max_file_bytes = l.max_total_bytes;
        if (!l.max_entries)
                l.max_entries = LG_PKG_DEFAULT_MAX_ENTRIES;
        if (!l.max_path_len)
                l.max_path_len = DEFAULT_PATH_LEN;
        if (l.max_path_len > PATH_MAX - 1)
                l.max_path_len = PATH_MAX - 1;
        if (!l.max_depth)
                l.max_depth = DEFAULT_DEPTH;
        if (!l.max_ratio)
                l.max_ratio = DEFAULT_RATIO;
        if (!l.ratio_grace_bytes)
                l.ratio_grace_bytes = DEFAULT_RATIO_GRACE;
        *out = l;
}

void lg_pkg_info_free(struct lg_pkg_info *info) {
        if (!info)
                return;
        lg_pkg_names_free(info->top);
        info->top = NULL;
        info->n_top = 0;
}

struct xctx {
        struct archive *a;
        struct lg_pkg_limits lim;
        struct lg_error *err;
        int fd;                 /* the archive */
        uint64_t archive_size;
        int rootfd;             /* the temporary root */
        uint64_t n_entries;
        uint64_t total;         /* bytes out of the decompressor, as data */
        struct lg_pkg_info info;
        char name[160];         /* the entry, printable, for messages */
        char amsg[200];         /* libarchive's last message, printable */
        char path[PATH_MAX];    /* its normalized path */
        size_t depth;
        struct lg_tree_walk walk; /* below rootfd */
        unsigned char buf[DATA_BUF];
        unsigned char rbuf[READ_BUF];
};

static int entry_error(struct xctx *x, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int entry_error(struct xctx *x, int errnum, const char *fmt, ...) {
        char what[384];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        return lg_error_set(x->err, errnum, "entry `%s`: %s", x->name, what);
}

/* libarchive's message, on one line. */
static const char *archive_msg(struct xctx *x) {
        const char *s = archive_error_string(x->a);
        lg_pkg_printable(s ? s : "unknown error", x->amsg, sizeof(x->amsg));
        return x->amsg;
}

/* libarchive client callbacks on our fd: read, skip and seek (the seekable
 * zip reader uses the central directory, like unzip). */
static la_ssize_t cb_read(struct archive *a, void *ud, const void **buf) {
        struct xctx *x = ud;
        for (;;) {
                ssize_t n = read(x->fd, x->rbuf, sizeof(x->rbuf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        archive_set_error(a, errno, "read error");
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

/* Decompression bomb guard: what came out (data, or the decompressed
 * stream with its headers) against the archive's size. */
static int check_ratio(struct xctx *x) {
        uint64_t out = x->total;
        la_int64_t stream = archive_filter_bytes(x->a, 0);
        if (stream > 0 && (uint64_t) stream > out)
                out = (uint64_t) stream;
        if (out <= x->lim.ratio_grace_bytes)
                return 0;
        uint64_t allowed;
        if (__builtin_mul_overflow(x->archive_size, (uint64_t) x->lim.max_ratio, &allowed))
                return 0;
        if (out <= allowed)
                return 0;
        char size[32];
        lg_fmt_size(x->archive_size, size, sizeof(size));
        return entry_error(x, EFBIG,
                           "package expands to more than %u times its archive's size of %s "
                           "(decompression bomb?)",
                           x->lim.max_ratio, size);
}

/* Read the current entry's data to out_fd (or nowhere when out_fd < 0),
 * counting it against the limits. */
static int read_data(struct xctx *x, int out_fd) {
        uint64_t mine = 0;
        for (;;) {
                la_ssize_t n = archive_read_data(x->a, x->buf, sizeof(x->buf));
                if (n == 0)
                        return 0;
                if (n < 0)
                        return entry_error(x, EBADMSG, "corrupt data: %s", archive_msg(x));
                mine += (uint64_t) n;
                x->total += (uint64_t) n;
                char lim[32];
                if (mine > x->lim.max_file_bytes) {
                        lg_fmt_size(x->lim.max_file_bytes, lim, sizeof(lim));
                        return entry_error(x, EFBIG, "file is larger than the limit of %s", lim);
                }
                if (x->total > x->lim.max_total_bytes) {
                        lg_fmt_size(x->lim.max_total_bytes, lim, sizeof(lim));
                        return entry_error(x, EFBIG, "package expands to more than the limit of %s", lim);
                }
                int r = check_ratio(x);
                if (r < 0)
                        return r;
                if (out_fd >= 0) {
                        r = lg_write_all(out_fd, x->buf, (size_t) n);
                        if (r < 0)
                                return entry_error(x, -r, "write");
                }
        }
}

/* Normalize raw into x->path: refuse absolute paths, then see
 * lg_archive_path. */
static int normalize(struct xctx *x, const char *raw) {
        if (raw[0] == '/')
                return entry_error(x, EINVAL, "absolute path");
        char why[96];
        int r = lg_archive_path(raw, x->path, x->lim.max_path_len, x->lim.max_depth, &x->depth, why, sizeof(why));
        return r < 0 ? entry_error(x, -r, "%s", why) : 0;
}

/* The directory fd of x->path[0..len), borrowed (see lg_tree_walk_to);
 * missing directories are created. */
static int walk_to(struct xctx *x, size_t len) {
        int fd = lg_tree_walk_to(&x->walk, x->path, len, true);
        if (fd >= 0)
                return fd;
        const char *at = x->walk.fail_path;
        switch (x->walk.fail) {
        case LG_TREE_SYMLINK: return entry_error(x, EINVAL, "path goes through the symlink `%s`", at);
        case LG_TREE_NOT_DIR: return entry_error(x, EINVAL, "path goes through the file `%s`", at);
        case LG_TREE_CREATE: return entry_error(x, -fd, "create directory `%s`", at);
        case LG_TREE_CHMOD: return entry_error(x, -fd, "chmod directory `%s`", at);
        default: return entry_error(x, -fd, "open directory `%s`", at);
        }
}

static int make_file(struct xctx *x, struct archive_entry *e, int pfd, const char *name) {
        int fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0) {
                if (errno == EEXIST)
                        return entry_error(x, EINVAL, "duplicate entry (the path exists already)");
                return entry_error(x, errno, "create file");
        }
        int r = read_data(x, fd);
        if (r >= 0) {
                mode_t mode = (archive_entry_mode(e) & 0111) ? 0755 : 0644;
                if (fchmod(fd, mode) < 0)
                        r = entry_error(x, errno, "chmod");
        }
        if (r >= 0 && archive_entry_mtime_is_set(e)) {
                long nsec = archive_entry_mtime_nsec(e);
                struct timespec ts[2] = {
                        {.tv_sec = 0, .tv_nsec = UTIME_OMIT},
                        {.tv_sec = archive_entry_mtime(e), .tv_nsec = nsec >= 0 && nsec < 1000000000 ? nsec : 0},
                };
                (void) futimens(fd, ts); /* cosmetic: a bad time is not an error */
        }
        if (close(fd) < 0 && r >= 0)
                r = entry_error(x, errno, "close");
        if (r >= 0)
                x->info.n_files++;
        return r;
}

static int make_symlink(struct xctx *x, struct archive_entry *e, int pfd, const char *name) {
        const char *target = archive_entry_symlink(e);
        if (!target)
                target = archive_entry_symlink_utf8(e);
        const char *why = lg_pkg_symlink_unsafe(x->depth - 1, target);
        if (why) {
                char t[160];
                lg_pkg_printable(target, t, sizeof(t));
                return entry_error(x, EINVAL, "%s (`%s`)", why, t);
        }
        if (symlinkat(target, pfd, name) < 0) {
                if (errno == EEXIST)
                        return entry_error(x, EINVAL, "duplicate entry (the path exists already)");
                return entry_error(x, errno, "create symlink");
        }
        x->info.n_symlinks++;
        return read_data(x, -1);
}

/* Explicit directory entries may come after their contents: one that
 * exists is fine. */
static int make_dir(struct xctx *x) {
        int fd = walk_to(x, strlen(x->path));
        return fd < 0 ? fd : read_data(x, -1);
}

static int do_entry(struct xctx *x, struct archive_entry *e) {
        const char *raw = archive_entry_pathname(e);
        if (!raw)
                raw = archive_entry_pathname_utf8(e);
        lg_pkg_printable(raw, x->name, sizeof(x->name));
        if (++x->n_entries > x->lim.max_entries)
                return lg_error_setm(x->err, E2BIG, "package has more than %" PRIu64 " entries",
                                     x->lim.max_entries);
        if (!raw || !*raw)
                return entry_error(x, EINVAL, "entry without a name");
        if (archive_entry_hardlink(e) || archive_entry_hardlink_utf8(e)) {
                char t[160];
                lg_pkg_printable(archive_entry_hardlink(e), t, sizeof(t));
                return entry_error(x, EINVAL, "hard links are not supported (link to `%s`)", t);
        }
        mode_t type = archive_entry_filetype(e);
        switch (type) {
        case AE_IFREG: case AE_IFDIR: case AE_IFLNK: break;
        case AE_IFCHR: return entry_error(x, EINVAL, "character devices are not allowed");
        case AE_IFBLK: return entry_error(x, EINVAL, "block devices are not allowed");
        case AE_IFIFO: return entry_error(x, EINVAL, "FIFOs are not allowed");
        case AE_IFSOCK: return entry_error(x, EINVAL, "sockets are not allowed");
        default: return entry_error(x, EINVAL, "unsupported file type 0%o", (unsigned) type);
        }
        int r = normalize(x, raw);
        if (r < 0)
                return r;
        if (x->depth == 0) {
                /* "./": the root itself. */
                if (type != AE_IFDIR)
                        return entry_error(x, EINVAL, "a %s cannot be the package's root",
                                           type == AE_IFLNK ? "symlink" : "file");
                return read_data(x, -1);
        }
        if (type == AE_IFREG && archive_entry_size_is_set(e) &&
            (uint64_t) archive_entry_size(e) > x->lim.max_file_bytes) {
                /* Early refusal only: the real check counts the data. */
                char lim[32];
                lg_fmt_size(x->lim.max_file_bytes, lim, sizeof(lim));
                return entry_error(x, EFBIG, "file is larger than the limit of %s", lim);
        }

        char *slash = strrchr(x->path, '/');
        size_t plen = slash ? (size_t) (slash - x->path) : 0;
        const char *name = slash ? slash + 1 : x->path;
        if (type == AE_IFDIR)
                return make_dir(x);
        int pfd = walk_to(x, plen);
        if (pfd < 0)
                return pfd;
        return type == AE_IFREG ? make_file(x, e, pfd, name) : make_symlink(x, e, pfd, name);
}

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

/* A reader for zip and tar with the decompressors libarchive has built in:
 * never the ones that would run an external program. */
static struct archive *new_reader(void) {
        struct archive *a = archive_read_new();
        if (!a)
                return NULL;
        if (archive_read_support_format_tar(a) != ARCHIVE_OK || archive_read_support_format_zip(a) != ARCHIVE_OK)
                goto fail;
        static const struct {
                int code;
                int (*add)(struct archive *);
        } filters[] = {
                {ARCHIVE_FILTER_GZIP, archive_read_support_filter_gzip},
                {ARCHIVE_FILTER_BZIP2, archive_read_support_filter_bzip2},
                {ARCHIVE_FILTER_XZ, archive_read_support_filter_xz},
                {ARCHIVE_FILTER_ZSTD, archive_read_support_filter_zstd},
                {ARCHIVE_FILTER_LZ4, archive_read_support_filter_lz4},
        };
        for (size_t i = 0; i < ARRAY_SIZE(filters); i++)
                if (filter_available(filters[i].code) && filters[i].add(a) != ARCHIVE_OK)
                        goto fail;
        return a;
fail:
        archive_read_free(a);
        return NULL;
}

static int run(struct xctx *x) {
        x->a = new_reader();
        if (!x->a)
                return lg_error_set(x->err, ENOMEM, "create archive reader");
        archive_read_set_callback_data(x->a, x);
        archive_read_set_read_callback(x->a, cb_read);
        archive_read_set_skip_callback(x->a, cb_skip);
        archive_read_set_seek_callback(x->a, cb_seek);
        if (archive_read_open1(x->a) != ARCHIVE_OK)
                return lg_error_set(x->err, EBADMSG, "not a valid archive: %s", archive_msg(x));
        for (;;) {
                struct archive_entry *e;
                int ar = archive_read_next_header(x->a, &e);
                if (ar == ARCHIVE_EOF)
                        break;
                /* ARCHIVE_RETRY (a damaged header libarchive would skip) is
                 * corruption too: only OK and WARN (e.g. a name libarchive
                 * could not convert) yield an entry. */
                if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
                        if (x->n_entries == 0)
                                return lg_error_set(x->err, EBADMSG, "not a valid archive: %s",
                                                    archive_msg(x));
                        return lg_error_set(x->err, EBADMSG, "corrupt archive after %" PRIu64 " entries: %s",
                                            x->n_entries, archive_msg(x));
                }
                if (x->n_entries == 0 && archive_filter_count(x->a) > 2)
                        return lg_error_set(x->err, EINVAL,
                                            "archive has more than one compression layer (%s)",
                                            archive_filter_name(x->a, 0));
                int r = check_ratio(x);
                if (r < 0)
                        return r;
                r = do_entry(x, e);
                if (r < 0)
                        return r;
        }
        if (x->n_entries == 0)
                return lg_error_set(x->err, EINVAL, "archive is empty");
        if (x->info.n_files == 0)
                return lg_error_set(x->err, EINVAL, "package contains no files");
        return 0;
}

/* Count what an existing tree holds (extraction skipped as a no-op). */
static int walk(int dfd, unsigned depth, struct lg_pkg_info *info) {
        if (depth > 4096)
                return -ELOOP;
        int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -ENOMEM;
        }
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = -errno;
                        break;
                }
                if (S_ISREG(st.st_mode)) {
                        info->n_files++;
                        info->total_bytes += (uint64_t) st.st_size;
                } else if (S_ISLNK(st.st_mode)) {
                        info->n_symlinks++;
                } else if (S_ISDIR(st.st_mode)) {
                        info->n_dirs++;
                        int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0) {
                                r = -errno;
                                break;
                        }
                        r = walk(sub, depth + 1, info);
                        close(sub);
                }
        }
        closedir(d);
        return r;
}

static int describe_existing(int pfd, const char *base, struct lg_pkg_info *info, const char *dest,
                             struct lg_error *err) {
        if (!info)
                return 1;
        _cleanup_close_ int fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int r = fd < 0 ? -errno : walk(fd, 0, info);
        if (r >= 0)
                r = lg_pkg_list_dir(fd, &info->top, &info->n_top);
        if (r < 0) {
                lg_pkg_info_free(info);
                memset(info, 0, sizeof(*info));
                return lg_error_set(err, r, "read existing `%s`", dest);
        }
        return 1;
}

int lg_pkg_extract(const char *blob_path, const char *dest_dir, const struct lg_pkg_limits *limits,
                   struct lg_pkg_info *info, struct lg_error *err) {
        if (info)
                memset(info, 0, sizeof(*info));
        if (!blob_path || !dest_dir)
                return lg_error_set(err, EINVAL, "no archive or destination given");

        /* dest_dir = parent/base; the work happens in parent/.tmp-x-<random>. */
        char parent[PATH_MAX], base[NAME_MAX + 1];
        size_t len = strlen(dest_dir);
        while (len > 1 && dest_dir[len - 1] == '/')
                len--;
        if (len == 0 || len >= sizeof(parent))
                return lg_error_set(err, ENAMETOOLONG, "destination `%s`", dest_dir);
        memcpy(parent, dest_dir, len);
        parent[len] = '\0';
        char *slash = strrchr(parent, '/');
        const char *b = slash ? slash + 1 : parent;
        if (strlen(b) > NAME_MAX || !*b || !strcmp(b, ".") || !strcmp(b, ".."))
                return lg_error_set(err, EINVAL, "bad destination `%s`", dest_dir);
        strcpy(base, b);
        if (!slash)
                strcpy(parent, ".");
        else if (slash == parent)
                parent[1] = '\0';
        else
                *slash = '\0';

        int r = lg_mkdir_p(parent, 0755);
        if (r < 0)
                return lg_error_set(err, r, "create `%s`", parent);
        _cleanup_close_ int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (pfd < 0)
                return lg_error_set(err, errno, "open `%s`", parent);
        struct stat st;
        if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (!S_ISDIR(st.st_mode))
                        return lg_error_set(err, EEXIST, "`%s` exists and is not a directory", dest_dir);
                return describe_existing(pfd, base, info, dest_dir, err);
        }

        struct xctx *x = calloc(1, sizeof(*x));
        if (!x)
                return lg_error_set(err, ENOMEM, "allocate extraction");
        x->err = err;
        x->rootfd = -1;
        lg_tree_walk_init(&x->walk, -1);
        lg_pkg_limits_resolve(limits, &x->lim);
        char tmp[64], tmp_path[PATH_MAX + 80] = "";
        x->fd = open(blob_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (x->fd < 0) {
                r = lg_error_set(err, errno, "open `%s`", blob_path);
                goto out;
        }
        if (fstat(x->fd, &st) < 0) {
                r = lg_error_set(err, errno, "stat `%s`", blob_path);
                goto out;
        }
        if (!S_ISREG(st.st_mode)) {
                r = lg_error_set(err, EINVAL, "`%s` is not a regular file", blob_path);
                goto out;
        }
        if (st.st_size == 0) {
                r = lg_error_set(err, EBADMSG, "not an archive: the file is empty");
                goto out;
        }
        x->archive_size = (uint64_t) st.st_size;

        r = lg_pkg_tmp_name(tmp, sizeof(tmp), "x-");
        if (r < 0) {
                r = lg_error_set(err, r, "make a temporary name");
                goto out;
        }
        snprintf(tmp_path, sizeof(tmp_path), "%s/%s", parent, tmp);
        if (mkdirat(pfd, tmp, 0700) < 0) {
                r = lg_error_set(err, errno, "create `%s`", tmp_path);
                tmp_path[0] = '\0';
                goto out;
        }
        x->rootfd = openat(pfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (x->rootfd < 0) {
                r = lg_error_set(err, errno, "open `%s`", tmp_path);
                goto out;
        }
        lg_tree_walk_init(&x->walk, x->rootfd);

        r = run(x);
        if (r < 0)
                goto out;
        x->info.n_dirs = x->walk.n_created;
        x->info.total_bytes = x->total;
        r = lg_pkg_list_dir(x->rootfd, &x->info.top, &x->info.n_top);
        if (r < 0) {
                r = lg_error_set(err, r, "list `%s`", tmp_path);
                goto out;
        }
        /* Durable before it is visible: one syncfs rather than an fsync per file. */
        if (fchmod(x->rootfd, 0755) < 0 || syncfs(x->rootfd) < 0) {
                r = lg_error_set(err, errno, "sync `%s`", tmp_path);
                goto out;
        }
        r = lg_rename_noreplace_at(pfd, tmp, base);
        if (r < 0) {
                r = lg_error_set(err, r, "rename `%s` to `%s`", tmp_path, dest_dir);
                goto out;
        }
        if (r == 0) {
                tmp_path[0] = '\0'; /* it is dest_dir now */
                (void) fsync(pfd);
        }
        /* r == 1: extracted meanwhile by someone else; ours is dropped. */
        if (info) {
                *info = x->info;
                x->info.top = NULL;
        }
out:
        if (x->a)
                archive_read_free(x->a);
        if (x->fd >= 0)
                close(x->fd);
        lg_tree_walk_forget(&x->walk);
        if (x->rootfd >= 0)
                close(x->rootfd);
        if (tmp_path[0])
                (void) lg_rm_rf(tmp_path);
        lg_pkg_info_free(&x->info);
        free(x);
        return r;
}
