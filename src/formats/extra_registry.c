/* extra_registry.c — kvant's non-ggml formats behind the registry (src/formats/registry.c calls
 * kv_formats_extra_get for every name that is not a ggml type): the name is offered to each family parser in
 * turn; also the shared shape/finiteness checks and the reference dot used by these families.
 * Type ids: one per family (extra.h); a family id alone does not determine the format, whose exact name is
 * stored in GGUF metadata kvant.tensor.<name>.format (docs/FORMAT.md). */
#include "formats/extra.h"
#include <stdio.h>

typedef kv_status (*family_get_fn)(const char *name, kv_format *out, kv_error *err);

static const family_get_fn k_families[] = {
    kv_fmt_int_get, kv_fmt_fp_get, kv_fmt_mx_get, kv_fmt_nvfp4ts_get, kv_fmt_codebook_get, kv_fmt_higgs_get,
    kv_fmt_e8_get,
};

static const struct {
    uint32_t type;
    const char *family;
    const char *example;
} k_family_ids[] = {
    {KV_TYPE_KV_INT, "int", "int4_g128_asym"},   {KV_TYPE_KV_FP, "fp", "fp8_e4m3"},
    {KV_TYPE_KV_MX, "mx", "mxfp4_ocp"},          {KV_TYPE_KV_NVFP4TS, "nvfp4_ts", "nvfp4_ts"},
    {KV_TYPE_KV_CODEBOOK, "codebook", "nf4"},    {KV_TYPE_KV_HIGGS, "higgs", "higgs_p2_b4"},
    {KV_TYPE_KV_E8, "e8", "e8_b4"},
};

/* Representative members listed by `kvant formats`. */
static const char *const k_list[] = {
    "int2_g64_asym", "int3_g128_asym", "int4_g32_sym", "int4_g128_sym", "int4_g128_asym", "int4_g128_asym_mse",
    "int4_g128_sym_f32", "int4_g0_sym", "int4_gt_sym", "int5_g128_asym", "int6_g128_sym", "int8_g0_sym",
    "int8_g128_sym",
    "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1",
    "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_ocp", "mxint8",
    "mxfp8_e4m3_ps", "mxfp6_e2m3_ps", "mxfp4_ocp_ps", "mxint8_ps",
    "nvfp4_ts", "nf4", "nf4_dq", "af4",
    "higgs_p1_b1", "higgs_p1_b2", "higgs_p1_b3", "higgs_p1_b4", "higgs_p1_b5", "higgs_p1_b6", "higgs_p1_b8",
    "higgs_p2_b2", "higgs_p2_b3", "higgs_p2_b4", "higgs_p4_b2",
    "e8_b2", "e8_b3", "e8_b4",
};

const char *kv_formats_extra_families(void) {
    return "int{2..8}_g{0|32|64|128|256|t}_{sym|asym}[_f32][_mse], fp8_e4m3, fp8_e5m2, fp6_e3m2, fp6_e2m3, "
           "fp4_e2m1, mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_ocp, mxint8 (each also _ps), nvfp4_ts, "
           "nf4, nf4_dq, af4, higgs_p1_b{1..8}, higgs_p2_b{2..4}, higgs_p4_b2, e8_b2, e8_b3, e8_b4";
}

int kv_formats_extra_list_count(void) { return (int)KV_ARRAY_LEN(k_list); }
const char *kv_formats_extra_list_name(int i) {
    return i >= 0 && i < (int)KV_ARRAY_LEN(k_list) ? k_list[i] : NULL;
}

kv_status kv_formats_extra_get(const char *name, kv_format *out, kv_error *err) {
    if (!name || !out) return kv_fail(err, KV_EINVAL, "format name or output is NULL");
    for (size_t i = 0; i < KV_ARRAY_LEN(k_families); i++) {
        kv_status st = k_families[i](name, out, err);
        if (st != KV_ENOTFOUND) return st;
    }
    return kv_fail(err, KV_ENOTFOUND, "unknown format '%s'", name);
}

kv_status kv_formats_extra_from_type(uint32_t type, kv_format *out, kv_error *err) {
    (void)out;
    for (size_t i = 0; i < KV_ARRAY_LEN(k_family_ids); i++)
        if (k_family_ids[i].type == type)
            return kv_fail(err, KV_EUNSUPPORTED,
                           "type %u is kvant's '%s' family: the exact format (e.g. '%s') is named by the metadata "
                           "key kvant.tensor.<name>.format", (unsigned)type, k_family_ids[i].family,
                           k_family_ids[i].example);
    return kv_fail(err, KV_ENOTFOUND, "unknown kvant type id %u", (unsigned)type);
}

void kv_xf_set_name(kv_format *f, const char *name) { kv_strlcpy(f->name, name, sizeof f->name); }

size_t kv_xf_row_bytes(const kv_format *f, int64_t n) {
    if (n <= 0 || n % f->block) return 0;
    return (size_t)f->row_header_bytes + (size_t)(n / f->block) * (size_t)f->block_bytes;
}

double kv_xf_dot_dequant(const kv_format *f, const void *row, const float *x, int64_t n) {
    float buf[256];
    double acc = 0.0;
    /* Rows with a header do not dequantize block by block: decode the whole row (on the heap when long). */
    float *y = n <= 256 ? buf : malloc((size_t)n * sizeof *y);
    if (!y) return NAN;
    f->dequantize(f, row, y, n);
    for (int64_t i = 0; i < n; i++) acc += (double)y[i] * x[i];
    if (y != buf) free(y);
    return acc;
}
