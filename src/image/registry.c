/* Registry client (registry.h): requests, authentication, redirects,
 * timeouts and errors of the distribution API v2 for one repository, on one
 * libcurl easy handle. Used by lg_image_pull (pull.c), the lazy artifact
 * (lazy-artifact.c) and the lazy fetcher's range reads.
 *
 * One exchange is perform(): one HTTP request, no redirects. request()
 * wraps it: the registry's 401 challenge is answered once (Basic, or a
 * Bearer token from the realm, kept for later requests), and redirects of
 * GET/HEAD are followed by hand so that the Authorization header only goes
 * to the registry's own origin (scheme, host and port), never to the blob
 * storage it redirects to; an https registry may not redirect to plain
 * http. A bounded call sets a deadline that every exchange of it (token,
 * redirects) shares. */
#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "image/image-internal.h"
#include "image/registry.h"

#define MANIFEST_MAX (4u << 20)     /* manifests and indexes */
#define TOKEN_MAX (1u << 20)        /* token server answers */
#define REDIRECTS_MAX 8
#define ERRBODY_MAX 4096
#define CONNECT_MS_DEFAULT 15000u
#define REQUEST_MS_DEFAULT 60000u
#define STALL_S 60L                 /* unbounded transfers: no progress for this long */

static const char IMAGE_ACCEPT[] =
        "application/vnd.oci.image.index.v1+json, "
        "application/vnd.docker.distribution.manifest.list.v2+json, "
        "application/vnd.oci.image.manifest.v1+json, "
        "application/vnd.docker.distribution.manifest.v2+json";

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

struct lg_registry {
        char host[256];         /* as named: "docker.io", "127.0.0.1:5000" */
        char repo[256];         /* "library/busybox" */
        char base[300];         /* "https://registry-1.docker.io" */
        char *username, *password, *ca_file;
        bool insecure;
        bool push;              /* ask tokens for pull,push */
        unsigned connect_ms, request_ms;
        uint64_t deadline;      /* this call's, CLOCK_MONOTONIC ms; 0 = none */
        CURL *curl;
        char authz[4096];       /* "Authorization: ..." for the registry's origin, or "" */
        struct lg_error *err;   /* this call's */
};

/* What a request sends besides its headers. */
struct upload {
        int fd;                 /* >= 0: pread from offset 0 */
        const char *buf;        /* else memory */
        uint64_t len, off;
};

enum sink_kind { SINK_NONE, SINK_MEM, SINK_CB, SINK_FIXED };

/* One HTTP exchange's response. */
struct xfer {
        lg_registry *r;
        long status;
        char ctype[128];
        char digest[80];        /* Docker-Content-Digest */
        char challenge[2048];   /* WWW-Authenticate */
        char location[2048];
        char crange[128];       /* Content-Range */
        bool oci_subject;       /* OCI-Subject was sent */
        int64_t clen;           /* Content-Length, -1 unknown */

        /* Where a 200/206 body goes. */
        enum sink_kind sink;
        char *buf;              /* MEM: grows up to max; FIXED: the caller's, max bytes */
        size_t len, max;
        lg_registry_sink_cb cb; /* CB */
        void *ud;
        EVP_MD_CTX *md;         /* CB: hash what passes */
        bool fixed_whole;       /* FIXED: a 200 is acceptable (off 0) */
        const char *what;
        uint64_t done;
        int sink_err;           /* the sink failed; r->err says why */

        struct upload *up;

        char errbody[ERRBODY_MAX + 1]; /* other bodies, for the message */
        size_t errlen;
};

/* ---- small helpers ----------------------------------------------------------- */


