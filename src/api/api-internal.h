/* The API's state and the helpers its handlers share (api*.c). */
#pragma once

#include <jansson.h>

#include "api/api.h"
#include "common/spec.h"

struct watch;

struct lg_api {
        uv_loop_t *loop;
        lg_store *store;
        lg_apps *apps;
        lg_tenants *tenants;
        lg_sessions *sessions;
        lg_pods *pods;
        lg_image_store *images;
        lg_image_jobs *image_jobs;
        lg_router *router;
        lg_lazy_serve *blobs; /* NULL: /v2 answers 503 */
        const char *fn_domain; /* NULL: the ".fn." host rule */
        /* Pod watches (api-pods-stream.c), woken by the store's commit
         * hook through the kick timer. */
        struct watch *watches;
        uv_timer_t kick;
        lg_jobs *jobs; /* NULL: /v1/.../jobs answers 503 */
        /* Job attach streams (api-jobs.c): ended, the jobs going on, when
         * legiond stops. */
        struct job_attach *attaches;
        bool stopping;
};

/* Who is calling: the namespace their token is for, or "*" for admin. */
struct api_call {
        struct lg_api *api;
        struct lg_http_request *req;
        const char *const *seg;
        int nseg;
        struct lg_token token;
};

bool api_is_admin(const struct api_call *c);
/* The router, or NULL with 503 answered once legiond is stopping. */
lg_router *api_router(lg_api *api, struct lg_http_request *req);
/* True when the caller may act in namespace ns. Otherwise the request has
 * been answered 404 (never 403: names in other namespaces must not leak). */
bool api_ns_allowed(struct api_call *c, const char *ns);
/* The namespace must exist (answers 404 otherwise). */
bool api_ns_exists(struct api_call *c, const char *ns);

int api_json(struct lg_http_request *req, int status, json_t *doc); /* steals doc */
/* Map a store error to a status and answer it. */
void api_store_error(struct lg_http_request *req, int r, const struct lg_error *err);
struct api_status {
        int status;
        const char *code;
};
/* The status and code api_store_error answers r with. */
struct api_status api_store_status(int r);
/* err's message (strerror(-r) when empty) without the trailing
 * ": <strerror>" lg_error_set adds. */
void api_error_text(int r, const struct lg_error *err, char *buf, size_t cap);

/* NDJSON answers (api-images.c): when the client sends `Accept:
 * application/x-ndjson`, a 200 streamed one JSON object per line. */
bool api_wants_ndjson(struct lg_http_request *req);
void api_ndjson_start(struct lg_http_request *req);
void api_ndjson_line(struct lg_http_request *req, json_t *doc); /* steals doc */
/* An image job's progress as a line {"phase","what","done","total"}. */
json_t *api_progress_json(const struct lg_image_progress *p);
/* Parse the buffered body as a JSON object (answers 400 when it is not). */
json_t *api_body_json(struct lg_http_request *req);
/* Reject fields of obj not in allowed (NULL-terminated): 400 listing them. */
bool api_only_fields(struct lg_http_request *req, const json_t *obj, const char *what,
                     const char *const *allowed);

/* api-apps.c */
/* PUT of an app (ns given) or pool group (ns NULL): its image pulled first
 * when missing (progress streamed as NDJSON when asked), then stored,
 * made active and answered; nothing stored when the pull fails
 * (ImagePullFailed). Takes spec and labels (may be NULL). */
void api_put_with_pull(struct api_call *c, const char *ns, const char *name, json_t *spec, json_t *labels);
void api_apps(struct api_call *c, const char *ns);
void api_app(struct api_call *c, const char *ns, const char *name);
void api_app_logs(struct api_call *c, const char *ns, const char *name);
void api_data_path(struct lg_api *api, struct lg_http_request *req, const char *ns, const char *app,
                   const char *target);

/* api-pools.c: /v1/poolgroups[/{name}]. */
void api_pools(struct api_call *c, const char *name);

/* api-sessions.c */
void api_sessions(struct api_call *c);
/* Executions and file transfers are streamed through the router. */
bool api_sessions_streams(struct lg_http_request *req);

/* api-kube.c: the Kubernetes-compatible API under /api, /apis, /openapi,
 * /version (discovery, then pods in api-pods.c). */
