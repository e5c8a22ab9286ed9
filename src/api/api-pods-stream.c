/* The streaming parts of the Pod API (docs/pods.md, "API"): watch
 * (?watch=true: one JSON event per line over a chunked response) and
 * pods/log (with follow; its follow of a log file, api_log_follow, serves
 * the jobs' logs too).
 *
 * Watches are woken by the store's commit hook: it only arms a zero
 * timer, and the timer reads the events since each watch's bookmark
 * (lg_store_events_since), so that a burst of writes costs one read per
 * watch and no watch work runs inside another request's handler. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api-internal.h"

bool kube_param_true(struct lg_http_request *req, const char *name) {
        const char *v = lg_http_request_param(req, name);
        return v && (!strcmp(v, "true") || !strcmp(v, "1") || !*v);
}

/* ---- watch -------------------------------------------------------------------------- */

struct watch {
        struct watch *next;
        struct lg_api *api;
        struct lg_http_request *req;
        char ns[LG_STORE_NAME_MAX + 1]; /* "" = all namespaces */
        struct lg_selector *sel;
        struct kube_fsel fs;
        bool table;
        char include[16];
        int64_t rv;
        json_t *seen; /* names ("ns/name") that matched the last time we looked */
        uv_timer_t timer; /* timeoutSeconds */
        bool timer_on, done;
};


static void watch_closed(uv_handle_t *h) {
        struct watch *w = h->data;
        lg_selector_free(w->sel);
        json_decref(w->seen);
        free(w);
}

/* Unlink and free (the request has been ended or aborted by the caller). */
static void watch_free(struct watch *w) {
        if (w->done)
                return;
        w->done = true;
        for (struct watch **p = &w->api->watches; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        break;
                }
        if (w->timer_on) {
                uv_timer_stop(&w->timer);
                uv_close((uv_handle_t *) &w->timer, watch_closed);
        } else {
                watch_closed((uv_handle_t *) &w->timer);
        }
}

static void watch_end(struct watch *w) {
        lg_http_response_end(w->req);
        watch_free(w);
}

/* Send one event; false when the client is gone or too slow. */
static bool watch_send(struct watch *w, const char *type, json_t *obj /* stolen */) {
        if (obj && w->table && strcmp(type, "ERROR")) {
                json_t *t = kube_pod_table(&obj, 1,
                                           json_string_value(json_object_get(json_object_get(obj, "metadata"),
                                                                             "resourceVersion")),
                                           w->include);
                json_decref(obj);
                obj = t;
        }
        json_t *ev = json_pack("{s:s, s:o}", "type", type, "object", obj ? obj : json_object());
        char *s = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
        json_decref(ev);
        if (!s)
                return false;
        size_t n = strlen(s);
        s[n] = '\n';
        int r = lg_http_response_write(w->req, s, n + 1, NULL, NULL);
        free(s);
        /* A client that reads nothing must not make legiond buffer forever. */
        return r >= 0 && lg_http_response_queued(w->req) < (16u << 20);
}

static bool watch_matches(struct watch *w, const struct lg_resource *r, json_t *doc) {
        return lg_selector_matches(w->sel, r->labels) && kube_field_selector_matches(&w->fs, doc);
}

