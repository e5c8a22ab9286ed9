/* What legiond's main holds: the store, blobs, node agent, router, the
 * application modules and the API server of one single-node legiond, all on
 * one libuv loop. Only src/legiond includes this: the modules are given
 * the handles they need. */
#pragma once

#include <uv.h>

#include "api/api.h"
#include "apps/apps.h"
#include "http/http.h"
#include "image/image.h"
#include "lazy/serve.h"
#include "net/net.h"
#include "node/node.h"
#include "pkg/pkg.h"
#include "pod/pod.h"
#include "router/router.h"
#include "session/session.h"
#include "store/store.h"
#include "tenant/tenant.h"

struct lg_daemon {
        uv_loop_t *loop;
        char *home;          /* $LEGION_HOME */
        char *runtimes_dir;
        char *logs_dir;      /* <home>/logs/<ns>/<app>.log */
        lg_store *store;
        struct lg_blobstore *blobs;
        lg_image_store *images; /* <home>/images */
        lg_image_jobs *image_jobs;
        lg_pods *pods;
        lg_net *net;         /* the node's sandbox network; NULL = --network off */
        struct lg_dns *dns;  /* the sandboxes' DNS forwarder on its gateway */
        struct lg_agent *agent; /* the node agent: every sandbox of this node */
        lg_node *node;
        lg_router *router;
        lg_sessions *sessions;
        lg_apps *apps;
        lg_tenants *tenants; /* namespaces and their network */
        lg_api *api;
        lg_lazy_serve *blobs_served; /* /v2: blobs for other nodes */
        struct lg_http_server *http;
};

