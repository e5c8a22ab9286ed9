/* Who may call an app (apps.h, "Access"): the spec's `auth` and the app
 * keys. The API asks lg_apps_auth before its 401 on every data-path
 * request, so the answer comes from memory: a sorted array of the apps
 * whose auth is not the default `token` (the only ones worth a row), kept
 * in step with the store by lg_apps_put, restore and delete. Keys are
 * store tokens scoped to one app (lg_store_app_key_*); the store's token
 * cache makes a known key cost a SHA-256 and no database read. */
#include <stdlib.h>
#include <string.h>

#include "apps/apps-internal.h"

struct auth_entry {
        char key[2 * LG_STORE_NAME_MAX + 2]; /* "ns/name" */
        enum lg_app_auth auth;
};

struct apps_auth {
        struct auth_entry *items; /* by key */
        size_t n, cap;
};

static const char *const auth_names[] = {
        [LG_APP_AUTH_TOKEN] = "token",
        [LG_APP_AUTH_KEYS] = "keys",
        [LG_APP_AUTH_NONE] = "none",
};

const char *lg_app_auth_name(enum lg_app_auth auth) {
        return (unsigned) auth < ARRAY_SIZE(auth_names) ? auth_names[auth] : "token";
}

int apps_auth_parse(const json_t *spec, enum lg_app_auth *ret, struct lg_error *err) {
        json_t *v = json_object_get(spec, "auth");
        *ret = LG_APP_AUTH_TOKEN;
        if (!v)
                return 0;
        const char *s = json_string_value(v);
        /* By length too: "none\u0000x" is no "none". */
        for (size_t i = 0; s && i < ARRAY_SIZE(auth_names); i++)
                if (json_string_length(v) == strlen(auth_names[i]) && !strcmp(s, auth_names[i])) {
                        *ret = (enum lg_app_auth) i;
                        return 0;
                }
        return lg_error_setm(err, EINVAL, "%s", "`auth` must be token, keys or none");
}

/* The index of key, or of where it would go (*found false). */
static size_t find(const struct apps_auth *t, const char *key, bool *found) {
        size_t lo = 0, hi = t ? t->n : 0;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(t->items[mid].key, key);
                if (!c) {
                        *found = true;
                        return mid;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *found = false;
        return lo;
}

static bool entry_key(char *buf, size_t cap, const char *ns, const char *name) {
        return (size_t) snprintf(buf, cap, "%s/%s", ns, name) < cap;
}

int apps_auth_set(lg_apps *a, const char *ns, const char *name, enum lg_app_auth auth) {
        char key[sizeof(((struct auth_entry *) 0)->key)];
        if (!entry_key(key, sizeof(key), ns, name))
                return -ENAMETOOLONG;
        if (!a->auth && auth == LG_APP_AUTH_TOKEN)
                return 0;
        if (!a->auth && !(a->auth = calloc(1, sizeof(*a->auth))))
                return -ENOMEM;
        struct apps_auth *t = a->auth;
        bool found;
        size_t i = find(t, key, &found);
        if (found && auth != LG_APP_AUTH_TOKEN) {
                t->items[i].auth = auth;
        } else if (found) {
                memmove(&t->items[i], &t->items[i + 1], (t->n - i - 1) * sizeof(*t->items));
                t->n--;
        } else if (auth != LG_APP_AUTH_TOKEN) {
                if (lg_grow((void **) &t->items, &t->cap, t->n, sizeof(*t->items), 16) < 0)
                        return -ENOMEM;
                memmove(&t->items[i + 1], &t->items[i], (t->n - i) * sizeof(*t->items));
                snprintf(t->items[i].key, sizeof(t->items[i].key), "%s", key);
                t->items[i].auth = auth;
                t->n++;
        }
        return 0;
}

void apps_auth_free(lg_apps *a) {
        if (!a || !a->auth)
                return;
        free(a->auth->items);
        free(a->auth);
        a->auth = NULL;
}

enum lg_app_auth lg_apps_auth(lg_apps *a, const char *ns, const char *name) {
        char key[sizeof(((struct auth_entry *) 0)->key)];
        bool found;
        if (!a || !ns || !name || !entry_key(key, sizeof(key), ns, name))
                return LG_APP_AUTH_TOKEN;
        size_t i = find(a->auth, key, &found);
        return found ? a->auth->items[i].auth : LG_APP_AUTH_TOKEN;
}

/* ---- keys ------------------------------------------------------------------------ */

static int app_exists(lg_apps *a, const char *ns, const char *name, struct lg_error *err) {
        struct lg_resource *res = NULL;
        int r = lg_store_get(a->store, LG_KEY("App", ns, name), &res, err);
        lg_resource_free(res);
        return r;
}

int lg_apps_key_create(lg_apps *a, const char *ns, const char *name, const char *description,
                       struct lg_token *ret, char secret[LG_TOKEN_SECRET_SIZE], struct lg_error *err) {
        int r = app_exists(a, ns, name, err);
        return r < 0 ? r : lg_store_app_key_create(a->store, ns, name, description, ret, secret, err);
}

int lg_apps_key_list(lg_apps *a, const char *ns, const char *name, struct lg_token_list *ret,
                     struct lg_error *err) {
        *ret = (struct lg_token_list){0};
        int r = app_exists(a, ns, name, err);
        return r < 0 ? r : lg_store_app_key_list(a->store, ns, name, ret, err);
}

int lg_apps_key_delete(lg_apps *a, const char *ns, const char *name, const char *id, struct lg_error *err) {
        struct lg_token_list l = {0};
        int r = lg_apps_key_list(a, ns, name, &l, err);
        bool found = false;
        for (size_t i = 0; r >= 0 && i < l.n; i++)
                found |= !strcmp(l.items[i].id, id);
        lg_token_list_free(&l);
        if (r < 0)
                return r;
        if (!found)
                return lg_error_setm(err, ENOENT, "app `%s/%s` has no key `%.32s`", ns, name, id);
        return lg_store_token_delete(a->store, id, err);
}

int apps_keys_delete_all(lg_apps *a, const char *ns, const char *name, struct lg_error *err) {
        struct lg_token_list l = {0};
        int r = lg_store_app_key_list(a->store, ns, name, &l, err);
        for (size_t i = 0; r >= 0 && i < l.n; i++)
                r = lg_store_token_delete(a->store, l.items[i].id, err);
        lg_token_list_free(&l);
        return r;
}
