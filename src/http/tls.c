/* TLS for the HTTP server (OpenSSL, memory BIOs).
 *
 * A TLS connection is the same struct lg_http_request on the same socket;
 * only its bytes go through an SSL object in between:
 *
 *   socket -> tls_on_read -> BIO_write(rbio) -> SSL_read -> the server's
 *             on_alloc/on_read (the parser path, as if read from the socket)
 *   http_wr (plaintext) -> SSL_write -> wbio -> one ciphertext buffer in
 *             wr->copy -> the server's submit (uv_try_write / uv_write, as
 *             for a plain write) -> the server's on_write
 *
 * Write callbacks thus run once the encrypted bytes are handed to the
 * kernel, and the write queue (backpressure, write timeout) counts
 * ciphertext. Bytes TLS writes by itself (handshake, session tickets,
 * alerts, close_notify) go out as writes without a callback.
 *
 * Reading follows the server: it reads the socket only while the server
 * wants plaintext. Plaintext that OpenSSL still holds when the server asks
 * again is delivered from the loop (the server's deferred "kick"), never
 * from inside the call that asked.
 *
 * A lingering close (the server's final response is queued, the client may
 * still be sending) sends close_notify and from then on reads the socket
 * raw: the server drops whatever comes unread, so it is never decrypted,
 * and nothing the client sends can make TLS fail, alert or end the drain
 * before the client's EOF (nginx does the same).
 *
 * The handshake runs while the connection is new, so the server's head
 * timeout for a fresh connection (header_timeout_ms from accept) bounds it.
 * Renegotiation is refused; TLS 1.2 is the minimum; ALPN selects http/1.1
 * or nothing (never h2). */
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "http/server-internal.h"

struct http_tls {
        SSL *ssl;
        BIO *rbio, *wbio; /* network side: ciphertext in, ciphertext out */
        uv_alloc_cb alloc_cb;
        uv_read_cb read_cb;
        bool want_read; /* the server reads */
        bool established;
        bool raw;       /* lingering: the server reads the socket itself */
        ssize_t eof; /* UV_EOF or an error from the socket, not yet delivered */
};

static const char *tls_errstr(char *buf, size_t cap) {
        unsigned long e = ERR_peek_last_error();
        if (!e)
                return "unknown error";
        ERR_error_string_n(e, buf, cap);
        return buf;
}

/* ------------------------------------------------------------------------
 * Context
 * --------------------------------------------------------------------- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
        (void) ssl;
        (void) arg;
        static const unsigned char ours[] = "\x08http/1.1";
        unsigned char *sel = NULL;
        if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
                return SSL_TLSEXT_ERR_NOACK; /* e.g. only h2: no ALPN, the client speaks HTTP/1.1 */
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
}

int http_tls_ctx_new(const char *cert_file, const char *key_file, struct ssl_ctx_st **ret, struct lg_error *err) {
        char eb[256];
        if (!cert_file || !*cert_file || !key_file || !*key_file)
                return lg_error_setm(err, EINVAL, "TLS: certificate and key files are required");
        ERR_clear_error();
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx)
                return lg_error_setm(err, ENOMEM, "TLS: %s", tls_errstr(eb, sizeof(eb)));
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
        /* Idle keep-alive connections should not hold 2 x 16 KiB each. */
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
        static const unsigned char sid[] = "legion-http";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
                SSL_CTX_free(ctx);
                return lg_error_setm(err, EINVAL, "TLS: certificate `%s`: %s", cert_file, tls_errstr(eb, sizeof(eb)));
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
                SSL_CTX_free(ctx);
                return lg_error_setm(err, EINVAL, "TLS: private key `%s`: %s", key_file, tls_errstr(eb, sizeof(eb)));
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
                SSL_CTX_free(ctx);
                return lg_error_setm(err, EINVAL, "TLS: key `%s` does not match certificate `%s`", key_file,
                                     cert_file);
        }
        ERR_clear_error();
        *ret = ctx;
        return 0;
}

void http_tls_ctx_free(struct ssl_ctx_st *ctx) { SSL_CTX_free(ctx); }

/* ------------------------------------------------------------------------
 * Connections
 * --------------------------------------------------------------------- */

