/* The node agent as the router's instance provider: an adapter from
 * lg_node_instance_start and lg_instance_destroy to the router's ops table
 * (struct lg_router_provider_ops in router/router.h).
 *
 * Use lg_node_provider_ops with the lg_node as provider_data; the node must
 * outlive the router. Handles are the adapter's own records, freed when the
 * instance is destroyed, fails to start or exits. Everything on the node's
 * loop. */
#pragma once

#include "node/node.h"
#include "router/router.h"

extern const struct lg_router_provider_ops lg_node_provider_ops;
