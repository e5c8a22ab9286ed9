/* Tests for the cgroup manager (src/sandbox/cgroup*.c).
 *
 * Three layers:
 *  - fake cgroupfs trees made of ordinary files under /tmp, for the exact
 *    values written, the parsing of statistics and the v1/v2 layout logic.
 *    mkdir on a normal filesystem creates no control files, so the tests lay
 *    out the group in advance and create it with LG_CGROUP_CREATE_ADOPT
 *    (test-only, see cgroup-internal.h); production create still insists on
 *    making the directory itself and never creates control files.
 *  - the real v1 hierarchies of a hybrid host (root only).
 *  - a real cgroup2 mount: the controller-less `unified` mount of a hybrid
 *    host, or /sys/fs/cgroup on a pure v2 host, where the limits are checked
 *    for real too.
 * Tests that cannot run here skip and say what is missing. There are no
 * timing thresholds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/sched.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include "sandbox/cgroup-internal.h"

#define MiB (1024ULL * 1024)
/* Above the largest possible pid_max (2^22): kill() can only say ESRCH, so a
 * bug that kills "processes" of a fake tree cannot hit anything real. */
#define FAKE_PID 4194305

static const struct lg_cgroup_limits test_limits = {
        .memory_max = 32 * MiB,
        .cpu_quota_us = 50000,
        .cpu_period_us = 100000,
        .cpu_weight = 100,
        .pids_max = 16,
};

/* ---- file helpers ---- */

static void put(const char *root, const char *rel, const char *content) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", root, rel);
        char *slash = strrchr(path, '/');
        *slash = '\0';
        assert_int_equal(lg_mkdir_p(path, 0755), 0);
        *slash = '/';
        assert_int_equal(lg_write_file_at(AT_FDCWD, path, content, true), 0);
}

/* Contents of root/rel with the trailing newline stripped, or "<errno>". */
static const char *get(const char *root, const char *rel) {
        static char buf[4096];
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", root, rel);
        ssize_t n = lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf));
        if (n < 0)
                snprintf(buf, sizeof(buf), "<%s>", strerror((int) -n));
        return buf;
}

/* Tables of (relative path, contents) to lay out or check a fake tree. */
struct kv {
        const char *path, *value;
};
#define KV(...) (const struct kv[]) { __VA_ARGS__ }, ARRAY_SIZE(((const struct kv[]) { __VA_ARGS__ }))

static void put_all(const char *root, const struct kv *kv, size_t n) {
        for (size_t i = 0; i < n; i++)
                put(root, kv[i].path, kv[i].value);
}

static void check_all(const char *root, const struct kv *kv, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(get(root, kv[i].path), kv[i].value) != 0)
                        fail_msg("%s/%s: got \"%s\", want \"%s\"", root, kv[i].path,
                                 get(root, kv[i].path), kv[i].value);
}

static bool exists(const char *root, const char *rel) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", root, rel);
        return access(path, F_OK) == 0;
}

static char *mktree(void) {
        char tmpl[] = "/tmp/lg-cgtest-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        char *s = strdup(tmpl);
        assert_non_null(s);
        return s;
}

static void rmtree(char *root) {
        assert_int_equal(lg_rm_rf(root), 0);
        free(root);
}

/* Whether cgroup.procs (a list of pids) lists pid. */
static bool procs_has(const char *path, pid_t pid) {
        char buf[4096];
        if (lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) < 0)
                return false;
        char *save = NULL;
        for (char *t = strtok_r(buf, "\n", &save); t; t = strtok_r(NULL, "\n", &save))
                if (atoi(t) == pid)
                        return true;
        return false;
}

/* Every statistic of cg, read from a fake tree, as want says. */
static void check_stats(lg_cgroup *cg, struct lg_cgroup_stats want) {
        struct lg_cgroup_stats st;
        assert_int_equal(lg_cgroup_get_stats(cg, &st), 0);
        assert_int_equal(st.cpu_usage_ns, want.cpu_usage_ns);
        assert_int_equal(st.memory_current, want.memory_current);
        assert_int_equal(st.memory_peak, want.memory_peak);
        assert_int_equal(st.oom_kills, want.oom_kills);
        assert_int_equal(st.pids_current, want.pids_current);
}

/* ---- pure functions and validation ---- */

static void test_weight_to_shares(void **state) {
        (void) state;
        assert_int_equal(lg_cgroup_weight_to_shares(1), 2);
        assert_int_equal(lg_cgroup_weight_to_shares(100), 2597);
        assert_int_equal(lg_cgroup_weight_to_shares(10000), 262144);
        assert_int_equal(lg_cgroup_weight_to_shares(5000), 2 + (4999ULL * 262142) / 9999);
}

static void test_name_validation(void **state) {
        (void) state;
        char *root = mktree();
        struct lg_error err = { 0 };
        lg_cgroup *cg = NULL;
        char longname[130];
        memset(longname, 'a', 129);
        longname[129] = '\0';
        const char *bad[] = { "", ".", "..", "a/b", longname };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V2, "legion", bad[i], NULL, &cg, &err),
                                 -EINVAL);
        const char *bad_parent[] = { "", "/legion", "legion/", "a/../b", "..", "a//b" };
        for (size_t i = 0; i < ARRAY_SIZE(bad_parent); i++)
                assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V1, bad_parent[i], "x", NULL, &cg, &err),
                                 -EINVAL);
        longname[128] = '\0'; /* 128 is still fine: fails later, not with EINVAL */
        assert_int_not_equal(lg_cgroup_create(root, LG_CGROUP_V2, "legion", longname, NULL, &cg, &err),
                             -EINVAL);
        struct lg_cgroup_limits l = { .cpu_weight = 10001 };
        assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V2, "legion", "x", &l, &cg, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "weight"));
        assert_null(cg);
        rmtree(root);
}

