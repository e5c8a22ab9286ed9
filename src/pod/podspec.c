/* Pod spec validation and defaulting, and the Kubernetes Pod document
 * (pod.h, docs/pods.md).
 *
 * Validation collects every problem as a Kubernetes StatusCause
 * ({"field", "reason", "message"}) instead of stopping at the first, so
 * that one 422 names all the fields Legion does not support: a manifest
 * written for a real cluster is fixed in one round trip. The messages
 * follow the Kubernetes field-error wording ("Required value",
 * "Invalid value: ...", "Unsupported value: ...", "Forbidden: ...")
 * because kubectl prints them as "field: message". */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "kube/kube.h"
#include "pod/pod.h"
#include "tenant/tenant.h"

/* ---- causes ------------------------------------------------------------------ */

static void add_cause(json_t *causes, const char *reason, const char *msg, const char *fieldfmt, ...)
        __attribute__((format(printf, 4, 5)));

static void add_cause(json_t *causes, const char *reason, const char *msg, const char *fieldfmt, ...) {
        char field[256];
        va_list ap;
        va_start(ap, fieldfmt);
        vsnprintf(field, sizeof(field), fieldfmt, ap);
        va_end(ap);
        json_array_append_new(causes, json_pack("{s:s, s:s, s:s}", "reason", reason, "message", msg, "field", field));
}

#define FORBIDDEN(c, ...) add_cause((c), "FieldValueForbidden", "Forbidden: not supported by Legion", __VA_ARGS__)
#define REQUIRED(c, ...) add_cause((c), "FieldValueRequired", "Required value", __VA_ARGS__)

/* "Invalid value: <json>: why" with the value shortened. */
static void invalid(json_t *causes, const json_t *v, const char *why, const char *field) {
        char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        char msg[400];
        snprintf(msg, sizeof(msg), "Invalid value: %.80s%s: %s", s ? s : "null", s && strlen(s) > 80 ? "..." : "",
                 why);
        free(s);
        json_array_append_new(causes, json_pack("{s:s, s:s, s:s}", "reason", "FieldValueInvalid", "message", msg,
                                                "field", field));
}

static void unsupported(json_t *causes, const json_t *v, const char *const *allowed, const char *field) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        char msg[400];
        size_t off = (size_t) snprintf(msg, sizeof(msg), "Unsupported value: %.80s: supported values: ", s ? s : "");
        free(s);
        for (size_t i = 0; allowed[i] && off < sizeof(msg); i++)
                off += (size_t) snprintf(msg + off, sizeof(msg) - off, "%s\"%s\"", i ? ", " : "", allowed[i]);
        json_array_append_new(causes, json_pack("{s:s, s:s, s:s}", "reason", "FieldValueNotSupported", "message",
                                                msg, "field", field));
}

size_t lg_pod_causes_format(const json_t *causes, char *buf, size_t cap) {
        size_t off = 0;
        buf[0] = '\0';
        size_t i;
        json_t *c;
        json_array_foreach(causes, i, c) {
                if (off >= cap - 1)
                        break;
                off += (size_t) snprintf(buf + off, cap - off, "%s%s: %s", i ? ", " : "",
                                         json_string_value(json_object_get(c, "field")),
                                         json_string_value(json_object_get(c, "message")));
        }
        return off < cap ? off : cap - 1;
}

/* Fill err with "f1: m1, f2: m2" (as much as fits). */
static int causes_error(const json_t *causes, struct lg_error *err) {
        char buf[sizeof(err->msg)];
        lg_pod_causes_format(causes, buf, sizeof(buf));
        return lg_error_setm(err, EINVAL, "%s", buf);
}

static bool one_of(const char *s, const char *const *allowed) {
        for (size_t i = 0; s && allowed[i]; i++)
                if (!strcmp(s, allowed[i]))
                        return true;
        return false;
}

/* ---- value checks ---------------------------------------------------------------- */

