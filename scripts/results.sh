#!/bin/sh
# results.sh — regenerates the measured tables of docs/RESULTS.md (issue #6) by running kvant on proxy-27m.
#
#   sh scripts/results.sh [SECTION...] > results.md
#   SECTION: formats (WikiText-2 PPL + KLD of every format, with and without rht), higgs (the HIGGS / RTN
#            reference comparison on all of heldout.txt); default: both. The activation and calibrated-transform
#            tables are study specs: sh scripts/study_section.sh bench/studies/acts.json (and calib.json).
# Environment: KVANT (default build/kvant), SHARED (default ../shared), THREADS (default: all cores), JOBS
#   (rows quantized and evaluated at once, default 1; e.g. JOBS=4 THREADS=4 on 16 cores),
#   CHUNKS (WikiText-2 windows for the formats table, default 40), HELDOUT_CHUNKS (default 0 = all 519),
#   HIGGS_SEEDS (rotation seeds of the rht rows of the higgs table, default "0"; the rotation's randomness moves
#   3-bit and 2-bit PPL by several percent, so RESULTS.md uses "0 1 2 3"),
#   TMP (scratch directory, default a fresh mktemp -d; holds the quantized models and the base log-probs).
# Every row is one `kvant quantize ... --eval` run; the base model's log-probs are computed once per text
# (--eval-base-logits) and reused. Timing of each section goes to stderr.
set -eu

KVANT=${KVANT:-build/kvant}
SHARED=${SHARED:-../shared}
THREADS=${THREADS:-0}
JOBS=${JOBS:-1}
HIGGS_SEEDS=${HIGGS_SEEDS:-0}
CHUNKS=${CHUNKS:-40}
HELDOUT_CHUNKS=${HELDOUT_CHUNKS:-0}
MODEL=$SHARED/models/proxy-27m
WIKI=$SHARED/data/wikitext2-test.txt
HELDOUT=$SHARED/data/heldout.txt
TMP=${TMP:-$(mktemp -d)}
THR=""
[ "$THREADS" != 0 ] && THR="-t $THREADS"
SECTIONS=${*:-formats higgs}

now() { date +%s; }

# row LABEL TEXT CHUNKS BASE_LOGITS|- QUANTIZE-ARGS... : prints the quantized row of the --eval table.
# With JOBS > 1 rows run concurrently (each with THREADS threads) and are printed in order by flush_rows.
NROW=0
row() {
    label=$1 text=$2 chunks=$3 base=$4
    shift 4
    NROW=$((NROW + 1))
    if [ "$base" = - ]; then evalopt="--eval-ppl-only"; else evalopt="--eval-base-logits $base"; fi
    # shellcheck disable=SC2086
    ( "$KVANT" quantize "$MODEL" -o "$TMP/q$NROW.gguf" "$@" --eval "$text" --chunks "$chunks" $evalopt \
        --label "$label" --quiet $THR | grep "^| $label |" > "$TMP/row$NROW.md" || echo "| $label | failed |" > "$TMP/row$NROW.md"
      rm -f "$TMP/q$NROW.gguf" ) &
    if [ $((NROW % JOBS)) = 0 ]; then wait; fi
}
flush_rows() {
    wait
    i=1
    while [ $i -le $NROW ]; do cat "$TMP/row$i.md"; rm -f "$TMP/row$i.md"; i=$((i + 1)); done
    NROW=0
}

# base_row TEXT CHUNKS BASE_LOGITS: the base row (computed along with the first quantized row)
base_row() {
    "$KVANT" quantize "$MODEL" -o "$TMP/q.gguf" --format q8_0 --eval "$1" --chunks "$2" --eval-base-logits "$3" \
        --label q8_0 --quiet $THR | grep "^| base |"
}

