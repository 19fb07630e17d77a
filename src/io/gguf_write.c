/* gguf_write.c — GGUF v3 writer: metadata of every value type (arrays of strings, nested arrays), tensors
 * from memory or streamed row by row, laid out byte for byte as llama.cpp writes it.
 * Sources: llama.cpp ggml/src/gguf.cpp gguf_write_out (header, kv pairs, tensor infos, pad to alignment, each
 * tensor's data padded to alignment) and gguf-py GGUFWriter (same layout; offsets are the running sum of
 * padded sizes). docs/FORMAT.md "GGUF container". */
#include "io/gguf.h"
#include <inttypes.h>

typedef struct kv_gguf_buf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} kv_gguf_buf;

typedef struct kv_gguf_wtensor {
    char name[KV_GGUF_MAX_NAME + 1];
    int n_dims;
    int64_t shape[4];
    uint32_t type;
    uint64_t nbytes;
    size_t row_bytes;
    int64_t nrows;
    const void *data;
    kv_gguf_rows_fn fn;
    void *ctx;
    uint64_t offset;
} kv_gguf_wtensor;

typedef struct kv_gguf_open_arr {
    size_t count_pos;  /* where the element count goes in meta */
    uint64_t count;
    kv_gguf_vtype elem;
} kv_gguf_open_arr;

struct kv_gguf_writer {
    kv_gguf_buf meta;
    int64_t n_kv;
    char **keys;
    char **formats;           /* value of "kvant.tensor.<name>.format" keys, else NULL */
    size_t cap_keys;
    uint32_t alignment;
    kv_gguf_open_arr stack[KV_GGUF_MAX_ARRAY_DEPTH];
    int depth;
    kv_gguf_wtensor *tensors;
    int64_t n_tensors, cap_tensors;
};

/* ---- byte buffer -------------------------------------------------------------------------------- */

static void buf_put(kv_gguf_buf *b, const void *data, size_t n) {
    if (b->oom || n == 0) return;
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2) { b->oom = 1; return; }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void buf_u32(kv_gguf_buf *b, uint32_t v) { uint8_t t[4]; kv_wr_u32(t, v); buf_put(b, t, 4); }
static void buf_u64(kv_gguf_buf *b, uint64_t v) { uint8_t t[8]; kv_wr_u64(t, v); buf_put(b, t, 8); }
static void buf_str(kv_gguf_buf *b, const char *s, size_t n) { buf_u64(b, n); buf_put(b, s, n); }

static void buf_pad(kv_gguf_buf *b, uint32_t alignment) {
    static const uint8_t zeros[64] = {0};
    while (!b->oom && b->n % alignment) buf_put(b, zeros, KV_MIN(sizeof zeros, alignment - b->n % alignment));
}

/* ---- create / free ------------------------------------------------------------------------------ */

kv_status kv_gguf_writer_create(kv_gguf_writer **out, kv_error *err) {
    *out = kv_calloc(1, sizeof **out, err);
    if (!*out) return KV_ENOMEM;
    (*out)->alignment = KV_GGUF_DEFAULT_ALIGNMENT;
    return KV_OK;
}

void kv_gguf_writer_free(kv_gguf_writer *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) {
        free(w->keys[i]);
        free(w->formats[i]);
    }
    free(w->keys);
    free(w->formats);
    free(w->meta.p);
    free(w->tensors);
    free(w);
}

/* ---- metadata ----------------------------------------------------------------------------------- */

static kv_status check_oom(kv_gguf_writer *w, kv_error *err) {
    return w->meta.oom ? kv_fail(err, KV_ENOMEM, "out of memory building GGUF metadata") : KV_OK;
}

/* Starts a value of type t: at top level writes key + type (key must be new); inside an array checks the
 * element type and counts it. */
