/* Pack a directory (for `legion app deploy --dir`), or files and
 * directories each under its name (`legion submit --file --files`), into
 * a deterministic tar.gz: names in bytewise order at every level, no times, owners or
 * permission bits beyond x, symlinks kept only when lg_pkg_extract() would
 * accept them. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "pkg/pkg-internal.h"

#define MAX_DEPTH 256

struct pctx {
        struct archive *a;
        struct archive_entry *e;
        const struct lg_pkg_pack_opts *opts;
        struct lg_pkg_pack_info info;
        struct lg_error *err;
        const char *src;
        bool out_is_file;
        dev_t out_dev;
        ino_t out_ino;
        char buf[64 * 1024];
};

static int write_header(struct pctx *p, const char *rel, mode_t type, mode_t perm, int64_t size,
                        const char *target) {
        archive_entry_clear(p->e);
        archive_entry_set_pathname(p->e, rel);
        archive_entry_set_filetype(p->e, type);
        archive_entry_set_perm(p->e, perm);
        archive_entry_set_size(p->e, size);
        archive_entry_set_mtime(p->e, 0, 0);
        archive_entry_set_uid(p->e, 0);
        archive_entry_set_gid(p->e, 0);
        if (target)
                archive_entry_set_symlink(p->e, target);
        /* ARCHIVE_WARN: a name not in the locale's charset, written as is. */
        if (archive_write_header(p->a, p->e) < ARCHIVE_WARN)
                return lg_error_set(p->err, archive_errno(p->a) > 0 ? archive_errno(p->a) : EIO,
                                    "pack `%s`: %s", rel, archive_error_string(p->a));
        return 0;
}

static int pack_file(struct pctx *p, int dfd, const char *name, const char *rel) {
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return lg_error_set(p->err, errno, "open `%s/%s`", p->src, rel);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return lg_error_set(p->err, errno, "stat `%s/%s`", p->src, rel);
        if (!S_ISREG(st.st_mode))
                return lg_error_set(p->err, EAGAIN, "`%s/%s` changed while packing", p->src, rel);
        int r = write_header(p, rel, AE_IFREG, (st.st_mode & 0111) ? 0755 : 0644, st.st_size, NULL);
        if (r < 0)
                return r;
        uint64_t left = (uint64_t) st.st_size;
        while (left > 0) {
                size_t want = left < sizeof(p->buf) ? (size_t) left : sizeof(p->buf);
                ssize_t n = read(fd, p->buf, want);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return lg_error_set(p->err, errno, "read `%s/%s`", p->src, rel);
                if (n == 0)
                        return lg_error_set(p->err, EAGAIN, "`%s/%s` shrank while packing", p->src, rel);
                if (archive_write_data(p->a, p->buf, (size_t) n) != n)
                        return lg_error_set(p->err, EIO, "pack `%s`: %s", rel, archive_error_string(p->a));
                left -= (uint64_t) n;
        }
        p->info.n_files++;
        p->info.total_bytes += (uint64_t) st.st_size;
        return 0;
}

