/* The pod manager against real sandboxes, run as root: a temporary store
 * and image store, test images made from the host's busybox-static (layer
 * tar, config and manifest committed with the image store's ingest API),
 * Pod objects created as the API would (spec defaulted by
 * lg_podspec_validate), lg_pods_sync, and the loop run until the stored
 * status says what we wait for. Skips (77) when not root or without
 * /bin/busybox. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "image/image-internal.h"
#include "net/net.h"
#include "pod/pod.h"
#include "tenant/tenant.h"
#include "wait-kit.h"

static char tmp[256];
static lg_store *store;
static lg_image_store *images;
static uv_loop_t loop;
static lg_pods *pods;

static const char *const applets[] = {"sh", "true", "false", "echo", "cat", "sleep", "id", "env", "pwd", "nc",
                                      "httpd", "wget", "head", "tail", "readlink", "seq", "mkdir"};

/* ---- images ----------------------------------------------------------------- */

static char *read_all(const char *path, size_t *len) {
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = malloc((size_t) n + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t) n, f), (size_t) n);
        buf[n] = '\0';
        fclose(f);
        *len = (size_t) n;
        return buf;
}

static void put(const void *buf, size_t len, char digest[LG_DIGEST_MAX]) {
        struct lg_error e = {0};
        int r = lg_image_blob_put(images, buf, len, digest, &e);
        if (r < 0)
                fail_msg("blob put: %s", e.msg);
}

/* A busybox layer (plus etc/passwd and etc/group), committed as name with
 * the given config fields (a JSON object text). */
static void make_image(const char *name, const char *config_fields) {
        char root[512], cmd[2048], path[600];
        snprintf(root, sizeof(root), "%s/layer-src", tmp);
        lg_rm_rf(root);
        snprintf(cmd, sizeof(cmd), "mkdir -p %s/bin %s/etc %s/tmp && cp /bin/busybox %s/bin/busybox", root, root, root,
                 root);
        assert_int_equal(system(cmd), 0);
        for (size_t i = 0; i < sizeof(applets) / sizeof(applets[0]); i++) {
                snprintf(path, sizeof(path), "%s/bin/%s", root, applets[i]);
                assert_int_equal(symlink("busybox", path), 0);
        }
        snprintf(path, sizeof(path), "%s/etc/passwd", root);
        FILE *f = fopen(path, "w");
        fputs("root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n", f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/etc/group", root);
        f = fopen(path, "w");
        fputs("root:x:0:\napp:x:2345:\nstaff:x:50:\n", f);
        fclose(f);
        snprintf(cmd, sizeof(cmd), "tar -C %s --numeric-owner --owner=0 --group=0 -cf %s/layer.tar .", root, tmp);
        assert_int_equal(system(cmd), 0);
        snprintf(path, sizeof(path), "%s/layer.tar", tmp);
        size_t len;
        char *layer = read_all(path, &len);
        char ld[LG_DIGEST_MAX], cd[LG_DIGEST_MAX], md[LG_DIGEST_MAX];
        put(layer, len, ld);
        size_t layer_len = len;
        free(layer);

        json_error_t je;
        json_t *fields = json_loads(config_fields, 0, &je);
        assert_non_null(fields);
        json_t *config = json_pack("{s:s, s:s, s:o, s:{s:s, s:[s]}}", "architecture", "amd64", "os", "linux", "config",
                                   fields, "rootfs", "type", "layers", "diff_ids", ld);
        char *ctext = json_dumps(config, JSON_COMPACT);
        put(ctext, strlen(ctext), cd);
        json_t *manifest = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:[{s:s, s:s, s:I}]}", "schemaVersion", 2,
                                     "mediaType", "application/vnd.oci.image.manifest.v1+json", "config", "mediaType",
                                     "application/vnd.oci.image.config.v1+json", "digest", cd, "size",
                                     (json_int_t) strlen(ctext), "layers", "mediaType",
                                     "application/vnd.oci.image.layer.v1.tar", "digest", ld, "size",
                                     (json_int_t) layer_len);
        char *mtext = json_dumps(manifest, JSON_COMPACT);
        put(mtext, strlen(mtext), md);
        struct lg_error e = {0};
        struct lg_image *img = NULL;
        if (lg_image_commit(images, md, name, NULL, NULL, &img, &e) < 0)
                fail_msg("commit %s: %s", name, e.msg);
        lg_image_free(img);
        free(ctext);
        free(mtext);
        json_decref(config);
        json_decref(manifest);
}

/* ---- pods ------------------------------------------------------------------- */

static void create_pod(const char *name, const char *spec_text) {
        json_error_t je;
        json_t *spec = json_loads(spec_text, 0, &je);
        if (!spec)
                fail_msg("bad test spec: %s", je.text);
        json_t *def = NULL;
        struct lg_error e = {0};
        if (lg_podspec_validate(spec, &def, &e) < 0)
                fail_msg("spec: %s", e.msg);
        json_t *doc = json_pack("{s:o}", "spec", def);
        struct lg_resource *r = NULL;
        if (lg_store_create(store, LG_KEY("Pod", "default", name), NULL, doc, NULL, &r, &e) < 0)
                fail_msg("create: %s", e.msg);
        json_decref(doc);
        json_decref(spec);
        assert_int_equal(lg_pods_sync(pods, r, &e), 0);
        lg_resource_free(r);
}

/* As the API does for DELETE: deletionTimestamp and grace in the status doc. */
static void delete_pod(const char *name, int grace) {
        struct lg_resource *r = NULL;
        assert_int_equal(lg_store_get(store, LG_KEY("Pod", "default", name), &r, NULL), 0);
        json_t *doc = json_deep_copy(r->status);
        json_object_set_new(doc, "deletionTimestamp", json_string("2026-01-01T00:00:00Z"));
        json_object_set_new(doc, "deletionGracePeriodSeconds", json_integer(grace));
        struct lg_resource *out = NULL;
        assert_true(lg_store_update_status(store, LG_KEY("Pod", "default", name), 0, doc, &out, NULL) >= 0);
        json_decref(doc);
        lg_resource_free(r);
        struct lg_error e = {0};
        assert_int_equal(lg_pods_sync(pods, out, &e), 0);
        lg_resource_free(out);
}

