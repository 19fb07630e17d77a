/* test_ecw.c — entropy-coded weights as a GGUF tensor type (KV_TYPE_ECW, docs/FORMAT.md "kvant ECW"): the
 * container round-trips through the GGUF writer and reader bit for bit, bad sizes and corrupt containers are
 * refused with the file, offset and tensor named; version 5 containers (`--entropy-code`) decode to exactly what
 * the integer formats' dequantize gives; WaterSIC's GGUF on proxy-27m stores the containers, its size tracks the
 * entropy, and the model kvant runs is exactly the decoded weights. */
#include "test.h"
#include "../src/algos/linalg.h"

static float *gauss(int64_t n, uint64_t seed) {
    float *w = malloc(sizeof(float) * (size_t)n);
    kv_rng rng;
    kv_rng_seed(&rng, seed);
    for (int64_t i = 0; i < n; i++) w[i] = (float)kv_rng_normal(&rng);
    return w;
}

/* A WaterSIC container of a rows × cols Gaussian matrix (identity H) at 3 bits. */
static int make_container(kv_test_ctx *T, int64_t rows, int64_t cols, uint8_t **blob, size_t *size, float **wq) {
    float *w = gauss(rows * cols, 11);
    double *h = calloc((size_t)(cols * cols), sizeof(double));
    for (int64_t i = 0; i < cols; i++) h[i * cols + i] = 1.0 + 0.01 * (double)i;
    kv_watersic_opts o;
    kv_watersic_opts_default(&o);
    o.target_bits = 3;
    kv_watersic_result r;
    kv_error err;
    kv_error_clear(&err);
    int ok = kv_watersic_quantize(w, rows, cols, h, &o, &r, NULL, &err) == KV_OK &&
             kv_ecw_encode(r.z, rows, cols, r.col_step, r.row_scale, blob, size, &err) == KV_OK;
    CHECK_MSG(ok, "container: %s", err.message);
    if (ok && wq) {
        *wq = r.wq;
        r.wq = NULL;
    }
    kv_watersic_result_free(&r);
    free(w);
    free(h);
    return ok;
}

/* A GGUF holding one f32 vector and the ECW tensor "blk.0.attn_q.weight". */
static int write_gguf(kv_test_ctx *T, const char *path, const uint8_t *blob, size_t size, int64_t rows, int64_t cols) {
    kv_gguf_writer *w;
    kv_error err;
    kv_error_clear(&err);
    static const float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const int64_t s1[1] = {8};
    kv_status st = kv_gguf_writer_create(&w, &err);
    if (!st) st = kv_gguf_writer_add_str(w, "general.name", "ecw test", &err);
    if (!st) st = kv_gguf_writer_add_tensor(w, "output_norm.weight", 1, s1, KV_TYPE_F32, v, &err);
    if (!st) st = kv_gguf_writer_add_tensor_ecw(w, "blk.0.attn_q.weight", rows, cols, blob, size, &err);
    if (!st) st = kv_gguf_writer_write(w, path, NULL, &err);
    kv_gguf_writer_free(w);
    CHECK_MSG(st == KV_OK, "write: %s", err.message);
    return st == KV_OK;
}

KV_TEST(ecw_gguf_type_roundtrip) {
    const int64_t rows = 70, cols = 96;
    uint8_t *blob;
    size_t size;
    float *wq;
    if (!make_container(T, rows, cols, &blob, &size, &wq)) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/ecw.gguf", kv_test_tmpdir());
    if (!write_gguf(T, path, blob, size, rows, cols)) return;
    kv_error err;
    kv_gguf *g;
    REQUIRE_OK(kv_gguf_open(path, &g, &err), &err);
    const kv_gguf_tensor *t = kv_gguf_find_tensor(g, "blk.0.attn_q.weight");
    REQUIRE(t != NULL);
    CHECK_EQ_INT(t->type, KV_TYPE_ECW);
    CHECK_EQ_INT(t->nbytes, size);
    CHECK_EQ_INT(t->shape[0], rows);
    CHECK_EQ_INT(t->shape[1], cols);
    CHECK(memcmp(t->data, blob, size) == 0);
    const char *fmt = NULL;
    uint64_t bytes = 0;
    CHECK_OK(kv_gguf_get_str(g, "kvant.tensor.blk.0.attn_q.weight.format", &fmt, &err), &err);
    CHECK_STR(fmt, "ecw");
    CHECK_OK(kv_gguf_get_u64(g, "kvant.tensor.blk.0.attn_q.weight.bytes", &bytes, &err), &err);
    CHECK_EQ_INT(bytes, size);
    kv_gguf_close(g);

    /* decoded through the model file: bit-identical to kv_ecw_decode and to WaterSIC's own Ŵ */
    kv_model_file *mf;
    REQUIRE_OK(kv_model_open(path, &mf, &err), &err);
    const kv_tensor *mt = kv_model_find(mf, "blk.0.attn_q.weight");
    REQUIRE(mt != NULL);
    float *a = malloc(sizeof(float) * (size_t)(rows * cols)), *b = malloc(sizeof(float) * (size_t)(rows * cols));
    CHECK_OK(kv_tensor_to_f32(mt, a, &err), &err);
    CHECK_OK(kv_ecw_decode(blob, size, NULL, NULL, NULL, b, &err), &err);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)(rows * cols)) == 0);
    CHECK(memcmp(a, wq, sizeof(float) * (size_t)(rows * cols)) == 0);
    kv_pool *pool = kv_pool_create(2);
    memset(a, 0, sizeof(float) * (size_t)(rows * cols));
    CHECK_OK(kv_ecw_tensor_to_f32(mf, mt, a, pool, &err), &err);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)(rows * cols)) == 0);
    kv_pool_destroy(pool);
    /* no fixed-size rows: a row read is refused, naming the tensor */
    kv_error_clear(&err);
    CHECK(kv_tensor_row_f32(mt, 0, a, &err) == KV_EUNSUPPORTED);
    CHECK(strstr(err.message, "ecw") != NULL && !strcmp(err.tensor, "blk.0.attn_q.weight"));
    kv_model_close(mf);

    /* the writer refuses a container that does not match the shape, and the fixed-size entry point */
    kv_gguf_writer *w;
    REQUIRE_OK(kv_gguf_writer_create(&w, &err), &err);
    CHECK(kv_gguf_writer_add_tensor_ecw(w, "x", rows + 1, cols, blob, size, &err) == KV_EINVAL);
    const int64_t shape[2] = {rows, cols};
    CHECK(kv_gguf_writer_add_tensor(w, "y", 2, shape, KV_TYPE_ECW, blob, &err) == KV_EINVAL);
    kv_gguf_writer_free(w);
    free(a);
    free(b);
    free(wq);
    free(blob);
}

