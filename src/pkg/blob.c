/* The content-addressed blob store: uploads stream into a temporary file in
 * the blob directory while their sha256 is computed, are fsynced, and become
 * visible under their digest by one rename; an existing digest makes the new
 * copy redundant (dedup). */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "pkg/pkg-internal.h"

struct lg_blobstore {
        char *root;
        int lock_fd;
        int blob_dfd;      /* <root>/blobs/sha256 */
        int extract_dfd;   /* <root>/extracted */
        _Atomic uint64_t max_bytes;
};

struct lg_blob_writer {
        struct lg_blobstore *bs;
        int fd;
        EVP_MD_CTX *md;
        uint64_t size;
        int failed; /* < 0 once a write failed */
        char failed_msg[sizeof(((struct lg_error *) 0)->msg)];
        char tmp[64];
};

bool lg_digest_valid(const char *hex) {
        if (!hex)
                return false;
        for (size_t i = 0; i < LG_DIGEST_HEX_LEN; i++) {
                char c = hex[i];
                if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
                        return false;
        }
        return hex[LG_DIGEST_HEX_LEN] == '\0';
}

static int check_digest(const char *digest, struct lg_error *err) {
        if (lg_digest_valid(digest))
                return 0;
        char p[80];
        lg_pkg_printable(digest, p, sizeof(p));
        return lg_error_set(err, EINVAL, "invalid digest `%s` (want 64 lowercase hex characters)", p);
}

/* Remove every LG_PKG_TMP_PREFIX entry of the directory (files or trees). */
static int clean_tmp(const char *path, struct lg_error *err) {
        DIR *d = opendir(path);
        if (!d)
                return lg_error_set(err, errno, "open `%s`", path);
        int ret = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, LG_PKG_TMP_PREFIX, strlen(LG_PKG_TMP_PREFIX)) != 0)
                        continue;
                char sub[PATH_MAX];
                if ((size_t) snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name) >= sizeof(sub))
                        continue;
                int r = lg_rm_rf(sub);
                if (r < 0 && ret == 0)
                        ret = lg_error_set(err, r, "remove stale `%s`", sub);
        }
        closedir(d);
        return ret;
}

void lg_blobstore_close(struct lg_blobstore *bs) {
        if (!bs)
                return;
        if (bs->blob_dfd >= 0)
                close(bs->blob_dfd);
        if (bs->extract_dfd >= 0)
                close(bs->extract_dfd);
        if (bs->lock_fd >= 0)
                close(bs->lock_fd); /* drops the flock */
        free(bs->root);
        free(bs);
}

static int open_dir(const char *root, const char *sub, struct lg_error *err) {
        char path[PATH_MAX];
        if ((size_t) snprintf(path, sizeof(path), "%s/%s", root, sub) >= sizeof(path))
                return lg_error_set(err, ENAMETOOLONG, "store path `%s/%s`", root, sub);
        int r = lg_mkdir_p(path, 0755);
        if (r < 0)
                return lg_error_set(err, r, "create `%s`", path);
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return lg_error_set(err, errno, "open `%s`", path);
        return fd;
}

int lg_blobstore_open(const char *dir, struct lg_blobstore **ret, struct lg_error *err) {
        if (!dir || !*dir)
                return lg_error_set(err, EINVAL, "blob store directory not given");
        if (strlen(dir) > 2048)
                return lg_error_set(err, ENAMETOOLONG, "blob store directory too long");
        struct lg_blobstore *bs = calloc(1, sizeof(*bs));
        if (!bs)
                return lg_error_set(err, ENOMEM, "allocate blob store");
        bs->lock_fd = bs->blob_dfd = bs->extract_dfd = -1;
        atomic_store(&bs->max_bytes, LG_BLOB_DEFAULT_MAX_BYTES);
        int r;
        bs->root = strdup(dir);
        if (!bs->root) {
                r = lg_error_set(err, ENOMEM, "allocate blob store");
                goto fail;
        }
        r = lg_mkdir_p(dir, 0755);
        if (r < 0) {
                r = lg_error_set(err, r, "create `%s`", dir);
                goto fail;
        }
        r = bs->blob_dfd = open_dir(dir, "blobs/sha256", err);
        if (r < 0)
                goto fail;
        r = bs->extract_dfd = open_dir(dir, "extracted", err);
        if (r < 0)
                goto fail;

        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/lock", dir);
        bs->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (bs->lock_fd < 0) {
                r = lg_error_set(err, errno, "open `%s`", path);
                goto fail;
        }
        /* Alone with the store: what temporaries exist were left by a crash. */
        if (flock(bs->lock_fd, LOCK_EX | LOCK_NB) == 0) {
                snprintf(path, sizeof(path), "%s/blobs/sha256", dir);
                r = clean_tmp(path, err);
                if (r < 0)
                        goto fail;
                snprintf(path, sizeof(path), "%s/extracted", dir);
                r = clean_tmp(path, err);
                if (r < 0)
                        goto fail;
        } else if (errno != EWOULDBLOCK) {
                r = lg_error_set(err, errno, "lock `%s/lock`", dir);
                goto fail;
        }
        while (flock(bs->lock_fd, LOCK_SH) < 0) {
                if (errno != EINTR) {
                        r = lg_error_set(err, errno, "lock `%s/lock`", dir);
                        goto fail;
                }
        }
        *ret = bs;
        return 0;
fail:
        lg_blobstore_close(bs);
        return r;
}

