/* Pods: the Kubernetes v1 Pod subset Legion runs (docs/pods.md).
 *
 * Two halves:
 *   - lg_podspec_*: validate and default a Pod's spec as the API receives
 *     it. Every field outside the supported subset is named in one error,
 *     so that the API answers 422 listing them all, instead of ignoring
 *     them.
 *   - lg_pods: the pod manager on legiond's loop. It reads Pod objects from
 *     the store and makes them real: images resolved (pulled when absent and
 *     the reference names a registry), one sandbox per container, all of a
 *     pod's containers in one network and IPC namespace, restarts with
 *     back-off per restartPolicy, activeDeadlineSeconds, graceful deletion,
 *     and the status Kubernetes reports (phase, conditions, containerStatuses
 *     with state, reason, exitCode, restartCount, times), written back to the
 *     store so that watches see every change.
 *
 * Store shape of a Pod (kind "Pod", namespaced):
 *   labels = metadata.labels
 *   spec   = {"spec": <PodSpec, defaulted>, "annotations": {...}}
 *   status = {"status": <PodStatus>, "deletionTimestamp": "RFC3339",
 *             "deletionGracePeriodSeconds": N}   (the latter two while deleting)
 * lg_pod_to_json() builds the Kubernetes document from that.
 *
 * Logs: <logs_dir>/<ns>/<pod>/<container>.log (stdout and stderr
 * interleaved, capped), and <container>.previous.log for the run before the
 * last restart. They go with the pod. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"
#include "image/image.h"
#include "store/store.h"

/* ---- spec ------------------------------------------------------------------ */

/* Validate a PodSpec (the "spec" of a Pod) and return a defaulted deep copy
 * (restartPolicy Always, terminationGracePeriodSeconds 30,
 * imagePullPolicy, terminationMessagePath/Policy, dnsPolicy, schedulerName,
 * ...), as the API server would store it. -EINVAL with err naming every
 * unsupported field ("spec.volumes, spec.containers[0].securityContext") or
 * the first invalid value. */
int lg_podspec_validate(const json_t *spec, json_t **ret, struct lg_error *err);

/* Validate the parts of metadata that Legion stores: name (DNS-1123),
 * labels, annotations (<= 256 KiB in all). Unknown metadata fields that
 * Kubernetes clients send and the server owns (uid, resourceVersion,
 * creationTimestamp, managedFields, generation, selfLink) are ignored;
 * others that change behaviour (ownerReferences, finalizers,
 * generateName) are rejected. */
int lg_pod_validate_metadata(const json_t *metadata, struct lg_error *err);

/* The Kubernetes Pod document for a stored Pod: apiVersion, kind,
 * metadata (name, namespace, uid, resourceVersion, creationTimestamp,
 * labels, annotations, deletionTimestamp, deletionGracePeriodSeconds),
 * spec and status. NULL only when out of memory. */
json_t *lg_pod_to_json(const struct lg_resource *r);

/* The same checks as lg_podspec_validate / lg_pod_validate_metadata, with
 * every problem appended to causes (a JSON array) as a Kubernetes
 * StatusCause {"field", "reason", "message"}: the API's 422 details.
 * -EINVAL when any was added. */
int lg_podspec_check(const json_t *spec, json_t **ret, json_t *causes);
int lg_pod_check_metadata(const json_t *metadata, json_t *causes);
/* Such causes as "f1: m1, f2: m2" (kubectl's form) into buf, as much as
 * fits in cap (> 0) bytes; the length written. */
size_t lg_pod_causes_format(const json_t *causes, char *buf, size_t cap);

/* Kubernetes' QoS class of a PodSpec: BestEffort without any cpu or memory
 * request or limit, Guaranteed when every container's cpu and memory
 * limits are set and its requests (if given) equal them by value,
 * Burstable otherwise. */
const char *lg_pod_qos_class(const json_t *spec);

/* ---- manager --------------------------------------------------------------- */

typedef struct lg_pods lg_pods;
struct lg_agent;

struct lg_pods_config {
        uv_loop_t *loop;
        lg_store *store;
        lg_image_store *images;
        const char *run_dir;   /* sandbox state root */
        const char *logs_dir;  /* <logs_dir>/<ns>/<pod>/<container>.log */
        const char *node_name; /* spec.nodeName and status.hostIP source; NULL = hostname */
        uint64_t log_max_bytes;/* per container log; 0 = 10 MiB */
        struct lg_agent *agent;/* the node agent (node/agent.h); NULL = a local one of its own */
        struct lg_net *net;    /* the node's network (net/net.h; the agent's); NULL = off */
        struct lg_tenants *tenants; /* policies of pods with legion.dev/egress (tenant.h); NULL = none */
};

int lg_pods_new(const struct lg_pods_config *cfg, lg_pods **ret, struct lg_error *err);
/* Kill every pod's sandboxes (the objects stay in the store). NULL is fine. */
void lg_pods_free(lg_pods *pods);

/* Act on the Pod r that the API has just written (created, relabelled,
 * its deletion begun): start it if new, begin its graceful stop if it
 * carries a deletionTimestamp. The API calls this after every write to a
 * Pod, with the object the write returned: the manager keeps its resource
 * version and status as what its next status write builds on, instead of
 * reading the Pod back from the store. Idempotent. */
int lg_pods_sync(lg_pods *pods, const struct lg_resource *r, struct lg_error *err);

/* At legiond start: every stored Pod is looked at again. Containers that
 * were running when legiond stopped run on: their sandboxes are taken
 * back, restartCount unchanged. Those whose sandbox is gone are restarted
 * as their restartPolicy says (restartCount + 1), or reported terminated.
 * Sandboxes left that no container takes back are destroyed. Returns
 * once the running containers' sandboxes are back (running the loop). */
int lg_pods_restore(lg_pods *pods, struct lg_error *err);
/* Shutting down without stopping the workloads: running containers'
 * sandboxes are left for the next legiond (lg_pods_free then only frees). */
void lg_pods_detach_all(lg_pods *pods);

/* The log file of a container (current run, or the previous one), for
 * pods/log. -ENOENT when the pod or container is unknown. */
int lg_pods_log_path(lg_pods *pods, const char *ns, const char *pod, const char *container,
                     bool previous, char *buf, size_t cap);
/* 1 while the container may still write to its log (created or running, or
 * waiting to restart), 0 when it never will again: log -f stops then. */
int lg_pods_container_active(lg_pods *pods, const char *ns, const char *pod,
                             const char *container);

/* Add to l the layer dirs that containers' sandboxes use, and with warm
 * those of warm sandboxes too (image GC's keep list; "in use by a running
 * pod" leaves them out). Returns l->status (-ENOMEM: an add failed). */
int lg_pods_layers_in_use(lg_pods *pods, bool warm, struct lg_strlist *l);

/* Warm sandboxes (src/pod/pods-warm.c): an image was removed (or
 * untagged), its warm sandboxes go now, before GC may remove its layers. */
void lg_pods_image_removed(lg_pods *pods, const char *image_id);
/* GET /v1/pods/warm: {"perImage", "maxImages", "idleSeconds", "taken",
 * "missed", "images": [{"imageID", "ready", "making", "taken", "made",
 * "failed", "idleSeconds"}]}. NULL pods: an empty pool. */
json_t *lg_pods_warm_json(lg_pods *pods);
