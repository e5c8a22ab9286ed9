/* The node agent on a real loop and real sandboxes (root): its requests
 * run off the loop (a destroy that cannot end until the loop acts still
 * ends), one at a time per sandbox in order, and what comes behind a
 * failed create or a destroy is refused; a detached sandbox is adopted by
 * the next agent. Warm pools (warm.h) of real sandboxes made through it:
 * refill, backoff after failed makes with the last error, and a sandbox
 * made for one key never taken for another. The network (net.h, a table,
 * link prefix and CIDR of the test's own): an address and eth0 for a
 * create that asks, its tenant at create or start, released at destroy,
 * taken back at adopt. Skips (77) when not root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "node/agent.h"
#include "node/warm.h"
#include "net-kit.h"
#include "sandbox-cleanup.h"

static char state_root[256];

struct ctx {
        uv_loop_t loop;
        lg_net *net; /* the agent's */
        lg_agent *agent;
        int done;
        int order[16];
        int n_order;
};

/* An agent on the node's network net (NULL: none). */
static void setup_ctx_net(struct ctx *c, lg_net *net) {
        memset(c, 0, sizeof(*c));
        c->net = net;
        assert_int_equal(uv_loop_init(&c->loop), 0);
        struct lg_error err = {0};
        assert_int_equal(lg_agent_local_new(&c->loop, state_root, c->net, &c->agent, &err), 0);
}

static void setup_ctx(struct ctx *c) { setup_ctx_net(c, NULL); }

static void teardown_ctx(struct ctx *c) {
        lg_agent_free(c->agent);
        assert_int_equal(uv_run(&c->loop, UV_RUN_NOWAIT), 0);
        assert_int_equal(uv_loop_close(&c->loop), 0);
}

static void run_until(struct ctx *c, int n) {
        while (c->done < n)
                uv_run(&c->loop, UV_RUN_ONCE);
}

static void note(lg_agent_req *req) {
        struct ctx *c = req->data;
        if (c->n_order < (int) ARRAY_SIZE(c->order)) /* the first ones: what test_order looks at */
                c->order[c->n_order++] = req->op;
        c->done++;
}

static void sleeper_spec(struct lg_sandbox_spec *s, const char *const *argv) {
        lg_sandbox_spec_init(s);
        s->argv = argv;
        s->pids_max = 64; /* a cgroup: destroy has rmdirs to do */
}

/* ---- a destroy does not block the loop --------------------------------------- */

struct slow {
        struct ctx c;
        lg_agent_req destroy;
        uv_timer_t tick;
        pid_t tracee;
        int ticks_while_destroying, tracee_sig;
};

/* The loop must turn while the destroy runs: the destroy cannot end
 * before this reaps the tracee. */
static void on_tick(uv_timer_t *t) {
        struct slow *s = t->data;
        if (s->c.done)
                return;
        s->ticks_while_destroying++;
        if (s->tracee > 0) {
                int st = 0;
                pid_t r;
                while ((r = waitpid(s->tracee, &st, __WALL)) < 0 && errno == EINTR)
                        ;
                if (r == s->tracee && WIFSIGNALED(st))
                        s->tracee_sig = WTERMSIG(st);
                s->tracee = 0;
        }
}

static pid_t first_child(pid_t pid) {
        char path[64], buf[256];
        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int) pid, (int) pid);
        for (int i = 0; i < 2000; i++) {
                FILE *f = fopen(path, "r");
                if (f) {
                        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
                        fclose(f);
                        buf[n] = '\0';
                        if (n > 0)
                                return (pid_t) atoi(buf);
                }
                usleep(1000);
        }
        return -1;
}

static void test_destroy_off_loop(void **state) {
        (void) state;
        struct slow s;
        memset(&s, 0, sizeof(s));
        setup_ctx(&s.c);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, argv);
        lg_agent_req create = {.data = &s.c};
        assert_int_equal(lg_agent_create(s.c.agent, &create, "agent-slow", &spec, LG_AGENT_START_NOW, note), 0);
        run_until(&s.c, 1);
        assert_int_equal(create.result, 0);
        assert_true(create.out.pid > 0 && create.out.pidfd >= 0 && create.out.control_fd >= 0);
        /* The workload, traced from here: when the destroy's SIGKILL ends
         * it, it stays a zombie until its tracer (this test, on the
         * loop) reaps it, and its pid namespace's init, which the destroy
         * waits for, cannot finish dying before that. A destroy that
         * blocked the loop would wait forever (the alarm fails the test). */
        s.tracee = first_child(create.out.pid);
        assert_true(s.tracee > 0);
        assert_int_equal(ptrace(PTRACE_SEIZE, s.tracee, NULL, NULL), 0);
        s.c.done = 0;
        uv_timer_init(&s.c.loop, &s.tick);
        s.tick.data = &s;
        uv_timer_start(&s.tick, on_tick, 1, 1);
        s.destroy.data = &s.c;
        alarm(60);
        assert_int_equal(lg_agent_destroy(s.c.agent, &s.destroy, "agent-slow", note), 0);
        run_until(&s.c, 1);
        alarm(0);
        assert_int_equal(s.destroy.result, 0);
        assert_true(s.ticks_while_destroying >= 1);
        assert_int_equal(s.tracee_sig, SIGKILL);
        assert_null(lg_agent_state_dir(s.c.agent, "agent-slow"));
        uv_close((uv_handle_t *) &s.tick, NULL);
        uv_run(&s.c.loop, UV_RUN_NOWAIT);
        teardown_ctx(&s.c);
}

