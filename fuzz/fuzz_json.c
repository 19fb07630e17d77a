/* fuzz_json.c — libFuzzer target for the JSON parser (src/io/json.c): parse, then walk the whole DOM with
 * the lookup functions (every key looked up, every string read to its length). */
#include "io/json.h"
#include <string.h>

static volatile uint64_t g_sink;

static void walk(const kv_json *v, const kv_json *parent, int depth) {
    if (depth > 300) __builtin_trap(); /* beyond the parser's depth limit */
    switch (v->type) {
    case KV_JSON_STRING:
        for (uint64_t i = 0; i < v->len; i++) g_sink += (uint8_t)v->u.str[i];
        break;
    case KV_JSON_NUMBER:
        g_sink += (uint64_t)v->is_int + (uint64_t)(v->num == v->num);
        break;
    case KV_JSON_ARRAY:
        for (uint64_t i = 0; i < v->len; i++) {
            if (kv_json_at(v, i) != &v->u.items[i]) __builtin_trap();
            walk(&v->u.items[i], v, depth + 1);
        }
        break;
    case KV_JSON_OBJECT:
        for (uint64_t i = 0; i < v->len && i < 64; i++) {
            const kv_json *m = &v->u.items[i];
            if (!m->key) __builtin_trap();
            /* keys with an escaped NUL cannot be looked up by C string */
            if (strlen(m->key) == m->key_len && !kv_json_get(v, m->key)) __builtin_trap();
        }
        for (uint64_t i = 0; i < v->len; i++) walk(&v->u.items[i], v, depth + 1);
        g_sink += kv_json_find_duplicate_key(v) != NULL;
        break;
    default:
        break;
    }
    (void)parent;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kv_error err;
    kv_error_clear(&err);
    kv_json_doc *doc;
    kv_json_opts opts = {"fuzz.json", 0, 1 << 20, 0};
    if (kv_json_parse((const char *)data, size, &opts, &doc, &err) != KV_OK) {
        if (!err.message[0]) __builtin_trap();
        return 0;
    }
    walk(kv_json_root(doc), NULL, 0);
    kv_json_free(doc);
    return 0;
}
