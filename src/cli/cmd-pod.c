/* `legion pod`: apply, run, list, get, logs, delete and wait, through
 * legiond's Kubernetes-compatible Pod API (/api/v1/namespaces/{ns}/pods,
 * docs/pods.md). The API answers errors with Kubernetes Status documents;
 * their message is what the user sees. The table of `list` computes STATUS,
 * READY and RESTARTS with src/kube, the code of the Table legiond gives
 * kubectl, so both tools show the same words for the same pod. */
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/yaml2json.h"
#include "kube/kube.h"

#define _cleanup_json_ _cleanup_(json_decrefp)

static void pod_usage(FILE *f) {
        fputs("usage: legion pod <command> [options]\n"
              "\n"
              "commands:\n"
              "  apply -f FILE                        create pods from a manifest (JSON or YAML), or\n"
              "                                       update the labels and annotations of existing ones\n"
              "  run NAME --image IMG [-- CMD ARGS]   create a pod of one container\n"
              "  list [-l SELECTOR] [-A]              pods of the namespace (or of all, -A)\n"
              "  get NAME                             a pod's phase, containers and times\n"
              "  logs NAME [-c C] [-f] [--tail N]     a container's output\n"
              "  delete NAME... [--grace N] [--now]   delete pods, waiting until they are gone\n"
              "  wait NAME --for phase=P|condition=C|delete [--timeout S]\n"
              "                                       wait for a pod to reach a state\n"
              "\n"
              "Run `legion pod <command> --help` for a command's options.\n" CLI_GLOBAL_HELP,
              f);
}

static void apply_usage(FILE *f) {
        fputs("usage: legion pod apply -f FILE\n"
              "\n"
              "Create the pods of FILE (JSON or YAML; several YAML documents, or a List,\n"
              "make several pods; `-` reads stdin). A pod that exists already keeps its\n"
              "spec (a pod's spec cannot change: delete it and apply again); its labels\n"
              "and annotations become those of FILE. Prints pod/NAME created, configured\n"
              "or unchanged.\n"
              "\n"
              "  -f, --filename FILE  the manifest (required)\n" CLI_GLOBAL_HELP,
              f);
}

static void run_usage(FILE *f) {
        fputs("usage: legion pod run NAME --image IMG [options] [--] [CMD [ARGS...]]\n"
              "\n"
              "Create a pod of one container named NAME, like `kubectl run`: ARGS after\n"
              "the options replace the image's CMD (the container's `args`), and with\n"
              "--command they replace its ENTRYPOINT (`command`) instead. Put `--` before\n"
              "a command that has options of its own (`-- sh -c 'echo hi'`).\n"
              "\n"
              "  --image IMG          the image (required), e.g. busybox or 127.0.0.1:5000/app:1\n"
              "  --restart R          Always (default), OnFailure or Never\n"
              "  --memory Q           memory limit, e.g. 64Mi\n"
              "  --cpu Q              CPU limit, e.g. 500m or 0.5\n"
              "  --env K=V            an environment variable; repeatable\n"
              "  --label K=V[,K=V]    labels (default run=NAME); repeatable\n"
              "  --command            CMD ARGS are the command, not the arguments\n"
              "  --image-pull-policy P  Always, IfNotPresent or Never\n"
              "  --dry-run            print the pod and create nothing\n" CLI_GLOBAL_HELP,
              f);
}

static void list_usage(FILE *f) {
        fputs("usage: legion pod list [-l SELECTOR] [--field-selector S] [-A]\n"
              "\n"
              "  -l, --selector S       only pods whose labels match S (app=web,tier!=db)\n"
              "  --field-selector S     only pods whose fields match S (status.phase=Running)\n"
              "  -A, --all-namespaces   pods of every namespace\n" CLI_GLOBAL_HELP,
              f);
}

static void get_usage(FILE *f) {
        fputs("usage: legion pod get NAME\n"
              "\n"
              "The pod's status: phase, each container's state (with reason and exit\n"
              "code when it ended), restarts and times. --json prints the Pod document.\n" CLI_GLOBAL_HELP,
              f);
}

static void logs_usage(FILE *f) {
        fputs("usage: legion pod logs NAME [-c CONTAINER] [-f] [--tail N] [--previous]\n"
              "\n"
              "  -c, --container C    the container (needed when the pod has several)\n"
              "  -f, --follow         keep printing until the container ends\n"
              "  --tail N             only the last N lines\n"
              "  -p, --previous       the run before the last restart\n"
              "  --timestamps         prefix each line with its time\n" CLI_GLOBAL_HELP,
              f);
}

static void delete_usage(FILE *f) {
        fputs("usage: legion pod delete NAME... [--grace N] [--now] [--no-wait]\n"
              "\n"
              "Ask the pods to stop (SIGTERM, then SIGKILL after the grace period) and\n"
              "wait until they are gone.\n"
              "\n"
              "  --grace N            seconds between SIGTERM and SIGKILL (default: the pod's\n"
              "                       terminationGracePeriodSeconds); 0 kills at once\n"
              "  --now                the same as --grace 1\n"
              "  --wait / --no-wait   wait until the pods are gone (default) or return at once\n"
              "  --timeout S          give up waiting after S seconds (default: grace + 60)\n"
              "  --ignore-not-found   a pod that does not exist is not an error\n" CLI_GLOBAL_HELP,
              f);
}

static void wait_usage(FILE *f) {
        fputs("usage: legion pod wait NAME --for COND [--timeout S]\n"
              "\n"
              "Wait until the pod meets COND, watching it (no polling):\n"
              "  phase=P              status.phase is P (Pending, Running, Succeeded, Failed)\n"
              "  condition=C[=V]      the condition C (Ready, ContainersReady, Initialized,\n"
              "                       PodScheduled) has status V (default True)\n"
              "  ready                the same as condition=Ready\n"
              "  delete               the pod is gone\n"
              "Fails at once when the pod ends in a phase from which COND cannot come.\n"
              "\n"
              "  --for COND           what to wait for (required)\n"
              "  --timeout S          give up after S seconds (default 30; 0 checks once)\n" CLI_GLOBAL_HELP,
              f);
}

/* ---- calls -------------------------------------------------------------------- */

static char *pods_path(const char *ns, const char *name, const char *sub) {
        char *p = NULL;
        int n;
        if (!ns)
                n = asprintf(&p, "/api/v1/pods");
        else if (!name)
                n = asprintf(&p, "/api/v1/namespaces/%s/pods", ns);
        else
                n = asprintf(&p, "/api/v1/namespaces/%s/pods/%s%s%s", ns, name, sub ? "/" : "", sub ?: "");
        return n < 0 ? NULL : p;
}

