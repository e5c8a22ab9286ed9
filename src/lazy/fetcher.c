/* The lazy fetcher's layer table and read path (fetcher.h): READs served
 * from the chunk store or fetched by range, verified, stored; one fetch per
 * chunk at a time; the background prefetch and hydration; first-read
 * records; status counters.
 *
 * One lock (f->lock) guards the layer table, the in-flight table, the miss
 * queue and the background cursors. Nothing slow runs under it but
 * lg_chunk_store_has (a stat) while a fetch's run is chosen: the store's
 * reads and writes and every network request happen outside. */
#include <dirent.h>
#include <endian.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "image/mirrors.h"
#include "image/registry.h"
#include "lazy/chunkstore.h"
#include "lazy/fetcher.h"
#include <openssl/sha.h>

#define RUN_MAX (1u << 20)              /* one range request at most */
#define WINDOW_NO_RECORD (128u * 1024)  /* a miss's run when the layer has no record */
#define CACHE_MAX (32u << 20)           /* verified chunks kept in memory */
#define CACHE_BUCKETS 4096
#define SOURCE_MAX (64 * 1024)
#define BG_BACKOFF_MAX_NS (30ull * 1000000000)

struct layer {
        int refs;               /* f->lock */
        char hex[65];
        uint64_t node;
        lg_chunk_table *t;
        size_t n;
        uint64_t size;
        bool local;
        char *registry, *repository, *digest, *username, *password;
        bool insecure;
        char blobhex[65];       /* "" for a local layer without its digest */
        struct lg_mirrors mirrors;      /* asked first (mirrors.h) */
        struct lg_mirror_skip skip;

        /* First reads (rec_lock) */
        int acc_fd, pf_fd;
        uint8_t *seen_acc, *seen_pf;

        /* Background (f->lock) */
        uint32_t *order;        /* the prefetch record, deduplicated */
        uint8_t *in_rec;        /* bitmap of order's chunks (fixed once loaded) */
        size_t n_order, pos_order, hydrate_pos;
        size_t seq_next;        /* the chunk after the last miss's run */
        bool bg_done;

        _Atomic uint64_t fetched, misses, errors;
};

struct job {
        struct layer *L;
        size_t first, n;        /* the run of chunks: one range request */
        uint64_t bytes;
        bool background, rated, done;
        size_t order_pos;       /* background: where to rewind on failure */
        int status;
        int refs;
        struct job *next;
};

struct inflight {
        uint8_t sha[32];
        struct job *job;
};

/* A verified chunk kept in memory (struct cache). */
struct cent {
        uint8_t sha[32];
        uint32_t len;
        uint8_t *data;
        struct cent *hnext, *prev, *next;
};

/* Chunks verified by this process, least recently used dropped past
 * CACHE_MAX bytes. A READ is served from here, so a chunk is read from
 * the store and hashed once, not once per READ (EROFS reads 4 KiB..1 MiB
 * pieces of 64 KiB chunks); what it serves are the very bytes that were
 * verified, whatever happens to the stored file afterwards. Own lock. */
struct cache {
        pthread_mutex_t lock;
        struct cent *buckets[CACHE_BUCKETS];
        struct cent head;       /* LRU list: head.next most recent */
        uint64_t bytes;
        _Atomic uint64_t hits, loads;
};

struct lg_fetcher {
        char home[2048];
        struct cache cache;
        unsigned timeout_ms;
        uint64_t rate;
        lg_chunk_store *store;

        pthread_mutex_t lock;
        pthread_cond_t done_cond;       /* a job ended */
        pthread_cond_t work_cond;       /* a miss was queued */
        pthread_cond_t bg_cond;         /* background may have work */
        bool stop;

        struct layer **layers;
        size_t n_layers, cap_layers, rr;
        char (*detached)[65];
        size_t n_detached, cap_detached;

        struct inflight *inflight;
        size_t n_inflight, cap_inflight;
        struct job *queue_head, *queue_tail;
        unsigned misses_waiting;

        uint64_t t_next;                /* hydration's next slot (ns) */
        uint64_t bg_pause_until, bg_backoff;

        pthread_mutex_t rec_lock;

        pthread_t *threads;
        size_t n_threads;
        size_t running;                 /* fetch threads not ended (f->lock) */
};

/* ---- small helpers ---------------------------------------------------- */

