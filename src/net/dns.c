/* DNS forwarder for sandboxes (dns.h says what it accepts and why): a UDP
 * listener on the gateway address, one upstream socket per address family,
 * a pending table indexed by the upstream ID, and one timer for the
 * oldest deadline (every try has the same timeout, so a FIFO of pending
 * queries is in deadline order). */
#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "net/dns.h"

#define HDR 12
#define LG_DNS_TCP_UNREAD_MAX (256 * 1024) /* answers queued to a TCP client that does not read */
#define DEFAULT_PORT 53

struct pending {
        bool used;
        uint16_t up_id, client_id;
        unsigned upstream;            /* the one this try went to */
        unsigned tries;
        uint64_t deadline;            /* uv_now ms */
        struct sockaddr_storage client;
        uint8_t *query;               /* with up_id in place of the client's */
        size_t len, qend;             /* question: [HDR, qend) */
        struct pending *prev, *next;  /* FIFO by deadline */
};

struct tcp_conn;

struct lg_dns {
        uv_loop_t *loop;
        uv_udp_t listen, up4, up6;
        uv_timer_t timer;
        uv_tcp_t tcp;                 /* TCP listener, same address and port */
        bool has_up4, has_up6, has_tcp;
        struct tcp_conn *conns;       /* TCP clients */
        unsigned n_conns;
        unsigned open_handles;
        bool freeing;

        struct sockaddr_storage upstreams[LG_DNS_UPSTREAMS_MAX];
        unsigned n_upstreams, preferred;
        unsigned timeout_ms, max_pending;

        struct pending *slots;        /* LG_DNS_PENDING_MAX */
        uint16_t by_id[65536];        /* up_id -> slot index + 1; 0 = free */
        unsigned *free_slots, n_free; /* stack of free indices */
        struct pending *head, *tail;

        uint8_t rnd[256];
        size_t rnd_left;

        struct lg_dns_stats st;
        uint8_t buf[65536];           /* one datagram at a time: the loop is single-threaded */
};

/* ---- addresses ---------------------------------------------------------- */

static int parse_ip(const char *s, uint16_t port, struct sockaddr_storage *out) {
        memset(out, 0, sizeof(*out));
        struct sockaddr_in *a4 = (struct sockaddr_in *) out;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) out;
        if (inet_pton(AF_INET, s, &a4->sin_addr) == 1) {
                a4->sin_family = AF_INET;
                a4->sin_port = htons(port);
                return 0;
        }
        if (inet_pton(AF_INET6, s, &a6->sin6_addr) == 1) {
                a6->sin6_family = AF_INET6;
                a6->sin6_port = htons(port);
                return 0;
        }
        return -EINVAL;
}

/* "IP", "IP:PORT", "[IPv6]", "[IPv6]:PORT" or a bare IPv6 literal. */
static int parse_upstream(const char *s, struct sockaddr_storage *out) {
        char host[LG_DNS_ADDR_MAX];
        const char *port_s = NULL;
        if (strlen(s) >= sizeof(host))
                return -EINVAL;
        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end || (end[1] && end[1] != ':'))
                        return -EINVAL;
                snprintf(host, sizeof(host), "%.*s", (int) (end - s - 1), s + 1);
                if (end[1] == ':')
                        port_s = end + 2;
                if (!strchr(host, ':'))
                        return -EINVAL;
        } else {
                const char *colon = strchr(s, ':');
                snprintf(host, sizeof(host), "%s", s);
                if (colon && !strchr(colon + 1, ':')) {
                        host[colon - s] = '\0';
                        port_s = colon + 1;
                }
        }
        long long port = DEFAULT_PORT;
        if (port_s && lg_parse_int(port_s, 1, 65535, &port) < 0)
                return -EINVAL;
        return parse_ip(host, (uint16_t) port, out);
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr *b) {
        if (a->ss_family != b->sa_family)
                return false;
        if (a->ss_family == AF_INET) {
                const struct sockaddr_in *x = (const void *) a, *y = (const void *) b;
                return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
        }
        const struct sockaddr_in6 *x = (const void *) a, *y = (const void *) b;
        return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
}

static bool is_unspecified(const struct sockaddr_storage *a) {
        if (a->ss_family == AF_INET)
                return ((const struct sockaddr_in *) a)->sin_addr.s_addr == INADDR_ANY;
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *) a)->sin6_addr);
}

