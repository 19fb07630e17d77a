/* sensitivity.c — per-layer sensitivities, error tables and the linearity check behind HIGGS' dynamic
 * bitwidths (Malinovskii et al., "HIGGS: Pushing the Limits of Large Language Model Quantization via the
 * Linearity Theorem", arXiv 2411.17525, §4 Thm. 1 and §5). For small errors,
 *     PPL(W + E) - PPL(W) ~= sum_l alpha_l * t_l,   t_l = ||E_l||_F^2 / ||W_l||_F^2,
 * so alpha_l is measured by injecting Gaussian noise of known relative MSE into one layer at a time and
 * fitting the slope; the error table gives t_l for every candidate format; allocation.c picks formats. */
#include "core/core.h"
#include "io/json.h"
#include <math.h>
#include <stdio.h>

/* ---------------------------------------------------------------------------------------------- */
/* the linear layers of a model                                                                    */
/* ---------------------------------------------------------------------------------------------- */

typedef struct layer_ref {
    char name[160];
    int layer;
    kv_linear_id which;
} layer_ref;

/* Decoder linears in order (q k v o gate up down per block), then the head when asked and untied. */
static int list_linears(const kv_model *m, int include_head, layer_ref *out) {
    const kv_hparams *hp = kv_model_get_hparams(m);
    int n = 0;
    for (int l = 0; l < hp->n_layer; l++)
        for (int w = KV_LINEAR_Q; w <= KV_LINEAR_DOWN; w++) {
            if (out) {
                snprintf(out[n].name, sizeof out[n].name, "blk.%d.%s.weight", l, kv_linear_name((kv_linear_id)w));
                out[n].layer = l;
                out[n].which = (kv_linear_id)w;
            }
            n++;
        }
    if (include_head && !hp->tie_embeddings && kv_model_weight(m, hp->n_layer, KV_LINEAR_HEAD)) {
        if (out) {
            snprintf(out[n].name, sizeof out[n].name, "output.weight");
            out[n].layer = hp->n_layer;
            out[n].which = KV_LINEAR_HEAD;
        }
        n++;
    }
    return n;
}

/* The rotation block of one weight: the requested block when it divides the inputs, else the largest supported
 * block that does (the rule of `kvant quantize --transform rht`). */
static int32_t layer_rht_block(int64_t cols, int32_t block) {
    if (block <= 0) return 0;
    return cols % block == 0 ? block : (int32_t)kv_rht_best_block(cols, block);
}

/* The weight as fp32 rows (malloc'd). */
static float *weight_to_f32(const kv_weight *w, kv_error *err) {
    float *out = kv_malloc((size_t)(w->rows * w->cols) * sizeof(float), err);
    if (!out) return NULL;
    size_t rb = kv_format_row_bytes(&w->fmt, w->cols);
    for (int64_t r = 0; r < w->rows; r++)
        w->fmt.dequantize(&w->fmt, (const uint8_t *)w->data + (size_t)r * rb, out + r * w->cols, w->cols);
    return out;
}

static uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
    uint64_t x = seed ^ (a * 0x9e3779b97f4a7c15ULL) ^ (b * 0xc2b2ae3d27d4eb4fULL);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    return x ^ (x >> 29);
}

/* Several copies of the runnable model, one per thread, so threads can perturb different layers at once. */
typedef struct model_set {
    int n;
    kv_model **m;
} model_set;

static void model_set_free(model_set *s) {
    for (int i = 0; i < s->n; i++) kv_model_free(s->m[i]);
    free(s->m);
    s->m = NULL;
    s->n = 0;
}

