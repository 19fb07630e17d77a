/* cmd_imatrix.c — `kvant imatrix MODEL --calib TEXT -o FILE`: the importance matrix (mean x² per input
 * column of every linear) over windows of calibration text, written in llama.cpp's legacy .dat format, or its
 * GGUF imatrix format when the path ends in .gguf. docs/imatrix.md. */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: kvant imatrix MODEL --calib TEXT -o FILE.dat [options]\n"
            "  --calib TEXT       calibration text (tokenized with the model's tokenizer, BOS first)\n"
            "  -o, --output FILE  llama.cpp imatrix file: legacy .dat, or GGUF when FILE ends in .gguf\n"
            "  --ctx N            window length (default 512)\n"
            "  --chunks K         windows to run (default: all of the text)\n"
            "  --show FILE        print the entries of an imatrix file (.dat or llama.cpp GGUF imatrix)\n"
            "  -t, --threads N    threads (default: all cores)\n"
            "  --quiet            no progress line\n"
            "  --json             report as JSON\n");
}

static int show(const char *path, int json) {
    kv_error err;
    kv_error_clear(&err);
    kv_imatrix *im = NULL;
    if (kv_imatrix_load(path, &im, &err) != KV_OK) return kv_cli_fail("imatrix", &err);
    kv_jw w;
    if (json) {
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "file"), kv_jw_str(&w, path);
        kv_jw_key(&w, "chunks"), kv_jw_int(&w, kv_imatrix_chunks(im));
        kv_jw_key(&w, "entries");
        kv_jw_arr_begin(&w);
    } else
        printf("%s: %lld entries, %d chunks\n", path, (long long)kv_imatrix_n_entries(im), kv_imatrix_chunks(im));
    for (int64_t i = 0; i < kv_imatrix_n_entries(im); i++) {
        const char *name = kv_imatrix_entry_name(im, i);
        int64_t n = 0;
        const float *v = kv_imatrix_find(im, name, &n);
        double sum = 0, mx = 0;
        for (int64_t j = 0; j < n; j++) {
            sum += v[j];
            if (v[j] > mx) mx = v[j];
        }
        if (json) {
            kv_jw_obj_begin(&w);
            kv_jw_key(&w, "name"), kv_jw_str(&w, name);
            kv_jw_key(&w, "columns"), kv_jw_int(&w, n);
            kv_jw_key(&w, "mean"), kv_jw_num(&w, n ? sum / (double)n : 0);
            kv_jw_key(&w, "max"), kv_jw_num(&w, mx);
            kv_jw_obj_end(&w);
        } else
            printf("  %-28s %6lld columns  mean x² %.5g  max %.5g\n", name, (long long)n, n ? sum / (double)n : 0, mx);
    }
    if (json) {
        kv_jw_arr_end(&w);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    }
    kv_imatrix_free(im);
    return 0;
}

