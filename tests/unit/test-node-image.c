/* Image instances of the node (node.h, node-image.c) against real
 * sandboxes, a network of the test's own (table lg_test_nodeimg, links
 * lgni*, 10.202.12.0/28) and an image store holding a busybox image made
 * by tests/e2e/oci_kit.py: an instance becoming ready (TCP and HTTP
 * readiness) and serving at "ip:port"; the failure statuses (port never
 * opened, readiness answered 404, exited before ready with its last
 * stderr line, image missing, no network); an exit later (exit_cb);
 * warm sandboxes of both placeholder modes; surviving a restart with its
 * address. Root and busybox-static. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image/image.h"
#include "net/net.h"
#include "node/node.h"
#include "sandbox-cleanup.h"
#include "test-ok.h"

#define NET_TABLE "lg_test_nodeimg"
#define NET_PREFIX "lgni"
#define NET_CIDR "10.202.12.0/28"
#define IMAGE "test/nodeimg:1"

static char tmp[256];
static uv_loop_t loop;
static lg_image_store *images;
static lg_net *net;
static lg_node *node;

/* ---- fixtures ---------------------------------------------------------------- */

static void node_up(lg_net *n, uint64_t ready_timeout_ms) {
        char run[300], runtimes[300];
        snprintf(run, sizeof(run), "%s/run", tmp);
        snprintf(runtimes, sizeof(runtimes), "%s/runtimes", tmp);
        struct lg_node_config cfg = {.loop = &loop, .net = n, .run_dir = run, .runtimes_dir = runtimes,
                                     .images = images, .ready_timeout_ms = ready_timeout_ms};
        struct lg_error err = {0};
        OK(lg_node_new(&cfg, &node, &err));
}

static void node_down(void) {
        lg_node_free(node);
        node = NULL;
}

static int setup(void **state) {
        (void) state;
        snprintf(tmp, sizeof(tmp), "/tmp/lg-test-nodeimg-%d", (int) getpid());
        lg_rm_rf(tmp);
        assert_int_equal(lg_mkdir_p(tmp, 0755), 0);
        char path[600], cmd[2000];
        snprintf(path, sizeof(path), "%s/runtimes", tmp);
        assert_int_equal(lg_mkdir_p(path, 0755), 0);
        /* The image: busybox with a document root (/www/ok). */
        const char *src = getenv("LG_SOURCE_ROOT");
        assert_non_null(src);
        snprintf(cmd, sizeof(cmd),
                 "PYTHONPATH=%s/tests/e2e /usr/bin/python3 -c 'import oci_kit as k; "
                 "l = k.busybox_layer([(\"www\", \"dir\"), (\"www/ok\", \"file\", b\"fine\\n\")]); "
                 "img = k.Image([l], config={\"Env\": [\"PATH=/bin\"], \"Cmd\": [\"sh\"]}); "
                 "k.write_oci_archive(\"%s/img.tar\", img, \"" IMAGE "\")'",
                 src, tmp);
        assert_int_equal(system(cmd), 0);
        struct lg_error err = {0};
        snprintf(path, sizeof(path), "%s/images", tmp);
        OK(lg_image_store_open(path, &images, &err));
        struct lg_image *img = NULL;
        snprintf(path, sizeof(path), "%s/img.tar", tmp);
        OK(lg_image_import(images, path, IMAGE, NULL, NULL, &img, &err));
        lg_image_free(img);
        /* The network, fresh (without what a failed run left). */
        struct lg_net_config nc = {.cidr = NET_CIDR, .table = NET_TABLE, .link_prefix = NET_PREFIX};
        if (lg_net_new(&nc, &net, &err) >= 0)
                lg_net_teardown(net, &err);
        lg_net_free(net);
        OK(lg_net_new(&nc, &net, &err));
        struct lg_net_namespace ns = {0};
        struct lg_net_policy on = {.egress = LG_NET_EGRESS_ON};
        OK(lg_net_namespace_set(net, "default", &ns, &on, &err));
        uv_loop_init(&loop);
        node_up(net, 3000);
        return 0;
}

