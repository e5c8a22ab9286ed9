/* The read-only blob part of the OCI distribution API (docs/api.md, "Blobs
 * for other nodes"): another node's registry client uses this legiond as a
 * mirror that holds only blobs. GET /v2/ answers {}; HEAD and GET
 * /v2/<name>/blobs/sha256:<hex> serve a blob the node holds, whole or one
 * byte range, found by lg_lazy_serve (src/lazy/serve.h) off the loop and
 * streamed a piece at a time. <name> is checked but not used: digests are
 * global. Credentials: the API's bearer token, or HTTP Basic with the token
 * as the password (what a registry client sends after the Basic challenge
 * a 401 here carries). Errors in the distribution API's form
 * {"errors":[{"code","message"}]}. */
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "api/api-internal.h"

#define PIECE (256u << 10) /* bytes read off the loop per step of a GET */

static const struct lg_http_header api_version = {"Docker-Distribution-API-Version", "registry/2.0"};

static void v2_error(struct lg_http_request *req, int status, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void v2_error(struct lg_http_request *req, int status, const char *code, const char *fmt, ...) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        json_t *doc = json_pack("{s:[{s:s, s:s}]}", "errors", "code", code, "message", msg);
        char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        struct lg_http_header h[] = {{"Content-Type", "application/json"}, api_version,
                                     {"WWW-Authenticate", "Basic realm=\"legiond\""}};
        lg_http_respond(req, status, h, status == 401 ? 3 : 2, s ? s : "{}", s ? strlen(s) : 2);
        free(s);
}

/* The secret of "Bearer <token>" or "Basic base64(user:token)"; NULL when
 * there is none. buf holds the decoded Basic credentials. */
static const char *v2_secret(const char *h, char *buf, size_t cap) {
        if (!h)
                return NULL;
        if (!strncasecmp(h, "Bearer ", 7))
                return h + 7;
        if (strncasecmp(h, "Basic ", 6))
                return NULL;
        h += 6;
        size_t n = strlen(h);
        if (n == 0 || n % 4 || n / 4 * 3 >= cap)
                return NULL;
        int len = EVP_DecodeBlock((unsigned char *) buf, (const unsigned char *) h, (int) n);
        if (len < 0)
                return NULL;
        /* EVP_DecodeBlock counts the padding as bytes. */
        for (size_t i = n; i > n - 2 && h[i - 1] == '='; i--)
                len--;
        buf[len] = '\0';
        if (strlen(buf) != (size_t) len)
                return NULL; /* a NUL inside */
        char *colon = strchr(buf, ':');
        return colon ? colon + 1 : NULL;
}

/* An API token (not an app key), else 401 with the Basic challenge. */
static bool v2_auth(struct api_call *c) {
        char buf[512];
        const char *secret = v2_secret(lg_http_request_header(c->req, "Authorization"), buf, sizeof(buf));
        int r = secret && *secret ? lg_store_token_lookup(c->api->store, secret, &c->token, NULL) : -ENOENT;
        explicit_bzero(buf, sizeof(buf));
        if (r < 0 || c->token.app[0]) {
                v2_error(c->req, 401, "UNAUTHORIZED", "%s",
                         "an API token is needed (Bearer, or Basic with the token as the password)");
                return false;
        }
        lg_http_request_set_authenticated(c->req);
        return true;
}

/* A repository name component: [a-z0-9._-]+, not "." or "..". */
static bool v2_name_ok(const char *s) {
        if (!*s || !strcmp(s, ".") || !strcmp(s, ".."))
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
                        return false;
        return true;
}

/* Range: "bytes=a-b", "bytes=a-" or "bytes=-n" of a blob of size bytes
 * into [*start, *end). 1 a range, 0 none (absent, malformed or several:
 * the whole blob, as RFC 9110 allows), -ERANGE unsatisfiable. */
