/* The node's sandbox network (net.h): egress policies parsed and checked
 * here; addresses (ipam.c), links and routes (link.c) and the nftables
 * table (nft.c) driven from here. */
#include "net/net.h"

#include <net/if.h>
#include <pthread.h>
#include <search.h>
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

/* A policy as a caller may have built it: the fields in range. Entries
 * may overlap: nft.c makes them disjoint for its interval sets. */
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
        for (size_t i = 0; i < p->n_allow; i++) {
                const struct lg_net_allow *a = &p->allow[i];
                if (a->prefix_len <= 32 && !(a->addr & ~prefix_mask(a->prefix_len)) &&
                    (a->port_lo == 0) == (a->port_hi == 0) && a->port_lo <= a->port_hi)
                        continue;
                char shown[64];
                format_allow(a, shown, sizeof(shown));
                return lg_error_setm(err, EINVAL, "egress allowlist entry `%s`: not a network and port range", shown);
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

/* ---- the network ---- */

#define NS_MARK_BASE 0x4c000000u /* a namespace's meta mark: base | n */
#define NS_MAX 0xffffu           /* namespaces per node (n = 1..NS_MAX) */
#define NS_TABLE_BASE 20000u     /* a namespace's own route table: base + n */
#define NS_NAME_MAX 64           /* as the node agent's (struct lg_agent_net) */

struct pol;

/* A namespace with network settings. */
struct ns {
        char name[NS_NAME_MAX]; /* first: the key of the tree */
        uint32_t n;
        struct lg_net_namespace cfg;
        struct pol *def; /* its default policy, named as it is */
};

/* A named egress policy of a namespace. */
struct pol {
        char name[LG_NET_NAME_MAX]; /* first: the key of the tree */
        uint32_t id;
        struct ns *ns;
        struct lg_net_policy p;
};

struct lg_net {
        /* Everything below, and every nft call (one nft_ctx). Netlink
         * calls run outside it. */
        pthread_mutex_t lock;
        /* Namespace changes and teardown, one at a time, held across their
         * netlink calls (taken before lock). */
        pthread_mutex_t cfg_lock;
        char cidr[24], gateway[LG_NET_IP_MAX], prefix[8];
        char network_ip[LG_NET_IP_MAX];
        uint32_t network;
        unsigned prefix_len;
        lg_ipam *ipam;
        lg_nft *nft;
        void *namespaces, *policies; /* tsearch(3) trees, by name */
        uint64_t ns_used[(NS_MAX + 1) / 64];
        uint32_t next_policy_id;
        bool swept; /* lg_net_sweep ran: every live sandbox's address is held */
};

static uint32_t ns_mark(uint32_t n) { return NS_MARK_BASE | n; }

/* Tree nodes start with their name: a name is its own key. */
static int by_name(const void *a, const void *b) { return strcmp(a, b); }

static struct ns *ns_find(lg_net *net, const char *name) {
        void **node = tfind(name, &net->namespaces, by_name);
        return node ? *node : NULL;
}

static struct pol *pol_find(lg_net *net, const char *name) {
        void **node = tfind(name, &net->policies, by_name);
        return node ? *node : NULL;
}

static void host_if_of(const lg_net *net, uint32_t addr, char buf[LG_NET_IFNAME_MAX]) {
        snprintf(buf, LG_NET_IFNAME_MAX, "%s%u", net->prefix, addr - net->network);
}

static void fill_addr(const lg_net *net, uint32_t addr, struct lg_net_addr *out) {
        format_ipv4(addr, out->ip);
        host_if_of(net, addr, out->host_if);
}

/* A whole NUL-terminated dotted quad in at most max bytes. */
static bool ip_string(const char *s, size_t max, uint32_t *addr) {
        size_t len = s ? strnlen(s, max) : max;
        return len < max && parse_ipv4(s, len, addr);
}

/* A sandbox address of the CIDR given as a string: -EINVAL when it is no
 * address, -ENOENT when not one of ours. */
static int sandbox_ip(const lg_net *net, const char *ip, uint32_t *addr, struct lg_error *err) {
        char shown[32];
        if (!ip_string(ip, LG_NET_IP_MAX, addr)) {
                lg_printable(ip, shown, sizeof(shown));
                return lg_error_setm(err, EINVAL, "`%s` is not an IPv4 address", shown);
        }
        if (!lg_ipam_sandbox_addr(net->ipam, *addr))
                return lg_error_setm(err, ENOENT, "%s is not a sandbox address of pod CIDR %s", ip, net->cidr);
        return 0;
}

/* 1 to max-1 bytes, no control characters. */
static int check_name(const char *what, const char *name, size_t max, struct lg_error *err) {
        size_t len = name ? strnlen(name, max) : 0;
        char shown[64];
        lg_printable(name, shown, sizeof(shown));
        if (len == 0)
                return lg_error_setm(err, EINVAL, "no %s name", what);
        if (len >= max)
                return lg_error_setm(err, EINVAL, "%s name `%s` is longer than %zu bytes", what, shown, max - 1);
        for (size_t i = 0; i < len; i++)
                if ((unsigned char) name[i] < 0x20 || name[i] == 0x7f)
                        return lg_error_setm(err, EINVAL, "%s name `%s` holds a control character", what, shown);
        return 0;
}

/* Letters and digits (and '_' when underscore), a letter first. */
static bool ident(const char *s, size_t max, bool underscore) {
        size_t len = s ? strnlen(s, max + 1) : 0;
        if (len == 0 || len > max || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      (underscore && c == '_')))
                        return false;
        }
        return true;
}