static kv_status model_set_open(const kv_model_file *mf, int n, model_set *s, kv_error *err) {
    s->n = 0;
    s->m = kv_calloc((size_t)n, sizeof(kv_model *), err);
    if (!s->m) return KV_ENOMEM;
    for (int i = 0; i < n; i++) {
        kv_status st = kv_model_load(mf, NULL, &s->m[i], err);
        if (st) { model_set_free(s); return st; }
        s->n = i + 1;
    }
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* sensitivity: noise injection and fit                                                            */
/* ---------------------------------------------------------------------------------------------- */

static const double k_default_levels[] = {0.01, 0.02, 0.04, 0.08};

typedef struct sens_task {
    model_set models;
    const kv_logprobs *base;
    double base_ppl;
    const kv_sens_opts *opts;
    const double *levels;
    int n_levels;
    kv_sens_layer *layers;
    const int *todo;          /* indices into layers for this batch */
    kv_status *status;        /* per task */
    kv_error *errors;         /* per task */
} sens_task;

static void fit_slope(kv_sens_layer *L, kv_sens_metric metric) {
    double stt = 0, sty = 0, sy = 0;
    const double *y = metric == KV_SENS_KLD ? L->kld : L->d_ppl;
    for (int i = 0; i < L->n_levels; i++) {
        stt += L->t[i] * L->t[i];
        sty += L->t[i] * y[i];
        sy += y[i];
    }
    L->alpha = stt > 0 ? sty / stt : 0;
    double mean = sy / (L->n_levels ? L->n_levels : 1), ss_res = 0, ss_tot = 0;
    for (int i = 0; i < L->n_levels; i++) {
        double r = y[i] - L->alpha * L->t[i];
        ss_res += r * r;
        ss_tot += (y[i] - mean) * (y[i] - mean);
    }
    L->r2 = ss_tot > 0 ? 1.0 - ss_res / ss_tot : (ss_res == 0 ? 1.0 : 0.0);
}

/* One layer: for each level, W + noise scaled to relative MSE t exactly, evaluated against the base. */
static kv_status sens_one_layer(kv_model *m, const sens_task *S, kv_sens_layer *L, kv_error *err) {
    const kv_weight *w0 = kv_model_weight(m, L->layer, L->which);
    if (!w0) return kv_fail(err, KV_ENOTFOUND, "no linear %s", L->name);
    kv_format orig_fmt = w0->fmt;
    const void *orig_data = w0->data;
    int64_t n = w0->rows * w0->cols;
    /* bytes the model owns (a q/k matrix un-permuted from a GGUF or llama2.c file, an fp32 copy) are freed when the
     * noisy weight replaces them: keep a copy to put back */
    void *orig_copy = NULL;
    if (w0->owned) {
        size_t nb = kv_format_row_bytes(&orig_fmt, w0->cols) * (size_t)w0->rows;
        if (!(orig_copy = kv_malloc(nb, err))) return KV_ENOMEM;
        memcpy(orig_copy, w0->data, nb);
        orig_data = orig_copy;
    }
    L->params = n;
    float *w = weight_to_f32(w0, err);
    if (!w) { free(orig_copy); return KV_ENOMEM; }
    double wnorm = 0;
    for (int64_t i = 0; i < n; i++) wnorm += (double)w[i] * w[i];
    kv_format f32;
    kv_status st = kv_format_get("f32", &f32, err);
    L->n_levels = S->n_levels;
    for (int k = 0; k < S->n_levels && !st; k++) {
        float *noisy = kv_malloc((size_t)n * sizeof(float), err);
        if (!noisy) { st = KV_ENOMEM; break; }
        kv_rng rng;
        kv_rng_seed(&rng, mix_seed(S->opts->seed, (uint64_t)(L->layer * 16 + (int)L->which), (uint64_t)k));
        double enorm = 0;
        for (int64_t i = 0; i < n; i++) {
            double z = kv_rng_normal(&rng);
            noisy[i] = (float)z;
            enorm += z * z;
        }
        double scale = enorm > 0 ? sqrt(S->levels[k] * wnorm / enorm) : 0;
        double actual = 0;
        for (int64_t i = 0; i < n; i++) {
            float v = w[i] + (float)(scale * noisy[i]);
            double d = (double)v - w[i];
            actual += d * d;
            noisy[i] = v;
        }
        L->t[k] = wnorm > 0 ? actual / wnorm : 0;
        st = kv_model_set_weight(m, L->name, &f32, noisy, 1, err);
        if (st) { free(noisy); break; }
        kv_eval_result r;
        st = kv_eval_kld(m, S->base, NULL, &r, err);
        if (!st) {
            L->d_ppl[k] = r.ppl - S->base_ppl;
            L->kld[k] = r.kld.mean;
        }
    }
    kv_status st2 = kv_model_set_weight(m, L->name, &orig_fmt, orig_data, orig_copy != NULL, st ? NULL : err);
    if (st2) free(orig_copy);
    free(w);
    if (st) return st;
    if (st2) return st2;
    fit_slope(L, S->opts->metric);
    L->done = 1;
    return KV_OK;
}

static void sens_task_run(void *ctx, int64_t task, int thread) {
    sens_task *S = ctx;
    kv_sens_layer *L = &S->layers[S->todo[task]];
    kv_error_clear(&S->errors[task]);
    S->status[task] = sens_one_layer(S->models.m[thread], S, L, &S->errors[task]);
}

static kv_status sens_init_layers(const kv_model *m, const kv_sens_opts *o, kv_sens_result *res, kv_error *err) {
    int n = list_linears(m, o->include_head, NULL);
    layer_ref *refs = kv_calloc((size_t)n, sizeof *refs, err);
    if (!refs) return KV_ENOMEM;
    list_linears(m, o->include_head, refs);
    if (res->layers) {
        /* resuming: the file must describe this model's layers */
        if (res->n_layers != n) {
            free(refs);
            return kv_fail(err, KV_EINVAL, "sensitivity file has %d layers, the model has %d linear layers",
                           res->n_layers, n);
        }
        for (int i = 0; i < n; i++)
            if (strcmp(res->layers[i].name, refs[i].name)) {
                kv_status st = kv_fail(err, KV_EINVAL, "sensitivity file layer %d is '%s', the model's is '%s'", i,
                                       res->layers[i].name, refs[i].name);
                free(refs);
                return st;
            }
    } else {
        res->layers = kv_calloc((size_t)n, sizeof *res->layers, err);
        if (!res->layers) { free(refs); return KV_ENOMEM; }
        res->n_layers = n;
        for (int i = 0; i < n; i++) {
            kv_strlcpy(res->layers[i].name, refs[i].name, sizeof res->layers[i].name);
            res->layers[i].layer = refs[i].layer;
            res->layers[i].which = refs[i].which;
        }
    }
    for (int i = 0; i < n; i++) {
        res->layers[i].layer = refs[i].layer;
        res->layers[i].which = refs[i].which;
    }
    free(refs);
    return KV_OK;
}

kv_status kv_sensitivity_run(const kv_model_file *mf, const int32_t *ids, int64_t n_ids, const kv_sens_opts *opts,
                             kv_pool *pool, kv_sens_result *res, kv_error *err) {
    kv_sens_opts o = *opts;
    const double *levels = o.levels ? o.levels : k_default_levels;
    int n_levels = o.levels ? o.n_levels : (int)KV_ARRAY_LEN(k_default_levels);
    if (n_levels < 1 || n_levels > KV_SENS_MAX_LEVELS)
        return kv_fail(err, KV_EINVAL, "need 1 to %d noise levels, got %d", KV_SENS_MAX_LEVELS, n_levels);
    for (int i = 0; i < n_levels; i++)
        if (!(levels[i] > 0 && levels[i] < 10))
            return kv_fail(err, KV_EINVAL, "noise level %g is not a relative MSE in (0, 10)", levels[i]);

    int nthreads = kv_pool_threads(pool);
    sens_task S = {.opts = &o, .levels = levels, .n_levels = n_levels};
    kv_status st = model_set_open(mf, nthreads, &S.models, err);
    if (st) return st;
    st = sens_init_layers(S.models.m[0], &o, res, err);
    if (st) { model_set_free(&S.models); return st; }
    res->metric = o.metric;

    kv_eval_opts eo = {.ctx = o.ctx ? o.ctx : 512, .chunks = o.chunks, .style = KV_PPL_HF, .bos_id = -1};
    kv_logprobs *base = NULL;
    kv_eval_result br;
    st = kv_eval_base_logprobs(S.models.m[0], ids, n_ids, &eo, pool, &base, &br, err);
    if (st) { model_set_free(&S.models); return st; }
    res->base_ppl = br.ppl;
    res->tokens = br.tokens;
    S.base = base;
    S.base_ppl = br.ppl;
    S.layers = res->layers;

    int *todo = kv_calloc((size_t)res->n_layers, sizeof(int), err);
    S.status = kv_calloc((size_t)nthreads, sizeof(kv_status), err);
    S.errors = kv_calloc((size_t)nthreads, sizeof(kv_error), err);
    if (!todo || !S.status || !S.errors) st = KV_ENOMEM;
    int n_todo = 0, done = 0;
    for (int i = 0; i < res->n_layers && !st; i++) {
        if (res->layers[i].done && res->layers[i].n_levels == n_levels) { done++; continue; }
        res->layers[i].done = 0;
        todo[n_todo++] = i;
    }
    for (int b = 0; b < n_todo && !st; b += nthreads) {
        int nb = KV_MIN(nthreads, n_todo - b);
        S.todo = todo + b;
        kv_pool_run(pool, nb, sens_task_run, &S);
        for (int i = 0; i < nb && !st; i++)
            if (S.status[i]) {
                st = S.status[i];
                if (err) *err = S.errors[i];
                kv_error_context(err, NULL, -1, res->layers[todo[b + i]].name);
            }
        done += nb;
        if (o.progress) kv_progress_update(o.progress, done);
        if (!st && o.checkpoint) st = o.checkpoint(o.user, res, err);
    }
    free(todo);
    free(S.status);
    free(S.errors);
    kv_logprobs_free(base);
    model_set_free(&S.models);
    return st;
}

int kv_sens_sanitize(kv_sens_result *res, void (*warn)(void *user, const char *msg), void *user) {
    double max_alpha = 0;
    for (int i = 0; i < res->n_layers; i++)
        if (isfinite(res->layers[i].alpha) && res->layers[i].alpha > max_alpha) max_alpha = res->layers[i].alpha;
    double floor_alpha = max_alpha > 0 ? 1e-6 * max_alpha : 1e-12;
    int clamped = 0;
    for (int i = 0; i < res->n_layers; i++) {
        kv_sens_layer *L = &res->layers[i];
        if (isfinite(L->alpha) && L->alpha > 0) continue;
        if (warn) {
            char msg[320];
            snprintf(msg, sizeof msg, "layer %s: fitted alpha %g is not positive; clamped to %g", L->name, L->alpha,
                     floor_alpha);
            warn(user, msg);
        }
        L->alpha = floor_alpha;
        clamped++;
    }
    return clamped;
}

void kv_sens_free(kv_sens_result *res) {
    if (!res) return;
    free(res->layers);
    memset(res, 0, sizeof *res);
}

/* ---------------------------------------------------------------------------------------------- */
/* sensitivity files (JSON; resumable)                                                             */
/* ---------------------------------------------------------------------------------------------- */

static void jw_doubles(kv_jw *w, const char *key, const double *v, int n) {
    kv_jw_key(w, key);
    kv_jw_arr_begin(w);
    for (int i = 0; i < n; i++) kv_jw_num(w, v[i]);
    kv_jw_arr_end(w);
}

kv_status kv_sens_save(const kv_sens_result *res, const char *path, kv_error *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (!mem) return kv_fail(err, KV_ENOMEM, "cannot buffer the sensitivity file");
    kv_jw w;
    kv_jw_init(&w, mem, 1);
    kv_jw_obj_begin(&w);
    kv_jw_key(&w, "kvant_sensitivity"); kv_jw_int(&w, 1);
    kv_jw_key(&w, "metric"); kv_jw_str(&w, res->metric == KV_SENS_KLD ? "kld" : "ppl");
    kv_jw_key(&w, "base_ppl"); kv_jw_num(&w, res->base_ppl);
    kv_jw_key(&w, "tokens"); kv_jw_int(&w, res->tokens);
    kv_jw_key(&w, "layers");
    kv_jw_arr_begin(&w);
    for (int i = 0; i < res->n_layers; i++) {
        const kv_sens_layer *L = &res->layers[i];
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "name"); kv_jw_str(&w, L->name);
        kv_jw_key(&w, "params"); kv_jw_int(&w, L->params);
        kv_jw_key(&w, "done"); kv_jw_bool(&w, L->done);
        kv_jw_key(&w, "alpha"); kv_jw_num(&w, L->alpha);
        kv_jw_key(&w, "r2"); kv_jw_num(&w, L->r2);
        jw_doubles(&w, "t", L->t, L->n_levels);
        jw_doubles(&w, "d_ppl", L->d_ppl, L->n_levels);
        jw_doubles(&w, "kld", L->kld, L->n_levels);
        kv_jw_obj_end(&w);
    }
    kv_jw_arr_end(&w);
    kv_jw_obj_end(&w);
    kv_jw_end(&w);
    fclose(mem);
    kv_outfile *f;
    kv_status st = kv_outfile_open(path, &f, err);
    if (!st) {
        st = kv_outfile_write(f, buf, len, err);
        if (st) kv_outfile_abort(f);
        else st = kv_outfile_commit(f, err);
    }
    free(buf);
    return st;
}

