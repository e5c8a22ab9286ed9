/* lg_lazyd against a stand-in fetcher (root, /dev/fuse, mkfs.erofs): this
 * binary run as `test-lazyd lazy-fetcher --home H --fd 3 ...` serves the
 * blob filesystem from lazy/layers/<hex>/blob with the least of the FUSE
 * protocol and answers the control socket, so that what lazyd does is
 * tested apart from the real fetcher: a layer attached and read through
 * its mount; the fetcher killed and started again on the kept device
 * (reads go on); a new lg_lazyd taking over the running fetcher (same pid,
 * mounts not doubled); --stop-all leaving nothing mounted or running. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lazy/lazyd.h"

#define HEX "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define FILE_SIZE (300 * 1024)

/* ---- the stand-in fetcher ------------------------------------------------ */

static char fake_home[4096];
static uint64_t fake_reads;

static int fake_blob(void) {
        char p[4300];
        snprintf(p, sizeof(p), "%s/lazy/layers/%s/blob", fake_home, HEX);
        return open(p, O_RDONLY | O_CLOEXEC);
}

static void reply(int fd, uint64_t unique, int error, const void *data, size_t len) {
        struct fuse_out_header h = {.len = (uint32_t) (sizeof(h) + len), .error = error, .unique = unique};
        struct iovec iov[2] = {{&h, sizeof(h)}, {(void *) data, len}};
        (void) !writev(fd, iov, len ? 2 : 1);
}

static void fill_attr(struct fuse_attr *a, uint64_t node) {
        memset(a, 0, sizeof(*a));
        a->ino = node;
        a->nlink = 1;
        if (node == FUSE_ROOT_ID) {
                a->mode = S_IFDIR | 0555;
                a->nlink = 2;
                return;
        }
        int b = fake_blob();
        struct stat st = {0};
        fstat(b, &st);
        close(b);
        a->mode = S_IFREG | 0444;
        a->size = (uint64_t) st.st_size;
        a->blksize = 4096;
}

static void *fake_fuse(void *arg) {
        int fd = (int) (intptr_t) arg;
        static char buf[FUSE_MIN_READ_BUFFER + 1024 * 1024];
        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0 && (errno == EINTR || errno == ENOENT))
                        continue;
                if (n < (ssize_t) sizeof(struct fuse_in_header))
                        _exit(0);
                struct fuse_in_header *in = (void *) buf;
                void *body = buf + sizeof(*in);
                switch (in->opcode) {
                case FUSE_INIT: {
                        struct fuse_init_in *ii = body;
                        struct fuse_init_out o = {.major = FUSE_KERNEL_VERSION, .minor = ii->minor,
                                                  .max_readahead = ii->max_readahead, .max_write = 4096,
                                                  .max_background = 16, .congestion_threshold = 12,
                                                  .time_gran = 1, .max_pages = 256};
                        reply(fd, in->unique, 0, &o, sizeof(o));
                        break;
                }
                case FUSE_LOOKUP: {
                        if (strcmp(body, HEX)) {
                                reply(fd, in->unique, -ENOENT, NULL, 0);
                                break;
                        }
                        struct fuse_entry_out e = {.nodeid = 2, .entry_valid = 3600, .attr_valid = 3600};
                        fill_attr(&e.attr, 2);
                        reply(fd, in->unique, 0, &e, sizeof(e));
                        break;
                }
                case FUSE_GETATTR: {
                        struct fuse_attr_out a = {.attr_valid = 3600};
                        fill_attr(&a.attr, in->nodeid);
                        reply(fd, in->unique, 0, &a, sizeof(a));
                        break;
                }
                case FUSE_OPEN: {
                        struct fuse_open_out o = {.fh = in->nodeid, .open_flags = FOPEN_DIRECT_IO};
                        reply(fd, in->unique, 0, &o, sizeof(o));
                        break;
                }
                case FUSE_READ: {
                        struct fuse_read_in *r = body;
                        static char data[1024 * 1024];
                        int b = fake_blob();
                        ssize_t got = pread(b, data, r->size < sizeof(data) ? r->size : sizeof(data),
                                            (off_t) r->offset);
                        close(b);
                        __atomic_add_fetch(&fake_reads, 1, __ATOMIC_SEQ_CST);
                        reply(fd, in->unique, got < 0 ? -EIO : 0, data, got < 0 ? 0 : (size_t) got);
                        break;
                }
                case FUSE_STATFS: {
                        struct fuse_statfs_out s = {0};
                        reply(fd, in->unique, 0, &s, sizeof(s));
                        break;
                }
                case FUSE_FORGET:
                case FUSE_BATCH_FORGET: break;
                case FUSE_RELEASE:
                case FUSE_FLUSH: reply(fd, in->unique, 0, NULL, 0); break;
                default: reply(fd, in->unique, -ENOSYS, NULL, 0); break;
                }
        }
        return NULL;
}

