/* Unit tests for the control protocol framing (src/common/proto.c): round
 * trips with repeated keys and fds, frames split across writes, and hostile
 * input, which must be rejected with -EPROTO without leaking fds or memory
 * (run under ASan via `meson setup -Dsanitize=true`). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "common/proto.h"
#include "common/util.h"

static void sockpair(int sv[2]) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static void put_le32(unsigned char *p, uint32_t v) {
        p[0] = v & 0xff;
        p[1] = (v >> 8) & 0xff;
        p[2] = (v >> 16) & 0xff;
        p[3] = v >> 24;
}

/* Write a raw frame (header + payload as given) to fd. */
static void write_raw(int fd, uint32_t len, const void *payload, size_t plen) {
        unsigned char hdr[4];
        put_le32(hdr, len);
        assert_int_equal(lg_write_all(fd, hdr, sizeof(hdr)), 0);
        if (plen)
                assert_int_equal(lg_write_all(fd, payload, plen), 0);
}

/* Send bytes with fds attached (SCM_RIGHTS). */
static void send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 8)];
        } cm;
        memset(&cm, 0, sizeof(cm));
        struct iovec iov = { (void *) buf, len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                             .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t) nfds) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t) nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t) nfds);
        assert_int_equal(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t) len);
}

static int count_open_fds(void) {
        int n = 0;
        for (int fd = 0; fd < 1024; fd++)
                if (fcntl(fd, F_GETFD) >= 0)
                        n++;
        return n;
}

static void test_build_and_get(void **state) {
        (void) state;
        struct lg_msg m;
        lg_msg_init(&m);
        for (int i = 0; i < LG_PROTO_MAX_FDS; i++)
                assert_int_equal(m.fds[i], -1);

        /* The first key must be op, keys are non-empty and have no '='. */
        assert_int_equal(lg_msg_add(&m, "arg", "x"), -EINVAL);
        assert_int_equal(lg_msg_add(&m, "op", "exec"), 0);
        assert_int_equal(lg_msg_add(&m, "", "x"), -EINVAL);
        assert_int_equal(lg_msg_add(&m, "a=b", "x"), -EINVAL);
        assert_int_equal(lg_msg_add(&m, "arg", "sh"), 0);
        assert_int_equal(lg_msg_add(&m, "arg", "-c"), 0);
        assert_int_equal(lg_msg_add(&m, "arg", "a=b c"), 0);
        assert_int_equal(lg_msg_add(&m, "arg", ""), 0);
        assert_int_equal(lg_msg_addf(&m, "pid", "%d", 42), 0);
        assert_int_equal(lg_msg_add(&m, "neg", "-17"), 0);
        assert_int_equal(lg_msg_add(&m, "bad", "1x"), 0);
        assert_int_equal(lg_msg_add(&m, "blank", " 1"), 0);
        assert_int_equal(lg_msg_add(&m, "huge", "99999999999999999999999"), 0);

        char big[1000];
        memset(big, 'z', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        assert_int_equal(lg_msg_addf(&m, "big", "<%s>", big), 0);

        assert_string_equal(lg_msg_get(&m, "op"), "exec");
        assert_string_equal(lg_msg_get(&m, "arg"), "sh");
        assert_null(lg_msg_get(&m, "ar"));
        assert_null(lg_msg_get(&m, "missing"));
        const char *b = lg_msg_get(&m, "big");
        assert_int_equal(strlen(b), sizeof(big) + 1);
        assert_int_equal(b[0], '<');

        size_t pos = 0;
        const char *want[] = { "sh", "-c", "a=b c", "" };
        for (size_t i = 0; i < ARRAY_SIZE(want); i++)
                assert_string_equal(lg_msg_next(&m, "arg", &pos), want[i]);
        assert_null(lg_msg_next(&m, "arg", &pos));

        long long v = 0;
        assert_int_equal(lg_msg_get_int(&m, "pid", &v), 0);
        assert_int_equal(v, 42);
        assert_int_equal(lg_msg_get_int(&m, "neg", &v), 0);
        assert_int_equal(v, -17);
        assert_int_equal(lg_msg_get_int(&m, "bad", &v), -EINVAL);
        assert_int_equal(lg_msg_get_int(&m, "blank", &v), -EINVAL);
        assert_int_equal(lg_msg_get_int(&m, "huge", &v), -EINVAL);
        assert_int_equal(lg_msg_get_int(&m, "arg", &v), -EINVAL);
        assert_int_equal(lg_msg_get_int(&m, "nope", &v), -ENOENT);

        /* A value taken from the message itself, while the buffer grows. */
        for (int i = 0; i < 20; i++)
                assert_int_equal(lg_msg_add(&m, "copy", lg_msg_get(&m, "big")), 0);
        pos = 0;
        while ((b = lg_msg_next(&m, "copy", &pos)))
                assert_string_equal(b, lg_msg_get(&m, "big"));

        lg_msg_reset(&m);
        assert_int_equal(m.len, 0);
        assert_int_equal(lg_msg_add(&m, "op", "ping"), 0);
        assert_string_equal(lg_msg_get(&m, "op"), "ping");
        lg_msg_free(&m);
        lg_msg_free(&m); /* idempotent */
}

static void test_size_limit(void **state) {
        (void) state;
        struct lg_msg m;
        lg_msg_init(&m);
        assert_int_equal(lg_msg_add(&m, "op", "x"), 0);
        char *v = malloc(LG_PROTO_MAX);
        assert_non_null(v);
        memset(v, 'a', LG_PROTO_MAX - 1);
        v[LG_PROTO_MAX - 1] = '\0';
        assert_int_equal(lg_msg_add(&m, "k", v), -EMSGSIZE);
        /* Exactly filling the frame is fine: "op=x\0" + "k=" + value + NUL. */
        size_t room = LG_PROTO_MAX - m.len - 3;
        v[room] = '\0';
        assert_int_equal(lg_msg_add(&m, "k", v), 0);
        assert_int_equal(m.len, LG_PROTO_MAX);
        assert_int_equal(lg_msg_add(&m, "a", ""), -EMSGSIZE);

        int sv[2];
        sockpair(sv);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                /* The frame is much larger than the socket buffer: the
                 * sender has to go through partial sends. */
                _exit(lg_msg_send(sv[0], &m) == 0 ? 0 : 1);
        }
        struct lg_msg r;
        lg_msg_init(&r);
        assert_int_equal(lg_msg_recv(sv[1], &r), 1);
        assert_int_equal(r.len, LG_PROTO_MAX);
        assert_int_equal(strlen(lg_msg_get(&r, "k")), room);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        lg_msg_free(&r);
        lg_msg_free(&m);
        free(v);
        close(sv[0]);
        close(sv[1]);
}

