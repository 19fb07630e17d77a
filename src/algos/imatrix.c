/* imatrix.c — importance matrices: per linear weight, the mean of x² of every input column over calibration
 * tokens, collected through the forward pass's linear-input hook, and llama.cpp's two file formats.
 * Source: llama.cpp tools/imatrix/imatrix.cpp (IMatrixCollector::collect_imatrix, save_imatrix_legacy,
 * save_imatrix, load_imatrix) and tools/quantize/quantize.cpp (load_legacy_imatrix: values / ncall).
 *   legacy .dat: int32 n_entries; per entry: int32 len, name[len], int32 ncall, int32 nval,
 *                float values[nval] (= mean x² · ncall); then int32 last_chunk, int32 len, dataset[len].
 *   GGUF:        general.type = "imatrix", imatrix.datasets (string array), imatrix.chunk_count (u32),
 *                imatrix.chunk_size (u32); tensors NAME.in_sum2 (f32, Σx², ne = {nval/nmat, nmat}) and
 *                NAME.counts (f32, tokens per matrix, ne = {1, nmat}); mean = in_sum2 / counts.
 * docs/imatrix.md. */
#include "algos/quantize.h"
#include <math.h>
#include <stdio.h>

struct kv_imatrix {
    int64_t n, cap;
    kv_imatrix_entry *e;
    int32_t chunks;
    int32_t chunk_size;
    char dataset[512];
};

kv_status kv_imatrix_create(kv_imatrix **out, kv_error *err) {
    *out = kv_calloc(1, sizeof **out, err);
    return *out ? KV_OK : KV_ENOMEM;
}

void kv_imatrix_free(kv_imatrix *im) {
    if (!im) return;
    for (int64_t i = 0; i < im->n; i++) {
        free(im->e[i].values);
        free(im->e[i].sums);
    }
    free(im->e);
    free(im);
}

int64_t kv_imatrix_n_entries(const kv_imatrix *im) { return im ? im->n : 0; }
const char *kv_imatrix_entry_name(const kv_imatrix *im, int64_t i) {
    return im && i >= 0 && i < im->n ? im->e[i].name : NULL;
}
int32_t kv_imatrix_chunks(const kv_imatrix *im) { return im ? im->chunks : 0; }
void kv_imatrix_end_chunk(kv_imatrix *im) { im->chunks++; }
void kv_imatrix_set_dataset(kv_imatrix *im, const char *name) { kv_strlcpy(im->dataset, name ? name : "", sizeof im->dataset); }

static kv_imatrix_entry *find_entry(const kv_imatrix *im, const char *name) {
    for (int64_t i = 0; i < im->n; i++)
        if (!strcmp(im->e[i].name, name)) return &im->e[i];
    return NULL;
}

const float *kv_imatrix_find(const kv_imatrix *im, const char *tensor_name, int64_t *nval) {
    kv_imatrix_entry *e = im ? find_entry(im, tensor_name) : NULL;
    if (!e) return NULL;
    if (nval) *nval = e->nval;
    return e->values;
}

static kv_status add_entry(kv_imatrix *im, const char *name, int64_t nval, kv_imatrix_entry **out, kv_error *err) {
    if (strlen(name) >= sizeof im->e[0].name) return kv_fail(err, KV_EINVAL, "imatrix: tensor name too long: '%.60s'", name);
    if (nval <= 0 || nval > (1 << 30)) return kv_fail(err, KV_ERANGE, "imatrix: '%s' has %lld values", name, (long long)nval);
    if (im->n == im->cap) {
        int64_t cap = im->cap ? im->cap * 2 : 64;
        kv_imatrix_entry *grown = realloc(im->e, (size_t)cap * sizeof *grown);
        if (!grown) return kv_fail(err, KV_ENOMEM, "imatrix: out of memory");
        im->e = grown;
        im->cap = cap;
    }
    kv_imatrix_entry *e = &im->e[im->n];
    memset(e, 0, sizeof *e);
    kv_strlcpy(e->name, name, sizeof e->name);
    e->nval = nval;
    e->values = kv_calloc((size_t)nval, sizeof(float), err);
    if (!e->values) return KV_ENOMEM;
    im->n++;
    *out = e;
    return KV_OK;
}