/* ---- a wave of destroys leaves threads to the rest ---------------------------------- */

#define WAVE 4 /* libuv's default thread pool */

struct wave {
        struct ctx c;
        uv_timer_t tick;
        pid_t tracee[WAVE];
        bool reap;
};

static void on_wave_tick(uv_timer_t *t) {
        struct wave *w = t->data;
        for (int i = 0; w->reap && i < WAVE; i++)
                if (w->tracee[i] > 0 && waitpid(w->tracee[i], NULL, __WALL | WNOHANG) == w->tracee[i])
                        w->tracee[i] = 0;
}

/* WAVE destroys that cannot end until the test reaps their workloads:
 * a create submitted after them must still get a thread and finish. */
static void test_destroy_wave(void **state) {
        (void) state;
        struct wave w;
        memset(&w, 0, sizeof(w));
        setup_ctx(&w.c);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, argv);
        lg_agent_req create[WAVE + 1], destroy[WAVE];
        char id[16];
        for (int i = 0; i < WAVE; i++) {
                create[i] = (lg_agent_req){.data = &w.c};
                snprintf(id, sizeof(id), "wave-%d", i);
                assert_int_equal(lg_agent_create(w.c.agent, &create[i], id, &spec, LG_AGENT_START_NOW, note), 0);
        }
        run_until(&w.c, WAVE);
        for (int i = 0; i < WAVE; i++) {
                assert_int_equal(create[i].result, 0);
                w.tracee[i] = first_child(create[i].out.pid);
                assert_true(w.tracee[i] > 0);
                assert_int_equal(ptrace(PTRACE_SEIZE, w.tracee[i], NULL, NULL), 0);
        }
        uv_timer_init(&w.c.loop, &w.tick);
        w.tick.data = &w;
        uv_timer_start(&w.tick, on_wave_tick, 1, 1);
        w.c.done = 0;
        alarm(60);
        for (int i = 0; i < WAVE; i++) {
                destroy[i] = (lg_agent_req){.data = &w.c};
                assert_int_equal(lg_agent_destroy(w.c.agent, &destroy[i], create[i].id, note), 0);
        }
        create[WAVE] = (lg_agent_req){.data = &w.c};
        assert_int_equal(lg_agent_create(w.c.agent, &create[WAVE], "wave-new", &spec, LG_AGENT_START_NOW, note), 0);
        run_until(&w.c, 1);
        assert_int_equal(w.c.order[0], LG_AGENT_CREATE);
        assert_int_equal(create[WAVE].result, 0);
        /* Now let the destroys end. */
        w.reap = true;
        run_until(&w.c, WAVE + 1);
        alarm(0);
        for (int i = 0; i < WAVE; i++)
                assert_int_equal(destroy[i].result, 0);
        uv_close((uv_handle_t *) &w.tick, NULL);
        uv_run(&w.c.loop, UV_RUN_NOWAIT);
        teardown_ctx(&w.c);
}

/* ---- order, and what is refused --------------------------------------------------- */

static void test_order(void **state) {
        (void) state;
        struct ctx c;
        setup_ctx(&c);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, argv);
        lg_agent_req create = {.data = &c}, sig = {.data = &c}, status = {.data = &c}, destroy = {.data = &c};
        lg_agent_req late = {.data = &c};
        /* All queued at once: each waits for the one before. */
        assert_int_equal(lg_agent_create(c.agent, &create, "agent-order", &spec, LG_AGENT_START_NOW, note), 0);
        assert_int_equal(lg_agent_create(c.agent, &late, "agent-order", &spec, 0, note), -EEXIST);
        assert_int_equal(lg_agent_signal(c.agent, &sig, "agent-order", SIGTERM, note), 0);
        assert_int_equal(lg_agent_status(c.agent, &status, "agent-order", note), 0);
        assert_int_equal(lg_agent_destroy(c.agent, &destroy, "agent-order", note), 0);
        assert_int_equal(lg_agent_signal(c.agent, &late, "agent-order", SIGTERM, note), -ESRCH);
        assert_int_equal(lg_agent_pending(c.agent), 4);
        run_until(&c, 4);
        int want[] = {LG_AGENT_CREATE, LG_AGENT_SIGNAL, LG_AGENT_STATUS, LG_AGENT_DESTROY};
        assert_int_equal(c.n_order, 4);
        assert_memory_equal(c.order, want, sizeof(want));
        assert_int_equal(create.result, 0);
        assert_int_equal(sig.result, 0);
        assert_int_equal(status.result, 0);
        assert_int_equal(destroy.result, 0);
        assert_int_equal(lg_agent_pending(c.agent), 0);
        /* The id is free again. */
        c.done = 0;
        assert_int_equal(lg_agent_create(c.agent, &create, "agent-order", &spec, LG_AGENT_START_NOW, note), 0);
        run_until(&c, 1);
        assert_int_equal(create.result, 0);
        teardown_ctx(&c); /* destroys it */
}

