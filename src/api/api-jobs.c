/* Serverless jobs over HTTP (docs/api.md, "Jobs"; docs/jobs.md):
 * /v1/namespaces/{ns}/jobs[/{name}[/stop|/logs]], .../masters[/{name}],
 * /v1/jobs and /v1/masters (an admin's: every namespace) and
 * /v1/jobs/pools[/{name}] (an admin's). The logic is src/jobs (lg_jobs);
 * here requests become its calls and its answers responses.
 *
 * POST .../jobs?attach=true answers an NDJSON stream: a line
 * {"type":"status","job":{...}} at every status change of the job, the
 * last one its final state; with &logs=true also the driver's output as
 * lines {"type":"log","role":"driver","data":"..."} (`legion submit`
 * shows both). A client that closes the stream before the end stops the
 * job ("client disconnected"); legiond stopping ends the stream and leaves
 * the job running for the next legiond. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "api/api-internal.h"

#define LOG_READ_MAX (64u << 10)
/* A client that reads nothing must not make legiond buffer forever. */
#define QUEUED_MAX (16u << 20)

/* The answer for an error of lg_jobs (jobs.h lists them). */
static void jobs_error(struct lg_http_request *req, int r, const struct lg_error *err) {
        char msg[sizeof(err->msg)];
        api_error_text(r, err, msg, sizeof(msg));
        switch (r) {
        case -EINVAL:
        case -E2BIG: lg_http_respond_error(req, 422, "Invalid", "%s", msg); break;
        case -ENOENT: lg_http_respond_error(req, 404, "NotFound", "%s", msg); break;
        case -EEXIST:
        case -EBUSY: lg_http_respond_error(req, 409, "Conflict", "%s", msg); break;
        case -ENETUNREACH: lg_http_respond_error(req, 503, "NetworkOff", "%s", msg); break;
        case -ENOSYS: lg_http_respond_error(req, 501, "NotImplemented", "%s", msg); break;
        case -ENOMEM: lg_http_respond_error(req, 503, "Overloaded", "%s", "out of memory"); break;
        default: lg_http_respond_error(req, 500, "Internal", "%s", msg); break;
        }
}

static bool final_phase(const char *phase) {
        return phase && (!strcmp(phase, "Succeeded") || !strcmp(phase, "Failed") || !strcmp(phase, "Stopped"));
}

static const char *job_phase(const struct lg_resource *r) {
        return json_string_value(json_object_get(r->status, "phase"));
}

/* A name from the path: what the store takes, else 404 (a name that
 * cannot exist names nothing). */
static bool path_name(struct api_call *c, const char *what, const char *name) {
        if (lg_store_valid_name(name))
                return true;
        char shown[80];
        lg_printable(name, shown, sizeof(shown));
        lg_http_respond_error(c->req, 404, "NotFound", "%s `%s` not found", what, shown);
        return false;
}

static bool need_admin(struct api_call *c, const char *what) {
        if (api_is_admin(c))
                return true;
        lg_http_respond_error(c->req, 403, "Forbidden", "%s needs an admin token", what);
        return false;
}

static bool method_is(struct api_call *c, const char *m) { return !strcmp(lg_http_request_method(c->req), m); }

static void method_not_allowed(struct api_call *c, const char *allowed) {
        lg_http_respond_error(c->req, 405, "MethodNotAllowed", "use %s", allowed);
}

/* {"items": [...]} of a list, each through to_json. */
static void answer_list(struct api_call *c, int r, struct lg_resource_list *l, const struct lg_error *err,
                        json_t *(*to_json)(const struct lg_resource *)) {
        if (r < 0)
                return jobs_error(c->req, r, err);
        json_t *items = json_array();
        for (size_t i = 0; i < l->n; i++)
                json_array_append_new(items, to_json(l->items[i]));
        lg_resource_list_free(l);
        api_json(c->req, 200, json_pack("{s:o}", "items", items));
}

/* ---- attach: the status stream of a submitted job ------------------------------ */

