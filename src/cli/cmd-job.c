/* Serverless jobs from the command line (docs/jobs.md): `legion submit`,
 * `legion deploy-master`, `legion job list|show|logs|stop|delete|pool` and
 * `legion master list|show|delete`, over /v1/namespaces/{ns}/jobs and
 * .../masters and /v1/jobs/pools (docs/api.md, "Jobs").
 *
 * `submit` packs --file and --files (each under its name, as /job/NAME in
 * every role) and uploads them as a package, then posts the spec with
 * ?attach=true&logs=true: the stream's log lines (the driver's output) go
 * to stdout, what Legion says (submitted, what the job waits for, each
 * index's outcome, the end) to stderr. Exit 0 when the job Succeeded, 1
 * otherwise. The stream is the job's lifeline: ^C, SIGTERM or a lost
 * connection close it and legiond stops the job ("client disconnected");
 * --detach submits and returns. */
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cas/cas.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "kube/kube.h"
#include "pkg/pkg.h"

#define _cleanup_json_ _cleanup_(json_decrefp)
#define MAX_FILES 64
#define MAX_ENV 256

/* ---- usage ------------------------------------------------------------------------- */

static void submit_usage(FILE *f) {
        fputs("usage: legion submit [options] [-- COMMAND|ARGS...]\n"
              "\n"
              "Run a job: a Dask master, a driver running --file and N executors (engine\n"
              "dask), or N copies of COMMAND (engine indexed), each role in a sandbox of its\n"
              "own, deleted when the job ends. Without --detach the driver's output is shown\n"
              "as it comes (indexed: each index's outcome), and the exit status is 0 when\n"
              "the job Succeeded, 1 otherwise; ^C stops the job. After `--`: the script's\n"
              "arguments (dask with --file), else the command (indexed: required).\n"
              "\n"
              "  --name N                the job's name (default job-XXXXXXXX)\n"
              "  --engine dask|indexed   (default dask)\n"
              "  --file F                the driver's script; packed with --files, it is /job/F\n"
              "  --files PATH            a file or directory the roles read at /job/NAME\n"
              "                          (repeatable; data/ is /job/data)\n"
              "  --num-executors N       executors (dask), or the parallel copies (indexed)\n"
              "  --executor-cores C      CPUs of an executor: 2, 0.5, 500m (default 1)\n"
              "  --executor-memory M     memory of an executor: 8g, 512Mi (default 1Gi)\n"
              "  --driver-cores C        CPUs of the driver (default 1)\n"
              "  --driver-memory M       memory of the driver (default 1Gi)\n"
              "  --master NAME|tcp://IP:PORT\n"
              "                          a master deployed before (legion deploy-master), or a\n"
              "                          scheduler Legion does not run; default: the job's own\n"
              "                          (or an idle kept one of this namespace)\n"
              "  --keep-alive[=SECONDS]  keep the job's master after it, as master JOB-master,\n"
              "                          until idle that long (default 600)\n"
              "  --max-duration D        stop the job after D (90s, 10m, 2h): DeadlineExceeded\n"
              "  --image REF             run the roles from this image (default: the host's /usr)\n"
              "  --env K=V               an environment variable of every role; repeatable\n"
              "  --completions N         indexed: indexes to run (default --num-executors)\n"
              "  --parallelism P         indexed: at most P at once (default: all)\n"
              "  --retries R             indexed: attempts after an index's first (default 3)\n"
              "  --detach                submit and return (prints the job's name)\n"
              "  -n NS                   the namespace (as --ns)\n" CLI_GLOBAL_HELP,
              f);
}

static void deploy_master_usage(FILE *f) {
        fputs("usage: legion deploy-master NAME [--cpu C] [--memory M] [--image REF] [--keep-alive SECONDS]\n"
              "\n"
              "Start a Dask master (dask-scheduler) alone; jobs use it with --master NAME,\n"
              "one at a time. It stays until deleted or idle for its keep-alive time.\n"
              "\n"
              "  --cpu C               CPUs (default 1)\n"
              "  --memory M            memory (default 1Gi)\n"
              "  --image REF           an image with Dask (default: the host's /usr)\n"
              "  --keep-alive SECONDS  idle time before it goes (default 600)\n" CLI_GLOBAL_HELP,
              f);
}

static void job_usage(FILE *f) {
        fputs("usage: legion job <command> [options]\n"
              "\n"
              "commands:\n"
              "  list [-A]                            jobs of the namespace (or of all, -A)\n"
              "  show NAME                            phase, reason, master, roles, usage\n"
              "  logs NAME [-f] [--role R] [--index I]\n"
              "                                       a role's output (driver, master, executor, index)\n"
              "  stop NAME...                         stop jobs (their sandboxes go; the records stay)\n"
              "  delete NAME...                       stop and delete jobs, logs and all\n"
              "  pool set NAME --ready N [--image REF] | pool list | pool delete NAME\n"
              "                                       warm sandboxes for job roles (admin)\n"
              "\n"
              "Submit jobs with `legion submit`.\n" CLI_GLOBAL_HELP,
              f);
}

static void job_list_usage(FILE *f) {
        fputs("usage: legion job list [-A]\n\n  -A, --all-namespaces   jobs of every namespace (admin)\n" CLI_GLOBAL_HELP, f);
}
static void job_show_usage(FILE *f) { fputs("usage: legion job show NAME\n" CLI_GLOBAL_HELP, f); }
static void job_stop_usage(FILE *f) { fputs("usage: legion job stop NAME...\n" CLI_GLOBAL_HELP, f); }
static void job_delete_usage(FILE *f) { fputs("usage: legion job delete NAME...\n" CLI_GLOBAL_HELP, f); }

static void job_logs_usage(FILE *f) {
        fputs("usage: legion job logs NAME [-f] [--role ROLE] [--index I]\n"
              "\n"
              "  -f, --follow      keep printing until the role can write no more\n"
              "  --role ROLE       driver (dask's default), master, executor or index\n"
              "                    (indexed's default)\n"
              "  --index I         which executor or index (default 0)\n" CLI_GLOBAL_HELP,
              f);
}

