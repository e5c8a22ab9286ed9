/* Masters of the dask engine (src/jobs/masters.c) through the jobs
 * library, with real sandboxes, a real dask-scheduler and the node
 * network (root): a deployed master becomes Ready with an address that
 * accepts TCP; a job acquires it, another finds it busy (waiting says
 * why), a delete while it is held is -EBUSY, an idle one is reused; the
 * keep-alive timeout deletes an idle one; a job with keepAlive gets a
 * Master of its own; a master that dies before it is ready refuses its
 * job (OOMKilled); a restart adopts the sandbox and finds a lost one;
 * hostile specs are refused naming the field. Capacity goes back with
 * each master. The network has the test's own table, link prefix and
 * CIDR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/jobs-internal.h"
#include "jobs/jobs.h"
#include "net-kit.h"
#include "node/agent.h"
#include "sandbox-cleanup.h"
#include "wait-kit.h"

#define NET_TABLE "lg_test_jm"
#define NET_PREFIX "lgjm"
#define NET_CIDR "10.202.14.0/28"

static char tmp[256], run_dir[300], jobs_dir[300], state_root[400], cg_parent[64], runtimes_dir[600];
static uv_loop_t loop;
static lg_store *store;
static lg_net *net;
static lg_agent *agent;
static lg_jobs *jobs;

static void jobs_start(lg_net *n) {
        struct lg_error e = {0};
        char agent_root[400];
        snprintf(agent_root, sizeof(agent_root), "%s/agent", run_dir);
        if (lg_agent_local_new(&loop, agent_root, n, &agent, &e) < 0)
                fail_msg("agent: %s", e.msg);
        struct lg_jobs_config cfg = {.loop = &loop, .store = store, .agent = agent, .net = n, .run_dir = run_dir,
                                     .jobs_dir = jobs_dir, .runtimes_dir = runtimes_dir, .cpu_capacity_millis = 4000,
                                     .memory_capacity_bytes = 8ull << 30};
        if (lg_jobs_new(&cfg, &jobs, &e) < 0)
                fail_msg("jobs: %s", e.msg);
}

static void jobs_stop(bool detach) {
        if (detach)
                lg_jobs_detach_all(jobs);
        lg_jobs_free(jobs);
        jobs = NULL;
        lg_agent_free(agent);
        agent = NULL;
}

/* ---- waiting ---------------------------------------------------------------- */

/* Run the loop until pred holds, at most 2 minutes (the scheduler starts
 * in a second or two on a quiet machine, much more on a loaded one). */
static bool pump_until(bool (*pred)(const void *), const void *arg) { return wait_kit_pump(&loop, pred, arg); }

static json_t *status_of(const char *name) {
        struct lg_resource *r = NULL;
        struct lg_error e = {0};
        if (lg_jobs_master_get(jobs, "default", name, &r, &e) < 0)
                return NULL;
        json_t *st = json_incref(r->status);
        lg_resource_free(r);
        return st;
}

static const char *field(const json_t *st, const char *f) { return json_string_value(json_object_get(st, f)); }

static bool phase_is(const char *name, const char *phase) {
        json_t *st = status_of(name);
        bool ok = field(st, "phase") && !strcmp(field(st, "phase"), phase);
        json_decref(st);
        return ok;
}

static bool is_ready(const void *name) { return phase_is(name, "Ready"); }
static bool is_failed(const void *name) { return phase_is(name, "Failed"); }
static bool is_gone(const void *name) {
        json_t *st = status_of(name);
        json_decref(st);
        return !st;
}
static bool nothing_held(const void *arg) {
        (void) arg;
        return jobs->cpu_used == 0 && jobs->mem_used == 0;
}
static bool path_gone(const void *path) {
        struct stat st;
        return stat(path, &st) < 0;
}

/* A TCP connection to "tcp://IP:PORT" is accepted. */
static bool tcp_open(const char *address) {
        char ip[32];
        unsigned port;
        if (!address || sscanf(address, "tcp://%31[0-9.]:%u", ip, &port) != 2)
                return false;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
        inet_pton(AF_INET, ip, &a.sin_addr);
        bool ok = connect(fd, (struct sockaddr *) &a, sizeof(a)) == 0;
        close(fd);
        return ok;
}

static void deploy(const char *spec_text) {
        json_error_t je;
        json_t *spec = json_loads(spec_text, 0, &je);
        assert_non_null(spec);
        struct lg_resource *r = NULL;
        struct lg_error e = {0};
        if (lg_jobs_master_deploy(jobs, "default", spec, &r, &e) < 0)
                fail_msg("deploy %s: %s", spec_text, e.msg);
        assert_string_equal(field(r->status, "phase"), "Starting");
        lg_resource_free(r);
        json_decref(spec);
}

