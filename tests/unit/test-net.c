/* Unit tests of the sandbox network (src/net): egress policy parsing with
 * hostile and mutated input, the address bookkeeping and the checks of
 * lg_net_new's configuration, unprivileged; then, as root, the network
 * itself (net.c over link.c and nft.c).
 *
 * As root the whole test runs in a network namespace of its own (made at
 * start with unshare), so its table, links, rules and forwarding switch
 * touch nothing of the host's (lg_net_new flushes every rule with our
 * protocol) and vanish with the process even if it dies half way; each
 * test still tears its network down (and checks that it did). Sandboxes
 * are child processes in network namespaces of their own, each with a
 * server on TCP port 8080; probes are TCP connects from inside a namespace
 * (netns-kit.h): one expected to fail waits 1 s for the answer a dropped
 * SYN never gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sched.h>
#include <string.h>

#include "common/util.h"
#include "net/ipam.h"
#include "net/net-internal.h"
#include "net/net.h"
#include "netns-kit.h"
#include "test-ok.h"

#define IP(a, b, c, d) ((uint32_t) (a) << 24 | (uint32_t) (b) << 16 | (uint32_t) (c) << 8 | (uint32_t) (d))

/* ---- policies ---- */

static void test_policy_good(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct lg_net_policy p;
        OK(lg_net_policy_parse_mode("on", &p, &err));
        assert_int_equal(p.egress, LG_NET_EGRESS_ON);
        assert_int_equal(p.n_allow, 0);
        OK(lg_net_policy_parse_mode("off", &p, &err));
        assert_int_equal(p.egress, LG_NET_EGRESS_OFF);

        static const struct {
                const char *s;
                uint32_t addr, len;
                uint16_t lo, hi;
        } good[] = {
                {"198.51.100.0/24", IP(198, 51, 100, 0), 24, 0, 0},
                {"203.0.113.5", IP(203, 0, 113, 5), 32, 0, 0},
                {"203.0.113.5/32", IP(203, 0, 113, 5), 32, 0, 0},
                {"203.0.113.5:443", IP(203, 0, 113, 5), 32, 443, 443},
                {"10.0.0.0/8:8000-8999", IP(10, 0, 0, 0), 8, 8000, 8999},
                {"0.0.0.0/0", 0, 0, 0, 0},
                {"255.255.255.255:65535", UINT32_MAX, 32, 65535, 65535},
                {"1.2.3.4:1-65535", IP(1, 2, 3, 4), 32, 1, 65535},
                {"0.0.0.0/0:53-53", 0, 0, 53, 53},
        };
        for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
                const char *e[] = {good[i].s};
                OK(lg_net_policy_parse_allow(e, 1, &p, &err));
                assert_int_equal(p.egress, LG_NET_EGRESS_ALLOW);
                assert_int_equal(p.n_allow, 1);
                assert_int_equal(p.allow[0].addr, good[i].addr);
                assert_int_equal(p.allow[0].prefix_len, good[i].len);
                assert_int_equal(p.allow[0].port_lo, good[i].lo);
                assert_int_equal(p.allow[0].port_hi, good[i].hi);
                /* The same as a one-entry mode. */
                struct lg_net_policy q;
                OK(lg_net_policy_parse_mode(good[i].s, &q, &err));
                assert_memory_equal(&p.allow[0], &q.allow[0], sizeof(p.allow[0]));
        }

        /* The comma form with blanks, and what format makes of it. */
        OK(lg_net_policy_parse_mode("198.51.100.0/24, 203.0.113.5:443 ,\t10.0.0.0/8:8000-8999", &p, &err));
        assert_int_equal(p.n_allow, 3);
        char buf[256];
        lg_net_policy_format(&p, buf, sizeof(buf));
        assert_string_equal(buf, "allow 198.51.100.0/24, 203.0.113.5/32:443, 10.0.0.0/8:8000-8999");
        /* Entries with and without ports side by side. */
        const char *both[] = {"10.0.0.0/8", "10.1.2.3:443", "10.1.2.3:80-442", "11.0.0.0/8"};
        OK(lg_net_policy_parse_allow(both, 4, &p, &err));
        assert_int_equal(p.n_allow, 4);

        struct lg_net_policy on = {.egress = LG_NET_EGRESS_ON}, off = {.egress = LG_NET_EGRESS_OFF};
        lg_net_policy_format(&on, buf, sizeof(buf));
        assert_string_equal(buf, "on");
        lg_net_policy_format(&off, buf, sizeof(buf));
        assert_string_equal(buf, "off");
        /* A short buffer is cut, never overrun. */
        char small[12];
        memset(small, 'x', sizeof(small));
        lg_net_policy_parse_mode("198.51.100.0/24,203.0.113.5", &p, &err);
        lg_net_policy_format(&p, small, 8);
        assert_string_equal(small, "allow 1");
        assert_int_equal(small[9], 'x');
}

/* parse_allow of one entry (and parse_mode of it as_mode) fails with
 * -EINVAL, leaves out as it was and names the entry (as given). */
static void expect_bad_entry(const char *entry, const char *names, bool as_mode) {
        struct lg_error err = {0};
        struct lg_net_policy p, before;
        memset(&p, 0x5a, sizeof(p));
        before = p;
        const char *e[] = {entry};
        int r = lg_net_policy_parse_allow(e, 1, &p, &err);
        if (r != -EINVAL)
                fail_msg("`%s`: %d, want -EINVAL", entry, r);
        assert_memory_equal(&p, &before, sizeof(p));
        assert_int_equal(err.code, EINVAL);
        if (!strstr(err.msg, names))
                fail_msg("`%s`: message `%s` does not name `%s`", entry, err.msg, names);
        if (!as_mode)
                return;
        memset(&err, 0, sizeof(err));
        r = lg_net_policy_parse_mode(entry, &p, &err);
        if (r != -EINVAL)
                fail_msg("mode `%s`: %d, want -EINVAL", entry, r);
        assert_memory_equal(&p, &before, sizeof(p));
}

