/* test_llmint8.c — `--method llm-int8` (src/algos/llmint8.c, llmint8_method.c): the stored int8 vector-wise
 * weight with fp16 outlier columns, its matmul, and the whole path on proxy-27m: quantize with calibration, load
 * (kv_model_load attaches the outlier columns), evaluate, thread-count independence, the all-outlier limit,
 * option errors and the CLI report. */
#include "test.h"
#include <stdint.h>

#define KV_MAX_I(a, b) ((a) > (b) ? (a) : (b))
#define KV_MIN_I(a, b) ((a) < (b) ? (a) : (b))

static float *pseudo_matrix(int64_t rows, int64_t cols, uint32_t seed, float scale) {
    float *m = malloc(sizeof(float) * (size_t)(rows * cols));
    uint32_t s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < rows * cols; i++) {
        s = s * 1664525u + 1013904223u;
        m[i] = scale * ((float)(s >> 8) / 16777216.0f - 0.5f);
    }
    return m;
}

/* A kv_weight over quantized bytes, the way kv_llmint8_attach builds one. */
static int make_weight(kv_weight *w, const float *wf, int64_t rows, int64_t cols, const uint8_t *mask, void **bytes,
                       kv_error *err) {
    memset(w, 0, sizeof *w);
    if (kv_format_get(KV_LLMINT8_FORMAT, &w->fmt, err) != KV_OK) return -1;
    int64_t nout = 0;
    for (int64_t j = 0; j < cols; j++) nout += mask[j];
    *bytes = malloc((size_t)(rows * (4 + cols)));
    uint16_t *outl = malloc(2 * (size_t)KV_MAX_I(rows * nout, 1));
    if (kv_llmint8_quantize(wf, rows, cols, mask, *bytes, outl, err) != KV_OK) return -1;
    w->rows = rows;
    w->cols = cols;
    w->data = *bytes;
    w->llmint8 = 1;
    w->n_outliers = nout;
    w->outlier_mask = malloc((size_t)cols);
    memcpy(w->outlier_mask, mask, (size_t)cols);
    w->outlier_cols = malloc(sizeof(int32_t) * (size_t)KV_MAX_I(nout, 1));
    w->outlier_w = malloc(sizeof(float) * (size_t)KV_MAX_I(rows * nout, 1));
    for (int64_t j = 0, k = 0; j < cols; j++)
        if (mask[j]) w->outlier_cols[k++] = (int32_t)j;
    for (int64_t i = 0; i < rows * nout; i++) w->outlier_w[i] = kv_fp16_to_fp32(outl[i]);
    free(outl);
    return 0;
}

static void free_weight(kv_weight *w, void *bytes) {
    free(w->outlier_mask);
    free(w->outlier_cols);
    free(w->outlier_w);
    free(bytes);
}

static float half_round(float v) { return kv_fp16_to_fp32(kv_fp32_to_fp16(v)); }

KV_TEST(llmint8_quantize_layout_and_rounding) {
    /* row 0: absmax 127 over the non-outlier columns, so codes are round-half-even of the values themselves */
    const int64_t cols = 8;
    float w[2 * 8] = {2.5f, 3.5f, -2.5f, 127.0f, 1000.0f, -0.5f, 0.49f, -127.0f,
                      0.0f, 0.0f, 0.0f, 0.0f, -7.0f, 0.0f, 0.0f, 0.0f};
    uint8_t mask[8] = {0, 0, 0, 0, 1, 0, 0, 0};
    uint8_t dst[2 * 12];
    uint16_t outl[2];
    kv_error err;
    REQUIRE_OK(kv_llmint8_quantize(w, 2, cols, mask, dst, outl, &err), &err);
    float d;
    memcpy(&d, dst, 4);
    CHECK(d == 127.0f / 127.0f);
    const int expect[8] = {2, 4, -2, 127, 0, 0, 0, -127}; /* 2.5 -> 2, 3.5 -> 4, -0.5 -> 0, outlier -> 0 */
    for (int j = 0; j < 8; j++) CHECK_EQ_INT((int)dst[4 + j] - 128, expect[j]);
    CHECK(kv_fp16_to_fp32(outl[0]) == 1000.0f && kv_fp16_to_fp32(outl[1]) == -7.0f);
    /* row 1: only the outlier is non-zero: scale 0, every code 0 */
    memcpy(&d, dst + 12, 4);
    CHECK(d == 0.0f);
    for (int j = 0; j < 8; j++) CHECK_EQ_INT(dst[12 + 4 + j], 128);
    /* the stored rows are plain int8_g0_sym_f32: its decoder gives d·q (outlier columns 0) */
    kv_format f;
    REQUIRE_OK(kv_format_get(KV_LLMINT8_FORMAT, &f, &err), &err);
    CHECK_EQ_INT(kv_format_row_bytes(&f, cols), 12);
    float back[8];
    f.dequantize(&f, dst, back, cols);
    for (int j = 0; j < 8; j++) CHECK(back[j] == (float)expect[j]);
    w[5] = NAN;
    CHECK(kv_llmint8_quantize(w, 2, cols, mask, dst, outl, &err) == KV_EINVAL);
}

