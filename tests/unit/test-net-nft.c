/* Tests for the nftables layer of the sandbox network (src/net/nft.c).
 *
 * Root only. The whole test runs in a network namespace of its own (made
 * at start with unshare), so its table `tnft<pid>`, links and forwarding
 * switch touch nothing of the host's and vanish with the process even if
 * it dies half way. The table is read back with `nft -j list table`.
 *
 * The packet test builds, with `ip`, what net.c builds with netlink: a
 * dummy `tnfs0` holding the gateway 10.252.0.1, sandboxes (child processes
 * in their own network namespaces) on routed /32s behind host ends
 * `tnfs<n>`, and an "upstream" namespace at 198.51.100.1 behind `tnfu0`
 * (its host end must not match the table's link prefix `tnfs`). Probes are
 * TCP connects from inside a sandbox's namespace; servers answer with the
 * source address they saw. A probe expected to fail waits 1 s for an
 * answer a dropped SYN never gets; calibration runs the same probes with
 * no table and sees them succeed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "net/net-internal.h"
#include "netns-kit.h"
#include "test-ok.h"

#define NS_A 0x4c000001u
#define NS_B 0x4c000002u

static char table[32];
static bool skip_all;
static const char *skip_why = "";

static struct lg_nft_config config(void) {
        return (struct lg_nft_config){
                .table = table, .cidr = "10.252.0.0/24", .gateway = "10.252.0.1", .link_prefix = "tnfs"};
}

/* ---- reading the table back with the nft CLI ---- */

static json_t *list_table(void) {
        char c[128];
        snprintf(c, sizeof(c), "nft -j list table inet %s 2>/dev/null", table);
        FILE *f = popen(c, "r");
        assert_non_null(f);
        json_error_t jerr;
        json_t *root = json_loadf(f, 0, &jerr);
        int st = pclose(f);
        if (st != 0) {
                json_decref(root);
                return NULL;
        }
        assert_non_null(root);
        return root;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *) a, *(char *const *) b); }

/* The elements of a set or map, each compact JSON, sorted, joined by ' '
 * ("" when empty; "<no table>" without a table). */
static char *elems(const char *set) {
        json_t *root = list_table();
        if (!root)
                return strdup("<no table>");
        char *parts[4096];
        size_t n = 0, i, j;
        json_t *it, *e;
        json_array_foreach(json_object_get(root, "nftables"), i, it) {
                json_t *s = json_object_get(it, "set");
                if (!s)
                        s = json_object_get(it, "map");
                if (!s || strcmp(json_string_value(json_object_get(s, "name")), set) != 0)
                        continue;
                json_array_foreach(json_object_get(s, "elem"), j, e) {
                        assert_true(n < ARRAY_SIZE(parts));
                        parts[n++] = json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
                }
        }
        json_decref(root);
        qsort(parts, n, sizeof(parts[0]), cmp_str);
        size_t len = 1;
        for (i = 0; i < n; i++)
                len += strlen(parts[i]) + 1;
        char *out = calloc(1, len);
        for (i = 0; i < n; i++) {
                if (i)
                        strcat(out, " ");
                strcat(out, parts[i]);
                free(parts[i]);
        }
        return out;
}

#define ELEMS_EQ(set, want)                          \
        do {                                         \
                char *got_ = elems(set);             \
                assert_string_equal(got_, want);     \
                free(got_);                          \
        } while (0)

/* ---- table contents ---- */

/* Setup and teardown: the table, open (state NULL when skipping). */
static int table_up(void **state) {
        *state = NULL;
        if (skip_all)
                return 0;
        struct lg_error err = {0};
        struct lg_nft_config cfg = config();
        lg_nft *nft = NULL;
        if (lg_nft_open(&cfg, &nft, &err) < 0) {
                fprintf(stderr, "lg_nft_open: %s\n", err.msg);
                return -1;
        }
        *state = nft;
        return 0;
}

static int table_down(void **state) {
        struct lg_error err = {0};
        if (*state && lg_nft_drop_table(*state, &err) < 0)
                fprintf(stderr, "lg_nft_drop_table: %s\n", err.msg);
        lg_nft_close(*state);
        return 0;
}