static void test_roundtrip_fds(void **state) {
        (void) state;
        int sv[2], p[2];
        sockpair(sv);
        assert_int_equal(pipe(p), 0); /* deliberately without O_CLOEXEC */

        struct lg_msg m;
        lg_msg_init(&m);
        lg_msg_add(&m, "op", "exec");
        lg_msg_add(&m, "arg", "one");
        lg_msg_add(&m, "env", "A=1");
        lg_msg_add(&m, "arg", "two");
        m.fds[0] = p[0];
        m.fds[1] = p[1];
        m.fds[2] = p[1];
        m.nfds = 3;
        assert_int_equal(lg_msg_send(sv[0], &m), 0);
        lg_msg_free(&m); /* closes our copies of the pipe */

        /* Two frames back to back: the reader must not swallow the second
         * frame's fds with the first. */
        lg_msg_init(&m);
        lg_msg_add(&m, "op", "ping");
        assert_int_equal(lg_msg_send(sv[0], &m), 0);
        lg_msg_free(&m);

        struct lg_msg r;
        lg_msg_init(&r);
        assert_int_equal(lg_msg_recv(sv[1], &r), 1);
        assert_string_equal(lg_msg_get(&r, "op"), "exec");
        size_t pos = 0;
        assert_string_equal(lg_msg_next(&r, "arg", &pos), "one");
        assert_string_equal(lg_msg_next(&r, "arg", &pos), "two");
        assert_null(lg_msg_next(&r, "arg", &pos));
        assert_string_equal(lg_msg_get(&r, "env"), "A=1");
        assert_int_equal(r.nfds, 3);
        for (int i = 0; i < 3; i++) {
                int fl = fcntl(r.fds[i], F_GETFD);
                assert_true(fl >= 0 && (fl & FD_CLOEXEC)); /* MSG_CMSG_CLOEXEC */
        }
        assert_int_equal(write(r.fds[1], "xy", 2), 2);
        char buf[4];
        assert_int_equal(read(r.fds[0], buf, sizeof(buf)), 2);
        assert_memory_equal(buf, "xy", 2);

        /* Receiving into a used message drops its old fds. */
        assert_int_equal(lg_msg_recv(sv[1], &r), 1);
        assert_string_equal(lg_msg_get(&r, "op"), "ping");
        assert_int_equal(r.nfds, 0);
        for (int i = 0; i < LG_PROTO_MAX_FDS; i++)
                assert_int_equal(r.fds[i], -1);

        close(sv[0]);
        assert_int_equal(lg_msg_recv(sv[1], &r), 0); /* clean EOF */
        lg_msg_free(&r);
        close(sv[1]);
}

/* The child dribbles a frame (with fds on its first byte) a few bytes at a
 * time; whatever the scheduling, the reader must reassemble it. */
