/* /v1/images: import, pull, convert, list, inspect, remove and GC of OCI images
 * (docs/api.md, "Images"). Import, pull and GC are jobs of src/image's
 * lg_image_jobs (on libuv's thread pool); here they are started from
 * requests and their progress and results written as responses.
 *
 * Two ways to answer them: plain JSON with a status (201 and the image, or
 * an error with the status that fits) by default, or, when the client sends
 * `Accept: application/x-ndjson`, a 200 streamed as one JSON object per
 * line: progress lines {"phase","what","done","total"} at most ~10 a second
 * (posted from the worker thread to the loop with a uv_async_t), then one
 * final {"image":{...}} or {"error":{"code","message","status"}}. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/api-internal.h"

/* ---- JSON --------------------------------------------------------------------- */

static json_t *strv_json(char **v) {
        if (!v)
                return json_null();
        json_t *a = json_array();
        for (size_t i = 0; v[i]; i++)
                json_array_append_new(a, json_string(v[i]));
        return a;
}

static json_t *lazy_json(const struct lg_image_lazy_status *l) {
        return json_pack("{s:I, s:I, s:I, s:I}", "bytes", (json_int_t) l->bytes, "localBytes",
                         (json_int_t) l->local_bytes, "chunks", (json_int_t) l->chunks, "localChunks",
                         (json_int_t) l->local_chunks);
}

/* Per layer (manifest order) {"digest", "lazy": false or its figures},
 * and the image's "lazy": false when no layer is lazy, else figures of
 * the whole image, extracted layers counted as local (their size
 * uncompressed, from layers/<hex>.json) and lazy ones as the fetcher
 * left them. */
static void lazy_fields(lg_image_store *st, const struct lg_image *img, json_t *doc) {
        json_t *details = json_array();
        struct lg_image_lazy_status total = {0};
        bool any = false;
        for (size_t i = img->n_layers; i > 0 && img->layer_digests; i--) {
                const char *d = img->layer_digests[i - 1];
                struct lg_image_lazy_status l = {0};
                bool lazy = st && lg_image_layer_lazy_status(st, d, &l) == 1;
                any |= lazy;
                total.bytes += l.bytes;
                total.local_bytes += l.local_bytes;
                total.chunks += l.chunks;
                total.local_chunks += l.local_chunks;
                json_array_append_new(details,
                                      json_pack("{s:s, s:o}", "digest", d, "lazy", lazy ? lazy_json(&l) : json_false()));
        }
        json_object_set_new(doc, "layerDetails", details);
        json_object_set_new(doc, "lazy", any ? lazy_json(&total) : json_false());
}

