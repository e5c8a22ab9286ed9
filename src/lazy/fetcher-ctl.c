/* The fetcher's control socket (fetcher.h): a stream socket legiond talks
 * to, one JSON object per line each way, served by one thread polling the
 * listener and at most CLIENTS_MAX connections. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <jansson.h>

#include "lazy/fetcher.h"

#define CLIENTS_MAX 16
#define LINE_MAX_LEN 4096

struct conn {
        int fd;
        size_t len;
        char buf[LINE_MAX_LEN];
};

struct lg_fetcher_ctl {
        lg_fetcher *f;
        int listen_fd, stop_fd;
        char path[4096];
        pthread_t thread;
        bool started;
        struct conn conns[CLIENTS_MAX];
};

static char *answer_error(const char *msg) {
        json_t *o = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        return s;
}

char *lg_fetcher_ctl_answer(lg_fetcher *f, const char *line, size_t len) {
        json_error_t je;
        json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
        if (!req || !json_is_object(req)) {
                json_decref(req);
                return answer_error("a request is one JSON object per line");
        }
        const char *op = json_string_value(json_object_get(req, "op"));
        const char *layer = json_string_value(json_object_get(req, "layer"));
        struct lg_error err = {0};
        json_t *ans = NULL;
        int r;
        if (!op) {
                r = lg_error_setm(&err, EINVAL, "no \"op\"");
        } else if (!strcmp(op, "ping")) {
                r = 0;
                ans = json_pack("{s:b, s:I}", "ok", 1, "pid", (json_int_t) getpid());
        } else if (strcmp(op, "attach") && strcmp(op, "detach") && strcmp(op, "status")) {
                r = lg_error_setm(&err, EINVAL, "unknown op (attach, detach, status, ping)");
        } else if (!layer) {
                r = lg_error_setm(&err, EINVAL, "no \"layer\"");
        } else if (!strcmp(op, "attach")) {
                r = lg_fetcher_attach(f, layer, &err);
        } else if (!strcmp(op, "detach")) {
                r = lg_fetcher_detach(f, layer, &err);
        } else {
                struct lg_fetcher_status st;
                r = lg_fetcher_status(f, layer, &st, &err);
                if (r >= 0)
                        ans = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "ok", 1, "chunks",
                                        (json_int_t) st.chunks, "localChunks", (json_int_t) st.local_chunks,
                                        "bytes", (json_int_t) st.bytes, "localBytes",
                                        (json_int_t) st.local_bytes, "fetchedBytes",
                                        (json_int_t) st.fetched_bytes, "misses", (json_int_t) st.misses,
                                        "errors", (json_int_t) st.errors);
        }
        json_decref(req);
        if (r < 0) {
                json_decref(ans);
                char msg[sizeof(err.msg)];
                lg_printable_message(err.msg, msg, sizeof(msg));
                return answer_error(msg);
        }
        if (!ans)
                ans = json_pack("{s:b}", "ok", 1);
        char *s = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
        json_decref(ans);
        return s;
}

static void conn_close(struct conn *c) {
        close(c->fd);
        c->fd = -1;
        c->len = 0;
}

static void send_line(struct conn *c, char *s) {
        if (!s) {
                conn_close(c);
                return;
        }
        size_t n = strlen(s);
        s[n] = 0;
        struct iovec iov[2] = {{s, n}, {"\n", 1}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        free(s);
        if (w != (ssize_t) n + 1) /* the client reads its answers; one that does not goes */
                conn_close(c);
}

static void conn_read(lg_fetcher_ctl *ctl, struct conn *c) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                conn_close(c);
                return;
        }
        c->len += (size_t) n;
        char *nl;
        while (c->fd >= 0 && (nl = memchr(c->buf, '\n', c->len))) {
                size_t line = (size_t) (nl - c->buf);
                send_line(c, lg_fetcher_ctl_answer(ctl->f, c->buf, line));
                memmove(c->buf, nl + 1, c->len - line - 1);
                c->len -= line + 1;
        }
        if (c->fd >= 0 && c->len == sizeof(c->buf)) {
                send_line(c, answer_error("request line too long"));
                if (c->fd >= 0)
                        conn_close(c);
        }
}

