/* Host-header routing of the data path (api.h, lg_api_host_app): which app
 * a request's Host names, if any. Kept apart from api.c so that the unit
 * test can feed it hostile Host values without a legiond. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"

int lg_api_fn_domain_check(const char *domain, struct lg_error *err) {
        size_t n = domain ? strlen(domain) : 0, label = 0;
        if (n == 0 || n > 253)
                return lg_error_setm(err, EINVAL, "%s", "--fn-domain: a DNS name of 1 to 253 characters");
        for (size_t i = 0; i <= n; i++) {
                char ch = domain[i];
                if (ch == '.' || ch == '\0') {
                        if (label == 0 || label > 63 || domain[i - 1] == '-')
                                return lg_error_setm(err, EINVAL,
                                                     "--fn-domain `%.253s`: labels of 1 to 63 letters, digits "
                                                     "and inner hyphens, separated by dots",
                                                     domain);
                        label = 0;
                        continue;
                }
                if (!(isascii((unsigned char) ch) && (isalnum((unsigned char) ch) || (ch == '-' && label > 0))))
                        return lg_error_setm(err, EINVAL,
                                             "--fn-domain `%.253s`: labels of 1 to 63 letters, digits and inner "
                                             "hyphens, separated by dots",
                                             domain);
                label++;
        }
        return 0;
}

/* The length of host without ":port" and one trailing dot; 0 when host is
 * no name (empty, an IPv6 literal, a port that is not digits). */
static size_t name_len(const char *host) {
        if (!host || host[0] == '[')
                return 0;
        size_t n = strlen(host);
        const char *colon = strrchr(host, ':');
        if (colon) {
                size_t digits = strlen(colon + 1);
                if (digits == 0 || digits > 5 || strspn(colon + 1, "0123456789") != digits)
                        return 0;
                n = (size_t) (colon - host);
        }
        if (n && host[n - 1] == '.')
                n--;
        return n;
}

static void copy_lower(char *dst, const char *src, size_t n) {
        for (size_t i = 0; i < n; i++)
                dst[i] = (char) tolower((unsigned char) src[i]);
        dst[n] = '\0';
}

bool lg_api_host_app(const char *host, const char *domain, char ns[LG_STORE_NAME_MAX + 1],
                     char app[LG_STORE_NAME_MAX + 1]) {
        if (!domain) {
                /* Without --fn-domain: "APP.NS.fn.<anything>", as before. */
                const char *fn = host ? strstr(host, ".fn.") : NULL;
                if (!fn)
                        return false;
                const char *dot = memchr(host, '.', (size_t) (fn - host));
                if (!dot || dot == host || fn - dot - 1 <= 0 || dot - host > LG_STORE_NAME_MAX ||
                    fn - dot - 1 > LG_STORE_NAME_MAX)
                        return false;
                snprintf(app, LG_STORE_NAME_MAX + 1, "%.*s", (int) (dot - host), host);
                snprintf(ns, LG_STORE_NAME_MAX + 1, "%.*s", (int) (fn - dot - 1), dot + 1);
                return true;
        }
        /* "APP.NS.<domain>[.][:port]": exactly two labels before the domain,
         * compared without case as DNS does. */
        size_t n = name_len(host), dl = strlen(domain);
        if (n < dl + 4 || host[n - dl - 1] != '.' || strncasecmp(host + n - dl, domain, dl) != 0)
                return false;
        size_t pl = n - dl - 1; /* "APP.NS" */
        const char *dot = memchr(host, '.', pl);
        if (!dot || memchr(dot + 1, '.', pl - (size_t) (dot - host) - 1))
                return false;
        size_t al = (size_t) (dot - host), nl = pl - al - 1;
        if (al == 0 || nl == 0 || al > LG_STORE_NAME_MAX || nl > LG_STORE_NAME_MAX)
                return false;
        copy_lower(app, host, al);
        copy_lower(ns, dot + 1, nl);
        return true;
}
