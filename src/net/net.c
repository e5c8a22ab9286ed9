/* The node's sandbox network (net.h): egress policies parsed and checked
 * here; addresses (ipam.c), links and routes (link.c) and the nftables
 * table (nft.c) driven from here. */
#include "net/net.h"

#include <arpa/inet.h>
#include <string.h>

#include "net/ipam.h"
#include "net/net-internal.h"

#define ENTRY_MAX 48   /* "255.255.255.255/32:65535-65535" is 30 */
#define MODE_MAX 4096  /* a comma-separated allowlist of LG_NET_ALLOW_MAX entries */

/* ---- addresses and policies ---- */

/* Digits only, no sign, blank or leading zero ("0" itself is fine), at
 * most max_digits, value <= hi. */
static bool parse_dec(const char *s, size_t len, size_t max_digits, uint32_t hi, uint32_t *ret) {
        if (len == 0 || len > max_digits || (s[0] == '0' && len > 1))
                return false;
        uint32_t v = 0;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (uint32_t) (s[i] - '0');
        }
        if (v > hi)
                return false;
        *ret = v;
        return true;
}

/* A dotted quad, strictly: four decimal octets without leading zeros
 * (inet_aton would read "010" as octal and "10.1" as 10.0.0.1). */
static bool parse_ipv4(const char *s, size_t len, uint32_t *ret) {
        uint32_t addr = 0;
        for (int i = 0; i < 4; i++) {
                size_t n = 0;
                while (n < len && s[n] != '.')
                        n++;
                uint32_t octet;
                if ((i < 3) != (n < len) || !parse_dec(s, n, 3, 255, &octet))
                        return false;
                addr = addr << 8 | octet;
                if (i < 3) {
                        s += n + 1;
                        len -= n + 1;
                }
        }
        *ret = addr;
        return true;
}

static uint32_t prefix_mask(unsigned prefix_len) {
        return prefix_len == 0 ? 0 : UINT32_MAX << (32 - prefix_len);
}

/* "A.B.C.D/P" (or, with bare_ok, "A.B.C.D" as a /32), host bits clear. */
static int parse_cidr(const char *s, size_t len, bool bare_ok, uint32_t *addr, unsigned *prefix_len,
                      const char **why) {
        const char *slash = memchr(s, '/', len);
        uint32_t a, p = 32;
        if (!parse_ipv4(s, slash ? (size_t) (slash - s) : len, &a)) {
                *why = "not an IPv4 address";
                return -EINVAL;
        }
        if (!slash && !bare_ok) {
                *why = "no prefix length (/N)";
                return -EINVAL;
        }
        if (slash && !parse_dec(slash + 1, len - (size_t) (slash + 1 - s), 2, 32, &p)) {
                *why = "the prefix length is not 0 to 32";
                return -EINVAL;
        }
        if (a & ~prefix_mask(p)) {
                *why = "host bits are set (the address is not the network's first)";
                return -EINVAL;
        }
        *addr = a;
        *prefix_len = p;
        return 0;
}

static void format_ipv4(uint32_t addr, char buf[LG_NET_IP_MAX]) {
        snprintf(buf, LG_NET_IP_MAX, "%u.%u.%u.%u", addr >> 24, addr >> 16 & 255, addr >> 8 & 255, addr & 255);
}

/* An entry as net.h and lg_net_policy_format() write it. */
static void format_allow(const struct lg_net_allow *a, char *buf, size_t size) {
        char ip[LG_NET_IP_MAX];
        format_ipv4(a->addr, ip);
        if (a->port_lo == 0)
                snprintf(buf, size, "%s/%u", ip, a->prefix_len);
        else if (a->port_lo == a->port_hi)
                snprintf(buf, size, "%s/%u:%u", ip, a->prefix_len, a->port_lo);
        else
                snprintf(buf, size, "%s/%u:%u-%u", ip, a->prefix_len, a->port_lo, a->port_hi);
}

