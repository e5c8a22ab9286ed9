/* The node's nftables table through libnftables (contract: net-internal.h).
 *
 * The rules are fixed and written once by lg_nft_open(), in one transaction
 * that replaces a table of that name left by a previous legiond. Everything
 * per sandbox, per policy and per namespace is a set or map element. Every
 * call is one nft_run_cmd_from_buffer(): one netlink batch, applied whole
 * or not at all.
 *
 * The kernel has no "replace element" and nft 1.0.6 no "destroy" (delete if
 * present): adding a map key that exists with another value fails (EBUSY),
 * deleting a missing element fails (ENOENT). So this file keeps a copy of
 * what it put in the table (the table is ours alone and starts empty at
 * open) and writes the exact deletes a replacement needs. The copy changes
 * only after nft said yes.
 *
 * Allowlists go into interval sets with concatenated keys, whose elements
 * must not overlap (the kernel refuses "10.1.0.0/16 . 80-90" beside
 * "10.0.0.0/8 . 80" with EEXIST): policy_elems() makes them disjoint first
 * (an entry inside a wider one is dropped, port ranges of a narrower CIDR
 * lose the ports a wider one already allows). */
#include <arpa/inet.h>
#include <jansson.h>
#include <nftables/libnftables.h>
#include <stdarg.h>
#include <string.h>

#include "net/net-internal.h"

/* One sandbox's elements (ip 0: an empty slot; 0 fields: no element). */
struct sb_slot {
        uint32_t ip; /* host byte order */
        uint32_t ns_mark, policy_id;
};

/* One element of allow_any (any) or allow_port: addr/plen . lo-hi. */
struct allow_elem {
        uint32_t addr, plen;
        uint16_t lo, hi;
        bool any;
};

struct pol_rec {
        uint32_t id;
        bool on;
        size_t n;
        struct allow_elem *elems;
};

struct ns_rec {
        uint32_t mark;
        bool isolate;
        uint32_t snat; /* host byte order; 0 = masquerade */
};

struct lg_nft {
        struct nft_ctx *ctx;
        char table[64];
        /* Sandboxes: open addressing, linear probing, backward-shift delete. */
        struct sb_slot *sb;
        size_t sb_cap, sb_used;
        struct pol_rec *pols;
        size_t n_pols, cap_pols;
        struct ns_rec *nss;
        size_t n_nss, cap_nss;
        /* The command being built (reused). */
        char *buf;
        size_t len, cap;
        bool oom;
};

/* ---- command buffer ---- */

__attribute__((format(printf, 2, 3))) static void cmd(lg_nft *nft, const char *fmt, ...) {
        if (nft->oom)
                return;
        for (;;) {
                va_list ap;
                va_start(ap, fmt);
                int n = vsnprintf(nft->buf + nft->len, nft->cap - nft->len, fmt, ap);
                va_end(ap);
                if (n < 0) {
                        nft->oom = true;
                        return;
                }
                if ((size_t) n < nft->cap - nft->len) {
                        nft->len += (size_t) n;
                        return;
                }
                size_t cap = (nft->cap + (size_t) n + 1) * 2;
                char *p = realloc(nft->buf, cap);
                if (!p) {
                        nft->oom = true;
                        return;
                }
                nft->buf = p;
                nft->cap = cap;
        }
}

static void cmd_reset(lg_nft *nft) {
        nft->len = 0;
        nft->oom = false;
        if (nft->buf)
                nft->buf[0] = '\0';
}

/* The errno whose text nft's message carries (netlink errors come as
 * strerror), else EINVAL (a parse or evaluation error). */
static int nft_errno(const char *msg) {
        static const int known[] = {EPERM,  ENOENT,  EEXIST,       EBUSY,     ENOMEM,          EOPNOTSUPP,
                                    ENOSPC, E2BIG,   ERANGE,       ENOBUFS,   EAFNOSUPPORT,    EPROTONOSUPPORT,
                                    EACCES, ENOTDIR, ENOTEMPTY,    EMSGSIZE,  EOVERFLOW,       EINVAL};
        for (size_t i = 0; i < ARRAY_SIZE(known); i++)
                if (strstr(msg, strerror(known[i])))
                        return known[i];
        return EINVAL;
}

