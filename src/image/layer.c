/* Layer extraction: a layer blob (tar, tar+gzip, tar+zstd) becomes
 * layers/<hex>/, a tree in overlayfs form that sandboxes mount as a lower
 * dir (idmapped: host uids 0..65535 are the sandbox's). The work is the
 * safe extractor's (src/extract) with the OCI layer rules
 * (LG_EXTRACT_OCI_LAYER):
 * - paths: a leading '/' is dropped, `.` and empty components too; `..` is
 *   refused; length and depth are limited;
 * - nothing is ever created through a symlink, even one made earlier in
 *   the layer; later entries replace earlier ones (as tar does), except
 *   that a directory over a directory only updates its metadata;
 * - `.wh.NAME` becomes the overlay whiteout NAME (a 0/0 character device);
 *   `.wh..wh..opq` sets trusted.overlay.opaque=y on its directory; other
 *   `.wh..wh.*` entries (aufs bookkeeping) are ignored;
 * - owners are kept; one outside 0..65535 (which the sandbox's id map does
 *   not cover) becomes 65534, nobody; setuid and setgid bits are dropped;
 * - symlinks are kept as they are: absolute targets resolve inside the
 *   sandbox's root, never here, since nothing here follows them;
 * - hard links must point at a file already extracted from this layer;
 * - character and block devices and sockets are skipped (the sandbox has
 *   its own /dev); FIFOs are kept;
 * - extended attributes in the tar are not kept: security.capability
 *   would be a setuid by another name, trusted.* is overlayfs's own;
 * - the uncompressed stream is hashed as it passes and must be the diff id
 *   the config names; its size is limited (layer_bytes).
 *
 * The tree is built in tmp/ and renamed to layers/<hex> only when complete,
 * synced and verified: a failure leaves nothing, and two threads extracting
 * the same layer both succeed (the second's copy is dropped). */
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

#include "extract/extract.h"
#include "image/image-internal.h"

/* layers/<hex>.json of a layer extracted already: its diff id must be the
 * one the config names now. */
static int check_existing(lg_image_store *st, const struct lg_image_layer_desc *l, struct lg_error *err) {
        char p[96];
        snprintf(p, sizeof(p), "layers/%s.json", l->digest + 7);
        char buf[512];
        ssize_t n = lg_read_file_at(st->dirfd, p, buf, sizeof(buf));
        if (n < 0)
                return 0; /* written before the tree appears; absent only if removed by hand */
        json_t *j = json_loads(buf, 0, NULL);
        const char *d = json_string_value(json_object_get(j, "diffId"));
        int r = 0;
        if (d && strcmp(d, l->diff_id) != 0)
                r = lg_error_setm(err, EBADMSG, "layer %s: diff id mismatch: the config says %s, the content is %s",
                                  l->digest, l->diff_id, d);
        json_decref(j);
        return r;
}

int lg_image_layer_write_record(lg_image_store *st, const char *hex, const char *diff_id, uint64_t size, bool lazy,
                                struct lg_error *err) {
        char tmp[64], dst[96], text[300];
        int r = lg_image_tmp_name(tmp, sizeof(tmp), "meta-");
        if (r < 0)
                return lg_error_set(err, r, "make a temporary name");
        snprintf(dst, sizeof(dst), "layers/%s.json", hex);
        snprintf(text, sizeof(text), "{\"diffId\": \"%s\", \"size\": %" PRIu64 "%s}\n", diff_id, size,
                 lazy ? ", \"lazy\": true" : "");
        int fd = openat(st->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return lg_error_set(err, errno, "create `%s/%s`", st->dir, tmp);
        r = lg_write_all(fd, text, strlen(text));
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        close(fd);
        /* A lazy layer's record another pull made meanwhile stays. */
        if (r >= 0 && renameat2(st->dirfd, tmp, st->dirfd, dst, lazy ? RENAME_NOREPLACE : 0) < 0)
                r = lazy && errno == EEXIST ? 1 : -errno;
        if (r != 0)
                unlinkat(st->dirfd, tmp, 0);
        return r < 0 ? lg_error_set(err, r, "write `%s/%s`", st->dir, dst) : r;
}

struct progress {
        lg_image_progress_cb cb;
        void *ud;
        const char *digest;
};

static void on_progress(void *ud, uint64_t done, uint64_t total) {
        struct progress *p = ud;
        p->cb(p->ud, "extract", p->digest, done, total);
}

int lg_image_layer_extract(lg_image_store *st, const struct lg_image_layer_desc *l, lg_image_progress_cb progress,
                           void *ud, struct lg_error *err) {
        char hex[65], diff[65], dst[96];
        int r = lg_image_digest_hex(l->digest, hex, "layer", err);
        if (r < 0)
                return r;
        if ((r = lg_image_digest_hex(l->diff_id, diff, "diff id", err)) < 0)
                return r;
        snprintf(dst, sizeof(dst), "layers/%s", hex);
        struct stat s;
        if (fstatat(st->dirfd, dst, &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(s.st_mode))
                return check_existing(st, l, err) < 0 ? -EBADMSG : 1;

        pthread_mutex_lock(&st->mu);
        struct lg_image_limits lim = st->lim;
        pthread_mutex_unlock(&st->mu);
        char what[32];
        snprintf(what, sizeof(what), "layer %.19s", l->digest);
        struct progress p = {progress, ud, l->digest};
        struct lg_extract_opts o = {
                .flags = LG_EXTRACT_OCI_LAYER,
                /* The stream is the limit; layers may compress far better
                 * than packages (sparse files), so no ratio. */
                .lim = {.max_entries = lim.layer_entries, .max_total_bytes = UINT64_MAX,
                        .max_file_bytes = UINT64_MAX, .max_stream_bytes = lim.layer_bytes,
                        .max_path_len = lim.path_len, .max_depth = lim.depth, .max_ratio = UINT32_MAX},
                .what = what,
                .entry_prefix = what,
                .expect_sha256 = diff,
                .progress = progress ? on_progress : NULL,
                .ud = &p,
        };
        _cleanup_close_ int blobfd = lg_cas_get(st->cas, hex, err);
        if (blobfd < 0)
                return blobfd;
        _cleanup_close_ int tmpfd = openat(st->dirfd, "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        _cleanup_close_ int layersfd = openat(st->dirfd, "layers", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (tmpfd < 0 || layersfd < 0)
                return lg_error_set(err, errno, "open `%s/tmp` and `%s/layers`", st->dir, st->dir);
        struct lg_extract_info info;
        r = lg_extract_tree(blobfd, tmpfd, layersfd, hex, &o, &info, err);
        if (r < 0)
                return r;
        /* r == 1: another thread extracted it meanwhile and wrote its
         * record; ours went. A crash before the record leaves a tree
         * without one, which check_existing accepts. */
        int q = r == 0 ? lg_image_layer_write_record(st, hex, l->diff_id, info.stream_bytes, false, err) : 0;
        return q < 0 ? q : r;
}
