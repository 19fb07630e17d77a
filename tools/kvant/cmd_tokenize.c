/* cmd_tokenize.c — `kvant tokenize MODEL [--ids-only] [--no-bos] [--json] (TEXT | --file F)`: the token ids
 * of a text, printed like llama.cpp's llama-tokenize (`ID -> 'PIECE'` per line). docs/tokenize.md. */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_usage[] =
    "usage: kvant tokenize MODEL [options] (TEXT | --file F)\n"
    "\n"
    "Prints the token ids of TEXT (or of the contents of F). MODEL is a Hugging Face model directory, a GGUF\n"
    "file, a SentencePiece tokenizer.model or a tokenizer.json.\n"
    "\n"
    "options:\n"
    "  --file F      read the text from file F (bytes as they are; no newline is stripped)\n"
    "  --ids-only    print only the ids, as a Python-style list: [1, 2, 3]\n"
    "  --json        print {\"ids\": [...], \"n_tokens\": N}\n"
    "  --no-bos      do not prepend the BOS token (default: prepend it when the tokenizer does)\n"
    "  --quiet       no warnings on stderr\n"
    "  -h, --help    this help\n"
    "\n"
    "Default output: one line per token, `ID -> 'PIECE'`, where PIECE is the token's text with control\n"
    "characters escaped (\\n, \\t, \\xNN).\n";

static int read_text_file(const char *path, char **text, size_t *len, kv_error *err) {
    kv_mapped m; /* regular files only: a FIFO or a device is refused, not waited on */
    if (kv_map_file(path, &m, err) != KV_OK) return 1;
    char *buf = malloc(m.size + 1);
    if (!buf) {
        kv_unmap_file(&m);
        kv_fail(err, KV_ENOMEM, "out of memory reading the text file");
        kv_error_context(err, path, -1, NULL);
        return 1;
    }
    memcpy(buf, m.data, m.size);
    buf[m.size] = 0;
    *text = buf;
    *len = m.size;
    kv_unmap_file(&m);
    return 0;
}

/* first malformed UTF-8 byte, or -1 */
static long long first_bad_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t l = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
        if (!l || i + l > n) return (long long)i;
        for (size_t k = 1; k < l; k++)
            if ((s[i + k] & 0xC0) != 0x80) return (long long)i;
        if ((b == 0xE0 && s[i + 1] < 0xA0) || (b == 0xED && s[i + 1] > 0x9F) || (b == 0xF0 && s[i + 1] < 0x90) ||
            (b == 0xF4 && s[i + 1] > 0x8F))
            return (long long)i;
        i += l;
    }
    return -1;
}

/* control characters as escapes; a piece that is not whole UTF-8 (a byte token) shows its bytes as \xNN */
static void print_escaped(FILE *out, const char *s, size_t n) {
    int raw_bytes = first_bad_utf8((const unsigned char *)s, n) >= 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (raw_bytes && c >= 0x80) fprintf(out, "\\x%02x", c);
        else if (c == '\n') fputs("\\n", out);
        else if (c == '\t') fputs("\\t", out);
        else if (c == '\r') fputs("\\r", out);
        else if (c == '\\') fputs("\\\\", out);
        else if (c < 0x20 || c == 0x7f) fprintf(out, "\\x%02x", c);
        else fputc(c, out);
    }
}

int kv_cmd_tokenize(int argc, char **argv) {
    static const char *cmd = "tokenize";
    if (kv_cli_wants_help(argc, argv)) {
        fputs(k_usage, stdout);
        return 0;
    }
    const char *model = NULL, *text_arg = NULL, *file = NULL;
    int ids_only = 0, json = 0, no_bos = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        if (kv_cli_opt(argc, argv, &i, "--file", "-f", &val)) {
            if (!val) return kv_cli_usage(cmd, "--file needs a path");
            file = val;
        } else if (kv_cli_flag(argv, i, "--ids-only", NULL)) ids_only = 1;
        else if (kv_cli_flag(argv, i, "--json", NULL)) json = 1;
        else if (kv_cli_flag(argv, i, "--no-bos", NULL)) no_bos = 1;
        else if (kv_cli_flag(argv, i, "--quiet", "-q")) quiet = 1;
        else if (argv[i][0] == '-' && argv[i][1] && strcmp(argv[i], "--"))
            return kv_cli_usage(cmd, "unknown option '%s'", argv[i]);
        else {
            if (!strcmp(argv[i], "--")) {
                if (++i >= argc) break;
            }
            if (!model) model = argv[i];
            else if (!text_arg) text_arg = argv[i];
            else return kv_cli_usage(cmd, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!model) return kv_cli_usage(cmd, "missing MODEL");
    if (!text_arg && !file) return kv_cli_usage(cmd, "missing TEXT (or --file F)");
    if (text_arg && file) return kv_cli_usage(cmd, "give TEXT or --file, not both");
    if (ids_only && json) return kv_cli_usage(cmd, "--ids-only and --json exclude each other");

    kv_error err;
    kv_error_clear(&err);
    char *text = NULL;
    size_t len = 0;
    if (file) {
        if (read_text_file(file, &text, &len, &err)) return kv_cli_fail(cmd, &err);
    } else {
        len = strlen(text_arg);
        text = malloc(len + 1);
        if (!text) return kv_cli_fail(cmd, &err);
        memcpy(text, text_arg, len + 1);
    }
    long long bad = first_bad_utf8((const unsigned char *)text, len);
    if (bad >= 0 && !quiet)
        fprintf(stderr, "kvant tokenize: warning: the text is not valid UTF-8 (first bad byte at offset %lld); "
                        "malformed bytes are encoded as byte tokens\n", bad);

    kv_tokenizer *tok = NULL;
    if (kv_tokenizer_load(model, &tok, &err)) {
        free(text);
        return kv_cli_fail(cmd, &err);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int add_bos = !no_bos && kv_tokenizer_add_bos_default(tok);
    if (kv_tokenize(tok, text, len, add_bos, &ids, &n, &err)) {
        free(text);
        kv_tokenizer_free(tok);
        return kv_cli_fail(cmd, &err);
    }
    char piece[1024];
    if (json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 0);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "ids");
        kv_jw_arr_begin(&w);
        for (size_t i = 0; i < n; i++) kv_jw_int(&w, ids[i]);
        kv_jw_arr_end(&w);
        kv_jw_key(&w, "n_tokens");
        kv_jw_int(&w, (int64_t)n);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else if (ids_only) {
        fputc('[', stdout);
        for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", (int)ids[i]);
        fputs("]\n", stdout);
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t l = kv_token_to_text(tok, ids[i], piece, sizeof piece);
            printf("%6d -> '", (int)ids[i]);
            print_escaped(stdout, piece, l < sizeof piece ? l : sizeof piece);
            fputs("'\n", stdout);
        }
    }
    free(ids);
    free(text);
    kv_tokenizer_free(tok);
    return 0;
}
