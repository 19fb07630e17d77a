/* fwd_cli.c — helpers shared by `kvant eval`, `kvant run` and `kvant bench` (see fwd_cli.h). UTF-8 validation
 * follows RFC 3629 / Unicode Table 3-7 (no overlongs, no surrogates, nothing above U+10FFFF). */
#include "fwd_cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kv_status kv_cli_model_open(const char *path, const kv_model_load_opts *opts, int want_tok, kv_cli_model *out,
                            kv_error *err) {
    memset(out, 0, sizeof *out);
    kv_status st = kv_model_open(path, &out->mf, err);
    if (st != KV_OK) return st;
    kv_model_load_opts o = {0};
    if (opts) o = *opts;
    if (o.prepack < 0) /* auto: cache fp32 GEMM panels when they stay small (<= 2 GiB) */
        o.prepack = !o.bf16_dot && !o.act_q8 && kv_model_n_params(out->mf) <= ((int64_t)1 << 29);
    if ((st = kv_model_load(out->mf, &o, &out->m, err)) != KV_OK) goto fail;
    if (want_tok && (st = kv_tokenizer_load_for_model(out->mf, &out->tok, err)) != KV_OK) goto fail;
    return KV_OK;
fail:
    kv_cli_model_close(out);
    return st;
}

void kv_cli_model_close(kv_cli_model *cm) {
    kv_tokenizer_free(cm->tok);
    kv_model_free(cm->m);
    kv_model_close(cm->mf);
    memset(cm, 0, sizeof *cm);
}

int kv_cli_parse_act_dot(const char *s, int *act_q8) {
    if (s && !strcmp(s, "q8")) *act_q8 = 1;
    else if (s && !strcmp(s, "f32")) *act_q8 = 0;
    else return -1;
    return 0;
}

int kv_cli_parse_rope_freq(const char *s, kv_rope_freq_mode *out) {
    static const char *const names[] = {"auto", "exact", "bf16", "f16"};
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, names[i])) { *out = (kv_rope_freq_mode)i; return 0; }
    return -1;
}

int64_t kv_utf8_invalid_offset(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        const unsigned c = s[i];
        int len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return (int64_t)i;
        if (i + (size_t)len > n) return (int64_t)i;
        if (s[i + 1] < lo || s[i + 1] > hi) return (int64_t)i;
        for (int k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return (int64_t)i;
        i += (size_t)len;
    }
    return -1;
}

kv_status kv_cli_read_text(const char *path, char **text, size_t *len, kv_error *err) {
    *text = NULL;
    *len = 0;
    kv_mapped mp;
    kv_status st = kv_map_file(path, &mp, err);
    if (st != KV_OK) return st;
    if (mp.size == 0) {
        kv_unmap_file(&mp);
        kv_fail(err, KV_EFORMAT, "the text file is empty");
        kv_error_context(err, path, -1, NULL);
        return KV_EFORMAT;
    }
    const int64_t bad = kv_utf8_invalid_offset((const char *)mp.data, mp.size);
    if (bad >= 0) {
        const unsigned byte = mp.data[bad];
        kv_unmap_file(&mp);
        kv_fail(err, KV_EFORMAT, "the text is not valid UTF-8 (byte 0x%02X)", byte);
        kv_error_context(err, path, bad, NULL);
        return KV_EFORMAT;
    }
    char *t = malloc(mp.size + 1);
    if (!t) { kv_unmap_file(&mp); return kv_fail(err, KV_ENOMEM, "out of memory reading the text"); }
    memcpy(t, mp.data, mp.size);
    t[mp.size] = 0;
    *text = t;
    *len = mp.size;
    kv_unmap_file(&mp);
    return KV_OK;
}
