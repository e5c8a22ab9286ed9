/* The generic layer of the store: opening, transactions, resources, the
 * event log and revisions. Every value (resource version, generation, uid,
 * timestamps, event objects) is computed here; the backend only stores rows
 * (see store-internal.h). Tokens and blob records are in store-records.c. */
#include "store/store-internal.h"

#include <inttypes.h>
#include <string.h>

/* ---- opening and transactions ------------------------------------------- */

static bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

int lg_store_open(const char *location, const struct lg_store_options *opts, lg_store **ret,
                  struct lg_error *err) {
        if (!location || !*location || !ret)
                return lg_error_set(err, EINVAL, "store location is empty");
        const char *path = location;
        if (startswith(location, "sqlite:"))
                path += strlen("sqlite:");
        else if (startswith(location, "postgres://") || startswith(location, "postgresql://"))
                return lg_error_set(err, EPROTONOSUPPORT,
                                    "this legiond has no PostgreSQL store backend");
        return lg_store_sqlite_open(path, opts, 0, ret, err);
}

void lg_store_close(lg_store *st) {
        if (!st)
                return;
        if (st->in_tx)
                st->ops->rollback(st);
        lg_token_cache_free(st->tokens);
        st->ops->close(st);
}

int lg_store_check(lg_store *st, struct lg_error *err) { return st->ops->check(st, err); }

int lg_store_current_rv(lg_store *st, int64_t *ret, struct lg_error *err) {
        return st->ops->current_rv(st, ret, err);
}

int lg_store_tx_enter(lg_store *st, bool write, struct lg_error *err) {
        if (!st->in_tx)
                return st->ops->begin(st, write, err);
        int r = st->ops->savepoint(st, err);
        if (r >= 0)
                st->saved_rv = st->pending_rv;
        return r;
}

static void fire_hook(lg_store *st) {
        int64_t rv = st->pending_rv;
        st->pending_rv = 0;
        if (rv > 0 && st->hook)
                st->hook(st->hook_userdata, rv);
}

int lg_store_tx_leave(lg_store *st, int r, struct lg_error *err) {
        if (st->in_tx) {
                if (r >= 0) {
                        int k = st->ops->release(st, err);
                        if (k >= 0)
                                return r;
                        r = k;
                }
                st->ops->rollback_to(st);
                st->pending_rv = st->saved_rv;
                return r;
        }
        if (r >= 0) {
                int k = st->ops->commit(st, err);
                if (k >= 0) {
                        fire_hook(st);
                        return r;
                }
                r = k;
        }
        st->ops->rollback(st);
        st->pending_rv = 0;
        return r;
}

int lg_store_begin(lg_store *st, struct lg_error *err) {
        if (st->in_tx)
                return lg_error_set(err, EBUSY, "a store transaction is already open");
        int r = st->ops->begin(st, true, err);
        if (r < 0)
                return r;
        st->in_tx = true;
        st->pending_rv = 0;
        return 0;
}

int lg_store_commit(lg_store *st, struct lg_error *err) {
        if (!st->in_tx)
                return lg_error_set(err, EINVAL, "no store transaction is open");
        st->in_tx = false;
        return lg_store_tx_leave(st, 0, err);
}

void lg_store_rollback(lg_store *st) {
        if (!st->in_tx)
                return;
        st->in_tx = false;
        st->ops->rollback(st);
        st->pending_rv = 0;
}

bool lg_store_in_transaction(const lg_store *st) { return st->in_tx; }

void lg_store_set_commit_hook(lg_store *st, void (*fn)(void *userdata, int64_t rv),
                              void *userdata) {
        st->hook = fn;
        st->hook_userdata = userdata;
}

/* ---- validation and encoding -------------------------------------------- */

#define NAME_RULE "a DNS-1123 label: lowercase letters, digits and '-', up to 63 chars"

static int check_namespace(const char *ns, bool null_ok, struct lg_error *err) {
        if (!ns ? null_ok : (ns[0] == '\0' || lg_store_valid_name(ns)))
                return 0;
        return lg_error_set(err, EINVAL, "invalid namespace (want " NAME_RULE ")");
}

static int check_kind(const char *kind, bool null_ok, struct lg_error *err) {
        if (!kind ? null_ok : lg_store_valid_kind(kind))
                return 0;
        return lg_error_set(err, EINVAL, "invalid kind (want [A-Z][A-Za-z0-9]*, up to 63 chars)");
}

