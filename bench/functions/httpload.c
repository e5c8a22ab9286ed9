/* httpload: a small closed-loop HTTP/1.1 load generator for the functions
 * benchmark (bench/functions/run.sh compiles it with cc).
 *
 * It reaches a TCP address or a Unix socket with the same code, so the
 * router, an instance's own socket and nginx are measured alike (wrk cannot
 * do Unix sockets). Keep-alive connections, each sending one request and
 * waiting for the whole response before the next (closed loop); every
 * request's latency, send to last byte, is kept and the percentiles are
 * computed from all of them (no histogram buckets).
 *
 *   httpload [-t THREADS] [-c CONNS] [-d SECONDS] [-w WARMUP_SECONDS]
 *            [-H 'Name: value']... [-l LABEL] [-b [-B]] [-s SOURCES] TARGET PATH
 *
 * TARGET is HOST:PORT or unix:/path.sock. -b (burst): CONNS connections are
 * opened first, then each sends one request at the same moment; the result
 * adds the time from the first send to the last answer; with -B it also
 * lists each answer's status and body (cut at 127 bytes). -s N spreads the
 * TCP connections over the source addresses 127.0.0.1 .. 127.0.0.N, as N
 * clients (legiond takes at most 256 connections from one address). Prints
 * one JSON object on stdout. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../lib/stats.h"

#define MAX_THREADS 64
#define BUF_CAP (256 * 1024)

static struct sockaddr_storage addr;
static socklen_t addr_len;
static bool is_unix;
static char *request;
static size_t request_len;
static uint64_t t_warm_end, t_end; /* ns, monotonic */
static bool burst, keep_bodies;
static int sources = 1;

struct conn {
        int fd;
        char *buf;
        size_t len;
        size_t sent;
        uint64_t t_send;
        bool busy;      /* a request is out */
        bool done;      /* burst: answered */
        int status;     /* burst: the answer's status */
        char body[128]; /* burst, -B: the answer's body, cut */
        int src;        /* source address: 127.0.0.(1 + src) */
};

struct worker {
        pthread_t th;
        int nconn;
        struct conn *conns;
        uint64_t *lat;
        size_t nlat, caplat;
        uint64_t requests, errors, conn_errors, reconnects;
        uint64_t completed; /* answers, warm-up included */
        uint64_t status[6]; /* 1xx..5xx, [0] = other */
        uint64_t first_send, last_done;
        uint64_t bytes;
};

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void die(const char *fmt, const char *arg) {
        fprintf(stderr, "httpload: ");
        fprintf(stderr, fmt, arg);
        fputc('\n', stderr);
        exit(2);
}

static int open_conn(int src) {
        int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        if (!is_unix && sources > 1) {
                struct sockaddr_in sa = {.sin_family = AF_INET,
                                         .sin_addr.s_addr = htonl(0x7f000001u + (uint32_t) src)};
                if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                        close(fd);
                        return -1;
                }
        }
        if (connect(fd, (struct sockaddr *) &addr, addr_len) < 0) {
                close(fd);
                return -1;
        }
        if (!is_unix) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        return fd;
}

/* Parse what is buffered: 0 = need more, 1 = one whole response (status,
 * consumed bytes and whether the server closes), -1 = malformed. */
