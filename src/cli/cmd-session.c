/* `legion sessionpool` and `legion session`: code-interpreter sessions for
 * untrusted code (docs/api.md, "Sessions").
 *
 * The namespace is sent as ?namespace=NS only when --ns or LEGION_NAMESPACE
 * names one; otherwise legiond uses the token's (an admin token's: default).
 *
 * `session exec` prints the execution's stdout to stdout and its stderr to
 * stderr, then the value of the code's last expression, when it has one, as
 * a line `=> REPR` on stdout (a notebook's Out:). A Failed execution prints
 * its traceback to stderr and exits 1; TimedOut exits 124. --json prints the
 * API's answer instead, with the same exit status. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/client.h"

#define _cleanup_json_ _cleanup_(json_decrefp)

/* ---- usage -------------------------------------------------------------------- */

static void pool_usage(FILE *f) {
        fputs("usage: legion sessionpool <command> [options]\n"
              "\n"
              "commands:\n"
              "  create NAME [--ready N] [--max-sessions N] [--cooldown S] [options]\n"
              "                       create a session pool, or replace its spec\n"
              "  list                 session pools and their sessions\n"
              "  show NAME            a session pool's spec and status\n"
              "  delete NAME...       delete session pools (their sessions end)\n"
              "\n"
              "Run `legion sessionpool create --help` for its options. The namespace is the\n"
              "token's unless --ns or LEGION_NAMESPACE names one.\n" CLI_GLOBAL_HELP,
              f);
}

static void pool_create_usage(FILE *f) {
        fputs("usage: legion sessionpool create NAME [options]\n"
              "\n"
              "Create the session pool NAME, or replace its whole spec when it exists\n"
              "(options not given go back to their defaults).\n"
              "\n"
              "  --runtime R              the interpreter: python3 (the default)\n"
              "  --ready N                sandboxes kept ready for new sessions (default 1)\n"
              "  --max-sessions N         sessions at once (default 100)\n"
              "  --cooldown S             a session ends after S seconds without a call (default 300)\n"
              "  --egress on|off|CIDR[:PORT[-PORT]],...\n"
              "                           the sandboxes' network (default off: loopback only; on:\n"
              "                           the namespace's egress policy; or an allowlist)\n"
              "  --cpu C                  CPUs (0.5) or millicores (500m) of a sandbox\n"
              "  --memory M               memory of a sandbox (default 256Mi)\n"
              "  --max-file-bytes B       largest file under /mnt/data (default 100Mi)\n"
              "  --max-session-bytes B    all the files of a session (default 1Gi)\n" CLI_GLOBAL_HELP,
              f);
}

static void pool_list_usage(FILE *f) { fputs("usage: legion sessionpool list\n" CLI_GLOBAL_HELP, f); }
static void pool_show_usage(FILE *f) { fputs("usage: legion sessionpool show NAME\n" CLI_GLOBAL_HELP, f); }
static void pool_delete_usage(FILE *f) { fputs("usage: legion sessionpool delete NAME...\n" CLI_GLOBAL_HELP, f); }

static void session_usage(FILE *f) {
        fputs("usage: legion session <command> POOL [ID] [args...]\n"
              "\n"
              "commands:\n"
              "  exec POOL ID -c CODE | --file F | -   run code in session ID (made on first use)\n"
              "  upload POOL ID LOCAL [REMOTE]         copy a file into the session's /mnt/data\n"
              "  download POOL ID REMOTE [LOCAL|-]     copy a file out of it\n"
              "  ls POOL ID                            the session's files\n"
              "  rm POOL ID REMOTE...                  remove files\n"
              "  list POOL                             the pool's sessions\n"
              "  show POOL ID                          one session\n"
              "  delete POOL ID...                     end sessions now (sandbox and files go)\n"
              "\n"
              "ID is 4 to 128 of [A-Za-z0-9._:-]. REMOTE is a path under /mnt/data. The\n"
              "namespace is the token's unless --ns or LEGION_NAMESPACE names one.\n"
              "Run `legion session <command> --help` for details.\n" CLI_GLOBAL_HELP,
              f);
}

static void exec_usage(FILE *f) {
        fputs("usage: legion session exec POOL ID (-c CODE | --file FILE | -) [--timeout S]\n"
              "\n"
              "Run Python code in session ID of POOL; the first call binds ID to a fresh\n"
              "sandbox, later ones reach the same interpreter (variables, imports, files).\n"
              "\n"
              "The code's stdout goes to stdout and its stderr to stderr. When its last\n"
              "statement is an expression, its repr() follows on stdout as `=> VALUE`.\n"
              "Exit status: 0 done, 1 the code raised (traceback on stderr) or the call\n"
              "failed, 124 timed out (the session survives it). When the interpreter had\n"
              "to be restarted (its variables are lost), a `legion:` line on stderr says so.\n"
              "\n"
              "  -c, --code CODE      the code\n"
              "  -f, --file FILE      read the code from FILE (`-`: stdin)\n"
              "  -                    read the code from stdin\n"
              "      --timeout S      interrupt the execution after S seconds\n"
              "      --json           print the API's answer (same exit status)\n" CLI_GLOBAL_HELP,
              f);
}

