/* The pod CIDR's addresses: a next-fit bitmap and per-address slots
 * (ipam.h). */
#include "net/ipam.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_BITS 10 /* slots come in ranges of 1,024 addresses */
#define CHUNK (1u << CHUNK_BITS)

struct chunk {
        unsigned used;
        struct lg_ipam_slot slot[CHUNK];
};

struct lg_ipam {
        uint32_t network;
        uint64_t size;   /* addresses in the CIDR, reserved ones included */
        uint64_t *bits;  /* one bit per offset, set = in use (or reserved) */
        struct chunk **chunks;
        uint32_t cursor; /* where the next search starts */
        unsigned used;
};

static bool bit(const lg_ipam *ipam, uint32_t off) {
        return ipam->bits[off / 64] >> (off % 64) & 1;
}

static void set_bit(lg_ipam *ipam, uint32_t off, bool on) {
        if (on)
                ipam->bits[off / 64] |= UINT64_C(1) << (off % 64);
        else
                ipam->bits[off / 64] &= ~(UINT64_C(1) << (off % 64));
}

int lg_ipam_new(uint32_t network, unsigned prefix_len, lg_ipam **ret) {
        if (prefix_len < 1 || prefix_len > 29)
                return -EINVAL;
        uint64_t size = UINT64_C(1) << (32 - prefix_len);
        if (network & (uint32_t) (size - 1))
                return -EINVAL;
        lg_ipam *ipam = calloc(1, sizeof(*ipam));
        if (!ipam)
                return -ENOMEM;
        ipam->network = network;
        ipam->size = size;
        ipam->bits = calloc((size + 63) / 64, sizeof(uint64_t));
        ipam->chunks = calloc((size + CHUNK - 1) / CHUNK, sizeof(struct chunk *));
        if (!ipam->bits || !ipam->chunks) {
                lg_ipam_free(ipam);
                return -ENOMEM;
        }
        /* Network, gateway and broadcast are never handed out. */
        set_bit(ipam, 0, true);
        set_bit(ipam, 1, true);
        set_bit(ipam, (uint32_t) (size - 1), true);
        ipam->cursor = 2;
        *ret = ipam;
        return 0;
}

void lg_ipam_free(lg_ipam *ipam) {
        if (!ipam)
                return;
        if (ipam->chunks)
                for (uint64_t i = 0; i < (ipam->size + CHUNK - 1) / CHUNK; i++)
                        free(ipam->chunks[i]);
        free(ipam->chunks);
        free(ipam->bits);
        free(ipam);
}

uint32_t lg_ipam_network(const lg_ipam *ipam) { return ipam->network; }
uint32_t lg_ipam_gateway(const lg_ipam *ipam) { return ipam->network + 1; }
unsigned lg_ipam_used(const lg_ipam *ipam) { return ipam->used; }
unsigned lg_ipam_total(const lg_ipam *ipam) { return (unsigned) (ipam->size - 3); }

/* The offset of a sandbox address, or -1. */
static int64_t offset_of(const lg_ipam *ipam, uint32_t addr) {
        uint32_t off = addr - ipam->network;
        if ((uint64_t) off >= ipam->size || off < 2 || off == ipam->size - 1)
                return -1;
        return off;
}

bool lg_ipam_sandbox_addr(const lg_ipam *ipam, uint32_t addr) { return offset_of(ipam, addr) >= 0; }

/* Mark off in use with its slot (the range's slots made on first use). */
static int occupy(lg_ipam *ipam, uint32_t off, enum lg_ipam_state state) {
        struct chunk **c = &ipam->chunks[off / CHUNK];
        if (!*c) {
                *c = calloc(1, sizeof(**c));
                if (!*c)
                        return -ENOMEM;
        }
        (*c)->slot[off % CHUNK] = (struct lg_ipam_slot) {.state = (uint8_t) state};
        (*c)->used++;
        set_bit(ipam, off, true);
        ipam->used++;
        return 0;
}

/* The first clear bit in [from, to), or to. Whole words at a time: a /8
 * has 16M addresses. */
static uint64_t first_clear(const lg_ipam *ipam, uint64_t from, uint64_t to) {
        while (from < to) {
                uint64_t w = ~ipam->bits[from / 64] >> (from % 64);
                if (w) {
                        uint64_t at = from + (uint64_t) __builtin_ctzll(w);
                        return at < to ? at : to;
                }
                from = (from / 64 + 1) * 64;
        }
        return to;
}

int lg_ipam_reserve(lg_ipam *ipam, uint32_t *addr) {
        uint64_t off = first_clear(ipam, ipam->cursor, ipam->size);
        if (off == ipam->size) { /* the broadcast bit is set: off < size is free */
                off = first_clear(ipam, 2, ipam->cursor);
                if (off == ipam->cursor)
                        return -ENOSPC;
        }
        int r = occupy(ipam, (uint32_t) off, LG_IPAM_USED);
        if (r < 0)
                return r;
        ipam->cursor = off + 1 < ipam->size ? (uint32_t) off + 1 : 2;
        *addr = ipam->network + (uint32_t) off;
        return 0;
}

int lg_ipam_take(lg_ipam *ipam, uint32_t addr, enum lg_ipam_state state) {
        int64_t off = offset_of(ipam, addr);
        if (off < 0)
                return -EADDRNOTAVAIL;
        if (bit(ipam, (uint32_t) off))
                return -EEXIST;
        return occupy(ipam, (uint32_t) off, state);
}

struct lg_ipam_slot *lg_ipam_slot(lg_ipam *ipam, uint32_t addr) {
        int64_t off = offset_of(ipam, addr);
        if (off < 0 || !bit(ipam, (uint32_t) off))
                return NULL;
        return &ipam->chunks[off / CHUNK]->slot[off % CHUNK];
}

void lg_ipam_put(lg_ipam *ipam, uint32_t addr) {
        int64_t off = offset_of(ipam, addr);
        if (off < 0 || !bit(ipam, (uint32_t) off))
                return;
        set_bit(ipam, (uint32_t) off, false);
        ipam->used--;
        struct chunk **c = &ipam->chunks[off / CHUNK];
        (*c)->slot[off % CHUNK] = (struct lg_ipam_slot) {0};
        if (--(*c)->used == 0) {
                free(*c);
                *c = NULL;
        }
}

bool lg_ipam_next(const lg_ipam *ipam, uint32_t *addr) {
        uint64_t off = *addr == 0 ? 2 : (uint64_t) (*addr - ipam->network) + 1;
        uint64_t end = ipam->size - 1;
        while (off < end) {
                uint64_t w = ipam->bits[off / 64] >> (off % 64);
                if (w) {
                        off += (uint64_t) __builtin_ctzll(w);
                        if (off >= end)
                                return false;
                        *addr = ipam->network + (uint32_t) off;
                        return true;
                }
                off = (off / 64 + 1) * 64;
        }
        return false;
}
