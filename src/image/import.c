/* Import of image archives: `docker save` output (manifest.json with
 * Config, RepoTags and Layers; layers as <id>/layer.tar or, from Docker 25
 * on, blobs/sha256/<hex>) and OCI image layouts in a tar (oci-layout,
 * index.json, blobs/sha256/<hex>), plain, gzip or zstd compressed.
 *
 * The archive is read once, as a stream: blobs/sha256/<hex> entries go
 * straight into the store through verifying blob writers (skipped when
 * present), other files that may be layers go in as blobs by their own
 * digest, and the small JSON files are kept in memory. Then each image is
 * committed by lg_image_commit, the path pulls take too: for a docker-save
 * image a Docker schema 2 manifest is made up (deterministically, so a
 * second import finds everything present) and stored as a blob.
 *
 * Names: the name argument tags the first image. Otherwise docker-save
 * RepoTags are used; in an OCI layout, the annotation
 * io.containerd.image.name, else org.opencontainers.image.ref.name when it
 * is a whole reference (has a '/' or ':'). A bare tag ("1.0") names no
 * repository, so that image is imported untagged. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "extract/extract.h"
#include "image/image-internal.h"

#define BUF_SIZE (64 * 1024)
#define MAX_ALIAS_HOPS 8
#define MAX_INDEX_DEPTH 4

struct ent {
        char *path;
        char *alias;                 /* symlink or hard link: the path it names */
        char digest[LG_DIGEST_MAX];  /* stored as a blob */
        uint64_t size;
        char *mem;                   /* kept in memory (JSON) */
        size_t mem_len;
};

struct job {
        char manifest[LG_DIGEST_MAX];
        char config[LG_DIGEST_MAX];
        char **names; /* normalized, NULL-terminated; may be empty */
};

struct ictx {
        lg_image_store *st;
        struct lg_error *err;
        struct lg_image_limits lim;
        lg_image_progress_cb progress;
        void *ud;
        const char *shown;
        int fd;
        uint64_t size, done, total_out;
        uint64_t mem_total; /* JSON kept in memory */
        struct archive *a;
        struct ent *ents;
        size_t n_ents, cap_ents;
        char (*touched)[65]; /* pending entries taken, to release at the end */
        size_t n_touched, cap_touched;
        struct job *jobs;
        size_t n_jobs;
        char name[160];
        unsigned char rbuf[BUF_SIZE], dbuf[BUF_SIZE];
};

static int touch(struct ictx *x, const char *digest) {
        if (x->n_touched == x->cap_touched) {
                size_t ncap = x->cap_touched ? x->cap_touched * 2 : 32;
                char(*nv)[65] = realloc(x->touched, ncap * sizeof(*nv));
                if (!nv)
                        return -ENOMEM;
                x->touched = nv;
                x->cap_touched = ncap;
        }
        snprintf(x->touched[x->n_touched++], 65, "%s", digest + 7);
        return 0;
}

