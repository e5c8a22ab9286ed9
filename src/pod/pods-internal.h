/* What the pod manager's files share (pods.c: the manager, pod lifetime,
 * deletion and deadlines; pods-run.c: one container's images, sandbox and
 * restarts; pods-status.c: the PodStatus written to the store; pods-spec.c:
 * turning a container spec and an image config into a sandbox spec).
 *
 * Everything runs on legiond's loop except the bodies of uv_work_t jobs
 * (image pulls), which touch only their own job fields. Sandboxes are
 * the node agent's (node/agent.h): a container names its sandbox by id
 * and creates, starts, asks the exit status of and destroys it with
 * requests that run off the loop; each request under way counts as a
 * job of its pod.
 *
 * Lifetimes: a pod is unlinked from the manager's list when it is gone
 * from the store (deleted by us, or found missing), but its memory stays
 * until no job is queued for it and every libuv handle of it is closed
 * (pod_release). A container's handles live as long as its pod.
 *
 * pods-warm.c keeps warm sandboxes: made ahead for the images pods
 * recently used, taken by a pod's first container instead of a new one. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "image/launch.h"
#include "node/agent.h"
#include "pod/pod.h"
#include "sandbox/sandbox.h"
#include "tenant/tenant.h"

struct pod;

/* Where a container is in its life. */
enum ctr_phase {
        C_IDLE,      /* nothing happening: about to be advanced */
        C_PULLING,   /* image pull job queued */
        C_PULL_WAIT, /* pull failed: timer until the next try */
        C_BLOCKED,   /* waiting (config error, image never pulled): stays until deleted */
        C_WAIT_NS,   /* waiting for the pod's first container to make the namespaces */
        C_CREATING,  /* sandbox creation job queued */
        C_RUNNING,   /* sandbox started; exit_poll armed */
        C_BACKOFF,   /* exited, restart timer armed */
        C_DONE,      /* terminated for good */
};

struct ctr {
        struct pod *pod;
        size_t idx;
        char *name;
        const json_t *spec;        /* the container's spec, inside pod->spec */
        enum ctr_phase phase;

        /* Status pieces, kept as the JSON the PodStatus shows. */
        json_t *state;             /* {"waiting": {...}} | {"running": ...} | {"terminated": ...} */
        json_t *last_state;        /* {} or {"terminated": {...}} */
        unsigned restart_count;
        bool started_once;
        char image_id[80];
        char container_id[96];     /* "legion://<sandbox id>", "" before the first */
        char prev_container_id[96]; /* kept while a warm sandbox starts */

        /* Image. */
        struct lg_image *img;      /* resolved; kept while a sandbox uses its layers */
        bool pulled_this_start;    /* imagePullPolicy Always: pulled for this start */
        unsigned pull_failures;
        int pull_stage;            /* in C_PULL_WAIT: ErrImagePull shown, then ImagePullBackOff */

        /* Pull job (fields written by the worker thread until done). */
        uv_work_t pull_work;
        char *pull_ref;
        struct lg_image *pull_img;
        int pull_result;
        struct lg_error pull_err;

        /* Sandbox creation: create, then limits and start (C_CREATING). */
        lg_agent_req create_req, start_req, status_req, kill_req;
        struct lg_sandbox_spec sspec;   /* the sandbox (limits, namespaces) */
        struct lg_sandbox_launch launch; /* the workload, given at start */
        struct lg_image_launch run; /* argv, env, cwd, user: owned, for launch */
        char *log_path;
        bool makes_ns;             /* this creation opens the pod's namespaces */
        bool warm_fit;             /* could run in a warm sandbox (pods-warm.c) */
        bool from_warm;            /* this start is a warm sandbox's */
        bool warm_tried;           /* a warm one failed to start: make one */
        int ns_net, ns_ipc;        /* the pod's namespaces once this one runs */
        bool killing;              /* killed (ctr_kill): its destroy under way */

        /* The sandbox: its id at the agent, while it exists (created, no
         * destroy queued); pidfd is the agent's until then. */
        char sb_id[LG_AGENT_ID_MAX];
        bool has_sb;
        int pidfd;
        struct exit_poll *exit_poll; /* pidfd watch of the current run */
        uv_timer_t timer;          /* restart back-off, pull retry */
        int64_t run_started;       /* time the current run started (epoch s) */
        uint64_t run_started_ms;   /* loop time of the same */
        unsigned crash_streak;     /* restarts since the last long run: back-off exponent */
};

