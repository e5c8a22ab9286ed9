/* The blobs a node serves to other nodes (serve.h): found by digest among
 * the image store's blobs, the lazy layers' small files (by the sha256 of
 * their content, kept in a cache keyed by the file's identity so that a
 * file is hashed once until it changes) and the lazy layers' BLOBs
 * (assembled from verified chunks). */
#include "lazy/serve.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cas/cas.h"
#include "lazy/chunks.h"
#include "lazy/chunkstore.h"
#include "lazy/lazy.h"

#define CACHE_MAX 4096 /* entries; beyond, the cache starts again */

struct job;

/* What a file's content says, valid while the file keeps its identity. */
struct ident {
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime, ctime;
};

struct cache_ent {
        char *path;
        struct ident id;
        char hex[65];   /* the sha256 of a data file; the BLOB digest of a source.json */
        bool local;     /* source.json: {"local": true} */
        uint64_t gen;   /* the last scan that saw it */
};

struct lg_lazy_serve {
        uv_loop_t *loop;
        char *images_dir, *lazy_dir, *fuse_dir;
        lg_chunk_store *store;
        pthread_mutex_t mu; /* cache, n, cap, gen */
        struct cache_ent *cache;
        size_t n, cap;
        uint64_t gen;
        /* The async calls (loop thread only). */
        unsigned running;                     /* jobs on the thread pool */
        struct job *waiting, *waiting_tail;   /* FIFO of jobs for later */
};

enum kind { K_FILE, K_LAZY };

struct lg_lazy_serve_blob {
        lg_lazy_serve *s;
        enum kind kind;
        int fd;          /* K_FILE: the file; K_LAZY: the FUSE blob file once opened, else -1 */
        uint64_t size;
        /* K_LAZY */
        lg_chunk_table *table;
        char layer_hex[65];
        bool local;
        uint8_t *cbuf;   /* the last chunk read (chunk size bytes) */
        ssize_t cidx;    /* its index, -1: none */
};

/* ---- helpers ------------------------------------------------------------------ */

static bool is_hex64(const char *s) {
        size_t i = 0;
        for (; s[i]; i++)
                if (i >= 64 || !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return i == 64;
}

static void ident_of(const struct stat *st, struct ident *id) {
        *id = (struct ident){.dev = st->st_dev, .ino = st->st_ino, .size = st->st_size, .mtime = st->st_mtim,
                             .ctime = st->st_ctim};
}

static bool ident_eq(const struct ident *a, const struct ident *b) {
        return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
               a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
               a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static void hex_of(const uint8_t md[32], char out[65]) {
        static const char x[] = "0123456789abcdef";
        for (int i = 0; i < 32; i++) {
                out[2 * i] = x[md[i] >> 4];
                out[2 * i + 1] = x[md[i] & 15];
        }
        out[64] = '\0';
}

/* sha256 of the size bytes of fd, read with pread. */
static int sha256_fd(int fd, uint64_t size, char out[65]) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(ctx);
                return -ENOMEM;
        }
        _cleanup_free_ char *buf = malloc(1 << 20);
        int r = buf ? 0 : -ENOMEM;
        for (uint64_t off = 0; r >= 0 && off < size;) {
                size_t want = size - off < (1u << 20) ? (size_t) (size - off) : (1u << 20);
                ssize_t n = lg_pread_all(fd, buf, want, (off_t) off);
                if (n < 0)
                        r = (int) n;
                else if ((size_t) n != want)
                        r = -EIO; /* shrank while hashed */
                else if (EVP_DigestUpdate(ctx, buf, want) != 1)
                        r = -ENOMEM;
                off += want;
        }
        uint8_t md[32];
        unsigned mdlen = 0;
        if (r >= 0 && EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
                r = -ENOMEM;
        EVP_MD_CTX_free(ctx);
        if (r >= 0)
                hex_of(md, out);
        return r;
}

/* ---- the identity cache ------------------------------------------------------- */

/* The cached entry for path with identity id into *out: true on a hit. */
static bool cache_get(lg_lazy_serve *s, const char *path, const struct ident *id, uint64_t gen,
                      struct cache_ent *out) {
        bool hit = false;
        pthread_mutex_lock(&s->mu);
        for (size_t i = 0; i < s->n; i++) {
                if (strcmp(s->cache[i].path, path))
                        continue;
                if (ident_eq(&s->cache[i].id, id)) {
                        s->cache[i].gen = gen;
                        *out = s->cache[i];
                        out->path = NULL;
                        hit = true;
                }
                break;
        }
        pthread_mutex_unlock(&s->mu);
        return hit;
}

static void cache_put(lg_lazy_serve *s, const char *path, const struct ident *id, const char *hex, bool local,
                      uint64_t gen) {
        pthread_mutex_lock(&s->mu);
        size_t i = 0;
        while (i < s->n && strcmp(s->cache[i].path, path))
                i++;
        if (i == s->n) {
                if (s->n >= CACHE_MAX) {
                        for (size_t j = 0; j < s->n; j++)
                                free(s->cache[j].path);
                        s->n = i = 0;
                }
                char *p = strdup(path);
                if (!p || lg_grow((void **) &s->cache, &s->cap, s->n + 1, sizeof(*s->cache), 64) < 0) {
                        free(p); /* only a cache */
                        pthread_mutex_unlock(&s->mu);
                        return;
                }
                s->cache[s->n++] = (struct cache_ent){.path = p};
        }
        struct cache_ent *e = &s->cache[i];
        e->id = *id;
        snprintf(e->hex, sizeof(e->hex), "%s", hex);
        e->local = local;
        e->gen = gen;
        pthread_mutex_unlock(&s->mu);
}

/* After a whole scan: entries it did not see name files gone. */
static void cache_prune(lg_lazy_serve *s, uint64_t gen) {
        pthread_mutex_lock(&s->mu);
        size_t k = 0;
        for (size_t i = 0; i < s->n; i++) {
                if (s->cache[i].gen < gen)
                        free(s->cache[i].path);
                else
                        s->cache[k++] = s->cache[i];
        }
        s->n = k;
        pthread_mutex_unlock(&s->mu);
}

/* ---- finding a digest ------------------------------------------------------------ */

/* Open a regular file (no symlink) read-only with its identity. */
static int open_regular(const char *path, struct ident *id) {
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return -ENOENT;
        }
        ident_of(&st, id);
        return fd;
}

