/* How fast job roles start (src/jobs/jobpool.h), root: lg_jobpool_start's
 * start_ns (call -> workload started) from a warm pool and on demand,
 * one at a time (p50, p99), and a wave of N at once (the time until the
 * last one started, and each one's start_ns), with what a real role has:
 * its files bound at /job, the runtimes, memory and CPU limits, and with
 * --net an address on a network of its own (nft table lg_bench_jobpool,
 * links lgbj*, 10.202.18.0/26) assigned to a tenant. Prints one line per
 * figure. Usage:
 *   jobpool-bench [--rounds R] [--wave N] [--net] [--no-files] [--mode warm|demand|both]
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
        int got, failed;
        uint64_t start_ns[1024];
        char ids[1024][LG_AGENT_ID_MAX];
        bool warm[1024];
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
                snprintf(b->ids[b->got], LG_AGENT_ID_MAX, "%s", s->id);
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

int main(int argc, char **argv) {
        int rounds = 50, n = 16;
        bool use_net = false;
        bool files = true;
        const char *mode = "both";
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
                else {
                        fprintf(stderr, "usage: %s [--rounds R] [--wave N] [--net] [--no-files] [--mode warm|demand|both]\n",
                                argv[0]);
                        return 2;
                }
        }
        if (rounds < 1 || rounds > 1000 || n < 1 || n > 40) {
                fprintf(stderr, "rounds 1..1000, wave 1..40\n");
                return 2;
        }
        static struct bench b;
        snprintf(b.base, sizeof(b.base), "/tmp/lg-bench-jobpool-%d", (int) getpid());
        snprintf(b.agent_root, sizeof(b.agent_root), "%s/agent", b.base);
        snprintf(b.state_root, sizeof(b.state_root), "%s/job-sandboxes", b.base);
        snprintf(b.files, sizeof(b.files), "%s/files", b.base);
        snprintf(b.runtimes, sizeof(b.runtimes), "%s/runtimes", b.base);
        char parent[64];
        snprintf(parent, sizeof(parent), "legion-bench-jobpool-%d", (int) getpid());
        setenv("LEGION_CGROUP_PARENT", parent, 0);
        lg_mkdir_p(b.files, 0755);
        lg_mkdir_p(b.runtimes, 0755);
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
                                        .runtimes_dir = b.runtimes};
        CHECK(lg_jobpool_new(&cfg, &b.jp, &err), "jobpool", &err);
        bool w = strcmp(mode, "demand") != 0, d = strcmp(mode, "warm") != 0;
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
