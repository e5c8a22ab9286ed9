/* The workload of a sandbox made from an image (launch.h): Kubernetes'
 * command/args rules against ENTRYPOINT/CMD, the environment, the working
 * directory and the user, names looked up in the image's own etc/passwd
 * and etc/group (read from the layer dirs, never from the host). Layers are
 * untrusted content: files are opened without following symlinks, size
 * capped, and parsed line by line with lines too long skipped. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/launch.h"
#include "sandbox/cgroup.h"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_ETC_FILE (4 << 20)

/* ---- strings -------------------------------------------------------------- */

static size_t strv_len(const char *const *v) {
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}

/* Append copies of a NULL-terminated vector (NULL: nothing) to v (n entries). */
static int strv_add(char ***v, size_t *n, const char *const *src) {
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
static int build_argv(const struct lg_image_launch_in *in, const struct lg_image *img, char ***ret,
                      struct lg_error *err) {
        char **v = NULL;
        size_t n = 0;
        int r;
        bool has_cmd = strv_len(in->command) > 0, has_args = strv_len(in->args) > 0;
        if (has_cmd) {
                r = strv_add(&v, &n, in->command);
                if (r >= 0 && has_args)
                        r = strv_add(&v, &n, in->args);
        } else {
                r = strv_add(&v, &n, (const char *const *) img->entrypoint);
                if (r >= 0)
                        r = strv_add(&v, &n, has_args ? in->args : (const char *const *) img->cmd);
        }
        if (r < 0) {
                lg_strv_free(v);
                return lg_error_set(err, ENOMEM, "out of memory");
        }
        if (n == 0 || !v[0][0]) {
                lg_strv_free(v);
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

static bool env_has(char *const *v, size_t n, const char *prefix) {
        for (size_t k = 0; k < n; k++)
                if (!strncmp(v[k], prefix, strlen(prefix)))
                        return true;
        return false;
}

/* Image Env (entries without '=' skipped, as runc does), then the caller's
 * (same name: the caller's wins), PATH and HOSTNAME when neither sets them. */
static int build_env(const struct lg_image_launch_in *in, const struct lg_image *img, char ***ret,
                     struct lg_error *err) {
        for (const char *const *e = in->env; e && *e; e++)
                if (!strchr(*e, '=') || **e == '=')
                        return lg_error_setm(err, EINVAL, "environment entry `%.64s` is not NAME=value", *e);
        size_t cap = strv_len((const char *const *) img->env) + strv_len(in->env) + 3, n = 0;
        char **v = calloc(cap, sizeof(char *));
        if (!v)
                return lg_error_set(err, ENOMEM, "out of memory");
        int r = 0;
        for (char **e = img->env; r >= 0 && e && *e; e++)
                if (strchr(*e, '='))
                        r = env_set(v, &n, *e);
        for (const char *const *e = in->env; r >= 0 && e && *e; e++)
                r = env_set(v, &n, *e);
        if (r >= 0 && !env_has(v, n, "PATH="))
                r = env_set(v, &n, DEFAULT_PATH);
        if (r >= 0 && in->hostname && !env_has(v, n, "HOSTNAME=")) {
                char *kv;
                if (asprintf(&kv, "HOSTNAME=%s", in->hostname) < 0) {
                        r = -ENOMEM;
                } else {
                        r = env_set(v, &n, kv);
                        free(kv);
                }
        }
        v[n] = NULL;
        if (r < 0) {
                lg_strv_free(v);
                return lg_error_set(err, ENOMEM, "out of memory");
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
                if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_ETC_FILE)
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
 * when name is NULL). Returns fields 2 and 3 as numbers. An empty name
 * matches nothing. */
static bool lookup_db(const char *db, const char *name, unsigned long id, unsigned long *f2, unsigned long *f3) {
        if (!db || (name && !*name))
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

/* User: "uid", "uid:gid", "name", "name:group", "uid:group"... */
static int resolve_user(const struct lg_image *img, const char *user, uid_t *uid, gid_t *gid, struct lg_error *err) {
        _cleanup_free_ char *u = strdup(user);
        if (!u)
                return lg_error_set(err, ENOMEM, "out of memory");
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
                return lg_error_set(err, ENOENT, "unable to find user %.200s: no matching entries in passwd file", u);
        }
        if (g && *g) {
                if (!parse_id(g, &gv)) {
                        _cleanup_free_ char *group = read_image_file(img, "group");
                        if (!lookup_db(group, g, 0, &f2, &f3))
                                return lg_error_set(err, ENOENT,
                                                    "unable to find group %.200s: no matching entries in group file", g);
                        gv = f2;
                }
        }
        if (uv >= 65536 || gv >= 65536)
                return lg_error_set(err, ERANGE, "user %lu:%lu is outside the 65536 ids a container has", uv, gv);
        *uid = (uid_t) uv;
        *gid = (gid_t) gv;
        return 0;
}

/* ---- the launch ----------------------------------------------------------- */

void lg_image_launch_clear(struct lg_image_launch *l) {
        if (!l)
                return;
        lg_strv_free(l->argv);
        lg_strv_free(l->env);
        free(l->cwd);
        *l = (struct lg_image_launch) {0};
}

int lg_image_launch_build(const struct lg_image *img, const struct lg_image_launch_in *in,
                          struct lg_image_launch *ret, struct lg_error *err) {
        static const struct lg_image_launch_in none = {0};
        struct lg_image_launch l = {0};
        int r;
        if (!in)
                in = &none;
        *ret = l;

        r = build_argv(in, img, &l.argv, err);
        if (r >= 0)
                r = build_env(in, img, &l.env, err);
        if (r < 0)
                goto fail;

        const char *wd = in->cwd;
        if (!wd || !*wd)
                wd = img->working_dir && *img->working_dir ? img->working_dir : "/";
        if (wd[0] != '/') {
                r = lg_error_set(err, EINVAL, "working directory `%.200s` is not absolute", wd);
                goto fail;
        }
        if (!(l.cwd = strdup(wd))) {
                r = lg_error_set(err, ENOMEM, "out of memory");
                goto fail;
        }

        const char *user = in->user && *in->user ? in->user : img->user;
        if (user && *user) {
                r = resolve_user(img, user, &l.uid, &l.gid, err);
                if (r < 0)
                        goto fail;
                l.run_as_set = true;
        }
        *ret = l;
        return 0;
fail:
        lg_image_launch_clear(&l);
        return r;
}

void lg_image_launch_apply(const struct lg_image_launch *l, struct lg_sandbox_launch *sl) {
        sl->argv = (const char *const *) l->argv;
        sl->envp = (const char *const *) l->env;
        sl->cwd = l->cwd;
        sl->run_as_set = l->run_as_set;
        sl->run_uid = l->uid;
        sl->run_gid = l->gid;
}

void lg_image_sandbox_layers(const struct lg_image *img, uint64_t rootfs_bytes, struct lg_sandbox_spec *s) {
        s->layers = (const char *const *) img->layer_dirs;
        s->n_layers = img->n_layers;
        s->rootfs_bytes = rootfs_bytes;
}
