/* legion-init: the PID 1 of every Legion sandbox.
 *
 *   legion-init [--control-fd N] [--attach-fd N] [--log-max BYTES] [--worker-control]
 *               [--pass-fds N] [--user UID:GID] [--] [CMD ARGS...]
 *
 * The sandbox library has already set up namespaces, mounts, capabilities
 * and seccomp, so init needs no privileges. It starts CMD (the workload),
 * reaps every process, forwards signals, serves the host's control socket
 * (docs/init-protocol.md), optionally caps the workload's log files, and
 * relays frames between the host and a language worker. When the workload
 * exits, or the host goes away, everything in the sandbox is killed; with
 * --attach-fd (a detachable sandbox) the host may go away instead: init
 * keeps running, accepts the next host on that listening socket, and keeps
 * the workload's exit status until a host collects it.
 *
 * Design notes:
 * - One poll() loop, no threads, no signal handlers: signals arrive through
 *   a signalfd, so nothing runs asynchronously.
 * - init never blocks on a peer. Both sockets are read frame by frame with
 *   MSG_DONTWAIT and written from per-connection queues, so a workload that
 *   stops reading (or sends half a frame) cannot wedge init, and init and the
 *   host cannot deadlock writing big frames to each other.
 * - The workload is untrusted: its frames are relayed to the host tagged
 *   via=worker, without fds, and a malformed frame only closes its channel.
 *   The host is trusted: a malformed frame from it is treated like EOF.
 * - Startup is on the hot path of every sandbox start: a handful of
 *   syscalls, no stdio, almost no allocation before the workload runs. */
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

#include "common/proto.h"
#include "common/util.h"
#include "init/logcap.h"

extern char **environ;

#define EXIT_SETUP 125      /* init itself could not start */
#define EXIT_HOST_LOST 137  /* control socket EOF / protocol violation */
#define WORKER_FD 3
#define WORKER_QUEUE_MAX 8              /* host->worker frames in flight */
#define HOST_BACKLOG_MAX (256u * 1024)  /* stop reading the worker above this */
#define FRAMES_PER_WAKEUP 64

static const int forwarded[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH };

/* ---- state -------------------------------------------------------------- */

struct outframe {
        struct outframe *next;
        struct lg_msg msg;
        unsigned char hdr[4];
        size_t off; /* bytes of header + payload already sent */
};

/* One end of a framed socket: an incremental reader and a send queue. */
struct conn {
        int fd; /* -1: closed / absent */
        unsigned char hdr[4];
        size_t hgot, want, got;
        struct lg_msg in;
        struct outframe *head, **tail;
        size_t nqueued, queued_bytes;
        bool broken; /* a send failed: the peer is gone */
};

struct kid {
        pid_t pid;
        char *id; /* id= of the op=exec request, echoed in op=exited */
};

static struct {
        bool pid1;
        int sigfd;
        struct conn host, worker;
        int attach_fd;           /* listening socket for a new host; -1: none */
        pid_t workload;          /* 0: none (idle placeholder) */
        bool workload_running;   /* started, not yet reaped */
        bool workload_exited;    /* reaped, wstatus valid */
        int wstatus;
        struct kid *kids;
        size_t nkids, kidcap;
        struct lg_logpipe logs[2];
        size_t nlogs;
        int child_out, child_err; /* log pipe write ends, or -1: inherit 1/2 */
        int devnull;
        bool run_as;              /* --user: children run as run_uid/run_gid */
        uid_t run_uid;
        gid_t run_gid;
        uint64_t deadline;        /* shutdown grace expiry, 0: none */
        char *shutdown_id;
} S = {
        .sigfd = -1,
        .attach_fd = -1,
        .host = { .fd = -1 },
        .worker = { .fd = -1 },
        .child_out = -1,
        .child_err = -1,
        .devnull = -1,
};

_Noreturn static void finish(bool host_lost, int code, const char *message);

/* ---- small helpers ------------------------------------------------------ */

/* Diagnostics go straight to fd 2 with write(2): no stdio buffers that a
 * later _exit or fork could lose or duplicate. */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
        char buf[1024] = "legion-init: ";
        const size_t pre = 13, room = sizeof(buf) - pre - 1;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf + pre, room, fmt, ap);
        va_end(ap);
        size_t len = pre + (n < 0 ? 0 : (size_t) n < room ? (size_t) n : room - 1);
        buf[len++] = '\n';
        (void) lg_write_all(STDERR_FILENO, buf, len);
}

static void msg_start(struct lg_msg *m, const char *op, const struct lg_msg *req) {
        lg_msg_init(m);
        lg_msg_add(m, "op", op);
        const char *id = req ? lg_msg_get(req, "id") : NULL;
        if (id)
                lg_msg_add(m, "id", id);
}

static void add_status(struct lg_msg *m, int st) {
        if (WIFSIGNALED(st)) {
                lg_msg_addf(m, "signal", "%d", WTERMSIG(st));
                if (WCOREDUMP(st))
                        lg_msg_add(m, "core", "1");
        } else {
                lg_msg_addf(m, "code", "%d", WEXITSTATUS(st));
        }
}

