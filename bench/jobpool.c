/* How fast job roles start (src/jobs/jobpool.h), root: lg_jobpool_start's
 * start_ns (call -> workload started) from a warm pool and on demand,
 * one at a time (p50, p99), and a wave of N at once (the time until the
 * last one started, and each one's start_ns), with what a real role has:
 * its files bound at /job, the runtimes, memory and CPU limits, and with
 * --net an address on a network of its own (nft table lg_bench_jobpool,
 * links lgbj*, 10.202.18.0/26) assigned to a tenant; --no-files: without
 * the files (what their bind costs). Prints one line per figure.
 *
 * --dask RUNTIMES (the repository's runtimes/; needs --net): N Dask
 * executors registered with a dask-scheduler made on demand, the time
 * from the first start to the scheduler's N-th "Register worker", with
 * the executors from a pool of pre-imported ones, from a plain warm pool
 * and on demand, interleaved, R rounds. Usage:
 *   jobpool-bench [--rounds R] [--wave N] [--net] [--no-files] [--mode warm|demand|both]
 *   jobpool-bench --net --dask RUNTIMES [--rounds R] [--wave N]
 * (LEGION_INIT must name legion-init, as for the tests.) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/jobpool.h"

struct bench {
        uv_loop_t loop;
        lg_net *net;
        lg_agent *agent;
        lg_jobpool *jp;
        char base[256], agent_root[300], state_root[300], files[300], runtimes[300];
        bool no_files;
        char logs[300];
        int got, failed;
        uint64_t start_ns[1024];
        char ids[1024][LG_AGENT_ID_MAX];
        char addrs[1024][64];
        bool warm[1024], pre[1024];
};

static void die(const char *what, const struct lg_error *err) {
        fprintf(stderr, "jobpool-bench: %s: %s\n", what, err ? err->msg : "");
        exit(1);
}
#define CHECK(r, what, err) \
        do { if ((r) < 0) die(what, err); } while (0)

static void on_started(int status, const struct lg_jobpool_started *s, const struct lg_error *err, void *ud) {
        struct bench *b = ud;
        if (status < 0) {
                fprintf(stderr, "start failed: %s\n", err->msg);
                b->failed++;
        } else {
                b->start_ns[b->got] = s->start_ns;
                b->warm[b->got] = s->warm;
                b->pre[b->got] = s->preimported;
                snprintf(b->ids[b->got], LG_AGENT_ID_MAX, "%s", s->id);
                snprintf(b->addrs[b->got], sizeof(b->addrs[0]), "%s", s->address);
        }
        b->got++;
}

static long long ready_now(struct bench *b) {
        json_t *a = lg_jobpool_json(b->jp);
        long long v = json_integer_value(json_object_get(json_array_get(a, 0), "readyNow"));
        json_decref(a);
        return v;
}

static void wait_ready(struct bench *b, long long n) {
        while (ready_now(b) < n)
                uv_run(&b->loop, UV_RUN_ONCE);
}

static void destroy_all(struct bench *b, int n) {
        for (int i = 0; i < n; i++)
                if (b->ids[i][0])
                        lg_agent_destroy(b->agent, NULL, b->ids[i], NULL);
        while (lg_agent_pending(b->agent))
                uv_run(&b->loop, UV_RUN_ONCE);
        memset(b->ids, 0, sizeof(b->ids));
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

/* Nearest rank. */
static double pct(uint64_t *v, int n, double p) {
        qsort(v, (size_t) n, sizeof(*v), cmp_u64);
        int k = (int) (p / 100.0 * n + 0.999999);
        if (k < 1)
                k = 1;
        if (k > n)
                k = n;
        return v[k - 1] / 1e6;
}

static const char *argv_sleep[] = {"/bin/sleep", "100000", NULL};
static const char *envp[] = {"PATH=/usr/bin:/bin", "LEGION_ROLE=executor", NULL};

static void role(struct bench *b, struct lg_jobpool_role *r) {
        *r = (struct lg_jobpool_role){.argv = argv_sleep, .envp = envp, .files_dir = b->no_files ? NULL : b->files,
                                      .runtimes_dir = b->runtimes, .cpu_millis = 1000, .memory_bytes = 256ull << 20,
                                      .network = b->net != NULL, .net_namespace = b->net ? "tenant" : NULL};
}