static int fake_fetcher(int argc, char **argv) {
        /* Looks like one, but its fd 3 is not a FUSE device. */
        if (!strcmp(argv[argc - 1], "--impostor")) {
                int n = open("/dev/null", O_RDONLY);
                dup2(n, 3);
                for (;;)
                        pause();
        }
        for (int i = 2; i + 1 < argc; i++)
                if (!strcmp(argv[i], "--home"))
                        snprintf(fake_home, sizeof(fake_home), "%s", argv[i + 1]);
        /* The test wants a fetcher that dies at once. */
        char crash[4200];
        snprintf(crash, sizeof(crash), "%s/fake-crash", fake_home);
        if (access(crash, F_OK) == 0)
                _exit(3);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/run/lazy/fetcher.sock", fake_home);
        unlink(sa.sun_path);
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (l < 0 || bind(l, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(l, 16) < 0)
                return 1;
        pthread_t t;
        pthread_create(&t, NULL, fake_fuse, (void *) (intptr_t) 3);
        for (;;) {
                int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                char line[512] = "";
                ssize_t n = read(c, line, sizeof(line) - 1);
                const char *ans = "{\"error\":\"bad request\"}\n";
                /* The test's hostile answer, as it is. */
                static char hostile[80000];
                char p[4200];
                snprintf(p, sizeof(p), "%s/fake-status", fake_home);
                int hf = open(p, O_RDONLY | O_CLOEXEC);
                ssize_t hn = hf >= 0 ? lg_read_all(hf, hostile, sizeof(hostile) - 1) : -1;
                if (hf >= 0)
                        close(hf);
                if (n > 0 && strstr(line, "\"status\"") && hn >= 0) {
                        hostile[hn] = '\0';
                        ans = hostile;
                } else if (n > 0 && strstr(line, "\"status\""))
                        ans = "{\"chunks\":5,\"localChunks\":5,\"bytes\":307200,\"localBytes\":307200,"
                              "\"fetchedBytes\":0,\"misses\":0,\"errors\":0}\n";
                else if (n > 0 && strstr(line, "\"op\""))
                        ans = "{\"ok\":true}\n";
                (void) !write(c, ans, strlen(ans));
                close(c);
        }
}

/* ---- the tests ----------------------------------------------------------- */

static char home[256], mnt[512], want[FILE_SIZE];
static lg_lazyd *d;

static int run(const char *fmt, ...) {
        char cmd[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        return system(cmd);
}

/* What lazyd said (cfg.log), all lines. */
static char said[16384];

static void log_line(void *ud, const char *line) {
        (void) ud;
        size_t n = strlen(said);
        snprintf(said + n, sizeof(said) - n, "%s\n", line);
}

static void new_lazyd(void) {
        struct lg_lazyd_config cfg = {.rate = 0, .log = log_line};
        struct lg_error err = {0};
        int r = lg_lazyd_new(uv_default_loop(), home, &cfg, &d, &err);
        if (r < 0)
                fail_msg("lg_lazyd_new: %s", err.msg);
        uv_run(uv_default_loop(), UV_RUN_NOWAIT);
}

static void free_lazyd(void) {
        lg_lazyd_free(d);
        d = NULL;
        uv_run(uv_default_loop(), UV_RUN_NOWAIT);
}

/* The whole file read through the mount equals what was put in, read
 * from the blob filesystem (the page cache of the file dropped first). */
static void check_read(void) {
        char p[600];
        snprintf(p, sizeof(p), "%s/big", mnt);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        static char got[FILE_SIZE];
        assert_int_equal(lg_pread_all(fd, got, sizeof(got), 0), FILE_SIZE);
        close(fd);
        assert_memory_equal(got, want, FILE_SIZE);
}

static unsigned mounts_at(const char *dir) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096];
        unsigned n = 0;
        while (f && fgets(line, sizeof(line), f)) {
                char *s = line;
                for (int i = 0; i < 4 && s; i++)
                        s = strchr(s + 1, ' ');
                if (s && !strncmp(s + 1, dir, strlen(dir)) && s[1 + strlen(dir)] == ' ')
                        n++;
        }
        if (f)
                fclose(f);
        return n;
}