static int status_code(int st) {
        return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

/* ---- framed connections ------------------------------------------------- */

static void conn_close(struct conn *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        lg_msg_free(&c->in);
        c->hgot = c->want = c->got = 0;
        while (c->head) {
                struct outframe *f = c->head;
                c->head = f->next;
                lg_msg_free(&f->msg);
                free(f);
        }
        c->tail = &c->head;
        c->nqueued = c->queued_bytes = 0;
        c->broken = false;
}

/* Move *m to the send queue (m is left empty). */
static void conn_queue(struct conn *c, struct lg_msg *m) {
        struct outframe *f = calloc(1, sizeof(*f));
        if (!f || m->len == 0) {
                free(f);
                lg_msg_free(m);
                return;
        }
        f->msg = *m;
        lg_msg_init(m);
        for (size_t i = 0; i < sizeof(f->hdr); i++)
                f->hdr[i] = (unsigned char) (f->msg.len >> (8 * i)); /* little-endian */
        *c->tail = f;
        c->tail = &f->next;
        c->nqueued++;
        c->queued_bytes += sizeof(f->hdr) + f->msg.len;
}

/* Send what the socket takes now. Returns 0 or -errno (peer gone). */
static int conn_flush(struct conn *c) {
        while (c->fd >= 0 && c->head) {
                struct outframe *f = c->head;
                struct lg_msg *m = &f->msg;
                struct iovec iov[2];
                int niov = 0;
                if (f->off < sizeof(f->hdr))
                        iov[niov++] = (struct iovec){ f->hdr + f->off, sizeof(f->hdr) - f->off };
                size_t poff = f->off < sizeof(f->hdr) ? 0 : f->off - sizeof(f->hdr);
                iov[niov++] = (struct iovec){ m->buf + poff, m->len - poff };
                struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t) niov };
                union {
                        struct cmsghdr align;
                        char buf[CMSG_SPACE(sizeof(int) * LG_PROTO_MAX_FDS)];
                } cm;
                if (f->off == 0 && m->nfds > 0) {
                        memset(&cm, 0, sizeof(cm));
                        mh.msg_control = cm.buf;
                        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t) m->nfds);
                        struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
                        h->cmsg_level = SOL_SOCKET;
                        h->cmsg_type = SCM_RIGHTS;
                        h->cmsg_len = CMSG_LEN(sizeof(int) * (size_t) m->nfds);
                        memcpy(CMSG_DATA(h), m->fds, sizeof(int) * (size_t) m->nfds);
                }
                ssize_t k = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return -errno;
                }
                if (f->off == 0) {
                        /* The fds went with the first byte; drop our copies. */
                        for (int i = 0; i < m->nfds; i++) {
                                close(m->fds[i]);
                                m->fds[i] = -1;
                        }
                        m->nfds = 0;
                }
                f->off += (size_t) k;
                if (f->off < sizeof(f->hdr) + m->len)
                        continue;
                c->head = f->next;
                if (!c->head)
                        c->tail = &c->head;
                c->nqueued--;
                c->queued_bytes -= sizeof(f->hdr) + m->len;
                lg_msg_free(m);
                free(f);
        }
        return 0;
}

/* Read what is available without blocking. Returns 1 with a complete frame
 * in *out, 0 if more data is needed, -ESHUTDOWN on EOF between frames,
 * -EPROTO for a malformed frame (or EOF inside one), other -errno. Never
 * reads past the end of the current frame, so received fds belong to it. */
static int conn_read(struct conn *c, struct lg_msg *out) {
        for (;;) {
                char *dst;
                size_t want;
                if (c->hgot < sizeof(c->hdr)) {
                        dst = (char *) c->hdr + c->hgot;
                        want = sizeof(c->hdr) - c->hgot;
                } else {
                        dst = c->in.buf + c->got;
                        want = c->want - c->got;
                }
                union {
                        struct cmsghdr align;
                        char buf[CMSG_SPACE(sizeof(int) * LG_PROTO_MAX_FDS)];
                } cm;
                struct iovec iov = { dst, want };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                                     .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf) };
                ssize_t k = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : -errno;
                }
                int bad = (mh.msg_flags & MSG_CTRUNC) != 0;
                for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h)) {
                        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
                                continue;
                        size_t n = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        for (size_t i = 0; i < n; i++) {
                                int fd;
                                memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
                                if (c->in.nfds < LG_PROTO_MAX_FDS)
                                        c->in.fds[c->in.nfds++] = fd;
                                else {
                                        close(fd);
                                        bad = 1;
                                }
                        }
                }
                if (bad)
                        return -EPROTO;
                if (k == 0)
                        return c->hgot == 0 && c->in.nfds == 0 ? -ESHUTDOWN : -EPROTO;
                if (c->hgot < sizeof(c->hdr)) {
                        c->hgot += (size_t) k;
                        if (c->hgot < sizeof(c->hdr))
                                continue;
                        uint32_t len = (uint32_t) c->hdr[0] | (uint32_t) c->hdr[1] << 8 |
                                       (uint32_t) c->hdr[2] << 16 | (uint32_t) c->hdr[3] << 24;
                        if (len == 0 || len > LG_PROTO_MAX)
                                return -EPROTO;
                        if (c->in.cap < len) {
                                char *p = realloc(c->in.buf, len);
                                if (!p)
                                        return -ENOMEM;
                                c->in.buf = p;
                                c->in.cap = len;
                        }
                        c->want = len;
                        c->got = 0;
                        continue;
                }
                c->got += (size_t) k;
                if (c->got < c->want)
                        continue;
                c->hgot = 0;
                if (lg_msg_parse(&c->in, c->in.buf, c->want) < 0)
                        return -EPROTO;
                *out = c->in;
                lg_msg_init(&c->in);
                return 1;
        }
}

/* The host's end of the control socket is gone (EOF, an error, or a frame
 * from it that makes no sense). Without an attach socket that is the end
 * of the sandbox; with one, the sandbox carries on detached until the next
 * host attaches. */