void lg_blobstore_set_max_bytes(struct lg_blobstore *bs, uint64_t max_bytes) {
        atomic_store(&bs->max_bytes, max_bytes ? max_bytes : LG_BLOB_DEFAULT_MAX_BYTES);
}

uint64_t lg_blobstore_max_bytes(const struct lg_blobstore *bs) {
        return atomic_load(&((struct lg_blobstore *) bs)->max_bytes);
}

static void writer_free(struct lg_blob_writer *w) {
        if (w->fd >= 0) {
                close(w->fd);
                unlinkat(w->bs->blob_dfd, w->tmp, 0);
        }
        EVP_MD_CTX_free(w->md);
        free(w);
}

void lg_blob_abort(struct lg_blob_writer *w) {
        if (w)
                writer_free(w);
}

uint64_t lg_blob_written(const struct lg_blob_writer *w) { return w->size; }

int lg_blob_begin(struct lg_blobstore *bs, struct lg_blob_writer **ret, struct lg_error *err) {
        struct lg_blob_writer *w = calloc(1, sizeof(*w));
        if (!w)
                return lg_error_set(err, ENOMEM, "allocate blob writer");
        w->bs = bs;
        w->fd = -1;
        int r;
        w->md = EVP_MD_CTX_new();
        if (!w->md || EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
                r = lg_error_set(err, ENOMEM, "initialize sha256");
                goto fail;
        }
        for (int tries = 0; w->fd < 0; tries++) {
                r = lg_pkg_tmp_name(w->tmp, sizeof(w->tmp), "put-");
                if (r < 0) {
                        r = lg_error_set(err, r, "make a temporary name");
                        goto fail;
                }
                w->fd = openat(bs->blob_dfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                               0600);
                if (w->fd < 0 && (errno != EEXIST || tries > 8)) {
                        r = lg_error_set(err, errno, "create `%s/blobs/sha256/%s`", bs->root, w->tmp);
                        goto fail;
                }
        }
        *ret = w;
        return 0;
fail:
        writer_free(w);
        return r;
}

/* Mark the writer failed: drop the temporary file now, remember the error. */
static int writer_fail(struct lg_blob_writer *w, int r, struct lg_error *err) {
        if (w->fd >= 0) {
                close(w->fd);
                unlinkat(w->bs->blob_dfd, w->tmp, 0);
                w->fd = -1;
        }
        w->failed = r;
        if (err)
                memcpy(w->failed_msg, err->msg, sizeof(w->failed_msg));
        else
                snprintf(w->failed_msg, sizeof(w->failed_msg), "blob upload failed: %s", strerror(-r));
        return r;
}

static int writer_failed(struct lg_blob_writer *w, struct lg_error *err) {
        if (err) {
                err->code = -w->failed;
                memcpy(err->msg, w->failed_msg, sizeof(err->msg));
        }
        return w->failed;
}

