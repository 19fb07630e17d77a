#!/bin/sh
# bench_formats.sh — builds bench/bench_formats.c against the library and runs it (1 thread).
#   sh bench/bench_formats.sh [BUILD_DIR] [bench_formats options: --json, --rows R, --row N, FORMAT ...]
# BUILD_DIR (default build) must hold libkvant.a (`make`). Prints MB/s of fp32 data per format.
set -e
BUILD=build
case "$1" in -*|"") ;; *) BUILD=$1; shift ;; esac
CC=${CC:-cc}
[ -f "$BUILD/libkvant.a" ] || { echo "bench_formats.sh: $BUILD/libkvant.a missing (run make)" >&2; exit 2; }
BLAS=""
[ -f /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] && BLAS="-lopenblas"
$CC -std=c11 -O2 -march=native -Iinclude -Isrc -D_GNU_SOURCE bench/bench_formats.c "$BUILD/libkvant.a" \
    -lm -pthread $BLAS -o "$BUILD/bench_formats" 2>/dev/null ||
  $CC -std=c11 -O2 -march=native -Iinclude -Isrc -D_GNU_SOURCE bench/bench_formats.c "$BUILD/libkvant.a" \
    -lm -pthread -o "$BUILD/bench_formats"
exec "$BUILD/bench_formats" "$@"
