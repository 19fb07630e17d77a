/* model_file.c — kv_model_open: detects the container (HF directory, GGUF, safetensors, llama2.c), hands it
 * to its loader, and answers questions about the result (tensors, hparams, totals, fp32 rows). */
#include "io/model_file.h"
#include "io/gguf.h"
#include <sys/mman.h>
#include <unistd.h>
#include <stdio.h>
#include <sys/stat.h>
#include <dirent.h>

static kv_status kv_gguf_model_open(kv_model_file *mf, const char *path, kv_error *err);
static void kv_gguf_model_close(kv_model_file *mf);
static const char *kv_gguf_model_meta_string(const kv_model_file *mf, const char *key);

int64_t kv_tensor_nelements(const kv_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->shape[i];
    return n;
}

kv_status kv_mf_add_map(kv_model_file *mf, const char *path, int *index, kv_error *err) {
    if (mf->n_maps == mf->cap_maps) {
        int cap = mf->cap_maps ? mf->cap_maps * 2 : 4;
        kv_mapped *m = realloc(mf->maps, (size_t)cap * sizeof *m);
        if (!m) return kv_fail(err, KV_ENOMEM, "out of memory");
        mf->maps = m;
        mf->cap_maps = cap;
    }
    kv_status st = kv_map_file(path, &mf->maps[mf->n_maps], err);
    if (st) return st;
    *index = mf->n_maps++;
    return KV_OK;
}

void kv_model_drop_pages(const kv_model_file *mf, const kv_tensor *t) {
    if (!mf || !t || !t->data || !t->nbytes) return;
    const uint8_t *p = t->data;
    int mapped = mf->gguf && kv_gguf_maps_range(mf->gguf, p, (size_t)t->nbytes);
    for (int i = 0; i < mf->n_maps && !mapped; i++)
        mapped = p >= mf->maps[i].data && (size_t)(p - mf->maps[i].data) + t->nbytes <= mf->maps[i].size;
    if (!mapped) return; /* bytes the model file owns (un-permuted q/k rows) are not file pages */
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + t->nbytes) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED); /* read-only private mapping: pages re-read on use */
}

kv_tensor *kv_mf_add_tensor(kv_model_file *mf, kv_error *err) {
    if (mf->n_tensors == mf->cap_tensors) {
        int64_t cap = mf->cap_tensors ? mf->cap_tensors * 2 : 64;
        kv_tensor *t = realloc(mf->tensors, (size_t)cap * sizeof *t);
        if (!t) { kv_fail(err, KV_ENOMEM, "out of memory"); return NULL; }
        mf->tensors = t;
        mf->cap_tensors = cap;
    }
    kv_tensor *t = &mf->tensors[mf->n_tensors++];
    memset(t, 0, sizeof *t);
    return t;
}

void *kv_mf_alloc(kv_model_file *mf, size_t n, kv_error *err) {
    if (mf->n_owned == mf->cap_owned) {
        int cap = mf->cap_owned ? mf->cap_owned * 2 : 16;
        void **o = realloc(mf->owned, (size_t)cap * sizeof *o);
        if (!o) { kv_fail(err, KV_ENOMEM, "out of memory"); return NULL; }
        mf->owned = o;
        mf->cap_owned = cap;
    }
    void *p = kv_malloc_aligned(n, err);
    if (p) mf->owned[mf->n_owned++] = p;
    return p;
}

/* safetensors has no magic: an 8-byte header length that fits the file, then the JSON object's '{'. */
static int looks_like_safetensors(const kv_mapped *m) {
    return m->size >= 10 && m->data[8] == '{' && kv_rd_u64(m->data) <= m->size - 8;
}

static kv_status sniff_file(const char *path, kv_file_format *fmt, kv_error *err) {
    kv_mapped m;
    kv_status st = kv_map_file(path, &m, err);
    if (st) return st;
    size_t len = strlen(path);
    int st_ext = len > 12 && !strcmp(path + len - 12, ".safetensors");
    if (m.size >= 4 && !memcmp(m.data, "GGUF", 4)) *fmt = KV_FILE_GGUF;
    else if (st_ext || looks_like_safetensors(&m)) *fmt = KV_FILE_SAFETENSORS;
    else if (len > 5 && !strcmp(path + len - 5, ".gguf")) *fmt = KV_FILE_GGUF; /* the reader reports the bad magic */
    else *fmt = KV_FILE_LLAMA2C; /* no magic either: its loader checks the header for plausible sizes */
    kv_unmap_file(&m);
    return KV_OK;
}

/* Canonical order: token_embd, then per layer attention and FFN tensors, then output_norm, output, and the
 * unmapped tensors by source name. Used for llama2.c, whose file groups each kind over all layers; HF and GGUF
 * keep file order (shard by shard, header order), which is the order llama.cpp's converter writes. */
static const char *const k_layer_order[] = {
    "attn_norm.weight", "attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias", "attn_v.weight",
    "attn_v.bias", "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
};

