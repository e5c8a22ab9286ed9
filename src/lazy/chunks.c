/* Chunk tables (chunks.h): checking, parsing, loading and atomic saving of
 * the binary form, and lookups by BLOB offset. */
#include "lazy/chunks.h"

#include <endian.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

struct lg_chunk_table {
        uint32_t chunk_size;
        uint64_t blob_size;
        size_t n;
        struct lg_chunk *chunks;
};

static int bad(struct lg_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct lg_error *err, const char *fmt, ...) {
        char msg[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return lg_error_setm(err, EBADMSG, "chunk table: %s", msg);
}

/* The rules of chunks.h for chunk i of n, whose offset must be at. */
static int check_chunk(const struct lg_chunk *c, size_t i, size_t n, uint32_t chunk_size, uint64_t at,
                       struct lg_error *err) {
        if (c->offset != at)
                return bad(err, "chunk %zu starts at %" PRIu64 ", not where the one before ends", i, c->offset);
        if (c->length == 0)
                return bad(err, "chunk %zu is empty", i);
        if (c->length > chunk_size)
                return bad(err, "chunk %zu is %" PRIu32 " bytes, over the chunk size", i, c->length);
        if (c->offset % LG_CHUNK_ALIGN)
                return bad(err, "chunk %zu starts at %" PRIu64 ", not 4 KiB aligned", i, c->offset);
        if (i + 1 < n && c->length % LG_CHUNK_ALIGN)
                return bad(err, "chunk %zu is %" PRIu32 " bytes, not a multiple of 4 KiB", i, c->length);
        return 0;
}

static int check_header(uint32_t chunk_size, size_t n, struct lg_error *err) {
        if (chunk_size < LG_CHUNK_SIZE_MIN || chunk_size > LG_CHUNK_SIZE_MAX || (chunk_size & (chunk_size - 1)))
                return bad(err, "chunk size %" PRIu32 " is not a power of two in 4 KiB..4 MiB", chunk_size);
        if (n > LG_CHUNK_TABLE_MAX_CHUNKS)
                return bad(err, "%zu chunks, over the limit of %u", n, LG_CHUNK_TABLE_MAX_CHUNKS);
        return 0;
}

static int table_alloc(uint32_t chunk_size, uint64_t blob_size, size_t n, lg_chunk_table **ret,
                       struct lg_error *err) {
        lg_chunk_table *t = calloc(1, sizeof(*t));
        if (!t || !(t->chunks = calloc(n ? n : 1, sizeof(*t->chunks)))) {
                free(t);
                return lg_error_setm(err, ENOMEM, "chunk table: out of memory");
        }
        t->chunk_size = chunk_size;
        t->blob_size = blob_size;
        t->n = n;
        *ret = t;
        return 0;
}

int lg_chunk_table_new(uint32_t chunk_size, uint64_t blob_size, const struct lg_chunk *chunks, size_t n,
                       lg_chunk_table **ret, struct lg_error *err) {
        int r = check_header(chunk_size, n, err);
        if (r < 0)
                return r;
        uint64_t at = 0;
        for (size_t i = 0; i < n; i++) {
                if ((r = check_chunk(&chunks[i], i, n, chunk_size, at, err)) < 0)
                        return r;
                at += chunks[i].length;
        }
        if (at != blob_size)
                return bad(err, "chunks cover %" PRIu64 " bytes of a %" PRIu64 " byte blob", at, blob_size);
        lg_chunk_table *t;
        if ((r = table_alloc(chunk_size, blob_size, n, &t, err)) < 0)
                return r;
        if (n)
                memcpy(t->chunks, chunks, n * sizeof(*chunks));
        *ret = t;
        return 0;
}

static uint32_t get32(const uint8_t *p) {
        uint32_t v;
        memcpy(&v, p, 4);
        return le32toh(v);
}

static uint64_t get64(const uint8_t *p) {
        uint64_t v;
        memcpy(&v, p, 8);
        return le64toh(v);
}

int lg_chunk_table_parse(const void *buf, size_t len, lg_chunk_table **ret, struct lg_error *err) {
        const uint8_t *p = buf;
        if (len < LG_CHUNK_TABLE_HEADER)
                return bad(err, "%zu bytes, shorter than the %d byte header", len, LG_CHUNK_TABLE_HEADER);
        if (memcmp(p, LG_CHUNK_TABLE_MAGIC, 8) != 0)
                return lg_error_setm(err, EBADMSG, "chunk table: bad magic (not a chunk table)");
        uint32_t version = get32(p + 8), chunk_size = get32(p + 12);
        uint64_t blob_size = get64(p + 16), n64 = get64(p + 24);
        if (version != LG_CHUNK_TABLE_VERSION)
                return bad(err, "version %" PRIu32 ", want %d", version, LG_CHUNK_TABLE_VERSION);
        if (n64 > LG_CHUNK_TABLE_MAX_CHUNKS)
                return bad(err, "%" PRIu64 " chunks, over the limit of %u", n64, LG_CHUNK_TABLE_MAX_CHUNKS);
        size_t n = (size_t) n64;
        int r = check_header(chunk_size, n, err);
        if (r < 0)
                return r;
        if ((len - LG_CHUNK_TABLE_HEADER) / LG_CHUNK_TABLE_ENTRY != n ||
            (len - LG_CHUNK_TABLE_HEADER) % LG_CHUNK_TABLE_ENTRY)
                return bad(err, "%zu bytes of entries for %zu chunks", len - LG_CHUNK_TABLE_HEADER, n);
        lg_chunk_table *t;
        if ((r = table_alloc(chunk_size, blob_size, n, &t, err)) < 0)
                return r;
        uint64_t at = 0;
        for (size_t i = 0; i < n; i++) {
                const uint8_t *e = p + LG_CHUNK_TABLE_HEADER + i * LG_CHUNK_TABLE_ENTRY;
                struct lg_chunk *c = &t->chunks[i];
                c->offset = get64(e);
                c->length = get32(e + 8);
                uint32_t flags = get32(e + 12);
                memcpy(c->sha256, e + 16, 32);
                if (flags)
                        r = bad(err, "chunk %zu has flags %#" PRIx32 " (none are defined)", i, flags);
                else
                        r = check_chunk(c, i, n, chunk_size, at, err);
                if (r < 0) {
                        lg_chunk_table_free(t);
                        return r;
                }
                at += c->length;
        }
        if (at != blob_size) {
                lg_chunk_table_free(t);
                return bad(err, "chunks cover %" PRIu64 " bytes of a %" PRIu64 " byte blob", at, blob_size);
        }
        *ret = t;
        return 0;
}

int lg_chunk_table_serialize(const lg_chunk_table *t, void **ret, size_t *len) {
        size_t size = LG_CHUNK_TABLE_HEADER + t->n * LG_CHUNK_TABLE_ENTRY;
        uint8_t *b = calloc(1, size);
        if (!b)
                return -ENOMEM;
        uint32_t v32;
        uint64_t v64;
        memcpy(b, LG_CHUNK_TABLE_MAGIC, 8);
        v32 = htole32(LG_CHUNK_TABLE_VERSION);
        memcpy(b + 8, &v32, 4);
        v32 = htole32(t->chunk_size);
        memcpy(b + 12, &v32, 4);
        v64 = htole64(t->blob_size);
        memcpy(b + 16, &v64, 8);
        v64 = htole64((uint64_t) t->n);
        memcpy(b + 24, &v64, 8);
        for (size_t i = 0; i < t->n; i++) {
                uint8_t *e = b + LG_CHUNK_TABLE_HEADER + i * LG_CHUNK_TABLE_ENTRY;
                v64 = htole64(t->chunks[i].offset);
                memcpy(e, &v64, 8);
                v32 = htole32(t->chunks[i].length);
                memcpy(e + 8, &v32, 4);
                /* flags (e + 12) stay 0 */
                memcpy(e + 16, t->chunks[i].sha256, 32);
        }
        *ret = b;
        *len = size;
        return 0;
}

int lg_chunk_table_load(const char *path, lg_chunk_table **ret, struct lg_error *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); /* a FIFO: no wait */
        if (fd < 0)
                return lg_error_set(err, errno, "open chunk table `%s`", path);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return lg_error_set(err, errno, "stat chunk table `%s`", path);
        if (!S_ISREG(st.st_mode))
                return lg_error_setm(err, EBADMSG, "chunk table `%s` is not a regular file", path);
        if ((uint64_t) st.st_size > LG_CHUNK_TABLE_HEADER + (uint64_t) LG_CHUNK_TABLE_MAX_CHUNKS * LG_CHUNK_TABLE_ENTRY)
                return lg_error_setm(err, EBADMSG, "chunk table `%s` is too large (%" PRIu64 " bytes)", path,
                                     (uint64_t) st.st_size);
        size_t len = (size_t) st.st_size;
        _cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
        if (!buf)
                return lg_error_setm(err, ENOMEM, "read chunk table `%s`: out of memory", path);
        ssize_t got = lg_read_all(fd, buf, len);
        if (got < 0)
                return lg_error_set(err, (int) -got, "read chunk table `%s`", path);
        int r = lg_chunk_table_parse(buf, (size_t) got, ret, err);
        if (r < 0)
                return lg_error_wrap(err, r, "`%s`", path);
        return 0;
}