/* What a job is told. */
struct told {
        int n_granted, n_refused;
        struct jobs_master_grant g;
        char why[512];
};

static void job_cb(int status, const struct jobs_master_grant *g, const struct lg_error *err, void *ud) {
        struct told *t = ud;
        if (status == 0) {
                t->n_granted++;
                t->g = *g;
        } else {
                t->n_refused++;
                snprintf(t->why, sizeof(t->why), "%s", err ? err->msg : "");
        }
}

static bool granted(const void *t) { return ((const struct told *) t)->n_granted > 0; }
static bool refused(const void *t) { return ((const struct told *) t)->n_refused > 0; }

static int acquire(const char *name, const char *job, const char *image, struct told *t, char *waiting) {
        struct jobs_master_want w = {.ns = "default", .job = job, .engine = "dask", .image = image, .name = name,
                                     .cpu_millis = 500, .memory_bytes = 512ull << 20};
        struct lg_error e = {0};
        char wait[256] = "";
        int r = jobs_master_acquire(jobs, &w, job_cb, t, wait, sizeof(wait), &e);
        if (waiting)
                snprintf(waiting, 256, "%s", wait);
        return r;
}

static char *sandbox_dir(const char *name, char *buf, size_t cap) {
        json_t *st = status_of(name);
        assert_non_null(field(st, "sandbox"));
        snprintf(buf, cap, "%s/sandboxes/%s", state_root, field(st, "sandbox"));
        json_decref(st);
        return buf;
}

/* ---- tests ------------------------------------------------------------------- */

static void expect_bad(const char *spec_text, const char *needle) {
        json_error_t je;
        json_t *spec = json_loads(spec_text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!spec)
                fail_msg("bad test JSON %s: %s", spec_text, je.text);
        char name[LG_STORE_NAME_MAX + 1];
        json_t *out = NULL;
        struct lg_error e = {0};
        int r = jobs_master_spec(spec, name, &out, &e);
        if (r != -EINVAL || !strstr(e.msg, needle))
                fail_msg("spec %s: %d `%s`, expected -EINVAL naming `%s`", spec_text, r, e.msg, needle);
        assert_null(out);
        struct lg_resource *res = NULL;
        assert_int_equal(lg_jobs_master_deploy(jobs, "default", spec, &res, &e), -EINVAL);
        assert_null(res);
        json_decref(spec);
}

