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
#include "jobs/jobs.h"
#include "lazy/serve.h"
#include "lazy/lazyd.h"
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
        lg_lazyd *lazyd;     /* the lazy fetcher (<home>/run/lazy) */
        lg_pods *pods;
        lg_jobs *jobs;       /* serverless jobs (<home>/jobs: their logs) */
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


/* One line of legiond's log on stderr (main.c). */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Lazy layers (lazy.c): --lazy-images, --lazy-rate, --lazy-fetch-timeout-ms. */
struct lg_daemon_lazy_opts {
        bool never;             /* pulls never look for a lazy form */
        uint64_t rate;          /* the fetcher's hydration cap, bytes/s; 0 = none */
        unsigned fetch_timeout_ms;
};
/* The fetcher taken over or cleaned up after, the image store's lazy ops,
 * and every lazy layer mounted again (before pods and apps are adopted).
 * Without a usable lazyd (said in the log) d->lazyd stays NULL and the
 * store gets no lazy ops. */
int lg_daemon_lazy_start(struct lg_daemon *d, const struct lg_daemon_lazy_opts *o, struct lg_error *err);
/* The lazy ops (src/lazy/lazyd.h) for the image store and package images;
 * their ud is the struct lg_daemon. */
extern const struct lg_image_lazy_ops lg_daemon_lazy_ops;
/* --stop-all's part: the fetcher, its mounts and cgroup. */
int lg_daemon_lazy_stop_all(const char *home);