static void host_lost(void) {
        if (S.attach_fd < 0)
                finish(true, EXIT_HOST_LOST, NULL);
        conn_close(&S.host);
}

/* Queue a frame for the host and push it out right away when possible. */
static void send_host(struct lg_msg *m) {
        if (S.host.fd < 0) {
                lg_msg_free(m);
                return;
        }
        conn_queue(&S.host, m);
        if (conn_flush(&S.host) < 0)
                S.host.broken = true;
}

__attribute__((format(printf, 2, 3))) static void reply_error(const struct lg_msg *req, const char *fmt, ...) {
        char text[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        struct lg_msg r;
        msg_start(&r, "error", req);
        lg_msg_add(&r, "message", text);
        send_host(&r);
}

/* ---- processes ---------------------------------------------------------- */

/* How many extra fds (from 4 up) the host may hand to the workload. */
#define LG_INIT_MAX_PASS_FDS 16

struct spawn {
        char *const *argv;
        char *const *envp;
        const char *cwd;
        int fd[4]; /* what becomes the child's fd 0..3; -1: leave alone */
        int pass_fds; /* fds 4..4+pass_fds-1 are inherited as they are */
};

enum { STAGE_SETUP, STAGE_CHDIR, STAGE_EXEC, STAGE_USER };
struct spawn_err {
        int stage;
        int err;
};

_Noreturn static void spawn_fail(int errfd, int stage) {
        struct spawn_err e = { stage, errno };
        (void) !write(errfd, &e, sizeof(e));
        _exit(e.err == ENOENT ? 127 : 126);
}

/* In a child: become run_uid/run_gid with no supplementary groups, and
 * give up every capability (init holds CAP_SETUID/SETGID for this; a
 * run_uid of 0 must not keep them either). */
static int drop_to_user(void) {
        if (setgroups(0, NULL) < 0 || setresgid(S.run_gid, S.run_gid, S.run_gid) < 0 ||
            setresuid(S.run_uid, S.run_uid, S.run_uid) < 0)
                return -errno;
        struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct data[2];
        memset(data, 0, sizeof(data));
        return syscall(SYS_capset, &hdr, data) < 0 ? -errno : 0;
}

_Noreturn static void spawn_child(const struct spawn *sp, int errfd, pid_t parent) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (!S.pid1) {
                /* Outside a PID namespace we cannot kill(-1): give each child
                 * its own process group to kill later, and let it die with
                 * us if init itself is killed. */
                setpgid(0, 0);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(EXIT_HOST_LOST);
        }
        /* Targets in order 0..3: every source is >= 3 and distinct, and a
         * source equal to 3 is consumed before fd 3 is replaced. */
        for (int i = 0; i < 4; i++) {
                int src = sp->fd[i];
                if (src < 0)
                        continue;
                if (src == i ? fcntl(i, F_SETFD, 0) < 0 : dup2(src, i) < 0)
                        spawn_fail(errfd, STAGE_SETUP);
        }
        for (int i = 0; i < sp->pass_fds; i++)
                if (fcntl(4 + i, F_SETFD, 0) < 0)
                        spawn_fail(errfd, STAGE_SETUP);
        if (S.run_as && drop_to_user() < 0)
                spawn_fail(errfd, STAGE_USER);
        if (sp->cwd && chdir(sp->cwd) < 0)
                spawn_fail(errfd, STAGE_CHDIR);
        execvpe(sp->argv[0], sp->argv, sp->envp);
        spawn_fail(errfd, STAGE_EXEC);
}

/* fork + execvpe, waiting until the exec has happened so that failures
 * come back as an errno instead of a mysterious exit code. Returns the pid,
 * or -errno with *e saying which step failed. */
static pid_t spawn(const struct spawn *sp, struct spawn_err *e) {
        int ep[2];
        *e = (struct spawn_err){ STAGE_SETUP, 0 };
        if (pipe2(ep, O_CLOEXEC) < 0)
                return e->err = errno, -errno;
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
                e->err = errno;
                close(ep[0]);
                close(ep[1]);
                return -e->err;
        }
        if (pid == 0)
                spawn_child(sp, ep[1], parent);
        close(ep[1]);
        ssize_t n;
        do
                n = read(ep[0], e, sizeof(*e));
        while (n < 0 && errno == EINTR);
        close(ep[0]);
        if (n != (ssize_t) sizeof(*e))
                return pid; /* EOF: exec succeeded and closed the pipe */
        (void) waitpid(pid, NULL, 0);
        return -(e->err > 0 ? e->err : EIO);
}

static const char *stage_name(int stage) {
        return stage == STAGE_EXEC ? "exec" : stage == STAGE_CHDIR ? "chdir" : stage == STAGE_USER ? "set user for" : "start";
}

static struct kid *find_kid(pid_t pid) {
        for (size_t i = 0; i < S.nkids; i++)
                if (S.kids[i].pid == pid)
                        return &S.kids[i];
        return NULL;
}

static void on_reaped(pid_t pid, int st) {
        if (S.workload_running && pid == S.workload) {
                S.workload_running = false;
                S.workload_exited = true;
                S.wstatus = st;
                return;
        }
        struct kid *k = find_kid(pid);
        if (!k)
                return; /* an orphan that was reparented to us */
        struct lg_msg m;
        msg_start(&m, "exited", NULL);
        if (k->id)
                lg_msg_add(&m, "id", k->id);
        lg_msg_addf(&m, "pid", "%d", (int) pid);
        add_status(&m, st);
        send_host(&m);
        free(k->id);
        *k = S.kids[--S.nkids];
}

