/* lg_image_pull over the distribution API v2 (image.h, docs/images.md
 * "Pulling"), on the registry client (registry.h).
 *
 * One pull is one blocking sequence on one client (legiond runs it on its
 * thread pool): the manifest (an index or manifest list is resolved to
 * linux/amd64 first), then the config and every layer not yet in the store,
 * streamed into the store's blob writer which verifies each digest, then
 * the index and manifest bytes themselves, and lg_image_commit which
 * extracts the layers and points the name at the image. Requests,
 * authentication, redirects and their errors are the client's. */
#include <ctype.h>
#include <string.h>

#include <jansson.h>

#include "image/image-internal.h"
#include "image/registry.h"

#define CONFIG_MAX (16u << 20)      /* image configs */
#define LAYERS_MAX 127              /* overlayfs lower dirs, with room to spare */
#define TOTAL_MAX (32ull << 30)     /* compressed size of all the layers */

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"

struct pull {
        lg_image_store *st;
        struct lg_error *err;
        lg_image_progress_cb progress;
        void *ud;

        char name[512];         /* the normalized reference */
        char host[256];         /* registry as named: "docker.io", "127.0.0.1:5000" */
        char repo[256];         /* "library/busybox" */
        char ref[80];           /* tag or "sha256:<hex>" */
        bool by_digest;

        lg_registry *reg;
        const struct lg_registry_auth *auth;
        bool lazy;              /* try the image's lazy form (lazy-pull.c) */
        struct lg_image_pull_report *report;

        /* Blobs this pull has pinned against GC (blob_begin and
         * blob_exists pin; lg_image_commit unpins what it uses): a pull
         * that fails before the commit unpins them, so GC can take them. */
        char (*pins)[65];
        size_t n_pins, cap_pins;
};

static void pinned(struct pull *p, const char *digest) {
        if (p->n_pins == p->cap_pins) {
                size_t cap = p->cap_pins ? 2 * p->cap_pins : 16;
                char(*np)[65] = realloc(p->pins, cap * sizeof(*np));
                if (!np)
                        return; /* it stays pinned until legiond restarts: harmless */
                p->pins = np;
                p->cap_pins = cap;
        }
        snprintf(p->pins[p->n_pins++], 65, "%s", digest + 7);
}

/* ---- small helpers ----------------------------------------------------------- */

static const char *short_digest(const char *d) {
        static __thread char buf[16];
        snprintf(buf, sizeof(buf), "%.12s", !strncmp(d, "sha256:", 7) ? d + 7 : d);
        return buf;
}

/* Split the normalized reference "HOST/REPO[:TAG][@DIGEST]". */
static int split_ref(struct pull *p, const char *ref) {
        struct lg_image_ref r;
        int rc = lg_image_ref_split(ref, &r, p->err);
        if (rc < 0)
                return rc;
        memcpy(p->name, r.name, sizeof(p->name));
        memcpy(p->host, r.registry, sizeof(p->host));
        memcpy(p->repo, r.repository, sizeof(p->repo));
        memcpy(p->ref, r.reference, sizeof(p->ref));
        p->by_digest = r.by_digest;
        return 0;
}

/* ---- manifests -------------------------------------------------------------------- */

struct manifest {
        char *buf;
        size_t len;
        char digest[72];
        char mtype[128];
        json_t *doc;
};

static void manifest_done(struct manifest *m) {
        free(m->buf);
        json_decref(m->doc);
        memset(m, 0, sizeof(*m));
}

/* Fetch manifests/<ref>, verify it against expect (the digest asked for,
 * may be NULL) and the registry's Docker-Content-Digest, parse it. */
