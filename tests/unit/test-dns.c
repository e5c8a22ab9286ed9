/* The DNS forwarder (src/net/dns.c) on a real loop against fake upstream
 * servers on loopback, all on ephemeral ports (unprivileged): answers
 * relayed with the client's ID, clashing IDs of concurrent clients, an
 * upstream that times out, hostile datagrams from both sides, the pending
 * table's bound, and the resolv.conf parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
#include <string.h>
#include <sys/wait.h>
#include <uv.h>

#include "net/dns.h"

#define MAXQ 16

struct upstream;

/* A TCP connection of the tests, either side: reads length-prefixed
 * messages into msgs. */
struct tconn {
        uv_tcp_t h;
        uv_connect_t connect;
        struct upstream *server;      /* a fake upstream's accepted connection */
        uint8_t buf[70000];
        size_t len;
        int got;                      /* messages complete */
        bool eof, connected;
        uint8_t msgs[MAXQ][600];
        size_t mlen[MAXQ];
};

/* A fake upstream: answers each query with an A record 192.0.2.<first
 * byte of the name's first label>, or holds them (hold) to answer later,
 * or never answers (silent). */
struct upstream {
        uv_udp_t sock;
        char addr[64];
        bool hold, silent, truncate, mangle;
        uv_tcp_t tcp;                 /* on the same port */
        struct tconn tc[4];
        int n_tc, tcp_got;
        int got;
        uint8_t q[MAXQ][512];
        size_t qlen[MAXQ];
        struct sockaddr_storage from[MAXQ];
};

struct client {
        uv_udp_t sock;
        int got;
        uint8_t a[MAXQ][512];
        size_t alen[MAXQ];
};

static uv_loop_t loop;
static lg_dns *dns;
static struct sockaddr_in fwd;
static uint8_t rbuf[65536];

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
        (void) h, (void) s;
        *b = uv_buf_init((char *) rbuf, sizeof(rbuf));
}

static size_t make_answer(const uint8_t *q, size_t len, uint8_t *out) {
        memcpy(out, q, len);
        out[2] |= 0x80;
        out[3] = 0x80;
        if (out[2] & 0x02)
                return len;                          /* truncated: no records */
        out[7] = 1;                                  /* one answer */
        uint8_t rr[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, q[13]};
        memcpy(out + len, rr, sizeof(rr));
        return len + sizeof(rr);
}

static void send_raw(uv_udp_t *s, const void *data, size_t len, const struct sockaddr *to) {
        uv_buf_t b = uv_buf_init((char *) data, (unsigned) len);
        assert_int_equal(uv_udp_try_send(s, &b, 1, to), (int) len);
}

static void answer(struct upstream *u, int i) {
        uint8_t out[600];
        if (u->truncate)
                u->q[i][2] |= 0x02;
        size_t n = make_answer(u->q[i], u->qlen[i], out);
        send_raw(&u->sock, out, n, (struct sockaddr *) &u->from[i]);
}

static void on_upstream(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from, unsigned fl) {
        (void) fl;
        struct upstream *u = h->data;
        if (n <= 0 || !from)
                return;
        assert_true(u->got < MAXQ && n <= 512);
        memcpy(u->q[u->got], b->base, (size_t) n);
        u->qlen[u->got] = (size_t) n;
        memcpy(&u->from[u->got], from, sizeof(struct sockaddr_in));
        if (!u->hold && !u->silent)
                answer(u, u->got);
        u->got++;
}

static void on_client(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *from, unsigned fl) {
        (void) fl;
        struct client *c = h->data;
        if (n <= 0 || !from)
                return;
        assert_true(c->got < MAXQ && n <= 512);
        memcpy(c->a[c->got], b->base, (size_t) n);
        c->alen[c->got++] = (size_t) n;
}

static void bind_any(uv_udp_t *s, void *data, uv_udp_recv_cb cb) {
        struct sockaddr_in a;
        uv_ip4_addr("127.0.0.1", 0, &a);
        assert_int_equal(uv_udp_init(&loop, s), 0);
        s->data = data;
        assert_int_equal(uv_udp_bind(s, (struct sockaddr *) &a, 0), 0);
        assert_int_equal(uv_udp_recv_start(s, on_alloc, cb), 0);
}

static void tconn_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
        (void) s;
        struct tconn *t = h->data;
        *b = uv_buf_init((char *) t->buf + t->len, (unsigned) (sizeof(t->buf) - t->len));
}

