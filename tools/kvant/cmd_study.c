/* cmd_study.c — `kvant study SPEC`: runs a study (kv_study_run: every cell of the spec quantized and evaluated,
 * resumable) and with --report DIR writes its Markdown report and plots (kv_study_report). docs/study.md. */
#include "cli.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char k_usage[] =
    "usage: kvant study SPEC.json [--out DIR] [-t N] [--jobs J] [--report DIR] [--no-run] [--list] [--quiet] [--json]\n"
    "\n"
    "Quantizes and evaluates every cell of the study SPEC (docs/study.md: methods x transforms x formats x\n"
    "activation formats x bit budgets on one model, explicit recipes, llama.cpp references) against the\n"
    "unquantized model: size, bits/weight, PPL, KLD, top-1 agreement, task accuracy and its recovery.\n"
    "Rows are appended to OUT/results.jsonl and OUT/results.csv as cells finish; a killed run started again\n"
    "skips the finished cells. OUT/results.json holds them all at the end.\n"
    "  --out DIR      results directory (default: the spec's \"out\", else build/studies/NAME)\n"
    "  -t, --threads N  threads in all (default: the spec's, else all cores)\n"
    "  --jobs J       cells at once, each with threads/J threads (default: the spec's, else 1)\n"
    "  --report DIR   afterwards, write DIR/report.md with tables and plots (SVG and PNG)\n"
    "  --no-run       only the report, from the rows already there\n"
    "  --list         print the cells (id, label, done or not) and exit\n"
    "  --quiet        no progress lines\n"
    "  --json         print the rows as JSON at the end\n"
    "LLAMA_CPP_DIR (a directory holding llama-quantize) enables the spec's llama_cpp reference cells.\n";

typedef struct progress_state {
    int quiet;
    double t0;
    int64_t total;
} progress_state;

static void on_row(void *user, const kv_study_row *r, int64_t done, int64_t todo) {
    progress_state *p = user;
    if (done == 0) p->t0 = kv_now_seconds(); /* the base row: the cells' ETA counts from here */
    if (p->quiet) return;
    const double el = kv_now_seconds() - p->t0;
    char eta[48] = "";
    if (done > 0 && done < todo) {
        double left = el / (double)done * (double)(todo - done);
        snprintf(eta, sizeof eta, ", ETA %dm%02ds", (int)(left / 60), (int)fmod(left, 60));
    }
    char acc[64] = "";
    if (isfinite(r->acc_mean)) snprintf(acc, sizeof acc, ", acc %.3f (%.1f%%)", r->acc_mean, r->recovery);
    fprintf(stderr, "kvant study: [%lld/%lld] %s: %.3f bits/w, PPL %.4f, KLD %.5f, top-1 %.2f%%%s (%.1f s + %.1f s)%s\n",
            (long long)done, (long long)todo, r->label, r->bpw, r->ppl, r->kld, r->top1, acc, r->seconds_quantize,
            r->seconds_eval, eta);
}

static void on_log(void *user, const char *msg) {
    progress_state *p = user;
    if (!p->quiet) fprintf(stderr, "kvant study: %s\n", msg);
}

/* The commit of the working tree (git describe --always --dirty), "" outside a checkout. */
static void git_commit(char *dst, size_t n) {
    dst[0] = 0;
    FILE *f = popen("git describe --always --dirty 2>/dev/null", "r");
    if (!f) return;
    if (fgets(dst, (int)n, f)) dst[strcspn(dst, "\n")] = 0;
    pclose(f);
}

static void print_json(const kv_study *s, const kv_study_row *rows, int64_t n, const kv_study_summary *sum) {
    kv_jw w;
    kv_jw_init(&w, stdout, 1);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "study"); kv_jw_str(&w, kv_study_name(s));
    kv_jw_key(&w, "out"); kv_jw_str(&w, kv_study_out_dir(s));
    if (sum) {
        kv_jw_key(&w, "cells"); kv_jw_int(&w, sum->cells);
        kv_jw_key(&w, "already_done"); kv_jw_int(&w, sum->already);
        kv_jw_key(&w, "run"); kv_jw_int(&w, sum->run);
        kv_jw_key(&w, "left_out"); kv_jw_int(&w, sum->left_out);
        kv_jw_key(&w, "seconds"); kv_jw_num(&w, sum->seconds);
    }
    kv_jw_key(&w, "rows");
    kv_jw_arr_begin(&w);
    for (int64_t i = 0; i < n; i++) {
        const kv_study_row *r = &rows[i];
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "id"); kv_jw_str(&w, r->id);
        kv_jw_key(&w, "label"); kv_jw_str(&w, r->label);
        kv_jw_key(&w, "kind"); kv_jw_str(&w, r->kind);
        kv_jw_key(&w, "bpw"); kv_jw_num(&w, r->bpw);
        kv_jw_key(&w, "tensor_bytes"); kv_jw_int(&w, (int64_t)r->tensor_bytes);
        kv_jw_key(&w, "ppl"); kv_jw_num(&w, r->ppl);
        kv_jw_key(&w, "kld"); kv_jw_num(&w, r->kld);
        kv_jw_key(&w, "top1"); kv_jw_num(&w, r->top1);
        kv_jw_key(&w, "acc_mean"); kv_jw_num(&w, r->acc_mean);
        kv_jw_key(&w, "recovery"); kv_jw_num(&w, r->recovery);
        kv_jw_obj_end(&w);
    }
    kv_jw_arr_end(&w);
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
}

