/* Package images (apps.h, docs/packages.md "Packages in a registry"): a
 * function whose code is a package artifact in a registry (`packageImage`)
 * instead of an uploaded package. On a deploy the artifact is resolved
 * (its manifest digest is pinned in the revision, as a container app's
 * image id), its lazy part (EROFS meta and chunk table, small) is fetched
 * into the node's lazy store and mounted once per node at
 * <lazy_dir>/mnt/pkg-<hex> through the fetcher; every instance of every
 * app of that package binds that one mount at /code. When the artifact has
 * no lazy form, or the node cannot mount one, the archive is fetched,
 * verified and extracted as an uploaded package is. The work blocks
 * (registry, mount) and runs as jobs on libuv's thread pool, one at a
 * time. Also `legion package push`: an archive streamed in, extracted,
 * converted and pushed as such an artifact. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "apps/apps-internal.h"
#include "image/lazy-package.h"
#include "lazy/chunkstore.h"

/* A package image this node has resolved. */
struct apps_pkg {
        struct apps_pkg *next;
        char ref[512];    /* normalized, as deployed */
        char digest[72];  /* the artifact's manifest */
        char hex[65];     /* its archive */
        bool lazy;        /* mounted lazily (else extracted) */
        char reason[300]; /* why not lazily */
        /* What of it is local, counted at local_ns when the fetcher's
         * record of first reads had accessed_size bytes: counted again
         * when that grew (a read fetched more) or a second later (the
         * background fetch), not for every app listed. */
        uint64_t local_ns;
        off_t accessed_size;
        uint64_t chunks, local_chunks, bytes, local_bytes;
        bool local_ok;
};

struct apps_pkg_job {
        lg_apps *a;
        uv_work_t work;
        struct apps_pkg_job *next;
        bool cancelled;
        lg_image_done_fn done;
        void *ud;
        /* in */
        char ref[512];
        char hex[65]; /* known from a revision; "" on a deploy */
        /* out */
        int r;
        struct lg_error err;
        bool registry; /* the failure was the registry's */
        char digest[72];
        bool lazy;
        char reason[300];
};

static struct apps_pkg *pkg_find(lg_apps *a, const char *ref, const char *hex) {
        for (struct apps_pkg *p = a->pkgs; p; p = p->next)
                if ((ref && !strcmp(p->ref, ref)) || (hex && !strcmp(p->hex, hex)))
                        return p;
        return NULL;
}

void apps_packages_free(lg_apps *a) {
        while (a->pkgs) {
                struct apps_pkg *p = a->pkgs;
                a->pkgs = p->next;
                free(p);
        }
        while (a->pkg_jobs.head) {
                struct apps_pkg_job *j = a->pkg_jobs.head;
                a->pkg_jobs.head = j->next;
                free(j);
        }
        free(a->lazy_dir);
}

/* ---- paths ----------------------------------------------------------------------- */

static void mount_point(const char *lazy_dir, const char *hex, char *buf, size_t cap) {
        snprintf(buf, cap, "%s/mnt/pkg-%s", lazy_dir, hex);
}

/* Mounted: an EROFS file system is there (a statfs of its root reads
 * metadata, never the fetcher). */
static bool is_mounted(const char *path) {
        struct statfs sf;
        return statfs(path, &sf) == 0 && (unsigned long) sf.f_type == EROFS_SUPER_MAGIC_V1;
}

static bool has_lazy_layer(const char *lazy_dir, const char *hex) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/layers/%s/chunks", lazy_dir, hex);
        return access(path, F_OK) == 0;
}

/* ---- specs ------------------------------------------------------------------------ */

