/* YAML to JSON with libyaml's event parser: a stack of open mappings and
 * sequences; scalars typed by YAML 1.2's core schema. See yaml2json.h. */
#include <regex.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "cli/yaml2json.h"

#define MAX_DEPTH 64

struct frame {
        json_t *node;  /* object or array */
        char *key;     /* an object's pending key, until its value comes */
};

static bool full_match(const char *re, const char *s) {
        regex_t rx;
        if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB))
                return false;
        bool m = regexec(&rx, s, 0, NULL, 0) == 0;
        regfree(&rx);
        return m;
}

/* A plain scalar as the core schema reads it. */
static json_t *plain_scalar(const char *s) {
        if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))
                return json_null();
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
                return json_true();
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
                return json_false();
        if (full_match("^[-+]?[0-9]+$", s)) {
                errno = 0;
                long long v = strtoll(s, NULL, 10);
                if (!errno)
                        return json_integer(v);
                return json_real(strtod(s, NULL));
        }
        if (full_match("^0x[0-9a-fA-F]+$", s))
                return json_integer(strtoll(s + 2, NULL, 16));
        if (full_match("^0o[0-7]+$", s))
                return json_integer(strtoll(s + 2, NULL, 8));
        if (full_match("^[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?$", s))
                return json_real(strtod(s, NULL));
        return json_string(s);
}

static int yaml_fail(struct lg_error *err, const yaml_event_t *ev, const char *why) {
        return lg_error_setm(err, EINVAL, "YAML line %zu: %s", ev ? ev->start_mark.line + 1 : 0, why);
}

/* Attach value to the frame on top (or make it the document). Steals value. */
static int attach(struct frame *st, int depth, json_t **doc, json_t *value, const yaml_event_t *ev,
                  struct lg_error *err) {
        if (!value)
                return lg_error_set(err, ENOMEM, "YAML");
        if (depth == 0) {
                *doc = value;
                return 0;
        }
        struct frame *f = &st[depth - 1];
        if (json_is_array(f->node)) {
                json_array_append_new(f->node, value);
                return 0;
        }
        if (!f->key) {
                /* value is a key: only scalars are. */
                if (!json_is_string(value) && !json_is_integer(value) && !json_is_boolean(value) &&
                    !json_is_null(value) && !json_is_real(value)) {
                        json_decref(value);
                        return yaml_fail(err, ev, "a mapping key must be a scalar");
                }
                char buf[64];
                const char *k = json_string_value(value);
                if (!k) {
                        if (json_is_integer(value))
                                snprintf(buf, sizeof(buf), "%lld", (long long) json_integer_value(value));
                        else if (json_is_real(value))
                                snprintf(buf, sizeof(buf), "%g", json_real_value(value));
                        else
                                snprintf(buf, sizeof(buf), "%s",
                                         json_is_null(value) ? "null" : json_is_true(value) ? "true" : "false");
                        k = buf;
                }
                if (json_object_get(f->node, k)) {
                        char why[300];
                        snprintf(why, sizeof(why), "duplicate key `%.200s`", k);
                        json_decref(value);
                        return yaml_fail(err, ev, why);
                }
                f->key = strdup(k);
                json_decref(value);
                return f->key ? 0 : lg_error_set(err, ENOMEM, "YAML");
        }
        json_object_set_new(f->node, f->key, value);
        free(f->key);
        f->key = NULL;
        return 0;
}

int lg_yaml_to_json(const char *buf, size_t len, json_t **ret, struct lg_error *err) {
        yaml_parser_t p;
        if (!yaml_parser_initialize(&p))
                return lg_error_set(err, ENOMEM, "YAML parser");
        yaml_parser_set_input_string(&p, (const unsigned char *) buf, len);
        json_t *docs = json_array(), *doc = NULL;
        struct frame st[MAX_DEPTH] = {0};
        int depth = 0, r = 0;
        bool done = false;
        while (!done && r >= 0) {
                yaml_event_t ev;
                if (!yaml_parser_parse(&p, &ev)) {
                        r = lg_error_setm(err, EINVAL, "YAML line %zu: %s%s%s", p.problem_mark.line + 1,
                                          p.problem ? p.problem : "syntax error", p.context ? " " : "",
                                          p.context ? p.context : "");
                        break;
                }
                switch (ev.type) {
                case YAML_STREAM_END_EVENT: done = true; break;
                case YAML_DOCUMENT_START_EVENT: doc = NULL; break;
                case YAML_DOCUMENT_END_EVENT:
                        if (doc && !json_is_null(doc))
                                json_array_append(docs, doc);
                        json_decref(doc);
                        doc = NULL;
                        break;
                case YAML_ALIAS_EVENT: r = yaml_fail(err, &ev, "anchors and aliases are not supported"); break;
                case YAML_SCALAR_EVENT: {
                        const char *s = (const char *) ev.data.scalar.value;
                        const char *tag = (const char *) ev.data.scalar.tag;
                        if (ev.data.scalar.anchor) {
                                r = yaml_fail(err, &ev, "anchors and aliases are not supported");
                                break;
                        }
                        if (strlen(s) != ev.data.scalar.length) {
                                r = yaml_fail(err, &ev, "a NUL character in a scalar");
                                break;
                        }
                        json_t *v;
                        if (ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE || (tag && !strcmp(tag, YAML_STR_TAG)))
                                v = json_string(s);
                        else
                                v = plain_scalar(s);
                        if (!v) {
                                r = yaml_fail(err, &ev, "a scalar is not valid UTF-8");
                                break;
                        }
                        r = attach(st, depth, &doc, v, &ev, err);
                        break;
                }
                case YAML_SEQUENCE_START_EVENT:
                case YAML_MAPPING_START_EVENT: {
                        const yaml_char_t *anchor = ev.type == YAML_SEQUENCE_START_EVENT
                                                            ? ev.data.sequence_start.anchor
                                                            : ev.data.mapping_start.anchor;
                        if (anchor) {
                                r = yaml_fail(err, &ev, "anchors and aliases are not supported");
                                break;
                        }
                        if (depth == MAX_DEPTH) {
                                r = yaml_fail(err, &ev, "nested too deeply");
                                break;
                        }
                        json_t *n = ev.type == YAML_SEQUENCE_START_EVENT ? json_array() : json_object();
                        /* Attached now (a reference stays on the stack), filled later. */
                        json_incref(n);
                        if ((r = attach(st, depth, &doc, n, &ev, err)) < 0) {
                                json_decref(n);
                                break;
                        }
                        st[depth++] = (struct frame){.node = n};
                        break;
                }
                case YAML_SEQUENCE_END_EVENT:
                case YAML_MAPPING_END_EVENT:
                        if (depth > 0) {
                                depth--;
                                json_decref(st[depth].node);
                                free(st[depth].key);
                                st[depth] = (struct frame){0};
                        }
                        break;
                default: break;
                }
                yaml_event_delete(&ev);
        }
        while (depth > 0) {
                depth--;
                json_decref(st[depth].node);
                free(st[depth].key);
        }
        json_decref(doc);
        yaml_parser_delete(&p);
        if (r < 0) {
                json_decref(docs);
                return r;
        }
        *ret = docs;
        return 0;
}