/* Running, not a zombie (a fetcher this process started and nobody reaped). */
static bool alive(pid_t pid) {
        char p[64], buf[512];
        snprintf(p, sizeof(p), "/proc/%d/stat", (int) pid);
        if (pid <= 0 || lg_read_file_at(AT_FDCWD, p, buf, sizeof(buf)) <= 0)
                return false;
        const char *s = strrchr(buf, ')');
        return s && s[1] == ' ' && s[2] != 'Z';
}

static void test_attach_restart_adopt_stop(void **state) {
        (void) state;
        struct lg_error err = {0};
        new_lazyd();
        /* Nothing started before the first attach. */
        assert_int_equal(lg_lazyd_fetcher_pid(d), 0);
        int r = lg_lazyd_attach(d, HEX, mnt, &err);
        if (r < 0)
                fail_msg("attach: %s", err.msg);
        pid_t pid = lg_lazyd_fetcher_pid(d);
        assert_true(alive(pid));
        /* Out of our session and cgroup, as sandboxes are. */
        assert_int_equal(getsid(pid), pid);
        char p[64], cg[4096];
        snprintf(p, sizeof(p), "/proc/%d/cgroup", (int) pid);
        assert_true(lg_read_file_at(AT_FDCWD, p, cg, sizeof(cg)) > 0);
        assert_non_null(strstr(cg, "/lazy-fetcher-"));
        check_read();
        /* Again: idempotent, one mount. */
        assert_int_equal(lg_lazyd_attach(d, HEX, mnt, &err), 0);
        assert_int_equal(mounts_at(mnt), 1);
        struct lg_image_lazy_status st;
        assert_int_equal(lg_lazyd_status(d, HEX, &st, &err), 0);
        assert_int_equal(st.bytes, 307200);

        /* The fetcher killed: started again, reads go on. */
        kill(pid, SIGKILL);
        while (lg_lazyd_restarts(d) < 1 || !lg_lazyd_fetcher_pid(d) || lg_lazyd_fetcher_pid(d) == pid)
                uv_run(uv_default_loop(), UV_RUN_ONCE);
        pid_t pid2 = lg_lazyd_fetcher_pid(d);
        assert_true(alive(pid2));
        check_read();

        /* A new lazyd (legiond restarted) takes the same fetcher over. */
        free_lazyd();
        assert_true(alive(pid2));
        check_read();
        new_lazyd();
        assert_int_equal(lg_lazyd_fetcher_pid(d), pid2);
        assert_int_equal(lg_lazyd_attach(d, HEX, mnt, &err), 0);
        assert_int_equal(mounts_at(mnt), 1);
        /* and watches it: killed again, started again. */
        kill(pid2, SIGKILL);
        while (lg_lazyd_restarts(d) < 1 || !lg_lazyd_fetcher_pid(d) || lg_lazyd_fetcher_pid(d) == pid2)
                uv_run(uv_default_loop(), UV_RUN_ONCE);
        check_read();
        pid_t pid3 = lg_lazyd_fetcher_pid(d);
        free_lazyd();

        /* --stop-all: nothing left. */
        int stopped = 0;
        r = lg_lazyd_stop_all(home, &stopped, &err);
        if (r < 0)
                fail_msg("stop_all: %s", err.msg);
        assert_int_equal(stopped, 1);
        assert_false(alive(pid3));
        assert_int_equal(mounts_at(mnt), 0);
        char blobs[512];
        snprintf(blobs, sizeof(blobs), "%s/run/lazy/blobs", home);
        assert_int_equal(mounts_at(blobs), 0);
}

/* Both gone (legiond and fetcher killed): the next lazyd unmounts the
 * dead mounts and a new attach mounts the layer on a new connection. */
