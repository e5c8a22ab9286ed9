/* bench/lazy/delayproxy.c: a TCP relay that holds every byte for DELAY
 * microseconds in each direction, bench/lazy's stand-in for netem's delay,
 * which this kernel does not have (CONFIG_NET_SCH_NETEM is off; the rate
 * is tc's, htb).
 *
 *   delayproxy LISTEN_IP:PORT TARGET_IP:PORT DELAY_US
 *
 * One thread, epoll. Whatever arrives on one side is stamped now + DELAY
 * and written to the other side once due (epoll_pwait2's nanosecond
 * timeout), so a request/response pays 2 x DELAY more, as over a link with
 * that one-way delay. At most MAX_QUEUED bytes wait per direction; above
 * that reading stops, as a full window would. An end's EOF is passed on
 * (shutdown) after the same delay. Runs until killed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_MAX (256 * 1024)
#define MAX_QUEUED (8u << 20)

struct seg {
        struct seg *next;
        uint64_t due;
        size_t len, off;
        bool eof;
        char data[];
};

struct dir {
        int from, to;
        struct seg *head, *tail;
        size_t queued;
        bool eof_in;    /* read returned 0 */
        bool done;      /* EOF passed on */
        bool blocked;   /* the last write would block */
};

struct conn {
        struct conn *next;
        struct dir d[2];
        uint32_t ev[2]; /* epoll interest registered for d[i].from's fd */
        bool dead;
};

static uint64_t delay_ns;
static int ep;
static struct conn *conns;

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int parse_addr(const char *s, struct sockaddr_in *a) {
        char host[64];
        const char *colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof host)
                return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
        memset(a, 0, sizeof *a);
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)atoi(colon + 1));
        return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static void enqueue(struct dir *d, const char *buf, size_t len, bool eof) {
        struct seg *s = malloc(sizeof *s + len);
        if (!s) {
                perror("delayproxy: malloc");
                exit(1);
        }
        s->next = NULL;
        s->due = now_ns() + delay_ns;
        s->len = len;
        s->off = 0;
        s->eof = eof;
        memcpy(s->data, buf, len);
        if (d->tail)
                d->tail->next = s;
        else
                d->head = s;
        d->tail = s;
        d->queued += len;
}

/* Read what is there into the queue. -1: the connection failed. */
static int pump_in(struct dir *d) {
        static char buf[READ_MAX];
        while (!d->eof_in && d->queued < MAX_QUEUED) {
                ssize_t n = read(d->from, buf, sizeof buf);
                if (n > 0) {
                        enqueue(d, buf, (size_t)n, false);
                } else if (n == 0) {
                        d->eof_in = true;
                        enqueue(d, NULL, 0, true);
                } else if (errno == EAGAIN || errno == EINTR) {
                        return 0;
                } else {
                        return -1;
                }
        }
        return 0;
}

/* Write what is due. -1: the connection failed. */
static int pump_out(struct dir *d, uint64_t now) {
        d->blocked = false;
        while (d->head && d->head->due <= now) {
                struct seg *s = d->head;
                if (s->eof) {
                        shutdown(d->to, SHUT_WR);
                        d->done = true;
                } else {
                        while (s->off < s->len) {
                                ssize_t n = write(d->to, s->data + s->off, s->len - s->off);
                                if (n > 0) {
                                        s->off += (size_t)n;
                                        d->queued -= (size_t)n;
                                } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                                        d->blocked = true;
                                        return 0;
                                } else {
                                        return -1;
                                }
                        }
                }
                d->head = s->next;
                if (!d->head)
                        d->tail = NULL;
                free(s);
        }
        return 0;
}

static void set_interest(struct conn *c) {
        for (int i = 0; i < 2; i++) {
                /* fd d[i].from: readable for d[i], writable for d[1-i] */
                uint32_t ev = 0;
                if (!c->d[i].eof_in && c->d[i].queued < MAX_QUEUED)
                        ev |= EPOLLIN;
                if (c->d[1 - i].blocked)
                        ev |= EPOLLOUT;
                if (ev != c->ev[i]) {
                        struct epoll_event e = { .events = ev, .data.ptr = c };
                        epoll_ctl(ep, EPOLL_CTL_MOD, c->d[i].from, &e);
                        c->ev[i] = ev;
                }
        }
}

