/* test_gguf.c — GGUF v3 reader/writer (src/io/gguf.c, gguf_write.c), q/k permutation (src/io/permute.c):
 * round trips of every value type, llama.cpp's own files read and re-written byte for byte, and a corpus of
 * malformed files each rejected with the right status and a message naming the offset or tensor. */
#include "test.h"
#include "../src/io/gguf.h"
#include "../src/model/tokenizer.h"
#include <errno.h>
#include <stdarg.h>
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------------ */

static int mkdir_p(const char *dir) { return mkdir(dir, 0755) == 0 || errno == EEXIST ? 0 : -1; }

static const char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", kv_test_tmpdir(), name);
    return buf;
}

/* Bytes of a tensor filled deterministically from a seed. */
static void fill_bytes(uint8_t *p, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

typedef struct rows_ctx {
    const uint8_t *src;
    size_t row_bytes;
    int64_t next_row; /* checks the writer asks for rows in order, once each */
    int calls;
} rows_ctx;

static kv_status rows_cb(void *ctx, int64_t first_row, int64_t nrows, void *dst, kv_error *err) {
    rows_ctx *c = ctx;
    if (first_row != c->next_row) return kv_fail(err, KV_EINVAL, "rows out of order");
    memcpy(dst, c->src + (size_t)first_row * c->row_bytes, (size_t)nrows * c->row_bytes);
    c->next_row += nrows;
    c->calls++;
    return KV_OK;
}

static kv_status failing_rows(void *ctx, int64_t first_row, int64_t nrows, void *dst, kv_error *err) {
    (void)ctx, (void)first_row, (void)nrows, (void)dst;
    return kv_fail(err, KV_EIO, "producer failed");
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    uint8_t *pa = kv_test_read_file(a, &na), *pb = kv_test_read_file(b, &nb);
    int eq = pa && pb && na == nb && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return eq;
}

/* Re-writes every key and tensor of g (values copied verbatim) to path. */
static kv_status rewrite_gguf(const kv_gguf *g, const char *path, kv_error *err) {
    kv_gguf_writer *w;
    kv_status st = kv_gguf_writer_create(&w, err);
    if (st) return st;
    for (int64_t i = 0; i < kv_gguf_n_kv(g) && !st; i++)
        st = kv_gguf_writer_add_value(w, kv_gguf_kv_key(g, i), kv_gguf_kv_value(g, i), err);
    for (int64_t i = 0; i < kv_gguf_n_tensors(g) && !st; i++) {
        const kv_gguf_tensor *t = kv_gguf_tensor_at(g, i);
        st = kv_gguf_writer_add_tensor(w, t->name, t->n_dims, t->shape, t->type, t->data, err);
    }
    if (!st) st = kv_gguf_writer_write(w, path, NULL, err);
    kv_gguf_writer_free(w);
    return st;
}

/* ---- round trip of every value type ------------------------------------------------------------- */

static const char *const k_utf8[] = {"", "plain", "héllo wörld", "日本語テキスト", "emoji 🦙 llama", "tab\tnewline\n"};

static void roundtrip_with_alignment(kv_test_ctx *T, uint32_t alignment) {
    kv_error err;
    kv_error_clear(&err);
    char path[600], path2[600];
    tmp_path(path, sizeof path, "rt.gguf");
    tmp_path(path2, sizeof path2, "rt2.gguf");

    /* tensors: plain, fp16, bf16, quantized (opaque bytes), 1..4 dims, one streamed */
    static const int64_t s_f32[2] = {3, 5}, s_f16[1] = {7}, s_bf16[3] = {2, 3, 4}, s_q80[2] = {4, 64},
                         s_q4k[4] = {1, 2, 1, 256}, s_stream[2] = {300, 32};
    size_t n_f32 = 3 * 5 * 4, n_f16 = 7 * 2, n_bf16 = 24 * 2, n_q80 = 4 * 2 * 34, n_q4k = 2 * 144, n_stream = 300 * 32 * 4;
    uint8_t *b_f32 = malloc(n_f32), *b_f16 = malloc(n_f16), *b_bf16 = malloc(n_bf16), *b_q80 = malloc(n_q80),
            *b_q4k = malloc(n_q4k), *b_stream = malloc(n_stream);
    REQUIRE(b_f32 && b_f16 && b_bf16 && b_q80 && b_q4k && b_stream);
    fill_bytes(b_f32, n_f32, 1), fill_bytes(b_f16, n_f16, 2), fill_bytes(b_bf16, n_bf16, 3);
    fill_bytes(b_q80, n_q80, 4), fill_bytes(b_q4k, n_q4k, 5), fill_bytes(b_stream, n_stream, 6);
    rows_ctx rc = {b_stream, 32 * 4, 0, 0};

    kv_gguf_writer *w;
    REQUIRE_OK(kv_gguf_writer_create(&w, &err), &err);
    CHECK_OK(kv_gguf_writer_add_str(w, "general.architecture", "llama", &err), &err);
    if (alignment != KV_GGUF_DEFAULT_ALIGNMENT) CHECK_OK(kv_gguf_writer_add_u32(w, "general.alignment", alignment, &err), &err);
    CHECK_OK(kv_gguf_writer_add_u8(w, "t.u8", 200, &err), &err);
    CHECK_OK(kv_gguf_writer_add_i8(w, "t.i8", -100, &err), &err);
    CHECK_OK(kv_gguf_writer_add_u16(w, "t.u16", 65000, &err), &err);
    CHECK_OK(kv_gguf_writer_add_i16(w, "t.i16", -32000, &err), &err);
    CHECK_OK(kv_gguf_writer_add_u32(w, "t.u32", 4000000000u, &err), &err);
    CHECK_OK(kv_gguf_writer_add_i32(w, "t.i32", -2000000000, &err), &err);
    CHECK_OK(kv_gguf_writer_add_u64(w, "t.u64", UINT64_MAX - 5, &err), &err);
    CHECK_OK(kv_gguf_writer_add_i64(w, "t.i64", INT64_MIN + 7, &err), &err);
    CHECK_OK(kv_gguf_writer_add_f32(w, "t.f32", 1e-5f, &err), &err);
    CHECK_OK(kv_gguf_writer_add_f64(w, "t.f64", -3.141592653589793, &err), &err);
    CHECK_OK(kv_gguf_writer_add_bool(w, "t.bool", 1, &err), &err);
    for (size_t i = 0; i < KV_ARRAY_LEN(k_utf8); i++) {
        char key[32];
        snprintf(key, sizeof key, "t.str%zu", i);
        CHECK_OK(kv_gguf_writer_add_str(w, key, k_utf8[i], &err), &err);
    }
    CHECK_OK(kv_gguf_writer_add_strn(w, "t.str_nul", "a\0b", 3, &err), &err);
    const int32_t ai32[5] = {-1, 0, 1, INT32_MAX, INT32_MIN};
    const float af32[3] = {0.5f, -2.0f, 1e30f};
    const uint8_t abool[4] = {1, 0, 0, 1};
    const uint64_t au64[2] = {0, UINT64_MAX};
    const double af64[2] = {1.0 / 3, -0.0};
    CHECK_OK(kv_gguf_writer_add_arr(w, "a.i32", KV_GGUF_I32, ai32, 5, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr(w, "a.f32", KV_GGUF_F32, af32, 3, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr(w, "a.bool", KV_GGUF_BOOL, abool, 4, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr(w, "a.u64", KV_GGUF_U64, au64, 2, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr(w, "a.f64", KV_GGUF_F64, af64, 2, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr(w, "a.empty_u8", KV_GGUF_U8, NULL, 0, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr_str(w, "a.str", k_utf8, NULL, KV_ARRAY_LEN(k_utf8), &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr_str(w, "a.empty_str", NULL, NULL, 0, &err), &err);
    /* nested: [[1,2,3],[],[-4]] of i32, [["x","yz"],[]] of strings, and three levels [[[7]]] */
    CHECK_OK(kv_gguf_writer_begin_array(w, "n.i32", KV_GGUF_ARRAY, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr(w, NULL, KV_GGUF_I32, ai32, 3, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr(w, NULL, KV_GGUF_I32, NULL, 0, &err), &err);
    CHECK_OK(kv_gguf_writer_begin_array(w, NULL, KV_GGUF_I32, &err), &err);
    CHECK_OK(kv_gguf_writer_add_i32(w, NULL, -4, &err), &err);
    CHECK_OK(kv_gguf_writer_end_array(w, &err), &err);
    CHECK_OK(kv_gguf_writer_end_array(w, &err), &err);
    const char *xs[2] = {"x", "yz"};
    CHECK_OK(kv_gguf_writer_begin_array(w, "n.str", KV_GGUF_ARRAY, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr_str(w, NULL, xs, NULL, 2, &err), &err);
    CHECK_OK(kv_gguf_writer_add_arr_str(w, NULL, NULL, NULL, 0, &err), &err);
    CHECK_OK(kv_gguf_writer_end_array(w, &err), &err);
    CHECK_OK(kv_gguf_writer_begin_array(w, "n.deep", KV_GGUF_ARRAY, &err), &err);
    CHECK_OK(kv_gguf_writer_begin_array(w, NULL, KV_GGUF_ARRAY, &err), &err);
    CHECK_OK(kv_gguf_writer_begin_array(w, NULL, KV_GGUF_U16, &err), &err);
    CHECK_OK(kv_gguf_writer_add_u16(w, NULL, 7, &err), &err);
    CHECK_OK(kv_gguf_writer_end_array(w, &err), &err);
    CHECK_OK(kv_gguf_writer_end_array(w, &err), &err);
    CHECK_OK(kv_gguf_writer_end_array(w, &err), &err);

    CHECK_OK(kv_gguf_writer_add_tensor(w, "t.f32", 2, s_f32, KV_TYPE_F32, b_f32, &err), &err);
    CHECK_OK(kv_gguf_writer_add_tensor(w, "t.f16", 1, s_f16, KV_TYPE_F16, b_f16, &err), &err);
    CHECK_OK(kv_gguf_writer_add_tensor(w, "t.bf16", 3, s_bf16, KV_TYPE_BF16, b_bf16, &err), &err);
    CHECK_OK(kv_gguf_writer_add_tensor(w, "t.q8_0", 2, s_q80, KV_TYPE_Q8_0, b_q80, &err), &err);
    CHECK_OK(kv_gguf_writer_add_tensor(w, "t.q4_k", 4, s_q4k, KV_TYPE_Q4_K, b_q4k, &err), &err);
    CHECK_OK(kv_gguf_writer_add_tensor_fn(w, "t.stream", 2, s_stream, KV_TYPE_F32, rows_cb, &rc, &err), &err);
    REQUIRE_OK(kv_gguf_writer_write(w, path, NULL, &err), &err);
    kv_gguf_writer_free(w);
    CHECK_EQ_INT(rc.next_row, 300);

    kv_gguf *g;
    REQUIRE_OK(kv_gguf_open(path, &g, &err), &err);
    CHECK_EQ_INT(kv_gguf_version(g), 3);
    CHECK_EQ_INT(kv_gguf_alignment(g), alignment);
    CHECK_EQ_INT(kv_gguf_data_offset(g) % alignment, 0);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
    int b;
    const char *s;
    CHECK_OK(kv_gguf_get_u32(g, "t.u8", &u32, &err), &err);
    CHECK_EQ_INT(u32, 200);
    CHECK_OK(kv_gguf_get_i32(g, "t.i8", &i32, &err), &err);
    CHECK_EQ_INT(i32, -100);
    CHECK_OK(kv_gguf_get_u32(g, "t.u16", &u32, &err), &err);
    CHECK_EQ_INT(u32, 65000);
    CHECK_OK(kv_gguf_get_i32(g, "t.i16", &i32, &err), &err);
    CHECK_EQ_INT(i32, -32000);
    CHECK_OK(kv_gguf_get_u32(g, "t.u32", &u32, &err), &err);
    CHECK(u32 == 4000000000u);
    CHECK_OK(kv_gguf_get_i32(g, "t.i32", &i32, &err), &err);
    CHECK_EQ_INT(i32, -2000000000);
    CHECK_OK(kv_gguf_get_u64(g, "t.u64", &u64, &err), &err);
    CHECK(u64 == UINT64_MAX - 5);
    CHECK_OK(kv_gguf_get_i64(g, "t.i64", &i64, &err), &err);
    CHECK(i64 == INT64_MIN + 7);
    CHECK_OK(kv_gguf_get_f32(g, "t.f32", &f32, &err), &err);
    CHECK(f32 == 1e-5f);
    CHECK_OK(kv_gguf_get_f64(g, "t.f64", &f64, &err), &err);
    CHECK(f64 == -3.141592653589793);
    CHECK_OK(kv_gguf_get_bool(g, "t.bool", &b, &err), &err);
    CHECK_EQ_INT(b, 1);
    for (size_t i = 0; i < KV_ARRAY_LEN(k_utf8); i++) {
        char key[32];
        snprintf(key, sizeof key, "t.str%zu", i);
        CHECK_OK(kv_gguf_get_str(g, key, &s, &err), &err);
        CHECK_STR(s, k_utf8[i]);
    }
    const kv_gguf_value *nul = kv_gguf_find(g, "t.str_nul");
    REQUIRE(nul && nul->type == KV_GGUF_STRING && nul->n == 3);
    CHECK(memcmp(nul->data, "a\0b", 3) == 0);
    /* conversions that must fail */
    CHECK_EQ_INT(kv_gguf_get_u32(g, "t.i32", &u32, &err), KV_ERANGE);
    CHECK(strstr(err.message, "t.i32") != NULL);
    CHECK_EQ_INT(kv_gguf_get_i32(g, "t.u32", &i32, &err), KV_ERANGE);
    CHECK_EQ_INT(kv_gguf_get_i64(g, "t.u64", &i64, &err), KV_ERANGE);
    CHECK_EQ_INT(kv_gguf_get_u32(g, "t.str1", &u32, &err), KV_EFORMAT);
    CHECK_EQ_INT(kv_gguf_get_f32(g, "t.u32", &f32, &err), KV_EFORMAT);
    CHECK_EQ_INT(kv_gguf_get_str(g, "t.u8", &s, &err), KV_EFORMAT);
    CHECK_EQ_INT(kv_gguf_get_u32(g, "no.such.key", &u32, &err), KV_ENOTFOUND);
    CHECK(strstr(err.message, "no.such.key") != NULL);

    kv_gguf_value arr, e;
    REQUIRE_OK(kv_gguf_get_arr(g, "a.i32", &arr, &err), &err);
    CHECK_EQ_INT(arr.elem_type, KV_GGUF_I32);
    REQUIRE(arr.n == 5);
    for (uint64_t i = 0; i < 5; i++) {
        CHECK_OK(kv_gguf_arr_get(&arr, i, &e, &err), &err);
        CHECK_OK(kv_gguf_value_i64(&e, &i64, &err), &err);
        CHECK_EQ_INT(i64, ai32[i]);
    }
    CHECK_EQ_INT(kv_gguf_arr_get(&arr, 5, &e, &err), KV_ERANGE);
    REQUIRE_OK(kv_gguf_get_arr(g, "a.f32", &arr, &err), &err);
    REQUIRE(arr.n == 3);
    CHECK(memcmp(arr.data, af32, sizeof af32) == 0);
    REQUIRE_OK(kv_gguf_get_arr(g, "a.bool", &arr, &err), &err);
    CHECK(arr.n == 4 && arr.elem_type == KV_GGUF_BOOL && memcmp(arr.data, abool, 4) == 0);
    REQUIRE_OK(kv_gguf_get_arr(g, "a.u64", &arr, &err), &err);
    CHECK(arr.n == 2 && memcmp(arr.data, au64, sizeof au64) == 0);
    REQUIRE_OK(kv_gguf_get_arr(g, "a.f64", &arr, &err), &err);
    REQUIRE(arr.n == 2);
    CHECK_OK(kv_gguf_arr_get(&arr, 0, &e, &err), &err);
    CHECK_OK(kv_gguf_value_f64(&e, &f64, &err), &err);
    CHECK(f64 == 1.0 / 3);
    REQUIRE_OK(kv_gguf_get_arr(g, "a.empty_u8", &arr, &err), &err);
    CHECK(arr.n == 0 && arr.elem_type == KV_GGUF_U8);
    REQUIRE_OK(kv_gguf_get_arr(g, "a.empty_str", &arr, &err), &err);
    CHECK(arr.n == 0 && arr.elem_type == KV_GGUF_STRING);
    REQUIRE_OK(kv_gguf_get_arr(g, "a.str", &arr, &err), &err);
    REQUIRE(arr.n == KV_ARRAY_LEN(k_utf8));
    for (uint64_t i = 0; i < arr.n; i++) {
        CHECK_OK(kv_gguf_arr_get(&arr, i, &e, &err), &err);
        CHECK(e.type == KV_GGUF_STRING && e.n == strlen(k_utf8[i]) && memcmp(e.data, k_utf8[i], e.n) == 0);
    }
    REQUIRE_OK(kv_gguf_get_arr(g, "n.i32", &arr, &err), &err);
    REQUIRE(arr.n == 3 && arr.elem_type == KV_GGUF_ARRAY);
    kv_gguf_value sub;
    CHECK_OK(kv_gguf_arr_get(&arr, 0, &sub, &err), &err);
    CHECK(sub.type == KV_GGUF_ARRAY && sub.elem_type == KV_GGUF_I32 && sub.n == 3 && !memcmp(sub.data, ai32, 12));
    CHECK_OK(kv_gguf_arr_get(&arr, 1, &sub, &err), &err);
    CHECK(sub.n == 0);
    CHECK_OK(kv_gguf_arr_get(&arr, 2, &sub, &err), &err);
    CHECK(sub.n == 1 && (int32_t)kv_rd_u32(sub.data) == -4);
    REQUIRE_OK(kv_gguf_get_arr(g, "n.str", &arr, &err), &err);
    REQUIRE(arr.n == 2);
    CHECK_OK(kv_gguf_arr_get(&arr, 0, &sub, &err), &err);
    REQUIRE(sub.n == 2 && sub.elem_type == KV_GGUF_STRING);
    CHECK_OK(kv_gguf_arr_get(&sub, 1, &e, &err), &err);
    CHECK(e.n == 2 && !memcmp(e.data, "yz", 2));
    REQUIRE_OK(kv_gguf_get_arr(g, "n.deep", &arr, &err), &err);
    REQUIRE_OK(kv_gguf_arr_get(&arr, 0, &sub, &err), &err);
    REQUIRE_OK(kv_gguf_arr_get(&sub, 0, &e, &err), &err);
    REQUIRE(e.type == KV_GGUF_ARRAY && e.elem_type == KV_GGUF_U16 && e.n == 1);
    CHECK_EQ_INT(kv_rd_u16(e.data), 7);

    REQUIRE(kv_gguf_n_tensors(g) == 6);
    const struct { const char *name; const uint8_t *bytes; size_t n; int nd; const int64_t *shape; uint32_t type; } want[] = {
        {"t.f32", b_f32, n_f32, 2, s_f32, KV_TYPE_F32},     {"t.f16", b_f16, n_f16, 1, s_f16, KV_TYPE_F16},
        {"t.bf16", b_bf16, n_bf16, 3, s_bf16, KV_TYPE_BF16}, {"t.q8_0", b_q80, n_q80, 2, s_q80, KV_TYPE_Q8_0},
        {"t.q4_k", b_q4k, n_q4k, 4, s_q4k, KV_TYPE_Q4_K},   {"t.stream", b_stream, n_stream, 2, s_stream, KV_TYPE_F32},
    };
    size_t fsize;
    const uint8_t *base = kv_gguf_bytes(g, &fsize);
    for (int i = 0; i < 6; i++) {
        const kv_gguf_tensor *t = kv_gguf_tensor_at(g, i);
        CHECK_STR(t->name, want[i].name);
        CHECK(kv_gguf_find_tensor(g, want[i].name) == t);
        CHECK_EQ_INT(t->n_dims, want[i].nd);
        for (int d = 0; d < t->n_dims; d++) CHECK_EQ_INT(t->shape[d], want[i].shape[d]);
        CHECK_EQ_INT(t->type, want[i].type);
        CHECK_EQ_INT(t->nbytes, want[i].n);
        CHECK_EQ_INT(t->offset % alignment, 0);
        CHECK((const uint8_t *)t->data == base + kv_gguf_data_offset(g) + t->offset);
        CHECK(memcmp(t->data, want[i].bytes, want[i].n) == 0);
    }
    CHECK(kv_gguf_find_tensor(g, "nope") == NULL);
    /* every tensor (the last one too) is padded: the file ends on the alignment */
    CHECK_EQ_INT(fsize % alignment, 0);
    /* re-writing what was read gives the same bytes */
    REQUIRE_OK(rewrite_gguf(g, path2, &err), &err);
    CHECK(files_equal(path, path2));
    kv_gguf_close(g);
    free(b_f32), free(b_f16), free(b_bf16), free(b_q80), free(b_q4k), free(b_stream);
}

KV_TEST(gguf_roundtrip_all_value_types_align32) { roundtrip_with_alignment(T, 32); }
KV_TEST(gguf_roundtrip_all_value_types_align64) { roundtrip_with_alignment(T, 64); }

KV_TEST(gguf_writer_rejects_misuse) {
    kv_error err;
    kv_error_clear(&err);
    char path[600];
    tmp_path(path, sizeof path, "bad.gguf");
    kv_gguf_writer *w;
    REQUIRE_OK(kv_gguf_writer_create(&w, &err), &err);
    CHECK_OK(kv_gguf_writer_add_u32(w, "k", 1, &err), &err);
    CHECK_EQ_INT(kv_gguf_writer_add_u32(w, "k", 2, &err), KV_EINVAL);
    CHECK(strstr(err.message, "duplicate") != NULL);
    CHECK_EQ_INT(kv_gguf_writer_add_u32(w, "general.alignment", 48, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_gguf_writer_add_u32(w, "general.alignment", 0, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_gguf_writer_add_u64(w, "general.alignment", 64, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_gguf_writer_add_u32(w, NULL, 1, &err), KV_EINVAL);
    int64_t shape[2] = {2, 32};
    float data[64] = {0};
    char long_name[80];
    memset(long_name, 'x', 64);
    long_name[64] = 0;
    CHECK_EQ_INT(kv_gguf_writer_add_tensor(w, long_name, 2, shape, KV_TYPE_F32, data, &err), KV_EINVAL);
    long_name[63] = 0; /* 63 bytes is the longest llama.cpp accepts */
    CHECK_OK(kv_gguf_writer_add_tensor(w, long_name, 2, shape, KV_TYPE_F32, data, &err), &err);
    CHECK_EQ_INT(kv_gguf_writer_add_tensor(w, long_name, 2, shape, KV_TYPE_F32, data, &err), KV_EINVAL);
    int64_t odd[2] = {2, 31};
    CHECK_EQ_INT(kv_gguf_writer_add_tensor(w, "q", 2, odd, KV_TYPE_Q8_0, data, &err), KV_EINVAL);
    CHECK_STR(err.tensor, "q");
    CHECK_EQ_INT(kv_gguf_writer_add_tensor(w, "u", 2, shape, 4, data, &err), KV_EINVAL); /* removed ggml id */
    CHECK_EQ_INT(kv_gguf_writer_add_tensor(w, "k5", 5, shape, KV_TYPE_F32, data, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_gguf_writer_add_tensor(w, "kv", 2, shape, KV_TYPE_KVANT_BASE, data, &err), KV_EINVAL);
    CHECK(strstr(err.message, "kvant.tensor.kv.format") != NULL);
    /* arrays: element type enforced, keys refused inside, open arrays refused at write */
    CHECK_OK(kv_gguf_writer_begin_array(w, "arr", KV_GGUF_I32, &err), &err);
    CHECK_EQ_INT(kv_gguf_writer_add_u32(w, NULL, 1, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_gguf_writer_add_i32(w, "x", 1, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_gguf_writer_write(w, path, NULL, &err), KV_EINVAL);
    CHECK(!kv_test_exists(path));
    CHECK_OK(kv_gguf_writer_end_array(w, &err), &err);
    CHECK_EQ_INT(kv_gguf_writer_end_array(w, &err), KV_EINVAL);
    /* a failing producer leaves no output file */
    CHECK_OK(kv_gguf_writer_add_tensor_fn(w, "late", 2, shape, KV_TYPE_F32, failing_rows, NULL, &err), &err);
    CHECK_EQ_INT(kv_gguf_writer_write(w, path, NULL, &err), KV_EIO);
    CHECK_STR(err.tensor, "late");
    CHECK(!kv_test_exists(path));
    kv_gguf_writer_free(w);
}

/* ---- llama.cpp's own files ---------------------------------------------------------------------- */

KV_TEST(gguf_reads_llama_cpp_proxy_model) {
    char path[600];
    kv_test_shared(path, sizeof path, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    if (!kv_test_exists(path)) SKIP("shared file missing: %.200s", path);
    kv_error err;
    kv_gguf *g;
    REQUIRE_OK(kv_gguf_open(path, &g, &err), &err);
    CHECK_EQ_INT(kv_gguf_version(g), 3);
    CHECK_EQ_INT(kv_gguf_alignment(g), 32);
    CHECK_EQ_INT(kv_gguf_n_tensors(g), 57);
    const char *s;
    uint32_t u;
    float f;
    CHECK_OK(kv_gguf_get_str(g, "general.architecture", &s, &err), &err);
    CHECK_STR(s, "llama");
    CHECK_OK(kv_gguf_get_str(g, "tokenizer.ggml.model", &s, &err), &err);
    CHECK_STR(s, "llama");
    CHECK_OK(kv_gguf_get_u32(g, "llama.block_count", &u, &err), &err);
    CHECK_EQ_INT(u, 6);
    CHECK_OK(kv_gguf_get_u32(g, "llama.embedding_length", &u, &err), &err);
    CHECK_EQ_INT(u, 512);
    CHECK_OK(kv_gguf_get_u32(g, "llama.attention.head_count_kv", &u, &err), &err);
    CHECK_EQ_INT(u, 4);
    CHECK_OK(kv_gguf_get_u32(g, "llama.feed_forward_length", &u, &err), &err);
    CHECK_EQ_INT(u, 1536);
    CHECK_OK(kv_gguf_get_f32(g, "llama.rope.freq_base", &f, &err), &err);
    CHECK(f == 10000.0f);
    CHECK_OK(kv_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f, &err), &err);
    CHECK(f == 1e-5f);
    kv_gguf_value toks, e;
    REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, &err), &err);
    CHECK_EQ_INT(toks.n, 8192);
    REQUIRE_OK(kv_gguf_arr_get(&toks, 1, &e, &err), &err);
    CHECK(e.n == 3 && !memcmp(e.data, "<s>", 3));
    REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.token_type", &toks, &err), &err);
    CHECK(toks.n == 8192 && toks.elem_type == KV_GGUF_I32);
    const kv_gguf_tensor *t = kv_gguf_find_tensor(g, "token_embd.weight");
    REQUIRE(t);
    CHECK(t->n_dims == 2 && t->shape[0] == 8192 && t->shape[1] == 512 && t->type == KV_TYPE_BF16);
    CHECK_EQ_INT(t->nbytes, 8192 * 512 * 2);
    t = kv_gguf_find_tensor(g, "blk.3.attn_k.weight");
    REQUIRE(t);
    CHECK(t->shape[0] == 256 && t->shape[1] == 512);
    t = kv_gguf_find_tensor(g, "output_norm.weight");
    REQUIRE(t);
    CHECK(t->n_dims == 1 && t->shape[0] == 512 && t->type == KV_TYPE_F32);
    kv_gguf_close(g);
}

KV_TEST(gguf_rewrite_of_llama_cpp_file_is_byte_identical) {
    char path[600], out[600];
    kv_test_shared(path, sizeof path, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    if (!kv_test_exists(path)) SKIP("shared file missing: %.200s", path);
    tmp_path(out, sizeof out, "proxy-rewritten.gguf");
    kv_error err;
    kv_gguf *g;
    REQUIRE_OK(kv_gguf_open(path, &g, &err), &err);
    REQUIRE_OK(rewrite_gguf(g, out, &err), &err);
    kv_gguf_close(g);
    CHECK(files_equal(path, out));
}

KV_TEST(gguf_reads_vocab_only_files) {
    static const struct { const char *file, *model, *tok1; uint64_t n_tokens; int has_merges; } files[] = {
        {"tokenizers/ggml-vocab-llama-spm.gguf", "llama", "<s>", 32000, 0},
        {"tokenizers/ggml-vocab-llama-bpe.gguf", "gpt2", "\"", 128256, 1},
        {"tokenizers/ggml-vocab-qwen2.gguf", "gpt2", "\"", 151936, 1},
        {"tokenizers/ggml-vocab-gpt-2.gguf", "gpt2", "\"", 50257, 1},
    };
    for (size_t i = 0; i < KV_ARRAY_LEN(files); i++) {
        char path[600];
        kv_test_shared(path, sizeof path, files[i].file);
        if (!kv_test_exists(path)) SKIP("shared file missing: %.200s", path);
        kv_error err;
        kv_gguf *g;
        REQUIRE_OK(kv_gguf_open(path, &g, &err), &err);
        CHECK_EQ_INT(kv_gguf_n_tensors(g), 0);
        const char *s;
        CHECK_OK(kv_gguf_get_str(g, "tokenizer.ggml.model", &s, &err), &err);
        CHECK_STR(s, files[i].model);
        kv_gguf_value toks, types, e;
        REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, &err), &err);
        CHECK_EQ_INT(toks.n, files[i].n_tokens);
        REQUIRE_OK(kv_gguf_arr_get(&toks, 1, &e, &err), &err);
        CHECK(e.n == strlen(files[i].tok1) && !memcmp(e.data, files[i].tok1, e.n));
        /* the last token's bytes end inside the file */
        size_t fsize;
        const uint8_t *base = kv_gguf_bytes(g, &fsize);
        REQUIRE_OK(kv_gguf_arr_get(&toks, toks.n - 1, &e, &err), &err);
        CHECK((const uint8_t *)e.data + e.n <= base + fsize && e.offset + 8 + e.n <= fsize);
        REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.token_type", &types, &err), &err);
        CHECK_EQ_INT(types.n, toks.n);
        CHECK_EQ_INT(kv_gguf_find_key(g, "tokenizer.ggml.merges") >= 0, files[i].has_merges);
        kv_gguf_close(g);
    }
}

/* ---- q/k permutation ---------------------------------------------------------------------------- */

KV_TEST(permute_qk_matches_llama_cpp_and_inverts) {
    kv_error err;
    /* one head of 4 rows: HF (rotate-half) rows 0 1 | 2 3 pair as (0,2) (1,3): GGUF order 0 2 1 3 */
    const int32_t hf[8] = {0, 1, 2, 3, 10, 11, 12, 13};
    int32_t gg[8], back[8];
    REQUIRE_OK(kv_permute_qk_to_gguf(hf, gg, 8, sizeof(int32_t), 2, &err), &err);
    const int32_t want[8] = {0, 2, 1, 3, 10, 12, 11, 13};
    CHECK(memcmp(gg, want, sizeof want) == 0);
    REQUIRE_OK(kv_permute_qk_from_gguf(gg, back, 8, sizeof(int32_t), 2, &err), &err);
    CHECK(memcmp(back, hf, sizeof hf) == 0);
    /* rows of several bytes, 3 heads of 6 */
    uint8_t src[18 * 5], mid[18 * 5], out[18 * 5];
    fill_bytes(src, sizeof src, 9);
    REQUIRE_OK(kv_permute_qk_to_gguf(src, mid, 18, 5, 3, &err), &err);
    REQUIRE_OK(kv_permute_qk_from_gguf(mid, out, 18, 5, 3, &err), &err);
    CHECK(memcmp(src, out, sizeof src) == 0);
    CHECK(memcmp(mid + 5 * 1, src + 5 * 3, 5) == 0); /* GGUF row 1 = HF row hd/2 = 3 */
    CHECK_EQ_INT(kv_permute_qk_to_gguf(src, mid, 18, 5, 4, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_permute_qk_to_gguf(src, mid, 15, 5, 3, &err), KV_EINVAL);
}

/* ---- malformed files ---------------------------------------------------------------------------- */

/* A tiny GGUF assembled field by field so that each field can be broken on purpose. */
typedef struct mk_opts {
    const char *magic;
    uint32_t version;
    int64_t n_tensors, n_kv;        /* -1: the real counts */
    uint32_t name_type;             /* type field of general.name (STRING) */
    uint64_t name_len_extra;        /* added to general.name's declared length */
    uint32_t arr_elem;              /* element type of a.arr (U8) */
    uint64_t arr_count;             /* declared count of a.arr (3) */
    int nest;                       /* extra nesting levels around a.arr */
    int align_kind;                 /* 0 none, 1 u32, 2 u64 */
    uint32_t align;
    int dup_key;
    const char *t0_name, *t1_name;
    uint32_t t0_ndims;
    uint64_t t0_dims[5];
    uint32_t t0_type;
    uint64_t t0_off, t1_off;
    int64_t truncate;               /* bytes kept (-1: all) */
} mk_opts;

typedef struct mk_buf {
    uint8_t b[8192];
    size_t n;
} mk_buf;

static void mk_put(mk_buf *m, const void *p, size_t n) {
    if (m->n + n <= sizeof m->b) memcpy(m->b + m->n, p, n);
    m->n += n;
}
static void mk_u32(mk_buf *m, uint32_t v) { mk_put(m, &v, 4); }
static void mk_u64(mk_buf *m, uint64_t v) { mk_put(m, &v, 8); }
static void mk_str(mk_buf *m, const char *s) { mk_u64(m, strlen(s)); mk_put(m, s, strlen(s)); }

static mk_opts mk_defaults(void) {
    mk_opts o;
    memset(&o, 0, sizeof o);
    o.magic = "GGUF";
    o.version = 3;
    o.n_tensors = o.n_kv = -1;
    o.name_type = KV_GGUF_STRING;
    o.arr_elem = KV_GGUF_U8;
    o.arr_count = 3;
    o.t0_name = "t0";
    o.t1_name = "t1";
    o.t0_ndims = 2;
    o.t0_dims[0] = 8, o.t0_dims[1] = 2; /* ne0 = 8 innermost */
    o.t0_type = KV_TYPE_F32;
    o.t0_off = 0;
    o.t1_off = 64;
    o.truncate = -1;
    return o;
}

/* Builds the file: 2 tensors (t0 f32 [2][8] = 64 bytes, t1 f32 [4] = 16 bytes). */
static void mk_build(const mk_opts *o, mk_buf *m) {
    m->n = 0;
    uint32_t align = o->align_kind ? o->align : 32;
    int n_kv = 2 + (o->align_kind != 0) + (o->dup_key != 0);
    mk_put(m, o->magic, 4);
    mk_u32(m, o->version);
    mk_u64(m, o->n_tensors >= 0 ? (uint64_t)o->n_tensors : 2);
    mk_u64(m, o->n_kv >= 0 ? (uint64_t)o->n_kv : (uint64_t)n_kv);
    mk_str(m, "general.name");
    mk_u32(m, o->name_type);
    mk_u64(m, 4 + o->name_len_extra);
    mk_put(m, "tiny", 4);
    mk_str(m, "a.arr");
    mk_u32(m, KV_GGUF_ARRAY);
    for (int d = 0; d < o->nest; d++) {
        mk_u32(m, KV_GGUF_ARRAY);
        mk_u64(m, 1);
    }
    mk_u32(m, o->arr_elem);
    mk_u64(m, o->arr_count);
    mk_put(m, "\1\2\3", 3);
    if (o->align_kind == 1) {
        mk_str(m, "general.alignment");
        mk_u32(m, KV_GGUF_U32);
        mk_u32(m, o->align);
    } else if (o->align_kind == 2) {
        mk_str(m, "general.alignment");
        mk_u32(m, KV_GGUF_U64);
        mk_u64(m, o->align);
    }
    if (o->dup_key) {
        mk_str(m, "a.arr");
        mk_u32(m, KV_GGUF_U8);
        mk_put(m, "\7", 1);
    }
    mk_str(m, o->t0_name);
    mk_u32(m, o->t0_ndims);
    for (uint32_t d = 0; d < o->t0_ndims && d < 5; d++) mk_u64(m, o->t0_dims[d]);
    mk_u32(m, o->t0_type);
    mk_u64(m, o->t0_off);
    mk_str(m, o->t1_name);
    mk_u32(m, 1);
    mk_u64(m, 4);
    mk_u32(m, KV_TYPE_F32);
    mk_u64(m, o->t1_off);
    uint32_t a = align && !(align & (align - 1)) ? align : 32;
    while (m->n % a) mk_put(m, "", 1);
    uint8_t data[96];
    fill_bytes(data, sizeof data, 77);
    mk_put(m, data, sizeof data);
    if (o->truncate >= 0 && (size_t)o->truncate < m->n) m->n = (size_t)o->truncate;
}

static kv_status mk_open(const mk_opts *o, kv_error *err) {
    mk_buf *m = malloc(sizeof *m);
    if (!m) return KV_ENOMEM;
    mk_build(o, m);
    kv_gguf *g = NULL;
    kv_status st = kv_gguf_open_memory(m->b, m->n, "bad.gguf", &g, err);
    kv_gguf_close(g);
    free(m);
    return st;
}

KV_TEST(gguf_malformed_base_file_is_valid) {
    kv_error err;
    mk_opts o = mk_defaults();
    CHECK_OK(mk_open(&o, &err), &err);
    o.align_kind = 1, o.align = 64, o.t1_off = 64;
    CHECK_OK(mk_open(&o, &err), &err);
    o = mk_defaults();
    o.t0_name = "123456789012345678901234567890123456789012345678901234567890123"; /* 63 bytes */
    CHECK_OK(mk_open(&o, &err), &err);
    o = mk_defaults();
    o.version = 2;
    CHECK_OK(mk_open(&o, &err), &err);
    o = mk_defaults();
    o.nest = KV_GGUF_MAX_ARRAY_DEPTH - 1;
    CHECK_OK(mk_open(&o, &err), &err);
}

typedef struct bad_case {
    const char *what;
    mk_opts o;
    kv_status status;
    const char *needle;  /* in the message */
    const char *tensor;  /* expected err.tensor, or NULL */
} bad_case;

KV_TEST(gguf_malformed_corpus_rejected) {
    bad_case c[40];
    int n = 0;
#define CASE(desc, st, msg, tn, ...) do { c[n].what = desc; c[n].o = mk_defaults(); { mk_opts *o = &c[n].o; __VA_ARGS__; } \
        c[n].status = st; c[n].needle = msg; c[n].tensor = tn; n++; } while (0)
    CASE("bad magic", KV_EFORMAT, "magic", NULL, o->magic = "GGML");
    CASE("empty file", KV_EFORMAT, "magic", NULL, o->truncate = 0);
    CASE("version 1", KV_EUNSUPPORTED, "version 1", NULL, o->version = 1);
    CASE("version 4", KV_EUNSUPPORTED, "version 4", NULL, o->version = 4);
    CASE("big-endian", KV_EUNSUPPORTED, "big-endian", NULL, o->version = 0x03000000);
    CASE("truncated header", KV_EFORMAT, "truncated", NULL, o->truncate = 12);
    CASE("huge tensor count", KV_EFORMAT, "tensor count", NULL, o->n_tensors = (int64_t)1 << 60);
    CASE("huge kv count", KV_EFORMAT, "metadata count", NULL, o->n_kv = (int64_t)1 << 59);
    CASE("string beyond file", KV_EFORMAT, "beyond the end", NULL, o->name_len_extra = 1u << 20);
    CASE("string length 2^64-1", KV_EFORMAT, "beyond the end", NULL, o->name_len_extra = UINT64_MAX - 3);
    CASE("unknown value type", KV_EFORMAT, "unknown value type 13", NULL, o->name_type = 13);
    CASE("unknown array element type", KV_EFORMAT, "unknown array element type", NULL, o->arr_elem = 77);
    CASE("array count beyond file", KV_EFORMAT, "beyond the end", NULL, o->arr_count = (uint64_t)1 << 40);
    CASE("array count overflow", KV_EFORMAT, "beyond the end", NULL, o->arr_elem = KV_GGUF_U64, o->arr_count = (uint64_t)1 << 62);
    CASE("huge array of strings", KV_EFORMAT, "cannot fit", NULL, o->arr_elem = KV_GGUF_STRING, o->arr_count = (uint64_t)1 << 58);
    CASE("nested arrays too deep", KV_EFORMAT, "nested deeper", NULL, o->nest = KV_GGUF_MAX_ARRAY_DEPTH);
    CASE("duplicate key", KV_EFORMAT, "duplicate metadata key 'a.arr'", NULL, o->dup_key = 1);
    CASE("alignment 0", KV_EFORMAT, "power of two", NULL, o->align_kind = 1, o->align = 0);
    CASE("alignment 48", KV_EFORMAT, "power of two", NULL, o->align_kind = 1, o->align = 48);
    CASE("alignment u64", KV_EFORMAT, "expected u32", NULL, o->align_kind = 2, o->align = 32);
    CASE("tensor name too long", KV_EFORMAT, "too long", NULL,
         o->t0_name = "1234567890123456789012345678901234567890123456789012345678901234");
    CASE("n_dims 5", KV_EFORMAT, "5 dimensions", "t0", o->t0_ndims = 5, o->t0_dims[2] = o->t0_dims[3] = o->t0_dims[4] = 1);
    CASE("dimension beyond int64", KV_ERANGE, "beyond int64", "t0", o->t0_dims[1] = UINT64_MAX);
    CASE("shape product overflow", KV_ERANGE, "overflow", "t0", o->t0_dims[0] = (uint64_t)1 << 40, o->t0_dims[1] = (uint64_t)1 << 40);
    CASE("removed ggml type 4", KV_EFORMAT, "unknown ggml type 4", "t0", o->t0_type = 4);
    CASE("ggml type 500", KV_EFORMAT, "unknown ggml type 500", "t0", o->t0_type = 500);
    CASE("kvant type without format key", KV_EFORMAT, "kvant.tensor.t0.format", "t0", o->t0_type = KV_TYPE_KVANT_BASE);
    CASE("type 3000", KV_EFORMAT, "unknown ggml type 3000", "t0", o->t0_type = 3000);
    CASE("row not a multiple of the block", KV_EFORMAT, "block size", "t0", o->t0_type = KV_TYPE_Q8_0);
    CASE("offset not aligned", KV_EFORMAT, "alignment", "t1", o->t1_off = 72);
    CASE("data beyond EOF", KV_EFORMAT, "beyond the end of the file", "t1", o->t1_off = 4096);
    CASE("data offset overflow", KV_EFORMAT, "beyond the end of the file", "t1", o->t1_off = UINT64_MAX - 31);
    CASE("overlapping tensors", KV_EFORMAT, "overlaps tensor 't0'", "t1", o->t1_off = 32);
    CASE("duplicate tensor names", KV_EFORMAT, "duplicate tensor", "t0", o->t1_name = "t0");
    CASE("data truncated", KV_EFORMAT, "beyond the end of the file", NULL, o->truncate = 200);
#undef CASE
    CHECK(n >= 30);
    for (int i = 0; i < n; i++) {
        kv_error err;
        kv_status st = mk_open(&c[i].o, &err);
        CHECK_MSG(st == c[i].status, "%s: status %s, expected %s (%s)", c[i].what, kv_status_name(st),
                  kv_status_name(c[i].status), err.message);
        CHECK_MSG(strstr(err.message, c[i].needle) != NULL, "%s: message '%s' lacks '%s'", c[i].what, err.message,
                  c[i].needle);
        CHECK_MSG(!strcmp(err.file, "bad.gguf"), "%s: file '%s'", c[i].what, err.file);
        CHECK_MSG(err.offset >= 0, "%s: no offset (%s)", c[i].what, err.message);
        if (c[i].tensor) CHECK_MSG(!strcmp(err.tensor, c[i].tensor), "%s: tensor '%s'", c[i].what, err.tensor);
    }
}

KV_TEST(gguf_truncated_at_every_byte) {
    mk_opts o = mk_defaults();
    mk_buf *m = malloc(sizeof *m);
    REQUIRE(m);
    mk_build(&o, m);
    size_t full = m->n;
    /* the last 16 bytes are the padding after t1's data: cutting them leaves a valid file */
    for (size_t cut = 0; cut + 16 < full; cut++) {
        kv_error err;
        kv_gguf *g = NULL;
        kv_status st = kv_gguf_open_memory(m->b, cut, "cut.gguf", &g, &err);
        kv_gguf_close(g);
        if (st != KV_EFORMAT || err.offset < 0) {
            CHECK_MSG(0, "cut at %zu: %s (%s)", cut, kv_status_name(st), err.message);
            break;
        }
    }
    /* and from a file on disk: the message names the file */
    char path[600];
    tmp_path(path, sizeof path, "cut.gguf");
    REQUIRE(kv_test_write_file(path, m->b, 100) == 0);
    kv_error err;
    kv_gguf *g;
    CHECK_EQ_INT(kv_gguf_open(path, &g, &err), KV_EFORMAT);
    char buf[1200];
    CHECK(strstr(kv_error_format(&err, buf, sizeof buf), "cut.gguf: offset ") != NULL);
    CHECK_EQ_INT(kv_gguf_open("/nonexistent/x.gguf", &g, &err), KV_ENOTFOUND);
    free(m);
}

/* ---- kvant convert ------------------------------------------------------------------------------ */

KV_TEST(convert_proxy_bf16_is_byte_identical_to_llama_cpp) {
    char src[600], ref[600], out[600];
    kv_test_shared(src, sizeof src, "models/proxy-27m");
    kv_test_shared(ref, sizeof ref, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    if (!kv_test_exists(src) || !kv_test_exists(ref)) SKIP("proxy-27m missing under ../shared");
    tmp_path(out, sizeof out, "proxy-27m-bf16.gguf");
    kv_error err;
    kv_convert_result res;
    REQUIRE_OK(kv_gguf_convert(src, out, KV_TYPE_BF16, 1, &res, &err), &err);
    CHECK_EQ_INT(res.n_tensors, 57);
    CHECK_EQ_INT(res.n_skipped, 0);
    /* same key set, key order, values, tensor order, types, q/k permutation and padding as llama.cpp */
    CHECK(files_equal(out, ref));
    kv_gguf *a, *b;
    REQUIRE_OK(kv_gguf_open(out, &a, &err), &err);
    REQUIRE_OK(kv_gguf_open(ref, &b, &err), &err);
    CHECK_EQ_INT(kv_gguf_n_kv(a), kv_gguf_n_kv(b));
    for (int64_t i = 0; i < kv_gguf_n_kv(b); i++) {
        const kv_gguf_value *vb = kv_gguf_kv_value(b, i), *va = kv_gguf_find(a, kv_gguf_kv_key(b, i));
        CHECK_MSG(va && va->type == vb->type && va->raw_size == vb->raw_size &&
                      !memcmp(va->data, vb->data, (size_t)(vb->type == KV_GGUF_ARRAY ? vb->raw_size - 12 : vb->type == KV_GGUF_STRING ? vb->n : vb->raw_size)),
                  "key %s differs", kv_gguf_kv_key(b, i));
    }
    kv_gguf_close(a);
    kv_gguf_close(b);
}

/* Every tensor of src and of the GGUF made from it hold the same fp32 values (kv_model_open undoes the q/k
 * permutation of GGUF files). */
static void check_same_tensors(kv_test_ctx *T, const char *src, const char *gguf, int exact_f16) {
    kv_error err;
    kv_model_file *ms, *mg;
    REQUIRE_OK(kv_model_open(src, &ms, &err), &err);
    kv_status st = kv_model_open(gguf, &mg, &err);
    if (st) kv_model_close(ms);
    REQUIRE_OK(st, &err);
    CHECK_EQ_INT(kv_model_format(mg), KV_FILE_GGUF);
    /* llama3 rope scaling adds rope_freqs.weight, which the source does not have */
    CHECK_EQ_INT(kv_model_n_tensors(mg) - (kv_model_find(mg, "rope_freqs.weight") != NULL), kv_model_n_tensors(ms));
    for (int64_t i = 0; i < kv_model_n_tensors(ms); i++) {
        const kv_tensor *ts = kv_model_tensor(ms, i), *tg = kv_model_find(mg, ts->name);
        CHECK_MSG(tg != NULL, "%s missing from the GGUF", ts->name);
        if (!tg) continue;
        int64_t n = kv_tensor_nelements(ts);
        CHECK_EQ_INT(kv_tensor_nelements(tg), n);
        CHECK_EQ_INT(tg->n_dims, ts->n_dims);
        for (int d = 0; d < ts->n_dims; d++) CHECK_EQ_INT(tg->shape[d], ts->shape[d]);
        float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
        REQUIRE(a && b);
        CHECK_OK(kv_tensor_to_f32(ts, a, &err), &err);
        CHECK_OK(kv_tensor_to_f32(tg, b, &err), &err);
        int64_t bad = 0;
        for (int64_t k = 0; k < n; k++) {
            float want = exact_f16 && tg->type == KV_TYPE_F16 ? kv_fp16_to_fp32(kv_fp32_to_fp16(a[k])) : a[k];
            if (memcmp(&want, &b[k], 4) != 0) bad++;
        }
        CHECK_MSG(bad == 0, "%s: %lld of %lld values differ", ts->name, (long long)bad, (long long)n);
        free(a);
        free(b);
    }
    kv_model_close(ms);
    kv_model_close(mg);
}

KV_TEST(convert_proxy_f32_reads_back_identical_to_hf) {
    char src[600], out[600];
    kv_test_shared(src, sizeof src, "models/proxy-27m");
    if (!kv_test_exists(src)) SKIP("proxy-27m missing under ../shared");
    tmp_path(out, sizeof out, "proxy-27m-f32.gguf");
    kv_error err;
    REQUIRE_OK(kv_gguf_convert(src, out, KV_TYPE_F32, 1, NULL, &err), &err);
    kv_gguf *g;
    REQUIRE_OK(kv_gguf_open(out, &g, &err), &err);
    uint32_t ft;
    CHECK_OK(kv_gguf_get_u32(g, "general.file_type", &ft, &err), &err);
    CHECK_EQ_INT(ft, 0);
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "blk.0.attn_q.weight")->type, KV_TYPE_F32);
    kv_gguf_close(g);
    check_same_tensors(T, src, out, 0);
}

KV_TEST(convert_llama2c_f16) {
    char src[600], out[600];
    kv_test_shared(src, sizeof src, "models/stories260K/stories260K.bin");
    if (!kv_test_exists(src)) SKIP("stories260K missing under ../shared");
    tmp_path(out, sizeof out, "stories.gguf");
    kv_error err;
    kv_convert_result res;
    REQUIRE_OK(kv_gguf_convert(src, out, KV_TYPE_F16, 1, &res, &err), &err);
    kv_gguf *g;
    REQUIRE_OK(kv_gguf_open(out, &g, &err), &err);
    const char *s;
    uint32_t u;
    CHECK_OK(kv_gguf_get_str(g, "general.name", &s, &err), &err);
    CHECK_STR(s, "stories260K");
    CHECK_OK(kv_gguf_get_u32(g, "llama.embedding_length", &u, &err), &err);
    CHECK_EQ_INT(u, 64);
    CHECK_OK(kv_gguf_get_u32(g, "llama.attention.head_count_kv", &u, &err), &err);
    CHECK_EQ_INT(u, 4);
    CHECK_OK(kv_gguf_get_u32(g, "general.file_type", &u, &err), &err);
    CHECK_EQ_INT(u, 1);
    CHECK(kv_gguf_find_key(g, "tokenizer.ggml.tokens") < 0); /* the checkpoint has no tokenizer */
    CHECK(kv_gguf_find_tensor(g, "output.weight") == NULL);   /* shared classifier */
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "blk.0.attn_norm.weight")->type, KV_TYPE_F32);
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "blk.0.ffn_up.weight")->type, KV_TYPE_F16);
    CHECK_EQ_INT(kv_gguf_n_tensors(g), res.n_tensors);
    kv_gguf_close(g);
    check_same_tensors(T, src, out, 1);
}

KV_TEST(convert_cli) {
    char src[600], out[900], args[2400];
    kv_test_shared(src, sizeof src, "models/stories260K/stories260K.bin");
    if (!kv_test_exists(src)) SKIP("stories260K missing under ../shared");
    tmp_path(out, sizeof out, "cli.gguf");
    char *o = NULL;
    CHECK_EQ_INT(kv_test_run_cli("convert --help", &o), 0);
    CHECK(o && strstr(o, "--outtype"));
    free(o);
    snprintf(args, sizeof args, "convert %s", src);
    CHECK_EQ_INT(kv_test_run_cli(args, &o), 2);
    free(o);
    snprintf(args, sizeof args, "convert %s -o %s --outtype q4", src, out);
    CHECK_EQ_INT(kv_test_run_cli(args, &o), 2);
    free(o);
    snprintf(args, sizeof args, "convert %s/nope -o %s", kv_test_tmpdir(), out);
    CHECK_EQ_INT(kv_test_run_cli(args, &o), 1);
    CHECK(o && strstr(o, "nope"));
    CHECK(!kv_test_exists(out));
    free(o);
    snprintf(args, sizeof args, "convert %s -o %s --outtype f32 --json", src, out);
    CHECK_EQ_INT(kv_test_run_cli(args, &o), 0);
    CHECK(o && strstr(o, "\"tensors\"") && strstr(o, "\"outtype\": \"f32\""));
    free(o);
    kv_error err;
    kv_gguf *g;
    REQUIRE_OK(kv_gguf_open(out, &g, &err), &err);
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "token_embd.weight")->type, KV_TYPE_F32);
    kv_gguf_close(g);
}

/* ---- kvant-only tensor types -------------------------------------------------------------------- */

KV_TEST(gguf_kvant_format_tensors_roundtrip) {
    static const char *const names[] = {"int4_g128_asym", "int4_g0_sym"};
    for (size_t k = 0; k < KV_ARRAY_LEN(names); k++) {
        kv_error err;
        kv_format f;
        REQUIRE_OK(kv_format_get(names[k], &f, &err), &err);
        if (f.type < KV_TYPE_KVANT_BASE) SKIP("%s is not a kvant-only type", names[k]);
        int64_t shape[2] = {3, 256};
        size_t rb = kv_format_row_bytes(&f, 256);
        REQUIRE(rb > 0);
        size_t dsize = KV_MAX(3 * rb, (size_t)3 * 256 * 2); /* also the bytes of the f16 tensor "after" */
        uint8_t *data = malloc(dsize);
        REQUIRE(data);
        fill_bytes(data, dsize, 42);
        char path[600];
        tmp_path(path, sizeof path, "kvant-type.gguf");
        kv_gguf_writer *w;
        REQUIRE_OK(kv_gguf_writer_create(&w, &err), &err);
        CHECK_OK(kv_gguf_writer_add_str(w, "kvant.tensor.blk.0.ffn_up.weight.format", names[k], &err), &err);
        CHECK_OK(kv_gguf_writer_add_tensor(w, "blk.0.ffn_up.weight", 2, shape, f.type, data, &err), &err);
        CHECK_OK(kv_gguf_writer_add_tensor(w, "after", 2, shape, KV_TYPE_F16, data, &err), &err);
        REQUIRE_OK(kv_gguf_writer_write(w, path, NULL, &err), &err);
        kv_gguf_writer_free(w);
        kv_gguf *g;
        REQUIRE_OK(kv_gguf_open(path, &g, &err), &err);
        const kv_gguf_tensor *t = kv_gguf_find_tensor(g, "blk.0.ffn_up.weight");
        REQUIRE(t);
        CHECK_EQ_INT(t->type, f.type);
        CHECK_EQ_INT(t->nbytes, 3 * rb);
        CHECK(memcmp(t->data, data, 3 * rb) == 0);
        CHECK_EQ_INT(kv_gguf_find_tensor(g, "after")->offset, (3 * rb + 31) / 32 * 32);
        kv_gguf_close(g);

        /* an unknown format name leaves the tensor's size unknown: refused, naming the tensor */
        size_t size;
        uint8_t *bytes = kv_test_read_file(path, &size);
        REQUIRE(bytes);
        uint8_t *hit = memmem(bytes, size, names[k], strlen(names[k]));
        REQUIRE(hit);
        memset(hit, 'z', strlen(names[k]));
        kv_gguf *g2 = NULL;
        kv_status st = kv_gguf_open_memory(bytes, size, "swapped.gguf", &g2, &err);
        kv_gguf_close(g2);
        CHECK_EQ_INT(st, KV_EUNSUPPORTED);
        CHECK(strstr(err.message, "zzzz") != NULL);
        CHECK_STR(err.tensor, "blk.0.ffn_up.weight");
        free(bytes);
        free(data);
    }
}

/* ---- convert of small generated HF checkpoints ---------------------------------------------------- */

typedef struct tiny_t { const char *name; int64_t rows, cols; } tiny_t;

/* Writes DIR/config.json and DIR/model.safetensors (f32, values from the tensor index) for a 1-layer model
 * with hidden 8, 2 heads of 4, 1 kv head, ff 16, vocab 16. */
static int write_tiny_hf(const char *dir, const char *config, int biases) {
    static const tiny_t base[] = {
        {"model.embed_tokens.weight", 16, 8}, {"model.layers.0.input_layernorm.weight", 0, 8},
        {"model.layers.0.self_attn.q_proj.weight", 8, 8}, {"model.layers.0.self_attn.k_proj.weight", 4, 8},
        {"model.layers.0.self_attn.v_proj.weight", 4, 8}, {"model.layers.0.self_attn.o_proj.weight", 8, 8},
        {"model.layers.0.post_attention_layernorm.weight", 0, 8}, {"model.layers.0.mlp.gate_proj.weight", 16, 8},
        {"model.layers.0.mlp.up_proj.weight", 16, 8}, {"model.layers.0.mlp.down_proj.weight", 8, 16},
        {"model.norm.weight", 0, 8}, {"lm_head.weight", 16, 8},
        {"model.layers.0.self_attn.q_proj.bias", 0, 8}, {"model.layers.0.self_attn.k_proj.bias", 0, 4},
        {"model.layers.0.self_attn.v_proj.bias", 0, 4},
    };
    size_t n = biases ? KV_ARRAY_LEN(base) : KV_ARRAY_LEN(base) - 3;
    char path[900], header[4096];
    size_t hl = (size_t)snprintf(header, sizeof header, "{");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t count = (uint64_t)(base[i].rows ? base[i].rows : 1) * (uint64_t)base[i].cols;
        if (base[i].rows)
            hl += (size_t)snprintf(header + hl, sizeof header - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                                   i ? "," : "", base[i].name, (long long)base[i].rows, (long long)base[i].cols,
                                   (unsigned long long)off, (unsigned long long)(off + 4 * count));
        else
            hl += (size_t)snprintf(header + hl, sizeof header - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}",
                                   i ? "," : "", base[i].name, (long long)base[i].cols, (unsigned long long)off,
                                   (unsigned long long)(off + 4 * count));
        off += 4 * count;
    }
    hl += (size_t)snprintf(header + hl, sizeof header - hl, "}");
    size_t total = 8 + hl + (size_t)off;
    uint8_t *buf = calloc(1, total);
    if (!buf) return -1;
    uint64_t hl64 = hl;
    memcpy(buf, &hl64, 8);
    memcpy(buf + 8, header, hl);
    float *vals = (float *)(void *)(buf + 8 + hl);
    for (uint64_t i = 0; i < off / 4; i++) {
        float v = (float)((int)(i % 97) - 48) / 16.0f; /* exact in f16 and bf16 */
        memcpy((uint8_t *)vals + 4 * i, &v, 4);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = kv_test_write_file(path, buf, total);
    free(buf);
    snprintf(path, sizeof path, "%s/config.json", dir);
    return rc | kv_test_write_file(path, config, strlen(config));
}

#define TINY_CONFIG_COMMON "\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1," \
    "\"intermediate_size\":16,\"vocab_size\":16,\"max_position_embeddings\":64,\"rms_norm_eps\":1e-6,\"rope_theta\":500000.0," \
    "\"tie_word_embeddings\":false,\"bos_token_id\":1,\"eos_token_id\":2"

KV_TEST(convert_tiny_llama3_mistral_qwen2) {
    static const struct { const char *dir, *config; int biases; const char *arch; int permuted; } cases[] = {
        {"llama3", "{\"model_type\":\"llama\"," TINY_CONFIG_COMMON ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                   "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}}", 0, "llama", 1},
        {"mistral", "{\"model_type\":\"mistral\"," TINY_CONFIG_COMMON "}", 0, "llama", 1},
        {"qwen2", "{\"model_type\":\"qwen2\"," TINY_CONFIG_COMMON "}", 1, "qwen2", 0},
    };
    for (size_t c = 0; c < KV_ARRAY_LEN(cases); c++) {
        char dir[700], out[800];
        snprintf(dir, sizeof dir, "%s/%s", kv_test_tmpdir(), cases[c].dir);
        REQUIRE(mkdir_p(dir) == 0);
        REQUIRE(write_tiny_hf(dir, cases[c].config, cases[c].biases) == 0);
        snprintf(out, sizeof out, "%s/%s.gguf", kv_test_tmpdir(), cases[c].dir);
        kv_error err;
        REQUIRE_OK(kv_gguf_convert(dir, out, KV_TYPE_F16, 1, NULL, &err), &err);
        kv_gguf *g;
        REQUIRE_OK(kv_gguf_open(out, &g, &err), &err);
        const char *s;
        CHECK_OK(kv_gguf_get_str(g, "general.architecture", &s, &err), &err);
        CHECK_STR(s, cases[c].arch);
        char key[64];
        uint32_t u;
        snprintf(key, sizeof key, "%s.attention.head_count_kv", cases[c].arch);
        CHECK_OK(kv_gguf_get_u32(g, key, &u, &err), &err);
        CHECK_EQ_INT(u, 1);
        CHECK_EQ_INT(kv_gguf_find_key(g, "llama.vocab_size") >= 0, !strcmp(cases[c].arch, "llama"));
        CHECK(kv_gguf_find_key(g, "tokenizer.ggml.model") < 0); /* no tokenizer file in the directory */
        const kv_gguf_tensor *q = kv_gguf_find_tensor(g, "blk.0.attn_q.weight");
        REQUIRE(q && q->type == KV_TYPE_F16 && q->shape[0] == 8 && q->shape[1] == 8);
        /* q rows: HF row 2 (head 0, second half) is GGUF row 1 after the permutation; f16 values are exact */
        kv_model_file *mf;
        REQUIRE_OK(kv_model_open(dir, &mf, &err), &err);
        const kv_tensor *hq = kv_model_find(mf, "blk.0.attn_q.weight");
        REQUIRE(hq);
        float hf_row2[8], gg_row1[8], gg_row2[8];
        REQUIRE_OK(kv_tensor_row_f32(hq, 2, hf_row2, &err), &err);
        kv_fp16_to_fp32_row((const uint16_t *)q->data + 8, gg_row1, 8);
        kv_fp16_to_fp32_row((const uint16_t *)q->data + 16, gg_row2, 8);
        CHECK(memcmp(cases[c].permuted ? gg_row1 : gg_row2, hf_row2, sizeof hf_row2) == 0);
        kv_model_close(mf);
        const kv_gguf_tensor *qb = kv_gguf_find_tensor(g, "blk.0.attn_q.bias");
        CHECK_EQ_INT(qb != NULL, cases[c].biases);
        if (qb) CHECK_EQ_INT(qb->type, KV_TYPE_F32);
        const kv_gguf_tensor *rf = kv_gguf_find_tensor(g, "rope_freqs.weight");
        CHECK_EQ_INT(rf != NULL, c == 0);
        if (rf) {
            /* head_dim 4: two frequencies, wavelengths 2*pi and 2*pi*500000^0.5; against 64/4 and 64/1 the
             * first is a high frequency (factor 1), the second a low one (the full factor 8) */
            REQUIRE(rf->n_dims == 1 && rf->shape[0] == 2 && rf->type == KV_TYPE_F32);
            CHECK(kv_rd_f32(rf->data) == 1.0f);
            CHECK(kv_rd_f32((const uint8_t *)rf->data + 4) == 8.0f);
        }
        kv_gguf_close(g);
        check_same_tensors(T, dir, out, 1);
    }
}

/* A byte-level BPE tokenizer.json: the 256 byte symbols, two merges, one special token. */
static int write_tiny_tokenizer_json(const char *dir) {
    size_t cap = 16384, n = 0;
    char *s = malloc(cap);
    if (!s) return -1;
    n += (size_t)snprintf(s + n, cap - n, "{\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        uint32_t cp = kv_bpe_byte_to_cp((uint8_t)b);
        char u[8];
        size_t ul = 0;
        if (cp == '"' || cp == '\\') u[ul++] = '\\', u[ul++] = (char)cp;
        else if (cp < 0x80) u[ul++] = (char)cp;
        else u[ul++] = (char)(0xC0 | (cp >> 6)), u[ul++] = (char)(0x80 | (cp & 0x3F));
        n += (size_t)snprintf(s + n, cap - n, "\"%.*s\":%d,", (int)ul, u, b);
    }
    n += (size_t)snprintf(s + n, cap - n,
                          "\"\xc4\xa0t\":256,\"he\":257},\"merges\":[\"\xc4\xa0 t\",\"h e\"]},"
                          "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
                          "\"added_tokens\":[{\"id\":258,\"content\":\"<|endoftext|>\",\"special\":true}]}");
    char path[900];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int rc = n < cap ? kv_test_write_file(path, s, n) : -1;
    free(s);
    return rc;
}

KV_TEST(convert_bpe_tokenizer_json) {
    char dir[700], out[800];
    snprintf(dir, sizeof dir, "%s/bpe", kv_test_tmpdir());
    REQUIRE(mkdir_p(dir) == 0);
    REQUIRE(write_tiny_hf(dir, "{\"model_type\":\"llama\"," TINY_CONFIG_COMMON "}", 0) == 0);
    REQUIRE(write_tiny_tokenizer_json(dir) == 0);
    snprintf(out, sizeof out, "%s/bpe.gguf", kv_test_tmpdir());
    kv_error err;
    REQUIRE_OK(kv_gguf_convert(dir, out, KV_TYPE_BF16, 1, NULL, &err), &err);
    kv_gguf *g;
    REQUIRE_OK(kv_gguf_open(out, &g, &err), &err);
    const char *s;
    CHECK_OK(kv_gguf_get_str(g, "tokenizer.ggml.model", &s, &err), &err);
    CHECK_STR(s, "gpt2");
    CHECK_OK(kv_gguf_get_str(g, "tokenizer.ggml.pre", &s, &err), &err);
    CHECK(s && s[0]);
    CHECK(kv_gguf_find_key(g, "tokenizer.ggml.scores") < 0);
    kv_gguf_value toks, types, merges, e;
    REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, &err), &err);
    CHECK_EQ_INT(toks.n, 259);
    REQUIRE_OK(kv_gguf_arr_get(&toks, 256, &e, &err), &err);
    CHECK(e.n == 3 && !memcmp(e.data, "\xc4\xa0t", 3));
    REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.token_type", &types, &err), &err);
    REQUIRE(types.n == 259);
    CHECK_EQ_INT((int32_t)kv_rd_u32((const uint8_t *)types.data + 4 * 258), KV_TOKEN_CONTROL);
    CHECK_EQ_INT((int32_t)kv_rd_u32((const uint8_t *)types.data + 4 * 65), KV_TOKEN_NORMAL);
    REQUIRE_OK(kv_gguf_get_arr(g, "tokenizer.ggml.merges", &merges, &err), &err);
    REQUIRE(merges.n == 2);
    REQUIRE_OK(kv_gguf_arr_get(&merges, 0, &e, &err), &err);
    CHECK(e.n == 4 && !memcmp(e.data, "\xc4\xa0 t", 4));
    REQUIRE_OK(kv_gguf_arr_get(&merges, 1, &e, &err), &err);
    CHECK(e.n == 3 && !memcmp(e.data, "h e", 3));
    uint32_t bos;
    CHECK_OK(kv_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &bos, &err), &err);
    CHECK_EQ_INT(bos, 1);
    kv_gguf_close(g);
    /* the written vocabulary loads back as the same tokenizer */
    kv_tokenizer *a, *b;
    char tj[900];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    REQUIRE_OK(kv_tokenizer_load_hf_json(tj, &a, &err), &err);
    kv_status st = kv_tokenizer_load_gguf(out, &b, &err);
    if (st) kv_tokenizer_free(a);
    REQUIRE_OK(st, &err);
    const char *text = "the hehe tt";
    int32_t *ia = NULL, *ib = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(kv_tokenize(a, text, strlen(text), 0, &ia, &na, &err), &err);
    CHECK_OK(kv_tokenize(b, text, strlen(text), 0, &ib, &nb, &err), &err);
    CHECK(na == nb && na > 0 && !memcmp(ia, ib, na * sizeof *ia));
    free(ia);
    free(ib);
    kv_tokenizer_free(a);
    kv_tokenizer_free(b);
}

KV_TEST(convert_gguf_source_retypes_and_keeps_tokenizer) {
    char src[600], out[600];
    kv_test_shared(src, sizeof src, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    if (!kv_test_exists(src)) SKIP("proxy-27m-gguf missing under ../shared");
    tmp_path(out, sizeof out, "proxy-f16-from-gguf.gguf");
    kv_error err;
    REQUIRE_OK(kv_gguf_convert(src, out, KV_TYPE_F16, 1, NULL, &err), &err);
    kv_gguf *a, *b;
    REQUIRE_OK(kv_gguf_open(src, &a, &err), &err);
    REQUIRE_OK(kv_gguf_open(out, &b, &err), &err);
    /* every key of the source is in the output with the same value, but the file type */
    for (int64_t i = 0; i < kv_gguf_n_kv(a); i++) {
        const char *key = kv_gguf_kv_key(a, i);
        const kv_gguf_value *va = kv_gguf_kv_value(a, i), *vb = kv_gguf_find(b, key);
        CHECK_MSG(vb != NULL, "key %s missing", key);
        if (!vb || !strcmp(key, "general.file_type")) continue;
        CHECK_MSG(va->type == vb->type && va->raw_size == vb->raw_size &&
                      !memcmp((const uint8_t *)va->data - (va->type == KV_GGUF_STRING ? 8 : va->type == KV_GGUF_ARRAY ? 12 : 0),
                              (const uint8_t *)vb->data - (vb->type == KV_GGUF_STRING ? 8 : vb->type == KV_GGUF_ARRAY ? 12 : 0),
                              (size_t)va->raw_size),
                  "key %s differs", key);
    }
    uint32_t ft;
    CHECK_OK(kv_gguf_get_u32(b, "general.file_type", &ft, &err), &err);
    CHECK_EQ_INT(ft, 1);
    /* same rows in llama.cpp's layout: the q/k permutation is undone on reading and redone on writing */
    const kv_gguf_tensor *qa = kv_gguf_find_tensor(a, "blk.2.attn_q.weight"), *qb = kv_gguf_find_tensor(b, "blk.2.attn_q.weight");
    REQUIRE(qa && qb && qb->type == KV_TYPE_F16);
    int64_t n = qa->shape[0] * qa->shape[1], bad = 0;
    for (int64_t k = 0; k < n; k++) {
        float x = kv_bf16_to_fp32(kv_rd_u16((const uint8_t *)qa->data + 2 * k));
        if (kv_fp32_to_fp16(x) != kv_rd_u16((const uint8_t *)qb->data + 2 * k)) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    kv_gguf_close(a);
    kv_gguf_close(b);
    check_same_tensors(T, src, out, 1);
}

/* Overlap detection must see past empty tensors: A [0, 64), Z empty at 32, C [32, 64) overlaps A. */
KV_TEST(gguf_overlap_hidden_behind_empty_tensor) {
    kv_error err;
    char path[600];
    tmp_path(path, sizeof path, "ovl.gguf");
    float data[16] = {0};
    int64_t s16[1] = {16}, s0[1] = {0}, s8[1] = {8};
    kv_gguf_writer *w;
    REQUIRE_OK(kv_gguf_writer_create(&w, &err), &err);
    CHECK_OK(kv_gguf_writer_add_tensor(w, "A", 1, s16, KV_TYPE_F32, data, &err), &err);
    CHECK_OK(kv_gguf_writer_add_tensor(w, "Z", 1, s0, KV_TYPE_F32, NULL, &err), &err);
    CHECK_OK(kv_gguf_writer_add_tensor(w, "C", 1, s8, KV_TYPE_F32, data, &err), &err);
    REQUIRE_OK(kv_gguf_writer_write(w, path, NULL, &err), &err);
    kv_gguf_writer_free(w);
    size_t size;
    uint8_t *bytes = kv_test_read_file(path, &size);
    REQUIRE(bytes);
    kv_gguf *g;
    REQUIRE_OK(kv_gguf_open_memory(bytes, size, "ovl.gguf", &g, &err), &err);
    CHECK_EQ_INT(kv_gguf_find_tensor(g, "Z")->nbytes, 0);
    /* the offset field: name (8 + 1 bytes), n_dims (4), one dim (8), type (4) */
    uint64_t z_off = kv_gguf_find_tensor(g, "Z")->info_offset + 8 + 1 + 4 + 8 + 4;
    uint64_t c_off = kv_gguf_find_tensor(g, "C")->info_offset + 8 + 1 + 4 + 8 + 4;
    kv_gguf_close(g);
    kv_wr_u64(bytes + z_off, 32);
    kv_wr_u64(bytes + c_off, 32);
    CHECK_EQ_INT(kv_gguf_open_memory(bytes, size, "ovl.gguf", &g, &err), KV_EFORMAT);
    CHECK_STR(err.tensor, "C");
    CHECK(strstr(err.message, "overlaps tensor 'A'") != NULL);
    free(bytes);
}

/* ---- one metadata writer for convert and quantize (issue 12) ----------------------------------------- */

/* Every key/value of a (convert's output) appears in b (quantize's output) in the same order with the same
 * type and bytes; b's other keys are kvant.* ones. */
static void check_same_metadata(kv_test_ctx *T, const char *what, const kv_gguf *a, const kv_gguf *b) {
    size_t na, nb;
    const uint8_t *ba = kv_gguf_bytes(a, &na), *bb = kv_gguf_bytes(b, &nb);
    int64_t j = 0;
    for (int64_t i = 0; i < kv_gguf_n_kv(a); i++) {
        const char *key = kv_gguf_kv_key(a, i);
        while (j < kv_gguf_n_kv(b) && strcmp(kv_gguf_kv_key(b, j), key)) {
            CHECK_MSG(!strncmp(kv_gguf_kv_key(b, j), "kvant.", 6), "%s: quantize writes '%s', convert does not", what,
                      kv_gguf_kv_key(b, j));
            j++;
        }
        if (j == kv_gguf_n_kv(b)) {
            kv_test_fail(T, __FILE__, __LINE__, "%s: key '%s' of convert's output missing or out of order", what, key);
            return;
        }
        const kv_gguf_value *va = kv_gguf_kv_value(a, i), *vb = kv_gguf_kv_value(b, j);
        CHECK_MSG(va->type == vb->type && va->raw_size == vb->raw_size &&
                      !memcmp(ba + va->offset, bb + vb->offset, (size_t)va->raw_size),
                  "%s: key '%s' differs between convert and quantize", what, key);
        j++;
    }
    for (; j < kv_gguf_n_kv(b); j++)
        CHECK_MSG(!strncmp(kv_gguf_kv_key(b, j), "kvant.", 6), "%s: quantize writes '%s', convert does not", what,
                  kv_gguf_kv_key(b, j));
}

/* quantize --format f16 of a Llama 3 / Mistral / Qwen2 directory writes convert's f16 output: the same keys
 * and values in the same order (plus kvant.*), the same architecture (Mistral as llama), the same tensors with
 * q/k rows permuted for llama only, and rope_freqs.weight for llama3 rope scaling. */
KV_TEST(quantize_tiny_llama3_mistral_qwen2_metadata_is_converts) {
    static const struct { const char *dir, *config; int biases; } cases[] = {
        {"ql3", "{\"model_type\":\"llama\"," TINY_CONFIG_COMMON ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}}", 0},
        {"qmistral", "{\"architectures\":[\"MistralForCausalLM\"],\"model_type\":\"mistral\"," TINY_CONFIG_COMMON "}", 0},
        {"qqwen2", "{\"model_type\":\"qwen2\"," TINY_CONFIG_COMMON "}", 1},
    };
    for (size_t c = 0; c < KV_ARRAY_LEN(cases); c++) {
        char dir[700], conv[800], quant[800];
        snprintf(dir, sizeof dir, "%s/%s", kv_test_tmpdir(), cases[c].dir);
        REQUIRE(mkdir_p(dir) == 0);
        REQUIRE(write_tiny_hf(dir, cases[c].config, cases[c].biases) == 0);
        /* its 259 tokens against a vocab of 16: llama.cpp would take 259 for a qwen2 file (no vocab_size key) */
        if (strcmp(cases[c].dir, "qqwen2")) REQUIRE(write_tiny_tokenizer_json(dir) == 0);
        snprintf(conv, sizeof conv, "%s/%s_conv.gguf", kv_test_tmpdir(), cases[c].dir);
        snprintf(quant, sizeof quant, "%s/%s_quant.gguf", kv_test_tmpdir(), cases[c].dir);
        kv_error err;
        REQUIRE_OK(kv_gguf_convert(dir, conv, KV_TYPE_F16, 1, NULL, &err), &err);
        kv_quantize_opts o = {0};
        o.format = "f16";
        o.quiet = 1;
        REQUIRE_OK(kv_quantize_model(dir, quant, &o, NULL, &err), &err);
        kv_gguf *a, *b;
        REQUIRE_OK(kv_gguf_open(conv, &a, &err), &err);
        REQUIRE_OK(kv_gguf_open(quant, &b, &err), &err);
        check_same_metadata(T, cases[c].dir, a, b);
        CHECK_EQ_INT(kv_gguf_n_tensors(a), kv_gguf_n_tensors(b));
        for (int64_t i = 0; i < kv_gguf_n_tensors(a); i++) {
            const kv_gguf_tensor *ta = kv_gguf_tensor_at(a, i), *tb = kv_gguf_find_tensor(b, ta->name);
            CHECK_MSG(tb != NULL, "%s: quantize leaves out %s", cases[c].dir, ta->name);
            if (!tb) continue;
            CHECK_MSG(ta->type == tb->type && ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes),
                      "%s: %s differs between convert and quantize", cases[c].dir, ta->name);
        }
        kv_gguf_close(a);
        kv_gguf_close(b);
        check_same_tensors(T, dir, quant, 1); /* and kvant reads the quantized file back as the source */
    }
}

/* proxy-27m's files under DIR with config.json saying Mistral (model_type, architectures). */
static int make_mistral_proxy(const char *rel_src, const char *dir) {
    char src[PATH_MAX];
    if (mkdir_p(dir) || !realpath(rel_src, src)) return -1; /* the links must not be relative */
    DIR *d = opendir(src);
    if (!d) return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && !rc) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "config.json") || !strcmp(e->d_name, "ref")) continue;
        char a[PATH_MAX + 300], b[1200];
        snprintf(a, sizeof a, "%s/%s", src, e->d_name);
        snprintf(b, sizeof b, "%s/%s", dir, e->d_name);
        rc = symlink(a, b);
    }
    closedir(d);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", src);
    size_t n = 0;
    char *cfg = kv_test_read_file(path, &n);
    if (rc || !cfg) { free(cfg); return -1; }
    char *out = malloc(n + 64), *p = out;
    for (const char *s = cfg; *s;) {
        if (!strncmp(s, "\"llama\"", 7)) p += sprintf(p, "\"mistral\""), s += 7;
        else if (!strncmp(s, "LlamaForCausalLM", 16)) p += sprintf(p, "MistralForCausalLM"), s += 16;
        else *p++ = *s++;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = kv_test_write_file(path, out, (size_t)(p - out));
    free(cfg);
    free(out);
    return rc;
}

