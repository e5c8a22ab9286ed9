/* The session manager (session.h): pools declared to the node, sessions
 * bound to routes on first use, counted against maxSessions, ended by their
 * cooldown. Everything runs on the one loop, so concurrent first calls
 * with the same identifier meet the same session and exactly one sandbox
 * is bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/spec.h"
#include "session/session.h"
#include "store/store.h"

#define SESSION_ID_MAX 128
#define POOL_KEY_MAX (2 * LG_STORE_NAME_MAX + 2)
#define SESSION_KEY_MAX (POOL_KEY_MAX + SESSION_ID_MAX + 1)
/* The worker's file path rules (runtimes/python/legion_runtime/session/
 * files.py, split_path and the reserved upload prefix), checked here first. */
#define SESSION_FILE_NAME_MAX 255
#define SESSION_FILE_PATH_MAX 1024
#define SESSION_UPLOAD_PREFIX ".legion-upload-"

struct lg_session {
        struct lg_session *next;
        char key[SESSION_KEY_MAX];   /* ns/pool/identifier */
        char pool[POOL_KEY_MAX];     /* ns/pool */
        char identifier[SESSION_ID_MAX + 1];
        int64_t created_at, last_used; /* wall clock, seconds */
        uint64_t executions;
        unsigned cooldown_s;
        bool lost;                   /* its sandbox did not survive a restart */
        uv_timer_t cooldown;
        lg_sessions *m;
};

struct lg_sessions {
        uv_loop_t *loop;
        lg_store *store;
        const struct lg_sessions_ops *ops;
        void *ud;
        lg_tenants *tenants; /* pools' egress policies; NULL: none */
        struct lg_session *head;
};

static const char *const pool_fields[] = {
        "name", "runtime", "ready", "maxSessions", "cooldownSeconds", "egress", "cpu", "memory",
        "maxFileBytes", "maxSessionBytes", NULL,
};

int lg_sessions_new(uv_loop_t *loop, lg_store *store, const struct lg_sessions_ops *ops, void *ud,
                    lg_sessions **ret, struct lg_error *err) {
        lg_sessions *m = calloc(1, sizeof(*m));
        if (!m)
                return lg_error_set(err, ENOMEM, "session manager");
        m->loop = loop;
        m->store = store;
        m->ops = ops;
        m->ud = ud;
        *ret = m;
        return 0;
}

void lg_sessions_set_tenants(lg_sessions *m, lg_tenants *t) { m->tenants = t; }

static void session_closed(uv_handle_t *h) { free(h->data); }

static void session_close(struct lg_session *s) {
        uv_timer_stop(&s->cooldown);
        uv_close((uv_handle_t *) &s->cooldown, session_closed);
}

void lg_sessions_free(lg_sessions *m) {
        if (!m)
                return;
        for (struct lg_session *s = m->head, *next; s; s = next) {
                next = s->next;
                session_close(s);
        }
        free(m);
}

static void node_pool_name(char *buf, size_t cap, const char *ns, const char *pool) {
        snprintf(buf, cap, "sessions/%s/%s", ns, pool);
}

static void pool_key(char *buf, size_t cap, const char *ns, const char *pool) {
        snprintf(buf, cap, "%s/%s", ns, pool);
}

static unsigned spec_uint(const json_t *spec, const char *k, unsigned def) {
        json_t *v = json_object_get(spec, k);
        return json_is_integer(v) ? (unsigned) json_integer_value(v) : def;
}

/* ---- pools ----------------------------------------------------------------- */