/* source.json of a lazy layer: the BLOB digest's hex and whether the
 * layer was converted here. -ENOENT when it is not a usable one. */
static int source_of(lg_lazy_serve *s, const char *path, uint64_t gen, char hex[65], bool *local) {
        struct ident id;
        _cleanup_close_ int fd = open_regular(path, &id);
        if (fd < 0)
                return fd;
        struct cache_ent e;
        if (cache_get(s, path, &id, gen, &e)) {
                snprintf(hex, 65, "%s", e.hex);
                *local = e.local;
                return e.hex[0] ? 0 : -ENOENT;
        }
        char buf[16384];
        ssize_t n = id.size < (off_t) sizeof(buf) ? lg_pread_all(fd, buf, sizeof(buf) - 1, 0) : -EFBIG;
        json_t *j = n > 0 ? json_loadb(buf, (size_t) n, JSON_REJECT_DUPLICATES, NULL) : NULL;
        const char *d = json_string_value(json_object_get(j, "digest"));
        hex[0] = '\0';
        if (d && !strncmp(d, "sha256:", 7) && is_hex64(d + 7))
                snprintf(hex, 65, "%s", d + 7);
        *local = json_is_true(json_object_get(j, "local"));
        json_decref(j);
        cache_put(s, path, &id, hex, *local, gen);
        return hex[0] ? 0 : -ENOENT;
}

/* Does the file at path hash to want? Its fd (the caller's) when it does. */
static int data_file_is(lg_lazy_serve *s, const char *path, const char *want, uint64_t gen, uint64_t *size) {
        struct ident id;
        int fd = open_regular(path, &id);
        if (fd < 0)
                return fd;
        struct cache_ent e;
        char hex[65];
        if (cache_get(s, path, &id, gen, &e)) {
                snprintf(hex, sizeof(hex), "%s", e.hex);
        } else {
                int r = sha256_fd(fd, (uint64_t) id.size, hex);
                if (r < 0) {
                        close(fd);
                        return r;
                }
                cache_put(s, path, &id, hex, false, gen);
        }
        if (strcmp(hex, want)) {
                close(fd);
                return -ENOENT;
        }
        *size = (uint64_t) id.size;
        return fd;
}

static int blob_new(lg_lazy_serve *s, enum kind kind, lg_lazy_serve_blob **ret) {
        lg_lazy_serve_blob *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->s = s;
        b->kind = kind;
        b->fd = -1;
        b->cidx = -1;
        *ret = b;
        return 0;
}

static int open_file_blob(lg_lazy_serve *s, int fd, uint64_t size, lg_lazy_serve_blob **ret) {
        int r = blob_new(s, K_FILE, ret);
        if (r < 0) {
                close(fd);
                return r;
        }
        (*ret)->fd = fd;
        (*ret)->size = size;
        return 0;
}