int http_tls_conn_new(struct lg_http_request *c, struct ssl_ctx_st *ctx) {
        struct http_tls *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->ssl = SSL_new(ctx);
        t->rbio = BIO_new(BIO_s_mem());
        t->wbio = BIO_new(BIO_s_mem());
        if (!t->ssl || !t->rbio || !t->wbio) {
                BIO_free(t->rbio);
                BIO_free(t->wbio);
                SSL_free(t->ssl);
                free(t);
                ERR_clear_error();
                return -ENOMEM;
        }
        /* An empty memory BIO means "try again", not EOF. */
        BIO_set_mem_eof_return(t->rbio, -1);
        BIO_set_mem_eof_return(t->wbio, -1);
        SSL_set_bio(t->ssl, t->rbio, t->wbio); /* ssl owns both now */
        SSL_set_accept_state(t->ssl);
        c->tls = t;
        return 0;
}

void http_tls_conn_free(struct http_tls *t) {
        if (!t)
                return;
        SSL_free(t->ssl);
        free(t);
}

bool lg_http_request_tls(const struct lg_http_request *req) { return req->tls != NULL; }

/* ------------------------------------------------------------------------
 * Writing
 * --------------------------------------------------------------------- */

/* Encrypt wr's buffers (there may be none: then it carries what TLS wrote
 * by itself) and make all pending ciphertext wr's only buffer, in its own
 * copy: http_srv_conn_submit then writes it like a plain write, and wr
 * completes through http_srv_on_write. On failure wr is put back and the
 * connection closed. */
int http_tls_encrypt(struct lg_http_request *c, struct http_wr *wr) {
        struct http_tls *t = c->tls;
        struct lg_http_server *srv = c->srv;
        for (unsigned i = 0; i < wr->nbufs; i++) {
                if (wr->bufs[i].len == 0)
                        continue;
                size_t w = 0;
                ERR_clear_error();
                if (SSL_write_ex(t->ssl, wr->bufs[i].base, wr->bufs[i].len, &w) != 1 || w != wr->bufs[i].len) {
                        ERR_clear_error();
                        http_wr_put(&srv->wrs, wr);
                        http_srv_conn_close(c, -ECONNRESET);
                        return -ECONNRESET;
                }
        }
        size_t n = BIO_ctrl_pending(t->wbio);
        char *copy = malloc(n ? n : 1);
        if (!copy) {
                http_wr_put(&srv->wrs, wr);
                http_srv_conn_close(c, -ENOMEM);
                return -ENOMEM;
        }
        if (n > 0 && BIO_read(t->wbio, copy, (int) n) != (int) n) {
                free(copy);
                http_wr_put(&srv->wrs, wr);
                http_srv_conn_close(c, -EIO);
                return -EIO;
        }
        wr->copy = copy;
        wr->bufs[0] = uv_buf_init(copy, (unsigned) n);
        wr->nbufs = 1;
        return 0;
}

/* Send what TLS wrote by itself. */
static void tls_flush(struct lg_http_request *c) {
        if (c->closing || BIO_ctrl_pending(c->tls->wbio) == 0)
                return;
        struct http_wr *wr = http_wr_get(&c->srv->wrs);
        if (!wr) {
                http_srv_conn_close(c, -ENOMEM);
                return;
        }
        (void) http_srv_conn_submit(c, wr, true);
}

void http_tls_linger(struct lg_http_request *c) {
        struct http_tls *t = c->tls;
        if (c->closing || t->raw)
                return;
        if (t->established) {
                ERR_clear_error();
                (void) SSL_shutdown(t->ssl);
                ERR_clear_error();
                tls_flush(c);
                if (c->closing)
                        return;
        }
        t->raw = true;
        /* Maybe called from inside tls_pump (a parser callback): it stops
         * there, and libuv takes the new callbacks for its next read. */
        if (t->want_read) {
                uv_read_stop(&c->h.stream);
                if (!t->eof && uv_read_start(&c->h.stream, t->alloc_cb, t->read_cb) < 0)
                        t->eof = UV_EIO;
                if (t->eof)
                        http_srv_conn_kick(c); /* -> http_tls_drain delivers it */
        }
}

/* ------------------------------------------------------------------------
 * Reading
 * --------------------------------------------------------------------- */

static void tls_deliver(struct lg_http_request *c, ssize_t code) {
        uv_buf_t none = uv_buf_init(NULL, 0);
        c->tls->read_cb(&c->h.stream, code, &none);
}

/* A fatal TLS error: try to get the alert out, then close. */
static void tls_fail(struct lg_http_request *c) {
        struct http_tls *t = c->tls;
        ERR_clear_error();
        size_t n = BIO_ctrl_pending(t->wbio);
        if (n > 0 && n <= 512 && c->writes == 0 && uv_stream_get_write_queue_size(&c->h.stream) == 0) {
                char alert[512];
                if (BIO_read(t->wbio, alert, (int) n) == (int) n) {
                        uv_buf_t b = uv_buf_init(alert, (unsigned) n);
                        (void) uv_try_write(&c->h.stream, &b, 1);
                }
        }
        tls_deliver(c, UV_EPROTO);
}

