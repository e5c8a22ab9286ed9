/* Shared helpers for every Legion module: cleanup attributes, ownership
 * transfer, the one-line error struct, and small file utilities.
 *
 * Conventions (see DEVELOPERS.md): functions return >= 0 on success and a
 * negative errno on failure; where the caller needs context they also fill a
 * struct lg_error with a single-line message. Library code never logs. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void lg_freep(void *p) { free(*(void **) p); }
static inline void lg_closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
static inline void lg_fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}

#define _cleanup_free_ _cleanup_(lg_freep)
#define _cleanup_close_ _cleanup_(lg_closep)
#define _cleanup_fclose_ _cleanup_(lg_fclosep)

/* Hand ownership out of a cleanup-scoped variable. */
#define TAKE_PTR(p)                              \
        ({                                       \
                __typeof__(p) _tp_ = (p);        \
                (p) = NULL;                      \
                _tp_;                            \
        })
#define TAKE_FD(fd)                              \
        ({                                       \
                int _tf_ = (fd);                 \
                (fd) = -1;                       \
                _tf_;                            \
        })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* One-line error with the errno that caused it. */
struct lg_error {
        int code; /* positive errno */
        char msg[512];
};

/* Fill err (may be NULL) and return -errnum, so callers can write
 * `return lg_error_set(err, errno, "open `%s`", path);`. errnum <= 0 is
 * treated as EIO so a failure never turns into success by accident. */
int lg_error_set(struct lg_error *err, int errnum, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* The same without the errno text: for errors whose message says it all
 * ("app `x` not found"). */
int lg_error_setm(struct lg_error *err, int errnum, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Prefix an existing message with more context: "ctx: old message". */
int lg_error_wrap(struct lg_error *err, int ret, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Write a whole string to dirfd/path (O_WRONLY|O_CLOEXEC, plus
 * O_CREAT|O_TRUNC when create is true). Returns 0 or -errno. */
int lg_write_file_at(int dirfd, const char *path, const char *data, bool create);
/* Room for one more item in a growing array: *v holds n items of size
 * bytes in room for *cap; when full, the room doubles (first: first).
 * 0, or -ENOMEM with *v and *cap as they were. */
int lg_grow(void **v, size_t *cap, size_t n, size_t size, size_t first);

/* A list of string copies being collected (lists of layer dirs or image
 * ids gathered from several owners). An add that fails for memory marks
 * the list failed (status -ENOMEM) and later adds do nothing, so callers
 * add freely and check once, at the take. Zero-initialized = empty. */
struct lg_strlist {
        char **v;
        size_t n, cap;
        int status;
};
void lg_strlist_add(struct lg_strlist *l, const char *s);
/* Hand the strings over (*ret, *n: the caller's, free each and the
 * array) and empty l; or, when an add failed, free them and return
 * -ENOMEM. */
int lg_strlist_take(struct lg_strlist *l, char ***ret, size_t *n);
void lg_strlist_clear(struct lg_strlist *l);

/* A copy of a NULL-terminated string array, itself NULL-terminated; NULL
 * for NULL or an empty one, and when out of memory (tell by v[0]).
 * Freed with lg_strv_free (NULL is fine). */
char **lg_strv_dup(const char *const *v);
void lg_strv_free(char **v);

/* Read at most cap-1 bytes of dirfd/path into buf, NUL-terminated, with a
 * trailing newline stripped. Returns the length or -errno. */
ssize_t lg_read_file_at(int dirfd, const char *path, char *buf, size_t cap);

/* write(2)/read(2) the whole buffer, retrying on EINTR and short counts. */
int lg_write_all(int fd, const void *buf, size_t len);
ssize_t lg_read_all(int fd, void *buf, size_t len);
/* pwrite(2) the whole buffer at off. Returns 0 or -errno. */
int lg_pwrite_all(int fd, const void *buf, size_t len, off_t off);
/* pread(2) until len bytes or EOF; returns the count or -errno. */
ssize_t lg_pread_all(int fd, void *buf, size_t len, off_t off);

/* Close every fd from 3 up except those in keep (for a freshly forked child,
 * so that it holds no copy of the parent's sockets, listeners included).
 * System calls only: safe between fork and exec. */
void lg_close_all_except(const int *keep, size_t n);

/* mkdir -p with the given mode; existing directories are fine. */
int lg_mkdir_p(const char *path, mode_t mode);

/* Remove a directory tree without following symlinks or crossing mounts. */
int lg_rm_rf(const char *path);

/* Parse "64M", "1G", "512k", "1048576", "256Mi" into bytes. */
int lg_parse_size(const char *s, uint64_t *ret);

/* "100 MiB" when size is a whole number of KiB/MiB/GiB, else "N bytes"
 * (for messages about limits). */
void lg_fmt_size(uint64_t size, char *buf, size_t cap);

/* Copy of s fit for a one-line message that may end up in JSON: control
 * bytes, backquotes and bytes that are not UTF-8 become '?', and a long
 * string is cut with "...". NULL is "(no name)". */
void lg_printable(const char *s, char *buf, size_t cap);
/* The same for a whole message made of such names in backquotes ("image
 * `x` is not in the store"): its backquotes stay. */
void lg_printable_message(const char *s, char *buf, size_t cap);

/* Make buf[0..n) valid UTF-8 in place (for text that goes into JSON, such
 * as a log's bytes): each byte that does not begin a valid sequence becomes
 * '?'. Returns the length of the complete part: a sequence cut short by
 * the end of buf is left out (its bytes come again with the next read),
 * unless at_end, when it becomes '?' too. */
size_t lg_utf8_fix(char *buf, size_t n, bool at_end);

/* Parse a whole decimal number in [lo, hi]: an optional '-' and digits
 * only (strtoll alone takes blanks, '+' and trailing junk). -EINVAL when
 * malformed, -ERANGE outside the range. */
int lg_parse_int(const char *s, long long lo, long long hi, long long *ret);

/* Parse a decimal amount into thousandths: "2" and "0.5" (rounded half up
 * to a thousandth), or "500m" (thousandths as a whole number), as CPUs are
 * written. Plain digits and one '.' only: no sign, blank, exponent, hex,
 * "nan" or "inf", which strtod would take. -EINVAL when malformed, -ERANGE
 * when zero or above max. */
int lg_parse_millis(const char *s, uint64_t max, uint64_t *ret);

/* Monotonic clock in nanoseconds. */
uint64_t lg_now_ns(void);

/* Fill buf with 2*n lowercase hex characters of random data plus NUL. */
int lg_random_hex(char *buf, size_t n);