/* Ranges a pod CIDR must stay out of. */
static const struct {
        uint32_t addr;
        unsigned len;
        const char *what;
} forbidden[] = {
        {0x00000000u, 8, "0.0.0.0/8 (this network)"},
        {0x7f000000u, 8, "127.0.0.0/8 (loopback)"},
        {0xa9fe0000u, 16, "169.254.0.0/16 (link-local, cloud metadata)"},
        {0xe0000000u, 3, "224.0.0.0/3 (multicast and reserved)"},
};

static int check_config(const char *cidr, const char *table, const char *prefix, uint32_t *network,
                        unsigned *prefix_len, struct lg_error *err) {
        char shown[64];
        lg_printable(cidr, shown, sizeof(shown));
        size_t len = strnlen(cidr, 20);
        const char *why = "too long";
        if (len > 18 || parse_cidr(cidr, len, false, network, prefix_len, &why) < 0)
                return lg_error_setm(err, EINVAL, "pod CIDR `%s`: %s", shown, why);
        if (*prefix_len < 8 || *prefix_len > 28)
                return lg_error_setm(err, EINVAL, "pod CIDR `%s`: the prefix length must be 8 to 28", shown);
        for (size_t i = 0; i < ARRAY_SIZE(forbidden); i++) {
                uint32_t mask = prefix_mask(*prefix_len < forbidden[i].len ? *prefix_len : forbidden[i].len);
                if ((*network & mask) == (forbidden[i].addr & mask))
                        return lg_error_setm(err, EINVAL, "pod CIDR `%s` overlaps %s", shown, forbidden[i].what);
        }
        lg_printable(table, shown, sizeof(shown));
        if (!ident(table, 31, true))
                return lg_error_setm(err, EINVAL, "nft table name `%s`: 1 to 31 letters, digits or _, a letter first",
                                     shown);
        lg_printable(prefix, shown, sizeof(shown));
        if (!ident(prefix, 6, false))
                return lg_error_setm(err, EINVAL, "link prefix `%s`: 1 to 6 letters or digits, a letter first", shown);
        return 0;
}

/* lg_nl_routes_list: a live sandbox's host route holds its address. */
static int found_cb(const char *ip, const char *ifname, void *data) {
        lg_net *net = data;
        uint32_t addr;
        char want[LG_NET_IFNAME_MAX];
        if (!ip_string(ip, LG_NET_IP_MAX, &addr) || !lg_ipam_sandbox_addr(net->ipam, addr))
                return 0;
        host_if_of(net, addr, want);
        if (strcmp(ifname, want) != 0)
                return 0;
        int r = lg_ipam_take(net->ipam, addr, LG_IPAM_FOUND);
        return r == -ENOMEM ? r : 0;
}

int lg_net_new(const struct lg_net_config *cfg, lg_net **ret, struct lg_error *err) {
        const char *cidr = cfg && cfg->cidr ? cfg->cidr : LG_NET_DEFAULT_CIDR;
        const char *table = cfg && cfg->table ? cfg->table : "legion";
        const char *prefix = cfg && cfg->link_prefix ? cfg->link_prefix : "lgv";
        uint32_t network;
        unsigned prefix_len;
        int r = check_config(cidr, table, prefix, &network, &prefix_len, err);
        if (r < 0)
                return r;

        lg_net *net = calloc(1, sizeof(*net));
        if (!net)
                return lg_error_set(err, ENOMEM, "network");
        pthread_mutex_init(&net->lock, NULL);
        pthread_mutex_init(&net->cfg_lock, NULL);
        net->network = network;
        net->prefix_len = prefix_len;
        format_ipv4(network, net->network_ip);
        net->next_policy_id = 1;
        snprintf(net->cidr, sizeof(net->cidr), "%s", cidr);
        format_ipv4(network + 1, net->gateway);
        snprintf(net->prefix, sizeof(net->prefix), "%s", prefix);
        r = lg_ipam_new(network, prefix_len, &net->ipam);
        if (r < 0) {
                lg_error_set(err, -r, "pod CIDR %s", cidr);
                goto fail;
        }

        char dummy[LG_NET_IFNAME_MAX];
        snprintf(dummy, sizeof(dummy), "%s0", prefix);
        struct lg_nft_config nc = {.table = table, .cidr = net->cidr, .gateway = net->gateway, .link_prefix = prefix};
        if ((r = lg_nl_enable_forwarding(err)) < 0 || (r = lg_nl_dummy_ensure(dummy, net->gateway, err)) < 0 ||
            (r = lg_nft_open(&nc, &net->nft, err)) < 0 || (r = lg_nl_rules_flush(err)) < 0 ||
            (r = lg_nl_rule_to_main(net->network_ip, prefix_len, err)) < 0 ||
            (r = lg_nl_unreachable_set(net->network_ip, prefix_len, err)) < 0 ||
            (r = lg_nl_routes_list(found_cb, net, err)) < 0)
                goto fail;
        *ret = net;
        return 0;
fail:
        lg_net_free(net);
        return r;
}

