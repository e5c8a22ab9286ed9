/* legion: the command-line client. This file only dispatches to the verb
 * groups (cmd-*.c); each prints its own errors once, at the top. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"

static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *help;
} groups[] = {
        {"app", cmd_app, "deploy, list, show, change and delete apps; their logs"},
        {"invoke", cmd_invoke, "send a request to an app"},
        {"pool", cmd_pool, "warm pool groups"},
        {"ns", cmd_ns, "namespaces"},
        {"token", cmd_token, "API tokens of a namespace"},
        {"sessionpool", cmd_sessionpool, "pools of code-interpreter sessions"},
        {"session", cmd_session, "run code in a session; its files; list and end sessions"},
        {"image", cmd_image, "import, pull, list, inspect and remove OCI images"},
        {"package", cmd_package, "push a function's code to a registry (for --package-image)"},
        {"pod", cmd_pod, "run pods from images (the Kubernetes Pod API; kubectl works too)"},
        {"submit", cmd_submit, "run a serverless job: a Dask master, driver and executors, or N copies"},
        {"deploy-master", cmd_deploy_master, "start a Dask master alone, for jobs to share"},
        {"job", cmd_job, "list, show, follow, stop and delete jobs; their warm pools"},
        {"master", cmd_master, "masters of jobs (kept or deployed)"},
        {"kubeconfig", cmd_kubeconfig, "print a kubeconfig for kubectl (HTTPS, legiond's CA, the token)"},
        {"sandbox", cmd_sandbox, "run one-off sandboxes, clean up leftovers"},
};

static void usage(FILE *f) {
        fprintf(f, "usage: legion <command> [args...]\n\ncommands:\n");
        for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
                fprintf(f, "  %-14s %s\n", groups[i].name, groups[i].help);
        fprintf(f, "\nRun `legion <command> --help` for details.\n%s", CLI_GLOBAL_HELP);
}

int main(int argc, char **argv) {
        /* --api, --token, --ns, --json may also come before the command. */
        if (cli_take_globals(&argc, argv))
                return 2;
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