int kv_cmd_imatrix(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *model = NULL, *calib = NULL, *out = NULL, *show_path = NULL;
    long long ctx = 512, chunks = 0, threads = 0;
    int quiet = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (kv_cli_flag(argv, i, "--quiet", "-q")) quiet = 1;
        else if (kv_cli_flag(argv, i, "--json", NULL)) json = 1;
        else if (kv_cli_opt(argc, argv, &i, "--calib", NULL, &v)) {
            if (!(calib = v)) return kv_cli_usage("imatrix", "--calib needs a file");
        } else if (kv_cli_opt(argc, argv, &i, "--output", "-o", &v)) {
            if (!(out = v)) return kv_cli_usage("imatrix", "-o needs a file");
        } else if (kv_cli_opt(argc, argv, &i, "--show", NULL, &v)) {
            if (!(show_path = v)) return kv_cli_usage("imatrix", "--show needs a file");
        } else if (kv_cli_opt(argc, argv, &i, "--ctx", NULL, &v)) {
            if (!v || kv_cli_parse_int(v, 8, 1 << 20, &ctx)) return kv_cli_usage("imatrix", "--ctx needs an integer >= 8");
        } else if (kv_cli_opt(argc, argv, &i, "--chunks", NULL, &v)) {
            if (!v || kv_cli_parse_int(v, 0, 1LL << 32, &chunks)) return kv_cli_usage("imatrix", "--chunks needs an integer >= 0");
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if (!v || kv_cli_parse_int(v, 1, 1024, &threads)) return kv_cli_usage("imatrix", "--threads needs an integer >= 1");
        } else if (argv[i][0] == '-' && argv[i][1]) return kv_cli_usage("imatrix", "unknown option '%s'", argv[i]);
        else if (!model) model = argv[i];
        else return kv_cli_usage("imatrix", "unexpected argument '%s'", argv[i]);
    }
    if (show_path) return show(show_path, json);
    if (!model) return kv_cli_usage("imatrix", "missing MODEL");
    if (!calib) return kv_cli_usage("imatrix", "missing --calib TEXT");
    if (!out) return kv_cli_usage("imatrix", "missing -o FILE");
    int prc = kv_cli_prepare_output("imatrix", out); /* before the work: a read-only directory fails now */
    if (prc) return prc;

    kv_error err;
    kv_error_clear(&err);
    kv_model_file *mf = NULL;
    kv_model *m = NULL;
    kv_tokenizer *tok = NULL;
    kv_imatrix *im = NULL;
    kv_mapped text;
    int mapped = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    kv_pool *pool = kv_pool_create(threads > 0 ? (int)threads : 0);
    double t0 = kv_now_seconds();
    kv_status st = kv_model_open(model, &mf, &err);
    if (st == KV_OK) st = kv_tokenizer_load_for_model(mf, &tok, &err);
    if (st == KV_OK && (st = kv_map_file(calib, &text, &err)) == KV_OK) mapped = 1;
    if (st == KV_OK) st = kv_tokenize(tok, (const char *)text.data, text.size, kv_tokenizer_bos(tok) >= 0, &ids, &n_ids, &err);
    if (st == KV_OK) st = kv_model_load(mf, NULL, &m, &err);
    if (st == KV_OK) st = kv_model_apply_transforms(m, mf, &err);
    if (st == KV_OK) st = kv_imatrix_create(&im, &err);
    int64_t n_use = (int64_t)n_ids;
    if (chunks > 0 && chunks * ctx < n_use) n_use = chunks * ctx;
    if (st == KV_OK) {
        const char *base = strrchr(calib, '/');
        kv_imatrix_set_dataset(im, base ? base + 1 : calib);
        kv_progress prog;
        kv_progress_begin(&prog, "imatrix", n_use / ctx, quiet);
        st = kv_imatrix_collect(m, ids, n_use, (int32_t)ctx, pool, im, &prog, &err);
        kv_progress_end(&prog);
    }
    if (st == KV_OK) st = kv_imatrix_save(im, out, &err);
    int rc = 0;
    if (st != KV_OK) rc = kv_cli_fail("imatrix", &err);
    else if (json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "model"), kv_jw_str(&w, model);
        kv_jw_key(&w, "output"), kv_jw_str(&w, out);
        kv_jw_key(&w, "entries"), kv_jw_int(&w, kv_imatrix_n_entries(im));
        kv_jw_key(&w, "chunks"), kv_jw_int(&w, kv_imatrix_chunks(im));
        kv_jw_key(&w, "ctx"), kv_jw_int(&w, ctx);
        kv_jw_key(&w, "seconds"), kv_jw_num(&w, kv_now_seconds() - t0);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else
        printf("imatrix %s: %lld entries from %d windows of %lld tokens, %.1f s\n", out,
               (long long)kv_imatrix_n_entries(im), kv_imatrix_chunks(im), ctx, kv_now_seconds() - t0);
    kv_imatrix_free(im);
    free(ids);
    if (mapped) kv_unmap_file(&text);
    kv_tokenizer_free(tok);
    kv_model_free(m);
    kv_model_close(mf);
    kv_pool_destroy(pool);
    return rc;
}