int lg_dns_resolv_conf(const char *path, const char *listen_ip, uint16_t listen_port,
                       char out[][LG_DNS_ADDR_MAX], size_t max, struct lg_error *err) {
        if (!path)
                path = "/etc/resolv.conf";
        struct sockaddr_storage self;
        bool has_self = listen_ip && parse_ip(listen_ip, listen_port, &self) == 0;
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return lg_error_set(err, errno, "open `%s`", path);
        _cleanup_free_ char *line = NULL;
        size_t cap = 0, n = 0;
        while (n < max && getline(&line, &cap, f) >= 0) {
                char *save = NULL;
                char *key = strtok_r(line, " \t\r\n", &save);
                char *val = key ? strtok_r(NULL, " \t\r\n", &save) : NULL;
                if (!key || !val || strcmp(key, "nameserver") || strlen(val) >= LG_DNS_ADDR_MAX - 8)
                        continue;
                struct sockaddr_storage a;
                /* A zone ("%eth0") names a link of the host: skipped, as
                 * inet_pton refuses it. */
                if (parse_ip(val, DEFAULT_PORT, &a) < 0 || is_unspecified(&a) ||
                    (has_self && same_addr(&self, (struct sockaddr *) &a)))
                        continue;
                if (a.ss_family == AF_INET6)
                        snprintf(out[n++], LG_DNS_ADDR_MAX, "[%s]", val);
                else
                        snprintf(out[n++], LG_DNS_ADDR_MAX, "%s", val);
        }
        if (ferror(f))
                return lg_error_set(err, EIO, "read `%s`", path);
        if (n == 0)
                return lg_error_setm(err, ENOENT, "no usable nameserver in `%s`", path);
        return (int) n;
}

/* ---- the pending table -------------------------------------------------- */

static uint16_t random16(lg_dns *dns) {
        if (dns->rnd_left < 2) {
                ssize_t n = getrandom(dns->rnd, sizeof(dns->rnd), GRND_NONBLOCK);
                if (n < (ssize_t) sizeof(dns->rnd)) {
                        /* The pool is up long before legiond; should it not
                         * be, IDs are still unique, only guessable. */
                        for (size_t i = 0; i < sizeof(dns->rnd); i++)
                                dns->rnd[i] = (uint8_t) ((lg_now_ns() >> (i % 8)) ^ (i * 0x9e3779b9u));
                }
                dns->rnd_left = sizeof(dns->rnd);
        }
        dns->rnd_left -= 2;
        return (uint16_t) (dns->rnd[dns->rnd_left] << 8 | dns->rnd[dns->rnd_left + 1]);
}

static void fifo_remove(lg_dns *dns, struct pending *p) {
        if (p->prev)
                p->prev->next = p->next;
        else
                dns->head = p->next;
        if (p->next)
                p->next->prev = p->prev;
        else
                dns->tail = p->prev;
        p->prev = p->next = NULL;
}

static void fifo_append(lg_dns *dns, struct pending *p) {
        p->prev = dns->tail;
        p->next = NULL;
        if (dns->tail)
                dns->tail->next = p;
        else
                dns->head = p;
        dns->tail = p;
}

static void on_timer(uv_timer_t *t);

static void arm_timer(lg_dns *dns) {
        if (!dns->head) {
                uv_timer_stop(&dns->timer);
                return;
        }
        uint64_t now = uv_now(dns->loop);
        uv_timer_start(&dns->timer, on_timer, dns->head->deadline > now ? dns->head->deadline - now : 0, 0);
}

static void release(lg_dns *dns, struct pending *p) {
        fifo_remove(dns, p);
        dns->by_id[p->up_id] = 0;
        free(p->query);
        p->query = NULL;
        p->used = false;
        dns->free_slots[dns->n_free++] = (unsigned) (p - dns->slots);
        dns->st.pending--;
}

static uv_udp_t *socket_for(lg_dns *dns, const struct sockaddr_storage *a) {
        return a->ss_family == AF_INET ? &dns->up4 : &dns->up6;
}

static int send_to(uv_udp_t *sock, const void *data, size_t len, const struct sockaddr *to) {
        uv_buf_t b = uv_buf_init((char *) data, (unsigned) len);
        int r = uv_udp_try_send(sock, &b, 1, to);
        return r < 0 ? r : 0;
}

/* All upstreams tried: SERVFAIL, as long as the query's header and
 * question, so a client does not wait for its own timeout. */
static void fail_query(lg_dns *dns, struct pending *p) {
        uint8_t *m = p->query;
        uint8_t rd = m[2] & 0x01;
        m[0] = (uint8_t) (p->client_id >> 8);
        m[1] = (uint8_t) p->client_id;
        m[2] = 0x80 | rd;                  /* QR, opcode QUERY, RD as asked */
        m[3] = 0x80 | 2;                   /* RA, SERVFAIL */
        memset(m + 6, 0, 6);               /* no answer, authority, additional */
        dns->st.failed++;
        if (send_to(&dns->listen, m, p->qend, (struct sockaddr *) &p->client) < 0)
                dns->st.dropped++;
        release(dns, p);
}

