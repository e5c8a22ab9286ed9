/* legiond's TLS certificates: a private CA and a server certificate it
 * signed, made with libcrypto at first start and kept in <home>/tls. */
#pragma once

#include "common/util.h"

struct lg_tls_files {
        char ca_crt[4096];     /* the CA certificate (public: goes into kubeconfigs) */
        char ca_key[4096];     /* its key */
        char server_crt[4096]; /* the server certificate, then the CA (a PEM chain) */
        char server_key[4096];
};

/* Make sure dir (made 0700 if missing) holds ca.crt, ca.key, server.crt
 * and server.key, and fill *files with their paths:
 *   - the CA: EC P-256, self-signed, 10 years; made when it is missing or
 *     unusable (then the server certificate is remade too);
 *   - the server certificate: EC P-256, signed by the CA, 2 years, SAN
 *     IP 127.0.0.1, IP ::1, DNS localhost and DNS `hostname` (when it is a
 *     valid DNS name; NULL: none); remade when missing, not signed by the
 *     CA, not matching its key, expiring within 30 days or lacking the host.
 * Keys are written 0600, every file atomically (temporary file + rename).
 * *made (may be NULL) says what was made: 0 nothing, 1 the server
 * certificate, 2 the CA too. */
int lg_tls_ensure(const char *dir, const char *hostname, struct lg_tls_files *files, int *made,
                  struct lg_error *err);
