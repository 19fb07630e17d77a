/* test_quantize.c — the quantization pipeline: per-tensor policy (llama.cpp mixes, overrides, fallbacks),
 * imatrix files, quantize → GGUF → kv_model_open round trips, bad input. */
#include "test.h"
#include "../src/core/core.h"
#include "../src/algos/quantize.h"
#include "../src/io/json.h"
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* proxy-27m's shape: 6 layers, 8 heads, 4 kv heads (n_gqa 2), hidden 512, ffn 1536, vocab 8192 */
static kv_hparams proxy_hparams(void) {
    kv_hparams hp;
    memset(&hp, 0, sizeof hp);
    strcpy(hp.arch, "llama");
    hp.n_vocab = 8192, hp.n_embd = 512, hp.n_layer = 6, hp.n_head = 8, hp.n_head_kv = 4, hp.head_dim = 64;
    hp.n_ff = 1536;
    return hp;
}

static const char *pick(kv_test_ctx *T, const kv_policy *p, const kv_hparams *hp, const char *name) {
    static kv_policy_choice c;
    int64_t shape[2] = {512, 512};
    if (strstr(name, "ffn_down")) shape[0] = 512, shape[1] = 1536;
    if (strstr(name, "ffn_gate") || strstr(name, "ffn_up")) shape[0] = 1536;
    if (strstr(name, "attn_k") || strstr(name, "attn_v")) shape[0] = 256;
    if (!strcmp(name, "output.weight") || !strcmp(name, "token_embd.weight")) shape[0] = 8192;
    int nd = strstr(name, "norm") ? 1 : 2;
    if (nd == 1) shape[0] = 512;
    kv_error err;
    kv_status st = kv_policy_choose(p, hp, 1, name, nd, nd == 1 ? shape : shape, &c, &err);
    if (st != KV_OK) {
        CHECK_MSG(0, "kv_policy_choose(%s): %s", name, err.message);
        return "";
    }
    return c.format;
}

typedef struct expect_row {
    const char *tensor; /* %d = layer */
    const char *fmt[6]; /* per layer 0..5 */
} expect_row;

static void check_mix(kv_test_ctx *T, const char *mix, const expect_row *rows, int nrows, const char *embd,
                      const char *head) {
    kv_policy p;
    kv_error err;
    kv_hparams hp = proxy_hparams();
    REQUIRE_OK(kv_policy_init(&p, mix, &err), &err);
    CHECK_STR(pick(T, &p, &hp, "token_embd.weight"), embd);
    CHECK_STR(pick(T, &p, &hp, "output.weight"), head);
    CHECK_STR(pick(T, &p, &hp, "output_norm.weight"), "f32");
    for (int r = 0; r < nrows; r++)
        for (int l = 0; l < 6; l++) {
            char name[64];
            snprintf(name, sizeof name, rows[r].tensor, l);
            const char *got = pick(T, &p, &hp, name);
            CHECK_MSG(!strcmp(got, rows[r].fmt[l]), "%s %s: got %s, llama.cpp picks %s", mix, name, got, rows[r].fmt[l]);
        }
    kv_policy_free(&p);
}

/* The expected maps are llama.cpp's llama_tensor_get_type worked out for 6 layers and n_gqa = 2:
 * use_more_bits(i, 6) is true for i = 2 and 5. */
KV_TEST(policy_q4_k_m_matches_llama_cpp) {
    static const expect_row rows[] = {
        {"blk.%d.attn_q.weight", {"q4_k", "q4_k", "q4_k", "q4_k", "q4_k", "q4_k"}},
        {"blk.%d.attn_k.weight", {"q4_k", "q4_k", "q4_k", "q4_k", "q4_k", "q4_k"}},
        {"blk.%d.attn_v.weight", {"q4_k", "q4_k", "q6_k", "q4_k", "q4_k", "q6_k"}},
        {"blk.%d.attn_output.weight", {"q4_k", "q4_k", "q4_k", "q4_k", "q4_k", "q4_k"}},
        {"blk.%d.ffn_gate.weight", {"q4_k", "q4_k", "q4_k", "q4_k", "q4_k", "q4_k"}},
        {"blk.%d.ffn_up.weight", {"q4_k", "q4_k", "q4_k", "q4_k", "q4_k", "q4_k"}},
        {"blk.%d.ffn_down.weight", {"q4_k", "q4_k", "q6_k", "q4_k", "q4_k", "q6_k"}},
        {"blk.%d.attn_norm.weight", {"f32", "f32", "f32", "f32", "f32", "f32"}},
    };
    check_mix(T, "q4_k_m", rows, 8, "q4_k", "q6_k");
}