void lg_net_free(lg_net *net) {
        if (!net)
                return;
        lg_nft_close(net->nft);
        lg_ipam_free(net->ipam);
        tdestroy(net->policies, free);
        tdestroy(net->namespaces, free);
        pthread_mutex_destroy(&net->lock);
        pthread_mutex_destroy(&net->cfg_lock);
        free(net);
}

const char *lg_net_cidr(const lg_net *net) { return net->cidr; }
const char *lg_net_gateway(const lg_net *net) { return net->gateway; }

/* The first error of several steps that all run. */
static void keep_first(int *ret, int r, struct lg_error *err, const struct lg_error *e) {
        if (r < 0 && *ret >= 0) {
                *ret = r;
                if (err)
                        *err = *e;
        }
}

/* Host ends `<prefix><n>` (n > 0): names collected, since a link list
 * must not change while it is read. */
struct links {
        const char *prefix;
        char (*name)[LG_NET_IFNAME_MAX];
        size_t n, cap;
};

static int links_cb(const char *ifname, void *data) {
        struct links *l = data;
        size_t pl = strlen(l->prefix);
        const char *num = ifname + pl;
        /* Only ours: another prefix may start with this one. */
        if (strncmp(ifname, l->prefix, pl) != 0 || !num[0] || num[0] == '0' || strspn(num, "0123456789") != strlen(num))
                return 0;
        if (lg_grow((void **) &l->name, &l->cap, l->n, sizeof(*l->name), 64) < 0)
                return -ENOMEM;
        snprintf(l->name[l->n++], LG_NET_IFNAME_MAX, "%s", ifname);
        return 0;
}

int lg_net_teardown(lg_net *net, struct lg_error *err) {
        if (!net)
                return 0;
        int ret = 0, r;
        struct lg_error e = {0};
        pthread_mutex_lock(&net->cfg_lock);
        pthread_mutex_lock(&net->lock);
        r = lg_nft_drop_table(net->nft, &e);
        keep_first(&ret, r, err, &e);
        uint64_t ns_used[ARRAY_SIZE(net->ns_used)];
        memcpy(ns_used, net->ns_used, sizeof(ns_used));
        memset(net->ns_used, 0, sizeof(net->ns_used));
        tdestroy(net->policies, free);
        tdestroy(net->namespaces, free);
        net->policies = net->namespaces = NULL;
        uint32_t addr = 0;
        while (lg_ipam_next(net->ipam, &addr))
                lg_ipam_put(net->ipam, addr);
        pthread_mutex_unlock(&net->lock);

        for (uint32_t n = 1; n <= NS_MAX; n++) {
                if (!(ns_used[n / 64] >> (n % 64) & 1))
                        continue;
                r = lg_nl_rule_delete(ns_mark(n), &e);
                keep_first(&ret, r, err, &e);
                r = lg_nl_table_flush(NS_TABLE_BASE + n, &e);
                keep_first(&ret, r, err, &e);
        }
        r = lg_nl_rule_to_main_delete(net->network_ip, net->prefix_len, &e);
        keep_first(&ret, r, err, &e);
        r = lg_nl_unreachable_delete(net->network_ip, net->prefix_len, &e);
        keep_first(&ret, r, err, &e);
        struct links l = {.prefix = net->prefix};
        r = lg_nl_links_list(net->prefix, links_cb, &l, &e);
        keep_first(&ret, r, err, &e);
        for (size_t i = 0; i < l.n; i++) {
                r = lg_nl_link_delete(l.name[i], &e);
                keep_first(&ret, r == -ENODEV ? 0 : r, err, &e);
        }
        free(l.name);
        char dummy[LG_NET_IFNAME_MAX];
        snprintf(dummy, sizeof(dummy), "%s0", net->prefix);
        r = lg_nl_link_delete(dummy, &e);
        keep_first(&ret, r == -ENODEV ? 0 : r, err, &e);
        pthread_mutex_unlock(&net->cfg_lock);
        return ret;
}