static void reap(void) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
                on_reaped(p, st);
}

static bool kill_pid_and_group(pid_t p) {
        return (kill(p, SIGKILL) == 0) | (kill(-p, SIGKILL) == 0); /* both, always */
}

/* SIGKILL everything we can reach. Returns whether anything was signalled. */
static bool kill_everything(void) {
        if (S.pid1)
                return kill(-1, SIGKILL) == 0; /* the whole PID namespace */

        bool any = false;
        if (S.workload > 0 && kill_pid_and_group(S.workload))
                any = true;
        for (size_t i = 0; i < S.nkids; i++)
                if (kill_pid_and_group(S.kids[i].pid))
                        any = true;
        /* Orphans reparented to us (we are a subreaper) may have left the
         * groups above with setsid(); the kernel lists our children. */
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int) getpid());
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t n = lg_read_all(fd, buf, sizeof(buf) - 1);
                buf[n > 0 ? n : 0] = '\0';
                for (char *p = buf; *p;) {
                        char *end;
                        long v = strtol(p, &end, 10);
                        if (end == p)
                                break;
                        if (v > 0 && kill_pid_and_group((pid_t) v))
                                any = true;
                        p = end;
                }
        }
        return any;
}

static void kill_and_reap(void) {
        for (unsigned idle = 0;;) {
                bool targets = kill_everything();
                int st;
                pid_t p;
                while ((p = waitpid(-1, &st, WNOHANG)) > 0)
                        on_reaped(p, st);
                if (p < 0)
                        return; /* ECHILD: nothing left */
                if (targets) {
                        p = waitpid(-1, &st, 0);
                        if (p > 0)
                                on_reaped(p, st);
                        else if (errno == ECHILD)
                                return;
                        continue;
                }
                /* Children we cannot find (no /proc): wait a little, then
                 * leave them to our own parent. */
                if (++idle > 200)
                        return;
                nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
        }
}

/* ---- logs --------------------------------------------------------------- */

/* Route fd (1 or 2) through a capped pipe. Returns the write end or -1.
 * init keeps the write end so exec'd children can share it; the pipe never
 * reports EOF and is drained at exit instead. */
static int add_logpipe(int fd, uint64_t cap) {
        int w = lg_logpipe_open(&S.logs[S.nlogs], fd, cap);
        if (w < 0) {
                say("not capping fd %d: %s", fd, strerror(-w));
                return -1;
        }
        S.nlogs++;
        return w;
}

static void setup_logs(uint64_t cap) {
        struct stat o, e;
        bool reg_out = fstat(STDOUT_FILENO, &o) == 0 && S_ISREG(o.st_mode);
        bool reg_err = fstat(STDERR_FILENO, &e) == 0 && S_ISREG(e.st_mode);
        if (reg_out)
                S.child_out = add_logpipe(STDOUT_FILENO, cap);
        /* One file for both (2>&1): one pipe, so order is kept and two
         * writers do not fight over the same file. */
        if (reg_out && reg_err && o.st_dev == e.st_dev && o.st_ino == e.st_ino)
                S.child_err = S.child_out;
        else if (reg_err)
                S.child_err = add_logpipe(STDERR_FILENO, cap);
}

/* ---- exit --------------------------------------------------------------- */

/* Keep sending the last frames even if the host is busy writing to us:
 * read and discard its input meanwhile so neither side can deadlock. */
static void host_flush_final(void) {
        bool readable = true;
        while (S.host.fd >= 0 && S.host.head) {
                if (conn_flush(&S.host) < 0 || !S.host.head)
                        return;
                struct pollfd p = { S.host.fd, (short) (POLLOUT | (readable ? POLLIN : 0)), 0 };
                if (poll(&p, 1, -1) < 0 && errno != EINTR)
                        return;
                if (p.revents & POLLIN) {
                        struct lg_msg junk;
                        lg_msg_init(&junk);
                        int r = conn_read(&S.host, &junk);
                        lg_msg_free(&junk);
                        if (r < 0)
                                readable = false;
                }
                if ((p.revents & (POLLHUP | POLLERR | POLLNVAL)) && !(p.revents & POLLOUT))
                        return;
        }
}

/* A host connects on the attach socket and replaces the current one (whose
 * queued frames are dropped): the newest host wins, so a host that died
 * without our noticing yet never locks out its successor. As PID 1 only
 * a peer outside the sandbox's pid namespace is taken (its pid reads 0
 * here): nothing inside can reach the socket's path on the host, and this
 * makes sure of it. The host's first frame is op=attached. */
static bool accept_host(void) {
        int fd = accept4(S.attach_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
                return false;
        struct ucred cr;
        socklen_t cl = sizeof(cr);
        if (S.pid1 && (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 || cr.pid != 0)) {
                close(fd);
                return false;
        }
        conn_close(&S.host);
        S.host.fd = fd;
        struct lg_msg m;
        msg_start(&m, "attached", NULL);
        if (S.workload_running)
                lg_msg_addf(&m, "workload", "%d", (int) S.workload);
        send_host(&m);
        return true;
}

/* Detached and done: keep the exit status until a host attaches to
 * collect it. SIGTERM or SIGINT (nothing is left inside to send them)
 * gives up and exits without a report. */
static void await_host(void) {
        while (S.host.fd < 0) {
                struct pollfd p[2] = {{S.attach_fd, POLLIN, 0}, {S.sigfd, POLLIN, 0}};
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return;
                }
                if (p[1].revents) {
                        struct signalfd_siginfo si;
                        while (read(S.sigfd, &si, sizeof(si)) == (ssize_t) sizeof(si))
                                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
                                        return;
                }
                if (p[0].revents)
                        accept_host();
        }
}

