/* fwd_cli.h — helpers shared by the forward-pass commands (eval, run, bench): open + load a model, read and
 * validate a text file, parse common options. */
#ifndef KV_FWD_CLI_H
#define KV_FWD_CLI_H

#include "kvant.h"

typedef struct kv_cli_model {
    kv_model_file *mf;
    kv_model *m;
    kv_tokenizer *tok; /* NULL unless asked for */
} kv_cli_model;

/* Opens PATH, builds the runnable model and (want_tok) its tokenizer. opts->prepack < 0: prepack when the
 * fp32 panels take at most 2 GiB, bf16_dot and act_q8 are off (the model then caches panels only for its
 * f32/f16/bf16 linears: quantized weights stay packed, kv_model_load). */
kv_status kv_cli_model_open(const char *path, const kv_model_load_opts *opts, int want_tok, kv_cli_model *out,
                            kv_error *err);
void kv_cli_model_close(kv_cli_model *cm);
/* Parses --act-dot "q8|f32" into kv_model_load_opts.act_q8 (1 / 0); returns 0 on success. */
int kv_cli_parse_act_dot(const char *s, int *act_q8);
/* Parses "auto|exact|bf16|f16"; returns 0 on success. */
int kv_cli_parse_rope_freq(const char *s, kv_rope_freq_mode *out);
/* Reads a whole text file (malloc'd, NUL-terminated). Refuses an empty file and invalid UTF-8 (the
 * message names the byte offset). */
kv_status kv_cli_read_text(const char *path, char **text, size_t *len, kv_error *err);
/* Offset of the first invalid UTF-8 sequence, or -1 when s[0..n) is valid. */
int64_t kv_utf8_invalid_offset(const char *s, size_t n);

#endif
