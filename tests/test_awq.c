/* test_awq.c — AWQ (src/transforms/awq.c): the scale search minimises the block's output error (checked by
 * recomputing the attention / MLP output of layer 0 with the folded weights), a model without GQA also gets
 * v→o searched (its loss recomputed from the tokens) and folded exactly, the clipping search per row and input
 * group never increases a group's sampled output error, and the whole pipeline is thread-count independent.
 * (Folding keeping the unquantized logits: tests/test_transforms.c awq_keeps_logits_proxy27m.) */
#include "test.h"
#include "../src/algos/quantize.h"
#include "../src/model/model.h"

/* The working copy of a model file as quantize.c builds it: every named tensor dequantized to fp32. */
static kv_status load_wmodel(const kv_model_file *mf, kv_wmodel *wm, kv_error *err) {
    memset(wm, 0, sizeof *wm);
    wm->hp = *kv_model_hparams(mf);
    wm->t = calloc((size_t)kv_model_n_tensors(mf), sizeof *wm->t);
    if (!wm->t) return kv_fail(err, KV_ENOMEM, "out of memory");
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *src = kv_model_tensor(mf, i);
        if (!src->name[0]) continue;
        kv_wtensor *t = &wm->t[wm->n++];
        kv_strlcpy(t->name, src->name, sizeof t->name);
        t->n_dims = src->n_dims;
        memcpy(t->shape, src->shape, sizeof t->shape);
        t->src = src;
        kv_format f;
        kv_status st = kv_format_from_type(src->type, &f, err);
        if (st != KV_OK) return st;
        const int64_t n = kv_tensor_nelements(src), cols = src->shape[src->n_dims - 1];
        const size_t rb = kv_format_row_bytes(&f, cols);
        if (!(t->w = malloc((size_t)n * sizeof(float)))) return kv_fail(err, KV_ENOMEM, "out of memory");
        for (int64_t r = 0; r < n / cols; r++) f.dequantize(&f, (const uint8_t *)src->data + (size_t)r * rb, t->w + r * cols, cols);
    }
    return KV_OK;
}

static void free_wmodel(kv_wmodel *wm) {
    for (int64_t i = 0; i < wm->n; i++) free(wm->t[i].w);
    free(wm->t);
}

/* int3_g128_asym for q/k/v and gate/up of every block; o and down stay in full precision (so v's and up's rows
 * are not rescaled and layer 0's two searches can be recomputed from the final weights alone). */
static const kv_format *fmt_qkv_gateup(void *user, const char *name) {
    static const char *const q[] = {".attn_q.weight", ".attn_k.weight", ".attn_v.weight", ".ffn_gate.weight", ".ffn_up.weight"};
    if (strncmp(name, "blk.", 4)) return NULL;
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        if (strstr(name, q[i])) return user;
    return NULL;
}

/* The given format for every linear of the blocks. */
static const kv_format *fmt_all_blk(void *user, const char *name) { return strncmp(name, "blk.", 4) ? NULL : user; }

static kv_status calib_ids(const kv_model_file *mf, int64_t n, int32_t **ids, kv_error *err) {
    char path[512];
    kv_test_shared(path, sizeof path, "data/calib.txt");
    size_t len = 0;
    char *text = kv_test_read_file(path, &len);
    if (!text) return kv_fail(err, KV_EIO, "cannot read %s", path);
    kv_tokenizer *tok = NULL;
    int32_t *all = NULL;
    size_t n_all = 0;
    kv_status st = kv_tokenizer_load_for_model(mf, &tok, err);
    if (st == KV_OK) st = kv_tokenize(tok, text, len > 200000 ? 200000 : len, 1, &all, &n_all, err);
    kv_tokenizer_free(tok);
    free(text);
    if (st == KV_OK && (int64_t)n_all < n) st = kv_fail(err, KV_EINVAL, "calibration text too short");
    if (st == KV_OK) *ids = all;
    else free(all);
    return st;
}

/* the seven linears of block 0, in kv_linear_id order */
static const char *const k_blk0_linears[7] = {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight",
                                              "blk.0.attn_output.weight", "blk.0.ffn_gate.weight",
                                              "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"};

static float *tensor_copy(kv_wmodel *wm, const char *name) {
    kv_wtensor *t = kv_wmodel_find(wm, name);
    if (!t) return NULL;
    int64_t n = t->shape[0] * (t->n_dims == 2 ? t->shape[1] : 1);
    float *c = malloc((size_t)n * sizeof(float));
    if (c) memcpy(c, t->w, (size_t)n * sizeof(float));
    return c;
}