static void send_tcp(struct tconn *t, const uint8_t *msg, size_t len) {
        uint8_t m[2100];
        m[0] = (uint8_t) (len >> 8);
        m[1] = (uint8_t) len;
        memcpy(m + 2, msg, len);
        uv_buf_t b = uv_buf_init((char *) m, (unsigned) (len + 2));
        assert_int_equal(uv_try_write((uv_stream_t *) &t->h, &b, 1), (int) (len + 2));
}

static void tconn_read(uv_stream_t *h, ssize_t n, const uv_buf_t *b) {
        (void) b;
        struct tconn *t = h->data;
        if (n < 0) {
                t->eof = true;
                uv_read_stop(h);
                return;
        }
        t->len += (size_t) n;
        while (t->len >= 2 && t->len >= 2 + (size_t) (t->buf[0] << 8 | t->buf[1])) {
                size_t ml = (size_t) (t->buf[0] << 8 | t->buf[1]);
                assert_true(t->got < MAXQ && ml <= 600);
                memcpy(t->msgs[t->got], t->buf + 2, ml);
                t->mlen[t->got++] = ml;
                memmove(t->buf, t->buf + 2 + ml, t->len - 2 - ml);
                t->len -= 2 + ml;
                struct upstream *u = t->server;
                if (u) {
                        u->tcp_got++;
                        if (!u->silent) {
                                uint8_t out[600];
                                size_t on = make_answer(t->msgs[t->got - 1], ml, out);
                                if (u->mangle)
                                        out[13] ^= 0x20;     /* another name */
                                send_tcp(t, out, on);
                        }
                }
        }
}

static void on_upstream_tcp(uv_stream_t *server, int status) {
        struct upstream *u = server->data;
        assert_int_equal(status, 0);
        assert_true(u->n_tc < 4);
        struct tconn *t = &u->tc[u->n_tc++];
        memset(t, 0, sizeof(*t));
        t->server = u;
        t->h.data = t;
        assert_int_equal(uv_tcp_init(&loop, &t->h), 0);
        assert_int_equal(uv_accept(server, (uv_stream_t *) &t->h), 0);
        assert_int_equal(uv_read_start((uv_stream_t *) &t->h, tconn_alloc, tconn_read), 0);
}

/* UDP and TCP on one loopback port: the port UDP gets may be taken in
 * TCP's space (the test's own connections use ephemeral ports), then
 * another. */
static void upstream_init(struct upstream *u) {
        memset(u, 0, sizeof(*u));
        struct sockaddr_in a;
        socklen_t alen = sizeof(a);
        int one = 1, ufd, tfd;
        do {
                uv_ip4_addr("127.0.0.1", 0, &a);
                ufd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                assert_true(ufd >= 0);
                assert_int_equal(bind(ufd, (struct sockaddr *) &a, sizeof(a)), 0);
                assert_int_equal(getsockname(ufd, (struct sockaddr *) &a, &alen), 0);
                tfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                assert_true(tfd >= 0);
                setsockopt(tfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(tfd, (struct sockaddr *) &a, sizeof(a)) < 0) {
                        assert_int_equal(errno, EADDRINUSE);
                        close(ufd);
                        close(tfd);
                        ufd = -1;
                }
        } while (ufd < 0);
        assert_int_equal(uv_udp_init(&loop, &u->sock), 0);
        u->sock.data = u;
        assert_int_equal(uv_udp_open(&u->sock, ufd), 0);
        assert_int_equal(uv_udp_recv_start(&u->sock, on_alloc, on_upstream), 0);
        assert_int_equal(uv_tcp_init(&loop, &u->tcp), 0);
        u->tcp.data = u;
        assert_int_equal(uv_tcp_open(&u->tcp, tfd), 0);
        assert_int_equal(uv_listen((uv_stream_t *) &u->tcp, 8, on_upstream_tcp), 0);
        snprintf(u->addr, sizeof(u->addr), "127.0.0.1:%u", ntohs(a.sin_port));
}

/* Stop the fake upstream's TCP side: connections to it are refused. */
static void upstream_no_tcp(struct upstream *u) {
        uv_close((uv_handle_t *) &u->tcp, NULL);
}

static void on_tconn_connected(uv_connect_t *req, int status) {
        struct tconn *t = req->data;
        assert_int_equal(status, 0);
        t->connected = true;
        assert_int_equal(uv_read_start((uv_stream_t *) &t->h, tconn_alloc, tconn_read), 0);
}

