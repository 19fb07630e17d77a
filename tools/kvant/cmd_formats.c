/* cmd_formats.c — `kvant formats` (placeholder until its issue lands). */
#include "cli.h"
#include <stdio.h>

int kv_cmd_formats(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "kvant formats: not yet implemented\n");
    return 2;
}
