/* The node agent's sandbox interface: asynchronous operations on the
 * sandboxes of one node, for code that runs on a libuv loop.
 *
 * Requests, in the style of libuv's (uv_fs_t): the caller owns an
 * lg_agent_req, submits it with one of the lg_agent_* calls below and
 * gets its callback exactly once, on the loop, when the operation is
 * over, with req->result (>= 0, or -errno) and req->err saying why. A
 * call that returns < 0 submitted nothing and its callback never runs.
 * The request must stay untouched until its callback; it may be
 * submitted again from the callback. Everything that blocks (clone, the
 * mounts of a rootfs, the fork of a mount helper, waiting for processes,
 * the cgroup rmdir retries, rm -rf of the state) runs off the loop, on
 * libuv's thread pool; the loop only queues and completes.
 *
 * Sandboxes are named by id ([A-Za-z0-9_.-]{1,64}). Every call carries
 * all it needs (a spec, a launch, paths, numbers are copied or read only
 * until the callback), nothing is shared by pointer across the
 * interface, so that a remote agent (the same operations over HTTP to
 * another machine) can implement it: struct lg_agent_ops. What only a
 * local agent can give is marked "local": a remote one answers -1 there.
 *
 * Order: requests for one sandbox run one at a time, in the order they
 * were submitted (an lg_sandbox handle is driven by one thread at a
 * time); requests for different sandboxes run in parallel. A request
 * submitted behind a destroy of its sandbox, or behind a create or adopt
 * that failed, completes with -ESRCH. Destroy never fails to run: it is
 * the last word on a sandbox, and the id is free again once it is done;
 * so is a detach (the sandbox, if detachable and started, runs on for
 * the next agent to adopt; otherwise it is destroyed).
 *
 * Network (net/net.h): an agent made with an lg_net gives sandboxes an
 * address on the node's network. A create with in.create.net.attach
 * reserves one, and the sandbox's network namespace gets it (through
 * spec.net_hook, before its first process goes on: the spec's own hook
 * must be NULL, and it must have a network namespace of its own); with a
 * namespace named, the address is assigned to it (and its policy) before
 * the workload starts. A start with in.start.net.namespace assigns in the
 * same trip (a warm sandbox taken by a tenant); lg_agent_net_assign does
 * it alone (an adopted sandbox). Adopt takes back the address the
 * sandbox's namespace holds (lg_net_reclaim). Destroy releases it, on the
 * thread pool, after the sandbox is gone; detach leaves it to the next
 * agent. What fails after the reservation releases it. Without an lg_net
 * a create with attach, a start naming a namespace and an assign fail
 * with -EOPNOTSUPP ("networking is off on this node").
 *
 * Threading: every call, and every callback, on the agent's loop.
 * Memory: the agent owns its sandboxes and their addresses; the lg_net is
 * the caller's and must outlive the agent. lg_agent_free() waits
 * (running the loop) for the requests under way, then destroys what is
 * left. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "common/util.h"
#include "net/net.h"
#include "sandbox/sandbox.h"

#define LG_AGENT_ID_MAX 65 /* 64 characters and the NUL */

typedef struct lg_agent lg_agent;
typedef struct lg_agent_req lg_agent_req;
typedef void (*lg_agent_cb)(lg_agent_req *req);

enum lg_agent_op {
        LG_AGENT_CREATE,  /* a sandbox from a spec; started too with LG_AGENT_START_NOW */
        LG_AGENT_ADOPT,   /* a sandbox that exists already (left by a previous legiond) */
        LG_AGENT_START,   /* its workload: the spec's, or a launch given now */
        LG_AGENT_MOUNT,   /* bind a host path inside it (delayed mount of code) */
        LG_AGENT_UPDATE,  /* cgroup limits, CPU weight, scheduling priority */
        LG_AGENT_SIGNAL,  /* a signal to its workload */
        LG_AGENT_STATUS,  /* has it exited, how; its cgroup's counters */
        LG_AGENT_DESTROY, /* kill everything, remove cgroup, state and uid range */
        LG_AGENT_DETACH,  /* let go of it, running, for the next owner to adopt */
        LG_AGENT_NET_ASSIGN, /* its address to a namespace and policy */
};

