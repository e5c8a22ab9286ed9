/* Warm pools for job roles (src/jobs/jobpool.h) with a real local agent
 * and real sandboxes (root): a pool of 4 fills, 4 starts take warm
 * sandboxes and a 5th is made on demand, every one alike: its command
 * and environment run, /job holds the files read-only, the runtimes are
 * at /opt/legion/runtime, its memory and CPU limits are on its cgroup
 * (read back from the host), its log is where asked; the pool refills
 * after; destroy and lg_jobpool_free leave no sandbox, state directory or
 * cgroup. With the network (a table, link prefix and CIDR of the test's
 * own): warm sandboxes have an address, a start gives it to the role's
 * tenant; a tenant that does not exist fails the start, warm and on
 * demand, leaving nothing. Pre-imported Dask processes (a dask-executor
 * pool): ready once imported, serving dask-worker, dask-scheduler and
 * dask-driver roles, a whole Dask job from such a pool; a broken one
 * never ready. Hostile input is refused without a callback.
 * Prints start_ns of warm and on-demand starts (no thresholds). Skips
 * (77) when not root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/jobpool.h"
#include "net-kit.h"
#include "sandbox-cleanup.h"

/* The test's network, its own per process (main): engineers and CI may
 * run this test at the same time on one machine. */
static char net_table[64], net_prefix[8], net_cidr[32], net_addr_prefix[24];

static char base[256], agent_root[300], state_root[300], files_dir[300], runtimes_dir[300], logs_dir[300];
static char parent[64];

struct ctx {
        uv_loop_t loop;
        lg_net *net;
        lg_agent *agent;
        lg_jobpool *jp;
};

#define MAX_STARTS 16

struct got {
        int n;
        int status[MAX_STARTS];
        struct lg_jobpool_started st[MAX_STARTS];
        struct lg_error err[MAX_STARTS];
};

struct slot {
        struct got *g;
        int i;
};

static void on_started(int status, const struct lg_jobpool_started *s, const struct lg_error *err, void *ud) {
        struct slot *sl = ud;
        struct got *g = sl->g;
        g->status[sl->i] = status;
        g->st[sl->i] = *s;
        if (err)
                g->err[sl->i] = *err;
        g->n++;
}

/* The sandboxes under a state root. */
static int count_sandboxes(const char *root) {
        char path[400];
        snprintf(path, sizeof(path), "%s/sandboxes", root);
        DIR *d = opendir(path);
        int n = 0;
        for (struct dirent *de; d && (de = readdir(d));)
                n += de->d_name[0] != '.';
        if (d)
                closedir(d);
        return n;
}

static struct ctx *cur; /* set up and not torn down: a test failed */

/* rt: the runtimes (NULL: the test's own, a marker file only). */
static void setup_rt(struct ctx *c, lg_net *net, const char *rt) {
        memset(c, 0, sizeof(*c));
        cur = c;
        c->net = net;
        assert_int_equal(uv_loop_init(&c->loop), 0);
        struct lg_error err = {0};
        assert_int_equal(lg_agent_local_new(&c->loop, agent_root, net, &c->agent, &err), 0);
        struct lg_jobpool_config cfg = {.loop = &c->loop, .agent = c->agent, .net = net, .state_root = state_root,
                                        .runtimes_dir = rt ? rt : runtimes_dir, .logs_dir = logs_dir};
        int r = lg_jobpool_new(&cfg, &c->jp, &err);
        if (r < 0)
                fprintf(stderr, "lg_jobpool_new: %s\n", err.msg);
        assert_int_equal(r, 0);
}

static void setup(struct ctx *c, lg_net *net) { setup_rt(c, net, NULL); }

/* Every test destroys the roles it started: once the agent is done,
 * lg_jobpool_free has left no sandbox (before lg_agent_free would
 * destroy what is left). */
static void teardown(struct ctx *c) {
        cur = NULL;
        lg_jobpool_free(c->jp);
        while (lg_agent_pending(c->agent))
                uv_run(&c->loop, UV_RUN_ONCE);
        assert_int_equal(count_sandboxes(state_root), 0);
        lg_agent_free(c->agent);
        assert_int_equal(uv_run(&c->loop, UV_RUN_NOWAIT), 0);
        assert_int_equal(uv_loop_close(&c->loop), 0);
}

static json_int_t pool_field(struct ctx *c, const char *name, const char *field) {
        json_t *a = lg_jobpool_json(c->jp);
        json_int_t v = -1;
        size_t i;
        json_t *o;
        json_array_foreach(a, i, o) if (!strcmp(json_string_value(json_object_get(o, "name")), name)) v =
                json_integer_value(json_object_get(o, field));
        json_decref(a);
        return v;
}