static void test_both_dead(void **state) {
        (void) state;
        struct lg_error err = {0};
        new_lazyd();
        assert_int_equal(lg_lazyd_attach(d, HEX, mnt, &err), 0);
        pid_t pid = lg_lazyd_fetcher_pid(d);
        free_lazyd();
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        new_lazyd();
        assert_int_equal(mounts_at(mnt), 0);
        assert_int_equal(lg_lazyd_attach(d, HEX, mnt, &err), 0);
        check_read();
        free_lazyd();
        int stopped;
        assert_int_equal(lg_lazyd_stop_all(home, &stopped, &err), 0);
        assert_int_equal(mounts_at(mnt), 0);
}

/* What the fetcher answers is checked: each of these is an error, with a
 * message fit for a log line, never a crash or a status made up. */
static void test_hostile_answers(void **state) {
        (void) state;
        struct lg_error err = {0};
        new_lazyd();
        assert_int_equal(lg_lazyd_attach(d, HEX, mnt, &err), 0);
        static char big[70000];
        memset(big, 'x', sizeof(big) - 1);
        static const struct {
                const char *text;
                int want;
        } cases[] = {
                {"not json\n", -EPROTO},
                {"[1,2]\n", -EPROTO},
                {"", -EPROTO},
                {"{\"chunks\":5}\n", -EPROTO},
                {"{\"chunks\":-1,\"localChunks\":0,\"bytes\":1,\"localBytes\":0,\"fetchedBytes\":0,\"misses\":0,"
                 "\"errors\":0}\n", -EPROTO},
                {"{\"chunks\":\"5\",\"localChunks\":0,\"bytes\":1,\"localBytes\":0,\"fetchedBytes\":0,\"misses\":0,"
                 "\"errors\":0}\n", -EPROTO},
                {"{\"error\":\"no such layer \\u001b[31m\"}\n", -EIO},
                {"{\"error\":5}\n", -EIO},
                {"{\"ok\":true}{\"ok\":true}\n", -EPROTO},
                {big, -EPROTO},
        };
        char path[600];
        snprintf(path, sizeof(path), "%s/fake-status", home);
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                assert_int_equal(lg_write_file_at(AT_FDCWD, path, cases[i].text, true), 0);
                struct lg_image_lazy_status st = {0};
                err = (struct lg_error){0};
                int r = lg_lazyd_status(d, HEX, &st, &err);
                if (r != cases[i].want)
                        fail_msg("case %zu: %d (%s), want %d", i, r, err.msg, cases[i].want);
                assert_null(strchr(err.msg, 0x1b));
                assert_true(err.msg[0]);
        }
        /* A good answer, and anything after its line ignored. */
        assert_int_equal(lg_write_file_at(AT_FDCWD, path,
                                          "{\"chunks\":5,\"localChunks\":4,\"bytes\":307200,\"localBytes\":300000,"
                                          "\"fetchedBytes\":7,\"misses\":2,\"errors\":1}\ngarbage",
                                          true),
                         0);
        struct lg_image_lazy_status st = {0};
        assert_int_equal(lg_lazyd_status(d, HEX, &st, &err), 0);
        assert_int_equal(st.local_chunks, 4);
        assert_int_equal(st.local_bytes, 300000);
        assert_int_equal(st.fetched_bytes, 7);
        assert_int_equal(st.misses, 2);
        assert_int_equal(st.errors, 1);
        free_lazyd();
}

/* A fetcher whose device cannot be taken (here: its fd 3 is not
 * /dev/fuse) is stopped, and a new one started at the next attach. */