/* One allowlist entry: CIDR, CIDR:PORT or CIDR:LO-HI. */
static int parse_allow_entry(const char *s, size_t len, struct lg_net_allow *out, struct lg_error *err) {
        char shown[ENTRY_MAX + 8], copy[ENTRY_MAX + 1];
        if (len > ENTRY_MAX) {
                memcpy(copy, s, ENTRY_MAX);
                copy[ENTRY_MAX] = '\0';
                lg_printable(copy, shown, sizeof(shown));
                return lg_error_setm(err, EINVAL, "egress allowlist entry `%s...` is too long", shown);
        }
        memcpy(copy, s, len);
        copy[len] = '\0';
        lg_printable(copy, shown, sizeof(shown));

        const char *colon = memchr(s, ':', len);
        size_t cidr_len = colon ? (size_t) (colon - s) : len;
        const char *why = NULL;
        struct lg_net_allow a = {0};
        if (parse_cidr(s, cidr_len, true, &a.addr, &a.prefix_len, &why) < 0)
                return lg_error_setm(err, EINVAL, "egress allowlist entry `%s`: %s", shown, why);
        if (colon) {
                const char *ports = colon + 1;
                size_t plen = len - cidr_len - 1;
                const char *dash = memchr(ports, '-', plen);
                uint32_t lo, hi;
                size_t lo_len = dash ? (size_t) (dash - ports) : plen;
                if (!parse_dec(ports, lo_len, 5, 65535, &lo) ||
                    (dash && !parse_dec(dash + 1, plen - lo_len - 1, 5, 65535, &hi)))
                        return lg_error_setm(err, EINVAL,
                                             "egress allowlist entry `%s`: ports are PORT or LO-HI, 1 to 65535",
                                             shown);
                if (!dash)
                        hi = lo;
                if (lo == 0)
                        return lg_error_setm(err, EINVAL, "egress allowlist entry `%s`: port 0", shown);
                if (lo > hi)
                        return lg_error_setm(err, EINVAL, "egress allowlist entry `%s`: %u > %u", shown, lo, hi);
                a.port_lo = (uint16_t) lo;
                a.port_hi = (uint16_t) hi;
        }
        *out = a;
        return 0;
}

static bool ranges_meet(uint32_t a_lo, uint32_t a_hi, uint32_t b_lo, uint32_t b_hi) {
        return a_lo <= b_hi && b_lo <= a_hi;
}

/* A policy as a caller may have built it: the fields in range, and no two
 * entries overlapping (the nftables interval sets refuse overlaps; an
 * entry with ports and one without go to different sets). */
static int check_policy(const struct lg_net_policy *p, struct lg_error *err) {
        if (!p)
                return lg_error_setm(err, EINVAL, "no egress policy");
        if (p->egress != LG_NET_EGRESS_OFF && p->egress != LG_NET_EGRESS_ON && p->egress != LG_NET_EGRESS_ALLOW)
                return lg_error_setm(err, EINVAL, "egress policy %d is not off, on or an allowlist", (int) p->egress);
        if (p->egress != LG_NET_EGRESS_ALLOW)
                return 0;
        if (p->n_allow > LG_NET_ALLOW_MAX)
                return lg_error_setm(err, EINVAL, "an egress allowlist has at most %d entries, not %zu",
                                     LG_NET_ALLOW_MAX, p->n_allow);
        char a_s[64], b_s[64];
        for (size_t i = 0; i < p->n_allow; i++) {
                const struct lg_net_allow *a = &p->allow[i];
                format_allow(a, a_s, sizeof(a_s));
                if (a->prefix_len > 32 || (a->addr & ~prefix_mask(a->prefix_len)))
                        return lg_error_setm(err, EINVAL, "egress allowlist entry `%s`: not a network", a_s);
                if ((a->port_lo == 0) != (a->port_hi == 0) || a->port_lo > a->port_hi)
                        return lg_error_setm(err, EINVAL, "egress allowlist entry `%s`: bad port range", a_s);
                for (size_t j = 0; j < i; j++) {
                        const struct lg_net_allow *b = &p->allow[j];
                        if ((a->port_lo == 0) != (b->port_lo == 0))
                                continue;
                        uint32_t mask = prefix_mask(a->prefix_len < b->prefix_len ? a->prefix_len : b->prefix_len);
                        if ((a->addr & mask) != (b->addr & mask) ||
                            !ranges_meet(a->port_lo, a->port_hi, b->port_lo, b->port_hi))
                                continue;
                        format_allow(b, b_s, sizeof(b_s));
                        return lg_error_setm(err, EINVAL, "egress allowlist entries `%s` and `%s` overlap", b_s, a_s);
                }
        }
        return 0;
}

/* Entries given as (pointer, length) pairs. */
struct span {
        const char *s;
        size_t len;
};