/* Check a pool spec and (re)declare its placeholders to the node. */
static int pool_apply(lg_sessions *m, const char *ns, const char *pool, const json_t *spec, struct lg_error *err) {
        char pname[160];
        uint64_t cpu = 0, mem = 256ull << 20, max_file = 100ull << 20, max_bytes = 1ull << 30;
        json_t *v;
        const char *rt = json_string_value(json_object_get(spec, "runtime"));
        if (rt && strcmp(rt, "python3"))
                return lg_error_setm(err, EINVAL, "`runtime` must be python3");
        static const struct { const char *k; long long lo, hi; } ints[] = {
                {"ready", 0, 1000}, {"maxSessions", 1, 100000}, {"cooldownSeconds", 1, 86400},
        };
        for (size_t i = 0; i < ARRAY_SIZE(ints); i++) {
                v = json_object_get(spec, ints[i].k);
                if (v && (!json_is_integer(v) || json_integer_value(v) < ints[i].lo ||
                          json_integer_value(v) > ints[i].hi))
                        return lg_error_setm(err, EINVAL, "`%s` must be an integer from %lld to %lld", ints[i].k,
                                             ints[i].lo, ints[i].hi);
        }
        /* Egress: off (the default) keeps the placeholders on loopback
         * only; otherwise they get an address while they wait and, at
         * take, their tenant: the pool's namespace with the pool's policy
         * "<ns>/pool/<pool>" (an allowlist), or for true and "on" the
         * namespace's own. Never the host's network namespace. */
        struct lg_net_policy np;
        json_t *egress = json_object_get(spec, "egress");
        int r = egress ? lg_tenant_policy_parse(egress, LG_TENANT_POLICY_BOOL, "`egress`", &np, err) : 0;
        if (r < 0)
                return r;
        bool net = egress && !json_is_false(egress) &&
                   !(json_is_string(egress) && !strcmp(json_string_value(egress), "off"));
        if (net && !(m->tenants && lg_tenants_net(m->tenants)))
                return lg_error_setm(err, EOPNOTSUPP, "%s",
                                     "`egress` needs the node's network, and networking is off on this node");
        if ((v = json_object_get(spec, "cpu")) && lg_spec_cpu(v, &cpu) < 0)
                return lg_error_setm(err, EINVAL, "`cpu` must be CPUs (0.5) or millicores (\"500m\")");
        if ((v = json_object_get(spec, "memory")) && lg_spec_memory(v, &mem) < 0)
                return lg_error_setm(err, EINVAL, "`memory` must be a size from 4Mi to 64Gi");
        if ((v = json_object_get(spec, "maxFileBytes")) && lg_spec_memory(v, &max_file) < 0)
                return lg_error_setm(err, EINVAL, "`maxFileBytes` must be a size from 4Mi to 64Gi");
        if ((v = json_object_get(spec, "maxSessionBytes")) && lg_spec_memory(v, &max_bytes) < 0)
                return lg_error_setm(err, EINVAL, "`maxSessionBytes` must be a size from 4Mi to 64Gi");
        char e_file[64], e_bytes[64], e_mem[64], e_code[64], e_timeout[64];
        snprintf(e_code, sizeof(e_code), "LEGION_SESSION_MAX_CODE=%u", LG_SESSION_MAX_CODE);
        snprintf(e_timeout, sizeof(e_timeout), "LEGION_SESSION_MAX_TIMEOUT=%u", LG_SESSION_MAX_TIMEOUT_S);
        snprintf(e_file, sizeof(e_file), "LEGION_SESSION_MAX_FILE=%llu", (unsigned long long) max_file);
        snprintf(e_bytes, sizeof(e_bytes), "LEGION_SESSION_MAX_BYTES=%llu", (unsigned long long) max_bytes);
        /* The sandbox cannot read its cgroup: tell the worker its memory
         * limit so that "out of memory" can name it. */
        snprintf(e_mem, sizeof(e_mem), "LEGION_SESSION_MEMORY_LIMIT=%llu", (unsigned long long) mem);
        const char *env[] = {e_file, e_bytes, e_mem, e_code, e_timeout, NULL};
        node_pool_name(pname, sizeof(pname), ns, pool);
        struct lg_pool_spec ps = {
                .name = pname,
                .runtime = "session",
                .ready = spec_uint(spec, "ready", 1),
                .cpu_millis = cpu,
                .memory_bytes = mem,
                .writable_root = true,
                /* The files' tmpfs, with room for the interpreter's /tmp. */
                .disk_bytes = max_bytes + (64ull << 20),
                .env = env,
                .network = net,
        };
        r = lg_tenants_egress_set(m->tenants, ns, "pool", pool, json_is_object(egress) ? egress : NULL, err);
        return r < 0 ? r : m->ops->pool_set(m->ud, &ps, err);
}

