/* Registry client: lg_image_pull over the distribution API v2 (image.h,
 * docs/images.md "Pulling").
 *
 * One pull is one blocking sequence on one libcurl easy handle (legiond runs
 * it on its thread pool): the manifest (an index or manifest list is
 * resolved to linux/amd64 first), then the config and every layer not yet in
 * the store, streamed into the store's blob writer which verifies each
 * digest, then the index and manifest bytes themselves, and lg_image_commit
 * which extracts the layers and points the name at the image.
 *
 * Authentication answers the registry's 401 challenge once per request:
 * Basic with the given credentials, or Bearer with a token fetched from the
 * challenge's realm (with the credentials as Basic, or anonymously) and kept
 * for the rest of the pull. Redirects are followed by hand so that the
 * Authorization header only ever goes to the registry's own origin (scheme,
 * host and port), never to the blob storage it redirects to; an https
 * registry may not redirect to plain http. */
#include <ctype.h>
#include <pthread.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "image/image-internal.h"

#define MANIFEST_MAX (4u << 20)     /* manifests and indexes */
#define CONFIG_MAX (16u << 20)      /* image configs */
#define TOKEN_MAX (1u << 20)        /* token server answers */
#define LAYERS_MAX 127              /* overlayfs lower dirs, with room to spare */
#define TOTAL_MAX (32ull << 30)     /* compressed size of all the layers */
#define REDIRECTS_MAX 8
#define ERRBODY_MAX 4096

static const char MANIFEST_ACCEPT[] =
        "Accept: application/vnd.oci.image.index.v1+json, "
        "application/vnd.docker.distribution.manifest.list.v2+json, "
        "application/vnd.oci.image.manifest.v1+json, "
        "application/vnd.docker.distribution.manifest.v2+json";

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

struct pull {
        lg_image_store *st;
        struct lg_error *err;
        lg_image_progress_cb progress;
        void *ud;
        const char *username, *password, *ca_file;
        bool insecure;

        char name[512];         /* the normalized reference */
        char host[256];         /* registry as named: "docker.io", "127.0.0.1:5000" */
        char repo[256];         /* "library/busybox" */
        char ref[80];           /* tag or "sha256:<hex>" */
        bool by_digest;
        char base[300];         /* "https://registry-1.docker.io" */

        CURL *curl;
        char authz[4096];       /* "Authorization: ..." for the registry's origin, or "" */

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



/* One HTTP exchange's response. */
struct xfer {
        struct pull *p;
        long status;
        char ctype[128];
        char digest[80];        /* Docker-Content-Digest */
        char challenge[2048];   /* WWW-Authenticate */

        /* Sink for a 200 body: memory (buf, up to max) or a blob writer. */
        char *buf;
        size_t len, max;
        struct lg_image_blob_writer *w;
        const char *what;       /* progress: short digest */
        uint64_t done, total;
        int sink_err;           /* the sink failed; p->err says why */

