/* cmd_quantize.c — `kvant quantize` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_quantize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant quantize: not yet implemented\n");
    return 2;
}