int lg_sessions_pool_put(lg_sessions *m, const char *ns, const char *pool, const json_t *spec,
                         struct lg_resource **ret, struct lg_error *err) {
        _cleanup_(json_decrefp) json_t *s = json_deep_copy(spec);
        if (!s)
                return lg_error_set(err, ENOMEM, "session pool `%s`", pool);
        json_object_del(s, "name");
        int r = lg_spec_only_fields(s, "a session pool", pool_fields, err);
        if (r < 0)
                return r;
        r = pool_apply(m, ns, pool, s, err);
        if (r < 0)
                return lg_error_wrap(err, r, "session pool `%s`", pool);
        if (!json_object_get(s, "runtime"))
                json_object_set_new(s, "runtime", json_string("python3"));
        return lg_store_apply(m->store, LG_KEY("SessionPool", ns, pool), NULL, s, ret, err);
}

int lg_sessions_restore_pool(lg_sessions *m, const struct lg_resource *pool, struct lg_error *err) {
        return pool_apply(m, pool->namespace, pool->name, pool->spec, err);
}

int lg_sessions_pool_delete(lg_sessions *m, const char *ns, const char *pool, struct lg_error *err) {
        char pkey[POOL_KEY_MAX], pname[160];
        pool_key(pkey, sizeof(pkey), ns, pool);
        for (struct lg_session *s = m->head, *next; s; s = next) {
                next = s->next;
                if (!strcmp(s->pool, pkey))
                        lg_sessions_end(m, s, "session pool deleted");
        }
        node_pool_name(pname, sizeof(pname), ns, pool);
        m->ops->pool_delete(m->ud, pname);
        struct lg_error ignored = {0};
        lg_tenants_policy_set(m->tenants, ns, "pool", pool, NULL, &ignored);
        return lg_store_delete(m->store, LG_KEY("SessionPool", ns, pool), 0, NULL, err);
}

json_t *lg_sessions_pool_status(lg_sessions *m, const char *ns, const char *pool, bool node) {
        unsigned n = lg_sessions_count(m, ns, pool);
        if (!node)
                return json_pack("{s:i}", "sessions", n);
        char pname[160];
        node_pool_name(pname, sizeof(pname), ns, pool);
        struct lg_pool_stats ps = {0};
        m->ops->pool_stats(m->ud, pname, &ps);
        json_t *st = json_pack("{s:i, s:i, s:i}", "ready", ps.ready, "starting", ps.starting, "sessions", n);
        if (st && ps.failures)
                json_object_set_new(st, "lastError",
                                    json_pack("{s:i, s:s}", "failures", ps.failures, "message", ps.last_error));
        return st;
}

/* ---- sessions -------------------------------------------------------------- */

int lg_session_id_check(const char *id, struct lg_error *err) {
        size_t n = id ? strlen(id) : 0;
        bool ok = n >= 4 && n <= SESSION_ID_MAX;
        for (const char *p = id; ok && *p; p++)
                ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                     *p == '_' || *p == '.' || *p == ':';
        if (!ok)
                return lg_error_setm(err, EINVAL, "`identifier` must be 4 to 128 of [A-Za-z0-9._:-], given `%.40s`",
                                     id ? id : "");
        return 0;
}

static struct lg_session *find_key(lg_sessions *m, const char *key) {
        for (struct lg_session *s = m->head; s; s = s->next)
                if (!strcmp(s->key, key))
                        return s;
        return NULL;
}

