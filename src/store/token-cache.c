/* The store's cache of the tokens it has found (lg_store_token_lookup):
 * every API request and every function call presents a token, and without
 * it each one hashed the secret with an implicitly fetched SHA-256 and read
 * SQLite (a read transaction: two fcntl locks, a B-tree search), a fifth of
 * legiond's CPU time per warm call.
 *
 * Entries are keyed by the SHA-256 of the secret, as the table is, so the
 * cache keeps no secret either. Only tokens found go in: a client presenting
 * made-up strings fills nothing. store-records.c removes a token's entry when
 * it deletes the token and checks expiry on every hit, so a deleted or
 * expired token is refused at once; legiond is the only writer of its store,
 * so its handle sees every delete. Bounded: TC_SETS sets of TC_WAYS entries,
 * the least recently used entry of a full set replaced. */
#include "store/store-internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#define TC_SETS 64 /* a power of two */
#define TC_WAYS 4

struct tc_entry {
        unsigned char md[LG_TOKEN_DIGEST_SIZE];
        uint64_t used; /* tick of the last hit or fill; 0 = empty */
        struct lg_token tok;
};

struct lg_token_cache {
        EVP_MD *sha256;   /* fetched once: EVP_sha256() fetches at every use */
        EVP_MD_CTX *ctx;  /* reused for every digest */
        uint64_t tick;
        struct lg_token_cache_stats stats;
        struct tc_entry e[TC_SETS][TC_WAYS];
};

int lg_token_cache_new(struct lg_token_cache **ret) {
        struct lg_token_cache *tc = calloc(1, sizeof(*tc));
        if (!tc)
                return -ENOMEM;
        tc->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        tc->ctx = EVP_MD_CTX_new();
        if (!tc->sha256 || !tc->ctx) {
                lg_token_cache_free(tc);
                return -ENOMEM;
        }
        *ret = tc;
        return 0;
}

void lg_token_cache_free(struct lg_token_cache *tc) {
        if (!tc)
                return;
        EVP_MD_CTX_free(tc->ctx);
        EVP_MD_free(tc->sha256);
        explicit_bzero(tc->e, sizeof(tc->e));
        free(tc);
}

int lg_token_cache_digest(struct lg_token_cache *tc, const char *secret, size_t len,
                          unsigned char md[static LG_TOKEN_DIGEST_SIZE]) {
        unsigned int n = 0;
        if (!EVP_DigestInit_ex2(tc->ctx, tc->sha256, NULL) || !EVP_DigestUpdate(tc->ctx, secret, len) ||
            !EVP_DigestFinal_ex(tc->ctx, md, &n) || n != LG_TOKEN_DIGEST_SIZE)
                return -EIO;
        return 0;
}

static struct tc_entry *set_of(struct lg_token_cache *tc, const unsigned char *md) {
        /* The digest is uniformly random: its first bytes pick the set. */
        return tc->e[(md[0] | (unsigned) md[1] << 8) & (TC_SETS - 1)];
}

bool lg_token_cache_get(struct lg_token_cache *tc, const unsigned char md[static LG_TOKEN_DIGEST_SIZE],
                        struct lg_token *ret) {
        struct tc_entry *set = set_of(tc, md);
        for (unsigned i = 0; i < TC_WAYS; i++)
                if (set[i].used && !CRYPTO_memcmp(set[i].md, md, LG_TOKEN_DIGEST_SIZE)) {
                        set[i].used = ++tc->tick;
                        *ret = set[i].tok;
                        tc->stats.hits++;
                        return true;
                }
        tc->stats.misses++;
        return false;
}

void lg_token_cache_put(struct lg_token_cache *tc, const unsigned char md[static LG_TOKEN_DIGEST_SIZE],
                        const struct lg_token *t) {
        struct tc_entry *set = set_of(tc, md), *victim = &set[0];
        for (unsigned i = 0; i < TC_WAYS; i++) {
                if (set[i].used && !CRYPTO_memcmp(set[i].md, md, LG_TOKEN_DIGEST_SIZE)) {
                        victim = &set[i];
                        break;
                }
                if (set[i].used < victim->used)
                        victim = &set[i];
        }
        if (!victim->used)
                tc->stats.entries++;
        memcpy(victim->md, md, LG_TOKEN_DIGEST_SIZE);
        victim->tok = *t;
        victim->used = ++tc->tick;
}

void lg_token_cache_forget(struct lg_token_cache *tc, const char *id) {
        if (!tc)
                return;
        for (unsigned s = 0; s < TC_SETS; s++)
                for (unsigned i = 0; i < TC_WAYS; i++)
                        if (tc->e[s][i].used && !strcmp(tc->e[s][i].tok.id, id)) {
                                explicit_bzero(&tc->e[s][i], sizeof(tc->e[s][i]));
                                tc->stats.entries--;
                        }
}

void lg_token_cache_stats(const struct lg_token_cache *tc, struct lg_token_cache_stats *ret) {
        *ret = tc ? tc->stats : (struct lg_token_cache_stats){0};
}
