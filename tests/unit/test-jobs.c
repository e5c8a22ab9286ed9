/* The jobs library (src/jobs): the submit spec against hostile input (no
 * root), then, as root, jobs of the indexed engine running `sh -c` in
 * real sandboxes through a real node agent on a real loop, with a
 * temporary store: an index failing once and retried, an index failing
 * past its retries, stop (running and pending), the deadline, capacity
 * (refused, queued with waitingFor, admitted when freed), watches, and a
 * restart mid-job (detach, a new lg_jobs and agent adopt the roles).
 * After each, no sandbox of the job is left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs/jobs-internal.h"
#include "jobs/jobs.h"
#include "net/net.h"
#include "node/agent.h"
#include "net-kit.h"
#include "sandbox-cleanup.h"
#include "wait-kit.h"

static char tmp[256], run_dir[300], jobs_dir[300], state_root[400], cg_parent[64], packages_dir[300],
        runtimes_dir[600];
static lg_store *store;
static uv_loop_t loop;
static lg_agent *agent;
static lg_jobs *jobs;
static uint64_t cpu_cap = 4000;

/* ---- the spec ---------------------------------------------------------------------- */

static int normalize(const char *text, json_t **out, struct lg_error *e) {
        json_error_t je;
        json_t *in = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!in)
                fail_msg("bad test JSON %s: %s", text, je.text);
        json_t *spec = NULL;
        int r = jobs_spec_normalize(NULL, in, &spec, e);
        json_decref(in);
        if (out)
                *out = spec;
        else
                json_decref(spec);
        return r;
}

static void refused(const char *text, const char *needle) {
        struct lg_error e = {0};
        int r = normalize(text, NULL, &e);
        if (r != -EINVAL)
                fail_msg("%s: expected -EINVAL, got %d (%s)", text, r, e.msg);
        if (needle && !strstr(e.msg, needle))
                fail_msg("%s: message `%s` does not name `%s`", text, e.msg, needle);
}

static void test_spec_defaults(void **state) {
        (void) state;
        json_t *s = NULL;
        struct lg_error e = {0};
        assert_int_equal(normalize("{\"engine\": \"indexed\", \"command\": [\"true\"]}", &s, &e), 0);
        const char *name = json_string_value(json_object_get(s, "name"));
        assert_non_null(name);
        assert_int_equal(strncmp(name, "job-", 4), 0);
        assert_int_equal(strlen(name), 12);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "executors"), "count")), 2);
        assert_string_equal(json_string_value(json_object_get(json_object_get(s, "executors"), "cpu")), "1");
        assert_string_equal(json_string_value(json_object_get(json_object_get(s, "driver"), "memory")), "1Gi");
        assert_int_equal(json_integer_value(json_object_get(s, "completions")), 2);
        assert_int_equal(json_integer_value(json_object_get(s, "parallelism")), 2);
        assert_int_equal(json_integer_value(json_object_get(s, "retries")), 3);
        assert_int_equal(json_integer_value(json_object_get(s, "keepAliveSeconds")), 600);
        assert_int_equal(json_integer_value(json_object_get(s, "maxDurationSeconds")), 0);
        assert_true(json_is_false(json_object_get(s, "keepAlive")));
        json_decref(s);

        assert_int_equal(normalize("{\"name\": \"wc\", \"file\": \"app.py\", \"package\": \"sha256:"
                                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", "
                                   "\"executors\": {\"count\": 4, \"cpu\": 0.5, \"memory\": 536870912}}",
                                   &s, &e),
                         0);
        assert_string_equal(json_string_value(json_object_get(s, "engine")), "dask");
        assert_string_equal(json_string_value(json_object_get(json_object_get(s, "executors"), "cpu")), "500m");
        assert_string_equal(json_string_value(json_object_get(json_object_get(s, "executors"), "memory")),
                            "536870912");
        assert_null(json_object_get(s, "completions"));
        json_decref(s);
}

