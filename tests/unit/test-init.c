/* Tests for legion-init. The binary ($LEGION_INIT) runs as an ordinary
 * subprocess (not PID 1, so it uses PR_SET_CHILD_SUBREAPER and process
 * groups) with one end of a socketpair as its control socket; the tests
 * speak the protocol of docs/init-protocol.md to it. The log capper is also
 * tested directly, compiled in from src/init/logcap.c.
 *
 * Waits are bounded (a few seconds) but nothing depends on how fast things
 * happen: every step waits for an observable event (a frame, a line of
 * output, an exit status). */
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "common/proto.h"
#include "common/util.h"
#include "init/logcap.h"
/* The log capper is not part of a library; build it into this test. */
#include "init/logcap.h"

#define TIMEOUT_MS 10000
#define CTL_FD 10
#define MARKER LG_LOGCAP_MARKER
#define MLEN (sizeof(MARKER) - 1)

/* ---- helpers ------------------------------------------------------------ */

/* Handed to init as fd 11 when >= 0 (the --attach-fd tests). */
static int attach_listen = -1;
#define ATTACH_FD 11

struct initproc {
        pid_t pid;
        int ctl; /* our end of the control socket, -1 if none */
};

/* Start legion-init with the given options and command. stdout/stderr of
 * init are out/err when >= 0 (else inherited). */
static struct initproc start_init(const char *const *opts, const char *const *cmd, int out, int err, bool control) {
        const char *path = getenv("LEGION_INIT");
        assert_non_null(path);
        int sv[2] = { -1, -1 };
        if (control)
                assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);

        const char *argv[64];
        size_t n = 0;
        argv[n++] = path;
        if (control) {
                argv[n++] = "--control-fd";
                argv[n++] = "10";
        }
        for (; opts && *opts; opts++)
                argv[n++] = *opts;
        argv[n++] = "--";
        for (; cmd && *cmd; cmd++)
                argv[n++] = *cmd;
        argv[n] = NULL;
        if (!cmd)
                argv[--n] = NULL; /* no "--" either: idle */

        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                if (control && dup2(sv[1], CTL_FD) < 0)
                        _exit(99);
                if (attach_listen >= 0 && dup2(attach_listen, ATTACH_FD) < 0)
                        _exit(99);
                if (out >= 0 && dup2(out, 1) < 0)
                        _exit(99);
                if (err >= 0 && dup2(err, 2) < 0)
                        _exit(99);
                execv(path, (char *const *) argv);
                _exit(98);
        }
        if (control)
                close(sv[1]);
        return (struct initproc){ pid, sv[0] };
}

/* Wait (bounded) for pid to exit; returns its wait status. */
static int wait_exit(pid_t pid) {
        for (int i = 0; i < TIMEOUT_MS / 5; i++) {
                int st;
                pid_t r = waitpid(pid, &st, WNOHANG);
                assert_true(r >= 0);
                if (r == pid)
                        return st;
                struct timespec ts = { 0, 5 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        fail_msg("pid %d did not exit in time", (int) pid);
        return -1;
}

static void assert_exit_code(int st, int code) {
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), code);
}

/* Receive the next frame, failing after TIMEOUT_MS. Returns 0 on EOF. */
static int recv_frame(int fd, struct lg_msg *m) {
        struct pollfd p = { fd, POLLIN, 0 };
        int r = poll(&p, 1, TIMEOUT_MS);
        assert_int_equal(r, 1);
        return lg_msg_recv(fd, m);
}

/* Skip frames until one with the given op arrives. */
static void expect_op(int fd, const char *op, struct lg_msg *m) {
        lg_msg_init(m);
        for (int i = 0; i < 100; i++) {
                int r = recv_frame(fd, m);
                if (r != 1)
                        fail_msg("waiting for op=%s: recv returned %d", op, r);
                if (!strcmp(lg_msg_get(m, "op"), op))
                        return;
        }
        fail_msg("op=%s never came", op);
}

static void send_frame(int fd, struct lg_msg *m) {
        assert_int_equal(lg_msg_send(fd, m), 0);
        lg_msg_free(m);
}

/* Build a frame from "key=value" strings: frame(&m, "op=ping", "id=1", NULL). */
static void frame(struct lg_msg *m, ...) {
        lg_msg_init(m);
        va_list ap;
        va_start(ap, m);
        for (const char *kv; (kv = va_arg(ap, const char *));) {
                const char *eq = strchr(kv, '=');
                assert_non_null(eq);
                char key[64];
                snprintf(key, sizeof(key), "%.*s", (int) (eq - kv), kv);
                assert_int_equal(lg_msg_add(m, key, eq + 1), 0);
        }
        va_end(ap);
}

static long long get_int(const struct lg_msg *m, const char *key) {
        long long v = -1;
        if (lg_msg_get_int(m, key, &v) < 0)
                fail_msg("field %s missing or bad", key);
        return v;
}

/* Read one line (bounded wait) from fd into buf. */
static void read_line(int fd, char *buf, size_t cap) {
        size_t n = 0;
        while (n + 1 < cap) {
                struct pollfd p = { fd, POLLIN, 0 };
                assert_int_equal(poll(&p, 1, TIMEOUT_MS), 1);
                char c;
                ssize_t k = read(fd, &c, 1);
                assert_int_equal(k, 1);
                if (c == '\n')
                        break;
                buf[n++] = c;
        }
        buf[n] = '\0';
}