static void test_policy_bad(void **state) {
        (void) state;
        static const char *const bad[] = {
                /* host bits, prefix lengths */
                "10.0.0.1/24", "198.51.100.7/31", "10.0.0.0/33", "10.0.0.0/99", "10.0.0.0/-1", "10.0.0.0/",
                "10.0.0.0/08", "10.0.0.0/ 8", "10.0.0.0/8/8", "10.0.0.0/+8",
                /* ports */
                "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:99999", "1.2.3.4:4294967297", "1.2.3.4:10-5",
                "1.2.3.4:", "1.2.3.4:-5", "1.2.3.4:5-", "1.2.3.4:1-2-3", "1.2.3.4:+80", "1.2.3.4:080",
                "1.2.3.4:0-80", "1.2.3.4:80:90", "1.2.3.4:8 0", "1.2.3.4:http", "1.2.3.4/32:",
                /* addresses and junk */
                "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.4x", "1.2.3.4/32junk", "a.b.c.d",
                "0x7f.0.0.1", "1..2.3", "1.2.3.", ".1.2.3", "::1", "2001:db8::/32", "1.2.3.4 ", " 1.2.3.4",
                "1.2.3.-4", "１.2.3.4", "1.2.3.4\n", "localhost", "on ", "ON", "Off", "yes", "*", "-",
                "1.2.3.4:80 ", "1.2.3.4/32 :80",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                char shown[64];
                lg_printable(bad[i], shown, sizeof(shown));
                /* The comma form takes blanks around entries. */
                size_t len = strlen(bad[i]);
                expect_bad_entry(bad[i], shown, bad[i][0] != ' ' && bad[i][len - 1] != ' ');
        }

        struct lg_error err = {0};
        struct lg_net_policy p;
        /* The reason is given. */
        const char *hb[] = {"10.0.0.1/24"};
        assert_int_equal(lg_net_policy_parse_allow(hb, 1, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "host bits"));

        /* Overlong entry: named (cut), not parsed. */
        char longe[200];
        memset(longe, '1', sizeof(longe) - 1);
        longe[sizeof(longe) - 1] = '\0';
        memcpy(longe, "1.2.3.4:", 8);
        const char *e1[] = {longe};
        assert_int_equal(lg_net_policy_parse_allow(e1, 1, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "1.2.3.4:111"));
        assert_non_null(strstr(err.msg, "too long"));

        /* Too many entries, in both forms. */
        const char *many[LG_NET_ALLOW_MAX + 1];
        char names[LG_NET_ALLOW_MAX + 1][20], joined[2048] = "";
        for (int i = 0; i <= LG_NET_ALLOW_MAX; i++) {
                snprintf(names[i], sizeof(names[i]), "10.%d.0.0/16", i);
                many[i] = names[i];
                strcat(joined, i ? "," : "");
                strcat(joined, names[i]);
        }
        OK(lg_net_policy_parse_allow(many, LG_NET_ALLOW_MAX, &p, &err));
        assert_int_equal(p.n_allow, LG_NET_ALLOW_MAX);
        assert_int_equal(lg_net_policy_parse_allow(many, LG_NET_ALLOW_MAX + 1, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "at most 64"));
        assert_int_equal(lg_net_policy_parse_mode(joined, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "at most 64"));

        /* Overlaps are fine (nft.c makes them disjoint). */
        const char *ov[] = {"10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/8:80-443", "10.1.0.0/16:443", "1.2.3.4",
                            "1.2.3.4/32"};
        OK(lg_net_policy_parse_allow(ov, ARRAY_SIZE(ov), &p, &err));
        assert_int_equal(p.n_allow, ARRAY_SIZE(ov));

        /* Empty lists and entries, NULLs. */
        assert_int_equal(lg_net_policy_parse_allow(NULL, 0, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "off"));
        const char *withnull[] = {"1.2.3.4", NULL};
        assert_int_equal(lg_net_policy_parse_allow(withnull, 2, &p, &err), -EINVAL);
        assert_int_equal(lg_net_policy_parse_allow(NULL, 1, &p, &err), -EINVAL);
        assert_int_equal(lg_net_policy_parse_mode(NULL, &p, &err), -EINVAL);
        static const char *const bad_modes[] = {"", ",", "on,", "on,off", "1.2.3.4,,5.6.7.8", "1.2.3.4,", " ",
                                                ",1.2.3.4", "1.2.3.4;5.6.7.8"};
        for (size_t i = 0; i < ARRAY_SIZE(bad_modes); i++)
                if (lg_net_policy_parse_mode(bad_modes[i], &p, &err) != -EINVAL)
                        fail_msg("mode `%s` accepted", bad_modes[i]);
        char huge[8192];
        memset(huge, '1', sizeof(huge) - 1);
        huge[sizeof(huge) - 1] = '\0';
        assert_int_equal(lg_net_policy_parse_mode(huge, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "too long"));
}

/* A small PRNG so that a failing run can be repeated (xorshift64). */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n) {
        rnd_state ^= rnd_state << 13;
        rnd_state ^= rnd_state >> 7;
        rnd_state ^= rnd_state << 17;
        return (uint32_t) (rnd_state % n);
}

/* Mutated and random strings: never a crash (ASan), and whatever is
 * accepted formats to entries that parse back to the same policy. */
static void test_policy_fuzz(void **state) {
        (void) state;
        static const char *const seeds[] = {"198.51.100.0/24", "203.0.113.5:443", "10.0.0.0/8:8000-8999",
                                            "0.0.0.0/0", "1.2.3.4", "on", "off", "10.0.0.0/8,11.0.0.0/8:1-2"};
        static const char alphabet[] = "0123456789./:-, \t\nxon\xff\x80";
        unsigned accepted = 0;
        for (int round = 0; round < 200000; round++) {
                char s[128];
                size_t len;
                if (rnd(4) == 0) {
                        len = rnd(40);
                        for (size_t i = 0; i < len; i++)
                                s[i] = rnd(3) ? alphabet[rnd(sizeof(alphabet) - 1)] : (char) (rnd(255) + 1);
                } else {
                        const char *seed = seeds[rnd(ARRAY_SIZE(seeds))];
                        len = strlen(seed);
                        memcpy(s, seed, len);
                        for (int m = (int) rnd(4) + 1; m > 0; m--) {
                                size_t at = len ? rnd((uint32_t) len + 1) : 0;
                                char c = alphabet[rnd(sizeof(alphabet) - 1)];
                                switch (rnd(3)) {
                                case 0: /* replace */
                                        if (at < len)
                                                s[at] = c;
                                        break;
                                case 1: /* insert */
                                        if (len < sizeof(s) - 1) {
                                                memmove(s + at + 1, s + at, len - at);
                                                s[at] = c;
                                                len++;
                                        }
                                        break;
                                default: /* delete */
                                        if (at < len) {
                                                memmove(s + at, s + at + 1, len - at - 1);
                                                len--;
                                        }
                                }
                        }
                }
                s[len] = '\0';
                struct lg_error err = {0};
                struct lg_net_policy p, q;
                int r = lg_net_policy_parse_mode(s, &p, &err);
                if (r < 0) {
                        assert_int_equal(r, -EINVAL);
                        assert_true(err.msg[0] != '\0');
                        continue;
                }
                accepted++;
                char buf[4096];
                lg_net_policy_format(&p, buf, sizeof(buf));
                if (p.egress != LG_NET_EGRESS_ALLOW) {
                        OK(lg_net_policy_parse_mode(buf, &q, &err));
                } else {
                        assert_true(strncmp(buf, "allow ", 6) == 0);
                        OK(lg_net_policy_parse_mode(buf + 6, &q, &err));
                }
                assert_int_equal(p.egress, q.egress);
                assert_int_equal(p.n_allow, q.n_allow);
                assert_memory_equal(p.allow, q.allow, p.n_allow * sizeof(p.allow[0]));
                for (size_t i = 0; i < p.n_allow; i++) {
                        assert_true(p.allow[i].prefix_len <= 32);
                        assert_true(p.allow[i].port_lo <= p.allow[i].port_hi);
                }
        }
        /* The mutations keep some inputs valid: the round trip was tried. */
        assert_true(accepted > 1000);
}

