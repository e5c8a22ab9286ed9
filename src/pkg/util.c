/* Small helpers of the pkg module: the symlink target rule, the pieces of
 * error messages, temporary names and directory listings. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pkg/pkg-internal.h"

const char *lg_pkg_symlink_unsafe(size_t parent_depth, const char *target) {
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

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
        unsigned char c = s[0];
        size_t len;
        unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
        if (c >= 0xc2 && c <= 0xdf)
                len = 2;
        else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                if (c == 0xe0)
                        lo = 0xa0; /* overlong */
                else if (c == 0xed)
                        hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                if (c == 0xf0)
                        lo = 0x90;
                else if (c == 0xf4)
                        hi = 0x8f;
        } else
                return 0;
        if (len > n || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (s[i] < 0x80 || s[i] > 0xbf)
                        return 0;
        return len;
}

void lg_pkg_printable(const char *s, char *buf, size_t cap) {
        if (cap == 0)
                return;
        if (!s)
                s = "(no name)";
        const unsigned char *p = (const unsigned char *) s;
        size_t len = strlen(s), n = 0, i = 0;
        size_t room = len > cap - 1 && cap > 4 ? cap - 4 : cap - 1; /* keep 3 for "..." */
        while (i < len) {
                size_t l = p[i] < 0x80 ? 1 : utf8_len(p + i, len - i);
                size_t out = l ? l : 1;
                if (n + out > room)
                        break;
                if (l == 1)
                        buf[n] = (p[i] < 0x20 || p[i] == 0x7f || p[i] == '`') ? '?' : (char) p[i];
                else if (l > 1)
                        memcpy(buf + n, p + i, l);
                else
                        buf[n] = '?'; /* not UTF-8: messages end up in JSON */
                n += out;
                i += l ? l : 1;
        }
        if (i < len)
                for (size_t k = 0; k < 3 && n < cap - 1; k++)
                        buf[n++] = '.';
        buf[n] = '\0';
}

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
