/* `legion app`: deploy, list, show, set, delete and logs of apps --
 * functions (a package of code) and container apps (an OCI image) --
 * through legiond's API (docs/api.md, docs/container-apps.md). A container
 * app's deploy streams the pull of a missing image (cli_ndjson_request). */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "pkg/pkg.h"

static void app_usage(FILE *f) {
        fputs("usage: legion app <command> [options]\n"
              "\n"
              "commands:\n"
              "  deploy NAME --runtime R [--dir DIR] [options]  pack DIR, upload it, create or update the app\n"
              "  deploy NAME --runtime R --package-image REF    a function whose code is in a registry\n"
              "  deploy NAME --image REF --port N [options]     a container app (the image pulled if missing)\n"
              "  list [-l KEY=VALUE]                            apps of the namespace\n"
              "  show NAME                                      an app's spec and status\n"
              "  set NAME K=V... [--unset K]... [--auth A]      change settings (a new revision) or auth\n"
              "  delete NAME...                                 delete apps\n"
              "  logs NAME [--follow] [--tail N]                legiond's events and the instances' output\n"
              "  keys create|list|delete NAME                   the keys of an app whose auth is keys\n"
              "\n"
              "Run `legion app <command> --help` for a command's options.\n" CLI_GLOBAL_HELP,
              f);
}

static void deploy_usage(FILE *f) {
        fputs("usage: legion app deploy NAME --runtime python3|node|custom [options]\n"
              "       legion app deploy NAME --image REF --port N [options]\n"
              "\n"
              "A function: pack DIR into a tar.gz (leaving out .git and __pycache__),\n"
              "upload it and create or replace the app NAME. A container app: an OCI\n"
              "image serving HTTP on a port (pulled, with progress, when legiond's image\n"
              "store lacks it). deploy sets the whole spec from its flags: what is not\n"
              "given goes back to its default (use `legion app set` to change settings\n"
              "alone).\n"
              "\n"
              "  --runtime R          python3, node or custom (a function)\n"
              "  --dir DIR            the code (default: the current directory)\n"
              "  --package-image REF  the code is a package in a registry (`legion package push`),\n"
              "                       mounted lazily on the node; instead of --dir\n"
              "  --entrypoint E       python \"module:function\", node \"file.js:export\",\n"
              "                       custom \"command args\" (default: the runtime's)\n"
              "  --set K=V            a setting (environment variable); repeatable\n"
              "  --concurrency N      requests at once per instance (default 10)\n"
              "  --min N              instances kept running (default 0)\n"
              "  --max N              most instances (default 10)\n"
              "  --idle-timeout S     an idle instance goes after S seconds (default 300)\n"
              "  --timeout S          a request's deadline in seconds (default 60)\n"
              "  --cpu C              CPUs (0.5) or millicores (500m) after startup\n"
              "  --memory M           memory, e.g. 128Mi (at most the pool group's)\n"
              "  --pool P             pool group (default: the one named after the runtime)\n"
              "  --egress E           on, off or CIDR[:PORT[-PORT]],...: where its instances may\n"
              "                       connect (default: the namespace's policy)\n"
              "  --auth A             who may call its URL: token (default; an API token of the\n"
              "                       namespace), keys (an app key or such a token) or none\n"
              "                       (anyone who reaches legiond)\n"
              "\n"
              "container apps (instead of --runtime, --dir, --entrypoint, --set):\n"
              "  --image REF          the image, e.g. 127.0.0.1:5000/web:1\n"
              "  --port N             where its server listens (required, unless its pool group\n"
              "                       starts the server: placeholder process)\n"
              "  --command C          replaces the image's ENTRYPOINT; repeatable, one word each\n"
              "  --arg A              replaces the image's CMD; repeatable\n"
              "  --env K=V            an environment variable; repeatable\n"
              "  --ready-path P       ready when GET P answers 2xx/3xx (default: the port opens)\n"
              "  --pool P             an image pool group (default: none, instances made on demand;\n"
              "                       --image may then be left out: the pool's)\n" CLI_GLOBAL_HELP,
              f);
}

static void list_usage(FILE *f) {
        fputs("usage: legion app list [-l KEY=VALUE[,...]]\n"
              "\n"
              "  -l, --selector S     only apps whose labels match S\n" CLI_GLOBAL_HELP,
              f);
}

static void show_usage(FILE *f) { fputs("usage: legion app show NAME\n" CLI_GLOBAL_HELP, f); }
static void delete_usage(FILE *f) { fputs("usage: legion app delete NAME...\n" CLI_GLOBAL_HELP, f); }

