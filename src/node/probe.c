/* Readiness probe of an image instance's server (probe.h): one TCP try
 * at a time, on a timer. A try is CONNECTING (and, with a path, READING
 * the status line); it ends on an answer, an error, EOF or its own
 * deadline by closing the TCP handle, and the next one is scheduled once
 * the handle is closed (libuv cannot reuse it before). The probe is
 * freed when its callback ran (or it was cancelled) and both handles are
 * closed. */
#include <arpa/inet.h>
#include <string.h>

#include "node/probe.h"

enum { PT_NONE, PT_OPEN, PT_CLOSING };

struct lg_probe {
        uv_loop_t *loop;
        uv_timer_t timer;          /* next try, or the current try's deadline */
        uv_tcp_t tcp;
        uv_connect_t conn;
        uv_write_t wr;
        int tcp_state;
        bool trying;               /* a try is under way (tcp open) */
        bool finished;             /* callback ran or cancelled: tear down */
        unsigned handles;          /* open handles: the timer, the tcp */
        struct sockaddr_in addr;
        unsigned port;
        char *path, *request;
        uint64_t start, timeout_ms, interval_ms, attempt_ms;
        uint64_t gap_ms;           /* before the next try: 1 ms, doubling up to interval_ms */
        bool connected;            /* some try was accepted */
        int last_status;           /* > 0 the last answer's status; -1 a try got no HTTP answer; 0 none */
        char line[512];
        size_t len;
        lg_probe_cb cb;
        void *userdata;
};

/* The pause before the next try. Most servers open their port within
 * tens of milliseconds: a fixed interval_ms would add up to that much to
 * every cold start (bench/apps measured it), so the first tries follow
 * 1 ms apart and the pause doubles up to interval_ms, which bounds the
 * tries a server slow to start gets. */
static uint64_t next_gap(lg_probe *p) {
        uint64_t gap = p->gap_ms;
        p->gap_ms = gap * 2 < p->interval_ms ? gap * 2 : p->interval_ms;
        return gap;
}

void lg_probe_fmt_ms(uint64_t ms, char *buf, size_t cap) {
        if (ms < 1000)
                snprintf(buf, cap, "%llu ms", (unsigned long long) ms);
        else if (ms % 1000 == 0)
                snprintf(buf, cap, "%llu s", (unsigned long long) (ms / 1000));
        else
                snprintf(buf, cap, "%.1f s", (double) ms / 1000.0);
}

int lg_probe_parse_status(const char *s, size_t len) {
        /* "HTTP/d.d SP ddd" then the end, a space or CR. */
        if (len < 12 || memcmp(s, "HTTP/", 5) || s[5] < '0' || s[5] > '9' || s[6] != '.' || s[7] < '0' ||
            s[7] > '9' || s[8] != ' ')
                return -EPROTO;
        int code = 0;
        for (size_t i = 9; i < 12; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EPROTO;
                code = code * 10 + (s[i] - '0');
        }
        if (code < 100 || (len > 12 && s[12] != ' ' && s[12] != '\r' && s[12] != '\n'))
                return -EPROTO;
        return code;
}

static void maybe_free(lg_probe *p) {
        if (!p->finished || p->handles)
                return;
        free(p->path);
        free(p->request);
        free(p);
}

static void on_closed(uv_handle_t *h) {
        lg_probe *p = h->data;
        p->handles--;
        maybe_free(p);
}

static void on_timer(uv_timer_t *t);

/* Tell the caller, then let go of everything. */
static void finish(lg_probe *p, int status, const char *message) {
        lg_probe_cb cb = p->cb;
        p->cb = NULL;
        p->finished = true;
        if (cb)
                cb(p, status, message, p->userdata);
        if (!uv_is_closing((uv_handle_t *) &p->timer))
                uv_close((uv_handle_t *) &p->timer, on_closed);
        if (p->tcp_state == PT_OPEN) {
                p->tcp_state = PT_CLOSING;
                uv_close((uv_handle_t *) &p->tcp, on_closed);
        }
}

static uint64_t elapsed(lg_probe *p) { return uv_now(p->loop) - p->start; }

/* The deadline passed between tries: say why it is not ready. */
static void give_up(lg_probe *p) {
        char within[32], msg[700];
        lg_probe_fmt_ms(p->timeout_ms, within, sizeof(within));
        if (!p->connected) {
                snprintf(msg, sizeof(msg), "port %u never opened within %s", p->port, within);
                finish(p, -ETIMEDOUT, msg);
        } else if (p->last_status > 0) {
                snprintf(msg, sizeof(msg), "GET %s answered %d within %s", p->path, p->last_status, within);
                finish(p, -EPROTO, msg);
        } else {
                snprintf(msg, sizeof(msg), "GET %s gave no HTTP answer within %s", p->path, within);
                finish(p, -EPROTO, msg);
        }
}

static void on_tcp_closed(uv_handle_t *h) {
        lg_probe *p = h->data;
        p->handles--;
        p->tcp_state = PT_NONE;
        if (p->finished) {
                maybe_free(p);
                return;
        }
        uint64_t e = elapsed(p);
        if (e >= p->timeout_ms) {
                give_up(p);
                maybe_free(p);
                return;
        }
        uint64_t gap = next_gap(p);
        uint64_t wait = gap < p->timeout_ms - e ? gap : p->timeout_ms - e;
        uv_timer_start(&p->timer, on_timer, wait, 0);
}

