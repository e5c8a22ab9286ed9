/* `legion kubeconfig`: print a kubeconfig for kubectl that reaches
 * legiond's HTTPS listener, trusts legiond's CA and carries the CLI's
 * token. kubectl sends a kubeconfig's token only over TLS, hence the CA. */
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"

#define DEFAULT_KUBE_API "https://127.0.0.1:6443"
#define CA_MAX (256u << 10)

static void usage(FILE *f) {
        fputs("usage: legion kubeconfig [--server URL] [--ca FILE] [--name NAME] [--ns NS]\n"
              "\n"
              "Print a kubeconfig for kubectl:  legion kubeconfig > ~/.kube/config; kubectl get pods\n"
              "\n"
              "  --server URL  legiond's HTTPS address (env LEGION_KUBE_API, default " DEFAULT_KUBE_API ")\n"
              "  --ca FILE     the CA that signed legiond's certificate (default $LEGION_HOME/tls/ca.crt;\n"
              "                LEGION_HOME defaults to " CLI_DEFAULT_HOME ")\n"
              "  --name NAME   name of the cluster, user and context (default `legion`)\n"
              "  --ns NS       the context's namespace (default: as for other commands)\n"
              "The token is the CLI's (--token, LEGION_TOKEN or $LEGION_HOME/admin.token).\n" CLI_GLOBAL_HELP,
              f);
}

static void base64(FILE *out, const unsigned char *p, size_t n) {
        static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (size_t i = 0; i < n; i += 3) {
                unsigned v = (unsigned) p[i] << 16;
                if (i + 1 < n)
                        v |= (unsigned) p[i + 1] << 8;
                if (i + 2 < n)
                        v |= p[i + 2];
                fputc(tab[(v >> 18) & 63], out);
                fputc(tab[(v >> 12) & 63], out);
                fputc(i + 1 < n ? tab[(v >> 6) & 63] : '=', out);
                fputc(i + 2 < n ? tab[v & 63] : '=', out);
        }
}

/* Printable ASCII without quotes or backslashes: safe inside a YAML
 * double-quoted string as it is. */
static bool yaml_safe(const char *s) {
        if (!*s)
                return false;
        for (; *s; s++)
                if (*s < 0x21 || *s > 0x7e || *s == '"' || *s == '\\')
                        return false;
        return true;
}

static int kubeconfig(int argc, char **argv, struct lg_error *err) {
        static const struct option opts[] = {
                {"server", required_argument, NULL, 's'},
                {"ca", required_argument, NULL, 'c'},
                {"name", required_argument, NULL, 'n'},
                {"help", no_argument, NULL, 'h'},
                CLI_GLOBAL_OPTIONS,
                {0, 0, 0, 0},
        };
        const char *server = getenv("LEGION_KUBE_API");
        const char *ca = NULL, *name = "legion";
        int c;
        optind = 0;
        while ((c = cli_getopt(argc, argv, ":h", opts)) != -1) {
                switch (c) {
                case 's': server = optarg; break;
                case 'c': ca = optarg; break;
                case 'n': name = optarg; break;
                case 'h': usage(stdout); return 0;
                default: return cli_bad_option(c, argv, usage);
                }
        }
        if (optind < argc)
                return cli_usage_error(usage, "unexpected argument `%s`", argv[optind]);
        if (!server || !*server)
                server = DEFAULT_KUBE_API;
        if (strncmp(server, "https://", 8) != 0 || !yaml_safe(server))
                return cli_usage_error(usage, "--server wants an https:// URL (kubectl sends tokens only over TLS), "
                                              "got `%s`", server);
        int r = cli_check_name("name", name, err);
        if (r < 0)
                return r;
        const char *ns = cli_ns();
        r = cli_check_name("namespace", ns, err);
        if (r < 0)
                return r;
        const char *token = cli_token();
        if (!token)
                return lg_error_setm(err, ENOENT,
                                     "no token: use --token, set LEGION_TOKEN, or set LEGION_HOME to legiond's "
                                     "home (its admin.token)");
        if (!yaml_safe(token))
                return lg_error_setm(err, EINVAL, "the token has characters a token cannot have");

        char capath[4200];
        if (!ca) {
                const char *home = getenv("LEGION_HOME");
                snprintf(capath, sizeof(capath), "%s/tls/ca.crt", home && *home ? home : CLI_DEFAULT_HOME);
                ca = capath;
        }
        _cleanup_free_ char *pem = malloc(CA_MAX + 1);
        if (!pem)
                return lg_error_set(err, ENOMEM, "read the CA");
        _cleanup_fclose_ FILE *f = fopen(ca, "re");
        if (!f)
                return lg_error_set(err, errno, "read the CA `%s` (legiond writes it to <home>/tls/ca.crt; --ca FILE)",
                                    ca);
        size_t n = fread(pem, 1, CA_MAX + 1, f);
        if (ferror(f))
                return lg_error_set(err, EIO, "read `%s`", ca);
        if (n > CA_MAX)
                return lg_error_setm(err, EFBIG, "`%s` is over %u bytes: not a CA certificate", ca, CA_MAX);
        pem[n] = '\0';
        if (memchr(pem, '\0', n) || !strstr(pem, "-----BEGIN CERTIFICATE-----"))
                return lg_error_setm(err, EINVAL, "`%s` holds no PEM certificate", ca);

        printf("apiVersion: v1\n"
               "kind: Config\n"
               "clusters:\n"
               "- name: %s\n"
               "  cluster:\n"
               "    server: \"%s\"\n"
               "    certificate-authority-data: ",
               name, server);
        base64(stdout, (const unsigned char *) pem, n);
        printf("\n"
               "users:\n"
               "- name: %s\n"
               "  user:\n"
               "    token: \"%s\"\n"
               "contexts:\n"
               "- name: %s\n"
               "  context:\n"
               "    cluster: %s\n"
               "    user: %s\n"
               "    namespace: %s\n"
               "current-context: %s\n",
               name, token, name, name, name, ns, name);
        if (fflush(stdout) != 0)
                return lg_error_set(err, errno, "write the kubeconfig");
        return 0;
}

int cmd_kubeconfig(int argc, char **argv) {
        if (cli_take_globals(&argc, argv))
                return 2;
        return cli_run_verb(kubeconfig, argc, argv);
}
