/* Kubernetes helpers shared by legiond's API (src/api) and the CLI
 * (src/cli), so that `kubectl get pods` and `legion pod list` show the same
 * words for the same pod and both read a resource.Quantity the same way:
 *   - the STATUS, READY and RESTARTS columns of a Pod as kubectl prints
 *     them (printPod in Kubernetes' pkg/printers/internalversion);
 *   - ages as kubectl shows them (duration.HumanDuration: 45s, 3m20s,
 *     5h12m, 3d4h, 2y10d) and RFC 3339 times;
 *   - resource.Quantity ("500m", "0.5", "64Mi", "1e3", "1E", or a JSON
 *     number), exactly: "0.5" and "500m" are the same cpu, "1.5Ki" is 1536
 *     bytes, fractions round up as Quantity.Value() does.
 *
 * Threading: plain functions of their arguments, thread-safe. None reads
 * the clock: callers pass `now` (seconds since the epoch), so that a table
 * and its tests agree on one instant.
 *
 * Memory: nothing is allocated. Strings go into the caller's buffer of cap
 * bytes (cap > 0), truncated and always NUL-terminated; the functions that
 * format return buf.
 *
 * Errors: >= 0 or a negative errno (-EINVAL malformed, -ERANGE out of
 * range); the library never logs. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* ---- times ------------------------------------------------------------------ */

/* An RFC 3339 time as Kubernetes writes it ("2026-01-02T03:04:05Z"; a
 * fraction of a second and a numeric offset "+01:00" are accepted too)
 * into seconds since the epoch. -EINVAL. */
int lg_kube_parse_time(const char *s, int64_t *ret);
/* duration.HumanDuration of a number of seconds: "<invalid>" below -1 s
 * (clocks 1 s apart count as now), else 0s..119s, 2m5s..9m59s, 10m..179m,
 * 3h..7h59m, 8h..47h, 2d..7d23h, 8d..729d, 2y..7y364d, then whole years. */
const char *lg_kube_duration(int64_t seconds, char *buf, size_t cap);
/* AGE of an RFC 3339 stamp at now (translateTimestampSince): "<unknown>"
 * when stamp is NULL or is no time. */
const char *lg_kube_age(const char *stamp, int64_t now, char *buf, size_t cap);

/* ---- pods ------------------------------------------------------------------- */

/* What kubectl prints of a v1 Pod document. */
struct lg_kube_pod_summary {
        /* STATUS: the phase (or status.reason), overridden by the first
         * container that is waiting or terminated (Init:... while init
         * containers run), Running / NotReady when a container still runs
         * beside a Completed one, Terminating (or Unknown for a lost node)
         * once deletionTimestamp is set on a pod whose phase is not
         * terminal. Empty when the pod has no phase, as kubectl. */
        char status[128];
        int ready, total;     /* READY: ready/total containers */
        int64_t restarts;     /* RESTARTS */
        int64_t last_restart; /* latest lastState.terminated.finishedAt; 0: none */
};
void lg_kube_pod_summarize(const json_t *pod, struct lg_kube_pod_summary *ret);
/* The RESTARTS cell: "4", or "4 (30s ago)" once a container restarted. */
const char *lg_kube_pod_restarts(const struct lg_kube_pod_summary *s, int64_t now, char *buf, size_t cap);

/* ---- quantities ------------------------------------------------------------- */

/* A resource.Quantity: a string <sign><digits>[.<digits>]<suffix> with
 * suffix one of n u m "" k M G T P E, Ki Mi Gi Ti Pi Ei, or e<int> / E<int>
 * (a decimal exponent), or a JSON integer or real. Stricter than
 * Kubernetes in two ways: a number must have a digit ("+", "-" and "." are
 * -EINVAL, where ParseQuantity reads 0), and a decimal exponent beyond
 * +-30 is -ERANGE (Kubernetes reads "1e999"). Strings holding a NUL are
 * -EINVAL. */

/* Its value, approximately (for ordering and messages), negative values
 * included: callers say why they refuse them. */
int lg_kube_quantity_parse(const json_t *q, long double *ret);
/* Its value in bytes / in thousandths ("500m" cpu = 500), computed
 * exactly and rounded up (Quantity.Value() / MilliValue(): "100m" of
 * memory is 1 byte). -EINVAL for a negative or malformed one, -ERANGE at
 * or above 2^64 bytes or 10^18 thousandths. */
int lg_kube_quantity_bytes(const json_t *q, uint64_t *ret);
int lg_kube_quantity_millis(const json_t *q, uint64_t *ret);
/* Compares a and b as Kubernetes does (Quantity.Cmp, after both were
 * rounded up to nano units): *ret < 0, 0 or > 0. The errors of
 * lg_kube_quantity_parse when either is no quantity. */
int lg_kube_quantity_cmp(const json_t *a, const json_t *b, int *ret);