/* ---- addresses ---- */

static void test_ipam_small(void **state) {
        (void) state;
        lg_ipam *ipam;
        assert_int_equal(lg_ipam_new(IP(10, 253, 1, 1), 28, &ipam), -EINVAL); /* host bits */
        assert_int_equal(lg_ipam_new(IP(10, 253, 1, 0), 30, &ipam), -EINVAL);
        assert_int_equal(lg_ipam_new(0, 0, &ipam), -EINVAL);
        assert_int_equal(lg_ipam_new(IP(10, 253, 1, 0), 28, &ipam), 0);
        assert_int_equal(lg_ipam_total(ipam), 13);
        assert_int_equal(lg_ipam_gateway(ipam), IP(10, 253, 1, 1));
        assert_false(lg_ipam_sandbox_addr(ipam, IP(10, 253, 1, 0)));
        assert_false(lg_ipam_sandbox_addr(ipam, IP(10, 253, 1, 1)));
        assert_false(lg_ipam_sandbox_addr(ipam, IP(10, 253, 1, 15)));
        assert_false(lg_ipam_sandbox_addr(ipam, IP(10, 253, 1, 16)));
        assert_false(lg_ipam_sandbox_addr(ipam, IP(10, 253, 0, 255)));
        assert_true(lg_ipam_sandbox_addr(ipam, IP(10, 253, 1, 2)));
        assert_true(lg_ipam_sandbox_addr(ipam, IP(10, 253, 1, 14)));

        /* In order from network+2, never the broadcast address. */
        uint32_t a;
        for (uint32_t i = 2; i <= 14; i++) {
                assert_int_equal(lg_ipam_reserve(ipam, &a), 0);
                assert_int_equal(a, IP(10, 253, 1, i));
                assert_int_equal(lg_ipam_slot(ipam, a)->state, LG_IPAM_USED);
        }
        assert_int_equal(lg_ipam_used(ipam), 13);
        assert_int_equal(lg_ipam_reserve(ipam, &a), -ENOSPC);
        assert_int_equal(lg_ipam_take(ipam, IP(10, 253, 1, 5), LG_IPAM_USED), -EEXIST);
        assert_int_equal(lg_ipam_take(ipam, IP(10, 253, 1, 1), LG_IPAM_USED), -EADDRNOTAVAIL);
        assert_int_equal(lg_ipam_take(ipam, IP(10, 253, 1, 15), LG_IPAM_USED), -EADDRNOTAVAIL);
        /* The one freed is the one found, wherever the cursor is. */
        lg_ipam_put(ipam, IP(10, 253, 1, 5));
        lg_ipam_put(ipam, IP(10, 253, 1, 5)); /* twice: nothing */
        assert_int_equal(lg_ipam_used(ipam), 12);
        assert_null(lg_ipam_slot(ipam, IP(10, 253, 1, 5)));
        assert_int_equal(lg_ipam_reserve(ipam, &a), 0);
        assert_int_equal(a, IP(10, 253, 1, 5));
        assert_int_equal(lg_ipam_reserve(ipam, &a), -ENOSPC);

        /* Iteration sees every address in use, in order. */
        uint32_t it = 0, n = 0;
        while (lg_ipam_next(ipam, &it))
                assert_int_equal(it, IP(10, 253, 1, 2 + n++));
        assert_int_equal(n, 13);

        /* Slots keep what is written to them; a put clears it. */
        struct lg_ipam_slot *s = lg_ipam_slot(ipam, IP(10, 253, 1, 9));
        s->ns_mark = 0x4c000003;
        s->policy_id = 7;
        assert_int_equal(lg_ipam_slot(ipam, IP(10, 253, 1, 9))->policy_id, 7);
        lg_ipam_put(ipam, IP(10, 253, 1, 9));
        assert_int_equal(lg_ipam_take(ipam, IP(10, 253, 1, 9), LG_IPAM_FOUND), 0);
        s = lg_ipam_slot(ipam, IP(10, 253, 1, 9));
        assert_int_equal(s->state, LG_IPAM_FOUND);
        assert_int_equal(s->ns_mark, 0);
        assert_int_equal(s->policy_id, 0);
        lg_ipam_free(ipam);
        lg_ipam_free(NULL);
}

static void test_ipam_next_fit(void **state) {
        (void) state;
        lg_ipam *ipam;
        assert_int_equal(lg_ipam_new(IP(10, 253, 0, 0), 24, &ipam), 0);
        uint32_t a, b, c;
        assert_int_equal(lg_ipam_reserve(ipam, &a), 0);
        assert_int_equal(lg_ipam_reserve(ipam, &b), 0);
        lg_ipam_put(ipam, a);
        assert_int_equal(lg_ipam_reserve(ipam, &c), 0);
        assert_int_not_equal(c, a); /* not reused at once */
        assert_int_equal(c, b + 1);
        /* A found address is skipped by the search. */
        assert_int_equal(lg_ipam_take(ipam, c + 1, LG_IPAM_FOUND), 0);
        assert_int_equal(lg_ipam_reserve(ipam, &a), 0);
        assert_int_equal(a, c + 2);
        /* Round the end and back to the start: the first free one then. */
        unsigned left = lg_ipam_total(ipam) - lg_ipam_used(ipam);
        for (unsigned i = 0; i < left - 1; i++)
                assert_int_equal(lg_ipam_reserve(ipam, &a), 0);
        assert_int_equal(a, IP(10, 253, 0, 254));
        assert_int_equal(lg_ipam_reserve(ipam, &a), 0);
        assert_int_equal(a, IP(10, 253, 0, 2)); /* the one put first */
        assert_int_equal(lg_ipam_reserve(ipam, &a), -ENOSPC);
        lg_ipam_free(ipam);
}

/* A /8 (16M addresses): spans word and slot-range boundaries; slots freed
 * with their last address (ASan sees leaks). */
static void test_ipam_large(void **state) {
        (void) state;
        lg_ipam *ipam;
        assert_int_equal(lg_ipam_new(IP(10, 0, 0, 0), 8, &ipam), 0);
        assert_int_equal(lg_ipam_total(ipam), (1u << 24) - 3);
        uint32_t a = 0;
        for (int i = 0; i < 5000; i++)
                assert_int_equal(lg_ipam_reserve(ipam, &a), 0);
        assert_int_equal(a, IP(10, 0, 0, 0) + 5001);
        assert_int_equal(lg_ipam_take(ipam, IP(10, 255, 255, 254), LG_IPAM_FOUND), 0);
        uint32_t it = 0, n = 0, last = 0;
        while (lg_ipam_next(ipam, &it)) {
                assert_true(it > last);
                last = it;
                n++;
        }
        assert_int_equal(n, 5001);
        assert_int_equal(last, IP(10, 255, 255, 254));
        it = 0;
        while (lg_ipam_next(ipam, &it))
                lg_ipam_put(ipam, it);
        assert_int_equal(lg_ipam_used(ipam), 0);
        assert_int_equal(lg_ipam_reserve(ipam, &a), 0);
        assert_int_equal(a, IP(10, 0, 0, 0) + 5002); /* next fit goes on */
        lg_ipam_free(ipam);
}