static void test_spec_hostile(void **state) {
        (void) state;
        refused("[]", "JSON object");
        refused("\"x\"", "JSON object");
        refused("null", "JSON object");
        refused("{\"engine\": \"indexed\", \"command\": [\"true\"], \"bogus\": 1, \"other\": 2}", "`bogus`");
        refused("{\"engine\": \"spark\", \"command\": [\"x\"]}", "engine");
        refused("{\"engine\": 7, \"command\": [\"x\"]}", "engine");
        refused("{\"engine\": \"indexed\"}", "command");
        refused("{\"engine\": \"indexed\", \"command\": []}", "command");
        refused("{\"engine\": \"indexed\", \"command\": \"sh\"}", "command");
        refused("{\"engine\": \"indexed\", \"command\": [\"sh\", 3]}", "command[1]");
        refused("{\"engine\": \"indexed\", \"command\": [\"s\\u0000h\"]}", "command[0]");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"args\": {}}", "args");
        refused("{\"name\": \"Bad_Name\", \"engine\": \"indexed\", \"command\": [\"x\"]}", "name");
        refused("{\"name\": \"a-very-long-name-that-goes-on-and-on-past-fifty-three-chars\", \"engine\": \"indexed\", "
                "\"command\": [\"x\"]}",
                "name");
        refused("{\"name\": 5, \"engine\": \"indexed\", \"command\": [\"x\"]}", "name");
        refused("{\"name\": \"../x\", \"engine\": \"indexed\", \"command\": [\"x\"]}", "name");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"count\": 0}}", "count");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"count\": 257}}", "count");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"count\": 2.5}}", "count");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"count\": \"2\"}}", "count");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"count\": 9223372036854775807}}",
                "count");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"cpu\": \"-1\"}}", "executors.cpu");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"cpu\": \"nan\"}}", "executors.cpu");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"cpu\": 0}}", "executors.cpu");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"cpu\": \"1e3\"}}", "executors.cpu");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"memory\": \"1k\"}}",
                "executors.memory");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"memory\": \"99999999T\"}}",
                "executors.memory");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": {\"gpu\": 1}}", "`gpu`");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"executors\": []}", "executors");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"driver\": {\"cpu\": \"2\", \"count\": 2}}", "`count`");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"completions\": 0}", "completions");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"completions\": -5}", "completions");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"parallelism\": 1000}", "parallelism");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"retries\": -1}", "retries");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"retries\": 21}", "retries");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"completions\": 1001}", "completions");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"retries\": true}", "retries");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"master\": {\"name\": \"m\"}}", "master");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"keepAlive\": true}", "keepAlive");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"env\": {\"A=B\": \"x\"}}", "env");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"env\": {\"1A\": \"x\"}}", "env");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"env\": {\"\": \"x\"}}", "env");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"env\": {\"A\": 1}}", "env.A");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"env\": {\"A\": \"a\\u0000b\"}}", "env.A");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"env\": [\"A=B\"]}", "env");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"maxDurationSeconds\": -1}", "maxDurationSeconds");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"maxDurationSeconds\": 1e9}", "maxDurationSeconds");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"image\": \"a\\nb\"}", "image");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"package\": \"sha256:zz\"}", "package");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"package\": \"md5:abc\"}", "package");
        refused("{\"engine\": \"indexed\", \"command\": [\"x\"], \"completions\": 2, \"file\": \"a.py\"}", "file");
        /* dask */
        refused("{}", "file");
        refused("{\"file\": \"app.py\"}", "package");
        static const char pkg[] = "\"package\": \"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"";
        char buf[512];
        const char *bad_files[] = {"\"/etc/passwd\"", "\"../x.py\"", "\"a/../../x\"", "\"..\"", "\"\"", "\"a\\u0001b\"",
                                   "3"};
        for (size_t i = 0; i < ARRAY_SIZE(bad_files); i++) {
                snprintf(buf, sizeof(buf), "{\"file\": %s, %s}", bad_files[i], pkg);
                refused(buf, "file");
        }
        snprintf(buf, sizeof(buf), "{\"file\": \"a.py\", %s, \"completions\": 3}", pkg);
        refused(buf, "completions");
        snprintf(buf, sizeof(buf), "{\"file\": \"a.py\", \"command\": [\"x\"], %s}", pkg);
        refused(buf, "command");
        const char *bad_masters[] = {"{}",
                                     "{\"name\": \"m\", \"address\": \"tcp://1.2.3.4:1\"}",
                                     "{\"name\": \"M!\"}",
                                     "{\"address\": \"1.2.3.4:8786\"}",
                                     "{\"address\": \"tcp://1.2.3.4:0\"}",
                                     "{\"address\": \"tcp://1.2.3.4:65536\"}",
                                     "{\"address\": \"tcp://256.2.3.4:1\"}",
                                     "{\"address\": \"tcp://1.2.3.4:1x\"}",
                                     "{\"address\": \"tcp://01.2.3.4:1\"}",
                                     "{\"address\": \"tcp://1.2.3.4: 1\"}",
                                     "{\"port\": 1}",
                                     "\"m1\""};
        for (size_t i = 0; i < ARRAY_SIZE(bad_masters); i++) {
                snprintf(buf, sizeof(buf), "{\"file\": \"a.py\", %s, \"master\": %s}", pkg, bad_masters[i]);
                refused(buf, "master");
        }
        snprintf(buf, sizeof(buf), "{\"file\": \"a.py\", %s, \"master\": {\"name\": \"m\"}, \"keepAlive\": true}", pkg);
        refused(buf, "keepAlive");
        snprintf(buf, sizeof(buf), "{\"file\": \"a.py\", %s, \"keepAlive\": 1}", pkg);
        refused(buf, "keepAlive");
        snprintf(buf, sizeof(buf), "{\"file\": \"a.py\", %s, \"masterName\": \"A\"}", pkg);
        refused(buf, "masterName");
        snprintf(buf, sizeof(buf), "{\"file\": \"a.py\", %s, \"keepAliveSeconds\": 0}", pkg);
        refused(buf, "keepAliveSeconds");
        snprintf(buf, sizeof(buf), "{\"file\": \"a.py\", %s, \"masterResources\": {\"memory\": \"lots\"}}", pkg);
        refused(buf, "masterResources.memory");
        /* A command line beyond 256 KiB. */
        size_t n = 300 * 1024;
        char *big = malloc(n + 128);
        assert_non_null(big);
        int k = snprintf(big, n + 128, "{\"engine\": \"indexed\", \"command\": [\"");
        memset(big + k, 'a', n);
        snprintf(big + k + n, 128, "\"]}");
        refused(big, "command");
        free(big);
}

