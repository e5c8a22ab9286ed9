/* The node's sandbox network: an address per sandbox from the node's pod
 * CIDR, egress through NAT under a policy, tenants (namespaces) isolated.
 *
 * Shape (docs/networking.md says why):
 * - Routed /32 per sandbox, as Calico and the CNI ptp plugin do: a veth
 *   pair, `eth0` inside the sandbox's network namespace with its address
 *   and a default route via 169.254.1.1 (onlink, a permanent neighbour
 *   entry for the host end's fixed MAC), the host end `<prefix><n>` with a
 *   /32 route to the address whose preferred source is the gateway address
 *   (below): the host's own connections to a sandbox (the router's, the
 *   readiness probes') come from the gateway, never from an external
 *   address of the host. No bridge: no L2 between sandboxes, no ARP
 *   spoofing between tenants. No IPv6 on either end (no link-local address
 *   is generated: a sandbox cannot reach the host over fe80::).
 * - The host holds the first address of the CIDR (the gateway address, on
 *   a dummy link `<prefix>0`): the DNS forwarder listens there (dns.h) and
 *   it is the only host address sandboxes may reach (port 53).
 * - The whole CIDR has an `unreachable` route on the host (protocol 76,
 *   below every sandbox's /32 by prefix length): an address without a
 *   live sandbox fails at once (EHOSTUNREACH for the router's and the
 *   probes' connects) and never leaves by the host's default route.
 * - One nftables table (family inet, name cfg.table), owned by this
 *   module and rewritten whole only when lg_net_new() starts. Its rules are
 *   fixed; everything per sandbox, per namespace and per policy is a set
 *   or map element: a sandbox's start adds three elements (address ->
 *   namespace mark, namespace . address, address -> policy id) and its end
 *   deletes them. The rule count does not grow with sandboxes.
 * - Namespaces get a mark (meta mark, set from the source address): pod to
 *   pod is allowed within a mark unless the namespace isolates its
 *   sandboxes; policy routing on the mark sends a namespace's egress out
 *   through a named interface or route table (VNET injection); SNAT to an
 *   address chosen per namespace, otherwise masquerade.
 * - Policies (egress off, on, or an allowlist of CIDRs and ports) have an
 *   id (ct mark). A namespace has its default policy (named by the
 *   namespace); an app, session pool or pod may name its own.
 * - A sandbox with an address and no tenant yet (a warm one) reaches
 *   nothing but DNS; lg_net_assign() gives it its namespace and policy.
 * - Blocked always: 169.254.0.0/16 (cloud metadata), the host's own
 *   addresses and anything but port 53 of the gateway address, inbound
 *   connections from outside the host to sandboxes, spoofed source
 *   addresses (a reverse-path check on the host end).
 *
 * Ownership of addresses is rebuilt, never stored: at lg_net_new() the
 * host's /32 routes to `<prefix>*` links say which addresses live sandboxes
 * hold (a route lives as long as its veth, a veth as long as the sandbox's
 * network namespace). Owners then lg_net_reclaim() what they adopt and
 * lg_net_sweep() releases the rest.
 *
 * Errors: >= 0 or -errno, err says why in one line (-ENOSPC: the CIDR is
 * exhausted; -EINVAL: a bad CIDR, port or policy; -ENODEV: an unknown
 * interface; -EEXIST, -ENOENT as usual). A call that fails has changed
 * nothing (the nft edits of one call are one transaction).
 *
 * Threading: every call may come from any thread (the node agent calls
 * from libuv's thread pool); an lg_net serialises itself with a mutex.
 * Netlink work (veth, addresses, routes) runs outside the lock, on
 * sockets of the calling thread. Memory: strings passed in are copied;
 * nothing returned needs freeing but the handle (lg_net_free). IPv4 only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"

#define LG_NET_DEFAULT_CIDR "10.200.0.0/16"
#define LG_NET_IP_MAX 16     /* "255.255.255.255" and the NUL */
#define LG_NET_IFNAME_MAX 16 /* IFNAMSIZ */
#define LG_NET_NAME_MAX 160  /* a policy name: "ns/kind/name" */
#define LG_NET_ALLOW_MAX 64  /* allowlist entries per policy */

typedef struct lg_net lg_net;

struct lg_net_config {
        const char *cidr;        /* NULL = LG_NET_DEFAULT_CIDR; /8 to /28 */
        const char *table;       /* nft table; NULL = "legion" */
        const char *link_prefix; /* host link names; NULL = "lgv" (1-6 chars) */
};

/* One sandbox's attachment. */
struct lg_net_addr {
        char ip[LG_NET_IP_MAX];            /* its address, "10.200.0.7" */
        char host_if[LG_NET_IFNAME_MAX];   /* the host end of its veth */
};

enum lg_net_egress {
        LG_NET_EGRESS_OFF,   /* nothing beyond the namespace (and DNS) */
        LG_NET_EGRESS_ON,    /* anywhere but the blocked ranges */
        LG_NET_EGRESS_ALLOW, /* only what the allowlist names */
};

struct lg_net_allow {
        uint32_t addr, prefix_len;  /* network, host byte order; 0..32 */
        uint16_t port_lo, port_hi;  /* TCP and UDP ports; 0, 0 = every port and protocol */
};

struct lg_net_policy {
        enum lg_net_egress egress;
        struct lg_net_allow allow[LG_NET_ALLOW_MAX];
        size_t n_allow;
};