static int fetch_manifest(struct pull *p, const char *ref, const char *expect, struct manifest *m) {
        char what[400];
        snprintf(what, sizeof(what), "manifest %s%s%s", p->repo, expect ? "@" : ":", ref);
        struct lg_registry_manifest got;
        int r = lg_registry_manifest_get(p->reg, ref, NULL, &got, p->err);
        if (r < 0)
                return r;
        m->buf = TAKE_PTR(got.buf);
        m->len = got.len;
        memcpy(m->digest, got.digest, sizeof(m->digest));
        snprintf(m->mtype, sizeof(m->mtype), "%s", got.media_type);
        if (expect && strcmp(expect, m->digest))
                return lg_error_setm(p->err, EBADMSG, "%s: digest mismatch: the registry sent %s", what, m->digest);
        json_error_t je;
        m->doc = json_loadb(m->buf, m->len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(m->doc))
                return lg_error_setm(p->err, EINVAL, "%s is not a JSON object: %s", what, m->doc ? "" : je.text);
        const char *inner = json_string_value(json_object_get(m->doc, "mediaType"));
        json_t *sv = json_object_get(m->doc, "schemaVersion");
        if (strstr(m->mtype, "distribution.manifest.v1") || (inner && strstr(inner, "distribution.manifest.v1")) ||
            (json_is_integer(sv) && json_integer_value(sv) == 1) || json_object_get(m->doc, "fsLayers"))
                return lg_error_setm(p->err, ENOTSUP,
                                     "%s is a Docker schema 1 manifest, which is not supported (push the image again "
                                     "with a current client)",
                                     what);
        if (!json_is_integer(sv) || json_integer_value(sv) != 2)
                return lg_error_setm(p->err, EINVAL, "%s: schemaVersion must be 2", what);
        /* The document's own mediaType wins over a generic Content-Type. */
        if (inner)
                snprintf(m->mtype, sizeof(m->mtype), "%s", inner);
        else if (strcmp(m->mtype, MT_OCI_INDEX) && strcmp(m->mtype, MT_DOCKER_LIST) &&
                 strcmp(m->mtype, MT_OCI_MANIFEST) && strcmp(m->mtype, MT_DOCKER_MANIFEST))
                snprintf(m->mtype, sizeof(m->mtype), "%s",
                         json_object_get(m->doc, "manifests") ? MT_OCI_INDEX : MT_OCI_MANIFEST);
        return 0;
}

static bool is_index(const char *mt) { return !strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST); }
static bool is_manifest(const char *mt) { return !strcmp(mt, MT_OCI_MANIFEST) || !strcmp(mt, MT_DOCKER_MANIFEST); }

/* Pick linux/amd64 from an index; its digest into ret. */
static int pick_platform(struct pull *p, const struct manifest *idx, char ret[72]) {
        json_t *list = json_object_get(idx->doc, "manifests");
        if (!json_is_array(list))
                return lg_error_setm(p->err, EINVAL, "image index of %s has no `manifests` array", p->name);
        char avail[400] = "";
        size_t off = 0;
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e) {
                json_t *pl = json_object_get(e, "platform");
                const char *os = json_string_value(json_object_get(pl, "os"));
                const char *arch = json_string_value(json_object_get(pl, "architecture"));
                const char *mt = json_string_value(json_object_get(e, "mediaType"));
                const char *dg = json_string_value(json_object_get(e, "digest"));
                if (os && arch && !strcmp(os, "linux") && !strcmp(arch, "amd64") && (!mt || is_manifest(mt))) {
                        if (!lg_image_digest_valid(dg))
                                return lg_error_setm(p->err, EINVAL, "image index of %s: bad digest for linux/amd64",
                                                     p->name);
                        snprintf(ret, 72, "%s", dg);
                        return 0;
                }
                /* Attestations ("unknown/unknown") are not platforms. */
                if (os && arch && strcmp(os, "unknown") && off < sizeof(avail) - 1)
                        off += (size_t) snprintf(avail + off, sizeof(avail) - off, "%s%.31s/%.31s", off ? ", " : "",
                                                 os, arch);
        }
        return lg_error_setm(p->err, ENOTSUP, "%s has no linux/amd64 image (available: %s)", p->name,
                             off ? avail : "none");
}

/* ---- blobs ------------------------------------------------------------------------ */