/* ---- the lifecycle with real sandboxes ------------------------------------------------------ */

static json_t *job_status(const char *name) {
        struct lg_resource *r = NULL;
        if (lg_jobs_get(jobs, "default", name, &r, NULL) < 0)
                return NULL;
        json_t *st = json_incref(r->status);
        lg_resource_free(r);
        return st;
}

/* The job's status once pred holds for it. */
static json_t *wait_for(const char *name, wait_kit_pred_fn pred, const void *arg) {
        return wait_kit_status(&loop, "job", name, job_status, pred, arg);
}

/* Final, and every sandbox gone (finishedAt written). */
static bool finished(const json_t *st, const void *arg) {
        (void) arg;
        return json_object_get(st, "finishedAt") != NULL;
}

static bool has_waiting(const json_t *st, const void *arg) {
        (void) arg;
        return wait_kit_phase_is(st, "Pending") && json_object_get(st, "waitingFor");
}

static unsigned sandboxes_left(void) {
        char path[512];
        snprintf(path, sizeof(path), "%s/sandboxes", state_root);
        DIR *d = opendir(path);
        unsigned n = 0;
        /* Not counting the warm pool's, made for the next jobs. */
        for (struct dirent *de; d && (de = readdir(d));)
                n += de->d_name[0] != '.' && strncmp(de->d_name, "jw-", 3);
        if (d)
                closedir(d);
        return n;
}

static void submit(const char *text) {
        json_error_t je;
        json_t *spec = json_loads(text, 0, &je);
        if (!spec)
                fail_msg("bad test spec: %s", je.text);
        struct lg_error e = {0};
        struct lg_resource *r = NULL;
        if (lg_jobs_submit(jobs, "default", spec, &r, &e) < 0)
                fail_msg("submit: %s", e.msg);
        json_decref(spec);
        lg_resource_free(r);
}

static void read_log(const char *name, const char *role, unsigned index, char *buf, size_t cap) {
        char path[1024];
        assert_int_equal(lg_jobs_log_path(jobs, "default", name, role, index, path, sizeof(path)), 0);
        FILE *f = fopen(path, "r");
        buf[0] = '\0';
        if (!f)
                return;
        size_t n = fread(buf, 1, cap - 1, f);
        buf[n] = '\0';
        fclose(f);
}

static const json_t *role_of(const json_t *st, const char *kind, unsigned index, unsigned attempt) {
        size_t i;
        const json_t *x;
        json_array_foreach(json_object_get(st, "roles"), i, x) if (
                !strcmp(json_string_value(json_object_get(x, "role")), kind) &&
                json_integer_value(json_object_get(x, "index")) == index &&
                json_integer_value(json_object_get(x, "attempt")) == attempt) return x;
        return NULL;
}

static void jobs_start_on(lg_net *net) {
        struct lg_error e = {0};
        if (lg_agent_local_new(&loop, state_root, net, &agent, &e) < 0)
                fail_msg("agent: %s", e.msg);
        struct lg_jobs_config cfg = {.loop = &loop,
                                     .store = store,
                                     .agent = agent,
                                     .net = net,
                                     .packages_dir = packages_dir,
                                     .runtimes_dir = runtimes_dir,
                                     .run_dir = run_dir,
                                     .jobs_dir = jobs_dir,
                                     .cpu_capacity_millis = cpu_cap,
                                     .warm = net ? 2 : 0, /* the dask test's roles come from a pool */
                                     .memory_capacity_bytes = 8ull << 30};
        if (lg_jobs_new(&cfg, &jobs, &e) < 0)
                fail_msg("jobs: %s", e.msg);
}

static void jobs_start(void) { jobs_start_on(NULL); }

static void jobs_stop(bool detach) {
        if (!jobs)
                return;
        if (detach)
                lg_jobs_detach_all(jobs);
        lg_jobs_free(jobs);
        jobs = NULL;
        lg_agent_free(agent);
        agent = NULL;
        uv_run(&loop, UV_RUN_NOWAIT);
}

/* 4 indexes, 2 at a time; index 2 fails its first attempt (exit 3) and
 * succeeds the second. Each index's environment and log; the failed
 * attempt and the retry in the status; usage metered per role. */