static pid_t ping_workload(int ctl) {
        struct lg_msg m;
        frame(&m, "op=ping", "id=p", NULL);
        send_frame(ctl, &m);
        expect_op(ctl, "pong", &m);
        pid_t pid = (pid_t) get_int(&m, "workload");
        lg_msg_free(&m);
        return pid;
}

static bool gone(pid_t pid) {
        return kill(pid, 0) < 0 && errno == ESRCH;
}

/* Wait until pid is neither running nor a zombie (i.e. reaped). */
static bool wait_gone(pid_t pid) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        for (int i = 0; i < TIMEOUT_MS / 5; i++) {
                if (access(path, F_OK) < 0 && gone(pid))
                        return true;
                struct timespec ts = { 0, 5 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
        return false;
}

static int tmpfile_rw(void) {
        char path[] = "/tmp/legion-test-init-XXXXXX";
        int fd = mkostemp(path, O_CLOEXEC);
        assert_true(fd >= 0);
        unlink(path);
        return fd;
}

static char *read_whole(int fd, size_t *len) {
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        char *buf = malloc((size_t) st.st_size + 1);
        assert_non_null(buf);
        assert_int_equal(pread(fd, buf, (size_t) st.st_size, 0), st.st_size);
        buf[st.st_size] = '\0';
        *len = (size_t) st.st_size;
        return buf;
}

/* ---- workload exit ------------------------------------------------------ */

static void test_exit_code(void **state) {
        (void) state;
        const char *cmd[] = { "sh", "-c", "exit 7", NULL };
        struct initproc ip = start_init(NULL, cmd, -1, -1, true);
        struct lg_msg m;
        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "code"), 7);
        assert_null(lg_msg_get(&m, "signal"));
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 7);
        assert_int_equal(recv_frame(ip.ctl, &m), 0); /* init closed its end */
        lg_msg_free(&m);
        close(ip.ctl);
}

static void test_exit_signal(void **state) {
        (void) state;
        const char *cmd[] = { "sh", "-c", "kill -USR1 $$", NULL };
        struct initproc ip = start_init(NULL, cmd, -1, -1, true);
        struct lg_msg m;
        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "signal"), SIGUSR1);
        assert_null(lg_msg_get(&m, "code"));
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 128 + SIGUSR1);
        close(ip.ctl);
}

static void test_no_control_socket(void **state) {
        (void) state;
        const char *cmd[] = { "true", NULL };
        struct initproc ip = start_init(NULL, cmd, -1, -1, false);
        assert_exit_code(wait_exit(ip.pid), 0);
}

static void test_exec_missing(void **state) {
        (void) state;
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        const char *cmd[] = { "/nonexistent/legion-test-cmd", "arg", NULL };
        struct initproc ip = start_init(NULL, cmd, -1, p[1], true);
        close(p[1]);
        struct lg_msg m;
        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "code"), 127);
        assert_non_null(strstr(lg_msg_get(&m, "message"), "No such file"));
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 127);
        char line[256];
        read_line(p[0], line, sizeof(line));
        assert_string_equal(line, "legion-init: exec `/nonexistent/legion-test-cmd`: No such file or directory");
        close(p[0]);
        close(ip.ctl);

        /* Not executable: 126. */
        const char *cmd2[] = { "/etc/passwd", NULL };
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        ip = start_init(NULL, cmd2, -1, devnull, true);
        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "code"), 126);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 126);
        close(devnull);
        close(ip.ctl);
}

/* ---- signals ------------------------------------------------------------ */

static void test_sigterm_forwarded(void **state) {
        (void) state;
        const char *cmd[] = { "sleep", "1000", NULL };
        struct initproc ip = start_init(NULL, cmd, -1, -1, true);
        pid_t w = ping_workload(ip.ctl); /* init is up, signals are routed */
        assert_true(w > 0);
        assert_int_equal(kill(ip.pid, SIGTERM), 0);
        struct lg_msg m;
        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "signal"), SIGTERM);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 128 + SIGTERM);
        assert_true(gone(w));
        close(ip.ctl);
}

static void test_sigterm_idle(void **state) {
        (void) state;
        struct initproc ip = start_init(NULL, NULL, -1, -1, true);
        struct lg_msg m;
        frame(&m, "op=ping", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "pong", &m);
        assert_null(lg_msg_get(&m, "workload"));
        lg_msg_free(&m);
        assert_int_equal(kill(ip.pid, SIGTERM), 0);
        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "code"), 0);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 0);
        close(ip.ctl);
}

/* ---- control verbs ------------------------------------------------------ */

