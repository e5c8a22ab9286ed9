/* Lazy pulls (lg_image_pull_lazy, image.h; docs/lazy-images.md): so
 * far every pull is a full one, saying so. */
#include <string.h>

#include "image/image-internal.h"

void lg_image_pull_report_clear(struct lg_image_pull_report *r) {
        if (!r)
                return;
        free(r->layers);
        memset(r, 0, sizeof(*r));
}

int lg_image_pull_lazy(lg_image_store *st, const char *ref, const struct lg_registry_auth *auth,
                       enum lg_image_lazy_mode lazy, lg_image_progress_cb progress, void *ud, struct lg_image **ret,
                       struct lg_image_pull_report *report, struct lg_error *err) {
        if (report) {
                memset(report, 0, sizeof(*report));
                snprintf(report->reason, sizeof(report->reason), "%s",
                         lazy == LG_IMAGE_LAZY_NEVER ? "not asked for (--lazy never)"
                                                     : "lazy pulls are not on this legiond yet");
        }
        return lg_image_pull(st, ref, auth, progress, ud, ret, err);
}