static void test_indexed_retry(void **state) {
        (void) state;
        submit("{\"name\": \"ix\", \"engine\": \"indexed\", \"completions\": 4, \"parallelism\": 2, \"retries\": 2,"
               " \"executors\": {\"cpu\": \"500m\", \"memory\": \"64Mi\"}, \"env\": {\"GREETING\": \"hi\"},"
               " \"command\": [\"sh\", \"-c\", \"echo $GREETING index=$JOB_COMPLETION_INDEX/$LEGION_JOB_INDEX "
               "attempt=$LEGION_JOB_ATTEMPT role=$LEGION_ROLE job=$LEGION_JOB_NAME; "
               "if [ $JOB_COMPLETION_INDEX = 2 ] && [ $LEGION_JOB_ATTEMPT = 0 ]; then echo boom; exit 3; fi\"]}");
        json_t *st = wait_for("ix", finished, NULL);
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Succeeded");
        assert_string_equal(json_string_value(json_object_get(st, "reason")), "Completed");
        const json_t *ix = json_object_get(st, "indexed");
        assert_int_equal(json_integer_value(json_object_get(ix, "completions")), 4);
        assert_int_equal(json_integer_value(json_object_get(ix, "succeeded")), 4);
        assert_int_equal(json_integer_value(json_object_get(ix, "failed")), 1);
        assert_int_equal(json_integer_value(json_object_get(ix, "active")), 0);
        assert_int_equal(json_array_size(json_object_get(st, "roles")), 5);
        const json_t *failed = role_of(st, "index", 2, 0), *retried = role_of(st, "index", 2, 1);
        assert_non_null(failed);
        assert_non_null(retried);
        assert_string_equal(json_string_value(json_object_get(failed, "exit")), "Exited(3)");
        assert_string_equal(json_string_value(json_object_get(retried, "exit")), "Exited(0)");
        assert_int_equal(json_integer_value(json_object_get(retried, "cpuMillis")), 500);
        assert_non_null(json_object_get(retried, "startedAt"));
        assert_non_null(json_object_get(st, "startedAt"));
        /* Metering: 5 instances, each at least 1 s of 0.5 vCPU and 64 MiB. */
        const json_t *u = json_object_get(st, "usage");
        assert_true(json_integer_value(json_object_get(u, "seconds")) >= 5);
        assert_true(json_number_value(json_object_get(u, "vcpuSeconds")) >= 2.5);
        assert_true(json_number_value(json_object_get(u, "memoryGiBSeconds")) >= 5 * 0.0625 - 1e-9);
        assert_true(json_integer_value(json_object_get(json_object_get(json_object_get(u, "byRole"), "index"),
                                                       "seconds")) >= 5);
        char log[4096];
        read_log("ix", "index", 1, log, sizeof(log));
        assert_non_null(strstr(log, "hi index=1/1 attempt=0 role=index job=ix"));
        read_log("ix", "index", 2, log, sizeof(log));
        assert_non_null(strstr(log, "boom"));
        assert_non_null(strstr(log, "--- attempt 1 ---\nhi index=2/2 attempt=1"));
        assert_int_equal(lg_jobs_log_active(jobs, "default", "ix", "index", 2), 0);
        char path[512];
        assert_int_equal(lg_jobs_log_path(jobs, "default", "ix", "index", 4, path, sizeof(path)), -ENOENT);
        assert_int_equal(lg_jobs_log_path(jobs, "default", "ix", "driver", 0, path, sizeof(path)), -ENOENT);
        assert_int_equal(sandboxes_left(), 0);
        json_decref(st);
        struct lg_error e = {0};
        assert_int_equal(lg_jobs_delete(jobs, "default", "ix", &e), 0);
        assert_null(job_status("ix"));
        assert_int_equal(lg_jobs_log_path(jobs, "default", "ix", "index", 1, path, sizeof(path)), -ENOENT);
        char dir[600];
        snprintf(dir, sizeof(dir), "%s/default/ix", jobs_dir);
        assert_int_equal(access(dir, F_OK), -1); /* the logs went with the job */
}

/* An index that always fails: retried `retries` times, then the job fails
 * with BackoffLimitExceeded and the other running index is deleted. */
static void test_indexed_backoff_limit(void **state) {
        (void) state;
        submit("{\"name\": \"bl\", \"engine\": \"indexed\", \"completions\": 2, \"parallelism\": 2, \"retries\": 1,"
               " \"executors\": {\"cpu\": \"100m\", \"memory\": \"32Mi\"},"
               " \"command\": [\"sh\", \"-c\", \"if [ $JOB_COMPLETION_INDEX = 0 ]; then exit 7; fi; sleep 100\"]}");
        json_t *st = wait_for("bl", finished, NULL);
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Failed");
        assert_string_equal(json_string_value(json_object_get(st, "reason")), "BackoffLimitExceeded");
        assert_string_equal(json_string_value(json_object_get(st, "message")), "index 0 failed 2 times: Exited(7)");
        const json_t *other = role_of(st, "index", 1, 0);
        assert_string_equal(json_string_value(json_object_get(other, "state")), "Deleted");
        assert_null(role_of(st, "index", 0, 2));
        assert_int_equal(sandboxes_left(), 0);
        json_decref(st);
}

