/* mrgptq.c — MR-GPTQ (Egiazarian et al., "Bridging the Gap Between Promise and Performance for Microscaling
 * FP4 Quantization", arXiv 2509.23202; reference IST-DASLab/FP-Quant src/quantization/gptq.py): a block-wise
 * Hadamard rotation of each linear's input (block = the format's group, recorded as an online `rht` transform
 * that the forward pass applies to activations), the format's scales computed once on the whole rotated weight
 * before the GPTQ loop (with the format's own scale search: the `_ps` MX variants, `_mse` INT variants), then
 * GPTQ on the rotated weights with those scales fixed.
 * The rotation itself is the pipeline's `--transform rht:BLOCK` (src/kernels/cpu/hadamard.c): it rotates W and
 * records the online transform in the GGUF; this method checks that it is there and runs GPTQ with static
 * parameters on the rotated input statistics (the calibration engine rotates x with the same R). */
#include "algos/calib.h"

typedef struct {
    kv_gptq_opts o;
    int64_t mismatched;
} mr_state;

static kv_status mr_job(void *user, kv_quant_job *job, const double *h, int64_t ntok, kv_pool *pool, char *note,
                        size_t note_len, kv_error *err) {
    mr_state *s = user;
    if (job->fmt.type == KV_TYPE_F32 || job->fmt.type == KV_TYPE_F16 || job->fmt.type == KV_TYPE_BF16)
        return job->fmt.quantize(&job->fmt, job->w, job->dst, job->rows, job->cols, NULL, err);
    if (job->rht_block <= 0)
        return kv_fail(err, KV_EINVAL, "mr-gptq needs the input rotation: add --transform rht:%d (the format's "
                       "group)", (int)job->fmt.block);
    if (job->rht_block % job->fmt.block && job->fmt.block % job->rht_block) s->mismatched++;
    kv_gptq_stats st;
    kv_status r = kv_gptq_quantize(&job->fmt, job->w, job->rows, job->cols, h, &s->o, job->dst, &st, pool, err);
    if (r == KV_EUNSUPPORTED) { /* its own quantizer (the driver warned once per format) */
        if (err) kv_error_clear(err);
        return job->fmt.quantize(&job->fmt, job->w, job->dst, job->rows, job->cols, job->importance, err);
    }
    if (!r && st.warning[0]) snprintf(note, note_len, "%s", st.warning);
    return r;
}

kv_status kv_method_mrgptq(kv_quant_method_ctx *c, kv_error *err) {
    mr_state s;
    memset(&s, 0, sizeof s);
    kv_gptq_opts_default(&s.o);
    s.o.static_groups = 1; /* FP-Quant: scales on the whole rotated W, before the loop */
    const kv_quant_method *m = kv_quant_method_find("mr-gptq");
    kv_method_values local;
    const kv_method_values *v = kv_method_ctx_values(c, m, &local, err);
    if (!v) return err ? err->status : KV_EINVAL;
    s.o.act_order = kv_mopt_given(m, v, "act-order");
    if (kv_mopt_given(m, v, "damp")) s.o.percdamp = kv_mopt_num(m, v, "damp");
    kv_calib_opts co = {0};
    if (kv_mopt_given(m, v, "save-hessians")) co.save_dir = kv_mopt_text(m, v, "save-hessians");
    if (kv_mopt_given(m, v, "load-hessians")) co.load_dir = kv_mopt_text(m, v, "load-hessians");
    kv_status st = kv_calib_run(c, &co, mr_job, &s, NULL, err);
    if (!st && s.mismatched && c->log) {
        char line[200];
        snprintf(line, sizeof line, "mr-gptq: %lld weights have a rotation block that is not a multiple or divisor "
                 "of their format's group", (long long)s.mismatched);
        c->log(c->log_user, line);
    }
    return st;
}
