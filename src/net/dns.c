/* DNS forwarder for sandboxes (dns.h says what it accepts and why): a UDP
 * listener on the gateway address, one upstream socket per address family,
 * a pending table indexed by the upstream ID, and one timer for the
 * oldest deadline (every try has the same timeout, so a FIFO of pending
 * queries is in deadline order). */
#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>
#include <sys/random.h>

#include "net/dns.h"

#define HDR 12
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

struct lg_dns {
        uv_loop_t *loop;
        uv_udp_t listen, up4, up6;
        uv_timer_t timer;
        bool has_up4, has_up6;
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
        uv_handle_t *hs[] = {(uv_handle_t *) &dns->listen, (uv_handle_t *) &dns->up4, (uv_handle_t *) &dns->up6,
                             (uv_handle_t *) &dns->timer};
        bool open[] = {true, dns->has_up4, dns->has_up6, true};
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
        int r = uv_udp_init_ex(loop, &dns->listen, self.ss_family);
        if (r < 0) {
                /* Nothing to close but the timer. */
                dns->freeing = true;
                dns->open_handles = 1;
                uv_close((uv_handle_t *) &dns->timer, on_closed);
                return lg_error_set(err, -r, "DNS listen socket");
        }
        dns->listen.data = dns;
        r = uv_udp_bind(&dns->listen, (struct sockaddr *) &self, self.ss_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
        if (r < 0)
                r = lg_error_set(err, -r, "bind DNS forwarder to %s port %u", listen_ip, port);
        else if ((r = uv_udp_recv_start(&dns->listen, on_alloc, on_query)) < 0)
                r = lg_error_set(err, -r, "DNS listen socket");
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
