/* Registry mirrors for lazy layers (docs/lazy-images.md, "Fetching from
 * another legiond"): other legiond nodes (or any registry) that may hold a
 * lazy layer's blobs. legiond's --registry-mirror gives the list; a lazy
 * pull records it in each layer's source.json as
 *   "mirrors": [{"registry": "10.0.0.5:7070", "insecure": true,
 *                "username": "legion", "password": "<token>"}, ...]
 * (username and password only when set), tries it for the small blobs the
 * origin does not give, and the fetcher tries the mirrors before the origin
 * for each range, skipping a mirror that failed for that layer for
 * LG_MIRROR_SKIP_NS. Whatever serves the bytes, they are verified against
 * their digests (blobs) or sha256 (chunks) before use: a mirror can only
 * be slow or useless, never make a node read wrong bytes.
 *
 * Threading: a struct lg_mirrors is plain data, read-only once made; the
 * skip table (struct lg_mirror_skip) is safe to use from several threads.
 * lg_mirrors_blob_get blocks (run it off a loop).
 *
 * Memory: lg_mirrors own their strings (lg_mirrors_clear frees them; a
 * zeroed struct is an empty list). The library never logs. */
#pragma once

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "image/registry.h"

#define LG_MIRRORS_MAX 8
#define LG_MIRROR_SKIP_NS (30ull * 1000000000ull) /* a mirror that failed is left alone this long */
/* A mirror is another node nearby: it answers fast or is skipped. */
#define LG_MIRROR_CONNECT_MS 2000
#define LG_MIRROR_REQUEST_MS 5000

struct lg_mirror {
        char *registry;           /* "host[:port]" */
        char *username, *password; /* NULL: anonymous */
        bool insecure;            /* plain http */
};

struct lg_mirrors {
        struct lg_mirror v[LG_MIRRORS_MAX];
        size_t n;
};

/* Add a mirror (strings copied): -E2BIG beyond LG_MIRRORS_MAX, -EINVAL for
 * a registry that is not "host[:port]". */
int lg_mirrors_add(struct lg_mirrors *m, const char *registry, const char *username, const char *password,
                   bool insecure, struct lg_error *err);
void lg_mirrors_clear(struct lg_mirrors *m);
int lg_mirrors_copy(const struct lg_mirrors *src, struct lg_mirrors *dst, struct lg_error *err);

/* The "mirrors" array of a source.json (NULL: none, which is an empty
 * list). Strict: an array of at most LG_MIRRORS_MAX objects with a string
 * "registry" and optional boolean "insecure" and strings "username",
 * "password"; anything else is -EINVAL. */
int lg_mirrors_from_json(const json_t *arr, struct lg_mirrors *ret, struct lg_error *err);
/* The array to write (NULL when out of memory). */
json_t *lg_mirrors_to_json(const struct lg_mirrors *m);

/* Open a registry client for mirror i for repository, with the mirror
 * timeouts. */
int lg_mirror_open(const struct lg_mirror *m, const char *repository, lg_registry **ret, struct lg_error *err);

/* Whole blob digest (size bytes, verified by the client) from the first
 * mirror that has it, into sink. Before each try after the first,
 * restart(ud) must drop what the sink got (may be NULL when the sink
 * cannot have been called). -ENOENT when there are no mirrors; else the
 * last mirror's error. */
int lg_mirrors_blob_get(const struct lg_mirrors *m, const char *repository, const char *digest, uint64_t size,
                        lg_registry_sink_cb sink, int (*restart)(void *ud), void *ud, struct lg_error *err);

/* One thread's clients of the mirrors (kept between ranges: the
 * connection and a bearer token are reused). Zeroed: none open. */
struct lg_mirror_clients {
        struct {
                char key[600]; /* registry, repository, user: what it was opened for */
                lg_registry *r;
        } c[LG_MIRRORS_MAX];
};
void lg_mirror_clients_close(struct lg_mirror_clients *cl);

struct lg_mirror_skip;
/* Bytes [off, off+len) of blob digest from the first mirror not skipped
 * that gives them and whose bytes accept(ud, buf) takes (it verifies and
 * keeps them: 0, or -EBADMSG to refuse them). A mirror that fails (an
 * error, a timeout, bytes refused) is skipped in skip for
 * LG_MIRROR_SKIP_NS. 0 when a mirror's bytes were accepted; < 0 when none
 * were (-ENOENT: no mirror to try), and the caller goes to the origin. */
int lg_mirrors_range(const struct lg_mirrors *m, struct lg_mirror_skip *skip, struct lg_mirror_clients *cl,
                     const char *repository, const char *digest, uint64_t off, void *buf, size_t len,
                     int (*accept)(void *ud, const void *buf), void *ud, struct lg_error *err);

/* When each mirror of one layer may be tried again (ns, CLOCK_MONOTONIC as
 * lg_now_ns). Zeroed: all may be tried. */
struct lg_mirror_skip {
        _Atomic uint64_t until[LG_MIRRORS_MAX];
};
bool lg_mirror_skip_usable(struct lg_mirror_skip *s, size_t i);
void lg_mirror_skip_failed(struct lg_mirror_skip *s, size_t i);
