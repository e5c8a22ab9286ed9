/* legiond's side of lazy layers (lazyd.h): starts, takes over, watches and
 * restarts the node's lazy fetcher on legiond's loop, keeps the FUSE
 * device so the blob filesystem outlives the fetcher, mounts lazy layers
 * as EROFS over their blob, and talks to the fetcher's control socket. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/magic.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>

#include "lazy/chunks.h"
#include "lazy/chunkstore.h"
#include "lazy/fuse-proto.h"
#include "lazy/lazy.h"
#include "lazy/lazyd.h"
#include "sandbox/sandbox.h"

#define FETCHER_FD 3
/* A fetcher that dies within this long of its start is crash-looping:
 * the next start waits, doubling from RESTART_PAUSE_MS to the max. */
#define FAST_DEATH_NS (1000ull * 1000 * 1000)
#define RESTART_PAUSE_MS 100
#define RESTART_PAUSE_MAX_MS 5000
/* How long a control request waits for the socket to take it (a fetcher
 * being started, in milliseconds normally), then for its answer. */
#define CONNECT_TIMEOUT_MS 10000
#define CONTROL_TIMEOUT_MS 30000
#define CONTROL_REPLY_MAX 65536
#define STOP_GRACE_MS 2000

/* A running fetcher watched on the loop: its pidfd, readable once it exits. */
struct watch {
        uv_poll_t h;
        lg_lazyd *d;
        int pidfd;
        pid_t pid;
        bool child;          /* ours to reap (not one taken over) */
        uint64_t started_ns;
};

struct lg_lazyd {
        uv_loop_t *loop;
        char *home, *exe;
        char *argv0;            /* what ps shows: exe resolved */
        uint64_t rate;
        unsigned timeout_ms;
        void (*log)(void *ud, const char *line);
        void *ud;
        char cgroup[64];        /* lazy-fetcher-<hash of home> */

        pthread_mutex_t mu;     /* everything below up to mount_mu */
        int fuse_fd;            /* the device; -1: nothing started */
        pid_t pid;              /* the running fetcher; 0: none */
        /* A fetcher started or taken over off the loop: watched once the
         * loop's async runs. */
        int pending_pidfd;
        pid_t pending_pid;
        bool pending_child;
        uint64_t pending_started_ns;
        struct lg_strlist lines; /* for cfg.log, said on the loop */
        unsigned restarts;
        unsigned fast_deaths;

        pthread_mutex_t mount_mu; /* check-then-mount of a mount point */

        /* Loop side. */
        uv_async_t async;
        uv_timer_t timer;
        uv_work_t work;
        struct watch *watch;
        bool work_busy;
        bool closing;           /* lg_lazyd_free was called; under mu */
        int refs;               /* open handles and queued work: freed at 0 */
};

static void say(lg_lazyd *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(lg_lazyd *d, const char *fmt, ...) {
        char line[600];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&d->mu);
        lg_strlist_add(&d->lines, line);
        if (!d->closing)
                uv_async_send(&d->async);
        pthread_mutex_unlock(&d->mu);
}

