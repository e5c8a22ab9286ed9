/* netbench: the network attach of src/net, timed, against the same attach
 * done by `ip` and `nft` processes (what a CNI plugin run by exec, or a
 * script, costs). Run by bench/net/run.sh.
 *
 *   netbench attach [-n N] [-r ROUNDS] [-w WARMUP] [-b 10,1000] TABLE PREFIX CIDR
 *   netbench pair [-t SECONDS] [-r ROUNDS] TABLE PREFIX CIDR
 *   netbench hold TABLE PREFIX CIDR
 *
 * attach: one lg_net (its own nft table, link prefix and CIDR); for each
 * background level B, B network namespaces attached and assigned and left
 * so, then N attaches of each configuration on fresh namespaces, in ROUNDS
 * interleaved batches (the order alternates by round):
 *   lg_net        lg_net_reserve + lg_net_attach + lg_net_assign, timed
 *                 each, in this process (as the node agent does it)
 *   ip-per-step   one process per step: `ip link add ... type veth peer
 *                 name eth0 netns PID`, addrgenmode, up and the /32 route
 *                 on the host end, then through `nsenter -t PID -n ip`:
 *                 addrgenmode, the address, up, the gateway's permanent
 *                 neighbour, its onlink route, the default route; then
 *                 `nft -f -` adding the sandbox's three set elements
 *   ip-batch      the same steps in three processes: `ip -batch -`,
 *                 `nsenter -t PID -n ip -batch -`, `nft -f -`
 *   ip-batch-bridge  a bridge instead: the same three processes, the host
 *                 end enslaved to `<prefix>br` (the gateway as /16 on it),
 *                 eth0 with ip/16 and the default route via the gateway
 * The background at each level is B routed (lg_net) and B bridged
 * (ip-batch-bridge) namespaces, the bridged ones fewer where the bridge's
 * port limit would refuse the timed batch's.
 * The peers' address comes from lg_net_reserve, untimed (a CNI IPAM
 * plugin's is one more process). "Fresh namespace" is a child process
 * that unshare(CLONE_NEWNET)s and waits; it is made before its batch and
 * killed after it (the kernel's network namespace teardown is deferred and
 * would otherwise land in the timed runs: a pause of SETTLE_MS follows).
 * lg_net_release of each lg_net attach (the namespace still alive) is
 * timed too, apart. At each level, after the batches: the table's rule
 * count, from lg_net_stats and independently from `nft -j list table`,
 * and its set elements. Prints one JSON object.
 *
 * pair: in a network namespace of its own (standing for the host, gone
 * when we exit; its bridge-nf-call-iptables is ours to switch), one
 * lg_net and the bridge; two sandboxes attached by lg_net (routed), two
 * by ip-batch-bridge, all in one namespace. A TCP server in the first of
 * each pair; from the second, ROUNDS interleaved rounds (after a short
 * untimed one) of SECONDS of 64-byte request/response, then SECONDS of
 * a one-way stream: routed, bridged with bridge-nf-call-iptables 0 (a
 * host without br_netfilter: bridged frames never reach the inet
 * hooks) and 1. Then the namespace isolates its sandboxes from each
 * other, and each pair's connect is tried again. Prints one JSON object.
 *
 * hold: the same lg_net, a namespace "bench" with egress on, one attached
 * network namespace; prints "PID IP" and waits for EOF on stdin (the
 * throughput part downloads from inside it with nsenter), then cleans up.
 *
 * Every invocation removes its table, links and namespaces at the end
 * (lg_net_teardown), also after a failure. Root only. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net/net.h"
#include "lib/stats.h"

extern char **environ;

#define SETTLE_MS 300
#define BRIDGE_MAX_PORTS 1023
#define NS_NAME "bench"
/* What the peers put in the table's maps: any namespace mark and policy
 * id do for timing (the table is ours). */
#define PEER_MARK "0x4c000001"
#define PEER_POLICY "0x00000001"
/* The host end's MAC, as src/net gives it (net-internal.h). */
#define HOST_MAC "ee:ee:ee:ee:ee:ee"