/* Send the try of p to its upstream, or to the next ones when a send
 * fails at once; SERVFAIL when none is left. */
static void try_upstream(lg_dns *dns, struct pending *p) {
        while (p->tries < dns->n_upstreams) {
                const struct sockaddr_storage *up = &dns->upstreams[p->upstream];
                p->tries++;
                if (send_to(socket_for(dns, up), p->query, p->len, (const struct sockaddr *) up) == 0) {
                        fifo_remove(dns, p);
                        p->deadline = uv_now(dns->loop) + dns->timeout_ms;
                        fifo_append(dns, p);
                        return;
                }
                dns->st.dropped++;
                p->upstream = (p->upstream + 1) % dns->n_upstreams;
        }
        fail_query(dns, p);
}

static void on_timer(uv_timer_t *t) {
        lg_dns *dns = t->data;
        uint64_t now = uv_now(dns->loop);
        while (dns->head && dns->head->deadline <= now) {
                struct pending *p = dns->head;
                dns->st.timeouts++;
                p->upstream = (p->upstream + 1) % dns->n_upstreams;
                try_upstream(dns, p);
        }
        arm_timer(dns);
}

/* ---- datagrams ---------------------------------------------------------- */

/* End of the (single) question of m, or 0 when it is malformed. Names in
 * a query carry no compression pointers (nothing precedes them to point
 * at), so any label with the top bits set is refused. */
static size_t question_end(const uint8_t *m, size_t len) {
        size_t o = HDR, name = 0;
        for (;;) {
                if (o >= len)
                        return 0;
                uint8_t l = m[o];
                name += (size_t) l + 1;
                if ((l & 0xc0) || name > 255)
                        return 0;
                o += (size_t) l + 1;
                if (l == 0)
                        break;
        }
        return o + 4 <= len ? o + 4 : 0;
}

static unsigned u16(const uint8_t *p) { return (unsigned) p[0] << 8 | p[1]; }

static size_t plausible_query(const uint8_t *m, size_t len) {
        if (len < HDR + 5 || len > LG_DNS_QUERY_MAX)
                return 0;
        if ((m[2] & 0x80) || ((m[2] >> 3) & 0x0f) != 0 || (m[2] & 0x02))  /* QR, opcode, TC */
                return 0;
        if (u16(m + 4) != 1 || u16(m + 6) != 0 || u16(m + 8) != 0 || u16(m + 10) > 1)
                return 0;
        size_t qend = question_end(m, len);
        if (!qend)
                return 0;
        /* Nothing but an OPT record (at least 11 bytes) may follow. */
        if (u16(m + 10) == 0 ? qend != len : len - qend < 11)
                return 0;
        return qend;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        (void) suggested;
        lg_dns *dns = h->data;
        *buf = uv_buf_init((char *) dns->buf, sizeof(dns->buf));
}