struct pod {
        lg_pods *mgr;
        struct pod *next;
        char ns[LG_STORE_NAME_MAX + 1];
        char name[LG_STORE_NAME_MAX + 1];
        char uid[40];
        json_t *spec;              /* PodSpec (defaulted) */
        /* The Pod as stored, as far as status writes need it: its
         * resource version and status document (with the API's
         * deletionTimestamp). Kept from the object each write returns, so
         * that a write does not read the Pod back first; NULL = read it. */
        int64_t rv;
        json_t *stored_status;
        struct ctr *ctrs;
        size_t n_ctrs;
        char restart_policy[16];   /* Always, OnFailure, Never */
        bool host_network;
        /* Its egress policy: "<ns>/pod/<name>" (annotation
         * legion.dev/egress, registered while the pod lives), "" = the
         * namespace's. */
        char net_policy[LG_NET_NAME_MAX];
        char pod_ip[LG_NET_IP_MAX]; /* its address on the node's network, "" = none (yet) */
        /* The sandbox that made its network namespace holds the address
         * (the agent releases it with the sandbox): destroyed only with
         * the pod, also when its container restarts (net_sb_kept). */
        char net_sb[LG_AGENT_ID_MAX];
        bool net_sb_kept;

        int64_t start_time;        /* status.startTime */
        char reason[64], message[256]; /* pod-level (DeadlineExceeded) */
        bool deadline_exceeded;
        bool deleting;
        bool unlinked;             /* out of the manager's list */
        bool finished;             /* every container DONE at restore: nothing to run */

        /* The pod's shared namespaces (fds of /proc/<pid>/ns/...), from
         * the first container made; -1 until then. */
        int netns_fd, ipcns_fd;
        bool ns_pending;           /* a creation making them is queued */

        /* Conditions' last transition times and values. */
        struct {
                bool value;
                bool set;
                int64_t since;
        } cond[4];

        uv_timer_t deadline_timer; /* activeDeadlineSeconds */
        uv_timer_t grace_timer;    /* deletion grace period */
        int jobs;                  /* uv_work_t queued for this pod */
        int handles;               /* libuv handles not yet closed */
        bool handles_closing;
        int quiet;                 /* > 0: pod_changed writes nothing (batch) */
};

struct lg_pods {
        uv_loop_t *loop;
        lg_store *store;
        lg_image_store *images;
        char *state_root;          /* sandboxes of pods */
        char *logs_dir;
        char node_name[256];
        char host_ip[64];
        uint64_t log_max_bytes;
        uint64_t backoff_ms;       /* first restart back-off (10 s; LEGION_POD_BACKOFF_MS) */
        struct pod *pods;
        struct pod *zombies;       /* unlinked, waiting for jobs and handles */
        int dynmods_fd;            /* lg_sandbox_favor_dynmods(), -1 = none */
        lg_agent *agent;           /* every sandbox of pods */
        lg_net *net;               /* the node's network (the agent's); NULL = off */
        lg_tenants *tenants;       /* pods' egress policies; NULL = none */
        unsigned adopting;         /* containers' adopts under way (lg_pods_restore waits) */
        bool own_agent;
        struct warm_pool *warm;    /* pods-warm.c */
};

#define POD_DEFAULT_ROOTFS (1ull << 30)

/* Take x out of the singly linked list that starts at head (linked by
 * ->next), if it is on it. */
#define POD_LIST_UNLINK(head, x)                                                   \
        do {                                                                       \
                for (__typeof__(x) *pp_ = &(head); *pp_; pp_ = &(*pp_)->next)      \
                        if (*pp_ == (x)) {                                         \
                                *pp_ = (x)->next;                                  \
                                break;                                             \
                        }                                                          \
        } while (0)

/* pods.c */
/* Something changed in the pod: write status, finish a deletion when
 * everything stopped. May free nothing; the caller may still use pod. */
void pod_changed(struct pod *pod);
void pod_release(struct pod *pod); /* free when no job and no handle remains */
void pod_log_dir(const struct pod *pod, char *buf, size_t cap);
int64_t pod_now(void);

/* pods-run.c */
/* Queue the destroy of sandbox id at the agent, then done(arg) on the
 * loop (done may be NULL). false when it could not be queued (there is
 * no such sandbox): done will not be called. */