int lg_net_reserve(lg_net *net, struct lg_net_addr *out, struct lg_error *err) {
        uint32_t addr;
        pthread_mutex_lock(&net->lock);
        int r = lg_ipam_reserve(net->ipam, &addr);
        /* Until the sweep, an address whose host end exists may belong to
         * a live sandbox the start-up route list missed (a dump the kernel
         * interrupted on every try, under churn of links: it may skip
         * entries): hold it as found (reclaimed by its owner or swept)
         * rather than hand it out, where attach would delete the link of
         * a running sandbox. After the sweep such a link is stale. */
        for (unsigned tries = lg_ipam_total(net->ipam); r >= 0 && !net->swept && tries; tries--) {
                char host_if[LG_NET_IFNAME_MAX];
                host_if_of(net, addr, host_if);
                if (if_nametoindex(host_if) == 0)
                        break;
                lg_ipam_slot(net->ipam, addr)->state = LG_IPAM_FOUND;
                r = lg_ipam_reserve(net->ipam, &addr);
        }
        unsigned used = lg_ipam_used(net->ipam);
        pthread_mutex_unlock(&net->lock);
        if (r == -ENOSPC)
                return lg_error_setm(err, ENOSPC, "pod CIDR %s is exhausted (%u addresses in use)", net->cidr, used);
        if (r < 0)
                return lg_error_set(err, -r, "reserve an address");
        fill_addr(net, addr, out);
        return 0;
}

/* The state of an address (FREE when not in use). */
static enum lg_ipam_state addr_state(lg_net *net, uint32_t addr) {
        pthread_mutex_lock(&net->lock);
        const struct lg_ipam_slot *slot = lg_ipam_slot(net->ipam, addr);
        enum lg_ipam_state state = slot ? slot->state : LG_IPAM_FREE;
        pthread_mutex_unlock(&net->lock);
        return state;
}

int lg_net_attach(lg_net *net, pid_t pid, const struct lg_net_addr *addr, struct lg_error *err) {
        uint32_t a;
        if (!addr)
                return lg_error_setm(err, EINVAL, "no address to attach");
        int r = sandbox_ip(net, addr->ip, &a, err);
        if (r < 0)
                return r;
        if (addr_state(net, a) != LG_IPAM_USED)
                return lg_error_setm(err, ENOENT, "address %s is not reserved", addr->ip);
        char host_if[LG_NET_IFNAME_MAX];
        host_if_of(net, a, host_if);
        r = lg_nl_veth_attach(pid, host_if, addr->ip, net->gateway, err);
        if (r != -EEXIST)
                return r;
        /* The host end of a sandbox that had this address before and
         * whose network namespace the kernel has not removed yet (or
         * that something still holds): the address is ours again, the
         * link is stale. */
        r = lg_nl_link_delete(host_if, err);
        if (r < 0 && r != -ENODEV)
                return lg_error_wrap(err, r, "remove the stale host end of %s", addr->ip);
        return lg_nl_veth_attach(pid, host_if, addr->ip, net->gateway, err);
}

int lg_net_reclaim(lg_net *net, pid_t pid, struct lg_net_addr *out, struct lg_error *err) {
        char ip[LG_NET_IP_MAX], host_if[LG_NET_IFNAME_MAX], want[LG_NET_IFNAME_MAX] = "";
        int r = lg_nl_veth_read(pid, ip, host_if, err);
        if (r < 0)
                return r;
        uint32_t addr;
        if (ip_string(ip, sizeof(ip), &addr) && lg_ipam_sandbox_addr(net->ipam, addr))
                host_if_of(net, addr, want);
        if (strcmp(want, host_if) != 0)
                return lg_error_setm(err, ENOENT, "pid %d has %s on %s, not an address of pod CIDR %s", (int) pid, ip,
                                     host_if, net->cidr);
        /* Its host route as attach makes it now (a sandbox of an older
         * legiond has one without the gateway as source). */
        r = lg_nl_host_route_set(host_if, ip, net->gateway, err);
        if (r < 0)
                return lg_error_wrap(err, r, "reclaim %s of pid %d", ip, (int) pid);
        pthread_mutex_lock(&net->lock);
        struct lg_ipam_slot *slot = lg_ipam_slot(net->ipam, addr);
        if (!slot)
                r = lg_ipam_take(net->ipam, addr, LG_IPAM_USED); /* its route was not found: it is live all the same */
        else if (slot->state == LG_IPAM_FOUND)
                slot->state = LG_IPAM_USED;
        else if (slot->state == LG_IPAM_RELEASING)
                r = -ENOENT;
        pthread_mutex_unlock(&net->lock);
        if (r == -ENOENT)
                return lg_error_setm(err, ENOENT, "address %s of pid %d is being released", ip, (int) pid);
        if (r < 0)
                return lg_error_set(err, -r, "reclaim %s", ip);
        fill_addr(net, addr, out);
        return 0;
}

