/* DNS forwarder for sandboxes: listens on the gateway address of the
 * sandbox network (net.h, the only host address sandboxes reach, port 53)
 * and relays each query to the host's resolvers, so that a sandbox's
 * /etc/resolv.conf can name an address it is allowed to reach while the
 * answers come from the host's own resolver configuration.
 *
 * What it does with a datagram (UDP; TCP below):
 * - A query is accepted only when it is a plausible standard query: 17 to
 *   LG_DNS_QUERY_MAX bytes, QR clear, opcode QUERY, one question with a
 *   well-formed uncompressed name (labels up to 63, name up to 255 bytes),
 *   no answer or authority records, at most one additional record (EDNS
 *   OPT) and nothing after the question without one. Anything else is
 *   dropped without a reply (never reflected, never amplified) and counted.
 * - It goes to an upstream under a fresh random ID (the client's ID is kept
 *   in the pending table and restored on the answer), from one socket per
 *   address family. An answer is taken only from the upstream the query
 *   went to, with that ID, QR set and the query's question echoed; anything
 *   else from upstream is dropped and counted. The first answer ends the
 *   query: each query yields at most one answer to its client.
 * - No answer within the timeout (default LG_DNS_TIMEOUT_MS): the same
 *   query goes to the next upstream; when every upstream has had its try,
 *   the client gets SERVFAIL (the size of its query: header and question).
 *   Queries start at the upstream that answered last, so a dead first
 *   nameserver costs one timeout, not one per query.
 * - The pending table holds at most max_pending queries (default and
 *   upper bound LG_DNS_PENDING_MAX). When it is full a new query is
 *   dropped (counted as `full`); the client's resolver retries. Queries in
 *   flight are never evicted for newer ones.
 * - TCP on the same address and port (clients retry truncated answers
 *   over it): the same checks on each length-prefixed query; a bad length
 *   or a malformed query closes the connection. A connection handles one
 *   query at a time, each over a fresh connection to an upstream (the
 *   client's ID kept), with the same timeout and next-upstream order.
 *   At most LG_DNS_TCP_CONNS_MAX client connections (more are closed at
 *   once, counted as `full`); one that has not sent a whole query within
 *   LG_DNS_TCP_IDLE_MS of its previous answer (or of connecting) is
 *   closed, and so is one that leaves over 256 KiB of answers unread.
 *
 * Threading: everything runs on the loop given to lg_dns_new and is not
 * thread-safe. The loop never blocks: sends are non-blocking
 * (uv_udp_try_send; a datagram the kernel cannot take at once is dropped
 * and counted, as the network would). lg_dns_new reads the resolv.conf
 * file (a few hundred bytes, once, at start) on the calling thread.
 *
 * Callbacks: none; the forwarder reports through lg_dns_stats only (the
 * library never logs).
 *
 * Memory and ownership: strings passed in are copied. lg_dns_free closes
 * the sockets and drops pending queries; the handle's memory is released
 * from the loop when libuv has closed them, so the loop must run (or be
 * closed with uv_run until it has no handles) after lg_dns_free.
 *
 * Errors: >= 0 or -errno, err says why in one line (-EINVAL: a bad
 * address; -ENOENT: no usable nameserver; -EADDRINUSE etc. from bind). */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/util.h"

#define LG_DNS_UPSTREAMS_MAX 8
#define LG_DNS_PENDING_MAX 4096  /* queries in flight */
#define LG_DNS_QUERY_MAX 1232    /* bytes; EDNS's safe UDP size */
#define LG_DNS_TIMEOUT_MS 2000   /* per upstream try */
#define LG_DNS_ADDR_MAX 56       /* "[IPv6]:PORT" and the NUL */
#define LG_DNS_TCP_CONNS_MAX 128 /* TCP clients at once */
#define LG_DNS_TCP_IDLE_MS 10000

typedef struct lg_dns lg_dns;

struct lg_dns_stats {
        uint64_t queries;   /* accepted from clients and forwarded */
        uint64_t answers;   /* relayed to clients */
        uint64_t dropped;   /* malformed or unexpected datagrams, from either side, and failed sends */
        uint64_t full;      /* queries dropped because the pending table was full; TCP
                             * connections closed for being over the limit */
        uint64_t timeouts;  /* upstream tries that got no answer in time */
        uint64_t failed;    /* queries answered SERVFAIL: every upstream timed out or was unreachable */
        unsigned pending;   /* queries in flight now */
};

/* Listen on listen_ip (IPv4 or IPv6 literal) UDP and TCP port and forward to
 * upstreams, a NULL-terminated list of "IP", "IP:PORT", "[IPv6]" or
 * "[IPv6]:PORT" (port 53 by default; at most LG_DNS_UPSTREAMS_MAX; the
 * listening address itself is refused: it would forward to itself).
 * upstreams NULL = the nameservers of /etc/resolv.conf
 * (lg_dns_resolv_conf). */
int lg_dns_new(uv_loop_t *loop, const char *listen_ip, uint16_t port, const char *const *upstreams,
               lg_dns **ret, struct lg_error *err);
/* NULL is fine. See Memory above. */
void lg_dns_free(lg_dns *dns);

/* The nameservers of a resolv.conf file (path NULL = /etc/resolv.conf),
 * in order, skipping the unusable: not an IP literal, an IPv6 address
 * with a zone ("fe80::1%eth0"), the unspecified address, and
 * listen_ip:listen_port (this forwarder; NULL = none). Up to max of them
 * into out; returns how many, or -ENOENT when none is usable. */
int lg_dns_resolv_conf(const char *path, const char *listen_ip, uint16_t listen_port,
                       char out[][LG_DNS_ADDR_MAX], size_t max, struct lg_error *err);

/* The upstream try timeout (1..60000 ms) and the pending table's bound
 * (1..LG_DNS_PENDING_MAX); 0 keeps a value. Applies to queries from now. */
int lg_dns_set_limits(lg_dns *dns, unsigned timeout_ms, unsigned max_pending, struct lg_error *err);

/* The bound listening address, with the port the kernel chose for port 0
 * (UDP's; TCP listens on the same). */
int lg_dns_address(const lg_dns *dns, char *ip, size_t ip_size, uint16_t *port);

void lg_dns_stats(const lg_dns *dns, struct lg_dns_stats *out);
