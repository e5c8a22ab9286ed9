/* The node agent's private parts, shared by node.c (instances: making,
 * watching, specializing, tearing down), node-pool.c (pool groups, their
 * keys and warm pools), node-adopt.c (records and surviving a restart)
 * and node-image.c (image pools and instances).
 * Not an API: only these files include it. Threading, callbacks and
 * ownership are those of node.h. */
#pragma once

#include "image/image.h"
#include "image/launch.h"
#include "node/agent.h"
#include "node/node.h"
#include "node/probe.h"
#include "node/warm.h"
#include "sandbox/sandbox.h"

enum inst_state { ST_STARTING, ST_READY, ST_SPECIALIZING, ST_SERVING, ST_DEAD };

struct pool;

struct lg_instance {
        lg_warm_item witem;         /* in its pool group's warm pool while a placeholder */
        lg_node *node;
        struct lg_instance *all_prev, *all_next; /* every live instance of the node */
        enum inst_state state;
        char id[40];
        char sock[256];
        uv_poll_t ctl_poll, exit_poll; /* set up once the sandbox exists (polls) */
        uv_timer_t timer;           /* specialize deadline, then boost end */
        struct lg_sandbox_spec sspec; /* what the create request makes */
        int listen_fd;
        bool creating;              /* create request under way */
        bool polls;                 /* ctl_poll and exit_poll open */
        bool released;              /* handles closed, destroy queued */
        bool status_asked;          /* status request under way (it exited) */
        int control_fd, pidfd;      /* the agent's, until the destroy is queued */
        lg_agent_req create_req, mount_req, status_req, destroy_req, net_req;
        char ip[LG_NET_IP_MAX];     /* its address on the node's network, "" = none */
        bool assign;                /* taken with an address and no tenant: assign before the code */
        unsigned refs;              /* requests under way and open handles */
        struct lg_instance_spec *want; /* specialize with this: kept until sent */
        char **env;                 /* its sandbox's environment (a copy of its pool's), NULL = the default */
        bool set_cpu_on_take;       /* its own CPU quota at once (no boost) */
        char *rbuf;                 /* partial frame from the control socket */
        size_t rlen, rcap;
        bool cold;
        uint64_t t_start;
        uint64_t ready_ns;
        uint64_t cpu_millis;
        uint64_t boost_ms;          /* boosted CPU until this long after ready */
        lg_instance_ready_cb ready_cb;
        lg_instance_exit_cb exit_cb;
        void *userdata;
        /* What it serves, for its record; set when it is specialized. */
        char *app, *identifier, *pool_name;
        char *net_policy;           /* NULL = its namespace's */
        unsigned revision;
        bool adopted;               /* taken over from a previous legiond */
        bool detached;              /* left running for the next one */
        bool has_record;            /* adopting: it was serving */
        lg_instance *anext;         /* node->adopted, until claimed */
        char http_addr[272];        /* "unix:<sock>" or "<ip>:<port>" */
        /* Image instances (node-image.c): no worker, no control socket
         * watched; readiness by probe. */
        bool image;
        bool never_made;            /* failed before its sandbox was asked for */
        unsigned port;
        char *ready_path;           /* NULL = a TCP connect */
        char image_id[72];
        uint64_t memory_bytes;
        lg_probe *probe;            /* while waiting for readiness */
        char *fail_why;             /* never_made: why, told from the timer */
        int fail_status;
        struct lg_image_launch launch; /* its workload; kept until the instance is freed */
        struct lg_sandbox_launch slaunch;
        lg_agent_req start_req;
};

struct pool {
        struct pool *next;
        lg_node *node;
        char *name, *runtime;
        char *version;              /* spec.version's copy; NULL: none */
        char **env;                 /* placeholder_env plus the pool's own */
        struct lg_pool_spec spec;
        /* Its placeholders (STARTING and READY), keyed by their shape.
         * A creation that fails does not shrink the pool: it is retried
         * with backoff, and the reason is in the pool's status. Those of
         * an older shape are in its outgoing pools until replaced. */
        lg_warm_pool *warm;
        uint64_t created, on_demand;
        bool deleted;
        /* Runtime "image" (node-image.c): its image (the node's cache) and,
         * with start_process, the pool's own server. */
        const struct lg_image *img;
        char **command, **args;
        char *ready_path;
};

