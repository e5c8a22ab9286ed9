/* The node's nftables table through libnftables: see net-internal.h. */
#include "net/net-internal.h"