static const char *table, *prefix;

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void die(const char *what, const struct lg_error *err) {
        fprintf(stderr, "netbench: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
        exit(1);
}

/* ---- fresh network namespaces: children that wait ---------------------- */

struct child {
        pid_t pid;
        int fd; /* write end: closing it lets the child exit */
        struct lg_net_addr addr;
        bool attached, peer;
};

static int child_new(struct child *c) {
        int p[2], ready[2];
        if (pipe2(p, O_CLOEXEC) < 0 || pipe2(ready, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                /* Only our own pipe ends: another child holding this one's
                 * write end would keep it waiting. */
                if (dup2(p[0], 3) < 0 || dup2(ready[1], 4) < 0 || close_range(5, ~0U, 0) < 0)
                        _exit(1);
                char b = unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
                if (write(4, &b, 1) != 1)
                        _exit(1);
                close(4);
                while (read(3, &b, 1) > 0)
                        ;
                _exit(0);
        }
        close(p[0]);
        close(ready[1]);
        char b = 0;
        ssize_t n = read(ready[0], &b, 1);
        close(ready[0]);
        *c = (struct child) {.pid = pid, .fd = p[1]};
        return n == 1 && b == 'y' ? 0 : -EIO;
}

static void child_end(struct child *c) {
        if (c->pid <= 0)
                return;
        close(c->fd);
        waitpid(c->pid, NULL, 0);
        c->pid = 0;
}

/* ---- the peers: ip and nft processes ----------------------------------- */

/* Run argv with stdin from `in` (NULL = /dev/null), output discarded (kept
 * for the error message); it must exit 0. */
static void run(const char *const *argv, const char *in) {
        int inp[2] = {-1, -1};
        char outpath[] = "/tmp/netbench-out-XXXXXX";
        int out = mkstemp(outpath);
        if (out < 0)
                die("mkstemp", NULL);
        unlink(outpath);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        if (in) {
                if (pipe(inp) < 0)
                        die("pipe", NULL);
                size_t len = strlen(in);
                if (write(inp[1], in, len) != (ssize_t) len) /* well under a pipe's buffer */
                        die("write to pipe", NULL);
                close(inp[1]);
                posix_spawn_file_actions_adddup2(&fa, inp[0], 0);
                posix_spawn_file_actions_addclose(&fa, inp[0]);
        } else {
                posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        }
        posix_spawn_file_actions_adddup2(&fa, out, 1);
        posix_spawn_file_actions_adddup2(&fa, out, 2);
        pid_t pid;
        int r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *) argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (in)
                close(inp[0]);
        int st = 0;
        if (r != 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                char buf[2048] = "";
                ssize_t n = pread(out, buf, sizeof(buf) - 1, 0);
                buf[n > 0 ? n : 0] = '\0';
                fprintf(stderr, "netbench: `");
                for (const char *const *a = argv; *a; a++)
                        fprintf(stderr, "%s%s", a == argv ? "" : " ", *a);
                fprintf(stderr, "` failed (status %d): %s%s%s\n", st, buf, in ? "\nstdin:\n" : "", in ? in : "");
                exit(1);
        }
        close(out);
}

static void nft_elements(const char *ip, const char *verb) {
        char in[1024];
        snprintf(in, sizeof(in),
                 "%s element inet %s ns_of { %s : " PEER_MARK " }\n"
                 "%s element inet %s ns_members { " PEER_MARK " . %s }\n"
                 "%s element inet %s policy_of { %s : " PEER_POLICY " }\n",
                 verb, table, ip, verb, table, ip, verb, table, ip);
        run((const char *const[]) {"nft", "-f", "-", NULL}, in);
}

static void peer_per_step(const struct child *c) {
        const char *h = c->addr.host_if, *ip = c->addr.ip;
        char pid[16], ip32[32];
        snprintf(pid, sizeof(pid), "%d", (int) c->pid);
        snprintf(ip32, sizeof(ip32), "%s/32", ip);
#define NS "nsenter", "-t", pid, "-n", "ip"
        run((const char *const[]) {"ip", "link", "add", h, "address", HOST_MAC, "type", "veth", "peer",
                                   "name", "eth0", "netns", pid, NULL}, NULL);
        run((const char *const[]) {"ip", "link", "set", "dev", h, "addrgenmode", "none", NULL}, NULL);
        run((const char *const[]) {"ip", "link", "set", "dev", h, "up", NULL}, NULL);
        run((const char *const[]) {"ip", "route", "add", ip32, "dev", h, "scope", "link", NULL}, NULL);
        run((const char *const[]) {NS, "link", "set", "dev", "eth0", "addrgenmode", "none", NULL}, NULL);
        run((const char *const[]) {NS, "addr", "add", ip32, "dev", "eth0", NULL}, NULL);
        run((const char *const[]) {NS, "link", "set", "dev", "eth0", "up", NULL}, NULL);
        run((const char *const[]) {NS, "neigh", "add", "169.254.1.1", "lladdr", HOST_MAC, "dev", "eth0",
                                   "nud", "permanent", NULL}, NULL);
        run((const char *const[]) {NS, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link", NULL}, NULL);
        run((const char *const[]) {NS, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", NULL}, NULL);
#undef NS
        nft_elements(ip, "add");
}

static void peer_batch(const struct child *c) {
        const char *h = c->addr.host_if, *ip = c->addr.ip;
        char pid[16], in[1024];
        snprintf(pid, sizeof(pid), "%d", (int) c->pid);
        snprintf(in, sizeof(in),
                 "link add %s address " HOST_MAC " type veth peer name eth0 netns %s\n"
                 "link set dev %s addrgenmode none\n"
                 "link set dev %s up\n"
                 "route add %s/32 dev %s scope link\n",
                 h, pid, h, h, ip, h);
        run((const char *const[]) {"ip", "-batch", "-", NULL}, in);
        snprintf(in, sizeof(in),
                 "link set dev eth0 addrgenmode none\n"
                 "addr add %s/32 dev eth0\n"
                 "link set dev eth0 up\n"
                 "neigh add 169.254.1.1 lladdr " HOST_MAC " dev eth0 nud permanent\n"
                 "route add 169.254.1.1 dev eth0 scope link\n"
                 "route add default via 169.254.1.1 dev eth0\n",
                 ip);
        run((const char *const[]) {"nsenter", "-t", pid, "-n", "ip", "-batch", "-", NULL}, in);
        nft_elements(ip, "add");
}

/* A bridge instead of routed /32s: the host end is a port of the bridge
 * `<prefix>br`, which holds the gateway as /16 (bridge_new); eth0 has
 * ip/16 and the default route via the gateway. Same tool, same number of
 * processes and the same set elements as peer_batch. */
static char gateway[LG_NET_IP_MAX], bridge[32];

static void peer_bridge(const struct child *c) {
        const char *h = c->addr.host_if, *ip = c->addr.ip;
        char pid[16], in[1024];
        snprintf(pid, sizeof(pid), "%d", (int) c->pid);
        snprintf(in, sizeof(in),
                 "link add %s type veth peer name eth0 netns %s\n"
                 "link set dev %s addrgenmode none\n"
                 "link set dev %s master %s\n"
                 "link set dev %s up\n",
                 h, pid, h, h, bridge, h);
        run((const char *const[]) {"ip", "-batch", "-", NULL}, in);
        snprintf(in, sizeof(in),
                 "link set dev eth0 addrgenmode none\n"
                 "addr add %s/16 dev eth0\n"
                 "link set dev eth0 up\n"
                 "route add default via %s dev eth0\n",
                 ip, gateway);
        run((const char *const[]) {"nsenter", "-t", pid, "-n", "ip", "-batch", "-", NULL}, in);
        nft_elements(ip, "add");
}

/* The bridge of peer_bridge, untimed: its gateway is the CIDR's first
 * address (as lg_net's). */
static void bridge_new(const char *cidr) {
        char net[64];
        snprintf(net, sizeof(net), "%s", cidr);
        char *slash = strchr(net, '/');
        if (slash)
                *slash = '\0';
        struct in_addr a;
        if (inet_pton(AF_INET, net, &a) != 1)
                die("the CIDR", NULL);
        a.s_addr = htonl(ntohl(a.s_addr) + 1);
        inet_ntop(AF_INET, &a, gateway, sizeof(gateway));
        snprintf(bridge, sizeof(bridge), "%sbr", prefix);
        char in[512];
        snprintf(in, sizeof(in),
                 "link add %s type bridge\n"
                 "link set dev %s addrgenmode none\n"
                 "addr add %s/16 dev %s\n"
                 "link set dev %s up\n",
                 bridge, bridge, gateway, bridge, bridge);
        run((const char *const[]) {"ip", "-batch", "-", NULL}, in);
}

/* From atexit too: no die() here. */
static void bridge_del(void) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "ip link del %s 2>/dev/null", bridge);
        if (bridge[0] && system(cmd) != 0)
                fprintf(stderr, "netbench: `%s` failed\n", cmd);
        bridge[0] = '\0';
}

/* ---- the table's size ---------------------------------------------------- */

/* Rules in the table as `nft -j list table` shows them: independent of
 * lg_net_stats. */
static long nft_rules(void) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "nft -j list table inet %s", table);
        FILE *f = popen(cmd, "r");
        if (!f)
                return -1;
        long n = 0;
        size_t cap = 1 << 20, len = 0;
        char *buf = malloc(cap);
        size_t got;
        while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
                len += got;
                if (len + 1 == cap) {
                        char *nb = realloc(buf, cap *= 2);
                        if (!nb)
                                break;
                        buf = nb;
                }
        }
        if (pclose(f) != 0 || !buf) {
                free(buf);
                return -1;
        }
        buf[len] = '\0';
        for (const char *p = buf; (p = strstr(p, "{\"rule\":")); p++)
                n++;
        free(buf);
        return n;
}