static int pack_dir(struct pctx *p, int dfd, const char *prefix, size_t depth) {
        if (depth > MAX_DEPTH)
                return lg_error_set(p->err, ELOOP, "`%s/%s` is nested too deep", p->src, prefix);
        char **names = NULL;
        size_t n = 0;
        int r = lg_pkg_list_dir(dfd, &names, &n);
        if (r < 0)
                return lg_error_set(p->err, r, "list `%s/%s`", p->src, prefix);
        for (size_t i = 0; i < n && r >= 0; i++) {
                char rel[PATH_MAX];
                if ((size_t) snprintf(rel, sizeof(rel), "%s%s", prefix, names[i]) >= sizeof(rel) - 1) {
                        r = lg_error_set(p->err, ENAMETOOLONG, "path under `%s` too long", p->src);
                        break;
                }
                struct stat st;
                if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = lg_error_set(p->err, errno, "stat `%s/%s`", p->src, rel);
                        break;
                }
                bool is_dir = S_ISDIR(st.st_mode);
                if (p->opts && p->opts->skip && p->opts->skip(rel, is_dir, p->opts->userdata)) {
                        p->info.n_skipped++;
                        continue;
                }
                if (S_ISREG(st.st_mode)) {
                        if (p->out_is_file && st.st_dev == p->out_dev && st.st_ino == p->out_ino) {
                                p->info.n_skipped++; /* the archive being written */
                                continue;
                        }
                        r = pack_file(p, dfd, names[i], rel);
                } else if (is_dir) {
                        int sub = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0) {
                                r = lg_error_set(p->err, errno, "open `%s/%s`", p->src, rel);
                                break;
                        }
                        size_t len = strlen(rel);
                        rel[len] = '/';
                        rel[len + 1] = '\0';
                        r = write_header(p, rel, AE_IFDIR, 0755, 0, NULL);
                        if (r >= 0) {
                                p->info.n_dirs++;
                                r = pack_dir(p, sub, rel, depth + 1);
                        }
                        close(sub);
                } else if (S_ISLNK(st.st_mode)) {
                        char target[PATH_MAX];
                        ssize_t tl = readlinkat(dfd, names[i], target, sizeof(target) - 1);
                        if (tl < 0) {
                                r = lg_error_set(p->err, errno, "read link `%s/%s`", p->src, rel);
                                break;
                        }
                        target[tl] = '\0';
                        if (lg_extract_symlink_unsafe(depth, target)) {
                                p->info.n_skipped++;
                                continue;
                        }
                        r = write_header(p, rel, AE_IFLNK, 0777, 0, target);
                        if (r >= 0)
                                p->info.n_symlinks++;
                } else {
                        p->info.n_skipped++; /* devices, FIFOs, sockets */
                }
        }
        lg_pkg_names_free(names);
        return r;
}

/* One top-level path of lg_pkg_pack_paths: under its name, p->src its
 * directory for messages. */
struct top {
        const char *given;
        char name[NAME_MAX + 1]; /* in the archive */
        char *real;              /* resolved (symlinks followed) */
};

static int top_cmp(const void *a, const void *b) {
        return strcmp(((const struct top *) a)->name, ((const struct top *) b)->name);
}

