/* Pool groups (node.h): their placeholders live in a warm pool (warm.h)
 * keyed by their shape; making and discarding placeholders for it, the
 * key, its rolling replacement when the shape changes, and a pool
 * group's stats.
 *
 * Rolling replacement: a new shape (a language worker's version, cpu,
 * memory, environment...; an image) is a new key, whose warm pool
 * replaces the old one's placeholders gradually (warm.h: the old pool is
 * retired into the new one and shrinks as the new one's become ready,
 * never more than max_unavailable fewer ready than `ready` by a discard,
 * never more than `ready` placeholders at once). An instance always takes
 * a placeholder of the group's current shape (or is made on demand with
 * it): an old placeholder is destroyed, never re-made or given to an
 * instance started after the change, so that `version` or an image change
 * reaches every instance started after it. */
#include <string.h>

#include "node/node-internal.h"

/* ---- pools ------------------------------------------------------------- */

struct pool *node_find_pool(lg_node *node, const char *name) {
        for (struct pool *p = node->pools; p; p = p->next)
                if (!p->deleted && !strcmp(p->name, name))
                        return p;
        return NULL;
}

/* The pool group's warm pool wants one more placeholder. */
static int warm_make(lg_warm_pool *wp, void *data, struct lg_error *err) {
        struct pool *p = data;
        lg_instance *inst;
        int r = p->img ? node_image_placeholder(p, &inst, err) : node_make_sandbox(p->node, p, NULL, &inst, err);
        if (r < 0)
                return r;
        inst->state = ST_STARTING;
        lg_warm_add(wp, &inst->witem);
        return 0;
}

/* A placeholder no longer wanted (fewer ready, the group reshaped or deleted). */
static void warm_discard(lg_warm_item *item, void *data) {
        (void) data;
        lg_instance *inst = (lg_instance *) item;
        lg_instance_destroy(inst);
}

static const struct lg_warm_ops warm_ops = {.make = warm_make, .discard = warm_discard};

/* What a group's placeholders are made from: a sandbox made for one key
 * never serves another. The group's name is part of it: a declared pool
 * group owns its placeholders (its ready count and its counters are its
 * own, as the API shows them). */
static void pool_key(const struct pool *p, char *buf, size_t cap) {
        if (p->img) {
                node_image_pool_key(p, buf, cap);
                return;
        }
        uint64_t h = 1469598103934665603ull; /* FNV-1a of the environment */
        for (char **e = p->env; e && *e; e++)
                for (const char *c = *e; ; c++) {
                        h = (h ^ (unsigned char) *c) * 1099511628211ull;
                        if (!*c)
                                break;
                }
        /* The version is length-prefixed: any string, no ambiguity. */
        const char *ver = p->version ? p->version : "";
        snprintf(buf, cap,
                 "worker:%s cpu=%llu boost=%llu mem=%llu disk=%llu rw=%d net=%d env=%016llx ver=%zu:%s group=%s",
                 p->runtime, (unsigned long long) p->spec.cpu_millis, (unsigned long long) p->spec.boost_cpu_millis,
                 (unsigned long long) p->spec.memory_bytes, (unsigned long long) p->spec.disk_bytes,
                 p->spec.writable_root, node_pool_network(p), (unsigned long long) h, strlen(ver), ver, p->name);
}

int lg_node_pool_set(lg_node *node, const struct lg_pool_spec *spec, struct lg_error *err) {
        bool image = spec->runtime && !strcmp(spec->runtime, "image");
        if (!spec->name || !spec->runtime || (!image && !node_runtime_argv(spec->runtime)))
                return lg_error_set(err, EINVAL, "unknown runtime `%s` (python3, node, custom, session or image)",
                                    spec->runtime ? spec->runtime : "");
        /* An image pool's image and server are checked before anything changes. */
        const struct lg_image *img = NULL;
        if (image) {
                int r = node_image_pool_prepare(node, spec, &img, err);
                if (r < 0)
                        return r;
        }
        struct pool *p = node_find_pool(node, spec->name);
        if (!p) {
                p = calloc(1, sizeof(*p));
                if (!p || !(p->name = strdup(spec->name))) {
                        free(p);
                        return lg_error_set(err, ENOMEM, "allocate pool");
                }
                p->node = node;
                p->next = node->pools;
                node->pools = p;
        }
        char *runtime = strdup(spec->runtime);
        char *version = spec->version && *spec->version ? strdup(spec->version) : NULL;
        if (!runtime || (spec->version && *spec->version && !version)) {
                free(runtime);
                return lg_error_set(err, ENOMEM, "allocate pool");
        }
        free(p->runtime);
        p->runtime = runtime;
        free(p->version);
        p->version = version;
        node_env_free(p->env);
        p->env = NULL;
        if (spec->env && spec->env[0]) {
                size_t n = 0, m = 0;
                while (spec->env[n])
                        n++;
                while (node_placeholder_env[m])
                        m++;
                p->env = calloc(n + m + 1, sizeof(char *));
                for (size_t i = 0; p->env && i < m; i++)
                        p->env[i] = strdup(node_placeholder_env[i]);
                for (size_t i = 0; p->env && i < n; i++)
                        p->env[m + i] = strdup(spec->env[i]);
        }
        p->spec = *spec;
        p->spec.name = p->name;
        p->spec.runtime = p->runtime;
        p->spec.version = p->version;
        p->spec.env = NULL;
        /* Image pools: their image, server and environment (no worker's);
         * other pools: none of that. */
        int r = node_image_pool_set(p, spec, img, err);
        if (r < 0)
                return r;
        /* Placeholders of an older shape are replaced gradually (another
         * key, so another warm pool, which the old one is retired into);
         * extra ones are trimmed by the warm pool. */
        char key[1024];
        pool_key(p, key, sizeof(key));
        struct lg_warm_pool_config wc = {.key = key, .target = spec->ready, .retry = LG_WARM_RETRY_BACKOFF,
                                         .ops = &warm_ops, .data = p, .max_unavailable = spec->max_unavailable};
        lg_warm_pool *old = p->warm;
        r = lg_warm_pool_set(node->warm, &wc, &p->warm, err);
        if (r < 0)
                return r;
        /* The old pool is the warm component's from now on: it frees it
         * once empty, or with the current one. */
        if (old && old != p->warm && lg_warm_pool_retire(old, p->warm) < 0)
                lg_warm_pool_delete(old);
        return 0;
}

int lg_node_pool_delete(lg_node *node, const char *name) {
        struct pool *p = node_find_pool(node, name);
        if (!p)
                return -ENOENT;
        lg_warm_pool_delete(p->warm);
        p->warm = NULL;
        p->deleted = true; /* kept until the node goes: instances point at it */
        return 0;
}

int lg_node_pool_stats(lg_node *node, const char *name, struct lg_pool_stats *ret) {
        struct pool *p = node_find_pool(node, name);
        if (!p)
                return -ENOENT;
        struct lg_warm_stats ws = {0};
        if (p->warm)
                lg_warm_pool_stats(p->warm, &ws);
        *ret = (struct lg_pool_stats){.ready = ws.ready, .starting = ws.starting, .created = p->created, .taken = ws.taken,
                                      .on_demand = p->on_demand, .failures = ws.failures, .updated = ws.ready,
                                      .outdated = ws.outdated, .rolling = ws.rolling};
        snprintf(ret->last_error, sizeof(ret->last_error), "%s", ws.last_error);
        return 0;
}
