/* cmd_run.c — `kvant run` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_run(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant run: not yet implemented\n");
    return 2;
}
