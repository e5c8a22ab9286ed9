/* State shared by legiond's parts: the store, blobs, node agent, router and
 * API server of one single-node legiond, all on one libuv loop. */
#pragma once

#include <uv.h>

#include "apps/apps.h"
#include "http/http.h"
#include "image/image.h"
#include "node/node.h"
#include "pkg/pkg.h"
#include "pod/pod.h"
#include "router/router.h"
#include "session/session.h"
#include "store/store.h"

struct lg_daemon {
        uv_loop_t *loop;
        char *home;          /* $LEGION_HOME */
        char *runtimes_dir;
        char *logs_dir;      /* <home>/logs/<ns>/<app>.log */
        lg_store *store;
        struct lg_blobstore *blobs;
        lg_image_store *images; /* <home>/images */
        lg_pods *pods;
        lg_node *node;
        lg_router *router;
        lg_sessions *sessions;
        lg_apps *apps;
        struct lg_http_server *http;
};

/* api.c */
enum lg_http_body_mode lg_api_on_head(struct lg_http_request *req, void *userdata);
void lg_api_on_request(struct lg_http_request *req, void *userdata);
/* Load pool groups and apps from the store into the node and router. */
int lg_api_restore(struct lg_daemon *d, struct lg_error *err);