static kv_weight f32_weight(const kv_model *m, kv_linear_id id, const float *data) {
    kv_weight w = *kv_model_weight(m, 0, id);
    kv_format_from_type(KV_TYPE_F32, &w.fmt, NULL);
    w.data = data;
    w.owned = NULL;
    w.packed = NULL;
    return w;
}

static float *fake_quant(const kv_format *f, const float *w, int64_t rows, int64_t cols) {
    size_t rb = kv_format_row_bytes(f, cols);
    uint8_t *p = malloc(rb * (size_t)rows);
    float *out = malloc((size_t)(rows * cols) * sizeof(float));
    if (p && out && f->quantize(f, w, p, rows, cols, NULL, NULL) == KV_OK)
        for (int64_t r = 0; r < rows; r++) f->dequantize(f, p + (size_t)r * rb, out + r * cols, cols);
    free(p);
    return out;
}

static double mse(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return s / (double)n;
}

/* Layer 0's attention (q/k/v quantized, o exact) and MLP (gate/up quantized, down exact) output MSE against
 * the unquantized block, over windows of ctx tokens: with the folded weights and norms (after) or the
 * originals (before). */
static void layer0_losses(kv_test_ctx *T, const kv_model *m, kv_wmodel *wm, float *const orig[7], const float *orig_an,
                          const float *orig_fn, const kv_format *f, const int32_t *ids, int64_t nwin, int32_t ctx,
                          double loss[2][2]) {
    const kv_hparams *hp = kv_model_get_hparams(m);
    const int64_t d = hp->n_embd, n = ctx * d;
    kv_context *c = NULL;
    kv_error err;
    REQUIRE_OK(kv_context_create(m, ctx, &c, &err), &err);
    float *qw[2][7] = {{0}};
    kv_weight ref[7], wq[2][7];
    for (int i = 0; i < 7; i++) {
        kv_wtensor *t = kv_wmodel_find(wm, k_blk0_linears[i]);
        ref[i] = f32_weight(m, (kv_linear_id)i, orig[i]);
        for (int k = 0; k < 2; k++) {
            const float *src = k ? t->w : orig[i];
            int quant = i != 3 && i != 6;
            qw[k][i] = quant ? fake_quant(f, src, t->shape[0], t->shape[1]) : NULL;
            wq[k][i] = f32_weight(m, (kv_linear_id)i, quant ? qw[k][i] : src);
        }
    }
    const float *an[2] = {orig_an, kv_wmodel_find(wm, "blk.0.attn_norm.weight")->w};
    const float *fn[2] = {orig_fn, kv_wmodel_find(wm, "blk.0.ffn_norm.weight")->w};
    float *h = malloc((size_t)n * sizeof(float)), *xn = malloc((size_t)n * sizeof(float));
    float *ya = malloc((size_t)n * sizeof(float)), *ym = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
    REQUIRE(h && xn && ya && ym && y);
    memset(loss, 0, 4 * sizeof(double));
    for (int64_t w = 0; w < nwin; w++) {
        REQUIRE_OK(kv_forward_embed(m, ids + w * ctx, ctx, h, &err), &err);
        const kv_weight *ra[4] = {&ref[0], &ref[1], &ref[2], &ref[3]}, *rm[3] = {&ref[4], &ref[5], &ref[6]};
        kv_rmsnorm_rows(xn, h, orig_an, ctx, d, hp->norm_eps);
        REQUIRE_OK(kv_forward_attention(c, 0, ra, xn, ctx, 0, ya, NULL, &err), &err);
        for (int64_t i = 0; i < n; i++) h[i] += ya[i];
        kv_rmsnorm_rows(xn, h, orig_fn, ctx, d, hp->norm_eps);
        REQUIRE_OK(kv_forward_mlp(c, 0, rm, xn, ctx, ym, NULL, &err), &err);
        for (int k = 0; k < 2; k++) {
            const kv_weight *qa[4] = {&wq[k][0], &wq[k][1], &wq[k][2], &wq[k][3]};
            const kv_weight *qm[3] = {&wq[k][4], &wq[k][5], &wq[k][6]};
            REQUIRE_OK(kv_forward_embed(m, ids + w * ctx, ctx, y, &err), &err);
            kv_rmsnorm_rows(xn, y, an[k], ctx, d, hp->norm_eps);
            REQUIRE_OK(kv_forward_attention(c, 0, qa, xn, ctx, 0, xn, NULL, &err), &err);
            loss[k][0] += mse(xn, ya, n) / (double)nwin;
            kv_rmsnorm_rows(xn, h, fn[k], ctx, d, hp->norm_eps); /* the MLP's input is the unquantized one */
            REQUIRE_OK(kv_forward_mlp(c, 0, qm, xn, ctx, xn, NULL, &err), &err);
            loss[k][1] += mse(xn, ym, n) / (double)nwin;
        }
    }
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 7; i++) free(qw[k][i]);
    free(h);
    free(xn);
    free(ya);
    free(ym);
    free(y);
    kv_context_free(c);
}

