/* Implementation of the shared helpers declared in util.h. */
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>

/* The message, with ": strerror" after it when with_errno. */
static int error_vset(struct lg_error *err, int errnum, bool with_errno, const char *fmt, va_list ap) {
        if (errnum < 0)
                errnum = -errnum;
        if (errnum == 0)
                errnum = EIO;
        if (err) {
                int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
                if (with_errno && n >= 0 && (size_t) n < sizeof(err->msg))
                        snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(errnum));
                err->code = errnum;
        }
        return -errnum;
}

int lg_error_set(struct lg_error *err, int errnum, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = error_vset(err, errnum, true, fmt, ap);
        va_end(ap);
        return r;
}

int lg_error_setm(struct lg_error *err, int errnum, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = error_vset(err, errnum, false, fmt, ap);
        va_end(ap);
        return r;
}

int lg_error_wrap(struct lg_error *err, int ret, const char *fmt, ...) {
        if (ret >= 0)
                ret = -EIO;
        if (err) {
                char prefix[256], old[sizeof(err->msg)];
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(prefix, sizeof(prefix), fmt, ap);
                va_end(ap);
                memcpy(old, err->msg, sizeof(old));
                if (err->code == 0) {
                        err->code = -ret;
                        snprintf(old, sizeof(old), "%s", strerror(-ret));
                }
                snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old);
        }
        return ret;
}

/* write(2) or, with off >= 0, pwrite(2) until the whole buffer is out. */
static int write_full(int fd, const void *buf, size_t len, off_t off) {
        const char *p = buf;
        while (len > 0) {
                ssize_t n = off < 0 ? write(fd, p, len) : pwrite(fd, p, len, off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t) n;
                if (off >= 0)
                        off += n;
        }
        return 0;
}

int lg_write_all(int fd, const void *buf, size_t len) { return write_full(fd, buf, len, -1); }

int lg_pwrite_all(int fd, const void *buf, size_t len, off_t off) {
        return off < 0 ? -EINVAL : write_full(fd, buf, len, off);
}

/* read(2) or, with off >= 0, pread(2) until len bytes or EOF. */
static ssize_t read_full(int fd, void *buf, size_t len, off_t off) {
        char *p = buf;
        size_t got = 0;
        while (got < len) {
                ssize_t n = off < 0 ? read(fd, p + got, len - got)
                                    : pread(fd, p + got, len - got, off + (off_t) got);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                got += (size_t) n;
        }
        return (ssize_t) got;
}

ssize_t lg_read_all(int fd, void *buf, size_t len) { return read_full(fd, buf, len, -1); }

ssize_t lg_pread_all(int fd, void *buf, size_t len, off_t off) {
        return off < 0 ? -EINVAL : read_full(fd, buf, len, off);
}

int lg_grow(void **v, size_t *cap, size_t n, size_t size, size_t first) {
        if (n < *cap)
                return 0;
        size_t c = *cap ? *cap * 2 : first;
        if (c < *cap || c > SIZE_MAX / size)
                return -ENOMEM;
        void *p = realloc(*v, c * size);
        if (!p)
                return -ENOMEM;
        *v = p;
        *cap = c;
        return 0;
}

void lg_strlist_add(struct lg_strlist *l, const char *s) {
        if (l->status < 0)
                return;
        if (lg_grow((void **) &l->v, &l->cap, l->n, sizeof(char *), 16) < 0 || !(l->v[l->n] = strdup(s)))
                l->status = -ENOMEM;
        else
                l->n++;
}

void lg_strlist_clear(struct lg_strlist *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->v[i]);
        free(l->v);
        *l = (struct lg_strlist){0};
}

int lg_strlist_take(struct lg_strlist *l, char ***ret, size_t *n) {
        if (l->status < 0) {
                lg_strlist_clear(l);
                return -ENOMEM;
        }
        *ret = l->v;
        *n = l->n;
        *l = (struct lg_strlist){0};
        return 0;
}

int lg_write_file_at(int dirfd, const char *path, const char *data, bool create) {
        int flags = O_WRONLY | O_CLOEXEC | O_NOCTTY;
        if (create)
                flags |= O_CREAT | O_TRUNC;
        _cleanup_close_ int fd = openat(dirfd, path, flags, 0644);
        if (fd < 0)
                return -errno;
        return lg_write_all(fd, data, strlen(data));
}

ssize_t lg_read_file_at(int dirfd, const char *path, char *buf, size_t cap) {
        if (cap == 0)
                return -EINVAL;
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        ssize_t n = lg_read_all(fd, buf, cap - 1);
        if (n < 0)
                return n;
        buf[n] = '\0';
        if (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        return n;
}

void lg_close_all_except(const int *keep, size_t n) {
        /* Ascending walk over the kept fds, closing the gaps between them. */
        unsigned from = 3;
        for (;;) {
                unsigned next = ~0U;
                for (size_t i = 0; i < n; i++)
                        if (keep[i] >= (int) from && (unsigned) keep[i] < next)
                                next = (unsigned) keep[i];
                if (next == ~0U) {
                        syscall(SYS_close_range, from, ~0U, 0);
                        return;
                }
                if (next > from)
                        syscall(SYS_close_range, from, next - 1, 0);
                from = next + 1;
        }
}

int lg_mkdir_p(const char *path, mode_t mode) {
        char buf[4096];
        size_t len = strlen(path);
        if (len == 0 || len >= sizeof(buf))
                return -ENAMETOOLONG;
        memcpy(buf, path, len + 1);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int rm_rf_at(int parent_fd, const char *name, dev_t dev) {
        struct stat st;
        if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
                return unlinkat(parent_fd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
        if (st.st_dev != dev)
                return -EBUSY; /* a mount point: never delete through it */
        int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                int r = -errno;
                close(fd);
                return r;
        }
        int ret = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                int r = rm_rf_at(dirfd(d), de->d_name, dev);
                if (r < 0 && ret == 0)
                        ret = r;
        }
        closedir(d);
        if (unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && ret == 0)
                ret = -errno;
        return ret;
}

int lg_rm_rf(const char *path) {
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        return rm_rf_at(AT_FDCWD, path, st.st_dev);
}

int lg_parse_size(const char *s, uint64_t *ret) {
        /* strtoull would accept leading blanks and signs; sizes are digits. */
        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *s == '-')
                return -EINVAL;
        uint64_t mult = 1;
        switch (*end) {
        case '\0': break;
        case 'k': case 'K': mult = 1ULL << 10; end++; break;
        case 'm': case 'M': mult = 1ULL << 20; end++; break;
        case 'g': case 'G': mult = 1ULL << 30; end++; break;
        case 't': case 'T': mult = 1ULL << 40; end++; break;
        default: return -EINVAL;
        }
        if (*end == 'i')
                end++;
        if (*end == 'B' || *end == 'b')
                end++;
        if (*end != '\0')
                return -EINVAL;
        if (v > UINT64_MAX / mult)
                return -ERANGE;
        *ret = v * mult;
        return 0;
}

