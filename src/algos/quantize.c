/* quantize.c — kv_quantize_model: the pipeline every `kvant quantize` run goes through.
 *   open the model → fp32 working copy → transforms (smoothquant | awq, quarot, rht) → a format per tensor
 *   (policy.c) → importance (imatrix file, or collected on the transformed model) → the method (rtn.c or a
 *   registered one) → GGUF with llama.cpp's metadata (or safetensors) through an atomic output file.
 * The steps live in their own files: model/wmodel.c (working model), quantize_calib.c (calibration data),
 * transform_set.c (--transform), quantize_formats.c (format choice), quantize_bytes.c (the method step),
 * quantize_write.c (GGUF / safetensors output). docs/quantize.md. */
#include "algos/pipeline.h"
#include "algos/calib.h"
#include "algos/linalg.h"
#include "io/model_file.h"
#include "model/model.h"
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* HF output (kv_hf_write): the tensors as chosen, under Hugging Face names; the source directory's config and
 * tokenizer files are carried over. data may be NULL (for kv_hf_check before quantizing). */
static kv_hf_tensor *hf_tensors(const kv_qtensor *ot, int64_t n, kv_error *err) {
    kv_hf_tensor *h = kv_calloc((size_t)KV_MAX(n, 1), sizeof *h, err);
    for (int64_t i = 0; h && i < n; i++) {
        const kv_wtensor *t = ot[i].wt;
        h[i].name = t->name;
        h[i].n_dims = t->n_dims;
        memcpy(h[i].shape, t->shape, sizeof h[i].shape);
        h[i].fmt = ot[i].fmt;
        h[i].data = ot[i].data;
        h[i].rht_block = t->rht_block;
    }
    return h;
}

static kv_hf_write_opts hf_opts(const kv_model_file *mf, const kv_quantize_opts *o, const char *recipe) {
    kv_hf_write_opts h = {0};
    h.layout = o->out_format == KV_OUT_HF_GPTQ ? KV_HF_GPTQ : KV_HF_COMPRESSED_TENSORS;
    h.act = o->act;
    h.source_dir = kv_model_format(mf) == KV_FILE_HF ? kv_model_path(mf) : NULL;
    h.max_shard_bytes = o->max_shard_bytes;
    h.recipe = recipe;
    return h;
}

static int is_hf_out(kv_out_format f) { return f == KV_OUT_HF_GPTQ || f == KV_OUT_HF_CT; }

/* One call per written tensor, in file order (kv_qwrite_gguf sorted ot[]): name, stored type, shape, bytes. */
static void report_tensors(const kv_quantize_opts *o, const kv_qtensor *ot, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const kv_wtensor *t = ot[i].wt;
        int64_t shape[4];
        for (int d = 0; d < t->n_dims && d < 4; d++) shape[d] = t->shape[d];
        o->on_tensor(o->log_user, t->name, ot[i].type == KV_TYPE_ECW ? "ecw" : ot[i].fmt.name, t->n_dims, shape,
                     ot[i].nbytes);
    }
}

