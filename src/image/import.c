/* Import of image archives (docker save, OCI layout). STUB: being written. */
#include "image/image-internal.h"

int lg_image_import(lg_image_store *st, const char *path, const char *name, lg_image_progress_cb progress, void *ud,
                    struct lg_image **ret, struct lg_error *err) {
        (void) st, (void) path, (void) name, (void) progress, (void) ud;
        *ret = NULL;
        return lg_error_setm(err, ENOSYS, "import not implemented yet");
}
