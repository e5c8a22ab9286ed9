/* Inside src/net: the two layers net.c drives.
 *
 * link.c: links, addresses, routes and rules through netlink (libmnl),
 * never an `ip` process. Each call opens its own NETLINK_ROUTE socket(s)
 * (one in the host's network namespace, one inside the sandbox's when it
 * configures eth0, opened by a setns() of the calling thread that is
 * undone before returning), so calls are thread-safe without a lock.
 * Every route and rule made here carries protocol LG_NL_PROTO, which is
 * how they are found again after a restart.
 *
 * nft.c: the one nftables table, through libnftables (one nft_ctx, not
 * thread-safe: net.c calls it under its mutex). Each call is one
 * transaction (one nft_run_cmd_from_buffer): all of it or none.
 * Addresses are dotted strings validated by the caller (net.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"
#include "net/net.h"

#define LG_NL_PROTO 0x4c /* rtm_protocol / FRA_PROTOCOL of everything we add: 'L' */
#define LG_NL_HOST_MAC "ee:ee:ee:ee:ee:ee" /* the host end of every veth (as Calico) */
#define LG_NL_GATEWAY "169.254.1.1"      /* sandboxes' default route, onlink */

/* ---- link.c ---- */

/* The veth pair for the netns of pid: host end host_if (MAC
 * LG_NL_HOST_MAC, up, no IPv6 address), sandbox end renamed eth0 inside
 * with ip/32, up, neighbour LG_NL_GATEWAY -> LG_NL_HOST_MAC permanent,
 * route LG_NL_GATEWAY dev eth0 scope link, default via LG_NL_GATEWAY;
 * on the host a route ip/32 dev host_if scope link proto LG_NL_PROTO src
 * src (a host address: the pod CIDR's gateway, so that the host's
 * connections to the sandbox come from it, not from whichever address
 * the kernel would pick). On failure deletes what it made. */
int lg_nl_veth_attach(pid_t pid, const char *host_if, const char *ip, const char *src, struct lg_error *err);
/* That host route set again as lg_nl_veth_attach makes it, replacing the
 * one the host end has (one made without src by an older legiond: restart
 * adoption brings it up to date). -ENODEV: no link host_if; -EINVAL: src
 * is no address of the host. */
int lg_nl_host_route_set(const char *host_if, const char *ip, const char *src, struct lg_error *err);
/* Delete a link by name; -ENODEV when it is gone already (a veth dies
 * with its peer's namespace). */
int lg_nl_link_delete(const char *ifname, struct lg_error *err);
/* The address of eth0 in the netns of pid and the name of the host end
 * of its veth (its peer). -ENOENT: no eth0 or no address. */
int lg_nl_veth_read(pid_t pid, char ip[LG_NET_IP_MAX], char host_if[LG_NET_IFNAME_MAX], struct lg_error *err);

/* The host's /32 routes with protocol LG_NL_PROTO out of a link: cb per
 * (ip, ifname). Others of ours (the CIDR's unreachable route) are not. */
typedef int (*lg_nl_route_cb)(const char *ip, const char *ifname, void *data);
int lg_nl_routes_list(lg_nl_route_cb cb, void *data, struct lg_error *err);
/* Host links whose name starts with prefix (not counting prefix"0"). */
typedef int (*lg_nl_link_cb)(const char *ifname, void *data);
int lg_nl_links_list(const char *prefix, lg_nl_link_cb cb, void *data, struct lg_error *err);

/* A dummy link `ifname`, up, holding ip/32 (made if missing, kept if right;
 * other IPv4 addresses on it go). On a kernel without the dummy driver
 * (CONFIG_DUMMY off, as on this project's test host) it is a bridge
 * without ports. -EEXIST: the name is a link of another kind. */
int lg_nl_dummy_ensure(const char *ifname, const char *ip, struct lg_error *err);
/* ifindex of a host link; -ENODEV if none. */
int lg_nl_ifindex(const char *ifname, struct lg_error *err);

/* Policy routing for a namespace's egress: `ip rule fwmark mark lookup
 * table proto LG_NL_PROTO pref LG_NL_RULE_PREF`, and (own_table) the
 * table's default route out of ifname (via gateway, "" = onlink). */