static void upload_usage(FILE *f) {
        fputs("usage: legion session upload POOL ID LOCAL [REMOTE]\n"
              "\n"
              "Copy LOCAL (`-`: stdin, then REMOTE is required) to /mnt/data/REMOTE in\n"
              "session ID, making the session if needed. REMOTE defaults to LOCAL's base\n"
              "name; a REMOTE ending in / gets it appended.\n" CLI_GLOBAL_HELP,
              f);
}

static void download_usage(FILE *f) {
        fputs("usage: legion session download POOL ID REMOTE [LOCAL|-]\n"
              "\n"
              "Copy /mnt/data/REMOTE of session ID to LOCAL (default: REMOTE's base name\n"
              "in the current directory; into it when LOCAL is a directory), or to\n"
              "stdout with `-`.\n" CLI_GLOBAL_HELP,
              f);
}

static void ls_usage(FILE *f) { fputs("usage: legion session ls POOL ID\n" CLI_GLOBAL_HELP, f); }
static void rm_usage(FILE *f) { fputs("usage: legion session rm POOL ID REMOTE...\n" CLI_GLOBAL_HELP, f); }
static void list_usage(FILE *f) { fputs("usage: legion session list POOL\n" CLI_GLOBAL_HELP, f); }
static void show_usage(FILE *f) { fputs("usage: legion session show POOL ID\n" CLI_GLOBAL_HELP, f); }
static void delete_usage(FILE *f) { fputs("usage: legion session delete POOL ID...\n" CLI_GLOBAL_HELP, f); }

/* ---- helpers ------------------------------------------------------------------- */

static bool ns_explicit(void) {
        const char *e = getenv("LEGION_NAMESPACE");
        return (cli_globals.ns && *cli_globals.ns) || (e && *e);
}

/* "/v1/sessionpools[/POOL[/SUB[/REST]]][?identifier=ID][&namespace=NS]";
 * REST is already escaped. malloc'd; NULL on ENOMEM. */
static char *sp_path(const char *pool, const char *sub, const char *rest, const char *id) {
        _cleanup_free_ char *ns = ns_explicit() ? cli_url_escape(cli_ns()) : NULL;
        char *p = NULL;
        if (ns_explicit() && !ns)
                return NULL;
        if (asprintf(&p, "/v1/sessionpools%s%s%s%s%s%s%s%s%s%s", pool ? "/" : "", pool ?: "", sub ? "/" : "",
                     sub ?: "", rest ? "/" : "", rest ?: "", id ? "?identifier=" : "", id ?: "",
                     ns ? (id ? "&namespace=" : "?namespace=") : "", ns ?: "") < 0)
                return NULL;
        return p;
}

static int check_id(const char *id, struct lg_error *err) {
        size_t n = strlen(id);
        bool ok = n >= 4 && n <= 128;
        for (size_t i = 0; ok && i < n; i++)
                ok = (id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
                     (id[i] >= '0' && id[i] <= '9') || strchr("-_.:", id[i]);
        return ok ? 0 : lg_error_setm(err, EINVAL, "invalid session identifier `%s`: 4 to 128 of [A-Za-z0-9._:-]", id);
}

/* A file path relative to /mnt/data ("/mnt/data/" and leading slashes
 * dropped). */
static const char *rel_remote(const char *s) {
        if (!strncmp(s, "/mnt/data/", 10))
                s += 10;
        while (*s == '/')
                s++;
        return s;
}

/* The path, each segment percent-encoded, for a URL. */
static int encode_remote(const char *remote, char **out, struct lg_error *err) {
        const char *s = rel_remote(remote);
        size_t cap = 3 * strlen(s) + 1, n = 0;
        _cleanup_free_ char *buf = malloc(cap);
        if (!buf)
                return lg_error_set(err, ENOMEM, "path");
        buf[0] = '\0';
        do {
                size_t len = strcspn(s, "/");
                if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && !strncmp(s, "..", 2)))
                        return lg_error_setm(err, EINVAL, "invalid file path `%s`: no empty, `.` or `..` parts", remote);
                _cleanup_free_ char *seg = strndup(s, len);
                _cleanup_free_ char *e = seg ? cli_url_escape(seg) : NULL;
                if (!e)
                        return lg_error_set(err, ENOMEM, "path");
                n += (size_t) snprintf(buf + n, cap - n, "%s%s", n ? "/" : "", e);
                s += len;
        } while (*s++ == '/');
        *out = TAKE_PTR(buf);
        return 0;
}

