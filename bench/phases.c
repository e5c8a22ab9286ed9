/* phases: where a sandbox run's time goes, through the library itself.
 *
 *   phases [-n N] [-w WARMUP] [-l LABEL] [--net-host] [--no-seccomp]
 *          [--limits] [--rootfs DIR] [--net TABLE,PREFIX,CIDR] -- CMD [ARGS...]
 *
 * Each of N runs is what `legion sandbox run` does after its own start-up,
 * timed step by step with CLOCK_MONOTONIC:
 *   create   lg_sandbox_create: state dir, uid range, cgroups, user
 *            namespace helper, clone, rootfs, namespaces, seccomp, up to
 *            "ready" (the first process waits just before exec)
 *   start    lg_sandbox_start: until legion-init has been executed
 *   wait     lg_sandbox_wait: legion-init forks and execs the workload, the
 *            workload runs and exits, legion-init reports and exits
 *   destroy  lg_sandbox_destroy: cgroups removed, state removed
 * --limits sets memory 128M and pids 64 (so the sandbox gets cgroups, as
 * `--memory 128M --pids 64`). --net gives each sandbox a network from
 * src/net as the node agent does (one lg_net made before the runs, with its
 * own nft table, link prefix and CIDR, and a namespace "bench" with egress
 * on): lg_net_reserve before lg_sandbox_create (the address and the
 * gateway as nameserver go into the spec, for /etc/hosts and
 * /etc/resolv.conf), lg_net_attach in the spec's net_hook, lg_net_assign
 * after it (all counted in create), lg_net_release after the destroy
 * (counted in destroy); the table and links are removed at the end. Without --rootfs the sandbox uses the
 * host-rootfs mode. stdio is
 * /dev/null; the workload must exit 0.
 *
 * Prints one JSON object: for each phase and the total, p50/p90/p99/mean in
 * milliseconds, and every run's figures in microseconds ("raw_us", in run
 * order) for merging batches. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/net.h"
#include "sandbox/sandbox.h"
#include "lib/stats.h"

enum { P_CREATE, P_START, P_WAIT, P_DESTROY, P_TOTAL, NP };
static const char *const names[NP] = {"create", "start", "wait", "destroy", "total"};

/* The net_hook: the reserved address's veth into the new namespace. */
struct net_run {
        lg_net *net;
        struct lg_net_addr addr;
};

static int net_hook(pid_t pid, void *data, struct lg_error *err) {
        struct net_run *nr = data;
        return lg_net_attach(nr->net, pid, &nr->addr, err);
}

static lg_net *net_open(char *arg) {
        char *save = NULL, *table = strtok_r(arg, ",", &save), *prefix = strtok_r(NULL, ",", &save),
             *cidr = strtok_r(NULL, ",", &save);
        if (!cidr) {
                fputs("phases: --net TABLE,PREFIX,CIDR\n", stderr);
                exit(2);
        }
        struct lg_net_config cfg = {.cidr = cidr, .table = table, .link_prefix = prefix};
        struct lg_error err = {0};
        lg_net *net = NULL;
        struct lg_net_namespace ns = {0};
        struct lg_net_policy pol = {.egress = LG_NET_EGRESS_ON};
        if (lg_net_new(&cfg, &net, &err) < 0 || lg_net_sweep(net, &err) < 0 ||
            lg_net_namespace_set(net, "bench", &ns, &pol, &err) < 0) {
                fprintf(stderr, "phases: network: %s\n", err.msg);
                if (net)
                        (void) lg_net_teardown(net, NULL);
                lg_net_free(net);
                exit(1);
        }
        return net;
}