static int check_digest(lg_registry *r, const char *d, const char *what) {
        if (lg_image_digest_valid(d))
                return 0;
        char p[80];
        lg_printable(d ? d : "(none)", p, sizeof(p));
        return lg_error_setm(r->err, EINVAL, "%s: `%s` is not a sha256 digest", what, p);
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

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

/* Start a public call: its error struct, and its deadline when bounded. */
static void begin(lg_registry *r, struct lg_error *err, bool bounded) {
        r->err = err;
        r->deadline = bounded ? now_ms() + r->request_ms : 0;
}

/* The registry's own origin: base followed by '/'. A prefix test cannot be
 * fooled by "host:5000@evil" or "host:50001" since the '/' must follow. */
static bool own_origin(const lg_registry *r, const char *url) {
        size_t n = strlen(r->base);
        return !strncasecmp(url, r->base, n) && url[n] == '/';
}

static bool have_creds(const lg_registry *r) { return r->username && *r->username; }

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
        x->ctype[0] = x->digest[0] = x->challenge[0] = x->location[0] = x->crange[0] = '\0';
        x->oci_subject = false;
        x->clen = -1;
        x->errlen = 0;
        x->len = 0;
        x->done = 0;
        x->sink_err = 0;
        if (x->md)
                EVP_DigestInit_ex(x->md, EVP_sha256(), NULL);
        if (x->up)
                x->up->off = 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud) {
        struct xfer *x = ud;
        size_t n = size * nmemb;
        if (n >= 5 && !strncmp(data, "HTTP/", 5)) { /* a new response (after 1xx) */
                x->ctype[0] = x->digest[0] = x->challenge[0] = x->location[0] = x->crange[0] = '\0';
                x->oci_subject = false;
                x->clen = -1;
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
#define IS(name) (klen == sizeof(name) - 1 && !strncasecmp(data, name, klen))
        if (IS("Content-Type"))
                dst = x->ctype, cap = sizeof(x->ctype);
        else if (IS("Docker-Content-Digest"))
                dst = x->digest, cap = sizeof(x->digest);
        else if (IS("WWW-Authenticate") && !x->challenge[0])
                dst = x->challenge, cap = sizeof(x->challenge);
        else if (IS("Location"))
                dst = x->location, cap = sizeof(x->location);
        else if (IS("Content-Range"))
                dst = x->crange, cap = sizeof(x->crange);
        else if (IS("OCI-Subject"))
                x->oci_subject = true;
        else if (IS("Content-Length")) {
                char num[24];
                snprintf(num, sizeof(num), "%.*s", (int) (vlen < 23 ? vlen : 23), v);
                char *end;
                errno = 0;
                long long cl = strtoll(num, &end, 10);
                x->clen = (!errno && end != num && !*end && cl >= 0) ? cl : -1;
        }
#undef IS
        if (dst)
                snprintf(dst, cap, "%.*s", (int) vlen, v);
        return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
        struct xfer *x = ud;
        lg_registry *r = x->r;
        size_t n = size * nmemb;
        long status = 0;
        curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200 && status != 206) {
                size_t room = ERRBODY_MAX - x->errlen;
                size_t k = n < room ? n : room;
                memcpy(x->errbody + x->errlen, data, k);
                x->errlen += k;
                x->errbody[x->errlen] = '\0';
                return n;
        }
        switch (x->sink) {
        case SINK_NONE:
                return n;
        case SINK_FIXED:
                if (status == 200 && !x->fixed_whole) {
                        x->sink_err = lg_error_setm(r->err, EPROTO,
                                                    "registry %s ignored the Range of a read of %s (it answered "
                                                    "the whole blob)",
                                                    r->host, x->what);
                        return 0;
                }
                if (x->len + n > x->max) {
                        x->sink_err = lg_error_setm(r->err, EPROTO,
                                                    status == 200 ? "registry %s ignored the Range of a read of %s "
                                                                    "(it answered more than the %zu bytes asked for)"
                                                                  : "registry %s sent more of %s than the %zu bytes "
                                                                    "asked for",
                                                    r->host, x->what, x->max);
                        return 0;
                }
                memcpy(x->buf + x->len, data, n);
                x->len += n;
                return n;
        case SINK_CB: {
                int rc = x->cb(x->ud, data, n, r->err);
                if (rc < 0) {
                        x->sink_err = rc;
                        return 0;
                }
                EVP_DigestUpdate(x->md, data, n);
                x->done += n;
                return n;
        }
        case SINK_MEM:
                break;
        }
        if (x->len + n > x->max) {
                x->sink_err = lg_error_setm(r->err, EFBIG, "%s from %s is larger than %zu bytes",
                                            x->what ? x->what : "a document", r->host, x->max);
                return 0;
        }
        char *b = realloc(x->buf, x->len + n + 1);
        if (!b) {
                x->sink_err = lg_error_set(r->err, ENOMEM, "download");
                return 0;
        }
        memcpy(b + x->len, data, n);
        x->buf = b;
        x->len += n;
        b[x->len] = '\0';
        return n;
}

static size_t on_read(char *dst, size_t size, size_t nmemb, void *ud) {
        struct xfer *x = ud;
        struct upload *u = x->up;
        size_t want = size * nmemb;
        if (u->off >= u->len)
                return 0;
        if (want > u->len - u->off)
                want = (size_t) (u->len - u->off);
        if (u->fd < 0) {
                memcpy(dst, u->buf + u->off, want);
                u->off += want;
                return want;
        }
        ssize_t k;
        do
                k = pread(u->fd, dst, want, (off_t) u->off);
        while (k < 0 && errno == EINTR);
        if (k <= 0) {
                x->sink_err = k < 0 ? lg_error_set(x->r->err, errno, "read the blob to push")
                                    : lg_error_setm(x->r->err, EIO, "the blob to push ended early (%llu of %llu bytes)",
                                                    (unsigned long long) u->off, (unsigned long long) u->len);
                return CURL_READFUNC_ABORT;
        }
        u->off += (uint64_t) k;
        return (size_t) k;
}

/* A transport failure, named after the registry. */
static int curl_failure(lg_registry *r, CURLcode rc, const char *ebuf, const char *url) {
        const char *why = ebuf[0] ? ebuf : curl_easy_strerror(rc);
        const char *where = own_origin(r, url) ? "registry" : "blob storage of registry";
        switch (rc) {
        case CURLE_COULDNT_CONNECT:
                return lg_error_setm(r->err, ECONNREFUSED, "cannot connect to %s %s: %s", where, r->host, why);
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return lg_error_setm(r->err, EHOSTUNREACH, "cannot reach %s %s: %s", where, r->host, why);
        case CURLE_OPERATION_TIMEDOUT:
                return lg_error_setm(r->err, ETIMEDOUT, "%s %s did not answer in time: %s", where, r->host, why);
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
                return lg_error_setm(r->err, EPROTO, "TLS with %s %s failed: %s", where, r->host, why);
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_UNSUPPORTED_PROTOCOL:
                return lg_error_setm(r->err, EPROTO, "%s %s: %s (plain http? https?)", where, r->host, why);
        case CURLE_FILESIZE_EXCEEDED:
                return lg_error_setm(r->err, EFBIG, "%s %s: the answer is over the size limit", where, r->host);
        default:
                return lg_error_setm(r->err, EIO, "%s %s: %s", where, r->host, why);
        }
}

/* One request to url (no redirects): method "GET", "HEAD", "POST" or
 * "PUT" (with x->up), extra headers (NULL-terminated, may be NULL), the
 * registry's Authorization when send_auth. 0 with x->status set, or a
 * transport error. */