static void pool_usage(FILE *f) {
        fputs("usage: legion job pool <command>\n"
              "\n"
              "commands:\n"
              "  set NAME --ready N [--image REF] [--kind plain|dask-executor]\n"
              "                                     keep N sandboxes ready for job roles (of the\n"
              "                                     image, or the host's /usr; dask-executor: Python\n"
              "                                     with Dask imported, for executors)\n"
              "  list                               the pools, what they hold and hand out\n"
              "  delete NAME                        delete a pool\n" CLI_GLOBAL_HELP,
              f);
}
static void pool_set_usage(FILE *f) {
        fputs("usage: legion job pool set NAME --ready N [--image REF] [--kind plain|dask-executor]\n" CLI_GLOBAL_HELP,
              f);
}
static void pool_list_usage(FILE *f) { fputs("usage: legion job pool list\n" CLI_GLOBAL_HELP, f); }
static void pool_delete_usage(FILE *f) { fputs("usage: legion job pool delete NAME\n" CLI_GLOBAL_HELP, f); }

static void master_usage(FILE *f) {
        fputs("usage: legion master <command>\n"
              "\n"
              "commands:\n"
              "  list [-A]        masters of the namespace (or of all, -A)\n"
              "  show NAME        a master's address, state, job and usage\n"
              "  delete NAME...   delete masters (not one a job is using)\n"
              "\n"
              "Start one with `legion deploy-master`, or keep a job's with\n"
              "`legion submit --keep-alive`.\n" CLI_GLOBAL_HELP,
              f);
}
static void master_list_usage(FILE *f) {
        fputs("usage: legion master list [-A]\n\n  -A, --all-namespaces   masters of every namespace (admin)\n" CLI_GLOBAL_HELP,
              f);
}
static void master_show_usage(FILE *f) { fputs("usage: legion master show NAME\n" CLI_GLOBAL_HELP, f); }
static void master_delete_usage(FILE *f) { fputs("usage: legion master delete NAME...\n" CLI_GLOBAL_HELP, f); }

/* ---- helpers ----------------------------------------------------------------------- */

/* "/v1/namespaces/NS/KIND[/NAME[/SUB]]" (malloc'd). */
static char *res_path(const char *kind, const char *name, const char *sub) {
        char *p = NULL;
        int n = asprintf(&p, "/v1/namespaces/%s/%s%s%s%s%s", cli_ns(), kind, name ? "/" : "", name ?: "",
                         sub ? "/" : "", sub ?: "");
        return n < 0 ? NULL : p;
}

static const char *age(const char *stamp, char *buf, size_t cap) {
        if (!stamp)
                return snprintf(buf, cap, "-"), buf;
        return lg_kube_age(stamp, (int64_t) time(NULL), buf, cap);
}

/* -n NS among a verb's options, as kubectl has it. */
static void take_ns(const char *ns) { cli_global_option(CLI_OPT_NS, ns); }

/* A verb whose operands are names (at least one, or exactly one). */
static int names(int argc, char **argv, void (*usage)(FILE *), const char *what, bool one, struct lg_error *err) {
        static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, CLI_GLOBAL_OPTIONS, {0, 0, 0, 0}};
        int c;
        while ((c = cli_getopt(argc, argv, ":hn:", opts)) != -1) {
                switch (c) {
                case 'n': take_ns(optarg); break;
                case 'h': usage(stdout); return 1;
                default: return cli_bad_option(c, argv, usage);
                }
        }
        if (optind >= argc)
                return cli_usage_error(usage, "no %s name given", what);
        if (one && optind != argc - 1)
                return cli_usage_error(usage, "too many arguments");
        for (int i = optind; i < argc; i++) {
                int r = cli_check_name(what, argv[i], err);
                if (r < 0)
                        return r;
        }
        int r = cli_check_name("namespace", cli_ns(), err);
        return r < 0 ? r : 0;
}

/* A CPU amount ("2", "0.5", "500m") checked with the API's own parser. */
static bool cores_ok(const char *s) {
        uint64_t m;
        return lg_parse_millis(s, 1000000000, &m) == 0;
}

static bool memory_ok(const char *s) {
        uint64_t b;
        return lg_parse_size(s, &b) == 0 && b > 0;
}

/* ---- submit ------------------------------------------------------------------------ */

/* What the attach stream has told so far. */
struct attach {
        const char *name;
        bool said_submitted;
        char waiting[512];
        json_t *seen;       /* "index/attempt" of the index outcomes shown */
        json_t *final;      /* the last status line's job, when it was final */
        json_t *last;       /* the last job seen */
        bool json;
};

static bool is_final(const char *phase) {
        return phase && (!strcmp(phase, "Succeeded") || !strcmp(phase, "Failed") || !strcmp(phase, "Stopped"));
}

static void attach_status(struct attach *a, json_t *job) {
        const char *phase = cli_jstr(job, "status.phase");
        if (!a->said_submitted) {
                a->said_submitted = true;
                if (!a->json)
                        fprintf(stderr, "job %s submitted\n", cli_jstr(job, "name") ?: a->name);
        }
        const char *w = cli_jstr(job, "status.waitingFor");
        if (!a->json && w && strcmp(w, a->waiting))
                fprintf(stderr, "job %s is waiting for %s\n", cli_jstr(job, "name") ?: a->name, w);
        snprintf(a->waiting, sizeof(a->waiting), "%s", w ?: "");
        /* Each index's outcome, once. */
        size_t i;
        json_t *role;
        json_array_foreach(json_object_get(json_object_get(job, "status"), "roles"), i, role) {
                const char *kind = cli_jstr(role, "role"), *exit = cli_jstr(role, "exit");
                if (a->json || !kind || strcmp(kind, "index") || !exit)
                        continue;
                char key[64];
                long long idx = cli_jint(role, "index", 0), attempt = cli_jint(role, "attempt", 0);
                snprintf(key, sizeof(key), "%lld/%lld", idx, attempt);
                if (json_object_get(a->seen, key))
                        continue;
                json_object_set_new(a->seen, key, json_true());
                if (attempt)
                        fprintf(stderr, "index %lld (attempt %lld): %s\n", idx, attempt, exit);
                else
                        fprintf(stderr, "index %lld: %s\n", idx, exit);
        }
        json_decref(a->last);
        a->last = json_incref(job);
        if (is_final(phase)) {
                json_decref(a->final);
                a->final = json_incref(job);
        }
}

