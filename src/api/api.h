/* legiond's HTTP API: thin adapters from HTTP to the modules that hold the
 * logic -- apps (src/apps), sessions (src/session), pods (src/pod), images
 * (src/image), jobs (src/jobs), the store -- the data path /fn/... into the
 * router, and /v2, the blobs this node serves to other nodes
 * (src/lazy/serve.h).
 * Routing, authentication (bearer tokens scoped to a namespace), JSON
 * bodies and errors ({"error":{"code","message"}} with the status that
 * fits, 404 rather than 403 across namespaces): docs/api.md; the
 * Kubernetes Pod API: docs/pods.md.
 *
 * Threading: everything runs on cfg->loop, not thread-safe; image jobs
 * run on libuv's thread pool and report back to the loop. Callbacks:
 * lg_api_on_head and lg_api_on_request are the HTTP server's (userdata
 * the lg_api); the API registers the store's commit hook (wakes pod
 * watches). Memory: the API never logs; the handles in cfg are borrowed
 * and must outlive it. */
#pragma once

#include <uv.h>

#include "apps/apps.h"
#include "common/util.h"
#include "http/http.h"
#include "image/image.h"
#include "image/jobs.h"
#include "jobs/jobs.h"
#include "lazy/serve.h"
#include "pod/pod.h"
#include "router/router.h"
#include "session/session.h"
#include "store/store.h"
#include "tenant/tenant.h"

typedef struct lg_api lg_api;

struct lg_api_config {
        uv_loop_t *loop;
        lg_store *store;
        lg_apps *apps;
        lg_tenants *tenants;    /* namespaces and their network */
        lg_sessions *sessions;
        lg_pods *pods;          /* NULL: no warm pods, no layers in use */
        lg_jobs *jobs;          /* serverless jobs; NULL: their calls answer 503 */
        lg_image_store *images; /* NULL: /v1/images answers 503 */
        lg_image_jobs *image_jobs; /* import, pull, GC, remove of images */
        lg_router *router;      /* the data path of apps and sessions */
        /* The blobs this node serves to other nodes at /v2 (serve.h);
         * NULL: /v2 answers 503. */
        lg_lazy_serve *blobs;
        /* legiond --fn-domain: Host "APP.NS.<fn_domain>" is app NS/APP's
         * data path. NULL: "APP.NS.fn.<anything>" is (the rule before it). */
        const char *fn_domain;
};

int lg_api_new(const struct lg_api_config *cfg, lg_api **ret, struct lg_error *err);
/* Requests still running must have ended (the server is closed). Its
 * memory goes on the loop's next turn. NULL is fine. */
void lg_api_free(lg_api *api);

/* legiond is stopping and frees the router next: requests still in flight
 * (lg_http_server_close lets them finish) are answered 503 instead of
 * reaching it. */
void lg_api_stop(lg_api *api);

/* The HTTP server's on_head and on_request, with the lg_api as userdata. */
enum lg_http_body_mode lg_api_on_head(struct lg_http_request *req, void *api);
void lg_api_on_request(struct lg_http_request *req, void *api);

/* Host-header routing (api-host.c). true with ns and app (lowercase, not
 * yet checked as names) when host ("name[:port]") is "APP.NS.<domain>"
 * (one trailing dot allowed, case ignored); with domain NULL when it is
 * "APP.NS.fn.<anything>". */
bool lg_api_host_app(const char *host, const char *domain, char ns[LG_STORE_NAME_MAX + 1],
                     char app[LG_STORE_NAME_MAX + 1]);
/* A --fn-domain: dot-separated DNS labels. -EINVAL with err saying why. */
int lg_api_fn_domain_check(const char *domain, struct lg_error *err);
