/* The node's sandbox network: addresses, namespaces, policies (net.h). */
#include "net/net.h"
