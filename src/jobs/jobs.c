/* SKELETON (issue 14, first commit): the public interface of jobs.h and
 * the internal calls of jobs-internal.h compile and link so that masters,
 * pools and the API can be built against them; every body here returns
 * -ENOSYS until the real library lands. NOT the implementation. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobs/jobs-internal.h"

#define UNIMPLEMENTED(err) lg_error_setm((err), ENOSYS, "jobs: not implemented yet (skeleton)")

int lg_jobs_new(const struct lg_jobs_config *cfg, lg_jobs **ret, struct lg_error *err) {
        (void) cfg;
        *ret = NULL;
        return UNIMPLEMENTED(err);
}
void lg_jobs_free(lg_jobs *jobs) { (void) jobs; }
void lg_jobs_detach_all(lg_jobs *jobs) { (void) jobs; }
int lg_jobs_restore(lg_jobs *jobs, struct lg_error *err) {
        (void) jobs;
        return UNIMPLEMENTED(err);
}
int lg_jobs_submit(lg_jobs *jobs, const char *ns, const json_t *spec, struct lg_resource **ret, struct lg_error *err) {
        (void) jobs, (void) ns, (void) spec, (void) ret;
        return UNIMPLEMENTED(err);
}
int lg_jobs_get(lg_jobs *jobs, const char *ns, const char *name, struct lg_resource **ret, struct lg_error *err) {
        (void) jobs, (void) ns, (void) name, (void) ret;
        return UNIMPLEMENTED(err);
}
int lg_jobs_list(lg_jobs *jobs, const char *ns, struct lg_resource_list *ret, struct lg_error *err) {
        (void) jobs, (void) ns, (void) ret;
        return UNIMPLEMENTED(err);
}
int lg_jobs_stop(lg_jobs *jobs, const char *ns, const char *name, const char *why, struct lg_error *err) {
        (void) jobs, (void) ns, (void) name, (void) why;
        return UNIMPLEMENTED(err);
}
int lg_jobs_delete(lg_jobs *jobs, const char *ns, const char *name, struct lg_error *err) {
        (void) jobs, (void) ns, (void) name;
        return UNIMPLEMENTED(err);
}
json_t *lg_job_to_json(const struct lg_resource *r) {
        (void) r;
        return NULL;
}
int lg_jobs_log_path(lg_jobs *jobs, const char *ns, const char *name, const char *role, unsigned index, char *buf,
                     size_t cap) {
        (void) jobs, (void) ns, (void) name, (void) role, (void) index, (void) buf, (void) cap;
        return -ENOSYS;
}
int lg_jobs_log_active(lg_jobs *jobs, const char *ns, const char *name, const char *role, unsigned index) {
        (void) jobs, (void) ns, (void) name, (void) role, (void) index;
        return -ENOSYS;
}
int lg_jobs_watch_add(lg_jobs *jobs, const char *ns, const char *name, lg_jobs_watch_cb cb, void *userdata,
                      lg_jobs_watch **ret, struct lg_error *err) {
        (void) jobs, (void) ns, (void) name, (void) cb, (void) userdata, (void) ret;
        return UNIMPLEMENTED(err);
}
void lg_jobs_watch_remove(lg_jobs_watch *w) { (void) w; }
int lg_jobs_pool_set(lg_jobs *jobs, const char *name, const json_t *spec, struct lg_error *err) {
        (void) jobs, (void) name, (void) spec;
        return UNIMPLEMENTED(err);
}
int lg_jobs_pool_delete(lg_jobs *jobs, const char *name, struct lg_error *err) {
        (void) jobs, (void) name;
        return UNIMPLEMENTED(err);
}
json_t *lg_jobs_pools_json(lg_jobs *jobs) {
        (void) jobs;
        return json_array();
}

/* internal */
int64_t jobs_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
int jobs_capacity_take(lg_jobs *jobs, uint64_t cpu_millis, uint64_t memory_bytes, char *waiting, size_t cap,
                       struct lg_error *err) {
        (void) jobs, (void) cpu_millis, (void) memory_bytes, (void) waiting, (void) cap;
        return UNIMPLEMENTED(err);
}
void jobs_capacity_give(lg_jobs *jobs, uint64_t cpu_millis, uint64_t memory_bytes) {
        (void) jobs, (void) cpu_millis, (void) memory_bytes;
}
void jobs_kick(lg_jobs *jobs) { (void) jobs; }
int jobs_image_resolve(lg_jobs *jobs, const char *image, struct lg_image **ret, struct lg_error *err) {
        (void) jobs, (void) image, (void) ret;
        return UNIMPLEMENTED(err);
}
int jobs_package_dir(lg_jobs *jobs, const char *package, char *buf, size_t cap, struct lg_error *err) {
        (void) jobs, (void) package, (void) buf, (void) cap;
        return UNIMPLEMENTED(err);
}
int jobs_sandbox_start(lg_jobs *jobs, const struct jobs_sandbox *sb, jobs_start_cb cb, void *userdata,
                       struct lg_error *err) {
        (void) jobs, (void) sb, (void) cb, (void) userdata;
        return UNIMPLEMENTED(err);
}
void jobs_sandbox_destroy(lg_jobs *jobs, const char *id, void (*done)(void *arg), void *arg) {
        (void) jobs, (void) id, (void) done, (void) arg;
}
int jobs_sandbox_adopt(lg_jobs *jobs, const char *id, const char *net_namespace, jobs_start_cb cb, void *userdata,
                       struct lg_error *err) {
        (void) jobs, (void) id, (void) net_namespace, (void) cb, (void) userdata;
        return UNIMPLEMENTED(err);
}
void jobs_sandbox_detach(lg_jobs *jobs, const char *id) { (void) jobs, (void) id; }
int jobs_exit_watch_start(lg_jobs *jobs, const char *id, int pidfd, jobs_exit_cb cb, void *userdata,
                          jobs_exit_watch **ret) {
        (void) jobs, (void) id, (void) pidfd, (void) cb, (void) userdata, (void) ret;
        return -ENOSYS;
}
void jobs_exit_watch_stop(jobs_exit_watch *w) { (void) w; }
void jobs_claim(lg_jobs *jobs, const char *id) { (void) jobs, (void) id; }
json_t *jobs_usage_new(void) { return json_object(); }
void jobs_usage_add(json_t *usage, const char *role, int64_t started_ms, int64_t finished_ms, uint64_t cpu_millis,
                    uint64_t memory_bytes) {
        (void) usage, (void) role, (void) started_ms, (void) finished_ms, (void) cpu_millis, (void) memory_bytes;
}
void jobs_master_lost(lg_jobs *jobs, const char *ns, const char *job, const char *why) {
        (void) jobs, (void) ns, (void) job, (void) why;
}
void jobs_format_ms(int64_t ms, char *buf, size_t cap) { snprintf(buf, cap, "%lld", (long long) ms); }
int jobs_parse_ms(const char *s, int64_t *ret) {
        (void) s, (void) ret;
        return -ENOSYS;
}