KV_TEST(policy_q3_k_m_q2_k_q5_k_m_match_llama_cpp) {
    static const expect_row q3[] = {
        {"blk.%d.attn_q.weight", {"q3_k", "q3_k", "q3_k", "q3_k", "q3_k", "q3_k"}},
        {"blk.%d.attn_v.weight", {"q5_k", "q5_k", "q4_k", "q4_k", "q4_k", "q4_k"}},
        {"blk.%d.attn_output.weight", {"q4_k", "q4_k", "q4_k", "q4_k", "q4_k", "q4_k"}},
        {"blk.%d.ffn_down.weight", {"q4_k", "q4_k", "q4_k", "q4_k", "q4_k", "q4_k"}},
        {"blk.%d.ffn_up.weight", {"q3_k", "q3_k", "q3_k", "q3_k", "q3_k", "q3_k"}},
    };
    check_mix(T, "q3_k_m", q3, 5, "q3_k", "q6_k");
    static const expect_row q2[] = {
        {"blk.%d.attn_q.weight", {"q2_k", "q2_k", "q2_k", "q2_k", "q2_k", "q2_k"}},
        {"blk.%d.attn_v.weight", {"q3_k", "q3_k", "q3_k", "q3_k", "q3_k", "q3_k"}},
        {"blk.%d.attn_output.weight", {"q3_k", "q3_k", "q3_k", "q3_k", "q3_k", "q3_k"}},
        {"blk.%d.ffn_down.weight", {"q3_k", "q3_k", "q3_k", "q3_k", "q3_k", "q3_k"}},
        {"blk.%d.ffn_gate.weight", {"q2_k", "q2_k", "q2_k", "q2_k", "q2_k", "q2_k"}},
    };
    check_mix(T, "q2_k", q2, 5, "q2_k", "q6_k");
    static const expect_row q5[] = {
        {"blk.%d.attn_v.weight", {"q5_k", "q5_k", "q6_k", "q5_k", "q5_k", "q6_k"}},
        {"blk.%d.ffn_down.weight", {"q5_k", "q5_k", "q6_k", "q5_k", "q5_k", "q6_k"}},
        {"blk.%d.attn_output.weight", {"q5_k", "q5_k", "q5_k", "q5_k", "q5_k", "q5_k"}},
    };
    check_mix(T, "q5_k_m", q5, 3, "q5_k", "q6_k");
    static const expect_row q8[] = {
        {"blk.%d.attn_v.weight", {"q8_0", "q8_0", "q8_0", "q8_0", "q8_0", "q8_0"}},
    };
    check_mix(T, "q8_0", q8, 1, "q8_0", "q8_0"); /* q8_0 keeps its head at q8_0 */
}

KV_TEST(policy_non_mix_formats_are_uniform) {
    kv_policy p;
    kv_error err;
    kv_hparams hp = proxy_hparams();
    REQUIRE_OK(kv_policy_init(&p, "Q4_K", &err), &err);
    CHECK_EQ_INT(p.ftype, -1);
    CHECK_STR(pick(T, &p, &hp, "output.weight"), "q4_k");
    CHECK_STR(pick(T, &p, &hp, "blk.2.attn_v.weight"), "q4_k");
    CHECK_STR(pick(T, &p, &hp, "blk.0.ffn_norm.weight"), "f32");
    kv_policy_free(&p);
    /* --pure on a mix: every quantizable tensor gets the base type */
    REQUIRE_OK(kv_policy_init(&p, "q4_k_m", &err), &err);
    p.pure = 1;
    CHECK_STR(pick(T, &p, &hp, "output.weight"), "q4_k");
    CHECK_STR(pick(T, &p, &hp, "blk.2.ffn_down.weight"), "q4_k");
    kv_policy_free(&p);
}

KV_TEST(policy_overrides_last_match_wins) {
    kv_policy p;
    kv_error err;
    kv_hparams hp = proxy_hparams();
    REQUIRE_OK(kv_policy_init(&p, "q4_k_m", &err), &err);
    REQUIRE_OK(kv_policy_add_override(&p, "ffn_(up|gate)=q8_0", &err), &err);
    REQUIRE_OK(kv_policy_add_override(&p, "^blk\\.1\\.ffn_up=q5_k", &err), &err);
    REQUIRE_OK(kv_policy_add_override(&p, "token_embd|^output\\.=bf16", &err), &err);
    CHECK_STR(pick(T, &p, &hp, "blk.0.ffn_up.weight"), "q8_0");
    CHECK_STR(pick(T, &p, &hp, "blk.0.ffn_gate.weight"), "q8_0");
    CHECK_STR(pick(T, &p, &hp, "blk.1.ffn_up.weight"), "q5_k");
    CHECK_STR(pick(T, &p, &hp, "blk.1.ffn_down.weight"), "q4_k");
    CHECK_STR(pick(T, &p, &hp, "token_embd.weight"), "bf16");
    CHECK_STR(pick(T, &p, &hp, "output.weight"), "bf16");
    CHECK_STR(pick(T, &p, &hp, "output_norm.weight"), "f32"); /* norms are never quantized */
    /* bad overrides: no '=', unknown format, bad regex */
    CHECK(kv_policy_add_override(&p, "ffn_up", &err) == KV_EINVAL);
    CHECK(kv_policy_add_override(&p, "ffn_up=q9_9", &err) == KV_EINVAL);
    CHECK(strstr(err.message, "q9_9") != NULL);
    CHECK(kv_policy_add_override(&p, "ffn_(up=q8_0", &err) == KV_EINVAL);
    CHECK(strstr(err.message, "regular expression") != NULL);
    kv_policy_free(&p);
}

KV_TEST(policy_unknown_format_lists_valid_ones) {
    kv_policy p;
    kv_error err;
    CHECK(kv_policy_init(&p, "q4_k_x", &err) == KV_EINVAL);
    CHECK(strstr(err.message, "q4_k_x") != NULL);
    CHECK(strstr(err.message, "q4_k_m") != NULL); /* the mixes are listed */
    CHECK(strstr(err.message, "q4_0") != NULL);   /* and the ggml types */
    kv_policy_free(&p);
}

