/* cmd_eval.c — `kvant eval` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_eval(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant eval: not yet implemented\n");
    return 2;
}
