/* gguf.c — GGUF v3 (and v2) reader: header, metadata of every value type (nested arrays included), tensor
 * infos, data section; zero-copy over a memory map; every size checked against the file.
 * Sources: llama.cpp docs/gguf.md (layout), ggml/src/gguf.cpp gguf_init_from_file_impl (the checks llama.cpp
 * makes: version, tensor name length < GGML_MAX_NAME, n_dims <= GGML_MAX_DIMS, ne % block size, duplicate
 * keys/names, general.alignment a nonzero power of two of type u32). docs/FORMAT.md "GGUF container". */
#include "io/gguf.h"
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

typedef struct kv_gguf_ix {
    const char *s;
    int64_t i;
} kv_gguf_ix;

struct kv_gguf {
    kv_mapped map;
    int mapped;
    const uint8_t *base;
    uint64_t size;
    char name[512];
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;

    int64_t n_kv;
    char **keys;              /* NUL-terminated copies */
    char **cstrs;             /* NUL-terminated copies of scalar STRING values, else NULL */
    uint64_t *key_offsets;    /* absolute offset of each key (errors) */
    kv_gguf_value *vals;
    kv_gguf_ix *kv_sorted;

    int64_t n_tensors;
    kv_gguf_tensor *tensors;
    kv_gguf_ix *t_sorted;

    void **allocs;            /* element indexes of arrays of strings / arrays */
    size_t n_allocs, cap_allocs;
};

/* Cursor over the untrusted bytes. */
typedef struct kv_gguf_rd {
    kv_gguf *g;
    uint64_t pos;
    kv_error *err;
} kv_gguf_rd;

static const size_t k_vtype_size[KV_GGUF_VTYPE_COUNT] = {
    [KV_GGUF_U8] = 1, [KV_GGUF_I8] = 1, [KV_GGUF_U16] = 2, [KV_GGUF_I16] = 2, [KV_GGUF_U32] = 4,
    [KV_GGUF_I32] = 4, [KV_GGUF_F32] = 4, [KV_GGUF_BOOL] = 1, [KV_GGUF_STRING] = 0, [KV_GGUF_ARRAY] = 0,
    [KV_GGUF_U64] = 8, [KV_GGUF_I64] = 8, [KV_GGUF_F64] = 8,
};

