/* The Kubernetes-compatible API: discovery, Status errors, tables
 * (docs/pods.md). STUB: being written. */
#include <string.h>

#include "api/api-internal.h"

void api_kube(struct api_call *c) {
        lg_http_respond_error(c->req, 404, "NotFound", "%s", "Kubernetes API not implemented yet");
}

bool api_kube_path(const char *const *seg, int nseg) {
        return nseg >= 1 && (!strcmp(seg[0], "api") || !strcmp(seg[0], "apis") || !strcmp(seg[0], "openapi") ||
                             !strcmp(seg[0], "version"));
}