/* A start with a bind (in.start.mount): bound before the workload, in
 * the same request; a bind that fails ends the request before the
 * workload runs (its log never opened). */
static void test_start_with_mount(void **state) {
        (void) state;
        struct ctx c;
        setup_ctx(&c);
        char dir[300], file[400], log[400];
        snprintf(dir, sizeof(dir), "%s-files", state_root);
        snprintf(file, sizeof(file), "%s/hello", dir);
        snprintf(log, sizeof(log), "%s-mount.log", state_root);
        assert_int_equal(lg_mkdir_p(dir, 0755), 0);
        assert_int_equal(lg_write_file_at(AT_FDCWD, file, "from the host\n", true), 0);
        static const char *const points[] = {"/data"};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, NULL);
        spec.mount_points = points;
        spec.n_mount_points = 1;
        const char *argv[] = {"/bin/cat", "/data/hello", NULL};
        struct lg_sandbox_launch l;
        lg_sandbox_launch_init(&l);
        l.argv = argv;
        l.log_file = log;
        for (int bad = 1; bad >= 0; bad--) {
                char id[32];
                snprintf(id, sizeof(id), "agent-mount-%d", bad);
                lg_agent_req create = {.data = &c}, start = {.data = &c}, destroy = {.data = &c};
                start.in.start.mount.src = bad ? "/nonexistent/legion" : dir;
                start.in.start.mount.dst = "/data";
                start.in.start.mount.readonly = true;
                c.done = 0;
                assert_int_equal(lg_agent_create(c.agent, &create, id, &spec, 0, note), 0);
                assert_int_equal(lg_agent_start(c.agent, &start, id, &l, NULL, note), 0);
                run_until(&c, 2);
                assert_int_equal(create.result, 0);
                if (bad) {
                        assert_int_equal(start.result, -ENOENT);
                        assert_int_equal(access(log, F_OK), -1);
                } else {
                        assert_int_equal(start.result, 0);
                        struct pollfd p = {.fd = create.out.pidfd, .events = POLLIN};
                        assert_int_equal(poll(&p, 1, 30000), 1);
                        char out[64] = "";
                        assert_true(lg_read_file_at(AT_FDCWD, log, out, sizeof(out)) > 0);
                        assert_string_equal(out, "from the host");
                }
                c.done = 0;
                assert_int_equal(lg_agent_destroy(c.agent, &destroy, id, note), 0);
                run_until(&c, 1);
        }
        unlink(log);
        lg_rm_rf(dir);
        teardown_ctx(&c);
}

static void test_failed_create(void **state) {
        (void) state;
        struct ctx c;
        setup_ctx(&c);
        const char *argv[] = {"/bin/true", NULL};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, argv);
        spec.cwd = "/does/not/exist";
        lg_agent_req create = {.data = &c}, mount = {.data = &c}, destroy = {.data = &c};
        assert_int_equal(lg_agent_create(c.agent, &create, "agent-fail", &spec, LG_AGENT_START_NOW, note), 0);
        assert_int_equal(lg_agent_mount(c.agent, &mount, "agent-fail", "/usr", "/code", true, note), 0);
        assert_int_equal(lg_agent_destroy(c.agent, &destroy, "agent-fail", note), 0);
        run_until(&c, 3);
        assert_true(create.result < 0);
        assert_true(create.err.msg[0] != '\0');
        assert_int_equal(mount.result, -ESRCH);
        assert_int_equal(destroy.result, -ESRCH);
        /* Nothing of it is left on disk. */
        char path[512];
        struct stat st;
        snprintf(path, sizeof(path), "%s/sandboxes/agent-fail", state_root);
        assert_int_equal(stat(path, &st), -1);
        assert_int_equal(lg_agent_adopt(c.agent, &create, "", note), -EINVAL);
        teardown_ctx(&c);
}

