/* At legiond's start (lg_jobs_restore): every Job record that is not over
 * comes back. A Pending job queues again; a Starting or Running one takes
 * back its roles' sandboxes (lg_agent_adopt_in under
 * <run_dir>/job-sandboxes: legion-init kept each workload, or its exit
 * status while nobody was attached) and its engine goes on from there, a
 * role that could not be adopted being lost. A final job whose sandboxes
 * were still going has its finishedAt written. Then the masters come
 * back (masters.c), and sandboxes in the root that nobody claimed are
 * destroyed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/engine.h"
#include "jobs/jobs-internal.h"

static void time_field(const json_t *status, const char *field, int64_t *ret) {
        const char *s = json_string_value(json_object_get(status, field));
        if (!s || jobs_parse_ms(s, ret) < 0)
                *ret = 0;
}

int job_restore_record(lg_jobs *jobs, const struct lg_resource *rec) {
        const json_t *st = rec->status;
        enum job_phase phase;
        if (job_phase_parse(json_string_value(json_object_get(st, "phase")), &phase) < 0)
                phase = JOB_PENDING;
        bool final = phase >= JOB_SUCCEEDED;
        if (final && json_object_get(st, "finishedAt"))
                return 0; /* over, nothing left of it */
        struct job *j = job_new(jobs, rec->namespace, rec->name, rec->uid, rec->spec);
        if (!j)
                return -ENOMEM;
        j->phase = phase;
        const char *s;
        if ((s = json_string_value(json_object_get(st, "reason"))))
                snprintf(j->reason, sizeof(j->reason), "%s", s);
        if ((s = json_string_value(json_object_get(st, "message"))))
                snprintf(j->message, sizeof(j->message), "%s", s);
        time_field(st, "submittedAt", &j->submitted_ms);
        time_field(st, "startedAt", &j->started_ms);
        if (!j->submitted_ms)
                j->submitted_ms = rec->created_at * 1000;
        const json_t *m = json_object_get(st, "master");
        if ((s = json_string_value(json_object_get(m, "name"))))
                snprintf(j->master.name, sizeof(j->master.name), "%s", s);
        if ((s = json_string_value(json_object_get(m, "address"))))
                snprintf(j->master.address, sizeof(j->master.address), "%s", s);
        j->master.reused = json_is_true(json_object_get(m, "reused"));
        j->master.kept = json_is_true(json_object_get(m, "kept"));
        j->master_held = j->master.name[0] != '\0' && !final;
        size_t i;
        const json_t *o;
        json_array_foreach(json_object_get(st, "roles"), i, o)
                role_load(j, o);
        j->own_master = j->eng->wants_master && j->eng->wants_master(j->spec) && !j->master.reused;
        j->eng->need(j->spec, j->own_master, &j->need_cpu, &j->need_mem);

        if (final) {
                /* Its sandboxes go with the sweep: finishedAt now. */
                for (size_t k = 0; k < j->n_roles; k++)
                        if (j->roles[k]->state == ROLE_RUNNING || j->roles[k]->state == ROLE_STARTING) {
                                j->roles[k]->state = ROLE_DELETED;
                                j->roles[k]->finished_ms = jobs_now_ms();
                        }
                job_unbusy((j->busy++, j));
                return 0;
        }
        /* What it runs on: its image and files, as at submit. */
        struct lg_error err = {0};
        const char *package = json_string_value(json_object_get(j->spec, "package"));
        char files[4096];
        int r = jobs_image_resolve(jobs, json_string_value(json_object_get(j->spec, "image")), &j->img, &err);
        if (r >= 0 && package && (r = jobs_package_dir(jobs, package, files, sizeof(files), &err)) >= 0)
                j->files_dir = strdup(files);
        if (phase == JOB_PENDING) {
                if (r < 0)
                        job_finish(j, JOB_FAILED, "StartFailed", "%s", err.msg);
                else
                        jobs_kick(jobs);
                return 0;
        }
        /* Starting or Running: it holds its capacity again. */
        jobs->cpu_used += j->need_cpu;
        jobs->mem_used += j->need_mem;
        j->holds_capacity = true;
        if (!j->started_ms)
                j->started_ms = jobs_now_ms();
        j->admitted_ns = lg_now_ns();
        unsigned adopting = 0;
        for (size_t k = 0; k < j->n_roles; k++) {
                struct role *x = j->roles[k];
                if (x->state != ROLE_RUNNING && x->state != ROLE_STARTING)
                        continue;
                if (x->sb[0] && role_adopt(x) >= 0) {
                        x->state = ROLE_RUNNING;
                        adopting++;
                } else {
                        x->state = ROLE_LOST;
                        x->finished_ms = jobs_now_ms();
                        snprintf(x->exit, sizeof(x->exit), "Lost");
                }
        }
        job_arm_timers(j);
        if (r < 0) {
                job_finish(j, JOB_FAILED, "StartFailed", "%s", err.msg);
                return 0;
        }
        if (!adopting) {
                j->eng->resume(j);
                job_changed(j);
        }
        return 0;
}

