/* legion image: import, pull, list, inspect, rm and gc of OCI images.
 * STUB: being written. */
#include <stdio.h>

#include "cli/cli.h"

int cmd_image(int argc, char **argv) {
        (void) argc, (void) argv;
        fprintf(stderr, "legion image: not implemented yet\n");
        return 1;
}