static void set_usage(FILE *f) {
        fputs("usage: legion app set NAME [K=V]... [--unset K]... [--auth token|keys|none]\n"
              "\n"
              "Change the app's settings (its functions' environment; a container app's\n"
              "env) and keep the rest of its spec. A change of settings makes a new\n"
              "revision; one of auth applies in place from the next request.\n"
              "\n"
              "  --unset K            remove setting K; repeatable\n"
              "  --auth A             token, keys or none (see `legion app deploy --help`)\n" CLI_GLOBAL_HELP,
              f);
}

static void logs_usage(FILE *f) {
        fputs("usage: legion app logs NAME [--follow] [--tail N]\n"
              "\n"
              "  -f, --follow         keep printing new lines until interrupted\n"
              "  -n, --tail N         only the last N lines\n" CLI_GLOBAL_HELP,
              f);
}

#define _cleanup_json_ _cleanup_(json_decrefp) /* jansson.h has json_decrefp */

/* "/v1/namespaces/{ns}/apps/{name}" */
static void app_path(char *buf, size_t cap, const char *name) {
        snprintf(buf, cap, "/v1/namespaces/%s/apps/%s", cli_ns(), name);
}

static const char *app_url(const json_t *app, const char *name, char *buf, size_t cap) {
        const char *u = cli_jstr(app, "status.url");
        if (u && u[0] == '/')
                snprintf(buf, cap, "%s%s", cli_api(), u);
        else if (u)
                snprintf(buf, cap, "%s", u);
        else
                snprintf(buf, cap, "%s/fn/%s/%s/", cli_api(), cli_ns(), name);
        return buf;
}

static bool valid_auth(const char *a) { return !strcmp(a, "token") || !strcmp(a, "keys") || !strcmp(a, "none"); }

static int add_setting(json_t *settings, const char *kv, void (*usage)(FILE *)) {
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv)
                return cli_usage_error(usage, "a setting is K=V, not `%s`", kv);
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int) (eq - kv), kv);
        json_object_set_new(settings, key, json_string(eq + 1));
        return 0;
}

/* ---- deploy -------------------------------------------------------------------- */

static bool skip_entry(const char *relpath, bool is_dir, void *ud) {
        (void) ud;
        const char *base = strrchr(relpath, '/');
        base = base ? base + 1 : relpath;
        return is_dir && (!strcmp(base, ".git") || !strcmp(base, "__pycache__"));
}

/* Pack dir (n == 0) or the n paths into a memfd: the code of cli_pack_dir
 * and cli_pack_paths; what names the package in messages. */
static int pack(const char *dir, const char *const *paths, size_t n, const char *what, uint64_t max, int *ret,
                uint64_t *size, struct lg_error *err) {
        _cleanup_close_ int fd = memfd_create("legion-package", MFD_CLOEXEC);
        if (fd < 0)
                return lg_error_set(err, errno, "memfd_create");
        if (fd == 0) { /* 0 means "no body" to cli_request() */
                int fd2 = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (fd2 < 0)
                        return lg_error_set(err, errno, "dup");
                close(fd);
                fd = fd2;
        }
        struct lg_pkg_pack_opts opts = {.skip = skip_entry};
        struct lg_pkg_pack_info info = {0};
        int r = dir ? lg_pkg_pack_dir(dir, fd, &opts, &info, err) : lg_pkg_pack_paths(paths, n, fd, &opts, &info, err);
        if (r < 0)
                return dir ? lg_error_wrap(err, r, "pack `%s`", dir) : r;
        if (info.n_files == 0)
                return lg_error_setm(err, ENOENT, "%s has no files to deploy", what);
        struct stat st;
        if (fstat(fd, &st) < 0 || lseek(fd, 0, SEEK_SET) < 0)
                return lg_error_set(err, errno, "package of %s", what);
        if ((uint64_t) st.st_size > max) {
                char lim[32];
                return lg_error_setm(err, EFBIG, "package of %s is %lld bytes: legiond takes at most %s", what,
                                     (long long) st.st_size, cli_fmt_bytes(max, lim, sizeof(lim)));
        }
        if (isatty(STDERR_FILENO)) {
                char a[32], b[32];
                fprintf(stderr, "packed %llu file%s (%s) from %s: %s\n", (unsigned long long) info.n_files,
                        info.n_files == 1 ? "" : "s", cli_fmt_bytes(info.total_bytes, a, sizeof(a)), what,
                        cli_fmt_bytes((uint64_t) st.st_size, b, sizeof(b)));
        }
        *size = (uint64_t) st.st_size;
        *ret = TAKE_FD(fd);
        return 0;
}

int cli_pack_dir(const char *dir, uint64_t max, int *ret, uint64_t *size, struct lg_error *err) {
        char what[4200];
        snprintf(what, sizeof(what), "`%s`", dir);
        return pack(dir, NULL, 0, what, max, ret, size, err);
}