/* ---- lg_net_new's configuration (checked before anything is touched) ---- */

static void expect_bad_config(const char *cidr, const char *table, const char *prefix, const char *names) {
        struct lg_error err = {0};
        lg_net *net = (lg_net *) 1;
        struct lg_net_config cfg = {.cidr = cidr, .table = table ? table : "tnetx", .link_prefix = prefix ? prefix : "tnx"};
        int r = lg_net_new(&cfg, &net, &err);
        if (r != -EINVAL)
                fail_msg("config %s %s %s: %d, want -EINVAL", cidr, table, prefix, r);
        assert_ptr_equal(net, (lg_net *) 1);
        if (!strstr(err.msg, names))
                fail_msg("message `%s` does not name `%s`", err.msg, names);
}

static void test_config_bad(void **state) {
        (void) state;
        static const char *const cidrs[] = {
                "10.253.0.1/24", "10.253.0.0/29", "10.253.0.0/32", "10.0.0.0/7", "0.0.0.0/0", "127.0.0.0/8",
                "127.1.0.0/16", "169.254.0.0/16", "169.0.0.0/8", "224.0.0.0/8", "240.0.0.0/8", "0.1.0.0/16",
                "junk", "10.253.0.0", "10.253.0.0/24x", "10.253.0.0/024", "10.253.0.0/ 24", " 10.253.0.0/24",
                "10.253.0.0/24 ", "", "/24", "10.253.0/24", "10.253.0.0.0/24", "0x0a.0.0.0/8",
        };
        for (size_t i = 0; i < ARRAY_SIZE(cidrs); i++) {
                char shown[64];
                lg_printable(cidrs[i], shown, sizeof(shown));
                expect_bad_config(cidrs[i], NULL, NULL, shown);
        }
        char longc[300];
        memset(longc, '1', sizeof(longc) - 1);
        longc[sizeof(longc) - 1] = '\0';
        expect_bad_config(longc, NULL, NULL, "too long");
        static const char *const tables[] = {"", "1abc", "a-b", "a b", "a;b", "tabletabletabletabletabletable123",
                                             "a\n"};
        for (size_t i = 0; i < ARRAY_SIZE(tables); i++)
                expect_bad_config("10.253.0.0/24", tables[i], NULL, "nft table name");
        static const char *const prefixes[] = {"", "toolong", "a-b", "9ab", "a_b", "a*", "lg\xff"};
        for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
                expect_bad_config("10.253.0.0/24", NULL, prefixes[i], "link prefix");
}

/* ---- the network, as root ---- */

#define CIDR "10.253.0.0/24"
#define PORT 8080

static bool is_root;
static char table[32];
static lg_net *net;
/* A sandbox stand-in: a child in a network namespace of its own with a
 * server on PORT. */
static pid_t kid(void) {
        serve_port = PORT;
        serve_ip[0] = '\0';
        return child(0, true, serve);
}

static struct lg_net_config config(void) {
        return (struct lg_net_config){.cidr = CIDR, .table = table, .link_prefix = "tnt"};
}

static int net_setup(void **state) {
        (void) state;
        if (!is_root)
                return 0;
        struct lg_error err = {0};
        struct lg_net_config cfg = config();
        int r = lg_net_new(&cfg, &net, &err);
        if (r < 0) {
                fprintf(stderr, "lg_net_new: %s\n", err.msg);
                return -1;
        }
        return 0;
}

/* Tear down, and check nothing is left: table, links, rules. */
static int net_teardown(void **state) {
        (void) state;
        if (!is_root)
                return 0;
        kids_kill();
        (void) sh("ip route del default via 198.18.0.2 dev tsrc 2>/dev/null"); /* test_unreachable's, if it failed */
        struct lg_error err = {0};
        int r = net ? lg_net_teardown(net, &err) : 0;
        lg_net_free(net);
        net = NULL;
        if (r < 0) {
                fprintf(stderr, "lg_net_teardown: %s\n", err.msg);
                return -1;
        }
        const char *out = sh_out("nft list tables; ip -o link show; ip -4 rule show; ip -4 route show table all");
        if (strstr(out, table) || strstr(out, "tnt") || strstr(out, "0x4c0000") || strstr(out, "10.253.")) {
                fprintf(stderr, "left after teardown:\n%s\n", out);
                return -1;
        }
        return 0;
}

#define NEED_ROOT()                                                      \
        do {                                                             \
                if (!is_root)                                            \
                        skip();                                          \
        } while (0)

/* reserve + attach (pid > 0) + assign (namespace != NULL). */
static struct lg_net_addr sandbox(pid_t pid, const char *namespace, const char *policy) {
        struct lg_error err = {0};
        struct lg_net_addr a;
        OK(lg_net_reserve(net, &a, &err));
        if (pid)
                OK(lg_net_attach(net, pid, &a, &err));
        if (namespace)
                OK(lg_net_assign(net, a.ip, namespace, policy, &err));
        return a;
}

static void ns_set(const char *name, bool isolate, enum lg_net_egress egress) {
        struct lg_error err = {0};
        struct lg_net_namespace ns = {.isolate_sandboxes = isolate};
        struct lg_net_policy p = {.egress = egress};
        OK(lg_net_namespace_set(net, name, &ns, &p, &err));
}