/* Opens a patched copy of the file: returns the status and fills err. */
static kv_status open_patched(const uint8_t *file, size_t n, size_t at, const void *patch, size_t pn, kv_error *err,
                              float *dst) {
    uint8_t *copy = malloc(n);
    memcpy(copy, file, n);
    memcpy(copy + at, patch, pn);
    kv_gguf *g;
    kv_error_clear(err);
    kv_status st = kv_gguf_open_memory(copy, n, "bad.gguf", &g, err);
    if (st == KV_OK) {
        /* header accepted: the streams are checked when decoded */
        const kv_gguf_tensor *t = kv_gguf_find_tensor(g, "blk.0.attn_q.weight");
        st = kv_ecw_decode_f32(t->data, (size_t)t->nbytes, t->shape[0], t->shape[1], dst, NULL, err);
        kv_gguf_close(g);
    }
    free(copy);
    return st;
}

KV_TEST(ecw_gguf_bad_size_and_corrupt_container) {
    const int64_t rows = 64, cols = 64;
    uint8_t *blob;
    size_t size;
    if (!make_container(T, rows, cols, &blob, &size, NULL)) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/ecw.gguf", kv_test_tmpdir());
    if (!write_gguf(T, path, blob, size, rows, cols)) return;
    size_t n;
    uint8_t *file = kv_test_read_file(path, &n);
    REQUIRE(file != NULL);
    kv_gguf *g;
    kv_error err;
    REQUIRE_OK(kv_gguf_open_memory(file, n, "ok.gguf", &g, &err), &err);
    const kv_gguf_value *bv = kv_gguf_find(g, "kvant.tensor.blk.0.attn_q.weight.bytes");
    const kv_gguf_tensor *t = kv_gguf_find_tensor(g, "blk.0.attn_q.weight");
    REQUIRE(bv && t);
    size_t bytes_at = (size_t)bv->offset, data_at = (size_t)(kv_gguf_data_offset(g) + t->offset);
    kv_gguf_close(g);
    float *dst = malloc(sizeof(float) * (size_t)(rows * cols));

    /* a size beyond the file */
    uint64_t big = (uint64_t)n * 4;
    CHECK(open_patched(file, n, bytes_at, &big, 8, &err, dst) == KV_EFORMAT);
    CHECK_MSG(strstr(err.message, "bytes") && !strcmp(err.tensor, "blk.0.attn_q.weight") && err.offset >= 0 &&
              !strcmp(err.file, "bad.gguf"), "%s", err.message);
    /* larger than the container but inside the file: overlaps the next tensor or the end */
    uint64_t over = size + 4096;
    CHECK(open_patched(file, n, bytes_at, &over, 8, &err, dst) == KV_EFORMAT);
    /* too small to hold the header */
    uint64_t tiny = 16;
    CHECK(open_patched(file, n, bytes_at, &tiny, 8, &err, dst) == KV_EFORMAT);
    CHECK(!strcmp(err.tensor, "blk.0.attn_q.weight"));
    /* every truncation of the container is refused (header at open, streams at decode), nothing crashes */
    for (uint64_t cut = 32; cut < size; cut += size / 9 + 1) {
        CHECK_MSG(open_patched(file, n, bytes_at, &cut, 8, &err, dst) == KV_EFORMAT, "cut %llu", (unsigned long long)cut);
        CHECK(err.message[0] != 0 && err.offset >= 0);
    }
    /* a bad magic: refused at open, at the tensor's data offset */
    CHECK(open_patched(file, n, data_at, "XXXX", 4, &err, dst) == KV_EFORMAT);
    CHECK_MSG(strstr(err.message, "entropy-coded") && err.offset == (int64_t)data_at &&
              !strcmp(err.tensor, "blk.0.attn_q.weight"), "%s at %lld", err.message, (long long)err.offset);
    /* a header that describes another shape */
    uint64_t rows2 = rows * 2;
    CHECK(open_patched(file, n, data_at + 8, &rows2, 8, &err, dst) == KV_EFORMAT);
    /* a corrupt frequency table: refused at open (the header is checked whole) */
    uint8_t flip = blob[32 + 8 + 1] ^ 0x40;
    CHECK(open_patched(file, n, data_at + 32 + 8 + 1, &flip, 1, &err, dst) == KV_EFORMAT);
    CHECK_MSG(strstr(err.message, "frequenc") != NULL, "%s", err.message);
    /* a flipped byte in the last stream: the header passes, decoding refuses; through the model file the error
     * names the file, the absolute offset and the tensor */
    uint8_t *copy = malloc(n);
    memcpy(copy, file, n);
    copy[data_at + size - 3] ^= 0x40;
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/bad.gguf", kv_test_tmpdir());
    REQUIRE(kv_test_write_file(bad, copy, n) == 0);
    kv_model_file *mf;
    REQUIRE_OK(kv_model_open(bad, &mf, &err), &err);
    kv_error_clear(&err);
    CHECK(kv_ecw_tensor_to_f32(mf, kv_model_find(mf, "blk.0.attn_q.weight"), dst, NULL, &err) == KV_EFORMAT);
    CHECK_MSG(strstr(err.file, "bad.gguf") && err.offset > (int64_t)data_at && !strcmp(err.tensor, "blk.0.attn_q.weight")
              && strstr(err.message, "checksum"), "%s %lld %s: %s", err.file, (long long)err.offset, err.tensor,
              err.message);
    kv_model_close(mf);
    free(copy);
    free(dst);
    free(file);
    free(blob);
}

