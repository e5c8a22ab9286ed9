/* Pieces shared by the HTTP server and client: buffer pools, head
 * collection, header formatting, percent-decoding, JSON errors. */
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include "http/http-internal.h"

void *http_pool_get(struct http_pool *p) {
        if (p->free) {
                void *b = p->free;
                p->free = *(void **) b;
                p->count--;
                return b;
        }
        return malloc(p->size);
}

void http_pool_put(struct http_pool *p, void *buf) {
        if (!buf)
                return;
        if (p->count >= HTTP_POOL_MAX) {
                free(buf);
                return;
        }
        *(void **) buf = p->free;
        p->free = buf;
        p->count++;
}

void http_pool_clear(struct http_pool *p) {
        while (p->free) {
                void *b = p->free;
                p->free = *(void **) b;
                free(b);
        }
        p->count = 0;
}

struct http_wr *http_wr_get(struct http_wr_pool *p) {
        struct http_wr *wr = p->free;
        if (wr) {
                p->free = wr->next;
                p->count--;
        } else {
                wr = malloc(sizeof(*wr));
                if (!wr)
                        return NULL;
        }
        wr->next = NULL;
        wr->owner = NULL;
        wr->cb = NULL;
        wr->ud = NULL;
        wr->copy = NULL;
        wr->len = 0;
        wr->nbufs = 0;
        wr->user = false;
        wr->status = 0;
        return wr;
}

void http_wr_put(struct http_wr_pool *p, struct http_wr *wr) {
        free(wr->copy);
        wr->copy = NULL;
        if (p->count >= HTTP_POOL_MAX) {
                free(wr);
                return;
        }
        wr->next = p->free;
        p->free = wr;
        p->count++;
}

void http_wr_pool_clear(struct http_wr_pool *p) {
        while (p->free) {
                struct http_wr *wr = p->free;
                p->free = wr->next;
                free(wr);
        }
        p->count = 0;
}

int http_wr_copy_rest(struct http_wr *wr, size_t skip) {
        /* The length is the buffers': a write queued before its connection
         * was up (the client's call_push) has not been measured yet. */
        wr->len = 0;
        for (unsigned i = 0; i < wr->nbufs; i++)
                wr->len += wr->bufs[i].len;
        size_t rest = wr->len - skip;
        /* The data is already wr's own (TLS ciphertext): skip in place. */
        if (wr->copy && wr->nbufs == 1) {
                wr->bufs[0] = uv_buf_init(wr->bufs[0].base + skip, (unsigned) rest);
                wr->len = rest;
                return 0;
        }
        char *copy = malloc(rest ? rest : 1);
        if (!copy)
                return -ENOMEM;
        size_t pos = 0;
        for (unsigned i = 0; i < wr->nbufs; i++) {
                size_t l = wr->bufs[i].len;
                const char *b = wr->bufs[i].base;
                if (skip >= l) {
                        skip -= l;
                        continue;
                }
                memcpy(copy + pos, b + skip, l - skip);
                pos += l - skip;
                skip = 0;
        }
        free(wr->copy);
        wr->copy = copy;
        wr->bufs[0] = uv_buf_init(copy, (unsigned) rest);
        wr->nbufs = 1;
        wr->len = rest;
        return 0;
}

void http_wr_skip(struct http_wr *wr, size_t skip) {
        unsigned k = 0;
        wr->len = 0;
        for (unsigned i = 0; i < wr->nbufs; i++) {
                uv_buf_t b = wr->bufs[i];
                if (skip >= b.len) {
                        skip -= b.len;
                        continue;
                }
                wr->bufs[k++] = uv_buf_init(b.base + skip, (unsigned) (b.len - skip));
                wr->len += b.len - skip;
                skip = 0;
        }
        wr->nbufs = k;
}

size_t http_chunk_prefix(char *buf, size_t len) {
        static const char hex[] = "0123456789abcdef";
        char tmp[20];
        size_t n = 0;
        do {
                tmp[n++] = hex[len & 15];
                len >>= 4;
        } while (len);
        size_t pos = 0;
        while (n)
                buf[pos++] = tmp[--n];
        buf[pos++] = '\r';
        buf[pos++] = '\n';
        return pos;
}

