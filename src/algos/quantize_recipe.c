/* quantize_recipe.c — the typed recipe of kv_quantize_model: the method with its validated options, the
 * transforms, the activation format, the per-tensor policy, parsed once from kv_quantize_opts; and every check
 * that can refuse a run before weights are read (method/format/output/transform combinations, the output
 * directory, inputs that must exist, an already-quantized source without allow_requantize). Also the recipe
 * as JSON (the metadata key kvant.quantize.recipe). docs/quantize.md "Recipes". */
#include "algos/pipeline.h"
#include "io/json.h"
#include "io/model_file.h"
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_hf_out(kv_out_format f) { return f == KV_OUT_HF_GPTQ || f == KV_OUT_HF_CT; }

/* The directory that will hold path must exist and take new files. */
static kv_status check_out_dir(const char *path, kv_error *err) {
    char dir[1024];
    if (strlen(path) >= sizeof dir) return kv_fail(err, KV_EINVAL, "output path too long");
    kv_strlcpy(dir, path, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (!slash) kv_strlcpy(dir, ".", sizeof dir);
    else if (slash == dir) slash[1] = 0;
    else *slash = 0;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        kv_fail(err, KV_ENOTFOUND, "output directory '%s' does not exist", dir);
        kv_error_context(err, path, -1, NULL);
        return KV_ENOTFOUND;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        kv_fail(err, KV_EIO, "cannot create the output file in '%s': the directory is not writable", dir);
        kv_error_context(err, path, -1, NULL);
        return KV_EIO;
    }
    return KV_OK;
}

/* HF output: the directory itself when it exists, else its parent, must be writable. */
static kv_status check_hf_dir(const char *path, kv_error *err) {
    kv_status st = kv_hf_check_output_dir(path, err);
    if (st != KV_OK) return st;
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (access(path, W_OK | X_OK) != 0) {
            kv_fail(err, KV_EIO, "output directory is not writable");
            kv_error_context(err, path, -1, NULL);
            return KV_EIO;
        }
        return KV_OK;
    }
    char trimmed[1024];
    kv_strlcpy(trimmed, path, sizeof trimmed);
    size_t l = strlen(trimmed);
    while (l > 1 && trimmed[l - 1] == '/') trimmed[--l] = 0;
    return check_out_dir(trimmed, err);
}

/* Exists and may be read (not opened: a FIFO would block; its reader refuses it). */
static kv_status check_readable(const char *what, const char *path, kv_error *err) {
    struct stat sb;
    if (path && (stat(path, &sb) != 0 || access(path, R_OK) != 0)) {
        kv_fail(err, KV_ENOTFOUND, "%s: cannot open: %s", what, strerror(errno));
        kv_error_context(err, path, -1, NULL);
        return KV_ENOTFOUND;
    }
    return KV_OK;
}

