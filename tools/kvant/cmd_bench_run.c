/* cmd_bench_run.c — `kvant bench run MODEL`: prefill and decode tokens/s of a model for each thread count,
 * the two figures llama-bench reports (pp: one batch of P prompt tokens, logits of the last; tg: G tokens
 * generated one at a time from an empty context), best of R runs, with the integer kernels by default. */
#include "cli.h"
#include "fwd_cli.h"
#include "core/core.h"
#include "kernels/cpu/matmul.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_usage[] =
    "usage: kvant bench run MODEL [--prompt P] [--gen G] [--threads LIST] [--reps R] [--act-dot q8|f32] [--json]\n"
    "  prefill tokens/s of P prompt tokens in one batch (default 512; logits of the last token) and decode\n"
    "  tokens/s of G tokens generated one by one from an empty context (default 128), per thread count\n"
    "  (default 1,2), best of R runs (default 3): the pp / tg figures of llama-bench.\n"
    "  --act-dot M   q8 (default): integer kernels with 8-bit activations where the format has one; f32: exact\n"
    "  --json        one JSON object {model, prompt, gen, act_dot, results: [{threads, prefill_tokens_per_s,\n"
    "                decode_tokens_per_s}]}\n";

/* Best seconds of reps runs of prefill (P tokens) and decode (G tokens) on a fresh cache. */
static kv_status time_run(kv_context *c, const int32_t *ids, long long P, long long G, long long reps,
                          kv_pool *pool, float *logits, double *pp_s, double *tg_s, kv_error *err) {
    *pp_s = *tg_s = 1e30;
    kv_status st;
    for (long long rep = 0; rep < reps; rep++) {
        double t0 = kv_now_seconds();
        if ((st = kv_forward(c, ids, P, 0, logits, KV_FORWARD_LAST_ONLY, pool, err)) != KV_OK) return st;
        *pp_s = KV_MIN(*pp_s, kv_now_seconds() - t0);
        t0 = kv_now_seconds();
        for (long long g = 0; g < G; g++)
            if ((st = kv_forward(c, ids + g, 1, g, logits, KV_FORWARD_LAST_ONLY, pool, err)) != KV_OK) return st;
        *tg_s = KV_MIN(*tg_s, kv_now_seconds() - t0);
    }
    return KV_OK;
}

int kv_bench_run(int argc, char **argv) {
    long long P = 512, G = 128, reps = 3;
    long long threads[8] = {1, 2};
    int nthr = 2, json = 0;
    kv_model_load_opts lo = {.prepack = -1, .act_q8 = 1};
    const char *v, *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_opt(argc, argv, &i, "--prompt", "-p", &v)) {
            if (kv_cli_parse_int(v, 1, 1 << 16, &P)) return kv_cli_usage("bench", "--prompt needs 1..65536");
        } else if (kv_cli_opt(argc, argv, &i, "--gen", "-n", &v)) {
            if (kv_cli_parse_int(v, 1, 1 << 16, &G)) return kv_cli_usage("bench", "--gen needs 1..65536");
        } else if (kv_cli_opt(argc, argv, &i, "--threads", "-t", &v)) {
            if ((nthr = kv_cli_parse_int_list(v, 1, 256, threads, 8)) <= 0) return kv_cli_usage("bench", "--threads needs a list like 1,2");
        } else if (kv_cli_opt(argc, argv, &i, "--reps", NULL, &v)) {
            if (kv_cli_parse_int(v, 1, 1000, &reps)) return kv_cli_usage("bench", "--reps needs 1..1000");
        } else if (kv_cli_opt(argc, argv, &i, "--act-dot", NULL, &v)) {
            if (kv_cli_parse_act_dot(v, &lo.act_q8)) return kv_cli_usage("bench", "--act-dot is q8 or f32");
        } else if (kv_cli_flag(argv, i, "--json", NULL)) {
            json = 1;
        } else if (kv_cli_flag(argv, i, "--help", "-h")) {
            fputs(k_usage, stdout);
            return 0;
        } else if (argv[i][0] == '-') {
            return kv_cli_usage("bench", "unknown option '%s'", argv[i]);
        } else if (!model) {
            model = argv[i];
        } else {
            return kv_cli_usage("bench", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model) return kv_cli_usage("bench", "run needs MODEL");
    kv_error err;
    kv_error_clear(&err);
    kv_cli_model cm;
    if (kv_cli_model_open(model, &lo, 0, &cm, &err) != KV_OK) return kv_cli_fail("bench", &err);
    const kv_hparams *hp = kv_model_get_hparams(cm.m);
    const long long n_ctx = KV_MAX(P, G);
    int rc = 0;
    kv_context *c = NULL;
    int32_t *ids = malloc((size_t)n_ctx * sizeof(int32_t));
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    if (!ids || !logits) { kv_fail(&err, KV_ENOMEM, "out of memory"); rc = kv_cli_fail("bench", &err); goto done; }
    if (kv_context_create(cm.m, (int32_t)n_ctx, &c, &err) != KV_OK) { rc = kv_cli_fail("bench", &err); goto done; }
    for (long long i = 0; i < n_ctx; i++) ids[i] = (int32_t)((i * 7919 + 1) % hp->n_vocab);
    kv_jw w;
    if (json) {
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "model"); kv_jw_str(&w, model);
        kv_jw_key(&w, "prompt"); kv_jw_int(&w, P);
        kv_jw_key(&w, "gen"); kv_jw_int(&w, G);
        kv_jw_key(&w, "act_dot"); kv_jw_str(&w, lo.act_q8 ? "q8" : "f32");
        kv_jw_key(&w, "results");
        kv_jw_arr_begin(&w);
    } else {
        printf("%s: prefill %lld tokens, decode %lld tokens, act-dot %s, best of %lld\n", model, P, G,
               lo.act_q8 ? "q8" : "f32", reps);
        printf("%8s %14s %14s\n", "threads", "prefill tok/s", "decode tok/s");
    }
    for (int t = 0; t < nthr; t++) {
        kv_pool *pool = kv_pool_create((int)threads[t]);
        double pp, tg;
        const kv_status st = time_run(c, ids, P, G, reps, pool, logits, &pp, &tg, &err);
        kv_pool_destroy(pool);
        if (st != KV_OK) { rc = kv_cli_fail("bench", &err); goto done; }
        if (json) {
            kv_jw_obj_begin(&w);
            kv_jw_key(&w, "threads"); kv_jw_int(&w, (int)threads[t]);
            kv_jw_key(&w, "prefill_tokens_per_s"); kv_jw_num(&w, (double)P / pp);
            kv_jw_key(&w, "decode_tokens_per_s"); kv_jw_num(&w, (double)G / tg);
            kv_jw_obj_end(&w);
        } else {
            printf("%8d %14.1f %14.1f\n", (int)threads[t], (double)P / pp, (double)G / tg);
        }
    }
    if (json) {
        kv_jw_arr_end(&w);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    }
done:
    kv_context_free(c);
    free(ids);
    free(logits);
    kv_cli_model_close(&cm);
    return rc;
}