static void test_detect(void **state) {
        (void) state;
        enum lg_cgroup_version v = 0;
        char *root = mktree();
        assert_int_equal(lg_cgroup_detect(root, &v), -EOPNOTSUPP);
        put(root, "memory/cgroup.procs", "");
        assert_int_equal(lg_cgroup_detect(root, &v), 0);
        assert_int_equal(v, LG_CGROUP_V1);
        put(root, "cgroup.controllers", "cpu memory pids\n");
        assert_int_equal(lg_cgroup_detect(root, &v), 0);
        assert_int_equal(v, LG_CGROUP_V2);
        assert_int_equal(lg_cgroup_detect("/nonexistent/lg-cg", &v), -ENOENT);
        rmtree(root);

        struct statfs sfs;
        if (statfs("/sys/fs/cgroup", &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC) {
                assert_int_equal(lg_cgroup_detect("/sys/fs/cgroup", &v), 0);
                assert_int_equal(v, LG_CGROUP_V2);
        } else if (access("/sys/fs/cgroup/memory", F_OK) == 0) {
                assert_int_equal(lg_cgroup_detect("/sys/fs/cgroup", &v), 0);
                assert_int_equal(v, LG_CGROUP_V1);
        }
        if (statfs("/sys/fs/cgroup/unified", &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC) {
                assert_int_equal(lg_cgroup_detect("/sys/fs/cgroup/unified", &v), 0);
                assert_int_equal(v, LG_CGROUP_V2);
        }
}

/* ---- fake v2 ---- */

/* A group as the kernel would lay it out, limits empty so the values
 * written can be compared byte for byte. */
static void fake_v2_group(const char *root) {
        put_all(root, KV({ "legion/sb1/memory.max", "" }, { "legion/sb1/memory.swap.max", "" },
                         { "legion/sb1/cpu.max", "" }, { "legion/sb1/cpu.weight", "" },
                         { "legion/sb1/pids.max", "" }, { "legion/sb1/cgroup.procs", "" },
                         { "legion/sb1/cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n" },
                         { "legion/sb1/memory.current", "4096\n" },
                         { "legion/sb1/memory.peak", "8192\n" },
                         { "legion/sb1/memory.events", "low 0\nhigh 0\nmax 7\noom 4\noom_kill 3\n" },
                         { "legion/sb1/pids.current", "2\n" },
                         { "legion/sb1/cgroup.events", "populated 0\nfrozen 0\n" }));
}

static void test_fake_v2(void **state) {
        (void) state;
        char *root = mktree();
        struct lg_error err = { 0 };
        put_all(root, KV({ "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n" },
                         { "cgroup.subtree_control", "" },
                         { "legion/cgroup.controllers", "cpu memory pids\n" },
                         { "legion/cgroup.subtree_control", "" }));
        fake_v2_group(root);

        _cleanup_cgroup_ lg_cgroup *cg = NULL;
        int r = lg_cgroup_create_flags(root, LG_CGROUP_V2, "legion", "sb1", &test_limits,
                                       LG_CGROUP_CREATE_ADOPT, &cg, &err);
        if (r < 0)
                fail_msg("create: %s", err.msg);
        check_all(root, KV({ "cgroup.subtree_control", "+cpu +memory +pids" },
                           { "legion/cgroup.subtree_control", "+cpu +memory +pids" },
                           { "legion/sb1/memory.max", "33554432" }, { "legion/sb1/memory.swap.max", "0" },
                           { "legion/sb1/cpu.max", "50000 100000" }, { "legion/sb1/cpu.weight", "100" },
                           { "legion/sb1/pids.max", "16" }));

        check_stats(cg, (struct lg_cgroup_stats) { .cpu_usage_ns = 1500000, .memory_current = 4096, .memory_peak = 8192,
                                                   .oom_kills = 3, .pids_current = 2 });

        assert_int_equal(lg_cgroup_add_pid(cg, FAKE_PID), 0);
        assert_string_equal(get(root, "legion/sb1/cgroup.procs"), "4194305");

        int fd = lg_cgroup_dirfd(cg);
        assert_true(fd >= 0);
        struct stat sb;
        assert_int_equal(fstatat(fd, "cpu.max", &sb, 0), 0);

        /* set_limits with zeros lifts limits; weight 0 leaves cpu.weight. */
        fake_v2_group(root);
        struct lg_cgroup_limits none = { 0 };
        assert_int_equal(lg_cgroup_set_limits(cg, &none, &err), 0);
        check_all(root, KV({ "legion/sb1/memory.max", "max" }, { "legion/sb1/memory.swap.max", "0" },
                           { "legion/sb1/cpu.max", "max 100000" }, { "legion/sb1/cpu.weight", "" },
                           { "legion/sb1/pids.max", "max" }));

        /* The fake group reports "populated 0": nothing to kill. */
        assert_int_equal(lg_cgroup_kill_all(cg), 0);

        /* Without the test flag an existing group is an error. */
        lg_cgroup *cg2 = NULL;
        assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V2, "legion", "sb1", NULL, &cg2, &err), -EEXIST);
        assert_null(cg2);

        /* Second create: the parent already delegates everything, so the
         * fast path must not touch the root's subtree_control. */
        put(root, "cgroup.subtree_control", "");
        assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V2, "legion", "sb2", NULL, &cg2, &err), 0);
        assert_string_equal(get(root, "cgroup.subtree_control"), "");
        assert_true(exists(root, "legion/sb2"));
        assert_int_equal(lg_cgroup_destroy(cg2), 0); /* empty plain dir: rmdir works */
        assert_false(exists(root, "legion/sb2"));
        lg_cgroup_free(cg2);

        put(root, "legion/not-a-group", "");
        char **names = NULL;
        assert_int_equal(lg_cgroup_list(root, LG_CGROUP_V2, "legion", &names), 1);
        assert_string_equal(names[0], "sb1");
        assert_null(names[1]);
        lg_strv_free(names);
        assert_int_equal(lg_cgroup_list(root, LG_CGROUP_V2, "nothere", &names), 0);
        assert_null(names[0]);
        lg_strv_free(names);

        lg_cgroup *op = NULL;
        assert_int_equal(lg_cgroup_open(root, LG_CGROUP_V2, "legion", "sb1", &op), 0);
        lg_cgroup_free(op);
        assert_int_equal(lg_cgroup_open(root, LG_CGROUP_V2, "legion", "gone", &op), -ENOENT);
        rmtree(root);
}