static void test_open_replaces_table(void **state) {
        (void) state;
        if (skip_all)
                skip();
        struct lg_error err = {0};
        struct lg_nft_config cfg = config();
        lg_nft *nft = NULL;
        OK(lg_nft_open(&cfg, &nft, &err));
        OK(lg_nft_sandbox_add(nft, "10.252.0.9", NS_A, 3, &err));
        /* Something a previous legiond left, in a set and as an extra rule. */
        SH("nft add rule inet %s input counter", table);
        unsigned rules, n;
        OK(lg_nft_count(nft, &rules, &n, &err));
        lg_nft_close(nft);
        nft = NULL;

        OK(lg_nft_open(&cfg, &nft, &err));
        unsigned rules2, n2;
        OK(lg_nft_count(nft, &rules2, &n2, &err));
        assert_int_equal(rules2, rules - 1);
        assert_int_equal(n, 3);
        assert_int_equal(n2, 0);
        ELEMS_EQ("ns_of", "");
        OK(lg_nft_drop_table(nft, &err));
        ELEMS_EQ("ns_of", "<no table>");
        OK(lg_nft_drop_table(nft, &err)); /* gone already: fine */
        lg_nft_close(nft);
}

static void test_bad_config(void **state) {
        (void) state;
        if (skip_all)
                skip();
        struct lg_error err = {0};
        lg_nft *nft = NULL;
        const char *tables[] = {"", "a b", "x; flush ruleset", "1abc", NULL};
        for (size_t i = 0; i < ARRAY_SIZE(tables); i++) {
                struct lg_nft_config cfg = config();
                cfg.table = tables[i];
                assert_int_equal(lg_nft_open(&cfg, &nft, &err), -EINVAL);
        }
        struct lg_nft_config cfg = config();
        cfg.cidr = "10.252.0.1/24"; /* host bits */
        assert_int_equal(lg_nft_open(&cfg, &nft, &err), -EINVAL);
        cfg = config();
        cfg.link_prefix = "a\"*";
        assert_int_equal(lg_nft_open(&cfg, &nft, &err), -EINVAL);
        cfg = config();
        cfg.gateway = "10.252.0.256";
        assert_int_equal(lg_nft_open(&cfg, &nft, &err), -EINVAL);
        ELEMS_EQ("ns_of", "<no table>");
}

static void test_sandbox_elements(void **state) {
        lg_nft *nft = *state;
        if (!nft)
                skip();
        struct lg_error err = {0};

        OK(lg_nft_sandbox_add(nft, "10.252.0.5", NS_A, 7, &err));
        ELEMS_EQ("ns_of", "[\"10.252.0.5\",1275068417]");
        ELEMS_EQ("ns_members", "{\"concat\":[1275068417,\"10.252.0.5\"]}");
        ELEMS_EQ("policy_of", "[\"10.252.0.5\",7]");

        /* Replacing: namespace and policy change, in one call. */
        OK(lg_nft_sandbox_add(nft, "10.252.0.5", NS_B, 8, &err));
        ELEMS_EQ("ns_of", "[\"10.252.0.5\",1275068418]");
        ELEMS_EQ("ns_members", "{\"concat\":[1275068418,\"10.252.0.5\"]}");
        ELEMS_EQ("policy_of", "[\"10.252.0.5\",8]");
        OK(lg_nft_sandbox_add(nft, "10.252.0.5", NS_B, 8, &err)); /* the same again */

        /* No tenant (a warm sandbox): no elements. */
        OK(lg_nft_sandbox_add(nft, "10.252.0.6", 0, 0, &err));
        OK(lg_nft_sandbox_add(nft, "10.252.0.7", NS_A, 0, &err));
        ELEMS_EQ("ns_of", "[\"10.252.0.5\",1275068418] [\"10.252.0.7\",1275068417]");
        ELEMS_EQ("policy_of", "[\"10.252.0.5\",8]");
        OK(lg_nft_sandbox_add(nft, "10.252.0.7", 0, 0, &err));
        ELEMS_EQ("ns_of", "[\"10.252.0.5\",1275068418]");

        OK(lg_nft_sandbox_del(nft, "10.252.0.5", &err));
        OK(lg_nft_sandbox_del(nft, "10.252.0.5", &err)); /* unknown: fine */
        ELEMS_EQ("ns_of", "");
        ELEMS_EQ("ns_members", "");
        ELEMS_EQ("policy_of", "");

        /* Hostile addresses never reach nft. */
        const char *bad[] = {"10.252.0.300", "", "10.252.0.5 } ; flush ruleset", "0.0.0.0", "::1", NULL};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                err.msg[0] = '\0';
                assert_int_equal(lg_nft_sandbox_add(nft, bad[i], NS_A, 1, &err), -EINVAL);
                assert_non_null(strstr(err.msg, "bad sandbox address"));
        }
        ELEMS_EQ("ns_of", "");
}