/* Create flags. */
enum {
        LG_AGENT_START_NOW = 1 << 0, /* start the spec's workload after create */
        LG_AGENT_OPEN_NS = 1 << 1,   /* open its ipc (and own net) namespace: ipcns_fd, netns_fd */
        LG_AGENT_LOW_PRIO = 1 << 2,  /* create at nice +10 (a warm sandbox made ahead) */
};

/* What an update changes. */
enum {
        LG_AGENT_SET_LIMITS = 1 << 0, /* memory, cpu, weight and pids, as lg_sandbox_set_limits */
        LG_AGENT_SET_CPU = 1 << 1,    /* cpu_millis only (startup boost over) */
        LG_AGENT_SET_WEIGHT = 1 << 2, /* cpu_weight only */
        LG_AGENT_SET_PRIO = 1 << 3,   /* legion-init back to the agent's own nice (taken from LOW_PRIO) */
};

struct lg_agent_limits {
        unsigned set;
        uint64_t memory_bytes, cpu_millis, cpu_weight, pids_max;
};

/* A sandbox's place on the node's network (see the top of this file). */
struct lg_agent_net {
        bool attach;                  /* create: an address of its own */
        char namespace[64];           /* "" = no tenant yet (it reaches DNS only) */
        char policy[LG_NET_NAME_MAX]; /* "" = the namespace's own policy */
};

struct lg_agent_req {
        /* Public: data is the caller's; the rest is read-only for it. */
        void *data;
        enum lg_agent_op op;
        char id[LG_AGENT_ID_MAX]; /* the sandbox (create: the one made) */
        int result;               /* in the callback: >= 0 or -errno */
        struct lg_error err;

        /* The arguments, copied or pointed to until the callback. net of
         * create and start is the caller's to fill before the call (a
         * zeroed request: none); the calls keep it. A struct, not a union:
         * a request used for a create and then a start keeps each one's. */
        struct {
                struct {
                        const struct lg_sandbox_spec *spec; /* valid until the callback */
                        unsigned flags;
                        struct lg_agent_net net;
                } create;
                struct {
                        const struct lg_sandbox_launch *launch; /* NULL = the spec's workload */
                        struct lg_agent_limits limits;          /* set = 0: none */
                        struct lg_agent_net net;                /* namespace "": no assignment */
                        /* A host path bound inside first, as lg_agent_mount
                         * would, in the same trip (a warm job sandbox's
                         * files): src NULL = none; both valid until the
                         * callback. */
                        struct {
                                const char *src, *dst;
                                bool readonly;
                        } mount;
                } start;
                struct lg_agent_net assign;     /* lg_agent_net_assign's (attach unused) */
                struct {
                        const char *state_root; /* local; NULL = the agent's; valid until the callback */
                } adopt;
                struct {
                        char *src, *dst; /* copies */
                        bool readonly;
                } mount;
                struct lg_agent_limits update;
                int signal;
        } in;

        /* Results of create and adopt. The fds (local) stay the agent's
         * and are valid until a destroy of the sandbox is submitted: stop
         * watching them (uv_close of a uv_poll_t) before that. ipcns_fd
         * and netns_fd (LG_AGENT_OPEN_NS) are the caller's to close. */
        struct {
                pid_t pid;              /* legion-init, host pid (local) */
                int control_fd;         /* the control socket (local) */
                int pidfd;              /* readable once it exited (local) */
                int ipcns_fd, netns_fd; /* local, caller's; -1 = none */
                /* Status: exited (1) or running (0), how, and the cgroup's
                 * counters (stats_result -ENODATA: made without limits). */
                int exited;
                struct lg_sandbox_status status;
                struct lg_sandbox_stats stats;
                int stats_result;
                /* Create and adopt: its address ("" = none), the host
                 * end of its veth (local). */
                struct lg_net_addr net;
        } out;

        /* Private. */
        lg_agent_cb cb;
        lg_agent *agent;
        lg_agent_req *next;
        void *entry;
        bool owned; /* allocated by the agent (a destroy with no request) */
        uv_work_t work;
};

/* A backend. Each submits req (op and arguments filled in, cb set) and
 * returns 0, or -errno having submitted nothing. */
