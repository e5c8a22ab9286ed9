/* Image jobs on legiond's loop: import (an archive streamed to disk first),
 * pull, convert and GC run lg_image_import / lg_image_pull_lazy /
 * lg_image_convert / lg_image_gc, which
 * block for seconds to minutes, on libuv's thread pool while the loop
 * keeps serving; and removal, which must not take the layers of a running
 * pod (docs/api.md, "Images").
 *
 * An import's archive goes to an unlinked temporary file under tmp_dir
 * (read back through /proc/self/fd, so nothing is left behind whatever
 * happens); messages say "the archive" instead of that path.
 *
 * Threading: every call on the loop. A job's progress is reported by the
 * worker thread and handed to the loop (uv_async_t), at most about ten
 * times a second: a new phase or blob always, and the last one before the
 * job's end. Callbacks: progress and done run from the loop, never from
 * inside the call that started the job; done exactly once, unless the job
 * was cancelled first; the ops are called synchronously from inside calls.
 * Memory: never logs; functions return >= 0 or a negative errno with err
 * set; strings given are copied (a password is scrubbed when the job
 * ends); what a callback is given lives until it returns. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"
#include "image/image.h"

typedef struct lg_image_jobs lg_image_jobs;
typedef struct lg_image_job lg_image_job;

/* What the jobs need of the sandboxes that use layers (the pod manager). */
struct lg_image_jobs_ops {
        /* The layer directories in use by running sandboxes, and with warm
         * by warm ones too; the array and its strings become the caller's. */
        int (*layers_in_use)(void *ud, bool warm, char ***ret, size_t *n);
        /* An image was removed (or untagged): sandboxes kept warm for it go. */
        void (*image_removed)(void *ud, const char *image_id);
        /* May be NULL. 1 when something names image_id and needs it kept
         * (a pool group, an app), who then saying what; 0 when not. */
        int (*image_user)(void *ud, const char *image_id, char *who, size_t cap);
        /* May be NULL. The ids of every image something runs by id (pool
         * groups, app revisions): GC keeps those dangling images (a tag
         * moved away from them) indexed. The array and its strings become
         * the caller's. */
        int (*images_in_use)(void *ud, char ***ret, size_t *n);
        /* May be NULL. GC of what lives beside the images in the lazy
         * store (package images' lazy layers): extra_gc_prepare on the
         * loop when a GC starts (< 0: the GC is refused; *job NULL:
         * nothing to do), extra_gc_run on the thread pool before the image
         * GC, whose chunk GC then drops the chunks of what went; run frees
         * job and counts what it removed into *removed; free frees a job
         * that never ran. */
        int (*extra_gc_prepare)(void *ud, void **job, struct lg_error *err);
        int (*extra_gc_run)(void *job, uint64_t *removed, struct lg_error *err);
        void (*extra_gc_free)(void *job);
};

struct lg_image_jobs_config {
        uv_loop_t *loop;
        lg_image_store *images;
        const char *tmp_dir;
        const struct lg_image_jobs_ops *ops; /* NULL: no sandbox uses layers */
        void *ud;
};

int lg_image_jobs_new(const struct lg_image_jobs_config *cfg, lg_image_jobs **ret, struct lg_error *err);
/* Jobs still running must have ended. NULL is fine. */
void lg_image_jobs_free(lg_image_jobs *jobs);

/* The largest archive an import takes (bytes). */
#define LG_IMAGE_IMPORT_MAX (16ull << 30)

struct lg_image_progress {
        const char *phase; /* "read", "download", "extract", "done" */
        const char *what;  /* the blob or file; "archive" for the upload */
        uint64_t done, total;
};

/* The end of a job. status < 0: failed, err says why (registry: whether
 * the failure was the registry's). Otherwise img (import, pull), gc or
 * convert; pull with a pull (how it went: lazily or not, and why). */
struct lg_image_job_result {
        int status;
        const struct lg_error *err;
        bool registry;
        const struct lg_image *img;
        const struct lg_image_gc_result *gc;
        const struct lg_image_pull_report *pull;
        const struct lg_image_convert_result *convert;
};

typedef void (*lg_image_progress_fn)(const struct lg_image_progress *p, void *ud);
typedef void (*lg_image_done_fn)(const struct lg_image_job_result *res, void *ud);

/* An import: name (may be NULL) is the normalized REPOSITORY[:TAG] to give
 * it (lg_image_normalize); the temporary file is made now. */
int lg_image_import_begin(lg_image_jobs *jobs, const char *name, lg_image_job **ret, struct lg_error *err);
/* A chunk of the archive. A failure is kept and reported by finish. */
void lg_image_import_write(lg_image_job *job, const void *data, size_t len);
/* The archive is complete: queue the import. < 0 when a write failed
 * (-ENOSPC ...) or nothing came (-ENODATA): the job is freed, and no
 * callback runs. progress may be NULL. */
int lg_image_import_finish(lg_image_job *job, lg_image_progress_fn progress, lg_image_done_fn done, void *ud,
                           struct lg_error *err);
/* Pull ref from its registry (auth may be NULL), lazily as lazy says
 * (lg_image_pull_lazy); progress may be NULL. */
int lg_image_pull_start(lg_image_jobs *jobs, const char *ref, const struct lg_registry_auth *auth,
                        enum lg_image_lazy_mode lazy, lg_image_progress_fn progress, lg_image_done_fn done, void *ud,
                        lg_image_job **ret, struct lg_error *err);
/* Convert ref to lazy form (lg_image_convert); with push_auth (may hold
 * no credentials, NULL: no push) its lazy artifact is pushed. */
int lg_image_convert_start(lg_image_jobs *jobs, const char *ref, uint32_t chunk_size,
                           const struct lg_registry_auth *push_auth, lg_image_progress_fn progress,
                           lg_image_done_fn done, void *ud, lg_image_job **ret, struct lg_error *err);
/* Remove what no name and no sandbox uses (layers of running and warm
 * sandboxes stay, whatever names point at them), and the dangling images
 * ops->images_in_use does not name. */
int lg_image_gc_start(lg_image_jobs *jobs, lg_image_done_fn done, void *ud, lg_image_job **ret,
                      struct lg_error *err);
/* The client went away: no callback runs any more. A job on the thread
 * pool finishes there first (an import or pull still lands). */
void lg_image_job_cancel(lg_image_job *job);

/* Remove ref: one of several names only untags; the last name (or the id)
 * of an image whose every layer a running sandbox uses is -EBUSY unless
 * force, and of one ops->image_user names -EBUSY even with force. Warm sandboxes of the image go with it. lg_image_remove's errors. */
int lg_image_jobs_remove(lg_image_jobs *jobs, const char *ref, bool force, struct lg_error *err);