static int64_t canonical_rank(const kv_tensor *t) {
    const char *n = t->name;
    if (!n[0]) return INT64_MAX;
    if (!strcmp(n, "token_embd.weight")) return 0;
    if (!strncmp(n, "blk.", 4) && n[4] >= '0' && n[4] <= '9') {
        char *end;
        long layer = strtol(n + 4, &end, 10);
        int64_t kind = (int64_t)KV_ARRAY_LEN(k_layer_order);
        for (size_t k = 0; *end == '.' && k < KV_ARRAY_LEN(k_layer_order); k++)
            if (!strcmp(end + 1, k_layer_order[k])) kind = (int64_t)k;
        return 1 + (int64_t)layer * 64 + kind;
    }
    if (!strcmp(n, "output_norm.weight")) return INT64_MAX - 3;
    if (!strcmp(n, "output.weight")) return INT64_MAX - 2;
    return INT64_MAX - 1;
}

static int cmp_canonical(const void *a, const void *b) {
    const kv_tensor *x = a, *y = b;
    int64_t rx = canonical_rank(x), ry = canonical_rank(y);
    if (rx != ry) return rx < ry ? -1 : 1;
    int c = strcmp(x->src_name, y->src_name);
    if (c) return c;
    return x->file_index != y->file_index ? (x->file_index < y->file_index ? -1 : 1) : 0;
}

void kv_model_close(kv_model_file *mf) {
    if (!mf) return;
    if (mf->gguf) kv_gguf_model_close(mf);
    for (int i = 0; i < mf->n_maps; i++) kv_unmap_file(&mf->maps[i]);
    for (int i = 0; i < mf->n_owned; i++) kv_free_aligned(mf->owned[i]);
    free(mf->maps);
    free(mf->owned);
    free(mf->tensors);
    free(mf->meta);
    free(mf);
}

kv_status kv_mf_set_meta(kv_model_file *mf, const char *key, const char *value, kv_error *err) {
    if (strlen(key) >= sizeof mf->meta[0].key || strlen(value) >= sizeof mf->meta[0].value)
        return kv_fail(err, KV_ERANGE, "metadata '%.60s' too long", key);
    if (mf->n_meta == mf->cap_meta) {
        int cap = mf->cap_meta ? mf->cap_meta * 2 : 64;
        kv_mf_meta *g = realloc(mf->meta, (size_t)cap * sizeof *g);
        if (!g) return kv_fail(err, KV_ENOMEM, "out of memory");
        mf->meta = g;
        mf->cap_meta = cap;
    }
    kv_strlcpy(mf->meta[mf->n_meta].key, key, sizeof mf->meta[0].key);
    kv_strlcpy(mf->meta[mf->n_meta].value, value, sizeof mf->meta[0].value);
    mf->n_meta++;
    return KV_OK;
}

const char *kv_model_act_format(const kv_model_file *mf) { return mf && mf->act_format[0] ? mf->act_format : NULL; }
const char *kv_model_quant_method(const kv_model_file *mf) { return mf ? mf->quant_method : ""; }

/* A directory without config.json that holds exactly one model file (a llama2.c .bin, a .gguf): its path in
 * out. 0 when it is not such a directory (the HF reader then reports what is missing), -1 on an error (several
 * models: the caller cannot guess which). Candidates are opened to tell a checkpoint from a tokenizer.bin. */
static int dir_single_model(const char *dir, char *out, size_t n, kv_error *err) {
    char p[1200];
    struct stat sb;
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (stat(p, &sb) == 0) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    char names[600] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (!(len > 4 && !strcmp(e->d_name + len - 4, ".bin")) && !(len > 5 && !strcmp(e->d_name + len - 5, ".gguf")))
            continue;
        if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= sizeof p || stat(p, &sb) || !S_ISREG(sb.st_mode))
            continue;
        kv_model_file *mf = NULL;
        kv_error scratch;
        kv_error_clear(&scratch);
        if (kv_model_open(p, &mf, &scratch) != KV_OK || !mf->has_hparams) {
            kv_model_close(mf);
            continue;
        }
        kv_model_close(mf);
        if (!found++) kv_strlcpy(out, p, n);
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", e->d_name);
    }
    closedir(d);
    if (found <= 1) return found;
    kv_fail(err, KV_EINVAL, "no config.json, and %d model files (%s): give the file", found, names);
    kv_error_context(err, dir, -1, NULL);
    return -1;
}

