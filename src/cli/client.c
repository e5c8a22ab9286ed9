/* The legion CLI's HTTP client: see client.h. */
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "cli/client.h"

struct cli_globals cli_globals;

/* ---- global options --------------------------------------------------------- */

bool cli_global_option(int code, const char *arg) {
        switch (code) {
        case CLI_OPT_API: cli_globals.api = arg; return true;
        case CLI_OPT_TOKEN: cli_globals.token = arg; return true;
        case CLI_OPT_NS: cli_globals.ns = arg; return true;
        case CLI_OPT_JSON: cli_globals.json = true; return true;
        default: return false;
        }
}

int cli_take_globals(int *argc, char **argv) {
        static const struct {
                const char *name;
                int code;
                bool arg;
        } g[] = {
                {"--api", CLI_OPT_API, true},      {"--token", CLI_OPT_TOKEN, true},
                {"--ns", CLI_OPT_NS, true},        {"--namespace", CLI_OPT_NS, true},
                {"--json", CLI_OPT_JSON, false},
        };
        while (*argc > 1) {
                const char *a = argv[1];
                size_t i, len = 0;
                for (i = 0; i < ARRAY_SIZE(g); i++) {
                        len = strlen(g[i].name);
                        if (!strncmp(a, g[i].name, len) && (a[len] == '\0' || (g[i].arg && a[len] == '=')))
                                break;
                }
                if (i == ARRAY_SIZE(g))
                        return 0;
                int used = 1;
                const char *val = NULL;
                if (g[i].arg && a[len] == '=') {
                        val = a + len + 1;
                } else if (g[i].arg) {
                        if (*argc < 3) {
                                fprintf(stderr, "legion: option `%s` needs a value\n", g[i].name);
                                return 2;
                        }
                        val = argv[2];
                        used = 2;
                }
                cli_global_option(g[i].code, val);
                memmove(argv + 1, argv + 1 + used, (size_t) (*argc - 1 - used + 1) * sizeof(char *));
                *argc -= used;
        }
        return 0;
}

const char *cli_ns(void) {
        if (cli_globals.ns && *cli_globals.ns)
                return cli_globals.ns;
        const char *e = getenv("LEGION_NAMESPACE");
        return e && *e ? e : "default";
}

const char *cli_api(void) {
        static char buf[2048];
        const char *a = cli_globals.api;
        if (!a || !*a)
                a = getenv("LEGION_API");
        if (!a || !*a)
                a = CLI_DEFAULT_API;
        snprintf(buf, sizeof(buf), "%s", a);
        size_t n = strlen(buf);
        while (n > 0 && buf[n - 1] == '/')
                buf[--n] = '\0';
        return buf;
}

/* The token, and where we looked for it when there is none. */
static char token_file[4200];
static int token_file_errno;

const char *cli_token(void) {
        static char buf[512];
        static bool done;
        if (cli_globals.token && *cli_globals.token)
                return cli_globals.token;
        const char *e = getenv("LEGION_TOKEN");
        if (e && *e)
                return e;
        if (!done) {
                done = true;
                const char *home = getenv("LEGION_HOME");
                snprintf(token_file, sizeof(token_file), "%s/admin.token", home && *home ? home : CLI_DEFAULT_HOME);
                ssize_t n = lg_read_file_at(AT_FDCWD, token_file, buf, sizeof(buf));
                while (n > 0 && strchr(" \t\r\n", buf[n - 1]))
                        buf[--n] = '\0';
                if (n < 0)
                        token_file_errno = (int) -n;
                else if (n == 0)
                        token_file_errno = ENODATA;
        }
        return token_file_errno ? NULL : buf;
}

/* ---- HTTP ------------------------------------------------------------------- */

static CURL *curl;
static char curl_err[CURL_ERROR_SIZE];

static void cleanup_curl(void) {
        curl_easy_cleanup(curl);
        curl_global_cleanup();
}

static int get_curl(struct lg_error *err) {
        if (curl) {
                /* Options go back to defaults; the connection stays open. */
                curl_easy_reset(curl);
                return 0;
        }
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(curl = curl_easy_init()))
                return lg_error_set(err, ENOMEM, "cannot initialize libcurl");
        atexit(cleanup_curl);
        return 0;
}