KV_TEST(llmint8_weight_matmul_matches_reference_and_threads) {
    const int64_t rows = 70, cols = 200, ntok = 13; /* tails of every block size */
    float *wf = pseudo_matrix(rows, cols, 1, 0.2f), *x = pseudo_matrix(ntok, cols, 2, 2.0f);
    uint8_t mask[200] = {0};
    for (int64_t t = 0; t < ntok; t++) { x[t * cols + 17] = 30.0f + (float)t; x[t * cols + 150] = -45.0f; }
    mask[17] = mask[150] = mask[151] = 1;
    kv_weight w;
    void *bytes = NULL;
    kv_error err;
    REQUIRE(make_weight(&w, wf, rows, cols, mask, &bytes, &err) == 0);
    float *y1 = malloc(sizeof(float) * (size_t)(ntok * rows)), *y2 = malloc(sizeof(float) * (size_t)(ntok * rows));
    REQUIRE_OK(kv_llmint8_weight_matmul(&w, x, ntok, y1, NULL, &err), &err);
    kv_pool *pool = kv_pool_create(2);
    REQUIRE_OK(kv_llmint8_weight_matmul(&w, x, ntok, y2, pool, &err), &err);
    CHECK(memcmp(y1, y2, sizeof(float) * (size_t)(ntok * rows)) == 0);
    /* the int8 / fp16 decomposition, computed independently in double */
    double e = 0, s = 0, e_exact = 0;
    const uint8_t *b = bytes;
    for (int64_t t = 0; t < ntok; t++) {
        float amax = 0;
        for (int64_t j = 0; j < cols; j++)
            if (!mask[j]) amax = fmaxf(amax, fabsf(x[t * cols + j]));
        for (int64_t r = 0; r < rows; r++) {
            float dw;
            memcpy(&dw, b + r * (4 + cols), 4);
            double acc = 0, f = 0, exact = 0;
            for (int64_t j = 0; j < cols; j++) {
                exact += (double)x[t * cols + j] * wf[r * cols + j];
                if (mask[j]) f += (double)half_round(x[t * cols + j]) * half_round(wf[r * cols + j]);
                else acc += (double)rintf(x[t * cols + j] * (127.0f / amax)) * ((int)b[r * (4 + cols) + 4 + j] - 128);
            }
            double ref = acc * (amax / 127.0) * dw + f, got = y1[t * rows + r];
            e += (got - ref) * (got - ref);
            e_exact += (got - exact) * (got - exact);
            s += ref * ref;
        }
    }
    CHECK_MSG(sqrt(e / s) < 1e-6, "vs decomposition: %g", sqrt(e / s));
    CHECK_MSG(sqrt(e_exact / s) < 0.02, "vs fp32: %g", sqrt(e_exact / s)); /* outliers rescue the int8 part */
    /* batch split: the first 5 tokens alone give the same rows */
    float *y3 = malloc(sizeof(float) * (size_t)(5 * rows));
    REQUIRE_OK(kv_llmint8_weight_matmul(&w, x, 5, y3, pool, &err), &err);
    CHECK(memcmp(y1, y3, sizeof(float) * (size_t)(5 * rows)) == 0);
    x[3 * cols + 9] = INFINITY;
    CHECK(kv_llmint8_weight_matmul(&w, x, ntok, y1, pool, &err) == KV_EINVAL);
    kv_pool_destroy(pool);
    free_weight(&w, bytes);
    free(wf), free(x), free(y1), free(y2), free(y3);
}

