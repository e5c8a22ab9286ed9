/* legion: the entry point of the CLI. The sandbox verbs run here, in a
 * binary that links nothing but libc and the sandbox library, so that
 * `legion sandbox run` starts as fast as the sandbox it makes. Every other
 * verb talks to legiond and is handed to legion-client (libcurl,
 * libarchive, jansson: some forty shared libraries, ~4 ms to load) by exec,
 * with the same arguments. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

/* Global options of legion-client that may stand before the group. */
static int skip_global(char **argv, int i) {
        static const char *const with_value[] = {"--api", "--token", "--ns"};
        for (size_t k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++) {
                size_t n = strlen(with_value[k]);
                if (!strncmp(argv[i], with_value[k], n) && argv[i][n] == '=')
                        return 1;
                if (!strcmp(argv[i], with_value[k]))
                        return 2;
        }
        return !strcmp(argv[i], "--json") ? 1 : 0;
}

static int exec_client(char **argv) {
        const char *env = getenv("LEGION_CLIENT");
        char self[PATH_MAX], path[PATH_MAX + 64];
        if (env && *env) {
                execv(env, argv);
                fprintf(stderr, "legion: exec `%s` ($LEGION_CLIENT): %s\n", env, strerror(errno));
                return 127;
        }
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n < 0) {
                fprintf(stderr, "legion: readlink `/proc/self/exe`: %s\n", strerror(errno));
                return 127;
        }
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
                *slash = '\0';
        static const char *const rel[] = {"legion-client", "../libexec/legion/legion-client"};
        for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
                snprintf(path, sizeof(path), "%s/%s", self, rel[i]);
                execv(path, argv);
        }
        fprintf(stderr, "legion: cannot run legion-client beside `%s`: %s\n", self, strerror(errno));
        return 127;
}

int main(int argc, char **argv) {
        int i = 1;
        while (i < argc) {
                int k = skip_global(argv, i);
                if (!k)
                        break;
                i += k;
        }
        if (i < argc && !strcmp(argv[i], "sandbox"))
                return cmd_sandbox(argc - i, argv + i);
        return exec_client(argv);
}