KV_TEST(policy_fallback_for_rows_not_divisible) {
    /* stories260K: dim 64, hidden 172, tied embeddings (token_embd doubles as the head) */
    kv_policy p;
    kv_policy_choice c;
    kv_error err;
    kv_hparams hp = proxy_hparams();
    hp.n_embd = 64, hp.n_ff = 172, hp.n_layer = 5, hp.n_vocab = 512;
    REQUIRE_OK(kv_policy_init(&p, "q4_k_m", &err), &err);
    int64_t down[2] = {64, 172}, up[2] = {172, 64}, embd[2] = {512, 64};
    REQUIRE_OK(kv_policy_choose(&p, &hp, 0, "blk.0.ffn_down.weight", 2, down, &c, &err), &err);
    /* q6_k (use_more_bits layer 0? no: n/8 = 0) -> q4_k; 172 % 256 != 0 -> q5_0 (block 32) -> 172 % 32 != 0 -> f16 */
    CHECK(c.fallback);
    CHECK_STR(c.format, "f16");
    CHECK(strstr(c.note, "172") && strstr(c.note, "blk.0.ffn_down.weight"));
    REQUIRE_OK(kv_policy_choose(&p, &hp, 0, "blk.0.ffn_up.weight", 2, up, &c, &err), &err);
    CHECK(c.fallback);
    CHECK_STR(c.format, "q5_0"); /* q4_k's llama.cpp fallback: 64 % 32 == 0 */
    /* tied embeddings: token_embd gets the output rule, and 64 % 256 != 0 gives q8_0 (not a fallback) */
    REQUIRE_OK(kv_policy_choose(&p, &hp, 0, "token_embd.weight", 2, embd, &c, &err), &err);
    CHECK_STR(c.format, "q8_0");
    CHECK(!c.fallback);
    kv_policy_free(&p);
}