static void *ctl_thread(void *ud) {
        lg_fetcher_ctl *ctl = ud;
        for (;;) {
                struct pollfd p[2 + CLIENTS_MAX];
                size_t np = 0, idx[CLIENTS_MAX];
                p[np++] = (struct pollfd){.fd = ctl->stop_fd, .events = POLLIN};
                p[np++] = (struct pollfd){.fd = ctl->listen_fd, .events = POLLIN};
                for (size_t i = 0; i < CLIENTS_MAX; i++)
                        if (ctl->conns[i].fd >= 0) {
                                idx[np - 2] = i;
                                p[np++] = (struct pollfd){.fd = ctl->conns[i].fd, .events = POLLIN};
                        }
                if (poll(p, np, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents)
                        break;
                for (size_t k = 2; k < np; k++)
                        if (p[k].revents)
                                conn_read(ctl, &ctl->conns[idx[k - 2]]);
                if (p[1].revents & POLLIN) {
                        int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                        if (fd < 0)
                                continue;
                        size_t i = 0;
                        while (i < CLIENTS_MAX && ctl->conns[i].fd >= 0)
                                i++;
                        if (i == CLIENTS_MAX) {
                                close(fd); /* legiond is the only client; more is abuse */
                                continue;
                        }
                        ctl->conns[i].fd = fd;
                        ctl->conns[i].len = 0;
                }
        }
        return NULL;
}

int lg_fetcher_ctl_start(lg_fetcher *f, const char *path, lg_fetcher_ctl **ret, struct lg_error *err) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        char tmp[sizeof(sa.sun_path)];
        if (snprintf(tmp, sizeof(tmp), "%s.%d", path, getpid()) >= (int) sizeof(tmp))
                return lg_error_setm(err, ENAMETOOLONG, "control socket path `%s` is too long", path);
        lg_fetcher_ctl *ctl = calloc(1, sizeof(*ctl));
        if (!ctl)
                return lg_error_set(err, ENOMEM, "control socket");
        ctl->f = f;
        ctl->stop_fd = -1;
        for (size_t i = 0; i < CLIENTS_MAX; i++)
                ctl->conns[i].fd = -1;
        snprintf(ctl->path, sizeof(ctl->path), "%s", path);
        int r;
        ctl->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (ctl->listen_fd < 0) {
                r = lg_error_set(err, errno, "control socket");
                goto fail;
        }
        memcpy(sa.sun_path, tmp, strlen(tmp) + 1);
        unlink(tmp);
        /* Bound under a temporary name and renamed: a client never finds
         * the path without a listener (a restarted fetcher's replaces the
         * dead one's at once). */
        if (bind(ctl->listen_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || chmod(tmp, 0600) < 0 ||
            listen(ctl->listen_fd, 16) < 0 || rename(tmp, path) < 0) {
                r = lg_error_set(err, errno, "control socket `%s`", path);
                unlink(tmp);
                goto fail;
        }
        ctl->stop_fd = eventfd(0, EFD_CLOEXEC);
        if (ctl->stop_fd < 0) {
                r = lg_error_set(err, errno, "eventfd");
                goto fail;
        }
        if ((r = -pthread_create(&ctl->thread, NULL, ctl_thread, ctl)) < 0) {
                lg_error_set(err, -r, "control thread");
                goto fail;
        }
        ctl->started = true;
        *ret = ctl;
        return 0;
fail:
        lg_fetcher_ctl_free(ctl);
        return r;
}

void lg_fetcher_ctl_free(lg_fetcher_ctl *ctl) {
        if (!ctl)
                return;
        if (ctl->started) {
                uint64_t one = 1;
                if (write(ctl->stop_fd, &one, sizeof(one)) == sizeof(one))
                        pthread_join(ctl->thread, NULL);
        }
        for (size_t i = 0; i < CLIENTS_MAX; i++)
                if (ctl->conns[i].fd >= 0)
                        close(ctl->conns[i].fd);
        if (ctl->stop_fd >= 0)
                close(ctl->stop_fd);
        if (ctl->listen_fd >= 0)
                close(ctl->listen_fd);
        free(ctl);
}
