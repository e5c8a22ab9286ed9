/* Pod spec validation and defaulting; the Kubernetes Pod document (pod.h).
 * STUB: being written. */
#include <errno.h>

#include "pod/pod.h"

int lg_podspec_validate(const json_t *spec, json_t **ret, struct lg_error *err) {
        (void) spec, (void) ret;
        return lg_error_set(err, -ENOSYS, "pods not implemented");
}
int lg_pod_validate_metadata(const json_t *metadata, struct lg_error *err) {
        (void) metadata;
        return lg_error_set(err, -ENOSYS, "pods not implemented");
}
json_t *lg_pod_to_json(const struct lg_resource *r) { return lg_resource_to_json(r); }