static void on_tick(uv_timer_t *t) { (void) t; }

/* Status of the pod, or NULL when it is gone. Owned by the caller. */
static json_t *pod_status(const char *name) {
        struct lg_resource *r = NULL;
        if (lg_store_get(store, LG_KEY("Pod", "default", name), &r, NULL) < 0)
                return NULL;
        json_t *st = json_object_get(r->status, "status");
        json_t *ret = st ? json_deep_copy(st) : json_object();
        lg_resource_free(r);
        return ret;
}

static const json_t *ctr_status(const json_t *st, const char *name) {
        size_t i;
        const json_t *x;
        json_array_foreach(json_object_get(st, "containerStatuses"), i, x) if (!strcmp(
                json_string_value(json_object_get(x, "name")), name)) return x;
        return NULL;
}


/* The pod's status once pred holds for it (NULL = gone). */
static json_t *wait_for(const char *name, wait_kit_pred_fn pred, const void *arg) {
        return wait_kit_status(&loop, "pod", name, pod_status, pred, arg);
}

static bool gone(const json_t *st, const void *arg) {
        (void) arg;
        return st == NULL;
}

/* Delete a pod with grace seconds and wait until it is gone. */
static void delete_and_wait(const char *name, int grace) {
        delete_pod(name, grace);
        assert_null(wait_for(name, gone, NULL));
}

static char *read_log(const char *pod, const char *ctr, bool previous) {
        char path[1024];
        assert_int_equal(lg_pods_log_path(pods, "default", pod, ctr, previous, path, sizeof(path)), 0);
        size_t len;
        return read_all(path, &len);
}

static const json_t *term_of(const json_t *st, const char *ctr) {
        return json_object_get(json_object_get(ctr_status(st, ctr), "state"), "terminated");
}

static int exit_code(const json_t *st, const char *ctr) {
        const json_t *t = term_of(st, ctr);
        assert_non_null(t);
        return (int) json_integer_value(json_object_get(t, "exitCode"));
}

static const char *term_reason(const json_t *st, const char *ctr) {
        return json_string_value(json_object_get(term_of(st, ctr), "reason"));
}

/* ---- tests ------------------------------------------------------------------ */

static void test_completed_and_logs(void **state) {
        (void) state;
        create_pod("ok", "{\"restartPolicy\": \"Never\", \"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\","
                         " \"command\": [\"sh\", \"-c\", \"echo out; echo err >&2; echo again\"]}]}");
        json_t *st = wait_for("ok", wait_kit_phase_is, "Succeeded");
        assert_int_equal(exit_code(st, "c"), 0);
        assert_string_equal(term_reason(st, "c"), "Completed");
        assert_string_equal(json_string_value(json_object_get(st, "qosClass")), "BestEffort");
        const json_t *cs = ctr_status(st, "c");
        assert_non_null(strstr(json_string_value(json_object_get(cs, "containerID")), "legion://"));
        assert_non_null(strstr(json_string_value(json_object_get(cs, "imageID")), "sha256:"));
        char *log = read_log("ok", "c", false);
        assert_string_equal(log, "out\nerr\nagain\n");
        free(log);
        assert_int_equal(lg_pods_container_active(pods, "default", "ok", "c"), 0);
        char path[256];
        assert_int_equal(lg_pods_log_path(pods, "default", "ok", "nope", false, path, sizeof(path)), -ENOENT);
        json_decref(st);
        delete_pod("ok", 30);
        st = wait_for("ok", gone, NULL);
}

static void test_failed_exit_code(void **state) {
        (void) state;
        create_pod("bad", "{\"restartPolicy\": \"Never\", \"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\","
                          " \"command\": [\"sh\", \"-c\", \"exit 3\"]}]}");
        json_t *st = wait_for("bad", wait_kit_phase_is, "Failed");
        assert_int_equal(exit_code(st, "c"), 3);
        assert_string_equal(term_reason(st, "c"), "Error");
        json_decref(st);
        delete_and_wait("bad", 0);
}

static void test_oom(void **state) {
        (void) state;
        create_pod("oom", "{\"restartPolicy\": \"Never\", \"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\","
                          " \"command\": [\"tail\", \"/dev/zero\"],"
                          " \"resources\": {\"limits\": {\"memory\": \"16Mi\"}}}]}");
        json_t *st = wait_for("oom", wait_kit_phase_is, "Failed");
        assert_int_equal(exit_code(st, "c"), 137);
        assert_string_equal(term_reason(st, "c"), "OOMKilled");
        assert_string_equal(json_string_value(json_object_get(st, "qosClass")), "Burstable");
        json_decref(st);
        delete_and_wait("oom", 0);
}

static bool restarted_twice(const json_t *st, const void *arg) {
        (void) arg;
        const json_t *cs = ctr_status(st, "c");
        return json_integer_value(json_object_get(cs, "restartCount")) >= 2 &&
               json_object_get(json_object_get(cs, "state"), "waiting") &&
               json_object_get(json_object_get(cs, "lastState"), "terminated");
}

