/* Lazy layers in the image store (image.h "lazy layers",
 * docs/lazy-images.md): the store's view of $LEGION_HOME/lazy, which
 * layers are lazy (layers/<hex>.json "lazy": true), and mounting them
 * again through legiond's ops when legiond starts. Convert, lazy pull,
 * inspect figures and GC of lazy layers build on these. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "image/image-internal.h"
#include "lazy/chunkstore.h"

int lg_image_store_set_lazy(lg_image_store *st, const char *lazy_dir, const struct lg_image_lazy_ops *ops,
                            void *ud, bool lazy_auto, struct lg_error *err) {
        if (!lazy_dir || !*lazy_dir)
                return lg_error_setm(err, EINVAL, "no directory for lazy layers given");
        int r = lg_mkdir_p(lazy_dir, 0700);
        if (r < 0)
                return lg_error_set(err, r, "create `%s`", lazy_dir);
        char *dir = realpath(lazy_dir, NULL);
        if (!dir)
                return lg_error_set(err, errno, "resolve `%s`", lazy_dir);
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                r = lg_error_set(err, errno, "open `%s`", dir);
                free(dir);
                return r;
        }
        static const char *const subdirs[] = {"layers", "tmp"};
        for (size_t i = 0; i < ARRAY_SIZE(subdirs); i++)
                if (mkdirat(fd, subdirs[i], 0700) < 0 && errno != EEXIST) {
                        r = lg_error_set(err, errno, "create `%s/%s`", dir, subdirs[i]);
                        close(fd);
                        free(dir);
                        return r;
                }
        pthread_mutex_lock(&st->mu);
        if (st->lazy_dirfd >= 0)
                close(st->lazy_dirfd);
        free(st->lazy_dir);
        st->lazy_dir = dir;
        st->lazy_dirfd = fd;
        st->lazy_ops = ops;
        st->lazy_ud = ud;
        st->lazy_auto = lazy_auto;
        pthread_mutex_unlock(&st->mu);
        return 0;
}

int lg_image_store_set_mirrors(lg_image_store *st, const struct lg_mirrors *m, struct lg_error *err) {
        struct lg_mirrors copy;
        int r = lg_mirrors_copy(m, &copy, err);
        if (r < 0)
                return r;
        pthread_mutex_lock(&st->mu);
        lg_mirrors_clear(&st->mirrors);
        st->mirrors = copy;
        pthread_mutex_unlock(&st->mu);
        return 0;
}

/* layers/<hex>.json, parsed; NULL when there is none. */
static json_t *layer_record(lg_image_store *st, const char *hex) {
        char p[96], buf[1024];
        snprintf(p, sizeof(p), "layers/%s.json", hex);
        ssize_t n = lg_read_file_at(st->dirfd, p, buf, sizeof(buf));
        return n < 0 ? NULL : json_loadb(buf, (size_t) n, 0, NULL);
}

int lg_image_layer_is_lazy(lg_image_store *st, const char *hex) {
        json_t *j = layer_record(st, hex);
        int lazy = json_is_true(json_object_get(j, "lazy"));
        json_decref(j);
        return lazy;
}

static uint64_t layer_size(lg_image_store *st, const char *hex) {
        json_t *j = layer_record(st, hex);
        json_int_t size = json_integer_value(json_object_get(j, "size"));
        json_decref(j);
        return size > 0 ? (uint64_t) size : 0;
}

