/* /api/v1/namespaces/{ns}/pods: the Pod API (docs/pods.md).
 * Being written. */
#include "api/api-internal.h"

void api_pods(struct api_call *c, const char *ns, const char *name, const char *sub) {
        (void) ns, (void) name, (void) sub;
        kube_status(c->req, 404, "NotFound", NULL, "%s", "pods not implemented yet");
}