void cli_response_done(struct cli_response *r) {
        free(r->body);
        json_decref(r->json);
        *r = (struct cli_response){0};
}

struct sink {
        struct cli_response *resp;
        FILE *stream;
        int write_errno;
};

static size_t on_data(char *data, size_t size, size_t nmemb, void *ud) {
        struct sink *s = ud;
        size_t n = size * nmemb;
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (s->stream && status >= 200 && status < 300) {
                if (fwrite(data, 1, n, s->stream) != n || fflush(s->stream) != 0) {
                        s->write_errno = errno ? errno : EIO;
                        return 0;
                }
                if (n) {
                        s->resp->streamed += n;
                        s->resp->last_streamed = data[n - 1];
                }
                return n;
        }
        struct cli_response *r = s->resp;
        char *p = realloc(r->body, r->len + n + 1);
        if (!p) {
                s->write_errno = ENOMEM;
                return 0;
        }
        memcpy(p + r->len, data, n);
        r->body = p;
        r->len += n;
        p[r->len] = '\0';
        return n;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud) {
        int fd = *(int *) ud;
        for (;;) {
                ssize_t n = read(fd, buf, size * nmemb);
                if (n >= 0)
                        return (size_t) n;
                if (errno != EINTR)
                        return CURL_READFUNC_ABORT;
        }
}

struct progress {
        uint64_t last_ns;
        bool shown, sent;
};

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
        struct progress *p = ud;
        (void) dltotal;
        (void) dlnow;
        uint64_t now = lg_now_ns();
        if (ultotal <= 0 || p->sent || (now - p->last_ns < 100000000ull && ulnow < ultotal))
                return 0;
        p->sent = ulnow >= ultotal;
        p->last_ns = now;
        char a[32], b[32];
        fprintf(stderr, "\r\033[Kuploading %s of %s (%d%%)", cli_fmt_bytes((uint64_t) ulnow, a, sizeof(a)),
                cli_fmt_bytes((uint64_t) ultotal, b, sizeof(b)), (int) (ulnow * 100 / ultotal));
        if (ulnow >= ultotal)
                fputs(", waiting for legiond", stderr);
        fflush(stderr);
        p->shown = true;
        return 0;
}

static bool has_header(const char *const *headers, const char *name) {
        size_t n = strlen(name);
        for (size_t i = 0; headers && headers[i]; i++)
                if (!strncasecmp(headers[i], name, n) && headers[i][n] == ':')
                        return true;
        return false;
}

static int transport_error(CURLcode rc, const struct cli_request *rq, const struct sink *s, struct lg_error *err) {
        const char *why = curl_err[0] ? curl_err : curl_easy_strerror(rc);
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        curl_off_t connect_us = 0;
        curl_easy_getinfo(curl, CURLINFO_CONNECT_TIME_T, &connect_us);
        switch (rc) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return lg_error_setm(err, ECONNREFUSED, "cannot reach legiond at %s: %s (is it running? make run)",
                                    cli_api(), why);
        case CURLE_OPERATION_TIMEDOUT:
                if (connect_us == 0 && status == 0)
                        return lg_error_setm(err, ETIMEDOUT,
                                            "cannot reach legiond at %s: %s (is it running? make run)", cli_api(),
                                            why);
                return lg_error_setm(err, ETIMEDOUT, "%s %s: no answer within %ld s", rq->method, rq->path,
                                 rq->timeout_s > 0 ? rq->timeout_s : 120);
        case CURLE_WRITE_ERROR:
                if (s->write_errno)
                        return lg_error_set(err, s->write_errno, "write the response");
                break;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
                return lg_error_setm(err, EINVAL, "invalid API URL `%s`: %s", cli_api(), why);
        case CURLE_GOT_NOTHING:
                return lg_error_setm(err, ECONNRESET, "%s %s: legiond closed the connection without answering", rq->method,
                                 rq->path);
        case CURLE_ABORTED_BY_CALLBACK:
        case CURLE_READ_ERROR:
                return lg_error_setm(err, EIO, "read the request body: %s", why);
        default: break;
        }
        return lg_error_setm(err, EIO, "%s %s%s: %s", rq->method, cli_api(), rq->path, why);
}

