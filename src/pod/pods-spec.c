/* From a Kubernetes container spec and an image config to a sandbox spec:
 * the workload (command/args against ENTRYPOINT/CMD, environment, working
 * directory, user: built by src/image/launch.c, which image instances
 * share), and resources (limits and requests parsed as Kubernetes
 * quantities). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/launch.h"
#include "kube/kube.h"
#include "sandbox/cgroup.h"
#include "pod/pods-internal.h"

#define DEFAULT_PIDS 4096

/* ---- the container spec as lg_image_launch_in ------------------------------ */

/* The strings of a JSON array (podspec.c checked they are strings),
 * borrowed from it; NULL-terminated. NULL for an absent array. */
static const char **json_strv(const json_t *arr, int *r) {
        if (!json_is_array(arr))
                return NULL;
        const char **v = calloc(json_array_size(arr) + 1, sizeof(char *));
        if (!v) {
                *r = -ENOMEM;
                return NULL;
        }
        size_t i, n = 0;
        const json_t *x;
        json_array_foreach(arr, i, x)
                if (json_string_value(x))
                        v[n++] = json_string_value(x);
        return v;
}

/* env [{name, value}] as "name=value" (no value: empty). */
static char **json_env(const json_t *env, int *r) {
        char **v = calloc(json_array_size(env) + 1, sizeof(char *));
        size_t i, n = 0;
        const json_t *x;
        if (!v) {
                *r = -ENOMEM;
                return NULL;
        }
        json_array_foreach(env, i, x) {
                const char *name = json_string_value(json_object_get(x, "name"));
                const char *value = json_string_value(json_object_get(x, "value"));
                if (!name)
                        continue;
                if (asprintf(&v[n], "%s=%s", name, value ? value : "") < 0) {
                        v[n] = NULL;
                        *r = -ENOMEM;
                        break;
                }
                n++;
        }
        return v;
}

/* ---- the sandbox spec ---------------------------------------------------- */

void ctr_free_sandbox_spec(struct ctr *c) {
        lg_image_launch_clear(&c->run);
        free(c->log_path);
        c->log_path = NULL;
        lg_sandbox_spec_init(&c->sspec);
        lg_sandbox_launch_init(&c->launch);
}

void pods_base_spec(lg_pods *m, const struct lg_image *img, uint64_t rootfs_bytes, struct lg_sandbox_spec *s) {
        lg_sandbox_spec_init(s);
        s->state_root = m->state_root;
        lg_image_sandbox_layers(img, rootfs_bytes, s);
        /* pids: every container has a cgroup, which OOM detection and
         * limits set on a warm sandbox need. */
        s->pids_max = DEFAULT_PIDS;
        /* Started, it outlives legiond; the next one adopts it (restore). */
        s->detachable = true;
}

int ctr_build_sandbox_spec(struct ctr *c, const char **reason, struct lg_error *err) {
        struct pod *pod = c->pod;
        lg_pods *m = pod->mgr;
        const struct lg_image *img = c->img;
        struct lg_sandbox_spec *s = &c->sspec;
        struct lg_sandbox_launch *l = &c->launch;
        int r;
        ctr_free_sandbox_spec(c);
        *reason = "CreateContainerError";

        /* Kubernetes: an unresolvable user is a config error, the rest
         * (no command, a relative workingDir) a container error. */
        r = 0;
        _cleanup_free_ const char **command = json_strv(json_object_get(c->spec, "command"), &r);
        _cleanup_free_ const char **args = json_strv(json_object_get(c->spec, "args"), &r);
        char **env = json_env(json_object_get(c->spec, "env"), &r);
        if (r < 0) {
                lg_strv_free(env);
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        struct lg_image_launch_in in = {
                .command = command,
                .args = args,
                .env = (const char *const *) env,
                .hostname = pod->name,
                .cwd = json_string_value(json_object_get(c->spec, "workingDir")),
        };
        r = lg_image_launch_build(img, &in, &c->run, err);
        lg_strv_free(env);
        if (r < 0) {
                if (r == -ENOENT || r == -ERANGE)
                        *reason = "CreateContainerConfigError";
                return r;
        }

        const json_t *res = json_object_get(c->spec, "resources");
        const json_t *lim = json_object_get(res, "limits"), *req = json_object_get(res, "requests");
        const json_t *q;
        uint64_t v, rootfs = POD_DEFAULT_ROOTFS;
        if ((q = json_object_get(lim, "ephemeral-storage")) && lg_kube_quantity_bytes(q, &v) == 0 && v >= (1u << 20))
                rootfs = v;
        pods_base_spec(m, img, rootfs, s);

        /* The workload: given at start (lg_sandbox_start_with), so that a
         * warm sandbox made before it was known can take it. */
        lg_image_launch_apply(&c->run, l);
        l->hostname = pod->name;

        if ((q = json_object_get(lim, "memory")) && lg_kube_quantity_bytes(q, &v) == 0)
                s->memory_bytes = v;
        if ((q = json_object_get(lim, "cpu")) && lg_kube_quantity_millis(q, &v) == 0)
                s->cpu_millis = v ? v : 1;
        if ((q = json_object_get(req, "cpu")) && lg_kube_quantity_millis(q, &v) == 0) {
                /* kubelet: shares = millis * 1024 / 1000 (min 2), then the
                 * cgroup v2 weight 1 + (shares - 2) * 9999 / 262142. */
                uint64_t shares = v * 1024 / 1000;
                if (shares < 2)
                        shares = 2;
                if (shares > 262144)
                        shares = 262144;
                s->cpu_weight = 1 + (shares - 2) * 9999 / 262142;
        }

        char dir[4096];
        pod_log_dir(pod, dir, sizeof(dir));
        if (asprintf(&c->log_path, "%s/%s.log", dir, c->name) < 0) {
                c->log_path = NULL;
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        l->log_file = c->log_path;
        l->log_max_bytes = m->log_max_bytes;

        s->share_net = pod->host_network;
        s->join_netns_fd = pod->host_network ? -1 : pod->netns_fd;
        s->join_ipcns_fd = pod->ipcns_fd;
        *reason = NULL;
        return 0;
}