static int teardown(void **state) {
        (void) state;
        node_down();
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_loop_close(&loop);
        struct lg_error err = {0};
        if (net && lg_net_teardown(net, &err) < 0)
                fprintf(stderr, "net teardown: %s\n", err.msg);
        lg_net_free(net);
        lg_image_store_close(images);
        return 0;
}

/* ---- helpers ------------------------------------------------------------------- */

struct waiter {
        bool ready_called, exited;
        int status;
        char message[1024], exit_status[128];
};

static void on_ready(lg_instance *inst, int status, const char *message, void *ud) {
        (void) inst;
        struct waiter *w = ud;
        assert_false(w->ready_called); /* exactly once */
        w->ready_called = true;
        w->status = status;
        snprintf(w->message, sizeof(w->message), "%s", message ? message : "");
}

static void on_exit_cb(lg_instance *inst, const char *status, void *ud) {
        (void) inst;
        struct waiter *w = ud;
        w->exited = true;
        snprintf(w->exit_status, sizeof(w->exit_status), "%s", status);
}

static lg_instance *start(const char *pool, const char *image, const char *const *command, unsigned port,
                          const char *ready_path, struct waiter *w) {
        struct lg_instance_spec spec = {.pool = pool, .app = "default/web", .revision = 1, .image = image,
                                        .command = command, .port = port, .ready_path = ready_path};
        struct lg_error err = {0};
        lg_instance *inst = NULL;
        *w = (struct waiter){0};
        OK(lg_node_instance_start(node, &spec, on_ready, on_exit_cb, w, &inst, &err));
        assert_false(w->ready_called); /* never from inside the call */
        while (!w->ready_called)
                uv_run(&loop, UV_RUN_ONCE);
        return inst;
}

/* GET path from "ip:port" on this host: the body's first line. */
static void http_get(const char *addr, const char *path, char *buf, size_t cap) {
        char ip[64];
        unsigned port;
        assert_int_equal(sscanf(addr, "%63[0-9.]:%u", ip, &port), 2);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
        inet_pton(AF_INET, ip, &sa.sin_addr);
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        char req[256];
        int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
        assert_int_equal(write(fd, req, (size_t) n), n);
        char resp[4096];
        size_t len = 0;
        ssize_t k;
        while (len < sizeof(resp) - 1 && (k = read(fd, resp + len, sizeof(resp) - 1 - len)) > 0)
                len += (size_t) k;
        close(fd);
        resp[len] = '\0';
        const char *body = strstr(resp, "\r\n\r\n");
        snprintf(buf, cap, "%.*s", body ? (int) strcspn(body + 4, "\n") : 0, body ? body + 4 : "");
}

static const char *const httpd[] = {"httpd", "-f", "-p", "8080", "-h", "/www", NULL};