int cli_request(const struct cli_request *rq_in, struct cli_response *resp, struct lg_error *err) {
        struct cli_request rq = *rq_in;
        bool has_body = rq.body || rq.body_fd > 0;
        if (!rq.method)
                rq.method = has_body ? "POST" : "GET";
        *resp = (struct cli_response){0};
        int r = get_curl(err);
        if (r < 0)
                return r;

        _cleanup_free_ char *url = NULL;
        if (asprintf(&url, "%s%s", cli_api(), rq.path) < 0)
                return lg_error_set(err, ENOMEM, "URL");
        curl_err[0] = '\0';
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, rq.timeout_s < 0 ? 120L : rq.timeout_s);
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "legion-cli/0.1");
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");

        struct curl_slist *hl = NULL;
        char auth[600];
        const char *tok = cli_token();
        if (tok && !has_header(rq.headers, "Authorization")) {
                snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
                hl = curl_slist_append(hl, auth);
        }
        /* No `Expect: 100-continue` round trip before large bodies. */
        hl = curl_slist_append(hl, "Expect:");
        char ctype[256];
        if (has_body && !has_header(rq.headers, "Content-Type")) {
                snprintf(ctype, sizeof(ctype), "Content-Type: %s",
                         rq.content_type ? rq.content_type : "application/octet-stream");
                hl = curl_slist_append(hl, ctype);
        }
        for (size_t i = 0; rq.headers && rq.headers[i]; i++)
                hl = curl_slist_append(hl, rq.headers[i]);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);

        int fd = rq.body_fd;
        if (rq.body_fd > 0) {
                curl_easy_setopt(curl, CURLOPT_POST, 1L);
                curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
                curl_easy_setopt(curl, CURLOPT_READDATA, &fd);
                curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) rq.body_len);
        } else if (rq.body) {
                curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) rq.body_len);
                curl_easy_setopt(curl, CURLOPT_POSTFIELDS, rq.body);
        }
        if (!strcmp(rq.method, "HEAD"))
                curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
        else if (strcmp(rq.method, has_body ? "POST" : "GET"))
                curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, rq.method);

        struct sink sink = {.resp = resp, .stream = rq.stream_2xx};
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);

        struct progress prog = {0};
        if (rq.progress && isatty(STDERR_FILENO)) {
                curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
                curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
                curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &prog);
        }

        CURLcode rc = curl_easy_perform(curl);
        if (prog.shown) {
                fputs("\r\033[K", stderr);
                fflush(stderr);
        }
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
        curl_slist_free_all(hl);
        if (rc != CURLE_OK) {
                r = transport_error(rc, &rq, &sink, err);
                cli_response_done(resp);
                return r;
        }
        return 0;
}

int cli_http_error(const struct cli_response *resp, struct lg_error *err) {
        const char *msg = NULL;
        json_t *doc = resp->json ? json_incref(resp->json) : NULL;
        if (!doc && resp->body)
                doc = json_loadb(resp->body, resp->len, 0, NULL);
        if (doc)
                msg = cli_jstr(doc, "error.message");
        char line[400] = "";
        if (!msg && resp->body && resp->len) {
                size_t n = strcspn(resp->body, "\r\n");
                snprintf(line, sizeof(line), "HTTP %ld: %.*s", resp->status, (int) (n < 300 ? n : 300), resp->body);
                msg = line;
        }
        if (!msg) {
                snprintf(line, sizeof(line), "HTTP %ld", resp->status);
                msg = line;
        }
        if (resp->status == 401 && !cli_token())
                lg_error_setm(err, EACCES,
                             "%s; no token: use --token, set LEGION_TOKEN, or set LEGION_HOME to legiond's "
                             "home (cannot read %s: %s)",
                             msg, token_file, strerror(token_file_errno));
        else
                lg_error_setm(err, EIO, "%s", msg);
        json_decref(doc);
        return -EIO;
}

