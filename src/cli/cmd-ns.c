/* `legion ns` (namespaces), `legion token` (API tokens of a namespace) and
 * `legion app keys` (the keys of an app whose auth is keys: tokens scoped to
 * the app, docs/api.md "Authentication"). */
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"

static void ns_usage(FILE *f) {
        fputs("usage: legion ns <command>\n"
              "\n"
              "commands:\n"
              "  create NAME [network options]  create a namespace (admin); fine if it exists\n"
              "                                 (then the options given change its network)\n"
              "  set NAME [network options]     change its network (admin); the rest is kept\n"
              "  get NAME                       a namespace and its network\n"
              "  list                           namespaces the token may see\n"
              "  delete NAME                    delete an empty namespace (admin)\n"
              "\n"
              "network options (docs/networking.md):\n"
              "  --egress on|off|CIDR[:PORT[-PORT]],...\n"
              "                         where its sandboxes may connect (default on)\n"
              "  --isolation namespace|sandbox\n"
              "                         sandboxes reach each other within the namespace, or not\n"
              "                         (default namespace)\n"
              "  --snat IP|none         egress leaves with this source address (default: the\n"
              "                         host's, by masquerade)\n"
              "  --via-interface IF|none [--via-gateway IP]\n"
              "                         egress leaves through this host interface (VNET)\n"
              "  --via-table N|none     egress is routed by this route table instead\n" CLI_GLOBAL_HELP,
              f);
}

static void token_usage(FILE *f) {
        fputs("usage: legion token <command>\n"
              "\n"
              "commands:\n"
              "  create [--ns NS] [--description D]  a token for namespace NS (default: --ns,\n"
              "                                      $LEGION_NAMESPACE or `default`); the secret\n"
              "                                      is printed once, alone on stdout\n"
              "  list [--ns NS]                      the namespace's tokens (no secrets)\n"
              "  delete ID [--ns NS]                 revoke a token\n" CLI_GLOBAL_HELP,
              f);
}

/* Parse a verb with only --help and the global options (plus, for token
 * create, --description); the operands go back through *first. Returns 0,
 * 1 after --help, 2 after a usage error. */
static int simple_args(int argc, char **argv, void (*usage)(FILE *), int min, int max, const char **desc,
                       int *first) {
        static const struct option opts[] = {
                {"description", required_argument, NULL, 'D'},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        int c;
        while ((c = cli_getopt(argc, argv, ":hD:", opts)) != -1) {
                if (c == 'h') {
                        usage(stdout);
                        return 1;
                }
                if (c == 'D' && desc) {
                        *desc = optarg;
                        continue;
                }
                if (c == 'D')
                        return cli_usage_error(usage, "unknown option `%s`", argv[optind - 1]);
                return cli_bad_option(c, argv, usage);
        }
        int n = argc - optind;
        if (n < min)
                return cli_usage_error(usage, "missing argument");
        if (n > max)
                return cli_usage_error(usage, "unexpected argument `%s`", argv[optind + max]);
        *first = optind;
        return 0;
}

#define SIMPLE_ARGS(usage, min, max, desc)                                          \
        int first = 0;                                                              \
        {                                                                           \
                int ra = simple_args(argc, argv, usage, min, max, desc, &first);    \
                if (ra != 0)                                                        \
                        return ra == 1 ? 0 : ra;                                    \
        }

/* ---- namespaces ------------------------------------------------------------------ */

/* The network options into net (an object changed in place; "none" is
 * null there: remove it); 0, 1 after --help, 2 after a usage error;
 * *first the operands' index. */
static int network_args(int argc, char **argv, json_t *net, int *first) {
        enum { O_EGRESS = 1, O_ISO, O_SNAT, O_VIF, O_VGW, O_VTABLE };
        static const struct option opts[] = {
                {"egress", required_argument, NULL, O_EGRESS},
                {"isolation", required_argument, NULL, O_ISO},
                {"snat", required_argument, NULL, O_SNAT},
                {"via-interface", required_argument, NULL, O_VIF},
                {"via-gateway", required_argument, NULL, O_VGW},
                {"via-table", required_argument, NULL, O_VTABLE},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        const char *gateway = NULL;
        int c;
        long long v;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case 'h': ns_usage(stdout); return 1;
                case O_EGRESS: {
                        json_t *e = cli_egress_json(optarg);
                        if (!e)
                                return cli_usage_error(ns_usage,
                                                       "--egress is on, off or CIDR[:PORT[-PORT]],..., not `%s`",
                                                       optarg);
                        json_object_set_new(net, "egress", e);
                        break;
                }
                case O_ISO:
                        if (strcmp(optarg, "namespace") && strcmp(optarg, "sandbox"))
                                return cli_usage_error(ns_usage, "--isolation is namespace or sandbox, not `%s`",
                                                       optarg);
                        json_object_set_new(net, "isolation", json_string(optarg));
                        break;
                case O_SNAT:
                        json_object_set_new(net, "snat", strcmp(optarg, "none") ? json_string(optarg) : json_null());
                        break;
                case O_VIF:
                        if (!strcmp(optarg, "none"))
                                json_object_set_new(net, "via", json_null());
                        else
                                json_object_set_new(net, "via", json_pack("{s:s}", "interface", optarg));
                        break;
                case O_VGW: gateway = optarg; break;
                case O_VTABLE:
                        if (!strcmp(optarg, "none")) {
                                json_object_set_new(net, "via", json_null());
                        } else if (cli_parse_uint(optarg, 4294967295LL, &v) < 0) {
                                return cli_usage_error(ns_usage, "--via-table needs a table number, not `%s`",
                                                       optarg);
                        } else {
                                json_object_set_new(net, "via", json_pack("{s:I}", "table", (json_int_t) v));
                        }
                        break;
                default: return cli_bad_option(c, argv, ns_usage);
                }
        }
        if (gateway) {
                json_t *via = json_object_get(net, "via");
                if (!json_is_string(json_object_get(via, "interface")))
                        return cli_usage_error(ns_usage, "--via-gateway needs --via-interface");
                json_object_set_new(via, "gateway", json_string(gateway));
        }
        if (argc - optind < 1)
                return cli_usage_error(ns_usage, "missing argument");
        if (argc - optind > 1)
                return cli_usage_error(ns_usage, "unexpected argument `%s`", argv[optind + 1]);
        *first = optind;
        return 0;
}