int apps_package_image_check(lg_apps *a, const json_t *spec, struct apps_pkg_image *ret, char *msg, size_t cap) {
        memset(ret, 0, sizeof(*ret));
        json_t *v = json_object_get(spec, "packageImage");
        if (json_object_get(spec, "package")) {
                snprintf(msg, cap, "`package` and `packageImage` exclude each other: give one");
                return -EINVAL;
        }
        struct lg_error e = {0};
        struct lg_image_ref ref;
        if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) > 500 ||
            strlen(json_string_value(v)) != json_string_length(v) ||
            lg_image_ref_split(json_string_value(v), &ref, &e) < 0) {
                snprintf(msg, cap,
                         "`packageImage` must be a package reference such as \"127.0.0.1:5000/code/app:v1\"%s%s%s",
                         e.msg[0] ? " (" : "", e.msg, e.msg[0] ? ")" : "");
                return -EINVAL;
        }
        if (!a->lazy_dir) {
                snprintf(msg, cap, "this node takes no `packageImage` (no lazy store)");
                return -EINVAL;
        }
        snprintf(ret->ref, sizeof(ret->ref), "%s", ref.name);
        struct apps_pkg *p = pkg_find(a, ref.name, NULL);
        if (p && p->digest[0]) {
                snprintf(ret->digest, sizeof(ret->digest), "%s", p->digest);
                snprintf(ret->hex, sizeof(ret->hex), "%s", p->hex);
        }
        return 0;
}

/* ---- fetch jobs ------------------------------------------------------------------ */

/* How to reach registry: plain HTTP when legiond was told so (NULL: the
 * client's default, https but for 127.0.0.1 and localhost). */
static const struct lg_registry_auth *auth_for(lg_apps *a, const char *registry, bool insecure,
                                               struct lg_registry_auth *buf) {
        for (size_t i = 0; a->insecure_registries && a->insecure_registries[i] && !insecure; i++)
                insecure = !strcmp(a->insecure_registries[i], registry);
        *buf = (struct lg_registry_auth){.insecure = true};
        return insecure ? buf : NULL;
}

static bool registry_errno(int r) {
        return r == -ECONNREFUSED || r == -EHOSTUNREACH || r == -ENETUNREACH || r == -ETIMEDOUT ||
               r == -ECONNRESET || r == -EPROTO || r == -EACCES;
}

/* Mount the lazy layer of hex: true when mounted (or already), else the
 * reason in j->reason. */
static bool attach(struct apps_pkg_job *j, const char *hex) {
        lg_apps *a = j->a;
        char mp[4200];
        mount_point(a->lazy_dir, hex, mp, sizeof(mp));
        if (is_mounted(mp))
                return true;
        struct lg_error e = {0};
        int r = lg_mkdir_p(mp, 0755);
        if (r < 0)
                r = lg_error_set(&e, -r, "create `%s`", mp);
        if (r >= 0)
                r = a->lazy_ops->attach(a->lazy_ud, hex, mp, &e);
        if (r < 0)
                snprintf(j->reason, sizeof(j->reason), "the node cannot mount it: %s", e.msg);
        return r >= 0;
}

/* The mark that a lazy layer is a package image's (for its GC). */
static void mark(lg_apps *a, const char *hex, const char *ref, const char *digest) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/packages", a->lazy_dir);
        lg_mkdir_p(path, 0700);
        snprintf(path, sizeof(path), "%s/packages/%s", a->lazy_dir, hex);
        char text[700];
        snprintf(text, sizeof(text), "%s@%s\n", ref, digest);
        (void) lg_write_file_at(AT_FDCWD, path, text, true); /* best effort: without it GC leaves it */
}

/* Fetch the archive and extract it into the package store (the fallback). */
static int extract(struct apps_pkg_job *j, const struct lg_image_ref *ref, const struct lg_package_artifact *art) {
        lg_apps *a = j->a;
        const char *hex = art->archive + 7;
        char tree[4096], tmp[4200];
        int r = lg_blob_extracted_path(a->blobs, hex, tree, sizeof(tree));
        if (r < 0)
                return lg_error_set(&j->err, -r, "package tree");
        if (access(tree, F_OK) == 0)
                return 0;
        /* Beside the trees, named as the store's temporaries: a crash
         * leaves nothing lg_blobstore_open does not clean. */
        char rnd[17];
        lg_random_hex(rnd, 8);
        snprintf(tmp, sizeof(tmp), "%.*s/.tmp-dl-%s", (int) (strrchr(tree, '/') - tree), tree, rnd);
        struct lg_registry_auth ab;
        r = lg_package_fetch_archive(ref, auth_for(a, ref->registry, false, &ab), art, tmp, LG_APPS_PUSH_MAX, &j->err);
        if (r < 0) {
                j->registry = registry_errno(r);
                return r;
        }
        r = lg_pkg_extract(tmp, tree, NULL, NULL, &j->err);
        unlink(tmp);
        return r < 0 ? lg_error_wrap(&j->err, r, "package `%s`", ref->name) : 0;
}