int cli_call(const char *method, const char *path, json_t *body, struct cli_response *resp,
             struct lg_error *err) {
        _cleanup_free_ char *text = NULL;
        if (body && !(text = json_dumps(body, JSON_COMPACT)))
                return lg_error_set(err, ENOMEM, "encode the request");
        struct cli_request rq = {
                .method = method,
                .path = path,
                .body = text,
                .body_len = text ? strlen(text) : 0,
                .content_type = "application/json",
                .timeout_s = -1,
        };
        int r = cli_request(&rq, resp, err);
        if (r < 0)
                return r;
        if (resp->status < 200 || resp->status >= 300) {
                r = cli_http_error(resp, err);
                return r;
        }
        if (resp->len) {
                json_error_t je;
                resp->json = json_loadb(resp->body, resp->len, 0, &je);
                if (!resp->json)
                        return lg_error_setm(err, EBADMSG, "%s %s: legiond sent malformed JSON: %s",
                                         method ? method : "GET", path, je.text);
        }
        return 0;
}

void cli_print_json_body(const struct cli_response *resp) {
        if (!resp->body || !resp->len)
                return;
        fwrite(resp->body, 1, resp->len, stdout);
        if (resp->body[resp->len - 1] != '\n')
                putchar('\n');
}

int cli_check_name(const char *what, const char *name, struct lg_error *err) {
        size_t n = strlen(name);
        bool ok = n >= 1 && n <= 253 && strcmp(name, ".") && strcmp(name, "..");
        for (size_t i = 0; ok && i < n; i++)
                ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
                     (name[i] >= '0' && name[i] <= '9') || name[i] == '-' || name[i] == '.' || name[i] == '_';
        if (!ok)
                return lg_error_setm(err, EINVAL,
                                 "invalid %s name `%s`: 1-63 of [a-z0-9-], starting and ending with a letter or digit",
                                 what, name);
        return 0;
}

char *cli_url_escape(const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(s);
        char *out = malloc(3 * n + 1), *o = out;
        if (!out)
                return NULL;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                    *p == '.' || *p == '_' || *p == '~') {
                        *o++ = (char) *p;
                } else {
                        *o++ = '%';
                        *o++ = hex[*p >> 4];
                        *o++ = hex[*p & 15];
                }
        }
        *o = '\0';
        return out;
}

/* ---- JSON accessors ------------------------------------------------------------ */

static const json_t *jget(const json_t *obj, const char *path) {
        char key[128];
        while (obj && *path) {
                size_t n = strcspn(path, ".");
                if (n >= sizeof(key))
                        return NULL;
                memcpy(key, path, n);
                key[n] = '\0';
                obj = json_object_get(obj, key);
                path += n + (path[n] == '.');
        }
        return obj;
}

const char *cli_jstr(const json_t *obj, const char *path) { return json_string_value(jget(obj, path)); }

long long cli_jint(const json_t *obj, const char *path, long long def) {
        const json_t *v = jget(obj, path);
        return json_is_integer(v) ? json_integer_value(v) : def;
}

double cli_jnum(const json_t *obj, const char *path, double def) {
        const json_t *v = jget(obj, path);
        return json_is_number(v) ? json_number_value(v) : def;
}

const char *cli_jtext(const json_t *obj, const char *path, char *buf, size_t cap) {
        const json_t *v = jget(obj, path);
        if (json_is_string(v))
                snprintf(buf, cap, "%s", json_string_value(v));
        else if (json_is_integer(v))
                snprintf(buf, cap, "%lld", (long long) json_integer_value(v));
        else if (json_is_real(v))
                snprintf(buf, cap, "%g", json_real_value(v));
        else if (json_is_boolean(v))
                snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
        else
                snprintf(buf, cap, "-");
        return buf;
}

json_t *cli_egress_json(const char *arg) {
        if (!strcmp(arg, "on") || !strcmp(arg, "off"))
                return json_string(arg);
        /* What an allowlist can hold; anything else is a typo, said at
         * once rather than by legiond. */
        if (!*arg || strspn(arg, "0123456789./:-, ") != strlen(arg))
                return NULL;
        json_t *allow = json_array();
        for (const char *p = arg; allow;) {
                const char *comma = strchr(p, ',');
                const char *end = comma ? comma : p + strlen(p);
                while (p < end && *p == ' ')
                        p++;
                const char *q = end;
                while (q > p && q[-1] == ' ')
                        q--;
                json_array_append_new(allow, json_stringn(p, (size_t) (q - p)));
                if (!comma)
                        break;
                p = comma + 1;
        }
        return allow ? json_pack("{s:o}", "allow", allow) : NULL;
}