static void print_namespace(const json_t *ns) {
        const json_t *net = json_object_get(ns, "network");
        char eg[1024];
        printf("name:       %s\n", cli_jstr(ns, "name") ?: "-");
        printf("created:    %s\n", cli_jstr(ns, "createdAt") ?: "-");
        printf("egress:     %s\n", cli_egress_text(json_object_get(net, "egress"), "on", eg, sizeof(eg)));
        printf("isolation:  %s\n", cli_jstr(net, "isolation") ?: "namespace");
        printf("snat:       %s\n", cli_jstr(net, "snat") ?: "none (masquerade)");
        if (cli_jstr(net, "via.interface"))
                printf("via:        interface %s%s%s\n", cli_jstr(net, "via.interface"),
                       cli_jstr(net, "via.gateway") ? ", gateway " : "", cli_jstr(net, "via.gateway") ?: "");
        else if (json_object_get(json_object_get(net, "via"), "table"))
                printf("via:        route table %lld\n", cli_jint(net, "via.table", 0));
        else
                printf("via:        the host's routes\n");
}

static int ns_create(int argc, char **argv, struct lg_error *err) {
        _cleanup_(json_decrefp) json_t *net = json_object();
        int first = 0, ra = network_args(argc, argv, net, &first);
        if (ra != 0)
                return ra == 1 ? 0 : ra;
        const char *name = argv[first];
        int r = cli_check_name("namespace", name, err);
        if (r < 0)
                return r;
        if (json_is_null(json_object_get(net, "via")))
                json_object_del(net, "via");
        if (json_is_null(json_object_get(net, "snat")))
                json_object_del(net, "snat");
        json_t *body = json_pack("{s:s}", "name", name);
        if (json_object_size(net))
                json_object_set(body, "network", net);
        struct cli_response resp = {0};
        r = cli_call("POST", "/v1/namespaces", body, &resp, err);
        json_decref(body);
        if (r >= 0 && cli_globals.json)
                cli_print_json_body(&resp);
        else if (r >= 0)
                printf(resp.status == 201 ? "created namespace %s\n" : "namespace %s exists\n", name);
        cli_response_done(&resp);
        return r;
}

/* method on /v1/namespaces/NAME (checked), printed as `ns get` prints
 * (print) or as JSON with --json; the response is the caller's. */
static int ns_call(const char *method, const char *name, json_t *body, bool print, struct cli_response *resp,
                   struct lg_error *err) {
        int r = cli_check_name("namespace", name, err);
        if (r < 0)
                return r;
        char path[512];
        snprintf(path, sizeof(path), "/v1/namespaces/%s", name);
        r = cli_call(method, path, body, resp, err);
        if (r >= 0 && print && cli_globals.json)
                cli_print_json_body(resp);
        else if (r >= 0 && print)
                print_namespace(resp->json);
        return r;
}

