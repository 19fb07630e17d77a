/* fuzz_recipe.c — libFuzzer target for quantize recipes: `kvant quantize MODEL -o OUT --recipe R.json` with the
 * bytes as R.json (the CLI's recipe reader, tools/kvant/cmd_quantize.c, then everything its values reach:
 * format, method, transform and act names, method options, override regexes, the output format). MODEL is a
 * tiny llama2.c checkpoint (fuzz_tiny_model_path) and OUT a file in a private directory under /dev/shm (or
 * /tmp), so a recipe that passes every check costs one small quantization. Nothing may crash, leak or reach
 * undefined behaviour, and no temporary file may be left behind (stderr closed by fuzz/recipe.flags). */
#include "fuzz_util.h"
#include "../tools/kvant/cli.h"
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

static char g_dir[64], g_out[96];

static void remove_dir(void) {
    unlink(g_out);
    rmdir(g_dir);
}

static void make_dir(void) {
    snprintf(g_dir, sizeof g_dir, "%s/kvant-fuzz-recipe-%d", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (int)getpid());
    if (mkdir(g_dir, 0700) != 0 && errno != EEXIST) abort();
    snprintf(g_out, sizeof g_out, "%s/out.gguf", g_dir);
    atexit(remove_dir);
}

/* Whatever the outcome, the directory holds at most the output itself (no OUT.tmp.* left behind). */
static void check_and_clean(void) {
    DIR *d = opendir(g_dir);
    if (!d) abort();
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        FUZZ_ASSERT(!strcmp(e->d_name, "out.gguf"));
    }
    closedir(d);
    unlink(g_out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) make_dir();
    char model[64], recipe[64];
    snprintf(model, sizeof model, "%s", fuzz_tiny_model_path());
    snprintf(recipe, sizeof recipe, "%s", fuzz_file(data, size));
    char *argv[] = {"quantize", model, "-o", g_out, "--recipe", recipe, "--quiet", "--threads", "1", NULL};
    kv_cmd_quantize((int)(sizeof argv / sizeof argv[0]) - 1, argv);
    check_and_clean();
    return 0;
}
