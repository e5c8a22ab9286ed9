/* `legion image`: import, pull, convert, list, inspect, rm and gc of OCI images
 * through legiond's API (docs/api.md, "Images").
 *
 * import and pull ask for the NDJSON answer and show its progress as it
 * comes (cli_ndjson_request, ndjson.c); the stream's last line carries the
 * image or the error. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"

#define _cleanup_json_ _cleanup_(json_decrefp)

/* ---- usage ---------------------------------------------------------------------- */

static void image_usage(FILE *f) {
        fputs("usage: legion image <command> [options]\n"
              "\n"
              "commands:\n"
              "  import FILE [--name REPO:TAG]      load a `docker save` or OCI archive (tar, tar.gz)\n"
              "  pull REF [--username U --password-stdin] [--insecure] [--lazy auto|never]\n"
              "                                     pull REF from its registry (linux/amd64)\n"
              "  convert REF [--push] [--chunk-size N]\n"
              "                                     make REF's layers lazy layers (and push them)\n"
              "  list                               images in legiond's store\n"
              "  inspect REF...                     an image's config, layers and names (JSON)\n"
              "  rm REF... [--force]                remove names (blobs go at the next gc)\n"
              "  gc                                 delete blobs and layers no image needs\n"
              "\n"
              "REF is a name (busybox, 127.0.0.1:5000/app:1) or an id (sha256:..., or at\n"
              "least 12 of its hex digits).\n" CLI_GLOBAL_HELP,
              f);
}

static void import_usage(FILE *f) {
        fputs("usage: legion image import FILE [--name REPO:TAG]\n"
              "\n"
              "Upload FILE, a `docker save` archive or an OCI image layout tar (plain or\n"
              "gzip), and import its images into legiond's store.\n"
              "\n"
              "  -n, --name REPO:TAG  name the image (default: the archive's own tags)\n" CLI_GLOBAL_HELP,
              f);
}

static void pull_usage(FILE *f) {
        fputs("usage: legion image pull REF [--username U --password-stdin] [--insecure] [--lazy auto|never]\n"
              "\n"
              "legiond pulls REF from its registry; an index is resolved to linux/amd64.\n"
              "When the registry has REF's lazy form (`legion image convert --push`),\n"
              "its layers are mounted and read on demand instead of pulled\n"
              "(docs/lazy-images.md).\n"
              "\n"
              "  -u, --username U     registry user name\n"
              "      --password-stdin read the registry password from stdin\n"
              "      --insecure       plain http (the default for localhost and 127.0.0.1)\n"
              "      --lazy MODE      auto: lazily when the registry has the lazy form;\n"
              "                       never: always pull whole layers (default: legiond's\n"
              "                       --lazy-images)\n" CLI_GLOBAL_HELP,
              f);
}

static void convert_usage(FILE *f) {
        fputs("usage: legion image convert REF [--push] [--chunk-size N] [--username U --password-stdin]\n"
              "                                [--insecure]\n"
              "\n"
              "legiond turns each layer of REF into its lazy form (an EROFS image and a\n"
              "table of sha256-named chunks, docs/lazy-images.md). With --push, the lazy\n"
              "form goes to the registry of REF's name as an artifact that refers to\n"
              "the image, so that other nodes pull REF lazily.\n"
              "\n"
              "      --push           push the lazy artifact to REF's registry\n"
              "      --chunk-size N   bytes per chunk: a power of two, 4K to 4M (default 64K)\n"
              "  -u, --username U     registry user name (for --push)\n"
              "      --password-stdin read the registry password from stdin\n"
              "      --insecure       plain http (the default for localhost and 127.0.0.1)\n" CLI_GLOBAL_HELP,
              f);
}

static void list_usage(FILE *f) { fputs("usage: legion image list\n" CLI_GLOBAL_HELP, f); }
static void inspect_usage(FILE *f) { fputs("usage: legion image inspect REF...\n" CLI_GLOBAL_HELP, f); }
static void rm_usage(FILE *f) {
        fputs("usage: legion image rm REF... [--force]\n"
              "\n"
              "Remove names; an id removes every name of its image. The last name of an\n"
              "image a running pod uses needs --force. Blobs and layers stay until\n"
              "`legion image gc`.\n"
              "\n"
              "  -f, --force          remove it even when a running pod uses it\n" CLI_GLOBAL_HELP,
              f);
}
static void gc_usage(FILE *f) {
        fputs("usage: legion image gc\n"
              "\n"
              "Delete the blobs and extracted layers that no named image refers to\n"
              "(layers of running sandboxes stay), lazy layers (unmounted) and lazy\n"
              "forms likewise, and the chunks no lazy layer left needs.\n" CLI_GLOBAL_HELP,
              f);
}