static bool valid_hex(const char *hex) {
        if (!hex || strlen(hex) != 64)
                return false;
        for (const char *p = hex; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

static int pidfd_open(pid_t pid) { return (int) syscall(SYS_pidfd_open, pid, 0); }

/* ---- the fetcher's record and identity ---------------------------------- */

/* 1 when pid runs `... lazy-fetcher ... --home <home> ...`, else 0. */
static int is_our_fetcher(pid_t pid, const char *home) {
        char path[64], buf[8192];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        ssize_t n = lg_read_all(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return 0;
        buf[n] = '\0';
        const char *argv[64];
        size_t argc = 0;
        for (ssize_t i = 0; i < n && argc < ARRAY_SIZE(argv); i += (ssize_t) strlen(buf + i) + 1)
                argv[argc++] = buf + i;
        if (argc < 2 || strcmp(argv[1], "lazy-fetcher"))
                return 0;
        for (size_t i = 2; i + 1 < argc; i++)
                if (!strcmp(argv[i], "--home") && !strcmp(argv[i + 1], home))
                        return 1;
        return 0;
}

static pid_t read_pid_file(const char *home) {
        char path[4200], buf[32];
        snprintf(path, sizeof(path), "%s/run/lazy/fetcher.pid", home);
        long long v;
        if (lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) <= 0 || lg_parse_int(buf, 1, INT32_MAX, &v) < 0)
                return 0;
        return (pid_t) v;
}

static int write_pid_file(const char *home, pid_t pid) {
        char path[4200], tmp[4220], buf[32];
        snprintf(path, sizeof(path), "%s/run/lazy/fetcher.pid", home);
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        snprintf(buf, sizeof(buf), "%d\n", (int) pid);
        int r = lg_write_file_at(AT_FDCWD, tmp, buf, true);
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        return r;
}

/* The fetcher's cgroup: one per home, so that two legionds of two homes
 * (the e2e tests') keep theirs apart. */
static void cgroup_name(const char *home, char *buf, size_t cap) {
        uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
        for (const char *p = home; *p; p++)
                h = (h ^ (uint8_t) *p) * 0x100000001b3ull;
        snprintf(buf, cap, "lazy-fetcher-%016llx", (unsigned long long) h);
}

/* ---- mounts --------------------------------------------------------------- */

/* "\040" escapes of /proc/self/mountinfo undone in place. */
static void unescape(char *s) {
        char *o = s;
        for (char *p = s; *p; p++) {
                if (p[0] == '\\' && p[1] >= '0' && p[1] <= '7' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
                    p[3] <= '7') {
                        *o++ = (char) ((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                        p += 3;
                } else {
                        *o++ = *p;
                }
        }
        *o = '\0';
}

/* Mount points of this mount namespace under dir (dir itself too) whose
 * filesystem type is fstype or, with prefix, starts with it; with devs,
 * their "major:minor" in the same order. Read from mountinfo, never from
 * the mounts themselves, which a hung FUSE server would not answer. */
static int mounts_under(const char *dir, const char *fstype, bool prefix, struct lg_strlist *ret,
                        struct lg_strlist *devs) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return -errno;
        size_t dl = strlen(dir);
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
                char *save = NULL, *mnt = NULL, *dev = NULL, *tok = strtok_r(line, " ", &save);
                for (int i = 1; tok && i < 5; i++) {
                        tok = strtok_r(NULL, " ", &save);
                        if (i == 2)
                                dev = tok;
                }
                mnt = tok;
                while (tok && strcmp(tok, "-"))
                        tok = strtok_r(NULL, " ", &save);
                char *type = tok ? strtok_r(NULL, " ", &save) : NULL;
                if (!mnt || !type)
                        continue;
                unescape(mnt);
                if (strncmp(mnt, dir, dl) || (mnt[dl] != '\0' && mnt[dl] != '/'))
                        continue;
                if (prefix ? strncmp(type, fstype, strlen(fstype)) : strcmp(type, fstype))
                        continue;
                lg_strlist_add(ret, mnt);
                if (devs)
                        lg_strlist_add(devs, dev ? dev : "");
        }
        return ret->status < 0 ? ret->status : devs ? devs->status : 0;
}

/* Unmount (MNT_DETACH) every mount of fstype under dir, deepest first. */
static int umount_all(const char *dir, const char *fstype, bool prefix, unsigned *n, struct lg_error *err) {
        struct lg_strlist l = {0};
        int r = mounts_under(dir, fstype, prefix, &l, NULL);
        if (r < 0) {
                lg_strlist_clear(&l);
                return lg_error_set(err, -r, "read /proc/self/mountinfo");
        }
        int first = 0;
        for (size_t i = l.n; i-- > 0;) {
                if (umount2(l.v[i], MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT) {
                        if (!first)
                                first = lg_error_set(err, errno, "unmount `%s`", l.v[i]);
                } else if (n) {
                        (*n)++;
                }
        }
        lg_strlist_clear(&l);
        return first;
}

static bool is_erofs_mount(const char *dir) {
        struct statfs sf;
        return statfs(dir, &sf) == 0 && (unsigned long) sf.f_type == EROFS_SUPER_MAGIC_V1;
}

/* What a dead fetcher and a dead legiond left: the FUSE mount answers
 * ENOTCONN and every EROFS mount over its blobs fails its reads. They go,
 * so that the lazy layers are mounted again on a new connection. */
static int clean_dead(lg_lazyd *d, struct lg_error *err) {
        char blobs[4200];
        snprintf(blobs, sizeof(blobs), "%s/run/lazy/blobs", d->home);
        unsigned n = 0;
        int r = umount_all(d->home, "erofs", false, &n, err);
        if (r >= 0)
                r = umount_all(blobs, "fuse", true, NULL, err);
        if (n)
                say(d, "lazy: %u layer mount%s of a fetcher that is gone removed, to be mounted again", n,
                    n == 1 ? "" : "s");
        struct lg_error e = {0};
        lg_sandbox_cgroup_remove(d->cgroup, &e);
        return r;
}

/* ---- starting the fetcher ------------------------------------------------ */

/* Fork and exec `exe lazy-fetcher --home H --fd 3 [--resume] ...` with
 * the device as its fd 3, in a session and cgroup of its own; record it. */
#define FETCHER_LOG_MAX (1 << 20)

static int spawn_locked(lg_lazyd *d, bool resume, struct lg_error *err) {
        char rate[32], timeout[32], logpath[4200];
        snprintf(rate, sizeof(rate), "%llu", (unsigned long long) d->rate);
        snprintf(timeout, sizeof(timeout), "%u", d->timeout_ms);
        char *argv[] = {d->argv0, "lazy-fetcher", "--home", d->home, "--fd", "3", "--rate", rate,
                        "--timeout-ms", timeout, resume ? "--resume" : NULL, NULL};
        /* Its own log: a fetcher outlives the legiond whose stderr it
         * would have written to. */
        snprintf(logpath, sizeof(logpath), "%s/logs", d->home);
        (void) lg_mkdir_p(logpath, 0700);
        snprintf(logpath, sizeof(logpath), "%s/logs/lazy-fetcher.log", d->home);
        /* A fetcher writes a line only when it fails, but one that fails
         * at every start for weeks would grow the log without end: past
         * 1 MiB the log moves to .1 (the one before is dropped). */
        struct stat lst;
        if (stat(logpath, &lst) == 0 && lst.st_size > FETCHER_LOG_MAX) {
                char old[4300];
                snprintf(old, sizeof(old), "%s.1", logpath);
                (void) rename(logpath, old);
        }
        _cleanup_close_ int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (logfd < 0)
                return lg_error_set(err, errno, "open `%s`", logpath);
        _cleanup_close_ int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (nullfd < 0)
                return lg_error_set(err, errno, "open /dev/null");
        /* No signal handler of legiond may run in the child. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pid_t pid = fork();
        if (pid == 0) {
                /* Async-signal-safe calls only: legiond has threads. Lift
                 * the fds above the ones they go to first, so that none
                 * overwrites another. */
                int fuse = fcntl(d->fuse_fd, F_DUPFD_CLOEXEC, 10);
                int in = fcntl(nullfd, F_DUPFD_CLOEXEC, 10);
                int out = fcntl(logfd, F_DUPFD_CLOEXEC, 10);
                if (fuse < 0 || in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0 ||
                    dup2(fuse, FETCHER_FD) < 0)
                        _exit(127);
                syscall(SYS_close_range, FETCHER_FD + 1, ~0U, 0);
                setsid();
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                execv(d->exe, argv);
                _exit(127);
        }
        int saved = errno;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (pid < 0)
                return lg_error_set(err, saved, "fork the lazy fetcher");
        int pidfd = pidfd_open(pid);
        if (pidfd < 0) {
                int r = lg_error_set(err, errno, "pidfd of the lazy fetcher");
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                return r;
        }
        /* Out of legiond's cgroup, as sandboxes are. A failure costs only
         * that: it still outlives legiond's own death. */
        struct lg_error e = {0};
        if (lg_sandbox_cgroup_place(d->cgroup, pid, &e) < 0)
                lg_strlist_add(&d->lines, e.msg);
        int r = write_pid_file(d->home, pid);
        if (r < 0)
                lg_strlist_add(&d->lines, "lazy: cannot write run/lazy/fetcher.pid: the next legiond will not find the "
                                          "fetcher");
        if (d->pending_pidfd >= 0)
                close(d->pending_pidfd);
        d->pid = pid;
        d->pending_pidfd = pidfd;
        d->pending_pid = pid;
        d->pending_child = true;
        d->pending_started_ns = lg_now_ns();
        char line[128];
        snprintf(line, sizeof(line), "lazy: fetcher started (pid %d%s)", (int) pid, resume ? ", resuming" : "");
        lg_strlist_add(&d->lines, line);
        if (!d->closing)
                uv_async_send(&d->async);
        return 0;
}

/* Mount the blob filesystem and start a fetcher on it, unless running. */
static int ensure_started_locked(lg_lazyd *d, struct lg_error *err) {
        if (d->fuse_fd >= 0)
                return 0;
        char blobs[4200];
        snprintf(blobs, sizeof(blobs), "%s/run/lazy/blobs", d->home);
        int r = lg_mkdir_p(blobs, 0700);
        if (r < 0)
                return lg_error_set(err, -r, "create `%s`", blobs);
        r = umount_all(blobs, "fuse", true, NULL, err);
        if (r < 0)
                return r;
        int fd = -1;
        r = lg_lazy_fuse_mount(blobs, &fd, err);
        if (r < 0)
                return r;
        d->fuse_fd = fd;
        r = spawn_locked(d, false, err);
        if (r < 0) {
                umount2(blobs, MNT_DETACH);
                close(d->fuse_fd);
                d->fuse_fd = -1;
        }
        return r;
}

/* SIGTERM, SIGKILL after STOP_GRACE_MS; waits (bounded) for the exit. */
static void stop_fetcher(int pidfd) {
        syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0);
        struct pollfd p = {pidfd, POLLIN, 0};
        if (poll(&p, 1, STOP_GRACE_MS) <= 0) {
                syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                poll(&p, 1, STOP_GRACE_MS);
        }
}

/* A fetcher a previous legiond started: 1 taken over (its device kept),
 * 0 none alive (or one stopped whose device could not be taken). */
static int adopt_locked(lg_lazyd *d) {
        pid_t pid = read_pid_file(d->home);
        if (!pid)
                return 0;
        _cleanup_close_ int pidfd = pidfd_open(pid);
        if (pidfd < 0 || !is_our_fetcher(pid, d->home))
                return 0;
        int fd = (int) syscall(SYS_pidfd_getfd, pidfd, FETCHER_FD, 0);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(10, 229)) {
                /* A fetcher whose connection cannot be kept cannot be
                 * started again on it: it goes, and its mounts with it
                 * (clean_dead), to be made anew. */
                int e = fd < 0 ? errno : EBADF;
                if (fd >= 0)
                        close(fd);
                char line[200];
                snprintf(line, sizeof(line), "lazy: cannot take the FUSE device of the fetcher (pid %d): %s; stopping it",
                         (int) pid, strerror(e));
                lg_strlist_add(&d->lines, line);
                stop_fetcher(pidfd);
                return 0;
        }
        d->fuse_fd = fd;
        d->pid = pid;
        d->pending_pidfd = TAKE_FD(pidfd);
        d->pending_pid = pid;
        d->pending_child = false;
        d->pending_started_ns = 0; /* long running: a death is no crash loop */
        return 1;
}

