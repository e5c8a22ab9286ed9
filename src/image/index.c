/* The image index (images.json: which manifests are images, and their
 * names), lookups by name, id or digest, list, remove, and GC of what no
 * image refers to.
 *
 * images.json is {"images": [{"manifest": "sha256:..", "id": "sha256:..",
 * "names": [...], "dangling": true}]} ("dangling" only when true; an index
 * written before it existed reads as none dangling). It is re-read for
 * every operation (another process may have changed it; lookups parse it
 * again only when it changed, see struct lg_image_index_cache) and
 * replaced by rename; changes happen under the handle's mutex and an
 * exclusive flock of index.lock, so that two processes never lose each
 * other's updates. An image with no names stays: imported untagged, or
 * dangling once its last name moved to another image (as Docker's
 * `<none>` images), because an app revision or pool group may still run it
 * by id; GC drops a dangling image unless its id is in the keep list. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "extract/extract.h"
#include "image/image-internal.h"

struct rec {
        char manifest[LG_DIGEST_MAX];
        char id[LG_DIGEST_MAX];
        char **names; /* sorted, NULL-terminated */
        size_t n_names;
        bool dangling; /* no names: its last one moved to another image */
};

struct idx {
        struct rec *v;
        size_t n;
};

static void idx_free(struct idx *x) {
        for (size_t i = 0; i < x->n; i++)
                lg_image_strv_free(x->v[i].names);
        free(x->v);
        x->v = NULL;
        x->n = 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *) a, *(char *const *) b); }

static int rec_add_name(struct rec *r, const char *name) {
        for (size_t i = 0; i < r->n_names; i++)
                if (!strcmp(r->names[i], name))
                        return 0;
        char **nv = realloc(r->names, (r->n_names + 2) * sizeof(*nv));
        if (!nv)
                return -ENOMEM;
        r->names = nv;
        if (!(nv[r->n_names] = strdup(name)))
                return -ENOMEM;
        nv[++r->n_names] = NULL;
        qsort(nv, r->n_names, sizeof(*nv), cmp_str);
        return 0;
}

/* 1 if r had name (now removed). */
static int rec_del_name(struct rec *r, const char *name) {
        for (size_t i = 0; i < r->n_names; i++)
                if (!strcmp(r->names[i], name)) {
                        free(r->names[i]);
                        memmove(r->names + i, r->names + i + 1, (r->n_names - i) * sizeof(char *));
                        r->n_names--;
                        return 1;
                }
        return 0;
}

static void idx_del(struct idx *x, size_t i) {
        lg_image_strv_free(x->v[i].names);
        memmove(x->v + i, x->v + i + 1, (x->n - i - 1) * sizeof(*x->v));
        x->n--;
}

/* images.json's bytes, NUL-terminated (*ret NULL when there is none). */
static int idx_read(lg_image_store *st, char **ret, size_t *len, struct lg_error *err) {
        *ret = NULL;
        *len = 0;
        _cleanup_close_ int fd = openat(st->dirfd, "images.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return 0;
                return lg_error_set(err, errno, "open `%s/images.json`", st->dir);
        }
        struct stat s;
        if (fstat(fd, &s) < 0)
                return lg_error_set(err, errno, "read `%s/images.json`", st->dir);
        _cleanup_free_ char *buf = malloc((size_t) s.st_size + 1);
        if (!buf)
                return lg_error_set(err, ENOMEM, "read `%s/images.json`", st->dir);
        /* Replaced by rename, never written in place: the size holds. */
        ssize_t n = lg_read_all(fd, buf, (size_t) s.st_size);
        if (n < 0)
                return lg_error_set(err, (int) n, "read `%s/images.json`", st->dir);
        buf[n] = '\0';
        *len = (size_t) n;
        *ret = TAKE_PTR(buf);
        return 0;
}