struct lg_node {
        uv_loop_t *loop;
        lg_agent *agent;
        bool own_agent;
        lg_net *net;                /* NULL: sandboxes have loopback only */
        lg_instance *all;           /* every live instance (lg_node_free) */
        char *run_dir, *sandbox_dir, *sock_dir, *runtimes_dir;
        uint64_t specialize_timeout_ms;
        lg_image_store *images;     /* NULL: no image pools or instances */
        uint64_t ready_timeout_ms;
        struct lg_image **imgs;     /* images resolved so far, by id (immutable): node-image.c */
        size_t n_imgs, cap_imgs;
        struct pool *pools;
        struct lg_bind runtime_bind; /* runtimes_dir at /opt/legion/runtime */
        lg_warm *warm;              /* the pool groups' placeholders */
        unsigned live;              /* instances not yet freed */
        char *inst_dir;             /* <run>/instances: records of SERVING instances */
        lg_instance *adopted;       /* adopted, serving, not yet claimed */
        unsigned adopting;          /* adopt requests under way (start) */
        struct lg_node_lost *lost;  /* records whose sandbox could not be adopted */
        size_t n_lost;
};

/* node.c */
extern const char *const node_placeholder_env[];
const char *const *node_runtime_argv(const char *runtime);
void node_env_free(char **env);
/* A copy of a NULL-terminated list; NULL for NULL or an empty one (and
 * for no memory: the caller tells them apart by v). */
/* Drop a reference; the last one frees the instance. */
void node_unref(lg_instance *inst);
/* A new instance among the node's live ones (freed by node_unref). */
void node_all_link(lg_instance *inst);
/* Close its handles and queue the destroy (or detach) of its sandbox. */
void node_instance_release(lg_instance *inst);
/* A create is over: the sandbox's fds and address, then watched; a
 * worker's specialization or an image's readiness next. */
void node_create_done(lg_agent_req *req);
/* Watch its control socket and its exit (an image instance: its exit only). */
void node_watch(lg_instance *inst);
/* It ends (or must): placeholders leave their pool, a waiting ready_cb
 * gets status (< 0) and why, a serving instance's exit_cb why. */
void node_instance_end(lg_instance *inst, int status, const char *why);
/* Ready: SERVING, its record written, the boost timer, ready_cb(0). */
void node_instance_served(lg_instance *inst);
/* A change of its limits nothing waits for. */
void node_instance_update(lg_instance *inst, const struct lg_agent_limits *lim);
/* The tenant (namespace, policy) of an instance of app "namespace/...". */
int node_net_tenant(const char *app, const char *policy, struct lg_agent_net *net, struct lg_error *err);
/* A new instance struct: id, timer, linked among the node's (refs 1: the timer). */
lg_instance *node_instance_new(lg_node *node);
#define PLACEHOLDER_CPU_WEIGHT 10
/* Submit the assignment of its address to the tenant of app. */
int node_assign_tenant(lg_instance *inst, const char *app, const char *policy, struct lg_error *err);
bool node_pool_network(const struct pool *p);
/* Start making a sandbox for pool p; it becomes usable in create_done.
 * for_spec: the instance it is made for (on demand), NULL for a placeholder. */
int node_make_sandbox(lg_node *node, struct pool *p, const struct lg_instance_spec *for_spec, lg_instance **ret,
                      struct lg_error *err);

/* node-pool.c */
struct pool *node_find_pool(lg_node *node, const char *name);

/* node-image.c */
/* The image of ref from the node's cache (or the store, then cached):
 * valid while the node is. -ENOENT: not in the store. */
int node_image_get(lg_node *node, const char *ref, const struct lg_image **ret, struct lg_error *err);
void node_images_free(lg_node *node);
/* A pool of runtime "image": check what spec names before the pool
 * changes (its image; with start_process, its server's launch). */
int node_image_pool_prepare(lg_node *node, const struct lg_pool_spec *spec, const struct lg_image **img,
                            struct lg_error *err);
/* Keep it in p (img NULL: p is not an image pool). */
int node_image_pool_set(struct pool *p, const struct lg_pool_spec *spec, const struct lg_image *img,
                        struct lg_error *err);
void node_image_pool_clear(struct pool *p);
/* The image part of its key ("" for other pools). */
void node_image_pool_key(const struct pool *p, char *buf, size_t cap);
/* A warm sandbox of an image pool (warm_make). */
int node_image_placeholder(struct pool *p, lg_instance **ret, struct lg_error *err);
/* lg_node_instance_start for an image instance; p NULL: no pool. */
int node_image_start(lg_node *node, struct pool *p, const struct lg_instance_spec *spec, lg_instance **ret,
                     struct lg_error *err);
/* Made (by node_create_done, watched): a warm sandbox is ready, a
 * started one is probed. */
void node_image_created(lg_instance *inst);
/* The agent's status of an image instance whose pidfd polled readable. */
void node_image_status(lg_agent_req *req);

/* node-adopt.c */
void node_record_path(const lg_instance *inst, char *buf, size_t cap);
/* The record of a SERVING instance: a few lines, written once. */
int node_record_write(lg_instance *inst);
/* Adopt what a previous legiond left (lg_node_new, before anything else). */
void node_adopt_left(lg_node *node);