/* A transaction the kernel refuses half way changes nothing: the third
 * element conflicts with one put there behind the module's back. */
static void test_all_or_nothing(void **state) {
        lg_nft *nft = *state;
        if (!nft)
                skip();
        struct lg_error err = {0};
        OK(lg_nft_sandbox_add(nft, "10.252.0.4", NS_A, 2, &err));
        SH("nft add element inet %s policy_of '{ 10.252.0.5 : 0x63 }'", table);
        err.msg[0] = '\0';
        int r = lg_nft_sandbox_add(nft, "10.252.0.5", NS_A, 2, &err);
        assert_true(r < 0);
        /* One line, nft's own words, nothing printed. */
        assert_non_null(strstr(err.msg, "nft table `tnft"));
        assert_null(strchr(err.msg, '\n'));
        ELEMS_EQ("ns_of", "[\"10.252.0.4\",1275068417]");
        ELEMS_EQ("ns_members", "{\"concat\":[1275068417,\"10.252.0.4\"]}");
        ELEMS_EQ("policy_of", "[\"10.252.0.4\",2] [\"10.252.0.5\",99]");

        /* The module's view did not change either: a later del of .5 has
         * nothing to delete, and .4 still goes whole. */
        OK(lg_nft_sandbox_del(nft, "10.252.0.5", &err));
        OK(lg_nft_sandbox_del(nft, "10.252.0.4", &err));
        ELEMS_EQ("policy_of", "[\"10.252.0.5\",99]");
        ELEMS_EQ("ns_of", "");

        /* A policy whose elements fail half way (one made to conflict). */
        struct lg_net_policy p = {.egress = LG_NET_EGRESS_ALLOW, .n_allow = 2};
        p.allow[0] = (struct lg_net_allow){.addr = 0xC6336400, .prefix_len = 24};            /* 198.51.100.0/24 */
        p.allow[1] = (struct lg_net_allow){.addr = 0xCB007105, .prefix_len = 32, .port_lo = 443, .port_hi = 443};
        SH("nft add element inet %s allow_port '{ 0x5 . 203.0.113.0/24 . 400-500 }'", table);
        assert_true(lg_nft_policy_set(nft, 5, &p, &err) < 0);
        ELEMS_EQ("allow_any", "");
}

