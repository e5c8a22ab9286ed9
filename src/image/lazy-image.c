/* Lazy layers in the image store (image.h "lazy layers",
 * docs/lazy-images.md): the store's view of $LEGION_HOME/lazy, which
 * layers are lazy (layers/<hex>.json "lazy": true), and mounting them
 * again through legiond's ops when legiond starts. Convert, lazy pull,
 * inspect figures and GC of lazy layers build on these. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "image/image-internal.h"

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

int lg_image_layer_is_lazy(lg_image_store *st, const char *hex) {
        char p[96], buf[1024];
        snprintf(p, sizeof(p), "layers/%s.json", hex);
        ssize_t n = lg_read_file_at(st->dirfd, p, buf, sizeof(buf));
        if (n < 0)
                return 0;
        json_t *j = json_loadb(buf, (size_t) n, 0, NULL);
        int lazy = json_is_true(json_object_get(j, "lazy"));
        json_decref(j);
        return lazy;
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

int lg_image_lazy_attach_all(lg_image_store *st, unsigned *attached, struct lg_error *err) {
        if (attached)
                *attached = 0;
        if (!st->lazy_ops)
                return 0;
        int lfd = openat(st->dirfd, "layers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
        if (!d) {
                if (lfd >= 0)
                        close(lfd);
                return lg_error_set(err, errno, "open `%s/layers`", st->dir);
        }
        int first = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strlen(de->d_name) != 64 + 5 || strcmp(de->d_name + 64, ".json") || !lg_image_is_hex(de->d_name, 64))
                        continue;
                char hex[65], mnt[PATH_MAX];
                memcpy(hex, de->d_name, 64);
                hex[64] = '\0';
                if (!lg_image_layer_is_lazy(st, hex) || layer_mounted(st, hex))
                        continue;
                snprintf(mnt, sizeof(mnt), "%s/layers/%s", st->dir, hex);
                /* The mount point goes with the mount only by hand. */
                (void) mkdirat(st->dirfd, mnt + strlen(st->dir) + 1, 0755);
                struct lg_error e = {0};
                int r = st->lazy_ops->attach(st->lazy_ud, hex, mnt, &e);
                if (r < 0 && first == 0)
                        first = lg_error_setm(err, -r, "lazy layer %.12s: %s", hex, e.msg);
                else if (r >= 0 && attached)
                        (*attached)++;
        }
        closedir(d);
        return first;
}