        char errbody[ERRBODY_MAX + 1]; /* other bodies, for the message */
        size_t errlen;
};

/* ---- small helpers ----------------------------------------------------------- */

static bool is_hex64(const char *s) {
        for (int i = 0; i < 64; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return s[64] == '\0';
}

static bool valid_digest(const char *d) { return d && !strncmp(d, "sha256:", 7) && is_hex64(d + 7); }

static void sha256_digest(const void *buf, size_t len, char out[72]) {
        unsigned char md[32];
        unsigned int n = 0;
        EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL);
        memcpy(out, "sha256:", 7);
        for (unsigned i = 0; i < 32; i++)
                snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

static const char *short_digest(const char *d) {
        static __thread char buf[16];
        snprintf(buf, sizeof(buf), "%.12s", !strncmp(d, "sha256:", 7) ? d + 7 : d);
        return buf;
}

/* "a; b" -> "a", trimmed and lowercased. */
static void media_type(const char *ctype, char *buf, size_t cap) {
        size_t n = 0;
        while (*ctype == ' ')
                ctype++;
        for (; *ctype && *ctype != ';' && *ctype != ' ' && n + 1 < cap; ctype++)
                buf[n++] = (char) tolower((unsigned char) *ctype);
        buf[n] = '\0';
}

static bool is_local_host(const char *host) {
        /* host may carry a port: "127.0.0.1:5000", "[::1]:5000", "localhost". */
        size_t n = strcspn(host, ":");
        if (host[0] == '[')
                return !strncmp(host, "[::1]", 5);
        return (n == 9 && !strncmp(host, "localhost", 9)) || (n == 9 && !strncmp(host, "127.0.0.1", 9));
}

/* Split the normalized reference "HOST/REPO[:TAG][@DIGEST]". */
static int split_ref(struct pull *p, const char *ref) {
        int r = lg_image_normalize(ref, p->name, sizeof(p->name), p->err);
        if (r < 0)
                return r;
        const char *slash = strchr(p->name, '/');
        if (!slash || slash == p->name || (size_t) (slash - p->name) >= sizeof(p->host))
                return lg_error_setm(p->err, EINVAL, "invalid image reference `%s`: no registry", ref);
        snprintf(p->host, sizeof(p->host), "%.*s", (int) (slash - p->name), p->name);
        for (const char *c = p->host; *c; c++)
                if (!(isalnum((unsigned char) *c) || strchr(".-:[]", *c)))
                        return lg_error_setm(p->err, EINVAL, "invalid image reference `%s`: bad registry host", ref);
        const char *rest = slash + 1;
        const char *at = strchr(rest, '@');
        const char *last = strrchr(rest, '/');
        const char *colon = strrchr(last ? last : rest, ':');
        size_t repo_len;
        if (at) {
                p->by_digest = true;
                repo_len = (size_t) (at - rest);
                const char *c = memchr(rest, ':', repo_len);
                if (c && (!last || c > last)) /* "repo:tag@digest": the digest wins */
                        repo_len = (size_t) (c - rest);
                snprintf(p->ref, sizeof(p->ref), "%s", at + 1);
                if (!valid_digest(p->ref))
                        return lg_error_setm(p->err, EINVAL, "invalid image reference `%s`: only sha256 digests are supported", ref);
        } else if (colon) {
                repo_len = (size_t) (colon - rest);
                snprintf(p->ref, sizeof(p->ref), "%s", colon + 1);
        } else {
                repo_len = strlen(rest);
                snprintf(p->ref, sizeof(p->ref), "latest");
        }
        if (repo_len == 0 || repo_len >= sizeof(p->repo))
                return lg_error_setm(p->err, EINVAL, "invalid image reference `%s`: bad repository", ref);
        snprintf(p->repo, sizeof(p->repo), "%.*s", (int) repo_len, rest);
        /* These go into URLs unescaped: hold them to the reference grammar
         * whatever the normalizer let through. */
        for (const char *c = p->repo; *c; c++)
                if (!(islower((unsigned char) *c) || isdigit((unsigned char) *c) || strchr("._-/", *c)))
                        return lg_error_setm(p->err, EINVAL, "invalid image reference `%s`: bad repository", ref);
        if (!p->by_digest) {
                size_t n = strlen(p->ref);
                bool ok = n > 0 && n <= 128 && p->ref[0] != '.' && p->ref[0] != '-';
                for (size_t i = 0; ok && i < n; i++)
                        ok = isalnum((unsigned char) p->ref[i]) || strchr("._-", p->ref[i]);
                if (!ok)
                        return lg_error_setm(p->err, EINVAL, "invalid image reference `%s`: bad tag", ref);
        }
        return 0;
}

/* The registry's own origin: base followed by '/'. A prefix test cannot be
 * fooled by "host:5000@evil" or "host:50001" since the '/' must follow. */
static bool own_origin(const struct pull *p, const char *url) {
        size_t n = strlen(p->base);
        return !strncasecmp(url, p->base, n) && url[n] == '/';
}

/* The message of a registry error body {"errors":[{"code","message"}]}, or
 * its first line. */
static void body_message(const struct xfer *x, char *buf, size_t cap) {
        buf[0] = '\0';
        json_t *doc = json_loadb(x->errbody, x->errlen, 0, NULL);
        json_t *e0 = json_array_get(json_object_get(doc, "errors"), 0);
        const char *code = json_string_value(json_object_get(e0, "code"));
        const char *msg = json_string_value(json_object_get(e0, "message"));
        if (code || msg)
                snprintf(buf, cap, "%s%s%s", code ? code : "", code && msg ? ": " : "", msg ? msg : "");
        else if (!doc && x->errlen)
                snprintf(buf, cap, "%.*s", (int) strcspn(x->errbody, "\r\n"), x->errbody);
        json_decref(doc);
        for (char *c = buf; *c; c++)
                if ((unsigned char) *c < 0x20)
                        *c = ' ';
}

/* ---- one exchange -------------------------------------------------------------- */

static void xfer_reset(struct xfer *x) {
        x->status = 0;
        x->ctype[0] = x->digest[0] = x->challenge[0] = '\0';
        x->errlen = 0;
        x->len = 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud) {
        struct xfer *x = ud;
        size_t n = size * nmemb;
        if (n >= 5 && !strncmp(data, "HTTP/", 5)) { /* a new response (after 1xx) */
                x->ctype[0] = x->digest[0] = x->challenge[0] = '\0';
                return n;
        }
        const char *colon = memchr(data, ':', n);
        if (!colon)
                return n;
        size_t klen = (size_t) (colon - data);
        const char *v = colon + 1;
        size_t vlen = n - klen - 1;
        while (vlen && (*v == ' ' || *v == '\t'))
                v++, vlen--;
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
                vlen--;
        char *dst = NULL;
        size_t cap = 0;
        if (klen == 12 && !strncasecmp(data, "Content-Type", 12))
                dst = x->ctype, cap = sizeof(x->ctype);
        else if (klen == 21 && !strncasecmp(data, "Docker-Content-Digest", 21))
                dst = x->digest, cap = sizeof(x->digest);
        else if (klen == 16 && !strncasecmp(data, "WWW-Authenticate", 16) && !x->challenge[0])
                dst = x->challenge, cap = sizeof(x->challenge);
        if (dst)
                snprintf(dst, cap, "%.*s", (int) vlen, v);
        return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
        struct xfer *x = ud;
        size_t n = size * nmemb;
        long status = 0;
        curl_easy_getinfo(x->p->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200) {
                size_t room = ERRBODY_MAX - x->errlen;
                size_t k = n < room ? n : room;
                memcpy(x->errbody + x->errlen, data, k);
                x->errlen += k;
                x->errbody[x->errlen] = '\0';
                return n;
        }
        if (x->w) {
                int r = lg_image_blob_write(x->w, data, n, x->p->err);
                if (r < 0) {
                        x->sink_err = r;
                        return 0;
                }
                x->done += n;
                if (x->p->progress)
                        x->p->progress(x->p->ud, "download", x->what, x->done, x->total);
                return n;
        }
        if (x->len + n > x->max) {
                x->sink_err = lg_error_setm(x->p->err, EFBIG, "%s from %s is larger than %zu bytes",
                                            x->what ? x->what : "a document", x->p->host, x->max);
                return 0;
        }
        char *b = realloc(x->buf, x->len + n + 1);
        if (!b) {
                x->sink_err = lg_error_set(x->p->err, ENOMEM, "download");
                return 0;
        }
        memcpy(b + x->len, data, n);
        x->buf = b;
        x->len += n;
        b[x->len] = '\0';
        return n;
}

/* A transport failure, named after the registry. */
static int curl_failure(struct pull *p, CURLcode rc, const char *ebuf, const char *url) {
        const char *why = ebuf[0] ? ebuf : curl_easy_strerror(rc);
        bool own = own_origin(p, url);
        const char *where = own ? "registry" : "blob storage of registry";
        switch (rc) {
        case CURLE_COULDNT_CONNECT:
                return lg_error_setm(p->err, ECONNREFUSED, "cannot connect to %s %s: %s", where, p->host, why);
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return lg_error_setm(p->err, EHOSTUNREACH, "cannot reach %s %s: %s", where, p->host, why);
        case CURLE_OPERATION_TIMEDOUT:
                return lg_error_setm(p->err, ETIMEDOUT, "%s %s did not answer in time: %s", where, p->host, why);
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
                return lg_error_setm(p->err, EPROTO, "TLS with %s %s failed: %s", where, p->host, why);
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_UNSUPPORTED_PROTOCOL:
                return lg_error_setm(p->err, EPROTO, "%s %s: %s (plain http? https?)", where, p->host, why);
        case CURLE_FILESIZE_EXCEEDED:
                return lg_error_setm(p->err, EFBIG, "%s %s: the answer is over the size limit", where, p->host);
        default:
                return lg_error_setm(p->err, EIO, "%s %s: %s", where, p->host, why);
        }
}

/* GET url once (no redirects), with the registry's Authorization when
 * send_auth. 0 with x->status set, or a transport error. */
static int perform(struct pull *p, const char *url, bool send_auth, const char *accept, struct xfer *x) {
        CURL *c = p->curl;
        char ebuf[CURL_ERROR_SIZE] = "";
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
        /* No total timeout (layers are large); give up on a stalled transfer. */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "legion/0.1");
        curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL);
        if (p->ca_file)
                curl_easy_setopt(c, CURLOPT_CAINFO, p->ca_file);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
        struct curl_slist *hl = NULL;
        if (accept)
                hl = curl_slist_append(hl, accept);
        if (send_auth && p->authz[0])
                hl = curl_slist_append(hl, p->authz);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
        xfer_reset(x);
        CURLcode rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &x->status);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
        curl_slist_free_all(hl);
        if (rc == CURLE_WRITE_ERROR && x->sink_err)
                return x->sink_err;
        if (rc != CURLE_OK)
                return curl_failure(p, rc, ebuf, url);
        return 0;
}

