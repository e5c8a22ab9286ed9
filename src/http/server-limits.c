/* Who may connect to the HTTP server, so that no one client can take the
 * server from the others (http.h, max_connections*):
 *   - at most max_connections_per_addr connections at once from one client
 *     address (an IPv4 address, an IPv6 /64): 429 beyond it. The counts are
 *     in a small hash table keyed with a random SipHash key, so that nobody
 *     can line addresses up on one probe chain;
 *   - at most max_connections in all. At the limit a new connection takes
 *     the place of the connection that never authenticated and has waited
 *     longest without a request in flight (nginx likewise closes idle
 *     keep-alive connections when it runs out), else 503. Those candidates
 *     are kept on one list (anon_*), so finding one costs nothing.
 * The shorter idle timeout of unauthenticated connections is in server.c's
 * timers. */
#include <limits.h>
#include <stdarg.h>
#include <sys/random.h>

#include "http/server-internal.h"

struct peer_slot {
        struct peer_addr a;
        unsigned n;
};

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* c's peer as counted: IPv4 as ::ffff:a.b.c.d, also when it came that way
 * on a dual-stack listener; IPv6 by its /64, since one client is usually
 * given a whole /64 and could otherwise open its share again from each of
 * its addresses. */
static int peer_addr_of(const struct lg_http_request *c, struct peer_addr *a) {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        int r = uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *) &ss, &len);
        if (r < 0)
                return r;
        memset(a, 0, sizeof(*a));
        if (ss.ss_family == AF_INET) {
                memcpy(a->b, v4mapped, sizeof(v4mapped));
                memcpy(a->b + 12, &((const struct sockaddr_in *) &ss)->sin_addr, 4);
        } else if (ss.ss_family == AF_INET6) {
                const uint8_t *v6 = ((const struct sockaddr_in6 *) &ss)->sin6_addr.s6_addr;
                memcpy(a->b, v6, memcmp(v6, v4mapped, sizeof(v4mapped)) == 0 ? 16 : 8);
        } else {
                return -EAFNOSUPPORT;
        }
        return 0;
}

static void peer_addr_str(const struct peer_addr *a, char *buf, size_t cap) {
        char ip[INET6_ADDRSTRLEN];
        bool v4 = memcmp(a->b, v4mapped, sizeof(v4mapped)) == 0;
        if (!inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? a->b + 12 : a->b, ip, sizeof(ip)))
                snprintf(ip, sizeof(ip), "?");
        snprintf(buf, cap, "%s%s", ip, v4 ? "" : "/64");
}

/* ------------------------------------------------------------------------
 * The table
 * --------------------------------------------------------------------- */

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                              \
        do {                                                                  \
                v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32);     \
                v2 += v3, v3 = ROTL(v3, 16), v3 ^= v2;                        \
                v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0;                        \
                v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32);     \
        } while (0)

/* SipHash-1-3 of the 16 address bytes. */
static uint64_t peer_hash(const struct peer_table *t, const struct peer_addr *a) {
        uint64_t m[3];
        memcpy(m, a->b, 16);
        m[2] = (uint64_t) 16 << 56;
        uint64_t v0 = t->seed[0] ^ 0x736f6d6570736575ull, v1 = t->seed[1] ^ 0x646f72616e646f6dull;
        uint64_t v2 = t->seed[0] ^ 0x6c7967656e657261ull, v3 = t->seed[1] ^ 0x7465646279746573ull;
        for (int i = 0; i < 3; i++) {
                v3 ^= m[i];
                SIPROUND;
                v0 ^= m[i];
        }
        v2 ^= 0xff;
        SIPROUND;
        SIPROUND;
        SIPROUND;
        return v0 ^ v1 ^ v2 ^ v3;
}

/* The slot holding a, or the empty one where it would go. */
static struct peer_slot *peer_slot(const struct peer_table *t, const struct peer_addr *a) {
        size_t mask = t->cap - 1;
        for (size_t i = (size_t) peer_hash(t, a) & mask;; i = (i + 1) & mask) {
                struct peer_slot *s = &t->slots[i];
                if (s->n == 0 || memcmp(&s->a, a, sizeof(*a)) == 0)
                        return s;
        }
}

static unsigned peer_count(const struct peer_table *t, const struct peer_addr *a) {
        return t->cap ? peer_slot(t, a)->n : 0;
}

static int peer_grow(struct peer_table *t) {
        if (t->cap == 0 && getrandom(t->seed, sizeof(t->seed), GRND_NONBLOCK) != (ssize_t) sizeof(t->seed)) {
                t->seed[0] = uv_hrtime();
                t->seed[1] = (uint64_t) (uintptr_t) t ^ 0x9e3779b97f4a7c15ull;
        }
        struct peer_table n = *t;
        n.cap = t->cap ? t->cap * 2 : 64;
        n.slots = calloc(n.cap, sizeof(*n.slots));
        if (!n.slots)
                return -ENOMEM;
        for (size_t i = 0; i < t->cap; i++)
                if (t->slots[i].n)
                        *peer_slot(&n, &t->slots[i].a) = t->slots[i];
        free(t->slots);
        *t = n;
        return 0;
}