/* A level that offers only some controllers gets only those, and a limit
 * whose controller is missing fails naming it; the group made by the failed
 * create is removed again. */
static void test_fake_v2_missing_controllers(void **state) {
        (void) state;
        char *root = mktree();
        struct lg_error err = { 0 };
        put_all(root, KV({ "cgroup.controllers", "cpu io\n" }, { "cgroup.subtree_control", "" },
                         { "a/cgroup.controllers", "cpu\n" }, { "a/cgroup.subtree_control", "" },
                         { "a/b/cgroup.controllers", "cpu\n" }, { "a/b/cgroup.subtree_control", "" }));

        lg_cgroup *cg = NULL;
        struct lg_cgroup_limits mem = { .memory_max = 16 * MiB };
        assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V2, "a/b", "g", &mem, &cg, &err), -EOPNOTSUPP);
        assert_non_null(strstr(err.msg, "memory controller"));
        assert_null(cg);
        assert_false(exists(root, "a/b/g"));
        check_all(root, KV({ "cgroup.subtree_control", "+cpu" }, { "a/cgroup.subtree_control", "+cpu" },
                           { "a/b/cgroup.subtree_control", "+cpu" }));

        struct lg_cgroup_limits pids = { .pids_max = 4 };
        assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V2, "a/b", "g", &pids, &cg, &err), -EOPNOTSUPP);
        assert_non_null(strstr(err.msg, "pids controller"));

        /* No limits: fine, and statistics of absent controllers read 0. */
        put(root, "a/b/g/cpu.stat", "usage_usec 7\n");
        put(root, "a/b/g/cgroup.procs", "");
        assert_int_equal(lg_cgroup_create_flags(root, LG_CGROUP_V2, "a/b", "g", NULL,
                                                LG_CGROUP_CREATE_ADOPT, &cg, &err), 0);
        check_stats(cg, (struct lg_cgroup_stats) { .cpu_usage_ns = 7000, .memory_current = 0, .memory_peak = 0,
                                                   .oom_kills = 0, .pids_current = 0 });
        /* Lifting limits that cannot exist is not an error. */
        struct lg_cgroup_limits none = { 0 };
        assert_int_equal(lg_cgroup_set_limits(cg, &none, &err), 0);
        assert_int_equal(lg_cgroup_set_limits(cg, &mem, &err), -EOPNOTSUPP);
        assert_non_null(strstr(err.msg, "memory"));
        lg_cgroup_free(cg);
        rmtree(root);
}

/* cgroup.memory=nosocket, the boot option that keeps v2 from charging
 * socket buffers, found among the kernel's arguments and only there. */