static void print_table(const kv_study_row *rows, int64_t n) {
    printf("| cell | bits/weight | PPL | KLD | top-1 | acc | recovery |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for (int64_t i = 0; i < n; i++) {
        const kv_study_row *r = &rows[i];
        printf("| %s | %.3f | %.4f | %.5f | %.2f%% | ", r->label, r->bpw, r->ppl, r->kld, r->top1);
        if (isfinite(r->acc_mean)) printf("%.4f | %.1f%% |\n", r->acc_mean, r->recovery);
        else printf("- | - |\n");
    }
}

int kv_cmd_study(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) {
        fputs(k_usage, stdout);
        return 0;
    }
    const char *spec = NULL, *out = NULL, *report = NULL, *v = NULL;
    long long threads = 0, jobs = 0;
    int quiet = 0, json = 0, no_run = 0, list = 0;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_opt(argc, argv, &i, "--out", NULL, &v)) {
            if (!v || !*v) return kv_cli_usage("study", "--out needs a directory");
            out = v;
        } else if (kv_cli_opt(argc, argv, &i, "--report", NULL, &v)) {
            if (!v || !*v) return kv_cli_usage("study", "--report needs a directory");
            report = v;
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if (kv_cli_parse_int(v, 1, 1024, &threads)) return kv_cli_usage("study", "-t must be in 1 .. 1024");
        } else if (kv_cli_opt(argc, argv, &i, "--jobs", "-j", &v)) {
            if (kv_cli_parse_int(v, 1, 256, &jobs)) return kv_cli_usage("study", "--jobs must be in 1 .. 256");
        } else if (kv_cli_flag(argv, i, "--quiet", "-q")) quiet = 1;
        else if (kv_cli_flag(argv, i, "--json", NULL)) json = 1;
        else if (kv_cli_flag(argv, i, "--no-run", NULL)) no_run = 1;
        else if (kv_cli_flag(argv, i, "--list", NULL)) list = 1;
        else if (argv[i][0] == '-') return kv_cli_usage("study", "unknown option '%s'", argv[i]);
        else if (!spec) spec = argv[i];
        else return kv_cli_usage("study", "unexpected argument '%s'", argv[i]);
    }
    if (!spec) return kv_cli_usage("study", "missing SPEC.json");
    if (no_run && !report) return kv_cli_usage("study", "--no-run goes with --report DIR");
    kv_error err;
    kv_error_clear(&err);
    kv_study *s = NULL;
    if (kv_study_load(spec, &s, &err) != KV_OK) return kv_cli_fail("study", &err);
    if (out && kv_study_set_out_dir(s, out, &err) != KV_OK) {
        kv_study_free(s);
        return kv_cli_fail("study", &err);
    }
    int rc = 0;
    kv_study_row *rows = NULL;
    int64_t n = 0;
    if (list) {
        if (kv_study_rows(s, &rows, &n, &err) != KV_OK) rc = kv_cli_fail("study", &err);
        for (int64_t i = 0; rc == 0 && i < kv_study_n_cells(s); i++) {
            const char *label = kv_study_cell_label(s, i);
            int done = 0;
            for (int64_t k = 0; k < n; k++) done |= !strcmp(rows[k].label, label) && strcmp(rows[k].kind, "base");
            printf("%4lld  %-5s  %s\n", (long long)i, done ? "done" : "-", label);
        }
        free(rows);
        kv_study_free(s);
        return rc;
    }
    char commit[48];
    git_commit(commit, sizeof commit);
    const char *llama = getenv("LLAMA_CPP_DIR");
    progress_state ps = {.quiet = quiet, .t0 = kv_now_seconds(), .total = kv_study_n_cells(s)};
    kv_study_summary sum;
    memset(&sum, 0, sizeof sum);
    if (!no_run) {
        kv_study_opts o = {.threads = (int)threads, .jobs = (int)jobs, .llama_cpp_dir = llama && *llama ? llama : NULL,
                           .commit = commit, .on_row = on_row, .log = on_log, .user = &ps};
        if (!quiet)
            fprintf(stderr, "kvant study: %s: %lld cells, results in %s\n", kv_study_name(s), (long long)kv_study_n_cells(s),
                    kv_study_out_dir(s));
        if (kv_study_run(s, &o, &sum, &err) != KV_OK) rc = kv_cli_fail("study", &err);
        else if (!quiet)
            fprintf(stderr, "kvant study: %lld cells run, %lld already done, %lld left out (%.1f s)\n", (long long)sum.run,
                    (long long)sum.already, (long long)sum.left_out, sum.seconds);
    }
    if (rc == 0 && report && kv_study_report(s, report, commit, &err) != KV_OK) rc = kv_cli_fail("study", &err);
    if (rc == 0 && kv_study_rows(s, &rows, &n, &err) != KV_OK) rc = kv_cli_fail("study", &err);
    if (rc == 0) {
        if (json) print_json(s, rows, n, no_run ? NULL : &sum);
        else if (!quiet) print_table(rows, n);
    }
    free(rows);
    kv_study_free(s);
    return rc;
}
