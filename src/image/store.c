/* The image store on disk (layout in image.h, docs/images.md): opening and
 * cleaning it, content-addressed blobs written through a verifying writer,
 * and the set of digests in flight that GC must not take. The name index
 * and the lookups are in index.c. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "image/image-internal.h"

#define DEFAULT_BLOB (8ull << 30)
#define DEFAULT_JSON (4ull << 20)
#define DEFAULT_LAYER (16ull << 30)
#define DEFAULT_LAYER_ENTRIES 1000000ull
#define DEFAULT_ARCHIVE_ENTRIES 100000ull
#define DEFAULT_ARCHIVE_BYTES (64ull << 30)
#define DEFAULT_PATH_LEN 4096u
#define DEFAULT_DEPTH 256u
#define DEFAULT_MAX_LAYERS 256u

void lg_image_store_set_limits(lg_image_store *st, const struct lg_image_limits *in) {
        struct lg_image_limits l = in ? *in : (struct lg_image_limits){0};
        if (!l.blob_bytes)
                l.blob_bytes = DEFAULT_BLOB;
        if (!l.json_bytes)
                l.json_bytes = DEFAULT_JSON;
        if (!l.layer_bytes)
                l.layer_bytes = DEFAULT_LAYER;
        if (!l.layer_entries)
                l.layer_entries = DEFAULT_LAYER_ENTRIES;
        if (!l.archive_entries)
                l.archive_entries = DEFAULT_ARCHIVE_ENTRIES;
        if (!l.archive_bytes)
                l.archive_bytes = DEFAULT_ARCHIVE_BYTES;
        if (!l.path_len || l.path_len > PATH_MAX - 1)
                l.path_len = DEFAULT_PATH_LEN < PATH_MAX - 1 ? DEFAULT_PATH_LEN : PATH_MAX - 1;
        if (!l.depth)
                l.depth = DEFAULT_DEPTH;
        if (!l.max_layers)
                l.max_layers = DEFAULT_MAX_LAYERS;
        pthread_mutex_lock(&st->mu);
        st->lim = l;
        /* What was loaded under other limits might not load under these. */
        lg_image_index_cache_free(TAKE_PTR(st->cache));
        pthread_mutex_unlock(&st->mu);
}

/* ---- small helpers ------------------------------------------------------ */