static kv_status begin_value(kv_gguf_writer *w, const char *key, kv_gguf_vtype t, kv_error *err) {
    if (w->depth > 0) {
        kv_gguf_open_arr *a = &w->stack[w->depth - 1];
        if (key) return kv_fail(err, KV_EINVAL, "GGUF writer: key '%s' given while an array is open", key);
        if (t != a->elem)
            return kv_fail(err, KV_EINVAL, "GGUF writer: %s element added to an array of %s", kv_gguf_vtype_name(t),
                           kv_gguf_vtype_name(a->elem));
        a->count++;
        return KV_OK;
    }
    if (!key) return kv_fail(err, KV_EINVAL, "GGUF writer: metadata key missing");
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return kv_fail(err, KV_EINVAL, "GGUF writer: duplicate metadata key '%s'", key);
    if (!strcmp(key, "general.alignment") && t != KV_GGUF_U32)
        return kv_fail(err, KV_EINVAL, "GGUF writer: general.alignment must be u32, not %s", kv_gguf_vtype_name(t));
    if ((size_t)w->n_kv == w->cap_keys) {
        size_t cap = w->cap_keys ? w->cap_keys * 2 : 32;
        char **k = realloc(w->keys, cap * sizeof *k);
        if (!k) return kv_fail(err, KV_ENOMEM, "out of memory");
        w->keys = k;
        char **fm = realloc(w->formats, cap * sizeof *fm);
        if (!fm) return kv_fail(err, KV_ENOMEM, "out of memory");
        w->formats = fm;
        w->cap_keys = cap;
    }
    size_t klen = strlen(key);
    char *copy = malloc(klen + 1);
    if (!copy) return kv_fail(err, KV_ENOMEM, "out of memory");
    memcpy(copy, key, klen + 1);
    w->formats[w->n_kv] = NULL;
    w->keys[w->n_kv++] = copy;
    buf_str(&w->meta, key, klen);
    buf_u32(&w->meta, (uint32_t)t);
    return KV_OK;
}

static kv_status add_scalar(kv_gguf_writer *w, const char *key, kv_gguf_vtype t, const void *v, kv_error *err) {
    kv_status st = begin_value(w, key, t, err);
    if (st) return st;
    buf_put(&w->meta, v, kv_gguf_vtype_size(t));
    return check_oom(w, err);
}

kv_status kv_gguf_writer_add_u8(kv_gguf_writer *w, const char *key, uint8_t v, kv_error *err) {
    return add_scalar(w, key, KV_GGUF_U8, &v, err);
}
kv_status kv_gguf_writer_add_i8(kv_gguf_writer *w, const char *key, int8_t v, kv_error *err) {
    return add_scalar(w, key, KV_GGUF_I8, &v, err);
}
kv_status kv_gguf_writer_add_u16(kv_gguf_writer *w, const char *key, uint16_t v, kv_error *err) {
    return add_scalar(w, key, KV_GGUF_U16, &v, err);
}
kv_status kv_gguf_writer_add_i16(kv_gguf_writer *w, const char *key, int16_t v, kv_error *err) {
    return add_scalar(w, key, KV_GGUF_I16, &v, err);
}
kv_status kv_gguf_writer_add_u32(kv_gguf_writer *w, const char *key, uint32_t v, kv_error *err) {
    if (w->depth == 0 && key && !strcmp(key, "general.alignment")) {
        if (v == 0 || (v & (v - 1)))
            return kv_fail(err, KV_EINVAL, "GGUF writer: general.alignment %u is not a nonzero power of two", v);
        kv_status st = add_scalar(w, key, KV_GGUF_U32, &v, err);
        if (!st) w->alignment = v;
        return st;
    }
    return add_scalar(w, key, KV_GGUF_U32, &v, err);
}
kv_status kv_gguf_writer_add_i32(kv_gguf_writer *w, const char *key, int32_t v, kv_error *err) {
    return add_scalar(w, key, KV_GGUF_I32, &v, err);
}
kv_status kv_gguf_writer_add_u64(kv_gguf_writer *w, const char *key, uint64_t v, kv_error *err) {
    return add_scalar(w, key, KV_GGUF_U64, &v, err);
}
kv_status kv_gguf_writer_add_i64(kv_gguf_writer *w, const char *key, int64_t v, kv_error *err) {
    return add_scalar(w, key, KV_GGUF_I64, &v, err);
}
kv_status kv_gguf_writer_add_f32(kv_gguf_writer *w, const char *key, float v, kv_error *err) {
    return add_scalar(w, key, KV_GGUF_F32, &v, err);
}
kv_status kv_gguf_writer_add_f64(kv_gguf_writer *w, const char *key, double v, kv_error *err) {
    return add_scalar(w, key, KV_GGUF_F64, &v, err);
}
kv_status kv_gguf_writer_add_bool(kv_gguf_writer *w, const char *key, int v, kv_error *err) {
    uint8_t b = v != 0;
    return add_scalar(w, key, KV_GGUF_BOOL, &b, err);
}