/* A TCP client of the forwarder, connected. */
static void tcp_client(struct tconn *t) {
        memset(t, 0, sizeof(*t));
        t->h.data = t;
        t->connect.data = t;
        assert_int_equal(uv_tcp_init(&loop, &t->h), 0);
        assert_int_equal(uv_tcp_connect(&t->connect, &t->h, (struct sockaddr *) &fwd, on_tconn_connected), 0);
        while (!t->connected)
                uv_run(&loop, UV_RUN_ONCE);
}

static void client_init(struct client *c) {
        memset(c, 0, sizeof(*c));
        bind_any(&c->sock, c, on_client);
}

/* Run the loop until *count reaches want; a stuck test fails after a
 * generous bound instead of hanging (not a measurement). */
static void run_until(const int *count, int want) {
        uint64_t end = uv_now(&loop) + 10000;
        while (*count < want) {
                assert_true(uv_now(&loop) < end);
                uv_run(&loop, UV_RUN_ONCE);
        }
}

static void start(const char *const *ups) {
        struct lg_error e = {0};
        int r = lg_dns_new(&loop, "127.0.0.1", 0, ups, &dns, &e);
        if (r < 0)
                fail_msg("lg_dns_new: %s", e.msg);
        char ip[64];
        uint16_t port;
        assert_int_equal(lg_dns_address(dns, ip, sizeof(ip), &port), 0);
        assert_string_equal(ip, "127.0.0.1");
        assert_true(port > 0);
        uv_ip4_addr(ip, port, &fwd);
}

/* A query for "<name>.example" type A with id. */
static size_t make_query(uint16_t id, const char *name, uint8_t *out) {
        uint8_t h[12] = {(uint8_t) (id >> 8), (uint8_t) id, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0};
        memcpy(out, h, 12);
        size_t o = 12, l = strlen(name);
        out[o++] = (uint8_t) l;
        memcpy(out + o, name, l);
        o += l;
        memcpy(out + o, "\x07" "example\0\0\x01\0\x01", 13);
        return o + 13;
}

static void query(struct client *c, uint16_t id, const char *name) {
        uint8_t q[300];
        size_t n = make_query(id, name, q);
        send_raw(&c->sock, q, n, (struct sockaddr *) &fwd);
}

static uint16_t id_of(const uint8_t *m) { return (uint16_t) (m[0] << 8 | m[1]); }

/* The answer is for name, with id, and carries 192.0.2.<name[0]>. */
static void assert_answer(const uint8_t *a, size_t len, uint16_t id, const char *name) {
        uint8_t q[300];
        size_t n = make_query(id, name, q);
        assert_int_equal(len, n + 16);
        assert_int_equal(id_of(a), id);
        assert_true(a[2] & 0x80);
        assert_memory_equal(a + 12, q + 12, n - 12);
        assert_int_equal(a[len - 1], (uint8_t) name[0]);
        assert_int_equal(a[len - 4], 192);
}

static void close_cb_walk(uv_handle_t *h, void *arg) {
        (void) arg;
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

static void teardown_loop(void) {
        lg_dns_free(dns);
        dns = NULL;
        uv_walk(&loop, close_cb_walk, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
}

static int setup(void **state) {
        (void) state;
        return uv_loop_init(&loop);
}

static int teardown(void **state) {
        (void) state;
        teardown_loop();
        return uv_loop_close(&loop) == 0 ? 0 : -1;
}

static void test_relay(void **state) {
        (void) state;
        static struct upstream u;
        static struct client c;
        upstream_init(&u);
        client_init(&c);
        const char *ups[] = {u.addr, NULL};
        start(ups);

        query(&c, 0x1234, "alpha");
        run_until(&c.got, 1);
        assert_answer(c.a[0], c.alen[0], 0x1234, "alpha");
        /* Upstream saw the same query under the forwarder's own ID. */
        assert_int_equal(u.got, 1);
        uint8_t q[300];
        size_t n = make_query(0x1234, "alpha", q);
        assert_int_equal(u.qlen[0], n);
        assert_memory_equal(u.q[0] + 2, q + 2, n - 2);

        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.queries, 1);
        assert_int_equal(st.answers, 1);
        assert_int_equal(st.dropped, 0);
        assert_int_equal(st.pending, 0);
}

/* Two clients with the same ID at once, answered in reverse order: each
 * gets its own answer under its own ID. */
static void test_clashing_ids(void **state) {
        (void) state;
        static struct upstream u;
        static struct client c1, c2;
        upstream_init(&u);
        u.hold = true;
        client_init(&c1);
        client_init(&c2);
        const char *ups[] = {u.addr, NULL};
        start(ups);

        query(&c1, 7, "one");
        query(&c2, 7, "two");
        query(&c1, 8, "three");
        run_until(&u.got, 3);
        /* Distinct IDs upstream, whatever the clients chose. */
        assert_int_not_equal(id_of(u.q[0]), id_of(u.q[1]));
        assert_int_not_equal(id_of(u.q[0]), id_of(u.q[2]));
        assert_int_not_equal(id_of(u.q[1]), id_of(u.q[2]));
        /* The upstream got them in the order sent (one socket each way). */
        for (int i = 2; i >= 0; i--)
                answer(&u, i);
        run_until(&c2.got, 1);
        run_until(&c1.got, 2);
        assert_answer(c2.a[0], c2.alen[0], 7, "two");
        assert_answer(c1.a[0], c1.alen[0], 8, "three");
        assert_answer(c1.a[1], c1.alen[1], 7, "one");

        /* An answer repeated (a duplicate upstream datagram) reaches nobody. */
        answer(&u, 0);
        static struct client probe;
        client_init(&probe);
        u.hold = false;
        query(&probe, 9, "four");
        run_until(&probe.got, 1);
        assert_int_equal(c1.got, 2);
        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.answers, 4);
        assert_int_equal(st.dropped, 1);
}

