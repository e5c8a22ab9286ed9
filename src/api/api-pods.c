/* /api/v1/namespaces/{ns}/pods: the Pod API (docs/pods.md).
 * STUB: being written. */
#include "api/api-internal.h"
