/* Internals shared by server.c and client.c. */
#pragma once

#include <http_parser.h>
#include <string.h>

#include "http/http.h"

#define container_of(ptr, type, member) ((type *) ((char *) (ptr) - offsetof(type, member)))

/* Read buffers: one per connection while it has unparsed or pinned bytes,
 * recycled through a pool so that a request costs no malloc. */
#define HTTP_RBUF_SIZE (32u * 1024u)
#define HTTP_POOL_MAX 256u

struct http_pool {
        void *free; /* singly linked through the first word */
        unsigned count;
        size_t size;
};
void *http_pool_get(struct http_pool *p);

/* libuv's alloc callback for a connection's read buffer, server or client:
 * the buffer comes from the pool when there is none; when it is full and
 * nothing before rpos is referenced any more (!pinned), what is left is
 * moved to the front. A NULL buffer (pool exhausted) makes libuv report
 * ENOBUFS. */
void http_rbuf_alloc(struct http_pool *pool, char **rbuf, size_t *rpos, size_t *rlen, bool pinned,
                     uv_buf_t *buf);
void http_pool_put(struct http_pool *p, void *buf);
void http_pool_clear(struct http_pool *p);

/* One write: prefix (chunk size line or a head), data, suffix. */
struct http_wr {
        uv_write_t req;
        struct http_wr *next;
        void *owner;         /* the connection */
        lg_http_write_cb cb; /* user callback, or NULL */
        void *ud;
        char *copy;          /* owned copy of the data, freed on completion */
        size_t len;          /* bytes in bufs */
        unsigned nbufs;
        bool user;           /* carries user body data (counts for retries) */
        int status;          /* for completions delivered from the loop */
        uv_buf_t bufs[4];
        char chunk[24];
};

struct http_wr_pool {
        struct http_wr *free;
        unsigned count;
};
struct http_wr *http_wr_get(struct http_wr_pool *p);
void http_wr_put(struct http_wr_pool *p, struct http_wr *wr);
void http_wr_pool_clear(struct http_wr_pool *p);
/* Copy the bytes of wr->bufs from offset `skip` on into wr->copy and make it
 * the only buffer (if it already is, just skip). Returns 0 or -ENOMEM. */
int http_wr_copy_rest(struct http_wr *wr, size_t skip);
/* Drop the first `skip` bytes of wr->bufs in place: for buffers that stay
 * valid until the write completes (a caller's zero-copy data). */
void http_wr_skip(struct http_wr *wr, size_t skip);
/* Fill wr->chunk with "%zx\r\n"; returns its length. */
size_t http_chunk_prefix(char *buf, size_t len);

/* Collects a message head (target + headers) from http-parser's pieces in
 * one arena of NUL-terminated strings. */
struct http_head {
        char *buf;
        size_t len, cap;
        struct {
                uint32_t name, value;
        } *off;
        size_t n, offcap;
        struct lg_http_header *hdrs;
        size_t hdrscap;
        enum { HEAD_NONE, HEAD_URL, HEAD_FIELD, HEAD_VALUE } last;
        size_t url_len;    /* the target, at offset 0 */
        size_t limit;      /* arena bytes */
        unsigned max_hdrs; /* headers */
};
void http_head_reset(struct http_head *h);
void http_head_free(struct http_head *h);
/* 0, -E2BIG over the byte limit, -EMLINK too many headers, -ENOMEM. */
int http_head_url(struct http_head *h, const char *at, size_t len);
int http_head_field(struct http_head *h, const char *at, size_t len);
int http_head_value(struct http_head *h, const char *at, size_t len);
/* Terminate the last piece, make room for `extra` more bytes (returned in
 * *extra_out) and build hdrs. -EBADMSG when a name is not a token. */
int http_head_finish(struct http_head *h, size_t extra, char **extra_out);
const char *http_head_get(const struct http_head *h, const char *name);

/* Growable byte buffer. */
int http_reserve(char **buf, size_t *cap, size_t need);

/* Hop-by-hop or framing header the library owns? */
bool http_is_hop_header(const char *name, size_t len, bool client);
bool http_is_token(const char *s, size_t len);
/* Append "name: value\r\n" for every header that is not hop-by-hop; returns
 * the new length, or -EINVAL for a bad name or value. `buf` has room (see
 * http_headers_size). */
ssize_t http_put_headers(char *buf, size_t pos, const struct lg_http_header *h, size_t n, bool client,
                         bool *saw_host);
size_t http_headers_size(const struct lg_http_header *h, size_t n);
static inline size_t http_put(char *buf, size_t pos, const char *s, size_t len) {
        memcpy(buf + pos, s, len);
        return pos + len;
}
#define HTTP_PUT_LIT(buf, pos, lit) http_put(buf, pos, lit, sizeof(lit) - 1)
size_t http_put_u64(char *buf, size_t pos, uint64_t v);

/* "Date: Tue, 15 Nov 1994 08:12:31 GMT\r\n" (cached per second). */
const char *http_date_line(size_t *len);
const char *http_reason(int status);
bool http_has_token(const char *value, const char *token);