kv_status kv_model_open(const char *path, kv_model_file **out, kv_error *err) {
    *out = NULL;
    char single[1200];
    struct stat ds;
    if (path && stat(path, &ds) == 0 && S_ISDIR(ds.st_mode)) {
        int r = dir_single_model(path, single, sizeof single, err);
        if (r < 0) return KV_EINVAL;
        if (r > 0) path = single;
    }
    if (!path || !*path) return kv_fail(err, KV_EINVAL, "empty model path");
    kv_model_file *mf = kv_calloc(1, sizeof *mf, err);
    if (!mf) return KV_ENOMEM;
    if (strlen(path) >= sizeof mf->path) {
        free(mf);
        return kv_fail(err, KV_EINVAL, "model path too long");
    }
    kv_strlcpy(mf->path, path, sizeof mf->path);
    mf->hp.bos_id = mf->hp.eos_id = -1;
    struct stat sb;
    kv_status st;
    if (stat(path, &sb) != 0) {
        st = kv_fail(err, KV_ENOTFOUND, "no such file or directory");
        kv_error_context(err, path, -1, NULL);
    } else if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode)) {
        st = kv_check_regular_file(path, err); /* names the kind (FIFO, device...) */
    } else if (S_ISDIR(sb.st_mode)) {
        mf->format = KV_FILE_HF;
        st = kv_hf_open_dir(mf, path, err);
    } else if ((st = sniff_file(path, &mf->format, err)) == KV_OK) {
        switch (mf->format) {
        case KV_FILE_GGUF: st = kv_gguf_model_open(mf, path, err); break;
        case KV_FILE_SAFETENSORS: st = kv_safetensors_open_file(mf, path, err); break;
        default: st = kv_llama2c_open_file(mf, path, err); break;
        }
    }
    if (st) {
        kv_model_close(mf);
        return st;
    }
    if (mf->format == KV_FILE_LLAMA2C) qsort(mf->tensors, (size_t)mf->n_tensors, sizeof *mf->tensors, cmp_canonical);
    *out = mf;
    return KV_OK;
}

kv_file_format kv_model_format(const kv_model_file *mf) { return mf->format; }

const char *kv_file_format_name(kv_file_format f) {
    switch (f) {
    case KV_FILE_HF: return "hf";
    case KV_FILE_SAFETENSORS: return "safetensors";
    case KV_FILE_GGUF: return "gguf";
    case KV_FILE_LLAMA2C: return "llama2c";
    default: return "unknown";
    }
}

const char *kv_model_path(const kv_model_file *mf) { return mf->path; }
const kv_hparams *kv_model_hparams(const kv_model_file *mf) { return mf->has_hparams ? &mf->hp : NULL; }
int64_t kv_model_n_tensors(const kv_model_file *mf) { return mf->n_tensors; }

const kv_tensor *kv_model_tensor(const kv_model_file *mf, int64_t i) {
    return i >= 0 && i < mf->n_tensors ? &mf->tensors[i] : NULL;
}

const kv_tensor *kv_model_find(const kv_model_file *mf, const char *canonical_name) {
    for (int64_t i = 0; i < mf->n_tensors; i++)
        if (!strcmp(mf->tensors[i].name, canonical_name)) return &mf->tensors[i];
    return NULL;
}

kv_tokenizer_source kv_model_tokenizer(const kv_model_file *mf, const char **path) {
    if (path) *path = mf->tok == KV_TOKSRC_NONE ? NULL : mf->tok_path;
    return mf->tok;
}

int64_t kv_model_n_params(const kv_model_file *mf) {
    int64_t n = 0;
    for (int64_t i = 0; i < mf->n_tensors; i++) n += kv_tensor_nelements(&mf->tensors[i]);
    return n;
}

uint64_t kv_model_n_bytes(const kv_model_file *mf) {
    uint64_t n = 0;
    for (int64_t i = 0; i < mf->n_tensors; i++) n += mf->tensors[i].nbytes;
    return n;
}

const char *kv_model_meta_string(const kv_model_file *mf, const char *key) {
    if (mf && mf->gguf) return kv_gguf_model_meta_string(mf, key);
    for (int i = 0; mf && i < mf->n_meta; i++)
        if (!strcmp(mf->meta[i].key, key)) return mf->meta[i].value;
    return NULL;
}

/* ---- fp32 access ------------------------------------------------------------------------------------ */

static int64_t row_length(const kv_tensor *t) { return t->n_dims ? t->shape[t->n_dims - 1] : 1; }

/* Where kvant's row `row` of rows rows is stored: GGUF q/k matrices keep llama.cpp's interleaved order. */
static int64_t stored_row(const kv_tensor *t, int64_t row, int64_t rows) {
    return t->qk_heads > 0 ? kv_qk_gguf_row(row, rows / t->qk_heads) : row;
}

const void *kv_tensor_row_bytes(const kv_tensor *t, int64_t row) {
    int64_t n = row_length(t), rows = n ? kv_tensor_nelements(t) / n : 0;
    if (!t->data || t->type == KV_TYPE_ECW || row < 0 || row >= rows || t->nbytes % (uint64_t)rows) return NULL;
    return (const uint8_t *)t->data + (size_t)stored_row(t, row, rows) * (size_t)(t->nbytes / (uint64_t)rows);
}

