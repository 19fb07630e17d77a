/* test_tasks.c — zero-shot multiple-choice tasks (src/eval/tasks.c): the JSONL schema and its errors, the
 * scorer against log-likelihoods computed here independently from full-sequence logits (lm-eval's
 * convention: whole-string tokens after the context's), acc / acc_norm / stderr by hand, thread-count
 * independence, the generator's determinism, and `kvant eval --tasks` / `kvant tasks`. */
#include "test.h"

#define PROXY "models/proxy-27m"

static const char k_items[] =
    "{\"context\": \"The cat sat on the\", \"choices\": [\"mat.\", \"quantum chromodynamics of sandwiches.\"], \"gold\": 0, \"id\": \"a\"}\n"
    "\n"
    "{\"context\": \"Once upon a time there was a little \", \"choices\": [\"girl\", \"xylophone tax\", \"dog\"], \"gold\": 2}\n"
    "{\"context\": \"He opened the door and\", \"choices\": [\"walked in\", \"purple\"], \"gold\": 1, \"delimiter\": \" \"}\n";

KV_TEST(tasks_parse_schema_and_errors) {
    kv_error err = {0};
    kv_taskset *ts = NULL;
    REQUIRE_OK(kv_tasks_parse(k_items, strlen(k_items), "dir/mini.jsonl", &ts, &err), &err);
    CHECK_STR(ts->name, "mini");
    CHECK_EQ_INT(ts->n, 3);
    CHECK_STR(ts->items[0].id, "a");
    CHECK_EQ_INT(ts->items[1].n_choices, 3);
    CHECK_EQ_INT(ts->items[1].gold, 2);
    CHECK_STR(ts->items[1].delimiter, " ");
    CHECK_STR(ts->items[2].choices[0], "walked in");
    /* save + reload gives the same items */
    char path[600];
    snprintf(path, sizeof path, "%s/mini.jsonl", kv_test_tmpdir());
    REQUIRE_OK(kv_tasks_save(ts, path, &err), &err);
    kv_taskset *back = NULL;
    REQUIRE_OK(kv_tasks_load(path, &back, &err), &err);
    CHECK_EQ_INT(back->n, 3);
    CHECK_STR(back->items[0].context, ts->items[0].context);
    CHECK_STR(back->items[1].choices[1], "xylophone tax");
    kv_tasks_free(back);
    kv_tasks_free(ts);
    static const struct { const char *text, *msg; } bad[] = {
        {"{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 2}\n", "line 1: \"gold\""},
        {"\n{\"context\": \"a\", \"choices\": [\"x\"], \"gold\": 0}\n", "line 2: \"choices\""},
        {"{\"context\": \"a\", \"choices\": [\"x\", \"\"], \"gold\": 0}", "choice 1"},
        {"{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 0, \"label\": 1}", "unknown key \"label\""},
        {"{\"context\": 3, \"choices\": [\"x\", \"y\"], \"gold\": 0}", "\"context\" must be a string"},
        {"{\"choices\": [\"x\", \"y\"], \"gold\": 0}", "missing \"context\""},
        {"{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 0}\n{\"context\": ", "line 2"},
        {"\n\n", "no task items"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kv_error e2 = {0};
        kv_taskset *t2 = NULL;
        CHECK(kv_tasks_parse(bad[i].text, strlen(bad[i].text), "bad.jsonl", &t2, &e2) != KV_OK);
        CHECK(t2 == NULL);
        CHECK_MSG(strstr(e2.message, bad[i].msg) != NULL, "case %zu: '%s' lacks '%s'", i, e2.message, bad[i].msg);
        CHECK_STR(e2.file, "bad.jsonl");
    }
}

/* log p(continuation | context) from the logits of the whole sequence run at once from position 0 */
static double reference_ll(kv_test_ctx *T, const kv_model *m, const kv_tokenizer *tok, const char *context,
                           const char *cont) {
    kv_error err = {0};
    char whole[1024];
    snprintf(whole, sizeof whole, "%s%s", context, cont);
    int32_t *wi = NULL, *ci = NULL;
    size_t nw = 0, nc = 0;
    if (kv_tokenize(tok, whole, strlen(whole), 1, &wi, &nw, &err) != KV_OK ||
        kv_tokenize(tok, context, strlen(context), 1, &ci, &nc, &err) != KV_OK) {
        CHECK(0);
        return NAN;
    }
    const int64_t V = kv_model_get_hparams(m)->n_vocab;
    float *logits = malloc((size_t)nw * (size_t)V * sizeof(float));
    kv_context *c = NULL;
    double ll = NAN;
    if (kv_context_create(m, (int32_t)nw, &c, &err) == KV_OK &&
        kv_forward(c, wi, (int64_t)nw, 0, logits, 0, NULL, &err) == KV_OK) {
        ll = 0.0;
        for (size_t p = nc; p < nw; p++) {
            const float *l = logits + (p - 1) * (size_t)V;
            double mx = l[0], s = 0.0;
            for (int64_t i = 1; i < V; i++) if (l[i] > mx) mx = l[i];
            for (int64_t i = 0; i < V; i++) s += exp((double)l[i] - mx);
            ll += (double)l[wi[p]] - mx - log(s);
        }
    }
    CHECK(nc < nw);
    kv_context_free(c);
    free(logits);
    free(wi);
    free(ci);
    return ll;
}

KV_TEST(tasks_scorer_matches_independent_loglik) {
    char path[512];
    if (!kv_test_exists(kv_test_shared(path, sizeof path, PROXY))) SKIP("proxy-27m absent");
    kv_error err = {0};
    kv_model_file *mf = NULL;
    kv_model *m = NULL;
    kv_tokenizer *tok = NULL;
    REQUIRE_OK(kv_model_open(path, &mf, &err), &err);
    REQUIRE_OK(kv_model_load(mf, NULL, &m, &err), &err);
    REQUIRE_OK(kv_tokenizer_load_for_model(mf, &tok, &err), &err);
    kv_taskset *ts = NULL;
    REQUIRE_OK(kv_tasks_parse(k_items, strlen(k_items), "mini", &ts, &err), &err);
    double ll[7], ll2[7];
    kv_task_result r, r2;
    kv_task_opts o = {.add_bos = 1};
    REQUIRE_OK(kv_tasks_eval(m, tok, ts, &o, NULL, &r, ll, &err), &err);
    /* expected values: the context's trailing space moves to the continuation (item 2) */
    const char *ctxs[3] = {"The cat sat on the", "Once upon a time there was a little", "He opened the door and"};
    const char *conts[7] = {" mat.", " quantum chromodynamics of sandwiches.", "  girl", "  xylophone tax", "  dog",
                            " walked in", " purple"};
    const int item_of[7] = {0, 0, 1, 1, 1, 2, 2};
    for (int k = 0; k < 7; k++) {
        const double ref = reference_ll(T, m, tok, ctxs[item_of[k]], conts[k]);
        CHECK_NEAR(ll[k], ref, 2e-3);
        CHECK(ll[k] < 0);
    }
    /* acc / acc_norm by hand */
    const int off[3] = {0, 2, 5};
    int hits = 0, hits_norm = 0;
    for (int i = 0; i < 3; i++) {
        int b = 0, bn = 0;
        for (int c = 1; c < ts->items[i].n_choices; c++) {
            if (ll[off[i] + c] > ll[off[i] + b]) b = c;
            if (ll[off[i] + c] / strlen(ts->items[i].choices[c]) > ll[off[i] + bn] / strlen(ts->items[i].choices[bn])) bn = c;
        }
        hits += b == ts->items[i].gold;
        hits_norm += bn == ts->items[i].gold;
    }
    CHECK_EQ_INT(r.n, 3);
    CHECK_NEAR(r.acc, hits / 3.0, 1e-12);
    CHECK_NEAR(r.acc_norm, hits_norm / 3.0, 1e-12);
    CHECK_NEAR(r.acc_stderr, sqrt(r.acc * (1 - r.acc) / 2.0), 1e-12);
    /* the first item is easy for any language model */
    CHECK(ll[0] > ll[1]);
    /* two threads: the same numbers */
    kv_pool *pool = kv_pool_create(2);
    REQUIRE_OK(kv_tasks_eval(m, tok, ts, &o, pool, &r2, ll2, &err), &err);
    for (int k = 0; k < 7; k++) CHECK(ll2[k] == ll[k]);
    CHECK(r2.acc == r.acc && r2.acc_norm == r.acc_norm);
    kv_pool_destroy(pool);
    kv_tasks_free(ts);
    kv_tokenizer_free(tok);
    kv_model_free(m);
    kv_model_close(mf);
}

static const char k_text[] =
    "The sun rose over the hills. Birds began to sing in the tall trees. A farmer walked to his field.\n"
    "The city was loud at night. Cars honked on every street. People hurried home from work in the rain.\n"
    "She opened the old book carefully. Its pages were yellow and thin. A pressed flower fell onto the table.\n"
    "The river ran fast after the storm. Fishermen stayed on the shore. Nobody wanted to cross the bridge.\n"
    "Our team won the final game. The crowd cheered for an hour. The coach thanked every single player.\n"
    "He baked bread every morning. The smell filled the whole village. Children waited outside the bakery door.\n";

KV_TEST(tasks_make_deterministic_and_well_formed) {
    kv_error err = {0};
    kv_taskset *a = NULL, *b = NULL, *c = NULL;
    REQUIRE_OK(kv_tasks_make(k_text, strlen(k_text), KV_TASKS_NEXT_SENTENCE, 8, 3, 7, "gen", &a, &err), &err);
    REQUIRE_OK(kv_tasks_make(k_text, strlen(k_text), KV_TASKS_NEXT_SENTENCE, 8, 3, 7, "gen", &b, &err), &err);
    REQUIRE_OK(kv_tasks_make(k_text, strlen(k_text), KV_TASKS_NEXT_SENTENCE, 8, 3, 8, "gen", &c, &err), &err);
    CHECK_EQ_INT(a->n, 8);
    int differ = 0;
    for (int64_t i = 0; i < a->n; i++) {
        const kv_task_item *x = &a->items[i];
        CHECK_EQ_INT(x->n_choices, 3);
        CHECK_STR(x->context, b->items[i].context);
        CHECK_EQ_INT(x->gold, b->items[i].gold);
        for (int k = 0; k < 3; k++) CHECK_STR(x->choices[k], b->items[i].choices[k]);
        differ |= strcmp(x->context, c->items[i].context) || x->gold != c->items[i].gold;
        /* the gold sentence follows the context in the text; distractors come from other lines */
        char buf[600];
        snprintf(buf, sizeof buf, "%s %s", x->context, x->choices[x->gold]);
        CHECK_MSG(strstr(k_text, buf) != NULL, "item %lld: '%s' is not in the text", (long long)i, buf);
        for (int k = 0; k < 3; k++) {
            if (k == x->gold) continue;
            snprintf(buf, sizeof buf, "%s %s", x->context, x->choices[k]);
            CHECK(strstr(k_text, buf) == NULL);
        }
    }
    CHECK(differ);
    kv_tasks_free(a);
    kv_tasks_free(b);
    kv_tasks_free(c);
    REQUIRE_OK(kv_tasks_make(k_text, strlen(k_text), KV_TASKS_CLOZE, 5, 4, 1, "gen", &a, &err), &err);
    for (int64_t i = 0; i < a->n; i++) {
        const kv_task_item *x = &a->items[i];
        char buf[600];
        snprintf(buf, sizeof buf, "%s %s.", x->context, x->choices[x->gold]);
        CHECK_MSG(strstr(k_text, buf) != NULL, "cloze item %lld: '%s'", (long long)i, buf);
        for (int k = 0; k < 4; k++) CHECK(strchr(x->choices[k], ' ') == NULL && strlen(x->choices[k]) >= 3);
    }
    kv_tasks_free(a);
    /* more items than the text has */
    CHECK(kv_tasks_make(k_text, strlen(k_text), KV_TASKS_NEXT_SENTENCE, 100, 3, 1, "gen", &a, &err) == KV_ERANGE);
}

KV_TEST(tasks_cli_make_check_eval) {
    char model[512], heldout[512];
    if (!kv_test_exists(kv_test_shared(model, sizeof model, PROXY)) ||
        !kv_test_exists(kv_test_shared(heldout, sizeof heldout, "data/heldout.txt")))
        SKIP("proxy-27m or heldout.txt absent");
    char args[2048], *out = NULL;
    const char *d = kv_test_tmpdir();
    snprintf(args, sizeof args, "tasks make --from %s -o %s/n.jsonl --n 6 --seed 3 --json", heldout, d);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK(out && strstr(out, "\"n\": 6"));
    free(out);
    snprintf(args, sizeof args, "tasks check %s/n.jsonl", d);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK(out && strstr(out, "6 items"));
    free(out);
    snprintf(args, sizeof args, "eval %s --tasks %s/n.jsonl --json -t 2", model, d);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 0);
    CHECK(out && strstr(out, "\"acc_norm_stderr\"") && strstr(out, "\"n\": 6"));
    free(out);
    /* a malformed file fails before the model loads, naming the line */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/bad.jsonl", d);
    static const char bad_text[] = "{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n{\"gold\": 1}\n";
    kv_test_write_file(bad, bad_text, strlen(bad_text));
    snprintf(args, sizeof args, "eval %s --tasks %s", model, bad);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 1);
    CHECK(out && strstr(out, "line 2"));
    free(out);
    snprintf(args, sizeof args, "eval %s --limit 3", model);
    CHECK_EQ_INT(kv_test_run_cli(args, &out), 2);
    free(out);
}