static int v2_range(const char *h, uint64_t size, uint64_t *start, uint64_t *end) {
        if (!h || strncmp(h, "bytes=", 6) || strchr(h, ','))
                return 0;
        h += 6;
        const char *dash = strchr(h, '-');
        if (!dash)
                return 0;
        char a[24] = "", b[24] = "";
        if ((size_t) (dash - h) >= sizeof(a) || strlen(dash + 1) >= sizeof(b))
                return 0;
        memcpy(a, h, (size_t) (dash - h));
        snprintf(b, sizeof(b), "%s", dash + 1);
        long long va = 0, vb = 0;
        bool ha = a[0] != '\0', hb = b[0] != '\0';
        if ((!ha && !hb) || (ha && lg_parse_int(a, 0, INT64_MAX, &va) < 0) ||
            (hb && lg_parse_int(b, 0, INT64_MAX, &vb) < 0) || (ha && hb && vb < va))
                return 0;
        if (!ha) { /* the last vb bytes */
                if (vb == 0 || size == 0)
                        return -ERANGE;
                *start = (uint64_t) vb >= size ? 0 : size - (uint64_t) vb;
                *end = size;
                return 1;
        }
        if ((uint64_t) va >= size)
                return -ERANGE;
        *start = (uint64_t) va;
        *end = hb && (uint64_t) vb < size - 1 ? (uint64_t) vb + 1 : size;
        return 1;
}

/* One HEAD or GET of a blob in flight. Exactly one step (the open, a read
 * or a write) is pending at any time; its callback ends the request when
 * the client went away meanwhile. */
struct v2_get {
        struct lg_http_request *req;
        lg_lazy_serve_blob *blob;
        char digest[80];
        uint64_t size, off, end;
        bool head, partial, started, aborted;
        char *buf;
        size_t n; /* bytes in buf */
};

static void get_free(struct v2_get *g) {
        lg_lazy_serve_blob_close(g->blob);
        free(g->buf);
        free(g);
}

static void get_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) req;
        (void) reason;
        struct v2_get *g = ud;
        g->aborted = true; /* the pending step's callback ends it */
}

static void get_read_next(struct v2_get *g);

static void get_written(void *ud, int status) {
        struct v2_get *g = ud;
        if (status < 0 || g->aborted) {
                lg_http_response_abort(g->req);
                return get_free(g);
        }
        g->off += g->n;
        if (g->off == g->end) {
                lg_http_response_end(g->req);
                return get_free(g);
        }
        get_read_next(g);
}

static void get_read_done(void *ud, int status, const struct lg_error *err) {
        struct v2_get *g = ud;
        if (g->aborted) {
                lg_http_response_abort(g->req);
                return get_free(g);
        }
        if (status < 0 && !g->started) {
                /* A chunk the node cannot have: the asking node goes
                 * elsewhere (a 5xx makes it skip this mirror). */
                v2_error(g->req, status == -EIO || status == -EBADMSG ? 503 : 500, "UNAVAILABLE", "%s",
                         err->msg[0] ? err->msg : strerror(-status));
                return get_free(g);
        }
        if (status < 0) {
                /* Headers are gone: a short body tells the client. */
                lg_http_response_abort(g->req);
                return get_free(g);
        }
        if (!g->started) {
                char range[96];
                struct lg_http_header h[5] = {{"Content-Type", "application/octet-stream"},
                                              {"Docker-Content-Digest", g->digest},
                                              {"Accept-Ranges", "bytes"},
                                              api_version,
                                              {"Content-Range", range}};
                snprintf(range, sizeof(range), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, g->off, g->end - 1, g->size);
                g->started = true;
                int r = lg_http_response_start(g->req, g->partial ? 206 : 200, h, g->partial ? 5 : 4,
                                               (int64_t) (g->end - g->off));
                if (r < 0) {
                        lg_http_response_abort(g->req);
                        return get_free(g);
                }
        }
        if (lg_http_response_write(g->req, g->buf, g->n, get_written, g) < 0) {
                lg_http_response_abort(g->req);
                get_free(g);
        }
}

static void get_read_next(struct v2_get *g) {
        g->n = g->end - g->off < PIECE ? (size_t) (g->end - g->off) : PIECE;
        int r = lg_lazy_serve_read_async(g->blob, g->off, g->buf, g->n, get_read_done, g);
        if (r < 0) {
                struct lg_error err = {0};
                lg_error_setm(&err, -r, "%s", "cannot queue the read");
                get_read_done(g, r, &err);
        }
}

