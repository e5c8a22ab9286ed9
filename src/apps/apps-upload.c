/* The package upload pipeline (apps.h, "package uploads"): the body into a
 * blob writer on the loop, then commit and extraction as jobs on libuv's
 * thread pool, one at a time in arrival order, and the result recorded in
 * the store from the loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/apps-internal.h"

struct lg_apps_upload {
        lg_apps *a;
        struct lg_blob_writer *w;
        struct lg_error err;
        int failed;            /* the first write's error */
        uv_work_t work;
        lg_apps_upload *next;  /* in the wait list */
        bool queued;           /* waiting or running */
        bool cancelled;        /* the client went away */
        lg_apps_upload_cb cb;
        void *ud;
        /* the job's results */
        int r;
        bool committed;        /* dg is the blob's digest */
        struct lg_digest dg;
        uint64_t size;
        struct lg_pkg_info info;
        /* A package extracted again for lg_apps_activate (no writer, no
         * callback): the app to activate once its tree is back. */
        char reextract_app[160];
};

static void upload_free(lg_apps_upload *u) {
        lg_blob_abort(u->w);
        lg_pkg_info_free(&u->info);
        free(u);
}

int lg_apps_upload_begin(lg_apps *a, lg_apps_upload **ret, struct lg_error *err) {
        lg_apps_upload *u = calloc(1, sizeof(*u));
        if (!u)
                return lg_error_set(err, ENOMEM, "upload");
        u->a = a;
        int r = lg_blob_begin(a->blobs, &u->w, err);
        if (r < 0) {
                free(u);
                return r;
        }
        *ret = u;
        return 0;
}

uint64_t lg_apps_upload_max_bytes(lg_apps *a) { return lg_blobstore_max_bytes(a->blobs); }

void lg_apps_upload_write(lg_apps_upload *u, const void *data, size_t len) {
        if (u->failed)
                return;
        int r = lg_blob_write(u->w, data, len, &u->err);
        if (r < 0)
                u->failed = r;
}

/* On the thread pool: only the blob store, never the store. */
static void upload_work(uv_work_t *w) {
        lg_apps_upload *u = w->data;
        int r = 0;
        if (!u->reextract_app[0]) {
                r = lg_blob_commit(TAKE_PTR(u->w), NULL, &u->dg, &u->err);
                u->committed = r >= 0;
        }
        /* Extract now: a bad archive is refused at upload, with the entry
         * that is wrong, and its half-built tree is removed here. */
        if (r >= 0)
                r = lg_blob_extract(u->a->blobs, u->dg.hex, NULL, &u->info, &u->err);
        u->r = r;
}

static void run_next(lg_apps *a);

/* A re-extraction done: activate its app now that the tree is back, or
 * say in the app's log why not. */
static void reextract_done(lg_apps_upload *u, int r) {
        char line[700];
        const char *slash = strchr(u->reextract_app, '/');
        if (r >= 0 && slash) {
                char ns[160];
                snprintf(ns, sizeof(ns), "%.*s", (int) (slash - u->reextract_app), u->reextract_app);
                r = lg_apps_activate(u->a, ns, slash + 1, &u->err);
        }
        if (r < 0) {
                snprintf(line, sizeof(line), "package %.19s could not be extracted again: %s", u->dg.hex, u->err.msg);
                lg_apps_log(u->reextract_app, line, u->a);
        }
}

static void upload_done(uv_work_t *w, int status) {
        lg_apps_upload *u = w->data;
        lg_apps *a = u->a;
        int r = u->r;
        if (status < 0 && r >= 0)
                r = lg_error_setm(&u->err, -status, "the upload was cancelled");
        if (u->reextract_app[0]) {
                reextract_done(u, r);
        } else if (r >= 0) {
                /* Kept even if the client has gone: the package is good. */
                r = lg_store_blob_put(a->store, u->dg.hex, u->size, "application/octet-stream", NULL, &u->err);
        } else if (u->committed) {
                /* Refused: nothing of it is kept, unless the same bytes were
                 * uploaded before (jobs run one at a time, so no other
                 * upload can record this digest meanwhile). */
                struct lg_blob known;
                struct lg_error del_err = {0};
                if (lg_store_blob_get(a->store, u->dg.hex, &known, NULL) < 0)
                        (void) lg_blob_delete(a->blobs, u->dg.hex, &del_err); /* the refusal is what is said */
        }
        if (!u->cancelled && !u->reextract_app[0]) {
                r = r < 0 ? r : 0;
                struct lg_package pkg = {.digest = u->dg.hex, .size = u->size, .info = &u->info};
                u->cb(r, r < 0 ? NULL : &pkg, &u->err, u->ud);
        }
        a->jobs.running = NULL;
        upload_free(u);
        run_next(a);
}

static void run_next(lg_apps *a) {
        while (!a->jobs.running && a->jobs.head) {
                lg_apps_upload *u = a->jobs.head;
                a->jobs.head = u->next;
                if (!a->jobs.head)
                        a->jobs.tail = &a->jobs.head;
                a->jobs.running = u;
                u->work.data = u;
                int r = uv_queue_work(a->loop, &u->work, upload_work, upload_done);
                if (r < 0) {
                        u->r = lg_error_setm(&u->err, ENOMEM, "cannot queue the package: %s", uv_strerror(r));
                        upload_done(&u->work, 0);
                }
        }
}

int lg_apps_upload_finish(lg_apps_upload *u, lg_apps_upload_cb cb, void *ud, struct lg_error *err) {
        if (u->failed < 0) {
                int r = u->failed;
                *err = u->err;
                upload_free(u);
                return r;
        }
        lg_apps *a = u->a;
        u->cb = cb;
        u->ud = ud;
        u->size = lg_blob_written(u->w);
        u->queued = true;
        *a->jobs.tail = u;
        a->jobs.tail = &u->next;
        run_next(a);
        return 0;
}

int apps_reextract(lg_apps *a, const char *key, const char *digest, struct lg_error *err) {
        if (!lg_digest_valid(digest))
                return lg_error_setm(err, EINVAL, "package of app `%s` is no digest", key);
        lg_apps_upload *u = calloc(1, sizeof(*u));
        if (!u)
                return lg_error_set(err, ENOMEM, "package of app `%s`", key);
        u->a = a;
        snprintf(u->dg.hex, sizeof(u->dg.hex), "%s", digest);
        snprintf(u->reextract_app, sizeof(u->reextract_app), "%s", key);
        u->queued = true;
        *a->jobs.tail = u;
        a->jobs.tail = &u->next;
        run_next(a);
        return 0;
}

static void unlink_queued(lg_apps *a, lg_apps_upload *u) {
        lg_apps_upload **p = &a->jobs.head;
        while (*p != u)
                p = &(*p)->next;
        *p = u->next;
        if (!*p)
                a->jobs.tail = p;
}

void lg_apps_upload_cancel(lg_apps_upload *u) {
        lg_apps *a = u->a;
        if (a->jobs.running == u) {
                u->cancelled = true; /* upload_done frees it */
                return;
        }
        if (u->queued)
                unlink_queued(a, u);
        upload_free(u);
}

void apps_upload_drop_queued(lg_apps *a) {
        while (a->jobs.head) {
                lg_apps_upload *u = a->jobs.head;
                unlink_queued(a, u);
                upload_free(u);
        }
}
