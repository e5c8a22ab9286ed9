/* Helpers shared by the API handlers (api.c, api-apps.c). */
#pragma once

#include <jansson.h>

#include "legiond/daemon.h"

/* Who is calling: the namespace their token is for, or "*" for admin. */
struct api_call {
        struct lg_daemon *d;
        struct lg_http_request *req;
        const char *const *seg;
        int nseg;
        struct lg_token token;
};

bool api_is_admin(const struct api_call *c);
/* True when the caller may act in namespace ns. Otherwise the request has
 * been answered 404 (never 403: names in other namespaces must not leak). */
bool api_ns_allowed(struct api_call *c, const char *ns);
/* The namespace must exist (answers 404 otherwise). */
bool api_ns_exists(struct api_call *c, const char *ns);

int api_json(struct lg_http_request *req, int status, json_t *doc); /* steals doc */
/* Map a store error to a status and answer it. */
void api_store_error(struct lg_http_request *req, int r, const struct lg_error *err);
/* Parse the buffered body as a JSON object (answers 400 when it is not). */
json_t *api_body_json(struct lg_http_request *req);
/* Reject fields of obj not in allowed (NULL-terminated): 400 listing them. */
bool api_only_fields(struct lg_http_request *req, const json_t *obj, const char *what,
                     const char *const *allowed);

/* "500m", "0.5", 2 -> millicores; "256Mi", "1G", 1048576 -> bytes. */
int api_parse_cpu(const json_t *v, uint64_t *ret);
int api_parse_memory(const json_t *v, uint64_t *ret);

/* api-apps.c */
void api_apps(struct api_call *c, const char *ns);
void api_app(struct api_call *c, const char *ns, const char *name);
void api_app_logs(struct api_call *c, const char *ns, const char *name);
void api_data_path(struct lg_daemon *d, struct lg_http_request *req, const char *ns, const char *app,
                   const char *target);
int api_app_activate(struct lg_daemon *d, const char *ns, const char *name, struct lg_error *err);

/* api-sessions.c */
void api_sessions(struct api_call *c);
int api_sessions_restore(struct lg_daemon *d, struct lg_error *err);
/* Executions and file transfers are streamed through the router. */
bool api_sessions_streams(struct lg_http_request *req);

/* api-kube.c: the Kubernetes-compatible API under /api, /apis, /openapi,
 * /version (discovery, then pods in api-pods.c). */
void api_kube(struct api_call *c);
/* True for paths api_kube serves. */
bool api_kube_path(const char *const *seg, int nseg);

/* api-images.c: /v1/images. */
void api_images(struct api_call *c);
/* Image archive uploads are streamed to disk. */
bool api_images_streams(struct lg_http_request *req);