/* ---- integrity (issue 15): each corruption is refused naming the tensor and the byte offset ---- */

/* CRC-32/ISO-HDLC bit by bit (the documented algorithm, independent of the codec's table-driven one). */
static uint32_t crc32_bitwise(const uint8_t *p, size_t n) {
    uint32_t r = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        r ^= p[i];
        for (int k = 0; k < 8; k++) r = (r >> 1) ^ (0xEDB88320u & (0u - (r & 1)));
    }
    return r ^ 0xFFFFFFFFu;
}

/* Where the fields of a container are, read from its bytes as docs/FORMAT.md lays them out. */
typedef struct ecw_layout {
    size_t tables, groups, side, sizes, crcs, hcrc, streams;
    int64_t rows, cols, nstreams;
} ecw_layout;

static ecw_layout layout_of(const uint8_t *b) {
    ecw_layout L = {0};
    uint32_t version = kv_rd_u32(b + 4), ng = kv_rd_u32(b + 24), rps = kv_rd_u32(b + 28);
    L.rows = (int64_t)kv_rd_u64(b + 8);
    L.cols = (int64_t)kv_rd_u64(b + 16);
    L.nstreams = (L.rows + rps - 1) / rps;
    size_t off = 32;
    uint64_t rowp = 0;
    if (version == 5) {
        uint32_t g = kv_rd_u32(b + 32 + 52), H = kv_rd_u32(b + 32 + 56), P = kv_rd_u32(b + 32 + 60);
        rowp = H + (uint64_t)(L.cols / g) * P;
        off += 64;
    }
    L.tables = off;
    for (uint32_t k = 0; k < ng; k++) off += 8 + 4 * (size_t)kv_rd_u32(b + off + 4);
    L.groups = off;
    L.side = off + (size_t)L.cols;
    L.sizes = L.side + (size_t)(version == 5 ? rowp * (uint64_t)L.rows : 2 * (uint64_t)(L.cols + L.rows));
    L.crcs = L.sizes + 4 * (size_t)L.nstreams;
    L.hcrc = L.crcs + 4 * (size_t)L.nstreams;
    L.streams = L.hcrc + 4;
    return L;
}

static size_t stream_at(const uint8_t *b, const ecw_layout *L, int64_t s) {
    size_t off = L->streams;
    for (int64_t k = 0; k < s; k++) off += kv_rd_u32(b + L->sizes + 4 * k);
    return off;
}

/* Recomputes every checksum after a patch: the container is then corrupt only in what the patch changed. */
static void reseal(uint8_t *b) {
    ecw_layout L = layout_of(b);
    for (int64_t s = 0; s < L.nstreams; s++)
        kv_wr_u32(b + L.crcs + 4 * s, crc32_bitwise(b + stream_at(b, &L, s), kv_rd_u32(b + L.sizes + 4 * s)));
    kv_wr_u32(b + L.hcrc, crc32_bitwise(b, L.hcrc));
}

KV_TEST(ecw_checksums_are_crc32_of_the_documented_bytes) {
    static const uint8_t check[] = "123456789";
    CHECK_EQ_INT(crc32_bitwise(check, 9), 0xCBF43926u); /* the CRC-32/ISO-HDLC check value */
    uint8_t *blob;
    size_t size;
    if (!make_container(T, 130, 96, &blob, &size, NULL)) return;
    ecw_layout L = layout_of(blob);
    CHECK_EQ_INT(kv_rd_u32(blob + 4), 4);
    CHECK_EQ_INT(L.nstreams, 3);
    CHECK_EQ_INT(stream_at(blob, &L, 3), size); /* the streams end the container */
    uint8_t *copy = malloc(size);
    memcpy(copy, blob, size);
    reseal(copy);
    CHECK(memcmp(copy, blob, size) == 0); /* the writer's checksums are the documented ones */
    for (int64_t s = 0; s < L.nstreams; s++) /* every stream starts with a state in [2^23, 2^31) */
        CHECK(kv_rd_u32(blob + stream_at(blob, &L, s)) >= (1u << 23) && kv_rd_u32(blob + stream_at(blob, &L, s)) < (1u << 31));
    free(copy);
    free(blob);
}

/* The container of the GGUF at file[data_at..] replaced by a patched, resealed (or not) copy; the file is
 * opened and the tensor decoded through the model file. Returns the status; err says what and where. */
typedef void (*ecw_patch_fn)(uint8_t *b, size_t size, const void *arg);