static void test_restart_backoff(void **state) {
        (void) state;
        create_pod("crash", "{\"restartPolicy\": \"OnFailure\", \"containers\": [{\"name\": \"c\", \"image\": "
                            "\"test/bb:1\", \"command\": [\"sh\", \"-c\", \"echo run; exit 2\"]}]}");
        json_t *st = wait_for("crash", restarted_twice, NULL);
        const json_t *cs = ctr_status(st, "c");
        const json_t *w = json_object_get(json_object_get(cs, "state"), "waiting");
        assert_string_equal(json_string_value(json_object_get(w, "reason")), "CrashLoopBackOff");
        assert_non_null(strstr(json_string_value(json_object_get(w, "message")), "restarting failed container=c"));
        const json_t *last = json_object_get(json_object_get(cs, "lastState"), "terminated");
        assert_int_equal(json_integer_value(json_object_get(last, "exitCode")), 2);
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Running");
        assert_int_equal(lg_pods_container_active(pods, "default", "crash", "c"), 1);
        char *log = read_log("crash", "c", true);
        assert_string_equal(log, "run\n");
        free(log);
        json_decref(st);
        delete_and_wait("crash", 0);
}

static bool client_done(const json_t *st, const void *arg) {
        (void) arg;
        return term_of(st, "client") != NULL;
}

/* Two containers, one network and IPC namespace: the server binds port 80
 * without capabilities; the client reaches it on 127.0.0.1, and both see
 * the same namespaces. */
static void test_shared_namespaces(void **state) {
        (void) state;
        create_pod("duo",
                   "{\"restartPolicy\": \"Never\", \"containers\": ["
                   "{\"name\": \"server\", \"image\": \"test/bb:1\", \"command\": [\"sh\", \"-c\","
                   " \"mkdir -p /www && echo hi-from-server > /www/index.html && readlink /proc/self/ns/ipc && readlink /proc/self/ns/net && "
                   "exec httpd -f -p 80 -h /www\"]},"
                   "{\"name\": \"client\", \"image\": \"test/bb:1\", \"command\": [\"sh\", \"-c\","
                   " \"for i in $(seq 300); do wget -q -O - http://127.0.0.1:80/ && readlink /proc/self/ns/ipc && readlink /proc/self/ns/net && exit 0; sleep 0.1; "
                   "done; exit 1\"]}]}");
        json_t *st = wait_for("duo", client_done, NULL);
        char *log = read_log("duo", "client", false);
        if (exit_code(st, "client") != 0) {
                char *slog = read_log("duo", "server", false);
                fail_msg("client failed; server: `%s`, client: `%.300s`", slog, log);
        }
        assert_non_null(strstr(log, "hi-from-server"));
        char *slog = read_log("duo", "server", false);
        assert_non_null(strstr(slog, "ipc:["));
        assert_non_null(strstr(log, slog)); /* the same ipc and net namespaces */
        free(slog);
        free(log);
        json_decref(st);
        delete_and_wait("duo", 5);
}

static void test_deadline(void **state) {
        (void) state;
        create_pod("late", "{\"restartPolicy\": \"Always\", \"activeDeadlineSeconds\": 1, \"containers\": [{\"name\":"
                           " \"c\", \"image\": \"test/bb:1\", \"command\": [\"sleep\", \"1000\"]}]}");
        json_t *st = wait_for("late", wait_kit_phase_is, "Failed");
        assert_string_equal(json_string_value(json_object_get(st, "reason")), "DeadlineExceeded");
        assert_string_equal(json_string_value(json_object_get(st, "message")),
                            "Pod was active on the node longer than the specified deadline");
        assert_non_null(term_of(st, "c"));
        json_decref(st);
        delete_and_wait("late", 0);
}

static bool running(const json_t *st, const void *arg) {
        const json_t *cs = ctr_status(st, arg);
        return json_object_get(json_object_get(cs, "state"), "running") != NULL;
}

/* The last state of a deleted pod: the DELETED event's object. */
static json_t *last_status_of(const char *name) {
        struct lg_event_list ev = {0};
        assert_int_equal(lg_store_events_since(store, 0, "Pod", "default", 0, &ev, NULL), 0);
        json_t *ret = NULL;
        for (size_t i = 0; i < ev.n; i++)
                if (ev.items[i].type == LG_EVENT_DELETED && !strcmp(ev.items[i].object->name, name)) {
                        json_decref(ret);
                        ret = json_deep_copy(json_object_get(ev.items[i].object->status, "status"));
                }
        lg_event_list_free(&ev);
        assert_non_null(ret);
        return ret;
}

static bool log_has(const json_t *st, const void *arg) {
        (void) st;
        const char *const *a = arg;
        char path[1024];
        if (lg_pods_log_path(pods, "default", a[0], a[1], false, path, sizeof(path)) < 0)
                return false;
        char buf[4096];
        return lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) >= 0 && strstr(buf, a[2]);
}

/* Run the loop until the container's log holds text. */
static void wait_log(const char *pod, const char *ctr, const char *text) {
        const char *arg[] = {pod, ctr, text};
        json_decref(wait_for(pod, log_has, arg));
}

static void test_graceful_delete(void **state) {
        (void) state;
        /* Handles TERM: exits 0 on its own within the grace period. */
        create_pod("polite", "{\"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\", \"command\": [\"sh\", "
                             "\"-c\", \"trap 'echo bye; exit 0' TERM; echo up; while true; do sleep 0.1; done\"]}]}");
        json_decref(wait_for("polite", running, "c"));
        wait_log("polite", "c", "up");
        delete_and_wait("polite", 60);
        json_t *st = last_status_of("polite");
        if (exit_code(st, "c") != 0)
                fail_msg("polite: %s", json_dumps(st, JSON_INDENT(1)));
        json_decref(st);

        /* Ignores TERM: killed when the grace period ends. */
        create_pod("ignores-term", "{\"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\", \"command\": [\"sh\", "
                                   "\"-c\", \"trap '' TERM; echo up; while true; do sleep 0.1; done\"]}]}");
        json_decref(wait_for("ignores-term", running, "c"));
        wait_log("ignores-term", "c", "up");
        delete_and_wait("ignores-term", 1);
        st = last_status_of("ignores-term");
        assert_int_equal(exit_code(st, "c"), 137);
        json_decref(st);
        char dir[600];
        snprintf(dir, sizeof(dir), "%s/logs/default/ignores-term", tmp);
        assert_int_equal(access(dir, F_OK), -1);
}

