/* The PodStatus of a pod as Kubernetes shapes it (phase by kubelet's rules,
 * conditions with transition times, qosClass, containerStatuses), written
 * back to the store read-modify-write so the API's deletionTimestamp and
 * deletionGracePeriodSeconds stay, and only when something changed. */
#include <errno.h>
#include <string.h>

#include "pod/pods-internal.h"

enum { COND_INITIALIZED, COND_READY, COND_CONTAINERS_READY, COND_SCHEDULED };
static const char *const cond_names[] = {"Initialized", "Ready", "ContainersReady", "PodScheduled"};

static const char *pod_phase(const struct pod *pod) {
        if (pod->deadline_exceeded)
                return "Failed";
        unsigned waiting = 0, running = 0, stopped = 0, succeeded = 0;
        for (size_t i = 0; i < pod->n_ctrs; i++) {
                const struct ctr *c = &pod->ctrs[i];
                const json_t *term = json_object_get(c->state, "terminated");
                if (json_object_get(c->state, "running"))
                        running++;
                else if (term) {
                        stopped++;
                        if (json_integer_value(json_object_get(term, "exitCode")) == 0)
                                succeeded++;
                } else if (json_object_get(c->last_state, "terminated"))
                        stopped++;
                else
                        waiting++;
        }
        if (waiting > 0)
                return "Pending";
        if (running > 0)
                return "Running";
        if (stopped == 0)
                return "Pending";
        if (!strcmp(pod->restart_policy, "Always"))
                return "Running";
        if (stopped == succeeded)
                return "Succeeded";
        if (!strcmp(pod->restart_policy, "Never"))
                return "Failed";
        return "Running";
}

static json_t *container_status(const struct ctr *c) {
        bool running = json_object_get(c->state, "running") != NULL;
        json_t *cs = json_pack("{s:s, s:O, s:O, s:b, s:i, s:s, s:s, s:b}", "name", c->name, "state", c->state,
                               "lastState", c->last_state, "ready", running, "restartCount", (int) c->restart_count,
                               "image", json_string_value(json_object_get(c->spec, "image")), "imageID",
                               c->image_id, "started", running);
        if (cs && c->container_id[0])
                json_object_set_new(cs, "containerID", json_string(c->container_id));
        return cs;
}

static void set_cond(struct pod *pod, int i, bool value, int64_t now) {
        if (!pod->cond[i].set || pod->cond[i].value != value) {
                pod->cond[i].set = true;
                pod->cond[i].value = value;
                pod->cond[i].since = now;
        }
}

json_t *pod_status_json(struct pod *pod) {
        int64_t now = pod_now();
        const char *phase = pod_phase(pod);
        bool completed = !strcmp(phase, "Succeeded") || !strcmp(phase, "Failed");
        bool all_ready = pod->n_ctrs > 0;
        char unready[1024] = "";
        size_t off = 0;
        json_t *statuses = json_array();
        for (size_t i = 0; i < pod->n_ctrs; i++) {
                const struct ctr *c = &pod->ctrs[i];
                json_array_append_new(statuses, container_status(c));
                if (!json_object_get(c->state, "running")) {
                        all_ready = false;
                        if (off < sizeof(unready))
                                off += (size_t) snprintf(unready + off, sizeof(unready) - off, "%s%s", off ? " " : "",
                                                         c->name);
                }
        }
        set_cond(pod, COND_INITIALIZED, true, pod->start_time);
        set_cond(pod, COND_SCHEDULED, true, pod->start_time);
        set_cond(pod, COND_READY, all_ready, now);
        set_cond(pod, COND_CONTAINERS_READY, all_ready, now);

        json_t *conds = json_array();
        for (int i = 0; i < 4; i++) {
                char t[40];
                lg_store_format_time(pod->cond[i].since, t, sizeof(t));
                json_t *cj = json_pack("{s:s, s:s, s:n, s:s}", "type", cond_names[i], "status",
                                       pod->cond[i].value ? "True" : "False", "lastProbeTime", "lastTransitionTime", t);
                if (!pod->cond[i].value) {
                        if (completed) {
                                json_object_set_new(cj, "reason", json_string("PodCompleted"));
                        } else {
                                char msg[1100];
                                snprintf(msg, sizeof(msg), "containers with unready status: [%s]", unready);
                                json_object_set_new(cj, "reason", json_string("ContainersNotReady"));
                                json_object_set_new(cj, "message", json_string(msg));
                        }
                }
                json_array_append_new(conds, cj);
        }

        char start[40];
        lg_store_format_time(pod->start_time, start, sizeof(start));
        const char *ip = pod->mgr->host_ip;
        json_t *st = json_pack("{s:s, s:o, s:s, s:[{s:s}], s:s, s:s, s:o}", "phase", phase, "conditions", conds,
                               "hostIP", ip, "hostIPs", "ip", ip, "startTime", start, "qosClass", lg_pod_qos_class(pod->spec),
                               "containerStatuses", statuses);
        /* hostNetwork: the host's; otherwise the pod's own, once its
         * network namespace has it. */
        const char *pod_ip = pod->host_network ? ip : pod->pod_ip[0] ? pod->pod_ip : NULL;
        if (pod_ip) {
                json_object_set_new(st, "podIP", json_string(pod_ip));
                json_object_set_new(st, "podIPs", json_pack("[{s:s}]", "ip", pod_ip));
        }
        if (pod->reason[0])
                json_object_set_new(st, "reason", json_string(pod->reason));
        if (pod->message[0])
                json_object_set_new(st, "message", json_string(pod->message));
        return st;
}

