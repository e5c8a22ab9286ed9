/* The lazy fetcher without FUSE or network (src/lazy/fetcher.c,
 * fetcher-ctl.c): hostile control lines and layer sources, attach, detach,
 * status, node id collisions, and the read path of a local layer (chunks
 * from the store, a missing one EIO, never zeros). The FUSE side and the
 * registry are tests/e2e/test_lazy_fetcher.py's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "lazy/chunkstore.h"
#include "lazy/fetcher.h"

#define HEX_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
/* Same first 15 digits as HEX_A: the same node id. */
#define HEX_A2 "aaaaaaaaaaaaaaabbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define HEX_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define CS 4096
#define N_CHUNKS 3

struct fx {
        char home[256];
        uint8_t blob[N_CHUNKS * CS];
        lg_fetcher *f;
};

static void write_file(const char *path, const void *data, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(lg_write_all(fd, data, len), 0);
        close(fd);
}

/* layers/<hex>/{chunks,source.json}: BLOB of N_CHUNKS chunks of CS. */
static void add_layer(struct fx *x, const char *hex, const char *source) {
        char dir[512], path[600];
        snprintf(dir, sizeof(dir), "%s/lazy/layers/%s", x->home, hex);
        assert_int_equal(lg_mkdir_p(dir, 0755), 0);
        uint8_t t[32 + 48 * N_CHUNKS] = "LGCHUNK1";
        uint32_t v = 1, cs = CS;
        uint64_t size = sizeof(x->blob), n = N_CHUNKS;
        memcpy(t + 8, &v, 4);
        memcpy(t + 12, &cs, 4);
        memcpy(t + 16, &size, 8);
        memcpy(t + 24, &n, 8);
        for (uint64_t i = 0; i < n; i++) {
                uint8_t *e = t + 32 + 48 * i;
                uint64_t off = i * CS;
                memset(e, 0, 48);
                memcpy(e, &off, 8);
                memcpy(e + 8, &cs, 4);
                SHA256(x->blob + off, CS, e + 16);
        }
        snprintf(path, sizeof(path), "%s/chunks", dir);
        write_file(path, t, sizeof(t));
        snprintf(path, sizeof(path), "%s/source.json", dir);
        write_file(path, source, strlen(source));
}

static int setup(void **state) {
        struct fx *x = calloc(1, sizeof(*x));
        snprintf(x->home, sizeof(x->home), "/tmp/lg-test-lazyf-XXXXXX");
        assert_non_null(mkdtemp(x->home));
        for (size_t i = 0; i < sizeof(x->blob); i++)
                x->blob[i] = (uint8_t) (i * 7 + i / CS + 1);
        struct lg_error err;
        struct lg_fetcher_config cfg = {.home = x->home, .timeout_ms = 2000};
        assert_int_equal(lg_fetcher_new(&cfg, &x->f, &err), 0);
        *state = x;
        return 0;
}

static int teardown(void **state) {
        struct fx *x = *state;
        lg_fetcher_free(x->f);
        lg_rm_rf(x->home);
        free(x);
        return 0;
}

/* The answer to line, parsed; "ok" checked against want_ok. */
static json_t *ask(struct fx *x, const char *line, bool want_ok) {
        char *a = lg_fetcher_ctl_answer(x->f, line, strlen(line));
        assert_non_null(a);
        assert_null(strchr(a, '\n'));
        json_t *o = json_loads(a, 0, NULL);
        if (!o || json_is_true(json_object_get(o, "ok")) != want_ok)
                fail_msg("`%s` answered `%s`", line, a);
        free(a);
        return o;
}