static bool valid_hex64(const char *s) {
        size_t i = 0;
        for (; s[i]; i++)
                if (i >= 64 || !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return i == 64;
}

/* Node ids carry no state: 2 + the first 15 hex digits (60 bits), so every
 * fetcher gives a layer the same node. Two layers sharing those digits
 * cannot both be known (the second is refused). */
static uint64_t node_of(const char *hex) {
        uint64_t v = 0;
        for (int i = 0; i < 15; i++)
                v = v << 4 | (uint64_t) (hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
        return v + 2;
}

static struct timespec abs_mono(uint64_t ns) {
        return (struct timespec){.tv_sec = (time_t) (ns / 1000000000), .tv_nsec = (long) (ns % 1000000000)};
}

static bool bit(const uint8_t *b, size_t i) { return b[i / 8] & (1u << (i % 8)); }
static void set_bit(uint8_t *b, size_t i) { b[i / 8] |= (uint8_t) (1u << (i % 8)); }

/* ---- the cache of verified chunks -------------------------------------- */

static size_t cache_bucket(const uint8_t sha[32]) {
        uint64_t h;
        memcpy(&h, sha, 8);
        return (size_t) (h % CACHE_BUCKETS);
}

/* c->lock held. */
static struct cent *cache_find(struct cache *c, const uint8_t sha[32]) {
        for (struct cent *e = c->buckets[cache_bucket(sha)]; e; e = e->hnext)
                if (!memcmp(e->sha, sha, 32))
                        return e;
        return NULL;
}

static void cache_unlink(struct cache *c, struct cent *e) {
        e->prev->next = e->next;
        e->next->prev = e->prev;
        for (struct cent **p = &c->buckets[cache_bucket(e->sha)]; *p; p = &(*p)->hnext)
                if (*p == e) {
                        *p = e->hnext;
                        break;
                }
        c->bytes -= e->len;
}

static void cache_front(struct cache *c, struct cent *e) {
        e->next = c->head.next;
        e->prev = &c->head;
        c->head.next->prev = e;
        c->head.next = e;
}

/* Bytes [at, at+n) of the verified chunk sha into out: true, or false
 * when it is not cached. */
static bool cache_read(struct cache *c, const uint8_t sha[32], uint32_t len, size_t at, void *out, size_t n) {
        pthread_mutex_lock(&c->lock);
        struct cent *e = cache_find(c, sha);
        bool hit = e && e->len == len && at + n <= len;
        if (hit) {
                memcpy(out, e->data + at, n);
                e->prev->next = e->next;
                e->next->prev = e->prev;
                cache_front(c, e);
                c->hits++;
        }
        pthread_mutex_unlock(&c->lock);
        return hit;
}

/* Keep data (len bytes that hash to sha: the caller verified them); takes
 * data (malloc'd) in every case. */
static void cache_put(struct cache *c, const uint8_t sha[32], uint8_t *data, uint32_t len) {
        struct cent *e = calloc(1, sizeof(*e));
        if (!e || len > CACHE_MAX) {
                free(e);
                free(data);
                return;
        }
        memcpy(e->sha, sha, 32);
        e->len = len;
        e->data = data;
        pthread_mutex_lock(&c->lock);
        struct cent *old = cache_find(c, sha);
        if (old) {
                cache_unlink(c, old);
                free(old->data);
                free(old);
        }
        size_t b = cache_bucket(sha);
        e->hnext = c->buckets[b];
        c->buckets[b] = e;
        cache_front(c, e);
        c->bytes += len;
        while (c->bytes > CACHE_MAX) {
                struct cent *lru = c->head.prev;
                cache_unlink(c, lru);
                free(lru->data);
                free(lru);
        }
        pthread_mutex_unlock(&c->lock);
}

/* Forget the chunks of table t: a detached layer's chunks (its image
 * removed, the store's copies collected) are loaded and verified again, or
 * fetched, when a layer uses them next, as after a restart. */
static void cache_drop(struct cache *c, const lg_chunk_table *t) {
        size_t n = lg_chunk_table_count(t);
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < n && c->bytes; i++) {
                struct cent *e = cache_find(c, lg_chunk_table_at(t, i)->sha256);
                if (e) {
                        cache_unlink(c, e);
                        free(e->data);
                        free(e);
                }
        }
        pthread_mutex_unlock(&c->lock);
}

static void cache_init(struct cache *c) {
        pthread_mutex_init(&c->lock, NULL);
        c->head.next = c->head.prev = &c->head;
}

static void cache_clear(struct cache *c) {
        while (c->head.next != &c->head) {
                struct cent *e = c->head.next;
                cache_unlink(c, e);
                free(e->data);
                free(e);
        }
        pthread_mutex_destroy(&c->lock);
}

/* ---- layers ----------------------------------------------------------- */

static void layer_free(struct layer *L) {
        if (!L)
                return;
        lg_chunk_table_free(L->t);
        free(L->registry);
        free(L->repository);
        free(L->digest);
        free(L->username);
        free(L->password);
        lg_mirrors_clear(&L->mirrors);
        if (L->acc_fd >= 0)
                close(L->acc_fd);
        if (L->pf_fd >= 0)
                close(L->pf_fd);
        free(L->seen_acc);
        free(L->seen_pf);
        free(L->order);
        free(L->in_rec);
        free(L);
}

/* f->lock held. */
static void layer_put_locked(struct layer *L) {
        if (L && --L->refs == 0)
                layer_free(L);
}

static void layer_put(lg_fetcher *f, struct layer *L) {
        pthread_mutex_lock(&f->lock);
        layer_put_locked(L);
        pthread_mutex_unlock(&f->lock);
}

/* A string member: required ones must not be empty (the credentials may). */
static char *json_str_dup(json_t *o, const char *key, bool required, int *r) {
        json_t *v = json_object_get(o, key);
        if (!v) {
                if (required)
                        *r = -EINVAL;
                return NULL;
        }
        if (!json_is_string(v) || (required && !json_string_length(v)) || json_string_length(v) > 4096 ||
            strlen(json_string_value(v)) != json_string_length(v)) {
                *r = -EINVAL;
                return NULL;
        }
        char *s = strdup(json_string_value(v));
        if (!s)
                *r = -ENOMEM;
        return s;
}

static int load_source(struct layer *L, const char *path, struct lg_error *err) {
        json_error_t je;
        json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        if (!o)
                return lg_error_setm(err, EINVAL, "`%s`: %s", path, je.text);
        int r = 0;
        if (!json_is_object(o)) {
                r = -EINVAL;
                goto out;
        }
        json_t *local = json_object_get(o, "local");
        if (local && !json_is_boolean(local)) {
                r = -EINVAL;
                goto out;
        }
        /* A layer converted here has its BLOB digest (for the prefetch
         * record kept by it) and nothing to fetch from. */
        L->local = json_is_true(local);
        L->digest = json_str_dup(o, "digest", !L->local, &r);
        if (!L->local) {
                L->registry = json_str_dup(o, "registry", true, &r);
                L->repository = json_str_dup(o, "repository", true, &r);
                L->username = json_str_dup(o, "username", false, &r);
                L->password = json_str_dup(o, "password", false, &r);
                json_t *ins = json_object_get(o, "insecure");
                if (ins && !json_is_boolean(ins))
                        r = -EINVAL;
                L->insecure = json_is_true(ins);
                struct lg_error e;
                if (r >= 0 && lg_mirrors_from_json(json_object_get(o, "mirrors"), &L->mirrors, &e) < 0)
                        r = -EINVAL;
        }
        if (r >= 0 && L->digest) {
                if (strncmp(L->digest, "sha256:", 7) || !valid_hex64(L->digest + 7))
                        r = -EINVAL;
                else
                        memcpy(L->blobhex, L->digest + 7, 65);
        }
out:
        json_decref(o);
        if (r < 0)
                return lg_error_setm(err, -r, "`%s`: not a layer source (registry, repository, digest "
                                              "sha256:<hex>, mirrors; or local: true)", path);
        return 0;
}

/* Read a record of u32 LE chunk indexes: mark them in seen (if non-NULL)
 * and append the ones new to L->order. A damaged tail is ignored. */
static void load_record(struct layer *L, const char *path, uint8_t *seen, uint8_t *in_order) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        uint32_t v[1024];
        ssize_t n;
        while ((n = read(fd, v, sizeof(v))) > 0) {
                for (size_t k = 0; k < (size_t) n / 4; k++) {
                        uint32_t i = le32toh(v[k]);
                        if (i >= L->n)
                                continue;
                        if (seen)
                                set_bit(seen, i);
                        if (!bit(in_order, i)) {
                                set_bit(in_order, i);
                                L->order[L->n_order++] = i;
                        }
                }
        }
}

