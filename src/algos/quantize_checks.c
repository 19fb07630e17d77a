/* quantize_checks.c — input kv_quantize_model would otherwise ignore or misuse without a word: imatrix entries
 * that do not fit the model (refused, as llama-quantize refuses a size mismatch), and options that have no effect
 * on the tensors they reach (one warning each, saying what happens instead). Issue 15. */
#include "algos/pipeline.h"
#include "algos/gptq.h"
#include "model/wmodel.h"

kv_status kv_qcheck_imatrix(const kv_imatrix *im, kv_wmodel *wm, const char *path, kv_error *err) {
    for (int64_t i = 0; i < kv_imatrix_n_entries(im); i++) {
        const char *name = kv_imatrix_entry_name(im, i);
        int64_t nval = 0;
        kv_imatrix_find(im, name, &nval);
        const kv_wtensor *t = kv_wmodel_find(wm, name);
        if (!t || t->n_dims < 2) {
            kv_fail(err, KV_EINVAL, "imatrix entry '%s' names no matrix of this model (an imatrix of another model?)",
                    name);
            kv_error_context(err, path, -1, name);
            return KV_EINVAL;
        }
        int64_t cols = t->shape[t->n_dims - 1];
        if (nval != cols) {
            kv_fail(err, KV_EINVAL, "imatrix entry '%s' has %lld values, the tensor has %lld input columns (an imatrix "
                    "of another model?)", name, (long long)nval, (long long)cols);
            kv_error_context(err, path, -1, name);
            return KV_EINVAL;
        }
    }
    return KV_OK;
}

/* Up to three example names after a count: "blk.0.attn_q.weight, blk.0.attn_k.weight, ..." */
static void add_example(char *buf, size_t n, int *count, const char *name) {
    if (*count < 3) snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", *count ? ", " : "", name);
    else if (*count == 3) snprintf(buf + strlen(buf), n - strlen(buf), ", ...");
    (*count)++;
}

static int is_quantized(const kv_qtensor *x) { return x->wt->n_dims >= 2 && !kv_format_is_plain(&x->fmt); }

/* --imatrix given, but the formats of the tensors it has entries for round without importance. */
static void warn_unused_imatrix(const kv_quantize_opts *o, const kv_imatrix *im, const kv_qtensor *ot, int64_t n) {
    char fmts[200] = "", ex[400] = "";
    int n_ignore = 0, n_use = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!is_quantized(&ot[i]) || !kv_imatrix_find(im, ot[i].wt->name, NULL)) continue;
        if (kv_format_uses_importance(&ot[i].fmt)) { n_use++; continue; }
        if (!strstr(fmts, ot[i].fmt.name) && strlen(fmts) + strlen(ot[i].fmt.name) + 3 < sizeof fmts)
            snprintf(fmts + strlen(fmts), sizeof fmts - strlen(fmts), "%s%s", fmts[0] ? ", " : "", ot[i].fmt.name);
        add_example(ex, sizeof ex, &n_ignore, ot[i].wt->name);
    }
    if (!n_ignore) return;
    if (!n_use)
        kv_qnote(o, "warning: --imatrix has no effect: %s round%s without importance (the output is what it would "
                 "be without --imatrix)", fmts, strchr(fmts, ',') ? "" : "s");
    else
        kv_qnote(o, "warning: --imatrix is ignored by %d tensor%s in %s (%s), which round%s without importance; %d "
                 "tensor%s use%s it", n_ignore, n_ignore == 1 ? "" : "s", fmts, ex, n_ignore == 1 ? "s" : "", n_use,
                 n_use == 1 ? "" : "s", n_use == 1 ? "s" : "");
}

/* gptq / mr-gptq on a format whose codes GPTQ cannot round column by column: those tensors get the format's own
 * round-to-nearest (the method says so once per format instead of once per tensor). */