static int perform(lg_registry *r, const char *method, const char *url, bool send_auth, const char *const *headers,
                   struct xfer *x) {
        CURL *c = r->curl;
        char ebuf[CURL_ERROR_SIZE] = "";
        long connect_ms = (long) r->connect_ms;
        if (r->deadline) {
                uint64_t now = now_ms();
                if (now >= r->deadline)
                        return lg_error_setm(r->err, ETIMEDOUT, "registry %s did not answer within %u ms", r->host,
                                             r->request_ms);
                long left = (long) (r->deadline - now);
                if (connect_ms > left)
                        connect_ms = left;
        }
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
        if (r->deadline) {
                curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long) (r->deadline - now_ms()) + 1);
        } else {
                /* No total timeout (layers are large); give up on a stalled transfer. */
                curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
                curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, STALL_S);
        }
        curl_easy_setopt(c, CURLOPT_USERAGENT, "legion/0.1");
        curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL);
        if (r->ca_file)
                curl_easy_setopt(c, CURLOPT_CAINFO, r->ca_file);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
        if (!strcmp(method, "HEAD")) {
                curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        } else if (!strcmp(method, "POST")) {
                curl_easy_setopt(c, CURLOPT_POST, 1L);
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) 0);
        } else if (!strcmp(method, "PUT")) {
                curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
                curl_easy_setopt(c, CURLOPT_READDATA, x);
                curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t) (x->up ? x->up->len : 0));
        }
        struct curl_slist *hl = NULL;
        for (size_t i = 0; headers && headers[i]; i++)
                hl = curl_slist_append(hl, headers[i]);
        if (send_auth && r->authz[0])
                hl = curl_slist_append(hl, r->authz);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
        struct upload none = {.fd = -1};
        if (!strcmp(method, "PUT") && !x->up)
                x->up = &none;
        xfer_reset(x);
        CURLcode rc = curl_easy_perform(c);
        if (x->up == &none)
                x->up = NULL;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &x->status);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
        curl_slist_free_all(hl);
        if ((rc == CURLE_WRITE_ERROR || rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_READ_ERROR) && x->sink_err)
                return x->sink_err;
        /* An error answer whose body fell short still is that answer:
         * docker-registry's 416 keeps the blob's Content-Length (Go's
         * ServeContent) and sends a one-line body. */
        if (rc == CURLE_PARTIAL_FILE && x->status >= 400)
                return 0;
        if (rc != CURLE_OK)
                return curl_failure(r, rc, ebuf, url);
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

/* "Authorization: Basic base64(user:password)" into buf. */
static int basic_header(const lg_registry *r, char *buf, size_t cap) {
        _cleanup_free_ char *up = NULL;
        int n = asprintf(&up, "%s:%s", r->username, r->password ? r->password : "");
        if (n < 0)
                return lg_error_set(r->err, ENOMEM, "credentials");
        size_t need = 22 + 4 * (((size_t) n + 2) / 3) + 1;
        if (need > cap) {
                explicit_bzero(up, (size_t) n);
                return lg_error_setm(r->err, EINVAL, "the registry credentials are too long");
        }
        int k = snprintf(buf, cap, "Authorization: Basic ");
        EVP_EncodeBlock((unsigned char *) buf + k, (const unsigned char *) up, n);
        explicit_bzero(up, (size_t) n);
        return 0;
}

/* Fetch a bearer token at the challenge's realm. */
static int fetch_token(lg_registry *r, const struct challenge *ch) {
        bool https = !strncasecmp(ch->realm, "https://", 8);
        if (!https && !(r->insecure && !strncasecmp(ch->realm, "http://", 7)))
                return lg_error_setm(r->err, EACCES,
                                     "authentication to %s failed: the token realm `%.200s` is not an https URL",
                                     r->host, ch->realm);
        /* The challenge names the scope of the request that was refused;
         * a pushing client asks for push on its repository at once, so
         * that its next request is not refused again. */
        char scope[600], own[300];
        snprintf(own, sizeof(own), "repository:%s:pull", r->repo);
        if (ch->scope[0] && !(r->push && !strcmp(ch->scope, own)))
                snprintf(scope, sizeof(scope), "%s", ch->scope);
        else
                snprintf(scope, sizeof(scope), "repository:%s:%s", r->repo, r->push ? "pull,push" : "pull");
        _cleanup_free_ char *url = NULL;
        char *es = curl_easy_escape(r->curl, ch->service, 0), *esc = curl_easy_escape(r->curl, scope, 0);
        int n = es && esc ? asprintf(&url, "%s%sservice=%s&scope=%s", ch->realm, strchr(ch->realm, '?') ? "&" : "?",
                                     es, esc)
                          : -1;
        curl_free(es);
        curl_free(esc);
        if (n < 0)
                return lg_error_set(r->err, ENOMEM, "token URL");
        r->authz[0] = '\0';
        if (have_creds(r)) {
                int rc = basic_header(r, r->authz, sizeof(r->authz));
                if (rc < 0)
                        return rc;
        }
        struct xfer x = {.r = r, .sink = SINK_MEM, .max = TOKEN_MAX, .what = "the token"};
        const char *const hdrs[] = {"Accept: application/json", NULL};
        /* The realm asked for the credentials, wherever it is. */
        int rc = perform(r, "GET", url, true, hdrs, &x);
        explicit_bzero(r->authz, sizeof(r->authz));
        r->authz[0] = '\0';
        if (rc < 0) {
                free(x.buf);
                return lg_error_wrap(r->err, rc, "token server `%.200s`", ch->realm);
        }
        if (x.status != 200) {
                char m[256];
                body_message(&x, m, sizeof(m));
                free(x.buf);
                return lg_error_setm(r->err, EACCES, "authentication to %s failed: the token server answered HTTP %ld%s%s",
                                     r->host, x.status, m[0] ? ": " : "", m);
        }
        json_t *doc = json_loadb(x.buf ? x.buf : "", x.len, 0, NULL);
        if (x.buf)
                explicit_bzero(x.buf, x.len);
        free(x.buf);
        const char *tok = json_string_value(json_object_get(doc, "token"));
        if (!tok || !*tok)
                tok = json_string_value(json_object_get(doc, "access_token"));
        bool ok = tok && *tok && strlen(tok) + 32 < sizeof(r->authz) && !strpbrk(tok, "\r\n");
        if (ok)
                snprintf(r->authz, sizeof(r->authz), "Authorization: Bearer %s", tok);
        json_decref(doc);
        if (!ok)
                return lg_error_setm(r->err, EACCES, "authentication to %s failed: the token server's answer has no token",
                                     r->host);
        return 0;
}