/* The message of a Kubernetes Status answer, else the generic one. */
static int kube_error(const struct cli_response *resp, struct lg_error *err) {
        _cleanup_json_ json_t *doc = resp->body ? json_loadb(resp->body, resp->len, 0, NULL) : NULL;
        const char *msg = cli_jstr(doc, "message");
        if (msg && *msg && resp->status == 401)
                return lg_error_setm(err, EACCES, "%s (the API token: --token, LEGION_TOKEN, or "
                                     "$LEGION_HOME/admin.token)", msg);
        if (msg && *msg)
                return lg_error_setm(err, resp->status == 404 ? ENOENT : EIO, "%s", msg);
        return cli_http_error(resp, err);
}

/* One JSON call to the Pod API; on a 2xx answer resp->json holds the body. */
static int kcall(const char *method, const char *path, const json_t *body, const char *ctype,
                 struct cli_response *resp, struct lg_error *err) {
        _cleanup_free_ char *text = NULL;
        if (!path || (body && !(text = json_dumps(body, JSON_COMPACT))))
                return lg_error_set(err, ENOMEM, "request");
        static const char *const hdr[] = {"Accept: application/json", NULL};
        struct cli_request rq = {
                .method = method,
                .path = path,
                .body = text,
                .body_len = text ? strlen(text) : 0,
                .content_type = ctype ?: "application/json",
                .headers = hdr,
                .timeout_s = -1,
        };
        int r = cli_request(&rq, resp, err);
        if (r < 0)
                return r;
        if (resp->status < 200 || resp->status >= 300)
                return kube_error(resp, err);
        if (resp->len) {
                json_error_t je;
                if (!(resp->json = json_loadb(resp->body, resp->len, 0, &je)))
                        return lg_error_setm(err, EBADMSG, "%s %s: legiond sent malformed JSON: %s", method, path,
                                             je.text);
        }
        return 0;
}

/* GET one pod: 0 and *ret, or -ENOENT (err filled) when there is none. */
static int get_pod(const char *ns, const char *name, json_t **ret, struct lg_error *err) {
        _cleanup_free_ char *path = pods_path(ns, name, NULL);
        struct cli_response resp = {0};
        int r = kcall("GET", path, NULL, NULL, &resp, err);
        if (r >= 0 && !json_is_object(resp.json))
                r = lg_error_setm(err, EBADMSG, "legiond's answer for pod %s is not a JSON object", name);
        if (r >= 0)
                *ret = json_incref(resp.json);
        else if (resp.status == 404)
                r = -ENOENT;
        cli_response_done(&resp);
        return r;
}

/* ---- times -------------------------------------------------------------------- */

static const char *age(const char *stamp, char *buf, size_t cap) {
        return lg_kube_age(stamp, (int64_t) time(NULL), buf, cap);
}

/* "2026-01-02T03:04:05Z (5m ago)", or "-". */
static const char *when(const char *stamp, char *buf, size_t cap) {
        char a[32];
        if (!stamp)
                snprintf(buf, cap, "-");
        else
                snprintf(buf, cap, "%s (%s ago)", stamp, age(stamp, a, sizeof(a)));
        return buf;
}

/* ---- watching ------------------------------------------------------------------- */

/* An event handler returns 1 to stop watching (done), 0 for more, or a
 * negative errno with err filled. */
typedef int (*watch_cb)(void *ud, const char *type, const json_t *obj, struct lg_error *err);

struct watch {
        watch_cb cb;
        void *ud;
        char *buf;
        size_t len;
        int result;
        bool stop;
        struct lg_error err;
};

static int watch_line(struct watch *w, const char *line, size_t n) {
        while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
                n--;
        if (!n)
                return 0;
        json_error_t je;
        _cleanup_json_ json_t *ev = json_loadb(line, n, 0, &je);
        if (!json_is_object(ev))
                return lg_error_setm(&w->err, EBADMSG, "legiond sent a malformed watch event: %s", je.text);
        const char *type = cli_jstr(ev, "type") ?: "";
        const json_t *obj = json_object_get(ev, "object");
        if (!strcmp(type, "BOOKMARK"))
                return 0;
        return w->cb(w->ud, type, obj, &w->err);
}

static ssize_t watch_write(void *cookie, const char *data, size_t n) {
        struct watch *w = cookie;
        if (w->stop)
                return 0;
        char *p = realloc(w->buf, w->len + n + 1);
        if (!p) {
                w->stop = true;
                w->result = lg_error_set(&w->err, ENOMEM, "watch");
                return 0;
        }
        w->buf = p;
        memcpy(w->buf + w->len, data, n);
        w->len += n;
        size_t start = 0;
        for (;;) {
                char *nl = memchr(w->buf + start, '\n', w->len - start);
                if (!nl)
                        break;
                int r = watch_line(w, w->buf + start, (size_t) (nl - (w->buf + start)));
                start = (size_t) (nl - w->buf) + 1;
                if (r != 0) {
                        w->stop = true;
                        w->result = r;
                        return 0; /* ends the transfer */
                }
        }
        memmove(w->buf, w->buf + start, w->len - start);
        w->len -= start;
        return (ssize_t) n;
}

/* Watch path (a list URL with watch=true) for up to timeout_s seconds (0:
 * no limit). 1 when the handler said done, 0 when the watch ended or timed
 * out first, or a negative errno. */
static int watch_run(const char *path, long timeout_s, watch_cb cb, void *ud, struct lg_error *err) {
        struct watch w = {.cb = cb, .ud = ud};
        cookie_io_functions_t io = {.write = watch_write};
        FILE *f = fopencookie(&w, "w", io);
        if (!f)
                return lg_error_set(err, errno, "watch");
        setvbuf(f, NULL, _IONBF, 0);
        static const char *const hdr[] = {"Accept: application/json", NULL};
        struct cli_request rq = {.method = "GET", .path = path, .stream_2xx = f, .headers = hdr, .timeout_s = timeout_s};
        struct cli_response resp = {0};
        int r = cli_request(&rq, &resp, err);
        fclose(f);
        free(w.buf);
        if (w.stop) {
                if (w.result < 0)
                        lg_error_setm(err, -w.result, "%s", w.err.msg);
                r = w.result;
        } else if (r == -ETIMEDOUT) {
                r = 0;
        } else if (r >= 0 && (resp.status < 200 || resp.status >= 300)) {
                r = kube_error(&resp, err);
        } else if (r >= 0) {
                r = 0;
        }
        cli_response_done(&resp);
        return r;
}

