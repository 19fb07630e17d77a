/* tasks.c — zero-shot multiple-choice tasks scored by log-likelihood, the convention of EleutherAI's
 * lm-evaluation-harness (lm_eval/api/model.py TemplateLM._encode_pair, lm_eval/api/task.py process_results
 * for output_type multiple_choice: acc, acc_norm; lm_eval/api/metrics.py mean_stderr), the JSONL task files
 * of docs/eval.md, and task files generated from a text of passages (next sentence, cloze). */
#include "eval/eval.h"
#include "io/json.h"
#include <ctype.h>
#include <math.h>
#include <stdio.h>

/* ---------------------------------------------------------------------------------------------- */
/* task sets                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static void item_free(kv_task_item *it) {
    free(it->id);
    free(it->context);
    free(it->delimiter);
    for (int c = 0; c < it->n_choices; c++) free(it->choices[c]);
    free(it->choices);
}

void kv_tasks_free(kv_taskset *ts) {
    if (!ts) return;
    for (int64_t i = 0; i < ts->n; i++) item_free(&ts->items[i]);
    free(ts->items);
    free(ts);
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static kv_status taskset_push(kv_taskset *ts, int64_t *cap, kv_task_item **slot, kv_error *err) {
    if (ts->n == *cap) {
        const int64_t nc = *cap ? *cap * 2 : 64;
        kv_task_item *ni = realloc(ts->items, (size_t)nc * sizeof *ni);
        if (!ni) return kv_fail(err, KV_ENOMEM, "out of memory for %lld task items", (long long)nc);
        ts->items = ni;
        *cap = nc;
    }
    *slot = &ts->items[ts->n++];
    memset(*slot, 0, sizeof **slot);
    return KV_OK;
}

static void set_name(kv_taskset *ts, const char *name) {
    const char *base = name ? strrchr(name, '/') : NULL;
    base = base ? base + 1 : (name ? name : "tasks");
    kv_strlcpy(ts->name, base, sizeof ts->name);
    const size_t n = strlen(ts->name);
    if (n > 6 && !strcmp(ts->name + n - 6, ".jsonl")) ts->name[n - 6] = 0;
}

/* A string member without embedded NULs, copied; 0 when absent. */
static kv_status get_text(const kv_json *obj, const char *key, int required, char **out, int64_t line,
                          kv_error *err) {
    const kv_json *v = kv_json_get(obj, key);
    *out = NULL;
    if (!v) {
        if (required) return kv_fail(err, KV_EFORMAT, "line %lld: missing \"%s\"", (long long)line, key);
        return KV_OK;
    }
    if (v->type != KV_JSON_STRING)
        return kv_fail(err, KV_EFORMAT, "line %lld: \"%s\" must be a string, not %s", (long long)line, key,
                       kv_json_type_name(v->type));
    if (strlen(v->u.str) != v->len)
        return kv_fail(err, KV_EFORMAT, "line %lld: \"%s\" contains a NUL character", (long long)line, key);
    if (!(*out = dup_n(v->u.str, v->len))) return kv_fail(err, KV_ENOMEM, "out of memory");
    return KV_OK;
}

