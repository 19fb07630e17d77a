/* pack.c — kvant's packed rows -> the GPU layout of pack.h (docs/FORMAT.md "GPU layout"). Each format's block
 * bytes are read once (codes, scales, minima) and rewritten planar: the codes as pair indices in mma fragment
 * order, the scales as arrays [group][row] in their stored precision. No value is recomputed except where the
 * stored bytes are a packing (q4_k's 6-bit scales become one byte each). */
#include "kernels/cuda/pack.h"
#include "formats/extra.h"
#include "formats/formats.h"
#include <stdio.h>

enum { EX_INT, EX_FP4ROW, EX_MXOCP, EX_MXGGML, EX_NVGGML, EX_NVTS, EX_CB, EX_HIGGS, EX_Q40, EX_Q41, EX_Q4K };

typedef struct pack_spec {
    int ex;            /* extractor */
    int b, p;          /* code bits; values per code (1, or 2 for HIGGS p = 2) */
    int group, sk, ok; /* group 0: the whole row */
    int col_mult;      /* cols must be a multiple of this */
    float vals[512];   /* p = 1: 2^b values; p = 2: 2^(2b) pairs */
    int int_bits, int_asym, int_f32, int_group;
} pack_spec;

static void e2m1_values(float *v) { kv_mf_table(kv_mf_get(KV_MF_E2M1), v); }

/* Fills spec from fmt; KV_EUNSUPPORTED with a reason otherwise. */
static kv_status spec_of(const kv_format *f, pack_spec *s, kv_error *err) {
    memset(s, 0, sizeof *s);
    s->p = 1;
    s->col_mult = KV_GPU_CHUNK;
    switch (f->type) {
    case KV_TYPE_Q4_0:
    case KV_TYPE_IQ4_NL:
        s->ex = EX_Q40, s->b = 4, s->group = 32, s->sk = KV_GS_F16;
        for (int c = 0; c < 16; c++) s->vals[c] = f->type == KV_TYPE_Q4_0 ? (float)(c - 8) : (float)kv_kvalues_iq4nl[c];
        return KV_OK;
    case KV_TYPE_Q4_1:
        s->ex = EX_Q41, s->b = 4, s->group = 32, s->sk = KV_GS_F16, s->ok = KV_GO_F16;
        for (int c = 0; c < 16; c++) s->vals[c] = (float)c;
        return KV_OK;
    case KV_TYPE_Q4_K:
        s->ex = EX_Q4K, s->b = 4, s->group = 32, s->sk = KV_GS_Q4K, s->ok = KV_GO_Q4K, s->col_mult = 256;
        for (int c = 0; c < 16; c++) s->vals[c] = (float)c;
        return KV_OK;
    case KV_TYPE_MXFP4:
        s->ex = EX_MXGGML, s->b = 4, s->group = 32, s->sk = KV_GS_E8M0;
        e2m1_values(s->vals);
        return KV_OK;
    case KV_TYPE_NVFP4:
        s->ex = EX_NVGGML, s->b = 4, s->group = 16, s->sk = KV_GS_UE4M3, s->col_mult = 256;
        for (int c = 0; c < 16; c++) s->vals[c] = (float)kv_kvalues_fp4[c];
        return KV_OK;
    case KV_TYPE_KV_INT: {
        int bits = f->params[0], g = f->params[1];
        if (bits < 2 || bits > 4)
            return kv_fail(err, KV_EUNSUPPORTED, "%s: the GPU kernels take 2-, 3- and 4-bit integer codes", f->name);
        s->ex = EX_INT, s->b = bits, s->group = g > 0 ? g : 0;
        s->int_bits = bits, s->int_asym = f->params[2], s->int_f32 = f->params[3], s->int_group = g;
        s->sk = s->int_f32 ? KV_GS_F32 : KV_GS_F16;
        s->ok = s->int_asym ? (s->int_f32 ? KV_GO_F32 : KV_GO_F16) : KV_GO_NONE;
        for (int c = 0; c < (1 << bits); c++) s->vals[c] = (float)(s->int_asym ? c : c - (1 << (bits - 1)));
        return KV_OK;
    }
    case KV_TYPE_KV_FP:
        if (f->params[0] != KV_MF_E2M1) break;
        s->ex = EX_FP4ROW, s->b = 4, s->group = 0, s->sk = KV_GS_F32;
        e2m1_values(s->vals);
        return KV_OK;
    case KV_TYPE_KV_MX:
        if (f->params[0] != KV_MF_E2M1) break;
        s->ex = EX_MXOCP, s->b = 4, s->group = 32, s->sk = KV_GS_E8M0;
        e2m1_values(s->vals);
        return KV_OK;
    case KV_TYPE_KV_NVFP4TS:
        s->ex = EX_NVTS, s->b = 4, s->group = 16, s->sk = KV_GS_UE4M3;
        e2m1_values(s->vals);
        return KV_OK;
    case KV_TYPE_KV_CODEBOOK: {
        if (f->block != 64 || f->block_bytes != 36 || f->row_header_bytes) break; /* nf4_dq has a second level */
        s->ex = EX_CB, s->b = 4, s->group = 64, s->sk = KV_GS_F32;
        /* the table as the format decodes it: one block with absmax 1 and codes 0..15 */
        uint8_t blk[36] = {0};
        float one = 1.0f, v[64];
        memcpy(blk, &one, 4);
        for (int j = 0; j < 8; j++) blk[4 + j] = (uint8_t)(((2 * j) << 4) | (2 * j + 1));
        f->dequantize(f, blk, v, 64);
        for (int c = 0; c < 16; c++) s->vals[c] = v[c];
        return KV_OK;
    }
    case KV_TYPE_KV_HIGGS: {
        int p = f->params[0], b = f->params[1];
        if (!((p == 1 || p == 2) && b >= 2 && b <= 4))
            return kv_fail(err, KV_EUNSUPPORTED, "%s: the GPU kernels take higgs_p1_b{2,3,4} and higgs_p2_b{2,3,4}",
                           f->name);
        const kv_higgs_grid *g = kv_higgs_grid_get(p, b);
        if (!g) return kv_fail(err, KV_EUNSUPPORTED, "%s: no grid", f->name);
        s->ex = EX_HIGGS, s->b = p == 1 ? b : 2 * b, s->p = p, s->group = 256, s->sk = KV_GS_F16, s->col_mult = 256;
        for (int i = 0; i < g->n * p; i++) s->vals[i] = g->pts[i];
        return KV_OK;
    }
    default:
        break;
    }
    return kv_fail(err, KV_EUNSUPPORTED,
                   "format %s has no GPU weight-only kernel (int{2,3,4}_g*, q4_0, q4_1, q4_k, iq4_nl, nf4, af4, "
                   "fp4_e2m1, mxfp4, mxfp4_ocp, nvfp4, nvfp4_ts, higgs_p1_b{2,3,4}, higgs_p2_b{2,3,4})",
                   f->name);
}