static void start_n(struct bench *b, int n) {
        struct lg_error err = {0};
        struct lg_jobpool_role r;
        role(b, &r);
        b->got = b->failed = 0;
        for (int i = 0; i < n; i++)
                CHECK(lg_jobpool_start(b->jp, &r, on_started, b, &err), "start", &err);
        while (b->got < n)
                uv_run(&b->loop, UV_RUN_ONCE);
        if (b->failed)
                die("a start failed", NULL);
}

/* One at a time: rounds starts, each from a full pool (warm) or with no
 * pool (on demand), destroyed before the next. */
static void singles(struct bench *b, bool warm, int rounds) {
        struct lg_error err = {0};
        CHECK(lg_jobpool_set(b->jp, "default", NULL, warm ? 4 : 0, &err), "pool", &err);
        uint64_t v[1024];
        int nwarm = 0;
        for (int i = 0; i < rounds; i++) {
                if (warm)
                        wait_ready(b, 4);
                start_n(b, 1);
                v[i] = b->start_ns[0];
                nwarm += b->warm[0];
                destroy_all(b, 1);
        }
        double p50 = pct(v, rounds, 50), p99 = pct(v, rounds, 99), max = v[rounds - 1] / 1e6;
        printf("single %-9s n=%d warm=%d p50=%.1fms p99=%.1fms max=%.1fms\n", warm ? "warm" : "on-demand", rounds,
               nwarm, p50, p99, max);
}

/* n at once: the time until the last started, and each one's start_ns. */
static void wave(struct bench *b, bool warm, int n) {
        struct lg_error err = {0};
        CHECK(lg_jobpool_set(b->jp, "default", NULL, warm ? (unsigned) n : 0, &err), "pool", &err);
        if (warm)
                wait_ready(b, n);
        uint64_t t0 = lg_now_ns();
        start_n(b, n);
        double all = (lg_now_ns() - t0) / 1e6;
        uint64_t v[1024];
        int nwarm = 0;
        for (int i = 0; i < n; i++)
                v[i] = b->start_ns[i], nwarm += b->warm[i];
        double p50 = pct(v, n, 50), p99 = pct(v, n, 99);
        printf("wave   %-9s n=%d warm=%d all-started=%.1fms each p50=%.1fms p99=%.1fms\n", warm ? "warm" : "on-demand",
               n, nwarm, all, p50, p99);
        /* The pool must not refill into the next measure. */
        CHECK(lg_jobpool_set(b->jp, "default", NULL, 0, &err), "pool", &err);
        destroy_all(b, n);
}

/* ---- --dask ---------------------------------------------------------------------- */

static int count_in(const char *file, const char *s) {
        static char buf[1 << 20];
        _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        if (n <= 0)
                return 0;
        buf[n] = '\0';
        int c = 0;
        for (char *p = buf; (p = strstr(p, s)); p += strlen(s))
                c++;
        return c;
}

/* ms from t0 until file holds n times s. Blocks the loop: nothing else
 * is under way meanwhile. */
static double wait_count(const char *file, const char *s, int n, uint64_t t0) {
        for (int i = 0; i < 24000; i++) {
                if (count_in(file, s) >= n)
                        return (lg_now_ns() - t0) / 1e6;
                usleep(5000);
        }
        fprintf(stderr, "jobpool-bench: %s: %d of %d `%s` after 120 s\n", file, count_in(file, s), n, s);
        exit(1);
}

static const char *dask_env[] = {"PATH=/usr/bin:/bin", "HOME=/tmp", "PYTHONPATH=/job", NULL};