static void test_policy_and_namespace_elements(void **state) {
        lg_nft *nft = *state;
        if (!nft)
                skip();
        struct lg_error err = {0};

        struct lg_net_policy on = {.egress = LG_NET_EGRESS_ON}, off = {.egress = LG_NET_EGRESS_OFF};
        OK(lg_nft_policy_set(nft, 1, &on, &err));
        OK(lg_nft_policy_set(nft, 2, &off, &err));
        ELEMS_EQ("egress_on", "1");

        /* Allowlist with overlaps the kernel would refuse as they are. */
        struct lg_net_policy p = {.egress = LG_NET_EGRESS_ALLOW};
        struct lg_net_allow a[] = {
                {.addr = 0x0A000000, .prefix_len = 8, .port_lo = 80, .port_hi = 90},     /* 10/8:80-90 */
                {.addr = 0x0A010000, .prefix_len = 16, .port_lo = 85, .port_hi = 95},    /* 10.1/16:85-95 */
                {.addr = 0x0A010000, .prefix_len = 16, .port_lo = 70, .port_hi = 100},   /* 10.1/16:70-100 */
                {.addr = 0xC6336400, .prefix_len = 24},                                   /* 198.51.100/24 */
                {.addr = 0xC6336405, .prefix_len = 32},                                   /* inside it */
                {.addr = 0xC6336407, .prefix_len = 32, .port_lo = 443, .port_hi = 443},  /* inside it */
                {.addr = 0xCB007105, .prefix_len = 32, .port_lo = 443, .port_hi = 443},  /* 203.0.113.5:443 */
                {.addr = 0xCB007105, .prefix_len = 32, .port_lo = 443, .port_hi = 443},  /* twice */
        };
        memcpy(p.allow, a, sizeof(a));
        p.n_allow = ARRAY_SIZE(a);
        OK(lg_nft_policy_set(nft, 3, &p, &err));
        ELEMS_EQ("allow_any", "{\"concat\":[3,{\"prefix\":{\"addr\":\"198.51.100.0\",\"len\":24}}]}");
        ELEMS_EQ("allow_port", "{\"concat\":[3,\"203.0.113.5\",443]} "
                               "{\"concat\":[3,{\"prefix\":{\"addr\":\"10.0.0.0\",\"len\":8}},{\"range\":[80,90]}]} "
                               "{\"concat\":[3,{\"prefix\":{\"addr\":\"10.1.0.0\",\"len\":16}},{\"range\":[70,79]}]} "
                               "{\"concat\":[3,{\"prefix\":{\"addr\":\"10.1.0.0\",\"len\":16}},{\"range\":[91,100]}]}");

        /* Prefix 0 and a port range; replaces what 3 had. */
        struct lg_net_policy q = {.egress = LG_NET_EGRESS_ALLOW, .n_allow = 2};
        q.allow[0] = (struct lg_net_allow){.addr = 0, .prefix_len = 0, .port_lo = 8000, .port_hi = 8999};
        q.allow[1] = (struct lg_net_allow){.addr = 0, .prefix_len = 0};
        OK(lg_nft_policy_set(nft, 3, &q, &err));
        ELEMS_EQ("allow_any", "{\"concat\":[3,{\"prefix\":{\"addr\":\"0.0.0.0\",\"len\":0}}]}");
        ELEMS_EQ("allow_port", "");
        q.n_allow = 1;
        OK(lg_nft_policy_set(nft, 3, &q, &err));
        ELEMS_EQ("allow_any", "");
        ELEMS_EQ("allow_port", "{\"concat\":[3,{\"prefix\":{\"addr\":\"0.0.0.0\",\"len\":0}},{\"range\":[8000,8999]}]}");

        /* on -> allow -> off. */
        OK(lg_nft_policy_set(nft, 1, &q, &err));
        ELEMS_EQ("egress_on", "");
        OK(lg_nft_policy_set(nft, 1, &off, &err));
        ELEMS_EQ("allow_port", "{\"concat\":[3,{\"prefix\":{\"addr\":\"0.0.0.0\",\"len\":0}},{\"range\":[8000,8999]}]}");
        OK(lg_nft_policy_del(nft, 3, &err));
        OK(lg_nft_policy_del(nft, 3, &err));
        ELEMS_EQ("allow_port", "");

        /* Bad allowlist entries. */
        struct lg_net_policy bad = {.egress = LG_NET_EGRESS_ALLOW, .n_allow = 1};
        bad.allow[0] = (struct lg_net_allow){.addr = 0x0A000000, .prefix_len = 33};
        assert_int_equal(lg_nft_policy_set(nft, 4, &bad, &err), -EINVAL);
        bad.allow[0] = (struct lg_net_allow){.addr = 0x0A000000, .prefix_len = 8, .port_lo = 9, .port_hi = 8};
        assert_int_equal(lg_nft_policy_set(nft, 4, &bad, &err), -EINVAL);
        assert_int_equal(lg_nft_policy_set(nft, 0, &on, &err), -EINVAL);

        /* Namespaces. */
        OK(lg_nft_namespace_set(nft, NS_A, true, "", &err));
        OK(lg_nft_namespace_set(nft, NS_B, false, "198.51.100.9", &err));
        ELEMS_EQ("isolated_ns", "1275068417");
        ELEMS_EQ("ns_snat", "[1275068418,\"198.51.100.9\"]");
        OK(lg_nft_namespace_set(nft, NS_A, false, "198.51.100.8", &err));
        OK(lg_nft_namespace_set(nft, NS_B, true, NULL, &err));
        ELEMS_EQ("isolated_ns", "1275068418");
        ELEMS_EQ("ns_snat", "[1275068417,\"198.51.100.8\"]");
        assert_int_equal(lg_nft_namespace_set(nft, NS_A, false, "198.51.100.8 }", &err), -EINVAL);
        assert_int_equal(lg_nft_namespace_set(nft, NS_A, false, "999.1.1.1", &err), -EINVAL);
        ELEMS_EQ("ns_snat", "[1275068417,\"198.51.100.8\"]");
        OK(lg_nft_namespace_del(nft, NS_A, &err));
        OK(lg_nft_namespace_del(nft, NS_B, &err));
        OK(lg_nft_namespace_del(nft, NS_B, &err));
        ELEMS_EQ("isolated_ns", "");
        ELEMS_EQ("ns_snat", "");

        unsigned rules, n;
        OK(lg_nft_count(nft, &rules, &n, &err));
        assert_int_equal(n, 0);
}

