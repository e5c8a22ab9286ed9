/* Surviving a restart (node.h): the records of SERVING instances,
 * adopting the sandboxes a previous legiond left, handing them back to
 * their app revisions, and detaching everything at a shutdown that keeps
 * the workloads running. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "node/node-internal.h"

void node_record_path(const lg_instance *inst, char *buf, size_t cap) {
        snprintf(buf, cap, "%s/%s", inst->node->inst_dir, inst->id);
}

/* The record of a SERVING instance: a few lines, written once. */
int node_record_write(lg_instance *inst) {
        char path[PATH_MAX], tmp[PATH_MAX + 8], buf[4096];
        node_record_path(inst, path, sizeof(path));
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        /* Image instances: their image and port, so that the next
         * legiond gives the router "ip:port" again. */
        int n = snprintf(buf, sizeof(buf),
                         "app=%s\nrevision=%u\npool=%s\nidentifier=%s\ncpu=%llu\npolicy=%s\nimage=%s\nport=%u\n",
                         inst->app ? inst->app : "", inst->revision, inst->pool_name ? inst->pool_name : "",
                         inst->identifier ? inst->identifier : "", (unsigned long long) inst->cpu_millis,
                         inst->net_policy ? inst->net_policy : "", inst->image ? inst->image_id : "",
                         inst->image ? inst->port : 0);
        if (n < 0 || (size_t) n >= sizeof(buf))
                return -ENAMETOOLONG;
        int r = lg_write_file_at(AT_FDCWD, tmp, buf, true);
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        return r;
}

/* ---- adopting ------------------------------------------------------------ */

/* One key=value line of a record (buf is cut there). */
static const char *record_get(char *buf, const char *key) {
        size_t k = strlen(key);
        for (char *line = buf; line && *line;) {
                char *nl = strchr(line, '\n');
                if (!strncmp(line, key, k) && line[k] == '=') {
                        if (nl)
                                *nl = '\0';
                        return line + k + 1;
                }
                line = nl ? nl + 1 : NULL;
        }
        return NULL;
}

/* A record into an instance's fields; -EINVAL when damaged. */
static int record_read(lg_node *node, const char *id, lg_instance *inst) {
        char path[PATH_MAX], buf[4096], copy[4096];
        snprintf(path, sizeof(path), "%s/%s", node->inst_dir, id);
        ssize_t n = lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        static const char *const keys[] = {"app", "revision", "pool", "identifier", "cpu"};
        char *vals[5] = {0};
        bool ok = true;
        for (size_t i = 0; i < 5 && ok; i++) {
                memcpy(copy, buf, sizeof(copy));
                const char *v = record_get(copy, keys[i]);
                ok = v && (vals[i] = strdup(v));
        }
        long long rev = 0, cpu = 0;
        ok = ok && *vals[0] && lg_parse_int(vals[1], 0, UINT32_MAX, &rev) == 0 &&
             lg_parse_int(vals[4], 0, INT64_MAX, &cpu) == 0;
        /* A record from before networking has no policy: the namespace's. */
        memcpy(copy, buf, sizeof(copy));
        const char *policy = record_get(copy, "policy");
        if (ok && policy && *policy && !(inst->net_policy = strdup(policy)))
                ok = false;
        /* An image instance's (a record from before images has none). */
        memcpy(copy, buf, sizeof(copy));
        const char *image = record_get(copy, "image");
        if (ok && image && *image) {
                char copy2[4096];
                memcpy(copy2, buf, sizeof(copy2));
                const char *port = record_get(copy2, "port");
                long long pn = 0;
                ok = port && lg_parse_int(port, 1, 65535, &pn) == 0 && strlen(image) < sizeof(inst->image_id);
                inst->image = ok;
                inst->port = (unsigned) pn;
                snprintf(inst->image_id, sizeof(inst->image_id), "%s", image);
        }
        if (ok) {
                inst->app = TAKE_PTR(vals[0]);
                inst->pool_name = TAKE_PTR(vals[2]);
                inst->identifier = *vals[3] ? TAKE_PTR(vals[3]) : NULL;
                inst->revision = (unsigned) rev;
                inst->cpu_millis = (uint64_t) cpu;
        }
        for (size_t i = 0; i < 5; i++)
                free(vals[i]);
        return ok ? 0 : -EINVAL;
}

