/* Framing of the legion-init control protocol (declared in proto.h; the
 * verbs are documented in docs/init-protocol.md).
 *
 * Wire format: u32 little-endian payload length, then the payload, a run of
 * NUL-terminated "key=value" fields whose first field is "op=...". File
 * descriptors ride along as SCM_RIGHTS attached to the first byte of the
 * frame. The reader never reads past the end of the current frame, so the
 * fds the kernel hands back always belong to the frame being read.
 *
 * Everything that comes off a socket is treated as hostile: length, field
 * syntax and fd count are checked before a message is handed out, and fds
 * are closed on every error path. */
#include "common/proto.h"

#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "common/util.h"

/* Control buffer large enough for LG_PROTO_MAX_FDS descriptors. A sender
 * that attaches more gets MSG_CTRUNC, which we treat as a protocol error. */
union fd_cmsg {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * LG_PROTO_MAX_FDS)];
};

void lg_msg_init(struct lg_msg *m) {
        *m = (struct lg_msg){ .buf = NULL };
        for (size_t i = 0; i < LG_PROTO_MAX_FDS; i++)
                m->fds[i] = -1;
}

static void close_fds(struct lg_msg *m) {
        for (size_t i = 0; i < LG_PROTO_MAX_FDS; i++) {
                if (m->fds[i] >= 0)
                        close(m->fds[i]);
                m->fds[i] = -1;
        }
        m->nfds = 0;
}

void lg_msg_free(struct lg_msg *m) {
        free(m->buf);
        close_fds(m);
        lg_msg_init(m);
}

/* Keep the buffer for reuse, drop the content and the fds. */
void lg_msg_reset(struct lg_msg *m) {
        m->len = 0;
        close_fds(m);
}

static int reserve(struct lg_msg *m, size_t total) {
        if (total > LG_PROTO_MAX)
                return -EMSGSIZE;
        if (total <= m->cap)
                return 0;
        size_t ncap = m->cap ? m->cap : 256;
        while (ncap < total)
                ncap *= 2;
        if (ncap > LG_PROTO_MAX)
                ncap = LG_PROTO_MAX;
        char *p = realloc(m->buf, ncap);
        if (!p)
                return -ENOMEM;
        m->buf = p;
        m->cap = ncap;
        return 0;
}

/* Refusing to build what lg_msg_parse would reject keeps our own frames
 * valid by construction: a key is non-empty, has no '=', and the first one
 * is "op". */
static int add_field(struct lg_msg *m, const char *key, const char *value, size_t vlen) {
        size_t klen = strlen(key);
        if (klen == 0 || memchr(key, '=', klen))
                return -EINVAL;
        if (m->len == 0 && strcmp(key, "op") != 0)
                return -EINVAL;
        if (klen + vlen + 2 > LG_PROTO_MAX - m->len)
                return -EMSGSIZE;
        /* Copying a field of m into m (value from lg_msg_get) must survive
         * the realloc in reserve(). */
        uintptr_t v = (uintptr_t) value, b = (uintptr_t) m->buf;
        size_t voff = m->buf && v >= b && v < b + m->len ? (size_t) (v - b) : SIZE_MAX;
        int r = reserve(m, m->len + klen + vlen + 2);
        if (r < 0)
                return r;
        if (voff != SIZE_MAX)
                value = m->buf + voff;
        char *p = m->buf + m->len;
        memcpy(p, key, klen);
        p[klen] = '=';
        memcpy(p + klen + 1, value, vlen);
        p[klen + 1 + vlen] = '\0';
        m->len += klen + vlen + 2;
        return 0;
}

int lg_msg_add(struct lg_msg *m, const char *key, const char *value) {
        if (!key || !value)
                return -EINVAL;
        return add_field(m, key, value, strlen(value));
}

int lg_msg_addf(struct lg_msg *m, const char *key, const char *fmt, ...) {
        char small[256];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(small, sizeof(small), fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        if ((size_t) n < sizeof(small))
                return add_field(m, key, small, (size_t) n);

        _cleanup_free_ char *big = malloc((size_t) n + 1);
        if (!big)
                return -ENOMEM;
        va_start(ap, fmt);
        vsnprintf(big, (size_t) n + 1, fmt, ap);
        va_end(ap);
        return add_field(m, key, big, (size_t) n);
}

const char *lg_msg_next(const struct lg_msg *m, const char *key, size_t *pos) {
        size_t klen = strlen(key);
        while (*pos < m->len) {
                const char *f = m->buf + *pos;
                size_t flen = strnlen(f, m->len - *pos);
                *pos += flen + 1;
                if (flen > klen && f[klen] == '=' && memcmp(f, key, klen) == 0)
                        return f + klen + 1;
        }
        return NULL;
}

const char *lg_msg_get(const struct lg_msg *m, const char *key) {
        size_t pos = 0;
        return lg_msg_next(m, key, &pos);
}

int lg_msg_get_int(const struct lg_msg *m, const char *key, long long *ret) {
        const char *v = lg_msg_get(m, key);
        if (!v)
                return -ENOENT;
        /* strtoll would skip leading blanks and accept "+"; the wire format
         * is a plain optional '-' and digits. */
        const char *d = v[0] == '-' ? v + 1 : v;
        if (*d < '0' || *d > '9')
                return -EINVAL;
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || *end != '\0')
                return -EINVAL;
        *ret = x;
        return 0;
}

