/* A command-line driver of the registry client (src/image/registry.h) and
 * the lazy artifact (src/image/lazy-artifact.h) for the e2e tests in
 * test_registry_client.py, which run it against Debian's docker-registry
 * on loopback. Built by meson as src/image/registry-driver.
 *
 * registry-driver CMD HOST REPO ARGS...   (credentials: $LG_REG_USER,
 * $LG_REG_PASS; timeouts: $LG_REG_CONNECT_MS, $LG_REG_REQUEST_MS)
 *   range DIGEST OFF LEN        the bytes on stdout
 *   ranges DIGEST OFF LEN N     N reads on one client (token kept), nothing out
 *   parallel DIGEST SIZE N      N threads, a client each, 40 ranges each of
 *                               the blob, checked against a whole read
 *   exists DIGEST               "1 SIZE" or "0"
 *   get DIGEST SIZE             the whole blob on stdout
 *   push FILE                   push a blob; prints "pushed|present DIGEST"
 *   push-as DIGEST FILE         push FILE claiming DIGEST; "pushed|present"
 *   manifest-get REF            the manifest on stdout; "MEDIATYPE DIGEST" on stderr
 *   manifest-put REF|- MEDIATYPE FILE   prints the digest
 *   referrers DIGEST            the index on stdout; "tag|api" on stderr
 *   lazy-push SUBJECT CHUNKSIZE LAYER DIFFID META CHUNKS BLOB PREFETCH|- [LAYER ...]
 *                               push the lazy artifact of image manifest
 *                               SUBJECT; prints the artifact digest
 *   lazy-find SUBJECT           the parsed artifact as JSON
 *   pull STOREDIR REF           lg_image_pull; prints the image digest
 *   mirror-range DIGEST OFF LEN SHA256 TIMES MIRROR...
 *                               TIMES reads with lg_mirrors_range (one skip
 *                               table, clients kept) from the mirrors
 *                               (HOST:PORT, plain http, the credentials
 *                               above), the bytes accepted when they hash to
 *                               SHA256 (hex); prints "ok" or "fail ERRNO" each
 * A failure prints "ERR <errno> <message>" on stderr and exits 1. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cas/cas.h"
#include "image/image.h"
#include "image/lazy-artifact.h"
#include "image/mirrors.h"
#include "image/registry.h"

/* mirror-range's accept: the bytes hash to the expected sha256. */
struct want_sha {
        const char *hex;
        size_t len;
};

