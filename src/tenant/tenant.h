/* Tenants: namespaces and the network policy of what runs in them
 * (docs/networking.md, docs/api.md "Namespaces").
 *
 * Two halves:
 *   - lg_tenant_policy_* and lg_tenant_network_parse: the API's JSON for
 *     an egress policy ("on", "off", {"allow": ["CIDR[:PORT[-PORT]]"]})
 *     and for a namespace's network, read into src/net's structs. The one
 *     reading of that JSON: namespaces, apps, session pools and pods all
 *     come through here, so what one accepts the others accept. Pure.
 *   - lg_tenants: the namespaces themselves (kind "Namespace", spec
 *     {"network": {...}} with its defaults filled in) and the named
 *     policies of apps, session pools and pods, kept in the node's lg_net.
 *     A change goes to lg_net first and to the store after; when the
 *     store refuses it, lg_net is put back as it was, so that a failed
 *     call changed nothing. Without an lg_net (networking off) everything
 *     is validated and stored the same and nothing else happens.
 *
 * Policy names in lg_net: a namespace's own is the namespace's name (see
 * net.h); the others are "<ns>/<kind>/<name>" (lg_tenant_policy_name):
 * kind "app", "pool" or "pod".
 *
 * Threading: one loop (legiond's), not thread-safe; lg_net serialises
 * itself. Memory: never logs; JSON given is borrowed for the call, JSON
 * and resources returned are the caller's. Errors: >= 0 or -errno with
 * err saying why in one line: -EINVAL bad input (the message names the
 * field and the value), -ENODEV an interface the host does not have,
 * -ENOENT, -EBUSY (a namespace that still has apps, session pools or pods), the store's. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "common/util.h"
#include "net/net.h"
#include "store/store.h"

/* ---- the JSON --------------------------------------------------------------- */

enum {
        /* Also true and false (session pools: true is the namespace's
         * policy, what "on" is there). */
        LG_TENANT_POLICY_BOOL = 1 << 0,
};

/* An egress policy: "on", "off", {"allow": [entries]} with entries as
 * lg_net_policy_parse_allow reads them (strings of at most 64 bytes; at
 * most LG_NET_ALLOW_MAX). field names the value in err ("`egress`").
 * -EINVAL on anything else. */
int lg_tenant_policy_parse(const json_t *v, unsigned flags, const char *field, struct lg_net_policy *out,
                           struct lg_error *err);
/* The pod annotation naming a pod's egress policy, and its reading: "on",
 * "off" or a comma-separated allowlist "CIDR[:PORT[-PORT]],..." (the
 * CLI's form too). field (NULL: none) names it in err. */
#define LG_TENANT_EGRESS_ANNOTATION "legion.dev/egress"
int lg_tenant_policy_parse_text(const char *s, const char *field, struct lg_net_policy *out, struct lg_error *err);

/* A namespace's network: {"egress": <policy>, "isolation": "namespace" |
 * "sandbox", "snat": "IP", "via": {"interface": "IF", "gateway": "IP"} |
 * {"table": N}}, every field optional (NULL: all defaults: egress on,
 * isolation namespace). Into ns and its default policy; *normalized (may
 * be NULL) the JSON to store: the value given with its defaults filled in. */
int lg_tenant_network_parse(const json_t *network, struct lg_net_namespace *ns, struct lg_net_policy *policy,
                            json_t **normalized, struct lg_error *err);

/* "<ns>/<kind>/<name>" into buf (LG_NET_NAME_MAX). */
void lg_tenant_policy_name(char *buf, size_t cap, const char *ns, const char *kind, const char *name);

/* ---- namespaces and named policies ----------------------------------------- */

typedef struct lg_tenants lg_tenants;

/* net may be NULL: networking is off on this node. Borrows both. */
int lg_tenants_new(lg_store *store, lg_net *net, lg_tenants **ret, struct lg_error *err);
void lg_tenants_free(lg_tenants *t); /* NULL is fine */

/* Create namespace name with network (NULL: the defaults, or, when it
 * exists, what it has). An existing one with a network given gets it, as
 * lg_tenants_set. The store's LG_STORE_CREATED, _UPDATED or _UNCHANGED;
 * *ret (may be NULL) the object. */
int lg_tenants_create(lg_tenants *t, const char *name, const json_t *network, struct lg_resource **ret,
                      struct lg_error *err);
/* Change an existing namespace's network (-ENOENT when there is none):
 * its sandboxes follow at once. Returns as lg_tenants_create. */
int lg_tenants_set(lg_tenants *t, const char *name, const json_t *network, struct lg_resource **ret,
                   struct lg_error *err);
/* Delete it: -EBUSY while it has apps; its network (rules, policies) goes
 * from lg_net after the store's delete. */
int lg_tenants_delete(lg_tenants *t, const char *name, struct lg_error *err);
/* {"name", "createdAt", "network"} of a stored namespace (the defaults
 * for one stored before namespaces had a network). NULL: out of memory. */
json_t *lg_tenants_json(const struct lg_resource *ns);
/* At start, before any sandbox is given a tenant: a stored namespace's
 * network registered in lg_net again, as stored. */
int lg_tenants_restore(lg_tenants *t, const struct lg_resource *ns, struct lg_error *err);

/* The named policy "<ns>/<kind>/<name>" set to p, or deleted (p NULL;
 * an unknown one is no error). Its namespace must be registered. 0 and
 * nothing done without an lg_net. */
int lg_tenants_policy_set(lg_tenants *t, const char *ns, const char *kind, const char *name,
                          const struct lg_net_policy *p, struct lg_error *err);
/* The same from an egress value as lg_tenant_policy_parse reads it
 * (flags 0); egress NULL deletes it (its sandboxes have their namespace's
 * policy: the node assigns them with policy NULL). An app with an egress
 * of its own has policy "<ns>/app/<name>", a session pool with an
 * allowlist "<ns>/pool/<name>", a pod with the annotation
 * "<ns>/pod/<name>" (docs/networking.md). */
int lg_tenants_egress_set(lg_tenants *t, const char *ns, const char *kind, const char *name, const json_t *egress,
                          struct lg_error *err);

/* The node's lg_net, or NULL when networking is off. */
lg_net *lg_tenants_net(lg_tenants *t);