bool pods_destroy(lg_pods *m, const char *id, void (*done)(void *arg), void *arg);
void ctr_init_handles(struct ctr *c);
/* Do the next thing for a container that is C_IDLE (resolve or pull its
 * image, create its sandbox). */
void ctr_advance(struct ctr *c);
/* Kill a running container's sandbox now; it becomes terminated with
 * exitCode 137 and reason; no restart. */
void ctr_kill(struct ctr *c, const char *reason, const char *message);
/* SIGTERM to the workload (graceful deletion). */
void ctr_term(struct ctr *c);
/* Stop timers; a container in back-off or blocked becomes DONE. */
void ctr_stop(struct ctr *c);
void ctr_close_handles(struct ctr *c);
void ctr_free(struct ctr *c);
/* Wake every C_WAIT_NS container of the pod (the namespaces exist now, or
 * their maker failed). */
void pod_wake_ns_waiters(struct pod *pod);
bool ctr_active(const struct ctr *c);
/* Would a container that exited with exit_code be started again? */
bool ctr_will_restart(const struct ctr *c, int exit_code);
/* Start it again now (restore). */
void ctr_restart_now(struct ctr *c);
/* Restore: take back (through the agent) the sandbox of a container that
 * was running when legiond stopped; it goes on running, restartCount
 * unchanged, or, when its sandbox did not survive, is restarted as before.
 * -errno when nothing was submitted (the caller restarts it). */
int ctr_adopt(struct ctr *c);
/* Shutting down: leave a running container's sandbox for the next
 * legiond; the container shows nothing more here (C_DONE, no status). */
void ctr_detach(struct ctr *c);
void ctr_set_waiting(struct ctr *c, const char *reason, const char *message);

/* pods-run.c: the pod's place on the node's network (none for
 * hostNetwork, or with networking off), and its tenant for the agent:
 * the pod's namespace and policy. */
bool pod_networked(const struct pod *pod);
/* pod_unlink: the kept sandbox that held the pod's address goes now. */
void pod_net_sb_destroy(struct pod *pod);
void pod_tenant(const struct pod *pod, struct lg_agent_net *net);

/* pods-warm.c */
int warm_new(lg_pods *m, struct lg_error *err);
/* Destroy every warm sandbox, waiting for the jobs making them. */
void warm_free(lg_pods *m);
/* Can c, about to be created, run in a warm sandbox? Its pod's first
 * container (the sandbox's namespaces become the pod's), not hostNetwork,
 * the default rootfs size, warm sandboxes enabled. */
bool warm_fits(const struct ctr *c);
/* Take a ready warm sandbox for c's image: its id (LG_AGENT_ID_MAX),
 * pidfd, fds of its network and IPC namespaces, and its address on the
 * node's network (ip, LG_NET_IP_MAX; "" = none). 1 = taken, 0 = none
 * ready. */
int warm_take(lg_pods *m, const struct lg_image *img, char *id, int *pidfd, int *netns, int *ipcns, char *ip);
/* A container that fits started (warm or not): keep its image warm,
 * making what is missing on the thread pool. */
void warm_used(lg_pods *m, const struct lg_image *img);
/* Add the layer dirs of warm sandboxes (and of those being made) to l. */
void warm_layers(lg_pods *m, struct lg_strlist *l);

/* pods-spec.c */
/* What every container's sandbox has, warm or not: state root, the
 * image's layers, the rootfs size, the pids limit. */
void pods_base_spec(lg_pods *m, const struct lg_image *img, uint64_t rootfs_bytes, struct lg_sandbox_spec *s);
/* Build c->sspec (and the strings it points to) from the container spec
 * and c->img. On failure returns -errno with reason set to the Kubernetes
 * waiting reason (CreateContainerConfigError, CreateContainerError) and
 * err to the message. */
int ctr_build_sandbox_spec(struct ctr *c, const char **reason, struct lg_error *err);
void ctr_free_sandbox_spec(struct ctr *c);

/* pods-status.c */
json_t *pod_status_json(struct pod *pod);
/* Write the status if it changed. */
int pod_write_status(struct pod *pod);
/* r is the pod's object as the store has it now: status writes build on it. */
void pod_set_stored(struct pod *pod, const struct lg_resource *r);
/* Load what a stored status says (restore). */
void pod_load_status(struct pod *pod, const json_t *status);
