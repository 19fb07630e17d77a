/* cmd_sensitivity.c — `kvant sensitivity`: per-layer alphas of the HIGGS linearity theorem (noise injection),
 * the per-layer error table of candidate formats, and the linearity check (docs/sensitivity.md). */
#include "cli.h"
#include "fwd_cli.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char k_usage[] =
    "usage: kvant sensitivity MODEL --text FILE -o ALPHAS.json [options]\n"
    "       kvant sensitivity MODEL --errors LIST [--rht B] [--json]\n"
    "       kvant sensitivity MODEL --text FILE --alphas ALPHAS.json --check N --formats LIST [--rht B] [--json]\n"
    "       kvant sensitivity MODEL --text EVAL --alphas ALPHAS.json --sweep B1,B2,.. --formats LIST\n"
    "                         [--modes uniform,linearity,waterfill] [--rht B] [--json]\n"
    "\n"
    "Estimates alpha_l of every linear layer for the linearity theorem (HIGGS, arXiv 2411.17525):\n"
    "PPL(W + E) - PPL(W) ~= sum_l alpha_l * t_l with t_l = ||E_l||^2 / ||W_l||^2. Gaussian noise of known\n"
    "relative MSE t is injected into one layer at a time; the PPL (or KLD) change is fitted by least squares\n"
    "through the origin over the noise levels (R^2 reported per layer). Threads work on different layers.\n"
    "  --text FILE          calibration text (never the evaluation text); tokens = [BOS] + encode(text)\n"
    "  --tokens N           tokens used per evaluation (default 4096: 8 windows of 512)\n"
    "  --ctx N              window length (default 512)\n"
    "  --noise-levels LIST  comma-separated relative MSEs (default 0.01,0.02,0.04,0.08)\n"
    "  --metric kld|ppl     fitted quantity (default kld: mean KL-divergence to the unquantized model is far\n"
    "                       less noisy than a PPL difference on a few thousand tokens)\n"
    "  --include-head       also the output head\n"
    "  -o FILE              alphas file (JSON); an existing file for the same model and levels is resumed\n"
    "  --fresh              ignore an existing -o file\n"
    "  --errors LIST        print t_l for every layer and candidate format (round-to-nearest; no forward pass)\n"
    "  --check N            linearity check: N random per-layer format maps from --formats, predicted vs\n"
    "                       measured PPL (needs --alphas and --text); reports correlation and relative error\n"
    "  --formats LIST       comma-separated candidate formats for --check and --sweep\n"
    "  --sweep LIST         for each bits/weight budget and each --modes allocation, quantize the linears in\n"
    "                       memory (round-to-nearest, as kvant quantize --bits does) and evaluate PPL and KLD\n"
    "                       against the unquantized model on --text (first --tokens tokens)\n"
    "  --modes LIST         allocations for --sweep (default uniform,linearity,waterfill)\n"
    "  --rht B              rotate weights by the online randomized Hadamard of block B first (as --transform rht)\n"
    "  --seed S             noise and rotation seed (default 0)\n"
    "  -t, --threads N      threads (default: all cores)\n"
    "  --json               JSON report\n"
    "  --quiet              no progress line\n";

typedef struct sens_args {
    const char *model, *text, *out, *alphas, *errors, *formats, *sweep, *modes;
    long long tokens, ctx, check, rht, seed, threads;
    double levels[KV_SENS_MAX_LEVELS];
    int n_levels;
    kv_sens_metric metric;
    int include_head, fresh, json, quiet;
} sens_args;