const char *cli_egress_text(const json_t *v, const char *dflt, char *buf, size_t cap) {
        if (!v)
                snprintf(buf, cap, "%s", dflt);
        else if (json_is_boolean(v))
                snprintf(buf, cap, "%s", json_is_true(v) ? "on" : "off");
        else if (json_is_string(v))
                snprintf(buf, cap, "%s", json_string_value(v));
        else {
                size_t at = (size_t) snprintf(buf, cap, "allow");
                size_t i;
                json_t *e;
                json_array_foreach(json_object_get(v, "allow"), i, e) {
                        if (at < cap)
                                at += (size_t) snprintf(buf + at, cap - at, "%s%s", i ? ", " : " ",
                                                        json_string_value(e) ?: "?");
                }
        }
        return buf;
}

const char *cli_fmt_bytes(uint64_t n, char *buf, size_t cap) {
        static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        double v = (double) n;
        size_t u = 0;
        while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, cap, "%llu B", (unsigned long long) n);
        else
                snprintf(buf, cap, "%.1f %s", v, units[u]);
        return buf;
}

/* ---- tables ------------------------------------------------------------------- */

struct cli_table {
        size_t ncols, nrows, cap;
        char **cells; /* row-major, row 0 the headers */
};

struct cli_table *cli_table_new(size_t ncols, const char *const *headers) {
        struct cli_table *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->ncols = ncols;
        cli_table_add(t, headers);
        return t;
}

void cli_table_add(struct cli_table *t, const char *const *cells) {
        if (!t)
                return;
        if (t->nrows == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 16;
                char **p = realloc(t->cells, cap * t->ncols * sizeof(char *));
                if (!p)
                        return;
                t->cells = p;
                t->cap = cap;
        }
        for (size_t i = 0; i < t->ncols; i++)
                t->cells[t->nrows * t->ncols + i] = strdup(cells[i] ? cells[i] : "-");
        t->nrows++;
}

void cli_table_print(struct cli_table *t, FILE *f) {
        if (!t)
                return;
        size_t w[32] = {0};
        size_t nc = t->ncols < ARRAY_SIZE(w) ? t->ncols : ARRAY_SIZE(w);
        for (size_t r = 0; r < t->nrows; r++)
                for (size_t c = 0; c < nc; c++) {
                        const char *s = t->cells[r * t->ncols + c];
                        size_t n = s ? strlen(s) : 0;
                        if (n > w[c])
                                w[c] = n;
                }
        for (size_t r = 0; r < t->nrows; r++) {
                for (size_t c = 0; c < nc; c++) {
                        const char *s = t->cells[r * t->ncols + c];
                        if (c + 1 == nc)
                                fprintf(f, "%s\n", s ? s : "");
                        else
                                fprintf(f, "%-*s  ", (int) w[c], s ? s : "");
                }
        }
}

void cli_table_free(struct cli_table *t) {
        if (!t)
                return;
        for (size_t i = 0; i < t->nrows * t->ncols; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
}

/* ---- arguments and dispatch ------------------------------------------------------ */

int cli_parse_uint(const char *s, long long max, long long *ret) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s || *end || v < 0 || v > max || *s == '-' || *s == '+' || *s == ' ')
                return -EINVAL;
        *ret = v;
        return 0;
}

int cli_parse_seconds(const char *s, long long max, long long *ret) {
        /* kubectl's forms: "30", "30s", "2m", "1h". */
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10), unit = 1;
        if (*end == 'h' && end[1] == '\0')
                unit = 3600, end++;
        else if (*end == 'm' && end[1] == '\0')
                unit = 60, end++;
        else if (*end == 's' && end[1] == '\0')
                end++;
        if (errno || end == s || *end || v < 0 || v > max / unit || *s == '-' || *s == '+' || *s == ' ')
                return -EINVAL;
        *ret = v * unit;
        return 0;
}

