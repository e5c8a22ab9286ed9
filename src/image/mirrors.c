/* Registry mirrors for lazy layers (mirrors.h): the list, its source.json
 * form, whole-blob reads that try each mirror, and the per-layer skip
 * table. */
#include "image/mirrors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "host[:port]" or "[v6]:port": what a registry name may hold. */
static bool registry_ok(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > 255)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '-' || c == ':' || c == '[' || c == ']'))
                        return false;
        }
        return true;
}

int lg_mirrors_add(struct lg_mirrors *m, const char *registry, const char *username, const char *password,
                   bool insecure, struct lg_error *err) {
        if (m->n >= LG_MIRRORS_MAX)
                return lg_error_setm(err, E2BIG, "at most %d registry mirrors", LG_MIRRORS_MAX);
        if (!registry_ok(registry))
                return lg_error_setm(err, EINVAL, "`%.80s` is not a registry (host[:port])", registry ? registry : "");
        struct lg_mirror *e = &m->v[m->n];
        *e = (struct lg_mirror){.insecure = insecure};
        if (!(e->registry = strdup(registry)) || (username && *username && !(e->username = strdup(username))) ||
            (password && username && *username && !(e->password = strdup(password)))) {
                free(e->registry);
                free(e->username);
                free(e->password);
                *e = (struct lg_mirror){0};
                return lg_error_set(err, ENOMEM, "registry mirror");
        }
        m->n++;
        return 0;
}

void lg_mirrors_clear(struct lg_mirrors *m) {
        if (!m)
                return;
        for (size_t i = 0; i < m->n; i++) {
                free(m->v[i].registry);
                free(m->v[i].username);
                if (m->v[i].password)
                        explicit_bzero(m->v[i].password, strlen(m->v[i].password));
                free(m->v[i].password);
        }
        memset(m, 0, sizeof(*m));
}

int lg_mirrors_copy(const struct lg_mirrors *src, struct lg_mirrors *dst, struct lg_error *err) {
        memset(dst, 0, sizeof(*dst));
        for (size_t i = 0; i < src->n; i++) {
                const struct lg_mirror *e = &src->v[i];
                int r = lg_mirrors_add(dst, e->registry, e->username, e->password, e->insecure, err);
                if (r < 0) {
                        lg_mirrors_clear(dst);
                        return r;
                }
        }
        return 0;
}

int lg_mirrors_from_json(const json_t *arr, struct lg_mirrors *ret, struct lg_error *err) {
        memset(ret, 0, sizeof(*ret));
        if (!arr)
                return 0;
        if (!json_is_array(arr) || json_array_size(arr) > LG_MIRRORS_MAX)
                return lg_error_setm(err, EINVAL, "\"mirrors\" must be an array of at most %d objects",
                                     LG_MIRRORS_MAX);
        for (size_t i = 0; i < json_array_size(arr); i++) {
                const json_t *o = json_array_get(arr, i);
                const char *k;
                json_t *v;
                bool ok = json_is_object(o) && json_is_string(json_object_get(o, "registry"));
                json_object_foreach((json_t *) o, k, v) {
                        if (!strcmp(k, "insecure"))
                                ok &= json_is_boolean(v);
                        else if (!strcmp(k, "registry") || !strcmp(k, "username") || !strcmp(k, "password"))
                                ok &= json_is_string(v);
                        else
                                ok = false;
                }
                int r = ok ? lg_mirrors_add(ret, json_string_value(json_object_get(o, "registry")),
                                            json_string_value(json_object_get(o, "username")),
                                            json_string_value(json_object_get(o, "password")),
                                            json_is_true(json_object_get(o, "insecure")), err)
                           : lg_error_setm(err, EINVAL, "mirror %zu: {\"registry\": \"host[:port]\", \"insecure\": "
                                                        "bool, \"username\", \"password\"} only", i);
                if (r < 0) {
                        lg_mirrors_clear(ret);
                        return r;
                }
        }
        return 0;
}

