/* NDJSON answers of legiond (image import and pull, app deploys and pool
 * group puts that pull an image): asked for with `Accept:
 * application/x-ndjson`, their progress lines {"phase","what","done",
 * "total"} are shown on stderr as they come -- a bar rewritten in place
 * when stderr is a terminal (after libcurl's own upload progress for an
 * import), otherwise one line per phase and blob -- and the last line
 * carries the result under its key, or {"error": {...}}. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/client.h"

struct stream {
        bool tty;
        bool shown;          /* a progress line is on the terminal */
        char last[160];      /* phase and what of the last plain line */
        struct cli_lines lines;
        const char *key;     /* of the result line */
        const char *announce; /* said before the first progress line; may be NULL */
        json_t *result, *error;
        bool bad;            /* a line that is not JSON */
};

static void show_progress(struct stream *s, const json_t *doc) {
        if (s->announce) {
                fprintf(stderr, "%s\n", s->announce);
                s->announce = NULL;
        }
        const char *phase = cli_jstr(doc, "phase") ?: "";
        const char *what = cli_jstr(doc, "what") ?: "";
        char shortw[16];
        if (!strncmp(what, "sha256:", 7) && strlen(what) > 19) { /* digests: 12 hex digits say enough */
                snprintf(shortw, sizeof(shortw), "%.12s", what + 7);
                what = shortw;
        }
        long long done = cli_jint(doc, "done", 0), total = cli_jint(doc, "total", 0);
        if (s->tty) {
                char a[32], b[32];
                fprintf(stderr, "\r\033[K%s %s", phase, what);
                if (total > 0)
                        fprintf(stderr, " %s / %s (%d%%)", cli_fmt_bytes((uint64_t) done, a, sizeof(a)),
                                cli_fmt_bytes((uint64_t) total, b, sizeof(b)),
                                (int) (done >= total ? 100 : done * 100 / total));
                else if (done > 0)
                        fprintf(stderr, " %s", cli_fmt_bytes((uint64_t) done, a, sizeof(a)));
                fflush(stderr);
                s->shown = true;
                return;
        }
        char key[160];
        snprintf(key, sizeof(key), "%s %s", phase, what);
        if (!strcmp(key, s->last))
                return;
        snprintf(s->last, sizeof(s->last), "%s", key);
        fprintf(stderr, "%s\n", key);
}

static void stream_line(void *ud, const char *line, size_t n) {
        struct stream *s = ud;
        if (n == 0)
                return;
        json_t *doc = json_loadb(line, n, 0, NULL);
        if (!json_is_object(doc)) {
                s->bad = true;
        } else if (json_object_get(doc, s->key)) {
                json_decref(s->result);
                s->result = json_incref(json_object_get(doc, s->key));
        } else if (json_object_get(doc, "error")) {
                json_decref(s->error);
                s->error = json_incref(json_object_get(doc, "error"));
        } else if (json_object_get(doc, "phase")) {
                show_progress(s, doc);
        }
        json_decref(doc);
}

static ssize_t lines_write(void *cookie, const char *buf, size_t size) {
        struct cli_lines *l = cookie;
        char *p = realloc(l->buf, l->len + size + 1);
        if (!p)
                return -1;
        l->buf = p;
        memcpy(p + l->len, buf, size);
        l->len += size;
        size_t start = 0;
        for (size_t i = 0; i < l->len; i++)
                if (p[i] == '\n') {
                        l->on_line(l->ud, p + start, i - start);
                        start = i + 1;
                }
        memmove(p, p + start, l->len - start);
        l->len -= start;
        return (ssize_t) size;
}

static int lines_close(void *cookie) {
        struct cli_lines *l = cookie;
        if (l->len) /* a last line without its newline */
                l->on_line(l->ud, l->buf, l->len);
        free(l->buf);
        l->buf = NULL;
        l->len = 0;
        return 0;
}

FILE *cli_lines_open(struct cli_lines *l) {
        static const cookie_io_functions_t io = {.write = lines_write, .close = lines_close};
        FILE *f = fopencookie(l, "w", io);
        if (f)
                setvbuf(f, NULL, _IONBF, 0);
        return f;
}

static void stream_done(struct stream *s) {
        if (s->shown) {
                fputs("\r\033[K", stderr);
                fflush(stderr);
        }
        json_decref(s->result);
        json_decref(s->error);
}

int cli_ndjson_request(struct cli_request *rq, const char *key, const char *verb, const char *announce,
                       json_t **result, struct lg_error *err) {
        struct stream s = {.tty = isatty(STDERR_FILENO), .key = key, .announce = announce};
        s.lines = (struct cli_lines){.on_line = stream_line, .ud = &s};
        FILE *f = cli_lines_open(&s.lines);
        if (!f)
                return lg_error_set(err, errno, "stream");
        static const char *const hdrs[] = {"Accept: application/x-ndjson", NULL};
        rq->headers = hdrs;
        rq->stream_2xx = f;
        rq->timeout_s = 0; /* pulls and imports of large images take long */
        struct cli_response resp = {0};
        int r = cli_request(rq, &resp, err);
        fclose(f); /* a last line without its newline is read now */
        if (r >= 0 && (resp.status < 200 || resp.status >= 300))
                r = cli_http_error(&resp, err);
        if (s.shown) {
                fputs("\r\033[K", stderr);
                fflush(stderr);
                s.shown = false;
        }
        if (r >= 0 && s.error)
                r = lg_error_setm(err, EIO, "%s", cli_jstr(s.error, "message") ?: "failed");
        else if (r >= 0 && !s.result)
                r = lg_error_setm(err, EPROTO, "legiond ended the %s without a result%s", verb,
                                  s.bad ? " (malformed progress stream)" : "");
        if (r >= 0) {
                *result = s.result;
                s.result = NULL;
        }
        cli_response_done(&resp);
        stream_done(&s);
        return r;
}
