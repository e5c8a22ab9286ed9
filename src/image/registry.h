/* Registry client: one repository of an OCI registry over the distribution
 * API v2 (docs/images.md "Registry client"). lg_image_pull (pull.c), the
 * lazy artifact (lazy-artifact.h) and the lazy fetcher's range reads all go
 * through it, so requests, authentication, redirects and errors are made in
 * one place (registry.c).
 *
 * Threading: a client is one libcurl handle and not thread-safe: use one
 * client per thread (the fetcher opens one per reader thread). Clients on
 * different threads are independent. Every call blocks (run it off an
 * event loop).
 *
 * Authentication answers a 401 challenge once per request: Basic with the
 * given credentials, or Bearer with a token fetched from the challenge's
 * realm (with the credentials as Basic, or anonymously), kept for later
 * requests and fetched again when the registry challenges once more (an
 * expired token). Push calls ask for the scope "pull,push". Redirects of
 * GET and HEAD (blob storage) are followed by hand so that credentials
 * only ever go to the registry's own origin, and an https registry may not
 * redirect to plain http.
 *
 * Time: connecting is bounded by connect_ms (default 15 s); each call that
 * moves a bounded amount of data (a range read, manifests, HEAD, the start
 * of an upload, tokens) must finish within request_ms (default 60 s) from
 * its start, all its redirects and authentication included, else -ETIMEDOUT.
 * Whole-blob transfers (lg_registry_blob_get, the data of a push) have no
 * total limit but fail after 60 s without progress.
 *
 * Memory and ownership: strings passed in are copied; what a call returns
 * in a buffer belongs to the caller (free()). The library never logs.
 *
 * Errors: >= 0 on success, a negative errno with err filled (the message
 * names the registry and the object):
 *   -ECONNREFUSED / -EHOSTUNREACH / -ETIMEDOUT   registry unreachable, slow
 *   -EACCES    authentication failed (401/403)
 *   -ENOENT    no such blob or manifest (404)
 *   -ERANGE    a range past the end of the blob (416, or a shorter answer)
 *   -EBADMSG   content that does not match its digest or size
 *   -EPROTO    an answer that breaks the protocol (a range ignored, a
 *              missing Location, too many redirects, TLS)
 *   -EFBIG     an answer over a size limit
 *   -EAGAIN    HTTP 429; -EIO other 5xx and transport failures
 *   -EINVAL    bad arguments (a malformed digest, host or repository) */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

typedef struct lg_registry lg_registry;

/* Registry credentials. A NULL/empty username means anonymous; a bearer
 * token challenge is answered with these as basic credentials at the realm. */
struct lg_registry_auth {
        const char *username;
        const char *password;
        bool insecure;          /* plain http (default for 127.0.0.1/localhost) */
        const char *ca_file;    /* extra CA for https; NULL = system */
};

/* A client for registry ("host[:port]"; "docker.io" means
 * registry-1.docker.io) and repository ("library/busybox"). auth may be
 * NULL (anonymous). Nothing is sent yet. */
int lg_registry_open(const char *registry, const char *repository, const struct lg_registry_auth *auth,
                     lg_registry **ret, struct lg_error *err);
void lg_registry_close(lg_registry *r); /* NULL is fine */
static inline void lg_registry_closep(lg_registry **p) { lg_registry_close(*p); }
#define _cleanup_registry_ _cleanup_(lg_registry_closep)

/* Timeouts in milliseconds (see "Time" above); 0 keeps the default. */
void lg_registry_set_timeouts(lg_registry *r, unsigned connect_ms, unsigned request_ms);

/* The registry as named at open ("127.0.0.1:5000"), and the repository. */
const char *lg_registry_host(const lg_registry *r);
const char *lg_registry_repository(const lg_registry *r);

/* Read bytes [off, off+len) of blob digest into buf: exactly len bytes, or
 * an error. The registry must answer 206 with that range (200 only when
 * off is 0 and the whole blob is len bytes); a range past the end is
 * -ERANGE. len 0 is -EINVAL. Redirects (blob storage) are followed with
 * the same Range. The bytes are not verified (the caller knows their
 * sha256). */
int lg_registry_blob_range(lg_registry *r, const char *digest, uint64_t off, void *buf, size_t len,
                           struct lg_error *err);