static void on_query(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from, unsigned flags) {
        lg_dns *dns = h->data;
        if (nread == 0 && !from)
                return;                    /* nothing more to read */
        const uint8_t *m = (const uint8_t *) buf->base;
        size_t qend = nread > 0 && !(flags & UV_UDP_PARTIAL) && from ? plausible_query(m, (size_t) nread) : 0;
        if (!qend) {
                dns->st.dropped++;
                return;
        }
        if (dns->st.pending >= dns->max_pending || dns->n_free == 0) {
                dns->st.full++;
                return;
        }
        uint8_t *copy = malloc((size_t) nread);
        if (!copy) {
                dns->st.dropped++;
                return;
        }
        memcpy(copy, m, (size_t) nread);
        uint16_t id;
        do
                id = random16(dns);
        while (dns->by_id[id]);
        unsigned idx = dns->free_slots[--dns->n_free];
        struct pending *p = &dns->slots[idx];
        *p = (struct pending){
                .used = true, .up_id = id, .client_id = (uint16_t) u16(m), .upstream = dns->preferred,
                .query = copy, .len = (size_t) nread, .qend = qend,
        };
        memcpy(&p->client, from, from->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
        copy[0] = (uint8_t) (id >> 8);
        copy[1] = (uint8_t) id;
        dns->by_id[id] = (uint16_t) (idx + 1);
        dns->st.pending++;
        dns->st.queries++;
        fifo_append(dns, p);
        try_upstream(dns, p);
        arm_timer(dns);
}

static void on_answer(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from, unsigned flags) {
        lg_dns *dns = h->data;
        if (nread == 0 && !from)
                return;
        uint8_t *m = (uint8_t *) buf->base;
        size_t len = nread > 0 ? (size_t) nread : 0;
        struct pending *p = NULL;
        if (len >= HDR && from && !(flags & UV_UDP_PARTIAL) && (m[2] & 0x80)) {
                unsigned slot = dns->by_id[u16(m)];
                p = slot ? &dns->slots[slot - 1] : NULL;
        }
        /* From the upstream asked, echoing the question asked. */
        if (!p || !same_addr(&dns->upstreams[p->upstream], from) || u16(m + 4) != 1 || len < p->qend ||
            memcmp(m + HDR, p->query + HDR, p->qend - HDR) != 0) {
                dns->st.dropped++;
                return;
        }
        m[0] = (uint8_t) (p->client_id >> 8);
        m[1] = (uint8_t) p->client_id;
        if (send_to(&dns->listen, m, len, (struct sockaddr *) &p->client) < 0) {
                dns->st.dropped++;
        } else {
                dns->st.answers++;
                dns->preferred = p->upstream;
        }
        release(dns, p);
        arm_timer(dns);
}

/* ---- TCP ---------------------------------------------------------------- *
 * Clients retry truncated answers over TCP (RFC 7766): messages with a
 * two-byte length. Each client connection handles one query at a time
 * (reading stops while it is in flight), each over a connection of its
 * own to an upstream, so the ID stays the client's. One timer per client:
 * the idle limit while it reads, the upstream try's timeout while a query
 * is in flight. */

struct tcp_try {
        struct tcp_conn *conn;        /* NULL once abandoned: only closing remains */
        uv_tcp_t h;
        uv_connect_t connect;
        uv_write_t write;
        uint8_t out[2 + LG_DNS_QUERY_MAX];
        uint8_t lenbuf[2];
        uint8_t *ans;                 /* the answer's length bytes, then the answer */
        size_t got, need;             /* of the answer, length bytes included */
};

struct tcp_conn {
        lg_dns *dns;
        uv_tcp_t h;
        uv_timer_t timer;
        unsigned handles;
        bool closing, reading;
        uint8_t in[2 + LG_DNS_QUERY_MAX];
        size_t in_len;
        struct tcp_try *try;
        size_t qlen, qend;            /* the query in flight, at in + 2 */
        unsigned upstream, tries;
        struct tcp_conn *prev, *next;
};

struct tcp_write {
        uv_write_t req;
        uint8_t data[];
};

static void try_closed(uv_handle_t *h) {
        struct tcp_try *t = h->data;
        free(t->ans);
        free(t);
}

static void try_abandon(struct tcp_try *t) {
        t->conn->try = NULL;
        t->conn = NULL;
        uv_close((uv_handle_t *) &t->h, try_closed);
}

static void conn_closed(uv_handle_t *h) {
        struct tcp_conn *c = h->data;
        if (--c->handles == 0)
                free(c);
}

static void conn_close(struct tcp_conn *c) {
        if (c->closing)
                return;
        c->closing = true;
        if (c->try)
                try_abandon(c->try);
        if (c->prev)
                c->prev->next = c->next;
        else
                c->dns->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->dns->n_conns--;
        uv_close((uv_handle_t *) &c->h, conn_closed);
        uv_close((uv_handle_t *) &c->timer, conn_closed);
}

static void on_conn_timer(uv_timer_t *tm);
static void conn_next_query(struct tcp_conn *c);

static void written(uv_write_t *req, int status) {
        (void) status;
        free(req);
}

/* Send len bytes of msg to the client, with the length before them. */
static void conn_reply(struct tcp_conn *c, const uint8_t *msg, size_t len) {
        struct tcp_write *w = malloc(sizeof(*w) + 2 + len);
        if (!w) {
                c->dns->st.dropped++;
                conn_close(c);
                return;
        }
        w->data[0] = (uint8_t) (len >> 8);
        w->data[1] = (uint8_t) len;
        memcpy(w->data + 2, msg, len);
        uv_buf_t b = uv_buf_init((char *) w->data, (unsigned) (2 + len));
        if (uv_write(&w->req, (uv_stream_t *) &c->h, &b, 1, written) < 0) {
                free(w);
                c->dns->st.dropped++;
                conn_close(c);
        }
}

/* The query at c->in + 2 is answered (or failed): drop it, read on. */
static void conn_done(struct tcp_conn *c) {
        size_t used = 2 + c->qlen;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        c->qlen = 0;
        conn_next_query(c);
}

static void tcp_try_upstream(struct tcp_conn *c);

static void try_failed(struct tcp_try *t) {
        struct tcp_conn *c = t->conn;
        try_abandon(t);
        c->upstream = (c->upstream + 1) % c->dns->n_upstreams;
        tcp_try_upstream(c);
}

static void try_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        (void) suggested;
        struct tcp_try *t = h->data;
        if (t->got < 2)
                *buf = uv_buf_init((char *) t->lenbuf + t->got, (unsigned) (2 - t->got));
        else
                *buf = uv_buf_init((char *) t->ans + t->got, (unsigned) (t->need - t->got));
}

