/* Real sandboxes, run as root: isolation, limits, status reporting and
 * cleanup. Each test runs shell commands from the host's /usr inside a
 * sandbox and checks both what the sandbox saw and what the host sees.
 * Skips (exit 77) with a message when not root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <linux/capability.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/proto.h"
#include "sandbox/sandbox.h"

static char state_root[256];

struct run {
        struct lg_sandbox_status st;
        char out[65536];
        char err[8192];
        uid_t host_uid;
        char dir[4096];
};

static void read_pipe(int fd, char *buf, size_t cap) {
        size_t got = 0;
        ssize_t n;
        while (got + 1 < cap && (n = read(fd, buf + got, cap - 1 - got)) > 0)
                got += (size_t) n;
        buf[got] = '\0';
        /* Drain the rest so the writer never blocks. */
        char sink[4096];
        while (read(fd, sink, sizeof(sink)) > 0)
                ;
}

static void base_spec(struct lg_sandbox_spec *spec) {
        lg_sandbox_spec_init(spec);
        spec->state_root = state_root;
}

/* A sandbox made from spec, not started (a warm one when spec has no
 * workload: its launch is given at start); the test fails otherwise. */
static lg_sandbox *create_sandbox(const struct lg_sandbox_spec *spec) {
        struct lg_error e = {0};
        lg_sandbox *sb = NULL;
        if (lg_sandbox_create(spec, &sb, &e) < 0)
                fail_msg("create: %s", e.msg);
        return sb;
}

/* A sandbox made from spec and started (the test fails otherwise). */
static lg_sandbox *start_sandbox(const struct lg_sandbox_spec *spec) {
        lg_sandbox *sb = create_sandbox(spec);
        struct lg_error e = {0};
        if (lg_sandbox_start(sb, &e) < 0)
                fail_msg("start: %s", e.msg);
        return sb;
}

/* A started sandbox that sleeps `secs` seconds (the launch is copied at
 * create, so the spec need not outlive this). */
static lg_sandbox *start_sleeper(const char *secs) {
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        const char *argv[] = {"/bin/sleep", secs, NULL};
        spec.argv = argv;
        return start_sandbox(&spec);
}

/* Run `sh -c script` in a sandbox shaped by spec; capture stdout/stderr. */
static void run_sh(struct lg_sandbox_spec *spec, const char *script, struct run *r) {
        const char *argv[] = {"/bin/sh", "-c", script, NULL};
        int out[2], err[2];
        assert_int_equal(pipe2(out, O_CLOEXEC), 0);
        assert_int_equal(pipe2(err, O_CLOEXEC), 0);
        spec->argv = argv;
        spec->stdio_fds[1] = out[1];
        spec->stdio_fds[2] = err[1];
        lg_sandbox *sb = start_sandbox(spec);
        close(out[1]);
        close(err[1]);
        r->host_uid = lg_sandbox_host_uid(sb);
        snprintf(r->dir, sizeof(r->dir), "%s", lg_sandbox_state_dir(sb));
        /* stderr is small; read stdout fully first, then stderr. */
        read_pipe(out[0], r->out, sizeof(r->out));
        read_pipe(err[0], r->err, sizeof(r->err));
        close(out[0]);
        close(err[0]);
        assert_int_equal(lg_sandbox_wait(sb, &r->st), 0);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        spec->argv = NULL;
}

static int count_fds(void) {
        int n = 0;
        DIR *d = opendir("/proc/self/fd");
        assert_non_null(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* Any process on the host running with uid in [base, base + 65536)? */
static int processes_with_uid(uid_t base) {
        int n = 0;
        DIR *d = opendir("/proc");
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                char path[300], buf[4096];
                snprintf(path, sizeof(path), "/proc/%s/status", de->d_name);
                if (lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) < 0)
                        continue;
                char *u = strstr(buf, "\nUid:");
                unsigned real;
                if (u && sscanf(u, "\nUid: %u", &real) == 1 && real >= base && real < base + 65536)
                        n++;
        }
        closedir(d);
        return n;
}

static bool mountinfo_mentions(const char *s) {
        char buf[1 << 16];
        assert_true(lg_read_file_at(AT_FDCWD, "/proc/self/mountinfo", buf, sizeof(buf)) > 0);
        return strstr(buf, s) != NULL;
}

static void test_identity(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.hostname = "sbx-host";
        struct run r;
        run_sh(&spec, "id -u; id -g; hostname; cat /proc/self/uid_map", &r);
        assert_int_equal(r.st.kind, LG_EXIT_CODE);
        assert_int_equal(r.st.code, 0);
        char expect[256];
        snprintf(expect, sizeof(expect), "0\n0\nsbx-host\n         0 %10u      65536\n", r.host_uid);
        assert_string_equal(r.out, expect);
        assert_true(r.host_uid >= 0x01000000u);
}

static void test_host_uid_seen_from_host(void **state) {
        (void) state;
        lg_sandbox *sb = start_sleeper("30");
        /* legion-init and sleep both run as the mapped uid on the host.
         * The workload's fork may come late on a loaded machine: wait for
         * it as long as the sleeper lives, not a fixed short while. */
        for (int i = 0; i < 2500 && processes_with_uid(lg_sandbox_host_uid(sb)) < 2; i++)
                usleep(10000);
        assert_int_equal(processes_with_uid(lg_sandbox_host_uid(sb)), 2);
        /* Made without limits: no cgroup, and stats say so. */
        struct lg_sandbox_stats stats;
        assert_int_equal(lg_sandbox_stats(sb, &stats), -ENODATA);
        char cg[512];
        snprintf(cg, sizeof(cg), "/sys/fs/cgroup/memory/%s/%s", getenv("LEGION_CGROUP_PARENT"), lg_sandbox_id(sb));
        assert_int_equal(access(cg, F_OK), -1);
        uid_t base = lg_sandbox_host_uid(sb);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        assert_int_equal(processes_with_uid(base), 0);
}

static void test_pid_isolation(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        char script[256];
        /* The test process itself is a host process the sandbox must not reach. */
        snprintf(script, sizeof(script),
                 "ls /proc | grep -c '^[0-9]'; kill -0 %d 2>/dev/null && echo SIGNALED || echo nosuch; "
                 "cat /proc/1/comm", (int) getpid());
        struct run r;
        run_sh(&spec, script, &r);
        assert_int_equal(r.st.code, 0);
        int n = atoi(r.out);
        assert_true(n >= 2 && n <= 5); /* init, sh, ls, grep at most */
        assert_non_null(strstr(r.out, "nosuch"));
        assert_non_null(strstr(r.out, "legion-init"));
}

static void test_cannot_escape(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        struct run r;
        run_sh(&spec,
               "mount -t tmpfs x /mnt 2>/dev/null && echo MOUNTED; "
               "unshare -U true 2>/dev/null && echo USERNS; "
               "unshare -m true 2>/dev/null && echo MOUNTNS; "
               "touch /usr/evil 2>/dev/null && echo WROTE_USR; "
               "echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo WROTE_PROC; "
               "echo b > /proc/sysrq-trigger 2>/dev/null && echo SYSRQ; "
               "cat /proc/kcore 2>/dev/null | head -c 1 | grep -q . && echo KCORE; "
               "insmod /nonexistent 2>/dev/null; "
               "python3 -c 'import ctypes,sys; l=ctypes.CDLL(None); "
               "sys.exit(0 if l.reboot(0x4321fedc)==0 else 1)' && echo REBOOT; "
               "cat /etc/shadow 2>/dev/null | grep -q root && echo SHADOW; "
               "echo ok > /tmp/f && cat /tmp/f",
               &r);
        assert_int_equal(r.st.code, 0);
        assert_string_equal(r.out, "ok\n");
}