static void test_spec(void **state) {
        (void) state;
        expect_bad("[]", "JSON object");
        expect_bad("\"m\"", "JSON object");
        expect_bad("null", "JSON object");
        expect_bad("{}", "`name`");
        expect_bad("{\"name\": 5}", "`name`");
        expect_bad("{\"name\": \"Bad_Name\"}", "`Bad_Name`");
        expect_bad("{\"name\": \"../x\"}", "`name`");
        expect_bad("{\"name\": \"m\", \"replicas\": 2}", "`replicas`");
        expect_bad("{\"name\": \"m\", \"engine\": \"indexed\"}", "`engine`");
        expect_bad("{\"name\": \"m\", \"engine\": 1}", "`engine`");
        expect_bad("{\"name\": \"m\", \"image\": \"a b\"}", "`image`");
        expect_bad("{\"name\": \"m\", \"image\": \"a\\u0000b\"}", "`image`");
        expect_bad("{\"name\": \"m\\u0000x\"}", "`name`");
        expect_bad("{\"name\": \"m\", \"engine\": \"dask\\u0000x\"}", "`engine`");
        expect_bad("{\"name\": \"m\", \"cpu\": \"1\\u0000junk\"}", "`cpu`");
        expect_bad("{\"name\": \"m\", \"memory\": \"1Gi\\u0000\"}", "`memory`");
        expect_bad("{\"name\": \"m\", \"image\": \"x\", \"extra\": 1, \"more\": 2}", "`extra`");
        expect_bad("{\"name\": \"m\", \"image\": [\"x\"]}", "`image`");
        expect_bad("{\"name\": \"m\", \"cpu\": \"-1\"}", "`cpu`");
        expect_bad("{\"name\": \"m\", \"cpu\": \"0\"}", "`cpu`");
        expect_bad("{\"name\": \"m\", \"cpu\": \"nan\"}", "`cpu`");
        expect_bad("{\"name\": \"m\", \"cpu\": \"1e3\"}", "`cpu`");
        expect_bad("{\"name\": \"m\", \"cpu\": \"100000\"}", "`cpu`");
        expect_bad("{\"name\": \"m\", \"cpu\": true}", "`cpu`");
        expect_bad("{\"name\": \"m\", \"memory\": \"1k\"}", "`memory`");
        expect_bad("{\"name\": \"m\", \"memory\": \"lots\"}", "`memory`");
        expect_bad("{\"name\": \"m\", \"memory\": -5}", "`memory`");
        expect_bad("{\"name\": \"m\", \"memory\": \"99999999999999999999999\"}", "`memory`");
        expect_bad("{\"name\": \"m\", \"keepAliveSeconds\": -1}", "`keepAliveSeconds`");
        expect_bad("{\"name\": \"m\", \"keepAliveSeconds\": \"600\"}", "`keepAliveSeconds`");
        expect_bad("{\"name\": \"m\", \"keepAliveSeconds\": 99999999999}", "`keepAliveSeconds`");

        /* Defaults filled in; numbers written as strings. */
        json_error_t je;
        json_t *spec = json_loads("{\"name\": \"m\", \"cpu\": 0.5, \"memory\": 268435456}", 0, &je);
        char name[LG_STORE_NAME_MAX + 1];
        json_t *out = NULL;
        struct lg_error e = {0};
        assert_int_equal(jobs_master_spec(spec, name, &out, &e), 0);
        assert_string_equal(name, "m");
        assert_null(json_object_get(out, "name"));
        assert_string_equal(field(out, "engine"), "dask");
        assert_string_equal(field(out, "image"), "");
        assert_string_equal(field(out, "cpu"), "500m");
        assert_string_equal(field(out, "memory"), "268435456");
        assert_int_equal(json_integer_value(json_object_get(out, "keepAliveSeconds")), 600);
        json_decref(out);
        json_decref(spec);

        /* An image that is not there, a namespace that is not a name:
         * nothing recorded, nothing held. */
        spec = json_loads("{\"name\": \"m\", \"image\": \"nope/none:1\"}", 0, &je);
        assert_int_equal(lg_jobs_master_deploy(jobs, "default", spec, NULL, &e), -ENOENT);
        assert_int_equal(lg_jobs_master_deploy(jobs, "Bad NS", spec, NULL, &e), -EINVAL);
        json_decref(spec);
        assert_true(is_gone("m"));

        /* More than the node gives jobs. */
        spec = json_loads("{\"name\": \"big\", \"cpu\": \"8\"}", 0, &je);
        assert_int_equal(lg_jobs_master_deploy(jobs, "default", spec, NULL, &e), -E2BIG);
        assert_non_null(strstr(e.msg, "master `big`"));
        json_decref(spec);
        assert_true(is_gone("big"));
        assert_true(nothing_held(NULL));

        /* More than is free now: refused (a conflict), saying what is free. */
        jobs->cpu_used = 3600;
        spec = json_loads("{\"name\": \"later\"}", 0, &je);
        assert_int_equal(lg_jobs_master_deploy(jobs, "default", spec, NULL, &e), -EBUSY);
        assert_non_null(strstr(e.msg, "free now"));
        json_decref(spec);
        jobs->cpu_used = 0;
        assert_true(is_gone("later"));

        /* No node network: no dask master. */
        jobs_stop(false);
        jobs_start(NULL);
        spec = json_loads("{\"name\": \"m\"}", 0, &je);
        assert_int_equal(lg_jobs_master_deploy(jobs, "default", spec, NULL, &e), -ENETUNREACH);
        assert_non_null(strstr(e.msg, "--network on"));
        json_decref(spec);
        jobs_stop(false);
        jobs_start(net);
}

/* Deployed, Ready at an address that accepts TCP; held by one job at a
 * time; not deleted while held; reused when idle; deleted with its
 * sandbox, log and capacity. */