/* Stop while running: every index deleted, Stopped with the reason. */
static void test_stop_running(void **state) {
        (void) state;
        submit("{\"name\": \"st\", \"engine\": \"indexed\", \"completions\": 3, \"parallelism\": 3,"
               " \"executors\": {\"cpu\": \"100m\", \"memory\": \"32Mi\"}, \"command\": [\"sleep\", \"100\"]}");
        json_decref(wait_for("st", wait_kit_phase_is, "Running"));
        struct lg_error e = {0};
        assert_int_equal(lg_jobs_stop(jobs, "default", "st", NULL, &e), 0);
        json_t *st = wait_for("st", finished, NULL);
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Stopped");
        assert_string_equal(json_string_value(json_object_get(st, "reason")), "Stopped");
        assert_string_equal(json_string_value(json_object_get(st, "message")), "stopped by the user");
        size_t i;
        const json_t *x;
        json_array_foreach(json_object_get(st, "roles"), i, x)
                assert_string_equal(json_string_value(json_object_get(x, "state")), "Deleted");
        assert_int_equal(sandboxes_left(), 0);
        /* Again: nothing more happens. */
        assert_int_equal(lg_jobs_stop(jobs, "default", "st", "again", &e), 0);
        json_decref(st);
        st = job_status("st");
        assert_string_equal(json_string_value(json_object_get(st, "message")), "stopped by the user");
        json_decref(st);
        assert_int_equal(lg_jobs_stop(jobs, "default", "nosuch", NULL, &e), -ENOENT);
}

static void test_deadline(void **state) {
        (void) state;
        submit("{\"name\": \"dl\", \"engine\": \"indexed\", \"completions\": 1, \"maxDurationSeconds\": 1,"
               " \"executors\": {\"cpu\": \"100m\", \"memory\": \"32Mi\"}, \"command\": [\"sleep\", \"100\"]}");
        json_t *st = wait_for("dl", finished, NULL);
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Failed");
        assert_string_equal(json_string_value(json_object_get(st, "reason")), "DeadlineExceeded");
        assert_int_equal(sandboxes_left(), 0);
        json_decref(st);
}

struct seen {
        int calls;
        char last_phase[32];
        bool final_seen;
};

static void on_watch(const struct lg_resource *job, void *ud) {
        struct seen *s = ud;
        s->calls++;
        const char *p = json_string_value(json_object_get(job->status, "phase"));
        snprintf(s->last_phase, sizeof(s->last_phase), "%s", p ? p : "");
        s->final_seen = s->final_seen || (p && !strcmp(p, "Stopped"));
}

/* The node gives jobs 4 vCPU here: more is refused; a job that does not
 * fit what is free waits (waitingFor), can be stopped while pending, and
 * is admitted when the capacity comes back. */
static void test_capacity(void **state) {
        (void) state;
        json_error_t je;
        struct lg_error e = {0};
        json_t *big = json_loads("{\"name\": \"big\", \"engine\": \"indexed\", \"completions\": 5, \"command\": [\"true\"],"
                                 " \"executors\": {\"cpu\": \"1\", \"memory\": \"32Mi\"}}",
                                 0, &je);
        assert_int_equal(lg_jobs_submit(jobs, "default", big, NULL, &e), -E2BIG);
        assert_non_null(strstr(e.msg, "job needs 5 vCPU"));
        assert_non_null(strstr(e.msg, "at most 4 vCPU"));
        json_decref(big);
        assert_null(job_status("big"));

        submit("{\"name\": \"hog\", \"engine\": \"indexed\", \"completions\": 3, \"command\": [\"sleep\", \"100\"],"
               " \"executors\": {\"cpu\": \"1\", \"memory\": \"32Mi\"}}");
        submit("{\"name\": \"wait1\", \"engine\": \"indexed\", \"completions\": 2, \"command\": [\"true\"],"
               " \"executors\": {\"cpu\": \"1\", \"memory\": \"32Mi\"}}");
        submit("{\"name\": \"wait2\", \"engine\": \"indexed\", \"completions\": 1, \"command\": [\"true\"],"
               " \"executors\": {\"cpu\": \"1\", \"memory\": \"32Mi\"}}");
        json_t *st = wait_for("wait1", has_waiting, NULL);
        assert_string_equal(json_string_value(json_object_get(st, "waitingFor")),
                            "2 vCPU and 64 MiB (free now: 1 vCPU, 7.91 GiB)");
        json_decref(st);
        /* wait2 fits what is free, but does not overtake wait1. */
        st = wait_for("wait2", wait_kit_phase_is, "Pending");
        json_decref(st);
        struct seen seen = {0};
        lg_jobs_watch *w = NULL;
        assert_int_equal(lg_jobs_watch_add(jobs, "default", "wait1", on_watch, &seen, &w, &e), 0);
        assert_int_equal(lg_jobs_stop(jobs, "default", "wait1", "client disconnected", &e), 0);
        assert_int_equal(seen.calls, 0); /* told from the loop, never from inside the call */
        st = wait_for("wait1", finished, NULL);
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Stopped");
        assert_string_equal(json_string_value(json_object_get(st, "message")), "client disconnected");
        assert_null(json_object_get(st, "waitingFor"));
        assert_int_equal(json_array_size(json_object_get(st, "roles")), 0);
        json_decref(st);
        json_decref(wait_for("wait2", finished, NULL));
        st = job_status("hog"); /* wait2 went first once wait1 left the queue (hog's sandboxes may still start) */
        assert_null(json_object_get(st, "finishedAt"));
        json_decref(st);
        assert_true(seen.final_seen);
        assert_string_equal(seen.last_phase, "Stopped");
        lg_jobs_watch_remove(w);
        assert_int_equal(lg_jobs_stop(jobs, "default", "hog", NULL, &e), 0);
        json_decref(wait_for("hog", finished, NULL));
        st = job_status("wait2");
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Succeeded");
        json_decref(st);
        assert_int_equal(sandboxes_left(), 0);
}