struct job_attach {
        struct job_attach *next;
        struct lg_api *api;
        struct lg_http_request *req;
        char ns[LG_STORE_NAME_MAX + 1], name[LG_STORE_NAME_MAX + 1];
        lg_jobs_watch *watch;
        uv_timer_t timer;
        bool logs;         /* the driver's output goes in the stream too */
        char log_path[4096];
        int log_fd;        /* -1 until the driver's log exists */
        off_t log_off;
        json_t *final;     /* the final status line, sent once the driver's log is drained */
        unsigned final_ticks;
        bool ended;
};

static void attach_closed(uv_handle_t *h) {
        struct job_attach *a = h->data;
        json_decref(a->final);
        free(a);
}

/* Unlink and free; the request has been ended or aborted. */
static void attach_free(struct job_attach *a) {
        if (a->ended)
                return;
        a->ended = true;
        lg_jobs_watch_remove(a->watch);
        a->watch = NULL;
        for (struct job_attach **p = &a->api->attaches; *p; p = &(*p)->next)
                if (*p == a) {
                        *p = a->next;
                        break;
                }
        if (a->log_fd >= 0)
                close(a->log_fd);
        uv_timer_stop(&a->timer);
        uv_close((uv_handle_t *) &a->timer, attach_closed);
}

/* The client is gone (or reads too slowly to be kept): the job stops. */
static void attach_gone(struct job_attach *a) {
        char ns[sizeof(a->ns)], name[sizeof(a->name)];
        snprintf(ns, sizeof(ns), "%s", a->ns);
        snprintf(name, sizeof(name), "%s", a->name);
        struct lg_api *api = a->api;
        bool stop = !a->final && !api->stopping;
        attach_free(a);
        struct lg_error err = {0};
        /* -ENOENT: deleted meanwhile. Nothing else to tell anyone. */
        if (stop && api->jobs)
                (void) lg_jobs_stop(api->jobs, ns, name, "client disconnected", &err);
}

/* One line; false (the response aborted) when the client cannot take it. */
static bool attach_line(struct job_attach *a, json_t *doc /* stolen */) {
        char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        if (!s)
                return true; /* out of memory: a line lost, the stream goes on */
        size_t n = strlen(s);
        s[n] = '\n'; /* the NUL is not sent */
        int r = lg_http_response_write(a->req, s, n + 1, NULL, NULL);
        free(s);
        if (r >= 0 && lg_http_response_queued(a->req) < QUEUED_MAX)
                return true;
        lg_http_response_abort(a->req);
        return false;
}

/* The driver's new output as log lines; false when the client is gone. */
static bool attach_pump_log(struct job_attach *a, bool at_end) {
        if (!a->logs)
                return true;
        if (a->log_fd < 0 && (a->log_fd = open(a->log_path, O_RDONLY | O_CLOEXEC)) < 0)
                return true;
        static char buf[LOG_READ_MAX];
        for (;;) {
                ssize_t n = api_log_read(a->log_fd, &a->log_off, buf, sizeof(buf));
                if (n <= 0)
                        return true;
                size_t k = lg_utf8_fix(buf, (size_t) n, at_end);
                a->log_off -= (off_t) ((size_t) n - k); /* a character cut short: read again */
                if (k == 0)
                        return true;
                if (!attach_line(a, json_pack("{s:s, s:s, s:s%}", "type", "log", "role", "driver", "data", buf, k)))
                        return false;
        }
}

static void attach_tick(uv_timer_t *t) {
        struct job_attach *a = t->data;
        if (!attach_pump_log(a, false))
                return attach_gone(a);
        if (!a->final)
                return;
        /* The job ended: the driver's last words, then the final line. At
         * most 2 s for a driver whose sandbox is still being taken down. */
        if (a->logs && a->final_ticks++ < 20 &&
            lg_jobs_log_active(a->api->jobs, a->ns, a->name, "driver", 0) > 0)
                return;
        if (!attach_pump_log(a, true))
                return attach_gone(a);
        json_t *line = a->final;
        a->final = NULL;
        if (!attach_line(a, line))
                return attach_gone(a);
        lg_http_response_end(a->req);
        attach_free(a);
}