static int parse_args(int argc, char **argv, sens_args *a) {
    memset(a, 0, sizeof *a);
    a->tokens = 4096;
    a->ctx = 512;
    a->threads = 0;
    a->metric = KV_SENS_KLD;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (kv_cli_opt(argc, argv, &i, "--text", NULL, &v)) {
            if (!v) return kv_cli_usage("sensitivity", "%s needs a value", argv[i]);
            a->text = v;
        }
        else if (kv_cli_opt(argc, argv, &i, "--output", "-o", &v)) {
            if (!v) return kv_cli_usage("sensitivity", "%s needs a value", argv[i]);
            a->out = v;
        }
        else if (kv_cli_opt(argc, argv, &i, "--alphas", NULL, &v)) {
            if (!v) return kv_cli_usage("sensitivity", "%s needs a value", argv[i]);
            a->alphas = v;
        }
        else if (kv_cli_opt(argc, argv, &i, "--errors", NULL, &v)) {
            if (!v) return kv_cli_usage("sensitivity", "%s needs a value", argv[i]);
            a->errors = v;
        }
        else if (kv_cli_opt(argc, argv, &i, "--sweep", NULL, &v)) {
            if (!v) return kv_cli_usage("sensitivity", "%s needs a value", argv[i]);
            a->sweep = v;
        }
        else if (kv_cli_opt(argc, argv, &i, "--modes", NULL, &v)) {
            if (!v) return kv_cli_usage("sensitivity", "%s needs a value", argv[i]);
            a->modes = v;
        }
        else if (kv_cli_opt(argc, argv, &i, "--formats", NULL, &v)) {
            if (!v) return kv_cli_usage("sensitivity", "%s needs a value", argv[i]);
            a->formats = v;
        }
        else if (kv_cli_opt(argc, argv, &i, "--tokens", NULL, &v)) {
            if (!v || kv_cli_parse_int(v, 2, 100000000, &a->tokens)) return kv_cli_usage("sensitivity", "bad --tokens");
        } else if (kv_cli_opt(argc, argv, &i, "--ctx", NULL, &v)) {
            if (!v || kv_cli_parse_int(v, 2, 1 << 20, &a->ctx)) return kv_cli_usage("sensitivity", "bad --ctx");
        } else if (kv_cli_opt(argc, argv, &i, "--check", NULL, &v)) {
            if (!v || kv_cli_parse_int(v, 2, 100000, &a->check)) return kv_cli_usage("sensitivity", "bad --check (>= 2)");
        } else if (kv_cli_opt(argc, argv, &i, "--rht", NULL, &v)) {
            if (!v || kv_cli_parse_int(v, 1, 1 << 16, &a->rht)) return kv_cli_usage("sensitivity", "bad --rht");
        } else if (kv_cli_opt(argc, argv, &i, "--seed", NULL, &v)) {
            if (!v || kv_cli_parse_int(v, 0, (long long)(~0ULL >> 1), &a->seed)) return kv_cli_usage("sensitivity", "bad --seed");
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if (!v || kv_cli_parse_int(v, 1, 1024, &a->threads)) return kv_cli_usage("sensitivity", "bad --threads");
        } else if (kv_cli_opt(argc, argv, &i, "--metric", NULL, &v)) {
            if (v && !strcmp(v, "ppl")) a->metric = KV_SENS_PPL;
            else if (v && !strcmp(v, "kld")) a->metric = KV_SENS_KLD;
            else return kv_cli_usage("sensitivity", "--metric must be ppl or kld");
        } else if (kv_cli_opt(argc, argv, &i, "--noise-levels", NULL, &v)) {
            if (!v) return kv_cli_usage("sensitivity", "--noise-levels needs a list");
            char **items;
            int n = kv_cli_split_list(v, &items);
            int bad = n < 1 || n > KV_SENS_MAX_LEVELS;
            for (int k = 0; k < n && !bad; k++)
                bad = kv_cli_parse_double(items[k], &a->levels[k]) || !(a->levels[k] > 0 && a->levels[k] < 10);
            kv_cli_free_list(items, n);
            if (bad) return kv_cli_usage("sensitivity", "--noise-levels: 1 to %d relative MSEs in (0, 10)", KV_SENS_MAX_LEVELS);
            a->n_levels = n;
        } else if (kv_cli_flag(argv, i, "--include-head", NULL)) a->include_head = 1;
        else if (kv_cli_flag(argv, i, "--fresh", NULL)) a->fresh = 1;
        else if (kv_cli_flag(argv, i, "--json", NULL)) a->json = 1;
        else if (kv_cli_flag(argv, i, "--quiet", "-q")) a->quiet = 1;
        else if (argv[i][0] == '-') return kv_cli_usage("sensitivity", "unknown option '%s'", argv[i]);
        else if (!a->model) a->model = argv[i];
        else return kv_cli_usage("sensitivity", "unexpected argument '%s'", argv[i]);
    }
    if (!a->model) return kv_cli_usage("sensitivity", "no MODEL given");
    if (!a->errors && !a->check && !a->out && !a->sweep)
        return kv_cli_usage("sensitivity", "give -o FILE, --errors LIST, --check N or --sweep LIST");
    if (a->sweep && (!a->text || !a->formats)) return kv_cli_usage("sensitivity", "--sweep needs --text and --formats");
    if ((a->out || a->check || a->sweep) && !a->text) return kv_cli_usage("sensitivity", "--text FILE is required");
    if (a->check && (!a->alphas || !a->formats)) return kv_cli_usage("sensitivity", "--check needs --alphas and --formats");
    return 0;
}

