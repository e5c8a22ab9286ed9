/* netbench: the network attach of src/net, timed, against the same attach
 * done by `ip` and `nft` processes (what a CNI plugin run by exec, or a
 * script, costs). Run by bench/net/run.sh.
 *
 *   netbench attach [-n N] [-r ROUNDS] [-w WARMUP] [-b 10,1000] TABLE PREFIX CIDR
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
 * hold: the same lg_net, a namespace "bench" with egress on, one attached
 * network namespace; prints "PID IP" and waits for EOF on stdin (the
 * throughput part downloads from inside it with nsenter), then cleans up.
 *
 * Every invocation removes its table, links and namespaces at the end
 * (lg_net_teardown), also after a failure. Root only. */
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net/net.h"
#include "lib/stats.h"

extern char **environ;

#define SETTLE_MS 300
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

enum { C_LGNET, C_PER_STEP, C_BATCH, NCONF };
static const char *const conf_names[NCONF] = {"lg_net", "ip-per-step", "ip-batch"};
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
                (conf == C_PER_STEP ? peer_per_step : peer_batch)(c);
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
        struct lg_net_namespace ns = {0};
        struct lg_net_policy pol = {.egress = egress ? LG_NET_EGRESS_ON : LG_NET_EGRESS_OFF};
        if (lg_net_namespace_set(net, NS_NAME, &ns, &pol, &err) < 0) {
                lg_net_teardown(net, NULL);
                die("lg_net_namespace_set", &err);
        }
        return net;
}

static lg_net *the_net;
static void teardown(void) {
        if (!the_net)
                return;
        struct lg_error err = {0};
        if (lg_net_teardown(the_net, &err) < 0)
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
        struct child *bg = NULL;
        long n_bg = 0;
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
                if (!nb)
                        die("realloc", NULL);
                bg = nb;
                double tb = now_s();
                for (; n_bg < level; n_bg++) {
                        double dummy[NSTEP];
                        if (child_new(&bg[n_bg]) < 0)
                                die("a network namespace for the background", NULL);
                        attach_one(the_net, C_LGNET, &bg[n_bg], dummy);
                }
                double fill_s = now_s() - tb;
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
                if (lg_net_stats(the_net, &st, &err) < 0)
                        die("lg_net_stats", &err);
                printf("%s{\"background\": %ld, \"fill_s\": %.3f, \"rules\": %u, \"rules_nft\": %ld, "
                       "\"elements\": %u, \"links\": %u, \"addresses_used\": %u, \"configs\": {",
                       first_level ? "" : ", ", level, fill_s, st.rules, nft_rules(), st.elements, st.links,
                       st.addresses_used);
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
        free(bg);
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

int main(int argc, char **argv) {
        /* Killed: the children die with us (PR_SET_PDEATHSIG) and their
         * veths with their namespaces; bench/net/run.sh removes the table. */
        signal(SIGPIPE, SIG_IGN);
        if (argc >= 2 && !strcmp(argv[1], "attach"))
                return cmd_attach(argc - 1, argv + 1);
        if (argc >= 2 && !strcmp(argv[1], "hold"))
                return cmd_hold(argc - 1, argv + 1);
        fputs("usage: netbench attach|hold ...\n", stderr);
        return 2;
}