static json_t *image_json(const struct lg_image *img) {
        char created[40] = "";
        if (img->created > 0) {
                time_t t = (time_t) img->created;
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
        json_t *layers = json_array();
        /* Manifest order (lowest first), as registries and tools show it;
         * the store keeps them uppermost first for overlayfs. */
        for (size_t i = img->n_layers; i > 0 && img->layer_digests; i--)
                json_array_append_new(layers, json_string(img->layer_digests[i - 1]));
        json_t *names = strv_json(img->names);
        if (json_is_null(names))
                names = json_array();
        json_t *cfg = json_pack("{s:o, s:o, s:o, s:s?, s:s?}", "entrypoint", strv_json(img->entrypoint), "cmd",
                                strv_json(img->cmd), "env", strv_json(img->env), "workingDir", img->working_dir,
                                "user", img->user);
        return json_pack("{s:s, s:s, s:o, s:b, s:I, s:s?, s:s, s:s, s:o, s:o}", "id", img->id, "digest",
                         img->digest, "names", names, "dangling", img->dangling, "size", (json_int_t) img->size,
                         "created", created[0] ? created : NULL, "os", img->os, "architecture", img->architecture,
                         "layers", layers, "config", cfg);
}

/* ---- errors --------------------------------------------------------------------- */

struct status_map {
        int status;
        const char *code;
};

/* The status for an image error; registry failures are the upstream's
 * (502/504), never 401/403, which would be about the caller's token. */
static struct status_map image_status(int r, bool registry) {
        switch (-r) {
        case ENOENT: return (struct status_map){404, "NotFound"};
        case EINVAL:
        case EBADMSG:
        case EILSEQ:
        case ENAMETOOLONG:
        case ELOOP:
        case ENOTDIR:
        case EPERM: return (struct status_map){400, "BadImage"};
        case EFBIG:
        case E2BIG: return (struct status_map){413, "TooLarge"};
        case ENOTSUP: return (struct status_map){422, "Unsupported"};
        case EBUSY:
        case EEXIST: return (struct status_map){409, "Conflict"};
        case EACCES: return (struct status_map){502, "RegistryAuthFailed"};
        case ECONNREFUSED:
        case EHOSTUNREACH:
        case ENETUNREACH:
        case ECONNRESET:
        case EPROTO: return (struct status_map){502, "RegistryUnavailable"};
        case ETIMEDOUT: return (struct status_map){504, "RegistryTimeout"};
        case EAGAIN: return (struct status_map){503, "RegistryBusy"};
        case ENOSPC: return (struct status_map){507, "InsufficientStorage"};
        case EIO:
                if (registry)
                        return (struct status_map){502, "RegistryError"};
                return (struct status_map){500, "Internal"};
        default: return (struct status_map){500, "Internal"};
        }
}

static void respond_image_error(struct lg_http_request *req, int r, const struct lg_error *err, bool registry) {
        char msg[600];
        api_error_text(r, err, msg, sizeof(msg));
        struct status_map s = image_status(r, registry);
        lg_http_respond_error(req, s.status, s.code, "%s", msg);
}

/* ---- jobs (lg_image_jobs) ----------------------------------------------------------- */

/* A request waiting for its job: plain JSON at the end, or NDJSON lines. */
struct job_req {
        struct lg_http_request *req;
        lg_image_job *job;
        bool ndjson;
        lg_image_store *images;
};

void api_ndjson_line(struct lg_http_request *req, json_t *doc) {
        char *s = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        if (!s)
                return;
        size_t n = strlen(s);
        char *line = realloc(s, n + 2);
        if (!line) {
                free(s);
                return;
        }
        line[n] = '\n';
        line[n + 1] = '\0';
        /* Copied when it cannot go at once (cb NULL). */
        lg_http_response_write(req, line, n + 1, NULL, NULL);
        free(line);
}

bool api_wants_ndjson(struct lg_http_request *req) {
        const char *acc = lg_http_request_header(req, "Accept");
        return acc && strstr(acc, "application/x-ndjson");
}

void api_ndjson_start(struct lg_http_request *req) {
        static const struct lg_http_header h[] = {{"Content-Type", "application/x-ndjson"},
                                                  {"Cache-Control", "no-cache"}};
        lg_http_response_start(req, 200, h, ARRAY_SIZE(h), -1);
}

json_t *api_progress_json(const struct lg_image_progress *p) {
        return json_pack("{s:s, s:s, s:I, s:I}", "phase", p->phase, "what", p->what, "done", (json_int_t) p->done,
                         "total", (json_int_t) p->total);
}

static void on_progress(const struct lg_image_progress *p, void *ud) {
        struct job_req *jr = ud;
        api_ndjson_line(jr->req, api_progress_json(p));
}

static json_t *gc_json(const struct lg_image_gc_result *g) {
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "imagesRemoved", (json_int_t) g->images_removed,
                         "blobsRemoved", (json_int_t) g->blobs_removed, "layersRemoved", (json_int_t) g->layers_removed,
                         "chunksRemoved", (json_int_t) g->chunks_removed, "bytesFreed", (json_int_t) g->bytes_freed,
                         "packagesRemoved", (json_int_t) g->packages_removed);
}

/* A pull's image with how it went: "lazy" (false, or the image's lazy
 * figures), "lazyReason" when not lazy, and per layer how it came. */
static json_t *pulled_json(lg_image_store *st, const struct lg_image *img, const struct lg_image_pull_report *rep) {
        json_t *doc = image_json(img);
        lazy_fields(st, img, doc);
        if (!rep)
                return doc;
        if (!rep->lazy) {
                json_object_set_new(doc, "lazy", json_false());
                if (rep->reason[0])
                        json_object_set_new(doc, "lazyReason", json_string(rep->reason));
        }
        json_t *layers = json_array();
        for (size_t i = 0; i < rep->n_layers; i++)
                json_array_append_new(layers, json_pack("{s:s, s:s}", "digest", rep->layers[i].digest, "how",
                                                        rep->layers[i].how));
        json_object_set_new(doc, "pulledLayers", layers);
        return doc;
}