int http_reserve(char **buf, size_t *cap, size_t need) {
        if (need <= *cap)
                return 0;
        size_t ncap = *cap ? *cap : 256;
        while (ncap < need)
                ncap *= 2;
        char *n = realloc(*buf, ncap);
        if (!n)
                return -ENOMEM;
        *buf = n;
        *cap = ncap;
        return 0;
}

/* --- head collection --- */

void http_head_reset(struct http_head *h) {
        h->len = 0;
        h->n = 0;
        h->url_len = 0;
        h->last = HEAD_NONE;
}

void http_head_free(struct http_head *h) {
        free(h->buf);
        free(h->off);
        free(h->hdrs);
        h->buf = NULL;
        h->off = NULL;
        h->hdrs = NULL;
        h->cap = h->offcap = h->hdrscap = 0;
        http_head_reset(h);
}

static int head_append(struct http_head *h, const char *at, size_t len, bool nul) {
        size_t need = h->len + len + (nul ? 1 : 0);
        if (need > h->limit)
                return -E2BIG;
        int r = http_reserve(&h->buf, &h->cap, need + 1);
        if (r < 0)
                return r;
        if (nul)
                h->buf[h->len++] = '\0';
        memcpy(h->buf + h->len, at, len);
        h->len += len;
        return 0;
}

int http_head_url(struct http_head *h, const char *at, size_t len) {
        if (h->last != HEAD_NONE && h->last != HEAD_URL)
                return -EINVAL;
        h->last = HEAD_URL;
        int r = head_append(h, at, len, false);
        if (r == 0)
                h->url_len += len;
        return r;
}

int http_head_field(struct http_head *h, const char *at, size_t len) {
        if (h->last == HEAD_FIELD)
                return head_append(h, at, len, false);
        if (h->n >= h->max_hdrs)
                return -EMLINK;
        if (h->n >= h->offcap) {
                size_t ncap = h->offcap ? h->offcap * 2 : 16;
                void *n = realloc(h->off, ncap * sizeof(*h->off));
                if (!n)
                        return -ENOMEM;
                h->off = n;
                h->offcap = ncap;
        }
        /* Terminate the target or the previous value. */
        bool nul = h->last != HEAD_NONE;
        int r = head_append(h, at, len, nul);
        if (r < 0)
                return r;
        h->off[h->n].name = (uint32_t) (h->len - len);
        h->off[h->n].value = UINT32_MAX;
        h->n++;
        h->last = HEAD_FIELD;
        return 0;
}

int http_head_value(struct http_head *h, const char *at, size_t len) {
        if (h->n == 0)
                return -EINVAL;
        if (h->last == HEAD_VALUE)
                return head_append(h, at, len, false);
        int r = head_append(h, at, len, true);
        if (r < 0)
                return r;
        h->off[h->n - 1].value = (uint32_t) (h->len - len);
        h->last = HEAD_VALUE;
        return 0;
}

int http_head_finish(struct http_head *h, size_t extra, char **extra_out) {
        /* NUL for the last piece, an empty string for a header without a
         * value piece, and the extra room. */
        int r = http_reserve(&h->buf, &h->cap, h->len + 2 + extra);
        if (r < 0)
                return r;
        h->buf[h->len++] = '\0';
        size_t empty = h->len;
        h->buf[h->len++] = '\0';
        if (extra_out)
                *extra_out = h->buf + h->len;
        if (h->n > h->hdrscap) {
                void *n = realloc(h->hdrs, h->n * sizeof(*h->hdrs));
                if (!n)
                        return -ENOMEM;
                h->hdrs = n;
                h->hdrscap = h->n;
        }
        for (size_t i = 0; i < h->n; i++) {
                h->hdrs[i].name = h->buf + h->off[i].name;
                /* Debian builds http-parser without HTTP_PARSER_STRICT, which
                 * lets spaces into names. */
                if (!http_is_token(h->hdrs[i].name, strlen(h->hdrs[i].name)))
                        return -EBADMSG;
                if (h->off[i].value == UINT32_MAX) {
                        h->hdrs[i].value = h->buf + empty;
                        continue;
                }
                /* http-parser skips leading whitespace; drop the trailing. */
                char *v = h->buf + h->off[i].value;
                size_t vl = strlen(v);
                while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                        v[--vl] = '\0';
                h->hdrs[i].value = v;
        }
        return 0;
}