/* The first upstream never answers: the query goes to the next one after
 * the timeout, and later queries start at the one that answered. */
static void test_timeout_next_upstream(void **state) {
        (void) state;
        static struct upstream dead, live;
        static struct client c;
        upstream_init(&dead);
        dead.silent = true;
        upstream_init(&live);
        client_init(&c);
        const char *ups[] = {dead.addr, live.addr, NULL};
        start(ups);
        assert_int_equal(lg_dns_set_limits(dns, 50, 0, NULL), 0);

        query(&c, 0x4242, "bravo");
        run_until(&c.got, 1);
        assert_answer(c.a[0], c.alen[0], 0x4242, "bravo");
        assert_int_equal(dead.got, 1);
        assert_int_equal(live.got, 1);
        query(&c, 0x4243, "charlie");
        run_until(&c.got, 2);
        assert_answer(c.a[1], c.alen[1], 0x4243, "charlie");
        assert_int_equal(dead.got, 1);

        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.timeouts, 1);
        assert_int_equal(st.answers, 2);
        assert_int_equal(st.failed, 0);
}

/* Every upstream silent: SERVFAIL with the client's ID and question. */
static void test_all_upstreams_fail(void **state) {
        (void) state;
        static struct upstream a, b;
        static struct client c;
        upstream_init(&a);
        upstream_init(&b);
        a.silent = b.silent = true;
        client_init(&c);
        const char *ups[] = {a.addr, b.addr, NULL};
        start(ups);
        assert_int_equal(lg_dns_set_limits(dns, 30, 0, NULL), 0);

        query(&c, 0x0bad, "delta");
        run_until(&c.got, 1);
        uint8_t q[300];
        size_t n = make_query(0x0bad, "delta", q);
        assert_int_equal(c.alen[0], n);
        assert_int_equal(id_of(c.a[0]), 0x0bad);
        assert_int_equal(c.a[0][2], 0x81);      /* QR, RD */
        assert_int_equal(c.a[0][3] & 0x0f, 2);  /* SERVFAIL */
        assert_memory_equal(c.a[0] + 4, q + 4, n - 4);
        assert_int_equal(a.got, 1);
        assert_int_equal(b.got, 1);
        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.timeouts, 2);
        assert_int_equal(st.failed, 1);
        assert_int_equal(st.pending, 0);
}

/* Hostile datagrams from clients: dropped, counted, never forwarded,
 * never answered. Datagrams on one socket are handled in order, so once
 * the valid query behind them is answered, all were seen. */