kv_status kv_tensor_copy_bytes(const kv_tensor *t, void *dst, kv_error *err) {
    if (t->qk_heads <= 0) {
        if (t->nbytes) memcpy(dst, t->data, (size_t)t->nbytes);
        return KV_OK;
    }
    int64_t rows = t->shape[0];
    size_t rb = (size_t)(t->nbytes / (uint64_t)rows);
    for (int64_t r = 0; r < rows; r++) {
        const void *src = kv_tensor_row_bytes(t, r);
        if (!src) {
            kv_fail(err, KV_EFORMAT, "%llu bytes do not split into %lld rows", (unsigned long long)t->nbytes, (long long)rows);
            kv_error_context(err, NULL, (int64_t)t->offset, t->name[0] ? t->name : t->src_name);
            return KV_EFORMAT;
        }
        memcpy((uint8_t *)dst + (size_t)r * rb, src, rb);
    }
    return KV_OK;
}

/* Dequantizes one row through the formats module (ggml block types, kvant formats). */
static kv_status row_via_format(const kv_tensor *t, const kv_format *f, int64_t row, float *dst, kv_error *err) {
    int64_t n = row_length(t), rows = n ? kv_tensor_nelements(t) / n : 0;
    size_t rb = kv_format_row_bytes(f, n);
    if (!f->dequantize || !rb || (uint64_t)rb * (uint64_t)rows != t->nbytes) {
        kv_fail(err, KV_EUNSUPPORTED, "cannot decode rows of %lld elements as format %s (%llu bytes for %lld rows)",
                (long long)n, f->name, (unsigned long long)t->nbytes, (long long)rows);
        kv_error_context(err, NULL, -1, t->name[0] ? t->name : t->src_name);
        return KV_EUNSUPPORTED;
    }
    f->dequantize(f, (const uint8_t *)t->data + (size_t)stored_row(t, row, rows) * rb, dst, n);
    return KV_OK;
}

/* Entropy-coded tensors have no fixed-size rows: they decode as a whole (kv_tensor_to_f32, kv_model_load). */
static kv_status ecw_no_rows(const kv_tensor *t, kv_error *err) {
    kv_fail(err, KV_EUNSUPPORTED, "entropy-coded (ecw) tensor: rows cannot be read one at a time; decode the whole "
            "tensor (kv_tensor_to_f32, kv_model_load)");
    kv_error_context(err, NULL, (int64_t)t->offset, t->name[0] ? t->name : t->src_name);
    return KV_EUNSUPPORTED;
}

kv_status kv_tensor_row_f32(const kv_tensor *t, int64_t row, float *dst, kv_error *err) {
    if (t->type == KV_TYPE_ECW) return ecw_no_rows(t, err);
    int64_t n = row_length(t);
    int64_t rows = n ? kv_tensor_nelements(t) / n : 0;
    if (row < 0 || row >= rows) {
        kv_fail(err, KV_ERANGE, "row %lld out of range (tensor has %lld rows)", (long long)row, (long long)rows);
        kv_error_context(err, NULL, -1, t->name[0] ? t->name : t->src_name);
        return KV_ERANGE;
    }
    const uint8_t *src = t->data;
    const size_t at = (size_t)stored_row(t, row, rows) * (size_t)n;
    switch (t->type) {
    case KV_TYPE_F32: memcpy(dst, src + at * 4, (size_t)n * 4); return KV_OK;
    case KV_TYPE_F16: kv_fp16_to_fp32_row((const uint16_t *)(const void *)(src + at * 2), dst, (size_t)n); return KV_OK;
    case KV_TYPE_BF16: kv_bf16_to_fp32_row((const uint16_t *)(const void *)(src + at * 2), dst, (size_t)n); return KV_OK;
    default: break;
    }
    kv_format f;
    kv_status st = kv_format_from_type(t->type, &f, err);
    if (st) {
        kv_error_context(err, NULL, -1, t->name[0] ? t->name : t->src_name);
        return st;
    }
    return row_via_format(t, &f, row, dst, err);
}

kv_status kv_model_tensor_row_f32(const kv_model_file *mf, const kv_tensor *t, int64_t row, float *dst, kv_error *err) {
    if (t->type < KV_TYPE_KVANT_BASE || t->type == KV_TYPE_ECW) return kv_tensor_row_f32(t, row, dst, err);
    char key[256];
    snprintf(key, sizeof key, "kvant.tensor.%s.format", t->src_name);
    const char *name = kv_model_meta_string(mf, key);
    if (!name) return kv_tensor_row_f32(t, row, dst, err);
    int64_t n = row_length(t), rows = n ? kv_tensor_nelements(t) / n : 0;
    if (row < 0 || row >= rows) {
        kv_fail(err, KV_ERANGE, "row %lld out of range (tensor has %lld rows)", (long long)row, (long long)rows);
        kv_error_context(err, mf->path, -1, t->src_name);
        return KV_ERANGE;
    }
    kv_format f;
    kv_status st = kv_format_get(name, &f, err);
    if (st) {
        kv_error_context(err, mf->path, -1, t->src_name);
        return st;
    }
    return row_via_format(t, &f, row, dst, err);
}