/* A cpu or memory quantity that is set (above zero); Kubernetes' QoS
 * compares requests and limits by value (Quantity.Cmp). */
static bool quantity_set(const json_t *q) {
        long double v;
        return q && lg_kube_quantity_parse(q, &v) == 0 && v > 0;
}

static bool quantity_eq(const json_t *a, const json_t *b) {
        int c;
        return lg_kube_quantity_cmp(a, b, &c) == 0 && c == 0;
}

const char *lg_pod_qos_class(const json_t *spec) {
        static const char *const res[] = {"cpu", "memory"};
        bool any = false, guaranteed = true;
        size_t i;
        const json_t *c;
        json_array_foreach(json_object_get(spec, "containers"), i, c) {
                const json_t *r = json_object_get(c, "resources");
                const json_t *lim = json_object_get(r, "limits"), *req = json_object_get(r, "requests");
                for (size_t k = 0; k < 2; k++) {
                        const json_t *l = json_object_get(lim, res[k]), *q = json_object_get(req, res[k]);
                        if (quantity_set(l) || quantity_set(q))
                                any = true;
                        if (!quantity_set(l) || (q && !quantity_eq(l, q)))
                                guaranteed = false;
                }
        }
        return !any ? "BestEffort" : guaranteed ? "Guaranteed" : "Burstable";
}

/* Environment variable names as Kubernetes accepts them. */
static bool valid_env_name(const char *s) {
        if (!s || !*s || strlen(s) > 4096 || isdigit((unsigned char) *s))
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && *p != '_' && *p != '-' && *p != '.')
                        return false;
        return true;
}

/* IANA_SVC_NAME: 1-15 of [a-z0-9-], a letter among them, no "--", no
 * leading or trailing '-'. */
static bool valid_port_name(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > 15 || s[0] == '-' || s[n - 1] == '-' || strstr(s, "--"))
                return false;
        bool letter = false;
        for (const char *p = s; *p; p++) {
                if (!islower((unsigned char) *p) && !isdigit((unsigned char) *p) && *p != '-')
                        return false;
                letter |= islower((unsigned char) *p) != 0;
        }
        return letter;
}

static bool is_string_array(const json_t *v) {
        if (!json_is_array(v))
                return false;
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (!json_is_string(e)) return false;
        return true;
}

/* An integer within [lo, hi]. */
static bool int_in(const json_t *v, json_int_t lo, json_int_t hi) {
        return json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi;
}

/* ---- containers ---------------------------------------------------------------------- */

static void check_resources(json_t *res, size_t ci, json_t *causes) {
        static const char *const names[] = {"cpu", "memory", "ephemeral-storage", NULL};
        const char *k;
        json_t *v;
        if (!json_is_object(res)) {
                invalid(causes, res, "must be an object", "spec.containers[*].resources");
                return;
        }
        json_object_foreach(res, k, v) {
                if (strcmp(k, "requests") && strcmp(k, "limits")) {
                        FORBIDDEN(causes, "spec.containers[%zu].resources.%s", ci, k);
                        continue;
                }
                if (!json_is_object(v)) {
                        char f[128];
                        snprintf(f, sizeof(f), "spec.containers[%zu].resources.%s", ci, k);
                        invalid(causes, v, "must be an object", f);
                        continue;
                }
                const char *rk;
                json_t *q;
                json_object_foreach(v, rk, q) {
                        char f[200];
                        snprintf(f, sizeof(f), "spec.containers[%zu].resources.%s[%s]", ci, k, rk);
                        long double x;
                        if (!one_of(rk, names))
                                add_cause(causes, "FieldValueNotSupported",
                                          "Unsupported value: only cpu, memory and ephemeral-storage are supported "
                                          "by Legion",
                                          "%s", f);
                        else if (lg_kube_quantity_parse(q, &x) < 0)
                                invalid(causes, q, "must be a quantity (e.g. \"500m\", \"64Mi\")", f);
                        else if (x < 0)
                                invalid(causes, q, "must be greater than or equal to 0", f);
                }
        }
        /* Kubernetes: requests default to the limits, and may not exceed them. */
        json_t *lim = json_object_get(res, "limits"), *req = json_object_get(res, "requests");
        if (!json_is_object(lim))
                return;
        if (!req) {
                req = json_object();
                json_object_set_new(res, "requests", req);
        }
        if (!json_is_object(req))
                return;
        json_object_foreach(lim, k, v) {
                json_t *r = json_object_get(req, k);
                int cmp;
                if (!r)
                        json_object_set(req, k, v);
                else if (lg_kube_quantity_cmp(r, v, &cmp) == 0 && cmp > 0) {
                        char f[200], why[128];
                        snprintf(f, sizeof(f), "spec.containers[%zu].resources.requests", ci);
                        snprintf(why, sizeof(why), "must be less than or equal to %s limit", k);
                        invalid(causes, r, why, f);
                }
        }
}