static void attach_line(void *ud, const char *line, size_t n) {
        struct attach *a = ud;
        if (n == 0)
                return;
        _cleanup_json_ json_t *doc = json_loadb(line, n, 0, NULL);
        const char *type = cli_jstr(doc, "type");
        if (!type)
                return;
        if (!strcmp(type, "log")) {
                const json_t *data = json_object_get(doc, "data");
                if (json_is_string(data)) {
                        fwrite(json_string_value(data), 1, json_string_length(data), stdout);
                        fflush(stdout);
                }
        } else if (!strcmp(type, "status") && json_is_object(json_object_get(doc, "job"))) {
                attach_status(a, json_object_get(doc, "job"));
        }
}

/* ^C and SIGTERM while attached: the process ends and with it the stream,
 * which stops the job on legiond's side. */
static const char *stopping_msg;
static void on_stop_signal(int sig) {
        if (stopping_msg)
                (void) !write(STDERR_FILENO, stopping_msg, strlen(stopping_msg));
        _exit(128 + sig);
}

/* Post the spec with ?attach=true and follow the job to its end. */
static int submit_attached(json_t *spec, const char *name, struct lg_error *err) {
        _cleanup_free_ char *base = res_path("jobs", NULL, NULL), *path = NULL, *body = NULL;
        if (!base || asprintf(&path, "%s?attach=true%s", base, cli_globals.json ? "" : "&logs=true") < 0 ||
            !(body = json_dumps(spec, JSON_COMPACT)))
                return lg_error_set(err, ENOMEM, "request");
        struct attach a = {.name = name, .seen = json_object(), .json = cli_globals.json};
        struct cli_lines lines = {.on_line = attach_line, .ud = &a};
        FILE *f = cli_lines_open(&lines);
        if (!f) {
                json_decref(a.seen);
                return lg_error_set(err, errno, "stream");
        }
        char msg[200];
        snprintf(msg, sizeof(msg), "\nlegion: stopping job %s\n", name);
        stopping_msg = msg;
        struct sigaction sa = {.sa_handler = on_stop_signal}, old_int, old_term;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        static const char *const hdrs[] = {"Accept: application/x-ndjson", NULL};
        struct cli_request rq = {.method = "POST", .path = path, .body = body, .body_len = strlen(body),
                                 .content_type = "application/json", .headers = hdrs, .stream_2xx = f,
                                 .timeout_s = 0};
        struct cli_response resp = {0};
        int r = cli_request(&rq, &resp, err);
        fclose(f); /* a last line without its newline is read now */
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        if (r >= 0 && (resp.status < 200 || resp.status >= 300))
                r = cli_http_error(&resp, err);
        cli_response_done(&resp);
        const char *shown = a.last ? cli_jstr(a.last, "name") ?: name : name;
        if (r >= 0 && !a.final) {
                r = lg_error_setm(err, EPIPE,
                                  "the stream of job %s ended before the job did (legiond stopping?); "
                                  "it goes on: `legion job show %s`",
                                  shown, shown);
        } else if (r >= 0) {
                if (cli_globals.json) {
                        char *s = json_dumps(a.final, JSON_INDENT(2));
                        if (s)
                                printf("%s\n", s);
                        free(s);
                }
                const char *phase = cli_jstr(a.final, "status.phase");
                if (strcmp(phase, "Succeeded")) {
                        fprintf(stderr, "job %s %s: %s: %s\n", shown, phase, cli_jstr(a.final, "status.reason") ?: "-",
                                cli_jstr(a.final, "status.message") ?: "");
                        r = 1;
                }
        }
        json_decref(a.seen);
        json_decref(a.final);
        json_decref(a.last);
        return r;
}

/* K=V into env; false when it is not one. */
static bool add_env(json_t *env, const char *kv) {
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv)
                return false;
        char *k = strndup(kv, (size_t) (eq - kv));
        if (!k)
                return false;
        json_object_set_new(env, k, json_string(eq + 1));
        free(k);
        return true;
}

/* The object at key of spec, made when missing. */
static json_t *sub(json_t *spec, const char *key) {
        json_t *o = json_object_get(spec, key);
        if (!o) {
                o = json_object();
                json_object_set_new(spec, key, o);
        }
        return o;
}