static const char *base_name(const char *p) {
        size_t n = strlen(p);
        while (n > 1 && p[n - 1] == '/')
                n--;
        const char *b = p + n;
        while (b > p && b[-1] != '/')
                b--;
        return b;
}

/* Verbs with only --help and the global options; operands start at
 * argv[optind]: POOL, then ID when id is given, both checked. Returns 0, 1
 * after --help, 2 after a usage error, or a negative errno. */
static int args(int argc, char **argv, void (*usage)(FILE *), int min, int max, const char *missing,
                const char **pool, const char **id, struct lg_error *err) {
        int r = cli_no_options(argc, argv, usage);
        if (r)
                return r;
        int n = argc - optind;
        if (n < min)
                return cli_usage_error(usage, "%s", missing);
        if (max >= 0 && n > max)
                return cli_usage_error(usage, "unexpected argument `%s`", argv[optind + max]);
        if (pool && (r = cli_check_name("session pool", *pool = argv[optind], err)) < 0)
                return r;
        return id ? check_id(*id = argv[optind + 1], err) : 0;
}

/* A spec's field as text, or its default. */
static const char *spec_or(const json_t *spec, const char *key, const char *def, char *buf, size_t cap) {
        return json_object_get(spec, key) ? cli_jtext(spec, key, buf, cap) : def;
}

static int call(const char *method, const char *path, struct cli_response *resp, json_t *body,
                struct lg_error *err) {
        if (!path)
                return lg_error_set(err, ENOMEM, "path");
        return cli_call(method, path, body, resp, err);
}

/* GET path; with --json, print the answer and return 1. */
static int get(const char *path, struct cli_response *resp, struct lg_error *err) {
        int r = call("GET", path, resp, NULL, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(resp);
                return 1;
        }
        return r;
}

/* DELETE path (freed here); then, for humans, what was done. */
static int del(char *path, const char *done, const char *name, struct lg_error *err) {
        struct cli_response resp = {0};
        int r = call("DELETE", path, &resp, NULL, err);
        free(path);
        cli_response_done(&resp);
        if (r >= 0 && !cli_globals.json)
                printf("%s%s\n", done, name);
        return r;
}

static const char *fmt_time(const json_t *v, char *buf, size_t cap) {
        if (json_is_number(v)) {
                time_t t = (time_t) json_number_value(v);
                struct tm tm;
                strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        } else {
                snprintf(buf, cap, "%s", json_string_value(v) ?: "-");
        }
        return buf;
}

/* ---- sessionpool ------------------------------------------------------------ */

static int pool_create(int argc, char **argv, struct lg_error *err) {
        enum { O_RUNTIME = 1, O_READY, O_MAXS, O_COOL, O_EGRESS, O_CPU, O_MEM, O_MAXF, O_MAXB };
        static const struct option opts[] = { /* in the order of the enum */
                {"runtime", required_argument, NULL, O_RUNTIME}, {"ready", required_argument, NULL, O_READY},
                {"max-sessions", required_argument, NULL, O_MAXS}, {"cooldown", required_argument, NULL, O_COOL},
                {"egress", required_argument, NULL, O_EGRESS},     {"cpu", required_argument, NULL, O_CPU},
                {"memory", required_argument, NULL, O_MEM},        {"max-file-bytes", required_argument, NULL, O_MAXF},
                {"max-session-bytes", required_argument, NULL, O_MAXB}, {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,                                {0, 0, 0, 0},
        };
        static const char *const fields[] = {
                [O_RUNTIME] = "runtime", [O_READY] = "ready",  [O_MAXS] = "maxSessions",
                [O_COOL] = "cooldownSeconds", [O_EGRESS] = "egress", [O_CPU] = "cpu",
                [O_MEM] = "memory", [O_MAXF] = "maxFileBytes", [O_MAXB] = "maxSessionBytes",
        };
        _cleanup_json_ json_t *spec = json_object();
        long long v;
        int c;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case O_READY:
                case O_MAXS:
                case O_COOL:
                        if (cli_parse_uint(optarg, 100000000, &v) < 0)
                                return cli_usage_error(pool_create_usage, "--%s needs a whole number, not `%s`",
                                                       opts[c - 1].name, optarg);
                        json_object_set_new(spec, fields[c], json_integer(v));
                        break;
                case O_EGRESS: {
                        /* on and off as the booleans pools always took. */
                        bool on = !strcmp(optarg, "on") || !strcmp(optarg, "true") || !strcmp(optarg, "yes");
                        bool off = !strcmp(optarg, "off") || !strcmp(optarg, "false") || !strcmp(optarg, "no");
                        json_t *e = on || off ? json_boolean(on) : cli_egress_json(optarg);
                        if (!e)
                                return cli_usage_error(pool_create_usage,
                                                       "--egress is on, off or CIDR[:PORT[-PORT]],..., not `%s`",
                                                       optarg);
                        json_object_set_new(spec, "egress", e);
                        break;
                }
                case O_RUNTIME:
                case O_CPU:
                case O_MEM:
                case O_MAXF:
                case O_MAXB: json_object_set_new(spec, fields[c], json_string(optarg)); break;
                case 'h': pool_create_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, pool_create_usage);
                }
        }
        if (optind != argc - 1)
                return cli_usage_error(pool_create_usage,
                                       optind >= argc ? "no session pool name given" : "too many arguments");
        const char *name = argv[optind];
        int r = cli_check_name("session pool", name, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = sp_path(name, NULL, NULL, NULL);
        struct cli_response resp = {0};
        r = call("PUT", path, &resp, spec, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                const json_t *s = json_object_get(resp.json, "spec");
                char eg[1024];
                printf("%s session pool %s/%s (%s, %lld ready, at most %lld sessions, cooldown %lld s, egress %s)\n",
                       resp.status == 201 ? "created" : "updated",
                       cli_jstr(resp.json, "metadata.namespace") ?: cli_ns(), name, cli_jstr(s, "runtime") ?: "python3",
                       cli_jint(s, "ready", 1), cli_jint(s, "maxSessions", 100), cli_jint(s, "cooldownSeconds", 300),
                       cli_egress_text(json_object_get(s, "egress"), "off", eg, sizeof(eg)));
        }
        cli_response_done(&resp);
        return r;
}