static kv_status open_corrupt(kv_test_ctx *T, const uint8_t *file, size_t n, size_t data_at, const uint8_t *blob,
                              size_t size, ecw_patch_fn patch, const void *arg, int do_reseal, kv_error *err) {
    uint8_t *copy = malloc(n);
    memcpy(copy, file, n);
    memcpy(copy + data_at, blob, size);
    patch(copy + data_at, size, arg);
    if (do_reseal) reseal(copy + data_at);
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/corrupt.gguf", kv_test_tmpdir());
    kv_status st = kv_test_write_file(bad, copy, n) == 0 ? KV_OK : KV_EIO;
    free(copy);
    CHECK_MSG(st == KV_OK, "write %s", bad);
    if (st != KV_OK) return st;
    kv_model_file *mf = NULL;
    kv_error_clear(err);
    st = kv_model_open(bad, &mf, err);
    if (st == KV_OK) {
        const kv_tensor *t = kv_model_find(mf, "blk.0.attn_q.weight");
        float *dst = malloc(sizeof(float) * (size_t)(t->shape[0] * t->shape[1]));
        kv_pool *pool = kv_pool_create(2);
        st = kv_ecw_tensor_to_f32(mf, t, dst, pool, err);
        kv_pool_destroy(pool);
        free(dst);
        kv_model_close(mf);
    }
    return st;
}

typedef struct patch_at {
    size_t off;
    size_t n;
    uint8_t bytes[8];
} patch_at;

static void patch_bytes(uint8_t *b, size_t size, const void *arg) {
    const patch_at *p = arg;
    (void)size;
    memcpy(b + p->off, p->bytes, p->n);
}

static void patch_xor(uint8_t *b, size_t size, const void *arg) {
    const patch_at *p = arg;
    (void)size;
    b[p->off] ^= p->bytes[0];
}

/* Group 0's most frequent symbol takes all of 2^16, the others none. */
static void patch_one_symbol_takes_all(uint8_t *b, size_t size, const void *arg) {
    const ecw_layout *L = arg;
    (void)size;
    uint32_t nsym = kv_rd_u32(b + L->tables + 4), best = 0;
    uint8_t *f = b + L->tables + 8;
    for (uint32_t s = 0; s < nsym; s++)
        if (kv_rd_u32(f + 4 * s) > kv_rd_u32(f + 4 * best)) best = s;
    for (uint32_t s = 0; s < nsym; s++) kv_wr_u32(f + 4 * s, s == best ? 1u << 16 : 0);
}

static patch_at u32_at(size_t off, uint32_t v) {
    patch_at p = {off, 4, {0}};
    kv_wr_u32(p.bytes, v);
    return p;
}

static patch_at u16_at(size_t off, uint16_t v) {
    patch_at p = {off, 2, {0}};
    kv_wr_u16(p.bytes, v);
    return p;
}

#define EXPECT_CORRUPT(what, want_off, patch, arg, resealed)                                                          \
    do {                                                                                                               \
        kv_error e_;                                                                                                   \
        kv_status s_ = open_corrupt(T, file, n, data_at, blob, size, patch, arg, resealed, &e_);                       \
        CHECK_MSG(s_ == KV_EFORMAT && strstr(e_.message, what) && !strcmp(e_.tensor, "blk.0.attn_q.weight") &&        \
                      strstr(e_.file, "corrupt.gguf") && e_.offset == (int64_t)(data_at + (want_off)),                 \
                  "%s: status %d, '%s' at %lld (want %lld), tensor '%s'", what, s_, e_.message, (long long)e_.offset,  \
                  (long long)(data_at + (want_off)), e_.tensor);                                                       \
    } while (0)

/* A GGUF holding one ECW container: its bytes and where the container starts. */
static uint8_t *gguf_with(kv_test_ctx *T, const uint8_t *blob, size_t size, int64_t rows, int64_t cols, size_t *n,
                          size_t *data_at) {
    char path[1024];
    snprintf(path, sizeof path, "%s/good.gguf", kv_test_tmpdir());
    if (!write_gguf(T, path, blob, size, rows, cols)) return NULL;
    uint8_t *file = kv_test_read_file(path, n);
    kv_gguf *g;
    kv_error err;
    if (!file || kv_gguf_open_memory(file, *n, "good.gguf", &g, &err) != KV_OK) {
        kv_test_fail(T, __FILE__, __LINE__, "reopen: %s", err.message);
        free(file);
        return NULL;
    }
    const kv_gguf_tensor *t = kv_gguf_find_tensor(g, "blk.0.attn_q.weight");
    *data_at = (size_t)(kv_gguf_data_offset(g) + t->offset);
    kv_gguf_close(g);
    return file;
}