/* Parse images.json's text (NULL: no file, no images). */
static int idx_parse(lg_image_store *st, const char *text, size_t len, struct idx *x, struct lg_error *err) {
        memset(x, 0, sizeof(*x));
        if (!text)
                return 0;
        json_error_t je;
        json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
        if (!root)
                return lg_error_setm(err, EBADMSG, "`%s/images.json` is corrupt: %s", st->dir, je.text);
        int r = 0;
        json_t *arr = json_object_get(root, "images");
        if (!json_is_array(arr)) {
                r = lg_error_setm(err, EBADMSG, "`%s/images.json` has no images array", st->dir);
                goto out;
        }
        x->v = calloc(json_array_size(arr) + 1, sizeof(*x->v));
        if (!x->v) {
                r = lg_error_set(err, ENOMEM, "load the image index");
                goto out;
        }
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
                const char *m = json_string_value(json_object_get(e, "manifest"));
                const char *id = json_string_value(json_object_get(e, "id"));
                json_t *names = json_object_get(e, "names");
                json_t *dangling = json_object_get(e, "dangling");
                char hex[65];
                if (!m || !id || lg_image_digest_hex(m, hex, "index", NULL) < 0 ||
                    lg_image_digest_hex(id, hex, "index", NULL) < 0 || (names && !json_is_array(names)) ||
                    (dangling && !json_is_boolean(dangling))) {
                        r = lg_error_setm(err, EBADMSG, "`%s/images.json`: entry %zu is malformed", st->dir, i);
                        goto out;
                }
                struct rec *rc = &x->v[x->n++];
                snprintf(rc->manifest, sizeof(rc->manifest), "%s", m);
                snprintf(rc->id, sizeof(rc->id), "%s", id);
                if (!(rc->names = calloc(1, sizeof(char *)))) {
                        r = lg_error_set(err, ENOMEM, "load the image index");
                        goto out;
                }
                size_t k;
                json_t *n;
                json_array_foreach(names, k, n) {
                        if (json_is_string(n) && rec_add_name(rc, json_string_value(n)) < 0) {
                                r = lg_error_set(err, ENOMEM, "load the image index");
                                goto out;
                        }
                }
                /* A name is a name: dangling only without one. */
                rc->dangling = json_is_true(dangling) && rc->n_names == 0;
        }
out:
        json_decref(root);
        if (r < 0)
                idx_free(x);
        return r;
}

static int idx_load(lg_image_store *st, struct idx *x, struct lg_error *err) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = idx_read(st, &text, &len, err);
        if (r < 0) {
                memset(x, 0, sizeof(*x));
                return r;
        }
        return idx_parse(st, text, len, x, err);
}

static int idx_save(lg_image_store *st, const struct idx *x, struct lg_error *err) {
        json_t *arr = json_array();
        json_t *root = json_pack("{s:i,s:o}", "version", 1, "images", arr);
        if (!root)
                return lg_error_set(err, ENOMEM, "write the image index");
        for (size_t i = 0; i < x->n; i++) {
                json_t *names = json_array();
                for (size_t k = 0; k < x->v[i].n_names; k++)
                        json_array_append_new(names, json_string(x->v[i].names[k]));
                json_t *e = json_pack("{s:s,s:s,s:o}", "manifest", x->v[i].manifest, "id", x->v[i].id, "names",
                                      names);
                if (e && x->v[i].dangling)
                        json_object_set_new(e, "dangling", json_true());
                json_array_append_new(arr, e);
        }
        char *text = json_dumps(root, JSON_INDENT(1));
        json_decref(root);
        if (!text)
                return lg_error_set(err, ENOMEM, "write the image index");
        char tmp[64];
        int r = lg_image_tmp_name(tmp, sizeof(tmp), "index-");
        if (r < 0) {
                free(text);
                return lg_error_set(err, r, "make a temporary name");
        }
        int fd = openat(st->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) {
                free(text);
                return lg_error_set(err, errno, "create `%s/%s`", st->dir, tmp);
        }
        r = lg_write_all(fd, text, strlen(text));
        free(text);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r >= 0)
                r = -errno;
        if (r >= 0 && renameat(st->dirfd, tmp, st->dirfd, "images.json") < 0)
                r = -errno;
        if (r < 0) {
                unlinkat(st->dirfd, tmp, 0);
                return lg_error_set(err, r, "write `%s/images.json`", st->dir);
        }
        (void) fsync(st->dirfd);
        return 0;
}

/* The index lock: the handle's mutex, then an exclusive flock of
 * index.lock against other processes. */
