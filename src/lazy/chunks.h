/* The chunk table of a lazy layer: how its EROFS BLOB splits into chunks
 * and the sha256 of each (docs/lazy-images.md, "Formats").
 *
 * A chunk is [offset, offset + length) of BLOB. The chunks of a table are
 * sorted, contiguous from 0 and cover BLOB exactly; each is 4 KiB aligned
 * and at most chunk_size long (chunk_size: a power of two, 4 KiB..4 MiB);
 * only the last may end off a 4 KiB boundary. A table holds at most
 * LG_CHUNK_TABLE_MAX_CHUNKS chunks.
 *
 * Binary form, little endian:
 *   "LGCHUNK1" | u32 version=1 | u32 chunk_size | u64 blob_size | u64 n
 *   n x { u64 offset | u32 length | u32 flags=0 | u8 sha256[32] }
 *
 * Threading: a table is immutable once made; any number of threads may
 * read one at once. Nothing here keeps global state.
 *
 * Errors: >= 0 or a negative errno, with the optional struct lg_error
 * filled with a one-line message; the library never logs. -EBADMSG: a
 * table (bytes, file or chunk list) that breaks a rule above; -ERANGE: an
 * offset past the end (lg_chunk_table_find); else the errno of a system
 * call.
 *
 * Memory: tables are the caller's to free with lg_chunk_table_free (NULL
 * is a no-op); pointers from lg_chunk_table_at live as long as the
 * table. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"

#define LG_CHUNK_TABLE_MAGIC "LGCHUNK1"
#define LG_CHUNK_TABLE_VERSION 1
#define LG_CHUNK_TABLE_HEADER 32
#define LG_CHUNK_TABLE_ENTRY 48
#define LG_CHUNK_TABLE_MAX_CHUNKS (16u << 20)
#define LG_CHUNK_ALIGN 4096u
#define LG_CHUNK_SIZE_MIN 4096u
#define LG_CHUNK_SIZE_MAX (4u << 20)
#define LG_CHUNK_SIZE_DEFAULT 65536u

struct lg_chunk {
        uint64_t offset;
        uint32_t length;
        uint8_t sha256[32];
};

typedef struct lg_chunk_table lg_chunk_table;

/* Parse the binary form (buf is not kept). */
int lg_chunk_table_parse(const void *buf, size_t len, lg_chunk_table **ret, struct lg_error *err);
int lg_chunk_table_load(const char *path, lg_chunk_table **ret, struct lg_error *err);
/* Write the binary form to path atomically (a temporary in the same
 * directory, fsynced, renamed over path; the directory fsynced). Mode
 * 0644. */
int lg_chunk_table_save(const lg_chunk_table *t, const char *path, struct lg_error *err);
/* A table from n chunks (copied), checked by the same rules as parse. */
int lg_chunk_table_new(uint32_t chunk_size, uint64_t blob_size, const struct lg_chunk *chunks, size_t n,
                       lg_chunk_table **ret, struct lg_error *err);
/* The binary form in one malloc'd buffer (free()). */
int lg_chunk_table_serialize(const lg_chunk_table *t, void **ret, size_t *len);

size_t lg_chunk_table_count(const lg_chunk_table *t);
uint32_t lg_chunk_table_chunk_size(const lg_chunk_table *t);
uint64_t lg_chunk_table_blob_size(const lg_chunk_table *t);
/* Chunk i < count. */
const struct lg_chunk *lg_chunk_table_at(const lg_chunk_table *t, size_t i);
/* Index of the chunk holding offset; -ERANGE past the end. */
ssize_t lg_chunk_table_find(const lg_chunk_table *t, uint64_t offset);
void lg_chunk_table_free(lg_chunk_table *t);