const char *http_head_get(const struct http_head *h, const char *name) {
        for (size_t i = 0; i < h->n; i++)
                if (strcasecmp(h->hdrs[i].name, name) == 0)
                        return h->hdrs[i].value;
        return NULL;
}

/* --- headers --- */

bool http_is_hop_header(const char *name, size_t len, bool client) {
        switch (len) {
        case 2:
                return strcasecmp(name, "te") == 0;
        case 4:
                return !client && strcasecmp(name, "date") == 0;
        case 6:
                return client && strcasecmp(name, "expect") == 0;
        case 7:
                return strcasecmp(name, "trailer") == 0 || strcasecmp(name, "upgrade") == 0;
        case 10:
                return strcasecmp(name, "connection") == 0 || strcasecmp(name, "keep-alive") == 0;
        case 14:
                return strcasecmp(name, "content-length") == 0;
        case 16:
                return strcasecmp(name, "proxy-connection") == 0;
        case 17:
                return strcasecmp(name, "transfer-encoding") == 0;
        default:
                return false;
        }
}

/* tchar (RFC 9110): ALPHA, DIGIT and !#$%&'*+-.^_`|~ */
static const bool tchar[256] = {
        ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
        ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
        ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
        ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
        ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
        ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
        ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
        ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
        ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

bool http_is_token(const char *s, size_t len) {
        if (len == 0)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!tchar[(unsigned char) s[i]])
                        return false;
        return true;
}

size_t http_headers_size(const struct lg_http_header *h, size_t n) {
        size_t s = 0;
        for (size_t i = 0; i < n; i++)
                s += strlen(h[i].name) + strlen(h[i].value) + 4;
        return s;
}

ssize_t http_put_headers(char *buf, size_t pos, const struct lg_http_header *h, size_t n, bool client,
                         bool *saw_host) {
        for (size_t i = 0; i < n; i++) {
                const char *name = h[i].name, *value = h[i].value;
                if (!name || !value)
                        return -EINVAL;
                size_t nl = strlen(name);
                if (http_is_hop_header(name, nl, client))
                        continue;
                if (!http_is_token(name, nl))
                        return -EINVAL;
                if (saw_host && nl == 4 && strcasecmp(name, "host") == 0)
                        *saw_host = true;
                pos = http_put(buf, pos, name, nl);
                buf[pos++] = ':';
                buf[pos++] = ' ';
                for (const char *v = value; *v; v++) {
                        if (*v == '\r' || *v == '\n')
                                return -EINVAL;
                        buf[pos++] = *v;
                }
                buf[pos++] = '\r';
                buf[pos++] = '\n';
        }
        return (ssize_t) pos;
}

size_t http_put_u64(char *buf, size_t pos, uint64_t v) {
        char tmp[24];
        size_t n = 0;
        do {
                tmp[n++] = (char) ('0' + v % 10);
                v /= 10;
        } while (v);
        while (n)
                buf[pos++] = tmp[--n];
        return pos;
}

