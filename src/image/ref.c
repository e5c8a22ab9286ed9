/* Image references: the distribution reference grammar
 * (name[:tag][@digest]) checked and normalized as Docker does. */
#include <ctype.h>
#include <string.h>

#include "image/image-internal.h"

static bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
static bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

/* A path component: [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*. */
static bool path_component_ok(const char *s, size_t n) {
        if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
                return false;
        for (size_t i = 0; i < n;) {
                if (is_lower_alnum(s[i])) {
                        i++;
                        continue;
                }
                size_t j = i;
                while (j < n && !is_lower_alnum(s[j]))
                        j++;
                size_t len = j - i;
                bool ok = (len == 1 && (s[i] == '.' || s[i] == '_')) || (len == 2 && s[i] == '_' && s[i + 1] == '_');
                if (!ok) {
                        ok = true;
                        for (size_t k = i; k < j; k++)
                                ok &= s[k] == '-';
                }
                if (!ok)
                        return false;
                i = j;
        }
        return true;
}

/* host[:port]: labels of [A-Za-z0-9-] not starting or ending with '-',
 * or a bracketed IPv6 address. */
static bool domain_ok(const char *s, size_t n) {
        size_t host_end = n;
        if (n && s[0] == '[') {
                const char *close = memchr(s, ']', n);
                if (!close)
                        return false;
                for (const char *p = s + 1; p < close; p++)
                        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') ||
                              *p == ':'))
                                return false;
                host_end = (size_t) (close - s) + 1;
                if (host_end == 2)
                        return false;
        } else {
                const char *colon = memchr(s, ':', n);
                if (colon)
                        host_end = (size_t) (colon - s);
                if (host_end == 0)
                        return false;
                size_t start = 0;
                for (size_t i = 0; i <= host_end; i++) {
                        if (i < host_end && s[i] != '.') {
                                if (!is_alnum(s[i]) && s[i] != '-')
                                        return false;
                                continue;
                        }
                        if (i == start || s[start] == '-' || s[i - 1] == '-')
                                return false;
                        start = i + 1;
                }
        }
        if (host_end == n)
                return true;
        if (s[host_end] != ':' || host_end + 1 == n || n - host_end - 1 > 5)
                return false;
        for (size_t i = host_end + 1; i < n; i++)
                if (s[i] < '0' || s[i] > '9')
                        return false;
        return true;
}

