#!/bin/sh
# run.sh — `make bench`: kvant's benchmarks in one run (numbers live here, never in tests).
#   sh bench/run.sh [path/to/kvant]
# GEMM GFLOP/s against OpenBLAS on proxy-27m's shapes, prefill tokens/s with 1 and 2 threads, and the
# formats' throughput when bench/bench_formats.sh is present. Set KVANT_SHARED to move ../shared.
set -e
KVANT=${1:-build/kvant}
SHARED=${KVANT_SHARED:-../shared}
[ -x "$KVANT" ] || { echo "bench/run.sh: $KVANT missing (run make)" >&2; exit 2; }
echo "== kvant bench matmul"
"$KVANT" bench matmul
if [ -d "$SHARED/models/proxy-27m" ]; then
    echo "== kvant bench prefill (proxy-27m)"
    "$KVANT" bench prefill "$SHARED/models/proxy-27m"
else
    echo "== prefill: $SHARED/models/proxy-27m absent, skipped"
fi
if [ -f bench/bench_formats.sh ]; then
    echo "== formats"
    sh bench/bench_formats.sh "$(dirname "$KVANT")"
fi
echo "== bit allocation (dynamic program, 1000 layers x 30 candidates)"
BUILD_DIR=$(dirname "$KVANT")
${CC:-cc} -std=c11 -O2 -Iinclude -Isrc -D_GNU_SOURCE bench/bench_alloc.c "$BUILD_DIR/libkvant.a" -lm -pthread \
    $( [ -f /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] && echo -lopenblas ) -o "$BUILD_DIR/bench_alloc"
"$BUILD_DIR/bench_alloc" 1000 30