static void run_until_ready(struct ctx *c, const char *pool, int n) {
        uint64_t t0 = lg_now_ns();
        while (pool_field(c, pool, "readyNow") != n) {
                assert_true(lg_now_ns() - t0 < 120ull * 1000000000);
                uv_run(&c->loop, UV_RUN_ONCE);
        }
}

static void run_until_got(struct ctx *c, struct got *g, int n) {
        uint64_t t0 = lg_now_ns();
        while (g->n < n) {
                assert_true(lg_now_ns() - t0 < 120ull * 1000000000);
                uv_run(&c->loop, UV_RUN_ONCE);
        }
}

static bool cgroup_v2(void) { return access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0; }

/* A file of the sandbox's cgroup: v2 name, and its v1 controller and name. */
static bool cg_read(const char *id, const char *v2, const char *v1_ctl, const char *v1, char *buf, size_t cap) {
        char path[512];
        if (cgroup_v2())
                snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/%s/%s", parent, id, v2);
        else
                snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/%s/%s/%s", v1_ctl, parent, id, v1);
        return lg_read_file_at(AT_FDCWD, path, buf, cap) >= 0;
}

static bool cg_exists(const char *id) {
        char path[512];
        if (cgroup_v2())
                snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/%s", parent, id);
        else
                snprintf(path, sizeof(path), "/sys/fs/cgroup/memory/%s/%s", parent, id);
        return access(path, F_OK) == 0;
}

static bool state_exists(const char *id) {
        char path[512];
        snprintf(path, sizeof(path), "%s/sandboxes/%s", state_root, id);
        return access(path, F_OK) == 0;
}

static void wait_exit(int pidfd) {
        struct pollfd p = {.fd = pidfd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 60000), 1);
}

static int agent_done;
static void noted(lg_agent_req *req) {
        (void) req;
        agent_done++;
}

static void agent_wait(struct ctx *c) {
        while (!agent_done)
                uv_run(&c->loop, UV_RUN_ONCE);
        agent_done = 0;
}

static void destroy(struct ctx *c, const char *id) {
        lg_agent_req req = {0};
        assert_int_equal(lg_agent_destroy(c->agent, &req, id, noted), 0);
        agent_wait(c);
        assert_int_equal(req.result, 0);
}

static void read_log(int i, char *buf, size_t cap) {
        char path[400];
        snprintf(path, sizeof(path), "%s/role-%d.log", logs_dir, i);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        ssize_t n = read(fd, buf, cap - 1);
        assert_true(n >= 0);
        buf[n] = '\0';
}

static const char script[] =
        "echo foo=$FOO; cat /job/hello.txt; "
        "if touch /job/new 2>/dev/null; then echo job-writable; else echo job-readonly; fi; "
        "test -f /opt/legion/runtime/marker && echo runtime-ok; echo host=$(hostname); echo cwd=$(pwd)";

static void role_for(int i, struct lg_jobpool_role *r, const char **argv, const char **envp, char *env,
                     char *log, char *host) {
        snprintf(env, 32, "FOO=bar-%d", i);
        snprintf(log, 400, "%s/role-%d.log", logs_dir, i);
        snprintf(host, 32, "role-%d", i);
        argv[0] = "/bin/sh";
        argv[1] = "-c";
        argv[2] = script;
        argv[3] = NULL;
        envp[0] = "PATH=/usr/bin:/bin";
        envp[1] = env;
        envp[2] = NULL;
        *r = (struct lg_jobpool_role){.argv = argv, .envp = envp, .cwd = "/job", .hostname = host,
                                      .files_dir = files_dir, .runtimes_dir = runtimes_dir, .log_file = log,
                                      .cpu_millis = 500, .memory_bytes = 64ull << 20};
}

/* ---- fill, take, on demand ----------------------------------------------------- */

