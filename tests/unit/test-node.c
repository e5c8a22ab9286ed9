/* The node (node.h) over a fake agent backend (agent-backend.h) that
 * holds its requests until the test completes them: what a request
 * points to must stay valid until its callback, whatever the node is
 * told meanwhile. No sandboxes, no root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "node/agent-backend.h"
#include "node/node.h"
#include "test-ok.h"

struct fake {
        struct lg_agent head; /* first: the agent's common part */
        uv_idle_t idle;       /* completes what is not held */
        bool hold_creates;
        lg_agent_req *reqs[64];
        size_t n;
        char seen_env[4096]; /* the environments creates read, one after another */
};

/* Creates fail (after reading their spec, as the local backend does on
 * its thread), the rest succeed. */
static void complete(struct fake *f, lg_agent_req *req) {
        if (req->op == LG_AGENT_CREATE) {
                const struct lg_sandbox_spec *s = req->in.create.spec;
                for (size_t i = 0; s->envp && s->envp[i]; i++)
                        snprintf(f->seen_env + strlen(f->seen_env), sizeof(f->seen_env) - strlen(f->seen_env), "%s;",
                                 s->envp[i]);
                snprintf(f->seen_env + strlen(f->seen_env), sizeof(f->seen_env) - strlen(f->seen_env), "|");
                req->result = -EIO;
                snprintf(req->err.msg, sizeof(req->err.msg), "fake create");
        } else {
                req->result = 0;
        }
        lg_agent_complete(req);
}

static void on_idle(uv_idle_t *h) {
        struct fake *f = h->data;
        size_t kept = 0;
        lg_agent_req *now[64];
        size_t n = 0;
        for (size_t i = 0; i < f->n; i++)
                if (f->hold_creates && f->reqs[i]->op == LG_AGENT_CREATE)
                        f->reqs[kept++] = f->reqs[i];
                else
                        now[n++] = f->reqs[i];
        f->n = kept;
        for (size_t i = 0; i < n; i++)
                complete(f, now[i]);
}

static int fake_submit(lg_agent *agent, lg_agent_req *req) {
        struct fake *f = (struct fake *) agent;
        assert_true(f->n < 64);
        f->reqs[f->n++] = req;
        return 0;
}

static void fake_free(lg_agent *agent) { (void) agent; }

static const struct lg_agent_ops fake_ops = {.name = "fake", .submit = fake_submit, .free = fake_free};

static size_t held_creates(const struct fake *f) {
        size_t n = 0;
        for (size_t i = 0; i < f->n; i++)
                n += f->reqs[i]->op == LG_AGENT_CREATE;
        return n;
}

/* A pool group changed while one of its placeholders is being created:
 * the create still reads the environment it was made with (the pool's
 * own copy is replaced at once). */
static void test_pool_set_during_create(void **state) {
        (void) state;
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct fake f = {.head = {.ops = &fake_ops, .loop = &loop}, .hold_creates = true};
        uv_idle_init(&loop, &f.idle);
        f.idle.data = &f;
        uv_idle_start(&f.idle, on_idle);
        char tmp[64];
        snprintf(tmp, sizeof(tmp), "/tmp/lg-test-node-%d", (int) getpid());
        struct lg_node_config cfg = {.loop = &loop, .agent = &f.head, .run_dir = tmp, .runtimes_dir = tmp};
        struct lg_error err = {0};
        lg_node *node;
        OK(lg_node_new(&cfg, &node, &err));
        const char *const env_a[] = {"WHICH=a", NULL};
        struct lg_pool_spec ps = {.name = "g", .runtime = "python3", .ready = 1, .env = env_a};
        OK(lg_node_pool_set(node, &ps, &err));
        while (held_creates(&f) == 0)
                uv_run(&loop, UV_RUN_ONCE); /* the warm pool makes one */
        const char *const env_b[] = {"WHICH=b", NULL};
        ps.env = env_b;
        OK(lg_node_pool_set(node, &ps, &err));
        /* Allocations that may reuse what the old copy held. */
        char *fill[8];
        for (size_t i = 0; i < 8; i++)
                fill[i] = strdup("XXXXXXXXXXXXXXXXXXXXXXXX");
        f.seen_env[0] = '\0';
        f.hold_creates = false;
        uv_run(&loop, UV_RUN_NOWAIT);
        /* The held one read its own environment (and the new pool's
         * first placeholder, if made yet, the new one). */
        assert_true(!strncmp(f.seen_env, "PATH=", 5));
        assert_non_null(strstr(f.seen_env, "WHICH=a;|"));
        for (size_t i = 0; i < 8; i++)
                free(fill[i]);
        lg_node_free(node);
        uv_close((uv_handle_t *) &f.idle, NULL);
        uv_run(&loop, UV_RUN_NOWAIT);
        assert_int_equal(f.n, 0);
        assert_int_equal(uv_loop_close(&loop), 0);
        lg_rm_rf(tmp);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pool_set_during_create),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