static void test_image_user(void **state) {
        (void) state;
        create_pod("user", "{\"restartPolicy\": \"Never\", \"containers\": ["
                           "{\"name\": \"named\", \"image\": \"test/user:1\", \"command\": [\"sh\", \"-c\", \"id -u; id -g; id -G\"]},"
                           "{\"name\": \"numeric\", \"image\": \"test/uid:1\", \"command\": [\"sh\", \"-c\", \"id -u; id -g\"]}]}");
        json_t *st = wait_for("user", wait_kit_phase_is, "Succeeded");
        char *log = read_log("user", "named", false);
        assert_string_equal(log, "1234\n50\n50\n");
        free(log);
        log = read_log("user", "numeric", false);
        assert_string_equal(log, "1234\n2345\n");
        free(log);
        json_decref(st);
        delete_and_wait("user", 0);
}

static bool waiting_reason(const json_t *st, const void *arg) {
        const json_t *w = json_object_get(json_object_get(ctr_status(st, "c"), "state"), "waiting");
        const char *r = json_string_value(json_object_get(w, "reason"));
        return r && !strcmp(r, arg);
}

static void test_config_errors(void **state) {
        (void) state;
        create_pod("nouser", "{\"containers\": [{\"name\": \"c\", \"image\": \"test/nouser:1\", \"command\": [\"true\"]}]}");
        json_t *st = wait_for("nouser", waiting_reason, "CreateContainerConfigError");
        const json_t *w = json_object_get(json_object_get(ctr_status(st, "c"), "state"), "waiting");
        assert_non_null(strstr(json_string_value(json_object_get(w, "message")), "ghost"));
        assert_string_equal(json_string_value(json_object_get(st, "phase")), "Pending");
        json_decref(st);
        delete_and_wait("nouser", 30); /* nothing runs: goes at once */

        create_pod("nocmd", "{\"containers\": [{\"name\": \"c\", \"image\": \"test/nocmd:1\"}]}");
        st = wait_for("nocmd", waiting_reason, "CreateContainerError");
        w = json_object_get(json_object_get(ctr_status(st, "c"), "state"), "waiting");
        assert_non_null(strstr(json_string_value(json_object_get(w, "message")), "no command"));
        json_decref(st);
        delete_and_wait("nocmd", 0);

        /* Not in the store, policy Never: ErrImageNeverPull. */
        create_pod("never", "{\"containers\": [{\"name\": \"c\", \"image\": \"test/absent:1\", "
                            "\"imagePullPolicy\": \"Never\"}]}");
        json_decref(wait_for("never", waiting_reason, "ErrImageNeverPull"));
        delete_and_wait("never", 0);

        /* Not in the store and the registry unreachable: ErrImagePull, then
         * ImagePullBackOff. */
        create_pod("nopull", "{\"containers\": [{\"name\": \"c\", \"image\": \"127.0.0.1:9/absent:1\"}]}");
        json_decref(wait_for("nopull", waiting_reason, "ErrImagePull"));
        json_decref(wait_for("nopull", waiting_reason, "ImagePullBackOff"));
        delete_and_wait("nopull", 0);
}

/* Kubernetes' command/args/ENTRYPOINT/CMD rules, env and workingDir. */
static void test_command_env_cwd(void **state) {
        (void) state;
        create_pod("argv", "{\"restartPolicy\": \"Never\", \"containers\": ["
                           "{\"name\": \"image\", \"image\": \"test/ep:1\"},"
                           "{\"name\": \"args\", \"image\": \"test/ep:1\", \"args\": [\"a1\", \"a2\"]},"
                           "{\"name\": \"command\", \"image\": \"test/ep:1\", \"command\": [\"echo\", \"c\"]},"
                           "{\"name\": \"both\", \"image\": \"test/ep:1\", \"command\": [\"echo\", \"c\"], \"args\": [\"a\"]},"
                           "{\"name\": \"env\", \"image\": \"test/ep:1\", \"workingDir\": \"/tmp\","
                           " \"env\": [{\"name\": \"FOO\", \"value\": \"ctr\"}, {\"name\": \"NEW\", \"value\": \"x y\"}],"
                           " \"command\": [\"sh\", \"-c\", \"echo $FOO $BAR $NEW $HOSTNAME; pwd\"]},"
                           "{\"name\": \"imgcwd\", \"image\": \"test/ep:1\", \"command\": [\"pwd\"]}]}");
        json_t *st = wait_for("argv", wait_kit_phase_is, "Succeeded");
        static const struct {
                const char *ctr, *out;
        } want[] = {
                {"image", "ep cmd1 cmd2\n"}, {"args", "ep a1 a2\n"}, {"command", "c\n"}, {"both", "c a\n"},
                {"env", "ctr image x y argv\n/tmp\n"}, {"imgcwd", "/etc\n"},
        };
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
                char *log = read_log("argv", want[i].ctr, false);
                if (strcmp(log, want[i].out))
                        fail_msg("container %s wrote `%s`, want `%s`", want[i].ctr, log, want[i].out);
                free(log);
        }
        json_decref(st);
        delete_and_wait("argv", 0);
}

static bool restarted_once_running(const json_t *st, const void *arg) {
        (void) arg;
        const json_t *cs = ctr_status(st, "c");
        return json_integer_value(json_object_get(cs, "restartCount")) == 1 && running(st, "c");
}