/* ---- attach ----------------------------------------------------------------- */

enum { C_LGNET, C_PER_STEP, C_BATCH, C_BRIDGE, NCONF };
static const char *const conf_names[NCONF] = {"lg_net", "ip-per-step", "ip-batch", "ip-batch-bridge"};
enum { S_RESERVE, S_ATTACH, S_ASSIGN, NSTEP };
static const char *const step_names[NSTEP] = {"reserve", "attach", "assign"};
/* Per configuration: the steps, their total, and (lg_net, untimed in the
 * total) the release of a live namespace's address. */
enum { T_TOTAL = NSTEP, T_RELEASE, NT };

static void print_summary(const char *name, double *v, long n) {
        double sum = 0;
        for (long i = 0; i < n; i++)
                sum += v[i];
        qsort(v, (size_t) n, sizeof(double), bench_cmp_double);
        printf("\"%s\": {\"n\": %ld, \"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"mean_ms\": %.4f, "
               "\"max_ms\": %.4f}",
               name, n, v[bench_rank((size_t) n, 50)] * 1e3, v[bench_rank((size_t) n, 90)] * 1e3,
               v[bench_rank((size_t) n, 99)] * 1e3, sum / (double) n * 1e3, v[n - 1] * 1e3);
}

/* Returns the seconds lg_net_release took. */
static double release(lg_net *net, struct child *c) {
        struct lg_error err = {0};
        if (c->peer)
                nft_elements(c->addr.ip, "delete");
        double a = now_s();
        if (c->addr.ip[0] && lg_net_release(net, &c->addr, &err) < 0)
                die("lg_net_release", &err);
        double t = now_s() - a;
        c->addr.ip[0] = '\0';
        c->attached = c->peer = false;
        return t;
}