KV_TEST(llmint8_all_outliers_is_the_fp16_matmul) {
    const int64_t rows = 33, cols = 96, ntok = 7;
    float *wf = pseudo_matrix(rows, cols, 3, 0.3f), *x = pseudo_matrix(ntok, cols, 4, 3.0f);
    uint8_t mask[96];
    memset(mask, 1, sizeof mask);
    kv_weight w;
    void *bytes = NULL;
    kv_error err;
    REQUIRE(make_weight(&w, wf, rows, cols, mask, &bytes, &err) == 0);
    float *y = malloc(sizeof(float) * (size_t)(ntok * rows)), *yr = malloc(sizeof(float) * (size_t)(ntok * rows));
    REQUIRE_OK(kv_llmint8_weight_matmul(&w, x, ntok, y, NULL, &err), &err);
    /* kvant's plain fp32 matmul of the fp16-rounded operands */
    float *wh = malloc(sizeof(float) * (size_t)(rows * cols)), *xh = malloc(sizeof(float) * (size_t)(ntok * cols));
    for (int64_t i = 0; i < rows * cols; i++) wh[i] = half_round(wf[i]);
    for (int64_t i = 0; i < ntok * cols; i++) xh[i] = half_round(x[i]);
    kv_weight pw;
    memset(&pw, 0, sizeof pw);
    REQUIRE_OK(kv_format_from_type(KV_TYPE_F32, &pw.fmt, &err), &err);
    pw.rows = rows, pw.cols = cols, pw.data = wh;
    REQUIRE_OK(kv_weight_matmul(&pw, xh, ntok, yr, NULL, &err), &err);
    CHECK(memcmp(y, yr, sizeof(float) * (size_t)(ntok * rows)) == 0);
    free_weight(&w, bytes);
    free(wf), free(x), free(y), free(yr), free(wh), free(xh);
}

/* ---------------------------------------------------------------------------------------------- */
/* proxy-27m end to end                                                                              */
/* ---------------------------------------------------------------------------------------------- */

/* The first n bytes of a shared text, as a file in the test's directory. */
static int text_prefix(const char *rel, size_t n, char *path, size_t len) {
    char src[512];
    kv_test_shared(src, sizeof src, rel);
    size_t size = 0;
    char *text = kv_test_read_file(src, &size);
    if (!text) return -1;
    snprintf(path, len, "%s/%s.txt", kv_test_tmpdir(), strrchr(rel, '/') + 1);
    int rc = kv_test_write_file(path, text, n < size ? n : size);
    free(text);
    return rc;
}

static kv_status quantize_llmint8(const char *model, const char *calib, const char *method, const char *out,
                                  kv_pool *pool, kv_error *err) {
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    o.method = method;
    o.calib_path = calib;
    o.calib_tokens = 256; /* 2 windows of 128 */
    o.calib_ctx = 128;
    o.pool = pool;
    o.quiet = 1;
    return kv_quantize_model(model, out, &o, NULL, err);
}

typedef struct loaded {
    kv_model_file *mf;
    kv_model *m;
} loaded;

static kv_status load(const char *path, loaded *L, kv_error *err) {
    memset(L, 0, sizeof *L);
    kv_status st = kv_model_open(path, &L->mf, err);
    if (st == KV_OK) st = kv_model_load(L->mf, NULL, &L->m, err);
    return st;
}

static void unload(loaded *L) {
    kv_model_free(L->m);
    kv_model_close(L->mf);
}

static double ppl_of(const kv_model *m, const int32_t *ids, int64_t n, kv_pool *pool, kv_error *err) {
    kv_eval_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.ctx = 128;
    eo.bos_id = -1;
    kv_eval_result r;
    if (kv_eval_ppl(m, ids, n, &eo, pool, &r, err) != KV_OK) return NAN;
    return r.ppl;
}