#define LG_NL_RULE_PREF 1000
int lg_nl_rule_set(uint32_t mark, uint32_t table, struct lg_error *err);
int lg_nl_rule_delete(uint32_t mark, struct lg_error *err);
int lg_nl_table_default_route(uint32_t table, const char *ifname, const char *gateway, struct lg_error *err);
/* Only the table's routes with protocol LG_NL_PROTO go (an admin's
 * via_table may hold routes of theirs). */
int lg_nl_table_flush(uint32_t table, struct lg_error *err);
/* `ip rule to ip/prefix_len lookup main pref LG_NL_RULE_PREF-1 proto
 * LG_NL_PROTO`: the pod CIDR through the main table ahead of the
 * namespaces' fwmark rules, so that pod-to-pod traffic of a namespace
 * whose egress goes out of another interface or table stays on the host.
 * Adding one that exists and deleting one that does not are fine. */
int lg_nl_rule_to_main(const char *ip, unsigned prefix_len, struct lg_error *err);
int lg_nl_rule_to_main_delete(const char *ip, unsigned prefix_len, struct lg_error *err);
/* `unreachable ip/prefix_len proto LG_NL_PROTO` in the main table: an
 * address of the pod CIDR without a sandbox's /32 (the longer prefix
 * wins) fails at once (EHOSTUNREACH to the host's own connections, an
 * ICMP error to a sandbox's) instead of leaving by the host's default
 * route, where whatever answers would pass for a sandbox. set replaces
 * the one there; deleting one that is not there is fine. */
int lg_nl_unreachable_set(const char *ip, unsigned prefix_len, struct lg_error *err);
int lg_nl_unreachable_delete(const char *ip, unsigned prefix_len, struct lg_error *err);
/* Delete every rule with protocol LG_NL_PROTO (start-up: net.c sets
 * again those the namespaces ask for). */
int lg_nl_rules_flush(struct lg_error *err);

/* /proc/sys/net/ipv4/ip_forward = 1. */
int lg_nl_enable_forwarding(struct lg_error *err);

/* ---- nft.c ---- */

typedef struct lg_nft lg_nft;

struct lg_nft_config {
        const char *table;       /* inet <table> */
        const char *cidr;        /* the pod CIDR, "10.200.0.0/16" */
        const char *gateway;     /* the host's address in it (DNS) */
        const char *link_prefix; /* host ends: iifname "<prefix>*" */
};

/* The table, replacing any of that name, with its fixed rules and empty
 * sets, in one transaction. */
int lg_nft_open(const struct lg_nft_config *cfg, lg_nft **ret, struct lg_error *err);
void lg_nft_close(lg_nft *nft);
/* Delete the table. */
int lg_nft_drop_table(lg_nft *nft, struct lg_error *err);

/* A sandbox's elements: ip -> ns_mark, ns_mark . ip, ip -> policy_id
 * (replacing any it had; ns_mark 0 / policy_id 0: none of those, as for a
 * warm sandbox). del: removes whichever exist. */
int lg_nft_sandbox_add(lg_nft *nft, const char *ip, uint32_t ns_mark, uint32_t policy_id, struct lg_error *err);
int lg_nft_sandbox_del(lg_nft *nft, const char *ip, struct lg_error *err);

/* A policy's elements (egress on: policy_id in the `on` set; allow: its
 * interval elements), replacing what the id had. */
int lg_nft_policy_set(lg_nft *nft, uint32_t policy_id, const struct lg_net_policy *p, struct lg_error *err);
int lg_nft_policy_del(lg_nft *nft, uint32_t policy_id, struct lg_error *err);

/* A namespace's elements: isolated (no pod to pod within), SNAT address
 * ("" = masquerade). */
int lg_nft_namespace_set(lg_nft *nft, uint32_t ns_mark, bool isolate, const char *snat, struct lg_error *err);
int lg_nft_namespace_del(lg_nft *nft, uint32_t ns_mark, struct lg_error *err);

int lg_nft_count(lg_nft *nft, unsigned *rules, unsigned *elements, struct lg_error *err);