kv_status kv_tensor_to_f32(const kv_tensor *t, float *dst, kv_error *err) {
    if (t->type == KV_TYPE_ECW) return kv_ecw_tensor_to_f32(NULL, t, dst, NULL, err);
    int64_t n = t->n_dims ? t->shape[t->n_dims - 1] : 1;
    if (n == 0) return KV_OK;
    int64_t rows = kv_tensor_nelements(t) / n;
    for (int64_t r = 0; r < rows; r++) {
        kv_status st = kv_tensor_row_f32(t, r, dst + r * n, err);
        if (st) return st;
    }
    return KV_OK;
}

/* ---- shape checks against hparams ---------------------------------------------------------------------- */

static kv_status shape_fail(const kv_model_file *mf, const kv_tensor *t, int n_dims, const int64_t *want, kv_error *err) {
    char got[96], exp[96];
    int a = snprintf(got, sizeof got, "[");
    for (int i = 0; i < t->n_dims; i++) a += snprintf(got + a, sizeof got - (size_t)a, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    snprintf(got + a, sizeof got - (size_t)a, "]");
    a = snprintf(exp, sizeof exp, "[");
    for (int i = 0; i < n_dims; i++) a += snprintf(exp + a, sizeof exp - (size_t)a, "%s%lld", i ? ", " : "", (long long)want[i]);
    snprintf(exp + a, sizeof exp - (size_t)a, "]");
    kv_fail(err, KV_EFORMAT, "shape %s does not match the hyper-parameters (expected %s)", got, exp);
    kv_error_context(err, mf->maps && t->file_index < mf->n_maps ? mf->maps[t->file_index].path : mf->path,
                     (int64_t)t->offset, t->src_name);
    return KV_EFORMAT;
}

/* Expected shape of a canonical name; 0 when the name is not a Llama-family tensor kvant knows. */
static int expected_shape(const kv_hparams *hp, const char *name, int64_t *shape, int *layer) {
    int64_t q = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    *layer = -1;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "output.weight")) { shape[0] = hp->n_vocab; shape[1] = hp->n_embd; return 2; }
    if (!strcmp(name, "output_norm.weight")) { shape[0] = hp->n_embd; return 1; }
    int l, used = 0;
    char rest[64];
    if (strncmp(name, "blk.", 4) || name[4] < '0' || name[4] > '9') return 0;
    if (sscanf(name, "blk.%d.%63s%n", &l, rest, &used) != 2) return 0;
    *layer = l;
    if (!strcmp(rest, "attn_norm.weight") || !strcmp(rest, "ffn_norm.weight")) { shape[0] = hp->n_embd; return 1; }
    if (!strcmp(rest, "attn_q.weight")) { shape[0] = q; shape[1] = hp->n_embd; return 2; }
    if (!strcmp(rest, "attn_k.weight") || !strcmp(rest, "attn_v.weight")) { shape[0] = kv; shape[1] = hp->n_embd; return 2; }
    if (!strcmp(rest, "attn_q.bias")) { shape[0] = q; return 1; }
    if (!strcmp(rest, "attn_k.bias") || !strcmp(rest, "attn_v.bias")) { shape[0] = kv; return 1; }
    if (!strcmp(rest, "attn_output.weight")) { shape[0] = hp->n_embd; shape[1] = q; return 2; }
    if (!strcmp(rest, "ffn_gate.weight") || !strcmp(rest, "ffn_up.weight")) { shape[0] = hp->n_ff; shape[1] = hp->n_embd; return 2; }
    if (!strcmp(rest, "ffn_down.weight")) { shape[0] = hp->n_embd; shape[1] = hp->n_ff; return 2; }
    return 0;
}

static const char *const k_layer_required[] = {
    "attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
    "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
    "attn_q.bias", "attn_k.bias", "attn_v.bias", /* only with attn_bias */
};
#define KV_N_LAYER_NO_BIAS 9

kv_status kv_mf_check_shapes(const kv_model_file *mf, kv_error *err) {
    const kv_hparams *hp = &mf->hp;
    for (int64_t i = 0; i < mf->n_tensors; i++) {
        const kv_tensor *t = &mf->tensors[i];
        int64_t want[4];
        int layer;
        int nd = t->name[0] ? expected_shape(hp, t->name, want, &layer) : 0;
        if (!nd) continue;
        if (layer >= hp->n_layer) {
            kv_fail(err, KV_EFORMAT, "layer %d is beyond the model's %d layers", layer, hp->n_layer);
            kv_error_context(err, mf->maps && t->file_index < mf->n_maps ? mf->maps[t->file_index].path : mf->path,
                             (int64_t)t->offset, t->src_name);
            return KV_EFORMAT;
        }
        int ok = nd == t->n_dims;
        for (int d = 0; ok && d < nd; d++) ok = t->shape[d] == want[d];
        if (!ok) return shape_fail(mf, t, nd, want, err);
    }
    char name[64];
    const char *global[] = {"token_embd.weight", "output_norm.weight", "output.weight"};
    for (size_t g = 0; g < KV_ARRAY_LEN(global); g++) {
        if (g == 2 && hp->tie_embeddings) continue;
        if (!kv_model_find(mf, global[g])) {
            kv_fail(err, KV_ENOTFOUND, "tensor %s is missing%s", global[g],
                    g == 2 ? " (tie_word_embeddings is false)" : "");
            kv_error_context(err, mf->path, -1, global[g]);
            return KV_ENOTFOUND;
        }
    }
    for (int l = 0; l < hp->n_layer; l++)
        for (size_t k = 0; k < (hp->attn_bias ? KV_ARRAY_LEN(k_layer_required) : KV_N_LAYER_NO_BIAS); k++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, k_layer_required[k]);
            if (!kv_model_find(mf, name)) {
                kv_fail(err, KV_ENOTFOUND, "tensor %s is missing (the model has %d layers)", name, hp->n_layer);
                kv_error_context(err, mf->path, -1, name);
                return KV_ENOTFOUND;
            }
        }
    return KV_OK;
}