static void test_binds(void **state) {
        (void) state;
        char dir[] = "/tmp/lg-bind-XXXXXX";
        assert_non_null(mkdtemp(dir));
        chmod(dir, 0777);
        char ro[300];
        snprintf(ro, sizeof(ro), "%s/in", dir);
        assert_int_equal(lg_write_file_at(AT_FDCWD, ro, "hello\n", true), 0);
        chmod(ro, 0644);
        struct lg_bind binds[] = {
                {.src = dir, .dst = "/data"},
                {.src = ro, .dst = "/etc/input", .readonly = true},
                /* The same directory, through an overlay of its own. */
                {.src = dir, .dst = "/opt/own", .readonly = true, .private_inodes = true},
        };
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.binds = binds;
        spec.n_binds = 3;
        struct run r;
        run_sh(&spec, "cat /etc/input; echo x > /etc/input 2>/dev/null && echo WROTE_RO; "
                      "cat /opt/own/in; echo x > /opt/own/in 2>/dev/null && echo WROTE_OWN; "
                      "grep -q ' /opt/own overlay ro,' /proc/self/mounts && echo overlay; "
                      "echo out > /data/out && echo wrote", &r);
        assert_int_equal(r.st.code, 0);
        assert_string_equal(r.out, "hello\nhello\noverlay\nwrote\n");
        char out[300];
        snprintf(out, sizeof(out), "%s/out", dir);
        struct stat st;
        assert_int_equal(stat(out, &st), 0);
        /* Files the sandbox's root writes belong to its mapped uid. */
        assert_int_equal(st.st_uid, r.host_uid);
        lg_rm_rf(dir);
}

/* A host holds more than 10,000 sandboxes: 65,279 uid ranges of 65,536 ids
 * above 16,777,216, the last ending just below (uid_t) -1. With every other
 * range taken (in a registry of the test's own), a sandbox gets the last
 * one and runs in it; one more is refused, naming the limit. */
static void test_uid_ranges(void **state) {
        (void) state;
        enum { SLOTS = 65279 };
        char dir[] = "/tmp/lg-uids-XXXXXX";
        assert_non_null(mkdtemp(dir));
        int dfd = open(dir, O_DIRECTORY | O_CLOEXEC);
        assert_true(dfd >= 0);
        char name[16];
        for (unsigned i = 0; i < SLOTS - 1; i++) {
                snprintf(name, sizeof(name), "%u", i);
                int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                assert_true(fd >= 0);
                close(fd);
        }
        const char *old = getenv("LEGION_UID_DIR");
        char *saved = old ? strdup(old) : NULL;
        setenv("LEGION_UID_DIR", dir, 1);

        struct lg_sandbox_spec spec;
        base_spec(&spec);
        struct run r;
        run_sh(&spec, "cat /proc/self/uid_map | tr -s ' '; id -u", &r);
        assert_int_equal(r.st.code, 0);
        unsigned long long last = 16777216ull + (SLOTS - 1) * 65536ull;
        assert_int_equal(r.host_uid, last);
        assert_true(last + 65535 < 0xffffffffull);
        char want[96];
        snprintf(want, sizeof(want), " 0 %llu 65536\n0\n", last);
        assert_string_equal(r.out, want);

        /* Every range taken: the next sandbox is refused, and says why. */
        snprintf(name, sizeof(name), "%u", SLOTS - 1);
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        close(fd);
        const char *argv[] = {"/bin/true", NULL};
        spec.argv = argv;
        lg_sandbox *sb = NULL;
        struct lg_error e = {0};
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EUSERS);
        assert_non_null(strstr(e.msg, "all 65279 uid ranges are in use"));

        if (saved)
                setenv("LEGION_UID_DIR", saved, 1);
        else
                unsetenv("LEGION_UID_DIR");
        free(saved);
        close(dfd);
        lg_rm_rf(dir);
}

static void test_readonly_root(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.readonly_root = true;
        struct run r;
        run_sh(&spec, "touch /etc/x 2>/dev/null && echo WROTE; touch /tmp/x && echo tmp-ok", &r);
        assert_int_equal(r.st.code, 0);
        assert_string_equal(r.out, "tmp-ok\n");
}

/* A busybox-only layer in a fresh directory (dir: "/tmp/lg-layer-XXXXXX");
 * false when the host has no busybox. */
static bool make_busybox_layer(char *dir) {
        assert_non_null(mkdtemp(dir));
        chmod(dir, 0755);
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "mkdir -p %s/bin && cp /bin/busybox %s/bin/busybox && ln -s busybox %s/bin/sh",
                 dir, dir, dir);
        if (access("/bin/busybox", X_OK) < 0)
                return false;
        assert_int_equal(system(cmd), 0);
        return true;
}

static void test_layers(void **state) {
        (void) state;
        /* A layer with busybox as its only program. */
        char dir[] = "/tmp/lg-layer-XXXXXX";
        if (!make_busybox_layer(dir)) {
                lg_rm_rf(dir);
                skip();
        }
        char path[400];
        const char *layers[] = {dir};
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.layers = layers;
        spec.n_layers = 1;
        struct run r;
        run_sh(&spec, "/bin/busybox ls /; /bin/busybox touch /bin/new && echo upper-ok; "
                      "test -e /usr/bin/python3 || echo no-host-usr", &r);
        assert_int_equal(r.st.code, 0);
        assert_non_null(strstr(r.out, "upper-ok"));
        assert_non_null(strstr(r.out, "no-host-usr"));
        /* The layer itself is untouched. */
        snprintf(path, sizeof(path), "%s/bin/new", dir);
        assert_int_equal(access(path, F_OK), -1);
        lg_rm_rf(dir);
}

/* A sandbox on the node's network sees its address and hostname in
 * /etc/hosts and the forwarder in /etc/resolv.conf, with the host rootfs
 * and with an image's layers (whose own files, even a symlink into /run,
 * are replaced in the upper while the layer stays untouched). Without a
 * network: 127.0.1.1 and no nameserver, and an image keeps its files. */
static void test_net_etc(void **state) {
        (void) state;
        const char *want_hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost\n10.99.0.7\tnet-host\n";
        const char *want_resolv = "nameserver 10.99.0.1\noptions timeout:2 attempts:2\n";
        char want[512];
        struct lg_sandbox_spec spec;
        struct run r;

        base_spec(&spec);
        spec.hostname = "net-host";
        spec.net_address = "10.99.0.7";
        spec.nameserver = "10.99.0.1";
        run_sh(&spec, "cat /etc/hosts; echo --; cat /etc/resolv.conf; echo --; grep hosts: /etc/nsswitch.conf", &r);
        assert_int_equal(r.st.code, 0);
        snprintf(want, sizeof(want), "%s--\n%s--\nhosts: files dns\n", want_hosts, want_resolv);
        assert_string_equal(r.out, want);

        base_spec(&spec);
        spec.hostname = "net-host";
        run_sh(&spec, "cat /etc/hosts; echo --; cat /etc/resolv.conf; echo --; grep hosts: /etc/nsswitch.conf", &r);
        assert_int_equal(r.st.code, 0);
        assert_string_equal(r.out, "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tnet-host\n--\n--\nhosts: files\n");

        char dir[] = "/tmp/lg-layer-XXXXXX";
        if (!make_busybox_layer(dir)) {
                lg_rm_rf(dir);
                skip();
        }
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "mkdir %s/etc && echo '192.0.2.1 image' > %s/etc/hosts && "
                 "ln -s ../run/systemd/resolve/stub-resolv.conf %s/etc/resolv.conf", dir, dir, dir);
        assert_int_equal(system(cmd), 0);
        const char *layers[] = {dir};
        const char *script = "/bin/busybox cat /etc/hosts; echo --; /bin/busybox cat /etc/resolv.conf; echo --; "
                             "/bin/busybox ls -ln /etc/hosts | /bin/busybox awk '{print $3}'";
        base_spec(&spec);
        spec.layers = layers;
        spec.n_layers = 1;
        spec.hostname = "net-host";
        spec.net_address = "10.99.0.7";
        spec.nameserver = "10.99.0.1";
        run_sh(&spec, script, &r);
        assert_int_equal(r.st.code, 0);
        /* Owned by the sandbox's root, which may change it. */
        snprintf(want, sizeof(want), "%s--\n%s--\n0\n", want_hosts, want_resolv);
        assert_string_equal(r.out, want);
        char path[400], buf[256];
        snprintf(path, sizeof(path), "%s/etc/hosts", dir);
        assert_true(lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, "192.0.2.1 image");
        snprintf(path, sizeof(path), "%s/etc/resolv.conf", dir);
        ssize_t n = readlink(path, buf, sizeof(buf) - 1);
        assert_true(n > 0);
        buf[n] = '\0';
        assert_string_equal(buf, "../run/systemd/resolve/stub-resolv.conf");

        /* No network: the image's own hosts. */
        base_spec(&spec);
        spec.layers = layers;
        spec.n_layers = 1;
        run_sh(&spec, "/bin/busybox cat /etc/hosts", &r);
        assert_int_equal(r.st.code, 0);
        assert_string_equal(r.out, "192.0.2.1 image\n");

        /* An image without /etc gets one. */
        snprintf(cmd, sizeof(cmd), "rm -r %s/etc", dir);
        assert_int_equal(system(cmd), 0);
        base_spec(&spec);
        spec.layers = layers;
        spec.n_layers = 1;
        spec.nameserver = "10.99.0.1";
        run_sh(&spec, "/bin/busybox cat /etc/resolv.conf", &r);
        assert_int_equal(r.st.code, 0);
        assert_string_equal(r.out, want_resolv);
        lg_rm_rf(dir);

        /* Not an address: refused at create. */
        base_spec(&spec);
        spec.net_address = "10.99.0.7\n1.2.3.4 evil";
        lg_sandbox *sb = NULL;
        struct lg_error e = {0};
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "net_address"));
        base_spec(&spec);
        spec.nameserver = "dns.example";
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "nameserver"));
}