KV_TEST(imatrix_legacy_file_round_trip) {
    kv_imatrix *im, *back;
    kv_error err;
    REQUIRE_OK(kv_imatrix_create(&im, &err), &err);
    float x[3 * 4];
    for (int i = 0; i < 12; i++) x[i] = (float)(i % 5) - 1.5f;
    REQUIRE_OK(kv_imatrix_accumulate(im, "blk.0.attn_q.weight", x, 3, 4, &err), &err);
    kv_imatrix_end_chunk(im);
    REQUIRE_OK(kv_imatrix_accumulate(im, "blk.0.attn_q.weight", x, 2, 4, &err), &err);
    REQUIRE_OK(kv_imatrix_accumulate(im, "output.weight", x, 1, 12, &err), &err);
    kv_imatrix_end_chunk(im);
    kv_imatrix_set_dataset(im, "calib.txt");
    CHECK(kv_imatrix_accumulate(im, "output.weight", x, 3, 4, &err) == KV_EINVAL); /* width mismatch */
    int64_t nval = 0;
    const float *v = kv_imatrix_find(im, "blk.0.attn_q.weight", &nval);
    REQUIRE(v && nval == 4);
    for (int j = 0; j < 4; j++) {
        double s = 0;
        for (int t = 0; t < 3; t++) s += (double)x[t * 4 + j] * x[t * 4 + j];
        for (int t = 0; t < 2; t++) s += (double)x[t * 4 + j] * x[t * 4 + j];
        CHECK_NEAR(v[j], s / 5, 1e-6);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/im.dat", kv_test_tmpdir());
    REQUIRE_OK(kv_imatrix_save(im, path, &err), &err);
    REQUIRE_OK(kv_imatrix_load(path, &back, &err), &err);
    CHECK_EQ_INT(kv_imatrix_n_entries(back), 2);
    CHECK_EQ_INT(kv_imatrix_chunks(back), 2);
    for (int64_t i = 0; i < kv_imatrix_n_entries(im); i++) {
        const char *name = kv_imatrix_entry_name(im, i);
        int64_t n1 = 0, n2 = 0;
        const float *a = kv_imatrix_find(im, name, &n1), *b = kv_imatrix_find(back, name, &n2);
        REQUIRE(b && n1 == n2);
        for (int64_t j = 0; j < n1; j++) CHECK_NEAR(a[j], b[j], 1e-6 * (1 + a[j]));
    }
    /* llama.cpp's GGUF imatrix: raw sums and counts, read back to the same means */
    char gpath[512];
    snprintf(gpath, sizeof gpath, "%s/im.gguf", kv_test_tmpdir());
    REQUIRE_OK(kv_imatrix_save(im, gpath, &err), &err);
    kv_imatrix *gb = NULL;
    REQUIRE_OK(kv_imatrix_load(gpath, &gb, &err), &err);
    CHECK_EQ_INT(kv_imatrix_n_entries(gb), 2);
    CHECK_EQ_INT(kv_imatrix_chunks(gb), 2);
    int64_t gn = 0;
    const float *gv = kv_imatrix_find(gb, "blk.0.attn_q.weight", &gn);
    REQUIRE(gv && gn == 4);
    for (int j = 0; j < 4; j++) CHECK_NEAR(gv[j], v[j], 1e-6 * (1 + v[j]));
    kv_gguf *g = NULL;
    REQUIRE_OK(kv_gguf_open(gpath, &g, &err), &err);
    const char *gt = NULL;
    CHECK_OK(kv_gguf_get_str(g, "general.type", &gt, &err), &err);
    CHECK_STR(gt, "imatrix");
    const kv_gguf_tensor *cnt = kv_gguf_find_tensor(g, "blk.0.attn_q.weight.counts");
    REQUIRE(cnt && cnt->type == KV_TYPE_F32);
    CHECK_NEAR(kv_rd_f32(cnt->data), 5, 0); /* 3 + 2 tokens */
    kv_gguf_close(g);
    kv_imatrix_free(gb);
    /* the exact llama.cpp layout: int32 count, int32 len, name, int32 ncall (= chunks), int32 nval, values·ncall */
    size_t size = 0;
    uint8_t *bytes = kv_test_read_file(path, &size);
    REQUIRE(bytes && size > 40);
    CHECK_EQ_INT(kv_rd_u32(bytes), 2);
    CHECK_EQ_INT(kv_rd_u32(bytes + 4), strlen("blk.0.attn_q.weight"));
    CHECK(!memcmp(bytes + 8, "blk.0.attn_q.weight", 19));
    CHECK_EQ_INT(kv_rd_u32(bytes + 27), 2);
    CHECK_EQ_INT(kv_rd_u32(bytes + 31), 4);
    CHECK_NEAR(kv_rd_f32(bytes + 35), v[0] * 2, 1e-5);
    CHECK(!memcmp(bytes + size - 9, "calib.txt", 9));
    /* truncated and corrupt files are rejected with the offset */
    REQUIRE(kv_test_write_file(path, bytes, 30) == 0);
    kv_imatrix *bad = NULL;
    kv_error_clear(&err);
    CHECK(kv_imatrix_load(path, &bad, &err) == KV_EFORMAT);
    CHECK(bad == NULL);
    CHECK(strstr(err.file, "im.dat") != NULL);
    kv_wr_u32(bytes + 31, 0x7fffffff);
    REQUIRE(kv_test_write_file(path, bytes, size) == 0);
    kv_error_clear(&err);
    CHECK(kv_imatrix_load(path, &bad, &err) == KV_EFORMAT);
    CHECK_EQ_INT(err.offset, 31);
    free(bytes);
    kv_imatrix_free(back);
    kv_imatrix_free(im);
}

/* ---- the pipeline ---- */

static const char *shared(char *buf, size_t n, const char *rel) { return kv_test_shared(buf, n, rel); }

/* The bytes the pipeline must write for one tensor: the source dequantized to f32, quantized by fmt. */
static void *expected_bytes(const kv_tensor *src, const kv_format *fmt, const float *importance, size_t *nbytes) {
    kv_format sf;
    kv_error err;
    if (kv_format_from_type(src->type, &sf, &err) != KV_OK) return NULL;
    int64_t cols = src->shape[src->n_dims - 1], rows = kv_tensor_nelements(src) / cols;
    size_t drb = kv_format_row_bytes(fmt, cols);
    float *w = malloc((size_t)(rows * cols) * sizeof(float));
    void *out = malloc(drb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) sf.dequantize(&sf, kv_tensor_row_bytes(src, r), w + r * cols, cols);
    kv_status st = fmt->quantize(fmt, w, out, rows, cols, importance, &err);
    free(w);
    if (st != KV_OK) {
        free(out);
        return NULL;
    }
    *nbytes = drb * (size_t)rows;
    return out;
}

/* Every tensor of OUT equals the source quantized directly with the format OUT records (q/k rows come back in
 * Hugging Face order through the reader, so this also checks the llama.cpp row permutation both ways). */
static void check_same_bytes(kv_test_ctx *T, const char *model, const char *out, int *n_kvant_types) {
    kv_model_file *src = NULL, *q = NULL;
    kv_error err;
    REQUIRE_OK(kv_model_open(model, &src, &err), &err);
    REQUIRE_OK(kv_model_open(out, &q, &err), &err);
    CHECK_EQ_INT(kv_model_n_tensors(q), kv_model_n_tensors(src));
    int checked = 0;
    for (int64_t i = 0; i < kv_model_n_tensors(q); i++) {
        const kv_tensor *t = kv_model_tensor(q, i), *s = kv_model_find(src, t->name);
        REQUIRE(s != NULL);
        CHECK_EQ_INT(t->n_dims, s->n_dims);
        CHECK(!memcmp(t->shape, s->shape, sizeof t->shape));
        if (t->n_dims < 2) {
            CHECK_EQ_INT(t->type, KV_TYPE_F32); /* norms and biases are f32 */
            continue;
        }
        kv_format fmt;
        if (t->type >= KV_TYPE_KVANT_BASE) {
            /* kvant-only type: its format is named by metadata; the model loader resolves it */
            kv_model *m = NULL;
            (*n_kvant_types)++;
            REQUIRE_OK(kv_model_load(q, NULL, &m, &err), &err);
            int layer;
            kv_linear_id which;
            REQUIRE(kv_model_linear_by_name(m, t->name, &layer, &which) == 0);
            const kv_weight *w = layer < 0 ? kv_model_embedding(m) : kv_model_weight(m, layer, which);
            fmt = w->fmt;
            kv_model_free(m);
        } else
            REQUIRE_OK(kv_format_from_type(t->type, &fmt, &err), &err);
        /* the bytes in kvant's row order (GGUF q/k matrices are stored in llama.cpp's) */
        uint8_t *got = malloc(KV_MAX(t->nbytes, 1));
        REQUIRE(got);
        REQUIRE_OK(kv_tensor_copy_bytes(t, got, &err), &err);
        if (t->type == s->type) {
            uint8_t *had = malloc(KV_MAX(s->nbytes, 1));
            REQUIRE(had);
            REQUIRE_OK(kv_tensor_copy_bytes(s, had, &err), &err);
            CHECK(t->nbytes == s->nbytes && !memcmp(got, had, t->nbytes));
            free(had);
            free(got);
            continue;
        }
        size_t n = 0;
        void *want = expected_bytes(s, &fmt, NULL, &n);
        REQUIRE(want != NULL);
        CHECK_MSG(n == t->nbytes && !memcmp(want, got, n), "%s (%s): bytes differ from direct quantization", t->name, fmt.name);
        free(want);
        free(got);
        checked++;
    }
    CHECK(checked > 0);
    kv_model_close(q);
    kv_model_close(src);
}

KV_TEST(quantize_q4_k_m_gguf_same_bytes_stories260k) {
    /* llama2.c source (fp32, tied embeddings): k-quants, their fallbacks (q5_0, q8_0, f16) and the head rule */
    char model[512], out[600];
    shared(model, sizeof model, "models/stories260K/stories260K.bin");
    if (!kv_test_exists(model)) SKIP("stories260K not found");
    snprintf(out, sizeof out, "%s/s.gguf", kv_test_tmpdir());
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    kv_quantize_report rep;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_quantize_model(model, out, &o, &rep, &err), &err);
    CHECK_EQ_INT(rep.n_tensors, 47);
    CHECK_EQ_INT(rep.n_fallback, 35);
    int kt = 0;
    check_same_bytes(T, model, out, &kt);
    kv_model_file *q = NULL;
    REQUIRE_OK(kv_model_open(out, &q, &err), &err);
    CHECK_EQ_INT(kv_model_find(q, "token_embd.weight")->type, KV_TYPE_Q8_0); /* tied: the head's rule */
    CHECK_EQ_INT(kv_model_find(q, "blk.0.ffn_down.weight")->type, KV_TYPE_F16);
    CHECK_EQ_INT(kv_model_find(q, "blk.0.ffn_up.weight")->type, KV_TYPE_Q5_0);
    kv_model_close(q);
}

