#!/usr/bin/env python3
"""crosscheck_bpe.py — optional cross-check of kvant's byte-level BPE against HF `tokenizers`.

Builds an HF tokenizer from the vocabulary of a GGUF (tokenizer.ggml.tokens/merges/pre: GPT-2, Llama-3 or
Qwen2 split pattern, ByteLevel, control tokens as special added tokens), tokenizes each FILE as one text
both ways (no BOS) and reports the first difference. Needs `pip install tokenizers gguf`; skips otherwise.
Usage: python3 scripts/crosscheck_bpe.py build/kvant VOCAB.gguf FILE...
"""
import json
import subprocess
import sys

PATTERNS = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def gguf_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def build(path):
    from gguf import GGUFReader
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
    r = GGUFReader(path)
    tokens = gguf_strings(r, "tokenizer.ggml.tokens")
    merges = gguf_strings(r, "tokenizer.ggml.merges")
    tt = r.fields["tokenizer.ggml.token_type"]
    types = [int(tt.parts[i][0]) for i in tt.data]
    pre = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode() if "tokenizer.ggml.pre" in r.fields else "default"
    vocab = {t: i for i, t in enumerate(tokens) if types[i] not in (3, 4)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], ignore_merges=pre == "llama-bpe")
    tk = Tokenizer(bpe)
    if pre in PATTERNS:
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PATTERNS[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.add_tokens([AddedToken(tokens[i], special=types[i] == 3, normalized=False)
                   for i in range(len(tokens)) if types[i] in (3, 4)])
    return tk


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    try:
        tk = build(sys.argv[2])
    except ImportError:
        print("skip: the tokenizers and gguf packages are not installed")
        return 0
    status = 0
    for path in sys.argv[3:]:
        text = open(path, "rb").read().decode("utf-8")
        ref = tk.encode(text, add_special_tokens=False).ids
        out = subprocess.run([sys.argv[1], "tokenize", sys.argv[2], "--no-bos", "--json", "--file", path],
                             capture_output=True, check=True).stdout
        got = json.loads(out)["ids"]
        if got == ref:
            print(f"{path}: {len(ref)} tokens, identical")
            continue
        status = 1
        i = next((k for k in range(min(len(got), len(ref))) if got[k] != ref[k]), min(len(got), len(ref)))
        print(f"{path}: DIFFERENT ({len(got)} vs {len(ref)} tokens), first at {i}: kvant {got[i:i + 8]} "
              f"tokenizers {ref[i:i + 8]} {tk.decode(ref[max(0, i - 4):i + 8])!r}")
    return status


if __name__ == "__main__":
    sys.exit(main())