static kv_status parse_item(const kv_json *o, int64_t line, kv_task_item *it, kv_error *err) {
    static const char *const known[] = {"context", "choices", "gold", "id", "delimiter"};
    if (o->type != KV_JSON_OBJECT)
        return kv_fail(err, KV_EFORMAT, "line %lld: a task item must be a JSON object, not %s", (long long)line,
                       kv_json_type_name(o->type));
    for (uint64_t k = 0; k < o->len; k++) {
        int ok = 0;
        for (size_t j = 0; j < KV_ARRAY_LEN(known); j++) ok |= !strcmp(o->u.items[k].key, known[j]);
        if (!ok)
            return kv_fail(err, KV_EFORMAT, "line %lld: unknown key \"%s\" (keys: context, choices, gold, id, delimiter)",
                           (long long)line, o->u.items[k].key);
    }
    if (kv_json_find_duplicate_key(o))
        return kv_fail(err, KV_EFORMAT, "line %lld: duplicate key \"%s\"", (long long)line, kv_json_find_duplicate_key(o)->key);
    kv_status st;
    if ((st = get_text(o, "context", 1, &it->context, line, err)) != KV_OK) return st;
    if ((st = get_text(o, "id", 0, &it->id, line, err)) != KV_OK) return st;
    if ((st = get_text(o, "delimiter", 0, &it->delimiter, line, err)) != KV_OK) return st;
    if (!it->id && !(it->id = dup_n("", 0))) return kv_fail(err, KV_ENOMEM, "out of memory");
    if (!it->delimiter && !(it->delimiter = dup_n(" ", 1))) return kv_fail(err, KV_ENOMEM, "out of memory");
    const kv_json *ch = kv_json_get(o, "choices");
    if (!ch || ch->type != KV_JSON_ARRAY || ch->len < 2 || ch->len > 64)
        return kv_fail(err, KV_EFORMAT, "line %lld: \"choices\" must be an array of 2 to 64 strings", (long long)line);
    it->choices = calloc(ch->len, sizeof *it->choices);
    if (!it->choices) return kv_fail(err, KV_ENOMEM, "out of memory");
    for (uint64_t c = 0; c < ch->len; c++) {
        const kv_json *s = &ch->u.items[c];
        if (s->type != KV_JSON_STRING || s->len == 0 || strlen(s->u.str) != s->len)
            return kv_fail(err, KV_EFORMAT, "line %lld: choice %llu must be a non-empty string without NULs",
                           (long long)line, (unsigned long long)c);
        if (!(it->choices[c] = dup_n(s->u.str, s->len))) return kv_fail(err, KV_ENOMEM, "out of memory");
        it->n_choices = (int)c + 1;
    }
    int64_t gold;
    const int g = kv_json_get_int(o, "gold", &gold);
    if (g != 1 || gold < 0 || gold >= (int64_t)ch->len)
        return kv_fail(err, KV_EFORMAT, "line %lld: \"gold\" must be an integer index into the %llu choices",
                       (long long)line, (unsigned long long)ch->len);
    it->gold = (int)gold;
    return KV_OK;
}

kv_status kv_tasks_parse(const char *text, size_t len, const char *name, kv_taskset **out, kv_error *err) {
    *out = NULL;
    kv_taskset *ts = calloc(1, sizeof *ts);
    if (!ts) return kv_fail(err, KV_ENOMEM, "out of memory");
    set_name(ts, name);
    int64_t cap = 0, line = 0;
    kv_status st = KV_OK;
    size_t pos = 0;
    while (pos < len && st == KV_OK) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        const size_t end = nl ? (size_t)(nl - text) : len;
        line++;
        size_t a = pos;
        while (a < end && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
        if (a < end) {
            kv_json_opts jo = {.path = name, .base_offset = pos};
            kv_json_doc *doc = NULL;
            st = kv_json_parse(text + pos, end - pos, &jo, &doc, err);
            if (st != KV_OK) {
                char msg[sizeof err->message];
                kv_strlcpy(msg, err ? err->message : "", sizeof msg);
                st = kv_fail(err, st, "line %lld: %s", (long long)line, msg);
            } else {
                kv_task_item *it = NULL;
                if ((st = taskset_push(ts, &cap, &it, err)) == KV_OK) st = parse_item(kv_json_root(doc), line, it, err);
                if (st != KV_OK) kv_error_context(err, name, (int64_t)pos, NULL);
            }
            kv_json_free(doc);
        }
        pos = end + 1;
    }
    if (st == KV_OK && ts->n == 0) st = kv_fail(err, KV_EFORMAT, "no task items (empty JSONL file)");
    if (st != KV_OK) {
        kv_error_context(err, name, -1, NULL);
        kv_tasks_free(ts);
        return st;
    }
    *out = ts;
    return KV_OK;
}

kv_status kv_tasks_load(const char *path, kv_taskset **out, kv_error *err) {
    kv_mapped m;
    kv_status st = kv_map_file(path, &m, err);
    if (st != KV_OK) return st;
    st = kv_tasks_parse((const char *)m.data, m.size, path, out, err);
    kv_unmap_file(&m);
    return st;
}