/* Kill everything, collect the last log output, report and exit. With
 * host_lost the host is gone: no report, exit 137. Otherwise the exit code
 * is the workload's (N or 128+S) if it ran, else code. op=exit is sent only
 * after every process is reaped and its output is in the log files, so the
 * host can read complete logs as soon as it sees it. */
_Noreturn static void finish(bool host_lost, int code, const char *message) {
        kill_and_reap();
        for (size_t i = 0; i < S.nlogs; i++)
                lg_logpipe_pump(&S.logs[i], true);
        if (host_lost)
                _exit(EXIT_HOST_LOST);
        if (S.workload_exited)
                code = status_code(S.wstatus);
        if (S.attach_fd >= 0) {
                if (S.host.broken)
                        conn_close(&S.host);
                await_host();
        }
        if (S.host.fd >= 0 && !S.host.broken) {
                struct lg_msg m;
                msg_start(&m, "exit", NULL);
                if (S.shutdown_id)
                        lg_msg_add(&m, "id", S.shutdown_id);
                if (S.workload_exited)
                        add_status(&m, S.wstatus);
                else
                        lg_msg_addf(&m, "code", "%d", code);
                if (message)
                        lg_msg_add(&m, "message", message);
                send_host(&m);
                host_flush_final();
        }
        _exit(code);
}

/* ---- control verbs ------------------------------------------------------ */

static int parse_signal(const char *s) {
        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        char *end;
        long v = strtol(s, &end, 10);
        return *end || v < 1 || v >= NSIG ? -EINVAL : (int) v;
}

static void op_exec(const struct lg_msg *m) {
        size_t nargs = 0, nenv = 0, pos = 0;
        while (lg_msg_next(m, "arg", &pos))
                nargs++;
        pos = 0;
        while (lg_msg_next(m, "env", &pos))
                nenv++;
        if (nargs == 0) {
                reply_error(m, "exec needs at least one arg=");
                return;
        }

        const char *id = lg_msg_get(m, "id");
        _cleanup_free_ char *idcopy = id ? strdup(id) : NULL;
        _cleanup_free_ char **argv = calloc(nargs + 1, sizeof(char *));
        _cleanup_free_ char **envp = calloc(nenv + 1, sizeof(char *));
        if (S.nkids == S.kidcap) {
                size_t ncap = S.kidcap ? S.kidcap * 2 : 8;
                struct kid *k = realloc(S.kids, ncap * sizeof(*k));
                if (k) {
                        S.kids = k;
                        S.kidcap = ncap;
                }
        }
        if (!argv || !envp || (id && !idcopy) || S.nkids == S.kidcap) {
                reply_error(m, "exec: %s", strerror(ENOMEM));
                return;
        }
        pos = 0;
        for (size_t i = 0; i < nargs; i++)
                argv[i] = (char *) lg_msg_next(m, "arg", &pos);
        pos = 0;
        for (size_t i = 0; i < nenv; i++)
                envp[i] = (char *) lg_msg_next(m, "env", &pos);

        struct spawn sp = {
                .argv = argv, .envp = nenv ? envp : environ, .cwd = lg_msg_get(m, "cwd"),
                .fd = { -1, S.child_out, S.child_err, -1 },
        };
        if (m->nfds == 3) {
                for (int i = 0; i < 3; i++)
                        sp.fd[i] = m->fds[i];
        } else {
                if (S.devnull < 0)
                        S.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (S.devnull < 0) {
                        reply_error(m, "open /dev/null: %s", strerror(errno));
                        return;
                }
                sp.fd[0] = S.devnull;
        }

        struct spawn_err e;
        pid_t pid = spawn(&sp, &e);
        if (pid < 0) {
                const char *what = e.stage == STAGE_CHDIR ? sp.cwd : argv[0];
                reply_error(m, "%s `%s`: %s", stage_name(e.stage), what, strerror(-pid));
                return;
        }
        S.kids[S.nkids++] = (struct kid){ pid, TAKE_PTR(idcopy) };
        struct lg_msg r;
        msg_start(&r, "started", m);
        lg_msg_addf(&r, "pid", "%d", (int) pid);
        send_host(&r);
}

static void op_signal(const struct lg_msg *m) {
        int sig = parse_signal(lg_msg_get(m, "sig"));
        if (sig < 0) {
                reply_error(m, "signal needs sig=N (a signal number)");
                return;
        }
        long long pid;
        int r = lg_msg_get_int(m, "pid", &pid);
        if (r == -ENOENT) {
                if (!S.workload_running) {
                        reply_error(m, "no workload is running");
                        return;
                }
                pid = S.workload;
        } else if (r < 0 || pid <= 0 || pid > INT32_MAX) {
                reply_error(m, "bad pid=");
                return;
        } else if (!(S.workload_running && pid == S.workload) && !find_kid((pid_t) pid)) {
                /* Only our own children: their pids cannot be recycled
                 * until we reap them, so we never signal a stranger. */
                reply_error(m, "pid %lld is not a child of legion-init", pid);
                return;
        }
        if (kill((pid_t) pid, sig) < 0) {
                reply_error(m, "kill %lld: %s", pid, strerror(errno));
                return;
        }
        struct lg_msg ok;
        msg_start(&ok, "ok", m);
        send_host(&ok);
}