static int load_layer(lg_fetcher *f, const char *hex, struct layer **ret, struct lg_error *err) {
        char dir[2300], path[2400];
        snprintf(dir, sizeof(dir), "%s/lazy/layers/%s", f->home, hex);
        struct layer *L = calloc(1, sizeof(*L));
        if (!L)
                return lg_error_set(err, ENOMEM, "layer %s", hex);
        L->refs = 1;
        L->acc_fd = L->pf_fd = -1;
        memcpy(L->hex, hex, 65);
        L->node = node_of(hex);
        snprintf(path, sizeof(path), "%s/chunks", dir);
        int r = lg_chunk_table_load(path, &L->t, err);
        if (r < 0)
                goto fail;
        snprintf(path, sizeof(path), "%s/source.json", dir);
        struct stat st;
        if (stat(path, &st) < 0) {
                r = lg_error_set(err, errno, "`%s`", path);
                goto fail;
        }
        if (st.st_size > SOURCE_MAX) {
                r = lg_error_setm(err, EFBIG, "`%s`: too large", path);
                goto fail;
        }
        if ((r = load_source(L, path, err)) < 0)
                goto fail;
        L->n = lg_chunk_table_count(L->t);
        L->size = lg_chunk_table_blob_size(L->t);
        size_t bytes = L->n / 8 + 1;
        uint8_t *in_order = L->in_rec = calloc(1, bytes);
        L->seen_acc = calloc(1, bytes);
        L->seen_pf = calloc(1, bytes);
        L->order = calloc(L->n ? L->n : 1, sizeof(*L->order));
        if (!in_order || !L->seen_acc || !L->seen_pf || !L->order) {
                r = lg_error_set(err, ENOMEM, "layer %s", hex);
                goto fail;
        }
        snprintf(path, sizeof(path), "%s/accessed", dir);
        load_record(L, path, L->seen_acc, in_order);
        /* Recording is best effort: a read never fails for it. */
        L->acc_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (L->blobhex[0]) {
                snprintf(path, sizeof(path), "%s/lazy/prefetch", f->home);
                mkdir(path, 0755);
                snprintf(path, sizeof(path), "%s/lazy/prefetch/%s", f->home, L->blobhex);
                load_record(L, path, L->seen_pf, in_order);
                L->pf_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        }
        *ret = L;
        return 0;
fail:
        layer_free(L);
        return r;
}

/* f->lock held. */
static struct layer *find_hex(lg_fetcher *f, const char *hex) {
        for (size_t i = 0; i < f->n_layers; i++)
                if (!strcmp(f->layers[i]->hex, hex))
                        return f->layers[i];
        return NULL;
}

static struct layer *find_node(lg_fetcher *f, uint64_t node) {
        for (size_t i = 0; i < f->n_layers; i++)
                if (f->layers[i]->node == node)
                        return f->layers[i];
        return NULL;
}

static ssize_t detached_at(lg_fetcher *f, const char *hex) {
        for (size_t i = 0; i < f->n_detached; i++)
                if (!strcmp(f->detached[i], hex))
                        return (ssize_t) i;
        return -1;
}

/* Load layer hex unless known. explicit: an attach, which also takes a
 * detached layer back; else a rescan skips those. */
