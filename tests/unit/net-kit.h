/* The node network of a unit test (net.h) with a table, link prefix and
 * CIDR of the test's own, and a namespace whose egress is on. Static
 * inline: include after cmocka.h. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "net/net.h"

/* fresh: without what a failed run left (the table, links of its
 * sandboxes would hold addresses), else as a restarted legiond finds
 * it. */
static inline lg_net *test_net_open(const char *cidr, const char *table, const char *prefix, bool fresh,
                                    const char *tenant) {
        struct lg_net_config cfg = {.cidr = cidr, .table = table, .link_prefix = prefix};
        struct lg_error err = {0};
        lg_net *net = NULL;
        int r = 0;
        if (fresh) {
                r = lg_net_new(&cfg, &net, &err);
                if (r >= 0)
                        r = lg_net_teardown(net, &err);
                lg_net_free(net);
        }
        if (r >= 0)
                r = lg_net_new(&cfg, &net, &err);
        if (r < 0)
                fprintf(stderr, "lg_net_new: %s\n", err.msg);
        assert_int_equal(r, 0);
        struct lg_net_namespace ns = {0};
        struct lg_net_policy on = {.egress = LG_NET_EGRESS_ON};
        assert_int_equal(lg_net_namespace_set(net, tenant, &ns, &on, &err), 0);
        return net;
}