static void lost_add(lg_node *node, const lg_instance *inst, const char *why) {
        struct lg_node_lost *l = realloc(node->lost, (node->n_lost + 1) * sizeof(*l));
        if (!l)
                return; /* not reported: the session starts afresh */
        node->lost = l;
        l = &node->lost[node->n_lost++];
        *l = (struct lg_node_lost){.revision = inst->revision};
        snprintf(l->id, sizeof(l->id), "%s", inst->id);
        snprintf(l->app, sizeof(l->app), "%s", inst->app);
        snprintf(l->identifier, sizeof(l->identifier), "%s", inst->identifier ? inst->identifier : "");
        snprintf(l->why, sizeof(l->why), "%s", why);
}

static void adopt_done(lg_agent_req *req) {
        lg_instance *inst = req->data;
        lg_node *node = inst->node;
        node->adopting--;
        if (req->result < 0) {
                /* The agent destroyed what was left of it. */
                if (inst->has_record)
                        lost_add(node, inst, req->err.msg);
                node_instance_release(inst);
        } else if (!inst->has_record) {
                /* A placeholder or an instance not yet serving: replaced. */
                node_instance_release(inst);
        } else if (inst->image && !req->out.net.ip[0]) {
                /* The router reaches an image's server at its address only. */
                lost_add(node, inst, "it has no address on the node network");
                node_instance_release(inst);
        } else {
                inst->control_fd = req->out.control_fd;
                inst->pidfd = req->out.pidfd;
                memcpy(inst->ip, req->out.net.ip, sizeof(inst->ip));
                if (inst->image)
                        snprintf(inst->http_addr, sizeof(inst->http_addr), "%s:%u", inst->ip, inst->port);
                inst->state = ST_SERVING;
                inst->adopted = true;
                inst->anext = node->adopted;
                node->adopted = inst;
        }
        node_unref(inst);
}

/* Submit the adoption of one sandbox a previous legiond left. */
static void adopt_one(lg_node *node, const char *id) {
        lg_instance *inst = calloc(1, sizeof(*inst));
        if (!inst)
                return;
        inst->node = node;
        inst->listen_fd = inst->control_fd = inst->pidfd = -1;
        inst->state = ST_STARTING;
        snprintf(inst->id, sizeof(inst->id), "%s", id);
        snprintf(inst->sock, sizeof(inst->sock), "%s/%s.sock", node->sock_dir, id);
        snprintf(inst->http_addr, sizeof(inst->http_addr), "unix:%s", inst->sock);
        inst->has_record = record_read(node, id, inst) == 0;
        inst->create_req.data = inst;
        if (lg_agent_adopt(node->agent, &inst->create_req, id, adopt_done) < 0) {
                free(inst->app);
                free(inst->identifier);
                free(inst->pool_name);
                free(inst->net_policy);
                free(inst);
                return;
        }
        uv_timer_init(node->loop, &inst->timer);
        inst->timer.data = inst;
        inst->refs = 2; /* the timer, the adopt */
        node_all_link(inst);
        node->adopting++;
}

/* Whatever a previous legiond left in the run directory: its sandboxes
 * (adopted when they served an app, destroyed otherwise), records of
 * instances whose sandbox is gone (lost), socket files of neither. At
 * start, before anything else runs on the loop: it waits for the agent. */
