/* The chunk store (chunkstore.h): verified, atomic puts, verifying gets
 * that drop damaged chunks, GC against the tables still in use. */
#include "lazy/chunkstore.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cas/cas.h"

#define TMP_PREFIX ".chunk-"
#define TMP_MAX_AGE_S 3600

struct lg_chunk_store {
        char *dir;
        int dfd;        /* dir */
        int chunks_dfd; /* dir/chunks */
        int tmp_dfd;    /* dir/tmp */
};

/* "<hh>/<64 hex>" relative to chunks/. */
struct rel {
        char s[2 + 1 + LG_DIGEST_HEX_LEN + 1];
};

static void rel_of(const uint8_t sha[32], struct rel *r) {
        struct lg_digest d;
        lg_digest_from_bytes(sha, &d);
        snprintf(r->s, sizeof(r->s), "%.2s/%s", d.hex, d.hex);
}

static int open_dir_at(int dfd, const char *name, mode_t mode) {
        if (mkdirat(dfd, name, mode) < 0 && errno != EEXIST)
                return -errno;
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        return fd < 0 ? -errno : fd;
}

int lg_chunk_store_open(const char *dir, lg_chunk_store **ret, struct lg_error *err) {
        int r = lg_mkdir_p(dir, 0700);
        if (r < 0)
                return lg_error_set(err, -r, "create chunk store `%s`", dir);
        lg_chunk_store *s = calloc(1, sizeof(*s));
        if (!s || !(s->dir = strdup(dir))) {
                free(s);
                return lg_error_setm(err, ENOMEM, "open chunk store: out of memory");
        }
        s->chunks_dfd = s->tmp_dfd = -1;
        s->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dfd < 0) {
                r = lg_error_set(err, errno, "open chunk store `%s`", dir);
                goto fail;
        }
        if ((s->chunks_dfd = open_dir_at(s->dfd, "chunks", 0755)) < 0) {
                r = lg_error_set(err, -s->chunks_dfd, "open `%s/chunks`", dir);
                goto fail;
        }
        if ((s->tmp_dfd = open_dir_at(s->dfd, "tmp", 0700)) < 0) {
                r = lg_error_set(err, -s->tmp_dfd, "open `%s/tmp`", dir);
                goto fail;
        }
        *ret = s;
        return 0;
fail:
        lg_chunk_store_close(s);
        return r;
}

void lg_chunk_store_close(lg_chunk_store *s) {
        if (!s)
                return;
        if (s->tmp_dfd >= 0)
                close(s->tmp_dfd);
        if (s->chunks_dfd >= 0)
                close(s->chunks_dfd);
        if (s->dfd >= 0)
                close(s->dfd);
        free(s->dir);
        free(s);
}

int lg_chunk_store_path(const lg_chunk_store *s, const uint8_t sha[32], char *buf, size_t cap) {
        struct rel rel;
        rel_of(sha, &rel);
        if ((size_t) snprintf(buf, cap, "%s/chunks/%s", s->dir, rel.s) >= cap)
                return -ENAMETOOLONG;
        return 0;
}

