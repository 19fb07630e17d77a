/* cmd_convert.c — `kvant convert` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_convert(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant convert: not yet implemented\n");
    return 2;
}
