/* test_golden.c — golden outputs of `kvant quantize`: a set of representative recipes run on proxy-27m (and
 * the GGUF / llama2.c sources), each output hashed and compared with the value recorded on main at commit
 * a86ab5d (before the quantize redesign of issue 12). A refactor that changes no behaviour keeps every hash.
 *
 * What is hashed (FNV-1a 64, tests/test_golden.c golden_hash_*):
 *   GGUF: version, tensor count, every KV pair (key, type, value bytes) in file order EXCEPT the keys of
 *         k_ignored_keys below, every tensor info (name, dims, type, offset), and the data section
 *         (from the aligned data start to the end of the file).
 *   safetensors: the header's JSON (types, strings, numbers, members in order) except the __metadata__ keys
 *         of k_ignored_keys, then the data bytes.
 * The KV count in the GGUF header is not hashed, so that adding a key does not change the hash.
 *
 * Changing outputs on purpose:
 *   - a NEW metadata key (informational, it does not change any existing byte's meaning): add it to
 *     k_ignored_keys (a trailing '*' matches a prefix) in the same commit;
 *   - a change of tensor bytes or of an existing key's value: update the affected hashes in the same commit
 *     and say why in the commit message. KVANT_GOLDEN_PRINT=1 build/kvant_test golden prints every
 *     recipe's current hash as a C table row.
 * The hashes are those of the default build (gcc -O2 -march=native) on x86-64, recorded without OpenBLAS;
 * the calibrated methods whose Hessians/Cholesky go through OpenBLAS when it is found (gptq, mr-gptq,
 * watersic) also carry the hash of an OpenBLAS build (blas_hash, recorded with Debian 12's 0.3.21 and its
 * Prescott kernels, which tests/runner.c pins: OpenBLAS's CPU-specific kernels round differently). Other
 * compilers may round them differently (the test then fails and says so).
 * The calibrated recipes use one window of 512 calibration tokens (and watersic only=... one block) to stay
 * cheap; the slowest ones (awq, gptq, mr-gptq) are skipped under sanitizers. */
#include "test.h"
#include "io/json.h"
#include <stdint.h>

/* Keys added after the golden values were recorded (informational metadata). */
static const char *const k_ignored_keys[] = {
    "kvant.quantize.recipe",
};

static int key_ignored(const char *key, size_t len) {
    for (size_t i = 0; i < sizeof k_ignored_keys / sizeof k_ignored_keys[0]; i++) {
        const char *k = k_ignored_keys[i];
        size_t kl = strlen(k);
        if (kl && k[kl - 1] == '*') {
            if (len >= kl - 1 && !memcmp(key, k, kl - 1)) return 1;
        } else if (len == kl && !memcmp(key, k, kl))
            return 1;
    }
    return 0;
}

typedef struct fnv { uint64_t h; } fnv;
static void fnv_init(fnv *f) { f->h = 0xcbf29ce484222325ULL; }
static void fnv_add(fnv *f, const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = f->h;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    f->h = h;
}
static void fnv_u64(fnv *f, uint64_t v) { fnv_add(f, &v, 8); }

typedef struct rd { const uint8_t *p; size_t n, off; int bad; } rd;
static const uint8_t *rd_take(rd *r, size_t n) {
    if (r->bad || n > r->n - r->off) { r->bad = 1; return NULL; }
    const uint8_t *q = r->p + r->off;
    r->off += n;
    return q;
}
static uint64_t rd_u(rd *r, size_t n) {
    const uint8_t *q = rd_take(r, n);
    uint64_t v = 0;
    if (q) memcpy(&v, q, n); /* little-endian host (x86-64, as the recorded values) */
    return v;
}

static size_t gguf_scalar_size(uint32_t t) {
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sz[t] : 0;
}

/* Skips one value of type t (arrays hold scalars or strings). */
static void gguf_skip_value(rd *r, uint32_t t, int depth) {
    if (t == 8) { uint64_t l = rd_u(r, 8); rd_take(r, (size_t)l); return; }
    if (t == 9 && depth == 0) {
        uint32_t et = (uint32_t)rd_u(r, 4);
        uint64_t n = rd_u(r, 8);
        for (uint64_t i = 0; i < n && !r->bad; i++) gguf_skip_value(r, et, 1);
        return;
    }
    size_t s = gguf_scalar_size(t);
    if (!s) { r->bad = 1; return; }
    rd_take(r, s);
}

