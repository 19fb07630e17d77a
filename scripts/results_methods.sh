#!/bin/sh
# results_methods.sh — the error-compensation table of docs/RESULTS.md ("Methods: RTN, GPTQ, WaterSIC"):
# quantize proxy-27m with each method/setting (decoder linears only; embedding and head stay bf16),
# calibration from calib.txt only, then PPL (hf style, ctx 512) and KLD vs the bf16 model on each text.
#
#   sh scripts/results_methods.sh                 # every row, heldout.txt and WikiText-2, all windows
#   ROWS="gptq:int3_g128_asym rtn:int3_g128_asym" CHUNKS=40 TEXTS=../shared/data/heldout.txt sh scripts/results_methods.sh
#
# Env: KVANT (build/kvant), MODEL, TEXTS (heldout.txt and wikitext2-test.txt; TEXT = one text), CHUNKS (0 = all
#      windows), CALIB (../shared/data/calib.txt), CALIB_TOKENS (65536 = 128 x 512), THREADS (2),
#      OUT (/tmp/kvant-methods), ROWS: METHOD:FORMAT items; watersic rows are watersic:BITS; mr-gptq rows rotate
#      with rht of the format's group (32 for mxfp4, 16 for nvfp4, else 128).
# Prints one markdown row per item as it finishes (and appends it to $OUT/table.md). Base logits per text are
# kept in $OUT (heldout ~4.4 GB, WikiText-2 ~6.8 GB).
set -eu
KVANT=${KVANT:-build/kvant}
MODEL=${MODEL:-../shared/models/proxy-27m}
TEXTS=${TEXTS:-${TEXT:-"../shared/data/heldout.txt ../shared/data/wikitext2-test.txt"}}
CHUNKS=${CHUNKS:-0}
CALIB=${CALIB:-../shared/data/calib.txt}
CALIB_TOKENS=${CALIB_TOKENS:-65536}
THREADS=${THREADS:-2}
OUT=${OUT:-/tmp/kvant-methods}
ROWS=${ROWS:-"rtn:int3_g128_asym gptq:int3_g128_asym rtn:int2_g64_asym gptq:int2_g64_asym watersic:3 watersic:2 \
watersic:2.5 watersic:4 rtn:int4_g128_asym gptq:int4_g128_asym rtn:int3_g128_sym gptq:int3_g128_sym \
rtn:q4_k gptq:q4_k rtn:q3_k gptq:q3_k rtn:q2_k gptq:q2_k rtn:q4_0 gptq:q4_0 rtn:nf4 gptq:nf4 \
rtn:mxfp4 gptq:mxfp4 mr-gptq:mxfp4 rtn:nvfp4 gptq:nvfp4 mr-gptq:nvfp4"}
mkdir -p "$OUT"
CH=""
[ "$CHUNKS" -gt 0 ] && CH="--chunks $CHUNKS"
KEEP='^(token_embd|output)\.weight$=bf16'

json_num() { # json_num KEY FILE: the first number after "KEY":
    sed -n "s/.*\"$1\": *\([-0-9.eE+]*\).*/\1/p" "$2" | head -n 1
}

short() { basename "$1" .txt | sed 's/-test$//'; }
hdr="| method | format | decoder bits/weight"
sep="|---|---|---:"
basecells=""
for t in $TEXTS; do
    n=$(short "$t")
    base="$OUT/base-$n-$CHUNKS.logits"
    if [ ! -f "$base" ]; then
        "$KVANT" eval "$MODEL" --text "$t" $CH -t "$THREADS" --quiet --save-logits "$base" --json > "$OUT/base-$n.json"
    fi
    hdr="$hdr | $n PPL | $n KLD | $n top-1"
    sep="$sep|---:|---:|---:"
    basecells="$basecells$(awk -v p="$(json_num ppl "$OUT/base-$n.json")" 'BEGIN { printf " | %.2f | 0 | 100%%", p }')"
done
echo "$hdr | quantize s | note |"
echo "$sep|---:|---|"
echo "| bf16 | — | 16$basecells | — | base |"
for row in $ROWS; do
    method=${row%%:*}
    arg=${row#*:}
    name=$(echo "$row" | tr ':.' '__')
    gguf="$OUT/$name.gguf"
    log="$OUT/$name.log"
    tr=""
    case $method in
    watersic) fmt=f16; m="watersic:bits=$arg" ;;
    mr-gptq)
        fmt=$arg; m="mr-gptq"
        case $arg in mxfp4*) tr="--transform rht:32" ;; nvfp4*) tr="--transform rht:16" ;; *) tr="--transform rht:128" ;; esac ;;
    *) fmt=$arg; m="$method" ;;
    esac
    t0=$(date +%s)
    "$KVANT" quantize "$MODEL" -o "$gguf" --format "$fmt" --pure --override "$KEEP" --method "$m" $tr \
        --calib "$CALIB" --calib-tokens "$CALIB_TOKENS" --no-imatrix -t "$THREADS" --quiet --json > "$log.json" 2> "$log"
    t1=$(date +%s)
    cells=""
    for t in $TEXTS; do
        n=$(short "$t")
        "$KVANT" eval "$gguf" --text "$t" $CH -t "$THREADS" --quiet --kld "$OUT/base-$n-$CHUNKS.logits" --json \
            > "$OUT/$name.$n.eval.json"
        cells="$cells$(awk -v p="$(json_num ppl "$OUT/$name.$n.eval.json")" -v k="$(json_num mean "$OUT/$name.$n.eval.json")" \
            -v t="$(json_num top1_agree "$OUT/$name.$n.eval.json")" 'BEGIN { printf " | %.2f | %.4f | %.1f%%", p, k, t }')"
    done
    if [ "$method" = watersic ]; then
        # decoder linears: bits/weight of their entropy-coded containers, stored as such in the GGUF (type ecw)
        bpw=$(sed -n 's/.*entropy-coded [0-9]* bytes = \([0-9.]*\) bits\/weight.*/\1/p' "$log" | tail -n 1)
        note="ECW size; gap to Gaussian bound $(sed -n 's/.*mean gap to the Gaussian bound \([0-9.]*\) bits.*/\1/p' "$log") bit"
    else
        # decoder linears: the format's bits/weight (the file adds the bf16 embedding and head)
        bpw=$("$KVANT" formats --json | sed -n "/\"name\": \"$fmt\"/{n;s/.*: *\([0-9.]*\).*/\1/p;}" | head -n 1)
        note="file $(json_num bits_per_weight "$log.json") bits/weight with the bf16 embedding and head"
    fi
    line="| $method | $fmt | ${bpw:-?}$cells | $((t1 - t0)) | $note |"
    echo "$line"
    echo "$line" >> "$OUT/table.md"
done