/* Run the buffer as one transaction; on failure err gets the first line of
 * nft's message. */
static int run_out(lg_nft *nft, const char *what, const char **out, struct lg_error *err) {
        if (nft->oom)
                return lg_error_setm(err, ENOMEM, "nft table `%s`: %s: out of memory", nft->table, what);
        int r = nft_run_cmd_from_buffer(nft->ctx, nft->buf ? nft->buf : "");
        /* Reading a buffer rewinds it (its text stays until the next run):
         * keep both from growing. */
        const char *o = nft_ctx_get_output_buffer(nft->ctx);
        if (out)
                *out = o;
        const char *e = nft_ctx_get_error_buffer(nft->ctx);
        if (r == 0)
                return 0;
        char line[384];
        if (e && strncmp(e, "Error: ", 7) == 0)
                e += 7;
        size_t n = e ? strcspn(e, "\n") : 0;
        if (n == 0) {
                snprintf(line, sizeof(line), "nft failed without a message");
        } else {
                if (n >= sizeof(line))
                        n = sizeof(line) - 1;
                memcpy(line, e, n);
                line[n] = '\0';
        }
        return lg_error_setm(err, nft_errno(line), "nft table `%s`: %s: %s", nft->table, what, line);
}

static int run(lg_nft *nft, const char *what, struct lg_error *err) { return run_out(nft, what, NULL, err); }

/* ---- parsing ---- */

static int parse_ip(const char *s, uint32_t *out) {
        struct in_addr a;
        if (!s || inet_pton(AF_INET, s, &a) != 1)
                return -EINVAL;
        *out = ntohl(a.s_addr);
        return 0;
}

static const char *fmt_ip(uint32_t ip, char buf[LG_NET_IP_MAX]) {
        snprintf(buf, LG_NET_IP_MAX, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
        return buf;
}

static uint32_t mask_of(uint32_t plen) { return plen == 0 ? 0 : 0xffffffffu << (32 - plen); }

static int parse_cidr(const char *s, uint32_t *addr, uint32_t *plen) {
        char ip[LG_NET_IP_MAX];
        const char *slash = s ? strchr(s, '/') : NULL;
        if (!slash || (size_t) (slash - s) >= sizeof(ip))
                return -EINVAL;
        memcpy(ip, s, (size_t) (slash - s));
        ip[slash - s] = '\0';
        long long n;
        if (parse_ip(ip, addr) < 0 || lg_parse_int(slash + 1, 0, 32, &n) < 0)
                return -EINVAL;
        *plen = (uint32_t) n;
        if (*addr & ~mask_of(*plen))
                return -EINVAL;
        return 0;
}

/* nft identifiers we put in commands: a letter, then letters, digits, '_'. */
static bool ident_ok(const char *s, size_t max) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > max || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
                      s[i] == '_' || (i > 0 && s[i] == '-')))
                        return false;
        return true;
}

/* ---- open / close ---- */

/* The fixed ruleset. Why each rule is there:
 * prerouting (mangle priority, before the routing decision, so that ip
 *   rules on fwmark see the mark): only traffic from our host ends; no IPv6;
 *   reverse path (the source must be routed back out of the link it came
 *   in on: no spoofing another sandbox or the gateway); the source in the
 *   CIDR; the namespace mark from the source (0 first: a sandbox without a
 *   namespace, a map miss, keeps mark 0); the connection's ct mark = the
 *   sandbox's policy, set again on every packet from the sandbox (0 when it
 *   has none, never a transient 0 when it has one), so that a policy change
 *   or a release applies to open connections at once, not only to new ones.
 * input: from our host ends only what is already established (replies to
 *   the host's own connections into sandboxes) and DNS to the gateway.
 * forward: only packets entering or leaving through our host ends are
 *   judged (the rest of the host's forwarding is left alone): metadata
 *   range out; replies into sandboxes; no new connection from outside to a
 *   sandbox; then every packet a sandbox sends (not only a connection's
 *   first): to a sandbox by namespace mark, no other address of the CIDR,
 *   out by policy (ct mark), else drop.
 * postrouting: sandboxes' traffic leaving through anything but our host
 *   ends is NATed: SNAT to the namespace's address, else (map miss)
 *   masquerade. */