static int submit_run(int argc, char **argv, struct lg_error *err) {
        enum {
                O_NAME = 1, O_ENGINE, O_FILE, O_FILES, O_NUM, O_ECORES, O_EMEM, O_DCORES, O_DMEM, O_MASTER,
                O_KEEP, O_MAXDUR, O_IMAGE, O_ENV, O_COMPL, O_PAR, O_RETRIES, O_DETACH,
        };
        static const struct option opts[] = {
                {"name", required_argument, NULL, O_NAME},
                {"engine", required_argument, NULL, O_ENGINE},
                {"file", required_argument, NULL, O_FILE},
                {"files", required_argument, NULL, O_FILES},
                {"num-executors", required_argument, NULL, O_NUM},
                {"executor-cores", required_argument, NULL, O_ECORES},
                {"executor-memory", required_argument, NULL, O_EMEM},
                {"driver-cores", required_argument, NULL, O_DCORES},
                {"driver-memory", required_argument, NULL, O_DMEM},
                {"master", required_argument, NULL, O_MASTER},
                {"keep-alive", optional_argument, NULL, O_KEEP},
                {"max-duration", required_argument, NULL, O_MAXDUR},
                {"image", required_argument, NULL, O_IMAGE},
                {"env", required_argument, NULL, O_ENV},
                {"completions", required_argument, NULL, O_COMPL},
                {"parallelism", required_argument, NULL, O_PAR},
                {"retries", required_argument, NULL, O_RETRIES},
                {"detach", no_argument, NULL, O_DETACH},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        _cleanup_json_ json_t *spec = json_object(), *env = json_object();
        const char *paths[MAX_FILES + 1];
        size_t npaths = 0;
        const char *file = NULL, *engine = "dask";
        bool detach = false;
        long long v;
        int c;
        while ((c = cli_getopt(argc, argv, "+:hn:", opts)) != -1) {
                switch (c) {
                case O_NAME: json_object_set_new(spec, "name", json_string(optarg)); break;
                case O_ENGINE:
                        if (strcmp(optarg, "dask") && strcmp(optarg, "indexed"))
                                return cli_usage_error(submit_usage, "--engine is dask or indexed, not `%s`", optarg);
                        engine = optarg;
                        json_object_set_new(spec, "engine", json_string(optarg));
                        break;
                case O_FILE:
                        if (file)
                                return cli_usage_error(submit_usage, "one --file (more files: --files)");
                        file = optarg;
                        break;
                case O_FILES:
                        if (npaths == MAX_FILES)
                                return cli_usage_error(submit_usage, "at most %d --files", MAX_FILES);
                        paths[npaths++] = optarg;
                        break;
                case O_NUM:
                        if (cli_parse_uint(optarg, 1000000, &v) < 0 || v < 1)
                                return cli_usage_error(submit_usage, "--num-executors needs a count from 1, not `%s`",
                                                       optarg);
                        json_object_set_new(sub(spec, "executors"), "count", json_integer(v));
                        break;
                case O_ECORES:
                case O_DCORES:
                        if (!cores_ok(optarg))
                                return cli_usage_error(submit_usage, "--%s-cores needs CPUs (2, 0.5, 500m), not `%s`",
                                                       c == O_ECORES ? "executor" : "driver", optarg);
                        json_object_set_new(sub(spec, c == O_ECORES ? "executors" : "driver"), "cpu",
                                            json_string(optarg));
                        break;
                case O_EMEM:
                case O_DMEM:
                        if (!memory_ok(optarg))
                                return cli_usage_error(submit_usage, "--%s-memory needs a size (8g, 512Mi), not `%s`",
                                                       c == O_EMEM ? "executor" : "driver", optarg);
                        json_object_set_new(sub(spec, c == O_EMEM ? "executors" : "driver"), "memory",
                                            json_string(optarg));
                        break;
                case O_MASTER:
                        json_object_set_new(spec, "master",
                                            json_pack("{s:s}", strncmp(optarg, "tcp://", 6) ? "name" : "address",
                                                      optarg));
                        break;
                case O_KEEP:
                        json_object_set_new(spec, "keepAlive", json_true());
                        /* "--keep-alive 600" as "--keep-alive=600": a duration
                         * is no command. */
                        if (!optarg && optind < argc && cli_parse_seconds(argv[optind], 100000000, &v) == 0)
                                optarg = argv[optind++];
                        if (optarg) {
                                if (cli_parse_seconds(optarg, 100000000, &v) < 0 || v < 1)
                                        return cli_usage_error(submit_usage,
                                                               "--keep-alive=SECONDS (600, 10m), not `%s`", optarg);
                                json_object_set_new(spec, "keepAliveSeconds", json_integer(v));
                        }
                        break;
                case O_MAXDUR:
                        if (cli_parse_seconds(optarg, 100000000, &v) < 0 || v < 1)
                                return cli_usage_error(submit_usage, "--max-duration needs a duration (90s, 10m, 2h), "
                                                                     "not `%s`",
                                                       optarg);
                        json_object_set_new(spec, "maxDurationSeconds", json_integer(v));
                        break;
                case O_IMAGE: json_object_set_new(spec, "image", json_string(optarg)); break;
                case O_ENV:
                        if (json_object_size(env) >= MAX_ENV || !add_env(env, optarg))
                                return cli_usage_error(submit_usage, "--env needs K=V, not `%s`", optarg);
                        break;
                case O_COMPL:
                case O_PAR:
                case O_RETRIES: {
                        const char *key = c == O_COMPL ? "completions" : c == O_PAR ? "parallelism" : "retries";
                        if (cli_parse_uint(optarg, 1000000, &v) < 0 || (c != O_RETRIES && v < 1))
                                return cli_usage_error(submit_usage, "--%s needs a count, not `%s`", key, optarg);
                        json_object_set_new(spec, key, json_integer(v));
                        break;
                }
                case O_DETACH: detach = true; break;
                case 'n': take_ns(optarg); break;
                case 'h': submit_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, submit_usage);
                }
        }
        int r = cli_check_name("namespace", cli_ns(), err);
        if (r < 0)
                return r;
        if (json_object_size(env))
                json_object_set(spec, "env", env);
        /* What follows the options: the script's arguments (dask with a
         * --file), else the command. */
        if (optind < argc) {
                json_t *rest = json_array();
                for (int i = optind; i < argc; i++)
                        json_array_append_new(rest, json_string(argv[i]));
                bool args = !strcmp(engine, "dask") && file;
                json_object_set_new(spec, args ? "args" : "command", rest);
        }
        if (file) {
                const char *base = strrchr(file, '/');
                json_object_set_new(spec, "file", json_string(base && base[1] ? base + 1 : file));
                paths[npaths++] = file;
        }
        if (npaths) {
                _cleanup_close_ int fd = -1;
                uint64_t size = 0;
                struct lg_digest digest;
                if ((r = cli_pack_paths(paths, npaths, LG_BLOB_DEFAULT_MAX_BYTES, &fd, &size, err)) < 0 ||
                    (r = cli_upload_package(fd, size, &digest, err)) < 0)
                        return r;
                char pkg[8 + LG_DIGEST_HEX_LEN];
                snprintf(pkg, sizeof(pkg), "sha256:%s", digest.hex);
                json_object_set_new(spec, "package", json_string(pkg));
        }
        const char *name = cli_jstr(spec, "name");
        if (!detach)
                return submit_attached(spec, name ? name : "(new)", err);
        _cleanup_free_ char *path = res_path("jobs", NULL, NULL);
        if (!path)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_response resp = {0};
        r = cli_call("POST", path, spec, &resp, err);
        if (r >= 0 && cli_globals.json)
                cli_print_json_body(&resp);
        else if (r >= 0)
                printf("job %s submitted\n", cli_jstr(resp.json, "name") ?: "?");
        cli_response_done(&resp);
        return r;
}

int cmd_submit(int argc, char **argv) {
        if (cli_take_globals(&argc, argv))
                return 2;
        return cli_run_verb(submit_run, argc, argv);
}