static int index_lock(lg_image_store *st, struct lg_error *err) {
        pthread_mutex_lock(&st->mu);
        int fd = openat(st->dirfd, "index.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
                int r = lg_error_set(err, errno, "open `%s/index.lock`", st->dir);
                pthread_mutex_unlock(&st->mu);
                return r;
        }
        while (flock(fd, LOCK_EX) < 0) {
                if (errno != EINTR) {
                        int r = lg_error_set(err, errno, "lock `%s/index.lock`", st->dir);
                        close(fd);
                        pthread_mutex_unlock(&st->mu);
                        return r;
                }
        }
        return fd;
}

static void index_unlock(lg_image_store *st, int fd) {
        close(fd);
        pthread_mutex_unlock(&st->mu);
}

int lg_image_index_add(lg_image_store *st, const char *manifest, const char *config, const char *name,
                       struct lg_error *err) {
        int lfd = index_lock(st, err);
        if (lfd < 0)
                return lfd;
        struct idx x;
        int r = idx_load(st, &x, err);
        if (r < 0)
                goto out;
        size_t at = x.n;
        for (size_t i = 0; i < x.n; i++)
                if (!strcmp(x.v[i].manifest, manifest))
                        at = i;
        bool changed = false;
        if (name) {
                /* The name moves here; an image left with no name stays,
                 * dangling, found by id until removed or GC'd. */
                for (size_t i = 0; i < x.n; i++)
                        if (i != at && rec_del_name(&x.v[i], name)) {
                                changed = true;
                                x.v[i].dangling = x.v[i].n_names == 0;
                        }
        }
        if (at == x.n) {
                struct rec *nv = realloc(x.v, (x.n + 1) * sizeof(*nv));
                if (!nv) {
                        r = lg_error_set(err, ENOMEM, "update the image index");
                        goto out;
                }
                x.v = nv;
                memset(&nv[x.n], 0, sizeof(nv[x.n]));
                snprintf(nv[x.n].manifest, sizeof(nv[x.n].manifest), "%s", manifest);
                snprintf(nv[x.n].id, sizeof(nv[x.n].id), "%s", config);
                if (!(nv[x.n].names = calloc(1, sizeof(char *)))) {
                        r = lg_error_set(err, ENOMEM, "update the image index");
                        goto out;
                }
                x.n++;
                changed = true;
        }
        if (name) {
                size_t before = x.v[at].n_names;
                if (rec_add_name(&x.v[at], name) < 0) {
                        r = lg_error_set(err, ENOMEM, "update the image index");
                        goto out;
                }
                changed |= x.v[at].n_names != before || x.v[at].dangling;
                x.v[at].dangling = false;
        }
        if (changed)
                r = idx_save(st, &x, err);
out:
        idx_free(&x);
        index_unlock(st, lfd);
        return r;
}

/* ---- lookups ------------------------------------------------------------ */

/* How ref names an image: by id or digest (1), or by name (0). Index of
 * the record in *at; -ENOENT / -EINVAL (ambiguous, malformed). */