static void test_fill_take_on_demand(void **state) {
        (void) state;
        static struct ctx c; /* not on the stack: net_teardown frees it after a failure */
        setup(&c, NULL);
        struct lg_error err = {0};
        assert_int_equal(lg_jobpool_set(c.jp, "default", NULL, 4, &err), 0);
        run_until_ready(&c, "default", 4);
        assert_int_equal(pool_field(&c, "default", "ready"), 4);
        assert_int_equal(pool_field(&c, "default", "made"), 4);
        assert_int_equal(count_sandboxes(state_root), 4);

        enum { N = 5 };
        struct got g = {0};
        struct slot slots[N];
        const char *argv[N][4], *envp[N][3];
        char env[N][32], log[N][400], host[N][32];
        for (int i = 0; i < N; i++) {
                struct lg_jobpool_role r;
                role_for(i, &r, argv[i], envp[i], env[i], log[i], host[i]);
                slots[i] = (struct slot){&g, i};
                assert_int_equal(lg_jobpool_start(c.jp, &r, on_started, &slots[i], &err), 0);
        }
        assert_int_equal(g.n, 0); /* never from inside the call */
        run_until_got(&c, &g, N);

        for (int i = 0; i < N; i++) {
                const struct lg_jobpool_started *s = &g.st[i];
                if (g.status[i] < 0)
                        fprintf(stderr, "start %d: %s\n", i, g.err[i].msg);
                assert_int_equal(g.status[i], 0);
                /* The first four took the warm ones; the fifth was made. */
                assert_int_equal(s->warm, i < 4);
                assert_true(!strncmp(s->id, i < 4 ? "jw-" : "jr-", 3));
                assert_string_equal(s->address, "");
                assert_true(s->pidfd >= 0);
                fprintf(stderr, "start %d (%s): %.1f ms\n", i, s->warm ? "warm" : "on demand", s->start_ns / 1e6);
                wait_exit(s->pidfd);

                /* Limits on its cgroup, as asked. */
                char v[128];
                if (cgroup_v2()) {
                        assert_true(cg_read(s->id, "memory.max", "", "", v, sizeof(v)));
                        assert_string_equal(v, "67108864");
                        assert_true(cg_read(s->id, "cpu.max", "", "", v, sizeof(v)));
                        assert_string_equal(v, "50000 100000");
                        /* A warm one waited at weight 10; taken, the default. */
                        assert_true(cg_read(s->id, "cpu.weight", "", "", v, sizeof(v)));
                        assert_string_equal(v, "100");
                } else {
                        assert_true(cg_read(s->id, "", "memory", "memory.limit_in_bytes", v, sizeof(v)));
                        assert_string_equal(v, "67108864");
                        assert_true(cg_read(s->id, "", "cpu", "cpu.cfs_quota_us", v, sizeof(v)));
                        assert_string_equal(v, "50000");
                        /* Weight 100 in v1's shares (2597, crun's mapping), not
                         * the warm weight 10's 237. */
                        assert_true(cg_read(s->id, "", "cpu", "cpu.shares", v, sizeof(v)));
                        assert_true(strtoull(v, NULL, 10) >= 1024);
                }

                lg_agent_req st = {0};
                assert_int_equal(lg_agent_status(c.agent, &st, s->id, noted), 0);
                agent_wait(&c);
                assert_int_equal(st.result, 0);
                assert_int_equal(st.out.exited, 1);
                assert_int_equal(st.out.status.kind, LG_EXIT_CODE);
                assert_int_equal(st.out.status.code, 0);

                char out[4096], want[512];
                read_log(i, out, sizeof(out));
                snprintf(want, sizeof(want),
                         "foo=bar-%d\nhello job\njob-readonly\nruntime-ok\nhost=role-%d\ncwd=/job\n", i, i);
                assert_string_equal(out, want);

                char id[LG_AGENT_ID_MAX];
                snprintf(id, sizeof(id), "%s", s->id);
                assert_true(state_exists(id) && cg_exists(id));
                destroy(&c, id);
                assert_false(state_exists(id));
                assert_false(cg_exists(id));
        }
        /* The files stayed as they were. */
        char path[400];
        snprintf(path, sizeof(path), "%s/new", files_dir);
        assert_int_equal(access(path, F_OK), -1);
        assert_int_equal(pool_field(&c, "default", "taken"), 4);
        assert_int_equal(pool_field(&c, "default", "missed"), 1);

        /* Refilled once the starts were done. */
        run_until_ready(&c, "default", 4);
        assert_int_equal(pool_field(&c, "default", "made"), 8);
        assert_int_equal(count_sandboxes(state_root), 4);

        /* Lowering the count destroys the extra ones. */
        assert_int_equal(lg_jobpool_set(c.jp, "default", NULL, 1, &err), 0);
        assert_int_equal(pool_field(&c, "default", "readyNow"), 1);
        while (lg_agent_pending(c.agent))
                uv_run(&c.loop, UV_RUN_ONCE);
        assert_int_equal(count_sandboxes(state_root), 1);
        teardown(&c);
        /* Free destroyed the warm ones: nothing left. */
        assert_int_equal(count_sandboxes(state_root), 0);
}

/* A pool deleted, or the jobpool freed, while its sandboxes are being
 * made and a start is under way: nothing is left, no callback runs after
 * free. */
