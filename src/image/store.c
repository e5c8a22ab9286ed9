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

#include "extract/extract.h"
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

bool lg_image_digest_valid(const char *d) {
        return d && !strncmp(d, "sha256:", 7) && strlen(d) == 71 && lg_image_is_hex(d + 7, 64);
}

void lg_image_digest_of(const uint8_t md[32], char out[LG_DIGEST_MAX]) {
        struct lg_digest d;
        lg_digest_from_bytes(md, &d);
        snprintf(out, LG_DIGEST_MAX, "sha256:%s", d.hex);
}

void lg_image_digest_buf(const void *buf, size_t len, char out[LG_DIGEST_MAX]) {
        uint8_t md[32] = {0};
        lg_sha256(buf, len, md); /* libcrypto does not fail on sha256 of memory */
        lg_image_digest_of(md, out);
}

int lg_image_digest_hex(const char *digest, char hex[65], const char *what, struct lg_error *err) {
        char shown[100];
        lg_printable(digest, shown, sizeof(shown));
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

int lg_image_tmp_name(char *buf, size_t cap, const char *what) {
        char hex[17];
        int r = lg_random_hex(hex, 8);
        if (r < 0)
                return r;
        if ((size_t) snprintf(buf, cap, "tmp/%s%s", what, hex) >= cap)
                return -ENAMETOOLONG;
        return 0;
}

/* ---- open / close ------------------------------------------------------- */

/* Alone with the store (nobody holds it open): what a crash left in tmp/
 * is garbage. Otherwise it may be someone's download. */
static int clean_tmp(int rootfd, void *ud, struct lg_error *err) {
        (void) ud;
        int fd = openat(rootfd, "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d) {
                if (fd >= 0)
                        close(fd);
                return errno == ENOENT ? 0 : lg_error_set(err, errno, "open `tmp`");
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && r == 0)
                        r = lg_extract_rm_tree_at(dirfd(d), de->d_name);
        closedir(d);
        return r < 0 ? lg_error_set(err, r, "clean `tmp`") : 0;
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
        st->dirfd = -1;
        st->lazy_dirfd = -1;
        pthread_mutex_init(&st->mu, NULL);
        pthread_mutex_init(&st->lazy_mu, NULL);
        lg_image_store_set_limits(st, NULL);
        /* Absolute: layer dirs are handed to sandboxes as paths. */
        if (!(st->dir = realpath(dir, NULL))) {
                r = lg_error_set(err, errno, "resolve `%s`", dir);
                goto fail;
        }
        if (mkdirat(AT_FDCWD, dir, 0755) < 0 && errno != EEXIST) {
                r = lg_error_set(err, errno, "create `%s`", dir);
                goto fail;
        }
        st->dirfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (st->dirfd < 0) {
                r = lg_error_set(err, errno, "open `%s`", dir);
                goto fail;
        }
        if (mkdirat(st->dirfd, "layers", 0755) < 0 && errno != EEXIST) {
                r = lg_error_set(err, errno, "create `%s/layers`", dir);
                goto fail;
        }
        struct lg_cas_options o = {.tmp_dir = "tmp", .max_bytes = DEFAULT_BLOB, .on_alone = clean_tmp};
        if ((r = lg_cas_open(st->dir, &o, &st->cas, err)) < 0)
                goto fail;
        *ret = st;
        return 0;
fail:
        lg_image_store_close(st);
        return r;
}

void lg_image_store_close(lg_image_store *st) {
        if (!st)
                return;
        lg_cas_close(st->cas); /* drops the flock */
        if (st->dirfd >= 0)
                close(st->dirfd);
        pthread_mutex_destroy(&st->mu);
        pthread_mutex_destroy(&st->lazy_mu);
        lg_image_index_cache_free(st->cache);
        if (st->lazy_dirfd >= 0)
                close(st->lazy_dirfd);
        free(st->lazy_dir);
        lg_mirrors_clear(&st->mirrors);
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

/* ---- blobs: the content-addressed store of src/cas ----------------------- */

struct lg_image_blob_writer {
        lg_image_store *st;
        lg_cas_writer *w;
        char expect[65]; /* "" = any */
};

int lg_image_blob_stat(lg_image_store *st, const char *hex, uint64_t *size) { return lg_cas_stat(st->cas, hex, size); }

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
        if (hex)
                memcpy(w->expect, hex, 65);
        if (!max_bytes) {
                pthread_mutex_lock(&st->mu);
                max_bytes = st->lim.blob_bytes;
                pthread_mutex_unlock(&st->mu);
        }
        int r = lg_cas_begin(st->cas, max_bytes, &w->w, err);
        if (r < 0) {
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
        return lg_cas_write(w->w, buf, len, err);
}

void lg_image_blob_abort(struct lg_image_blob_writer *w) {
        if (!w)
                return;
        lg_cas_abort(w->w);
        free(w);
}

/* Commit w (frees it): 1 when the blob was there already. A blob with no
 * expected digest is protected from GC before it becomes visible. */
static int finish(struct lg_image_blob_writer *w, char hex_out[65], struct lg_error *err) {
        lg_image_store *st = w->st;
        lg_cas_writer *cw = TAKE_PTR(w->w);
        bool any = !w->expect[0];
        char expect[65];
        memcpy(expect, w->expect, sizeof(expect));
        free(w);
        struct lg_digest d;
        int r = lg_cas_commit(cw, any ? NULL : expect, &d, err);
        if (r < 0)
                return r;
        if (any)
                (void) lg_image_pending_add(st, d.hex);
        if (hex_out)
                memcpy(hex_out, d.hex, 65);
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
        char hex[65];
        int r = lg_image_digest_hex(digest, hex, "blob", err);
        if (r < 0)
                return r;
        if (!max) {
                pthread_mutex_lock(&st->mu);
                max = st->lim.json_bytes;
                pthread_mutex_unlock(&st->mu);
        }
        return lg_cas_read(st->cas, hex, max, ret, len, err);
}