/* What `wait` waits for. check() says 1 met, 0 not yet, or < 0 never. */
struct waiter {
        const char *name;
        enum { W_PHASE, W_CONDITION, W_DELETE } kind;
        const char *value;  /* phase, or condition type */
        const char *status; /* condition status wanted */
        bool gone;
        char last[160]; /* what the pod was at last, for the timeout message */
};

static bool terminal(const char *phase) { return !strcmp(phase, "Succeeded") || !strcmp(phase, "Failed"); }

static int check(struct waiter *w, const json_t *pod, struct lg_error *err) {
        const char *phase = cli_jstr(pod, "status.phase") ?: "Pending";
        struct lg_kube_pod_summary s;
        lg_kube_pod_summarize(pod, &s);
        snprintf(w->last, sizeof(w->last), "%s (%s)", phase, s.status);
        if (!strcmp(phase, s.status))
                snprintf(w->last, sizeof(w->last), "%s", phase);
        switch (w->kind) {
        case W_DELETE: return 0;
        case W_PHASE:
                if (!strcasecmp(phase, w->value))
                        return 1;
                if (terminal(phase))
                        return lg_error_setm(err, EIO, "pod/%s is %s and will never be %s", w->name, w->last, w->value);
                return 0;
        case W_CONDITION: {
                size_t i;
                json_t *c;
                json_array_foreach(json_object_get(json_object_get(pod, "status"), "conditions"), i, c)
                        if (!strcasecmp(cli_jstr(c, "type") ?: "", w->value) &&
                            !strcasecmp(cli_jstr(c, "status") ?: "", w->status))
                                return 1;
                if (terminal(phase) && !strcasecmp(w->status, "true") &&
                    (!strcasecmp(w->value, "Ready") || !strcasecmp(w->value, "ContainersReady")))
                        return lg_error_setm(err, EIO, "pod/%s is %s and will never be %s", w->name, w->last, w->value);
                return 0;
        }
        }
        return 0;
}

static int on_wait_event(void *ud, const char *type, const json_t *obj, struct lg_error *err) {
        struct waiter *w = ud;
        if (!strcmp(type, "ERROR")) {
                if (cli_jint(obj, "code", 0) == 410) /* expired resourceVersion: look again */
                        return 2;
                return lg_error_setm(err, EIO, "watch: %s", cli_jstr(obj, "message") ?: "error");
        }
        if (strcmp(cli_jstr(obj, "metadata.name") ?: "", w->name))
                return 0;
        if (!strcmp(type, "DELETED")) {
                w->gone = true;
                if (w->kind == W_DELETE)
                        return 1;
                return lg_error_setm(err, ENOENT, "pod/%s was deleted while waiting", w->name);
        }
        return check(w, obj, err);
}

/* Wait until w is met, for at most timeout_s seconds (0: check once; < 0:
 * no limit). */
static int wait_for(const char *ns, struct waiter *w, long long timeout_s, struct lg_error *err) {
        uint64_t deadline = lg_now_ns() + (uint64_t) (timeout_s > 0 ? timeout_s : 0) * 1000000000ull;
        _cleanup_free_ char *fs = NULL;
        if (asprintf(&fs, "metadata.name=%s", w->name) < 0)
                return lg_error_set(err, ENOMEM, "selector");
        _cleanup_free_ char *fse = cli_url_escape(fs);
        _cleanup_free_ char *list = pods_path(ns, NULL, NULL);
        if (!fse || !list)
                return lg_error_set(err, ENOMEM, "selector");
        for (;;) {
                _cleanup_json_ json_t *pod = NULL;
                int r = get_pod(ns, w->name, &pod, err);
                if (r == -ENOENT) {
                        if (w->kind == W_DELETE)
                                return 0;
                        return r;
                }
                if (r < 0)
                        return r;
                if ((r = check(w, pod, err)) != 0)
                        return r < 0 ? r : 0;
                long left = 0;
                if (timeout_s >= 0) {
                        uint64_t now = lg_now_ns();
                        if (now >= deadline)
                                break;
                        left = (long) ((deadline - now + 999999999ull) / 1000000000ull);
                }
                /* The server ends a watch after timeoutSeconds; look again then. */
                long wt = left > 0 && left < 300 ? left : 300;
                _cleanup_free_ char *path = NULL;
                const char *rv = cli_jstr(pod, "metadata.resourceVersion");
                _cleanup_free_ char *rve = rv ? cli_url_escape(rv) : NULL;
                if (asprintf(&path, "%s?watch=true&fieldSelector=%s&timeoutSeconds=%ld%s%s", list, fse, wt,
                             rve ? "&resourceVersion=" : "", rve ?: "") < 0)
                        return lg_error_set(err, ENOMEM, "path");
                r = watch_run(path, left > 0 ? left + 1 : 0, on_wait_event, w, err);
                if (r < 0)
                        return r;
                if (r == 1)
                        return 0;
                /* r == 2 (expired) or the watch ended: look again. */
        }
        if (w->kind == W_DELETE)
                return lg_error_setm(err, ETIMEDOUT, "timed out waiting for pod/%s to be gone", w->name);
        return lg_error_setm(err, ETIMEDOUT, "timed out waiting for pod/%s to be %s%s%s; it is %s", w->name,
                             w->kind == W_PHASE ? "" : "condition ", w->value,
                             w->kind == W_CONDITION && strcasecmp(w->status, "true") ? "=" : "",
                             w->last);
}

/* ---- apply ---------------------------------------------------------------------- */

/* The documents of a manifest, as an array; Lists are flattened. */
static int parse_manifest(const char *file, json_t **ret, struct lg_error *err) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = cli_read_file(file, 16, &buf, &len, err);
        if (r < 0)
                return r;
        size_t i = strspn(buf, " \t\r\n");
        _cleanup_json_ json_t *docs = NULL;
        if (buf[i] == '{' || buf[i] == '[') {
                json_error_t je;
                json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
                if (!doc)
                        return lg_error_setm(err, EINVAL, "%s: line %d: %s", file, je.line, je.text);
                if (json_is_array(doc)) {
                        docs = doc;
                } else {
                        docs = json_array();
                        json_array_append_new(docs, doc);
                }
        } else if ((r = lg_yaml_to_json(buf, len, &docs, err)) < 0) {
                return lg_error_wrap(err, r, "%s", file);
        }
        json_t *out = json_array(), *d;
        json_array_foreach(docs, i, d) {
                const char *kind = cli_jstr(d, "kind");
                if (kind && !strcmp(kind, "List") && json_is_array(json_object_get(d, "items")))
                        json_array_extend(out, json_object_get(d, "items"));
                else
                        json_array_append(out, d);
        }
        if (!json_array_size(out)) {
                json_decref(out);
                return lg_error_setm(err, EINVAL, "%s: no objects in the manifest", file);
        }
        *ret = out;
        return 0;
}