/* 1 when layers/<hex> is an EROFS mount, 0 when not. */
static int layer_mounted(lg_image_store *st, const char *hex) {
        char p[96];
        snprintf(p, sizeof(p), "layers/%s", hex);
        int fd = openat(st->dirfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return 0;
        struct statfs sf;
        int r = fstatfs(fd, &sf) == 0 && (unsigned long) sf.f_type == EROFS_SUPER_MAGIC_V1;
        close(fd);
        return r;
}

/* The hexes of the store's lazy layers (by their records). */
static int lazy_layers(lg_image_store *st, char (**ret)[65], size_t *n, struct lg_error *err) {
        *ret = NULL;
        *n = 0;
        int lfd = openat(st->dirfd, "layers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
        if (!d) {
                if (lfd >= 0)
                        close(lfd);
                return lg_error_set(err, errno, "open `%s/layers`", st->dir);
        }
        size_t cap = 0;
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d)) && r >= 0) {
                if (strlen(de->d_name) != 64 + 5 || strcmp(de->d_name + 64, ".json") || !lg_image_is_hex(de->d_name, 64))
                        continue;
                char hex[65];
                memcpy(hex, de->d_name, 64);
                hex[64] = '\0';
                if (lg_image_layer_is_lazy(st, hex) != 1)
                        continue;
                if ((r = lg_grow((void **) ret, &cap, *n, sizeof(**ret), 16)) < 0)
                        r = lg_error_set(err, ENOMEM, "list lazy layers");
                else
                        memcpy((*ret)[(*n)++], hex, 65);
        }
        closedir(d);
        if (r < 0) {
                free(*ret);
                *ret = NULL;
                *n = 0;
        }
        return r;
}

int lg_image_lazy_attach_all(lg_image_store *st, unsigned *attached, struct lg_error *err) {
        if (attached)
                *attached = 0;
        if (!st->lazy_ops)
                return 0;
        char(*hexes)[65];
        size_t n;
        int first = lazy_layers(st, &hexes, &n, err);
        for (size_t i = 0; i < n; i++) {
                const char *hex = hexes[i];
                if (layer_mounted(st, hex))
                        continue;
                char mnt[PATH_MAX], rel[96];
                snprintf(rel, sizeof(rel), "layers/%s", hex);
                snprintf(mnt, sizeof(mnt), "%s/%s", st->dir, rel);
                /* The mount point goes with the mount only by hand. */
                (void) mkdirat(st->dirfd, rel, 0755);
                struct lg_error e = {0};
                int r = st->lazy_ops->attach(st->lazy_ud, hex, mnt, &e);
                if (r < 0 && first == 0)
                        first = lg_error_setm(err, -r, "lazy layer %.12s: %s", hex, e.msg);
                else if (r >= 0 && attached)
                        (*attached)++;
        }
        free(hexes);
        return first;
}

/* ---- lazy layer directories ------------------------------------------------- */

int lg_image_lazy_write_source(const char *dir, json_t *source, struct lg_error *err) {
        _cleanup_free_ char *text = json_dumps(source, JSON_COMPACT);
        if (!text)
                return lg_error_set(err, ENOMEM, "source.json");
        static const char *const files[] = {"source.json", "image"};
        for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
                char p[PATH_MAX];
                snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
                _cleanup_close_ int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd < 0)
                        return lg_error_set(err, errno, "create `%s`", p);
                int r = i == 0 ? lg_write_all(fd, text, strlen(text)) : 0;
                if (r >= 0 && fsync(fd) < 0)
                        r = -errno;
                if (r < 0)
                        return lg_error_set(err, r, "write `%s`", p);
        }
        return 0;
}

int lg_image_lazy_source_digest(lg_image_store *st, const char *hex, char out[72], struct lg_error *err) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/layers/%s/source.json", st->lazy_dir, hex);
        json_error_t je;
        json_t *j = json_load_file(p, JSON_REJECT_DUPLICATES, &je);
        const char *d = json_string_value(json_object_get(j, "digest"));
        char h[65];
        int r = d ? lg_image_digest_hex(d, h, "source.json", err) : lg_error_setm(err, EBADMSG, "`%s` has no BLOB digest", p);
        if (r >= 0)
                snprintf(out, 72, "sha256:%s", h);
        json_decref(j);
        return r;
}

int lg_image_lazy_install(lg_image_store *st, const char *tmp, const char *hex, bool replace, struct lg_error *err) {
        char dst[PATH_MAX];
        snprintf(dst, sizeof(dst), "%s/layers/%s", st->lazy_dir, hex);
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EEXIST)
                return lg_error_set(err, errno, "rename `%s` to `%s`", tmp, dst);
        if (!replace) {
                (void) lg_rm_rf(tmp);
                return 1;
        }
        /* tmp gets the old one, which goes. */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_EXCHANGE) < 0)
                return lg_error_set(err, errno, "replace `%s`", dst);
        (void) lg_rm_rf(tmp);
        return 0;
}

