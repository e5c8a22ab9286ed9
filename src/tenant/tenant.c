/* Namespaces and their network policies (tenant.h): the API's JSON read
 * into src/net's structs, and namespaces kept in the store and in lg_net
 * together. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/spec.h"
#include "tenant/tenant.h"

#define ALLOW_ENTRY_MAX 64 /* "255.255.255.255/32:65535-65535" and room to spare */

struct lg_tenants {
        lg_store *store;
        lg_net *net;
};

/* ---- the JSON --------------------------------------------------------------- */

static int policy_bad(const char *field, struct lg_error *err) {
        return lg_error_setm(err, EINVAL, "%s must be \"on\", \"off\" or {\"allow\": [\"CIDR[:PORT[-PORT]]\", ...]}",
                             field);
}

int lg_tenant_policy_parse(const json_t *v, unsigned flags, const char *field, struct lg_net_policy *out,
                           struct lg_error *err) {
        *out = (struct lg_net_policy){0};
        if ((flags & LG_TENANT_POLICY_BOOL) && json_is_boolean(v))
                return lg_net_policy_parse_mode(json_is_true(v) ? "on" : "off", out, err);
        if (json_is_string(v)) {
                const char *s = json_string_value(v);
                if (strcmp(s, "on") && strcmp(s, "off"))
                        return policy_bad(field, err);
                int r = lg_net_policy_parse_mode(s, out, err);
                return r < 0 ? lg_error_wrap(err, r, "%s", field) : r;
        }
        if (!json_is_object(v))
                return policy_bad(field, err);
        static const char *const fields[] = {"allow", NULL};
        char what[128];
        snprintf(what, sizeof(what), "%s", field);
        int r = lg_spec_only_fields(v, what, fields, err);
        if (r < 0)
                return r;
        json_t *allow = json_object_get(v, "allow");
        if (!json_is_array(allow))
                return lg_error_setm(err, EINVAL, "%s: `allow` must be a list of \"CIDR[:PORT[-PORT]]\" strings",
                                     field);
        size_t n = json_array_size(allow);
        if (n > LG_NET_ALLOW_MAX)
                return lg_error_setm(err, EINVAL, "%s: `allow` has %zu entries, at most %d are allowed", field, n,
                                     LG_NET_ALLOW_MAX);
        const char *entries[LG_NET_ALLOW_MAX];
        for (size_t i = 0; i < n; i++) {
                json_t *e = json_array_get(allow, i);
                if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) > ALLOW_ENTRY_MAX ||
                    strlen(json_string_value(e)) != json_string_length(e))
                        return lg_error_setm(err, EINVAL,
                                             "%s: `allow[%zu]` must be a string \"CIDR[:PORT[-PORT]]\" of 1 to %d "
                                             "bytes",
                                             field, i, ALLOW_ENTRY_MAX);
                entries[i] = json_string_value(e);
        }
        r = lg_net_policy_parse_allow(entries, n, out, err);
        return r < 0 ? lg_error_wrap(err, r, "%s", field) : r;
}

int lg_tenant_policy_parse_text(const char *s, const char *field, struct lg_net_policy *out, struct lg_error *err) {
        int r = lg_net_policy_parse_mode(s, out, err);
        return r < 0 && field ? lg_error_wrap(err, r, "%s", field) : r;
}

static bool is_ipv4(const char *s) {
        struct in_addr a;
        return s && inet_pton(AF_INET, s, &a) == 1;
}

/* A Linux interface name: 1-15 bytes, no '/', ':' or white space, not
 * "." or ".." (dev_valid_name). */
static bool is_ifname(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n >= LG_NET_IFNAME_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
                return false;
        for (const char *p = s; *p; p++)
                if (*p == '/' || *p == ':' || (unsigned char) *p <= ' ' || (unsigned char) *p >= 0x7f)
                        return false;
        return true;
}