/* legiond goes down mid-job (its roles left running) and comes back: the
 * new lg_jobs adopts them, the job goes on to its real end. */
static void test_restart(void **state) {
        (void) state;
        submit("{\"name\": \"rs\", \"engine\": \"indexed\", \"completions\": 2, \"parallelism\": 1,"
               " \"executors\": {\"cpu\": \"100m\", \"memory\": \"32Mi\"},"
               " \"command\": [\"sh\", \"-c\", \"sleep 1; echo done $JOB_COMPLETION_INDEX\"]}");
        json_decref(wait_for("rs", wait_kit_phase_is, "Running"));
        jobs_stop(true);
        unsigned left = sandboxes_left();
        jobs_start(); /* before any assertion: the next tests need the jobs */
        assert_int_equal(left, 1);
        struct lg_error e = {0};
        if (lg_jobs_restore(jobs, &e) < 0)
                fail_msg("restore: %s", e.msg);
        json_t *st = wait_for("rs", finished, NULL);
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Succeeded");
        assert_int_equal(json_array_size(json_object_get(st, "roles")), 2);
        char log[1024];
        read_log("rs", "index", 0, log, sizeof(log));
        assert_string_equal(log, "done 0\n");
        assert_int_equal(sandboxes_left(), 0);
        json_decref(st);
}


/* ---- dask, on a network of the test's own ---------------------------------------------- */

#define NET_TABLE "lg_test_jobs"
#define NET_PREFIX "lgjb" /* test-jobpool has lgtj */
#define NET_CIDR "10.202.19.0/28" /* test-jobs-masters has .14, test-jobpool .17 */
#define PKG "abababababababababababababababababababababababababababababababab"

static lg_net *net;