static json_t *convert_json(const struct lg_image_convert_result *c) {
        json_t *layers = json_array();
        for (size_t i = 0; i < c->n_layers; i++) {
                const struct lg_image_convert_layer *l = &c->layers[i];
                json_array_append_new(layers, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:b}", "digest", l->digest,
                                                        "blob", l->blob_digest, "blobSize", (json_int_t) l->blob_size,
                                                        "metaSize", (json_int_t) l->meta_size, "chunks",
                                                        (json_int_t) l->chunks, "uniqueBytes",
                                                        (json_int_t) l->unique_bytes, "chunkSize",
                                                        (json_int_t) l->chunk_size, "reused", l->reused));
        }
        json_t *doc = json_pack("{s:s, s:s, s:o, s:f, s:b}", "id", c->id, "digest", c->digest, "layers", layers,
                                "seconds", (double) c->elapsed_ns / 1e9, "pushed", c->pushed);
        if (doc && c->pushed) {
                json_object_set_new(doc, "pushedTo", json_string(c->pushed_to));
                json_object_set_new(doc, "artifact", json_string(c->artifact));
        }
        return doc;
}

/* The final document of a job that went well. */
static json_t *result_json(struct job_req *jr, const struct lg_image_job_result *res) {
        if (res->gc)
                return gc_json(res->gc);
        if (res->convert)
                return convert_json(res->convert);
        return pulled_json(jr->images, res->img, res->pull);
}

static void on_done(const struct lg_image_job_result *res, void *ud) {
        struct job_req *jr = ud;
        struct lg_http_request *req = jr->req;
        char msg[600];
        if (res->status < 0)
                api_error_text(res->status, res->err, msg, sizeof(msg));
        struct status_map s = image_status(res->status, res->registry);
        if (jr->ndjson) {
                if (res->status >= 0 && res->convert) {
                        api_ndjson_line(req, json_pack("{s:o}", "convert", result_json(jr, res)));
                } else if (res->status >= 0) {
                        json_t *line = json_pack("{s:o}", "image", result_json(jr, res));
                        /* How the pull went, also beside the image. */
                        json_t *img = json_object_get(line, "image");
                        if (res->pull) {
                                json_object_set_new(line, "lazy", json_boolean(res->pull->lazy));
                                if (json_object_get(img, "lazyReason"))
                                        json_object_set(line, "lazyReason", json_object_get(img, "lazyReason"));
                        }
                        api_ndjson_line(req, line);
                } else
                        api_ndjson_line(req, json_pack("{s:{s:s, s:s, s:i}}", "error", "code", s.code, "message", msg,
                                                  "status", s.status));
                lg_http_response_end(req);
        } else if (res->status < 0) {
                lg_http_respond_error(req, s.status, s.code, "%s", msg);
        } else {
                api_json(req, res->gc || res->convert ? 200 : 201, result_json(jr, res));
        }
        free(jr);
}

static void job_abort(struct lg_http_request *req, int reason, void *ud) {
        struct job_req *jr = ud;
        (void) reason;
        lg_image_job_cancel(jr->job);
        free(jr);
        lg_http_response_abort(req);
}

static struct job_req *job_req_new(struct api_call *c, bool progress) {
        struct job_req *jr = calloc(1, sizeof(*jr));
        if (!jr) {
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return NULL;
        }
        jr->req = c->req;
        jr->ndjson = progress && api_wants_ndjson(c->req);
        jr->images = c->api->images;
        return jr;
}

/* The job has started: the NDJSON response starts now. */
static void job_started(struct job_req *jr) {
        lg_http_request_on_abort(jr->req, job_abort, jr);
        if (jr->ndjson)
                api_ndjson_start(jr->req);
}

/* A job that could not start. */
static void job_failed(struct job_req *jr, int r, const struct lg_error *err) {
        if (r == -ENOMEM)
                lg_http_respond_error(jr->req, 503, "Overloaded", "%s", "out of memory");
        else
                lg_http_respond_error(jr->req, 500, "Internal", "%s", err->msg);
        free(jr);
}