static void test_ping_and_unknown(void **state) {
        (void) state;
        const char *cmd[] = { "sleep", "1000", NULL };
        struct initproc ip = start_init(NULL, cmd, -1, -1, true);
        struct lg_msg m;
        frame(&m, "op=ping", "id=42", NULL);
        send_frame(ip.ctl, &m);
        assert_int_equal(recv_frame(ip.ctl, &m), 1);
        assert_string_equal(lg_msg_get(&m, "op"), "pong");
        assert_string_equal(lg_msg_get(&m, "id"), "42");
        pid_t w = (pid_t) get_int(&m, "workload");
        assert_true(w > 0 && !gone(w));
        lg_msg_free(&m);

        frame(&m, "op=frobnicate", "id=x", NULL);
        send_frame(ip.ctl, &m);
        assert_int_equal(recv_frame(ip.ctl, &m), 1);
        assert_string_equal(lg_msg_get(&m, "op"), "error");
        assert_string_equal(lg_msg_get(&m, "id"), "x");
        assert_string_equal(lg_msg_get(&m, "message"), "unknown op `frobnicate`");
        lg_msg_free(&m);

        /* Still alive and answering. */
        assert_int_equal(ping_workload(ip.ctl), w);

        frame(&m, "op=shutdown", "id=bye", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "exit", &m);
        assert_string_equal(lg_msg_get(&m, "id"), "bye");
        assert_int_equal(get_int(&m, "signal"), SIGKILL);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 128 + SIGKILL);
        assert_true(gone(w));
        close(ip.ctl);
}

/* A request dribbled to init a few bytes at a time is still one request. */
static void test_split_host_frame(void **state) {
        (void) state;
        struct initproc ip = start_init(NULL, NULL, -1, -1, true);
        struct lg_msg m;
        frame(&m, "op=ping", "id=slow", NULL);
        unsigned char buf[64];
        size_t len = 4 + m.len;
        for (size_t i = 0; i < 4; i++)
                buf[i] = (unsigned char) (m.len >> (8 * i));
        memcpy(buf + 4, m.buf, m.len);
        lg_msg_free(&m);
        for (size_t off = 0; off < len; off += 2) {
                assert_int_equal(lg_write_all(ip.ctl, buf + off, len - off < 2 ? len - off : 2), 0);
                struct timespec ts = { 0, 500 * 1000 };
                nanosleep(&ts, NULL);
        }
        assert_int_equal(recv_frame(ip.ctl, &m), 1);
        assert_string_equal(lg_msg_get(&m, "op"), "pong");
        assert_string_equal(lg_msg_get(&m, "id"), "slow");
        lg_msg_free(&m);
        close(ip.ctl);
        assert_exit_code(wait_exit(ip.pid), 137);
}

static void test_exec_with_fds(void **state) {
        (void) state;
        struct initproc ip = start_init(NULL, NULL, -1, -1, true);
        int out[2];
        assert_int_equal(pipe2(out, O_CLOEXEC), 0);
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

        struct lg_msg m;
        frame(&m, "op=exec", "id=e1", "arg=/bin/echo", "arg=hi", NULL);
        m.fds[0] = devnull;
        m.fds[1] = out[1];
        m.fds[2] = dup(out[1]);
        m.nfds = 3;
        send_frame(ip.ctl, &m); /* closes our copies */

        expect_op(ip.ctl, "started", &m);
        assert_string_equal(lg_msg_get(&m, "id"), "e1");
        long long pid = get_int(&m, "pid");
        assert_true(pid > 0);
        lg_msg_free(&m);

        expect_op(ip.ctl, "exited", &m);
        assert_int_equal(get_int(&m, "pid"), pid);
        assert_int_equal(get_int(&m, "code"), 0);
        assert_string_equal(lg_msg_get(&m, "id"), "e1");
        lg_msg_free(&m);

        char buf[16] = { 0 };
        ssize_t n = lg_read_all(out[0], buf, sizeof(buf) - 1); /* EOF: all writers gone */
        assert_int_equal(n, 3);
        assert_string_equal(buf, "hi\n");
        close(out[0]);

        frame(&m, "op=shutdown", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "code"), 0);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 0);
        close(ip.ctl);
}

static void test_exec_env_cwd_and_errors(void **state) {
        (void) state;
        int out[2];
        assert_int_equal(pipe2(out, O_CLOEXEC), 0);
        struct initproc ip = start_init(NULL, NULL, out[1], -1, true);
        close(out[1]);

        /* No fds: stdout is init's stdout, stdin is /dev/null. */
        struct lg_msg m;
        frame(&m, "op=exec", "arg=sh", "arg=-c", "arg=echo \"$FOO\" \"$(pwd)\"; cat; echo end",
              "env=FOO=bar baz", "env=PATH=/usr/bin:/bin", "cwd=/tmp", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "started", &m);
        lg_msg_free(&m);
        expect_op(ip.ctl, "exited", &m);
        assert_int_equal(get_int(&m, "code"), 0);
        lg_msg_free(&m);
        char line[256];
        read_line(out[0], line, sizeof(line));
        assert_string_equal(line, "bar baz /tmp");
        read_line(out[0], line, sizeof(line));
        assert_string_equal(line, "end");

        frame(&m, "op=exec", "id=3", "arg=legion-no-such-command", NULL);
        send_frame(ip.ctl, &m);
        assert_int_equal(recv_frame(ip.ctl, &m), 1);
        assert_string_equal(lg_msg_get(&m, "op"), "error");
        assert_string_equal(lg_msg_get(&m, "id"), "3");
        assert_string_equal(lg_msg_get(&m, "message"), "exec `legion-no-such-command`: No such file or directory");
        lg_msg_free(&m);

        frame(&m, "op=exec", "arg=true", "cwd=/nonexistent-dir", NULL);
        send_frame(ip.ctl, &m);
        assert_int_equal(recv_frame(ip.ctl, &m), 1);
        assert_string_equal(lg_msg_get(&m, "op"), "error");
        assert_non_null(strstr(lg_msg_get(&m, "message"), "chdir `/nonexistent-dir`"));
        lg_msg_free(&m);

        frame(&m, "op=exec", "env=A=B", NULL);
        send_frame(ip.ctl, &m);
        assert_int_equal(recv_frame(ip.ctl, &m), 1);
        assert_string_equal(lg_msg_get(&m, "op"), "error");
        lg_msg_free(&m);

        /* Exec'd children die with init. */
        frame(&m, "op=exec", "arg=sleep", "arg=1000", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "started", &m);
        pid_t pid = (pid_t) get_int(&m, "pid");
        lg_msg_free(&m);
        frame(&m, "op=shutdown", "grace=5", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "exited", &m);
        assert_int_equal(get_int(&m, "pid"), pid);
        assert_int_equal(get_int(&m, "signal"), SIGKILL);
        lg_msg_free(&m);
        expect_op(ip.ctl, "exit", &m);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 0);
        assert_true(gone(pid));
        close(out[0]);
        close(ip.ctl);
}