/* Detached by one agent, adopted by the next: as a restarted legiond. */
static void test_detach_adopt(void **state) {
        (void) state;
        struct ctx a, b;
        setup_ctx(&a);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, argv);
        spec.detachable = true;
        lg_agent_req create = {.data = &a}, detach = {.data = &a};
        assert_int_equal(lg_agent_create(a.agent, &create, "agent-adopt", &spec, LG_AGENT_START_NOW, note), 0);
        assert_int_equal(lg_agent_detach(a.agent, &detach, "agent-adopt", note), 0);
        run_until(&a, 2);
        assert_int_equal(create.result, 0);
        assert_int_equal(detach.result, 0);
        pid_t pid = create.out.pid;
        teardown_ctx(&a); /* nothing of it left to destroy */
        assert_int_equal(kill(pid, 0), 0);

        setup_ctx(&b);
        lg_agent_req adopt = {.data = &b}, status = {.data = &b}, destroy = {.data = &b}, missing = {.data = &b};
        assert_int_equal(lg_agent_adopt(b.agent, &adopt, "agent-adopt", note), 0);
        assert_int_equal(lg_agent_status(b.agent, &status, "agent-adopt", note), 0);
        assert_int_equal(lg_agent_destroy(b.agent, &destroy, "agent-adopt", note), 0);
        assert_int_equal(lg_agent_adopt(b.agent, &missing, "agent-none", note), 0);
        run_until(&b, 4);
        assert_int_equal(adopt.result, 0);
        assert_int_equal(adopt.out.pid, pid);
        assert_int_equal(status.result, 0);
        assert_int_equal(status.out.exited, 0);
        assert_int_equal(destroy.result, 0);
        assert_true(missing.result < 0);
        waitpid(pid, NULL, 0); /* made by this process's first agent */
        assert_int_equal(kill(pid, 0), -1);
        teardown_ctx(&b);
}

/* ---- the network ------------------------------------------------------------------ */

/* Tests' own table, link prefix and CIDR (never a real legiond's): a /28,
 * 13 sandbox addresses, so that one not released runs it out. */
#define NET_TABLE "lg_test_agent"
#define NET_PREFIX "lgta"
#define NET_CIDR "10.202.7.0/28"
#define NET_ADDRESSES 13

static lg_net *cur_net; /* up: net_down, or net_teardown when a test failed */

/* The network with namespace "tenant"; fresh: without what a failed run
 * left (the table, links of its sandboxes would hold addresses), else as
 * a restarted legiond finds it. */
static lg_net *net_open(bool fresh) {
        cur_net = test_net_open(NET_CIDR, NET_TABLE, NET_PREFIX, fresh, "tenant");
        return cur_net;
}

static lg_net *net_up(void) { return net_open(true); }

static void net_down(lg_net *net) {
        struct lg_error err = {0};
        cur_net = NULL;
        int r = lg_net_teardown(net, &err);
        lg_net_free(net);
        assert_int_equal(r, 0);
}

/* After each network test, passed or failed: nothing of its network stays. */
static int net_teardown(void **state) {
        (void) state;
        if (cur_net)
                net_down(cur_net);
        return 0;
}

static bool link_exists(const char *ifname) {
        char path[128];
        snprintf(path, sizeof(path), "/sys/class/net/%s", ifname);
        return access(path, F_OK) == 0;
}

/* A destroyed sandbox's host end goes with its network namespace, which
 * the kernel removes shortly after (not in the destroy's time): wait. */
static bool link_gone(const char *ifname) {
        for (int i = 0; i < 1000 && link_exists(ifname); i++)
                usleep(10 * 1000);
        return !link_exists(ifname);
}

/* Whether /proc/<pid>/<file> (seen from the sandbox's namespaces) holds s. */
static bool proc_has(pid_t pid, const char *file, const char *s) {
        char path[128], buf[65536];
        snprintf(path, sizeof(path), "/proc/%d/%s", (int) pid, file);
        FILE *f = fopen(path, "r");
        if (!f)
                return false;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        return strstr(buf, s) != NULL;
}

static unsigned net_used(lg_net *net) {
        struct lg_net_stats st;
        struct lg_error err = {0};
        assert_int_equal(lg_net_stats(net, &st, &err), 0);
        return st.addresses_used;
}

static unsigned net_elements(lg_net *net) {
        struct lg_net_stats st;
        struct lg_error err = {0};
        assert_int_equal(lg_net_stats(net, &st, &err), 0);
        return st.elements;
}

/* An agent without a network says so; with one, a create that asks gets
 * an address, eth0 inside with it, the host end of its veth, and its
 * tenant before its workload runs. */