static void test_cmdline_nosocket(void **state) {
        (void) state;
        static const struct {
                const char *cmdline;
                bool nosocket;
        } cases[] = {
                { "", false },
                { "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro quiet", false },
                { "root=/dev/vda1 cgroup.memory=nosocket", true },
                { "cgroup.memory=nokmem,nosocket quiet", true },
                { "cgroup.memory=nosocket,nokmem\n", true },
                { "\"cgroup.memory=nosocket\"", true },
                { "cgroup.memory=\"nokmem,nosocket\"", true },
                { "cgroup.memory=nosocket,", true },
                { "cgroup.memory=nokmem", false },
                { "cgroup.memory=nosockets cgroup.memory=xnosocket", false },
                { "xcgroup.memory=nosocket", false },
                { "cgroup.memory= nosocket", false },
                { "quiet -- cgroup.memory=nosocket", false },
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
                if (lg_cg_cmdline_nosocket(cases[i].cmdline) != cases[i].nosocket)
                        fail_msg("\"%s\": want %d", cases[i].cmdline, cases[i].nosocket);
}

/* ---- fake v1 ---- */

static void test_fake_v1(void **state) {
        (void) state;
        char *root = mktree();
        struct lg_error err = { 0 };
        char path[4096];

        /* Limits start empty: fake files keep old bytes past a shorter
         * write (the backends never truncate), so compare from empty. */
        put_all(root, KV({ "memory/legion/memory.use_hierarchy", "1\n" },
                         { "memory/legion/sb1/memory.limit_in_bytes", "" },
                         { "memory/legion/sb1/memory.memsw.limit_in_bytes", "" },
                         { "memory/legion/sb1/memory.kmem.tcp.limit_in_bytes", "" },
                         { "memory/legion/sb1/memory.usage_in_bytes", "1000\n" },
                         { "memory/legion/sb1/memory.max_usage_in_bytes", "2000\n" },
                         { "memory/legion/sb1/memory.kmem.tcp.usage_in_bytes", "300\n" },
                         { "memory/legion/sb1/memory.kmem.tcp.max_usage_in_bytes", "400\n" },
                         { "memory/legion/sb1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n" },
                         { "memory/legion/sb1/cgroup.procs", "" },
                         { "cpu,cpuacct/legion/sb1/cpu.cfs_quota_us", "" },
                         { "cpu,cpuacct/legion/sb1/cpu.cfs_period_us", "" },
                         { "cpu,cpuacct/legion/sb1/cpu.shares", "" },
                         { "cpu,cpuacct/legion/sb1/cpuacct.usage", "123456789\n" },
                         { "cpu,cpuacct/legion/sb1/cgroup.procs", "" },
                         { "pids/legion/sb1/pids.max", "" }, { "pids/legion/sb1/pids.current", "3\n" },
                         { "pids/legion/sb1/cgroup.procs", "" },
                         { "freezer/legion/sb1/freezer.state", "THAWED\n" },
                         { "freezer/legion/sb1/cgroup.procs", "" }));
        /* cpu and cpuacct co-mounted, reached through symlinks as on most
         * v1 distributions. */
        snprintf(path, sizeof(path), "%s/cpu", root);
        assert_int_equal(symlink("cpu,cpuacct", path), 0);
        snprintf(path, sizeof(path), "%s/cpuacct", root);
        assert_int_equal(symlink("cpu,cpuacct", path), 0);

        enum lg_cgroup_version v;
        assert_int_equal(lg_cgroup_detect(root, &v), 0);
        assert_int_equal(v, LG_CGROUP_V1);

        _cleanup_cgroup_ lg_cgroup *cg = NULL;
        int r = lg_cgroup_create_flags(root, LG_CGROUP_V1, "legion", "sb1", &test_limits,
                                       LG_CGROUP_CREATE_ADOPT, &cg, &err);
        if (r < 0)
                fail_msg("create: %s", err.msg);
        check_all(root, KV({ "memory/legion/sb1/memory.limit_in_bytes", "33554432" },
                           { "memory/legion/sb1/memory.memsw.limit_in_bytes", "33554432" },
                           { "memory/legion/sb1/memory.kmem.tcp.limit_in_bytes", "33554432" },
                           { "cpu/legion/sb1/cpu.cfs_quota_us", "50000" },
                           { "cpu/legion/sb1/cpu.cfs_period_us", "100000" },
                           { "cpu/legion/sb1/cpu.shares", "2597" }, { "pids/legion/sb1/pids.max", "16" }));
        assert_int_equal(lg_cgroup_dirfd(cg), -EOPNOTSUPP);

        assert_int_equal(lg_cgroup_add_pid(cg, FAKE_PID), 0);
        check_all(root, KV({ "memory/legion/sb1/cgroup.procs", "4194305" },
                           { "cpu,cpuacct/legion/sb1/cgroup.procs", "4194305" },
                           { "pids/legion/sb1/cgroup.procs", "4194305" },
                           { "freezer/legion/sb1/cgroup.procs", "4194305" }));

        /* Socket buffers count in the memory figures, as on v2. */
        check_stats(cg, (struct lg_cgroup_stats) { .cpu_usage_ns = 123456789, .memory_current = 1300, .memory_peak = 2400,
                                                   .oom_kills = 2, .pids_current = 3 });

        /* A change of the cpu quota alone writes neither memory file. */
        put_all(root, KV({ "memory/legion/sb1/memory.limit_in_bytes", "" },
                         { "memory/legion/sb1/memory.kmem.tcp.limit_in_bytes", "" },
                         { "cpu,cpuacct/legion/sb1/cpu.cfs_quota_us", "" }));
        struct lg_cgroup_limits cpu_only = test_limits;
        cpu_only.cpu_quota_us = 20000;
        assert_int_equal(lg_cgroup_set_limits(cg, &cpu_only, &err), 0);
        check_all(root, KV({ "memory/legion/sb1/memory.limit_in_bytes", "" },
                           { "memory/legion/sb1/memory.kmem.tcp.limit_in_bytes", "" },
                           { "cpu/legion/sb1/cpu.cfs_quota_us", "20000" }));

        put_all(root, KV({ "memory/legion/sb1/memory.limit_in_bytes", "" },
                         { "memory/legion/sb1/memory.memsw.limit_in_bytes", "" },
                         { "memory/legion/sb1/memory.kmem.tcp.limit_in_bytes", "" },
                         { "cpu,cpuacct/legion/sb1/cpu.cfs_quota_us", "" },
                         { "pids/legion/sb1/pids.max", "" }));
        struct lg_cgroup_limits none = { 0 };
        assert_int_equal(lg_cgroup_set_limits(cg, &none, &err), 0);
        check_all(root, KV({ "memory/legion/sb1/memory.limit_in_bytes", "-1" },
                           { "memory/legion/sb1/memory.memsw.limit_in_bytes", "-1" },
                           { "memory/legion/sb1/memory.kmem.tcp.limit_in_bytes", "-1" },
                           { "cpu/legion/sb1/cpu.cfs_quota_us", "-1" }, { "pids/legion/sb1/pids.max", "max" }));

        char **names = NULL;
        put(root, "memory/legion/other/cgroup.procs", "");
        assert_int_equal(lg_cgroup_list(root, LG_CGROUP_V1, "legion", &names), 2);
        bool sb1 = false, other = false;
        for (char **p = names; *p; p++) {
                sb1 |= !strcmp(*p, "sb1");
                other |= !strcmp(*p, "other");
        }
        assert_true(sb1 && other);
        lg_strv_free(names);
        rmtree(root);
}

/* A kernel without memory.kmem.tcp.limit_in_bytes cannot bound socket
 * buffers: a memory limit is refused, while a group without one (or
 * lifting it) needs no such file. */
static void test_fake_v1_no_sock_limit(void **state) {
        (void) state;
        char *root = mktree();
        struct lg_error err = { 0 };
        put_all(root, KV({ "memory/legion/memory.use_hierarchy", "1\n" },
                         { "memory/legion/sb1/memory.limit_in_bytes", "" },
                         { "memory/legion/sb1/cgroup.procs", "" }));

        lg_cgroup *cg = NULL;
        struct lg_cgroup_limits mem = { .memory_max = 16 * MiB };
        assert_int_equal(lg_cgroup_create_flags(root, LG_CGROUP_V1, "legion", "sb1", &mem,
                                                LG_CGROUP_CREATE_ADOPT, &cg, &err), -EOPNOTSUPP);
        assert_non_null(strstr(err.msg, "memory.kmem.tcp.limit_in_bytes"));
        assert_null(cg);

        assert_int_equal(lg_cgroup_create_flags(root, LG_CGROUP_V1, "legion", "sb1", NULL,
                                                LG_CGROUP_CREATE_ADOPT, &cg, &err), 0);
        assert_int_equal(lg_cgroup_set_limits(cg, &mem, &err), -EOPNOTSUPP);
        assert_non_null(strstr(err.msg, "socket buffers"));
        put(root, "memory/legion/sb1/memory.limit_in_bytes", "");
        struct lg_cgroup_limits none = { 0 };
        assert_int_equal(lg_cgroup_set_limits(cg, &none, &err), 0);
        check_all(root, KV({ "memory/legion/sb1/memory.limit_in_bytes", "-1" }));
        lg_cgroup_free(cg);
        rmtree(root);
}

/* Parent made on demand in every hierarchy, EEXIST in one hierarchy rolls
 * back the others, destroy removes the group and leaves the parent, and a
 * missing controller is named. */
static void test_fake_v1_layout(void **state) {
        (void) state;
        char *root = mktree();
        struct lg_error err = { 0 };
        static const char *const ctrls[] = { "memory", "cpu", "cpuacct", "pids", "freezer" };
        char rel[256];
        for (size_t i = 0; i < ARRAY_SIZE(ctrls); i++) {
                snprintf(rel, sizeof(rel), "%s/cgroup.procs", ctrls[i]);
                put(root, rel, "");
        }
        put(root, "systemd/cgroup.procs", "");

        lg_cgroup *cg = NULL;
        assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V1, "legion", "a", NULL, &cg, &err), 0);
        for (size_t i = 0; i < ARRAY_SIZE(ctrls); i++) {
                snprintf(rel, sizeof(rel), "%s/legion/a", ctrls[i]);
                assert_true(exists(root, rel));
        }
        assert_false(exists(root, "systemd/legion"));
        assert_int_equal(lg_cgroup_destroy(cg), 0);
        assert_int_equal(lg_cgroup_destroy(cg), 0); /* already gone: success */
        lg_cgroup_free(cg);
        for (size_t i = 0; i < ARRAY_SIZE(ctrls); i++) {
                snprintf(rel, sizeof(rel), "%s/legion/a", ctrls[i]);
                assert_false(exists(root, rel));
                snprintf(rel, sizeof(rel), "%s/legion", ctrls[i]);
                assert_true(exists(root, rel));
        }

        /* A leftover in pids only: -EEXIST, and nothing new stays behind. */
        put(root, "pids/legion/b/cgroup.procs", "");
        cg = NULL;
        assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V1, "legion", "b", NULL, &cg, &err), -EEXIST);
        assert_null(cg);
        assert_false(exists(root, "memory/legion/b"));
        assert_false(exists(root, "cpu/legion/b"));
        assert_true(exists(root, "pids/legion/b"));
        assert_int_equal(lg_cgroup_open(root, LG_CGROUP_V1, "legion", "b", &cg), 0);
        lg_cgroup_free(cg);
        assert_int_equal(lg_cgroup_open(root, LG_CGROUP_V1, "legion", "zzz", &cg), -ENOENT);
        rmtree(root);

        /* Only memory mounted: a cpu quota cannot be had. */
        root = mktree();
        put(root, "memory/cgroup.procs", "");
        struct lg_cgroup_limits cpu = { .cpu_quota_us = 10000 };
        assert_int_equal(lg_cgroup_create(root, LG_CGROUP_V1, "legion", "c", &cpu, &cg, &err), -EOPNOTSUPP);
        assert_non_null(strstr(err.msg, "cpu controller"));
        assert_false(exists(root, "memory/legion/c"));
        rmtree(root);
}