KV_TEST(quantize_q4_k_m_gguf_same_bytes_and_metadata) {
    char model[512], out[600];
    shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    /* under sanitizers only layer 2 and the head are quantized (k-quants of 27M parameters twice are slow) */
    const int light = getenv("KVANT_SANITIZED") != NULL;
    const char *ov[] = {"^blk\\.[013-9]\\.|token_embd=bf16"};
    snprintf(out, sizeof out, "%s/q4_k_m.gguf", kv_test_tmpdir());
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    if (light) o.overrides = ov, o.n_overrides = 1;
    kv_quantize_report rep;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_quantize_model(model, out, &o, &rep, &err), &err);
    CHECK_EQ_INT(rep.n_tensors, 57);
    CHECK_EQ_INT(rep.n_quantized, light ? 8 : 44); /* 6 × 7 linears + embedding + head */
    CHECK_EQ_INT(rep.n_fallback, 0);
    CHECK(light ? rep.bpw > 10 && rep.bpw < 16 : rep.bpw > 4.5 && rep.bpw < 5.5);
    int kt = 0;
    check_same_bytes(T, model, out, &kt);
    CHECK_EQ_INT(kt, 0);
    /* llama.cpp's metadata: file type Q4_K_M (15), quantization version 2, hparams and tokenizer */
    kv_gguf *g = NULL;
    REQUIRE_OK(kv_gguf_open(out, &g, &err), &err);
    uint32_t v = 0;
    CHECK_OK(kv_gguf_get_u32(g, "general.file_type", &v, &err), &err);
    CHECK_EQ_INT(v, 15);
    CHECK_OK(kv_gguf_get_u32(g, "general.quantization_version", &v, &err), &err);
    CHECK_EQ_INT(v, 2);
    CHECK_OK(kv_gguf_get_u32(g, "llama.block_count", &v, &err), &err);
    CHECK_EQ_INT(v, 6);
    CHECK_OK(kv_gguf_get_u32(g, "llama.attention.head_count_kv", &v, &err), &err);
    CHECK_EQ_INT(v, 4);
    kv_gguf_value toks;
    CHECK_OK(kv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, &err), &err);
    CHECK_EQ_INT(toks.n, 8192);
    const char *s = NULL;
    CHECK_OK(kv_gguf_get_str(g, "tokenizer.ggml.model", &s, &err), &err);
    CHECK_STR(s, "llama");
    /* llama-quantize's tensor order: by layer, then name */
    const kv_gguf_tensor *t0 = kv_gguf_tensor_at(g, 0), *t3 = kv_gguf_tensor_at(g, 3);
    CHECK_STR(t0->name, "output.weight");
    CHECK_STR(t3->name, "blk.0.attn_k.weight");
    /* q4_k_m's choices reached the file */
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "blk.2.attn_v.weight")->type, KV_TYPE_Q6_K);
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "blk.1.attn_v.weight")->type, light ? KV_TYPE_BF16 : KV_TYPE_Q4_K);
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "blk.2.attn_q.weight")->type, KV_TYPE_Q4_K);
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "output.weight")->type, KV_TYPE_Q6_K);
    kv_gguf_close(g);
}

KV_TEST(quantize_kvant_type_round_trip) {
    char model[512], out[600];
    shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    snprintf(out, sizeof out, "%s/int4.gguf", kv_test_tmpdir());
    const char *ov[] = {"token_embd|^output\\.=bf16"};
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    o.format = "int4_g128_asym";
    o.overrides = ov;
    o.n_overrides = 1;
    kv_quantize_report rep;
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_quantize_model(model, out, &o, &rep, &err), &err);
    int kt = 0;
    check_same_bytes(T, model, out, &kt);
    CHECK_EQ_INT(kt, 42); /* every decoder linear is a kvant type */
    /* the embedding and head stayed bf16: byte-identical to the source (checked above via same type) */
    kv_model_file *q = NULL;
    REQUIRE_OK(kv_model_open(out, &q, &err), &err);
    CHECK_EQ_INT(kv_model_find(q, "output.weight")->type, KV_TYPE_BF16);
    kv_model_close(q);
}