kv_status kv_quantize_model(const char *model_path, const char *out_path, const kv_quantize_opts *opts_in,
                            kv_quantize_report *rep, kv_error *err) {
    kv_quantize_opts o = opts_in ? *opts_in : (kv_quantize_opts){0};
    kv_quantize_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    const double t0 = kv_now_seconds();
    if (!model_path || !out_path) return kv_fail(err, KV_EINVAL, "model and output paths are required");
    kv_qrecipe rc;
    kv_policy pol;
    kv_status st = kv_qrecipe_parse(out_path, &o, &rc, &pol, err); /* every refusal that needs no model, first */
    if (st != KV_OK) return st;
    const kv_quant_method *meth = rc.meth;
    const kv_transform_set ts = rc.ts;
    const int act_none = rc.act_none;
    const char *format = rc.format;
    (void)format;

    kv_model_file *mf = NULL;
    kv_wmodel wm = {0};
    kv_imatrix *im = NULL;
    int32_t *cids = NULL;
    int64_t n_cids = 0;
    kv_model *cal = NULL;
    kv_act_stats stats = {0};
    kv_qtensor *ot = NULL;
    const int32_t ctx = o.calib_ctx > 0 ? o.calib_ctx : 512;
    char applied[128] = "";
    kv_progress prog;
    kv_qextra xo = {0};

    /* round-to-nearest and the calibrated methods without whole-model transforms stream (a computed imatrix
     * too, block by block): one tensor (or one decoder block) at a time; the rest holds the model in fp32
     * (docs/quantize.md "Memory") */
    const int calibrated = meth->layerwise; /* block by block through kv_calib_run */
    const int streaming = (meth->per_tensor || calibrated) && !ts.smooth && !ts.awq && !ts.quarot && !ts.fold &&
                          !o.transform_only && o.out_format == KV_OUT_GGUF && !o.in_memory;
    if (st == KV_OK && o.resume && !(streaming && calibrated))
        st = kv_fail(err, KV_EINVAL, "--resume continues streamed calibrated runs (gptq, mr-gptq, watersic without "
                     "whole-model transforms); this run has no checkpoints");
    kv_qstream ss = {0};
    ss.spill_fd = -1;
    kv_qspill *cs = NULL;
    if (st == KV_OK) st = kv_model_open(model_path, &mf, err);
    if (st == KV_OK && !kv_model_hparams(mf)->n_layer)
        st = kv_fail(err, KV_EUNSUPPORTED, "'%s' has no model hyper-parameters (a lone safetensors file?)", model_path);
    if (st == KV_OK) st = kv_qcheck_source(mf, &o, err);
    if (st == KV_OK) st = streaming ? kv_wmodel_load_lazy(mf, &wm, err) : kv_wmodel_load(mf, &wm, err);
    if (st == KV_OK && o.imatrix_path) {
        if ((st = kv_imatrix_load(o.imatrix_path, &im, err)) == KV_OK) pol.has_imatrix = 1;
        if (st == KV_OK) st = kv_qcheck_imatrix(im, &wm, o.imatrix_path, err);
    }
    if (st == KV_OK && o.calib_path) st = kv_qcalib_tokens(mf, &o, ctx, &cids, &n_cids, err);
    if (st == KV_OK && !im && cids && !o.no_imatrix) pol.has_imatrix = 1; /* computed below */

    /* channel rescaling first: its statistics are the original model's activations */
    if (st == KV_OK && ts.smooth) {
        kv_model *base = NULL;
        if ((st = kv_model_load(mf, NULL, &base, err)) == KV_OK) {
            st = kv_qcollect_act_stats(base, cids, n_cids, ctx, o.pool, &stats, err);
            kv_model_free(base);
        }
        if (st == KV_OK && ts.smooth) {
            st = kv_transform_smoothquant(&wm, &stats, ts.alpha, err);
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%ssmoothquant:%.2f", applied[0] ? "," : "", (double)ts.alpha);
        }
    }
    /* formats are known before AWQ (its search quantizes with them) */
    if (st == KV_OK) {
        ot = kv_calloc((size_t)KV_MAX(wm.n + 1, 1), sizeof *ot, err);
        if (!ot) st = KV_ENOMEM;
    }
    if (st == KV_OK) st = kv_qchoose_formats(mf, &wm, &pol, &ts, &o, ot, rep, err);
    if (st == KV_OK && is_hf_out(o.out_format)) { /* every refusal of the HF writer before the slow work */
        kv_hf_tensor *h = hf_tensors(ot, wm.n, err);
        kv_hf_write_opts ho = hf_opts(mf, &o, NULL);
        st = h ? kv_hf_check(&wm.hp, h, wm.n, &ho, err) : KV_ENOMEM;
        free(h);
    }
    if (st == KV_OK && ts.awq) {
        char summary[320] = "";
        struct { kv_qtensor *ot; int64_t n; } u = {ot, wm.n};
        kv_model *base = NULL; /* the unquantized model AWQ runs block by block */
        if ((st = kv_model_load(mf, NULL, &base, err)) == KV_OK)
            st = kv_transform_awq(&wm, base, cids, n_cids, ctx, kv_qawq_format_of, &u, !o.transform_only, o.pool, NULL,
                                  summary, sizeof summary, err);
        kv_model_free(base);
        if (st == KV_OK) {
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%sawq", applied[0] ? "," : "");
            if (summary[0]) kv_qnote(&o, "awq: %s", summary);
        }
    }
    if (st == KV_OK && ts.fold && !ts.quarot) {
        if ((st = kv_transform_fold_norms(&wm, err)) == KV_OK)
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%sfold-norms", applied[0] ? "," : "");
    }
    if (st == KV_OK && ts.quarot) {
        if ((st = kv_transform_quarot(&wm, o.seed, err)) == KV_OK)
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%squarot", applied[0] ? "," : "");
    }
    if (st == KV_OK && ts.rht) { /* streaming rotates each tensor when it reads it */
        if (streaming) kv_transform_rht_plan(&wm, ts.rht_block, o.seed);
        else st = kv_transform_rht(&wm, ts.rht_block, o.seed, err);
        if (st == KV_OK)
            snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%srht:%d", applied[0] ? "," : "", (int)ts.rht_block);
    }
    if (st == KV_OK && ts.prescale)
        snprintf(applied + strlen(applied), sizeof applied - strlen(applied), "%sprescale", applied[0] ? "," : "");
    kv_strlcpy(rep->transforms, applied, sizeof rep->transforms);
    /* quarot may have created output.weight: formats again for the final tensor list */
    if (st == KV_OK && wm.untied) {
        kv_quantize_opts silent = o; /* the notes were given the first time */
        silent.log = NULL;
        st = kv_qchoose_formats(mf, &wm, &pol, &ts, &silent, ot, &(kv_quantize_report){0}, err);
    }
    if (st == KV_OK && !o.transform_only) kv_qwarn_ignored_input(&o, &pol, &ts, meth, &wm, ot, o.imatrix_path ? im : NULL);
    if (st == KV_OK && calibrated && !o.transform_only) { /* the compensating methods spend their time in BLAS */
        char wb[400];
        const char *w = kv_blas_slow_kernels_warning(wb, sizeof wb);
        if (w) kv_qnote(&o, "%s", w);
    }

    if (st == KV_OK && o.transform_only) {
        kv_format f32;
        if ((st = kv_format_from_type(KV_TYPE_F32, &f32, err)) == KV_OK)
            for (int64_t i = 0; i < wm.n; i++) {
                ot[i].fmt = f32;
                ot[i].type = KV_TYPE_F32;
                ot[i].row_bytes = (size_t)kv_wtensor_row_len(&wm.t[i]) * 4;
                ot[i].nbytes = (uint64_t)kv_wtensor_nelem(&wm.t[i]) * 4;
            }
    }
    /* importance and calibrated methods run on the transformed, unquantized model */
    if (st == KV_OK && cids && !o.transform_only && (meth->needs_calib || (!im && !o.no_imatrix))) {
        /* streaming: the calibration model borrows the source's weights; each block gets fp32 copies in turn */
        st = streaming ? kv_model_load(mf, NULL, &cal, err) : kv_wmodel_to_model(mf, &wm, &cal, err);
        if (st == KV_OK && !im && !o.no_imatrix) {
            if ((st = kv_imatrix_create(&im, err)) == KV_OK) {
                kv_imatrix_set_dataset(im, o.calib_path);
                kv_progress_begin(&prog, "imatrix", streaming ? wm.hp.n_layer + 1 : n_cids / ctx, o.quiet);
                st = streaming ? kv_qstream_imatrix(mf, cal, &wm, cids, n_cids, ctx, o.pool, im, &prog, err)
                               : kv_qcollect_imatrix(cal, &wm, cids, n_cids, ctx, o.pool, im, &prog, err);
                kv_progress_end(&prog);
            }
        }
    }
    kv_quant_method_ctx mc = {0}; /* outlives this block: the streaming writer quantizes with it */
    if (st == KV_OK) {
        mc.model = cal;
        mc.calib_ids = cids;
        mc.n_calib_ids = n_cids;
        mc.calib_ctx = ctx;
        mc.options = rc.method_opts;
        mc.values = &rc.mv;
        mc.seed = o.seed;
        mc.pool = o.pool;
        mc.log = o.log;
        mc.log_user = o.log_user;
        if (o.out_format == KV_OUT_GGUF) {
            mc.add_meta = kv_qextra_add_meta;
            mc.add_tensor = kv_qextra_add_tensor;
            mc.out_user = &xo;
        }
        if (streaming) {
            ss.mf = mf;
            ss.hp = &wm.hp;
            ss.mc = &mc;
            ss.im = im;
            ss.batch = KV_MIN(64, KV_MAX(1, o.pool ? kv_pool_threads(o.pool) : 1));
            ss.needs_calib = meth->needs_calib;
            if (calibrated) {
                kv_progress_begin(&prog, "calibrate", (int64_t)KV_N_BLOCK_LINEARS * wm.hp.n_layer, o.quiet);
                st = kv_qstream_calibrate(model_path, mf, &wm, ot, meth, &mc, im, &o, format, out_path, &prog, &cs, err);
                kv_progress_end(&prog);
                ss.spill_fd = kv_qspill_fd(cs);
                ss.spill_path = kv_qspill_path(cs);
            }
        } else {
            kv_progress_begin(&prog, "quantize", wm.n, o.quiet);
            st = kv_qproduce_bytes(mf, &wm, ot, meth, &mc, im, &prog, err);
            kv_progress_end(&prog);
        }
        if (st == KV_OK && o.entropy_code && streaming) { /* a size pass: the header needs the containers' sizes */
            kv_progress_begin(&prog, "entropy-code sizes", wm.n, o.quiet);
            ss.prog = &prog;
            st = kv_qstream_entropy_sizes(&ss, ot, wm.n, &o, err);
            ss.prog = NULL;
            kv_progress_end(&prog);
        } else if (st == KV_OK && o.entropy_code)
            st = kv_qentropy_code(ot, wm.n, &o, err);
        mc.progress = NULL;
        mc.jobs = NULL;
        mc.n_jobs = 0;
    }
    if (st == KV_OK) {
        kv_qrun_info ri = {&pol, o.method ? o.method : "rtn", applied, act_none ? NULL : o.act, o.seed, NULL};
        char *recipe_json = kv_qrecipe_json(&o, &rc);
        ri.recipe_json = recipe_json;
        uint64_t total = 0;
        for (int64_t i = 0; i < wm.n; i++) total += ot[i].nbytes;
        if (o.out_format == KV_OUT_SAFETENSORS) st = kv_qwrite_safetensors(ot, wm.n, &ri, out_path, err);
        else if (is_hf_out(o.out_format)) {
            kv_hf_tensor *h = hf_tensors(ot, wm.n, err);
            kv_hf_write_opts ho = hf_opts(mf, &o, recipe_json);
            kv_progress_begin(&prog, "write", wm.n, o.quiet);
            ho.progress = &prog;
            st = h ? kv_hf_write(out_path, &wm.hp, h, wm.n, &ho, &rep->hf, err) : KV_ENOMEM;
            kv_progress_end(&prog);
            free(h);
        } else {
            kv_progress_begin(&prog, streaming ? "quantize" : "write", streaming ? wm.n : (int64_t)total, o.quiet);
            ss.prog = &prog;
            st = kv_qwrite_gguf(mf, &wm, ot, wm.n, &ri, &xo, streaming ? &ss : NULL, out_path, &prog, err);
            kv_progress_end(&prog);
        }
        free(recipe_json);
    }
    if (st == KV_OK && o.on_tensor) report_tensors(&o, ot, wm.n);
    if (st == KV_OK) {
        for (int64_t i = 0; i < wm.n; i++) {
            rep->n_tensors++;
            rep->n_params += kv_wtensor_nelem(&wm.t[i]);
            rep->tensor_bytes += ot[i].nbytes;
            if (!kv_format_is_plain(&ot[i].fmt) || ot[i].type == KV_TYPE_ECW) rep->n_quantized++;
        }
        for (int64_t i = 0; i < xo.n; i++) /* a method's extra tensors are storage too (not parameters) */
            if (xo.it[i].is_tensor) rep->tensor_bytes += xo.it[i].nbytes;
        struct stat sb;
        if (is_hf_out(o.out_format)) rep->file_bytes = rep->hf.tensor_bytes; /* the safetensors payload */
        else if (stat(out_path, &sb) == 0) rep->file_bytes = (uint64_t)sb.st_size;
        rep->bpw = rep->n_params ? (double)rep->tensor_bytes * 8.0 / (double)rep->n_params : 0;
        rep->streamed = streaming ? (calibrated ? 2 : 1) : 0;
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0) rep->peak_rss_bytes = (uint64_t)ru.ru_maxrss * 1024u; /* KiB on Linux */
        kv_qllama_cpp_verdict(ot, wm.n, o.out_format, act_none ? NULL : o.act, applied, rep);
    }
    rep->seconds = kv_now_seconds() - t0;
    if (st != KV_OK && cs && err)
        kv_qnote(&o, "the finished blocks are kept in %s: rerun with the same arguments and --resume",
                 kv_qspill_state_path(cs));
    kv_qspill_close(cs, st == KV_OK);
    if (st != KV_OK && err && !err->file[0] && !err->tensor[0]) kv_error_context(err, model_path, -1, NULL);
    for (int64_t i = 0; ot && i < wm.n; i++) free(ot[i].owned);
    free(ot);
    kv_act_stats_free(&stats);
    kv_model_free(cal);
    kv_imatrix_free(im);
    free(cids);
    kv_wmodel_free(&wm);
    kv_model_close(mf);
    kv_policy_free(&pol);
    kv_qextra_free(&xo);
    return st;
}