int lg_store_check_key(const struct lg_resource_key *key, struct lg_error *err) {
        if (!key)
                return lg_error_set(err, EINVAL, "no resource key");
        int r;
        if ((r = check_kind(key->kind, false, err)) < 0 ||
            (r = check_namespace(key->namespace, false, err)) < 0)
                return r;
        if (!lg_store_valid_name(key->name))
                return lg_error_set(err, EINVAL, "invalid name (want " NAME_RULE ")");
        return 0;
}

const char *lg_store_key_str(const struct lg_resource_key *key, char buf[static 200]) {
        if (key->namespace[0])
                snprintf(buf, 200, "%s %s/%s", key->kind, key->namespace, key->name);
        else
                snprintf(buf, 200, "%s %s", key->kind, key->name);
        return buf;
}

static const struct lg_resource_key *key_of(const struct lg_resource *r,
                                            struct lg_resource_key *k) {
        *k = (struct lg_resource_key){r->kind, r->namespace, r->name};
        return k;
}

static int check_doc(const json_t *doc, const char *what, struct lg_error *err) {
        if (doc && !json_is_object(doc))
                return lg_error_set(err, EINVAL, "%s must be a JSON object", what);
        return 0;
}

static int check_docs(const json_t *labels, const json_t *spec, const json_t *status,
                      struct lg_error *err) {
        int r;
        if (labels && (r = lg_store_check_labels(labels, err)) < 0)
                return r;
        if ((r = check_doc(spec, "spec", err)) < 0 || (r = check_doc(status, "status", err)) < 0)
                return r;
        return 0;
}

static int replace_doc(json_t **slot, const json_t *v) {
        json_t *c = json_deep_copy(v);
        if (!c)
                return -ENOMEM;
        json_decref(*slot);
        *slot = c;
        return 0;
}

struct encoded {
        char *labels, *spec, *status;
};

static void encoded_done(struct encoded *e) {
        free(e->labels);
        free(e->spec);
        free(e->status);
}

static int encode(const struct lg_resource *r, struct encoded *e, struct lg_store_row *row,
                  struct lg_error *err) {
        e->labels = lg_store_dump(r->labels);
        e->spec = lg_store_dump(r->spec);
        e->status = lg_store_dump(r->status);
        if (!e->labels || !e->spec || !e->status)
                return lg_error_set(err, ENOMEM, "serialize documents");
        if (strlen(e->spec) > LG_STORE_DOC_MAX)
                return lg_error_set(err, E2BIG, "spec is larger than %u bytes", LG_STORE_DOC_MAX);
        if (strlen(e->status) > LG_STORE_DOC_MAX)
                return lg_error_set(err, E2BIG, "status is larger than %u bytes",
                                    LG_STORE_DOC_MAX);
        *row = (struct lg_store_row){r, e->labels, e->spec, e->status};
        return 0;
}

/* A random UUID, version 4. */
static int new_uid(char out[static 37]) {
        char hex[33];
        int r = lg_random_hex(hex, 16);
        if (r < 0)
                return r;
        char c = hex[16];
        int v = c <= '9' ? c - '0' : c - 'a' + 10;
        hex[12] = '4';
        hex[16] = "89ab"[v & 3];
        snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
                 hex + 20);
        return 0;
}

/* ---- resources ---------------------------------------------------------- */

/* Log the write of r (its resource_version already the new one) and keep the
 * log to events_keep entries. */
static int append_event(lg_store *st, enum lg_event_type type, const struct lg_resource *r,
                        struct lg_error *err) {
        json_t *doc = lg_resource_to_json(r);
        char *text = doc ? lg_store_dump(doc) : NULL;
        json_decref(doc);
        if (!text)
                return lg_error_set(err, ENOMEM, "serialize event");
        int k = st->ops->event_append(st, r->resource_version, type, r, text, err);
        free(text);
        if (k < 0)
                return k;
        if (r->resource_version > (int64_t) st->events_keep &&
            (k = st->ops->event_trim(st, r->resource_version - st->events_keep, err)) < 0)
                return k;
        st->pending_rv = r->resource_version;
        return 0;
}

static int get_locked(lg_store *st, const struct lg_resource_key *key, struct lg_resource **ret,
                      struct lg_error *err) {
        int r = st->ops->res_get(st, key, ret, err);
        if (r == -ENOENT) {
                char b[200];
                return lg_error_set(err, ENOENT, "%s not found", lg_store_key_str(key, b));
        }
        return r;
}

