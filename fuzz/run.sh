#!/bin/sh
# fuzz/run.sh SECONDS BIN... — runs each libFuzzer target (build-fuzz/fuzz_NAME, from `make fuzz`) for SECONDS
# on its corpus build-fuzz/corpus-NAME/, seeded with valid files: small ones written by fuzz/gen_seeds.c with
# kvant's own GGUF writer, and the first bytes / headers of the files under ../shared (never copied into the
# repository). Prints one line per target with its execution count; exits non-zero if a target crashed
# (the reproducer is build-fuzz/crash-NAME-*). Used by `make test-fuzz` (FUZZ_SECONDS=N).
set -eu

secs=${1:?usage: fuzz/run.sh SECONDS BIN...}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${KVANT_SHARED:-$root/../shared}
out=$root/build-fuzz
cc=${FUZZ_CC:-clang}
seeds=$out/seeds

# Seeds written by kvant itself (the library objects of build-fuzz are instrumented: link the same way).
if [ ! -x "$out/gen_seeds" ] || [ "$root/fuzz/gen_seeds.c" -nt "$out/gen_seeds" ] || \
   [ "$out/libkvant.a" -nt "$out/gen_seeds" ]; then
    $cc -std=c11 -O1 -g -I"$root/include" -I"$root/src" -D_GNU_SOURCE -fsanitize=fuzzer-no-link,address,undefined \
        "$root/fuzz/gen_seeds.c" "$out/libkvant.a" -lm -pthread -o "$out/gen_seeds"
fi
rm -rf "$seeds"
"$out/gen_seeds" "$seeds"

# The first 64 KiB of each shared GGUF (header and metadata, truncated) ...
for f in "$shared"/models/*/*.gguf "$shared"/tokenizers/*.gguf; do
    [ -f "$f" ] && head -c 65536 "$f" > "$seeds/gguf/shared-$(basename "$f")"
done
# ... the header of each shared safetensors file, with the byte buffer cut to what the header fits ...
for f in "$shared"/models/*/*.safetensors; do
    [ -f "$f" ] || continue
    n=$(od -An -t u8 -N 8 "$f" | tr -d ' ')
    head -c $((8 + n)) "$f" > "$seeds/safetensors/shared-header-$(basename "$f")"
    cp "$seeds/safetensors/shared-header-$(basename "$f")" "$seeds/json/shared-header.tmp"
    tail -c +9 "$seeds/json/shared-header.tmp" > "$seeds/json/shared-header-$(basename "$f" .safetensors).json"
    rm -f "$seeds/json/shared-header.tmp"
done
# ... the shared SentencePiece models (small: copied into the build-only corpus as they are) ...
mkdir -p "$seeds/spm"
for f in "$shared"/models/*/tokenizer.model; do
    [ -f "$f" ] && cp "$f" "$seeds/spm/shared-$(basename "$(dirname "$f")").model"
done
# ... and the small JSON files (configs, tokenizer configs, index).
for f in "$shared"/models/*/*.json; do
    [ -f "$f" ] && [ "$(wc -c < "$f")" -le 65536 ] && cp "$f" "$seeds/json/shared-$(basename "$(dirname "$f")")-$(basename "$f")"
done

# Task JSONL (fuzz_tasks): two valid items; the heldout text's first lines as generator input.
mkdir -p "$seeds/tasks"
printf '%s\n%s\n' '{"context": "The cat sat on the", "choices": ["mat.", "moon"], "gold": 0, "id": "a"}' \
    '{"context": "x\\n\\u00e9", "choices": ["a", "b", "c"], "gold": 2, "delimiter": ""}' > "$seeds/tasks/items.jsonl"
[ -f "$shared/data/heldout.txt" ] && head -c 8192 "$shared/data/heldout.txt" > "$seeds/tasks/heldout-head.txt"

# Study specs (fuzz_study): the specs of bench/studies.
mkdir -p "$seeds/study"
for f in "$root"/bench/studies/*.json; do
    [ -f "$f" ] && cp "$f" "$seeds/study/"
done

status=0
for bin in "$@"; do
    name=$(basename "$bin")
    target=${name#fuzz_}
    corpus=$out/corpus-$target
    mkdir -p "$corpus"
    [ -d "$seeds/$target" ] && cp "$seeds/$target"/* "$corpus"/ 2>/dev/null || true
    # inputs that once broke a property (fixed since): replayed first, as part of the corpus
    [ -d "$root/fuzz/regress/$target" ] && cp "$root/fuzz/regress/$target"/* "$corpus"/ 2>/dev/null || true
    log=$out/log-$target.txt
    dict=
    [ -f "$root/fuzz/$target.dict" ] && dict=-dict=$root/fuzz/$target.dict
    flags=
    [ -f "$root/fuzz/$target.flags" ] && flags=$(cat "$root/fuzz/$target.flags")
    # shellcheck disable=SC2086 # flags (fuzz/NAME.flags) and FUZZ_ARGS: extra libFuzzer flags, word-split on purpose
    if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 \
        $dict $flags ${FUZZ_ARGS:-} -artifact_prefix="$out/crash-$target-" "$corpus" > "$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        files=$(ls "$corpus" | wc -l)
        echo "fuzz $name: ok, ${execs:-?} executions in ${secs} s, corpus $files files"
    else
        echo "fuzz $name: FAILED (see $log; reproducer build-fuzz/crash-$target-*)"
        tail -n 30 "$log"
        status=1
    fi
done
exit $status