kv_status kv_gguf_writer_add_strn(kv_gguf_writer *w, const char *key, const char *s, size_t len, kv_error *err) {
    if (!s && len) return kv_fail(err, KV_EINVAL, "GGUF writer: NULL string");
    kv_status st = begin_value(w, key, KV_GGUF_STRING, err);
    if (st) return st;
    buf_str(&w->meta, s ? s : "", len);
    if (key && !strncmp(key, KV_GGUF_KVANT_FORMAT_PREFIX, strlen(KV_GGUF_KVANT_FORMAT_PREFIX))) {
        /* remembered so that add_tensor can size kvant-only tensor types */
        char *v = malloc(len + 1);
        if (!v) return kv_fail(err, KV_ENOMEM, "out of memory");
        memcpy(v, s ? s : "", len);
        v[len] = 0;
        w->formats[w->n_kv - 1] = v;
    }
    return check_oom(w, err);
}

/* The format name recorded for a kvant-only tensor type, or NULL. */
static const char *tensor_format(const kv_gguf_writer *w, const char *name) {
    char key[KV_GGUF_MAX_NAME + 64];
    snprintf(key, sizeof key, "%s%s%s", KV_GGUF_KVANT_FORMAT_PREFIX, name, KV_GGUF_KVANT_FORMAT_SUFFIX);
    for (int64_t i = 0; i < w->n_kv; i++)
        if (w->formats[i] && !strcmp(w->keys[i], key)) return w->formats[i];
    return NULL;
}

kv_status kv_gguf_writer_add_str(kv_gguf_writer *w, const char *key, const char *s, kv_error *err) {
    if (!s) return kv_fail(err, KV_EINVAL, "GGUF writer: NULL string");
    return kv_gguf_writer_add_strn(w, key, s, strlen(s), err);
}

kv_status kv_gguf_writer_begin_array(kv_gguf_writer *w, const char *key, kv_gguf_vtype elem_type, kv_error *err) {
    if ((unsigned)elem_type >= KV_GGUF_VTYPE_COUNT)
        return kv_fail(err, KV_EINVAL, "GGUF writer: unknown array element type %d", (int)elem_type);
    if (w->depth >= KV_GGUF_MAX_ARRAY_DEPTH)
        return kv_fail(err, KV_EINVAL, "GGUF writer: arrays nested deeper than %d", KV_GGUF_MAX_ARRAY_DEPTH);
    kv_status st = begin_value(w, key, KV_GGUF_ARRAY, err);
    if (st) return st;
    buf_u32(&w->meta, (uint32_t)elem_type);
    kv_gguf_open_arr *a = &w->stack[w->depth++];
    a->count_pos = w->meta.n;
    a->count = 0;
    a->elem = elem_type;
    buf_u64(&w->meta, 0); /* patched by end_array */
    return check_oom(w, err);
}

kv_status kv_gguf_writer_end_array(kv_gguf_writer *w, kv_error *err) {
    if (w->depth == 0) return kv_fail(err, KV_EINVAL, "GGUF writer: end_array without begin_array");
    kv_gguf_open_arr *a = &w->stack[--w->depth];
    kv_status st = check_oom(w, err);
    if (st) return st;
    kv_wr_u64(w->meta.p + a->count_pos, a->count);
    return KV_OK;
}

kv_status kv_gguf_writer_add_arr(kv_gguf_writer *w, const char *key, kv_gguf_vtype elem_type, const void *data,
                                 uint64_t n, kv_error *err) {
    if (elem_type == KV_GGUF_STRING) return kv_gguf_writer_add_arr_str(w, key, data, NULL, n, err);
    size_t esz = kv_gguf_vtype_size(elem_type);
    uint64_t bytes;
    if (!esz) return kv_fail(err, KV_EINVAL, "GGUF writer: add_arr of %s elements", kv_gguf_vtype_name(elem_type));
    if (!kv_mul_u64(n, esz, &bytes) || bytes > SIZE_MAX) return kv_fail(err, KV_ERANGE, "GGUF writer: array too large");
    if (n && !data) return kv_fail(err, KV_EINVAL, "GGUF writer: NULL array data");
    kv_status st = kv_gguf_writer_begin_array(w, key, elem_type, err);
    if (st) return st;
    buf_put(&w->meta, data, (size_t)bytes);
    w->stack[w->depth - 1].count = n;
    return kv_gguf_writer_end_array(w, err);
}