/* "local: 12.3 MiB of 104.9 MiB (11.7%)" of an image with lazy layers. */
static void print_local(FILE *f, const json_t *image) {
        json_t *lazy = json_object_get(image, "lazy");
        if (!json_is_object(lazy))
                return;
        uint64_t have = (uint64_t) cli_jint(lazy, "localBytes", 0), all = (uint64_t) cli_jint(lazy, "bytes", 0);
        char a[32], b[32];
        fprintf(f, "local: %s of %s (%.1f%%)\n", cli_fmt_bytes(have, a, sizeof(a)), cli_fmt_bytes(all, b, sizeof(b)),
                all ? 100.0 * (double) have / (double) all : 100.0);
}

/* The image an import or pull made, and for a pull how it went. */
static void print_image_result(const json_t *image, const char *verb) {
        if (cli_globals.json) {
                char *text = json_dumps(image, JSON_COMPACT);
                if (text)
                        printf("%s\n", text);
                free(text);
                return;
        }
        json_t *names = json_object_get(image, "names");
        const char *name = json_string_value(json_array_get(names, 0));
        const char *id = cli_jstr(image, "id") ?: "?";
        char size[32];
        printf("%s %s (id %.19s, %s)\n", verb, name ? name : "an untagged image", id,
               cli_fmt_bytes((uint64_t) cli_jint(image, "size", 0), size, sizeof(size)));
        json_t *layers = json_object_get(image, "pulledLayers");
        if (json_is_object(json_object_get(image, "lazy"))) {
                size_t i, n_lazy = 0;
                json_t *l;
                json_array_foreach(layers, i, l) n_lazy += !strcmp(cli_jstr(l, "how") ?: "", "lazy");
                printf("lazily: %zu of %zu layers mounted, the others were here\n", n_lazy, json_array_size(layers));
                print_local(stdout, image);
        } else if (cli_jstr(image, "lazyReason")) {
                printf("not lazily: %s\n", cli_jstr(image, "lazyReason"));
        }
}

/* Run a request whose 2xx answer is the NDJSON stream; print the image. */
static int run_streamed(struct cli_request *rq, const char *verb, struct lg_error *err) {
        _cleanup_json_ json_t *image = NULL;
        int r = cli_ndjson_request(rq, "image", verb, NULL, &image, err);
        if (r >= 0)
                print_image_result(image, verb);
        return r;
}

/* ---- verbs ---------------------------------------------------------------------------- */

static int image_import(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {
                {"name", required_argument, NULL, 'n'},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        const char *name = NULL;
        int c;
        while ((c = cli_getopt(argc, argv, ":hn:", opts)) != -1) {
                switch (c) {
                case 'n': name = optarg; break;
                case 'h': import_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, import_usage);
                }
        }
        if (optind + 1 != argc)
                return cli_usage_error(import_usage, optind == argc ? "FILE is required" : "unexpected argument `%s`",
                                       argv[optind + (optind < argc)]);
        const char *file = argv[optind];
        _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return lg_error_set(err, errno, "open `%s`", file);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return lg_error_set(err, errno, "stat `%s`", file);
        if (!S_ISREG(st.st_mode))
                return lg_error_setm(err, EINVAL, "`%s` is not a regular file", file);
        _cleanup_free_ char *path = NULL;
        _cleanup_free_ char *q = name ? cli_url_escape(name) : NULL;
        if ((name && !q) || asprintf(&path, "/v1/images/import%s%s", q ? "?name=" : "", q ? q : "") < 0)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_request rq = {
                .method = "POST",
                .path = path,
                .body_fd = fd,
                .body_len = (size_t) st.st_size,
                .progress = true,
                .content_type = "application/x-tar",
        };
        return run_streamed(&rq, "imported", err);
}

static int read_stdin(char **ret, struct lg_error *err) {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (!m)
                return lg_error_set(err, errno, "read stdin");
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0 && len < (1u << 20))
                fwrite(chunk, 1, n, m);
        bool bad = ferror(stdin);
        fclose(m);
        if (bad) {
                free(buf);
                return lg_error_set(err, EIO, "read the password from stdin");
        }
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
                buf[--len] = '\0';
        *ret = buf;
        return 0;
}

/* The registry options pull and convert share, and the request body
 * they make: {"image", "username", "password", "insecure"}. */
struct registry_opts {
        const char *user;
        bool pw_stdin, insecure;
};