/* ---- import (streamed upload) ------------------------------------------------------- */

static void import_data(struct lg_http_request *req, const char *data, size_t len, void *ud) {
        struct job_req *jr = ud;
        (void) req;
        lg_image_import_write(jr->job, data, len);
}

static void import_end(struct lg_http_request *req, void *ud) {
        struct job_req *jr = ud;
        struct lg_error err = {0};
        int r = lg_image_import_finish(jr->job, jr->ndjson ? on_progress : NULL, on_done, jr, &err);
        if (r == -ENOSPC)
                lg_http_respond_error(req, 507, "InsufficientStorage", "%s", err.msg);
        else if (r == -ENODATA)
                lg_http_respond_error(req, 400, "BadImage", "%s", err.msg);
        if (r < 0) {
                if (r != -ENOSPC && r != -ENODATA)
                        lg_http_respond_error(req, 500, "Internal", "%s", err.msg);
                free(jr);
                return;
        }
        job_started(jr);
}

static void api_images_import(struct api_call *c) {
        const char *name = lg_http_request_param(c->req, "name");
        char norm[512];
        struct lg_error err = {0};
        if (name && *name) {
                int r = lg_image_normalize(name, norm, sizeof(norm), &err);
                if (r < 0)
                        return respond_image_error(c->req, r, &err, false);
                if (strchr(norm, '@')) {
                        lg_http_respond_error(c->req, 400, "BadRequest",
                                              "`name` must be REPOSITORY[:TAG], not a digest: `%s`", name);
                        return;
                }
        }
        int64_t cl = lg_http_request_content_length(c->req);
        if (cl > 0 && (uint64_t) cl > LG_IMAGE_IMPORT_MAX) {
                lg_http_respond_error(c->req, 413, "TooLarge", "the archive is over the limit of %llu GiB",
                                      (unsigned long long) (LG_IMAGE_IMPORT_MAX >> 30));
                return;
        }
        struct job_req *jr = job_req_new(c, true);
        if (!jr)
                return;
        int r = lg_image_import_begin(c->api->image_jobs, name && *name ? norm : NULL, &jr->job, &err);
        if (r < 0)
                return job_failed(jr, r, &err);
        lg_http_request_set_body_limit(c->req, LG_IMAGE_IMPORT_MAX);
        lg_http_request_on_abort(c->req, job_abort, jr);
        if (lg_http_request_read(c->req, import_data, import_end, jr) < 0) {
                /* The server answered 413 itself; abort follows. */
        }
}

/* ---- pull ------------------------------------------------------------------------- */

/* A pull or convert request: {"image", "username", "password",
 * "insecure"} and the verb's own fields (checked by the caller). NULL
 * when it was answered (a 400). */
struct registry_req {
        json_t *body;
        const char *image;
        struct lg_registry_auth auth;
};

static bool registry_req_parse(struct api_call *c, const char *what, const char *const *fields,
                               struct registry_req *rr) {
        memset(rr, 0, sizeof(*rr));
        json_t *body = api_body_json(c->req);
        if (!body)
                return false;
        if (!api_only_fields(c->req, body, what, fields)) {
                json_decref(body);
                return false;
        }
        const char *image = json_string_value(json_object_get(body, "image"));
        json_t *user = json_object_get(body, "username"), *pass = json_object_get(body, "password");
        json_t *insecure = json_object_get(body, "insecure");
        const char *bad = NULL;
        if (!image || !*image)
                bad = "`image` (a string, e.g. \"127.0.0.1:5000/busybox:1\") is required";
        else if ((user && !json_is_string(user) && !json_is_null(user)) ||
                 (pass && !json_is_string(pass) && !json_is_null(pass)))
                bad = "`username` and `password` must be strings";
        else if (insecure && !json_is_boolean(insecure))
                bad = "`insecure` must be true or false";
        else if (json_string_value(pass) && !json_string_value(user))
                bad = "`password` needs `username`";
        if (bad) {
                lg_http_respond_error(c->req, 400, "BadRequest", "%s", bad);
                json_decref(body);
                return false;
        }
        char norm[512];
        struct lg_error err = {0};
        int r = lg_image_normalize(image, norm, sizeof(norm), &err);
        if (r < 0) {
                json_decref(body);
                respond_image_error(c->req, r, &err, false);
                return false;
        }
        rr->body = body;
        rr->image = image;
        rr->auth = (struct lg_registry_auth){.username = json_string_value(user), .password = json_string_value(pass),
                                             .insecure = json_is_true(insecure)};
        return true;
}