/* JSON string with escapes into a growing buffer */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\') { e[0] = '\\'; e[1] = (char)*p; sb_put(b, e, 2); }
        else if (*p == '\n') sb_put(b, "\\n", 2);
        else if (*p == '\t') sb_put(b, "\\t", 2);
        else if (*p == '\r') sb_put(b, "\\r", 2);
        else if (*p < 0x20) { snprintf(e, sizeof e, "\\u%04x", *p); sb_put(b, e, 6); }
        else sb_put(b, (const char *)p, 1);
    }
    sb_put(b, "\"", 1);
}

kv_status kv_tasks_save(const kv_taskset *ts, const char *path, kv_error *err) {
    sbuf b = {0};
    for (int64_t i = 0; i < ts->n; i++) {
        const kv_task_item *it = &ts->items[i];
        sb_str(&b, "{\"context\": ");
        sb_json_str(&b, it->context);
        sb_str(&b, ", \"choices\": [");
        for (int c = 0; c < it->n_choices; c++) {
            if (c) sb_str(&b, ", ");
            sb_json_str(&b, it->choices[c]);
        }
        char g[32];
        snprintf(g, sizeof g, "], \"gold\": %d", it->gold);
        sb_str(&b, g);
        if (it->id && it->id[0]) { sb_str(&b, ", \"id\": "); sb_json_str(&b, it->id); }
        if (it->delimiter && strcmp(it->delimiter, " ")) { sb_str(&b, ", \"delimiter\": "); sb_json_str(&b, it->delimiter); }
        sb_str(&b, "}\n");
    }
    if (b.oom) { free(b.p); return kv_fail(err, KV_ENOMEM, "out of memory writing %s", path); }
    kv_outfile *f = NULL;
    kv_status st = kv_outfile_open(path, &f, err);
    if (st == KV_OK) st = kv_outfile_write(f, b.p, b.n, err);
    if (st == KV_OK) st = kv_outfile_commit(f, err);
    else if (f) kv_outfile_abort(f);
    free(b.p);
    return st;
}

/* ---------------------------------------------------------------------------------------------- */
/* generated task sets                                                                               */
/* ---------------------------------------------------------------------------------------------- */

const char *kv_tasks_kind_name(kv_tasks_kind k) { return k == KV_TASKS_CLOZE ? "cloze" : "next-sentence"; }

kv_status kv_tasks_kind_parse(const char *s, kv_tasks_kind *out, kv_error *err) {
    if (s && !strcmp(s, "next-sentence")) *out = KV_TASKS_NEXT_SENTENCE;
    else if (s && !strcmp(s, "cloze")) *out = KV_TASKS_CLOZE;
    else return kv_fail(err, KV_EINVAL, "unknown task kind '%s' (next-sentence, cloze)", s ? s : "");
    return KV_OK;
}

typedef struct span { int32_t a, b; } span;  /* text[a..b) */
typedef struct sent { span s; int32_t passage; } sent;

static int is_end_punct(char c) { return c == '.' || c == '!' || c == '?'; }

/* Sentences of one passage [a, b): a run of . ! ? (and closing quotes) followed by a space and an
 * upper-case letter, a digit or a quote, or the passage's end. */
static int split_sentences(const char *t, int32_t a, int32_t b, int32_t passage, sent **out, int64_t *n,
                           int64_t *cap) {
    int32_t start = a;
    while (start < b && t[start] == ' ') start++;
    for (int32_t i = start; i < b; i++) {
        if (!is_end_punct(t[i])) continue;
        int32_t e = i;
        while (e + 1 < b && (is_end_punct(t[e + 1]) || t[e + 1] == '"' || t[e + 1] == '\'' || t[e + 1] == ')')) e++;
        const int at_end = e + 1 >= b;
        const int boundary = at_end || (t[e + 1] == ' ' && e + 2 < b &&
                                        (isupper((unsigned char)t[e + 2]) || isdigit((unsigned char)t[e + 2]) ||
                                         t[e + 2] == '"' || t[e + 2] == '\''));
        if (!boundary) { i = e; continue; }
        if (e + 1 - start >= 8) {
            if (*n == *cap) {
                const int64_t nc = *cap ? *cap * 2 : 1024;
                sent *ns = realloc(*out, (size_t)nc * sizeof *ns);
                if (!ns) return -1;
                *out = ns;
                *cap = nc;
            }
            (*out)[(*n)++] = (sent){{start, e + 1}, passage};
        }
        start = e + 1;
        while (start < b && t[start] == ' ') start++;
        i = start - 1;
    }
    return 0;
}

