/* fuzz_alphas.c — libFuzzer target for sensitivity files (alphas.json, src/algos/sensitivity.c kv_sens_load)
 * and what `quantize --allocate` does with them: sanitize, then plan a bit allocation over a synthetic error
 * table whose layers are the file's (three candidate formats) with every mode. A plan that succeeds picks a
 * valid candidate for every layer and stays within the budget. */
#include "fuzz_util.h"
#include "kvant.h"
#include <math.h>
#include <string.h>

enum { MAX_LAYERS = 48, N_FORMATS = 3 };

static void plan_all(const kv_sens_result *res, double bits) {
    static const char *const names[N_FORMATS] = {"q4_0", "q8_0", "f16"};
    static const double bpw[N_FORMATS] = {4.5, 8.5, 16.0};
    static char tnames[MAX_LAYERS][160];
    static int layer[MAX_LAYERS];
    static kv_linear_id which[MAX_LAYERS];
    static int64_t params[MAX_LAYERS];
    static kv_format fmts[N_FORMATS];
    static double t[MAX_LAYERS * N_FORMATS], size_bits[MAX_LAYERS * N_FORMATS];
    static int choice[MAX_LAYERS];
    const int L = res->n_layers;
    for (int f = 0; f < N_FORMATS; f++)
        if (kv_format_get(names[f], &fmts[f], NULL) != KV_OK) abort();
    for (int l = 0; l < L; l++) {
        memcpy(tnames[l], res->layers[l].name, 160);
        layer[l] = l;
        which[l] = KV_LINEAR_Q;
        params[l] = 4096 * (int64_t)(1 + l % 5);
        for (int f = 0; f < N_FORMATS; f++) {
            t[l * N_FORMATS + f] = (l % 3 == 2 && f == 0) ? -1.0 : 0.01 * pow(1e-3, f) * (1 + l % 7);
            size_bits[l * N_FORMATS + f] = bpw[f] * (double)params[l];
        }
    }
    kv_err_table tab = {.n_layers = L, .n_formats = N_FORMATS, .names = tnames, .layer = layer, .which = which,
                        .params = params, .formats = fmts, .t = t, .size_bits = size_bits};
    double total = 0;
    for (int l = 0; l < L; l++) total += (double)params[l];
    for (int mode = KV_ALLOC_LINEARITY; mode <= KV_ALLOC_UNIFORM; mode++) {
        kv_error err;
        kv_error_clear(&err);
        kv_alloc_result r;
        for (int l = 0; l < L; l++) choice[l] = -1;
        if (kv_alloc_plan(&tab, mode == KV_ALLOC_UNIFORM ? NULL : res, bits, (kv_alloc_mode)mode, choice, &r, &err) !=
            KV_OK) {
            FUZZ_REQUIRE_MESSAGE(err);
            continue;
        }
        double used = 0;
        for (int l = 0; l < L; l++) {
            FUZZ_ASSERT(choice[l] >= 0 && choice[l] < N_FORMATS);
            FUZZ_ASSERT(t[l * N_FORMATS + choice[l]] >= 0);
            used += size_bits[l * N_FORMATS + choice[l]];
        }
        FUZZ_ASSERT(used <= bits * total * (1 + 1e-9));
        FUZZ_ASSERT(isfinite(r.total_cost) && r.total_cost >= 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_sens_result res;
    if (kv_sens_load(fuzz_file(data, size), &res, &err) != KV_OK) {
        FUZZ_REQUIRE_MESSAGE(err);
        return 0;
    }
    FUZZ_ASSERT(res.n_layers >= 0 && (res.n_layers == 0 || res.layers));
    for (int i = 0; i < res.n_layers; i++) {
        const kv_sens_layer *L = &res.layers[i];
        FUZZ_ASSERT(L->n_levels >= 0 && L->n_levels <= KV_SENS_MAX_LEVELS);
        FUZZ_ASSERT(memchr(L->name, 0, sizeof L->name));
    }
    kv_sens_sanitize(&res, NULL, NULL);
    for (int i = 0; i < res.n_layers; i++) FUZZ_ASSERT(isfinite(res.layers[i].alpha) && res.layers[i].alpha > 0);
    if (res.n_layers > 0 && res.n_layers <= MAX_LAYERS) {
        /* a budget between the smallest and the largest candidate, and one outside */
        plan_all(&res, 4.5 + (double)(size % 12));
        plan_all(&res, 3.0);
    }
    kv_sens_free(&res);
    return 0;
}
