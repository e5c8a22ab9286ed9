/* Unit tests of src/image/launch.c: Kubernetes' command/args rules against
 * ENTRYPOINT/CMD, the environment merge, the working directory, and users
 * looked up in layers' etc/passwd and etc/group, with hostile input (no
 * command, env without '=', absurd and empty user names, passwd lines
 * malformed or huge, symlinked and oversized files, ids out of range).
 * No root needed: the layers are plain directories under $TMPDIR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/launch.h"
#include "test-ok.h"

#define V(...) ((const char *const[]) {__VA_ARGS__, NULL})
#define NONE ((const char *const[]) {NULL})

static char tmp[256];

/* The argv or env as one string, "a|b|c", to compare in one go. */
static char *join(char *const *v) {
        static char buf[8192];
        buf[0] = '\0';
        for (size_t i = 0; v && v[i]; i++) {
                if (i)
                        strcat(buf, "|");
                strcat(buf, v[i]);
        }
        return buf;
}

static void write_file(const char *layer, const char *name, const char *data, size_t len) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s/etc", tmp, layer);
        assert_int_equal(lg_mkdir_p(p, 0755), 0);
        snprintf(p, sizeof(p), "%s/%s/etc/%s", tmp, layer, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(lg_write_all(fd, data, len), 0);
        close(fd);
}

static void put(const char *layer, const char *name, const char *data) { write_file(layer, name, data, strlen(data)); }

/* An image of the given layers (uppermost first) under tmp. */
struct img {
        struct lg_image img;
        char *dirs[4];
};
static void mkimg(struct img *m, const char *const *layers) {
        memset(m, 0, sizeof(*m));
        for (size_t i = 0; layers && layers[i]; i++) {
                assert_true(asprintf(&m->dirs[i], "%s/%s", tmp, layers[i]) > 0);
                assert_int_equal(lg_mkdir_p(m->dirs[i], 0755), 0);
                m->img.n_layers++;
        }
        m->img.layer_dirs = m->dirs;
}
static void freeimg(struct img *m) {
        for (size_t i = 0; i < 4; i++)
                free(m->dirs[i]);
}

static int setup(void **state) {
        (void) state;
        const char *t = getenv("TMPDIR");
        snprintf(tmp, sizeof(tmp), "%s/test-image-launch-XXXXXX", t && *t ? t : "/tmp");
        return mkdtemp(tmp) ? 0 : -1;
}
static int teardown(void **state) {
        (void) state;
        return lg_rm_rf(tmp) < 0 ? -1 : 0;
}

/* ---- command and args ------------------------------------------------------- */

static void test_command_args(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct lg_image_launch l;
        struct lg_image img = {0};
        img.entrypoint = (char *[]) {"/ep", "-x", NULL};
        img.cmd = (char *[]) {"c1", "c2", NULL};
        const struct {
                const char *const *command, *const *args;
                const char *want;
        } cases[] = {
                {NULL, NULL, "/ep|-x|c1|c2"},               /* neither: ENTRYPOINT + CMD */
                {NONE, NONE, "/ep|-x|c1|c2"},               /* empty arrays = absent */
                {V("/bin/sh"), NULL, "/bin/sh"},            /* command: CMD dropped too */
                {V("/bin/sh", "-c"), NONE, "/bin/sh|-c"},
                {NULL, V("a1"), "/ep|-x|a1"},               /* args replace CMD only */
                {NONE, V("a1", ""), "/ep|-x|a1|"},
                {V("sh"), V("-c", "x y"), "sh|-c|x y"},     /* both */
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct lg_image_launch_in in = {.command = cases[i].command, .args = cases[i].args};
                OK(lg_image_launch_build(&img, &in, &l, &err));
                if (strcmp(join(l.argv), cases[i].want))
                        fail_msg("case %zu: argv `%s`, want `%s`", i, join(l.argv), cases[i].want);
                lg_image_launch_clear(&l);
        }

        /* CMD alone (no ENTRYPOINT): args replace it entirely. */
        img.entrypoint = NULL;
        OK(lg_image_launch_build(&img, &(struct lg_image_launch_in) {.args = V("x")}, &l, &err));
        assert_string_equal(join(l.argv), "x");
        lg_image_launch_clear(&l);
        /* in NULL: the image's everything. */
        OK(lg_image_launch_build(&img, NULL, &l, &err));
        assert_string_equal(join(l.argv), "c1|c2");
        assert_string_equal(l.cwd, "/");
        assert_false(l.run_as_set);
        lg_image_launch_clear(&l);
        lg_image_launch_clear(&l); /* twice is fine */
        lg_image_launch_clear(NULL);
}