static bool tag_ok(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 128 || !(is_alnum(s[0]) || s[0] == '_'))
                return false;
        for (size_t i = 1; i < n; i++)
                if (!(is_alnum(s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-'))
                        return false;
        return true;
}

bool lg_image_ref_is_digest(const char *s) {
        return s && !strncmp(s, "sha256:", 7) && strlen(s) == 71 && lg_image_is_hex(s + 7, 64);
}

int lg_image_normalize(const char *ref, char *buf, size_t cap, struct lg_error *err) {
        char shown[200];
        lg_printable(ref, shown, sizeof(shown));
        if (!ref || !*ref)
                return lg_error_setm(err, EINVAL, "empty image reference");
        if (strlen(ref) > 1024)
                return lg_error_setm(err, EINVAL, "image reference `%s` is too long", shown);
        char name[1100];
        snprintf(name, sizeof(name), "%s", ref);
        const char *digest = NULL, *tag = NULL;
        char *at = strchr(name, '@');
        if (at) {
                *at = '\0';
                digest = at + 1;
                if (strncmp(digest, "sha256:", 7) != 0 && strchr(digest, ':'))
                        return lg_error_setm(err, EINVAL, "image reference `%s`: only sha256 digests are supported",
                                             shown);
                if (!lg_image_ref_is_digest(digest))
                        return lg_error_setm(err, EINVAL, "image reference `%s`: malformed digest", shown);
        }
        char *slash = strrchr(name, '/');
        char *colon = strrchr(slash ? slash : name, ':');
        if (colon) {
                *colon = '\0';
                tag = colon + 1;
                if (!tag_ok(tag))
                        return lg_error_setm(err, EINVAL,
                                             "image reference `%s`: malformed tag (letters, digits, `_`, `.`, `-`; "
                                             "at most 128)",
                                             shown);
        }
        /* Domain: a first component with '.' or ':', "localhost", or
         * capitals (a repository path never has them). */
        const char *domain = "docker.io", *path = name;
        size_t dlen = strlen(domain);
        char *first = strchr(name, '/');
        if (first) {
                size_t n = (size_t) (first - name);
                bool upper = false;
                for (size_t i = 0; i < n; i++)
                        upper |= name[i] >= 'A' && name[i] <= 'Z';
                if (memchr(name, '.', n) || memchr(name, ':', n) || (n == 9 && !strncmp(name, "localhost", 9)) ||
                    upper) {
                        if (!domain_ok(name, n))
                                return lg_error_setm(err, EINVAL, "image reference `%s`: malformed registry name",
                                                     shown);
                        domain = name;
                        dlen = n;
                        path = first + 1;
                }
        }
        if (dlen == 15 && !strncmp(domain, "index.docker.io", 15)) {
                domain = "docker.io";
                dlen = 9;
        }
        if (!*path)
                return lg_error_setm(err, EINVAL, "image reference `%s`: no repository name", shown);
        for (const char *p = path; *p;) {
                const char *end = strchrnul(p, '/');
                size_t n = (size_t) (end - p);
                for (size_t i = 0; i < n; i++)
                        if (p[i] >= 'A' && p[i] <= 'Z')
                                return lg_error_setm(err, EINVAL, "image reference `%s`: repository name must be lowercase",
                                                     shown);
                if (!path_component_ok(p, n))
                        return lg_error_setm(err, EINVAL,
                                             "image reference `%s`: malformed repository name (lowercase letters, "
                                             "digits and single `.`, `_`, `__` or `-` between them)",
                                             shown);
                p = *end ? end + 1 : end;
                if (*end && !*p)
                        return lg_error_setm(err, EINVAL, "image reference `%s`: repository name ends with `/`", shown);
        }
        bool library = dlen == 9 && !strncmp(domain, "docker.io", 9) && !strchr(path, '/');
        if (dlen + 1 + (library ? 8 : 0) + strlen(path) > 255)
                return lg_error_setm(err, EINVAL, "image reference `%s`: name is longer than 255 characters", shown);
        if (!tag && !digest)
                tag = "latest";
        int n = snprintf(buf, cap, "%.*s/%s%s%s%s%s%s", (int) dlen, domain, library ? "library/" : "", path,
                         tag ? ":" : "", tag ? tag : "", digest ? "@" : "", digest ? digest : "");
        if (n < 0 || (size_t) n >= cap)
                return lg_error_setm(err, ENAMETOOLONG, "image reference `%s` is too long", shown);
        return 0;
}

int lg_image_ref_split(const char *ref, struct lg_image_ref *ret, struct lg_error *err) {
        memset(ret, 0, sizeof(*ret));
        int r = lg_image_normalize(ref, ret->name, sizeof(ret->name), err);
        if (r < 0)
                return r;
        const char *slash = strchr(ret->name, '/');
        if (!slash || slash == ret->name || (size_t) (slash - ret->name) >= sizeof(ret->registry))
                return lg_error_setm(err, EINVAL, "invalid image reference `%s`: no registry", ref);
        snprintf(ret->registry, sizeof(ret->registry), "%.*s", (int) (slash - ret->name), ret->name);
        for (const char *c = ret->registry; *c; c++)
                if (!(isalnum((unsigned char) *c) || strchr(".-:[]", *c)))
                        return lg_error_setm(err, EINVAL, "invalid image reference `%s`: bad registry host", ref);
        const char *rest = slash + 1;
        const char *at = strchr(rest, '@');
        const char *last = strrchr(rest, '/');
        const char *colon = strrchr(last ? last : rest, ':');
        size_t repo_len;
        if (at) {
                ret->by_digest = true;
                repo_len = (size_t) (at - rest);
                const char *c = memchr(rest, ':', repo_len);
                if (c && (!last || c > last)) /* "repo:tag@digest": the digest wins */
                        repo_len = (size_t) (c - rest);
                snprintf(ret->reference, sizeof(ret->reference), "%s", at + 1);
                if (!lg_image_digest_valid(ret->reference))
                        return lg_error_setm(err, EINVAL, "invalid image reference `%s`: only sha256 digests are supported", ref);
        } else if (colon) {
                repo_len = (size_t) (colon - rest);
                snprintf(ret->reference, sizeof(ret->reference), "%s", colon + 1);
        } else {
                repo_len = strlen(rest);
                snprintf(ret->reference, sizeof(ret->reference), "latest");
        }
        if (repo_len == 0 || repo_len >= sizeof(ret->repository))
                return lg_error_setm(err, EINVAL, "invalid image reference `%s`: bad repository", ref);
        snprintf(ret->repository, sizeof(ret->repository), "%.*s", (int) repo_len, rest);
        /* These go into URLs unescaped: hold them to the reference grammar
         * whatever the normalizer let through. */
        for (const char *c = ret->repository; *c; c++)
                if (!(islower((unsigned char) *c) || isdigit((unsigned char) *c) || strchr("._-/", *c)))
                        return lg_error_setm(err, EINVAL, "invalid image reference `%s`: bad repository", ref);
        if (!ret->by_digest) {
                size_t n = strlen(ret->reference);
                bool ok = n > 0 && n <= 128 && ret->reference[0] != '.' && ret->reference[0] != '-';
                for (size_t i = 0; ok && i < n; i++)
                        ok = isalnum((unsigned char) ret->reference[i]) || strchr("._-", ret->reference[i]);
                if (!ok)
                        return lg_error_setm(err, EINVAL, "invalid image reference `%s`: bad tag", ref);
        }
        return 0;
}