/* ---- real cgroupfs ---- */

struct real {
        const char *root;    /* mount root */
        char parent[64];     /* legion-test-<pid> */
        pid_t kids[4];
        lg_cgroup *cgs[4];
};

static struct real R;

static int real_setup(void **state) {
        memset(&R, 0, sizeof(R));
        snprintf(R.parent, sizeof(R.parent), "legion-test-%d", (int) getpid());
        *state = &R;
        return 0;
}

static int real_teardown(void **state) {
        (void) state;
        for (size_t i = 0; i < ARRAY_SIZE(R.kids); i++)
                if (R.kids[i] > 0) {
                        kill(R.kids[i], SIGKILL);
                        waitpid(R.kids[i], NULL, 0);
                }
        for (size_t i = 0; i < ARRAY_SIZE(R.cgs); i++)
                if (R.cgs[i]) {
                        (void) lg_cgroup_destroy(R.cgs[i]);
                        lg_cgroup_free(R.cgs[i]);
                }
        static const char *const subs[] = { "", "/memory", "/cpu", "/cpuacct", "/pids", "/freezer" };
        for (size_t i = 0; R.root && i < ARRAY_SIZE(subs); i++) {
                char path[4096];
                snprintf(path, sizeof(path), "%s%s/%s", R.root, subs[i], R.parent);
                (void) rmdir(path);
        }
        return 0;
}