static void test_free_while_making(void **state) {
        (void) state;
        static struct ctx c; /* not on the stack: net_teardown frees it after a failure */
        setup(&c, NULL);
        struct lg_error err = {0};
        assert_int_equal(lg_jobpool_set(c.jp, "a", NULL, 2, &err), 0);
        assert_int_equal(lg_jobpool_set(c.jp, "b", NULL, 2, &err), 0);
        for (int i = 0; i < 100 && pool_field(&c, "a", "making") == 0; i++)
                uv_run(&c.loop, UV_RUN_NOWAIT); /* the refill starts making */
        assert_true(pool_field(&c, "a", "making") > 0);
        assert_int_equal(lg_jobpool_delete(c.jp, "a"), 0);
        assert_int_equal(lg_jobpool_delete(c.jp, "a"), -ENOENT);
        struct got g = {0};
        struct slot sl = {&g, 0};
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_jobpool_role r = {.argv = argv};
        assert_int_equal(lg_jobpool_start(c.jp, &r, on_started, &sl, &err), 0);
        teardown(&c);
        assert_int_equal(g.n, 0);
        assert_int_equal(count_sandboxes(state_root), 0);
}

/* ---- the network ---------------------------------------------------------------- */

static lg_net *cur_net;

static lg_net *net_up(void) {
        cur_net = test_net_open(net_cidr, net_table, net_prefix, true, "tenant");
        return cur_net;
}

/* After a failed test: its agent destroys every sandbox it made (started
 * ones are detachable and would outlive the test), then its network. */
static int net_teardown(void **state) {
        (void) state;
        if (cur) {
                lg_jobpool_free(cur->jp);
                lg_agent_free(cur->agent);
                cur = NULL;
        }
        if (cur_net) {
                struct lg_error err = {0};
                lg_net_teardown(cur_net, &err);
                lg_net_free(cur_net);
                cur_net = NULL;
        }
        return 0;
}

static unsigned net_stat(lg_net *net, bool elements) {
        struct lg_net_stats st;
        struct lg_error err = {0};
        assert_int_equal(lg_net_stats(net, &st, &err), 0);
        return elements ? st.elements : st.addresses_used;
}

static void test_net(void **state) {
        (void) state;
        static struct ctx c; /* not on the stack: net_teardown frees it after a failure */
        lg_net *net = net_up();
        setup(&c, net);
        struct lg_error err = {0};
        assert_int_equal(lg_jobpool_set(c.jp, "default", NULL, 2, &err), 0);
        run_until_ready(&c, "default", 2);
        assert_int_equal(net_stat(net, false), 2); /* an address each while they wait */
        unsigned elements = net_stat(net, true);    /* no tenant yet */

        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_jobpool_role r = {.argv = argv, .network = true, .net_namespace = "tenant"};
        struct got g = {0};
        struct slot sl[3] = {{&g, 0}, {&g, 1}, {&g, 2}};
        assert_int_equal(lg_jobpool_start(c.jp, &r, on_started, &sl[0], &err), 0);
        /* A tenant that does not exist: the warm start fails, and so does
         * the one made on demand in its place; nothing is left. */
        struct lg_jobpool_role bad = r;
        bad.net_namespace = "nobody";
        assert_int_equal(lg_jobpool_start(c.jp, &bad, on_started, &sl[1], &err), 0);
        run_until_got(&c, &g, 2);
        assert_int_equal(g.status[0], 0);
        assert_true(g.st[0].warm);
        assert_true(!strncmp(g.st[0].address, net_addr_prefix, strlen(net_addr_prefix)));
        assert_true(net_stat(net, true) > elements); /* assigned to its tenant */
        assert_int_equal(g.status[1], -ENOENT);
        fprintf(stderr, "bad tenant: %s\n", g.err[1].msg);
        assert_true(strstr(g.err[1].msg, "nobody") != NULL);
        assert_int_equal(g.st[1].pidfd, -1);

        /* On demand (the pool is empty now): the same. */
        assert_int_equal(pool_field(&c, "default", "readyNow"), 0);
        assert_int_equal(lg_jobpool_start(c.jp, &r, on_started, &sl[2], &err), 0);
        run_until_got(&c, &g, 3);
        if (g.status[2] < 0)
                fprintf(stderr, "on demand: %s\n", g.err[2].msg);
        assert_int_equal(g.status[2], 0);
        assert_false(g.st[2].warm);
        assert_true(!strncmp(g.st[2].address, net_addr_prefix, strlen(net_addr_prefix)));
        assert_string_not_equal(g.st[0].address, g.st[2].address);

        destroy(&c, g.st[0].id);
        destroy(&c, g.st[2].id);
        teardown(&c);
        assert_int_equal(count_sandboxes(state_root), 0);
        assert_int_equal(net_stat(net, false), 0); /* every address released */
}

/* ---- pre-imported Dask executors -------------------------------------------------- */

/* The warm executors' logs waiting in logs_dir. */
static int count_warm_logs(void) {
        DIR *d = opendir(logs_dir);
        int n = 0;
        for (struct dirent *de; d && (de = readdir(d));)
                n += !strncmp(de->d_name, ".warm-jw-", 9);
        if (d)
                closedir(d);
        return n;
}