/* The password lives on in the request body buffer until the request
 * ends; the parsed copy is scrubbed now (the job keeps its own). */
static void registry_req_done(struct registry_req *rr) {
        if (rr->auth.password)
                explicit_bzero((char *) rr->auth.password, strlen(rr->auth.password));
        json_decref(rr->body);
}

static void registry_job_started(struct job_req *jr, int r, const struct lg_error *err) {
        if (!jr)
                return;
        if (r < 0)
                return job_failed(jr, r, err);
        job_started(jr);
}

static void api_images_pull(struct api_call *c) {
        static const char *const fields[] = {"image", "username", "password", "insecure", "lazy", NULL};
        struct registry_req rr;
        if (!registry_req_parse(c, "a pull request", fields, &rr))
                return;
        json_t *lazy = json_object_get(rr.body, "lazy");
        enum lg_image_lazy_mode mode = LG_IMAGE_LAZY_DEFAULT;
        if (json_is_string(lazy) && !strcmp(json_string_value(lazy), "auto"))
                mode = LG_IMAGE_LAZY_AUTO;
        else if (json_is_string(lazy) && !strcmp(json_string_value(lazy), "never"))
                mode = LG_IMAGE_LAZY_NEVER;
        else if (lazy && !json_is_null(lazy)) {
                lg_http_respond_error(c->req, 400, "BadRequest", "%s", "`lazy` must be \"auto\" or \"never\"");
                return registry_req_done(&rr);
        }
        struct lg_error err = {0};
        int r = 0;
        struct job_req *jr = job_req_new(c, true);
        if (jr)
                r = lg_image_pull_start(c->api->image_jobs, rr.image, &rr.auth, mode, jr->ndjson ? on_progress : NULL,
                                        on_done, jr, &jr->job, &err);
        registry_req_done(&rr);
        registry_job_started(jr, r, &err);
}

static void api_images_convert(struct api_call *c) {
        static const char *const fields[] = {"image", "username", "password", "insecure", "push", "chunkSize", NULL};
        struct registry_req rr;
        if (!registry_req_parse(c, "a convert request", fields, &rr))
                return;
        json_t *push = json_object_get(rr.body, "push"), *cs = json_object_get(rr.body, "chunkSize");
        const char *bad = NULL;
        if (push && !json_is_boolean(push))
                bad = "`push` must be true or false";
        else if (cs && !json_is_null(cs) &&
                 (!json_is_integer(cs) || json_integer_value(cs) < 4096 || json_integer_value(cs) > (4 << 20)))
                bad = "`chunkSize` must be a number of bytes, a power of two from 4096 to 4194304";
        if (bad) {
                lg_http_respond_error(c->req, 400, "BadRequest", "%s", bad);
                return registry_req_done(&rr);
        }
        struct lg_error err = {0};
        int r = 0;
        struct job_req *jr = job_req_new(c, true);
        if (jr)
                r = lg_image_convert_start(c->api->image_jobs, rr.image, (uint32_t) json_integer_value(cs),
                                           json_is_true(push) ? &rr.auth : NULL, jr->ndjson ? on_progress : NULL,
                                           on_done, jr, &jr->job, &err);
        registry_req_done(&rr);
        registry_job_started(jr, r, &err);
}

/* ---- gc, list, inspect, remove ------------------------------------------------------- */

static void api_images_gc(struct api_call *c) {
        struct job_req *jr = job_req_new(c, false);
        if (!jr)
                return;
        struct lg_error err = {0};
        int r = lg_image_gc_start(c->api->image_jobs, on_done, jr, &jr->job, &err);
        if (r < 0)
                return job_failed(jr, r, &err);
        job_started(jr);
}