static int find(const struct idx *x, const char *ref, size_t *at, struct lg_error *err) {
        char shown[200];
        lg_printable(ref, shown, sizeof(shown));
        if (!ref || !*ref)
                return lg_error_setm(err, EINVAL, "no image given");
        const char *hex = NULL;
        bool must_id = false;
        if (!strncmp(ref, "sha256:", 7)) {
                hex = ref + 7;
                must_id = true;
        } else if (strlen(ref) >= 12 && strlen(ref) <= 64 && lg_image_is_hex(ref, strlen(ref))) {
                hex = ref;
        }
        if (hex) {
                size_t len = strlen(hex);
                if (must_id && (len < 12 || len > 64 || !lg_image_is_hex(hex, len)))
                        return lg_error_setm(err, EINVAL, "`%s` is not an image id (sha256: and at least 12 hex digits)",
                                             shown);
                size_t found = SIZE_MAX, hits = 0;
                for (size_t i = 0; i < x->n; i++) {
                        bool id = !strncmp(x->v[i].id + 7, hex, len);
                        bool man = len == 64 && !strcmp(x->v[i].manifest + 7, hex);
                        if (id || man) {
                                /* Two manifests may share a config: the same id. */
                                if (found == SIZE_MAX || strcmp(x->v[found].id, x->v[i].id) != 0)
                                        hits++;
                                if (found == SIZE_MAX || man)
                                        found = i;
                        }
                }
                if (hits > 1)
                        return lg_error_setm(err, EINVAL, "image id prefix `%s` is ambiguous", shown);
                if (found != SIZE_MAX) {
                        *at = found;
                        return 1;
                }
                if (must_id)
                        return lg_error_setm(err, ENOENT, "image `%s` not found", shown);
        }
        char norm[512];
        int r = lg_image_normalize(ref, norm, sizeof(norm), err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < x->n; i++)
                for (size_t k = 0; k < x->v[i].n_names; k++)
                        if (!strcmp(x->v[i].names[k], norm)) {
                                *at = i;
                                return 0;
                        }
        /* name@sha256:...: the image with that manifest, whatever its name. */
        const char *at_sign = strchr(norm, '@');
        if (at_sign)
                for (size_t i = 0; i < x->n; i++)
                        if (!strcmp(x->v[i].manifest, at_sign + 1)) {
                                *at = i;
                                return 1;
                        }
        return lg_error_setm(err, ENOENT, "image `%s` not found", shown);
}

static int make_image(lg_image_store *st, const struct rec *rc, struct lg_image **ret, struct lg_error *err) {
        struct lg_image *img = calloc(1, sizeof(*img));
        if (!img)
                return lg_error_set(err, ENOMEM, "allocate image");
        int r = lg_image_load(st, rc->manifest, img, NULL, err);
        if (r < 0) {
                lg_image_free(img);
                return r;
        }
        if (lg_image_strv_dup(rc->names, &img->names) < 0) {
                lg_image_free(img);
                return lg_error_set(err, ENOMEM, "allocate image");
        }
        img->dangling = rc->dangling;
        *ret = img;
        return 0;
}

/* The lookups' view of the index, under st->mu. images.json is re-read
 * for every lookup (another process may have changed it), but parsed, and
 * the images of its records loaded from their manifests and configs, only
 * when its bytes differ from the last time: this runs for every container
 * start. An image loaded for a manifest digest stays valid as long as the
 * index names that digest, since blobs are content-addressed and GC only
 * takes blobs that the index does not name. */
struct lg_image_index_cache {
        char *text; /* images.json as parsed; NULL: there was none */
        size_t len;
        struct idx idx;
        struct lg_image **loaded; /* per record: its image without names, or NULL until asked for */
};

void lg_image_index_cache_free(struct lg_image_index_cache *c) {
        if (!c)
                return;
        for (size_t i = 0; i < c->idx.n; i++)
                lg_image_free(c->loaded[i]);
        free(c->loaded);
        idx_free(&c->idx);
        free(c->text);
        free(c);
}

static int cache_refresh(lg_image_store *st, struct lg_error *err) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = idx_read(st, &text, &len, err);
        if (r < 0)
                return r;
        struct lg_image_index_cache *c = st->cache;
        if (c && (c->text ? text && c->len == len && !memcmp(c->text, text, len) : !text))
                return 0;
        lg_image_index_cache_free(TAKE_PTR(st->cache));
        if (!(c = calloc(1, sizeof(*c))))
                return lg_error_set(err, ENOMEM, "load the image index");
        r = idx_parse(st, text, len, &c->idx, err);
        if (r < 0) {
                free(c);
                return r;
        }
        if (!(c->loaded = calloc(c->idx.n + 1, sizeof(*c->loaded)))) {
                lg_image_index_cache_free(c);
                return lg_error_set(err, ENOMEM, "load the image index");
        }
        c->text = TAKE_PTR(text);
        c->len = len;
        st->cache = c;
        return 0;
}

