/* lg_node behind the router's provider interface (node-provider.h): each
 * started instance gets a small record holding the router's callbacks; its
 * address is the handle the router names the instance by. */
#include <stdio.h>
#include <stdlib.h>

#include "node/node-provider.h"

struct nprov_inst {
        lg_instance *inst;
        lg_router_ready_cb ready;
        lg_router_exit_cb exited;
        void *ud;
};

static void on_ready(lg_instance *inst, int status, const char *message, void *userdata) {
        struct nprov_inst *rec = userdata;
        lg_router_ready_cb ready = rec->ready;
        void *ud = rec->ud;
        if (status < 0) {
                free(rec); /* the node destroyed the instance */
                ready(ud, status, message, NULL);
                return;
        }
        struct lg_router_instance_info info = {
                .id = lg_instance_id(inst),
                .address = lg_instance_http_address(inst),
                .log_dir = lg_instance_log_dir(inst),
                .net_address = lg_instance_address(inst),
                .cold = lg_instance_cold(inst),
                .start_ns = lg_instance_start_ns(inst),
        };
        /* rec may be freed in there (the router destroys what it no
         * longer wants): not touched after. */
        ready(ud, 0, NULL, &info);
}

static void on_instance_exit(lg_instance *inst, const char *status, void *userdata) {
        struct nprov_inst *rec = userdata;
        lg_router_exit_cb exited = rec->exited;
        void *ud = rec->ud;
        (void) inst;
        free(rec); /* the instance is gone */
        exited(ud, status);
}

static int provider_start(void *provider, const struct lg_router_instance_spec *spec, lg_router_ready_cb ready,
                          lg_router_exit_cb exited, void *ud, uint64_t *handle, struct lg_error *err) {
        _cleanup_free_ struct nprov_inst *rec = calloc(1, sizeof(*rec));
        if (!rec)
                return lg_error_set(err, ENOMEM, "allocate instance record");
        rec->ready = ready;
        rec->exited = exited;
        rec->ud = ud;
        struct lg_instance_spec ns = {
                .pool = spec->pool,
                .app = spec->app,
                .revision = spec->revision,
                .entrypoint = spec->entrypoint,
                .env = spec->env,
                .code_dir = spec->code_dir,
                .identifier = spec->identifier,
                .cpu_millis = spec->cpu_millis,
                .net_policy = spec->net_policy,
                .image = spec->image,
                .command = spec->command,
                .args = spec->args,
                .port = spec->port,
                .ready_path = spec->ready_path,
                .memory_bytes = spec->memory_bytes,
        };
        int r = lg_node_instance_start(provider, &ns, on_ready, on_instance_exit, rec, &rec->inst, err);
        if (r < 0)
                return r;
        *handle = (uint64_t) (uintptr_t) TAKE_PTR(rec);
        return 0;
}

static void provider_destroy(void *provider, uint64_t handle) {
        struct nprov_inst *rec = (struct nprov_inst *) (uintptr_t) handle;
        (void) provider;
        lg_instance_destroy(rec->inst);
        free(rec);
}

static unsigned provider_placeholders(void *provider, const char *pool) {
        struct lg_pool_stats ps;
        return lg_node_pool_stats(provider, pool, &ps) == 0 ? ps.ready : 0;
}

static int provider_adopt(void *provider, const char *app, unsigned revision, lg_router_ready_cb ready,
                          lg_router_exit_cb exited, void *ud, uint64_t *handle, struct lg_router_instance_info *info) {
        static char addr[300]; /* valid until the next call, as the interface says */
        struct nprov_inst *rec = calloc(1, sizeof(*rec));
        if (!rec)
                return -ENOMEM;
        rec->ready = ready;
        rec->exited = exited;
        rec->ud = ud;
        int r = lg_node_instance_adopt(provider, app, revision, on_ready, on_instance_exit, rec, &rec->inst);
        if (r <= 0) {
                free(rec);
                return r;
        }
        /* Valid until the next call, as the interface says: a copy. */
        snprintf(addr, sizeof(addr), "%s", lg_instance_http_address(rec->inst));
        *info = (struct lg_router_instance_info){
                .id = lg_instance_id(rec->inst),
                .address = addr,
                .log_dir = lg_instance_log_dir(rec->inst),
                .net_address = lg_instance_address(rec->inst),
                .adopted = true,
        };
        *handle = (uint64_t) (uintptr_t) rec;
        return 1;
}

const struct lg_router_provider_ops lg_node_provider_ops = {
        .start = provider_start,
        .destroy = provider_destroy,
        .placeholders = provider_placeholders,
        .adopt = provider_adopt,
};
