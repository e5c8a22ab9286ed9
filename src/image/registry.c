/* Registry client: pull over the distribution API v2 (image.h).
 * STUB: being written. */
#include <errno.h>

#include "image/image.h"

int lg_image_pull(lg_image_store *st, const char *ref, const struct lg_registry_auth *auth,
                  lg_image_progress_cb progress, void *ud, struct lg_image **ret,
                  struct lg_error *err) {
        (void) st, (void) ref, (void) auth, (void) progress, (void) ud, (void) ret;
        return lg_error_set(err, -ENOSYS, "pull not implemented");
}