static void warn_gptq_unsupported(const kv_quantize_opts *o, const kv_quant_method *meth, const kv_qtensor *ot,
                                  int64_t n) {
    char seen[16][KV_FORMAT_NAME_MAX];
    int n_seen = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!is_quantized(&ot[i]) || !strncmp(ot[i].wt->name, "token_embd", 10)) continue;
        int dup = 0;
        for (int k = 0; k < n_seen; k++) dup |= !strcmp(seen[k], ot[i].fmt.name);
        if (dup || n_seen == 16) continue;
        kv_strlcpy(seen[n_seen++], ot[i].fmt.name, sizeof seen[0]);
        kv_fgrid g;
        kv_error e;
        kv_error_clear(&e);
        kv_status st = kv_fgrid_build(&ot[i].fmt, &g, &e);
        if (st == KV_OK) { kv_fgrid_free(&g); continue; }
        char ex[400] = "";
        int count = 0;
        for (int64_t j = 0; j < n; j++)
            if (is_quantized(&ot[j]) && strncmp(ot[j].wt->name, "token_embd", 10) && !strcmp(ot[j].fmt.name, ot[i].fmt.name))
                add_example(ex, sizeof ex, &count, ot[j].wt->name);
        kv_qnote(o, "warning: --method %s cannot error-compensate %s (%s): its %d tensors (%s) are rounded to "
                 "nearest instead", meth->name, ot[i].fmt.name, e.message, count, ex);
    }
}

/* --transform rht:B on inputs whose width B does not divide: the largest Hadamard block that does is used. */
static void warn_rht_blocks(const kv_quantize_opts *o, const kv_transform_set *ts, const kv_wmodel *wm) {
    int64_t widths[16], blocks[16];
    int nw = 0, count[16] = {0};
    char ex[16][200];
    for (int64_t i = 0; i < wm->n; i++) {
        const kv_wtensor *t = &wm->t[i];
        if (t->rht_block <= 0 || t->rht_block == ts->rht_block) continue;
        int64_t w = t->shape[t->n_dims - 1];
        int k = 0;
        while (k < nw && widths[k] != w) k++;
        if (k == nw) {
            if (nw == 16) continue;
            widths[nw] = w;
            blocks[nw] = t->rht_block;
            ex[nw][0] = 0;
            nw++;
        }
        add_example(ex[k], sizeof ex[k], &count[k], t->name);
    }
    for (int k = 0; k < nw; k++)
        kv_qnote(o, "warning: --transform rht:%d: input width %lld is not a multiple of %d: %d tensors (%s) are "
                 "rotated in blocks of %lld instead%s", (int)ts->rht_block, (long long)widths[k], (int)ts->rht_block,
                 count[k], ex[k], (long long)blocks[k], blocks[k] < 32 ? " (too small to spread outliers)" : "");
}

static void warn_unmatched_overrides(const kv_quantize_opts *o, const kv_policy *pol, const kv_qtensor *ot,
                                     int64_t n) {
    for (int i = 0; i < pol->n_overrides; i++) {
        int hit = 0;
        for (int64_t j = 0; j < n && !hit; j++)
            hit = kv_policy_quantizable(ot[j].wt->name, ot[j].wt->n_dims) &&
                  regexec(&pol->overrides[i].re, ot[j].wt->name, 0, NULL, 0) == 0;
        if (!hit)
            kv_qnote(o, "warning: --override '%s=%s' matches no quantizable tensor: it changes nothing",
                     pol->overrides[i].pattern, pol->overrides[i].format);
    }
}

void kv_qwarn_ignored_input(const kv_quantize_opts *o, const kv_policy *pol, const kv_transform_set *ts,
                            const kv_quant_method *meth, const kv_wmodel *wm, const kv_qtensor *ot,
                            const kv_imatrix *im_file) {
    if (!o->log) return;
    if (im_file && meth->per_tensor) warn_unused_imatrix(o, im_file, ot, wm->n);
    if (meth->compensates) warn_gptq_unsupported(o, meth, ot, wm->n);
    if (ts->rht) warn_rht_blocks(o, ts, wm);
    warn_unmatched_overrides(o, pol, ot, wm->n);
}
