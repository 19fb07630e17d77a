#!/bin/sh
# check_layers.sh — the layering rule of docs/STYLE.md / the brief: the lower layers (src/core, src/formats,
# src/kernels, src/io, src/model) never call up into src/transforms, src/algos or src/eval.
#   1. no lower-layer source includes a header of an upper layer;
#   2. (when BUILD holds the objects and nm exists) no lower-layer object references a symbol that only an
#      upper-layer object defines (declarations in include/kvant.h do not hide a call).
# Usage: sh scripts/check_layers.sh [BUILD]   (exit 1 and one line per violation)
BUILD=${1:-build}
LOWER="src/core src/formats src/kernels/cpu src/io src/model"
UPPER="transforms algos eval"
bad=0
for d in $LOWER; do
    for f in "$d"/*.c "$d"/*.h; do
        [ -f "$f" ] || continue
        for u in $UPPER; do
            if grep -n "^[[:space:]]*#[[:space:]]*include[[:space:]]*\"\(\.\./\)*\(src/\)\?$u/" "$f" >/dev/null; then
                echo "layering: $f includes a header of src/$u: $(grep -n "#[[:space:]]*include.*$u/" "$f" | head -1)"
                bad=1
            fi
        done
    done
done
if command -v nm >/dev/null 2>&1 && [ -d "$BUILD/src" ]; then
    tmp=$(mktemp -d) || exit 2
    trap 'rm -rf "$tmp"' EXIT INT TERM
    for u in $UPPER; do
        for c in src/$u/*.c; do # objects of current sources only (a moved file leaves a stale .o)
            o="$BUILD/${c%.c}.o"
            [ -f "$o" ] && nm -g --defined-only "$o" 2>/dev/null | awk 'NF == 3 { print $3 }' >>"$tmp/upper"
        done
    done
    touch "$tmp/upper"
    sort -u -o "$tmp/upper" "$tmp/upper" 2>/dev/null
    for d in $LOWER; do
        for c in "$d"/*.c; do
            o="$BUILD/${c%.c}.o"
            [ -f "$o" ] || continue
            nm -u "$o" 2>/dev/null | awk '{ print $NF }' | sort -u >"$tmp/undef"
            for s in $(comm -12 "$tmp/undef" "$tmp/upper"); do
                echo "layering: $o calls $s, defined above it (src/transforms, src/algos or src/eval)"
                bad=1
            done
        done
    done
fi
[ $bad -eq 0 ] && echo "layering: ok (core, formats, kernels, io, model do not call transforms, algos, eval)"
exit $bad
