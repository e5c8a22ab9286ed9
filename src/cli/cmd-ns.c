/* `legion ns` (namespaces) and `legion token` (API tokens of a namespace). */
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"

static void ns_usage(FILE *f) {
        fputs("usage: legion ns <command>\n"
              "\n"
              "commands:\n"
              "  create NAME     create a namespace (admin); fine if it exists\n"
              "  list            namespaces the token may see\n"
              "  delete NAME     delete an empty namespace (admin)\n" CLI_GLOBAL_HELP,
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

static int ns_create(int argc, char **argv, struct lg_error *err) {
        SIMPLE_ARGS(ns_usage, 1, 1, NULL);
        const char *name = argv[first];
        int r = cli_check_name("namespace", name, err);
        if (r < 0)
                return r;
        json_t *body = json_pack("{s:s}", "name", name);
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
        int r = cli_check_name("namespace", name, err);
        if (r < 0)
                return r;
        char path[512];
        snprintf(path, sizeof(path), "/v1/namespaces/%s", name);
        struct cli_response resp = {0};
        r = cli_call("DELETE", path, NULL, &resp, err);
        cli_response_done(&resp);
        if (r >= 0 && !cli_globals.json)
                printf("deleted namespace %s\n", name);
        return r;
}

int cmd_ns(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"create", ns_create}, {"list", ns_list},     {"ls", ns_list},
                {"delete", ns_delete}, {"rm", ns_delete},
        };
        return cli_run_group("ns", verbs, ARRAY_SIZE(verbs), ns_usage, argc, argv);
}

/* ---- tokens ---------------------------------------------------------------------- */

static int token_create(int argc, char **argv, struct lg_error *err) {
        const char *desc = NULL;
        SIMPLE_ARGS(token_usage, 0, 0, &desc);
        (void) first;
        const char *ns = cli_ns();
        int r = cli_check_name("namespace", ns, err);
        if (r < 0)
                return r;
        char path[512];
        snprintf(path, sizeof(path), "/v1/namespaces/%s/tokens", ns);
        json_t *body = desc ? json_pack("{s:s}", "description", desc) : json_object();
        struct cli_response resp = {0};
        r = cli_call("POST", path, body, &resp, err);
        json_decref(body);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                const char *tok = cli_jstr(resp.json, "token");
                if (!tok) {
                        r = lg_error_setm(err, EBADMSG, "legiond's answer has no token");
                } else {
                        /* The secret alone on stdout: TOKEN=$(legion token create). */
                        fprintf(stderr, "token %s for namespace %s (the secret is shown only now):\n",
                                cli_jstr(resp.json, "id") ?: "?", ns);
                        printf("%s\n", tok);
                }
        }
        cli_response_done(&resp);
        return r;
}

static int token_list(int argc, char **argv, struct lg_error *err) {
        SIMPLE_ARGS(token_usage, 0, 0, NULL);
        (void) first;
        const char *ns = cli_ns();
        int r = cli_check_name("namespace", ns, err);
        if (r < 0)
                return r;
        char path[512];
        snprintf(path, sizeof(path), "/v1/namespaces/%s/tokens", ns);
        struct cli_response resp = {0};
        r = cli_call("GET", path, NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                static const char *const head[] = {"ID", "NAMESPACE", "CREATED", "DESCRIPTION"};
                struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
                size_t i;
                json_t *tk;
                json_array_foreach(json_object_get(resp.json, "items"), i, tk) {
                        const char *d = cli_jstr(tk, "description");
                        const char *row[] = {cli_jstr(tk, "id"), cli_jstr(tk, "namespace"), cli_jstr(tk, "createdAt"),
                                             d && *d ? d : "-"};
                        cli_table_add(t, row);
                }
                cli_table_print(t, stdout);
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r;
}

static int token_delete(int argc, char **argv, struct lg_error *err) {
        SIMPLE_ARGS(token_usage, 1, 1, NULL);
        const char *id = argv[first];
        const char *ns = cli_ns();
        int r = cli_check_name("namespace", ns, err);
        if (r >= 0)
                r = cli_check_name("token id", id, err);
        if (r < 0)
                return r;
        char path[600];
        snprintf(path, sizeof(path), "/v1/namespaces/%s/tokens/%s", ns, id);
        struct cli_response resp = {0};
        r = cli_call("DELETE", path, NULL, &resp, err);
        cli_response_done(&resp);
        if (r >= 0 && !cli_globals.json)
                printf("deleted token %s\n", id);
        return r;
}

int cmd_token(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"create", token_create}, {"list", token_list},     {"ls", token_list},
                {"delete", token_delete}, {"rm", token_delete},     {"revoke", token_delete},
        };
        return cli_run_group("token", verbs, ARRAY_SIZE(verbs), token_usage, argc, argv);
}