const char *http_date_line(size_t *len) {
        static __thread time_t cached = -1;
        static __thread char line[64];
        static __thread size_t linelen;
        time_t now = time(NULL);
        if (now != cached) {
                struct tm tm;
                gmtime_r(&now, &tm);
                linelen = strftime(line, sizeof(line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
                cached = now;
        }
        *len = linelen;
        return line;
}

const char *http_reason(int status) {
        switch (status) {
        case 100: return "Continue";
        case 200: return "OK";
        case 201: return "Created";
        case 202: return "Accepted";
        case 204: return "No Content";
        case 206: return "Partial Content";
        case 301: return "Moved Permanently";
        case 302: return "Found";
        case 304: return "Not Modified";
        case 307: return "Temporary Redirect";
        case 308: return "Permanent Redirect";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 409: return "Conflict";
        case 410: return "Gone";
        case 411: return "Length Required";
        case 412: return "Precondition Failed";
        case 413: return "Payload Too Large";
        case 414: return "URI Too Long";
        case 415: return "Unsupported Media Type";
        case 417: return "Expectation Failed";
        case 422: return "Unprocessable Entity";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 499: return "Client Closed Request";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 504: return "Gateway Timeout";
        case 505: return "HTTP Version Not Supported";
        default: {
                const char *s = http_status_str((enum http_status) status);
                return s && s[0] != '<' ? s : "Unknown";
        }
        }
}

/* Does a comma-separated header value contain token (case-insensitive)? */
bool http_has_token(const char *value, const char *token) {
        size_t tl = strlen(token);
        const char *p = value;
        while (p && *p) {
                while (*p == ' ' || *p == '\t' || *p == ',')
                        p++;
                const char *e = p;
                while (*e && *e != ',')
                        e++;
                const char *t = e;
                while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
                        t--;
                if ((size_t) (t - p) == tl && strncasecmp(p, token, tl) == 0)
                        return true;
                p = e;
        }
        return false;
}

/* --- public helpers --- */

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

ssize_t lg_http_pct_decode(const char *src, size_t len, char *dst, bool plus_space) {
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
                char c = src[i];
                if (c == '%') {
                        if (i + 2 >= len)
                                return -EINVAL;
                        int hi = unhex(src[i + 1]), lo = unhex(src[i + 2]);
                        if (hi < 0 || lo < 0)
                                return -EINVAL;
                        c = (char) (hi << 4 | lo);
                        if (c == '\0')
                                return -EINVAL;
                        i += 2;
                } else if (c == '+' && plus_space) {
                        c = ' ';
                } else if (c == '\0') {
                        return -EINVAL;
                }
                dst[o++] = c;
        }
        dst[o] = '\0';
        return (ssize_t) o;
}

size_t lg_http_error_json(char *buf, size_t cap, const char *code, const char *msg) {
        static const char hex[] = "0123456789abcdef";
        if (cap == 0)
                return 0;
        size_t pos = 0;
        /* Reserve room for the closing `"}}` and the NUL. */
        size_t end = cap > 4 ? cap - 4 : 0;
#define PUTC(ch)                                    \
        do {                                        \
                if (pos < end)                      \
                        buf[pos++] = (ch);          \
        } while (0)
        const char *pre = "{\"error\":{\"code\":\"";
        for (const char *p = pre; *p; p++)
                PUTC(*p);
        for (int part = 0; part < 2; part++) {
                const char *s = part == 0 ? code : msg;
                for (; s && *s; s++) {
                        unsigned char c = (unsigned char) *s;
                        if (pos + 7 >= end)
                                break;
                        if (c == '"' || c == '\\') {
                                PUTC('\\');
                                PUTC((char) c);
                        } else if (c < 0x20) {
                                PUTC('\\');
                                PUTC('u');
                                PUTC('0');
                                PUTC('0');
                                PUTC(hex[c >> 4]);
                                PUTC(hex[c & 15]);
                        } else {
                                PUTC((char) c);
                        }
                }
                if (part == 0) {
                        const char *mid = "\",\"message\":\"";
                        for (const char *p = mid; *p; p++)
                                PUTC(*p);
                }
        }
#undef PUTC
        if (cap > 4) {
                memcpy(buf + pos, "\"}}", 3);
                pos += 3;
        }
        buf[pos] = '\0';
        return pos;
}

void http_rbuf_alloc(struct http_pool *pool, char **rbuf, size_t *rpos, size_t *rlen, bool pinned,
                     uv_buf_t *buf) {
        if (!*rbuf) {
                *rbuf = http_pool_get(pool);
                *rpos = *rlen = 0;
                if (!*rbuf) {
                        *buf = uv_buf_init(NULL, 0);
                        return;
                }
        }
        if (*rlen == HTTP_RBUF_SIZE && *rpos > 0 && !pinned) {
                memmove(*rbuf, *rbuf + *rpos, *rlen - *rpos);
                *rlen -= *rpos;
                *rpos = 0;
        }
        *buf = uv_buf_init(*rbuf + *rlen, (unsigned) (HTTP_RBUF_SIZE - *rlen));
}