KV_TEST(quantize_deterministic_across_threads) {
    char model[512], a[600], b[600];
    shared(model, sizeof model, "models/stories260K/stories260K.bin");
    if (!kv_test_exists(model)) SKIP("stories260K not found");
    snprintf(a, sizeof a, "%s/t1.gguf", kv_test_tmpdir());
    snprintf(b, sizeof b, "%s/t2.gguf", kv_test_tmpdir());
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    o.format = "q8_0";
    o.transforms = "quarot,rht:4";
    o.seed = 3;
    kv_error err;
    kv_error_clear(&err);
    o.pool = kv_pool_create(1);
    REQUIRE_OK(kv_quantize_model(model, a, &o, NULL, &err), &err);
    kv_pool_destroy(o.pool);
    o.pool = kv_pool_create(3);
    REQUIRE_OK(kv_quantize_model(model, b, &o, NULL, &err), &err);
    kv_pool_destroy(o.pool);
    size_t na = 0, nb = 0;
    void *da = kv_test_read_file(a, &na), *db = kv_test_read_file(b, &nb);
    REQUIRE(da && db);
    CHECK(na == nb && !memcmp(da, db, na));
    free(da);
    free(db);
    /* another seed gives other rotations */
    o.seed = 4;
    o.pool = NULL;
    REQUIRE_OK(kv_quantize_model(model, b, &o, NULL, &err), &err);
    db = kv_test_read_file(b, &nb);
    da = kv_test_read_file(a, &na);
    CHECK(na == nb && memcmp(da, db, na) != 0);
    free(da);
    free(db);
}

KV_TEST(quantize_cli_summary_fallbacks_and_json) {
    char model[512], args[1400], *out = NULL;
    shared(model, sizeof model, "models/stories260K/stories260K.bin");
    if (!kv_test_exists(model)) SKIP("stories260K not found");
    snprintf(args, sizeof args, "quantize %s -o %s/s.gguf --quiet", model, kv_test_tmpdir());
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    /* dim 172 is no multiple of q4_k's 256 nor q5_0's 32: llama.cpp falls back to f16, and says so */
    CHECK(strstr(out, "fallback") && strstr(out, "blk.0.ffn_down.weight") && strstr(out, "172") && strstr(out, "f16"));
    CHECK(strstr(out, "47 tensors") && strstr(out, "bits/weight"));
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s/s.gguf --quiet --json --format q8_0 --override ffn_down=f16", model, kv_test_tmpdir());
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK(strstr(out, "\"tensors\": 47") && strstr(out, "\"fallbacks\": 0") && strstr(out, "\"bits_per_weight\""));
    free(out);
    CHECK_EQ_INT(kv_test_run_cli("quantize --help", &out), 0);
    CHECK(strstr(out, "--transform") && strstr(out, "--override"));
    free(out);
}

KV_TEST(quantize_cli_bad_input) {
    char model[512], args[1400], path[700], *out = NULL;
    shared(model, sizeof model, "models/stories260K/stories260K.bin");
    if (!kv_test_exists(model)) SKIP("stories260K not found");
    const char *dir = kv_test_tmpdir();
    static const struct { const char *extra, *want1, *want2; int rc; } cases[] = {
        {"--format q4_k_x", "q4_k_x", "q4_k_m", 2},                      /* unknown format: lists mixes and types */
        {"--transform rotate", "rotate", "quarot", 2},                   /* unknown transform: lists the valid ones */
        {"--transform fold-norms:3", "fold-norms:3", "fold-norms,", 2},  /* fold-norms takes no argument */
        {"--format q4_0 --transform prescale", "prescale", "MX", 2},     /* prescale without an MX format */
        {"--transform smoothquant", "smoothquant", "--calib", 2},       /* smoothquant without calibration text */
        {"--method foo", "foo", "rtn", 2},                               /* unknown method */
        {"--act int3", "int3", "mxfp4", 2},                              /* unknown activation format */
        {"--override 'ffn_(=q8_0'", "regular expression", "ffn_(", 2},   /* bad regex */
        {"--out-format onnx", "onnx", "safetensors", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "%s/bad%zu.gguf", dir, i);
        snprintf(args, sizeof args, "quantize %s -o %s %s", model, path, cases[i].extra);
        int rc = kv_test_run_cli(args, &out);
        CHECK_MSG(rc == cases[i].rc, "%s: exit %d, output: %s", cases[i].extra, rc, out);
        CHECK_MSG(strstr(out, cases[i].want1) && strstr(out, cases[i].want2), "%s: %s", cases[i].extra, out);
        CHECK_MSG(!kv_test_exists(path), "%s left %s", cases[i].extra, path);
        free(out);
    }
    /* output in a missing directory: clear error naming it, nothing written */
    snprintf(args, sizeof args, "quantize %s -o %s/no/such/dir/out.gguf", model, dir);
    CHECK(kv_test_run_cli(args, &out) != 0);
    CHECK(strstr(out, "no/such/dir") && strstr(out, "does not exist"));
    free(out);
    /* a model that is not there */
    snprintf(args, sizeof args, "quantize %s/missing.bin -o %s/x.gguf", dir, dir);
    CHECK(kv_test_run_cli(args, &out) != 0);
    CHECK(strstr(out, "missing.bin") != NULL);
    free(out);
}

