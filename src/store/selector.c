/* Label selectors (Kubernetes syntax), parsed by hand: the input comes
 * straight from a query string, so every byte is checked, sizes are bounded
 * and error messages never echo more than one (escaped) character of it.
 * Matching runs in C over the labels object, so no selector reaches SQL. */
#include "store/store-internal.h"

#include <string.h>

#define SELECTOR_MAX_LEN 4096
#define SELECTOR_MAX_REQS 64
#define SELECTOR_MAX_VALUES 64

enum sel_op { SEL_EXISTS, SEL_NOT_EXISTS, SEL_EQ, SEL_NE, SEL_IN, SEL_NOTIN };

struct sel_req {
        enum sel_op op;
        char *key;
        char **values; /* EQ and NE have one */
        size_t n_values;
};

struct lg_selector {
        struct sel_req *reqs;
        size_t n;
};

void lg_selector_free(struct lg_selector *sel) {
        if (!sel)
                return;
        for (size_t i = 0; i < sel->n; i++) {
                free(sel->reqs[i].key);
                for (size_t j = 0; j < sel->reqs[i].n_values; j++)
                        free(sel->reqs[i].values[j]);
                free(sel->reqs[i].values);
        }
        free(sel->reqs);
        free(sel);
}

struct parser {
        const char *s;
        size_t pos;
        struct lg_error *err;
};

static int fail(struct parser *p, const char *what) {
        unsigned char c = (unsigned char) p->s[p->pos];
        if (c == '\0')
                return lg_error_set(p->err, EINVAL, "bad label selector at offset %zu (end): %s",
                                    p->pos, what);
        if (c >= 0x20 && c < 0x7f && c != '`')
                return lg_error_set(p->err, EINVAL, "bad label selector at offset %zu (`%c`): %s",
                                    p->pos, c, what);
        return lg_error_set(p->err, EINVAL, "bad label selector at offset %zu (byte 0x%02x): %s",
                            p->pos, c, what);
}

static void skip_ws(struct parser *p) {
        while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t')
                p->pos++;
}

/* ASCII only, whatever the locale. */
static bool alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
static bool key_char(char c) {
        return alnum(c) || c == '-' || c == '_' || c == '.' || c == '/';
}
static bool value_char(char c) {
        return alnum(c) || c == '-' || c == '_' || c == '.';
}

/* A run of characters accepted by ok() that valid() takes, copied out; an
 * error points at its start. */
static int parse_word(struct parser *p, bool (*ok)(char), bool (*valid)(const char *),
                      const char *invalid, char **ret) {
        size_t start = p->pos;
        while (ok(p->s[p->pos]))
                p->pos++;
        _cleanup_free_ char *w = strndup(p->s + start, p->pos - start);
        if (!w)
                return lg_error_set(p->err, ENOMEM, "label selector");
        if (!valid(w)) {
                p->pos = start;
                return fail(p, invalid);
        }
        *ret = TAKE_PTR(w);
        return 0;
}

static int parse_key(struct parser *p, char **ret) {
        if (!key_char(p->s[p->pos]))
                return fail(p, "expected a label key");
        return parse_word(p, key_char, lg_store_valid_label_key, "invalid label key", ret);
}

static int parse_value(struct parser *p, char **ret) {
        return parse_word(p, value_char, lg_store_valid_label_value, "invalid label value", ret);
}

static int add_value(struct parser *p, struct sel_req *req, char *v) {
        if (req->n_values >= SELECTOR_MAX_VALUES) {
                free(v);
                return fail(p, "too many values in a set");
        }
        char **nv = realloc(req->values, (req->n_values + 1) * sizeof(*nv));
        if (!nv) {
                free(v);
                return lg_error_set(p->err, ENOMEM, "label selector");
        }
        req->values = nv;
        req->values[req->n_values++] = v;
        return 0;
}

/* "(v1, v2, ...)": at least one value, none empty (Kubernetes would take
 * "(x,)" as x or ""; a stray comma is more likely a mistake). */
static int parse_set(struct parser *p, struct sel_req *req) {
        skip_ws(p);
        if (p->s[p->pos] != '(')
                return fail(p, "expected `(`");
        p->pos++;
        skip_ws(p);
        if (p->s[p->pos] == ')')
                return fail(p, "empty set");
        for (;;) {
                skip_ws(p);
                char *v;
                int r = parse_value(p, &v);
                if (r < 0)
                        return r;
                if (!v[0]) {
                        free(v);
                        return fail(p, "empty value in a set");
                }
                if ((r = add_value(p, req, v)) < 0)
                        return r;
                skip_ws(p);
                if (p->s[p->pos] == ')') {
                        p->pos++;
                        return 0;
                }
                if (p->s[p->pos] != ',')
                        return fail(p, "expected `,` or `)` in a set");
                p->pos++;
        }
}