/* ---- figures ------------------------------------------------------------------ */

int lg_image_layer_lazy_status(lg_image_store *st, const char *layer_digest, struct lg_image_lazy_status *ret) {
        memset(ret, 0, sizeof(*ret));
        char hex[65];
        if (lg_image_digest_hex(layer_digest, hex, "layer", NULL) < 0)
                return 0;
        if (!st->lazy_dir || lg_image_layer_is_lazy(st, hex) != 1) {
                ret->bytes = ret->local_bytes = layer_size(st, hex);
                return 0;
        }
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/layers/%s/chunks", st->lazy_dir, hex);
        lg_chunk_table *t = NULL;
        lg_chunk_store *cs = NULL;
        /* A lazy layer whose table is unreadable still is one: zeros. */
        if (lg_chunk_table_load(p, &t, NULL) >= 0) {
                ret->chunks = lg_chunk_table_count(t);
                ret->bytes = lg_chunk_table_blob_size(t);
                if (lg_chunk_store_open(st->lazy_dir, &cs, NULL) >= 0)
                        (void) lg_chunk_store_local(cs, t, &ret->local_chunks, &ret->local_bytes);
        }
        lg_chunk_store_close(cs);
        lg_chunk_table_free(t);
        return 1;
}

/* ---- GC ------------------------------------------------------------------------- */

/* Bytes of the files of directory dir (not recursive: a lazy layer dir is
 * flat). */
