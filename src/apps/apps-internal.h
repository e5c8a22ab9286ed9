/* The layout of lg_apps, shared by apps.c and apps-upload.c. */
#pragma once

#include "apps/apps.h"

struct lg_apps {
        uv_loop_t *loop;
        lg_store *store;
        struct lg_blobstore *blobs;
        char *logs_dir;
        const struct lg_apps_ops *ops;
        void *ud;
        lg_tenants *tenants;
        /* Package jobs: the one running and the ones waiting for it. */
        struct {
                lg_apps_upload *running;
                lg_apps_upload *head, **tail;
        } jobs;
};

/* Extract package digest again as a package job on the thread pool (never
 * on the loop), then lg_apps_activate app key ("ns/name"); a failure goes
 * to the app's log. 0 when queued. */
int apps_reextract(lg_apps *a, const char *key, const char *digest, struct lg_error *err);
/* lg_apps_free: drop the uploads waiting for their job. */
void apps_upload_drop_queued(lg_apps *a);
