#!/bin/sh
# gptq_layer.sh — kvant's GPTQ vs the same algorithm in PyTorch (CPU) on one layer, in one run (issue #7).
#   sh bench/gptq_layer.sh [ROWS COLS [NTOK [THREADS]]]     defaults: 4096 4096 262144 (128 x 2048 tokens) 2
#   sh bench/gptq_layer.sh 4096 14336; sh bench/gptq_layer.sh 14336 4096   (Llama-3-8B MLP shapes)
# Environment: BUILD (default build; `make BUILD=...` first: needs $BUILD/libkvant.a), PYTHON (default python3;
# the PyTorch side is skipped cleanly when that Python has no torch), REPEAT (runs per side, the minimum is
# reported; default 3), TORCH_REPEAT (runs of the PyTorch side; default REPEAT), PHASES=1 (kvant's
# Cholesky/inverse and lazy-batch GEMMs timed on their own), TORCH_FP32=1 (also time PyTorch with gptq.py's own fp32 inverse; not byte-comparable).
# Both sides are single processes limited to THREADS threads (kvant pool + OpenBLAS; torch.set_num_threads,
# OMP/MKL); the kvant side runs first, then the PyTorch side on the W and H files it wrote.
set -e
ROWS=${1:-4096}
COLS=${2:-4096}
NTOK=${3:-262144}
THREADS=${4:-2}
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-python3}
REPEAT=${REPEAT:-3}
TORCH_REPEAT=${TORCH_REPEAT:-$REPEAT}
FLAGS="-std=c11 -O2 -march=native -Iinclude -Isrc -D_GNU_SOURCE -pthread"
LIBS="-lm -pthread"
if printf '#include <cblas.h>\nint main(void){return 0;}\n' | cc -x c - -I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas -o /dev/null 2>/dev/null; then
    LIBS="$LIBS -lopenblas"
fi
cc $FLAGS bench/gptq_layer.c "$BUILD/libkvant.a" $LIBS -o "$BUILD/bench_gptq_layer"
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
echo "load before: $(uptime)"
"$BUILD/bench_gptq_layer" "$ROWS" "$COLS" "$NTOK" "$DIR" "$THREADS" "$REPEAT" ${PHASES:+--phases} | tee "$DIR/kvant.txt"
KV_S=$(sed -n 's/^kvant  gptq .*: min of [0-9]*: \([0-9.]*\) s.*/\1/p' "$DIR/kvant.txt")
[ -n "$KV_S" ] || { echo "gptq_layer: the kvant side failed" >&2; exit 1; }
echo "load between: $(uptime)"
"$PYTHON" bench/gptq_layer.py "$ROWS" "$COLS" "$DIR" "$THREADS" "$TORCH_REPEAT" --kvant-seconds "$KV_S"
if [ -n "$TORCH_FP32" ]; then
    "$PYTHON" bench/gptq_layer.py "$ROWS" "$COLS" "$DIR" "$THREADS" "$TORCH_REPEAT" --inverse fp32 --kvant-seconds "$KV_S"
fi
echo "load after: $(uptime)"
