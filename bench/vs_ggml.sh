#!/bin/sh
# vs_ggml.sh — kvant's ggml block types against ggml's own quantizers on the same data, 1 thread each:
# quantize (ggml_quantize_chunk: quantize_row_*_ref / quantize_iq4_nl without importance, the *_impl paths
# with it) and dequantize (type_traits to_float), in MB/s of fp32 data, plus the ratio kvant / ggml. It also
# checks that both produce the same bytes on these rows (with and without importance weights).
#
#   GGML_DIR=/path/to/ggml-or-llama.cpp-build sh bench/vs_ggml.sh [BUILD_DIR]
# GGML_DIR is a ggml build made outside this repository (its include/ggml.h, or ggml/include/ggml.h, and a
# libggml-base shared or static library somewhere below it); GGML_INC / GGML_LIB override the search.
# Without GGML_DIR the script says so and exits 0.
set -e
BUILD=${1:-build}
if [ -z "$GGML_DIR" ]; then
  echo "vs_ggml.sh: GGML_DIR is not set; skipping the comparison with ggml"
  exit 0
fi
INC=${GGML_INC:-}
[ -n "$INC" ] || for d in "$GGML_DIR/include" "$GGML_DIR/ggml/include"; do [ -f "$d/ggml.h" ] && INC=$d && break; done
LIB=${GGML_LIB:-$(find "$GGML_DIR" -name 'libggml-base.so' -o -name 'libggml-base.a' -o -name 'libggml-base.dylib' 2>/dev/null | head -n 1)}
if [ -z "$INC" ] || [ -z "$LIB" ]; then
  echo "vs_ggml.sh: no ggml.h or libggml-base under GGML_DIR=$GGML_DIR (set GGML_INC / GGML_LIB)" >&2
  exit 2
fi
TYPES=${TYPES:-"q4_0 q4_1 q5_0 q5_1 q8_0 q2_K q3_K q4_K q5_K q6_K iq4_nl iq4_xs mxfp4 nvfp4"}
ROWS=${ROWS:-512}
ROW=${ROW:-4096}
CC=${CC:-cc}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kvant-vs-ggml.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM

# ggml side: a small program against the public ggml.h (ggml_quantize_chunk, ggml_get_type_traits).
cat > "$TMP/ggml_side.c" <<'CEOF'
#include "ggml.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    /* args: data.f32 rows row min_seconds outdir type... */
    long long rows = atoll(argv[2]), n = atoll(argv[3]);
    double min_s = atof(argv[4]);
    size_t total = (size_t)(rows * n);
    float *x = malloc(total * 4), *y = malloc(total * 4), *imp = malloc((size_t)n * 4);
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(x, 4, total, f) != total) return 1;
    fclose(f);
    char path[4096];
    snprintf(path, sizeof path, "%s.imatrix", argv[1]);
    f = fopen(path, "rb");
    if (!f || fread(imp, 4, (size_t)n, f) != (size_t)n) return 1;
    fclose(f);
    void *q = malloc(total * 4 + 4096);
    for (int a = 6; a < argc; a++) {
        int t = -1;
        for (int i = 0; i < GGML_TYPE_COUNT; i++) {
            const char *nm = ggml_type_name((enum ggml_type)i);
            if (nm && !strcmp(nm, argv[a])) t = i;
        }
        if (t < 0) { printf("%s unknown 0 0 0\n", argv[a]); continue; }
        double r[3];
        for (int k = 0; k < 3; k++) {
            /* the fastest single-row call over min_s seconds, as bench_formats measures */
            size_t rb = ggml_row_size((enum ggml_type)t, n);
            double best = 1e30, t0 = now();
            for (long long c = 0; c < 24 || now() - t0 < min_s; c++) {
                long long row = c % rows;
                double t1 = now();
                if (k < 2) ggml_quantize_chunk((enum ggml_type)t, x + row * n, (char *)q + row * rb, 0, 1, n, k ? imp : NULL);
                else ggml_get_type_traits((enum ggml_type)t)->to_float((char *)q + row * rb, y + row * n, n);
                double dt = now() - t1;
                if (dt < best) best = dt;
            }
            r[k] = n * 4.0 / best / 1e6;
            if (k < 2) {
                /* the whole set in one call, for the byte comparison */
                ggml_quantize_chunk((enum ggml_type)t, x, q, 0, rows, n, k ? imp : NULL);
                size_t bytes = rb * (size_t)rows;
                snprintf(path, sizeof path, "%s/%s%s.bin", argv[5], argv[a], k ? ".imatrix" : "");
                FILE *o = fopen(path, "wb");
                if (!o || fwrite(q, 1, bytes, o) != bytes) return 1;
                fclose(o);
                if (k == 1) ggml_quantize_chunk((enum ggml_type)t, x, q, 0, rows, n, NULL); /* for to_float */
            }
        }
        printf("%s %.1f %.1f %.1f\n", argv[a], r[0], r[1], r[2]);
        fflush(stdout);
    }
    return 0;
}
CEOF
LIBDIR=$(dirname "$LIB")
$CC -O2 -I"$INC" "$TMP/ggml_side.c" "$LIB" -Wl,-rpath,"$LIBDIR" -lm -pthread -o "$TMP/ggml_side"

KVB="$BUILD/bench_formats"
sh bench/bench_formats.sh "$BUILD" --help > /dev/null
"$KVB" --rows "$ROWS" --row "$ROW" --dump "$TMP/data.f32"
LOWER=$(echo "$TYPES" | tr 'A-Z' 'a-z')
"$TMP/ggml_side" "$TMP/data.f32" "$ROWS" "$ROW" 0.5 "$TMP" $TYPES | tr 'A-Z' 'a-z' > "$TMP/ggml.txt"
"$KVB" --rows "$ROWS" --row "$ROW" $LOWER | tail -n +2 > "$TMP/kvant.txt"

echo "1 thread, $ROWS rows x $ROW N(0,1) values; MB/s of fp32 data (fastest single-row call); ratio = kvant / ggml"
printf "%-8s %10s %10s %6s | %10s %10s %6s | %10s %10s %6s | %s\n" type "ggml q" "kvant q" ratio \
  "ggml q+im" "kvant q+im" ratio "ggml deq" "kvant deq" ratio bytes
for t in $LOWER; do
  same="same"
  "$BUILD/kvant" formats quantize --format "$t" --row "$ROW" --in "$TMP/data.f32" --out "$TMP/k.bin" --quiet -t 1
  "$BUILD/kvant" formats quantize --format "$t" --row "$ROW" --in "$TMP/data.f32" --out "$TMP/ki.bin" --quiet -t 1 \
    --importance "$TMP/data.f32.imatrix"
  G=$(ls "$TMP" | grep -i "^$t.bin$" | head -n 1)
  GI=$(ls "$TMP" | grep -i "^$t.imatrix.bin$" | head -n 1)
  cmp -s "$TMP/k.bin" "$TMP/$G" || same="DIFFER"
  cmp -s "$TMP/ki.bin" "$TMP/$GI" || same="$same/imatrix-DIFFER"
  g=$(grep "^$t " "$TMP/ggml.txt"); k=$(grep "^$t " "$TMP/kvant.txt")
  echo "$g $k $same" | awk '{ printf "%-8s %10.1f %10.1f %6.2f | %10.1f %10.1f %6.2f | %10.1f %10.1f %6.2f | %s\n",
    $1, $2, $7, $7/$2, $3, $8, $8/$3, $4, $9, $9/$4, $10 }'
done