static int golden_hash_gguf(const uint8_t *p, size_t n, uint64_t *out) {
    rd r = {p, n, 0, 0};
    fnv f;
    fnv_init(&f);
    if (n < 24 || memcmp(p, "GGUF", 4)) return -1;
    rd_take(&r, 4);
    fnv_u64(&f, rd_u(&r, 4));
    uint64_t nt = rd_u(&r, 8), nkv = rd_u(&r, 8);
    fnv_u64(&f, nt);
    uint64_t align = 32;
    for (uint64_t i = 0; i < nkv && !r.bad; i++) {
        uint64_t kl = rd_u(&r, 8);
        const char *key = (const char *)rd_take(&r, (size_t)kl);
        size_t start = r.off;
        uint32_t t = (uint32_t)rd_u(&r, 4);
        gguf_skip_value(&r, t, 0);
        if (r.bad) break;
        if (kl == 17 && !memcmp(key, "general.alignment", 17) && t == 4) memcpy(&align, p + start + 4, 4), align &= 0xffffffffu;
        if (key_ignored(key, (size_t)kl)) continue;
        fnv_u64(&f, kl);
        fnv_add(&f, key, (size_t)kl);
        fnv_add(&f, p + start, r.off - start);
    }
    size_t ti = r.off;
    for (uint64_t i = 0; i < nt && !r.bad; i++) {
        uint64_t l = rd_u(&r, 8);
        rd_take(&r, (size_t)l);
        uint32_t nd = (uint32_t)rd_u(&r, 4);
        if (nd > 8) r.bad = 1;
        rd_take(&r, 8 * (size_t)nd + 4 + 8);
    }
    if (r.bad || !align) return -1;
    fnv_add(&f, p + ti, r.off - ti);
    size_t data = (r.off + align - 1) / align * align;
    if (data > n) return -1;
    fnv_add(&f, p + data, n - data);
    *out = f.h;
    return 0;
}

static void json_hash(fnv *f, const kv_json *v, int in_metadata) {
    uint8_t t = v->type;
    fnv_add(f, &t, 1);
    switch (v->type) {
    case KV_JSON_BOOL: fnv_add(f, &v->boolean, 1); break;
    case KV_JSON_NUMBER: fnv_add(f, &v->num, 8); break;
    case KV_JSON_STRING: fnv_u64(f, v->len); fnv_add(f, v->u.str, (size_t)v->len); break;
    case KV_JSON_ARRAY:
    case KV_JSON_OBJECT:
        for (uint64_t i = 0; i < v->len; i++) {
            const kv_json *c = &v->u.items[i];
            if (c->key) {
                if (in_metadata && key_ignored(c->key, c->key_len)) continue;
                fnv_u64(f, c->key_len);
                fnv_add(f, c->key, c->key_len);
            }
            json_hash(f, c, c->key && c->key_len == 12 && !memcmp(c->key, "__metadata__", 12));
        }
        break;
    default: break;
    }
}

static int golden_hash_safetensors(const uint8_t *p, size_t n, uint64_t *out) {
    if (n < 8) return -1;
    uint64_t hl;
    memcpy(&hl, p, 8);
    if (hl > n - 8) return -1;
    kv_json_doc *doc = NULL;
    kv_error err;
    kv_error_clear(&err);
    if (kv_json_parse((const char *)p + 8, (size_t)hl, NULL, &doc, &err) != KV_OK) return -1;
    fnv f;
    fnv_init(&f);
    json_hash(&f, kv_json_root(doc), 0);
    kv_json_free(doc);
    fnv_add(&f, p + 8 + hl, n - 8 - (size_t)hl);
    *out = f.h;
    return 0;
}

/* One recipe: the source (relative to ../shared), the output name and the options. SLOW ones are skipped
 * under sanitizers. "@CALIB" is replaced by the calibration options, "@TMP" by the test's directory. */
typedef struct golden_case {
    const char *name, *source, *out, *args;
    uint64_t hash;
    int slow;
    uint64_t blas_hash;       /* the hash of a build with OpenBLAS (-DKV_HAVE_OPENBLAS) when it differs, else 0 */
} golden_case;

