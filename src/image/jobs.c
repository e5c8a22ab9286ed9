/* Image jobs on the loop (jobs.h): import, pull and GC on libuv's thread
 * pool with throttled progress handed back to the loop, and removal
 * checked against the layers running sandboxes use. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/jobs.h"

#define PROGRESS_NS 100000000ull /* 10 lines a second at most */

struct lg_image_jobs {
        uv_loop_t *loop;
        lg_image_store *images;
        char *tmp_dir;
        const struct lg_image_jobs_ops *ops;
        void *ud;
};

enum job_kind { JOB_IMPORT, JOB_PULL, JOB_CONVERT, JOB_GC };

struct lg_image_job {
        enum job_kind kind;
        lg_image_jobs *jobs;
        lg_image_progress_fn progress;
        lg_image_done_fn done;
        void *ud;
        bool cancelled;        /* no callback runs any more */
        bool queued;           /* on the thread pool: freed after its work */
        bool async_open;

        uv_work_t work;
        uv_async_t async;

        /* import */
        int fd;
        char fd_path[64];
        char *name;
        uint64_t received;
        int write_err;
        /* pull, convert */
        char *ref;
        char *username, *password;
        bool insecure;
        enum lg_image_lazy_mode lazy;
        struct lg_image_pull_report report;
        uint32_t chunk_size;
        bool push;
        struct lg_image_convert_result convert;
        /* gc */
        char **keep, **keep_ids;
        size_t n_keep, n_keep_ids;
        struct lg_image_gc_result gc;
        void *extra_gc;        /* ops->extra_gc_prepare's job */

        /* results */
        int r;
        struct lg_error err;
        struct lg_image *img;

        /* progress: written by the worker, read by the loop */
        pthread_mutex_t mu;
        char phase[16], what[128];
        uint64_t done_bytes, total;
        bool fresh;
        /* what the loop last handed on */
        char sent_phase[16], sent_what[128];
        uint64_t sent_ns;
};

int lg_image_jobs_new(const struct lg_image_jobs_config *cfg, lg_image_jobs **ret, struct lg_error *err) {
        lg_image_jobs *jobs = calloc(1, sizeof(*jobs));
        if (!jobs || !(jobs->tmp_dir = strdup(cfg->tmp_dir))) {
                free(jobs);
                return lg_error_set(err, ENOMEM, "image jobs");
        }
        jobs->loop = cfg->loop;
        jobs->images = cfg->images;
        jobs->ops = cfg->ops;
        jobs->ud = cfg->ud;
        *ret = jobs;
        return 0;
}

void lg_image_jobs_free(lg_image_jobs *jobs) {
        if (!jobs)
                return;
        free(jobs->tmp_dir);
        free(jobs);
}

static void free_strv_n(char **v, size_t n) {
        for (size_t i = 0; v && i < n; i++)
                free(v[i]);
        free(v);
}

static void job_closed(uv_handle_t *h) {
        lg_image_job *j = h->data;
        pthread_mutex_destroy(&j->mu);
        free(j);
}

static void job_free(lg_image_job *j) {
        if (j->fd >= 0)
                close(j->fd);
        free(j->name);
        free(j->ref);
        free(j->username);
        if (j->password) {
                explicit_bzero(j->password, strlen(j->password));
                free(j->password);
        }
        free_strv_n(j->keep, j->n_keep);
        free_strv_n(j->keep_ids, j->n_keep_ids);
        if (j->extra_gc)
                j->jobs->ops->extra_gc_free(j->extra_gc);
        lg_image_free(j->img);
        lg_image_pull_report_clear(&j->report);
        lg_image_convert_result_clear(&j->convert);
        if (j->async_open)
                uv_close((uv_handle_t *) &j->async, job_closed);
        else
                job_closed((uv_handle_t *) &j->async);
}

static lg_image_job *job_new(lg_image_jobs *jobs, enum job_kind kind) {
        lg_image_job *j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->kind = kind;
        j->jobs = jobs;
        j->fd = -1;
        j->async.data = j;
        pthread_mutex_init(&j->mu, NULL);
        return j;
}

/* On the worker thread. */
static void job_progress(void *ud, const char *phase, const char *what, uint64_t done, uint64_t total) {
        lg_image_job *j = ud;
        if (!j->async_open)
                return;
        pthread_mutex_lock(&j->mu);
        snprintf(j->phase, sizeof(j->phase), "%s", phase ? phase : "");
        /* The upload's /proc path means nothing to the client. */
        if (what && j->fd_path[0] && !strcmp(what, j->fd_path))
                what = "archive";
        snprintf(j->what, sizeof(j->what), "%s", what ? what : "");
        j->done_bytes = done;
        j->total = total;
        j->fresh = true;
        pthread_mutex_unlock(&j->mu);
        uv_async_send(&j->async);
}

