#!/bin/sh
# gptq_layer.sh — kvant's GPTQ vs the same algorithm in PyTorch (CPU) on one layer, in one run (issue #7).
#   sh bench/gptq_layer.sh [ROWS COLS [NTOK [THREADS]]]     defaults: 4096 4096 262144 (128 x 2048) 2
#   sh bench/gptq_layer.sh 4096 14336; sh bench/gptq_layer.sh 14336 4096   (Llama-3-8B MLP shapes)
# Needs `make` first (build/libkvant.a); PyTorch optional (skipped cleanly when absent).
set -e
ROWS=${1:-4096}
COLS=${2:-4096}
NTOK=${3:-262144}
THREADS=${4:-2}
BUILD=${BUILD:-build}
FLAGS="-std=c11 -O2 -march=native -Iinclude -D_GNU_SOURCE -pthread"
LIBS="-lm -pthread"
if printf '#include <cblas.h>\nint main(void){return 0;}\n' | cc -x c - -I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas -o /dev/null 2>/dev/null; then
    LIBS="$LIBS -lopenblas"
fi
cc $FLAGS bench/gptq_layer.c "$BUILD/libkvant.a" $LIBS -o "$BUILD/bench_gptq_layer"
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
OPENBLAS_NUM_THREADS=$THREADS "$BUILD/bench_gptq_layer" "$ROWS" "$COLS" "$NTOK" "$DIR" "$THREADS"
python3 bench/gptq_layer.py "$ROWS" "$COLS" "$DIR" "$THREADS"