static pid_t spawn_sleeper(void) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                for (;;)
                        pause();
        }
        return pid;
}

static void expect_sigkill(pid_t *pid) {
        int status;
        assert_int_equal(waitpid(*pid, &status, 0), *pid);
        *pid = 0;
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);
}

static bool v1_host(void) {
        struct stat st;
        if (geteuid() != 0) {
                print_message("[ SKIPPED  ] needs root for real cgroups\n");
                return false;
        }
        if (stat("/sys/fs/cgroup/memory", &st) < 0 || !S_ISDIR(st.st_mode)) {
                print_message("[ SKIPPED  ] no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory\n");
                return false;
        }
        return true;
}

static void test_real_v1(void **state) {
        (void) state;
        if (!v1_host())
                skip();
        R.root = "/sys/fs/cgroup";
        char dir[4096], file[4096];
        struct lg_error err = { 0 };

        int r = lg_cgroup_create(R.root, LG_CGROUP_V1, R.parent, "t1", &test_limits, &R.cgs[0], &err);
        if (r < 0)
                fail_msg("create: %s", err.msg);

        snprintf(dir, sizeof(dir), "%s/memory/%s/t1", R.root, R.parent);
        check_all(dir, KV({ "memory.limit_in_bytes", "33554432" },
                          { "memory.kmem.tcp.limit_in_bytes", "33554432" }));
        if (exists(dir, "memory.memsw.limit_in_bytes")) /* swap accounting on */
                check_all(dir, KV({ "memory.memsw.limit_in_bytes", "33554432" }));
        snprintf(dir, sizeof(dir), "%s/cpu/%s/t1", R.root, R.parent);
        check_all(dir, KV({ "cpu.cfs_quota_us", "50000" }, { "cpu.cfs_period_us", "100000" },
                          { "cpu.shares", "2597" }));
        snprintf(dir, sizeof(dir), "%s/pids/%s/t1", R.root, R.parent);
        check_all(dir, KV({ "pids.max", "16" }));

        /* Raising the memory limit needs memsw moved first. */
        struct lg_cgroup_limits more = test_limits;
        more.memory_max = 64 * MiB;
        more.cpu_quota_us = 20000;
        more.cpu_period_us = 50000;
        r = lg_cgroup_set_limits(R.cgs[0], &more, &err);
        if (r < 0)
                fail_msg("set_limits: %s", err.msg);
        snprintf(dir, sizeof(dir), "%s/memory/%s/t1", R.root, R.parent);
        assert_string_equal(get(dir, "memory.limit_in_bytes"), "67108864");
        assert_string_equal(get(dir, "memory.kmem.tcp.limit_in_bytes"), "67108864");
        r = lg_cgroup_set_limits(R.cgs[0], &test_limits, &err);
        if (r < 0)
                fail_msg("set_limits: %s", err.msg);
        assert_string_equal(get(dir, "memory.limit_in_bytes"), "33554432");
        assert_string_equal(get(dir, "memory.kmem.tcp.limit_in_bytes"), "33554432");

        R.kids[0] = spawn_sleeper();
        assert_int_equal(lg_cgroup_add_pid(R.cgs[0], R.kids[0]), 0);
        static const char *const ctrls[] = { "memory", "cpu", "cpuacct", "pids", "freezer" };
        for (size_t i = 0; i < ARRAY_SIZE(ctrls); i++) {
                snprintf(file, sizeof(file), "%s/%s/%s/t1/cgroup.procs", R.root, ctrls[i], R.parent);
                if (!procs_has(file, R.kids[0]))
                        fail_msg("pid %d not in %s", (int) R.kids[0], file);
        }

        struct lg_cgroup_stats st;
        assert_int_equal(lg_cgroup_get_stats(R.cgs[0], &st), 0);
        assert_int_equal(st.pids_current, 1);

        char **names = NULL;
        assert_int_equal(lg_cgroup_list(R.root, LG_CGROUP_V1, R.parent, &names), 1);
        assert_string_equal(names[0], "t1");
        lg_strv_free(names);

        assert_int_equal(lg_cgroup_kill_all(R.cgs[0]), 0);
        expect_sigkill(&R.kids[0]);

        assert_int_equal(lg_cgroup_destroy(R.cgs[0]), 0);
        for (size_t i = 0; i < ARRAY_SIZE(ctrls); i++) {
                snprintf(dir, sizeof(dir), "%s/%s/%s", R.root, ctrls[i], R.parent);
                assert_false(exists(dir, "t1"));
                assert_true(exists(dir, "."));
        }
        lg_cgroup_free(TAKE_PTR(R.cgs[0]));
}