/* Deliver the events after w->rv; false when the watch ended. */
static bool watch_pump(struct watch *w) {
        struct lg_event_list l = {0};
        struct lg_error err = {0};
        int r = lg_store_events_since(w->api->store, w->rv, "Pod", w->ns[0] ? w->ns : NULL, 0, &l, &err);
        if (r == -EIDRM) {
                char msg[128];
                snprintf(msg, sizeof(msg), "too old resource version: %lld", (long long) w->rv);
                watch_send(w, "ERROR", kube_status_doc(410, "Expired", NULL, msg));
                watch_end(w);
                return false;
        }
        if (r < 0) {
                watch_send(w, "ERROR", kube_status_doc(500, "InternalError", NULL, err.msg));
                watch_end(w);
                return false;
        }
        bool ok = true;
        for (size_t i = 0; i < l.n && ok; i++) {
                struct lg_event *e = &l.items[i];
                char key[2 * LG_STORE_NAME_MAX + 2];
                snprintf(key, sizeof(key), "%s/%s", e->object->namespace, e->object->name);
                json_t *doc = lg_pod_to_json(e->object);
                bool match = doc && watch_matches(w, e->object, doc);
                bool was = json_object_get(w->seen, key) != NULL;
                if (e->type == LG_EVENT_DELETED) {
                        if (match || was)
                                ok = watch_send(w, "DELETED", json_incref(doc));
                        json_object_del(w->seen, key);
                } else if (match) {
                        ok = watch_send(w, was && e->type != LG_EVENT_ADDED ? "MODIFIED" : "ADDED", json_incref(doc));
                        json_object_set_new(w->seen, key, json_true());
                } else if (was) {
                        /* It stopped matching: gone from this watch's view. */
                        ok = watch_send(w, "DELETED", json_incref(doc));
                        json_object_del(w->seen, key);
                }
                json_decref(doc);
        }
        w->rv = l.resource_version > w->rv ? l.resource_version : w->rv;
        lg_event_list_free(&l);
        if (!ok) {
                lg_http_response_abort(w->req);
                watch_free(w);
                return false;
        }
        return true;
}

static void on_kick(uv_timer_t *t) {
        struct lg_api *api = t->data;
        struct watch *next;
        for (struct watch *w = api->watches; w; w = next) {
                next = w->next;
                watch_pump(w);
        }
}

static void on_commit(void *ud, int64_t rv) {
        struct lg_api *api = ud;
        (void) rv;
        if (api->watches && !uv_is_active((uv_handle_t *) &api->kick))
                uv_timer_start(&api->kick, on_kick, 0, 0);
}

void api_kube_init(struct lg_api *api) {
        uv_timer_init(api->loop, &api->kick);
        api->kick.data = api;
        uv_unref((uv_handle_t *) &api->kick);
        lg_store_set_commit_hook(api->store, on_commit, api);
}

static void watch_timeout(uv_timer_t *t) { watch_end(t->data); }

static void watch_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) reason;
        lg_http_response_abort(req);
        watch_free(ud);
}