static void build_ruleset(lg_nft *nft, const struct lg_nft_config *cfg) {
        const char *t = cfg->table, *c = cfg->cidr, *g = cfg->gateway, *p = cfg->link_prefix;
        cmd(nft, "add table inet %s\ndelete table inet %s\n", t, t);
        cmd(nft,
            "table inet %s {\n"
            " map ns_of { type ipv4_addr : mark; }\n"
            " set ns_members { type mark . ipv4_addr; }\n"
            " map policy_of { type ipv4_addr : mark; }\n"
            " set isolated_ns { type mark; }\n"
            " set egress_on { type mark; }\n"
            " set allow_any { type mark . ipv4_addr; flags interval; }\n"
            " set allow_port { type mark . ipv4_addr . inet_service; flags interval; }\n"
            " map ns_snat { type mark : ipv4_addr; }\n",
            t);
        cmd(nft,
            " chain prerouting {\n"
            "  type filter hook prerouting priority mangle; policy accept;\n"
            "  iifname != \"%s*\" return\n"
            "  meta nfproto != ipv4 drop\n"
            "  fib saddr . iif oif missing drop\n"
            "  ip saddr != %s drop\n"
            "  meta mark set 0\n"
            "  meta mark set ip saddr map @ns_of\n"
            "  ip saddr != @policy_of ct mark set 0\n"
            "  ct mark set ip saddr map @policy_of\n"
            " }\n",
            p, c);
        cmd(nft,
            " chain input {\n"
            "  type filter hook input priority filter; policy accept;\n"
            "  iifname != \"%s*\" return\n"
            "  ct state established,related accept\n"
            "  ip daddr %s meta l4proto { tcp, udp } th dport 53 accept\n"
            "  drop\n"
            " }\n",
            p, g);
        cmd(nft,
            " chain pod_to_pod {\n"
            "  meta mark 0 drop\n"
            "  meta mark @isolated_ns drop\n"
            "  meta mark . ip daddr @ns_members accept\n"
            "  drop\n"
            " }\n"
            " chain forward {\n"
            "  type filter hook forward priority filter; policy accept;\n"
            "  iifname \"%s*\" ip daddr 169.254.0.0/16 drop\n"
            "  oifname \"%s*\" ct state established,related accept\n"
            "  oifname \"%s*\" iifname != \"%s*\" drop\n"
            "  iifname != \"%s*\" return\n"
            "  oifname \"%s*\" jump pod_to_pod\n"
            "  ip daddr %s drop\n"
            "  ct mark @egress_on accept\n"
            "  ct mark . ip daddr @allow_any accept\n"
            "  meta l4proto { tcp, udp } ct mark . ip daddr . th dport @allow_port accept\n"
            "  drop\n"
            " }\n",
            p, p, p, p, p, p, c);
        cmd(nft,
            " chain postrouting {\n"
            "  type nat hook postrouting priority srcnat; policy accept;\n"
            "  ip saddr != %s return\n"
            "  oifname \"%s*\" return\n"
            "  snat ip to meta mark map @ns_snat\n"
            "  masquerade\n"
            " }\n"
            "}\n",
            c, p);
}

