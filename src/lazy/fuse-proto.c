/* The FUSE protocol on /dev/fuse for the lazy fetcher's blob directory:
 * the mount helper, FUSE_NOTIFY_RESEND, and the request loop of several
 * threads answering a read-only root directory of regular files (see
 * fuse-proto.h for what is answered and why there is no libfuse). */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <linux/fuse.h>

#include "lazy/fuse-proto.h"

/* Debian 12's <linux/fuse.h> is 7.38 (Linux 6.1); RESEND came with 7.40. */
#ifndef FUSE_NOTIFY_RESEND
#define FUSE_NOTIFY_RESEND 7
#endif

#define FUSE_PROTO_MINOR 38     /* what this file was written against */
#define MAX_PAGES 256           /* READs up to 1 MiB */
#define IN_BUF (128 * 1024)     /* requests: no WRITE is ever accepted */
#define ENTRY_TTL 1             /* s: a detached layer's name goes soon */
#define ATTR_TTL 3600           /* s: a blob never changes size */

struct lg_fuse_server {
        int fd;
        int stop_fd;            /* eventfd: readers end */
        int done_fd;            /* eventfd: the server ended */
        struct lg_fuse_ops ops;
        unsigned n_threads;
        pthread_t *threads;
        size_t n_started;
        pthread_mutex_t lock;
        int status;             /* what ended it */
        char msg[256];
        bool ended;
};