static int check_rv(const struct lg_resource *cur, int64_t expected, struct lg_error *err) {
        if (expected <= 0 || cur->resource_version == expected)
                return 0;
        char b[200];
        struct lg_resource_key k;
        return lg_error_set(err, ESTALE,
                            "conflict: %s is at resourceVersion %" PRId64 ", not %" PRId64
                            "; read it again",
                            lg_store_key_str(key_of(cur, &k), b), cur->resource_version, expected);
}

static int create_locked(lg_store *st, const struct lg_resource_key *key, const json_t *labels,
                         const json_t *spec, const json_t *status, struct lg_resource **ret,
                         struct lg_error *err) {
        _cleanup_resource_ struct lg_resource *r = lg_resource_new();
        if (!r)
                return lg_error_set(err, ENOMEM, "create");
        strcpy(r->kind, key->kind); /* validated: bounded */
        strcpy(r->namespace, key->namespace);
        strcpy(r->name, key->name);
        int k = new_uid(r->uid);
        if (k < 0)
                return lg_error_set(err, k, "random uid");
        r->generation = 1;
        r->created_at = r->updated_at = lg_store_now();
        if ((labels && replace_doc(&r->labels, labels) < 0) ||
            (spec && replace_doc(&r->spec, spec) < 0) ||
            (status && replace_doc(&r->status, status) < 0))
                return lg_error_set(err, ENOMEM, "create");

        _cleanup_(encoded_done) struct encoded e = {0};
        struct lg_store_row row;
        if ((k = encode(r, &e, &row, err)) < 0 ||
            (k = st->ops->next_rv(st, &r->resource_version, err)) < 0)
                return k;
        k = st->ops->res_insert(st, &row, err);
        if (k == -EEXIST) {
                char b[200];
                return lg_error_set(err, EEXIST, "%s already exists", lg_store_key_str(key, b));
        }
        if (k < 0 || (k = append_event(st, LG_EVENT_ADDED, r, err)) < 0)
                return k;
        if (ret)
                *ret = TAKE_PTR(r);
        return 0;
}

/* Write cur with the given labels/spec/status (NULL = keep) as a new
 * version, unless nothing changes. Takes cur. Returns 1 written, 0 no-op. */
static int modify_locked(lg_store *st, struct lg_resource *cur_, const json_t *labels,
                         const json_t *spec, const json_t *status, struct lg_resource **ret,
                         struct lg_error *err) {
        _cleanup_resource_ struct lg_resource *cur = cur_;
        bool spec_changed = spec && !json_equal(spec, cur->spec);
        bool labels_changed = labels && !json_equal(labels, cur->labels);
        bool status_changed = status && !json_equal(status, cur->status);
        if (!spec_changed && !labels_changed && !status_changed) {
                if (ret)
                        *ret = TAKE_PTR(cur);
                return 0;
        }
        if ((spec_changed && replace_doc(&cur->spec, spec) < 0) ||
            (labels_changed && replace_doc(&cur->labels, labels) < 0) ||
            (status_changed && replace_doc(&cur->status, status) < 0))
                return lg_error_set(err, ENOMEM, "update");
        if (spec_changed)
                cur->generation++;
        cur->updated_at = lg_store_now();

        _cleanup_(encoded_done) struct encoded e = {0};
        struct lg_store_row row;
        int k;
        if ((k = encode(cur, &e, &row, err)) < 0 ||
            (k = st->ops->next_rv(st, &cur->resource_version, err)) < 0 ||
            (k = st->ops->res_update(st, &row, err)) < 0 ||
            (k = append_event(st, LG_EVENT_MODIFIED, cur, err)) < 0)
                return k;
        if (ret)
                *ret = TAKE_PTR(cur);
        return 1;
}

int lg_store_create(lg_store *st, const struct lg_resource_key *key, const json_t *labels,
                    const json_t *spec, const json_t *status, struct lg_resource **ret,
                    struct lg_error *err) {
        int r;
        if ((r = lg_store_check_key(key, err)) < 0 ||
            (r = check_docs(labels, spec, status, err)) < 0 ||
            (r = lg_store_tx_enter(st, true, err)) < 0)
                return r;
        r = create_locked(st, key, labels, spec, status, ret, err);
        return lg_store_tx_leave(st, r, err);
}

int lg_store_get(lg_store *st, const struct lg_resource_key *key, struct lg_resource **ret,
                 struct lg_error *err) {
        int r = lg_store_check_key(key, err);
        if (r < 0)
                return r;
        struct lg_resource *res;
        if ((r = get_locked(st, key, &res, err)) < 0)
                return r;
        if (ret)
                *ret = res;
        else
                lg_resource_free(res);
        return 0;
}