static void dask_round(struct bench *b, const char *arm, int n, int round) {
        struct lg_error err = {0};
        bool pre = !strcmp(arm, "preimported"), warm = strcmp(arm, "on-demand") != 0;
        /* The scheduler first, on demand (the pool is empty). */
        CHECK(lg_jobpool_set(b->jp, "default", NULL, 0, &err), "pool", &err);
        char slog[400], addr[80];
        snprintf(slog, sizeof(slog), "%s/%s-%d-scheduler.log", b->logs, arm, round);
        const char *sched[] = {"dask-scheduler", "--host", "0.0.0.0", "--port", "8786", "--no-dashboard", NULL};
        struct lg_jobpool_role r = {.argv = sched, .envp = dask_env, .files_dir = b->files, .log_file = slog,
                                    .runtimes_dir = b->runtimes, .cpu_millis = 1000, .memory_bytes = 1ull << 30,
                                    .network = true, .net_namespace = "tenant"};
        b->got = b->failed = 0;
        memset(b->ids, 0, sizeof(b->ids));
        CHECK(lg_jobpool_start(b->jp, &r, on_started, b, &err), "scheduler", &err);
        while (b->got < 1)
                uv_run(&b->loop, UV_RUN_ONCE);
        if (b->failed)
                die("the scheduler did not start", NULL);
        char sched_id[LG_AGENT_ID_MAX];
        snprintf(sched_id, sizeof(sched_id), "%s", b->ids[0]);
        snprintf(addr, sizeof(addr), "tcp://%s:8786", b->addrs[0]);
        wait_count(slog, "Scheduler at:", 1, lg_now_ns());
        /* The arm's pool, full before the clock starts. */
        CHECK(pre ? lg_jobpool_set_dask(b->jp, "default", NULL, (unsigned) n, &err)
                  : lg_jobpool_set(b->jp, "default", NULL, warm ? (unsigned) n : 0, &err),
              "pool", &err);
        if (warm)
                wait_ready(b, n);
        char names[64][16], logs[64][400];
        uint64_t t0 = lg_now_ns();
        b->got = b->failed = 0;
        memset(b->ids, 0, sizeof(b->ids));
        for (int i = 0; i < n; i++) {
                snprintf(names[i], sizeof(names[i]), "executor-%d", i);
                snprintf(logs[i], sizeof(logs[i]), "%s/%s-%d-executor-%d.log", b->logs, arm, round, i);
                const char *wargv[] = {"dask-worker", addr, "--name", names[i], "--nthreads", "1",
                                       "--memory-limit", "268435456", "--no-nanny", "--no-dashboard",
                                       "--death-timeout", "30", "--local-directory", "/tmp", NULL};
                struct lg_jobpool_role wr = r;
                wr.argv = wargv;
                wr.log_file = logs[i];
                wr.memory_bytes = 512ull << 20;
                CHECK(lg_jobpool_start(b->jp, &wr, on_started, b, &err), "executor", &err);
        }
        while (b->got < n)
                uv_run(&b->loop, UV_RUN_ONCE);
        if (b->failed)
                die("an executor did not start", NULL);
        double started = (lg_now_ns() - t0) / 1e6;
        int npre = 0, nwarm = 0;
        for (int i = 0; i < n; i++)
                npre += b->pre[i], nwarm += b->warm[i];
        double all = wait_count(slog, "Register worker", n, t0);
        printf("dask   %-11s round=%d n=%d warm=%d preimported=%d all-started=%.0fms all-registered=%.0fms\n", arm,
               round, n, nwarm, npre, started, all);
        fflush(stdout);
        CHECK(lg_jobpool_set(b->jp, "default", NULL, 0, &err), "pool", &err);
        destroy_all(b, n);
        lg_agent_destroy(b->agent, NULL, sched_id, NULL);
        while (lg_agent_pending(b->agent))
                uv_run(&b->loop, UV_RUN_ONCE);
}