kv_status kv_imatrix_accumulate(kv_imatrix *im, const char *tensor_name, const float *x, int64_t ntok,
                                int64_t dim, kv_error *err) {
    kv_imatrix_entry *e = find_entry(im, tensor_name);
    if (!e) {
        kv_status st = add_entry(im, tensor_name, dim, &e, err);
        if (st != KV_OK) return st;
    }
    if (e->nval != dim)
        return kv_fail(err, KV_EINVAL, "imatrix: '%s' has %lld columns, input has %lld", tensor_name,
                       (long long)e->nval, (long long)dim);
    if (!e->sums) {
        e->sums = kv_calloc((size_t)dim, sizeof(double), err);
        if (!e->sums) return KV_ENOMEM;
        /* continue from loaded means: they stand for e->count tokens (0 for a fresh entry) */
        for (int64_t j = 0; j < dim; j++) e->sums[j] = (double)e->values[j] * (double)e->count;
    }
    for (int64_t t = 0; t < ntok; t++) {
        const float *row = x + t * dim;
        for (int64_t j = 0; j < dim; j++) e->sums[j] += (double)row[j] * row[j];
    }
    e->count += ntok;
    for (int64_t j = 0; j < dim; j++) e->values[j] = (float)(e->sums[j] / (double)e->count);
    e->ncall++;
    return KV_OK;
}

/* ---- legacy .dat ---- */

static kv_status put(kv_outfile *f, const void *p, size_t n, kv_error *err) { return kv_outfile_write(f, p, n, err); }

static kv_status save_legacy(const kv_imatrix *im, const char *path, kv_error *err) {
    kv_outfile *f = NULL;
    kv_status st = kv_outfile_open(path, &f, err);
    if (st != KV_OK) return st;
    int32_t n = (int32_t)im->n;
    st = put(f, &n, 4, err);
    float *tmp = NULL;
    for (int64_t i = 0; st == KV_OK && i < im->n; i++) {
        const kv_imatrix_entry *e = &im->e[i];
        int32_t len = (int32_t)strlen(e->name), nval = (int32_t)e->nval;
        int32_t ncall = im->chunks > 0 ? im->chunks : (e->ncall > 0 ? e->ncall : 1);
        free(tmp);
        tmp = kv_malloc((size_t)nval * sizeof(float), err);
        if (!tmp) {
            st = KV_ENOMEM;
            break;
        }
        /* llama.cpp stores mean·ncall and quantize divides by ncall again */
        for (int32_t j = 0; j < nval; j++) tmp[j] = e->values[j] * (float)ncall;
        if ((st = put(f, &len, 4, err)) != KV_OK || (st = put(f, e->name, (size_t)len, err)) != KV_OK ||
            (st = put(f, &ncall, 4, err)) != KV_OK || (st = put(f, &nval, 4, err)) != KV_OK ||
            (st = put(f, tmp, (size_t)nval * 4, err)) != KV_OK)
            break;
    }
    free(tmp);
    if (st == KV_OK) {
        int32_t last = im->chunks, len = (int32_t)strlen(im->dataset);
        if ((st = put(f, &last, 4, err)) == KV_OK && (st = put(f, &len, 4, err)) == KV_OK)
            st = put(f, im->dataset, (size_t)len, err);
    }
    if (st != KV_OK) {
        kv_outfile_abort(f);
        kv_error_context(err, path, -1, NULL);
        return st;
    }
    return kv_outfile_commit(f, err);
}

typedef struct reader {
    const uint8_t *p;
    size_t size, pos;
    const char *path;
} reader;

static kv_status rd_i32(reader *r, int32_t *v, const char *what, kv_error *err) {
    if (r->size - r->pos < 4) {
        kv_fail(err, KV_EFORMAT, "imatrix: truncated file reading %s", what);
        kv_error_context(err, r->path, (int64_t)r->pos, NULL);
        return KV_EFORMAT;
    }
    *v = (int32_t)kv_rd_u32(r->p + r->pos);
    r->pos += 4;
    return KV_OK;
}