KV_TEST(ecw_corruption_refused_naming_tensor_and_offset) {
    const int64_t rows = 130, cols = 96;
    uint8_t *blob;
    size_t size, n, data_at;
    if (!make_container(T, rows, cols, &blob, &size, NULL)) return;
    uint8_t *file = gguf_with(T, blob, size, rows, cols, &n, &data_at);
    if (!file) { free(blob); return; }
    ecw_layout L = layout_of(blob);
    size_t s1 = stream_at(blob, &L, 1), s2 = stream_at(blob, &L, 2), len1 = s2 - s1;
    REQUIRE(len1 > 16);

    /* a flipped byte in a stream: its checksum says so, at the stream's start */
    patch_at p = {s1 + len1 / 2, 1, {0x10}};
    EXPECT_CORRUPT("stream 1 (rows 64..127): checksum", s1, patch_xor, &p, 0);
    /* ... and with the checksum forged, decoding itself refuses every flip (final state, bytes left, early end) */
    for (size_t at = s1 + 4; at < s2; at += 3) {
        patch_at q = {at, 1, {(uint8_t)(1u << (at % 8))}};
        kv_error e;
        kv_status st = open_corrupt(T, file, n, data_at, blob, size, patch_xor, &q, 1, &e);
        CHECK_MSG(st == KV_EFORMAT && strstr(e.message, "stream 1") && !strcmp(e.tensor, "blk.0.attn_q.weight") &&
                  e.offset >= (int64_t)(data_at + s1) && e.offset <= (int64_t)(data_at + s2),
                  "flip at %zu: %d '%s' at %lld", at, st, e.message, (long long)e.offset);
    }
    /* initial states outside the coder's range [2^23, 2^31) */
    patch_at z0 = u32_at(s1, 0), zf = u32_at(s1, 0xFFFFFFFFu);
    EXPECT_CORRUPT("initial rANS state 0x00000000", s1, patch_bytes, &z0, 1);
    EXPECT_CORRUPT("initial rANS state 0xffffffff", s1, patch_bytes, &zf, 1);
    /* a table where one symbol takes everything */
    uint8_t *tmp = malloc(size);
    memcpy(tmp, blob, size);
    patch_one_symbol_takes_all(tmp, size, &L);
    uint32_t nsym0 = kv_rd_u32(tmp + L.tables + 4);
    size_t zero_at = L.tables + 8 + (kv_rd_u32(tmp + L.tables + 8) == 0 ? 0 : 4 * (size_t)(nsym0 - 1));
    free(tmp);
    CHECK(nsym0 > 1);
    EXPECT_CORRUPT("group 0: degenerate frequency table", zero_at, patch_one_symbol_takes_all, &L, 1);
    /* zmin = INT32_MIN */
    patch_at zm = u32_at(L.tables, 0x80000000u);
    EXPECT_CORRUPT("group 0: codes -2147483648", L.tables, patch_bytes, &zm, 1);
    /* NaN / Inf fp16 side information */
    patch_at nan_step = u16_at(L.side + 2 * 5, 0x7E00), inf_scale = u16_at(L.side + 2 * (size_t)cols + 2 * 7, 0xFC00);
    EXPECT_CORRUPT("column 5's step is not finite", L.side + 10, patch_bytes, &nan_step, 1);
    EXPECT_CORRUPT("row 7's scale is not finite", L.side + 2 * (size_t)cols + 14, patch_bytes, &inf_scale, 1);
    /* any other header byte: its checksum (a column moved to another group) */
    patch_at grp = {L.groups + 3, 1, {(uint8_t)(blob[L.groups + 3] == 0 ? 1 : 0)}};
    EXPECT_CORRUPT("header checksum", L.hcrc, patch_bytes, &grp, 0);
    /* stream sizes that do not add up to the container */
    patch_at sz = u32_at(L.sizes + 4, (uint32_t)len1 - 1);
    EXPECT_CORRUPT("1 bytes after the last stream", size - 1, patch_bytes, &sz, 1);
    /* the pre-release layouts without checksums are refused with the reason */
    patch_at v2 = u32_at(4, 2);
    EXPECT_CORRUPT("pre-release layout without checksums", 4, patch_bytes, &v2, 1);
    free(file);
    free(blob);
}

/* Version 5 (`--entropy-code`): non-finite block scales are refused at open, finite fp32 scales whose products
 * overflow at decode; both name the block's parameters. */
KV_TEST(ecw_v5_nonfinite_scales_refused) {
    static const char *const fmts[] = {"int4_g128_asym", "int4_g64_sym_f32", "int8_g0_sym"};
    const int64_t rows = 70, cols = 256;
    float *w = gauss(rows * cols, 3);
    for (size_t k = 0; k < sizeof fmts / sizeof *fmts; k++) {
        kv_format f;
        kv_error err;
        REQUIRE_OK(kv_format_get(fmts[k], &f, &err), &err);
        size_t rb = kv_format_row_bytes(&f, cols);
        uint8_t *packed = malloc(rb * (size_t)rows), *blob;
        size_t size, n, data_at;
        REQUIRE_OK(f.quantize(&f, w, packed, rows, cols, NULL, &err), &err);
        REQUIRE_OK(kv_ecw_encode_packed(&f, packed, rows, cols, &blob, &size, &err), &err);
        uint8_t *file = gguf_with(T, blob, size, rows, cols, &n, &data_at);
        REQUIRE(file != NULL);
        ecw_layout L = layout_of(blob);
        int f32 = strstr(fmts[k], "_f32") != NULL;
        size_t rowp = (L.sizes - L.side) / (size_t)rows, H = (size_t)f.row_header_bytes;
        /* row 9's second block (or its row header, for per-row scales) gets a NaN scale */
        size_t at = L.side + 9 * rowp + (H ? 0 : rowp / (size_t)(cols / f.block));
        size_t packed_at = 9 * rb + (H ? 0 : (size_t)f.block_bytes);
        patch_at nan = f32 ? u32_at(at, 0x7FC00000u) : u16_at(at, 0x7E00);
        EXPECT_CORRUPT(H ? "row 9: a non-finite scale in its row header" : "row 9: a non-finite scale in its block",
                       at, patch_bytes, &nan, 1);
        /* the same NaN in the packed rows: the encoder refuses to write it */
        memcpy(packed + packed_at, nan.bytes, nan.n);
        uint8_t *b2 = NULL;
        size_t s2;
        kv_error_clear(&err);
        CHECK(kv_ecw_encode_packed(&f, packed, rows, cols, &b2, &s2, &err) == KV_ERANGE);
        CHECK_MSG(strstr(err.message, "row 9") && strstr(err.message, "non-finite"), "%s", err.message);
        CHECK(b2 == NULL);
        if (f32) { /* a finite fp32 scale of 3e38 overflows in the products */
            patch_at big = u32_at(at, 0);
            float v = 3e38f;
            memcpy(big.bytes, &v, 4);
            EXPECT_CORRUPT("dequantizes to a non-finite value", at, patch_bytes, &big, 1);
        }
        free(file);
        free(blob);
        free(packed);
    }
    free(w);
}

