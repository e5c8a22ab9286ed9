/* legion pod: apply, list, get, logs and delete pods.
 * STUB: being written. */
#include <stdio.h>

#include "cli/cli.h"

int cmd_pod(int argc, char **argv) {
        (void) argc, (void) argv;
        fprintf(stderr, "legion pod: not implemented yet\n");
        return 1;
}