/* ---- GGUF models (llama.cpp src/llama-arch.cpp LLM_KV_* key names; convert_hf_to_gguf.py LlamaModel.permute) -- */

/* Optional integer "<arch>.<suffix>"; absent keeps *out. */
static kv_status gguf_int(const kv_gguf *g, const char *arch, const char *suffix, int32_t *out, kv_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!kv_gguf_find(g, key)) return KV_OK;
    int64_t v;
    kv_status st = kv_gguf_get_i64(g, key, &v, err);
    if (st) return st;
    if (v < 0 || v > (1 << 24)) {
        kv_fail(err, KV_ERANGE, "metadata %s = %lld is out of range", key, (long long)v);
        kv_error_context(err, kv_gguf_path(g), (int64_t)kv_gguf_find(g, key)->offset, NULL);
        return KV_ERANGE;
    }
    *out = (int32_t)v;
    return KV_OK;
}

/* A positive, finite hyper-parameter (the same bounds as config.json's): inf, NaN, 0 or a negative value would
 * silently give NaN logits or no RoPE at all. */
static kv_status gguf_float(const kv_gguf *g, const char *arch, const char *suffix, float *out, kv_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const kv_gguf_value *v = kv_gguf_find(g, key);
    if (!v) return KV_OK;
    float f;
    kv_status st = kv_gguf_get_f32(g, key, &f, err);
    if (st) return st;
    if (!(f > 0) || f > 1e30f) {
        kv_fail(err, KV_ERANGE, "metadata %s = %g must be positive and finite", key, (double)f);
        kv_error_context(err, kv_gguf_path(g), (int64_t)v->offset, NULL);
        return KV_ERANGE;
    }
    *out = f;
    return KV_OK;
}

static int is_llama_family(const char *arch) {
    return !strcmp(arch, "llama") || !strcmp(arch, "mistral") || !strcmp(arch, "qwen2");
}

static kv_status gguf_hparams(kv_model_file *mf, kv_gguf *g, kv_error *err) {
    kv_hparams *hp = &mf->hp;
    const char *arch = NULL;
    if (kv_gguf_find(g, "general.architecture")) {
        kv_status st = kv_gguf_get_str(g, "general.architecture", &arch, err);
        if (st) return st;
    }
    if (!arch) return KV_OK; /* no architecture: tensors only */
    mf->has_hparams = 1;
    kv_strlcpy(hp->arch, arch, sizeof hp->arch);
    hp->rope_theta = 10000.0f;
    hp->norm_eps = 1e-5f;
    kv_status st;
    if ((st = gguf_int(g, arch, "block_count", &hp->n_layer, err)) ||
        (st = gguf_int(g, arch, "embedding_length", &hp->n_embd, err)) ||
        (st = gguf_int(g, arch, "feed_forward_length", &hp->n_ff, err)) ||
        (st = gguf_int(g, arch, "attention.head_count", &hp->n_head, err)) ||
        (st = gguf_int(g, arch, "context_length", &hp->n_ctx_train, err)) ||
        (st = gguf_int(g, arch, "vocab_size", &hp->n_vocab, err)) ||
        (st = gguf_float(g, arch, "rope.freq_base", &hp->rope_theta, err)) ||
        (st = gguf_float(g, arch, "attention.layer_norm_rms_epsilon", &hp->norm_eps, err)))
        return st;
    hp->n_head_kv = hp->n_head;
    if ((st = gguf_int(g, arch, "attention.head_count_kv", &hp->n_head_kv, err))) return st;
    if (hp->n_head) hp->head_dim = hp->n_embd / hp->n_head;
    if ((st = gguf_int(g, arch, "attention.key_length", &hp->head_dim, err))) return st;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (kv_gguf_find(g, key)) {
        const char *type;
        if ((st = kv_gguf_get_str(g, key, &type, err))) return st;
        if (!strcmp(type, "linear")) hp->rope_scaling = KV_ROPE_SCALING_LINEAR;
        else if (strcmp(type, "none")) { /* yarn, longrope...: running without them would silently be wrong */
            kv_fail(err, KV_EUNSUPPORTED, "metadata %s = \"%s\": rope scaling type not supported (none, linear)", key,
                    type);
            kv_error_context(err, kv_gguf_path(g), (int64_t)kv_gguf_find(g, key)->offset, NULL);
            return KV_EUNSUPPORTED;
        }
        if ((st = gguf_float(g, arch, "rope.scaling.factor", &hp->rope_factor, err))) return st;
        if ((st = gguf_int(g, arch, "rope.scaling.original_context_length", &hp->rope_orig_ctx, err))) return st;
    }
    kv_gguf_value toks;
    if (!hp->n_vocab && kv_gguf_find(g, "tokenizer.ggml.tokens") && !kv_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, NULL))
        hp->n_vocab = toks.n > INT32_MAX ? INT32_MAX : (int32_t)toks.n;
    const kv_gguf_tensor *emb = kv_gguf_find_tensor(g, "token_embd.weight");
    if (!hp->n_vocab && emb && emb->n_dims == 2) hp->n_vocab = (int32_t)emb->shape[0];
    hp->tie_embeddings = kv_gguf_n_tensors(g) > 0 && !kv_gguf_find_tensor(g, "output.weight");
    hp->attn_bias = kv_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL || !strcmp(arch, "qwen2");
    hp->bos_id = hp->eos_id = -1;
    int64_t id;
    if (kv_gguf_find(g, "tokenizer.ggml.bos_token_id") && !kv_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &id, NULL) &&
        id >= 0 && id <= INT32_MAX)
        hp->bos_id = (int32_t)id;
    if (kv_gguf_find(g, "tokenizer.ggml.eos_token_id") && !kv_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &id, NULL) &&
        id >= 0 && id <= INT32_MAX)
        hp->eos_id = (int32_t)id;
    return KV_OK;
}