static void test_network(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        struct run r;
        /* Only lo exists, it is up, and nothing beyond it is reachable. */
        run_sh(&spec,
               "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; "
               "python3 -c 'import socket; s=socket.socket(); s.settimeout(2); "
               "s.connect((\"10.0.2.2\", 9))' 2>&1 | grep -o 'Network is unreachable'; "
               "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); "
               "c=socket.create_connection(s.getsockname()); print(\"lo-ok\")'",
               &r);
        assert_int_equal(r.st.code, 0);
        assert_string_equal(r.out, "lo\nNetwork is unreachable\nlo-ok\n");
}

static void test_fork_bomb(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.pids_max = 16;
        struct run r;
        run_sh(&spec, "exec python3 -c '\nimport os, time\nn = 0\ntry:\n"
                      "    while True:\n        if os.fork() == 0:\n            time.sleep(5)\n"
                      "            os._exit(0)\n        n += 1\nexcept OSError as e:\n"
                      "    print(n, e.strerror)\n'", &r);
        int n = atoi(r.out);
        assert_true(n > 0 && n < 16);
        assert_non_null(strstr(r.out, "Resource temporarily unavailable"));
        /* The host is fine: we are still here and can fork. */
        pid_t p = fork();
        if (p == 0)
                _exit(0);
        assert_true(p > 0);
        waitpid(p, NULL, 0);
}

static void test_oom(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.memory_bytes = 32 << 20;
        struct run r;
        run_sh(&spec, "exec python3 -c 'b = bytearray(256 << 20); print(len(b))'", &r);
        assert_int_equal(r.st.kind, LG_EXIT_OOM);
        assert_int_equal(r.st.shell_status, 137);
        char s[32];
        lg_sandbox_status_string(&r.st, s, sizeof(s));
        assert_string_equal(s, "OOMKilled");
}

static void test_exit_status(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        struct run r;
        run_sh(&spec, "exit 42", &r);
        assert_int_equal(r.st.kind, LG_EXIT_CODE);
        assert_int_equal(r.st.code, 42);
        run_sh(&spec, "kill -TERM $$", &r);
        assert_int_equal(r.st.kind, LG_EXIT_SIGNAL);
        assert_int_equal(r.st.signal, SIGTERM);
        assert_int_equal(r.st.shell_status, 143);
}

static void test_missing_command(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        const char *argv[] = {"/no/such/program", NULL};
        spec.argv = argv;
        lg_sandbox *sb = start_sandbox(&spec);
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(st.kind, LG_EXIT_CODE);
        assert_int_equal(st.code, 127);
        lg_sandbox_destroy(sb);
}

static void test_bad_specs(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        lg_sandbox *sb = NULL;
        struct lg_error e = {0};
        const char *argv[] = {"/bin/true", NULL};

        base_spec(&spec);
        spec.argv = argv;
        spec.id = "../escape";
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "invalid sandbox id"));

        base_spec(&spec);
        spec.argv = argv;
        const char *layers[] = {"/nonexistent-layer"};
        spec.layers = layers;
        spec.n_layers = 1;
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -ENOENT);
        assert_non_null(strstr(e.msg, "/nonexistent-layer"));

        base_spec(&spec);
        spec.argv = argv;
        struct lg_bind b = {.src = "/tmp", .dst = "/../x"};
        spec.binds = &b;
        spec.n_binds = 1;
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EINVAL);
        /* Private inodes: read-only directories whose path the overlay's
         * option syntax can carry. */
        b = (struct lg_bind){.src = "/tmp", .dst = "/x", .private_inodes = true};
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EINVAL);
        b = (struct lg_bind){.src = "/etc/hostname", .dst = "/x", .readonly = true, .private_inodes = true};
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EINVAL);
        char odd[] = "/tmp/lg-odd:dir-XXXXXX";
        assert_non_null(mkdtemp(odd));
        b = (struct lg_bind){.src = odd, .dst = "/x", .readonly = true, .private_inodes = true};
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "private inodes"));
        rmdir(odd);

        /* The working directory is entered at start (it belongs to the
         * workload, which a warm sandbox receives only then). */
        base_spec(&spec);
        spec.argv = argv;
        spec.cwd = "/no/such/dir";
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), 0);
        assert_true(lg_sandbox_start(sb, &e) < 0);
        assert_non_null(strstr(e.msg, "/no/such/dir"));
        lg_sandbox_destroy(sb);
        sb = NULL;
        spec.cwd = "relative";
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EINVAL);

        base_spec(&spec);
        spec.argv = argv;
        spec.id = "dup";
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), 0);
        lg_sandbox *sb2 = NULL;
        assert_int_equal(lg_sandbox_create(&spec, &sb2, &e), -EEXIST);
        assert_non_null(strstr(e.msg, "already exists"));
        lg_sandbox_destroy(sb);

        /* Nothing of the failed attempts is left. */
        char path[300];
        snprintf(path, sizeof(path), "%s/sandboxes", state_root);
        DIR *d = opendir(path);
        assert_non_null(d);
        struct dirent *de;
        int n = 0;
        while ((de = readdir(d)))
                n += de->d_name[0] != '.';
        closedir(d);
        assert_int_equal(n, 0);
}

static void test_destroy_leaves_nothing(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.memory_bytes = 64 << 20;
        spec.pids_max = 64;
        spec.capture_logs = true;
        const char *argv[] = {"/bin/sh", "-c", "sleep 100 & sleep 100 & echo started; wait", NULL};
        spec.argv = argv;
        lg_sandbox *sb = start_sandbox(&spec);
        char dir[4096], id[80], cg[4200];
        snprintf(dir, sizeof(dir), "%s", lg_sandbox_state_dir(sb));
        snprintf(id, sizeof(id), "%s", lg_sandbox_id(sb));
        uid_t uid = lg_sandbox_host_uid(sb);
        for (int i = 0; i < 2500 && processes_with_uid(uid) < 4; i++)
                usleep(10000);
        assert_int_equal(processes_with_uid(uid), 4);
        struct lg_sandbox_stats stats;
        assert_int_equal(lg_sandbox_stats(sb, &stats), 0);
        assert_int_equal(stats.pids_current, 4);
        assert_true(stats.memory_current > 0);

        assert_int_equal(lg_sandbox_destroy(sb), 0);
        assert_int_equal(processes_with_uid(uid), 0);
        assert_int_equal(access(dir, F_OK), -1);
        assert_false(mountinfo_mentions(dir));
        const char *parent = getenv("LEGION_CGROUP_PARENT");
        snprintf(cg, sizeof(cg), "/sys/fs/cgroup/memory/%s/%s", parent ? parent : "legion", id);
        assert_int_equal(access(cg, F_OK), -1);
        snprintf(cg, sizeof(cg), "/sys/fs/cgroup/%s/%s", parent ? parent : "legion", id);
        assert_int_equal(access(cg, F_OK), -1);
}

