/* test_layers.c — the layering rule (docs/STYLE.md): src/core, formats, kernels, io and model never include
 * or call src/transforms, algos or eval. scripts/check_layers.sh checks the includes and, on the objects of
 * the build directory the suite runs from ($KVANT_BIN's), the symbols each lower-layer object references. */
#include "test.h"

KV_TEST(layers_lower_never_call_upper) {
    if (!kv_test_exists("scripts/check_layers.sh")) SKIP("not run from the repository root");
    const char *bin = getenv("KVANT_BIN");
    char build[512] = "build";
    if (bin && *bin) {
        snprintf(build, sizeof build, "%s", bin);
        char *slash = strrchr(build, '/');
        if (slash) *slash = 0;
        else snprintf(build, sizeof build, ".");
    }
    char cmd[700];
    snprintf(cmd, sizeof cmd, "sh scripts/check_layers.sh '%s' 2>&1", build);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    char line[1024], first[1024] = "";
    int n = 0;
    while (fgets(line, sizeof line, p)) {
        if (!strncmp(line, "layering: ok", 12)) continue;
        if (!n++) snprintf(first, sizeof first, "%s", line);
        fprintf(stderr, "    %s", line);
    }
    int st = pclose(p);
    CHECK_MSG(st == 0 && n == 0, "%d layering violations, first: %s", n, first);
}