/* Answer a 401's challenge: sets r->authz. */
static int authenticate(lg_registry *r, const char *challenge) {
        struct challenge ch;
        parse_challenge(challenge, &ch);
        if (!strcasecmp(ch.scheme, "Basic")) {
                if (!have_creds(r))
                        return lg_error_setm(r->err, EACCES,
                                             "authentication to %s failed: the registry wants a username and password",
                                             r->host);
                return basic_header(r, r->authz, sizeof(r->authz));
        }
        if (!strcasecmp(ch.scheme, "Bearer")) {
                if (!ch.realm[0])
                        return lg_error_setm(r->err, EACCES, "authentication to %s failed: bearer challenge without a realm",
                                             r->host);
                return fetch_token(r, &ch);
        }
        return lg_error_setm(r->err, ENOTSUP, "authentication to %s failed: unsupported scheme `%.15s`", r->host,
                             ch.scheme[0] ? ch.scheme : "(none)");
}

/* method base+path (or an absolute URL of the registry's origin), answering
 * one auth challenge and, for GET and HEAD, following redirects. 0 with
 * x->status set to the final status, or a negative errno. */
static int request(lg_registry *r, const char *method, const char *path, const char *const *headers,
                   struct xfer *x) {
        _cleanup_free_ char *start = NULL;
        if (!strncasecmp(path, "http://", 7) || !strncasecmp(path, "https://", 8)) {
                if (!own_origin(r, path))
                        return lg_error_setm(r->err, EPROTO, "%s sent a URL of another origin: `%.200s`", r->host, path);
                start = strdup(path);
        } else if (asprintf(&start, "%s%s", r->base, path) < 0) {
                start = NULL;
        }
        if (!start)
                return lg_error_set(r->err, ENOMEM, "URL");
        bool follow = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        bool challenged = false;
        for (;;) {
                _cleanup_free_ char *url = strdup(start);
                if (!url)
                        return lg_error_set(r->err, ENOMEM, "URL");
                bool own = true;
                for (int hops = 0;; hops++) {
                        own = own_origin(r, url);
                        int rc = perform(r, method, url, own, headers, x);
                        if (rc < 0)
                                return rc;
                        if (!follow || x->status < 300 || x->status >= 400 || x->status == 304)
                                break;
                        char *loc = NULL;
                        curl_easy_getinfo(r->curl, CURLINFO_REDIRECT_URL, &loc);
                        if (!loc || !*loc)
                                return lg_error_setm(r->err, EPROTO, "%s answered HTTP %ld without a Location", r->host,
                                                     x->status);
                        if (hops >= REDIRECTS_MAX)
                                return lg_error_setm(r->err, EPROTO, "%s: too many redirects", r->host);
                        bool https = !strncasecmp(loc, "https://", 8);
                        if (!https && !(r->insecure && !strncasecmp(loc, "http://", 7)))
                                return lg_error_setm(r->err, EPROTO, "%s redirected to `%.200s`, which is not https",
                                                     r->host, loc);
                        char *next = strdup(loc);
                        if (!next)
                                return lg_error_set(r->err, ENOMEM, "URL");
                        free(url);
                        url = next;
                }
                /* Only the registry's own 401 is answered with credentials. */
                if (x->status == 401 && own && !challenged && x->challenge[0]) {
                        challenged = true;
                        char challenge[sizeof(x->challenge)];
                        snprintf(challenge, sizeof(challenge), "%s", x->challenge);
                        int rc = authenticate(r, challenge);
                        if (rc < 0)
                                return rc;
                        continue;
                }
                return 0;
        }
}

/* Turn an unexpected final status into an error. */
static int status_error(lg_registry *r, const struct xfer *x, const char *what) {
        char m[300];
        body_message(x, m, sizeof(m));
        const char *sep = m[0] ? ": " : "";
        switch (x->status) {
        case 401:
        case 403:
                return lg_error_setm(r->err, EACCES, "authentication to %s failed: HTTP %ld for %s%s%s%s", r->host,
                                     x->status, what, sep, m,
                                     have_creds(r) ? " (check the username and password)"
                                                   : " (no credentials were given)");
        case 404:
                return lg_error_setm(r->err, ENOENT, "%s not found on %s%s%s", what, r->host, sep, m);
        case 416:
                return lg_error_setm(r->err, ERANGE, "%s on %s: the range is past the end of the blob (HTTP 416)", what,
                                     r->host);
        case 429:
                return lg_error_setm(r->err, EAGAIN, "%s: too many requests (HTTP 429)%s%s", r->host, sep, m);
        default:
                return lg_error_setm(r->err, x->status >= 500 ? EIO : EPROTO, "%s answered HTTP %ld for %s%s%s", r->host,
                                     x->status, what, sep, m);
        }
}