static int add_layer(lg_fetcher *f, const char *hex, bool explicit, struct lg_error *err) {
        pthread_mutex_lock(&f->lock);
        bool skip = find_hex(f, hex) || (!explicit && detached_at(f, hex) >= 0);
        pthread_mutex_unlock(&f->lock);
        if (skip)
                return 0;
        struct layer *L = NULL;
        int r = load_layer(f, hex, &L, err);
        if (r < 0)
                return r;
        pthread_mutex_lock(&f->lock);
        struct layer *other = find_node(f, L->node);
        if (other && strcmp(other->hex, hex)) {
                r = lg_error_setm(err, EEXIST, "layer %s: node id taken by layer %s", hex, other->hex);
        } else if (!other) {
                r = lg_grow((void **) &f->layers, &f->cap_layers, f->n_layers, sizeof(*f->layers), 16);
                if (r >= 0) {
                        f->layers[f->n_layers++] = L;
                        L = NULL;
                        ssize_t d = detached_at(f, hex);
                        if (d >= 0)
                                memcpy(f->detached[d], f->detached[--f->n_detached], 65);
                        pthread_cond_broadcast(&f->bg_cond);
                } else {
                        lg_error_set(err, -r, "layer %s", hex);
                }
        }
        if (L)
                layer_put_locked(L);
        pthread_mutex_unlock(&f->lock);
        return r;
}

/* Every layer directory not known yet; want: the one an attach or LOOKUP
 * names (its failure is returned; others are skipped). */
static int scan(lg_fetcher *f, const char *want, struct lg_error *err) {
        char path[2300];
        snprintf(path, sizeof(path), "%s/lazy/layers", f->home);
        DIR *d = opendir(path);
        if (!d && errno != ENOENT)
                return lg_error_set(err, errno, "`%s`", path);
        int r = 0;
        for (struct dirent *de; d && (de = readdir(d));) {
                if (!valid_hex64(de->d_name) || (want && strcmp(de->d_name, want)))
                        continue;
                struct lg_error e;
                int q = add_layer(f, de->d_name, want != NULL, &e);
                if (want && q < 0) {
                        if (err)
                                *err = e;
                        r = q;
                }
        }
        if (d)
                closedir(d);
        if (want && r == 0) {
                pthread_mutex_lock(&f->lock);
                bool known = find_hex(f, want);
                pthread_mutex_unlock(&f->lock);
                if (!known)
                        r = lg_error_setm(err, ENOENT, "layer %s: no chunks and source.json in %s", want, path);
        }
        return r;
}

static struct layer *get_node(lg_fetcher *f, uint64_t node) {
        pthread_mutex_lock(&f->lock);
        struct layer *L = find_node(f, node);
        if (L)
                L->refs++;
        pthread_mutex_unlock(&f->lock);
        return L;
}

/* ---- the in-flight table and jobs ------------------------------------- */

static struct job *inflight_find(lg_fetcher *f, const uint8_t sha[32]) {
        for (size_t i = 0; i < f->n_inflight; i++)
                if (!memcmp(f->inflight[i].sha, sha, 32))
                        return f->inflight[i].job;
        return NULL;
}

static int inflight_add(lg_fetcher *f, const uint8_t sha[32], struct job *j) {
        int r = lg_grow((void **) &f->inflight, &f->cap_inflight, f->n_inflight, sizeof(*f->inflight), 64);
        if (r < 0)
                return r;
        memcpy(f->inflight[f->n_inflight].sha, sha, 32);
        f->inflight[f->n_inflight++].job = j;
        return 0;
}

static void job_put_locked(struct job *j) {
        if (j && --j->refs == 0) {
                layer_put_locked(j->L);
                free(j);
        }
}

/* A job for chunk i of L and the missing chunks after it, stopping at one
 * that is present or being fetched (one range must be contiguous): for
 * hydration (rated) up to RUN_MAX bytes of any; otherwise, when the layer
 * has a prefetch record, up to RUN_MAX bytes of chunks in the record
 * (what a start reads, nothing it does not), else WINDOW_NO_RECORD bytes
 * (a little read-ahead, not a megabyte per miss). f->lock held. NULL for
 * memory. */
static struct job *make_job(lg_fetcher *f, struct layer *L, size_t i, bool background, bool rated) {
        struct job *j = calloc(1, sizeof(*j));
        if (!j || inflight_add(f, lg_chunk_table_at(L->t, i)->sha256, j) < 0) {
                free(j);
                return NULL;
        }
        j->L = L;
        L->refs++;
        j->first = i;
        j->n = 1;
        j->refs = 1;
        j->background = background;
        j->bytes = lg_chunk_table_at(L->t, i)->length;
        bool by_record = !rated && L->n_order > 0;
        /* Without a record, a miss right after the last one's run is a
         * sequential read: a whole RUN_MAX, not a round trip per window. */
        bool seq = !background && i && i == L->seq_next;
        uint64_t max = rated || by_record || seq ? RUN_MAX : WINDOW_NO_RECORD;
        uint64_t after = 0;
        for (size_t k = i + 1; k < L->n; k++) {
                const struct lg_chunk *c = lg_chunk_table_at(L->t, k);
                if (j->bytes + after + c->length > max || (by_record && !bit(L->in_rec, k)) || inflight_find(f, c->sha256) ||
                    lg_chunk_store_has(f->store, c->sha256) == 1 || inflight_add(f, c->sha256, j) < 0)
                        break;
                after += c->length;
                j->n++;
        }
        j->bytes += after;
        if (!background)
                L->seq_next = i + j->n;
        return j;
}

/* The fetch ended (status): its chunks are no longer in flight; whoever
 * waits looks in the store. f->lock held. */
static void finish_job(lg_fetcher *f, struct job *j, int status) {
        for (size_t i = 0; i < f->n_inflight;) {
                if (f->inflight[i].job == j)
                        f->inflight[i] = f->inflight[--f->n_inflight];
                else
                        i++;
        }
        j->done = true;
        j->status = status;
        pthread_cond_broadcast(&f->done_cond);
        pthread_cond_broadcast(&f->bg_cond);
        job_put_locked(j);
}

/* ---- fetching --------------------------------------------------------- */