int lg_store_vec_push(struct lg_store_vec *v, const void *item) {
        if (v->n == v->cap) {
                size_t cap = v->cap ? v->cap * 2 : 16;
                void *items = realloc(v->items, cap * v->size);
                if (!items)
                        return lg_error_set(v->err, ENOMEM, "%s", v->what);
                v->items = items;
                v->cap = cap;
        }
        memcpy((char *) v->items + v->n * v->size, item, v->size);
        v->n++;
        return 0;
}

struct list_ctx {
        const struct lg_selector *sel;
        struct lg_store_vec v; /* of struct lg_resource * */
};

static int list_one(struct lg_resource *r, void *userdata) {
        struct list_ctx *c = userdata;
        if (!lg_selector_matches(c->sel, r->labels)) {
                lg_resource_free(r);
                return 0;
        }
        int k = lg_store_vec_push(&c->v, &r);
        if (k < 0)
                lg_resource_free(r);
        return k;
}

int lg_store_list(lg_store *st, const char *kind, const char *namespace,
                  const struct lg_selector *sel, struct lg_resource_list *ret,
                  struct lg_error *err) {
        int r;
        *ret = (struct lg_resource_list){0};
        if ((r = check_kind(kind, false, err)) < 0 ||
            (r = check_namespace(namespace, true, err)) < 0 ||
            (r = lg_store_tx_enter(st, false, err)) < 0)
                return r;
        struct list_ctx c = {sel, {.size = sizeof(*ret->items), .err = err, .what = "list"}};
        r = st->ops->current_rv(st, &ret->resource_version, err);
        if (r >= 0)
                r = st->ops->res_list(st, kind, namespace, list_one, &c, err);
        r = lg_store_tx_leave(st, r, err);
        ret->items = c.v.items;
        ret->n = c.v.n;
        if (r < 0)
                lg_resource_list_free(ret);
        return r;
}

/* Write the given documents (NULL = keep) over the object if it is at
 * expected_rv (<= 0: any). */
static int update(lg_store *st, const struct lg_resource_key *key, int64_t expected_rv,
                  const json_t *labels, const json_t *spec, const json_t *status,
                  struct lg_resource **ret, struct lg_error *err) {
        int r;
        if ((r = check_docs(labels, spec, status, err)) < 0 ||
            (r = lg_store_tx_enter(st, true, err)) < 0)
                return r;
        struct lg_resource *cur = NULL;
        if ((r = get_locked(st, key, &cur, err)) >= 0 && (r = check_rv(cur, expected_rv, err)) >= 0)
                r = modify_locked(st, TAKE_PTR(cur), labels, spec, status, ret, err);
        lg_resource_free(cur);
        return lg_store_tx_leave(st, r, err);
}

int lg_store_update(lg_store *st, const struct lg_resource_key *key, int64_t expected_rv,
                    const json_t *labels, const json_t *spec, struct lg_resource **ret,
                    struct lg_error *err) {
        int r = lg_store_check_key(key, err);
        return r < 0 ? r : update(st, key, expected_rv, labels, spec, NULL, ret, err);
}

int lg_store_update_status(lg_store *st, const struct lg_resource_key *key,
                           int64_t expected_rv, const json_t *status,
                           struct lg_resource **ret, struct lg_error *err) {
        int r;
        if ((r = lg_store_check_key(key, err)) < 0)
                return r;
        if (!status)
                return lg_error_set(err, EINVAL, "no status");
        return update(st, key, expected_rv, NULL, NULL, status, ret, err);
}

int lg_store_delete(lg_store *st, const struct lg_resource_key *key, int64_t expected_rv,
                    struct lg_resource **ret, struct lg_error *err) {
        int r;
        if ((r = lg_store_check_key(key, err)) < 0 || (r = lg_store_tx_enter(st, true, err)) < 0)
                return r;
        _cleanup_resource_ struct lg_resource *cur = NULL;
        if ((r = get_locked(st, key, &cur, err)) >= 0 &&
            (r = check_rv(cur, expected_rv, err)) >= 0 &&
            (r = st->ops->next_rv(st, &cur->resource_version, err)) >= 0 &&
            (r = st->ops->res_delete(st, key, err)) >= 0)
                r = append_event(st, LG_EVENT_DELETED, cur, err);
        r = lg_store_tx_leave(st, r, err);
        if (r >= 0 && ret)
                *ret = TAKE_PTR(cur);
        return r;
}

