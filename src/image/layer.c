/* Layer extraction: a layer blob (tar, tar+gzip, tar+zstd) becomes
 * layers/<hex>/, a tree in overlayfs form that sandboxes mount as a lower
 * dir (idmapped: host uids 0..65535 are the sandbox's).
 *
 * Two libarchive readers are chained: the first only decompresses the blob
 * (format "raw"), the second parses tar from what the first hands it, so
 * every uncompressed byte passes through one place where it is hashed (the
 * diff id, checked against the config) and counted (the size limit).
 *
 * The tree is written by hand relative to a directory fd, never with
 * archive_write_disk:
 * - paths: a leading '/' is dropped, `.` and empty components too; `..` is
 *   refused; length and depth are limited;
 * - parents are entered one component at a time with O_NOFOLLOW, so nothing
 *   is ever created through a symlink, even one made earlier in the layer;
 * - later entries replace earlier ones (as tar does), except that a
 *   directory over a directory only updates its metadata;
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
 *   would be a setuid by another name, trusted.* is overlayfs's own.
 *
 * It all happens in tmp/layer-<random>, renamed to layers/<hex> only when
 * complete, synced and verified: a failure leaves nothing, and two threads
 * extracting the same layer both succeed (the second's copy is dropped). */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "image/image-internal.h"

#define BUF_SIZE (64 * 1024)
#define NOBODY 65534

struct lctx {
        lg_image_store *st;
        struct lg_error *err;
        struct lg_image_limits lim;
        const struct lg_image_layer_desc *l;
        lg_image_progress_cb progress;
        void *ud;
        int blobfd;
        uint64_t blob_size, blob_read;
        struct archive *raw, *tar;
        EVP_MD_CTX *md;
        uint64_t ustream;     /* uncompressed bytes so far */
        int cb_err;           /* an error set by a callback (x->err filled) */
        int rootfd;
        uint64_t n_entries;
        bool root_set;
        mode_t root_mode;
        uid_t root_uid;
        gid_t root_gid;
        char name[160];       /* the entry, printable */
        char amsg[200];
        char path[PATH_MAX];  /* normalized */
        size_t depth;
        struct lg_tree_walk walk; /* below rootfd */
        unsigned char rbuf[BUF_SIZE]; /* compressed, from the blob */
        unsigned char ubuf[BUF_SIZE]; /* uncompressed, to the tar reader */
        unsigned char dbuf[BUF_SIZE]; /* file data */
};

