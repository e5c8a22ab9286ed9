/* The legion CLI's side of legiond's HTTP API (docs/api.md): global options,
 * one reused libcurl handle, JSON calls with the API's error shape turned
 * into one-line messages, and small output helpers (tables, sizes).
 *
 * Verbs take (argc, argv) starting at their own name and a struct lg_error;
 * they return an exit status (0, or 2 after printing a usage error) or a
 * negative errno with err filled, which the group prints once as
 * `legion: <message>` and turns into exit status 1. */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "common/util.h"

#define CLI_DEFAULT_API "http://127.0.0.1:7070"
#define CLI_DEFAULT_HOME "./var/legion"

/* --api, --token, --ns, --json: accepted before the group, between group
 * and verb, and among a verb's own options (put CLI_GLOBAL_OPTIONS in its
 * getopt table and pass unknown codes to cli_global_option()). */
struct cli_globals {
        const char *api;   /* --api, else $LEGION_API, else CLI_DEFAULT_API */
        const char *token; /* --token, else $LEGION_TOKEN, else $LEGION_HOME/admin.token */
        const char *ns;    /* --ns, else $LEGION_NAMESPACE, else "default" */
        bool json;         /* print the API's JSON rather than tables */
};
extern struct cli_globals cli_globals;

enum { CLI_OPT_API = 1000, CLI_OPT_TOKEN, CLI_OPT_NS, CLI_OPT_JSON };
#define CLI_GLOBAL_OPTIONS                                                                        \
        {"api", required_argument, NULL, CLI_OPT_API}, {"token", required_argument, NULL, CLI_OPT_TOKEN}, \
        {"ns", required_argument, NULL, CLI_OPT_NS}, {"namespace", required_argument, NULL, CLI_OPT_NS},   \
        {"json", no_argument, NULL, CLI_OPT_JSON}

#define CLI_GLOBAL_HELP                                                                           \
        "\nglobal options (anywhere on the command line):\n"                                      \
        "  --api URL      legiond's address (env LEGION_API, default " CLI_DEFAULT_API ")\n"        \
        "  --token T      API token (env LEGION_TOKEN, else $LEGION_HOME/admin.token;\n"          \
        "                 LEGION_HOME defaults to " CLI_DEFAULT_HOME ")\n"                         \
        "  --ns NS        namespace (env LEGION_NAMESPACE, default `default`)\n"                    \
        "  --json         print the API's JSON instead of tables\n"

/* Errors whose message says it all (the API's, curl's) are made with
 * lg_error_setm() (common/util.h). */

/* Handle a getopt code from CLI_GLOBAL_OPTIONS; false for any other code. */
bool cli_global_option(int code, const char *arg);
/* Take global options at argv[1], argv[2], ... out of argv (shifting the
 * rest down). Returns 0, or 2 after printing a usage error. */
int cli_take_globals(int *argc, char **argv);

/* The effective namespace and API base URL (no trailing slash). */
const char *cli_ns(void);
const char *cli_api(void);
/* The effective token (--token, $LEGION_TOKEN, $LEGION_HOME/admin.token),
 * NULL when there is none. */
const char *cli_token(void);

/* A response: status, and the body (NUL-terminated) unless it was streamed. */
struct cli_response {
        long status;
        char *body;
        size_t len;
        json_t *json; /* the body parsed by cli_call(), if it was JSON */
        size_t streamed;    /* bytes written to stream_2xx */
        char last_streamed; /* the last of them */
};
void cli_response_done(struct cli_response *r);

struct cli_request {
        const char *method; /* default GET, or POST with a body */
        const char *path;   /* appended to the API URL: "/v1/..." */
        const void *body;   /* a body from memory ... */
        size_t body_len;
        int body_fd;         /* ... or from a file (> 0; 0 means none) of body_len bytes */
        bool progress;       /* upload progress on stderr, when it is a terminal */
        const char *content_type;
        const char *const *headers; /* extra "K: V" lines, NULL-terminated */
        FILE *stream_2xx;           /* a 2xx body goes here as it arrives */
        long timeout_s;             /* whole request; 0: none; -1: the default for API calls */
};

/* One HTTP exchange. 0 when an answer came (whatever its status), or a
 * negative errno with err saying why not (legiond unreachable, ...). */
int cli_request(const struct cli_request *rq, struct cli_response *resp, struct lg_error *err);

/* A JSON API call: body (may be NULL) is sent as JSON; on a 2xx answer
 * resp->json holds the parsed body (NULL when empty) and 0 is returned;
 * any other status fills err with the API's message and returns -EIO
 * (resp->status tells which). */
int cli_call(const char *method, const char *path, json_t *body, struct cli_response *resp,
             struct lg_error *err);

/* A request whose 2xx answer is legiond's NDJSON stream (ndjson.c): its
 * progress shown on stderr (announce, when not NULL, said before the first
 * progress line), then 0 with *result the last line's `key` object (the
 * caller's), or the stream's error (-EIO), or -EPROTO when it ended
 * without a result (verb names the operation). Sets rq's Accept header,
 * stream and timeout (none). */
