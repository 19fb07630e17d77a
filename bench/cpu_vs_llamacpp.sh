#!/bin/sh
# cpu_vs_llamacpp.sh — kvant's CPU kernels side by side with llama.cpp on the same GGUFs, same threads, one run:
# decode and prefill tokens/s (`kvant bench run` vs llama-bench pp/tg) and perplexity time (`kvant eval
# --style llamacpp --act-dot q8` vs llama-perplexity), then the table into docs/RESULTS.md (section cpu).
#   LLAMA_CPP_DIR=/path/to/llama.cpp/bin sh bench/cpu_vs_llamacpp.sh [path/to/kvant]
# The GGUFs: q4_0, q4_k_m and q8_0 of ../shared/models/proxy-27m-gguf made by llama.cpp's llama-quantize (into
# $WORK, default a temp dir), plus any GGUF named in EXTRA_MODELS (e.g. a 1B-shape model). THREADS (default
# "1 2"), TEXT (default the first 60000 bytes of ../shared/data/heldout.txt), NO_SPLICE=1 leaves RESULTS.md.
# Without LLAMA_CPP_DIR (or its tools) the script says so and exits 0.
KVANT=${1:-build/kvant}
SHARED=${KVANT_SHARED:-../shared}
THREADS=${THREADS:-"1 2"}
[ -x "$KVANT" ] || { echo "cpu_vs_llamacpp.sh: $KVANT missing (run make)" >&2; exit 2; }
if [ -z "$LLAMA_CPP_DIR" ]; then
    echo "cpu_vs_llamacpp.sh: LLAMA_CPP_DIR not set; skipping the llama.cpp comparison"
    exit 0
fi
tool() {
    for c in "$LLAMA_CPP_DIR/build/bin/$1" "$LLAMA_CPP_DIR/bin/$1" "$LLAMA_CPP_DIR/$1"; do
        [ -x "$c" ] && { echo "$c"; return; }
    done
}
LB=$(tool llama-bench); LP=$(tool llama-perplexity); LQ=$(tool llama-quantize)
if [ -z "$LB" ] || [ -z "$LP" ] || [ -z "$LQ" ]; then
    echo "cpu_vs_llamacpp.sh: llama-bench / llama-perplexity / llama-quantize not all under $LLAMA_CPP_DIR; skipping"
    exit 0
fi
set -e
WORK=${WORK:-$(mktemp -d)}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT INT TERM
SRC="$SHARED/models/proxy-27m-gguf/proxy-27m-bf16.gguf"
TEXT=${TEXT:-$OUT/text.txt}
[ -f "$TEXT" ] || head -c 60000 "$SHARED/data/heldout.txt" > "$TEXT"
MODELS=""
for q in q4_0 q4_k_m q8_0; do
    m="$WORK/proxy-$q.gguf"
    [ -f "$m" ] || "$LQ" "$SRC" "$m" "$(echo $q | tr a-z A-Z)" > "$OUT/quantize.log" 2>&1
    MODELS="$MODELS $m"
done
MODELS="$MODELS ${EXTRA_MODELS:-}"
now() { date +%s.%N; }
T="$OUT/table.md"
{
    echo "## CPU kernels against llama.cpp (bench/cpu_vs_llamacpp.sh; same GGUFs, same threads, one run)"
    echo
    echo "Machine: $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ //"), $(nproc) cores."
    echo "decode = tg128 / 128 tokens generated one by one, prefill = pp512 / one batch of 512 tokens (tok/s);"
    echo "eval = wall seconds of llama-perplexity vs \`kvant eval --style llamacpp --act-dot q8\`, ctx 512, $(wc -c < "$TEXT") bytes of"
    echo "heldout.txt. Ratios kvant / llama.cpp (> 1: kvant faster; for eval time: llama.cpp s / kvant s)."
    echo
    echo "| model | threads | decode llama.cpp | decode kvant | ratio | prefill llama.cpp | prefill kvant | ratio | eval llama.cpp s | eval kvant s | ratio |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} > "$T"
for m in $MODELS; do
    [ -f "$m" ] || { echo "cpu_vs_llamacpp.sh: $m missing, skipped" >&2; continue; }
    for t in $THREADS; do
        lb=$("$LB" -m "$m" -t "$t" -p 512 -n 128 -r 3 -o csv 2>/dev/null | tail -n +2)
        lpp=$(echo "$lb" | awk -F'","' '/"512","0"/ { print $(NF-1) }')
        ltg=$(echo "$lb" | awk -F'","' '/"0","128"/ { print $(NF-1) }')
        kj=$("$KVANT" bench run "$m" -t "$t" --reps 3 --json)
        kpp=$(echo "$kj" | grep -o '"prefill_tokens_per_s": *[0-9.e+]*' | grep -o '[0-9.e+]*$')
        ktg=$(echo "$kj" | grep -o '"decode_tokens_per_s": *[0-9.e+]*' | grep -o '[0-9.e+]*$')
        t0=$(now); "$LP" -m "$m" -f "$TEXT" -c 512 -t "$t" > "$OUT/lp.log" 2>&1; t1=$(now)
        "$KVANT" eval "$m" --text "$TEXT" --style llamacpp --ctx 512 -t "$t" --act-dot q8 --quiet > "$OUT/kv.log"; t2=$(now)
        awk -v name="$(basename "$m")" -v t="$t" -v lt="$ltg" -v kt="$ktg" -v lp="$lpp" -v kp="$kpp" \
            -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
            le = b - a; ke = c - b;
            printf "| %s | %d | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f |\n",
                   name, t, lt, kt, kt / lt, lp, kp, kp / lp, le, ke, le / ke }' >> "$T"
        tail -1 "$T"
    done
done
{
    echo
    echo "Load average while measuring: $(cut -d' ' -f1-3 /proc/loadavg) (a shared machine: ratios from one run"
    echo "are the figures to read; absolute speeds move with the load)."
    if awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v n="$(nproc)" 'BEGIN { exit !(l > n) }'; then
        echo "The load exceeded the core count: with as many threads as cores both programs compete with other"
        echo "processes, and threads that spin-wait for each other (llama.cpp's, kvant's) lose whole time slices;"
        echo "the 1-thread rows measure the kernels, the multi-thread rows this machine's contention."
    fi
} >> "$T"
cat "$T"
[ -n "$NO_SPLICE" ] || python3 scripts/splice_results.py docs/RESULTS.md cpu "$T"