static const char *const k_vtype_name[KV_GGUF_VTYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

size_t kv_gguf_vtype_size(uint32_t t) { return t < KV_GGUF_VTYPE_COUNT ? k_vtype_size[t] : 0; }

const char *kv_gguf_vtype_name(kv_gguf_vtype t) {
    return (unsigned)t < KV_GGUF_VTYPE_COUNT ? k_vtype_name[t] : "?";
}

/* Row bytes of a kvant-only type: its kv_format (named in metadata) must exist and carry this type id. */
static kv_status kvant_row_bytes(uint32_t type, const char *format_name, int64_t ne0, size_t *rb, kv_error *err) {
    if (!format_name) return kv_fail(err, KV_EFORMAT, "kvant-only type %u without a format name", type);
    kv_format f;
    kv_error sub;
    kv_error_clear(&sub);
    kv_status st = kv_format_get(format_name, &f, &sub);
    if (st)
        return kv_fail(err, st == KV_EINVAL ? KV_EUNSUPPORTED : st, "kvant-only type %u: format '%s': %s", type,
                       format_name, sub.message);
    if (type == KV_TYPE_ROTATED ? f.type >= KV_TYPE_KVANT_BASE : f.type != type)
        return kv_fail(err, KV_EFORMAT, type == KV_TYPE_ROTATED ? "format '%s' (type id %u) under the rotated-weight "
                       "type %u: that type holds ggml formats only" : "format '%s' has type id %u but the tensor says %u",
                       format_name, f.type, type);
    if (ne0 == 0) return KV_OK;
    *rb = kv_format_row_bytes(&f, ne0);
    if (*rb == 0)
        return kv_fail(err, KV_EFORMAT, "row of %" PRId64 " elements does not fit format '%s' (block %d)", ne0,
                       format_name, f.block);
    return KV_OK;
}

kv_status kv_gguf_tensor_nbytes(uint32_t type, const char *format_name, int n_dims, const int64_t *shape,
                                uint64_t *nbytes, size_t *row_bytes, kv_error *err) {
    *nbytes = 0;
    if (row_bytes) *row_bytes = 0;
    if (n_dims < 0 || n_dims > 4) return kv_fail(err, KV_EFORMAT, "%d dimensions (at most 4)", n_dims);
    int64_t ne0 = n_dims > 0 ? shape[n_dims - 1] : 1;
    uint64_t nrows = 1;
    for (int d = 0; d < n_dims; d++) {
        if (shape[d] < 0) return kv_fail(err, KV_EFORMAT, "negative dimension %" PRId64, shape[d]);
        if (d < n_dims - 1 && !kv_mul_u64(nrows, (uint64_t)shape[d], &nrows))
            return kv_fail(err, KV_ERANGE, "shape product overflows");
    }
    size_t rb = 0;
    if (type >= KV_TYPE_KVANT_BASE && type <= KV_TYPE_KVANT_MAX) {
        kv_status st = kvant_row_bytes(type, format_name, ne0, &rb, err);
        if (st) return st;
    } else {
        const kv_type_info *ti = kv_type_get(type);
        if (!ti) return kv_fail(err, KV_EFORMAT, "unknown ggml type %u", type);
        if (ne0 % ti->block)
            return kv_fail(err, KV_EFORMAT, "row of %" PRId64 " elements is not a multiple of the %s block size %d",
                           ne0, ti->name, ti->block);
        uint64_t rb64;
        if (!kv_mul_u64((uint64_t)(ne0 / ti->block), (uint64_t)ti->block_bytes, &rb64) || rb64 > SIZE_MAX)
            return kv_fail(err, KV_ERANGE, "row size overflows");
        rb = (size_t)rb64;
    }
    uint64_t total;
    if (!kv_mul_u64(nrows, rb, &total) || total > (uint64_t)INT64_MAX)
        return kv_fail(err, KV_ERANGE, "tensor byte size overflows");
    /* the element count must fit int64 too (llama.cpp checks ne products against INT64_MAX) */
    uint64_t nel;
    if (!kv_mul_u64(nrows, (uint64_t)ne0, &nel) || nel > (uint64_t)INT64_MAX)
        return kv_fail(err, KV_ERANGE, "element count overflows");
    *nbytes = total;
    if (row_bytes) *row_bytes = rb;
    return KV_OK;
}

/* ---- low-level reading -------------------------------------------------------------------------- */

static kv_status rd_fail(kv_gguf_rd *r, uint64_t offset, const char *tensor, kv_status st, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static kv_status rd_fail(kv_gguf_rd *r, uint64_t offset, const char *tensor, kv_status st, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kv_fail(r->err, st, "%s", msg);
    kv_error_context(r->err, r->g->name, (int64_t)offset, tensor);
    return st;
}

static kv_status rd_need(kv_gguf_rd *r, uint64_t n, const char *what) {
    if (r->g->size - r->pos < n)
        return rd_fail(r, r->pos, NULL, KV_EFORMAT,
                       "truncated: %s needs %" PRIu64 " bytes, only %" PRIu64 " left in the file", what, n,
                       r->g->size - r->pos);
    return KV_OK;
}

static kv_status rd_u32(kv_gguf_rd *r, uint32_t *v, const char *what) {
    kv_status st = rd_need(r, 4, what);
    if (st) return st;
    *v = kv_rd_u32(r->g->base + r->pos);
    r->pos += 4;
    return KV_OK;
}

static kv_status rd_u64(kv_gguf_rd *r, uint64_t *v, const char *what) {
    kv_status st = rd_need(r, 8, what);
    if (st) return st;
    *v = kv_rd_u64(r->g->base + r->pos);
    r->pos += 8;
    return KV_OK;
}

/* A gguf_string: uint64 length + bytes. */
static kv_status rd_str(kv_gguf_rd *r, const uint8_t **s, uint64_t *len, const char *what) {
    uint64_t at = r->pos;
    kv_status st = rd_u64(r, len, what);
    if (st) return st;
    if (r->g->size - r->pos < *len)
        return rd_fail(r, at, NULL, KV_EFORMAT,
                       "%s: string length %" PRIu64 " goes beyond the end of the file (%" PRIu64 " bytes left)",
                       what, *len, r->g->size - r->pos);
    *s = r->g->base + r->pos;
    r->pos += *len;
    return KV_OK;
}

static void *gg_track(kv_gguf *g, void *p) {
    if (!p) return NULL;
    if (g->n_allocs == g->cap_allocs) {
        size_t cap = g->cap_allocs ? g->cap_allocs * 2 : 16;
        void **a = realloc(g->allocs, cap * sizeof *a);
        if (!a) { free(p); return NULL; }
        g->allocs = a;
        g->cap_allocs = cap;
    }
    g->allocs[g->n_allocs++] = p;
    return p;
}

static char *dup_bytes(const uint8_t *s, uint64_t n) {
    char *c = malloc((size_t)n + 1);
    if (!c) return NULL;
    memcpy(c, s, (size_t)n);
    c[n] = 0;
    return c;
}

/* ---- values ------------------------------------------------------------------------------------- */

static kv_status rd_value(kv_gguf_rd *r, uint32_t type, int depth, const char *key, kv_gguf_value *v);

static kv_status rd_array(kv_gguf_rd *r, int depth, const char *key, kv_gguf_value *v) {
    uint64_t at = r->pos;
    if (depth >= KV_GGUF_MAX_ARRAY_DEPTH)
        return rd_fail(r, at, NULL, KV_EFORMAT, "metadata '%s': arrays nested deeper than %d", key,
                       KV_GGUF_MAX_ARRAY_DEPTH);
    uint32_t et;
    uint64_t n;
    kv_status st = rd_u32(r, &et, "array element type");
    if (!st) st = rd_u64(r, &n, "array length");
    if (st) return st;
    if (et >= KV_GGUF_VTYPE_COUNT)
        return rd_fail(r, at, NULL, KV_EFORMAT, "metadata '%s': unknown array element type %u", key, et);
    uint64_t left = r->g->size - r->pos;
    v->elem_type = (kv_gguf_vtype)et;
    v->n = n;
    v->data = r->g->base + r->pos;
    size_t esz = k_vtype_size[et];
    if (esz) {
        uint64_t bytes;
        if (!kv_mul_u64(n, esz, &bytes) || bytes > left)
            return rd_fail(r, at, NULL, KV_EFORMAT,
                           "metadata '%s': array of %" PRIu64 " %s goes beyond the end of the file", key, n,
                           k_vtype_name[et]);
        r->pos += bytes;
        return KV_OK;
    }
    /* strings take >= 8 bytes each, arrays >= 12: reject impossible counts before allocating */
    uint64_t min_elem = et == KV_GGUF_STRING ? 8 : 12;
    if (n > left / min_elem)
        return rd_fail(r, at, NULL, KV_EFORMAT,
                       "metadata '%s': array of %" PRIu64 " %s cannot fit in the %" PRIu64 " bytes left", key, n,
                       k_vtype_name[et], left);
    if (n == 0) return KV_OK;
    const uint8_t *first = r->g->base + r->pos;
    if (et == KV_GGUF_STRING) {
        uint64_t *ix = gg_track(r->g, malloc((size_t)n * sizeof *ix));
        if (!ix) return rd_fail(r, at, NULL, KV_ENOMEM, "out of memory for an array of %" PRIu64 " strings", n);
        for (uint64_t i = 0; i < n; i++) {
            ix[i] = (uint64_t)(r->g->base + r->pos - first);
            const uint8_t *s;
            uint64_t len;
            st = rd_str(r, &s, &len, "array string");
            if (st) return st;
        }
        v->index_ = ix;
        return KV_OK;
    }
    kv_gguf_value *kids = gg_track(r->g, calloc((size_t)n, sizeof *kids));
    if (!kids) return rd_fail(r, at, NULL, KV_ENOMEM, "out of memory for an array of %" PRIu64 " arrays", n);
    for (uint64_t i = 0; i < n; i++) {
        st = rd_value(r, KV_GGUF_ARRAY, depth + 1, key, &kids[i]);
        if (st) return st;
    }
    v->index_ = kids;
    return KV_OK;
}

static kv_status rd_value(kv_gguf_rd *r, uint32_t type, int depth, const char *key, kv_gguf_value *v) {
    memset(v, 0, sizeof *v);
    uint64_t at = r->pos;
    if (type >= KV_GGUF_VTYPE_COUNT)
        return rd_fail(r, at - 4, NULL, KV_EFORMAT, "metadata '%s': unknown value type %u", key, type);
    v->type = (kv_gguf_vtype)type;
    v->offset = at;
    kv_status st = KV_OK;
    if (type == KV_GGUF_STRING) {
        const uint8_t *s;
        st = rd_str(r, &s, &v->n, key);
        v->data = s;
    } else if (type == KV_GGUF_ARRAY) {
        st = rd_array(r, depth, key, v);
    } else {
        st = rd_need(r, k_vtype_size[type], key);
        if (!st) {
            v->n = 1;
            v->data = r->g->base + r->pos;
            r->pos += k_vtype_size[type];
        }
    }
    v->raw_size = r->pos - at;
    return st;
}

/* ---- sorted name lookup ------------------------------------------------------------------------- */

static int ix_cmp(const void *a, const void *b) {
    const kv_gguf_ix *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

static int64_t ix_find(const kv_gguf_ix *ix, int64_t n, const char *s) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ix[mid].s, s);
        if (c == 0) return ix[mid].i;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* ---- sections ----------------------------------------------------------------------------------- */

static kv_status rd_header(kv_gguf_rd *r) {
    kv_gguf *g = r->g;
    if (g->size < 4 || memcmp(g->base, KV_GGUF_MAGIC, 4) != 0)
        return rd_fail(r, 0, NULL, KV_EFORMAT, "not a GGUF file (bad magic, expected \"GGUF\")");
    r->pos = 4;
    kv_status st = rd_u32(r, &g->version, "version");
    if (st) return st;
    if (g->version != 2 && g->version != 3) {
        if (g->version && (g->version & 0xFFFF) == 0)
            return rd_fail(r, 4, NULL, KV_EUNSUPPORTED, "big-endian GGUF is not supported");
        return rd_fail(r, 4, NULL, KV_EUNSUPPORTED, "GGUF version %u is not supported (expected 3 or 2)",
                       g->version);
    }
    uint64_t nt, nkv;
    st = rd_u64(r, &nt, "tensor count");
    if (!st) st = rd_u64(r, &nkv, "metadata count");
    if (st) return st;
    uint64_t left = g->size - r->pos;
    /* a key-value takes >= 13 bytes (key length, type, a u8), a tensor info >= 24 */
    if (nkv > left / 13)
        return rd_fail(r, 16, NULL, KV_EFORMAT, "metadata count %" PRIu64 " cannot fit in a %" PRIu64 "-byte file",
                       nkv, g->size);
    if (nt > left / 24)
        return rd_fail(r, 8, NULL, KV_EFORMAT, "tensor count %" PRIu64 " cannot fit in a %" PRIu64 "-byte file", nt,
                       g->size);
    g->n_kv = (int64_t)nkv;
    g->n_tensors = (int64_t)nt;
    return KV_OK;
}

static kv_status rd_kvs(kv_gguf_rd *r) {
    kv_gguf *g = r->g;
    int64_t n = g->n_kv;
    g->keys = calloc((size_t)n + 1, sizeof *g->keys);
    g->cstrs = calloc((size_t)n + 1, sizeof *g->cstrs);
    g->key_offsets = calloc((size_t)n + 1, sizeof *g->key_offsets);
    g->vals = calloc((size_t)n + 1, sizeof *g->vals);
    g->kv_sorted = calloc((size_t)n + 1, sizeof *g->kv_sorted);
    if (!g->keys || !g->cstrs || !g->key_offsets || !g->vals || !g->kv_sorted)
        return rd_fail(r, 16, NULL, KV_ENOMEM, "out of memory for %" PRId64 " metadata keys", n);
    for (int64_t i = 0; i < n; i++) {
        g->key_offsets[i] = r->pos;
        const uint8_t *ks;
        uint64_t klen;
        kv_status st = rd_str(r, &ks, &klen, "metadata key");
        if (st) return st;
        if (!(g->keys[i] = dup_bytes(ks, klen))) return rd_fail(r, g->key_offsets[i], NULL, KV_ENOMEM, "out of memory");
        uint32_t type;
        st = rd_u32(r, &type, "metadata value type");
        if (!st) st = rd_value(r, type, 0, g->keys[i], &g->vals[i]);
        if (st) return st;
        if (type == KV_GGUF_STRING && !(g->cstrs[i] = dup_bytes(g->vals[i].data, g->vals[i].n)))
            return rd_fail(r, g->key_offsets[i], NULL, KV_ENOMEM, "out of memory");
        g->kv_sorted[i] = (kv_gguf_ix){g->keys[i], i};
    }
    qsort(g->kv_sorted, (size_t)n, sizeof *g->kv_sorted, ix_cmp);
    for (int64_t i = 1; i < n; i++)
        if (!strcmp(g->kv_sorted[i - 1].s, g->kv_sorted[i].s))
            return rd_fail(r, g->key_offsets[g->kv_sorted[i].i], NULL, KV_EFORMAT, "duplicate metadata key '%s'",
                           g->kv_sorted[i].s);
    g->alignment = KV_GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = ix_find(g->kv_sorted, n, "general.alignment");
    if (ai >= 0) {
        const kv_gguf_value *v = &g->vals[ai];
        if (v->type != KV_GGUF_U32)
            return rd_fail(r, v->offset, NULL, KV_EFORMAT, "general.alignment has type %s, expected u32",
                           k_vtype_name[v->type]);
        uint32_t a = kv_rd_u32(v->data);
        if (a == 0 || (a & (a - 1)))
            return rd_fail(r, v->offset, NULL, KV_EFORMAT, "general.alignment %u is not a nonzero power of two", a);
        g->alignment = a;
    }
    return KV_OK;
}

/* kvant-only tensor types name their format in metadata (kvant.tensor.<name>.format). */
static const char *kvant_format_of(const kv_gguf *g, const char *tensor) {
    char key[KV_GGUF_MAX_NAME + 64];
    snprintf(key, sizeof key, "%s%s%s", KV_GGUF_KVANT_FORMAT_PREFIX, tensor, KV_GGUF_KVANT_FORMAT_SUFFIX);
    int64_t i = ix_find(g->kv_sorted, g->n_kv, key);
    return i >= 0 ? g->cstrs[i] : NULL;
}

/* An entropy-coded tensor (KV_TYPE_ECW, docs/FORMAT.md "kvant ECW"): variable size, given by the u64 metadata
 * kvant.tensor.<name>.bytes; shape [rows, cols]. The container itself is checked in check_tensor_data. */
static kv_status rd_ecw_size(kv_gguf_rd *r, kv_gguf_tensor *t, uint64_t at) {
    char key[KV_GGUF_MAX_NAME + 64];
    snprintf(key, sizeof key, KV_META_ECW_BYTES_FMT, t->name);
    if (t->n_dims != 2 || t->shape[0] <= 0 || t->shape[1] <= 0)
        return rd_fail(r, at, t->name, KV_EFORMAT, "entropy-coded (ecw) tensor must be a non-empty matrix, not %d-D",
                       t->n_dims);
    uint64_t nel;
    if (!kv_mul_u64((uint64_t)t->shape[0], (uint64_t)t->shape[1], &nel) || nel > (uint64_t)INT64_MAX)
        return rd_fail(r, at, t->name, KV_ERANGE, "element count overflows");
    const kv_gguf_value *v = kv_gguf_find(r->g, key);
    uint64_t n = 0;
    if (!v || kv_gguf_value_u64(v, &n, NULL) != KV_OK)
        return rd_fail(r, at, t->name, KV_EFORMAT, "entropy-coded (ecw) tensor without an integer metadata %s", key);
    if (n < 32 || n > r->g->size)
        return rd_fail(r, v->offset, t->name, KV_EFORMAT, "%s = %" PRIu64 " is not a container size in a file of %"
                       PRIu64 " bytes", key, n, r->g->size);
    t->nbytes = n;
    return KV_OK;
}

static kv_status rd_tensor_info(kv_gguf_rd *r, kv_gguf_tensor *t) {
    kv_gguf *g = r->g;
    t->info_offset = r->pos;
    const uint8_t *ns;
    uint64_t nlen;
    kv_status st = rd_str(r, &ns, &nlen, "tensor name");
    if (st) return st;
    if (nlen > KV_GGUF_MAX_NAME) {
        char shown[KV_GGUF_MAX_NAME + 1];
        memcpy(shown, ns, KV_GGUF_MAX_NAME);
        shown[KV_GGUF_MAX_NAME] = 0;
        return rd_fail(r, t->info_offset, shown, KV_EFORMAT, "tensor name of %" PRIu64 " bytes is too long (max %d)",
                       nlen, KV_GGUF_MAX_NAME);
    }
    char *name = gg_track(g, dup_bytes(ns, nlen));
    if (!name) return rd_fail(r, t->info_offset, NULL, KV_ENOMEM, "out of memory");
    t->name = name;
    uint32_t nd;
    uint64_t at = r->pos;
    st = rd_u32(r, &nd, "tensor n_dims");
    if (st) return kv_error_context(r->err, NULL, -1, name), st;
    if (nd > 4) return rd_fail(r, at, name, KV_EFORMAT, "tensor has %u dimensions (at most 4)", nd);
    t->n_dims = (int)nd;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        at = r->pos;
        st = rd_u64(r, &ne, "tensor dimension");
        if (st) return kv_error_context(r->err, NULL, -1, name), st;
        if (ne > (uint64_t)INT64_MAX)
            return rd_fail(r, at, name, KV_ERANGE, "dimension %u is %" PRIu64 " (beyond int64)", d, ne);
        t->shape[nd - 1 - d] = (int64_t)ne; /* GGUF ne[0] is innermost; kvant is outermost first */
    }
    at = r->pos;
    st = rd_u32(r, &t->type, "tensor type");
    if (!st) st = rd_u64(r, &t->offset, "tensor offset");
    if (st) return kv_error_context(r->err, NULL, -1, name), st;
    const char *fmt = NULL;
    if (t->type == KV_TYPE_ECW) {
        if ((st = rd_ecw_size(r, t, at)) != KV_OK) return st;
    } else if (t->type >= KV_TYPE_KVANT_BASE && t->type <= KV_TYPE_KVANT_MAX) {
        fmt = kvant_format_of(g, name);
        if (!fmt)
            return rd_fail(r, at, name, KV_EFORMAT, "kvant-only type %u without metadata %s%s%s", t->type,
                           KV_GGUF_KVANT_FORMAT_PREFIX, name, KV_GGUF_KVANT_FORMAT_SUFFIX);
    }
    if (t->type != KV_TYPE_ECW) st = kv_gguf_tensor_nbytes(t->type, fmt, t->n_dims, t->shape, &t->nbytes, NULL, r->err);
    if (st) return kv_error_context(r->err, g->name, (int64_t)at, name), st;
    if (t->offset % g->alignment)
        return rd_fail(r, at + 4, name, KV_EFORMAT, "data offset %" PRIu64 " is not a multiple of the alignment %u",
                       t->offset, g->alignment);
    return KV_OK;
}

static int tensor_off_cmp(const void *a, const void *b) {
    const kv_gguf_tensor *x = *(const kv_gguf_tensor *const *)a, *y = *(const kv_gguf_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

static kv_status rd_tensors(kv_gguf_rd *r) {
    kv_gguf *g = r->g;
    int64_t n = g->n_tensors;
    g->tensors = calloc((size_t)n + 1, sizeof *g->tensors);
    g->t_sorted = calloc((size_t)n + 1, sizeof *g->t_sorted);
    if (!g->tensors || !g->t_sorted)
        return rd_fail(r, 8, NULL, KV_ENOMEM, "out of memory for %" PRId64 " tensors", n);
    for (int64_t i = 0; i < n; i++) {
        kv_status st = rd_tensor_info(r, &g->tensors[i]);
        if (st) return st;
        g->t_sorted[i] = (kv_gguf_ix){g->tensors[i].name, i};
    }
    qsort(g->t_sorted, (size_t)n, sizeof *g->t_sorted, ix_cmp);
    for (int64_t i = 1; i < n; i++)
        if (!strcmp(g->t_sorted[i - 1].s, g->t_sorted[i].s)) {
            const kv_gguf_tensor *t = &g->tensors[g->t_sorted[i].i];
            return rd_fail(r, t->info_offset, t->name, KV_EFORMAT, "duplicate tensor name");
        }
    /* the data section starts at the next multiple of the alignment */
    uint64_t rem = r->pos % g->alignment;
    if (!kv_add_u64(r->pos, rem ? g->alignment - rem : 0, &g->data_offset))
        return rd_fail(r, r->pos, NULL, KV_ERANGE, "data section offset overflows");
    return KV_OK;
}

/* The container's header (not its streams: kv_model_load decodes those) must describe the tensor's shape. */
static kv_status check_ecw(kv_gguf_rd *r, const kv_gguf_tensor *t, uint64_t start) {
    kv_error sub;
    kv_error_clear(&sub);
    int64_t rows, cols;
    if (kv_ecw_check(t->data, (size_t)t->nbytes, &rows, &cols, NULL, &sub) != KV_OK)
        return rd_fail(r, start + (uint64_t)(sub.offset > 0 ? sub.offset : 0), t->name, KV_EFORMAT,
                       "entropy-coded tensor: %s", sub.message);
    if (rows != t->shape[0] || cols != t->shape[1])
        return rd_fail(r, start + 8, t->name, KV_EFORMAT, "entropy-coded tensor holds %" PRId64 " x %" PRId64
                       " values, its shape says %" PRId64 " x %" PRId64, rows, cols, t->shape[0], t->shape[1]);
    return KV_OK;
}

static kv_status check_tensor_data(kv_gguf_rd *r) {
    kv_gguf *g = r->g;
    int64_t n = g->n_tensors;
    if (n == 0) return KV_OK;
    const kv_gguf_tensor **by_off = malloc((size_t)n * sizeof *by_off);
    if (!by_off) return rd_fail(r, 8, NULL, KV_ENOMEM, "out of memory");
    kv_status st = KV_OK;
    for (int64_t i = 0; i < n && !st; i++) {
        kv_gguf_tensor *t = &g->tensors[i];
        uint64_t start, end;
        if (!kv_add_u64(g->data_offset, t->offset, &start) || !kv_add_u64(start, t->nbytes, &end) || end > g->size)
            st = rd_fail(r, t->info_offset, t->name, KV_EFORMAT,
                         "data [%" PRIu64 ", +%" PRIu64 ") at data offset %" PRIu64
                         " goes beyond the end of the file (%" PRIu64 " bytes)",
                         g->data_offset + t->offset, t->nbytes, t->offset, g->size);
        else
            t->data = g->base + start;
        if (!st && t->type == KV_TYPE_ECW) st = check_ecw(r, t, start);
        by_off[i] = t;
    }
    if (!st) {
        qsort(by_off, (size_t)n, sizeof *by_off, tensor_off_cmp);
        const kv_gguf_tensor *reach = NULL; /* the tensor ending furthest so far (empty ones overlap nothing) */
        for (int64_t i = 0; i < n && !st; i++) {
            const kv_gguf_tensor *b = by_off[i];
            if (!b->nbytes) continue;
            if (reach && b->offset < reach->offset + reach->nbytes)
                st = rd_fail(r, b->info_offset, b->name, KV_EFORMAT,
                             "data at data offset %" PRIu64 " overlaps tensor '%s' [%" PRIu64 ", %" PRIu64 ")",
                             b->offset, reach->name, reach->offset, reach->offset + reach->nbytes);
            if (!reach || b->offset + b->nbytes > reach->offset + reach->nbytes) reach = b;
        }
    }
    free(by_off);
    return st;
}

/* ---- open / close ------------------------------------------------------------------------------- */

static kv_status gguf_parse(kv_gguf *g, kv_error *err) {
    kv_gguf_rd r = {g, 0, err};
    kv_status st = rd_header(&r);
    if (!st) st = rd_kvs(&r);
    if (!st) st = rd_tensors(&r);
    if (!st) st = check_tensor_data(&r);
    return st;
}

static kv_status gguf_open_impl(kv_gguf *g, kv_gguf **out, kv_error *err) {
    kv_status st = gguf_parse(g, err);
    if (st) {
        kv_gguf_close(g);
        return st;
    }
    *out = g;
    return KV_OK;
}

kv_status kv_gguf_open_memory(const void *data, size_t size, const char *name, kv_gguf **out, kv_error *err) {
    *out = NULL;
    kv_error_clear(err);
    kv_gguf *g = kv_calloc(1, sizeof *g, err);
    if (!g) return KV_ENOMEM;
    g->base = data ? data : (const uint8_t *)"";
    g->size = data ? size : 0;
    kv_strlcpy(g->name, name ? name : "<memory>", sizeof g->name);
    return gguf_open_impl(g, out, err);
}

int kv_gguf_maps_range(const kv_gguf *g, const void *p, size_t n) {
    const uint8_t *b = p;
    return g && g->mapped && b >= g->map.data && n <= g->map.size && (size_t)(b - g->map.data) <= g->map.size - n;
}

kv_status kv_gguf_open(const char *path, kv_gguf **out, kv_error *err) {
    *out = NULL;
    kv_error_clear(err);
    kv_gguf *g = kv_calloc(1, sizeof *g, err);
    if (!g) return KV_ENOMEM;
    kv_status st = kv_map_file(path, &g->map, err);
    if (st) {
        free(g);
        return st;
    }
    g->mapped = 1;
    g->base = g->map.data;
    g->size = g->map.size;
    kv_strlcpy(g->name, path, sizeof g->name);
    return gguf_open_impl(g, out, err);
}

void kv_gguf_close(kv_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) {
        if (g->keys) free(g->keys[i]);
        if (g->cstrs) free(g->cstrs[i]);
    }
    free(g->keys);
    free(g->cstrs);
    free(g->key_offsets);
    free(g->vals);
    free(g->kv_sorted);
    free(g->tensors);
    free(g->t_sorted);
    for (size_t i = 0; i < g->n_allocs; i++) free(g->allocs[i]);
    free(g->allocs);
    if (g->mapped) kv_unmap_file(&g->map);
    free(g);
}

/* ---- accessors ---------------------------------------------------------------------------------- */

uint32_t kv_gguf_version(const kv_gguf *g) { return g->version; }
uint32_t kv_gguf_alignment(const kv_gguf *g) { return g->alignment; }
uint64_t kv_gguf_data_offset(const kv_gguf *g) { return g->data_offset; }
const char *kv_gguf_path(const kv_gguf *g) { return g->name; }

const uint8_t *kv_gguf_bytes(const kv_gguf *g, size_t *size) {
    if (size) *size = (size_t)g->size;
    return g->base;
}

int64_t kv_gguf_n_kv(const kv_gguf *g) { return g->n_kv; }

const char *kv_gguf_kv_key(const kv_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->keys[i] : NULL;
}

const kv_gguf_value *kv_gguf_kv_value(const kv_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->vals[i] : NULL;
}

int64_t kv_gguf_find_key(const kv_gguf *g, const char *key) {
    return key ? ix_find(g->kv_sorted, g->n_kv, key) : -1;
}

const kv_gguf_value *kv_gguf_find(const kv_gguf *g, const char *key) {
    return kv_gguf_kv_value(g, kv_gguf_find_key(g, key));
}

int64_t kv_gguf_n_tensors(const kv_gguf *g) { return g->n_tensors; }

const kv_gguf_tensor *kv_gguf_tensor_at(const kv_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const kv_gguf_tensor *kv_gguf_find_tensor(const kv_gguf *g, const char *name) {
    int64_t i = name ? ix_find(g->t_sorted, g->n_tensors, name) : -1;
    return i >= 0 ? &g->tensors[i] : NULL;
}

/* ---- value conversions -------------------------------------------------------------------------- */

/* Integer value as int64, or *big set when it is a u64 above INT64_MAX. */
static kv_status int_of(const kv_gguf_value *v, int64_t *out, uint64_t *big, kv_error *err) {
    *big = 0;
    const uint8_t *p = v->data;
    switch (v->type) {
    case KV_GGUF_U8: *out = p[0]; return KV_OK;
    case KV_GGUF_I8: *out = (int8_t)p[0]; return KV_OK;
    case KV_GGUF_BOOL: *out = p[0] != 0; return KV_OK;
    case KV_GGUF_U16: *out = kv_rd_u16(p); return KV_OK;
    case KV_GGUF_I16: *out = (int16_t)kv_rd_u16(p); return KV_OK;
    case KV_GGUF_U32: *out = kv_rd_u32(p); return KV_OK;
    case KV_GGUF_I32: *out = (int32_t)kv_rd_u32(p); return KV_OK;
    case KV_GGUF_I64: *out = (int64_t)kv_rd_u64(p); return KV_OK;
    case KV_GGUF_U64: {
        uint64_t u = kv_rd_u64(p);
        if (u > (uint64_t)INT64_MAX) *big = u;
        else *out = (int64_t)u;
        return KV_OK;
    }
    default:
        return kv_fail(err, KV_EFORMAT, "expected an integer, found %s", kv_gguf_vtype_name(v->type));
    }
}

kv_status kv_gguf_value_i64(const kv_gguf_value *v, int64_t *out, kv_error *err) {
    uint64_t big;
    kv_status st = int_of(v, out, &big, err);
    if (!st && big) return kv_fail(err, KV_ERANGE, "value %" PRIu64 " does not fit int64", big);
    return st;
}

kv_status kv_gguf_value_u64(const kv_gguf_value *v, uint64_t *out, kv_error *err) {
    uint64_t big;
    int64_t i = 0;
    kv_status st = int_of(v, &i, &big, err);
    if (st) return st;
    if (big) { *out = big; return KV_OK; }
    if (i < 0) return kv_fail(err, KV_ERANGE, "negative value %" PRId64 " where an unsigned one is expected", i);
    *out = (uint64_t)i;
    return KV_OK;
}

kv_status kv_gguf_value_f64(const kv_gguf_value *v, double *out, kv_error *err) {
    if (v->type == KV_GGUF_F32) { *out = kv_rd_f32(v->data); return KV_OK; }
    if (v->type == KV_GGUF_F64) {
        uint64_t bits = kv_rd_u64(v->data);
        memcpy(out, &bits, 8);
        return KV_OK;
    }
    return kv_fail(err, KV_EFORMAT, "expected a float, found %s", kv_gguf_vtype_name(v->type));
}

kv_status kv_gguf_arr_get(const kv_gguf_value *arr, uint64_t i, kv_gguf_value *out, kv_error *err) {
    memset(out, 0, sizeof *out);
    if (arr->type != KV_GGUF_ARRAY) return kv_fail(err, KV_EINVAL, "not an array (%s)", kv_gguf_vtype_name(arr->type));
    if (i >= arr->n) return kv_fail(err, KV_ERANGE, "index %" PRIu64 " beyond array of %" PRIu64, i, arr->n);
    const uint8_t *first = arr->data;
    uint64_t first_off = arr->offset + 12; /* element type + count precede the elements */
    size_t esz = kv_gguf_vtype_size(arr->elem_type);
    if (esz) {
        out->type = arr->elem_type;
        out->n = 1;
        out->data = first + i * esz;
        out->offset = first_off + i * esz;
        out->raw_size = esz;
    } else if (arr->elem_type == KV_GGUF_STRING) {
        uint64_t off = ((const uint64_t *)arr->index_)[i];
        out->type = KV_GGUF_STRING;
        out->n = kv_rd_u64(first + off);
        out->data = first + off + 8;
        out->offset = first_off + off;
        out->raw_size = 8 + out->n;
    } else {
        *out = ((const kv_gguf_value *)arr->index_)[i];
    }
    return KV_OK;
}

/* ---- typed getters ------------------------------------------------------------------------------ */

static kv_status lookup(const kv_gguf *g, const char *key, const kv_gguf_value **v, kv_error *err) {
    *v = kv_gguf_find(g, key);
    if (!*v) {
        kv_fail(err, KV_ENOTFOUND, "metadata key '%s' not found", key ? key : "(null)");
        kv_error_context(err, g->name, -1, NULL);
        return KV_ENOTFOUND;
    }
    return KV_OK;
}

static kv_status getter_fail(const kv_gguf *g, const char *key, const kv_gguf_value *v, kv_error *err) {
    char inner[sizeof err->message];
    kv_strlcpy(inner, err->message, sizeof inner);
    kv_fail(err, err->status, "metadata '%s': %s", key, inner);
    kv_error_context(err, g->name, (int64_t)v->offset, NULL);
    return err->status;
}

static kv_status get_int(const kv_gguf *g, const char *key, int64_t lo, uint64_t hi, int64_t *si, uint64_t *ui,
                         kv_error *err) {
    const kv_gguf_value *v;
    kv_status st = lookup(g, key, &v, err);
    if (st) return st;
    kv_error local;
    kv_error *e = err ? err : &local;
    int64_t i = 0;
    uint64_t big;
    st = int_of(v, &i, &big, e);
    if (!st && big) {
        if (big > hi) st = kv_fail(e, KV_ERANGE, "value %" PRIu64 " out of range", big);
        else if (ui) *ui = big;
        if (!st && si) st = kv_fail(e, KV_ERANGE, "value %" PRIu64 " out of range", big);
    } else if (!st) {
        if (i < lo || (i >= 0 && (uint64_t)i > hi)) st = kv_fail(e, KV_ERANGE, "value %" PRId64 " out of range", i);
        else if (si) *si = i;
        else if (ui) *ui = (uint64_t)i;
    }
    return st ? getter_fail(g, key, v, e) : KV_OK;
}

kv_status kv_gguf_get_u32(const kv_gguf *g, const char *key, uint32_t *out, kv_error *err) {
    uint64_t u;
    kv_status st = get_int(g, key, 0, UINT32_MAX, NULL, &u, err);
    if (!st) *out = (uint32_t)u;
    return st;
}

kv_status kv_gguf_get_i32(const kv_gguf *g, const char *key, int32_t *out, kv_error *err) {
    int64_t i;
    kv_status st = get_int(g, key, INT32_MIN, INT32_MAX, &i, NULL, err);
    if (!st) *out = (int32_t)i;
    return st;
}

kv_status kv_gguf_get_u64(const kv_gguf *g, const char *key, uint64_t *out, kv_error *err) {
    return get_int(g, key, 0, UINT64_MAX, NULL, out, err);
}

kv_status kv_gguf_get_i64(const kv_gguf *g, const char *key, int64_t *out, kv_error *err) {
    return get_int(g, key, INT64_MIN, INT64_MAX, out, NULL, err);
}

kv_status kv_gguf_get_bool(const kv_gguf *g, const char *key, int *out, kv_error *err) {
    int64_t i;
    kv_status st = get_int(g, key, INT64_MIN, INT64_MAX, &i, NULL, err);
    if (!st) *out = i != 0;
    return st;
}

kv_status kv_gguf_get_f64(const kv_gguf *g, const char *key, double *out, kv_error *err) {
    const kv_gguf_value *v;
    kv_status st = lookup(g, key, &v, err);
    if (st) return st;
    kv_error local;
    kv_error *e = err ? err : &local;
    st = kv_gguf_value_f64(v, out, e);
    return st ? getter_fail(g, key, v, e) : KV_OK;
}

kv_status kv_gguf_get_f32(const kv_gguf *g, const char *key, float *out, kv_error *err) {
    double d;
    kv_status st = kv_gguf_get_f64(g, key, &d, err);
    if (!st) *out = (float)d;
    return st;
}

kv_status kv_gguf_get_str(const kv_gguf *g, const char *key, const char **out, kv_error *err) {
    const kv_gguf_value *v;
    kv_status st = lookup(g, key, &v, err);
    if (st) return st;
    if (v->type != KV_GGUF_STRING) {
        kv_fail(err, KV_EFORMAT, "metadata '%s': expected a string, found %s", key, kv_gguf_vtype_name(v->type));
        kv_error_context(err, g->name, (int64_t)v->offset, NULL);
        return KV_EFORMAT;
    }
    *out = g->cstrs[v - g->vals];
    return KV_OK;
}

kv_status kv_gguf_get_arr(const kv_gguf *g, const char *key, kv_gguf_value *arr, kv_error *err) {
    const kv_gguf_value *v;
    kv_status st = lookup(g, key, &v, err);
    if (st) return st;
    if (v->type != KV_GGUF_ARRAY) {
        kv_fail(err, KV_EFORMAT, "metadata '%s': expected an array, found %s", key, kv_gguf_vtype_name(v->type));
        kv_error_context(err, g->name, (int64_t)v->offset, NULL);
        return KV_EFORMAT;
    }
    *arr = *v;
    return KV_OK;
}
