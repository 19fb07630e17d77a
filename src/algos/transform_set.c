/* transform_set.c — `--transform` lists parsed into a kv_transform_set, and prescale's MX variants. */
#include "algos/pipeline.h"
#include <stdio.h>

kv_status kv_transform_set_parse(const char *list, kv_transform_set *ts, kv_error *err) {
    memset(ts, 0, sizeof *ts);
    ts->rht_block = 512;
    ts->alpha = 0.5f;
    if (!list || !*list || !strcmp(list, "none")) return KV_OK;
    char buf[256];
    if (strlen(list) >= sizeof buf) return kv_fail(err, KV_EINVAL, "transform list too long");
    kv_strlcpy(buf, list, sizeof buf);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *arg = strchr(tok, ':');
        if (arg) *arg++ = 0;
        if (!strcmp(tok, "rht")) {
            ts->rht = 1;
            if (arg) {
                char *end;
                long b = strtol(arg, &end, 10);
                if (*end || b < 2 || b > (1 << 20) || !kv_rht_block_supported(b))
                    return kv_fail(err, KV_EINVAL, "rht block '%s' must be K*2^m with K in {1, 12, 20, 28}", arg);
                ts->rht_block = (int32_t)b;
            }
        } else if (!strcmp(tok, "quarot") && !arg) ts->quarot = 1;
        else if (!strcmp(tok, "fold-norms") && !arg) ts->fold = 1;
        else if (!strcmp(tok, "smoothquant")) {
            ts->smooth = 1;
            if (arg) {
                char *end;
                double a = strtod(arg, &end);
                if (*end || !(a >= 0 && a <= 1)) return kv_fail(err, KV_EINVAL, "smoothquant alpha '%s' must be in [0, 1]", arg);
                ts->alpha = (float)a;
            }
        } else if (!strcmp(tok, "awq") && !arg) ts->awq = 1;
        else if (!strcmp(tok, "prescale") && !arg) ts->prescale = 1;
        else
            return kv_fail(err, KV_EINVAL, "unknown transform '%s%s%s' (valid: rht[:BLOCK], quarot, fold-norms, smoothquant[:ALPHA], awq, prescale)",
                           tok, arg ? ":" : "", arg ? arg : "");
    }
    if (ts->smooth && ts->awq) return kv_fail(err, KV_EINVAL, "smoothquant and awq both rescale channels: choose one");
    return KV_OK;
}

kv_status kv_transform_list_rht_block(const char *list, int32_t *block, kv_error *err) {
    kv_transform_set ts;
    *block = 0;
    kv_status st = kv_transform_set_parse(list, &ts, err);
    if (st == KV_OK && ts.rht) *block = ts.rht_block;
    return st;
}

/* prescale: the MX formats' _ps variants (the block exponent chosen among e-1, e, e+1 for the least MSE) */
kv_status kv_prescale_name(const char *fmt, char *out, size_t n, kv_error *err) {
    kv_format f, ps;
    char cand[64];
    snprintf(cand, sizeof cand, "%s_ps", fmt);
    if (kv_format_get(fmt, &f, NULL) == KV_OK && f.family == KV_FAM_MX && !(f.traits & KV_FMT_SEARCH) &&
        kv_format_get(cand, &ps, NULL) == KV_OK) {
        kv_strlcpy(out, cand, n);
        return KV_OK;
    }
    if (!strcmp(fmt, "mxfp4")) return kv_fail(err, KV_EINVAL, "prescale needs an OCP MX format: ggml's mxfp4 has no pre-scaled variant (use mxfp4_ocp)");
    return kv_fail(err, KV_EINVAL, "prescale works only with MX formats (mxfp4_ocp, mxfp6_e2m3, mxfp8_e4m3, mxint8), not '%s'", fmt);
}