/* ---- authentication -------------------------------------------------------------- */

/* Parse `Scheme k="v",k2=v2` into scheme and up to a few known params. */
struct challenge {
        char scheme[16];
        char realm[1024], service[256], scope[512];
};

static void parse_challenge(const char *h, struct challenge *ch) {
        memset(ch, 0, sizeof(*ch));
        size_t n = strcspn(h, " ");
        snprintf(ch->scheme, sizeof(ch->scheme), "%.*s", (int) n, h);
        const char *s = h + n;
        while (*s) {
                while (*s == ' ' || *s == ',')
                        s++;
                size_t kl = strcspn(s, "=, ");
                const char *k = s;
                s += kl;
                if (*s != '=')
                        continue;
                s++;
                char val[1024];
                size_t vl = 0;
                if (*s == '"') {
                        for (s++; *s && *s != '"'; s++) {
                                if (*s == '\\' && s[1])
                                        s++;
                                if (vl + 1 < sizeof(val))
                                        val[vl++] = *s;
                        }
                        if (*s == '"')
                                s++;
                } else {
                        for (; *s && *s != ','; s++)
                                if (vl + 1 < sizeof(val))
                                        val[vl++] = *s;
                }
                val[vl] = '\0';
                char *dst = NULL;
                size_t cap = 0;
                if (kl == 5 && !strncasecmp(k, "realm", 5))
                        dst = ch->realm, cap = sizeof(ch->realm);
                else if (kl == 7 && !strncasecmp(k, "service", 7))
                        dst = ch->service, cap = sizeof(ch->service);
                else if (kl == 5 && !strncasecmp(k, "scope", 5))
                        dst = ch->scope, cap = sizeof(ch->scope);
                if (dst)
                        snprintf(dst, cap, "%s", val);
        }
}