static void op_shutdown(const struct lg_msg *m) {
        long long grace = 0;
        int r = lg_msg_get_int(m, "grace", &grace);
        if (r == -EINVAL || grace < 0) {
                reply_error(m, "bad grace=");
                return;
        }
        if (grace > 86400)
                grace = 86400;
        const char *id = lg_msg_get(m, "id");
        if (id) {
                free(S.shutdown_id);
                S.shutdown_id = strdup(id);
        }
        if (!S.workload_running || grace == 0)
                finish(false, 0, NULL);
        kill(S.workload, SIGTERM);
        uint64_t deadline = lg_now_ns() + (uint64_t) grace * 1000000000ULL;
        if (S.deadline == 0 || deadline < S.deadline)
                S.deadline = deadline;
}

/* m is owned by the caller, which frees it; relaying takes its content. */
static void host_frame(struct lg_msg *m) {
        const char *op = lg_msg_get(m, "op");
        if (!strcmp(op, "ping")) {
                struct lg_msg r;
                msg_start(&r, "pong", m);
                if (S.workload_running)
                        lg_msg_addf(&r, "workload", "%d", (int) S.workload);
                send_host(&r);
        } else if (!strcmp(op, "exec")) {
                op_exec(m);
        } else if (!strcmp(op, "signal")) {
                op_signal(m);
        } else if (!strcmp(op, "shutdown")) {
                op_shutdown(m);
        } else if (!strcmp(op, "specialize")) {
                if (S.worker.fd < 0)
                        reply_error(m, "no worker control channel");
                else if (S.worker.nqueued >= WORKER_QUEUE_MAX)
                        reply_error(m, "worker is not reading its control channel");
                else {
                        conn_queue(&S.worker, m);
                        if (conn_flush(&S.worker) < 0)
                                S.worker.broken = true;
                }
        } else {
                reply_error(m, "unknown op `%.100s`", op);
        }
}

static void worker_closed(const char *why) {
        conn_close(&S.worker);
        if (why) {
                struct lg_msg m;
                msg_start(&m, "error", NULL);
                lg_msg_addf(&m, "message", "worker control channel closed: %s", why);
                send_host(&m);
        }
}

/* A frame from the (untrusted) workload: tag it so it cannot pose as init's
 * own op=exit/op=exited, drop its fds, and pass it on. */
static void worker_frame(struct lg_msg *m) {
        for (int i = 0; i < m->nfds; i++) {
                close(m->fds[i]);
                m->fds[i] = -1;
        }
        m->nfds = 0;
        if (lg_msg_get(m, "via") || lg_msg_add(m, "via", "worker") < 0) {
                worker_closed("protocol error");
                return;
        }
        send_host(m);
}

/* ---- main loop ---------------------------------------------------------- */

static void handle_signals(void) {
        struct signalfd_siginfo si[16];
        bool chld = false;
        for (;;) {
                ssize_t n = read(S.sigfd, si, sizeof(si));
                if (n <= 0)
                        break;
                for (size_t i = 0; i < (size_t) n / sizeof(si[0]); i++) {
                        int sig = (int) si[i].ssi_signo;
                        /* As PID 1 we share the workload's process group, so
                         * a terminal's ^C or SIGWINCH (SI_KERNEL) reached it
                         * already. A sender inside the sandbox (ssi_pid != 0;
                         * the host is invisible to us) may poke the workload
                         * but not make an idle init exit. */
                        bool tty = S.pid1 && si[i].ssi_code == SI_KERNEL;
                        bool inside = S.pid1 && si[i].ssi_pid != 0;
                        if (sig == SIGCHLD)
                                chld = true;
                        else if (S.workload_running && !tty)
                                kill(S.workload, sig);
                        else if (!S.workload_running && !inside && (sig == SIGTERM || sig == SIGINT))
                                finish(false, 0, NULL);
                }
        }
        if (chld)
                reap();
}

static void handle_host(short revents) {
        if (revents & POLLOUT && conn_flush(&S.host) < 0)
                S.host.broken = true;
        if (!(revents & (POLLIN | POLLHUP | POLLERR)))
                return;
        for (int i = 0; i < FRAMES_PER_WAKEUP && S.host.fd >= 0; i++) {
                struct lg_msg m;
                lg_msg_init(&m);
                int r = conn_read(&S.host, &m);
                if (r == 0)
                        return;
                if (r < 0) {
                        /* EOF: the host died. Anything else from the only
                         * trusted peer means it is confused: same answer. */
                        if (r != -ESHUTDOWN && r != -ECONNRESET)
                                say("control socket: %s, %s", strerror(-r),
                                    S.attach_fd < 0 ? "killing the sandbox" : "detaching");
                        host_lost();
                        return;
                }
                host_frame(&m);
                lg_msg_free(&m);
        }
}

static void handle_worker(short revents) {
        if (revents & POLLOUT && conn_flush(&S.worker) < 0) {
                worker_closed(NULL);
                return;
        }
        if (!(revents & (POLLIN | POLLHUP | POLLERR)))
                return;
        for (int i = 0; i < FRAMES_PER_WAKEUP && S.worker.fd >= 0; i++) {
                if (S.host.queued_bytes >= HOST_BACKLOG_MAX)
                        return; /* back-pressure: the host is not reading */
                struct lg_msg m;
                lg_msg_init(&m);
                int r = conn_read(&S.worker, &m);
                if (r == 0)
                        return;
                if (r < 0) {
                        worker_closed(r == -EPROTO ? "protocol error" : NULL);
                        return;
                }
                worker_frame(&m);
                lg_msg_free(&m);
        }
}

