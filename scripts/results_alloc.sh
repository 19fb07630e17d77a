#!/bin/sh
# results_alloc.sh — regenerates the "Bit allocation" section of docs/RESULTS.md: layer sensitivities of
# proxy-27m (HIGGS linearity theorem), the linearity check, and uniform vs linearity-DP vs waterfill allocation at
# 2.5 .. 4.25 bits/weight with ggml types and with HIGGS grids (+ rht) as the menu, next to llama.cpp's q4_k_m mix.
#   sh scripts/results_alloc.sh            (KVANT=build/kvant, KVANT_SHARED=../shared, OUT=build/results-alloc)
# Scope: the 42 decoder linears are allocated; the embedding and the head stay bf16 in every row (also in the
# q4_k_m row, via --override), so bits/weight is over the decoder linears. Eval: WikiText-2, HF style, ctx 512,
# the first 40 windows (20,440 scored tokens); KLD against the bf16 model. Calibration: calib.txt only.
set -e
KVANT=${KVANT:-build/kvant}
SHARED=${KVANT_SHARED:-../shared}
OUT=${OUT:-build/results-alloc}
MODEL=$SHARED/models/proxy-27m
WIKI=$SHARED/data/wikitext2-test.txt
CALIB=$SHARED/data/calib.txt
BUDGETS=2.5,3,3.25,3.5,4,4.25
GGML=q2_k,q3_k,q4_k,q5_k,q6_k,q8_0
HIGGS=higgs_p1_b2,higgs_p2_b2,higgs_p1_b3,higgs_p2_b3,higgs_p1_b4,higgs_p2_b4,higgs_p1_b5,higgs_p1_b6,higgs_p1_b8
mkdir -p "$OUT"
[ -x "$KVANT" ] || { echo "results_alloc.sh: $KVANT missing (run make)" >&2; exit 2; }

echo "== sensitivities (calib.txt, 4096 tokens)"
"$KVANT" sensitivity "$MODEL" --text "$CALIB" --tokens 4096 -o "$OUT/alphas.json" --json --quiet > "$OUT/alphas_report.json"
echo "== linearity check (20 random ggml maps, 20 random HIGGS maps)"
"$KVANT" sensitivity "$MODEL" --text "$CALIB" --tokens 4096 --alphas "$OUT/alphas.json" --check 20 \
    --formats q2_k,q3_k,q4_k,q5_k,q6_k --json --quiet > "$OUT/check_ggml.json"
"$KVANT" sensitivity "$MODEL" --text "$CALIB" --tokens 4096 --alphas "$OUT/alphas.json" --check 20 \
    --formats higgs_p2_b2,higgs_p2_b3,higgs_p2_b4,higgs_p1_b5 --rht 512 --json --quiet > "$OUT/check_higgs.json"
echo "== allocation sweeps"
"$KVANT" sensitivity "$MODEL" --text "$WIKI" --tokens 20480 --alphas "$OUT/alphas.json" --sweep $BUDGETS \
    --formats $GGML --json --quiet > "$OUT/sweep_ggml.json"
"$KVANT" sensitivity "$MODEL" --text "$WIKI" --tokens 20480 --alphas "$OUT/alphas.json" --sweep $BUDGETS \
    --formats $HIGGS --rht 512 --json --quiet > "$OUT/sweep_higgs.json"
echo "== llama.cpp's q4_k_m mix (embedding and head kept bf16) and the 4.25-bit DP map written as a real GGUF"
"$KVANT" quantize "$MODEL" -o "$OUT/q4_k_m.gguf" --format q4_k_m --override 'token_embd\.weight=bf16' \
    --override '^output\.weight$=bf16' --eval "$WIKI" --chunks 40 --json --quiet > "$OUT/q4_k_m.json"
"$KVANT" inspect "$OUT/q4_k_m.gguf" --json > "$OUT/q4_k_m.inspect.json"
"$KVANT" quantize "$MODEL" -o "$OUT/dp425.gguf" --bits 4.25 --allocate linearity --alphas "$OUT/alphas.json" \
    --formats $GGML --format bf16 --pure --eval "$WIKI" --chunks 40 --json --quiet > "$OUT/dp425.json"
"$KVANT" inspect "$OUT/dp425.gguf" --json > "$OUT/dp425.inspect.json"
echo "== with calibration (calib.txt): q4_k_m with an imatrix, and the 4.25-bit DP map quantized by GPTQ"
"$KVANT" quantize "$MODEL" -o "$OUT/q4_k_m_im.gguf" --format q4_k_m --override 'token_embd\.weight=bf16' \
    --override '^output\.weight$=bf16' --calib "$CALIB" --eval "$WIKI" --chunks 40 --json --quiet > "$OUT/q4_k_m_im.json"
"$KVANT" inspect "$OUT/q4_k_m_im.gguf" --json > "$OUT/q4_k_m_im.inspect.json"
"$KVANT" quantize "$MODEL" -o "$OUT/dp425g.gguf" --bits 4.25 --allocate linearity --alphas "$OUT/alphas.json" \
    --formats $GGML --format bf16 --pure --method gptq --calib "$CALIB" --eval "$WIKI" --chunks 40 --json --quiet \
    > "$OUT/dp425g.json"
"$KVANT" inspect "$OUT/dp425g.gguf" --json > "$OUT/dp425g.inspect.json"
echo "== the linearity DP at q4_k_m's own size (its decoder linears' bits/weight)"
QBITS=$(python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['tensors']; L=[x for x in t if x['name'].startswith('blk.') and len(x['shape'])==2]; print('%.4f' % (sum(8*x['bytes'] for x in L)/sum(x['shape'][0]*x['shape'][1] for x in L)))" "$OUT/q4_k_m.inspect.json")
"$KVANT" sensitivity "$MODEL" --text "$WIKI" --tokens 20480 --alphas "$OUT/alphas.json" --sweep "4.5,$QBITS" \
    --modes linearity --formats $GGML --json --quiet > "$OUT/sweep_q4km.json"
python3 scripts/render_alloc.py "$OUT" > "$OUT/alloc.md"
python3 scripts/splice_results.py docs/RESULTS.md alloc "$OUT/alloc.md"
echo "docs/RESULTS.md: bit allocation section regenerated"