KV_TEST(awq_search_minimises_block_output_error) {
    char model[512];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("%.200s not found", model);
    const int32_t ctx = 64;
    const int64_t nwin = getenv("KVANT_SANITIZED") ? 2 : 4;
    kv_error err;
    kv_error_clear(&err);
    kv_model_file *mf = NULL;
    kv_model *m = NULL;
    kv_wmodel wm;
    int32_t *ids = NULL;
    REQUIRE_OK(kv_model_open(model, &mf, &err), &err);
    REQUIRE_OK(kv_model_load(mf, NULL, &m, &err), &err);
    REQUIRE_OK(load_wmodel(mf, &wm, &err), &err);
    REQUIRE_OK(calib_ids(mf, nwin * ctx, &ids, &err), &err);
    kv_format f;
    REQUIRE_OK(kv_format_get("int3_g128_asym", &f, &err), &err);
    float *orig[7];
    for (int i = 0; i < 7; i++) REQUIRE((orig[i] = tensor_copy(&wm, k_blk0_linears[i])) != NULL);
    float *an = tensor_copy(&wm, "blk.0.attn_norm.weight"), *fn = tensor_copy(&wm, "blk.0.ffn_norm.weight");
    REQUIRE(an && fn);

    const int L = wm.hp.n_layer;
    kv_awq_result *res = calloc((size_t)L * 4, sizeof *res);
    char summary[320];
    REQUIRE(res);
    REQUIRE_OK(kv_transform_awq(&wm, m, ids, nwin * ctx, ctx, fmt_qkv_gateup, &f, 0, NULL, res, summary, sizeof summary, &err), &err);
    int moved = 0;
    for (int l = 0; l < L; l++) {
        const kv_awq_result *qkv = &res[l * 4 + 0], *o = &res[l * 4 + 1], *gu = &res[l * 4 + 2], *dn = &res[l * 4 + 3];
        CHECK(qkv->searched && gu->searched);
        CHECK(!o->searched && !dn->searched); /* o and down are not quantized (and o has GQA) */
        for (int g = 0; g < 4; g += 2) {
            const kv_awq_result *x = &res[l * 4 + g];
            CHECK(isfinite(x->loss) && x->loss_alpha0 > 0);
            CHECK_MSG(x->loss <= x->loss_alpha0, "layer %d group %d: loss %g > loss at alpha 0 %g", l, g, x->loss, x->loss_alpha0);
            CHECK(x->alpha >= 0 && x->alpha < 1);
            moved |= x->alpha > 0;
        }
    }
    CHECK_MSG(moved, "every group kept alpha = 0");
    CHECK(strstr(summary, "qkv alpha") != NULL);

    /* recompute layer 0's two block errors from the folded weights: they are the reported ones, and no worse
     * than plain RTN of the original weights */
    double loss[2][2];
    layer0_losses(T, m, &wm, orig, an, fn, &f, ids, nwin, ctx, loss);
    for (int g = 0; g < 2; g++) {
        const kv_awq_result *x = &res[g * 2];
        CHECK_MSG(fabs(loss[1][g] - x->loss) <= 1e-3 * x->loss, "layer 0 %s: recomputed %g, reported %g",
                  g ? "mlp" : "attention", loss[1][g], x->loss);
        CHECK_MSG(fabs(loss[0][g] - x->loss_alpha0) <= 1e-3 * x->loss_alpha0, "layer 0 %s at alpha 0: %g vs %g",
                  g ? "mlp" : "attention", loss[0][g], x->loss_alpha0);
        CHECK(loss[1][g] <= loss[0][g] * (1 + 1e-6));
    }
    for (int i = 0; i < 7; i++) free(orig[i]);
    free(an);
    free(fn);
    free(res);
    free(ids);
    free_wmodel(&wm);
    kv_model_free(m);
    kv_model_close(mf);
}

