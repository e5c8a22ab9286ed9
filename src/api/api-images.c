/* /v1/images: import, pull, list, inspect, remove and GC of OCI images
 * (docs/api.md, "Images"). STUB: being written. */
#include "api/api-internal.h"

void api_images(struct api_call *c) {
        lg_http_respond_error(c->req, 404, "NotFound", "%s", "images not implemented yet");
}
bool api_images_streams(struct lg_http_request *req) {
        (void) req;
        return false;
}