#define P27 "models/proxy-27m"
#define GGUF27 "models/proxy-27m-gguf/proxy-27m-bf16.gguf"
static const golden_case k_cases[] = {
    {"q4_k_m", P27, "o.gguf", "", 0xe374ec66130a8706ULL, 0, 0},
    {"q8_0", P27, "o.gguf", "--format q8_0", 0xd2d4206812ae6d5bULL, 0, 0},
    {"q3_k_m", P27, "o.gguf", "--format q3_k_m", 0xd615efa919b629cfULL, 0, 0},
    {"iq4_xs_pure", P27, "o.gguf", "--format iq4_xs --pure", 0xcbae9ce58debffe1ULL, 0, 0},
    {"int4_g128_asym", P27, "o.gguf", "--format int4_g128_asym", 0xcc9fffacb3d6c100ULL, 0, 0},
    {"nvfp4", P27, "o.gguf", "--format nvfp4", 0x43d6e3a713cf60a0ULL, 0, 0},
    {"mxfp4_ocp_prescale", P27, "o.gguf", "--format mxfp4_ocp --transform prescale", 0xf639dc6abf29c004ULL, 0, 0},
    {"higgs_rht", P27, "o.gguf", "--format higgs_p2_b4 --transform rht", 0x2d662530681e2e65ULL, 0, 0},
    {"quarot_int4", P27, "o.gguf", "--format int4_g128_sym --transform quarot", 0x0630b1f8dc2cdd16ULL, 0, 0},
    {"smoothquant_q8_0", P27, "o.gguf", "--format q8_0 --transform smoothquant:0.6 @CALIB", 0xb6eee58adcaffca9ULL, 0, 0},
    {"imatrix_q4_k_m", P27, "o.gguf", "--format q4_k_m @CALIB", 0xb782884190595883ULL, 0, 0},
    {"override_q4_k_s", P27, "o.gguf", "--format q4_k_s --override ffn_down=q6_k --override 'token_embd|^output\\.=bf16'", 0x3640df2398239020ULL, 0, 0},
    {"entropy_code_int4", P27, "o.gguf", "--format int4_g128_asym --entropy-code", 0xa8473f018e1de198ULL, 0, 0},
    {"safetensors_int4", P27, "o.safetensors", "--format int4_g128_asym --out-format safetensors", 0x26b0549165169571ULL, 0, 0},
    {"transform_only_quarot", P27, "o.gguf", "--transform quarot --transform-only", 0x8390497e264fcfdeULL, 0, 0},
    {"llm_int8", P27, "o.gguf", "--method llm-int8:threshold=4 @CALIB", 0xd22ed59123b5a182ULL, 0, 0},
    {"watersic_3bits", P27, "o.gguf", "--format f16 --method watersic:bits=3,only=blk.1. @CALIB", 0x0b11fc796905418dULL, 0, 0x6650640a3ec53b6cULL},
    {"bits_uniform", P27, "o.gguf", "--bits 4 --formats q3_k,q4_k,q6_k --allocate uniform", 0x5c30aaaca1280958ULL, 0, 0},
    {"recipe_json", P27, "o.gguf", "--recipe @TMP/recipe.json", 0xd3fbf205df4a980cULL, 0, 0},
    {"gguf_source_q4_0", GGUF27, "o.gguf", "--format q4_0", 0x181c062971997aa3ULL, 0, 0},
    /* GGUF sources again (q/k rows un-permuted as read, issue 12): raw q/k copies on the streamed and the
     * whole-model paths, a whole-model rotation, a calibrated transform running the GGUF model */
    {"gguf_source_keep_qk", GGUF27, "o.gguf", "--format q4_k_m --override 'attn_q|attn_k=bf16'", 0xf4bbf86777a3b38fULL, 0, 0},
    {"gguf_source_entropy_keep_qk", GGUF27, "o.gguf", "--format int4_g128_asym --entropy-code --override 'attn_q|attn_k=bf16'", 0x7184472b6dfeb0f8ULL, 0, 0},
    {"gguf_source_rht", GGUF27, "o.gguf", "--format int4_g128_sym --transform rht", 0x78b7d44b941ccb18ULL, 0, 0},
    {"gguf_source_smoothquant", GGUF27, "o.gguf", "--format q8_0 --transform smoothquant:0.6 @CALIB", 0x1c3e9409765ce908ULL, 0, 0},
    {"llama2c_source_q8_0", "models/stories260K/stories260K.bin", "o.gguf", "--format q8_0", 0xc84ecc0dd9c105b5ULL, 0, 0},
    {"gptq_int4_g128", P27, "o.gguf", "--format int4_g128_asym --method gptq @CALIB", 0x2fac1fa14d55d083ULL, 1, 0xd78d6951f380b89aULL},
    {"mr_gptq_mxfp4", P27, "o.gguf", "--format mxfp4_ocp --transform rht:32 --method mr-gptq @CALIB", 0xaf8b0541a999f92eULL, 1, 0x5803832fa9780f7cULL},
    {"awq_int4", P27, "o.gguf", "--format int4_g128_asym --transform awq @CALIB", 0x8913b5c1a7e78771ULL, 1, 0},
};

static const char k_recipe_json[] =
    "{\"format\": \"q5_k_m\", \"overrides\": [\"attn_output=q8_0\"], \"seed\": 3, \"transform\": \"rht:128\"}\n";

static void subst(char *dst, size_t n, const char *src, const char *calib, const char *tmp) {
    size_t o = 0;
    while (*src && o + 1 < n) {
        const char *rep = NULL;
        size_t skip = 0;
        if (!strncmp(src, "@CALIB", 6)) rep = calib, skip = 6;
        else if (!strncmp(src, "@TMP", 4)) rep = tmp, skip = 4;
        if (rep) {
            o += (size_t)snprintf(dst + o, n - o, "%s", rep);
            if (o >= n) o = n - 1;
            src += skip;
        } else
            dst[o++] = *src++;
    }
    dst[o] = 0;
}

