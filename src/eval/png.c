/* png.c — a small PNG writer for the report plots: 8-bit RGB, filter "Up" or "None" per row (whichever has the
 * smaller sum of absolute bytes), one zlib stream (RFC 1950) of fixed-Huffman deflate blocks (RFC 1951 §3.2.6)
 * with a greedy LZ77 matcher over a 32 KiB window, CRC-32 per chunk (PNG spec §5.5, ISO 3309 polynomial) and
 * Adler-32 of the stream. No dependency: plots are mostly flat colour, so fixed codes compress them well. */
#include "eval/plot_impl.h"
#include <stdlib.h>
#include <string.h>

/* ---- growable byte buffer with an LSB-first bit writer (deflate's bit order) ---- */

typedef struct bytebuf {
    uint8_t *p;
    size_t n, cap;
    uint32_t bits;   /* pending bits, LSB first */
    int nbits;
    int oom;
} bytebuf;

static void bb_put(bytebuf *b, uint8_t v) {
    if (b->oom) return;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 65536;
        uint8_t *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
    b->p[b->n++] = v;
}

static void bb_put_be32(bytebuf *b, uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) bb_put(b, (uint8_t)(v >> s));
}

static void bits_put(bytebuf *b, uint32_t v, int n) { /* n <= 16 */
    b->bits |= v << b->nbits;
    b->nbits += n;
    while (b->nbits >= 8) {
        bb_put(b, (uint8_t)b->bits);
        b->bits >>= 8;
        b->nbits -= 8;
    }
}

static void bits_flush(bytebuf *b) {
    if (b->nbits > 0) bb_put(b, (uint8_t)b->bits);
    b->bits = 0;
    b->nbits = 0;
}

/* Huffman codes are sent most significant bit first (RFC 1951 §3.1.1): reverse them for the LSB writer. */
static void huff_put(bytebuf *b, uint32_t code, int len) {
    uint32_t r = 0;
    for (int i = 0; i < len; i++) r |= ((code >> i) & 1u) << (len - 1 - i);
    bits_put(b, r, len);
}

/* Fixed literal/length code (§3.2.6). */
static void put_litlen(bytebuf *b, int sym) {
    if (sym < 144) huff_put(b, 0x30u + (uint32_t)sym, 8);
    else if (sym < 256) huff_put(b, 0x190u + (uint32_t)(sym - 144), 9);
    else if (sym < 280) huff_put(b, (uint32_t)(sym - 256), 7);
    else huff_put(b, 0xC0u + (uint32_t)(sym - 280), 8);
}

