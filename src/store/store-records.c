/* API tokens and blob records: the two tables of the store that are not
 * resources (no resource version, no events). */
#include "store/store-internal.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <string.h>

/* ---- tokens ------------------------------------------------------------- */

#define TOKEN_PRESENTED_MAX 512

static bool printable(const char *s, size_t max) {
        size_t n = strnlen(s, max + 1);
        if (n > max)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] < 0x20 || s[i] > 0x7e)
                        return false;
        return true;
}

static bool hex_string(const char *s, size_t len) {
        if (!s || strnlen(s, len + 1) != len)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

static void hex_of(const unsigned char *md, size_t n, char *out) {
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = hex[md[i] >> 4];
                out[2 * i + 1] = hex[md[i] & 15];
        }
        out[2 * n] = '\0';
}

/* sha256 of the secret as lowercase hex: what the store keeps. */
static int token_hash(const char *secret, size_t len, char out[static 65], struct lg_error *err) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        if (!EVP_Digest(secret, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
                return lg_error_set(err, EIO, "sha256");
        hex_of(md, mdlen, out);
        return 0;
}

int64_t lg_store_clock(const lg_store *st) { return st->clock ? st->clock() : lg_store_now(); }

void lg_store_set_clock(lg_store *st, int64_t (*now)(void)) { st->clock = now; }

/* A token (app "") or an app key, with a new random secret of prefix. */
static int token_insert(lg_store *st, const char *namespace, const char *app, const char *prefix,
                        const char *description, int64_t expires_at, struct lg_token *ret,
                        char secret[LG_TOKEN_SECRET_SIZE], struct lg_error *err) {
        if (!description)
                description = "";
        if (!printable(description, LG_TOKEN_DESC_MAX))
                return lg_error_set(err, EINVAL,
                                    "token description must be printable ASCII, up to %d bytes",
                                    LG_TOKEN_DESC_MAX);
        if (expires_at < 0)
                return lg_error_set(err, EINVAL, "negative token expiry");
        if (!secret)
                return lg_error_set(err, EINVAL, "no buffer for the token secret");

        struct lg_token t = {.created_at = lg_store_now(), .expires_at = expires_at};
        strcpy(t.namespace, namespace);
        strcpy(t.description, description);
        strcpy(t.app, app);
        char hash[65];
        memcpy(secret, prefix, strlen(prefix));
        int r = lg_random_hex(secret + strlen(prefix), 32);
        if (r >= 0)
                r = lg_random_hex(t.id, 8);
        if (r < 0) {
                explicit_bzero(secret, LG_TOKEN_SECRET_SIZE);
                return lg_error_set(err, r, "random token");
        }
        if ((r = token_hash(secret, strlen(secret), hash, err)) < 0 ||
            (r = st->ops->tok_insert(st, &t, hash, err)) < 0) {
                explicit_bzero(secret, LG_TOKEN_SECRET_SIZE);
                if (r == -EEXIST)
                        return lg_error_set(err, EEXIST, "token id collision, try again");
                return r;
        }
        if (ret)
                *ret = t;
        return 0;
}

int lg_store_token_create(lg_store *st, const char *namespace, const char *description,
                          int64_t expires_at, struct lg_token *ret,
                          char secret[LG_TOKEN_SECRET_SIZE], struct lg_error *err) {
        if (!namespace || (strcmp(namespace, LG_TOKEN_ADMIN) != 0 && !lg_store_valid_name(namespace)))
                return lg_error_set(err, EINVAL, "token scope must be a namespace name or `*`");
        return token_insert(st, namespace, "", LG_TOKEN_PREFIX, description, expires_at, ret, secret, err);
}

int lg_store_app_key_create(lg_store *st, const char *namespace, const char *app, const char *description,
                            struct lg_token *ret, char secret[LG_TOKEN_SECRET_SIZE], struct lg_error *err) {
        if (!namespace || !app || !lg_store_valid_name(namespace) || !lg_store_valid_name(app))
                return lg_error_set(err, EINVAL, "an app key's scope is a namespace and an app name");
        return token_insert(st, namespace, app, LG_APP_KEY_PREFIX, description, 0, ret, secret, err);
}

/* Tokens found are kept in the handle's cache (token-cache.c), so that a
 * request with a known token costs a SHA-256 and no database read. */
int lg_store_token_lookup(lg_store *st, const char *secret, struct lg_token *ret,
                          struct lg_error *err) {
        if (!secret)
                return lg_error_set(err, ENOENT, "no token");
        size_t len = strnlen(secret, TOKEN_PRESENTED_MAX + 1);
        if (len > TOKEN_PRESENTED_MAX)
                return lg_error_set(err, ENOENT, "unknown token");
        int r;
        if (!st->tokens && (r = lg_token_cache_new(&st->tokens)) < 0)
                return lg_error_set(err, -r, "token cache");
        unsigned char md[LG_TOKEN_DIGEST_SIZE];
        if (lg_token_cache_digest(st->tokens, secret, len, md) < 0)
                return lg_error_set(err, EIO, "sha256");
        struct lg_token t;
        if (!lg_token_cache_get(st->tokens, md, &t)) {
                char hash[2 * LG_TOKEN_DIGEST_SIZE + 1];
                hex_of(md, sizeof(md), hash);
                r = st->ops->tok_find(st, hash, &t, err);
                if (r == -ENOENT)
                        return lg_error_set(err, ENOENT, "unknown token");
                if (r < 0)
                        return r;
                /* Not from inside a transaction, which may still be rolled
                 * back: the cache holds only committed tokens. */
                if (!st->in_tx)
                        lg_token_cache_put(st->tokens, md, &t);
        }
        if (t.expires_at && lg_store_clock(st) >= t.expires_at)
                return lg_error_set(err, EKEYEXPIRED, "token %s has expired", t.id);
        if (ret)
                *ret = t;
        return 0;
}

void lg_token_list_free(struct lg_token_list *l) {
        if (!l)
                return;
        free(l->items);
        *l = (struct lg_token_list){0};
}

static int token_one(const struct lg_token *t, void *userdata) {
        return lg_store_vec_push(userdata, t);
}

static int token_list(lg_store *st, const char *namespace, const char *app, struct lg_token_list *ret,
                      struct lg_error *err) {
        struct lg_store_vec v = {.size = sizeof(*ret->items), .err = err, .what = "tokens"};
        int r = st->ops->tok_list(st, namespace, app, token_one, &v, err);
        if (r < 0) {
                free(v.items);
                return r;
        }
        *ret = (struct lg_token_list){v.items, v.n};
        return 0;
}

int lg_store_token_list(lg_store *st, const char *namespace, struct lg_token_list *ret,
                        struct lg_error *err) {
        *ret = (struct lg_token_list){0};
        if (namespace && strcmp(namespace, LG_TOKEN_ADMIN) != 0 && !lg_store_valid_name(namespace))
                return lg_error_set(err, EINVAL, "token scope must be a namespace name or `*`");
        return token_list(st, namespace, NULL, ret, err);
}

int lg_store_app_key_list(lg_store *st, const char *namespace, const char *app, struct lg_token_list *ret,
                          struct lg_error *err) {
        *ret = (struct lg_token_list){0};
        if (!namespace || !app || !lg_store_valid_name(namespace) || !lg_store_valid_name(app))
                return lg_error_set(err, EINVAL, "an app key's scope is a namespace and an app name");
        return token_list(st, namespace, app, ret, err);
}

int lg_store_token_delete(lg_store *st, const char *id, struct lg_error *err) {
        if (!hex_string(id, LG_TOKEN_ID_SIZE - 1))
                return lg_error_set(err, EINVAL, "a token id is 16 hex digits");
        /* Refused from the next lookup on, also when this delete is part of
         * a transaction: one rolled back only costs a database read. */
        lg_token_cache_forget(st->tokens, id);
        int r = st->ops->tok_delete(st, id, err);
        if (r == -ENOENT)
                return lg_error_set(err, ENOENT, "token %s not found", id);
        return r;
}

/* ---- blobs -------------------------------------------------------------- */

static int check_digest(const char *digest, struct lg_error *err) {
        if (!hex_string(digest, 64))
                return lg_error_set(err, EINVAL, "a blob digest is 64 lowercase hex digits (sha256)");
        return 0;
}

static int blob_get_locked(lg_store *st, const char *digest, struct lg_blob *ret,
                           struct lg_error *err) {
        int r = st->ops->blob_get(st, digest, ret, err);
        if (r == -ENOENT)
                return lg_error_set(err, ENOENT, "blob %s not found", digest);
        return r;
}

int lg_store_blob_put(lg_store *st, const char *digest, uint64_t size, const char *media_type,
                      struct lg_blob *ret, struct lg_error *err) {
        int r;
        if ((r = check_digest(digest, err)) < 0)
                return r;
        if (size > INT64_MAX)
                return lg_error_set(err, EINVAL, "blob size out of range");
        if (!media_type || !media_type[0] || !printable(media_type, LG_BLOB_MEDIA_TYPE_MAX))
                return lg_error_set(err, EINVAL, "media type must be printable ASCII, 1 to %d bytes",
                                    LG_BLOB_MEDIA_TYPE_MAX);
        if ((r = lg_store_tx_enter(st, true, err)) < 0)
                return r;
        struct lg_blob b;
        r = st->ops->blob_get(st, digest, &b, err);
        if (r >= 0 && b.size != size)
                r = lg_error_set(err, EINVAL, "blob %s is recorded with size %" PRIu64 ", not %" PRIu64,
                                 digest, b.size, size);
        else if (r == -ENOENT) {
                b = (struct lg_blob){.size = size, .created_at = lg_store_now()};
                strcpy(b.digest, digest);
                strcpy(b.media_type, media_type);
                r = st->ops->blob_insert(st, &b, err);
                if (r >= 0)
                        r = 1;
        }
        r = lg_store_tx_leave(st, r, err);
        if (r >= 0 && ret)
                *ret = b;
        return r;
}

int lg_store_blob_get(lg_store *st, const char *digest, struct lg_blob *ret,
                      struct lg_error *err) {
        int r = check_digest(digest, err);
        if (r < 0)
                return r;
        struct lg_blob b;
        if ((r = blob_get_locked(st, digest, &b, err)) < 0)
                return r;
        if (ret)
                *ret = b;
        return 0;
}

void lg_blob_list_free(struct lg_blob_list *l) {
        if (!l)
                return;
        free(l->items);
        *l = (struct lg_blob_list){0};
}

static int blob_one(const struct lg_blob *b, void *userdata) {
        return lg_store_vec_push(userdata, b);
}

int lg_store_blob_list(lg_store *st, const struct lg_blob_filter *filter,
                       struct lg_blob_list *ret, struct lg_error *err) {
        *ret = (struct lg_blob_list){0};
        struct lg_blob_filter f = filter ? *filter : (struct lg_blob_filter){0};
        struct lg_store_vec v = {.size = sizeof(*ret->items), .err = err, .what = "blobs"};
        int r = st->ops->blob_list(st, &f, blob_one, &v, err);
        if (r < 0) {
                free(v.items);
                return r;
        }
        *ret = (struct lg_blob_list){v.items, v.n};
        return 0;
}

int lg_store_blob_delete(lg_store *st, const char *digest, struct lg_error *err) {
        int r;
        if ((r = check_digest(digest, err)) < 0 || (r = lg_store_tx_enter(st, true, err)) < 0)
                return r;
        struct lg_blob b;
        if ((r = blob_get_locked(st, digest, &b, err)) >= 0) {
                if (b.refs > 0)
                        r = lg_error_set(err, EBUSY, "blob %s is referenced by %" PRId64 " objects",
                                         digest, b.refs);
                else
                        r = st->ops->blob_delete(st, digest, err);
        }
        return lg_store_tx_leave(st, r, err);
}

int lg_store_blob_ref(lg_store *st, const char *digest, const struct lg_resource_key *key,
                      struct lg_error *err) {
        int r;
        if ((r = check_digest(digest, err)) < 0 || (r = lg_store_check_key(key, err)) < 0 ||
            (r = lg_store_tx_enter(st, true, err)) < 0)
                return r;
        struct lg_blob b;
        if ((r = blob_get_locked(st, digest, &b, err)) >= 0)
                r = lg_store_must_exist(st, key, err);
        if (r >= 0)
                r = st->ops->ref_insert(st, digest, key, err);
        return lg_store_tx_leave(st, r, err);
}

int lg_store_blob_unref(lg_store *st, const char *digest, const struct lg_resource_key *key,
                        struct lg_error *err) {
        int r;
        if ((r = check_digest(digest, err)) < 0 || (r = lg_store_check_key(key, err)) < 0)
                return r;
        r = st->ops->ref_delete(st, digest, key, err);
        if (r == -ENOENT) {
                char kb[200];
                return lg_error_set(err, ENOENT, "%s does not refer to blob %s",
                                    lg_store_key_str(key, kb), digest);
        }
        return r;
}

void lg_resource_ref_list_free(struct lg_resource_ref_list *l) {
        if (!l)
                return;
        free(l->items);
        *l = (struct lg_resource_ref_list){0};
}

static int ref_one(const struct lg_resource_ref *ref, void *userdata) {
        return lg_store_vec_push(userdata, ref);
}

int lg_store_blob_referrers(lg_store *st, const char *digest, struct lg_resource_ref_list *ret,
                            struct lg_error *err) {
        int r;
        *ret = (struct lg_resource_ref_list){0};
        if ((r = check_digest(digest, err)) < 0 || (r = lg_store_tx_enter(st, false, err)) < 0)
                return r;
        struct lg_blob b;
        struct lg_store_vec v = {
                .size = sizeof(*ret->items), .err = err, .what = "blob referrers"};
        if ((r = blob_get_locked(st, digest, &b, err)) >= 0)
                r = st->ops->ref_list(st, digest, ref_one, &v, err);
        r = lg_store_tx_leave(st, r, err);
        if (r < 0) {
                free(v.items);
                return r;
        }
        *ret = (struct lg_resource_ref_list){v.items, v.n};
        return 0;
}
