/* cmd_eval.c — `kvant eval MODEL --text FILE`: perplexity (hf or llama.cpp convention) and, against a saved
 * base log-probs file, the KL-divergence statistics of llama-perplexity's KL mode (docs/eval.md). */
#include "cli.h"
#include "fwd_cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_usage[] =
    "usage: kvant eval MODEL --text FILE [--ctx N] [--chunks K] [--style hf|llamacpp]\n"
    "       (llama-perplexity's spellings work too: -m MODEL, -f FILE, -c N, --chunks K)\n"
    "       kvant eval MODEL --tasks FILE.jsonl[,FILE2.jsonl...] [--limit N] (with or without --text)\n"
    "                  [--save-logits FILE] [--kld FILE] [-t N] [--rope-freq auto|exact|bf16|f16]\n"
    "                  [--bf16-dot] [--act-dot q8|f32] [--json] [--quiet]\n"
    "\n"
    "Perplexity of MODEL (HF directory, .gguf, llama2.c .bin) on a UTF-8 text.\n"
    "  --style hf        (default) tokens = [BOS] + encode(whole text); non-overlapping windows of N tokens,\n"
    "                    tail dropped; every predicted token scored (the GPTQ / HIGGS papers' convention).\n"
    "  --style llamacpp  llama-perplexity: each window from an empty cache with BOS replacing its first\n"
    "                    token, only the second half scored (N-1-N/2 tokens per window); >= 2 windows needed.\n"
    "  --ctx N           window length (default 512; at most the model's context)\n"
    "  --chunks K        evaluate the first K windows only (default: all)\n"
    "  --save-logits F   store the model's log-probs of every scored token (kvant logits file, docs/FORMAT.md)\n"
    "  --kld F           compare with a saved logits file: KL-divergence mean/median/p90/p99/max, same top\n"
    "                    token %, Δp of the correct token (mean, RMS), PPL ratio. Same text, ctx, style, chunks.\n"
    "  --tasks F,...     zero-shot multiple-choice accuracy (lm-eval's log-likelihood convention): acc and\n"
    "                    acc_norm (per byte of the choice) +/- stderr per task file (JSONL schema: docs/eval.md;\n"
    "                    `kvant tasks make` generates files from a text)\n"
    "  --limit N         score the first N items of each task file\n"
    "  -t, --threads N   threads (default: all cores)\n"
    "  --rope-freq M     RoPE frequencies: auto (default; bf16-rounded like transformers for bf16 HF dirs),\n"
    "                    exact, bf16, f16\n"
    "  --bf16-dot        bf16 weights times activations rounded to bf16 (AVX512-BF16 dot products): the\n"
    "                    arithmetic of llama.cpp's CPU path, about 2x faster; default: exact fp32 activations\n"
    "  --act-dot M       f32 (default): exact fp32 activations; q8: q4_0/q8_0/q4_k/q5_k/q6_k weights multiply\n"
    "                    activations quantized to 8 bits per block with integer dot products (llama.cpp's CPU\n"
    "                    arithmetic, llama-perplexity's numbers; faster, PPL moves by ~0.1%%)\n"
    "  --json            one JSON object: ppl, ppl_stderr, nll, tokens, windows, ctx, style, tokens_per_s,\n"
    "                    seconds, model, text, n_text_tokens and (with --kld) kld {...}; with --tasks\n"
    "                    tasks [{name, file, n, acc, acc_stderr, acc_norm, acc_norm_stderr, ...}]\n"
    "  --quiet           no progress line\n"
    "\n"
    "Exit status: 0 on success, 1 on a runtime error (unreadable or malformed input), 2 on bad arguments.\n";

typedef struct { kv_progress *p; } progress_ctx;

static void on_progress(void *user, int64_t done, int64_t total) {
    (void)total;
    kv_progress_update(((progress_ctx *)user)->p, done);
}

typedef struct task_run {
    const char *file;
    kv_taskset *ts;
    kv_task_result r;
} task_run;

