/* Links, addresses, routes and rules through netlink (libmnl): see
 * net-internal.h. */
#include "net/net-internal.h"