/* Each fetch thread keeps one registry client (the last origin it used)
 * and its clients of mirrors. */
struct client {
        char key[8400];
        lg_registry *r;
        struct lg_mirror_clients mc;
};

static void client_close(struct client *cl) {
        lg_registry_close(cl->r);
        lg_mirror_clients_close(&cl->mc);
}

/* Store a run's chunks, each verified by the store: 0, or -EBADMSG when
 * one does not match its sha256 (the others are kept). */
static int put_run(lg_fetcher *f, struct job *j, const uint8_t *buf) {
        struct layer *L = j->L;
        uint64_t off = lg_chunk_table_at(L->t, j->first)->offset;
        int status = 0;
        for (size_t k = j->first; k < j->first + j->n; k++) {
                const struct lg_chunk *c = lg_chunk_table_at(L->t, k);
                struct lg_error err;
                int q = lg_chunk_store_put(f->store, c->sha256, buf + (c->offset - off), c->length, &err);
                if (q < 0) {
                        if (q == -EBADMSG)
                                L->errors++;
                        if (status != -EBADMSG)
                                status = q;
                } else {
                        L->fetched += c->length;
                        /* Verified by the put: served from memory. */
                        uint8_t *copy = malloc(c->length);
                        if (copy) {
                                memcpy(copy, buf + (c->offset - off), c->length);
                                cache_put(&f->cache, c->sha256, copy, c->length);
                        }
                }
        }
        return status;
}

struct mirror_accept {
        lg_fetcher *f;
        struct job *j;
        int status;
};

/* A mirror's bytes: refused whole (-EBADMSG, the mirror is skipped) when a
 * chunk does not match; the origin is asked then. */
static int mirror_accept(void *ud, const void *buf) {
        struct mirror_accept *a = ud;
        struct layer *L = a->j->L;
        uint64_t off = lg_chunk_table_at(L->t, a->j->first)->offset;
        for (size_t k = a->j->first; k < a->j->first + a->j->n; k++) {
                const struct lg_chunk *c = lg_chunk_table_at(L->t, k);
                uint8_t md[32];
                SHA256((const uint8_t *) buf + (c->offset - off), c->length, md);
                if (memcmp(md, c->sha256, 32))
                        return -EBADMSG;
        }
        a->status = put_run(a->f, a->j, buf);
        return 0;
}

static int fetch_job(lg_fetcher *f, struct client *cl, struct job *j) {
        struct layer *L = j->L;
        const struct lg_chunk *c0 = lg_chunk_table_at(L->t, j->first);
        uint64_t off = c0->offset;
        _cleanup_free_ uint8_t *buf = malloc(j->bytes);
        if (!buf)
                return -ENOMEM;
        struct lg_error err;
        int r;
        if (L->mirrors.n) {
                struct mirror_accept a = {.f = f, .j = j};
                r = lg_mirrors_range(&L->mirrors, &L->skip, &cl->mc, L->repository, L->digest, off, buf, j->bytes,
                                     mirror_accept, &a, &err);
                if (r == 0)
                        return a.status;
        }
        char key[sizeof(cl->key)];
        snprintf(key, sizeof(key), "%s\n%s\n%s\n%s\n%d", L->registry, L->repository,
                 L->username ? L->username : "", L->password ? L->password : "", L->insecure);
        if (!cl->r || strcmp(cl->key, key)) {
                lg_registry_close(cl->r);
                cl->r = NULL;
                struct lg_registry_auth auth = {.username = L->username, .password = L->password,
                                                .insecure = L->insecure};
                if ((r = lg_registry_open(L->registry, L->repository, &auth, &cl->r, &err)) < 0)
                        return r;
                /* Connecting may not take longer than a READ may wait. */
                lg_registry_set_timeouts(cl->r, f->timeout_ms < 15000 ? f->timeout_ms : 15000, 0);
                snprintf(cl->key, sizeof(cl->key), "%s", key);
        }
        r = lg_registry_blob_range(cl->r, L->digest, off, buf, j->bytes, &err);
        if (r < 0) {
                /* A fresh connection next time. */
                lg_registry_close(cl->r);
                cl->r = NULL;
                return r;
        }
        return put_run(f, j, buf);
}

static void thread_ended(lg_fetcher *f) {
        pthread_mutex_lock(&f->lock);
        f->running--;
        pthread_cond_broadcast(&f->done_cond);
        pthread_mutex_unlock(&f->lock);
}

static void *miss_thread(void *ud) {
        lg_fetcher *f = ud;
        struct client cl = {0};
        pthread_mutex_lock(&f->lock);
        while (!f->stop) {
                struct job *j = f->queue_head;
                if (!j) {
                        pthread_cond_wait(&f->work_cond, &f->lock);
                        continue;
                }
                f->queue_head = j->next;
                if (!f->queue_head)
                        f->queue_tail = NULL;
                pthread_mutex_unlock(&f->lock);
                int r = fetch_job(f, &cl, j);
                pthread_mutex_lock(&f->lock);
                finish_job(f, j, r);
        }
        pthread_mutex_unlock(&f->lock);
        client_close(&cl);
        thread_ended(f);
        return NULL;
}

/* The next background run, f->lock held: the prefetch record first, then
 * (rated, only when allowed now) the rest in order. *later: rated work is
 * waiting for its slot. */