/* ---- the client ---------------------------------------------------------------- */

int lg_registry_open(const char *registry, const char *repository, const struct lg_registry_auth *auth,
                     lg_registry **ret, struct lg_error *err) {
        *ret = NULL;
        if (!registry || !*registry || strlen(registry) >= sizeof(((lg_registry *) 0)->host))
                return lg_error_setm(err, EINVAL, "registry: no or too long a host");
        for (const char *c = registry; *c; c++)
                if (!(isalnum((unsigned char) *c) || strchr(".-:[]", *c)))
                        return lg_error_setm(err, EINVAL, "registry: bad host `%.100s`", registry);
        /* The repository goes into URLs unescaped: hold it to the
         * reference grammar. */
        size_t rl = repository ? strlen(repository) : 0;
        bool ok = rl > 0 && rl < sizeof(((lg_registry *) 0)->repo) && repository[0] != '/' &&
                  repository[rl - 1] != '/' && !strstr(repository, "//");
        for (size_t i = 0; ok && i < rl; i++)
                ok = islower((unsigned char) repository[i]) || isdigit((unsigned char) repository[i]) ||
                     strchr("._-/", repository[i]);
        if (!ok)
                return lg_error_setm(err, EINVAL, "registry %s: bad repository name `%.100s`", registry,
                                     repository ? repository : "");
        lg_registry *r = calloc(1, sizeof(*r));
        if (!r)
                return lg_error_set(err, ENOMEM, "registry client");
        snprintf(r->host, sizeof(r->host), "%s", registry);
        snprintf(r->repo, sizeof(r->repo), "%s", repository);
        r->connect_ms = CONNECT_MS_DEFAULT;
        r->request_ms = REQUEST_MS_DEFAULT;
        int rc = 0;
        if (auth) {
                r->insecure = auth->insecure;
                if ((auth->username && !(r->username = strdup(auth->username))) ||
                    (auth->password && !(r->password = strdup(auth->password))) ||
                    (auth->ca_file && !(r->ca_file = strdup(auth->ca_file))))
                        rc = lg_error_set(err, ENOMEM, "registry client");
        }
        /* Plain http to loopback, as docker does. */
        if (is_local_host(r->host))
                r->insecure = true;
        const char *api_host = !strcmp(r->host, "docker.io") ? "registry-1.docker.io" : r->host;
        snprintf(r->base, sizeof(r->base), "%s://%s", r->insecure ? "http" : "https", api_host);
        if (rc >= 0) {
                pthread_once(&curl_once, curl_init);
                if (curl_init_rc != CURLE_OK || !(r->curl = curl_easy_init()))
                        rc = lg_error_setm(err, ENOMEM, "cannot initialize libcurl");
        }
        if (rc < 0) {
                lg_registry_close(r);
                return rc;
        }
        *ret = r;
        return 0;
}

static void free_secret(char *s) {
        if (s)
                explicit_bzero(s, strlen(s));
        free(s);
}

void lg_registry_close(lg_registry *r) {
        if (!r)
                return;
        if (r->curl)
                curl_easy_cleanup(r->curl);
        free_secret(r->username);
        free_secret(r->password);
        free(r->ca_file);
        explicit_bzero(r->authz, sizeof(r->authz));
        free(r);
}

void lg_registry_set_timeouts(lg_registry *r, unsigned connect_ms, unsigned request_ms) {
        r->connect_ms = connect_ms ? connect_ms : CONNECT_MS_DEFAULT;
        r->request_ms = request_ms ? request_ms : REQUEST_MS_DEFAULT;
}

const char *lg_registry_host(const lg_registry *r) { return r->host; }
const char *lg_registry_repository(const lg_registry *r) { return r->repo; }

/* ---- blobs ------------------------------------------------------------------------ */

/* "bytes a-b/total" -> a, b (total may be "*"). */
static bool parse_content_range(const char *s, uint64_t *a, uint64_t *b) {
        unsigned long long x, y;
        int n = 0;
        if (sscanf(s, "bytes %llu-%llu/%n", &x, &y, &n) != 2 || !n || x > y)
                return false;
        *a = x;
        *b = y;
        return true;
}

int lg_registry_blob_range(lg_registry *r, const char *digest, uint64_t off, void *buf, size_t len,
                           struct lg_error *err) {
        begin(r, err, true);
        int rc = check_digest(r, digest, "blob range");
        if (rc < 0)
                return rc;
        if (len == 0 || off > UINT64_MAX - len)
                return lg_error_setm(err, EINVAL, "blob range: bad range (offset %llu, %zu bytes)",
                                     (unsigned long long) off, len);
        char path[600], range[80], what[40];
        snprintf(path, sizeof(path), "/v2/%s/blobs/%s", r->repo, digest);
        snprintf(range, sizeof(range), "Range: bytes=%llu-%llu", (unsigned long long) off,
                 (unsigned long long) (off + len - 1));
        snprintf(what, sizeof(what), "blob %.19s", digest + 7);
        const char *const hdrs[] = {range, NULL};
        struct xfer x = {.r = r, .sink = SINK_FIXED, .buf = buf, .max = len, .fixed_whole = off == 0, .what = what};
        rc = request(r, "GET", path, hdrs, &x);
        if (rc < 0)
                return rc;
        uint64_t a, b;
        switch (x.status) {
        case 206:
                if (!parse_content_range(x.crange, &a, &b) || a != off)
                        return lg_error_setm(err, EPROTO, "%s on %s: asked bytes %llu-%llu, the answer says `%.60s`",
                                             what, r->host, (unsigned long long) off,
                                             (unsigned long long) (off + len - 1), x.crange);
                if (b != off + len - 1 || x.len != len)
                        return lg_error_setm(err, b < off + len - 1 ? ERANGE : EPROTO,
                                             "%s on %s: asked bytes %llu-%llu, got %zu bytes (%.60s)%s", what, r->host,
                                             (unsigned long long) off, (unsigned long long) (off + len - 1), x.len,
                                             x.crange, b < off + len - 1 ? ": past the end of the blob" : "");
                return 0;
        case 200:
                /* Only for a read of the whole blob: on_body refused a 200
                 * at another offset, or more than len bytes. */
                if (x.len != len)
                        return lg_error_setm(err, ERANGE, "%s on %s is %zu bytes, shorter than the %zu read", what,
                                             r->host, x.len, len);
                return 0;
        default:
                return status_error(r, &x, what);
        }
}