section_formats() {
    t0=$(now)
    base="$TMP/wiki.lp"
    echo "### Formats: WikiText-2 test, hf style, ctx 512, first $CHUNKS windows; KLD vs the bf16 model"
    echo
    echo "Weights only (activations fp32). Mixes (q5_k_m, q4_k_m, q3_k_m, q2_k and the llama.cpp file types q8_0,"
    echo "q6_k, q4_0) follow llama.cpp's per-tensor rules (output.weight q6_k, ...); the other formats apply to every"
    echo "linear including token_embd and output. \`+rht\`: \`--transform rht\` (random Hadamard, blocks of 512, on the"
    echo "input of every linear, online at run time)."
    echo
    echo "| model | size (MiB) | bits/weight | PPL | ΔPPL | KLD mean | top-1 agree |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    base_row "$WIKI" "$CHUNKS" "$base"
    for f in q8_0 q6_k q5_k_m q4_k_m q4_0 q3_k_m q2_k int4_g128_sym int4_g128_asym nf4 mxfp4 mxfp4_ocp mxfp4_ocp+prescale \
        nvfp4 nvfp4_ts mxfp6_e2m3 mxfp8_e4m3 higgs_p2_b4 higgs_p2_b3; do
        fmt=${f%+prescale}
        extra=""
        [ "$fmt" != "$f" ] && extra="prescale"
        if [ -n "$extra" ]; then
            row "$f" "$WIKI" "$CHUNKS" "$base" --format "$fmt" --transform "$extra"
            row "$f +rht" "$WIKI" "$CHUNKS" "$base" --format "$fmt" --transform "rht,$extra"
        else
            row "$f" "$WIKI" "$CHUNKS" "$base" --format "$fmt"
            row "$f +rht" "$WIKI" "$CHUNKS" "$base" --format "$fmt" --transform rht
        fi
    done
    flush_rows
    echo
    echo "formats: $(($(now) - t0)) s" >&2
}

# The reference: ../shared/models/proxy-27m/ref/higgs_ref.json (PyTorch; decoder linears only, RHT per
# 512-block with random signs, heldout PPL hf ctx 512).
section_higgs() {
    t0=$(now)
    echo "### HIGGS / RTN against the independent PyTorch reference (heldout.txt, hf style, ctx 512, all windows)"
    echo
    echo "Scope as the reference: decoder linears only (\`--override 'token_embd|^output\\.=bf16'\`), RHT per 512-block"
    echo "with random signs (\`--transform rht:512 --seed S\`, one row per seed S). The reference scales each 512-block"
    echo "with one fp16 RMS; kvant's HIGGS groups are 256 wide (b + 1/16 bits/weight)."
    echo
    echo "| model | size (MiB) | bits/weight | PPL | reference PPL | deviation |"
    echo "|---|---:|---:|---:|---:|---:|"
    ov='token_embd|^output\.=bf16'
    specs=""
    for spec in "higgs_p2_b2 rht 70.93941707869506" "higgs_p2_b3 rht 58.44924128955614" \
        "higgs_p2_b4 rht 56.173894300751456" "higgs_p1_b3 rht 60.9280236444976" "higgs_p1_b4 rht 56.542038877212484" \
        "int3_g64_asym none 60.10581381561176" "int3_g64_asym rht 59.48470691455462"; do
        set -- $spec
        fmt=$1 tr=$2 ref=$3
        seeds=0
        [ "$tr" = rht ] && seeds=$HIGGS_SEEDS
        for seed in $seeds; do
            label=$fmt
            targs=""
            if [ "$tr" = rht ]; then label="$fmt +rht s$seed"; targs="--transform rht:512 --seed $seed"; fi
            # shellcheck disable=SC2086
            row "$label" "$HELDOUT" "$HELDOUT_CHUNKS" - --format "$fmt" --pure --override "$ov" $targs
            specs="$specs$label|$ref
"
        done
    done
    n=0
    wait
    echo "$specs" | while IFS='|' read -r label ref; do
        [ -n "$label" ] || continue
        n=$((n + 1))
        line=$(cat "$TMP/row$n.md")
        rm -f "$TMP/row$n.md"
        ppl=$(echo "$line" | awk -F'|' '{gsub(/ /, "", $5); print $5}')
        mib=$(echo "$line" | awk -F'|' '{gsub(/ /, "", $3); print $3}')
        bpw=$(echo "$line" | awk -F'|' '{gsub(/ /, "", $4); print $4}')
        dev=$(awk -v a="$ppl" -v b="$ref" 'BEGIN { printf "%+.2f%%", 100 * (a - b) / b }')
        printf '| %s | %s | %s | %s | %.2f | %s |\n' "$label" "$mib" "$bpw" "$ppl" "$ref" "$dev"
    done
    NROW=0
    echo
    echo "higgs: $(($(now) - t0)) s" >&2
}

for s in $SECTIONS; do
    case $s in
    formats) section_formats ;;
    act) echo "results.sh: 'act' is a study now: sh scripts/study_section.sh bench/studies/acts.json" >&2; exit 2 ;;
    calib) echo "results.sh: 'calib' is a study now: sh scripts/study_section.sh bench/studies/calib.json" >&2; exit 2 ;;
    higgs) section_higgs ;;
    *) echo "results.sh: unknown section '$s' (formats higgs)" >&2; exit 2 ;;
    esac
done