static bool empty(const json_t *v) {
        return !v || json_is_null(v) || (json_is_object(v) && !json_object_size(v)) ||
               (json_is_array(v) && !json_array_size(v));
}

/* Is every field of want (a manifest's spec) the same in have (the stored,
 * defaulted spec)? false, with path naming the first that is not. */
static bool same_fields(const json_t *want, const json_t *have, char *path, size_t cap) {
        size_t n = strlen(path);
        if (json_is_object(want)) {
                if (!json_is_object(have))
                        return empty(want) && empty(have);
                const char *k;
                json_t *v;
                json_object_foreach((json_t *) want, k, v) {
                        snprintf(path + n, cap - n, ".%s", k);
                        const json_t *h = json_object_get(have, k);
                        if (!h ? !empty(v) : !same_fields(v, h, path, cap))
                                return false;
                }
                path[n] = '\0';
                return true;
        }
        if (json_is_array(want)) {
                if (!json_is_array(have) || json_array_size(want) != json_array_size(have))
                        return empty(want) && empty(have);
                for (size_t i = 0; i < json_array_size(want); i++) {
                        snprintf(path + n, cap - n, "[%zu]", i);
                        if (!same_fields(json_array_get(want, i), json_array_get(have, i), path, cap))
                                return false;
                }
                path[n] = '\0';
                return true;
        }
        if (json_equal((json_t *) want, (json_t *) have))
                return true;
        if (json_is_number(want) && json_is_number(have))
                return json_number_value(want) == json_number_value(have);
        /* Quantities the server wrote in another form: "0.5" and "500m". */
        int cmp;
        if (lg_kube_quantity_cmp(want, have, &cmp) == 0 && cmp == 0)
                return true;
        return empty(want) && empty(have);
}

/* The merge patch that makes live's labels (or annotations) those of want. */
static void patch_map(json_t *meta_patch, const char *field, const json_t *want, const json_t *live) {
        json_t *p = json_object();
        const char *k;
        json_t *v;
        json_object_foreach((json_t *) want, k, v)
                if (!json_equal(v, json_object_get(live, k)))
                        json_object_set(p, k, v);
        json_object_foreach((json_t *) live, k, v)
                if (!json_object_get(want, k) && strncmp(k, "kubectl.kubernetes.io/", 22))
                        json_object_set_new(p, k, json_null());
        if (json_object_size(p))
                json_object_set_new(meta_patch, field, p);
        else
                json_decref(p);
}

/* Send a pod (or a patch of one) and say what became of it: the answer
 * with --json, else "pod/NAME done". */
static int send_pod(const char *method, const char *path, const json_t *body, const char *ctype, const char *name,
                    const char *done, struct lg_error *err) {
        struct cli_response resp = {0};
        int r = kcall(method, path, body, ctype, &resp, err);
        if (r >= 0 && cli_globals.json)
                cli_print_json_body(&resp);
        else if (r >= 0)
                printf("pod/%s %s\n", name, done);
        cli_response_done(&resp);
        return r;
}

static int apply_one(json_t *doc, struct lg_error *err) {
        if (!json_is_object(doc))
                return lg_error_setm(err, EINVAL, "an object in the manifest is not a mapping");
        const char *kind = cli_jstr(doc, "kind"), *api = cli_jstr(doc, "apiVersion");
        if (!kind || strcmp(kind, "Pod") || !api || strcmp(api, "v1"))
                return lg_error_setm(err, EINVAL, "`apiVersion: %s, kind: %s` is not supported: legion pod apply takes "
                                     "Pods (apiVersion: v1, kind: Pod)", api ?: "(none)", kind ?: "(none)");
        const char *name = cli_jstr(doc, "metadata.name");
        if (!name)
                return lg_error_setm(err, EINVAL, "a Pod in the manifest has no metadata.name");
        int r = cli_check_name("pod", name, err);
        if (r < 0)
                return r;
        const char *ns = cli_jstr(doc, "metadata.namespace");
        if (ns && cli_globals.ns && *cli_globals.ns && strcmp(ns, cli_globals.ns))
                return lg_error_setm(err, EINVAL, "pod/%s: the manifest's namespace `%s` is not `%s` (--ns)", name, ns,
                                     cli_globals.ns);
        if (!ns)
                ns = cli_ns();
        if ((r = cli_check_name("namespace", ns, err)) < 0)
                return r;
        _cleanup_json_ json_t *live = NULL;
        r = get_pod(ns, name, &live, err);
        if (r == -ENOENT) {
                _cleanup_free_ char *path = pods_path(ns, NULL, NULL);
                return send_pod("POST", path, doc, NULL, name, "created", err);
        }
        if (r < 0)
                return r;
        if (cli_jstr(live, "metadata.deletionTimestamp"))
                return lg_error_setm(err, EBUSY, "pod/%s is being deleted; apply again when it is gone", name);
        char where[512] = "spec";
        if (!same_fields(json_object_get(doc, "spec"), json_object_get(live, "spec"), where, sizeof(where)))
                return lg_error_setm(err, EINVAL,
                                     "pod/%s: %s differs from the existing pod's, and a pod's spec cannot change "
                                     "(delete the pod and apply again)", name, where);
        const json_t *meta = json_object_get(doc, "metadata"), *lmeta = json_object_get(live, "metadata");
        _cleanup_json_ json_t *mp = json_object();
        patch_map(mp, "labels", json_object_get(meta, "labels"), json_object_get(lmeta, "labels"));
        patch_map(mp, "annotations", json_object_get(meta, "annotations"), json_object_get(lmeta, "annotations"));
        if (!json_object_size(mp)) {
                if (cli_globals.json)
                        json_dumpf(live, stdout, JSON_COMPACT), putchar('\n');
                else
                        printf("pod/%s unchanged\n", name);
                return 0;
        }
        _cleanup_json_ json_t *patch = json_pack("{s:O}", "metadata", mp);
        _cleanup_free_ char *path = pods_path(ns, name, NULL);
        return send_pod("PATCH", path, patch, "application/merge-patch+json", name, "configured", err);
}