static int parse_response(const char *b, size_t len, int *status, size_t *consumed, bool *close_after) {
        const char *end = memmem(b, len, "\r\n\r\n", 4);
        if (!end)
                return len > 65536 ? -1 : 0;
        size_t hlen = (size_t) (end - b) + 4;
        if (len < 12 || strncmp(b, "HTTP/1.", 7) != 0)
                return -1;
        *status = atoi(b + 9);
        long long cl = -1;
        bool chunked = false;
        *close_after = b[7] == '0';
        for (const char *p = memchr(b, '\n', hlen) + 1; p < end; ) {
                const char *eol = memmem(p, (size_t) (end + 2 - p), "\r\n", 2);
                if (!eol)
                        break;
                size_t n = (size_t) (eol - p);
                if (n > 15 && !strncasecmp(p, "content-length:", 15))
                        cl = atoll(p + 15);
                else if (n > 18 && !strncasecmp(p, "transfer-encoding:", 18) && memmem(p, n, "chunked", 7))
                        chunked = true;
                else if (n > 11 && !strncasecmp(p, "connection:", 11)) {
                        if (memmem(p, n, "close", 5))
                                *close_after = true;
                        else if (memmem(p, n, "eep-alive", 9))
                                *close_after = false;
                }
                p = eol + 2;
        }
        if (*status == 204 || *status == 304 || (*status >= 100 && *status < 200))
                cl = 0;
        if (chunked) {
                size_t pos = hlen;
                for (;;) {
                        const char *eol = memmem(b + pos, len - pos, "\r\n", 2);
                        if (!eol)
                                return 0;
                        unsigned long long sz = strtoull(b + pos, NULL, 16);
                        pos = (size_t) (eol - b) + 2;
                        if (sz == 0) {
                                /* Trailers end with an empty line. */
                                const char *t = memmem(b + pos, len - pos, "\r\n", 2);
                                while (t && t != b + pos) {
                                        pos = (size_t) (t - b) + 2;
                                        t = memmem(b + pos, len - pos, "\r\n", 2);
                                }
                                if (!t)
                                        return 0;
                                *consumed = pos + 2;
                                return 1;
                        }
                        if (len - pos < sz + 2)
                                return 0;
                        pos += sz + 2;
                }
        }
        if (cl < 0) {
                /* Body until close: not expected here. */
                return -1;
        }
        if (len < hlen + (size_t) cl)
                return 0;
        *consumed = hlen + (size_t) cl;
        return 1;
}

static void record(struct worker *w, uint64_t lat) {
        if (w->nlat == w->caplat) {
                w->caplat = w->caplat ? w->caplat * 2 : 65536;
                w->lat = realloc(w->lat, w->caplat * sizeof(uint64_t));
                if (!w->lat)
                        die("%s", "out of memory");
        }
        w->lat[w->nlat++] = lat;
}

static int send_request(struct worker *w, struct conn *c, int ep) {
        (void) ep;
        c->t_send = now_ns();
        if (!w->first_send)
                w->first_send = c->t_send;
        c->sent = 0;
        while (c->sent < request_len) {
                ssize_t n = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break; /* the rest on EPOLLOUT; requests are small, not expected */
                        return -1;
                }
                c->sent += (size_t) n;
        }
        c->busy = true;
        c->len = 0;
        return 0;
}

static int reconnect(struct worker *w, struct conn *c, int ep) {
        if (c->fd >= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
        }
        c->fd = open_conn(c->src);
        c->busy = false;
        c->len = 0;
        if (c->fd < 0) {
                w->conn_errors++;
                return -1;
        }
        w->reconnects++;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        return 0;
}

static void *run(void *arg) {
        struct worker *w = arg;
        int ep = epoll_create1(EPOLL_CLOEXEC);
        int live = 0;
        for (int i = 0; i < w->nconn; i++) {
                struct conn *c = &w->conns[i];
                c->buf = malloc(BUF_CAP);
                if (!c->buf)
                        die("%s", "out of memory");
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        }
        for (int i = 0; i < w->nconn; i++) {
                struct conn *c = &w->conns[i];
                if (send_request(w, c, ep) < 0) {
                        w->errors++;
                        if (burst)
                                c->done = true;
                        else
                                reconnect(w, c, ep);
                } else {
                        live++;
                }
        }
        struct epoll_event evs[256];
        for (;;) {
                uint64_t t = now_ns();
                if (burst ? live == 0 : t >= t_end)
                        break;
                int n = epoll_wait(ep, evs, 256, 10);
                for (int i = 0; i < n; i++) {
                        struct conn *c = evs[i].data.ptr;
                        if (!c->busy) {
                                /* Readable while idle: the server closed it. */
                                if (burst) {
                                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                                } else if (reconnect(w, c, ep) == 0 && send_request(w, c, ep) < 0) {
                                        w->errors++;
                                }
                                continue;
                        }
                        ssize_t r = recv(c->fd, c->buf + c->len, BUF_CAP - c->len, 0);
                        if (r < 0 && (errno == EAGAIN || errno == EINTR))
                                continue;
                        int status = 0;
                        size_t consumed = 0;
                        bool close_after = false;
                        int pr = -1;
                        if (r > 0) {
                                c->len += (size_t) r;
                                pr = parse_response(c->buf, c->len, &status, &consumed, &close_after);
                                if (pr == 0 && c->len == BUF_CAP)
                                        pr = -1;
                                if (pr == 0)
                                        continue;
                        }
                        uint64_t done = now_ns();
                        if (pr == 1) {
                                w->last_done = done;
                                w->completed++;
                                if (done >= t_warm_end || burst) {
                                        w->requests++;
                                        w->bytes += consumed;
                                        int k = status / 100;
                                        w->status[k >= 1 && k <= 5 ? k : 0]++;
                                        if (k != 2)
                                                w->errors++;
                                        record(w, done - c->t_send);
                                }
                        } else {
                                /* Reset, closed early or garbage. */
                                w->errors++;
                                if (done >= t_warm_end || burst)
                                        w->conn_errors++;
                        }
                        if (burst) {
                                c->done = true;
                                c->busy = false;
                                c->status = pr == 1 ? status : 0;
                                if (pr == 1 && keep_bodies) {
                                        const char *h = memmem(c->buf, c->len, "\r\n\r\n", 4);
                                        size_t off = (size_t) (h - c->buf) + 4;
                                        size_t bl = consumed - off;
                                        if (bl > sizeof(c->body) - 1)
                                                bl = sizeof(c->body) - 1;
                                        memcpy(c->body, c->buf + off, bl);
                                        c->body[bl] = '\0';
                                }
                                live--;
                                continue;
                        }
                        if (pr != 1 || close_after) {
                                if (reconnect(w, c, ep) < 0)
                                        continue;
                        }
                        if (send_request(w, c, ep) < 0 && reconnect(w, c, ep) == 0)
                                send_request(w, c, ep);
                }
        }
        close(ep);
        return NULL;
}