/* The last word of a sentence (letters only, >= 3), without its punctuation; 0 when there is none. */
static int last_word(const char *t, span s, span *w) {
    int32_t e = s.b;
    while (e > s.a && !isalpha((unsigned char)t[e - 1])) e--;
    int32_t a = e;
    while (a > s.a && isalpha((unsigned char)t[a - 1])) a--;
    if (e - a < 3 || a <= s.a || t[a - 1] != ' ') return 0;
    for (int32_t i = e; i < s.b; i++)
        if (!is_end_punct(t[i]) && t[i] != '"' && t[i] != '\'' && t[i] != ')') return 0;
    int words = 0;
    for (int32_t i = s.a; i < a; i++) words += t[i] == ' ';
    if (words < 3) return 0;
    *w = (span){a, e};
    return 1;
}

static int span_eq(const char *t, span x, span y, int nocase) {
    if (x.b - x.a != y.b - y.a) return 0;
    for (int32_t i = 0; i < x.b - x.a; i++) {
        const unsigned char p = (unsigned char)t[x.a + i], q = (unsigned char)t[y.a + i];
        if (nocase ? tolower(p) != tolower(q) : p != q) return 0;
    }
    return 1;
}

static uint64_t rng_below(kv_rng *r, uint64_t n) { return n ? kv_rng_u64(r) % n : 0; }

/* context text of sentences [first, last] of the sentence list, joined by single spaces, plus an optional
 * prefix span of the next sentence */
static char *join_context(const char *t, const sent *ss, int64_t first, int64_t last, span tail) {
    sbuf b = {0};
    for (int64_t k = first; k <= last; k++) {
        if (b.n) sb_put(&b, " ", 1);
        sb_put(&b, t + ss[k].s.a, (size_t)(ss[k].s.b - ss[k].s.a));
    }
    if (tail.b > tail.a) {
        if (b.n) sb_put(&b, " ", 1);
        sb_put(&b, t + tail.a, (size_t)(tail.b - tail.a));
    }
    if (b.oom || !b.p) { free(b.p); return b.oom ? NULL : dup_n("", 0); }
    return b.p;
}

