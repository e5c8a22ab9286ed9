/* Unit tests of chunk tables (src/lazy/chunks.h): round trip through the
 * binary form and a file, lookups by offset, and hostile input -- every
 * rule of the format broken once (truncated, bad magic/version/chunk size,
 * unsorted, overlapping, gaps, zero/oversized/unaligned lengths, flags,
 * huge n, sum mismatch). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <endian.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "lazy/chunks.h"
#include "test-ok.h"

/* A table of n chunks of 64 KiB except the last, which is last bytes. */
static uint8_t *make(size_t n, uint32_t last, size_t *len) {
        *len = LG_CHUNK_TABLE_HEADER + n * LG_CHUNK_TABLE_ENTRY;
        uint8_t *b = calloc(1, *len);
        assert_non_null(b);
        memcpy(b, "LGCHUNK1", 8);
        uint32_t v32 = htole32(1);
        memcpy(b + 8, &v32, 4);
        v32 = htole32(65536);
        memcpy(b + 12, &v32, 4);
        uint64_t off = 0;
        for (size_t i = 0; i < n; i++) {
                uint8_t *e = b + LG_CHUNK_TABLE_HEADER + i * LG_CHUNK_TABLE_ENTRY;
                uint32_t l = i + 1 == n ? last : 65536;
                uint64_t o = htole64(off);
                memcpy(e, &o, 8);
                v32 = htole32(l);
                memcpy(e + 8, &v32, 4);
                memset(e + 16, (int) i + 1, 32);
                off += l;
        }
        uint64_t v64 = htole64(off);
        memcpy(b + 16, &v64, 8);
        v64 = htole64(n);
        memcpy(b + 24, &v64, 8);
        return b;
}

static void put32(uint8_t *p, uint32_t v) {
        v = htole32(v);
        memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v) {
        v = htole64(v);
        memcpy(p, &v, 8);
}
static uint8_t *entry(uint8_t *b, size_t i) { return b + LG_CHUNK_TABLE_HEADER + i * LG_CHUNK_TABLE_ENTRY; }

static void refused(const uint8_t *b, size_t len, const char *why) {
        lg_chunk_table *t = NULL;
        struct lg_error err = {0};
        int r = lg_chunk_table_parse(b, len, &t, &err);
        if (r != -EBADMSG)
                fail_msg("%s: parse = %d (%s), want -EBADMSG", why, r, err.msg);
        assert_null(t);
        assert_true(err.msg[0] != '\0');
}

static void test_roundtrip(void **state) {
        (void) state;
        size_t len;
        _cleanup_free_ uint8_t *b = make(3, 1000, &len);
        lg_chunk_table *t;
        struct lg_error err = {0};
        OK(lg_chunk_table_parse(b, len, &t, &err));
        assert_int_equal(lg_chunk_table_count(t), 3);
        assert_int_equal(lg_chunk_table_chunk_size(t), 65536);
        assert_int_equal(lg_chunk_table_blob_size(t), 2 * 65536 + 1000);
        assert_int_equal(lg_chunk_table_at(t, 2)->offset, 131072);
        assert_int_equal(lg_chunk_table_at(t, 2)->length, 1000);
        assert_int_equal(lg_chunk_table_at(t, 1)->sha256[31], 2);
        assert_null(lg_chunk_table_at(t, 3));
        assert_int_equal(lg_chunk_table_find(t, 0), 0);
        assert_int_equal(lg_chunk_table_find(t, 65535), 0);
        assert_int_equal(lg_chunk_table_find(t, 65536), 1);
        assert_int_equal(lg_chunk_table_find(t, 131072 + 999), 2);
        assert_int_equal(lg_chunk_table_find(t, 131072 + 1000), -ERANGE);
        assert_int_equal(lg_chunk_table_find(t, UINT64_MAX), -ERANGE);

        void *out;
        size_t outlen;
        assert_int_equal(lg_chunk_table_serialize(t, &out, &outlen), 0);
        assert_int_equal(outlen, len);
        assert_memory_equal(out, b, len);
        free(out);

        char dir[] = "/tmp/test-lazy-chunks-XXXXXX", path[PATH_MAX];
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/chunks", dir);
        OK(lg_chunk_table_save(t, path, &err));
        OK(lg_chunk_table_save(t, path, &err)); /* over an existing one */
        lg_chunk_table *t2;
        OK(lg_chunk_table_load(path, &t2, &err));
        assert_int_equal(lg_chunk_table_count(t2), 3);
        assert_memory_equal(lg_chunk_table_at(t2, 1), lg_chunk_table_at(t, 1), sizeof(struct lg_chunk));
        lg_chunk_table_free(t2);
        /* A damaged file is refused with its path in the message. */
        int fd = open(path, O_WRONLY | O_TRUNC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, b, 40), 40);
        close(fd);
        assert_int_equal(lg_chunk_table_load(path, &t2, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, path));
        assert_int_equal(lg_chunk_table_load(dir, &t2, &err) < 0, 1); /* a directory */
        snprintf(path, sizeof(path), "%s/fifo", dir); /* refused, not waited on */
        assert_int_equal(mkfifo(path, 0600), 0);
        assert_int_equal(lg_chunk_table_load(path, &t2, &err), -EBADMSG);
        snprintf(path, sizeof(path), "%s/none", dir);
        assert_int_equal(lg_chunk_table_load(path, &t2, &err), -ENOENT);
        assert_int_equal(lg_rm_rf(dir), 0);
        lg_chunk_table_free(t);
        lg_chunk_table_free(NULL);
}