int lg_registry_blob_get(lg_registry *r, const char *digest, uint64_t size, lg_registry_sink_cb sink, void *ud,
                         struct lg_error *err) {
        begin(r, err, false);
        int rc = check_digest(r, digest, "blob");
        if (rc < 0)
                return rc;
        char path[600], what[100];
        snprintf(path, sizeof(path), "/v2/%s/blobs/%s", r->repo, digest);
        snprintf(what, sizeof(what), "blob %s", digest);
        struct xfer x = {.r = r, .sink = SINK_CB, .cb = sink, .ud = ud, .what = what};
        if (!(x.md = EVP_MD_CTX_new()))
                return lg_error_set(err, ENOMEM, "sha256");
        rc = request(r, "GET", path, NULL, &x);
        if (rc >= 0 && x.status != 200)
                rc = status_error(r, &x, what);
        if (rc >= 0 && x.done != size)
                rc = lg_error_setm(err, EBADMSG, "%s is %llu bytes on %s, %llu were expected", what,
                                   (unsigned long long) x.done, r->host, (unsigned long long) size);
        if (rc >= 0) {
                unsigned char md[32];
                char got[72];
                EVP_DigestFinal_ex(x.md, md, NULL);
                lg_image_digest_of(md, got);
                if (strcmp(got, digest))
                        rc = lg_error_setm(err, EBADMSG, "%s from %s does not match its digest (it hashes to %s)", what,
                                           r->host, got);
        }
        EVP_MD_CTX_free(x.md);
        return rc;
}

struct membuf {
        char *buf;
        size_t len, max;
};

static int mem_sink(void *ud, const void *buf, size_t len, struct lg_error *err) {
        struct membuf *m = ud;
        if (len > m->max - m->len)
                return lg_error_setm(err, EFBIG, "the blob is larger than %zu bytes", m->max);
        memcpy(m->buf + m->len, buf, len);
        m->len += len;
        return 0;
}

int lg_registry_blob_read(lg_registry *r, const char *digest, uint64_t max, char **ret, size_t *len,
                          struct lg_error *err) {
        *ret = NULL;
        *len = 0;
        uint64_t size = 0;
        int rc = lg_registry_blob_exists(r, digest, &size, err);
        if (rc == 0)
                return lg_error_setm(err, ENOENT, "blob %s not found on %s", digest, r->host);
        if (rc < 0)
                return rc;
        if (size > max || size >= SIZE_MAX)
                return lg_error_setm(err, EFBIG, "blob %s on %s is %llu bytes, more than %llu", digest, r->host,
                                     (unsigned long long) size, (unsigned long long) max);
        struct membuf m = {.buf = malloc((size_t) size + 1), .max = (size_t) size};
        if (!m.buf)
                return lg_error_set(err, ENOMEM, "blob %s", digest);
        rc = lg_registry_blob_get(r, digest, size, mem_sink, &m, err);
        if (rc < 0) {
                free(m.buf);
                return rc;
        }
        m.buf[m.len] = '\0';
        *ret = m.buf;
        *len = m.len;
        return 0;
}

/* HEAD blobs/<digest> within the current call. */
static int blob_head(lg_registry *r, const char *digest, uint64_t *size) {
        char path[600], what[100];
        snprintf(path, sizeof(path), "/v2/%s/blobs/%s", r->repo, digest);
        snprintf(what, sizeof(what), "blob %s", digest);
        struct xfer x = {.r = r, .what = what};
        int rc = request(r, "HEAD", path, NULL, &x);
        if (rc < 0)
                return rc;
        if (x.status == 404)
                return 0;
        if (x.status != 200)
                return status_error(r, &x, what);
        if (size)
                *size = x.clen >= 0 ? (uint64_t) x.clen : 0;
        return 1;
}

int lg_registry_blob_exists(lg_registry *r, const char *digest, uint64_t *size, struct lg_error *err) {
        begin(r, err, true);
        int rc = check_digest(r, digest, "blob");
        if (rc < 0)
                return rc;
        return blob_head(r, digest, size);
}