static void api_images_list(struct api_call *c) {
        struct lg_image **list = NULL;
        size_t n = 0;
        struct lg_error err = {0};
        int r = lg_image_list(c->api->images, &list, &n, &err);
        if (r < 0)
                return respond_image_error(c->req, r, &err, false);
        json_t *items = json_array();
        for (size_t i = 0; i < n; i++) {
                json_t *doc = image_json(list[i]);
                lazy_fields(c->api->images, list[i], doc);
                json_array_append_new(items, doc);
        }
        lg_image_list_free(list, n);
        api_json(c->req, 200, json_pack("{s:o}", "items", items));
}

static void api_image_one(struct api_call *c, const char *ref) {
        const char *m = lg_http_request_method(c->req);
        struct lg_error err = {0};
        struct lg_image *img = NULL;
        int r = lg_image_get(c->api->images, ref, &img, &err);
        if (r < 0)
                return respond_image_error(c->req, r, &err, false);
        if (!strcmp(m, "GET")) {
                json_t *doc = image_json(img);
                lazy_fields(c->api->images, img, doc);
                api_json(c->req, 200, doc);
                lg_image_free(img);
                return;
        }
        if (strcmp(m, "DELETE")) {
                lg_image_free(img);
                lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s", "use GET or DELETE");
                return;
        }
        if (!api_is_admin(c)) {
                lg_image_free(img);
                lg_http_respond_error(c->req, 403, "Forbidden", "%s", "removing images needs an admin token");
                return;
        }
        lg_image_free(img);
        const char *force = lg_http_request_param(c->req, "force");
        bool forced = force && (!strcmp(force, "true") || !strcmp(force, "1") || !*force);
        r = lg_image_jobs_remove(c->api->image_jobs, ref, forced, &err);
        if (r < 0)
                return respond_image_error(c->req, r, &err, false);
        lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
}

/* ---- routing ---------------------------------------------------------------------------- */

static bool is_verb(const struct lg_http_request *req, const char *const *seg, int n, const char *verb) {
        return n == 3 && !strcmp(seg[2], verb) && !strcmp(lg_http_request_method(req), "POST");
}

bool api_images_streams(struct lg_http_request *req) {
        const char *const *seg;
        int n = lg_http_request_segments(req, &seg);
        return n >= 2 && !strcmp(seg[0], "v1") && !strcmp(seg[1], "images") && is_verb(req, seg, n, "import");
}

void api_images(struct api_call *c) {
        const char *m = lg_http_request_method(c->req);
        const char *const *seg = c->seg;
        int n = c->nseg;
        if (!c->api->images) {
                lg_http_respond_error(c->req, 503, "Unavailable", "%s", "the image store is not open");
                return;
        }
        bool write = is_verb(c->req, seg, n, "import") || is_verb(c->req, seg, n, "pull") ||
                     is_verb(c->req, seg, n, "convert") || is_verb(c->req, seg, n, "gc");
        if (write && !api_is_admin(c)) {
                lg_http_respond_error(c->req, 403, "Forbidden", "%s",
                                      "importing, pulling, converting and GC of images need an admin token");
                return;
        }
        if (is_verb(c->req, seg, n, "convert"))
                return api_images_convert(c);
        if (is_verb(c->req, seg, n, "import"))
                return api_images_import(c);
        if (is_verb(c->req, seg, n, "pull"))
                return api_images_pull(c);
        if (is_verb(c->req, seg, n, "gc"))
                return api_images_gc(c);
        if (n == 2) {
                if (strcmp(m, "GET")) {
                        lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s",
                                              "use GET, or POST /v1/images/import, /v1/images/pull, /v1/images/convert, /v1/images/gc");
                        return;
                }
                return api_images_list(c);
        }
        /* The reference: one URL-encoded segment, or the rest of the path as
         * it is ("/v1/images/127.0.0.1:5000/busybox:1"). */
        char ref[1024];
        size_t off = 0;
        for (int i = 2; i < n; i++) {
                int k = snprintf(ref + off, sizeof(ref) - off, "%s%s", i > 2 ? "/" : "", seg[i]);
                if (k < 0 || (size_t) k >= sizeof(ref) - off) {
                        lg_http_respond_error(c->req, 400, "BadRequest", "%s", "image reference too long");
                        return;
                }
                off += (size_t) k;
        }
        if (!ref[0]) {
                lg_http_respond_error(c->req, 404, "NotFound", "%s", "no image reference in the path");
                return;
        }
        api_image_one(c, ref);
}
