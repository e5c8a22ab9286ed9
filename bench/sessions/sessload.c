/* sessload: the closed-loop load client of the sessions benchmark
 * (bench/sessions/run.sh compiles it with cc).
 *
 *   sessload [-c CONNS] [-d SECONDS] [-w WARMUP_SECONDS] [-H 'Name: value']...
 *            [-b BODY] [-e EXPECT] TARGET PATH
 *
 * TARGET is HOST:PORT or unix:/path.sock. CONNS keep-alive connections, one
 * thread, epoll; each connection sends `POST PATH` with BODY (JSON), waits
 * for the whole answer, sends the next (closed loop). A `%d` in PATH is
 * replaced by the connection's number (0..CONNS-1), so that each connection
 * can drive its own session identifier; the same in a unix: TARGET, for one
 * socket per connection. Every request's latency (send to
 * last byte, CLOCK_MONOTONIC) after the warm-up is kept, and the
 * percentiles are computed from all of them (nearest rank). An answer is
 * counted as good when its status is 200 and its body holds EXPECT
 * (default `"Succeeded"`). Requests in flight at the end are waited for
 * (not timed) so that every session is idle when sessload exits; `sent`
 * per connection counts every answered request, warm-up included. Prints
 * one JSON object on stdout. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#define BUF_CAP (1024 * 1024)
#define MAX_HEADERS 16

struct conn {
        int fd, idx;
        char *req;
        size_t req_len, sent_bytes;
        char *buf;
        size_t len;
        uint64_t t_send;
        bool busy;
        uint64_t answered; /* all answers, warm-up included */
};

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void die(const char *msg) {
        fprintf(stderr, "sessload: %s: %s\n", msg, strerror(errno));
        exit(1);
}

static void fail(const char *msg) {
        fprintf(stderr, "sessload: %s\n", msg);
        exit(1);
}

static char host[256], unix_path[108];
static int port;

static int connect_target(int idx) {
        int fd;
        if (unix_path[0]) {
                struct sockaddr_un a = {.sun_family = AF_UNIX};
                const char *pc = strstr(unix_path, "%d");
                if (pc)
                        snprintf(a.sun_path, sizeof(a.sun_path), "%.*s%d%s", (int) (pc - unix_path), unix_path, idx,
                                 pc + 2);
                else
                        snprintf(a.sun_path, sizeof(a.sun_path), "%s", unix_path);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0)
                        die("connect");
        } else {
                struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
                if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
                        fail("TARGET must be an IPv4 HOST:PORT or unix:/path");
                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0)
                        die("connect");
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        return fd;
}

/* The p-th percentile of n sorted latencies in ns, in ms. */
static double pct(const uint64_t *v, size_t n, double p) {
        return n ? (double) v[bench_rank(n, p)] / 1e6 : 0;
}

/* The whole answer is in c->buf: its length, or 0 if not yet, -1 if bad. */
static long answer_complete(struct conn *c, int *status) {
        c->buf[c->len] = 0;
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end)
                return 0;
        if (strncmp(c->buf, "HTTP/1.", 7) || c->len < 12)
                return -1;
        *status = atoi(c->buf + 9);
        long clen = -1;
        for (char *p = strstr(c->buf, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
                if (!strncasecmp(p + 2, "content-length:", 15))
                        clen = strtol(p + 17, NULL, 10);
                if (!strncasecmp(p + 2, "transfer-encoding:", 18))
                        return -1; /* not used by legiond's answers here */
        }
        if (clen < 0)
                return -1;
        size_t total = (size_t) (end + 4 - c->buf) + (size_t) clen;
        if (total >= BUF_CAP)
                return -1;
        return c->len >= total ? (long) total : 0;
}