static void test_logs_capped(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.capture_logs = true;
        spec.log_max_bytes = 16384;
        const char *argv[] = {"/bin/sh", "-c", "seq 1 20000; echo err >&2", NULL};
        spec.argv = argv;
        lg_sandbox *sb = start_sandbox(&spec);
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(st.code, 0);
        char path[4200], buf[32768];
        snprintf(path, sizeof(path), "%s/stdout.log", lg_sandbox_state_dir(sb));
        ssize_t n = lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf));
        assert_true(n > 0 && n <= 16384);
        const char *last = strrchr(buf, '\n');
        assert_string_equal(last ? last + 1 : buf, "20000");
        snprintf(path, sizeof(path), "%s/stderr.log", lg_sandbox_state_dir(sb));
        assert_true(lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, "err");
        lg_sandbox_destroy(sb);
}

/* Run `sh -c script` in a running sandbox over the control socket and
 * collect its output. */
static void exec_in(lg_sandbox *sb, const char *script, char *buf, size_t cap) {
        int out[2];
        assert_int_equal(pipe2(out, O_CLOEXEC), 0);
        struct lg_msg m;
        lg_msg_init(&m);
        assert_int_equal(lg_msg_add(&m, "op", "exec"), 0);
        assert_int_equal(lg_msg_add(&m, "arg", "/bin/sh"), 0);
        assert_int_equal(lg_msg_add(&m, "arg", "-c"), 0);
        assert_int_equal(lg_msg_add(&m, "arg", script), 0);
        m.fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        m.fds[1] = out[1];
        m.fds[2] = dup(out[1]);
        m.nfds = 3;
        assert_int_equal(lg_msg_send(lg_sandbox_control_fd(sb), &m), 0);
        lg_msg_free(&m);
        read_pipe(out[0], buf, cap);
        close(out[0]);
}

/* A placeholder: no workload, init idles; the owner runs commands in it
 * over the control socket. */
static void test_placeholder_exec(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        lg_sandbox *sb = start_sandbox(&spec);
        char buf[256];
        exec_in(sb, "echo hi from $(hostname)", buf, sizeof(buf));
        char expect[128];
        snprintf(expect, sizeof(expect), "hi from %s\n", lg_sandbox_id(sb));
        assert_string_equal(buf, expect);
        /* The sandbox is still there, idle, until destroyed. */
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_poll(sb, &st), 0);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
}

/* Code arrives after the sandbox exists: mounted into its namespace only. */
static void test_delayed_mount(void **state) {
        (void) state;
        char dir[] = "/tmp/lg-code-XXXXXX";
        assert_non_null(mkdtemp(dir));
        chmod(dir, 0755);
        char path[300];
        snprintf(path, sizeof(path), "%s/main.py", dir);
        assert_int_equal(lg_write_file_at(AT_FDCWD, path, "print('hi')\n", true), 0);
        chmod(path, 0644);
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.readonly_root = true;
        const char *mps[] = {"/code"};
        spec.mount_points = mps;
        spec.n_mount_points = 1;
        lg_sandbox *sb = start_sandbox(&spec);
        struct lg_error e = {0};
        char buf[256];
        exec_in(sb, "ls -A /code; echo empty", buf, sizeof(buf));
        assert_string_equal(buf, "empty\n");
        /* A read-only root has no room for a new mount point. */
        assert_int_equal(lg_sandbox_mount(sb, dir, "/elsewhere", true, &e), -EROFS);
        if (lg_sandbox_mount(sb, dir, "/code", true, &e) < 0)
                fail_msg("mount: %s", e.msg);
        exec_in(sb, "python3 /code/main.py; touch /code/x 2>/dev/null || echo ro", buf, sizeof(buf));
        assert_string_equal(buf, "hi\nro\n");
        assert_false(mountinfo_mentions(" /code "));
        assert_int_equal(lg_sandbox_mount(sb, dir, "relative", true, &e), -EINVAL);
        assert_int_equal(lg_sandbox_mount(sb, "/nonexistent", "/x", true, &e), -ENOENT);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        lg_rm_rf(dir);
}

/* Extra fds reach the workload as 4, 5, ...; nothing else leaks in. */
static void test_extra_fds(void **state) {
        (void) state;
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        int extra[] = {p[1]};
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.extra_fds = extra;
        spec.n_extra_fds = 1;
        struct run r;
        run_sh(&spec, "echo via-fd4 >&4; ls /proc/self/fd | tr '\\n' ' '", &r);
        close(p[1]);
        char buf[64];
        read_pipe(p[0], buf, sizeof(buf));
        close(p[0]);
        assert_string_equal(buf, "via-fd4\n");
        /* 0-2, 4, and the fd ls opened for /proc/self/fd. */
        assert_string_equal(r.out, "0 1 2 3 4 ");
}

static void test_set_cpu(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.cpu_millis = 2000;
        lg_sandbox *sb = NULL;
        struct lg_error e = {0};
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), 0);
        assert_int_equal(lg_sandbox_set_cpu(sb, 250, &e), 0);
        const char *parent = getenv("LEGION_CGROUP_PARENT");
        char path[512], buf[64];
        snprintf(path, sizeof(path), "/sys/fs/cgroup/cpu/%s/%s/cpu.cfs_quota_us", parent, lg_sandbox_id(sb));
        if (lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) > 0)
                assert_string_equal(buf, "25000");
        assert_int_equal(lg_sandbox_destroy(sb), 0);
}

/* An event loop makes the pidfd non-blocking to poll it; destroy must
 * still reap legion-init, or a zombie keeps the uid range. */
static void test_destroy_reaps_with_nonblocking_pidfd(void **state) {
        (void) state;
        lg_sandbox *sb = start_sleeper("30");
        int fd = lg_sandbox_pidfd(sb);
        assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_poll(sb, &st), 0); /* running, not an error */
        pid_t pid = lg_sandbox_pid(sb);
        uid_t uid = lg_sandbox_host_uid(sb);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d", (int) pid);
        assert_int_equal(access(path, F_OK), -1); /* reaped, not a zombie */
        assert_int_equal(processes_with_uid(uid), 0);
}

/* 200 create/destroy cycles leak no fd (and, under ASan, no memory). */
static void test_cycles(void **state) {
        (void) state;
        int before = count_fds();
        const char *argv[] = {"/bin/true", NULL};
        for (int i = 0; i < 200; i++) {
                struct lg_sandbox_spec spec;
                base_spec(&spec);
                spec.argv = argv;
                spec.memory_bytes = 16 << 20;
                spec.pids_max = 8;
                lg_sandbox *sb = NULL;
                struct lg_error e = {0};
                if (lg_sandbox_create(&spec, &sb, &e) < 0)
                        fail_msg("cycle %d: %s", i, e.msg);
                assert_int_equal(lg_sandbox_start(sb, &e), 0);
                struct lg_sandbox_status st;
                assert_int_equal(lg_sandbox_wait(sb, &st), 0);
                assert_int_equal(st.code, 0);
                assert_int_equal(lg_sandbox_destroy(sb), 0);
        }
        assert_int_equal(count_fds(), before);
}

/* gc never touches the sandboxes of a live owner, however the owner changes
 * (a start time misread from /proc/PID/stat once made it look dead as soon
 * as its memory size moved). */
static void test_gc_spares_live_owner(void **state) {
        (void) state;
        lg_sandbox *sb = start_sleeper("30");
        struct lg_error e = {0};
        /* Grow: a different vsize and RSS than at create. */
        size_t n = 64 << 20;
        char *big = malloc(n);
        assert_non_null(big);
        memset(big, 1, n);
        assert_int_equal(lg_sandbox_gc(state_root, &e), 0);
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_poll(sb, &st), 0);
        free(big);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
}

/* A sandbox running `sh -c script` (with bind_dir at /w, if any), made
 * and started by a child process (the owner), which is then killed with
 * SIGKILL. Returns the sandbox's id in id and its host uid. */