static kv_status tokenize_text(const kv_cli_model *cm, const char *path, long long max_tokens, int32_t **ids,
                               int64_t *n, kv_error *err) {
    char *text = NULL;
    size_t len = 0;
    kv_status st = kv_cli_read_text(path, &text, &len, err);
    if (st) return st;
    size_t nn = 0;
    st = kv_tokenize(cm->tok, text, len, 1, ids, &nn, err);
    free(text);
    if (st) return st;
    *n = (int64_t)nn < max_tokens ? (int64_t)nn : max_tokens;
    return KV_OK;
}

static void print_layer_table(const kv_sens_result *r) {
    printf("%-28s %10s %12s %8s   %s\n", "layer", "params", "alpha", "R^2", r->metric == KV_SENS_KLD ? "mean KLD at each t" : "dPPL at each t");
    for (int i = 0; i < r->n_layers; i++) {
        const kv_sens_layer *L = &r->layers[i];
        printf("%-28s %10lld %12.4g %8.4f  ", L->name, (long long)L->params, L->alpha, L->r2);
        for (int k = 0; k < L->n_levels; k++)
            printf(" %.4g@%.4g", r->metric == KV_SENS_KLD ? L->kld[k] : L->d_ppl[k], L->t[k]);
        printf("\n");
    }
}

static void print_json_result(const kv_sens_result *r) {
    kv_jw w;
    kv_jw_init(&w, stdout, 1);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "metric"); kv_jw_str(&w, r->metric == KV_SENS_KLD ? "kld" : "ppl");
    kv_jw_key(&w, "base_ppl"); kv_jw_num(&w, r->base_ppl);
    kv_jw_key(&w, "tokens"); kv_jw_int(&w, r->tokens);
    kv_jw_key(&w, "layers");
    kv_jw_arr_begin(&w);
    for (int i = 0; i < r->n_layers; i++) {
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "name"); kv_jw_str(&w, r->layers[i].name);
        kv_jw_key(&w, "params"); kv_jw_int(&w, r->layers[i].params);
        kv_jw_key(&w, "alpha"); kv_jw_num(&w, r->layers[i].alpha);
        kv_jw_key(&w, "r2"); kv_jw_num(&w, r->layers[i].r2);
        kv_jw_obj_end(&w);
    }
    kv_jw_arr_end(&w);
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
}

typedef struct checkpoint_ctx { const char *path; } checkpoint_ctx;
static kv_status save_checkpoint(void *user, const kv_sens_result *res, kv_error *err) {
    return kv_sens_save(res, ((checkpoint_ctx *)user)->path, err);
}

static void warn_line(void *user, const char *msg) { (void)user; fprintf(stderr, "kvant sensitivity: warning: %s\n", msg); }