enum { OPT_PASSWORD_STDIN = 1, OPT_INSECURE, OPT_LAZY, OPT_PUSH, OPT_CHUNK_SIZE };

#define REGISTRY_OPTIONS                                                         \
        {"username", required_argument, NULL, 'u'},                              \
        {"password-stdin", no_argument, NULL, OPT_PASSWORD_STDIN},               \
        {"insecure", no_argument, NULL, OPT_INSECURE},                           \
        {"help", no_argument, NULL, 'h'}

/* 1 when c was one of the registry options. */
static int registry_opt(int c, struct registry_opts *o) {
        switch (c) {
        case 'u': o->user = optarg; return 1;
        case OPT_PASSWORD_STDIN: o->pw_stdin = true; return 1;
        case OPT_INSECURE: o->insecure = true; return 1;
        default: return 0;
        }
}

/* Check the operands and options, read the password; the body for ref. */
static int registry_body(int argc, char **argv, const struct registry_opts *o, void (*usage)(FILE *),
                         json_t **ret, struct lg_error *err) {
        *ret = NULL;
        if (optind + 1 != argc)
                return cli_usage_error(usage, optind == argc ? "REF is required" : "unexpected argument `%s`",
                                       argv[optind + (optind < argc)]);
        if (o->pw_stdin && !o->user)
                return cli_usage_error(usage, "--password-stdin needs --username");
        _cleanup_free_ char *password = NULL;
        if (o->pw_stdin) {
                int r = read_stdin(&password, err);
                if (r < 0)
                        return r;
        }
        json_t *body = json_pack("{s:s}", "image", argv[optind]);
        if (!body)
                return lg_error_set(err, ENOMEM, "request");
        if (o->user)
                json_object_set_new(body, "username", json_string(o->user));
        if (password) {
                json_object_set_new(body, "password", json_string(password));
                explicit_bzero(password, strlen(password));
        }
        if (o->insecure)
                json_object_set_new(body, "insecure", json_true());
        *ret = body;
        return 0;
}

/* POST body (scrubbed after: it may hold a password) to path, streamed. */
static int post_streamed(const char *path, json_t *body, const char *key, const char *verb, json_t **result,
                         struct lg_error *err) {
        _cleanup_free_ char *text = json_dumps(body, JSON_COMPACT);
        json_t *pw = json_object_get(body, "password");
        if (pw)
                explicit_bzero((char *) json_string_value(pw), strlen(json_string_value(pw)));
        if (!text)
                return lg_error_set(err, ENOMEM, "request");
        struct cli_request rq = {
                .method = "POST",
                .path = path,
                .body = text,
                .body_len = strlen(text),
                .content_type = "application/json",
        };
        int r = cli_ndjson_request(&rq, key, verb, NULL, result, err);
        explicit_bzero(text, strlen(text));
        return r;
}

static int image_pull(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {
                REGISTRY_OPTIONS,
                {"lazy", required_argument, NULL, OPT_LAZY},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        struct registry_opts o = {0};
        const char *lazy = NULL;
        int c;
        while ((c = cli_getopt(argc, argv, ":hu:", opts)) != -1) {
                if (registry_opt(c, &o))
                        continue;
                switch (c) {
                case OPT_LAZY: lazy = optarg; break;
                case 'h': pull_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, pull_usage);
                }
        }
        if (lazy && strcmp(lazy, "auto") && strcmp(lazy, "never"))
                return cli_usage_error(pull_usage, "--lazy must be auto or never, not `%s`", lazy);
        _cleanup_json_ json_t *body = NULL;
        int r = registry_body(argc, argv, &o, pull_usage, &body, err);
        if (r)
                return r;
        if (lazy)
                json_object_set_new(body, "lazy", json_string(lazy));
        _cleanup_json_ json_t *image = NULL;
        r = post_streamed("/v1/images/pull", body, "image", "pull", &image, err);
        if (r >= 0)
                print_image_result(image, "pulled");
        return r;
}