struct lg_agent_ops {
        const char *name; /* "local" */
        int (*submit)(lg_agent *agent, lg_agent_req *req);
        /* Wait for the requests under way, destroy every sandbox, free. */
        void (*free)(lg_agent *agent);
        const char *(*state_dir)(lg_agent *agent, const char *id); /* may be NULL */
};

/* An agent driving sandboxes on this machine from loop's thread pool.
 * state_root: where their state lives (lg_sandbox_spec.state_root;
 * specs without one get it). net: the node's network (NULL = no
 * networking: sandboxes have loopback only). */
int lg_agent_local_new(uv_loop_t *loop, const char *state_root, lg_net *net, lg_agent **ret, struct lg_error *err);
void lg_agent_free(lg_agent *agent);
const char *lg_agent_name(const lg_agent *agent);
/* Requests submitted and not yet called back. */
unsigned lg_agent_pending(const lg_agent *agent);
/* The state directory of a sandbox made or adopted (its logs live
 * there): local; NULL for a remote agent or an unknown id. Valid until
 * a destroy of it is submitted. */
const char *lg_agent_state_dir(lg_agent *agent, const char *id);

/* The operations. id NULL or "" for create: a random one. */
int lg_agent_create(lg_agent *agent, lg_agent_req *req, const char *id, const struct lg_sandbox_spec *spec,
                    unsigned flags, lg_agent_cb cb);
/* A detachable sandbox a previous owner left (lg_sandbox_adopt): out as
 * for create, out.net its address if it has one (taken back, to be
 * assigned again with lg_agent_net_assign: the assignment is not kept
 * across a restart). What cannot be adopted is destroyed, and err says
 * why. */
int lg_agent_adopt(lg_agent *agent, lg_agent_req *req, const char *id, lg_agent_cb cb);
/* The same for a sandbox made with a state root of its own in its spec
 * (pods: <run>/pod-sandboxes): local. */
int lg_agent_adopt_in(lg_agent *agent, lg_agent_req *req, const char *state_root, const char *id, lg_agent_cb cb);
int lg_agent_detach(lg_agent *agent, lg_agent_req *req, const char *id, lg_agent_cb cb);
/* req->in.start.mount (src set) bound as lg_agent_mount would, lim (may
 * be NULL) applied as lg_agent_update would, and req->in.start.net
 * (namespace set) assigned as lg_agent_net_assign would, in that order
 * and in the same trip to the thread pool, before the workload starts (a
 * warm sandbox's); the first that fails ends the request. */
int lg_agent_start(lg_agent *agent, lg_agent_req *req, const char *id, const struct lg_sandbox_launch *launch,
                   const struct lg_agent_limits *lim, lg_agent_cb cb);
int lg_agent_mount(lg_agent *agent, lg_agent_req *req, const char *id, const char *src, const char *dst,
                   bool readonly, lg_agent_cb cb);
int lg_agent_update(lg_agent *agent, lg_agent_req *req, const char *id, const struct lg_agent_limits *lim,
                    lg_agent_cb cb);
int lg_agent_signal(lg_agent *agent, lg_agent_req *req, const char *id, int sig, lg_agent_cb cb);
/* Whether it exited (reaping it then: watch pidfd, then ask), and its
 * counters: out.exited, out.status, out.stats, out.stats_result. */
int lg_agent_status(lg_agent *agent, lg_agent_req *req, const char *id, lg_agent_cb cb);
/* Its address to namespace (must exist: lg_net_namespace_set) with
 * policy (NULL or "" = the namespace's), replacing what it had: for a
 * sandbox adopted after a restart (out.net said its address). -ENOENT: it
 * has no address, or no such namespace or policy; -ENAMETOOLONG. */
int lg_agent_net_assign(lg_agent *agent, lg_agent_req *req, const char *id, const char *namespace, const char *policy,
                        lg_agent_cb cb);
/* req may be NULL (and then cb too): the agent keeps its own request and
 * nobody is told; lg_agent_free still waits for it. Its address, if it
 * has one, is released once the sandbox is gone. */
int lg_agent_destroy(lg_agent *agent, lg_agent_req *req, const char *id, lg_agent_cb cb);