int lg_store_apply(lg_store *st, const struct lg_resource_key *key, const json_t *labels,
                   const json_t *spec, struct lg_resource **ret, struct lg_error *err) {
        int r;
        if ((r = lg_store_check_key(key, err)) < 0 ||
            (r = check_docs(labels, spec, NULL, err)) < 0 ||
            (r = lg_store_tx_enter(st, true, err)) < 0)
                return r;
        struct lg_resource *cur = NULL;
        r = st->ops->res_get(st, key, &cur, err);
        if (r == -ENOENT) {
                r = create_locked(st, key, labels, spec, NULL, ret, err);
                if (r >= 0)
                        r = LG_STORE_CREATED;
        } else if (r >= 0) {
                /* A spec given as NULL means {} here, as it does for create. */
                json_t *empty = spec ? NULL : json_object();
                r = modify_locked(st, cur, labels, spec ? spec : empty, NULL, ret, err);
                json_decref(empty);
                if (r > 0)
                        r = LG_STORE_UPDATED;
        }
        return lg_store_tx_leave(st, r, err);
}

/* ---- watch -------------------------------------------------------------- */

void lg_event_list_free(struct lg_event_list *l) {
        if (!l)
                return;
        for (size_t i = 0; i < l->n; i++)
                lg_resource_free(l->items[i].object);
        free(l->items);
        *l = (struct lg_event_list){0};
}

/* userdata is a struct lg_store_vec of struct lg_event. */
static int event_one(int64_t rv, enum lg_event_type type, const char *object_json,
                     void *userdata) {
        struct lg_store_vec *v = userdata;
        json_error_t je;
        json_t *doc = json_loads(object_json, JSON_ALLOW_NUL, &je);
        if (!doc)
                return lg_error_set(v->err, EUCLEAN, "event %" PRId64 " holds bad JSON", rv);
        struct lg_resource *obj;
        int r = lg_resource_from_json(doc, &obj, v->err);
        json_decref(doc);
        if (r < 0)
                return lg_error_wrap(v->err, -EUCLEAN, "event %" PRId64, rv);
        if ((r = lg_store_vec_push(v, &(struct lg_event){rv, type, obj})) < 0)
                lg_resource_free(obj);
        return r;
}

int lg_store_events_since(lg_store *st, int64_t after_rv, const char *kind,
                          const char *namespace, size_t limit, struct lg_event_list *ret,
                          struct lg_error *err) {
        int r;
        *ret = (struct lg_event_list){0};
        if (after_rv < 0)
                return lg_error_set(err, EINVAL, "negative resource version");
        if ((r = check_kind(kind, true, err)) < 0 ||
            (r = check_namespace(namespace, true, err)) < 0 ||
            (r = lg_store_tx_enter(st, false, err)) < 0)
                return r;
        int64_t floor = 0, current = 0;
        struct lg_store_vec v = {.size = sizeof(*ret->items), .err = err, .what = "events"};
        if ((r = st->ops->event_floor(st, &floor, err)) >= 0 &&
            (r = st->ops->current_rv(st, &current, err)) >= 0) {
                if (after_rv < floor)
                        r = lg_error_set(err, EIDRM,
                                         "resource version %" PRId64 " is too old: the events "
                                         "up to %" PRId64 " are gone; list again",
                                         after_rv, floor);
                else
                        r = st->ops->event_list(st, after_rv, kind, namespace, limit, event_one, &v,
                                                err);
        }
        r = lg_store_tx_leave(st, r, err);
        ret->items = v.items;
        ret->n = v.n;
        if (r < 0) {
                lg_event_list_free(ret);
                return r;
        }
        if (limit > 0 && ret->n == limit)
                ret->resource_version = ret->items[ret->n - 1].resource_version;
        else
                ret->resource_version = current > after_rv ? current : after_rv;
        return 0;
}

/* ---- revisions ---------------------------------------------------------- */

void lg_revision_free(struct lg_revision *rev) {
        if (!rev)
                return;
        json_decref(rev->spec);
        free(rev);
}

void lg_revision_list_free(struct lg_revision_list *l) {
        if (!l)
                return;
        for (size_t i = 0; i < l->n; i++)
                json_decref(l->items[i].spec);
        free(l->items);
        *l = (struct lg_revision_list){0};
}