static int open_lazy_blob(lg_lazy_serve *s, const char *layer_hex, bool local, lg_lazy_serve_blob **ret,
                          struct lg_error *err) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/layers/%s/" LG_LAZY_CHUNKS, s->lazy_dir, layer_hex);
        lg_chunk_table *t = NULL;
        int r = lg_chunk_table_load(p, &t, err);
        if (r < 0)
                return r;
        lg_lazy_serve_blob *b = NULL;
        if ((r = blob_new(s, K_LAZY, &b)) < 0 || !(b->cbuf = malloc(lg_chunk_table_chunk_size(t)))) {
                lg_chunk_table_free(t);
                free(b);
                return lg_error_set(err, ENOMEM, "a blob of layer %s", layer_hex);
        }
        b->table = t;
        b->size = lg_chunk_table_blob_size(t);
        b->local = local;
        snprintf(b->layer_hex, sizeof(b->layer_hex), "%s", layer_hex);
        *ret = b;
        return 0;
}

/* A digest among the lazy layers: a BLOB first (cheap: source.json),
 * then the small files. 1 found, 0 not, < 0 an error. */
static int find_lazy(lg_lazy_serve *s, const char *hex, lg_lazy_serve_blob **ret, struct lg_error *err) {
        pthread_mutex_lock(&s->mu);
        uint64_t gen = ++s->gen;
        pthread_mutex_unlock(&s->mu);
        char dir[4096], p[4400];
        snprintf(dir, sizeof(dir), "%s/layers", s->lazy_dir);
        struct lg_strlist layers = {0};
        DIR *d = opendir(dir);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d)))
                        if (is_hex64(de->d_name))
                                lg_strlist_add(&layers, de->d_name);
                closedir(d);
        }
        int found = 0;
        for (size_t i = 0; !found && i < layers.n; i++) {
                char blob[65];
                bool local = false;
                snprintf(p, sizeof(p), "%s/%s/source.json", dir, layers.v[i]);
                if (source_of(s, p, gen, blob, &local) == 0 && !strcmp(blob, hex)) {
                        int r = open_lazy_blob(s, layers.v[i], local, ret, err);
                        found = r < 0 ? r : 1;
                }
        }
        static const char *const files[] = {LG_LAZY_META, LG_LAZY_CHUNKS, "prefetch"};
        for (size_t i = 0; !found && i < layers.n; i++) {
                for (size_t k = 0; !found && k < ARRAY_SIZE(files); k++) {
                        snprintf(p, sizeof(p), "%s/%s/%s", dir, layers.v[i], files[k]);
                        uint64_t size = 0;
                        int fd = data_file_is(s, p, hex, gen, &size);
                        if (fd >= 0) {
                                int r = open_file_blob(s, fd, size, ret);
                                found = r < 0 ? lg_error_set(err, -r, "blob") : 1;
                        }
                }
        }
        lg_strlist_clear(&layers);
        snprintf(dir, sizeof(dir), "%s/prefetch", s->lazy_dir);
        d = found ? NULL : opendir(dir);
        if (d) {
                struct dirent *de;
                while (!found && (de = readdir(d))) {
                        if (!is_hex64(de->d_name))
                                continue;
                        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
                        uint64_t size = 0;
                        int fd = data_file_is(s, p, hex, gen, &size);
                        if (fd >= 0) {
                                int r = open_file_blob(s, fd, size, ret);
                                found = r < 0 ? lg_error_set(err, -r, "blob") : 1;
                        }
                }
                closedir(d);
                if (!found)
                        cache_prune(s, gen);
        }
        return found;
}

int lg_lazy_serve_open(lg_lazy_serve *s, const char *digest, lg_lazy_serve_blob **ret, uint64_t *size,
                       struct lg_error *err) {
        if (!digest || strncmp(digest, "sha256:", 7) || !is_hex64(digest + 7))
                return lg_error_setm(err, EINVAL, "`%.80s` is not a digest (sha256:<64 lowercase hex>)",
                                     digest ? digest : "");
        const char *hex = digest + 7;
        *ret = NULL;
        if (s->images_dir) {
                char p[4200];
                snprintf(p, sizeof(p), "%s/blobs/sha256/%s", s->images_dir, hex);
                struct ident id;
                int fd = open_regular(p, &id);
                if (fd >= 0) {
                        int r = open_file_blob(s, fd, (uint64_t) id.size, ret);
                        if (r < 0)
                                return lg_error_set(err, -r, "blob %s", digest);
                        *size = (*ret)->size;
                        return 0;
                }
        }
        int r = s->lazy_dir ? find_lazy(s, hex, ret, err) : 0;
        if (r < 0)
                return r;
        if (r == 0)
                return lg_error_setm(err, ENOENT, "no blob %s here", digest);
        *size = (*ret)->size;
        return 0;
}