int kv_gpu_pack_supported(const kv_format *fmt) {
    pack_spec s;
    kv_error e;
    return spec_of(fmt, &s, &e) == KV_OK;
}

int kv_gpu_scale_bytes(int kind) { return kind == KV_GS_F16 ? 2 : kind == KV_GS_F32 ? 4 : 1; }
int kv_gpu_off_bytes(int kind) { return kind == KV_GO_NONE ? 0 : kind == KV_GO_F16 ? 2 : kind == KV_GO_F32 ? 4 : 1; }

static int pair_bits_of(const pack_spec *s) { return s->p == 2 ? s->b : 2 * s->b; }

void kv_gpu_pack_free(kv_gpu_pack *p) {
    if (!p) return;
    free(p->plane0);
    free(p->plane1);
    free(p->scale);
    free(p->off);
    free(p->super_d);
    free(p->super_m);
    free(p->rowmul);
    memset(p, 0, sizeof *p);
}

static kv_status layout_from_spec(const kv_format *fmt, const pack_spec *s, int64_t rows, int64_t cols,
                                  kv_gpu_pack *out, int alloc, kv_error *err) {
    memset(out, 0, sizeof *out);
    if (rows <= 0 || cols <= 0) return kv_fail(err, KV_EINVAL, "%s: GPU pack of %lld x %lld", fmt->name, (long long)rows, (long long)cols);
    if (cols % s->col_mult || cols % fmt->block)
        return kv_fail(err, KV_EUNSUPPORTED, "%s: the GPU kernels need rows of a multiple of %d values (have %lld)",
                       fmt->name, KV_MAX(s->col_mult, fmt->block), (long long)cols);
    snprintf(out->format, sizeof out->format, "%s", fmt->name);
    out->rows = rows;
    out->cols = cols;
    out->rows_pad = (rows + 15) / 16 * 16;
    out->pair_bits = pair_bits_of(s);
    out->group = s->group ? s->group : (int)cols;
    out->scale_kind = s->sk;
    out->off_kind = s->ok;
    out->format_bytes = (size_t)rows * kv_format_row_bytes(fmt, cols);
    const size_t lanes = (size_t)(out->rows_pad / 16) * (size_t)(cols / KV_GPU_CHUNK) * 32;
    const size_t ngroups = (size_t)(cols / out->group);
    out->plane0_bytes = lanes * 16;
    out->plane1_bytes = out->pair_bits == 6 ? lanes * 8 : out->pair_bits == 8 ? lanes * 16 : 0;
    out->scale_bytes = ngroups * (size_t)out->rows_pad * (size_t)kv_gpu_scale_bytes(s->sk);
    out->off_bytes = ngroups * (size_t)out->rows_pad * (size_t)kv_gpu_off_bytes(s->ok);
    out->super_bytes = s->sk == KV_GS_Q4K ? (size_t)(cols / 256) * (size_t)out->rows_pad * 2 : 0;
    /* the pair table */
    const int npairs = 1 << out->pair_bits;
    for (int i = 0; i < npairs; i++) {
        float lo, hi;
        if (s->p == 2) {
            lo = s->vals[2 * i];
            hi = s->vals[2 * i + 1];
        } else {
            lo = s->vals[i & ((1 << s->b) - 1)];
            hi = s->vals[i >> s->b];
        }
        out->lut[i] = (uint32_t)kv_fp32_to_fp16(lo) | (uint32_t)kv_fp32_to_fp16(hi) << 16;
    }
    if (!alloc) return KV_OK;
    out->plane0 = calloc(1, out->plane0_bytes);
    out->plane1 = out->plane1_bytes ? calloc(1, out->plane1_bytes) : NULL;
    out->scale = calloc(1, out->scale_bytes);
    out->off = out->off_bytes ? calloc(1, out->off_bytes) : NULL;
    out->super_d = out->super_bytes ? calloc(1, out->super_bytes) : NULL;
    out->super_m = out->super_bytes ? calloc(1, out->super_bytes) : NULL;
    out->rowmul = s->sk == KV_GS_UE4M3 ? calloc((size_t)out->rows_pad, sizeof(float)) : NULL;
    if (!out->plane0 || (out->plane1_bytes && !out->plane1) || !out->scale || (out->off_bytes && !out->off) ||
        (out->super_bytes && (!out->super_d || !out->super_m)) || (s->sk == KV_GS_UE4M3 && !out->rowmul)) {
        kv_gpu_pack_free(out);
        return kv_fail(err, KV_ENOMEM, "%s: out of memory for the GPU pack", fmt->name);
    }
    return KV_OK;
}