int cli_pack_paths(const char *const *paths, size_t n, uint64_t max, int *ret, uint64_t *size,
                   struct lg_error *err) {
        char what[4200];
        snprintf(what, sizeof(what), "`%s`%s", paths[0], n > 1 ? " and the rest" : "");
        return pack(NULL, paths, n, what, max, ret, size, err);
}

int cli_upload_package(int fd, uint64_t size, struct lg_digest *digest, struct lg_error *err) {
        char path[512];
        snprintf(path, sizeof(path), "/v1/namespaces/%s/packages", cli_ns());
        struct cli_request rq = {
                .method = "POST",
                .path = path,
                .body_fd = fd,
                .body_len = (size_t) size,
                .content_type = "application/gzip",
                .progress = true,
        };
        struct cli_response resp = {0};
        int r = cli_request(&rq, &resp, err);
        if (r < 0)
                return r;
        if (resp.status < 200 || resp.status >= 300) {
                r = cli_http_error(&resp, err);
                cli_response_done(&resp);
                return r;
        }
        json_t *doc = json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL);
        const char *d = cli_jstr(doc, "digest");
        if (!d || !lg_digest_valid(d))
                r = lg_error_setm(err, EBADMSG, "legiond's answer to the upload has no digest");
        else
                snprintf(digest->hex, sizeof(digest->hex), "%s", d);
        json_decref(doc);
        cli_response_done(&resp);
        return r;
}

/* Pack dir and upload it; the package's digest goes to digest. */
static int upload_dir(const char *dir, struct lg_digest *digest, struct lg_error *err) {
        _cleanup_close_ int fd = -1;
        uint64_t size = 0;
        int r = cli_pack_dir(dir, LG_BLOB_DEFAULT_MAX_BYTES, &fd, &size, err);
        if (r < 0)
                return r;
        return cli_upload_package(fd, size, digest, err);
}

