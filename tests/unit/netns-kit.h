/* Sandboxes and probes for the network tests (test-net, test-net-nft):
 * children in network namespaces, TCP servers that answer with the source
 * address they saw, connects from inside a namespace, shell commands.
 * Static inline (a test need not use them all), so each test program
 * has its own copy; include after cmocka.h. */
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

static inline int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int sh(const char *fmt, ...) {
        char c[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c, sizeof(c), fmt, ap);
        va_end(ap);
        int st = system(c);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define SH(...) assert_int_equal(sh(__VA_ARGS__), 0)

/* The output of a shell command (its first 16 KiB), in a buffer the next
 * call reuses. */
static inline char *sh_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline char *sh_out(const char *fmt, ...) {
        static char out[16384];
        char cmd[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        size_t n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        pclose(f);
        return out;
}

static pid_t kids[256];
static size_t n_kids;

static inline int enter_netns(pid_t pid) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int) pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        return fd < 0 || setns(fd, CLONE_NEWNET) < 0 ? -1 : 0;
}

/* fork() with a pipe, p[1] the child's end and p[0] the parent's; the
 * child (pid 0 returned) is in the network namespace of ns_pid (0: this
 * one) and dies with the test. */
static inline pid_t fork_into(pid_t ns_pid, int p[2]) {
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                close(p[0]);
                if (ns_pid && enter_netns(ns_pid) < 0)
                        _exit(120);
        }
        return pid;
}

/* A child in the network namespace of ns_pid (0: this one) or, with
 * own_ns, in a new one; it runs fn and is killed with the test. */
static inline pid_t child(pid_t ns_pid, bool own_ns, int (*fn)(void *)) {
        int p[2];
        pid_t pid = fork_into(ns_pid, p);
        if (pid == 0) {
                if (own_ns && unshare(CLONE_NEWNET) < 0)
                        _exit(121);
                _exit(fn ? fn(&p[1]) : (write(p[1], "r", 1) == 1 ? pause() : 122));
        }
        close(p[1]);
        char c;
        assert_int_equal(read(p[0], &c, 1), 1); /* ready (or the child failed: EOF) */
        close(p[0]);
        assert_true(n_kids < ARRAY_SIZE(kids));
        kids[n_kids++] = pid;
        return pid;
}

static uint16_t serve_port;
static char serve_ip[LG_NET_IP_MAX];

/* A listening socket on ip ("": any):serve_port, then a byte to ready. */
static inline int listen_ready(int ready, const char *ip) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(serve_port)};
        inet_pton(AF_INET, ip[0] ? ip : "0.0.0.0", &a.sin_addr);
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(s, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(s, 16) < 0 || write(ready, "r", 1) != 1)
                return -1;
        return s;
}

/* A TCP server answering each connection with the source address it saw. */
static inline int serve(void *arg) {
        int s = listen_ready(*(int *) arg, serve_ip);
        if (s < 0)
                return 123;
        for (;;) {
                struct sockaddr_in peer;
                socklen_t len = sizeof(peer);
                int c = accept4(s, (struct sockaddr *) &peer, &len, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                char ip[LG_NET_IP_MAX];
                inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
                (void) !write(c, ip, strlen(ip));
                close(c);
        }
}

static inline void server(pid_t ns_pid, const char *ip, uint16_t port) {
        serve_port = port;
        snprintf(serve_ip, sizeof(serve_ip), "%s", ip ? ip : "");
        child(ns_pid, false, serve);
}

/* Connect from the namespace of ns_pid (0: this one) to ip:port. true
 * and the source address the server saw when it answered; false when
 * nothing answered within wait_ms (a dropped SYN) or the connection was
 * refused. */
static inline bool reach(pid_t ns_pid, const char *ip, uint16_t port, int wait_ms, char seen[LG_NET_IP_MAX]) {
        int p[2];
        pid_t pid = fork_into(ns_pid, p);
        if (pid == 0) {
                int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
                inet_pton(AF_INET, ip, &a.sin_addr);
                if (connect(s, (struct sockaddr *) &a, sizeof(a)) < 0 && errno != EINPROGRESS)
                        _exit(1);
                struct pollfd pf = {.fd = s, .events = POLLIN};
                if (poll(&pf, 1, wait_ms) != 1)
                        _exit(2);
                char buf[LG_NET_IP_MAX] = "";
                ssize_t n = read(s, buf, sizeof(buf) - 1);
                if (n <= 0)
                        _exit(3);
                (void) !write(p[1], buf, (size_t) n);
                _exit(0);
        }
        close(p[1]);
        char buf[LG_NET_IP_MAX] = "";
        ssize_t n = read(p[0], buf, sizeof(buf) - 1);
        close(p[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) < 100);
        if (seen)
                snprintf(seen, LG_NET_IP_MAX, "%s", n > 0 ? buf : "");
        return WEXITSTATUS(st) == 0 && n > 0;
}

#define REACHES(from, ip, port) assert_true(reach(from, ip, port, 5000, NULL))
#define BLOCKED(from, ip, port) assert_false(reach(from, ip, port, 1000, NULL))
#define SEEN_AS(from, ip, port, src)                                  \
        do {                                                          \
                char seen_[LG_NET_IP_MAX];                            \
                assert_true(reach(from, ip, port, 5000, seen_));      \
                assert_string_equal(seen_, src);                      \
        } while (0)

/* Kill and reap every child made by child(). */
static inline void kids_kill(void) {
        for (size_t i = 0; i < n_kids; i++) {
                kill(kids[i], SIGKILL);
                waitpid(kids[i], NULL, 0);
        }
        n_kids = 0;
}