static int pod_apply(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {
                {"filename", required_argument, NULL, 'f'},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        const char *file = NULL;
        int c;
        while ((c = cli_getopt(argc, argv, ":hf:", opts)) != -1) {
                switch (c) {
                case 'f':
                        if (file)
                                return cli_usage_error(apply_usage, "give -f once");
                        file = optarg;
                        break;
                case 'h': apply_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, apply_usage);
                }
        }
        if (optind != argc)
                return cli_usage_error(apply_usage, "unexpected argument `%s`", argv[optind]);
        if (!file)
                return cli_usage_error(apply_usage, "no manifest given: use -f FILE (or -f - for stdin)");
        _cleanup_json_ json_t *docs = NULL;
        int r = parse_manifest(file, &docs, err);
        if (r < 0)
                return r;
        /* Every object is tried; each failure is reported, the last returned. */
        int ret = 0;
        size_t i;
        json_t *d;
        json_array_foreach(docs, i, d) {
                struct lg_error e = {0};
                fflush(stdout);
                if ((r = apply_one(d, &e)) < 0) {
                        if (ret < 0)
                                fprintf(stderr, "legion: %s\n", err->msg);
                        ret = r;
                        *err = e;
                }
        }
        return ret;
}

/* ---- run ------------------------------------------------------------------------ */

static int add_kv(json_t *obj, const char *kv, const char *what, void (*usage)(FILE *)) {
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv)
                return cli_usage_error(usage, "%s is K=V, not `%s`", what, kv);
        _cleanup_free_ char *key = strndup(kv, (size_t) (eq - kv));
        json_t *v = json_string(eq + 1);
        if (!key || !v)
                return cli_usage_error(usage, "%s `%s` is not UTF-8 text", what, kv);
        json_object_set_new(obj, key, v);
        return 0;
}

static int pod_run(int argc, char **argv, struct lg_error *err) {
        enum { OPT_IMAGE = 1, OPT_RESTART, OPT_MEM, OPT_CPU, OPT_ENV, OPT_LABEL, OPT_COMMAND, OPT_PULL, OPT_DRY };
        static const struct option opts[] = {
                {"image", required_argument, NULL, OPT_IMAGE},   {"restart", required_argument, NULL, OPT_RESTART},
                {"memory", required_argument, NULL, OPT_MEM},    {"cpu", required_argument, NULL, OPT_CPU},
                {"env", required_argument, NULL, OPT_ENV},       {"label", required_argument, NULL, OPT_LABEL},
                {"labels", required_argument, NULL, OPT_LABEL},  {"command", no_argument, NULL, OPT_COMMAND},
                {"image-pull-policy", required_argument, NULL, OPT_PULL},
                {"dry-run", no_argument, NULL, OPT_DRY},         {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,                              {0, 0, 0, 0},
        };
        const char *image = NULL, *restart = "Always", *mem = NULL, *cpu = NULL, *pull = NULL;
        bool command = false, dry = false;
        _cleanup_json_ json_t *env = json_object(), *labels = json_object();
        _cleanup_json_ json_t *env_order = json_array(); /* in the order given */
        int c;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case OPT_IMAGE: image = optarg; break;
                case OPT_RESTART:
                        if (strcmp(optarg, "Always") && strcmp(optarg, "OnFailure") && strcmp(optarg, "Never"))
                                return cli_usage_error(run_usage, "--restart is Always, OnFailure or Never, not `%s`",
                                                       optarg);
                        restart = optarg;
                        break;
                case OPT_MEM: mem = optarg; break;
                case OPT_CPU: cpu = optarg; break;
                case OPT_PULL: pull = optarg; break;
                case OPT_ENV: {
                        if (add_kv(env, optarg, "--env", run_usage))
                                return 2;
                        json_array_append_new(env_order, json_string(optarg));
                        break;
                }
                case OPT_LABEL: {
                        _cleanup_free_ char *copy = strdup(optarg);
                        char *save = NULL;
                        for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save))
                                if (add_kv(labels, kv, "a label", run_usage))
                                        return 2;
                        break;
                }
                case OPT_COMMAND: command = true; break;
                case OPT_DRY: dry = true; break;
                case 'h': run_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, run_usage);
                }
        }
        if (optind >= argc)
                return cli_usage_error(run_usage, "no pod name given");
        if (!image || !*image)
                return cli_usage_error(run_usage, "--image is required");
        if (command && optind + 1 >= argc)
                return cli_usage_error(run_usage, "--command needs CMD after the name");
        const char *name = argv[optind];
        int r = cli_check_name("pod", name, err);
        if (r < 0)
                return r;
        if (!json_object_size(labels))
                json_object_set_new(labels, "run", json_string(name));

        json_t *ctr = json_pack("{s:s, s:s}", "name", name, "image", image);
        _cleanup_json_ json_t *pod = json_pack("{s:s, s:s, s:{s:s, s:O}, s:{s:[o], s:s}}", "apiVersion", "v1", "kind",
                                               "Pod", "metadata", "name", name, "labels", labels, "spec",
                                               "containers", ctr, "restartPolicy", restart);
        if (!pod)
                return lg_error_setm(err, EINVAL, "the name or image is not UTF-8 text");
        if (optind + 1 < argc) {
                json_t *args = json_array();
                for (int i = optind + 1; i < argc; i++) {
                        json_t *s = json_string(argv[i]);
                        if (!s) {
                                json_decref(args);
                                return lg_error_setm(err, EINVAL, "argument %d is not UTF-8 text", i - optind);
                        }
                        json_array_append_new(args, s);
                }
                json_object_set_new(ctr, command ? "command" : "args", args);
        }
        if (json_array_size(env_order)) {
                json_t *list = json_array();
                size_t i;
                json_t *kv;
                json_array_foreach(env_order, i, kv) {
                        const char *s = json_string_value(kv), *eq = strchr(s, '=');
                        json_array_append_new(list, json_pack("{s:s%, s:s}", "name", s, (size_t) (eq - s), "value", eq + 1));
                }
                json_object_set_new(ctr, "env", list);
        }
        if (mem || cpu) {
                json_t *lim = json_object();
                if (mem)
                        json_object_set_new(lim, "memory", json_string(mem));
                if (cpu)
                        json_object_set_new(lim, "cpu", json_string(cpu));
                json_object_set_new(ctr, "resources", json_pack("{s:o}", "limits", lim));
        }
        if (pull)
                json_object_set_new(ctr, "imagePullPolicy", json_string(pull));
        if (dry) {
                json_dumpf(pod, stdout, JSON_INDENT(2));
                putchar('\n');
                return 0;
        }
        _cleanup_free_ char *path = pods_path(cli_ns(), NULL, NULL);
        return send_pod("POST", path, pod, NULL, name, "created", err);
}

/* ---- list, get -------------------------------------------------------------------- */