static void test_garbage_dropped(void **state) {
        (void) state;
        static struct upstream u;
        static struct client c;
        upstream_init(&u);
        client_init(&c);
        const char *ups[] = {u.addr, NULL};
        start(ups);

        uint8_t q[2000];
        size_t n = make_query(1, "echo", q);
        struct {
                size_t off;   /* byte to change, or SIZE_MAX */
                uint8_t val;
                size_t len;   /* bytes to send */
        } bad[] = {
                {SIZE_MAX, 0, 5},          /* short */
                {SIZE_MAX, 0, 12},         /* header only */
                {SIZE_MAX, 0, n - 1},      /* question cut */
                {2, 0x81, n},              /* QR: an answer */
                {2, 0x29, n},              /* opcode UPDATE */
                {2, 0x03, n},              /* TC */
                {5, 2, n},                 /* two questions */
                {5, 0, n},                 /* none */
                {7, 1, n},                 /* an answer record */
                {9, 1, n},                 /* an authority record */
                {11, 1, n},                /* an additional record that is not there */
                {12, 0xc0, n},             /* a compression pointer */
                {12, 0x40, n},             /* an extended label type */
                {12, 63, n},               /* a label running past the end */
                {SIZE_MAX, 0, n + 3},      /* trailing bytes */
                {11, 1, 1500},             /* oversized (with room for an OPT record) */
        };
        memset(q + n, 0, sizeof(q) - n);
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                uint8_t m[2000];
                memcpy(m, q, sizeof(m));
                if (bad[i].off != SIZE_MAX)
                        m[bad[i].off] = bad[i].val;
                send_raw(&c.sock, m, bad[i].len, (struct sockaddr *) &fwd);
        }
        /* A name over 255 bytes: five labels of 63. */
        uint8_t big[400] = {0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
        size_t o = 12;
        for (int l = 0; l < 5; l++) {
                big[o++] = 63;
                memset(big + o, 'a', 63);
                o += 63;
        }
        big[o++] = 0;
        memcpy(big + o, "\0\x01\0\x01", 4);
        send_raw(&c.sock, big, o + 4, (struct sockaddr *) &fwd);
        /* An empty datagram. */
        send_raw(&c.sock, q, 0, (struct sockaddr *) &fwd);

        query(&c, 2, "foxtrot");
        run_until(&c.got, 1);
        assert_answer(c.a[0], c.alen[0], 2, "foxtrot");
        assert_int_equal(u.got, 1);
        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.dropped, ARRAY_SIZE(bad) + 2);
        assert_int_equal(st.queries, 1);

        /* A valid query with an EDNS OPT record passes. */
        uint8_t opt[] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
        n = make_query(3, "golf", q);
        q[11] = 1;
        memcpy(q + n, opt, sizeof(opt));
        send_raw(&c.sock, q, n + sizeof(opt), (struct sockaddr *) &fwd);
        run_until(&c.got, 2);
        assert_int_equal(id_of(c.a[1]), 3);
}

/* Hostile datagrams from upstream's side: from another address with the
 * right ID, and from the upstream with another question, are dropped; the
 * real answer still gets through, once. */
static void test_upstream_spoof_dropped(void **state) {
        (void) state;
        static struct upstream u, spoof;
        static struct client c;
        upstream_init(&u);
        u.hold = true;
        upstream_init(&spoof);
        client_init(&c);
        const char *ups[] = {u.addr, NULL};
        start(ups);

        query(&c, 5, "hotel");
        run_until(&u.got, 1);
        /* An answer with another address, from the wrong socket. */
        uint8_t out[600];
        size_t n = make_answer(u.q[0], u.qlen[0], out);
        out[n - 1] = 0xee;
        send_raw(&spoof.sock, out, n, (struct sockaddr *) &u.from[0]);
        /* From the right one, for another name. */
        uint8_t other[300];
        size_t on = make_query(id_of(u.q[0]), "india", other);
        n = make_answer(other, on, out);
        send_raw(&u.sock, out, n, (struct sockaddr *) &u.from[0]);
        /* Short and not an answer. */
        send_raw(&u.sock, u.q[0], 11, (struct sockaddr *) &u.from[0]);
        send_raw(&u.sock, u.q[0], u.qlen[0], (struct sockaddr *) &u.from[0]);
        answer(&u, 0);
        run_until(&c.got, 1);
        assert_answer(c.a[0], c.alen[0], 5, "hotel");

        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.dropped, 4);
        assert_int_equal(st.answers, 1);
}

/* The pending table is bounded: beyond it a query is dropped and counted,
 * the ones in flight stay. */
static void test_table_full(void **state) {
        (void) state;
        static struct upstream u;
        static struct client c;
        upstream_init(&u);
        u.hold = true;
        client_init(&c);
        const char *ups[] = {u.addr, NULL};
        start(ups);
        assert_int_equal(lg_dns_set_limits(dns, 0, 2, NULL), 0);

        query(&c, 1, "juliet");
        query(&c, 2, "kilo");
        query(&c, 3, "lima");
        /* Until each query is either forwarded or counted as refused. */
        struct lg_dns_stats st;
        for (lg_dns_stats(dns, &st); st.full + (uint64_t) u.got < 3; lg_dns_stats(dns, &st))
                uv_run(&loop, UV_RUN_ONCE);
        assert_int_equal(u.got, 2);
        assert_int_equal(st.full, 1);
        assert_int_equal(st.pending, 2);
        answer(&u, 0);
        answer(&u, 1);
        run_until(&c.got, 2);
        assert_answer(c.a[0], c.alen[0], 1, "juliet");
        assert_answer(c.a[1], c.alen[1], 2, "kilo");
        lg_dns_stats(dns, &st);
        assert_int_equal(st.pending, 0);
        assert_int_equal(u.got, 2);
}