static int pool_list(int argc, char **argv, struct lg_error *err) {
        int r = args(argc, argv, pool_list_usage, 0, 0, "", NULL, NULL, err);
        if (r)
                return r == 1 ? 0 : r;
        _cleanup_free_ char *path = sp_path(NULL, NULL, NULL, NULL);
        struct cli_response resp = {0};
        if ((r = get(path, &resp, err)) == 0) {
                static const char *const head[] = {"NAME", "RUNTIME", "READY",  "SESSIONS", "COOLDOWN",
                                                   "EGRESS", "CPU",   "MEMORY", "FILES"};
                struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
                json_t *items = json_object_get(resp.json, "items"), *p;
                size_t i;
                json_array_foreach(items, i, p) {
                        const json_t *s = json_object_get(p, "spec");
                        char ready[48], sess[48], cool[32], files[80], a[32], b[32], cpu[32], mem[32], eg[1024];
                        int n = snprintf(ready, sizeof(ready), "%lld", cli_jint(p, "status.ready", -1));
                        snprintf(ready + n, sizeof(ready) - (size_t) n, "/%lld", cli_jint(s, "ready", 1));
                        snprintf(sess, sizeof(sess), "%lld/%lld", cli_jint(p, "status.sessions", 0),
                                 cli_jint(s, "maxSessions", 100));
                        snprintf(cool, sizeof(cool), "%llds", cli_jint(s, "cooldownSeconds", 300));
                        snprintf(files, sizeof(files), "%s/%s", spec_or(s, "maxFileBytes", "100Mi", a, sizeof(a)),
                                 spec_or(s, "maxSessionBytes", "1Gi", b, sizeof(b)));
                        const char *row[] = {cli_jstr(p, "metadata.name"), cli_jstr(s, "runtime") ?: "python3",
                                             strncmp(ready, "-1/", 3) ? ready : ready + 3, sess, cool,
                                             cli_egress_text(json_object_get(s, "egress"), "off", eg, sizeof(eg)),
                                             spec_or(s, "cpu", "-", cpu, sizeof(cpu)),
                                             spec_or(s, "memory", "256Mi", mem, sizeof(mem)), files};
                        cli_table_add(t, row);
                }
                if (json_array_size(items))
                        cli_table_print(t, stdout);
                else
                        fprintf(stderr, "no session pools\n");
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r < 0 ? r : 0;
}

static int pool_show(int argc, char **argv, struct lg_error *err) {
        const char *name = NULL;
        int r = args(argc, argv, pool_show_usage, 1, 1, "no session pool name given", &name, NULL, err);
        if (r)
                return r == 1 ? 0 : r;
        _cleanup_free_ char *path = sp_path(name, NULL, NULL, NULL);
        struct cli_response resp = {0};
        if ((r = get(path, &resp, err)) == 0) {
                const json_t *d = resp.json, *s = json_object_get(d, "spec");
                char a[64], b[64];
                printf("name:          %s/%s\n", cli_jstr(d, "metadata.namespace") ?: cli_ns(), name);
                printf("runtime:       %s\n", cli_jstr(s, "runtime") ?: "python3");
                printf("ready:         %lld of %lld (%lld starting)\n", cli_jint(d, "status.ready", 0),
                       cli_jint(s, "ready", 1), cli_jint(d, "status.starting", 0));
                printf("sessions:      %lld of at most %lld\n", cli_jint(d, "status.sessions", 0),
                       cli_jint(s, "maxSessions", 100));
                printf("cooldown:      %lld s\n", cli_jint(s, "cooldownSeconds", 300));
                char eg[1024];
                printf("egress:        %s\n", cli_egress_text(json_object_get(s, "egress"), "off", eg, sizeof(eg)));
                printf("cpu, memory:   %s, %s\n", spec_or(s, "cpu", "-", a, sizeof(a)),
                       spec_or(s, "memory", "256Mi", b, sizeof(b)));
                printf("files:         %s per file, ", spec_or(s, "maxFileBytes", "100Mi", a, sizeof(a)));
                printf("%s per session\n", spec_or(s, "maxSessionBytes", "1Gi", b, sizeof(b)));
                if (cli_jstr(d, "metadata.creationTimestamp"))
                        printf("created:       %s\n", cli_jstr(d, "metadata.creationTimestamp"));
        }
        cli_response_done(&resp);
        return r < 0 ? r : 0;
}

static int pool_delete(int argc, char **argv, struct lg_error *err) {
        int r = args(argc, argv, pool_delete_usage, 1, -1, "no session pool name given", NULL, NULL, err);
        if (r)
                return r == 1 ? 0 : r;
        for (int i = optind; i < argc; i++)
                if ((r = cli_check_name("session pool", argv[i], err)) < 0)
                        return r;
        for (int i = optind; i < argc && r >= 0; i++)
                r = del(sp_path(argv[i], NULL, NULL, NULL), "deleted session pool ", argv[i], err);
        return r;
}

int cmd_sessionpool(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"create", pool_create}, {"apply", pool_create}, {"list", pool_list},     {"ls", pool_list},
                {"show", pool_show},     {"get", pool_show},     {"delete", pool_delete}, {"rm", pool_delete},
        };
        return cli_run_group("sessionpool", verbs, ARRAY_SIZE(verbs), pool_usage, argc, argv);
}

