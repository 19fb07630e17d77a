/* cli.h — helpers shared by the kvant subcommands. The CLI parses arguments, calls libkvant and prints;
 * the library never prints. */
#ifndef KV_CLI_H
#define KV_CLI_H

#include "kvant.h"

typedef int (*kv_cmd_fn)(int argc, char **argv);

typedef struct kv_command {
    const char *name;
    const char *summary;
    kv_cmd_fn run;
} kv_command;

/* Prints "kvant CMD: error: <formatted error>" to stderr; returns the exit code (2 for bad arguments,
 * 1 otherwise). */
int kv_cli_fail(const char *cmd, const kv_error *err);
/* Prints "kvant CMD: error: MESSAGE" and returns 2 (usage errors). */
int kv_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Strict number parsing for option values; return 0 on success. */
int kv_cli_parse_int(const char *s, long long lo, long long hi, long long *out);
/* "1,2,4": each item an integer in [lo, hi]; returns the count (<= cap) or -1 */
int kv_cli_parse_int_list(const char *s, long long lo, long long hi, long long *out, int cap);
int kv_cli_parse_double(const char *s, double *out);
/* Is argv[i] this option ("--name" or "-n")? Then *val gets the next argument (error if missing). */
int kv_cli_opt(int argc, char **argv, int *i, const char *long_name, const char *short_name, const char **val);
int kv_cli_flag(char **argv, int i, const char *long_name, const char *short_name);
int kv_cli_wants_help(int argc, char **argv);
/* `kvant bench kernels` (cmd_bench_kernels.c); argv[0] = "kernels". */
int kv_bench_kernels(int argc, char **argv);
int kv_bench_run(int argc, char **argv); /* cmd_bench_run.c */
/* Splits "a,b,c" into malloc'd strings (empty items dropped); returns the count (-1 out of memory).
 * Free with kv_cli_free_list. */
int kv_cli_split_list(const char *list, char ***out);
void kv_cli_free_list(char **items, int n);

/* Outputs (tools/kvant/cli_output.c): kv_cli_signals_install (main, once) makes SIGINT/SIGTERM/SIGHUP/SIGPIPE
 * remove the temps of tracked outputs before the process dies and ignores SIGXFSZ (writes fail with "File too
 * large" instead). kv_cli_prepare_output tracks PATH and checks it can be written (kv_outfile_check) before any
 * work; it returns 0, or the exit code after printing the error. */
void kv_cli_signals_install(void);
void kv_cli_track_output(const char *path);
int kv_cli_prepare_output(const char *cmd, const char *path);

/* every subcommand */
int kv_cmd_inspect(int argc, char **argv);
int kv_cmd_convert(int argc, char **argv);
int kv_cmd_eval(int argc, char **argv);
int kv_cmd_tokenize(int argc, char **argv);
int kv_cmd_run(int argc, char **argv);
int kv_cmd_quantize(int argc, char **argv);
int kv_cmd_formats(int argc, char **argv);
int kv_cmd_bench(int argc, char **argv);
int kv_cmd_bench_gpu(int argc, char **argv); /* cmd_bench_gpu.c: bench kernels --gpu */
int kv_cmd_imatrix(int argc, char **argv);
int kv_cmd_sensitivity(int argc, char **argv);
int kv_cmd_tasks(int argc, char **argv);
int kv_cmd_study(int argc, char **argv);

#endif
