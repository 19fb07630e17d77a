/* cmd_tasks.c — `kvant tasks make|check`: zero-shot multiple-choice task files (docs/eval.md "Zero-shot
 * tasks") generated from a text of passages, and a check of a JSONL file against the schema. */
#include "cli.h"
#include "fwd_cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_usage[] =
    "usage: kvant tasks make --from TEXT -o OUT.jsonl [--kind next-sentence|cloze] [--n N] [--choices C]\n"
    "                        [--seed S] [--name NAME] [--json]\n"
    "       kvant tasks check FILE.jsonl [--json]\n"
    "\n"
    "make: multiple-choice items from a UTF-8 text with one passage per line (e.g. ../shared/data/heldout.txt):\n"
    "  next-sentence  context = up to 3 sentences of a passage; choices = the passage's next sentence and C-1\n"
    "                 sentences of other passages (of similar length when the text has them)\n"
    "  cloze          context = a passage up to the last word of a sentence; choices = that word and the last\n"
    "                 words of C-1 sentences of other passages\n"
    "  --n N          items (default 200); --choices C (default 4, 2..16); --seed S (default 1): same text and\n"
    "                 seed give the same file\n"
    "check: parses FILE.jsonl and prints its item count (errors name the line).\n"
    "Score them with `kvant eval MODEL --tasks FILE.jsonl`.\n";

static int tasks_make(int argc, char **argv) {
    const char *from = NULL, *outp = NULL, *name = NULL, *v = NULL;
    kv_tasks_kind kind = KV_TASKS_NEXT_SENTENCE;
    long long n = 200, choices = 4, seed = 1;
    int json = 0;
    kv_error err;
    kv_error_clear(&err);
    for (int i = 2; i < argc; i++) {
        if (kv_cli_opt(argc, argv, &i, "--from", NULL, &v)) {
            if (!v) return kv_cli_usage("tasks", "--from needs a text file");
            from = v;
        } else if (kv_cli_opt(argc, argv, &i, "--output", "-o", &v)) {
            if (!v) return kv_cli_usage("tasks", "-o needs a file");
            outp = v;
        } else if (kv_cli_opt(argc, argv, &i, "--kind", NULL, &v)) {
            if (kv_tasks_kind_parse(v, &kind, &err) != KV_OK) return kv_cli_usage("tasks", "%s", err.message);
        } else if (kv_cli_opt(argc, argv, &i, "--n", "-n", &v)) {
            if (kv_cli_parse_int(v, 1, 10000000, &n)) return kv_cli_usage("tasks", "--n needs a positive number");
        } else if (kv_cli_opt(argc, argv, &i, "--choices", NULL, &v)) {
            if (kv_cli_parse_int(v, 2, 16, &choices)) return kv_cli_usage("tasks", "--choices needs 2..16");
        } else if (kv_cli_opt(argc, argv, &i, "--seed", NULL, &v)) {
            if (kv_cli_parse_int(v, 0, INT64_MAX, &seed)) return kv_cli_usage("tasks", "--seed needs a number >= 0");
        } else if (kv_cli_opt(argc, argv, &i, "--name", NULL, &v)) {
            if (!v) return kv_cli_usage("tasks", "--name needs a value");
            name = v;
        } else if (kv_cli_flag(argv, i, "--json", NULL)) {
            json = 1;
        } else {
            return kv_cli_usage("tasks", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!from) return kv_cli_usage("tasks", "missing --from TEXT");
    if (!outp) return kv_cli_usage("tasks", "missing -o OUT.jsonl");
    int prc = kv_cli_prepare_output("tasks", outp); /* an unwritable output fails before the work */
    if (prc) return prc;
    char *text = NULL;
    size_t len = 0;
    if (kv_cli_read_text(from, &text, &len, &err) != KV_OK) return kv_cli_fail("tasks", &err);
    kv_taskset *ts = NULL;
    kv_status st = kv_tasks_make(text, len, kind, n, (int)choices, (uint64_t)seed, name ? name : outp, &ts, &err);
    free(text);
    if (st == KV_OK) st = kv_tasks_save(ts, outp, &err);
    if (st != KV_OK) { kv_tasks_free(ts); return kv_cli_fail("tasks", &err); }
    if (json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "file"); kv_jw_str(&w, outp);
        kv_jw_key(&w, "from"); kv_jw_str(&w, from);
        kv_jw_key(&w, "kind"); kv_jw_str(&w, kv_tasks_kind_name(kind));
        kv_jw_key(&w, "n"); kv_jw_int(&w, ts->n);
        kv_jw_key(&w, "choices"); kv_jw_int(&w, choices);
        kv_jw_key(&w, "seed"); kv_jw_int(&w, seed);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else {
        printf("%s: %lld %s items, %lld choices each, seed %lld (from %s)\n", outp, (long long)ts->n,
               kv_tasks_kind_name(kind), choices, seed, from);
    }
    kv_tasks_free(ts);
    return 0;
}

static int tasks_check(int argc, char **argv) {
    const char *path = NULL;
    int json = 0;
    for (int i = 2; i < argc; i++) {
        if (kv_cli_flag(argv, i, "--json", NULL)) json = 1;
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else return kv_cli_usage("tasks", "unexpected argument '%s'", argv[i]);
    }
    if (!path) return kv_cli_usage("tasks", "missing FILE.jsonl");
    kv_error err;
    kv_error_clear(&err);
    kv_taskset *ts = NULL;
    if (kv_tasks_load(path, &ts, &err) != KV_OK) return kv_cli_fail("tasks", &err);
    int64_t choices = 0;
    for (int64_t i = 0; i < ts->n; i++) choices += ts->items[i].n_choices;
    if (json) {
        kv_jw w;
        kv_jw_init(&w, stdout, 1);
        kv_jw_obj_begin(&w);
        kv_jw_key(&w, "file"); kv_jw_str(&w, path);
        kv_jw_key(&w, "name"); kv_jw_str(&w, ts->name);
        kv_jw_key(&w, "n"); kv_jw_int(&w, ts->n);
        kv_jw_key(&w, "choices"); kv_jw_int(&w, choices);
        kv_jw_obj_end(&w);
        kv_jw_end(&w);
    } else {
        printf("%s: %lld items, %lld choices (task '%s')\n", path, (long long)ts->n, (long long)choices, ts->name);
    }
    kv_tasks_free(ts);
    return 0;
}

int kv_cmd_tasks(int argc, char **argv) {
    if (kv_cli_wants_help(argc, argv) || argc < 2) {
        fputs(k_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "make")) return tasks_make(argc, argv);
    if (!strcmp(argv[1], "check")) return tasks_check(argc, argv);
    return kv_cli_usage("tasks", "unknown subcommand '%s' (make, check)", argv[1]);
}
