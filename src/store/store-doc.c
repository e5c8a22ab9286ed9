/* Names, labels, times and the resource document: validation and the
 * conversions between struct lg_resource and its JSON form. */
#include "store/store-internal.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

static bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
static bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

/* [a-z0-9]([-a-z0-9]*[a-z0-9])? of exactly len bytes. */
static bool dns_label(const char *s, size_t len) {
        if (len == 0 || len > LG_STORE_NAME_MAX)
                return false;
        if (!is_lower_alnum(s[0]) || !is_lower_alnum(s[len - 1]))
                return false;
        for (size_t i = 1; i + 1 < len; i++)
                if (!is_lower_alnum(s[i]) && s[i] != '-')
                        return false;
        return true;
}

bool lg_store_valid_name(const char *s) { return s && dns_label(s, strnlen(s, LG_STORE_NAME_MAX + 1)); }

bool lg_store_valid_kind(const char *s) {
        if (!s || !(s[0] >= 'A' && s[0] <= 'Z'))
                return false;
        size_t n = strnlen(s, LG_STORE_NAME_MAX + 1);
        if (n > LG_STORE_NAME_MAX)
                return false;
        for (size_t i = 1; i < n; i++)
                if (!is_alnum(s[i]))
                        return false;
        return true;
}

/* [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?, 1..63 bytes. */
static bool label_name(const char *s, size_t len) {
        if (len == 0 || len > 63 || !is_alnum(s[0]) || !is_alnum(s[len - 1]))
                return false;
        for (size_t i = 1; i + 1 < len; i++)
                if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
                        return false;
        return true;
}

/* DNS-1123 subdomain: dot-separated labels, at most 253 bytes. */
static bool dns_subdomain(const char *s, size_t len) {
        if (len == 0 || len > 253)
                return false;
        size_t start = 0;
        for (size_t i = 0; i <= len; i++)
                if (i == len || s[i] == '.') {
                        if (!dns_label(s + start, i - start))
                                return false;
                        start = i + 1;
                }
        return true;
}

bool lg_store_valid_label_key(const char *s) {
        if (!s)
                return false;
        size_t len = strnlen(s, 254 + 64);
        const char *slash = memchr(s, '/', len);
        if (!slash)
                return label_name(s, len);
        size_t plen = (size_t) (slash - s);
        return dns_subdomain(s, plen) && label_name(slash + 1, len - plen - 1);
}

bool lg_store_valid_label_value(const char *s) {
        if (!s)
                return false;
        size_t len = strnlen(s, 64);
        return len == 0 || label_name(s, len);
}

int lg_store_check_labels(const json_t *labels, struct lg_error *err) {
        if (!json_is_object(labels))
                return lg_error_set(err, EINVAL, "labels must be a JSON object");
        if (json_object_size(labels) > LG_STORE_LABELS_MAX)
                return lg_error_set(err, EINVAL, "more than %d labels", LG_STORE_LABELS_MAX);
        const char *k;
        size_t klen;
        json_t *v;
        /* Iteration does not modify; jansson's iterator just wants non-const. */
        json_object_keylen_foreach ((json_t *) labels, k, klen, v) {
                if (strlen(k) != klen || !lg_store_valid_label_key(k))
                        return lg_error_set(err, EINVAL,
                                            "invalid label key (want [prefix/]name, name "
                                            "[A-Za-z0-9][-A-Za-z0-9_.]* up to 63 chars)");
                if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
                    !lg_store_valid_label_value(json_string_value(v)))
                        return lg_error_set(err, EINVAL, "invalid value of label `%s`", k);
        }
        return 0;
}

int lg_store_format_time(int64_t t, char *buf, size_t size) {
        struct tm tm;
        time_t tt = (time_t) t;
        if ((int64_t) tt != t || !gmtime_r(&tt, &tm) || tm.tm_year + 1900 > 9999 ||
            tm.tm_year + 1900 < 0)
                return -EINVAL;
        if (strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return -EINVAL;
        return 0;
}

int lg_store_parse_time(const char *s, int64_t *ret) {
        if (!s || strlen(s) != 20)
                return -EINVAL;
        struct tm tm = {0};
        const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (!end || *end)
                return -EINVAL;
        *ret = (int64_t) timegm(&tm);
        return 0;
}

int64_t lg_store_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec;
}

struct lg_resource *lg_resource_new(void) {
        struct lg_resource *r = calloc(1, sizeof(*r));
        if (!r)
                return NULL;
        r->labels = json_object();
        r->spec = json_object();
        r->status = json_object();
        if (!r->labels || !r->spec || !r->status) {
                lg_resource_free(r);
                return NULL;
        }
        return r;
}

void lg_resource_free(struct lg_resource *r) {
        if (!r)
                return;
        json_decref(r->labels);
        json_decref(r->spec);
        json_decref(r->status);
        free(r);
}

void lg_resource_list_free(struct lg_resource_list *l) {
        if (!l)
                return;
        for (size_t i = 0; i < l->n; i++)
                lg_resource_free(l->items[i]);
        free(l->items);
        *l = (struct lg_resource_list){0};
}

char *lg_store_dump(const json_t *doc) { return json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS); }

