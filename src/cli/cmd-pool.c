/* `legion pool`: warm pool groups (admin): create or change, list, delete. */
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"

static void pool_usage(FILE *f) {
        fputs("usage: legion pool <command> [options]\n"
              "\n"
              "commands:\n"
              "  create NAME --runtime R [--ready N] [options]  create or change a pool group (admin)\n"
              "  list                                          pool groups and their warm sandboxes\n"
              "  delete NAME...                                delete pool groups (admin)\n"
              "\n"
              "Run `legion pool create --help` for its options.\n" CLI_GLOBAL_HELP,
              f);
}

static void create_usage(FILE *f) {
        fputs("usage: legion pool create NAME --runtime R [--ready N] [options]\n"
              "\n"
              "Create the pool group NAME, or replace its spec when it exists.\n"
              "\n"
              "  --runtime R          python3, node or custom (required)\n"
              "  --ready N            warm sandboxes kept ready (default 1)\n"
              "  --cpu C              CPUs (0.5) or millicores (500m) of a sandbox\n"
              "  --memory M           memory of a sandbox, e.g. 256Mi\n"
              "  --boost-cpu C        CPU during the startup boost (with --boost-seconds)\n"
              "  --boost-seconds S    length of the startup boost (with --boost-cpu)\n" CLI_GLOBAL_HELP,
              f);
}

static void list_usage(FILE *f) { fputs("usage: legion pool list\n" CLI_GLOBAL_HELP, f); }
static void delete_usage(FILE *f) { fputs("usage: legion pool delete NAME...\n" CLI_GLOBAL_HELP, f); }

static int pool_create(int argc, char **argv, struct lg_error *err) {
        enum { OPT_RUNTIME = 1, OPT_READY, OPT_CPU, OPT_MEM, OPT_BCPU, OPT_BSEC };
        static const struct option opts[] = {
                {"runtime", required_argument, NULL, OPT_RUNTIME},
                {"ready", required_argument, NULL, OPT_READY},
                {"cpu", required_argument, NULL, OPT_CPU},
                {"memory", required_argument, NULL, OPT_MEM},
                {"boost-cpu", required_argument, NULL, OPT_BCPU},
                {"boost-seconds", required_argument, NULL, OPT_BSEC},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        json_t *spec = json_object();
        const char *boost_cpu = NULL;
        long long v, boost_s = -1;
        int c, r = 0;
        while (r == 0 && (c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case OPT_RUNTIME: json_object_set_new(spec, "runtime", json_string(optarg)); break;
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
        if (r == 0 && !json_object_get(spec, "runtime"))
                r = cli_usage_error(create_usage, "--runtime is required (python3, node or custom)");
        if (r == 0 && (!boost_cpu) != (boost_s < 0))
                r = cli_usage_error(create_usage, "--boost-cpu and --boost-seconds go together");
        if (r != 0) {
                json_decref(spec);
                return r == 1 ? 0 : r;
        }
        const char *name = argv[optind];
        if (boost_cpu)
                json_object_set_new(spec, "startupBoost", json_pack("{s:s, s:I}", "cpu", boost_cpu, "seconds",
                                                                    (json_int_t) boost_s));
        r = cli_check_name("pool group", name, err);
        char path[512];
        snprintf(path, sizeof(path), "/v1/poolgroups/%s", name);
        struct cli_response resp = {0};
        if (r >= 0)
                r = cli_call("PUT", path, spec, &resp, err);
        json_decref(spec);
        if (r >= 0 && cli_globals.json)
                cli_print_json_body(&resp);
        else if (r >= 0)
                printf("%s pool group %s (runtime %s, %lld ready)\n", resp.status == 201 ? "created" : "updated", name,
                       cli_jstr(resp.json, "spec.runtime") ?: "?", cli_jint(resp.json, "spec.ready", 1));
        cli_response_done(&resp);
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
                        const char *row[] = {cli_jstr(p, "name"), cli_jstr(p, "spec.runtime"), ready, starting, cpu,
                                             mem, boost, taken, ond};
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