static void test_signal_verb(void **state) {
        (void) state;
        struct initproc ip = start_init(NULL, NULL, -1, -1, true);
        struct lg_msg m;

        /* Not a child of init: refused, and nothing is signalled. */
        char self[32];
        snprintf(self, sizeof(self), "pid=%d", (int) getpid());
        frame(&m, "op=signal", "id=s1", "sig=9", self, NULL);
        send_frame(ip.ctl, &m);
        assert_int_equal(recv_frame(ip.ctl, &m), 1);
        assert_string_equal(lg_msg_get(&m, "op"), "error");
        assert_string_equal(lg_msg_get(&m, "id"), "s1");
        lg_msg_free(&m);
        frame(&m, "op=signal", "sig=9", "pid=1", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "error", &m);
        lg_msg_free(&m);
        /* No workload to default to; bad signal. */
        frame(&m, "op=signal", "sig=15", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "error", &m);
        lg_msg_free(&m);
        frame(&m, "op=signal", "sig=999", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "error", &m);
        lg_msg_free(&m);

        /* A child of init: accepted. */
        frame(&m, "op=exec", "arg=sleep", "arg=1000", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "started", &m);
        char pidf[32];
        snprintf(pidf, sizeof(pidf), "pid=%lld", get_int(&m, "pid"));
        lg_msg_free(&m);
        frame(&m, "op=signal", "sig=USR2", pidf, NULL); /* numbers only */
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "error", &m);
        lg_msg_free(&m);
        frame(&m, "op=signal", "id=s2", "sig=12", pidf, NULL);
        send_frame(ip.ctl, &m);
        assert_int_equal(recv_frame(ip.ctl, &m), 1);
        assert_string_equal(lg_msg_get(&m, "op"), "ok");
        assert_string_equal(lg_msg_get(&m, "id"), "s2");
        lg_msg_free(&m);
        expect_op(ip.ctl, "exited", &m);
        assert_int_equal(get_int(&m, "signal"), SIGUSR2);
        lg_msg_free(&m);

        close(ip.ctl); /* EOF: idle init exits 137 too */
        assert_exit_code(wait_exit(ip.pid), 137);
}

static void test_signal_workload_default(void **state) {
        (void) state;
        const char *cmd[] = { "sleep", "1000", NULL };
        struct initproc ip = start_init(NULL, cmd, -1, -1, true);
        struct lg_msg m;
        frame(&m, "op=signal", "sig=15", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "ok", &m);
        lg_msg_free(&m);
        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "signal"), SIGTERM);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 128 + SIGTERM);
        close(ip.ctl);
}

static void test_shutdown_grace(void **state) {
        (void) state;
        int out[2];
        assert_int_equal(pipe2(out, O_CLOEXEC), 0);
        const char *cmd[] = { "sh", "-c", "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done", NULL };
        struct initproc ip = start_init(NULL, cmd, out[1], -1, true);
        close(out[1]);
        char line[64];
        read_line(out[0], line, sizeof(line));
        assert_string_equal(line, "ready"); /* the trap is installed */

        struct lg_msg m;
        frame(&m, "op=shutdown", "id=g", "grace=30", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "exit", &m);
        assert_string_equal(lg_msg_get(&m, "id"), "g");
        assert_int_equal(get_int(&m, "code"), 3);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 3);
        close(out[0]);
        close(ip.ctl);
}

/* ---- the EOF rule and reaping ------------------------------------------- */

static void test_eof_kills_everything(void **state) {
        (void) state;
        int out[2];
        assert_int_equal(pipe2(out, O_CLOEXEC), 0);
        /* A background grandchild in its own session, out of the
         * workload's process group: init must still find and kill it. */
        const char *cmd[] = { "sh", "-c", "setsid sleep 1000 & echo $!; sleep 1000 & echo $!; wait", NULL };
        struct initproc ip = start_init(NULL, cmd, out[1], -1, true);
        close(out[1]);
        char line[64];
        read_line(out[0], line, sizeof(line));
        pid_t g1 = atoi(line);
        read_line(out[0], line, sizeof(line));
        pid_t g2 = atoi(line);
        pid_t w = ping_workload(ip.ctl);
        assert_true(w > 0 && g1 > 0 && g2 > 0);

        close(ip.ctl);
        assert_exit_code(wait_exit(ip.pid), 137);
        assert_true(gone(w));
        assert_true(gone(g1));
        assert_true(gone(g2));
        close(out[0]);
}