int lg_nft_open(const struct lg_nft_config *cfg, lg_nft **ret, struct lg_error *err) {
        uint32_t a, plen, gw;
        if (!cfg || !ident_ok(cfg->table, 32))
                return lg_error_setm(err, EINVAL, "bad nft table name");
        if (!ident_ok(cfg->link_prefix, LG_NET_IFNAME_MAX - 2))
                return lg_error_setm(err, EINVAL, "bad link prefix");
        if (parse_cidr(cfg->cidr, &a, &plen) < 0)
                return lg_error_setm(err, EINVAL, "bad CIDR for nft table `%s`", cfg->table);
        if (parse_ip(cfg->gateway, &gw) < 0)
                return lg_error_setm(err, EINVAL, "bad gateway address for nft table `%s`", cfg->table);

        lg_nft *nft = calloc(1, sizeof(*nft));
        if (!nft)
                return lg_error_set(err, ENOMEM, "nft");
        snprintf(nft->table, sizeof(nft->table), "%s", cfg->table);
        nft->ctx = nft_ctx_new(NFT_CTX_DEFAULT);
        if (!nft->ctx || nft_ctx_buffer_output(nft->ctx) < 0 || nft_ctx_buffer_error(nft->ctx) < 0) {
                lg_nft_close(nft);
                return lg_error_setm(err, ENOMEM, "nft: cannot make a libnftables context");
        }
        char cidr[40], gws[LG_NET_IP_MAX], ipb[LG_NET_IP_MAX];
        snprintf(cidr, sizeof(cidr), "%s/%u", fmt_ip(a, ipb), plen);
        struct lg_nft_config c = {.table = cfg->table, .cidr = cidr, .gateway = fmt_ip(gw, gws),
                                  .link_prefix = cfg->link_prefix};
        cmd_reset(nft);
        build_ruleset(nft, &c);
        int r = run(nft, "create", err);
        if (r < 0) {
                lg_nft_close(nft);
                return r;
        }
        *ret = nft;
        return 0;
}

void lg_nft_close(lg_nft *nft) {
        if (!nft)
                return;
        if (nft->ctx)
                nft_ctx_free(nft->ctx);
        for (size_t i = 0; i < nft->n_pols; i++)
                free(nft->pols[i].elems);
        free(nft->pols);
        free(nft->nss);
        free(nft->sb);
        free(nft->buf);
        free(nft);
}

static void forget_all(lg_nft *nft) {
        for (size_t i = 0; i < nft->n_pols; i++)
                free(nft->pols[i].elems);
        nft->n_pols = 0;
        nft->n_nss = 0;
        if (nft->sb)
                memset(nft->sb, 0, nft->sb_cap * sizeof(*nft->sb));
        nft->sb_used = 0;
}

int lg_nft_drop_table(lg_nft *nft, struct lg_error *err) {
        cmd_reset(nft);
        /* add first: deleting a table that is gone already is not an error here. */
        cmd(nft, "add table inet %s\ndelete table inet %s\n", nft->table, nft->table);
        int r = run(nft, "delete", err);
        if (r >= 0)
                forget_all(nft);
        return r;
}

/* ---- sandboxes ---- */

static size_t sb_hash(uint32_t ip, size_t cap) {
        return (size_t) ((ip * 2654435761u) & (uint32_t) (cap - 1));
}

static struct sb_slot *sb_find(lg_nft *nft, uint32_t ip) {
        if (!nft->sb_cap)
                return NULL;
        for (size_t i = sb_hash(ip, nft->sb_cap);; i = (i + 1) & (nft->sb_cap - 1)) {
                if (nft->sb[i].ip == ip)
                        return &nft->sb[i];
                if (nft->sb[i].ip == 0)
                        return NULL;
        }
}

static int sb_grow(lg_nft *nft) {
        size_t cap = nft->sb_cap ? nft->sb_cap * 2 : 64;
        struct sb_slot *n = calloc(cap, sizeof(*n));
        if (!n)
                return -ENOMEM;
        for (size_t i = 0; i < nft->sb_cap; i++) {
                if (!nft->sb[i].ip)
                        continue;
                size_t j = sb_hash(nft->sb[i].ip, cap);
                while (n[j].ip)
                        j = (j + 1) & (cap - 1);
                n[j] = nft->sb[i];
        }
        free(nft->sb);
        nft->sb = n;
        nft->sb_cap = cap;
        return 0;
}