static void test_no_command(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct lg_image_launch l;
        struct lg_image img = {0};
        static char *empty[] = {"", NULL};
        /* Nothing anywhere; an empty program name from either side. */
        const struct {
                char **ep, **cmd;
                const char *const *command, *const *args;
        } cases[] = {
                {NULL, NULL, NULL, NULL},   {NULL, NULL, NONE, NONE}, {empty, NULL, NULL, NULL},
                {NULL, empty, NULL, NULL},  {NULL, NULL, V(""), NULL}, {NULL, NULL, V("", "x"), NULL},
                {NULL, NULL, NULL, V("")},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                img.entrypoint = cases[i].ep;
                img.cmd = cases[i].cmd;
                struct lg_image_launch_in in = {.command = cases[i].command, .args = cases[i].args};
                memset(&l, 0x5a, sizeof(l));
                if (lg_image_launch_build(&img, &in, &l, &err) != -EINVAL)
                        fail_msg("case %zu: accepted", i);
                assert_non_null(strstr(err.msg, "no command specified"));
                assert_null(l.argv); /* cleared on failure */
                assert_null(l.env);
                assert_null(l.cwd);
        }
}

/* ---- environment and working directory -------------------------------------- */

static void test_env(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct lg_image_launch l;
        struct lg_image img = {0};
        img.cmd = (char *[]) {"x", NULL};
        /* Image entries without '=' are dropped; a later same name wins. */
        img.env = (char *[]) {"A=1", "B=2", "NOEQ", "AB=9", "A=3", NULL};
        struct lg_image_launch_in in = {.env = V("B=caller", "C=", "D=x=y"), .hostname = "pod1"};
        OK(lg_image_launch_build(&img, &in, &l, &err));
        assert_string_equal(join(l.env), "A=3|B=caller|AB=9|C=|D=x=y|"
                                         "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|"
                                         "HOSTNAME=pod1");
        lg_image_launch_clear(&l);

        /* PATH and HOSTNAME set by image or caller stay; no hostname, none. */
        img.env = (char *[]) {"PATH=/img", NULL};
        in = (struct lg_image_launch_in) {.env = V("HOSTNAME=mine"), .hostname = "pod1"};
        OK(lg_image_launch_build(&img, &in, &l, &err));
        assert_string_equal(join(l.env), "PATH=/img|HOSTNAME=mine");
        lg_image_launch_clear(&l);
        in = (struct lg_image_launch_in) {.env = V("PATH=/caller")};
        OK(lg_image_launch_build(&img, &in, &l, &err));
        assert_string_equal(join(l.env), "PATH=/caller");
        lg_image_launch_clear(&l);

        /* A long hostname is not cut. */
        char host[300];
        memset(host, 'h', sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        in = (struct lg_image_launch_in) {.hostname = host};
        OK(lg_image_launch_build(&img, &in, &l, &err));
        assert_int_equal(strlen(l.env[1]), strlen("HOSTNAME=") + strlen(host));
        lg_image_launch_clear(&l);

        /* The caller's entries must be NAME=value. */
        const char *const *bad[] = {V("NOEQ"), V("A=1", "=v"), V(""), V("=")};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                in = (struct lg_image_launch_in) {.env = bad[i]};
                assert_int_equal(lg_image_launch_build(&img, &in, &l, &err), -EINVAL);
                assert_non_null(strstr(err.msg, "is not NAME=value"));
                assert_null(l.argv);
        }
}

static void test_cwd(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct lg_image_launch l;
        struct lg_image img = {0};
        img.cmd = (char *[]) {"x", NULL};
        OK(lg_image_launch_build(&img, NULL, &l, &err));
        assert_string_equal(l.cwd, "/");
        lg_image_launch_clear(&l);
        img.working_dir = "/srv";
        OK(lg_image_launch_build(&img, &(struct lg_image_launch_in) {.cwd = ""}, &l, &err));
        assert_string_equal(l.cwd, "/srv");
        lg_image_launch_clear(&l);
        OK(lg_image_launch_build(&img, &(struct lg_image_launch_in) {.cwd = "/app"}, &l, &err));
        assert_string_equal(l.cwd, "/app");
        lg_image_launch_clear(&l);
        assert_int_equal(lg_image_launch_build(&img, &(struct lg_image_launch_in) {.cwd = "../x"}, &l, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "working directory `../x` is not absolute"));
        img.working_dir = "rel/dir";
        assert_int_equal(lg_image_launch_build(&img, NULL, &l, &err), -EINVAL);
        assert_null(l.argv);
}

