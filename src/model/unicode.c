/* unicode.c — strict UTF-8 decoding (RFC 3629 §4 byte sequences) and code point class lookups over the
 * generated range tables (unicode_tables.c), with an ASCII fast path. */
#include "model/unicode.h"

size_t kv_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp, int *valid) {
    uint8_t b = s[0];
    if (b < 0x80) { *cp = b; *valid = 1; return 1; }
    size_t len;
    uint32_t v, min;
    if (b >= 0xC2 && b <= 0xDF) { len = 2; v = b & 0x1Fu; min = 0x80; }
    else if (b >= 0xE0 && b <= 0xEF) { len = 3; v = b & 0x0Fu; min = 0x800; }
    else if (b >= 0xF0 && b <= 0xF4) { len = 4; v = b & 0x07u; min = 0x10000; }
    else goto bad;
    if (n < len) goto bad;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) goto bad;
    *cp = v;
    *valid = 1;
    return len;
bad:
    *cp = KV_UCP_REPLACEMENT;
    *valid = 0;
    return 1;
}

size_t kv_utf8_encode(uint32_t cp, char *buf) {
    uint8_t *o = (uint8_t *)buf;
    if (cp < 0x80) { o[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { o[0] = (uint8_t)(0xC0 | (cp >> 6)); o[1] = (uint8_t)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp > 0x10FFFF) return 0;
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

int kv_utf8_valid(const char *text, size_t len, size_t *bad_offset) {
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) { i++; continue; }
        uint32_t cp;
        int ok;
        size_t l = kv_utf8_decode(s + i, len - i, &cp, &ok);
        if (!ok) {
            if (bad_offset) *bad_offset = i;
            return 0;
        }
        i += l;
    }
    return 1;
}

static uint32_t ascii_flags(uint32_t c) {
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return KV_UCP_LETTER;
    if (c >= '0' && c <= '9') return KV_UCP_NUMBER;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return KV_UCP_SPACE;
    return 0;
}

uint32_t kv_ucp_flags(uint32_t cp) {
    if (cp < 0x80) return ascii_flags(cp);
    size_t lo = 0, hi = kv_ucp_n_ranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (kv_ucp_ranges[mid].last < cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo < kv_ucp_n_ranges && kv_ucp_ranges[lo].first <= cp) return kv_ucp_ranges[lo].flags;
    return 0;
}

uint32_t kv_ucp_tolower(uint32_t cp) {
    if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    size_t lo = 0, hi = kv_ucp_n_lower;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (kv_ucp_lower[mid].from < cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo < kv_ucp_n_lower && kv_ucp_lower[lo].from == cp) return kv_ucp_lower[lo].to;
    return cp;
}
