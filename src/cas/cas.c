/* The content-addressed store (cas.h): atomic, verifying writers, reads,
 * verification, listing, removal and GC of blobs named by their sha256. */
#include "cas/cas.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#define DEFAULT_MAX_BYTES (100ull << 20)
#define BLOBS "blobs/sha256"

struct lg_cas {
        char *root;
        char *tmp_dir;
        int rootfd;
        int blob_dfd; /* <root>/blobs/sha256 */
        int tmp_dfd;  /* <root>/<tmp_dir> */
        int lock_fd;  /* <root>/lock */
        _Atomic uint64_t max_bytes;
};

struct lg_cas_writer {
        lg_cas *cas;
        int fd;
        EVP_MD_CTX *md;
        uint64_t size, max;
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

int lg_sha256(const void *buf, size_t len, uint8_t md[32]) {
        unsigned n = 0;
        if (EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
                return -EIO;
        return 0;
}

void lg_digest_from_bytes(const uint8_t md[32], struct lg_digest *ret) {
        static const char hexdig[] = "0123456789abcdef";
        for (unsigned i = 0; i < 32; i++) {
                ret->hex[2 * i] = hexdig[md[i] >> 4];
                ret->hex[2 * i + 1] = hexdig[md[i] & 15];
        }
        ret->hex[LG_DIGEST_HEX_LEN] = '\0';
}

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

int lg_digest_to_bytes(const char *hex, uint8_t md[32]) {
        if (!lg_digest_valid(hex))
                return -EINVAL;
        for (unsigned i = 0; i < 32; i++)
                md[i] = (uint8_t) (hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
        return 0;
}

/* The digest for a message: printable, cut. */
static int bad_digest(const char *hex, struct lg_error *err) {
        char shown[80];
        lg_printable(hex, shown, sizeof(shown));
        return lg_error_setm(err, EINVAL, "invalid digest `%s` (want 64 lowercase hex characters)", shown);
}

/* ---- open / close ---------------------------------------------------------- */

static int open_dir(lg_cas *cas, const char *sub, mode_t mode, struct lg_error *err) {
        char path[PATH_MAX];
        if ((size_t) snprintf(path, sizeof(path), "%s/%s", cas->root, sub) >= sizeof(path))
                return lg_error_set(err, ENAMETOOLONG, "store path `%s/%s`", cas->root, sub);
        int r = lg_mkdir_p(path, mode);
        if (r < 0)
                return lg_error_set(err, r, "create `%s`", path);
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return lg_error_set(err, errno, "open `%s`", path);
        return fd;
}

/* Remove the LG_CAS_TMP_PREFIX entries (files or trees) of the tmp dir. */
static int clean_tmp(lg_cas *cas, struct lg_error *err) {
        int fd = openat(cas->tmp_dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
                if (fd >= 0)
                        close(fd);
                return lg_error_set(err, errno, "open `%s/%s`", cas->root, cas->tmp_dir);
        }
        int ret = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, LG_CAS_TMP_PREFIX, strlen(LG_CAS_TMP_PREFIX)) != 0)
                        continue;
                char sub[PATH_MAX];
                if ((size_t) snprintf(sub, sizeof(sub), "%s/%s/%s", cas->root, cas->tmp_dir, de->d_name) >=
                    sizeof(sub))
                        continue;
                int r = lg_rm_rf(sub);
                if (r < 0 && ret == 0)
                        ret = lg_error_set(err, r, "remove stale `%s`", sub);
        }
        closedir(d);
        return ret;
}