KV_TEST(ecw_v5_integer_codes_equal_dequantize) {
    static const char *const fmts[] = {"int4_g128_asym", "int3_g32_sym", "int2_g64_asym_f32", "int8_g0_sym",
                                       "int4_gt_asym", "int5_g256_sym_mse"};
    const int64_t rows = 200, cols = 512;
    float *w = gauss(rows * cols, 5);
    kv_pool *pool = kv_pool_create(2);
    for (size_t k = 0; k < sizeof fmts / sizeof *fmts; k++) {
        kv_format f;
        kv_error err;
        REQUIRE_OK(kv_format_get(fmts[k], &f, &err), &err);
        CHECK_MSG(kv_ecw_packed_supported(&f), "%s", fmts[k]);
        size_t rb = kv_format_row_bytes(&f, cols);
        uint8_t *packed = malloc(rb * (size_t)rows);
        REQUIRE_OK(f.quantize(&f, w, packed, rows, cols, NULL, &err), &err);
        uint8_t *blob;
        size_t size;
        REQUIRE_OK(kv_ecw_encode_packed(&f, packed, rows, cols, &blob, &size, &err), &err);
        float *want = malloc(sizeof(float) * (size_t)(rows * cols)), *got = malloc(sizeof(float) * (size_t)(rows * cols));
        for (int64_t r = 0; r < rows; r++) f.dequantize(&f, packed + (size_t)r * rb, want + r * cols, cols);
        REQUIRE_OK(kv_ecw_decode_f32(blob, size, rows, cols, got, NULL, &err), &err);
        CHECK_MSG(memcmp(want, got, sizeof(float) * (size_t)(rows * cols)) == 0, "%s", fmts[k]);
        memset(got, 0, sizeof(float) * (size_t)(rows * cols));
        REQUIRE_OK(kv_ecw_decode_f32(blob, size, rows, cols, got, pool, &err), &err);
        CHECK_MSG(memcmp(want, got, sizeof(float) * (size_t)(rows * cols)) == 0, "%s threaded", fmts[k]);
        /* the codes are what the format stored; low-entropy Gaussian codes cost less than their width */
        int version = 0;
        CHECK_OK(kv_ecw_check(blob, size, NULL, NULL, &version, &err), &err);
        CHECK_EQ_INT(version, 5);
        if (f.bits_per_weight <= 4.5) /* wider codes pay more for their tables on a matrix this small */
            CHECK_MSG(size < rb * (size_t)rows, "%s: %zu coded vs %zu packed", fmts[k], size, rb * (size_t)rows);
        /* a wrong shape is refused */
        CHECK(kv_ecw_decode_f32(blob, size, rows, cols + 8, got, NULL, &err) == KV_EFORMAT);
        free(want);
        free(got);
        free(blob);
        free(packed);
    }
    /* support and parameter width come from the format's traits (family, code bits, fp32 scales), not its
     * name: a renamed int format is still coded, a name that looks like one without the family is not */
    kv_format rn, fake;
    kv_error e2;
    REQUIRE_OK(kv_format_get("int3_g64_asym_f32", &rn, &e2), &e2);
    snprintf(rn.name, sizeof rn.name, "my-packed-codes");
    CHECK(kv_ecw_packed_supported(&rn));
    {
        const int64_t r2 = 8, c2 = 128;
        size_t rb = kv_format_row_bytes(&rn, c2), size = 0;
        uint8_t *packed = malloc(rb * (size_t)r2), *blob = NULL;
        REQUIRE_OK(rn.quantize(&rn, w, packed, r2, c2, NULL, &e2), &e2);
        CHECK_OK(kv_ecw_encode_packed(&rn, packed, r2, c2, &blob, &size, &e2), &e2); /* (its name cannot decode) */
        CHECK(blob != NULL && size > 0);
        free(blob);
        free(packed);
    }
    REQUIRE_OK(kv_format_get("q4_0", &fake, &e2), &e2);
    snprintf(fake.name, sizeof fake.name, "int4_g32_sym");
    CHECK(!kv_ecw_packed_supported(&fake));
    /* formats that are not plain integer codes: a clear error listing the supported ones */
    static const char *const no[] = {"q4_k", "nf4", "mxfp4_ocp", "f16"};
    for (size_t k = 0; k < sizeof no / sizeof *no; k++) {
        kv_format f;
        kv_error err;
        REQUIRE_OK(kv_format_get(no[k], &f, &err), &err);
        CHECK(!kv_ecw_packed_supported(&f));
        uint8_t dummy[4096] = {0}, *blob = NULL;
        size_t size;
        kv_error_clear(&err);
        CHECK(kv_ecw_encode_packed(&f, dummy, 1, 256, &blob, &size, &err) == KV_EUNSUPPORTED);
        CHECK_MSG(strstr(err.message, "int{n}_g{g}") && strstr(err.message, no[k]), "%s", err.message);
        CHECK(blob == NULL);
    }
    kv_pool_destroy(pool);
    free(w);
}