kv_status kv_tasks_make(const char *text, size_t len, kv_tasks_kind kind, int64_t n_items, int n_choices,
                        uint64_t seed, const char *name, kv_taskset **out, kv_error *err) {
    *out = NULL;
    if (n_choices < 2 || n_choices > 16) return kv_fail(err, KV_EINVAL, "choices must be 2..16, not %d", n_choices);
    if (n_items <= 0) return kv_fail(err, KV_EINVAL, "the number of items must be positive");
    if (len > INT32_MAX) return kv_fail(err, KV_ERANGE, "text of %zu bytes is too long (2 GiB at most)", len);
    sent *ss = NULL;
    int64_t ns = 0, cap = 0;
    int32_t passage = 0;
    for (size_t pos = 0; pos < len; passage++) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        const size_t end = nl ? (size_t)(nl - text) : len;
        size_t e = end;
        while (e > pos && (text[e - 1] == '\r' || text[e - 1] == ' ')) e--;
        if (split_sentences(text, (int32_t)pos, (int32_t)e, passage, &ss, &ns, &cap)) {
            free(ss);
            return kv_fail(err, KV_ENOMEM, "out of memory splitting sentences");
        }
        pos = end + 1;
    }
    /* eligible targets: sentence k with a predecessor in the same passage (cloze: with a last word) */
    int64_t *cand = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *cand);
    span *words = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *words);
    uint8_t *has_word = calloc((size_t)(ns > 0 ? ns : 1), 1);
    kv_taskset *ts = calloc(1, sizeof *ts);
    kv_status st = KV_OK;
    if (!cand || !words || !has_word || !ts) { st = kv_fail(err, KV_ENOMEM, "out of memory"); goto done; }
    set_name(ts, name);
    int64_t nc = 0, n_words = 0;
    for (int64_t k = 0; k < ns; k++) {
        has_word[k] = (uint8_t)last_word(text, ss[k].s, &words[k]);
        n_words += has_word[k];
        const int prev_same = k > 0 && ss[k - 1].passage == ss[k].passage;
        if (kind == KV_TASKS_NEXT_SENTENCE ? prev_same : has_word[k]) cand[nc++] = k;
    }
    if (nc < n_items || (kind == KV_TASKS_CLOZE ? n_words : ns) < 4 * n_choices) {
        st = kv_fail(err, KV_ERANGE, "the text has %lld usable %s targets; %lld items asked for", (long long)nc,
                     kind == KV_TASKS_CLOZE ? "cloze" : "next-sentence", (long long)n_items);
        goto done;
    }
    kv_rng r;
    kv_rng_seed(&r, seed);
    for (int64_t i = nc - 1; i > 0; i--) { /* Fisher-Yates: the first n_items are the sample */
        const int64_t j = (int64_t)rng_below(&r, (uint64_t)i + 1);
        const int64_t tmp = cand[i]; cand[i] = cand[j]; cand[j] = tmp;
    }
    /* targets in text order make files easier to read; the sample itself is random */
    for (int64_t i = 1; i < n_items; i++)
        for (int64_t j = i; j > 0 && cand[j - 1] > cand[j]; j--) { const int64_t tmp = cand[j]; cand[j] = cand[j - 1]; cand[j - 1] = tmp; }
    ts->items = calloc((size_t)n_items, sizeof *ts->items);
    if (!ts->items) { st = kv_fail(err, KV_ENOMEM, "out of memory"); goto done; }
    for (int64_t i = 0; i < n_items && st == KV_OK; i++) {
        const int64_t k = cand[i];
        kv_task_item *it = &ts->items[ts->n++];
        it->n_choices = n_choices;
        it->choices = calloc((size_t)n_choices, sizeof *it->choices);
        it->gold = (int)rng_below(&r, (uint64_t)n_choices);
        int64_t first = k - 1;
        span tail = {0, 0}, gold;
        if (kind == KV_TASKS_NEXT_SENTENCE) {
            while (first > 0 && first > k - 3 && ss[first - 1].passage == ss[k].passage) first--;
            gold = ss[k].s;
            it->context = join_context(text, ss, first, k - 1, tail);
        } else {
            first = k;
            while (first > 0 && first > k - 2 && ss[first - 1].passage == ss[k].passage) first--;
            gold = words[k];
            tail = (span){ss[k].s.a, words[k].a - 1};
            it->context = join_context(text, ss, first, k - 1, tail);
        }
        char idb[64];
        snprintf(idb, sizeof idb, "%s-%lld", kind == KV_TASKS_CLOZE ? "cloze" : "next", (long long)k);
        it->id = dup_n(idb, strlen(idb));
        it->delimiter = dup_n(" ", 1);
        if (!it->choices || !it->context || !it->id || !it->delimiter) { st = kv_fail(err, KV_ENOMEM, "out of memory"); break; }
        span picked[16];
        picked[it->gold] = gold;
        const int32_t glen = gold.b - gold.a;
        for (int c = 0; c < n_choices; c++) {
            if (c == it->gold) continue;
            /* a sentence/word of another passage, distinct from the others; similar length when one comes */
            span best = {0, 0};
            for (int tries = 0; tries < 400; tries++) {
                const int64_t q = (int64_t)rng_below(&r, (uint64_t)ns);
                if (ss[q].passage == ss[k].passage) continue;
                if (kind == KV_TASKS_CLOZE && !has_word[q]) continue;
                const span s = kind == KV_TASKS_CLOZE ? words[q] : ss[q].s;
                int dup = span_eq(text, s, gold, kind == KV_TASKS_CLOZE);
                for (int d = 0; d < c && !dup; d++)
                    if (d != it->gold) dup = span_eq(text, s, picked[d], kind == KV_TASKS_CLOZE);
                if (dup) continue;
                best = s;
                const int32_t l = s.b - s.a;
                if (tries >= 300 || (2 * l >= glen && l <= 2 * glen)) break;
            }
            if (best.b == best.a) { st = kv_fail(err, KV_ERANGE, "found no distractor for item %lld", (long long)i); break; }
            picked[c] = best;
        }
        for (int c = 0; c < n_choices && st == KV_OK; c++)
            if (!(it->choices[c] = dup_n(text + picked[c].a, (size_t)(picked[c].b - picked[c].a))))
                st = kv_fail(err, KV_ENOMEM, "out of memory");
    }