static void check_env(json_t *env, size_t ci, json_t *causes) {
        char f[128];
        snprintf(f, sizeof(f), "spec.containers[%zu].env", ci);
        if (!json_is_array(env)) {
                invalid(causes, env, "must be a list of {name, value}", f);
                return;
        }
        size_t i;
        json_t *e;
        json_array_foreach(env, i, e) {
                if (!json_is_object(e)) {
                        snprintf(f, sizeof(f), "spec.containers[%zu].env[%zu]", ci, i);
                        invalid(causes, e, "must be an object {name, value}", f);
                        continue;
                }
                const char *k;
                json_t *v;
                json_object_foreach(e, k, v) {
                        if (!strcmp(k, "name") || !strcmp(k, "value"))
                                continue;
                        FORBIDDEN(causes, "spec.containers[%zu].env[%zu].%s", ci, i, k);
                }
                json_t *name = json_object_get(e, "name"), *val = json_object_get(e, "value");
                if (!name)
                        REQUIRED(causes, "spec.containers[%zu].env[%zu].name", ci, i);
                else if (!valid_env_name(json_string_value(name))) {
                        snprintf(f, sizeof(f), "spec.containers[%zu].env[%zu].name", ci, i);
                        invalid(causes, name,
                                "a valid environment variable name must consist of alphabetic characters, digits, "
                                "'_', '-', or '.', and must not start with a digit",
                                f);
                }
                if (val && !json_is_string(val)) {
                        snprintf(f, sizeof(f), "spec.containers[%zu].env[%zu].value", ci, i);
                        invalid(causes, val, "must be a string", f);
                }
        }
}

static void check_ports(json_t *ports, size_t ci, bool host_network, json_t *causes) {
        char f[128];
        snprintf(f, sizeof(f), "spec.containers[%zu].ports", ci);
        if (!json_is_array(ports)) {
                invalid(causes, ports, "must be a list", f);
                return;
        }
        static const char *const protocols[] = {"TCP", "UDP", "SCTP", NULL};
        size_t i;
        json_t *p;
        json_array_foreach(ports, i, p) {
                if (!json_is_object(p)) {
                        snprintf(f, sizeof(f), "spec.containers[%zu].ports[%zu]", ci, i);
                        invalid(causes, p, "must be an object", f);
                        continue;
                }
                const char *k;
                json_t *v;
                json_object_foreach(p, k, v) {
                        snprintf(f, sizeof(f), "spec.containers[%zu].ports[%zu].%s", ci, i, k);
                        if (!strcmp(k, "containerPort")) {
                                if (!int_in(v, 1, 65535))
                                        invalid(causes, v, "must be between 1 and 65535, inclusive", f);
                        } else if (!strcmp(k, "name")) {
                                if (!valid_port_name(json_string_value(v)))
                                        invalid(causes, v,
                                                "must be no more than 15 characters of [a-z0-9-], with at least "
                                                "one letter",
                                                f);
                        } else if (!strcmp(k, "protocol")) {
                                if (!one_of(json_string_value(v), protocols))
                                        unsupported(causes, v, protocols, f);
                        } else if (!strcmp(k, "hostPort") && host_network) {
                                if (!json_equal(v, json_object_get(p, "containerPort")))
                                        invalid(causes, v, "must match `containerPort` when `hostNetwork` is true",
                                                f);
                        } else if (!strcmp(k, "hostPort")) {
                                add_cause(causes, "FieldValueForbidden",
                                          "Forbidden: not supported by Legion unless hostNetwork is true", "%s", f);
                        } else {
                                FORBIDDEN(causes, "%s", f);
                        }
                }
                if (!json_object_get(p, "containerPort"))
                        REQUIRED(causes, "spec.containers[%zu].ports[%zu].containerPort", ci, i);
                if (!json_object_get(p, "protocol"))
                        json_object_set_new(p, "protocol", json_string("TCP"));
        }
}