/* ---- session exec ------------------------------------------------------------ */

static void put_stream(FILE *f, const json_t *v) {
        if (json_is_string(v) && json_string_length(v))
                fwrite(json_string_value(v), 1, json_string_length(v), f);
        fflush(f);
}

/* 0 Succeeded, 1 Failed (or unknown), 124 TimedOut. */
static int exec_status(const json_t *x) {
        const char *status = cli_jstr(x, "status") ?: "";
        return !strcmp(status, "Succeeded") ? 0 : !strcmp(status, "TimedOut") ? 124 : 1;
}

/* The answer of an execution, for humans; returns the exit status. */
static int print_execution(const json_t *x) {
        const json_t *out = json_object_get(x, "stdout"), *result = json_object_get(x, "result");
        const json_t *trunc = json_object_get(x, "truncated");
        const char *status = cli_jstr(x, "status") ?: "", *msg = cli_jstr(x, "message");
        put_stream(stdout, out);
        put_stream(stderr, json_object_get(x, "stderr"));
        for (int i = 0; i < 2; i++)
                if (json_is_true(trunc) || json_is_true(json_object_get(trunc, i ? "stderr" : "stdout")))
                        fprintf(stderr, "legion: the execution's %s was cut at 1 MiB\n", i ? "stderr" : "stdout");
        if (result && !json_is_null(result)) {
                size_t n = json_string_length(out);
                char *t = json_is_string(result) ? NULL : json_dumps(result, JSON_ENCODE_ANY | JSON_COMPACT);
                if (n && json_string_value(out)[n - 1] != '\n')
                        putchar('\n');
                fputs("=> ", stdout);
                fwrite(t ?: json_string_value(result), 1, t ? strlen(t) : json_string_length(result), stdout);
                putchar('\n');
                fflush(stdout);
                free(t);
        }
        const char *tb = cli_jstr(x, "error.traceback"), *type = cli_jstr(x, "error.type");
        if (!strcmp(status, "Failed") && tb && *tb)
                fprintf(stderr, "%s%s", tb, tb[strlen(tb) - 1] == '\n' ? "" : "\n");
        else if (!strcmp(status, "Failed") && (type || cli_jstr(x, "error.message")))
                fprintf(stderr, "%s: %s\n", type ?: "Error", cli_jstr(x, "error.message") ?: "");
        else if (!strcmp(status, "Failed") && !msg)
                fputs("legion: the execution failed\n", stderr);
        if (!strcmp(status, "TimedOut"))
                fprintf(stderr, "legion: %s\n", msg ?: "the execution timed out (the session goes on)");
        else if (msg || json_is_true(json_object_get(x, "interpreterRestarted")))
                fprintf(stderr, "legion: %s\n", msg ?: "the interpreter was restarted: its variables are lost");
        if (strcmp(status, "Succeeded") && strcmp(status, "Failed") && strcmp(status, "TimedOut"))
                fprintf(stderr, "legion: unexpected execution status `%s`\n", status);
        return exec_status(x);
}

