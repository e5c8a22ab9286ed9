/* legiond's wiring of lazy layers: the node's fetcher (src/lazy/lazyd.h)
 * handed to the image store as its lazy ops, the lazy layers mounted again
 * at start, and the fetcher's part of --stop-all. */
#include <stdio.h>
#include <string.h>

#include "legiond/daemon.h"

static void lazy_log(void *ud, const char *line) {
        (void) ud;
        say("%s", line);
}

static int wire_attach(void *ud, const char *hex, const char *mountpoint, struct lg_error *err) {
        struct lg_daemon *d = ud;
        return lg_lazyd_attach(d->lazyd, hex, mountpoint, err);
}

static int wire_detach(void *ud, const char *hex, const char *mountpoint, struct lg_error *err) {
        struct lg_daemon *d = ud;
        return lg_lazyd_detach(d->lazyd, hex, mountpoint, err);
}

static int wire_status(void *ud, const char *hex, struct lg_image_lazy_status *ret, struct lg_error *err) {
        struct lg_daemon *d = ud;
        return lg_lazyd_status(d->lazyd, hex, ret, err);
}

const struct lg_image_lazy_ops lg_daemon_lazy_ops = {
        .attach = wire_attach,
        .detach = wire_detach,
        .status = wire_status,
};

int lg_daemon_lazy_start(struct lg_daemon *d, const struct lg_daemon_lazy_opts *o, struct lg_error *err) {
        struct lg_lazyd_config cfg = {.rate = o->rate, .fetch_timeout_ms = o->fetch_timeout_ms, .log = lazy_log};
        struct lg_error why = {0};
        int r = lg_lazyd_new(d->loop, d->home, &cfg, &d->lazyd, &why);
        /* Not fatal: images are then pulled whole, lazy layers there are
         * not mounted (their images fail to start, saying so). */
        if (r < 0)
                say("lazy: %s; lazy layers cannot be mounted", why.msg);
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/lazy", d->home);
        r = lg_image_store_set_lazy(d->images, dir, d->lazyd ? &lg_daemon_lazy_ops : NULL, d, !o->never, err);
        if (r < 0 || !d->lazyd)
                return r;
        /* Before pods and apps are adopted: their sandboxes' overlays
         * name these mount points. One that fails is said; its images
         * fail to start, the others go on. */
        unsigned n = 0;
        if (lg_image_lazy_attach_all(d->images, &n, &why) < 0)
                say("lazy: %s", why.msg);
        if (n)
                say("lazy: mounted %u lazy layer%s", n, n == 1 ? "" : "s");
        return 0;
}

int lg_daemon_lazy_stop_all(const char *home) {
        struct lg_error err = {0};
        int stopped = 0;
        int r = lg_lazyd_stop_all(home, &stopped, &err);
        if (r < 0)
                say("lazy: %s", err.msg);
        else if (stopped)
                say("stopped the lazy fetcher");
        return r;
}