/* A child allocating past its memory limit (swap is off via memsw) is
 * killed by the kernel, and the group's statistics say so. */
static void run_oom(enum lg_cgroup_version version) {
        struct lg_error err = { 0 };
        struct lg_cgroup_limits l = { .memory_max = 16 * MiB };
        int r = lg_cgroup_create(R.root, version, R.parent, "oom", &l, &R.cgs[1], &err);
        if (r < 0)
                fail_msg("create: %s", err.msg);

        int go[2];
        assert_int_equal(pipe2(go, O_CLOEXEC), 0);
        R.kids[1] = fork();
        assert_true(R.kids[1] >= 0);
        if (R.kids[1] == 0) {
                char c;
                close(go[1]);
                if (read(go[0], &c, 1) != 1)
                        _exit(2);
                size_t size = 64 * MiB;
                volatile char *p = malloc(size);
                if (!p)
                        _exit(3);
                for (size_t i = 0; i < size; i += 4096)
                        p[i] = 1;
                _exit(0);
        }
        close(go[0]);
        assert_int_equal(lg_cgroup_add_pid(R.cgs[1], R.kids[1]), 0);
        assert_int_equal(write(go[1], "x", 1), 1);
        close(go[1]);
        expect_sigkill(&R.kids[1]);

        struct lg_cgroup_stats st;
        assert_int_equal(lg_cgroup_get_stats(R.cgs[1], &st), 0);
        assert_true(st.oom_kills >= 1);
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/%s/oom", R.root, R.parent);
        if (version == LG_CGROUP_V1 || exists(dir, "memory.peak")) /* v2: 5.19+ */
                assert_true(st.memory_peak > 0);
        assert_int_equal(lg_cgroup_destroy(R.cgs[1]), 0);
        lg_cgroup_free(TAKE_PTR(R.cgs[1]));
}

static void test_real_v1_oom(void **state) {
        (void) state;
        if (!v1_host())
                skip();
        R.root = "/sys/fs/cgroup";
        run_oom(LG_CGROUP_V1);
}

static bool is_cgroup2(const char *path) {
        struct statfs sfs;
        return statfs(path, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC;
}

/* The cgroup2 mount to test against: /sys/fs/cgroup on a pure v2 host, the
 * `unified` mount on a hybrid one. */
static const char *v2_root(void) {
        if (geteuid() != 0) {
                print_message("[ SKIPPED  ] needs root for real cgroups\n");
                return NULL;
        }
        if (is_cgroup2("/sys/fs/cgroup"))
                return "/sys/fs/cgroup";
        if (is_cgroup2("/sys/fs/cgroup/unified"))
                return "/sys/fs/cgroup/unified";
        print_message("[ SKIPPED  ] no cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified\n");
        return NULL;
}

static bool root_offers(const char *root, const char *ctrl) {
        char buf[512];
        char path[4096];
        snprintf(path, sizeof(path), "%s/cgroup.controllers", root);
        if (lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) < 0)
                return false;
        char *save = NULL;
        for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save))
                if (!strcmp(t, ctrl))
                        return true;
        return false;
}

static pid_t clone_into(int cgroup_fd) {
        struct clone_args args = {
                .flags = CLONE_INTO_CGROUP,
                .exit_signal = SIGCHLD,
                .cgroup = (uint64_t) cgroup_fd,
        };
        long pid = syscall(SYS_clone3, &args, sizeof(args));
        if (pid == 0) {
                for (;;)
                        pause();
        }
        return (pid_t) pid;
}

/* Groups without limits on any cgroup2 mount, including one that offers no
 * controllers: tracking, CLONE_INTO_CGROUP, cgroup.kill and removal. */