static void test_protocol_violation(void **state) {
        (void) state;
        const char *cmd[] = { "sleep", "1000", NULL };
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        struct initproc ip = start_init(NULL, cmd, -1, devnull, true);
        close(devnull);
        pid_t w = ping_workload(ip.ctl);
        /* A frame whose first field is not op=: the host is confused. */
        unsigned char bad[4 + 6] = { 6, 0, 0, 0, 'i', 'd', '=', '1', '\0', '\0' };
        assert_int_equal(lg_write_all(ip.ctl, bad, sizeof(bad)), 0);
        assert_exit_code(wait_exit(ip.pid), 137);
        assert_true(gone(w));
        close(ip.ctl);
}

static void test_orphans_reaped(void **state) {
        (void) state;
        int out[2];
        assert_int_equal(pipe2(out, O_CLOEXEC), 0);
        /* The subshell forks the inner sh and exits at once: the inner sh is
         * orphaned, reparented to init, prints its pid and exits. */
        const char *cmd[] = { "sh", "-c", "( sh -c 'echo $$' & ); exec sleep 1000", NULL };
        struct initproc ip = start_init(NULL, cmd, out[1], -1, true);
        close(out[1]);
        char line[64];
        read_line(out[0], line, sizeof(line));
        pid_t orphan = atoi(line);
        assert_true(orphan > 0);
        assert_true(wait_gone(orphan)); /* not left as a zombie */

        struct lg_msg m;
        frame(&m, "op=shutdown", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "exit", &m);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 128 + SIGKILL);
        close(out[0]);
        close(ip.ctl);
}

/* ---- worker control relay ----------------------------------------------- */

/* Run as the workload under --worker-control (this test binary re-executed
 * with LEGION_TEST_WORKER set): a tiny language worker. */
static int worker_main(void) {
        const char *fdenv = getenv("LEGION_CONTROL_FD");
        if (!fdenv || strcmp(fdenv, "3") != 0)
                return 10;
        if (fcntl(4, F_GETFD) >= 0)
                return 11; /* nothing but 0-3 may leak into the workload */
        struct lg_msg m;
        lg_msg_init(&m);
        lg_msg_add(&m, "op", "ready");
        if (lg_msg_send(3, &m) < 0)
                return 12;
        lg_msg_free(&m);
        if (lg_msg_recv(3, &m) != 1 || strcmp(lg_msg_get(&m, "op"), "specialize") || m.nfds != 1)
                return 13;
        /* code= is "print(1)" plus a large padding: frames bigger than the
         * socket buffers must make it through init in both directions. */
        const char *code = lg_msg_get(&m, "code");
        if (lg_write_all(m.fds[0], code, 8) < 0)
                return 14;
        struct lg_msg r;
        lg_msg_init(&r);
        lg_msg_add(&r, "op", "specialized");
        lg_msg_addf(&r, "size", "%zu", strlen(code));
        lg_msg_add(&r, "echo", code);
        if (lg_msg_send(3, &r) < 0)
                return 15;
        lg_msg_free(&r);
        lg_msg_free(&m);
        /* Now try to impersonate init. */
        lg_msg_add(&r, "op", "exit");
        lg_msg_add(&r, "code", "0");
        lg_msg_add(&r, "via", "init");
        if (lg_msg_send(3, &r) < 0)
                return 16;
        lg_msg_free(&r);
        /* Wait for init to hang up on us, then exit. */
        if (lg_msg_recv(3, &m) != 0)
                return 17;
        return 5;
}

static void test_worker_relay(void **state) {
        (void) state;
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        assert_true(n > 0);
        self[n] = '\0';
        setenv("LEGION_TEST_WORKER", "1", 1);
        const char *opts[] = { "--worker-control", NULL };
        const char *cmd[] = { self, NULL };
        struct initproc ip = start_init(opts, cmd, -1, -1, true);
        unsetenv("LEGION_TEST_WORKER");

        struct lg_msg m;
        expect_op(ip.ctl, "ready", &m);
        assert_string_equal(lg_msg_get(&m, "via"), "worker");
        lg_msg_free(&m);

        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        const size_t big = 700 * 1024;
        char *code = malloc(big + 1);
        assert_non_null(code);
        memcpy(code, "print(1)", 8);
        for (size_t i = 8; i < big; i++)
                code[i] = (char) ('a' + i % 26);
        code[big] = '\0';
        frame(&m, "op=specialize", NULL);
        assert_int_equal(lg_msg_add(&m, "code", code), 0);
        m.fds[0] = p[1];
        m.nfds = 1;
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "specialized", &m);
        assert_int_equal(get_int(&m, "size"), big);
        assert_string_equal(lg_msg_get(&m, "echo"), code);
        assert_string_equal(lg_msg_get(&m, "via"), "worker");
        lg_msg_free(&m);
        free(code);
        char buf[16] = { 0 };
        assert_int_equal(read(p[0], buf, sizeof(buf)), 8);
        assert_string_equal(buf, "print(1)");
        close(p[0]);

        /* The spoofed op=exit is not relayed; init closes the channel. */
        assert_int_equal(recv_frame(ip.ctl, &m), 1);
        assert_string_equal(lg_msg_get(&m, "op"), "error");
        assert_non_null(strstr(lg_msg_get(&m, "message"), "worker control channel closed"));
        lg_msg_free(&m);

        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "code"), 5);
        assert_null(lg_msg_get(&m, "via"));
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 5);

        /* Without --worker-control there is nothing to relay to. */
        ip = start_init(NULL, NULL, -1, -1, true);
        frame(&m, "op=specialize", "id=z", NULL);
        send_frame(ip.ctl, &m);
        expect_op(ip.ctl, "error", &m);
        assert_string_equal(lg_msg_get(&m, "id"), "z");
        lg_msg_free(&m);
        close(ip.ctl);
        assert_exit_code(wait_exit(ip.pid), 137);
}