static void destroy(lg_instance *inst) {
        lg_instance_destroy(inst);
        for (int i = 0; i < 5; i++)
                uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- tests --------------------------------------------------------------------- */

static void test_ready(void **state) {
        (void) state;
        struct waiter w;
        /* TCP readiness, no pool (on demand). */
        lg_instance *inst = start(NULL, IMAGE, httpd, 8080, NULL, &w);
        assert_int_equal(w.status, 0);
        const char *addr = lg_instance_http_address(inst);
        char want[64], body[128];
        snprintf(want, sizeof(want), "%s:8080", lg_instance_address(inst));
        assert_string_equal(addr, want);
        assert_true(lg_instance_cold(inst));
        http_get(addr, "/ok", body, sizeof(body));
        assert_string_equal(body, "fine");
        /* Its logs where the apps API reads them. */
        char path[600];
        snprintf(path, sizeof(path), "%s/stderr.log", lg_instance_log_dir(inst));
        assert_int_equal(access(path, F_OK), 0);
        snprintf(path, sizeof(path), "%s/stdout.log", lg_instance_log_dir(inst));
        assert_int_equal(access(path, F_OK), 0);
        destroy(inst);
        /* HTTP readiness. */
        inst = start("", IMAGE, httpd, 8080, "/ok", &w);
        assert_int_equal(w.status, 0);
        destroy(inst);
}

static void test_failures(void **state) {
        (void) state;
        struct waiter w;
        /* The port never opens. */
        static const char *const sleeper[] = {"sleep", "1000", NULL};
        lg_instance *inst = start(NULL, IMAGE, sleeper, 8080, NULL, &w);
        (void) inst;
        assert_int_equal(w.status, -ETIMEDOUT);
        assert_string_equal(w.message, "port 8080 never opened within 3 s");
        /* The readiness check fails. */
        start(NULL, IMAGE, httpd, 8080, "/healthz", &w);
        assert_int_equal(w.status, -EPROTO);
        assert_string_equal(w.message, "GET /healthz answered 404 within 3 s");
        /* It exits first: its code and last stderr line. */
        static const char *const crash[] = {"sh", "-c", "echo starting; echo first >&2; echo 'no config!' >&2; exit 3",
                                            NULL};
        start(NULL, IMAGE, crash, 8080, NULL, &w);
        assert_int_equal(w.status, -ECHILD);
        assert_string_equal(w.message, "exited with code 3 before port 8080 opened: no config!");
        /* The image is not in the store. */
        start(NULL, "test/missing:1", httpd, 8080, NULL, &w);
        assert_int_equal(w.status, -ENOENT);
        assert_non_null(strstr(w.message, "test/missing:1"));
        /* No port. */
        start(NULL, IMAGE, httpd, 0, NULL, &w);
        assert_int_equal(w.status, -EINVAL);
        /* No pool and no image: refused at once. */
        struct lg_instance_spec spec = {.app = "default/web", .revision = 1, .port = 8080};
        struct lg_error err = {0};
        assert_int_equal(lg_node_instance_start(node, &spec, on_ready, on_exit_cb, &w, &inst, &err), -ENOENT);
}

/* Serving, then exiting on its own: exit_cb says how. The server takes
 * one connection (the probe's) and exits 7 when it closes. */
static void test_exit_later(void **state) {
        (void) state;
        struct waiter w;
        static const char *const once[] = {"sh", "-c", "nc -l -p 8080 </dev/null >/dev/null; echo bye >&2; exit 7",
                                           NULL};
        lg_instance *inst = start(NULL, IMAGE, once, 8080, NULL, &w);
        assert_int_equal(w.status, 0);
        while (!w.exited)
                uv_run(&loop, UV_RUN_ONCE);
        assert_string_equal(w.exit_status, "Exited(7): bye");
        destroy(inst);
}

static void wait_pool_ready(const char *name, unsigned n) {
        struct lg_pool_stats st;
        for (;;) {
                assert_int_equal(lg_node_pool_stats(node, name, &st), 0);
                if (st.ready >= n)
                        return;
                if (st.failures)
                        fail_msg("pool %s: %s", name, st.last_error);
                uv_run(&loop, UV_RUN_ONCE);
        }
}

static void test_pools(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct waiter w;
        /* Warm sandboxes with no process: the app's command at take. */
        struct lg_pool_spec ps = {.name = "img", .runtime = "image", .ready = 1, .image = IMAGE,
                                  .memory_bytes = 64ull << 20};
        OK(lg_node_pool_set(node, &ps, &err));
        wait_pool_ready("img", 1);
        lg_instance *inst = start("img", NULL, httpd, 8080, "/ok", &w);
        assert_int_equal(w.status, 0);
        assert_false(lg_instance_cold(inst));
        char body[64];
        http_get(lg_instance_http_address(inst), "/ok", body, sizeof(body));
        assert_string_equal(body, "fine");
        destroy(inst);
        /* Started placeholders: the pool's server already answers. */
        struct lg_pool_spec pp = {.name = "proc", .runtime = "image", .ready = 1, .image = IMAGE,
                                  .start_process = true, .command = httpd, .port = 8080, .ready_path = "/ok"};
        OK(lg_node_pool_set(node, &pp, &err));
        wait_pool_ready("proc", 1);
        inst = start("proc", NULL, NULL, 0, NULL, &w);
        assert_int_equal(w.status, 0);
        assert_false(lg_instance_cold(inst));
        http_get(lg_instance_http_address(inst), "/ok", body, sizeof(body));
        assert_string_equal(body, "fine");
        destroy(inst);
        /* A process pool whose server never answers is never ready. */
        static const char *const sleeper[] = {"sleep", "1000", NULL};
        struct lg_pool_spec bad = {.name = "bad", .runtime = "image", .ready = 1, .image = IMAGE,
                                   .start_process = true, .command = sleeper, .port = 8080};
        OK(lg_node_pool_set(node, &bad, &err));
        struct lg_pool_stats st;
        do {
                uv_run(&loop, UV_RUN_ONCE);
                assert_int_equal(lg_node_pool_stats(node, "bad", &st), 0);
        } while (!st.failures);
        assert_int_equal(st.ready, 0);
        assert_non_null(strstr(st.last_error, "port 8080 never opened"));
        /* Refused at once: an image the store lacks, no port in mode process. */
        struct lg_pool_spec missing = {.name = "m", .runtime = "image", .image = "test/missing:1"};
        assert_int_equal(lg_node_pool_set(node, &missing, &err), -ENOENT);
        struct lg_pool_spec noport = {.name = "m", .runtime = "image", .image = IMAGE, .start_process = true};
        assert_int_equal(lg_node_pool_set(node, &noport, &err), -EINVAL);
        OK(lg_node_pool_delete(node, "img"));
        OK(lg_node_pool_delete(node, "proc"));
        OK(lg_node_pool_delete(node, "bad"));
}

/* What image GC must keep: the images (and layers) of instances, and with
 * warm of pools and their placeholders too. */
static size_t images_in_use(bool warm, size_t *n_layers) {
        struct lg_strlist ids = {0}, layers = {0};
        assert_int_equal(lg_node_images_in_use(node, warm, &ids, &layers), 0);
        for (size_t i = 0; i < ids.n; i++)
                assert_true(!strncmp(ids.v[i], "sha256:", 7));
        for (size_t i = 0; i < layers.n; i++)
                assert_int_equal(access(layers.v[i], F_OK), 0);
        size_t n = ids.n;
        *n_layers = layers.n;
        lg_strlist_clear(&ids);
        lg_strlist_clear(&layers);
        return n;
}

static void test_images_in_use(void **state) {
        (void) state;
        struct lg_error err = {0};
        struct waiter w;
        size_t layers = 0;
        assert_int_equal(images_in_use(true, &layers), 0);
        struct lg_pool_spec ps = {.name = "img", .runtime = "image", .ready = 1, .image = IMAGE};
        OK(lg_node_pool_set(node, &ps, &err));
        wait_pool_ready("img", 1);
        /* A placeholder is warm only. */
        assert_int_equal(images_in_use(false, &layers), 0);
        assert_int_equal(images_in_use(true, &layers), 1);
        assert_true(layers >= 1);
        OK(lg_node_pool_delete(node, "img"));
        while (images_in_use(true, &layers))
                uv_run(&loop, UV_RUN_ONCE);
        /* An instance runs on it: kept either way, each image once. */
        lg_instance *inst = start(NULL, IMAGE, httpd, 8080, NULL, &w);
        lg_instance *inst2 = start(NULL, IMAGE, httpd, 8080, NULL, &w);
        assert_int_equal(w.status, 0);
        assert_int_equal(images_in_use(false, &layers), 1);
        assert_true(layers >= 1);
        destroy(inst);
        destroy(inst2);
        /* Kept until their sandboxes are gone (their layers are mounted
         * until then). */
        while (images_in_use(true, &layers))
                uv_run(&loop, UV_RUN_ONCE);
}

/* The network as a (re)started legiond finds it: a new handle. */
static lg_net *net_again(void) {
        struct lg_net_config nc = {.cidr = NET_CIDR, .table = NET_TABLE, .link_prefix = NET_PREFIX};
        struct lg_error err = {0};
        lg_net *n = NULL;
        OK(lg_net_new(&nc, &n, &err));
        struct lg_net_namespace ns = {0};
        struct lg_net_policy on = {.egress = LG_NET_EGRESS_ON};
        OK(lg_net_namespace_set(n, "default", &ns, &on, &err));
        return n;
}

/* Surviving a restart: a first "legiond" (a child process: the sandboxes
 * of an owner still alive are not adoptable) starts an instance and
 * leaves it running; the record keeps the image and port, adoption gives
 * "ip:port" again and it still serves. */
static void test_restart(void **state) {
        (void) state;
        node_down();
        lg_net_free(net);
        net = NULL;
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(fds[0]);
                uv_loop_init(&loop);
                net = net_again();
                node_up(net, 3000);
                struct waiter w;
                lg_instance *inst = start(NULL, IMAGE, httpd, 8080, NULL, &w);
                char addr[300] = "";
                if (w.status == 0)
                        snprintf(addr, sizeof(addr), "%s", lg_instance_http_address(inst));
                lg_node_detach_all(node);
                lg_instance_destroy(inst);
                node_down();
                lg_net_free(net);
                if (write(fds[1], addr, sizeof(addr)) != (ssize_t) sizeof(addr))
                        _exit(1);
                _exit(0);
        }
        close(fds[1]);
        char addr[300] = "";
        assert_int_equal(read(fds[0], addr, sizeof(addr)), (ssize_t) sizeof(addr));
        close(fds[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        assert_true(addr[0]);
        net = net_again();
        node_up(net, 3000);
        struct lg_error err = {0};
        OK(lg_net_sweep(net, &err));
        lg_instance *again = NULL;
        struct waiter w2 = {0};
        assert_int_equal(lg_node_instance_adopt(node, "default/web", 1, on_ready, on_exit_cb, &w2, &again), 1);
        assert_string_equal(lg_instance_http_address(again), addr);
        char body[64];
        http_get(addr, "/ok", body, sizeof(body));
        assert_string_equal(body, "fine");
        destroy(again);
        lg_node_adopted_release(node, NULL, NULL);
}

/* --network off: refused clearly. */
static void test_no_network(void **state) {
        (void) state;
        node_down();
        node_up(NULL, 3000);
        struct lg_error err = {0};
        struct lg_pool_spec ps = {.name = "img", .runtime = "image", .ready = 1, .image = IMAGE};
        assert_int_equal(lg_node_pool_set(node, &ps, &err), -ENETUNREACH);
        assert_string_equal(err.msg, "container apps need the node network (legiond --network on)");
        struct waiter w;
        start(NULL, IMAGE, httpd, 8080, NULL, &w);
        assert_int_equal(w.status, -ENETUNREACH);
        assert_string_equal(w.message, "container apps need the node network (legiond --network on)");
        node_down();
        node_up(net, 3000);
}

int main(void) {
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: image instance tests need root (sandboxes)\n");
                return 77;
        }
        if (access("/bin/busybox", X_OK) < 0) {
                fprintf(stderr, "SKIP: image instance tests need /bin/busybox (busybox-static)\n");
                return 77;
        }
        char parent[64];
        snprintf(parent, sizeof(parent), "legion-test-nodeimg-%d", (int) getpid());
        setenv("LEGION_CGROUP_PARENT", parent, 0);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ready),      cmocka_unit_test(test_failures),
                cmocka_unit_test(test_exit_later), cmocka_unit_test(test_pools),
                cmocka_unit_test(test_restart),    cmocka_unit_test(test_no_network),
                cmocka_unit_test(test_images_in_use),
        };
        int r = cmocka_run_group_tests(tests, setup, teardown);
        /* What a failed test left running (a detached instance). */
        char state_root[300];
        snprintf(state_root, sizeof(state_root), "%s/run/sandboxes-root", tmp);
        sandbox_cleanup(state_root, tmp, parent);
        return r;
}