static kv_status load_legacy(const kv_mapped *m, kv_imatrix *im, kv_error *err) {
    reader r = {m->data, m->size, 0, m->path};
    int32_t n;
    kv_status st = rd_i32(&r, &n, "the entry count", err);
    if (st != KV_OK) return st;
    if (n < 0 || (size_t)n > m->size / 12) {
        kv_fail(err, KV_EFORMAT, "imatrix: bad entry count %d", n);
        kv_error_context(err, m->path, 0, NULL);
        return KV_EFORMAT;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t len, ncall, nval;
        char name[160];
        size_t at = r.pos;
        if ((st = rd_i32(&r, &len, "a name length", err)) != KV_OK) return st;
        if (len <= 0 || len >= (int32_t)sizeof name || (size_t)len > r.size - r.pos) {
            kv_fail(err, KV_EFORMAT, "imatrix: entry %d: bad name length %d", i, len);
            kv_error_context(err, m->path, (int64_t)at, NULL);
            return KV_EFORMAT;
        }
        if (memchr(r.p + r.pos, 0, (size_t)len)) { /* would be read as another (or an empty) name */
            kv_fail(err, KV_EFORMAT, "imatrix: entry %d: the name holds a NUL byte", i);
            kv_error_context(err, m->path, (int64_t)at + 4, NULL);
            return KV_EFORMAT;
        }
        memcpy(name, r.p + r.pos, (size_t)len);
        name[len] = 0;
        r.pos += (size_t)len;
        if ((st = rd_i32(&r, &ncall, "ncall", err)) != KV_OK || (st = rd_i32(&r, &nval, "nval", err)) != KV_OK) {
            kv_error_context(err, NULL, -1, name);
            return st;
        }
        if (nval <= 0 || (size_t)nval > (r.size - r.pos) / 4) {
            kv_fail(err, KV_EFORMAT, "imatrix: bad value count %d (file has %zu bytes left)", nval, r.size - r.pos);
            kv_error_context(err, m->path, (int64_t)r.pos - 4, name);
            return KV_EFORMAT;
        }
        if (find_entry(im, name)) {
            kv_fail(err, KV_EFORMAT, "imatrix: duplicate entry");
            kv_error_context(err, m->path, (int64_t)at, name);
            return KV_EFORMAT;
        }
        kv_imatrix_entry *e;
        if ((st = add_entry(im, name, nval, &e, err)) != KV_OK) return st;
        for (int32_t j = 0; j < nval; j++) {
            float v = kv_rd_f32(r.p + r.pos + 4 * (size_t)j);
            if (!isfinite(v) || v < 0) {
                kv_fail(err, KV_EFORMAT, "imatrix: value %d is %g (must be finite and >= 0)", j, (double)v);
                kv_error_context(err, m->path, (int64_t)(r.pos + 4 * (size_t)j), name);
                return KV_EFORMAT;
            }
            e->values[j] = ncall > 0 ? v / (float)ncall : v;
        }
        e->ncall = ncall;
        r.pos += 4 * (size_t)nval;
    }
    /* optional trailer (llama.cpp's save_imatrix_legacy): int32 last chunk, int32 length, the dataset name, and
     * then the end of the file. Anything else means the entry count is wrong (entries would be dropped). */
    size_t left = r.size - r.pos;
    if (left == 0) return KV_OK;
    int32_t last = 0, len = -1;
    if (left >= 8) {
        last = (int32_t)kv_rd_u32(r.p + r.pos);
        len = (int32_t)kv_rd_u32(r.p + r.pos + 4);
    }
    if (left < 8 || len < 0 || (size_t)len != left - 8 || last < 0) {
        kv_fail(err, KV_EFORMAT,
                "imatrix: %zu bytes after the %d entries the header counts are not a trailer (int32 chunk count, "
                "int32 dataset name length, the name): the entry count is wrong or the file is damaged",
                left, n);
        kv_error_context(err, m->path, (int64_t)r.pos, NULL);
        return KV_EFORMAT;
    }
    im->chunks = last;
    size_t l = KV_MIN((size_t)len, sizeof im->dataset - 1);
    memcpy(im->dataset, r.p + r.pos + 8, l);
    im->dataset[l] = 0;
    return KV_OK;
}