static void sb_remove(lg_nft *nft, struct sb_slot *s) {
        size_t cap = nft->sb_cap, i = (size_t) (s - nft->sb);
        nft->sb[i].ip = 0;
        nft->sb_used--;
        /* Backward shift: pull later members of the run into the hole. */
        for (size_t j = (i + 1) & (cap - 1); nft->sb[j].ip; j = (j + 1) & (cap - 1)) {
                size_t h = sb_hash(nft->sb[j].ip, cap);
                /* Stays if its home lies cyclically in (i, j]. */
                bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
                if (stays)
                        continue;
                nft->sb[i] = nft->sb[j];
                nft->sb[j].ip = 0;
                i = j;
        }
}

/* The deletes of a sandbox's current elements. */
static void sb_del_cmds(lg_nft *nft, const struct sb_slot *s) {
        char ip[LG_NET_IP_MAX];
        fmt_ip(s->ip, ip);
        if (s->ns_mark)
                cmd(nft, "delete element inet %s ns_of { %s }\ndelete element inet %s ns_members { 0x%x . %s }\n",
                    nft->table, ip, nft->table, s->ns_mark, ip);
        if (s->policy_id)
                cmd(nft, "delete element inet %s policy_of { %s }\n", nft->table, ip);
}

int lg_nft_sandbox_add(lg_nft *nft, const char *ip, uint32_t ns_mark, uint32_t policy_id, struct lg_error *err) {
        uint32_t a;
        char ips[LG_NET_IP_MAX];
        if (parse_ip(ip, &a) < 0 || a == 0)
                return lg_error_setm(err, EINVAL, "nft: bad sandbox address");
        fmt_ip(a, ips);
        struct sb_slot *old = sb_find(nft, a);
        if (old && old->ns_mark == ns_mark && old->policy_id == policy_id)
                return 0;
        if (!old && !ns_mark && !policy_id)
                return 0;
        if (!old && (nft->sb_used + 1) * 4 > nft->sb_cap * 3 && sb_grow(nft) < 0)
                return lg_error_set(err, ENOMEM, "nft");

        cmd_reset(nft);
        if (old)
                sb_del_cmds(nft, old);
        if (ns_mark)
                cmd(nft, "add element inet %s ns_of { %s : 0x%x }\nadd element inet %s ns_members { 0x%x . %s }\n",
                    nft->table, ips, ns_mark, nft->table, ns_mark, ips);
        if (policy_id)
                cmd(nft, "add element inet %s policy_of { %s : 0x%x }\n", nft->table, ips, policy_id);
        int r = run(nft, "sandbox elements", err);
        if (r < 0)
                return r;
        if (!ns_mark && !policy_id) {
                sb_remove(nft, old);
                return 0;
        }
        if (!old) {
                size_t i = sb_hash(a, nft->sb_cap);
                while (nft->sb[i].ip)
                        i = (i + 1) & (nft->sb_cap - 1);
                old = &nft->sb[i];
                old->ip = a;
                nft->sb_used++;
        }
        old->ns_mark = ns_mark;
        old->policy_id = policy_id;
        return 0;
}

int lg_nft_sandbox_del(lg_nft *nft, const char *ip, struct lg_error *err) {
        uint32_t a;
        if (parse_ip(ip, &a) < 0)
                return lg_error_setm(err, EINVAL, "nft: bad sandbox address");
        struct sb_slot *s = sb_find(nft, a);
        if (!s)
                return 0;
        cmd_reset(nft);
        sb_del_cmds(nft, s);
        int r = run(nft, "sandbox elements", err);
        if (r < 0)
                return r;
        sb_remove(nft, s);
        return 0;
}

/* ---- policies ---- */

static struct pol_rec *pol_find(lg_nft *nft, uint32_t id) {
        for (size_t i = 0; i < nft->n_pols; i++)
                if (nft->pols[i].id == id)
                        return &nft->pols[i];
        return NULL;
}