/* ---- watching it on the loop --------------------------------------------- */

static void unref(lg_lazyd *d);

static void watch_closed(uv_handle_t *h) {
        struct watch *w = h->data;
        lg_lazyd *d = w->d;
        close(w->pidfd);
        free(w);
        unref(d);
}

static void restart_work(uv_work_t *req) {
        lg_lazyd *d = req->data;
        struct lg_error err = {0};
        pthread_mutex_lock(&d->mu);
        int r = d->fuse_fd >= 0 && !d->pid && !d->closing ? spawn_locked(d, true, &err) : 0;
        if (r < 0) {
                char line[600];
                snprintf(line, sizeof(line), "lazy: cannot start the fetcher again: %s", err.msg);
                lg_strlist_add(&d->lines, line);
        }
        pthread_mutex_unlock(&d->mu);
}

static void on_timer(uv_timer_t *t);

static void restart_done(uv_work_t *req, int status) {
        lg_lazyd *d = req->data;
        (void) status;
        d->work_busy = false;
        pthread_mutex_lock(&d->mu);
        bool failed = !d->pid;
        pthread_mutex_unlock(&d->mu);
        /* A fork that failed is tried again later; what it said, now. */
        if (failed && !d->closing) {
                uv_timer_start(&d->timer, on_timer, RESTART_PAUSE_MAX_MS, 0);
                uv_async_send(&d->async);
        }
        unref(d);
}