static int session_exec(int argc, char **argv, struct lg_error *err) {
        enum { O_TIMEOUT = 1 };
        static const struct option opts[] = {
                {"code", required_argument, NULL, 'c'}, {"file", required_argument, NULL, 'f'},
                {"timeout", required_argument, NULL, O_TIMEOUT}, {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS, {0, 0, 0, 0},
        };
        const char *code = NULL, *file = NULL;
        long long timeout = -1;
        int c, sources = 0;
        while ((c = cli_getopt(argc, argv, ":hc:f:", opts)) != -1) {
                switch (c) {
                case 'c': code = optarg; sources++; break;
                case 'f': file = optarg; sources++; break;
                case O_TIMEOUT:
                        if (cli_parse_uint(optarg, 100000, &timeout) < 0 || timeout == 0)
                                return cli_usage_error(exec_usage, "--timeout needs whole seconds, not `%s`", optarg);
                        break;
                case 'h': exec_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, exec_usage);
                }
        }
        if (argc - optind < 2)
                return cli_usage_error(exec_usage, argc > optind ? "no session identifier given"
                                                                 : "no session pool given");
        if (argc - optind > 3 || (argc - optind == 3 && strcmp(argv[optind + 2], "-")))
                return cli_usage_error(exec_usage, "unexpected argument `%s` (code goes after -c)", argv[optind + 2]);
        if (argc - optind == 3) {
                file = "-";
                sources++;
        }
        if (sources != 1)
                return cli_usage_error(exec_usage, sources ? "give the code once: -c, --file or -"
                                                           : "no code given: use -c CODE, --file FILE or - (stdin)");
        const char *pool = argv[optind], *id = argv[optind + 1];
        int r;
        if ((r = cli_check_name("session pool", pool, err)) < 0 || (r = check_id(id, err)) < 0)
                return r;
        _cleanup_free_ char *buf = NULL;
        size_t len = code ? strlen(code) : 0;
        if (file && (r = cli_read_file(file, 0, &buf, &len, err)) < 0)
                return r;
        _cleanup_json_ json_t *body = json_pack("{s:s%}", "code", file ? buf : code, len);
        if (!body)
                return lg_error_setm(err, EINVAL, "the code is not UTF-8 text");
        if (timeout > 0)
                json_object_set_new(body, "timeoutSeconds", json_integer(timeout));
        _cleanup_free_ char *text = json_dumps(body, JSON_COMPACT);
        _cleanup_free_ char *path = sp_path(pool, "executions", NULL, id);
        if (!text || !path)
                return lg_error_set(err, ENOMEM, "request");
        struct cli_request rq = {
                .method = "POST",
                .path = path,
                .body = text,
                .body_len = strlen(text),
                .content_type = "application/json",
                /* legiond gives up on an execution within 11 minutes. */
                .timeout_s = timeout > 0 ? (long) timeout + 60 : 720,
        };
        struct cli_response resp = {0};
        if ((r = cli_request(&rq, &resp, err)) < 0)
                return r;
        if (resp.status < 200 || resp.status >= 300) {
                r = cli_http_error(&resp, err);
                cli_response_done(&resp);
                return r;
        }
        _cleanup_json_ json_t *x = json_loadb(resp.body ?: "", resp.len, 0, NULL);
        if (!json_is_object(x))
                r = lg_error_setm(err, EBADMSG, "legiond's answer to the execution is not a JSON object");
        else if (cli_globals.json)
                cli_print_json_body(&resp);
        if (r >= 0)
                r = cli_globals.json ? exec_status(x) : print_execution(x);
        cli_response_done(&resp);
        return r;
}

/* ---- session files ----------------------------------------------------------- */