int lg_net_sweep(lg_net *net, struct lg_error *err) {
        pthread_mutex_lock(&net->lock);
        net->swept = true;
        _cleanup_free_ uint32_t *gone = malloc((lg_ipam_used(net->ipam) + 1) * sizeof(*gone));
        _cleanup_free_ bool *ok = NULL;
        size_t n = 0;
        for (uint32_t addr = 0; gone && lg_ipam_next(net->ipam, &addr);) {
                struct lg_ipam_slot *slot = lg_ipam_slot(net->ipam, addr);
                if (slot->state == LG_IPAM_FOUND) {
                        slot->state = LG_IPAM_RELEASING;
                        gone[n++] = addr;
                }
        }
        pthread_mutex_unlock(&net->lock);
        if (!gone || !(ok = calloc(n + 1, sizeof(*ok)))) {
                pthread_mutex_lock(&net->lock);
                for (size_t i = 0; gone && i < n; i++) /* back as they were */
                        lg_ipam_slot(net->ipam, gone[i])->state = LG_IPAM_FOUND;
                pthread_mutex_unlock(&net->lock);
                return lg_error_set(err, ENOMEM, "sweep");
        }

        int ret = 0;
        struct lg_error e = {0};
        for (size_t i = 0; i < n; i++) {
                char host_if[LG_NET_IFNAME_MAX];
                host_if_of(net, gone[i], host_if);
                int r = lg_nl_link_delete(host_if, &e);
                ok[i] = r >= 0 || r == -ENODEV;
                keep_first(&ret, ok[i] ? 0 : r, err, &e);
        }
        pthread_mutex_lock(&net->lock);
        for (size_t i = 0; i < n; i++) {
                if (ok[i])
                        lg_ipam_put(net->ipam, gone[i]);
                else /* a later sweep tries again */
                        lg_ipam_slot(net->ipam, gone[i])->state = LG_IPAM_FOUND;
        }
        pthread_mutex_unlock(&net->lock);
        return ret;
}

int lg_net_assign(lg_net *net, const char *ip, const char *namespace, const char *policy, struct lg_error *err) {
        uint32_t addr;
        int r = sandbox_ip(net, ip, &addr, err);
        if (r < 0)
                return r;
        char shown[64];
        pthread_mutex_lock(&net->lock);
        struct ns *ns = namespace ? ns_find(net, namespace) : NULL;
        struct pol *pol = !ns ? NULL : policy ? pol_find(net, policy) : ns->def;
        struct lg_ipam_slot *slot = lg_ipam_slot(net->ipam, addr);
        if (!ns) {
                lg_printable(namespace, shown, sizeof(shown));
                r = lg_error_setm(err, ENOENT, "namespace `%s` has no network settings", shown);
        } else if (!pol || pol->ns != ns) {
                lg_printable(policy, shown, sizeof(shown));
                r = lg_error_setm(err, ENOENT, "namespace `%s` has no egress policy `%s`", ns->name, shown);
        } else if (!slot || slot->state != LG_IPAM_USED) {
                r = lg_error_setm(err, ENOENT, "address %s is not in use", ip);
        } else if (slot->ns_mark != ns_mark(ns->n) || slot->policy_id != pol->id) {
                r = lg_nft_sandbox_add(net->nft, ip, ns_mark(ns->n), pol->id, err);
                if (r >= 0) {
                        slot->ns_mark = ns_mark(ns->n);
                        slot->policy_id = pol->id;
                }
        }
        pthread_mutex_unlock(&net->lock);
        return r;
}

int lg_net_release(lg_net *net, const struct lg_net_addr *addr, struct lg_error *err) {
        uint32_t a;
        if (!addr)
                return lg_error_setm(err, EINVAL, "no address to release");
        int r = sandbox_ip(net, addr->ip, &a, err);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        pthread_mutex_lock(&net->lock);
        struct lg_ipam_slot *slot = lg_ipam_slot(net->ipam, a);
        if (!slot || slot->state == LG_IPAM_RELEASING) {
                pthread_mutex_unlock(&net->lock);
                return 0;
        }
        /* The host end is not deleted here: it goes with the sandbox's
         * network namespace, which the kernel removes in batches off
         * everyone's path, where a delete here would cost ~35 ms of this
         * thread (RTNL, RCU grace periods). Without its elements the
         * address reaches nothing; lg_net_attach removes a link still
         * there when the address is handed out again (next-fit makes
         * that late). */
        r = slot->ns_mark ? lg_nft_sandbox_del(net->nft, addr->ip, err) : 0;
        if (r >= 0)
                lg_ipam_put(net->ipam, a);
        pthread_mutex_unlock(&net->lock);
        return r;
}

/* ---- namespaces and policies ---- */

