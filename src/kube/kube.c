/* Kubernetes helpers (kube.h): kubectl's pod columns, ages, RFC 3339 times
 * and exact resource.Quantity arithmetic, for legiond's API and the CLI.
 *
 * The pod columns follow printPod of Kubernetes' printers (the server-side
 * Table that kubectl prints); ages follow duration.HumanDuration. A
 * quantity is held as sign, up to 20 significant decimal digits, a decimal
 * and a binary exponent and a "sticky" bit for nonzero digits beyond those
 * 20, so that bytes and thousandths (all below 10^20) come out exact and
 * rounded up, whatever the length or exponent of the input. */
#include "kube/kube.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef unsigned __int128 u128;

/* ---- times ------------------------------------------------------------------ */

static bool digits(const char *s, int n, int *ret) {
        int v = 0;
        for (int i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (s[i] - '0');
        }
        *ret = v;
        return true;
}

int lg_kube_parse_time(const char *s, int64_t *ret) {
        int y, mo, d, h, mi, sec;
        if (!s || strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
            !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) || s[13] != ':' ||
            !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
                return -EINVAL;
        if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
                return -EINVAL;
        const char *p = s + 19;
        if (*p == '.') {
                if (!isdigit((unsigned char) p[1]))
                        return -EINVAL;
                for (p++; isdigit((unsigned char) *p); p++) {}
        }
        int offset = 0;
        if ((*p == 'Z' || *p == 'z') && !p[1]) {
                offset = 0;
        } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
                int oh, om;
                if (!digits(p + 1, 2, &oh) || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
                        return -EINVAL;
                offset = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        } else {
                return -EINVAL;
        }
        struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
        time_t t = timegm(&tm);
        if (t == (time_t) -1 || tm.tm_mday != d) /* timegm normalizes Feb 31 */
                return -EINVAL;
        *ret = (int64_t) t - offset;
        return 0;
}

const char *lg_kube_duration(int64_t s, char *buf, size_t cap) {
        if (s < -1) {
                snprintf(buf, cap, "<invalid>");
                return buf;
        }
        if (s < 0)
                s = 0;
        long long m = s / 60, h = s / 3600, d = h / 24;
        if (s < 120)
                snprintf(buf, cap, "%llds", (long long) s);
        else if (m < 10)
                s % 60 ? snprintf(buf, cap, "%lldm%llds", m, (long long) (s % 60)) : snprintf(buf, cap, "%lldm", m);
        else if (m < 180)
                snprintf(buf, cap, "%lldm", m);
        else if (h < 8)
                m % 60 ? snprintf(buf, cap, "%lldh%lldm", h, m % 60) : snprintf(buf, cap, "%lldh", h);
        else if (h < 48)
                snprintf(buf, cap, "%lldh", h);
        else if (h < 24 * 8)
                h % 24 ? snprintf(buf, cap, "%lldd%lldh", d, h % 24) : snprintf(buf, cap, "%lldd", d);
        else if (h < 24 * 365 * 2)
                snprintf(buf, cap, "%lldd", d);
        else if (h < 24 * 365 * 8)
                d % 365 ? snprintf(buf, cap, "%lldy%lldd", d / 365, d % 365) : snprintf(buf, cap, "%lldy", d / 365);
        else
                snprintf(buf, cap, "%lldy", d / 365);
        return buf;
}

const char *lg_kube_age(const char *stamp, int64_t now, char *buf, size_t cap) {
        int64_t t;
        if (lg_kube_parse_time(stamp, &t) < 0) {
                snprintf(buf, cap, "<unknown>");
                return buf;
        }
        return lg_kube_duration(now - t, buf, cap);
}

/* ---- pods ------------------------------------------------------------------- */