int lg_lazy_fuse_mount(const char *dir, int *ret, struct lg_error *err) {
        _cleanup_close_ int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return lg_error_set(err, errno, "open /dev/fuse");
        char opts[128];
        snprintf(opts, sizeof(opts), "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd);
        if (mount("legion-lazy", dir, "fuse", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)
                return lg_error_set(err, errno, "mount fuse at `%s`", dir);
        *ret = TAKE_FD(fd);
        return 0;
}

int lg_lazy_fuse_resend(int fd) {
        struct fuse_out_header h = {.len = sizeof(h), .error = FUSE_NOTIFY_RESEND, .unique = 0};
        ssize_t n = write(fd, &h, sizeof(h));
        if (n < 0)
                return -errno;
        return n == (ssize_t) sizeof(h) ? 0 : -EIO;
}

/* ---- replies ---------------------------------------------------------- */

static void reply(lg_fuse_server *s, uint64_t unique, int error, const void *data, size_t len) {
        struct fuse_out_header h = {.len = sizeof(h) + (error ? 0 : len), .error = error, .unique = unique};
        struct iovec iov[2] = {{&h, sizeof(h)}, {(void *) data, len}};
        /* -ENOENT: the request was interrupted and is gone; nothing else to
         * do about a failed answer either (the kernel judged it). */
        ssize_t n;
        do
                n = writev(s->fd, iov, error || !len ? 1 : 2);
        while (n < 0 && errno == EINTR);
}

static void reply_err(lg_fuse_server *s, uint64_t unique, int neg_errno) {
        reply(s, unique, neg_errno < 0 ? neg_errno : -EIO, NULL, 0);
}

static void fill_attr(struct fuse_attr *a, uint64_t node, uint64_t size) {
        memset(a, 0, sizeof(*a));
        a->ino = node;
        a->blksize = 4096;
        if (node == FUSE_ROOT_ID) {
                a->mode = S_IFDIR | 0555;
                a->nlink = 2;
        } else {
                a->mode = S_IFREG | 0444;
                a->nlink = 1;
                a->size = size;
                a->blocks = (size + 511) / 512;
        }
}

/* ---- operations ------------------------------------------------------- */

static void op_init(lg_fuse_server *s, const struct fuse_in_header *h, const void *arg, size_t len) {
        const struct fuse_init_in *in = arg;
        if (len < 16) /* major, minor, max_readahead, flags */
                return reply_err(s, h->unique, -EINVAL);
        struct fuse_init_out out = {.major = FUSE_KERNEL_VERSION};
        if (in->major > FUSE_KERNEL_VERSION) {
                /* The kernel offers a newer major: say ours, it asks again. */
                return reply(s, h->unique, 0, &out, sizeof(out));
        }
        if (in->major < FUSE_KERNEL_VERSION || in->minor < 23)
                return reply_err(s, h->unique, -EPROTO);
        out.minor = in->minor < FUSE_PROTO_MINOR ? in->minor : FUSE_PROTO_MINOR;
        out.max_readahead = in->max_readahead;
        out.flags = (FUSE_ASYNC_READ | FUSE_MAX_PAGES) & in->flags;
        out.max_background = 64;
        out.congestion_threshold = 48;
        out.max_write = 4096;
        out.time_gran = 1;
        out.max_pages = MAX_PAGES;
        reply(s, h->unique, 0, &out, sizeof(out));
}

static void op_lookup(lg_fuse_server *s, const struct fuse_in_header *h, const char *name, size_t len) {
        if (h->nodeid != FUSE_ROOT_ID)
                return reply_err(s, h->unique, -ENOTDIR);
        if (!len || !memchr(name, 0, len))
                return reply_err(s, h->unique, -EINVAL);
        uint64_t node, size;
        int r = s->ops.lookup(s->ops.ud, name, &node, &size);
        if (r < 0)
                return reply_err(s, h->unique, r);
        struct fuse_entry_out e = {.nodeid = node, .entry_valid = ENTRY_TTL, .attr_valid = ATTR_TTL};
        fill_attr(&e.attr, node, size);
        reply(s, h->unique, 0, &e, sizeof(e));
}

static int attr_of(lg_fuse_server *s, uint64_t node, uint64_t *size) {
        *size = 0;
        if (node == FUSE_ROOT_ID)
                return 0;
        int r = s->ops.getattr(s->ops.ud, node, size);
        /* A node the kernel holds but no layer answers to (detached): stale. */
        return r == -ENOENT ? -ESTALE : r;
}

static void op_getattr(lg_fuse_server *s, const struct fuse_in_header *h) {
        uint64_t size;
        int r = attr_of(s, h->nodeid, &size);
        if (r < 0)
                return reply_err(s, h->unique, r);
        struct fuse_attr_out a = {.attr_valid = ATTR_TTL};
        fill_attr(&a.attr, h->nodeid, size);
        reply(s, h->unique, 0, &a, sizeof(a));
}

static void op_open(lg_fuse_server *s, const struct fuse_in_header *h, const void *arg, size_t len, bool dir) {
        const struct fuse_open_in *in = arg;
        if (len < sizeof(*in))
                return reply_err(s, h->unique, -EINVAL);
        if ((in->flags & O_ACCMODE) != O_RDONLY)
                return reply_err(s, h->unique, -EROFS);
        if (dir != (h->nodeid == FUSE_ROOT_ID))
                return reply_err(s, h->unique, dir ? -ENOTDIR : -EISDIR);
        uint64_t size;
        int r = attr_of(s, h->nodeid, &size);
        if (r < 0)
                return reply_err(s, h->unique, r);
        /* fh = node id: no state a later server would lack. */
        struct fuse_open_out o = {.fh = h->nodeid, .open_flags = dir ? 0 : FOPEN_DIRECT_IO};
        reply(s, h->unique, 0, &o, sizeof(o));
}

static void op_read(lg_fuse_server *s, const struct fuse_in_header *h, const void *arg, size_t len, void *buf,
                    size_t cap) {
        const struct fuse_read_in *in = arg;
        if (len < sizeof(*in))
                return reply_err(s, h->unique, -EINVAL);
        if (h->nodeid == FUSE_ROOT_ID)
                return reply_err(s, h->unique, -EISDIR);
        _cleanup_free_ void *big = NULL;
        if (in->size > cap) {
                /* More than negotiated: still answered whole, never cut. */
                if (in->size > (64u << 20) || !(big = malloc(in->size)))
                        return reply_err(s, h->unique, -EIO);
                buf = big;
        }
        ssize_t n = s->ops.read(s->ops.ud, h->nodeid, in->offset, in->size, buf);
        if (n == LG_FUSE_LEAVE)
                return;
        if (n < 0)
                return reply_err(s, h->unique, (int) n);
        reply(s, h->unique, 0, buf, (size_t) n);
}

static size_t add_dirent(char *buf, size_t cap, size_t at, uint64_t ino, uint64_t off, const char *name,
                         uint32_t type) {
        size_t nl = strlen(name);
        size_t rec = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + nl);
        if (at + rec > cap)
                return 0;
        struct fuse_dirent *d = (struct fuse_dirent *) (buf + at);
        memset(d, 0, rec);
        d->ino = ino;
        d->off = off;
        d->namelen = (uint32_t) nl;
        d->type = type;
        memcpy(d->name, name, nl);
        return rec;
}

/* Cookies: "." is 1, ".." 2, a file node+2 (node ids > 1), so that a
 * listing resumes after the last node seen even if files came and went. */
static void op_readdir(lg_fuse_server *s, const struct fuse_in_header *h, const void *arg, size_t len, char *buf,
                       size_t cap) {
        const struct fuse_read_in *in = arg;
        if (len < sizeof(*in))
                return reply_err(s, h->unique, -EINVAL);
        if (h->nodeid != FUSE_ROOT_ID)
                return reply_err(s, h->unique, -ENOTDIR);
        size_t max = in->size < cap ? in->size : cap, at = 0, rec;
        uint64_t off = in->offset;
        if (off < 1) {
                if (!(rec = add_dirent(buf, max, at, FUSE_ROOT_ID, 1, ".", DT_DIR)))
                        goto out;
                at += rec;
                off = 1;
        }
        if (off < 2) {
                if (!(rec = add_dirent(buf, max, at, FUSE_ROOT_ID, 2, "..", DT_DIR)))
                        goto out;
                at += rec;
                off = 2;
        }
        for (uint64_t after = off - 2;;) {
                uint64_t node;
                char name[256];
                if (s->ops.next(s->ops.ud, after, &node, name) <= 0)
                        break;
                if (!(rec = add_dirent(buf, max, at, node, node + 2, name, DT_REG)))
                        break;
                at += rec;
                after = node;
        }
out:
        reply(s, h->unique, 0, buf, at);
}

static void op_statfs(lg_fuse_server *s, const struct fuse_in_header *h) {
        struct fuse_statfs_out o = {.st = {.bsize = 4096, .frsize = 4096, .namelen = 255}};
        reply(s, h->unique, 0, &o, sizeof(o));
}

/* One request; false when the connection is over (DESTROY). */
static bool dispatch(lg_fuse_server *s, const char *req, size_t n, char *out, size_t out_cap) {
        const struct fuse_in_header *h = (const void *) req;
        const char *arg = req + sizeof(*h);
        size_t len = n - sizeof(*h);
        switch (h->opcode) {
        case FUSE_INIT: op_init(s, h, arg, len); break;
        case FUSE_LOOKUP: op_lookup(s, h, arg, len); break;
        case FUSE_GETATTR: op_getattr(s, h); break;
        case FUSE_OPEN: op_open(s, h, arg, len, false); break;
        case FUSE_OPENDIR: op_open(s, h, arg, len, true); break;
        case FUSE_READ: op_read(s, h, arg, len, out, out_cap); break;
        case FUSE_READDIR: op_readdir(s, h, arg, len, out, out_cap); break;
        case FUSE_RELEASE:
        case FUSE_RELEASEDIR:
        case FUSE_FLUSH: reply(s, h->unique, 0, NULL, 0); break;
        case FUSE_STATFS: op_statfs(s, h); break;
        case FUSE_FORGET:
        case FUSE_BATCH_FORGET:
        case FUSE_INTERRUPT:
                break; /* no answer: nodes are stateless; reads end by deadline */
        case FUSE_DESTROY:
                reply(s, h->unique, 0, NULL, 0);
                return false;
        default: reply_err(s, h->unique, -ENOSYS); break;
        }
        return true;
}

static void end_server(lg_fuse_server *s, int status, const char *msg) {
        pthread_mutex_lock(&s->lock);
        if (!s->ended) {
                s->ended = true;
                s->status = status;
                snprintf(s->msg, sizeof(s->msg), "%s", msg);
                uint64_t one = 1;
                if (write(s->stop_fd, &one, sizeof(one)) < 0 || write(s->done_fd, &one, sizeof(one)) < 0) {
                        /* eventfds do not fail a write of 1 short of overflow */
                }
        }
        pthread_mutex_unlock(&s->lock);
}

static void *reader(void *ud) {
        lg_fuse_server *s = ud;
        size_t out_cap = (size_t) MAX_PAGES * 4096;
        char *in = malloc(IN_BUF), *out = malloc(out_cap);
        if (!in || !out) {
                end_server(s, -ENOMEM, "out of memory");
                goto done;
        }
        for (;;) {
                struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN}, {.fd = s->stop_fd, .events = POLLIN}};
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        end_server(s, -errno, "poll /dev/fuse");
                        break;
                }
                if (p[1].revents)
                        break;
                ssize_t n = read(s->fd, in, IN_BUF);
                if (n < 0) {
                        /* EAGAIN: another reader took it; ENOENT: aborted
                         * before we read it. */
                        if (errno == EAGAIN || errno == EINTR || errno == ENOENT)
                                continue;
                        if (errno == ENODEV) /* unmounted or aborted */
                                end_server(s, 0, "");
                        else
                                end_server(s, -errno, "read /dev/fuse");
                        break;
                }
                const struct fuse_in_header *h = (const void *) in;
                if ((size_t) n < sizeof(*h) || h->len != (uint32_t) n) {
                        end_server(s, -EPROTO, "malformed request from /dev/fuse");
                        break;
                }
                if (!dispatch(s, in, (size_t) n, out, out_cap)) {
                        end_server(s, 0, "");
                        break;
                }
        }