static uid_t sandbox_of_killed_owner(bool detachable, const char *script, const char *bind_dir, char *id,
                                     size_t len) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t owner = fork();
        assert_true(owner >= 0);
        if (owner == 0) {
                close(p[0]);
                struct lg_sandbox_spec spec;
                base_spec(&spec);
                spec.detachable = detachable;
                spec.memory_bytes = 64 << 20;
                spec.pids_max = 64;
                spec.capture_logs = true;
                struct lg_bind b = {.src = bind_dir, .dst = "/w", .readonly = true};
                spec.binds = &b;
                spec.n_binds = bind_dir ? 1 : 0;
                const char *argv[] = {"/bin/sh", "-c", script, NULL};
                spec.argv = argv;
                lg_sandbox *sb = NULL;
                struct lg_error e = {0};
                if (lg_sandbox_create(&spec, &sb, &e) < 0 || lg_sandbox_start(sb, &e) < 0)
                        _exit(1);
                char rec[128];
                snprintf(rec, sizeof(rec), "%u %s", (unsigned) lg_sandbox_host_uid(sb), lg_sandbox_id(sb));
                (void) !write(p[1], rec, strlen(rec) + 1);
                pause();
                _exit(0);
        }
        close(p[1]);
        char rec[128] = "";
        assert_true(read(p[0], rec, sizeof(rec) - 1) > 0);
        close(p[0]);
        unsigned uid = 0;
        char sid[80];
        assert_int_equal(sscanf(rec, "%u %79s", &uid, sid), 2);
        snprintf(id, len, "%s", sid);
        for (int i = 0; i < 2500 && processes_with_uid(uid) < 2; i++)
                usleep(10000);
        assert_true(processes_with_uid(uid) >= 2);
        kill(owner, SIGKILL);
        waitpid(owner, NULL, 0);
        return uid;
}

/* The owner is killed: its sandboxes die with it, and gc removes the rest. */
static void test_owner_killed(void **state) {
        (void) state;
        char id[80];
        uid_t uid = sandbox_of_killed_owner(false, "exec sleep 1000", NULL, id, sizeof(id));
        /* Its legion-init, orphaned, is reaped by the host's init, which
         * may take seconds on a loaded machine: waits here are bounded
         * only to stop a hung test (25 s), as the others in this file. */
        for (int i = 0; i < 2500 && processes_with_uid(uid) > 0; i++)
                usleep(10000);
        assert_int_equal(processes_with_uid(uid), 0);
        struct lg_error e = {0};
        assert_int_equal(lg_sandbox_gc(state_root, &e), 1);
        assert_int_equal(lg_sandbox_gc(state_root, &e), 0);
}

/* A second sandbox joins the first one's network and IPC namespaces; the
 * first (own network) lets unprivileged workloads bind low ports. */
static void test_join_namespaces(void **state) {
        (void) state;
        lg_sandbox *a = start_sleeper("30");
        struct lg_error e = {0};
        char path[64], want[256];
        struct stat net, ipc;
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int) lg_sandbox_pid(a));
        int netfd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(netfd >= 0);
        assert_int_equal(fstat(netfd, &net), 0);
        snprintf(path, sizeof(path), "/proc/%d/ns/ipc", (int) lg_sandbox_pid(a));
        int ipcfd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(ipcfd >= 0);
        assert_int_equal(fstat(ipcfd, &ipc), 0);

        struct lg_sandbox_spec js;
        base_spec(&js);
        js.join_netns_fd = netfd;
        js.join_ipcns_fd = ipcfd;
        struct run r;
        run_sh(&js, "readlink /proc/self/ns/net /proc/self/ns/ipc; cat /proc/sys/net/ipv4/ip_unprivileged_port_start", &r);
        assert_int_equal(r.st.code, 0);
        snprintf(want, sizeof(want), "net:[%lu]\nipc:[%lu]\n0\n", (unsigned long) net.st_ino,
                 (unsigned long) ipc.st_ino);
        assert_string_equal(r.out, want);

        /* Without joining: other namespaces. */
        struct lg_sandbox_spec own;
        base_spec(&own);
        run_sh(&own, "readlink /proc/self/ns/net /proc/self/ns/ipc", &r);
        assert_int_equal(r.st.code, 0);
        snprintf(want, sizeof(want), "net:[%lu]", (unsigned long) net.st_ino);
        assert_null(strstr(r.out, want));
        snprintf(want, sizeof(want), "ipc:[%lu]", (unsigned long) ipc.st_ino);
        assert_null(strstr(r.out, want));

        /* A joined fd that is not a namespace fails the create cleanly. */
        struct lg_sandbox_spec bad;
        base_spec(&bad);
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        bad.join_netns_fd = devnull;
        const char *argv[] = {"/bin/sleep", "30", NULL};
        bad.argv = argv;
        lg_sandbox *b = NULL;
        assert_true(lg_sandbox_create(&bad, &b, &e) < 0);
        assert_non_null(strstr(e.msg, "join the network namespace"));
        close(devnull);
        close(netfd);
        close(ipcfd);
        assert_int_equal(lg_sandbox_destroy(a), 0);
}

/* log_file: stdout and stderr in one host file, in order, kept after
 * destroy, appended to by the next run. */
static void test_log_file(void **state) {
        (void) state;
        char dir[] = "/tmp/lg-test-logXXXXXX", path[128], buf[4096];
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/c.log", dir);
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.capture_logs = true;
        spec.log_file = path;
        const char *argv[] = {"/bin/sh", "-c", "echo one; echo two >&2; echo three", NULL};
        spec.argv = argv;
        for (int round = 0; round < 2; round++) {
                lg_sandbox *sb = start_sandbox(&spec);
                struct lg_sandbox_status st;
                assert_int_equal(lg_sandbox_wait(sb, &st), 0);
                assert_int_equal(st.code, 0);
                assert_int_equal(lg_sandbox_destroy(sb), 0);
        }
        assert_true(lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, "one\ntwo\nthree\none\ntwo\nthree");
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0640);

        /* Capped like the state logs: the newest output survives. */
        spec.log_max_bytes = 4096;
        const char *chatty[] = {"/bin/sh", "-c", "seq 1 5000; echo last >&2", NULL};
        spec.argv = chatty;
        lg_sandbox *sb = start_sandbox(&spec);
        struct lg_error e = {0};
        struct lg_sandbox_status xs;
        assert_int_equal(lg_sandbox_wait(sb, &xs), 0);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        ssize_t n = lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf));
        assert_true(n > 0 && n <= 4096);
        assert_non_null(strstr(buf, "5000\nlast"));

        /* A log file that cannot be opened fails the create. */
        snprintf(path, sizeof(path), "%s/missing/c.log", dir);
        assert_true(lg_sandbox_create(&spec, &sb, &e) < 0);
        assert_non_null(strstr(e.msg, "open log"));
        lg_rm_rf(dir);
}

/* run_uid/run_gid: the workload runs as that user with no groups and no
 * capabilities, while legion-init stays root. */
static void test_run_as(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.run_as_set = true;
        spec.run_uid = 1000;
        spec.run_gid = 2000;
        struct run r;
        run_sh(&spec, "id -u; id -g; id -G; grep -E '^Cap(Eff|Prm|Inh)' /proc/self/status; "
                      "grep '^Uid' /proc/1/status | cut -f2", &r);
        assert_int_equal(r.st.code, 0);
        assert_string_equal(r.out, "1000\n2000\n2000\nCapInh:\t0000000000000000\n"
                                   "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n0\n");

        /* Root with another group: still no capabilities kept. */
        spec.run_uid = 0;
        spec.run_gid = 5;
        run_sh(&spec, "id -u; id -g; grep -E '^CapEff' /proc/self/status", &r);
        assert_int_equal(r.st.code, 0);
        assert_string_equal(r.out, "0\n5\nCapEff:\t0000000000000000\n");

        /* Outside the sandbox's ids: refused before anything is made. */
        spec.run_uid = 70000;
        const char *argv[] = {"/bin/true", NULL};
        spec.argv = argv;
        lg_sandbox *sb = NULL;
        struct lg_error e = {0};
        assert_int_equal(lg_sandbox_create(&spec, &sb, &e), -EINVAL);
        assert_null(sb);
}

/* favordynmods: an fd holding the mode on cgroup v1 (EOPNOTSUPP on v2 or
 * an older kernel); taking it twice works (the hierarchy is shared), and a
 * sandbox still runs while it is held. */