void api_kube(struct api_call *c);
/* True for paths api_kube serves. */
bool api_kube_path(const char *const *seg, int nseg);
/* Kubernetes responses (api-kube.c): JSON, and metav1.Status errors
 * (details is stolen, may be NULL). */
int kube_json(struct lg_http_request *req, int status, json_t *doc); /* steals doc */
json_t *kube_status_doc(int code, const char *reason, json_t *details, const char *msg);
void kube_status(struct lg_http_request *req, int code, const char *reason, json_t *details, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));
void kube_not_found(struct lg_http_request *req, const char *kind, const char *name);
/* A store error as a Status about the pod name. */
void kube_store_error(struct lg_http_request *req, int r, const struct lg_error *err, const char *name);
/* The namespace exists and the caller may use it (404 Status otherwise). */
bool kube_ns(struct api_call *c, const char *ns);
bool kube_wants_table(struct lg_http_request *req);
/* A meta.k8s.io/v1 Table of pods; include is the includeObject parameter. */
json_t *kube_pod_table(json_t *const *pods, size_t n, const char *rv, const char *include);

/* api-pods.c: /api/v1/namespaces/{ns}/pods[/{name}[/{sub}]]; ns NULL for
 * /api/v1/pods. */
void api_pods(struct api_call *c, const char *ns, const char *name, const char *sub);
/* Pod field selectors: metadata.name, status.phase, ... with = == !=. */
struct kube_fsel {
        struct kube_freq {
                char field[32];
                char value[256];
                bool neg;
        } req[8];
        size_t n;
};
int kube_field_selector_parse(const char *s, struct kube_fsel *fs, struct lg_error *err);
bool kube_field_selector_matches(const struct kube_fsel *fs, const json_t *pod);
/* labelSelector and fieldSelector of the request (400 Status when bad). */
bool kube_selectors(struct api_call *c, struct lg_selector **sel, struct kube_fsel *fs);
/* spec.nodeName of every pod: this host's name. */
const char *kube_node_name(void);

/* api-pods-stream.c: watch and logs. */
bool kube_param_true(struct lg_http_request *req, const char *name);
void kube_watch_pods(struct api_call *c, const char *ns);
void kube_pod_log(struct api_call *c, const char *ns, const char *name);
/* Register the store commit hook that wakes watches (from lg_api_new). */
void api_kube_init(struct lg_api *api);

/* Following a log file (api-pods-stream.c), for pods' and jobs' logs:
 * whose log it is, and whether its writer may still write (> 0: the
 * follow goes on; 0 or < 0: what is left is sent and the response ends). */
struct api_log_writer {
        char ns[LG_STORE_NAME_MAX + 1], name[LG_STORE_NAME_MAX + 1], part[LG_STORE_NAME_MAX + 1];
        unsigned index;
        int (*active)(struct lg_api *api, const struct api_log_writer *w);
};
/* The response has been started: new bytes of path from off (fd is open on
 * it, or -1 until the file appears; taken) are sent every 100 ms, at most
 * limit (-1: no limit), until who->active says the writer is done or the
 * client goes. */
void api_log_follow(struct lg_api *api, struct lg_http_request *req, const struct api_log_writer *who,
                    const char *path, int fd, off_t off, int64_t limit);
/* New bytes of fd since *off (at most cap), *off moved on; a file that
 * shrank (a capped log compacted) is read again from its start. */
ssize_t api_log_read(int fd, off_t *off, char *buf, size_t cap);

/* api-jobs.c: /v1/namespaces/{ns}/jobs|masters[...], /v1/jobs[/pools[/{name}]],
 * /v1/masters (docs/api.md, "Jobs"). */
void api_jobs(struct api_call *c);
bool api_jobs_path(const char *const *seg, int nseg);
/* legiond is stopping: attach streams end without stopping their jobs. */
void api_jobs_stop(struct lg_api *api);

/* api-v2.c: /v2, the read-only blob routes of the distribution API
 * (authenticates the call itself). */
void api_v2(struct api_call *c);

/* api-images.c: /v1/images. */
void api_images(struct api_call *c);
/* Image archive uploads are streamed to disk. */
bool api_images_streams(struct lg_http_request *req);