static void json_tasks(kv_jw *w, const task_run *tr, int n) {
    kv_jw_key(w, "tasks");
    kv_jw_arr_begin(w);
    for (int i = 0; i < n; i++) {
        kv_jw_obj_begin(w);
        kv_jw_key(w, "name"); kv_jw_str(w, tr[i].ts->name);
        kv_jw_key(w, "file"); kv_jw_str(w, tr[i].file);
        kv_jw_key(w, "n"); kv_jw_int(w, tr[i].r.n);
        kv_jw_key(w, "acc"); kv_jw_num(w, tr[i].r.acc);
        kv_jw_key(w, "acc_stderr"); kv_jw_num(w, tr[i].r.acc_stderr);
        kv_jw_key(w, "acc_norm"); kv_jw_num(w, tr[i].r.acc_norm);
        kv_jw_key(w, "acc_norm_stderr"); kv_jw_num(w, tr[i].r.acc_norm_stderr);
        kv_jw_key(w, "truncated"); kv_jw_int(w, tr[i].r.truncated);
        kv_jw_key(w, "tokens"); kv_jw_int(w, tr[i].r.tokens);
        kv_jw_key(w, "seconds"); kv_jw_num(w, tr[i].r.seconds);
        kv_jw_obj_end(w);
    }
    kv_jw_arr_end(w);
}

static void print_tasks(const task_run *tr, int n) {
    printf("%-24s %6s %16s %16s\n", "task", "n", "acc", "acc_norm");
    for (int i = 0; i < n; i++)
        printf("%-24s %6lld %7.4f +/- %.4f %7.4f +/- %.4f%s\n", tr[i].ts->name, (long long)tr[i].r.n, tr[i].r.acc,
               tr[i].r.acc_stderr, tr[i].r.acc_norm, tr[i].r.acc_norm_stderr, tr[i].r.truncated ? "  (some contexts truncated)" : "");
}

static void print_json(const char *model, const char *text, int64_t ntext, const kv_eval_result *r,
                       const task_run *tr, int ntr) {
    kv_jw w;
    kv_jw_init(&w, stdout, 1);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "model"); kv_jw_str(&w, model);
    if (ntr) json_tasks(&w, tr, ntr);
    if (!r) {
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
        return;
    }
    kv_jw_key(&w, "text"); kv_jw_str(&w, text);
    kv_jw_key(&w, "n_text_tokens"); kv_jw_int(&w, ntext);
    kv_jw_key(&w, "style"); kv_jw_str(&w, kv_ppl_style_name(r->style));
    kv_jw_key(&w, "ctx"); kv_jw_int(&w, r->ctx);
    kv_jw_key(&w, "windows"); kv_jw_int(&w, r->windows);
    kv_jw_key(&w, "tokens"); kv_jw_int(&w, r->tokens);
    kv_jw_key(&w, "ppl"); kv_jw_num(&w, r->ppl);
    kv_jw_key(&w, "ppl_stderr"); kv_jw_num(&w, r->ppl_stderr);
    kv_jw_key(&w, "nll"); kv_jw_num(&w, r->nll);
    kv_jw_key(&w, "seconds"); kv_jw_num(&w, r->seconds);
    kv_jw_key(&w, "tokens_per_s"); kv_jw_num(&w, r->tokens_per_s);
    if (r->has_kld) {
        const kv_kld_stats *k = &r->kld;
        kv_jw_key(&w, "kld");
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "mean"); kv_jw_num(&w, k->mean);
        kv_jw_key(&w, "mean_stderr"); kv_jw_num(&w, k->mean_stderr);
        kv_jw_key(&w, "median"); kv_jw_num(&w, k->median);
        kv_jw_key(&w, "p90"); kv_jw_num(&w, k->p90);
        kv_jw_key(&w, "p99"); kv_jw_num(&w, k->p99);
        kv_jw_key(&w, "max"); kv_jw_num(&w, k->max);
        kv_jw_key(&w, "min"); kv_jw_num(&w, k->min);
        kv_jw_key(&w, "top1_agree"); kv_jw_num(&w, k->top1_agree);
        kv_jw_key(&w, "dp_mean"); kv_jw_num(&w, k->dp_mean);
        kv_jw_key(&w, "dp_rms"); kv_jw_num(&w, k->dp_rms);
        kv_jw_key(&w, "ppl_base"); kv_jw_num(&w, k->ppl_base);
        kv_jw_key(&w, "ppl_ratio"); kv_jw_num(&w, k->ppl_ratio);
        kv_jw_obj_end(&w);
    }
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
}

