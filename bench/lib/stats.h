/* What the benchmark programs share (bench/lgbench.c, density.c, phases.c,
 * functions/httpload.c, sessions/sessload.c): sorting samples, the
 * nearest-rank percentile, and a JSON string on stdout. Header only: the
 * load generators are built by their run.sh with a plain cc. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

static inline int bench_cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static inline int bench_cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

/* The index in n sorted samples of the p-th percentile, nearest rank: the
 * smallest value with at least p% of the samples at or below it. Rounding
 * up by adding just under 1 (not ceil) keeps the rank where p / 100 * n is
 * an integer plus floating-point noise (99.9% of 1000). 0 when n is 0. */
static inline size_t bench_rank(size_t n, double p) {
        size_t k = (size_t) (p / 100.0 * (double) n + 0.999999);
        if (k > n)
                k = n;
        return k < 1 ? 0 : k - 1;
}

static inline void bench_json_str(const char *s) {
        putchar('"');
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if (c == '"' || c == '\\')
                        printf("\\%c", c);
                else if (c < 0x20)
                        printf("\\u%04x", c);
                else
                        putchar(c);
        }
        putchar('"');
}