static void test_favor_dynmods(void **state) {
        (void) state;
        struct lg_error err = {0};
        int a = lg_sandbox_favor_dynmods(&err);
        if (a == -EOPNOTSUPP) {
                skip();
        }
        assert_true(a >= 0);
        int b = lg_sandbox_favor_dynmods(&err);
        assert_true(b >= 0);
        struct lg_sandbox_spec spec;
        lg_sandbox_spec_init(&spec);
        spec.memory_bytes = 64u << 20;
        static const char *const argv[] = {"/bin/true", NULL};
        spec.argv = argv;
        lg_sandbox *sb = NULL;
        assert_int_equal(lg_sandbox_create(&spec, &sb, &err), 0);
        assert_int_equal(lg_sandbox_start(sb, &err), 0);
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(st.shell_status, 0);
        lg_sandbox_destroy(sb);
        close(a);
        close(b);
}

/* A SIGTERM sent the moment start returns reaches the workload: legion-init
 * (PID 1, which drops signals it has no handler for) starts with it blocked. */
static void test_term_right_after_start(void **state) {
        (void) state;
        for (int i = 0; i < 20; i++) {
                lg_sandbox *sb = start_sleeper("60");
                assert_int_equal(lg_sandbox_signal(sb, SIGTERM), 0);
                struct lg_sandbox_status st;
                assert_int_equal(lg_sandbox_wait(sb, &st), 0);
                assert_int_equal(st.kind, LG_EXIT_SIGNAL);
                assert_int_equal(st.signal, SIGTERM);
                assert_int_equal(lg_sandbox_destroy(sb), 0);
        }
}

/* Start sb with launch l, its output to a pipe read into buf. */
static void start_with_output(lg_sandbox *sb, struct lg_sandbox_launch *l, char *buf, size_t cap) {
        int pfd[2];
        assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
        l->log_fd = pfd[1];
        struct lg_error e = {0};
        assert_int_equal(lg_sandbox_start_with(sb, l, &e), 0);
        close(pfd[1]);
        read_pipe(pfd[0], buf, cap);
        close(pfd[0]);
}

static void test_start_with(void **state) {
        (void) state;
        char dir[] = "/tmp/lg-test-launchXXXXXX", path[128], buf[8192];
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/w.log", dir);
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.pids_max = 64; /* a cgroup, as pods have */
        spec.hostname = "made-as";
        lg_sandbox *sb = create_sandbox(&spec);

        struct lg_sandbox_launch l;
        lg_sandbox_launch_init(&l);
        const char *argv[] = {"/bin/sh", "-c",
                              "hostname; id -u; id -g; pwd; echo \"$GREETING\"; ulimit -n; "
                              "grep -E '^CapEff' /proc/self/status; grep Seccomp: /proc/self/status; "
                              "grep NoNewPrivs /proc/self/status; echo oops >&2",
                              NULL};
        const char *envp[] = {"PATH=/usr/bin:/bin", "GREETING=hello warm", NULL};
        l.argv = argv;
        l.envp = envp;
        l.cwd = "/tmp";
        l.hostname = "given-at-start";
        l.run_as_set = true;
        l.run_uid = 1234;
        l.run_gid = 4321;
        l.log_file = path;
        l.nofile = 256;
        struct lg_error e = {0};
        assert_int_equal(lg_sandbox_start_with(sb, &l, &e), 0);
        /* Started once only. */
        assert_int_equal(lg_sandbox_start_with(sb, &l, &e), -EALREADY);
        assert_int_equal(lg_sandbox_start(sb, &e), -EALREADY);
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(st.kind, LG_EXIT_CODE);
        assert_int_equal(st.code, 0);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        assert_true(lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, "given-at-start\n1234\n4321\n/tmp\nhello warm\n256\n"
                                 "CapEff:\t0000000000000000\nSeccomp:\t2\nNoNewPrivs:\t1\noops");

        /* Even holding CAP_SYS_ADMIN in its own user namespace, which owns
         * its UTS namespace, the workload cannot change the hostname: the
         * second seccomp filter, loaded after the launch set it. */
        spec.caps_keep = 1ULL << CAP_SYS_ADMIN;
        sb = create_sandbox(&spec);
        spec.caps_keep = 0;
        lg_sandbox_launch_init(&l);
        const char *argv_h[] = {"/bin/sh", "-c", "grep CapEff /proc/self/status; hostname evil || echo denied; "
                                "hostname; domainname evil || echo denied too", NULL};
        l.argv = argv_h;
        l.hostname = "fixed";
        l.log_file = path;
        unlink(path);
        assert_int_equal(lg_sandbox_start_with(sb, &l, &e), 0);
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        assert_true(lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) > 0);
        assert_non_null(strstr(buf, "CapEff:\t0000000000200000\n"));
        assert_non_null(strstr(buf, "denied\nfixed\n"));
        assert_non_null(strstr(buf, "denied too"));

        /* A log fd of the caller's instead of a path; no user, no env. */
        sb = create_sandbox(&spec);
        lg_sandbox_launch_init(&l);
        const char *argv2[] = {"/bin/sh", "-c", "hostname; id -u; pwd; echo $PATH", NULL};
        l.argv = argv2;
        start_with_output(sb, &l, buf, sizeof(buf));
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(st.code, 0);
        /* The hostname defaults to the id, not the spec's. */
        char want[512];
        snprintf(want, sizeof(want), "%s\n0\n/\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
                 lg_sandbox_id(sb));
        assert_string_equal(buf, want);
        assert_int_equal(lg_sandbox_destroy(sb), 0);

        /* Bad launches: refused, and the sandbox can still be destroyed. */
        sb = create_sandbox(&spec);
        lg_sandbox_launch_init(&l);
        l.argv = argv2;
        l.cwd = "rel";
        assert_int_equal(lg_sandbox_start_with(sb, &l, &e), -EINVAL);
        l.cwd = NULL;
        l.run_as_set = true;
        l.run_uid = 70000;
        assert_int_equal(lg_sandbox_start_with(sb, &l, &e), -EINVAL);
        l.run_as_set = false;
        l.log_file = "/nonexistent-dir/x.log";
        assert_true(lg_sandbox_start_with(sb, &l, &e) < 0);
        assert_non_null(strstr(e.msg, "open log"));
        assert_int_equal(lg_sandbox_destroy(sb), 0);

        /* A working directory missing in the sandbox: reported by start. */
        sb = create_sandbox(&spec);
        lg_sandbox_launch_init(&l);
        l.argv = argv2;
        l.cwd = "/no/such/dir";
        assert_true(lg_sandbox_start_with(sb, &l, &e) < 0);
        assert_non_null(strstr(e.msg, "/no/such/dir"));
        assert_int_equal(lg_sandbox_destroy(sb), 0);

        /* A large environment travels in several records. */
        sb = create_sandbox(&spec);
        lg_sandbox_launch_init(&l);
        static char big[300000];
        memset(big, 'x', sizeof(big) - 1);
        memcpy(big, "BIG=", 4);
        const char *envbig[] = {big, NULL};
        const char *argv3[] = {"/bin/sh", "-c", "echo ${#BIG}", NULL};
        l.argv = argv3;
        l.envp = envbig;
        int pfd[2];
        assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
        l.log_fd = pfd[1];
        /* One string above the kernel's 128 KiB per string: exec fails,
         * and says so. */
        assert_true(lg_sandbox_start_with(sb, &l, &e) < 0);
        assert_non_null(strstr(e.msg, "exec legion-init"));
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        sb = create_sandbox(&spec);
        big[100000] = '\0';
        const char *envbig2[] = {big, big, big, NULL};
        l.envp = envbig2;
        assert_int_equal(lg_sandbox_start_with(sb, &l, &e), 0);
        close(pfd[1]);
        read_pipe(pfd[0], buf, sizeof(buf));
        close(pfd[0]);
        assert_string_equal(buf, "99996\n");
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        lg_rm_rf(dir);
}