static int parse_via(const json_t *via, struct lg_net_namespace *ns, struct lg_error *err) {
        if (!json_is_object(via))
                return lg_error_setm(err, EINVAL, "%s",
                                     "`network.via` must be {\"interface\": \"IF\", \"gateway\": \"IP\"} or "
                                     "{\"table\": N}");
        static const char *const fields[] = {"interface", "gateway", "table", NULL};
        int r = lg_spec_only_fields(via, "`network.via`", fields, err);
        if (r < 0)
                return r;
        json_t *itf = json_object_get(via, "interface"), *gw = json_object_get(via, "gateway"),
               *table = json_object_get(via, "table");
        if (!!itf == !!table)
                return lg_error_setm(err, EINVAL, "%s", "`network.via` must name either an `interface` or a `table`");
        if (itf) {
                if (!json_is_string(itf) || !is_ifname(json_string_value(itf)))
                        return lg_error_setm(err, EINVAL,
                                             "`network.via.interface` must be an interface name (1 to 15 bytes, "
                                             "no '/', ':' or spaces), not %.80s",
                                             json_is_string(itf) ? json_string_value(itf) : "a non-string");
                snprintf(ns->via_interface, sizeof(ns->via_interface), "%s", json_string_value(itf));
        }
        if (gw) {
                if (!itf)
                        return lg_error_setm(err, EINVAL, "%s", "`network.via.gateway` needs `network.via.interface`");
                if (!json_is_string(gw) || !is_ipv4(json_string_value(gw)))
                        return lg_error_setm(err, EINVAL, "`network.via.gateway` must be an IPv4 address, not %.80s",
                                             json_is_string(gw) ? json_string_value(gw) : "a non-string");
                snprintf(ns->via_gateway, sizeof(ns->via_gateway), "%s", json_string_value(gw));
        }
        if (table) {
                json_int_t t = json_is_integer(table) ? json_integer_value(table) : 0;
                /* 253-255 are the kernel's default, main and local tables. */
                if (t < 1 || t > 0xffffffffLL || (t >= 253 && t <= 255))
                        return lg_error_setm(err, EINVAL, "%s",
                                             "`network.via.table` must be a route table number from 1 to "
                                             "4294967295, not 253, 254 or 255 (default, main, local)");
                ns->via_table = (uint32_t) t;
        }
        return 0;
}

int lg_tenant_network_parse(const json_t *network, struct lg_net_namespace *ns, struct lg_net_policy *policy,
                            json_t **normalized, struct lg_error *err) {
        *ns = (struct lg_net_namespace){0};
        if (network && !json_is_object(network))
                return lg_error_setm(err, EINVAL, "%s", "`network` must be an object");
        static const char *const fields[] = {"egress", "isolation", "snat", "via", NULL};
        int r = network ? lg_spec_only_fields(network, "`network`", fields, err) : 0;
        if (r < 0)
                return r;
        json_t *egress = json_object_get(network, "egress"), *iso = json_object_get(network, "isolation"),
               *snat = json_object_get(network, "snat"), *via = json_object_get(network, "via");
        _cleanup_(json_decrefp) json_t *on = json_string("on");
        if ((r = lg_tenant_policy_parse(egress ? egress : on, 0, "`network.egress`", policy, err)) < 0)
                return r;
        const char *isv = iso ? json_string_value(iso) : "namespace";
        if (!isv || (strcmp(isv, "namespace") && strcmp(isv, "sandbox")))
                return lg_error_setm(err, EINVAL, "%s", "`network.isolation` must be \"namespace\" or \"sandbox\"");
        ns->isolate_sandboxes = !strcmp(isv, "sandbox");
        if (snat) {
                if (!json_is_string(snat) || !is_ipv4(json_string_value(snat)))
                        return lg_error_setm(err, EINVAL, "`network.snat` must be an IPv4 address, not %.80s",
                                             json_is_string(snat) ? json_string_value(snat) : "a non-string");
                snprintf(ns->snat, sizeof(ns->snat), "%s", json_string_value(snat));
        }
        if (via && (r = parse_via(via, ns, err)) < 0)
                return r;
        if (!normalized)
                return 0;
        json_t *n = network ? json_deep_copy(network) : json_object();
        if (!n || json_object_set(n, "egress", egress ? egress : on) < 0 ||
            json_object_set_new(n, "isolation", json_string(isv)) < 0) {
                json_decref(n);
                return lg_error_set(err, ENOMEM, "network");
        }
        *normalized = n;
        return 0;
}