/* ------------------------------ end to end on proxy-27m ------------------------------ */

static int proxy_paths(char *model, size_t mn, char *calib, size_t cn, char *text, size_t tn) {
    kv_test_shared(model, mn, "models/proxy-27m");
    kv_test_shared(calib, cn, "data/calib.txt");
    kv_test_shared(text, tn, "data/heldout.txt");
    return kv_test_exists(model) && kv_test_exists(calib) && kv_test_exists(text);
}

static int32_t *heldout_ids(kv_test_ctx *T, const kv_model_file *mf, const char *text, int64_t want) {
    size_t len = 0, n = 0;
    char *buf = kv_test_read_file(text, &len);
    kv_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    kv_error err;
    kv_error_clear(&err);
    if (buf && len > 20000) len = 20000;
    if (!buf || kv_tokenizer_load_for_model(mf, &tok, &err) || kv_tokenize(tok, buf, len, 1, &ids, &n, &err) ||
        (int64_t)n < want) {
        kv_test_fail(T, __FILE__, __LINE__, "tokenize: %s", err.message);
        free(ids);
        ids = NULL;
    }
    kv_tokenizer_free(tok);
    free(buf);
    return ids;
}

static double ppl_of(kv_test_ctx *T, const kv_model *m, const int32_t *ids, int64_t n) {
    kv_eval_opts o = {0};
    o.ctx = 128;
    o.bos_id = -1;
    kv_eval_result r;
    kv_error err;
    kv_error_clear(&err);
    if (kv_eval_ppl(m, ids, n, &o, NULL, &r, &err) != KV_OK) {
        kv_test_fail(T, __FILE__, __LINE__, "eval: %s", err.message);
        return NAN;
    }
    return r.ppl;
}

KV_TEST(ecw_watersic_gguf_is_the_model) {
    char model[512], calib[512], text[512], out[1024], args[4096];
    if (!proxy_paths(model, sizeof model, calib, sizeof calib, text, sizeof text)) SKIP("proxy-27m absent");
    snprintf(out, sizeof out, "%s/ws.gguf", kv_test_tmpdir());
    /* bf16 keeps every other tensor exactly as the source has it; sanitized builds code one matrix */
    const int sanitized = getenv("KVANT_SANITIZED") != NULL, want_n = sanitized ? 1 : 4;
    const char *only = sanitized ? "blk.0.attn_k." : "blk.0.attn_";
    snprintf(args, sizeof args, "quantize %s -o %s --format bf16 --pure --method watersic:bits=3,only=%s "
             "--calib %s --calib-tokens 512 --no-imatrix -t 2 --quiet", model, out, only, calib);
    char *log = NULL;
    int rc = kv_test_run_cli(args, &log);
    CHECK_MSG(rc == 0, "%s", log ? log : "");
    CHECK(log && strstr(log, "entropy-coded") != NULL);
    free(log);
    if (rc) return;
    kv_error err;
    kv_model_file *mf, *base;
    REQUIRE_OK(kv_model_open(out, &mf, &err), &err);
    double coded_bits = 0, entropy_bits = 0, weights = 0;
    int n_ecw = 0;
    float *dec[4] = {0};
    const char *names[4] = {0};
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        int want_ecw = strstr(t->name, only) && strstr(t->name, ".weight") && !strstr(t->name, "norm");
        CHECK_MSG((t->type == KV_TYPE_ECW) == want_ecw, "%s has type %u", t->name, t->type);
        if (t->type != KV_TYPE_ECW || n_ecw >= 4) continue;
        int64_t rows = t->shape[0], cols = t->shape[1];
        int32_t *z = malloc(sizeof(int32_t) * (size_t)(rows * cols));
        dec[n_ecw] = malloc(sizeof(float) * (size_t)(rows * cols));
        names[n_ecw] = t->name;
        REQUIRE_OK(kv_ecw_decode(t->data, (size_t)t->nbytes, NULL, NULL, z, dec[n_ecw], &err), &err);
        double cb, sb;
        REQUIRE_OK(kv_ecw_rate(z, rows, cols, &cb, &sb, &err), &err);
        coded_bits += (double)t->nbytes * 8;
        entropy_bits += (cb + sb) * (double)(rows * cols);
        weights += (double)(rows * cols);
        free(z);
        n_ecw++;
    }
    CHECK_EQ_INT(n_ecw, want_n);
    /* the file's containers cost what the entropy says (within 2%), and that is the target rate */
    CHECK_MSG(fabs(coded_bits - entropy_bits) <= 0.02 * entropy_bits, "file %.0f bits, entropy %.0f", coded_bits,
              entropy_bits);
    CHECK_MSG(fabs(coded_bits / weights - 3.0) < 0.06, "%.4f bits/weight", coded_bits / weights);

    /* kv_model_load runs exactly the decoded weights: the same as the base model with those weights set */
    kv_model_load_opts lo = {0};
    lo.rope_freq = KV_ROPE_FREQ_EXACT;
    lo.weights_f32 = 1;
    kv_model *m = NULL, *ref = NULL;
    REQUIRE_OK(kv_model_load(mf, &lo, &m, &err), &err);
    REQUIRE_OK(kv_model_open(model, &base, &err), &err);
    REQUIRE_OK(kv_model_load(base, &lo, &ref, &err), &err);
    kv_format f32;
    REQUIRE_OK(kv_format_from_type(KV_TYPE_F32, &f32, &err), &err);
    for (int k = 0; k < n_ecw; k++) {
        int layer;
        kv_linear_id which;
        REQUIRE(kv_model_linear_by_name(m, names[k], &layer, &which) == 0);
        const kv_weight *wt = kv_model_weight(m, layer, which);
        CHECK(wt->fmt.type == KV_TYPE_F32);
        CHECK_MSG(memcmp(wt->data, dec[k], sizeof(float) * (size_t)(wt->rows * wt->cols)) == 0, "%s", names[k]);
        REQUIRE_OK(kv_model_set_weight(ref, names[k], &f32, dec[k], 1, &err), &err);
        dec[k] = NULL;
    }
    int32_t *ids = heldout_ids(T, mf, text, 257);
    if (ids) {
        double p1 = ppl_of(T, m, ids, 257), p2 = ppl_of(T, ref, ids, 257);
        CHECK_MSG(p1 == p2 && isfinite(p1), "stored %.9g vs decoded %.9g", p1, p2);
    }
    free(ids);
    kv_model_free(m);
    kv_model_free(ref);
    kv_model_close(base);
    kv_model_close(mf);
    for (int k = 0; k < 4; k++) free(dec[k]);

    /* the CLI: inspect shows the type and its bytes, eval runs it, re-quantizing decodes it */
    CHECK_EQ_INT(kv_test_run_cli((snprintf(args, sizeof args, "inspect %s", out), args), &log), 0);
    CHECK_MSG(log && strstr(log, "blk.0.attn_k.weight") && strstr(log, " ecw "), "%s", log ? log : "");
    free(log);
    snprintf(args, sizeof args, "eval %s --text %s --ctx 128 --chunks 1 -t 2 --quiet", out, text);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 0);
    free(log);
    snprintf(args, sizeof args, "quantize %s -o %s/re.gguf --format f16 --pure --allow-requantize -t 2 --quiet", out, kv_test_tmpdir());
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 0);
    free(log);
    snprintf(args, sizeof args, "convert %s -o %s/cv.gguf --quiet", out, kv_test_tmpdir());
    CHECK(kv_test_run_cli(args, &log) != 0); /* convert writes plain types from plain types: refused clearly */
    CHECK_MSG(log && strstr(log, "blk.0.attn_") && strstr(log, "kvant quantize"), "%s", log ? log : "");
    free(log);
}

