/* main.c — `kvant`: one CLI, subcommands dispatched from a table. */
#include "cli.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const kv_command k_commands[] = {
    {"inspect", "show a model file: architecture, hyper-parameters, tensors, bits/weight", kv_cmd_inspect},
    {"convert", "convert a Hugging Face or llama2.c model to GGUF (f32/f16/bf16)", kv_cmd_convert},
    {"eval", "perplexity and KL-divergence of a model on a text", kv_cmd_eval},
    {"tokenize", "print the token ids of a text", kv_cmd_tokenize},
    {"run", "generate text from a prompt", kv_cmd_run},
    {"quantize", "quantize a model and write GGUF", kv_cmd_quantize},
    {"formats", "list number formats with their error on Gaussian data; quantize raw rows", kv_cmd_formats},
    {"bench", "benchmarks (matmul, kernels, run, prefill)", kv_cmd_bench},
    {"imatrix", "compute an importance matrix (llama.cpp format) from calibration text", kv_cmd_imatrix},
    {"sensitivity", "estimate per-layer sensitivities (HIGGS linearity) for bit allocation", kv_cmd_sensitivity},
    {"tasks", "make and check zero-shot multiple-choice task files (JSONL) for eval --tasks", kv_cmd_tasks},
    {"study", "quantize and evaluate a matrix of recipes (a study spec); report with tables and plots", kv_cmd_study},
};

static void print_help(FILE *out) {
    fprintf(out, "kvant %s — post-training quantization of large language models\n\n", KV_VERSION_STRING);
    fprintf(out, "usage: kvant <command> [options]\n       kvant <command> --help\n\ncommands:\n");
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        fprintf(out, "  %-12s %s\n", k_commands[i].name, k_commands[i].summary);
    fprintf(out, "\nThe manual is in docs/ (one page per command).\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        if (argc >= 3 && !strcmp(argv[1], "help")) {
            for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
                if (!strcmp(argv[2], k_commands[i].name)) {
                    char *args[] = {argv[2], "--help", NULL};
                    return k_commands[i].run(2, args);
                }
            fprintf(stderr, "kvant: unknown command '%s'\n", argv[2]);
            return 2;
        }
        print_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("kvant %s\n", KV_VERSION_STRING);
        return 0;
    }
    kv_cli_signals_install();
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (!strcmp(argv[1], k_commands[i].name)) return k_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kvant: unknown command '%s' (try 'kvant help')\n", argv[1]);
    return 2;
}

int kv_cli_fail(const char *cmd, const kv_error *err) {
    char buf[1400];
    fprintf(stderr, "kvant %s: error: %s\n", cmd, kv_error_format(err, buf, sizeof buf));
    return err && err->status == KV_EINVAL ? 2 : 1;
}

int kv_cli_usage(const char *cmd, const char *fmt, ...) {
    fprintf(stderr, "kvant %s: error: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'kvant %s --help')\n", cmd);
    return 2;
}

int kv_cli_parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return -1;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (*end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int kv_cli_parse_int_list(const char *s, long long lo, long long hi, long long *out, int cap) {
    char **items = NULL;
    int n = kv_cli_split_list(s, &items);
    int bad = n <= 0 || n > cap;
    for (int i = 0; !bad && i < n; i++) bad = kv_cli_parse_int(items[i], lo, hi, &out[i]) != 0;
    kv_cli_free_list(items, n < 0 ? 0 : n);
    return bad ? -1 : n;
}

int kv_cli_parse_double(const char *s, double *out) {
    if (!s || !*s) return -1;
    char *end = NULL;
    double v = strtod(s, &end);
    if (*end) return -1;
    *out = v;
    return 0;
}

int kv_cli_opt(int argc, char **argv, int *i, const char *long_name, const char *short_name, const char **val) {
    const char *a = argv[*i];
    size_t ln = long_name ? strlen(long_name) : 0;
    if (long_name && !strncmp(a, long_name, ln) && a[ln] == '=') {
        *val = a + ln + 1;
        return 1;
    }
    if ((long_name && !strcmp(a, long_name)) || (short_name && !strcmp(a, short_name))) {
        if (*i + 1 >= argc) { *val = NULL; return 1; }
        *val = argv[++*i];
        return 1;
    }
    return 0;
}

int kv_cli_flag(char **argv, int i, const char *long_name, const char *short_name) {
    return (long_name && !strcmp(argv[i], long_name)) || (short_name && !strcmp(argv[i], short_name));
}

int kv_cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

int kv_cli_split_list(const char *list, char ***out) {
    *out = NULL;
    char *copy = strdup(list);
    char **items = calloc(strlen(list) + 1, sizeof(char *));
    if (!copy || !items) {
        free(copy);
        free(items);
        return -1;
    }
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (*tok && (items[n] = strdup(tok)) != NULL) n++;
    free(copy);
    *out = items;
    return n;
}

void kv_cli_free_list(char **items, int n) {
    for (int i = 0; i < n; i++) free(items[i]);
    free(items);
}