/* A Llama-family GGUF with weights needs the sizes the q/k un-permutation and shape checks rely on. */
static kv_status gguf_check_hparams(const kv_model_file *mf, kv_error *err) {
    const kv_hparams *hp = &mf->hp;
    const struct { const char *key; int32_t v; } need[] = {
        {"block_count", hp->n_layer}, {"embedding_length", hp->n_embd}, {"feed_forward_length", hp->n_ff},
        {"attention.head_count", hp->n_head}, {"attention.head_count_kv", hp->n_head_kv},
    };
    for (size_t i = 0; i < KV_ARRAY_LEN(need); i++)
        if (need[i].v <= 0) {
            kv_fail(err, KV_EFORMAT, "metadata %s.%s is missing or zero", hp->arch, need[i].key);
            kv_error_context(err, mf->path, -1, NULL);
            return KV_EFORMAT;
        }
    if (hp->head_dim <= 0 || hp->head_dim % 2 || hp->n_head % hp->n_head_kv) {
        kv_fail(err, KV_EFORMAT, "inconsistent attention metadata: %d heads, %d kv heads, head size %d", hp->n_head,
                hp->n_head_kv, hp->head_dim);
        kv_error_context(err, mf->path, -1, NULL);
        return KV_EFORMAT;
    }
    return KV_OK;
}

/* llama.cpp permutes q/k rows (weights and biases) of arch "llama" only; qwen2 keeps HF order. */
static int gguf_needs_unpermute(const kv_hparams *hp, const char *name, int *n_head) {
    if (strcmp(hp->arch, "llama") || strncmp(name, "blk.", 4)) return 0;
    const char *rest = strchr(name + 4, '.');
    if (!rest) return 0;
    rest++;
    if (!strcmp(rest, "attn_q.weight") || !strcmp(rest, "attn_q.bias")) { *n_head = hp->n_head; return 1; }
    if (!strcmp(rest, "attn_k.weight") || !strcmp(rest, "attn_k.bias")) { *n_head = hp->n_head_kv; return 1; }
    return 0;
}

/* A weight stored under KV_TYPE_ROTATED (docs/FORMAT.md "1032") holds the rows of the ggml format its
 * kvant.tensor.<name>.format names; kvant reads it as that type and the forward pass applies the rotation its
 * kvant.transform.<name>.rht_block / rht_seed record. Without that record the weight would run unrotated. */
static kv_status rotated_ggml_type(const kv_model_file *mf, const kv_gguf *g, const kv_gguf_tensor *gt, uint32_t *type,
                                   kv_error *err) {
    char key[256];
    snprintf(key, sizeof key, "kvant.tensor.%s.format", gt->name);
    const char *name = kv_model_meta_string(mf, key);
    kv_format f;
    kv_status st = name ? kv_format_get(name, &f, err) : kv_fail(err, KV_EFORMAT, "rotated-weight type %u without "
                                                                 "metadata %s", KV_TYPE_ROTATED, key);
    snprintf(key, sizeof key, KV_META_RHT_BLOCK_FMT, gt->name);
    if (st == KV_OK && !kv_gguf_find(g, key))
        st = kv_fail(err, KV_EFORMAT, "rotated-weight type %u without its rotation (metadata %s)", KV_TYPE_ROTATED, key);
    if (st != KV_OK) {
        kv_error_context(err, mf->path, (int64_t)gt->info_offset, gt->name);
        return st;
    }
    *type = f.type;
    return KV_OK;
}