/* A new manager (legiond restarted) starts the pods again. */
static void test_restore(void **state) {
        (void) state;
        create_pod("keep", "{\"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\", \"command\": [\"sleep\", "
                           "\"1000\"]}]}");
        create_pod("once", "{\"restartPolicy\": \"Never\", \"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\","
                           " \"command\": [\"sleep\", \"1000\"]}]}");
        json_decref(wait_for("keep", running, "c"));
        json_decref(wait_for("once", running, "c"));
        lg_pods_free(pods);
        char run[300], logs[300];
        snprintf(run, sizeof(run), "%s/run", tmp);
        snprintf(logs, sizeof(logs), "%s/logs", tmp);
        struct lg_pods_config cfg = {.loop = &loop, .store = store, .images = images, .run_dir = run, .logs_dir = logs};
        struct lg_error e = {0};
        assert_int_equal(lg_pods_new(&cfg, &pods, &e), 0);
        assert_int_equal(lg_pods_restore(pods, &e), 0);
        json_decref(wait_for("keep", restarted_once_running, NULL));
        json_t *st = wait_for("once", wait_kit_phase_is, "Failed");
        assert_string_equal(json_string_value(json_object_get(term_of(st, "c"), "message")), "legiond restarted");
        json_decref(st);
        delete_pod("keep", 0);
        delete_pod("once", 0);
        wait_for("keep", gone, NULL);
        wait_for("once", gone, NULL);
}

static void test_quantities(void **state) {
        (void) state;
        /* Exercised through the sandbox spec: a Guaranteed pod with odd
         * quantity spellings runs. */
        create_pod("qty", "{\"restartPolicy\": \"Never\", \"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\","
                          " \"command\": [\"true\"], \"resources\": {\"limits\": {\"memory\": \"0.5Gi\", \"cpu\": \"0.5\"},"
                          " \"requests\": {\"memory\": \"536870912\", \"cpu\": \"500m\"}}}]}");
        json_t *st = wait_for("qty", wait_kit_phase_is, "Succeeded");
        assert_string_equal(json_string_value(json_object_get(st, "qosClass")), "Guaranteed");
        json_decref(st);
        delete_and_wait("qty", 0);
}

/* ---- warm sandboxes ---------------------------------------------------------- */

/* A field of the image's entry in the warm pool, -1 when it has none. */
static json_int_t warm_field(const char *ref, const char *field) {
        struct lg_image *img = NULL;
        struct lg_error e = {0};
        if (lg_image_get(images, ref, &img, &e) < 0)
                fail_msg("image %s: %s", ref, e.msg);
        json_t *doc = lg_pods_warm_json(pods);
        assert_non_null(doc);
        json_int_t v = -1;
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(doc, "images"), i, x) if (
                !strcmp(json_string_value(json_object_get(x, "imageID")), img->id)) v =
                json_integer_value(json_object_get(x, field));
        json_decref(doc);
        lg_image_free(img);
        return v;
}

static bool warm_ready(const void *ref) { return warm_field(ref, "ready") >= 1; }

static void wait_warm_ready(const char *ref) {
        wait_kit_pump(&loop, warm_ready, ref);
        assert_int_equal(warm_field(ref, "ready"), 1);
}

/* Is a layer dir of the image in lg_pods_layers_in_use? */
static bool layers_in_use(const char *ref, bool warm) {
        struct lg_image *img = NULL;
        assert_int_equal(lg_image_get(images, ref, &img, NULL), 0);
        char **v = NULL;
        size_t n = 0;
        struct lg_strlist l = {0};
        assert_int_equal(lg_pods_layers_in_use(pods, warm, &l), 0);
        assert_int_equal(lg_strlist_take(&l, &v, &n), 0);
        bool found = false;
        for (size_t i = 0; i < n; i++) {
                found |= !strcmp(v[i], img->layer_dirs[0]);
                free(v[i]);
        }
        free(v);
        lg_image_free(img);
        return found;
}

static const char *ctr_id(const json_t *st, const char *ctr) {
        return json_string_value(json_object_get(ctr_status(st, ctr), "containerID"));
}

/* A pod's first container takes a warm sandbox of its image, made after
 * the image's last pod started: workload, hostname, user, cwd, logs and
 * limits are those of the pod; image removal drops them. */