/* Kubernetes' default: Always for an image without a tag or tagged
 * latest (a digest pins it), else IfNotPresent. */
static const char *default_pull_policy(const char *image) {
        if (strchr(image, '@'))
                return "IfNotPresent";
        const char *slash = strrchr(image, '/');
        const char *colon = strrchr(slash ? slash : image, ':');
        if (!colon || !strcmp(colon, ":latest"))
                return "Always";
        return "IfNotPresent";
}

static void check_container(json_t *c, size_t ci, bool host_network, json_t *names, json_t *causes) {
        char f[128];
        snprintf(f, sizeof(f), "spec.containers[%zu]", ci);
        if (!json_is_object(c)) {
                invalid(causes, c, "must be an object", f);
                return;
        }
        static const char *const pull[] = {"Always", "IfNotPresent", "Never", NULL};
        static const char *const tmp[] = {"File", "FallbackToLogsOnError", NULL};
        const char *k;
        json_t *v;
        json_object_foreach(c, k, v) {
                snprintf(f, sizeof(f), "spec.containers[%zu].%s", ci, k);
                if (!strcmp(k, "name")) {
                        const char *n = json_string_value(v);
                        if (!lg_store_valid_name(n))
                                invalid(causes, v,
                                        "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                                        "characters or '-', and must start and end with an alphanumeric character",
                                        f);
                        else if (json_object_get(names, n))
                                add_cause(causes, "FieldValueDuplicate", "Duplicate value: container name", "%s", f);
                        else
                                json_object_set_new(names, n, json_true());
                } else if (!strcmp(k, "image")) {
                        const char *s = json_string_value(v);
                        if (!s || !*s || strlen(s) > 1024)
                                invalid(causes, v, "must be an image reference", f);
                        else
                                for (const char *p = s; *p; p++)
                                        if (isspace((unsigned char) *p) || iscntrl((unsigned char) *p)) {
                                                invalid(causes, v, "must not contain whitespace", f);
                                                break;
                                        }
                } else if (!strcmp(k, "command") || !strcmp(k, "args")) {
                        if (!is_string_array(v))
                                invalid(causes, v, "must be a list of strings", f);
                } else if (!strcmp(k, "workingDir")) {
                        const char *s = json_string_value(v);
                        if (!s || (*s && *s != '/'))
                                invalid(causes, v, "must be an absolute path", f);
                } else if (!strcmp(k, "env")) {
                        check_env(v, ci, causes);
                } else if (!strcmp(k, "ports")) {
                        check_ports(v, ci, host_network, causes);
                } else if (!strcmp(k, "resources")) {
                        check_resources(v, ci, causes);
                } else if (!strcmp(k, "imagePullPolicy")) {
                        if (!one_of(json_string_value(v), pull))
                                unsupported(causes, v, pull, f);
                } else if (!strcmp(k, "terminationMessagePath")) {
                        if (!json_is_string(v))
                                invalid(causes, v, "must be a path", f);
                } else if (!strcmp(k, "terminationMessagePolicy")) {
                        if (!one_of(json_string_value(v), tmp))
                                unsupported(causes, v, tmp, f);
                } else if (!strcmp(k, "stdin") || !strcmp(k, "tty") || !strcmp(k, "stdinOnce")) {
                        if (!json_is_false(v))
                                FORBIDDEN(causes, "%s", f);
                } else {
                        FORBIDDEN(causes, "%s", f);
                }
        }
        if (!json_object_get(c, "name"))
                REQUIRED(causes, "spec.containers[%zu].name", ci);
        const char *image = json_string_value(json_object_get(c, "image"));
        if (!json_object_get(c, "image"))
                REQUIRED(causes, "spec.containers[%zu].image", ci);
        if (image && !json_object_get(c, "imagePullPolicy"))
                json_object_set_new(c, "imagePullPolicy", json_string(default_pull_policy(image)));
        if (!json_object_get(c, "resources"))
                json_object_set_new(c, "resources", json_object());
        if (!json_object_get(c, "terminationMessagePath"))
                json_object_set_new(c, "terminationMessagePath", json_string("/dev/termination-log"));
        if (!json_object_get(c, "terminationMessagePolicy"))
                json_object_set_new(c, "terminationMessagePolicy", json_string("File"));
}