static int check_namespace(const char *name, const struct lg_net_namespace *c, const char *prefix,
                           struct lg_error *err) {
        uint32_t a;
        char shown[64];
        if (!c)
                return lg_error_setm(err, EINVAL, "namespace `%s`: no network settings", name);
        if (c->snat[0] && !ip_string(c->snat, sizeof(c->snat), &a)) {
                lg_printable(c->snat, shown, sizeof(shown));
                return lg_error_setm(err, EINVAL, "namespace `%s`: snat `%s` is not an IPv4 address", name, shown);
        }
        if (c->via_gateway[0] && !ip_string(c->via_gateway, sizeof(c->via_gateway), &a)) {
                lg_printable(c->via_gateway, shown, sizeof(shown));
                return lg_error_setm(err, EINVAL, "namespace `%s`: via gateway `%s` is not an IPv4 address", name,
                                     shown);
        }
        if (c->via_gateway[0] && !c->via_interface[0])
                return lg_error_setm(err, EINVAL, "namespace `%s`: a via gateway needs a via interface", name);
        if (c->via_interface[0] && c->via_table)
                return lg_error_setm(err, EINVAL, "namespace `%s`: via an interface or a route table, not both", name);
        if (c->via_table == 255 || c->via_table == UINT32_MAX ||
            (c->via_table >= NS_TABLE_BASE && c->via_table <= NS_TABLE_BASE + NS_MAX))
                return lg_error_setm(err, EINVAL, "namespace `%s`: route table %u is not one to route by (%u to %u are "
                                     "namespaces' own)", name, c->via_table, NS_TABLE_BASE, NS_TABLE_BASE + NS_MAX);
        if (c->via_interface[0]) {
                size_t len = strnlen(c->via_interface, sizeof(c->via_interface));
                lg_printable(len < sizeof(c->via_interface) ? c->via_interface : "(too long)", shown, sizeof(shown));
                if (len == sizeof(c->via_interface) ||
                    (strncmp(c->via_interface, prefix, strlen(prefix)) == 0))
                        return lg_error_setm(err, EINVAL, "namespace `%s`: `%s` is not an interface to route by", name,
                                             shown);
                struct lg_error e;
                int r = lg_nl_ifindex(c->via_interface, &e);
                if (r == -ENODEV)
                        return lg_error_setm(err, ENODEV, "namespace `%s`: interface `%s` does not exist", name, shown);
                if (r < 0)
                        return lg_error_setm(err, -r, "namespace `%s`: %s", name, e.msg);
        }
        return 0;
}

/* A namespace's egress routing: its mark's rule to its own table (with a
 * default route out of via_interface) or to via_table, or none. */
static int routing_apply(uint32_t n, const struct lg_net_namespace *c, struct lg_error *err) {
        uint32_t mark = ns_mark(n), own = NS_TABLE_BASE + n;
        int r;
        if (c->via_interface[0]) {
                r = lg_nl_table_default_route(own, c->via_interface, c->via_gateway, err);
                if (r >= 0)
                        r = lg_nl_rule_set(mark, own, err);
                return r;
        }
        r = c->via_table ? lg_nl_rule_set(mark, c->via_table, err) : lg_nl_rule_delete(mark, err);
        if (r >= 0)
                r = lg_nl_table_flush(own, err);
        return r;
}

/* The smallest free namespace number, taken; 0 when none. */
static uint32_t ns_number(lg_net *net) {
        for (uint32_t n = 1; n <= NS_MAX; n++)
                if (!(net->ns_used[n / 64] >> (n % 64) & 1)) {
                        net->ns_used[n / 64] |= UINT64_C(1) << (n % 64);
                        return n;
                }
        return 0;
}

static void ns_number_put(lg_net *net, uint32_t n) { net->ns_used[n / 64] &= ~(UINT64_C(1) << (n % 64)); }

static uint32_t policy_id(lg_net *net) {
        uint32_t id = net->next_policy_id++;
        if (net->next_policy_id == 0)
                net->next_policy_id = 1;
        return id;
}

