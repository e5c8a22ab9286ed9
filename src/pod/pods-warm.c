/* Warm pod sandboxes: for each of the images pods used most recently, a
 * few sandboxes made ahead of time (layers mounted, namespaces, cgroup,
 * everything but the workload), so that a pod's first container skips the
 * creation and only receives its workload (lg_sandbox_start_with), the way
 * function placeholders work (src/node/node.c).
 *
 * A warm sandbox is what ctr_build_sandbox_spec would make for a container
 * of that image with the default rootfs size, its own network and IPC
 * namespaces and no limits but pids; the container's limits are set on
 * its cgroup when it is taken (lg_sandbox_set_limits), and its command,
 * environment, working directory, user, hostname and log come with the
 * launch. Nothing of a workload ever runs in it before it is taken, and it
 * is used once.
 *
 * Policy (docs/pods.md): LEGION_POD_WARM sandboxes per image (1; 0 turns
 * this off), for the LEGION_POD_WARM_IMAGES most recently used images (4,
 * least recently used dropped first); an image unused for
 * LEGION_POD_WARM_IDLE_S seconds (300) loses its warm sandboxes. They are
 * made on the thread pool at a lower CPU priority after a container that
 * could have used one started, so that they compete little with the pod
 * starting; they go back to legiond's priority when taken. They are
 * destroyed when their image is removed, and at lg_pods_free.
 *
 * The pool itself is the node's warm-pool component (node/warm.h), one
 * pool per image keyed "image:<id>", retried only when the image is used
 * again (a broken image makes one attempt per pod, not a loop); this file
 * keeps which images have one (most recently used, idle) and makes and
 * destroys their sandboxes with the node agent's requests (off the loop,
 * creation at nice +10: LG_AGENT_LOW_PRIO). Everything here runs on
 * legiond's loop. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/warm.h"
#include "pod/pods-internal.h"

#define DEFAULT_PER_IMAGE 1
#define DEFAULT_IMAGES 4
#define DEFAULT_IDLE_S 300

struct warm_image;

/* One warm sandbox: being made (req under way), then ready. */
struct warm_sb {
        lg_warm_item wi;           /* first: the pool gives it back */
        struct warm_image *img;
        lg_agent_req req;          /* its create */
        struct lg_sandbox_spec spec;
        bool made;                 /* the create is done */
        bool discarded;            /* out of the pool while being made */
        int netns, ipcns;
};

struct warm_image {
        struct warm_image *next;
        struct warm_pool *pool;
        /* Only id and layer_dirs are set (owned here): all a warm
         * sandbox's spec needs, and what image GC must keep. */
        struct lg_image img;
        lg_warm_pool *wp;          /* NULL once dropped */
        uint64_t last_used;        /* loop time, ms */
        unsigned n_making, n_killing;
        uint64_t made, failed;
        bool dropped;              /* on pool->dropped until its requests are done */
        bool removed;              /* dropped because the image was removed */
};

struct warm_pool {
        lg_pods *m;
        lg_warm *warm;
        unsigned per_image, max_images;
        uint64_t idle_ms;
        struct warm_image *images; /* most recently used first */
        struct warm_image *dropped;
        uv_timer_t idle_timer;
        bool timer_closed;
        uint64_t taken, missed;
};

static unsigned env_uint(const char *name, unsigned def, unsigned max) {
        const char *s = getenv(name);
        if (!s || !*s)
                return def;
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        return *end || v > max ? def : (unsigned) v;
}

/* ---- images ----------------------------------------------------------------- */

static void image_free(struct warm_image *wi) {
        for (size_t i = 0; i < wi->img.n_layers; i++)
                free(wi->img.layer_dirs[i]);
        free(wi->img.layer_dirs);
        free(wi);
}

static void release_dropped(struct warm_image *wi) {
        if (!wi->dropped || wi->n_making || wi->n_killing)
                return;
        POD_LIST_UNLINK(wi->pool->dropped, wi);
        image_free(wi);
}