KV_TEST(awq_clip_group_sizes) {
    static const struct { const char *fmt; int64_t cols, group; } c[] = {
        {"int3_g128_asym", 512, 128}, {"int4_g32_sym", 512, 32}, {"int8_g0_sym", 512, 512}, {"int4_gt_sym", 512, 512},
        {"q4_0", 512, 32},           {"q4_k", 512, 256},         {"mxfp4_ocp", 512, 32},   {"fp8_e4m3", 512, 512},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        kv_format f;
        kv_error err;
        REQUIRE_OK(kv_format_get(c[i].fmt, &f, &err), &err);
        CHECK_MSG(kv_awq_clip_group(&f, c[i].cols) == c[i].group, "%s: group %lld, expected %lld", c[i].fmt,
                  (long long)kv_awq_clip_group(&f, c[i].cols), (long long)c[i].group);
    }
}

/* Σ_t (x_t,g · (Q(w) − w_orig)_r,g)² per (row, group). */
static void group_errors(const kv_format *f, const float *w, const float *w0, const float *x, int64_t rows,
                         int64_t cols, int64_t nsamp, int64_t gs, double *e) {
    float *q = fake_quant(f, w, rows, cols);
    const int64_t ng = cols / gs;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < ng; g++) {
            double s = 0;
            for (int64_t t = 0; t < nsamp; t++) {
                double dot = 0;
                for (int64_t c = g * gs; c < (g + 1) * gs; c++) dot += (double)x[t * cols + c] * (q[r * cols + c] - w0[r * cols + c]);
                s += dot * dot;
            }
            e[r * ng + g] = s;
        }
    free(q);
}

KV_TEST(awq_clip_never_worse_per_row_and_group) {
    const int64_t rows = 16, cols = 256, nsamp = 48, gs = 128, ng = cols / gs;
    kv_rng rng;
    kv_rng_seed(&rng, 11);
    float *w = malloc(sizeof(float) * rows * cols), *w0 = malloc(sizeof(float) * rows * cols);
    float *x = malloc(sizeof(float) * nsamp * cols), *ratios = malloc(sizeof(float) * rows * ng);
    double *e0 = malloc(sizeof(double) * rows * ng), *e1 = malloc(sizeof(double) * rows * ng);
    REQUIRE(w && w0 && x && ratios && e0 && e1);
    for (int64_t i = 0; i < rows * cols; i++) {
        double g = kv_rng_normal(&rng);
        w[i] = (float)(i % 53 == 0 ? 8 * g : g); /* a few outliers: clipping pays off for some groups */
    }
    for (int64_t i = 0; i < nsamp * cols; i++) x[i] = (float)kv_rng_normal(&rng);
    memcpy(w0, w, sizeof(float) * rows * cols);
    kv_format f;
    kv_error err;
    REQUIRE_OK(kv_format_get("int3_g128_asym", &f, &err), &err);
    group_errors(&f, w0, w0, x, rows, cols, nsamp, gs, e0);
    REQUIRE_OK(kv_awq_clip(w, rows, cols, &f, x, nsamp, NULL, ratios, &err), &err);
    group_errors(&f, w, w0, x, rows, cols, nsamp, gs, e1);
    int clipped = 0, mixed = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t g = 0; g < ng; g++) {
            const float rt = ratios[r * ng + g];
            int on_grid = 0;
            for (int i = 0; i < 10; i++) on_grid |= rt == 1.0f - (float)i / 20.0f;
            CHECK(on_grid);
            CHECK_MSG(e1[r * ng + g] <= e0[r * ng + g] * (1 + 1e-9), "row %lld group %lld: %g > %g", (long long)r,
                      (long long)g, e1[r * ng + g], e0[r * ng + g]);
            clipped |= rt < 1.0f;
            /* the clipped weights are clamp(w, ±r·max|w_g|) */
            float amax = 0, wmax = 0;
            for (int64_t c = g * gs; c < (g + 1) * gs; c++) {
                amax = fmaxf(amax, fabsf(w0[r * cols + c]));
                wmax = fmaxf(wmax, fabsf(w[r * cols + c]));
            }
            CHECK_NEAR(wmax, amax * rt, 1e-6 * amax);
        }
        mixed |= ratios[r * ng] != ratios[r * ng + 1];
    }
    CHECK_MSG(clipped, "no group was clipped");
    CHECK_MSG(mixed, "every row chose one ratio for both groups");
    free(w);
    free(w0);
    free(x);
    free(ratios);
    free(e0);
    free(e1);
}