static struct job *bg_pick(lg_fetcher *f, bool rated_ok, bool *later) {
        *later = false;
        for (size_t k = 0; k < f->n_layers; k++) {
                struct layer *L = f->layers[(f->rr + k) % f->n_layers];
                if (L->local || L->bg_done)
                        continue;
                while (L->pos_order < L->n_order) {
                        size_t pos = L->pos_order++;
                        const struct lg_chunk *c = lg_chunk_table_at(L->t, L->order[pos]);
                        if (inflight_find(f, c->sha256) || lg_chunk_store_has(f->store, c->sha256) == 1)
                                continue;
                        struct job *j = make_job(f, L, L->order[pos], true, false);
                        if (!j) {
                                L->pos_order = pos;
                                return NULL;
                        }
                        j->order_pos = pos;
                        f->rr = (f->rr + k + 1) % f->n_layers;
                        return j;
                }
                if (!f->rate) {
                        L->bg_done = true;
                        continue;
                }
                if (!rated_ok) {
                        *later = true;
                        continue;
                }
                while (L->hydrate_pos < L->n) {
                        size_t i = L->hydrate_pos++;
                        const struct lg_chunk *c = lg_chunk_table_at(L->t, i);
                        if (inflight_find(f, c->sha256) || lg_chunk_store_has(f->store, c->sha256) == 1)
                                continue;
                        struct job *j = make_job(f, L, i, true, true);
                        if (!j) {
                                L->hydrate_pos = i;
                                return NULL;
                        }
                        j->rated = true;
                        j->order_pos = L->n_order;
                        f->rr = (f->rr + k + 1) % f->n_layers;
                        return j;
                }
                L->bg_done = true;
        }
        return NULL;
}

static void *bg_thread(void *ud) {
        lg_fetcher *f = ud;
        struct client cl = {0};
        pthread_mutex_lock(&f->lock);
        while (!f->stop) {
                uint64_t now = lg_now_ns();
                /* Misses go first: nothing starts while a READ waits. */
                if (f->misses_waiting || f->queue_head) {
                        pthread_cond_wait(&f->bg_cond, &f->lock);
                        continue;
                }
                if (now < f->bg_pause_until) {
                        struct timespec ts = abs_mono(f->bg_pause_until);
                        pthread_cond_timedwait(&f->bg_cond, &f->lock, &ts);
                        continue;
                }
                bool later;
                struct job *j = bg_pick(f, f->t_next <= now, &later);
                if (!j) {
                        if (later) {
                                struct timespec ts = abs_mono(f->t_next);
                                pthread_cond_timedwait(&f->bg_cond, &f->lock, &ts);
                        } else {
                                pthread_cond_wait(&f->bg_cond, &f->lock);
                        }
                        continue;
                }
                if (j->rated)
                        f->t_next = (f->t_next > now ? f->t_next : now) + j->bytes * 1000000000ull / f->rate;
                pthread_mutex_unlock(&f->lock);
                int r = fetch_job(f, &cl, j);
                pthread_mutex_lock(&f->lock);
                struct layer *L = j->L;
                if (r < 0 && r != -EBADMSG) {
                        /* The source failed: try these again later, and
                         * slow down while it keeps failing. */
                        if (j->rated) {
                                if (L->hydrate_pos > j->first)
                                        L->hydrate_pos = j->first;
                        } else if (L->pos_order > j->order_pos) {
                                L->pos_order = j->order_pos;
                        }
                        L->bg_done = false;
                        f->bg_backoff = f->bg_backoff ? f->bg_backoff * 2 : 100000000;
                        if (f->bg_backoff > BG_BACKOFF_MAX_NS)
                                f->bg_backoff = BG_BACKOFF_MAX_NS;
                        f->bg_pause_until = lg_now_ns() + f->bg_backoff;
                } else {
                        f->bg_backoff = 0;
                }
                finish_job(f, j, r);
        }
        pthread_mutex_unlock(&f->lock);
        client_close(&cl);
        thread_ended(f);
        return NULL;
}

/* ---- the read path ---------------------------------------------------- */

static void record(lg_fetcher *f, struct layer *L, size_t i) {
        pthread_mutex_lock(&f->rec_lock);
        uint32_t v = htole32((uint32_t) i);
        if (!bit(L->seen_acc, i)) {
                set_bit(L->seen_acc, i);
                if (L->acc_fd >= 0 && write(L->acc_fd, &v, 4) != 4) {
                        /* best effort: the record only orders prefetching */
                }
        }
        if (L->pf_fd >= 0 && !bit(L->seen_pf, i)) {
                set_bit(L->seen_pf, i);
                if (write(L->pf_fd, &v, 4) != 4) {
                }
        }
        pthread_mutex_unlock(&f->rec_lock);
}

/* Bytes [at, at+n) of chunk i of L into out: from the cache of verified
 * chunks, else from the store (verified whole, then cached), else
 * fetched (or waited for) until deadline. 0 or -EIO. */
