#!/usr/bin/env python3
"""tasks_convert.py — converts public multiple-choice task files into kvant's task JSONL (docs/eval.md
"Zero-shot tasks"): one object per line {"context", "choices", "gold"[, "id"]}, scored by `kvant eval MODEL
--tasks OUT.jsonl` the lm-eval way (delimiter " " before each choice).

    python3 scripts/tasks_convert.py --format hellaswag IN.jsonl OUT.jsonl
    formats: hellaswag (HellaSwag's own jsonl or the HF dataset rows: ctx/ctx_a/ctx_b, endings, label),
             piqa (goal, sol1, sol2, label; labels from a separate file with --labels F),
             arc (ARC-Easy/Challenge jsonl: question{stem, choices[{text,label}]}, answerKey; or HF rows:
                  question, choices{text,label}, answerKey),
             lm-eval (a samples_*.jsonl from lm_eval --log_samples: arguments[i] = [context, " choice"],
                  target the gold index; the delimiter is taken from the arguments)
Uses only the standard library. Prompts follow lm-eval's task yamls: ARC "Question: Q\\nAnswer:", PIQA
"Question: G\\nAnswer:", HellaSwag its preprocess (activity label + ctx, " [title]" stripped).
"""
import argparse, json, re, sys


def hellaswag_pre(text):
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def conv_hellaswag(row):
    # lm-eval's hellaswag utils: ctx = ctx_a + " " + ctx_b.capitalize()
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize() if "ctx_a" in row else row["ctx"]
    context = hellaswag_pre(row.get("activity_label", "") + ": " + ctx)
    endings = row.get("endings") or row.get("ending_options")
    return {"context": context, "choices": [hellaswag_pre(e) for e in endings], "gold": int(row["label"]),
            "id": str(row.get("ind", row.get("source_id", "")))}


def conv_piqa(row, label):
    return {"context": "Question: " + row["goal"] + "\nAnswer:", "choices": [row["sol1"], row["sol2"]],
            "gold": int(label if label is not None else row["label"]), "id": str(row.get("id", ""))}


def conv_arc(row):
    q = row["question"]
    if isinstance(q, dict):
        stem, ch = q["stem"], q["choices"]
        texts, labels = [c["text"] for c in ch], [c["label"] for c in ch]
    else:
        stem, texts, labels = q, row["choices"]["text"], row["choices"]["label"]
    key = row["answerKey"]
    key = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}.get(key, key) if labels[0] == "A" else key
    return {"context": "Question: " + stem + "\nAnswer:", "choices": texts, "gold": labels.index(key),
            "id": str(row.get("id", ""))}


def conv_lm_eval(row):
    args = row["arguments"]
    pairs = [(a["arg_0"], a["arg_1"]) if isinstance(a, dict) else (a[0], a[1]) for a in
             (args.values() if isinstance(args, dict) else args)]
    context = pairs[0][0]
    conts = [c for _, c in pairs]
    delim = " " if all(c.startswith(" ") for c in conts) else ""
    out = {"context": context, "choices": [c[len(delim):] for c in conts], "gold": int(row["target"]),
           "id": str(row.get("doc_id", ""))}
    if delim != " ":
        out["delimiter"] = delim
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--format", required=True, choices=["hellaswag", "piqa", "arc", "lm-eval"])
    ap.add_argument("--labels", help="PIQA: the separate labels file (one 0/1 per line)")
    ap.add_argument("input")
    ap.add_argument("output")
    a = ap.parse_args()
    labels = None
    if a.labels:
        labels = [l.strip() for l in open(a.labels, encoding="utf-8") if l.strip()]
    out = []
    with open(a.input, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                if a.format == "hellaswag":
                    item = conv_hellaswag(row)
                elif a.format == "piqa":
                    item = conv_piqa(row, labels[len(out)] if labels else None)
                elif a.format == "arc":
                    item = conv_arc(row)
                else:
                    item = conv_lm_eval(row)
            except (KeyError, ValueError, IndexError, TypeError) as e:
                sys.exit(f"{a.input}: line {n + 1}: cannot convert ({type(e).__name__}: {e})")
            if not item["id"]:
                del item["id"]
            out.append(item)
    tmp = a.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for item in out:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    import os
    os.replace(tmp, a.output)
    print(f"{a.output}: {len(out)} items")


if __name__ == "__main__":
    main()