int lg_image_get(lg_image_store *st, const char *ref, struct lg_image **ret, struct lg_error *err) {
        *ret = NULL;
        pthread_mutex_lock(&st->mu);
        size_t at;
        int r = cache_refresh(st, err);
        if (r >= 0)
                r = find(&st->cache->idx, ref, &at, err);
        if (r >= 0 && !st->cache->loaded[at]) {
                struct lg_image *img = calloc(1, sizeof(*img));
                r = img ? lg_image_load(st, st->cache->idx.v[at].manifest, img, NULL, err)
                        : lg_error_set(err, ENOMEM, "allocate image");
                if (r < 0)
                        free(img);
                else
                        st->cache->loaded[at] = img;
        }
        if (r >= 0 && lg_image_copy(st->cache->loaded[at], st->cache->idx.v[at].names, ret) < 0)
                r = lg_error_set(err, ENOMEM, "allocate image");
        if (r >= 0)
                (*ret)->dangling = st->cache->idx.v[at].dangling;
        pthread_mutex_unlock(&st->mu);
        return r < 0 ? r : 0;
}

void lg_image_list_free(struct lg_image **list, size_t n) {
        if (!list)
                return;
        for (size_t i = 0; i < n; i++)
                lg_image_free(list[i]);
        free(list);
}

/* Named images by first name, then untagged ones by id. */
static int cmp_rec(const void *a, const void *b) {
        const struct rec *x = a, *y = b;
        if (x->n_names && y->n_names)
                return strcmp(x->names[0], y->names[0]);
        if (x->n_names != y->n_names)
                return x->n_names ? -1 : 1;
        return strcmp(x->id, y->id);
}

int lg_image_list(lg_image_store *st, struct lg_image ***ret, size_t *n, struct lg_error *err) {
        *ret = NULL;
        *n = 0;
        struct idx x;
        pthread_mutex_lock(&st->mu);
        int r = idx_load(st, &x, err);
        pthread_mutex_unlock(&st->mu);
        if (r < 0)
                return r;
        if (x.n)
                qsort(x.v, x.n, sizeof(*x.v), cmp_rec);
        struct lg_image **list = calloc(x.n + 1, sizeof(*list));
        if (!list) {
                idx_free(&x);
                return lg_error_set(err, ENOMEM, "list images");
        }
        size_t k = 0;
        for (size_t i = 0; i < x.n && r >= 0; i++) {
                r = make_image(st, &x.v[i], &list[k], err);
                if (r >= 0)
                        k++;
        }
        idx_free(&x);
        if (r < 0) {
                lg_image_list_free(list, k);
                return r;
        }
        *ret = list;
        *n = k;
        return 0;
}

int lg_image_remove(lg_image_store *st, const char *ref, struct lg_error *err) {
        int lfd = index_lock(st, err);
        if (lfd < 0)
                return lfd;
        struct idx x;
        int r = idx_load(st, &x, err);
        if (r < 0)
                goto out;
        size_t at;
        r = find(&x, ref, &at, err);
        if (r < 0)
                goto out;
        if (r == 0) {
                char norm[512];
                r = lg_image_normalize(ref, norm, sizeof(norm), err);
                if (r < 0)
                        goto out;
                rec_del_name(&x.v[at], norm);
                if (x.v[at].n_names == 0)
                        idx_del(&x, at);
        } else if (!strcmp(x.v[at].manifest, ref)) {
                idx_del(&x, at); /* by manifest digest: that image */
        } else {
                /* By id: every image with that config (the same image
                 * imported from two archives has two manifests). */
                char id[LG_DIGEST_MAX];
                snprintf(id, sizeof(id), "%s", x.v[at].id);
                for (size_t i = x.n; i-- > 0;)
                        if (!strcmp(x.v[i].id, id))
                                idx_del(&x, i);
        }
        r = idx_save(st, &x, err);
out:
        idx_free(&x);
        index_unlock(st, lfd);
        return r < 0 ? r : 0;
}

/* ---- GC ----------------------------------------------------------------- */

struct hexset {
        char (*v)[65];
        size_t n, cap;
};

static int hexset_add(struct hexset *s, const char *hex) {
        if (s->n == s->cap) {
                size_t ncap = s->cap ? s->cap * 2 : 64;
                char(*nv)[65] = realloc(s->v, ncap * sizeof(*nv));
                if (!nv)
                        return -ENOMEM;
                s->v = nv;
                s->cap = ncap;
        }
        snprintf(s->v[s->n++], 65, "%s", hex);
        return 0;
}