/* Sandboxes a previous legiond left that no job or master took back:
 * destroyed (an adopt that fails destroys what is left). */
static void unclaimed_adopted(lg_agent_req *req) {
        lg_jobs *jobs = req->data;
        jobs->pending_reqs--;
        if (req->result >= 0)
                lg_agent_destroy(jobs->agent, NULL, req->id, NULL);
        free(req);
}

static void destroy_unclaimed(lg_jobs *jobs) {
        char **ids = NULL;
        if (lg_sandbox_list(jobs->state_root, &ids, NULL) < 0)
                return;
        for (char **id = ids; *id; id++) {
                if (jobs_claimed(jobs, *id))
                        continue;
                /* -EEXIST: someone is taking it back. */
                lg_agent_req *req = calloc(1, sizeof(*req));
                if (!req)
                        continue;
                req->data = jobs;
                if (lg_agent_adopt_in(jobs->agent, req, jobs->state_root, *id, unclaimed_adopted) < 0)
                        free(req);
                else
                        jobs->pending_reqs++;
        }
        lg_sandbox_list_free(ids);
}

static int by_submit(const void *a, const void *b) {
        const struct lg_resource *x = *(const struct lg_resource *const *) a, *y = *(const struct lg_resource *const *) b;
        const char *sx = json_string_value(json_object_get(x->status, "submittedAt"));
        const char *sy = json_string_value(json_object_get(y->status, "submittedAt"));
        return strcmp(sx ? sx : "", sy ? sy : ""); /* RFC 3339 of one length: ordered as text */
}

int lg_jobs_restore(lg_jobs *jobs, struct lg_error *err) {
        struct lg_resource_list list = {0};
        int r = lg_store_list(jobs->store, JOBS_KIND, NULL, NULL, &list, err);
        if (r < 0)
                return r;
        if (list.n) /* no items: NULL, which qsort must not be given (UBSan) */
                qsort(list.items, list.n, sizeof(*list.items), by_submit);
        for (size_t i = 0; i < list.n; i++)
                job_restore_record(jobs, list.items[i]);
        lg_resource_list_free(&list);
        r = jobs_masters_restore(jobs, err);
        destroy_unclaimed(jobs);
        /* The roles are back with their addresses (lg_net_reclaim) before
         * legiond sweeps the addresses nobody took back. */
        for (;;) {
                bool adopting = false;
                for (struct job *j = jobs->jobs; j && !adopting; j = j->next)
                        for (size_t k = 0; k < j->n_roles && !adopting; k++)
                                adopting = j->roles[k]->adopting;
                if (!adopting)
                        break;
                uv_run(jobs->loop, UV_RUN_ONCE);
        }
        return r;
}