/* A truncated answer over UDP is relayed as it is; the client's retry
 * over TCP gets the whole answer from the upstream's TCP side, also for
 * two queries sent back to back on one connection. */
static void test_tcp_retry(void **state) {
        (void) state;
        static struct upstream u;
        static struct client c;
        static struct tconn t;
        upstream_init(&u);
        u.truncate = true;
        client_init(&c);
        const char *ups[] = {u.addr, NULL};
        start(ups);

        query(&c, 0x5151, "mike");
        run_until(&c.got, 1);
        uint8_t q[300], q2[300];
        size_t n = make_query(0x5151, "mike", q);
        assert_int_equal(c.alen[0], n);
        assert_true(c.a[0][2] & 0x02);
        assert_int_equal(id_of(c.a[0]), 0x5151);

        tcp_client(&t);
        size_t n2 = make_query(0x5152, "november", q2);
        uint8_t both[700];
        both[0] = 0, both[1] = (uint8_t) n;
        memcpy(both + 2, q, n);
        both[2 + n] = 0, both[3 + n] = (uint8_t) n2;
        memcpy(both + 4 + n, q2, n2);
        uv_buf_t b = uv_buf_init((char *) both, (unsigned) (4 + n + n2));
        assert_int_equal(uv_try_write((uv_stream_t *) &t.h, &b, 1), (int) (4 + n + n2));
        run_until(&t.got, 2);
        assert_answer(t.msgs[0], t.mlen[0], 0x5151, "mike");
        assert_answer(t.msgs[1], t.mlen[1], 0x5152, "november");
        assert_int_equal(u.tcp_got, 2);

        /* A query in pieces, the loop running in between. */
        both[1] = (uint8_t) n2;
        memcpy(both + 2, q2, n2);
        size_t cut[] = {0, 1, 2, 9, n2 + 2};
        for (size_t i = 0; i + 1 < ARRAY_SIZE(cut); i++) {
                b = uv_buf_init((char *) both + cut[i], (unsigned) (cut[i + 1] - cut[i]));
                assert_int_equal(uv_try_write((uv_stream_t *) &t.h, &b, 1), (int) (cut[i + 1] - cut[i]));
                for (int k = 0; k < 5; k++)
                        uv_run(&loop, UV_RUN_NOWAIT);
        }
        run_until(&t.got, 3);
        assert_answer(t.msgs[2], t.mlen[2], 0x5152, "november");

        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.queries, 4);
        assert_int_equal(st.answers, 4);
        assert_int_equal(st.dropped, 0);
}

/* Over TCP: an upstream refusing connections and one that never answers
 * are passed over; all failing gives SERVFAIL. */
static void test_tcp_next_upstream(void **state) {
        (void) state;
        static struct upstream refusing, silent, live;
        static struct tconn t;
        upstream_init(&refusing);
        upstream_no_tcp(&refusing);
        upstream_init(&silent);
        silent.silent = true;
        upstream_init(&live);
        const char *ups[] = {refusing.addr, silent.addr, live.addr, NULL};
        start(ups);
        assert_int_equal(lg_dns_set_limits(dns, 50, 0, NULL), 0);

        tcp_client(&t);
        uint8_t q[300];
        size_t n = make_query(0x6161, "oscar", q);
        send_tcp(&t, q, n);
        run_until(&t.got, 1);
        assert_answer(t.msgs[0], t.mlen[0], 0x6161, "oscar");
        assert_int_equal(silent.tcp_got, 1);
        assert_int_equal(live.tcp_got, 1);
        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.timeouts, 1);
        assert_int_equal(st.answers, 1);

        /* live answered: it comes first now; make it silent too. */
        live.silent = true;
        n = make_query(0x6162, "papa", q);
        send_tcp(&t, q, n);
        run_until(&t.got, 2);
        assert_int_equal(t.mlen[1], n);
        assert_int_equal(id_of(t.msgs[1]), 0x6162);
        assert_int_equal(t.msgs[1][3] & 0x0f, 2);
        lg_dns_stats(dns, &st);
        assert_int_equal(st.failed, 1);
        assert_int_equal(st.timeouts, 3);
}