/* The rule count does not grow with sandboxes; elements are 3 each. */
static void test_rule_count_fixed(void **state) {
        (void) state;
        if (skip_all)
                skip();
        struct lg_error err = {0};
        struct lg_nft_config cfg = config();
        lg_nft *nft = NULL;
        cfg.cidr = "10.252.0.0/20";
        OK(lg_nft_open(&cfg, &nft, &err));
        unsigned rules0, n0, rules, n;
        OK(lg_nft_count(nft, &rules0, &n0, &err));
        assert_true(rules0 > 10);
        assert_int_equal(n0, 0);
        const unsigned counts[] = {10, 1000};
        unsigned done = 0;
        for (size_t c = 0; c < ARRAY_SIZE(counts); c++) {
                for (; done < counts[c]; done++) {
                        char ip[LG_NET_IP_MAX];
                        snprintf(ip, sizeof(ip), "10.252.%u.%u", 1 + done / 250, 1 + done % 250);
                        OK(lg_nft_sandbox_add(nft, ip, NS_A + done % 3, 1 + done % 5, &err));
                }
                OK(lg_nft_count(nft, &rules, &n, &err));
                assert_int_equal(rules, rules0);
                assert_int_equal(n, 3 * counts[c]);
        }
        for (unsigned i = 0; i < done; i++) {
                char ip[LG_NET_IP_MAX];
                snprintf(ip, sizeof(ip), "10.252.%u.%u", 1 + i / 250, 1 + i % 250);
                OK(lg_nft_sandbox_del(nft, ip, &err));
        }
        OK(lg_nft_count(nft, &rules, &n, &err));
        assert_int_equal(rules, rules0);
        assert_int_equal(n, 0);
        OK(lg_nft_drop_table(nft, &err));
        lg_nft_close(nft);
}

/* ---- packets ---- */

/* An echo server on serve_port (one connection at a time). */
static int echo_serve(void *arg) {
        int s = listen_ready(*(int *) arg, "");
        if (s < 0)
                return 123;
        for (;;) {
                int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
                char buf[64];
                ssize_t n;
                while (c >= 0 && (n = read(c, buf, sizeof(buf))) > 0)
                        (void) !write(c, buf, (size_t) n);
                if (c >= 0)
                        close(c);
        }
}

/* An open connection to serve_ip:serve_port, driven over hold_ctl: a byte
 * 'l' (long wait) or 's' (short) sends a byte and answers '1' when it came
 * back within 5 s or 1 s, '0' when not. */
static int hold_ctl[2];

static int hold(void *arg) {
        int ready = *(int *) arg;
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(serve_port)};
        inet_pton(AF_INET, serve_ip, &a.sin_addr);
        if (connect(s, (struct sockaddr *) &a, sizeof(a)) < 0)
                return 125;
        if (write(ready, "r", 1) != 1)
                return 124;
        char cmd;
        while (read(hold_ctl[1], &cmd, 1) == 1) {
                char b = 'x', ok = '0';
                struct pollfd pf = {.fd = s, .events = POLLIN};
                if (write(s, &b, 1) == 1 && poll(&pf, 1, cmd == 'l' ? 5000 : 1000) == 1 && read(s, &b, 1) == 1)
                        ok = '1';
                if (write(hold_ctl[1], &ok, 1) != 1)
                        return 124;
        }
        return 0;
}