static void test_net_create(void **state) {
        (void) state;
        struct ctx c;
        setup_ctx(&c);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, argv);
        lg_agent_req create = {.data = &c};
        create.in.create.net.attach = true;
        assert_int_equal(lg_agent_create(c.agent, &create, "net-off", &spec, LG_AGENT_START_NOW, note), 0);
        run_until(&c, 1);
        assert_int_equal(create.result, -EOPNOTSUPP);
        assert_string_equal(create.err.msg, "networking is off on this node");
        teardown_ctx(&c);

        lg_net *net = net_up();
        setup_ctx_net(&c, net);
        unsigned elements = net_elements(net);
        create = (lg_agent_req){.data = &c};
        create.in.create.net.attach = true;
        snprintf(create.in.create.net.namespace, sizeof(create.in.create.net.namespace), "tenant");
        assert_int_equal(lg_agent_create(c.agent, &create, "net-on", &spec, LG_AGENT_START_NOW, note), 0);
        run_until(&c, 1);
        if (create.result < 0)
                fprintf(stderr, "create: %s\n", create.err.msg);
        assert_int_equal(create.result, 0);
        assert_true(!strncmp(create.out.net.ip, "10.202.7.", 9));
        assert_true(!strncmp(create.out.net.host_if, NET_PREFIX, strlen(NET_PREFIX)));
        assert_true(link_exists(create.out.net.host_if));
        assert_true(proc_has(create.out.pid, "net/dev", "eth0:"));
        assert_true(proc_has(create.out.pid, "net/fib_trie", create.out.net.ip));
        assert_int_equal(net_used(net), 1);
        assert_true(net_elements(net) > elements); /* assigned: its tenant's elements */

        /* A namespace that does not exist: nothing of the sandbox or its
         * address is left. */
        lg_agent_req bad = {.data = &c};
        bad.in.create.net.attach = true;
        snprintf(bad.in.create.net.namespace, sizeof(bad.in.create.net.namespace), "nobody");
        c.done = 0;
        assert_int_equal(lg_agent_create(c.agent, &bad, "net-bad", &spec, LG_AGENT_START_NOW, note), 0);
        run_until(&c, 1);
        assert_int_equal(bad.result, -ENOENT);
        assert_string_equal(bad.out.net.ip, "");
        assert_int_equal(net_used(net), 1);
        /* Sharing the host's network: no address of its own. */
        spec.share_net = true;
        bad = (lg_agent_req){.data = &c};
        bad.in.create.net.attach = true;
        c.done = 0;
        assert_int_equal(lg_agent_create(c.agent, &bad, "net-host", &spec, LG_AGENT_START_NOW, note), 0);
        run_until(&c, 1);
        assert_int_equal(bad.result, -EINVAL);
        assert_int_equal(net_used(net), 1);
        teardown_ctx(&c); /* destroys net-on, releasing its address */
        assert_true(link_gone(create.out.net.host_if));
        assert_int_equal(net_used(net), 0);
        assert_int_equal(net_elements(net), elements);
        net_down(net);
}

/* A warm sandbox gets its address while it waits and its tenant with
 * its start; destroy gives the address back and removes the host end:
 * more sandboxes than the CIDR holds, one after another, all get one. */
static void test_net_start_destroy(void **state) {
        (void) state;
        lg_net *net = net_up();
        struct ctx c;
        setup_ctx_net(&c, net);
        unsigned elements = net_elements(net);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, argv);
        lg_agent_req create = {.data = &c}, start = {.data = &c}, destroy = {.data = &c};
        create.in.create.net.attach = true;
        assert_int_equal(lg_agent_create(c.agent, &create, "net-warm", &spec, LG_AGENT_LOW_PRIO, note), 0);
        run_until(&c, 1);
        assert_int_equal(create.result, 0);
        assert_true(create.out.net.ip[0] != '\0');
        assert_true(proc_has(create.out.pid, "net/fib_trie", create.out.net.ip));
        assert_int_equal(net_elements(net), elements); /* no tenant yet */
        snprintf(start.in.start.net.namespace, sizeof(start.in.start.net.namespace), "tenant");
        c.done = 0;
        assert_int_equal(lg_agent_start(c.agent, &start, "net-warm", NULL, NULL, note), 0);
        run_until(&c, 1);
        assert_int_equal(start.result, 0);
        assert_true(net_elements(net) > elements);
        c.done = 0;
        assert_int_equal(lg_agent_destroy(c.agent, &destroy, "net-warm", note), 0);
        run_until(&c, 1);
        assert_int_equal(destroy.result, 0);
        assert_true(link_gone(create.out.net.host_if));
        assert_int_equal(net_used(net), 0);
        assert_int_equal(net_elements(net), elements);

        char first[LG_NET_IP_MAX];
        memcpy(first, create.out.net.ip, sizeof(first));
        bool reused = false;
        for (int i = 0; i < NET_ADDRESSES + 2; i++) {
                create = (lg_agent_req){.data = &c};
                destroy = (lg_agent_req){.data = &c};
                create.in.create.net.attach = true;
                c.done = 0;
                assert_int_equal(lg_agent_create(c.agent, &create, "net-cycle", &spec, LG_AGENT_START_NOW, note), 0);
                assert_int_equal(lg_agent_destroy(c.agent, &destroy, "net-cycle", note), 0);
                run_until(&c, 2);
                if (create.result < 0)
                        fprintf(stderr, "cycle %d: %s\n", i, create.err.msg);
                assert_int_equal(create.result, 0);
                assert_int_equal(destroy.result, 0);
                assert_true(link_gone(create.out.net.host_if));
                reused |= !strcmp(create.out.net.ip, first);
        }
        assert_true(reused);
        assert_int_equal(net_used(net), 0);

        /* A start for a sandbox without an address cannot assign it. */
        create = (lg_agent_req){.data = &c};
        start = (lg_agent_req){.data = &c};
        snprintf(start.in.start.net.namespace, sizeof(start.in.start.net.namespace), "tenant");
        c.done = 0;
        assert_int_equal(lg_agent_create(c.agent, &create, "net-none", &spec, 0, note), 0);
        assert_int_equal(lg_agent_start(c.agent, &start, "net-none", NULL, NULL, note), 0);
        run_until(&c, 2);
        assert_int_equal(create.result, 0);
        assert_int_equal(start.result, -ENOENT);
        teardown_ctx(&c);
        net_down(net);
}