static void test_impostor_stopped(void **state) {
        (void) state;
        pid_t pid = fork();
        if (pid == 0) {
                execl("/proc/self/exe", "test-lazyd", "lazy-fetcher", "--home", home, "--fd", "3", "--impostor",
                      (char *) NULL);
                _exit(127);
        }
        char path[600], buf[32];
        snprintf(path, sizeof(path), "%s/run/lazy", home);
        assert_int_equal(lg_mkdir_p(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/run/lazy/fetcher.pid", home);
        snprintf(buf, sizeof(buf), "%d\n", (int) pid);
        assert_int_equal(lg_write_file_at(AT_FDCWD, path, buf, true), 0);
        /* Until it runs as one: exec done. */
        char cmd[64], line[256] = "";
        snprintf(cmd, sizeof(cmd), "/proc/%d/cmdline", (int) pid);
        while (lg_read_file_at(AT_FDCWD, cmd, line, sizeof(line)) <= 0 || strcmp(line + strlen(line) + 1, "lazy-fetcher"))
                nanosleep(&(struct timespec){0, 1000000}, NULL);
        new_lazyd();
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(lg_lazyd_fetcher_pid(d), 0);
        struct lg_error err = {0};
        assert_int_equal(lg_lazyd_attach(d, HEX, mnt, &err), 0);
        assert_true(alive(lg_lazyd_fetcher_pid(d)));
        check_read();
        free_lazyd();
}

static void *attach_thread(void *arg) {
        struct lg_error err = {0};
        intptr_t r = lg_lazyd_attach(d, HEX, mnt, &err);
        if (r < 0)
                fprintf(stderr, "attach: %s\n", err.msg);
        (void) arg;
        return (void *) r;
}

/* A fetcher that dies as it starts is started again, after a pause that
 * grows while it keeps dying, each exit said with its status; an attach
 * waiting meanwhile goes through once one lives. */
static void test_crash_loop(void **state) {
        (void) state;
        char crash[600];
        snprintf(crash, sizeof(crash), "%s/fake-crash", home);
        assert_int_equal(lg_write_file_at(AT_FDCWD, crash, "", true), 0);
        said[0] = '\0';
        new_lazyd();
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, attach_thread, NULL), 0);
        while (lg_lazyd_restarts(d) < 4)
                uv_run(uv_default_loop(), UV_RUN_ONCE);
        unlink(crash);
        /* The loop runs on until the attach is through. */
        void *r = (void *) 1;
        while (pthread_tryjoin_np(t, &r) != 0)
                uv_run(uv_default_loop(), UV_RUN_NOWAIT), nanosleep(&(struct timespec){0, 5000000}, NULL);
        assert_int_equal((intptr_t) r, 0);
        check_read();
        assert_non_null(strstr(said, "exited, exit status 3; starting it again (restart 1)"));
        assert_non_null(strstr(said, "after a pause (restart 3)"));
        free_lazyd();
}

static int setup(void **state) {
        (void) state;
        snprintf(home, sizeof(home), "/tmp/test-lazyd-XXXXXX");
        if (!mkdtemp(home))
                return -1;
        snprintf(mnt, sizeof(mnt), "%s/images/layers/%s", home, HEX);
        for (size_t i = 0; i < sizeof(want); i++)
                want[i] = (char) (i * 2654435761u >> 13);
        char src[300];
        snprintf(src, sizeof(src), "%s/src", home);
        mkdir(src, 0755);
        char p[400];
        snprintf(p, sizeof(p), "%s/big", src);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0 || lg_write_all(fd, want, sizeof(want)) < 0)
                return -1;
        close(fd);
        return run("mkdir -p %s/lazy/layers/%s && mkfs.erofs --quiet --chunksize=65536 --blobdev=%s/lazy/layers/%s/blob "
                   "%s/lazy/layers/%s/meta.erofs %s >/dev/null",
                   home, HEX, home, HEX, home, HEX, src) == 0 ? 0 : -1;
}

static int teardown(void **state) {
        (void) state;
        int stopped;
        struct lg_error err;
        lg_lazyd_stop_all(home, &stopped, &err);
        return run("rm -rf %s", home);
}

int main(int argc, char **argv) {
        if (argc > 1 && !strcmp(argv[1], "lazy-fetcher"))
                return fake_fetcher(argc, argv);
        if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) < 0 || system("mkfs.erofs --help >/dev/null 2>&1")) {
                printf("1..0 # SKIP needs root, /dev/fuse and mkfs.erofs\n");
                return 77;
        }
        /* The fetcher is started as /proc/self/exe: this binary. */
        signal(SIGPIPE, SIG_IGN);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_attach_restart_adopt_stop, setup, teardown),
                cmocka_unit_test_setup_teardown(test_both_dead, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hostile_answers, setup, teardown),
                cmocka_unit_test_setup_teardown(test_impostor_stopped, setup, teardown),
                cmocka_unit_test_setup_teardown(test_crash_loop, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
