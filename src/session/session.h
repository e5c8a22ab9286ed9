/* Session pools and sessions: sandboxes for untrusted code, keyed by an
 * identifier (docs/api.md, "Sessions").
 *
 * A session pool is a node pool of session-worker placeholders
 * (runtimes/python/legion_runtime/session): a writable root whose /mnt/data
 * holds the session's files; no network beyond loopback unless the pool has
 * egress, and then an address on the node's network (never the host's
 * network namespace) under the pool's policy. A session is a route
 * "ns/pool/identifier" with one instance and concurrency 1: the data path
 * gives it a placeholder on first use (bound to that identifier for good),
 * serializes its executions in a bounded queue with deadlines, and streams
 * file transfers. The manager here counts sessions against maxSessions,
 * keeps each one's cooldown, and ends it (route removed: sandbox and files
 * gone) when the cooldown passes without a call. Pools are stored as kind
 * "SessionPool"; sessions live in memory only.
 *
 * The manager reaches the node's pools and the router through
 * lg_sessions_ops only, so that it runs without either (unit tests).
 *
 * Threading: one libuv loop, not thread-safe. Callbacks: the ops are
 * called synchronously from inside the lg_sessions_* calls, and from the
 * loop when a cooldown ends a session; they must not call back into the
 * manager. Memory: the library never logs (events go to ops->log);
 * functions return >= 0 or a negative errno with err set. Strings given
 * are copied; an lg_session pointer stays valid until the session ends
 * (lg_sessions_end, a cooldown, its pool deleted, lg_sessions_free), so
 * callers use it at once and keep only its key. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"
#include "node/node.h"
#include "router/router.h"
#include "store/store.h"
#include "tenant/tenant.h"

/* Limits of an execution, checked here and handed to the worker, which
 * checks them too (LEGION_SESSION_MAX_CODE, LEGION_SESSION_MAX_TIMEOUT). */
#define LG_SESSION_MAX_CODE (16u << 20)
#define LG_SESSION_MAX_TIMEOUT_S 600

typedef struct lg_sessions lg_sessions;
typedef struct lg_session lg_session;

/* What the manager needs of the node and the router. */
struct lg_sessions_ops {
        int (*pool_set)(void *ud, const struct lg_pool_spec *spec, struct lg_error *err);
        void (*pool_delete)(void *ud, const char *name);
        /* < 0 when the node has no such pool. */
        int (*pool_stats)(void *ud, const char *name, struct lg_pool_stats *ret);
        int (*route_set)(void *ud, const struct lg_route_config *cfg, struct lg_error *err);
        void (*route_remove)(void *ud, const char *key);
        /* Sandboxes the route has, ready or starting; < 0 for no route. */
        int (*route_sandboxes)(void *ud, const char *key);
        /* An event of pool "ns/pool" for its log ("session `x` started"). */
        void (*log)(void *ud, const char *pool_key, const char *line);
        /* fn for the network address of each ready instance of the route
         * (a session's "address"); may be NULL. */
        void (*route_addresses)(void *ud, const char *key, void (*fn)(const char *address, void *fud), void *fud);
};

int lg_sessions_new(uv_loop_t *loop, lg_store *store, const struct lg_sessions_ops *ops, void *ud,
                    lg_sessions **ret, struct lg_error *err);
/* The pools' egress policies go to t (tenant.h). Without it (or without
 * its lg_net) a pool with egress is refused: -EOPNOTSUPP. */
void lg_sessions_set_tenants(lg_sessions *m, lg_tenants *t);
/* Forget every session without calling ops (the router goes with the
 * process); their timers close on the loop's next turn. NULL is fine. */
void lg_sessions_free(lg_sessions *m);

/* ---- pools ----------------------------------------------------------------- */

/* Check a pool spec (a "name" field in it is ignored), (re)declare its
 * placeholders (and its egress policy, see lg_tenants_egress_set) to the
 * node, and store it (runtime python3 by default).
 * -EINVAL with err saying what is wrong ("session pool `p`: `ready` must
 * be ..."); the store's errors. Returns the store's LG_STORE_CREATED,
 * _UPDATED or _UNCHANGED; *ret (may be NULL) the stored object. */
