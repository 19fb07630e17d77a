#!/bin/sh
# vs_llamacpp.sh — kvant's unquantized evaluation side by side with llama.cpp's llama-perplexity: proxy-27m
# bf16 GGUF, all 519 windows of ../shared/data/heldout.txt at ctx 512, 2 threads (the speed target:
# kvant within 1.5x of llama.cpp's time; its figure: PPL 52.6737 +/- 0.46 in about 53 s on 2 cores).
#   LLAMA_CPP_DIR=/path/to/llama.cpp sh bench/vs_llamacpp.sh [path/to/kvant]
# LLAMA_CPP_DIR is a llama.cpp build (e.g. the llama-cpp-python sdist's vendor/llama.cpp built with cmake,
# outside this repository): its llama-perplexity is looked up in build/bin, bin, or the directory itself.
# Without it the script says so and exits 0.
KVANT=${1:-build/kvant}
SHARED=${KVANT_SHARED:-../shared}
GGUF="$SHARED/models/proxy-27m-gguf/proxy-27m-bf16.gguf"
TEXT="$SHARED/data/heldout.txt"
THREADS=${THREADS:-2}
if [ -z "$LLAMA_CPP_DIR" ]; then
    echo "vs_llamacpp.sh: LLAMA_CPP_DIR not set; skipping the llama.cpp comparison"
    exit 0
fi
LP=""
for c in "$LLAMA_CPP_DIR/build/bin/llama-perplexity" "$LLAMA_CPP_DIR/bin/llama-perplexity" "$LLAMA_CPP_DIR/llama-perplexity"; do
    [ -x "$c" ] && { LP=$c; break; }
done
if [ -z "$LP" ]; then
    echo "vs_llamacpp.sh: no llama-perplexity under $LLAMA_CPP_DIR; skipping"
    exit 0
fi
set -e
now() { date +%s.%N; }
echo "== llama.cpp: $LP"
t0=$(now)
"$LP" -m "$GGUF" -f "$TEXT" -c 512 -t "$THREADS" 2>&1 | grep -E "Final estimate|PPL =" | tail -1
t1=$(now)
echo "== kvant: $KVANT"
"$KVANT" eval "$GGUF" --text "$TEXT" --style llamacpp --ctx 512 -t "$THREADS" --quiet | grep PPL
t2=$(now)
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { l = b - a; k = c - b;
    printf "llama.cpp %.1f s, kvant %.1f s, kvant/llama.cpp = %.2fx (target <= 1.5x)\n", l, k, k / l }'