int lg_blob_write(struct lg_blob_writer *w, const void *buf, size_t len, struct lg_error *err) {
        if (w->failed < 0)
                return writer_failed(w, err);
        uint64_t max = lg_blobstore_max_bytes(w->bs);
        if (len > max - w->size) {
                char lim[32];
                lg_pkg_fmt_size(max, lim, sizeof(lim));
                return writer_fail(w, lg_error_set(err, EFBIG, "blob is larger than the limit of %s", lim),
                                   err);
        }
        if (len == 0)
                return 0;
        if (EVP_DigestUpdate(w->md, buf, len) != 1)
                return writer_fail(w, lg_error_set(err, EIO, "sha256 update"), err);
        int r = lg_write_all(w->fd, buf, len);
        if (r < 0)
                return writer_fail(w, lg_error_set(err, r, "write `%s/blobs/sha256/%s`", w->bs->root, w->tmp),
                                   err);
        w->size += len;
        return 0;
}

int lg_blob_commit(struct lg_blob_writer *w, const char *expect, struct lg_digest *ret, struct lg_error *err) {
        struct lg_blobstore *bs = w->bs;
        int r;
        if (w->failed < 0) {
                r = writer_failed(w, err);
                goto out;
        }
        if (expect && !lg_digest_valid(expect)) {
                r = check_digest(expect, err);
                goto out;
        }
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        if (EVP_DigestFinal_ex(w->md, md, &mdlen) != 1 || mdlen != 32) {
                r = lg_error_set(err, EIO, "sha256 final");
                goto out;
        }
        struct lg_digest d;
        static const char hex[] = "0123456789abcdef";
        for (unsigned i = 0; i < 32; i++) {
                d.hex[2 * i] = hex[md[i] >> 4];
                d.hex[2 * i + 1] = hex[md[i] & 15];
        }
        d.hex[LG_DIGEST_HEX_LEN] = '\0';
        if (expect && strcmp(expect, d.hex) != 0) {
                r = lg_error_set(err, EBADMSG, "content has digest %s, expected %s", d.hex, expect);
                goto out;
        }
        if (fchmod(w->fd, 0444) < 0 || fsync(w->fd) < 0) {
                r = lg_error_set(err, errno, "sync `%s/blobs/sha256/%s`", bs->root, w->tmp);
                goto out;
        }
        r = lg_rename_noreplace_at(bs->blob_dfd, w->tmp, d.hex);
        if (r < 0) {
                r = lg_error_set(err, r, "rename blob to `%s/blobs/sha256/%s`", bs->root, d.hex);
                goto out;
        }
        if (r == 0) {
                /* Renamed: nothing left to unlink; make the name durable. */
                close(w->fd);
                w->fd = -1;
                if (fsync(bs->blob_dfd) < 0) {
                        r = lg_error_set(err, errno, "sync `%s/blobs/sha256`", bs->root);
                        goto out;
                }
        }
        /* r == 1: an identical blob exists; writer_free drops the copy. */
        r = 0;
        if (ret)
                *ret = d;
out:
        writer_free(w);
        return r;
}

int lg_blob_put_fd(struct lg_blobstore *bs, int fd, struct lg_digest *ret, struct lg_error *err) {
        struct lg_blob_writer *w;
        int r = lg_blob_begin(bs, &w, err);
        if (r < 0)
                return r;
        const size_t cap = 256 * 1024;
        _cleanup_free_ char *buf = malloc(cap);
        if (!buf) {
                lg_blob_abort(w);
                return lg_error_set(err, ENOMEM, "allocate read buffer");
        }
        for (;;) {
                ssize_t n = read(fd, buf, cap);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = lg_error_set(err, errno, "read blob content");
                        lg_blob_abort(w);
                        return r;
                }
                if (n == 0)
                        break;
                r = lg_blob_write(w, buf, (size_t) n, err);
                if (r < 0) {
                        lg_blob_abort(w);
                        return r;
                }
        }
        return lg_blob_commit(w, NULL, ret, err);
}