KV_TEST(awq_thread_count_independent) {
    char model[512], calib[512], out[2][600];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    kv_test_shared(calib, sizeof calib, "data/calib.txt");
    if (!kv_test_exists(model)) SKIP("%.200s not found", model);
    const char *light[] = {"^blk\\.[1-9]\\.=bf16", "token_embd|^output\\.=q8_0"};
    for (int k = 0; k < 2; k++) {
        kv_quantize_opts o;
        memset(&o, 0, sizeof o);
        o.format = "int3_g128_asym";
        o.transforms = "awq";
        o.calib_path = calib;
        o.calib_ctx = 64;
        o.calib_tokens = 192;
        o.no_imatrix = 1;
        o.overrides = light;
        o.n_overrides = 2;
        o.pool = kv_pool_create(k ? 3 : 1);
        snprintf(out[k], sizeof out[k], "%s/awq%d.gguf", kv_test_tmpdir(), k);
        kv_error err;
        kv_status st = kv_quantize_model(model, out[k], &o, NULL, &err);
        kv_pool_destroy(o.pool);
        REQUIRE_OK(st, &err);
    }
    size_t na = 0, nb = 0;
    void *a = kv_test_read_file(out[0], &na), *b = kv_test_read_file(out[1], &nb);
    REQUIRE(a && b);
    CHECK(na == nb && na > 0 && !memcmp(a, b, na));
    free(a);
    free(b);
}

/* A random llama2.c checkpoint without GQA (n_kv_heads = n_heads), so that AWQ also searches o after v; a few
 * embedding columns are large, as activation outliers are in real models. */
static int write_mha_model(const char *path) {
    const int32_t dim = 128, hidden = 256, L = 2, heads = 4, vocab = 64, seq = 64, hs = dim / heads;
    const int32_t hdr[7] = {dim, hidden, L, heads, heads, vocab, seq};
    const struct { int64_t n; int kind; } parts[] = {
        {(int64_t)vocab * dim, 0}, {(int64_t)L * dim, 1}, {(int64_t)L * dim * dim, 2}, {(int64_t)L * dim * dim, 2},
        {(int64_t)L * dim * dim, 2}, {(int64_t)L * dim * dim, 2}, {(int64_t)L * dim, 1}, {(int64_t)L * hidden * dim, 2},
        {(int64_t)L * dim * hidden, 2}, {(int64_t)L * hidden * dim, 2}, {dim, 1}, {(int64_t)seq * hs / 2, 3},
        {(int64_t)seq * hs / 2, 3},
    };
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(hdr, sizeof hdr, 1, f) == 1;
    kv_rng rng;
    kv_rng_seed(&rng, 5);
    for (size_t p = 0; ok && p < sizeof parts / sizeof parts[0]; p++)
        for (int64_t i = 0; ok && i < parts[p].n; i++) {
            double g = kv_rng_normal(&rng);
            float v = parts[p].kind == 0 ? (float)(i % dim == 3 || i % dim == 17 ? 8 * g : g)
                    : parts[p].kind == 1 ? (float)(1 + 0.2 * g)
                    : parts[p].kind == 2 ? (float)(0.1 * g) : 0.0f;
            ok = fwrite(&v, sizeof v, 1, f) == 1;
        }
    return fclose(f) == 0 && ok;
}