int lg_store_must_exist(lg_store *st, const struct lg_resource_key *key, struct lg_error *err) {
        struct lg_resource *r = NULL;
        int k = get_locked(st, key, &r, err);
        lg_resource_free(r);
        return k;
}

int lg_store_revision_add(lg_store *st, const struct lg_resource_key *key, const json_t *spec,
                          int64_t *ret_number, struct lg_error *err) {
        int r;
        if ((r = lg_store_check_key(key, err)) < 0)
                return r;
        if (!json_is_object(spec))
                return lg_error_set(err, EINVAL, "revision spec must be a JSON object");
        _cleanup_free_ char *text = lg_store_dump(spec);
        if (!text)
                return lg_error_set(err, ENOMEM, "serialize revision");
        if (strlen(text) > LG_STORE_DOC_MAX)
                return lg_error_set(err, E2BIG, "spec is larger than %u bytes", LG_STORE_DOC_MAX);
        if ((r = lg_store_tx_enter(st, true, err)) < 0)
                return r;
        _cleanup_revision_ struct lg_revision *latest = NULL;
        int64_t number = 1;
        if ((r = lg_store_must_exist(st, key, err)) >= 0) {
                r = st->ops->rev_get(st, key, 0, &latest, err);
                if (r == -ENOENT)
                        r = 0;
        }
        if (r >= 0 && latest && json_equal(latest->spec, spec)) {
                number = latest->number;
                r = 0;
        } else if (r >= 0) {
                number = latest ? latest->number + 1 : 1;
                r = st->ops->rev_insert(st, key, number, lg_store_now(), text, err);
                if (r >= 0)
                        r = 1;
        }
        r = lg_store_tx_leave(st, r, err);
        if (r >= 0 && ret_number)
                *ret_number = number;
        return r;
}

int lg_store_revision_get(lg_store *st, const struct lg_resource_key *key, int64_t number,
                          struct lg_revision **ret, struct lg_error *err) {
        int r;
        if ((r = lg_store_check_key(key, err)) < 0)
                return r;
        if (number < 0)
                return lg_error_set(err, EINVAL, "negative revision number");
        struct lg_revision *rev;
        r = st->ops->rev_get(st, key, number, &rev, err);
        if (r == -ENOENT) {
                char b[200];
                if (number == 0)
                        return lg_error_set(err, ENOENT, "%s has no revisions",
                                            lg_store_key_str(key, b));
                return lg_error_set(err, ENOENT, "%s has no revision %" PRId64,
                                    lg_store_key_str(key, b), number);
        }
        if (r < 0)
                return r;
        if (ret)
                *ret = rev;
        else
                lg_revision_free(rev);
        return 0;
}

/* userdata is a struct lg_store_vec of struct lg_revision. */
static int rev_one(struct lg_revision *rev, void *userdata) {
        int r = lg_store_vec_push(userdata, rev);
        if (r < 0) {
                lg_revision_free(rev);
                return r;
        }
        free(rev); /* the spec moved into the list */
        return 0;
}

int lg_store_revision_list(lg_store *st, const struct lg_resource_key *key,
                           struct lg_revision_list *ret, struct lg_error *err) {
        int r;
        *ret = (struct lg_revision_list){0};
        if ((r = lg_store_check_key(key, err)) < 0 || (r = lg_store_tx_enter(st, false, err)) < 0)
                return r;
        struct lg_store_vec v = {.size = sizeof(*ret->items), .err = err, .what = "revisions"};
        if ((r = lg_store_must_exist(st, key, err)) >= 0)
                r = st->ops->rev_list(st, key, rev_one, &v, err);
        r = lg_store_tx_leave(st, r, err);
        ret->items = v.items;
        ret->n = v.n;
        if (r < 0)
                lg_revision_list_free(ret);
        return r;
}

int lg_store_revision_prune(lg_store *st, const struct lg_resource_key *key, unsigned keep,
                            struct lg_error *err) {
        int r;
        if ((r = lg_store_check_key(key, err)) < 0)
                return r;
        if (keep == 0)
                return lg_error_set(err, EINVAL, "pruning must keep at least one revision");
        if ((r = lg_store_tx_enter(st, true, err)) < 0)
                return r;
        _cleanup_revision_ struct lg_revision *latest = NULL;
        r = st->ops->rev_get(st, key, 0, &latest, err);
        if (r == -ENOENT)
                r = 0;
        else if (r >= 0 && latest->number > (int64_t) keep)
                r = st->ops->rev_prune(st, key, latest->number - keep + 1, err);
        return lg_store_tx_leave(st, r, err);
}
