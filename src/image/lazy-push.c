/* Pushing a converted image's lazy artifact: waits for P3a's lazy-artifact. */
#include "image/image-internal.h"

int lg_image_lazy_push(lg_image_store *st, struct lg_chunk_store *cs, const char *ref, const struct lg_image *img,
                       const struct lg_image_manifest *m, struct lg_image_convert_result *ret,
                       const struct lg_registry_auth *auth, lg_image_progress_cb progress, void *ud,
                       struct lg_error *err) {
        (void) st, (void) cs, (void) ref, (void) img, (void) m, (void) ret, (void) auth, (void) progress, (void) ud;
        return lg_error_setm(err, ENOTSUP, "pushing lazy artifacts is not built yet");
}
