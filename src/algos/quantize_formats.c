/* quantize_formats.c — the pipeline's format choice: a format per tensor (policy + prescale), the formats
 * AWQ searches with, and --act's activation format. */
#include "algos/pipeline.h"
#include "io/model_file.h"
#include <stdio.h>

kv_status kv_act_format(const char *act, kv_format *out, int *is_none, kv_error *err) {
    static const struct { const char *name, *fmt; } k_act[] = {
        {"int8", "int8_g0_sym"}, {"fp8", "fp8_e4m3"}, {"mxfp8", "mxfp8_e4m3"}, {"mxfp4", "mxfp4_ocp"},
    };
    *is_none = 0;
    if (!act || !*act || !strcmp(act, "none")) {
        *is_none = 1;
        return KV_OK;
    }
    for (size_t i = 0; i < KV_ARRAY_LEN(k_act); i++)
        if (!strcmp(act, k_act[i].name)) return kv_format_get(k_act[i].fmt, out, err);
    kv_error sub;
    kv_error_clear(&sub);
    if (kv_format_get(act, out, &sub) == KV_OK) return KV_OK;
    return kv_fail(err, KV_EINVAL, "unknown activation format '%s' (valid: none int8 fp8 mxfp8 mxfp4, or a format name)", act);
}

const kv_format *kv_qawq_format_of(void *user, const char *name) {
    struct { kv_qtensor *ot; int64_t n; } *u = user;
    for (int64_t i = 0; i < u->n; i++)
        if (!strcmp(u->ot[i].wt->name, name)) return &u->ot[i].fmt;
    return NULL;
}

/* Chooses every tensor's format (policy + prescale) and fills ot[]. */
kv_status kv_qchoose_formats(const kv_model_file *mf, kv_wmodel *wm, kv_policy *pol, const kv_transform_set *ts,
                                const kv_quantize_opts *o, kv_qtensor *ot, kv_quantize_report *rep, kv_error *err) {
    int has_output = kv_wmodel_find(wm, "output.weight") != NULL;
    for (int64_t i = 0; i < wm->n; i++) {
        kv_wtensor *t = &wm->t[i];
        kv_qtensor *x = &ot[i];
        memset(x, 0, sizeof *x);
        x->wt = t;
        kv_status st = kv_policy_choose(pol, &wm->hp, has_output, t->name, t->n_dims, t->shape, &x->choice, err);
        if (st != KV_OK) return st;
        char name[KV_FORMAT_NAME_MAX];
        kv_strlcpy(name, x->choice.format, sizeof name);
        kv_format chosen;
        if (ts->prescale && x->choice.quantize && kv_format_get(name, &chosen, NULL) == KV_OK &&
            chosen.family == KV_FAM_MX && !(chosen.traits & KV_FMT_SEARCH)) {
            if ((st = kv_prescale_name(name, name, sizeof name, err)) != KV_OK) return st;
        }
        if ((st = kv_format_get(name, &x->fmt, err)) != KV_OK) {
            kv_error_context(err, NULL, -1, t->name);
            return st;
        }
        x->type = x->fmt.type;
        x->row_bytes = kv_format_row_bytes(&x->fmt, kv_wtensor_row_len(t));
        if (x->row_bytes == 0) {
            kv_fail(err, KV_EINVAL, "rows of %lld do not fit format %s", (long long)kv_wtensor_row_len(t), x->fmt.name);
            kv_error_context(err, kv_model_path(mf), -1, t->name);
            return KV_EINVAL;
        }
        x->nbytes = (uint64_t)x->row_bytes * (uint64_t)(kv_wtensor_nelem(t) / kv_wtensor_row_len(t));
        if (x->choice.fallback) {
            rep->n_fallback++;
            kv_qnote(o, "fallback: %s", x->choice.note);
        }
    }
    if (ts->prescale) {
        int any = 0;
        for (int64_t i = 0; i < wm->n; i++) any |= ot[i].fmt.family == KV_FAM_MX && (ot[i].fmt.traits & KV_FMT_SEARCH);
        if (!any) return kv_fail(err, KV_EINVAL, "prescale works only with MX formats (mxfp4_ocp, mxfp6_e2m3, mxfp8_e4m3, mxint8), not '%s'", pol->format);
    }
    return KV_OK;
}