int lg_blob_open(struct lg_blobstore *bs, const char *digest, struct lg_error *err) {
        int r = check_digest(digest, err);
        if (r < 0)
                return r;
        int fd = openat(bs->blob_dfd, digest, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return lg_error_set(err, errno, "open blob %s", digest);
        return fd;
}

int lg_blob_path(struct lg_blobstore *bs, const char *digest, char *buf, size_t cap) {
        if (!lg_digest_valid(digest))
                return -EINVAL;
        if ((size_t) snprintf(buf, cap, "%s/blobs/sha256/%s", bs->root, digest) >= cap)
                return -ENAMETOOLONG;
        return 0;
}

int lg_blob_exists(struct lg_blobstore *bs, const char *digest) {
        if (!lg_digest_valid(digest))
                return -EINVAL;
        struct stat st;
        if (fstatat(bs->blob_dfd, digest, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -errno;
        return S_ISREG(st.st_mode) ? 1 : 0;
}

int lg_blob_delete(struct lg_blobstore *bs, const char *digest, struct lg_error *err) {
        int r = check_digest(digest, err);
        if (r < 0)
                return r;
        if (unlinkat(bs->blob_dfd, digest, 0) < 0)
                return lg_error_set(err, errno, "delete blob %s", digest);
        return 0;
}

static int cmp_digest(const void *a, const void *b) {
        return strcmp(((const struct lg_digest *) a)->hex, ((const struct lg_digest *) b)->hex);
}

int lg_blob_list(struct lg_blobstore *bs, struct lg_digest **ret, size_t *n, struct lg_error *err) {
        int fd = openat(bs->blob_dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return lg_error_set(err, errno, "open `%s/blobs/sha256`", bs->root);
        DIR *d = fdopendir(fd);
        if (!d) {
                int r = lg_error_set(err, errno, "open `%s/blobs/sha256`", bs->root);
                close(fd);
                return r;
        }
        struct lg_digest *v = NULL;
        size_t len = 0, cap = 0;
        struct dirent *de;
        errno = 0;
        while ((de = readdir(d))) {
                if (!lg_digest_valid(de->d_name))
                        continue;
                if (len == cap) {
                        size_t ncap = cap ? cap * 2 : 64;
                        struct lg_digest *nv = realloc(v, ncap * sizeof(*v));
                        if (!nv) {
                                free(v);
                                closedir(d);
                                return lg_error_set(err, ENOMEM, "list blobs");
                        }
                        v = nv;
                        cap = ncap;
                }
                memcpy(v[len++].hex, de->d_name, LG_DIGEST_HEX_LEN + 1);
                errno = 0;
        }
        if (errno != 0) {
                int r = lg_error_set(err, errno, "read `%s/blobs/sha256`", bs->root);
                free(v);
                closedir(d);
                return r;
        }
        closedir(d);
        if (len > 1)
                qsort(v, len, sizeof(*v), cmp_digest);
        *ret = v;
        *n = len;
        return 0;
}

int lg_blob_extracted_path(struct lg_blobstore *bs, const char *digest, char *buf, size_t cap) {
        if (!lg_digest_valid(digest))
                return -EINVAL;
        if ((size_t) snprintf(buf, cap, "%s/extracted/%s", bs->root, digest) >= cap)
                return -ENAMETOOLONG;
        return 0;
}

int lg_blob_extract(struct lg_blobstore *bs, const char *digest, const struct lg_pkg_limits *limits,
                    struct lg_pkg_info *info, struct lg_error *err) {
        if (info)
                memset(info, 0, sizeof(*info)); /* freeable whatever happens */
        int r = check_digest(digest, err);
        if (r < 0)
                return r;
        char src[PATH_MAX], dst[PATH_MAX];
        r = lg_blob_path(bs, digest, src, sizeof(src));
        if (r < 0)
                return lg_error_set(err, r, "blob path");
        r = lg_blob_extracted_path(bs, digest, dst, sizeof(dst));
        if (r < 0)
                return lg_error_set(err, r, "extraction path");
        r = lg_blob_exists(bs, digest);
        if (r == 0)
                return lg_error_set(err, ENOENT, "blob %s", digest);
        if (r < 0)
                return lg_error_set(err, r, "blob %s", digest);
        return lg_pkg_extract(src, dst, limits, info, err);
}

int lg_blob_delete_extracted(struct lg_blobstore *bs, const char *digest, struct lg_error *err) {
        int r = check_digest(digest, err);
        if (r < 0)
                return r;
        char tmp[64];
        r = lg_pkg_tmp_name(tmp, sizeof(tmp), "del-");
        if (r < 0)
                return lg_error_set(err, r, "make a temporary name");
        if (renameat(bs->extract_dfd, digest, bs->extract_dfd, tmp) < 0)
                return lg_error_set(err, errno, "delete extracted %s", digest);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/extracted/%s", bs->root, tmp);
        r = lg_rm_rf(path);
        if (r < 0)
                return lg_error_set(err, r, "remove `%s`", path);
        return 0;
}