done:
        free(in);
        free(out);
        return NULL;
}

int lg_fuse_server_start(const struct lg_fuse_config *cfg, lg_fuse_server **ret, struct lg_error *err) {
        if (!cfg->ops.lookup || !cfg->ops.getattr || !cfg->ops.read || !cfg->ops.next)
                return lg_error_setm(err, EINVAL, "fuse server: every op is required");
        lg_fuse_server *s = calloc(1, sizeof(*s));
        if (!s)
                return lg_error_set(err, ENOMEM, "fuse server");
        s->fd = cfg->fd;
        s->ops = cfg->ops;
        s->n_threads = cfg->threads ? cfg->threads : 8;
        s->stop_fd = eventfd(0, EFD_CLOEXEC);
        s->done_fd = eventfd(0, EFD_CLOEXEC);
        pthread_mutex_init(&s->lock, NULL);
        int r;
        s->threads = calloc(s->n_threads, sizeof(*s->threads));
        if (s->stop_fd < 0 || s->done_fd < 0 || !s->threads) {
                r = lg_error_set(err, s->threads ? errno : ENOMEM, "fuse server");
                goto fail;
        }
        /* Non-blocking: several threads poll one device and only one gets
         * each request; the others must not sleep in read() past a stop. */
        int fl = fcntl(s->fd, F_GETFL);
        if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
                r = lg_error_set(err, errno, "fuse fd %d", s->fd);
                goto fail;
        }
        if (cfg->resume && (r = lg_lazy_fuse_resend(s->fd)) < 0) {
                lg_error_set(err, -r, "FUSE_NOTIFY_RESEND (needs Linux >= 6.9)");
                goto fail;
        }
        for (; s->n_started < s->n_threads; s->n_started++) {
                r = -pthread_create(&s->threads[s->n_started], NULL, reader, s);
                if (r < 0) {
                        lg_error_set(err, -r, "fuse server thread");
                        goto fail;
                }
        }
        *ret = s;
        return 0;
fail:
        lg_fuse_server_free(s);
        return r;
}

int lg_fuse_server_done_fd(lg_fuse_server *s) { return s->done_fd; }

int lg_fuse_server_status(lg_fuse_server *s, struct lg_error *err) {
        pthread_mutex_lock(&s->lock);
        int r = s->status;
        if (r < 0)
                lg_error_set(err, -r, "%s", s->msg);
        pthread_mutex_unlock(&s->lock);
        return r;
}

void lg_fuse_server_stop(lg_fuse_server *s) {
        if (s)
                end_server(s, 0, "");
}

void lg_fuse_server_free(lg_fuse_server *s) {
        if (!s)
                return;
        if (s->stop_fd >= 0)
                lg_fuse_server_stop(s);
        for (size_t i = 0; i < s->n_started; i++)
                pthread_join(s->threads[i], NULL);
        free(s->threads);
        if (s->stop_fd >= 0)
                close(s->stop_fd);
        if (s->done_fd >= 0)
                close(s->done_fd);
        pthread_mutex_destroy(&s->lock);
        free(s);
}
