/* cmd_bench.c — `kvant bench` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_bench(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant bench: not yet implemented\n");
    return 2;
}
