/* test_forward.c — the reference forward pass (src/model), the GEMM / weight-seam kernels (src/kernels/cpu):
 * logits of proxy-27m against Hugging Face's (ref/logits_64x8192_f32.bin), stories260K against an independent
 * run.c-style reference (scripts/ref_stories260k.py), KV-cache decoding = full re-run, determinism across
 * thread counts, layer-by-layer API, hooks, weight replacement, online Hadamard, activation quantization. */
#include "test.h"
#include "kernels/cpu/matmul.h"
#include <math.h>

#define PROXY "models/proxy-27m"
#define STORIES "models/stories260K/stories260K.bin"

typedef struct fixture {
    kv_model_file *mf;
    kv_model *m;
    kv_context *c;
} fixture;

static int open_model(kv_test_ctx *T, const char *rel, int32_t n_ctx, const kv_model_load_opts *o, fixture *f) {
    char path[512];
    kv_error err = {0};
    memset(f, 0, sizeof *f);
    kv_test_shared(path, sizeof path, rel);
    if (!kv_test_exists(path)) return 0;
    if (kv_model_open(path, &f->mf, &err) != KV_OK || kv_model_load(f->mf, o, &f->m, &err) != KV_OK || kv_context_create(f->m, n_ctx, &f->c, &err) != KV_OK) {
        char b[1200];
        kv_test_fail(T, __FILE__, __LINE__, "load %s: %s", rel, kv_error_format(&err, b, sizeof b));
        return 0;
    }
    return 1;
}

static void close_model(fixture *f) {
    kv_context_free(f->c);
    kv_model_free(f->m);
    kv_model_close(f->mf);
}

static int argmax(const float *v, int64_t n) {
    int64_t a = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[a]) a = i;
    return (int)a;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