int main(int argc, char **argv) {
        int rounds = 50, n = 16;
        bool use_net = false;
        bool files = true;
        const char *mode = "both", *dask = NULL;
        for (int i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
                        rounds = atoi(argv[++i]);
                else if (!strcmp(argv[i], "--wave") && i + 1 < argc)
                        n = atoi(argv[++i]);
                else if (!strcmp(argv[i], "--mode") && i + 1 < argc)
                        mode = argv[++i];
                else if (!strcmp(argv[i], "--no-files"))
                        files = false;
                else if (!strcmp(argv[i], "--net"))
                        use_net = true;
                else if (!strcmp(argv[i], "--dask") && i + 1 < argc)
                        dask = argv[++i];
                else {
                        fprintf(stderr,
                                "usage: %s [--rounds R] [--wave N] [--net] [--no-files] [--mode warm|demand|both]\n"
                                "       %s --net --dask RUNTIMES [--rounds R] [--wave N]\n",
                                argv[0], argv[0]);
                        return 2;
                }
        }
        if (rounds < 1 || rounds > 1000 || n < 1 || n > 40 || (dask && (!use_net || n > 32))) {
                fprintf(stderr, "rounds 1..1000, wave 1..40 (--dask: 1..32, with --net)\n");
                return 2;
        }
        static struct bench b;
        snprintf(b.base, sizeof(b.base), "/tmp/lg-bench-jobpool-%d", (int) getpid());
        snprintf(b.agent_root, sizeof(b.agent_root), "%s/agent", b.base);
        snprintf(b.state_root, sizeof(b.state_root), "%s/job-sandboxes", b.base);
        snprintf(b.files, sizeof(b.files), "%s/files", b.base);
        snprintf(b.runtimes, sizeof(b.runtimes), "%s/runtimes", b.base);
        snprintf(b.logs, sizeof(b.logs), "%s/logs", b.base);
        char parent[64];
        snprintf(parent, sizeof(parent), "legion-bench-jobpool-%d", (int) getpid());
        setenv("LEGION_CGROUP_PARENT", parent, 0);
        lg_mkdir_p(b.files, 0755);
        lg_mkdir_p(b.runtimes, 0755);
        if (dask)
                snprintf(b.runtimes, sizeof(b.runtimes), "%s", dask);
        chmod(b.base, 0755);
        b.no_files = !files;
        struct lg_error err = {0};
        uv_loop_init(&b.loop);
        if (use_net) {
                struct lg_net_config cfg = {.cidr = "10.202.18.0/26", .table = "lg_bench_jobpool", .link_prefix = "lgbj"};
                CHECK(lg_net_new(&cfg, &b.net, &err), "network", &err);
                struct lg_net_namespace ns = {0};
                struct lg_net_policy on = {.egress = LG_NET_EGRESS_ON};
                CHECK(lg_net_namespace_set(b.net, "tenant", &ns, &on, &err), "namespace", &err);
        }
        CHECK(lg_agent_local_new(&b.loop, b.agent_root, b.net, &b.agent, &err), "agent", &err);
        struct lg_jobpool_config cfg = {.loop = &b.loop, .agent = b.agent, .net = b.net, .state_root = b.state_root,
                                        .runtimes_dir = b.runtimes, .logs_dir = b.logs};
        CHECK(lg_jobpool_new(&cfg, &b.jp, &err), "jobpool", &err);
        bool w = strcmp(mode, "demand") != 0 && !dask, d = strcmp(mode, "warm") != 0 && !dask;
        for (int i = 0; dask && i < rounds; i++) {
                dask_round(&b, "preimported", n, i);
                dask_round(&b, "warm", n, i);
                dask_round(&b, "on-demand", n, i);
        }
        if (w)
                singles(&b, true, rounds);
        if (d)
                singles(&b, false, rounds);
        if (w)
                wave(&b, true, n);
        if (d)
                wave(&b, false, n);
        lg_jobpool_free(b.jp);
        lg_agent_free(b.agent);
        uv_run(&b.loop, UV_RUN_NOWAIT);
        uv_loop_close(&b.loop);
        if (b.net) {
                lg_net_teardown(b.net, &err);
                lg_net_free(b.net);
        }
        if (getenv("JOBPOOL_BENCH_KEEP")) /* the logs, to look at */
                fprintf(stderr, "kept %s\n", b.base);
        else
                lg_rm_rf(b.base);
        char path[128];
        snprintf(path, sizeof(path), "/sys/fs/cgroup/%s", parent);
        rmdir(path);
        const char *ctl[] = {"memory", "cpu", "cpuacct", "pids", "freezer", "cpuset", "blkio", "devices", "systemd"};
        for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++) {
                snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/%s", ctl[i], parent);
                rmdir(path);
        }
        return 0;
}