KV_TEST(quantize_disk_full_leaves_no_file) {
    char model[512], out[600];
    shared(model, sizeof model, "models/proxy-27m");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    /* this test runs in its own child process: a 1 MiB file-size limit makes every bigger write fail with
     * EFBIG (SIGXFSZ ignored) like a full disk */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {1 << 20, 1 << 20};
    REQUIRE(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    snprintf(out, sizeof out, "%s/full.gguf", kv_test_tmpdir());
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    o.format = "q8_0";
    kv_error err;
    kv_error_clear(&err);
    kv_status st = kv_quantize_model(model, out, &o, NULL, &err);
    CHECK(st == KV_EIO);
    CHECK(strstr(err.message, "full.gguf") || strstr(err.file, "full.gguf"));
    CHECK(!kv_test_exists(out));
    /* no temporary file either */
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c full", kv_test_tmpdir());
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = -1;
        pclose(p);
    }
    CHECK_EQ_INT(n, 0);
}

KV_TEST(quantize_imatrix_file_and_calibration) {
    char model[512], calib[512], args[2400], *out = NULL;
    shared(model, sizeof model, "models/proxy-27m");
    shared(calib, sizeof calib, "data/calib.txt");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    const char *dir = kv_test_tmpdir();
    snprintf(args, sizeof args, "imatrix %s --calib %s --ctx 64 --chunks 4 -o %s/im.dat --quiet", model, calib, dir);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK(strstr(out, "43 entries") != NULL); /* 6 × 7 linears + the head */
    free(out);
    char path[600];
    snprintf(path, sizeof path, "%s/im.dat", dir);
    kv_imatrix *im = NULL;
    kv_error err;
    REQUIRE_OK(kv_imatrix_load(path, &im, &err), &err);
    CHECK_EQ_INT(kv_imatrix_chunks(im), 4);
    int64_t nval = 0;
    const float *v = kv_imatrix_find(im, "blk.3.ffn_down.weight", &nval);
    REQUIRE(v && nval == 1536);
    double sum = 0;
    for (int64_t j = 0; j < nval; j++) sum += v[j];
    CHECK(sum > 0 && isfinite(sum));
    kv_imatrix_free(im);
    /* with --imatrix the k-quants use the importance: other bytes than without */
    /* only blk.3.ffn_down is quantized (the rest stays bf16) to keep the test fast */
    const char *only = "--override '.=bf16' --override 'blk\\.3\\.ffn_down=q4_k'";
    snprintf(args, sizeof args, "quantize %s -o %s/a.gguf --format q4_k --quiet --imatrix %s/im.dat %s", model, dir, dir, only);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    free(out);
    snprintf(args, sizeof args, "quantize %s -o %s/b.gguf --format q4_k --quiet %s", model, dir, only);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    free(out);
    kv_model_file *fa = NULL, *fb = NULL;
    snprintf(path, sizeof path, "%s/a.gguf", dir);
    REQUIRE_OK(kv_model_open(path, &fa, &err), &err);
    snprintf(path, sizeof path, "%s/b.gguf", dir);
    REQUIRE_OK(kv_model_open(path, &fb, &err), &err);
    const kv_tensor *ta = kv_model_find(fa, "blk.3.ffn_down.weight"), *tb = kv_model_find(fb, "blk.3.ffn_down.weight");
    REQUIRE(ta && tb && ta->nbytes == tb->nbytes);
    CHECK_EQ_INT(ta->type, KV_TYPE_Q4_K);
    CHECK(memcmp(ta->data, tb->data, ta->nbytes) != 0);
    CHECK_EQ_INT(kv_model_find(fa, "blk.3.ffn_up.weight")->type, KV_TYPE_BF16);
    kv_model_close(fa);
    kv_model_close(fb);
    /* an imatrix is in the unrotated basis: refused together with rotations */
    snprintf(args, sizeof args, "quantize %s -o %s/c.gguf --transform rht --imatrix %s/im.dat", model, dir, dir);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 2);
    CHECK(strstr(out, "--calib") != NULL);
    free(out);
    /* calibration text shorter than requested: error naming both numbers */
    snprintf(path, sizeof path, "%s/short.txt", dir);
    REQUIRE(kv_test_write_file(path, "a few words of text", 19) == 0);
    snprintf(args, sizeof args, "quantize %s -o %s/d.gguf --calib %s --calib-tokens 1024", model, dir, path);
    CHECK(kv_test_run_cli(args, &out) != 0);
    CHECK(strstr(out, "1024") && strstr(out, "fewer"));
    CHECK(!kv_test_exists(path) || 1);
    free(out);
}