static void test_deploy_acquire_delete(void **state) {
        (void) state;
        deploy("{\"name\": \"m1\", \"cpu\": \"0.5\", \"memory\": \"512Mi\", \"keepAliveSeconds\": 0}");
        struct lg_error e = {0};
        json_t *spec = json_pack("{s:s}", "name", "m1");
        assert_int_equal(lg_jobs_master_deploy(jobs, "default", spec, NULL, &e), -EEXIST);
        json_decref(spec);
        assert_int_equal(jobs->cpu_used, 500);
        assert_int_equal(jobs->mem_used, 512ull << 20);

        /* A job takes it while it starts: granted once it is Ready. */
        struct told t1 = {0}, t2 = {0};
        assert_int_equal(acquire("", "j1", "", &t1, NULL), 1);
        assert_int_equal(t1.n_granted, 0); /* never from inside the call */
        if (!pump_until(is_ready, "m1")) {
                json_t *st = status_of("m1");
                fail_msg("m1 never Ready: %s", json_dumps(st, 0));
        }
        assert_true(pump_until(granted, &t1));
        assert_int_equal(t1.n_granted, 1);
        assert_string_equal(t1.g.name, "m1");
        assert_true(t1.g.reused);
        assert_true(t1.g.kept);
        json_t *st = status_of("m1");
        assert_string_equal(t1.g.address, field(st, "address"));
        assert_true(tcp_open(t1.g.address));
        assert_string_equal(field(st, "job"), "j1");
        assert_null(json_object_get(st, "idleSince"));
        assert_non_null(json_object_get(st, "startedAt"));
        assert_true(json_integer_value(json_object_get(json_object_get(st, "usage"), "seconds")) >= 1);
        json_decref(st);
        char sbdir[600], log[600], path[600];
        sandbox_dir("m1", sbdir, sizeof(sbdir));
        assert_false(path_gone(sbdir));
        snprintf(log, sizeof(log), "%s/default/masters/m1/master.log", jobs_dir);
        assert_int_equal(jobs_master_log_path(jobs, "default", "m1", path, sizeof(path)), 0);
        assert_string_equal(path, log);
        assert_false(path_gone(log));

        /* Busy: a second job waits, saying why; no delete while held. */
        char waiting[256];
        assert_int_equal(acquire("m1", "j2", "", &t2, waiting), -EAGAIN);
        assert_string_equal(waiting, "master m1 is busy with job j1");
        assert_int_equal(acquire("", "j2", "", &t2, NULL), 0);
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "m1", &e), -EBUSY);
        assert_true(phase_is("m1", "Ready"));
        assert_int_equal(acquire("nope", "j2", "", &t2, NULL), -ENOENT);

        /* Released: idle, then reused by the same engine and image only. */
        jobs_master_release(jobs, "default", "m1", "j1");
        st = status_of("m1");
        assert_string_equal(field(st, "job"), "");
        assert_non_null(json_object_get(st, "idleSince"));
        json_decref(st);
        assert_int_equal(acquire("", "j2", "some/image:1", &t2, NULL), 0);
        assert_int_equal(acquire("", "j2", "", &t2, NULL), 1);
        assert_true(pump_until(granted, &t2));
        assert_string_equal(t2.g.address, t1.g.address);
        assert_int_equal(t1.n_granted, 1); /* the first job is told nothing more */
        /* A cancel (meant for before the grant) frees it all the same. */
        jobs_master_cancel(jobs, "default", "j2");
        st = status_of("m1");
        assert_string_equal(field(st, "job"), "");
        json_decref(st);

        /* Listed; deleted with record, sandbox, log and capacity. */
        struct lg_resource_list l = {0};
        assert_int_equal(lg_jobs_master_list(jobs, "default", &l, &e), 0);
        assert_int_equal(l.n, 1);
        json_t *j = lg_master_to_json(l.items[0]);
        assert_string_equal(field(j, "name"), "m1");
        assert_string_equal(field(j, "namespace"), "default");
        assert_string_equal(field(json_object_get(j, "status"), "phase"), "Ready");
        assert_string_equal(field(json_object_get(j, "spec"), "cpu"), "0.5");
        json_decref(j);
        lg_resource_list_free(&l);
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "m1", &e), 0);
        assert_true(is_gone("m1"));
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "m1", &e), -ENOENT);
        assert_true(pump_until(nothing_held, NULL));
        assert_true(pump_until(path_gone, sbdir));
        assert_true(pump_until(path_gone, log));
        assert_false(tcp_open(t1.g.address));
}

/* Idle for keepAliveSeconds: deleted, sandbox and all; held, it stays. */
static void test_idle_timeout(void **state) {
        (void) state;
        deploy("{\"name\": \"m2\", \"cpu\": \"0.5\", \"memory\": \"512Mi\", \"keepAliveSeconds\": 1}");
        struct told t = {0};
        assert_int_equal(acquire("m2", "j", "", &t, NULL), 1);
        assert_true(pump_until(granted, &t));
        char sbdir[600];
        sandbox_dir("m2", sbdir, sizeof(sbdir));
        jobs_master_release(jobs, "default", "m2", "j");
        assert_true(pump_until(is_gone, "m2"));
        assert_true(pump_until(path_gone, sbdir));
        assert_true(pump_until(nothing_held, NULL));
}