void lg_tenant_policy_name(char *buf, size_t cap, const char *ns, const char *kind, const char *name) {
        snprintf(buf, cap, "%s/%s/%s", ns, kind, name);
}

/* ---- namespaces ------------------------------------------------------------- */

int lg_tenants_new(lg_store *store, lg_net *net, lg_tenants **ret, struct lg_error *err) {
        lg_tenants *t = calloc(1, sizeof(*t));
        if (!t)
                return lg_error_set(err, ENOMEM, "tenants");
        t->store = store;
        t->net = net;
        *ret = t;
        return 0;
}

void lg_tenants_free(lg_tenants *t) { free(t); }

lg_net *lg_tenants_net(lg_tenants *t) { return t->net; }

/* The namespace's network in lg_net as network says (NULL: defaults). */
static int net_apply(lg_tenants *t, const char *name, const json_t *network, json_t **normalized,
                     struct lg_error *err) {
        struct lg_net_namespace ns;
        struct lg_net_policy p;
        int r = lg_tenant_network_parse(network, &ns, &p, normalized, err);
        if (r >= 0 && t->net)
                r = lg_net_namespace_set(t->net, name, &ns, &p, err);
        return r < 0 ? lg_error_wrap(err, r, "namespace `%s`", name) : 0;
}

static int check_name(const char *name, struct lg_error *err) {
        if (name && lg_store_valid_name(name))
                return 0;
        return lg_error_setm(err, EINVAL,
                             "invalid namespace name `%.80s`: 1-63 of [a-z0-9-], starting and ending with a letter "
                             "or digit",
                             name ? name : "");
}

int lg_tenants_set(lg_tenants *t, const char *name, const json_t *network, struct lg_resource **ret,
                   struct lg_error *err) {
        _cleanup_(lg_resource_freep) struct lg_resource *old = NULL;
        int r = check_name(name, err);
        if (r < 0)
                return r;
        if (!network)
                return lg_error_setm(err, EINVAL, "namespace `%s`: `network` is required", name);
        if ((r = lg_store_get(t->store, LG_KEY("Namespace", "", name), &old, err)) < 0)
                return r == -ENOENT ? lg_error_setm(err, ENOENT, "namespace `%s` not found", name) : r;
        _cleanup_(json_decrefp) json_t *normalized = NULL;
        if ((r = net_apply(t, name, network, &normalized, err)) < 0)
                return r;
        _cleanup_(json_decrefp) json_t *spec = json_deep_copy(old->spec);
        if (!spec || json_object_set(spec, "network", normalized) < 0)
                r = lg_error_set(err, ENOMEM, "namespace `%s`", name);
        else
                r = lg_store_update(t->store, LG_KEY("Namespace", "", name), old->resource_version, NULL, spec, ret,
                                    err);
        if (r < 0) {
                /* Back to what the store still says. */
                struct lg_error ignored = {0};
                if (t->net)
                        lg_tenants_restore(t, old, &ignored);
                return r;
        }
        return r ? LG_STORE_UPDATED : LG_STORE_UNCHANGED;
}

int lg_tenants_create(lg_tenants *t, const char *name, const json_t *network, struct lg_resource **ret,
                      struct lg_error *err) {
        int r = check_name(name, err);
        if (r < 0)
                return r;
        struct lg_resource *old = NULL;
        r = lg_store_get(t->store, LG_KEY("Namespace", "", name), &old, err);
        if (r >= 0) {
                if (network) {
                        lg_resource_free(old);
                        return lg_tenants_set(t, name, network, ret, err);
                }
                if (ret)
                        *ret = old;
                else
                        lg_resource_free(old);
                return LG_STORE_UNCHANGED;
        }
        if (r != -ENOENT)
                return r;
        _cleanup_(json_decrefp) json_t *normalized = NULL;
        if ((r = net_apply(t, name, network, &normalized, err)) < 0)
                return r;
        _cleanup_(json_decrefp) json_t *spec = json_pack("{s:O}", "network", normalized);
        r = spec ? lg_store_create(t->store, LG_KEY("Namespace", "", name), NULL, spec, NULL, ret, err)
                 : lg_error_set(err, ENOMEM, "namespace `%s`", name);
        if (r < 0) {
                struct lg_error ignored = {0};
                if (t->net)
                        lg_net_namespace_delete(t->net, name, &ignored);
                return r;
        }
        return LG_STORE_CREATED;
}