KV_TEST(forward_proxy_logits_match_hf_reference) {
    fixture f;
    if (!open_model(T, PROXY, 64, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    int32_t ids[64];
    REQUIRE(kv_test_proxy_ref_ids(ids, 64) == 64);
    const int64_t V = kv_model_get_hparams(f.m)->n_vocab;
    REQUIRE(V == 8192);
    char path[512];
    size_t nref = 0;
    float *ref = kv_test_read_file(kv_test_shared(path, sizeof path, PROXY "/ref/logits_64x8192_f32.bin"), &nref);
    REQUIRE(ref && nref == 64 * 8192 * sizeof(float));
    float *lg = malloc(64 * 8192 * sizeof(float));
    kv_pool *pool = kv_pool_create(2);
    kv_error err = {0};
    CHECK_OK(kv_forward(f.c, ids, 64, 0, lg, 0, pool, &err), &err);
    double worst = max_abs_diff(lg, ref, 64 * V);
    CHECK_MSG(worst <= 2e-3, "max abs logit error %g > 2e-3", worst);
    for (int t = 0; t < 64; t++) CHECK_EQ_INT(argmax(lg + t * V, V), argmax(ref + t * V, V));
    /* llama.cpp's exact RoPE frequencies differ from transformers' bf16-rounded ones: visible, but small */
    kv_model_load_opts exact = {.rope_freq = KV_ROPE_FREQ_EXACT};
    fixture g;
    REQUIRE(open_model(T, PROXY, 64, &exact, &g));
    float *lg2 = malloc(64 * 8192 * sizeof(float));
    CHECK_OK(kv_forward(g.c, ids, 64, 0, lg2, 0, pool, &err), &err);
    const double d = max_abs_diff(lg2, ref, 64 * V);
    CHECK_MSG(d > worst && d < 0.05, "exact-frequency RoPE error %g (bf16-rounded %g)", d, worst);
    free(lg2);
    close_model(&g);
    kv_pool_destroy(pool);
    free(lg);
    free(ref);
    close_model(&f);
}

KV_TEST(forward_bf16_dot_path_stays_close_to_exact) {
    if (!kv_gemm_bf16_available()) SKIP("no AVX512-BF16 in this build");
    kv_model_load_opts fast = {.bf16_dot = 1};
    fixture f, g;
    if (!open_model(T, PROXY, 64, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    REQUIRE(open_model(T, PROXY, 64, &fast, &g));
    int32_t ids[64];
    REQUIRE(kv_test_proxy_ref_ids(ids, 64) == 64);
    float *a = malloc(64 * 8192 * sizeof(float)), *b = malloc(64 * 8192 * sizeof(float));
    kv_pool *pool = kv_pool_create(2);
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 64, 0, a, 0, pool, &err), &err);
    REQUIRE_OK(kv_forward(g.c, ids, 64, 0, b, 0, pool, &err), &err);
    const double d = max_abs_diff(a, b, 64 * 8192);
    CHECK_MSG(d > 0 && d < 0.15, "bf16-dot vs exact: max abs diff %g", d);
    int same = 0;
    for (int t = 0; t < 64; t++) same += argmax(a + t * 8192, 8192) == argmax(b + t * 8192, 8192);
    CHECK_MSG(same >= 60, "argmax agreement %d/64", same);
    /* and the fast path is deterministic across thread counts too */
    float *c = malloc(64 * 8192 * sizeof(float));
    REQUIRE_OK(kv_forward(g.c, ids, 64, 0, c, 0, NULL, &err), &err);
    CHECK(memcmp(b, c, 64 * 8192 * sizeof(float)) == 0);
    free(a); free(b); free(c);
    kv_pool_destroy(pool);
    close_model(&f);
    close_model(&g);
}

KV_TEST(forward_same_bytes_for_any_thread_count) {
    fixture f;
    if (!open_model(T, PROXY, 64, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    int32_t ids[37];
    for (int i = 0; i < 37; i++) ids[i] = (int32_t)((i * 977 + 1) % 8192);
    const size_t bytes = 37 * 8192 * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
    kv_pool *p2 = kv_pool_create(2), *p3 = kv_pool_create(3);
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 37, 0, a, 0, NULL, &err), &err);
    REQUIRE_OK(kv_forward(f.c, ids, 37, 0, b, 0, p2, &err), &err);
    REQUIRE_OK(kv_forward(f.c, ids, 37, 0, c, 0, p3, &err), &err);
    CHECK(memcmp(a, b, bytes) == 0);
    CHECK(memcmp(a, c, bytes) == 0);
    kv_pool_destroy(p2);
    kv_pool_destroy(p3);
    free(a); free(b); free(c);
    close_model(&f);
}

KV_TEST(forward_kv_cache_decode_equals_full_rerun) {
    fixture f;
    if (!open_model(T, PROXY, 64, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    int32_t ids[64];
    REQUIRE(kv_test_proxy_ref_ids(ids, 64) == 64);
    const int64_t V = 8192;
    float *full = malloc(64 * V * sizeof(float)), *step = malloc(64 * V * sizeof(float));
    kv_pool *pool = kv_pool_create(2);
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 64, 0, full, 0, pool, &err), &err);
    /* prefill 40 in two chunks, then one token at a time with the cache */
    REQUIRE_OK(kv_forward(f.c, ids, 25, 0, step, 0, pool, &err), &err);
    REQUIRE_OK(kv_forward(f.c, ids + 25, 15, 25, step + 25 * V, 0, pool, &err), &err);
    for (int t = 40; t < 64; t++)
        REQUIRE_OK(kv_forward(f.c, ids + t, 1, t, step + t * V, KV_FORWARD_LAST_ONLY, pool, &err), &err);
    const double d = max_abs_diff(full, step, 64 * V);
    CHECK_MSG(d <= 1e-4, "incremental vs full: max abs diff %g", d);
    kv_pool_destroy(pool);
    free(full);
    free(step);
    close_model(&f);
}

KV_TEST(forward_layer_by_layer_api_equals_forward) {
    fixture f;
    if (!open_model(T, PROXY, 32, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    const kv_hparams *hp = kv_model_get_hparams(f.m);
    int32_t ids[20];
    for (int i = 0; i < 20; i++) ids[i] = (int32_t)((i * 331 + 7) % hp->n_vocab);
    float *a = malloc(20 * 8192 * sizeof(float)), *b = malloc(20 * 8192 * sizeof(float));
    float *h = malloc(20 * (size_t)hp->n_embd * sizeof(float));
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 20, 0, a, 0, NULL, &err), &err);
    REQUIRE_OK(kv_forward_embed(f.m, ids, 20, h, &err), &err);
    for (int l = 0; l < hp->n_layer; l++) REQUIRE_OK(kv_forward_layer(f.c, l, h, 20, 0, NULL, &err), &err);
    REQUIRE_OK(kv_forward_head(f.c, h, 20, b, NULL, &err), &err);
    CHECK(memcmp(a, b, 20 * 8192 * sizeof(float)) == 0);
    free(a); free(b); free(h);
    close_model(&f);
}

typedef struct hook_log {
    int calls;
    int order_ok;
    int last_layer;
    int per_kind[KV_LINEAR_COUNT];
    int64_t dims[KV_LINEAR_COUNT];
    double sum_head;
} hook_log;

static void on_input(void *user, int layer, kv_linear_id which, const float *x, int64_t ntok, int64_t dim) {
    hook_log *h = user;
    if (layer < h->last_layer) h->order_ok = 0;
    h->last_layer = layer;
    h->calls++;
    h->per_kind[which]++;
    h->dims[which] = dim;
    if (which == KV_LINEAR_HEAD)
        for (int64_t i = 0; i < ntok * dim; i++) h->sum_head += x[i] * x[i];
}

KV_TEST(forward_hooks_see_each_distinct_linear_input) {
    fixture f;
    if (!open_model(T, PROXY, 16, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    const kv_hparams *hp = kv_model_get_hparams(f.m);
    hook_log log = {.order_ok = 1};
    kv_forward_hooks hk = {on_input, &log};
    kv_context_set_hooks(f.c, &hk);
    int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float *lg = malloc(8 * 8192 * sizeof(float));
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 8, 0, lg, 0, NULL, &err), &err);
    CHECK_EQ_INT(log.calls, 4 * hp->n_layer + 1);
    CHECK_EQ_INT(log.per_kind[KV_LINEAR_Q], hp->n_layer);
    CHECK_EQ_INT(log.per_kind[KV_LINEAR_K], 0);
    CHECK_EQ_INT(log.per_kind[KV_LINEAR_O], hp->n_layer);
    CHECK_EQ_INT(log.per_kind[KV_LINEAR_GATE], hp->n_layer);
    CHECK_EQ_INT(log.per_kind[KV_LINEAR_DOWN], hp->n_layer);
    CHECK_EQ_INT(log.per_kind[KV_LINEAR_HEAD], 1);
    CHECK_EQ_INT(log.dims[KV_LINEAR_DOWN], hp->n_ff);
    CHECK_EQ_INT(log.dims[KV_LINEAR_O], hp->n_head * hp->head_dim);
    CHECK_EQ_INT(log.last_layer, hp->n_layer);
    CHECK(log.order_ok);
    CHECK(log.sum_head > 0);
    free(lg);
    close_model(&f);
}

KV_TEST(forward_stories260k_matches_runc_reference) {
    fixture f;
    if (!open_model(T, STORIES, 16, NULL, &f)) { if (!T->failures) SKIP("stories260K absent"); return; }
    const kv_hparams *hp = kv_model_get_hparams(f.m);
    CHECK_EQ_INT(hp->n_embd, 64);
    CHECK_EQ_INT(hp->n_head, 8);
    CHECK_EQ_INT(hp->n_head_kv, 4);
    CHECK_EQ_INT(hp->head_dim, 8);
    REQUIRE(hp->n_vocab == 512);
    /* from scripts/ref_stories260k.py (float64, run.c semantics on the raw checkpoint) */
    static const int32_t ids[8] = {1, 403, 407, 261, 378, 379, 294, 22};
    static const int probe[5] = {0, 1, 100, 257, 511};
    static const int ref_argmax[8] = {461, 422, 405, 448, 473, 327, 408, 389};
    static const double ref[8][5] = {
        {1.973874, 2.654910, 1.974706, 1.973163, 1.874619}, {-0.735046, -6.436699, -0.735670, -0.735859, -1.144448},
        {2.668549, -3.477358, 2.667893, 2.668159, 1.436922}, {-1.726494, 3.874064, -1.728504, -1.728374, -1.042375},
        {8.338306, -1.773946, 8.336498, 8.337546, 6.923700}, {2.575058, -8.725465, 2.575283, 2.574542, 3.880581},
        {-4.446685, 1.968616, -4.447037, -4.447755, -2.771392}, {4.863489, 1.419957, 4.862723, 4.861467, 3.897759}};
    float lg[8 * 512];
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 8, 0, lg, 0, NULL, &err), &err);
    for (int t = 0; t < 8; t++) {
        CHECK_EQ_INT(argmax(lg + t * 512, 512), ref_argmax[t]);
        for (int k = 0; k < 5; k++) CHECK_NEAR(lg[t * 512 + probe[k]], ref[t][k], 1e-4);
    }
    close_model(&f);
}