KV_TEST(awq_mha_searches_o_and_folds_exactly) {
    char path[600];
    snprintf(path, sizeof path, "%s/mha.bin", kv_test_tmpdir());
    REQUIRE(write_mha_model(path));
    kv_error err;
    kv_error_clear(&err);
    kv_model_file *mf = NULL;
    kv_model *m = NULL;
    kv_wmodel wm;
    REQUIRE_OK(kv_model_open(path, &mf, &err), &err);
    REQUIRE_OK(kv_model_load(mf, NULL, &m, &err), &err);
    REQUIRE_OK(load_wmodel(mf, &wm, &err), &err);
    const int32_t ctx = 64; /* one window: the reported losses are this window's */
    int32_t ids[64];
    kv_rng rng;
    kv_rng_seed(&rng, 9);
    for (int i = 0; i < 64; i++) ids[i] = (int32_t)(kv_rng_u64(&rng) % 64);
    kv_format f;
    REQUIRE_OK(kv_format_get("int3_g128_asym", &f, &err), &err);
    float *orig[7];
    for (int i = 0; i < 7; i++) REQUIRE((orig[i] = tensor_copy(&wm, k_blk0_linears[i])) != NULL);
    float *an = tensor_copy(&wm, "blk.0.attn_norm.weight");
    REQUIRE(an);
    kv_awq_result res[2 * 4];
    REQUIRE_OK(kv_transform_awq(&wm, m, ids, 64, ctx, fmt_all_blk, &f, 0, NULL, res, NULL, 0, &err), &err);
    for (int k = 0; k < 8; k++) {
        CHECK_MSG(res[k].searched, "layer %d group %d not searched", k / 4, k % 4);
        CHECK(res[k].loss <= res[k].loss_alpha0 && res[k].loss_alpha0 > 0);
    }
    /* layer 0's attention with the folded weights (v rows / s_o, o columns · s_o, q/k/v columns · s_qkv,
     * attn_norm / s_qkv) computes what the original does */
    const int64_t d = 128, n = ctx * d;
    kv_context *c = NULL;
    REQUIRE_OK(kv_context_create(m, ctx, &c, &err), &err);
    kv_weight w0[4], w1[4];
    for (int i = 0; i < 4; i++) {
        w0[i] = f32_weight(m, (kv_linear_id)i, orig[i]);
        w1[i] = f32_weight(m, (kv_linear_id)i, kv_wmodel_find(&wm, k_blk0_linears[i])->w);
    }
    const kv_weight *a0[4] = {&w0[0], &w0[1], &w0[2], &w0[3]}, *a1[4] = {&w1[0], &w1[1], &w1[2], &w1[3]};
    float *h = malloc(sizeof(float) * n), *xn = malloc(sizeof(float) * n), *y0 = malloc(sizeof(float) * n);
    float *y1 = malloc(sizeof(float) * n), *xo = malloc(sizeof(float) * n);
    REQUIRE(h && xn && y0 && y1 && xo);
    REQUIRE_OK(kv_forward_embed(m, ids, ctx, h, &err), &err);
    kv_rmsnorm_rows(xn, h, an, ctx, d, kv_model_get_hparams(m)->norm_eps);
    REQUIRE_OK(kv_forward_attention(c, 0, a0, xn, ctx, 0, y0, NULL, &err), &err);
    memcpy(xo, c->att, sizeof(float) * n);
    kv_rmsnorm_rows(xn, h, kv_wmodel_find(&wm, "blk.0.attn_norm.weight")->w, ctx, d, kv_model_get_hparams(m)->norm_eps);
    REQUIRE_OK(kv_forward_attention(c, 0, a1, xn, ctx, 0, y1, NULL, &err), &err);
    double maxd = 0, maxv = 0;
    for (int64_t i = 0; i < n; i++) {
        maxd = fmax(maxd, fabs((double)y0[i] - y1[i]));
        maxv = fmax(maxv, fabs((double)y0[i]));
    }
    CHECK_MSG(maxd <= 1e-4 * maxv && maxv > 0, "folded attention differs by %g (outputs up to %g)", maxd, maxv);
    /* o's searched loss is its own output error over the tokens: recompute it directly from the folded o
     * (s_o = folded / original column) */
    const float *wo = kv_wmodel_find(&wm, k_blk0_linears[3])->w;
    float *s = malloc(sizeof(float) * d);
    REQUIRE(s);
    for (int64_t j = 0; j < d; j++) s[j] = wo[j] / orig[3][j];
    float *q = fake_quant(&f, wo, d, d);
    double e = 0;
    for (int64_t t = 0; t < ctx; t++)
        for (int64_t r = 0; r < d; r++) {
            double dot = 0;
            for (int64_t j = 0; j < d; j++) dot += (double)xo[t * d + j] * (orig[3][r * d + j] - q[r * d + j] / s[j]);
            e += dot * dot;
        }
    e /= (double)(ctx * d);
    CHECK_MSG(fabs(e - res[1].loss) <= 1e-3 * res[1].loss, "o loss recomputed %g, reported %g", e, res[1].loss);
    free(q);
    free(s);
    free(h);
    free(xn);
    free(y0);
    free(y1);
    free(xo);
    kv_context_free(c);
    for (int i = 0; i < 7; i++) free(orig[i]);
    free(an);
    free_wmodel(&wm);
    kv_model_free(m);
    kv_model_close(mf);
}