static const char *jstr(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static bool has_condition(const json_t *status, const char *type) {
        size_t i;
        const json_t *c;
        json_array_foreach(json_object_get(status, "conditions"), i, c) {
                const char *t = jstr(c, "type"), *s = jstr(c, "status");
                if (t && s && !strcmp(t, type) && !strcmp(s, "True"))
                        return true;
        }
        return false;
}

static void note_restart(const json_t *cs, int64_t *last) {
        int64_t t;
        const json_t *term = json_object_get(json_object_get(cs, "lastState"), "terminated");
        if (term && lg_kube_parse_time(jstr(term, "finishedAt"), &t) == 0 && t > *last)
                *last = t;
}

/* A sidecar: an init container with restartPolicy Always. */
static bool restartable(const json_t *spec, const char *name) {
        size_t i;
        const json_t *c;
        json_array_foreach(json_object_get(spec, "initContainers"), i, c) {
                const char *n = jstr(c, "name"), *rp = jstr(c, "restartPolicy");
                if (n && name && !strcmp(n, name))
                        return rp && !strcmp(rp, "Always");
        }
        return false;
}

/* The reason a terminated container gives, prefixed ("Init:" or ""). */
static void terminated_reason(const json_t *term, const char *prefix, char *buf, size_t cap) {
        const char *r = jstr(term, "reason");
        json_int_t sig = json_integer_value(json_object_get(term, "signal"));
        if (r && *r)
                snprintf(buf, cap, "%s%s", prefix, r);
        else if (sig)
                snprintf(buf, cap, "%sSignal:%lld", prefix, (long long) sig);
        else
                snprintf(buf, cap, "%sExitCode:%lld", prefix,
                         (long long) json_integer_value(json_object_get(term, "exitCode")));
}

void lg_kube_pod_summarize(const json_t *pod, struct lg_kube_pod_summary *s) {
        *s = (struct lg_kube_pod_summary){0};
        const json_t *spec = json_object_get(pod, "spec"), *st = json_object_get(pod, "status");
        const char *phase = jstr(st, "phase") ?: "", *preason = jstr(st, "reason");
        snprintf(s->status, sizeof(s->status), "%s", preason && *preason ? preason : phase);
        size_t i;
        const json_t *c;
        json_array_foreach(json_object_get(st, "conditions"), i, c) {
                const char *t = jstr(c, "type"), *r = jstr(c, "reason");
                if (t && r && !strcmp(t, "PodScheduled") && !strcmp(r, "SchedulingGated"))
                        snprintf(s->status, sizeof(s->status), "SchedulingGated");
        }
        s->total = (int) json_array_size(json_object_get(spec, "containers"));
        json_array_foreach(json_object_get(spec, "initContainers"), i, c)
                if (restartable(spec, jstr(c, "name")))
                        s->total++;

        int64_t side_restarts = 0, side_last = 0;
        bool initializing = false;
        const json_t *ics = json_object_get(st, "initContainerStatuses");
        json_array_foreach(ics, i, c) {
                const json_t *state = json_object_get(c, "state");
                const json_t *term = json_object_get(state, "terminated"), *wait = json_object_get(state, "waiting");
                bool side = restartable(spec, jstr(c, "name"));
                s->restarts += json_integer_value(json_object_get(c, "restartCount"));
                note_restart(c, &s->last_restart);
                if (side) {
                        side_restarts += json_integer_value(json_object_get(c, "restartCount"));
                        note_restart(c, &side_last);
                }
                if (term && !json_integer_value(json_object_get(term, "exitCode")))
                        continue;
                if (side && json_is_true(json_object_get(c, "started"))) {
                        s->ready += json_is_true(json_object_get(c, "ready"));
                        continue;
                }
                const char *wr = jstr(wait, "reason");
                if (term)
                        terminated_reason(term, "Init:", s->status, sizeof(s->status));
                else if (wr && *wr && strcmp(wr, "PodInitializing"))
                        snprintf(s->status, sizeof(s->status), "Init:%s", wr);
                else
                        snprintf(s->status, sizeof(s->status), "Init:%zu/%zu", i,
                                 json_array_size(json_object_get(spec, "initContainers")));
                initializing = true;
                break;
        }

        if (!initializing || has_condition(st, "Initialized")) {
                s->restarts = side_restarts;
                s->last_restart = side_last;
                bool running = false;
                const json_t *cs = json_object_get(st, "containerStatuses");
                /* Last to first: the first container's state wins. */
                for (size_t k = json_array_size(cs); k-- > 0;) {
                        c = json_array_get(cs, k);
                        const json_t *state = json_object_get(c, "state");
                        const json_t *term = json_object_get(state, "terminated");
                        const char *wr = jstr(json_object_get(state, "waiting"), "reason");
                        s->restarts += json_integer_value(json_object_get(c, "restartCount"));
                        note_restart(c, &s->last_restart);
                        if (wr && *wr) {
                                snprintf(s->status, sizeof(s->status), "%s", wr);
                        } else if (term) {
                                terminated_reason(term, "", s->status, sizeof(s->status));
                        } else if (json_is_true(json_object_get(c, "ready")) && json_object_get(state, "running")) {
                                running = true;
                                s->ready++;
                        }
                }
                if (!strcmp(s->status, "Completed") && running)
                        snprintf(s->status, sizeof(s->status), "%s", has_condition(st, "Ready") ? "Running" : "NotReady");
        }

        if (json_object_get(json_object_get(pod, "metadata"), "deletionTimestamp")) {
                if (preason && !strcmp(preason, "NodeLost"))
                        snprintf(s->status, sizeof(s->status), "Unknown");
                else if (strcmp(phase, "Succeeded") && strcmp(phase, "Failed"))
                        snprintf(s->status, sizeof(s->status), "Terminating");
        }
}

const char *lg_kube_pod_restarts(const struct lg_kube_pod_summary *s, int64_t now, char *buf, size_t cap) {
        char ago[32];
        if (s->restarts && s->last_restart)
                snprintf(buf, cap, "%lld (%s ago)", (long long) s->restarts,
                         lg_kube_duration(now - s->last_restart, ago, sizeof(ago)));
        else
                snprintf(buf, cap, "%lld", (long long) s->restarts);
        return buf;
}

/* ---- quantities ------------------------------------------------------------- */

#define MANT_DIGITS_MAX 10000000000000000000ull /* 10^19: a 20th digit still fits */
/* Kubernetes takes any exponent; Legion's API has refused beyond 10^+-30
 * (nothing it limits comes near) and keeps doing so: "1e999" is no size. */
#define EXPONENT_MAX 30

struct qty {
        bool neg;
        bool sticky; /* nonzero digits dropped beyond the 20 kept */
        u128 mant;
        long e10; /* bounded by the input's length plus EXPONENT_MAX */
        int e2;
};

static void add_digit(struct qty *q, int d, bool fraction) {
        if (q->mant < MANT_DIGITS_MAX) {
                q->mant = q->mant * 10 + (unsigned) d;
                q->e10 -= fraction;
        } else {
                q->e10 += !fraction;
                q->sticky |= d != 0;
        }
}

static int parse_text(const char *s, size_t len, struct qty *q) {
        *q = (struct qty){0};
        if (!s || !len || strlen(s) != len)
                return -EINVAL;
        const char *p = s;
        if (*p == '+' || *p == '-')
                q->neg = *p++ == '-';
        bool any = false;
        for (; isdigit((unsigned char) *p); p++, any = true)
                add_digit(q, *p - '0', false);
        if (*p == '.')
                for (p++; isdigit((unsigned char) *p); p++, any = true)
                        add_digit(q, *p - '0', true);
        if (!any)
                return -EINVAL;
        if ((*p == 'e' || *p == 'E') && (isdigit((unsigned char) p[1]) || p[1] == '+' || p[1] == '-')) {
                /* "1e3", "1E-3"; "1E" alone is exa, below. */
                const char *e = p + 1 + (p[1] == '+' || p[1] == '-');
                if (!*e)
                        return -EINVAL;
                long v = 0;
                for (const char *x = e; *x; x++) {
                        if (!isdigit((unsigned char) *x))
                                return -EINVAL;
                        if (v <= EXPONENT_MAX)
                                v = v * 10 + (*x - '0');
                }
                if (v > EXPONENT_MAX)
                        return -ERANGE;
                q->e10 += p[1] == '-' ? -v : v;
                return 0;
        }
        static const struct {
                const char *sfx;
                int e10, e2;
        } sfx[] = {
                {"", 0, 0},   {"n", -9, 0}, {"u", -6, 0}, {"m", -3, 0},  {"k", 3, 0},   {"M", 6, 0},
                {"G", 9, 0},  {"T", 12, 0}, {"P", 15, 0}, {"E", 18, 0},  {"Ki", 0, 10}, {"Mi", 0, 20},
                {"Gi", 0, 30}, {"Ti", 0, 40}, {"Pi", 0, 50}, {"Ei", 0, 60},
        };
        for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++)
                if (!strcmp(p, sfx[i].sfx)) {
                        q->e10 += sfx[i].e10;
                        q->e2 = sfx[i].e2;
                        return 0;
                }
        return -EINVAL;
}