lg_session *lg_sessions_find(lg_sessions *m, const char *ns, const char *pool, const char *id) {
        char key[SESSION_KEY_MAX + 64];
        if (snprintf(key, sizeof(key), "%s/%s/%s", ns, pool, id) >= SESSION_KEY_MAX)
                return NULL;
        return find_key(m, key);
}

unsigned lg_sessions_count(lg_sessions *m, const char *ns, const char *pool) {
        char pkey[POOL_KEY_MAX];
        pool_key(pkey, sizeof(pkey), ns, pool);
        unsigned n = 0;
        for (struct lg_session *s = m->head; s; s = s->next)
                n += !strcmp(s->pool, pkey);
        return n;
}

void lg_sessions_end(lg_sessions *m, lg_session *s, const char *why) {
        m->ops->log(m->ud, s->pool, why);
        m->ops->route_remove(m->ud, s->key);
        for (struct lg_session **pp = &m->head; *pp; pp = &(*pp)->next)
                if (*pp == s) {
                        *pp = s->next;
                        break;
                }
        session_close(s);
}

static void on_cooldown(uv_timer_t *t) {
        struct lg_session *s = t->data;
        char why[300];
        snprintf(why, sizeof(why), "session `%s` ended after %u s without a call", s->identifier, s->cooldown_s);
        lg_sessions_end(s->m, s, why);
}

static void session_touch(struct lg_session *s) {
        s->last_used = time(NULL);
        uv_timer_start(&s->cooldown, on_cooldown, (uint64_t) s->cooldown_s * 1000, 0);
}

static int session_bind(lg_sessions *m, const char *ns, const char *pool, const json_t *pool_spec, const char *id,
                        bool lost, struct lg_session **ret, struct lg_error *err);

/* A session whose sandbox died (not just its interpreter, which the worker
 * restarts itself) has lost everything: say so rather than hand out a
 * fresh sandbox under the same identifier without a word. */
static int session_lost(lg_sessions *m, struct lg_session *s, struct lg_error *err) {
        if (!s->lost && (s->executions == 0 || m->ops->route_sandboxes(m->ud, s->key) != 0))
                return 0;
        lg_error_setm(err, ENOLINK,
                      "session `%s` lost its sandbox; its variables and files are gone. The next call starts a "
                      "new session",
                      s->identifier);
        lg_sessions_end(m, s, "session lost its sandbox");
        return -ENOLINK;
}

/* The session of pool ns/pool with identifier id, if any: *ret, with
 * the pool's key in pkey; -EINVAL for an invalid id. */
static int session_find(lg_sessions *m, const char *ns, const char *pool, const char *id, char *pkey,
                        struct lg_session **ret, struct lg_error *err) {
        char key[SESSION_KEY_MAX + 64];
        pool_key(pkey, POOL_KEY_MAX, ns, pool);
        int r = lg_session_id_check(id, err);
        if (r < 0)
                return r;
        snprintf(key, sizeof(key), "%s/%s", pkey, id);
        *ret = find_key(m, key);
        return 0;
}