/* Wait (bounded) until file holds s. */
static bool log_shows(const char *file, const char *s) {
        char buf[65536];
        for (int i = 0; i < 1200; i++) {
                _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
                ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
                if (n > 0) {
                        buf[n] = '\0';
                        if (strstr(buf, s))
                                return true;
                }
                usleep(50 * 1000);
        }
        fprintf(stderr, "%s: no `%s` in:\n%s\n", file, s, buf);
        return false;
}

/* How many threads the sandbox's processes have, all at nice (-1: one
 * is not). */
static int tasks_at_nice(const char *id, int nice) {
        char path[512];
        if (cgroup_v2())
                snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/%s/cgroup.procs", parent, id);
        else
                snprintf(path, sizeof(path), "/sys/fs/cgroup/pids/%s/%s/cgroup.procs", parent, id);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        int n = 0, pid;
        while (fscanf(f, "%d", &pid) == 1) {
                snprintf(path, sizeof(path), "/proc/%d/task", pid);
                DIR *d = opendir(path);
                for (struct dirent *de; d && (de = readdir(d));) {
                        if (de->d_name[0] == '.')
                                continue;
                        errno = 0;
                        int v = getpriority(PRIO_PROCESS, (id_t) atoi(de->d_name));
                        if (errno == 0 && v != nice) {
                                fprintf(stderr, "task %s of %d at nice %d, not %d\n", de->d_name, pid, v, nice);
                                n = -1;
                        } else if (n >= 0 && errno == 0) {
                                n++;
                        }
                }
                if (d)
                        closedir(d);
        }
        fclose(f);
        return n;
}

/* A pool of pre-imported Dask processes: a dask-worker role takes one
 * (its arguments and log are the role's, its limits on its cgroup),
 * other commands are plain; then a whole Dask job from the pool over the
 * test's network: a scheduler, an executor that registers with it (the
 * role's DASK_* environment counts, its threads back at our priority)
 * and a driver whose script computes on them. The warm logs go with
 * their sandboxes. */
