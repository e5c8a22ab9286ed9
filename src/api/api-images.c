/* /v1/images: import, pull, list, inspect, remove and GC of OCI images
 * (docs/api.md, "Images").
 *
 * Import and pull take seconds to minutes, so they run on libuv's thread
 * pool (lg_image_import / lg_image_pull block) while the loop keeps serving.
 * An import's archive is streamed to an unlinked temporary file under
 * <home>/tmp first (the import reads it back through /proc/self/fd, so no
 * file is left behind whatever happens).
 *
 * Two ways to answer them: plain JSON with a status (201 and the image, or
 * an error with the status that fits) by default, or, when the client sends
 * `Accept: application/x-ndjson`, a 200 streamed as one JSON object per
 * line: progress lines {"phase","what","done","total"} at most ~10 a second
 * (posted from the worker thread to the loop with a uv_async_t), then one
 * final {"image":{...}} or {"error":{"code","message","status"}}. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api-internal.h"

#define IMPORT_MAX (16ull << 30) /* archive upload limit */
#define PROGRESS_NS 100000000ull /* 10 lines a second at most */

/* ---- JSON --------------------------------------------------------------------- */

static json_t *strv_json(char **v) {
        if (!v)
                return json_null();
        json_t *a = json_array();
        for (size_t i = 0; v[i]; i++)
                json_array_append_new(a, json_string(v[i]));
        return a;
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
        return json_pack("{s:s, s:s, s:o, s:I, s:s?, s:s, s:s, s:o, s:o}", "id", img->id, "digest", img->digest,
                         "names", names, "size", (json_int_t) img->size, "created", created[0] ? created : NULL,
                         "os", img->os, "architecture", img->architecture, "layers", layers, "config", cfg);
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

/* err's message without the trailing ": <strerror>" lg_error_set adds, and
 * with the temporary file's /proc path said as "the archive". */
static void error_message(int r, const struct lg_error *err, const char *tmp_path, char *buf, size_t cap) {
        snprintf(buf, cap, "%s", err && err->msg[0] ? err->msg : strerror(-r));
        char suffix[128];
        snprintf(suffix, sizeof(suffix), ": %s", strerror(-r));
        size_t bl = strlen(buf), sl = strlen(suffix);
        if (bl > sl && !strcmp(buf + bl - sl, suffix))
                buf[bl - sl] = '\0';
        if (tmp_path && tmp_path[0]) {
                char *at = strstr(buf, tmp_path);
                if (at) {
                        char rest[512];
                        snprintf(rest, sizeof(rest), "%s", at + strlen(tmp_path));
                        snprintf(at, cap - (size_t) (at - buf), "the archive%s", rest);
                }
        }
}

static void respond_image_error(struct lg_http_request *req, int r, const struct lg_error *err, bool registry) {
        char msg[600];
        error_message(r, err, NULL, msg, sizeof(msg));
        struct status_map s = image_status(r, registry);
        lg_http_respond_error(req, s.status, s.code, "%s", msg);
}

/* ---- jobs on the thread pool ------------------------------------------------------ */

enum job_kind { JOB_IMPORT, JOB_PULL, JOB_GC };

struct job {
        enum job_kind kind;
        struct lg_api *api;
        struct lg_http_request *req;
        bool ndjson;
        bool aborted;          /* the client went away */
        bool queued;           /* on the thread pool: free in after_work */
        bool async_open;

        uv_work_t work;
        uv_async_t async;

        /* import */
        int fd;
        char fd_path[64];
        char *name;
        uint64_t received;
        int write_err;
        /* pull */
        char *ref;
        char *username, *password;
        bool insecure;
        /* gc */
        char **keep;
        size_t n_keep;
        struct lg_image_gc_result gc;

        /* results */
        int r;
        struct lg_error err;
        struct lg_image *img;

        /* progress: written by the worker, read by the loop */
        pthread_mutex_t mu;
        char phase[16], what[128];
        uint64_t done, total;
        bool fresh;
        /* what the loop last sent */
        char sent_phase[16], sent_what[128];
        uint64_t sent_ns;
};

static void job_closed(uv_handle_t *h) {
        struct job *j = h->data;
        pthread_mutex_destroy(&j->mu);
        free(j);
}

static void job_free(struct job *j) {
        if (j->fd >= 0)
                close(j->fd);
        free(j->name);
        free(j->ref);
        free(j->username);
        if (j->password) {
                explicit_bzero(j->password, strlen(j->password));
                free(j->password);
        }
        for (size_t i = 0; i < j->n_keep; i++)
                free(j->keep[i]);
        free(j->keep);
        lg_image_free(j->img);
        if (j->async_open)
                uv_close((uv_handle_t *) &j->async, job_closed);
        else
                job_closed((uv_handle_t *) &j->async);
}

static struct job *job_new(struct api_call *c, enum job_kind kind) {
        struct job *j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->kind = kind;
        j->api = c->api;
        j->req = c->req;
        j->fd = -1;
        j->async.data = j;
        pthread_mutex_init(&j->mu, NULL);
        const char *acc = lg_http_request_header(c->req, "Accept");
        j->ndjson = acc && strstr(acc, "application/x-ndjson");
        return j;
}

static void job_progress(void *ud, const char *phase, const char *what, uint64_t done, uint64_t total) {
        struct job *j = ud;
        if (!j->ndjson)
                return;
        pthread_mutex_lock(&j->mu);
        snprintf(j->phase, sizeof(j->phase), "%s", phase ? phase : "");
        /* The upload's /proc path means nothing to the client. */
        if (what && j->fd_path[0] && !strcmp(what, j->fd_path))
                what = "archive";
        snprintf(j->what, sizeof(j->what), "%s", what ? what : "");
        j->done = done;
        j->total = total;
        j->fresh = true;
        pthread_mutex_unlock(&j->mu);
        uv_async_send(&j->async);
}

static void write_line(struct job *j, json_t *doc) {
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
        lg_http_response_write(j->req, line, n + 1, NULL, NULL);
        free(line);
}

/* On the loop: send the latest progress unless it is too soon after the
 * previous line (a new phase or blob always goes out, and so does the last
 * one when forced). */
static void flush_progress(struct job *j, bool force) {
        if (j->aborted)
                return;
        pthread_mutex_lock(&j->mu);
        char phase[16], what[128];
        uint64_t done = j->done, total = j->total;
        bool fresh = j->fresh;
        j->fresh = false;
        memcpy(phase, j->phase, sizeof(phase));
        memcpy(what, j->what, sizeof(what));
        pthread_mutex_unlock(&j->mu);
        if (!fresh)
                return;
        uint64_t now = lg_now_ns();
        bool changed = strcmp(phase, j->sent_phase) || strcmp(what, j->sent_what);
        if (!force && !changed && now - j->sent_ns < PROGRESS_NS && !(total && done >= total)) {
                /* Too soon: keep it for the next wake-up (the worker's next
                 * report, or the final line). */
                pthread_mutex_lock(&j->mu);
                if (!j->fresh)
                        j->fresh = true;
                pthread_mutex_unlock(&j->mu);
                return;
        }
        j->sent_ns = now;
        memcpy(j->sent_phase, phase, sizeof(phase));
        memcpy(j->sent_what, what, sizeof(what));
        write_line(j, json_pack("{s:s, s:s, s:I, s:I}", "phase", phase, "what", what, "done", (json_int_t) done,
                                "total", (json_int_t) total));
}

static void on_async(uv_async_t *h) { flush_progress(h->data, false); }

static void job_work(uv_work_t *w) {
        struct job *j = w->data;
        lg_image_store *st = j->api->images;
        switch (j->kind) {
        case JOB_IMPORT:
                j->r = lg_image_import(st, j->fd_path, j->name, job_progress, j, &j->img, &j->err);
                break;
        case JOB_PULL: {
                struct lg_registry_auth auth = {.username = j->username, .password = j->password,
                                                .insecure = j->insecure};
                j->r = lg_image_pull(st, j->ref, &auth, job_progress, j, &j->img, &j->err);
                break;
        }
        case JOB_GC:
                j->r = lg_image_gc(st, (const char *const *) j->keep, j->n_keep, &j->gc, &j->err);
                break;
        }
}

static json_t *gc_json(const struct lg_image_gc_result *g) {
        return json_pack("{s:I, s:I, s:I}", "blobsRemoved", (json_int_t) g->blobs_removed, "layersRemoved",
                         (json_int_t) g->layers_removed, "bytesFreed", (json_int_t) g->bytes_freed);
}

static void job_done(uv_work_t *w, int status) {
        struct job *j = w->data;
        struct lg_http_request *req = j->req;
        if (status < 0 && j->r >= 0)
                j->r = lg_error_setm(&j->err, -status, "the job was cancelled");
        if (j->aborted) {
                lg_http_response_abort(req);
                job_free(j);
                return;
        }
        bool registry = j->kind == JOB_PULL;
        if (j->ndjson) {
                flush_progress(j, true); /* the last progress, if it is still pending */
                if (j->r >= 0) {
                        write_line(j, json_pack("{s:o}", "image", image_json(j->img)));
                } else {
                        char msg[600];
                        error_message(j->r, &j->err, j->fd_path, msg, sizeof(msg));
                        struct status_map s = image_status(j->r, registry);
                        write_line(j, json_pack("{s:{s:s, s:s, s:i}}", "error", "code", s.code, "message", msg,
                                                "status", s.status));
                }
                lg_http_response_end(req);
        } else if (j->r < 0) {
                char msg[600];
                error_message(j->r, &j->err, j->fd_path, msg, sizeof(msg));
                struct status_map s = image_status(j->r, registry);
                lg_http_respond_error(req, s.status, s.code, "%s", msg);
        } else if (j->kind == JOB_GC) {
                api_json(req, 200, gc_json(&j->gc));
        } else {
                api_json(req, 201, image_json(j->img));
        }
        job_free(j);
}

static void job_abort(struct lg_http_request *req, int reason, void *ud) {
        struct job *j = ud;
        (void) reason;
        j->aborted = true;
        if (!j->queued) { /* still reading the upload */
                lg_http_response_abort(req);
                job_free(j);
        }
}

/* Queue the job; the NDJSON response starts now. */
static void job_start(struct job *j) {
        if (j->ndjson) {
                if (uv_async_init(j->api->loop, &j->async, on_async) == 0)
                        j->async_open = true;
                else
                        j->ndjson = false;
        }
        if (j->ndjson) {
                static const struct lg_http_header h[] = {{"Content-Type", "application/x-ndjson"},
                                                          {"Cache-Control", "no-cache"}};
                lg_http_response_start(j->req, 200, h, ARRAY_SIZE(h), -1);
        }
        j->queued = true;
        j->work.data = j;
        int r = uv_queue_work(j->api->loop, &j->work, job_work, job_done);
        if (r < 0) {
                j->r = lg_error_setm(&j->err, ENOMEM, "cannot queue the work: %s", uv_strerror(r));
                job_done(&j->work, 0);
        }
}

/* ---- import (streamed upload) ------------------------------------------------------- */

static void import_data(struct lg_http_request *req, const char *data, size_t len, void *ud) {
        struct job *j = ud;
        (void) req;
        if (j->write_err)
                return;
        int r = lg_write_all(j->fd, data, len);
        if (r < 0)
                j->write_err = r;
        j->received += len;
}

static void import_end(struct lg_http_request *req, void *ud) {
        struct job *j = ud;
        if (j->write_err) {
                int r = j->write_err;
                if (r == -ENOSPC)
                        lg_http_respond_error(req, 507, "InsufficientStorage", "%s",
                                              "no space left for the archive on legiond's disk");
                else
                        lg_http_respond_error(req, 500, "Internal", "cannot store the archive: %s", strerror(-r));
                job_free(j);
                return;
        }
        if (j->received == 0) {
                lg_http_respond_error(req, 400, "BadImage", "%s",
                                      "the request body must be an image archive (docker save or OCI layout tar)");
                job_free(j);
                return;
        }
        job_start(j);
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
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", c->api->tmp_dir);
        int r = lg_mkdir_p(dir, 0700);
        if (r < 0) {
                lg_http_respond_error(c->req, 500, "Internal", "cannot create `%s`: %s", dir, strerror(-r));
                return;
        }
        struct job *j = job_new(c, JOB_IMPORT);
        if (!j || (name && *name && !(j->name = strdup(norm)))) {
                if (j)
                        job_free(j);
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        char tmpl[4200];
        snprintf(tmpl, sizeof(tmpl), "%s/import-XXXXXX", dir);
        j->fd = mkostemp(tmpl, O_CLOEXEC);
        if (j->fd < 0) {
                lg_http_respond_error(c->req, 500, "Internal", "cannot create a temporary file in `%s`: %s", dir,
                                      strerror(errno));
                job_free(j);
                return;
        }
        /* Unlinked at once: nothing is left behind, even after a crash. */
        unlink(tmpl);
        snprintf(j->fd_path, sizeof(j->fd_path), "/proc/self/fd/%d", j->fd);
        int64_t cl = lg_http_request_content_length(c->req);
        if (cl > 0 && (uint64_t) cl > IMPORT_MAX) {
                lg_http_respond_error(c->req, 413, "TooLarge", "the archive is over the limit of %llu GiB",
                                      (unsigned long long) (IMPORT_MAX >> 30));
                job_free(j);
                return;
        }
        lg_http_request_set_body_limit(c->req, IMPORT_MAX);
        lg_http_request_on_abort(c->req, job_abort, j);
        if (lg_http_request_read(c->req, import_data, import_end, j) < 0) {
                /* The server answered 413 itself; abort follows. */
        }
}

/* ---- pull ------------------------------------------------------------------------- */

static void api_images_pull(struct api_call *c) {
        json_t *body = api_body_json(c->req);
        if (!body)
                return;
        static const char *const fields[] = {"image", "username", "password", "insecure", NULL};
        if (!api_only_fields(c->req, body, "a pull request", fields)) {
                json_decref(body);
                return;
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
                return;
        }
        char norm[512];
        struct lg_error err = {0};
        int r = lg_image_normalize(image, norm, sizeof(norm), &err);
        if (r < 0) {
                json_decref(body);
                return respond_image_error(c->req, r, &err, false);
        }
        struct job *j = job_new(c, JOB_PULL);
        bool ok = j && (j->ref = strdup(image));
        if (ok && json_string_value(user))
                ok = (j->username = strdup(json_string_value(user)));
        if (ok && json_string_value(pass))
                ok = (j->password = strdup(json_string_value(pass)));
        if (j)
                j->insecure = json_is_true(insecure);
        /* The password lives on in the request body buffer until the request
         * ends; the parsed copy is scrubbed now. */
        if (json_string_value(pass))
                explicit_bzero((char *) json_string_value(pass), strlen(json_string_value(pass)));
        json_decref(body);
        if (!ok) {
                if (j)
                        job_free(j);
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        lg_http_request_on_abort(c->req, job_abort, j);
        job_start(j);
}

/* ---- gc, list, inspect, remove ------------------------------------------------------- */

static void free_strv_n(char **v, size_t n) {
        for (size_t i = 0; v && i < n; i++)
                free(v[i]);
        free(v);
}

static void api_images_gc(struct api_call *c) {
        struct job *j = job_new(c, JOB_GC);
        if (!j) {
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        j->ndjson = false;
        /* Layers of running (and warm) sandboxes stay, whatever names
         * point at them. */
        if (c->api->pods && lg_pods_layers_in_use(c->api->pods, true, &j->keep, &j->n_keep) < 0) {
                j->keep = NULL;
                j->n_keep = 0;
        }
        lg_http_request_on_abort(c->req, job_abort, j);
        job_start(j);
}

static void api_images_list(struct api_call *c) {
        struct lg_image **list = NULL;
        size_t n = 0;
        struct lg_error err = {0};
        int r = lg_image_list(c->api->images, &list, &n, &err);
        if (r < 0)
                return respond_image_error(c->req, r, &err, false);
        json_t *items = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(items, image_json(list[i]));
        lg_image_list_free(list, n);
        api_json(c->req, 200, json_pack("{s:o}", "items", items));
}

/* True when every layer of img is in use by a running sandbox. */
static bool image_in_use(struct lg_api *api, const struct lg_image *img) {
        char **used = NULL;
        size_t n = 0;
        if (!api->pods || img->n_layers == 0 || lg_pods_layers_in_use(api->pods, false, &used, &n) < 0)
                return false;
        bool all = true;
        for (size_t i = 0; all && i < img->n_layers; i++) {
                bool found = false;
                for (size_t k = 0; !found && k < n; k++)
                        found = used[k] && !strcmp(used[k], img->layer_dirs[i]);
                all = found;
        }
        free_strv_n(used, n);
        return all;
}

static void api_image_one(struct api_call *c, const char *ref) {
        const char *m = lg_http_request_method(c->req);
        struct lg_error err = {0};
        struct lg_image *img = NULL;
        int r = lg_image_get(c->api->images, ref, &img, &err);
        if (r < 0)
                return respond_image_error(c->req, r, &err, false);
        if (!strcmp(m, "GET")) {
                api_json(c->req, 200, image_json(img));
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
        size_t n_names = 0;
        for (size_t i = 0; img->names && img->names[i]; i++)
                n_names++;
        /* Removing one of several names only untags; the last name (or the
         * id) of an image a running pod uses needs force. */
        bool last = n_names <= 1 || !strncmp(ref, "sha256:", 7) || !strcmp(ref, img->id);
        const char *force = lg_http_request_param(c->req, "force");
        bool forced = force && (!strcmp(force, "true") || !strcmp(force, "1") || !*force);
        if (last && !forced && image_in_use(c->api, img)) {
                lg_http_respond_error(c->req, 409, "Conflict", "image `%s` is used by a running pod (?force=true removes it anyway)",
                                      ref);
                lg_image_free(img);
                return;
        }
        char id[sizeof(img->id)];
        snprintf(id, sizeof(id), "%s", img->id);
        lg_image_free(img);
        r = lg_image_remove(c->api->images, ref, &err);
        if (r < 0)
                return respond_image_error(c->req, r, &err, false);
        /* Warm pod sandboxes of the image go with any of its names: made
         * again at its next use if it is still there. */
        lg_pods_image_removed(c->api->pods, id);
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
                     is_verb(c->req, seg, n, "gc");
        if (write && !api_is_admin(c)) {
                lg_http_respond_error(c->req, 403, "Forbidden", "%s", "importing, pulling and GC of images need an admin token");
                return;
        }
        if (is_verb(c->req, seg, n, "import"))
                return api_images_import(c);
        if (is_verb(c->req, seg, n, "pull"))
                return api_images_pull(c);
        if (is_verb(c->req, seg, n, "gc"))
                return api_images_gc(c);
        if (n == 2) {
                if (strcmp(m, "GET")) {
                        lg_http_respond_error(c->req, 405, "MethodNotAllowed", "%s",
                                              "use GET, or POST /v1/images/import, /v1/images/pull, /v1/images/gc");
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
