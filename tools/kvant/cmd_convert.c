/* cmd_convert.c — `kvant convert SRC -o OUT.gguf [--outtype f32|f16|bf16]`: a Hugging Face directory, a
 * llama2.c checkpoint or a GGUF to a GGUF that llama.cpp loads (library: kv_gguf_convert; docs/convert.md). */
#include "cli.h"
#include <stdio.h>
#include <string.h>

static const char k_usage[] =
    "usage: kvant convert SRC -o OUT.gguf [--outtype f32|f16|bf16] [--json] [--quiet]\n"
    "\n"
    "Convert a model to GGUF v3 as llama.cpp's convert_hf_to_gguf.py does: llama.cpp's metadata keys\n"
    "(general.*, llama.* / qwen2.* hyper-parameters, tokenizer.ggml.* from tokenizer.model or tokenizer.json),\n"
    "tensor names, and the attn_q/attn_k row permutation of its rotary layout. SRC is a Hugging Face directory\n"
    "(config.json + safetensors), a llama2.c checkpoint, or a GGUF (re-typed).\n"
    "\n"
    "options:\n"
    "  -o, --output PATH   the GGUF to write (written atomically: no partial file on failure)\n"
    "  --outtype T         f32, f16 (default) or bf16; 1-D tensors and norms stay f32 as in llama.cpp\n"
    "  --json              print a JSON summary {output, outtype, tensors, skipped, bytes, seconds}\n"
    "  -q, --quiet         no progress line\n"
    "  -h, --help          this help\n"
    "\n"
    "Exit status: 0 on success, 1 when the input cannot be read or converted, 2 on bad arguments.\n";

static int parse_outtype(const char *s, uint32_t *type) {
    if (!strcmp(s, "f32")) *type = KV_TYPE_F32;
    else if (!strcmp(s, "f16")) *type = KV_TYPE_F16;
    else if (!strcmp(s, "bf16")) *type = KV_TYPE_BF16;
    else return -1;
    return 0;
}

int kv_cmd_convert(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv)) {
        fputs(k_usage, stdout);
        return 0;
    }
    const char *src = NULL, *out = NULL, *val = NULL, *outtype_name = "f16";
    int json = 0, quiet = 0;
    uint32_t outtype = KV_TYPE_F16;
    for (int i = 1; i < argc; i++) {
        if (kv_cli_opt(argc, argv, &i, "--output", "-o", &val)) {
            if (!val) return kv_cli_usage("convert", "-o needs a path");
            out = val;
        } else if (kv_cli_opt(argc, argv, &i, "--outtype", NULL, &val)) {
            if (!val || parse_outtype(val, &outtype)) return kv_cli_usage("convert", "--outtype must be f32, f16 or bf16");
            outtype_name = val;
        } else if (kv_cli_flag(argv, i, "--json", NULL)) {
            json = 1;
        } else if (kv_cli_flag(argv, i, "--quiet", "-q")) {
            quiet = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return kv_cli_usage("convert", "unknown option '%s'", argv[i]);
        } else if (!src) {
            src = argv[i];
        } else {
            return kv_cli_usage("convert", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!src) return kv_cli_usage("convert", "missing SRC");
    if (!out) return kv_cli_usage("convert", "missing -o OUT.gguf");
    int prc = kv_cli_prepare_output("convert", out); /* before the work: a read-only directory fails now */
    if (prc) return prc;
    kv_error err;
    kv_error_clear(&err);
    kv_convert_result res;
    double t0 = kv_now_seconds();
    kv_status st = kv_gguf_convert(src, out, outtype, quiet || json, &res, &err);
    if (st) return kv_cli_fail("convert", &err);
    double secs = kv_now_seconds() - t0;
    if (json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "output"), kv_jw_str(&w, out);
        kv_jw_key(&w, "outtype"), kv_jw_str(&w, outtype_name);
        kv_jw_key(&w, "tensors"), kv_jw_int(&w, res.n_tensors);
        kv_jw_key(&w, "skipped"), kv_jw_int(&w, res.n_skipped);
        kv_jw_key(&w, "bytes"), kv_jw_int(&w, (int64_t)res.bytes);
        kv_jw_key(&w, "seconds"), kv_jw_num(&w, secs);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else if (!quiet) {
        printf("wrote %s: %lld tensors (%s), %.1f MiB in %.2f s\n", out, (long long)res.n_tensors, outtype_name,
               (double)res.bytes / (1 << 20), secs);
        if (res.n_skipped)
            printf("left out %lld source tensors that have no llama.cpp name\n", (long long)res.n_skipped);
    }
    return 0;
}