int lg_sessions_pool_put(lg_sessions *m, const char *ns, const char *pool, const json_t *spec,
                         struct lg_resource **ret, struct lg_error *err);
/* At start: a stored pool's placeholders and policy declared again (a
 * pool stored with `egress: true` by a legiond that refused it, or one
 * before that which gave sessions the host's network, gets a network of
 * its own under its namespace's policy). */
int lg_sessions_restore_pool(lg_sessions *m, const struct lg_resource *pool, struct lg_error *err);
/* End the pool's sessions, remove its placeholders, and delete it from the
 * store (the store's errors, -ENOENT). */
int lg_sessions_pool_delete(lg_sessions *m, const char *ns, const char *pool, struct lg_error *err);
/* {"ready", "starting", "sessions", "lastError"?: {"failures","message"}};
 * only "sessions" when node is false. NULL when out of memory. */
json_t *lg_sessions_pool_status(lg_sessions *m, const char *ns, const char *pool, bool node);

/* ---- sessions -------------------------------------------------------------- */

/* An identifier is 4 to 128 of [A-Za-z0-9._:-]; -EINVAL otherwise. */
int lg_session_id_check(const char *id, struct lg_error *err);

enum {
        LG_SESSION_CREATE = 1 << 0,  /* bind a new session when there is none */
        LG_SESSION_EXECUTE = 1 << 1, /* the call is an execution: count it */
};

/* The session id of pool ns/pool, its cooldown restarted (-EINVAL for an
 * invalid id). A new one gets the stored pool's maxSessions and
 * cooldownSeconds. Everything that can refuse the call must be checked
 * before: binding is what a refused call must not do. Errors:
 *   -ENOENT   no such session and no LG_SESSION_CREATE, or no such pool;
 *   -EUSERS   the pool is at maxSessions (err names the limit and count);
 *   -ENOLINK  the session had run code and its sandbox is gone: it has
 *             ended now, and the next call starts a new one;
 *   others    from ops->route_set, or -ENOMEM. */
int lg_sessions_open(lg_sessions *m, const char *ns, const char *pool, const char *id, unsigned flags,
                     lg_session **ret, struct lg_error *err);
/* After a legiond restart: the session id of ns/pool (a stored pool)
 * had a sandbox that the node adopted (lost false: the session goes on,
 * with its variables and files, as its route takes the sandbox back) or
 * that did not survive (lost true: its next call answers -ENOLINK, as a
 * session whose sandbox died). Its cooldown starts now. 0 when the session
 * exists already; -ENOENT when the pool is gone. */
int lg_sessions_adopt(lg_sessions *m, const char *ns, const char *pool, const char *id, bool lost,
                      struct lg_error *err);
/* The session, or NULL. Does not count as a call. */
lg_session *lg_sessions_find(lg_sessions *m, const char *ns, const char *pool, const char *id);
/* End a session now; why goes to the pool's log. */
void lg_sessions_end(lg_sessions *m, lg_session *s, const char *why);
unsigned lg_sessions_count(lg_sessions *m, const char *ns, const char *pool);
/* {"items": [session...]} of a pool. NULL when out of memory. */
json_t *lg_sessions_list_json(lg_sessions *m, const char *ns, const char *pool);

/* The route key "ns/pool/identifier" the data path serves it under. */
const char *lg_session_key(const lg_session *s);
/* {"identifier","createdAt","lastActivity","expiresAt","executions",
 * "cooldownSeconds","address"?} (address: its sandbox's on the node's
 * network, when the pool has egress and the sandbox is bound). */
json_t *lg_session_json(const lg_session *s);

/* ---- what the worker would refuse --------------------------------------- */

/* An execution body as the worker checks it (runtimes/python/legion_runtime/
 * session/api.py, do_execute): a JSON object with a string "code" and an
 * optional "timeoutSeconds" above 0 and at most LG_SESSION_MAX_TIMEOUT_S.
 * -EINVAL with the worker's message. */
int lg_session_execution_check(const char *body, size_t len, struct lg_error *err);
/* The decoded segments of a file path written with PUT, as the worker
 * checks them: -ENAMETOOLONG (a name over 255 bytes, the path over 1024),
 * -EINVAL (a last name in the reserved upload prefix). */
int lg_session_file_path_check(const char *const *seg, int n, struct lg_error *err);