json_t *lg_mirrors_to_json(const struct lg_mirrors *m) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < m->n; i++) {
                const struct lg_mirror *e = &m->v[i];
                json_t *o = json_pack("{s:s, s:b}", "registry", e->registry, "insecure", e->insecure);
                if (o && e->username) {
                        json_object_set_new(o, "username", json_string(e->username));
                        json_object_set_new(o, "password", json_string(e->password ? e->password : ""));
                }
                if (!o || json_array_append_new(arr, o) < 0) {
                        json_decref(arr);
                        return NULL;
                }
        }
        return arr;
}

int lg_mirror_open(const struct lg_mirror *m, const char *repository, lg_registry **ret, struct lg_error *err) {
        struct lg_registry_auth auth = {.username = m->username, .password = m->password, .insecure = m->insecure};
        int r = lg_registry_open(m->registry, repository, &auth, ret, err);
        if (r >= 0)
                lg_registry_set_timeouts(*ret, LG_MIRROR_CONNECT_MS, LG_MIRROR_REQUEST_MS);
        return r;
}

int lg_mirrors_blob_get(const struct lg_mirrors *m, const char *repository, const char *digest, uint64_t size,
                        lg_registry_sink_cb sink, int (*restart)(void *ud), void *ud, struct lg_error *err) {
        int r = lg_error_setm(err, ENOENT, "%s", "no registry mirrors");
        for (size_t i = 0; i < m->n; i++) {
                if (i > 0 && restart && (r = restart(ud)) < 0)
                        return lg_error_set(err, -r, "%s", "start the blob again");
                _cleanup_registry_ lg_registry *reg = NULL;
                r = lg_mirror_open(&m->v[i], repository, &reg, err);
                if (r >= 0)
                        r = lg_registry_blob_get(reg, digest, size, sink, ud, err);
                if (r >= 0)
                        return r;
        }
        return r;
}

void lg_mirror_clients_close(struct lg_mirror_clients *cl) {
        for (size_t i = 0; i < LG_MIRRORS_MAX; i++) {
                lg_registry_close(cl->c[i].r);
                cl->c[i].r = NULL;
                cl->c[i].key[0] = '\0';
        }
}

int lg_mirrors_range(const struct lg_mirrors *m, struct lg_mirror_skip *skip, struct lg_mirror_clients *cl,
                     const char *repository, const char *digest, uint64_t off, void *buf, size_t len,
                     int (*accept)(void *ud, const void *buf), void *ud, struct lg_error *err) {
        int r = lg_error_setm(err, ENOENT, "%s", "no registry mirror to try");
        for (size_t i = 0; i < m->n && i < LG_MIRRORS_MAX; i++) {
                if (!lg_mirror_skip_usable(skip, i))
                        continue;
                const struct lg_mirror *e = &m->v[i];
                char key[sizeof(cl->c[i].key)];
                snprintf(key, sizeof(key), "%s\n%s\n%s\n%d", e->registry, repository, e->username ? e->username : "",
                         e->insecure);
                if (cl->c[i].r && strcmp(cl->c[i].key, key)) {
                        lg_registry_close(cl->c[i].r);
                        cl->c[i].r = NULL;
                }
                if (!cl->c[i].r) {
                        if ((r = lg_mirror_open(e, repository, &cl->c[i].r, err)) < 0) {
                                lg_mirror_skip_failed(skip, i);
                                continue;
                        }
                        snprintf(cl->c[i].key, sizeof(cl->c[i].key), "%s", key);
                }
                r = lg_registry_blob_range(cl->c[i].r, digest, off, buf, len, err);
                if (r >= 0 && (r = accept(ud, buf)) < 0)
                        lg_error_setm(err, -r, "registry mirror %s gave bytes %" PRIu64 "+%zu of %s that do not "
                                               "match", e->registry, off, len, digest);
                if (r >= 0)
                        return 0;
                /* A fresh connection next time, after the skip. */
                lg_registry_close(cl->c[i].r);
                cl->c[i].r = NULL;
                lg_mirror_skip_failed(skip, i);
        }
        return r;
}

bool lg_mirror_skip_usable(struct lg_mirror_skip *s, size_t i) {
        return i < LG_MIRRORS_MAX && atomic_load(&s->until[i]) <= lg_now_ns();
}

void lg_mirror_skip_failed(struct lg_mirror_skip *s, size_t i) {
        if (i < LG_MIRRORS_MAX)
                atomic_store(&s->until[i], lg_now_ns() + LG_MIRROR_SKIP_NS);
}