int main(int argc, char **argv) {
        int conns = 1, opt;
        double duration = 5, warmup = 1;
        const char *body = "{\"code\":\"1\"}", *expect = "\"Succeeded\"";
        char headers[4096] = "";
        while ((opt = getopt(argc, argv, "c:d:w:H:b:e:")) != -1) {
                switch (opt) {
                case 'c': conns = atoi(optarg); break;
                case 'd': duration = atof(optarg); break;
                case 'w': warmup = atof(optarg); break;
                case 'b': body = optarg; break;
                case 'e': expect = optarg; break;
                case 'H':
                        if (strlen(headers) + strlen(optarg) + 3 >= sizeof(headers))
                                fail("too many headers");
                        strcat(headers, optarg);
                        strcat(headers, "\r\n");
                        break;
                default: fail("usage: sessload [-c N] [-d S] [-w S] [-H H]... [-b BODY] [-e EXPECT] TARGET PATH");
                }
        }
        if (optind + 2 != argc || conns < 1 || conns > 10000)
                fail("usage: sessload [-c N] [-d S] [-w S] [-H H]... [-b BODY] [-e EXPECT] TARGET PATH");
        const char *target = argv[optind], *path = argv[optind + 1];
        if (!strncmp(target, "unix:", 5)) {
                snprintf(unix_path, sizeof(unix_path), "%s", target + 5);
                snprintf(host, sizeof(host), "localhost");
        } else {
                const char *colon = strrchr(target, ':');
                if (!colon)
                        fail("TARGET must be HOST:PORT or unix:/path");
                snprintf(host, sizeof(host), "%.*s", (int) (colon - target), target);
                port = atoi(colon + 1);
        }
        int ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0)
                die("epoll_create1");
        struct conn *cs = calloc((size_t) conns, sizeof(*cs));
        if (!cs)
                die("calloc");
        for (int i = 0; i < conns; i++) {
                struct conn *c = &cs[i];
                c->idx = i;
                char p[2048], id[32];
                snprintf(id, sizeof(id), "%d", i);
                const char *pc = strstr(path, "%d");
                if (pc)
                        snprintf(p, sizeof(p), "%.*s%s%s", (int) (pc - path), path, id, pc + 2);
                else
                        snprintf(p, sizeof(p), "%s", path);
                size_t cap = strlen(p) + strlen(headers) + strlen(body) + 512;
                c->req = malloc(cap);
                c->buf = malloc(BUF_CAP + 1);
                if (!c->req || !c->buf)
                        die("malloc");
                c->req_len = (size_t) snprintf(c->req, cap,
                                               "POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\n"
                                               "Content-Length: %zu\r\n\r\n%s",
                                               p, host, headers, strlen(body), body);
                c->fd = connect_target(i);
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
                        die("epoll_ctl");
        }
        size_t lat_cap = 1 << 20, lat_n = 0;
        uint64_t *lat = malloc(lat_cap * sizeof(*lat));
        if (!lat)
                die("malloc");
        uint64_t good = 0, bad_status = 0, bad_body = 0, in_window = 0;
        uint64_t t0 = now_ns();
        uint64_t t_measure = t0 + (uint64_t) (warmup * 1e9), t_end = t_measure + (uint64_t) (duration * 1e9);
        int busy = 0;
        bool stopping = false;
        for (int i = 0; i < conns; i++) {
                struct conn *c = &cs[i];
                c->t_send = now_ns();
                if (write(c->fd, c->req, c->req_len) != (ssize_t) c->req_len)
                        die("write");
                c->busy = true;
                busy++;
        }
        struct epoll_event evs[256];
        uint64_t deadline_drain = 0;
        while (busy > 0) {
                uint64_t t = now_ns();
                if (!stopping && t >= t_end) {
                        stopping = true;
                        deadline_drain = t + 120ull * 1000000000ull;
                }
                if (stopping && t > deadline_drain)
                        fail("answers still missing 120 s after the end");
                int n = epoll_wait(ep, evs, 256, 100);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        die("epoll_wait");
                }
                for (int k = 0; k < n; k++) {
                        struct conn *c = evs[k].data.ptr;
                        ssize_t r = read(c->fd, c->buf + c->len, BUF_CAP - c->len);
                        if (r <= 0) {
                                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                                        continue;
                                fprintf(stderr, "sessload: connection %d closed by the server (%s)\n", c->idx,
                                        r == 0 ? "EOF" : strerror(errno));
                                exit(1);
                        }
                        c->len += (size_t) r;
                        int status = 0;
                        long total = answer_complete(c, &status);
                        if (total < 0) {
                                fprintf(stderr, "sessload: bad answer on connection %d: %.300s\n", c->idx, c->buf);
                                exit(1);
                        }
                        if (total == 0)
                                continue;
                        uint64_t t_done = now_ns();
                        c->answered++;
                        bool ok = status == 200 && strstr(c->buf, expect);
                        if (c->t_send >= t_measure && t_done <= t_end) {
                                in_window++;
                                if (status != 200)
                                        bad_status++;
                                else if (!ok)
                                        bad_body++;
                                else
                                        good++;
                                if (lat_n == lat_cap) {
                                        lat_cap *= 2;
                                        lat = realloc(lat, lat_cap * sizeof(*lat));
                                        if (!lat)
                                                die("realloc");
                                }
                                lat[lat_n++] = t_done - c->t_send;
                        }
                        if (!ok && getenv("SESSLOAD_SHOW_ERRORS"))
                                fprintf(stderr, "sessload: %d: %.300s\n", c->idx, c->buf);
                        /* Keep any extra bytes (there should be none). */
                        memmove(c->buf, c->buf + total, c->len - (size_t) total);
                        c->len -= (size_t) total;
                        if (stopping || now_ns() >= t_end) {
                                c->busy = false;
                                busy--;
                                continue;
                        }
                        c->t_send = now_ns();
                        if (write(c->fd, c->req, c->req_len) != (ssize_t) c->req_len)
                                die("write");
                }
        }
        uint64_t t_last = now_ns();
        qsort(lat, lat_n, sizeof(*lat), bench_cmp_u64);
        double sum = 0;
        for (size_t i = 0; i < lat_n; i++)
                sum += (double) lat[i] / 1e6;
        double window = (double) (t_end - t_measure) / 1e9;
        uint64_t min_c = UINT64_MAX, max_c = 0;
        printf("{\"target\": \"%s\", \"conns\": %d, \"warmup_s\": %.3f, \"duration_s\": %.3f, \"drain_ms\": %.3f, "
               "\"requests\": %zu, \"good\": %llu, \"bad_status\": %llu, \"bad_body\": %llu, \"rate\": %.1f, "
               "\"good_rate\": %.1f, \"latency_ms\": {\"mean\": %.4f, \"min\": %.4f, \"p50\": %.4f, \"p90\": %.4f, "
               "\"p99\": %.4f, \"p999\": %.4f, \"max\": %.4f}, \"sent\": [",
               target, conns, warmup, window, (double) (t_last - t_end) / 1e6, lat_n, (unsigned long long) good,
               (unsigned long long) bad_status, (unsigned long long) bad_body, (double) in_window / window,
               (double) good / window, lat_n ? sum / (double) lat_n : 0, lat_n ? (double) lat[0] / 1e6 : 0,
               pct(lat, lat_n, 50), pct(lat, lat_n, 90), pct(lat, lat_n, 99), pct(lat, lat_n, 99.9),
               lat_n ? (double) lat[lat_n - 1] / 1e6 : 0);
        for (int i = 0; i < conns; i++) {
                printf("%s%llu", i ? ", " : "", (unsigned long long) cs[i].answered);
                if (cs[i].answered < min_c)
                        min_c = cs[i].answered;
                if (cs[i].answered > max_c)
                        max_c = cs[i].answered;
        }
        printf("], \"sent_min\": %llu, \"sent_max\": %llu}\n", (unsigned long long) min_c, (unsigned long long) max_c);
        return 0;
}