kv_status kv_gpu_pack_layout(const kv_format *fmt, int64_t rows, int64_t cols, kv_gpu_pack *out, int alloc,
                             kv_error *err) {
    pack_spec s;
    kv_status st = spec_of(fmt, &s, err);
    if (st != KV_OK) return st;
    return layout_from_spec(fmt, &s, rows, cols, out, alloc, err);
}

size_t kv_gpu_pack_bytes(const kv_gpu_pack *p) {
    return p->plane0_bytes + p->plane1_bytes + p->scale_bytes + p->off_bytes + 2 * p->super_bytes +
           (p->scale_kind == KV_GS_UE4M3 ? (size_t)p->rows_pad * sizeof(float) : 0);
}

/* One row's codes and group parameters, read from the format's bytes. codes: cols entries (for p = 2 the tuple
 * code sits at the even index); sc/of: raw bits per group in the GPU kind; sd/sm: q4_k super-block halves. */
typedef struct row_parts {
    uint8_t *codes;
    uint32_t *sc, *of;
    uint16_t *sd, *sm;
    float rowmul;
} row_parts;


static void extract_row(const kv_format *f, const pack_spec *s, const uint8_t *row, int64_t cols, row_parts *o) {
    const int64_t nb = cols / f->block;
    o->rowmul = 1.0f;
    switch (s->ex) {
    case EX_INT: {
        const int sb = (s->int_f32 ? 4 : 2) * (s->int_asym ? 2 : 1);
        if (s->int_group <= 0) {
            memcpy(&o->sc[0], row, s->int_f32 ? 4 : 2);
            if (s->int_asym) memcpy(&o->of[0], row + (s->int_f32 ? 4 : 2), s->int_f32 ? 4 : 2);
            for (int64_t i = 0; i < cols; i++) o->codes[i] = (uint8_t)kv_bits_get(row + sb, i, s->b);
            return;
        }
        for (int64_t bl = 0; bl < nb; bl++) {
            const uint8_t *blk = row + bl * f->block_bytes;
            o->sc[bl] = s->int_f32 ? kv_rd_u32(blk) : kv_rd_u16(blk);
            if (s->int_asym) o->of[bl] = s->int_f32 ? kv_rd_u32(blk + 4) : kv_rd_u16(blk + 2);
            for (int i = 0; i < f->block; i++) o->codes[bl * f->block + i] = (uint8_t)kv_bits_get(blk + sb, i, s->b);
        }
        return;
    }
    case EX_FP4ROW:
        o->sc[0] = kv_rd_u32(row);
        for (int64_t i = 0; i < cols; i++) o->codes[i] = (uint8_t)kv_bits_get(row + 4, i, 4);
        return;
    case EX_MXOCP:
        for (int64_t bl = 0; bl < nb; bl++) {
            const uint8_t *blk = row + bl * 17;
            o->sc[bl] = blk[0];
            for (int i = 0; i < 32; i++) o->codes[bl * 32 + i] = (uint8_t)kv_bits_get(blk + 1, i, 4);
        }
        return;
    case EX_MXGGML:
    case EX_Q40:
    case EX_Q41: {
        const int hdr = s->ex == EX_MXGGML ? 1 : s->ex == EX_Q40 ? 2 : 4;
        for (int64_t bl = 0; bl < nb; bl++) {
            const uint8_t *blk = row + bl * f->block_bytes;
            o->sc[bl] = s->ex == EX_MXGGML ? blk[0] : kv_rd_u16(blk);
            if (s->ex == EX_Q41) o->of[bl] = kv_rd_u16(blk + 2);
            for (int j = 0; j < 16; j++) {
                o->codes[bl * 32 + j] = blk[hdr + j] & 15;
                o->codes[bl * 32 + j + 16] = blk[hdr + j] >> 4;
            }
        }
        return;
    }
    case EX_NVGGML:
        o->rowmul = 0.5f; /* ggml's E4M3 scale is halved to match its doubled E2M1 table */
        for (int64_t bl = 0; bl < nb; bl++) {
            const uint8_t *blk = row + bl * 36;
            for (int sub = 0; sub < 4; sub++) {
                o->sc[bl * 4 + sub] = blk[sub] == 0x7F ? 0 : blk[sub]; /* ggml decodes 0x7F as 0 */
                for (int j = 0; j < 8; j++) {
                    o->codes[bl * 64 + 16 * sub + j] = blk[4 + 8 * sub + j] & 15;
                    o->codes[bl * 64 + 16 * sub + j + 8] = blk[4 + 8 * sub + j] >> 4;
                }
            }
        }
        return;
    case EX_NVTS: {
        const float g = kv_rd_f32(row);
        o->rowmul = 1.0f / g;
        for (int64_t bl = 0; bl < nb; bl++) {
            const uint8_t *blk = row + 4 + bl * 9;
            o->sc[bl] = blk[0];
            for (int i = 0; i < 16; i++) o->codes[bl * 16 + i] = (uint8_t)kv_bits_get(blk + 1, i, 4);
        }
        return;
    }
    case EX_CB:
        for (int64_t bl = 0; bl < nb; bl++) {
            const uint8_t *blk = row + bl * 36;
            o->sc[bl] = kv_rd_u32(blk);
            for (int j = 0; j < 32; j++) {
                o->codes[bl * 64 + 2 * j] = blk[4 + j] >> 4;
                o->codes[bl * 64 + 2 * j + 1] = blk[4 + j] & 15;
            }
        }
        return;
    case EX_HIGGS:
        for (int64_t bl = 0; bl < nb; bl++) {
            const uint8_t *blk = row + bl * f->block_bytes;
            o->sc[bl] = kv_rd_u16(blk);
            for (int t = 0; t < 256 / s->p; t++) o->codes[bl * 256 + t * s->p] = (uint8_t)kv_bits_get(blk + 2, t, s->b);
        }
        return;
    case EX_Q4K:
        for (int64_t bl = 0; bl < nb; bl++) {
            const uint8_t *blk = row + bl * 144, *scales = blk + 4, *qs = blk + 16;
            o->sd[bl] = kv_rd_u16(blk);
            o->sm[bl] = kv_rd_u16(blk + 2);
            for (int j = 0; j < 8; j++) {
                uint8_t sc, m;
                if (j < 4) {
                    sc = scales[j] & 63;
                    m = scales[j + 4] & 63;
                } else {
                    sc = (uint8_t)((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
                    m = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
                }
                o->sc[bl * 8 + j] = sc;
                o->of[bl * 8 + j] = m;
            }
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    o->codes[bl * 256 + 64 * j + l] = qs[32 * j + l] & 15;
                    o->codes[bl * 256 + 64 * j + 32 + l] = qs[32 * j + l] >> 4;
                }
        }
        return;
    }
}

/* Where pair (row, k) (k even) lives: the lane's 16-byte word in plane0 and the pair's slot 0..31.
 * lane = 4*g + t holds rows g and g+8 of a 16-row tile and k in [32t, 32t+32) of a 128-wide chunk; slot 4s + j
 * is mma step s, A register j (j & 1: row + 8, j >> 1: second k pair of the step). */
static void pair_slot(const kv_gpu_pack *p, int64_t row, int64_t k, size_t *lane_index, int *slot) {
    const int64_t tile = row / 16, chunk = k / KV_GPU_CHUNK;
    const int r16 = (int)(row % 16), kk = (int)(k % KV_GPU_CHUNK);
    const int g = r16 % 8, t = kk / 32, within = kk % 32;
    const int s = within / 4, j = (r16 / 8) + 2 * ((within % 4) / 2);
    *lane_index = ((size_t)tile * (size_t)(p->cols / KV_GPU_CHUNK) + (size_t)chunk) * 32 + (size_t)(4 * g + t);
    *slot = 4 * s + j;
}

static void put_pair(kv_gpu_pack *p, int64_t row, int64_t k, uint32_t idx) {
    size_t li;
    int slot;
    pair_slot(p, row, k, &li, &slot);
    p->plane0[li * 16 + (size_t)(slot / 2)] |= (uint8_t)((idx & 15) << (4 * (slot & 1)));
    if (p->pair_bits == 6) p->plane1[li * 8 + (size_t)(slot / 4)] |= (uint8_t)(((idx >> 4) & 3) << (2 * (slot & 3)));
    else if (p->pair_bits == 8) p->plane1[li * 16 + (size_t)(slot / 2)] |= (uint8_t)(((idx >> 4) & 15) << (4 * (slot & 1)));
}

static uint32_t get_pair(const kv_gpu_pack *p, int64_t row, int64_t k) {
    size_t li;
    int slot;
    pair_slot(p, row, k, &li, &slot);
    uint32_t idx = (p->plane0[li * 16 + (size_t)(slot / 2)] >> (4 * (slot & 1))) & 15;
    if (p->pair_bits == 6) idx |= ((uint32_t)(p->plane1[li * 8 + (size_t)(slot / 4)] >> (2 * (slot & 3))) & 3) << 4;
    else if (p->pair_bits == 8) idx |= ((uint32_t)(p->plane1[li * 16 + (size_t)(slot / 2)] >> (4 * (slot & 1))) & 15) << 4;
    return idx;
}

static void put_raw(void *arr, int bytes, size_t i, uint32_t v) {
    if (bytes == 1) ((uint8_t *)arr)[i] = (uint8_t)v;
    else if (bytes == 2) ((uint16_t *)arr)[i] = (uint16_t)v;
    else ((uint32_t *)arr)[i] = v;
}

kv_status kv_gpu_pack_build(const kv_format *fmt, const void *data, int64_t rows, int64_t cols, kv_gpu_pack *out,
                            kv_error *err) {
    pack_spec s;
    kv_status st = spec_of(fmt, &s, err);
    if (st != KV_OK) return st;
    if ((st = layout_from_spec(fmt, &s, rows, cols, out, 1, err)) != KV_OK) return st;
    const int64_t ngroups = cols / out->group, rp = out->rows_pad;
    row_parts rp_buf = {
        .codes = calloc((size_t)cols, 1),
        .sc = calloc((size_t)ngroups, sizeof(uint32_t)),
        .of = calloc((size_t)ngroups, sizeof(uint32_t)),
        .sd = calloc((size_t)(cols / 256 + 1), sizeof(uint16_t)),
        .sm = calloc((size_t)(cols / 256 + 1), sizeof(uint16_t)),
    };
    if (!rp_buf.codes || !rp_buf.sc || !rp_buf.of || !rp_buf.sd || !rp_buf.sm) {
        st = kv_fail(err, KV_ENOMEM, "%s: out of memory for the GPU pack", fmt->name);
        goto done;
    }
    const size_t rb = kv_format_row_bytes(fmt, cols);
    const int scb = kv_gpu_scale_bytes(s.sk), ofb = kv_gpu_off_bytes(s.ok);
    for (int64_t r = 0; r < rows; r++) {
        extract_row(fmt, &s, (const uint8_t *)data + (size_t)r * rb, cols, &rp_buf);
        for (int64_t k = 0; k < cols; k += 2) {
            uint32_t idx = s.p == 2 ? rp_buf.codes[k] : (uint32_t)rp_buf.codes[k] | (uint32_t)rp_buf.codes[k + 1] << s.b;
            put_pair(out, r, k, idx);
        }
        for (int64_t g = 0; g < ngroups; g++) {
            put_raw(out->scale, scb, (size_t)(g * rp + r), rp_buf.sc[g]);
            if (ofb) put_raw(out->off, ofb, (size_t)(g * rp + r), rp_buf.of[g]);
        }
        if (out->super_bytes)
            for (int64_t b = 0; b < cols / 256; b++) {
                out->super_d[b * rp + r] = rp_buf.sd[b];
                out->super_m[b * rp + r] = rp_buf.sm[b];
            }
        if (out->rowmul) out->rowmul[r] = rp_buf.rowmul;
    }
done:
    free(rp_buf.codes);
    free(rp_buf.sc);
    free(rp_buf.of);
    free(rp_buf.sd);
    free(rp_buf.sm);
    if (st != KV_OK) kv_gpu_pack_free(out);
    return st;
}

float kv_gpu_e4m3_value(uint8_t b) {
    const int e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return NAN;
    const float v = e == 0 ? ldexpf((float)m, -9) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return b & 0x80 ? -v : v;
}

static uint32_t get_raw(const void *arr, int bytes, size_t i) {
    if (bytes == 1) return ((const uint8_t *)arr)[i];
    if (bytes == 2) return ((const uint16_t *)arr)[i];
    return ((const uint32_t *)arr)[i];
}

static float f32_of_bits(uint32_t b) {
    float v;
    memcpy(&v, &b, 4);
    return v;
}

void kv_gpu_pack_group_params(const kv_gpu_pack *p, int64_t group, int64_t row, float *scale, float *off) {
    const size_t i = (size_t)(group * p->rows_pad + row);
    const uint32_t raw = get_raw(p->scale, kv_gpu_scale_bytes(p->scale_kind), i);
    switch (p->scale_kind) {
    case KV_GS_F16: *scale = kv_fp16_to_fp32((uint16_t)raw); break;
    case KV_GS_F32: *scale = f32_of_bits(raw); break;
    case KV_GS_E8M0: *scale = raw ? f32_of_bits(raw << 23) : f32_of_bits(0x00400000u); break;
    case KV_GS_UE4M3: *scale = kv_gpu_e4m3_value((uint8_t)raw) * p->rowmul[row]; break;
    default: *scale = kv_fp16_to_fp32(p->super_d[(size_t)(group * 32 / 256 * p->rows_pad + row)]) * (float)raw; break;
    }
    *off = 0.0f;
    if (p->off_kind == KV_GO_NONE) return;
    const uint32_t ro = get_raw(p->off, kv_gpu_off_bytes(p->off_kind), i);
    switch (p->off_kind) {
    case KV_GO_F16: *off = kv_fp16_to_fp32((uint16_t)ro); break;
    case KV_GO_F32: *off = f32_of_bits(ro); break;
    default: *off = -(kv_fp16_to_fp32(p->super_m[(size_t)(group * 32 / 256 * p->rows_pad + row)]) * (float)ro); break;
    }
}

void kv_gpu_pack_decode_row(const kv_gpu_pack *p, int64_t row, float *out) {
    for (int64_t k = 0; k < p->cols; k += 2) {
        float sc, of;
        kv_gpu_pack_group_params(p, k / p->group, row, &sc, &of);
        const double hs = kv_fp16_to_fp32(kv_fp32_to_fp16(sc)), ho = kv_fp16_to_fp32(kv_fp32_to_fp16(of));
        const uint32_t e = p->lut[get_pair(p, row, k)];
        const double lo = kv_fp16_to_fp32((uint16_t)(e & 0xFFFF)), hi = kv_fp16_to_fp32((uint16_t)(e >> 16));
        out[k] = kv_fp16_to_fp32(kv_fp32_to_fp16((float)(lo * hs + ho)));
        out[k + 1] = kv_fp16_to_fp32(kv_fp32_to_fp16((float)(hi * hs + ho)));
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* W8A8                                                                                            */
/* ---------------------------------------------------------------------------------------------- */
int kv_gpu_pack8_supported(const kv_format *f) {
    if (f->type == KV_TYPE_KV_INT) return f->params[0] == 8 && f->params[1] == 0 && !f->params[2];
    return f->type == KV_TYPE_KV_FP && f->params[0] == KV_MF_E4M3;
}

void kv_gpu_pack8_free(kv_gpu_pack8 *p) {
    if (!p) return;
    free(p->q);
    free(p->scale);
    memset(p, 0, sizeof *p);
}

kv_status kv_gpu_pack8_build(const kv_format *f, const void *data, int64_t rows, int64_t cols, kv_gpu_pack8 *out,
                             kv_error *err) {
    memset(out, 0, sizeof *out);
    if (!kv_gpu_pack8_supported(f))
        return kv_fail(err, KV_EUNSUPPORTED, "format %s has no W8A8 GPU kernel (int8_g0_sym, int8_g0_sym_f32, fp8_e4m3)",
                       f->name);
    if (rows <= 0 || cols <= 0 || cols % 128)
        return kv_fail(err, KV_EUNSUPPORTED, "%s: the W8A8 kernels need rows of a multiple of 128 values (have %lld)",
                       f->name, (long long)cols);
    out->fp8 = f->type == KV_TYPE_KV_FP;
    out->rows = rows;
    out->cols = cols;
    out->q = malloc((size_t)(rows * cols));
    out->scale = malloc((size_t)rows * sizeof(float));
    if (!out->q || !out->scale) {
        kv_gpu_pack8_free(out);
        return kv_fail(err, KV_ENOMEM, "%s: out of memory for the GPU pack", f->name);
    }
    const size_t rb = kv_format_row_bytes(f, cols);
    const int hdr = f->row_header_bytes;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)data + (size_t)r * rb;
        out->scale[r] = hdr == 4 ? kv_rd_f32(row) : kv_fp16_to_fp32(kv_rd_u16(row));
        for (int64_t i = 0; i < cols; i++)
            out->q[r * cols + i] = out->fp8 ? (int8_t)row[hdr + i] : (int8_t)((int)row[hdr + i] - 128);
    }
    return KV_OK;
}

static uint8_t e4m3_rne(float v) {
    /* nearest E4M3 value, ties to even code, saturating at 448 (as __nv_cvt_float_to_fp8 with SATFINITE) */
    const uint8_t sign = v < 0 ? 0x80 : 0;
    float a = fabsf(v);
    if (a >= 448.0f) return sign | 0x7E;
    uint8_t best = 0;
    float bd = INFINITY;
    for (int c = 0; c < 0x7F; c++) {
        const float d = fabsf(kv_gpu_e4m3_value((uint8_t)c) - a);
        if (d < bd || (d == bd && !(c & 1))) bd = d, best = (uint8_t)c;
    }
    return sign | best;
}

float kv_gpu_quant_act_row(const float *x, int64_t cols, int fp8, int8_t *q) {
    float amax = 0.0f;
    for (int64_t i = 0; i < cols; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float s = amax > 0.0f ? amax / (fp8 ? 448.0f : 127.0f) : 1.0f;
    for (int64_t i = 0; i < cols; i++) {
        const float v = x[i] / s;
        if (fp8) {
            q[i] = (int8_t)e4m3_rne(v);
        } else {
            float r = rintf(v);
            q[i] = (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
        }
    }
    return s;
}