KV_TEST(ecw_entropy_code_rtn_equals_plain_rtn) {
    char model[512], calib[512], text[512], a[1024], b[1024], args[4096];
    if (!proxy_paths(model, sizeof model, calib, sizeof calib, text, sizeof text)) SKIP("proxy-27m absent");
    snprintf(a, sizeof a, "%s/plain.gguf", kv_test_tmpdir());
    snprintf(b, sizeof b, "%s/coded.gguf", kv_test_tmpdir());
    const char *keep = "--override '^(token_embd|output)\\.weight$=bf16'";
    snprintf(args, sizeof args, "quantize %s -o %s --format int4_g128_asym --pure %s -t 2 --quiet", model, a, keep);
    char *log = NULL;
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 0);
    free(log);
    snprintf(args, sizeof args, "quantize %s -o %s --format int4_g128_asym --pure %s --entropy-code -t 2 --quiet --json",
             model, b, keep);
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 0);
    free(log);
    kv_error err;
    kv_model_file *pa, *pb;
    REQUIRE_OK(kv_model_open(a, &pa, &err), &err);
    REQUIRE_OK(kv_model_open(b, &pb, &err), &err);
    uint64_t bytes_a = 0, bytes_b = 0;
    int n_coded = 0;
    for (int64_t i = 0; i < kv_model_n_tensors(pa); i++) {
        const kv_tensor *ta = kv_model_tensor(pa, i), *tb = kv_model_find(pb, ta->name);
        REQUIRE(tb != NULL);
        if (ta->type < KV_TYPE_KVANT_BASE) {
            CHECK_MSG(tb->type == ta->type, "%s", ta->name);
            continue;
        }
        CHECK_MSG(tb->type == KV_TYPE_ECW, "%s type %u", ta->name, tb->type);
        int64_t rows = ta->shape[0], cols = ta->shape[1];
        float *wa = malloc(sizeof(float) * (size_t)(rows * cols)), *wb = malloc(sizeof(float) * (size_t)(rows * cols));
        for (int64_t r = 0; r < rows; r++) CHECK_OK(kv_model_tensor_row_f32(pa, ta, r, wa + r * cols, &err), &err);
        CHECK_OK(kv_tensor_to_f32(tb, wb, &err), &err);
        CHECK_MSG(memcmp(wa, wb, sizeof(float) * (size_t)(rows * cols)) == 0, "%s", ta->name);
        bytes_a += ta->nbytes;
        bytes_b += tb->nbytes;
        n_coded++;
        free(wa);
        free(wb);
    }
    CHECK_EQ_INT(n_coded, 42);
    CHECK_MSG(bytes_b < bytes_a, "coded %llu vs packed %llu", (unsigned long long)bytes_b, (unsigned long long)bytes_a);
    kv_model_close(pa);
    kv_model_close(pb);
    /* a format that is not integer codes: refused, naming the supported ones, no output */
    snprintf(args, sizeof args, "quantize %s -o %s/q.gguf --format q4_0 --pure --entropy-code -t 2 --quiet", model,
             kv_test_tmpdir());
    CHECK_EQ_INT(kv_test_run_cli(args, &log), 1);
    CHECK_MSG(log && strstr(log, "q4_0") && strstr(log, "int{n}_g{g}"), "%s", log ? log : "");
    free(log);
    snprintf(args, sizeof args, "%s/q.gguf", kv_test_tmpdir());
    CHECK(!kv_test_exists(args));
}