/* Rows of W rotated like the online transform: w' = H·D·w, so that (H·D·w)·(H·D·x) = w·x. */
KV_TEST(forward_online_hadamard_equals_offline_rotation) {
    fixture f;
    if (!open_model(T, PROXY, 16, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    const kv_weight *w = kv_model_weight(f.m, 2, KV_LINEAR_DOWN);
    REQUIRE(w && w->cols == 1536);
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = (int32_t)(100 + 37 * i);
    float *a = malloc(12 * 8192 * sizeof(float)), *b = malloc(12 * 8192 * sizeof(float));
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 12, 0, a, 0, NULL, &err), &err);
    const int32_t block = 512;
    const uint64_t seed = 1234;
    float *signs = malloc((size_t)w->cols * sizeof(float));
    kv_rht_signs(seed, w->cols, signs);
    float *rot = malloc((size_t)w->rows * (size_t)w->cols * sizeof(float));
    const size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
    for (int64_t r = 0; r < w->rows; r++) {
        w->fmt.dequantize(&w->fmt, (const uint8_t *)w->data + r * rb, rot + r * w->cols, w->cols);
        kv_rht_apply(rot + r * w->cols, w->cols, block, signs);
    }
    kv_format f32;
    REQUIRE_OK(kv_format_get("f32", &f32, &err), &err);
    REQUIRE_OK(kv_model_set_weight(f.m, "blk.2.ffn_down.weight", &f32, rot, 1, &err), &err);
    REQUIRE_OK(kv_model_set_rht(f.m, "blk.2.ffn_down.weight", block, seed, &err), &err);
    REQUIRE_OK(kv_forward(f.c, ids, 12, 0, b, 0, NULL, &err), &err);
    const double d = max_abs_diff(a, b, 12 * 8192);
    CHECK_MSG(d < 1e-3, "rotated weight + online Hadamard: max abs diff %g", d);
    /* without the online transform the rotated weight is wrong */
    REQUIRE_OK(kv_model_set_rht(f.m, "blk.2.ffn_down.weight", 0, 0, &err), &err);
    REQUIRE_OK(kv_forward(f.c, ids, 12, 0, b, 0, NULL, &err), &err);
    CHECK(max_abs_diff(a, b, 12 * 8192) > 0.1);
    CHECK(kv_model_set_rht(f.m, "blk.2.ffn_down.weight", 1000, 1, &err) == KV_EINVAL);
    free(signs);
    free(a);
    free(b);
    close_model(&f);
}