static void try_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
        (void) buf;
        struct tcp_try *t = h->data;
        if (!t->conn || nread == 0)
                return;
        if (nread < 0) {
                try_failed(t);
                return;
        }
        t->got += (size_t) nread;
        if (t->got == 2 && !t->ans) {
                t->need = 2 + ((size_t) t->lenbuf[0] << 8 | t->lenbuf[1]);
                t->ans = t->need >= 2 + HDR ? malloc(t->need) : NULL;
                if (!t->ans) {
                        t->conn->dns->st.dropped++;
                        try_failed(t);
                        return;
                }
                memcpy(t->ans, t->lenbuf, 2);
        }
        if (!t->ans || t->got < t->need)
                return;
        struct tcp_conn *c = t->conn;
        lg_dns *dns = c->dns;
        const uint8_t *a = t->ans + 2, *q = c->in + 2;
        size_t alen = t->need - 2;
        if (!(a[2] & 0x80) || memcmp(a, q, 2) != 0 || u16(a + 4) != 1 || alen < c->qend ||
            memcmp(a + HDR, q + HDR, c->qend - HDR) != 0) {
                dns->st.dropped++;
                try_failed(t);
                return;
        }
        dns->st.answers++;
        dns->preferred = c->upstream;
        conn_reply(c, a, alen);
        if (c->closing)
                return;
        try_abandon(t);
        conn_done(c);
}

static void try_written(uv_write_t *req, int status) {
        struct tcp_try *t = req->data;
        if (status < 0 && t->conn)
                try_failed(t);
}

static void try_connected(uv_connect_t *req, int status) {
        struct tcp_try *t = req->data;
        if (!t->conn)
                return;
        if (status < 0) {
                try_failed(t);
                return;
        }
        uv_buf_t b = uv_buf_init((char *) t->out, (unsigned) (2 + t->conn->qlen));
        t->write.data = t;
        if (uv_read_start((uv_stream_t *) &t->h, try_alloc, try_read) < 0 ||
            uv_write(&t->write, (uv_stream_t *) &t->h, &b, 1, try_written) < 0)
                try_failed(t);
}

static void tcp_try_upstream(struct tcp_conn *c) {
        lg_dns *dns = c->dns;
        while (c->tries < dns->n_upstreams) {
                c->tries++;
                struct tcp_try *t = calloc(1, sizeof(*t));
                if (!t)
                        break;
                t->conn = c;
                t->h.data = t;
                t->connect.data = t;
                t->out[0] = (uint8_t) (c->qlen >> 8);
                t->out[1] = (uint8_t) c->qlen;
                memcpy(t->out + 2, c->in + 2, c->qlen);
                if (uv_tcp_init(dns->loop, &t->h) < 0) {
                        free(t);
                        break;
                }
                c->try = t;
                if (uv_tcp_connect(&t->connect, &t->h, (const struct sockaddr *) &dns->upstreams[c->upstream],
                                   try_connected) < 0) {
                        dns->st.dropped++;
                        try_abandon(t);
                        c->upstream = (c->upstream + 1) % dns->n_upstreams;
                        continue;
                }
                uv_timer_start(&c->timer, on_conn_timer, dns->timeout_ms, 0);
                return;
        }
        /* SERVFAIL, as over UDP. */
        uint8_t m[LG_DNS_QUERY_MAX];
        memcpy(m, c->in + 2, c->qend);
        m[2] = 0x80 | (m[2] & 0x01);
        m[3] = 0x80 | 2;
        memset(m + 6, 0, 6);
        dns->st.failed++;
        conn_reply(c, m, c->qend);
        if (!c->closing)
                conn_done(c);
}

static void on_conn_timer(uv_timer_t *tm) {
        struct tcp_conn *c = tm->data;
        if (!c->try) {
                conn_close(c);         /* idle, or a query that never completed */
                return;
        }
        c->dns->st.timeouts++;
        try_failed(c->try);
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        (void) suggested;
        struct tcp_conn *c = h->data;
        *buf = uv_buf_init((char *) c->in + c->in_len, (unsigned) (sizeof(c->in) - c->in_len));
}