static int pod_list(int argc, char **argv, struct lg_error *err) {
        enum { OPT_FIELD = 1 };
        static const struct option opts[] = {
                {"selector", required_argument, NULL, 'l'},       {"field-selector", required_argument, NULL, OPT_FIELD},
                {"all-namespaces", no_argument, NULL, 'A'},       {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,                               {0, 0, 0, 0},
        };
        const char *sel = NULL, *fsel = NULL;
        bool all = false;
        int c;
        while ((c = cli_getopt(argc, argv, ":hl:A", opts)) != -1) {
                switch (c) {
                case 'l': sel = optarg; break;
                case OPT_FIELD: fsel = optarg; break;
                case 'A': all = true; break;
                case 'h': list_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, list_usage);
                }
        }
        if (optind != argc)
                return cli_usage_error(list_usage, "unexpected argument `%s`", argv[optind]);
        int r;
        if (!all && (r = cli_check_name("namespace", cli_ns(), err)) < 0)
                return r;
        _cleanup_free_ char *base = pods_path(all ? NULL : cli_ns(), NULL, NULL);
        _cleanup_free_ char *se = sel ? cli_url_escape(sel) : NULL, *fe = fsel ? cli_url_escape(fsel) : NULL;
        _cleanup_free_ char *path = NULL;
        if (!base || (sel && !se) || (fsel && !fe) ||
            asprintf(&path, "%s%s%s%s%s%s", base, se || fe ? "?" : "", se ? "labelSelector=" : "", se ?: "",
                     se && fe ? "&" : "", fe ? "fieldSelector=" : "") < 0)
                return lg_error_set(err, ENOMEM, "path");
        _cleanup_free_ char *full = NULL;
        if (asprintf(&full, "%s%s", path, fe ?: "") < 0)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_response resp = {0};
        r = kcall("GET", full, NULL, NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                static const char *const head[] = {"NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"};
                struct cli_table *t = cli_table_new(all ? 6 : 5, all ? head : head + 1);
                json_t *items = json_object_get(resp.json, "items"), *pod;
                size_t i;
                json_array_foreach(items, i, pod) {
                        struct lg_kube_pod_summary s;
                        lg_kube_pod_summarize(pod, &s);
                        char ready[32], restarts[64], a[32];
                        snprintf(ready, sizeof(ready), "%d/%d", s.ready, s.total);
                        lg_kube_pod_restarts(&s, (int64_t) time(NULL), restarts, sizeof(restarts));
                        const char *row[] = {cli_jstr(pod, "metadata.namespace"), cli_jstr(pod, "metadata.name"), ready,
                                             s.status, restarts,
                                             age(cli_jstr(pod, "metadata.creationTimestamp"), a, sizeof(a))};
                        cli_table_add(t, all ? row : row + 1);
                }
                if (json_array_size(items))
                        cli_table_print(t, stdout);
                else if (all)
                        fprintf(stderr, "No resources found\n");
                else
                        fprintf(stderr, "No resources found in %s namespace.\n", cli_ns());
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r;
}

static void print_state(const char *label, const json_t *state) {
        char a[96], b[96];
        const json_t *v;
        if ((v = json_object_get(state, "running"))) {
                printf("    %-15s Running, started %s\n", label, when(cli_jstr(v, "startedAt"), a, sizeof(a)));
        } else if ((v = json_object_get(state, "terminated"))) {
                printf("    %-15s Terminated: %s, exit code %lld", label, cli_jstr(v, "reason") ?: "-",
                       cli_jint(v, "exitCode", 0));
                if (cli_jint(v, "signal", 0))
                        printf(", signal %lld", cli_jint(v, "signal", 0));
                printf("\n    %-15s started %s, finished %s\n", "", when(cli_jstr(v, "startedAt"), a, sizeof(a)),
                       when(cli_jstr(v, "finishedAt"), b, sizeof(b)));
                if (cli_jstr(v, "message") && *cli_jstr(v, "message"))
                        printf("    %-15s message: %s\n", "", cli_jstr(v, "message"));
        } else if ((v = json_object_get(state, "waiting"))) {
                printf("    %-15s Waiting: %s\n", label, cli_jstr(v, "reason") ?: "-");
                if (cli_jstr(v, "message") && *cli_jstr(v, "message"))
                        printf("    %-15s message: %s\n", "", cli_jstr(v, "message"));
        } else {
                printf("    %-15s -\n", label);
        }
}

static void print_strings(const char *label, const json_t *arr) {
        if (!json_array_size(arr))
                return;
        printf("    %-15s", label);
        size_t i;
        json_t *s;
        json_array_foreach(arr, i, s) printf(" %s", json_string_value(s) ?: "?");
        putchar('\n');
}

static void print_map(const char *label, const json_t *map) {
        printf("%-15s ", label);
        const char *k;
        json_t *v;
        bool first = true;
        json_object_foreach((json_t *) map, k, v) {
                printf("%s%s=%s", first ? "" : ", ", k, json_string_value(v) ?: "");
                first = false;
        }
        puts(first ? "<none>" : "");
}

static void print_pod(const json_t *pod) {
        char a[96], b[96];
        const json_t *meta = json_object_get(pod, "metadata"), *spec = json_object_get(pod, "spec"),
                     *st = json_object_get(pod, "status");
        struct lg_kube_pod_summary s;
        lg_kube_pod_summarize(pod, &s);
        printf("%-15s %s\n", "Name:", cli_jstr(meta, "name") ?: "-");
        printf("%-15s %s\n", "Namespace:", cli_jstr(meta, "namespace") ?: "-");
        print_map("Labels:", json_object_get(meta, "labels"));
        printf("%-15s %s (%s; %d/%d ready, %lld restarts)\n", "Status:", s.status, cli_jstr(st, "phase") ?: "-",
               s.ready, s.total, (long long) s.restarts);
        if (cli_jstr(st, "reason"))
                printf("%-15s %s\n", "Reason:", cli_jstr(st, "reason"));
        if (cli_jstr(st, "message"))
                printf("%-15s %s\n", "Message:", cli_jstr(st, "message"));
        printf("%-15s %s\n", "Created:", when(cli_jstr(meta, "creationTimestamp"), a, sizeof(a)));
        printf("%-15s %s\n", "Started:", when(cli_jstr(st, "startTime"), b, sizeof(b)));
        if (cli_jstr(meta, "deletionTimestamp"))
                printf("%-15s %s (grace %lld s)\n", "Deleting:", cli_jstr(meta, "deletionTimestamp"),
                       cli_jint(meta, "deletionGracePeriodSeconds", 0));
        printf("%-15s %s\n", "Restart policy:", cli_jstr(spec, "restartPolicy") ?: "-");
        if (cli_jstr(spec, "nodeName"))
                printf("%-15s %s\n", "Node:", cli_jstr(spec, "nodeName"));
        if (cli_jstr(st, "podIP"))
                printf("%-15s %s\n", "IP:", cli_jstr(st, "podIP"));
        puts("Containers:");
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(spec, "containers"), i, c) {
                const char *cname = cli_jstr(c, "name") ?: "?";
                const json_t *cs = NULL, *x;
                size_t j;
                json_array_foreach(json_object_get(st, "containerStatuses"), j, x)
                        if (!strcmp(cli_jstr(x, "name") ?: "", cname))
                                cs = x;
                printf("  %s:\n", cname);
                printf("    %-15s %s\n", "Image:", cli_jstr(c, "image") ?: "-");
                if (cli_jstr(cs, "imageID") && *cli_jstr(cs, "imageID"))
                        printf("    %-15s %s\n", "Image ID:", cli_jstr(cs, "imageID"));
                print_strings("Command:", json_object_get(c, "command"));
                print_strings("Args:", json_object_get(c, "args"));
                const json_t *lim = json_object_get(json_object_get(c, "resources"), "limits");
                if (json_object_size(lim)) {
                        printf("    ");
                        print_map("Limits:", lim);
                }
                print_state("State:", json_object_get(cs, "state"));
                if (json_object_size(json_object_get(cs, "lastState")))
                        print_state("Last state:", json_object_get(cs, "lastState"));
                printf("    %-15s %s\n", "Ready:", json_is_true(json_object_get(cs, "ready")) ? "True" : "False");
                printf("    %-15s %lld\n", "Restart count:", cli_jint(cs, "restartCount", 0));
        }
        const json_t *conds = json_object_get(st, "conditions");
        if (json_array_size(conds)) {
                puts("Conditions:");
                json_array_foreach(conds, i, c)
                        printf("  %-17s %s%s%s\n", cli_jstr(c, "type") ?: "?", cli_jstr(c, "status") ?: "?",
                               cli_jstr(c, "reason") ? "  " : "", cli_jstr(c, "reason") ?: "");
        }
}