static int accept_sha(void *ud, const void *buf) {
        const struct want_sha *w = ud;
        uint8_t md[32];
        char hex[65];
        if (lg_sha256(buf, w->len, md) < 0)
                return -ENOMEM;
        for (int i = 0; i < 32; i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
        return strcmp(hex, w->hex) ? -EBADMSG : 0;
}

static int mirror_range(char **a, int n, const struct lg_registry_auth *auth, struct lg_error *err) {
        struct lg_mirrors m = {0};
        int r = 0;
        for (int i = 5; r >= 0 && i < n; i++)
                r = lg_mirrors_add(&m, a[i], auth->username, auth->password, true, err);
        struct want_sha w = {.hex = a[3], .len = strtoull(a[2], NULL, 10)};
        char *buf = malloc(w.len ? w.len : 1);
        struct lg_mirror_skip skip = {0};
        struct lg_mirror_clients cl = {0};
        for (int t = 0; r >= 0 && buf && t < atoi(a[4]); t++) {
                int q = lg_mirrors_range(&m, &skip, &cl, "some/repo", a[0], strtoull(a[1], NULL, 10), buf, w.len,
                                         accept_sha, &w, err);
                if (q < 0)
                        printf("fail %d\n", -q);
                else
                        printf("ok\n");
        }
        lg_mirror_clients_close(&cl);
        lg_mirrors_clear(&m);
        free(buf);
        return r < 0 ? r : buf ? 0 : -ENOMEM;
}

static int fail(int r, const struct lg_error *err) {
        fprintf(stderr, "ERR %d %s\n", -r, err->msg);
        return 1;
}

static int write_all(const void *buf, size_t len) {
        return fwrite(buf, 1, len, stdout) == len ? 0 : -EIO;
}

static int out_sink(void *ud, const void *buf, size_t len, struct lg_error *err) {
        (void) ud;
        return write_all(buf, len) < 0 ? lg_error_setm(err, EIO, "stdout") : 0;
}

static int read_file(const char *path, char **buf, size_t *len) {
        FILE *f = fopen(path, "rb");
        if (!f)
                return -errno;
        size_t cap = 1 << 16, n = 0;
        char *b = malloc(cap);
        size_t k;
        while (b && (k = fread(b + n, 1, cap - n, f)) > 0) {
                n += k;
                if (n == cap) {
                        char *nb = realloc(b, cap *= 2);
                        if (!nb)
                                free(b);
                        b = nb;
                }
        }
        fclose(f);
        if (!b)
                return -ENOMEM;
        *buf = b;
        *len = n;
        return 0;
}

/* parallel: the threads share the whole blob to compare with. */
struct par {
        const char *host, *repo, *digest;
        const struct lg_registry_auth *auth;
        const unsigned char *whole;
        uint64_t size;
        unsigned seed;
        int r;
        struct lg_error err;
};

static void *par_thread(void *ud) {
        struct par *p = ud;
        lg_registry *reg = NULL;
        p->r = lg_registry_open(p->host, p->repo, p->auth, &reg, &p->err);
        unsigned char *buf = malloc(70000);
        for (int i = 0; p->r >= 0 && i < 40; i++) {
                size_t len = 1 + rand_r(&p->seed) % 65536;
                uint64_t off = (uint64_t) rand_r(&p->seed) % (p->size - len + 1);
                p->r = lg_registry_blob_range(reg, p->digest, off, buf, len, &p->err);
                if (p->r >= 0 && memcmp(buf, p->whole + off, len))
                        p->r = lg_error_setm(&p->err, EBADMSG, "bytes %llu+%zu differ", (unsigned long long) off, len);
        }
        free(buf);
        lg_registry_close(reg);
        return NULL;
}

static int mem_sink(void *ud, const void *buf, size_t len, struct lg_error *err) {
        (void) err;
        unsigned char **at = ud;
        memcpy(*at, buf, len);
        *at += len;
        return 0;
}

static int parallel(const char *host, const char *repo, lg_registry *reg, const struct lg_registry_auth *auth,
                    const char *digest, uint64_t size, int n, struct lg_error *err) {
        unsigned char *whole = malloc(size), *at = whole;
        int r = whole ? lg_registry_blob_get(reg, digest, size, mem_sink, &at, err) : -ENOMEM;
        struct par *ps = calloc((size_t) n, sizeof(*ps));
        pthread_t *ts = calloc((size_t) n, sizeof(*ts));
        for (int i = 0; r >= 0 && i < n; i++) {
                ps[i] = (struct par){.host = host, .repo = repo, .digest = digest, .auth = auth, .whole = whole,
                                     .size = size, .seed = (unsigned) i + 1};
                pthread_create(&ts[i], NULL, par_thread, &ps[i]);
        }
        for (int i = 0; r >= 0 && i < n; i++)
                pthread_join(ts[i], NULL);
        for (int i = 0; r >= 0 && i < n; i++)
                if (ps[i].r < 0) {
                        *err = ps[i].err;
                        r = ps[i].r;
                }
        free(ps);
        free(ts);
        free(whole);
        return r;
}

int main(int argc, char **argv) {
        if (argc < 4) {
                fprintf(stderr, "usage: registry-driver CMD HOST REPO ARGS...\n");
                return 2;
        }
        const char *cmd = argv[1];
        struct lg_error err = {0};
        struct lg_registry_auth auth = {.username = getenv("LG_REG_USER"), .password = getenv("LG_REG_PASS")};
        if (!strcmp(cmd, "pull")) {
                lg_image_store *st = NULL;
                int r = lg_image_store_open(argv[2], &st, &err);
                struct lg_image *img = NULL;
                if (r >= 0)
                        r = lg_image_pull(st, argv[3], &auth, NULL, NULL, &img, &err);
                if (r >= 0)
                        printf("%s\n", img->digest);
                lg_image_free(img);
                lg_image_store_close(st);
                return r < 0 ? fail(r, &err) : 0;
        }
        _cleanup_registry_ lg_registry *reg = NULL;
        int r = lg_registry_open(argv[2], argv[3], &auth, &reg, &err);
        if (r < 0)
                return fail(r, &err);
        const char *cms = getenv("LG_REG_CONNECT_MS"), *rms = getenv("LG_REG_REQUEST_MS");
        lg_registry_set_timeouts(reg, cms ? (unsigned) atoi(cms) : 0, rms ? (unsigned) atoi(rms) : 0);
        char **a = argv + 4;
        int n = argc - 4;
        if (!strcmp(cmd, "range") && n == 3) {
                size_t len = strtoull(a[2], NULL, 10);
                char *buf = malloc(len ? len : 1);
                r = buf ? lg_registry_blob_range(reg, a[0], strtoull(a[1], NULL, 10), buf, len, &err) : -ENOMEM;
                if (r >= 0)
                        write_all(buf, len);
                free(buf);
        } else if (!strcmp(cmd, "ranges") && n == 4) {
                size_t len = strtoull(a[2], NULL, 10);
                char *buf = malloc(len ? len : 1);
                r = buf ? 0 : -ENOMEM;
                for (int i = 0; r >= 0 && i < atoi(a[3]); i++)
                        r = lg_registry_blob_range(reg, a[0], strtoull(a[1], NULL, 10), buf, len, &err);
                free(buf);
        } else if (!strcmp(cmd, "mirror-range") && n >= 6) {
                r = mirror_range(a, n, &auth, &err);
        } else if (!strcmp(cmd, "parallel") && n == 3) {
                r = parallel(argv[2], argv[3], reg, &auth, a[0], strtoull(a[1], NULL, 10), atoi(a[2]), &err);
        } else if (!strcmp(cmd, "exists") && n == 1) {
                uint64_t size = 0;
                r = lg_registry_blob_exists(reg, a[0], &size, &err);
                if (r == 1)
                        printf("1 %llu\n", (unsigned long long) size);
                else if (r == 0)
                        printf("0\n");
        } else if (!strcmp(cmd, "get") && n == 2) {
                r = lg_registry_blob_get(reg, a[0], strtoull(a[1], NULL, 10), out_sink, NULL, &err);
        } else if (!strcmp(cmd, "push") && n == 1) {
                char digest[72];
                r = lg_registry_blob_push_path(reg, a[0], digest, NULL, &err);
                if (r >= 0)
                        printf("%s %s\n", r == 1 ? "present" : "pushed", digest);
        } else if (!strcmp(cmd, "push-as") && n == 2) {
                int fd = open(a[1], O_RDONLY | O_CLOEXEC);
                struct stat sb;
                r = fd < 0 || fstat(fd, &sb) < 0 ? lg_error_set(&err, errno, "%s", a[1])
                                                 : lg_registry_blob_push(reg, a[0], fd, (uint64_t) sb.st_size, &err);
                if (fd >= 0)
                        close(fd);
                if (r >= 0)
                        printf("%s\n", r == 1 ? "present" : "pushed");
        } else if (!strcmp(cmd, "manifest-get") && n == 1) {
                struct lg_registry_manifest m;
                r = lg_registry_manifest_get(reg, a[0], getenv("LG_REG_ACCEPT"), &m, &err);
                if (r >= 0) {
                        write_all(m.buf, m.len);
                        fprintf(stderr, "%s %s\n", m.media_type, m.digest);
                        lg_registry_manifest_clear(&m);
                }
        } else if (!strcmp(cmd, "manifest-put") && n == 3) {
                char *buf = NULL;
                size_t len = 0;
                r = read_file(a[2], &buf, &len);
                char digest[72];
                bool indexed = false;
                if (r < 0)
                        lg_error_set(&err, -r, "%s", a[2]);
                else
                        r = lg_registry_manifest_push_subject(reg, strcmp(a[0], "-") ? a[0] : NULL, a[1], buf,
                                                              len, digest, &indexed, &err);
                if (r >= 0)
                        printf("%s\n", digest);
                free(buf);
        } else if (!strcmp(cmd, "referrers") && n == 1) {
                struct lg_registry_manifest m;
                bool from_tag = false;
                r = lg_registry_referrers(reg, a[0], &m, &from_tag, &err);
                if (r >= 0) {
                        write_all(m.buf, m.len);
                        fprintf(stderr, "%s\n", from_tag ? "tag" : "api");
                        lg_registry_manifest_clear(&m);
                }
        } else if (!strcmp(cmd, "lazy-push") && n >= 8 && (n - 2) % 6 == 0) {
                size_t nl = (size_t) (n - 2) / 6;
                struct lg_lazy_push_layer *ls = calloc(nl, sizeof(*ls));
                for (size_t i = 0; ls && i < nl; i++) {
                        char **l = a + 2 + 6 * i;
                        ls[i] = (struct lg_lazy_push_layer){.layer = l[0], .diff_id = l[1], .meta = l[2],
                                                            .chunks = l[3], .blob = l[4],
                                                            .prefetch = strcmp(l[5], "-") ? l[5] : NULL};
                }
                char digest[72];
                r = ls ? lg_lazy_artifact_push(reg, a[0], (uint32_t) strtoul(a[1], NULL, 10), ls, nl, digest, &err)
                       : -ENOMEM;
                if (r >= 0)
                        printf("%s\n", digest);
                free(ls);
        } else if (!strcmp(cmd, "lazy-find") && n == 1) {
                struct lg_lazy_artifact art;
                r = lg_lazy_artifact_find(reg, a[0], &art, &err);
                if (r >= 0) {
                        printf("{\"digest\":\"%s\",\"chunkSize\":%u,\"layers\":[", art.digest, art.chunk_size);
                        for (size_t i = 0; i < art.n_layers; i++) {
                                const struct lg_lazy_layer *l = &art.layers[i];
                                printf("%s{\"layer\":\"%s\",\"diffId\":\"%s\",\"meta\":\"%s\",\"metaSize\":%llu,"
                                       "\"chunks\":\"%s\",\"chunksSize\":%llu,\"blob\":\"%s\",\"blobSize\":%llu,"
                                       "\"prefetch\":\"%s\",\"prefetchSize\":%llu}",
                                       i ? "," : "", l->layer, l->diff_id, l->meta.digest,
                                       (unsigned long long) l->meta.size, l->chunks.digest,
                                       (unsigned long long) l->chunks.size, l->blob.digest,
                                       (unsigned long long) l->blob.size, l->prefetch.digest,
                                       (unsigned long long) l->prefetch.size);
                        }
                        printf("]}\n");
                        lg_lazy_artifact_clear(&art);
                }
        } else {
                fprintf(stderr, "registry-driver: bad command or arguments\n");
                return 2;
        }
        fflush(stdout);
        return r < 0 ? fail(r, &err) : 0;
}