static void test_dask_preimported(void **state) {
        (void) state;
        const char *src = getenv("LG_SOURCE_ROOT");
        if (!src)
                skip();
        char rt[400];
        snprintf(rt, sizeof(rt), "%s/runtimes", src);
        static struct ctx c; /* not on the stack: net_teardown frees it after a failure */
        lg_net *net = net_up();
        setup_rt(&c, net, rt);
        struct lg_error err = {0};
        assert_int_equal(lg_jobpool_set_dask(c.jp, "dask", NULL, 2, &err), 0);
        run_until_ready(&c, "dask", 2);
        assert_int_equal(count_warm_logs(), 2);

        struct got g = {0};
        struct slot sl[4] = {{&g, 0}, {&g, 1}, {&g, 2}, {&g, 3}};
        char log0[400], log1[400], log2[400];
        snprintf(log0, sizeof(log0), "%s/dask-version.log", logs_dir);
        const char *version[] = {"dask-worker", "--version", NULL};
        const char *env[] = {"PATH=/usr/bin:/bin", "PYTHONPATH=/job", NULL};
        struct lg_jobpool_role r = {.argv = version, .envp = env, .cwd = "/job", .files_dir = files_dir,
                                    .log_file = log0, .cpu_millis = 1000, .memory_bytes = 512ull << 20,
                                    .network = true, .net_namespace = "tenant"};
        assert_int_equal(lg_jobpool_start(c.jp, &r, on_started, &sl[0], &err), 0);
        run_until_got(&c, &g, 1);
        if (g.status[0] < 0)
                fprintf(stderr, "dask-worker --version: %s\n", g.err[0].msg);
        assert_int_equal(g.status[0], 0);
        assert_true(g.st[0].warm && g.st[0].preimported);
        fprintf(stderr, "pre-imported start: %.1f ms\n", g.st[0].start_ns / 1e6);
        wait_exit(g.st[0].pidfd);
        char v[128];
        if (!cgroup_v2()) {
                assert_true(cg_read(g.st[0].id, "", "memory", "memory.limit_in_bytes", v, sizeof(v)));
                assert_string_equal(v, "536870912");
        } else {
                assert_true(cg_read(g.st[0].id, "memory.max", "", "", v, sizeof(v)));
                assert_string_equal(v, "536870912");
        }
        assert_true(log_shows(log0, "dask-worker, version"));
        lg_agent_req st = {0};
        assert_int_equal(lg_agent_status(c.agent, &st, g.st[0].id, noted), 0);
        agent_wait(&c);
        assert_int_equal(st.out.exited, 1);
        assert_int_equal(st.out.status.code, 0);
        destroy(&c, g.st[0].id);

        /* A log that exists already, or another command: a plain start. */
        const char *sleeper[] = {"/bin/sleep", "1000", NULL};
        struct lg_jobpool_role other = r;
        other.argv = sleeper;
        other.log_file = NULL;
        assert_int_equal(lg_jobpool_start(c.jp, &other, on_started, &sl[1], &err), 0);
        run_until_got(&c, &g, 2);
        assert_int_equal(g.status[1], 0);
        assert_false(g.st[1].preimported);
        destroy(&c, g.st[1].id);

        /* A whole Dask job from the pool: a scheduler, an executor that
         * registers with it, and a driver whose script computes on it. */
        assert_int_equal(lg_jobpool_set_dask(c.jp, "dask", NULL, 3, &err), 0);
        run_until_ready(&c, "dask", 3);
        snprintf(log1, sizeof(log1), "%s/scheduler.log", logs_dir);
        const char *sched[] = {"dask-scheduler", "--host", "0.0.0.0", "--port", "8786", "--no-dashboard", NULL};
        struct lg_jobpool_role sr = r;
        sr.argv = sched;
        sr.log_file = log1;
        assert_int_equal(lg_jobpool_start(c.jp, &sr, on_started, &sl[2], &err), 0);
        run_until_got(&c, &g, 3);
        assert_int_equal(g.status[2], 0);
        assert_true(g.st[2].preimported);
        assert_true(log_shows(log1, "Scheduler at:"));
        char addr[80], addr_env[120];
        snprintf(addr, sizeof(addr), "tcp://%s:8786", g.st[2].address);
        snprintf(addr_env, sizeof(addr_env), "DASK_SCHEDULER_ADDRESS=%s", addr);
        snprintf(log2, sizeof(log2), "%s/executor-0.log", logs_dir);
        const char *worker[] = {"dask-worker", addr, "--name", "executor-0", "--nthreads", "1", "--memory-limit",
                                "400MB", "--no-nanny", "--no-dashboard", "--death-timeout", "30", NULL};
        /* Dask's configuration from the role's environment (read after
         * the imports): its temporary directory is where it works. */
        const char *wenv[] = {"PATH=/usr/bin:/bin", "PYTHONPATH=/job", "DASK_TEMPORARY_DIRECTORY=/tmp/from-env",
                              NULL};
        struct lg_jobpool_role wr = r;
        wr.argv = worker;
        wr.envp = wenv;
        wr.log_file = log2;
        char log3[400];
        snprintf(log3, sizeof(log3), "%s/driver.log", logs_dir);
        const char *driver[] = {"python3", "/opt/legion/runtime/python", "dask-driver", "/job/app.py", "a", "b",
                                NULL};
        const char *denv[] = {"PATH=/usr/bin:/bin", "PYTHONPATH=/job", addr_env, "LEGION_NUM_EXECUTORS=1", NULL};
        struct lg_jobpool_role dr = r;
        dr.argv = driver;
        dr.envp = denv;
        dr.log_file = log3;
        assert_int_equal(lg_jobpool_start(c.jp, &wr, on_started, &sl[3], &err), 0);
        assert_int_equal(lg_jobpool_start(c.jp, &dr, on_started, &sl[1], &err), 0);
        run_until_got(&c, &g, 5);
        assert_int_equal(g.status[3], 0);
        assert_true(g.st[3].preimported);
        assert_int_equal(g.status[1], 0);
        assert_true(g.st[1].preimported);
        assert_true(log_shows(log2, "Registered to:"));
        assert_true(log_shows(log2, "Local Directory: /tmp/from-env/"));
        assert_true(log_shows(log1, "executor-0"));
        /* Every thread of it back at our priority (it was made at +10). */
        assert_true(tasks_at_nice(g.st[3].id, getpriority(PRIO_PROCESS, 0)) > 0);
        /* The driver waited for the executor, then ran the script. */
        wait_exit(g.st[1].pidfd);
        assert_true(log_shows(log3, "answer 42 ['/job/app.py', 'a', 'b']"));
        lg_agent_req dst = {0};
        assert_int_equal(lg_agent_status(c.agent, &dst, g.st[1].id, noted), 0);
        agent_wait(&c);
        assert_int_equal(dst.out.exited, 1);
        assert_int_equal(dst.out.status.code, 0);
        destroy(&c, g.st[1].id);
        destroy(&c, g.st[3].id);
        destroy(&c, g.st[2].id);
        teardown(&c);
        assert_int_equal(count_warm_logs(), 0);
        assert_int_equal(net_stat(net, false), 0);
}

/* A pre-imported executor that dies before its imports are done (here:
 * runtimes without the worker) is never ready: the pool says why and
 * backs off; nothing of it is left. */