KV_TEST(llmint8_proxy27m_quantize_load_eval) {
    char model[512], calib[1024], held[1024], out[1024];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model) || text_prefix("data/calib.txt", 6000, calib, sizeof calib) ||
        text_prefix("data/heldout.txt", 8000, held, sizeof held))
        SKIP("proxy-27m or the shared texts are absent");
    snprintf(out, sizeof out, "%s/i8.gguf", kv_test_tmpdir());
    kv_error err;
    kv_pool *pool = kv_pool_create(2);
    REQUIRE_OK(quantize_llmint8(model, calib, "llm-int8", out, pool, &err), &err);
    loaded base, q;
    REQUIRE_OK(load(model, &base, &err), &err);
    REQUIRE_OK(load(out, &q, &err), &err);
    /* every decoder linear carries its outlier columns, as the file lists them; the head stays fp16 */
    kv_llmint8_summary sum;
    REQUIRE_OK(kv_llmint8_summary_read(q.mf, &sum, &err), &err);
    const kv_hparams *hp = kv_model_get_hparams(q.m);
    CHECK_EQ_INT(sum.n_tensors, hp->n_layer * 7);
    CHECK(sum.threshold == 6.0);
    int64_t total = 0, max = 0;
    for (int l = 0; l < hp->n_layer; l++)
        for (int i = 0; i < 7; i++) {
            const kv_weight *w = kv_model_weight(q.m, l, (kv_linear_id)i);
            CHECK(w->llmint8 == 1 && !strcmp(w->fmt.name, KV_LLMINT8_FORMAT));
            total += w->n_outliers;
            max = w->n_outliers > max ? w->n_outliers : max;
            for (int64_t k = 1; k < w->n_outliers; k++) CHECK(w->outlier_cols[k] > w->outlier_cols[k - 1]);
        }
    CHECK_EQ_INT(total, sum.total);
    CHECK_EQ_INT(max, sum.max);
    CHECK(total > 0);
    const kv_weight *head = kv_model_weight(q.m, hp->n_layer, KV_LINEAR_HEAD);
    CHECK(!head->llmint8 && head->fmt.type == KV_TYPE_F16);
    /* q/k/v share their input, hence their outlier columns */
    const kv_weight *wq = kv_model_weight(q.m, 2, KV_LINEAR_Q), *wv = kv_model_weight(q.m, 2, KV_LINEAR_V);
    CHECK(wq->n_outliers == wv->n_outliers &&
          !memcmp(wq->outlier_mask, wv->outlier_mask, (size_t)wq->cols));
    kv_llmint8_summary_free(&sum);

    /* PPL on a few heldout windows: W8A8 with fp16 outliers within 1% of bf16 */
    kv_tokenizer *tok = NULL;
    REQUIRE_OK(kv_tokenizer_load_for_model(base.mf, &tok, &err), &err);
    size_t tsize = 0, n_ids = 0;
    char *text = kv_test_read_file(held, &tsize);
    int32_t *ids = NULL;
    REQUIRE_OK(kv_tokenize(tok, text, tsize, 1, &ids, &n_ids, &err), &err);
    const int64_t n = getenv("KVANT_SANITIZED") ? 2 * 128 : KV_MIN_I((int64_t)n_ids, 12 * 128);
    REQUIRE(n_ids >= 2 * 128);
    double pb = ppl_of(base.m, ids, n, pool, &err), pq = ppl_of(q.m, ids, n, pool, &err);
    CHECK_MSG(isfinite(pb) && isfinite(pq) && fabs(pq / pb - 1) < 0.01, "PPL bf16 %.4f, llm-int8 %.4f", pb, pq);

    /* 1 vs 2 threads: byte-identical logits */
    kv_context *c1 = NULL, *c2 = NULL;
    REQUIRE_OK(kv_context_create(q.m, 128, &c1, &err), &err);
    REQUIRE_OK(kv_context_create(q.m, 128, &c2, &err), &err);
    const size_t nl = (size_t)128 * (size_t)hp->n_vocab;
    float *l1 = malloc(nl * sizeof(float)), *l2 = malloc(nl * sizeof(float));
    REQUIRE_OK(kv_forward(c1, ids, 128, 0, l1, 0, NULL, &err), &err);
    REQUIRE_OK(kv_forward(c2, ids, 128, 0, l2, 0, pool, &err), &err);
    CHECK(memcmp(l1, l2, nl * sizeof(float)) == 0);
    /* token by token (decoding) gives the same last row as the batch: the mask is the stored one */
    kv_context *c3 = NULL;
    REQUIRE_OK(kv_context_create(q.m, 128, &c3, &err), &err);
    float *l3 = malloc((size_t)hp->n_vocab * sizeof(float));
    REQUIRE_OK(kv_forward(c3, ids, 100, 0, NULL, KV_FORWARD_NO_LOGITS, pool, &err), &err);
    REQUIRE_OK(kv_forward(c3, ids + 100, 1, 100, l3, KV_FORWARD_LAST_ONLY, pool, &err), &err);
    double md = 0;
    for (int32_t v = 0; v < hp->n_vocab; v++) md = fmax(md, fabs((double)l3[v] - l1[(size_t)100 * hp->n_vocab + v]));
    CHECK_MSG(md < 1e-3, "incremental vs batch logits differ by %g", md);
    free(l1), free(l2), free(l3);
    kv_context_free(c1);
    kv_context_free(c2);
    kv_context_free(c3);
    free(ids);
    free(text);
    kv_tokenizer_free(tok);
    unload(&q);
    unload(&base);
    kv_pool_destroy(pool);
}