static void job_work_locked(struct apps_pkg_job *j) {
        lg_apps *a = j->a;
        bool can_mount = a->lazy_ops && a->lazy_ops->attach;
        char tree[4096];
        /* A revision's package already here: mounted, or mounted again,
         * or its tree; no registry needed. */
        if (j->hex[0] && can_mount && has_lazy_layer(a->lazy_dir, j->hex) && attach(j, j->hex)) {
                j->lazy = true;
                return;
        }
        if (j->hex[0] && lg_blob_extracted_path(a->blobs, j->hex, tree, sizeof(tree)) >= 0 &&
            access(tree, F_OK) == 0)
                return;
        struct lg_image_ref ref;
        struct lg_package_artifact art;
        struct lg_registry_auth ab;
        int r = lg_image_ref_split(j->ref, &ref, &j->err);
        if (r >= 0 && (r = lg_package_resolve(&ref, auth_for(a, ref.registry, false, &ab), &art, &j->err)) < 0)
                j->registry = registry_errno(r) || r == -EBADMSG;
        if (r >= 0 && j->hex[0] && strcmp(art.archive + 7, j->hex))
                r = lg_error_setm(&j->err, EBADMSG, "`%s` now holds another package", ref.name);
        j->r = r;
        if (r < 0)
                return;
        snprintf(j->digest, sizeof(j->digest), "%s", art.digest);
        snprintf(j->hex, sizeof(j->hex), "%s", art.archive + 7);
        snprintf(j->reason, sizeof(j->reason), "%s", art.lazy_reason);
        if (!can_mount && art.lazy)
                snprintf(j->reason, sizeof(j->reason), "this node mounts no lazy layers");
        if (can_mount && art.lazy) {
                struct lg_error e = {0};
                r = lg_package_fetch_lazy(&ref, auth_for(a, ref.registry, false, &ab), &art, a->lazy_dir, &e);
                if (r >= 0)
                        mark(a, j->hex, ref.name, art.digest);
                if (r >= 0 && attach(j, j->hex)) {
                        j->lazy = true;
                        return;
                }
                if (r < 0)
                        snprintf(j->reason, sizeof(j->reason), "%s", e.msg);
        }
        j->r = extract(j, &ref, &art);
}

static void job_work(uv_work_t *w) {
        struct apps_pkg_job *j = w->data;
        pthread_mutex_lock(&j->a->pkg_mu);
        j->a->pkg_gen++;
        job_work_locked(j);
        pthread_mutex_unlock(&j->a->pkg_mu);
}

static void run_next(lg_apps *a);

static void job_done(uv_work_t *w, int status) {
        struct apps_pkg_job *j = w->data;
        lg_apps *a = j->a;
        if (status < 0 && j->r >= 0)
                j->r = lg_error_setm(&j->err, -status, "the package fetch was cancelled");
        /* The reference resolved (a put takes its digest from here), and
         * what became of the archive, also for a job that mounted a
         * revision's package without resolving anything (digest ""). */
        if (j->r >= 0) {
                struct apps_pkg *p = pkg_find(a, j->ref, NULL);
                if (!p && (p = calloc(1, sizeof(*p)))) {
                        p->next = a->pkgs;
                        a->pkgs = p;
                        snprintf(p->ref, sizeof(p->ref), "%s", j->ref);
                }
                if (p && j->digest[0])
                        snprintf(p->digest, sizeof(p->digest), "%s", j->digest);
                if (p)
                        snprintf(p->hex, sizeof(p->hex), "%s", j->hex);
        }
        /* What the node did with this archive, for the status. */
        for (struct apps_pkg *p = a->pkgs; j->r >= 0 && p; p = p->next)
                if (!strcmp(p->hex, j->hex)) {
                        p->lazy = j->lazy;
                        snprintf(p->reason, sizeof(p->reason), "%s", j->lazy ? "" : j->reason);
                }
        a->pkg_jobs.running = NULL;
        if (!j->cancelled) {
                struct lg_image_job_result res = {.status = j->r, .err = &j->err, .registry = j->registry};
                j->done(&res, j->ud);
        }
        free(j);
        run_next(a);
}