void kube_watch_pods(struct api_call *c, const char *ns) {
        struct watch *w = calloc(1, sizeof(*w));
        if (!w)
                return kube_status(c->req, 500, "InternalError", NULL, "out of memory");
        w->api = c->api;
        w->req = c->req;
        w->timer.data = w;
        snprintf(w->ns, sizeof(w->ns), "%s", ns ? ns : "");
        w->seen = json_object();
        if (!kube_selectors(c, &w->sel, &w->fs)) {
                watch_closed((uv_handle_t *) &w->timer);
                return;
        }
        w->table = kube_wants_table(c->req);
        const char *inc = lg_http_request_param(c->req, "includeObject");
        snprintf(w->include, sizeof(w->include), "%s", inc ? inc : "");
        const char *rvs = lg_http_request_param(c->req, "resourceVersion");
        char *end = NULL;
        int64_t from = rvs && *rvs ? strtoll(rvs, &end, 10) : 0;
        if (from < 0 || (end && *end)) {
                watch_closed((uv_handle_t *) &w->timer);
                return kube_status(c->req, 400, "BadRequest", NULL, "invalid resourceVersion `%.64s`", rvs);
        }
        const char *ts = lg_http_request_param(c->req, "timeoutSeconds");
        long long timeout = 0;
        if (ts && lg_parse_int(ts, 0, INT32_MAX, &timeout) < 0) {
                watch_closed((uv_handle_t *) &w->timer);
                return kube_status(c->req, 400, "BadRequest", NULL, "invalid timeoutSeconds `%.64s`", ts);
        }
        /* What matches now: sent as ADDED when starting from "now", and in
         * every case what "stopped matching" is measured against. */
        struct lg_resource_list l = {0};
        struct lg_error err = {0};
        int r = lg_store_list(c->api->store, "Pod", ns, w->sel, &l, &err);
        if (r < 0) {
                watch_closed((uv_handle_t *) &w->timer);
                return kube_store_error(c->req, r, &err, "");
        }
        static const struct lg_http_header h[] = {{"Content-Type", "application/json"}};
        lg_http_response_start(c->req, 200, h, 1, -1);
        bool ok = true;
        for (size_t i = 0; i < l.n && ok; i++) {
                json_t *doc = lg_pod_to_json(l.items[i]);
                if (!doc || !kube_field_selector_matches(&w->fs, doc)) {
                        json_decref(doc);
                        continue;
                }
                char key[2 * LG_STORE_NAME_MAX + 2];
                snprintf(key, sizeof(key), "%s/%s", l.items[i]->namespace, l.items[i]->name);
                json_object_set_new(w->seen, key, json_true());
                if (from == 0)
                        ok = watch_send(w, "ADDED", doc);
                else
                        json_decref(doc);
        }
        w->rv = from ? from : l.resource_version;
        lg_resource_list_free(&l);
        w->next = c->api->watches;
        c->api->watches = w;
        if (!ok) {
                lg_http_response_abort(c->req);
                watch_free(w);
                return;
        }
        lg_http_request_on_abort(c->req, watch_abort, w);
        if (timeout > 0) {
                uv_timer_init(c->api->loop, &w->timer);
                w->timer_on = true;
                uv_timer_start(&w->timer, watch_timeout, (uint64_t) timeout * 1000, 0);
        }
        /* Events already past `from` go out now. */
        if (from)
                watch_pump(w);
}

/* ---- logs -------------------------------------------------------------------------------- */

struct logf {
        struct lg_api *api;
        struct lg_http_request *req;
        struct api_log_writer who; /* whose log: asked whether it may still write */
        char path[4096];
        int fd; /* the log of the run being followed; -1 until the file exists */
        off_t off;
        int64_t limit; /* bytes still allowed; -1 = no limit */
        uv_timer_t timer;
        bool done;
};

static void logf_closed(uv_handle_t *h) { free(h->data); }

static void logf_stop(struct logf *f) {
        if (f->done)
                return;
        f->done = true;
        if (f->fd >= 0)
                close(f->fd);
        uv_timer_stop(&f->timer);
        uv_close((uv_handle_t *) &f->timer, logf_closed);
}

ssize_t api_log_read(int fd, off_t *off, char *buf, size_t cap) {
        struct stat st;
        /* A capped log was compacted under us: start over. */
        if (fstat(fd, &st) == 0 && st.st_size < *off)
                *off = 0;
        ssize_t n = lg_pread_all(fd, buf, cap, *off);
        if (n > 0)
                *off += n;
        return n;
}

/* New bytes of the file since f->off (at most cap). */
static ssize_t logf_read(struct logf *f, char *buf, size_t cap) {
        if (f->fd < 0 && (f->fd = open(f->path, O_RDONLY | O_CLOEXEC)) < 0)
                return 0;
        return api_log_read(f->fd, &f->off, buf, cap);
}

/* The manager renames the log to .previous.log when the container
 * restarts: the run being followed is over (as in Kubernetes, a follow is
 * of one run). */