static kv_status kv_gguf_model_open(kv_model_file *mf, const char *path, kv_error *err) {
    kv_gguf *g;
    kv_status st = kv_gguf_open(path, &g, err);
    if (st) return st;
    mf->gguf = g;
    if ((st = gguf_hparams(mf, g, err))) return st;
    if (kv_gguf_find(g, "tokenizer.ggml.model")) {
        mf->tok = KV_TOKSRC_GGUF;
        kv_strlcpy(mf->tok_path, path, sizeof mf->tok_path);
    }
    if (mf->has_hparams && kv_gguf_n_tensors(g) > 0 && is_llama_family(mf->hp.arch) && (st = gguf_check_hparams(mf, err)))
        return st;
    uint64_t base = kv_gguf_data_offset(g);
    for (int64_t i = 0; i < kv_gguf_n_tensors(g); i++) {
        const kv_gguf_tensor *gt = kv_gguf_tensor_at(g, i);
        kv_tensor *t = kv_mf_add_tensor(mf, err);
        if (!t) return KV_ENOMEM;
        kv_strlcpy(t->name, gt->name, sizeof t->name);
        kv_strlcpy(t->src_name, gt->name, sizeof t->src_name);
        t->n_dims = gt->n_dims;
        for (int d = 0; d < 4; d++) t->shape[d] = d < gt->n_dims ? gt->shape[d] : 1;
        t->type = gt->type;
        if (t->type == KV_TYPE_ROTATED && (st = rotated_ggml_type(mf, g, gt, &t->type, err)) != KV_OK) return st;
        t->offset = base + gt->offset;
        t->nbytes = gt->nbytes;
        t->data = gt->data;
        int n_head;
        /* entropy-coded tensors are stored in kvant's row order (their rows have no fixed size) */
        if (mf->has_hparams && t->type != KV_TYPE_ECW && gguf_needs_unpermute(&mf->hp, t->name, &n_head) &&
            t->n_dims >= 1 && t->shape[0] > 0) {
            if (t->shape[0] != (int64_t)n_head * mf->hp.head_dim || t->nbytes % (uint64_t)t->shape[0]) {
                kv_fail(err, KV_EFORMAT, "%lld rows do not match %d heads of %d", (long long)t->shape[0], n_head,
                        mf->hp.head_dim);
                kv_error_context(err, path, (int64_t)gt->info_offset, t->name);
                return KV_EFORMAT;
            }
            /* matrices are un-permuted row by row as they are read (a whole-model copy here would be 1.3 GB at
             * 8B); a bias has no rows to map and is copied */
            if (t->n_dims == 2) {
                t->qk_heads = n_head;
                continue;
            }
            void *buf = kv_mf_alloc(mf, t->nbytes, err);
            if (!buf) return KV_ENOMEM;
            st = kv_permute_qk_from_gguf(t->data, buf, t->shape[0], (size_t)(t->nbytes / (uint64_t)t->shape[0]), n_head, err);
            if (st) {
                kv_error_context(err, path, (int64_t)gt->info_offset, t->name);
                return st;
            }
            t->data = buf;
        }
    }
    if (mf->has_hparams && mf->n_tensors > 0 && is_llama_family(mf->hp.arch)) return kv_mf_check_shapes(mf, err);
    return KV_OK;
}

static void kv_gguf_model_close(kv_model_file *mf) {
    kv_gguf_close(mf->gguf);
    mf->gguf = NULL;
}

static const char *kv_gguf_model_meta_string(const kv_model_file *mf, const char *key) {
    const kv_gguf_value *v = kv_gguf_find(mf->gguf, key);
    const char *s = NULL;
    if (!v || v->type != KV_GGUF_STRING || kv_gguf_get_str(mf->gguf, key, &s, NULL)) return NULL;
    return s;
}

/* An entropy-coded tensor of a model file decoded to fp32, errors located in the file (the codec:
 * src/formats/ecw.c). */
kv_status kv_ecw_tensor_to_f32(const kv_model_file *mf, const kv_tensor *t, float *dst, kv_pool *pool,
                               kv_error *err) {
    const char *name = t->name[0] ? t->name : t->src_name;
    kv_error sub;
    kv_error_clear(&sub);
    kv_status st;
    if (t->type != KV_TYPE_ECW || t->n_dims != 2)
        st = kv_fail(&sub, KV_EINVAL, "not a 2-D entropy-coded (ecw) tensor");
    else
        st = kv_ecw_decode_f32(t->data, (size_t)t->nbytes, t->shape[0], t->shape[1], dst, pool, &sub);
    if (st == KV_OK) return KV_OK;
    kv_fail(err, st, "%s", sub.message);
    kv_error_context(err, mf ? kv_model_path(mf) : NULL, (int64_t)t->offset + (sub.offset >= 0 ? sub.offset : 0), name);
    return st;
}
