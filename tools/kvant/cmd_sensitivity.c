/* cmd_sensitivity.c — `kvant sensitivity` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_sensitivity(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant sensitivity: not yet implemented\n");
    return 2;
}