/* The namespace's network as it is, the options given changed in it. */
static int ns_set(int argc, char **argv, struct lg_error *err) {
        _cleanup_(json_decrefp) json_t *opts = json_object();
        int first = 0, ra = network_args(argc, argv, opts, &first);
        if (ra != 0)
                return ra == 1 ? 0 : ra;
        const char *name = argv[first];
        if (!json_object_size(opts))
                return cli_usage_error(ns_usage, "nothing to change: give a network option");
        struct cli_response resp = {0};
        int r = ns_call("GET", name, NULL, false, &resp, err);
        json_t *net = r >= 0 ? json_deep_copy(json_object_get(resp.json, "network")) : NULL;
        cli_response_done(&resp);
        if (r < 0)
                return r;
        if (!net)
                net = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(opts, k, v) {
                if (json_is_null(v))
                        json_object_del(net, k);
                else
                        json_object_set(net, k, v);
        }
        json_t *body = json_pack("{s:o}", "network", net);
        r = ns_call("PUT", name, body, true, &resp, err);
        json_decref(body);
        cli_response_done(&resp);
        return r;
}

static int ns_get(int argc, char **argv, struct lg_error *err) {
        SIMPLE_ARGS(ns_usage, 1, 1, NULL);
        struct cli_response resp = {0};
        int r = ns_call("GET", argv[first], NULL, true, &resp, err);
        cli_response_done(&resp);
        return r;
}

static int ns_list(int argc, char **argv, struct lg_error *err) {
        SIMPLE_ARGS(ns_usage, 0, 0, NULL);
        (void) first;
        struct cli_response resp = {0};
        int r = cli_call("GET", "/v1/namespaces", NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                static const char *const head[] = {"NAME", "CREATED"};
                struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
                size_t i;
                json_t *ns;
                json_array_foreach(json_object_get(resp.json, "items"), i, ns) {
                        const char *row[] = {cli_jstr(ns, "name"), cli_jstr(ns, "createdAt")};
                        cli_table_add(t, row);
                }
                cli_table_print(t, stdout);
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r;
}

static int ns_delete(int argc, char **argv, struct lg_error *err) {
        SIMPLE_ARGS(ns_usage, 1, 1, NULL);
        const char *name = argv[first];
        struct cli_response resp = {0};
        int r = ns_call("DELETE", name, NULL, false, &resp, err);
        cli_response_done(&resp);
        if (r >= 0 && !cli_globals.json)
                printf("deleted namespace %s\n", name);
        return r;
}

int cmd_ns(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"create", ns_create}, {"set", ns_set},       {"get", ns_get},  {"show", ns_get},
                {"list", ns_list},     {"ls", ns_list},       {"delete", ns_delete}, {"rm", ns_delete},
        };
        return cli_run_group("ns", verbs, ARRAY_SIZE(verbs), ns_usage, argc, argv);
}

/* ---- tokens and app keys ------------------------------------------------------- */

/* `legion token` acts on the namespace's tokens; `legion app keys` on one
 * app's keys, which are tokens scoped to that app (its name the first
 * operand). The API is the same but for the path and the secret's field. */
struct tok_kind {
        const char *what;       /* "token", "key" */
        const char *secret;     /* the answer's field with the secret */
        int app;                /* 1: the first operand is an app name */
        void (*usage)(FILE *);
};

static const struct tok_kind api_tokens = {"token", "token", 0, token_usage};

static void keys_usage(FILE *f) {
        fputs("usage: legion app keys <command> APP [options]\n"
              "\n"
              "commands:\n"
              "  create APP [--description D]   a new key (the secret alone on stdout, shown only now)\n"
              "  list APP                       the app's keys (no secrets)\n"
              "  delete APP ID                  revoke a key\n"
              "\n"
              "A key opens only APP's URL, and only while its auth is `keys`\n"
              "(legion app set APP --auth keys): send `x-legion-key: KEY` or\n"
              "`Authorization: Bearer KEY`.\n" CLI_GLOBAL_HELP,
              f);
}

static const struct tok_kind app_keys = {"key", "key", 1, keys_usage};

/* The path of the kind's collection (and of id) once the names are checked. */
static int tok_path(const struct tok_kind *k, char *buf, size_t cap, const char *app, const char *id,
                    struct lg_error *err) {
        const char *ns = cli_ns();
        int r = cli_check_name("namespace", ns, err);
        if (r >= 0 && k->app)
                r = cli_check_name("app", app, err);
        if (r >= 0 && id)
                r = cli_check_name(k->app ? "key id" : "token id", id, err);
        if (r < 0)
                return r;
        if (k->app)
                snprintf(buf, cap, "/v1/namespaces/%s/apps/%s/keys%s%s", ns, app, id ? "/" : "", id ? id : "");
        else
                snprintf(buf, cap, "/v1/namespaces/%s/tokens%s%s", ns, id ? "/" : "", id ? id : "");
        return 0;
}