static struct warm_image *find_image(struct warm_pool *p, const char *id) {
        for (struct warm_image *wi = p->images; wi; wi = wi->next)
                if (!strcmp(wi->img.id, id))
                        return wi;
        return NULL;
}

static void killed(void *arg) {
        struct warm_image *wi = arg;
        wi->n_killing--;
        release_dropped(wi);
}

/* A made sandbox nobody will take: destroyed off the loop; its image's
 * layers count as used until that is done. */
static void kill_ws(struct warm_sb *ws) {
        struct warm_image *wi = ws->img;
        if (ws->netns >= 0)
                close(ws->netns);
        if (ws->ipcns >= 0)
                close(ws->ipcns);
        if (pods_destroy(wi->pool->m, ws->req.id, killed, wi))
                wi->n_killing++;
        free(ws);
}

/* Out of the pool (idle, least recently used, removed): its sandboxes
 * are destroyed, those being made when their create is done. */
static void drop_image(struct warm_image *wi, bool removed) {
        struct warm_pool *p = wi->pool;
        POD_LIST_UNLINK(p->images, wi);
        wi->dropped = true;
        wi->removed = removed;
        wi->next = p->dropped;
        p->dropped = wi;
        lg_warm_pool_delete(wi->wp);
        wi->wp = NULL;
        release_dropped(wi);
}

/* ---- making ------------------------------------------------------------------ */

static void made(lg_agent_req *req) {
        struct warm_sb *ws = req->data;
        struct warm_image *wi = ws->img;
        wi->n_making--;
        ws->made = true;
        if (req->result < 0) {
                wi->failed++;
                lg_warm_failed(&ws->wi, req->err.msg);
                free(ws);
        } else {
                ws->netns = req->out.netns_fd;
                ws->ipcns = req->out.ipcns_fd;
                wi->made++;
                if (ws->discarded)
                        kill_ws(ws);
                else
                        lg_warm_ready(&ws->wi);
        }
        release_dropped(wi);
}

static int warm_make(lg_warm_pool *wp, void *data, struct lg_error *err) {
        struct warm_image *wi = data;
        struct warm_sb *ws = calloc(1, sizeof(*ws));
        if (!ws)
                return lg_error_set(err, ENOMEM, "out of memory");
        ws->img = wi;
        ws->netns = ws->ipcns = -1;
        pods_base_spec(wi->pool->m, &wi->img, POD_DEFAULT_ROOTFS, &ws->spec);
        ws->req.data = ws;
        /* Its address while it waits (no tenant yet: it reaches DNS
         * only); the pod that takes it gets it. */
        ws->req.in.create.net = (struct lg_agent_net){.attach = wi->pool->m->net != NULL};
        /* The pod that takes it keeps its namespaces. */
        int r = lg_agent_create(wi->pool->m->agent, &ws->req, NULL, &ws->spec, LG_AGENT_LOW_PRIO | LG_AGENT_OPEN_NS,
                                made);
        if (r < 0) {
                free(ws);
                return lg_error_set(err, -r, "create a warm sandbox of image `%s`", wi->img.id);
        }
        wi->n_making++;
        lg_warm_add(wp, &ws->wi);
        return 0;
}

static void warm_discard(lg_warm_item *item, void *data) {
        (void) data;
        struct warm_sb *ws = (struct warm_sb *) item;
        if (ws->made)
                kill_ws(ws);
        else
                ws->discarded = true; /* made() destroys it */
}

static const struct lg_warm_ops warm_ops = {.make = warm_make, .discard = warm_discard};

/* ---- the pool ---------------------------------------------------------------- */

static void on_idle(uv_timer_t *t) {
        struct warm_pool *p = t->data;
        uint64_t now = uv_now(p->m->loop);
        for (struct warm_image *wi = p->images, *next; wi; wi = next) {
                next = wi->next;
                if (now - wi->last_used >= p->idle_ms)
                        drop_image(wi, false);
        }
}