int lg_net_namespace_set(lg_net *net, const char *name, const struct lg_net_namespace *cfg,
                         const struct lg_net_policy *policy, struct lg_error *err) {
        int r = check_name("namespace", name, NS_NAME_MAX, err);
        if (r < 0 || (r = check_namespace(name, cfg, net->prefix, err)) < 0)
                return r;
        if ((r = check_policy(policy, err)) < 0)
                return lg_error_wrap(err, r, "namespace `%s`", name);

        pthread_mutex_lock(&net->cfg_lock);
        pthread_mutex_lock(&net->lock);
        struct ns *ns = ns_find(net, name), *fresh = NULL;
        struct pol *fresh_pol = NULL;
        struct lg_net_namespace old = {0};
        if (ns) {
                old = ns->cfg;
        } else if (pol_find(net, name)) {
                r = lg_error_setm(err, EEXIST, "namespace `%s`: an egress policy of another namespace has that name",
                                  name);
        } else if (!(fresh = calloc(1, sizeof(*fresh))) || !(fresh_pol = calloc(1, sizeof(*fresh_pol)))) {
                r = lg_error_set(err, ENOMEM, "namespace `%s`", name);
        } else if (!(fresh->n = ns_number(net))) {
                r = lg_error_setm(err, ENOSPC, "namespace `%s`: this node has %u namespaces, the most it can", name,
                                  NS_MAX);
        } else {
                snprintf(fresh->name, sizeof(fresh->name), "%s", name);
                snprintf(fresh_pol->name, sizeof(fresh_pol->name), "%s", name);
                fresh_pol->id = policy_id(net);
                fresh_pol->ns = fresh;
                fresh->def = fresh_pol;
                ns = fresh;
        }
        pthread_mutex_unlock(&net->lock);
        if (r < 0)
                goto out;

        /* The settings as copied in: strings terminated. */
        struct lg_net_namespace c = *cfg;
        c.snat[sizeof(c.snat) - 1] = c.via_gateway[sizeof(c.via_gateway) - 1] = '\0';
        c.via_interface[sizeof(c.via_interface) - 1] = '\0';
        r = routing_apply(ns->n, &c, err);
        struct lg_error e;
        if (r < 0) {
                routing_apply(ns->n, &old, &e); /* what it was, or none */
                goto out;
        }

        pthread_mutex_lock(&net->lock);
        uint32_t mark = ns_mark(ns->n), id = ns->def->id;
        if (fresh && (!tsearch(fresh, &net->namespaces, by_name) || !tsearch(fresh_pol, &net->policies, by_name)))
                r = lg_error_set(err, ENOMEM, "namespace `%s`", name); /* out of the trees below */
        if (r >= 0 && (r = lg_nft_policy_set(net->nft, id, policy, err)) >= 0 &&
            (r = lg_nft_namespace_set(net->nft, mark, c.isolate_sandboxes, c.snat, err)) < 0) {
                /* The policy back as it was. */
                if (fresh)
                        lg_nft_policy_del(net->nft, id, &e);
                else
                        lg_nft_policy_set(net->nft, id, &ns->def->p, &e);
        }
        if (r >= 0) {
                ns->cfg = c;
                ns->def->p = *policy;
                fresh = NULL;
                fresh_pol = NULL;
        } else if (fresh) {
                tdelete(fresh, &net->namespaces, by_name);
                tdelete(fresh_pol, &net->policies, by_name);
        }
        pthread_mutex_unlock(&net->lock);
        if (r < 0)
                routing_apply(ns->n, &old, &e);
out:
        if (fresh && fresh->n) {
                pthread_mutex_lock(&net->lock);
                ns_number_put(net, fresh->n);
                pthread_mutex_unlock(&net->lock);
        }
        free(fresh);
        free(fresh_pol);
        pthread_mutex_unlock(&net->cfg_lock);
        return r;
}

/* twalk_r: the policies of one namespace. */
struct pols_of {
        const struct ns *ns;
        struct pol **v;
        size_t n, cap;
        bool nomem;
};

static void pols_of_cb(const void *node, VISIT which, void *data) {
        struct pols_of *po = data;
        struct pol *p = *(struct pol *const *) node;
        if ((which != postorder && which != leaf) || p->ns != po->ns || po->nomem)
                return;
        if (lg_grow((void **) &po->v, &po->cap, po->n, sizeof(*po->v), 16) < 0) {
                po->nomem = true;
                return;
        }
        po->v[po->n++] = p;
}

int lg_net_namespace_delete(lg_net *net, const char *name, struct lg_error *err) {
        char shown[64];
        lg_printable(name, shown, sizeof(shown));
        pthread_mutex_lock(&net->cfg_lock);
        pthread_mutex_lock(&net->lock);
        struct ns *ns = name ? ns_find(net, name) : NULL;
        uint32_t n = ns ? ns->n : 0;
        pthread_mutex_unlock(&net->lock);
        int r;
        if (!ns) {
                r = lg_error_setm(err, ENOENT, "namespace `%s` has no network settings", shown);
                goto out;
        }
        /* Routing first: a namespace half deleted still has its rules. */
        if ((r = lg_nl_rule_delete(ns_mark(n), err)) < 0 || (r = lg_nl_table_flush(NS_TABLE_BASE + n, err)) < 0) {
                lg_error_wrap(err, r, "namespace `%s`", shown);
                goto out;
        }

        pthread_mutex_lock(&net->lock);
        for (uint32_t addr = 0; r >= 0 && lg_ipam_next(net->ipam, &addr);) {
                struct lg_ipam_slot *slot = lg_ipam_slot(net->ipam, addr);
                if (slot->ns_mark != ns_mark(n))
                        continue;
                char ip[LG_NET_IP_MAX];
                format_ipv4(addr, ip);
                r = lg_nft_sandbox_del(net->nft, ip, err);
                if (r >= 0)
                        slot->ns_mark = slot->policy_id = 0;
        }
        struct pols_of po = {.ns = ns};
        if (r >= 0) {
                twalk_r(net->policies, pols_of_cb, &po);
                if (po.nomem)
                        r = lg_error_set(err, ENOMEM, "namespace `%s`", shown);
        }
        for (size_t i = 0; r >= 0 && i < po.n; i++) {
                if (po.v[i] == ns->def)
                        continue;
                r = lg_nft_policy_del(net->nft, po.v[i]->id, err);
                if (r >= 0) {
                        tdelete(po.v[i], &net->policies, by_name);
                        free(po.v[i]);
                }
        }
        free(po.v);
        if (r >= 0 && (r = lg_nft_namespace_del(net->nft, ns_mark(n), err)) >= 0 &&
            (r = lg_nft_policy_del(net->nft, ns->def->id, err)) >= 0) {
                tdelete(ns->def, &net->policies, by_name);
                free(ns->def);
                tdelete(ns, &net->namespaces, by_name);
                free(ns);
                ns_number_put(net, n);
        }
        pthread_mutex_unlock(&net->lock);
out:
        pthread_mutex_unlock(&net->cfg_lock);
        return r;
}