bool lg_image_is_hex(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

int lg_image_digest_hex(const char *digest, char hex[65], const char *what, struct lg_error *err) {
        char shown[100];
        lg_image_printable(digest, shown, sizeof(shown));
        if (!digest || !*digest)
                return lg_error_setm(err, EINVAL, "%s: no digest", what);
        const char *colon = strchr(digest, ':');
        if (!colon)
                return lg_error_setm(err, EINVAL, "%s: malformed digest `%s`", what, shown);
        if ((size_t) (colon - digest) != 6 || strncmp(digest, "sha256", 6) != 0)
                return lg_error_setm(err, ENOTSUP, "%s: digest algorithm of `%s` is not supported (only sha256)",
                                     what, shown);
        if (strlen(colon + 1) != 64 || !lg_image_is_hex(colon + 1, 64))
                return lg_error_setm(err, EINVAL, "%s: malformed digest `%s`", what, shown);
        memcpy(hex, colon + 1, 65);
        return 0;
}

void lg_image_printable(const char *s, char *buf, size_t cap) {
        if (!cap)
                return;
        if (!s)
                s = "(none)";
        size_t n = 0, i = 0, len = strlen(s);
        size_t room = len > cap - 1 && cap > 4 ? cap - 4 : cap - 1;
        for (; i < len && n < room; i++) {
                unsigned char c = (unsigned char) s[i];
                /* Bytes beyond ASCII become '?': messages end up in JSON. */
                buf[n++] = c < 0x20 || c >= 0x7f || c == '`' ? '?' : (char) c;
        }
        if (i < len)
                for (int k = 0; k < 3 && n < cap - 1; k++)
                        buf[n++] = '.';
        buf[n] = '\0';
}

int lg_image_tmp_name(char *buf, size_t cap, const char *what) {
        char hex[17];
        int r = lg_random_hex(hex, 8);
        if (r < 0)
                return r;
        if ((size_t) snprintf(buf, cap, "tmp/%s%s", what, hex) >= cap)
                return -ENAMETOOLONG;
        return 0;
}

static int rm_children(int fd, unsigned depth) {
        if (depth > 4096)
                return -ELOOP;
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

int lg_image_rm_tree_at(int dfd, const char *name) {
        if (unlinkat(dfd, name, 0) == 0)
                return 0;
        if (errno == ENOENT)
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

/* ---- open / close ------------------------------------------------------- */

static int mkdir_at(int dfd, const char *name, mode_t mode) {
        if (mkdirat(dfd, name, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* Empty tmp/ (only with the exclusive lock: nobody else is writing there). */
static int clean_tmp(int dirfd) {
        int fd = openat(dirfd, "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        return rm_children(fd, 0);
}

int lg_image_store_open(const char *dir, lg_image_store **ret, struct lg_error *err) {
        *ret = NULL;
        if (!dir || !*dir)
                return lg_error_setm(err, EINVAL, "no image store directory given");
        int r = lg_mkdir_p(dir, 0755);
        if (r < 0)
                return lg_error_set(err, r, "create `%s`", dir);
        lg_image_store *st = calloc(1, sizeof(*st));
        if (!st)
                return lg_error_set(err, ENOMEM, "allocate image store");
        st->dirfd = st->lockfd = -1;
        pthread_mutex_init(&st->mu, NULL);
        lg_image_store_set_limits(st, NULL);
        /* Absolute: layer dirs are handed to sandboxes as paths. */
        if (!(st->dir = realpath(dir, NULL))) {
                r = lg_error_set(err, errno, "resolve `%s`", dir);
                goto fail;
        }
        st->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (st->dirfd < 0) {
                r = lg_error_set(err, errno, "open `%s`", dir);
                goto fail;
        }
        st->lockfd = openat(st->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (st->lockfd < 0) {
                r = lg_error_set(err, errno, "open `%s/lock`", dir);
                goto fail;
        }
        static const char *const dirs[] = {"blobs", "blobs/sha256", "layers", "tmp"};
        for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
                r = mkdir_at(st->dirfd, dirs[i], !strcmp(dirs[i], "tmp") ? 0700 : 0755);
                if (r < 0) {
                        r = lg_error_set(err, r, "create `%s/%s`", dir, dirs[i]);
                        goto fail;
                }
        }
        /* Alone with the store (nobody holds it open): what a crash left in
         * tmp/ is garbage. Otherwise it may be someone's download. */
        if (flock(st->lockfd, LOCK_EX | LOCK_NB) == 0) {
                r = clean_tmp(st->dirfd);
                if (r < 0) {
                        r = lg_error_set(err, r, "clean `%s/tmp`", dir);
                        goto fail;
                }
        }
        while (flock(st->lockfd, LOCK_SH) < 0) {
                if (errno != EINTR) {
                        r = lg_error_set(err, errno, "lock `%s/lock`", dir);
                        goto fail;
                }
        }
        *ret = st;
        return 0;
fail:
        lg_image_store_close(st);
        return r;
}

void lg_image_store_close(lg_image_store *st) {
        if (!st)
                return;
        if (st->lockfd >= 0)
                close(st->lockfd); /* drops the flock */
        if (st->dirfd >= 0)
                close(st->dirfd);
        pthread_mutex_destroy(&st->mu);
        lg_image_index_cache_free(st->cache);
        free(st->pending);
        free(st->dir);
        free(st);
}

/* ---- pending digests ---------------------------------------------------- */

int lg_image_pending_add(lg_image_store *st, const char *hex) {
        pthread_mutex_lock(&st->mu);
        int r = 0;
        for (size_t i = 0; i < st->n_pending; i++)
                if (!strcmp(st->pending[i].hex, hex)) {
                        st->pending[i].n++;
                        goto out;
                }
        if (st->n_pending == st->cap_pending) {
                size_t ncap = st->cap_pending ? st->cap_pending * 2 : 16;
                struct lg_image_pending *np = realloc(st->pending, ncap * sizeof(*np));
                if (!np) {
                        r = -ENOMEM;
                        goto out;
                }
                st->pending = np;
                st->cap_pending = ncap;
        }
        snprintf(st->pending[st->n_pending].hex, 65, "%s", hex);
        st->pending[st->n_pending++].n = 1;
out:
        pthread_mutex_unlock(&st->mu);
        return r;
}

void lg_image_pending_drop(lg_image_store *st, const char *hex, bool all) {
        pthread_mutex_lock(&st->mu);
        for (size_t i = 0; i < st->n_pending; i++)
                if (!strcmp(st->pending[i].hex, hex)) {
                        if (all || --st->pending[i].n == 0)
                                st->pending[i] = st->pending[--st->n_pending];
                        break;
                }
        pthread_mutex_unlock(&st->mu);
}

/* ---- blobs -------------------------------------------------------------- */

struct lg_image_blob_writer {
        lg_image_store *st;
        int fd;
        char tmp[64];
        char expect[65]; /* "" = any */
        uint64_t size, max;
        EVP_MD_CTX *md;
};

static void blob_path(const char *hex, char *buf, size_t cap) { snprintf(buf, cap, "blobs/sha256/%s", hex); }

int lg_image_blob_stat(lg_image_store *st, const char *hex, uint64_t *size) {
        char p[96];
        blob_path(hex, p, sizeof(p));
        struct stat s;
        if (fstatat(st->dirfd, p, &s, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISREG(s.st_mode))
                return -EBADMSG;
        if (size)
                *size = (uint64_t) s.st_size;
        return 0;
}

int lg_image_blob_exists(lg_image_store *st, const char *digest) {
        char hex[65];
        if (!st || lg_image_digest_hex(digest, hex, "blob", NULL) < 0)
                return 0;
        if (lg_image_blob_stat(st, hex, NULL) < 0)
                return 0;
        /* The caller will rely on it: keep it from GC until committed. */
        (void) lg_image_pending_add(st, hex);
        return 1;
}

static int begin(lg_image_store *st, const char *hex, uint64_t max_bytes, struct lg_image_blob_writer **ret,
                 struct lg_error *err) {
        struct lg_image_blob_writer *w = calloc(1, sizeof(*w));
        if (!w)
                return lg_error_set(err, ENOMEM, "allocate blob writer");
        w->st = st;
        w->fd = -1;
        pthread_mutex_lock(&st->mu);
        w->max = max_bytes ? max_bytes : st->lim.blob_bytes;
        pthread_mutex_unlock(&st->mu);
        if (hex)
                memcpy(w->expect, hex, 65);
        int r = lg_image_tmp_name(w->tmp, sizeof(w->tmp), "blob-");
        if (r < 0) {
                free(w);
                return lg_error_set(err, r, "make a temporary name");
        }
        w->md = EVP_MD_CTX_new();
        if (!w->md || EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(w->md);
                free(w);
                return lg_error_setm(err, ENOMEM, "sha256 init failed");
        }
        w->fd = openat(st->dirfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (w->fd < 0) {
                r = lg_error_set(err, errno, "create `%s/%s`", st->dir, w->tmp);
                EVP_MD_CTX_free(w->md);
                free(w);
                return r;
        }
        *ret = w;
        return 0;
}

int lg_image_blob_begin(lg_image_store *st, const char *expect, uint64_t max_bytes,
                        struct lg_image_blob_writer **ret, struct lg_error *err) {
        *ret = NULL;
        char hex[65];
        int r = lg_image_digest_hex(expect, hex, "blob", err);
        if (r < 0)
                return r;
        r = lg_image_pending_add(st, hex);
        if (r < 0)
                return lg_error_set(err, r, "remember blob");
        if (lg_image_blob_stat(st, hex, NULL) == 0)
                return 1;
        return begin(st, hex, max_bytes, ret, err);
}

int lg_image_blob_begin_any(lg_image_store *st, uint64_t max_bytes, struct lg_image_blob_writer **ret,
                            struct lg_error *err) {
        *ret = NULL;
        return begin(st, NULL, max_bytes, ret, err);
}

int lg_image_blob_write(struct lg_image_blob_writer *w, const void *buf, size_t len, struct lg_error *err) {
        if (len > w->max || w->size > w->max - len) {
                char shown[80];
                lg_image_printable(w->expect[0] ? w->expect : "(new)", shown, sizeof(shown));
                return lg_error_setm(err, EFBIG, "blob sha256:%s is larger than the limit of %" PRIu64 " bytes",
                                     shown, w->max);
        }
        if (EVP_DigestUpdate(w->md, buf, len) != 1)
                return lg_error_setm(err, EIO, "sha256 update failed");
        int r = lg_write_all(w->fd, buf, len);
        if (r < 0)
                return lg_error_set(err, r, "write `%s/%s`", w->st->dir, w->tmp);
        w->size += len;
        return 0;
}

void lg_image_blob_abort(struct lg_image_blob_writer *w) {
        if (!w)
                return;
        if (w->fd >= 0)
                close(w->fd);
        if (w->tmp[0])
                unlinkat(w->st->dirfd, w->tmp, 0);
        EVP_MD_CTX_free(w->md);
        free(w);
}

/* Finish w: check the digest, make the file durable and read-only, move it
 * into place. 1 when the blob was there already. Frees w. */
static int finish(struct lg_image_blob_writer *w, char hex_out[65], struct lg_error *err) {
        lg_image_store *st = w->st;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        int r;
        if (EVP_DigestFinal_ex(w->md, md, &mdlen) != 1 || mdlen != 32) {
                r = lg_error_setm(err, EIO, "sha256 final failed");
                goto out;
        }
        char hex[65];
        for (unsigned i = 0; i < 32; i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
        if (w->expect[0] && strcmp(hex, w->expect) != 0) {
                r = lg_error_setm(err, EBADMSG, "blob digest mismatch: expected sha256:%s, got sha256:%s",
                                  w->expect, hex);
                goto out;
        }
        if (hex_out)
                memcpy(hex_out, hex, 65);
        if (fchmod(w->fd, 0444) < 0 || fsync(w->fd) < 0) {
                r = lg_error_set(err, errno, "sync `%s/%s`", st->dir, w->tmp);
                goto out;
        }
        if (!w->expect[0])
                (void) lg_image_pending_add(st, hex);
        char dst[96];
        blob_path(hex, dst, sizeof(dst));
        r = lg_rename_noreplace_at(st->dirfd, w->tmp, dst);
        if (r < 0) {
                r = lg_error_set(err, r, "move blob sha256:%s into place", hex);
                goto out;
        }
        if (r == 0) {
                w->tmp[0] = '\0';
                int dfd = openat(st->dirfd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd >= 0) {
                        (void) fsync(dfd);
                        close(dfd);
                }
        }
out:
        lg_image_blob_abort(w);
        return r;
}

int lg_image_blob_commit(struct lg_image_blob_writer *w, struct lg_error *err) {
        int r = finish(w, NULL, err);
        return r < 0 ? r : 0;
}

int lg_image_blob_commit_any(struct lg_image_blob_writer *w, char digest_out[LG_DIGEST_MAX],
                             struct lg_error *err) {
        char hex[65];
        int r = finish(w, hex, err);
        if (r >= 0)
                snprintf(digest_out, LG_DIGEST_MAX, "sha256:%s", hex);
        return r;
}

int lg_image_blob_put(lg_image_store *st, const void *buf, size_t len, char digest_out[LG_DIGEST_MAX],
                      struct lg_error *err) {
        struct lg_image_blob_writer *w;
        int r = lg_image_blob_begin_any(st, len ? len : 1, &w, err);
        if (r < 0)
                return r;
        r = lg_image_blob_write(w, buf, len, err);
        if (r < 0) {
                lg_image_blob_abort(w);
                return r;
        }
        return lg_image_blob_commit_any(w, digest_out, err);
}

int lg_image_blob_read(lg_image_store *st, const char *digest, uint64_t max, char **ret, size_t *len,
                       struct lg_error *err) {
        *ret = NULL;
        if (len)
                *len = 0;
        char hex[65], p[96];
        int r = lg_image_digest_hex(digest, hex, "blob", err);
        if (r < 0)
                return r;
        blob_path(hex, p, sizeof(p));
        _cleanup_close_ int fd = openat(st->dirfd, p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return lg_error_setm(err, ENOENT, "blob %s is not in the store", digest);
                return lg_error_set(err, errno, "open blob %s", digest);
        }
        struct stat s;
        if (fstat(fd, &s) < 0)
                return lg_error_set(err, errno, "stat blob %s", digest);
        if (!max)
                max = st->lim.json_bytes;
        if ((uint64_t) s.st_size > max)
                return lg_error_setm(err, EFBIG, "blob %s is %" PRIu64 " bytes, more than the limit of %" PRIu64,
                                     digest, (uint64_t) s.st_size, max);
        _cleanup_free_ char *buf = malloc((size_t) s.st_size + 1);
        if (!buf)
                return lg_error_set(err, ENOMEM, "read blob %s", digest);
        ssize_t n = lg_read_all(fd, buf, (size_t) s.st_size);
        if (n < 0)
                return lg_error_set(err, (int) n, "read blob %s", digest);
        if (n != s.st_size)
                return lg_error_setm(err, EBADMSG, "blob %s changed while read", digest);
        buf[n] = '\0';
        if (len)
                *len = (size_t) n;
        *ret = TAKE_PTR(buf);
        return 0;
}