/* Per namespace. */
struct lg_net_namespace {
        bool isolate_sandboxes;     /* its sandboxes do not reach each other either */
        char snat[LG_NET_IP_MAX];   /* "" = masquerade; else SNAT to this address */
        char via_interface[LG_NET_IFNAME_MAX]; /* "" = the host's routes; else egress out of it */
        char via_gateway[LG_NET_IP_MAX];       /* with via_interface: next hop ("" = on-link) */
        uint32_t via_table;         /* 0 = none; else egress by this route table */
};

struct lg_net_stats {
        unsigned addresses_used, addresses_total;
        unsigned rules;    /* rules in the table */
        unsigned elements; /* set and map elements in the table */
        unsigned links;    /* host ends `<prefix>*` present (not counting `<prefix>0`) */
};

/* Parse a policy: "on", "off", or an allowlist of entries "CIDR",
 * "CIDR:PORT" or "CIDR:LO-HI" (a bare address is a /32), as a JSON-free
 * list of strings (parse_allow) or comma-separated in one string, blanks
 * around entries allowed (parse_mode: the CLI's and the pod annotation's
 * form). -EINVAL and err naming the entry on anything else: host bits set
 * in a CIDR, a port 0 or above 65535, LO > HI, an empty list, more than
 * LG_NET_ALLOW_MAX entries. Entries may overlap. out is written only on
 * success. */
int lg_net_policy_parse_mode(const char *mode, struct lg_net_policy *out, struct lg_error *err);
int lg_net_policy_parse_allow(const char *const *entries, size_t n, struct lg_net_policy *out,
                              struct lg_error *err);
/* "on", "off", or "allow 198.51.100.0/24, 203.0.113.5/32:443" (for status
 * and CLI output). */
void lg_net_policy_format(const struct lg_net_policy *p, char *buf, size_t size);

/* Set up the node's network: ip_forward on, the dummy link with the
 * gateway address, the nft table (replacing one left by a previous
 * legiond, in one transaction), the CIDR's unreachable route (replaced if
 * there), and the addresses of live sandboxes found
 * from their host routes (held until reclaimed or swept). Root only. */
int lg_net_new(const struct lg_net_config *cfg, lg_net **ret, struct lg_error *err);
/* Frees the handle; leaves the table, links and routes in place for the
 * sandboxes that outlive legiond. NULL is fine. */
void lg_net_free(lg_net *net);
/* Remove the table, the dummy link, the ip rules, the CIDR's unreachable
 * route and the host ends of every sandbox (legiond --stop-all, tests). */
int lg_net_teardown(lg_net *net, struct lg_error *err);

const char *lg_net_cidr(const lg_net *net);
/* The host's address in the CIDR: gateway and DNS for sandboxes. */
const char *lg_net_gateway(const lg_net *net);

/* Take a free address (-ENOSPC when the CIDR is exhausted, saying so).
 * Until lg_net_sweep has run, an address whose host link exists is held
 * as found instead (a live sandbox the start-up route list may have
 * missed), so owners sweep once they have reclaimed what they adopt. */
int lg_net_reserve(lg_net *net, struct lg_net_addr *out, struct lg_error *err);
/* Give a reserved address to the network namespace of pid (/proc/<pid>/ns/net):
 * veth pair, eth0 with the address, routes. On failure nothing is left but
 * the reservation. */
int lg_net_attach(lg_net *net, pid_t pid, const struct lg_net_addr *addr, struct lg_error *err);
/* After a restart: the attachment of a live sandbox (read from the netns
 * of pid), held again, its host route set as attach makes it (one from an
 * older legiond gets the gateway as source). -ENOENT: it has none. */
int lg_net_reclaim(lg_net *net, pid_t pid, struct lg_net_addr *out, struct lg_error *err);
/* Release everything of the addresses found at lg_net_new() that nobody
 * reclaimed: their elements, host links and the addresses. */
int lg_net_sweep(lg_net *net, struct lg_error *err);
/* The sandbox's namespace and policy (NULL policy = the namespace's):
 * replaces a previous assignment. -ENOENT: no such namespace (see
 * lg_net_namespace_set) or policy. */
int lg_net_assign(lg_net *net, const char *ip, const char *namespace, const char *policy, struct lg_error *err);
/* End of a sandbox: its elements (it reaches nothing from here on) and
 * its address. Its host link goes with its network namespace: the kernel
 * removes it, batched, off the caller's path (deleting it here would
 * cost tens of ms of the calling thread); should the address be handed
 * out again before that, lg_net_attach deletes the stale link. Unknown
 * address: 0. */
int lg_net_release(lg_net *net, const struct lg_net_addr *addr, struct lg_error *err);

/* Create or change a namespace (its default policy is `policy`). -ENODEV:
 * via_interface does not exist; -EINVAL: a bad snat/gateway address. */
int lg_net_namespace_set(lg_net *net, const char *namespace, const struct lg_net_namespace *ns,
                         const struct lg_net_policy *policy, struct lg_error *err);
/* Its rules, policies and routing; sandboxes still assigned to it are
 * unassigned (they keep their addresses until released). */
int lg_net_namespace_delete(lg_net *net, const char *namespace, struct lg_error *err);
/* A named policy of namespace (an app's, a pool's, a pod's override):
 * created or replaced; sandboxes assigned to it follow at once. */
int lg_net_policy_set(lg_net *net, const char *namespace, const char *name, const struct lg_net_policy *p,
                      struct lg_error *err);
int lg_net_policy_delete(lg_net *net, const char *name, struct lg_error *err);

int lg_net_stats(lg_net *net, struct lg_net_stats *out, struct lg_error *err);