static void test_dask_broken(void **state) {
        (void) state;
        static struct ctx c;
        setup(&c, NULL); /* the test's runtimes: a marker file, no worker */
        struct lg_error err = {0};
        assert_int_equal(lg_jobpool_set_dask(c.jp, "dask", NULL, 1, &err), 0);
        uint64_t t0 = lg_now_ns();
        char last[300] = "";
        while (!last[0]) {
                assert_true(lg_now_ns() - t0 < 120ull * 1000000000);
                uv_run(&c.loop, UV_RUN_ONCE);
                json_t *a = lg_jobpool_json(c.jp);
                snprintf(last, sizeof(last), "%s", json_string_value(json_object_get(json_array_get(a, 0), "lastError")));
                json_decref(a);
        }
        assert_non_null(strstr(last, "ended before it was ready"));
        assert_int_equal(pool_field(&c, "dask", "readyNow"), 0);
        assert_int_equal(pool_field(&c, "dask", "made"), 0);
        teardown(&c);
        assert_int_equal(count_warm_logs(), 0);
}

/* ---- hostile input ---------------------------------------------------------------- */

static void test_hostile(void **state) {
        (void) state;
        static struct ctx c; /* not on the stack: net_teardown frees it after a failure */
        setup(&c, NULL);
        struct lg_error err = {0};
        const char *bad_names[] = {"", "Upper", "a/b", "-a", "a-", "a b", "\x01",
                                   "a123456789012345678901234567890123456789012345678901234567890123"};
        for (size_t i = 0; i < ARRAY_SIZE(bad_names); i++)
                assert_int_equal(lg_jobpool_set(c.jp, bad_names[i], NULL, 1, &err), -EINVAL);
        assert_int_equal(lg_jobpool_set(c.jp, NULL, NULL, 1, &err), -EINVAL);
        const char *layers[] = {"/nonexistent", "relative"};
        struct lg_jobpool_rootfs no_layers = {.image_id = "img"}, no_image = {.layers = layers, .n_layers = 1},
                                 rel = {.image_id = "img", .layers = layers, .n_layers = 2};
        assert_int_equal(lg_jobpool_set(c.jp, "p", &no_layers, 1, &err), -EINVAL);
        assert_int_equal(lg_jobpool_set(c.jp, "p", &no_image, 1, &err), -EINVAL);
        assert_int_equal(lg_jobpool_set(c.jp, "p", &rel, 1, &err), -EINVAL);
        assert_int_equal(lg_jobpool_delete(c.jp, "p"), -ENOENT);
        assert_int_equal(lg_jobpool_delete(c.jp, NULL), -ENOENT);
        json_t *a = lg_jobpool_json(c.jp);
        assert_int_equal(json_array_size(a), 0);
        json_decref(a);

        struct got g = {0};
        struct slot sl = {&g, 0};
        const char *ok_argv[] = {"/bin/true", NULL}, *null_argv[] = {NULL}, *empty_argv[] = {"", NULL};
        const char *bad_env[] = {"NOEQUALS", NULL}, *bad_env2[] = {"=x", NULL};
        char long_host[80];
        memset(long_host, 'h', 64);
        long_host[64] = '\0';
        struct lg_jobpool_role good = {.argv = ok_argv};
        struct lg_jobpool_role roles[16];
        int want[16], n = 0;
        roles[n] = good, roles[n].argv = NULL, want[n++] = -EINVAL;
        roles[n] = good, roles[n].argv = null_argv, want[n++] = -EINVAL;
        roles[n] = good, roles[n].argv = empty_argv, want[n++] = -EINVAL;
        roles[n] = good, roles[n].envp = bad_env, want[n++] = -EINVAL;
        roles[n] = good, roles[n].envp = bad_env2, want[n++] = -EINVAL;
        roles[n] = good, roles[n].files_dir = "relative/dir", want[n++] = -EINVAL;
        roles[n] = good, roles[n].files_dir = "/a/../../etc", want[n++] = -EINVAL;
        roles[n] = good, roles[n].cwd = "job", want[n++] = -EINVAL;
        roles[n] = good, roles[n].log_file = "x.log", want[n++] = -EINVAL;
        roles[n] = good, roles[n].hostname = "", want[n++] = -EINVAL;
        roles[n] = good, roles[n].hostname = long_host, want[n++] = -EINVAL;
        roles[n] = good, roles[n].rootfs = no_layers, want[n++] = -EINVAL;
        roles[n] = good, roles[n].network = true, roles[n].net_namespace = "tenant", want[n++] = -EOPNOTSUPP;
        for (int i = 0; i < n; i++) {
                err = (struct lg_error){0};
                assert_int_equal(lg_jobpool_start(c.jp, &roles[i], on_started, &sl, &err), want[i]);
                assert_true(err.msg[0] != '\0');
        }
        assert_int_equal(lg_jobpool_start(c.jp, &good, NULL, NULL, &err), -EINVAL);
        assert_int_equal(lg_jobpool_start(c.jp, NULL, on_started, &sl, &err), -EINVAL);
        uv_run(&c.loop, UV_RUN_NOWAIT);
        assert_int_equal(g.n, 0);
        assert_int_equal(count_sandboxes(state_root), 0);
        teardown(&c);

        /* And with networking on, bad tenant names. */
        lg_net *net = net_up();
        setup(&c, net);
        const char *bad_ns[] = {NULL, "", "Tenant", "a/b", "x\n"};
        for (size_t i = 0; i < ARRAY_SIZE(bad_ns); i++) {
                struct lg_jobpool_role r = good;
                r.network = true;
                r.net_namespace = bad_ns[i];
                assert_int_equal(lg_jobpool_start(c.jp, &r, on_started, &sl, &err), -EINVAL);
        }
        struct lg_jobpool_role r = good;
        r.network = true;
        r.net_namespace = "tenant";
        r.net_policy = "bad policy";
        assert_int_equal(lg_jobpool_start(c.jp, &r, on_started, &sl, &err), -EINVAL);
        uv_run(&c.loop, UV_RUN_NOWAIT);
        assert_int_equal(g.n, 0);
        teardown(&c);

        struct lg_jobpool_config cfg = {.loop = &c.loop};
        lg_jobpool *jp = NULL;
        assert_int_equal(lg_jobpool_new(&cfg, &jp, &err), -EINVAL);
        assert_int_equal(lg_jobpool_new(NULL, &jp, &err), -EINVAL);
        lg_jobpool_free(NULL);
}