/* Verbs that take exactly one pod name and only the given options. */
static int one_name(int argc, char **argv, void (*usage)(FILE *), const char **name, struct lg_error *err) {
        if (optind >= argc)
                return cli_usage_error(usage, "no pod name given");
        if (optind + 1 < argc)
                return cli_usage_error(usage, "unexpected argument `%s`", argv[optind + 1]);
        *name = argv[optind];
        int r = cli_check_name("pod", *name, err);
        return r < 0 ? r : cli_check_name("namespace", cli_ns(), err);
}

static int pod_get(int argc, char **argv, struct lg_error *err) {
        int r = cli_no_options(argc, argv, get_usage);
        if (r)
                return r == 1 ? 0 : r;
        const char *name;
        if ((r = one_name(argc, argv, get_usage, &name, err)))
                return r;
        _cleanup_free_ char *path = pods_path(cli_ns(), name, NULL);
        struct cli_response resp = {0};
        r = kcall("GET", path, NULL, NULL, &resp, err);
        if (r >= 0 && cli_globals.json)
                cli_print_json_body(&resp);
        else if (r >= 0)
                print_pod(resp.json);
        cli_response_done(&resp);
        return r;
}

/* ---- logs ----------------------------------------------------------------------- */

static int pod_logs(int argc, char **argv, struct lg_error *err) {
        enum { OPT_TAIL = 1, OPT_TS };
        static const struct option opts[] = {
                {"container", required_argument, NULL, 'c'}, {"follow", no_argument, NULL, 'f'},
                {"tail", required_argument, NULL, OPT_TAIL},  {"previous", no_argument, NULL, 'p'},
                {"timestamps", no_argument, NULL, OPT_TS},    {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,                           {0, 0, 0, 0},
        };
        const char *container = NULL;
        bool follow = false, previous = false, ts = false;
        long long tail = -1;
        int c;
        while ((c = cli_getopt(argc, argv, ":hc:fp", opts)) != -1) {
                switch (c) {
                case 'c': container = optarg; break;
                case 'f': follow = true; break;
                case 'p': previous = true; break;
                case OPT_TS: ts = true; break;
                case OPT_TAIL:
                        if (cli_parse_uint(optarg, 100000000, &tail) < 0)
                                return cli_usage_error(logs_usage, "--tail needs a whole number of lines, not `%s`",
                                                       optarg);
                        break;
                case 'h': logs_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, logs_usage);
                }
        }
        const char *name;
        int r = one_name(argc, argv, logs_usage, &name, err);
        if (r)
                return r;
        if (container && (r = cli_check_name("container", container, err)) < 0)
                return r;
        _cleanup_free_ char *base = pods_path(cli_ns(), name, "log"), *path = NULL;
        char q[256] = "";
        if (container)
                snprintf(q + strlen(q), sizeof(q) - strlen(q), "&container=%s", container);
        if (follow)
                snprintf(q + strlen(q), sizeof(q) - strlen(q), "&follow=true");
        if (previous)
                snprintf(q + strlen(q), sizeof(q) - strlen(q), "&previous=true");
        if (ts)
                snprintf(q + strlen(q), sizeof(q) - strlen(q), "&timestamps=true");
        if (tail >= 0)
                snprintf(q + strlen(q), sizeof(q) - strlen(q), "&tailLines=%lld", tail);
        if (!base || asprintf(&path, "%s%s%s", base, *q ? "?" : "", *q ? q + 1 : "") < 0)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_request rq = {.method = "GET", .path = path, .stream_2xx = stdout, .timeout_s = follow ? 0 : -1};
        struct cli_response resp = {0};
        r = cli_request(&rq, &resp, err);
        if (r >= 0 && (resp.status < 200 || resp.status >= 300))
                r = kube_error(&resp, err);
        cli_response_done(&resp);
        return r;
}

/* ---- delete, wait ---------------------------------------------------------------- */