/* An upstream answering over TCP for another question: dropped, the next
 * upstream asked. */
static void test_tcp_wrong_answer(void **state) {
        (void) state;
        static struct upstream bad, live;
        static struct tconn t;
        upstream_init(&bad);
        bad.mangle = true;
        upstream_init(&live);
        const char *ups[] = {bad.addr, live.addr, NULL};
        start(ups);

        tcp_client(&t);
        uint8_t q[300];
        size_t n = make_query(0x7171, "romeo", q);
        send_tcp(&t, q, n);
        run_until(&t.got, 1);
        assert_answer(t.msgs[0], t.mlen[0], 0x7171, "romeo");
        assert_int_equal(bad.tcp_got, 1);
        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.dropped, 1);
        assert_int_equal(st.answers, 1);
}

/* Hostile TCP clients: a bad length or a malformed query closes the
 * connection, counted; nothing reaches the upstream. */
static void test_tcp_garbage(void **state) {
        (void) state;
        static struct upstream u;
        static struct tconn t[4];
        upstream_init(&u);
        const char *ups[] = {u.addr, NULL};
        start(ups);

        uint8_t q[300];
        size_t n = make_query(1, "quebec", q);
        const uint8_t zero[] = {0, 0}, huge[] = {0xff, 0xff}, big[] = {0x04, 0xd1};
        const struct { const uint8_t *data; size_t len; } bad[] = {
                {zero, 2}, {huge, 2}, {big, 2}, {q, n},   /* the last: the query's own bytes as a length */
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                tcp_client(&t[i]);
                uv_buf_t b = uv_buf_init((char *) bad[i].data, (unsigned) bad[i].len);
                assert_int_equal(uv_try_write((uv_stream_t *) &t[i].h, &b, 1), (int) bad[i].len);
                while (!t[i].eof)
                        uv_run(&loop, UV_RUN_ONCE);
                assert_int_equal(t[i].got, 0);
        }
        struct lg_dns_stats st;
        lg_dns_stats(dns, &st);
        assert_int_equal(st.dropped, ARRAY_SIZE(bad));
        assert_int_equal(st.queries, 0);
        assert_int_equal(u.tcp_got, 0);
        assert_int_equal(u.got, 0);
}

static void test_resolv_conf(void **state) {
        (void) state;
        char path[] = "/tmp/lg-resolv-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        const char *conf = "# a comment\n"
                           "search example\n"
                           "nameserver 192.0.2.53\n"
                           "nameserver fe80::1%eth0\n"
                           "nameserver bogus\n"
                           "nameserver\n"
                           "nameserver 0.0.0.0\n"
                           "nameserver 10.88.0.1\n"
                           "nameserver\t2001:db8::1   \n"
                           "options ndots:2\n"
                           "nameserver 198.51.100.9\n";
        assert_int_equal(write(fd, conf, strlen(conf)), (ssize_t) strlen(conf));
        close(fd);
        char out[LG_DNS_UPSTREAMS_MAX][LG_DNS_ADDR_MAX];
        struct lg_error e = {0};
        /* 10.88.0.1 is the forwarder itself: skipped. */
        int n = lg_dns_resolv_conf(path, "10.88.0.1", 53, out, LG_DNS_UPSTREAMS_MAX, &e);
        assert_int_equal(n, 3);
        assert_string_equal(out[0], "192.0.2.53");
        assert_string_equal(out[1], "[2001:db8::1]");
        assert_string_equal(out[2], "198.51.100.9");
        assert_int_equal(lg_dns_resolv_conf(path, NULL, 0, out, 2, &e), 2);
        assert_int_equal(lg_dns_resolv_conf(path, "10.88.0.1", 5353, out, LG_DNS_UPSTREAMS_MAX, &e), 4);

        /* What the parser returns is what lg_dns_new takes. */
        n = lg_dns_resolv_conf(path, NULL, 0, out, LG_DNS_UPSTREAMS_MAX, &e);
        const char *ups[LG_DNS_UPSTREAMS_MAX + 1] = {0};
        for (int i = 0; i < n; i++)
                ups[i] = out[i];
        start(ups);
        lg_dns_free(dns);
        dns = NULL;

        assert_int_equal(truncate(path, 0), 0);
        assert_int_equal(lg_dns_resolv_conf(path, NULL, 0, out, LG_DNS_UPSTREAMS_MAX, &e), -ENOENT);
        assert_non_null(strstr(e.msg, "no usable nameserver"));
        unlink(path);
        assert_int_equal(lg_dns_resolv_conf(path, NULL, 0, out, LG_DNS_UPSTREAMS_MAX, &e), -ENOENT);
}