static uint64_t flat_du(const char *dir) {
        DIR *d = opendir(dir);
        if (!d)
                return 0;
        uint64_t sum = 0;
        struct dirent *de;
        struct stat s;
        while ((de = readdir(d)))
                if (fstatat(dirfd(d), de->d_name, &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(s.st_mode))
                        sum += (uint64_t) s.st_size;
        closedir(d);
        return sum;
}

/* Remove lazy/layers/<hex> (moved to lazy/tmp first: never half a layer
 * under its name); its bytes into *freed. */
static int remove_form(lg_image_store *st, const char *hex, uint64_t *freed) {
        char src[PATH_MAX], dst[PATH_MAX], rnd[17];
        snprintf(src, sizeof(src), "%s/layers/%s", st->lazy_dir, hex);
        int r = lg_random_hex(rnd, 8);
        if (r < 0)
                return r;
        snprintf(dst, sizeof(dst), "%s/tmp/trash-%s", st->lazy_dir, rnd);
        if (rename(src, dst) < 0)
                return errno == ENOENT ? 0 : -errno;
        *freed += flat_du(dst);
        return lg_rm_rf(dst);
}

int lg_image_lazy_gc(lg_image_store *st, bool (*keeps)(const char *hex, void *ud), void *ud,
                     struct lg_image_gc_result *res, struct lg_error *err) {
        if (!st->lazy_dir)
                return 0;
        /* Lazy layers: unmounted and removed, record and mount point too. */
        char(*hexes)[65];
        size_t n;
        int r = lazy_layers(st, &hexes, &n, err);
        for (size_t i = 0; i < n && r >= 0; i++) {
                const char *hex = hexes[i];
                char mnt[PATH_MAX], rel[96];
                if (keeps(hex, ud))
                        continue;
                snprintf(mnt, sizeof(mnt), "%s/layers/%s", st->dir, hex);
                if (layer_mounted(st, hex)) {
                        /* Without the fetcher's ops (a CLI's handle) it stays. */
                        if (!st->lazy_ops)
                                continue;
                        struct lg_error e = {0};
                        if (st->lazy_ops->detach(st->lazy_ud, hex, mnt, &e) < 0 || layer_mounted(st, hex)) {
                                r = lg_error_setm(err, EBUSY, "lazy layer %.12s cannot be unmounted: %s", hex,
                                                  e.msg[0] ? e.msg : "still mounted");
                                break;
                        }
                }
                snprintf(rel, sizeof(rel), "layers/%s", hex);
                if (unlinkat(st->dirfd, rel, AT_REMOVEDIR) < 0 && errno != ENOENT) {
                        r = lg_error_set(err, errno, "remove `%s`", mnt);
                        break;
                }
                /* The record goes after the mount point: a crash between
                 * leaves a lazy layer that is not mounted, found again. */
                snprintf(rel, sizeof(rel), "layers/%s.json", hex);
                (void) unlinkat(st->dirfd, rel, 0);
                if ((r = remove_form(st, hex, &res->bytes_freed)) < 0) {
                        r = lg_error_set(err, r, "remove lazy layer %.12s", hex);
                        break;
                }
                res->layers_removed++;
        }
        free(hexes);
        if (r < 0)
                return r;
        /* Lazy forms converted here (marker `image`) of layers gone; those
         * of packages are the package store's. */
        DIR *d;
        struct dirent *de;
        char ldir[PATH_MAX];
        snprintf(ldir, sizeof(ldir), "%s/layers", st->lazy_dir);
        if (!(d = opendir(ldir)))
                return lg_error_set(err, errno, "open `%s`", ldir);
        while ((de = readdir(d)) && r >= 0) {
                if (strlen(de->d_name) != 64 || !lg_image_is_hex(de->d_name, 64) || keeps(de->d_name, ud))
                        continue;
                char mark[96];
                snprintf(mark, sizeof(mark), "%s/image", de->d_name);
                if (faccessat(dirfd(d), mark, F_OK, AT_SYMLINK_NOFOLLOW) < 0 || lg_image_layer_is_lazy(st, de->d_name) == 1)
                        continue;
                if ((r = remove_form(st, de->d_name, &res->bytes_freed)) < 0)
                        r = lg_error_set(err, r, "remove the lazy form of layer %.12s", de->d_name);
        }
        closedir(d);
        return r;
}

int lg_image_lazy_chunk_gc(lg_image_store *st, struct lg_image_gc_result *res, struct lg_error *err) {
        if (!st->lazy_dir)
                return 0;
        char ldir[PATH_MAX];
        snprintf(ldir, sizeof(ldir), "%s/layers", st->lazy_dir);
        pthread_mutex_lock(&st->lazy_mu);
        lg_chunk_table **keep = NULL;
        size_t n = 0, cap = 0;
        lg_chunk_store *cs = NULL;
        int r = 0;
        /* Every table under lazy/layers stays: images' and packages'. */
        DIR *d = opendir(ldir);
        if (!d)
                r = lg_error_set(err, errno, "open `%s`", ldir);
        struct dirent *de;
        while (d && (de = readdir(d)) && r >= 0) {
                if (de->d_name[0] == '.')
                        continue;
                char p[PATH_MAX];
                snprintf(p, sizeof(p), "%s/%s/chunks", ldir, de->d_name);
                lg_chunk_table *t = NULL;
                int q = lg_chunk_table_load(p, &t, err);
                if (q == -ENOENT)
                        continue;
                if (q < 0) {
                        /* GC cannot tell what that layer needs: stop. */
                        r = lg_error_wrap(err, q, "chunk GC stopped");
                        break;
                }
                if ((r = lg_grow((void **) &keep, &cap, n, sizeof(*keep), 16)) < 0) {
                        lg_chunk_table_free(t);
                        r = lg_error_set(err, ENOMEM, "chunk GC");
                        break;
                }
                keep[n++] = t;
        }
        if (d)
                closedir(d);
        uint64_t removed = 0, bytes = 0;
        if (r >= 0 && (r = lg_chunk_store_open(st->lazy_dir, &cs, err)) >= 0)
                r = lg_chunk_store_gc(cs, keep, n, &removed, &bytes, err);
        pthread_mutex_unlock(&st->lazy_mu);
        res->chunks_removed += removed;
        res->bytes_freed += bytes;
        lg_chunk_store_close(cs);
        for (size_t i = 0; i < n; i++)
                lg_chunk_table_free(keep[i]);
        free(keep);
        return r < 0 ? r : 0;
}