static void test_reach(void **state) {
        (void) state;
        NEED_ROOT();
        ns_set("a", false, LG_NET_EGRESS_ON);
        ns_set("b", false, LG_NET_EGRESS_ON);
        pid_t a1 = kid(), a2 = kid(), b1 = kid(), w = kid();
        struct lg_net_addr A1 = sandbox(a1, "a", NULL), A2 = sandbox(a2, "a", NULL), B1 = sandbox(b1, "b", NULL),
                           W = sandbox(w, NULL, NULL);
        assert_string_equal(A1.ip, "10.253.0.2");
        assert_string_equal(A1.host_if, "tnt2");
        assert_string_equal(lg_net_gateway(net), "10.253.0.1");
        assert_string_equal(lg_net_cidr(net), CIDR);

        /* Pod to pod within a namespace; the host reaches sandboxes. */
        REACHES(a1, A2.ip, PORT);
        REACHES(a2, A1.ip, PORT);
        REACHES(0, B1.ip, PORT);
        /* From the gateway address (the host end's route says so), not
         * from an external address of the host: what a sandbox's server
         * sees of the router and of probes. */
        SEEN_AS(0, B1.ip, PORT, "10.253.0.1");
        SEEN_AS(0, W.ip, PORT, "10.253.0.1");
        /* Not across namespaces, either way; not to or from a sandbox
         * with no tenant yet. */
        BLOCKED(a1, B1.ip, PORT);
        BLOCKED(b1, A1.ip, PORT);
        BLOCKED(w, A1.ip, PORT);
        BLOCKED(a1, W.ip, PORT);
        /* Not the host: a server on every address of the test's
         * namespace, the gateway's included. */
        server(0, NULL, PORT + 1);
        REACHES(0, lg_net_gateway(net), PORT + 1);
        BLOCKED(a1, lg_net_gateway(net), PORT + 1);

        /* A namespace isolating its sandboxes, at once; and back. */
        ns_set("a", true, LG_NET_EGRESS_ON);
        BLOCKED(a1, A2.ip, PORT);
        ns_set("a", false, LG_NET_EGRESS_ON);
        REACHES(a1, A2.ip, PORT);
        /* Reassigned to b: b's pods now. */
        struct lg_error err = {0};
        OK(lg_net_assign(net, A2.ip, "b", NULL, &err));
        REACHES(b1, A2.ip, PORT);
        BLOCKED(a1, A2.ip, PORT);

        /* Release: its elements go at once (a1 reaches nothing), its host
         * end stays while a1's namespace lives (the kernel removes it with
         * the namespace), the address is not handed out again at once. */
        OK(lg_net_release(net, &A1, &err));
        BLOCKED(a1, A2.ip, PORT);
        assert_true(lg_nl_ifindex(A1.host_if, &err) > 0);
        OK(lg_net_release(net, &A1, &err)); /* unknown now: fine */
        struct lg_net_addr n1 = sandbox(0, NULL, NULL);
        assert_string_not_equal(n1.ip, A1.ip);
        /* Attach of an address not reserved. */
        assert_int_equal(lg_net_attach(net, a1, &A1, &err), -ENOENT);
        assert_int_equal(lg_net_assign(net, A1.ip, "a", NULL, &err), -ENOENT);
        assert_int_equal(lg_net_assign(net, "10.9.9.9", "a", NULL, &err), -ENOENT);
        assert_int_equal(lg_net_assign(net, "10.253.0.3x", "a", NULL, &err), -EINVAL);
        assert_int_equal(lg_net_assign(net, B1.ip, "nosuch", NULL, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "nosuch"));
        assert_int_equal(lg_net_assign(net, B1.ip, "b", "nosuch", &err), -ENOENT);
}

/* After a restart: what live sandboxes hold stays theirs; reclaimed is
 * kept, the rest swept. */
static void test_reclaim_sweep(void **state) {
        (void) state;
        NEED_ROOT();
        struct lg_error err = {0};
        ns_set("a", false, LG_NET_EGRESS_ON);
        pid_t k1 = kid(), k2 = kid(), k3 = kid();
        struct lg_net_addr K1 = sandbox(k1, "a", NULL), K2 = sandbox(k2, NULL, NULL);
        lg_net_free(net);
        /* K1's host route as a legiond before the gateway was its source
         * made it: reclaim brings it up to date. */
        SH("ip route replace %s/32 dev %s proto 76 scope link", K1.ip, K1.host_if);
        assert_null(strstr(sh_out("ip -4 route show %s/32", K1.ip), " src "));
        net = NULL;
        struct lg_net_config cfg = config();
        OK(lg_net_new(&cfg, &net, &err));
        struct lg_net_stats st;
        OK(lg_net_stats(net, &st, &err));
        assert_int_equal(st.addresses_used, 2);
        assert_int_equal(st.links, 2);
        assert_int_equal(st.elements, 0); /* the table starts empty */

        /* Every other address, then none: never theirs. */
        unsigned n = 0;
        struct lg_net_addr a, all[256];
        while (lg_net_reserve(net, &a, &err) == 0) {
                assert_string_not_equal(a.ip, K1.ip);
                assert_string_not_equal(a.ip, K2.ip);
                all[n++] = a;
        }
        assert_int_equal(n, st.addresses_total - 2);
        assert_int_equal(err.code, ENOSPC);
        for (unsigned i = 0; i < n; i++)
                OK(lg_net_release(net, &all[i], &err));

        struct lg_net_addr r1;
        OK(lg_net_reclaim(net, k1, &r1, &err));
        assert_string_equal(r1.ip, K1.ip);
        assert_string_equal(r1.host_if, K1.host_if);
        assert_int_equal(lg_net_reclaim(net, k3, &r1, &err), -ENOENT); /* no network */
        OK(lg_net_sweep(net, &err));
        assert_int_equal(lg_nl_ifindex(K2.host_if, &err), -ENODEV);
        assert_true(lg_nl_ifindex(K1.host_if, &err) > 0);
        OK(lg_net_stats(net, &st, &err));
        assert_int_equal(st.addresses_used, 1);
        assert_int_equal(st.links, 1);
        /* The reclaimed one works once it has its namespace again. */
        ns_set("a", false, LG_NET_EGRESS_ON);
        OK(lg_net_assign(net, K1.ip, "a", NULL, &err));
        REACHES(0, K1.ip, PORT);
        SEEN_AS(0, K1.ip, PORT, "10.253.0.1");
        assert_non_null(strstr(sh_out("ip -4 route show %s/32", K1.ip), " proto 76 scope link src 10.253.0.1"));
        OK(lg_net_sweep(net, &err)); /* nothing left to sweep */
        OK(lg_net_stats(net, &st, &err));
        assert_int_equal(st.addresses_used, 1);
}

static void test_exhaustion(void **state) {
        (void) state;
        NEED_ROOT();
        struct lg_error err = {0};
        char t[40];
        snprintf(t, sizeof(t), "%sx", table);
        struct lg_net_config cfg = {.cidr = "10.253.1.0/28", .table = t, .link_prefix = "tnx"};
        lg_net *small;
        OK(lg_net_new(&cfg, &small, &err));
        struct lg_net_addr a;
        for (int i = 0; i < 13; i++)
                OK(lg_net_reserve(small, &a, &err));
        assert_string_equal(a.ip, "10.253.1.14");
        assert_int_equal(lg_net_reserve(small, &a, &err), -ENOSPC);
        assert_string_equal(err.msg, "pod CIDR 10.253.1.0/28 is exhausted (13 addresses in use)");
        OK(lg_net_release(small, &(struct lg_net_addr){.ip = "10.253.1.9"}, &err));
        OK(lg_net_reserve(small, &a, &err));
        assert_string_equal(a.ip, "10.253.1.9");
        OK(lg_net_teardown(small, &err));
        lg_net_free(small);
}

/* An address handed out again while the host end of its previous
 * sandbox is still there (its namespace alive): the stale link goes, the
 * new sandbox gets the address. */