static void run_next(lg_apps *a) {
        while (!a->pkg_jobs.running && a->pkg_jobs.head) {
                struct apps_pkg_job *j = a->pkg_jobs.head;
                a->pkg_jobs.head = j->next;
                if (!a->pkg_jobs.head)
                        a->pkg_jobs.tail = &a->pkg_jobs.head;
                a->pkg_jobs.running = j;
                j->work.data = j;
                int r = uv_queue_work(a->loop, &j->work, job_work, job_done);
                if (r < 0) {
                        j->r = lg_error_setm(&j->err, ENOMEM, "cannot queue the package fetch: %s", uv_strerror(r));
                        job_done(&j->work, 0);
                }
        }
}

int apps_pkg_job_start(lg_apps *a, const char *ref, const char *hex, lg_image_done_fn done, void *ud,
                       struct apps_pkg_job **ret, struct lg_error *err) {
        if (!a->lazy_dir)
                return lg_error_setm(err, ENOTSUP, "package image `%s`: this node takes none", ref);
        struct apps_pkg_job *j = calloc(1, sizeof(*j));
        if (!j)
                return lg_error_set(err, ENOMEM, "package image `%s`", ref);
        j->a = a;
        j->done = done;
        j->ud = ud;
        snprintf(j->ref, sizeof(j->ref), "%s", ref);
        snprintf(j->hex, sizeof(j->hex), "%s", hex ? hex : "");
        if (!a->pkg_jobs.tail)
                a->pkg_jobs.tail = &a->pkg_jobs.head;
        *a->pkg_jobs.tail = j;
        a->pkg_jobs.tail = &j->next;
        *ret = j;
        run_next(a);
        return 0;
}

void apps_pkg_job_cancel(struct apps_pkg_job *j) {
        lg_apps *a = j->a;
        if (a->pkg_jobs.running == j) {
                j->cancelled = true; /* job_done frees it */
                return;
        }
        struct apps_pkg_job **p = &a->pkg_jobs.head;
        while (*p && *p != j)
                p = &(*p)->next;
        if (*p) {
                *p = j->next;
                if (!*p)
                        a->pkg_jobs.tail = p;
        }
        free(j);
}

/* ---- activation ------------------------------------------------------------------- */

int apps_package_image_code(lg_apps *a, const struct lg_resource *app, const json_t *rs, char *code, size_t cap,
                            struct lg_error *err) {
        const char *ref = json_string_value(json_object_get(rs, "packageImage"));
        const char *digest = json_string_value(json_object_get(rs, "packageDigest"));
        const char *hex = json_string_value(json_object_get(rs, "package"));
        if (!a->lazy_dir || !ref || !digest || !hex || !lg_digest_valid(hex))
                return lg_error_setm(err, EINVAL, "app `%s/%s`: its revision names no package image", app->namespace,
                                     app->name);
        mount_point(a->lazy_dir, hex, code, cap);
        if (is_mounted(code))
                return 0;
        /* The extracted tree, unless a mount can be had: a lazy layer is
         * here, the node mounts, and its last try did not fail (a job
         * whose mount fails extracts, then its app comes back here). */
        struct apps_pkg *p = pkg_find(a, NULL, hex);
        bool mountable = a->lazy_ops && a->lazy_ops->attach && has_lazy_layer(a->lazy_dir, hex) && !(p && !p->lazy);
        if (lg_blob_extracted_path(a->blobs, hex, code, cap) >= 0 && access(code, F_OK) == 0 && !mountable)
                return 0;
        /* Mounted again (after a reboot), or fetched again by its pinned
         * digest: off the loop, and the app activated then. */
        struct lg_image_ref pr;
        if (lg_image_ref_split(ref, &pr, err) < 0)
                return -EINVAL;
        char pinned[600];
        int n = snprintf(pinned, sizeof(pinned), "%s/%s@%s", pr.registry, pr.repository, digest);
        if (n < 0 || (size_t) n >= sizeof(pinned))
                return lg_error_setm(err, ENAMETOOLONG, "package image `%s`", ref);
        int r = apps_pull_start_package(a, app->namespace, app->name, pinned, hex, NULL, NULL, NULL, err);
        return r < 0 ? r : 1;
}