static int app_deploy(int argc, char **argv, struct lg_error *err) {
        enum {
                OPT_RUNTIME = 1, OPT_DIR, OPT_SET, OPT_ENTRY, OPT_CONC, OPT_MIN,
                OPT_MAX, OPT_IDLE, OPT_TIMEOUT, OPT_CPU, OPT_MEM, OPT_POOL, OPT_EGRESS, OPT_AUTH,
                OPT_IMAGE, OPT_PORT, OPT_COMMAND, OPT_ARG, OPT_ENV, OPT_READY, OPT_PKG_IMAGE,
        };
        static const struct option opts[] = {
                {"runtime", required_argument, NULL, OPT_RUNTIME}, {"dir", required_argument, NULL, OPT_DIR},
                {"set", required_argument, NULL, OPT_SET},         {"entrypoint", required_argument, NULL, OPT_ENTRY},
                {"concurrency", required_argument, NULL, OPT_CONC}, {"min", required_argument, NULL, OPT_MIN},
                {"max", required_argument, NULL, OPT_MAX},         {"idle-timeout", required_argument, NULL, OPT_IDLE},
                {"timeout", required_argument, NULL, OPT_TIMEOUT}, {"cpu", required_argument, NULL, OPT_CPU},
                {"memory", required_argument, NULL, OPT_MEM},      {"pool", required_argument, NULL, OPT_POOL},
                {"egress", required_argument, NULL, OPT_EGRESS},   {"help", no_argument, NULL, 'h'},
                {"auth", required_argument, NULL, OPT_AUTH},
                {"image", required_argument, NULL, OPT_IMAGE},     {"port", required_argument, NULL, OPT_PORT},
                {"command", required_argument, NULL, OPT_COMMAND}, {"arg", required_argument, NULL, OPT_ARG},
                {"env", required_argument, NULL, OPT_ENV},         {"ready-path", required_argument, NULL, OPT_READY},
                {"package-image", required_argument, NULL, OPT_PKG_IMAGE},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        static const struct {
                int code;
                const char *field, *flag;
                long long max;
        } ints[] = {
                {OPT_CONC, "concurrency", "--concurrency", 1000000},
                {OPT_MIN, "minInstances", "--min", 1000000},
                {OPT_MAX, "maxInstances", "--max", 1000000},
                {OPT_IDLE, "idleTimeoutSeconds", "--idle-timeout", 100000000},
                {OPT_TIMEOUT, "timeoutSeconds", "--timeout", 100000000},
                {OPT_PORT, "port", "--port", 65535},
        };
        _cleanup_json_ json_t *spec = json_object();
        _cleanup_json_ json_t *settings = json_object();
        _cleanup_json_ json_t *env = json_object();
        _cleanup_json_ json_t *command = json_array();
        _cleanup_json_ json_t *args = json_array();
        const char *dir = NULL;
        int c;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case OPT_RUNTIME: json_object_set_new(spec, "runtime", json_string(optarg)); break;
                case OPT_DIR: dir = optarg; break;
                case OPT_IMAGE: json_object_set_new(spec, "image", json_string(optarg)); break;
                case OPT_PKG_IMAGE: json_object_set_new(spec, "packageImage", json_string(optarg)); break;
                case OPT_COMMAND: json_array_append_new(command, json_string(optarg)); break;
                case OPT_ARG: json_array_append_new(args, json_string(optarg)); break;
                case OPT_READY: json_object_set_new(spec, "readinessPath", json_string(optarg)); break;
                case OPT_ENV:
                        if (add_setting(env, optarg, deploy_usage))
                                return 2;
                        break;
                case OPT_SET:
                        if (add_setting(settings, optarg, deploy_usage))
                                return 2;
                        break;
                case OPT_ENTRY: json_object_set_new(spec, "entrypoint", json_string(optarg)); break;
                case OPT_CPU: json_object_set_new(spec, "cpu", json_string(optarg)); break;
                case OPT_MEM: json_object_set_new(spec, "memory", json_string(optarg)); break;
                case OPT_POOL: json_object_set_new(spec, "poolGroup", json_string(optarg)); break;
                case OPT_AUTH:
                        if (!valid_auth(optarg))
                                return cli_usage_error(deploy_usage, "--auth is token, keys or none, not `%s`", optarg);
                        json_object_set_new(spec, "auth", json_string(optarg));
                        break;
                case OPT_EGRESS: {
                        json_t *e = cli_egress_json(optarg);
                        if (!e)
                                return cli_usage_error(deploy_usage,
                                                       "--egress is on, off or CIDR[:PORT[-PORT]],..., not `%s`",
                                                       optarg);
                        json_object_set_new(spec, "egress", e);
                        break;
                }
                case OPT_CONC:
                case OPT_MIN:
                case OPT_MAX:
                case OPT_IDLE:
                case OPT_TIMEOUT:
                case OPT_PORT:
                        for (size_t i = 0; i < ARRAY_SIZE(ints); i++) {
                                long long v;
                                if (ints[i].code != c)
                                        continue;
                                if (cli_parse_uint(optarg, ints[i].max, &v) < 0)
                                        return cli_usage_error(deploy_usage, "%s needs a whole number, not `%s`",
                                                               ints[i].flag, optarg);
                                json_object_set_new(spec, ints[i].field, json_integer(v));
                        }
                        break;
                case 'h': deploy_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, deploy_usage);
                }
        }
        if (optind != argc - 1)
                return cli_usage_error(deploy_usage, optind >= argc ? "no app name given" : "too many arguments");
        const char *name = argv[optind];
        /* A container app: an image, or an (image) pool group without a
         * runtime. */
        bool image = json_object_get(spec, "image") ||
                     (!json_object_get(spec, "runtime") && json_object_get(spec, "poolGroup"));
        bool image_flags = json_object_get(spec, "port") || json_object_get(spec, "readinessPath") ||
                           json_array_size(command) || json_array_size(args) || json_object_size(env);
        bool pkg_image = json_object_get(spec, "packageImage") != NULL;
        if (pkg_image && (image || dir))
                return cli_usage_error(deploy_usage, "--package-image is a function's code: no --image, no --dir");
        if (image && (json_object_get(spec, "runtime") || dir || json_object_get(spec, "entrypoint") ||
                      json_object_size(settings)))
                return cli_usage_error(deploy_usage, "--image takes no --runtime, --dir, --entrypoint or --set "
                                                     "(a container app's settings are --env)");
        if (!image && !json_object_get(spec, "runtime"))
                return cli_usage_error(deploy_usage, "--runtime is required (python3, node or custom), or --image for a container app");
        if (!image && image_flags)
                return cli_usage_error(deploy_usage, "--port, --command, --arg, --env and --ready-path are for "
                                                     "container apps (--image)");
        int r = cli_check_name("app", name, err);
        if (r < 0)
                return r;
        if (json_object_size(settings))
                json_object_set(spec, "settings", settings);
        if (json_object_size(env))
                json_object_set(spec, "env", env);
        if (json_array_size(command))
                json_object_set(spec, "command", command);
        if (json_array_size(args))
                json_object_set(spec, "args", args);

        char path[512], url[1024];
        app_path(path, sizeof(path), name);
        _cleanup_json_ json_t *app = NULL;
        if (image || pkg_image) {
                /* Streamed: the pull's progress when the image is missing
                 * (a package image is fetched at every deploy). */
                _cleanup_free_ char *text = json_dumps(spec, JSON_COMPACT);
                char announce[600];
                if (pkg_image)
                        snprintf(announce, sizeof(announce), "fetching package %s", cli_jstr(spec, "packageImage"));
                else
                        snprintf(announce, sizeof(announce), "pulling %s (not in legiond's image store)",
                                 cli_jstr(spec, "image") ?: "the image");
                struct cli_request rq = {.method = "PUT", .path = path, .body = text,
                                         .body_len = text ? strlen(text) : 0, .content_type = "application/json"};
                if (!text)
                        return lg_error_set(err, ENOMEM, "request");
                r = cli_ndjson_request(&rq, "app", "deploy", announce, &app, err);
        } else {
                struct lg_digest digest;
                r = upload_dir(dir ? dir : ".", &digest, err);
                if (r < 0)
                        return r;
                json_object_set_new(spec, "package", json_string(digest.hex));
                struct cli_response resp = {0};
                r = cli_call("PUT", path, spec, &resp, err);
                app = resp.json ? json_incref(resp.json) : NULL;
                cli_response_done(&resp);
        }
        if (r < 0)
                return r;
        if (cli_globals.json) {
                char *text = json_dumps(app, JSON_COMPACT);
                if (text)
                        printf("%s\n", text);
                free(text);
                return 0;
        }
        long long rev = cli_jint(app, "status.revision", -1);
        char revs[32] = "";
        if (rev >= 0)
                snprintf(revs, sizeof(revs), " revision %lld", rev);
        printf("deployed %s/%s%s: %s\n", cli_ns(), name, revs, app_url(app, name, url, sizeof(url)));
        if (cli_jstr(app, "status.image.id"))
                printf("image %s (id %.19s)\n", cli_jstr(app, "status.image.ref") ?: "?",
                       cli_jstr(app, "status.image.id"));
        if (cli_jstr(app, "status.package.digest"))
                printf("package %s (%.19s), %s\n", cli_jstr(app, "status.package.ref") ?: "?",
                       cli_jstr(app, "status.package.digest"),
                       json_is_true(json_object_get(json_object_get(json_object_get(app, "status"), "package"), "lazy"))
                               ? "mounted lazily"
                               : "extracted");
        return 0;
}

