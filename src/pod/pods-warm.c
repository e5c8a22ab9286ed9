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
 * Everything here runs on legiond's loop except make_work (and the
 * destruction of dropped sandboxes, pods_destroy_later), which touch only
 * their job. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "pod/pods-internal.h"

#define DEFAULT_PER_IMAGE 1
#define DEFAULT_IMAGES 4
#define DEFAULT_IDLE_S 300
#define WARM_NICE 10

struct warm_sb {
        struct warm_sb *next;
        lg_sandbox *sb;
        int netns, ipcns;
};

struct warm_image {
        struct warm_image *next;
        struct warm_pool *pool;
        /* Only id and layer_dirs are set (owned here): all a warm
         * sandbox's spec needs, and what image GC must keep. */
        struct lg_image img;
        uint64_t last_used;        /* loop time, ms */
        struct warm_sb *ready;
        unsigned n_ready, n_making, n_killing;
        uint64_t taken, made, failed;
        bool dropped;              /* on pool->dropped until its jobs are done */
};

struct warm_pool {
        lg_pods *m;
        unsigned per_image, max_images;
        uint64_t idle_ms;
        int nice;                  /* legiond's own: taken sandboxes go back to it */
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

static void close_ws(struct warm_sb *ws) {
        if (ws->netns >= 0)
                close(ws->netns);
        if (ws->ipcns >= 0)
                close(ws->ipcns);
}

static void killed(void *arg) {
        struct warm_image *wi = arg;
        wi->n_killing--;
        release_dropped(wi);
}

/* Out of the pool: its ready sandboxes are destroyed now (now = on this
 * thread: an image being removed, whose layers GC may delete next) or on
 * the thread pool (idle, least recently used: the loop may be starting a
 * pod); those being made are destroyed when done. */
static void drop_image(struct warm_image *wi, bool now) {
        struct warm_pool *p = wi->pool;
        POD_LIST_UNLINK(p->images, wi);
        wi->dropped = true;
        wi->next = p->dropped;
        p->dropped = wi;
        while (wi->ready) {
                struct warm_sb *ws = wi->ready;
                wi->ready = ws->next;
                wi->n_ready--;
                close_ws(ws);
                if (now)
                        lg_sandbox_destroy(ws->sb);
                else if (pods_destroy_later(p->m->loop, ws->sb, killed, wi))
                        wi->n_killing++;
                free(ws);
        }
        release_dropped(wi);
}

/* ---- making ------------------------------------------------------------------ */

struct make_job {
        uv_work_t w;
        struct warm_image *wi;
        struct lg_sandbox_spec spec;
        lg_sandbox *sb;
        int netns, ipcns;
        int result;
        struct lg_error err;
};

static void make_work(uv_work_t *w) {
        struct make_job *j = w->data;
        /* A lower priority for this thread while it works, and so for the
         * sandbox's first process it clones (which does most of the work,
         * the mounts): a warm sandbox is made right after a pod started,
         * while that pod's status is still on its way to the client. */
        pid_t tid = gettid();
        errno = 0;
        int old = getpriority(PRIO_PROCESS, (id_t) tid);
        bool reniced = !(old == -1 && errno) &&
                       setpriority(PRIO_PROCESS, (id_t) tid, old + WARM_NICE > 19 ? 19 : old + WARM_NICE) == 0;
        j->result = lg_sandbox_create(&j->spec, &j->sb, &j->err);
        if (j->result >= 0) /* the pod that takes it keeps them */
                j->result = pods_open_ns(j->sb, true, &j->ipcns, &j->netns, &j->err);
        if (reniced)
                setpriority(PRIO_PROCESS, (id_t) tid, old);
}

static void make_done(uv_work_t *w, int status) {
        struct make_job *j = w->data;
        struct warm_image *wi = j->wi;
        wi->n_making--;
        if (status < 0 && j->result >= 0)
                j->result = status; /* cancelled: never ran */
        struct warm_sb *ws = NULL;
        if (j->result >= 0 && !wi->dropped && (ws = calloc(1, sizeof(*ws)))) {
                ws->sb = j->sb;
                ws->netns = j->netns;
                ws->ipcns = j->ipcns;
                ws->next = wi->ready;
                wi->ready = ws;
                wi->n_ready++;
                wi->made++;
        } else {
                if (j->result < 0)
                        wi->failed++;
                if (j->netns >= 0)
                        close(j->netns);
                if (j->ipcns >= 0)
                        close(j->ipcns);
                lg_sandbox_destroy(j->sb);
        }
        free(j);
        release_dropped(wi);
}

/* Queue what is missing. A failure is not retried until the image is
 * used again: a broken image makes one attempt per pod, not a loop. */
static void fill(struct warm_image *wi) {
        struct warm_pool *p = wi->pool;
        while (wi->n_ready + wi->n_making < p->per_image) {
                struct make_job *j = calloc(1, sizeof(*j));
                if (!j)
                        return;
                j->wi = wi;
                j->netns = j->ipcns = -1;
                pods_base_spec(p->m, &wi->img, POD_DEFAULT_ROOTFS, &j->spec);
                j->w.data = j;
                if (uv_queue_work(p->m->loop, &j->w, make_work, make_done) < 0) {
                        free(j);
                        return;
                }
                wi->n_making++;
        }
}

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
        p->m = m;
        p->per_image = env_uint("LEGION_POD_WARM", DEFAULT_PER_IMAGE, 16);
        p->max_images = env_uint("LEGION_POD_WARM_IMAGES", DEFAULT_IMAGES, 64);
        if (p->max_images == 0)
                p->per_image = 0;
        p->idle_ms = (uint64_t) env_uint("LEGION_POD_WARM_IDLE_S", DEFAULT_IDLE_S, 86400) * 1000;
        if (p->idle_ms == 0)
                p->idle_ms = 1000;
        errno = 0;
        p->nice = getpriority(PRIO_PROCESS, 0);
        if (p->nice == -1 && errno)
                p->nice = 0;
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
                drop_image(p->images, true);
        uv_close((uv_handle_t *) &p->idle_timer, timer_closed);
        /* Jobs still making sandboxes: their done callbacks destroy them. */
        while (p->dropped || !p->timer_closed)
                uv_run(m->loop, UV_RUN_ONCE);
        free(p);
        m->warm = NULL;
}

