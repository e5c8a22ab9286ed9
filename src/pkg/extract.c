/* Extraction of an uploaded package: the safe extractor of src/extract
 * with the packages' rules (LG_EXTRACT_PACKAGE: zip or tar, no hard links,
 * devices, FIFOs or sockets, symlinks that stay in the tree, modes
 * normalized, owners ignored, at least one file), into a tree built beside
 * its destination and renamed into place; what an existing tree holds is
 * counted instead. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "pkg/pkg-internal.h"

void lg_pkg_limits_resolve(const struct lg_pkg_limits *in, struct lg_pkg_limits *out) {
        struct lg_extract_limits l = {0};
        if (in)
                l = (struct lg_extract_limits){in->max_entries,  in->max_total_bytes, in->max_file_bytes, 0,
                                               in->max_path_len, in->max_depth,       in->max_ratio,
                                               in->ratio_grace_bytes};
        lg_extract_limits_resolve(&l, &l);
        *out = (struct lg_pkg_limits){l.max_total_bytes, l.max_file_bytes, l.max_entries, l.max_path_len,
                                      l.max_depth,       l.max_ratio,      l.ratio_grace_bytes};
}

void lg_pkg_info_free(struct lg_pkg_info *info) {
        if (!info)
                return;
        lg_pkg_names_free(info->top);
        info->top = NULL;
        info->n_top = 0;
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
        _cleanup_close_ int fd = open(blob_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return lg_error_set(err, errno, "open `%s`", blob_path);
        if (fstat(fd, &st) < 0)
                return lg_error_set(err, errno, "stat `%s`", blob_path);
        if (!S_ISREG(st.st_mode))
                return lg_error_set(err, EINVAL, "`%s` is not a regular file", blob_path);
        struct lg_pkg_limits l;
        lg_pkg_limits_resolve(limits, &l);
        struct lg_extract_opts o = {
                .flags = LG_EXTRACT_PACKAGE,
                .lim = {l.max_entries, l.max_total_bytes, l.max_file_bytes, 0, l.max_path_len, l.max_depth,
                        l.max_ratio, l.ratio_grace_bytes},
                .what = "package",
        };
        struct lg_extract_info xi;
        r = lg_extract_tree(fd, pfd, pfd, base, &o, &xi, err);
        if (r < 0 || !info)
                return r;
        *info = (struct lg_pkg_info){.n_files = xi.n_files, .n_dirs = xi.n_dirs, .n_symlinks = xi.n_symlinks,
                                     .total_bytes = xi.total_bytes};
        _cleanup_close_ int tfd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int q = tfd < 0 ? -errno : lg_pkg_list_dir(tfd, &info->top, &info->n_top);
        if (q < 0) {
                lg_pkg_info_free(info);
                return lg_error_set(err, q, "list `%s`", dest_dir);
        }
        return r;
}