/* ---- job list, show -------------------------------------------------------------- */

/* "12.0 vCPU-s, 24.0 GiB-s over 12 s" of a usage object. */
static const char *usage_text(const json_t *u, char *buf, size_t cap) {
        if (!u)
                return snprintf(buf, cap, "-"), buf;
        snprintf(buf, cap, "%.1f vCPU-s, %.1f GiB-s (%lld s)", cli_jnum(u, "vcpuSeconds", 0),
                 cli_jnum(u, "memoryGiBSeconds", 0), cli_jint(u, "seconds", 0));
        return buf;
}

/* GET path's items as a table (without head[0], NAMESPACE, unless all) or
 * the JSON; none: empty, else "No <what> found" (in the namespace). */
static int print_list(const char *path, bool all, const char *what, const char *empty,
                      void (*row)(struct cli_table *t, const json_t *item, bool all),
                      const char *const *head, size_t ncols, struct lg_error *err) {
        struct cli_response resp = {0};
        int r = cli_call("GET", path, NULL, &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                struct cli_table *t = cli_table_new(all ? ncols : ncols - 1, all ? head : head + 1);
                json_t *items = json_object_get(resp.json, "items"), *it;
                size_t i;
                json_array_foreach(items, i, it) row(t, it, all);
                if (json_array_size(items))
                        cli_table_print(t, stdout);
                else if (empty)
                        fprintf(stderr, "%s\n", empty);
                else if (all)
                        fprintf(stderr, "No %s found\n", what);
                else
                        fprintf(stderr, "No %s found in %s namespace.\n", what, cli_ns());
                cli_table_free(t);
        }
        cli_response_done(&resp);
        return r;
}

static void job_row(struct cli_table *t, const json_t *job, bool all) {
        char a[32], roles[32], vcpu[32];
        size_t n = json_array_size(json_object_get(json_object_get(job, "status"), "roles"));
        snprintf(roles, sizeof(roles), "%zu", n);
        snprintf(vcpu, sizeof(vcpu), "%.1f", cli_jnum(job, "status.usage.vcpuSeconds", 0));
        const char *row[] = {cli_jstr(job, "namespace") ?: "-", cli_jstr(job, "name") ?: "-",
                             cli_jstr(job, "spec.engine") ?: "-", cli_jstr(job, "status.phase") ?: "Pending",
                             cli_jstr(job, "status.reason") ?: "", roles, vcpu,
                             age(cli_jstr(job, "createdAt"), a, sizeof(a))};
        cli_table_add(t, all ? row : row + 1);
}

/* list [-A] of jobs or masters. */
static int list_verb(int argc, char **argv, void (*usage)(FILE *), const char *kind, const char *all_path,
                     void (*row)(struct cli_table *, const json_t *, bool), const char *const *head, size_t ncols,
                     struct lg_error *err) {
        static const struct option opts[] = {{"all-namespaces", no_argument, NULL, 'A'}, {"help", no_argument, NULL, 'h'},
                                             CLI_GLOBAL_OPTIONS, {0, 0, 0, 0}};
        bool all = false;
        int c;
        while ((c = cli_getopt(argc, argv, ":hAn:", opts)) != -1) {
                switch (c) {
                case 'A': all = true; break;
                case 'n': take_ns(optarg); break;
                case 'h': usage(stdout); return 0;
                default: return cli_bad_option(c, argv, usage);
                }
        }
        if (optind != argc)
                return cli_usage_error(usage, "unexpected argument `%s`", argv[optind]);
        int r;
        if (!all && (r = cli_check_name("namespace", cli_ns(), err)) < 0)
                return r;
        _cleanup_free_ char *path = all ? strdup(all_path) : res_path(kind, NULL, NULL);
        if (!path)
                return lg_error_set(err, ENOMEM, "path");
        return print_list(path, all, kind, NULL, row, head, ncols, err);
}

static int job_list(int argc, char **argv, struct lg_error *err) {
        static const char *const head[] = {"NAMESPACE", "NAME", "ENGINE", "PHASE", "REASON", "ROLES", "VCPU-S", "AGE"};
        return list_verb(argc, argv, job_list_usage, "jobs", "/v1/jobs", job_row, head, ARRAY_SIZE(head), err);
}

/* GET one resource: its JSON (the caller's) or -EIO with err. */
static int get_one(const char *kind, const char *name, struct cli_response *resp, struct lg_error *err) {
        _cleanup_free_ char *path = res_path(kind, name, NULL);
        if (!path)
                return lg_error_set(err, ENOMEM, "path");
        return cli_call("GET", path, NULL, resp, err);
}

static void field(const char *label, const char *value) {
        if (value && *value)
                printf("%-13s%s\n", label, value);
}

static void print_roles(const json_t *roles) {
        if (!json_array_size(roles))
                return;
        static const char *const head[] = {"ROLE", "INDEX", "ATTEMPT", "STATE", "EXIT", "WARM", "CPU", "MEMORY", "READY",
                                           "SANDBOX"};
        struct cli_table *t = cli_table_new(ARRAY_SIZE(head), head);
        size_t i;
        json_t *role;
        json_array_foreach(roles, i, role) {
                char idx[16] = "-", att[16], cpu[32], mem[32], ready[32] = "-";
                const char *kind = cli_jstr(role, "role") ?: "?";
                if (!strcmp(kind, "executor") || !strcmp(kind, "index"))
                        snprintf(idx, sizeof(idx), "%lld", cli_jint(role, "index", 0));
                snprintf(att, sizeof(att), "%lld", cli_jint(role, "attempt", 0));
                snprintf(cpu, sizeof(cpu), "%gm", cli_jnum(role, "cpuMillis", 0));
                cli_fmt_bytes((uint64_t) cli_jint(role, "memoryBytes", 0), mem, sizeof(mem));
                if (json_object_get(role, "readyMs"))
                        snprintf(ready, sizeof(ready), "%.1f ms", cli_jnum(role, "readyMs", 0));
                const json_t *warm = json_object_get(role, "warm");
                const char *row[] = {kind, idx, att, cli_jstr(role, "state") ?: "-", cli_jstr(role, "exit") ?: "-",
                                     warm ? (json_is_true(warm) ? "yes" : "no") : "-", cpu, mem, ready,
                                     cli_jstr(role, "sandbox") ?: "-"};
                cli_table_add(t, row);
        }
        printf("\n");
        cli_table_print(t, stdout);
        cli_table_free(t);
}