/* After a restart (a new lg_net finds the live sandboxes' routes, a new
 * agent adopts them): the sandbox that made its network namespace gets
 * its address back, the sweep leaves it alone, an assign works; a pod's
 * container that joined that namespace takes nothing. */
static void test_net_adopt(void **state) {
        (void) state;
        lg_net *net = net_up();
        struct ctx a, b;
        setup_ctx_net(&a, net);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec spec, joined;
        sleeper_spec(&spec, argv);
        spec.detachable = true;
        lg_agent_req create = {.data = &a}, create2 = {.data = &a}, detach = {.data = &a}, detach2 = {.data = &a};
        create.in.create.net.attach = true;
        snprintf(create.in.create.net.namespace, sizeof(create.in.create.net.namespace), "tenant");
        assert_int_equal(lg_agent_create(a.agent, &create, "net-adopt", &spec, LG_AGENT_START_NOW | LG_AGENT_OPEN_NS,
                                         note),
                         0);
        run_until(&a, 1);
        assert_int_equal(create.result, 0);
        joined = spec;
        joined.join_netns_fd = create.out.netns_fd;
        a.done = 0;
        assert_int_equal(lg_agent_create(a.agent, &create2, "net-joined", &joined, LG_AGENT_START_NOW, note), 0);
        run_until(&a, 1);
        assert_int_equal(create2.result, 0);
        close(create.out.netns_fd);
        close(create.out.ipcns_fd);
        assert_string_equal(create2.out.net.ip, "");
        a.done = 0;
        assert_int_equal(lg_agent_detach(a.agent, &detach, "net-adopt", note), 0);
        assert_int_equal(lg_agent_detach(a.agent, &detach2, "net-joined", note), 0);
        run_until(&a, 2);
        assert_int_equal(detach.result, 0);
        assert_int_equal(detach2.result, 0);
        teardown_ctx(&a);
        assert_true(link_exists(create.out.net.host_if)); /* detached: kept */
        lg_net_free(net);
        cur_net = NULL;

        net = net_open(false);
        setup_ctx_net(&b, net);
        lg_agent_req adopt = {.data = &b}, adopt2 = {.data = &b}, assign = {.data = &b}, destroy = {.data = &b};
        lg_agent_req destroy2 = {.data = &b};
        assert_int_equal(lg_agent_adopt(b.agent, &adopt, "net-adopt", note), 0);
        assert_int_equal(lg_agent_adopt(b.agent, &adopt2, "net-joined", note), 0);
        run_until(&b, 2);
        assert_int_equal(adopt.result, 0);
        assert_int_equal(adopt2.result, 0);
        assert_string_equal(adopt.out.net.ip, create.out.net.ip);
        assert_string_equal(adopt.out.net.host_if, create.out.net.host_if);
        assert_string_equal(adopt2.out.net.ip, "");
        struct lg_error err = {0};
        assert_int_equal(lg_net_sweep(net, &err), 0);
        assert_true(link_exists(create.out.net.host_if));
        assert_int_equal(net_used(net), 1);
        unsigned elements = net_elements(net);
        b.done = 0;
        assert_int_equal(lg_agent_net_assign(b.agent, &assign, "net-adopt", "tenant", NULL, note), 0);
        run_until(&b, 1);
        assert_int_equal(assign.result, 0);
        assert_true(net_elements(net) > elements);
        /* The container first, as a pod goes: the namespace lives on. */
        b.done = 0;
        assert_int_equal(lg_agent_destroy(b.agent, &destroy2, "net-joined", note), 0);
        assert_int_equal(lg_agent_destroy(b.agent, &destroy, "net-adopt", note), 0);
        run_until(&b, 2);
        assert_int_equal(destroy.result, 0);
        assert_int_equal(destroy2.result, 0);
        assert_true(link_gone(create.out.net.host_if));
        assert_int_equal(net_used(net), 0);
        waitpid(create.out.pid, NULL, 0); /* made by this process's first agent */
        waitpid(create2.out.pid, NULL, 0);
        teardown_ctx(&b);
        net_down(net);
}

/* ---- warm pools ------------------------------------------------------------------ */

struct wctx {
        struct ctx c;
        lg_warm *warm;
        const struct lg_sandbox_spec *spec[2]; /* per pool */
        unsigned makes, discards;
};

struct pool_data {
        struct wctx *w;
        int key;
};

struct witem {
        lg_warm_item wi;     /* first: the pool gives it back */
        lg_agent_req req;
        struct wctx *w;
        int key;             /* which pool made it */
};