static void run_case(kv_test_ctx *T, const golden_case *c) {
    char src[512], data[512], calib[600], args[4096], extra[2048], out[700];
    kv_test_shared(src, sizeof src, c->source);
    kv_test_shared(data, sizeof data, "data/calib.txt");
    if (!kv_test_exists(src) || !kv_test_exists(data)) SKIP("%.100s or %.100s not found", src, data);
    if (c->slow && getenv("KVANT_SANITIZED")) SKIP("slow under sanitizers");
    const char *tmp = kv_test_tmpdir();
    char rpath[700];
    snprintf(rpath, sizeof rpath, "%s/recipe.json", tmp);
    REQUIRE(kv_test_write_file(rpath, k_recipe_json, sizeof k_recipe_json - 1) == 0);
    snprintf(calib, sizeof calib, "--calib %s --calib-tokens 512", data);
    subst(extra, sizeof extra, c->args, calib, tmp);
    snprintf(out, sizeof out, "%s/%s", tmp, c->out);
    snprintf(args, sizeof args, "quantize %s -o %s %s --quiet -t 2", src, out, extra);
    char *log = NULL;
    int rc = kv_test_run_cli(args, &log);
    CHECK_MSG(rc == 0, "%s: exit %d:\n%s", c->name, rc, log ? log : "");
    free(log);
    if (rc != 0) return;
    size_t n = 0;
    uint8_t *bytes = kv_test_read_file(out, &n);
    REQUIRE(bytes != NULL);
    uint64_t h = 0;
    int ok = strstr(c->out, ".safetensors") ? golden_hash_safetensors(bytes, n, &h) : golden_hash_gguf(bytes, n, &h);
    free(bytes);
    CHECK_MSG(ok == 0, "%s: output %s does not parse", c->name, out);
    if (getenv("KVANT_GOLDEN_PRINT")) fprintf(stderr, "GOLDEN {\"%s\", 0x%016llxULL},\n", c->name, (unsigned long long)h);
    uint64_t want = c->hash;
#ifdef KV_HAVE_OPENBLAS
    if (c->blas_hash) want = c->blas_hash;
#endif
    CHECK_MSG(h == want, "%s: output hash 0x%016llx, golden 0x%016llx (kvant %s)", c->name,
              (unsigned long long)h, (unsigned long long)want, args);
}

static const golden_case *find_case(const char *name) {
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++)
        if (!strcmp(k_cases[i].name, name)) return &k_cases[i];
    return NULL;
}

#define GOLDEN(id, name) KV_TEST(golden_##id) { const golden_case *c = find_case(name); REQUIRE(c != NULL); run_case(T, c); }
GOLDEN(q4_k_m, "q4_k_m")
GOLDEN(gguf_source_keep_qk, "gguf_source_keep_qk")
GOLDEN(gguf_source_entropy_keep_qk, "gguf_source_entropy_keep_qk")
GOLDEN(gguf_source_rht, "gguf_source_rht")
GOLDEN(gguf_source_smoothquant, "gguf_source_smoothquant")
GOLDEN(q8_0, "q8_0")
GOLDEN(q3_k_m, "q3_k_m")
GOLDEN(iq4_xs_pure, "iq4_xs_pure")
GOLDEN(int4_g128_asym, "int4_g128_asym")
GOLDEN(nvfp4, "nvfp4")
GOLDEN(mxfp4_ocp_prescale, "mxfp4_ocp_prescale")
GOLDEN(higgs_rht, "higgs_rht")
GOLDEN(quarot_int4, "quarot_int4")
GOLDEN(smoothquant_q8_0, "smoothquant_q8_0")
GOLDEN(imatrix_q4_k_m, "imatrix_q4_k_m")
GOLDEN(override_q4_k_s, "override_q4_k_s")
GOLDEN(entropy_code_int4, "entropy_code_int4")
GOLDEN(safetensors_int4, "safetensors_int4")
GOLDEN(transform_only_quarot, "transform_only_quarot")
GOLDEN(llm_int8, "llm_int8")
GOLDEN(watersic_3bits, "watersic_3bits")
GOLDEN(bits_uniform, "bits_uniform")
GOLDEN(recipe_json, "recipe_json")
GOLDEN(gguf_source_q4_0, "gguf_source_q4_0")
GOLDEN(llama2c_source_q8_0, "llama2c_source_q8_0")
GOLDEN(gptq_int4_g128, "gptq_int4_g128")
GOLDEN(mr_gptq_mxfp4, "mr_gptq_mxfp4")
GOLDEN(awq_int4, "awq_int4")
