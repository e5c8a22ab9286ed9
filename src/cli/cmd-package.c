/* `legion package push DIR|ARCHIVE REF`: a function's code (a directory,
 * packed as `app deploy` packs it, or an archive as it is) sent to legiond,
 * which converts it into its lazy form and pushes both to a registry as a
 * package artifact (docs/packages.md, "Packages in a registry"); apps use
 * it with `legion app deploy NAME --runtime R --package-image REF`. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/client.h"

/* The most legiond takes (LG_APPS_PUSH_MAX). */
#define PUSH_MAX (1ull << 30)

static void package_usage(FILE *f) {
        fputs("usage: legion package <command> [options]\n"
              "\n"
              "commands:\n"
              "  push DIR|ARCHIVE REF   push a function's code to a registry, with its lazy form\n"
              "\n"
              "Run `legion package <command> --help` for a command's options.\n" CLI_GLOBAL_HELP,
              f);
}

static void push_usage(FILE *f) {
        fputs("usage: legion package push DIR|ARCHIVE REF [--no-lazy] [--chunk-size N] [--insecure]\n"
              "\n"
              "Send the code to legiond, which checks it as an upload, builds its lazy form\n"
              "(EROFS metadata, chunk table and data) and pushes it with the archive to REF\n"
              "(REGISTRY/REPOSITORY:TAG) as a package artifact. A DIR is packed as `legion\n"
              "app deploy` packs it (without .git and __pycache__); an ARCHIVE (zip, tar,\n"
              "tar.gz) is sent as it is. Deploy it with `legion app deploy NAME --runtime R\n"
              "--package-image REF`: nodes mount it lazily and fetch only what is read.\n"
              "Needs an admin token.\n"
              "\n"
              "  --no-lazy            push the archive alone (nodes extract it whole)\n"
              "  --chunk-size N       bytes per chunk, a power of two from 4096 to 4194304\n"
              "                       (default 65536)\n"
              "  --insecure           reach the registry over plain HTTP (127.0.0.1 and localhost\n"
              "                       always are); nodes that deploy it need legiond\n"
              "                       --insecure-registry HOST\n" CLI_GLOBAL_HELP,
              f);
}

static int package_push(int argc, char **argv, struct lg_error *err) {
        enum { OPT_NO_LAZY = 1, OPT_CHUNK, OPT_INSECURE };
        static const struct option opts[] = {
                {"no-lazy", no_argument, NULL, OPT_NO_LAZY},
                {"chunk-size", required_argument, NULL, OPT_CHUNK},
                {"insecure", no_argument, NULL, OPT_INSECURE},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        bool no_lazy = false, insecure = false;
        long long chunk = 0;
        int c;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case OPT_NO_LAZY: no_lazy = true; break;
                case OPT_INSECURE: insecure = true; break;
                case OPT_CHUNK:
                        if (cli_parse_uint(optarg, 4 << 20, &chunk) < 0 || chunk < 4096 || (chunk & (chunk - 1)))
                                return cli_usage_error(push_usage,
                                                       "--chunk-size is a power of two from 4096 to 4194304, not `%s`",
                                                       optarg);
                        break;
                case 'h': push_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, push_usage);
                }
        }
        if (argc - optind != 2)
                return cli_usage_error(push_usage, argc - optind < 2 ? "DIR|ARCHIVE and REF are required"
                                                                     : "too many arguments");
        const char *src = argv[optind], *ref = argv[optind + 1];
        struct stat st;
        if (stat(src, &st) < 0)
                return lg_error_set(err, errno, "`%s`", src);
        _cleanup_close_ int fd = -1;
        uint64_t size = 0;
        int r = 0;
        if (S_ISDIR(st.st_mode)) {
                r = cli_pack_dir(src, PUSH_MAX, &fd, &size, err);
        } else {
                fd = open(src, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return lg_error_set(err, errno, "open `%s`", src);
                size = (uint64_t) st.st_size;
                if (!S_ISREG(st.st_mode) || !size)
                        r = lg_error_setm(err, EINVAL, "`%s` is no directory and no archive", src);
                else if (size > PUSH_MAX)
                        r = lg_error_setm(err, EFBIG, "`%s` is %llu bytes: legiond takes at most 1 GiB", src,
                                          (unsigned long long) size);
        }
        if (r < 0)
                return r;
        _cleanup_free_ char *eref = cli_url_escape(ref);
        if (!eref)
                return lg_error_set(err, ENOMEM, "request");
        char path[1200];
        int n = snprintf(path, sizeof(path), "/v1/packages/push?ref=%s%s%s", eref, no_lazy ? "&lazy=false" : "",
                         insecure ? "&insecure=true" : "");
        if (chunk && n > 0 && (size_t) n < sizeof(path))
                snprintf(path + n, sizeof(path) - (size_t) n, "&chunkSize=%lld", chunk);
        struct cli_request rq = {
                .method = "POST",
                .path = path,
                .body_fd = fd,
                .body_len = (size_t) size,
                .content_type = "application/octet-stream",
                .progress = true,
                .timeout_s = 0, /* a conversion and a push: minutes for a large package */
        };
        struct cli_response resp = {0};
        r = cli_request(&rq, &resp, err);
        if (r >= 0 && (resp.status < 200 || resp.status >= 300))
                r = cli_http_error(&resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                json_t *doc = json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL);
                char a[32], b[32];
                printf("pushed %s (%s): archive %s", cli_jstr(doc, "ref") ?: ref, cli_jstr(doc, "digest") ?: "?",
                       cli_fmt_bytes((uint64_t) cli_jint(doc, "size", 0), a, sizeof(a)));
                if (json_is_true(json_object_get(doc, "lazy")))
                        printf(", lazy form %lld chunks of %s, blob %s\n", cli_jint(doc, "lazyForm.chunks", 0),
                               cli_fmt_bytes((uint64_t) cli_jint(doc, "lazyForm.chunkSize", 0), b, sizeof(b)),
                               cli_fmt_bytes((uint64_t) cli_jint(doc, "lazyForm.blobSize", 0), a, sizeof(a)));
                else
                        printf(", no lazy form\n");
                json_decref(doc);
        }
        cli_response_done(&resp);
        return r;
}

int cmd_package(int argc, char **argv) {
        static const struct cli_verb verbs[] = {{"push", package_push}};
        return cli_run_group("package", verbs, ARRAY_SIZE(verbs), package_usage, argc, argv);
}