/* Options that cannot go together, and method capabilities against the output and the transforms. */
static kv_status check_combinations(const kv_quantize_opts *o, const kv_qrecipe *r, kv_error *err) {
    const kv_quant_method *m = r->meth;
    const kv_transform_set *ts = &r->ts;
    const int hf = is_hf_out(o->out_format);
    if (o->imatrix_path && o->no_imatrix)
        return kv_fail(err, KV_EINVAL, "--imatrix FILE and --no-imatrix contradict each other: choose one");
    if (o->transform_only && !m->per_tensor)
        return kv_fail(err, KV_EINVAL, "--transform-only writes unquantized weights: --method %s has nothing to do", m->name);
    if (o->transform_only && o->entropy_code)
        return kv_fail(err, KV_EINVAL, "--transform-only writes f32 weights: --entropy-code has no codes to store");
    if (m->gguf_only && o->out_format != KV_OUT_GGUF)
        return kv_fail(err, KV_EUNSUPPORTED, "%s stores its side outputs in the GGUF: use GGUF output", m->name);
    if ((o->entropy_code || m->entropy_coded) && o->out_format == KV_OUT_SAFETENSORS)
        return kv_fail(err, KV_EINVAL, "entropy-coded tensors (%s) are written to GGUF only",
                       o->entropy_code ? "--entropy-code" : m->name);
    if ((ts->smooth || ts->awq) && !o->calib_path)
        return kv_fail(err, KV_EINVAL, "%s needs calibration text (--calib FILE)", ts->smooth ? "smoothquant" : "awq");
    if (m->needs_calib && !o->calib_path)
        return kv_fail(err, KV_EINVAL, "method %s needs calibration text (--calib FILE)", m->name);
    if (m->needs_rotation && !ts->rht)
        return kv_fail(err, KV_EINVAL, "%s needs the input rotation: add --transform rht:GROUP (the format's group, "
                       "e.g. rht:32 for mxfp4_ocp)", m->name);
    if (hf && (ts->rht || ts->quarot))
        return kv_fail(err, KV_EUNSUPPORTED, "--transform %s stores weights that need an online rotation of the "
                       "activations, which no Hugging Face loader applies: write GGUF (kvant runs it) or drop the "
                       "rotation", ts->rht ? "rht" : "quarot");
    if (hf && (o->entropy_code || m->entropy_coded))
        return kv_fail(err, KV_EUNSUPPORTED, "entropy-coded tensors have no Hugging Face layout: write GGUF");
    if (o->imatrix_path && (ts->rht || ts->quarot))
        return kv_fail(err, KV_EINVAL, "--imatrix holds importance in the unrotated basis: with rht/quarot compute it "
                       "from --calib instead");
    return KV_OK;
}

kv_status kv_qrecipe_parse(const char *out_path, kv_quantize_opts *o, kv_qrecipe *r, kv_policy *pol, kv_error *err) {
    memset(r, 0, sizeof *r);
    memset(pol, 0, sizeof *pol);
    kv_status st = kv_method_parse(o->method, &r->meth, &r->mv, err);
    if (st != KV_OK) return st;
    const char *colon = o->method ? strchr(o->method, ':') : NULL;
    r->method_opts = colon ? colon + 1 : "";
    const kv_quant_method *m = r->meth;
    if (m->no_importance) o->no_imatrix = 1;
    r->format = o->format ? o->format : m->own_format ? m->own_format : "q4_k_m";
    if ((st = kv_transform_set_parse(o->transforms, &r->ts, err)) != KV_OK) return st;
    if ((st = check_combinations(o, r, err)) != KV_OK) return st;
    if ((st = kv_act_format(o->act, &r->actf, &r->act_none, err)) != KV_OK) return st;
    if ((st = check_readable("--calib", o->calib_path, err)) != KV_OK) return st;
    if ((st = check_readable("--imatrix", o->imatrix_path, err)) != KV_OK) return st;

    if ((st = kv_policy_init(pol, r->format, err)) != KV_OK) return st;
    pol->pure = o->pure;
    if (m->embd_head_f16 && !o->format) {
        kv_strlcpy(pol->embd_format, "f16", sizeof pol->embd_format);
        if (!(m->head_flag && kv_mopt_given(m, &r->mv, m->head_flag)))
            kv_strlcpy(pol->head_format, "f16", sizeof pol->head_format);
    }
    if (is_hf_out(o->out_format)) { /* HF loaders keep the embedding and the head in the checkpoint's dtype */
        st = kv_policy_add_override(pol, "^token_embd\\.weight$=bf16", err);
        if (st == KV_OK) st = kv_policy_add_override(pol, "^output\\.weight$=bf16", err);
    }
    for (int i = 0; i < o->n_overrides && st == KV_OK; i++) st = kv_policy_add_override(pol, o->overrides[i], err);
    if (st == KV_OK && out_path) st = is_hf_out(o->out_format) ? check_hf_dir(out_path, err) : check_out_dir(out_path, err);
    if (st != KV_OK) kv_policy_free(pol);
    return st;
}

/* llama-quantize refuses to requantize (its --allow-requantize): the quality of a second rounding is the
 * product of two errors, and a GGUF of quantized types or an HF checkpoint with a quantization_config looks
 * like a source only by accident. */