void lg_fmt_size(uint64_t size, char *buf, size_t cap) {
        static const char *const units[] = {"GiB", "MiB", "KiB"};
        static const unsigned shifts[] = {30, 20, 10};
        for (size_t i = 0; i < 3; i++) {
                uint64_t unit = 1ull << shifts[i];
                if (size >= unit && size % unit == 0) {
                        snprintf(buf, cap, "%" PRIu64 " %s", size / unit, units[i]);
                        return;
                }
        }
        snprintf(buf, cap, "%" PRIu64 " bytes", size);
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

size_t lg_utf8_fix(char *buf, size_t n, bool at_end) {
        unsigned char *p = (unsigned char *) buf;
        size_t i = 0;
        while (i < n) {
                if (p[i] < 0x80) {
                        i++;
                        continue;
                }
                size_t l = utf8_len(p + i, n - i);
                if (l) {
                        i += l;
                        continue;
                }
                /* A lead byte whose sequence runs past the end, with every
                 * byte there a continuation byte so far: the rest may come. */
                size_t want = p[i] >= 0xf0 ? 4 : p[i] >= 0xe0 ? 3 : 2;
                bool cut = !at_end && p[i] >= 0xc2 && p[i] <= 0xf4 && n - i < want;
                for (size_t k = i + 1; cut && k < n; k++)
                        cut = p[k] >= 0x80 && p[k] <= 0xbf;
                if (cut)
                        return i;
                p[i++] = '?';
        }
        return n;
}

static void printable(const char *s, char *buf, size_t cap, bool backquotes) {
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
                        buf[n] = (p[i] < 0x20 || p[i] == 0x7f || (p[i] == '`' && !backquotes)) ? '?' : (char) p[i];
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

void lg_printable(const char *s, char *buf, size_t cap) { printable(s, buf, cap, false); }

void lg_printable_message(const char *s, char *buf, size_t cap) { printable(s, buf, cap, true); }

int lg_parse_int(const char *s, long long lo, long long hi, long long *ret) {
        if (!s)
                return -EINVAL;
        const char *digits = s + (*s == '-');
        if (*digits < '0' || *digits > '9')
                return -EINVAL;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (*end)
                return -EINVAL;
        if (errno == ERANGE || v < lo || v > hi)
                return -ERANGE;
        *ret = v;
        return 0;
}

int lg_parse_millis(const char *s, uint64_t max, uint64_t *ret) {
        if (!s)
                return -EINVAL;
        uint64_t whole = 0, frac = 0;
        size_t nwhole = 0, nfrac = 0;
        const char *p = s;
        for (; *p >= '0' && *p <= '9'; p++, nwhole++) {
                if (whole > (UINT64_MAX - 9) / 10000)
                        return -ERANGE;
                whole = whole * 10 + (uint64_t) (*p - '0');
        }
        bool point = *p == '.';
        if (point)
                for (p++; *p >= '0' && *p <= '9'; p++, nfrac++)
                        if (nfrac < 4)
                                frac = frac * 10 + (uint64_t) (*p - '0');
        bool millis = *p == 'm' && !point;
        if (millis)
                p++;
        if (*p || nwhole + nfrac == 0)
                return -EINVAL;
        uint64_t v;
        if (millis)
                v = whole;
        else {
                /* Four digits of the fraction, rounded half up to three. */
                for (size_t i = nfrac; i < 4; i++)
                        frac *= 10;
                v = whole * 1000 + (frac + 5) / 10;
        }
        if (v == 0 || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

uint64_t lg_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

int lg_random_hex(char *buf, size_t n) {
        unsigned char raw[64];
        if (n > sizeof(raw))
                return -EINVAL;
        if (getrandom(raw, n, 0) != (ssize_t) n)
                return -errno;
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                buf[2 * i] = hex[raw[i] >> 4];
                buf[2 * i + 1] = hex[raw[i] & 15];
        }
        buf[2 * n] = '\0';
        return 0;
}

char **lg_strv_dup(const char *const *v) {
        if (!v || !v[0])
                return NULL;
        size_t n = 0;
        while (v[n])
                n++;
        char **c = calloc(n + 1, sizeof(char *));
        for (size_t i = 0; c && i < n; i++)
                if (!(c[i] = strdup(v[i]))) {
                        lg_strv_free(c);
                        return NULL;
                }
        return c;
}

void lg_strv_free(char **v) {
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}