/* The keyword w at the cursor, followed by a blank or '('. */
static bool keyword(struct parser *p, const char *w) {
        size_t n = strlen(w);
        if (strncmp(p->s + p->pos, w, n) != 0)
                return false;
        char c = p->s[p->pos + n];
        if (c != ' ' && c != '\t' && c != '(')
                return false;
        p->pos += n;
        return true;
}

static int parse_req(struct parser *p, struct sel_req *req) {
        int r;
        skip_ws(p);
        if (p->s[p->pos] == '!') {
                p->pos++;
                skip_ws(p);
                req->op = SEL_NOT_EXISTS;
                return parse_key(p, &req->key);
        }
        if ((r = parse_key(p, &req->key)) < 0)
                return r;
        bool blank = p->s[p->pos] == ' ' || p->s[p->pos] == '\t';
        skip_ws(p);
        const char *c = p->s + p->pos;
        if (*c == '=' || (c[0] == '!' && c[1] == '=')) {
                req->op = *c == '=' ? SEL_EQ : SEL_NE;
                p->pos += (c[0] == '!' || c[1] == '=') ? 2 : 1;
                skip_ws(p);
                char *v;
                if ((r = parse_value(p, &v)) < 0)
                        return r;
                return add_value(p, req, v);
        }
        if (blank && keyword(p, "in")) {
                req->op = SEL_IN;
                return parse_set(p, req);
        }
        if (blank && keyword(p, "notin")) {
                req->op = SEL_NOTIN;
                return parse_set(p, req);
        }
        if (*c == ',' || *c == '\0') {
                req->op = SEL_EXISTS;
                return 0;
        }
        return fail(p, "expected an operator (=, ==, !=, in, notin), `,` or the end");
}

int lg_selector_parse(const char *s, struct lg_selector **ret, struct lg_error *err) {
        _cleanup_(lg_selector_freep) struct lg_selector *sel = calloc(1, sizeof(*sel));
        if (!sel)
                return lg_error_set(err, ENOMEM, "label selector");
        if (!s)
                s = "";
        if (strnlen(s, SELECTOR_MAX_LEN + 1) > SELECTOR_MAX_LEN)
                return lg_error_set(err, EINVAL, "label selector longer than %d bytes",
                                    SELECTOR_MAX_LEN);
        struct parser p = {.s = s, .err = err};
        skip_ws(&p);
        if (s[p.pos] == '\0') {
                *ret = TAKE_PTR(sel);
                return 0;
        }
        for (;;) {
                if (sel->n >= SELECTOR_MAX_REQS)
                        return fail(&p, "too many requirements");
                struct sel_req *nr = realloc(sel->reqs, (sel->n + 1) * sizeof(*nr));
                if (!nr)
                        return lg_error_set(err, ENOMEM, "label selector");
                sel->reqs = nr;
                sel->reqs[sel->n] = (struct sel_req){0};
                sel->n++; /* counted before parsing so that free sees it */
                int r = parse_req(&p, &sel->reqs[sel->n - 1]);
                if (r < 0)
                        return r;
                skip_ws(&p);
                if (s[p.pos] == '\0')
                        break;
                if (s[p.pos] != ',')
                        return fail(&p, "expected `,` or the end");
                p.pos++;
        }
        *ret = TAKE_PTR(sel);
        return 0;
}

static bool in_set(const struct sel_req *req, const char *v) {
        for (size_t i = 0; i < req->n_values; i++)
                if (strcmp(req->values[i], v) == 0)
                        return true;
        return false;
}

bool lg_selector_matches(const struct lg_selector *sel, const json_t *labels) {
        if (!sel)
                return true;
        for (size_t i = 0; i < sel->n; i++) {
                const struct sel_req *req = &sel->reqs[i];
                const char *v = json_string_value(json_object_get(labels, req->key));
                bool ok;
                switch (req->op) {
                case SEL_EXISTS:
                        ok = v != NULL;
                        break;
                case SEL_NOT_EXISTS:
                        ok = v == NULL;
                        break;
                case SEL_EQ:
                case SEL_IN:
                        ok = v && in_set(req, v);
                        break;
                case SEL_NE:
                case SEL_NOTIN:
                        ok = !v || !in_set(req, v);
                        break;
                default:
                        ok = false;
                }
                if (!ok)
                        return false;
        }
        return true;
}