static int image_convert(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {
                REGISTRY_OPTIONS,
                {"push", no_argument, NULL, OPT_PUSH},
                {"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        struct registry_opts o = {0};
        bool push = false;
        uint64_t chunk = 0;
        int c;
        while ((c = cli_getopt(argc, argv, ":hu:", opts)) != -1) {
                if (registry_opt(c, &o))
                        continue;
                switch (c) {
                case OPT_PUSH: push = true; break;
                case OPT_CHUNK_SIZE:
                        if (lg_parse_size(optarg, &chunk) < 0 || chunk < 4096 || chunk > (4u << 20) || (chunk & (chunk - 1)))
                                return cli_usage_error(convert_usage,
                                                       "--chunk-size must be a power of two from 4K to 4M, not `%s`",
                                                       optarg);
                        break;
                case 'h': convert_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, convert_usage);
                }
        }
        _cleanup_json_ json_t *body = NULL;
        int r = registry_body(argc, argv, &o, convert_usage, &body, err);
        if (r)
                return r;
        if (push)
                json_object_set_new(body, "push", json_true());
        if (chunk)
                json_object_set_new(body, "chunkSize", json_integer((json_int_t) chunk));
        _cleanup_json_ json_t *res = NULL;
        r = post_streamed("/v1/images/convert", body, "convert", "convert", &res, err);
        if (r < 0)
                return r;
        if (cli_globals.json) {
                char *text = json_dumps(res, JSON_COMPACT);
                if (text)
                        printf("%s\n", text);
                free(text);
                return 0;
        }
        static const char *const head[] = {"LAYER", "BLOB", "CHUNKS", "UNIQUE", "META", ""};
        struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
        size_t i;
        json_t *l;
        json_array_foreach(json_object_get(res, "layers"), i, l) {
                char dg[16], blob[32], chunks[32], uniq[32], meta[32];
                const char *d = cli_jstr(l, "digest") ?: "";
                snprintf(dg, sizeof(dg), "%.12s", !strncmp(d, "sha256:", 7) ? d + 7 : d);
                cli_fmt_bytes((uint64_t) cli_jint(l, "blobSize", 0), blob, sizeof(blob));
                snprintf(chunks, sizeof(chunks), "%lld", cli_jint(l, "chunks", 0));
                cli_fmt_bytes((uint64_t) cli_jint(l, "uniqueBytes", 0), uniq, sizeof(uniq));
                cli_fmt_bytes((uint64_t) cli_jint(l, "metaSize", 0), meta, sizeof(meta));
                const char *row[] = {dg, blob, chunks, uniq, meta,
                                     json_is_true(json_object_get(l, "reused")) ? "(there already)" : ""};
                cli_table_add(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
        json_t *secs = json_object_get(res, "seconds");
        printf("converted %s in %.2f s", argv[argc - 1], json_is_number(secs) ? json_number_value(secs) : 0.0);
        if (json_is_true(json_object_get(res, "pushed")))
                printf(", pushed to %s (%.19s)", cli_jstr(res, "pushedTo") ?: "?", cli_jstr(res, "artifact") ?: "?");
        printf("\n");
        return 0;
}

static void created_text(const char *created, char *buf, size_t cap) {
        /* "2024-05-01T10:00:00Z" -> "2024-05-01 10:00" */
        if (!created || strlen(created) < 16) {
                snprintf(buf, cap, "-");
                return;
        }
        snprintf(buf, cap, "%.10s %.5s", created, created + 11);
}

static int image_list(int argc, char **argv, struct lg_error *err) {
        int r = cli_no_options(argc, argv, list_usage);
        if (r)
                return r == 1 ? 0 : r;
        if (optind != argc)
                return cli_usage_error(list_usage, "unexpected argument `%s`", argv[optind]);
        struct cli_response resp = {0};
        r = cli_call("GET", "/v1/images", NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                static const char *const head[] = {"NAME", "ID", "SIZE", "CREATED", "LAZY", "LOCAL"};
                struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
                json_t *items = json_object_get(resp.json, "items");
                size_t i;
                json_t *img;
                json_array_foreach(items, i, img) {
                        char id[16], size[32], created[32];
                        const char *full = cli_jstr(img, "id") ?: "";
                        snprintf(id, sizeof(id), "%.12s", !strncmp(full, "sha256:", 7) ? full + 7 : full);
                        cli_fmt_bytes((uint64_t) cli_jint(img, "size", 0), size, sizeof(size));
                        created_text(cli_jstr(img, "created"), created, sizeof(created));
                        json_t *lazy = json_object_get(img, "lazy");
                        char local[16] = "100%";
                        if (json_is_object(lazy)) {
                                long long all = cli_jint(lazy, "bytes", 0), have = cli_jint(lazy, "localBytes", 0);
                                snprintf(local, sizeof(local), "%.1f%%", all ? 100.0 * (double) have / (double) all : 100.0);
                        }
                        const char *lz = json_is_object(lazy) ? "yes" : "no";
                        json_t *names = json_object_get(img, "names");
                        if (!json_array_size(names)) {
                                const char *row[] = {"<none>", id, size, created, lz, local};
                                cli_table_add(t, row);
                        }
                        size_t k;
                        json_t *nm;
                        json_array_foreach(names, k, nm) {
                                const char *row[] = {json_string_value(nm), id, size, created, lz, local};
                                cli_table_add(t, row);
                        }
                }
                if (json_array_size(items))
                        cli_table_print(t, stdout);
                else
                        fprintf(stderr, "no images\n");
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r;
}

static char *image_path(const char *ref, const char *query) {
        _cleanup_free_ char *e = cli_url_escape(ref);
        char *p = NULL;
        if (!e || asprintf(&p, "/v1/images/%s%s", e, query ? query : "") < 0)
                return NULL;
        return p;
}

/* Run one() for each REF operand. With one REF its error is the verb's;
 * with several, each failure is said and the rest still run (exit 1). */
static int each_ref(int argc, char **argv, bool force, int (*one)(const char *ref, bool force, struct lg_error *err),
                    struct lg_error *err) {
        int ret = 0;
        for (int i = optind; i < argc; i++) {
                int r = one(argv[i], force, err);
                if (r < 0) {
                        if (argc - optind == 1)
                                return r;
                        fprintf(stderr, "legion: %s\n", err->msg);
                        ret = 1;
                }
        }
        return ret;
}

static int inspect_one(const char *ref, bool force, struct lg_error *err) {
        (void) force;
        _cleanup_free_ char *path = image_path(ref, NULL);
        if (!path)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_response resp = {0};
        int r = cli_call("GET", path, NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                char *text = json_dumps(resp.json, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
                if (text)
                        printf("%s\n", text);
                free(text);
                /* stdout stays JSON. */
                print_local(stderr, resp.json);
        }
        cli_response_done(&resp);
        return r;
}

static int image_inspect(int argc, char **argv, struct lg_error *err) {
        int r = cli_no_options(argc, argv, inspect_usage);
        if (r)
                return r == 1 ? 0 : r;
        if (optind == argc)
                return cli_usage_error(inspect_usage, "REF is required");
        return each_ref(argc, argv, false, inspect_one, err);
}

static int rm_one(const char *ref, bool force, struct lg_error *err) {
        _cleanup_free_ char *path = image_path(ref, force ? "?force=true" : NULL);
        if (!path)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_response resp = {0};
        int r = cli_call("DELETE", path, NULL, &resp, err);
        cli_response_done(&resp);
        if (r >= 0)
                printf("removed %s\n", ref);
        return r;
}

static int image_rm(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {
                {"force", no_argument, NULL, 'f'},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        bool force = false;
        int c;
        while ((c = cli_getopt(argc, argv, ":hf", opts)) != -1) {
                switch (c) {
                case 'f': force = true; break;
                case 'h': rm_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, rm_usage);
                }
        }
        if (optind == argc)
                return cli_usage_error(rm_usage, "REF is required");
        return each_ref(argc, argv, force, rm_one, err);
}

static int image_gc(int argc, char **argv, struct lg_error *err) {
        int r = cli_no_options(argc, argv, gc_usage);
        if (r)
                return r == 1 ? 0 : r;
        if (optind != argc)
                return cli_usage_error(gc_usage, "unexpected argument `%s`", argv[optind]);
        struct cli_response resp = {0};
        r = cli_call("POST", "/v1/images/gc", NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                char freed[32];
                long long blobs = cli_jint(resp.json, "blobsRemoved", 0), layers = cli_jint(resp.json, "layersRemoved", 0);
                long long imgs = cli_jint(resp.json, "imagesRemoved", 0);
                if (imgs)
                        printf("removed %lld dangling image%s\n", imgs, imgs == 1 ? "" : "s");
                long long chunks = cli_jint(resp.json, "chunksRemoved", 0);
                printf("removed %lld blob%s, %lld layer%s and %lld lazy chunk%s, freed %s\n", blobs, blobs == 1 ? "" : "s",
                       layers, layers == 1 ? "" : "s", chunks, chunks == 1 ? "" : "s",
                       cli_fmt_bytes((uint64_t) cli_jint(resp.json, "bytesFreed", 0), freed, sizeof(freed)));
        }
        cli_response_done(&resp);
        return r;
}

int cmd_image(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"import", image_import}, {"load", image_import},     {"pull", image_pull}, {"list", image_list},
                {"ls", image_list},       {"inspect", image_inspect}, {"rm", image_rm},     {"remove", image_rm},
                {"gc", image_gc},         {"convert", image_convert},
        };
        return cli_run_group("image", verbs, ARRAY_SIZE(verbs), image_usage, argc, argv);
}