int lg_chunk_table_save(const lg_chunk_table *t, const char *path, struct lg_error *err) {
        _cleanup_free_ void *buf = NULL;
        size_t len;
        if (lg_chunk_table_serialize(t, &buf, &len) < 0)
                return lg_error_setm(err, ENOMEM, "save chunk table: out of memory");
        char tmp[PATH_MAX], dir[PATH_MAX], rnd[17];
        int r = lg_random_hex(rnd, 8);
        if (r < 0)
                return lg_error_set(err, -r, "save chunk table `%s`", path);
        if (snprintf(tmp, sizeof(tmp), "%s.tmp-%s", path, rnd) >= (int) sizeof(tmp) ||
            snprintf(dir, sizeof(dir), "%s", path) >= (int) sizeof(dir))
                return lg_error_setm(err, ENAMETOOLONG, "chunk table path too long");
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return lg_error_set(err, errno, "create `%s`", tmp);
        if ((r = lg_write_all(fd, buf, len)) < 0 || (fsync(fd) < 0 && (r = -errno))) {
                unlink(tmp);
                return lg_error_set(err, -r, "write `%s`", tmp);
        }
        if (rename(tmp, path) < 0) {
                r = errno;
                unlink(tmp);
                return lg_error_set(err, r, "rename `%s` to `%s`", tmp, path);
        }
        _cleanup_close_ int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0)
                return lg_error_set(err, errno, "fsync the directory of `%s`", path);
        return 0;
}

size_t lg_chunk_table_count(const lg_chunk_table *t) { return t->n; }
uint32_t lg_chunk_table_chunk_size(const lg_chunk_table *t) { return t->chunk_size; }
uint64_t lg_chunk_table_blob_size(const lg_chunk_table *t) { return t->blob_size; }

const struct lg_chunk *lg_chunk_table_at(const lg_chunk_table *t, size_t i) {
        return i < t->n ? &t->chunks[i] : NULL;
}

ssize_t lg_chunk_table_find(const lg_chunk_table *t, uint64_t offset) {
        if (offset >= t->blob_size)
                return -ERANGE;
        /* Chunks are contiguous and sorted: the last whose offset <= offset. */
        size_t lo = 0, hi = t->n;
        while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;
                if (t->chunks[mid].offset <= offset)
                        lo = mid;
                else
                        hi = mid;
        }
        return (ssize_t) lo;
}

void lg_chunk_table_free(lg_chunk_table *t) {
        if (!t)
                return;
        free(t->chunks);
        free(t);
}