done:
    free(ss);
    free(cand);
    free(words);
    free(has_word);
    if (st != KV_OK) { kv_tasks_free(ts); return st; }
    *out = ts;
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* scoring                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

typedef struct choice_toks {
    int32_t *ids;     /* [BOS] + encode(context + continuation), truncated from the left */
    size_t n;
    size_t start;     /* first continuation token */
} choice_toks;

typedef struct item_work {
    choice_toks *c;   /* n_choices */
    int truncated;
    kv_status st;
    kv_error err;
} item_work;

typedef struct score_job {
    const kv_model *m;
    const kv_tokenizer *tok;
    const kv_taskset *ts;
    int add_bos;
    int64_t max_len;
    item_work *work;
    kv_context **ctx;    /* per thread */
    float **logits;      /* per thread: max_len × V */
    double *ll;          /* per item offsets into ll_all */
    const int64_t *ll_off;
    int64_t base;        /* first item of the batch */
} score_job;

/* lm-eval _encode_pair: trailing spaces of the context go to the continuation, the continuation's tokens are
 * those of the whole string after the context's. */
static kv_status encode_choice(const score_job *j, const kv_task_item *it, int c, choice_toks *out, int *truncated,
                               kv_error *err) {
    const char *ctxs = it->context;
    size_t cl = strlen(ctxs);
    size_t keep = cl;
    while (keep > 0 && ctxs[keep - 1] == ' ') keep--;
    const size_t dl = strlen(it->delimiter), chl = strlen(it->choices[c]);
    char *whole = malloc(cl + dl + chl + 1);
    if (!whole) return kv_fail(err, KV_ENOMEM, "out of memory");
    memcpy(whole, ctxs, cl);
    memcpy(whole + cl, it->delimiter, dl);
    memcpy(whole + cl + dl, it->choices[c], chl + 1);
    int32_t *cids = NULL;
    size_t nc = 0;
    kv_status st = kv_tokenize(j->tok, ctxs, keep, j->add_bos, &cids, &nc, err);
    if (st == KV_OK) st = kv_tokenize(j->tok, whole, cl + dl + chl, j->add_bos, &out->ids, &out->n, err);
    free(whole);
    free(cids);
    if (st != KV_OK) return st;
    if (nc == 0) { /* no BOS and an empty context: nothing predicts the first token */
        return kv_fail(err, KV_EINVAL, "an empty context needs a tokenizer with a BOS token");
    }
    out->start = nc < out->n ? nc : out->n - 1;
    if (out->n == 0 || out->start == 0) return kv_fail(err, KV_EINVAL, "choice %d encodes to no tokens", c);
    /* inputs are ids[0 .. n-1): at most max_len of them (lm-eval truncates from the left likewise) */
    if ((int64_t)out->n - 1 > j->max_len) {
        const size_t drop = out->n - 1 - (size_t)j->max_len;
        if (drop >= out->start) return kv_fail(err, KV_ERANGE, "choice %d alone is longer than the model's context (%lld tokens)",
                                               c, (long long)j->max_len);
        memmove(out->ids, out->ids + drop, (out->n - drop) * sizeof(int32_t));
        out->n -= drop;
        out->start -= drop;
        *truncated = 1;
    }
    return KV_OK;
}

static void encode_task(void *vctx, int64_t t, int thread) {
    (void)thread;
    const score_job *j = vctx;
    const kv_task_item *it = &j->ts->items[j->base + t];
    item_work *w = &j->work[j->base + t];
    for (int c = 0; c < it->n_choices && w->st == KV_OK; c++)
        w->st = encode_choice(j, it, c, &w->c[c], &w->truncated, &w->err);
}