/* A status of the job (the watch's, or read at the start). */
static void attach_status(struct job_attach *a, const struct lg_resource *job) {
        if (a->ended || a->final)
                return;
        json_t *line = json_pack("{s:s, s:o}", "type", "status", "job", lg_job_to_json(job));
        /* The last line: a final phase once every sandbox of the job is
         * gone (finishedAt), so that a client that ends with the stream
         * finds nothing of the job left. */
        if (final_phase(job_phase(job)) && json_object_get(job->status, "finishedAt")) {
                /* Sent from the timer, after the driver's output: the watch
                 * is not removed from inside its own callback. */
                a->final = line;
                uv_timer_start(&a->timer, attach_tick, 0, 100);
                return;
        }
        if (!attach_pump_log(a, false) || !attach_line(a, line))
                attach_gone(a);
}

static void attach_watch_cb(const struct lg_resource *job, void *ud) { attach_status(ud, job); }

static void attach_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) reason;
        lg_http_response_abort(req);
        attach_gone(ud);
}

static void attach_start(struct api_call *c, const char *ns, const struct lg_resource *job, bool logs) {
        struct job_attach *a = calloc(1, sizeof(*a));
        if (!a) {
                /* Submitted, but nobody will watch it: the caller sees 503. */
                struct lg_error err = {0};
                (void) lg_jobs_stop(c->api->jobs, ns, job->name, "client disconnected", &err);
                lg_http_respond_error(c->req, 503, "Overloaded", "%s", "out of memory");
                return;
        }
        a->api = c->api;
        a->req = c->req;
        a->log_fd = -1;
        a->logs = logs;
        snprintf(a->ns, sizeof(a->ns), "%s", ns);
        snprintf(a->name, sizeof(a->name), "%s", job->name);
        uv_timer_init(c->api->loop, &a->timer);
        a->timer.data = a;
        a->next = c->api->attaches;
        c->api->attaches = a;
        if (logs && lg_jobs_log_path(c->api->jobs, ns, job->name, "driver", 0, a->log_path, sizeof(a->log_path)) < 0)
                a->logs = false; /* an engine without a driver (indexed) */
        struct lg_error err = {0};
        int r = lg_jobs_watch_add(c->api->jobs, ns, job->name, attach_watch_cb, a, &a->watch, &err);
        if (r < 0) {
                attach_free(a);
                struct lg_error why = {0};
                /* Nobody can see it: it must not run on (its error said above). */
                (void) lg_jobs_stop(c->api->jobs, ns, job->name, "client disconnected", &why);
                return jobs_error(c->req, r, &err);
        }
        api_ndjson_start(c->req);
        lg_http_request_on_abort(c->req, attach_abort, a);
        if (a->logs)
                uv_timer_start(&a->timer, attach_tick, 100, 100);
        /* The state now: the watch tells only what changes after it. */
        struct lg_resource *now = NULL;
        if (lg_jobs_get(c->api->jobs, ns, job->name, &now, &err) == 0)
                attach_status(a, now);
        else
                attach_status(a, job);
        lg_resource_free(now);
}

void api_jobs_stop(struct lg_api *api) {
        api->stopping = true;
        while (api->attaches) {
                struct job_attach *a = api->attaches;
                if (!attach_pump_log(a, true))
                        lg_http_response_abort(a->req); /* gone already: its abort is not awaited */
                else
                        lg_http_response_end(a->req);
                attach_free(a);
        }
}

/* ---- jobs ---------------------------------------------------------------------------- */

static void job_submit(struct api_call *c, const char *ns) {
        json_t *spec = api_body_json(c->req);
        if (!spec)
                return;
        struct lg_error err = {0};
        struct lg_resource *job = NULL;
        int r = lg_jobs_submit(c->api->jobs, ns, spec, &job, &err);
        json_decref(spec);
        if (r < 0)
                return jobs_error(c->req, r, &err);
        if (kube_param_true(c->req, "attach"))
                attach_start(c, ns, job, kube_param_true(c->req, "logs"));
        else
                api_json(c->req, 201, lg_job_to_json(job));
        lg_resource_free(job);
}