static bool hold_echo(char wait) {
        char r = 0;
        assert_int_equal(write(hold_ctl[0], &wait, 1), 1);
        assert_int_equal(read(hold_ctl[0], &r, 1), 1);
        return r == '1';
}

/* The source address the upstream (198.51.100.1 in up's namespace) sees
 * on a UDP datagram sent from from's namespace with source src (bound:
 * an address of from's eth0), "" when none arrives within a second. */
static void udp_seen(pid_t up, pid_t from, const char *src, char seen[LG_NET_IP_MAX]) {
        int p[2];
        pid_t rx = fork_into(up, p);
        if (rx == 0) {
                int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9999)};
                inet_pton(AF_INET, "198.51.100.1", &a.sin_addr);
                if (bind(s, (struct sockaddr *) &a, sizeof(a)) < 0)
                        _exit(101);
                (void) !write(p[1], "r", 1);
                struct pollfd pf = {.fd = s, .events = POLLIN};
                if (poll(&pf, 1, 1000) != 1)
                        _exit(0);
                struct sockaddr_in from_a;
                socklen_t len = sizeof(from_a);
                char buf[8];
                if (recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *) &from_a, &len) < 0)
                        _exit(102);
                char ip[LG_NET_IP_MAX];
                inet_ntop(AF_INET, &from_a.sin_addr, ip, sizeof(ip));
                (void) !write(p[1], ip, strlen(ip));
                _exit(0);
        }
        close(p[1]);
        char c;
        assert_int_equal(read(p[0], &c, 1), 1); /* bound */
        int q[2];
        pid_t tx = fork_into(from, q);
        if (tx == 0) {
                int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in a = {.sin_family = AF_INET}, to = {.sin_family = AF_INET, .sin_port = htons(9999)};
                inet_pton(AF_INET, src, &a.sin_addr);
                inet_pton(AF_INET, "198.51.100.1", &to.sin_addr);
                if (bind(s, (struct sockaddr *) &a, sizeof(a)) < 0)
                        _exit(103);
                for (int i = 0; i < 5; i++) {
                        (void) !sendto(s, "x", 1, 0, (struct sockaddr *) &to, sizeof(to));
                        usleep(50 * 1000);
                }
                _exit(0);
        }
        close(q[1]);
        close(q[0]);
        ssize_t n = read(p[0], seen, LG_NET_IP_MAX - 1);
        seen[n > 0 ? n : 0] = '\0';
        close(p[0]);
        int st;
        assert_int_equal(waitpid(tx, &st, 0), tx);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        assert_int_equal(waitpid(rx, &st, 0), rx);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A sandbox's network as net.c makes it (routed /32 from the gateway,
 * host end tnfs<n>). */
static void attach(pid_t pid, unsigned n) {
        SH("ip link add tnfs%u type veth peer name eth0 netns %d", n, (int) pid);
        SH("ip link set tnfs%u address ee:ee:ee:ee:ee:ee up && ip route add 10.252.0.%u/32 dev tnfs%u src 10.252.0.1",
           n, n, n);
        SH("nsenter -t %d -n sh -c 'ip link set lo up && ip addr add 10.252.0.%u/32 dev eth0 && ip link set eth0 up "
           "&& ip route add 169.254.1.1 dev eth0 scope link && ip route add default via 169.254.1.1 dev eth0 onlink "
           "&& ip neigh add 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0 nud permanent'",
           (int) pid, n);
}

static int kill_kids(void **state) {
        (void) state;
        kids_kill();
        /* The veths die with the sandboxes' namespaces; the rest with ours. */
        (void) !system("ip link del tnfs0 2>/dev/null; ip link del tnfu0 2>/dev/null");
        return 0;
}