static void print_text(const char *model, const char *text, int64_t ntext, const kv_eval_result *r) {
    printf("model: %s\ntext:  %s (%lld tokens)\n", model, text, (long long)ntext);
    printf("style %s, ctx %d, %lld windows, %lld tokens scored\n", kv_ppl_style_name(r->style), (int)r->ctx,
           (long long)r->windows, (long long)r->tokens);
    printf("PPL = %.4f +/- %.4f   (mean NLL %.6f)\n", r->ppl, r->ppl_stderr, r->nll);
    printf("%.1f tokens/s (%.2f s)\n", r->tokens_per_s, r->seconds);
    if (r->has_kld) {
        const kv_kld_stats *k = &r->kld;
        printf("PPL(base) = %.4f   PPL ratio = %.6f\n", k->ppl_base, k->ppl_ratio);
        printf("KLD: mean %.6f +/- %.6f, median %.6f, p90 %.6f, p99 %.6f, max %.6f\n", k->mean, k->mean_stderr,
               k->median, k->p90, k->p99, k->max);
        printf("same top token: %.3f %%   Δp: mean %.4f %%, RMS %.4f %%\n", k->top1_agree, 100.0 * k->dp_mean,
               100.0 * k->dp_rms);
    }
}

int kv_cmd_eval(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) { fputs(k_usage, stdout); return 0; }
    const char *model = NULL, *text_path = NULL, *tasks_arg = NULL, *v = NULL;
    long long limit = 0;
    kv_eval_opts o = {.ctx = 512, .style = KV_PPL_HF, .bos_id = -1};
    kv_model_load_opts lo = {.prepack = -1};
    long long threads = 0, n;
    int json = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_opt(argc, argv, &i, "--text", "-f", &v)) { /* -f: llama-perplexity's spelling */
            if (!v) return kv_cli_usage("eval", "--text needs a file");
            if (text_path) return kv_cli_usage("eval", "--text (-f) given twice");
            text_path = v;
        } else if (kv_cli_opt(argc, argv, &i, "--model", "-m", &v)) {
            if (!v) return kv_cli_usage("eval", "--model needs a path");
            if (model) return kv_cli_usage("eval", "MODEL given twice ('%s')", v);
            model = v;
        } else if (kv_cli_opt(argc, argv, &i, "--tasks", NULL, &v)) {
            if (!v) return kv_cli_usage("eval", "--tasks needs a JSONL file (or a comma list)");
            tasks_arg = v;
        } else if (kv_cli_opt(argc, argv, &i, "--limit", NULL, &v)) {
            if (kv_cli_parse_int(v, 1, INT64_MAX, &limit)) return kv_cli_usage("eval", "--limit needs a positive number");
        } else if (kv_cli_opt(argc, argv, &i, "--ctx", "-c", &v)) {
            if (kv_cli_parse_int(v, 2, 1 << 20, &n)) return kv_cli_usage("eval", "--ctx needs a number >= 2");
            o.ctx = (int32_t)n;
        } else if (kv_cli_opt(argc, argv, &i, "--chunks", NULL, &v)) {
            if (kv_cli_parse_int(v, 1, INT64_MAX, &n)) return kv_cli_usage("eval", "--chunks needs a positive number");
            o.chunks = n;
        } else if (kv_cli_opt(argc, argv, &i, "--style", NULL, &v)) {
            if (v && !strcmp(v, "hf")) o.style = KV_PPL_HF;
            else if (v && !strcmp(v, "llamacpp")) o.style = KV_PPL_LLAMACPP;
            else return kv_cli_usage("eval", "--style is hf or llamacpp");
        } else if (kv_cli_opt(argc, argv, &i, "--save-logits", NULL, &v)) {
            if (!v) return kv_cli_usage("eval", "--save-logits needs a file");
            o.save_logits = v;
        } else if (kv_cli_opt(argc, argv, &i, "--kld", NULL, &v)) {
            if (!v) return kv_cli_usage("eval", "--kld needs a file");
            o.kld_base = v;
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if (kv_cli_parse_int(v, 1, 256, &threads)) return kv_cli_usage("eval", "--threads needs 1..256");
        } else if (kv_cli_opt(argc, argv, &i, "--rope-freq", NULL, &v)) {
            if (kv_cli_parse_rope_freq(v, &lo.rope_freq)) return kv_cli_usage("eval", "--rope-freq is auto, exact, bf16 or f16");
        } else if (kv_cli_flag(argv, i, "--bf16-dot", NULL)) {
            lo.bf16_dot = 1;
        } else if (kv_cli_opt(argc, argv, &i, "--act-dot", NULL, &v)) {
            if (kv_cli_parse_act_dot(v, &lo.act_q8)) return kv_cli_usage("eval", "--act-dot is q8 or f32");
        } else if (kv_cli_flag(argv, i, "--json", NULL)) {
            json = 1;
        } else if (kv_cli_flag(argv, i, "--quiet", "-q")) {
            quiet = 1;
        } else if (argv[i][0] == '-') {
            return kv_cli_usage("eval", "unknown option '%s'", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            return kv_cli_usage("eval", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model) return kv_cli_usage("eval", "missing MODEL");
    if (!text_path && !tasks_arg) return kv_cli_usage("eval", "missing --text FILE or --tasks FILE.jsonl");
    if (!text_path && (o.kld_base || o.save_logits)) return kv_cli_usage("eval", "--kld and --save-logits need --text");
    if (limit && !tasks_arg) return kv_cli_usage("eval", "--limit applies to --tasks");
    int prc = kv_cli_prepare_output("eval", o.save_logits); /* before the work: a read-only directory fails now */
    if (prc) return prc;

    kv_error err;
    kv_error_clear(&err);
    /* task files are parsed before the model is loaded: a bad file fails fast */
    char **task_files = NULL;
    int ntr = 0;
    task_run *tr = NULL;
    if (tasks_arg) {
        ntr = kv_cli_split_list(tasks_arg, &task_files);
        if (ntr <= 0) return kv_cli_usage("eval", "--tasks names no file");
        tr = calloc((size_t)ntr, sizeof *tr);
        if (!tr) { kv_cli_free_list(task_files, ntr); return 1; }
        for (int t = 0; t < ntr; t++) {
            tr[t].file = task_files[t];
            if (kv_tasks_load(task_files[t], &tr[t].ts, &err) != KV_OK) {
                int rc2 = kv_cli_fail("eval", &err);
                for (int q = 0; q < t; q++) kv_tasks_free(tr[q].ts);
                free(tr);
                kv_cli_free_list(task_files, ntr);
                return rc2;
            }
        }
    }
    kv_cli_model cm;
    memset(&cm, 0, sizeof cm);
    char *text = NULL;
    size_t len = 0, nids = 0;
    int32_t *ids = NULL;
    kv_pool *pool = NULL;
    int rc = 0;
    kv_eval_result r;
    kv_progress prog;
    progress_ctx pc = {&prog};
    if (text_path && kv_cli_read_text(text_path, &text, &len, &err) != KV_OK) { rc = kv_cli_fail("eval", &err); goto done; }
    if (kv_cli_model_open(model, &lo, 1, &cm, &err) != KV_OK) { rc = kv_cli_fail("eval", &err); goto done; }
    pool = kv_pool_create((int)threads);
    for (int t = 0; t < ntr; t++) {
        kv_task_opts to = {.add_bos = -1, .limit = limit, .progress = on_progress, .progress_user = &pc};
        kv_progress_begin(&prog, tr[t].ts->name, limit && limit < tr[t].ts->n ? limit : tr[t].ts->n, quiet || json);
        kv_status tst = kv_tasks_eval(cm.m, cm.tok, tr[t].ts, &to, pool, &tr[t].r, NULL, &err);
        kv_progress_end(&prog);
        if (tst != KV_OK) { kv_error_context(&err, tr[t].file, -1, NULL); rc = kv_cli_fail("eval", &err); goto done; }
    }
    if (!text_path) {
        if (json) print_json(model, NULL, 0, NULL, tr, ntr);
        else print_tasks(tr, ntr);
        goto done;
    }
    const int add_bos = kv_tokenizer_bos(cm.tok) >= 0 && kv_tokenizer_add_bos_default(cm.tok);
    o.bos_id = kv_tokenizer_bos(cm.tok);
    if (kv_tokenize(cm.tok, text, len, add_bos, &ids, &nids, &err) != KV_OK) { rc = kv_cli_fail("eval", &err); goto done; }
    int64_t windows = (int64_t)nids / o.ctx;
    if (o.chunks > 0 && o.chunks < windows) windows = o.chunks;
    kv_progress_begin(&prog, "eval", windows > 0 ? windows : 1, quiet || json);
    o.progress = on_progress;
    o.progress_user = &pc;
    kv_status st = kv_eval_ppl(cm.m, ids, (int64_t)nids, &o, pool, &r, &err);
    kv_progress_end(&prog);
    if (st != KV_OK) { rc = kv_cli_fail("eval", &err); goto done; }
    if (json) print_json(model, text_path, (int64_t)nids, &r, tr, ntr);
    else {
        print_text(model, text_path, (int64_t)nids, &r);
        if (ntr) print_tasks(tr, ntr);
    }
done:
    for (int t = 0; t < ntr; t++) kv_tasks_free(tr[t].ts);
    free(tr);
    if (task_files) kv_cli_free_list(task_files, ntr);
    kv_pool_destroy(pool);
    free(ids);
    free(text);
    kv_cli_model_close(&cm);
    return rc;
}