static int store_bytes(struct pull *p, const char *digest, const void *buf, size_t len) {
        struct lg_image_blob_writer *w = NULL;
        int r = lg_image_blob_begin(p->st, digest, len, &w, p->err);
        pinned(p, digest);
        if (r < 0 || r == 1 || !w)
                return r < 0 ? r : 0;
        r = lg_image_blob_write(w, buf, len, p->err);
        if (r < 0) {
                lg_image_blob_abort(w);
                return r;
        }
        r = lg_image_blob_commit(w, p->err);
        return r < 0 ? r : 0;
}

/* A blob's bytes on their way into the store's writer. */
struct sink {
        struct pull *p;
        struct lg_image_blob_writer *w;
        const char *what;
        uint64_t done, total;
        bool failed;            /* the writer refused (the store's error) */
};

static int blob_sink(void *ud, const void *buf, size_t len, struct lg_error *err) {
        struct sink *s = ud;
        int r = lg_image_blob_write(s->w, buf, len, err);
        if (r < 0) {
                s->failed = true;
                return r;
        }
        s->done += len;
        if (s->p->progress)
                s->p->progress(s->p->ud, "download", s->what, s->done, s->total);
        return 0;
}

/* Download blob digest of the declared size unless the store has it. */
static int fetch_blob(struct pull *p, const char *digest, uint64_t size, const char *kind) {
        char what[16];
        snprintf(what, sizeof(what), "%s", short_digest(digest));
        if (lg_image_blob_exists(p->st, digest) == 1) {
                pinned(p, digest);
                if (p->progress)
                        p->progress(p->ud, "download", what, size, size);
                return 0;
        }
        struct lg_image_blob_writer *w = NULL;
        int r = lg_image_blob_begin(p->st, digest, size, &w, p->err);
        pinned(p, digest);
        if (r < 0)
                return lg_error_wrap(p->err, r, "%s %s", kind, what);
        if (r == 1 || !w)
                return 0;
        struct sink sk = {.p = p, .w = w, .what = what, .total = size};
        if (p->progress)
                p->progress(p->ud, "download", what, 0, size);
        r = lg_registry_blob_get(p->reg, digest, size, blob_sink, &sk, p->err);
        if (r < 0) {
                if (sk.failed)
                        lg_error_wrap(p->err, r, "%s %s from %s", kind, what, p->host);
                else if (r != -EBADMSG)
                        lg_error_wrap(p->err, r, "%s", kind);
                lg_image_blob_abort(w);
                return r;
        }
        r = lg_image_blob_commit(w, p->err);
        if (r < 0)
                return lg_error_wrap(p->err, r, "%s %s from %s", kind, what, p->host);
        return 0;
}

static int descriptor(struct pull *p, json_t *d, const char *what, const char **digest, uint64_t *size,
                      const char **mt) {
        *digest = json_string_value(json_object_get(d, "digest"));
        json_t *sz = json_object_get(d, "size");
        *mt = json_string_value(json_object_get(d, "mediaType"));
        if (!lg_image_digest_valid(*digest))
                return lg_error_setm(p->err, json_is_string(json_object_get(d, "digest")) ? ENOTSUP : EINVAL,
                                     "manifest of %s: %s has %s digest", p->name, what,
                                     *digest ? "an unsupported (non-sha256) or malformed" : "no");
        if (!json_is_integer(sz) || json_integer_value(sz) < 0)
                return lg_error_setm(p->err, EINVAL, "manifest of %s: %s has no valid size", p->name, what);
        *size = (uint64_t) json_integer_value(sz);
        return 0;
}

static bool layer_type_ok(const char *mt) {
        static const char *const ok[] = {
                "application/vnd.oci.image.layer.v1.tar",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.oci.image.layer.v1.tar+zstd",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.docker.image.rootfs.diff.tar",
        };
        for (size_t i = 0; i < ARRAY_SIZE(ok); i++)
                if (!strcmp(mt, ok[i]))
                        return true;
        return false;
}