/* On the loop: hand on the latest progress unless it is too soon after the
 * previous (a new phase or blob always goes, and so does the last one when
 * forced). */
static void flush_progress(lg_image_job *j, bool force) {
        if (j->cancelled || !j->async_open)
                return;
        pthread_mutex_lock(&j->mu);
        char phase[16], what[128];
        uint64_t done = j->done_bytes, total = j->total;
        bool fresh = j->fresh;
        j->fresh = false;
        memcpy(phase, j->phase, sizeof(phase));
        memcpy(what, j->what, sizeof(what));
        pthread_mutex_unlock(&j->mu);
        if (!fresh)
                return;
        uint64_t now = lg_now_ns();
        bool changed = strcmp(phase, j->sent_phase) || strcmp(what, j->sent_what);
        if (!force && !changed && now - j->sent_ns < PROGRESS_NS && !(total && done >= total)) {
                /* Too soon: keep it for the next wake-up (the worker's next
                 * report, or the final one). */
                pthread_mutex_lock(&j->mu);
                if (!j->fresh)
                        j->fresh = true;
                pthread_mutex_unlock(&j->mu);
                return;
        }
        j->sent_ns = now;
        memcpy(j->sent_phase, phase, sizeof(phase));
        memcpy(j->sent_what, what, sizeof(what));
        struct lg_image_progress p = {.phase = phase, .what = what, .done = done, .total = total};
        j->progress(&p, j->ud);
}

static void on_async(uv_async_t *h) { flush_progress(h->data, false); }

static void job_work(uv_work_t *w) {
        lg_image_job *j = w->data;
        lg_image_store *st = j->jobs->images;
        switch (j->kind) {
        case JOB_IMPORT:
                j->r = lg_image_import(st, j->fd_path, j->name, job_progress, j, &j->img, &j->err);
                break;
        case JOB_PULL: {
                struct lg_registry_auth auth = {.username = j->username, .password = j->password,
                                                .insecure = j->insecure};
                j->r = lg_image_pull_lazy(st, j->ref, &auth, j->lazy, job_progress, j, &j->img, &j->report, &j->err);
                break;
        }
        case JOB_CONVERT: {
                struct lg_registry_auth auth = {.username = j->username, .password = j->password,
                                                .insecure = j->insecure};
                j->r = lg_image_convert(st, j->ref, j->chunk_size, j->push ? &auth : NULL, job_progress, j,
                                        &j->convert, &j->err);
                break;
        }
        case JOB_GC: {
                struct lg_image_gc_keep keep = {(const char *const *) j->keep, j->n_keep,
                                                (const char *const *) j->keep_ids, j->n_keep_ids};
                uint64_t extra = 0;
                j->r = 0;
                /* First: the chunks of what it removes go in the image
                 * GC's chunk GC. */
                if (j->extra_gc)
                        j->r = j->jobs->ops->extra_gc_run(TAKE_PTR(j->extra_gc), &extra, &j->err);
                if (j->r >= 0)
                        j->r = lg_image_gc(st, &keep, &j->gc, &j->err);
                j->gc.packages_removed = extra;
                break;
        }
        }
}

/* The temporary file's /proc path in a message said as "the archive". */
static void name_the_archive(lg_image_job *j) {
        char *at = j->fd_path[0] ? strstr(j->err.msg, j->fd_path) : NULL;
        if (!at)
                return;
        char rest[sizeof(j->err.msg)];
        snprintf(rest, sizeof(rest), "%s", at + strlen(j->fd_path));
        snprintf(at, sizeof(j->err.msg) - (size_t) (at - j->err.msg), "the archive%s", rest);
}

static void job_done(uv_work_t *w, int status) {
        lg_image_job *j = w->data;
        if (status < 0 && j->r >= 0)
                j->r = lg_error_setm(&j->err, -status, "the job was cancelled");
        if (j->cancelled)
                return job_free(j);
        flush_progress(j, true); /* the last progress, if it is still pending */
        if (j->r < 0)
                name_the_archive(j);
        struct lg_image_job_result res = {
                .status = j->r < 0 ? j->r : 0,
                .err = &j->err,
                .registry = j->kind == JOB_PULL || (j->kind == JOB_CONVERT && j->push),
                .img = j->r < 0 ? NULL : j->img,
                .gc = j->r < 0 || j->kind != JOB_GC ? NULL : &j->gc,
                .pull = j->r < 0 || j->kind != JOB_PULL ? NULL : &j->report,
                .convert = j->r < 0 || j->kind != JOB_CONVERT ? NULL : &j->convert,
        };
        j->done(&res, j->ud);
        job_free(j);
}