static void made(lg_agent_req *req) {
        struct witem *it = req->data;
        if (req->result < 0) {
                lg_warm_failed(&it->wi, req->err.msg);
                free(it);
                return;
        }
        if (it->wi.pool)
                lg_warm_ready(&it->wi);
        else /* discarded while being made */
                lg_agent_destroy(it->w->c.agent, NULL, it->req.id, NULL), free(it);
}

static int w_make(lg_warm_pool *p, void *data, struct lg_error *err) {
        struct pool_data *d = data;
        struct wctx *w = d->w;
        int key = d->key;
        struct witem *it = calloc(1, sizeof(*it));
        if (!it)
                return lg_error_set(err, ENOMEM, "out of memory");
        it->w = w;
        it->key = key;
        it->req.data = it;
        int r = lg_agent_create(w->c.agent, &it->req, NULL, w->spec[key], LG_AGENT_START_NOW | LG_AGENT_LOW_PRIO,
                                made);
        if (r < 0) {
                free(it);
                return lg_error_set(err, -r, "create");
        }
        w->makes++;
        lg_warm_add(p, &it->wi);
        return 0;
}

static void w_discard(lg_warm_item *item, void *data) {
        struct wctx *w = ((struct pool_data *) data)->w;
        struct witem *it = (struct witem *) item;
        w->discards++;
        if (it->req.result == 0 && it->req.out.pid > 0) { /* made: else made() sees it has no pool */
                lg_agent_destroy(w->c.agent, NULL, it->req.id, NULL);
                free(it);
        }
}

static const struct lg_warm_ops w_ops = {.make = w_make, .discard = w_discard};

static void run_until_ready(struct wctx *w, lg_warm_pool *p, unsigned n) {
        struct lg_warm_stats st;
        for (;;) {
                lg_warm_pool_stats(p, &st);
                if (st.ready >= n)
                        return;
                uv_run(&w->c.loop, UV_RUN_ONCE);
        }
}

static void w_setup(struct wctx *w) {
        memset(w, 0, sizeof(*w));
        setup_ctx(&w->c);
        struct lg_error err = {0};
        assert_int_equal(lg_warm_new(&w->c.loop, &w->warm, &err), 0);
}

static void w_teardown(struct wctx *w) {
        lg_warm_free(w->warm);
        uv_run(&w->c.loop, UV_RUN_NOWAIT);
        teardown_ctx(&w->c);
}

static void test_warm_keyed_refill(void **state) {
        (void) state;
        struct wctx w;
        w_setup(&w);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, argv);
        w.spec[0] = w.spec[1] = &spec; /* the same shape, two keys: still never mixed */
        struct pool_data da = {&w, 0}, db = {&w, 1};
        lg_warm_pool *a, *b;
        struct lg_error err = {0};
        struct lg_warm_pool_config ca = {.key = "worker:sleep cpu=0 mem=0 a", .target = 2, .ops = &w_ops, .data = &da};
        struct lg_warm_pool_config cb = {.key = "worker:sleep cpu=0 mem=0 b", .target = 1, .ops = &w_ops, .data = &db};
        assert_int_equal(lg_warm_pool_set(w.warm, &ca, &a, &err), 0);
        assert_int_equal(lg_warm_pool_set(w.warm, &cb, &b, &err), 0);
        assert_ptr_equal(lg_warm_pool_find(w.warm, ca.key), a);
        run_until_ready(&w, a, 2);
        run_until_ready(&w, b, 1);
        /* Keyed: a's two, then none, although b has one ready. */
        struct witem *t1 = (struct witem *) lg_warm_take(a);
        struct witem *t2 = (struct witem *) lg_warm_take(a);
        assert_non_null(t1);
        assert_non_null(t2);
        assert_int_equal(t1->key, 0);
        assert_int_equal(t2->key, 0);
        /* A take alone makes no replacement: that waits for the taker's
         * start (lg_warm_used), so as not to compete with it. */
        for (int i = 0; i < 3; i++)
                uv_run(&w.c.loop, UV_RUN_NOWAIT);
        struct lg_warm_stats before_miss;
        lg_warm_pool_stats(a, &before_miss);
        assert_int_equal(before_miss.made, 2);
        assert_null(lg_warm_take(a));
        struct lg_warm_stats st;
        lg_warm_pool_stats(a, &st);
        assert_int_equal(st.taken, 2);
        assert_int_equal(st.missed, 1);
        lg_warm_pool_stats(b, &st);
        assert_int_equal(st.ready, 1);
        assert_int_equal(st.taken, 0);
        /* Refilled once used (the miss also asked for one). */
        lg_warm_used(a);
        run_until_ready(&w, a, 2);
        lg_warm_pool_stats(a, &st);
        assert_int_equal(st.made, 4);
        assert_int_equal(st.failures, 0);
        /* A lower target gives up the extra one. */
        ca.target = 1;
        assert_int_equal(lg_warm_pool_set(w.warm, &ca, NULL, &err), 0);
        lg_warm_pool_stats(a, &st);
        assert_int_equal(st.ready, 1);
        assert_int_equal(w.discards, 1);
        lg_agent_destroy(w.c.agent, NULL, t1->req.id, NULL);
        lg_agent_destroy(w.c.agent, NULL, t2->req.id, NULL);
        free(t1);
        free(t2);
        w_teardown(&w);
}