int warm_new(lg_pods *m, struct lg_error *err) {
        struct warm_pool *p = calloc(1, sizeof(*p));
        if (!p)
                return lg_error_set(err, ENOMEM, "out of memory");
        int r = lg_warm_new(m->loop, &p->warm, err);
        if (r < 0) {
                free(p);
                return r;
        }
        p->m = m;
        p->per_image = env_uint("LEGION_POD_WARM", DEFAULT_PER_IMAGE, 16);
        p->max_images = env_uint("LEGION_POD_WARM_IMAGES", DEFAULT_IMAGES, 64);
        if (p->max_images == 0)
                p->per_image = 0;
        p->idle_ms = (uint64_t) env_uint("LEGION_POD_WARM_IDLE_S", DEFAULT_IDLE_S, 86400) * 1000;
        if (p->idle_ms == 0)
                p->idle_ms = 1000;
        uv_timer_init(m->loop, &p->idle_timer);
        p->idle_timer.data = p;
        uint64_t every = p->idle_ms / 4 < 1000 ? 1000 : p->idle_ms / 4 > 60000 ? 60000 : p->idle_ms / 4;
        if (p->per_image)
                uv_timer_start(&p->idle_timer, on_idle, every, every);
        /* Never what keeps legiond's loop running. */
        uv_unref((uv_handle_t *) &p->idle_timer);
        m->warm = p;
        return 0;
}

static void timer_closed(uv_handle_t *h) {
        struct warm_pool *p = h->data;
        p->timer_closed = true;
}

void warm_free(lg_pods *m) {
        struct warm_pool *p = m->warm;
        if (!p)
                return;
        while (p->images)
                drop_image(p->images, false);
        lg_warm_free(p->warm);
        uv_close((uv_handle_t *) &p->idle_timer, timer_closed);
        /* Sandboxes being made or destroyed: wait for their requests. */
        while (p->dropped || !p->timer_closed)
                uv_run(m->loop, UV_RUN_ONCE);
        uv_run(m->loop, UV_RUN_NOWAIT); /* lg_warm's handles close */
        free(p);
        m->warm = NULL;
}

bool warm_fits(const struct ctr *c) {
        const struct warm_pool *p = c->pod->mgr->warm;
        return p && p->per_image && c->img && c->makes_ns && !c->pod->host_network &&
               c->sspec.rootfs_bytes == POD_DEFAULT_ROOTFS;
}

int warm_take(lg_pods *m, const struct lg_image *img, char *id, int *pidfd, int *netns, int *ipcns, char *ip) {
        struct warm_pool *p = m->warm;
        struct warm_image *wi = p ? find_image(p, img->id) : NULL;
        struct warm_sb *ws = wi ? (struct warm_sb *) lg_warm_take(wi->wp) : NULL;
        if (!ws) {
                if (p)
                        p->missed++;
                return 0;
        }
        p->taken++;
        wi->last_used = uv_now(m->loop);
        snprintf(id, LG_AGENT_ID_MAX, "%s", ws->req.id);
        *pidfd = ws->req.out.pidfd;
        *netns = ws->netns;
        *ipcns = ws->ipcns;
        snprintf(ip, LG_NET_IP_MAX, "%s", ws->req.out.net.ip);
        free(ws);
        return 1;
}

