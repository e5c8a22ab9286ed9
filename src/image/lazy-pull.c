/* Lazy pulls (lg_image_pull_lazy, image.h; docs/lazy-images.md). pull.c
 * resolves the image manifest and stores its config, then asks
 * lg_image_lazy_pull_layers to make each layer not here a lazy layer:
 *
 *  1. look everything over first: the node can mount (ops, erofs), the
 *     registry has the image's lazy artifact (lazy-artifact.h: referrers,
 *     manifest, config, parsed), it names every layer that is not here
 *     with the config's diff id;
 *  2. fetch each such layer's small blobs (meta, chunk table, prefetch
 *     record; verified by the registry client against their digests) into
 *     lazy/tmp/pull-<rand>/<hex>/ and check the table (its BLOB size is
 *     the artifact's, its chunk size the artifact's);
 *  3. for each layer: lazy/layers/<hex>/ (renamed into place, with
 *     source.json naming the registry, repository, BLOB digest and
 *     credentials, 0600), then images/layers/<hex>.json {"lazy": true},
 *     then the mount point and ops->attach. The record comes before the
 *     mount: a crash in between leaves a lazy layer that legiond's start
 *     mounts (lg_image_lazy_attach_all), never a bare directory taken for
 *     an extracted layer.
 *
 * Anything that fails in 1-3 undoes what this pull made (detach, remove)
 * and is no error: report->reason says why, and pull.c goes on with the
 * full pull. The layers stay pinned against GC (pending) until
 * lg_image_commit records the image; if the commit fails,
 * lg_image_lazy_pull_undo removes them again. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/image-internal.h"
#include "image/lazy-artifact.h"
#include "lazy/lazy.h"

#define PREFETCH_MAX (64u << 20) /* 16 Mi chunk indexes: the table's limit */

void lg_image_pull_report_clear(struct lg_image_pull_report *r) {
        if (!r)
                return;
        free(r->layers);
        memset(r, 0, sizeof(*r));
}

/* What this pull does with one layer of the image. */
struct plan {
        char digest[72], diff_id[72], hex[65];
        enum { P_LOCAL, P_LAZY_THERE, P_MAKE } what;
        const struct lg_lazy_layer *art; /* P_MAKE: its entry in the artifact */
        bool made;                       /* lazy/layers/<hex> and the record are ours */
        bool dup;                        /* listed earlier in the image */
};

struct lazy_pull {
        lg_image_store *st;
        lg_registry *reg;
        const struct lg_registry_auth *auth;
        lg_image_progress_cb progress;
        void *ud;
        struct lg_image_pull_report *report;
        struct lg_lazy_artifact art;
        struct plan *plan;
        size_t n;
        char tmp[PATH_MAX]; /* lazy/tmp/pull-<rand> */
};

static int reason(struct lazy_pull *lp, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int reason(struct lazy_pull *lp, int r, const char *fmt, ...) {
        if (lp->report && !lp->report->reason[0]) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(lp->report->reason, sizeof(lp->report->reason), fmt, ap);
                va_end(ap);
        }
        return r < 0 ? r : -EINVAL;
}

/* The diff ids of the image's config (stored by pull.c), in m. */
static int config_diff_ids(lg_image_store *st, struct lg_image_manifest *m, struct lg_error *err) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = lg_image_blob_read(st, m->config, 0, &text, &len, err);
        if (r < 0)
                return r;
        json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
        json_t *ids = json_object_get(json_object_get(root, "rootfs"), "diff_ids");
        r = json_array_size(ids) == m->n_layers ? 0 : lg_error_setm(err, EINVAL, "the config's diff ids do not match the layers");
        for (size_t i = 0; i < m->n_layers && r >= 0; i++) {
                char hex[65];
                r = lg_image_digest_hex(json_string_value(json_array_get(ids, i)), hex, "config: diff id", err);
                if (r >= 0)
                        snprintf(m->layers[i].diff_id, sizeof(m->layers[i].diff_id), "sha256:%s", hex);
        }
        json_decref(root);
        return r;
}