/* A job with keepAlive and no master: a Master `<job>-master` of its
 * own, with the job's master resources and keep-alive, kept after it. */
static void test_keep_alive(void **state) {
        (void) state;
        struct told t = {0};
        struct jobs_master_want w = {.ns = "default", .job = "j5", .engine = "dask", .image = "", .name = "",
                                     .keep_alive = true, .keep_alive_seconds = 300, .cpu_millis = 500,
                                     .memory_bytes = 512ull << 20};
        struct lg_error e = {0};
        char waiting[256] = "";
        assert_int_equal(jobs_master_acquire(jobs, &w, job_cb, &t, waiting, sizeof(waiting), &e), 1);
        assert_true(pump_until(granted, &t));
        assert_string_equal(t.g.name, "j5-master");
        assert_false(t.g.reused);
        assert_true(t.g.kept);
        assert_true(tcp_open(t.g.address));
        struct lg_resource *r = NULL;
        assert_int_equal(lg_jobs_master_get(jobs, "default", "j5-master", &r, &e), 0);
        assert_string_equal(field(r->spec, "cpu"), "500m");
        assert_string_equal(field(r->spec, "memory"), "512Mi");
        assert_int_equal(json_integer_value(json_object_get(r->spec, "keepAliveSeconds")), 300);
        assert_string_equal(field(r->status, "job"), "j5");
        lg_resource_free(r);
        assert_int_equal(jobs->cpu_used, 500);
        jobs_master_release(jobs, "default", "j5-master", "j5");
        /* The next job of the namespace reuses it. */
        struct told t2 = {0};
        w.job = "j6";
        w.master_name = "other";
        assert_int_equal(jobs_master_acquire(jobs, &w, job_cb, &t2, waiting, sizeof(waiting), &e), 1);
        assert_true(pump_until(granted, &t2));
        assert_string_equal(t2.g.name, "j5-master");
        assert_true(t2.g.reused);
        assert_true(is_gone("other"));
        jobs_master_release(jobs, "default", "j5-master", "j6");
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "j5-master", &e), 0);
        assert_true(pump_until(nothing_held, NULL));
}

static void signalled(lg_agent_req *req) { (void) req; }

/* A master that dies before it is ready refuses its job (OOMKilled); one
 * killed under a job is Failed (MasterExited), the job no longer reuses
 * it, and its capacity comes back. */
static void test_failures(void **state) {
        (void) state;
        deploy("{\"name\": \"tiny\", \"cpu\": \"0.5\", \"memory\": \"8Mi\"}");
        struct told t = {0};
        assert_int_equal(acquire("tiny", "j7", "", &t, NULL), 1);
        assert_true(pump_until(refused, &t));
        assert_int_equal(t.n_granted, 0);
        assert_non_null(strstr(t.why, "master tiny failed: OOMKilled"));
        json_t *st = status_of("tiny");
        assert_string_equal(field(st, "phase"), "Failed");
        assert_string_equal(field(st, "reason"), "OOMKilled");
        assert_string_equal(field(st, "job"), ""); /* refused: the job holds nothing */
        json_decref(st);
        struct lg_error e = {0};
        assert_int_equal(acquire("tiny", "j8", "", &t, NULL), -ENOENT);
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "tiny", &e), 0);

        deploy("{\"name\": \"m3\", \"cpu\": \"0.5\", \"memory\": \"512Mi\"}");
        struct told t3 = {0};
        assert_int_equal(acquire("m3", "j3", "", &t3, NULL), 1);
        assert_true(pump_until(granted, &t3));
        st = status_of("m3");
        char sb[LG_AGENT_ID_MAX];
        snprintf(sb, sizeof(sb), "%s", field(st, "sandbox"));
        json_decref(st);
        static lg_agent_req req;
        memset(&req, 0, sizeof(req));
        assert_int_equal(lg_agent_signal(agent, &req, sb, SIGKILL, signalled), 0);
        assert_true(pump_until(is_failed, "m3"));
        st = status_of("m3");
        assert_string_equal(field(st, "reason"), "MasterExited");
        assert_non_null(strstr(field(st, "message"), "dask-scheduler ended: Signaled(KILL)"));
        assert_string_equal(field(st, "job"), "j3"); /* until the job releases it */
        json_decref(st);
        assert_true(pump_until(nothing_held, NULL));
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "m3", &e), 0); /* failed: not in use */
        jobs_master_release(jobs, "default", "m3", "j3");
}