int lg_net_policy_set(lg_net *net, const char *namespace, const char *name, const struct lg_net_policy *p,
                      struct lg_error *err) {
        int r = check_name("egress policy", name, LG_NET_NAME_MAX, err);
        if (r < 0)
                return r;
        if ((r = check_policy(p, err)) < 0)
                return lg_error_wrap(err, r, "egress policy `%s`", name);
        char shown[64];
        lg_printable(namespace, shown, sizeof(shown));
        pthread_mutex_lock(&net->lock);
        struct ns *ns = namespace ? ns_find(net, namespace) : NULL;
        struct pol *pol = pol_find(net, name), *fresh = NULL;
        if (!ns)
                r = lg_error_setm(err, ENOENT, "namespace `%s` has no network settings", shown);
        else if (pol && pol->ns != ns)
                r = lg_error_setm(err, EEXIST, "egress policy `%s` belongs to namespace `%s`", name, pol->ns->name);
        else if (!pol && ns_find(net, name))
                r = lg_error_setm(err, EEXIST, "egress policy `%s`: a namespace has that name", name);
        else if (!pol && !(fresh = calloc(1, sizeof(*fresh))))
                r = lg_error_set(err, ENOMEM, "egress policy `%s`", name);
        if (fresh) {
                snprintf(fresh->name, sizeof(fresh->name), "%s", name);
                fresh->ns = ns;
                pol = fresh;
                if (!tsearch(fresh, &net->policies, by_name))
                        r = lg_error_set(err, ENOMEM, "egress policy `%s`", name);
                else
                        fresh->id = policy_id(net);
        }
        if (r >= 0 && (r = lg_nft_policy_set(net->nft, pol->id, p, err)) >= 0) {
                pol->p = *p;
                fresh = NULL;
        }
        if (fresh) {
                tdelete(fresh, &net->policies, by_name);
                free(fresh);
        }
        pthread_mutex_unlock(&net->lock);
        return r;
}

int lg_net_policy_delete(lg_net *net, const char *name, struct lg_error *err) {
        char shown[64];
        lg_printable(name, shown, sizeof(shown));
        pthread_mutex_lock(&net->lock);
        struct pol *pol = name ? pol_find(net, name) : NULL;
        int r = 0;
        if (!pol)
                r = lg_error_setm(err, ENOENT, "no egress policy `%s`", shown);
        else if (pol == pol->ns->def)
                r = lg_error_setm(err, EBUSY, "egress policy `%s` is namespace `%s`'s own: change the namespace",
                                  shown, pol->ns->name);
        /* Sandboxes under it fall back to their namespace's. */
        for (uint32_t addr = 0; r >= 0 && lg_ipam_next(net->ipam, &addr);) {
                struct lg_ipam_slot *slot = lg_ipam_slot(net->ipam, addr);
                if (slot->policy_id != pol->id)
                        continue;
                char ip[LG_NET_IP_MAX];
                format_ipv4(addr, ip);
                r = lg_nft_sandbox_add(net->nft, ip, slot->ns_mark, pol->ns->def->id, err);
                if (r >= 0)
                        slot->policy_id = pol->ns->def->id;
        }
        if (r >= 0 && (r = lg_nft_policy_del(net->nft, pol->id, err)) >= 0) {
                tdelete(pol, &net->policies, by_name);
                free(pol);
        }
        pthread_mutex_unlock(&net->lock);
        return r;
}

int lg_net_stats(lg_net *net, struct lg_net_stats *out, struct lg_error *err) {
        struct lg_net_stats s = {0};
        pthread_mutex_lock(&net->lock);
        s.addresses_used = lg_ipam_used(net->ipam);
        s.addresses_total = lg_ipam_total(net->ipam);
        int r = lg_nft_count(net->nft, &s.rules, &s.elements, err);
        pthread_mutex_unlock(&net->lock);
        if (r < 0)
                return r;
        struct links l = {.prefix = net->prefix};
        r = lg_nl_links_list(net->prefix, links_cb, &l, err);
        free(l.name);
        if (r < 0)
                return r;
        s.links = (unsigned) l.n;
        *out = s;
        return 0;
}
