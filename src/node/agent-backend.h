/* What the front of the node agent (agent.c) shares with its backends
 * (agent-local.c; later a remote one): the handle's common head, and
 * the one way a backend finishes a request. Loop thread only. */
#pragma once

#include "node/agent.h"

struct lg_agent {
        const struct lg_agent_ops *ops;
        uv_loop_t *loop;
        unsigned pending; /* submitted, not yet called back */
};

/* req is over (result and err set): count it, free what the front
 * copied, run its callback (or free it, when the agent owns it). */
void lg_agent_complete(lg_agent_req *req);