kv_status kv_gguf_writer_add_arr_str(kv_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens,
                                     uint64_t n, kv_error *err) {
    if (n && !strs) return kv_fail(err, KV_EINVAL, "GGUF writer: NULL string array");
    for (uint64_t i = 0; i < n; i++)
        if (!strs[i]) return kv_fail(err, KV_EINVAL, "GGUF writer: NULL string at index %" PRIu64, i);
    kv_status st = kv_gguf_writer_begin_array(w, key, KV_GGUF_STRING, err);
    if (st) return st;
    for (uint64_t i = 0; i < n; i++) buf_str(&w->meta, strs[i], lens ? lens[i] : strlen(strs[i]));
    w->stack[w->depth - 1].count = n;
    return kv_gguf_writer_end_array(w, err);
}

kv_status kv_gguf_writer_add_value(kv_gguf_writer *w, const char *key, const kv_gguf_value *v, kv_error *err) {
    if (!v || (unsigned)v->type >= KV_GGUF_VTYPE_COUNT) return kv_fail(err, KV_EINVAL, "GGUF writer: bad value");
    if (w->depth == 0 && key && !strcmp(key, "general.alignment") && v->type == KV_GGUF_U32)
        return kv_gguf_writer_add_u32(w, key, kv_rd_u32(v->data), err);
    if (v->type == KV_GGUF_STRING) return kv_gguf_writer_add_strn(w, key, v->data, (size_t)v->n, err);
    /* the serialized value starts before data by its length / element type + count fields */
    size_t head = v->type == KV_GGUF_STRING ? 8 : v->type == KV_GGUF_ARRAY ? 12 : 0;
    kv_status st = begin_value(w, key, v->type, err);
    if (st) return st;
    buf_put(&w->meta, (const uint8_t *)v->data - head, (size_t)v->raw_size);
    return check_oom(w, err);
}

/* ---- tensors ------------------------------------------------------------------------------------ */

static kv_status add_tensor(kv_gguf_writer *w, const char *name, int n_dims, const int64_t *shape, uint32_t type,
                            const void *data, kv_gguf_rows_fn fn, void *ctx, const uint64_t *var_nbytes,
                            kv_error *err) {
    kv_error_clear(err); /* the tensor context below must not be a previous call's */
    if (!name) return kv_fail(err, KV_EINVAL, "GGUF writer: tensor name missing");
    size_t nlen = strlen(name);
    if (nlen > KV_GGUF_MAX_NAME) {
        kv_fail(err, KV_EINVAL, "tensor name of %zu bytes is too long for GGUF (max %d)", nlen, KV_GGUF_MAX_NAME);
        kv_error_context(err, NULL, -1, name);
        return KV_EINVAL;
    }
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name)) {
            kv_fail(err, KV_EINVAL, "GGUF writer: duplicate tensor name");
            kv_error_context(err, NULL, -1, name);
            return KV_EINVAL;
        }
    if (n_dims < 0 || n_dims > 4 || (n_dims && !shape)) {
        kv_fail(err, KV_EINVAL, "GGUF writer: %d dimensions (at most 4)", n_dims);
        kv_error_context(err, NULL, -1, name);
        return KV_EINVAL;
    }
    kv_gguf_wtensor t;
    memset(&t, 0, sizeof t);
    memcpy(t.name, name, nlen + 1);
    t.n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) t.shape[d] = shape[d];
    t.type = type;
    const char *fmt = NULL;
    if (var_nbytes) {
        t.nbytes = *var_nbytes; /* a variable-size type (KV_TYPE_ECW): the caller recorded the size */
    } else if (type >= KV_TYPE_KVANT_BASE && type <= KV_TYPE_KVANT_MAX && !(fmt = tensor_format(w, name))) {
        kv_fail(err, KV_EINVAL, "kvant-only type %u needs the metadata %s%s%s (a string) added first", type,
                KV_GGUF_KVANT_FORMAT_PREFIX, name, KV_GGUF_KVANT_FORMAT_SUFFIX);
        kv_error_context(err, NULL, -1, name);
        return KV_EINVAL;
    }
    kv_status st = var_nbytes ? KV_OK : kv_gguf_tensor_nbytes(type, fmt, n_dims, t.shape, &t.nbytes, &t.row_bytes, err);
    if (st == KV_EFORMAT) st = KV_EINVAL; /* a bad shape/type from the caller, not a bad file */
    if (st) {
        if (err) err->status = st;
        kv_error_context(err, NULL, -1, name);
        return st;
    }
    t.nrows = 1;
    for (int d = 0; d + 1 < n_dims; d++) t.nrows *= t.shape[d];
    if (t.nbytes && !data && !fn) return kv_fail(err, KV_EINVAL, "GGUF writer: tensor '%s' has no data", name);
    t.data = data;
    t.fn = fn;
    t.ctx = ctx;
    if (w->n_tensors == w->cap_tensors) {
        int64_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        kv_gguf_wtensor *p = realloc(w->tensors, (size_t)cap * sizeof *p);
        if (!p) return kv_fail(err, KV_ENOMEM, "out of memory");
        w->tensors = p;
        w->cap_tensors = cap;
    }
    w->tensors[w->n_tensors++] = t;
    return KV_OK;
}