/* ---- list, show, delete ---------------------------------------------------------- */

static int app_list(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {
                {"selector", required_argument, NULL, 'l'},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        const char *selector = NULL;
        int c;
        while ((c = cli_getopt(argc, argv, ":hl:", opts)) != -1) {
                switch (c) {
                case 'l': selector = optarg; break;
                case 'h': list_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, list_usage);
                }
        }
        if (optind != argc)
                return cli_usage_error(list_usage, "unexpected argument `%s`", argv[optind]);
        char path[1024];
        snprintf(path, sizeof(path), "/v1/namespaces/%s/apps", cli_ns());
        if (selector) {
                _cleanup_free_ char *q = cli_url_escape(selector);
                if (!q)
                        return lg_error_set(err, ENOMEM, "selector");
                snprintf(path + strlen(path), sizeof(path) - strlen(path), "?labelSelector=%s", q);
        }
        struct cli_response resp = {0};
        int r = cli_call("GET", path, NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                static const char *const head[] = {"NAME",      "RUNTIME",  "PACKAGE", "REVISION",
                                                   "INSTANCES", "REQUESTS", "URL"};
                struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
                json_t *items = json_object_get(resp.json, "items");
                size_t i;
                json_t *app;
                json_array_foreach(items, i, app) {
                        char pkg[16], rev[24], inst[24], reqs[24], url[1024];
                        const char *name = cli_jstr(app, "metadata.name");
                        bool image = cli_jstr(app, "status.image.ref") || cli_jstr(app, "spec.image");
                        /* A container app: its image where a function has its package. */
                        if (image)
                                snprintf(pkg, sizeof(pkg), "%.12s",
                                         cli_jstr(app, "status.image.id") ? cli_jstr(app, "status.image.id") + 7 : "-");
                        else
                                snprintf(pkg, sizeof(pkg), "%.12s",
                                         cli_jstr(app, "spec.package") ?: cli_jstr(app, "status.package.archive") ?: "-");
                        cli_jtext(app, "status.revision", rev, sizeof(rev));
                        cli_jtext(app, "status.instances", inst, sizeof(inst));
                        cli_jtext(app, "status.requests", reqs, sizeof(reqs));
                        const char *row[] = {name, image ? "image" : cli_jstr(app, "spec.runtime"), pkg, rev, inst, reqs,
                                             app_url(app, name ?: "?", url, sizeof(url))};
                        cli_table_add(t, row);
                }
                if (json_array_size(items))
                        cli_table_print(t, stdout);
                else
                        fprintf(stderr, "no apps in namespace `%s`\n", cli_ns());
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r;
}

/* "a b c" of a JSON array of strings into buf. */
static const char *words(const json_t *a, char *buf, size_t cap) {
        size_t i, n = 0;
        json_t *v;
        buf[0] = '\0';
        json_array_foreach(a, i, v) {
                if (n < cap)
                        n += (size_t) snprintf(buf + n, cap - n, "%s%s", i ? " " : "", json_string_value(v) ?: "");
        }
        return buf;
}

/* The image lines of a container app. */
static void print_image(const json_t *app, const json_t *spec) {
        char buf[1024];
        printf("image:        %s", cli_jstr(app, "status.image.ref") ?: cli_jstr(spec, "image") ?: "(the pool's)");
        if (cli_jstr(app, "status.image.id"))
                printf(" (id %.19s)", cli_jstr(app, "status.image.id"));
        putchar('\n');
        if (json_object_get(spec, "port"))
                printf("port:         %lld\n", cli_jint(spec, "port", 0));
        if (json_object_get(spec, "command"))
                printf("command:      %s\n", words(json_object_get(spec, "command"), buf, sizeof(buf)));
        if (json_object_get(spec, "args"))
                printf("args:         %s\n", words(json_object_get(spec, "args"), buf, sizeof(buf)));
        printf("readiness:    %s%s\n", cli_jstr(spec, "readinessPath") ? "GET " : "",
               cli_jstr(spec, "readinessPath") ?: "the port opens");
        if (cli_jstr(app, "status.pull.phase"))
                printf("pulling:      %s %s %lld/%lld bytes\n", cli_jstr(app, "status.pull.phase"),
                       cli_jstr(app, "status.pull.what") ?: "", cli_jint(app, "status.pull.done", 0),
                       cli_jint(app, "status.pull.total", 0));
}

static void print_show(const json_t *app, const char *name) {
        char buf[1024], a[64], b[64];
        const json_t *spec = json_object_get(app, "spec");
        bool image = cli_jstr(app, "status.image.ref") || json_object_get(spec, "image");
        printf("name:         %s/%s\n", cli_jstr(app, "metadata.namespace") ?: cli_ns(), name);
        if (image) {
                print_image(app, spec);
        } else {
                printf("runtime:      %s\n", cli_jstr(spec, "runtime") ?: "-");
                if (cli_jstr(spec, "entrypoint"))
                        printf("entrypoint:   %s\n", cli_jstr(spec, "entrypoint"));
                printf("package:      %.12s\n", cli_jstr(spec, "package") ?: cli_jstr(app, "status.package.archive") ?: "-");
                if (cli_jstr(spec, "packageImage")) {
                        const json_t *p = json_object_get(json_object_get(app, "status"), "package");
                        char a[32], b[32];
                        printf("package image: %s (%.19s)\n", cli_jstr(spec, "packageImage"),
                               cli_jstr(p, "digest") ?: "not fetched");
                        if (json_is_true(json_object_get(p, "lazy")))
                                printf("code:         mounted lazily, local %s of %s\n",
                                       cli_fmt_bytes((uint64_t) cli_jint(p, "local.localBytes", 0), a, sizeof(a)),
                                       cli_fmt_bytes((uint64_t) cli_jint(p, "local.bytes", 0), b, sizeof(b)));
                        else if (p && cli_jstr(p, "lazyReason"))
                                printf("code:         extracted (%s)\n", cli_jstr(p, "lazyReason"));
                        else if (p)
                                printf("code:         extracted\n");
                }
        }
        if (cli_jstr(spec, "poolGroup"))
                printf("pool group:   %s\n", cli_jstr(spec, "poolGroup"));
        else if (image)
                printf("pool group:   (none: instances are made on demand)\n");
        else
                printf("pool group:   %s (the runtime's)\n", cli_jstr(spec, "runtime") ?: "-");
        printf("egress:       %s\n",
               cli_egress_text(json_object_get(spec, "egress"), "the namespace's", buf, sizeof(buf)));
        printf("revision:     %s\n", cli_jtext(app, "status.revision", a, sizeof(a)));
        printf("url:          %s\n", app_url(app, name, buf, sizeof(buf)));
        printf("auth:         %s\n", cli_jstr(spec, "auth") ?: "token");
        printf("instances:    %lld ready, %lld starting, %lld draining\n", cli_jint(app, "status.instances", 0),
               cli_jint(app, "status.starting", 0), cli_jint(app, "status.draining", 0));
        printf("requests:     %lld (%lld active, %lld queued; %lld 5xx, %lld 429, %lld 504)\n",
               cli_jint(app, "status.requests", 0), cli_jint(app, "status.activeRequests", 0),
               cli_jint(app, "status.queuedRequests", 0), cli_jint(app, "status.errors5xx", 0),
               cli_jint(app, "status.rejected429", 0), cli_jint(app, "status.timeouts504", 0));
        long long cold = cli_jint(app, "status.coldStarts.count", 0);
        printf("cold starts:  %lld", cold);
        if (cli_jnum(app, "status.coldStarts.lastMs", -1) >= 0)
                printf(" (last %.1f ms, min %.1f ms, max %.1f ms)", cli_jnum(app, "status.coldStarts.lastMs", 0),
                       cli_jnum(app, "status.coldStarts.minMs", 0), cli_jnum(app, "status.coldStarts.maxMs", 0));
        putchar('\n');
        size_t i;
        json_t *cond;
        json_array_foreach(json_object_get(json_object_get(app, "status"), "conditions"), i, cond) {
                printf("%s%s %s %s: %s\n", i ? "              " : "conditions:   ", cli_jstr(cond, "type") ?: "?",
                       cli_jstr(cond, "status") ?: "?", cli_jstr(cond, "reason") ?: "?", cli_jstr(cond, "message") ?: "");
        }
        const json_t *settings = json_object_get(spec, image ? "env" : "settings");
        const char *k;
        json_t *v;
        bool first = true;
        printf("%s", image ? "env:          " : "settings:     ");
        json_object_foreach((json_t *) settings, k, v) {
                printf("%s%s=%s\n", first ? "" : "              ", k, json_string_value(v) ?: "");
                first = false;
        }
        if (first)
                printf("(none)\n");
        printf("limits:       concurrency %lld, instances %lld..%lld, idle timeout %lld s, timeout %lld s,\n",
               cli_jint(spec, "concurrency", 10), cli_jint(spec, "minInstances", 0),
               cli_jint(spec, "maxInstances", 10), cli_jint(spec, "idleTimeoutSeconds", 300),
               cli_jint(spec, "timeoutSeconds", 60));
        /* Without a pool group, legiond's defaults (docs/container-apps.md). */
        const char *dflt = image && !cli_jstr(spec, "poolGroup") ? "(the default)" : "(the pool group's)";
        printf("              cpu %s, memory %s\n", json_object_get(spec, "cpu") ? cli_jtext(spec, "cpu", a, sizeof(a)) : dflt,
               json_object_get(spec, "memory") ? cli_jtext(spec, "memory", b, sizeof(b)) : dflt);
        const json_t *labels = json_object_get(json_object_get(app, "metadata"), "labels");
        if (json_object_size(labels)) {
                first = true;
                printf("labels:       ");
                json_object_foreach((json_t *) labels, k, v) {
                        printf("%s%s=%s", first ? "" : ", ", k, json_string_value(v) ?: "");
                        first = false;
                }
                putchar('\n');
        }
        if (cli_jstr(app, "metadata.creationTimestamp"))
                printf("created:      %s\n", cli_jstr(app, "metadata.creationTimestamp"));
        if (cli_jstr(app, "metadata.updateTimestamp"))
                printf("updated:      %s\n", cli_jstr(app, "metadata.updateTimestamp"));
}

/* Verbs that take exactly one app name and only the global options. */
static int one_name(int argc, char **argv, void (*usage)(FILE *), const char **name, struct lg_error *err) {
        int r = cli_no_options(argc, argv, usage);
        if (r)
                return r;
        if (optind != argc - 1)
                return cli_usage_error(usage, optind >= argc ? "no app name given" : "too many arguments");
        *name = argv[optind];
        return cli_check_name("app", *name, err);
}

static int app_show(int argc, char **argv, struct lg_error *err) {
        const char *name = NULL;
        int r = one_name(argc, argv, show_usage, &name, err);
        if (r != 0)
                return r == 1 ? 0 : r;
        char path[512];
        app_path(path, sizeof(path), name);
        struct cli_response resp = {0};
        r = cli_call("GET", path, NULL, &resp, err);
        if (r >= 0) {
                if (cli_globals.json)
                        cli_print_json_body(&resp);
                else
                        print_show(resp.json, name);
        }
        cli_response_done(&resp);
        return r;
}

static int app_delete(int argc, char **argv, struct lg_error *err) {
        int r = cli_no_options(argc, argv, delete_usage);
        if (r)
                return r == 1 ? 0 : r;
        if (optind >= argc)
                return cli_usage_error(delete_usage, "no app name given");
        for (int i = optind; i < argc; i++) {
                if ((r = cli_check_name("app", argv[i], err)) < 0)
                        return r;
        }
        for (int i = optind; i < argc; i++) {
                char path[512];
                app_path(path, sizeof(path), argv[i]);
                struct cli_response resp = {0};
                r = cli_call("DELETE", path, NULL, &resp, err);
                cli_response_done(&resp);
                if (r < 0)
                        return r;
                if (!cli_globals.json)
                        printf("deleted app %s/%s\n", cli_ns(), argv[i]);
        }
        return 0;
}

/* ---- set ------------------------------------------------------------------------ */

static int app_set(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {
                {"unset", required_argument, NULL, 'u'},
                {"auth", required_argument, NULL, 'A'},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        _cleanup_json_ json_t *set = json_object();
        _cleanup_json_ json_t *unset = json_array();
        const char *auth = NULL;
        int c;
        while ((c = cli_getopt(argc, argv, ":hu:A:", opts)) != -1) {
                switch (c) {
                case 'u': json_array_append_new(unset, json_string(optarg)); break;
                case 'A':
                        if (!valid_auth(optarg))
                                return cli_usage_error(set_usage, "--auth is token, keys or none, not `%s`", optarg);
                        auth = optarg;
                        break;
                case 'h': set_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, set_usage);
                }
        }
        if (optind >= argc)
                return cli_usage_error(set_usage, "no app name given");
        const char *name = argv[optind];
        for (int i = optind + 1; i < argc; i++)
                if (add_setting(set, argv[i], set_usage))
                        return 2;
        if (!json_object_size(set) && !json_array_size(unset) && !auth)
                return cli_usage_error(set_usage, "nothing to change: give K=V, --unset K or --auth A");
        int r = cli_check_name("app", name, err);
        if (r < 0)
                return r;

        char path[512];
        app_path(path, sizeof(path), name);
        struct cli_response resp = {0};
        r = cli_call("GET", path, NULL, &resp, err);
        if (r < 0) {
                cli_response_done(&resp);
                return r;
        }
        _cleanup_json_ json_t *spec = json_deep_copy(json_object_get(resp.json, "spec"));
        cli_response_done(&resp);
        if (!json_is_object(spec))
                return lg_error_setm(err, EBADMSG, "app `%s/%s` has no spec", cli_ns(), name);
        /* A container app's settings are its env. */
        const char *field = json_object_get(spec, "runtime") ? "settings" : "env";
        json_t *settings = json_object_get(spec, field);
        if (!json_is_object(settings)) {
                settings = json_object();
                json_object_set_new(spec, field, settings);
        }
        size_t i;
        json_t *k;
        json_array_foreach(unset, i, k) json_object_del(settings, json_string_value(k));
        json_object_update(settings, set);
        if (!json_object_size(settings))
                json_object_del(spec, field);
        if (auth)
                json_object_set_new(spec, "auth", json_string(auth));

        r = cli_call("PUT", path, spec, &resp, err);
        if (r >= 0) {
                if (cli_globals.json)
                        cli_print_json_body(&resp);
                else
                        printf("updated %s/%s: revision %s\n", cli_ns(), name,
                               cli_jtext(resp.json, "status.revision", path, sizeof(path)));
        }
        cli_response_done(&resp);
        return r;
}

/* ---- logs ----------------------------------------------------------------------- */

static int app_logs(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {
                {"follow", no_argument, NULL, 'f'},
                {"tail", required_argument, NULL, 'n'},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        bool follow = false;
        long long tail = -1;
        int c;
        while ((c = cli_getopt(argc, argv, ":hfn:", opts)) != -1) {
                switch (c) {
                case 'f': follow = true; break;
                case 'n':
                        if (cli_parse_uint(optarg, 100000000, &tail) < 0)
                                return cli_usage_error(logs_usage, "--tail needs a whole number, not `%s`", optarg);
                        break;
                case 'h': logs_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, logs_usage);
                }
        }
        if (optind != argc - 1)
                return cli_usage_error(logs_usage, optind >= argc ? "no app name given" : "too many arguments");
        const char *name = argv[optind];
        int r = cli_check_name("app", name, err);
        if (r < 0)
                return r;
        char path[600];
        app_path(path, sizeof(path), name);
        size_t n = strlen(path);
        snprintf(path + n, sizeof(path) - n, "/logs");
        if (tail >= 0 || follow) {
                n = strlen(path);
                if (tail >= 0)
                        snprintf(path + n, sizeof(path) - n, "?tail=%lld%s", tail, follow ? "&follow=1" : "");
                else
                        snprintf(path + n, sizeof(path) - n, "?follow=1");
        }
        /* Lines are written as they arrive; a follow lasts until ^C or until
         * legiond closes the stream. */
        struct cli_request rq = {.method = "GET", .path = path, .stream_2xx = stdout, .timeout_s = follow ? 0 : -1};
        struct cli_response resp = {0};
        r = cli_request(&rq, &resp, err);
        if (r >= 0 && (resp.status < 200 || resp.status >= 300))
                r = cli_http_error(&resp, err);
        cli_response_done(&resp);
        return r;
}

/* `legion app keys ...` (cmd-app-keys.c), a group of its own. */
static int app_keys(int argc, char **argv, struct lg_error *err) {
        (void) err;
        return cmd_app_keys(argc, argv);
}

int cmd_app(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"deploy", app_deploy}, {"list", app_list},     {"ls", app_list},       {"show", app_show},
                {"get", app_show},      {"set", app_set},       {"delete", app_delete}, {"rm", app_delete},
                {"logs", app_logs},     {"keys", app_keys},
        };
        return cli_run_group("app", verbs, ARRAY_SIZE(verbs), app_usage, argc, argv);
}