/* Push up (a file or memory) as blob digest. */
static int blob_push(lg_registry *r, const char *digest, struct upload *up) {
        r->push = true;
        char what[100];
        snprintf(what, sizeof(what), "blob %s", digest);
        int rc = blob_head(r, digest, NULL);
        if (rc != 0)
                return rc;
        char path[600];
        snprintf(path, sizeof(path), "/v2/%s/blobs/uploads/", r->repo);
        struct xfer x = {.r = r, .what = what};
        rc = request(r, "POST", path, NULL, &x);
        if (rc < 0)
                return rc;
        if (x.status != 202)
                return status_error(r, &x, "an upload");
        if (!x.location[0])
                return lg_error_setm(r->err, EPROTO, "%s answered the start of an upload without a Location", r->host);
        /* The upload URL: absolute (of the registry's origin) or a path. */
        _cleanup_free_ char *url = NULL;
        const char *loc = x.location;
        bool abs = !strncasecmp(loc, "http://", 7) || !strncasecmp(loc, "https://", 8);
        if (!abs && loc[0] != '/')
                return lg_error_setm(r->err, EPROTO, "%s: upload Location `%.200s` is not a URL", r->host, loc);
        if (asprintf(&url, "%s%s%s%s", abs ? "" : r->base, loc, strchr(loc, '?') ? "&digest=" : "?digest=", digest) <
            0)
                return lg_error_set(r->err, ENOMEM, "URL");
        /* The data: bounded only by progress. */
        r->deadline = 0;
        const char *const hdrs[] = {"Content-Type: application/octet-stream", NULL};
        struct xfer put = {.r = r, .what = what, .up = up};
        rc = request(r, "PUT", url, hdrs, &put);
        if (rc < 0)
                return lg_error_wrap(r->err, rc, "push %s", what);
        if (put.status == 400) {
                char m[300];
                body_message(&put, m, sizeof(m));
                return lg_error_setm(r->err, strstr(m, "DIGEST_INVALID") ? EBADMSG : EPROTO,
                                     "%s refused %s: %s", r->host, what, m[0] ? m : "HTTP 400");
        }
        if (put.status != 201)
                return status_error(r, &put, what);
        return 0;
}

int lg_registry_blob_push(lg_registry *r, const char *digest, int fd, uint64_t size, struct lg_error *err) {
        begin(r, err, true);
        int rc = check_digest(r, digest, "blob push");
        if (rc < 0)
                return rc;
        if (fd < 0)
                return lg_error_setm(err, EBADF, "blob push: no file");
        struct upload up = {.fd = fd, .len = size};
        return blob_push(r, digest, &up);
}

int lg_registry_blob_push_path(lg_registry *r, const char *path, char digest_out[72], uint64_t *size_out,
                               struct lg_error *err) {
        begin(r, err, true);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) < 0)
                return lg_error_set(err, errno, "open `%s`", path);
        if (!S_ISREG(sb.st_mode))
                return lg_error_setm(err, EINVAL, "`%s` is not a regular file", path);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        char *buf = malloc(1 << 20);
        int rc = md && buf ? 0 : lg_error_set(err, ENOMEM, "hash `%s`", path);
        uint64_t size = 0;
        if (rc >= 0)
                EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        while (rc >= 0) {
                ssize_t k = pread(fd, buf, 1 << 20, (off_t) size);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        rc = lg_error_set(err, errno, "read `%s`", path);
                if (k <= 0)
                        break;
                EVP_DigestUpdate(md, buf, (size_t) k);
                size += (uint64_t) k;
        }
        char digest[72];
        if (rc >= 0) {
                unsigned char d[32];
                EVP_DigestFinal_ex(md, d, NULL);
                lg_image_digest_of(d, digest);
        }
        EVP_MD_CTX_free(md);
        free(buf);
        if (rc < 0)
                return rc;
        if (digest_out)
                memcpy(digest_out, digest, 72);
        if (size_out)
                *size_out = size;
        struct upload up = {.fd = fd, .len = size};
        return blob_push(r, digest, &up);
}

int lg_registry_blob_push_buf(lg_registry *r, const void *buf, size_t len, char digest_out[72],
                              struct lg_error *err) {
        begin(r, err, true);
        char digest[72];
        lg_image_digest_buf(buf, len, digest);
        if (digest_out)
                memcpy(digest_out, digest, 72);
        struct upload up = {.fd = -1, .buf = buf, .len = len};
        return blob_push(r, digest, &up);
}

/* ---- manifests -------------------------------------------------------------------- */

void lg_registry_manifest_clear(struct lg_registry_manifest *m) {
        if (!m)
                return;
        free(m->buf);
        memset(m, 0, sizeof(*m));
}

/* Tags and digests go into URLs: hold them to the grammar. */
static int check_ref(lg_registry *r, const char *ref) {
        if (ref && !strncmp(ref, "sha256:", 7))
                return check_digest(r, ref, "manifest");
        size_t n = ref ? strlen(ref) : 0;
        bool ok = n > 0 && n <= 128 && ref[0] != '.' && ref[0] != '-';
        for (size_t i = 0; ok && i < n; i++)
                ok = isalnum((unsigned char) ref[i]) || strchr("._-", ref[i]);
        if (!ok) {
                char p[80];
                lg_printable(ref ? ref : "", p, sizeof(p));
                return lg_error_setm(r->err, EINVAL, "manifest: bad tag `%s`", p);
        }
        return 0;
}

static int manifest_get(lg_registry *r, const char *ref, const char *accept, struct lg_registry_manifest *m) {
        memset(m, 0, sizeof(*m));
        int rc = check_ref(r, ref);
        if (rc < 0)
                return rc;
        bool by_digest = !strncmp(ref, "sha256:", 7);
        char path[600], what[400], acc[1024];
        snprintf(path, sizeof(path), "/v2/%s/manifests/%s", r->repo, ref);
        snprintf(what, sizeof(what), "manifest %s%s%s", r->repo, by_digest ? "@" : ":", ref);
        snprintf(acc, sizeof(acc), "Accept: %s", accept ? accept : IMAGE_ACCEPT);
        const char *const hdrs[] = {acc, NULL};
        struct xfer x = {.r = r, .sink = SINK_MEM, .max = MANIFEST_MAX, .what = "the manifest"};
        rc = request(r, "GET", path, hdrs, &x);
        if (rc >= 0 && x.status != 200)
                rc = status_error(r, &x, what);
        if (rc < 0) {
                free(x.buf);
                return rc;
        }
        m->buf = x.buf ? x.buf : strdup("");
        m->len = x.len;
        if (!m->buf)
                return lg_error_set(r->err, ENOMEM, "manifest");
        lg_image_digest_buf(m->buf, m->len, m->digest);
        media_type(x.ctype, m->media_type, sizeof(m->media_type));
        if (by_digest && strcmp(ref, m->digest))
                rc = lg_error_setm(r->err, EBADMSG, "%s: digest mismatch: the registry sent %s", what, m->digest);
        else if (x.digest[0] && !strncmp(x.digest, "sha256:", 7) && strcmp(x.digest, m->digest))
                rc = lg_error_setm(r->err, EBADMSG,
                                   "%s: digest mismatch: Docker-Content-Digest is %.80s, the content is %s", what,
                                   x.digest, m->digest);
        if (rc < 0)
                lg_registry_manifest_clear(m);
        return rc;
}