static void conn_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
        (void) buf;
        struct tcp_conn *c = h->data;
        if (nread < 0) {
                conn_close(c);
                return;
        }
        c->in_len += (size_t) nread;
        conn_next_query(c);
}

/* Start the next complete query in c->in, or read on for it. The idle
 * timer runs from the end of the previous query (or the connection), not
 * from the last byte: a client trickling a query byte by byte is closed
 * as well. */
static void conn_next_query(struct tcp_conn *c) {
        lg_dns *dns = c->dns;
        /* A client that sends queries and does not read the answers. */
        if (uv_stream_get_write_queue_size((uv_stream_t *) &c->h) > LG_DNS_TCP_UNREAD_MAX) {
                dns->st.dropped++;
                conn_close(c);
                return;
        }
        if (c->in_len >= 2) {
                size_t len = u16(c->in);
                size_t qend = len <= LG_DNS_QUERY_MAX && c->in_len >= 2 + len ? plausible_query(c->in + 2, len) : 0;
                if (len > LG_DNS_QUERY_MAX || (c->in_len >= 2 + len && !qend)) {
                        /* Framing lost or hostile: nothing more from it makes sense. */
                        dns->st.dropped++;
                        conn_close(c);
                        return;
                }
                if (qend) {
                        uv_read_stop((uv_stream_t *) &c->h);
                        c->reading = false;
                        dns->st.queries++;
                        c->qlen = len;
                        c->qend = qend;
                        c->tries = 0;
                        c->upstream = dns->preferred;
                        tcp_try_upstream(c);
                        return;
                }
        }
        if (c->reading)
                return;
        if (uv_read_start((uv_stream_t *) &c->h, conn_alloc, conn_read) < 0) {
                conn_close(c);
                return;
        }
        c->reading = true;
        uv_timer_start(&c->timer, on_conn_timer, LG_DNS_TCP_IDLE_MS, 0);
}

static void on_tcp_connection(uv_stream_t *server, int status) {
        lg_dns *dns = server->data;
        if (status < 0)
                return;
        struct tcp_conn *c = calloc(1, sizeof(*c));
        if (!c || uv_tcp_init(dns->loop, &c->h) < 0) {
                free(c);
                return;
        }
        c->dns = dns;
        c->h.data = c;
        c->timer.data = c;
        c->handles = 2;
        uv_timer_init(dns->loop, &c->timer);
        c->next = dns->conns;
        if (dns->conns)
                dns->conns->prev = c;
        dns->conns = c;
        dns->n_conns++;
        if (uv_accept(server, (uv_stream_t *) &c->h) < 0) {
                conn_close(c);
                return;
        }
        if (dns->n_conns > LG_DNS_TCP_CONNS_MAX) {
                dns->st.full++;
                conn_close(c);
                return;
        }
        conn_next_query(c);
}

static int bound_socket(int family, int type, const struct sockaddr_storage *a) {
        _cleanup_close_ int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0 || (type == SOCK_STREAM && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) ||
            (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
            bind(fd, (const struct sockaddr *) a,
                 family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) < 0)
                return -errno;
        return TAKE_FD(fd);
}

/* A UDP and a TCP socket bound to the same address and port. Port 0 (tests):
 * the port UDP gets may be taken in TCP's space; then another. Plain
 * sockets, so that a pair that does not fit is closed at once, not through
 * the loop. */
static int bind_pair(struct sockaddr_storage *self, int *udp, int *tcp) {
        in_port_t *port = self->ss_family == AF_INET ? &((struct sockaddr_in *) self)->sin_port
                                                     : &((struct sockaddr_in6 *) self)->sin6_port;
        bool any_port = *port == 0;
        for (int attempt = 0;; attempt++) {
                _cleanup_close_ int u = bound_socket(self->ss_family, SOCK_DGRAM, self);
                if (u < 0)
                        return u;
                if (any_port) {
                        struct sockaddr_storage got;
                        socklen_t len = sizeof(got);
                        if (getsockname(u, (struct sockaddr *) &got, &len) < 0)
                                return -errno;
                        *port = got.ss_family == AF_INET ? ((struct sockaddr_in *) &got)->sin_port
                                                         : ((struct sockaddr_in6 *) &got)->sin6_port;
                }
                int t = bound_socket(self->ss_family, SOCK_STREAM, self);
                if (t >= 0) {
                        *udp = TAKE_FD(u);
                        *tcp = t;
                        return 0;
                }
                if (t != -EADDRINUSE || !any_port || attempt == 16)
                        return t;
                *port = 0;
        }
}