static int lock_shared(lg_cas *cas) {
        while (flock(cas->lock_fd, LOCK_SH) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

void lg_cas_close(lg_cas *cas) {
        if (!cas)
                return;
        int fds[] = {cas->blob_dfd, cas->tmp_dfd, cas->rootfd, cas->lock_fd /* last: drops the flock */};
        for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        free(cas->root);
        free(cas->tmp_dir);
        free(cas);
}

int lg_cas_open(const char *dir, const struct lg_cas_options *o, lg_cas **ret, struct lg_error *err) {
        *ret = NULL;
        struct lg_cas_options opts = o ? *o : (struct lg_cas_options){0};
        if (!opts.tmp_dir || !*opts.tmp_dir)
                opts.tmp_dir = "tmp";
        if (!dir || !*dir)
                return lg_error_setm(err, EINVAL, "no store directory given");
        if (strlen(dir) > 2048)
                return lg_error_setm(err, ENAMETOOLONG, "store directory is longer than 2048 bytes");
        if (opts.tmp_dir[0] == '/' || strstr(opts.tmp_dir, ".."))
                return lg_error_setm(err, EINVAL, "the temporary directory must be below the store");
        lg_cas *cas = calloc(1, sizeof(*cas));
        if (!cas)
                return lg_error_set(err, ENOMEM, "allocate store");
        cas->rootfd = cas->blob_dfd = cas->tmp_dfd = cas->lock_fd = -1;
        atomic_store(&cas->max_bytes, opts.max_bytes ? opts.max_bytes : DEFAULT_MAX_BYTES);
        int r;
        if (!(cas->root = strdup(dir)) || !(cas->tmp_dir = strdup(opts.tmp_dir))) {
                r = lg_error_set(err, ENOMEM, "allocate store");
                goto fail;
        }
        if ((r = lg_mkdir_p(dir, 0755)) < 0) {
                r = lg_error_set(err, r, "create `%s`", dir);
                goto fail;
        }
        if ((cas->rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
                r = lg_error_set(err, errno, "open `%s`", dir);
                goto fail;
        }
        if ((r = cas->blob_dfd = open_dir(cas, BLOBS, 0755, err)) < 0)
                goto fail;
        if ((r = cas->tmp_dfd = open_dir(cas, opts.tmp_dir, 0700, err)) < 0)
                goto fail;
        cas->lock_fd = openat(cas->rootfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (cas->lock_fd < 0) {
                r = lg_error_set(err, errno, "open `%s/lock`", dir);
                goto fail;
        }
        /* Alone with the store: what temporaries exist were left by a crash. */
        if (flock(cas->lock_fd, LOCK_EX | LOCK_NB) == 0) {
                if ((r = clean_tmp(cas, err)) < 0)
                        goto fail;
                if (opts.on_alone && (r = opts.on_alone(cas->rootfd, opts.ud, err)) < 0)
                        goto fail;
        } else if (errno != EWOULDBLOCK) {
                r = lg_error_set(err, errno, "lock `%s/lock`", dir);
                goto fail;
        }
        if ((r = lock_shared(cas)) < 0) {
                r = lg_error_set(err, -r, "lock `%s/lock`", dir);
                goto fail;
        }
        *ret = cas;
        return 0;
fail:
        lg_cas_close(cas);
        return r;
}

const char *lg_cas_root(const lg_cas *cas) { return cas->root; }

int lg_cas_rootfd(const lg_cas *cas) { return cas->rootfd; }

void lg_cas_set_max_bytes(lg_cas *cas, uint64_t max_bytes) {
        atomic_store(&cas->max_bytes, max_bytes ? max_bytes : DEFAULT_MAX_BYTES);
}

uint64_t lg_cas_max_bytes(const lg_cas *cas) { return atomic_load(&((lg_cas *) cas)->max_bytes); }

int lg_cas_lock_alone(lg_cas *cas, struct lg_error *err) {
        if (flock(cas->lock_fd, LOCK_EX | LOCK_NB) == 0)
                return 0;
        int e = errno;
        (void) lock_shared(cas); /* a failed LOCK_EX may have dropped LOCK_SH */
        if (e == EWOULDBLOCK)
                return lg_error_setm(err, EBUSY, "store `%s` is open in another process", cas->root);
        return lg_error_set(err, e, "lock `%s/lock`", cas->root);
}

void lg_cas_unlock_alone(lg_cas *cas) { (void) lock_shared(cas); }

/* ---- writers ------------------------------------------------------------- */

static void writer_drop_tmp(lg_cas_writer *w) {
        if (w->fd >= 0) {
                close(w->fd);
                unlinkat(w->cas->tmp_dfd, w->tmp, 0);
                w->fd = -1;
        }
}

void lg_cas_abort(lg_cas_writer *w) {
        if (!w)
                return;
        writer_drop_tmp(w);
        EVP_MD_CTX_free(w->md);
        free(w);
}

uint64_t lg_cas_written(const lg_cas_writer *w) { return w->size; }

int lg_cas_begin(lg_cas *cas, uint64_t max_bytes, lg_cas_writer **ret, struct lg_error *err) {
        *ret = NULL;
        lg_cas_writer *w = calloc(1, sizeof(*w));
        if (!w)
                return lg_error_set(err, ENOMEM, "allocate blob writer");
        w->cas = cas;
        w->fd = -1;
        w->max = max_bytes ? max_bytes : lg_cas_max_bytes(cas);
        int r;
        w->md = EVP_MD_CTX_new();
        if (!w->md || EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) != 1) {
                r = lg_error_setm(err, ENOMEM, "sha256 init failed");
                goto fail;
        }
        for (int tries = 0; w->fd < 0; tries++) {
                char hex[17];
                if ((r = lg_random_hex(hex, 8)) < 0) {
                        r = lg_error_set(err, -r, "make a temporary name");
                        goto fail;
                }
                snprintf(w->tmp, sizeof(w->tmp), LG_CAS_TMP_PREFIX "put-%s", hex);
                w->fd = openat(cas->tmp_dfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (w->fd < 0 && (errno != EEXIST || tries > 8)) {
                        r = lg_error_set(err, errno, "create `%s/%s/%s`", cas->root, cas->tmp_dir, w->tmp);
                        goto fail;
                }
        }
        *ret = w;
        return 0;
fail:
        lg_cas_abort(w);
        return r;
}

/* Mark the writer failed: drop the temporary file now, remember the error. */
static int writer_fail(lg_cas_writer *w, int r, struct lg_error *err) {
        writer_drop_tmp(w);
        w->failed = r;
        if (err)
                memcpy(w->failed_msg, err->msg, sizeof(w->failed_msg));
        else
                snprintf(w->failed_msg, sizeof(w->failed_msg), "blob write failed: %s", strerror(-r));
        return r;
}

static int writer_failed(lg_cas_writer *w, struct lg_error *err) {
        if (err) {
                err->code = -w->failed;
                memcpy(err->msg, w->failed_msg, sizeof(err->msg));
        }
        return w->failed;
}

int lg_cas_write(lg_cas_writer *w, const void *buf, size_t len, struct lg_error *err) {
        if (w->failed < 0)
                return writer_failed(w, err);
        if (len > w->max - w->size) {
                char lim[32];
                lg_fmt_size(w->max, lim, sizeof(lim));
                return writer_fail(w, lg_error_setm(err, EFBIG, "blob is larger than the limit of %s", lim), err);
        }
        if (len == 0)
                return 0;
        if (EVP_DigestUpdate(w->md, buf, len) != 1)
                return writer_fail(w, lg_error_setm(err, EIO, "sha256 update failed"), err);
        int r = lg_write_all(w->fd, buf, len);
        if (r < 0)
                return writer_fail(w, lg_error_set(err, -r, "write `%s/%s/%s`", w->cas->root, w->cas->tmp_dir, w->tmp),
                                   err);
        w->size += len;
        return 0;
}

int lg_cas_commit(lg_cas_writer *w, const char *expect, struct lg_digest *ret, struct lg_error *err) {
        lg_cas *cas = w->cas;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        struct lg_digest d;
        int r;
        if (w->failed < 0) {
                r = writer_failed(w, err);
                goto out;
        }
        if (expect && !lg_digest_valid(expect)) {
                r = bad_digest(expect, err);
                goto out;
        }
        if (EVP_DigestFinal_ex(w->md, md, &mdlen) != 1 || mdlen != 32) {
                r = lg_error_setm(err, EIO, "sha256 final failed");
                goto out;
        }
        lg_digest_from_bytes(md, &d);
        if (expect && strcmp(expect, d.hex) != 0) {
                r = lg_error_setm(err, EBADMSG, "blob digest mismatch: expected sha256:%s, got sha256:%s", expect,
                                  d.hex);
                goto out;
        }
        if (fchmod(w->fd, 0444) < 0 || fsync(w->fd) < 0) {
                r = lg_error_set(err, errno, "sync `%s/%s/%s`", cas->root, cas->tmp_dir, w->tmp);
                goto out;
        }
        /* Both fds are in the root's file system: rename across them. */
        if (renameat2(cas->tmp_dfd, w->tmp, cas->blob_dfd, d.hex, RENAME_NOREPLACE) == 0) {
                r = 0;
        } else if (errno == EEXIST) {
                r = 1; /* an identical blob exists; the copy goes below */
        } else if (errno == EINVAL || errno == ENOSYS) {
                /* No RENAME_NOREPLACE here: link(2) never replaces. */
                if (linkat(cas->tmp_dfd, w->tmp, cas->blob_dfd, d.hex, 0) == 0)
                        r = 0;
                else if (errno == EEXIST)
                        r = 1;
                else
                        r = -errno;
        } else {
                r = -errno;
        }
        if (r < 0) {
                r = lg_error_set(err, -r, "move blob to `%s/" BLOBS "/%s`", cas->root, d.hex);
                goto out;
        }
        if (r == 0) {
                /* Renamed (or linked: the temporary goes below). */
                close(w->fd);
                w->fd = -1;
                (void) unlinkat(cas->tmp_dfd, w->tmp, 0);
                if (fsync(cas->blob_dfd) < 0) {
                        r = lg_error_set(err, errno, "sync `%s/" BLOBS "`", cas->root);
                        goto out;
                }
        }
        if (ret)
                *ret = d;
out:
        lg_cas_abort(w);
        return r;
}

int lg_cas_put(lg_cas *cas, const void *buf, size_t len, struct lg_digest *ret, struct lg_error *err) {
        lg_cas_writer *w;
        int r = lg_cas_begin(cas, 0, &w, err);
        if (r < 0)
                return r;
        if ((r = lg_cas_write(w, buf, len, err)) < 0) {
                lg_cas_abort(w);
                return r;
        }
        return lg_cas_commit(w, NULL, ret, err);
}

int lg_cas_put_fd(lg_cas *cas, int fd, struct lg_digest *ret, struct lg_error *err) {
        lg_cas_writer *w;
        int r = lg_cas_begin(cas, 0, &w, err);
        if (r < 0)
                return r;
        const size_t cap = 256 * 1024;
        _cleanup_free_ char *buf = malloc(cap);
        if (!buf) {
                lg_cas_abort(w);
                return lg_error_set(err, ENOMEM, "allocate read buffer");
        }
        for (;;) {
                ssize_t n = read(fd, buf, cap);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = lg_error_set(err, errno, "read blob content");
                        lg_cas_abort(w);
                        return r;
                }
                if (n == 0)
                        break;
                if ((r = lg_cas_write(w, buf, (size_t) n, err)) < 0) {
                        lg_cas_abort(w);
                        return r;
                }
        }
        return lg_cas_commit(w, NULL, ret, err);
}

/* ---- reading --------------------------------------------------------------- */

int lg_cas_get(lg_cas *cas, const char *hex, struct lg_error *err) {
        if (!lg_digest_valid(hex))
                return bad_digest(hex, err);
        int fd = openat(cas->blob_dfd, hex, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                if (errno == ENOENT)
                        return lg_error_setm(err, ENOENT, "blob sha256:%s is not in the store", hex);
                return lg_error_set(err, errno, "open blob sha256:%s", hex);
        }
        return fd;
}

int lg_cas_stat(lg_cas *cas, const char *hex, uint64_t *size) {
        if (!lg_digest_valid(hex))
                return -EINVAL;
        struct stat st;
        if (fstatat(cas->blob_dfd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        if (size)
                *size = (uint64_t) st.st_size;
        return 0;
}

int lg_cas_read(lg_cas *cas, const char *hex, uint64_t max, char **ret, size_t *len, struct lg_error *err) {
        *ret = NULL;
        if (len)
                *len = 0;
        _cleanup_close_ int fd = lg_cas_get(cas, hex, err);
        if (fd < 0)
                return fd;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return lg_error_set(err, errno, "stat blob sha256:%s", hex);
        if ((uint64_t) st.st_size > max || (uint64_t) st.st_size >= SIZE_MAX)
                return lg_error_setm(err, EFBIG, "blob sha256:%s is %" PRIu64 " bytes, more than the limit of %" PRIu64,
                                     hex, (uint64_t) st.st_size, max);
        _cleanup_free_ char *buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return lg_error_set(err, ENOMEM, "read blob sha256:%s", hex);
        ssize_t n = lg_read_all(fd, buf, (size_t) st.st_size);
        if (n < 0)
                return lg_error_set(err, (int) -n, "read blob sha256:%s", hex);
        if (n != st.st_size)
                return lg_error_setm(err, EBADMSG, "blob sha256:%s changed while read", hex);
        buf[n] = '\0';
        if (len)
                *len = (size_t) n;
        *ret = TAKE_PTR(buf);
        return 0;
}

int lg_cas_verify(lg_cas *cas, const char *hex, struct lg_error *err) {
        _cleanup_close_ int fd = lg_cas_get(cas, hex, err);
        if (fd < 0)
                return fd;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(md);
                return lg_error_setm(err, ENOMEM, "sha256 init failed");
        }
        unsigned char buf[64 * 1024], out[EVP_MAX_MD_SIZE];
        unsigned outlen = 0;
        int r = 0;
        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = lg_error_set(err, errno, "read blob sha256:%s", hex);
                        break;
                }
                if (n == 0)
                        break;
                if (EVP_DigestUpdate(md, buf, (size_t) n) != 1) {
                        r = lg_error_setm(err, EIO, "sha256 update failed");
                        break;
                }
        }
        if (r == 0 && (EVP_DigestFinal_ex(md, out, &outlen) != 1 || outlen != 32))
                r = lg_error_setm(err, EIO, "sha256 final failed");
        EVP_MD_CTX_free(md);
        if (r < 0)
                return r;
        char got[LG_DIGEST_HEX_LEN + 1];
        for (unsigned i = 0; i < 32; i++)
                snprintf(got + 2 * i, 3, "%02x", out[i]);
        if (strcmp(got, hex) != 0)
                return lg_error_setm(err, EBADMSG, "blob sha256:%s is damaged: its content has digest sha256:%s", hex,
                                     got);
        return 0;
}

int lg_cas_path(const lg_cas *cas, const char *hex, char *buf, size_t cap) {
        if (!lg_digest_valid(hex))
                return -EINVAL;
        if ((size_t) snprintf(buf, cap, "%s/" BLOBS "/%s", cas->root, hex) >= cap)
                return -ENAMETOOLONG;
        return 0;
}

int lg_cas_remove(lg_cas *cas, const char *hex, struct lg_error *err) {
        if (!lg_digest_valid(hex))
                return bad_digest(hex, err);
        if (unlinkat(cas->blob_dfd, hex, 0) < 0)
                return lg_error_set(err, errno, "remove blob sha256:%s", hex);
        return 0;
}

/* ---- listing and GC ------------------------------------------------------- */

static int cmp_digest(const void *a, const void *b) {
        return strcmp(((const struct lg_digest *) a)->hex, ((const struct lg_digest *) b)->hex);
}

int lg_cas_list(lg_cas *cas, struct lg_digest **ret, size_t *n, struct lg_error *err) {
        *ret = NULL;
        *n = 0;
        int fd = openat(cas->blob_dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
                int r = lg_error_set(err, errno, "open `%s/" BLOBS "`", cas->root);
                if (fd >= 0)
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
                int r = lg_error_set(err, errno, "read `%s/" BLOBS "`", cas->root);
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

int lg_cas_gc(lg_cas *cas, bool (*keep)(const char *hex, void *ud), void *ud, struct lg_cas_gc_result *ret,
              struct lg_error *err) {
        struct lg_cas_gc_result res = {0};
        if (ret)
                *ret = res;
        struct lg_digest *v;
        size_t n;
        int r = lg_cas_list(cas, &v, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (keep && keep(v[i].hex, ud))
                        continue;
                struct stat st;
                if (fstatat(cas->blob_dfd, v[i].hex, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (unlinkat(cas->blob_dfd, v[i].hex, 0) == 0) {
                        res.removed++;
                        res.bytes_freed += (uint64_t) st.st_size;
                }
        }
        free(v);
        if (ret)
                *ret = res;
        return 0;
}