/* The answer of a call that changed a job: the job as it is now. */
static void answer_job(struct api_call *c, const char *ns, const char *name) {
        struct lg_error err = {0};
        struct lg_resource *job = NULL;
        int r = lg_jobs_get(c->api->jobs, ns, name, &job, &err);
        if (r < 0)
                return jobs_error(c->req, r, &err);
        api_json(c->req, 200, lg_job_to_json(job));
        lg_resource_free(job);
}

/* Whether a job's role may still add to its log: it runs, or the job has
 * not ended (a role not started yet, an index that will be retried). */
static int job_log_active(struct lg_api *api, const struct api_log_writer *w) {
        if (api->stopping || !api->jobs)
                return 0;
        int r = lg_jobs_log_active(api->jobs, w->ns, w->name, w->part, w->index);
        if (r != 0)
                return r;
        struct lg_resource *job = NULL;
        struct lg_error err = {0};
        /* Gone (deleted): nothing more will be written. */
        if (lg_jobs_get(api->jobs, w->ns, w->name, &job, &err) < 0)
                return 0;
        r = final_phase(job_phase(job)) ? 0 : 1;
        lg_resource_free(job);
        return r;
}

/* GET .../jobs/{name}/logs?role=R&index=I&follow=true */
static void job_logs(struct api_call *c, const char *ns, const char *name) {
        if (!method_is(c, "GET"))
                return method_not_allowed(c, "GET");
        struct lg_error err = {0};
        struct lg_resource *job = NULL;
        int r = lg_jobs_get(c->api->jobs, ns, name, &job, &err);
        if (r < 0)
                return jobs_error(c->req, r, &err);
        const char *engine = json_string_value(json_object_get(job->spec, "engine"));
        bool indexed = engine && !strcmp(engine, "indexed");
        const char *phase = job_phase(job);
        char phase_s[32];
        snprintf(phase_s, sizeof(phase_s), "%s", phase ? phase : "Pending");
        bool ended = final_phase(phase);
        lg_resource_free(job);
        const char *role = lg_http_request_param(c->req, "role");
        if (!role || !*role)
                role = indexed ? "index" : "driver";
        if (strcmp(role, "driver") && strcmp(role, "master") && strcmp(role, "executor") && strcmp(role, "index")) {
                char shown[64];
                lg_printable(role, shown, sizeof(shown));
                lg_http_respond_error(c->req, 400, "BadRequest",
                                      "role `%s`: give driver, master, executor or index", shown);
                return;
        }
        const char *is = lg_http_request_param(c->req, "index");
        long long index = 0;
        if (is && lg_parse_int(is, 0, 1000000, &index) < 0) {
                char shown[64];
                lg_printable(is, shown, sizeof(shown));
                lg_http_respond_error(c->req, 400, "BadRequest", "index `%s`: a whole number from 0", shown);
                return;
        }
        struct api_log_writer who = {.index = (unsigned) index, .active = job_log_active};
        snprintf(who.ns, sizeof(who.ns), "%s", ns);
        snprintf(who.name, sizeof(who.name), "%s", name);
        snprintf(who.part, sizeof(who.part), "%s", role);
        /* "driver", "executor 2" */
        char what[64];
        if (!strcmp(role, "executor") || !strcmp(role, "index"))
                snprintf(what, sizeof(what), "%s %lld", role, index);
        else
                snprintf(what, sizeof(what), "%s", role);
        char path[4096];
        r = lg_jobs_log_path(c->api->jobs, ns, name, role, (unsigned) index, path, sizeof(path));
        if (r < 0) {
                lg_http_respond_error(c->req, 404, "NotFound", "job `%s` has no %s", name, what);
                return;
        }
        bool follow = kube_param_true(c->req, "follow");
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 && (!follow || ended)) {
                lg_http_respond_error(c->req, 404, "NotFound", "job `%s` has no log of its %s (the job is %s)", name,
                                      what, phase_s);
                return;
        }
        char *data = NULL;
        size_t len = 0;
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && (data = malloc((size_t) st.st_size + 1))) {
                ssize_t n = lg_pread_all(fd, data, (size_t) st.st_size, 0);
                len = n > 0 ? (size_t) n : 0;
        }
        static const struct lg_http_header h[] = {{"Content-Type", "text/plain; charset=utf-8"}};
        if (!follow) {
                lg_http_respond(c->req, 200, h, 1, data ? data : "", len);
                free(data);
                close(fd);
                return;
        }
        lg_http_response_start(c->req, 200, h, 1, -1);
        if (len)
                lg_http_response_write(c->req, data, len, NULL, NULL);
        free(data);
        api_log_follow(c->api, c->req, &who, path, fd, (off_t) len, -1);
}