int cli_usage_error(void (*usage)(FILE *), const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fputs("legion: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        /* The synopsis (the usage's first paragraph), not all the options. */
        char *text = NULL;
        size_t len = 0;
        FILE *m = usage ? open_memstream(&text, &len) : NULL;
        if (m) {
                usage(m);
                fclose(m);
                char *end = text ? strstr(text, "\n\n") : NULL;
                if (end)
                        end[1] = '\0';
                fprintf(stderr, "%sRun with --help for details.\n", text ? text : "");
                free(text);
        }
        return 2;
}

int cli_bad_option(int c, char **argv, void (*usage)(FILE *)) {
        const char *arg = optind > 0 ? argv[optind - 1] : "?";
        if (c == ':')
                return cli_usage_error(usage, "option `%s` needs a value", arg);
        if (optopt && optopt < 256)
                return cli_usage_error(usage, "unknown option `-%c`", optopt);
        return cli_usage_error(usage, "unknown option `%s`", arg);
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts) {
        opterr = 0;
        for (;;) {
                int c = getopt_long(argc, argv, shortopts, longopts, NULL);
                if (c == -1 || !cli_global_option(c, optarg))
                        return c;
        }
}

int cli_no_options(int argc, char **argv, void (*usage)(FILE *)) {
        static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, CLI_GLOBAL_OPTIONS, {0, 0, 0, 0}};
        int c = cli_getopt(argc, argv, ":h", opts);
        if (c == -1)
                return 0;
        if (c != 'h')
                return cli_bad_option(c, argv, usage);
        usage(stdout);
        return 1;
}

/* ---- input files ------------------------------------------------------------------ */

int cli_read_fd(int fd, const char *file, size_t max_mib, char **ret, size_t *len, struct lg_error *err) {
        size_t cap = 1 << 16, n = 0;
        _cleanup_free_ char *buf = malloc(cap);
        for (;;) {
                if (!buf)
                        return lg_error_set(err, ENOMEM, "read `%s`", file);
                ssize_t k = read(fd, buf + n, cap - n - 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return lg_error_set(err, errno, "read `%s`", file);
                if (k == 0)
                        break;
                n += (size_t) k;
                if (max_mib && n > max_mib << 20)
                        return lg_error_setm(err, EFBIG, "`%s` is larger than %zu MiB", file, max_mib);
                if (n + 1 == cap) {
                        char *p = realloc(buf, cap *= 2);
                        if (!p)
                                return lg_error_set(err, ENOMEM, "read `%s`", file);
                        buf = p;
                }
        }
        buf[n] = '\0';
        *len = n;
        *ret = TAKE_PTR(buf);
        return 0;
}

int cli_read_file(const char *file, size_t max_mib, char **ret, size_t *len, struct lg_error *err) {
        _cleanup_close_ int fd = strcmp(file, "-") ? open(file, O_RDONLY | O_CLOEXEC) : dup(STDIN_FILENO);
        if (fd < 0)
                return lg_error_set(err, errno, "read `%s`", file);
        return cli_read_fd(fd, file, max_mib, ret, len, err);
}

/* ---- dispatch --------------------------------------------------------------------- */

int cli_run_verb(int (*run)(int argc, char **argv, struct lg_error *err), int argc, char **argv) {
        struct lg_error err = {0};
        optind = 0;
        int r = run(argc, argv, &err);
        fflush(stdout);
        if (r < 0) {
                fprintf(stderr, "legion: %s\n", err.msg[0] ? err.msg : strerror(-r));
                return 1;
        }
        return r;
}

int cli_run_group(const char *group, const struct cli_verb *verbs, size_t n, void (*usage)(FILE *), int argc,
                  char **argv) {
        if (cli_take_globals(&argc, argv))
                return 2;
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
                usage(stdout);
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                if (!strcmp(argv[1], verbs[i].name))
                        return cli_run_verb(verbs[i].run, argc - 1, argv + 1);
        fprintf(stderr, "legion: unknown command `%s %s`\n", group, argv[1]);
        usage(stderr);
        return 2;
}