static void print_job(const json_t *job) {
        char buf[256], a[32];
        field("name:", cli_jstr(job, "name"));
        field("namespace:", cli_jstr(job, "namespace"));
        field("engine:", cli_jstr(job, "spec.engine"));
        field("image:", cli_jstr(job, "spec.image"));
        field("phase:", cli_jstr(job, "status.phase") ?: "Pending");
        field("reason:", cli_jstr(job, "status.reason"));
        field("message:", cli_jstr(job, "status.message"));
        field("waiting for:", cli_jstr(job, "status.waitingFor"));
        field("submitted:", cli_jstr(job, "status.submittedAt"));
        field("started:", cli_jstr(job, "status.startedAt"));
        field("finished:", cli_jstr(job, "status.finishedAt"));
        const json_t *m = json_object_get(json_object_get(job, "status"), "master");
        const char *mname = cli_jstr(m, "name") ?: "", *maddr = cli_jstr(m, "address") ?: "";
        if (*mname || *maddr) {
                snprintf(buf, sizeof(buf), "%s%s%s%s%s", mname, *mname ? " " : "", *maddr ? maddr : "(no address yet)",
                         json_is_true(json_object_get(m, "reused")) ? " (reused)" : "",
                         json_is_true(json_object_get(m, "kept")) ? " (kept after the job)" : "");
                field("master:", buf);
        }
        const json_t *ix = json_object_get(json_object_get(job, "status"), "indexed");
        if (ix) {
                snprintf(buf, sizeof(buf), "%lld of %lld succeeded, %lld failed, %lld active",
                         cli_jint(ix, "succeeded", 0), cli_jint(ix, "completions", 0), cli_jint(ix, "failed", 0),
                         cli_jint(ix, "active", 0));
                field("indexes:", buf);
        }
        const json_t *u = json_object_get(json_object_get(job, "status"), "usage");
        if (u) {
                field("usage:", usage_text(u, buf, sizeof(buf)));
                const char *kinds[] = {"driver", "master", "executor", "index"};
                for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
                        const json_t *k = json_object_get(json_object_get(u, "byRole"), kinds[i]);
                        if (k) {
                                char label[32];
                                snprintf(label, sizeof(label), "  %s:", kinds[i]);
                                field(label, usage_text(k, buf, sizeof(buf)));
                        }
                }
        }
        field("age:", age(cli_jstr(job, "createdAt"), a, sizeof(a)));
        print_roles(json_object_get(json_object_get(job, "status"), "roles"));
}

static int job_show(int argc, char **argv, struct lg_error *err) {
        int r = names(argc, argv, job_show_usage, "job", true, err);
        if (r)
                return r == 1 ? 0 : r;
        struct cli_response resp = {0};
        r = get_one("jobs", argv[optind], &resp, err);
        if (r >= 0 && cli_globals.json)
                cli_print_json_body(&resp);
        else if (r >= 0)
                print_job(resp.json);
        cli_response_done(&resp);
        return r;
}

/* ---- logs, stop, delete -------------------------------------------------------- */

static int job_logs(int argc, char **argv, struct lg_error *err) {
        enum { O_ROLE = 1, O_INDEX };
        static const struct option opts[] = {
                {"follow", no_argument, NULL, 'f'}, {"role", required_argument, NULL, O_ROLE},
                {"index", required_argument, NULL, O_INDEX}, {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS, {0, 0, 0, 0},
        };
        bool follow = false;
        const char *role = NULL;
        long long index = -1;
        int c;
        while ((c = cli_getopt(argc, argv, ":hfn:", opts)) != -1) {
                switch (c) {
                case 'f': follow = true; break;
                case O_ROLE:
                        if (strcmp(optarg, "driver") && strcmp(optarg, "master") && strcmp(optarg, "executor") &&
                            strcmp(optarg, "index"))
                                return cli_usage_error(job_logs_usage,
                                                       "--role is driver, master, executor or index, not `%s`", optarg);
                        role = optarg;
                        break;
                case O_INDEX:
                        if (cli_parse_uint(optarg, 1000000, &index) < 0)
                                return cli_usage_error(job_logs_usage, "--index needs a number, not `%s`", optarg);
                        break;
                case 'n': take_ns(optarg); break;
                case 'h': job_logs_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, job_logs_usage);
                }
        }
        if (optind != argc - 1)
                return cli_usage_error(job_logs_usage, optind >= argc ? "no job name given" : "too many arguments");
        const char *name = argv[optind];
        int r = cli_check_name("job", name, err);
        if (r < 0 || (r = cli_check_name("namespace", cli_ns(), err)) < 0)
                return r;
        _cleanup_free_ char *base = res_path("jobs", name, "logs"), *path = NULL;
        char idx[32] = "";
        if (index >= 0)
                snprintf(idx, sizeof(idx), "&index=%lld", index);
        if (!base || asprintf(&path, "%s?follow=%s%s%s%s", base, follow ? "true" : "false", role ? "&role=" : "",
                              role ?: "", idx) < 0)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_request rq = {.method = "GET", .path = path, .stream_2xx = stdout, .timeout_s = follow ? 0 : -1};
        struct cli_response resp = {0};
        r = cli_request(&rq, &resp, err);
        if (r >= 0 && (resp.status < 200 || resp.status >= 300))
                r = cli_http_error(&resp, err);
        cli_response_done(&resp);
        return r;
}

/* A call on each name (POST .../NAME/stop, DELETE .../NAME), saying what
 * it did; the first error ends it. */