static int parse_json(const json_t *j, struct qty *q) {
        char buf[64];
        if (json_is_integer(j)) {
                snprintf(buf, sizeof(buf), "%lld", (long long) json_integer_value(j));
        } else if (json_is_real(j)) {
                /* The shortest form that reads back as the same double: 0.1
                 * is "0.1" (not 0.10000000000000001, 101 thousandths). */
                double v = json_real_value(j);
                if (!isfinite(v))
                        return -EINVAL;
                for (int prec = 15; prec <= 17; prec++) {
                        snprintf(buf, sizeof(buf), "%.*g", prec, v);
                        if (strtod(buf, NULL) == v)
                                break;
                }
        } else if (json_is_string(j)) {
                return parse_text(json_string_value(j), json_string_length(j), q);
        } else {
                return -EINVAL;
        }
        return parse_text(buf, strlen(buf), q);
}

/* |q| * 10^scale10 rounded up, if it is at most max (< 2^127); -ERANGE. */
static int scaled(const struct qty *q, int scale10, u128 max, u128 *ret) {
        u128 v = q->mant << q->e2; /* mant < 10^20 < 2^67, e2 <= 60 */
        long e = q->e10 + scale10;
        bool rest = q->sticky;
        for (; e > 0 && v; e--) {
                if (v > max / 10)
                        return -ERANGE;
                v *= 10;
        }
        for (; e < 0 && v; e++) {
                rest |= v % 10 != 0;
                v /= 10;
        }
        v += rest;
        if (v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int lg_kube_quantity_parse(const json_t *j, long double *ret) {
        struct qty q;
        int r = parse_json(j, &q);
        if (r < 0)
                return r;
        long double v = ldexpl((long double) q.mant, q.e2) * powl(10, (long double) q.e10);
        if (!isfinite(v))
                return -ERANGE;
        *ret = q.neg ? -v : v;
        return 0;
}

static int to_units(const json_t *j, int scale10, u128 max, uint64_t *ret) {
        struct qty q;
        u128 v;
        int r = parse_json(j, &q);
        if (r < 0)
                return r;
        if (q.neg && (q.mant || q.sticky))
                return -EINVAL;
        if ((r = scaled(&q, scale10, max, &v)) < 0)
                return r;
        *ret = (uint64_t) v;
        return 0;
}

int lg_kube_quantity_bytes(const json_t *q, uint64_t *ret) { return to_units(q, 0, UINT64_MAX, ret); }

int lg_kube_quantity_millis(const json_t *q, uint64_t *ret) { return to_units(q, 3, 999999999999999999ull, ret); }

int lg_kube_quantity_cmp(const json_t *a, const json_t *b, int *ret) {
        struct qty qa, qb;
        int r;
        if ((r = parse_json(a, &qa)) < 0 || (r = parse_json(b, &qb)) < 0)
                return r;
        /* In nano units, rounded away from zero (Quantity's RoundUp), when
         * both fit; else by value. */
        u128 na, nb, max = ((u128) 1 << 126);
        if (scaled(&qa, 9, max, &na) == 0 && scaled(&qb, 9, max, &nb) == 0) {
                __int128 x = qa.neg ? -(__int128) na : (__int128) na, y = qb.neg ? -(__int128) nb : (__int128) nb;
                *ret = (x > y) - (x < y);
                return 0;
        }
        /* Beyond long double (-ERANGE) is infinity of its sign. */
        long double x, y;
        if (lg_kube_quantity_parse(a, &x) < 0)
                x = qa.neg ? -INFINITY : INFINITY;
        if (lg_kube_quantity_parse(b, &y) < 0)
                y = qb.neg ? -INFINITY : INFINITY;
        *ret = (x > y) - (x < y);
        return 0;
}