int lg_registry_manifest_get(lg_registry *r, const char *ref, const char *accept, struct lg_registry_manifest *ret,
                             struct lg_error *err) {
        begin(r, err, true);
        return manifest_get(r, ref, accept, ret);
}

int lg_registry_manifest_push(lg_registry *r, const char *ref, const char *media_type, const void *buf, size_t len,
                              char digest_out[72], struct lg_error *err) {
        return lg_registry_manifest_push_subject(r, ref, media_type, buf, len, digest_out, NULL, err);
}

int lg_registry_manifest_push_subject(lg_registry *r, const char *ref, const char *media_type, const void *buf,
                                      size_t len, char digest_out[72], bool *subject_indexed, struct lg_error *err) {
        begin(r, err, true);
        r->push = true;
        if (subject_indexed)
                *subject_indexed = false;
        char digest[72];
        lg_image_digest_buf(buf, len, digest);
        if (digest_out)
                memcpy(digest_out, digest, 72);
        if (!ref)
                ref = digest;
        int rc = check_ref(r, ref);
        if (rc < 0)
                return rc;
        if (!media_type || !*media_type || strpbrk(media_type, "\r\n") || strlen(media_type) > 200)
                return lg_error_setm(err, EINVAL, "manifest push: bad media type");
        if (len > MANIFEST_MAX)
                return lg_error_setm(err, EFBIG, "manifest push: over %u MiB", MANIFEST_MAX >> 20);
        char path[600], what[400], ct[256];
        snprintf(path, sizeof(path), "/v2/%s/manifests/%s", r->repo, ref);
        snprintf(what, sizeof(what), "manifest %s%s%s", r->repo, ref == digest ? "@" : ":", ref);
        snprintf(ct, sizeof(ct), "Content-Type: %s", media_type);
        const char *const hdrs[] = {ct, NULL};
        struct upload up = {.fd = -1, .buf = buf, .len = len};
        struct xfer x = {.r = r, .what = what, .up = &up};
        rc = request(r, "PUT", path, hdrs, &x);
        if (rc < 0)
                return rc;
        if (x.status == 400) {
                char m[300];
                body_message(&x, m, sizeof(m));
                return lg_error_setm(err, EINVAL, "%s refused %s: %s", r->host, what, m[0] ? m : "HTTP 400");
        }
        if (x.status != 201)
                return status_error(r, &x, what);
        if (x.digest[0] && strcmp(x.digest, digest))
                return lg_error_setm(err, EBADMSG, "%s stored %s as %.80s, not %s", r->host, what, x.digest, digest);
        if (subject_indexed)
                *subject_indexed = x.oci_subject;
        return 0;
}

/* ---- referrers ------------------------------------------------------------------------ */

int lg_registry_referrers_tag(const char *subject, char tag[72], struct lg_error *err) {
        if (!lg_image_digest_valid(subject))
                return lg_error_setm(err, EINVAL, "referrers: the subject is not a sha256 digest");
        snprintf(tag, 72, "sha256-%s", subject + 7);
        return 0;
}

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"

int lg_registry_referrers(lg_registry *r, const char *subject, struct lg_registry_manifest *ret, bool *from_tag,
                          struct lg_error *err) {
        begin(r, err, true);
        memset(ret, 0, sizeof(*ret));
        if (from_tag)
                *from_tag = false;
        char tag[72];
        int rc = lg_registry_referrers_tag(subject, tag, err);
        if (rc < 0)
                return rc;
        char path[600], what[200];
        snprintf(path, sizeof(path), "/v2/%s/referrers/%s", r->repo, subject);
        snprintf(what, sizeof(what), "the referrers of %s", subject);
        const char *const hdrs[] = {"Accept: " MT_OCI_INDEX, NULL};
        struct xfer x = {.r = r, .sink = SINK_MEM, .max = MANIFEST_MAX, .what = what};
        rc = request(r, "GET", path, hdrs, &x);
        if (rc >= 0 && x.status == 200) {
                ret->buf = x.buf ? x.buf : strdup("");
                ret->len = x.len;
                if (!ret->buf)
                        return lg_error_set(err, ENOMEM, "referrers");
                lg_image_digest_buf(ret->buf, ret->len, ret->digest);
                media_type(x.ctype, ret->media_type, sizeof(ret->media_type));
                return 0;
        }
        free(x.buf);
        if (rc < 0)
                return rc;
        /* Registries without the API answer 404 (distribution 2.8: the
         * route does not exist); anything else is an answer to report. */
        if (x.status != 404)
                return status_error(r, &x, what);
        if (from_tag)
                *from_tag = true;
        rc = manifest_get(r, tag, MT_OCI_INDEX, ret);
        if (rc == -ENOENT)
                return lg_error_setm(err, ENOENT, "%s has no referrers on %s", subject, r->host);
        return rc;
}