/* One attach of configuration conf on c, fresh; step times into t. */
static void attach_one(lg_net *net, int conf, struct child *c, double t[NSTEP]) {
        struct lg_error err = {0};
        if (conf != C_LGNET) {
                if (lg_net_reserve(net, &c->addr, &err) < 0)
                        die("lg_net_reserve", &err);
                c->peer = true;
                double a = now_s();
                (conf == C_PER_STEP ? peer_per_step : conf == C_BATCH ? peer_batch : peer_bridge)(c);
                t[S_RESERVE] = t[S_ASSIGN] = 0;
                t[S_ATTACH] = now_s() - a;
                return;
        }
        double a = now_s();
        if (lg_net_reserve(net, &c->addr, &err) < 0)
                die("lg_net_reserve", &err);
        double b = now_s();
        if (lg_net_attach(net, c->pid, &c->addr, &err) < 0)
                die("lg_net_attach", &err);
        double d = now_s();
        if (lg_net_assign(net, c->addr.ip, NS_NAME, NULL, &err) < 0)
                die("lg_net_assign", &err);
        double e = now_s();
        c->attached = true;
        t[S_RESERVE] = b - a;
        t[S_ATTACH] = d - b;
        t[S_ASSIGN] = e - d;
}

static void sleep_ms(long ms) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
}

static lg_net *net_open(const char *cidr, bool egress) {
        struct lg_net_config cfg = {.cidr = cidr, .table = table, .link_prefix = prefix};
        struct lg_error err = {0};
        lg_net *net = NULL;
        if (lg_net_new(&cfg, &net, &err) < 0)
                die("lg_net_new", &err);
        if (lg_net_sweep(net, &err) < 0) /* nothing to adopt here */
                die("lg_net_sweep", &err);
        struct lg_net_namespace ns = {0};
        struct lg_net_policy pol = {.egress = egress ? LG_NET_EGRESS_ON : LG_NET_EGRESS_OFF};
        if (lg_net_namespace_set(net, NS_NAME, &ns, &pol, &err) < 0) {
                lg_net_teardown(net, NULL);
                die("lg_net_namespace_set", &err);
        }
        return net;
}

static lg_net *the_net;
static void bridge_del(void);

/* lg_net_stats, again while it fails with EPROTO: its link dump is
 * interrupted (NLM_F_DUMP_INTR) while the kernel still removes the
 * veths of the batch's namespaces, a deferred teardown that takes longer
 * with a bridge's ports among them. */
static int stats_settled(struct lg_net_stats *st, struct lg_error *err) {
        int r = -EPROTO;
        for (int i = 0; i < 20 && (r = lg_net_stats(the_net, st, err)) == -EPROTO; i++)
                sleep_ms(SETTLE_MS);
        return r;
}
static void teardown(void) {
        bridge_del();
        if (!the_net)
                return;
        struct lg_error err = {0};
        /* As stats_settled: the link dump may be interrupted while the
         * kernel removes namespaces' veths. */
        int r = -EPROTO;
        for (int i = 0; i < 20 && (r = lg_net_teardown(the_net, &err)) == -EPROTO; i++)
                sleep_ms(SETTLE_MS);
        if (r < 0)
                fprintf(stderr, "netbench: lg_net_teardown: %s\n", err.msg);
        lg_net_free(the_net);
        the_net = NULL;
}