/* Copies the GGUF at src to dst with the outlier columns of `name` replaced by cols[0..n) (n < 0: key dropped)
 * and, when drop_outl, without NAME.llmint8_outl. */
static kv_status rewrite(const char *src, const char *dst, const char *name, const int32_t *cols, int64_t n,
                         int drop_outl, kv_error *err) {
    kv_gguf *g = NULL;
    kv_gguf_writer *w = NULL;
    kv_status st = kv_gguf_open(src, &g, err);
    if (st == KV_OK) st = kv_gguf_writer_create(&w, err);
    char key[256], outl[256];
    snprintf(key, sizeof key, "kvant.llmint8.%s.cols", name);
    snprintf(outl, sizeof outl, "%s.llmint8_outl", name);
    for (int64_t i = 0; st == KV_OK && i < kv_gguf_n_kv(g); i++) {
        const char *k = kv_gguf_kv_key(g, i);
        if (strcmp(k, key)) st = kv_gguf_writer_add_value(w, k, kv_gguf_kv_value(g, i), err);
        else if (n >= 0) st = kv_gguf_writer_add_arr(w, k, KV_GGUF_I32, cols, (uint64_t)n, err);
    }
    for (int64_t i = 0; st == KV_OK && i < kv_gguf_n_tensors(g); i++) {
        const kv_gguf_tensor *t = kv_gguf_tensor_at(g, i);
        if (drop_outl && !strcmp(t->name, outl)) continue;
        st = kv_gguf_writer_add_tensor(w, t->name, t->n_dims, t->shape, t->type, t->data, err);
    }
    if (st == KV_OK) st = kv_gguf_writer_write(w, dst, NULL, err);
    kv_gguf_writer_free(w);
    kv_gguf_close(g);
    return st;
}

KV_TEST(llmint8_proxy27m_threshold_zero_keeps_fp16_and_loader_checks) {
    char model[512], calib[1024], out[1024];
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model) || text_prefix("data/calib.txt", 6000, calib, sizeof calib))
        SKIP("proxy-27m or calib.txt absent");
    snprintf(out, sizeof out, "%s/t0.gguf", kv_test_tmpdir());
    kv_error err;
    REQUIRE_OK(quantize_llmint8(model, calib, "llm-int8:threshold=0", out, NULL, &err), &err);
    loaded base, q;
    REQUIRE_OK(load(model, &base, &err), &err);
    REQUIRE_OK(load(out, &q, &err), &err);
    /* every column is an outlier: the int8 part is empty (scale 0, codes 0) and the fp16 part holds the
     * weights exactly (bf16 -> fp16 is exact for this model's range) */
    const kv_hparams *hp = kv_model_get_hparams(q.m);
    const int64_t hp_n_embd = hp->n_embd; /* attn_output's inputs (n_head·head_dim = n_embd here) */
    int64_t mismatches = 0;
    for (int l = 0; l < hp->n_layer; l++)
        for (int i = 0; i < 7; i++) {
            const kv_weight *w = kv_model_weight(q.m, l, (kv_linear_id)i), *b = kv_model_weight(base.m, l, (kv_linear_id)i);
            REQUIRE(w->llmint8 && w->n_outliers == w->cols);
            float *row = malloc(sizeof(float) * (size_t)w->cols);
            for (int64_t r = 0; r < w->rows; r += 37) {
                const uint8_t *qr = (const uint8_t *)w->data + r * (4 + w->cols);
                float d;
                memcpy(&d, qr, 4);
                mismatches += d != 0.0f;
                const size_t rb = kv_format_row_bytes(&b->fmt, b->cols);
                b->fmt.dequantize(&b->fmt, (const uint8_t *)b->data + (size_t)r * rb, row, b->cols);
                for (int64_t j = 0; j < w->cols; j++)
                    mismatches += qr[4 + j] != 128 || w->outlier_w[r * w->cols + j] != half_round(row[j]);
            }
            free(row);
        }
    CHECK_EQ_INT(mismatches, 0);
    unload(&q);
    unload(&base);

    /* the loader refuses entries that disagree with each other, naming the tensor */
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/bad.gguf", kv_test_tmpdir());
    const char *name = "blk.0.attn_output.weight";
    const int64_t nout = hp_n_embd;
    kv_model_file *mf = NULL;
    int32_t *desc = malloc(sizeof(int32_t) * (size_t)nout), *asc = malloc(sizeof(int32_t) * (size_t)nout);
    for (int64_t k = 0; k < nout; k++) {
        desc[k] = (int32_t)(nout - 1 - k);
        asc[k] = (int32_t)k;
    }
    struct { const int32_t *cols; int64_t n; int drop; const char *msg; } cases[] = {
        {desc, nout, 0, "out of order"},
        {asc, 1, 0, "must be f16"},  /* the outlier tensor no longer matches the count */
        {asc, nout, 1, "is missing"},
        {NULL, 0, 1, NULL},          /* consistent: no outliers at all (plain int8 W8A8) loads */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        REQUIRE_OK(rewrite(out, bad, name, cases[i].cols, cases[i].n, cases[i].drop, &err), &err);
        kv_model *m = NULL;
        REQUIRE_OK(kv_model_open(bad, &mf, &err), &err);
        kv_status st = kv_model_load(mf, NULL, &m, &err);
        if (!cases[i].msg) {
            CHECK_OK(st, &err);
            const kv_weight *w = NULL;
            int layer;
            kv_linear_id which;
            if (st == KV_OK && kv_model_linear_by_name(m, name, &layer, &which) == 0) w = kv_model_weight(m, layer, which);
            CHECK(w && w->llmint8 && w->n_outliers == 0);
        } else {
            CHECK_MSG(st == KV_EFORMAT && strstr(err.message, cases[i].msg) && !strcmp(err.tensor, name),
                      "case %zu: %s (%s)", i, err.message, err.tensor);
        }
        kv_model_free(m);
        kv_model_close(mf);
    }
    free(desc);
    free(asc);
}

