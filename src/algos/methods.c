/* methods.c — the table of `kvant quantize --method` entries (kv_quant_method_find): each method's declared
 * options {name, type, default, range} and capabilities, the one parser that validates "NAME[:OPTIONS]" before
 * any work (kv_method_parse), and the help text written from the same tables (kv_method_help). docs/methods.md. */
#include "algos/quantize.h"
#include <math.h>
#include <stdio.h>

#define HESSIAN_OPTS                                                                                           \
    {"save-hessians", KV_MOPT_TEXT, 0, 0, 0, 0, "DIR", "write each block's Hessians to DIR (DIR/blk.L.*.kvh)"}, \
    {"load-hessians", KV_MOPT_TEXT, 0, 0, 0, 0, "DIR", "read the Hessians from DIR instead of running the model"}

static const kv_method_opt k_gptq_opts[] = {
    {"act-order", KV_MOPT_FLAG, 0, 0, 0, 0, NULL, "process columns by decreasing diag(H)"},
    {"static", KV_MOPT_FLAG, 0, 0, 0, 0, NULL, "format-block parameters from the original W, before the loop"},
    {"importance", KV_MOPT_FLAG, 0, 0, 0, 0, NULL, "pass diag(H) to the format's quantizer as importance"},
    {"damp", KV_MOPT_FLOAT, 0.01, 0, INFINITY, 0, NULL, "dampening: lambda = damp * mean(diag H)"},
    {"block", KV_MOPT_INT, 128, 1, 65536, 0, NULL, "lazy-update batch in columns"},
    HESSIAN_OPTS,
};

static const kv_method_opt k_mrgptq_opts[] = {
    {"act-order", KV_MOPT_FLAG, 0, 0, 0, 0, NULL, "process columns by decreasing diag(H)"},
    {"damp", KV_MOPT_FLOAT, 0.01, 0, INFINITY, 0, NULL, "dampening: lambda = damp * mean(diag H)"},
    HESSIAN_OPTS,
};

static const kv_method_opt k_watersic_opts[] = {
    {"bits", KV_MOPT_FLOAT, 0, 0, 16, 1, NULL, "target rate in bits/weight (or step=)"},
    {"step", KV_MOPT_FLOAT, 0, 0, INFINITY, 1, NULL, "fixed lattice step instead of a rate"},
    {"damp", KV_MOPT_FLOAT, 1e-4, 0, INFINITY, 0, NULL, "dampening: lambda = damp * mean(diag H)"},
    {"no-rescale", KV_MOPT_FLAG, 0, 0, 0, 0, NULL, "no per-row/column rescaling"},
    {"store", KV_MOPT_CHOICE, 0, 0, 0, 0, "ecw|decoded", "ecw: the entropy-coded container; decoded: the format's bytes"},
    {"only", KV_MOPT_TEXT, 0, 0, 0, 0, "TEXT", "WaterSIC only on matrices whose name contains TEXT (others: rtn)"},
    {"ecw-dir", KV_MOPT_TEXT, 0, 0, 0, 0, "DIR", "also write each container as DIR/<tensor>.kvec"},
    HESSIAN_OPTS,
};

static const kv_method_opt k_llmint8_opts[] = {
    {"threshold", KV_MOPT_FLOAT, 6.0, 0, INFINITY, 0, NULL, "outlier threshold on |x| (inf: plain int8 W8A8)"},
    {"head", KV_MOPT_FLAG, 0, 0, 0, 0, NULL, "quantize the output head too (default: kept in f16)"},
};

#define OPTS(t) t, (int)KV_ARRAY_LEN(t)

static const kv_quant_method k_methods[] = {
    {.name = "rtn", .run = kv_method_rtn, .per_tensor = 1,
     .summary = "round to nearest with the format's own (importance-weighted) quantizer"},
    {.name = "gptq", .needs_calib = 1, .run = kv_method_gptq, .layerwise = 1, .compensates = 1, .opts = OPTS(k_gptq_opts),
     .summary = "GPTQ error compensation onto any format (src/algos/gptq.c)"},
    {.name = "mr-gptq", .needs_calib = 1, .run = kv_method_mrgptq, .layerwise = 1, .compensates = 1, .needs_rotation = 1,
     .opts = OPTS(k_mrgptq_opts),
     .summary = "MR-GPTQ: GPTQ on Hadamard-rotated weights (--transform rht:GROUP) with fixed scales"},
    {.name = "watersic", .needs_calib = 1, .run = kv_method_watersic, .layerwise = 1, .entropy_coded = 1,
     .needs_one_of = "bits|step", .opts = OPTS(k_watersic_opts),
     .summary = "WaterSIC: entropy-coded successive interference cancellation (src/algos/watersic.c)"},
    {.name = "llm-int8", .needs_calib = 1, .run = kv_method_llmint8, .gguf_only = 1, .outlier_columns = 1,
     .no_importance = 1, .own_format = KV_LLMINT8_FORMAT, .embd_head_f16 = 1, .head_flag = "head",
     .opts = OPTS(k_llmint8_opts),
     .summary = "LLM.int8(): W8A8 vector-wise int8 with fp16 outlier input columns (src/algos/llmint8_method.c)"},
};