#define MISTRAL_N_IDS 64
static float *proxy_logits(kv_test_ctx *T, const char *path, const int32_t *ids, int64_t *vocab) {
    static const kv_model_load_opts lo = {.rope_freq = KV_ROPE_FREQ_BF16}; /* the HF source's frequencies */
    return kv_test_model_logits(T, path, ids, MISTRAL_N_IDS, vocab, &lo);
}

/* llama-perplexity's "Final estimate: PPL = X" on the first 4 windows of 128 tokens; <0 when it failed. */
static double llama_cpp_ppl(const char *bin_dir, const char *model, const char *text, char *log, size_t n) {
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "'%s/llama-perplexity' -m '%s' -f '%s' -c 128 --chunks 4 -t 2 2>&1", bin_dir, model, text);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t len = 0;
    double ppl = -1;
    char line[4096];
    log[0] = 0;
    while (fgets(line, sizeof line, p)) {
        const char *f = strstr(line, "Final estimate: PPL = ");
        if (f) ppl = atof(f + 22);
        size_t l = strlen(line);
        if (len + l + 1 < n) memcpy(log + len, line, l + 1), len += l; /* the head of the log, for a failure */
    }
    return pclose(p) == 0 ? ppl : -1;
}

/* A Mistral-config directory is quantized as llama.cpp converts it (arch llama, q/k permuted): the same tensors
 * as the Llama-config directory's, the same logits in kvant as the source (bf16 output: equal; q8_0: close), and
 * when LLAMA_CPP_DIR is set, llama-perplexity runs it with the PPL of llama.cpp's own bf16 conversion. */
