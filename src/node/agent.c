/* The front of the node agent's sandbox interface (agent.h): fills a
 * request from the caller's arguments and hands it to the backend's ops
 * table; lg_agent_complete() is the one place a request ends. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "node/agent-backend.h"

static int submit_owned(lg_agent *agent, lg_agent_req *req, enum lg_agent_op op, const char *id, lg_agent_cb cb,
                        bool owned) {
        if (id && strlen(id) >= LG_AGENT_ID_MAX)
                return -ENAMETOOLONG;
        req->op = op;
        snprintf(req->id, sizeof(req->id), "%s", id ? id : "");
        req->result = 0;
        req->err = (struct lg_error){0};
        req->cb = cb;
        req->owned = owned;
        req->agent = agent;
        req->next = NULL;
        req->entry = NULL;
        req->out.pid = 0;
        req->out.control_fd = req->out.pidfd = req->out.ipcns_fd = req->out.netns_fd = -1;
        req->out.exited = 0;
        req->out.stats_result = -ENODATA;
        req->out.net = (struct lg_net_addr){0};
        int r = agent->ops->submit(agent, req);
        if (r >= 0)
                agent->pending++;
        return r;
}

static int submit(lg_agent *agent, lg_agent_req *req, enum lg_agent_op op, const char *id, lg_agent_cb cb) {
        return submit_owned(agent, req, op, id, cb, false);
}

static void free_args(lg_agent_req *req) {
        if (req->op == LG_AGENT_MOUNT) {
                free(req->in.mount.src);
                free(req->in.mount.dst);
                req->in.mount.src = req->in.mount.dst = NULL;
        }
}

void lg_agent_complete(lg_agent_req *req) {
        lg_agent *agent = req->agent;
        agent->pending--;
        free_args(req);
        if (req->owned)
                free(req);
        else if (req->cb)
                req->cb(req);
}

/* The caller filled net's arrays: a string cut short rather than one
 * read past its end. */
static void terminate(struct lg_agent_net *net) {
        net->namespace[sizeof(net->namespace) - 1] = '\0';
        net->policy[sizeof(net->policy) - 1] = '\0';
}

int lg_agent_create(lg_agent *agent, lg_agent_req *req, const char *id, const struct lg_sandbox_spec *spec,
                    unsigned flags, lg_agent_cb cb) {
        req->in.create.spec = spec;
        req->in.create.flags = flags;
        terminate(&req->in.create.net);
        return submit(agent, req, LG_AGENT_CREATE, id, cb);
}

int lg_agent_adopt(lg_agent *agent, lg_agent_req *req, const char *id, lg_agent_cb cb) {
        return lg_agent_adopt_in(agent, req, NULL, id, cb);
}

int lg_agent_adopt_in(lg_agent *agent, lg_agent_req *req, const char *state_root, const char *id, lg_agent_cb cb) {
        if (!id || !*id)
                return -EINVAL;
        req->in.adopt.state_root = state_root;
        return submit(agent, req, LG_AGENT_ADOPT, id, cb);
}

int lg_agent_start(lg_agent *agent, lg_agent_req *req, const char *id, const struct lg_sandbox_launch *launch,
                   const struct lg_agent_limits *lim, lg_agent_cb cb) {
        req->in.start.launch = launch;
        req->in.start.limits = lim ? *lim : (struct lg_agent_limits){0};
        terminate(&req->in.start.net);
        return submit(agent, req, LG_AGENT_START, id, cb);
}

int lg_agent_mount(lg_agent *agent, lg_agent_req *req, const char *id, const char *src, const char *dst,
                   bool readonly, lg_agent_cb cb) {
        req->in.mount.src = strdup(src);
        req->in.mount.dst = strdup(dst);
        req->in.mount.readonly = readonly;
        req->op = LG_AGENT_MOUNT;
        int r = req->in.mount.src && req->in.mount.dst ? submit(agent, req, LG_AGENT_MOUNT, id, cb) : -ENOMEM;
        if (r < 0)
                free_args(req);
        return r;
}

int lg_agent_update(lg_agent *agent, lg_agent_req *req, const char *id, const struct lg_agent_limits *lim,
                    lg_agent_cb cb) {
        req->in.update = *lim;
        return submit(agent, req, LG_AGENT_UPDATE, id, cb);
}

int lg_agent_signal(lg_agent *agent, lg_agent_req *req, const char *id, int sig, lg_agent_cb cb) {
        req->in.signal = sig;
        return submit(agent, req, LG_AGENT_SIGNAL, id, cb);
}

int lg_agent_status(lg_agent *agent, lg_agent_req *req, const char *id, lg_agent_cb cb) {
        return submit(agent, req, LG_AGENT_STATUS, id, cb);
}

int lg_agent_detach(lg_agent *agent, lg_agent_req *req, const char *id, lg_agent_cb cb) {
        return submit(agent, req, LG_AGENT_DETACH, id, cb);
}

/* dst (size cap) from s (NULL = ""): false when it does not fit. */
static bool copy_name(char *dst, size_t cap, const char *s) {
        return snprintf(dst, cap, "%s", s ? s : "") < (int) cap;
}

int lg_agent_net_assign(lg_agent *agent, lg_agent_req *req, const char *id, const char *namespace, const char *policy,
                        lg_agent_cb cb) {
        req->in.assign.attach = false;
        if (!namespace || !*namespace)
                return -EINVAL;
        if (!copy_name(req->in.assign.namespace, sizeof(req->in.assign.namespace), namespace) ||
            !copy_name(req->in.assign.policy, sizeof(req->in.assign.policy), policy))
                return -ENAMETOOLONG;
        return submit(agent, req, LG_AGENT_NET_ASSIGN, id, cb);
}

int lg_agent_destroy(lg_agent *agent, lg_agent_req *req, const char *id, lg_agent_cb cb) {
        bool owned = !req;
        if (owned && !(req = calloc(1, sizeof(*req))))
                return -ENOMEM;
        int r = submit_owned(agent, req, LG_AGENT_DESTROY, id, owned ? NULL : cb, owned);
        if (r < 0 && owned)
                free(req);
        return r;
}

void lg_agent_free(lg_agent *agent) {
        if (agent)
                agent->ops->free(agent);
}

const char *lg_agent_name(const lg_agent *agent) { return agent->ops->name; }

unsigned lg_agent_pending(const lg_agent *agent) { return agent->pending; }

const char *lg_agent_state_dir(lg_agent *agent, const char *id) {
        return agent->ops->state_dir && id ? agent->ops->state_dir(agent, id) : NULL;
}