static bool have_creds(const struct pull *p) { return p->username && *p->username; }

/* "Authorization: Basic base64(user:password)" into buf. */
static int basic_header(const struct pull *p, char *buf, size_t cap) {
        _cleanup_free_ char *up = NULL;
        int n = asprintf(&up, "%s:%s", p->username, p->password ? p->password : "");
        if (n < 0)
                return lg_error_set(p->err, ENOMEM, "credentials");
        size_t need = 22 + 4 * (((size_t) n + 2) / 3) + 1;
        if (need > cap)
                return lg_error_setm(p->err, EINVAL, "the registry credentials are too long");
        int k = snprintf(buf, cap, "Authorization: Basic ");
        EVP_EncodeBlock((unsigned char *) buf + k, (const unsigned char *) up, n);
        explicit_bzero(up, (size_t) n);
        return 0;
}

/* Fetch a bearer token at the challenge's realm. */
static int fetch_token(struct pull *p, const struct challenge *ch) {
        bool https = !strncasecmp(ch->realm, "https://", 8);
        if (!https && !(p->insecure && !strncasecmp(ch->realm, "http://", 7)))
                return lg_error_setm(p->err, EACCES,
                                     "authentication to %s failed: the token realm `%.200s` is not an https URL",
                                     p->host, ch->realm);
        char scope[600];
        if (ch->scope[0])
                snprintf(scope, sizeof(scope), "%s", ch->scope);
        else
                snprintf(scope, sizeof(scope), "repository:%s:pull", p->repo);
        _cleanup_free_ char *url = NULL;
        char *es = curl_easy_escape(p->curl, ch->service, 0), *esc = curl_easy_escape(p->curl, scope, 0);
        int n = es && esc ? asprintf(&url, "%s%sservice=%s&scope=%s", ch->realm, strchr(ch->realm, '?') ? "&" : "?",
                                     es, esc)
                          : -1;
        curl_free(es);
        curl_free(esc);
        if (n < 0)
                return lg_error_set(p->err, ENOMEM, "token URL");
        p->authz[0] = '\0';
        if (have_creds(p)) {
                int r = basic_header(p, p->authz, sizeof(p->authz));
                if (r < 0)
                        return r;
        }
        struct xfer x = {.p = p, .max = TOKEN_MAX, .what = "the token"};
        /* The realm asked for the credentials, wherever it is. */
        int r = perform(p, url, true, "Accept: application/json", &x);
        explicit_bzero(p->authz, sizeof(p->authz));
        p->authz[0] = '\0';
        if (r < 0) {
                free(x.buf);
                return lg_error_wrap(p->err, r, "token server `%.200s`", ch->realm);
        }
        if (x.status != 200) {
                char m[256];
                body_message(&x, m, sizeof(m));
                if (!m[0] && x.buf)
                        snprintf(m, sizeof(m), "%.200s", x.buf);
                free(x.buf);
                return lg_error_setm(p->err, EACCES, "authentication to %s failed: the token server answered HTTP %ld%s%s",
                                     p->host, x.status, m[0] ? ": " : "", m);
        }
        json_t *doc = json_loadb(x.buf ? x.buf : "", x.len, 0, NULL);
        free(x.buf);
        const char *tok = json_string_value(json_object_get(doc, "token"));
        if (!tok || !*tok)
                tok = json_string_value(json_object_get(doc, "access_token"));
        bool ok = tok && *tok && strlen(tok) + 32 < sizeof(p->authz) && !strpbrk(tok, "\r\n");
        if (ok)
                snprintf(p->authz, sizeof(p->authz), "Authorization: Bearer %s", tok);
        json_decref(doc);
        if (!ok)
                return lg_error_setm(p->err, EACCES, "authentication to %s failed: the token server's answer has no token",
                                     p->host);
        return 0;
}

