/* Verb groups of the legion CLI. Each takes argv starting at its own name
 * and returns the process exit status. */
#pragma once

int cmd_sandbox(int argc, char **argv);