static void write_file(const char *dir, const char *name, const char *text) {
        char path[1024];
        assert_int_equal(lg_mkdir_p(dir, 0755), 0);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

/* After the test, passed or failed: its jobs' sandboxes, then nothing of
 * its network stays. */
static int net_teardown(void **state) {
        (void) state;
        jobs_stop(false);
        struct lg_error e = {0};
        if (net && lg_net_teardown(net, &e) < 0)
                fprintf(stderr, "net teardown: %s\n", e.msg);
        lg_net_free(net);
        net = NULL;
        jobs_start();
        return 0;
}

static json_int_t default_ready_now(void) {
        json_int_t ready = 0;
        json_t *pools = lg_jobs_pools_json(jobs);
        size_t k;
        json_t *p;
        json_array_foreach(pools, k, p) if (!strcmp(json_string_value(json_object_get(p, "name")), "default"))
                ready = json_integer_value(json_object_get(p, "readyNow"));
        json_decref(pools);
        return ready;
}

static bool default_has_ready(const void *n) { return default_ready_now() >= *(const json_int_t *) n; }

/* The pool "default" has n sandboxes ready (at most 120 s). */
static void wait_pool_ready(json_int_t n) { assert_true(wait_kit_pump(&loop, default_has_ready, &n)); }

static void on_signalled(lg_agent_req *req) { *(bool *) req->data = true; }

/* The job runs (its driver started) and its role arg (index 0) too. */
static bool role_running(const json_t *st, const void *arg) {
        const json_t *r = role_of(st, arg, 0, 0);
        return wait_kit_phase_is(st, "Running") && r &&
               !strcmp(json_string_value(json_object_get(r, "state")), "Running");
}

/* A real Dask computation: the job's own dask-scheduler, 2 dask-worker
 * executors and the driver running app.py from the job's package, a
 * dask.array sum computed on the executors; then a driver that raises
 * (DriverFailed with the exception's line), an executor and a master
 * killed under a running driver (ExecutorLost, MasterLost). Nothing of
 * any is left. */
static void test_dask(void **state) {
        (void) state;
        if (access("/usr/bin/dask-scheduler", X_OK) < 0 || access("/usr/bin/dask-worker", X_OK) < 0)
                skip();
        net = test_net_open(NET_CIDR, NET_TABLE, NET_PREFIX, true, "default");
        struct lg_error e = {0};
        jobs_stop(false);
        jobs_start_on(net);

        char dir[600];
        snprintf(dir, sizeof(dir), "%s/%s", packages_dir, PKG);
        write_file(dir, "helper.py", "def square(x):\n    return x * x\n");
        write_file(dir, "app.py",
                   "import sys\n"
                   "import dask.array as da\n"
                   "from dask.distributed import Client\n"
                   "import helper\n"
                   "c = Client()\n"
                   "print('workers', len(c.scheduler_info()['workers']))\n"
                   "x = da.ones((400, 400), chunks=(100, 100))\n"
                   "print('sum', int(x.sum().compute()))\n"
                   "print('squares', sum(c.gather(c.map(helper.square, range(10)))))\n"
                   "print('argv', sys.argv[1:])\n"
                   "if sys.argv[1:] == ['fail']:\n"
                   "    raise ValueError('boom')\n");
        assert_true(lg_store_blob_put(store, PKG, 100, "application/octet-stream", NULL, &e) >= 0);
        wait_pool_ready(2); /* so that the first job's roles can come warm */
        submit("{\"name\": \"dk\", \"file\": \"app.py\", \"package\": \"sha256:" PKG "\", \"args\": [\"a\", \"b\"],"
               " \"executors\": {\"count\": 2, \"cpu\": \"500m\", \"memory\": \"512Mi\"},"
               " \"driver\": {\"cpu\": \"500m\", \"memory\": \"512Mi\"},"
               " \"masterResources\": {\"cpu\": \"500m\", \"memory\": \"512Mi\"}}");
        json_t *st = wait_for("dk", finished, NULL);
        char log[8192];
        read_log("dk", "driver", 0, log, sizeof(log));
        if (strcmp(json_string_value(json_object_get(st, "phase")), "Succeeded")) {
                if (getenv("LG_TEST_DEBUG_NET"))
                        system("ip -4 route | grep 10.202.19; ip -br link | grep lgjb; nft list table inet " NET_TABLE);
                char *s = json_dumps(st, JSON_INDENT(1));
                fail_msg("dask job: %s\ndriver log:\n%s", s, log);
        }
        assert_non_null(strstr(log, "workers 2\n"));
        assert_non_null(strstr(log, "sum 160000\n"));
        assert_non_null(strstr(log, "squares 285\n"));
        assert_non_null(strstr(log, "argv ['a', 'b']\n"));
        const json_t *m = json_object_get(st, "master");
        assert_int_equal(strncmp(json_string_value(json_object_get(m, "address")), "tcp://10.202.19.", 16), 0);
        assert_int_equal(json_array_size(json_object_get(st, "roles")), 4); /* master, driver, 2 executors */
        size_t i, warm = 0;
        const json_t *x;
        json_array_foreach(json_object_get(st, "roles"), i, x) warm += json_is_true(json_object_get(x, "warm"));
        assert_true(warm >= 1); /* the pool had 2 ready (or being made) */
        read_log("dk", "executor", 1, log, sizeof(log));
        assert_non_null(strstr(log, "executor-1"));
        read_log("dk", "master", 0, log, sizeof(log));
        assert_non_null(strstr(log, "Scheduler at"));
        const json_t *by = json_object_get(json_object_get(st, "usage"), "byRole");
        assert_non_null(json_object_get(by, "master"));
        assert_non_null(json_object_get(by, "executor"));
        assert_non_null(json_object_get(by, "driver"));
        assert_int_equal(sandboxes_left(), 0);
        json_decref(st);

        submit("{\"name\": \"dkf\", \"file\": \"app.py\", \"package\": \"sha256:" PKG "\", \"args\": [\"fail\"],"
               " \"executors\": {\"count\": 1, \"cpu\": \"500m\", \"memory\": \"512Mi\"},"
               " \"driver\": {\"cpu\": \"500m\", \"memory\": \"512Mi\"},"
               " \"masterResources\": {\"cpu\": \"500m\", \"memory\": \"512Mi\"}}");
        st = wait_for("dkf", finished, NULL);
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Failed");
        assert_string_equal(json_string_value(json_object_get(st, "reason")), "DriverFailed");
        assert_string_equal(json_string_value(json_object_get(st, "message")), "driver exited with 1: ValueError: boom");
        assert_int_equal(sandboxes_left(), 0);
        json_decref(st);

        /* An executor, then a master, killed under a running driver. */
        write_file(dir, "sleeper.py", "import time\nprint('sleeping')\ntime.sleep(3600)\n");
        const char *victims[][3] = {{"lost-ex", "executor", "ExecutorLost"}, {"lost-m", "master", "MasterLost"}};
        for (size_t v = 0; v < ARRAY_SIZE(victims); v++) {
                char spec[1024];
                snprintf(spec, sizeof(spec),
                         "{\"name\": \"%s\", \"file\": \"sleeper.py\", \"package\": \"sha256:" PKG "\","
                         " \"executors\": {\"count\": 1, \"cpu\": \"500m\", \"memory\": \"512Mi\"},"
                         " \"driver\": {\"cpu\": \"500m\", \"memory\": \"512Mi\"},"
                         " \"masterResources\": {\"cpu\": \"500m\", \"memory\": \"512Mi\"}}",
                         victims[v][0]);
                submit(spec);
                st = wait_for(victims[v][0], role_running, victims[v][1]);
                const json_t *r = role_of(st, victims[v][1], 0, 0);
                static lg_agent_req kill; /* until its callback */
                bool signalled = false;
                kill = (lg_agent_req){.data = &signalled};
                assert_int_equal(lg_agent_signal(agent, &kill, json_string_value(json_object_get(r, "sandbox")),
                                                 SIGKILL, on_signalled),
                                 0);
                json_decref(st);
                st = wait_for(victims[v][0], finished, NULL);
                while (!signalled) /* (-ESRCH: it came after the destroy its kill caused) */
                        uv_run(&loop, UV_RUN_ONCE);
                assert_string_equal(json_string_value(json_object_get(st, "phase")), "Failed");
                assert_string_equal(json_string_value(json_object_get(st, "reason")), victims[v][2]);
                assert_non_null(strstr(json_string_value(json_object_get(st, "message")), "KILL"));
                assert_int_equal(sandboxes_left(), 0);
                json_decref(st);
        }
        /* The warm pool's sandboxes go with the jobs: every address is free. */
        jobs_stop(false);
        struct lg_net_stats ns;
        assert_int_equal(lg_net_stats(net, &ns, &e), 0);
        assert_int_equal(ns.addresses_used, 0);
}

/* Without the node network the dask engine is refused. */
static void test_dask_needs_network(void **state) {
        (void) state;
        json_error_t je;
        struct lg_error e = {0};
        json_t *spec = json_loads("{\"command\": [\"python3\", \"-c\", \"pass\"]}", 0, &je);
        assert_int_equal(lg_jobs_submit(jobs, "default", spec, NULL, &e), -ENETUNREACH);
        assert_non_null(strstr(e.msg, "--network on"));
        json_decref(spec);
}

/* ---- fixture -------------------------------------------------------------------------- */

static int setup(void **state) {
        (void) state;
        snprintf(tmp, sizeof(tmp), "/tmp/lg-test-jobs-%d", (int) getpid());
        lg_rm_rf(tmp);
        assert_int_equal(lg_mkdir_p(tmp, 0755), 0);
        snprintf(run_dir, sizeof(run_dir), "%s/run", tmp);
        snprintf(jobs_dir, sizeof(jobs_dir), "%s/jobs", tmp);
        snprintf(state_root, sizeof(state_root), "%s/" JOBS_SANDBOX_DIR, run_dir);
        snprintf(packages_dir, sizeof(packages_dir), "%s/packages", tmp);
        const char *src = getenv("LG_SOURCE_ROOT");
        snprintf(runtimes_dir, sizeof(runtimes_dir), "%s/runtimes", src ? src : ".");
        char path[512];
        struct lg_error e = {0};
        snprintf(path, sizeof(path), "%s/legion.db", tmp);
        struct lg_store_options so = {.sync = LG_STORE_SYNC_NORMAL};
        if (lg_store_open(path, &so, &store, &e) < 0)
                fail_msg("store: %s", e.msg);
        uv_loop_init(&loop);
        jobs_start();
        return 0;
}

static int teardown(void **state) {
        (void) state;
        jobs_stop(false);
        uv_loop_close(&loop);
        lg_store_close(store);
        sandbox_cleanup(state_root, getenv("LG_TEST_KEEP") ? NULL : tmp, cg_parent);
        return 0;
}

int main(void) {
        if (getenv("LG_TEST_FILTER")) /* one test by name, to run it again and again */
                cmocka_set_test_filter(getenv("LG_TEST_FILTER"));
        const struct CMUnitTest spec_tests[] = {
                cmocka_unit_test(test_spec_defaults),
                cmocka_unit_test(test_spec_hostile),
        };
        int failed = cmocka_run_group_tests_name("spec", spec_tests, NULL, NULL);
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: the lifecycle tests need root (sandboxes)\n");
                return failed ? 1 : 77;
        }
        snprintf(cg_parent, sizeof(cg_parent), "legion-test-jobs-%d", (int) getpid());
        setenv("LEGION_CGROUP_PARENT", cg_parent, 0);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_indexed_retry),
                cmocka_unit_test(test_indexed_backoff_limit),
                cmocka_unit_test(test_stop_running),
                cmocka_unit_test(test_deadline),
                cmocka_unit_test(test_capacity),
                cmocka_unit_test(test_restart),
                cmocka_unit_test(test_dask_needs_network),
                cmocka_unit_test_teardown(test_dask, net_teardown),
        };
        failed += cmocka_run_group_tests_name("lifecycle", tests, setup, teardown);
        return failed ? 1 : 0;
}