static bool pool_ready(const void *name) {
        json_t *pools = lg_jobs_pools_json(jobs);
        size_t i;
        json_t *p;
        bool ready = false;
        json_array_foreach(pools, i, p) if (!strcmp(field(p, "name"), name)) ready =
                json_integer_value(json_object_get(p, "readyNow")) > 0;
        json_decref(pools);
        return ready;
}

static json_int_t pool_taken(const char *name) {
        json_t *pools = lg_jobs_pools_json(jobs);
        size_t i;
        json_t *p;
        json_int_t taken = -1;
        json_array_foreach(pools, i, p) if (!strcmp(field(p, "name"), name)) taken =
                json_integer_value(json_object_get(p, "taken"));
        json_decref(pools);
        return taken;
}

static bool log_says_scheduler(const void *path) {
        char log[8192] = "";
        FILE *f = fopen(path, "r");
        if (!f)
                return false;
        log[fread(log, 1, sizeof(log) - 1, f)] = '\0';
        fclose(f);
        return strstr(log, "Scheduler at") != NULL;
}

/* A master taken from a pool of pre-imported Dask processes (the
 * scheduler runs in the warm process): Ready, its log the master's, its
 * end noticed (Failed) like a master made on demand. */
static void test_preimported(void **state) {
        (void) state;
        struct lg_error e = {0};
        json_t *spec = json_pack("{s:s, s:i}", "kind", "dask-executor", "ready", 1);
        if (lg_jobs_pool_set(jobs, "dask", spec, &e) < 0)
                fail_msg("pool: %s", e.msg);
        json_decref(spec);
        assert_true(pump_until(pool_ready, "dask"));
        deploy("{\"name\": \"m6\", \"cpu\": \"0.5\", \"memory\": \"512Mi\"}");
        assert_true(pump_until(is_ready, "m6"));
        assert_int_equal(pool_taken("dask"), 1);
        json_t *st = status_of("m6");
        assert_true(tcp_open(field(st, "address")));
        char sb[LG_AGENT_ID_MAX], path[700], log[4096] = "";
        snprintf(sb, sizeof(sb), "%s", field(st, "sandbox"));
        json_decref(st);
        assert_int_equal(jobs_master_log_path(jobs, "default", "m6", path, sizeof(path)), 0);
        /* The port may open before the line is written. */
        if (!pump_until(log_says_scheduler, path)) {
                FILE *f = fopen(path, "r");
                if (f) {
                        log[fread(log, 1, sizeof(log) - 1, f)] = '\0';
                        fclose(f);
                }
                fail_msg("m6's log %s: %s", path, log);
        }
        static lg_agent_req req;
        memset(&req, 0, sizeof(req));
        assert_int_equal(lg_agent_signal(agent, &req, sb, SIGKILL, signalled), 0);
        assert_true(pump_until(is_failed, "m6"));
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "m6", &e), 0);
        assert_int_equal(lg_jobs_pool_delete(jobs, "dask", &e), 0);
        assert_true(pump_until(nothing_held, NULL));
}

/* ---- masters serving real jobs ------------------------------------------------- */

static json_t *job_status(const char *name) {
        struct lg_resource *r = NULL;
        struct lg_error e = {0};
        if (lg_jobs_get(jobs, "default", name, &r, &e) < 0)
                return NULL;
        json_t *st = json_incref(r->status);
        lg_resource_free(r);
        return st;
}

static bool job_ended(const void *name) {
        json_t *st = job_status(name);
        const char *p = field(st, "phase");
        bool done = p && (!strcmp(p, "Succeeded") || !strcmp(p, "Failed") || !strcmp(p, "Stopped"));
        json_decref(st);
        return done;
}

/* One of the two jobs waits for the master the other holds. */
static bool one_waits_for(const void *master) {
        char want[128];
        snprintf(want, sizeof(want), "master %s is busy with job ", (const char *) master);
        bool found = false;
        for (int i = 0; i < 2 && !found; i++) {
                json_t *st = job_status(i ? "k3" : "k2");
                const char *w = field(st, "waitingFor");
                found = w && !strncmp(w, want, strlen(want)) && !strcmp(field(st, "phase"), "Pending");
                json_decref(st);
        }
        return found;
}