/* ---- spec ------------------------------------------------------------------------------ */

int lg_podspec_check(const json_t *spec, json_t **ret, json_t *causes) {
        if (!json_is_object(spec)) {
                invalid(causes, spec, "must be an object", "spec");
                return -EINVAL;
        }
        size_t before = json_array_size(causes);
        json_t *s = json_deep_copy(spec);
        if (!s)
                return -ENOMEM;
        static const char *const restart[] = {"Always", "OnFailure", "Never", NULL};
        static const char *const dns[] = {"ClusterFirst", "ClusterFirstWithHostNet", "Default", NULL};
        json_t *hn = json_object_get(s, "hostNetwork");
        bool host_network = json_is_true(hn);
        const char *k;
        json_t *v;
        json_object_foreach(s, k, v) {
                char f[128];
                snprintf(f, sizeof(f), "spec.%s", k);
                if (!strcmp(k, "containers")) {
                        if (!json_is_array(v) || json_array_size(v) == 0) {
                                if (json_is_array(v))
                                        REQUIRED(causes, "spec.containers");
                                else
                                        invalid(causes, v, "must be a list of containers", f);
                                continue;
                        }
                        if (json_array_size(v) > 64) {
                                invalid(causes, json_integer((json_int_t) json_array_size(v)),
                                        "at most 64 containers", f);
                                continue;
                        }
                        json_t *names = json_object();
                        size_t i;
                        json_t *c;
                        json_array_foreach(v, i, c) check_container(c, i, host_network, names, causes);
                        json_decref(names);
                } else if (!strcmp(k, "restartPolicy")) {
                        if (!one_of(json_string_value(v), restart))
                                unsupported(causes, v, restart, f);
                } else if (!strcmp(k, "activeDeadlineSeconds")) {
                        if (!int_in(v, 1, INT32_MAX))
                                invalid(causes, v, "must be between 1 and 2147483647, inclusive", f);
                } else if (!strcmp(k, "terminationGracePeriodSeconds")) {
                        if (!int_in(v, 0, 86400 * 365))
                                invalid(causes, v, "must be >= 0", f);
                } else if (!strcmp(k, "hostNetwork") || !strcmp(k, "enableServiceLinks")) {
                        if (!json_is_boolean(v))
                                invalid(causes, v, "must be a boolean", f);
                } else if (!strcmp(k, "nodeName")) {
                        /* The API checks that it names this node. */
                        if (!json_is_string(v))
                                invalid(causes, v, "must be a string", f);
                } else if (!strcmp(k, "dnsPolicy")) {
                        if (!one_of(json_string_value(v), dns))
                                unsupported(causes, v, dns, f);
                } else if (!strcmp(k, "schedulerName")) {
                        if (!json_is_string(v) || strcmp(json_string_value(v), "default-scheduler"))
                                add_cause(causes, "FieldValueForbidden",
                                          "Forbidden: only \"default-scheduler\" is supported by Legion", "%s", f);
                } else if (!strcmp(k, "securityContext")) {
                        /* The empty default that Kubernetes adds, echoed back. */
                        if (!json_is_object(v) || json_object_size(v))
                                FORBIDDEN(causes, "%s", f);
                } else if (!strcmp(k, "priority")) {
                        if (!int_in(v, 0, 0))
                                FORBIDDEN(causes, "%s", f);
                } else if (!strcmp(k, "tolerations") || !strcmp(k, "imagePullSecrets")) {
                        if (!json_is_array(v) || json_array_size(v))
                                FORBIDDEN(causes, "%s", f);
                } else {
                        FORBIDDEN(causes, "%s", f);
                }
        }
        if (!json_object_get(s, "containers"))
                REQUIRED(causes, "spec.containers");
        if (json_array_size(causes) > before) {
                json_decref(s);
                return -EINVAL;
        }
        static const struct {
                const char *k;
                const char *v;
        } defs[] = {{"restartPolicy", "Always"}, {"dnsPolicy", "ClusterFirst"}, {"schedulerName", "default-scheduler"}};
        for (size_t i = 0; i < ARRAY_SIZE(defs); i++)
                if (!json_object_get(s, defs[i].k))
                        json_object_set_new(s, defs[i].k, json_string(defs[i].v));
        if (!json_object_get(s, "terminationGracePeriodSeconds"))
                json_object_set_new(s, "terminationGracePeriodSeconds", json_integer(30));
        if (!json_object_get(s, "securityContext"))
                json_object_set_new(s, "securityContext", json_object());
        if (!json_object_get(s, "enableServiceLinks"))
                json_object_set_new(s, "enableServiceLinks", json_true());
        if (!json_object_get(s, "priority"))
                json_object_set_new(s, "priority", json_integer(0));
        *ret = s;
        return 0;
}

