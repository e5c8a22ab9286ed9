/* legiond's TLS certificates (see tls-cert.h): a private CA and a server
 * certificate, EC P-256, made with libcrypto and reused across starts. */
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "legiond/tls-cert.h"

#define CA_DAYS 3650L
#define SERVER_DAYS 730L
#define RENEW_DAYS 30L

static void x509_freep(X509 **p) { X509_free(*p); }
static void pkey_freep(EVP_PKEY **p) { EVP_PKEY_free(*p); }
#define _cleanup_x509_ _cleanup_(x509_freep)
#define _cleanup_pkey_ _cleanup_(pkey_freep)

static int crypto_error(struct lg_error *err, const char *what) {
        char buf[256] = "unknown error";
        unsigned long e = ERR_peek_last_error();
        if (e)
                ERR_error_string_n(e, buf, sizeof(buf));
        ERR_clear_error();
        return lg_error_setm(err, EIO, "TLS: %s: %s", what, buf);
}

/* ------------------------------------------------------------------------
 * Files
 * --------------------------------------------------------------------- */

static X509 *load_cert(const char *path) {
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
        ERR_clear_error();
        return x;
}

static EVP_PKEY *load_key(const char *path) {
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        ERR_clear_error();
        return k;
}

/* Write PEM blocks to path atomically, with mode. */
static int write_pem(const char *path, mode_t mode, X509 *const *certs, size_t ncerts, EVP_PKEY *key,
                     struct lg_error *err) {
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        unlink(tmp);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0)
                return lg_error_set(err, errno, "create `%s`", tmp);
        fchmod(fd, mode);
        FILE *f = fdopen(fd, "we");
        if (!f) {
                int e = errno;
                close(fd);
                unlink(tmp);
                return lg_error_set(err, e, "create `%s`", tmp);
        }
        bool ok = true;
        for (size_t i = 0; i < ncerts && ok; i++)
                ok = PEM_write_X509(f, certs[i]) == 1;
        if (ok && key)
                ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
        ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
        if (fclose(f) != 0)
                ok = false;
        if (!ok) {
                unlink(tmp);
                return crypto_error(err, path);
        }
        if (rename(tmp, path) < 0) {
                int e = errno;
                unlink(tmp);
                return lg_error_set(err, e, "rename `%s`", tmp);
        }
        return 0;
}

/* ------------------------------------------------------------------------
 * Certificates
 * --------------------------------------------------------------------- */

/* A DNS name we dare put in a SAN (and in the config string that makes it). */
static bool dns_name_ok(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-' || s[n - 1] == '.')
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                      ch == '.'))
                        return false;
        }
        return strcmp(s, "localhost") != 0;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
        if (!ext)
                return -1;
        int r = X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        return r == 1 ? 0 : -1;
}

/* A certificate for key, issued by issuer (NULL: self-signed) whose key
 * is issuer_key. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, long days, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san) {
        X509 *x = X509_new();
        BIGNUM *serial = BN_new();
        bool ok = x && serial && X509_set_version(x, 2) == 1 && BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
                  BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) != NULL &&
                  /* An hour back, for clocks a little behind ours. */
                  X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
                  X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L) != NULL && X509_set_pubkey(x, key) == 1;
        BN_free(serial);
        X509_NAME *name = ok ? X509_get_subject_name(x) : NULL;
        ok = ok && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *) "Legion", -1, -1, 0) == 1 &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *) cn, -1, -1, 0) == 1 &&
             X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) == 1;
        if (ok) {
                X509V3_CTX ctx;
                X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
                if (!issuer) {
                        ok = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") == 0 &&
                             add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") == 0 &&
                             add_ext(x, &ctx, NID_subject_key_identifier, "hash") == 0;
                } else {
                        ok = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
                             add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") == 0 &&
                             add_ext(x, &ctx, NID_ext_key_usage, "serverAuth") == 0 &&
                             add_ext(x, &ctx, NID_subject_key_identifier, "hash") == 0 &&
                             add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") == 0 &&
                             add_ext(x, &ctx, NID_subject_alt_name, san) == 0;
                }
        }
        ok = ok && X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
        if (!ok) {
                X509_free(x);
                return NULL;
        }
        return x;
}