static int peer_add(struct peer_table *t, const struct peer_addr *a) {
        if ((t->used + 1) * 2 > t->cap) {
                int r = peer_grow(t);
                if (r < 0)
                        return r;
        }
        struct peer_slot *s = peer_slot(t, a);
        if (s->n++ == 0) {
                s->a = *a;
                t->used++;
        }
        return 0;
}

/* One fewer; an emptied slot is filled from behind (backward shift), so
 * that probe chains never hold holes. */
static void peer_remove(struct peer_table *t, const struct peer_addr *a) {
        struct peer_slot *s = peer_slot(t, a);
        if (s->n == 0 || --s->n > 0)
                return;
        t->used--;
        size_t mask = t->cap - 1, i = (size_t) (s - t->slots);
        for (size_t j = (i + 1) & mask; t->slots[j].n; j = (j + 1) & mask) {
                size_t home = (size_t) peer_hash(t, &t->slots[j].a) & mask;
                if (((j - home) & mask) < ((j - i) & mask))
                        continue; /* its home is after the hole: it stays */
                t->slots[i] = t->slots[j];
                t->slots[j].n = 0;
                i = j;
        }
}

void http_srv_peer_release(struct lg_http_request *c) {
        if (!c->peer_counted)
                return;
        c->peer_counted = false;
        peer_remove(&c->srv->peers, &c->peer);
}

void http_srv_peers_free(struct lg_http_server *srv) {
        free(srv->peers.slots);
        srv->peers.slots = NULL;
        srv->peers.cap = srv->peers.used = 0;
}

/* ------------------------------------------------------------------------
 * Making room
 * --------------------------------------------------------------------- */

void http_srv_anon_update(struct lg_http_request *c) {
        struct lg_http_server *srv = c->srv;
        bool want = !c->closing && !c->lingering && !c->authenticated && c->state != C_ACTIVE;
        if (want == c->in_anon)
                return;
        c->in_anon = want;
        if (want) {
                c->anon_next = NULL;
                c->anon_prev = srv->anon_tail;
                if (srv->anon_tail)
                        srv->anon_tail->anon_next = c;
                else
                        srv->anon_head = c;
                srv->anon_tail = c;
                return;
        }
        if (c->anon_prev)
                c->anon_prev->anon_next = c->anon_next;
        else
                srv->anon_head = c->anon_next;
        if (c->anon_next)
                c->anon_next->anon_prev = c->anon_prev;
        else
                srv->anon_tail = c->anon_prev;
        c->anon_prev = c->anon_next = NULL;
}

void lg_http_request_set_authenticated(struct lg_http_request *req) {
        req->authenticated = true;
        http_srv_anon_update(req);
}

/* Answer a connection just accepted and close it. Not on TLS listeners: the
 * client could not read a plain answer. */
static bool refuse(const struct listener *l, struct lg_http_request *c, int status, const char *code,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static bool refuse(const struct listener *l, struct lg_http_request *c, int status, const char *code,
                   const char *fmt, ...) {
        if (!l->tls_ctx) {
                char msg[192], body[384], resp[640];
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(msg, sizeof(msg), fmt, ap);
                va_end(ap);
                size_t blen = lg_http_error_json(body, sizeof(body), code, msg);
                int n = snprintf(resp, sizeof(resp),
                                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                                 "Retry-After: 1\r\nConnection: close\r\n\r\n%s",
                                 status, http_reason(status), blen, body);
                if (n > 0 && (size_t) n < sizeof(resp)) {
                        uv_buf_t b = uv_buf_init(resp, (unsigned) n);
                        (void) uv_try_write(&c->h.stream, &b, 1);
                }
        }
        http_srv_conn_close(c, 0);
        return false;
}

bool http_srv_admit(struct listener *l, struct lg_http_request *c) {
        struct lg_http_server *srv = l->srv;
        const struct lg_http_server_config *cfg = &srv->cfg;
        if (srv->closing)
                return refuse(l, c, 503, "Unavailable", "the server is shutting down");
        struct peer_addr a;
        bool count = !l->is_unix && cfg->max_connections_per_addr != UINT_MAX;
        if (count) {
                if (peer_addr_of(c, &a) < 0) {
                        http_srv_conn_close(c, 0); /* already gone */
                        return false;
                }
                unsigned n = peer_count(&srv->peers, &a);
                if (n >= cfg->max_connections_per_addr) {
                        char who[INET6_ADDRSTRLEN + 8];
                        peer_addr_str(&a, who, sizeof(who));
                        return refuse(l, c, 429, "TooManyConnections",
                                      "%s already has %u connections open, the limit per client address", who, n);
                }
        }
        /* The longest waiting unauthenticated connection makes room. */
        if (srv->nconns > cfg->max_connections) {
                if (!srv->anon_head)
                        return refuse(l, c, 503, "TooManyConnections",
                                      "the server has its limit of %u connections open, none idle before authenticating",
                                      cfg->max_connections);
                http_srv_conn_close(srv->anon_head, 0);
        }
        if (count) {
                if (peer_add(&srv->peers, &a) < 0)
                        return refuse(l, c, 503, "Unavailable", "out of memory");
                c->peer = a;
                c->peer_counted = true;
        }
        http_srv_anon_update(c);
        return true;
}
