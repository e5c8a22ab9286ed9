/* Unit tests of the sandbox network (src/net): egress policy parsing with
 * hostile and mutated input, and the address bookkeeping, unprivileged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "common/util.h"
#include "net/ipam.h"
#include "net/net.h"
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
        /* An entry with ports and one without do not overlap (two sets). */
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

        /* Overlaps name both entries. */
        const char *ov[] = {"10.0.0.0/8", "10.1.0.0/16"};
        assert_int_equal(lg_net_policy_parse_allow(ov, 2, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "10.0.0.0/8"));
        assert_non_null(strstr(err.msg, "10.1.0.0/16"));
        const char *ovp[] = {"10.0.0.0/8:80-443", "10.1.0.0/16:443"};
        assert_int_equal(lg_net_policy_parse_allow(ovp, 2, &p, &err), -EINVAL);
        const char *dup[] = {"1.2.3.4", "1.2.3.4/32"};
        assert_int_equal(lg_net_policy_parse_allow(dup, 2, &p, &err), -EINVAL);

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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_policy_good),
                cmocka_unit_test(test_policy_bad),
                cmocka_unit_test(test_policy_fuzz),
                cmocka_unit_test(test_ipam_small),
                cmocka_unit_test(test_ipam_next_fit),
                cmocka_unit_test(test_ipam_large),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