/* Is cert good for at least `days` more days? */
static bool valid_for(X509 *cert, long days) {
        time_t later = time(NULL) + days * 86400L;
        return X509_cmp_time(X509_get0_notAfter(cert), &later) > 0 && X509_cmp_current_time(X509_get0_notBefore(cert)) < 0;
}

static bool ca_usable(X509 *ca, EVP_PKEY *key) {
        return ca && key && X509_check_private_key(ca, key) == 1 && X509_check_ca(ca) > 0 && valid_for(ca, RENEW_DAYS);
}

static bool server_usable(X509 *crt, EVP_PKEY *key, EVP_PKEY *ca_key, const char *hostname) {
        bool ok = crt && key && X509_check_private_key(crt, key) == 1 && X509_verify(crt, ca_key) == 1 &&
                  valid_for(crt, RENEW_DAYS) && X509_check_ip_asc(crt, "127.0.0.1", 0) == 1 &&
                  X509_check_host(crt, "localhost", 0, 0, NULL) == 1 &&
                  (!dns_name_ok(hostname) || X509_check_host(crt, hostname, 0, 0, NULL) == 1);
        ERR_clear_error();
        return ok;
}

int lg_tls_ensure(const char *dir, const char *hostname, struct lg_tls_files *files, int *made,
                  struct lg_error *err) {
        if (made)
                *made = 0;
        if (!dir || !*dir || strlen(dir) > 4000)
                return lg_error_setm(err, EINVAL, "TLS: bad certificate directory");
        int r = lg_mkdir_p(dir, 0700);
        if (r < 0)
                return lg_error_set(err, -r, "create `%s`", dir);
        snprintf(files->ca_crt, sizeof(files->ca_crt), "%s/ca.crt", dir);
        snprintf(files->ca_key, sizeof(files->ca_key), "%s/ca.key", dir);
        snprintf(files->server_crt, sizeof(files->server_crt), "%s/server.crt", dir);
        snprintf(files->server_key, sizeof(files->server_key), "%s/server.key", dir);

        _cleanup_x509_ X509 *ca = load_cert(files->ca_crt);
        _cleanup_pkey_ EVP_PKEY *ca_key = load_key(files->ca_key);
        _cleanup_x509_ X509 *crt = load_cert(files->server_crt);
        _cleanup_pkey_ EVP_PKEY *key = load_key(files->server_key);
        bool new_ca = !ca_usable(ca, ca_key);
        ERR_clear_error();
        if (!new_ca && server_usable(crt, key, ca_key, hostname))
                return 0;

        if (new_ca) {
                X509_free(ca);
                EVP_PKEY_free(ca_key);
                ca = NULL;
                ca_key = EVP_EC_gen("P-256");
                if (!ca_key)
                        return crypto_error(err, "generate the CA key");
                ca = make_cert(ca_key, "Legion CA", CA_DAYS, NULL, NULL, NULL);
                if (!ca)
                        return crypto_error(err, "make the CA certificate");
        }
        EVP_PKEY_free(key);
        key = EVP_EC_gen("P-256");
        if (!key)
                return crypto_error(err, "generate the server key");
        char san[512] = "IP:127.0.0.1,IP:::1,DNS:localhost";
        if (dns_name_ok(hostname)) {
                size_t l = strlen(san);
                snprintf(san + l, sizeof(san) - l, ",DNS:%s", hostname);
        }
        X509_free(crt);
        crt = make_cert(key, "legiond", SERVER_DAYS, ca, ca_key, san);
        if (!crt)
                return crypto_error(err, "make the server certificate");

        /* Keys first, and the CA before what it signed: an interrupted run
         * leaves files that the next start finds unusable and remakes. */
        if (new_ca) {
                r = write_pem(files->ca_key, 0600, NULL, 0, ca_key, err);
                if (r >= 0)
                        r = write_pem(files->ca_crt, 0644, &ca, 1, NULL, err);
                if (r < 0)
                        return r;
        }
        X509 *chain[] = {crt, ca};
        r = write_pem(files->server_key, 0600, NULL, 0, key, err);
        if (r >= 0)
                r = write_pem(files->server_crt, 0644, chain, 2, NULL, err);
        if (r < 0)
                return r;
        if (made)
                *made = new_ca ? 2 : 1;
        return 0;
}
