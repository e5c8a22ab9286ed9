/* Inside src/net: the pod CIDR's addresses, for net.c. A bitmap over the
 * CIDR hands out sandbox addresses next-fit (a released address comes
 * back only after every other free one has been used, so a late packet or
 * conntrack entry of an ended sandbox does not meet its successor), and
 * each address in use has a slot with its state and assignment.
 *
 * Layout of the CIDR: offset 0 the network, 1 the gateway (the host), the
 * last the broadcast address; sandboxes get 2 .. size-2.
 *
 * Addresses are host byte order. Not thread-safe: net.c holds its mutex.
 * Memory: the slots of a range of 1,024 addresses exist while one of them
 * is in use. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

enum lg_ipam_state {
        LG_IPAM_FREE,
        LG_IPAM_USED,      /* reserved, attached or reclaimed */
        LG_IPAM_FOUND,     /* live at start, not reclaimed yet */
        LG_IPAM_RELEASING, /* on its way out: not free until its link is gone */
};

struct lg_ipam_slot {
        uint8_t state;      /* enum lg_ipam_state */
        uint32_t ns_mark;   /* 0 = no namespace assigned */
        uint32_t policy_id; /* 0 = none */
};

typedef struct lg_ipam lg_ipam;

/* network/prefix_len, host bits clear, prefix_len 1..29 (at least one
 * sandbox address). -EINVAL, -ENOMEM. */
int lg_ipam_new(uint32_t network, unsigned prefix_len, lg_ipam **ret);
void lg_ipam_free(lg_ipam *ipam);

uint32_t lg_ipam_network(const lg_ipam *ipam);
uint32_t lg_ipam_gateway(const lg_ipam *ipam);
/* Whether addr is one a sandbox may hold (in the CIDR, none of the three
 * reserved ones). */
bool lg_ipam_sandbox_addr(const lg_ipam *ipam, uint32_t addr);

/* The next free address after the last one handed out, now in state
 * USED. -ENOSPC: none free; -ENOMEM. */
int lg_ipam_reserve(lg_ipam *ipam, uint32_t *addr);
/* That address, in state (USED or FOUND). -EADDRNOTAVAIL: not a sandbox
 * address; -EEXIST: in use already; -ENOMEM. */
int lg_ipam_take(lg_ipam *ipam, uint32_t addr, enum lg_ipam_state state);
/* The slot of an address in use; NULL when it is free or not a sandbox
 * address. */
struct lg_ipam_slot *lg_ipam_slot(lg_ipam *ipam, uint32_t addr);
/* Free it (nothing if it was). */
void lg_ipam_put(lg_ipam *ipam, uint32_t addr);

/* Addresses in use (any state but FREE), and all a sandbox may hold. */
unsigned lg_ipam_used(const lg_ipam *ipam);
unsigned lg_ipam_total(const lg_ipam *ipam);

/* Iterate addresses in use in ascending order: start with *addr = 0;
 * returns true with the next one in *addr, false at the end. The slot
 * of the current address may be changed or put meanwhile. */
bool lg_ipam_next(const lg_ipam *ipam, uint32_t *addr);