int cli_ndjson_request(struct cli_request *rq, const char *key, const char *verb, const char *announce,
                       json_t **result, struct lg_error *err);

/* A FILE (unbuffered, for stream_2xx) whose bytes are cut into lines:
 * on_line(ud, line, n) for each, without its newline; a last line without
 * one at fclose. l must outlive the FILE. */
struct cli_lines {
        void (*on_line)(void *ud, const char *line, size_t n);
        void *ud;
        char *buf; /* a partial line */
        size_t len;
};
FILE *cli_lines_open(struct cli_lines *l);

/* The message for a non-2xx response: the API's error.message, or the body's
 * first line, or "HTTP <status>"; with a hint for 401 when no token was found. */
int cli_http_error(const struct cli_response *resp, struct lg_error *err);

/* Print resp's body as the API sent it (--json). */
void cli_print_json_body(const struct cli_response *resp);

/* Names go into URL paths: reject anything but [A-Za-z0-9._-] (1..253
 * characters) early; legiond checks the exact rules. */
int cli_check_name(const char *what, const char *name, struct lg_error *err);

/* A query parameter value escaped for a URL (malloc'd; NULL on ENOMEM). */
char *cli_url_escape(const char *s);

/* Accessors for parsed documents, tolerant of missing fields. */
const char *cli_jstr(const json_t *obj, const char *path);             /* "a.b.c"; NULL if absent */
long long cli_jint(const json_t *obj, const char *path, long long def); /* integers */
double cli_jnum(const json_t *obj, const char *path, double def);       /* integers or reals */
/* A field as text ("-" when missing): strings as they are, numbers formatted. */
const char *cli_jtext(const json_t *obj, const char *path, char *buf, size_t cap);

/* "1.5 MiB" */
const char *cli_fmt_bytes(uint64_t n, char *buf, size_t cap);

/* An --egress flag as the API's value: "on" and "off" as strings, a
 * comma-separated "CIDR[:PORT[-PORT]],..." as {"allow": [...]} (legiond
 * checks the entries). NULL when arg is none of these. */
json_t *cli_egress_json(const char *arg);
/* An egress value as text: "on", "off", "allow 198.51.100.0/24, ..."
 * (true and false as on and off; dflt when v is NULL). */
const char *cli_egress_text(const json_t *v, const char *dflt, char *buf, size_t cap);

/* A table printed with aligned columns; cells are copied. */
struct cli_table;
struct cli_table *cli_table_new(size_t ncols, const char *const *headers);
void cli_table_add(struct cli_table *t, const char *const *cells);
void cli_table_print(struct cli_table *t, FILE *f);
void cli_table_free(struct cli_table *t);

/* Parse a non-negative decimal integer argument: 0, or -EINVAL. */
int cli_parse_uint(const char *s, long long max, long long *ret);
/* A duration in whole seconds: "90", "90s", "10m", "2h" (at most max
 * seconds): 0, or -EINVAL. */
int cli_parse_seconds(const char *s, long long max, long long *ret);

/* For verbs with no options of their own: parse --help and the global
 * options. Returns 0 (operands start at argv[optind]), 1 after printing the
 * usage for --help, or 2 after a usage error. */
int cli_no_options(int argc, char **argv, void (*usage)(FILE *));

/* All of fd in memory, NUL-terminated (file names it in messages); more
 * than max_mib MiB (0: no limit) fails with EFBIG. */
int cli_read_fd(int fd, const char *file, size_t max_mib, char **ret, size_t *len, struct lg_error *err);
/* The same for a file by name, `-` meaning stdin. */
int cli_read_file(const char *file, size_t max_mib, char **ret, size_t *len, struct lg_error *err);

/* Print a usage error for a verb: "legion: <msg>" and the usage; returns 2. */
int cli_usage_error(void (*usage)(FILE *), const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for what getopt_long() returned ('?' or ':'; optstring must start
 * with ':' and opterr be 0, as cli_getopt() arranges). */
int cli_bad_option(int c, char **argv, void (*usage)(FILE *));
/* getopt_long() with our settings: GNU permutation (options may follow the
 * operands), no getopt messages of its own; global options are handled here
 * and never returned. Reset optind to 0 before the first call. */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);

/* Run a verb group: dispatch argv[1] to its verb, with `--help` and global
 * options between group and verb, and print a verb's error once. */
struct cli_verb {
        const char *name;
        int (*run)(int argc, char **argv, struct lg_error *err);
};
int cli_run_group(const char *group, const struct cli_verb *verbs, size_t n, void (*usage)(FILE *), int argc,
                  char **argv);
/* Run one verb and print its error (a group of one, like `legion invoke`). */
int cli_run_verb(int (*run)(int argc, char **argv, struct lg_error *err), int argc, char **argv);