static void jobs_of_ns(struct api_call *c, const char *ns) {
        if (method_is(c, "POST"))
                return job_submit(c, ns);
        if (!method_is(c, "GET"))
                return method_not_allowed(c, "GET or POST");
        struct lg_resource_list l = {0};
        struct lg_error err = {0};
        int r = lg_jobs_list(c->api->jobs, ns, &l, &err);
        answer_list(c, r, &l, &err, lg_job_to_json);
}

static void job_one(struct api_call *c, const char *ns, const char *name, const char *sub) {
        if (!path_name(c, "job", name))
                return;
        struct lg_error err = {0};
        int r;
        if (sub && !strcmp(sub, "logs"))
                return job_logs(c, ns, name);
        if (sub && !strcmp(sub, "stop")) {
                if (!method_is(c, "POST"))
                        return method_not_allowed(c, "POST");
                r = lg_jobs_stop(c->api->jobs, ns, name, "stopped by the user", &err);
                if (r < 0)
                        return jobs_error(c->req, r, &err);
                return answer_job(c, ns, name);
        }
        if (sub) {
                lg_http_respond_error(c->req, 404, "NotFound", "no such endpoint `%s`", lg_http_request_path(c->req));
                return;
        }
        if (method_is(c, "GET"))
                return answer_job(c, ns, name);
        if (!method_is(c, "DELETE"))
                return method_not_allowed(c, "GET or DELETE");
        struct lg_resource *job = NULL;
        r = lg_jobs_get(c->api->jobs, ns, name, &job, &err);
        if (r >= 0)
                r = lg_jobs_delete(c->api->jobs, ns, name, &err);
        if (r < 0) {
                lg_resource_free(job);
                return jobs_error(c->req, r, &err);
        }
        api_json(c->req, 200, lg_job_to_json(job));
        lg_resource_free(job);
}

/* ---- masters ---------------------------------------------------------------------- */

static void masters_of_ns(struct api_call *c, const char *ns) {
        struct lg_error err = {0};
        if (method_is(c, "POST")) {
                json_t *spec = api_body_json(c->req);
                if (!spec)
                        return;
                struct lg_resource *m = NULL;
                int r = lg_jobs_master_deploy(c->api->jobs, ns, spec, &m, &err);
                json_decref(spec);
                if (r < 0)
                        return jobs_error(c->req, r, &err);
                api_json(c->req, 201, lg_master_to_json(m));
                lg_resource_free(m);
                return;
        }
        if (!method_is(c, "GET"))
                return method_not_allowed(c, "GET or POST");
        struct lg_resource_list l = {0};
        int r = lg_jobs_master_list(c->api->jobs, ns, &l, &err);
        answer_list(c, r, &l, &err, lg_master_to_json);
}

static void master_one(struct api_call *c, const char *ns, const char *name) {
        if (!path_name(c, "master", name))
                return;
        bool del = method_is(c, "DELETE");
        if (!del && !method_is(c, "GET"))
                return method_not_allowed(c, "GET or DELETE");
        struct lg_error err = {0};
        struct lg_resource *m = NULL;
        int r = lg_jobs_master_get(c->api->jobs, ns, name, &m, &err);
        if (r >= 0 && del)
                r = lg_jobs_master_delete(c->api->jobs, ns, name, &err);
        if (r < 0) {
                lg_resource_free(m);
                return jobs_error(c->req, r, &err);
        }
        api_json(c->req, 200, lg_master_to_json(m));
        lg_resource_free(m);
}

/* ---- warm pools of job roles (admin) ------------------------------------------------ */