/* Check a payload against the framing rules without copying it. */
static int validate(const char *p, size_t len) {
        if (len == 0 || len > LG_PROTO_MAX || p[len - 1] != '\0')
                return -EPROTO;
        size_t off = 0;
        while (off < len) {
                const char *f = p + off;
                size_t flen = strlen(f); /* bounded: p[len - 1] is NUL */
                const char *eq = memchr(f, '=', flen);
                if (!eq || eq == f)
                        return -EPROTO; /* no '=' (includes empty fields) or empty key */
                if (off == 0 && (eq - f != 2 || memcmp(f, "op", 2) != 0))
                        return -EPROTO;
                off += flen + 1;
        }
        return 0;
}

int lg_msg_parse(struct lg_msg *m, const char *payload, size_t len) {
        int r = validate(payload, len);
        if (r < 0) {
                m->len = 0;
                return r;
        }
        /* lg_msg_recv validates in place; only copy foreign buffers (a
         * payload inside m->buf must start at m->buf). */
        if (payload != m->buf) {
                m->len = 0;
                r = reserve(m, len);
                if (r < 0)
                        return r;
                memcpy(m->buf, payload, len);
        }
        m->len = len;
        return 0;
}

static int wait_fd(int fd, short events) {
        struct pollfd p = { .fd = fd, .events = events };
        for (;;) {
                int r = poll(&p, 1, -1);
                if (r >= 0)
                        return 0;
                if (errno != EINTR)
                        return -errno;
        }
}

int lg_msg_send(int sock, const struct lg_msg *m) {
        if (!m->buf || m->len == 0 || m->len > LG_PROTO_MAX)
                return -EINVAL;
        if (m->nfds < 0 || m->nfds > LG_PROTO_MAX_FDS)
                return -EINVAL;
        for (int i = 0; i < m->nfds; i++)
                if (m->fds[i] < 0)
                        return -EBADF;

        uint32_t n = (uint32_t) m->len;
        unsigned char hdr[4] = { n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >> 24 };
        size_t total = sizeof(hdr) + m->len, sent = 0;
        union fd_cmsg cm;

        while (sent < total) {
                struct iovec iov[2];
                int niov = 0;
                if (sent < sizeof(hdr))
                        iov[niov++] = (struct iovec){ hdr + sent, sizeof(hdr) - sent };
                size_t poff = sent < sizeof(hdr) ? 0 : sent - sizeof(hdr);
                iov[niov++] = (struct iovec){ m->buf + poff, m->len - poff };

                struct msghdr mh = { .msg_iov = iov, .msg_iovlen = niov };
                /* The fds go with the first byte of the frame; a partial
                 * send has delivered them already. */
                if (sent == 0 && m->nfds > 0) {
                        memset(&cm, 0, sizeof(cm));
                        mh.msg_control = cm.buf;
                        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t) m->nfds);
                        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                        c->cmsg_level = SOL_SOCKET;
                        c->cmsg_type = SCM_RIGHTS;
                        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t) m->nfds);
                        memcpy(CMSG_DATA(c), m->fds, sizeof(int) * (size_t) m->nfds);
                }
                ssize_t k = sendmsg(sock, &mh, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                int r = wait_fd(sock, POLLOUT);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        return -errno;
                }
                sent += (size_t) k;
        }
        return 0;
}

/* Take the SCM_RIGHTS fds of one recvmsg into m. Any excess, or a truncated
 * control buffer, is a protocol error; the fds are closed by the caller's
 * lg_msg_reset. */
static int take_fds(struct lg_msg *m, struct msghdr *mh) {
        int r = (mh->msg_flags & MSG_CTRUNC) ? -EPROTO : 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < n; i++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        if (m->nfds < LG_PROTO_MAX_FDS)
                                m->fds[m->nfds++] = fd;
                        else {
                                close(fd);
                                r = -EPROTO;
                        }
                }
        }
        return r;
}

/* Read exactly len bytes (fewer only at EOF), collecting fds into m. */
static ssize_t recv_exact(int sock, void *buf, size_t len, struct lg_msg *m) {
        size_t got = 0;
        while (got < len) {
                union fd_cmsg cm;
                struct iovec iov = { (char *) buf + got, len - got };
                struct msghdr mh = {
                        .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf),
                };
                ssize_t k = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                int r = wait_fd(sock, POLLIN);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        return -errno;
                }
                int r = take_fds(m, &mh);
                if (r < 0)
                        return r;
                if (k == 0)
                        break;
                got += (size_t) k;
        }
        return (ssize_t) got;
}

int lg_msg_recv(int sock, struct lg_msg *m) {
        lg_msg_reset(m);

        unsigned char hdr[4];
        ssize_t k = recv_exact(sock, hdr, sizeof(hdr), m);
        if (k == 0 && m->nfds == 0)
                return 0; /* clean EOF between frames */
        int r = k < 0 ? (int) k : -EPROTO;
        if (k == (ssize_t) sizeof(hdr)) {
                uint32_t len = (uint32_t) hdr[0] | (uint32_t) hdr[1] << 8 |
                               (uint32_t) hdr[2] << 16 | (uint32_t) hdr[3] << 24;
                if (len == 0 || len > LG_PROTO_MAX)
                        r = -EPROTO;
                else if ((r = reserve(m, len)) >= 0) {
                        k = recv_exact(sock, m->buf, len, m);
                        if (k < 0)
                                r = (int) k;
                        else if ((size_t) k < len)
                                r = -EPROTO; /* EOF inside a frame */
                        else if ((r = lg_msg_parse(m, m->buf, len)) >= 0)
                                return 1;
                }
        }
        lg_msg_reset(m);
        return r;
}