static void test_split_frame(void **state) {
        (void) state;
        int sv[2], p[2];
        sockpair(sv);
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);

        struct lg_msg m;
        lg_msg_init(&m);
        lg_msg_add(&m, "op", "split");
        lg_msg_add(&m, "data", "0123456789abcdefghijklmnopqrstuvwxyz");
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                unsigned char frame[256];
                put_le32(frame, (uint32_t) m.len);
                memcpy(frame + 4, m.buf, m.len);
                size_t total = 4 + m.len;
                int fds[1] = { p[1] };
                send_with_fds(sv[0], frame, 1, fds, 1);
                for (size_t off = 1; off < total; off += 3) {
                        struct timespec ts = { 0, 1000000 };
                        nanosleep(&ts, NULL);
                        size_t n = total - off < 3 ? total - off : 3;
                        if (lg_write_all(sv[0], frame + off, n) < 0)
                                _exit(1);
                }
                _exit(0);
        }
        close(p[1]);
        struct lg_msg r;
        lg_msg_init(&r);
        assert_int_equal(lg_msg_recv(sv[1], &r), 1);
        assert_string_equal(lg_msg_get(&r, "data"), "0123456789abcdefghijklmnopqrstuvwxyz");
        assert_int_equal(r.nfds, 1);
        assert_int_equal(write(r.fds[0], "!", 1), 1);
        char c;
        assert_int_equal(read(p[0], &c, 1), 1);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        lg_msg_free(&r);
        lg_msg_free(&m);
        close(p[0]);
        close(sv[0]);
        close(sv[1]);
}

/* Feed one raw frame to lg_msg_recv, with a pipe write end attached, and
 * check the verdict. On rejection the received fd must have been closed:
 * the pipe then reads EOF because no write end is left anywhere. */
static void expect_recv(const void *payload, size_t plen, uint32_t hdrlen, bool close_after, int want) {
        int sv[2], p[2];
        sockpair(sv);
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        unsigned char hdr[4];
        put_le32(hdr, hdrlen);
        int fds[1] = { p[1] };
        send_with_fds(sv[0], hdr, sizeof(hdr), fds, 1);
        close(p[1]);
        if (plen)
                assert_int_equal(lg_write_all(sv[0], payload, plen), 0);
        if (close_after)
                close(sv[0]);

        struct lg_msg r;
        lg_msg_init(&r);
        int ret = lg_msg_recv(sv[1], &r);
        assert_int_equal(ret, want);
        if (want < 0) {
                assert_int_equal(r.nfds, 0);
                assert_int_equal(r.len, 0);
                char c;
                assert_int_equal(read(p[0], &c, 1), 0);
        }
        lg_msg_free(&r);
        close(p[0]);
        if (!close_after)
                close(sv[0]);
        close(sv[1]);
}

#define EXPECT_BAD(lit) expect_recv(lit, sizeof(lit) - 1, sizeof(lit) - 1, false, -EPROTO)

static void test_hostile_frames(void **state) {
        (void) state;
        int before = count_open_fds();

        expect_recv("op=ping", 8, 8, false, 1);              /* control: valid */
        expect_recv(NULL, 0, 0, false, -EPROTO);              /* zero length */
        expect_recv(NULL, 0, LG_PROTO_MAX + 1, false, -EPROTO); /* huge */
        expect_recv(NULL, 0, 0xffffffffu, false, -EPROTO);
        EXPECT_BAD("op=ping");                                /* no final NUL */
        EXPECT_BAD("op=ping\0noequals\0");                    /* field without '=' */
        EXPECT_BAD("op=ping\0=value\0");                      /* empty key */
        EXPECT_BAD("op=ping\0\0");                            /* empty field */
        EXPECT_BAD("id=1\0op=ping\0");                        /* op not first */
        EXPECT_BAD("opx=ping\0");
        EXPECT_BAD("o=ping\0");
        EXPECT_BAD("\0");
        /* Truncated: the header promises more than arrives before EOF. */
        expect_recv("op=ping\0", 8, 100, true, -EPROTO);
        /* Header cut short, then EOF. */
        {
                int sv[2];
                sockpair(sv);
                assert_int_equal(write(sv[0], "\x08\x00", 2), 2);
                close(sv[0]);
                struct lg_msg r;
                lg_msg_init(&r);
                assert_int_equal(lg_msg_recv(sv[1], &r), -EPROTO);
                lg_msg_free(&r);
                close(sv[1]);
        }
        /* More fds than LG_PROTO_MAX_FDS: rejected, all closed. */
        {
                int sv[2], p[2];
                sockpair(sv);
                assert_int_equal(pipe2(p, O_CLOEXEC), 0);
                unsigned char frame[4 + 8];
                put_le32(frame, 8);
                memcpy(frame + 4, "op=ping", 8);
                int fds[LG_PROTO_MAX_FDS + 1];
                for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
                        fds[i] = p[1];
                send_with_fds(sv[0], frame, sizeof(frame), fds, (int) ARRAY_SIZE(fds));
                close(p[1]);
                struct lg_msg r;
                lg_msg_init(&r);
                assert_int_equal(lg_msg_recv(sv[1], &r), -EPROTO);
                char c;
                assert_int_equal(read(p[0], &c, 1), 0);
                lg_msg_free(&r);
                close(p[0]);
                close(sv[0]);
                close(sv[1]);
        }
        assert_int_equal(count_open_fds(), before);
}