static void submit(const char *name, const char *extra) {
        char text[1024];
        snprintf(text, sizeof(text),
                 "{\"name\": \"%s\", \"command\": [\"python3\", \"-c\", \"import time\\nfrom dask.distributed import "
                 "Client\\nc = Client()\\nprint('sum', c.submit(sum, [1, 2, 3]).result())\\ntime.sleep(2)\"],"
                 " \"executors\": {\"count\": 1, \"cpu\": \"500m\", \"memory\": \"512Mi\"},"
                 " \"driver\": {\"cpu\": \"500m\", \"memory\": \"512Mi\"},"
                 " \"masterResources\": {\"cpu\": \"500m\", \"memory\": \"512Mi\"}%s}",
                 name, extra);
        json_error_t je;
        json_t *spec = json_loads(text, 0, &je);
        if (!spec)
                fail_msg("test JSON %s: %s", text, je.text);
        struct lg_error e = {0};
        if (lg_jobs_submit(jobs, "default", spec, NULL, &e) < 0)
                fail_msg("submit %s: %s", name, e.msg);
        json_decref(spec);
}

static void expect_succeeded(const char *name, const char *master, bool reused) {
        if (!pump_until(job_ended, name))
                fail_msg("job %s never ended", name);
        json_t *st = job_status(name);
        char path[700], log[4096] = "";
        if (lg_jobs_log_path(jobs, "default", name, "driver", 0, path, sizeof(path)) == 0) {
                FILE *f = fopen(path, "r");
                if (f) {
                        log[fread(log, 1, sizeof(log) - 1, f)] = '\0';
                        fclose(f);
                }
        }
        if (strcmp(field(st, "phase"), "Succeeded") || !strstr(log, "sum 6\n"))
                fail_msg("job %s: %s\ndriver log:\n%s", name, json_dumps(st, JSON_INDENT(1)), log);
        const json_t *m = json_object_get(st, "master");
        assert_string_equal(field(m, "name"), master);
        assert_true(json_is_true(json_object_get(m, "kept")));
        assert_int_equal(json_is_true(json_object_get(m, "reused")), reused);
        /* Its roles are the driver and the executor: the master is not the job's. */
        size_t i;
        const json_t *x;
        json_array_foreach(json_object_get(st, "roles"), i, x) assert_string_not_equal(field(x, "role"), "master");
        json_decref(st);
}

/* Jobs on Masters: a job with keepAlive leaves its master `<job>-master`
 * behind, Ready and idle; the next job of the namespace reuses it; two at
 * once take turns, the second Pending "master ... is busy with job ...",
 * and both get their result; the master's log is the job's master log. */
static void test_jobs_on_masters(void **state) {
        (void) state;
        if (access("/usr/bin/dask-scheduler", X_OK) < 0 || access("/usr/bin/dask-worker", X_OK) < 0)
                skip();
        submit("k1", ", \"keepAlive\": true, \"keepAliveSeconds\": 300");
        expect_succeeded("k1", "k1-master", false);
        json_t *st = status_of("k1-master");
        assert_string_equal(field(st, "phase"), "Ready");
        assert_string_equal(field(st, "job"), "");
        assert_non_null(json_object_get(st, "idleSince"));
        json_decref(st);
        char path[700], mpath[700];
        assert_int_equal(lg_jobs_log_path(jobs, "default", "k1", "master", 0, path, sizeof(path)), 0);
        assert_int_equal(jobs_master_log_path(jobs, "default", "k1-master", mpath, sizeof(mpath)), 0);
        assert_string_equal(path, mpath);

        submit("k2", "");
        submit("k3", ", \"master\": {\"name\": \"k1-master\"}");
        assert_true(pump_until(one_waits_for, "k1-master"));
        expect_succeeded("k2", "k1-master", true);
        expect_succeeded("k3", "k1-master", true);
        st = status_of("k1-master");
        assert_string_equal(field(st, "job"), "");
        json_decref(st);

        struct lg_error e = {0};
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "k1-master", &e), 0);
        assert_true(pump_until(nothing_held, NULL));
}

/* legiond restarts: a master's sandbox is adopted, Ready again at the
 * same address; one whose sandbox died meanwhile is Failed (MasterLost). */