int lg_chunk_store_has(lg_chunk_store *s, const uint8_t sha[32]) {
        struct rel rel;
        rel_of(sha, &rel);
        struct stat st;
        return fstatat(s->chunks_dfd, rel.s, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* Remove a damaged chunk file, unless another writer replaced it since we
 * opened it (then its inode differs). */
static void drop_damaged(lg_chunk_store *s, const char *rel, const struct stat *opened) {
        struct stat st;
        if (fstatat(s->chunks_dfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == opened->st_ino &&
            st.st_dev == opened->st_dev)
                (void) unlinkat(s->chunks_dfd, rel, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
}

int lg_chunk_store_get(lg_chunk_store *s, const uint8_t sha[32], void *buf, size_t len, struct lg_error *err) {
        struct rel rel;
        rel_of(sha, &rel);
        const char *hex = rel.s + 3;
        _cleanup_close_ int fd = openat(s->chunks_dfd, rel.s, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                if (errno == ENOENT)
                        return lg_error_setm(err, ENOENT, "chunk %s is not in the store", hex);
                if (errno == ELOOP) /* a symlink is not ours: damage */
                        return lg_error_setm(err, EBADMSG, "chunk %s is a symlink", hex);
                return lg_error_set(err, errno, "open chunk %s", hex);
        }
        struct stat st;
        if (fstat(fd, &st) < 0)
                return lg_error_set(err, errno, "stat chunk %s", hex);
        if (!S_ISREG(st.st_mode)) {
                drop_damaged(s, rel.s, &st);
                return lg_error_setm(err, EBADMSG, "chunk %s is not a regular file (removed)", hex);
        }
        uint8_t md[32];
        if ((uint64_t) st.st_size != len) {
                /* Either damage (a truncated file) or the caller asked for
                 * the wrong length: the stored bytes decide. */
                if (st.st_size > LG_CHUNK_SIZE_MAX) {
                        drop_damaged(s, rel.s, &st);
                        return lg_error_setm(err, EBADMSG, "chunk %s is damaged (%" PRIu64 " bytes; removed)", hex,
                                             (uint64_t) st.st_size);
                }
                _cleanup_free_ uint8_t *tmp = malloc(st.st_size ? (size_t) st.st_size : 1);
                if (!tmp)
                        return lg_error_setm(err, ENOMEM, "read chunk %s: out of memory", hex);
                ssize_t got = lg_pread_all(fd, tmp, (size_t) st.st_size, 0);
                if (got < 0)
                        return lg_error_set(err, (int) -got, "read chunk %s", hex);
                if (lg_sha256(tmp, (size_t) got, md) < 0)
                        return lg_error_setm(err, EIO, "sha256 failed");
                if (got == st.st_size && !memcmp(md, sha, 32))
                        return lg_error_setm(err, EINVAL, "chunk %s is %" PRIu64 " bytes, not %zu", hex,
                                             (uint64_t) st.st_size, len);
                drop_damaged(s, rel.s, &st);
                return lg_error_setm(err, EBADMSG, "chunk %s is damaged (%" PRIu64 " bytes, wrong sha256; removed)",
                                     hex, (uint64_t) st.st_size);
        }
        ssize_t got = lg_pread_all(fd, buf, len, 0);
        if (got < 0)
                return lg_error_set(err, (int) -got, "read chunk %s", hex);
        if (lg_sha256(buf, (size_t) got, md) < 0)
                return lg_error_setm(err, EIO, "sha256 failed");
        if ((size_t) got != len || memcmp(md, sha, 32) != 0) {
                drop_damaged(s, rel.s, &st);
                return lg_error_setm(err, EBADMSG, "chunk %s is damaged (wrong sha256; removed)", hex);
        }
        return 0;
}

int lg_chunk_store_put(lg_chunk_store *s, const uint8_t sha[32], const void *buf, size_t len, struct lg_error *err) {
        struct rel rel;
        rel_of(sha, &rel);
        const char *hex = rel.s + 3;
        uint8_t md[32];
        if (lg_sha256(buf, len, md) < 0)
                return lg_error_setm(err, EIO, "sha256 failed");
        if (memcmp(md, sha, 32) != 0) {
                struct lg_digest got;
                lg_digest_from_bytes(md, &got);
                return lg_error_setm(err, EBADMSG, "chunk bytes do not match: expected sha256 %s, got %s", hex,
                                     got.hex);
        }
        if (lg_chunk_store_has(s, sha))
                return 1;
        char hh[3] = {hex[0], hex[1], 0};
        if (mkdirat(s->chunks_dfd, hh, 0755) < 0 && errno != EEXIST)
                return lg_error_set(err, errno, "create `%s/chunks/%s`", s->dir, hh);
        char tmp[sizeof(TMP_PREFIX) + 32], rnd[33];
        int r = lg_random_hex(rnd, 16);
        if (r < 0)
                return lg_error_set(err, -r, "put chunk %s", hex);
        snprintf(tmp, sizeof(tmp), TMP_PREFIX "%s", rnd);
        _cleanup_close_ int fd = openat(s->tmp_dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
        if (fd < 0)
                return lg_error_set(err, errno, "create `%s/tmp/%s`", s->dir, tmp);
        if ((r = lg_write_all(fd, buf, len)) < 0) {
                (void) unlinkat(s->tmp_dfd, tmp, 0);
                return lg_error_set(err, -r, "write chunk %s", hex);
        }
        if (renameat2(s->tmp_dfd, tmp, s->chunks_dfd, rel.s, RENAME_NOREPLACE) < 0) {
                r = errno;
                (void) unlinkat(s->tmp_dfd, tmp, 0);
                if (r == EEXIST) /* another writer was faster: same bytes */
                        return 1;
                return lg_error_set(err, r, "store chunk %s", hex);
        }
        return 0;
}

int lg_chunk_store_sync(lg_chunk_store *s, struct lg_error *err) {
        if (syncfs(s->dfd) < 0)
                return lg_error_set(err, errno, "sync chunk store `%s`", s->dir);
        return 0;
}

static int cmp_sha(const void *a, const void *b) { return memcmp(a, b, 32); }

struct sha {
        uint8_t b[32];
};

static int gc_tmp(lg_chunk_store *s) {
        int fd = openat(s->tmp_dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -errno;
        }
        time_t now = time(NULL);
        struct dirent *de;
        struct stat st;
        while ((de = readdir(d)))
                if (!strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) &&
                    fstatat(s->tmp_dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                    st.st_mtime + TMP_MAX_AGE_S < now)
                        (void) unlinkat(s->tmp_dfd, de->d_name, 0);
        closedir(d);
        return 0;
}

/* GC of one chunks/<hh> directory. */
static int gc_dir(lg_chunk_store *s, const char *hh, const struct sha *keep, size_t n, uint64_t *removed,
                  uint64_t *bytes, struct lg_error *err) {
        int fd = openat(s->chunks_dfd, hh, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return lg_error_set(err, errno, "open `%s/chunks/%s`", s->dir, hh);
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return lg_error_set(err, errno, "open `%s/chunks/%s`", s->dir, hh);
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                struct sha sha;
                /* Names that are not chunks are not ours to remove. */
                if (lg_digest_to_bytes(de->d_name, sha.b) < 0 || strncmp(de->d_name, hh, 2))
                        continue;
                if (n && bsearch(&sha, keep, n, sizeof(*keep), cmp_sha))
                        continue;
                struct stat st;
                if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (unlinkat(fd, de->d_name, 0) < 0) {
                        if (errno == ENOENT)
                                continue;
                        r = lg_error_set(err, errno, "remove chunk %s", de->d_name);
                        break;
                }
                (*removed)++;
                *bytes += (uint64_t) st.st_size;
        }
        closedir(d);
        return r;
}

int lg_chunk_store_gc(lg_chunk_store *s, lg_chunk_table *const *keep, size_t n_keep, uint64_t *removed,
                      uint64_t *bytes, struct lg_error *err) {
        uint64_t rm = 0, b = 0;
        size_t total = 0;
        for (size_t i = 0; i < n_keep; i++)
                total += lg_chunk_table_count(keep[i]);
        _cleanup_free_ struct sha *set = malloc((total ? total : 1) * sizeof(*set));
        if (!set)
                return lg_error_setm(err, ENOMEM, "chunk store GC: out of memory");
        size_t n = 0;
        for (size_t i = 0; i < n_keep; i++)
                for (size_t j = 0; j < lg_chunk_table_count(keep[i]); j++)
                        memcpy(set[n++].b, lg_chunk_table_at(keep[i], j)->sha256, 32);
        qsort(set, n, sizeof(*set), cmp_sha);

        int fd = openat(s->chunks_dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return lg_error_set(err, errno, "open `%s/chunks`", s->dir);
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return lg_error_set(err, errno, "open `%s/chunks`", s->dir);
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                const char *e = de->d_name;
                if (strlen(e) != 2 || !strchr("0123456789abcdef", e[0]) || !strchr("0123456789abcdef", e[1]) ||
                    !e[0] || !e[1])
                        continue;
                if ((r = gc_dir(s, e, set, n, &rm, &b, err)) < 0)
                        break;
        }
        closedir(d);
        if (r >= 0)
                (void) gc_tmp(s);
        if (removed)
                *removed = rm;
        if (bytes)
                *bytes = b;
        return r;
}

int lg_chunk_store_local(lg_chunk_store *s, const lg_chunk_table *t, uint64_t *chunks, uint64_t *bytes) {
        uint64_t c = 0, b = 0;
        for (size_t i = 0; i < lg_chunk_table_count(t); i++) {
                const struct lg_chunk *ch = lg_chunk_table_at(t, i);
                if (lg_chunk_store_has(s, ch->sha256)) {
                        c++;
                        b += ch->length;
                }
        }
        if (chunks)
                *chunks = c;
        if (bytes)
                *bytes = b;
        return 0;
}