static int run_alphas(const sens_args *a, kv_cli_model *cm, kv_pool *pool) {
    kv_error err;
    kv_error_clear(&err);
    int32_t *ids = NULL;
    int64_t n = 0;
    if (tokenize_text(cm, a->text, a->tokens, &ids, &n, &err)) return kv_cli_fail("sensitivity", &err);
    if (n < a->ctx) {
        free(ids);
        kv_fail(&err, KV_EINVAL, "the text gives %lld tokens, fewer than one window of %lld", (long long)n, a->ctx);
        return kv_cli_fail("sensitivity", &err);
    }
    kv_sens_result res = {0};
    if (!a->fresh && access(a->out, F_OK) == 0) {
        if (kv_sens_load(a->out, &res, &err)) {
            free(ids);
            fprintf(stderr, "kvant sensitivity: cannot resume from %s (use --fresh to overwrite)\n", a->out);
            return kv_cli_fail("sensitivity", &err);
        }
        int done = 0;
        for (int i = 0; i < res.n_layers; i++) done += res.layers[i].done;
        if (!a->quiet) fprintf(stderr, "kvant sensitivity: resuming %s (%d of %d layers done)\n", a->out, done, res.n_layers);
    }
    kv_progress prog;
    kv_progress_begin(&prog, "sensitivity", res.n_layers ? res.n_layers : 1, a->quiet);
    checkpoint_ctx cp = {a->out};
    kv_sens_opts o = {
        .levels = a->n_levels ? a->levels : NULL, .n_levels = a->n_levels, .metric = a->metric,
        .ctx = (int32_t)a->ctx, .chunks = n / a->ctx, .seed = (uint64_t)a->seed, .include_head = a->include_head,
        .progress = &prog, .checkpoint = save_checkpoint, .user = &cp};
    double t0 = kv_now_seconds();
    kv_status st = kv_sensitivity_run(cm->mf, ids, n, &o, pool, &res, &err);
    prog.total = res.n_layers;
    kv_progress_end(&prog);
    free(ids);
    if (st) { kv_sens_free(&res); return kv_cli_fail("sensitivity", &err); }
    kv_sens_sanitize(&res, warn_line, NULL);
    if (kv_sens_save(&res, a->out, &err)) { kv_sens_free(&res); return kv_cli_fail("sensitivity", &err); }
    if (a->json) print_json_result(&res);
    else {
        printf("base PPL %.4f on %lld tokens; %d layers in %.1fs; alphas written to %s\n", res.base_ppl,
               (long long)res.tokens, res.n_layers, kv_now_seconds() - t0, a->out);
        print_layer_table(&res);
    }
    kv_sens_free(&res);
    return 0;
}

static int build_table(const sens_args *a, const char *list, kv_cli_model *cm, kv_pool *pool, int keep,
                       kv_err_table *t) {
    kv_error err;
    kv_error_clear(&err);
    char **items;
    int n = kv_cli_split_list(list, &items);
    kv_status st = kv_err_table_build(cm->m, (const char *const *)items, n, a->include_head, (int32_t)a->rht,
                                      (uint64_t)a->seed, keep, pool, t, &err);
    kv_cli_free_list(items, n);
    return st ? kv_cli_fail("sensitivity", &err) : 0;
}