void node_adopt_left(lg_node *node) {
        char **ids = NULL;
        if (lg_sandbox_list(node->sandbox_dir, &ids, NULL) >= 0)
                for (char **id = ids; *id; id++)
                        adopt_one(node, *id);
        lg_sandbox_list_free(ids);
        while (node->adopting)
                uv_run(node->loop, UV_RUN_ONCE);
        const char *dirs[] = {node->inst_dir, node->sock_dir};
        for (size_t k = 0; k < 2; k++) {
                DIR *d = opendir(dirs[k]);
                struct dirent *de;
                while (d && (de = readdir(d))) {
                        if (de->d_name[0] == '.')
                                continue;
                        char id[64];
                        snprintf(id, sizeof(id), "%.*s", (int) strcspn(de->d_name, "."), de->d_name);
                        bool kept = false;
                        for (lg_instance *i = node->adopted; i && !kept; i = i->anext)
                                kept = !strcmp(i->id, id);
                        if (kept)
                                continue;
                        if (k == 0) {
                                bool known = false;
                                for (size_t l = 0; l < node->n_lost && !known; l++)
                                        known = !strcmp(node->lost[l].id, id);
                                lg_instance rec = {.node = node};
                                snprintf(rec.id, sizeof(rec.id), "%s", id);
                                if (!known && record_read(node, id, &rec) == 0)
                                        lost_add(node, &rec, "its sandbox was gone");
                                free(rec.app);
                                free(rec.identifier);
                                free(rec.pool_name);
                                free(rec.net_policy);
                        }
                        unlinkat(dirfd(d), de->d_name, 0);
                }
                if (d)
                        closedir(d);
        }
}

int lg_node_instance_adopt(lg_node *node, const char *app, unsigned revision, lg_instance_ready_cb ready_cb,
                           lg_instance_exit_cb exit_cb, void *userdata, lg_instance **ret) {
        for (lg_instance **pp = &node->adopted; *pp; pp = &(*pp)->anext) {
                lg_instance *inst = *pp;
                if (strcmp(inst->app, app) || inst->revision != revision)
                        continue;
                *pp = inst->anext;
                inst->anext = NULL;
                /* The network's assignments did not survive the restart
                 * (its table is made anew): its tenant again. Failing
                 * later ends it (assigned), as it would end a new one;
                 * failing now (a name too long), it is not taken. */
                struct lg_error err = {0};
                if (inst->ip[0] && node_assign_tenant(inst, inst->app, inst->net_policy, &err) < 0) {
                        node_instance_release(inst);
                        return lg_node_instance_adopt(node, app, revision, ready_cb, exit_cb, userdata, ret);
                }
                inst->ready_cb = ready_cb;
                inst->exit_cb = exit_cb;
                inst->userdata = userdata;
                node_watch(inst);
                *ret = inst;
                return 1;
        }
        return 0;
}

void lg_node_each_adopted(lg_node *node, void (*fn)(const char *app, unsigned revision, const char *identifier,
                                                   const char *lost_why, void *ud),
                          void *ud) {
        for (lg_instance *i = node->adopted; i; i = i->anext)
                fn(i->app, i->revision, i->identifier, NULL, ud);
        for (size_t k = 0; k < node->n_lost; k++) {
                const struct lg_node_lost *l = &node->lost[k];
                fn(l->app, l->revision, l->identifier[0] ? l->identifier : NULL, l->why, ud);
        }
}

void lg_node_adopted_release(lg_node *node, void (*log)(const char *app, const char *line, void *ud), void *ud) {
        char line[800];
        while (node->adopted) {
                lg_instance *inst = node->adopted;
                node->adopted = inst->anext;
                inst->anext = NULL;
                if (log && !inst->released) {
                        snprintf(line, sizeof(line),
                                 "instance %s (revision %u) was not taken back after the restart: destroyed", inst->id,
                                 inst->revision);
                        log(inst->app, line, ud);
                }
                node_instance_release(inst);
        }
        for (size_t k = 0; log && k < node->n_lost; k++) {
                const struct lg_node_lost *l = &node->lost[k];
                snprintf(line, sizeof(line), "instance %s (revision %u) was lost in the restart: %s", l->id,
                         l->revision, l->why);
                log(l->app, line, ud);
        }
        free(node->lost);
        node->lost = NULL;
        node->n_lost = 0;
}

void lg_node_detach_all(lg_node *node) {
        for (lg_instance *inst = node->all; inst; inst = inst->all_next)
                if (inst->state == ST_SERVING && !inst->released) {
                        inst->detached = true;
                        inst->ready_cb = NULL;
                        inst->exit_cb = NULL;
                        node_instance_release(inst);
                }
}

bool lg_instance_adopted(const lg_instance *inst) { return inst->adopted; }