KV_TEST(quantize_eval_table_and_recipe) {
    char model[512], text[512], args[2400], *out = NULL;
    shared(model, sizeof model, "models/proxy-27m");
    shared(text, sizeof text, "data/heldout.txt");
    if (!kv_test_exists(model)) SKIP("proxy-27m not found");
    const char *dir = kv_test_tmpdir();
    char recipe[600];
    snprintf(recipe, sizeof recipe, "%s/r.json", dir);
    const char *json = "{\"format\": \"q8_0\", \"overrides\": [\"ffn_down=q4_0\"], \"seed\": 5}";
    REQUIRE(kv_test_write_file(recipe, json, strlen(json)) == 0);
    snprintf(args, sizeof args, "quantize %s -o %s/e.gguf --recipe %s --eval %s --ctx 64 --chunks 2 --quiet", model,
             dir, recipe, text);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK(strstr(out, "| model | tensors (MiB) | bits/weight | PPL | ΔPPL | KLD mean | top-1 agree |") != NULL);
    CHECK(strstr(out, "| base |") && strstr(out, "| q8_0 |"));
    free(out);
    char path[600];
    snprintf(path, sizeof path, "%s/e.gguf", dir);
    kv_model_file *q = NULL;
    kv_error err;
    REQUIRE_OK(kv_model_open(path, &q, &err), &err);
    CHECK_EQ_INT(kv_model_find(q, "blk.0.ffn_down.weight")->type, KV_TYPE_Q4_0); /* recipe override */
    CHECK_EQ_INT(kv_model_find(q, "blk.0.ffn_up.weight")->type, KV_TYPE_Q8_0);
    kv_model_close(q);
    /* an unknown recipe key is an error */
    json = "{\"formatt\": \"q8_0\"}";
    REQUIRE(kv_test_write_file(recipe, json, strlen(json)) == 0);
    snprintf(args, sizeof args, "quantize %s -o %s/f.gguf --recipe %s", model, dir, recipe);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 2);
    CHECK(strstr(out, "formatt") != NULL);
    free(out);
}

KV_TEST(quantize_safetensors_output_layout) {
    char model[512], st[600], gg[600];
    shared(model, sizeof model, "models/stories260K/stories260K.bin");
    if (!kv_test_exists(model)) SKIP("stories260K not found");
    snprintf(st, sizeof st, "%s/q.safetensors", kv_test_tmpdir());
    snprintf(gg, sizeof gg, "%s/q.gguf", kv_test_tmpdir());
    kv_quantize_opts o;
    memset(&o, 0, sizeof o);
    o.format = "q8_0";
    o.transforms = "rht:64";
    kv_error err;
    kv_error_clear(&err);
    REQUIRE_OK(kv_quantize_model(model, gg, &o, NULL, &err), &err);
    o.out_format = KV_OUT_SAFETENSORS;
    REQUIRE_OK(kv_quantize_model(model, st, &o, NULL, &err), &err);
    size_t size = 0;
    uint8_t *bytes = kv_test_read_file(st, &size);
    REQUIRE(bytes && size > 8);
    uint64_t hl = kv_rd_u64(bytes);
    REQUIRE(hl % 8 == 0 && 8 + hl <= size);
    kv_json_doc *doc = NULL;
    REQUIRE_OK(kv_json_parse((const char *)bytes + 8, hl, NULL, &doc, &err), &err);
    const kv_json *root = kv_json_root(doc), *meta = kv_json_get(root, "__metadata__");
    REQUIRE(meta);
    const char *s = NULL;
    CHECK(kv_json_get_str(meta, "blk.0.attn_q.weight.format", &s) == 1 && !strcmp(s, "q8_0"));
    CHECK(kv_json_get_str(meta, "blk.0.attn_q.weight.shape", &s) == 1 && !strcmp(s, "[64,64]"));
    CHECK(kv_json_get_str(meta, "blk.0.attn_q.weight.rht_block", &s) == 1 && !strcmp(s, "64"));
    kv_model_file *q = NULL;
    REQUIRE_OK(kv_model_open(gg, &q, &err), &err);
    int compared = 0;
    for (uint64_t i = 0; i < root->len; i++) {
        const kv_json *t = &root->u.items[i];
        if (!strcmp(t->key, "__metadata__")) continue;
        const kv_tensor *g = kv_model_find(q, t->key);
        REQUIRE(g != NULL);
        const kv_json *off = kv_json_get(t, "data_offsets"), *shape = kv_json_get(t, "shape");
        REQUIRE(off && off->len == 2 && shape);
        uint64_t a = (uint64_t)kv_json_at(off, 0)->ival, b = (uint64_t)kv_json_at(off, 1)->ival;
        REQUIRE(a <= b && 8 + hl + b <= size);
        kv_json_get_str(t, "dtype", &s);
        if (g->type == KV_TYPE_F32) CHECK_STR(s, "F32");
        else if (g->type == KV_TYPE_F16) { /* the fallback of ffn_down (172 columns) */
            CHECK_STR(s, "F16");
            CHECK_EQ_INT(kv_json_at(shape, 1)->ival, g->shape[1]);
        } else {
            CHECK_STR(s, "U8"); /* packed rows of the tensor's kv_format */
            CHECK_EQ_INT(kv_json_at(shape, 0)->ival, g->shape[0]);
            CHECK_EQ_INT(kv_json_at(shape, 1)->ival, (int64_t)(g->nbytes / (uint64_t)g->shape[0]));
        }
        /* the same bytes as the GGUF, in Hugging Face row order (GGUF q/k read back through the reader) */
        uint8_t *rows = malloc(KV_MAX(g->nbytes, 1));
        REQUIRE(rows);
        REQUIRE_OK(kv_tensor_copy_bytes(g, rows, &err), &err);
        CHECK_MSG(b - a == g->nbytes && !memcmp(bytes + 8 + hl + a, rows, g->nbytes), "%s differs", t->key);
        free(rows);
        compared++;
    }
    CHECK_EQ_INT(compared, 47);
    kv_model_close(q);
    kv_json_free(doc);
    free(bytes);
}
