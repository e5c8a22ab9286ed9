/* SKELETON (issue 14, first commit; H2 replaces this file with the real
 * masters.c): Master resources. Every body returns -ENOSYS or does
 * nothing. NOT the implementation. */
#include <errno.h>

#include "jobs/jobs-internal.h"

#define UNIMPLEMENTED(err) lg_error_setm((err), ENOSYS, "masters: not implemented yet (skeleton)")

int lg_jobs_master_deploy(lg_jobs *jobs, const char *ns, const json_t *spec, struct lg_resource **ret,
                          struct lg_error *err) {
        (void) jobs, (void) ns, (void) spec, (void) ret;
        return UNIMPLEMENTED(err);
}
int lg_jobs_master_get(lg_jobs *jobs, const char *ns, const char *name, struct lg_resource **ret,
                       struct lg_error *err) {
        (void) jobs, (void) ns, (void) name, (void) ret;
        return UNIMPLEMENTED(err);
}
int lg_jobs_master_list(lg_jobs *jobs, const char *ns, struct lg_resource_list *ret, struct lg_error *err) {
        (void) jobs, (void) ns, (void) ret;
        return UNIMPLEMENTED(err);
}
int lg_jobs_master_delete(lg_jobs *jobs, const char *ns, const char *name, struct lg_error *err) {
        (void) jobs, (void) ns, (void) name;
        return UNIMPLEMENTED(err);
}
json_t *lg_master_to_json(const struct lg_resource *r) {
        (void) r;
        return NULL;
}
int jobs_master_acquire(lg_jobs *jobs, const struct jobs_master_want *w, jobs_master_cb cb, void *userdata,
                        char *waiting, size_t cap, struct lg_error *err) {
        (void) jobs, (void) w, (void) cb, (void) userdata, (void) waiting, (void) cap, (void) err;
        return 0; /* no kept masters: the job makes its own */
}
void jobs_master_cancel(lg_jobs *jobs, const char *ns, const char *job) { (void) jobs, (void) ns, (void) job; }
void jobs_master_release(lg_jobs *jobs, const char *ns, const char *master, const char *job) {
        (void) jobs, (void) ns, (void) master, (void) job;
}
int jobs_masters_new(lg_jobs *jobs, struct lg_error *err) {
        (void) jobs, (void) err;
        return 0;
}
void jobs_masters_free(lg_jobs *jobs) { (void) jobs; }
void jobs_masters_detach_all(lg_jobs *jobs) { (void) jobs; }
int jobs_masters_restore(lg_jobs *jobs, struct lg_error *err) {
        (void) jobs, (void) err;
        return 0;
}
