/* The packages store: blobs in the content-addressed store of src/cas (its
 * temporaries in blobs/sha256, where this store always made them), and the
 * extracted trees of packages beside them in extracted/<hex>. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "pkg/pkg-internal.h"

struct lg_blobstore {
        lg_cas *cas;
        int extract_dfd; /* <root>/extracted */
};

struct lg_blob_writer {
        lg_cas_writer *w;
};

static int check_digest(const char *digest, struct lg_error *err) {
        if (lg_digest_valid(digest))
                return 0;
        char p[80];
        lg_printable(digest, p, sizeof(p));
        return lg_error_set(err, EINVAL, "invalid digest `%s` (want 64 lowercase hex characters)", p);
}

/* At open, alone with the store: extractions a crash interrupted. */
static int clean_extracted(int rootfd, void *ud, struct lg_error *err) {
        if (mkdirat(rootfd, "extracted", 0755) < 0 && errno != EEXIST)
                return lg_error_set(err, errno, "create `extracted`");
        int fd = openat(rootfd, "extracted", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
                if (fd >= 0)
                        close(fd);
                return lg_error_set(err, errno, "open `extracted`");
        }
        int ret = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, LG_PKG_TMP_PREFIX, strlen(LG_PKG_TMP_PREFIX)) != 0)
                        continue;
                char sub[PATH_MAX];
                if ((size_t) snprintf(sub, sizeof(sub), "%s/extracted/%s", (const char *) ud, de->d_name) >=
                    sizeof(sub))
                        continue;
                int r = lg_rm_rf(sub);
                if (r < 0 && ret == 0)
                        ret = lg_error_set(err, -r, "remove stale `%s`", sub);
        }
        closedir(d);
        return ret;
}

void lg_blobstore_close(struct lg_blobstore *bs) {
        if (!bs)
                return;
        if (bs->extract_dfd >= 0)
                close(bs->extract_dfd);
        lg_cas_close(bs->cas);
        free(bs);
}

int lg_blobstore_open(const char *dir, struct lg_blobstore **ret, struct lg_error *err) {
        if (!dir || !*dir)
                return lg_error_set(err, EINVAL, "blob store directory not given");
        struct lg_blobstore *bs = calloc(1, sizeof(*bs));
        if (!bs)
                return lg_error_set(err, ENOMEM, "allocate blob store");
        bs->extract_dfd = -1;
        struct lg_cas_options o = {.tmp_dir = "blobs/sha256", .max_bytes = LG_BLOB_DEFAULT_MAX_BYTES,
                                   .on_alone = clean_extracted, .ud = (void *) dir};
        int r = lg_cas_open(dir, &o, &bs->cas, err);
        if (r < 0)
                goto fail;
        if (mkdirat(lg_cas_rootfd(bs->cas), "extracted", 0755) < 0 && errno != EEXIST) {
                r = lg_error_set(err, errno, "create `%s/extracted`", dir);
                goto fail;
        }
        bs->extract_dfd = openat(lg_cas_rootfd(bs->cas), "extracted", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (bs->extract_dfd < 0) {
                r = lg_error_set(err, errno, "open `%s/extracted`", dir);
                goto fail;
        }
        *ret = bs;
        return 0;
fail:
        lg_blobstore_close(bs);
        return r;
}

void lg_blobstore_set_max_bytes(struct lg_blobstore *bs, uint64_t max_bytes) {
        lg_cas_set_max_bytes(bs->cas, max_bytes ? max_bytes : LG_BLOB_DEFAULT_MAX_BYTES);
}

uint64_t lg_blobstore_max_bytes(const struct lg_blobstore *bs) { return lg_cas_max_bytes(bs->cas); }

int lg_blob_begin(struct lg_blobstore *bs, struct lg_blob_writer **ret, struct lg_error *err) {
        struct lg_blob_writer *w = calloc(1, sizeof(*w));
        if (!w)
                return lg_error_set(err, ENOMEM, "allocate blob writer");
        int r = lg_cas_begin(bs->cas, 0, &w->w, err);
        if (r < 0) {
                free(w);
                return r;
        }
        *ret = w;
        return 0;
}

int lg_blob_write(struct lg_blob_writer *w, const void *buf, size_t len, struct lg_error *err) {
        return lg_cas_write(w->w, buf, len, err);
}

void lg_blob_abort(struct lg_blob_writer *w) {
        if (!w)
                return;
        lg_cas_abort(w->w);
        free(w);
}

uint64_t lg_blob_written(const struct lg_blob_writer *w) { return lg_cas_written(w->w); }

int lg_blob_commit(struct lg_blob_writer *w, const char *expect, struct lg_digest *ret, struct lg_error *err) {
        lg_cas_writer *cw = w->w;
        free(w);
        int r = lg_cas_commit(cw, expect, ret, err);
        return r < 0 ? r : 0;
}

int lg_blob_put_fd(struct lg_blobstore *bs, int fd, struct lg_digest *ret, struct lg_error *err) {
        int r = lg_cas_put_fd(bs->cas, fd, ret, err);
        return r < 0 ? r : 0;
}

int lg_blob_open(struct lg_blobstore *bs, const char *digest, struct lg_error *err) {
        return lg_cas_get(bs->cas, digest, err);
}

int lg_blob_path(struct lg_blobstore *bs, const char *digest, char *buf, size_t cap) {
        return lg_cas_path(bs->cas, digest, buf, cap);
}

int lg_blob_exists(struct lg_blobstore *bs, const char *digest) {
        int r = lg_cas_stat(bs->cas, digest, NULL);
        if (r == -EINVAL)
                return r;
        return r == 0 ? 1 : r == -ENOENT || r == -EBADMSG ? 0 : r;
}

int lg_blob_delete(struct lg_blobstore *bs, const char *digest, struct lg_error *err) {
        return lg_cas_remove(bs->cas, digest, err);
}

int lg_blob_list(struct lg_blobstore *bs, struct lg_digest **ret, size_t *n, struct lg_error *err) {
        return lg_cas_list(bs->cas, ret, n, err);
}

int lg_blob_extracted_path(struct lg_blobstore *bs, const char *digest, char *buf, size_t cap) {
        if (!lg_digest_valid(digest))
                return -EINVAL;
        if ((size_t) snprintf(buf, cap, "%s/extracted/%s", lg_cas_root(bs->cas), digest) >= cap)
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
                return lg_error_set(err, -r, "blob path");
        r = lg_blob_extracted_path(bs, digest, dst, sizeof(dst));
        if (r < 0)
                return lg_error_set(err, -r, "extraction path");
        r = lg_blob_exists(bs, digest);
        if (r == 0)
                return lg_error_set(err, ENOENT, "blob %s", digest);
        if (r < 0)
                return lg_error_set(err, -r, "blob %s", digest);
        return lg_pkg_extract(src, dst, limits, info, err);
}

int lg_blob_delete_extracted(struct lg_blobstore *bs, const char *digest, struct lg_error *err) {
        int r = check_digest(digest, err);
        if (r < 0)
                return r;
        char tmp[64];
        r = lg_pkg_tmp_name(tmp, sizeof(tmp), "del-");
        if (r < 0)
                return lg_error_set(err, -r, "make a temporary name");
        if (renameat(bs->extract_dfd, digest, bs->extract_dfd, tmp) < 0)
                return lg_error_set(err, errno, "delete extracted %s", digest);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/extracted/%s", lg_cas_root(bs->cas), tmp);
        r = lg_rm_rf(path);
        if (r < 0)
                return lg_error_set(err, -r, "remove `%s`", path);
        return 0;
}