/* Called with each piece of a blob's body; < 0 stops the transfer and is
 * returned (fill err). */
typedef int (*lg_registry_sink_cb)(void *ud, const void *buf, size_t len, struct lg_error *err);

/* GET the whole blob digest, streamed to sink, verified: it must be size
 * bytes and hash to digest (-EBADMSG), else the error comes after the sink
 * saw the bytes (the sink's owner discards them). */
int lg_registry_blob_get(lg_registry *r, const char *digest, uint64_t size, lg_registry_sink_cb sink, void *ud,
                         struct lg_error *err);
/* The same into memory for small blobs (configs): at most max bytes, NUL
 * terminated; *ret is the caller's. */
int lg_registry_blob_read(lg_registry *r, const char *digest, uint64_t max, char **ret, size_t *len,
                          struct lg_error *err);

/* HEAD the blob: 1 present (size into *size, may be NULL), 0 absent. */
int lg_registry_blob_exists(lg_registry *r, const char *digest, uint64_t *size, struct lg_error *err);

/* Upload the size bytes of fd (read with pread from offset 0) as blob
 * digest, unless HEAD finds it: 1 when it was there, 0 when pushed. The
 * registry checks the digest; a mismatch is -EBADMSG. Monolithic: POST
 * /blobs/uploads/, then PUT <location>?digest=. */
int lg_registry_blob_push(lg_registry *r, const char *digest, int fd, uint64_t size, struct lg_error *err);
/* The same for the file at path, hashed first: digest_out and size_out
 * (may be NULL) get its digest and size. */
int lg_registry_blob_push_path(lg_registry *r, const char *path, char digest_out[72], uint64_t *size_out,
                               struct lg_error *err);
/* The same from memory; digest_out (may be NULL) gets its digest. */
int lg_registry_blob_push_buf(lg_registry *r, const void *buf, size_t len, char digest_out[72],
                              struct lg_error *err);

/* A manifest (or index) and what the registry said of it. */
struct lg_registry_manifest {
        char *buf;              /* NUL terminated; free() or lg_registry_manifest_clear */
        size_t len;
        char media_type[128];   /* the Content-Type's media type, lowercase */
        char digest[72];        /* sha256 of buf */
};
void lg_registry_manifest_clear(struct lg_registry_manifest *m);

/* GET manifests/<ref> (a tag or "sha256:<hex>"), at most 4 MiB. accept is
 * the value of the Accept header (NULL: OCI and Docker images and
 * indexes). Verified against ref when it is a digest and against the
 * registry's Docker-Content-Digest. */
int lg_registry_manifest_get(lg_registry *r, const char *ref, const char *accept, struct lg_registry_manifest *ret,
                             struct lg_error *err);

/* PUT manifests/<ref> (a tag, or NULL: by its own digest) with Content-Type
 * media_type. digest_out (may be NULL) gets the digest. The registry
 * checks that every blob and manifest it names is there. */
int lg_registry_manifest_push(lg_registry *r, const char *ref, const char *media_type, const void *buf, size_t len,
                              char digest_out[72], struct lg_error *err);
/* The same; *subject_indexed is set when the registry said (OCI-Subject)
 * that it keeps the referrers of the manifest's subject itself. */
int lg_registry_manifest_push_subject(lg_registry *r, const char *ref, const char *media_type, const void *buf,
                                      size_t len, char digest_out[72], bool *subject_indexed, struct lg_error *err);

/* The referrers of manifest subject ("sha256:<hex>"): GET
 * /v2/<repo>/referrers/<subject> (OCI 1.1); where the registry does not
 * have that API (404), the index at tag "sha256-<hex>" (the tag schema).
 * 0 with *ret the index (an OCI image index, not checked further here);
 * *from_tag (may be NULL) tells which source answered; -ENOENT when there
 * are no referrers (the tag does not exist). */
int lg_registry_referrers(lg_registry *r, const char *subject, struct lg_registry_manifest *ret, bool *from_tag,
                          struct lg_error *err);

/* The tag-schema tag of subject: "sha256-<hex>" (72 bytes). -EINVAL for a
 * malformed digest. */
int lg_registry_referrers_tag(const char *subject, char tag[72], struct lg_error *err);