/* Step 1: what to do with each layer, and whether it can be done. */
static int make_plan(struct lazy_pull *lp, const char *manifest_digest, const char *mtext, size_t mlen) {
        struct lg_error e = {0};
        struct lg_image_manifest m;
        int r = lg_image_manifest_parse(lp->st, mtext, mlen, &m, &e);
        if (r >= 0)
                r = config_diff_ids(lp->st, &m, &e);
        if (r < 0) {
                lg_image_manifest_free(&m);
                return reason(lp, r, "%s", e.msg);
        }
        lp->plan = calloc(m.n_layers + 1, sizeof(*lp->plan));
        if (!lp->plan) {
                lg_image_manifest_free(&m);
                return reason(lp, -ENOMEM, "out of memory");
        }
        lp->n = m.n_layers;
        bool need = false;
        for (size_t i = 0; i < m.n_layers; i++) {
                struct plan *p = &lp->plan[i];
                snprintf(p->digest, sizeof(p->digest), "%s", m.layers[i].digest);
                snprintf(p->diff_id, sizeof(p->diff_id), "%s", m.layers[i].diff_id);
                snprintf(p->hex, sizeof(p->hex), "%s", m.layers[i].digest + 7);
                for (size_t k = 0; k < i; k++)
                        p->dup |= !strcmp(lp->plan[k].hex, p->hex);
                char rel[96];
                snprintf(rel, sizeof(rel), "layers/%s", p->hex);
                struct stat s;
                if (lg_image_layer_is_lazy(lp->st, p->hex) == 1)
                        p->what = P_LAZY_THERE;
                else if (fstatat(lp->st->dirfd, rel, &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(s.st_mode))
                        p->what = P_LOCAL;
                else {
                        p->what = P_MAKE;
                        need = true;
                }
        }
        lg_image_manifest_free(&m);
        if (!need)
                return 0; /* every layer is here already: no artifact needed */
        r = lg_lazy_artifact_find(lp->reg, manifest_digest, &lp->art, &e);
        if (r == -ENOENT)
                return reason(lp, r, "the registry has no lazy form of this image (`legion image convert --push` makes one)");
        if (r < 0)
                return reason(lp, r, "lazy artifact: %s", e.msg);
        for (size_t i = 0; i < lp->n; i++) {
                struct plan *p = &lp->plan[i];
                if (p->what != P_MAKE)
                        continue;
                for (size_t k = 0; k < lp->art.n_layers && !p->art; k++)
                        if (!strcmp(lp->art.layers[k].layer, p->digest))
                                p->art = &lp->art.layers[k];
                if (!p->art)
                        return reason(lp, -ENOENT, "the lazy artifact %.19s has no form of layer %.19s", lp->art.digest,
                                      p->digest);
                if (strcmp(p->art->diff_id, p->diff_id))
                        return reason(lp, -EBADMSG, "the lazy artifact's diff id of layer %.19s is not the image's",
                                      p->digest);
        }
        return 0;
}

/* A sink writing a blob to a file. */
static int file_sink(void *ud, const void *buf, size_t len, struct lg_error *err) {
        int r = lg_write_all(*(int *) ud, buf, len);
        return r < 0 ? lg_error_set(err, r, "write") : 0;
}

static int file_restart(void *ud) {
        int fd = *(int *) ud;
        return ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0 ? -errno : 0;
}

/* Blob b of the artifact into path (verified by the client): from the
 * registry, or when it does not give it, from a registry mirror
 * (mirrors.h). */
static int fetch_to(struct lazy_pull *lp, const struct lg_lazy_blob *b, const char *path, struct lg_error *err) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return lg_error_set(err, errno, "create `%s`", path);
        int r = lg_registry_blob_get(lp->reg, b->digest, b->size, file_sink, &fd, err);
        if (r < 0 && lp->st->mirrors.n > 0) {
                struct lg_error e2 = {0};
                int q = file_restart(&fd);
                if (q >= 0)
                        q = lg_mirrors_blob_get(&lp->st->mirrors, lg_registry_repository(lp->reg), b->digest, b->size,
                                                file_sink, file_restart, &fd, &e2);
                if (q >= 0) {
                        r = 0; /* the origin's error is forgotten: the bytes are verified */
                } else {
                        char first[sizeof(err->msg)];
                        snprintf(first, sizeof(first), "%s", err ? err->msg : "");
                        lg_error_setm(err, -r, "%s (and from the registry mirrors: %s)", first, e2.msg);
                }
        }
        if (r >= 0 && fsync(fd) < 0)
                r = lg_error_set(err, errno, "write `%s`", path);
        close(fd);
        return r;
}