static void get_opened(void *ud, int status, lg_lazy_serve_blob *b, uint64_t size, const struct lg_error *err) {
        struct v2_get *g = ud;
        g->blob = b;
        g->size = size;
        if (g->aborted) {
                lg_http_response_abort(g->req);
                return get_free(g);
        }
        if (status < 0) {
                if (status == -EINVAL)
                        v2_error(g->req, 400, "DIGEST_INVALID", "%s", err->msg);
                else if (status == -ENOENT)
                        v2_error(g->req, 404, "BLOB_UNKNOWN", "%s", err->msg);
                else
                        v2_error(g->req, 500, "UNKNOWN", "%s", err->msg[0] ? err->msg : strerror(-status));
                return get_free(g);
        }
        g->off = 0;
        g->end = size;
        int r = v2_range(lg_http_request_header(g->req, "Range"), size, &g->off, &g->end);
        if (r == -ERANGE) {
                char cr[48];
                snprintf(cr, sizeof(cr), "bytes */%" PRIu64, size);
                struct lg_http_header h[] = {{"Content-Range", cr}, api_version};
                lg_http_respond(g->req, 416, h, 2, NULL, 0);
                return get_free(g);
        }
        g->partial = r == 1;
        if (g->head || g->off == g->end) {
                /* HEAD, or an empty blob: the head alone. */
                struct lg_http_header h[] = {{"Content-Type", "application/octet-stream"},
                                             {"Docker-Content-Digest", g->digest},
                                             {"Accept-Ranges", "bytes"},
                                             api_version};
                if (lg_http_response_start(g->req, 200, h, 4, (int64_t) (g->end - g->off)) >= 0)
                        lg_http_response_end(g->req);
                else
                        lg_http_response_abort(g->req);
                return get_free(g);
        }
        uint64_t want = g->end - g->off;
        if (!(g->buf = malloc(want < PIECE ? (size_t) want : PIECE))) {
                v2_error(g->req, 500, "UNKNOWN", "%s", "out of memory");
                return get_free(g);
        }
        get_read_next(g);
}

static void v2_blob(struct api_call *c, const char *digest) {
        const char *m = lg_http_request_method(c->req);
        bool head = !strcmp(m, "HEAD");
        if (!head && strcmp(m, "GET"))
                return v2_error(c->req, 405, "UNSUPPORTED", "%s", "this node serves blobs read-only: HEAD or GET");
        struct v2_get *g = calloc(1, sizeof(*g));
        if (!g)
                return v2_error(c->req, 500, "UNKNOWN", "%s", "out of memory");
        g->req = c->req;
        g->head = head;
        if (strlen(digest) < sizeof(g->digest))
                snprintf(g->digest, sizeof(g->digest), "%s", digest);
        int r = lg_lazy_serve_open_async(c->api->blobs, g->digest, get_opened, g);
        if (r < 0) {
                free(g);
                return v2_error(c->req, 500, "UNKNOWN", "cannot queue the open: %s", strerror(-r));
        }
        lg_http_request_on_abort(c->req, get_abort, g);
}

void api_v2(struct api_call *c) {
        if (!v2_auth(c))
                return;
        const char *const *seg = c->seg;
        int n = c->nseg;
        if (n == 1 || (n == 2 && !seg[1][0])) {
                static const struct lg_http_header h[] = {{"Content-Type", "application/json"}, api_version};
                lg_http_respond(c->req, 200, h, 2, "{}", 2);
                return;
        }
        if (n >= 4 && !strcmp(seg[n - 2], "blobs")) {
                for (int i = 1; i < n - 2; i++)
                        if (!v2_name_ok(seg[i]))
                                return v2_error(c->req, 400, "NAME_INVALID", "%s",
                                                "a repository name is [a-z0-9._-] components");
                if (!c->api->blobs)
                        return v2_error(c->req, 503, "UNAVAILABLE", "%s", "this legiond serves no blobs");
                return v2_blob(c, seg[n - 1]);
        }
        v2_error(c->req, 404, "UNSUPPORTED", "%s", "this legiond serves blobs only: /v2/<name>/blobs/<digest>");
}