static void on_timer(uv_timer_t *t) {
        lg_lazyd *d = t->data;
        if (d->closing || d->work_busy)
                return;
        d->work_busy = true;
        d->refs++;
        d->work.data = d;
        if (uv_queue_work(d->loop, &d->work, restart_work, restart_done) < 0) {
                d->work_busy = false;
                d->refs--;
        }
}

static void on_exit_poll(uv_poll_t *h, int status, int events) {
        struct watch *w = h->data;
        lg_lazyd *d = w->d;
        (void) status;
        (void) events;
        char how[64] = "";
        if (w->child) {
                siginfo_t si = {0};
                if (waitid(P_PIDFD, (id_t) w->pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid) {
                        if (si.si_code == CLD_EXITED)
                                snprintf(how, sizeof(how), ", exit status %d", si.si_status);
                        else
                                snprintf(how, sizeof(how), ", signal %d", si.si_status);
                }
        }
        uint64_t lived = w->started_ns ? lg_now_ns() - w->started_ns : UINT64_MAX;
        pthread_mutex_lock(&d->mu);
        if (d->pid == w->pid)
                d->pid = 0;
        d->restarts++;
        d->fast_deaths = lived < FAST_DEATH_NS ? d->fast_deaths + 1 : 0;
        unsigned restarts = d->restarts, fast = d->fast_deaths;
        pthread_mutex_unlock(&d->mu);
        unsigned pause = 0;
        if (fast > 1) {
                pause = RESTART_PAUSE_MS;
                for (unsigned i = 2; i < fast && pause < RESTART_PAUSE_MAX_MS; i++)
                        pause *= 2;
                if (pause > RESTART_PAUSE_MAX_MS)
                        pause = RESTART_PAUSE_MAX_MS;
        }
        if (d->log) {
                char line[256];
                snprintf(line, sizeof(line), "lazy: fetcher (pid %d) exited%s; starting it again%s (restart %u)",
                         (int) w->pid, how, pause ? " after a pause" : "", restarts);
                d->log(d->ud, line);
        }
        d->watch = NULL;
        uv_close((uv_handle_t *) h, watch_closed);
        if (!d->closing)
                uv_timer_start(&d->timer, on_timer, pause, 0);
}

/* Pool threads and lg_lazyd_new hand over here: log lines, and a fetcher
 * to watch. */
static void on_async(uv_async_t *a) {
        lg_lazyd *d = a->data;
        pthread_mutex_lock(&d->mu);
        struct lg_strlist lines = d->lines;
        d->lines = (struct lg_strlist){0};
        int pidfd = TAKE_FD(d->pending_pidfd);
        pid_t pid = d->pending_pid;
        bool child = d->pending_child;
        uint64_t started = d->pending_started_ns;
        pthread_mutex_unlock(&d->mu);
        for (size_t i = 0; i < lines.n; i++)
                if (d->log)
                        d->log(d->ud, lines.v[i]);
        lg_strlist_clear(&lines);
        if (pidfd < 0)
                return;
        if (d->closing) {
                close(pidfd);
                return;
        }
        struct watch *w = calloc(1, sizeof(*w));
        if (!w || uv_poll_init(d->loop, &w->h, pidfd) < 0) {
                /* Unwatched: a death goes unnoticed until the next legiond. */
                if (d->log)
                        d->log(d->ud, "lazy: cannot watch the fetcher: out of memory");
                free(w);
                close(pidfd);
                return;
        }
        *w = (struct watch){.h = w->h, .d = d, .pidfd = pidfd, .pid = pid, .child = child, .started_ns = started};
        w->h.data = w;
        d->refs++;
        d->watch = w;
        uv_poll_start(&w->h, UV_READABLE, on_exit_poll);
}

/* ---- the control socket -------------------------------------------------- */

static int remaining_ms(uint64_t deadline) {
        uint64_t now = lg_now_ns();
        return now >= deadline ? 0 : (int) ((deadline - now) / 1000000 + 1);
}

/* Connect to run/lazy/fetcher.sock, waiting for a fetcher being started. */
static int control_connect(lg_lazyd *d, uint64_t deadline, int *type, struct lg_error *err) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if ((size_t) snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/run/lazy/fetcher.sock", d->home) >=
            sizeof(sa.sun_path))
                return lg_error_setm(err, ENAMETOOLONG, "the home `%s` is too long for a socket path", d->home);
        *type = SOCK_STREAM;
        for (;;) {
                int fd = socket(AF_UNIX, *type | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return lg_error_set(err, errno, "socket");
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0)
                        return fd;
                int e = errno;
                close(fd);
                if (e == EPROTOTYPE && *type == SOCK_STREAM) {
                        *type = SOCK_SEQPACKET;
                        continue;
                }
                if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || !remaining_ms(deadline))
                        return lg_error_set(err, e == ENOENT || e == ECONNREFUSED ? ETIMEDOUT : e,
                                            "the lazy fetcher does not answer on `%s`", sa.sun_path);
                nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        }
}