static void test_real_v2_basic(void **state) {
        (void) state;
        R.root = v2_root();
        if (!R.root)
                skip();
        struct lg_error err = { 0 };
        char dir[4096], file[4096];

        int r = lg_cgroup_create(R.root, LG_CGROUP_V2, R.parent, "t1", NULL, &R.cgs[0], &err);
        if (r == -EBUSY) {
                print_message("[ SKIPPED  ] cannot delegate controllers here: %s\n", err.msg);
                skip();
        }
        if (r < 0)
                fail_msg("create: %s", err.msg);
        snprintf(dir, sizeof(dir), "%s/%s/t1", R.root, R.parent);
        snprintf(file, sizeof(file), "%s/cgroup.procs", dir);

        R.kids[0] = spawn_sleeper();
        assert_int_equal(lg_cgroup_add_pid(R.cgs[0], R.kids[0]), 0);
        assert_true(procs_has(file, R.kids[0]));

        int fd = lg_cgroup_dirfd(R.cgs[0]);
        assert_true(fd >= 0);
        R.kids[1] = clone_into(fd);
        if (R.kids[1] < 0 && (errno == ENOSYS || errno == EINVAL)) {
                print_message("clone3(CLONE_INTO_CGROUP) unavailable (%s), not checked\n", strerror(errno));
                R.kids[1] = 0;
        } else {
                assert_true(R.kids[1] > 0);
                assert_true(procs_has(file, R.kids[1]));
        }

        char **names = NULL;
        assert_int_equal(lg_cgroup_list(R.root, LG_CGROUP_V2, R.parent, &names), 1);
        assert_string_equal(names[0], "t1");
        lg_strv_free(names);

        assert_int_equal(lg_cgroup_kill_all(R.cgs[0]), 0);
        expect_sigkill(&R.kids[0]);
        if (R.kids[1] > 0)
                expect_sigkill(&R.kids[1]);
        assert_int_equal(lg_cgroup_destroy(R.cgs[0]), 0);
        assert_false(exists(dir, "."));
        lg_cgroup_free(TAKE_PTR(R.cgs[0]));

        /* A mount without the memory controller cannot limit memory. */
        if (!root_offers(R.root, "memory")) {
                struct lg_cgroup_limits mem = { .memory_max = 16 * MiB };
                lg_cgroup *cg = NULL;
                assert_int_equal(lg_cgroup_create(R.root, LG_CGROUP_V2, R.parent, "t2", &mem, &cg, &err),
                                 -EOPNOTSUPP);
                assert_non_null(strstr(err.msg, "memory"));
                assert_null(cg);
                snprintf(dir, sizeof(dir), "%s/%s", R.root, R.parent);
                assert_false(exists(dir, "t2"));
        }
}

static bool v2_full_host(void) {
        R.root = v2_root();
        if (!R.root)
                return false;
        if (strcmp(R.root, "/sys/fs/cgroup") != 0) {
                print_message("[ SKIPPED  ] not a pure cgroup v2 host (only %s, without controllers)\n",
                              R.root);
                return false;
        }
        static const char *const need[] = { "memory", "cpu", "pids" };
        for (size_t i = 0; i < ARRAY_SIZE(need); i++)
                if (!root_offers(R.root, need[i])) {
                        print_message("[ SKIPPED  ] %s controller not offered at %s\n", need[i], R.root);
                        return false;
                }
        return true;
}

/* Pure v2 host: limits read back from the real files, then OOM. */
static void test_real_v2_limits(void **state) {
        (void) state;
        if (!v2_full_host())
                skip();
        struct lg_error err = { 0 };
        char dir[4096];

        int r = lg_cgroup_create(R.root, LG_CGROUP_V2, R.parent, "t1", &test_limits, &R.cgs[0], &err);
        if (r == -EBUSY) {
                print_message("[ SKIPPED  ] cannot delegate controllers here: %s\n", err.msg);
                skip();
        }
        if (r < 0)
                fail_msg("create: %s", err.msg);
        snprintf(dir, sizeof(dir), "%s/%s/t1", R.root, R.parent);
        check_all(dir, KV({ "memory.max", "33554432" }, { "cpu.max", "50000 100000" },
                          { "cpu.weight", "100" }, { "pids.max", "16" }));
        if (exists(dir, "memory.swap.max")) /* swap accounting on */
                check_all(dir, KV({ "memory.swap.max", "0" }));

        R.kids[0] = spawn_sleeper();
        assert_int_equal(lg_cgroup_add_pid(R.cgs[0], R.kids[0]), 0);
        struct lg_cgroup_stats st;
        assert_int_equal(lg_cgroup_get_stats(R.cgs[0], &st), 0);
        assert_int_equal(st.pids_current, 1);
        assert_int_equal(lg_cgroup_kill_all(R.cgs[0]), 0);
        expect_sigkill(&R.kids[0]);
        assert_int_equal(lg_cgroup_destroy(R.cgs[0]), 0);
        assert_false(exists(dir, "."));
        lg_cgroup_free(TAKE_PTR(R.cgs[0]));
        run_oom(LG_CGROUP_V2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_weight_to_shares),
                cmocka_unit_test(test_name_validation),
                cmocka_unit_test(test_detect),
                cmocka_unit_test(test_fake_v2),
                cmocka_unit_test(test_fake_v2_missing_controllers),
                cmocka_unit_test(test_cmdline_nosocket),
                cmocka_unit_test(test_fake_v1),
                cmocka_unit_test(test_fake_v1_no_sock_limit),
                cmocka_unit_test(test_fake_v1_layout),
                cmocka_unit_test_setup_teardown(test_real_v1, real_setup, real_teardown),
                cmocka_unit_test_setup_teardown(test_real_v1_oom, real_setup, real_teardown),
                cmocka_unit_test_setup_teardown(test_real_v2_basic, real_setup, real_teardown),
                cmocka_unit_test_setup_teardown(test_real_v2_limits, real_setup, real_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
