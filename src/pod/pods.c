/* The pod manager (pod.h). STUB: being written. */
#include <errno.h>
#include <stdlib.h>

#include "pod/pod.h"

int lg_pods_new(const struct lg_pods_config *cfg, lg_pods **ret, struct lg_error *err) {
        (void) cfg, (void) err;
        *ret = NULL;
        return 0;
}
void lg_pods_free(lg_pods *pods) { (void) pods; }
int lg_pods_sync(lg_pods *pods, const char *ns, const char *name, struct lg_error *err) {
        (void) pods, (void) ns, (void) name;
        return lg_error_set(err, -ENOSYS, "pods not implemented");
}
int lg_pods_restore(lg_pods *pods, struct lg_error *err) {
        (void) pods, (void) err;
        return 0;
}
int lg_pods_log_path(lg_pods *pods, const char *ns, const char *pod, const char *container, bool previous,
                     char *buf, size_t cap) {
        (void) pods, (void) ns, (void) pod, (void) container, (void) previous, (void) buf, (void) cap;
        return -ENOENT;
}
int lg_pods_container_active(lg_pods *pods, const char *ns, const char *pod, const char *container) {
        (void) pods, (void) ns, (void) pod, (void) container;
        return 0;
}
int lg_pods_layers_in_use(lg_pods *pods, char ***ret, size_t *n) {
        (void) pods;
        *ret = NULL;
        *n = 0;
        return 0;
}
