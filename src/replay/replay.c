/* The start-up replay of the store (replay.h). */
#include <string.h>

#include "replay/replay.h"

/* Its network (rules, default policy, routing) in lg_net. */
static int restore_namespace(const struct lg_replay_targets *t, const struct lg_resource *r, struct lg_error *err) {
        return t->tenants ? lg_tenants_restore(t->tenants, r, err) : 0;
}

static int restore_pool_group(const struct lg_replay_targets *t, const struct lg_resource *r, struct lg_error *err) {
        return lg_apps_restore_pool(t->apps, r, err);
}

/* Its placeholders and egress policy (`egress: true` stored by an older
 * legiond gets a network of its own, never the host's). */
static int restore_session_pool(const struct lg_replay_targets *t, const struct lg_resource *r,
                                struct lg_error *err) {
        return lg_sessions_restore_pool(t->sessions, r, err);
}

static int restore_app(const struct lg_replay_targets *t, const struct lg_resource *r, struct lg_error *err) {
        return lg_apps_restore_app(t->apps, r, err);
}

static const struct {
        const char *kind;
        const char *ns; /* "" for cluster-scoped kinds, NULL: every namespace */
        int (*restore)(const struct lg_replay_targets *t, const struct lg_resource *r, struct lg_error *err);
} kinds[] = {
        {"Namespace", "", restore_namespace},
        {"PoolGroup", "", restore_pool_group},
        {"SessionPool", NULL, restore_session_pool},
        {"App", NULL, restore_app},
};

int lg_replay(const struct lg_replay_targets *t, lg_replay_report_fn report, void *ud, struct lg_replay_stats *stats,
              struct lg_error *err) {
        struct lg_replay_stats st = {0};
        for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
                _cleanup_(lg_resource_list_free) struct lg_resource_list l = {0};
                int r = lg_store_list(t->store, kinds[k].kind, kinds[k].ns, NULL, &l, err);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < l.n; i++) {
                        struct lg_error why = {0};
                        if (kinds[k].restore(t, l.items[i], &why) >= 0) {
                                st.restored++;
                                continue;
                        }
                        st.failed++;
                        if (report)
                                report(kinds[k].kind, l.items[i], &why, ud);
                }
        }
        /* Pods: the pod manager replays its own kind (restarts, deadlines,
         * deletions that were under way). */
        int r = lg_pods_restore(t->pods, err);
        if (stats)
                *stats = st;
        return r;
}