/* The config's descriptor of a manifest, checked. */
static int config_desc(struct pull *p, const struct manifest *m, const char **dg, uint64_t *size) {
        const char *mt;
        json_t *cfg = json_object_get(m->doc, "config");
        if (!json_is_object(cfg))
                return lg_error_setm(p->err, EINVAL, "manifest of %s has no config", p->name);
        int r = descriptor(p, cfg, "the config", dg, size, &mt);
        if (r < 0)
                return r;
        if (mt && strcmp(mt, "application/vnd.oci.image.config.v1+json") &&
            strcmp(mt, "application/vnd.docker.container.image.v1+json"))
                return lg_error_setm(p->err, ENOTSUP, "%s is not a container image (config media type %.100s)", p->name,
                                     mt);
        if (*size > CONFIG_MAX)
                return lg_error_setm(p->err, EFBIG, "the config of %s is over %u MiB", p->name, CONFIG_MAX >> 20);
        return 0;
}

/* Download the config of a manifest (the lazy path needs its diff ids
 * before it decides). */
static int fetch_config(struct pull *p, const struct manifest *m) {
        const char *dg;
        uint64_t size;
        int r = config_desc(p, m, &dg, &size);
        return r < 0 ? r : fetch_blob(p, dg, size, "config");
}

/* A parsed image manifest's config and layer descriptors checked before
 * any blob is asked for (the lazy path fetches the config first). */
static int check_image_manifest(struct pull *p, const struct manifest *m) {
        const char *dg;
        uint64_t size;
        int r = config_desc(p, m, &dg, &size);
        if (r < 0)
                return r;
        json_t *layers = json_object_get(m->doc, "layers");
        if (!json_is_array(layers))
                return lg_error_setm(p->err, EINVAL, "manifest of %s has no `layers` array", p->name);
        if (json_array_size(layers) > LAYERS_MAX)
                return lg_error_setm(p->err, EFBIG, "%s has %zu layers, more than %d", p->name, json_array_size(layers),
                                     LAYERS_MAX);
        uint64_t total = 0;
        size_t i;
        json_t *l;
        json_array_foreach(layers, i, l) {
                char what[32];
                snprintf(what, sizeof(what), "layer %zu", i);
                const char *ldg, *lmt;
                uint64_t lsz;
                r = descriptor(p, l, what, &ldg, &lsz, &lmt);
                if (r < 0)
                        return r;
                if (lmt && !layer_type_ok(lmt))
                        return lg_error_setm(p->err, ENOTSUP, "%s: layer %zu has the unsupported media type %.100s",
                                             p->name, i, lmt);
                total += lsz;
                if (lsz > TOTAL_MAX || total > TOTAL_MAX)
                        return lg_error_setm(p->err, EFBIG, "%s is larger than %llu GiB", p->name,
                                             (unsigned long long) (TOTAL_MAX >> 30));
        }
        return 0;
}