static void test_stale_link(void **state) {
        (void) state;
        NEED_ROOT();
        struct lg_error err = {0};
        char t[40];
        snprintf(t, sizeof(t), "%ss", table);
        struct lg_net_config cfg = {.cidr = "10.253.2.0/28", .table = t, .link_prefix = "tns"};
        lg_net *small;
        OK(lg_net_new(&cfg, &small, &err));
        OK(lg_net_sweep(small, &err)); /* as legiond after its start-up replay */
        pid_t old = kid(), young = kid();
        struct lg_net_addr a, b;
        OK(lg_net_reserve(small, &a, &err));
        OK(lg_net_attach(small, old, &a, &err));
        OK(lg_net_release(small, &a, &err));
        assert_true(lg_nl_ifindex(a.host_if, &err) > 0); /* old's namespace holds it */
        for (int i = 0; i < 12; i++) /* next-fit: every other address first */
                OK(lg_net_reserve(small, &b, &err));
        OK(lg_net_reserve(small, &b, &err));
        assert_string_equal(b.ip, a.ip);
        OK(lg_net_attach(small, young, &b, &err));
        assert_non_null(strstr(sh_out("nsenter -t %d -n ip -o -4 addr show dev eth0", young), a.ip));
        assert_string_equal(sh_out("nsenter -t %d -n ip -o link show dev eth0 2>/dev/null", old), "");
        OK(lg_net_teardown(small, &err));
        lg_net_free(small);
}

/* A live sandbox the start-up route list missed (its route gone here; a
 * dump interrupted on every try may skip entries): until the sweep, its
 * address is held, not handed out (attach would delete its link), and
 * its owner reclaims it. */
static void test_missed_at_start(void **state) {
        (void) state;
        NEED_ROOT();
        struct lg_error err = {0};
        char t[40];
        snprintf(t, sizeof(t), "%sm", table);
        struct lg_net_config cfg = {.cidr = "10.253.3.0/28", .table = t, .link_prefix = "tnm"};
        lg_net *first, *second;
        OK(lg_net_new(&cfg, &first, &err));
        pid_t x = kid();
        struct lg_net_addr a, b, again;
        OK(lg_net_reserve(first, &a, &err));
        OK(lg_net_attach(first, x, &a, &err));
        lg_net_free(first); /* legiond gone, x lives on */
        sh_out("ip route del %s/32 dev %s", a.ip, a.host_if);
        OK(lg_net_new(&cfg, &second, &err));
        for (int i = 0; i < 12; i++) {
                OK(lg_net_reserve(second, &b, &err));
                assert_string_not_equal(b.ip, a.ip);
        }
        assert_int_equal(lg_net_reserve(second, &b, &err), -ENOSPC);
        OK(lg_net_reclaim(second, x, &again, &err));
        assert_string_equal(again.ip, a.ip);
        /* Its route is back. */
        assert_non_null(strstr(sh_out("ip -4 route show %s/32", a.ip), " src 10.253.3.1"));
        assert_non_null(strstr(sh_out("nsenter -t %d -n ip -o -4 addr show dev eth0", x), a.ip));
        OK(lg_net_sweep(second, &err));
        assert_true(lg_nl_ifindex(a.host_if, &err) > 0); /* reclaimed: kept */
        OK(lg_net_teardown(second, &err));
        lg_net_free(second);
}

