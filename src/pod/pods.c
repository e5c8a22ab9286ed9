/* The pod manager (pod.h): the pods legiond runs, by namespace and name,
 * on its libuv loop. A Pod object in the store becomes a struct pod with
 * one struct ctr per container (pods-run.c runs them, pods-status.c writes
 * what they do back to the store). Here: sync with the store, the
 * activeDeadlineSeconds timer, graceful deletion, restore at start, the
 * lookups the API needs, and the lifetime of pods whose sandboxes or jobs
 * outlive their store object. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <net/if.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pod/pods-internal.h"

#define DEFAULT_LOG_MAX (10ull << 20)
#define DEFAULT_BACKOFF_MS 10000

int64_t pod_now(void) { return (int64_t) time(NULL); }

void pod_log_dir(const struct pod *pod, char *buf, size_t cap) {
        snprintf(buf, cap, "%s/%s/%s", pod->mgr->logs_dir, pod->ns, pod->name);
}

static void remove_logs(lg_pods *m, const char *ns, const char *name) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/%s/%s", m->logs_dir, ns, name);
        lg_rm_rf(dir);
        snprintf(dir, sizeof(dir), "%s/%s", m->logs_dir, ns);
        rmdir(dir); /* only when no other pod of the namespace has logs */
}

static struct pod *find_pod(lg_pods *m, const char *ns, const char *name) {
        for (struct pod *p = m->pods; p; p = p->next)
                if (!strcmp(p->ns, ns) && !strcmp(p->name, name))
                        return p;
        return NULL;
}

static struct ctr *find_ctr(struct pod *pod, const char *name) {
        for (size_t i = 0; pod && i < pod->n_ctrs; i++)
                if (!strcmp(pod->ctrs[i].name, name))
                        return &pod->ctrs[i];
        return NULL;
}

/* ---- lifetime ---------------------------------------------------------------- */

/* The pod's egress policy from its annotation, registered (the API
 * checked it; one stored before it was checked is refused here). */
static int pod_policy_set(struct pod *pod, const json_t *annotations, struct lg_error *err) {
        const char *text = json_string_value(json_object_get(annotations, LG_TENANT_EGRESS_ANNOTATION));
        if (!text || pod->host_network)
                return 0;
        struct lg_net_policy p;
        int r = lg_tenant_policy_parse_text(text, "annotation " LG_TENANT_EGRESS_ANNOTATION, &p, err);
        if (r >= 0)
                r = lg_tenants_policy_set(pod->mgr->tenants, pod->ns, "pod", pod->name, &p, err);
        if (r >= 0)
                lg_tenant_policy_name(pod->net_policy, sizeof(pod->net_policy), pod->ns, "pod", pod->name);
        return r;
}

/* Gone for good (deleted, or replaced by a pod of the same name). */
static void pod_policy_delete(struct pod *pod) {
        struct lg_error ignored = {0};
        if (pod->net_policy[0])
                lg_tenants_policy_set(pod->mgr->tenants, pod->ns, "pod", pod->name, NULL, &ignored);
        pod->net_policy[0] = '\0';
}

static void pod_free(struct pod *pod) {
        for (size_t i = 0; i < pod->n_ctrs; i++)
                ctr_free(&pod->ctrs[i]);
        free(pod->ctrs);
        json_decref(pod->spec);
        json_decref(pod->stored_status);
        free(pod);
}

void pod_release(struct pod *pod) {
        if (!pod->unlinked || !pod->handles_closing || pod->jobs > 0 || pod->handles > 0)
                return;
        POD_LIST_UNLINK(pod->mgr->zombies, pod);
        pod_free(pod);
}

static void pod_timer_closed(uv_handle_t *h) {
        struct pod *pod = h->data;
        pod->handles--;
        pod_release(pod);
}

/* Out of the list for good: sandboxes killed, handles closed; the memory
 * goes when the last job and handle are done. */
static void pod_unlink(struct pod *pod) {
        lg_pods *m = pod->mgr;
        if (pod->unlinked)
                return;
        POD_LIST_UNLINK(m->pods, pod);
        pod->unlinked = true;
        pod->next = m->zombies;
        m->zombies = pod;
        pod->quiet++;
        for (size_t i = 0; i < pod->n_ctrs; i++)
                ctr_kill(&pod->ctrs[i], "Error", NULL);
        pod_net_sb_destroy(pod);
        if (pod->netns_fd >= 0)
                close(pod->netns_fd);
        if (pod->ipcns_fd >= 0)
                close(pod->ipcns_fd);
        pod->netns_fd = pod->ipcns_fd = -1;
        pod->handles_closing = true;
        for (size_t i = 0; i < pod->n_ctrs; i++)
                ctr_close_handles(&pod->ctrs[i]);
        uv_timer_stop(&pod->deadline_timer);
        uv_timer_stop(&pod->grace_timer);
        uv_close((uv_handle_t *) &pod->deadline_timer, pod_timer_closed);
        uv_close((uv_handle_t *) &pod->grace_timer, pod_timer_closed);
}