const kv_quant_method *kv_quant_method_find(const char *name) {
    for (size_t i = 0; name && i < KV_ARRAY_LEN(k_methods); i++)
        if (!strcmp(name, k_methods[i].name)) return &k_methods[i];
    return NULL;
}

const char *kv_quant_method_names(void) { return "rtn, gptq, mr-gptq, watersic, llm-int8"; }
int kv_quant_method_count(void) { return (int)KV_ARRAY_LEN(k_methods); }
const kv_quant_method *kv_quant_method_at(int i) {
    return i >= 0 && i < (int)KV_ARRAY_LEN(k_methods) ? &k_methods[i] : NULL;
}

/* ---- option values ---- */

static int opt_index(const kv_quant_method *m, const char *name, size_t len) {
    for (int i = 0; i < m->n_opts; i++)
        if (strlen(m->opts[i].name) == len && !memcmp(m->opts[i].name, name, len)) return i;
    return -1;
}

static const char *value_hint(const kv_method_opt *o) {
    switch (o->type) {
    case KV_MOPT_INT: return "=N";
    case KV_MOPT_FLOAT: return "=F";
    case KV_MOPT_TEXT: return "=";
    case KV_MOPT_CHOICE: return "=";
    default: return "";
    }
}

/* After '=': the choices of a CHOICE, the name of a TEXT value (DIR), "" otherwise. */
static const char *metavar(const kv_method_opt *o) {
    if (o->type == KV_MOPT_CHOICE) return o->choices;
    if (o->type == KV_MOPT_TEXT) return o->choices ? o->choices : "TEXT";
    return "";
}

/* "act-order, damp=F, store=ecw|decoded" */
static void opt_names(const kv_quant_method *m, char *buf, size_t n) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < m->n_opts && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%s%s%s", i ? ", " : "", m->opts[i].name,
                                value_hint(&m->opts[i]), metavar(&m->opts[i]));
    if (!m->n_opts) snprintf(buf, n, "none");
}

static void range_text(const kv_method_opt *o, char *buf, size_t n) {
    if (isinf(o->max)) snprintf(buf, n, "%s %g", o->open_min ? ">" : ">=", o->min);
    else snprintf(buf, n, "in %s%g, %g]", o->open_min ? "(" : "[", o->min, o->max);
}

static int choice_index(const char *choices, const char *v) {
    size_t vl = strlen(v);
    int k = 0;
    for (const char *p = choices; *p; k++) {
        size_t l = strcspn(p, "|");
        if (l == vl && !memcmp(p, v, l)) return k;
        p += l;
        if (*p == '|') p++;
    }
    return -1;
}

static kv_status parse_value(const kv_quant_method *m, const kv_method_opt *o, const char *val, double *num,
                             kv_error *err) {
    char rng[64];
    range_text(o, rng, sizeof rng);
    if (o->type == KV_MOPT_CHOICE) {
        int k = choice_index(o->choices, val);
        if (k < 0) return kv_fail(err, KV_EINVAL, "%s: %s=%s: valid values are %s", m->name, o->name, val, o->choices);
        *num = k;
        return KV_OK;
    }
    char *end;
    double x = strtod(val, &end);
    int bad = !*val || *end || isnan(x) || x < o->min || x > o->max || (o->open_min && x <= o->min);
    if (o->type == KV_MOPT_INT) bad |= x != floor(x);
    if (bad)
        return kv_fail(err, KV_EINVAL, "%s: %s=%s: needs %s %s (default %g)", m->name, o->name, val,
                       o->type == KV_MOPT_INT ? "an integer" : "a number", rng, o->def);
    *num = x;
    return KV_OK;
}