static void test_namespace_bad(void **state) {
        (void) state;
        NEED_ROOT();
        struct lg_error err = {0};
        ns_set("a", false, LG_NET_EGRESS_ON);
        struct lg_net_addr a = sandbox(0, "a", NULL);
        struct lg_net_stats before, after;
        OK(lg_net_stats(net, &before, &err));
        _cleanup_free_ char *rules_before = strdup(sh_out("ip -4 rule show; ip -4 route show table all"));

        struct lg_net_policy on = {.egress = LG_NET_EGRESS_ON};
        struct lg_net_namespace bad = {0};
        snprintf(bad.via_interface, sizeof(bad.via_interface), "tnnosuch");
        assert_int_equal(lg_net_namespace_set(net, "a", &bad, &on, &err), -ENODEV);
        assert_non_null(strstr(err.msg, "interface `tnnosuch` does not exist"));
        assert_int_equal(lg_net_namespace_set(net, "c", &bad, &on, &err), -ENODEV);
        assert_int_equal(lg_net_assign(net, a.ip, "c", NULL, &err), -ENOENT); /* c was not made */

        static const struct lg_net_namespace bads[] = {
                {.snat = "1.2.3"}, {.snat = "1.2.3.4 "}, {.via_gateway = "10.0.0.1"}, {.via_table = 20005},
                {.via_table = 255}, {.via_interface = "lo", .via_table = 100}, {.via_interface = "tnt0"},
                {.via_interface = "lo", .via_gateway = "x"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(bads); i++)
                assert_int_equal(lg_net_namespace_set(net, "a", &bads[i], &on, &err), -EINVAL);
        struct lg_net_policy badp = {.egress = 7};
        assert_int_equal(lg_net_namespace_set(net, "a", &(struct lg_net_namespace){0}, &badp, &err), -EINVAL);
        badp = (struct lg_net_policy){.egress = LG_NET_EGRESS_ALLOW, .n_allow = 1, .allow = {{.addr = 1, .prefix_len = 24}}};
        assert_int_equal(lg_net_namespace_set(net, "a", &(struct lg_net_namespace){0}, &badp, &err), -EINVAL);
        assert_int_equal(lg_net_namespace_set(net, "", &(struct lg_net_namespace){0}, &on, &err), -EINVAL);
        assert_int_equal(lg_net_namespace_set(net, "a\nb", &(struct lg_net_namespace){0}, &on, &err), -EINVAL);
        char longname[100];
        memset(longname, 'n', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        assert_int_equal(lg_net_namespace_set(net, longname, &(struct lg_net_namespace){0}, &on, &err), -EINVAL);

        OK(lg_net_stats(net, &after, &err));
        assert_int_equal(after.rules, before.rules);
        assert_int_equal(after.elements, before.elements);
        assert_string_equal(rules_before, sh_out("ip -4 rule show; ip -4 route show table all"));
        OK(lg_net_assign(net, a.ip, "a", NULL, &err)); /* a is as it was */

        /* Policies: unknown namespace, a name another has, a namespace's own. */
        assert_int_equal(lg_net_policy_set(net, "nosuch", "nosuch/app/x", &on, &err), -ENOENT);
        ns_set("b", false, LG_NET_EGRESS_OFF);
        assert_int_equal(lg_net_policy_set(net, "a", "b", &on, &err), -EEXIST);
        OK(lg_net_policy_set(net, "b", "b/app/x", &on, &err));
        assert_int_equal(lg_net_policy_set(net, "a", "b/app/x", &on, &err), -EEXIST);
        assert_int_equal(lg_net_assign(net, a.ip, "a", "b/app/x", &err), -ENOENT);
        assert_int_equal(lg_net_policy_delete(net, "a", &err), -EBUSY);
        assert_int_equal(lg_net_policy_delete(net, "nosuch", &err), -ENOENT);
        assert_int_equal(lg_net_namespace_set(net, "b/app/x", &(struct lg_net_namespace){0}, &on, &err), -EEXIST);
        OK(lg_net_namespace_delete(net, "b", &err));
        assert_int_equal(lg_net_namespace_delete(net, "b", &err), -ENOENT);
        OK(lg_net_namespace_delete(net, "a", &err));
}

/* VNET injection: the mark's rule and the namespace's own table, and gone
 * again when the namespace goes back to the host's routes. */
static void test_namespace_via(void **state) {
        (void) state;
        NEED_ROOT();
        struct lg_error err = {0};
        SH("ip link add tnvia type veth peer name tnvib && ip link set tnvia up");
        struct lg_net_policy on = {.egress = LG_NET_EGRESS_ON};
        ns_set("z", false, LG_NET_EGRESS_ON); /* n = 1 */
        struct lg_net_namespace via = {0};
        snprintf(via.via_interface, sizeof(via.via_interface), "tnvia");
        OK(lg_net_namespace_set(net, "v", &via, &on, &err)); /* n = 2 */
        const char *out = sh_out("ip -4 rule show; ip -4 route show table 20002");
        assert_non_null(strstr(out, "fwmark 0x4c000002 lookup 20002"));
        assert_non_null(strstr(out, "default dev tnvia"));
        assert_null(strstr(out, "0x4c000001"));
        via = (struct lg_net_namespace){.via_table = 100};
        OK(lg_net_namespace_set(net, "v", &via, &on, &err));
        out = sh_out("ip -4 rule show; ip -4 route show table 20002");
        assert_non_null(strstr(out, "fwmark 0x4c000002 lookup 100"));
        assert_null(strstr(out, "20002"));
        assert_null(strstr(out, "default dev"));
        OK(lg_net_namespace_set(net, "v", &(struct lg_net_namespace){0}, &on, &err));
        out = sh_out("ip -4 rule show");
        assert_null(strstr(out, "0x4c000002"));
        snprintf(via.via_interface, sizeof(via.via_interface), "tnvia");
        via.via_table = 0;
        OK(lg_net_namespace_set(net, "v", &via, &on, &err));
        /* Pod to pod stays on the host: the CIDR's rule goes ahead. */
        assert_non_null(strstr(sh_out("ip -4 rule show"), "999:\tfrom all to 10.253.0.0/24 lookup main"));
        pid_t v1 = kid(), v2 = kid();
        struct lg_net_addr V1 = sandbox(v1, "v", NULL), V2 = sandbox(v2, "v", NULL);
        REACHES(v1, V2.ip, PORT);
        REACHES(0, V1.ip, PORT);
        OK(lg_net_release(net, &V1, &err));
        OK(lg_net_release(net, &V2, &err));
        OK(lg_net_namespace_delete(net, "v", &err));
        out = sh_out("ip -4 rule show; ip -4 route show table 20002");
        assert_null(strstr(out, "0x4c000002"));
        assert_null(strstr(out, "tnvia"));
        SH("ip link del tnvia");
}

/* The policy id of a sandbox in the table (0: none). */
static unsigned long policy_of(const char *ip) {
        char key[32];
        const char *out = sh_out("nft list map inet %s policy_of", table);
        snprintf(key, sizeof(key), " %s : ", ip);
        const char *at = strstr(out, key);
        return at ? strtoul(at + strlen(key), NULL, 0) : 0;
}

/* A namespace's deletion takes its policies, its sandboxes' elements and
 * its rules; other namespaces keep theirs. */
static void test_namespace_delete(void **state) {
        (void) state;
        NEED_ROOT();
        struct lg_error err = {0};
        struct lg_net_stats empty, st;
        OK(lg_net_stats(net, &empty, &err));
        assert_int_equal(empty.elements, 0);
        ns_set("keep", false, LG_NET_EGRESS_ON);
        struct lg_net_addr k = sandbox(0, "keep", NULL);
        struct lg_net_stats kept;
        OK(lg_net_stats(net, &kept, &err));

        struct lg_net_namespace ns = {.isolate_sandboxes = true, .snat = "203.0.113.77", .via_table = 100};
        struct lg_net_policy p;
        OK(lg_net_policy_parse_mode("198.51.100.0/24,203.0.113.5:443", &p, &err));
        OK(lg_net_namespace_set(net, "gone", &ns, &p, &err));
        OK(lg_net_policy_set(net, "gone", "gone/app/x", &p, &err));
        OK(lg_net_policy_parse_mode("on", &p, &err));
        OK(lg_net_policy_set(net, "gone", "gone/pool/y", &p, &err));
        struct lg_net_addr s1 = sandbox(0, "gone", NULL), s2 = sandbox(0, "gone", "gone/app/x"),
                           s3 = sandbox(0, "gone", "gone/pool/y");
        OK(lg_net_stats(net, &st, &err));
        assert_true(st.elements > kept.elements);
        assert_int_equal(st.rules, empty.rules);
        /* A policy deleted: its sandbox falls back to the namespace's. */
        assert_int_not_equal(policy_of(s3.ip), policy_of(s1.ip));
        OK(lg_net_policy_delete(net, "gone/pool/y", &err));
        assert_int_equal(policy_of(s3.ip), policy_of(s1.ip));
        assert_int_equal(lg_net_assign(net, s3.ip, "gone", "gone/pool/y", &err), -ENOENT);

        OK(lg_net_namespace_delete(net, "gone", &err));
        OK(lg_net_stats(net, &st, &err));
        assert_int_equal(st.elements, kept.elements);
        assert_int_equal(st.rules, empty.rules);
        const char *out = sh_out("ip -4 rule show");
        assert_null(strstr(out, "0x4c0000"));
        assert_int_equal(lg_net_assign(net, s1.ip, "gone", NULL, &err), -ENOENT);
        assert_int_equal(lg_net_policy_delete(net, "gone/app/x", &err), -ENOENT);
        /* The addresses are still held until released. */
        assert_int_equal(st.addresses_used, 4);
        OK(lg_net_release(net, &s1, &err));
        OK(lg_net_release(net, &s2, &err));
        OK(lg_net_release(net, &s3, &err));
        OK(lg_net_release(net, &k, &err));
        OK(lg_net_namespace_delete(net, "keep", &err));
        OK(lg_net_stats(net, &st, &err));
        assert_int_equal(st.elements, 0);
        assert_int_equal(st.addresses_used, 0);
}

/* The rule count does not grow with sandboxes; their elements do, three
 * each. */
/* A connect() from the test's namespace (the host's view), non-blocking:
 * 0 or EINPROGRESS when a route sent the SYN somewhere, the errno when
 * routing refused it at once. No waiting: the answer is the route's. */
static int connect_errno(const char *ip, uint16_t port) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
        assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
        int r = connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ? errno : 0;
        close(fd);
        return r;
}

#define UNREACHABLE_ROUTES "ip -4 route show table main proto 76 type unreachable"

/* The CIDR's unreachable route: an address without a sandbox fails at
 * once instead of taking the host's default route (here one out of tsrc,
 * to a neighbour that does not exist: a SYN sent there is never
 * answered); a sandbox's /32 still wins; a restart replaces the route
 * rather than adding one and does not take it for a sandbox's. */
static void test_unreachable(void **state) {
        (void) state;
        NEED_ROOT();
        struct lg_error err = {0};
        const char *unused = "10.253.0.200";
        SH("ip neigh replace 198.18.0.2 lladdr 02:00:00:00:00:02 dev tsrc nud permanent && "
           "ip route replace default via 198.18.0.2 dev tsrc onlink");
        assert_string_equal(sh_out(UNREACHABLE_ROUTES), "unreachable 10.253.0.0/24 \n");
        assert_non_null(strstr(sh_out("ip -4 route get %s 2>&1", unused), "No route to host"));
        assert_int_equal(connect_errno(unused, PORT), EHOSTUNREACH);

        ns_set("a", false, LG_NET_EGRESS_ON);
        pid_t a1 = kid();
        struct lg_net_addr A1 = sandbox(a1, "a", NULL);
        REACHES(0, A1.ip, PORT);
        BLOCKED(a1, unused, PORT);

        /* Restart: one route still, and only A1's address found. */
        struct lg_net_stats st;
        lg_net_free(net);
        struct lg_net_config cfg = config();
        OK(lg_net_new(&cfg, &net, &err));
        assert_string_equal(sh_out(UNREACHABLE_ROUTES), "unreachable 10.253.0.0/24 \n");
        OK(lg_net_stats(net, &st, &err));
        assert_int_equal(st.addresses_used, 1);
        assert_int_equal(connect_errno(unused, PORT), EHOSTUNREACH);
        struct lg_net_addr got;
        OK(lg_net_reclaim(net, a1, &got, &err));
        assert_string_equal(got.ip, A1.ip);
        OK(lg_net_sweep(net, &err));
        OK(lg_net_stats(net, &st, &err));
        assert_int_equal(st.addresses_used, 1);
        REACHES(0, A1.ip, PORT);

        /* Without it the connect leaves by the default route (the defect):
         * the test sees the difference. An admin's route of the same
         * prefix is not ours to delete. */
        SH("ip route del unreachable 10.253.0.0/24 proto 76");
        assert_int_equal(connect_errno(unused, PORT), EINPROGRESS);
        SH("ip route add unreachable 10.253.0.0/24 proto static");
        OK(lg_nl_unreachable_delete("10.253.0.0", 24, &err));
        assert_non_null(strstr(sh_out("ip -4 route show type unreachable"), "10.253.0.0/24 proto static"));
        SH("ip route del unreachable 10.253.0.0/24 proto static");
        SH("ip route del default via 198.18.0.2 dev tsrc");
}

static void test_stats_constant(void **state) {
        (void) state;
        NEED_ROOT();
        struct lg_error err = {0};
        ns_set("a", false, LG_NET_EGRESS_ON);
        struct lg_net_stats s0, s10, s100;
        OK(lg_net_stats(net, &s0, &err));
        assert_true(s0.rules > 0);
        struct lg_net_addr a[100];
        for (int i = 0; i < 10; i++)
                a[i] = sandbox(0, "a", NULL);
        OK(lg_net_stats(net, &s10, &err));
        for (int i = 10; i < 100; i++)
                a[i] = sandbox(0, "a", NULL);
        OK(lg_net_stats(net, &s100, &err));
        assert_int_equal(s10.rules, s0.rules);
        assert_int_equal(s100.rules, s0.rules);
        assert_int_equal(s10.elements - s0.elements, 30);
        assert_int_equal(s100.elements - s0.elements, 300);
        assert_int_equal(s100.addresses_used, 100);
        assert_int_equal(s100.addresses_total, 253);
        assert_int_equal(s100.links, 0);
        pid_t k = kid();
        struct lg_net_addr ka = sandbox(k, "a", NULL);
        OK(lg_net_stats(net, &s100, &err));
        assert_int_equal(s100.links, 1);
        OK(lg_net_release(net, &ka, &err));
        for (int i = 0; i < 100; i++)
                OK(lg_net_release(net, &a[i], &err));
        OK(lg_net_stats(net, &s100, &err));
        assert_int_equal(s100.elements, s0.elements);
        assert_int_equal(s100.addresses_used, 0);
        /* The host end goes with the sandbox's namespace, removed by the
         * kernel shortly after its last process. */
        kill(k, SIGKILL);
        waitpid(k, NULL, 0);
        for (int i = 0; i < 1000; i++) {
                OK(lg_net_stats(net, &s100, &err));
                if (s100.links == 0)
                        break;
                usleep(10 * 1000);
        }
        assert_int_equal(s100.links, 0);
}

int main(void) {
        is_root = geteuid() == 0;
        if (is_root) {
                /* Everything in a network namespace of the test's own,
                 * with an address on a link listed ahead of the gateway's
                 * (as eth0's is on a host): the kernel's pick of a source
                 * for host routes that name none, which the sandboxes'
                 * servers must not see. */
                if (unshare(CLONE_NEWNET) < 0 ||
                    system("ip link set lo up && ip link add tsrc type veth peer name tsrcp && "
                           "ip addr add 198.18.0.1/32 dev tsrc && ip link set tsrc up") != 0) {
                        fprintf(stderr, "cannot make a network namespace: %s\n", strerror(errno));
                        return 1;
                }
                snprintf(table, sizeof(table), "tnet%d", (int) getpid());
        } else {
                fprintf(stderr, "not root: the network tests are skipped (parsing and bookkeeping run)\n");
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_policy_good),
                cmocka_unit_test(test_policy_bad),
                cmocka_unit_test(test_policy_fuzz),
                cmocka_unit_test(test_ipam_small),
                cmocka_unit_test(test_ipam_next_fit),
                cmocka_unit_test(test_ipam_large),
                cmocka_unit_test(test_config_bad),
                cmocka_unit_test_setup_teardown(test_reach, net_setup, net_teardown),
                cmocka_unit_test_setup_teardown(test_reclaim_sweep, net_setup, net_teardown),
                cmocka_unit_test_setup_teardown(test_exhaustion, net_setup, net_teardown),
                cmocka_unit_test_setup_teardown(test_stale_link, net_setup, net_teardown),
                cmocka_unit_test_setup_teardown(test_missed_at_start, net_setup, net_teardown),
                cmocka_unit_test_setup_teardown(test_namespace_bad, net_setup, net_teardown),
                cmocka_unit_test_setup_teardown(test_namespace_via, net_setup, net_teardown),
                cmocka_unit_test_setup_teardown(test_namespace_delete, net_setup, net_teardown),
                cmocka_unit_test_setup_teardown(test_stats_constant, net_setup, net_teardown),
                cmocka_unit_test_setup_teardown(test_unreachable, net_setup, net_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
