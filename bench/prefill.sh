#!/bin/sh
# prefill.sh — forward-pass speed on proxy-27m: one 512-token window with 1 and 2 threads, then (with --full)
# the whole llama.cpp-style evaluation of heldout.txt (519 windows of 512, 266K tokens) with 2 threads, the
# workload compared with llama-perplexity in bench/vs_llamacpp.sh.
#   sh bench/prefill.sh [--full] [path/to/kvant]
set -e
FULL=0
[ "$1" = "--full" ] && { FULL=1; shift; }
KVANT=${1:-build/kvant}
SHARED=${KVANT_SHARED:-../shared}
"$KVANT" bench prefill "$SHARED/models/proxy-27m" --ctx 512 --threads 1,2
if [ $FULL = 1 ]; then
    echo "== heldout.txt, llamacpp style, ctx 512, all windows, 2 threads (bf16 GGUF)"
    "$KVANT" eval "$SHARED/models/proxy-27m-gguf/proxy-27m-bf16.gguf" --text "$SHARED/data/heldout.txt" \
        --style llamacpp --ctx 512 -t 2 --quiet
fi