KV_TEST(llmint8_cli_options_and_report) {
    char model[512], calib[1024], args[4096], path[1024], *out = NULL;
    kv_test_shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model) || text_prefix("data/calib.txt", 6000, calib, sizeof calib))
        SKIP("proxy-27m or calib.txt absent");
    const char *dir = kv_test_tmpdir();
    snprintf(path, sizeof path, "%s/x.gguf", dir);
    const char *bad[][2] = {
        {"llm-int8:threshold=abc", "threshold=abc: needs a number >= 0"},
        {"llm-int8:threshold=-1", "threshold=-1: needs a number >= 0"},
        {"llm-int8:bogus", "unknown option 'bogus'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "quantize %s -o %s --method %s --calib %s --calib-tokens 512 --quiet", model, path,
                 bad[i][0], calib);
        int rc = kv_test_run_cli(args, &out);
        CHECK_MSG(rc == 2 && out && strstr(out, bad[i][1]), "rc %d: %s", rc, out ? out : "");
        free(out);
        CHECK(!kv_test_exists(path));
    }
    snprintf(args, sizeof args, "quantize %s -o %s --method llm-int8 --calib %s --calib-tokens 512 --out-format "
             "safetensors --quiet", model, path, calib);
    int rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc != 0 && out && strstr(out, "GGUF"), "rc %d: %s", rc, out ? out : "");
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s --method llm-int8 --format q4_0 --calib %s --calib-tokens 512 "
             "--quiet", model, path, calib);
    rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc != 0 && out && strstr(out, "int8_g0_sym_f32"), "rc %d: %s", rc, out ? out : "");
    free(out);
    CHECK(!kv_test_exists(path));
    /* a plain W8A8 run (no outliers) reports its per-tensor counts in the JSON */
    snprintf(args, sizeof args, "quantize %s -o %s --method llm-int8:threshold=1e30 --calib %s --calib-tokens 512 "
             "-t 2 --quiet --json", model, path, calib);
    rc = kv_test_run_cli(args, &out);
    CHECK_MSG(rc == 0 && out && strstr(out, "\"llmint8\"") && strstr(out, "\"outlier_columns_total\": 0") &&
              strstr(out, "\"blk.5.ffn_down.weight\""), "rc %d: %s", rc, out ? out : "");
    free(out);
}