/* Limits set between create and start apply to the workload. */
static void test_set_limits_warm(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.pids_max = 4096;
        lg_sandbox *sb = create_sandbox(&spec);
        struct lg_error e = {0};
        assert_int_equal(lg_sandbox_set_limits(sb, 32 << 20, 500, 50, 16, &e), 0);
        struct lg_sandbox_launch l;
        lg_sandbox_launch_init(&l);
        const char *argv[] = {"/bin/sh", "-c", "exec python3 -c 'b = bytearray(256 << 20); print(len(b))'", NULL};
        l.argv = argv;
        assert_int_equal(lg_sandbox_start_with(sb, &l, &e), 0);
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(st.kind, LG_EXIT_OOM);
        assert_int_equal(lg_sandbox_destroy(sb), 0);

        /* pids: a fork bomb stops at the limit set after create. */
        sb = create_sandbox(&spec);
        assert_int_equal(lg_sandbox_set_limits(sb, 0, 0, 0, 8, &e), 0);
        char buf[8192];
        const char *argv2[] = {"/usr/bin/python3", "-c",
                               "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
                               "            time.sleep(5)\n            os._exit(0)\n        n += 1\n"
                               "except OSError as e:\n    print(n, e.strerror)\n",
                               NULL};
        l.argv = argv2;
        start_with_output(sb, &l, buf, sizeof(buf));
        assert_non_null(strstr(buf, "Resource temporarily unavailable"));
        assert_true(atoi(buf) > 0 && atoi(buf) < 8);
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(lg_sandbox_destroy(sb), 0);

        /* No cgroup, no limits to set. */
        base_spec(&spec);
        sb = create_sandbox(&spec);
        assert_int_equal(lg_sandbox_set_limits(sb, 1 << 20, 0, 0, 0, &e), -ENODATA);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
}

/* A warm sandbox never started: destroy leaves nothing, like any other. */
static void test_destroy_warm(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.pids_max = 64;
        int fds = count_fds();
        lg_sandbox *sb = create_sandbox(&spec);
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", lg_sandbox_state_dir(sb));
        uid_t uid = lg_sandbox_host_uid(sb);
        pid_t pid = lg_sandbox_pid(sb);
        assert_int_equal(kill(pid, 0), 0);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        assert_true(kill(pid, 0) < 0);
        assert_int_equal(access(dir, F_OK), -1);
        assert_int_equal(processes_with_uid(uid), 0);
        assert_int_equal(count_fds(), fds);
}

/* ---- detachable sandboxes: they outlive their owner and are adopted ---- */

/* A uid range file naming this sandbox id? */
static bool uid_slot_of(const char *id) {
        const char *dir = getenv("LEGION_UID_DIR") ? getenv("LEGION_UID_DIR") : "/run/legion/uids";
        DIR *d = opendir(dir);
        struct dirent *de;
        bool found = false;
        while (d && (de = readdir(d)) && !found) {
                char path[4200], buf[256];
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                if (de->d_name[0] != '.' && lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) > 0) {
                        char *nl = strchr(buf, '\n');
                        found = nl && !strcmp(nl + 1, id);
                }
        }
        if (d)
                closedir(d);
        return found;
}

static void assert_nothing_left(const char *id, uid_t uid) {
        char dir[4200], cg[4400];
        snprintf(dir, sizeof(dir), "%s/sandboxes/%s", state_root, id);
        assert_int_equal(processes_with_uid(uid), 0);
        assert_int_equal(access(dir, F_OK), -1);
        assert_false(mountinfo_mentions(dir));
        assert_false(uid_slot_of(id));
        const char *parent = getenv("LEGION_CGROUP_PARENT");
        snprintf(cg, sizeof(cg), "/sys/fs/cgroup/memory/%s/%s", parent, id);
        assert_int_equal(access(cg, F_OK), -1);
        snprintf(cg, sizeof(cg), "/sys/fs/cgroup/%s/%s", parent, id);
        assert_int_equal(access(cg, F_OK), -1);
}

/* The owner is killed with SIGKILL: the sandbox runs on, gc leaves it,
 * and another process adopts it and drives it like its own (exec,
 * stats, signal, the workload's exit status, destroy). This process plays
 * the host's init (a subreaper), so that the orphaned legion-init is
 * reaped and "nothing left" includes zombies. */
static void test_adopt_after_owner_killed(void **state) {
        (void) state;
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        char id[80];
        uid_t uid = sandbox_of_killed_owner(true, "trap 'exit 7' TERM; echo up; while :; do sleep 0.05; done", NULL, id,
                                             sizeof(id));
        /* Still running without an owner: legion-init, sh, sleep. */
        usleep(200000);
        assert_true(processes_with_uid(uid) >= 2);
        struct lg_error e = {0};
        assert_int_equal(lg_sandbox_gc(state_root, &e), 0);
        assert_true(processes_with_uid(uid) >= 2);
        char **ids = NULL;
        assert_int_equal(lg_sandbox_list(state_root, &ids, &e), 1);
        assert_string_equal(ids[0], id);
        lg_sandbox_list_free(ids);

        lg_sandbox *sb = NULL;
        if (lg_sandbox_adopt(state_root, id, &sb, &e) < 0)
                fail_msg("adopt: %s", e.msg);
        assert_string_equal(lg_sandbox_id(sb), id);
        assert_int_equal(lg_sandbox_host_uid(sb), uid);
        /* Adopted, it is no longer anyone's leftover. */
        assert_int_equal(lg_sandbox_list(state_root, &ids, &e), 0);
        lg_sandbox_list_free(ids);
        char buf[256], expect[128];
        exec_in(sb, "echo hi from $(hostname)", buf, sizeof(buf));
        snprintf(expect, sizeof(expect), "hi from %s\n", id);
        assert_string_equal(buf, expect);
        struct lg_sandbox_stats stats;
        assert_int_equal(lg_sandbox_stats(sb, &stats), 0);
        assert_true(stats.pids_current >= 2);
        assert_int_equal(lg_sandbox_set_cpu(sb, 500, &e), 0);
        char path[4200];
        snprintf(path, sizeof(path), "%s/stdout.log", lg_sandbox_state_dir(sb));
        assert_true(lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, "up");
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_poll(sb, &st), 0);
        assert_int_equal(lg_sandbox_signal(sb, SIGTERM), 0);
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(st.kind, LG_EXIT_CODE);
        assert_int_equal(st.code, 7);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        assert_nothing_left(id, uid);
        prctl(PR_SET_CHILD_SUBREAPER, 0);
}

/* The workload exits while nobody is attached: legion-init keeps its
 * status until the next owner collects it. Then a sandbox whose
 * legion-init was killed meanwhile cannot be adopted and is destroyed. */
static void test_adopt_collects_exit(void **state) {
        (void) state;
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        char id[80];
        char go[] = "/tmp/lg-go-XXXXXX", path[64];
        assert_non_null(mkdtemp(go));
        assert_int_equal(chmod(go, 0755), 0);
        uid_t uid = sandbox_of_killed_owner(true, "until [ -e /w/go ]; do sleep 0.05; done; exit 3", go, id, sizeof(id));
        /* The owner is gone; now the workload ends, and legion-init alone
         * is left, waiting. */
        snprintf(path, sizeof(path), "%s/go", go);
        assert_int_equal(lg_write_file_at(AT_FDCWD, path, "", true), 0);
        for (int i = 0; i < 2500 && processes_with_uid(uid) != 1; i++)
                usleep(10000);
        assert_int_equal(processes_with_uid(uid), 1);
        lg_sandbox *sb = NULL;
        struct lg_error e = {0};
        if (lg_sandbox_adopt(state_root, id, &sb, &e) < 0)
                fail_msg("adopt: %s", e.msg);
        struct lg_sandbox_status st;
        assert_int_equal(lg_sandbox_wait(sb, &st), 0);
        assert_int_equal(st.kind, LG_EXIT_CODE);
        assert_int_equal(st.code, 3);
        assert_int_equal(lg_sandbox_destroy(sb), 0);
        assert_nothing_left(id, uid);

        unlink(path);
        rmdir(go);
        uid = sandbox_of_killed_owner(true, "sleep 1000", NULL, id, sizeof(id));
        char dir[4200], rec[256];
        snprintf(dir, sizeof(dir), "%s/sandboxes/%s/sandbox", state_root, id);
        assert_true(lg_read_file_at(AT_FDCWD, dir, rec, sizeof(rec)) > 0);
        int ver, pid;
        assert_int_equal(sscanf(rec, "%d %d", &ver, &pid), 2);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        assert_int_equal(lg_sandbox_adopt(state_root, id, &sb, &e), -ESRCH);
        assert_non_null(strstr(e.msg, "cannot be adopted, destroyed"));
        assert_nothing_left(id, uid);
        assert_int_equal(lg_sandbox_adopt(state_root, id, &sb, &e), -ENOENT);
        prctl(PR_SET_CHILD_SUBREAPER, 0);
}