static int cmd_attach(int argc, char **argv) {
        long n = 200, rounds = 10, warmup = 3;
        char levels_s[256] = "10,1000";
        int c;
        while ((c = getopt(argc, argv, "+n:r:w:b:")) != -1) {
                switch (c) {
                case 'n': n = strtol(optarg, NULL, 10); break;
                case 'r': rounds = strtol(optarg, NULL, 10); break;
                case 'w': warmup = strtol(optarg, NULL, 10); break;
                case 'b': snprintf(levels_s, sizeof(levels_s), "%s", optarg); break;
                default: return 2;
                }
        }
        if (argc - optind != 3 || n < 1 || rounds < 1 || rounds > n || warmup < 0) {
                fputs("usage: netbench attach [-n N] [-r ROUNDS] [-w WARMUP] [-b 10,1000] TABLE PREFIX CIDR\n", stderr);
                return 2;
        }
        table = argv[optind];
        prefix = argv[optind + 1];
        const char *cidr = argv[optind + 2];
        long per_round = (n + rounds - 1) / rounds;
        n = per_round * rounds;

        the_net = net_open(cidr, true);
        atexit(teardown);
        bridge_new(cidr);
        /* The background: at each level, that many routed (lg_net) and
         * as many bridged (ports of the bridge) namespaces. */
        struct child *bg = NULL, *bgb = NULL;
        long n_bg = 0, n_bgb = 0;
        /* A Linux bridge has at most BRIDGE_MAX_PORTS ports (BR_MAX_PORTS,
         * port 0 reserved; one more is refused with EXFULL): the bridged
         * background stops short of that by the timed batch's ports. */
        long bgb_max = BRIDGE_MAX_PORTS - (per_round + warmup);
        struct child *fresh = calloc((size_t) (per_round + warmup), sizeof(*fresh));
        double *t[NCONF][NT];
        for (int k = 0; k < NCONF; k++)
                for (int s = 0; s < NT; s++)
                        if (!(t[k][s] = calloc((size_t) n, sizeof(double))))
                                die("calloc", NULL);
        if (!fresh)
                die("calloc", NULL);
        struct lg_error err = {0};
        struct lg_net_stats st0;
        if (lg_net_stats(the_net, &st0, &err) < 0)
                die("lg_net_stats", &err);

        printf("{\"table\": \"%s\", \"prefix\": \"%s\", \"cidr\": \"%s\", \"n\": %ld, \"rounds\": %ld, "
               "\"warmup\": %ld, \"settle_ms\": %d, \"empty\": {\"rules\": %u, \"rules_nft\": %ld, \"elements\": %u}, "
               "\"levels\": [",
               table, prefix, cidr, n, rounds, warmup, SETTLE_MS, st0.rules, nft_rules(), st0.elements);
        char *save = NULL;
        bool first_level = true;
        for (char *tok = strtok_r(levels_s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                long level = strtol(tok, NULL, 10);
                if (level < n_bg)
                        die("background levels must grow", NULL);
                struct child *nb = realloc(bg, (size_t) level * sizeof(*bg) + 1);
                struct child *nbb = realloc(bgb, (size_t) level * sizeof(*bgb) + 1);
                if (!nb || !nbb)
                        die("realloc", NULL);
                bg = nb;
                bgb = nbb;
                double tb = now_s(), fill_s = 0;
                for (; n_bg < level; n_bg++) {
                        double dummy[NSTEP];
                        if (child_new(&bg[n_bg]) < 0)
                                die("a network namespace for the background", NULL);
                        attach_one(the_net, C_LGNET, &bg[n_bg], dummy);
                        fill_s += now_s() - tb;
                        if (n_bgb < bgb_max) {
                                if (child_new(&bgb[n_bgb]) < 0)
                                        die("a network namespace for the background", NULL);
                                attach_one(the_net, C_BRIDGE, &bgb[n_bgb++], dummy);
                        }
                        tb = now_s();
                }
                fprintf(stderr, "netbench: %ld attached network namespaces in the background (%.1f s to add)\n",
                        level, fill_s);
                sleep_ms(SETTLE_MS);
                for (long r = 0; r < rounds; r++) {
                        for (int j = 0; j < NCONF; j++) {
                                int k = (int) ((r % 2 ? NCONF - 1 - j : j) % NCONF);
                                long nb_fresh = per_round + (r == 0 ? warmup : 0);
                                for (long i = 0; i < nb_fresh; i++)
                                        if (child_new(&fresh[i]) < 0)
                                                die("a fresh network namespace", NULL);
                                for (long i = 0; i < nb_fresh; i++) {
                                        double st[NSTEP];
                                        attach_one(the_net, k, &fresh[i], st);
                                        long w = r == 0 ? i - warmup : i;
                                        if (w < 0)
                                                continue;
                                        long idx = r * per_round + w;
                                        for (int s = 0; s < NSTEP; s++)
                                                t[k][s][idx] = st[s];
                                        t[k][T_TOTAL][idx] = st[S_RESERVE] + st[S_ATTACH] + st[S_ASSIGN];
                                }
                                for (long i = 0; i < nb_fresh; i++) {
                                        double rt = release(the_net, &fresh[i]);
                                        long w = r == 0 ? i - warmup : i;
                                        if (w >= 0)
                                                t[k][T_RELEASE][r * per_round + w] = rt;
                                        child_end(&fresh[i]);
                                }
                                sleep_ms(SETTLE_MS);
                        }
                        fprintf(stderr, "netbench: %ld in the background: round %ld/%ld done\n", level, r + 1,
                                rounds);
                }
                struct lg_net_stats st;
                if (stats_settled(&st, &err) < 0)
                        die("lg_net_stats", &err);
                printf("%s{\"background\": %ld, \"bridged_background\": %ld, \"bridge_max_ports\": %d, "
                       "\"fill_s\": %.3f, \"rules\": %u, \"rules_nft\": %ld, "
                       "\"elements\": %u, \"links\": %u, \"addresses_used\": %u, \"configs\": {",
                       first_level ? "" : ", ", level, n_bgb, BRIDGE_MAX_PORTS, fill_s, st.rules, nft_rules(),
                       st.elements, st.links, st.addresses_used);
                first_level = false;
                for (int k = 0; k < NCONF; k++) {
                        printf("%s\"%s\": {", k ? ", " : "", conf_names[k]);
                        print_summary("total", t[k][T_TOTAL], n);
                        if (k == C_LGNET) {
                                for (int s = 0; s < NSTEP; s++) {
                                        printf(", ");
                                        print_summary(step_names[s], t[k][s], n);
                                }
                                printf(", ");
                                print_summary("release", t[k][T_RELEASE], n);
                        }
                        printf("}");
                }
                printf("}}");
                fflush(stdout);
        }
        printf("]}\n");
        /* The background's veths go with their namespaces (the kernel
         * batches that), the rest with the table: quicker than 1,000
         * releases, each of which waits for its link's deletion. */
        for (long i = 0; i < n_bg; i++)
                child_end(&bg[i]);
        for (long i = 0; i < n_bgb; i++)
                child_end(&bgb[i]);
        free(bg);
        free(bgb);
        free(fresh);
        for (int k = 0; k < NCONF; k++)
                for (int s = 0; s < NT; s++)
                        free(t[k][s]);
        return 0;
}

/* ---- hold ----------------------------------------------------------------- */

static int cmd_hold(int argc, char **argv) {
        if (argc != 4) {
                fputs("usage: netbench hold TABLE PREFIX CIDR\n", stderr);
                return 2;
        }
        table = argv[1];
        prefix = argv[2];
        the_net = net_open(argv[3], true);
        atexit(teardown);
        struct child c;
        double st[NSTEP];
        if (child_new(&c) < 0)
                die("a network namespace", NULL);
        attach_one(the_net, C_LGNET, &c, st);
        printf("%d %s\n", (int) c.pid, c.addr.ip);
        fflush(stdout);
        char b;
        while (read(0, &b, 1) > 0)
                ;
        release(the_net, &c);
        child_end(&c);
        return 0;
}


/* ---- pair: sandbox to sandbox, routed and bridged ------------------------- */

#define PAIR_PORT 7011
#define RR_BYTES 64
#define STREAM_CHUNK (128 * 1024)

static void enter_netns(pid_t pid) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int) pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
                die("setns", NULL);
        close(fd);
}