KV_TEST(forward_set_weight_quantized_and_errors) {
    fixture f;
    if (!open_model(T, PROXY, 16, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    int32_t ids[10];
    for (int i = 0; i < 10; i++) ids[i] = (int32_t)(500 + 91 * i);
    float *a = malloc(10 * 8192 * sizeof(float)), *b = malloc(10 * 8192 * sizeof(float));
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 10, 0, a, 0, NULL, &err), &err);
    kv_format q8;
    REQUIRE_OK(kv_format_get("q8_0", &q8, &err), &err);
    /* quantize every linear of block 0 to q8_0 through the seam */
    static const char *names[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    for (int i = 0; i < 7; i++) {
        const kv_weight *w = kv_model_weight(f.m, 0, (kv_linear_id)i);
        float *rows = malloc((size_t)w->rows * (size_t)w->cols * sizeof(float));
        const size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
        for (int64_t r = 0; r < w->rows; r++)
            w->fmt.dequantize(&w->fmt, (const uint8_t *)w->data + r * rb, rows + r * w->cols, w->cols);
        void *packed = malloc(kv_format_row_bytes(&q8, w->cols) * (size_t)w->rows);
        REQUIRE_OK(q8.quantize(&q8, rows, packed, w->rows, w->cols, NULL, &err), &err);
        char name[64];
        snprintf(name, sizeof name, "blk.0.%s.weight", names[i]);
        REQUIRE_OK(kv_model_set_weight(f.m, name, &q8, packed, 1, &err), &err);
        CHECK_STR(kv_model_weight(f.m, 0, (kv_linear_id)i)->fmt.name, "q8_0");
        free(rows);
    }
    REQUIRE_OK(kv_forward(f.c, ids, 10, 0, b, 0, NULL, &err), &err);
    const double d = max_abs_diff(a, b, 10 * 8192);
    CHECK_MSG(d > 0 && d < 0.5, "q8_0 block 0: max abs diff %g", d);
    int same = 0;
    for (int t = 0; t < 10; t++) same += argmax(a + t * 8192, 8192) == argmax(b + t * 8192, 8192);
    CHECK(same >= 9);
    CHECK(kv_model_set_weight(f.m, "blk.9.attn_q.weight", &q8, a, 0, &err) == KV_ENOTFOUND);
    CHECK(strstr(err.tensor, "blk.9.attn_q.weight") != NULL);
    CHECK(kv_model_set_weight(f.m, "output_norm.weight", &q8, a, 0, &err) == KV_ENOTFOUND);
    free(a);
    free(b);
    close_model(&f);
}

KV_TEST(forward_activation_quantization) {
    fixture f;
    if (!open_model(T, PROXY, 16, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    int32_t ids[10];
    for (int i = 0; i < 10; i++) ids[i] = (int32_t)(700 + 13 * i);
    float *a = malloc(10 * 8192 * sizeof(float)), *b = malloc(10 * 8192 * sizeof(float));
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 10, 0, a, 0, NULL, &err), &err);
    kv_format q8;
    REQUIRE_OK(kv_format_get("q8_0", &q8, &err), &err);
    REQUIRE_OK(kv_model_set_act_quant(f.m, &q8, 0, &err), &err);
    REQUIRE_OK(kv_forward(f.c, ids, 10, 0, b, 0, NULL, &err), &err);
    const double d = max_abs_diff(a, b, 10 * 8192);
    CHECK_MSG(d > 0 && d < 1.0, "W16A8 (q8_0 activations): max abs diff %g", d);
    REQUIRE_OK(kv_model_set_act_quant(f.m, NULL, 0, &err), &err);
    REQUIRE_OK(kv_forward(f.c, ids, 10, 0, b, 0, NULL, &err), &err);
    CHECK(memcmp(a, b, 10 * 8192 * sizeof(float)) == 0);
    close_model(&f);
    free(a);
    free(b);
    /* stories260K: n_ff 172 is not a multiple of q8_0's block of 32 */
    if (!open_model(T, STORIES, 16, NULL, &f)) return;
    CHECK(kv_model_set_act_quant(f.m, &q8, 0, &err) == KV_EINVAL);
    close_model(&f);
}

KV_TEST(forward_bad_input) {
    fixture f;
    if (!open_model(T, STORIES, 16, NULL, &f)) { if (!T->failures) SKIP("stories260K absent"); return; }
    kv_error err = {0};
    float lg[4 * 512];
    int32_t bad[2] = {5, 512};
    CHECK(kv_forward(f.c, bad, 2, 0, lg, 0, NULL, &err) == KV_ERANGE);
    CHECK(strstr(err.message, "512") != NULL);
    int32_t ok[4] = {1, 2, 3, 4};
    CHECK(kv_forward(f.c, ok, 4, 14, lg, 0, NULL, &err) == KV_ERANGE);
    CHECK(kv_forward(f.c, ok, 4, 0, NULL, 0, NULL, &err) == KV_EINVAL);
    kv_context *c2 = NULL;
    CHECK(kv_context_create(f.m, 4096, &c2, &err) == KV_EINVAL); /* model maximum 512 */
    CHECK(strstr(err.message, "512") != NULL);
    CHECK(c2 == NULL);
    close_model(&f);
}

KV_TEST(gemm_matches_double_reference_on_odd_shapes) {
    const int64_t shapes[][3] = {{1, 1, 1}, {13, 77, 300}, {8, 32, 256}, {9, 65, 513}, {64, 100, 31}};
    kv_pool *pool = kv_pool_create(2);
    kv_rng r;
    kv_rng_seed(&r, 7);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc((size_t)(M * K) * sizeof(float)), *B = malloc((size_t)(N * K) * sizeof(float));
        float *C = malloc((size_t)(M * N) * sizeof(float)), *C1 = malloc((size_t)(M * N) * sizeof(float));
        for (int64_t i = 0; i < M * K; i++) A[i] = (float)(kv_rng_uniform(&r) * 2 - 1);
        for (int64_t i = 0; i < N * K; i++) B[i] = (float)(kv_rng_uniform(&r) * 2 - 1);
        kv_gemm_f32_nt(M, N, K, A, K, B, K, C, N, pool);
        kv_gemm_f32_nt(M, N, K, A, K, B, K, C1, N, NULL);
        CHECK(memcmp(C, C1, (size_t)(M * N) * sizeof(float)) == 0);
        double worst = 0;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double ref = 0;
                for (int64_t k = 0; k < K; k++) ref += (double)A[m * K + k] * B[n * K + k];
                worst = fmax(worst, fabs(ref - C[m * N + n]));
            }
        CHECK_MSG(worst < 1e-4 * sqrt((double)K), "shape %lldx%lldx%lld: max err %g", (long long)M, (long long)N,
                  (long long)K, worst);
        free(A); free(B); free(C); free(C1);
    }
    kv_pool_destroy(pool);
}