int lg_image_lazy_prefetch_check(const char *path, size_t n, struct lg_error *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat s;
        if (fd < 0 || fstat(fd, &s) < 0)
                return lg_error_set(err, errno, "open `%s`", path);
        if (s.st_size % 4 || (uint64_t) s.st_size > PREFETCH_MAX)
                return lg_error_setm(err, EBADMSG, "the prefetch record is not a list of chunk indexes");
        uint32_t v[1024];
        for (off_t off = 0; off < s.st_size;) {
                size_t want = (size_t) (s.st_size - off) < sizeof(v) ? (size_t) (s.st_size - off) : sizeof(v);
                ssize_t got = lg_pread_all(fd, v, want, off);
                if (got != (ssize_t) want)
                        return lg_error_setm(err, EIO, "read `%s`", path);
                for (size_t i = 0; i < want / 4; i++)
                        if (le32toh(v[i]) >= n)
                                return lg_error_setm(err, EBADMSG, "the prefetch record names chunk %u of %zu",
                                                     le32toh(v[i]), n);
                off += (off_t) want;
        }
        return 0;
}

/* Step 2 for one layer: its directory under lp->tmp, complete. */
static int fetch_layer(struct lazy_pull *lp, struct plan *p, struct lg_error *err) {
        const struct lg_lazy_layer *a = p->art;
        char dir[PATH_MAX], path[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/%s", lp->tmp, p->hex);
        if (mkdir(dir, 0700) < 0)
                return lg_error_set(err, errno, "create `%s`", dir);
        if (lp->progress)
                lp->progress(lp->ud, "lazy", p->digest, 0, a->meta.size + a->chunks.size + a->prefetch.size);
        snprintf(path, sizeof(path), "%s/" LG_LAZY_META, dir);
        int r = fetch_to(lp, &a->meta, path, err);
        if (r < 0)
                return lg_error_wrap(err, r, "layer %.19s: meta", p->digest);
        snprintf(path, sizeof(path), "%s/" LG_LAZY_CHUNKS, dir);
        if ((r = fetch_to(lp, &a->chunks, path, err)) < 0)
                return lg_error_wrap(err, r, "layer %.19s: chunk table", p->digest);
        lg_chunk_table *t = NULL;
        struct lg_error e = {0};
        if ((r = lg_chunk_table_load(path, &t, &e)) < 0) {
                /* The message names the temporary file, gone once the pull
                 * falls back: the reason says which layer's table instead. */
                const char *why = strstr(e.msg, "`: ");
                return lg_error_setm(err, -r, "layer %.19s: %s", p->digest, why ? why + 3 : e.msg);
        }
        size_t n = lg_chunk_table_count(t);
        bool ok = lg_chunk_table_blob_size(t) == a->blob.size && lg_chunk_table_chunk_size(t) == lp->art.chunk_size;
        lg_chunk_table_free(t);
        if (!ok)
                return lg_error_setm(err, EBADMSG, "layer %.19s: the chunk table does not describe the artifact's blob",
                                     p->digest);
        if (a->prefetch.digest[0]) {
                snprintf(path, sizeof(path), "%s/prefetch", dir);
                if ((r = fetch_to(lp, &a->prefetch, path, err)) < 0 || (r = lg_image_lazy_prefetch_check(path, n, err)) < 0)
                        return lg_error_wrap(err, r, "layer %.19s: prefetch record", p->digest);
        }
        json_t *src = json_pack("{s:s,s:s,s:s,s:b}", "registry", lg_registry_host(lp->reg), "repository",
                                lg_registry_repository(lp->reg), "digest", a->blob.digest, "insecure",
                                lp->auth && lp->auth->insecure);
        if (src && lp->auth && lp->auth->username && *lp->auth->username) {
                json_object_set_new(src, "username", json_string(lp->auth->username));
                json_object_set_new(src, "password", json_string(lp->auth->password ? lp->auth->password : ""));
        }
        /* Where the fetcher looks first (mirrors.h). */
        if (src && lp->st->mirrors.n > 0) {
                json_t *m = lg_mirrors_to_json(&lp->st->mirrors);
                if (!m || json_object_set_new(src, "mirrors", m) < 0) {
                        json_decref(src);
                        src = NULL;
                }
        }
        r = src ? lg_image_lazy_write_source(dir, src, err) : lg_error_set(err, ENOMEM, "source.json");
        json_decref(src);
        return r;
}

/* The prefetch record the artifact brought, kept by BLOB digest where
 * the fetcher looks for it (an older one of this node stays). */
static void keep_prefetch(struct lazy_pull *lp, const struct plan *p) {
        char from[PATH_MAX], dir[PATH_MAX], to[PATH_MAX];
        snprintf(from, sizeof(from), "%s/layers/%s/prefetch", lp->st->lazy_dir, p->hex);
        snprintf(dir, sizeof(dir), "%s/prefetch", lp->st->lazy_dir);
        snprintf(to, sizeof(to), "%s/%s", dir, p->art->blob.digest + 7);
        if (access(from, F_OK) < 0 || (mkdir(dir, 0700) < 0 && errno != EEXIST))
                return;
        (void) renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
        (void) unlink(from);
}

/* Undo layer p if this pull made it: unmount, record, mount point, lazy
 * form. */
static void undo_layer(lg_image_store *st, const char *hex) {
        char mnt[PATH_MAX], rel[96];
        snprintf(mnt, sizeof(mnt), "%s/layers/%s", st->dir, hex);
        if (st->lazy_ops) {
                struct lg_error e = {0};
                (void) st->lazy_ops->detach(st->lazy_ud, hex, mnt, &e);
        }
        snprintf(rel, sizeof(rel), "layers/%s", hex);
        (void) unlinkat(st->dirfd, rel, AT_REMOVEDIR);
        snprintf(rel, sizeof(rel), "layers/%s.json", hex);
        (void) unlinkat(st->dirfd, rel, 0);
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/layers/%s", st->lazy_dir, hex);
        (void) lg_rm_rf(dir);
}

/* Step 3 for one layer fetched into lp->tmp. */
static int install_layer(struct lazy_pull *lp, struct plan *p, struct lg_error *err) {
        lg_image_store *st = lp->st;
        char from[PATH_MAX], mnt[PATH_MAX], rel[96];
        snprintf(from, sizeof(from), "%s/%s", lp->tmp, p->hex);
        int r = lg_image_lazy_install(st, from, p->hex, false, err);
        if (r < 0)
                return r;
        /* r == 1: another pull's lazy form is there; ours went. */
        if (r == 0)
                keep_prefetch(lp, p);
        if ((r = lg_image_layer_write_record(st, p->hex, p->diff_id, p->art->blob.size, true, err)) < 0)
                return r;
        p->made = r == 0;
        snprintf(rel, sizeof(rel), "layers/%s", p->hex);
        snprintf(mnt, sizeof(mnt), "%s/%s", st->dir, rel);
        if (mkdirat(st->dirfd, rel, 0755) < 0 && errno != EEXIST)
                return lg_error_set(err, errno, "create `%s`", mnt);
        r = st->lazy_ops->attach(st->lazy_ud, p->hex, mnt, err);
        if (r < 0)
                return lg_error_wrap(err, r, "mount layer %.19s", p->digest);
        return 0;
}

static int report_layers(struct lazy_pull *lp) {
        struct lg_image_pull_report *rep = lp->report;
        if (!rep)
                return 0;
        if (!(rep->layers = calloc(lp->n + 1, sizeof(*rep->layers))))
                return -ENOMEM;
        for (size_t i = 0; i < lp->n; i++) {
                const struct plan *p = &lp->plan[i];
                snprintf(rep->layers[i].digest, sizeof(rep->layers[i].digest), "%s", p->digest);
                snprintf(rep->layers[i].how, sizeof(rep->layers[i].how), "%s", p->what == P_LOCAL ? "local" : "lazy");
                rep->layers[i].made = p->made;
        }
        rep->n_layers = lp->n;
        rep->lazy = true;
        rep->reason[0] = '\0';
        return 0;
}

void lg_image_lazy_pull_undo(lg_image_store *st, struct lg_image_pull_report *report) {
        for (size_t i = 0; report && i < report->n_layers; i++) {
                if (report->layers[i].made)
                        undo_layer(st, report->layers[i].digest + 7);
                lg_image_pending_drop(st, report->layers[i].digest + 7, false);
        }
}

int lg_image_lazy_pull_layers(lg_image_store *st, lg_registry *reg, const struct lg_registry_auth *auth,
                              const char *manifest_digest, const char *mtext, size_t mlen,
                              lg_image_progress_cb progress, void *ud, struct lg_image_pull_report *report) {
        struct lazy_pull lp = {.st = st, .reg = reg, .auth = auth, .progress = progress, .ud = ud, .report = report};
        struct lg_error e = {0};
        int r;
        if (!st->lazy_dir || !st->lazy_ops)
                r = reason(&lp, -ENOTSUP, "this node has no lazy fetcher");
        else if ((r = lg_lazy_check(false, &e)) < 0)
                r = reason(&lp, r, "%s", e.msg);
        else
                r = make_plan(&lp, manifest_digest, mtext, mlen);
        /* Pinned against GC until the commit records the image. */
        for (size_t i = 0; i < lp.n && r >= 0; i++)
                (void) lg_image_pending_add(st, lp.plan[i].hex);
        if (r >= 0) {
                char rnd[17];
                if ((r = lg_random_hex(rnd, 8)) >= 0) {
                        snprintf(lp.tmp, sizeof(lp.tmp), "%s/tmp/pull-%s", st->lazy_dir, rnd);
                        if (mkdir(lp.tmp, 0700) < 0)
                                r = -errno;
                }
                if (r < 0)
                        r = reason(&lp, r, "create a directory in `%s/tmp`: %s", st->lazy_dir, strerror(-r));
        }
        for (size_t i = 0; i < lp.n && r >= 0; i++)
                if (lp.plan[i].what == P_MAKE && !lp.plan[i].dup && (r = fetch_layer(&lp, &lp.plan[i], &e)) < 0)
                        r = reason(&lp, r, "%s", e.msg);
        /* Not while chunk GC runs: it would not know the tables that go
         * in now, and could take chunks the fetcher puts for them. */
        pthread_mutex_lock(&st->lazy_mu);
        for (size_t i = 0; i < lp.n && r >= 0; i++) {
                struct plan *p = &lp.plan[i];
                if (p->dup || p->what == P_LOCAL)
                        continue;
                if (p->what == P_LAZY_THERE) {
                        /* Another image's lazy layer: mounted (again, if
                         * a failure left it unmounted). */
                        char mnt[PATH_MAX];
                        snprintf(mnt, sizeof(mnt), "%s/layers/%s", st->dir, p->hex);
                        if ((r = st->lazy_ops->attach(st->lazy_ud, p->hex, mnt, &e)) < 0)
                                r = reason(&lp, r, "mount lazy layer %.19s: %s", p->digest, e.msg);
                        continue;
                }
                if ((r = install_layer(&lp, p, &e)) < 0)
                        r = reason(&lp, r, "%s", e.msg);
                else if (progress)
                        progress(ud, "lazy", p->digest, 1, 1);
        }
        pthread_mutex_unlock(&st->lazy_mu);
        if (lp.tmp[0])
                (void) lg_rm_rf(lp.tmp);
        if (r >= 0 && report_layers(&lp) < 0)
                r = reason(&lp, -ENOMEM, "out of memory");
        if (r < 0) {
                for (size_t i = 0; i < lp.n; i++)
                        if (lp.plan[i].made)
                                undo_layer(st, lp.plan[i].hex);
                for (size_t i = 0; i < lp.n; i++)
                        lg_image_pending_drop(st, lp.plan[i].hex, false);
                if (progress && report)
                        progress(ud, "lazy", report->reason, 0, 0);
        }
        lg_lazy_artifact_clear(&lp.art);
        free(lp.plan);
        return r < 0 ? 0 : 1;
}