/* One request, one JSON line back. An answer with "error" is -EIO with
 * its text. */
static int control(lg_lazyd *d, json_t *req, json_t **ret, struct lg_error *err) {
        uint64_t deadline = lg_now_ns() + (uint64_t) CONNECT_TIMEOUT_MS * 1000000;
        int type = SOCK_STREAM;
        _cleanup_close_ int fd = control_connect(d, deadline, &type, err);
        if (fd < 0)
                return fd;
        deadline = lg_now_ns() + (uint64_t) CONTROL_TIMEOUT_MS * 1000000;
        _cleanup_free_ char *text = json_dumps(req, JSON_COMPACT);
        _cleanup_free_ char *line = NULL;
        if (!text || asprintf(&line, "%s\n", text) < 0)
                return lg_error_set(err, ENOMEM, "encode a fetcher request");
        /* One send: one record on a SOCK_SEQPACKET socket. */
        size_t len = strlen(line);
        if (send(fd, line, len, MSG_NOSIGNAL) != (ssize_t) len)
                return lg_error_set(err, errno ? errno : EIO, "send to the lazy fetcher");
        _cleanup_free_ char *buf = malloc(CONTROL_REPLY_MAX);
        if (!buf)
                return lg_error_set(err, ENOMEM, "read the lazy fetcher's answer");
        size_t n = 0;
        for (;;) {
                struct pollfd p = {fd, POLLIN, 0};
                int ms = remaining_ms(deadline);
                int k = ms ? poll(&p, 1, ms) : 0;
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return lg_error_set(err, k < 0 ? errno : ETIMEDOUT, "wait for the lazy fetcher's answer");
                ssize_t got = recv(fd, buf + n, CONTROL_REPLY_MAX - 1 - n, 0);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        return lg_error_set(err, errno, "read the lazy fetcher's answer");
                if (got == 0)
                        return lg_error_setm(err, EPROTO, "the lazy fetcher closed the connection without answering");
                n += (size_t) got;
                if (memchr(buf + n - (size_t) got, '\n', (size_t) got) || type == SOCK_SEQPACKET)
                        break;
                if (n == CONTROL_REPLY_MAX - 1)
                        return lg_error_setm(err, EPROTO, "the lazy fetcher's answer is too long");
        }
        char *nl = memchr(buf, '\n', n);
        size_t end = nl ? (size_t) (nl - buf) : n;
        json_error_t je;
        json_t *j = json_loadb(buf, end, 0, &je);
        if (!json_is_object(j)) {
                json_decref(j);
                return lg_error_setm(err, EPROTO, "the lazy fetcher's answer is not a JSON object");
        }
        json_t *e = json_object_get(j, "error");
        if (e) {
                char msg[400];
                lg_printable(json_is_string(e) ? json_string_value(e) : "(no message)", msg, sizeof(msg));
                json_decref(j);
                return lg_error_setm(err, EIO, "the lazy fetcher: %s", msg);
        }
        *ret = j;
        return 0;
}