/* Download the config and layers of a checked image manifest. */
static int fetch_image_blobs(struct pull *p, const struct manifest *m) {
        const char *dg;
        uint64_t size;
        int r = config_desc(p, m, &dg, &size);
        if (r < 0)
                return r;
        json_t *layers = json_object_get(m->doc, "layers");
        size_t i;
        json_t *l;
        r = fetch_blob(p, dg, size, "config");
        if (r < 0)
                return r;
        json_array_foreach(layers, i, l) {
                const char *ldg, *lmt;
                uint64_t lsz;
                descriptor(p, l, "layer", &ldg, &lsz, &lmt);
                /* A lazy layer (this pull's or another image's) has no blob. */
                if (lg_image_layer_is_lazy(p->st, ldg + 7) == 1)
                        continue;
                r = fetch_blob(p, ldg, lsz, "layer");
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- the pull ------------------------------------------------------------------------ */

static int do_pull(struct pull *p, struct lg_image **ret) {
        struct manifest idx = {0}, man = {0};
        int r = fetch_manifest(p, p->ref, p->by_digest ? p->ref : NULL, &man);
        if (r >= 0 && is_index(man.mtype)) {
                idx = man;
                memset(&man, 0, sizeof(man));
                char dg[72];
                r = pick_platform(p, &idx, dg);
                if (r >= 0)
                        r = fetch_manifest(p, dg, dg, &man);
                if (r >= 0 && is_index(man.mtype))
                        r = lg_error_setm(p->err, ENOTSUP, "%s: nested image indexes are not supported", p->name);
        }
        if (r >= 0 && !is_manifest(man.mtype))
                r = lg_error_setm(p->err, ENOTSUP, "%s: unsupported manifest media type %.100s", p->name, man.mtype);
        if (r >= 0)
                r = check_image_manifest(p, &man);
        /* Lazily: the config first, then each layer's lazy form in place
         * of its blob (lazy-pull.c); anything amiss is a full pull. */
        bool lazy = false;
        if (r >= 0 && p->lazy && (r = fetch_config(p, &man)) >= 0)
                lazy = lg_image_lazy_pull_layers(p->st, p->reg, p->auth, man.digest, man.buf, man.len, p->progress,
                                                 p->ud, p->report) == 1;
        if (r >= 0)
                r = fetch_image_blobs(p, &man);
        /* The manifest goes in last: until then nothing refers to the blobs. */
        if (r >= 0 && idx.buf)
                r = store_bytes(p, idx.digest, idx.buf, idx.len);
        if (r >= 0)
                r = store_bytes(p, man.digest, man.buf, man.len);
        if (r >= 0) {
                r = lg_image_commit(p->st, man.digest, p->name, p->progress, p->ud, ret, p->err);
                /* The commit unpinned what the image uses; the index is
                 * not part of it. */
                bool had_idx = false;
                for (size_t i = 0; idx.buf && i < p->n_pins && !had_idx; i++)
                        had_idx = !strcmp(p->pins[i], idx.digest + 7);
                p->n_pins = 0;
                if (had_idx)
                        pinned(p, idx.digest);
        }
        for (size_t i = 0; i < p->n_pins; i++)
                lg_image_pending_drop(p->st, p->pins[i], false);
        p->n_pins = 0;
        /* Nothing half-recorded: the lazy layers made for an image that
         * did not come go again. */
        if (lazy && r < 0)
                lg_image_lazy_pull_undo(p->st, p->report);
        manifest_done(&idx);
        manifest_done(&man);
        return r;
}

int lg_image_pull(lg_image_store *st, const char *ref, const struct lg_registry_auth *auth,
                  lg_image_progress_cb progress, void *ud, struct lg_image **ret,
                  struct lg_error *err) {
        return lg_image_pull_lazy(st, ref, auth, LG_IMAGE_LAZY_DEFAULT, progress, ud, ret, NULL, err);
}

int lg_image_pull_lazy(lg_image_store *st, const char *ref, const struct lg_registry_auth *auth,
                       enum lg_image_lazy_mode lazy, lg_image_progress_cb progress, void *ud, struct lg_image **ret,
                       struct lg_image_pull_report *report, struct lg_error *err) {
        if (ret)
                *ret = NULL;
        struct lg_image_pull_report own = {0};
        if (report)
                memset(report, 0, sizeof(*report));
        else
                report = &own;
        if (!st || !ref)
                return lg_error_setm(err, EINVAL, "pull: no store or reference");
        struct pull *p = calloc(1, sizeof(*p));
        if (!p)
                return lg_error_set(err, ENOMEM, "pull");
        p->st = st;
        p->err = err;
        p->progress = progress;
        p->ud = ud;
        p->auth = auth;
        p->report = report;
        p->lazy = lazy == LG_IMAGE_LAZY_AUTO || (lazy == LG_IMAGE_LAZY_DEFAULT && st->lazy_auto);
        if (!p->lazy)
                snprintf(report->reason, sizeof(report->reason), "%s",
                         lazy == LG_IMAGE_LAZY_NEVER ? "not asked for (--lazy never)"
                                                     : "lazy images are off on this node (legiond --lazy-images never)");
        int r = split_ref(p, ref);
        if (r >= 0)
                r = lg_registry_open(p->host, p->repo, auth, &p->reg, err);
        if (r >= 0)
                r = do_pull(p, ret);
        lg_registry_close(p->reg);
        free(p->pins);
        free(p);
        if (r < 0 || !report->lazy) {
                free(report->layers);
                report->layers = NULL;
                report->n_layers = 0;
                report->lazy = false;
        }
        lg_image_pull_report_clear(&own);
        return r;
}