KV_TEST(weight_seam_matmul_dequantizes_any_format) {
    kv_error err = {0};
    kv_format fmt;
    REQUIRE_OK(kv_format_get("q4_0", &fmt, &err), &err);
    const int64_t rows = 70, cols = 96, ntok = 11;
    float *W = malloc((size_t)(rows * cols) * sizeof(float)), *x = malloc((size_t)(ntok * cols) * sizeof(float));
    kv_rng r;
    kv_rng_seed(&r, 3);
    for (int64_t i = 0; i < rows * cols; i++) W[i] = (float)kv_rng_normal(&r);
    for (int64_t i = 0; i < ntok * cols; i++) x[i] = (float)kv_rng_normal(&r);
    const size_t rb = kv_format_row_bytes(&fmt, cols);
    uint8_t *packed = malloc(rb * (size_t)rows);
    REQUIRE_OK(fmt.quantize(&fmt, W, packed, rows, cols, NULL, &err), &err);
    float bias[70];
    for (int i = 0; i < 70; i++) bias[i] = (float)i * 0.5f;
    kv_weight w = {.fmt = fmt, .rows = rows, .cols = cols, .data = packed, .bias = bias};
    float *y = malloc((size_t)(ntok * rows) * sizeof(float));
    kv_pool *pool = kv_pool_create(2);
    float row[96];
    double worst = 0;
    /* 1 and 2 tokens take the row-dot (decode) path, 11 the packed GEMM */
    for (int64_t nt = 1; nt <= ntok; nt = nt == 2 ? ntok : nt + 1) {
        REQUIRE_OK(kv_weight_matmul(&w, x, nt, y, pool, &err), &err);
        for (int64_t n = 0; n < rows; n++) {
            fmt.dequantize(&fmt, packed + n * rb, row, cols);
            for (int64_t m = 0; m < nt; m++) {
                double ref = bias[n];
                for (int64_t k = 0; k < cols; k++) ref += (double)row[k] * x[m * cols + k];
                worst = fmax(worst, fabs(ref - y[m * rows + n]));
            }
        }
    }
    CHECK_MSG(worst < 1e-3, "q4_0 seam max err %g", worst);
    kv_weight bad = w;
    bad.cols = 100; /* not a multiple of 32 */
    CHECK(kv_weight_matmul(&bad, x, ntok, y, pool, &err) == KV_EINVAL);
    kv_pool_destroy(pool);
    free(W); free(x); free(packed); free(y);
}