bool warm_fits(const struct ctr *c) {
        const struct warm_pool *p = c->pod->mgr->warm;
        return p && p->per_image && c->img && c->makes_ns && !c->pod->host_network &&
               c->sspec.rootfs_bytes == POD_DEFAULT_ROOTFS;
}

int warm_take(lg_pods *m, const struct lg_image *img, lg_sandbox **sb, int *netns, int *ipcns) {
        struct warm_pool *p = m->warm;
        struct warm_image *wi = p ? find_image(p, img->id) : NULL;
        if (!wi || !wi->ready) {
                if (p)
                        p->missed++;
                return 0;
        }
        struct warm_sb *ws = wi->ready;
        wi->ready = ws->next;
        wi->n_ready--;
        wi->taken++;
        p->taken++;
        wi->last_used = uv_now(m->loop);
        *sb = ws->sb;
        *netns = ws->netns;
        *ipcns = ws->ipcns;
        free(ws);
        /* Made at a lower priority: the workload runs at legiond's. */
        setpriority(PRIO_PROCESS, (id_t) lg_sandbox_pid(*sb), p->nice);
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
                if (!ok) {
                        image_free(wi);
                        return;
                }
        }
        wi->next = p->images;
        p->images = wi;
        wi->last_used = uv_now(m->loop);
        fill(wi);
        /* Beyond max_images, the least recently used go. */
        unsigned n = 0;
        for (struct warm_image *x = p->images, *next; x; x = next) {
                next = x->next;
                if (++n > p->max_images)
                        drop_image(x, false);
        }
}

static int add_str(char ***v, size_t *len, size_t *cap, const char *s) {
        if (*len == *cap) {
                size_t nc = *cap ? *cap * 2 : 16;
                char **nv = realloc(*v, nc * sizeof(char *));
                if (!nv)
                        return -ENOMEM;
                *v = nv;
                *cap = nc;
        }
        if (!((*v)[*len] = strdup(s)))
                return -ENOMEM;
        (*len)++;
        return 0;
}

int warm_layers(lg_pods *m, char ***v, size_t *len, size_t *cap) {
        struct warm_pool *p = m->warm;
        if (!p)
                return 0;
        struct warm_image *lists[2] = {p->images, p->dropped};
        for (int l = 0; l < 2; l++)
                for (struct warm_image *wi = lists[l]; wi; wi = wi->next) {
                        if (!wi->n_ready && !wi->n_making && !wi->n_killing)
                                continue;
                        for (size_t i = 0; i < wi->img.n_layers; i++)
                                if (add_str(v, len, cap, wi->img.layer_dirs[i]) < 0)
                                        return -ENOMEM;
                }
        return 0;
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
        for (struct warm_image *wi = p ? p->images : NULL; wi; wi = wi->next)
                json_array_append_new(items, json_pack("{s:s, s:i, s:i, s:I, s:I, s:I, s:I}", "imageID", wi->img.id,
                                                       "ready", (int) wi->n_ready, "making", (int) wi->n_making,
                                                       "taken", (json_int_t) wi->taken, "made", (json_int_t) wi->made,
                                                       "failed", (json_int_t) wi->failed, "idleSeconds",
                                                       (json_int_t) ((now - wi->last_used) / 1000)));
        return json_pack("{s:i, s:i, s:I, s:I, s:I, s:o}", "perImage", p ? (int) p->per_image : 0, "maxImages",
                         p ? (int) p->max_images : 0, "idleSeconds", (json_int_t) (p ? p->idle_ms / 1000 : 0),
                         "taken", (json_int_t) (p ? p->taken : 0), "missed", (json_int_t) (p ? p->missed : 0),
                         "images", items);
}