/* A target lowered while sandboxes are still being made: those made after
 * it are given up too, not kept beyond the target (a pool group set to
 * `ready: 0` right after legiond started kept its placeholders). */
static void test_warm_target_lowered_while_making(void **state) {
        (void) state;
        struct wctx w;
        w_setup(&w);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec spec;
        sleeper_spec(&spec, argv);
        w.spec[0] = &spec;
        struct pool_data d = {&w, 0};
        lg_warm_pool *p;
        struct lg_error err = {0};
        struct lg_warm_pool_config c = {.key = "worker:sleep lowered", .target = 2, .ops = &w_ops, .data = &d};
        assert_int_equal(lg_warm_pool_set(w.warm, &c, &p, &err), 0);
        struct lg_warm_stats st;
        do {
                uv_run(&w.c.loop, UV_RUN_ONCE);
                lg_warm_pool_stats(p, &st);
        } while (st.made < 2);
        assert_true(st.starting > 0);
        c.target = 0;
        assert_int_equal(lg_warm_pool_set(w.warm, &c, NULL, &err), 0);
        do {
                uv_run(&w.c.loop, UV_RUN_ONCE);
                lg_warm_pool_stats(p, &st);
        } while (st.starting > 0);
        uv_run(&w.c.loop, UV_RUN_NOWAIT);
        lg_warm_pool_stats(p, &st);
        assert_int_equal(st.ready, 0);
        assert_int_equal(w.discards, 2);
        w_teardown(&w);
}

static void test_warm_backoff(void **state) {
        (void) state;
        struct wctx w;
        w_setup(&w);
        const char *argv[] = {"/bin/sleep", "1000", NULL};
        struct lg_sandbox_spec bad, good;
        sleeper_spec(&bad, argv);
        bad.cwd = "/does/not/exist";
        sleeper_spec(&good, argv);
        w.spec[0] = &bad;
        struct pool_data d = {&w, 0};
        lg_warm_pool *p;
        struct lg_error err = {0};
        struct lg_warm_pool_config c = {.key = "worker:broken", .target = 1, .ops = &w_ops, .data = &d};
        assert_int_equal(lg_warm_pool_set(w.warm, &c, &p, &err), 0);
        /* Fails, and is tried again (after a backoff) with the reason kept. */
        struct lg_warm_stats st;
        do {
                uv_run(&w.c.loop, UV_RUN_ONCE);
                lg_warm_pool_stats(p, &st);
        } while (st.failures < 2);
        assert_int_equal(st.ready, 0);
        assert_non_null(strstr(st.last_error, "/does/not/exist"));
        assert_true(w.makes >= 2);
        /* Once, then only when used again. */
        c.retry = LG_WARM_RETRY_WHEN_USED;
        assert_int_equal(lg_warm_pool_set(w.warm, &c, NULL, &err), 0);
        do {
                uv_run(&w.c.loop, UV_RUN_ONCE);
                lg_warm_pool_stats(p, &st);
        } while (st.failures < 3);
        unsigned makes = w.makes;
        /* Nothing armed: the loop has nothing left to do. */
        assert_int_equal(uv_run(&w.c.loop, UV_RUN_DEFAULT), 0);
        assert_int_equal(w.makes, makes);
        /* The shape fixed, a use: made, and the error is gone. */
        w.spec[0] = &good;
        lg_warm_used(p);
        run_until_ready(&w, p, 1);
        lg_warm_pool_stats(p, &st);
        assert_int_equal(st.failures, 0);
        assert_string_equal(st.last_error, "");
        w_teardown(&w);
}

int main(void) {
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: node agent tests need root (namespaces, cgroups, mounts)\n");
                return 77;
        }
        snprintf(state_root, sizeof(state_root), "/tmp/lg-test-agent-%d", (int) getpid());
        char parent[64];
        snprintf(parent, sizeof(parent), "legion-test-%d", (int) getpid());
        setenv("LEGION_CGROUP_PARENT", parent, 0);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_destroy_off_loop),
                cmocka_unit_test(test_destroy_wave),
                cmocka_unit_test(test_order),
                cmocka_unit_test(test_start_with_mount),
                cmocka_unit_test(test_failed_create),
                cmocka_unit_test(test_detach_adopt),
                cmocka_unit_test_teardown(test_net_create, net_teardown),
                cmocka_unit_test_teardown(test_net_start_destroy, net_teardown),
                cmocka_unit_test_teardown(test_net_adopt, net_teardown),
                cmocka_unit_test(test_warm_keyed_refill),
                cmocka_unit_test(test_warm_target_lowered_while_making),
                cmocka_unit_test(test_warm_backoff),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        sandbox_cleanup(state_root, NULL, parent);
        return r;
}
