/* cmd_tokenize.c — `kvant tokenize` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant tokenize: not yet implemented\n");
    return 2;
}