static int control_op(lg_lazyd *d, const char *op, const char *hex, json_t **ret, struct lg_error *err) {
        json_t *req = json_pack("{s:s, s:s}", "op", op, "layer", hex);
        if (!req)
                return lg_error_set(err, ENOMEM, "encode a fetcher request");
        json_t *j = NULL;
        int r = control(d, req, &j, err);
        json_decref(req);
        if (r < 0)
                return r;
        if (ret)
                *ret = j;
        else
                json_decref(j);
        return 0;
}

/* ---- API ------------------------------------------------------------------ */

int lg_lazyd_new(uv_loop_t *loop, const char *home, const struct lg_lazyd_config *cfg, lg_lazyd **ret,
                 struct lg_error *err) {
        lg_lazyd *d = calloc(1, sizeof(*d));
        if (!d)
                return lg_error_set(err, ENOMEM, "lazyd");
        d->loop = loop;
        d->home = strdup(home);
        d->exe = strdup(cfg && cfg->exe ? cfg->exe : "/proc/self/exe");
        d->argv0 = d->exe ? realpath(d->exe, NULL) : NULL;
        if (!d->argv0 && d->exe)
                d->argv0 = strdup(d->exe);
        d->rate = cfg ? cfg->rate : LG_LAZYD_DEFAULT_RATE;
        d->timeout_ms = cfg && cfg->fetch_timeout_ms ? cfg->fetch_timeout_ms : LG_LAZYD_DEFAULT_TIMEOUT_MS;
        d->log = cfg ? cfg->log : NULL;
        d->ud = cfg ? cfg->ud : NULL;
        d->fuse_fd = d->pending_pidfd = -1;
        cgroup_name(home, d->cgroup, sizeof(d->cgroup));
        pthread_mutex_init(&d->mu, NULL);
        pthread_mutex_init(&d->mount_mu, NULL);
        uv_async_init(loop, &d->async, on_async);
        uv_timer_init(loop, &d->timer);
        d->async.data = d->timer.data = d;
        d->refs = 2;
        if (!d->home || !d->exe || !d->argv0) {
                lg_lazyd_free(d);
                return lg_error_set(err, ENOMEM, "lazyd");
        }
        char path[4200];
        snprintf(path, sizeof(path), "%s/run/lazy/blobs", home);
        int r = lg_mkdir_p(path, 0700);
        if (r < 0) {
                lg_lazyd_free(d);
                return lg_error_set(err, -r, "create `%s`", path);
        }
        pthread_mutex_lock(&d->mu);
        r = adopt_locked(d);
        pid_t pid = d->pid;
        pthread_mutex_unlock(&d->mu);
        if (r == 0)
                r = clean_dead(d, err);
        else if (r > 0)
                say(d, "lazy: took over the fetcher (pid %d) a previous legiond started", (int) pid);
        if (r < 0) {
                lg_lazyd_free(d);
                return r;
        }
        uv_async_send(&d->async);
        *ret = d;
        return 0;
}