void pod_set_stored(struct pod *pod, const struct lg_resource *r) {
        if (r->resource_version < pod->rv)
                return; /* older than what a status write of ours returned */
        json_decref(pod->stored_status);
        /* A copy: the caller's documents may be shared with its response. */
        pod->stored_status = json_deep_copy(r->status);
        pod->rv = r->resource_version;
}

int pod_write_status(struct pod *pod) {
        lg_pods *m = pod->mgr;
        json_t *st = pod_status_json(pod);
        if (!st)
                return -ENOMEM;
        int rc = -ESTALE;
        for (int attempt = 0; attempt < 3 && rc == -ESTALE; attempt++) {
                if (!pod->stored_status) {
                        /* Written since by someone who did not tell us. */
                        _cleanup_resource_ struct lg_resource *r = NULL;
                        rc = lg_store_get(m->store, LG_KEY("Pod", pod->ns, pod->name), &r, NULL);
                        if (rc < 0)
                                break;
                        if (strcmp(r->uid, pod->uid)) {
                                rc = -ENOENT; /* another pod of that name now */
                                break;
                        }
                        pod_set_stored(pod, r);
                        if (!pod->stored_status) {
                                rc = -ENOMEM;
                                break;
                        }
                }
                if (json_equal(json_object_get(pod->stored_status, "status"), st)) {
                        rc = 0;
                        break;
                }
                json_t *doc = json_copy(pod->stored_status);
                if (!doc || json_object_set(doc, "status", st) < 0) {
                        json_decref(doc);
                        rc = -ENOMEM;
                        break;
                }
                /* Conditional on the version we build on: a write we were
                 * not told of makes it -ESTALE, and the next try reads. */
                struct lg_resource *out = NULL;
                rc = lg_store_update_status(m->store, LG_KEY("Pod", pod->ns, pod->name), pod->rv, doc, &out, NULL);
                json_decref(doc);
                json_decref(pod->stored_status);
                pod->stored_status = NULL;
                if (rc >= 0) {
                        /* The store's own copy of what it now holds. */
                        pod->stored_status = json_incref(out->status);
                        pod->rv = out->resource_version;
                }
                lg_resource_free(out);
        }
        json_decref(st);
        return rc;
}

void pod_load_status(struct pod *pod, const json_t *doc) {
        const json_t *st = json_object_get(doc, "status");
        int64_t t;
        const char *s = json_string_value(json_object_get(st, "startTime"));
        if (s && lg_store_parse_time(s, &t) == 0)
                pod->start_time = t;
        s = json_string_value(json_object_get(st, "reason"));
        if (s)
                snprintf(pod->reason, sizeof(pod->reason), "%s", s);
        s = json_string_value(json_object_get(st, "message"));
        if (s)
                snprintf(pod->message, sizeof(pod->message), "%s", s);
        if (!strcmp(pod->reason, "DeadlineExceeded"))
                pod->deadline_exceeded = true;
        size_t i;
        const json_t *x;
        json_array_foreach(json_object_get(st, "conditions"), i, x) {
                const char *type = json_string_value(json_object_get(x, "type"));
                const char *val = json_string_value(json_object_get(x, "status"));
                const char *lt = json_string_value(json_object_get(x, "lastTransitionTime"));
                for (int k = 0; k < 4; k++)
                        if (type && val && lt && !strcmp(type, cond_names[k]) && lg_store_parse_time(lt, &t) == 0) {
                                pod->cond[k].set = true;
                                pod->cond[k].value = !strcmp(val, "True");
                                pod->cond[k].since = t;
                        }
        }
        json_array_foreach(json_object_get(st, "containerStatuses"), i, x) {
                const char *name = json_string_value(json_object_get(x, "name"));
                for (size_t k = 0; name && k < pod->n_ctrs; k++) {
                        struct ctr *c = &pod->ctrs[k];
                        if (strcmp(c->name, name))
                                continue;
                        const json_t *state = json_object_get(x, "state");
                        const json_t *last = json_object_get(x, "lastState");
                        if (json_is_object(state)) {
                                json_decref(c->state);
                                c->state = json_deep_copy(state);
                        }
                        if (json_is_object(last)) {
                                json_decref(c->last_state);
                                c->last_state = json_deep_copy(last);
                        }
                        json_int_t rc = json_integer_value(json_object_get(x, "restartCount"));
                        c->restart_count = rc > 0 && rc < 1000000 ? (unsigned) rc : 0;
                        s = json_string_value(json_object_get(x, "imageID"));
                        snprintf(c->image_id, sizeof(c->image_id), "%s", s ? s : "");
                        s = json_string_value(json_object_get(x, "containerID"));
                        snprintf(c->container_id, sizeof(c->container_id), "%s", s ? s : "");
                        c->started_once = json_object_get(c->state, "running") || json_object_get(c->state, "terminated") ||
                                          json_object_get(c->last_state, "terminated") || c->restart_count > 0;
                        const json_t *run = json_object_get(c->state, "running");
                        s = json_string_value(json_object_get(run, "startedAt"));
                        if (s && lg_store_parse_time(s, &t) == 0)
                                c->run_started = t;
                }
        }
}