json_t *apps_package_status(lg_apps *a, const json_t *rs) {
        const char *ref = json_string_value(json_object_get(rs, "packageImage"));
        const char *digest = json_string_value(json_object_get(rs, "packageDigest"));
        const char *hex = json_string_value(json_object_get(rs, "package"));
        if (!ref || !hex || !a->lazy_dir)
                return NULL;
        char mp[4200];
        mount_point(a->lazy_dir, hex, mp, sizeof(mp));
        bool lazy = is_mounted(mp);
        json_t *st = json_pack("{s:s, s:s?, s:s, s:b}", "ref", ref, "digest", digest, "archive", hex, "lazy", lazy);
        struct apps_pkg *p = pkg_find(a, NULL, hex);
        if (!lazy && p && p->reason[0])
                json_object_set_new(st, "lazyReason", json_string(p->reason));
        if (!lazy)
                return st;
        /* A package mounted by an earlier legiond: an entry of its own
         * (no reference) to count into. */
        if (!p && (p = calloc(1, sizeof(*p)))) {
                snprintf(p->hex, sizeof(p->hex), "%s", hex);
                p->lazy = true;
                p->next = a->pkgs;
                a->pkgs = p;
        }
        /* How much of it is local: the chunk table against the chunk
         * store (local files only: a table read and a stat per chunk). */
        uint64_t now = lg_now_ns();
        char path[4200];
        struct stat acc;
        snprintf(path, sizeof(path), "%s/layers/%s/accessed", a->lazy_dir, hex);
        off_t accessed = stat(path, &acc) == 0 ? acc.st_size : 0;
        if (p && (!p->local_ns || accessed != p->accessed_size || now - p->local_ns > 1000000000ull)) {
                p->accessed_size = accessed;
                snprintf(path, sizeof(path), "%s/layers/%s/chunks", a->lazy_dir, hex);
                lg_chunk_table *t = NULL;
                lg_chunk_store *cs = NULL;
                p->local_ok = lg_chunk_table_load(path, &t, NULL) >= 0 &&
                              lg_chunk_store_open(a->lazy_dir, &cs, NULL) >= 0 &&
                              lg_chunk_store_local(cs, t, &p->local_chunks, &p->local_bytes) >= 0;
                p->chunks = t ? lg_chunk_table_count(t) : 0;
                p->bytes = t ? lg_chunk_table_blob_size(t) : 0;
                p->local_ns = now;
                lg_chunk_store_close(cs);
                lg_chunk_table_free(t);
        }
        if (p && p->local_ok)
                json_object_set_new(st, "local",
                                    json_pack("{s:I, s:I, s:I, s:I}", "chunks", (json_int_t) p->chunks, "localChunks",
                                              (json_int_t) p->local_chunks, "bytes", (json_int_t) p->bytes,
                                              "localBytes", (json_int_t) p->local_bytes));
        return st;
}

/* ---- GC ------------------------------------------------------------------------------ */

