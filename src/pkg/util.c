/* Small helpers of the pkg module: the symlink target rule, the pieces of
 * error messages, temporary names and directory listings. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pkg/pkg-internal.h"

int lg_pkg_tmp_name(char *buf, size_t cap, const char *what) {
        char hex[17];
        int r = lg_random_hex(hex, 8);
        if (r < 0)
                return r;
        if ((size_t) snprintf(buf, cap, LG_PKG_TMP_PREFIX "%s%s", what, hex) >= cap)
                return -ENAMETOOLONG;
        return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *) a, *(char *const *) b); }

void lg_pkg_names_free(char **v) {
        if (!v)
                return;
        for (size_t i = 0; v[i]; i++)
                free(v[i]);
        free(v);
}

int lg_pkg_list_dir(int dfd, char ***ret, size_t *ret_n) {
        int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -ENOMEM;
        }
        char **v = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        int r = 0;
        errno = 0;
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if (n + 1 >= cap) { /* room for the NULL */
                        size_t ncap = cap ? cap * 2 : 32;
                        char **nv = realloc(v, ncap * sizeof(*v));
                        if (!nv) {
                                r = -ENOMEM;
                                break;
                        }
                        v = nv;
                        cap = ncap;
                }
                if (!(v[n] = strdup(de->d_name))) {
                        r = -ENOMEM;
                        break;
                }
                v[++n] = NULL;
                errno = 0;
        }
        if (r == 0 && errno != 0)
                r = -errno;
        closedir(d);
        if (r == 0 && !v && !(v = calloc(1, sizeof(*v))))
                r = -ENOMEM;
        if (r < 0) {
                lg_pkg_names_free(v);
                return r;
        }
        qsort(v, n, sizeof(*v), cmp_str);
        *ret = v;
        *ret_n = n;
        return 0;
}