/* ---- log capping through init ------------------------------------------- */

/* The file holds MARKER followed by whole consecutive lines "N\n" ending
 * with last (or, if never truncated, all lines 1..last). */
static void check_numbered_log(const char *buf, size_t len, long last, bool truncated) {
        const char *p = buf;
        if (truncated) {
                assert_true(len > MLEN);
                assert_memory_equal(buf, MARKER, MLEN);
                p += MLEN;
        }
        long prev = -1;
        while (p < buf + len) {
                char *end;
                long v = strtol(p, &end, 10);
                assert_true(end > p && *end == '\n');
                if (prev >= 0)
                        assert_int_equal(v, prev + 1);
                else if (!truncated)
                        assert_int_equal(v, 1);
                prev = v;
                p = end + 1;
        }
        assert_int_equal(prev, last);
}

static void test_log_max(void **state) {
        (void) state;
        int log = tmpfile_rw();
        const char *opts[] = { "--log-max", "64K", NULL };
        const char *cmd[] = { "seq", "1", "40000", NULL }; /* ~230 KB */
        struct initproc ip = start_init(opts, cmd, log, -1, true);
        struct lg_msg m;
        expect_op(ip.ctl, "exit", &m);
        assert_int_equal(get_int(&m, "code"), 0);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 0);

        size_t len;
        char *buf = read_whole(log, &len);
        assert_true(len <= 65536);
        assert_true(len >= 16384); /* something substantial is kept */
        check_numbered_log(buf, len, 40000, true);
        free(buf);
        close(ip.ctl);
        close(log);
}

/* stdout and stderr on the same file (2>&1) share one pipe and one cap. */
static void test_log_max_shared(void **state) {
        (void) state;
        int log = tmpfile_rw();
        /* O_APPEND like a shell's >>: init must cope (it clears it). */
        int fl = fcntl(log, F_GETFL);
        assert_int_equal(fcntl(log, F_SETFL, fl | O_APPEND), 0);
        const char *opts[] = { "--log-max=4096", NULL };
        const char *cmd[] = { "sh", "-c", "seq 1 3000; seq 3001 6000 >&2", NULL };
        struct initproc ip = start_init(opts, cmd, log, log, false);
        assert_exit_code(wait_exit(ip.pid), 0);
        size_t len;
        char *buf = read_whole(log, &len);
        assert_true(len <= 4096);
        check_numbered_log(buf, len, 6000, true);
        free(buf);
        close(log);

        /* Small output stays untouched. */
        log = tmpfile_rw();
        const char *cmd2[] = { "seq", "1", "100", NULL };
        ip = start_init(opts, cmd2, log, -1, false);
        assert_exit_code(wait_exit(ip.pid), 0);
        buf = read_whole(log, &len);
        check_numbered_log(buf, len, 100, false);
        free(buf);
        close(log);
}

/* A listening socket at a fresh path, and a client connected to it. */
static int listen_at(struct sockaddr_un *a) {
        memset(a, 0, sizeof(*a));
        a->sun_family = AF_UNIX;
        snprintf(a->sun_path, sizeof(a->sun_path), "/tmp/lg-attach-%d.sock", (int) getpid());
        unlink(a->sun_path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) a, sizeof(*a)), 0);
        assert_int_equal(listen(fd, 4), 0);
        return fd;
}

static int attach_to(const struct sockaddr_un *a, struct lg_msg *m) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(fd, (const struct sockaddr *) a, sizeof(*a)), 0);
        lg_msg_init(m);
        assert_int_equal(recv_frame(fd, m), 1);
        assert_string_equal(lg_msg_get(m, "op"), "attached");
        return fd;
}

/* --attach-fd: losing the host detaches instead of killing; a new host
 * attaches (the newest wins), and a workload that ended meanwhile has its
 * status kept for the next host. */