static int each_name(int argc, char **argv, const char *kind, const char *method, const char *suffix,
                     const char *done, struct lg_error *err) {
        for (int i = optind; i < argc; i++) {
                _cleanup_free_ char *path = res_path(kind, argv[i], suffix);
                if (!path)
                        return lg_error_set(err, ENOMEM, "path");
                struct cli_response resp = {0};
                int r = cli_call(method, path, NULL, &resp, err);
                if (r >= 0 && cli_globals.json)
                        cli_print_json_body(&resp);
                else if (r >= 0)
                        printf("%.*s %s %s\n", (int) strlen(kind) - 1, kind, argv[i], done);
                cli_response_done(&resp);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int job_stop(int argc, char **argv, struct lg_error *err) {
        int r = names(argc, argv, job_stop_usage, "job", false, err);
        if (r)
                return r == 1 ? 0 : r;
        return each_name(argc, argv, "jobs", "POST", "stop", "stopped", err);
}

static int job_delete(int argc, char **argv, struct lg_error *err) {
        int r = names(argc, argv, job_delete_usage, "job", false, err);
        if (r)
                return r == 1 ? 0 : r;
        return each_name(argc, argv, "jobs", "DELETE", NULL, "deleted", err);
}

/* ---- job pools ----------------------------------------------------------------- */

static int pool_set(int argc, char **argv, struct lg_error *err) {
        enum { O_READY = 1, O_IMG, O_KIND };
        static const struct option opts[] = {{"ready", required_argument, NULL, O_READY},
                                             {"image", required_argument, NULL, O_IMG},
                                             {"kind", required_argument, NULL, O_KIND},
                                             {"help", no_argument, NULL, 'h'},
                                             CLI_GLOBAL_OPTIONS,
                                             {0, 0, 0, 0}};
        long long ready = -1;
        const char *image = NULL, *kind = "plain";
        int c;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case O_READY:
                        if (cli_parse_uint(optarg, 1000000, &ready) < 0)
                                return cli_usage_error(pool_set_usage, "--ready needs a count, not `%s`", optarg);
                        break;
                case O_IMG: image = optarg; break;
                case O_KIND:
                        if (strcmp(optarg, "plain") && strcmp(optarg, "dask-executor"))
                                return cli_usage_error(pool_set_usage, "--kind is plain or dask-executor, not `%s`",
                                                       optarg);
                        kind = optarg;
                        break;
                case 'h': pool_set_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, pool_set_usage);
                }
        }
        if (optind != argc - 1)
                return cli_usage_error(pool_set_usage, optind >= argc ? "no pool name given" : "too many arguments");
        if (ready < 0)
                return cli_usage_error(pool_set_usage, "--ready N is required");
        const char *name = argv[optind];
        int r = cli_check_name("pool", name, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/v1/jobs/pools/%s", name) < 0)
                return lg_error_set(err, ENOMEM, "path");
        _cleanup_json_ json_t *spec =
                json_pack("{s:I, s:s, s:s}", "ready", (json_int_t) ready, "image", image ?: "", "kind", kind);
        struct cli_response resp = {0};
        r = cli_call("PUT", path, spec, &resp, err);
        if (r >= 0 && cli_globals.json)
                cli_print_json_body(&resp);
        else if (r >= 0)
                printf("job pool %s: %lld %s ready%s%s\n", name, ready, kind, image ? " of " : "", image ?: "");
        cli_response_done(&resp);
        return r;
}

static void pool_row(struct cli_table *t, const json_t *p, bool all) {
        (void) all;
        char cells[6][32];
        const char *keys[] = {"ready", "readyNow", "making", "taken", "missed", "made"};
        const char *row[10];
        row[0] = cli_jstr(p, "name") ?: "-";
        row[1] = cli_jstr(p, "kind") ?: "plain";
        row[2] = cli_jstr(p, "image");
        if (!row[2] || !*row[2])
                row[2] = "(host)";
        for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
                row[3 + i] = cli_jtext(p, keys[i], cells[i], sizeof(cells[i]));
        row[9] = cli_jstr(p, "lastError") ?: "";
        cli_table_add(t, row);
}

static int pool_list(int argc, char **argv, struct lg_error *err) {
        int r = cli_no_options(argc, argv, pool_list_usage);
        if (r)
                return r == 1 ? 0 : r;
        if (optind != argc)
                return cli_usage_error(pool_list_usage, "unexpected argument `%s`", argv[optind]);
        /* READY: what the pool keeps; NOW: ready at this moment. */
        static const char *const head[] = {"NAME",  "KIND",   "IMAGE", "READY", "NOW",
                                           "MAKING", "TAKEN", "MISSED", "MADE", "LAST ERROR"};
        return print_list("/v1/jobs/pools", true, "job pools", "No job pools (legiond --job-warm 0, none set)",
                          pool_row, head, ARRAY_SIZE(head), err);
}

static int pool_delete(int argc, char **argv, struct lg_error *err) {
        int r = cli_no_options(argc, argv, pool_delete_usage);
        if (r)
                return r == 1 ? 0 : r;
        if (optind != argc - 1)
                return cli_usage_error(pool_delete_usage, optind >= argc ? "no pool name given" : "too many arguments");
        if ((r = cli_check_name("pool", argv[optind], err)) < 0)
                return r;
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/v1/jobs/pools/%s", argv[optind]) < 0)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_response resp = {0};
        r = cli_call("DELETE", path, NULL, &resp, err);
        if (r >= 0)
                printf("job pool %s deleted\n", argv[optind]);
        cli_response_done(&resp);
        return r;
}

static int job_pool(int argc, char **argv, struct lg_error *err) {
        (void) err;
        static const struct cli_verb verbs[] = {
                {"set", pool_set}, {"list", pool_list}, {"ls", pool_list}, {"delete", pool_delete}, {"rm", pool_delete},
        };
        return cli_run_group("job pool", verbs, ARRAY_SIZE(verbs), pool_usage, argc, argv);
}

int cmd_job(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"list", job_list},     {"ls", job_list},    {"show", job_show}, {"get", job_show},
                {"logs", job_logs},     {"stop", job_stop},  {"delete", job_delete}, {"rm", job_delete},
                {"pool", job_pool},
        };
        return cli_run_group("job", verbs, ARRAY_SIZE(verbs), job_usage, argc, argv);
}

/* ---- masters ------------------------------------------------------------------------ */