int lg_podspec_validate(const json_t *spec, json_t **ret, struct lg_error *err) {
        json_t *causes = json_array();
        if (!causes)
                return lg_error_set(err, ENOMEM, "pod spec");
        json_t *out = NULL;
        int r = lg_podspec_check(spec, &out, causes);
        if (r == -EINVAL)
                causes_error(causes, err);
        else if (r < 0)
                lg_error_set(err, -r, "pod spec");
        json_decref(causes);
        if (r < 0)
                return r;
        if (ret)
                *ret = out;
        else
                json_decref(out);
        return 0;
}

/* ---- metadata ---------------------------------------------------------------------------- */

#define ANNOTATIONS_MAX (256u << 10)

int lg_pod_check_metadata(const json_t *md, json_t *causes) {
        if (!json_is_object(md)) {
                invalid(causes, md, "must be an object", "metadata");
                return -EINVAL;
        }
        size_t before = json_array_size(causes);
        /* Owned by the server: clients echo them back, they are ignored. */
        static const char *const ignored[] = {"uid",           "resourceVersion", "creationTimestamp",
                                              "managedFields", "generation",      "selfLink",
                                              "deletionTimestamp", "deletionGracePeriodSeconds", NULL};
        const char *k;
        json_t *v;
        json_object_foreach((json_t *) md, k, v) {
                char f[128];
                snprintf(f, sizeof(f), "metadata.%s", k);
                if (one_of(k, ignored))
                        continue;
                if (!strcmp(k, "name")) {
                        const char *n = json_string_value(v);
                        if (!lg_store_valid_name(n))
                                invalid(causes, v,
                                        "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                                        "characters or '-', start and end with an alphanumeric character, and be "
                                        "at most 63 characters (Legion pod names are DNS labels)",
                                        f);
                } else if (!strcmp(k, "namespace")) {
                        if (!lg_store_valid_name(json_string_value(v)))
                                invalid(causes, v, "must be a namespace name", f);
                } else if (!strcmp(k, "labels")) {
                        struct lg_error e = {0};
                        if (!json_is_object(v))
                                invalid(causes, v, "must be a map of strings", f);
                        else if (lg_store_check_labels(v, &e) < 0)
                                invalid(causes, NULL, e.msg, f);
                } else if (!strcmp(k, "annotations")) {
                        if (!json_is_object(v)) {
                                invalid(causes, v, "must be a map of strings", f);
                                continue;
                        }
                        size_t total = 0;
                        const char *ak;
                        json_t *av;
                        json_object_foreach(v, ak, av) {
                                char af[200];
                                snprintf(af, sizeof(af), "metadata.annotations[%.120s]", ak);
                                if (!lg_store_valid_label_key(ak))
                                        invalid(causes, NULL,
                                                "name part must consist of alphanumeric characters, '-', '_' or "
                                                "'.', and must start and end with an alphanumeric character",
                                                af);
                                else if (!json_is_string(av))
                                        invalid(causes, av, "must be a string", af);
                                else
                                        total += strlen(ak) + json_string_length(av);
                                struct lg_net_policy np;
                                struct lg_error e = {0};
                                if (json_is_string(av) && !strcmp(ak, LG_TENANT_EGRESS_ANNOTATION) &&
                                    lg_tenant_policy_parse_text(json_string_value(av), NULL, &np, &e) < 0)
                                        invalid(causes, av, e.msg, af);
                        }
                        if (total > ANNOTATIONS_MAX)
                                add_cause(causes, "FieldValueTooLong", "Too long: must have at most 262144 bytes",
                                          "%s", f);
                } else {
                        FORBIDDEN(causes, "%s", f);
                }
        }
        if (!json_object_get(md, "name"))
                REQUIRED(causes, "metadata.name");
        return json_array_size(causes) > before ? -EINVAL : 0;
}

