/* quantize_write.c — the pipeline's output: GGUF (the source's KV pairs or llama.cpp's metadata, kvant's
 * keys, a method's side outputs, tensors in llama-quantize's order with q/k rows permuted for arch llama) or
 * safetensors. Sources: llama.cpp src/llama-quant.cpp llama_model_quantize_impl (copy the source's KV
 * pairs, set general.quantization_version = 2 and general.file_type), and for sources that are not GGUF the
 * general.* / <arch>.* / tokenizer.ggml.* keys `convert` writes (kv_gguf_add_model_metadata, io/gguf_convert.c,
 * after convert_hf_to_gguf.py), docs/FORMAT.md. */
#include "algos/pipeline.h"
#include "io/gguf.h"
#include "io/model_file.h"
#include <stdarg.h>
#include <stdio.h>

#define GGML_QNT_VERSION 2

/* llama.cpp's converter writes attn_q/attn_k rows permuted for its interleaved RoPE, arch "llama" only: the
 * architecture the output declares (a GGUF source's own; otherwise kv_gguf_arch_of, Mistral as llama). */
int kv_qqk_heads(const kv_model_file *mf, const kv_hparams *hp, const char *name) {
    const char *out_arch = mf->gguf ? hp->arch : kv_gguf_arch_of(hp);
    return strcmp(out_arch, "llama") ? 0 : kv_gguf_qk_heads(hp, name);
}

/* The GGUF type id a tensor is stored under: a weight whose input is rotated online keeps its ggml rows under
 * KV_TYPE_ROTATED, so that llama.cpp refuses the file instead of running the weight without the rotation. */
uint32_t kv_qstored_type(const kv_qtensor *q) {
    return q->wt->rht_block > 0 && q->type < KV_TYPE_KVANT_BASE ? KV_TYPE_ROTATED : q->type;
}