static int full_io(int fd, void *buf, size_t len, bool wr) {
        for (size_t done = 0; done < len;) {
                ssize_t n = wr ? write(fd, (char *) buf + done, len - done) : read(fd, (char *) buf + done, len - done);
                if (n <= 0)
                        return -1;
                done += (size_t) n;
        }
        return 0;
}

/* A server in the network namespace of pid, on ip:PAIR_PORT: per
 * connection, the first byte says what: 'r' echoes RR_BYTES messages
 * until EOF; 's' reads until EOF and answers the byte count (8 bytes).
 * Killed by the caller. */
static pid_t server_start(pid_t ns_pid, const char *ip) {
        int ready[2];
        if (pipe(ready) < 0)
                die("pipe", NULL);
        pid_t pid = fork();
        if (pid < 0)
                die("fork", NULL);
        if (pid > 0) {
                close(ready[1]);
                char b = 0;
                if (read(ready[0], &b, 1) != 1 || b != 'y')
                        die("the server did not start", NULL);
                close(ready[0]);
                return pid;
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(ready[0]);
        enter_netns(ns_pid);
        int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PAIR_PORT)};
        inet_pton(AF_INET, ip, &sa.sin_addr);
        setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ls < 0 || bind(ls, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(ls, 8) < 0)
                _exit(1);
        if (write(ready[1], "y", 1) != 1)
                _exit(1);
        close(ready[1]);
        static char buf[STREAM_CHUNK];
        for (;;) {
                int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                char mode = 0;
                if (read(c, &mode, 1) == 1 && mode == 'r') {
                        while (full_io(c, buf, RR_BYTES, false) == 0 && full_io(c, buf, RR_BYTES, true) == 0)
                                ;
                } else if (mode == 's') {
                        uint64_t total = 0;
                        ssize_t n;
                        while ((n = read(c, buf, sizeof(buf))) > 0)
                                total += (uint64_t) n;
                        if (full_io(c, &total, sizeof(total), true) < 0)
                                _exit(1);
                }
                close(c);
        }
}

struct pair_result {
        double *rr; /* seconds per request/response */
        long n_rr, cap_rr;
        double bytes, stream_s;
        bool ok;
};