static bool logf_rotated(struct logf *f) {
        struct stat a, b;
        if (f->fd < 0)
                return false;
        return stat(f->path, &a) < 0 || fstat(f->fd, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev;
}

static void logf_tick(uv_timer_t *t) {
        struct logf *f = t->data;
        static char buf[256 << 10];
        for (;;) {
                ssize_t n = logf_read(f, buf, sizeof(buf));
                if (n <= 0)
                        break;
                if (f->limit >= 0 && n > f->limit)
                        n = (ssize_t) f->limit;
                if (f->limit >= 0)
                        f->limit -= n;
                if (lg_http_response_write(f->req, buf, (size_t) n, NULL, NULL) < 0 ||
                    lg_http_response_queued(f->req) > (16u << 20)) {
                        lg_http_response_abort(f->req);
                        logf_stop(f);
                        return;
                }
                if (f->limit == 0)
                        break;
        }
        if (f->limit == 0 || logf_rotated(f) || f->who.active(f->api, &f->who) <= 0) {
                /* One last read: what was written before it stopped. */
                ssize_t n = f->limit == 0 ? 0 : logf_read(f, buf, sizeof(buf));
                if (n > 0 && f->limit >= 0 && n > f->limit)
                        n = (ssize_t) f->limit;
                if (n > 0)
                        lg_http_response_write(f->req, buf, (size_t) n, NULL, NULL);
                lg_http_response_end(f->req);
                logf_stop(f);
        }
}

static void logf_abort(struct lg_http_request *req, int reason, void *ud) {
        (void) reason;
        lg_http_response_abort(req);
        logf_stop(ud);
}

void api_log_follow(struct lg_api *api, struct lg_http_request *req, const struct api_log_writer *who,
                    const char *path, int fd, off_t off, int64_t limit) {
        struct logf *f = calloc(1, sizeof(*f));
        if (!f) {
                if (fd >= 0)
                        close(fd);
                lg_http_response_abort(req);
                return;
        }
        f->api = api;
        f->req = req;
        f->who = *who;
        snprintf(f->path, sizeof(f->path), "%s", path);
        f->fd = fd;
        f->off = off;
        f->limit = limit;
        uv_timer_init(api->loop, &f->timer);
        f->timer.data = f;
        uv_timer_start(&f->timer, logf_tick, 100, 100);
        lg_http_request_on_abort(req, logf_abort, f);
}

static int container_active(struct lg_api *api, const struct api_log_writer *w) {
        return lg_pods_container_active(api->pods, w->ns, w->name, w->part);
}

/* The waiting reason of a container in a Pod document (NULL when it is
 * not waiting), for the error when it has no log yet. */
static const char *container_waiting(const json_t *pod, const char *container) {
        size_t i;
        json_t *cs;
        json_array_foreach(json_object_get(json_object_get(pod, "status"), "containerStatuses"), i, cs) {
                const char *n = json_string_value(json_object_get(cs, "name"));
                if (!n || strcmp(n, container))
                        continue;
                json_t *state = json_object_get(cs, "state");
                json_t *w = json_object_get(state, "waiting");
                if (w) {
                        const char *r = json_string_value(json_object_get(w, "reason"));
                        return r ? r : "ContainerCreating";
                }
                return NULL;
        }
        return "ContainerCreating";
}

void kube_pod_log(struct api_call *c, const char *ns, const char *name) {
        struct lg_resource *res = NULL;
        struct lg_error err = {0};
        int r = lg_store_get(c->api->store, LG_KEY("Pod", ns, name), &res, &err);
        if (r < 0)
                return kube_store_error(c->req, r, &err, name);
        json_t *pod = lg_pod_to_json(res);
        lg_resource_free(res);
        json_t *containers = json_object_get(json_object_get(pod, "spec"), "containers");
        const char *container = lg_http_request_param(c->req, "container");
        if (!container || !*container) {
                if (json_array_size(containers) != 1) {
                        char names[1024] = "";
                        size_t off = 0, i;
                        json_t *ct;
                        json_array_foreach(containers, i, ct) if (off < sizeof(names)) off += (size_t) snprintf(
                                names + off, sizeof(names) - off, "%s%s", i ? " " : "",
                                json_string_value(json_object_get(ct, "name")));
                        kube_status(c->req, 400, "BadRequest", NULL,
                                    "a container name must be specified for pod %s, choose one of: [%s]", name, names);
                        json_decref(pod);
                        return;
                }
                container = json_string_value(json_object_get(json_array_get(containers, 0), "name"));
        }
        bool known = false;
        size_t i;
        json_t *ct;
        json_array_foreach(containers, i, ct) known |= !strcmp(json_string_value(json_object_get(ct, "name")), container);
        if (!known) {
                kube_status(c->req, 400, "BadRequest", NULL, "container %.64s is not valid for pod %s", container, name);
                json_decref(pod);
                return;
        }
        bool previous = kube_param_true(c->req, "previous");
        struct api_log_writer who = {.active = container_active};
        snprintf(who.ns, sizeof(who.ns), "%s", ns);
        snprintf(who.name, sizeof(who.name), "%s", name);
        snprintf(who.part, sizeof(who.part), "%s", container);
        const char *waiting = container_waiting(pod, container);
        char path[4096];
        r = lg_pods_log_path(c->api->pods, ns, name, container, previous, path, sizeof(path));
        struct stat st;
        if (r < 0 || stat(path, &st) < 0) {
                if (previous)
                        kube_status(c->req, 400, "BadRequest", NULL,
                                    "previous terminated container \"%s\" in pod \"%s\" not found", container, name);
                else if (waiting)
                        kube_status(c->req, 400, "BadRequest", NULL,
                                    "container \"%s\" in pod \"%s\" is waiting to start: %s", container, name, waiting);
                else
                        kube_status(c->req, 404, "NotFound", NULL, "no log for container \"%s\" in pod \"%s\"",
                                    container, name);
                json_decref(pod);
                return;
        }
        json_decref(pod);
        const char *lb = lg_http_request_param(c->req, "limitBytes");
        const char *tl = lg_http_request_param(c->req, "tailLines");
        long long limit = -1, want = 0;
        if (lb && (lg_parse_int(lb, 1, INT64_MAX, &limit) < 0))
                return kube_status(c->req, 422, "Invalid", NULL, "limitBytes: Invalid value: must be greater than 0");
        if (tl && lg_parse_int(tl, LLONG_MIN, LLONG_MAX, &want) < 0)
                return kube_status(c->req, 400, "BadRequest", NULL, "tailLines: `%.32s` is not a whole number", tl);
        /* The start: the whole file, or its last tailLines lines. */
        char *data = NULL;
        size_t len = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kube_status(c->req, 404, "NotFound", NULL, "no log for container \"%s\" in pod \"%s\"",
                                   container, name);
        if (fstat(fd, &st) == 0 && (data = malloc((size_t) st.st_size + 1))) {
                ssize_t n = lg_pread_all(fd, data, (size_t) st.st_size, 0);
                len = n > 0 ? (size_t) n : 0;
        }
        size_t skip = 0;
        if (tl && data) {
                size_t lines = 0;
                skip = want <= 0 ? len : 0;
                for (size_t j = len; want > 0 && j > 0; j--)
                        if (data[j - 1] == '\n' && j != len && ++lines == (size_t) want) {
                                skip = j;
                                break;
                        }
        }
        size_t out = len - skip;
        if (limit >= 0 && out > (size_t) limit)
                out = (size_t) limit;
        if (limit >= 0)
                limit -= (int64_t) out;
        static const struct lg_http_header h[] = {{"Content-Type", "text/plain"}};
        if (!kube_param_true(c->req, "follow") || limit == 0) {
                lg_http_respond(c->req, 200, h, 1, data ? data + skip : "", out);
                free(data);
                close(fd);
                return;
        }
        lg_http_response_start(c->req, 200, h, 1, -1);
        if (out)
                lg_http_response_write(c->req, data + skip, out, NULL, NULL);
        free(data);
        api_log_follow(c->api, c->req, &who, path, fd, (off_t) len, limit);
}