_Noreturn static void loop(void) {
        enum { P_SIG, P_HOST, P_WORKER, P_LOG0, P_LOG1, P_ATTACH, P_N };
        for (;;) {
                if (S.host.broken)
                        host_lost();
                if (S.worker.broken)
                        worker_closed(NULL);
                if (S.workload_exited)
                        finish(false, 0, NULL);

                struct pollfd p[P_N] = {
                        [P_SIG] = { S.sigfd, POLLIN, 0 },
                        [P_HOST] = { S.host.fd, (short) (POLLIN | (S.host.head ? POLLOUT : 0)), 0 },
                        [P_WORKER] = { -1, 0, 0 },
                        [P_LOG0] = { S.nlogs > 0 ? S.logs[0].rfd : -1, POLLIN, 0 },
                        [P_LOG1] = { S.nlogs > 1 ? S.logs[1].rfd : -1, POLLIN, 0 },
                        [P_ATTACH] = { S.attach_fd, POLLIN, 0 },
                };
                /* With the host backlogged, leave the worker out entirely
                 * (not just POLLIN) so its POLLHUP cannot make us spin. */
                short wev = (short) ((S.host.queued_bytes < HOST_BACKLOG_MAX ? POLLIN : 0) |
                                     (S.worker.head ? POLLOUT : 0));
                if (S.worker.fd >= 0 && wev) {
                        p[P_WORKER].fd = S.worker.fd;
                        p[P_WORKER].events = wev;
                }

                int timeout = -1;
                if (S.deadline) {
                        uint64_t now = lg_now_ns();
                        if (now >= S.deadline)
                                finish(false, 0, NULL);
                        uint64_t ms = (S.deadline - now + 999999) / 1000000;
                        timeout = ms > 60000 ? 60000 : (int) ms;
                }
                if (poll(p, P_N, timeout) < 0) {
                        if (errno == EINTR)
                                continue;
                        say("poll: %s", strerror(errno));
                        finish(false, EXIT_SETUP, "poll failed");
                }
                if (p[P_SIG].revents)
                        handle_signals();
                for (size_t i = 0; i < S.nlogs; i++)
                        if (p[P_LOG0 + i].revents)
                                lg_logpipe_pump(&S.logs[i], false);
                if (p[P_HOST].revents && S.host.fd >= 0)
                        handle_host(p[P_HOST].revents);
                if (p[P_ATTACH].revents)
                        accept_host();
                if (p[P_WORKER].revents && S.worker.fd >= 0)
                        handle_worker(p[P_WORKER].revents);
        }
}

/* ---- startup ------------------------------------------------------------ */

struct opts {
        int control_fd;
        int attach_fd;
        uint64_t log_max;
        bool worker_control;
        int pass_fds; /* fds 4.. handed to the workload as they are */
        char **cmd; /* NULL: idle */
};

static const char usage[] =
        "usage: legion-init [--control-fd N] [--attach-fd N] [--log-max BYTES] [--worker-control]\n"
        "                   [--pass-fds N] [--user UID:GID] [--] [CMD ARGS...]\n";

/* "--name VALUE" or "--name=VALUE". */
static bool opt_value(char **argv, int argc, int *i, const char *name, const char **val) {
        size_t n = strlen(name);
        if (strncmp(argv[*i], name, n) != 0)
                return false;
        if (argv[*i][n] == '=')
                *val = argv[*i] + n + 1;
        else if (argv[*i][n] == '\0' && *i + 1 < argc)
                *val = argv[++*i];
        else if (argv[*i][n] == '\0')
                *val = NULL;
        else
                return false;
        return true;
}

static int parse_args(int argc, char **argv, struct opts *o) {
        *o = (struct opts){ .control_fd = -1, .attach_fd = -1 };
        int i = 1;
        for (; i < argc; i++) {
                const char *a = argv[i], *v = NULL;
                if (!strcmp(a, "--")) {
                        i++;
                        break;
                }
                if (a[0] != '-')
                        break;
                if (opt_value(argv, argc, &i, "--control-fd", &v)) {
                        char *end;
                        long fd = v ? strtol(v, &end, 10) : -1;
                        if (!v || *end || end == v || fd < 3 || fd > INT32_MAX)
                                return say("--control-fd needs a descriptor number >= 3"), -EINVAL;
                        o->control_fd = (int) fd;
                } else if (opt_value(argv, argc, &i, "--attach-fd", &v)) {
                        char *end;
                        long fd = v ? strtol(v, &end, 10) : -1;
                        if (!v || *end || end == v || fd < 3 || fd > INT32_MAX)
                                return say("--attach-fd needs a descriptor number >= 3"), -EINVAL;
                        o->attach_fd = (int) fd;
                } else if (opt_value(argv, argc, &i, "--log-max", &v)) {
                        if (!v || lg_parse_size(v, &o->log_max) < 0 || o->log_max < LG_LOGCAP_MIN)
                                return say("--log-max needs a size of at least %u bytes", LG_LOGCAP_MIN), -EINVAL;
                } else if (!strcmp(a, "--worker-control")) {
                        o->worker_control = true;
                } else if (opt_value(argv, argc, &i, "--pass-fds", &v)) {
                        char *end;
                        long n = v ? strtol(v, &end, 10) : -1;
                        if (!v || *end || end == v || n < 0 || n > LG_INIT_MAX_PASS_FDS)
                                return say("--pass-fds needs a count from 0 to %d", LG_INIT_MAX_PASS_FDS), -EINVAL;
                        for (long k = 0; k < n; k++)
                                if (fcntl(4 + (int) k, F_GETFD) < 0)
                                        return say("--pass-fds: fd %ld is not open", 4 + k), -EINVAL;
                        o->pass_fds = (int) n;
                } else if (opt_value(argv, argc, &i, "--user", &v)) {
                        char *end;
                        unsigned long u = v ? strtoul(v, &end, 10) : 0, g = 0;
                        bool ok = v && end != v && *end == ':' && v[0] != '-';
                        if (ok) {
                                const char *gs = end + 1;
                                g = strtoul(gs, &end, 10);
                                ok = end != gs && !*end && gs[0] != '-' && u < UINT32_MAX && g < UINT32_MAX;
                        }
                        if (!ok)
                                return say("--user needs UID:GID"), -EINVAL;
                        S.run_as = true;
                        S.run_uid = (uid_t) u;
                        S.run_gid = (gid_t) g;
                } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
                        (void) lg_write_all(STDOUT_FILENO, usage, sizeof(usage) - 1);
                        _exit(0);
                } else {
                        return say("unknown option `%s`", a), -EINVAL;
                }
        }
        o->cmd = i < argc ? argv + i : NULL;
        return 0;
}

