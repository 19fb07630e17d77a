/* cmd_imatrix.c — `kvant imatrix` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_imatrix(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant imatrix: not yet implemented\n");
    return 2;
}