/* ---- GGUF imatrix ---- */

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static kv_status load_gguf(const char *path, kv_imatrix *im, kv_error *err) {
    kv_gguf *g = NULL;
    kv_status st = kv_gguf_open(path, &g, err);
    if (st != KV_OK) return st;
    const char *type = NULL;
    if (kv_gguf_get_str(g, "general.type", &type, NULL) != KV_OK || strcmp(type, "imatrix")) {
        /* the message first: type lives in g */
        kv_fail(err, KV_EFORMAT, "GGUF file is not an imatrix (general.type is '%s')", type ? type : "absent");
        kv_error_context(err, path, -1, NULL);
        kv_gguf_close(g);
        return KV_EFORMAT;
    }
    uint32_t chunks = 0, chunk_size = 0;
    kv_gguf_get_u32(g, "imatrix.chunk_count", &chunks, NULL);
    kv_gguf_get_u32(g, "imatrix.chunk_size", &chunk_size, NULL);
    im->chunks = (int32_t)chunks;
    im->chunk_size = (int32_t)chunk_size;
    for (int64_t i = 0; st == KV_OK && i < kv_gguf_n_tensors(g); i++) {
        const kv_gguf_tensor *t = kv_gguf_tensor_at(g, i);
        if (!ends_with(t->name, ".in_sum2")) continue;
        char name[160], cname[180];
        size_t base = strlen(t->name) - strlen(".in_sum2");
        if (base == 0 || base >= sizeof name) {
            st = kv_fail(err, KV_EFORMAT, "imatrix: tensor '%.100s' does not name a weight (%zu bytes before .in_sum2)",
                         t->name, base);
            kv_error_context(err, path, (int64_t)t->info_offset, NULL);
            break;
        }
        memcpy(name, t->name, base);
        name[base] = 0;
        snprintf(cname, sizeof cname, "%s.counts", name);
        const kv_gguf_tensor *c = kv_gguf_find_tensor(g, cname);
        if (t->type != KV_TYPE_F32 || !c || c->type != KV_TYPE_F32) {
            st = kv_fail(err, KV_EFORMAT, "imatrix: '%s' needs f32 in_sum2 and counts tensors", name);
            kv_error_context(err, path, (int64_t)t->info_offset, name);
            break;
        }
        int64_t nval = 1, nmat = 1;
        for (int d = 0; d < t->n_dims; d++) nval *= t->shape[d];
        for (int d = 0; d < c->n_dims; d++) nmat *= c->shape[d];
        if (nmat <= 0 || nval <= 0 || nval % nmat) {
            st = kv_fail(err, KV_EFORMAT, "imatrix: '%s': %lld sums for %lld matrices", name, (long long)nval, (long long)nmat);
            kv_error_context(err, path, (int64_t)t->info_offset, name);
            break;
        }
        kv_imatrix_entry *e;
        if ((st = add_entry(im, name, nval, &e, err)) != KV_OK) break;
        for (int64_t j = 0; j < nval && st == KV_OK; j++) {
            const int64_t k = j / (nval / nmat);
            float s = kv_rd_f32((const uint8_t *)t->data + 4 * j);
            float cnt = kv_rd_f32((const uint8_t *)c->data + 4 * k);
            e->values[j] = cnt > 0 ? s / cnt : 1.0f; /* llama.cpp: 1 for matrices without data */
            /* the means go to the quantizers as importance weights: finite and >= 0, like the .dat reader's */
            if (!(isfinite(cnt) && cnt >= 0)) {
                st = kv_fail(err, KV_EFORMAT, "imatrix: count %lld of '%s' is %g (must be finite and >= 0)",
                             (long long)k, name, (double)cnt);
                kv_error_context(err, path, (int64_t)(kv_gguf_data_offset(g) + c->offset + 4 * (uint64_t)k), name);
            } else if (!(isfinite(e->values[j]) && e->values[j] >= 0)) {
                st = kv_fail(err, KV_EFORMAT, "imatrix: sum %lld of '%s' is %g for a count of %g (the mean must be "
                             "finite and >= 0)", (long long)j, name, (double)s, (double)cnt);
                kv_error_context(err, path, (int64_t)(kv_gguf_data_offset(g) + t->offset + 4 * (uint64_t)j), name);
            }
        }
        if (st != KV_OK) break;
        e->ncall = (int32_t)chunks;
    }
    kv_gguf_close(g);
    return st;
}

