/* Waiting in a unit test: run a test's libuv loop until a predicate holds,
 * either on anything (wait_kit_pump) or on a resource's status (a pod's, a
 * job's) fetched by the test's own getter after each turn
 * (wait_kit_status). Both are bounded at 6000 turns of a 20 ms tick, about
 * 120 s: a bound for a hung test, not a timing check (the tick keeps
 * UV_RUN_ONCE from blocking). Static inline: include after cmocka.h. */
#pragma once

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

typedef json_t *(*wait_kit_status_fn)(const char *name);
typedef bool (*wait_kit_pred_fn)(const json_t *st, const void *arg);

static inline void wait_kit_tick(uv_timer_t *t) { (void) t; }

/* Whether pred(arg) held (checked before each turn) within the bound. */
static inline bool wait_kit_pump(uv_loop_t *loop, bool (*pred)(const void *), const void *arg) {
        uv_timer_t tick;
        uv_timer_init(loop, &tick);
        uv_timer_start(&tick, wait_kit_tick, 20, 20);
        bool ok = false;
        for (int i = 0; i < 6000 && !(ok = pred(arg)); i++)
                uv_run(loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *) &tick, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        return ok;
}

/* Run loop until pred holds for name's status (checked after each turn),
 * which is returned (the caller's, json_decref; NULL means gone); fails
 * the test with the last status otherwise. what names the resource in the
 * failure ("pod", "job"). */
static inline json_t *wait_kit_status(uv_loop_t *loop, const char *what, const char *name,
                                      wait_kit_status_fn get, wait_kit_pred_fn pred, const void *arg) {
        uv_timer_t tick;
        uv_timer_init(loop, &tick);
        uv_timer_start(&tick, wait_kit_tick, 20, 20);
        json_t *st = NULL;
        for (int i = 0; i < 6000; i++) {
                uv_run(loop, UV_RUN_ONCE);
                json_decref(st);
                st = get(name);
                if (pred(st, arg))
                        break;
        }
        uv_close((uv_handle_t *) &tick, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        if (!pred(st, arg)) {
                char *s = st ? json_dumps(st, JSON_INDENT(1)) : strdup("(gone)");
                fail_msg("%s %s: condition never held; status %s", what, name, s);
        }
        return st;
}

/* A predicate for wait_kit_status: the status's phase is arg (a string). */
static inline bool wait_kit_phase_is(const json_t *st, const void *arg) {
        const char *p = json_string_value(json_object_get(st, "phase"));
        return p && !strcmp(p, arg);
}