static void test_warm(void **state) {
        (void) state;
        make_image("test/warm:1", "{\"Env\": [\"PATH=/bin\"], \"User\": \"1234\", \"WorkingDir\": \"/etc\"}");
        assert_int_equal(warm_field("test/warm:1", "ready"), -1);
        create_pod("w1", "{\"containers\": [{\"name\": \"c\", \"image\": \"test/warm:1\", \"command\": [\"sleep\", "
                         "\"1000\"]}]}");
        json_t *st1 = wait_for("w1", running, "c");
        /* The first one was made cold; one is made for the next. */
        wait_warm_ready("test/warm:1");
        assert_int_equal(warm_field("test/warm:1", "taken"), 0);
        assert_true(layers_in_use("test/warm:1", true));

        /* Taken by the next pod of the image; a second container joins
         * its namespaces. */
        create_pod("w2", "{\"restartPolicy\": \"Never\", \"containers\": [{\"name\": \"c\", \"image\": "
                         "\"test/warm:1\", \"command\": [\"sh\", \"-c\", \"echo warm-$(cat /proc/sys/kernel/hostname) "
                         "$HOSTNAME; id -u; pwd; readlink /proc/self/ns/net; echo err >&2\"]},"
                         "{\"name\": \"d\", \"image\": \"test/bb:1\", \"command\": [\"readlink\", "
                         "\"/proc/self/ns/net\"]}]}");
        json_t *st2 = wait_for("w2", wait_kit_phase_is, "Succeeded");
        assert_int_equal(warm_field("test/warm:1", "taken"), 1);
        assert_string_equal(term_reason(st2, "c"), "Completed");
        assert_string_not_equal(ctr_id(st1, "c"), ctr_id(st2, "c"));
        char *log = read_log("w2", "c", false), *dlog = read_log("w2", "d", false);
        assert_true(!strncmp(log, "warm-w2 w2\n1234\n/etc\nnet:[", 26));
        assert_non_null(strstr(log, dlog)); /* one network namespace */
        assert_non_null(strstr(log, "\nerr\n"));
        free(log);
        free(dlog);
        json_decref(st1);
        json_decref(st2);

        /* Limits are set on a warm sandbox's cgroup when it is taken. */
        wait_warm_ready("test/warm:1");
        create_pod("w3", "{\"restartPolicy\": \"Never\", \"containers\": [{\"name\": \"c\", \"image\": \"test/warm:1\","
                         " \"command\": [\"tail\", \"/dev/zero\"],"
                         " \"resources\": {\"limits\": {\"memory\": \"16Mi\"}}}]}");
        json_t *st = wait_for("w3", wait_kit_phase_is, "Failed");
        assert_int_equal(warm_field("test/warm:1", "taken"), 2);
        assert_string_equal(term_reason(st, "c"), "OOMKilled");
        assert_int_equal(exit_code(st, "c"), 137);
        json_decref(st);

        /* Not the default rootfs size: made as before, the warm one stays. */
        wait_warm_ready("test/warm:1");
        create_pod("w4", "{\"restartPolicy\": \"Never\", \"containers\": [{\"name\": \"c\", \"image\": \"test/warm:1\","
                         " \"command\": [\"true\"], \"resources\": {\"limits\": {\"ephemeral-storage\": \"64Mi\"}}}]}");
        json_decref(wait_for("w4", wait_kit_phase_is, "Succeeded"));
        assert_int_equal(warm_field("test/warm:1", "taken"), 2);
        assert_int_equal(warm_field("test/warm:1", "ready"), 1);

        delete_and_wait("w1", 0);
        delete_and_wait("w2", 0);
        delete_and_wait("w3", 0);
        delete_and_wait("w4", 0);
        /* Only the warm sandbox uses the image now. */
        assert_false(layers_in_use("test/warm:1", false));
        assert_true(layers_in_use("test/warm:1", true));
        struct lg_image *img = NULL;
        assert_int_equal(lg_image_get(images, "test/warm:1", &img, NULL), 0);
        lg_pods_image_removed(pods, img->id);
        lg_image_free(img);
        assert_int_equal(warm_field("test/warm:1", "ready"), -1);
        assert_false(layers_in_use("test/warm:1", true));
}


/* ---- the node's network -------------------------------------------------------- */

/* The test's own table, link prefix and CIDR (never a real legiond's). */
#define NET_TABLE "lg_test_pods"
#define NET_PREFIX "lgtp"
#define NET_CIDR "10.202.8.0/28"

static lg_net *pods_net;
static lg_tenants *pods_tenants;

/* The manager again, on the network net (NULL: none). */
static void pods_again(lg_net *net, lg_tenants *t) {
        lg_pods_free(pods);
        uv_run(&loop, UV_RUN_NOWAIT);
        char run[300], logs[300];
        snprintf(run, sizeof(run), "%s/run", tmp);
        snprintf(logs, sizeof(logs), "%s/logs", tmp);
        struct lg_pods_config cfg = {.loop = &loop, .store = store, .images = images, .run_dir = run, .logs_dir = logs,
                                     .net = net, .tenants = t};
        struct lg_error e = {0};
        if (lg_pods_new(&cfg, &pods, &e) < 0)
                fail_msg("pods: %s", e.msg);
}

/* After the test, passed or failed: its pods' sandboxes, then nothing of
 * its network stays. */
static int net_teardown(void **state) {
        (void) state;
        pods_again(NULL, NULL);
        struct lg_error e = {0};
        if (pods_net && lg_net_teardown(pods_net, &e) < 0)
                fprintf(stderr, "net teardown: %s\n", e.msg);
        lg_net_free(pods_net);
        lg_tenants_free(pods_tenants);
        pods_net = NULL;
        pods_tenants = NULL;
        return 0;
}

static bool has_pod_ip(const json_t *st, const void *arg) {
        return running(st, arg) && json_string_value(json_object_get(st, "podIP"));
}

/* GET / from ip:port, from this host: the answer's last line. */
static void http_get(const char *ip, int port, char *buf, size_t cap) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
        buf[0] = '\0';
        if (connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0) {
                snprintf(buf, cap, "connect: %s", strerror(errno));
                close(fd);
                return;
        }
        static const char req[] = "GET / HTTP/1.0\r\n\r\n";
        assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t) sizeof(req) - 1);
        size_t n = 0;
        ssize_t k;
        while (n + 1 < cap && (k = read(fd, buf + n, cap - 1 - n)) > 0)
                n += (size_t) k;
        buf[n] = '\0';
        close(fd);
}

static bool in_cidr(const char *ip) {
        struct in_addr a, net;
        inet_pton(AF_INET, "10.202.8.0", &net);
        return ip && inet_pton(AF_INET, ip, &a) == 1 && (ntohl(a.s_addr) & ~0xfu) == ntohl(net.s_addr);
}

/* Pods on the node's network: the pod's address in its status, a
 * container port reachable from the host at it, a warm sandbox's address
 * taken with it, the annotation's policy registered (the assignment
 * needs it), and every address released with the pods. */