/* A GGUF written by `kvant quantize --transform rht` records the online Hadamard per weight
 * (KV_META_RHT_*_FMT): kv_model_load must re-apply it, else the rotated weights give garbage. */
KV_TEST(forward_gguf_rht_metadata_is_reapplied) {
    fixture base, q;
    if (!open_model(T, PROXY, 16, NULL, &base)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    char model[512], out[600], args[1400];
    kv_test_shared(model, sizeof model, PROXY);
    snprintf(out, sizeof out, "%s/q8rht.gguf", kv_test_tmpdir());
    snprintf(args, sizeof args, "quantize %s -o %s --format q8_0 --transform rht --quiet", model, out);
    char *log = NULL;
    const int rc = kv_test_run_cli(args, &log);
    free(log);
    if (rc != 0) { close_model(&base); SKIP("kvant quantize --transform rht unavailable (exit %d)", rc); }
    kv_error err = {0};
    memset(&q, 0, sizeof q);
    REQUIRE_OK(kv_model_open(out, &q.mf, &err), &err);
    REQUIRE_OK(kv_model_load(q.mf, NULL, &q.m, &err), &err);
    REQUIRE_OK(kv_context_create(q.m, 16, &q.c, &err), &err);
    const kv_weight *w = kv_model_weight(q.m, 1, KV_LINEAR_GATE);
    CHECK(w->rht_block > 0 && w->rht_signs != NULL);
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = (int32_t)(300 + 41 * i);
    float *a = malloc(12 * 8192 * sizeof(float)), *b = malloc(12 * 8192 * sizeof(float));
    REQUIRE_OK(kv_forward(base.c, ids, 12, 0, a, 0, NULL, &err), &err);
    REQUIRE_OK(kv_forward(q.c, ids, 12, 0, b, 0, NULL, &err), &err);
    const double d = max_abs_diff(a, b, 12 * 8192);
    CHECK_MSG(d < 0.5, "q8_0 + rht GGUF vs bf16: max abs diff %g", d);
    int same = 0;
    for (int t = 0; t < 12; t++) same += argmax(a + t * 8192, 8192) == argmax(b + t * 8192, 8192);
    CHECK(same >= 11);
    free(a);
    free(b);
    close_model(&q);
    close_model(&base);
}

KV_TEST(run_cli_generates_deterministically) {
    char model[512], args[1200];
    kv_test_shared(model, sizeof model, PROXY);
    if (!kv_test_exists(model)) SKIP("proxy-27m absent");
    char *a = NULL, *b = NULL, *out = NULL;
    CHECK_EQ_INT(kv_test_run_cli("run --help", &out), 0);
    CHECK(strstr(out, "--top-p") != NULL);
    free(out);
    CHECK_EQ_INT(kv_test_run_cli("run", &out), 2);
    free(out);
    snprintf(args, sizeof args, "run %s -p 'The history of the city' -n 12 --seed 7 --json -t 1", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &a), 0);
    snprintf(args, sizeof args, "run %s -p 'The history of the city' -n 12 --seed 7 --json -t 2", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &b), 0);
    CHECK(strstr(a, "\"generated_tokens\"") && strstr(a, "\"decode_tokens_per_s\""));
    /* same seed, same ids whatever the thread count (the speeds differ, so compare up to them) */
    char *ea = strstr(a, "\"prompt_tokens\""), *eb = strstr(b, "\"prompt_tokens\"");
    REQUIRE(ea && eb);
    CHECK((ea - a) == (eb - b) && memcmp(a, b, (size_t)(ea - a)) == 0);
    free(a);
    free(b);
    snprintf(args, sizeof args, "run %s -p 'Hello' -n 5 --temp 2 --top-p 0", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 2);
    free(out);
}