int lg_sessions_open(lg_sessions *m, const char *ns, const char *pool, const char *id, unsigned flags,
                     lg_session **ret, struct lg_error *err) {
        char pkey[POOL_KEY_MAX];
        struct lg_session *s;
        int r = session_find(m, ns, pool, id, pkey, &s, err);
        if (r < 0)
                return r;
        if (s) {
                session_touch(s);
                r = session_lost(m, s, err);
                if (r < 0)
                        return r;
                s->executions += !!(flags & LG_SESSION_EXECUTE);
                *ret = s;
                return 0;
        }
        if (!(flags & LG_SESSION_CREATE))
                return lg_error_setm(err, ENOENT, "no session `%s` in pool `%s`", id, pool);
        /* The pool may have gone while the call's body came. */
        _cleanup_(lg_resource_freep) struct lg_resource *pr = NULL;
        r = lg_store_get(m->store, LG_KEY("SessionPool", ns, pool), &pr, err);
        if (r < 0)
                return r;
        const json_t *pool_spec = pr->spec;
        unsigned max = spec_uint(pool_spec, "maxSessions", 100), n = lg_sessions_count(m, ns, pool);
        if (n >= max)
                return lg_error_setm(err, EUSERS,
                                     "session pool `%s` has reached maxSessions (%u of %u in use); end a session "
                                     "or wait for one to cool down",
                                     pool, n, max);
        r = session_bind(m, ns, pool, pool_spec, id, false, &s, err);
        if (r < 0)
                return r;
        s->executions += !!(flags & LG_SESSION_EXECUTE);
        char line[300];
        snprintf(line, sizeof(line), "session `%s` started", id);
        m->ops->log(m->ud, pkey, line);
        *ret = s;
        return 0;
}

int lg_sessions_adopt(lg_sessions *m, const char *ns, const char *pool, const char *id, bool lost,
                      struct lg_error *err) {
        char pkey[POOL_KEY_MAX];
        struct lg_session *s;
        int r = session_find(m, ns, pool, id, pkey, &s, err);
        if (r < 0 || s)
                return r;
        _cleanup_(lg_resource_freep) struct lg_resource *pr = NULL;
        r = lg_store_get(m->store, LG_KEY("SessionPool", ns, pool), &pr, err);
        if (r < 0)
                return r; /* the pool is gone: its sandbox goes unclaimed */
        r = session_bind(m, ns, pool, pr->spec, id, lost, &s, err);
        if (r < 0)
                return r;
        /* It had run code, as far as anyone can tell: losing its sandbox
         * from now on is a loss too. */
        s->executions = 1;
        char line[300];
        snprintf(line, sizeof(line), lost ? "session `%s` lost its sandbox in a legiond restart"
                                          : "session `%s` taken back after a legiond restart", id);
        m->ops->log(m->ud, pkey, line);
        return 0;
}

/* A new session bound to a route of its own (whose sandbox the router
 * takes from the pool, or back from before a restart). lost: none is
 * bound, the next call answers that the session was lost. */
static int session_bind(lg_sessions *m, const char *ns, const char *pool, const json_t *pool_spec, const char *id,
                        bool lost, struct lg_session **ret, struct lg_error *err) {
        char pkey[POOL_KEY_MAX], key[SESSION_KEY_MAX + 64];
        pool_key(pkey, sizeof(pkey), ns, pool);
        snprintf(key, sizeof(key), "%s/%s", pkey, id);
        struct lg_session *s = calloc(1, sizeof(*s));
        if (!s)
                return lg_error_setm(err, ENOMEM, "out of memory");
        snprintf(s->key, sizeof(s->key), "%s", key);
        snprintf(s->pool, sizeof(s->pool), "%s", pkey);
        snprintf(s->identifier, sizeof(s->identifier), "%s", id);
        s->m = m;
        s->created_at = time(NULL);
        s->cooldown_s = spec_uint(pool_spec, "cooldownSeconds", 300);
        char pname[160];
        node_pool_name(pname, sizeof(pname), ns, pool);
        /* An allowlist of its own is the pool's policy; "on" the
         * namespace's (pool_apply registered it). */
        char policy[LG_NET_NAME_MAX];
        json_t *egress = json_object_get(pool_spec, "egress");
        lg_tenant_policy_name(policy, sizeof(policy), ns, "pool", pool);
        struct lg_route_config cfg = {
                .key = key,
                .revision = 1,
                .pool = pname,
                .identifier = id,
                .net_policy = json_is_object(egress) ? policy : NULL,
                .concurrency = 1,
                .min_instances = 0,
                .max_instances = 1,
                /* The session ends by its cooldown here, never by the router. */
                .idle_timeout_s = s->cooldown_s + 3600,
                .timeout_s = 660,
                .queue_max = 16,
        };
        s->lost = lost;
        int r = lost ? 0 : m->ops->route_set(m->ud, &cfg, err);
        if (r < 0) {
                free(s);
                return r;
        }
        uv_timer_init(m->loop, &s->cooldown);
        s->cooldown.data = s;
        s->next = m->head;
        m->head = s;
        session_touch(s);
        *ret = s;
        return 0;
}