/* ---- reading ------------------------------------------------------------------------ */

/* Chunk i of a lazy blob into b->cbuf, verified: from the chunk store, else
 * through the node's FUSE blob file (its fetcher fetches and verifies it;
 * checked again here). */
static int load_chunk(lg_lazy_serve_blob *b, size_t i, struct lg_error *err) {
        const struct lg_chunk *c = lg_chunk_table_at(b->table, i);
        lg_lazy_serve *s = b->s;
        struct lg_error e2 = {0};
        int r = lg_chunk_store_get(s->store, c->sha256, b->cbuf, c->length, &e2);
        if (r >= 0 || (r != -ENOENT && r != -EBADMSG))
                return r < 0 ? lg_error_wrap(err, r, "%s", e2.msg) : 0;
        if (b->local || !s->fuse_dir)
                return lg_error_setm(err, EIO, "chunk %zu of layer %s is not on this node", i, b->layer_hex);
        if (b->fd < 0) {
                char p[4200];
                snprintf(p, sizeof(p), "%s/%s", s->fuse_dir, b->layer_hex);
                b->fd = open(p, O_RDONLY | O_CLOEXEC);
                if (b->fd < 0)
                        return lg_error_setm(err, EIO, "chunk %zu of layer %s is not on this node and its fetcher "
                                                       "does not serve the layer (%s)", i, b->layer_hex,
                                             strerror(errno));
        }
        ssize_t n = lg_pread_all(b->fd, b->cbuf, c->length, (off_t) c->offset);
        if (n < 0)
                return lg_error_set(err, (int) -n, "chunk %zu of layer %s through the node's fetcher", i,
                                    b->layer_hex);
        uint8_t md[32];
        r = 0;
        if ((size_t) n != c->length || (r = lg_sha256(b->cbuf, c->length, md)) < 0 ||
            memcmp(md, c->sha256, 32))
                return lg_error_setm(err, r < 0 ? -r : EBADMSG,
                                     "chunk %zu of layer %s: the node's fetcher gave bytes that do not match", i,
                                     b->layer_hex);
        return 0;
}

int lg_lazy_serve_read(lg_lazy_serve_blob *b, uint64_t off, void *buf, size_t len, struct lg_error *err) {
        if (off > b->size || len > b->size - off)
                return lg_error_setm(err, ERANGE, "bytes %" PRIu64 "+%zu past the end (%" PRIu64 ")", off, len,
                                     b->size);
        if (b->kind == K_FILE) {
                ssize_t n = lg_pread_all(b->fd, buf, len, (off_t) off);
                if (n < 0)
                        return lg_error_set(err, (int) -n, "read a blob");
                return (size_t) n == len ? 0 : lg_error_setm(err, EIO, "%s", "a blob shrank while it was read");
        }
        uint8_t *out = buf;
        while (len > 0) {
                ssize_t i = lg_chunk_table_find(b->table, off);
                if (i < 0)
                        return lg_error_setm(err, ERANGE, "offset %" PRIu64 " past the table", off);
                if (i != b->cidx) {
                        b->cidx = -1;
                        int r = load_chunk(b, (size_t) i, err);
                        if (r < 0)
                                return r;
                        b->cidx = i;
                }
                const struct lg_chunk *c = lg_chunk_table_at(b->table, (size_t) i);
                size_t k = (size_t) (off - c->offset), n = c->length - k < len ? c->length - k : len;
                memcpy(out, b->cbuf + k, n);
                out += n;
                off += n;
                len -= n;
        }
        return 0;
}

void lg_lazy_serve_blob_close(lg_lazy_serve_blob *b) {
        if (!b)
                return;
        if (b->fd >= 0)
                close(b->fd);
        lg_chunk_table_free(b->table);
        free(b->cbuf);
        free(b);
}

const char *lg_lazy_serve_blob_kind(const lg_lazy_serve_blob *b) { return b->kind == K_FILE ? "file" : "lazy"; }

/* ---- the handle ---------------------------------------------------------------------- */