static int parse_spans(const struct span *e, size_t n, struct lg_net_policy *out, struct lg_error *err) {
        if (n == 0)
                return lg_error_setm(err, EINVAL, "an empty egress allowlist allows nothing: say \"off\"");
        if (n > LG_NET_ALLOW_MAX)
                return lg_error_setm(err, EINVAL, "an egress allowlist has at most %d entries, not %zu",
                                     LG_NET_ALLOW_MAX, n);
        struct lg_net_policy p = {.egress = LG_NET_EGRESS_ALLOW, .n_allow = n};
        for (size_t i = 0; i < n; i++) {
                if (!e[i].s)
                        return lg_error_setm(err, EINVAL, "egress allowlist entry %zu is missing", i + 1);
                if (e[i].len == 0)
                        return lg_error_setm(err, EINVAL, "egress allowlist entry %zu is empty", i + 1);
                int r = parse_allow_entry(e[i].s, e[i].len, &p.allow[i], err);
                if (r < 0)
                        return r;
        }
        int r = check_policy(&p, err);
        if (r < 0)
                return r;
        *out = p;
        return 0;
}

int lg_net_policy_parse_allow(const char *const *entries, size_t n, struct lg_net_policy *out,
                              struct lg_error *err) {
        if (n > LG_NET_ALLOW_MAX)
                return lg_error_setm(err, EINVAL, "an egress allowlist has at most %d entries, not %zu",
                                     LG_NET_ALLOW_MAX, n);
        if (n > 0 && !entries)
                return lg_error_setm(err, EINVAL, "no egress allowlist entries");
        struct span e[LG_NET_ALLOW_MAX];
        for (size_t i = 0; i < n; i++)
                e[i] = (struct span) {entries[i], entries[i] ? strnlen(entries[i], ENTRY_MAX + 1) : 0};
        return parse_spans(e, n, out, err);
}

int lg_net_policy_parse_mode(const char *mode, struct lg_net_policy *out, struct lg_error *err) {
        if (!mode)
                return lg_error_setm(err, EINVAL, "no egress policy");
        if (strcmp(mode, "on") == 0 || strcmp(mode, "off") == 0) {
                *out = (struct lg_net_policy) {.egress = mode[1] == 'n' ? LG_NET_EGRESS_ON : LG_NET_EGRESS_OFF};
                return 0;
        }
        size_t len = strnlen(mode, MODE_MAX + 1);
        char shown[64];
        lg_printable(mode, shown, sizeof(shown));
        if (len > MODE_MAX)
                return lg_error_setm(err, EINVAL, "egress policy `%s` is too long", shown);
        if (len == 0)
                return lg_error_setm(err, EINVAL, "egress policy is empty: say on, off or an allowlist");
        /* A comma-separated allowlist (the CLI's and the pod annotation's
         * form); blanks around entries are fine. */
        struct span e[LG_NET_ALLOW_MAX];
        size_t n = 0;
        for (const char *p = mode;;) {
                const char *comma = strchr(p, ',');
                const char *end = comma ? comma : p + strlen(p);
                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
                const char *q = end;
                while (q > p && (q[-1] == ' ' || q[-1] == '\t'))
                        q--;
                if (n == LG_NET_ALLOW_MAX)
                        return lg_error_setm(err, EINVAL, "an egress allowlist has at most %d entries",
                                             LG_NET_ALLOW_MAX);
                e[n++] = (struct span) {p, (size_t) (q - p)};
                if (!comma)
                        break;
                p = comma + 1;
        }
        if (n == 1 && strspn(mode, "0123456789./:- \t") != len)
                return lg_error_setm(err, EINVAL, "egress policy `%s` is not on, off or an allowlist", shown);
        return parse_spans(e, n, out, err);
}

void lg_net_policy_format(const struct lg_net_policy *p, char *buf, size_t size) {
        if (size == 0)
                return;
        if (!p || p->egress != LG_NET_EGRESS_ALLOW) {
                snprintf(buf, size, "%s", p && p->egress == LG_NET_EGRESS_ON ? "on" : "off");
                return;
        }
        size_t at = (size_t) snprintf(buf, size, "allow");
        for (size_t i = 0; i < p->n_allow && i < LG_NET_ALLOW_MAX && at < size; i++) {
                char e[64];
                format_allow(&p->allow[i], e, sizeof(e));
                at += (size_t) snprintf(buf + at, size - at, "%s%s", i ? ", " : " ", e);
        }
        if (p->n_allow == 0 && at < size)
                snprintf(buf + at, size - at, " nothing");
}