const char *lg_session_key(const lg_session *s) { return s->key; }

static void set_address(const char *address, void *ud) {
        json_object_set_new(ud, "address", json_string(address));
}

json_t *lg_session_json(const lg_session *s) {
        char created[32], last[32], expires[32];
        lg_store_format_time(s->created_at, created, sizeof(created));
        lg_store_format_time(s->last_used, last, sizeof(last));
        lg_store_format_time(s->last_used + s->cooldown_s, expires, sizeof(expires));
        json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:I, s:i}", "identifier", s->identifier, "createdAt", created,
                                "lastActivity", last, "expiresAt", expires, "executions",
                                (json_int_t) s->executions, "cooldownSeconds", s->cooldown_s);
        if (doc && s->m->ops->route_addresses)
                s->m->ops->route_addresses(s->m->ud, s->key, set_address, doc);
        return doc;
}

json_t *lg_sessions_list_json(lg_sessions *m, const char *ns, const char *pool) {
        char pkey[POOL_KEY_MAX];
        pool_key(pkey, sizeof(pkey), ns, pool);
        json_t *items = json_array();
        for (struct lg_session *s = m->head; items && s; s = s->next)
                if (!strcmp(s->pool, pkey))
                        json_array_append_new(items, lg_session_json(s));
        return items ? json_pack("{s:o}", "items", items) : NULL;
}

/* ---- what the worker would refuse --------------------------------------- */

int lg_session_execution_check(const char *body, size_t len, struct lg_error *err) {
        json_error_t jerr;
        _cleanup_(json_decrefp) json_t *doc = json_loadb(body ? body : "", len, 0, &jerr);
        if (!doc)
                return lg_error_setm(err, EINVAL, "the body is not JSON: %s", jerr.text);
        if (!json_is_object(doc))
                return lg_error_setm(err, EINVAL, "%s",
                                     "the body must be a JSON object {\"code\": \"...\", \"timeoutSeconds\": 30}");
        if (!json_is_string(json_object_get(doc, "code")))
                return lg_error_setm(err, EINVAL, "%s", "`code` must be a string");
        json_t *t = json_object_get(doc, "timeoutSeconds");
        if (t && !json_is_null(t) &&
            !(json_is_number(t) && json_number_value(t) > 0 && json_number_value(t) <= LG_SESSION_MAX_TIMEOUT_S))
                return lg_error_setm(err, EINVAL, "`timeoutSeconds` must be a number above 0 and at most %d",
                                     LG_SESSION_MAX_TIMEOUT_S);
        return 0;
}

int lg_session_file_path_check(const char *const *seg, int n, struct lg_error *err) {
        size_t total = 0;
        for (int i = 0; i < n; i++) {
                size_t len = strlen(seg[i]);
                if (len > SESSION_FILE_NAME_MAX)
                        return lg_error_setm(err, ENAMETOOLONG, "a file name is longer than %d bytes",
                                             SESSION_FILE_NAME_MAX);
                total += len + (i > 0);
        }
        if (total > SESSION_FILE_PATH_MAX)
                return lg_error_setm(err, ENAMETOOLONG, "the file path is longer than %d bytes",
                                     SESSION_FILE_PATH_MAX);
        if (n > 0 && !strncmp(seg[n - 1], SESSION_UPLOAD_PREFIX, strlen(SESSION_UPLOAD_PREFIX)))
                return lg_error_setm(err, EINVAL, "names starting with `%s` are reserved", SESSION_UPLOAD_PREFIX);
        return 0;
}
