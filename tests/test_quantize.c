/* test_quantize.c — the quantization pipeline: per-tensor policy (llama.cpp mixes, overrides, fallbacks),
 * imatrix files, quantize → GGUF → kv_model_open round trips, bad input. */
#include "test.h"
#include "../src/core/core.h"
#include "../src/algos/quantize.h"
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
    CHECK(kv_imatrix_load(path, &bad, &err) == KV_EFORMAT);
    CHECK(bad == NULL);
    CHECK(strstr(err.file, "im.dat") != NULL);
    kv_wr_u32(bytes + 31, 0x7fffffff);
    REQUIRE(kv_test_write_file(path, bytes, size) == 0);
    CHECK(kv_imatrix_load(path, &bad, &err) == KV_EFORMAT);
    CHECK_EQ_INT(err.offset, 31);
    free(bytes);
    kv_imatrix_free(back);
    kv_imatrix_free(im);
}