static int elem_order(const void *pa, const void *pb) {
        const struct allow_elem *a = pa, *b = pb;
        if (a->plen != b->plen)
                return a->plen < b->plen ? -1 : 1;
        if (a->any != b->any)
                return a->any ? -1 : 1;
        if (a->addr != b->addr)
                return a->addr < b->addr ? -1 : 1;
        /* Deterministic output: on one CIDR the lower start, then the wider range first. */
        if (a->lo != b->lo)
                return a->lo < b->lo ? -1 : 1;
        return a->hi > b->hi ? -1 : a->hi < b->hi;
}

static bool elem_contains(const struct allow_elem *outer, const struct allow_elem *inner) {
        return outer->plen <= inner->plen && ((outer->addr ^ inner->addr) & mask_of(outer->plen)) == 0;
}

static int elems_push(struct allow_elem **v, size_t *n, size_t *cap, struct allow_elem e) {
        if (lg_grow((void **) v, cap, *n, sizeof(**v), 16) < 0)
                return -ENOMEM;
        (*v)[(*n)++] = e;
        return 0;
}

/* The allowlist as disjoint elements (see the top of the file): widest
 * CIDRs first; an entry keeps only what no wider (or equal) accepted entry
 * allows already. */
static int policy_elems(const struct lg_net_policy *p, struct allow_elem **ret, size_t *n_ret) {
        struct allow_elem in[LG_NET_ALLOW_MAX];
        size_t n_in = p->n_allow < LG_NET_ALLOW_MAX ? p->n_allow : LG_NET_ALLOW_MAX;
        for (size_t i = 0; i < n_in; i++) {
                const struct lg_net_allow *a = &p->allow[i];
                if (a->prefix_len > 32 || a->port_lo > a->port_hi || (a->port_lo == 0 && a->port_hi != 0))
                        return -EINVAL;
                in[i] = (struct allow_elem){.addr = a->addr & mask_of(a->prefix_len), .plen = a->prefix_len,
                                            .lo = a->port_lo, .hi = a->port_hi, .any = a->port_hi == 0};
        }
        qsort(in, n_in, sizeof(in[0]), elem_order);

        _cleanup_free_ struct allow_elem *out = NULL, *pieces = NULL, *next = NULL;
        size_t n_out = 0, cap_out = 0, cap_p = 0, cap_nx = 0;
        for (size_t i = 0; i < n_in; i++) {
                size_t n_p = 0;
                if (elems_push(&pieces, &n_p, &cap_p, in[i]) < 0)
                        return -ENOMEM;
                for (size_t j = 0; j < n_out && n_p; j++) {
                        const struct allow_elem *y = &out[j];
                        if (!elem_contains(y, &in[i]))
                                continue;
                        if (y->any) {
                                n_p = 0; /* every port of this CIDR is allowed already */
                                break;
                        }
                        if (in[i].any)
                                continue; /* another set: no overlap to avoid */
                        size_t n_nx = 0;
                        for (size_t k = 0; k < n_p; k++) {
                                struct allow_elem e = pieces[k];
                                if (e.hi < y->lo || e.lo > y->hi) {
                                        if (elems_push(&next, &n_nx, &cap_nx, e) < 0)
                                                return -ENOMEM;
                                        continue;
                                }
                                if (e.lo < y->lo) {
                                        struct allow_elem l = e;
                                        l.hi = (uint16_t) (y->lo - 1);
                                        if (elems_push(&next, &n_nx, &cap_nx, l) < 0)
                                                return -ENOMEM;
                                }
                                if (e.hi > y->hi) {
                                        struct allow_elem h = e;
                                        h.lo = (uint16_t) (y->hi + 1);
                                        if (elems_push(&next, &n_nx, &cap_nx, h) < 0)
                                                return -ENOMEM;
                                }
                        }
                        struct allow_elem *t = pieces;
                        pieces = next;
                        next = t;
                        size_t tc = cap_p;
                        cap_p = cap_nx;
                        cap_nx = tc;
                        n_p = n_nx;
                }
                for (size_t k = 0; k < n_p; k++)
                        if (elems_push(&out, &n_out, &cap_out, pieces[k]) < 0)
                                return -ENOMEM;
        }
        *ret = TAKE_PTR(out);
        *n_ret = n_out;
        return 0;
}