static void test_attach(void **state) {
        (void) state;
        struct sockaddr_un a;
        attach_listen = listen_at(&a);
        const char *opts[] = { "--attach-fd", "11", NULL };
        const char *cmd[] = { "sleep", "1000", NULL };
        struct initproc ip = start_init(opts, cmd, -1, -1, true);
        close(attach_listen);
        attach_listen = -1;
        pid_t w = ping_workload(ip.ctl);
        close(ip.ctl);
        struct lg_msg m;
        int h1 = attach_to(&a, &m);
        assert_int_equal(get_int(&m, "workload"), w);
        lg_msg_free(&m);
        assert_false(gone(w));
        int h2 = attach_to(&a, &m);
        lg_msg_free(&m);
        assert_int_equal(recv_frame(h1, &m), 0); /* replaced: EOF */
        close(h1);
        assert_int_equal(ping_workload(h2), w);
        /* Detached again; the workload dies meanwhile. */
        close(h2);
        kill(w, SIGKILL);
        assert_true(wait_gone(w)); /* reaped by init, which now waits */
        int h3 = attach_to(&a, &m);
        assert_false(lg_msg_get(&m, "workload"));
        lg_msg_free(&m);
        expect_op(h3, "exit", &m);
        assert_int_equal(get_int(&m, "signal"), SIGKILL);
        lg_msg_free(&m);
        assert_exit_code(wait_exit(ip.pid), 128 + SIGKILL);
        close(h3);
        unlink(a.sun_path);

        /* Not a listening socket: no detaching, init refuses to start. */
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        attach_listen = sv[0];
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        ip = start_init(opts, cmd, -1, devnull, false);
        assert_exit_code(wait_exit(ip.pid), 125);
        attach_listen = -1;
        close(sv[0]);
        close(sv[1]);
        close(devnull);
}

static void test_bad_options(void **state) {
        (void) state;
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        const char *o1[] = { "--log-max", "12", NULL };
        const char *cmd[] = { "true", NULL };
        struct initproc ip = start_init(o1, cmd, -1, devnull, false);
        assert_exit_code(wait_exit(ip.pid), 125);
        const char *o2[] = { "--frobnicate", NULL };
        ip = start_init(o2, cmd, -1, devnull, false);
        assert_exit_code(wait_exit(ip.pid), 125);
        const char *o3[] = { "--control-fd", "0", NULL };
        ip = start_init(o3, cmd, -1, devnull, false);
        assert_exit_code(wait_exit(ip.pid), 125);
        const char *o4[] = { "--control-fd", "77", NULL }; /* not open */
        ip = start_init(o4, cmd, -1, devnull, false);
        assert_exit_code(wait_exit(ip.pid), 125);
        static const char *const bad_users[] = { "1000", "x:1", "1:", ":1", "-1:0", "1:2x", "99999999999:0" };
        for (size_t i = 0; i < sizeof(bad_users) / sizeof(bad_users[0]); i++) {
                const char *o5[] = { "--user", bad_users[i], NULL };
                ip = start_init(o5, cmd, -1, devnull, false);
                assert_exit_code(wait_exit(ip.pid), 125);
        }
        close(devnull);
}

/* --user: the workload runs as that uid/gid with no supplementary groups
 * (the test runs as root, so init may switch). */
static void test_run_as_user(void **state) {
        (void) state;
        if (geteuid() != 0)
                skip();
        int log = tmpfile_rw();
        const char *opts[] = { "--user", "65534:65533", NULL };
        const char *cmd[] = { "sh", "-c", "id -u; id -g; id -G", NULL };
        struct initproc ip = start_init(opts, cmd, log, -1, false);
        assert_exit_code(wait_exit(ip.pid), 0);
        size_t len;
        char *buf = read_whole(log, &len);
        assert_string_equal(buf, "65534\n65533\n65533\n");
        free(buf);
        close(log);
}

/* ---- lg_logcap directly ------------------------------------------------- */

static void test_logcap_basic(void **state) {
        (void) state;
        int fd = tmpfile_rw();
        struct lg_logcap lc;
        assert_int_equal(lg_logcap_init(&lc, fd, 100), -EINVAL); /* below minimum */
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        assert_int_equal(lg_logcap_init(&lc, p[1], 1024), -EINVAL); /* not a file */
        close(p[0]);
        close(p[1]);

        assert_int_equal(lg_logcap_init(&lc, fd, 1024), 0);
        assert_int_equal(lc.size, 0);
        char line[32];
        for (int i = 1; i <= 40; i++) { /* 40 * 10 bytes: fits */
                snprintf(line, sizeof(line), "line %04d\n", i);
                assert_int_equal(lg_logcap_write(&lc, line, 10), 0);
        }
        assert_int_equal(lc.size, 400);
        for (int i = 41; i <= 200; i++) {
                snprintf(line, sizeof(line), "line %04d\n", i);
                assert_int_equal(lg_logcap_write(&lc, line, 10), 0);
                struct stat st;
                assert_int_equal(fstat(fd, &st), 0);
                assert_true(st.st_size <= 1024);
                assert_int_equal((uint64_t) st.st_size, lc.size);
        }
        size_t len;
        char *buf = read_whole(fd, &len);
        assert_memory_equal(buf, MARKER, MLEN);
        assert_memory_equal(buf + len - 10, "line 0200\n", 10);
        /* Whole lines only after the marker, consecutive. */
        assert_memory_equal(buf + MLEN, "line ", 5);
        int first = atoi(buf + MLEN + 5);
        for (size_t off = MLEN; off < len; off += 10) {
                char want[16];
                snprintf(want, sizeof(want), "line %04d\n", first++);
                assert_memory_equal(buf + off, want, 10);
        }
        free(buf);
        close(fd);
}