/* ---- users ------------------------------------------------------------------ */

static int user_of(struct lg_image *img, const char *user, uid_t *uid, gid_t *gid, struct lg_error *err) {
        struct lg_image_launch l;
        struct lg_image_launch_in in = {.user = user};
        int r = lg_image_launch_build(img, &in, &l, err);
        if (r >= 0) {
                assert_true(l.run_as_set);
                *uid = l.uid;
                *gid = l.gid;
        }
        lg_image_launch_clear(&l);
        return r;
}

static void test_users(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct img m;
        mkimg(&m, V("u1", "u0"));
        m.img.cmd = (char *[]) {"x", NULL};

        /* A 300-char name whose first 255 chars have a line of their own:
         * must not match it (a cut copy of the name once did). */
        char longname[301], cut[256];
        memset(longname, 'n', 300);
        longname[300] = '\0';
        memcpy(cut, longname, 255);
        cut[255] = '\0';
        char huge[2048];
        memset(huge, 'z', sizeof(huge));
        memcpy(huge, "huge:x:5:5:", 11);
        huge[sizeof(huge) - 1] = '\0';

        char passwd[8192];
        snprintf(passwd, sizeof(passwd),
                 "root:x:0:0:root:/root:/bin/sh\n"
                 "broken\n"
                 "::\n"
                 ":x:7:7::/:\n"                    /* empty name */
                 "nouid:x:abc:1::/:\n"
                 "neguid:x:-1:0::/:\n"
                 "hexuid:x:0x10:0::/:\n"
                 "wrap:x:4294967296:0::/:\n"
                 "big:x:99999:1::/:\n"
                 "biggid:x:10:70000::/:\n"
                 "nogid:x:11\n"                    /* no field 3: group 0 */
                 "%s\n"                            /* a line over 1 KiB */
                 "%s:x:66:66::/:\n"                /* the cut long name */
                 "../x:x:42:42::/:\n"
                 "app:x:1234:50:App:/home/app:/bin/sh\n"
                 "crlf:x:20:21::/:/bin/sh\r\n"
                 "last:x:30:31",                   /* no final newline */
                 huge, cut);
        put("u1", "passwd", passwd);
        put("u1", "group", "staff:x:50:\nbad\n:x:8:\ngrp:x:77:app\nhuge:x:70000:\n");

        const struct {
                const char *user;
                int r;
                uid_t uid;
                gid_t gid;
        } cases[] = {
                {"app", 0, 1234, 50},     {"app:staff", 0, 1234, 50}, {"app:grp", 0, 1234, 77},
                {"app:9", 0, 1234, 9},    {"app:", 0, 1234, 50},      {"1234", 0, 1234, 50},
                {"4321", 0, 4321, 0},     {"0", 0, 0, 0},             {"root", 0, 0, 0},
                {"0:50", 0, 0, 50},       {"nogid", 0, 11, 0},        {"crlf", 0, 20, 21},
                {"last", 0, 30, 31},      {"../x", 0, 42, 42},        {"biggid", -ERANGE, 0, 0},
                {"ghost", -ENOENT, 0, 0}, {"app:ghost", -ENOENT, 0, 0}, {"app:bad", -ENOENT, 0, 0},
                {"app:huge", -ERANGE, 0, 0}, {":1000", -ENOENT, 0, 0}, {":", -ENOENT, 0, 0},
                {"app::", -ENOENT, 0, 0}, {"app:", 0, 1234, 50},      {"broken", -ENOENT, 0, 0},
                {"nouid", -ENOENT, 0, 0}, {"neguid", -ENOENT, 0, 0},  {"hexuid", -ENOENT, 0, 0},
                {"wrap", -ENOENT, 0, 0},  {"big", -ERANGE, 0, 0},     {"65536", -ERANGE, 0, 0},
                {"65535", 0, 65535, 0},   {"1:65536", -ERANGE, 0, 0}, {"4294967296", -ENOENT, 0, 0},
                {"-1", -ENOENT, 0, 0},    {"+1", -ENOENT, 0, 0},      {" 1", -ENOENT, 0, 0},
                {"huge", -ENOENT, 0, 0},  {longname, -ENOENT, 0, 0},  {"app\nroot", -ENOENT, 0, 0},
                {"../../etc/passwd", -ENOENT, 0, 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uid_t uid = 99;
                gid_t gid = 99;
                int r = user_of(&m.img, cases[i].user, &uid, &gid, &err);
                if (r != cases[i].r)
                        fail_msg("user `%.40s`: %d (%s), want %d", cases[i].user, r, r < 0 ? err.msg : "", cases[i].r);
                if (r == 0 && (uid != cases[i].uid || gid != cases[i].gid))
                        fail_msg("user `%s`: %u:%u, want %u:%u", cases[i].user, uid, gid, cases[i].uid, cases[i].gid);
        }
        assert_int_equal(user_of(&m.img, "ghost", &(uid_t) {0}, &(gid_t) {0}, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "unable to find user ghost: no matching entries in passwd file"));
        assert_int_equal(user_of(&m.img, "app:ghost", &(uid_t) {0}, &(gid_t) {0}, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "unable to find group ghost: no matching entries in group file"));
        assert_int_equal(user_of(&m.img, "big", &(uid_t) {0}, &(gid_t) {0}, &err), -ERANGE);
        assert_non_null(strstr(err.msg, "user 99999:1 is outside the 65536 ids"));

        /* An absurd name: refused, message bounded. */
        size_t n = 1 << 20;
        char *absurd = malloc(n + 1);
        assert_non_null(absurd);
        memset(absurd, 'a', n);
        absurd[n] = '\0';
        assert_int_equal(user_of(&m.img, absurd, &(uid_t) {0}, &(gid_t) {0}, &err), -ENOENT);
        assert_true(strlen(err.msg) < sizeof(err.msg));
        free(absurd);

        /* The image's User, unless the caller names one; none: root as is. */
        uid_t uid;
        gid_t gid;
        m.img.user = "app:grp";
        OK(user_of(&m.img, NULL, &uid, &gid, &err));
        assert_int_equal(uid, 1234);
        assert_int_equal(gid, 77);
        OK(user_of(&m.img, "", &uid, &gid, &err));
        assert_int_equal(gid, 77);
        OK(user_of(&m.img, "last", &uid, &gid, &err));
        assert_int_equal(uid, 30);
        m.img.user = "ghost";
        assert_int_equal(user_of(&m.img, NULL, &uid, &gid, &err), -ENOENT);
        freeimg(&m);
}

/* Which layer's file counts: the uppermost that has a regular one, never
 * through a symlink, never one over 4 MiB. */
static void test_user_layers(void **state) {
        (void) state;
        struct lg_error err = {0};
        uid_t uid;
        gid_t gid;
        struct img m;
        put("low", "passwd", "app:x:1:2::/:\n");
        put("low", "group", "g:x:3:\n");

        /* Upper layer without etc: the lower one's. */
        mkimg(&m, V("empty", "low"));
        m.img.cmd = (char *[]) {"x", NULL};
        OK(user_of(&m.img, "app:g", &uid, &gid, &err));
        assert_int_equal(uid, 1);
        assert_int_equal(gid, 3);
        freeimg(&m);

        /* An upper passwd shadows the lower one. */
        put("up", "passwd", "app:x:10:20::/:\n");
        mkimg(&m, V("up", "low"));
        m.img.cmd = (char *[]) {"x", NULL};
        OK(user_of(&m.img, "app:g", &uid, &gid, &err));
        assert_int_equal(uid, 10);
        assert_int_equal(gid, 3);
        freeimg(&m);

        /* etc/passwd a symlink (to a host file naming "evil"), etc a
         * symlink: not followed. */
        char p[512], target[512];
        put("host", "passwd", "evil:x:5:5::/:\n");
        snprintf(p, sizeof(p), "%s/sym/etc", tmp);
        assert_int_equal(lg_mkdir_p(p, 0755), 0);
        snprintf(target, sizeof(target), "%s/host/etc/passwd", tmp);
        snprintf(p, sizeof(p), "%s/sym/etc/passwd", tmp);
        assert_int_equal(symlink(target, p), 0);
        snprintf(p, sizeof(p), "%s/symetc", tmp);
        assert_int_equal(lg_mkdir_p(p, 0755), 0);
        snprintf(target, sizeof(target), "%s/host/etc", tmp);
        snprintf(p, sizeof(p), "%s/symetc/etc", tmp);
        assert_int_equal(symlink(target, p), 0);
        mkimg(&m, V("sym", "symetc", "low"));
        m.img.cmd = (char *[]) {"x", NULL};
        assert_int_equal(user_of(&m.img, "evil", &uid, &gid, &err), -ENOENT);
        OK(user_of(&m.img, "app", &uid, &gid, &err));
        assert_int_equal(uid, 1);
        freeimg(&m);
        /* Calibration: the same file reached directly is found. */
        mkimg(&m, V("host"));
        m.img.cmd = (char *[]) {"x", NULL};
        OK(user_of(&m.img, "evil", &uid, &gid, &err));
        assert_int_equal(uid, 5);
        freeimg(&m);

        /* passwd a directory, or over 4 MiB: skipped. */
        snprintf(p, sizeof(p), "%s/dir/etc/passwd", tmp);
        assert_int_equal(lg_mkdir_p(p, 0755), 0);
        size_t n = (4 << 20) + 2;
        char *big = malloc(n + 1);
        assert_non_null(big);
        memset(big, '#', n);
        memcpy(big, "app:x:100:100::/:\n", 18);
        big[n] = '\0';
        put("big", "passwd", big);
        free(big);
        mkimg(&m, V("dir", "big", "low"));
        m.img.cmd = (char *[]) {"x", NULL};
        OK(user_of(&m.img, "app", &uid, &gid, &err));
        assert_int_equal(uid, 1);
        freeimg(&m);

        /* NUL bytes: what follows the first is not read. */
        static const char nul[] = "a:x:1:1\n\0app:x:9:9\n";
        write_file("nul", "passwd", nul, sizeof(nul) - 1);
        mkimg(&m, V("nul"));
        m.img.cmd = (char *[]) {"x", NULL};
        OK(user_of(&m.img, "a", &uid, &gid, &err));
        assert_int_equal(user_of(&m.img, "app", &uid, &gid, &err), -ENOENT);
        freeimg(&m);

        /* Layer dirs that do not exist: no passwd, names unresolvable,
         * numbers fine. */
        mkimg(&m, NULL);
        char *gone = "/nonexistent/layer";
        m.img.layer_dirs = &gone;
        m.img.n_layers = 1;
        m.img.cmd = (char *[]) {"x", NULL};
        assert_int_equal(user_of(&m.img, "app", &uid, &gid, &err), -ENOENT);
        OK(user_of(&m.img, "7:8", &uid, &gid, &err));
        assert_int_equal(uid, 7);
        assert_int_equal(gid, 8);
}

/* ---- the sandbox helpers ---------------------------------------------------- */

static void test_apply(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct img m;
        put("ap", "passwd", "app:x:5:6::/:\n");
        mkimg(&m, V("ap"));
        m.img.cmd = (char *[]) {"x", NULL};
        m.img.user = "app";
        struct lg_image_launch l;
        OK(lg_image_launch_build(&m.img, NULL, &l, &err));
        struct lg_sandbox_launch sl;
        lg_sandbox_launch_init(&sl);
        lg_image_launch_apply(&l, &sl);
        assert_ptr_equal(sl.argv, l.argv);
        assert_ptr_equal(sl.envp, l.env);
        assert_ptr_equal(sl.cwd, l.cwd);
        assert_true(sl.run_as_set);
        assert_int_equal(sl.run_uid, 5);
        assert_int_equal(sl.run_gid, 6);
        assert_int_equal(sl.log_fd, -1); /* the rest untouched */
        lg_image_launch_clear(&l);

        struct lg_sandbox_spec s;
        lg_sandbox_spec_init(&s);
        lg_image_sandbox_layers(&m.img, 1 << 20, &s);
        assert_ptr_equal(s.layers, m.img.layer_dirs);
        assert_int_equal(s.n_layers, 1);
        assert_int_equal(s.rootfs_bytes, 1 << 20);
        freeimg(&m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_command_args), cmocka_unit_test(test_no_command),
                cmocka_unit_test(test_env),          cmocka_unit_test(test_cwd),
                cmocka_unit_test(test_users),        cmocka_unit_test(test_user_layers),
                cmocka_unit_test(test_apply),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