static void allow_cmd(lg_nft *nft, const char *verb, uint32_t id, const struct allow_elem *e) {
        char ip[LG_NET_IP_MAX];
        fmt_ip(e->addr, ip);
        if (e->any)
                cmd(nft, "%s element inet %s allow_any { 0x%x . %s/%u }\n", verb, nft->table, id, ip, e->plen);
        else if (e->lo == e->hi)
                cmd(nft, "%s element inet %s allow_port { 0x%x . %s/%u . %u }\n", verb, nft->table, id, ip, e->plen,
                    e->lo);
        else
                cmd(nft, "%s element inet %s allow_port { 0x%x . %s/%u . %u-%u }\n", verb, nft->table, id, ip,
                    e->plen, e->lo, e->hi);
}

static void policy_del_cmds(lg_nft *nft, const struct pol_rec *old) {
        if (old->on)
                cmd(nft, "delete element inet %s egress_on { 0x%x }\n", nft->table, old->id);
        for (size_t i = 0; i < old->n; i++)
                allow_cmd(nft, "delete", old->id, &old->elems[i]);
}

int lg_nft_policy_set(lg_nft *nft, uint32_t policy_id, const struct lg_net_policy *p, struct lg_error *err) {
        if (policy_id == 0)
                return lg_error_setm(err, EINVAL, "nft: policy id 0");
        if (!p || (p->egress != LG_NET_EGRESS_OFF && p->egress != LG_NET_EGRESS_ON && p->egress != LG_NET_EGRESS_ALLOW))
                return lg_error_setm(err, EINVAL, "nft: bad policy");
        struct pol_rec nw = {.id = policy_id, .on = p->egress == LG_NET_EGRESS_ON};
        _cleanup_free_ struct allow_elem *elems = NULL;
        if (p->egress == LG_NET_EGRESS_ALLOW) {
                int r = policy_elems(p, &elems, &nw.n);
                if (r < 0)
                        return r == -ENOMEM ? lg_error_set(err, ENOMEM, "nft")
                                            : lg_error_setm(err, EINVAL, "nft: bad allowlist entry in policy %u",
                                                            policy_id);
        }
        struct pol_rec *old = pol_find(nft, policy_id);
        if (!old && lg_grow((void **) &nft->pols, &nft->cap_pols, nft->n_pols, sizeof(*nft->pols), 16) < 0)
                return lg_error_set(err, ENOMEM, "nft");

        cmd_reset(nft);
        if (old)
                policy_del_cmds(nft, old);
        if (nw.on)
                cmd(nft, "add element inet %s egress_on { 0x%x }\n", nft->table, policy_id);
        for (size_t i = 0; i < nw.n; i++)
                allow_cmd(nft, "add", policy_id, &elems[i]);
        int r = run(nft, "policy elements", err);
        if (r < 0)
                return r;
        nw.elems = TAKE_PTR(elems);
        if (old) {
                free(old->elems);
                *old = nw;
        } else {
                nft->pols[nft->n_pols++] = nw;
        }
        return 0;
}

int lg_nft_policy_del(lg_nft *nft, uint32_t policy_id, struct lg_error *err) {
        struct pol_rec *old = pol_find(nft, policy_id);
        if (!old)
                return 0;
        cmd_reset(nft);
        policy_del_cmds(nft, old);
        int r = run(nft, "policy elements", err);
        if (r < 0)
                return r;
        free(old->elems);
        *old = nft->pols[--nft->n_pols];
        return 0;
}

/* ---- namespaces ---- */