static la_ssize_t cb_read(struct archive *a, void *ud, const void **buf) {
        struct ictx *x = ud;
        for (;;) {
                ssize_t n = read(x->fd, x->rbuf, sizeof(x->rbuf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        archive_set_error(a, errno, "read error");
                        return -1;
                }
                x->done += (uint64_t) n;
                if (x->progress)
                        x->progress(x->ud, "read", x->shown, x->done, x->size);
                *buf = x->rbuf;
                return n;
        }
}

/* Archive paths: no leading '/' or "./", no `..`, never empty. */
static int normalize(const char *raw, char *out, size_t cap) {
        char why[96];
        size_t depth;
        int r = lg_extract_path(raw, out, (unsigned) cap - 1, UINT_MAX, &depth, why, sizeof(why));
        return r < 0 ? r : depth ? 0 : -EINVAL;
}

/* A symlink target, relative to the link's directory, as an archive path. */
static int resolve_symlink(const char *link, const char *target, char *out, size_t cap) {
        if (target[0] == '/')
                return normalize(target, out, cap);
        char buf[2 * PATH_MAX];
        const char *slash = strrchr(link, '/');
        int n = snprintf(buf, sizeof(buf), "%.*s/%s", slash ? (int) (slash - link) : 0, link, target);
        if (n < 0 || (size_t) n >= sizeof(buf))
                return -ENAMETOOLONG;
        /* Fold "dir/.." lexically; climbing above the archive's root fails. */
        char *parts[PATH_MAX / 2];
        size_t np = 0;
        for (char *save = NULL, *t = strtok_r(buf, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
                if (!strcmp(t, "."))
                        continue;
                if (!strcmp(t, "..")) {
                        if (np == 0)
                                return -EINVAL;
                        np--;
                        continue;
                }
                if (np == ARRAY_SIZE(parts))
                        return -ENAMETOOLONG;
                parts[np++] = t;
        }
        size_t len = 0;
        for (size_t i = 0; i < np; i++) {
                size_t l = strlen(parts[i]);
                if (len + l + 2 > cap)
                        return -ENAMETOOLONG;
                if (len)
                        out[len++] = '/';
                memcpy(out + len, parts[i], l);
                len += l;
        }
        out[len] = '\0';
        return len ? 0 : -EINVAL;
}

/* A later entry of the same path wins, as in tar: lookup takes the last. */
static struct ent *new_ent(struct ictx *x, const char *path) {
        if (x->n_ents == x->cap_ents) {
                size_t ncap = x->cap_ents ? x->cap_ents * 2 : 64;
                struct ent *nv = realloc(x->ents, ncap * sizeof(*nv));
                if (!nv)
                        return NULL;
                x->ents = nv;
                x->cap_ents = ncap;
        }
        struct ent *e = &x->ents[x->n_ents];
        memset(e, 0, sizeof(*e));
        if (!(e->path = strdup(path)))
                return NULL;
        x->n_ents++;
        return e;
}

static const struct ent *lookup(const struct ictx *x, const char *path) {
        char norm[PATH_MAX];
        if (!path || normalize(path, norm, sizeof(norm)) < 0)
                return NULL;
        const char *want = norm;
        for (int hop = 0; hop <= MAX_ALIAS_HOPS; hop++) {
                const struct ent *e = NULL;
                for (size_t i = x->n_ents; i-- > 0 && !e;)
                        if (!strcmp(x->ents[i].path, want))
                                e = &x->ents[i];
                if (!e || !e->alias)
                        return e;
                want = e->alias;
        }
        return NULL;
}

static int data_error(struct ictx *x) {
        return lg_error_setm(x->err, EBADMSG, "archive `%s`: entry `%s`: corrupt data: %s", x->shown, x->name,
                             archive_error_string(x->a) ? archive_error_string(x->a) : "unknown error");
}

static int count_out(struct ictx *x, size_t n) {
        x->total_out += n;
        if (x->total_out > x->lim.archive_bytes)
                return lg_error_setm(x->err, EFBIG, "archive `%s` expands to more than the limit of %" PRIu64 " bytes",
                                     x->shown, x->lim.archive_bytes);
        return 0;
}

/* The current entry's data into a blob writer (NULL: skipped). */
static int copy_to_blob(struct ictx *x, struct lg_image_blob_writer *w, uint64_t *size) {
        uint64_t total = 0;
        for (;;) {
                la_ssize_t n = archive_read_data(x->a, x->dbuf, sizeof(x->dbuf));
                if (n == 0)
                        break;
                if (n < 0) {
                        lg_image_blob_abort(w);
                        return data_error(x);
                }
                int r = count_out(x, (size_t) n);
                if (r >= 0 && w)
                        r = lg_image_blob_write(w, x->dbuf, (size_t) n, x->err);
                if (r < 0) {
                        lg_image_blob_abort(w);
                        return r;
                }
                total += (uint64_t) n;
        }
        *size = total;
        return 0;
}

static int read_mem(struct ictx *x, struct ent *e) {
        size_t cap = 4096, len = 0;
        char *buf = malloc(cap);
        if (!buf)
                return lg_error_set(x->err, ENOMEM, "read `%s`", x->name);
        for (;;) {
                if (len + BUF_SIZE + 1 > cap) {
                        char *nb = realloc(buf, cap * 2 + BUF_SIZE);
                        if (!nb) {
                                free(buf);
                                return lg_error_set(x->err, ENOMEM, "read `%s`", x->name);
                        }
                        buf = nb;
                        cap = cap * 2 + BUF_SIZE;
                }
                la_ssize_t n = archive_read_data(x->a, buf + len, BUF_SIZE);
                if (n == 0)
                        break;
                if (n < 0) {
                        free(buf);
                        return data_error(x);
                }
                len += (size_t) n;
                x->mem_total += (uint64_t) n;
                if (x->mem_total > 16 * x->lim.json_bytes) {
                        free(buf);
                        return lg_error_setm(x->err, EFBIG, "archive `%s` has more than %" PRIu64 " bytes of JSON files",
                                             x->shown, 16 * x->lim.json_bytes);
                }
                int r = count_out(x, (size_t) n);
                if (r < 0) {
                        free(buf);
                        return r;
                }
                if (len > x->lim.json_bytes) {
                        free(buf);
                        return lg_error_setm(x->err, EFBIG, "archive `%s`: `%s` is larger than the limit of %" PRIu64
                                                            " bytes",
                                             x->shown, x->name, x->lim.json_bytes);
                }
        }
        buf[len] = '\0';
        e->mem = buf;
        e->mem_len = len;
        return 0;
}

static bool ends_with(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && !strcmp(s + a - b, suffix);
}

static int do_entry(struct ictx *x, struct archive_entry *ae) {
        const char *raw = archive_entry_pathname(ae);
        if (!raw)
                raw = archive_entry_pathname_utf8(ae);
        lg_printable(raw, x->name, sizeof(x->name));
        char path[PATH_MAX];
        mode_t type = archive_entry_filetype(ae);
        if (!raw || normalize(raw, path, sizeof(path)) < 0) {
                if (type == AE_IFDIR)
                        return 0; /* "./" */
                return lg_error_setm(x->err, EINVAL, "archive `%s`: entry `%s`: unsafe or empty path", x->shown,
                                     x->name);
        }
        const char *hl = archive_entry_hardlink(ae);
        if (!hl)
                hl = archive_entry_hardlink_utf8(ae);
        if (hl || type == AE_IFLNK) {
                char target[PATH_MAX];
                const char *t = hl ? hl : archive_entry_symlink(ae) ? archive_entry_symlink(ae)
                                                                     : archive_entry_symlink_utf8(ae);
                int r = !t ? -EINVAL : hl ? normalize(t, target, sizeof(target))
                                          : resolve_symlink(path, t, target, sizeof(target));
                if (r < 0)
                        return lg_error_setm(x->err, EINVAL, "archive `%s`: link `%s` points outside the archive",
                                             x->shown, x->name);
                struct ent *e = new_ent(x, path);
                if (!e || !(e->alias = strdup(target)))
                        return lg_error_set(x->err, ENOMEM, "read archive");
                return 0;
        }
        if (type == AE_IFDIR)
                return 0;
        if (type != AE_IFREG)
                return lg_error_setm(x->err, EINVAL, "archive `%s`: entry `%s` is not a file or directory", x->shown,
                                     x->name);
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        if (!strcmp(base, "VERSION") || !strcmp(base, "json"))
                return 0; /* docker save's legacy per-layer metadata */
        struct ent *e = new_ent(x, path);
        if (!e)
                return lg_error_set(x->err, ENOMEM, "read archive");
        if (ends_with(path, ".json") || !strcmp(path, "oci-layout") || !strcmp(path, "repositories"))
                return read_mem(x, e);
        struct lg_image_blob_writer *w = NULL;
        int r;
        if (!strncmp(path, "blobs/sha256/", 13) && strlen(path) == 13 + 64 && lg_image_is_hex(path + 13, 64)) {
                snprintf(e->digest, sizeof(e->digest), "sha256:%s", path + 13);
                r = lg_image_blob_begin(x->st, e->digest, 0, &w, x->err);
                if (r < 0)
                        return r;
                if (touch(x, e->digest) < 0) {
                        lg_image_blob_abort(w);
                        return lg_error_set(x->err, ENOMEM, "read archive");
                }
                r = copy_to_blob(x, w, &e->size);
                if (r < 0)
                        return r;
                if (w)
                        return lg_image_blob_commit(w, x->err);
                return 0;
        }
        r = lg_image_blob_begin_any(x->st, 0, &w, x->err);
        if (r < 0)
                return r;
        r = copy_to_blob(x, w, &e->size);
        if (r < 0)
                return r;
        r = lg_image_blob_commit_any(w, e->digest, x->err);
        if (r < 0)
                return r;
        return touch(x, e->digest) < 0 ? lg_error_set(x->err, ENOMEM, "read archive") : 0;
}

static int read_archive(struct ictx *x) {
        x->a = archive_read_new();
        if (!x->a)
                return lg_error_set(x->err, ENOMEM, "create archive reader");
        if (archive_read_support_format_tar(x->a) != ARCHIVE_OK ||
            archive_read_support_filter_gzip(x->a) != ARCHIVE_OK ||
            archive_read_support_filter_zstd(x->a) != ARCHIVE_OK)
                return lg_error_setm(x->err, ENOTSUP, "libarchive lacks tar, gzip or zstd support");
        if (archive_read_open(x->a, x, NULL, cb_read, NULL) != ARCHIVE_OK)
                return lg_error_setm(x->err, EBADMSG, "archive `%s` is not a tar archive: %s", x->shown,
                                     archive_error_string(x->a));
        uint64_t n = 0;
        for (;;) {
                struct archive_entry *ae;
                int ar = archive_read_next_header(x->a, &ae);
                if (ar == ARCHIVE_EOF)
                        break;
                if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
                        return lg_error_setm(x->err, EBADMSG, "archive `%s` is corrupt after %" PRIu64 " entries: %s",
                                             x->shown, n, archive_error_string(x->a));
                if (++n > x->lim.archive_entries)
                        return lg_error_setm(x->err, EFBIG, "archive `%s` has more than %" PRIu64 " entries", x->shown,
                                             x->lim.archive_entries);
                int r = do_entry(x, ae);
                if (r < 0)
                        return r;
        }
        if (n == 0)
                return lg_error_setm(x->err, EBADMSG, "archive `%s` is empty", x->shown);
        return 0;
}

/* ---- planning: what to commit under which names ---- */

static int add_job(struct ictx *x, const char *manifest, const char *config) {
        struct job *nv = realloc(x->jobs, (x->n_jobs + 1) * sizeof(*nv));
        if (!nv)
                return lg_error_set(x->err, ENOMEM, "import");
        x->jobs = nv;
        struct job *j = &nv[x->n_jobs++];
        memset(j, 0, sizeof(*j));
        snprintf(j->manifest, sizeof(j->manifest), "%s", manifest);
        snprintf(j->config, sizeof(j->config), "%s", config ? config : "");
        if (!(j->names = calloc(1, sizeof(char *))))
                return lg_error_set(x->err, ENOMEM, "import");
        return 0;
}

static int job_name(struct ictx *x, struct job *j, const char *ref) {
        char norm[512];
        int r = lg_image_normalize(ref, norm, sizeof(norm), x->err);
        if (r < 0)
                return lg_error_wrap(x->err, r, "archive `%s`", x->shown);
        size_t n = 0;
        while (j->names[n])
                n++;
        char **nv = realloc(j->names, (n + 2) * sizeof(char *));
        if (!nv)
                return lg_error_set(x->err, ENOMEM, "import");
        j->names = nv;
        if (!(nv[n] = strdup(norm)))
                return lg_error_set(x->err, ENOMEM, "import");
        nv[n + 1] = NULL;
        return 0;
}

/* The stored digest of an archive file, putting a JSON file kept in memory
 * into the store first. */
static int ent_blob(struct ictx *x, const char *path, char digest[LG_DIGEST_MAX], uint64_t *size, const char *what) {
        const struct ent *e = lookup(x, path);
        char shown[160];
        lg_printable(path, shown, sizeof(shown));
        if (!e)
                return lg_error_setm(x->err, EINVAL, "archive `%s`: %s `%s` is missing", x->shown, what, shown);
        if (e->mem) {
                int r = lg_image_blob_put(x->st, e->mem, e->mem_len, digest, x->err);
                if (r < 0)
                        return r;
                if (touch(x, digest) < 0)
                        return lg_error_set(x->err, ENOMEM, "import");
                *size = e->mem_len;
                return 0;
        }
        snprintf(digest, LG_DIGEST_MAX, "%s", e->digest);
        *size = e->size;
        return 0;
}

static const char *layer_type(struct ictx *x, const char *digest) {
        unsigned char m[4] = {0};
        int fd = lg_cas_get(x->st->cas, digest + 7, NULL);
        if (fd >= 0) {
                (void) lg_pread_all(fd, m, sizeof(m), 0);
                close(fd);
        }
        if (m[0] == 0x1f && m[1] == 0x8b)
                return "application/vnd.docker.image.rootfs.diff.tar.gzip";
        if (m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd)
                return "application/vnd.oci.image.layer.v1.tar+zstd";
        return "application/vnd.docker.image.rootfs.diff.tar";
}

static int plan_docker(struct ictx *x, const struct ent *mf) {
        json_error_t je;
        json_t *root = json_loadb(mf->mem, mf->mem_len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_array(root) || json_array_size(root) == 0) {
                json_decref(root);
                return lg_error_setm(x->err, EINVAL, "archive `%s`: manifest.json is not a non-empty JSON array",
                                     x->shown);
        }
        int r = 0;
        size_t i;
        json_t *img;
        json_array_foreach(root, i, img) {
                const char *cfg = json_string_value(json_object_get(img, "Config"));
                json_t *layers = json_object_get(img, "Layers");
                json_t *tags = json_object_get(img, "RepoTags");
                if (!cfg || !json_is_array(layers) || (tags && !json_is_null(tags) && !json_is_array(tags))) {
                        r = lg_error_setm(x->err, EINVAL, "archive `%s`: manifest.json entry %zu lacks Config or Layers",
                                          x->shown, i);
                        break;
                }
                if (json_array_size(layers) > x->lim.max_layers) {
                        r = lg_error_setm(x->err, EINVAL, "archive `%s`: image %zu has more than %u layers", x->shown,
                                          i, x->lim.max_layers);
                        break;
                }
                char cdigest[LG_DIGEST_MAX];
                uint64_t csize;
                if ((r = ent_blob(x, cfg, cdigest, &csize, "config")) < 0)
                        break;
                json_t *ls = json_array();
                size_t k;
                json_t *lp;
                json_array_foreach(layers, k, lp) {
                        char ld[LG_DIGEST_MAX];
                        uint64_t lsize;
                        if (!json_is_string(lp)) {
                                r = lg_error_setm(x->err, EINVAL, "archive `%s`: manifest.json: a layer is not a path",
                                                  x->shown);
                                break;
                        }
                        if ((r = ent_blob(x, json_string_value(lp), ld, &lsize, "layer")) < 0)
                                break;
                        json_array_append_new(ls, json_pack("{s:s,s:I,s:s}", "mediaType", layer_type(x, ld), "size",
                                                            (json_int_t) lsize, "digest", ld));
                }
                if (r < 0) {
                        json_decref(ls);
                        break;
                }
                json_t *m = json_pack("{s:i,s:s,s:{s:s,s:I,s:s},s:o}", "schemaVersion", 2, "mediaType",
                                      "application/vnd.docker.distribution.manifest.v2+json", "config", "mediaType",
                                      "application/vnd.docker.container.image.v1+json", "size", (json_int_t) csize,
                                      "digest", cdigest, "layers", ls);
                char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
                json_decref(m);
                if (!text) {
                        r = lg_error_set(x->err, ENOMEM, "import");
                        break;
                }
                char mdigest[LG_DIGEST_MAX];
                r = lg_image_blob_put(x->st, text, strlen(text), mdigest, x->err);
                free(text);
                if (r < 0 || (r = touch(x, mdigest)) < 0 || (r = add_job(x, mdigest, cdigest)) < 0)
                        break;
                json_t *t;
                json_array_foreach(tags, k, t) {
                        if (json_is_string(t) && (r = job_name(x, &x->jobs[x->n_jobs - 1], json_string_value(t))) < 0)
                                break;
                }
                if (r < 0)
                        break;
        }
        json_decref(root);
        return r < 0 ? r : 0;
}

static bool is_index_type(const char *mt) {
        return mt && (!strcmp(mt, "application/vnd.oci.image.index.v1+json") ||
                      !strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json"));
}

static bool platform_is(json_t *desc, const char *os, const char *arch) {
        json_t *p = json_object_get(desc, "platform");
        const char *o = json_string_value(json_object_get(p, "os"));
        const char *a = json_string_value(json_object_get(p, "architecture"));
        return o && a && !strcmp(o, os) && !strcmp(a, arch);
}

/* The linux/amd64 manifest of an index blob. */
static int resolve_index(struct ictx *x, const char *digest, unsigned depth, char out[LG_DIGEST_MAX]) {
        if (depth > MAX_INDEX_DEPTH)
                return lg_error_setm(x->err, EINVAL, "archive `%s`: image indexes nested too deep", x->shown);
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r = lg_image_blob_read(x->st, digest, x->lim.json_bytes, &text, &len, x->err);
        if (r < 0)
                return lg_error_wrap(x->err, r, "archive `%s`: index", x->shown);
        json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
        json_t *ms = json_object_get(root, "manifests");
        r = lg_error_setm(x->err, ENOTSUP, "archive `%s`: index %s has no linux/amd64 image", x->shown, digest);
        if (!json_is_array(ms))
                r = lg_error_setm(x->err, EINVAL, "archive `%s`: index %s is malformed", x->shown, digest);
        size_t i;
        json_t *d;
        json_array_foreach(ms, i, d) {
                if (!platform_is(d, "linux", "amd64"))
                        continue;
                const char *dg = json_string_value(json_object_get(d, "digest"));
                char hex[65];
                if ((r = lg_image_digest_hex(dg, hex, "index entry", x->err)) < 0)
                        break;
                if (is_index_type(json_string_value(json_object_get(d, "mediaType"))))
                        r = resolve_index(x, dg, depth + 1, out);
                else {
                        snprintf(out, LG_DIGEST_MAX, "%s", dg);
                        r = 0;
                }
                break;
        }
        json_decref(root);
        return r;
}

static int plan_oci(struct ictx *x, const struct ent *layout, const struct ent *index) {
        json_t *lj = json_loadb(layout->mem, layout->mem_len, 0, NULL);
        const char *ver = json_string_value(json_object_get(lj, "imageLayoutVersion"));
        bool ok = ver && !strncmp(ver, "1.", 2);
        json_decref(lj);
        if (!ok)
                return lg_error_setm(x->err, ENOTSUP, "archive `%s`: oci-layout is not image layout version 1.x",
                                     x->shown);
        json_error_t je;
        json_t *root = json_loadb(index->mem, index->mem_len, JSON_REJECT_DUPLICATES, &je);
        json_t *ms = json_object_get(root, "manifests");
        if (!json_is_array(ms) || json_array_size(ms) == 0) {
                json_decref(root);
                return lg_error_setm(x->err, EINVAL, "archive `%s`: index.json lists no manifests", x->shown);
        }
        int r = 0;
        size_t i;
        json_t *d;
        bool skipped = false;
        json_array_foreach(ms, i, d) {
                const char *dg = json_string_value(json_object_get(d, "digest"));
                const char *mt = json_string_value(json_object_get(d, "mediaType"));
                char hex[65], man[LG_DIGEST_MAX];
                if ((r = lg_image_digest_hex(dg, hex, "index.json entry", x->err)) < 0)
                        break;
                if (json_object_get(d, "platform") && !platform_is(d, "linux", "amd64")) {
                        skipped = true;
                        continue;
                }
                if (!lg_image_blob_exists(x->st, dg)) {
                        r = lg_error_setm(x->err, EINVAL, "archive `%s`: blob %s named by index.json is missing",
                                          x->shown, dg);
                        break;
                }
                (void) touch(x, dg); /* blob_exists took it */
                if (is_index_type(mt)) {
                        if ((r = resolve_index(x, dg, 1, man)) < 0)
                                break;
                        if (!lg_image_blob_exists(x->st, man)) {
                                r = lg_error_setm(x->err, EINVAL, "archive `%s`: manifest %s is missing", x->shown,
                                                  man);
                                break;
                        }
                        (void) touch(x, man);
                } else {
                        snprintf(man, sizeof(man), "%s", dg);
                }
                if ((r = add_job(x, man, NULL)) < 0)
                        break;
                json_t *ann = json_object_get(d, "annotations");
                const char *full = json_string_value(json_object_get(ann, "io.containerd.image.name"));
                const char *ref = json_string_value(json_object_get(ann, "org.opencontainers.image.ref.name"));
                if (!full && ref && strpbrk(ref, "/:"))
                        full = ref;
                if (full && (r = job_name(x, &x->jobs[x->n_jobs - 1], full)) < 0)
                        break;
        }
        json_decref(root);
        if (r >= 0 && x->n_jobs == 0 && skipped)
                r = lg_error_setm(x->err, ENOTSUP, "archive `%s` has no linux/amd64 image", x->shown);
        return r < 0 ? r : 0;
}

int lg_image_import(lg_image_store *st, const char *path, const char *name, lg_image_progress_cb progress, void *ud,
                    struct lg_image **ret, struct lg_error *err) {
        if (ret)
                *ret = NULL;
        if (!path)
                return lg_error_setm(err, EINVAL, "no archive given");
        char norm[512] = "";
        if (name && *name) {
                int r = lg_image_normalize(name, norm, sizeof(norm), err);
                if (r < 0)
                        return r;
        }
        struct ictx *x = calloc(1, sizeof(*x));
        if (!x)
                return lg_error_set(err, ENOMEM, "import");
        char shown[160];
        lg_printable(path, shown, sizeof(shown));
        x->st = st;
        x->err = err;
        x->progress = progress;
        x->ud = ud;
        x->shown = shown;
        pthread_mutex_lock(&st->mu);
        x->lim = st->lim;
        pthread_mutex_unlock(&st->mu);
        int r;
        x->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct stat s;
        if (x->fd < 0 || fstat(x->fd, &s) < 0) {
                r = lg_error_set(err, errno, "open `%s`", shown);
                goto out;
        }
        if (!S_ISREG(s.st_mode)) {
                r = lg_error_setm(err, EINVAL, "`%s` is not a regular file", shown);
                goto out;
        }
        x->size = (uint64_t) s.st_size;
        r = read_archive(x);
        if (r < 0)
                goto out;
        const struct ent *layout = lookup(x, "oci-layout"), *index = lookup(x, "index.json"),
                         *mf = lookup(x, "manifest.json");
        /* Docker 25 writes both forms: the OCI one keeps the registry's
         * manifest digests. */
        if (layout && layout->mem && index && index->mem)
                r = plan_oci(x, layout, index);
        else if (mf && mf->mem)
                r = plan_docker(x, mf);
        else
                r = lg_error_setm(err, EINVAL,
                                  "`%s` is neither a docker save archive (manifest.json) nor an OCI image layout "
                                  "(oci-layout, index.json)",
                                  shown);
        if (r < 0)
                goto out;
        if (norm[0]) {
                lg_image_strv_free(x->jobs[0].names);
                if (!(x->jobs[0].names = calloc(1, sizeof(char *)))) {
                        r = lg_error_set(err, ENOMEM, "import");
                        goto out;
                }
                if ((r = job_name(x, &x->jobs[0], norm)) < 0)
                        goto out;
        }
        for (size_t i = 0; i < x->n_jobs && r >= 0; i++) {
                struct job *j = &x->jobs[i];
                struct lg_image *img = NULL;
                r = lg_image_commit(st, j->manifest, j->names[0], progress, ud, i == 0 && ret ? &img : NULL, err);
                if (r < 0)
                        break;
                if (i == 0 && ret)
                        *ret = img;
                if (j->names[0] && j->names[1]) {
                        const char *id = img ? img->id : NULL;
                        struct lg_image *tmp = NULL;
                        if (!id && (r = lg_image_get(st, j->manifest, &tmp, err)) >= 0)
                                id = tmp->id;
                        for (size_t k = 1; r >= 0 && j->names[k]; k++)
                                r = lg_image_index_add(st, j->manifest, id, j->names[k], err);
                        lg_image_free(tmp);
                }
        }
        /* The first image's names, all of them. */
        if (r >= 0 && ret && *ret) {
                struct lg_image *img = NULL;
                if (lg_image_get(st, x->jobs[0].manifest, &img, NULL) >= 0) {
                        lg_image_free(*ret);
                        *ret = img;
                }
        }
        if (r < 0 && ret) {
                lg_image_free(*ret);
                *ret = NULL;
        }
out:
        if (x->a)
                archive_read_free(x->a);
        if (x->fd >= 0)
                close(x->fd);
        for (size_t i = 0; i < x->n_touched; i++)
                lg_image_pending_drop(st, x->touched[i], false);
        for (size_t i = 0; i < x->n_ents; i++) {
                free(x->ents[i].path);
                free(x->ents[i].alias);
                free(x->ents[i].mem);
        }
        for (size_t i = 0; i < x->n_jobs; i++)
                lg_image_strv_free(x->jobs[i].names);
        free(x->jobs);
        free(x->ents);
        free(x->touched);
        free(x);
        return r < 0 ? r : 0;
}