/* Environment for a worker: ours, with LEGION_CONTROL_FD=3 set. */
static char **worker_env(void) {
        size_t n = 0;
        while (environ[n])
                n++;
        char **env = calloc(n + 2, sizeof(char *));
        if (!env)
                return NULL;
        size_t j = 0;
        for (size_t i = 0; i < n; i++)
                if (strncmp(environ[i], "LEGION_CONTROL_FD=", 18) != 0)
                        env[j++] = environ[i];
        env[j] = (char *) "LEGION_CONTROL_FD=3";
        return env;
}

static void start_workload(char **cmd, bool worker_control, int pass_fds) {
        struct spawn sp = { .argv = cmd, .envp = environ, .fd = { -1, S.child_out, S.child_err, -1 },
                            .pass_fds = pass_fds };
        _cleanup_free_ char **env = NULL;
        _cleanup_close_ int child_end = -1;
        if (worker_control) {
                int sv[2];
                env = worker_env();
                if (!env || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                        say("worker control socket: %s", strerror(env ? errno : ENOMEM));
                        finish(false, EXIT_SETUP, "worker control socket failed");
                }
                S.worker.fd = sv[0];
                child_end = sv[1];
                sp.fd[WORKER_FD] = child_end;
                sp.envp = env;
        }
        struct spawn_err e;
        pid_t pid = spawn(&sp, &e);
        if (pid < 0) {
                char text[512];
                snprintf(text, sizeof(text), "%s `%s`: %s", stage_name(e.stage), cmd[0], strerror(-pid));
                say("%s", text);
                finish(false, -pid == ENOENT ? 127 : 126, text);
        }
        S.workload = pid;
        S.workload_running = true;
}

int main(int argc, char **argv) {
        struct opts o;
        if (parse_args(argc, argv, &o) < 0) {
                (void) lg_write_all(STDERR_FILENO, usage, sizeof(usage) - 1);
                return EXIT_SETUP;
        }

        S.pid1 = getpid() == 1;
        /* The workload must not ptrace us or open /proc/1/fd/<control>. */
        prctl(PR_SET_DUMPABLE, 0);
        if (!S.pid1)
                prctl(PR_SET_CHILD_SUBREAPER, 1);

        /* A closed 0/1/2 would let a socket or pipe land there and be handed
         * to a child as stdio. */
        for (int fd = 0; fd < 3; fd++)
                if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR | O_NOCTTY) != fd)
                        say("fd %d is closed and /dev/null is unavailable", fd);
        /* Whatever else we inherited stays out of the workload. */
        if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
                for (int fd = 3; fd < 1024; fd++)
                        fcntl(fd, F_SETFD, FD_CLOEXEC);

        /* Block before creating the signalfd so that nothing arrives in
         * between with its default action. SIGPIPE is blocked too (not
         * ignored, which exec would pass on): writes to a dead peer just
         * fail with EPIPE. Children get an empty mask back. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
                return EXIT_SETUP;
        sigdelset(&set, SIGPIPE);
        sigaddset(&set, SIGCHLD);
        for (size_t i = 0; i < ARRAY_SIZE(forwarded); i++)
                sigaddset(&set, forwarded[i]);
        if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
            (S.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
                say("signalfd: %s", strerror(errno));
                return EXIT_SETUP;
        }

        if (o.control_fd >= 0) {
                /* Frames are read in pieces: only a byte stream will do. */
                int type = 0;
                socklen_t tl = sizeof(type);
                if (getsockopt(o.control_fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM) {
                        say("--control-fd %d is not a stream socket", o.control_fd);
                        return EXIT_SETUP;
                }
                S.host.fd = o.control_fd;
        }
        if (o.attach_fd >= 0) {
                /* A listening stream socket, or no detaching: the EOF rule
                 * would then be the only safe answer to a lost host. */
                int listening = 0;
                socklen_t ll = sizeof(listening);
                if (getsockopt(o.attach_fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) < 0 || !listening ||
                    fcntl(o.attach_fd, F_SETFL, O_NONBLOCK) < 0) {
                        say("--attach-fd %d is not a listening socket", o.attach_fd);
                        return EXIT_SETUP;
                }
                S.attach_fd = o.attach_fd;
        }
        S.host.tail = &S.host.head;
        S.worker.tail = &S.worker.head;
        lg_msg_init(&S.host.in);
        lg_msg_init(&S.worker.in);

        if (o.log_max)
                setup_logs(o.log_max);
        if (o.cmd)
                start_workload(o.cmd, o.worker_control, o.pass_fds);
        loop();
}