static void write_file(const char *dir, const char *name, const char *data) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        assert_int_equal(lg_write_file_at(AT_FDCWD, path, data, true), 0);
}

int main(void) {
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: job pool tests need root (namespaces, cgroups, mounts)\n");
                return 77;
        }
        snprintf(base, sizeof(base), "/tmp/lg-test-jobpool-%d", (int) getpid());
        snprintf(agent_root, sizeof(agent_root), "%s/agent", base);
        snprintf(state_root, sizeof(state_root), "%s/job-sandboxes", base);
        snprintf(files_dir, sizeof(files_dir), "%s/files", base);
        snprintf(runtimes_dir, sizeof(runtimes_dir), "%s/runtimes", base);
        snprintf(logs_dir, sizeof(logs_dir), "%s/logs", base);
        snprintf(parent, sizeof(parent), "legion-test-%d", (int) getpid());
        /* 10.203.0.0/16 is no other test's: a /28 of it per process. */
        unsigned n = (unsigned) getpid();
        snprintf(net_table, sizeof(net_table), "lg_test_jobpool_%u", n);
        snprintf(net_prefix, sizeof(net_prefix), "lgj%c%c", 'a' + n % 26, 'a' + n / 26 % 26);
        snprintf(net_addr_prefix, sizeof(net_addr_prefix), "10.203.%u.", n % 256);
        snprintf(net_cidr, sizeof(net_cidr), "10.203.%u.%u/28", n % 256, n / 256 % 16 * 16);
        setenv("LEGION_CGROUP_PARENT", parent, 0);
        lg_mkdir_p(files_dir, 0755);
        lg_mkdir_p(runtimes_dir, 0755);
        lg_mkdir_p(logs_dir, 0755);
        chmod(base, 0755);
        chmod(files_dir, 0777); /* writable to anyone: only the mount is read-only */
        write_file(files_dir, "hello.txt", "hello job\n");
        write_file(runtimes_dir, "marker", "");
        write_file(files_dir, "app.py",
                   "import sys\nfrom distributed import Client\nc = Client()\n"
                   "print('answer', c.submit(lambda x: x + 1, 41).result(), sys.argv[1:] and sys.argv)\nc.close()\n");
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_teardown(test_fill_take_on_demand, net_teardown),
                cmocka_unit_test_teardown(test_free_while_making, net_teardown),
                cmocka_unit_test_teardown(test_net, net_teardown),
                cmocka_unit_test_teardown(test_dask_preimported, net_teardown),
                cmocka_unit_test_teardown(test_dask_broken, net_teardown),
                cmocka_unit_test_teardown(test_hostile, net_teardown),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        /* What a failed test left running (pre-imported executors are
         * started and detachable, and this process is still their owner,
         * so sandbox_cleanup would not take them). */
        char dir[400];
        snprintf(dir, sizeof(dir), "%s/sandboxes", state_root);
        DIR *d = opendir(dir);
        for (struct dirent *de; d && (de = readdir(d));) {
                lg_sandbox *sb = NULL;
                if (de->d_name[0] != '.' && lg_sandbox_adopt(state_root, de->d_name, &sb, NULL) >= 0)
                        lg_sandbox_destroy(sb);
        }
        if (d)
                closedir(d);
        sandbox_cleanup(state_root, NULL, parent);
        sandbox_cleanup(agent_root, base, parent);
        return r;
}