static const uint16_t k_len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                        31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t k_len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t k_dist_base[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
                                         193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t k_dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static void put_match(bytebuf *b, int len, int dist) {
    int li = 28;
    while (li > 0 && k_len_base[li] > len) li--;
    put_litlen(b, 257 + li);
    if (k_len_extra[li]) bits_put(b, (uint32_t)(len - k_len_base[li]), k_len_extra[li]);
    int di = 29;
    while (di > 0 && k_dist_base[di] > dist) di--;
    huff_put(b, (uint32_t)di, 5);
    if (k_dist_extra[di]) bits_put(b, (uint32_t)(dist - k_dist_base[di]), k_dist_extra[di]);
}

#define WIN 32768
#define HASH_BITS 15
#define CHAIN 16

static uint32_t hash3(const uint8_t *p) { return ((uint32_t)p[0] << 10 ^ (uint32_t)p[1] << 5 ^ p[2]) & ((1u << HASH_BITS) - 1); }

/* One final fixed-Huffman block over the whole input (a block may be any length). */
static int deflate_fixed(const uint8_t *in, size_t n, bytebuf *b) {
    int32_t *head = malloc(sizeof(int32_t) << HASH_BITS);
    int32_t *prev = malloc(sizeof(int32_t) * WIN);
    if (!head || !prev) { free(head); free(prev); return -1; }
    for (size_t i = 0; i < ((size_t)1 << HASH_BITS); i++) head[i] = -1;
    bits_put(b, 1, 1); /* BFINAL */
    bits_put(b, 1, 2); /* BTYPE = 01 fixed */
    size_t i = 0;
    while (i < n) {
        int best = 0, bdist = 0;
        if (i + 3 <= n) {
            uint32_t h = hash3(in + i);
            int32_t cand = head[h];
            for (int c = 0; c < CHAIN && cand >= 0 && i - (size_t)cand <= WIN; c++) {
                size_t max = n - i < 258 ? n - i : 258;
                size_t l = 0;
                while (l < max && in[(size_t)cand + l] == in[i + l]) l++;
                if ((int)l > best) { best = (int)l; bdist = (int)(i - (size_t)cand); if (l == max) break; }
                int32_t nx = prev[cand % WIN];
                if (nx >= cand) break;
                cand = nx;
            }
        }
        const size_t len = best >= 3 ? (size_t)best : 1;
        if (best >= 3) put_match(b, best, bdist);
        else put_litlen(b, in[i]);
        for (size_t k = 0; k < len; k++)
            if (i + k + 3 <= n) {
                uint32_t h = hash3(in + i + k);
                prev[(i + k) % WIN] = head[h];
                head[h] = (int32_t)(i + k);
            }
        i += len;
    }
    put_litlen(b, 256);
    bits_flush(b);
    free(head);
    free(prev);
    return b->oom ? -1 : 0;
}

uint32_t kv_crc32(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

uint32_t kv_adler32(const uint8_t *p, size_t n) {
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + p[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    return b << 16 | a;
}

static void put_chunk(bytebuf *out, const char type[4], const uint8_t *data, size_t n) {
    bb_put_be32(out, (uint32_t)n);
    size_t start = out->n;
    for (int i = 0; i < 4; i++) bb_put(out, (uint8_t)type[i]);
    for (size_t i = 0; i < n; i++) bb_put(out, data[i]);
    if (out->oom) return;
    bb_put_be32(out, kv_crc32(0, out->p + start, out->n - start));
}

/* Rows with their filter byte: Up when it makes the row smaller in sum |byte| (signed), else None. */
static uint8_t *filter_rows(const uint8_t *rgb, int w, int h, size_t *n) {
    const size_t stride = (size_t)w * 3;
    uint8_t *f = malloc((stride + 1) * (size_t)h);
    if (!f) return NULL;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = rgb + (size_t)y * stride, *up = y ? row - stride : NULL;
        uint8_t *dst = f + (size_t)y * (stride + 1);
        long s_none = 0, s_up = 0;
        for (size_t x = 0; x < stride; x++) {
            s_none += row[x] < 128 ? row[x] : 256 - row[x];
            if (up) { uint8_t d = (uint8_t)(row[x] - up[x]); s_up += d < 128 ? d : 256 - d; }
        }
        int use_up = up && s_up < s_none;
        dst[0] = use_up ? 2 : 0;
        for (size_t x = 0; x < stride; x++) dst[1 + x] = use_up ? (uint8_t)(row[x] - up[x]) : row[x];
    }
    *n = (stride + 1) * (size_t)h;
    return f;
}

kv_status kv_png_encode(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *out_n, kv_error *err) {
    *out = NULL;
    *out_n = 0;
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384) return kv_fail(err, KV_EINVAL, "PNG size %dx%d out of range", w, h);
    size_t nraw = 0;
    uint8_t *raw = filter_rows(rgb, w, h, &nraw);
    if (!raw) return kv_fail(err, KV_ENOMEM, "out of memory encoding a PNG");
    bytebuf z = {0};
    bb_put(&z, 0x78); /* CM 8, CINFO 7 (32 KiB window) */
    bb_put(&z, 0x01); /* FLEVEL 0, FCHECK: 0x7801 % 31 == 0 */
    if (deflate_fixed(raw, nraw, &z) != 0) z.oom = 1;
    bb_put_be32(&z, kv_adler32(raw, nraw));
    free(raw);
    bytebuf png = {0};
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    for (int i = 0; i < 8; i++) bb_put(&png, sig[i]);
    uint8_t ihdr[13];
    for (int i = 0; i < 4; i++) {
        ihdr[i] = (uint8_t)((uint32_t)w >> (24 - 8 * i));
        ihdr[4 + i] = (uint8_t)((uint32_t)h >> (24 - 8 * i));
    }
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 2;  /* colour type: truecolour */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* adaptive filtering */
    ihdr[12] = 0; /* no interlace */
    put_chunk(&png, "IHDR", ihdr, sizeof ihdr);
    if (!z.oom) put_chunk(&png, "IDAT", z.p, z.n);
    put_chunk(&png, "IEND", NULL, 0);
    int oom = z.oom || png.oom;
    free(z.p);
    if (oom) {
        free(png.p);
        return kv_fail(err, KV_ENOMEM, "out of memory encoding a PNG");
    }
    *out = png.p;
    *out_n = png.n;
    return KV_OK;
}