static void conn_free(struct conn *c) {
        for (int i = 0; i < 2; i++) {
                struct seg *s = c->d[i].head;
                while (s) {
                        struct seg *n = s->next;
                        free(s);
                        s = n;
                }
        }
        close(c->d[0].from);
        close(c->d[1].from);
        free(c);
}

static void nonblock(int fd) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void accept_one(int lfd, const struct sockaddr_in *target) {
        int a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (a < 0)
                return;
        int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (b < 0 || connect(b, (const struct sockaddr *)target, sizeof *target) < 0) {
                perror("delayproxy: connect to the target");
                close(a);
                if (b >= 0)
                        close(b);
                return;
        }
        nonblock(a);
        nonblock(b);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
                perror("delayproxy: calloc");
                exit(1);
        }
        c->d[0] = (struct dir){ .from = a, .to = b };
        c->d[1] = (struct dir){ .from = b, .to = a };
        for (int i = 0; i < 2; i++) {
                c->ev[i] = EPOLLIN;
                struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };
                epoll_ctl(ep, EPOLL_CTL_ADD, c->d[i].from, &e);
        }
        c->next = conns;
        conns = c;
}

int main(int argc, char **argv) {
        struct sockaddr_in listen_addr, target;
        if (argc != 4 || parse_addr(argv[1], &listen_addr) < 0 || parse_addr(argv[2], &target) < 0) {
                fprintf(stderr, "usage: delayproxy LISTEN_IP:PORT TARGET_IP:PORT DELAY_US\n");
                return 2;
        }
        delay_ns = strtoull(argv[3], NULL, 10) * 1000u;
        signal(SIGPIPE, SIG_IGN);
        /* The default 50 us timer slack would add to every delay. */
        prctl(PR_SET_TIMERSLACK, 1UL);
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(lfd, (struct sockaddr *)&listen_addr, sizeof listen_addr) < 0 || listen(lfd, 512) < 0) {
                perror("delayproxy: listen");
                return 1;
        }
        ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event le = { .events = EPOLLIN, .data.ptr = NULL };
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
        for (;;) {
                /* The earliest due segment that can be written decides the wait. */
                uint64_t now = now_ns(), next = UINT64_MAX;
                for (struct conn *c = conns; c; c = c->next)
                        for (int i = 0; i < 2; i++)
                                if (c->d[i].head && !c->d[i].blocked && c->d[i].head->due < next)
                                        next = c->d[i].head->due;
                struct timespec ts, *tsp = NULL;
                if (next != UINT64_MAX) {
                        uint64_t w = next > now ? next - now : 0;
                        ts.tv_sec = (time_t)(w / 1000000000u);
                        ts.tv_nsec = (long)(w % 1000000000u);
                        tsp = &ts;
                }
                struct epoll_event evs[64];
                int n = epoll_pwait2(ep, evs, 64, tsp, NULL);
                if (n < 0 && errno != EINTR) {
                        perror("delayproxy: epoll_pwait2");
                        return 1;
                }
                for (int i = 0; i < n; i++)
                        if (!evs[i].data.ptr)
                                accept_one(lfd, &target);
                /* Every connection: read what is there, write what is due. */
                now = now_ns();
                struct conn **pp = &conns;
                while (*pp) {
                        struct conn *c = *pp;
                        for (int i = 0; i < 2 && !c->dead; i++)
                                if (pump_in(&c->d[i]) < 0 || pump_out(&c->d[i], now) < 0)
                                        c->dead = true;
                        if (c->dead || (c->d[0].done && c->d[1].done)) {
                                *pp = c->next;
                                conn_free(c);
                                continue;
                        }
                        set_interest(c);
                        pp = &c->next;
                }
        }
}