/* Move what the socket gave through TLS to the server while it reads. */
static void tls_pump(struct lg_http_request *c) {
        struct http_tls *t = c->tls;
        if (c->closing || t->raw)
                return;
        if (!t->established) {
                ERR_clear_error();
                int r = SSL_do_handshake(t->ssl);
                if (r != 1) {
                        int e = SSL_get_error(t->ssl, r);
                        if (e != SSL_ERROR_WANT_READ) {
                                tls_fail(c);
                                return;
                        }
                        tls_flush(c);
                        if (t->eof && !c->closing)
                                tls_deliver(c, t->eof);
                        return;
                }
                t->established = true;
        }
        while (t->want_read && !c->closing && !t->raw) {
                char b;
                ERR_clear_error();
                /* Peek first, so that a read buffer is taken only when
                 * there is plaintext for it. */
                int r = SSL_peek(t->ssl, &b, 1);
                if (r <= 0) {
                        int e = SSL_get_error(t->ssl, r);
                        if (e == SSL_ERROR_WANT_READ) {
                                tls_flush(c);
                                if (t->eof && !c->closing)
                                        tls_deliver(c, t->eof);
                                return;
                        }
                        if (e == SSL_ERROR_ZERO_RETURN) {
                                tls_flush(c);
                                if (!c->closing)
                                        tls_deliver(c, UV_EOF); /* close_notify */
                                return;
                        }
                        tls_fail(c);
                        return;
                }
                uv_buf_t ub = uv_buf_init(NULL, 0);
                t->alloc_cb(&c->h.handle, HTTP_RBUF_SIZE, &ub);
                if (!ub.base || ub.len == 0) {
                        tls_deliver(c, UV_ENOBUFS);
                        return;
                }
                size_t n = 0;
                if (SSL_read_ex(t->ssl, ub.base, ub.len, &n) != 1 || n == 0) {
                        tls_fail(c);
                        return;
                }
                t->read_cb(&c->h.stream, (ssize_t) n, &ub);
        }
        tls_flush(c);
}

static void tls_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        (void) suggested;
        struct lg_http_request *c = h->data;
        char *b = http_pool_get(&c->srv->rbufs);
        *buf = uv_buf_init(b, b ? HTTP_RBUF_SIZE : 0);
}

static void tls_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
        struct lg_http_request *c = s->data;
        struct http_tls *t = c->tls;
        if (nread > 0 && !c->closing && BIO_write(t->rbio, buf->base, (int) nread) != (int) nread)
                nread = UV_ENOMEM;
        if (buf->base)
                http_pool_put(&c->srv->rbufs, buf->base);
        if (c->closing || nread == 0)
                return;
        if (nread == UV_ENOBUFS) {
                uv_read_stop(s);
                tls_deliver(c, UV_ENOBUFS);
                return;
        }
        if (nread < 0)
                t->eof = nread; /* delivered after the plaintext before it */
        if (t->want_read || !t->established)
                tls_pump(c);
}

int http_tls_read_start(struct lg_http_request *c, uv_alloc_cb alloc_cb, uv_read_cb read_cb) {
        struct http_tls *t = c->tls;
        t->alloc_cb = alloc_cb;
        t->read_cb = read_cb;
        t->want_read = true;
        if (!t->eof) {
                int r = t->raw ? uv_read_start(&c->h.stream, alloc_cb, read_cb)
                               : uv_read_start(&c->h.stream, tls_alloc, tls_on_read);
                if (r < 0 && r != UV_EALREADY)
                        return r;
        }
        if (t->raw ? t->eof != 0 : (SSL_has_pending(t->ssl) || BIO_ctrl_pending(t->rbio) > 0 || t->eof))
                http_srv_conn_kick(c); /* -> http_tls_drain */
        return 0;
}

void http_tls_read_stop(struct lg_http_request *c) {
        c->tls->want_read = false;
        uv_read_stop(&c->h.stream);
}

void http_tls_drain(struct lg_http_request *c) {
        struct http_tls *t = c->tls;
        if (!t->want_read)
                return;
        if (t->raw) {
                /* The socket's EOF or error, seen before the switch. */
                if (t->eof)
                        tls_deliver(c, t->eof);
                return;
        }
        tls_pump(c);
}