static void test_hostile_lines(void **state) {
        struct fx *x = *state;
        static const char *bad[] = {
                "", "{", "[]", "null", "\"ping\"", "{\"op\":1}", "{\"op\":\"nope\"}", "{\"op\":\"attach\"}",
                "{\"op\":\"ping\",\"op\":\"ping\"}", "{\"op\":\"attach\",\"layer\":\"../../etc\"}",
                "{\"op\":\"attach\",\"layer\":\"" HEX_A "a\"}",
                "{\"op\":\"attach\",\"layer\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
                "{\"op\":\"status\",\"layer\":\"" HEX_A "\"}", "{\"op\":\"detach\",\"layer\":\"" HEX_A "\"}",
                "{\"op\":\"attach\",\"layer\":\"" HEX_A "\"}", "{\"op\":\"attach\",\"layer\":7}",
                "{\"op\":\"status\",\"layer\":\"" HEX_A "\\u0000\"}",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                json_decref(ask(x, bad[i], false));
        /* A NUL inside the line is not the end of it. */
        char *a = lg_fetcher_ctl_answer(x->f, "{\"op\":\"ping\"}\0junk", 18);
        assert_non_null(strstr(a, "\"ok\":false"));
        free(a);
        json_t *o = ask(x, "{\"op\":\"ping\"}", true);
        assert_int_equal(json_integer_value(json_object_get(o, "pid")), getpid());
        json_decref(o);
}

static void test_hostile_sources(void **state) {
        struct fx *x = *state;
        static const char *bad[] = {
                "", "[]", "{\"local\":\"yes\"}", "{\"local\":1}", "{\"registry\":1}",
                "{\"registry\":\"r\",\"repository\":\"x\"}",
                "{\"registry\":\"r\",\"repository\":\"x\",\"digest\":\"md5:abc\"}",
                "{\"registry\":\"r\",\"repository\":\"x\",\"digest\":\"sha256:" HEX_A "0\"}",
                "{\"registry\":\"r\",\"repository\":\"x\",\"digest\":\"sha256:" HEX_A "\",\"insecure\":\"no\"}",
                "{\"registry\":\"\",\"repository\":\"x\",\"digest\":\"sha256:" HEX_A "\"}",
                "{\"registry\":\"r\",\"repository\":\"x\",\"digest\":\"sha256:" HEX_A "\",\"username\":[]}",
                "{\"registry\":\"r\\u0000x\",\"repository\":\"x\",\"digest\":\"sha256:" HEX_A "\"}",
                "{\"local\":true,\"local\":false}",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                add_layer(x, HEX_A, bad[i]);
                json_t *o = ask(x, "{\"op\":\"attach\",\"layer\":\"" HEX_A "\"}", false);
                json_decref(o);
        }
        /* Too large to be a source. */
        char *big = malloc(70000);
        memset(big, ' ', 70000);
        memcpy(big, "{\"local\":true}", 14);
        big[69999] = 0;
        add_layer(x, HEX_A, big);
        free(big);
        json_decref(ask(x, "{\"op\":\"attach\",\"layer\":\"" HEX_A "\"}", false));
        /* A damaged chunk table. */
        add_layer(x, HEX_B, "{\"local\":true}");
        char path[600];
        snprintf(path, sizeof(path), "%s/lazy/layers/" HEX_B "/chunks", x->home);
        write_file(path, "LGCHUNK1", 8);
        json_decref(ask(x, "{\"op\":\"attach\",\"layer\":\"" HEX_B "\"}", false));
}

static void test_attach_detach_status(void **state) {
        struct fx *x = *state;
        add_layer(x, HEX_A, "{\"registry\":\"127.0.0.1:1\",\"repository\":\"x\",\"digest\":\"sha256:" HEX_B "\"}");
        json_decref(ask(x, "{\"op\":\"attach\",\"layer\":\"" HEX_A "\"}", true));
        json_decref(ask(x, "{\"op\":\"attach\",\"layer\":\"" HEX_A "\"}", true));
        json_t *o = ask(x, "{\"op\":\"status\",\"layer\":\"" HEX_A "\"}", true);
        assert_int_equal(json_integer_value(json_object_get(o, "chunks")), N_CHUNKS);
        assert_int_equal(json_integer_value(json_object_get(o, "bytes")), N_CHUNKS * CS);
        assert_int_equal(json_integer_value(json_object_get(o, "localChunks")), 0);
        assert_int_equal(json_integer_value(json_object_get(o, "errors")), 0);
        json_decref(o);
        /* Another layer with the same node id is refused. */
        add_layer(x, HEX_A2, "{\"local\":true}");
        o = ask(x, "{\"op\":\"attach\",\"layer\":\"" HEX_A2 "\"}", false);
        assert_non_null(strstr(json_string_value(json_object_get(o, "error")), "node id"));
        json_decref(o);
        char path[600];
        snprintf(path, sizeof(path), "%s/lazy/layers/" HEX_A2, x->home);
        assert_int_equal(lg_rm_rf(path), 0);
        json_decref(ask(x, "{\"op\":\"detach\",\"layer\":\"" HEX_A "\"}", true));
        json_decref(ask(x, "{\"op\":\"status\",\"layer\":\"" HEX_A "\"}", false));
        json_decref(ask(x, "{\"op\":\"detach\",\"layer\":\"" HEX_A "\"}", false));
        /* Detached: a lookup's rescan does not bring it back, attach does. */
        struct lg_fuse_ops ops;
        lg_fetcher_fuse_ops(x->f, &ops);
        uint64_t node, size;
        assert_int_equal(ops.lookup(ops.ud, HEX_A, &node, &size), -ENOENT);
        json_decref(ask(x, "{\"op\":\"attach\",\"layer\":\"" HEX_A "\"}", true));
        assert_int_equal(ops.lookup(ops.ud, HEX_A, &node, &size), 0);
        assert_int_equal(size, N_CHUNKS * CS);
        uint64_t size2;
        assert_int_equal(ops.getattr(ops.ud, node, &size2), 0);
        assert_int_equal(size2, size);
        assert_int_equal(ops.getattr(ops.ud, node + 1, &size2), -ENOENT);
        char name[256];
        assert_int_equal(ops.next(ops.ud, 0, &node, name), 1);
        assert_string_equal(name, HEX_A);
        assert_int_equal(ops.next(ops.ud, node, &node, name), 0);
}

static void test_local_layer_reads(void **state) {
        struct fx *x = *state;
        add_layer(x, HEX_B, "{\"local\":true}");
        struct lg_fuse_ops ops;
        lg_fetcher_fuse_ops(x->f, &ops);
        uint64_t node, size;
        assert_int_equal(ops.lookup(ops.ud, HEX_B, &node, &size), 0); /* found by the rescan */
        lg_chunk_store *st;
        struct lg_error err;
        char dir[300];
        snprintf(dir, sizeof(dir), "%s/lazy", x->home);
        assert_int_equal(lg_chunk_store_open(dir, &st, &err), 0);
        uint8_t sha[32];
        for (int i = 0; i < N_CHUNKS; i += 2) { /* chunks 0 and 2 */
                SHA256(x->blob + i * CS, CS, sha);
                assert_true(lg_chunk_store_put(st, sha, x->blob + i * CS, CS, &err) >= 0);
        }
        uint8_t buf[N_CHUNKS * CS];
        memset(buf, 0xee, sizeof(buf));
        /* Within a chunk, across none missing, at and past the end. */
        assert_int_equal(ops.read(ops.ud, node, 100, 1000, buf), 1000);
        assert_memory_equal(buf, x->blob + 100, 1000);
        assert_int_equal(ops.read(ops.ud, node, 2 * CS + 10, CS, buf), CS - 10);
        assert_memory_equal(buf, x->blob + 2 * CS + 10, CS - 10);
        assert_int_equal(ops.read(ops.ud, node, 3 * CS, CS, buf), 0);
        /* Chunk 1 is missing and a local layer is never fetched: EIO. */
        assert_int_equal(ops.read(ops.ud, node, CS - 10, 20, buf), -EIO);
        assert_int_equal(ops.read(ops.ud, node, 0, sizeof(buf), buf), -EIO);
        /* Once in the store, served. */
        SHA256(x->blob + CS, CS, sha);
        assert_true(lg_chunk_store_put(st, sha, x->blob + CS, CS, &err) >= 0);
        assert_int_equal(ops.read(ops.ud, node, 0, sizeof(buf), buf), sizeof(buf));
        assert_memory_equal(buf, x->blob, sizeof(buf));
        /* An unknown node. */
        assert_int_equal(ops.read(ops.ud, node + 1, 0, 10, buf), -EIO);
        json_t *o = ask(x, "{\"op\":\"status\",\"layer\":\"" HEX_B "\"}", true);
        assert_int_equal(json_integer_value(json_object_get(o, "localChunks")), N_CHUNKS);
        assert_int_equal(json_integer_value(json_object_get(o, "errors")), 2);
        assert_int_equal(json_integer_value(json_object_get(o, "fetchedBytes")), 0);
        json_decref(o);
        /* First reads recorded, each chunk once, in order. */
        char path[600], rec[64];
        snprintf(path, sizeof(path), "%s/lazy/layers/" HEX_B "/accessed", x->home);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        ssize_t n = read(fd, rec, sizeof(rec));
        close(fd);
        uint32_t want[] = {htole32(0), htole32(2), htole32(1)};
        assert_int_equal(n, sizeof(want));
        assert_memory_equal(rec, want, sizeof(want));
        lg_chunk_store_close(st);
}

/* A chunk damaged in the store is caught on its first use by this
 * fetcher (EIO for a local layer; the file removed); once verified it is
 * served from memory, so a change to the file after that is never served
 * either. */
static void test_damaged_chunk_caught_on_first_use(void **state) {
        struct fx *x = *state;
        add_layer(x, HEX_B, "{\"local\":true}");
        struct lg_fuse_ops ops;
        lg_fetcher_fuse_ops(x->f, &ops);
        uint64_t node, size;
        assert_int_equal(ops.lookup(ops.ud, HEX_B, &node, &size), 0);
        lg_chunk_store *st;
        struct lg_error err;
        char dir[300], path[600], hex[65];
        snprintf(dir, sizeof(dir), "%s/lazy", x->home);
        assert_int_equal(lg_chunk_store_open(dir, &st, &err), 0);
        uint8_t sha[32], bad[CS], buf[CS];
        SHA256(x->blob, CS, sha);
        for (int i = 0; i < 32; i++)
                snprintf(hex + 2 * i, 3, "%02x", sha[i]);
        snprintf(path, sizeof(path), "%s/chunks/%.2s/%s", dir, hex, hex);
        memcpy(bad, x->blob, CS);
        bad[100] ^= 0xff;
        /* Damaged before the first use: EIO, never the bad bytes. */
        assert_true(lg_chunk_store_put(st, sha, x->blob, CS, &err) >= 0);
        chmod(path, 0644);
        write_file(path, bad, CS);
        memset(buf, 0xee, sizeof(buf));
        assert_int_equal(ops.read(ops.ud, node, 0, 200, buf), -EIO);
        assert_int_equal(access(path, F_OK), -1);
        /* Stored right: served, verified once; damaged after: still the
         * verified bytes. */
        assert_true(lg_chunk_store_put(st, sha, x->blob, CS, &err) >= 0);
        assert_int_equal(ops.read(ops.ud, node, 0, 200, buf), 200);
        assert_memory_equal(buf, x->blob, 200);
        chmod(path, 0644);
        write_file(path, bad, CS);
        assert_int_equal(ops.read(ops.ud, node, 50, 100, buf), 100);
        assert_memory_equal(buf, x->blob + 50, 100);
        /* Detached (its image removed): attached again, the chunk is
         * verified again on its first use. */
        assert_int_equal(lg_fetcher_detach(x->f, HEX_B, &err), 0);
        assert_int_equal(lg_fetcher_attach(x->f, HEX_B, &err), 0);
        assert_int_equal(ops.read(ops.ud, node, 50, 100, buf), -EIO);
        lg_chunk_store_close(st);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_hostile_lines, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hostile_sources, setup, teardown),
                cmocka_unit_test_setup_teardown(test_attach_detach_status, setup, teardown),
                cmocka_unit_test_setup_teardown(test_local_layer_reads, setup, teardown),
                cmocka_unit_test_setup_teardown(test_damaged_chunk_caught_on_first_use, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