static int pack_top(struct pctx *p, const struct top *t) {
        char *slash = strrchr(t->real, '/');
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%.*s", slash == t->real ? 1 : (int) (slash - t->real), t->real);
        p->src = dir;
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return lg_error_set(p->err, errno, "open `%s`", dir);
        struct stat st;
        if (fstatat(dfd, slash + 1, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return lg_error_set(p->err, errno, "stat `%s`", t->given);
        if (S_ISREG(st.st_mode))
                return pack_file(p, dfd, slash + 1, t->name);
        if (!S_ISDIR(st.st_mode))
                return lg_error_setm(p->err, EINVAL, "`%s` is neither a file nor a directory", t->given);
        _cleanup_close_ int sub = openat(dfd, slash + 1, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0)
                return lg_error_set(p->err, errno, "open `%s`", t->given);
        char rel[NAME_MAX + 2];
        snprintf(rel, sizeof(rel), "%s/", t->name);
        int r = write_header(p, rel, AE_IFDIR, 0755, 0, NULL);
        if (r < 0)
                return r;
        p->info.n_dirs++;
        /* Its entries are one level down in the archive. */
        return pack_dir(p, sub, rel, 1);
}

/* The archive writer on out_fd, then each of srcs (a directory whose
 * contents go at the top, or tops), then its end. */
static int pack(const char *src_dir, const struct top *tops, size_t n, int out_fd,
                const struct lg_pkg_pack_opts *opts, struct lg_pkg_pack_info *info, struct lg_error *err) {
        if (info)
                memset(info, 0, sizeof(*info));
        _cleanup_close_ int rootfd = -1;
        if (src_dir && (rootfd = open(src_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
                return lg_error_set(err, errno, "open `%s`", src_dir);
        struct pctx *p = calloc(1, sizeof(*p));
        if (!p)
                return lg_error_set(err, ENOMEM, "allocate packer");
        p->opts = opts;
        p->err = err;
        p->src = src_dir;
        struct stat st;
        if (fstat(out_fd, &st) < 0) {
                free(p);
                return lg_error_set(err, errno, "stat output");
        }
        if (S_ISREG(st.st_mode)) {
                p->out_is_file = true;
                p->out_dev = st.st_dev;
                p->out_ino = st.st_ino;
        }
        int r = 0;
        p->a = archive_write_new();
        p->e = archive_entry_new();
        if (!p->a || !p->e) {
                r = lg_error_set(err, ENOMEM, "allocate archive writer");
                goto out;
        }
        /* pax only where ustar cannot say it (long or non-ASCII names). */
        if (archive_write_set_format_pax_restricted(p->a) != ARCHIVE_OK ||
            archive_write_add_filter_gzip(p->a) != ARCHIVE_OK ||
            archive_write_set_bytes_in_last_block(p->a, 1) != ARCHIVE_OK) {
                r = lg_error_set(err, EIO, "set up tar.gz: %s", archive_error_string(p->a));
                goto out;
        }
        /* No time in the gzip header ("!timestamp"); the test of determinism
         * would notice a libarchive without the option. */
        (void) archive_write_set_filter_option(p->a, "gzip", "timestamp", NULL);
        if (archive_write_open_fd(p->a, out_fd) != ARCHIVE_OK) {
                r = lg_error_set(err, archive_errno(p->a) > 0 ? archive_errno(p->a) : EIO, "start tar.gz: %s",
                                 archive_error_string(p->a));
                goto out;
        }
        if (src_dir)
                r = pack_dir(p, rootfd, "", 0);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = pack_top(p, &tops[i]);
        if (r >= 0 && archive_write_close(p->a) != ARCHIVE_OK)
                r = lg_error_set(err, archive_errno(p->a) > 0 ? archive_errno(p->a) : EIO, "finish tar.gz: %s",
                                 archive_error_string(p->a));
        if (r >= 0 && info)
                *info = p->info;
out:
        if (p->e)
                archive_entry_free(p->e);
        if (p->a)
                archive_write_free(p->a);
        free(p);
        return r;
}

int lg_pkg_pack_dir(const char *src_dir, int out_fd, const struct lg_pkg_pack_opts *opts,
                    struct lg_pkg_pack_info *info, struct lg_error *err) {
        return pack(src_dir, NULL, 0, out_fd, opts, info, err);
}

int lg_pkg_pack_paths(const char *const *paths, size_t n, int out_fd, const struct lg_pkg_pack_opts *opts,
                      struct lg_pkg_pack_info *info, struct lg_error *err) {
        struct top *tops = calloc(n ? n : 1, sizeof(*tops));
        if (!tops)
                return lg_error_set(err, ENOMEM, "allocate packer");
        int r = 0;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                struct top *t = &tops[i];
                t->given = paths[i];
                if (!(t->real = realpath(paths[i], NULL))) {
                        r = lg_error_set(err, errno, "`%s`", paths[i]);
                        break;
                }
                /* The name given ("data/" is data), or for ".", ".." the
                 * directory's own. */
                size_t len = strlen(paths[i]);
                while (len > 1 && paths[i][len - 1] == '/')
                        len--;
                const char *base = paths[i] + len;
                while (base > paths[i] && base[-1] != '/')
                        base--;
                size_t bl = (size_t) (paths[i] + len - base);
                if ((bl == 1 && base[0] == '.') || (bl == 2 && !strncmp(base, "..", 2)) || base[0] == '/') {
                        base = strrchr(t->real, '/') + 1;
                        bl = strlen(base);
                }
                if (bl == 0 || bl > NAME_MAX)
                        r = lg_error_setm(err, EINVAL, "`%s` has no name to pack it under", paths[i]);
                else
                        snprintf(t->name, sizeof(t->name), "%.*s", (int) bl, base);
        }
        if (r >= 0)
                qsort(tops, n, sizeof(*tops), top_cmp);
        for (size_t i = 1; r >= 0 && i < n; i++)
                if (!strcmp(tops[i - 1].name, tops[i].name))
                        r = lg_error_setm(err, EINVAL, "`%s` and `%s` would both be `%s` in the package",
                                          tops[i - 1].given, tops[i].given, tops[i].name);
        if (r >= 0)
                r = pack(NULL, tops, n, out_fd, opts, info, err);
        for (size_t i = 0; i < n; i++)
                free(tops[i].real);
        free(tops);
        return r;
}