KV_TEST(quantize_mistral_config_runs_as_llama) {
    char src[512], gsrc[512], wiki[512], dir[700], m8[800], l8[800], mb[800];
    kv_test_shared(src, sizeof src, "models/proxy-27m");
    kv_test_shared(gsrc, sizeof gsrc, "models/proxy-27m-gguf/proxy-27m-bf16.gguf");
    kv_test_shared(wiki, sizeof wiki, "data/wikitext2-test.txt");
    if (!kv_test_exists(src)) SKIP("proxy-27m absent");
    snprintf(dir, sizeof dir, "%s/mistral", kv_test_tmpdir());
    REQUIRE(make_mistral_proxy(src, dir) == 0);
    snprintf(m8, sizeof m8, "%s/m8.gguf", kv_test_tmpdir());
    snprintf(l8, sizeof l8, "%s/l8.gguf", kv_test_tmpdir());
    snprintf(mb, sizeof mb, "%s/mb.gguf", kv_test_tmpdir());
    kv_error err = {0};
    kv_quantize_opts o = {0};
    o.quiet = 1;
    o.format = "q8_0";
    REQUIRE_OK(kv_quantize_model(dir, m8, &o, NULL, &err), &err);
    REQUIRE_OK(kv_quantize_model(src, l8, &o, NULL, &err), &err);
    o.format = "bf16";
    REQUIRE_OK(kv_quantize_model(dir, mb, &o, NULL, &err), &err);
    kv_gguf *a, *b;
    REQUIRE_OK(kv_gguf_open(m8, &a, &err), &err);
    REQUIRE_OK(kv_gguf_open(l8, &b, &err), &err);
    const char *arch;
    CHECK_OK(kv_gguf_get_str(a, "general.architecture", &arch, &err), &err);
    CHECK_STR(arch, "llama");
    CHECK_EQ_INT(kv_gguf_n_tensors(a), kv_gguf_n_tensors(b));
    for (int64_t i = 0; i < kv_gguf_n_tensors(a); i++) {
        const kv_gguf_tensor *ta = kv_gguf_tensor_at(a, i), *tb = kv_gguf_find_tensor(b, ta->name);
        CHECK_MSG(tb && ta->type == tb->type && ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes),
                  "%s: Mistral-config and Llama-config outputs differ", ta->name);
    }
    kv_gguf_close(a);
    kv_gguf_close(b);

    int32_t ids[MISTRAL_N_IDS];
    REQUIRE(kv_test_proxy_ref_ids(ids, MISTRAL_N_IDS) == MISTRAL_N_IDS);
    int64_t V = 0;
    float *ref = proxy_logits(T, dir, ids, &V), *lb = proxy_logits(T, mb, ids, &V), *l8q = proxy_logits(T, m8, ids, &V);
    if (ref && lb && l8q) {
        double db = 0, d8 = 0;
        int agree = 0;
        for (int64_t t = 0; t < MISTRAL_N_IDS; t++) {
            int64_t ar = 0, a8 = 0;
            for (int64_t v = 0; v < V; v++) {
                int64_t k = t * V + v;
                db = fmax(db, fabs((double)ref[k] - lb[k]));
                d8 = fmax(d8, fabs((double)ref[k] - l8q[k]));
                if (ref[k] > ref[t * V + ar]) ar = v;
                if (l8q[k] > l8q[t * V + a8]) a8 = v;
            }
            agree += ar == a8;
        }
        CHECK_MSG(db <= 1e-4, "bf16 output vs the Mistral source: max abs logit difference %g", db);
        CHECK_MSG(d8 <= 0.5 && agree >= MISTRAL_N_IDS - 4, "q8_0 output vs the source: max abs logit difference %g, "
                  "argmax agrees %d/%d", d8, agree, MISTRAL_N_IDS);
    }
    free(ref);
    free(lb);
    free(l8q);

    const char *bin = getenv("LLAMA_CPP_DIR");
    if (!bin || !*bin) return; /* the llama.cpp half is optional */
    if (!kv_test_exists(gsrc) || !kv_test_exists(wiki)) SKIP("proxy-27m-gguf or wikitext absent");
    char log[4096];
    double p8 = llama_cpp_ppl(bin, m8, wiki, log, sizeof log);
    CHECK_MSG(p8 > 0, "llama-perplexity on the Mistral-config q8_0 file failed:\n%s", log);
    double pref = llama_cpp_ppl(bin, gsrc, wiki, log, sizeof log);
    CHECK_MSG(pref > 0, "llama-perplexity on llama.cpp's bf16 conversion failed:\n%s", log);
    if (p8 > 0 && pref > 0)
        CHECK_MSG(fabs(p8 - pref) <= 0.02 * pref, "llama-perplexity: q8_0 of the Mistral config %.4f vs bf16 %.4f", p8, pref);
}