static int run_errors(const sens_args *a, kv_cli_model *cm, kv_pool *pool) {
    kv_err_table t;
    int rc = build_table(a, a->errors, cm, pool, 0, &t);
    if (rc) return rc;
    if (a->json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "rht_block"); kv_jw_int(&w, t.rht_block);
        kv_jw_key(&w, "layers");
        kv_jw_arr_begin(&w);
        for (int l = 0; l < t.n_layers; l++) {
            kv_jw_obj_begin(&w);
            kv_jw_key(&w, "name"); kv_jw_str(&w, t.names[l]);
            kv_jw_key(&w, "params"); kv_jw_int(&w, t.params[l]);
            kv_jw_key(&w, "formats");
            kv_jw_obj_begin(&w);
            for (int f = 0; f < t.n_formats; f++) {
                size_t c = (size_t)l * t.n_formats + (size_t)f;
                kv_jw_key(&w, t.formats[f].name);
                kv_jw_obj_begin(&w);
                kv_jw_key(&w, "t"); if (t.t[c] < 0) kv_jw_null(&w); else kv_jw_num(&w, t.t[c]);
                kv_jw_key(&w, "bits_per_weight"); if (t.t[c] < 0) kv_jw_null(&w); else kv_jw_num(&w, t.size_bits[c] / (double)t.params[l]);
                kv_jw_obj_end(&w);
            }
            kv_jw_obj_end(&w);
            kv_jw_obj_end(&w);
        }
        kv_jw_arr_end(&w);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else {
        printf("relative error t = ||Q(W)-W||^2/||W||^2 (round-to-nearest%s)\n%-28s", t.rht_block ? ", after rht" : "", "layer");
        for (int f = 0; f < t.n_formats; f++) printf(" %14s", t.formats[f].name);
        printf("\n%-28s", "bits/weight");
        for (int f = 0; f < t.n_formats; f++) {
            double bits = 0, params = 0;
            for (int l = 0; l < t.n_layers; l++) {
                size_t c = (size_t)l * t.n_formats + (size_t)f;
                if (t.t[c] >= 0) { bits += t.size_bits[c]; params += (double)t.params[l]; }
            }
            printf(" %14.4f", params > 0 ? bits / params : NAN);
        }
        printf("\n");
        for (int l = 0; l < t.n_layers; l++) {
            printf("%-28s", t.names[l]);
            for (int f = 0; f < t.n_formats; f++) {
                double v = t.t[(size_t)l * t.n_formats + (size_t)f];
                if (v < 0) printf(" %14s", "-");
                else printf(" %14.5g", v);
            }
            printf("\n");
        }
    }
    kv_err_table_free(&t);
    return 0;
}

static int run_check(const sens_args *a, kv_cli_model *cm, kv_pool *pool) {
    kv_error err;
    kv_error_clear(&err);
    kv_sens_result alphas;
    if (kv_sens_load(a->alphas, &alphas, &err)) return kv_cli_fail("sensitivity", &err);
    kv_sens_sanitize(&alphas, warn_line, NULL);
    kv_err_table t;
    int rc = build_table(a, a->formats, cm, pool, 1, &t);
    if (rc) { kv_sens_free(&alphas); return rc; }
    int32_t *ids = NULL;
    int64_t n = 0;
    kv_lincheck c = {0};
    kv_status st = tokenize_text(cm, a->text, a->tokens, &ids, &n, &err);
    if (!st)
        st = kv_linearity_check(cm->mf, &t, &alphas, ids, n, (int32_t)a->ctx, n / a->ctx, (int)a->check,
                                (uint64_t)a->seed, pool, &c, &err);
    free(ids);
    kv_err_table_free(&t);
    if (st) { kv_sens_free(&alphas); return kv_cli_fail("sensitivity", &err); }
    const char *metric = alphas.metric == KV_SENS_KLD ? "kld" : "ppl";
    if (a->json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "metric"); kv_jw_str(&w, metric);
        kv_jw_key(&w, "base"); kv_jw_num(&w, c.base);
        kv_jw_key(&w, "correlation"); kv_jw_num(&w, c.correlation);
        kv_jw_key(&w, "mean_rel_err_change"); kv_jw_num(&w, c.mean_rel_err);
        kv_jw_key(&w, "mean_rel_err"); kv_jw_num(&w, c.mean_rel_err_total);
        kv_jw_key(&w, "configs");
        kv_jw_arr_begin(&w);
        for (int i = 0; i < c.n; i++) {
            kv_jw_obj_begin(&w);
            kv_jw_key(&w, "bits_per_weight"); kv_jw_num(&w, c.bits[i]);
            kv_jw_key(&w, "predicted"); kv_jw_num(&w, c.predicted[i]);
            kv_jw_key(&w, "measured"); kv_jw_num(&w, c.measured[i]);
            kv_jw_obj_end(&w);
        }
        kv_jw_arr_end(&w);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else {
        printf("linearity check: %d random configurations, metric %s (base %.4f)\n", c.n, metric, c.base);
        printf("%6s %10s %12s %12s\n", "config", "bits/w", "predicted", "measured");
        for (int i = 0; i < c.n; i++) printf("%6d %10.4f %12.4f %12.4f\n", i, c.bits[i], c.predicted[i], c.measured[i]);
        printf("Pearson correlation %.4f; mean relative error %.2f%% of the value, %.1f%% of the change\n",
               c.correlation, 100 * c.mean_rel_err_total, 100 * c.mean_rel_err);
    }
    kv_lincheck_free(&c);
    kv_sens_free(&alphas);
    return 0;
}

