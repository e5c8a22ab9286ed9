/* The legion-init control protocol: framing shared by legion-init (inside
 * the sandbox), the sandbox library (on the host) and language workers.
 *
 * A frame is a 4-byte little-endian payload length followed by the payload:
 * a sequence of NUL-terminated "key=value" fields. The first field is
 * "op=<verb>". Keys may repeat (arg=, env=) and keep their order. A payload
 * is at most LG_PROTO_MAX bytes; anything larger, a field without '=', or a
 * payload not ending in NUL is a protocol error. File descriptors travel
 * beside a frame as SCM_RIGHTS on a Unix socket. docs/init-protocol.md is the
 * reference for the verbs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LG_PROTO_MAX (1u << 20)
#define LG_PROTO_MAX_FDS 3

struct lg_msg {
        char *buf;      /* payload: fields separated by NUL */
        size_t len;     /* bytes used in buf */
        size_t cap;
        int fds[LG_PROTO_MAX_FDS];
        int nfds;
};

void lg_msg_init(struct lg_msg *m);
/* Free the buffer and close any fds still held. */
void lg_msg_free(struct lg_msg *m);
void lg_msg_reset(struct lg_msg *m);

/* Append "key=value". Returns 0 or -ENOMEM / -EMSGSIZE. */
int lg_msg_add(struct lg_msg *m, const char *key, const char *value);
int lg_msg_addf(struct lg_msg *m, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* First value for key, or NULL. */
const char *lg_msg_get(const struct lg_msg *m, const char *key);
/* Iterate values of a repeated key: start with *pos = 0; returns NULL at end. */
const char *lg_msg_next(const struct lg_msg *m, const char *key, size_t *pos);
/* Parse an integer field; -ENOENT if absent, -EINVAL if malformed. */
int lg_msg_get_int(const struct lg_msg *m, const char *key, long long *ret);

/* Validate a raw payload as received (used by lg_msg_recv and fuzz tests). */
int lg_msg_parse(struct lg_msg *m, const char *payload, size_t len);

/* Blocking send/receive of one frame (with its fds) on a stream socket.
 * lg_msg_recv returns 1 for a frame, 0 on clean EOF, -errno on error
 * (-EPROTO for a malformed frame). */
int lg_msg_send(int sock, const struct lg_msg *m);
int lg_msg_recv(int sock, struct lg_msg *m);