static int pod_delete(int argc, char **argv, struct lg_error *err) {
        enum { OPT_GRACE = 1, OPT_NOW, OPT_WAIT, OPT_NOWAIT, OPT_TIMEOUT, OPT_IGNORE };
        static const struct option opts[] = {
                {"grace", required_argument, NULL, OPT_GRACE},   {"grace-period", required_argument, NULL, OPT_GRACE},
                {"now", no_argument, NULL, OPT_NOW},             {"wait", no_argument, NULL, OPT_WAIT},
                {"no-wait", no_argument, NULL, OPT_NOWAIT},      {"timeout", required_argument, NULL, OPT_TIMEOUT},
                {"ignore-not-found", no_argument, NULL, OPT_IGNORE}, {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,                              {0, 0, 0, 0},
        };
        long long grace = -1, timeout = -1;
        bool wait = true, ignore = false;
        int c;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case OPT_GRACE:
                        if (cli_parse_uint(optarg, 100000000, &grace) < 0)
                                return cli_usage_error(delete_usage, "--grace needs a whole number of seconds, not `%s`",
                                                       optarg);
                        break;
                case OPT_NOW: grace = 1; break;
                case OPT_WAIT: wait = true; break;
                case OPT_NOWAIT: wait = false; break;
                case OPT_IGNORE: ignore = true; break;
                case OPT_TIMEOUT:
                        if (cli_parse_uint(optarg, 100000000, &timeout) < 0)
                                return cli_usage_error(delete_usage, "--timeout needs a whole number of seconds, not `%s`",
                                                       optarg);
                        break;
                case 'h': delete_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, delete_usage);
                }
        }
        if (optind >= argc)
                return cli_usage_error(delete_usage, "no pod name given");
        int r;
        for (int i = optind; i < argc; i++)
                if ((r = cli_check_name("pod", argv[i], err)) < 0)
                        return r;
        if ((r = cli_check_name("namespace", cli_ns(), err)) < 0)
                return r;
        _cleanup_json_ json_t *opts_doc = json_pack("{s:s, s:s}", "kind", "DeleteOptions", "apiVersion", "v1");
        if (grace >= 0)
                json_object_set_new(opts_doc, "gracePeriodSeconds", json_integer(grace));
        int ret = 0;
        for (int i = optind; i < argc; i++) {
                const char *name = argv[i];
                _cleanup_free_ char *base = pods_path(cli_ns(), name, NULL), *path = NULL;
                if (!base || asprintf(&path, grace >= 0 ? "%s?gracePeriodSeconds=%lld" : "%s", base, grace) < 0)
                        return lg_error_set(err, ENOMEM, "path");
                struct cli_response resp = {0};
                struct lg_error e = {0};
                r = kcall("DELETE", path, opts_doc, NULL, &resp, &e);
                long long pod_grace = cli_jint(resp.json, "metadata.deletionGracePeriodSeconds",
                                               cli_jint(resp.json, "spec.terminationGracePeriodSeconds", 30));
                if (r >= 0 && cli_globals.json)
                        cli_print_json_body(&resp);
                else if (r >= 0)
                        printf("pod \"%s\" deleted\n", name);
                bool missing = resp.status == 404;
                cli_response_done(&resp);
                if (r < 0 && missing && ignore)
                        continue;
                if (r >= 0 && wait) {
                        fflush(stdout);
                        struct waiter w = {.name = name, .kind = W_DELETE};
                        long long t = timeout >= 0 ? timeout : (grace >= 0 ? grace : pod_grace) + 60;
                        r = wait_for(cli_ns(), &w, t, &e);
                }
                if (r < 0) {
                        if (ret < 0)
                                fprintf(stderr, "legion: %s\n", err->msg);
                        *err = e;
                        ret = r;
                }
        }
        return ret;
}

static int pod_wait(int argc, char **argv, struct lg_error *err) {
        enum { OPT_FOR = 1, OPT_TIMEOUT };
        static const struct option opts[] = {
                {"for", required_argument, NULL, OPT_FOR}, {"timeout", required_argument, NULL, OPT_TIMEOUT},
                {"help", no_argument, NULL, 'h'},          CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        const char *cond = NULL;
        long long timeout = 30;
        int c;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case OPT_FOR: cond = optarg; break;
                case OPT_TIMEOUT:
                        if (cli_parse_seconds(optarg, 100000000, &timeout) < 0)
                                return cli_usage_error(wait_usage, "--timeout needs a whole number of seconds, not `%s`",
                                                       optarg);
                        break;
                case 'h': wait_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, wait_usage);
                }
        }
        const char *name;
        int r = one_name(argc, argv, wait_usage, &name, err);
        if (r)
                return r;
        if (!cond)
                return cli_usage_error(wait_usage, "--for is required (phase=Running, condition=Ready, delete)");
        static const char *const phases[] = {"Pending", "Running", "Succeeded", "Failed", "Unknown"};
        struct waiter w = {.name = name, .status = "True"};
        char ctype[128], cstat[16] = "True";
        if (!strcmp(cond, "delete")) {
                w.kind = W_DELETE;
        } else if (!strcmp(cond, "ready")) {
                w.kind = W_CONDITION;
                w.value = "Ready";
        } else if (!strncmp(cond, "phase=", 6) || !strncmp(cond, "jsonpath={.status.phase}=", 25)) {
                w.kind = W_PHASE;
                const char *want = strchr(cond, '}') ? strchr(cond, '}') + 2 : cond + 6;
                for (size_t i = 0; i < ARRAY_SIZE(phases); i++)
                        if (!strcasecmp(want, phases[i]))
                                w.value = phases[i];
                if (!w.value)
                        return cli_usage_error(wait_usage, "unknown phase `%s`: Pending, Running, Succeeded or Failed",
                                               want);
        } else if (!strncmp(cond, "condition=", 10) && cond[10] && cond[10] != '=') {
                w.kind = W_CONDITION;
                snprintf(ctype, sizeof(ctype), "%s", cond + 10);
                char *eq = strchr(ctype, '=');
                if (eq) {
                        *eq = '\0';
                        if (strcasecmp(eq + 1, "true") && strcasecmp(eq + 1, "false"))
                                return cli_usage_error(wait_usage, "a condition's status is True or False, not `%s`",
                                                       eq + 1);
                        snprintf(cstat, sizeof(cstat), "%s", eq + 1);
                }
                w.value = ctype;
                w.status = cstat;
        } else {
                return cli_usage_error(wait_usage, "--for takes phase=P, condition=C[=V], ready or delete, not `%s`",
                                       cond);
        }
        r = wait_for(cli_ns(), &w, timeout, err);
        if (r >= 0)
                printf("pod/%s condition met\n", name);
        return r;
}

int cmd_pod(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"apply", pod_apply},   {"create", pod_apply}, {"run", pod_run},       {"list", pod_list},
                {"ls", pod_list},       {"get", pod_get},      {"describe", pod_get},  {"show", pod_get},
                {"logs", pod_logs},     {"log", pod_logs},     {"delete", pod_delete}, {"rm", pod_delete},
                {"wait", pod_wait},
        };
        return cli_run_group("pod", verbs, ARRAY_SIZE(verbs), pod_usage, argc, argv);
}