static void test_empty_and_one(void **state) {
        (void) state;
        size_t len;
        _cleanup_free_ uint8_t *b = make(0, 0, &len);
        lg_chunk_table *t;
        struct lg_error err = {0};
        OK(lg_chunk_table_parse(b, len, &t, &err));
        assert_int_equal(lg_chunk_table_count(t), 0);
        assert_int_equal(lg_chunk_table_find(t, 0), -ERANGE);
        lg_chunk_table_free(t);
        _cleanup_free_ uint8_t *one = make(1, 4096, &len);
        OK(lg_chunk_table_parse(one, len, &t, &err));
        assert_int_equal(lg_chunk_table_find(t, 4095), 0);
        lg_chunk_table_free(t);
}

static void test_hostile(void **state) {
        (void) state;
        size_t len;
        uint8_t *b;

        /* Truncated: every prefix of a good table. */
        b = make(3, 8192, &len);
        for (size_t l = 0; l < len; l++)
                refused(b, l, "truncated");
        /* One byte too many. */
        uint8_t *big = calloc(1, len + 1);
        memcpy(big, b, len);
        refused(big, len + 1, "trailing byte");
        free(big);
        free(b);

#define MUTATE(why, stmt)                      \
        do {                                   \
                b = make(3, 8192, &len);       \
                stmt;                          \
                refused(b, len, why);          \
                free(b);                       \
        } while (0)

        MUTATE("bad magic", b[7] = '2');
        MUTATE("version 0", put32(b + 8, 0));
        MUTATE("version 2", put32(b + 8, 2));
        MUTATE("chunk size 0", put32(b + 12, 0));
        MUTATE("chunk size not a power of two", put32(b + 12, 65536 + 4096));
        MUTATE("chunk size 2 KiB", put32(b + 12, 2048));
        MUTATE("chunk size 8 MiB", put32(b + 12, 8u << 20));
        MUTATE("chunk size smaller than the chunks", put32(b + 12, 32768));
        MUTATE("n too large for the bytes", put64(b + 24, 4));
        MUTATE("n too small for the bytes", put64(b + 24, 2));
        MUTATE("huge n", put64(b + 24, UINT64_MAX));
        MUTATE("n over 16M", put64(b + 24, (16u << 20) + 1));
        MUTATE("n wraps the multiplication", put64(b + 24, (UINT64_MAX / 48) + 1));
        MUTATE("sum below blob size", put64(b + 16, 2 * 65536 + 8192 + 1));
        MUTATE("sum above blob size", put64(b + 16, 2 * 65536 + 4096));
        MUTATE("first offset not 0", put64(entry(b, 0), 4096));
        MUTATE("gap", put64(entry(b, 1), 65536 + 4096));
        MUTATE("overlap", put64(entry(b, 1), 65536 - 4096));
        MUTATE("unsorted", {
                put64(entry(b, 1), 65536 * 2);
                put64(entry(b, 2), 65536);
        });
        MUTATE("zero length", put32(entry(b, 0) + 8, 0));
        MUTATE("zero last length", {
                put32(entry(b, 2) + 8, 0);
                put64(b + 16, 2 * 65536);
        });
        MUTATE("oversized length", {
                put32(entry(b, 0) + 8, 65536 + 4096);
                put64(entry(b, 1), 65536 + 4096);
                put64(entry(b, 2), 2 * 65536 + 4096);
                put64(b + 16, 2 * 65536 + 4096 + 8192);
        });
        MUTATE("unaligned middle length", {
                put32(entry(b, 0) + 8, 65535);
                put64(entry(b, 1), 65535);
                put64(entry(b, 2), 2 * 65536 - 1);
                put64(b + 16, 2 * 65536 - 1 + 8192);
        });
        MUTATE("length wraps the offset", {
                put32(entry(b, 2) + 8, UINT32_MAX);
                put64(b + 16, 2 * 65536 + (uint64_t) UINT32_MAX);
        });
        MUTATE("flags", put32(entry(b, 1) + 12, 1));
        /* An empty table that claims a blob. */
        b = make(0, 0, &len);
        put64(b + 16, 4096);
        refused(b, len, "empty table, nonempty blob");
        free(b);
        /* The last chunk may end off 4 KiB (checked as good). */
        b = make(2, 1, &len);
        lg_chunk_table *t;
        struct lg_error err = {0};
        OK(lg_chunk_table_parse(b, len, &t, &err));
        lg_chunk_table_free(t);
        free(b);
}

static void test_new(void **state) {
        (void) state;
        struct lg_chunk c[2] = {{0, 4096, {1}}, {4096, 100, {2}}};
        lg_chunk_table *t;
        struct lg_error err = {0};
        OK(lg_chunk_table_new(4096, 4196, c, 2, &t, &err));
        assert_int_equal(lg_chunk_table_find(t, 4100), 1);
        lg_chunk_table_free(t);
        assert_int_equal(lg_chunk_table_new(4096, 4197, c, 2, &t, &err), -EBADMSG);
        c[1].offset = 0;
        assert_int_equal(lg_chunk_table_new(4096, 4196, c, 2, &t, &err), -EBADMSG);
        assert_int_equal(lg_chunk_table_new(4095, 0, NULL, 0, &t, &err), -EBADMSG);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_roundtrip),
                cmocka_unit_test(test_empty_and_one),
                cmocka_unit_test(test_hostile),
                cmocka_unit_test(test_new),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