/* The pool named in lg_jobs_pools_json, or NULL. */
static json_t *pool_named(json_t *pools, const char *name) {
        size_t i;
        json_t *p;
        json_array_foreach(pools, i, p) {
                const char *n = json_string_value(json_object_get(p, "name"));
                if (n && !strcmp(n, name))
                        return json_incref(p);
        }
        return NULL;
}

static void job_pools(struct api_call *c, const char *name) {
        if (!need_admin(c, "the warm pools of jobs"))
                return;
        if (!name) {
                if (!method_is(c, "GET"))
                        return method_not_allowed(c, "GET (PUT or DELETE /v1/jobs/pools/NAME)");
                api_json(c->req, 200, json_pack("{s:o}", "items", lg_jobs_pools_json(c->api->jobs)));
                return;
        }
        struct lg_error err = {0};
        if (method_is(c, "DELETE")) {
                int r = lg_jobs_pool_delete(c->api->jobs, name, &err);
                if (r < 0)
                        return jobs_error(c->req, r, &err);
                lg_http_respond(c->req, 204, NULL, 0, NULL, 0);
                return;
        }
        if (method_is(c, "PUT")) {
                json_t *spec = api_body_json(c->req);
                if (!spec)
                        return;
                int r = lg_jobs_pool_set(c->api->jobs, name, spec, &err);
                json_decref(spec);
                if (r < 0)
                        return jobs_error(c->req, r, &err);
        } else if (!method_is(c, "GET")) {
                return method_not_allowed(c, "GET, PUT or DELETE");
        }
        json_t *pools = lg_jobs_pools_json(c->api->jobs);
        json_t *p = pool_named(pools, name);
        json_decref(pools);
        if (!p) {
                char shown[80];
                lg_printable(name, shown, sizeof(shown));
                lg_http_respond_error(c->req, 404, "NotFound", "job pool `%s` not found", shown);
                return;
        }
        api_json(c->req, 200, p);
}

/* ---- routing ------------------------------------------------------------------------ */

bool api_jobs_path(const char *const *seg, int n) {
        if (n < 2 || strcmp(seg[0], "v1"))
                return false;
        if (!strcmp(seg[1], "jobs"))
                return n == 2 || ((n == 3 || n == 4) && !strcmp(seg[2], "pools"));
        if (!strcmp(seg[1], "masters"))
                return n == 2;
        return n >= 4 && n <= 6 && !strcmp(seg[1], "namespaces") &&
               (!strcmp(seg[3], "jobs") || (!strcmp(seg[3], "masters") && n <= 5));
}

void api_jobs(struct api_call *c) {
        const char *const *seg = c->seg;
        int n = c->nseg;
        if (!c->api->jobs || c->api->stopping) {
                lg_http_respond_error(c->req, 503, "Unavailable", "%s",
                                      c->api->stopping ? "legiond is stopping" : "jobs are off on this legiond");
                return;
        }
        if (!strcmp(seg[1], "namespaces")) {
                const char *ns = seg[2];
                if (!api_ns_exists(c, ns))
                        return;
                if (!strcmp(seg[3], "masters"))
                        return n == 4 ? masters_of_ns(c, ns) : master_one(c, ns, seg[4]);
                if (n == 4)
                        return jobs_of_ns(c, ns);
                return job_one(c, ns, seg[4], n == 6 ? seg[5] : NULL);
        }
        if (n >= 3) /* /v1/jobs/pools[/NAME] */
                return job_pools(c, n == 4 ? seg[3] : NULL);
        bool masters = !strcmp(seg[1], "masters");
        if (!need_admin(c, masters ? "the masters of every namespace" : "the jobs of every namespace"))
                return;
        if (!method_is(c, "GET"))
                return method_not_allowed(c, "GET");
        struct lg_resource_list l = {0};
        struct lg_error err = {0};
        int r = masters ? lg_jobs_master_list(c->api->jobs, NULL, &l, &err)
                        : lg_jobs_list(c->api->jobs, NULL, &l, &err);
        answer_list(c, r, &l, &err, masters ? lg_master_to_json : lg_job_to_json);
}