int lg_apps_packages_in_use(lg_apps *a, struct lg_strlist *l) {
        struct lg_resource_list apps = {0};
        struct lg_error err = {0};
        int r = lg_store_list(a->store, "App", NULL, NULL, &apps, &err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < apps.n; i++) {
                struct lg_revision_list revs = {0};
                if (lg_store_revision_list(a->store, LG_KEY("App", apps.items[i]->namespace, apps.items[i]->name),
                                           &revs, &err) < 0) {
                        r = -EIO; /* without the whole list nothing may go */
                        break;
                }
                for (size_t k = 0; k < revs.n; k++) {
                        const json_t *rs = revs.items[k].spec;
                        const char *hex = json_string_value(json_object_get(rs, "package"));
                        if (json_object_get(rs, "packageImage") && hex)
                                lg_strlist_add(l, hex);
                }
                lg_revision_list_free(&revs);
        }
        lg_resource_list_free(&apps);
        return r < 0 ? r : l->status;
}

struct pkg_gc {
        lg_apps *a;
        uint64_t gen; /* a->pkg_gen when the keep list was taken */
        char *lazy_dir;
        const struct lg_image_lazy_ops *ops;
        void *ud;
        char **keep;
        size_t n_keep;
};

void lg_apps_package_gc_free(void *job) {
        struct pkg_gc *g = job;
        if (!g)
                return;
        for (size_t i = 0; i < g->n_keep; i++)
                free(g->keep[i]);
        free(g->keep);
        free(g->lazy_dir);
        free(g);
}

int lg_apps_package_gc_prepare(lg_apps *a, void **job, struct lg_error *err) {
        *job = NULL;
        /* A package fetch queued or running is about to be stored in a
         * revision the keep list cannot name yet: nothing goes this time. */
        if (!a->lazy_dir || a->pkg_jobs.running || a->pkg_jobs.head)
                return 0;
        struct pkg_gc *g = calloc(1, sizeof(*g));
        struct lg_strlist l = {0};
        int r = g && (g->lazy_dir = strdup(a->lazy_dir)) ? lg_apps_packages_in_use(a, &l) : -ENOMEM;
        if (r >= 0)
                r = lg_strlist_take(&l, &g->keep, &g->n_keep);
        lg_strlist_clear(&l);
        if (r < 0) {
                if (g)
                        lg_apps_package_gc_free(g);
                /* Without the whole list nothing may go. */
                return lg_error_setm(err, -r, "cannot list the package images in use: %s", strerror(-r));
        }
        g->ops = a->lazy_ops;
        g->ud = a->lazy_ud;
        g->a = a;
        pthread_mutex_lock(&a->pkg_mu);
        g->gen = a->pkg_gen;
        pthread_mutex_unlock(&a->pkg_mu);
        *job = g;
        return 0;
}

static int package_gc_locked(struct pkg_gc *g, uint64_t *removed, struct lg_error *err) {
        char path[4200], mp[4200];
        snprintf(path, sizeof(path), "%s/packages", g->lazy_dir);
        DIR *d = opendir(path);
        if (!d)
                return errno == ENOENT ? 0 : lg_error_set(err, errno, "open `%s`", path);
        struct dirent *e;
        int r = 0;
        while ((e = readdir(d))) {
                if (!lg_digest_valid(e->d_name))
                        continue;
                bool used = false;
                for (size_t i = 0; i < g->n_keep && !used; i++)
                        used = !strcmp(g->keep[i], e->d_name);
                if (used)
                        continue;
                mount_point(g->lazy_dir, e->d_name, mp, sizeof(mp));
                if (is_mounted(mp)) {
                        /* Without the fetcher's ops it stays. */
                        struct lg_error derr = {0};
                        if (!g->ops || g->ops->detach(g->ud, e->d_name, mp, &derr) < 0 || is_mounted(mp)) {
                                r = lg_error_setm(err, EBUSY, "package %.12s cannot be unmounted: %s", e->d_name,
                                                  derr.msg[0] ? derr.msg : "still mounted");
                                continue;
                        }
                }
                rmdir(mp);
                snprintf(path, sizeof(path), "%s/layers/%s", g->lazy_dir, e->d_name);
                lg_rm_rf(path);
                /* The mark goes last: a crash before leaves it for the next GC. */
                snprintf(path, sizeof(path), "%s/packages/%s", g->lazy_dir, e->d_name);
                unlink(path);
                (*removed)++;
        }
        closedir(d);
        return r;
}