kv_status kv_imatrix_load(const char *path, kv_imatrix **out, kv_error *err) {
    *out = NULL;
    kv_mapped m;
    kv_status st = kv_map_file(path, &m, err);
    if (st != KV_OK) return st;
    int is_gguf = m.size >= 4 && !memcmp(m.data, "GGUF", 4);
    kv_imatrix *im = NULL;
    if ((st = kv_imatrix_create(&im, err)) != KV_OK) {
        kv_unmap_file(&m);
        return st;
    }
    if (is_gguf) {
        kv_unmap_file(&m);
        st = load_gguf(path, im, err);
    } else {
        st = load_legacy(&m, im, err);
        kv_unmap_file(&m);
    }
    if (st == KV_OK && im->n == 0) {
        st = kv_fail(err, KV_EFORMAT, "imatrix has no entries");
        kv_error_context(err, path, -1, NULL);
    }
    if (st != KV_OK) {
        kv_imatrix_free(im);
        return st;
    }
    *out = im;
    return KV_OK;
}

/* llama.cpp's GGUF imatrix: raw sums and token counts (one matrix per tensor here). */
static kv_status save_gguf(const kv_imatrix *im, const char *path, kv_error *err) {
    kv_gguf_writer *w = NULL;
    kv_status st = kv_gguf_writer_create(&w, err);
    if (st != KV_OK) return st;
    float *buf = kv_malloc((size_t)(2 * im->n) * sizeof(float), err);
    float **sums = kv_calloc((size_t)im->n, sizeof(float *), err);
    if (!buf || !sums) st = KV_ENOMEM;
    const char *ds = im->dataset;
    if (st == KV_OK) st = kv_gguf_writer_add_str(w, "general.type", "imatrix", err);
    if (st == KV_OK) st = kv_gguf_writer_add_arr_str(w, "imatrix.datasets", &ds, NULL, 1, err);
    if (st == KV_OK) st = kv_gguf_writer_add_u32(w, "imatrix.chunk_count", (uint32_t)im->chunks, err);
    if (st == KV_OK) st = kv_gguf_writer_add_u32(w, "imatrix.chunk_size", (uint32_t)im->chunk_size, err);
    for (int64_t i = 0; st == KV_OK && i < im->n; i++) {
        const kv_imatrix_entry *e = &im->e[i];
        /* tokens behind the means: counted when collected, else llama.cpp's legacy convention ncall·chunk */
        double count = e->count > 0 ? (double)e->count
                                    : (double)KV_MAX(e->ncall, 1) * (double)KV_MAX(im->chunk_size, 1);
        sums[i] = kv_malloc((size_t)e->nval * sizeof(float), err);
        if (!sums[i]) { st = KV_ENOMEM; break; }
        for (int64_t j = 0; j < e->nval; j++) sums[i][j] = (float)((double)e->values[j] * count);
        buf[i] = (float)count;
        char name[200];
        int64_t shape_s[2] = {1, e->nval}, shape_c[2] = {1, 1};
        snprintf(name, sizeof name, "%s.in_sum2", e->name);
        st = kv_gguf_writer_add_tensor(w, name, 2, shape_s, KV_TYPE_F32, sums[i], err);
        snprintf(name, sizeof name, "%s.counts", e->name);
        if (st == KV_OK) st = kv_gguf_writer_add_tensor(w, name, 2, shape_c, KV_TYPE_F32, &buf[i], err);
    }
    if (st == KV_OK) st = kv_gguf_writer_write(w, path, NULL, err);
    for (int64_t i = 0; sums && i < im->n; i++) free(sums[i]);
    free(sums);
    free(buf);
    kv_gguf_writer_free(w);
    return st;
}

kv_status kv_imatrix_save(const kv_imatrix *im, const char *path, kv_error *err) {
    if (!im || im->n == 0) return kv_fail(err, KV_EINVAL, "imatrix: nothing to save");
    return ends_with(path, ".gguf") ? save_gguf(im, path, err) : save_legacy(im, path, err);
}

