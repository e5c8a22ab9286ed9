/* `legion pool`: warm pool groups (admin): create or change, list, delete;
 * language worker pools and image pools (docs/container-apps.md), whose
 * create streams the pull of a missing image (cli_ndjson_request). */
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"

static void pool_usage(FILE *f) {
        fputs("usage: legion pool <command> [options]\n"
              "\n"
              "commands:\n"
              "  create NAME --runtime R [--ready N] [options]  create or change a pool group (admin)\n"
              "  create NAME --image REF [--ready N] [options]  the same, of an image (pulled if missing)\n"
              "  list                                          pool groups and their warm sandboxes\n"
              "  delete NAME...                                delete pool groups (admin)\n"
              "\n"
              "Run `legion pool create --help` for its options.\n" CLI_GLOBAL_HELP,
              f);
}

static void create_usage(FILE *f) {
        fputs("usage: legion pool create NAME --runtime R [--ready N] [options]\n"
              "       legion pool create NAME --image REF [--ready N] [options]\n"
              "\n"
              "Create the pool group NAME, or replace its spec when it exists. A new image\n"
              "or version replaces its warm sandboxes gradually.\n"
              "\n"
              "  --runtime R          python3, node or custom (language workers)\n"
              "  --version V          the workers' version: a new one is an upgrade\n"
              "  --image REF          an OCI image: its warm sandboxes are made from it (pulled\n"
              "                       first, with progress, when missing)\n"
              "  --ready N            warm sandboxes kept ready (default 1)\n"
              "  --cpu C              CPUs (0.5) or millicores (500m) of a sandbox\n"
              "  --memory M           memory of a sandbox, e.g. 256Mi\n"
              "  --boost-cpu C        CPU during the startup boost (with --boost-seconds)\n"
              "  --boost-seconds S    length of the startup boost (with --boost-cpu)\n"
              "  --max-unavailable N  an upgrade replaces warm sandboxes with at most N missing\n"
              "                       (default 1)\n"
              "  --apps POLICY        what an upgrade does to the pool's apps: next-instance (their\n"
              "                       next new instance is a new one; default) or new-revision (a\n"
              "                       new revision at once)\n"
              "\n"
              "image pools:\n"
              "  --placeholder MODE   sandbox (default: made, no process; the app starts its own)\n"
              "                       or process (the pool's server started and ready; apps\n"
              "                       inherit it and may not set command, args, env or port)\n"
              "  --port N             with process: where the server listens\n"
              "  --command C, --arg A, --env K=V, --ready-path P\n"
              "                       with process: the server's command line, environment and\n"
              "                       readiness check (repeatable but --ready-path)\n" CLI_GLOBAL_HELP,
              f);
}

static void list_usage(FILE *f) { fputs("usage: legion pool list\n" CLI_GLOBAL_HELP, f); }
static void delete_usage(FILE *f) { fputs("usage: legion pool delete NAME...\n" CLI_GLOBAL_HELP, f); }