static int tok_create(const struct tok_kind *k, int argc, char **argv, struct lg_error *err) {
        const char *desc = NULL;
        SIMPLE_ARGS(k->usage, k->app, k->app, &desc);
        const char *app = k->app ? argv[first] : NULL;
        char path[600];
        int r = tok_path(k, path, sizeof(path), app, NULL, err);
        if (r < 0)
                return r;
        json_t *body = desc ? json_pack("{s:s}", "description", desc) : json_object();
        struct cli_response resp = {0};
        r = cli_call("POST", path, body, &resp, err);
        json_decref(body);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                const char *secret = cli_jstr(resp.json, k->secret);
                if (!secret) {
                        r = lg_error_setm(err, EBADMSG, "legiond's answer has no %s", k->secret);
                } else {
                        /* The secret alone on stdout: TOKEN=$(legion token create). */
                        fprintf(stderr, "%s %s for %s %s%s%s (the secret is shown only now):\n", k->what,
                                cli_jstr(resp.json, "id") ?: "?", app ? "app" : "namespace", cli_ns(), app ? "/" : "",
                                app ? app : "");
                        printf("%s\n", secret);
                }
        }
        cli_response_done(&resp);
        return r;
}

static int tok_list(const struct tok_kind *k, int argc, char **argv, struct lg_error *err) {
        SIMPLE_ARGS(k->usage, k->app, k->app, NULL);
        char path[600];
        int r = tok_path(k, path, sizeof(path), k->app ? argv[first] : NULL, NULL, err);
        if (r < 0)
                return r;
        struct cli_response resp = {0};
        r = cli_call("GET", path, NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                const char *head[] = {"ID", k->app ? "APP" : "NAMESPACE", "CREATED", "DESCRIPTION"};
                struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
                size_t i;
                json_t *tk;
                json_array_foreach(json_object_get(resp.json, "items"), i, tk) {
                        const char *d = cli_jstr(tk, "description");
                        const char *row[] = {cli_jstr(tk, "id"), cli_jstr(tk, k->app ? "app" : "namespace"),
                                             cli_jstr(tk, "createdAt"), d && *d ? d : "-"};
                        cli_table_add(t, row);
                }
                cli_table_print(t, stdout);
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r;
}

static int tok_delete(const struct tok_kind *k, int argc, char **argv, struct lg_error *err) {
        SIMPLE_ARGS(k->usage, k->app + 1, k->app + 1, NULL);
        const char *app = k->app ? argv[first] : NULL, *id = argv[first + k->app];
        char path[600];
        int r = tok_path(k, path, sizeof(path), app, id, err);
        if (r < 0)
                return r;
        struct cli_response resp = {0};
        r = cli_call("DELETE", path, NULL, &resp, err);
        cli_response_done(&resp);
        if (r >= 0 && !cli_globals.json)
                printf("deleted %s %s%s%s\n", k->what, id, app ? " of app " : "", app ? app : "");
        return r;
}

static int token_create(int argc, char **argv, struct lg_error *err) { return tok_create(&api_tokens, argc, argv, err); }
static int token_list(int argc, char **argv, struct lg_error *err) { return tok_list(&api_tokens, argc, argv, err); }
static int token_delete(int argc, char **argv, struct lg_error *err) { return tok_delete(&api_tokens, argc, argv, err); }
static int key_create(int argc, char **argv, struct lg_error *err) { return tok_create(&app_keys, argc, argv, err); }
static int key_list(int argc, char **argv, struct lg_error *err) { return tok_list(&app_keys, argc, argv, err); }
static int key_delete(int argc, char **argv, struct lg_error *err) { return tok_delete(&app_keys, argc, argv, err); }

int cmd_token(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"create", token_create}, {"list", token_list},     {"ls", token_list},
                {"delete", token_delete}, {"rm", token_delete},     {"revoke", token_delete},
        };
        return cli_run_group("token", verbs, ARRAY_SIZE(verbs), token_usage, argc, argv);
}

int cmd_app_keys(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"create", key_create}, {"list", key_list},     {"ls", key_list},
                {"delete", key_delete}, {"rm", key_delete},     {"revoke", key_delete},
        };
        return cli_run_group("app keys", verbs, ARRAY_SIZE(verbs), keys_usage, argc, argv);
}