void warm_used(lg_pods *m, const struct lg_image *img) {
        struct warm_pool *p = m->warm;
        if (!p || !p->per_image)
                return;
        struct warm_image *wi = find_image(p, img->id);
        if (wi) {
                POD_LIST_UNLINK(p->images, wi); /* back in first: most recently used */
        } else {
                wi = calloc(1, sizeof(*wi));
                if (!wi)
                        return;
                wi->pool = p;
                snprintf(wi->img.id, sizeof(wi->img.id), "%s", img->id);
                wi->img.layer_dirs = calloc(img->n_layers + 1, sizeof(char *));
                bool ok = wi->img.layer_dirs != NULL;
                for (size_t i = 0; ok && i < img->n_layers; i++) {
                        ok = (wi->img.layer_dirs[i] = strdup(img->layer_dirs[i])) != NULL;
                        wi->img.n_layers += ok;
                }
                char key[sizeof(wi->img.id) + 8];
                snprintf(key, sizeof(key), "image:%s", img->id);
                struct lg_warm_pool_config wc = {.key = key, .target = p->per_image,
                                                 .retry = LG_WARM_RETRY_WHEN_USED, .ops = &warm_ops, .data = wi};
                if (!ok || lg_warm_pool_set(p->warm, &wc, &wi->wp, NULL) < 0) {
                        image_free(wi);
                        return;
                }
        }
        wi->next = p->images;
        p->images = wi;
        wi->last_used = uv_now(m->loop);
        lg_warm_used(wi->wp);
        /* Beyond max_images, the least recently used go. */
        unsigned n = 0;
        for (struct warm_image *x = p->images, *next; x; x = next) {
                next = x->next;
                if (++n > p->max_images)
                        drop_image(x, false);
        }
}

void warm_layers(lg_pods *m, struct lg_strlist *l) {
        struct warm_pool *p = m->warm;
        if (!p)
                return;
        struct warm_image *lists[2] = {p->images, p->dropped};
        for (int k = 0; k < 2; k++)
                for (struct warm_image *wi = lists[k]; wi; wi = wi->next) {
                        struct lg_warm_stats st = {0};
                        if (wi->wp)
                                lg_warm_pool_stats(wi->wp, &st);
                        /* An image removed: its warm sandboxes are being
                         * destroyed, and nothing of a workload ever ran in
                         * them; image GC need not wait for that. */
                        if ((!st.ready && !wi->n_making && !wi->n_killing) || wi->removed)
                                continue;
                        for (size_t i = 0; i < wi->img.n_layers; i++)
                                lg_strlist_add(l, wi->img.layer_dirs[i]);
                }
}

/* ---- public ------------------------------------------------------------------ */

void lg_pods_image_removed(lg_pods *m, const char *image_id) {
        struct warm_pool *p = m ? m->warm : NULL;
        struct warm_image *wi = p ? find_image(p, image_id) : NULL;
        if (wi)
                drop_image(wi, true);
}

json_t *lg_pods_warm_json(lg_pods *m) {
        struct warm_pool *p = m ? m->warm : NULL;
        json_t *items = json_array();
        uint64_t now = m ? uv_now(m->loop) : 0;
        for (struct warm_image *wi = p ? p->images : NULL; wi; wi = wi->next) {
                struct lg_warm_stats st;
                lg_warm_pool_stats(wi->wp, &st);
                json_t *o = json_pack("{s:s, s:i, s:i, s:I, s:I, s:I, s:I}", "imageID", wi->img.id, "ready",
                                      (int) st.ready, "making", (int) wi->n_making, "taken", (json_int_t) st.taken,
                                      "made", (json_int_t) wi->made, "failed", (json_int_t) wi->failed,
                                      "idleSeconds", (json_int_t) ((now - wi->last_used) / 1000));
                if (o && st.last_error[0])
                        json_object_set_new(o, "lastError", json_string(st.last_error));
                json_array_append_new(items, o);
        }
        return json_pack("{s:i, s:i, s:I, s:I, s:I, s:o}", "perImage", p ? (int) p->per_image : 0, "maxImages",
                         p ? (int) p->max_images : 0, "idleSeconds", (json_int_t) (p ? p->idle_ms / 1000 : 0),
                         "taken", (json_int_t) (p ? p->taken : 0), "missed", (json_int_t) (p ? p->missed : 0),
                         "images", items);
}