/* A client in a forked process in the namespace of from_pid, so that
 * netbench itself stays in its own: runs mode for secs seconds against
 * ip and writes its samples into a pipe. Connect failures count as
 * "not reached" (ok = false), not as a benchmark failure. */
static int client_connect(const char *ip, char mode, double timeout_s) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PAIR_PORT)};
        inet_pton(AF_INET, ip, &sa.sin_addr);
        struct timeval tv = {(time_t) timeout_s, 0};
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (c < 0 || connect(c, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -1;
        struct timeval none = {0, 0};
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none));
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (write(c, &mode, 1) != 1) {
                close(c);
                return -1;
        }
        return c;
}

static void pair_run(pid_t from_pid, const char *ip, double secs, struct pair_result *res) {
        int p[2];
        if (pipe(p) < 0)
                die("pipe", NULL);
        pid_t pid = fork();
        if (pid < 0)
                die("fork", NULL);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                close(p[0]);
                enter_netns(from_pid);
                static char buf[STREAM_CHUNK];
                /* Request/response: one RR_BYTES message each way. */
                int c = client_connect(ip, 'r', 2);
                if (c < 0)
                        _exit(3);
                double end = now_s() + secs;
                for (double a = now_s(); a < end;) {
                        if (full_io(c, buf, RR_BYTES, true) < 0 || full_io(c, buf, RR_BYTES, false) < 0)
                                _exit(1);
                        double b = now_s();
                        double d = b - a;
                        if (write(p[1], &d, sizeof(d)) != sizeof(d))
                                _exit(1);
                        a = b;
                }
                close(c);
                /* Stream: as much as fits in secs, then the server's count. */
                if ((c = client_connect(ip, 's', 2)) < 0)
                        _exit(3);
                double a = now_s();
                end = a + secs;
                uint64_t sent = 0, got = 0;
                while (now_s() < end) {
                        if (full_io(c, buf, sizeof(buf), true) < 0)
                                _exit(1);
                        sent += sizeof(buf);
                }
                shutdown(c, SHUT_WR);
                if (full_io(c, &got, sizeof(got), false) < 0 || got != sent)
                        _exit(1);
                double s[2] = {-1, now_s() - a};
                s[0] = -(double) got; /* negative: the stream's bytes, then its seconds */
                if (write(p[1], s, sizeof(s)) != sizeof(s))
                        _exit(1);
                _exit(0);
        }
        close(p[1]);
        double d;
        bool stream = false;
        while (read(p[0], &d, sizeof(d)) == sizeof(d)) {
                if (d < 0 && !stream) {
                        res->bytes += -d;
                        stream = true;
                        continue;
                }
                if (stream) {
                        res->stream_s += d;
                        continue;
                }
                if (res->n_rr == res->cap_rr) {
                        res->cap_rr = res->cap_rr ? 2 * res->cap_rr : 65536;
                        if (!(res->rr = realloc(res->rr, (size_t) res->cap_rr * sizeof(double))))
                                die("realloc", NULL);
                }
                res->rr[res->n_rr++] = d;
        }
        close(p[0]);
        int st;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 3))
                die("the client failed", NULL);
        res->ok = WEXITSTATUS(st) == 0;
}

/* Can from reach ip:PAIR_PORT now (a TCP connect within 1 s)? */
static bool reaches(pid_t from_pid, const char *ip) {
        pid_t pid = fork();
        if (pid < 0)
                die("fork", NULL);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                enter_netns(from_pid);
                _exit(client_connect(ip, 'x', 1) < 0 ? 1 : 0);
        }
        int st;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void write_sysctl(const char *path, const char *v) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, v, strlen(v)) != (ssize_t) strlen(v))
                die(path, NULL);
        close(fd);
}

static bool read_sysctl(const char *path) {
        char b = '0';
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && read(fd, &b, 1) != 1)
                b = '0';
        if (fd >= 0)
                close(fd);
        return b == '1';
}

#define BRNF "/proc/sys/net/bridge/bridge-nf-call-iptables"

