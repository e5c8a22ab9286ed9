/* The node's chunk store: the chunks of lazy layers' BLOBs, named by the
 * sha256 of their bytes, so that a chunk is kept once whatever layer or
 * image it comes from (docs/lazy-images.md, "Formats").
 *
 * Layout below dir ($LEGION_HOME/lazy):
 *   chunks/<hh>/<64 hex>   a chunk, mode 0444; hh = its first two hex digits
 *   tmp/.chunk-*           a write in progress (removed by GC once an
 *                          hour old)
 *
 * Writes verify the bytes against the sha256 first, go to a temporary
 * file and are renamed into place (RENAME_NOREPLACE), so a chunk file is
 * never half-written under its name. They are not fsynced one by one (a
 * layer has thousands of chunks): lg_chunk_store_sync makes everything
 * durable at once. Every read hashes the bytes again, so a chunk a crash
 * or the disk damaged is found at its first use: the read fails with
 * -EBADMSG and the file is removed (the fetcher fetches it again).
 *
 * Threading: a store holds file descriptors only; every function may be
 * called from several threads, and several processes (legiond, the
 * fetcher) may use one directory at once. Nothing calls back.
 *
 * Errors: >= 0 or a negative errno, with the optional struct lg_error
 * filled with a one-line message; the library never logs. -ENOENT: no
 * such chunk; -EBADMSG: bytes that do not match their sha256; -EINVAL: a
 * stored chunk of another length than asked (its bytes match); else the
 * errno of a system call.
 *
 * Memory: the store is the caller's to close (NULL is a no-op); it keeps
 * no pointer to anything passed in. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "lazy/chunks.h"

typedef struct lg_chunk_store lg_chunk_store;

/* Open the store under dir, creating dir, chunks/ and tmp/ (0700 for
 * dir, 0755 below) when missing. */
int lg_chunk_store_open(const char *dir, lg_chunk_store **ret, struct lg_error *err);
void lg_chunk_store_close(lg_chunk_store *s);

/* 1 if the chunk is stored (not verified), 0 if not. */
int lg_chunk_store_has(lg_chunk_store *s, const uint8_t sha[32]);
/* Read the chunk into buf (exactly len bytes), verifying its sha256:
 * -EBADMSG if the stored bytes do not match (the file is then removed),
 * -ENOENT if absent. */
int lg_chunk_store_get(lg_chunk_store *s, const uint8_t sha[32], void *buf, size_t len, struct lg_error *err);
/* Verify then store: 0 stored, 1 present already, -EBADMSG when buf does
 * not hash to sha (nothing stored). */
int lg_chunk_store_put(lg_chunk_store *s, const uint8_t sha[32], const void *buf, size_t len, struct lg_error *err);
/* Make every chunk written so far durable (syncfs of the store's file
 * system). */
int lg_chunk_store_sync(lg_chunk_store *s, struct lg_error *err);
/* Remove every chunk no table in keep names, and temporaries an hour old;
 * removed and bytes (may be NULL) count the chunks removed and their
 * bytes. Chunks put while GC runs by a layer not in keep may go: the
 * caller keeps every table of a layer being attached. */
int lg_chunk_store_gc(lg_chunk_store *s, lg_chunk_table *const *keep, size_t n_keep, uint64_t *removed,
                      uint64_t *bytes, struct lg_error *err);
/* How much of a table is local: chunks and their bytes (by presence, not
 * verified). */
int lg_chunk_store_local(lg_chunk_store *s, const lg_chunk_table *t, uint64_t *chunks, uint64_t *bytes);
/* <dir>/chunks/<hh>/<hex> of a chunk, whether or not it exists. */
int lg_chunk_store_path(const lg_chunk_store *s, const uint8_t sha[32], char *buf, size_t cap);