static void why_add(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void why_add(char *why, size_t n, const char *fmt, ...) {
    size_t len = strlen(why);
    if (len && len + 2 < n) memcpy(why + len, "; ", 3), len += 2;
    va_list ap;
    va_start(ap, fmt);
    if (len < n) vsnprintf(why + len, n - len, fmt, ap);
    va_end(ap);
}

void kv_qllama_cpp_verdict(const kv_qtensor *ot, int64_t n, kv_out_format of, const char *act, const char *transforms,
                           kv_quantize_report *rep) {
    char *why = rep->llama_cpp_why;
    size_t cap = sizeof rep->llama_cpp_why;
    why[0] = 0;
    rep->llama_cpp_runs = 0;
    if (of == KV_OUT_SAFETENSORS) {
        why_add(why, cap, "kvant's safetensors layout of packed rows is read by kvant only");
        return;
    }
    if (of != KV_OUT_GGUF) {
        why_add(why, cap, "a Hugging Face directory (transformers, vLLM), not a GGUF");
        return;
    }
    int64_t n_kvant = 0, n_rot = 0, n_ecw = 0;
    const char *kvant_fmt = NULL;
    for (int64_t i = 0; i < n; i++) {
        uint32_t t = kv_qstored_type(&ot[i]);
        if (t == KV_TYPE_ROTATED) n_rot++;
        else if (t == KV_TYPE_ECW) n_ecw++;
        else if (t >= KV_TYPE_KVANT_BASE) {
            if (!n_kvant++) kvant_fmt = ot[i].fmt.name;
        }
    }
    if (n_kvant)
        why_add(why, cap, "%lld tensors in kvant-only formats (%s ...: type ids >= 1024)", (long long)n_kvant, kvant_fmt);
    if (n_ecw) why_add(why, cap, "%lld entropy-coded tensors (type 1031)", (long long)n_ecw);
    if (n_rot)
        why_add(why, cap, "%lld weights need the online rotation of --transform %s, which llama.cpp does not apply "
                "(stored under kvant type 1032)", (long long)n_rot, transforms && *transforms ? transforms : "rht");
    if (why[0]) return;
    rep->llama_cpp_runs = 1;
    if (act && *act && strcmp(act, "none"))
        why_add(why, cap, "the weights only: llama.cpp does not simulate the --act %s activation quantization", act);
}

/* general.file_type: the llama_ftype of a llama.cpp mix or plain float format (llama-quantize's F32 / F16 /
 * BF16); none for kvant formats and --pure. */
static uint32_t file_type_of(const kv_policy *p) {
    if (p->pure) return KV_GGUF_NO_FILE_TYPE;
    if (p->ftype >= 0) return (uint32_t)p->ftype;
    if (!strcmp(p->format, "f32")) return 0;  /* LLAMA_FTYPE_ALL_F32 */
    if (!strcmp(p->format, "f16")) return 1;  /* LLAMA_FTYPE_MOSTLY_F16 */
    if (!strcmp(p->format, "bf16")) return 32; /* LLAMA_FTYPE_MOSTLY_BF16 */
    return KV_GGUF_NO_FILE_TYPE;
}

/* Copies a GGUF source's KV pairs except the ones this run rewrites. */
static kv_status meta_copy_gguf(kv_gguf_writer *w, const kv_gguf *g, kv_error *err) {
    for (int64_t i = 0; i < kv_gguf_n_kv(g); i++) {
        const char *k = kv_gguf_kv_key(g, i);
        if (!strcmp(k, "general.file_type") || !strcmp(k, "general.quantization_version") || !strncmp(k, "kvant.", 6))
            continue;
        kv_status st = kv_gguf_writer_add_value(w, k, kv_gguf_kv_value(g, i), err);
        if (st != KV_OK) return st;
    }
    return KV_OK;
}

/* llama.cpp's weight_name_comparer (llama-model-loader.h): by layer number (-1 outside blocks), then name;
 * llama-quantize writes tensors in this order. */
static int tensor_order(const void *pa, const void *pb) {
    const kv_qtensor *a = pa, *b = pb;
    int la = -1, lb = -1;
    sscanf(a->wt->name, "blk.%d.", &la);
    sscanf(b->wt->name, "blk.%d.", &lb);
    if (la != lb) return la < lb ? -1 : 1;
    return strcmp(a->wt->name, b->wt->name);
}

static kv_status extra_push(kv_qextra *x, const char *name, const void *data, uint64_t nbytes, kv_qextra_item **out,
                            kv_error *err) {
    if (x->n == x->cap) {
        int64_t cap = x->cap ? 2 * x->cap : 64;
        kv_qextra_item *g = realloc(x->it, sizeof *g * (size_t)cap);
        if (!g) return kv_fail(err, KV_ENOMEM, "out of memory");
        x->it = g;
        x->cap = cap;
    }
    kv_qextra_item *e = &x->it[x->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->data = malloc(nbytes ? (size_t)nbytes : 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return kv_fail(err, KV_ENOMEM, "out of memory");
    }
    if (nbytes) memcpy(e->data, data, (size_t)nbytes);
    e->nbytes = nbytes;
    x->n++;
    *out = e;
    return KV_OK;
}

kv_status kv_qextra_add_meta(void *user, const char *key, kv_gguf_vtype elem_type, const void *data, int64_t n,
                                kv_error *err) {
    size_t esz = kv_gguf_vtype_size(elem_type);
    if (!key || !esz || elem_type == KV_GGUF_STRING || n < -1 || (n != 0 && !data))
        return kv_fail(err, KV_EINVAL, "method metadata '%s': bad type or data", key ? key : "(null)");
    kv_qextra_item *e;
    kv_status st = extra_push(user, key, data, (uint64_t)(n < 0 ? 1 : n) * esz, &e, err);
    if (st != KV_OK) return st;
    e->elem_type = elem_type;
    e->n = n;
    return KV_OK;
}

kv_status kv_qextra_add_tensor(void *user, const char *name, int n_dims, const int64_t *shape, uint32_t type,
                                  const void *data, kv_error *err) {
    if (!name || !shape || !data || n_dims < 1 || n_dims > 4 || type >= KV_TYPE_KVANT_BASE)
        return kv_fail(err, KV_EINVAL, "method tensor '%s': bad shape or type", name ? name : "(null)");
    uint64_t rows = 1;
    for (int d = 0; d + 1 < n_dims; d++) rows *= (uint64_t)shape[d];
    uint64_t nbytes = (uint64_t)kv_type_row_bytes(type, shape[n_dims - 1]) * rows;
    if (!nbytes) return kv_fail(err, KV_EINVAL, "method tensor '%s': empty or bad row length", name);
    kv_qextra_item *e;
    kv_status st = extra_push(user, name, data, nbytes, &e, err);
    if (st != KV_OK) return st;
    e->is_tensor = 1;
    e->n_dims = n_dims;
    memcpy(e->shape, shape, sizeof(int64_t) * (size_t)n_dims);
    e->type = type;
    return KV_OK;
}

void kv_qextra_free(kv_qextra *x) {
    for (int64_t i = 0; i < x->n; i++) {
        free(x->it[i].name);
        free(x->it[i].data);
    }
    free(x->it);
    memset(x, 0, sizeof *x);
}

static kv_status extra_write_meta(kv_gguf_writer *w, const kv_qextra_item *e, kv_error *err) {
    if (e->n >= 0) return kv_gguf_writer_add_arr(w, e->name, e->elem_type, e->data, (uint64_t)e->n, err);
    const void *d = e->data;
    switch (e->elem_type) {
    case KV_GGUF_U8: return kv_gguf_writer_add_u8(w, e->name, *(const uint8_t *)d, err);
    case KV_GGUF_I8: return kv_gguf_writer_add_i8(w, e->name, *(const int8_t *)d, err);
    case KV_GGUF_U16: return kv_gguf_writer_add_u16(w, e->name, (uint16_t)kv_rd_u16(d), err);
    case KV_GGUF_I16: return kv_gguf_writer_add_i16(w, e->name, (int16_t)kv_rd_u16(d), err);
    case KV_GGUF_U32: return kv_gguf_writer_add_u32(w, e->name, kv_rd_u32(d), err);
    case KV_GGUF_I32: return kv_gguf_writer_add_i32(w, e->name, (int32_t)kv_rd_u32(d), err);
    case KV_GGUF_U64: return kv_gguf_writer_add_u64(w, e->name, kv_rd_u64(d), err);
    case KV_GGUF_I64: return kv_gguf_writer_add_i64(w, e->name, (int64_t)kv_rd_u64(d), err);
    case KV_GGUF_F32: return kv_gguf_writer_add_f32(w, e->name, kv_rd_f32(d), err);
    case KV_GGUF_F64: { double v; memcpy(&v, d, 8); return kv_gguf_writer_add_f64(w, e->name, v, err); }
    case KV_GGUF_BOOL: return kv_gguf_writer_add_bool(w, e->name, *(const uint8_t *)d != 0, err);
    default: return kv_fail(err, KV_EINVAL, "method metadata '%s': unsupported type", e->name);
    }
}

kv_status kv_qwrite_gguf(const kv_model_file *mf, const kv_wmodel *wm, kv_qtensor *ot, int64_t n,
                            const kv_qrun_info *ri, const kv_qextra *xo, kv_qstream *ss, const char *path,
                            kv_progress *prog, kv_error *err) {
    kv_gguf_writer *w = NULL;
    kv_status st = kv_gguf_writer_create(&w, err);
    if (st != KV_OK) return st;
    uint32_t ftype = file_type_of(ri->policy);
    float rope_freqs[512];
    if (mf->gguf) { /* llama-quantize: the source's pairs, then the quantization version and file type */
        st = meta_copy_gguf(w, mf->gguf, err);
        int any_quant = 0;
        for (int64_t i = 0; i < n; i++) any_quant |= ot[i].type != KV_TYPE_F32 && ot[i].type != KV_TYPE_F16 && ot[i].type != KV_TYPE_BF16;
        if (st == KV_OK && any_quant) st = kv_gguf_writer_add_u32(w, "general.quantization_version", GGML_QNT_VERSION, err);
        if (st == KV_OK && ftype != KV_GGUF_NO_FILE_TYPE) st = kv_gguf_writer_add_u32(w, "general.file_type", ftype, err);
    } else { /* the keys convert writes (convert_hf_to_gguf.py), then what llama-quantize sets */
        st = kv_gguf_add_model_metadata(w, mf, ftype, err);
        if (st == KV_OK) st = kv_gguf_add_rope_freqs(w, &wm->hp, rope_freqs, err);
    }
    if (st == KV_OK) st = kv_gguf_writer_add_str(w, "kvant.quantize.format", ri->policy->format, err);
    if (st == KV_OK) st = kv_gguf_writer_add_str(w, "kvant.quantize.method", ri->method, err);
    if (st == KV_OK) st = kv_gguf_writer_add_str(w, "kvant.transform.list", ri->transforms, err);
    if (st == KV_OK) st = kv_gguf_writer_add_u64(w, "kvant.quantize.seed", ri->seed, err);
    if (st == KV_OK && ri->act && strcmp(ri->act, "none")) st = kv_gguf_writer_add_str(w, "kvant.act", ri->act, err);
    if (st == KV_OK && ri->recipe_json) st = kv_gguf_writer_add_str(w, "kvant.quantize.recipe", ri->recipe_json, err);
    for (int64_t i = 0; st == KV_OK && i < n; i++) {
        char key[256];
        const kv_wtensor *t = ot[i].wt;
        uint32_t type = kv_qstored_type(&ot[i]);
        if (type >= KV_TYPE_KVANT_BASE && type != KV_TYPE_ECW) { /* ecw: the writer adds its keys */
            snprintf(key, sizeof key, "kvant.tensor.%s.format", t->name);
            st = kv_gguf_writer_add_str(w, key, ot[i].fmt.name, err);
        }
        if (st == KV_OK && t->rht_block > 0) {
            snprintf(key, sizeof key, KV_META_RHT_BLOCK_FMT, t->name);
            st = kv_gguf_writer_add_u32(w, key, (uint32_t)t->rht_block, err);
            snprintf(key, sizeof key, KV_META_RHT_SEED_FMT, t->name);
            if (st == KV_OK) st = kv_gguf_writer_add_u64(w, key, t->rht_seed, err);
        }
    }
    for (int64_t i = 0; st == KV_OK && i < xo->n; i++)
        if (!xo->it[i].is_tensor) st = extra_write_meta(w, &xo->it[i], err);
    qsort(ot, (size_t)n, sizeof *ot, tensor_order);
    void **perm = kv_calloc((size_t)KV_MAX(n, 1), sizeof(void *), err);
    if (!perm) st = KV_ENOMEM;
    if (st == KV_OK && ss) st = kv_qstream_add(ss, w, ot, n, err); /* streaming: bytes produced on demand */
    for (int64_t i = 0; st == KV_OK && !ss && i < n; i++) {
        const kv_wtensor *t = ot[i].wt;
        const void *data = ot[i].data;
        if (ot[i].type == KV_TYPE_ECW) { /* entropy-coded: kvant row order, size in metadata */
            st = kv_gguf_writer_add_tensor_ecw(w, t->name, t->shape[0], kv_wtensor_nelem(t) / t->shape[0], data, ot[i].nbytes, err);
            continue;
        }
        int heads = kv_qqk_heads(mf, &wm->hp, t->name);
        if (heads > 0) {
            perm[i] = kv_malloc(ot[i].nbytes, err);
            if (!perm[i]) { st = KV_ENOMEM; break; }
            st = kv_permute_qk_to_gguf(ot[i].data, perm[i], t->shape[0], ot[i].nbytes / (uint64_t)t->shape[0], heads, err);
            if (st != KV_OK) { kv_error_context(err, NULL, -1, t->name); break; }
            data = perm[i];
        }
        st = kv_gguf_writer_add_tensor(w, t->name, t->n_dims, t->shape, kv_qstored_type(&ot[i]), data, err);
    }
    for (int64_t i = 0; st == KV_OK && i < xo->n; i++)
        if (xo->it[i].is_tensor)
            st = kv_gguf_writer_add_tensor(w, xo->it[i].name, xo->it[i].n_dims, xo->it[i].shape, xo->it[i].type,
                                           xo->it[i].data, err);
    if (st == KV_OK) st = kv_gguf_writer_write(w, path, ss ? NULL : prog, err);
    if (ss) kv_qstream_free(ss);
    for (int64_t i = 0; perm && i < n; i++) free(perm[i]);
    free(perm);
    kv_gguf_writer_free(w);
    return st;
}

/* safetensors: every tensor under its canonical name, in HF row order; quantized tensors as U8 [rows, row
 * bytes] holding the packed rows of their kv_format (docs/FORMAT.md "kvant safetensors output"), described in
 * __metadata__ by "NAME.format", "NAME.shape" and the rht keys. */
static void json_str(char **p, size_t *len, size_t *cap, int *oom, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void json_str(char **p, size_t *len, size_t *cap, int *oom, const char *fmt, ...) {
    if (*oom) return;
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(*p ? *p + *len : NULL, *p ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { *oom = 1; return; }
        if (*p && *len + (size_t)k < *cap) { *len += (size_t)k; return; }
        size_t ncap = (*cap ? *cap * 2 : 4096) + (size_t)k;
        char *g = realloc(*p, ncap);
        if (!g) { *oom = 1; return; }
        *p = g;
        *cap = ncap;
    }
}

kv_status kv_qwrite_safetensors(kv_qtensor *ot, int64_t n, const kv_qrun_info *ri, const char *path, kv_error *err) {
    char *h = NULL;
    size_t len = 0, cap = 0;
    int oom = 0;
    json_str(&h, &len, &cap, &oom, "{\"__metadata__\":{\"format\":\"pt\",\"kvant.quantize.format\":\"%s\","
             "\"kvant.quantize.method\":\"%s\",\"kvant.transform.list\":\"%s\"", ri->policy->format, ri->method, ri->transforms);
    if (ri->recipe_json) { /* a JSON text inside a JSON string */
        json_str(&h, &len, &cap, &oom, ",\"kvant.quantize.recipe\":\"");
        for (const unsigned char *c = (const unsigned char *)ri->recipe_json; *c; c++) {
            if (*c == '"' || *c == '\\') json_str(&h, &len, &cap, &oom, "\\%c", *c);
            else if (*c < 0x20) json_str(&h, &len, &cap, &oom, "\\u%04x", *c);
            else json_str(&h, &len, &cap, &oom, "%c", *c);
        }
        json_str(&h, &len, &cap, &oom, "\"");
    }
    for (int64_t i = 0; i < n; i++) {
        const kv_wtensor *t = ot[i].wt;
        json_str(&h, &len, &cap, &oom, ",\"%s.format\":\"%s\",\"%s.shape\":\"[", t->name, ot[i].fmt.name, t->name);
        for (int d = 0; d < t->n_dims; d++) json_str(&h, &len, &cap, &oom, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        json_str(&h, &len, &cap, &oom, "]\"");
        if (t->rht_block > 0)
            json_str(&h, &len, &cap, &oom, ",\"%s.rht_block\":\"%d\",\"%s.rht_seed\":\"%llu\"", t->name, (int)t->rht_block,
                     t->name, (unsigned long long)t->rht_seed);
    }
    json_str(&h, &len, &cap, &oom, "}");
    uint64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const kv_wtensor *t = ot[i].wt;
        const char *dtype = ot[i].type == KV_TYPE_F32 ? "F32" : ot[i].type == KV_TYPE_F16 ? "F16" : ot[i].type == KV_TYPE_BF16 ? "BF16" : "U8";
        json_str(&h, &len, &cap, &oom, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, dtype);
        if (dtype[0] == 'U')
            json_str(&h, &len, &cap, &oom, "%lld,%llu", (long long)t->shape[0], (unsigned long long)(ot[i].nbytes / (uint64_t)t->shape[0]));
        else
            for (int d = 0; d < t->n_dims; d++) json_str(&h, &len, &cap, &oom, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        json_str(&h, &len, &cap, &oom, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + ot[i].nbytes));
        off += ot[i].nbytes;
    }
    json_str(&h, &len, &cap, &oom, "}");
    while (!oom && len % 8) json_str(&h, &len, &cap, &oom, " ");
    if (oom) {
        free(h);
        return kv_fail(err, KV_ENOMEM, "out of memory building the safetensors header");
    }
    kv_outfile *f = NULL;
    kv_status st = kv_outfile_open(path, &f, err);
    if (st != KV_OK) {
        free(h);
        return st;
    }
    uint64_t hl = len;
    st = kv_outfile_write(f, &hl, 8, err);
    if (st == KV_OK) st = kv_outfile_write(f, h, len, err);
    for (int64_t i = 0; st == KV_OK && i < n; i++) st = kv_outfile_write(f, ot[i].data, ot[i].nbytes, err);
    free(h);
    if (st != KV_OK) {
        kv_outfile_abort(f);
        return st;
    }
    return kv_outfile_commit(f, err);
}