int lg_lazyd_attach(lg_lazyd *d, const char *hex, const char *mountpoint, struct lg_error *err) {
        if (!valid_hex(hex))
                return lg_error_setm(err, EINVAL, "bad lazy layer name");
        char meta[4200], blob[4200];
        snprintf(meta, sizeof(meta), "%s/lazy/layers/%s/meta.erofs", d->home, hex);
        snprintf(blob, sizeof(blob), "%s/run/lazy/blobs/%s", d->home, hex);
        if (access(meta, R_OK) < 0)
                return lg_error_set(err, errno, "lazy layer %.12s: `%s`", hex, meta);
        pthread_mutex_lock(&d->mu);
        int r = ensure_started_locked(d, err);
        pthread_mutex_unlock(&d->mu);
        if (r < 0)
                return r;
        r = control_op(d, "attach", hex, NULL, err);
        if (r < 0)
                return lg_error_wrap(err, r, "lazy layer %.12s", hex);
        pthread_mutex_lock(&d->mount_mu);
        if (!is_erofs_mount(mountpoint)) {
                r = lg_mkdir_p(mountpoint, 0755);
                if (r < 0)
                        lg_error_set(err, -r, "create `%s`", mountpoint);
                else
                        r = lg_lazy_mount(meta, blob, mountpoint, err);
        }
        pthread_mutex_unlock(&d->mount_mu);
        return r;
}

int lg_lazyd_detach(lg_lazyd *d, const char *hex, const char *mountpoint, struct lg_error *err) {
        if (!valid_hex(hex))
                return lg_error_setm(err, EINVAL, "bad lazy layer name");
        pthread_mutex_lock(&d->mount_mu);
        int r = is_erofs_mount(mountpoint) ? lg_lazy_umount(mountpoint, err) : 0;
        pthread_mutex_unlock(&d->mount_mu);
        if (r < 0)
                return r;
        pthread_mutex_lock(&d->mu);
        bool started = d->fuse_fd >= 0;
        pthread_mutex_unlock(&d->mu);
        return started ? control_op(d, "detach", hex, NULL, err) : 0;
}

static int get_u64(json_t *j, const char *key, uint64_t *v) {
        json_t *x = json_object_get(j, key);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
                return -1;
        *v = (uint64_t) json_integer_value(x);
        return 0;
}

/* Without a fetcher: what the chunk store holds of the layer's table. */
static int local_status(lg_lazyd *d, const char *hex, struct lg_image_lazy_status *ret, struct lg_error *err) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/lazy/layers/%s/chunks", d->home, hex);
        lg_chunk_table *t = NULL;
        int r = lg_chunk_table_load(path, &t, err);
        if (r < 0)
                return r;
        snprintf(path, sizeof(path), "%s/lazy", d->home);
        lg_chunk_store *s = NULL;
        r = lg_chunk_store_open(path, &s, err);
        if (r >= 0) {
                *ret = (struct lg_image_lazy_status){.chunks = lg_chunk_table_count(t),
                                                     .bytes = lg_chunk_table_blob_size(t)};
                r = lg_chunk_store_local(s, t, &ret->local_chunks, &ret->local_bytes);
                if (r < 0)
                        lg_error_set(err, -r, "lazy layer %.12s: count its local chunks", hex);
        }
        lg_chunk_store_close(s);
        lg_chunk_table_free(t);
        return r;
}

