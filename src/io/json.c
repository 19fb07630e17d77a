/* json.c — strict JSON (RFC 8259: grammar §2-7, UTF-8 §8.1, surrogate pairs §7) into an arena-allocated DOM.
 * Children of a container are collected on one scratch stack and copied to the arena when the container
 * closes, so a multi-MB tokenizer.json costs one pass and a few large allocations. */
#include "io/json.h"
#include "core/core.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>

#define KV_JSON_DEFAULT_MAX_BYTES ((size_t)512 << 20)
#define KV_JSON_DEFAULT_MAX_DEPTH 256
#define KV_JSON_CHUNK ((size_t)1 << 20)

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_chunk;

struct kv_json_doc {
    arena_chunk *chunks;
    kv_json root;
};

typedef struct parser {
    const unsigned char *s;
    size_t n, pos;
    int depth, max_depth;
    const kv_json_opts *opts;
    kv_json_doc *doc;
    kv_json *stack;      /* children of open containers */
    size_t stack_n, stack_cap;
    kv_error *err;
} parser;

static void *arena_alloc(kv_json_doc *doc, size_t n, kv_error *err) {
    n = (n + 15) & ~(size_t)15;
    arena_chunk *c = doc->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > KV_JSON_CHUNK ? n : KV_JSON_CHUNK;
        c = kv_malloc(sizeof *c + cap, err);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = doc->chunks;
        doc->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

static kv_status fail_at(parser *p, kv_status st, size_t at, const char *what) {
    kv_fail(p->err, st, "invalid JSON: %s", what);
    kv_error_context(p->err, p->opts->path, (int64_t)(p->opts->base_offset + at), NULL);
    return st;
}

static void skip_ws(parser *p) {
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(parser *p, size_t at, uint32_t *out) {
    if (at + 4 > p->n) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p->s[at + i]);
        if (h < 0) return 0;
        v = (v << 4) | (uint32_t)h;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(unsigned char *d, uint32_t cp) {
    if (cp < 0x80) { d[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { d[0] = (unsigned char)(0xC0 | (cp >> 6)); d[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        d[0] = (unsigned char)(0xE0 | (cp >> 12));
        d[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (unsigned char)(0xF0 | (cp >> 18));
    d[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    d[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (Unicode Table 3-7), 0 if ill-formed. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F; /* <= U+10FFFF */
    } else return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

/* Parses the string starting at the opening quote; the decoded text goes to the arena. */
static kv_status parse_string(parser *p, const char **out, uint64_t *out_len) {
    size_t start = ++p->pos;
    size_t end = start;
    int has_escape = 0;
    /* first pass: find the closing quote (escapes never expand, so raw length bounds the output) */
    for (;;) {
        if (end >= p->n) return fail_at(p, KV_EFORMAT, start - 1, "unterminated string");
        unsigned char c = p->s[end];
        if (c == '"') break;
        if (c == '\\') { has_escape = 1; end += 2; continue; }
        end++;
    }
    size_t raw = end - start;
    unsigned char *d = arena_alloc(p->doc, raw + 1, p->err);
    if (!d) return KV_ENOMEM;
    size_t o = 0, i = start;
    if (!has_escape) {
        /* fast path: copy the printable ASCII prefix in one go */
        while (i < end && p->s[i] >= 0x20 && p->s[i] < 0x80) i++;
        memcpy(d, p->s + start, i - start);
        o = i - start;
    }
    while (i < end) {
        unsigned char c = p->s[i];
        if (c < 0x20) return fail_at(p, KV_EFORMAT, i, "control character in string (must be escaped)");
        if (c == '\\' && has_escape) {
            if (i + 1 >= end) return fail_at(p, KV_EFORMAT, i, "truncated escape");
            unsigned char e = p->s[i + 1];
            switch (e) {
            case '"': d[o++] = '"'; i += 2; continue;
            case '\\': d[o++] = '\\'; i += 2; continue;
            case '/': d[o++] = '/'; i += 2; continue;
            case 'b': d[o++] = '\b'; i += 2; continue;
            case 'f': d[o++] = '\f'; i += 2; continue;
            case 'n': d[o++] = '\n'; i += 2; continue;
            case 'r': d[o++] = '\r'; i += 2; continue;
            case 't': d[o++] = '\t'; i += 2; continue;
            case 'u': break;
            default: return fail_at(p, KV_EFORMAT, i, "invalid escape sequence");
            }
            uint32_t cp;
            if (i + 6 > end || !read_hex4(p, i + 2, &cp)) return fail_at(p, KV_EFORMAT, i, "invalid \\u escape (need 4 hex digits)");
            if (cp >= 0xDC00 && cp <= 0xDFFF) return fail_at(p, KV_EFORMAT, i, "lone low surrogate in \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (i + 12 > end || p->s[i + 6] != '\\' || p->s[i + 7] != 'u' || !read_hex4(p, i + 8, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return fail_at(p, KV_EFORMAT, i, "high surrogate not followed by a low surrogate");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 12;
            } else {
                i += 6;
            }
            o += put_utf8(d + o, cp);
            continue;
        }
        if (c < 0x80) { d[o++] = c; i++; continue; }
        size_t l = utf8_seq_len(p->s + i, end - i);
        if (!l) return fail_at(p, KV_EFORMAT, i, "invalid UTF-8 in string");
        memcpy(d + o, p->s + i, l);
        o += l;
        i += l;
    }
    d[o] = 0;
    p->pos = end + 1;
    *out = (const char *)d;
    *out_len = o;
    return KV_OK;
}

static kv_status parse_number(parser *p, kv_json *v) {
    size_t start = p->pos, i = p->pos;
    int integral = 1;
    if (i < p->n && p->s[i] == '-') i++;
    if (i >= p->n || !(p->s[i] >= '0' && p->s[i] <= '9')) return fail_at(p, KV_EFORMAT, start, "invalid number");
    if (p->s[i] == '0') {
        i++;
        if (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') return fail_at(p, KV_EFORMAT, start, "leading zero in number");
    } else {
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    if (i < p->n && p->s[i] == '.') {
        integral = 0;
        i++;
        if (i >= p->n || !(p->s[i] >= '0' && p->s[i] <= '9')) return fail_at(p, KV_EFORMAT, i, "digit expected after '.'");
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integral = 0;
        i++;
        if (i < p->n && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->n || !(p->s[i] >= '0' && p->s[i] <= '9')) return fail_at(p, KV_EFORMAT, i, "digit expected in exponent");
        while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
    }
    size_t len = i - start;
    v->type = KV_JSON_NUMBER;
    if (integral && len <= 18) {
        /* fast path: up to 18 digits fit int64 exactly and convert to the nearest double */
        size_t k = start + (p->s[start] == '-');
        int64_t acc = 0;
        for (; k < i; k++) acc = acc * 10 + (p->s[k] - '0');
        v->ival = p->s[start] == '-' ? -acc : acc;
        v->num = p->s[start] == '-' ? -(double)acc : (double)acc; /* keeps -0 */
        v->is_int = 1;
        p->pos = i;
        return KV_OK;
    }
    /* strtod needs a terminated copy; the library never calls setlocale, so '.' is the decimal point */
    char small[128];
    char *buf = len < sizeof small ? small : kv_malloc(len + 1, p->err);
    if (!buf) return KV_ENOMEM;
    memcpy(buf, p->s + start, len);
    buf[len] = 0;
    errno = 0;
    double d = strtod(buf, NULL);
    int range_err = errno == ERANGE && isinf(d);
    v->is_int = 0;
    if (integral) {
        errno = 0;
        long long ll = strtoll(buf, NULL, 10);
        if (errno == 0) { v->is_int = 1; v->ival = ll; }
    }
    if (buf != small) free(buf);
    if (range_err) return fail_at(p, KV_ERANGE, start, "number out of range of double");
    v->type = KV_JSON_NUMBER;
    v->num = d;
    p->pos = i;
    return KV_OK;
}

static int match_literal(parser *p, const char *lit) {
    size_t l = strlen(lit);
    if (p->n - p->pos < l || memcmp(p->s + p->pos, lit, l)) return 0;
    p->pos += l;
    return 1;
}

static kv_status stack_push(parser *p, const kv_json *v) {
    if (p->stack_n == p->stack_cap) {
        size_t cap = p->stack_cap ? p->stack_cap * 2 : 256;
        kv_json *ns = realloc(p->stack, cap * sizeof *ns);
        if (!ns) return kv_fail(p->err, KV_ENOMEM, "out of memory parsing JSON");
        p->stack = ns;
        p->stack_cap = cap;
    }
    p->stack[p->stack_n++] = *v;
    return KV_OK;
}

/* Moves the children pushed since `base` into the arena as v's items. */
static kv_status close_container(parser *p, kv_json *v, size_t base) {
    size_t count = p->stack_n - base;
    v->len = count;
    v->u.items = NULL;
    if (count) {
        kv_json *items = arena_alloc(p->doc, count * sizeof *items, p->err);
        if (!items) return KV_ENOMEM;
        memcpy(items, p->stack + base, count * sizeof *items);
        v->u.items = items;
    }
    p->stack_n = base;
    return KV_OK;
}

static kv_status parse_value(parser *p, kv_json *v);

static kv_status parse_array(parser *p, kv_json *v) {
    size_t base = p->stack_n;
    v->type = KV_JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == ']') {
        p->pos++;
        return close_container(p, v, base);
    }
    for (;;) {
        kv_json item;
        kv_status st = parse_value(p, &item);
        if (st) return st;
        if ((st = stack_push(p, &item))) return st;
        skip_ws(p);
        if (p->pos >= p->n) return fail_at(p, KV_EFORMAT, p->pos, "unterminated array (expected ',' or ']')");
        unsigned char c = p->s[p->pos];
        if (c == ']') { p->pos++; break; }
        if (c != ',') return fail_at(p, KV_EFORMAT, p->pos, "expected ',' or ']' in array");
        p->pos++;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ']') return fail_at(p, KV_EFORMAT, p->pos, "trailing comma in array");
    }
    return close_container(p, v, base);
}

static kv_status parse_object(parser *p, kv_json *v) {
    size_t base = p->stack_n;
    v->type = KV_JSON_OBJECT;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == '}') {
        p->pos++;
        return close_container(p, v, base);
    }
    for (;;) {
        if (p->pos >= p->n) return fail_at(p, KV_EFORMAT, p->pos, "unterminated object");
        if (p->s[p->pos] != '"') return fail_at(p, KV_EFORMAT, p->pos, "expected a string key in object");
        const char *key;
        uint64_t key_len;
        kv_status st = parse_string(p, &key, &key_len);
        if (st) return st;
        if (key_len > UINT32_MAX) return fail_at(p, KV_ERANGE, p->pos, "object key too long");
        skip_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != ':') return fail_at(p, KV_EFORMAT, p->pos, "expected ':' after object key");
        p->pos++;
        kv_json item;
        if ((st = parse_value(p, &item))) return st;
        item.key = key;
        item.key_len = (uint32_t)key_len;
        if ((st = stack_push(p, &item))) return st;
        skip_ws(p);
        if (p->pos >= p->n) return fail_at(p, KV_EFORMAT, p->pos, "unterminated object (expected ',' or '}')");
        unsigned char c = p->s[p->pos];
        if (c == '}') { p->pos++; break; }
        if (c != ',') return fail_at(p, KV_EFORMAT, p->pos, "expected ',' or '}' in object");
        p->pos++;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == '}') return fail_at(p, KV_EFORMAT, p->pos, "trailing comma in object");
    }
    return close_container(p, v, base);
}

static kv_status parse_value(parser *p, kv_json *v) {
    memset(v, 0, sizeof *v);
    skip_ws(p);
    if (p->pos >= p->n) return fail_at(p, KV_EFORMAT, p->pos, "unexpected end of input (expected a value)");
    v->offset = p->opts->base_offset + p->pos;
    unsigned char c = p->s[p->pos];
    switch (c) {
    case '{':
    case '[': {
        if (++p->depth > p->max_depth) return fail_at(p, KV_ERANGE, p->pos, "nesting deeper than the limit");
        kv_status st = c == '{' ? parse_object(p, v) : parse_array(p, v);
        p->depth--;
        return st;
    }
    case '"': v->type = KV_JSON_STRING; return parse_string(p, &v->u.str, &v->len);
    case 't': if (match_literal(p, "true")) { v->type = KV_JSON_BOOL; v->boolean = 1; return KV_OK; } break;
    case 'f': if (match_literal(p, "false")) { v->type = KV_JSON_BOOL; return KV_OK; } break;
    case 'n': if (match_literal(p, "null")) { v->type = KV_JSON_NULL; return KV_OK; } break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    }
    return fail_at(p, KV_EFORMAT, p->pos, "unexpected character (expected a value)");
}

void kv_json_free(kv_json_doc *doc) {
    if (!doc) return;
    arena_chunk *c = doc->chunks;
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(doc);
}

kv_status kv_json_parse(const char *text, size_t len, const kv_json_opts *opts, kv_json_doc **out, kv_error *err) {
    *out = NULL;
    kv_json_opts defaults = {0};
    if (!opts) opts = &defaults;
    size_t max_bytes = opts->max_bytes ? opts->max_bytes : KV_JSON_DEFAULT_MAX_BYTES;
    parser p = {.s = (const unsigned char *)text, .n = len, .opts = opts, .err = err,
                .max_depth = opts->max_depth > 0 ? opts->max_depth : KV_JSON_DEFAULT_MAX_DEPTH};
    if (len > max_bytes) {
        kv_fail(err, KV_ERANGE, "JSON text of %zu bytes exceeds the limit of %zu bytes", len, max_bytes);
        kv_error_context(err, opts->path, (int64_t)opts->base_offset, NULL);
        return KV_ERANGE;
    }
    p.doc = kv_calloc(1, sizeof *p.doc, err);
    if (!p.doc) return KV_ENOMEM;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) p.pos = 3; /* RFC 8259 §8.1: a BOM may be ignored */
    kv_status st = parse_value(&p, &p.doc->root);
    if (!st) {
        skip_ws(&p);
        if (p.pos != p.n) st = fail_at(&p, KV_EFORMAT, p.pos, "trailing characters after the JSON value");
    }
    free(p.stack);
    if (st) {
        kv_json_free(p.doc);
        return st;
    }
    *out = p.doc;
    return KV_OK;
}

kv_status kv_json_parse_file(const char *path, size_t max_bytes, kv_json_doc **out, kv_error *err) {
    *out = NULL;
    kv_mapped m;
    kv_status st = kv_map_file(path, &m, err);
    if (st) return st;
    kv_json_opts opts = {.path = path, .max_bytes = max_bytes};
    st = kv_json_parse((const char *)m.data, m.size, &opts, out, err);
    kv_unmap_file(&m);
    return st;
}

const kv_json *kv_json_root(const kv_json_doc *doc) { return doc ? &doc->root : NULL; }

const kv_json *kv_json_get(const kv_json *obj, const char *key) {
    if (!obj || obj->type != KV_JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (uint64_t i = 0; i < obj->len; i++) {
        const kv_json *m = &obj->u.items[i];
        if (m->key_len == kl && !memcmp(m->key, key, kl)) return m;
    }
    return NULL;
}

const kv_json *kv_json_at(const kv_json *arr, uint64_t i) {
    if (!arr || arr->type != KV_JSON_ARRAY || i >= arr->len) return NULL;
    return &arr->u.items[i];
}

static int cmp_member_keys(const void *a, const void *b) {
    const kv_json *x = *(const kv_json *const *)a, *y = *(const kv_json *const *)b;
    size_t n = KV_MIN(x->key_len, y->key_len);
    int c = memcmp(x->key, y->key, n);
    if (c) return c;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
    /* equal keys: order by position so the reported duplicate is the later one */
    return x < y ? -1 : x > y;
}

const kv_json *kv_json_find_duplicate_key(const kv_json *obj) {
    if (!obj || obj->type != KV_JSON_OBJECT || obj->len < 2) return NULL;
    const kv_json **v = malloc(obj->len * sizeof *v);
    if (!v) return NULL;
    for (uint64_t i = 0; i < obj->len; i++) v[i] = &obj->u.items[i];
    qsort(v, obj->len, sizeof *v, cmp_member_keys);
    const kv_json *dup = NULL;
    for (uint64_t i = 1; i < obj->len && !dup; i++)
        if (v[i]->key_len == v[i - 1]->key_len && !memcmp(v[i]->key, v[i - 1]->key, v[i]->key_len)) dup = v[i];
    free(v);
    return dup;
}

int kv_json_get_int(const kv_json *obj, const char *key, int64_t *out) {
    const kv_json *v = kv_json_get(obj, key);
    if (!v || v->type == KV_JSON_NULL) return 0;
    if (v->type != KV_JSON_NUMBER) return -1;
    if (v->is_int) { *out = v->ival; return 1; }
    /* 1.0 or 1e3 are integers too */
    if (v->num == floor(v->num) && fabs(v->num) < 9.0e15) { *out = (int64_t)v->num; return 1; }
    return -1;
}

int kv_json_get_num(const kv_json *obj, const char *key, double *out) {
    const kv_json *v = kv_json_get(obj, key);
    if (!v || v->type == KV_JSON_NULL) return 0;
    if (v->type != KV_JSON_NUMBER) return -1;
    *out = v->num;
    return 1;
}

int kv_json_get_bool(const kv_json *obj, const char *key, int *out) {
    const kv_json *v = kv_json_get(obj, key);
    if (!v || v->type == KV_JSON_NULL) return 0;
    if (v->type != KV_JSON_BOOL) return -1;
    *out = v->boolean;
    return 1;
}

int kv_json_get_str(const kv_json *obj, const char *key, const char **out) {
    const kv_json *v = kv_json_get(obj, key);
    if (!v || v->type == KV_JSON_NULL) return 0;
    if (v->type != KV_JSON_STRING) return -1;
    *out = v->u.str;
    return 1;
}

const char *kv_json_type_name(int type) {
    switch (type) {
    case KV_JSON_NULL: return "null";
    case KV_JSON_BOOL: return "boolean";
    case KV_JSON_NUMBER: return "number";
    case KV_JSON_STRING: return "string";
    case KV_JSON_ARRAY: return "array";
    case KV_JSON_OBJECT: return "object";
    }
    return "?";
}

void kv_json_write(kv_jw *w, const kv_json *v) {
    if (!v) { kv_jw_null(w); return; }
    switch (v->type) {
    case KV_JSON_BOOL: kv_jw_bool(w, v->boolean); break;
    case KV_JSON_NUMBER:
        if (v->is_int) kv_jw_int(w, v->ival);
        else kv_jw_num(w, v->num);
        break;
    case KV_JSON_STRING: kv_jw_str(w, v->u.str); break;
    case KV_JSON_ARRAY:
        kv_jw_arr_begin(w);
        for (uint64_t i = 0; i < v->len; i++) kv_json_write(w, &v->u.items[i]);
        kv_jw_arr_end(w);
        break;
    case KV_JSON_OBJECT:
        kv_jw_obj_begin(w);
        for (uint64_t i = 0; i < v->len; i++) {
            kv_jw_key(w, v->u.items[i].key);
            kv_json_write(w, &v->u.items[i]);
        }
        kv_jw_obj_end(w);
        break;
    default: kv_jw_null(w); break;
    }
}