kv_status kv_gguf_writer_add_tensor(kv_gguf_writer *w, const char *name, int n_dims, const int64_t *shape,
                                    uint32_t type, const void *data, kv_error *err) {
    if (type == KV_TYPE_ECW) {
        kv_fail(err, KV_EINVAL, "GGUF writer: entropy-coded tensors go through kv_gguf_writer_add_tensor_ecw");
        kv_error_context(err, NULL, -1, name);
        return KV_EINVAL;
    }
    return add_tensor(w, name, n_dims, shape, type, data, NULL, NULL, NULL, err);
}

kv_status kv_gguf_writer_add_tensor_ecw(kv_gguf_writer *w, const char *name, int64_t rows, int64_t cols,
                                        const void *data, uint64_t nbytes, kv_error *err) {
    kv_error_clear(err);
    int64_t crows, ccols;
    kv_status st = data ? kv_ecw_check(data, (size_t)nbytes, &crows, &ccols, NULL, err)
                        : kv_fail(err, KV_EINVAL, "GGUF writer: NULL container");
    if (!st && (crows != rows || ccols != cols))
        st = kv_fail(err, KV_EINVAL, "GGUF writer: the container holds %lld x %lld values, the shape says %lld x %lld",
                     (long long)crows, (long long)ccols, (long long)rows, (long long)cols);
    if (st) {
        if (err) err->status = st = KV_EINVAL;
        kv_error_context(err, NULL, -1, name);
        return st;
    }
    if (!name || strlen(name) > KV_GGUF_MAX_NAME) return add_tensor(w, name, 0, NULL, 0, NULL, NULL, NULL, NULL, err);
    char key[KV_GGUF_MAX_NAME + 64];
    snprintf(key, sizeof key, "%s%s%s", KV_GGUF_KVANT_FORMAT_PREFIX, name, KV_GGUF_KVANT_FORMAT_SUFFIX);
    st = kv_gguf_writer_add_str(w, key, KV_ECW_FORMAT_NAME, err);
    snprintf(key, sizeof key, KV_META_ECW_BYTES_FMT, name);
    if (!st) st = kv_gguf_writer_add_u64(w, key, nbytes, err);
    const int64_t shape[2] = {rows, cols};
    if (!st) st = add_tensor(w, name, 2, shape, KV_TYPE_ECW, data, NULL, NULL, &nbytes, err);
    return st;
}

kv_status kv_gguf_writer_add_tensor_ecw_fn(kv_gguf_writer *w, const char *name, int64_t rows, int64_t cols,
                                           uint64_t nbytes, kv_gguf_rows_fn fn, void *ctx, kv_error *err) {
    kv_error_clear(err);
    if (!fn || !nbytes) return kv_fail(err, KV_EINVAL, "GGUF writer: entropy-coded tensor without bytes or callback");
    if (!name || strlen(name) > KV_GGUF_MAX_NAME) return add_tensor(w, name, 0, NULL, 0, NULL, NULL, NULL, NULL, err);
    char key[KV_GGUF_MAX_NAME + 64];
    snprintf(key, sizeof key, "%s%s%s", KV_GGUF_KVANT_FORMAT_PREFIX, name, KV_GGUF_KVANT_FORMAT_SUFFIX);
    kv_status st = kv_gguf_writer_add_str(w, key, KV_ECW_FORMAT_NAME, err);
    snprintf(key, sizeof key, KV_META_ECW_BYTES_FMT, name);
    if (!st) st = kv_gguf_writer_add_u64(w, key, nbytes, err);
    const int64_t shape[2] = {rows, cols};
    if (!st) st = add_tensor(w, name, 2, shape, KV_TYPE_ECW, NULL, fn, ctx, &nbytes, err);
    if (!st) { /* the container is streamed as bytes: "rows" of one byte */
        w->tensors[w->n_tensors - 1].row_bytes = 1;
        w->tensors[w->n_tensors - 1].nrows = (int64_t)nbytes;
    }
    return st;
}