static bool hexset_has(const struct hexset *s, const char *hex) {
        for (size_t i = 0; i < s->n; i++)
                if (!strcmp(s->v[i], hex))
                        return true;
        return false;
}

static bool hexset_keeps(const char *hex, void *ud) { return hexset_has(ud, hex); }

/* Bytes of the regular files below dfd/name. */
static uint64_t du_at(int dfd, const char *name, unsigned depth) {
        struct stat s;
        if (fstatat(dfd, name, &s, AT_SYMLINK_NOFOLLOW) < 0)
                return 0;
        if (!S_ISDIR(s.st_mode))
                return S_ISREG(s.st_mode) ? (uint64_t) s.st_size : 0;
        if (depth > 4096)
                return 0;
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return 0;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return 0;
        }
        uint64_t sum = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        sum += du_at(dirfd(d), de->d_name, depth + 1);
        closedir(d);
        return sum;
}

static bool kept_id(const struct lg_image_gc_keep *keep, const char *id) {
        for (size_t i = 0; keep && i < keep->n_ids; i++)
                if (keep->ids[i] && !strcmp(keep->ids[i], id))
                        return true;
        return false;
}

/* Drop the dangling images whose id keep does not name from the index.
 * Those kept stay dangling: GC asks again next time. */
static int gc_dangling(lg_image_store *st, struct idx *x, const struct lg_image_gc_keep *keep,
                       struct lg_image_gc_result *res, struct lg_error *err) {
        uint64_t dropped = 0;
        for (size_t i = x->n; i-- > 0;)
                if (x->v[i].dangling && !kept_id(keep, x->v[i].id)) {
                        idx_del(x, i);
                        dropped++;
                }
        if (!dropped)
                return 0;
        int r = idx_save(st, x, err);
        if (r >= 0)
                res->images_removed += dropped;
        return r;
}

/* What the index x refers to, plus what this handle has in flight. */
static int gc_referenced(lg_image_store *st, const struct idx *x, struct hexset *keep, struct lg_error *err) {
        int r = 0;
        char hex[65];
        for (size_t i = 0; i < x->n && r >= 0; i++) {
                struct lg_image_manifest m = {0};
                struct lg_image img = {0};
                r = lg_image_load(st, x->v[i].manifest, &img, &m, err);
                if (r < 0) {
                        r = lg_error_wrap(err, r, "image %s (GC stopped: it cannot tell what the image uses)",
                                          x->v[i].names && x->v[i].names[0] ? x->v[i].names[0] : x->v[i].id);
                        break;
                }
                if ((r = hexset_add(keep, x->v[i].manifest + 7)) >= 0)
                        r = hexset_add(keep, m.config + 7);
                for (size_t k = 0; k < m.n_layers && r >= 0; k++)
                        if (lg_image_digest_hex(m.layers[k].digest, hex, "layer", NULL) >= 0)
                                r = hexset_add(keep, hex);
                lg_image_manifest_free(&m);
                lg_image_clear(&img);
                if (r == -ENOMEM)
                        r = lg_error_set(err, ENOMEM, "GC");
        }
        for (size_t i = 0; i < st->n_pending && r >= 0; i++)
                if ((r = hexset_add(keep, st->pending[i].hex)) < 0)
                        r = lg_error_set(err, ENOMEM, "GC");
        return r;
}

/* Base name of a kept layer dir ("/x/layers/<hex>/" -> "<hex>"). */
static bool kept_layer(const struct lg_image_gc_keep *keep, const char *hex) {
        for (size_t i = 0; keep && i < keep->n_layers; i++) {
                const char *k = keep->layers[i];
                if (!k)
                        continue;
                size_t len = strlen(k);
                while (len > 0 && k[len - 1] == '/')
                        len--;
                if (len >= 64 && !strncmp(k + len - 64, hex, 64) && (len == 64 || k[len - 65] == '/'))
                        return true;
        }
        return false;
}

struct gc_keeps {
        const struct hexset *refd;
        const struct lg_image_gc_keep *keep;
};

static bool gc_keeps_hex(const char *hex, void *ud) {
        const struct gc_keeps *k = ud;
        return hexset_has(k->refd, hex) || kept_layer(k->keep, hex);
}