int lg_tenants_delete(lg_tenants *t, const char *name, struct lg_error *err) {
        _cleanup_(lg_resource_freep) struct lg_resource *old = NULL;
        int r = lg_store_get(t->store, LG_KEY("Namespace", "", name), &old, err);
        if (r < 0)
                return r == -ENOENT ? lg_error_setm(err, ENOENT, "namespace `%s` not found", name) : r;
        /* Not while anything in it could hold an address or name its
         * policies: its sandboxes would be left without a tenant. */
        static const struct {
                const char *kind, *what;
        } holders[] = {{"App", "app"}, {"SessionPool", "session pool"}, {"Pod", "pod"}};
        char busy[192] = "";
        for (size_t i = 0; i < ARRAY_SIZE(holders); i++) {
                _cleanup_(lg_resource_list_free) struct lg_resource_list l = {0};
                if ((r = lg_store_list(t->store, holders[i].kind, name, NULL, &l, err)) < 0)
                        return r;
                if (l.n)
                        snprintf(busy + strlen(busy), sizeof(busy) - strlen(busy), "%s%zu %s%s", busy[0] ? ", " : "",
                                 l.n, holders[i].what, l.n == 1 ? "" : "s");
        }
        if (busy[0])
                return lg_error_setm(err, EBUSY, "namespace `%s` still has %s", name, busy);
        if (t->net && (r = lg_net_namespace_delete(t->net, name, err)) < 0 && r != -ENOENT)
                return lg_error_wrap(err, r, "namespace `%s`", name);
        r = lg_store_delete(t->store, LG_KEY("Namespace", "", name), old->resource_version, NULL, err);
        if (r < 0 && t->net) {
                struct lg_error ignored = {0};
                lg_tenants_restore(t, old, &ignored);
        }
        return r;
}

json_t *lg_tenants_json(const struct lg_resource *ns) {
        char created[32];
        lg_store_format_time(ns->created_at, created, sizeof(created));
        json_t *network = json_object_get(ns->spec, "network");
        if (network)
                json_incref(network);
        else if (lg_tenant_network_parse(NULL, &(struct lg_net_namespace){0}, &(struct lg_net_policy){0}, &network,
                                         NULL) < 0)
                return NULL;
        return json_pack("{s:s, s:s, s:o}", "name", ns->name, "createdAt", created, "network", network);
}

int lg_tenants_restore(lg_tenants *t, const struct lg_resource *ns, struct lg_error *err) {
        return net_apply(t, ns->name, json_object_get(ns->spec, "network"), NULL, err);
}

int lg_tenants_policy_set(lg_tenants *t, const char *ns, const char *kind, const char *name,
                          const struct lg_net_policy *p, struct lg_error *err) {
        if (!t || !t->net)
                return 0;
        char pname[LG_NET_NAME_MAX];
        lg_tenant_policy_name(pname, sizeof(pname), ns, kind, name);
        int r = p ? lg_net_policy_set(t->net, ns, pname, p, err) : lg_net_policy_delete(t->net, pname, err);
        if (!p && r == -ENOENT)
                return 0;
        return r < 0 ? lg_error_wrap(err, r, "network policy `%s`", pname) : r;
}

int lg_tenants_egress_set(lg_tenants *t, const char *ns, const char *kind, const char *name, const json_t *egress,
                          struct lg_error *err) {
        if (!t || !t->net)
                return 0;
        if (!egress)
                return lg_tenants_policy_set(t, ns, kind, name, NULL, err);
        struct lg_net_policy p;
        int r = lg_tenant_policy_parse(egress, 0, "`egress`", &p, err);
        return r < 0 ? r : lg_tenants_policy_set(t, ns, kind, name, &p, err);
}