static void test_restore(void **state) {
        (void) state;
        deploy("{\"name\": \"m4\", \"cpu\": \"0.5\", \"memory\": \"512Mi\"}");
        deploy("{\"name\": \"m5\", \"cpu\": \"0.5\", \"memory\": \"512Mi\"}");
        assert_true(pump_until(is_ready, "m4"));
        assert_true(pump_until(is_ready, "m5"));
        json_t *st = status_of("m4");
        char address[64], sb[LG_AGENT_ID_MAX], sb5[LG_AGENT_ID_MAX];
        snprintf(address, sizeof(address), "%s", field(st, "address"));
        snprintf(sb, sizeof(sb), "%s", field(st, "sandbox"));
        json_decref(st);
        st = status_of("m5");
        snprintf(sb5, sizeof(sb5), "%s", field(st, "sandbox"));
        json_decref(st);

        jobs_stop(true);
        struct lg_error e = {0};
        lg_sandbox *s5 = NULL;
        assert_int_equal(lg_sandbox_adopt(state_root, sb5, &s5, &e), 0);
        lg_sandbox_destroy(s5);
        lg_net_free(net);
        net = NULL;
        net = test_net_open(NET_CIDR, NET_TABLE, NET_PREFIX, false, "default");
        jobs_start(net);
        if (lg_jobs_restore(jobs, &e) < 0)
                fail_msg("restore: %s", e.msg);
        if (!pump_until(is_ready, "m4"))
                fail_msg("m4 not Ready after the restart: %s", json_dumps(status_of("m4"), 0));
        st = status_of("m4");
        assert_string_equal(field(st, "address"), address);
        assert_string_equal(field(st, "sandbox"), sb);
        json_decref(st);
        assert_true(tcp_open(address));
        assert_true(pump_until(is_failed, "m5"));
        st = status_of("m5");
        assert_string_equal(field(st, "reason"), "MasterLost");
        json_decref(st);
        assert_int_equal(jobs->cpu_used, 500); /* m4's */
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "m4", &e), 0);
        assert_int_equal(lg_jobs_master_delete(jobs, "default", "m5", &e), 0);
        assert_true(pump_until(nothing_held, NULL));
}

/* ---- fixture ------------------------------------------------------------------- */

static int setup(void **state) {
        (void) state;
        snprintf(tmp, sizeof(tmp), "/tmp/lg-test-jobs-masters-%d", (int) getpid());
        lg_rm_rf(tmp);
        assert_int_equal(lg_mkdir_p(tmp, 0755), 0);
        snprintf(run_dir, sizeof(run_dir), "%s/run", tmp);
        snprintf(jobs_dir, sizeof(jobs_dir), "%s/jobs", tmp);
        snprintf(state_root, sizeof(state_root), "%s/" JOBS_SANDBOX_DIR, run_dir);
        const char *src = getenv("LG_SOURCE_ROOT");
        snprintf(runtimes_dir, sizeof(runtimes_dir), "%s/runtimes", src ? src : ".");
        char path[400];
        struct lg_error e = {0};
        snprintf(path, sizeof(path), "%s/legion.db", tmp);
        struct lg_store_options so = {.sync = LG_STORE_SYNC_NORMAL};
        if (lg_store_open(path, &so, &store, &e) < 0)
                fail_msg("store: %s", e.msg);
        uv_loop_init(&loop);
        net = test_net_open(NET_CIDR, NET_TABLE, NET_PREFIX, true, "default");
        jobs_start(net);
        return 0;
}

static int teardown(void **state) {
        (void) state;
        struct lg_error e = {0};
        if (!net)
                net = test_net_open(NET_CIDR, NET_TABLE, NET_PREFIX, false, "default");
        if (!jobs) {
                /* A test failed while legiond was "down": its detached
                 * masters (owned by this live process, so no sweep takes
                 * them) are adopted to be destroyed. */
                jobs_start(net);
                if (lg_jobs_restore(jobs, &e) < 0)
                        fprintf(stderr, "restore: %s\n", e.msg);
        }
        jobs_stop(false);
        if (lg_net_teardown(net, &e) < 0)
                fprintf(stderr, "net teardown: %s\n", e.msg);
        lg_net_free(net);
        lg_store_close(store);
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_loop_close(&loop);
        sandbox_cleanup(state_root, getenv("LG_TEST_KEEP") ? NULL : tmp, cg_parent);
        return 0;
}

int main(void) {
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: masters need root (sandboxes, the node network)\n");
                return 77;
        }
        snprintf(cg_parent, sizeof(cg_parent), "legion-test-jm-%d", (int) getpid());
        setenv("LEGION_CGROUP_PARENT", cg_parent, 0);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_spec),
                cmocka_unit_test(test_deploy_acquire_delete),
                cmocka_unit_test(test_idle_timeout),
                cmocka_unit_test(test_keep_alive),
                cmocka_unit_test(test_failures),
                cmocka_unit_test(test_preimported),
                cmocka_unit_test(test_jobs_on_masters),
                cmocka_unit_test(test_restore),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
