/* From a Kubernetes container spec and an image config to a sandbox spec:
 * the command line (command/args against ENTRYPOINT/CMD), environment,
 * working directory, user (image User, names looked up in the image's
 * etc/passwd and etc/group), and resources (limits and requests parsed as
 * Kubernetes quantities). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kube/kube.h"
#include "pod/pods-internal.h"

#define DEFAULT_PIDS 4096
#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* ---- strings -------------------------------------------------------------- */

static void strv_free(char **v) {
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

static size_t strv_len(char *const *v) {
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}

/* Append every string of a JSON array, or of a NULL-terminated vector. */
static int strv_add_json(char ***v, size_t *n, const json_t *arr) {
        size_t i;
        const json_t *x;
        char **nv = realloc(*v, (*n + json_array_size(arr) + 1) * sizeof(char *));
        if (!nv)
                return -ENOMEM;
        *v = nv;
        json_array_foreach(arr, i, x) {
                const char *s = json_string_value(x);
                if (!s || !(nv[*n] = strdup(s)))
                        return -ENOMEM;
                nv[++*n] = NULL;
        }
        nv[*n] = NULL;
        return 0;
}

static int strv_add_vec(char ***v, size_t *n, char *const *src) {
        size_t k = strv_len(src);
        char **nv = realloc(*v, (*n + k + 1) * sizeof(char *));
        if (!nv)
                return -ENOMEM;
        *v = nv;
        for (size_t i = 0; i < k; i++) {
                if (!(nv[*n] = strdup(src[i])))
                        return -ENOMEM;
                nv[++*n] = NULL;
        }
        nv[*n] = NULL;
        return 0;
}

/* Kubernetes: command replaces ENTRYPOINT (and then CMD is dropped); args
 * replace CMD. */
static int build_argv(const json_t *spec, const struct lg_image *img, char ***ret, struct lg_error *err) {
        const json_t *command = json_object_get(spec, "command"), *args = json_object_get(spec, "args");
        char **v = NULL;
        size_t n = 0;
        int r = 0;
        bool has_cmd = json_array_size(command) > 0, has_args = json_array_size(args) > 0;
        if (has_cmd) {
                r = strv_add_json(&v, &n, command);
                if (r >= 0 && has_args)
                        r = strv_add_json(&v, &n, args);
        } else {
                r = strv_add_vec(&v, &n, img->entrypoint);
                if (r >= 0)
                        r = has_args ? strv_add_json(&v, &n, args) : strv_add_vec(&v, &n, img->cmd);
        }
        if (r < 0) {
                strv_free(v);
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        if (n == 0 || !v[0][0]) {
                strv_free(v);
                return lg_error_set(err, EINVAL,
                                    "no command specified: the container sets neither command nor args and the image "
                                    "has no ENTRYPOINT or CMD");
        }
        *ret = v;
        return 0;
}

/* Set "K=V" in v (n entries, room for one more): replaces K if present. */
static int env_set(char **v, size_t *n, const char *kv) {
        size_t kl = strcspn(kv, "=");
        size_t i = 0;
        for (; i < *n; i++)
                if (!strncmp(v[i], kv, kl) && v[i][kl] == '=')
                        break;
        char *d = strdup(kv);
        if (!d)
                return -ENOMEM;
        if (i < *n)
                free(v[i]);
        else
                ++*n;
        v[i] = d;
        return 0;
}

/* Image Env, then the container's env (same name: the container's wins),
 * PATH and HOSTNAME when neither sets them. */
static int build_env(const json_t *spec, const struct lg_image *img, const char *hostname, char ***ret) {
        size_t cap = strv_len(img->env) + json_array_size(json_object_get(spec, "env")) + 3, n = 0;
        char **v = calloc(cap, sizeof(char *));
        if (!v)
                return -ENOMEM;
        int r = 0;
        for (char **e = img->env; r >= 0 && e && *e; e++)
                if (strchr(*e, '='))
                        r = env_set(v, &n, *e);
        size_t i;
        const json_t *x;
        json_array_foreach(json_object_get(spec, "env"), i, x) {
                const char *name = json_string_value(json_object_get(x, "name"));
                const char *value = json_string_value(json_object_get(x, "value"));
                char *kv;
                if (r < 0 || !name)
                        continue;
                if (asprintf(&kv, "%s=%s", name, value ? value : "") < 0) {
                        r = -ENOMEM;
                        continue;
                }
                r = env_set(v, &n, kv);
                free(kv);
        }
        bool has_path = false, has_host = false;
        for (size_t k = 0; k < n; k++) {
                has_path |= !strncmp(v[k], "PATH=", 5);
                has_host |= !strncmp(v[k], "HOSTNAME=", 9);
        }
        if (r >= 0 && !has_path)
                r = env_set(v, &n, DEFAULT_PATH);
        if (r >= 0 && !has_host) {
                char kv[128];
                snprintf(kv, sizeof(kv), "HOSTNAME=%s", hostname);
                r = env_set(v, &n, kv);
        }
        v[n] = NULL;
        if (r < 0) {
                strv_free(v);
                return r;
        }
        *ret = v;
        return 0;
}

/* ---- user ----------------------------------------------------------------- */

/* etc/<file> of the uppermost layer that has it, as a regular file reached
 * without following symlinks (a layer is untrusted content on the host). */
static char *read_image_file(const struct lg_image *img, const char *file) {
        for (size_t i = 0; i < img->n_layers; i++) {
                _cleanup_close_ int dir = open(img->layer_dirs[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (dir < 0)
                        continue;
                _cleanup_close_ int etc = openat(dir, "etc", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (etc < 0)
                        continue;
                _cleanup_close_ int fd = openat(etc, file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
                struct stat st;
                if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (4 << 20))
                        continue;
                char *buf = malloc((size_t) st.st_size + 1);
                if (!buf)
                        return NULL;
                ssize_t n = lg_read_all(fd, buf, (size_t) st.st_size);
                if (n < 0) {
                        free(buf);
                        return NULL;
                }
                buf[n] = '\0';
                return buf;
        }
        return NULL;
}

static bool parse_id(const char *s, unsigned long *ret) {
        if (!*s || !isdigit((unsigned char) *s))
                return false;
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (*end || errno || v > 0xffffffffUL)
                return false;
        *ret = v;
        return true;
}

/* Find a line of a passwd/group file: field 0 == name (or field 2 == id
 * when name is NULL). Returns fields 2 and 3 as numbers. */
static bool lookup_db(const char *db, const char *name, unsigned long id, unsigned long *f2, unsigned long *f3) {
        if (!db)
                return false;
        for (const char *line = db; *line;) {
                const char *eol = strchr(line, '\n');
                size_t len = eol ? (size_t) (eol - line) : strlen(line);
                char buf[1024];
                if (len < sizeof(buf)) {
                        memcpy(buf, line, len);
                        buf[len] = '\0';
                        char *fields[4] = {0};
                        char *p = buf;
                        for (int k = 0; k < 4 && p; k++) {
                                fields[k] = p;
                                p = strchr(p, ':');
                                if (p)
                                        *p++ = '\0';
                        }
                        unsigned long v2 = 0, v3 = 0;
                        bool ok2 = fields[2] && parse_id(fields[2], &v2);
                        bool ok3 = fields[3] && parse_id(fields[3], &v3);
                        if (ok2 && ((name && !strcmp(fields[0], name)) || (!name && v2 == id))) {
                                *f2 = v2;
                                *f3 = ok3 ? v3 : 0;
                                return true;
                        }
                }
                line += len;
                if (*line == '\n')
                        line++;
        }
        return false;
}

/* Image User: "uid", "uid:gid", "name", "name:group", "uid:group"... */
static int resolve_user(const struct lg_image *img, const char *user, uid_t *uid, gid_t *gid, struct lg_error *err) {
        char u[256];
        snprintf(u, sizeof(u), "%s", user);
        char *g = strchr(u, ':');
        if (g)
                *g++ = '\0';
        _cleanup_free_ char *passwd = read_image_file(img, "passwd");
        unsigned long uv, gv = 0, f2, f3;
        if (parse_id(u, &uv)) {
                /* A numeric uid takes its primary group from passwd if listed. */
                if (lookup_db(passwd, NULL, uv, &f2, &f3))
                        gv = f3;
        } else if (lookup_db(passwd, u, 0, &f2, &f3)) {
                uv = f2;
                gv = f3;
        } else {
                return lg_error_set(err, ENOENT, "unable to find user %s: no matching entries in passwd file", u);
        }
        if (g && *g) {
                if (!parse_id(g, &gv)) {
                        _cleanup_free_ char *group = read_image_file(img, "group");
                        if (!lookup_db(group, g, 0, &f2, &f3))
                                return lg_error_set(err, ENOENT, "unable to find group %s: no matching entries in group file", g);
                        gv = f2;
                }
        }
        if (uv >= 65536 || gv >= 65536)
                return lg_error_set(err, ERANGE, "user %lu:%lu is outside the 65536 ids a container has", uv, gv);
        *uid = (uid_t) uv;
        *gid = (gid_t) gv;
        return 0;
}

/* ---- the sandbox spec ---------------------------------------------------- */

void ctr_free_sandbox_spec(struct ctr *c) {
        strv_free(c->argv);
        strv_free(c->envp);
        free(c->cwd);
        free(c->log_path);
        c->argv = c->envp = NULL;
        c->cwd = c->log_path = NULL;
        lg_sandbox_spec_init(&c->sspec);
        lg_sandbox_launch_init(&c->launch);
}

void pods_base_spec(lg_pods *m, const struct lg_image *img, uint64_t rootfs_bytes, struct lg_sandbox_spec *s) {
        lg_sandbox_spec_init(s);
        s->state_root = m->state_root;
        s->layers = (const char *const *) img->layer_dirs;
        s->n_layers = img->n_layers;
        s->rootfs_bytes = rootfs_bytes;
        /* pids: every container has a cgroup, which OOM detection and
         * limits set on a warm sandbox need. */
        s->pids_max = DEFAULT_PIDS;
        /* Started, it outlives legiond; the next one adopts it (restore). */
        s->detachable = true;
}

int ctr_build_sandbox_spec(struct ctr *c, const char **reason, struct lg_error *err) {
        struct pod *pod = c->pod;
        lg_pods *m = pod->mgr;
        const struct lg_image *img = c->img;
        struct lg_sandbox_spec *s = &c->sspec;
        struct lg_sandbox_launch *l = &c->launch;
        int r;
        ctr_free_sandbox_spec(c);
        *reason = "CreateContainerError";

        r = build_argv(c->spec, img, &c->argv, err);
        if (r < 0)
                return r;
        if (build_env(c->spec, img, pod->name, &c->envp) < 0)
                return lg_error_set(err, ENOMEM, "out of memory");
        const char *wd = json_string_value(json_object_get(c->spec, "workingDir"));
        if (!wd || !*wd)
                wd = img->working_dir && *img->working_dir ? img->working_dir : "/";
        if (wd[0] != '/')
                return lg_error_set(err, EINVAL, "working directory `%s` is not absolute", wd);
        if (!(c->cwd = strdup(wd)))
                return lg_error_set(err, ENOMEM, "out of memory");

        const json_t *res = json_object_get(c->spec, "resources");
        const json_t *lim = json_object_get(res, "limits"), *req = json_object_get(res, "requests");
        const json_t *q;
        uint64_t v, rootfs = POD_DEFAULT_ROOTFS;
        if ((q = json_object_get(lim, "ephemeral-storage")) && lg_kube_quantity_bytes(q, &v) == 0 && v >= (1u << 20))
                rootfs = v;
        pods_base_spec(m, img, rootfs, s);

        /* The workload: given at start (lg_sandbox_start_with), so that a
         * warm sandbox made before it was known can take it. */
        l->argv = (const char *const *) c->argv;
        l->envp = (const char *const *) c->envp;
        l->cwd = c->cwd;
        l->hostname = pod->name;
        if (img->user && *img->user) {
                r = resolve_user(img, img->user, &l->run_uid, &l->run_gid, err);
                if (r < 0) {
                        *reason = "CreateContainerConfigError";
                        return r;
                }
                l->run_as_set = true;
        }

        if ((q = json_object_get(lim, "memory")) && lg_kube_quantity_bytes(q, &v) == 0)
                s->memory_bytes = v;
        if ((q = json_object_get(lim, "cpu")) && lg_kube_quantity_millis(q, &v) == 0)
                s->cpu_millis = v ? v : 1;
        if ((q = json_object_get(req, "cpu")) && lg_kube_quantity_millis(q, &v) == 0) {
                /* kubelet: shares = millis * 1024 / 1000 (min 2), then the
                 * cgroup v2 weight 1 + (shares - 2) * 9999 / 262142. */
                uint64_t shares = v * 1024 / 1000;
                if (shares < 2)
                        shares = 2;
                if (shares > 262144)
                        shares = 262144;
                s->cpu_weight = 1 + (shares - 2) * 9999 / 262142;
        }

        char dir[4096];
        pod_log_dir(pod, dir, sizeof(dir));
        if (asprintf(&c->log_path, "%s/%s.log", dir, c->name) < 0) {
                c->log_path = NULL;
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        l->log_file = c->log_path;
        l->log_max_bytes = m->log_max_bytes;

        s->share_net = pod->host_network;
        s->join_netns_fd = pod->host_network ? -1 : pod->netns_fd;
        s->join_ipcns_fd = pod->ipcns_fd;
        *reason = NULL;
        return 0;
}