static void test_packets(void **state) {
        (void) state;
        if (skip_all)
                skip();
        struct lg_error err = {0};
        /* The gateway's link: a dummy, or (kernels without the dummy
         * driver, as link.c does) a bridge without ports. */
        SH("{ ip link add tnfs0 type dummy 2>/dev/null || ip link add tnfs0 type bridge; } "
           "&& ip addr add 10.252.0.1/32 dev tnfs0 && ip link set tnfs0 up");
        assert_int_equal(lg_write_file_at(AT_FDCWD, "/proc/sys/net/ipv4/ip_forward", "1", false), 0);
        pid_t s1 = child(0, true, NULL), s2 = child(0, true, NULL), s3 = child(0, true, NULL);
        pid_t up = child(0, true, NULL);
        attach(s1, 5);
        attach(s2, 6);
        attach(s3, 7);
        SH("ip link add tnfu0 type veth peer name eth0 netns %d && ip addr add 198.51.100.254/24 dev tnfu0 "
           "&& ip addr add 198.51.100.253/32 dev tnfu0 && ip link set tnfu0 up", (int) up);
        SH("nsenter -t %d -n sh -c 'ip link set lo up && ip addr add 198.51.100.1/24 dev eth0 "
           "&& ip addr add 169.254.169.254/32 dev eth0 && ip link set eth0 up "
           "&& ip route add default via 198.51.100.254'", (int) up);
        /* Without NAT (calibration) the upstream answers sandboxes directly. */
        SH("ip route add 169.254.169.254/32 via 198.51.100.1");
        server(up, NULL, 8080);
        server(up, NULL, 8081);
        server(s2, NULL, 7000);
        server(s3, NULL, 7000);
        server(0, NULL, 7001);
        server(0, "10.252.0.1", 53);

        /* Calibration: no table, everything goes. */
        REACHES(s1, "10.252.0.1", 7001);
        REACHES(s1, "169.254.169.254", 8080);
        REACHES(s3, "10.252.0.6", 7000);
        REACHES(up, "10.252.0.6", 7000);
        SEEN_AS(s2, "198.51.100.1", 8080, "10.252.0.6");
        /* A sandbox that can set its own addresses (CAP_NET_ADMIN in its
         * namespace) sends from one it was not given: it goes out. */
        SH("nsenter -t %d -n ip addr add 10.252.0.9/32 dev eth0", (int) s1);
        char seen[LG_NET_IP_MAX];
        udp_seen(up, s1, "10.252.0.9", seen);
        assert_string_equal(seen, "10.252.0.9");

        struct lg_nft_config cfg = config();
        lg_nft *nft = NULL;
        OK(lg_nft_open(&cfg, &nft, &err));
        struct lg_net_policy on = {.egress = LG_NET_EGRESS_ON}, off = {.egress = LG_NET_EGRESS_OFF};
        struct lg_net_policy allow = {.egress = LG_NET_EGRESS_ALLOW, .n_allow = 1};
        allow.allow[0] = (struct lg_net_allow){.addr = 0xC6336401, .prefix_len = 32, .port_lo = 8081, .port_hi = 8081};
        OK(lg_nft_policy_set(nft, 1, &on, &err));
        OK(lg_nft_policy_set(nft, 2, &off, &err));
        OK(lg_nft_policy_set(nft, 3, &allow, &err));
        OK(lg_nft_namespace_set(nft, NS_A, false, "", &err));
        OK(lg_nft_namespace_set(nft, NS_B, false, "", &err));
        OK(lg_nft_sandbox_add(nft, "10.252.0.5", NS_A, 1, &err));
        OK(lg_nft_sandbox_add(nft, "10.252.0.6", NS_A, 2, &err));
        OK(lg_nft_sandbox_add(nft, "10.252.0.7", NS_B, 3, &err));

        /* Namespaces: within reaches, across does not, either way. */
        REACHES(s1, "10.252.0.6", 7000);
        BLOCKED(s3, "10.252.0.6", 7000);
        BLOCKED(s1, "10.252.0.7", 7000);
        /* The host reaches every sandbox, its egress off too, from the
         * gateway address (the replies are let in to it). */
        SEEN_AS(0, "10.252.0.6", 7000, "10.252.0.1");
        SEEN_AS(0, "10.252.0.7", 7000, "10.252.0.1");
        /* The host: DNS only; no metadata; nothing from outside in. */
        BLOCKED(s1, "10.252.0.1", 7001);
        REACHES(s1, "10.252.0.1", 53);
        BLOCKED(s1, "169.254.169.254", 8080);
        BLOCKED(up, "10.252.0.6", 7000);
        /* Egress on (masqueraded), off, allowlist. */
        SEEN_AS(s1, "198.51.100.1", 8080, "198.51.100.254");
        BLOCKED(s2, "198.51.100.1", 8080);
        SEEN_AS(s3, "198.51.100.1", 8081, "198.51.100.254");
        BLOCKED(s3, "198.51.100.1", 8080);
        /* Spoofing: the address it was given goes out (masqueraded), one
         * no sandbox has is dropped. */
        udp_seen(up, s1, "10.252.0.5", seen);
        assert_string_equal(seen, "198.51.100.254");
        udp_seen(up, s1, "10.252.0.9", seen);
        assert_string_equal(seen, "");

        /* Changes apply at once: a policy turned on, SNAT, isolation, a
         * sandbox's elements gone. */
        OK(lg_nft_policy_set(nft, 2, &on, &err));
        SEEN_AS(s2, "198.51.100.1", 8080, "198.51.100.254");
        /* ... and to connections already open: egress off cuts them. */
        serve_port = 8082;
        child(up, false, echo_serve);
        snprintf(serve_ip, sizeof(serve_ip), "198.51.100.1");
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, hold_ctl), 0);
        child(s2, false, hold);
        assert_true(hold_echo('l'));
        OK(lg_nft_policy_set(nft, 2, &off, &err));
        assert_false(hold_echo('s'));
        close(hold_ctl[0]);
        close(hold_ctl[1]);
        OK(lg_nft_policy_set(nft, 2, &on, &err));
        /* ... nor one another sandbox has, whose egress is on: the
         * reverse-path check (its address lives behind another host end). */
        udp_seen(up, s2, "10.252.0.6", seen);
        assert_string_equal(seen, "198.51.100.254");
        SH("nsenter -t %d -n ip addr add 10.252.0.6/32 dev eth0", (int) s1);
        udp_seen(up, s1, "10.252.0.6", seen);
        assert_string_equal(seen, "");
        OK(lg_nft_namespace_set(nft, NS_B, false, "198.51.100.253", &err));
        SEEN_AS(s3, "198.51.100.1", 8081, "198.51.100.253");
        OK(lg_nft_namespace_set(nft, NS_A, true, "", &err));
        BLOCKED(s1, "10.252.0.6", 7000);
        OK(lg_nft_sandbox_del(nft, "10.252.0.5", &err));
        BLOCKED(s1, "198.51.100.1", 8080);
        REACHES(s1, "10.252.0.1", 53);

        OK(lg_nft_drop_table(nft, &err));
        lg_nft_close(nft);
        REACHES(s1, "10.252.0.1", 7001); /* and back without the table */
}