/* This try is over (failed): close it; the next follows the close. */
static void end_try(lg_probe *p) {
        p->trying = false;
        uv_timer_stop(&p->timer);
        if (p->tcp_state == PT_OPEN) {
                p->tcp_state = PT_CLOSING;
                uv_close((uv_handle_t *) &p->tcp, on_tcp_closed);
        }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
        lg_probe *p = h->data;
        (void) hint;
        *buf = uv_buf_init(p->line + p->len, (unsigned) (sizeof(p->line) - p->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
        lg_probe *p = s->data;
        (void) buf;
        if (p->finished || !p->trying || n == 0)
                return;
        if (n > 0)
                p->len += (size_t) n;
        const char *nl = memchr(p->line, '\n', p->len);
        if (n > 0 && !nl && p->len < sizeof(p->line))
                return; /* more of the line to come */
        /* A whole line, a full buffer, EOF or an error: judge what came. */
        int code = lg_probe_parse_status(p->line, nl ? (size_t) (nl - p->line) : p->len);
        if (code >= 200 && code < 400) {
                finish(p, 0, NULL);
                return;
        }
        if (code > 0 || p->last_status <= 0)
                p->last_status = code > 0 ? code : -1;
        end_try(p);
}

static void on_write(uv_write_t *w, int status) {
        lg_probe *p = w->data;
        if (status < 0 && status != UV_ECANCELED && !p->finished && p->trying) {
                if (p->last_status == 0)
                        p->last_status = -1;
                end_try(p);
        }
}

static void on_connect(uv_connect_t *c, int status) {
        lg_probe *p = c->data;
        if (status == UV_ECANCELED || p->finished || !p->trying)
                return;
        if (status < 0) {
                end_try(p);
                return;
        }
        p->connected = true;
        if (!p->path) {
                finish(p, 0, NULL);
                return;
        }
        p->len = 0;
        uv_buf_t b = uv_buf_init(p->request, (unsigned) strlen(p->request));
        p->wr.data = p;
        if (uv_write(&p->wr, (uv_stream_t *) &p->tcp, &b, 1, on_write) < 0 ||
            uv_read_start((uv_stream_t *) &p->tcp, on_alloc, on_read) < 0) {
                if (p->last_status == 0)
                        p->last_status = -1;
                end_try(p);
        }
}

static void on_timer(uv_timer_t *t) {
        lg_probe *p = t->data;
        if (p->finished)
                return;
        if (p->trying) {
                /* This try took too long (a server accepting but silent). */
                if (p->connected && p->path && p->last_status == 0)
                        p->last_status = -1;
                end_try(p);
                return;
        }
        uint64_t e = elapsed(p);
        if (e >= p->timeout_ms) {
                give_up(p);
                return;
        }
        if (uv_tcp_init(p->loop, &p->tcp) < 0) {
                uv_timer_start(&p->timer, on_timer, next_gap(p), 0);
                return;
        }
        p->tcp.data = p;
        p->handles++;
        p->tcp_state = PT_OPEN;
        p->trying = true;
        p->conn.data = p;
        if (uv_tcp_connect(&p->conn, &p->tcp, (const struct sockaddr *) &p->addr, on_connect) < 0) {
                end_try(p);
                return;
        }
        uint64_t left = p->timeout_ms - e;
        uv_timer_start(&p->timer, on_timer, p->attempt_ms < left ? p->attempt_ms : left, 0);
}

int lg_probe_start(const struct lg_probe_config *cfg, lg_probe_cb cb, void *userdata, lg_probe **ret,
                   struct lg_error *err) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t) cfg->port)};
        if (!cfg->ip || inet_pton(AF_INET, cfg->ip, &sa.sin_addr) != 1)
                return lg_error_set(err, EINVAL, "`%s` is not an IPv4 address", cfg->ip ? cfg->ip : "");
        if (cfg->port < 1 || cfg->port > 65535)
                return lg_error_set(err, EINVAL, "port %u is not 1-65535", cfg->port);
        const char *path = cfg->path && *cfg->path ? cfg->path : NULL;
        if (path) {
                if (path[0] != '/' || strlen(path) > 2048)
                        return lg_error_set(err, EINVAL, "readiness path must start with / (2048 bytes at most)");
                for (const char *c = path; *c; c++)
                        if ((unsigned char) *c <= ' ' || *c == 0x7f)
                                return lg_error_set(err, EINVAL, "readiness path has a space or control character");
        }
        lg_probe *p = calloc(1, sizeof(*p));
        if (!p)
                return lg_error_set(err, ENOMEM, "allocate probe");
        p->loop = cfg->loop;
        p->addr = sa;
        p->port = cfg->port;
        p->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 60000;
        p->interval_ms = cfg->interval_ms ? cfg->interval_ms : 50;
        p->attempt_ms = cfg->attempt_ms ? cfg->attempt_ms : 1000;
        p->gap_ms = 1;
        p->cb = cb;
        p->userdata = userdata;
        if (path && (!(p->path = strdup(path)) ||
                     asprintf(&p->request,
                              "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUser-Agent: legion-probe\r\n"
                              "Connection: close\r\n\r\n",
                              path, cfg->ip, cfg->port) < 0)) {
                free(p->path);
                free(p);
                return lg_error_set(err, ENOMEM, "allocate probe");
        }
        uv_update_time(p->loop);
        p->start = uv_now(p->loop);
        uv_timer_init(p->loop, &p->timer);
        p->timer.data = p;
        p->handles = 1;
        uv_timer_start(&p->timer, on_timer, 0, 0);
        *ret = p;
        return 0;
}

bool lg_probe_connected(const lg_probe *p) { return p->connected; }

void lg_probe_cancel(lg_probe *p) {
        if (!p || p->finished)
                return;
        p->cb = NULL;
        p->trying = false;
        finish(p, 0, NULL);
}