static void net_close(lg_net *net) {
        struct lg_error err = {0};
        if (net && lg_net_teardown(net, &err) < 0)
                fprintf(stderr, "phases: lg_net_teardown: %s\n", err.msg);
        lg_net_free(net);
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"net-host", no_argument, NULL, 'N'}, {"no-seccomp", no_argument, NULL, 'S'},
                {"rootfs", required_argument, NULL, 'r'}, {"limits", no_argument, NULL, 'L'},
                {"net", required_argument, NULL, 'P'},
                {0, 0, 0, 0},
        };
        long n = 100, warmup = 5;
        const char *label = "", *rootfs = NULL;
        bool net_host = false, no_seccomp = false, limits = false;
        char *net_arg = NULL;
        int c;
        while ((c = getopt_long(argc, argv, "+n:w:l:", opts, NULL)) != -1) {
                switch (c) {
                case 'n': n = strtol(optarg, NULL, 10); break;
                case 'w': warmup = strtol(optarg, NULL, 10); break;
                case 'l': label = optarg; break;
                case 'N': net_host = true; break;
                case 'S': no_seccomp = true; break;
                case 'r': rootfs = optarg; break;
                case 'L': limits = true; break;
                case 'P': net_arg = optarg; break;
                default:
                        fputs("usage: phases [-n N] [-w W] [-l LABEL] [--net-host] [--no-seccomp] "
                              "[--limits] [--rootfs DIR] [--net TABLE,PREFIX,CIDR] -- CMD [ARGS...]\n", stderr);
                        return 2;
                }
        }
        if (n < 1 || optind >= argc) {
                fputs("phases: no command\n", stderr);
                return 2;
        }
        lg_net *net = net_arg ? net_open(net_arg) : NULL;
        double *t[NP] = {0};
        int rc = 1;
        for (int p = 0; p < NP; p++)
                if (!(t[p] = calloc((size_t) n, sizeof(double))))
                        goto fail;

        for (long i = -warmup; i < n; i++) {
                struct lg_sandbox_spec spec;
                lg_sandbox_spec_init(&spec);
                const char *layers[] = {rootfs};
                if (rootfs) {
                        spec.layers = layers;
                        spec.n_layers = 1;
                }
                spec.share_net = net_host;
                spec.no_seccomp = no_seccomp;
                if (limits) {
                        spec.memory_bytes = 128ull << 20;
                        spec.pids_max = 64;
                }
                spec.argv = (const char *const *) argv + optind;
                struct net_run nr = {.net = net};
                struct lg_error err = {0};
                lg_sandbox *sb = NULL;
                struct lg_sandbox_status st = {0};

                double a = now_s();
                if (net) {
                        if (lg_net_reserve(net, &nr.addr, &err) < 0) {
                                fprintf(stderr, "phases: reserve: %s\n", err.msg);
                                goto fail;
                        }
                        spec.net_hook = net_hook;
                        spec.net_hook_data = &nr;
                        spec.net_address = nr.addr.ip;
                        spec.nameserver = lg_net_gateway(net);
                }
                if (lg_sandbox_create(&spec, &sb, &err) < 0 ||
                    (net && lg_net_assign(net, nr.addr.ip, "bench", NULL, &err) < 0)) {
                        fprintf(stderr, "phases: create: %s\n", err.msg);
                        lg_sandbox_destroy(sb);
                        goto fail;
                }
                double b = now_s();
                if (lg_sandbox_start(sb, &err) < 0) {
                        fprintf(stderr, "phases: start: %s\n", err.msg);
                        lg_sandbox_destroy(sb);
                        goto fail;
                }
                double c2 = now_s();
                int r = lg_sandbox_wait(sb, &st);
                double d = now_s();
                if (r < 0 || st.kind != LG_EXIT_CODE || st.code != 0) {
                        fprintf(stderr, "phases: workload did not exit 0 (r=%d kind=%d code=%d signal=%d)\n",
                                r, (int) st.kind, st.code, st.signal);
                        lg_sandbox_destroy(sb);
                        goto fail;
                }
                if (lg_sandbox_destroy(sb) < 0) {
                        fprintf(stderr, "phases: destroy failed\n");
                        goto fail;
                }
                if (net && lg_net_release(net, &nr.addr, &err) < 0) {
                        fprintf(stderr, "phases: release: %s\n", err.msg);
                        goto fail;
                }
                double e = now_s();
                if (i < 0)
                        continue;
                t[P_CREATE][i] = b - a;
                t[P_START][i] = c2 - b;
                t[P_WAIT][i] = d - c2;
                t[P_DESTROY][i] = e - d;
                t[P_TOTAL][i] = e - a;
        }

        printf("{\"label\": \"%s\", \"n\": %ld, \"rootfs\": %s, \"net_host\": %s, \"no_seccomp\": %s, "
               "\"limits\": %s, \"net\": %s",
               label, n, rootfs ? "true" : "false", net_host ? "true" : "false",
               no_seccomp ? "true" : "false", limits ? "true" : "false", net ? "true" : "false");
        printf(", \"raw_us\": {");
        for (int p = 0; p < NP; p++) {
                printf("%s\"%s\": [", p ? ", " : "", names[p]);
                for (long i = 0; i < n; i++)
                        printf("%s%.1f", i ? ", " : "", t[p][i] * 1e6);
                printf("]");
        }
        printf("}");
        for (int p = 0; p < NP; p++) {
                double sum = 0;
                for (long i = 0; i < n; i++)
                        sum += t[p][i];
                qsort(t[p], (size_t) n, sizeof(double), bench_cmp_double);
                printf(", \"%s\": {\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"mean_ms\": %.4f}",
                       names[p], t[p][bench_rank((size_t) n, 50)] * 1e3, t[p][bench_rank((size_t) n, 90)] * 1e3,
                       t[p][bench_rank((size_t) n, 99)] * 1e3, sum / (double) n * 1e3);
        }
        printf("}\n");
        rc = 0;
fail:
        for (int p = 0; p < NP; p++)
                free(t[p]);
        net_close(net);
        return rc;
}