static int read_doubles(const kv_json *obj, const char *key, double *out, int max) {
    const kv_json *a = kv_json_get(obj, key);
    if (!a || a->type != KV_JSON_ARRAY || a->len > (uint64_t)max) return -1;
    for (uint64_t i = 0; i < a->len; i++) {
        const kv_json *v = kv_json_at(a, i);
        out[i] = v->type == KV_JSON_NUMBER ? v->num : NAN;
    }
    return (int)a->len;
}

kv_status kv_sens_load(const char *path, kv_sens_result *res, kv_error *err) {
    memset(res, 0, sizeof *res);
    kv_json_doc *doc;
    kv_status st = kv_json_parse_file(path, 0, &doc, err);
    if (st) return st;
    const kv_json *root = kv_json_root(doc);
    const kv_json *layers = kv_json_get(root, "layers");
    const char *metric = NULL;
    int64_t version = 0;
    if (kv_json_get_int(root, "kvant_sensitivity", &version) != 1 || !layers || layers->type != KV_JSON_ARRAY ||
        kv_json_get_str(root, "metric", &metric) != 1) {
        kv_json_free(doc);
        st = kv_fail(err, KV_EFORMAT, "not a kvant sensitivity file (needs keys kvant_sensitivity, metric, layers)");
        kv_error_context(err, path, -1, NULL);
        return st;
    }
    res->metric = !strcmp(metric, "kld") ? KV_SENS_KLD : KV_SENS_PPL;
    kv_json_get_num(root, "base_ppl", &res->base_ppl);
    kv_json_get_int(root, "tokens", &res->tokens);
    res->n_layers = (int)layers->len;
    res->layers = kv_calloc(layers->len ? layers->len : 1, sizeof *res->layers, err);
    if (!res->layers) { kv_json_free(doc); return KV_ENOMEM; }
    for (uint64_t i = 0; i < layers->len && !st; i++) {
        const kv_json *e = kv_json_at(layers, i);
        kv_sens_layer *L = &res->layers[i];
        const char *name = NULL;
        if (kv_json_get_str(e, "name", &name) != 1 || kv_json_get_num(e, "alpha", &L->alpha) == -1) {
            st = kv_fail(err, KV_EFORMAT, "layer %llu has no name or a bad alpha", (unsigned long long)i);
            kv_error_context(err, path, (int64_t)e->offset, NULL);
            break;
        }
        kv_strlcpy(L->name, name, sizeof L->name);
        kv_json_get_num(e, "r2", &L->r2);
        kv_json_get_int(e, "params", &L->params);
        kv_json_get_bool(e, "done", &L->done);
        int nt = read_doubles(e, "t", L->t, KV_SENS_MAX_LEVELS);
        int np = read_doubles(e, "d_ppl", L->d_ppl, KV_SENS_MAX_LEVELS);
        int nk = read_doubles(e, "kld", L->kld, KV_SENS_MAX_LEVELS);
        if (nt < 0 || np != nt || nk != nt) {
            st = kv_fail(err, KV_EFORMAT, "layer %s: arrays t, d_ppl, kld must have equal length <= %d", L->name,
                         KV_SENS_MAX_LEVELS);
            kv_error_context(err, path, (int64_t)e->offset, NULL);
            break;
        }
        L->n_levels = nt;
    }
    kv_json_free(doc);
    if (st) kv_sens_free(res);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* error tables                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

typedef struct table_ctx {
    const kv_model *m;
    kv_err_table *t;
    float **w;                /* per layer fp32 (rotated) weights */
    kv_status *status;
    kv_error *errors;
} table_ctx;

static void table_prepare_layer(void *ctx, int64_t l, int thread) {
    table_ctx *C = ctx;
    kv_err_table *t = C->t;
    const kv_weight *w = kv_model_weight(C->m, t->layer[l], t->which[l]);
    kv_error_clear(&C->errors[l]);
    C->w[l] = weight_to_f32(w, &C->errors[l]);
    if (!C->w[l]) { C->status[l] = KV_ENOMEM; return; }
    int32_t block = layer_rht_block(w->cols, t->rht_block);
    if (block > 0) {
        float *signs = kv_malloc((size_t)w->cols * sizeof(float), &C->errors[l]);
        if (!signs) { C->status[l] = KV_ENOMEM; return; }
        kv_rht_signs(kv_rht_tensor_seed(t->seed, t->names[l]), w->cols, signs);
        for (int64_t r = 0; r < w->rows; r++) kv_rht_apply(C->w[l] + r * w->cols, w->cols, block, signs);
        free(signs);
    }
}

static void table_quantize_cell(void *ctx, int64_t task, int thread) {
    table_ctx *C = ctx;
    kv_err_table *t = C->t;
    int l = (int)(task / t->n_formats), f = (int)(task % t->n_formats);
    size_t cell = (size_t)task;
    const kv_weight *w = kv_model_weight(C->m, t->layer[l], t->which[l]);
    const kv_format *fmt = &t->formats[f];
    size_t rb = kv_format_row_bytes(fmt, w->cols);
    t->t[cell] = t->size_bits[cell] = -1;
    if (rb == 0) return; /* the block does not divide the row: not a candidate for this layer */
    kv_error e;
    kv_error_clear(&e);
    uint8_t *q = kv_malloc(rb * (size_t)w->rows, &e);
    float *row = kv_malloc((size_t)w->cols * sizeof(float), &e);
    if (!q || !row || fmt->quantize(fmt, C->w[l], q, w->rows, w->cols, NULL, &e)) {
        free(q);
        free(row);
        return; /* e.g. a format refusing this data: leave the cell out */
    }
    double num = 0, den = 0;
    for (int64_t r = 0; r < w->rows; r++) {
        fmt->dequantize(fmt, q + (size_t)r * rb, row, w->cols);
        const float *x = C->w[l] + r * w->cols;
        for (int64_t c = 0; c < w->cols; c++) {
            double d = (double)row[c] - x[c];
            num += d * d;
            den += (double)x[c] * x[c];
        }
    }
    free(row);
    t->t[cell] = den > 0 ? num / den : 0;
    t->size_bits[cell] = 8.0 * (double)rb * (double)w->rows;
    if (t->data) t->data[cell] = q;
    else free(q);
}

kv_status kv_err_table_build(const kv_model *m, const char *const *formats, int n_formats, int include_head,
                             int32_t rht_block, uint64_t seed, int keep_data, kv_pool *pool, kv_err_table *out,
                             kv_error *err) {
    memset(out, 0, sizeof *out);
    if (n_formats < 1) return kv_fail(err, KV_EINVAL, "no candidate formats");
    if (rht_block > 0 && !kv_rht_block_supported(rht_block))
        return kv_fail(err, KV_EINVAL, "rht block %d is not supported (K*2^m with K in 1, 12, 20, 28)", rht_block);
    int L = list_linears(m, include_head, NULL);
    layer_ref *refs = kv_calloc((size_t)L, sizeof *refs, err);
    out->formats = kv_calloc((size_t)n_formats, sizeof(kv_format), err);
    if (!refs || !out->formats) { free(refs); kv_err_table_free(out); return KV_ENOMEM; }
    list_linears(m, include_head, refs);
    out->n_layers = L;
    out->n_formats = n_formats;
    out->rht_block = rht_block;
    out->seed = seed;
    for (int f = 0; f < n_formats; f++) {
        kv_status st = kv_format_get(formats[f], &out->formats[f], err);
        if (st) { free(refs); kv_err_table_free(out); return st; }
    }
    size_t cells = (size_t)L * (size_t)n_formats;
    out->names = kv_calloc((size_t)L, sizeof *out->names, err);
    out->layer = kv_calloc((size_t)L, sizeof(int), err);
    out->which = kv_calloc((size_t)L, sizeof(kv_linear_id), err);
    out->params = kv_calloc((size_t)L, sizeof(int64_t), err);
    out->t = kv_calloc(cells, sizeof(double), err);
    out->size_bits = kv_calloc(cells, sizeof(double), err);
    if (keep_data) out->data = kv_calloc(cells, sizeof(void *), err);
    table_ctx C = {.m = m, .t = out};
    C.w = kv_calloc((size_t)L, sizeof(float *), err);
    C.status = kv_calloc((size_t)L, sizeof(kv_status), err);
    C.errors = kv_calloc((size_t)L, sizeof(kv_error), err);
    kv_status st = KV_OK;
    if (!out->names || !out->layer || !out->which || !out->params || !out->t || !out->size_bits ||
        (keep_data && !out->data) || !C.w || !C.status || !C.errors)
        st = KV_ENOMEM;
    for (int l = 0; l < L && !st; l++) {
        kv_strlcpy(out->names[l], refs[l].name, sizeof out->names[l]);
        out->layer[l] = refs[l].layer;
        out->which[l] = refs[l].which;
        const kv_weight *w = kv_model_weight(m, refs[l].layer, refs[l].which);
        out->params[l] = w->rows * w->cols;
    }
    if (!st) kv_pool_run(pool, L, table_prepare_layer, &C);
    for (int l = 0; l < L && !st; l++)
        if (C.status && C.status[l]) { st = C.status[l]; if (err) *err = C.errors[l]; }
    if (!st) kv_pool_run(pool, (int64_t)cells, table_quantize_cell, &C);
    for (int l = 0; l < L && C.w; l++) free(C.w[l]);
    free(C.w);
    free(C.status);
    free(C.errors);
    free(refs);
    if (st) kv_err_table_free(out);
    return st;
}

void kv_err_table_free(kv_err_table *t) {
    if (!t) return;
    if (t->data)
        for (size_t i = 0; i < (size_t)t->n_layers * (size_t)t->n_formats; i++) free(t->data[i]);
    free(t->data);
    free(t->names);
    free(t->layer);
    free(t->which);
    free(t->params);
    free(t->formats);
    free(t->t);
    free(t->size_bits);
    memset(t, 0, sizeof *t);
}

kv_status kv_err_table_apply(const kv_err_table *t, const int *choice, kv_model *m, kv_error *err) {
    if (!t->data) return kv_fail(err, KV_EINVAL, "the error table was built without keep_data");
    for (int l = 0; l < t->n_layers; l++) {
        size_t cell = (size_t)l * t->n_formats + (size_t)choice[l];
        if (!t->data[cell]) return kv_fail(err, KV_EINVAL, "format %s cannot hold %s", t->formats[choice[l]].name,
                                           t->names[l]);
        kv_status st = kv_model_set_weight(m, t->names[l], &t->formats[choice[l]], t->data[cell], 0, err);
        if (st) return st;
        const kv_weight *w = kv_model_weight(m, t->layer[l], t->which[l]);
        int32_t block = layer_rht_block(w->cols, t->rht_block);
        st = kv_model_set_rht(m, t->names[l], block, block > 0 ? kv_rht_tensor_seed(t->seed, t->names[l]) : 0, err);
        if (st) return st;
    }
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* allocation plan                                                                                 */
/* ---------------------------------------------------------------------------------------------- */

static kv_status alphas_for_table(const kv_err_table *t, const kv_sens_result *a, double *alpha, kv_error *err) {
    if (a->n_layers != t->n_layers)
        return kv_fail(err, KV_EINVAL,
                       "the alphas describe %d layers but the model has %d (alphas from a different model?)",
                       a->n_layers, t->n_layers);
    for (int l = 0; l < t->n_layers; l++) {
        int found = -1;
        for (int i = 0; i < a->n_layers; i++)
            if (!strcmp(a->layers[i].name, t->names[l])) { found = i; break; }
        if (found < 0)
            return kv_fail(err, KV_EINVAL, "the alphas have no layer %s (alphas from a different model?)",
                           t->names[l]);
        alpha[l] = a->layers[found].alpha;
        if (!(isfinite(alpha[l]) && alpha[l] > 0))
            return kv_fail(err, KV_EINVAL, "alpha of %s is %g: sanitize the alphas first", t->names[l], alpha[l]);
    }
    return KV_OK;
}

static kv_status plan_uniform(const kv_alloc_problem *p, int *choice, kv_alloc_result *res, kv_error *err) {
    int best = -1;
    double best_cost = INFINITY, best_bits = 0;
    for (int c = 0; c < p->n_cand; c++) {
        double bits = 0, cost = 0;
        int ok = 1;
        for (int l = 0; l < p->n_layers && ok; l++) {
            double s = p->size_bits[(size_t)l * p->n_cand + c];
            if (s < 0) ok = 0;
            bits += s;
            cost += p->cost[(size_t)l * p->n_cand + c];
        }
        if (ok && bits <= p->budget_bits && cost < best_cost) { best = c; best_cost = cost; best_bits = bits; }
    }
    if (best < 0) return kv_fail(err, KV_ERANGE, "no single candidate format fits every layer within the budget");
    for (int l = 0; l < p->n_layers; l++) choice[l] = best;
    res->total_cost = best_cost;
    res->total_bits = best_bits;
    return KV_OK;
}

kv_status kv_alloc_plan(const kv_err_table *t, const kv_sens_result *alphas, double bits, kv_alloc_mode mode,
                        int *choice, kv_alloc_result *res, kv_error *err) {
    kv_alloc_result tmp;
    if (!res) res = &tmp;
    memset(res, 0, sizeof *res);
    size_t cells = (size_t)t->n_layers * (size_t)t->n_formats;
    double *alpha = kv_calloc((size_t)t->n_layers, sizeof(double), err);
    double *cost = kv_calloc(cells, sizeof(double), err);
    double *params = kv_calloc((size_t)t->n_layers, sizeof(double), err);
    kv_status st = (!alpha || !cost || !params) ? KV_ENOMEM : KV_OK;
    if (!st && mode == KV_ALLOC_UNIFORM) /* equal weights: the least-error single format that fits */
        for (int l = 0; l < t->n_layers; l++) alpha[l] = 1.0;
    else if (!st && !alphas)
        st = kv_fail(err, KV_EINVAL, "this allocation needs alphas (kvant sensitivity)");
    else if (!st)
        st = alphas_for_table(t, alphas, alpha, err);
    double total_params = 0;
    for (int l = 0; l < t->n_layers && !st; l++) {
        params[l] = (double)t->params[l];
        total_params += params[l];
        for (int f = 0; f < t->n_formats; f++) {
            size_t c = (size_t)l * t->n_formats + (size_t)f;
            cost[c] = t->t[c] >= 0 ? alpha[l] * t->t[c] : INFINITY;
        }
    }
    if (!st) {
        kv_alloc_problem p = {t->n_layers, t->n_formats, t->size_bits, cost, bits * total_params, 0};
        if (mode == KV_ALLOC_LINEARITY) st = kv_alloc_dp(&p, choice, res, err);
        else if (mode == KV_ALLOC_WATERFILL) st = kv_alloc_waterfill(&p, params, choice, res, err);
        else st = plan_uniform(&p, choice, res, err);
        if (st == KV_ERANGE && err) {
            char detail[sizeof err->message];
            kv_strlcpy(detail, err->message, sizeof detail);
            kv_fail(err, KV_ERANGE, "%.4g bits/weight is not feasible with these formats (%s; %.4g .. %.4g bits/weight)",
                    bits, detail, res->min_bits / total_params, res->max_bits / total_params);
        }
    }
    free(alpha);
    free(cost);
    free(params);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* linearity check                                                                                 */
/* ---------------------------------------------------------------------------------------------- */

typedef struct check_ctx {
    model_set models;
    const kv_err_table *t;
    const kv_logprobs *base;
    int **choices;
    double *measured;
    kv_status *status;
    kv_error *errors;
    int kld;
} check_ctx;

static void check_task(void *ctx, int64_t task, int thread) {
    check_ctx *C = ctx;
    kv_model *m = C->models.m[thread];
    kv_error_clear(&C->errors[task]);
    kv_status st = kv_err_table_apply(C->t, C->choices[task], m, &C->errors[task]);
    kv_eval_result r;
    if (!st) st = kv_eval_kld(m, C->base, NULL, &r, &C->errors[task]);
    C->status[task] = st;
    if (!st) C->measured[task] = C->kld ? r.kld.mean : r.ppl;
}

kv_status kv_linearity_check(const kv_model_file *mf, const kv_err_table *t, const kv_sens_result *alphas,
                             const int32_t *ids, int64_t n_ids, int32_t ctx, int64_t chunks, int n_configs,
                             uint64_t seed, kv_pool *pool, kv_lincheck *out, kv_error *err) {
    memset(out, 0, sizeof *out);
    if (n_configs < 2) return kv_fail(err, KV_EINVAL, "the linearity check needs at least 2 configurations");
    int L = t->n_layers;
    double *alpha = kv_calloc((size_t)L, sizeof(double), err);
    if (!alpha) return KV_ENOMEM;
    kv_status st = alphas_for_table(t, alphas, alpha, err);
    if (st) { free(alpha); return st; }
    int nthreads = kv_pool_threads(pool);
    check_ctx C = {.t = t, .kld = alphas->metric == KV_SENS_KLD};
    st = model_set_open(mf, nthreads, &C.models, err);
    if (st) { free(alpha); return st; }
    kv_logprobs *base = NULL;
    kv_eval_result br;
    kv_eval_opts eo = {.ctx = ctx ? ctx : 512, .chunks = chunks, .style = KV_PPL_HF, .bos_id = -1};
    st = kv_eval_base_logprobs(C.models.m[0], ids, n_ids, &eo, pool, &base, &br, err);
    C.base = base;
    out->n = n_configs;
    out->predicted = kv_calloc((size_t)n_configs, sizeof(double), err);
    out->measured = kv_calloc((size_t)n_configs, sizeof(double), err);
    out->bits = kv_calloc((size_t)n_configs, sizeof(double), err);
    C.choices = kv_calloc((size_t)n_configs, sizeof(int *), err);
    C.status = kv_calloc((size_t)n_configs, sizeof(kv_status), err);
    C.errors = kv_calloc((size_t)n_configs, sizeof(kv_error), err);
    C.measured = out->measured;
    if (!st && (!out->predicted || !out->measured || !out->bits || !C.choices || !C.status || !C.errors))
        st = KV_ENOMEM;
    out->base = C.kld ? 0.0 : br.ppl;
    kv_rng rng;
    kv_rng_seed(&rng, seed);
    double total_params = 0;
    for (int l = 0; l < L; l++) total_params += (double)t->params[l];
    for (int c = 0; c < n_configs && !st; c++) {
        C.choices[c] = kv_calloc((size_t)L, sizeof(int), err);
        if (!C.choices[c]) { st = KV_ENOMEM; break; }
        double pred = out->base, bits = 0;
        for (int l = 0; l < L && !st; l++) {
            int allowed[64], n_allowed = 0;
            for (int f = 0; f < t->n_formats && n_allowed < 64; f++)
                if (t->t[(size_t)l * t->n_formats + (size_t)f] >= 0) allowed[n_allowed++] = f;
            if (n_allowed == 0) {
                st = kv_fail(err, KV_EINVAL, "no candidate format can hold %s", t->names[l]);
                break;
            }
            int f = allowed[kv_rng_u64(&rng) % (uint64_t)n_allowed];
            C.choices[c][l] = f;
            size_t cell = (size_t)l * t->n_formats + (size_t)f;
            pred += alpha[l] * t->t[cell];
            bits += t->size_bits[cell];
        }
        out->predicted[c] = pred;
        out->bits[c] = bits / total_params;
    }
    for (int b = 0; b < n_configs && !st; b += nthreads) {
        int nb = KV_MIN(nthreads, n_configs - b);
        /* one batch: configurations b .. b+nb-1, each on the thread's own model */
        check_ctx B = C;
        B.choices = C.choices + b;
        B.measured = C.measured + b;
        B.status = C.status + b;
        B.errors = C.errors + b;
        kv_pool_run(pool, nb, check_task, &B);
        for (int i = 0; i < nb && !st; i++)
            if (B.status[i]) { st = B.status[i]; if (err) *err = B.errors[i]; }
    }
    if (!st) {
        double mp = 0, mm = 0;
        for (int c = 0; c < n_configs; c++) { mp += out->predicted[c]; mm += out->measured[c]; }
        mp /= n_configs;
        mm /= n_configs;
        double spp = 0, smm = 0, spm = 0, rel = 0, rel_total = 0;
        for (int c = 0; c < n_configs; c++) {
            double dp = out->predicted[c] - mp, dm = out->measured[c] - mm;
            spp += dp * dp;
            smm += dm * dm;
            spm += dp * dm;
            double change = out->measured[c] - out->base;
            rel += fabs(out->predicted[c] - out->measured[c]) / (fabs(change) > 1e-12 ? fabs(change) : 1e-12);
            rel_total += fabs(out->predicted[c] - out->measured[c]) / fabs(out->measured[c] > 0 ? out->measured[c] : 1);
        }
        out->correlation = spp > 0 && smm > 0 ? spm / sqrt(spp * smm) : 0;
        out->mean_rel_err = rel / n_configs;
        out->mean_rel_err_total = rel_total / n_configs;
    }
    for (int c = 0; c < n_configs && C.choices; c++) free(C.choices[c]);
    free(C.choices);
    free(C.status);
    free(C.errors);
    free(alpha);
    kv_logprobs_free(base);
    model_set_free(&C.models);
    if (st) kv_lincheck_free(out);
    return st;
}

void kv_lincheck_free(kv_lincheck *c) {
    if (!c) return;
    free(c->predicted);
    free(c->measured);
    free(c->bits);
    memset(c, 0, sizeof *c);
}

/* ---------------------------------------------------------------------------------------------- */
/* allocation as quantize overrides                                                                */
/* ---------------------------------------------------------------------------------------------- */

kv_status kv_alloc_mode_parse(const char *s, kv_alloc_mode *out, kv_error *err) {
    if (!strcmp(s, "linearity") || !strcmp(s, "dp")) *out = KV_ALLOC_LINEARITY;
    else if (!strcmp(s, "waterfill")) *out = KV_ALLOC_WATERFILL;
    else if (!strcmp(s, "uniform")) *out = KV_ALLOC_UNIFORM;
    else return kv_fail(err, KV_EINVAL, "unknown allocation '%s' (valid: linearity, waterfill, uniform)", s);
    return KV_OK;
}

/* "^blk\.0\.attn_q\.weight$=FORMAT": the tensor name as an anchored POSIX regex. */
static char *override_spec(const char *name, const char *format) {
    size_t n = strlen(name), f = strlen(format);
    char *s = malloc(2 * n + f + 4);
    if (!s) return NULL;
    size_t k = 0;
    s[k++] = '^';
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '.') s[k++] = '\\';
        s[k++] = name[i];
    }
    s[k++] = '$';
    s[k++] = '=';
    memcpy(s + k, format, f + 1);
    return s;
}

kv_status kv_alloc_overrides(const char *model_path, const char *alphas_path, const char *const *formats,
                             int n_formats, double bits, kv_alloc_mode mode, int32_t rht_block, uint64_t seed,
                             kv_pool *pool, char ***specs, int *n_specs, kv_alloc_report *rep, kv_error *err) {
    *specs = NULL;
    *n_specs = 0;
    memset(rep, 0, sizeof *rep);
    kv_sens_result alphas = {0};
    kv_status st = KV_OK;
    if (mode != KV_ALLOC_UNIFORM) {
        if (!alphas_path) return kv_fail(err, KV_EINVAL, "--allocate needs --alphas FILE (from kvant sensitivity)");
        st = kv_sens_load(alphas_path, &alphas, err);
        if (st) return st;
        kv_sens_sanitize(&alphas, NULL, NULL);
    }
    kv_model_file *mf = NULL;
    kv_model *m = NULL;
    kv_err_table t = {0};
    int *choice = NULL;
    /* the head is allocated only when the alphas measured it (else --format's policy keeps it) */
    int with_head = 0;
    for (int i = 0; i < alphas.n_layers; i++) with_head |= !strcmp(alphas.layers[i].name, "output.weight");
    if ((st = kv_model_open(model_path, &mf, err)) == KV_OK && (st = kv_model_load(mf, NULL, &m, err)) == KV_OK)
        st = kv_err_table_build(m, formats, n_formats, with_head, rht_block, seed, 0, pool, &t, err);
    if (!st) {
        choice = kv_calloc((size_t)t.n_layers, sizeof(int), err);
        if (!choice) st = KV_ENOMEM;
    }
    if (!st) st = kv_alloc_plan(&t, mode == KV_ALLOC_UNIFORM ? NULL : &alphas, bits, mode, choice, &rep->result, err);
    if (!st) {
        *specs = kv_calloc((size_t)t.n_layers, sizeof(char *), err);
        if (!*specs) st = KV_ENOMEM;
        double params = 0;
        for (int l = 0; l < t.n_layers && !st; l++) {
            (*specs)[l] = override_spec(t.names[l], t.formats[choice[l]].name);
            if (!(*specs)[l]) st = kv_fail(err, KV_ENOMEM, "out of memory");
            else *n_specs = l + 1;
            params += (double)t.params[l];
        }
        rep->n_layers = t.n_layers;
        rep->bits_per_weight = params > 0 ? rep->result.total_bits / params : 0;
    }
    if (st && *specs) {
        for (int i = 0; i < *n_specs; i++) free((*specs)[i]);
        free(*specs);
        *specs = NULL;
        *n_specs = 0;
    }
    free(choice);
    kv_err_table_free(&t);
    kv_model_free(m);
    kv_model_close(mf);
    kv_sens_free(&alphas);
    return st;
}