/* A sandbox's legion-init that its reaper has not reaped yet (a subreaper
 * here that reaps when told; on a host, the host's init, which took up to
 * 30 s on a loaded machine) still holds the sandbox's uid as a zombie: its
 * uid range must not be handed out again yet, or the next sandbox made
 * with it has a stranger among its processes. Both ways such a zombie
 * comes: an adopted sandbox destroyed, and a sandbox whose owner was
 * killed, cleaned by gc. gc frees the range once the zombie is gone. */
static void test_zombie_keeps_uid_range(void **state) {
        (void) state;
        for (int detachable = 1; detachable >= 0; detachable--) {
                int info[2], go[2];
                assert_int_equal(pipe(info), 0);
                assert_int_equal(pipe(go), 0);
                pid_t reaper = fork();
                assert_true(reaper >= 0);
                if (reaper == 0) {
                        close(info[0]);
                        close(go[1]);
                        prctl(PR_SET_CHILD_SUBREAPER, 1);
                        char id[80], rec[128];
                        uid_t uid = sandbox_of_killed_owner(detachable, "sleep 1000", NULL, id, sizeof(id));
                        snprintf(rec, sizeof(rec), "%u %s", (unsigned) uid, id);
                        (void) !write(info[1], rec, strlen(rec) + 1);
                        char c;
                        (void) !read(go[0], &c, 1);
                        while (waitpid(-1, NULL, 0) > 0)
                                ;
                        _exit(0);
                }
                close(info[1]);
                close(go[0]);
                char rec[128] = "", id[80];
                assert_true(read(info[0], rec, sizeof(rec) - 1) > 0);
                close(info[0]);
                unsigned uid = 0;
                assert_int_equal(sscanf(rec, "%u %79s", &uid, id), 2);
                struct lg_error e = {0};
                if (detachable) {
                        lg_sandbox *sb = NULL;
                        if (lg_sandbox_adopt(state_root, id, &sb, &e) < 0)
                                fail_msg("adopt: %s", e.msg);
                        assert_int_equal(lg_sandbox_destroy(sb), 0);
                        assert_int_equal(lg_sandbox_gc(state_root, &e), 0);
                } else {
                        /* Killed with its owner; the rest of it goes by gc. */
                        for (int i = 0; i < 2500 && processes_with_uid(uid) != 1; i++)
                                usleep(10000);
                        assert_int_equal(lg_sandbox_gc(state_root, &e), 1);
                }
                /* Killed, not reaped: a zombie of the reaper's, its range taken. */
                assert_int_equal(processes_with_uid(uid), 1);
                assert_true(uid_slot_of(id));
                /* Reaped: gc frees it, and nothing is left. */
                assert_int_equal(write(go[1], "x", 1), 1);
                close(go[1]);
                int status = -1;
                assert_int_equal(waitpid(reaper, &status, 0), reaper);
                assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                assert_int_equal(lg_sandbox_gc(state_root, &e), 0);
                assert_nothing_left(id, uid);
        }
}

/* Detach, adopt again in the same process, and a second adopter takes
 * over from the first (whose control socket reads EOF). */
static void test_detach_and_take_over(void **state) {
        (void) state;
        struct lg_sandbox_spec spec;
        base_spec(&spec);
        spec.detachable = true;
        spec.pids_max = 64;
        lg_sandbox *sb = start_sandbox(&spec);
        char id[80];
        snprintf(id, sizeof(id), "%s", lg_sandbox_id(sb));
        uid_t uid = lg_sandbox_host_uid(sb);
        pid_t pid = lg_sandbox_pid(sb);
        assert_int_equal(lg_sandbox_detach(sb), 0);
        assert_int_equal(kill(pid, 0), 0);
        struct lg_error e = {0};
        lg_sandbox *a = NULL, *b = NULL;
        if (lg_sandbox_adopt(state_root, id, &a, &e) < 0)
                fail_msg("adopt: %s", e.msg);
        if (lg_sandbox_adopt(state_root, id, &b, &e) < 0)
                fail_msg("adopt again: %s", e.msg);
        struct lg_msg m;
        lg_msg_init(&m);
        assert_int_equal(lg_msg_recv(lg_sandbox_control_fd(a), &m), 0);
        lg_msg_free(&m);
        char buf[64];
        exec_in(b, "echo still", buf, sizeof(buf));
        assert_string_equal(buf, "still\n");
        assert_int_equal(lg_sandbox_detach(a), 0);
        assert_int_equal(lg_sandbox_destroy(b), 0);
        /* Our own child after all: reap it, as destroy of an adopted one
         * leaves that to the reaper of orphans. */
        waitpid(pid, NULL, 0);
        assert_nothing_left(id, uid);
}

int main(void) {
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: sandbox tests need root (namespaces, cgroups, mounts)\n");
                return 77;
        }
        snprintf(state_root, sizeof(state_root), "/tmp/lg-test-state-%d", (int) getpid());
        /* Keep test cgroups apart from a running legiond's. */
        char parent[64];
        snprintf(parent, sizeof(parent), "legion-test-%d", (int) getpid());
        setenv("LEGION_CGROUP_PARENT", parent, 0);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_identity),
                cmocka_unit_test(test_host_uid_seen_from_host),
                cmocka_unit_test(test_pid_isolation),
                cmocka_unit_test(test_cannot_escape),
                cmocka_unit_test(test_binds),
                cmocka_unit_test(test_uid_ranges),
                cmocka_unit_test(test_readonly_root),
                cmocka_unit_test(test_layers),
                cmocka_unit_test(test_network),
                cmocka_unit_test(test_net_etc),
                cmocka_unit_test(test_fork_bomb),
                cmocka_unit_test(test_oom),
                cmocka_unit_test(test_exit_status),
                cmocka_unit_test(test_missing_command),
                cmocka_unit_test(test_bad_specs),
                cmocka_unit_test(test_destroy_leaves_nothing),
                cmocka_unit_test(test_logs_capped),
                cmocka_unit_test(test_placeholder_exec),
                cmocka_unit_test(test_delayed_mount),
                cmocka_unit_test(test_extra_fds),
                cmocka_unit_test(test_set_cpu),
                cmocka_unit_test(test_destroy_reaps_with_nonblocking_pidfd),
                cmocka_unit_test(test_cycles),
                cmocka_unit_test(test_gc_spares_live_owner),
                cmocka_unit_test(test_owner_killed),
                cmocka_unit_test(test_join_namespaces),
                cmocka_unit_test(test_log_file),
                cmocka_unit_test(test_run_as),
                cmocka_unit_test(test_term_right_after_start),
                cmocka_unit_test(test_favor_dynmods),
                cmocka_unit_test(test_start_with),
                cmocka_unit_test(test_set_limits_warm),
                cmocka_unit_test(test_destroy_warm),
                cmocka_unit_test(test_adopt_after_owner_killed),
                cmocka_unit_test(test_adopt_collects_exit),
                cmocka_unit_test(test_zombie_keeps_uid_range),
                cmocka_unit_test(test_detach_and_take_over),
        };
        int failed = cmocka_run_group_tests(tests, NULL, NULL);
        lg_rm_rf(state_root);
        /* The per-controller test parents are left empty; remove them. */
        static const char *const ctrls[] = {"memory", "cpu", "cpuacct", "pids", "freezer", ""};
        for (size_t i = 0; i < sizeof(ctrls) / sizeof(ctrls[0]); i++) {
                char path[256];
                snprintf(path, sizeof(path), "/sys/fs/cgroup/%s%s%s", ctrls[i], *ctrls[i] ? "/" : "",
                         getenv("LEGION_CGROUP_PARENT"));
                rmdir(path);
        }
        return failed ? 1 : 0;
}