static bool any_running(const struct pod *pod) {
        for (size_t i = 0; i < pod->n_ctrs; i++)
                if (pod->ctrs[i].phase == C_RUNNING || pod->ctrs[i].phase == C_CREATING ||
                    pod->ctrs[i].killing)
                        return true;
        return false;
}

/* Every container stopped: the object goes (kubectl waits for that
 * DELETED event), and the logs with it. */
static void finish_delete(struct pod *pod) {
        lg_pods *m = pod->mgr;
        _cleanup_resource_ struct lg_resource *r = NULL;
        if (lg_store_get(m->store, LG_KEY("Pod", pod->ns, pod->name), &r, NULL) >= 0 && !strcmp(r->uid, pod->uid))
                lg_store_delete(m->store, LG_KEY("Pod", pod->ns, pod->name), r->resource_version, NULL, NULL);
        remove_logs(m, pod->ns, pod->name);
        pod_policy_delete(pod);
        pod_unlink(pod);
}

void pod_changed(struct pod *pod) {
        if (pod->unlinked || pod->quiet > 0)
                return;
        pod_write_status(pod);
        if (pod->deleting && !any_running(pod))
                finish_delete(pod);
}

/* ---- deadline and deletion ------------------------------------------------- */

static void kill_all(struct pod *pod) {
        pod->quiet++;
        for (size_t i = 0; i < pod->n_ctrs; i++)
                ctr_kill(&pod->ctrs[i], "Error", NULL);
        pod->quiet--;
}

static void on_deadline(uv_timer_t *t) {
        struct pod *pod = t->data;
        if (pod->deleting || pod->deadline_exceeded)
                return;
        pod->deadline_exceeded = true;
        snprintf(pod->reason, sizeof(pod->reason), "DeadlineExceeded");
        snprintf(pod->message, sizeof(pod->message), "Pod was active on the node longer than the specified deadline");
        kill_all(pod);
        pod_changed(pod);
}

static void on_grace(uv_timer_t *t) {
        struct pod *pod = t->data;
        kill_all(pod);
        pod_changed(pod);
}

static void begin_delete(struct pod *pod, int64_t grace_s) {
        if (pod->deleting)
                return;
        pod->deleting = true;
        uv_timer_stop(&pod->deadline_timer);
        pod->quiet++;
        for (size_t i = 0; i < pod->n_ctrs; i++)
                ctr_term(&pod->ctrs[i]);
        if (grace_s <= 0)
                kill_all(pod);
        pod->quiet--;
        if (grace_s > 0)
                uv_timer_start(&pod->grace_timer, on_grace, (uint64_t) grace_s * 1000, 0);
        pod_changed(pod);
}

static void start_deadline(struct pod *pod) {
        const json_t *ads = json_object_get(pod->spec, "activeDeadlineSeconds");
        if (!json_is_integer(ads) || pod->deadline_exceeded || pod->deleting)
                return;
        int64_t left = pod->start_time + json_integer_value(ads) - pod_now();
        uv_timer_start(&pod->deadline_timer, on_deadline, left > 0 ? (uint64_t) left * 1000 : 0, 0);
}

/* ---- making pods ------------------------------------------------------------ */

static int64_t grace_of(const struct lg_resource *r) {
        const json_t *g = json_object_get(r->status, "deletionGracePeriodSeconds");
        return json_is_integer(g) ? json_integer_value(g) : 30;
}

static bool has_deletion(const struct lg_resource *r) {
        return json_object_get(r->status, "deletionTimestamp") != NULL;
}