/* ---- collection through the forward hooks ---- */

typedef struct collect_ctx {
    kv_imatrix *im;
    const kv_model *m;
    float *buf;
    int64_t cap;
    kv_status st;
    kv_error *err;
} collect_ctx;

/* A weight with an online rotation sees R·x: accumulate that, so the importance is in the stored basis. */
static const float *rotated_input(collect_ctx *c, int layer, kv_linear_id id, const float *x, int64_t ntok, int64_t dim) {
    const kv_weight *w = kv_model_weight(c->m, layer, id);
    if (!w || w->rht_block <= 0 || !w->rht_signs || w->cols != dim) return x;
    if (c->cap < ntok * dim) {
        free(c->buf);
        c->buf = kv_malloc((size_t)(ntok * dim) * sizeof(float), c->err);
        c->cap = c->buf ? ntok * dim : 0;
        if (!c->buf) {
            c->st = KV_ENOMEM;
            return NULL;
        }
    }
    memcpy(c->buf, x, (size_t)(ntok * dim) * sizeof(float));
    for (int64_t t = 0; t < ntok; t++) kv_rht_apply(c->buf + t * dim, dim, w->rht_block, w->rht_signs);
    return c->buf;
}

static void on_input(void *user, int layer, kv_linear_id which, const float *x, int64_t ntok, int64_t dim) {
    collect_ctx *c = user;
    if (c->st != KV_OK) return;
    static const kv_linear_id q_ids[] = {KV_LINEAR_Q, KV_LINEAR_K, KV_LINEAR_V};
    static const kv_linear_id ffn_ids[] = {KV_LINEAR_GATE, KV_LINEAR_UP};
    const kv_linear_id *ids = &which;
    int count = 1;
    if (which == KV_LINEAR_Q) ids = q_ids, count = 3;
    else if (which == KV_LINEAR_GATE) ids = ffn_ids, count = 2;
    else if (which != KV_LINEAR_O && which != KV_LINEAR_DOWN && which != KV_LINEAR_HEAD) return;
    char name[160];
    for (int i = 0; i < count && c->st == KV_OK; i++) {
        if (ids[i] == KV_LINEAR_HEAD) snprintf(name, sizeof name, "output.weight");
        else snprintf(name, sizeof name, "blk.%d.%s.weight", layer, kv_linear_name(ids[i]));
        const float *in = rotated_input(c, layer, ids[i], x, ntok, dim);
        if (in) c->st = kv_imatrix_accumulate(c->im, name, in, ntok, dim, c->err);
    }
}

kv_status kv_imatrix_collect(const kv_model *m, const int32_t *ids, int64_t n_ids, int32_t ctx, kv_pool *pool,
                             kv_imatrix *im, kv_progress *progress, kv_error *err) {
    if (ctx <= 1) return kv_fail(err, KV_EINVAL, "imatrix: context %d is too small", ctx);
    int64_t nwin = n_ids / ctx;
    if (nwin < 1)
        return kv_fail(err, KV_EINVAL, "imatrix: calibration text has %lld tokens, fewer than one window of %d",
                       (long long)n_ids, ctx);
    kv_context *kc = NULL;
    kv_status st = kv_context_create(m, ctx, &kc, err);
    if (st != KV_OK) return st;
    collect_ctx cc = {im, m, NULL, 0, KV_OK, err};
    kv_forward_hooks hooks = {on_input, &cc};
    kv_context_set_hooks(kc, &hooks);
    im->chunk_size = ctx;
    /* full logits so that the head's input reaches the hook for every token */
    float *logits = kv_malloc((size_t)ctx * (size_t)kv_model_get_hparams(m)->n_vocab * sizeof(float), err);
    if (!logits) st = KV_ENOMEM;
    for (int64_t w = 0; w < nwin && st == KV_OK; w++) {
        st = kv_forward(kc, ids + w * ctx, ctx, 0, logits, 0, pool, err);
        if (st == KV_OK) st = cc.st;
        kv_imatrix_end_chunk(im);
        if (progress) kv_progress_update(progress, w + 1);
    }
    free(logits);
    free(cc.buf);
    kv_context_free(kc);
    return st;
}