/* The p-th percentile of n sorted latencies in ns, in µs. */
static double pct(const uint64_t *v, size_t n, double p) {
        return n ? (double) v[bench_rank(n, p)] / 1000.0 : 0;
}

int main(int argc, char **argv) {
        int threads = 1, conns = 1;
        double duration = 5, warmup = 1;
        const char *label = "";
        char headers[8192] = "";
        size_t hl = 0;
        int opt;
        while ((opt = getopt(argc, argv, "t:c:d:w:H:l:bBs:")) != -1) {
                switch (opt) {
                case 't': threads = atoi(optarg); break;
                case 'c': conns = atoi(optarg); break;
                case 'd': duration = atof(optarg); break;
                case 'w': warmup = atof(optarg); break;
                case 'l': label = optarg; break;
                case 'b': burst = true; break;
                case 'B': keep_bodies = true; break;
                case 's': sources = atoi(optarg); break;
                case 'H':
                        if (hl + strlen(optarg) + 3 > sizeof(headers))
                                die("%s", "too many headers");
                        hl += (size_t) sprintf(headers + hl, "%s\r\n", optarg);
                        break;
                default:
                        fprintf(stderr, "usage: httpload [-t N] [-c N] [-d S] [-w S] [-H 'K: V']... [-l LABEL] [-b] "
                                        "[-s N] HOST:PORT|unix:PATH PATH\n");
                        return 2;
                }
        }
        if (argc - optind != 2)
                die("%s", "want TARGET and PATH");
        const char *target = argv[optind], *path = argv[optind + 1];
        if (threads < 1 || threads > MAX_THREADS || conns < threads)
                die("%s", "need 1 <= threads <= 64 and conns >= threads");
        if (sources < 1 || sources > 254)
                die("%s", "need 1 <= sources <= 254");
        char host[256] = "localhost";
        if (!strncmp(target, "unix:", 5)) {
                is_unix = true;
                struct sockaddr_un *sa = (struct sockaddr_un *) &addr;
                sa->sun_family = AF_UNIX;
                if (strlen(target + 5) >= sizeof(sa->sun_path))
                        die("socket path too long: %s", target + 5);
                strcpy(sa->sun_path, target + 5);
                addr_len = sizeof(*sa);
        } else {
                const char *colon = strrchr(target, ':');
                if (!colon || (size_t) (colon - target) >= sizeof(host))
                        die("bad target %s", target);
                snprintf(host, sizeof(host), "%.*s", (int) (colon - target), target);
                struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
                if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
                        die("cannot resolve %s", target);
                memcpy(&addr, res->ai_addr, res->ai_addrlen);
                addr_len = res->ai_addrlen;
                freeaddrinfo(res);
                snprintf(host, sizeof(host), "%s", target);
        }
        if (asprintf(&request, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", path, host, headers) < 0)
                die("%s", "out of memory");
        request_len = strlen(request);

        struct worker *ws = calloc((size_t) threads, sizeof(*ws));
        int open_fail = 0, nopen = 0;
        for (int t = 0; t < threads; t++) {
                ws[t].nconn = conns / threads + (t < conns % threads);
                ws[t].conns = calloc((size_t) ws[t].nconn, sizeof(struct conn));
                for (int i = 0; i < ws[t].nconn; i++) {
                        ws[t].conns[i].src = nopen++ % sources;
                        ws[t].conns[i].fd = open_conn(ws[t].conns[i].src);
                        if (ws[t].conns[i].fd < 0)
                                open_fail++;
                }
        }
        if (open_fail)
                die("cannot connect to %s", target);
        uint64_t t0 = now_ns();
        t_warm_end = t0 + (uint64_t) (warmup * 1e9);
        t_end = t_warm_end + (uint64_t) (duration * 1e9);
        for (int t = 0; t < threads; t++)
                pthread_create(&ws[t].th, NULL, run, &ws[t]);
        uint64_t completed = 0, req = 0, err = 0, cerr = 0, reconn = 0, st[6] = {0}, first = 0, last = 0, bytes = 0;
        size_t n = 0;
        for (int t = 0; t < threads; t++) {
                pthread_join(ws[t].th, NULL);
                req += ws[t].requests;
                completed += ws[t].completed;
                err += ws[t].errors;
                cerr += ws[t].conn_errors;
                reconn += ws[t].reconnects;
                bytes += ws[t].bytes;
                for (int k = 0; k < 6; k++)
                        st[k] += ws[t].status[k];
                n += ws[t].nlat;
                if (ws[t].first_send && (!first || ws[t].first_send < first))
                        first = ws[t].first_send;
                if (ws[t].last_done > last)
                        last = ws[t].last_done;
        }
        uint64_t *all = malloc((n ? n : 1) * sizeof(uint64_t));
        size_t k = 0;
        double sum = 0;
        for (int t = 0; t < threads; t++)
                for (size_t i = 0; i < ws[t].nlat; i++) {
                        all[k++] = ws[t].lat[i];
                        sum += (double) ws[t].lat[i];
                }
        qsort(all, n, sizeof(uint64_t), bench_cmp_u64);
        double window = burst ? (double) (last - first) / 1e9 : duration;
        printf("{\"tool\": \"httpload\", \"label\": ");
        bench_json_str(label);
        printf(", \"target\": ");
        bench_json_str(target);
        printf(", \"path\": ");
        bench_json_str(path);
        printf(", \"mode\": \"%s\", \"threads\": %d, \"connections\": %d, \"duration_s\": %.3f, \"warmup_s\": %.3f,"
               " \"requests\": %llu, \"errors\": %llu, \"connection_errors\": %llu, \"reconnects\": %llu,"
               " \"status\": {\"1xx\": %llu, \"2xx\": %llu, \"3xx\": %llu, \"4xx\": %llu, \"5xx\": %llu, \"other\": %llu},"
               " \"bytes\": %llu, \"rps\": %.1f, \"completed_with_warmup\": %llu,",
               burst ? "burst" : "closed-loop", threads, conns, window, burst ? 0.0 : warmup,
               (unsigned long long) req, (unsigned long long) err, (unsigned long long) cerr,
               (unsigned long long) reconn, (unsigned long long) st[1], (unsigned long long) st[2],
               (unsigned long long) st[3], (unsigned long long) st[4], (unsigned long long) st[5],
               (unsigned long long) st[0], (unsigned long long) bytes, window > 0 ? (double) req / window : 0,
               (unsigned long long) completed);
        if (burst)
                printf(" \"all_answered_ms\": %.3f,", (double) (last - first) / 1e6);
        if (burst && keep_bodies) {
                printf(" \"answers\": [");
                for (int t = 0, k2 = 0; t < threads; t++)
                        for (int i = 0; i < ws[t].nconn; i++, k2++) {
                                printf("%s{\"status\": %d, \"body\": ", k2 ? ", " : "", ws[t].conns[i].status);
                                bench_json_str(ws[t].conns[i].body);
                                putchar('}');
                        }
                printf("],");
        }
        printf(" \"latency_us\": {\"n\": %zu, \"min\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f,"
               " \"p999\": %.1f, \"max\": %.1f, \"mean\": %.1f}}\n",
               n, n ? (double) all[0] / 1000.0 : 0, pct(all, n, 50), pct(all, n, 90), pct(all, n, 99),
               pct(all, n, 99.9), n ? (double) all[n - 1] / 1000.0 : 0, n ? sum / (double) n / 1000.0 : 0);
        return 0;
}