static int entry_error(struct lctx *x, int errnum, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int entry_error(struct lctx *x, int errnum, const char *fmt, ...) {
        char what[384];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        return lg_error_setm(x->err, errnum, "layer %.19s: entry `%s`: %s", x->l->digest, x->name, what);
}

static const char *amsg(struct lctx *x, struct archive *a) {
        const char *s = archive_error_string(a);
        lg_image_printable(s ? s : "unknown error", x->amsg, sizeof(x->amsg));
        return x->amsg;
}

/* ---- the two readers ---- */

static la_ssize_t cb_blob_read(struct archive *a, void *ud, const void **buf) {
        struct lctx *x = ud;
        for (;;) {
                ssize_t n = read(x->blobfd, x->rbuf, sizeof(x->rbuf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        archive_set_error(a, errno, "read error");
                        return -1;
                }
                x->blob_read += (uint64_t) n;
                if (x->progress)
                        x->progress(x->ud, "extract", x->l->digest, x->blob_read, x->blob_size);
                *buf = x->rbuf;
                return n;
        }
}

static int feed_hash(struct lctx *x, const void *buf, size_t n) {
        x->ustream += n;
        if (x->ustream > x->lim.layer_bytes) {
                x->cb_err = lg_error_setm(x->err, EFBIG,
                                          "layer %.19s: uncompressed content is larger than the limit of %" PRIu64
                                          " bytes",
                                          x->l->digest, x->lim.layer_bytes);
                return -1;
        }
        if (EVP_DigestUpdate(x->md, buf, n) != 1) {
                x->cb_err = lg_error_setm(x->err, EIO, "sha256 update failed");
                return -1;
        }
        return 0;
}

static la_ssize_t cb_tar_read(struct archive *a, void *ud, const void **buf) {
        struct lctx *x = ud;
        la_ssize_t n = archive_read_data(x->raw, x->ubuf, sizeof(x->ubuf));
        if (n < 0) {
                x->cb_err = lg_error_setm(x->err, EBADMSG, "layer %.19s: corrupt compressed data: %s", x->l->digest,
                                          amsg(x, x->raw));
                archive_set_error(a, EIO, "decompression failed");
                return -1;
        }
        if (n > 0 && feed_hash(x, x->ubuf, (size_t) n) < 0) {
                archive_set_error(a, EFBIG, "limit");
                return -1;
        }
        *buf = x->ubuf;
        return n;
}

/* ---- paths ---- */

static int normalize(struct lctx *x, const char *raw, char *out, size_t *depth) {
        char why[96];
        int r = lg_archive_path(raw, out, x->lim.path_len, x->lim.depth, depth, why, sizeof(why));
        return r < 0 ? entry_error(x, -r, "%s", why) : 0;
}

/* The directory fd of path[0..plen) (borrowed, see lg_tree_walk_to),
 * missing directories created 0755 root-owned when create is set, else
 * -ENOENT with no message. */
static int open_parent(struct lctx *x, const char *path, size_t plen, bool create) {
        int fd = lg_tree_walk_to(&x->walk, path, plen, create);
        if (fd >= 0 || fd == -ENOENT)
                return fd;
        const char *at = x->walk.fail_path;
        switch (x->walk.fail) {
        case LG_TREE_SYMLINK: return entry_error(x, EINVAL, "path goes through the symlink `%s`", at);
        case LG_TREE_NOT_DIR: return entry_error(x, EINVAL, "path goes through the non-directory `%s`", at);
        case LG_TREE_CREATE: return entry_error(x, -fd, "create directory `%s`: %s", at, strerror(-fd));
        case LG_TREE_CHMOD: return entry_error(x, -fd, "chmod directory `%s`: %s", at, strerror(-fd));
        default: return entry_error(x, -fd, "open directory `%s`: %s", at, strerror(-fd));
        }
}

/* Make room for a new entry at pfd/name: 1 when a directory is there and
 * keep_dir is set (it stays), else whatever is there goes. */
static int make_room(struct lctx *x, int pfd, const char *name, bool keep_dir) {
        struct stat s;
        if (fstatat(pfd, name, &s, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : entry_error(x, errno, "stat: %s", strerror(errno));
        if (S_ISDIR(s.st_mode)) {
                if (keep_dir)
                        return 1;
                lg_tree_walk_forget(&x->walk); /* the kept parent may be inside it */
        }
        int r = lg_image_rm_tree_at(pfd, name);
        if (r < 0)
                return entry_error(x, -r, "replace the earlier entry: %s", strerror(-r));
        return 0;
}

/* ---- entries ---- */

static int skip_data(struct lctx *x) {
        for (;;) {
                la_ssize_t n = archive_read_data(x->tar, x->dbuf, sizeof(x->dbuf));
                if (n == 0)
                        return 0;
                if (n < 0)
                        return x->cb_err ? x->cb_err : entry_error(x, EBADMSG, "corrupt data: %s", amsg(x, x->tar));
        }
}

static void owner(struct archive_entry *e, uid_t *uid, gid_t *gid) {
        la_int64_t u = archive_entry_uid(e), g = archive_entry_gid(e);
        *uid = u >= 0 && u < 65536 ? (uid_t) u : NOBODY;
        *gid = g >= 0 && g < 65536 ? (gid_t) g : NOBODY;
}

static mode_t perm(struct archive_entry *e) { return archive_entry_perm(e) & 01777; /* no setuid/setgid */ }

static int make_file(struct lctx *x, struct archive_entry *e, int pfd, const char *name) {
        int r = make_room(x, pfd, name, false);
        if (r < 0)
                return r;
        _cleanup_close_ int fd =
                openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0)
                return entry_error(x, errno, "create file: %s", strerror(errno));
        for (;;) {
                la_ssize_t n = archive_read_data(x->tar, x->dbuf, sizeof(x->dbuf));
                if (n == 0)
                        break;
                if (n < 0)
                        return x->cb_err ? x->cb_err : entry_error(x, EBADMSG, "corrupt data: %s", amsg(x, x->tar));
                r = lg_write_all(fd, x->dbuf, (size_t) n);
                if (r < 0)
                        return entry_error(x, -r, "write: %s", strerror(-r));
        }
        uid_t uid;
        gid_t gid;
        owner(e, &uid, &gid);
        /* chown before chmod: chown clears the mode's special bits anyway. */
        if (fchown(fd, uid, gid) < 0 || fchmod(fd, perm(e)) < 0)
                return entry_error(x, errno, "set owner and mode: %s", strerror(errno));
        if (archive_entry_mtime_is_set(e)) {
                long ns = archive_entry_mtime_nsec(e);
                struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                                         {.tv_sec = archive_entry_mtime(e), .tv_nsec = ns >= 0 && ns < 1000000000 ? ns : 0}};
                (void) futimens(fd, ts);
        }
        return 0;
}

static int make_dir(struct lctx *x, struct archive_entry *e, int pfd, const char *name) {
        int r = make_room(x, pfd, name, true);
        if (r < 0)
                return r;
        if (r == 0 && mkdirat(pfd, name, 0700) < 0)
                return entry_error(x, errno, "create directory: %s", strerror(errno));
        _cleanup_close_ int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return entry_error(x, errno, "open directory: %s", strerror(errno));
        uid_t uid;
        gid_t gid;
        owner(e, &uid, &gid);
        if (fchown(fd, uid, gid) < 0 || fchmod(fd, perm(e)) < 0)
                return entry_error(x, errno, "set owner and mode: %s", strerror(errno));
        return skip_data(x);
}

static int make_symlink(struct lctx *x, struct archive_entry *e, int pfd, const char *name) {
        const char *target = archive_entry_symlink(e);
        if (!target)
                target = archive_entry_symlink_utf8(e);
        if (!target || !*target)
                return entry_error(x, EINVAL, "symlink without a target");
        if (strlen(target) >= 4096)
                return entry_error(x, ENAMETOOLONG, "symlink target is longer than 4095 bytes");
        int r = make_room(x, pfd, name, false);
        if (r < 0)
                return r;
        if (symlinkat(target, pfd, name) < 0)
                return entry_error(x, errno, "create symlink: %s", strerror(errno));
        uid_t uid;
        gid_t gid;
        owner(e, &uid, &gid);
        if (fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                return entry_error(x, errno, "set owner: %s", strerror(errno));
        return skip_data(x);
}

static int make_fifo(struct lctx *x, struct archive_entry *e, int pfd, const char *name) {
        int r = make_room(x, pfd, name, false);
        if (r < 0)
                return r;
        if (mknodat(pfd, name, S_IFIFO | 0600, 0) < 0)
                return entry_error(x, errno, "create FIFO: %s", strerror(errno));
        uid_t uid;
        gid_t gid;
        owner(e, &uid, &gid);
        /* fchmodat cannot skip symlinks, but this is a FIFO we just made. */
        if (fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 || fchmodat(pfd, name, perm(e), 0) < 0)
                return entry_error(x, errno, "set owner and mode: %s", strerror(errno));
        return skip_data(x);
}

static int make_hardlink(struct lctx *x, const char *rawtarget, int pfd, const char *name) {
        char target[PATH_MAX];
        size_t tdepth;
        int r = normalize(x, rawtarget, target, &tdepth);
        if (r < 0)
                return r;
        char shown[160];
        lg_image_printable(target, shown, sizeof(shown));
        if (tdepth == 0 || !strcmp(target, x->path))
                return entry_error(x, EINVAL, "hard link to `%s`: not a file of this layer", shown);
        char *slash = strrchr(target, '/');
        size_t plen = slash ? (size_t) (slash - target) : 0;
        const char *tname = slash ? slash + 1 : target;
        /* The link's own parent fd may be the directory the walk keeps,
         * which the walk to the target replaces: keep a copy. */
        _cleanup_close_ int own = pfd == x->rootfd ? -1 : fcntl(pfd, F_DUPFD_CLOEXEC, 3);
        if (pfd != x->rootfd && own < 0)
                return entry_error(x, errno, "dup: %s", strerror(errno));
        if (own >= 0)
                pfd = own;
        int tfd = open_parent(x, target, plen, false);
        if (tfd == -ENOENT)
                return entry_error(x, EINVAL, "hard link to `%s`, which is not earlier in this layer", shown);
        if (tfd < 0)
                return tfd;
        struct stat s;
        if (fstatat(tfd, tname, &s, AT_SYMLINK_NOFOLLOW) < 0)
                return entry_error(x, EINVAL, "hard link to `%s`, which is not earlier in this layer", shown);
        if (S_ISDIR(s.st_mode) || S_ISCHR(s.st_mode))
                return entry_error(x, EINVAL, "hard link to `%s`, which is not a file", shown);
        r = make_room(x, pfd, name, false);
        if (r < 0)
                return r;
        /* make_room may have made the walk forget it: walk to the target again. */
        tfd = open_parent(x, target, plen, false);
        if (tfd < 0)
                return tfd == -ENOENT ? entry_error(x, EINVAL, "hard link to `%s`, which it replaced", shown) : tfd;
        if (linkat(tfd, tname, pfd, name, 0) < 0)
                return entry_error(x, errno, "hard link to `%s`: %s", shown, strerror(errno));
        return skip_data(x);
}

static int whiteout(struct lctx *x, int pfd, const char *name) {
        if (!strcmp(name, ".wh..wh..opq")) {
                if (fsetxattr(pfd, "trusted.overlay.opaque", "y", 1, 0) < 0)
                        return entry_error(x, errno, "mark the directory opaque: %s", strerror(errno));
                return skip_data(x);
        }
        if (!strncmp(name, ".wh..wh.", 8))
                return skip_data(x); /* aufs bookkeeping */
        const char *victim = name + 4;
        if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
                return entry_error(x, EINVAL, "malformed whiteout");
        int r = make_room(x, pfd, victim, false);
        if (r < 0)
                return r;
        if (mknodat(pfd, victim, S_IFCHR | 0, makedev(0, 0)) < 0)
                return entry_error(x, errno, "create whiteout: %s", strerror(errno));
        if (fchownat(pfd, victim, 0, 0, AT_SYMLINK_NOFOLLOW) < 0)
                return entry_error(x, errno, "chown whiteout: %s", strerror(errno));
        return skip_data(x);
}

static int do_entry(struct lctx *x, struct archive_entry *e) {
        const char *raw = archive_entry_pathname(e);
        if (!raw)
                raw = archive_entry_pathname_utf8(e);
        lg_image_printable(raw, x->name, sizeof(x->name));
        if (++x->n_entries > x->lim.layer_entries)
                return lg_error_setm(x->err, EFBIG, "layer %.19s has more than %" PRIu64 " entries", x->l->digest,
                                     x->lim.layer_entries);
        if (!raw || !*raw)
                return entry_error(x, EINVAL, "entry without a name");
        int r = normalize(x, raw, x->path, &x->depth);
        if (r < 0)
                return r;
        const char *link = archive_entry_hardlink(e);
        if (!link)
                link = archive_entry_hardlink_utf8(e);
        mode_t type = archive_entry_filetype(e);
        if (x->depth == 0) {
                if (type != AE_IFDIR || link)
                        return entry_error(x, EINVAL, "the layer's root must be a directory");
                owner(e, &x->root_uid, &x->root_gid);
                x->root_mode = perm(e);
                x->root_set = true;
                return skip_data(x);
        }
        /* Inside an aufs bookkeeping directory (.wh..wh.plnk/...): skipped
         * with it. */
        for (const char *p = x->path; (p = strstr(p, ".wh..wh.")); p++)
                if (p == x->path || p[-1] == '/') {
                        if (strchr(p, '/'))
                                return skip_data(x);
                        break;
                }
        char *slash = strrchr(x->path, '/');
        size_t plen = slash ? (size_t) (slash - x->path) : 0;
        const char *name = slash ? slash + 1 : x->path;
        if (!strncmp(name, ".wh.", 4)) {
                int pfd = open_parent(x, x->path, plen, true);
                return pfd < 0 ? pfd : whiteout(x, pfd, name);
        }
        if (!link) {
                switch (type) {
                case AE_IFREG: case AE_IFDIR: case AE_IFLNK: case AE_IFIFO: break;
                case AE_IFCHR: case AE_IFBLK: case AE_IFSOCK: return skip_data(x); /* the sandbox has its /dev */
                default: return entry_error(x, EINVAL, "unsupported file type 0%o", (unsigned) type);
                }
        }
        int pfd = open_parent(x, x->path, plen, true);
        if (pfd < 0)
                return pfd;
        if (link)
                return make_hardlink(x, link, pfd, name);
        switch (type) {
        case AE_IFREG: return make_file(x, e, pfd, name);
        case AE_IFDIR: return make_dir(x, e, pfd, name);
        case AE_IFLNK: return make_symlink(x, e, pfd, name);
        default: return make_fifo(x, e, pfd, name);
        }
}

/* ---- the whole layer ---- */

static int run(struct lctx *x) {
        x->raw = archive_read_new();
        x->tar = archive_read_new();
        if (!x->raw || !x->tar)
                return lg_error_set(x->err, ENOMEM, "create archive readers");
        /* Only the decompressors built into libarchive: never one that runs
         * an external program. */
        if (archive_read_support_format_raw(x->raw) != ARCHIVE_OK ||
            archive_read_support_filter_gzip(x->raw) != ARCHIVE_OK ||
            archive_read_support_filter_zstd(x->raw) != ARCHIVE_OK ||
            archive_read_support_format_tar(x->tar) != ARCHIVE_OK)
                return lg_error_setm(x->err, ENOTSUP, "libarchive lacks tar, gzip or zstd support");
        if (archive_read_open(x->raw, x, NULL, cb_blob_read, NULL) != ARCHIVE_OK)
                return lg_error_setm(x->err, EBADMSG, "layer %.19s: %s", x->l->digest, amsg(x, x->raw));
        struct archive_entry *re;
        int ar = archive_read_next_header(x->raw, &re);
        if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
                return lg_error_setm(x->err, EBADMSG, "layer %.19s: %s", x->l->digest, amsg(x, x->raw));
        int comp = archive_filter_code(x->raw, 0);
        if (comp != ARCHIVE_FILTER_NONE && comp != ARCHIVE_FILTER_GZIP && comp != ARCHIVE_FILTER_ZSTD)
                return lg_error_setm(x->err, ENOTSUP, "layer %.19s: compression %s is not supported", x->l->digest,
                                     archive_filter_name(x->raw, 0));
        if (archive_read_open(x->tar, x, NULL, cb_tar_read, NULL) != ARCHIVE_OK)
                return x->cb_err ? x->cb_err
                                 : lg_error_setm(x->err, EBADMSG, "layer %.19s is not a tar archive: %s",
                                                 x->l->digest, amsg(x, x->tar));
        for (;;) {
                struct archive_entry *e;
                ar = archive_read_next_header(x->tar, &e);
                if (ar == ARCHIVE_EOF)
                        break;
                if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
                        if (x->cb_err)
                                return x->cb_err;
                        return lg_error_setm(x->err, EBADMSG, "layer %.19s: corrupt tar after %" PRIu64 " entries: %s",
                                             x->l->digest, x->n_entries, amsg(x, x->tar));
                }
                int r = do_entry(x, e);
                if (r < 0)
                        return r;
        }
        /* The diff id covers the whole stream, padding after the tar's end
         * included. */
        for (;;) {
                la_ssize_t n = archive_read_data(x->raw, x->ubuf, sizeof(x->ubuf));
                if (n == 0)
                        break;
                if (n < 0)
                        return lg_error_setm(x->err, EBADMSG, "layer %.19s: corrupt compressed data: %s", x->l->digest,
                                             amsg(x, x->raw));
                if (feed_hash(x, x->ubuf, (size_t) n) < 0)
                        return x->cb_err;
        }
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        if (EVP_DigestFinal_ex(x->md, md, &mdlen) != 1 || mdlen != 32)
                return lg_error_setm(x->err, EIO, "sha256 final failed");
        char got[LG_DIGEST_MAX] = "sha256:";
        for (unsigned i = 0; i < 32; i++)
                snprintf(got + 7 + 2 * i, 3, "%02x", md[i]);
        if (strcmp(got, x->l->diff_id) != 0)
                return lg_error_setm(x->err, EBADMSG, "layer %s: diff id mismatch: the config says %s, the content is %s",
                                     x->l->digest, x->l->diff_id, got);
        return 0;
}

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

static int write_meta(lg_image_store *st, const struct lg_image_layer_desc *l, uint64_t size, struct lg_error *err) {
        char tmp[64], dst[96], text[256];
        int r = lg_image_tmp_name(tmp, sizeof(tmp), "meta-");
        if (r < 0)
                return lg_error_set(err, r, "make a temporary name");
        snprintf(dst, sizeof(dst), "layers/%s.json", l->digest + 7);
        snprintf(text, sizeof(text), "{\"diffId\": \"%s\", \"size\": %" PRIu64 "}\n", l->diff_id, size);
        int fd = openat(st->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return lg_error_set(err, errno, "create `%s/%s`", st->dir, tmp);
        r = lg_write_all(fd, text, strlen(text));
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        close(fd);
        if (r >= 0 && renameat(st->dirfd, tmp, st->dirfd, dst) < 0)
                r = -errno;
        if (r < 0) {
                unlinkat(st->dirfd, tmp, 0);
                return lg_error_set(err, r, "write `%s/%s`", st->dir, dst);
        }
        return 0;
}

int lg_image_layer_extract(lg_image_store *st, const struct lg_image_layer_desc *l, lg_image_progress_cb progress,
                           void *ud, struct lg_error *err) {
        char hex[65], dst[96];
        int r = lg_image_digest_hex(l->digest, hex, "layer", err);
        if (r < 0)
                return r;
        snprintf(dst, sizeof(dst), "layers/%s", hex);
        struct stat s;
        if (fstatat(st->dirfd, dst, &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(s.st_mode))
                return check_existing(st, l, err) < 0 ? -EBADMSG : 1;

        struct lctx *x = calloc(1, sizeof(*x));
        if (!x)
                return lg_error_set(err, ENOMEM, "allocate layer extraction");
        x->st = st;
        x->err = err;
        x->l = l;
        x->progress = progress;
        x->ud = ud;
        x->rootfd = x->blobfd = -1;
        lg_tree_walk_init(&x->walk, -1);
        pthread_mutex_lock(&st->mu);
        x->lim = st->lim;
        pthread_mutex_unlock(&st->mu);
        char tmp[64] = "";
        x->blobfd = lg_cas_get(st->cas, hex, err);
        if (x->blobfd < 0) {
                r = x->blobfd;
                goto out;
        }
        if (fstat(x->blobfd, &s) < 0) {
                r = lg_error_set(err, errno, "stat layer blob %s", l->digest);
                goto out;
        }
        x->blob_size = (uint64_t) s.st_size;
        x->md = EVP_MD_CTX_new();
        if (!x->md || EVP_DigestInit_ex(x->md, EVP_sha256(), NULL) != 1) {
                r = lg_error_setm(err, ENOMEM, "sha256 init failed");
                goto out;
        }
        if ((r = lg_image_tmp_name(tmp, sizeof(tmp), "layer-")) < 0) {
                tmp[0] = '\0';
                r = lg_error_set(err, r, "make a temporary name");
                goto out;
        }
        if (mkdirat(st->dirfd, tmp, 0700) < 0) {
                r = lg_error_set(err, errno, "create `%s/%s`", st->dir, tmp);
                tmp[0] = '\0';
                goto out;
        }
        x->rootfd = openat(st->dirfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (x->rootfd < 0) {
                r = lg_error_set(err, errno, "open `%s/%s`", st->dir, tmp);
                goto out;
        }
        lg_tree_walk_init(&x->walk, x->rootfd);
        r = run(x);
        if (r < 0)
                goto out;
        if (fchown(x->rootfd, x->root_set ? x->root_uid : 0, x->root_set ? x->root_gid : 0) < 0 ||
            fchmod(x->rootfd, x->root_set ? x->root_mode : 0755) < 0 || syncfs(x->rootfd) < 0) {
                r = lg_error_set(err, errno, "finish `%s/%s`", st->dir, tmp);
                goto out;
        }
        r = write_meta(st, l, x->ustream, err);
        if (r < 0)
                goto out;
        r = lg_rename_noreplace_at(st->dirfd, tmp, dst);
        if (r < 0) {
                r = lg_error_set(err, r, "move layer %s into place", l->digest);
                goto out;
        }
        if (r == 0) {
                tmp[0] = '\0';
                int lfd = openat(st->dirfd, "layers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (lfd >= 0) {
                        (void) fsync(lfd);
                        close(lfd);
                }
        }
        /* r == 1: another thread extracted it meanwhile; ours goes. */
out:
        if (x->tar)
                archive_read_free(x->tar);
        if (x->raw)
                archive_read_free(x->raw);
        EVP_MD_CTX_free(x->md);
        if (x->blobfd >= 0)
                close(x->blobfd);
        lg_tree_walk_forget(&x->walk);
        if (x->rootfd >= 0)
                close(x->rootfd);
        if (tmp[0])
                (void) lg_image_rm_tree_at(st->dirfd, tmp);
        free(x);
        return r;
}