static int pool_create(int argc, char **argv, struct lg_error *err) {
        enum {
                OPT_RUNTIME = 1, OPT_READY, OPT_CPU, OPT_MEM, OPT_BCPU, OPT_BSEC, OPT_VERSION, OPT_IMAGE,
                OPT_MAXU, OPT_APPS, OPT_PLACEHOLDER, OPT_PORT, OPT_COMMAND, OPT_ARG, OPT_ENV, OPT_READYP,
        };
        static const struct option opts[] = {
                {"runtime", required_argument, NULL, OPT_RUNTIME},
                {"ready", required_argument, NULL, OPT_READY},
                {"cpu", required_argument, NULL, OPT_CPU},
                {"memory", required_argument, NULL, OPT_MEM},
                {"boost-cpu", required_argument, NULL, OPT_BCPU},
                {"boost-seconds", required_argument, NULL, OPT_BSEC},
                {"version", required_argument, NULL, OPT_VERSION},
                {"image", required_argument, NULL, OPT_IMAGE},
                {"max-unavailable", required_argument, NULL, OPT_MAXU},
                {"apps", required_argument, NULL, OPT_APPS},
                {"placeholder", required_argument, NULL, OPT_PLACEHOLDER},
                {"port", required_argument, NULL, OPT_PORT},
                {"command", required_argument, NULL, OPT_COMMAND},
                {"arg", required_argument, NULL, OPT_ARG},
                {"env", required_argument, NULL, OPT_ENV},
                {"ready-path", required_argument, NULL, OPT_READYP},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        json_t *spec = json_object(), *upgrade = json_object(), *command = json_array(), *args = json_array(),
               *env = json_object();
        const char *boost_cpu = NULL;
        long long v, boost_s = -1;
        int c, r = 0;
        while (r == 0 && (c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case OPT_RUNTIME: json_object_set_new(spec, "runtime", json_string(optarg)); break;
                case OPT_VERSION: json_object_set_new(spec, "version", json_string(optarg)); break;
                case OPT_IMAGE: json_object_set_new(spec, "image", json_string(optarg)); break;
                case OPT_PLACEHOLDER: json_object_set_new(spec, "placeholder", json_string(optarg)); break;
                case OPT_READYP: json_object_set_new(spec, "readinessPath", json_string(optarg)); break;
                case OPT_COMMAND: json_array_append_new(command, json_string(optarg)); break;
                case OPT_ARG: json_array_append_new(args, json_string(optarg)); break;
                case OPT_ENV: {
                        const char *eq = strchr(optarg, '=');
                        if (!eq || eq == optarg) {
                                r = cli_usage_error(create_usage, "--env is K=V, not `%s`", optarg);
                                break;
                        }
                        char key[256];
                        snprintf(key, sizeof(key), "%.*s", (int) (eq - optarg), optarg);
                        json_object_set_new(env, key, json_string(eq + 1));
                        break;
                }
                case OPT_APPS:
                        if (strcmp(optarg, "new-revision") && strcmp(optarg, "next-instance"))
                                r = cli_usage_error(create_usage, "--apps is new-revision or next-instance, not `%s`",
                                                    optarg);
                        else
                                json_object_set_new(upgrade, "apps", json_string(strcmp(optarg, "new-revision")
                                                                                         ? "nextInstance"
                                                                                         : "newRevision"));
                        break;
                case OPT_MAXU:
                case OPT_PORT:
                        if (cli_parse_uint(optarg, c == OPT_PORT ? 65535 : 1000000, &v) < 0)
                                r = cli_usage_error(create_usage, "--%s needs a whole number, not `%s`",
                                                    c == OPT_PORT ? "port" : "max-unavailable", optarg);
                        else if (c == OPT_PORT)
                                json_object_set_new(spec, "port", json_integer(v));
                        else
                                json_object_set_new(upgrade, "maxUnavailable", json_integer(v));
                        break;
                case OPT_READY:
                        if (cli_parse_uint(optarg, 1000000, &v) < 0)
                                r = cli_usage_error(create_usage, "--ready needs a whole number, not `%s`", optarg);
                        else
                                json_object_set_new(spec, "ready", json_integer(v));
                        break;
                case OPT_CPU: json_object_set_new(spec, "cpu", json_string(optarg)); break;
                case OPT_MEM: json_object_set_new(spec, "memory", json_string(optarg)); break;
                case OPT_BCPU: boost_cpu = optarg; break;
                case OPT_BSEC:
                        if (cli_parse_uint(optarg, 1000000, &boost_s) < 0)
                                r = cli_usage_error(create_usage, "--boost-seconds needs a whole number, not `%s`",
                                                    optarg);
                        break;
                case 'h': create_usage(stdout); r = 1; break;
                default: r = cli_bad_option(c, argv, create_usage); break;
                }
        }
        if (r == 0 && optind != argc - 1)
                r = cli_usage_error(create_usage, optind >= argc ? "no pool group name given" : "too many arguments");
        if (r == 0 && json_object_get(spec, "runtime") && json_object_get(spec, "image"))
                r = cli_usage_error(create_usage, "--image takes no --runtime (its warm sandboxes are made from the image)");
        if (r == 0 && !json_object_get(spec, "runtime") && !json_object_get(spec, "image"))
                r = cli_usage_error(create_usage, "--runtime is required (python3, node or custom), or --image for an image pool");
        if (r == 0 && (!boost_cpu) != (boost_s < 0))
                r = cli_usage_error(create_usage, "--boost-cpu and --boost-seconds go together");
        if (json_object_size(upgrade))
                json_object_set(spec, "upgrade", upgrade);
        if (json_array_size(command))
                json_object_set(spec, "command", command);
        if (json_array_size(args))
                json_object_set(spec, "args", args);
        if (json_object_size(env))
                json_object_set(spec, "env", env);
        json_decref(upgrade);
        json_decref(command);
        json_decref(args);
        json_decref(env);
        if (r != 0) {
                json_decref(spec);
                return r == 1 ? 0 : r;
        }
        const char *name = argv[optind];
        if (boost_cpu)
                json_object_set_new(spec, "startupBoost", json_pack("{s:s, s:I}", "cpu", boost_cpu, "seconds",
                                                                    (json_int_t) boost_s));
        r = cli_check_name("pool group", name, err);
        char path[512], announce[600];
        snprintf(path, sizeof(path), "/v1/poolgroups/%s", name);
        snprintf(announce, sizeof(announce), "pulling %s (not in legiond's image store)",
                 cli_jstr(spec, "image") ?: "?");
        /* An image pool's image may be pulled first: streamed. */
        bool image = json_object_get(spec, "image") != NULL;
        char *text = json_dumps(spec, JSON_COMPACT);
        json_decref(spec);
        json_t *pool = NULL;
        struct cli_request rq = {.method = "PUT", .path = path, .body = text, .body_len = text ? strlen(text) : 0,
                                 .content_type = "application/json"};
        struct cli_response resp = {0};
        if (r >= 0 && !text)
                r = lg_error_set(err, ENOMEM, "request");
        if (r >= 0 && image) {
                r = cli_ndjson_request(&rq, "poolGroup", "pool group put", announce, &pool, err);
        } else if (r >= 0) {
                r = cli_request(&rq, &resp, err);
                if (r >= 0 && (resp.status < 200 || resp.status >= 300))
                        r = cli_http_error(&resp, err);
                if (r >= 0)
                        pool = json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL);
        }
        free(text);
        if (r >= 0 && cli_globals.json) {
                char *out = json_dumps(pool, JSON_COMPACT);
                if (out)
                        printf("%s\n", out);
                free(out);
        } else if (r >= 0 && image) {
                printf("pool group %s: image %s (id %.19s), %lld ready\n", name, cli_jstr(pool, "status.image.ref") ?: "?", cli_jstr(pool, "status.image.id") ?: "?",
                       cli_jint(pool, "spec.ready", 1));
        } else if (r >= 0) {
                printf("%s pool group %s (runtime %s, %lld ready)\n", resp.status == 201 ? "created" : "updated", name,
                       cli_jstr(pool, "spec.runtime") ?: "?", cli_jint(pool, "spec.ready", 1));
        }
        cli_response_done(&resp);
        json_decref(pool);
        return r;
}

