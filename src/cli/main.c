/* legion: the command-line client. This file only dispatches to the verb
 * groups (cmd-*.c); each prints its own errors once, at the top. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *help;
} groups[] = {
        {"sandbox", cmd_sandbox, "run one-off sandboxes, clean up leftovers"},
};

static void usage(FILE *f) {
        fprintf(f, "usage: legion <command> [args...]\n\ncommands:\n");
        for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
                fprintf(f, "  %-10s %s\n", groups[i].name, groups[i].help);
        fprintf(f, "\nRun `legion <command> --help` for details.\n");
}

int main(int argc, char **argv) {
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
                usage(stdout);
                return 0;
        }
        for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
                if (!strcmp(argv[1], groups[i].name))
                        return groups[i].run(argc - 1, argv + 1);
        fprintf(stderr, "legion: unknown command `%s`\n", argv[1]);
        usage(stderr);
        return 2;
}