static double row_loglik(const float *l, int64_t V, int32_t target) {
    float mx = l[0];
    for (int64_t i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    double s = 0.0;
    for (int64_t i = 0; i < V; i++) s += exp((double)l[i] - mx);
    return (double)l[target] - ((double)mx + log(s));
}

static void score_task(void *vctx, int64_t t, int thread) {
    const score_job *j = vctx;
    const int64_t idx = j->base + t;
    const kv_task_item *it = &j->ts->items[idx];
    item_work *w = &j->work[idx];
    if (w->st != KV_OK) return;
    kv_context *ctx = j->ctx[thread];
    float *logits = j->logits[thread];
    const int64_t V = kv_model_get_hparams(j->m)->n_vocab;
    /* shared prefix of all choices: run once, then each continuation from there */
    size_t P = w->c[0].start;
    for (int c = 1; c < it->n_choices; c++) {
        size_t k = 0;
        const choice_toks *a = &w->c[0], *b = &w->c[c];
        while (k < a->n && k < b->n && a->ids[k] == b->ids[k]) k++;
        P = KV_MIN(P, KV_MIN(k, b->start));
    }
    int64_t pos0 = 0;
    if (P >= 2) {
        w->st = kv_forward(ctx, w->c[0].ids, (int64_t)P - 1, 0, NULL, KV_FORWARD_NO_LOGITS, NULL, &w->err);
        pos0 = (int64_t)P - 1;
    }
    for (int c = 0; c < it->n_choices && w->st == KV_OK; c++) {
        const choice_toks *ct = &w->c[c];
        const int64_t nin = (int64_t)ct->n - 1 - pos0; /* inputs ids[pos0 .. n-1) */
        w->st = kv_forward(ctx, ct->ids + pos0, nin, pos0, logits, 0, NULL, &w->err);
        if (w->st != KV_OK) break;
        double ll = 0.0;
        for (size_t p = ct->start; p < ct->n; p++) {
            const int32_t target = ct->ids[p];
            if (target < 0 || target >= V) {
                w->st = kv_fail(&w->err, KV_ERANGE, "token id %d outside the vocabulary", (int)target);
                break;
            }
            ll += row_loglik(logits + (int64_t)(p - 1 - (size_t)pos0) * V, V, target);
        }
        j->ll[j->ll_off[idx] + c] = ll;
    }
}

static double binary_stderr(double p, int64_t n) { return n > 1 ? sqrt(p * (1.0 - p) / (double)(n - 1)) : 0.0; }

kv_status kv_tasks_eval(const kv_model *m, const kv_tokenizer *tok, const kv_taskset *ts, const kv_task_opts *opts,
                        kv_pool *pool, kv_task_result *res, double *ll_out, kv_error *err) {
    if (!m || !tok || !ts || !res) return kv_fail(err, KV_EINVAL, "kv_tasks_eval: NULL argument");
    memset(res, 0, sizeof *res);
    const kv_hparams *hp = kv_model_get_hparams(m);
    if (kv_tokenizer_n_vocab(tok) > hp->n_vocab)
        return kv_fail(err, KV_EINVAL, "the tokenizer has %d tokens, the model %d", (int)kv_tokenizer_n_vocab(tok),
                       (int)hp->n_vocab);
    int64_t n = ts->n;
    if (opts && opts->limit > 0 && opts->limit < n) n = opts->limit;
    int add_bos = opts ? opts->add_bos : -1;
    if (add_bos < 0) add_bos = kv_tokenizer_bos(tok) >= 0 && kv_tokenizer_add_bos_default(tok);
    if (add_bos && kv_tokenizer_bos(tok) < 0) return kv_fail(err, KV_EINVAL, "add_bos asked for, but the tokenizer has no BOS");
    const int nthreads = pool ? kv_pool_threads(pool) : 1;
    score_job j = {.m = m, .tok = tok, .ts = ts, .add_bos = add_bos,
                   .max_len = hp->n_ctx_train > 0 ? hp->n_ctx_train : 4096};
    int64_t *ll_off = malloc((size_t)(n + 1) * sizeof *ll_off);
    j.work = calloc((size_t)n, sizeof *j.work);
    j.ctx = calloc((size_t)nthreads, sizeof *j.ctx);
    j.logits = calloc((size_t)nthreads, sizeof *j.logits);
    kv_status st = KV_OK;
    if (!ll_off || !j.work || !j.ctx || !j.logits) { st = kv_fail(err, KV_ENOMEM, "out of memory"); goto done; }
    ll_off[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        ll_off[i + 1] = ll_off[i] + ts->items[i].n_choices;
        if (!(j.work[i].c = calloc((size_t)ts->items[i].n_choices, sizeof(choice_toks)))) {
            st = kv_fail(err, KV_ENOMEM, "out of memory");
            goto done;
        }
    }
    j.ll = ll_out ? ll_out : malloc((size_t)(ll_off[n] > 0 ? ll_off[n] : 1) * sizeof(double));
    j.ll_off = ll_off;
    if (!j.ll) { st = kv_fail(err, KV_ENOMEM, "out of memory"); goto done; }
    const double t0 = kv_now_seconds();
    kv_pool_run(pool, n, encode_task, &j);
    int64_t longest = 2;
    for (int64_t i = 0; i < n; i++) {
        if (j.work[i].st != KV_OK) {
            if (err) *err = j.work[i].err;
            st = kv_fail(err, j.work[i].st, "item %lld (%s): %s", (long long)i, ts->items[i].id,
                         j.work[i].err.message);
            goto done;
        }
        for (int c = 0; c < ts->items[i].n_choices; c++) longest = KV_MAX(longest, (int64_t)j.work[i].c[c].n);
    }
    for (int t = 0; t < nthreads; t++) {
        if ((st = kv_context_create(m, (int32_t)longest, &j.ctx[t], err)) != KV_OK) goto done;
        if (!(j.logits[t] = kv_malloc((size_t)longest * (size_t)hp->n_vocab * sizeof(float), err))) {
            st = KV_ENOMEM;
            goto done;
        }
    }
    /* batches of items so progress comes from the caller's thread */
    const int64_t batch = 4 * (int64_t)nthreads;
    for (int64_t b = 0; b < n; b += batch) {
        j.base = b;
        kv_pool_run(pool, KV_MIN(batch, n - b), score_task, &j);
        for (int64_t i = b; i < KV_MIN(b + batch, n); i++)
            if (j.work[i].st != KV_OK) {
                if (err) *err = j.work[i].err;
                st = kv_fail(err, j.work[i].st, "item %lld (%s): %s", (long long)i, ts->items[i].id, j.work[i].err.message);
                goto done;
            }
        if (opts && opts->progress) opts->progress(opts->progress_user, KV_MIN(b + batch, n), n);
    }
    int64_t hits = 0, hits_norm = 0;
    for (int64_t i = 0; i < n; i++) {
        const kv_task_item *it = &ts->items[i];
        const double *l = j.ll + ll_off[i];
        int best = 0, best_norm = 0;
        for (int c = 1; c < it->n_choices; c++) {
            if (l[c] > l[best]) best = c;
            if (l[c] / (double)strlen(it->choices[c]) > l[best_norm] / (double)strlen(it->choices[best_norm])) best_norm = c;
        }
        hits += best == it->gold;
        hits_norm += best_norm == it->gold;
        res->truncated += j.work[i].truncated;
        for (int c = 0; c < it->n_choices; c++) res->tokens += (int64_t)j.work[i].c[c].n - 1;
    }
    res->n = n;
    res->acc = (double)hits / (double)n;
    res->acc_norm = (double)hits_norm / (double)n;
    res->acc_stderr = binary_stderr(res->acc, n);
    res->acc_norm_stderr = binary_stderr(res->acc_norm, n);
    res->seconds = kv_now_seconds() - t0;
done:
    if (j.work)
        for (int64_t i = 0; i < n; i++) {
            if (!j.work[i].c) continue;
            for (int c = 0; c < ts->items[i].n_choices; c++) free(j.work[i].c[c].ids);
            free(j.work[i].c);
        }
    if (j.ctx)
        for (int t = 0; t < nthreads; t++) kv_context_free(j.ctx[t]);
    if (j.logits)
        for (int t = 0; t < nthreads; t++) free(j.logits[t]);
    if (j.ll != ll_out) free(j.ll);
    free(j.work);
    free(j.ctx);
    free(j.logits);
    free(ll_off);
    return st;
}