/* Queue the job; < 0 (and j freed) when it cannot be. */
static int job_start(lg_image_job *j, lg_image_progress_fn progress, lg_image_done_fn done, void *ud,
                     struct lg_error *err) {
        j->progress = progress;
        j->done = done;
        j->ud = ud;
        /* Without the async handle there is no progress, only the end. */
        if (progress && uv_async_init(j->jobs->loop, &j->async, on_async) == 0)
                j->async_open = true;
        j->work.data = j;
        int r = uv_queue_work(j->jobs->loop, &j->work, job_work, job_done);
        if (r < 0) {
                job_free(j);
                return lg_error_setm(err, ENOMEM, "cannot queue the work: %s", uv_strerror(r));
        }
        j->queued = true;
        return 0;
}

void lg_image_job_cancel(lg_image_job *j) {
        j->cancelled = true;
        if (!j->queued) /* still reading the upload */
                job_free(j);
}

/* ---- import --------------------------------------------------------------------- */

int lg_image_import_begin(lg_image_jobs *jobs, const char *name, lg_image_job **ret, struct lg_error *err) {
        int r = lg_mkdir_p(jobs->tmp_dir, 0700);
        if (r < 0)
                return lg_error_setm(err, -r, "cannot create `%s`: %s", jobs->tmp_dir, strerror(-r));
        lg_image_job *j = job_new(jobs, JOB_IMPORT);
        if (!j || (name && *name && !(j->name = strdup(name)))) {
                if (j)
                        job_free(j);
                return lg_error_setm(err, ENOMEM, "out of memory");
        }
        char tmpl[4200];
        snprintf(tmpl, sizeof(tmpl), "%s/import-XXXXXX", jobs->tmp_dir);
        j->fd = mkostemp(tmpl, O_CLOEXEC);
        if (j->fd < 0) {
                r = -errno;
                job_free(j);
                return lg_error_setm(err, -r, "cannot create a temporary file in `%s`: %s", jobs->tmp_dir,
                                     strerror(-r));
        }
        /* Unlinked at once: nothing is left behind, even after a crash. */
        unlink(tmpl);
        snprintf(j->fd_path, sizeof(j->fd_path), "/proc/self/fd/%d", j->fd);
        *ret = j;
        return 0;
}

void lg_image_import_write(lg_image_job *j, const void *data, size_t len) {
        if (j->write_err)
                return;
        int r = lg_write_all(j->fd, data, len);
        if (r < 0)
                j->write_err = r;
        j->received += len;
}

int lg_image_import_finish(lg_image_job *j, lg_image_progress_fn progress, lg_image_done_fn done, void *ud,
                           struct lg_error *err) {
        int r = 0;
        if (j->write_err == -ENOSPC)
                r = lg_error_setm(err, ENOSPC, "%s", "no space left for the archive on legiond's disk");
        else if (j->write_err)
                r = lg_error_setm(err, -j->write_err, "cannot store the archive: %s", strerror(-j->write_err));
        else if (j->received == 0)
                r = lg_error_setm(err, ENODATA, "%s",
                                  "the request body must be an image archive (docker save or OCI layout tar)");
        if (r < 0) {
                job_free(j);
                return r;
        }
        return job_start(j, progress, done, ud, err);
}

/* ---- pull and gc ------------------------------------------------------------------ */

/* A job of ref with auth's credentials copied. */
static lg_image_job *job_with_auth(lg_image_jobs *jobs, enum job_kind kind, const char *ref,
                                   const struct lg_registry_auth *auth) {
        lg_image_job *j = job_new(jobs, kind);
        bool ok = j && (j->ref = strdup(ref));
        if (ok && auth && auth->username)
                ok = (j->username = strdup(auth->username));
        if (ok && auth && auth->password)
                ok = (j->password = strdup(auth->password));
        if (!ok) {
                if (j)
                        job_free(j);
                return NULL;
        }
        j->insecure = auth && auth->insecure;
        return j;
}

int lg_image_pull_start(lg_image_jobs *jobs, const char *ref, const struct lg_registry_auth *auth,
                        enum lg_image_lazy_mode lazy, lg_image_progress_fn progress, lg_image_done_fn done, void *ud,
                        lg_image_job **ret, struct lg_error *err) {
        lg_image_job *j = job_with_auth(jobs, JOB_PULL, ref, auth);
        if (!j)
                return lg_error_setm(err, ENOMEM, "out of memory");
        j->lazy = lazy;
        int r = job_start(j, progress, done, ud, err);
        if (r >= 0)
                *ret = j;
        return r;
}