/* bind_pair, waiting out a port held for a moment: after legiond is
 * killed, a child its thread pool was cloning (a sandbox's, before its
 * first step closes every fd it does not need: sandbox.c child_main) holds
 * copies of all its sockets until it runs, which on a loaded machine can
 * outlast the next legiond's start; so EADDRINUSE is tried again for up
 * to 2 s before it is the answer. At start only, before the loop runs. */
static int bind_pair_patient(struct sockaddr_storage *self, int *udp, int *tcp) {
        int r = 0;
        for (int i = 0; i < 100; i++) {
                if ((r = bind_pair(self, udp, tcp)) != -EADDRINUSE)
                        return r;
                nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
        }
        return r;
}

/* ---- life cycle --------------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
        lg_dns *dns = h->data;
        if (--dns->open_handles > 0)
                return;
        free(dns->slots);
        free(dns->free_slots);
        free(dns);
}

void lg_dns_free(lg_dns *dns) {
        if (!dns || dns->freeing)
                return;
        dns->freeing = true;
        while (dns->head)
                release(dns, dns->head);
        while (dns->conns)
                conn_close(dns->conns);
        uv_handle_t *hs[] = {(uv_handle_t *) &dns->listen, (uv_handle_t *) &dns->up4, (uv_handle_t *) &dns->up6,
                             (uv_handle_t *) &dns->timer, (uv_handle_t *) &dns->tcp};
        bool open[] = {true, dns->has_up4, dns->has_up6, true, dns->has_tcp};
        /* Count first: a close callback must not see zero early. */
        dns->open_handles = 0;
        for (size_t i = 0; i < ARRAY_SIZE(hs); i++)
                dns->open_handles += open[i];
        for (size_t i = 0; i < ARRAY_SIZE(hs); i++)
                if (open[i])
                        uv_close(hs[i], on_closed);
}