static struct ns_rec *ns_find(lg_nft *nft, uint32_t mark) {
        for (size_t i = 0; i < nft->n_nss; i++)
                if (nft->nss[i].mark == mark)
                        return &nft->nss[i];
        return NULL;
}

static void ns_del_cmds(lg_nft *nft, const struct ns_rec *old) {
        if (old->isolate)
                cmd(nft, "delete element inet %s isolated_ns { 0x%x }\n", nft->table, old->mark);
        if (old->snat)
                cmd(nft, "delete element inet %s ns_snat { 0x%x }\n", nft->table, old->mark);
}

int lg_nft_namespace_set(lg_nft *nft, uint32_t ns_mark, bool isolate, const char *snat, struct lg_error *err) {
        struct ns_rec nw = {.mark = ns_mark, .isolate = isolate};
        if (ns_mark == 0)
                return lg_error_setm(err, EINVAL, "nft: namespace mark 0");
        if (snat && *snat && (parse_ip(snat, &nw.snat) < 0 || nw.snat == 0))
                return lg_error_setm(err, EINVAL, "nft: bad SNAT address");
        struct ns_rec *old = ns_find(nft, ns_mark);
        if (old && old->isolate == nw.isolate && old->snat == nw.snat)
                return 0;
        if (!old && lg_grow((void **) &nft->nss, &nft->cap_nss, nft->n_nss, sizeof(*nft->nss), 16) < 0)
                return lg_error_set(err, ENOMEM, "nft");
        cmd_reset(nft);
        if (old)
                ns_del_cmds(nft, old);
        if (nw.isolate)
                cmd(nft, "add element inet %s isolated_ns { 0x%x }\n", nft->table, ns_mark);
        if (nw.snat) {
                char ip[LG_NET_IP_MAX];
                cmd(nft, "add element inet %s ns_snat { 0x%x : %s }\n", nft->table, ns_mark, fmt_ip(nw.snat, ip));
        }
        if (nft->len) {
                int r = run(nft, "namespace elements", err);
                if (r < 0)
                        return r;
        }
        if (old)
                *old = nw;
        else
                nft->nss[nft->n_nss++] = nw;
        return 0;
}

int lg_nft_namespace_del(lg_nft *nft, uint32_t ns_mark, struct lg_error *err) {
        struct ns_rec *old = ns_find(nft, ns_mark);
        if (!old)
                return 0;
        cmd_reset(nft);
        ns_del_cmds(nft, old);
        if (nft->len) {
                int r = run(nft, "namespace elements", err);
                if (r < 0)
                        return r;
        }
        *old = nft->nss[--nft->n_nss];
        return 0;
}

/* ---- counting ---- */

int lg_nft_count(lg_nft *nft, unsigned *rules, unsigned *elements, struct lg_error *err) {
        unsigned flags = nft_ctx_output_get_flags(nft->ctx);
        nft_ctx_output_set_flags(nft->ctx, flags | NFT_CTX_OUTPUT_JSON);
        cmd_reset(nft);
        cmd(nft, "list table inet %s\n", nft->table);
        const char *out = NULL;
        int r = run_out(nft, "list", &out, err);
        nft_ctx_output_set_flags(nft->ctx, flags);
        if (r < 0)
                return r;
        json_error_t jerr;
        json_t *root = json_loads(out ? out : "", 0, &jerr);
        json_t *items = json_object_get(root, "nftables");
        if (!json_is_array(items)) {
                json_decref(root);
                return lg_error_setm(err, EPROTO, "nft table `%s`: list: unexpected JSON output", nft->table);
        }
        unsigned nr = 0, ne = 0;
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) {
                if (json_object_get(it, "rule"))
                        nr++;
                json_t *set = json_object_get(it, "set");
                if (!set)
                        set = json_object_get(it, "map");
                json_t *elem = json_object_get(set, "elem");
                if (json_is_array(elem))
                        ne += (unsigned) json_array_size(elem);
        }
        json_decref(root);
        *rules = nr;
        *elements = ne;
        return 0;
}