static int pod_new(lg_pods *m, const struct lg_resource *r, struct pod **ret, struct lg_error *err) {
        const json_t *spec = json_object_get(r->spec, "spec");
        const json_t *containers = json_object_get(spec, "containers");
        size_t n = json_array_size(containers);
        if (!json_is_object(spec) || n == 0)
                return lg_error_set(err, EINVAL, "pod %s/%s has no containers", r->namespace, r->name);
        struct pod *pod = calloc(1, sizeof(*pod));
        if (!pod)
                return lg_error_set(err, ENOMEM, "out of memory");
        pod->mgr = m;
        snprintf(pod->ns, sizeof(pod->ns), "%s", r->namespace);
        snprintf(pod->name, sizeof(pod->name), "%s", r->name);
        snprintf(pod->uid, sizeof(pod->uid), "%s", r->uid);
        pod->spec = json_deep_copy(spec);
        pod->ctrs = calloc(n, sizeof(*pod->ctrs));
        pod->netns_fd = pod->ipcns_fd = -1;
        pod_set_stored(pod, r);
        if (!pod->spec || !pod->ctrs) {
                pod_free(pod);
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        const char *rp = json_string_value(json_object_get(spec, "restartPolicy"));
        snprintf(pod->restart_policy, sizeof(pod->restart_policy), "%s", rp ? rp : "Always");
        pod->host_network = json_is_true(json_object_get(spec, "hostNetwork"));
        pod->start_time = pod_now();
        int rc = pod_policy_set(pod, json_object_get(r->spec, "annotations"), err);
        if (rc < 0) {
                pod_free(pod);
                return rc;
        }
        for (size_t i = 0; i < n; i++) {
                struct ctr *c = &pod->ctrs[i];
                c->pod = pod;
                c->idx = i;
                c->spec = json_array_get(json_object_get(pod->spec, "containers"), i);
                const char *name = json_string_value(json_object_get(c->spec, "name"));
                c->name = strdup(name ? name : "");
                c->ns_net = c->ns_ipc = -1;
                c->pidfd = -1;
                lg_sandbox_spec_init(&c->sspec);
                c->last_state = json_object();
                pod->n_ctrs++;
                if (!c->name || !c->last_state) {
                        pod_free(pod);
                        return lg_error_set(err, ENOMEM, "out of memory");
                }
                ctr_set_waiting(c, "ContainerCreating", NULL);
                c->phase = C_IDLE;
        }
        uv_timer_init(m->loop, &pod->deadline_timer);
        uv_timer_init(m->loop, &pod->grace_timer);
        pod->deadline_timer.data = pod->grace_timer.data = pod;
        pod->handles = 2;
        for (size_t i = 0; i < n; i++)
                ctr_init_handles(&pod->ctrs[i]);
        pod->next = m->pods;
        m->pods = pod;
        *ret = pod;
        return 0;
}

static void start_pod(struct pod *pod) {
        start_deadline(pod);
        pod->quiet++;
        for (size_t i = 0; i < pod->n_ctrs && !pod->unlinked; i++)
                ctr_advance(&pod->ctrs[i]);
        pod->quiet--;
        pod_changed(pod);
}

/* ---- public ----------------------------------------------------------------- */

static void find_host_ip(char *buf, size_t cap) {
        struct ifaddrs *ifa = NULL;
        snprintf(buf, cap, "127.0.0.1");
        if (getifaddrs(&ifa) < 0)
                return;
        for (struct ifaddrs *i = ifa; i; i = i->ifa_next)
                if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && !(i->ifa_flags & IFF_LOOPBACK) &&
                    (i->ifa_flags & IFF_UP)) {
                        inet_ntop(AF_INET, &((struct sockaddr_in *) i->ifa_addr)->sin_addr, buf, (socklen_t) cap);
                        break;
                }
        freeifaddrs(ifa);
}