KV_TEST(forward_prepacked_panels_give_identical_logits) {
    fixture f, g;
    kv_model_load_opts pre = {.prepack = 1};
    if (!open_model(T, PROXY, 32, NULL, &f)) { if (!T->failures) SKIP("proxy-27m absent"); return; }
    REQUIRE(open_model(T, PROXY, 32, &pre, &g));
    CHECK(kv_model_weight(g.m, 0, KV_LINEAR_Q)->packed != NULL);
    CHECK(kv_model_weight(f.m, 0, KV_LINEAR_Q)->packed == NULL);
    int32_t ids[24];
    for (int i = 0; i < 24; i++) ids[i] = (int32_t)((i * 613 + 5) % 8192);
    const size_t bytes = 24 * 8192 * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes);
    kv_pool *pool = kv_pool_create(2);
    kv_error err = {0};
    REQUIRE_OK(kv_forward(f.c, ids, 24, 0, a, 0, pool, &err), &err);
    REQUIRE_OK(kv_forward(g.c, ids, 24, 0, b, 0, pool, &err), &err);
    CHECK(memcmp(a, b, bytes) == 0);
    /* replacing a weight drops its cached panels: both models see the new bytes */
    const kv_weight *w = kv_model_weight(f.m, 4, KV_LINEAR_UP);
    const size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
    uint8_t *copy = malloc(rb * (size_t)w->rows);
    memcpy(copy, w->data, rb * (size_t)w->rows);
    for (size_t i = 0; i < rb * (size_t)w->rows; i += 2) copy[i + 1] ^= 0x01; /* perturb every bf16 a little */
    kv_format fmt = w->fmt;
    REQUIRE_OK(kv_model_set_weight(f.m, "blk.4.ffn_up.weight", &fmt, copy, 0, &err), &err);
    REQUIRE_OK(kv_model_set_weight(g.m, "blk.4.ffn_up.weight", &fmt, copy, 0, &err), &err);
    CHECK(kv_model_weight(g.m, 4, KV_LINEAR_UP)->packed == NULL);
    REQUIRE_OK(kv_forward(f.c, ids, 24, 0, a, 0, pool, &err), &err);
    REQUIRE_OK(kv_forward(g.c, ids, 24, 0, b, 0, pool, &err), &err);
    CHECK(memcmp(a, b, bytes) == 0);
    kv_pool_destroy(pool);
    close_model(&f);
    close_model(&g);
    free(copy);
    free(a);
    free(b);
}
