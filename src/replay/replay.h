/* Start-up: one replay of the store into the application modules, so that
 * what was declared before a restart is live again: pool groups and
 * session pools (warm placeholders on the node), apps (their latest
 * revision routed), pods (the pod manager looks at each again), and first
 * of all namespaces: their networks are in the node's lg_net before any
 * sandbox is given a tenant (apps, sessions and pods taking back their
 * sandboxes assign them). Kinds go
 * in the order they depend on each other -- pools before the apps that
 * start from them -- and one object that cannot be made live (an app whose
 * package has gone) is reported and skipped, never a reason to stop: it
 * stays in the store, as the API shows it.
 *
 * Threading: on the modules' loop, before it serves requests; synchronous.
 * Callbacks: report runs from inside lg_replay, once per object skipped.
 * Memory: never logs; borrows every handle and frees nothing it is given. */
#pragma once

#include "apps/apps.h"
#include "pod/pod.h"
#include "session/session.h"
#include "store/store.h"
#include "tenant/tenant.h"

struct lg_replay_targets {
        lg_store *store;
        lg_tenants *tenants;   /* Namespace; NULL: none */
        lg_apps *apps;         /* PoolGroup, App */
        lg_sessions *sessions; /* SessionPool */
        lg_pods *pods;         /* Pod; NULL: none */
};

struct lg_replay_stats {
        unsigned restored, failed;
};

/* An object that could not be made live, and why. */
typedef void (*lg_replay_report_fn)(const char *kind, const struct lg_resource *r, const struct lg_error *why,
                                    void *ud);

/* < 0 only when the store cannot be read or the pod manager fails as a
 * whole; report and stats may be NULL. */
int lg_replay(const struct lg_replay_targets *t, lg_replay_report_fn report, void *ud, struct lg_replay_stats *stats,
              struct lg_error *err);