int lg_store_load_doc(const char *text, json_t **ret, struct lg_error *err) {
        json_error_t je;
        json_t *v = text ? json_loads(text, JSON_ALLOW_NUL, &je) : NULL;
        if (!json_is_object(v)) {
                json_decref(v);
                return lg_error_set(err, EUCLEAN, "stored document is not a JSON object");
        }
        *ret = v;
        return 0;
}

int lg_store_copy_field(char *dst, size_t size, const char *src) {
        if (!src)
                return -EUCLEAN;
        size_t n = strnlen(src, size);
        if (n >= size)
                return -EUCLEAN;
        memcpy(dst, src, n + 1);
        return 0;
}

json_t *lg_resource_to_json(const struct lg_resource *r) {
        char created[32], updated[32], rv[24];
        if (lg_store_format_time(r->created_at, created, sizeof(created)) < 0 ||
            lg_store_format_time(r->updated_at, updated, sizeof(updated)) < 0)
                return NULL;
        snprintf(rv, sizeof(rv), "%" PRId64, r->resource_version);
        json_t *meta = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:O}", "name", r->name, "uid",
                                 r->uid, "resourceVersion", rv, "generation",
                                 (json_int_t) r->generation, "creationTimestamp", created,
                                 "updateTimestamp", updated, "labels", r->labels);
        if (!meta)
                return NULL;
        if (r->namespace[0] && json_object_set_new(meta, "namespace", json_string(r->namespace)) < 0) {
                json_decref(meta);
                return NULL;
        }
        return json_pack("{s:s, s:o, s:O, s:O}", "kind", r->kind, "metadata", meta, "spec", r->spec,
                         "status", r->status);
}

static int copy_name(char *dst, const char *src, bool (*valid)(const char *), const char *what,
                     struct lg_error *err) {
        if (!valid(src))
                return lg_error_set(err, EINVAL, "document has an invalid %s", what);
        strcpy(dst, src); /* valid() bounded it to LG_STORE_NAME_MAX */
        return 0;
}

static bool valid_uid(const char *s) {
        if (strlen(s) != 36)
                return false;
        for (int i = 0; i < 36; i++) {
                bool dash = i == 8 || i == 13 || i == 18 || i == 23;
                if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        }
        return true;
}

static bool valid_namespace(const char *s) { return s[0] == '\0' || lg_store_valid_name(s); }

int lg_resource_from_json(const json_t *doc, struct lg_resource **ret, struct lg_error *err) {
        const char *kind, *name, *ns = "", *uid, *rv, *created, *updated;
        json_int_t gen;
        json_t *labels = NULL, *spec = NULL, *status = NULL;
        json_error_t je;
        if (json_unpack_ex((json_t *) doc, &je, JSON_STRICT,
                           "{s:s, s:{s:s, s?s, s:s, s:s, s:I, s:s, s:s, s?o}, s?o, s?o}", "kind",
                           &kind, "metadata", "name", &name, "namespace", &ns, "uid", &uid,
                           "resourceVersion", &rv, "generation", &gen, "creationTimestamp",
                           &created, "updateTimestamp", &updated, "labels", &labels, "spec",
                           &spec, "status", &status) < 0)
                return lg_error_set(err, EINVAL, "bad resource document: %s", je.text);

        _cleanup_resource_ struct lg_resource *r = lg_resource_new();
        if (!r)
                return lg_error_set(err, ENOMEM, "resource document");
        int k;
        if ((k = copy_name(r->kind, kind, lg_store_valid_kind, "kind", err)) < 0 ||
            (k = copy_name(r->name, name, lg_store_valid_name, "name", err)) < 0 ||
            (k = copy_name(r->namespace, ns, valid_namespace, "namespace", err)) < 0 ||
            (k = copy_name(r->uid, uid, valid_uid, "uid", err)) < 0)
                return k;
        char *end;
        errno = 0;
        long long v = strtoll(rv, &end, 10);
        if (errno || end == rv || *end || v <= 0)
                return lg_error_set(err, EINVAL, "document has an invalid resourceVersion");
        r->resource_version = v;
        if (gen <= 0)
                return lg_error_set(err, EINVAL, "document has an invalid generation");
        r->generation = gen;
        if (lg_store_parse_time(created, &r->created_at) < 0 ||
            lg_store_parse_time(updated, &r->updated_at) < 0)
                return lg_error_set(err, EINVAL, "document has an invalid timestamp");
        if (labels) {
                if ((k = lg_store_check_labels(labels, err)) < 0)
                        return k;
                json_decref(r->labels);
                r->labels = json_deep_copy(labels);
        }
        if (spec) {
                if (!json_is_object(spec))
                        return lg_error_set(err, EINVAL, "document spec is not an object");
                json_decref(r->spec);
                r->spec = json_deep_copy(spec);
        }
        if (status) {
                if (!json_is_object(status))
                        return lg_error_set(err, EINVAL, "document status is not an object");
                json_decref(r->status);
                r->status = json_deep_copy(status);
        }
        if (!r->labels || !r->spec || !r->status)
                return lg_error_set(err, ENOMEM, "resource document");
        *ret = TAKE_PTR(r);
        return 0;
}

const char *lg_event_type_name(enum lg_event_type t) {
        switch (t) {
        case LG_EVENT_ADDED:
                return "ADDED";
        case LG_EVENT_MODIFIED:
                return "MODIFIED";
        case LG_EVENT_DELETED:
                return "DELETED";
        }
        return "UNKNOWN";
}