static int get_chunk(lg_fetcher *f, struct layer *L, size_t i, size_t at, void *out, size_t n, uint64_t deadline) {
        const struct lg_chunk *c = lg_chunk_table_at(L->t, i);
        for (bool waited = false;;) {
                if (cache_read(&f->cache, c->sha256, c->length, at, out, n))
                        return 0;
                struct lg_error err;
                uint8_t *buf = malloc(c->length);
                if (!buf)
                        return -EIO;
                int r = lg_chunk_store_get(f->store, c->sha256, buf, c->length, &err);
                if (r >= 0) {
                        f->cache.loads++;
                        memcpy(out, buf + at, n);
                        cache_put(&f->cache, c->sha256, buf, c->length);
                        return 0;
                }
                free(buf);
                /* -EBADMSG: the stored copy was damaged (and removed). */
                if ((r != -ENOENT && r != -EBADMSG) || L->local || waited)
                        return -EIO;
                pthread_mutex_lock(&f->lock);
                if (f->stop) {
                        pthread_mutex_unlock(&f->lock);
                        return LG_FUSE_LEAVE;
                }
                struct job *j = inflight_find(f, c->sha256);
                if (!j) {
                        if (lg_chunk_store_has(f->store, c->sha256) == 1) {
                                /* put between our get and the lock */
                                pthread_mutex_unlock(&f->lock);
                                waited = true;
                                continue;
                        }
                        j = make_job(f, L, i, false, false);
                        if (!j) {
                                pthread_mutex_unlock(&f->lock);
                                return -EIO;
                        }
                        if (f->queue_tail)
                                f->queue_tail->next = j;
                        else
                                f->queue_head = j;
                        f->queue_tail = j;
                        j->refs++; /* the queue's and ours */
                        pthread_cond_signal(&f->work_cond);
                        L->misses++;
                } else {
                        j->refs++;
                }
                f->misses_waiting++;
                struct timespec ts = abs_mono(deadline);
                while (!j->done && !f->stop)
                        if (pthread_cond_timedwait(&f->done_cond, &f->lock, &ts) == ETIMEDOUT)
                                break;
                bool done = j->done;
                if (--f->misses_waiting == 0)
                        pthread_cond_broadcast(&f->bg_cond);
                bool stop = f->stop;
                job_put_locked(j);
                pthread_mutex_unlock(&f->lock);
                if (!done)
                        return stop ? LG_FUSE_LEAVE : -EIO;
                waited = true;
        }
}

static ssize_t fetcher_read(lg_fetcher *f, struct layer *L, uint64_t off, size_t len, uint8_t *out) {
        if (off >= L->size || !len)
                return 0;
        if (len > L->size - off)
                len = (size_t) (L->size - off);
        uint64_t deadline = lg_now_ns() + (uint64_t) f->timeout_ms * 1000000;
        uint64_t end = off + len, pos = off;
        while (pos < end) {
                ssize_t i = lg_chunk_table_find(L->t, pos);
                if (i < 0)
                        return -EIO;
                const struct lg_chunk *c = lg_chunk_table_at(L->t, (size_t) i);
                record(f, L, (size_t) i);
                uint64_t c_end = c->offset + c->length;
                uint64_t to = c_end < end ? c_end : end;
                int r = get_chunk(f, L, (size_t) i, (size_t) (pos - c->offset), out + (pos - off),
                                  (size_t) (to - pos), deadline);
                if (r == LG_FUSE_LEAVE)
                        return r;
                if (r < 0) {
                        L->errors++;
                        return -EIO;
                }
                pos = c_end;
        }
        return (ssize_t) len;
}

/* ---- FUSE operations -------------------------------------------------- */

static int op_lookup(void *ud, const char *name, uint64_t *node, uint64_t *size) {
        lg_fetcher *f = ud;
        if (!valid_hex64(name))
                return -ENOENT;
        for (int pass = 0; pass < 2; pass++) {
                pthread_mutex_lock(&f->lock);
                struct layer *L = find_hex(f, name);
                if (L) {
                        *node = L->node;
                        *size = L->size;
                }
                pthread_mutex_unlock(&f->lock);
                if (L)
                        return 0;
                /* A layer written since: rescan (detached ones stay out). */
                if (pass == 0 && scan(f, NULL, NULL) < 0)
                        break;
        }
        return -ENOENT;
}

static int op_getattr(void *ud, uint64_t node, uint64_t *size) {
        lg_fetcher *f = ud;
        pthread_mutex_lock(&f->lock);
        struct layer *L = find_node(f, node);
        if (L)
                *size = L->size;
        pthread_mutex_unlock(&f->lock);
        return L ? 0 : -ENOENT;
}

static ssize_t op_read(void *ud, uint64_t node, uint64_t off, size_t len, void *buf) {
        lg_fetcher *f = ud;
        struct layer *L = get_node(f, node);
        if (!L)
                return -EIO;
        ssize_t n = fetcher_read(f, L, off, len, buf);
        layer_put(f, L);
        return n;
}

static int op_next(void *ud, uint64_t after, uint64_t *node, char name[256]) {
        lg_fetcher *f = ud;
        pthread_mutex_lock(&f->lock);
        struct layer *best = NULL;
        for (size_t i = 0; i < f->n_layers; i++) {
                struct layer *L = f->layers[i];
                if (L->node > after && (!best || L->node < best->node))
                        best = L;
        }
        if (best) {
                *node = best->node;
                memcpy(name, best->hex, 65);
        }
        pthread_mutex_unlock(&f->lock);
        return best != NULL;
}

void lg_fetcher_fuse_ops(lg_fetcher *f, struct lg_fuse_ops *ops) {
        *ops = (struct lg_fuse_ops){.lookup = op_lookup, .getattr = op_getattr, .read = op_read,
                                    .next = op_next, .ud = f};
}

/* ---- control ---------------------------------------------------------- */

int lg_fetcher_attach(lg_fetcher *f, const char *hex, struct lg_error *err) {
        if (!valid_hex64(hex))
                return lg_error_setm(err, EINVAL, "not a layer: 64 lowercase hex digits");
        return scan(f, hex, err);
}