int lg_apps_package_gc_run(void *job, uint64_t *removed, struct lg_error *err) {
        struct pkg_gc *g = job;
        *removed = 0;
        pthread_mutex_lock(&g->a->pkg_mu);
        /* A fetch ran since the keep list was taken: it may have mounted a
         * package for a revision the list does not name. Next time. */
        int r = g->gen == g->a->pkg_gen ? package_gc_locked(g, removed, err) : 0;
        pthread_mutex_unlock(&g->a->pkg_mu);
        lg_apps_package_gc_free(g);
        return r;
}

/* ---- pushes -------------------------------------------------------------------------- */

struct lg_apps_push {
        lg_apps *a;
        uv_work_t work;
        int fd;
        EVP_MD_CTX *md;  /* the archive's sha256, as it comes */
        char path[4200]; /* the archive, then (tree) its extraction */
        char tree[4200];
        uint64_t size;
        int failed;
        struct lg_error err;
        bool running, cancelled, registry;
        char ref[512];
        uint32_t chunk_size;
        bool without_lazy, insecure;
        lg_apps_push_cb cb;
        void *ud;
        /* results */
        int r;
        char hex[72];
        struct lg_pkg_info info;
        struct lg_package_pushed pushed;
};

static void push_free(lg_apps_push *p) {
        if (p->fd >= 0)
                close(p->fd);
        if (p->path[0])
                unlink(p->path);
        if (p->tree[0])
                lg_rm_rf(p->tree);
        lg_pkg_info_free(&p->info);
        EVP_MD_CTX_free(p->md);
        free(p);
}