static int pool_list(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, CLI_GLOBAL_OPTIONS, {0, 0, 0, 0}};
        int c;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                if (c == 'h') {
                        list_usage(stdout);
                        return 0;
                }
                return cli_bad_option(c, argv, list_usage);
        }
        if (optind != argc)
                return cli_usage_error(list_usage, "unexpected argument `%s`", argv[optind]);
        struct cli_response resp = {0};
        int r = cli_call("GET", "/v1/poolgroups", NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                static const char *const head[] = {"NAME",   "RUNTIME", "READY", "STARTING", "CPU",
                                                   "MEMORY", "BOOST",   "TAKEN", "ON-DEMAND"};
                struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
                size_t i;
                json_t *p;
                json_array_foreach(json_object_get(resp.json, "items"), i, p) {
                        char ready[48], starting[24], cpu[32], mem[32], boost[64], taken[24], ond[24], a[32];
                        snprintf(ready, sizeof(ready), "%s/%lld", cli_jtext(p, "status.ready", a, sizeof(a)),
                                 cli_jint(p, "spec.ready", 1));
                        /* An upgrade under way: how far. */
                        if (json_is_true(json_object_get(json_object_get(p, "status"), "rolling")))
                                snprintf(ready + strlen(ready), sizeof(ready) - strlen(ready), " (rolling %lld new, %lld old)",
                                         cli_jint(p, "status.updated", 0), cli_jint(p, "status.outdated", 0));
                        cli_jtext(p, "status.starting", starting, sizeof(starting));
                        cli_jtext(p, "spec.cpu", cpu, sizeof(cpu));
                        cli_jtext(p, "spec.memory", mem, sizeof(mem));
                        if (json_object_get(json_object_get(p, "spec"), "startupBoost"))
                                snprintf(boost, sizeof(boost), "%s for %llds",
                                         cli_jtext(p, "spec.startupBoost.cpu", a, sizeof(a)),
                                         cli_jint(p, "spec.startupBoost.seconds", 0));
                        else
                                snprintf(boost, sizeof(boost), "-");
                        cli_jtext(p, "status.taken", taken, sizeof(taken));
                        cli_jtext(p, "status.onDemand", ond, sizeof(ond));
                        char what[300];
                        if (cli_jstr(p, "spec.image"))
                                snprintf(what, sizeof(what), "%s%s%s", cli_jstr(p, "spec.image"),
                                         cli_jstr(p, "status.pull.phase") ? " (pulling)" : "",
                                         cli_jstr(p, "status.pull.error") ? " (pull failed)" : "");
                        else
                                snprintf(what, sizeof(what), "%s%s%s", cli_jstr(p, "spec.runtime") ?: "?",
                                         cli_jstr(p, "spec.version") ? " " : "", cli_jstr(p, "spec.version") ?: "");
                        const char *row[] = {cli_jstr(p, "name"), what, ready, starting, cpu, mem, boost, taken, ond};
                        cli_table_add(t, row);
                }
                if (json_array_size(json_object_get(resp.json, "items")))
                        cli_table_print(t, stdout);
                else
                        fprintf(stderr, "no pool groups\n");
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r;
}

static int pool_delete(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, CLI_GLOBAL_OPTIONS, {0, 0, 0, 0}};
        int c;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                if (c == 'h') {
                        delete_usage(stdout);
                        return 0;
                }
                return cli_bad_option(c, argv, delete_usage);
        }
        if (optind >= argc)
                return cli_usage_error(delete_usage, "no pool group name given");
        for (int i = optind; i < argc; i++) {
                int r = cli_check_name("pool group", argv[i], err);
                if (r < 0)
                        return r;
        }
        for (int i = optind; i < argc; i++) {
                char path[512];
                snprintf(path, sizeof(path), "/v1/poolgroups/%s", argv[i]);
                struct cli_response resp = {0};
                int r = cli_call("DELETE", path, NULL, &resp, err);
                cli_response_done(&resp);
                if (r < 0)
                        return r;
                if (!cli_globals.json)
                        printf("deleted pool group %s\n", argv[i]);
        }
        return 0;
}

int cmd_pool(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"create", pool_create}, {"apply", pool_create}, {"list", pool_list},
                {"ls", pool_list},       {"delete", pool_delete}, {"rm", pool_delete},
        };
        return cli_run_group("pool", verbs, ARRAY_SIZE(verbs), pool_usage, argc, argv);
}
