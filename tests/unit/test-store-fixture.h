/* The fixture of the store's unit tests (test-store.c, test-store-tokens.c):
 * a store in a fresh temporary directory per test, and OK / FAILS, which
 * check a call's result against the store's error message. Include after
 * cmocka.h. */
#pragma once

#include <string.h>

#include "store/store-internal.h"

struct fx {
        char dir[64];
        char path[128];
        lg_store *st;
};

/* Fail the test with the store's message when a call returns < 0. */
#define OK(call)                                                                     \
        do {                                                                         \
                int r_ = (call);                                                     \
                if (r_ < 0)                                                          \
                        fail_msg("%s = %d: %s", #call, r_, err.msg);                 \
        } while (0)
/* Expect a given -errno, and a one-line message with it. */
#define FAILS(call, e)                                                               \
        do {                                                                         \
                err = (struct lg_error){0};                                          \
                int r_ = (call);                                                     \
                if (r_ != -(e))                                                      \
                        fail_msg("%s = %d, want %d (%s)", #call, r_, -(e), err.msg); \
                assert_true(err.msg[0] != '\0');                                     \
                assert_null(strchr(err.msg, '\n'));                                  \
        } while (0)

static inline int fx_open(struct fx *f, const struct lg_store_options *opts) {
        struct lg_error err = {0};
        int r = lg_store_open(f->path, opts, &f->st, &err);
        if (r < 0)
                print_error("open: %s\n", err.msg);
        return r;
}

static inline int setup(void **state) {
        struct fx *f = calloc(1, sizeof(*f));
        strcpy(f->dir, "/tmp/lg-store-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        snprintf(f->path, sizeof(f->path), "%s/legion.db", f->dir);
        *state = f;
        return fx_open(f, NULL) < 0 ? -1 : 0;
}

static inline int teardown(void **state) {
        struct fx *f = *state;
        lg_store_close(f->st);
        lg_rm_rf(f->dir);
        free(f);
        return 0;
}