kv_status kv_qcheck_source(const kv_model_file *mf, const kv_quantize_opts *o, kv_error *err) {
    if (o->allow_requantize) return KV_OK;
    for (int64_t i = 0; i < kv_model_n_tensors(mf); i++) {
        const kv_tensor *t = kv_model_tensor(mf, i);
        if (!t->name[0] || t->type == KV_TYPE_F32 || t->type == KV_TYPE_F16 || t->type == KV_TYPE_BF16) continue;
        const kv_type_info *ti = kv_type_get(t->type);
        kv_fail(err, KV_EINVAL, "the source is already quantized (%s is %s%s): quantizing it again compounds two "
                "roundings; start from the f16/bf16 model, or pass --allow-requantize",
                t->name, ti ? ti->name : "a kvant type", kv_model_act_format(mf) ? ", with a quantization_config" : "");
        kv_error_context(err, kv_model_path(mf), -1, t->name);
        return KV_EINVAL;
    }
    return KV_OK;
}

kv_status kv_quantize_check(const char *model_path, const char *out_path, const kv_quantize_opts *opts,
                            kv_error *err) {
    if (!model_path || !out_path) return kv_fail(err, KV_EINVAL, "model and output paths are required");
    kv_quantize_opts o = opts ? *opts : (kv_quantize_opts){0};
    kv_qrecipe r;
    kv_policy pol;
    kv_status st = kv_qrecipe_parse(out_path, &o, &r, &pol, err);
    if (st != KV_OK) return st;
    kv_policy_free(&pol);
    kv_model_file *mf = NULL;
    if ((st = kv_model_open(model_path, &mf, err)) == KV_OK) {
        if (!kv_model_hparams(mf)->n_layer)
            st = kv_fail(err, KV_EUNSUPPORTED, "'%s' has no model hyper-parameters (a lone safetensors file?)", model_path);
        if (st == KV_OK) st = kv_qcheck_source(mf, &o, err);
    }
    kv_model_close(mf);
    return st;
}

/* ---- the recipe as JSON (the keys of `kvant quantize --recipe`) ---- */

char *kv_qrecipe_json(const kv_quantize_opts *o, const kv_qrecipe *r) {
    if (o->recipe_json) return strdup(o->recipe_json);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    static const char *const k_out[] = {"gguf", "safetensors", "gptq", "hf"};
    kv_jw w;
    kv_jw_init(&w, f, 0);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "format"), kv_jw_str(&w, r->format);
    kv_jw_key(&w, "method"), kv_jw_str(&w, o->method ? o->method : "rtn");
    if (o->transforms) kv_jw_key(&w, "transform"), kv_jw_str(&w, o->transforms);
    if (o->act) kv_jw_key(&w, "act"), kv_jw_str(&w, o->act);
    if (o->pure) kv_jw_key(&w, "pure"), kv_jw_bool(&w, 1);
    if (o->calib_path) kv_jw_key(&w, "calib"), kv_jw_str(&w, o->calib_path);
    if (o->calib_tokens) kv_jw_key(&w, "calib_tokens"), kv_jw_int(&w, o->calib_tokens);
    if (o->no_imatrix) kv_jw_key(&w, "no_imatrix"), kv_jw_bool(&w, 1);
    if (o->imatrix_path) kv_jw_key(&w, "imatrix"), kv_jw_str(&w, o->imatrix_path);
    if (o->entropy_code) kv_jw_key(&w, "entropy_code"), kv_jw_bool(&w, 1);
    if (o->transform_only) kv_jw_key(&w, "transform_only"), kv_jw_bool(&w, 1);
    if (o->n_overrides) {
        kv_jw_key(&w, "overrides");
        kv_jw_arr_begin(&w);
        for (int i = 0; i < o->n_overrides; i++) kv_jw_str(&w, o->overrides[i]);
        kv_jw_arr_end(&w);
    }
    kv_jw_key(&w, "out_format"), kv_jw_str(&w, k_out[o->out_format <= KV_OUT_HF_CT ? o->out_format : 0]);
    kv_jw_key(&w, "seed"), kv_jw_int(&w, (int64_t)o->seed);
    kv_jw_obj_end(&w);
    fclose(f);
    (void)r;
    return buf;
}