int lg_pods_new(const struct lg_pods_config *cfg, lg_pods **ret, struct lg_error *err) {
        if (!cfg->loop || !cfg->store || !cfg->run_dir || !cfg->logs_dir)
                return lg_error_set(err, EINVAL, "pods: loop, store, run_dir and logs_dir are required");
        lg_pods *m = calloc(1, sizeof(*m));
        if (!m)
                return lg_error_set(err, ENOMEM, "out of memory");
        m->dynmods_fd = -1;
        m->loop = cfg->loop;
        m->store = cfg->store;
        m->images = cfg->images;
        m->tenants = cfg->tenants;
        m->net = cfg->net;
        m->log_max_bytes = cfg->log_max_bytes ? cfg->log_max_bytes : DEFAULT_LOG_MAX;
        m->backoff_ms = DEFAULT_BACKOFF_MS;
        const char *b = getenv("LEGION_POD_BACKOFF_MS");
        if (b && *b) {
                char *end;
                unsigned long long v = strtoull(b, &end, 10);
                if (!*end && v > 0 && v <= 3600000)
                        m->backoff_ms = v;
        }
        if (cfg->node_name)
                snprintf(m->node_name, sizeof(m->node_name), "%s", cfg->node_name);
        else if (gethostname(m->node_name, sizeof(m->node_name) - 1) < 0)
                snprintf(m->node_name, sizeof(m->node_name), "localhost");
        find_host_ip(m->host_ip, sizeof(m->host_ip));
        if (asprintf(&m->state_root, "%s/pod-sandboxes", cfg->run_dir) < 0 || !(m->logs_dir = strdup(cfg->logs_dir))) {
                m->state_root = NULL;
                lg_pods_free(m);
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        int r = lg_mkdir_p(m->state_root, 0711);
        if (r >= 0)
                r = lg_mkdir_p(m->logs_dir, 0750);
        if (r < 0) {
                lg_pods_free(m);
                return lg_error_set(err, r, "create the pod directories under `%s` and `%s`", cfg->run_dir,
                                    cfg->logs_dir);
        }
        /* Sandboxes a previous legiond left behind. */
        lg_sandbox_gc(m->state_root, NULL);
        m->agent = cfg->agent;
        if (!m->agent) {
                r = lg_agent_local_new(m->loop, m->state_root, m->net, &m->agent, err);
                if (r < 0) {
                        lg_pods_free(m);
                        return r;
                }
                m->own_agent = true;
        }
        r = warm_new(m, err);
        if (r < 0) {
                lg_pods_free(m);
                return r;
        }
        /* Every container with limits is moved into its cgroups; on cgroup
         * v1 that waits for an RCU grace period unless this is held, which
         * was most of a pod's start when the machine was busy. Best effort;
         * LEGION_CGROUP_FAVOR_DYNMODS=0 leaves the kernel as it is. */
        const char *fd = getenv("LEGION_CGROUP_FAVOR_DYNMODS");
        if (!fd || strcmp(fd, "0"))
                m->dynmods_fd = lg_sandbox_favor_dynmods(NULL);
        *ret = m;
        return 0;
}

void lg_pods_free(lg_pods *m) {
        if (!m)
                return;
        while (m->pods)
                pod_unlink(m->pods);
        /* Close callbacks and queued jobs finish on the loop. */
        while (m->zombies)
                uv_run(m->loop, UV_RUN_ONCE);
        warm_free(m);
        if (m->own_agent)
                lg_agent_free(m->agent);
        if (m->dynmods_fd >= 0)
                close(m->dynmods_fd);
        free(m->state_root);
        free(m->logs_dir);
        free(m);
}

int lg_pods_sync(lg_pods *m, const struct lg_resource *r, struct lg_error *err) {
        if (!m)
                return lg_error_set(err, ENOSYS, "pods are not enabled");
        const char *ns = r->namespace, *name = r->name;
        struct pod *pod = find_pod(m, ns, name);
        if (pod && strcmp(pod->uid, r->uid)) {
                /* Deleted and made again between two syncs. */
                pod_policy_delete(pod);
                pod_unlink(pod);
                remove_logs(m, ns, name);
                pod = NULL;
        }
        if (!pod) {
                if (has_deletion(r)) {
                        /* Nothing of it ever ran here: it goes at once. */
                        lg_store_delete(m->store, LG_KEY("Pod", ns, name), r->resource_version, NULL, NULL);
                        remove_logs(m, ns, name);
                        return 0;
                }
                int rc = pod_new(m, r, &pod, err);
                if (rc < 0)
                        return rc;
                start_pod(pod);
                return 0;
        }
        pod_set_stored(pod, r);
        if (has_deletion(r))
                begin_delete(pod, grace_of(r));
        return 0;
}

/* Sandboxes a previous legiond left that no restored container took
 * back (its pod deleted, or not running): destroyed. */
static void unclaimed_adopted(lg_agent_req *req) {
        if (req->result >= 0)
                lg_agent_destroy(req->agent, NULL, req->id, NULL);
        free(req);
}

static void destroy_unclaimed(lg_pods *m) {
        char **ids = NULL;
        if (lg_sandbox_list(m->state_root, &ids, NULL) < 0)
                return;
        for (char **id = ids; *id; id++) {
                /* -EEXIST: a container is taking it back. A failed adopt
                 * destroys what is left. */
                lg_agent_req *req = calloc(1, sizeof(*req));
                if (req && lg_agent_adopt_in(m->agent, req, m->state_root, *id, unclaimed_adopted) < 0)
                        free(req);
        }
        lg_sandbox_list_free(ids);
}

int lg_pods_restore(lg_pods *m, struct lg_error *err) {
        if (!m)
                return 0;
        struct lg_resource_list list = {0};
        int rc = lg_store_list(m->store, "Pod", NULL, NULL, &list, err);
        if (rc < 0)
                return rc;
        for (size_t i = 0; i < list.n; i++) {
                struct lg_resource *r = list.items[i];
                if (find_pod(m, r->namespace, r->name))
                        continue;
                if (has_deletion(r)) {
                        lg_store_delete(m->store, LG_KEY("Pod", r->namespace, r->name), r->resource_version, NULL,
                                        NULL);
                        remove_logs(m, r->namespace, r->name);
                        continue;
                }
                struct pod *pod;
                if (pod_new(m, r, &pod, NULL) < 0)
                        continue;
                pod_load_status(pod, r->status);
                const char *phase = json_string_value(json_object_get(json_object_get(r->status, "status"), "phase"));
                bool over = phase && (!strcmp(phase, "Succeeded") || !strcmp(phase, "Failed"));
                pod->quiet++;
                for (size_t k = 0; k < pod->n_ctrs; k++) {
                        struct ctr *c = &pod->ctrs[k];
                        const json_t *term = json_object_get(c->state, "terminated");
                        if (over) {
                                c->phase = C_DONE;
                        } else if (json_object_get(c->state, "running")) {
                                /* Still running, unless its sandbox
                                 * did not survive: then restarted. */
                                if (ctr_adopt(c) < 0)
                                        ctr_restart_now(c);
                        } else if (term && !ctr_will_restart(c, (int) json_integer_value(json_object_get(term, "exitCode")))) {
                                c->phase = C_DONE;
                        } else {
                                c->phase = C_IDLE;
                                ctr_advance(c);
                        }
                }
                pod->quiet--;
                if (!over) {
                        start_deadline(pod);
                        pod_changed(pod);
                }
        }
        lg_resource_list_free(&list);
        destroy_unclaimed(m);
        /* The running containers' sandboxes are back, with their
         * addresses (lg_net_reclaim), before legiond sweeps the addresses
         * nobody took back. */
        while (m->adopting)
                uv_run(m->loop, UV_RUN_ONCE);
        return 0;
}

void lg_pods_detach_all(lg_pods *m) {
        if (!m)
                return;
        for (struct pod *pod = m->pods; pod; pod = pod->next)
                for (size_t i = 0; i < pod->n_ctrs; i++)
                        ctr_detach(&pod->ctrs[i]);
}

int lg_pods_log_path(lg_pods *m, const char *ns, const char *pod_name, const char *container, bool previous,
                     char *buf, size_t cap) {
        if (!m)
                return -ENOENT;
        struct pod *pod = find_pod(m, ns, pod_name);
        struct ctr *c = find_ctr(pod, container);
        if (!c)
                return -ENOENT;
        char dir[4096];
        pod_log_dir(pod, dir, sizeof(dir));
        int n = snprintf(buf, cap, "%s/%s%s.log", dir, c->name, previous ? ".previous" : "");
        return n < 0 || (size_t) n >= cap ? -ENAMETOOLONG : 0;
}

int lg_pods_container_active(lg_pods *m, const char *ns, const char *pod_name, const char *container) {
        if (!m)
                return 0;
        struct pod *pod = find_pod(m, ns, pod_name);
        struct ctr *c = find_ctr(pod, container);
        return c && !pod->deleting && ctr_active(c) ? 1 : c && pod->deleting && c->phase == C_RUNNING ? 1 : 0;
}

int lg_pods_layers_in_use(lg_pods *m, bool warm, struct lg_strlist *l) {
        if (!m)
                return 0;
        struct pod *lists[2] = {m->pods, m->zombies};
        for (int k = 0; k < 2; k++)
                for (struct pod *pod = lists[k]; pod; pod = pod->next)
                        for (size_t i = 0; i < pod->n_ctrs; i++) {
                                const struct ctr *c = &pod->ctrs[i];
                                if (!c->img || (!c->has_sb && c->phase != C_CREATING && !c->killing))
                                        continue;
                                for (size_t d = 0; d < c->img->n_layers; d++)
                                        lg_strlist_add(l, c->img->layer_dirs[d]);
                        }
        if (warm)
                warm_layers(m, l);
        return l->status;
}