int lg_lazy_serve_new(const struct lg_lazy_serve_config *cfg, lg_lazy_serve **ret, struct lg_error *err) {
        lg_lazy_serve *s = calloc(1, sizeof(*s));
        if (!s)
                return lg_error_set(err, ENOMEM, "lazy serve");
        pthread_mutex_init(&s->mu, NULL);
        s->loop = cfg->loop;
        int r = 0;
        if ((cfg->images_dir && !(s->images_dir = strdup(cfg->images_dir))) ||
            (cfg->lazy_dir && !(s->lazy_dir = strdup(cfg->lazy_dir))) ||
            (cfg->fuse_dir && !(s->fuse_dir = strdup(cfg->fuse_dir))))
                r = lg_error_set(err, ENOMEM, "lazy serve");
        if (r >= 0 && s->lazy_dir)
                r = lg_chunk_store_open(s->lazy_dir, &s->store, err);
        if (r < 0) {
                lg_lazy_serve_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

void lg_lazy_serve_free(lg_lazy_serve *s) {
        if (!s)
                return;
        for (size_t i = 0; i < s->n; i++)
                free(s->cache[i].path);
        free(s->cache);
        lg_chunk_store_close(s->store);
        pthread_mutex_destroy(&s->mu);
        free(s->images_dir);
        free(s->lazy_dir);
        free(s->fuse_dir);
        free(s);
}

/* ---- off the loop ------------------------------------------------------------------- */

struct job {
        uv_work_t w;
        struct job *next; /* waiting for a thread */
        lg_lazy_serve *s;
        lg_lazy_serve_blob *b;
        char digest[80];
        uint64_t off, size;
        void *buf;
        size_t len;
        lg_lazy_serve_open_cb open_cb;
        lg_lazy_serve_read_cb read_cb;
        void *ud;
        int status;
        struct lg_error err;
};

static void job_run(uv_work_t *w) {
        struct job *j = w->data;
        if (j->open_cb)
                j->status = lg_lazy_serve_open(j->s, j->digest, &j->b, &j->size, &j->err);
        else
                j->status = lg_lazy_serve_read(j->b, j->off, j->buf, j->len, &j->err);
}

static void job_call(struct job *j) {
        if (j->open_cb)
                j->open_cb(j->ud, j->status, j->b, j->size, &j->err);
        else
                j->read_cb(j->ud, j->status, &j->err);
        free(j);
}

static void job_done(uv_work_t *w, int status);

/* Start waiting jobs while threads are free; one that cannot be queued
 * is answered with the error (we are on the loop, in a callback). */
static void jobs_start(lg_lazy_serve *s) {
        while (s->waiting && s->running < LG_LAZY_SERVE_THREADS) {
                struct job *j = s->waiting;
                s->waiting = j->next;
                if (!s->waiting)
                        s->waiting_tail = NULL;
                j->w.data = j;
                int r = uv_queue_work(s->loop, &j->w, job_run, job_done);
                if (r < 0) {
                        j->status = lg_error_setm(&j->err, -r, "%s", "cannot queue work");
                        job_call(j);
                        continue;
                }
                s->running++;
        }
}

static void job_done(uv_work_t *w, int status) {
        struct job *j = w->data;
        lg_lazy_serve *s = j->s;
        (void) status; /* never cancelled: uv_cancel is not used */
        s->running--;
        jobs_start(s);
        job_call(j);
}

/* Jobs wait their turn: a peer asking for many ranges through a fetcher
 * that waits on a registry must not take every thread of the pool, which
 * the node's own sandbox and image work needs. */
static int job_queue(lg_lazy_serve *s, struct job *j) {
        if (s->running < LG_LAZY_SERVE_THREADS) {
                j->w.data = j;
                int r = uv_queue_work(s->loop, &j->w, job_run, job_done);
                if (r < 0) {
                        free(j);
                        return r;
                }
                s->running++;
                return 0;
        }
        if (s->waiting_tail)
                s->waiting_tail->next = j;
        else
                s->waiting = j;
        s->waiting_tail = j;
        return 0;
}

int lg_lazy_serve_open_async(lg_lazy_serve *s, const char *digest, lg_lazy_serve_open_cb cb, void *ud) {
        if (!s->loop)
                return -EINVAL;
        struct job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (struct job){.s = s, .open_cb = cb, .ud = ud};
        /* Too long to be a digest: left empty, refused by the open. */
        if (strlen(digest) < sizeof(j->digest))
                snprintf(j->digest, sizeof(j->digest), "%s", digest);
        return job_queue(s, j);
}

int lg_lazy_serve_read_async(lg_lazy_serve_blob *b, uint64_t off, void *buf, size_t len, lg_lazy_serve_read_cb cb,
                             void *ud) {
        if (!b->s->loop)
                return -EINVAL;
        struct job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (struct job){.s = b->s, .b = b, .off = off, .buf = buf, .len = len, .read_cb = cb, .ud = ud};
        return job_queue(b->s, j);
}