int lg_pod_validate_metadata(const json_t *metadata, struct lg_error *err) {
        json_t *causes = json_array();
        if (!causes)
                return lg_error_set(err, ENOMEM, "pod metadata");
        int r = lg_pod_check_metadata(metadata, causes);
        if (r < 0)
                causes_error(causes, err);
        json_decref(causes);
        return r;
}

/* ---- the Pod document ---------------------------------------------------------------------- */

json_t *lg_pod_to_json(const struct lg_resource *r) {
        char created[32], rv[24];
        lg_store_format_time(r->created_at, created, sizeof(created));
        snprintf(rv, sizeof(rv), "%lld", (long long) r->resource_version);
        json_t *md = json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", r->name, "namespace", r->namespace, "uid",
                               r->uid, "resourceVersion", rv, "creationTimestamp", created);
        if (!md)
                return NULL;
        if (json_object_size(r->labels))
                json_object_set(md, "labels", r->labels);
        json_t *ann = json_object_get(r->spec, "annotations");
        if (json_object_size(ann))
                json_object_set(md, "annotations", ann);
        json_t *dt = json_object_get(r->status, "deletionTimestamp");
        if (dt) {
                json_object_set(md, "deletionTimestamp", dt);
                json_t *g = json_object_get(r->status, "deletionGracePeriodSeconds");
                if (g)
                        json_object_set(md, "deletionGracePeriodSeconds", g);
        }
        json_t *spec = json_object_get(r->spec, "spec");
        json_t *status = json_object_get(r->status, "status");
        return json_pack("{s:s, s:s, s:o, s:o, s:o}", "apiVersion", "v1", "kind", "Pod", "metadata", md, "spec",
                         spec ? json_incref(spec) : json_object(), "status",
                         status ? json_incref(status) : json_pack("{s:s}", "phase", "Pending"));
}