int lg_fetcher_detach(lg_fetcher *f, const char *hex, struct lg_error *err) {
        if (!valid_hex64(hex))
                return lg_error_setm(err, EINVAL, "not a layer: 64 lowercase hex digits");
        pthread_mutex_lock(&f->lock);
        int r = 0;
        if (detached_at(f, hex) < 0) {
                r = lg_grow((void **) &f->detached, &f->cap_detached, f->n_detached, sizeof(*f->detached), 16);
                if (r >= 0)
                        memcpy(f->detached[f->n_detached++], hex, 65);
        }
        struct layer *L = find_hex(f, hex);
        if (r >= 0 && L) {
                for (size_t i = 0; i < f->n_layers; i++)
                        if (f->layers[i] == L)
                                f->layers[i] = f->layers[--f->n_layers];
                f->rr = 0;
                cache_drop(&f->cache, L->t);
                layer_put_locked(L);
        }
        pthread_mutex_unlock(&f->lock);
        if (r < 0)
                return lg_error_set(err, -r, "detach");
        return L ? 0 : lg_error_setm(err, ENOENT, "layer %s is not attached", hex);
}

int lg_fetcher_status(lg_fetcher *f, const char *hex, struct lg_fetcher_status *ret, struct lg_error *err) {
        if (!valid_hex64(hex))
                return lg_error_setm(err, EINVAL, "not a layer: 64 lowercase hex digits");
        pthread_mutex_lock(&f->lock);
        struct layer *L = find_hex(f, hex);
        if (L)
                L->refs++;
        pthread_mutex_unlock(&f->lock);
        if (!L)
                return lg_error_setm(err, ENOENT, "layer %s is not attached", hex);
        *ret = (struct lg_fetcher_status){.chunks = L->n, .bytes = L->size, .fetched_bytes = L->fetched,
                                          .misses = L->misses, .errors = L->errors};
        int r = lg_chunk_store_local(f->store, L->t, &ret->local_chunks, &ret->local_bytes);
        layer_put(f, L);
        return r < 0 ? lg_error_set(err, -r, "layer %s: chunk store", hex) : 0;
}

/* ---- life ------------------------------------------------------------- */

int lg_fetcher_new(const struct lg_fetcher_config *cfg, lg_fetcher **ret, struct lg_error *err) {
        lg_fetcher *f = calloc(1, sizeof(*f));
        if (!f)
                return lg_error_set(err, ENOMEM, "fetcher");
        snprintf(f->home, sizeof(f->home), "%s", cfg->home);
        f->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 10000;
        f->rate = cfg->rate;
        pthread_mutex_init(&f->lock, NULL);
        pthread_mutex_init(&f->rec_lock, NULL);
        cache_init(&f->cache);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&f->done_cond, &ca);
        pthread_cond_init(&f->work_cond, &ca);
        pthread_cond_init(&f->bg_cond, &ca);
        pthread_condattr_destroy(&ca);
        char dir[2100];
        snprintf(dir, sizeof(dir), "%s/lazy", f->home);
        int r = lg_chunk_store_open(dir, &f->store, err);
        if (r < 0)
                goto fail;
        if ((r = scan(f, NULL, err)) < 0)
                goto fail;
        size_t nf = cfg->fetch_threads ? cfg->fetch_threads : 8, nb = cfg->bg_threads ? cfg->bg_threads : 4;
        if (!(f->threads = calloc(nf + nb, sizeof(*f->threads)))) {
                r = lg_error_set(err, ENOMEM, "fetcher");
                goto fail;
        }
        for (; f->n_threads < nf + nb; f->n_threads++) {
                pthread_mutex_lock(&f->lock);
                f->running++;
                pthread_mutex_unlock(&f->lock);
                r = -pthread_create(&f->threads[f->n_threads], NULL, f->n_threads < nf ? miss_thread : bg_thread,
                                    f);
                if (r < 0) {
                        pthread_mutex_lock(&f->lock);
                        f->running--;
                        pthread_mutex_unlock(&f->lock);
                        lg_error_set(err, -r, "fetcher thread");
                        goto fail;
                }
        }
        *ret = f;
        return 0;
fail:
        lg_fetcher_free(f);
        return r;
}

void lg_fetcher_stop(lg_fetcher *f) {
        pthread_mutex_lock(&f->lock);
        f->stop = true;
        pthread_cond_broadcast(&f->work_cond);
        pthread_cond_broadcast(&f->bg_cond);
        pthread_cond_broadcast(&f->done_cond);
        pthread_mutex_unlock(&f->lock);
}

void lg_fetcher_free(lg_fetcher *f) {
        if (!f)
                return;
        lg_fetcher_stop(f);
        /* A fetch under way ends with its request (a registry that hangs:
         * the client's timeout); one not ended within a second is left to
         * end with the process, and so is everything it uses. */
        pthread_mutex_lock(&f->lock);
        struct timespec ts = abs_mono(lg_now_ns() + 1000000000ull);
        while (f->running > 0)
                if (pthread_cond_timedwait(&f->done_cond, &f->lock, &ts) == ETIMEDOUT)
                        break;
        bool ended = f->running == 0;
        pthread_mutex_unlock(&f->lock);
        if (!ended)
                return;
        for (size_t i = 0; i < f->n_threads; i++)
                pthread_join(f->threads[i], NULL);
        free(f->threads);
        /* Misses queued and never started. */
        pthread_mutex_lock(&f->lock);
        while (f->queue_head) {
                struct job *j = f->queue_head;
                f->queue_head = j->next;
                finish_job(f, j, -ECANCELED);
        }
        for (size_t i = 0; i < f->n_layers; i++)
                layer_put_locked(f->layers[i]);
        pthread_mutex_unlock(&f->lock);
        free(f->layers);
        free(f->detached);
        free(f->inflight);
        lg_chunk_store_close(f->store);
        pthread_cond_destroy(&f->done_cond);
        pthread_cond_destroy(&f->work_cond);
        pthread_cond_destroy(&f->bg_cond);
        pthread_mutex_destroy(&f->lock);
        pthread_mutex_destroy(&f->rec_lock);
        cache_clear(&f->cache);
        free(f);
}