int main(void) {
        snprintf(table, sizeof(table), "tnft%d", (int) getpid());
        if (geteuid() != 0) {
                skip_all = true;
                skip_why = "not root";
        } else if (unshare(CLONE_NEWNET) < 0) {
                skip_all = true;
                skip_why = "cannot make a network namespace";
        } else {
                struct lg_error err = {0};
                struct lg_nft_config cfg = config();
                lg_nft *nft = NULL;
                if (system("ip link set lo up") != 0 || lg_nft_open(&cfg, &nft, &err) < 0) {
                        skip_all = true;
                        skip_why = err.msg[0] ? err.msg : "no loopback";
                } else {
                        lg_nft_drop_table(nft, &err);
                        lg_nft_close(nft);
                }
        }
        if (skip_all)
                fprintf(stderr, "test-net-nft: skipping: %s (needs root and nf_tables)\n", skip_why);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_open_replaces_table),
                cmocka_unit_test(test_bad_config),
                cmocka_unit_test_setup_teardown(test_sandbox_elements, table_up, table_down),
                cmocka_unit_test_setup_teardown(test_all_or_nothing, table_up, table_down),
                cmocka_unit_test_setup_teardown(test_policy_and_namespace_elements, table_up, table_down),
                cmocka_unit_test(test_rule_count_fixed),
                cmocka_unit_test_teardown(test_packets, kill_kids),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