/* *opened: the handle is initialised (lg_dns_free must close it). */
static int open_upstream_socket(lg_dns *dns, uv_udp_t *sock, int family, bool *opened, struct lg_error *err) {
        int r = uv_udp_init_ex(dns->loop, sock, (unsigned) family);
        if (r < 0)
                return lg_error_set(err, -r, "DNS upstream socket");
        *opened = true;
        sock->data = dns;
        struct sockaddr_storage any;
        parse_ip(family == AF_INET ? "0.0.0.0" : "::", 0, &any);
        r = uv_udp_bind(sock, (struct sockaddr *) &any, family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
        if (r == 0)
                r = uv_udp_recv_start(sock, on_alloc, on_answer);
        if (r < 0)
                return lg_error_set(err, -r, "DNS upstream socket");
        return 0;
}

int lg_dns_new(uv_loop_t *loop, const char *listen_ip, uint16_t port, const char *const *upstreams,
               lg_dns **ret, struct lg_error *err) {
        struct sockaddr_storage self;
        if (!listen_ip || parse_ip(listen_ip, port, &self) < 0)
                return lg_error_setm(err, EINVAL, "DNS listen address `%.64s` is not an IP address",
                                     listen_ip ? listen_ip : "");
        char from_conf[LG_DNS_UPSTREAMS_MAX][LG_DNS_ADDR_MAX];
        const char *list[LG_DNS_UPSTREAMS_MAX + 1] = {0};
        size_t n = 0;
        if (!upstreams) {
                int r = lg_dns_resolv_conf(NULL, listen_ip, port, from_conf, LG_DNS_UPSTREAMS_MAX, err);
                if (r < 0)
                        return r;
                for (n = 0; n < (size_t) r; n++)
                        list[n] = from_conf[n];
                upstreams = list;
        }
        for (n = 0; upstreams[n]; n++)
                ;
        if (n == 0 || n > LG_DNS_UPSTREAMS_MAX)
                return lg_error_setm(err, EINVAL, "DNS: %zu upstreams (1 to %d)", n, LG_DNS_UPSTREAMS_MAX);

        lg_dns *dns = calloc(1, sizeof(*dns));
        if (!dns)
                return lg_error_set(err, ENOMEM, "DNS forwarder");
        dns->loop = loop;
        dns->timeout_ms = LG_DNS_TIMEOUT_MS;
        dns->max_pending = LG_DNS_PENDING_MAX;
        for (size_t i = 0; i < n; i++) {
                struct sockaddr_storage *a = &dns->upstreams[i];
                if (parse_upstream(upstreams[i], a) < 0 || is_unspecified(a) ||
                    same_addr(&self, (struct sockaddr *) a)) {
                        free(dns);
                        return lg_error_setm(err, EINVAL, "DNS upstream `%.64s`: not IP[:PORT], or this forwarder",
                                             upstreams[i]);
                }
                dns->has_up4 |= a->ss_family == AF_INET;
                dns->has_up6 |= a->ss_family == AF_INET6;
        }
        dns->n_upstreams = (unsigned) n;
        dns->slots = calloc(LG_DNS_PENDING_MAX, sizeof(*dns->slots));
        dns->free_slots = calloc(LG_DNS_PENDING_MAX, sizeof(*dns->free_slots));
        if (!dns->slots || !dns->free_slots) {
                free(dns->slots);
                free(dns->free_slots);
                free(dns);
                return lg_error_set(err, ENOMEM, "DNS forwarder");
        }
        for (unsigned i = 0; i < LG_DNS_PENDING_MAX; i++)
                dns->free_slots[i] = LG_DNS_PENDING_MAX - 1 - i;
        dns->n_free = LG_DNS_PENDING_MAX;

        /* From here lg_dns_free cleans up: it closes what was opened. */
        bool up4 = dns->has_up4, up6 = dns->has_up6;
        dns->has_up4 = dns->has_up6 = false;
        uv_timer_init(loop, &dns->timer);
        dns->timer.data = dns;
        int r = uv_udp_init(loop, &dns->listen);
        if (r < 0) {
                /* Nothing to close but the timer. */
                dns->freeing = true;
                dns->open_handles = 1;
                uv_close((uv_handle_t *) &dns->timer, on_closed);
                return lg_error_set(err, -r, "DNS listen socket");
        }
        dns->listen.data = dns;
        dns->tcp.data = dns;
        int ufd = -1, tfd = -1;
        r = uv_tcp_init(loop, &dns->tcp);
        dns->has_tcp = r == 0;
        if (r < 0) {
                r = lg_error_set(err, -r, "DNS TCP socket");
        } else if ((r = bind_pair_patient(&self, &ufd, &tfd)) < 0) {
                r = lg_error_set(err, -r, "bind DNS forwarder to %s port %u", listen_ip, port);
        } else {
                if ((r = uv_udp_open(&dns->listen, ufd)) < 0)
                        close(ufd);
                int r2 = uv_tcp_open(&dns->tcp, tfd);
                if (r2 < 0)
                        close(tfd);
                if (r == 0)
                        r = r2;
                if (r == 0)
                        r = uv_udp_recv_start(&dns->listen, on_alloc, on_query);
                if (r == 0)
                        r = uv_listen((uv_stream_t *) &dns->tcp, 128, on_tcp_connection);
                if (r < 0)
                        r = lg_error_set(err, -r, "DNS listen sockets");
        }
        if (r == 0 && up4)
                r = open_upstream_socket(dns, &dns->up4, AF_INET, &dns->has_up4, err);
        if (r == 0 && up6)
                r = open_upstream_socket(dns, &dns->up6, AF_INET6, &dns->has_up6, err);
        if (r < 0) {
                lg_dns_free(dns);
                return r;
        }
        *ret = dns;
        return 0;
}

int lg_dns_set_limits(lg_dns *dns, unsigned timeout_ms, unsigned max_pending, struct lg_error *err) {
        if (timeout_ms > 60000 || max_pending > LG_DNS_PENDING_MAX)
                return lg_error_setm(err, EINVAL, "DNS limits: timeout 1..60000 ms, pending 1..%d",
                                     LG_DNS_PENDING_MAX);
        if (timeout_ms)
                dns->timeout_ms = timeout_ms;
        if (max_pending)
                dns->max_pending = max_pending;
        return 0;
}

int lg_dns_address(const lg_dns *dns, char *ip, size_t ip_size, uint16_t *port) {
        struct sockaddr_storage a;
        int alen = sizeof(a);
        int r = uv_udp_getsockname(&dns->listen, (struct sockaddr *) &a, &alen);
        if (r < 0)
                return r;
        if (a.ss_family == AF_INET) {
                r = uv_ip4_name((struct sockaddr_in *) &a, ip, ip_size);
                *port = ntohs(((struct sockaddr_in *) &a)->sin_port);
        } else {
                r = uv_ip6_name((struct sockaddr_in6 *) &a, ip, ip_size);
                *port = ntohs(((struct sockaddr_in6 *) &a)->sin6_port);
        }
        return r;
}

void lg_dns_stats(const lg_dns *dns, struct lg_dns_stats *out) {
        *out = dns->st;
}