/* One write bigger than the cap: only its newest part survives. */
static void test_logcap_huge_write(void **state) {
        (void) state;
        int fd = tmpfile_rw();
        struct lg_logcap lc;
        assert_int_equal(lg_logcap_init(&lc, fd, 512), 0);
        assert_int_equal(lg_logcap_write(&lc, "old\n", 4), 0);
        char big[5000];
        for (size_t i = 0; i < sizeof(big); i++)
                big[i] = (char) ('a' + i % 26);
        assert_int_equal(lg_logcap_write(&lc, big, sizeof(big)), 0);
        size_t len;
        char *buf = read_whole(fd, &len);
        assert_int_equal(len, 256); /* marker + newest (cap/2 - marker) bytes */
        assert_memory_equal(buf, MARKER, MLEN);
        assert_memory_equal(buf + MLEN, big + sizeof(big) - (256 - MLEN), 256 - MLEN);
        free(buf);
        close(fd);
}

/* An existing oversized file is compacted at init; O_WRONLY files cannot be
 * read back, so compaction drops all older data but still caps. */
static void test_logcap_existing_and_writeonly(void **state) {
        (void) state;
        int fd = tmpfile_rw();
        char big[3000];
        for (size_t i = 0; i < sizeof(big); i++)
                big[i] = (i % 10 == 9) ? '\n' : '0' + (char) (i % 10);
        assert_int_equal(lg_write_all(fd, big, sizeof(big)), 0);
        struct lg_logcap lc;
        assert_int_equal(lg_logcap_init(&lc, fd, 1000), 0);
        assert_true(lc.keep_old);
        size_t len;
        char *buf = read_whole(fd, &len);
        assert_true(len <= 500);
        assert_memory_equal(buf, MARKER, MLEN);
        assert_memory_equal(buf + MLEN, "012345678\n", 10); /* line aligned */
        assert_memory_equal(buf + len - 10, "012345678\n", 10);
        free(buf);

        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int wfd = open(path, O_WRONLY | O_CLOEXEC);
        assert_true(wfd >= 0);
        assert_int_equal(lg_logcap_init(&lc, wfd, 1000), 0);
        assert_false(lc.keep_old);
        for (int i = 0; i < 30; i++)
                assert_int_equal(lg_logcap_write(&lc, "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n", 63), 0);
        buf = read_whole(fd, &len);
        assert_true(len <= 1000);
        assert_memory_equal(buf, MARKER, MLEN);
        assert_memory_equal(buf + len - 4, "xyz\n", 4);
        free(buf);
        close(wfd);
        close(fd);
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
}

/* Random write sizes against a model: the file is always either the whole
 * stream, or the marker followed by a suffix of the stream, and never
 * larger than the cap. */
static void test_logcap_model(void **state) {
        (void) state;
        const size_t cap = 2048, total = 200000;
        char *stream = malloc(total);
        assert_non_null(stream);
        for (size_t i = 0; i < total; i++)
                stream[i] = (rnd() % 8 == 0) ? '\n' : (char) ('a' + rnd() % 26);
        int fd = tmpfile_rw();
        struct lg_logcap lc;
        assert_int_equal(lg_logcap_init(&lc, fd, cap), 0);
        bool truncated = false;
        for (size_t off = 0; off < total;) {
                size_t n = (size_t) (rnd() % 3 == 0 ? rnd() % 5000 : rnd() % 200);
                if (n > total - off)
                        n = total - off;
                assert_int_equal(lg_logcap_write(&lc, stream + off, n), 0);
                off += n;
                size_t len;
                char *buf = read_whole(fd, &len);
                assert_true(len <= cap);
                assert_int_equal(len, lc.size);
                if (len >= MLEN && !memcmp(buf, MARKER, MLEN))
                        truncated = true;
                if (truncated) {
                        assert_memory_equal(buf, MARKER, MLEN);
                        size_t kept = len - MLEN;
                        assert_true(kept <= off);
                        assert_memory_equal(buf + MLEN, stream + off - kept, kept);
                } else {
                        assert_int_equal(len, off);
                        assert_memory_equal(buf, stream, off);
                }
                free(buf);
        }
        assert_true(truncated);
        free(stream);
        close(fd);
}

int main(void) {
        if (getenv("LEGION_TEST_WORKER"))
                _exit(worker_main());
        /* A child killed on purpose must not take us down with SIGPIPE. */
        signal(SIGPIPE, SIG_IGN);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_logcap_basic),
                cmocka_unit_test(test_logcap_huge_write),
                cmocka_unit_test(test_logcap_existing_and_writeonly),
                cmocka_unit_test(test_logcap_model),
                cmocka_unit_test(test_exit_code),
                cmocka_unit_test(test_exit_signal),
                cmocka_unit_test(test_no_control_socket),
                cmocka_unit_test(test_exec_missing),
                cmocka_unit_test(test_sigterm_forwarded),
                cmocka_unit_test(test_sigterm_idle),
                cmocka_unit_test(test_ping_and_unknown),
                cmocka_unit_test(test_split_host_frame),
                cmocka_unit_test(test_exec_with_fds),
                cmocka_unit_test(test_exec_env_cwd_and_errors),
                cmocka_unit_test(test_signal_verb),
                cmocka_unit_test(test_signal_workload_default),
                cmocka_unit_test(test_shutdown_grace),
                cmocka_unit_test(test_attach),
                cmocka_unit_test(test_eof_kills_everything),
                cmocka_unit_test(test_protocol_violation),
                cmocka_unit_test(test_orphans_reaped),
                cmocka_unit_test(test_worker_relay),
                cmocka_unit_test(test_log_max),
                cmocka_unit_test(test_log_max_shared),
                cmocka_unit_test(test_bad_options),
                cmocka_unit_test(test_run_as_user),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