static int session_upload(int argc, char **argv, struct lg_error *err) {
        const char *pool, *id;
        int r = args(argc, argv, upload_usage, 3, 4, "give POOL, ID and the LOCAL file", &pool, &id, err);
        if (r)
                return r == 1 ? 0 : r;
        const char *local = argv[optind + 2];
        const char *remote = argc - optind > 3 ? argv[optind + 3] : NULL;
        bool from_stdin = !strcmp(local, "-");
        if (from_stdin && !remote)
                return cli_usage_error(upload_usage, "uploading stdin needs a REMOTE name");
        _cleanup_free_ char *target = NULL;
        if (!remote || (*remote && remote[strlen(remote) - 1] == '/')) {
                if (asprintf(&target, "%s%s", remote ?: "", base_name(local)) < 0)
                        return lg_error_set(err, ENOMEM, "path");
                remote = target;
        }
        _cleanup_free_ char *enc = NULL, *buf = NULL;
        if ((r = encode_remote(remote, &enc, err)) < 0)
                return r;
        _cleanup_close_ int fd = -1;
        struct stat st = {0};
        size_t len = 0;
        if (!from_stdin) {
                if ((fd = open(local, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) < 0)
                        return lg_error_set(err, errno, "open `%s`", local);
                if (S_ISDIR(st.st_mode))
                        return lg_error_set(err, EISDIR, "upload `%s`", local);
                /* 0 means "no body" to cli_request(). */
                if (fd == 0 && (fd = fcntl(0, F_DUPFD_CLOEXEC, 3)) < 0)
                        return lg_error_set(err, errno, "dup");
        }
        if (from_stdin || !S_ISREG(st.st_mode)) {
                if ((r = from_stdin ? cli_read_file("-", 0, &buf, &len, err) : cli_read_fd(fd, local, 0, &buf, &len, err)) < 0)
                        return r;
        } else {
                len = (size_t) st.st_size;
        }
        _cleanup_free_ char *path = sp_path(pool, "files", enc, id);
        if (!path)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_request rq = {
                .method = "PUT",
                .path = path,
                .body = buf,
                .body_fd = buf ? 0 : fd,
                .body_len = len,
                .content_type = "application/octet-stream",
                .progress = true,
        };
        struct cli_response resp = {0};
        if ((r = cli_request(&rq, &resp, err)) < 0)
                return r;
        if (resp.status < 200 || resp.status >= 300) {
                r = cli_http_error(&resp, err);
        } else if (cli_globals.json) {
                cli_print_json_body(&resp);
        } else {
                char a[32];
                printf("uploaded %s (%s) to /mnt/data/%s in session %s\n", from_stdin ? "stdin" : local,
                       cli_fmt_bytes(len, a, sizeof(a)), rel_remote(remote), id);
        }
        cli_response_done(&resp);
        return r;
}

static int session_download(int argc, char **argv, struct lg_error *err) {
        const char *pool, *id;
        int r = args(argc, argv, download_usage, 3, 4, "give POOL, ID and the REMOTE file", &pool, &id, err);
        if (r)
                return r == 1 ? 0 : r;
        const char *remote = argv[optind + 2], *local = argc - optind > 3 ? argv[optind + 3] : base_name(remote);
        _cleanup_free_ char *enc = NULL, *dest = NULL, *tmp = NULL;
        if ((r = encode_remote(remote, &enc, err)) < 0)
                return r;
        _cleanup_free_ char *path = sp_path(pool, "files", enc, id);
        if (!path)
                return lg_error_set(err, ENOMEM, "path");
        bool to_stdout = !strcmp(local, "-");
        struct stat st;
        if (!to_stdout && stat(local, &st) == 0 && S_ISDIR(st.st_mode)) {
                if (asprintf(&dest, "%s/%s", local, base_name(remote)) < 0)
                        return lg_error_set(err, ENOMEM, "path");
                local = dest;
        }
        /* Into a temporary file beside LOCAL, renamed when all of it came:
         * an error leaves no empty or partial LOCAL behind. */
        _cleanup_fclose_ FILE *f = NULL;
        if (!to_stdout) {
                if (asprintf(&tmp, "%s.legion-XXXXXX", local) < 0)
                        return lg_error_set(err, ENOMEM, "path");
                int fd = mkostemp(tmp, O_CLOEXEC);
                if (fd < 0)
                        return lg_error_set(err, errno, "create `%s`", local);
                mode_t um = umask(0);
                umask(um);
                fchmod(fd, 0666 & ~um);
                if (!(f = fdopen(fd, "w"))) {
                        close(fd);
                        unlink(tmp);
                        return lg_error_set(err, errno, "create `%s`", local);
                }
        }
        struct cli_request rq = {.method = "GET", .path = path, .stream_2xx = to_stdout ? stdout : f};
        struct cli_response resp = {0};
        r = cli_request(&rq, &resp, err);
        if (r >= 0 && (resp.status < 200 || resp.status >= 300))
                r = cli_http_error(&resp, err);
        if (r >= 0 && f && fflush(f) != 0)
                r = lg_error_set(err, errno, "write `%s`", local);
        if (r >= 0 && f && rename(tmp, local) < 0)
                r = lg_error_set(err, errno, "rename to `%s`", local);
        if (r < 0 && f)
                unlink(tmp);
        if (r >= 0 && !to_stdout && !cli_globals.json) {
                char a[32];
                printf("downloaded /mnt/data/%s (%s) from session %s to %s\n", rel_remote(remote),
                       cli_fmt_bytes(resp.streamed, a, sizeof(a)), id, local);
        }
        cli_response_done(&resp);
        return r;
}

static int session_ls(int argc, char **argv, struct lg_error *err) {
        const char *pool, *id;
        int r = args(argc, argv, ls_usage, 2, 2, "give POOL and ID", &pool, &id, err);
        if (r)
                return r == 1 ? 0 : r;
        _cleanup_free_ char *path = sp_path(pool, "files", NULL, id);
        struct cli_response resp = {0};
        if ((r = get(path, &resp, err)) == 0) {
                json_t *items = json_is_array(resp.json) ? resp.json : json_object_get(resp.json, "items"), *it;
                static const char *const head[] = {"NAME", "SIZE", "MODIFIED"};
                struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
                size_t i;
                json_array_foreach(items, i, it) {
                        char size[32], mod[64];
                        const json_t *sz = json_object_get(it, "size");
                        if (json_is_integer(sz))
                                cli_fmt_bytes((uint64_t) json_integer_value(sz), size, sizeof(size));
                        else
                                snprintf(size, sizeof(size), "-");
                        const char *row[] = {cli_jstr(it, "name"), size,
                                             fmt_time(json_object_get(it, "modified"), mod, sizeof(mod))};
                        cli_table_add(t, row);
                }
                if (json_array_size(items))
                        cli_table_print(t, stdout);
                else
                        fprintf(stderr, "no files in session %s\n", id);
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r < 0 ? r : 0;
}

static int session_rm(int argc, char **argv, struct lg_error *err) {
        const char *pool, *id;
        int r = args(argc, argv, rm_usage, 3, -1, "give POOL, ID and the REMOTE file", &pool, &id, err);
        if (r)
                return r == 1 ? 0 : r;
        for (int i = optind + 2; i < argc && r >= 0; i++) {
                _cleanup_free_ char *enc = NULL;
                if ((r = encode_remote(argv[i], &enc, err)) >= 0)
                        r = del(sp_path(pool, "files", enc, id), "removed /mnt/data/", rel_remote(argv[i]), err);
        }
        return r;
}

/* ---- sessions ------------------------------------------------------------------ */

static int session_list(int argc, char **argv, struct lg_error *err) {
        const char *pool;
        int r = args(argc, argv, list_usage, 1, 1, "no session pool given", &pool, NULL, err);
        if (r)
                return r == 1 ? 0 : r;
        _cleanup_free_ char *path = sp_path(pool, "sessions", NULL, NULL);
        struct cli_response resp = {0};
        if ((r = get(path, &resp, err)) == 0) {
                static const char *const head[] = {"IDENTIFIER", "EXECUTIONS", "CREATED", "LAST-ACTIVITY", "EXPIRES"};
                struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
                json_t *items = json_object_get(resp.json, "items"), *s;
                size_t i;
                json_array_foreach(items, i, s) {
                        char n[32], a[64], b[64], c[64];
                        const char *row[] = {cli_jstr(s, "identifier"), cli_jtext(s, "executions", n, sizeof(n)),
                                             fmt_time(json_object_get(s, "createdAt"), a, sizeof(a)),
                                             fmt_time(json_object_get(s, "lastActivity"), b, sizeof(b)),
                                             fmt_time(json_object_get(s, "expiresAt"), c, sizeof(c))};
                        cli_table_add(t, row);
                }
                if (json_array_size(items))
                        cli_table_print(t, stdout);
                else
                        fprintf(stderr, "no sessions in pool %s\n", pool);
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r < 0 ? r : 0;
}

static int session_show(int argc, char **argv, struct lg_error *err) {
        const char *pool, *id;
        int r = args(argc, argv, show_usage, 2, 2, "give POOL and ID", &pool, &id, err);
        if (r)
                return r == 1 ? 0 : r;
        _cleanup_free_ char *path = sp_path(pool, "sessions", id, NULL);
        struct cli_response resp = {0};
        if ((r = get(path, &resp, err)) == 0) {
                const json_t *s = resp.json;
                char a[64];
                printf("identifier:     %s\n", cli_jstr(s, "identifier") ?: id);
                printf("pool:           %s\n", pool);
                printf("executions:     %lld\n", cli_jint(s, "executions", 0));
                printf("created:        %s\n", fmt_time(json_object_get(s, "createdAt"), a, sizeof(a)));
                printf("last activity:  %s\n", fmt_time(json_object_get(s, "lastActivity"), a, sizeof(a)));
                printf("expires:        %s (after %lld s without a call)\n",
                       fmt_time(json_object_get(s, "expiresAt"), a, sizeof(a)), cli_jint(s, "cooldownSeconds", 0));
        }
        cli_response_done(&resp);
        return r < 0 ? r : 0;
}

static int session_delete(int argc, char **argv, struct lg_error *err) {
        const char *pool;
        int r = args(argc, argv, delete_usage, 2, -1, "give POOL and ID", &pool, NULL, err);
        if (r)
                return r == 1 ? 0 : r;
        for (int i = optind + 1; i < argc; i++)
                if ((r = check_id(argv[i], err)) < 0)
                        return r;
        for (int i = optind + 1; i < argc && r >= 0; i++)
                r = del(sp_path(pool, "sessions", argv[i], NULL), "ended session ", argv[i], err);
        return r;
}

int cmd_session(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"exec", session_exec},     {"run", session_exec},   {"upload", session_upload},
                {"download", session_download}, {"ls", session_ls},  {"rm", session_rm},
                {"list", session_list},     {"show", session_show},  {"get", session_show},
                {"delete", session_delete},
        };
        return cli_run_group("session", verbs, ARRAY_SIZE(verbs), session_usage, argc, argv);
}