static void test_network(void **state) {
        (void) state;
        struct lg_net_config nc = {.cidr = NET_CIDR, .table = NET_TABLE, .link_prefix = NET_PREFIX};
        struct lg_error e = {0};
        /* Fresh: without what a failed run left. */
        if (lg_net_new(&nc, &pods_net, &e) >= 0)
                lg_net_teardown(pods_net, &e);
        lg_net_free(pods_net);
        pods_net = NULL;
        if (lg_net_new(&nc, &pods_net, &e) < 0)
                fail_msg("lg_net_new: %s", e.msg);
        assert_int_equal(lg_tenants_new(store, pods_net, &pods_tenants, &e), 0);
        if (lg_tenants_create(pods_tenants, "default", NULL, NULL, &e) < 0)
                fail_msg("namespace: %s", e.msg);
        pods_again(pods_net, pods_tenants);

        create_pod("net1", "{\"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\", \"command\": [\"sh\", \"-c\","
                           " \"mkdir -p /www && echo hi-net1 > /www/index.html && exec httpd -f -p 8080 -h /www\"]},"
                           "{\"name\": \"d\", \"image\": \"test/bb:1\", \"command\": [\"sleep\", \"1000\"]}]}");
        json_t *st = wait_for("net1", has_pod_ip, "c");
        const char *ip = json_string_value(json_object_get(st, "podIP"));
        if (!in_cidr(ip))
                fail_msg("podIP %s is not in %s", ip ? ip : "(none)", NET_CIDR);
        const json_t *ips = json_object_get(st, "podIPs");
        assert_int_equal(json_array_size(ips), 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(ips, 0), "ip")), ip);
        char got[2048] = "";
        for (int i = 0; i < 50 && !strstr(got, "hi-net1"); i++) {
                http_get(ip, 8080, got, sizeof(got));
                if (!strstr(got, "hi-net1"))
                        usleep(100000);
        }
        if (!strstr(got, "hi-net1"))
                fail_msg("GET http://%s:8080/ from the host: `%.200s`", ip, got);
        char ip1[LG_NET_IP_MAX];
        snprintf(ip1, sizeof(ip1), "%s", ip);
        json_decref(st);

        /* The next pod of the image takes the warm sandbox made meanwhile,
         * with its address; its annotation names its policy. */
        wait_warm_ready("test/bb:1");
        json_int_t taken = warm_field("test/bb:1", "taken");
        json_error_t je;
        json_t *spec = json_loads("{\"restartPolicy\": \"Never\", \"containers\": [{\"name\": \"c\", \"image\":"
                                  " \"test/bb:1\", \"command\": [\"sleep\", \"1000\"]}]}",
                                  0, &je);
        json_t *def = NULL;
        assert_int_equal(lg_podspec_validate(spec, &def, &e), 0);
        json_decref(spec);
        json_t *doc = json_pack("{s:o, s:{s:s}}", "spec", def, "annotations", LG_TENANT_EGRESS_ANNOTATION,
                                "198.51.100.0/24:443");
        struct lg_resource *r = NULL;
        assert_int_equal(lg_store_create(store, LG_KEY("Pod", "default", "net2"), NULL, doc, NULL, &r, &e), 0);
        json_decref(doc);
        assert_int_equal(lg_pods_sync(pods, r, &e), 0);
        lg_resource_free(r);
        st = wait_for("net2", has_pod_ip, "c");
        assert_int_equal(warm_field("test/bb:1", "taken"), taken + 1);
        ip = json_string_value(json_object_get(st, "podIP"));
        assert_true(in_cidr(ip));
        assert_string_not_equal(ip, ip1);
        char ip2[LG_NET_IP_MAX];
        snprintf(ip2, sizeof(ip2), "%s", ip);
        json_decref(st);
        struct lg_net_stats ns;
        assert_int_equal(lg_net_stats(pods_net, &ns, &e), 0);
        assert_true(ns.addresses_used >= 2);

        /* legiond restarts (a new lg_net finds the live sandboxes'
         * addresses): the pod's sandboxes are taken back with theirs, and
         * a sweep after the restore leaves them; its tenant again. */
        lg_pods_detach_all(pods);
        lg_pods_free(pods);
        pods = NULL;
        lg_net_free(pods_net);
        pods_net = NULL;
        if (lg_net_new(&nc, &pods_net, &e) < 0)
                fail_msg("lg_net_new again: %s", e.msg);
        lg_tenants_free(pods_tenants);
        assert_int_equal(lg_tenants_new(store, pods_net, &pods_tenants, &e), 0);
        struct lg_resource *nsr = NULL;
        assert_int_equal(lg_store_get(store, LG_KEY("Namespace", "", "default"), &nsr, &e), 0);
        assert_int_equal(lg_tenants_restore(pods_tenants, nsr, &e), 0);
        lg_resource_free(nsr);
        pods_again(pods_net, pods_tenants);
        assert_int_equal(lg_pods_restore(pods, &e), 0);
        assert_int_equal(lg_net_sweep(pods_net, &e), 0);
        st = wait_for("net1", has_pod_ip, "c");
        assert_string_equal(json_string_value(json_object_get(st, "podIP")), ip1);
        assert_int_equal(json_integer_value(json_object_get(ctr_status(st, "c"), "restartCount")), 0);
        json_decref(st);
        st = wait_for("net2", has_pod_ip, "c");
        assert_string_equal(json_string_value(json_object_get(st, "podIP")), ip2);
        json_decref(st);
        got[0] = '\0';
        http_get(ip1, 8080, got, sizeof(got));
        if (!strstr(got, "hi-net1"))
                fail_msg("after the restart, GET http://%s:8080/ from the host: `%.200s`", ip1, got);

        /* The container that made the pod's namespaces restarts: the pod
         * keeps its address (its first sandbox holds it until the pod
         * goes), the other container still answers at it. */
        create_pod("net3", "{\"containers\": [{\"name\": \"c\", \"image\": \"test/bb:1\", \"command\": [\"sh\","
                           " \"-c\", \"sleep 1; exit 1\"]}, {\"name\": \"d\", \"image\": \"test/bb:1\", \"command\":"
                           " [\"sh\", \"-c\", \"mkdir -p /www && echo hi-net3 > /www/index.html && exec httpd -f -p 8081"
                           " -h /www\"]}]}");
        st = wait_for("net3", has_pod_ip, "d");
        char ip3[LG_NET_IP_MAX];
        snprintf(ip3, sizeof(ip3), "%s", json_string_value(json_object_get(st, "podIP")));
        json_decref(st);
        json_decref(wait_for("net3", restarted_once_running, NULL));
        got[0] = '\0';
        for (int i = 0; i < 50 && !strstr(got, "hi-net3"); i++) {
                http_get(ip3, 8081, got, sizeof(got));
                if (!strstr(got, "hi-net3"))
                        usleep(100000);
        }
        if (!strstr(got, "hi-net3"))
                fail_msg("after its first container restarted, GET http://%s:8081/: `%.200s`", ip3, got);
        delete_and_wait("net3", 0);

        /* Gone with the pods (and the warm sandbox with its image's pool). */
        delete_and_wait("net1", 0);
        delete_and_wait("net2", 0);
        pods_again(pods_net, pods_tenants); /* the warm sandboxes go with the manager */
        uv_timer_t tick;
        uv_timer_init(&loop, &tick);
        uv_timer_start(&tick, on_tick, 20, 20);
        for (int i = 0; i < 3000 && lg_net_stats(pods_net, &ns, &e) >= 0 && ns.addresses_used > 0; i++)
                uv_run(&loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *) &tick, NULL);
        uv_run(&loop, UV_RUN_NOWAIT);
        assert_int_equal(ns.addresses_used, 0);
}