static void test_bad_config(void **state) {
        (void) state;
        const char *bad[] = {"", "x", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:", "[::1", "[::1]x",
                             "[1.2.3.4]", "0.0.0.0", "256.1.1.1"};
        struct lg_error e = {0};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                const char *ups[] = {bad[i], NULL};
                assert_int_equal(lg_dns_new(&loop, "127.0.0.1", 0, ups, &dns, &e), -EINVAL);
        }
        const char *none[] = {NULL};
        assert_int_equal(lg_dns_new(&loop, "127.0.0.1", 0, none, &dns, &e), -EINVAL);
        const char *good[] = {"[::1]:5353", "::1", "127.0.0.1:5353", NULL};
        assert_int_equal(lg_dns_new(&loop, "not-an-ip", 0, good, &dns, &e), -EINVAL);
        /* The forwarder's own address. */
        const char *self[] = {"127.0.0.1:5399", NULL};
        assert_int_equal(lg_dns_new(&loop, "127.0.0.1", 5399, self, &dns, &e), -EINVAL);
        /* A port taken: the bind error, and nothing left behind. */
        static uv_udp_t taken;
        struct sockaddr_in a;
        uv_ip4_addr("127.0.0.1", 0, &a);
        assert_int_equal(uv_udp_init(&loop, &taken), 0);
        assert_int_equal(uv_udp_bind(&taken, (struct sockaddr *) &a, 0), 0);
        int alen = sizeof(a);
        assert_int_equal(uv_udp_getsockname(&taken, (struct sockaddr *) &a, &alen), 0);
        assert_int_equal(lg_dns_new(&loop, "127.0.0.1", ntohs(a.sin_port), good, &dns, &e), -EADDRINUSE);
        dns = NULL;
        /* A port a process holds for a moment (a sandbox child of a killed
         * legiond, cloned with copies of its sockets) is waited out.
         * The child holds the port in UDP and in TCP: a port free only in UDP
         * could be any other test's TCP connection for longer than the 2 s
         * waited (a CI failure: -EADDRINUSE). */
        int held = -1, held_tcp = -1;
        struct sockaddr_in h;
        for (int attempt = 0; held_tcp < 0; attempt++) {
                assert_true(attempt < 64);
                if (held >= 0)
                        close(held);
                held = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                uv_ip4_addr("127.0.0.1", 0, &h);
                assert_int_equal(bind(held, (struct sockaddr *) &h, sizeof(h)), 0);
                socklen_t hlen = sizeof(h);
                assert_int_equal(getsockname(held, (struct sockaddr *) &h, &hlen), 0);
                held_tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (bind(held_tcp, (struct sockaddr *) &h, sizeof(h)) < 0) {
                        assert_int_equal(errno, EADDRINUSE);
                        close(held_tcp);
                        held_tcp = -1;
                }
        }
        pid_t holder = fork();
        assert_true(holder >= 0);
        if (holder == 0) {
                usleep(300 * 1000);
                _exit(0);
        }
        close(held);
        close(held_tcp);
        assert_int_equal(lg_dns_new(&loop, "127.0.0.1", ntohs(h.sin_port), good, &dns, &e), 0);
        lg_dns_free(dns);
        dns = NULL;
        assert_int_equal(waitpid(holder, NULL, 0), holder);
        assert_int_equal(lg_dns_new(&loop, "127.0.0.1", 0, good, &dns, &e), 0);
        assert_int_equal(lg_dns_set_limits(dns, 60001, 0, &e), -EINVAL);
        assert_int_equal(lg_dns_set_limits(dns, 0, LG_DNS_PENDING_MAX + 1, &e), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_relay, setup, teardown),
                cmocka_unit_test_setup_teardown(test_clashing_ids, setup, teardown),
                cmocka_unit_test_setup_teardown(test_timeout_next_upstream, setup, teardown),
                cmocka_unit_test_setup_teardown(test_all_upstreams_fail, setup, teardown),
                cmocka_unit_test_setup_teardown(test_garbage_dropped, setup, teardown),
                cmocka_unit_test_setup_teardown(test_upstream_spoof_dropped, setup, teardown),
                cmocka_unit_test_setup_teardown(test_table_full, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_retry, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_next_upstream, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_wrong_answer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_tcp_garbage, setup, teardown),
                cmocka_unit_test_setup_teardown(test_resolv_conf, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
