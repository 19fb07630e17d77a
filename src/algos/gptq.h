/* gptq.h — internal helpers of the error-compensation methods (src/algos): the "format grid", which lets
 * GPTQ round single columns of any kv_format whose block parameters are fixed.
 *
 * How a format grid is found (no per-format code): quantize a random block with the format, flip each bit of
 * the packed block and dequantize; bits that change the value of p elements only (p = 1 for scalar formats,
 * 2 for HIGGS p=2 vectors) are the code bits of those elements (a "unit"); bits that change more elements
 * are block parameters (scales, mins, sub-block scales). Then every unit's value must be affine in a
 * normalized level table t shared by all units: value_i(code) = a_i·t_i[code] + b_i, where a_i, b_i depend
 * on the block parameters only. GPTQ quantizes a block with the format's own quantizer when it first reaches
 * one of its columns (that fixes the parameters), reads a_i, b_i back with two dequantizations, and from then
 * on rounds each column to the nearest level; the codes are written into the packed block, so the result is
 * in the format's exact bytes. */
#ifndef KV_ALGOS_GPTQ_H
#define KV_ALGOS_GPTQ_H

#include "core/core.h"

typedef struct kv_fgrid {
    kv_format fmt;
    int32_t B;            /* elements per block */
    int32_t bb;           /* bytes per block */
    int32_t hdr;          /* row header bytes */
    int32_t p;            /* elements per unit (coded jointly) */
    int32_t nunits;       /* B / p */
    int32_t nbits;        /* code bits per unit */
    int32_t ncodes;       /* 1 << nbits */
    int32_t *unit_pos;    /* [nunits][p] element positions in the block, ascending */
    int32_t *unit_bit;    /* [nunits][nbits] bit indices inside the packed block (LSB-first bytes) */
    int32_t *pos_unit;    /* [B] unit of each position */
    int32_t *pos_coord;   /* [B] coordinate of each position inside its unit */
    float *t;             /* [ncodes][p] normalized levels */
    uint8_t *valid;       /* [ncodes] 1 when the code dequantizes to finite values */
    int32_t *c0, *c1;     /* [p] reference codes: t = 0 at c0, t = 1 at c1 */
    int32_t nsorted;      /* p == 1: valid codes sorted by level, duplicates removed */
    int32_t *sorted_code;
    float *sorted_t;
} kv_fgrid;

kv_status kv_fgrid_build(const kv_format *f, kv_fgrid *g, kv_error *err);
void kv_fgrid_free(kv_fgrid *g);

int32_t kv_fgrid_get_code(const kv_fgrid *g, const uint8_t *blk, int32_t unit);
void kv_fgrid_set_code(const kv_fgrid *g, uint8_t *blk, int32_t unit, int32_t code);

/* Affine parameters of every position of one packed block (with its row header hdr_bytes in front, as the
 * format's dequantize expects): value(pos, code) = a[pos]·t[code][coord(pos)] + b[pos]. scratch: at least
 * g->hdr + g->bb bytes; fscratch: 2·g->B floats. */
void kv_fgrid_affine(const kv_fgrid *g, const uint8_t *row_hdr, const uint8_t *blk, float *a, float *b,
                     uint8_t *scratch, float *fscratch);

/* p == 1: nearest valid code to the level u (ties: the lower level). */
int32_t kv_fgrid_nearest1(const kv_fgrid *g, float u);

#endif