int lg_lazyd_status(lg_lazyd *d, const char *hex, struct lg_image_lazy_status *ret, struct lg_error *err) {
        if (!valid_hex(hex))
                return lg_error_setm(err, EINVAL, "bad lazy layer name");
        pthread_mutex_lock(&d->mu);
        bool started = d->fuse_fd >= 0;
        pthread_mutex_unlock(&d->mu);
        if (!started)
                return local_status(d, hex, ret, err);
        json_t *j = NULL;
        int r = control_op(d, "status", hex, &j, err);
        if (r < 0)
                return r;
        struct lg_image_lazy_status s = {0};
        if (get_u64(j, "chunks", &s.chunks) < 0 || get_u64(j, "localChunks", &s.local_chunks) < 0 ||
            get_u64(j, "bytes", &s.bytes) < 0 || get_u64(j, "localBytes", &s.local_bytes) < 0 ||
            get_u64(j, "fetchedBytes", &s.fetched_bytes) < 0 || get_u64(j, "misses", &s.misses) < 0 ||
            get_u64(j, "errors", &s.errors) < 0)
                r = lg_error_setm(err, EPROTO, "the lazy fetcher's status of layer %.12s lacks a figure", hex);
        json_decref(j);
        if (r >= 0)
                *ret = s;
        return r;
}

pid_t lg_lazyd_fetcher_pid(lg_lazyd *d) {
        pthread_mutex_lock(&d->mu);
        pid_t pid = d->pid;
        pthread_mutex_unlock(&d->mu);
        return pid;
}

unsigned lg_lazyd_restarts(lg_lazyd *d) {
        pthread_mutex_lock(&d->mu);
        unsigned n = d->restarts;
        pthread_mutex_unlock(&d->mu);
        return n;
}

static void unref(lg_lazyd *d) {
        if (--d->refs > 0)
                return;
        if (d->fuse_fd >= 0)
                close(d->fuse_fd);
        if (d->pending_pidfd >= 0)
                close(d->pending_pidfd);
        lg_strlist_clear(&d->lines);
        pthread_mutex_destroy(&d->mu);
        pthread_mutex_destroy(&d->mount_mu);
        free(d->home);
        free(d->exe);
        free(d->argv0);
        free(d);
}

static void handle_closed(uv_handle_t *h) { unref(h->data); }

void lg_lazyd_free(lg_lazyd *d) {
        if (!d)
                return;
        pthread_mutex_lock(&d->mu);
        d->closing = true;
        pthread_mutex_unlock(&d->mu);
        if (d->watch) {
                uv_close((uv_handle_t *) &d->watch->h, watch_closed);
                d->watch = NULL;
        }
        uv_close((uv_handle_t *) &d->timer, handle_closed);
        uv_close((uv_handle_t *) &d->async, handle_closed);
}

/* ---- --stop-all ----------------------------------------------------------- */

/* Abort the FUSE connections mounted under blobs: every request they
 * hold fails at once (a reader waiting on a fetcher that will never answer
 * cannot even be killed until then). */
static void abort_connections(const char *blobs) {
        struct lg_strlist mnts = {0}, devs = {0};
        if (mounts_under(blobs, "fuse", true, &mnts, &devs) >= 0)
                for (size_t i = 0; i < devs.n; i++) {
                        unsigned maj, min;
                        if (sscanf(devs.v[i], "%u:%u", &maj, &min) != 2)
                                continue;
                        char path[128];
                        snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", min);
                        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
                        if (fd >= 0)
                                (void) !write(fd, "1", 1);
                }
        lg_strlist_clear(&mnts);
        lg_strlist_clear(&devs);
}

int lg_lazyd_stop_all(const char *home, int *stopped, struct lg_error *err) {
        *stopped = 0;
        char blobs[4200];
        snprintf(blobs, sizeof(blobs), "%s/run/lazy/blobs", home);
        abort_connections(blobs);
        pid_t pid = read_pid_file(home);
        _cleanup_close_ int pidfd = pid ? pidfd_open(pid) : -1;
        if (pidfd >= 0 && is_our_fetcher(pid, home)) {
                stop_fetcher(pidfd);
                *stopped = 1;
        }
        char path[4200];
        int r = umount_all(home, "erofs", false, NULL, err);
        snprintf(path, sizeof(path), "%s/run/lazy/blobs", home);
        if (r >= 0)
                r = umount_all(path, "fuse", true, NULL, err);
        char cg[64];
        cgroup_name(home, cg, sizeof(cg));
        if (r >= 0)
                r = lg_sandbox_cgroup_remove(cg, err);
        snprintf(path, sizeof(path), "%s/run/lazy/fetcher.pid", home);
        if (r >= 0 && unlink(path) < 0 && errno != ENOENT)
                r = lg_error_set(err, errno, "remove `%s`", path);
        return r;
}
