/* cmd_inspect.c — `kvant inspect` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_inspect(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant inspect: not yet implemented\n");
    return 2;
}