static void test_send_rejects(void **state) {
        (void) state;
        int sv[2];
        sockpair(sv);
        struct lg_msg m;
        lg_msg_init(&m);
        assert_int_equal(lg_msg_send(sv[0], &m), -EINVAL); /* empty */
        lg_msg_add(&m, "op", "x");
        m.nfds = 1; /* fds[0] is still -1 */
        assert_int_equal(lg_msg_send(sv[0], &m), -EBADF);
        m.nfds = 0;
        close(sv[1]);
        assert_int_equal(lg_msg_send(sv[0], &m), -EPIPE); /* no SIGPIPE */
        lg_msg_free(&m);
        close(sv[0]);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

/* Every field of an accepted payload must be reachable, and the accepted
 * payload must round-trip. */
static void check_parsed(const struct lg_msg *m, const char *p, size_t len) {
        assert_int_equal(m->len, len);
        assert_memory_equal(m->buf, p, len);
        assert_non_null(lg_msg_get(m, "op"));
        assert_ptr_equal(lg_msg_get(m, "op"), m->buf + 3);
        size_t fields = 0;
        for (size_t i = 0; i < len; i++)
                fields += p[i] == '\0';
        size_t seen = 0;
        for (size_t off = 0; off < m->len; off += strlen(m->buf + off) + 1) {
                const char *f = m->buf + off;
                assert_non_null(strchr(f, '='));
                assert_true(f[0] != '=');
                seen++;
        }
        assert_int_equal(seen, fields);
}

static void test_fuzz_parse(void **state) {
        (void) state;
        static const char alphabet[] = { 'o', 'p', '=', '\0', 'a', 'k', '\xff', '1' };
        struct lg_msg m;
        lg_msg_init(&m);
        char buf[96];
        int accepted = 0;
        for (int iter = 0; iter < 5000; iter++) {
                size_t len = (size_t) (rnd() % sizeof(buf));
                int mode = (int) (rnd() % 3);
                for (size_t i = 0; i < len; i++)
                        buf[i] = mode == 0 ? (char) rnd() : alphabet[rnd() % sizeof(alphabet)];
                if (mode == 2 && len >= 4) {
                        memcpy(buf, "op=", 3); /* mostly-valid frames */
                        buf[len - 1] = '\0';
                }
                /* Parse from an exact-size heap copy so ASan catches any
                 * read past the end. */
                char *p = malloc(len ? len : 1);
                assert_non_null(p);
                memcpy(p, buf, len);
                int r = lg_msg_parse(&m, p, len);
                assert_true(r == 0 || r == -EPROTO);
                if (r == 0) {
                        accepted++;
                        check_parsed(&m, p, len);
                } else {
                        assert_int_equal(m.len, 0);
                }
                free(p);
        }
        assert_true(accepted > 100); /* the generator does reach valid frames */
        lg_msg_free(&m);
}

/* Random frames through a real socket, including random header lengths. */
static void test_fuzz_recv(void **state) {
        (void) state;
        struct lg_msg r;
        lg_msg_init(&r);
        int before = count_open_fds();
        for (int iter = 0; iter < 300; iter++) {
                int sv[2];
                sockpair(sv);
                char payload[64];
                size_t plen = (size_t) (rnd() % sizeof(payload));
                for (size_t i = 0; i < plen; i++)
                        payload[i] = "op=k\0"[rnd() % 5];
                uint32_t hdr = (rnd() % 4) ? (uint32_t) plen : (uint32_t) rnd();
                write_raw(sv[0], hdr, payload, plen);
                close(sv[0]);
                int ret = lg_msg_recv(sv[1], &r);
                assert_true(ret == 1 || ret == -EPROTO);
                if (ret == 1)
                        assert_int_equal(r.len, plen);
                close(sv[1]);
        }
        lg_msg_free(&r);
        assert_int_equal(count_open_fds(), before);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_build_and_get),
                cmocka_unit_test(test_size_limit),
                cmocka_unit_test(test_roundtrip_fds),
                cmocka_unit_test(test_split_frame),
                cmocka_unit_test(test_hostile_frames),
                cmocka_unit_test(test_send_rejects),
                cmocka_unit_test(test_fuzz_parse),
                cmocka_unit_test(test_fuzz_recv),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