kv_status kv_gguf_writer_add_tensor_fn(kv_gguf_writer *w, const char *name, int n_dims, const int64_t *shape,
                                       uint32_t type, kv_gguf_rows_fn fn, void *ctx, kv_error *err) {
    if (!fn) return kv_fail(err, KV_EINVAL, "GGUF writer: NULL row callback");
    if (type == KV_TYPE_ECW) return kv_fail(err, KV_EINVAL, "GGUF writer: entropy-coded tensors are not streamed");
    return add_tensor(w, name, n_dims, shape, type, NULL, fn, ctx, NULL, err);
}

/* ---- writing ------------------------------------------------------------------------------------ */

static uint64_t pad_to(uint64_t x, uint32_t a) { return x + (a - x % a) % a; }

/* Header, metadata, tensor infos and the padding before the data section, in one buffer. */
static kv_status build_head(kv_gguf_writer *w, kv_gguf_buf *b, kv_error *err) {
    buf_put(b, KV_GGUF_MAGIC, 4);
    buf_u32(b, KV_GGUF_VERSION);
    buf_u64(b, (uint64_t)w->n_tensors);
    buf_u64(b, (uint64_t)w->n_kv);
    buf_put(b, w->meta.p, w->meta.n);
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        kv_gguf_wtensor *t = &w->tensors[i];
        t->offset = off;
        buf_str(b, t->name, strlen(t->name));
        buf_u32(b, (uint32_t)t->n_dims);
        for (int d = t->n_dims - 1; d >= 0; d--) buf_u64(b, (uint64_t)t->shape[d]); /* ne[0] innermost */
        buf_u32(b, t->type);
        buf_u64(b, t->offset);
        if (!kv_add_u64(off, pad_to(t->nbytes, w->alignment), &off))
            return kv_fail(err, KV_ERANGE, "GGUF writer: data section size overflows");
    }
    buf_pad(b, w->alignment);
    return b->oom ? kv_fail(err, KV_ENOMEM, "out of memory building the GGUF header") : KV_OK;
}

/* Streams a callback tensor in chunks of about 4 MiB of rows. */
static kv_status write_rows(kv_outfile *f, const kv_gguf_wtensor *t, kv_progress *progress, uint64_t *done,
                            kv_error *err) {
    int64_t chunk = (int64_t)KV_MAX((size_t)1, ((size_t)4 << 20) / t->row_bytes);
    chunk = KV_MIN(chunk, t->nrows);
    uint8_t *buf = kv_malloc((size_t)chunk * t->row_bytes, err);
    if (!buf) return KV_ENOMEM;
    kv_status st = KV_OK;
    for (int64_t r = 0; r < t->nrows && !st; r += chunk) {
        int64_t n = KV_MIN(chunk, t->nrows - r);
        st = t->fn(t->ctx, r, n, buf, err);
        if (!st) st = kv_outfile_write(f, buf, (size_t)n * t->row_bytes, err);
        *done += (uint64_t)n * t->row_bytes;
        if (progress) kv_progress_update(progress, (int64_t)*done);
    }
    free(buf);
    return st;
}

kv_status kv_gguf_writer_write(kv_gguf_writer *w, const char *path, kv_progress *progress, kv_error *err) {
    kv_error_clear(err);
    if (w->depth) return kv_fail(err, KV_EINVAL, "GGUF writer: %d array(s) still open", w->depth);
    kv_gguf_buf head = {0};
    kv_status st = build_head(w, &head, err);
    if (st) {
        free(head.p);
        return st;
    }
    kv_outfile *f;
    st = kv_outfile_open(path, &f, err);
    if (st) {
        free(head.p);
        return st;
    }
    st = kv_outfile_write(f, head.p, head.n, err);
    free(head.p);
    uint64_t done = 0;
    for (int64_t i = 0; i < w->n_tensors && !st; i++) {
        const kv_gguf_wtensor *t = &w->tensors[i];
        if (t->nbytes == 0) continue;
        if (t->data) {
            st = kv_outfile_write(f, t->data, (size_t)t->nbytes, err);
            done += t->nbytes;
            if (progress) kv_progress_update(progress, (int64_t)done);
        } else {
            st = write_rows(f, t, progress, &done, err);
        }
        /* the data section starts aligned, so padding the file position pads the tensor */
        if (!st) st = kv_outfile_pad(f, w->alignment, err);
        if (st) kv_error_context(err, path, -1, t->name);
    }
    if (st) {
        kv_outfile_abort(f);
        return st;
    }
    return kv_outfile_commit(f, err);
}
