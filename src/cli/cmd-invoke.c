/* `legion invoke`: one request to an app's endpoint /fn/{ns}/{app}/..., the
 * answer's body on stdout as it arrives. */
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"

#define MAX_HEADERS 64

static void invoke_usage(FILE *f) {
        fputs("usage: legion invoke NAME [options]\n"
              "\n"
              "Send one request to app NAME and print the answer's body. The exit status\n"
              "is 0 for a 2xx answer; otherwise the status and message go to stderr and\n"
              "the exit status is 1.\n"
              "\n"
              "  -d, --data D         the request body; @FILE reads a file, @- stdin\n"
              "                       (the method becomes POST; Content-Type application/json\n"
              "                       when D starts with { or [, else application/octet-stream)\n"
              "  -X, --method M       the method (default GET, or POST with --data)\n"
              "  -p, --path P         path and query after the app's URL, e.g. /sub?x=1\n"
              "  -H, --header 'K: V'  a request header; repeatable\n"
              "      --timeout S      give up after S seconds (default: wait for the app)\n" CLI_GLOBAL_HELP,
              f);
}

static int read_data(const char *arg, char **ret, size_t *len, struct lg_error *err) {
        if (arg[0] != '@') {
                *len = strlen(arg);
                *ret = strdup(arg);
                return *ret ? 0 : lg_error_set(err, ENOMEM, "--data");
        }
        return cli_read_file(arg + 1, 0, ret, len, err);
}

/* The answer was not 2xx: the API's message when it sent one (an error of
 * legiond or the router), else the function's own body, on stderr. */
static int report_failure(const struct cli_response *resp, const char *name) {
        json_t *doc = resp->body ? json_loadb(resp->body, resp->len, 0, NULL) : NULL;
        const char *msg = cli_jstr(doc, "error.message");
        if (msg) {
                fprintf(stderr, "legion: HTTP %ld: %s\n", resp->status, msg);
        } else if (resp->len) {
                size_t n = resp->len;
                while (n > 0 && (resp->body[n - 1] == '\n' || resp->body[n - 1] == '\r'))
                        n--;
                bool oneline = !memchr(resp->body, '\n', n) && n <= 400;
                fprintf(stderr, "legion: HTTP %ld from %s/%s%s", resp->status, cli_ns(), name, oneline ? ": " : ":\n");
                fwrite(resp->body, 1, n, stderr);
                fputc('\n', stderr);
        } else {
                fprintf(stderr, "legion: HTTP %ld from %s/%s\n", resp->status, cli_ns(), name);
        }
        json_decref(doc);
        return 1;
}

static int invoke(int argc, char **argv, struct lg_error *err) {
        enum { OPT_TIMEOUT = 1 };
        static const struct option opts[] = {
                {"data", required_argument, NULL, 'd'},   {"method", required_argument, NULL, 'X'},
                {"path", required_argument, NULL, 'p'},   {"header", required_argument, NULL, 'H'},
                {"timeout", required_argument, NULL, OPT_TIMEOUT}, {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,                       {0, 0, 0, 0},
        };
        const char *data = NULL, *method = NULL, *sub = "/";
        const char *headers[MAX_HEADERS + 2] = {0};
        size_t n_headers = 0;
        long long timeout = 0;
        int c;
        while ((c = cli_getopt(argc, argv, ":hd:X:p:H:", opts)) != -1) {
                switch (c) {
                case 'd': data = optarg; break;
                case 'X': method = optarg; break;
                case 'p': sub = optarg; break;
                case 'H':
                        if (!strchr(optarg, ':') || optarg[0] == ':')
                                return cli_usage_error(invoke_usage, "a header is 'Name: value', not `%s`", optarg);
                        if (n_headers >= MAX_HEADERS)
                                return cli_usage_error(invoke_usage, "at most %d headers", MAX_HEADERS);
                        headers[n_headers++] = optarg;
                        break;
                case OPT_TIMEOUT:
                        if (cli_parse_uint(optarg, 1000000, &timeout) < 0)
                                return cli_usage_error(invoke_usage, "--timeout needs whole seconds, not `%s`",
                                                       optarg);
                        break;
                case 'h': invoke_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, invoke_usage);
                }
        }
        if (optind != argc - 1)
                return cli_usage_error(invoke_usage, optind >= argc ? "no app name given" : "too many arguments");
        const char *name = argv[optind];
        int r = cli_check_name("app", name, err);
        if (r < 0)
                return r;
        if (method && (!*method || strpbrk(method, " \t\r\n:/")))
                return cli_usage_error(invoke_usage, "invalid method `%s`", method);
        if (strpbrk(sub, " \t\r\n#"))
                return cli_usage_error(invoke_usage, "--path must not contain spaces or `#`: `%s`", sub);

        _cleanup_free_ char *body = NULL;
        size_t body_len = 0;
        if (data && (r = read_data(data, &body, &body_len, err)) < 0)
                return r;
        const char *ctype = "application/octet-stream";
        if (body) {
                size_t i = 0;
                while (i < body_len && strchr(" \t\r\n", body[i]))
                        i++;
                if (i < body_len && (body[i] == '{' || body[i] == '['))
                        ctype = "application/json";
        }

        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/fn/%s/%s%s%s", cli_ns(), name, sub[0] == '/' ? "" : "/", sub) < 0)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_request rq = {
                .method = method ? method : body ? "POST" : "GET",
                .path = path,
                /* An empty --data '' still sends a (zero-length) body. */
                .body = body ? body : NULL,
                .body_len = body_len,
                .content_type = ctype,
                .headers = headers,
                .stream_2xx = stdout,
                .timeout_s = (long) timeout,
        };
        struct cli_response resp = {0};
        r = cli_request(&rq, &resp, err);
        if (r < 0)
                return r;
        if (resp.status < 200 || resp.status >= 300)
                r = report_failure(&resp, name);
        /* A terminal gets its prompt back on a line of its own; a pipe or a
         * file gets exactly the body. */
        else if (resp.streamed && resp.last_streamed != '\n' && isatty(STDOUT_FILENO))
                putchar('\n');
        cli_response_done(&resp);
        return r;
}

int cmd_invoke(int argc, char **argv) {
        if (cli_take_globals(&argc, argv))
                return 2;
        return cli_run_verb(invoke, argc, argv);
}