kv_status kv_method_values_parse(const kv_quant_method *m, const char *options, kv_method_values *v, kv_error *err) {
    memset(v, 0, sizeof *v);
    for (int i = 0; i < m->n_opts; i++) v->v[i].num = m->opts[i].type == KV_MOPT_CHOICE ? 0 : m->opts[i].def;
    char valid[400];
    for (const char *p = options ? options : ""; *p;) {
        size_t len = strcspn(p, ","), kl = strcspn(p, ",=");
        if (kl > len) kl = len;
        int i = opt_index(m, p, kl);
        if (i < 0) {
            opt_names(m, valid, sizeof valid);
            return kv_fail(err, KV_EINVAL, "%s: unknown option '%.*s' (valid: %s; kvant quantize --help describes them)",
                           m->name, (int)KV_MIN(len, 80), p, valid);
        }
        const kv_method_opt *o = &m->opts[i];
        const int has_val = kl < len;
        char val[KV_MOPT_TEXT_MAX];
        size_t vl = has_val ? len - kl - 1 : 0;
        if (vl >= sizeof val) return kv_fail(err, KV_EINVAL, "%s: %s: value longer than %d bytes", m->name, o->name, KV_MOPT_TEXT_MAX - 1);
        memcpy(val, p + kl + 1 * has_val, vl);
        val[vl] = 0;
        if (v->v[i].set) return kv_fail(err, KV_EINVAL, "%s: option '%s' given twice", m->name, o->name);
        if (o->type == KV_MOPT_FLAG) {
            if (has_val) return kv_fail(err, KV_EINVAL, "%s: '%s' is a flag and takes no value (got '%s')", m->name, o->name, val);
            v->v[i].num = 1;
        } else if (!has_val || !vl) {
            return kv_fail(err, KV_EINVAL, "%s: '%s' needs a value (%s%s%s)", m->name, o->name, o->name, value_hint(o),
                           metavar(o));
        } else if (o->type == KV_MOPT_TEXT) {
            kv_strlcpy(v->v[i].text, val, sizeof v->v[i].text);
        } else {
            kv_status st = parse_value(m, o, val, &v->v[i].num, err);
            if (st != KV_OK) return st;
            kv_strlcpy(v->v[i].text, val, sizeof v->v[i].text);
        }
        v->v[i].set = 1;
        p += len;
        if (*p == ',') p++;
    }
    if (m->needs_one_of) {
        int any = 0;
        for (const char *p = m->needs_one_of; *p;) {
            size_t l = strcspn(p, "|");
            int i = opt_index(m, p, l);
            any |= i >= 0 && v->v[i].set;
            p += l;
            if (*p == '|') p++;
        }
        if (!any) {
            opt_names(m, valid, sizeof valid);
            return kv_fail(err, KV_EINVAL, "%s needs one of the options %s (e.g. --method %s:%.*s=3; valid: %s)", m->name,
                           m->needs_one_of, m->name, (int)strcspn(m->needs_one_of, "|"), m->needs_one_of, valid);
        }
    }
    return KV_OK;
}

kv_status kv_method_parse(const char *spec, const kv_quant_method **m, kv_method_values *v, kv_error *err) {
    const char *s = spec && *spec ? spec : "rtn";
    size_t l = strcspn(s, ":");
    char name[64];
    if (l >= sizeof name) return kv_fail(err, KV_EINVAL, "method name too long: '%.40s...'", s);
    memcpy(name, s, l);
    name[l] = 0;
    *m = kv_quant_method_find(name);
    if (!*m) return kv_fail(err, KV_EINVAL, "unknown method '%s' (valid: %s)", name, kv_quant_method_names());
    return kv_method_values_parse(*m, s[l] == ':' ? s + l + 1 : "", v, err);
}

static int find_opt(const kv_quant_method *m, const char *name) { return opt_index(m, name, strlen(name)); }

double kv_mopt_num(const kv_quant_method *m, const kv_method_values *v, const char *name) {
    int i = find_opt(m, name);
    return i < 0 ? 0 : v->v[i].num;
}

int kv_mopt_given(const kv_quant_method *m, const kv_method_values *v, const char *name) {
    int i = find_opt(m, name);
    return i >= 0 && v->v[i].set;
}

const char *kv_mopt_text(const kv_quant_method *m, const kv_method_values *v, const char *name) {
    int i = find_opt(m, name);
    return i < 0 ? "" : v->v[i].text; /* a CHOICE: kv_mopt_num gives its index */
}

size_t kv_method_help(const kv_quant_method *m, const char *indent, char *buf, size_t n) {
    size_t len = 0;
    char left[64], rng[64], tail[96];
    for (int i = 0; i < m->n_opts; i++) {
        const kv_method_opt *o = &m->opts[i];
        snprintf(left, sizeof left, "%s%s%s", o->name, value_hint(o), metavar(o));
        tail[0] = 0;
        if (o->type == KV_MOPT_INT || o->type == KV_MOPT_FLOAT) {
            range_text(o, rng, sizeof rng);
            if (o->open_min && o->def == 0) snprintf(tail, sizeof tail, " (%s)", rng);
            else snprintf(tail, sizeof tail, " (%s, default %g)", rng, o->def);
        } else if (o->type == KV_MOPT_CHOICE) {
            snprintf(tail, sizeof tail, " (default %.*s)", (int)strcspn(o->choices, "|"), o->choices);
        }
        int w = snprintf(buf ? buf + KV_MIN(len, n) : NULL, buf && len < n ? n - len : 0, "%s%-22s %s%s\n", indent,
                         left, o->help, tail);
        if (w > 0) len += (size_t)w;
    }
    if (buf && n) buf[KV_MIN(len, n - 1)] = 0;
    return len;
}