static int gc_locked(lg_image_store *st, const struct lg_image_gc_keep *keep, struct lg_image_gc_result *res,
                     struct hexset *trash, struct lg_error *err) {
        struct hexset refd = {0};
        struct idx x;
        int r = idx_load(st, &x, err);
        if (r >= 0)
                r = gc_dangling(st, &x, keep, res, err);
        if (r >= 0)
                r = gc_referenced(st, &x, &refd, err);
        idx_free(&x);
        if (r < 0)
                goto out;
        /* Blobs. */
        struct lg_cas_gc_result cres;
        if ((r = lg_cas_gc(st->cas, hexset_keeps, &refd, &cres, err)) < 0)
                goto out;
        res->blobs_removed += cres.removed;
        res->bytes_freed += cres.bytes_freed;
        struct dirent *de;
        DIR *d;
        /* Lazy layers: unmounted first. */
        struct gc_keeps gk = {&refd, keep};
        if ((r = lg_image_lazy_gc(st, gc_keeps_hex, &gk, res, err)) < 0)
                goto out;
        /* Layers: moved into tmp/ here (a crash never leaves half a layer
         * visible), removed after the lock is released. */
        int lfd = openat(st->dirfd, "layers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        d = lfd >= 0 ? fdopendir(lfd) : NULL;
        if (!d) {
                r = lg_error_set(err, errno, "open `%s/layers`", st->dir);
                if (lfd >= 0)
                        close(lfd);
                goto out;
        }
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                if (len < 64 || !lg_image_is_hex(de->d_name, 64))
                        continue;
                char hex[65];
                memcpy(hex, de->d_name, 64);
                hex[64] = '\0';
                /* A lazy layer left by lg_image_lazy_gc stays (it is busy). */
                if (hexset_has(&refd, hex) || kept_layer(keep, hex) || lg_image_layer_is_lazy(st, hex) == 1)
                        continue;
                if (len == 64 + 5 && !strcmp(de->d_name + 64, ".json")) {
                        unlinkat(dirfd(d), de->d_name, 0);
                        continue;
                }
                if (len != 64)
                        continue;
                char tmp[64], src[96];
                if (lg_image_tmp_name(tmp, sizeof(tmp), "trash-") < 0)
                        continue;
                snprintf(src, sizeof(src), "layers/%s", hex);
                if (renameat(st->dirfd, src, st->dirfd, tmp) == 0) {
                        res->layers_removed++;
                        if (hexset_add(trash, tmp + 4) < 0) /* "tmp/" + name fits 65 */
                                (void) lg_extract_rm_tree_at(st->dirfd, tmp);
                }
        }
        closedir(d);
out:
        free(refd.v);
        return r;
}

int lg_image_gc(lg_image_store *st, const struct lg_image_gc_keep *keep, struct lg_image_gc_result *ret,
                struct lg_error *err) {
        struct lg_image_gc_result res = {0};
        if (ret)
                *ret = res;
        /* Another process with the store open may be between writing a blob
         * and committing its image: GC only when alone. */
        int r = lg_cas_lock_alone(st->cas, err);
        if (r == -EBUSY)
                return lg_error_setm(err, EBUSY, "image store `%s` is open in another process; GC skipped", st->dir);
        if (r < 0)
                return r;
        struct hexset trash = {0};
        int lfd = index_lock(st, err);
        r = lfd;
        if (lfd >= 0) {
                r = gc_locked(st, keep, &res, &trash, err);
                index_unlock(st, lfd);
        }
        for (size_t i = 0; i < trash.n; i++) {
                char p[96];
                snprintf(p, sizeof(p), "tmp/%s", trash.v[i]);
                res.bytes_freed += du_at(st->dirfd, p, 0);
                (void) lg_extract_rm_tree_at(st->dirfd, p);
        }
        free(trash.v);
        /* Chunks of lazy layers gone. */
        if (r >= 0)
                r = lg_image_lazy_chunk_gc(st, &res, err);
        lg_cas_unlock_alone(st->cas);
        if (ret)
                *ret = res;
        return r < 0 ? r : 0;
}
