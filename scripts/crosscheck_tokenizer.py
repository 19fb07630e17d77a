#!/usr/bin/env python3
"""crosscheck_tokenizer.py — optional cross-check of `kvant tokenize` against the sentencepiece library.

Tokenizes each FILE with a SentencePiece tokenizer.model both ways (the whole file as one text, no BOS) and
reports the first difference. Needs `pip install sentencepiece`; skips (exit 0) when it is absent.
Usage: python3 scripts/crosscheck_tokenizer.py build/kvant MODEL/tokenizer.model FILE...
"""
import json
import subprocess
import sys


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    try:
        import sentencepiece
    except ImportError:
        print("skip: the sentencepiece package is not installed")
        return 0
    kvant, model, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    sp = sentencepiece.SentencePieceProcessor(model_file=model)
    status = 0
    for path in files:
        text = open(path, "rb").read().decode("utf-8")
        ref = sp.encode(text)
        out = subprocess.run([kvant, "tokenize", model, "--no-bos", "--json", "--file", path],
                             capture_output=True, check=True).stdout
        got = json.loads(out)["ids"]
        if got == ref:
            print(f"{path}: {len(ref)} tokens, identical")
            continue
        status = 1
        i = next((k for k in range(min(len(got), len(ref))) if got[k] != ref[k]), min(len(got), len(ref)))
        print(f"{path}: DIFFERENT ({len(got)} vs {len(ref)} tokens), first at {i}: "
              f"kvant {got[i:i + 8]} sentencepiece {ref[i:i + 8]} ({sp.id_to_piece(ref[i:i + 8])})")
    return status


if __name__ == "__main__":
    sys.exit(main())