int lg_apps_push_begin(lg_apps *a, const char *ref, uint32_t chunk_size, bool without_lazy, bool insecure,
                       lg_apps_push **ret, struct lg_error *err) {
        struct lg_image_ref pr;
        int r = lg_image_ref_split(ref, &pr, err);
        if (r < 0)
                return r;
        if (pr.by_digest)
                return lg_error_setm(err, EINVAL, "push to a tag, not a digest (`%s`)", pr.name);
        if (chunk_size && (chunk_size < 4096 || chunk_size > (4u << 20) || (chunk_size & (chunk_size - 1))))
                return lg_error_setm(err, EINVAL, "the chunk size must be a power of two from 4 KiB to 4 MiB");
        if (!a->lazy_dir)
                return lg_error_setm(err, ENOTSUP, "this node pushes no packages (no lazy store)");
        lg_apps_push *p = calloc(1, sizeof(*p));
        if (!p)
                return lg_error_set(err, ENOMEM, "push");
        p->a = a;
        p->fd = -1;
        snprintf(p->ref, sizeof(p->ref), "%s", pr.name);
        p->chunk_size = chunk_size;
        p->without_lazy = without_lazy;
        struct lg_registry_auth ab;
        p->insecure = auth_for(a, pr.registry, insecure, &ab) != NULL;
        char rnd[17], dir[4200];
        lg_random_hex(rnd, 8);
        snprintf(dir, sizeof(dir), "%s/tmp", a->lazy_dir);
        lg_mkdir_p(dir, 0700);
        snprintf(p->path, sizeof(p->path), "%s/push-%s.archive", dir, rnd);
        p->fd = open(p->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (p->fd < 0) {
                r = lg_error_set(err, errno, "create `%s`", p->path);
                p->path[0] = '\0';
                push_free(p);
                return r;
        }
        if (!(p->md = EVP_MD_CTX_new()) || EVP_DigestInit_ex(p->md, EVP_sha256(), NULL) != 1) {
                push_free(p);
                return lg_error_set(err, ENOMEM, "sha256");
        }
        *ret = p;
        return 0;
}

void lg_apps_push_write(lg_apps_push *p, const void *data, size_t len) {
        if (p->failed)
                return;
        if (p->size + len > LG_APPS_PUSH_MAX) {
                p->failed = lg_error_setm(&p->err, EFBIG, "the package is larger than the limit of 1 GiB");
                return;
        }
        int r = lg_write_all(p->fd, data, len);
        if (r < 0)
                p->failed = lg_error_set(&p->err, -r, "write the package");
        EVP_DigestUpdate(p->md, data, len);
        p->size += len;
}

static void push_work(uv_work_t *w) {
        lg_apps_push *p = w->data;
        unsigned char h[32];
        unsigned hl = 0;
        /* The package rules: a push is refused for what an upload would
         * be. */
        int r = fsync(p->fd) < 0 ? lg_error_set(&p->err, errno, "write the package") : 0;
        if (r >= 0 && EVP_DigestFinal_ex(p->md, h, &hl) != 1)
                r = lg_error_set(&p->err, ENOMEM, "sha256");
        if (r >= 0) {
                for (unsigned i = 0; i < 32; i++)
                        snprintf(p->hex + 2 * i, 3, "%02x", h[i]);
                char rnd[17];
                lg_random_hex(rnd, 8);
                snprintf(p->tree, sizeof(p->tree), "%s/tmp/push-%s.tree", p->a->lazy_dir, rnd);
                r = lg_pkg_extract(p->path, p->tree, NULL, &p->info, &p->err);
        }
        if (r >= 0) {
                char tmp[4200];
                snprintf(tmp, sizeof(tmp), "%s/tmp", p->a->lazy_dir);
                struct lg_registry_auth auth = {.insecure = p->insecure};
                struct lg_package_push pp = {.ref = p->ref, .auth = &auth, .archive = p->path, .archive_hex = p->hex,
                                             .tree = p->tree, .tmp_dir = tmp, .chunk_size = p->chunk_size,
                                             .without_lazy = p->without_lazy};
                r = lg_package_push(&pp, &p->pushed, &p->err);
                p->registry = r < 0 && registry_errno(r);
        }
        p->r = r;
        /* Nothing stays on the node (here, off the loop: a large tree). */
        if (p->tree[0] && lg_rm_rf(p->tree) >= 0)
                p->tree[0] = '\0';
        if (unlink(p->path) == 0)
                p->path[0] = '\0';
}

static void push_done(uv_work_t *w, int status) {
        lg_apps_push *p = w->data;
        if (status < 0 && p->r >= 0)
                p->r = lg_error_setm(&p->err, -status, "the push was cancelled");
        if (!p->cancelled) {
                struct lg_apps_pushed out = {.ref = p->ref, .digest = p->pushed.digest, .archive = p->hex,
                                             .size = p->size, .info = &p->info, .lazy = p->pushed.lazy,
                                             .meta_size = p->pushed.meta_size, .blob_size = p->pushed.blob_size,
                                             .n_chunks = p->pushed.n_chunks, .chunk_size = p->pushed.chunk_size};
                p->cb(p->r, p->r < 0 ? NULL : &out, &p->err, p->registry, p->ud);
        }
        push_free(p);
}

int lg_apps_push_finish(lg_apps_push *p, lg_apps_push_cb cb, void *ud, struct lg_error *err) {
        int r = p->failed;
        if (r >= 0 && !p->size)
                r = lg_error_setm(&p->err, ENODATA, "the package is empty");
        if (r < 0) {
                *err = p->err;
                push_free(p);
                return r;
        }
        p->cb = cb;
        p->ud = ud;
        p->running = true;
        p->work.data = p;
        r = uv_queue_work(p->a->loop, &p->work, push_work, push_done);
        if (r < 0) {
                p->running = false;
                push_free(p);
                return lg_error_setm(err, ENOMEM, "cannot queue the push: %s", uv_strerror(r));
        }
        return 0;
}

void lg_apps_push_cancel(lg_apps_push *p) {
        if (p->running)
                p->cancelled = true; /* push_done frees it */
        else
                push_free(p);
}