/* Answer a 401's challenge: sets p->authz. */
static int authenticate(struct pull *p, const char *challenge) {
        struct challenge ch;
        parse_challenge(challenge, &ch);
        if (!strcasecmp(ch.scheme, "Basic")) {
                if (!have_creds(p))
                        return lg_error_setm(p->err, EACCES,
                                             "authentication to %s failed: the registry wants a username and password",
                                             p->host);
                return basic_header(p, p->authz, sizeof(p->authz));
        }
        if (!strcasecmp(ch.scheme, "Bearer")) {
                if (!ch.realm[0])
                        return lg_error_setm(p->err, EACCES, "authentication to %s failed: bearer challenge without a realm",
                                             p->host);
                return fetch_token(p, &ch);
        }
        return lg_error_setm(p->err, ENOTSUP, "authentication to %s failed: unsupported scheme `%.15s`", p->host,
                             ch.scheme[0] ? ch.scheme : "(none)");
}

/* GET base+path, answering one auth challenge and following redirects.
 * 0 with x->status set to the final status, or a negative errno. */
static int registry_get(struct pull *p, const char *path, const char *accept, struct xfer *x) {
        _cleanup_free_ char *start = NULL;
        if (asprintf(&start, "%s%s", p->base, path) < 0)
                return lg_error_set(p->err, ENOMEM, "URL");
        bool challenged = false;
        for (;;) {
                _cleanup_free_ char *url = strdup(start);
                if (!url)
                        return lg_error_set(p->err, ENOMEM, "URL");
                bool own = true;
                for (int hops = 0;; hops++) {
                        own = own_origin(p, url);
                        int r = perform(p, url, own, accept, x);
                        if (r < 0)
                                return r;
                        if (x->status < 300 || x->status >= 400 || x->status == 304)
                                break;
                        char *loc = NULL;
                        curl_easy_getinfo(p->curl, CURLINFO_REDIRECT_URL, &loc);
                        if (!loc || !*loc)
                                return lg_error_setm(p->err, EPROTO, "%s answered HTTP %ld without a Location", p->host,
                                                     x->status);
                        if (hops >= REDIRECTS_MAX)
                                return lg_error_setm(p->err, EPROTO, "%s: too many redirects", p->host);
                        bool https = !strncasecmp(loc, "https://", 8);
                        if (!https && !(p->insecure && !strncasecmp(loc, "http://", 7)))
                                return lg_error_setm(p->err, EPROTO, "%s redirected to `%.200s`, which is not https",
                                                     p->host, loc);
                        char *next = strdup(loc);
                        if (!next)
                                return lg_error_set(p->err, ENOMEM, "URL");
                        free(url);
                        url = next;
                }
                /* Only the registry's own 401 is answered with credentials. */
                if (x->status == 401 && own && !challenged && x->challenge[0]) {
                        challenged = true;
                        char challenge[sizeof(x->challenge)];
                        snprintf(challenge, sizeof(challenge), "%s", x->challenge);
                        int r = authenticate(p, challenge);
                        if (r < 0)
                                return r;
                        continue;
                }
                return 0;
        }
}