static int deploy_master_run(int argc, char **argv, struct lg_error *err) {
        enum { O_CPU = 1, O_MEM, O_IMG, O_KEEP };
        static const struct option opts[] = {
                {"cpu", required_argument, NULL, O_CPU},         {"memory", required_argument, NULL, O_MEM},
                {"image", required_argument, NULL, O_IMG},       {"keep-alive", required_argument, NULL, O_KEEP},
                {"help", no_argument, NULL, 'h'},                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        _cleanup_json_ json_t *spec = json_pack("{s:s}", "engine", "dask");
        long long v;
        int c;
        while ((c = cli_getopt(argc, argv, ":hn:", opts)) != -1) {
                switch (c) {
                case O_CPU:
                        if (!cores_ok(optarg))
                                return cli_usage_error(deploy_master_usage, "--cpu needs CPUs (1, 0.5, 500m), not `%s`",
                                                       optarg);
                        json_object_set_new(spec, "cpu", json_string(optarg));
                        break;
                case O_MEM:
                        if (!memory_ok(optarg))
                                return cli_usage_error(deploy_master_usage, "--memory needs a size (1g, 512Mi), not `%s`",
                                                       optarg);
                        json_object_set_new(spec, "memory", json_string(optarg));
                        break;
                case O_IMG: json_object_set_new(spec, "image", json_string(optarg)); break;
                case O_KEEP:
                        if (cli_parse_seconds(optarg, 100000000, &v) < 0 || v < 1)
                                return cli_usage_error(deploy_master_usage, "--keep-alive SECONDS (600, 10m), not `%s`",
                                                       optarg);
                        json_object_set_new(spec, "keepAliveSeconds", json_integer(v));
                        break;
                case 'n': take_ns(optarg); break;
                case 'h': deploy_master_usage(stdout); return 0;
                default: return cli_bad_option(c, argv, deploy_master_usage);
                }
        }
        if (optind != argc - 1)
                return cli_usage_error(deploy_master_usage,
                                       optind >= argc ? "no master name given" : "too many arguments");
        const char *name = argv[optind];
        int r = cli_check_name("master", name, err);
        if (r < 0 || (r = cli_check_name("namespace", cli_ns(), err)) < 0)
                return r;
        json_object_set_new(spec, "name", json_string(name));
        _cleanup_free_ char *path = res_path("masters", NULL, NULL);
        if (!path)
                return lg_error_set(err, ENOMEM, "path");
        struct cli_response resp = {0};
        r = cli_call("POST", path, spec, &resp, err);
        if (r >= 0 && cli_globals.json)
                cli_print_json_body(&resp);
        else if (r >= 0)
                printf("master %s deployed (%s%s%s)\n", name, cli_jstr(resp.json, "status.phase") ?: "Starting",
                       cli_jstr(resp.json, "status.address") ? ", " : "", cli_jstr(resp.json, "status.address") ?: "");
        cli_response_done(&resp);
        return r;
}

int cmd_deploy_master(int argc, char **argv) {
        if (cli_take_globals(&argc, argv))
                return 2;
        return cli_run_verb(deploy_master_run, argc, argv);
}

static void master_row(struct cli_table *t, const json_t *m, bool all) {
        char a[32];
        const char *row[] = {cli_jstr(m, "namespace") ?: "-", cli_jstr(m, "name") ?: "-",
                             cli_jstr(m, "spec.engine") ?: "dask", cli_jstr(m, "status.phase") ?: "Starting",
                             cli_jstr(m, "status.address") ?: "-", cli_jstr(m, "status.job") ?: "",
                             age(cli_jstr(m, "createdAt"), a, sizeof(a))};
        cli_table_add(t, all ? row : row + 1);
}

static int master_list(int argc, char **argv, struct lg_error *err) {
        static const char *const head[] = {"NAMESPACE", "NAME", "ENGINE", "PHASE", "ADDRESS", "JOB", "AGE"};
        return list_verb(argc, argv, master_list_usage, "masters", "/v1/masters", master_row, head, ARRAY_SIZE(head),
                         err);
}

static int master_show(int argc, char **argv, struct lg_error *err) {
        int r = names(argc, argv, master_show_usage, "master", true, err);
        if (r)
                return r == 1 ? 0 : r;
        struct cli_response resp = {0};
        r = get_one("masters", argv[optind], &resp, err);
        if (r >= 0 && cli_globals.json) {
                cli_print_json_body(&resp);
        } else if (r >= 0) {
                const json_t *m = resp.json;
                char buf[256], a[32];
                field("name:", cli_jstr(m, "name"));
                field("namespace:", cli_jstr(m, "namespace"));
                field("engine:", cli_jstr(m, "spec.engine"));
                field("image:", cli_jstr(m, "spec.image"));
                field("cpu:", cli_jstr(m, "spec.cpu"));
                field("memory:", cli_jstr(m, "spec.memory"));
                field("keep-alive:", cli_jtext(m, "spec.keepAliveSeconds", buf, sizeof(buf)));
                field("phase:", cli_jstr(m, "status.phase"));
                field("reason:", cli_jstr(m, "status.reason"));
                field("message:", cli_jstr(m, "status.message"));
                field("address:", cli_jstr(m, "status.address"));
                field("job:", cli_jstr(m, "status.job"));
                field("idle since:", cli_jstr(m, "status.idleSince"));
                field("started:", cli_jstr(m, "status.startedAt"));
                const json_t *u = json_object_get(json_object_get(m, "status"), "usage");
                if (u)
                        field("usage:", usage_text(u, buf, sizeof(buf)));
                field("age:", age(cli_jstr(m, "createdAt"), a, sizeof(a)));
        }
        cli_response_done(&resp);
        return r;
}

static int master_delete(int argc, char **argv, struct lg_error *err) {
        int r = names(argc, argv, master_delete_usage, "master", false, err);
        if (r)
                return r == 1 ? 0 : r;
        return each_name(argc, argv, "masters", "DELETE", NULL, "deleted", err);
}

int cmd_master(int argc, char **argv) {
        static const struct cli_verb verbs[] = {
                {"list", master_list}, {"ls", master_list},       {"show", master_show},
                {"get", master_show},  {"delete", master_delete}, {"rm", master_delete},
        };
        return cli_run_group("master", verbs, ARRAY_SIZE(verbs), master_usage, argc, argv);
}