static int cmd_pair(int argc, char **argv) {
        double secs = 1;
        long rounds = 3;
        int c;
        while ((c = getopt(argc, argv, "+t:r:")) != -1) {
                switch (c) {
                case 't': secs = strtod(optarg, NULL); break;
                case 'r': rounds = strtol(optarg, NULL, 10); break;
                default: return 2;
                }
        }
        if (argc - optind != 3 || secs <= 0 || rounds < 1) {
                fputs("usage: netbench pair [-t SECONDS] [-r ROUNDS] TABLE PREFIX CIDR\n", stderr);
                return 2;
        }
        table = argv[optind];
        prefix = argv[optind + 1];
        const char *cidr = argv[optind + 2];
        /* A network namespace of our own as "the host": its bridge-nf
         * switch is ours to turn (the host's stays as it is), and what
         * we make goes with it when we exit. */
        bool host_brnf = read_sysctl(BRNF);
        if (unshare(CLONE_NEWNET) < 0)
                die("unshare(CLONE_NEWNET)", NULL);
        run((const char *const[]) {"ip", "link", "set", "lo", "up", NULL}, NULL);
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
        bool have_brnf = access(BRNF, W_OK) == 0;
        the_net = net_open(cidr, true);
        atexit(teardown);
        bridge_new(cidr);
        struct child r[2], b[2];
        double dummy[NSTEP];
        for (int i = 0; i < 2; i++) {
                if (child_new(&r[i]) < 0 || child_new(&b[i]) < 0)
                        die("a network namespace", NULL);
                attach_one(the_net, C_LGNET, &r[i], dummy);
                attach_one(the_net, C_BRIDGE, &b[i], dummy);
        }
        pid_t srv_r = server_start(r[0].pid, r[0].addr.ip), srv_b = server_start(b[0].pid, b[0].addr.ip);
        enum { P_ROUTED, P_BRIDGE, P_BRIDGE_NF, NP };
        static const char *const names[NP] = {"routed", "bridge", "bridge-brnf"};
        int np = have_brnf ? NP : P_BRIDGE_NF;
        struct pair_result res[NP] = {0};
        for (long round = 0; round <= rounds; round++) { /* round 0: warm-up, not kept */
                for (int j = 0; j < np; j++) {
                        int k = round % 2 ? np - 1 - j : j;
                        if (have_brnf)
                                write_sysctl(BRNF, k == P_BRIDGE_NF ? "1" : "0");
                        struct child *s = k == P_ROUTED ? r : b;
                        struct pair_result warm = {0}, *out = round ? &res[k] : &warm;
                        pair_run(s[1].pid, s[0].addr.ip, round ? secs : secs / 4, out);
                        free(warm.rr);
                        if (!out->ok)
                                die("a sandbox did not reach the other", NULL);
                }
                fprintf(stderr, "netbench: pair round %ld/%ld done\n", round, rounds);
        }
        /* Isolation: the namespace isolating its sandboxes from each other
         * (isolation "sandbox"); does the second still reach the first? */
        struct lg_error err = {0};
        struct lg_net_namespace iso = {.isolate_sandboxes = true};
        struct lg_net_policy pol = {.egress = LG_NET_EGRESS_ON};
        if (lg_net_namespace_set(the_net, NS_NAME, &iso, &pol, &err) < 0)
                die("lg_net_namespace_set", &err);
        bool reach[NP];
        for (int k = 0; k < np; k++) {
                if (have_brnf)
                        write_sysctl(BRNF, k == P_BRIDGE_NF ? "1" : "0");
                struct child *s = k == P_ROUTED ? r : b;
                reach[k] = reaches(s[1].pid, s[0].addr.ip);
        }
        printf("{\"secs\": %g, \"rounds\": %ld, \"rr_bytes\": %d, \"chunk\": %d, \"host_brnf\": %s, "
               "\"brnf_switchable\": %s, \"routed\": [\"%s\", \"%s\"], \"bridged\": [\"%s\", \"%s\"], "
               "\"bridge\": \"%s\", \"gateway\": \"%s\", \"configs\": {",
               secs, rounds, RR_BYTES, STREAM_CHUNK, host_brnf ? "true" : "false", have_brnf ? "true" : "false",
               r[0].addr.ip, r[1].addr.ip, b[0].addr.ip, b[1].addr.ip, bridge, gateway);
        for (int k = 0; k < np; k++) {
                double sum = 0;
                for (long i = 0; i < res[k].n_rr; i++)
                        sum += res[k].rr[i];
                printf("%s\"%s\": {\"rr_per_s\": %.0f, ", k ? ", " : "", names[k],
                       (double) res[k].n_rr / sum);
                print_summary("rr", res[k].rr, res[k].n_rr);
                printf(", \"stream_mb_s\": %.1f, \"stream_bytes\": %.0f, \"reached_when_isolated\": %s}",
                       res[k].bytes / res[k].stream_s / 1e6, res[k].bytes, reach[k] ? "true" : "false");
                free(res[k].rr);
        }
        printf("}}\n");
        kill(srv_r, SIGKILL);
        kill(srv_b, SIGKILL);
        waitpid(srv_r, NULL, 0);
        waitpid(srv_b, NULL, 0);
        for (int i = 0; i < 2; i++) {
                child_end(&r[i]);
                child_end(&b[i]);
        }
        return 0;
}

int main(int argc, char **argv) {
        /* Killed: the children die with us (PR_SET_PDEATHSIG) and their
         * veths with their namespaces; bench/net/run.sh removes the table. */
        signal(SIGPIPE, SIG_IGN);
        if (argc >= 2 && !strcmp(argv[1], "attach"))
                return cmd_attach(argc - 1, argv + 1);
        if (argc >= 2 && !strcmp(argv[1], "pair"))
                return cmd_pair(argc - 1, argv + 1);
        if (argc >= 2 && !strcmp(argv[1], "hold"))
                return cmd_hold(argc - 1, argv + 1);
        fputs("usage: netbench attach|pair|hold ...\n", stderr);
        return 2;
}