typedef struct sweep_row {
    double budget, bits, ppl, kld, top1, cost;
    const char *mode;
    int feasible;
} sweep_row;

static int run_sweep(const sens_args *a, kv_cli_model *cm, kv_pool *pool) {
    kv_error err;
    kv_error_clear(&err);
    kv_sens_result alphas = {0};
    if (a->alphas) {
        if (kv_sens_load(a->alphas, &alphas, &err)) return kv_cli_fail("sensitivity", &err);
        kv_sens_sanitize(&alphas, warn_line, NULL);
    }
    char **budgets, **modes;
    int nb = kv_cli_split_list(a->sweep, &budgets);
    int nm = kv_cli_split_list(a->modes ? a->modes : "uniform,linearity,waterfill", &modes);
    double budget_vals[64];
    for (int i = 0; i < nb; i++)
        if (i >= 64 || kv_cli_parse_double(budgets[i], &budget_vals[i]) || !(budget_vals[i] > 0 && budget_vals[i] <= 64)) {
            int rc0 = i >= 64 ? kv_cli_usage("sensitivity", "--sweep: at most 64 budgets")
                              : kv_cli_usage("sensitivity", "--sweep: '%s' is not a bits/weight budget in (0, 64]", budgets[i]);
            kv_cli_free_list(budgets, nb);
            kv_cli_free_list(modes, nm);
            kv_sens_free(&alphas);
            return rc0;
        }
    kv_alloc_mode mode_ids[8];
    for (int j = 0; j < nm; j++)
        if (j >= 8 || kv_alloc_mode_parse(modes[j], &mode_ids[j], &err)) {
            kv_cli_free_list(budgets, nb);
            kv_cli_free_list(modes, nm);
            kv_sens_free(&alphas);
            err.status = KV_EINVAL;
            return kv_cli_fail("sensitivity", &err);
        }
    kv_err_table t;
    int rc = build_table(a, a->formats, cm, pool, 1, &t);
    int32_t *ids = NULL;
    int64_t n = 0;
    kv_logprobs *base = NULL;
    kv_eval_result br;
    sweep_row *rows = calloc((size_t)(nb * nm) + 1, sizeof *rows);
    int *choice = NULL;
    kv_status st = KV_OK;
    if (!rc) {
        choice = calloc((size_t)t.n_layers, sizeof(int));
        st = tokenize_text(cm, a->text, a->tokens, &ids, &n, &err);
        kv_eval_opts eo = {.ctx = (int32_t)a->ctx, .chunks = n / a->ctx, .style = KV_PPL_HF, .bos_id = -1};
        if (!st) st = kv_eval_base_logprobs(cm->m, ids, n, &eo, pool, &base, &br, &err);
    }
    double params = 0;
    for (int l = 0; !rc && l < t.n_layers; l++) params += (double)t.params[l];
    int nrows = 0;
    for (int i = 0; !rc && !st && i < nb; i++) {
        double budget = budget_vals[i];
        for (int j = 0; j < nm && !st; j++) {
            sweep_row *r = &rows[nrows++];
            r->budget = budget;
            r->mode = modes[j];
            const kv_sens_result *al = mode_ids[j] == KV_ALLOC_UNIFORM ? NULL : &alphas;
            if (mode_ids[j] != KV_ALLOC_UNIFORM && !a->alphas) {
                kv_fail(&err, KV_EINVAL, "--modes %s needs --alphas", modes[j]);
                st = KV_EINVAL;
                break;
            }
            kv_alloc_result ar;
            kv_error e2;
            kv_error_clear(&e2);
            if (kv_alloc_plan(&t, al, budget, mode_ids[j], choice, &ar, &e2)) continue; /* infeasible: row stays empty */
            r->feasible = 1;
            r->bits = ar.total_bits / params;
            r->cost = ar.total_cost;
            kv_eval_result er;
            st = kv_err_table_apply(&t, choice, cm->m, &err);
            if (!st) st = kv_eval_kld(cm->m, base, pool, &er, &err);
            if (!st) {
                r->ppl = er.ppl;
                r->kld = er.kld.mean;
                r->top1 = er.kld.top1_agree;
            }
            if (!a->quiet && !a->json)
                fprintf(stderr, "  %.3g bits %-10s -> %.4f bits/weight, PPL %.4f, KLD %.5f\n", budget, modes[j], r->bits,
                        r->ppl, r->kld);
        }
    }
    if (!rc && st) rc = kv_cli_fail("sensitivity", &err);
    if (!rc) {
        if (a->json) {
            kv_jw w;
            kv_jw_init(&w, stdout, 1);
            kv_jw_obj_begin(&w);
            kv_jw_key(&w, "base_ppl"); kv_jw_num(&w, br.ppl);
            kv_jw_key(&w, "tokens"); kv_jw_int(&w, br.tokens);
            kv_jw_key(&w, "rht_block"); kv_jw_int(&w, t.rht_block);
            kv_jw_key(&w, "rows");
            kv_jw_arr_begin(&w);
            for (int i = 0; i < nrows; i++) {
                kv_jw_obj_begin(&w);
                kv_jw_key(&w, "budget"); kv_jw_num(&w, rows[i].budget);
                kv_jw_key(&w, "mode"); kv_jw_str(&w, rows[i].mode);
                kv_jw_key(&w, "feasible"); kv_jw_bool(&w, rows[i].feasible);
                kv_jw_key(&w, "bits_per_weight"); kv_jw_num(&w, rows[i].bits);
                kv_jw_key(&w, "ppl"); kv_jw_num(&w, rows[i].ppl);
                kv_jw_key(&w, "kld"); kv_jw_num(&w, rows[i].kld);
                kv_jw_key(&w, "top1_agree"); kv_jw_num(&w, rows[i].top1);
                kv_jw_obj_end(&w);
            }
            kv_jw_arr_end(&w);
            kv_jw_obj_end(&w);
            kv_jw_end(&w);
        } else {
            printf("base PPL %.4f on %lld tokens; linears quantized round-to-nearest%s\n", br.ppl, (long long)br.tokens,
                   t.rht_block ? " after rht" : "");
            printf("%8s %-10s %10s %10s %10s %8s\n", "budget", "mode", "bits/w", "PPL", "KLD", "top1%");
            for (int i = 0; i < nrows; i++) {
                if (!rows[i].feasible) { printf("%8.3g %-10s %10s\n", rows[i].budget, rows[i].mode, "infeasible"); continue; }
                printf("%8.3g %-10s %10.4f %10.4f %10.5f %8.2f\n", rows[i].budget, rows[i].mode, rows[i].bits, rows[i].ppl,
                       rows[i].kld, rows[i].top1);
            }
        }
    }
    free(rows);
    free(choice);
    free(ids);
    kv_logprobs_free(base);
    kv_err_table_free(&t);
    kv_cli_free_list(budgets, nb);
    kv_cli_free_list(modes, nm);
    kv_sens_free(&alphas);
    return rc;
}

int kv_cmd_sensitivity(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) { fputs(k_usage, stdout); return 0; }
    sens_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    if ((rc = kv_cli_prepare_output("sensitivity", a.out))) return rc; /* a read-only directory fails now */
    kv_error err;
    kv_error_clear(&err);
    kv_cli_model cm;
    if (kv_cli_model_open(a.model, NULL, a.text != NULL, &cm, &err)) return kv_cli_fail("sensitivity", &err);
    kv_pool *pool = kv_pool_create((int)a.threads);
    if (a.out) rc = run_alphas(&a, &cm, pool);
    if (!rc && a.errors) rc = run_errors(&a, &cm, pool);
    if (!rc && a.check) rc = run_check(&a, &cm, pool);
    if (!rc && a.sweep) rc = run_sweep(&a, &cm, pool);
    kv_pool_destroy(pool);
    kv_cli_model_close(&cm);
    return rc;
}