/* Turn a non-200 final status into an error. */
static int status_error(struct pull *p, const struct xfer *x, const char *what) {
        char m[300];
        body_message(x, m, sizeof(m));
        const char *sep = m[0] ? ": " : "";
        switch (x->status) {
        case 401:
        case 403:
                return lg_error_setm(p->err, EACCES, "authentication to %s failed: HTTP %ld for %s%s%s%s", p->host,
                                     x->status, what, sep, m,
                                     have_creds(p) ? " (check the username and password)"
                                                   : " (no credentials were given)");
        case 404:
                return lg_error_setm(p->err, ENOENT, "%s not found on %s%s%s", what, p->host, sep, m);
        case 429:
                return lg_error_setm(p->err, EAGAIN, "%s: too many requests (HTTP 429)%s%s", p->host, sep, m);
        default:
                return lg_error_setm(p->err, x->status >= 500 ? EIO : EPROTO, "%s answered HTTP %ld for %s%s%s", p->host,
                                     x->status, what, sep, m);
        }
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
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/v2/%s/manifests/%s", p->repo, ref) < 0)
                return lg_error_set(p->err, ENOMEM, "URL");
        char what[400];
        snprintf(what, sizeof(what), "manifest %s:%s", p->repo, ref);
        if (expect)
                snprintf(what, sizeof(what), "manifest %s@%s", p->repo, ref);
        struct xfer x = {.p = p, .max = MANIFEST_MAX, .what = "the manifest"};
        int r = registry_get(p, path, MANIFEST_ACCEPT, &x);
        if (r >= 0 && x.status != 200)
                r = status_error(p, &x, what);
        if (r < 0) {
                free(x.buf);
                return r;
        }
        m->buf = x.buf ? x.buf : strdup("");
        m->len = x.len;
        if (!m->buf)
                return lg_error_set(p->err, ENOMEM, "manifest");
        sha256_digest(m->buf, m->len, m->digest);
        if (expect && strcmp(expect, m->digest))
                return lg_error_setm(p->err, EBADMSG, "%s: digest mismatch: the registry sent %s", what, m->digest);
        if (x.digest[0] && !strncmp(x.digest, "sha256:", 7) && strcmp(x.digest, m->digest))
                return lg_error_setm(p->err, EBADMSG, "%s: digest mismatch: Docker-Content-Digest is %.80s, the content is %s",
                                     what, x.digest, m->digest);
        json_error_t je;
        m->doc = json_loadb(m->buf, m->len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(m->doc))
                return lg_error_setm(p->err, EINVAL, "%s is not a JSON object: %s", what, m->doc ? "" : je.text);
        media_type(x.ctype, m->mtype, sizeof(m->mtype));
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
                        if (!valid_digest(dg))
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
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/v2/%s/blobs/%s", p->repo, digest) < 0) {
                lg_image_blob_abort(w);
                return lg_error_set(p->err, ENOMEM, "URL");
        }
        struct xfer x = {.p = p, .w = w, .what = what, .total = size};
        if (p->progress)
                p->progress(p->ud, "download", what, 0, size);
        r = registry_get(p, path, NULL, &x);
        if (r >= 0 && x.status != 200) {
                char w2[128];
                snprintf(w2, sizeof(w2), "%s %s", kind, digest);
                r = status_error(p, &x, w2);
        } else if (r >= 0 && x.done != size) {
                r = lg_error_setm(p->err, EBADMSG, "%s %s is %llu bytes, the manifest says %llu", kind, digest,
                                  (unsigned long long) x.done, (unsigned long long) size);
        } else if (r == x.sink_err && r < 0) {
                lg_error_wrap(p->err, r, "%s %s from %s", kind, what, p->host);
        }
        if (r < 0) {
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
        if (!valid_digest(*digest))
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

/* Download the config and layers of a parsed image manifest. */
static int fetch_image_blobs(struct pull *p, const struct manifest *m) {
        const char *dg, *mt;
        uint64_t size;
        json_t *cfg = json_object_get(m->doc, "config");
        if (!json_is_object(cfg))
                return lg_error_setm(p->err, EINVAL, "manifest of %s has no config", p->name);
        int r = descriptor(p, cfg, "the config", &dg, &size, &mt);
        if (r < 0)
                return r;
        if (mt && strcmp(mt, "application/vnd.oci.image.config.v1+json") &&
            strcmp(mt, "application/vnd.docker.container.image.v1+json"))
                return lg_error_setm(p->err, ENOTSUP, "%s is not a container image (config media type %.100s)", p->name,
                                     mt);
        if (size > CONFIG_MAX)
                return lg_error_setm(p->err, EFBIG, "the config of %s is over %u MiB", p->name, CONFIG_MAX >> 20);
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
        r = fetch_blob(p, dg, size, "config");
        if (r < 0)
                return r;
        json_array_foreach(layers, i, l) {
                const char *ldg, *lmt;
                uint64_t lsz;
                descriptor(p, l, "layer", &ldg, &lsz, &lmt);
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
        manifest_done(&idx);
        manifest_done(&man);
        return r;
}

int lg_image_pull(lg_image_store *st, const char *ref, const struct lg_registry_auth *auth,
                  lg_image_progress_cb progress, void *ud, struct lg_image **ret,
                  struct lg_error *err) {
        if (ret)
                *ret = NULL;
        if (!st || !ref)
                return lg_error_setm(err, EINVAL, "pull: no store or reference");
        struct pull *p = calloc(1, sizeof(*p));
        if (!p)
                return lg_error_set(err, ENOMEM, "pull");
        p->st = st;
        p->err = err;
        p->progress = progress;
        p->ud = ud;
        if (auth) {
                p->username = auth->username;
                p->password = auth->password;
                p->ca_file = auth->ca_file;
                p->insecure = auth->insecure;
        }
        int r = split_ref(p, ref);
        if (r >= 0) {
                /* Plain http to loopback, as docker does. */
                if (is_local_host(p->host))
                        p->insecure = true;
                const char *api_host = !strcmp(p->host, "docker.io") ? "registry-1.docker.io" : p->host;
                snprintf(p->base, sizeof(p->base), "%s://%s", p->insecure ? "http" : "https", api_host);
        }
        if (r >= 0) {
                pthread_once(&curl_once, curl_init);
                if (curl_init_rc != CURLE_OK || !(p->curl = curl_easy_init()))
                        r = lg_error_setm(err, ENOMEM, "cannot initialize libcurl");
        }
        if (r >= 0)
                r = do_pull(p, ret);
        if (p->curl)
                curl_easy_cleanup(p->curl);
        explicit_bzero(p->authz, sizeof(p->authz));
        free(p->pins);
        free(p);
        return r;
}