int lg_image_convert_start(lg_image_jobs *jobs, const char *ref, uint32_t chunk_size,
                           const struct lg_registry_auth *push_auth, lg_image_progress_fn progress,
                           lg_image_done_fn done, void *ud, lg_image_job **ret, struct lg_error *err) {
        lg_image_job *j = job_with_auth(jobs, JOB_CONVERT, ref, push_auth);
        if (!j)
                return lg_error_setm(err, ENOMEM, "out of memory");
        j->chunk_size = chunk_size;
        j->push = push_auth != NULL;
        int r = job_start(j, progress, done, ud, err);
        if (r >= 0)
                *ret = j;
        return r;
}

int lg_image_gc_start(lg_image_jobs *jobs, lg_image_done_fn done, void *ud, lg_image_job **ret,
                      struct lg_error *err) {
        lg_image_job *j = job_new(jobs, JOB_GC);
        if (!j)
                return lg_error_setm(err, ENOMEM, "out of memory");
        /* Layers of running (and warm) sandboxes stay, whatever names
         * point at them. Without the list, GC would take them: refuse. */
        if (jobs->ops) {
                int r = jobs->ops->layers_in_use(jobs->ud, true, &j->keep, &j->n_keep);
                if (r < 0) {
                        job_free(j);
                        return lg_error_setm(err, -r, "cannot list the layers in use: %s", strerror(-r));
                }
                /* Likewise the images run by id: without the list, GC would
                 * drop the dangling ones an app or pool group still runs. */
                if (jobs->ops->images_in_use && (r = jobs->ops->images_in_use(jobs->ud, &j->keep_ids, &j->n_keep_ids)) < 0) {
                        job_free(j);
                        return lg_error_setm(err, -r, "cannot list the images in use: %s", strerror(-r));
                }
                if (jobs->ops->extra_gc_prepare && (r = jobs->ops->extra_gc_prepare(jobs->ud, &j->extra_gc, err)) < 0) {
                        job_free(j);
                        return r;
                }
        }
        int r = job_start(j, NULL, done, ud, err);
        if (r >= 0)
                *ret = j;
        return r;
}

/* ---- remove ------------------------------------------------------------------------- */

/* True when every layer of img is in use by a running sandbox. */
static bool image_in_use(lg_image_jobs *jobs, const struct lg_image *img) {
        char **used = NULL;
        size_t n = 0;
        if (!jobs->ops || img->n_layers == 0 || jobs->ops->layers_in_use(jobs->ud, false, &used, &n) < 0)
                return false;
        bool all = true;
        for (size_t i = 0; all && i < img->n_layers; i++) {
                bool found = false;
                for (size_t k = 0; !found && k < n; k++)
                        found = used[k] && !strcmp(used[k], img->layer_dirs[i]);
                all = found;
        }
        free_strv_n(used, n);
        return all;
}

int lg_image_jobs_remove(lg_image_jobs *jobs, const char *ref, bool force, struct lg_error *err) {
        struct lg_image *img = NULL;
        int r = lg_image_get(jobs->images, ref, &img, err);
        if (r < 0)
                return r;
        size_t n_names = 0;
        for (size_t i = 0; img->names && img->names[i]; i++)
                n_names++;
        /* Removing one of several names only untags; the last name (or the
         * id) of an image a running pod uses needs force. */
        bool last = n_names <= 1 || !strncmp(ref, "sha256:", 7) || !strcmp(ref, img->id);
        /* A pool group or app that names it would fail at its next use:
         * it must let go first, force or not. */
        char who[200];
        if (last && jobs->ops && jobs->ops->image_user && jobs->ops->image_user(jobs->ud, img->id, who, sizeof(who)) > 0) {
                lg_image_free(img);
                return lg_error_setm(err, EBUSY, "image `%s` is used by %s (change or delete it first)", ref, who);
        }
        if (last && !force && image_in_use(jobs, img)) {
                lg_image_free(img);
                return lg_error_setm(err, EBUSY,
                                     "image `%s` is used by a running pod (?force=true removes it anyway)", ref);
        }
        char id[sizeof(img->id)];
        snprintf(id, sizeof(id), "%s", img->id);
        lg_image_free(img);
        r = lg_image_remove(jobs->images, ref, err);
        if (r < 0)
                return r;
        /* Warm pod sandboxes of the image go with any of its names: made
         * again at its next use if it is still there. */
        if (jobs->ops)
                jobs->ops->image_removed(jobs->ud, id);
        return 0;
}