static int setup(void **state) {
        (void) state;
        snprintf(tmp, sizeof(tmp), "/tmp/lg-test-pods-%d", (int) getpid());
        lg_rm_rf(tmp);
        assert_int_equal(lg_mkdir_p(tmp, 0755), 0);
        char path[512];
        struct lg_error e = {0};
        snprintf(path, sizeof(path), "%s/legion.db", tmp);
        struct lg_store_options so = {.sync = LG_STORE_SYNC_NORMAL};
        if (lg_store_open(path, &so, &store, &e) < 0)
                fail_msg("store: %s", e.msg);
        snprintf(path, sizeof(path), "%s/images", tmp);
        if (lg_image_store_open(path, &images, &e) < 0)
                fail_msg("images: %s", e.msg);
        make_image("test/bb:1", "{\"Env\": [\"PATH=/bin\", \"FOO=image\", \"BAR=image\"], \"Cmd\": [\"sh\"]}");
        make_image("test/user:1", "{\"User\": \"app:staff\", \"Cmd\": [\"sh\"]}");
        make_image("test/uid:1", "{\"User\": \"1234\", \"Cmd\": [\"sh\"]}");
        make_image("test/nouser:1", "{\"User\": \"ghost\", \"Cmd\": [\"sh\"]}");
        make_image("test/nocmd:1", "{\"Env\": [\"PATH=/bin\"]}");
        make_image("test/ep:1", "{\"Entrypoint\": [\"echo\", \"ep\"], \"Cmd\": [\"cmd1\", \"cmd2\"], \"WorkingDir\": "
                                "\"/etc\", \"Env\": [\"PATH=/bin\", \"FOO=image\", \"BAR=image\"]}");
        uv_loop_init(&loop);
        char run[300], logs[300];
        snprintf(run, sizeof(run), "%s/run", tmp);
        snprintf(logs, sizeof(logs), "%s/logs", tmp);
        setenv("LEGION_POD_BACKOFF_MS", "300", 1);
        struct lg_pods_config cfg = {.loop = &loop, .store = store, .images = images, .run_dir = run, .logs_dir = logs};
        if (lg_pods_new(&cfg, &pods, &e) < 0)
                fail_msg("pods: %s", e.msg);
        return 0;
}

static int teardown(void **state) {
        (void) state;
        lg_pods_free(pods);
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_loop_close(&loop);
        lg_image_store_close(images);
        lg_store_close(store);
        if (!getenv("LG_TEST_KEEP"))
                lg_rm_rf(tmp);
        return 0;
}

int main(void) {
        if (geteuid() != 0) {
                fprintf(stderr, "SKIP: pod tests need root (sandboxes)\n");
                return 77;
        }
        if (access("/bin/busybox", X_OK) < 0) {
                fprintf(stderr, "SKIP: pod tests need /bin/busybox (busybox-static)\n");
                return 77;
        }
        char parent[64];
        snprintf(parent, sizeof(parent), "legion-test-pods-%d", (int) getpid());
        setenv("LEGION_CGROUP_PARENT", parent, 0);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_completed_and_logs),
                cmocka_unit_test(test_failed_exit_code),
                cmocka_unit_test(test_oom),
                cmocka_unit_test(test_restart_backoff),
                cmocka_unit_test(test_shared_namespaces),
                cmocka_unit_test(test_deadline),
                cmocka_unit_test(test_graceful_delete),
                cmocka_unit_test(test_image_user),
                cmocka_unit_test(test_config_errors),
                cmocka_unit_test(test_command_env_cwd),
                cmocka_unit_test(test_quantities),
                cmocka_unit_test(test_warm),
                cmocka_unit_test(test_restore),
                cmocka_unit_test_teardown(test_network, net_teardown),
        };
        int failed = cmocka_run_group_tests(tests, setup, teardown);
        static const char *const ctrls[] = {"memory", "cpu", "cpuacct", "pids", "freezer", ""};
        for (size_t i = 0; i < sizeof(ctrls) / sizeof(ctrls[0]); i++) {
                char path[256];
                snprintf(path, sizeof(path), "/sys/fs/cgroup/%s%s%s", ctrls[i], *ctrls[i] ? "/" : "", parent);
                rmdir(path);
        }
        return failed ? 1 : 0;
}
