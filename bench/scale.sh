#!/bin/sh
# scale.sh — peak memory (max RSS) and wall time of `kvant quantize` on a synthetic Llama-shaped model of a
# given shape, side by side with llama.cpp's llama-quantize on the same weights (issue 12; docs/RESULTS.md
# "Scale: peak memory and wall time").
#   sh bench/scale.sh SHAPE [WORK_DIR] [path/to/kvant]
# SHAPE: 1b (hidden 2048, 16 layers, ffn 8192, 16/8 heads, 2.1 GB bf16) or 8b (hidden 4096, 32 layers,
# ffn 14336, 32/8 heads: 7.0B parameters, 14 GB bf16); vocab 8192 so the proxy-27m tokenizer fits.
# WORK_DIR (default /tmp/kvant-scale) receives the generated model (build/gen_model, once), the bf16 GGUF
# (`kvant convert`) and the outputs; it must not be inside the repository (tens of GB for 8b).
# Environment: RUNS (space-separated list, default "rtn gptq watersic llama"), THREADS (2), CALIB_TOKENS
# (512: calibrated runs), CALIB (../shared/data/calib.txt), LLAMA_CPP_DIR (a llama.cpp build with
# llama-quantize in bin/, build/bin/ or the directory itself; without it the llama.cpp rows are skipped).
# Each row: tool, job, input, peak RSS (GNU time's "Maximum resident set size"), wall seconds, CPU seconds
# (user + system: on a shared machine the fairer speed comparison), output bytes.
set -e
SHAPE=${1:?usage: sh bench/scale.sh 1b|8b [WORK_DIR] [path/to/kvant]}
WORK=${2:-/tmp/kvant-scale}
KVANT=${3:-build/kvant}
GEN=$(dirname "$KVANT")/gen_model
SHARED=${KVANT_SHARED:-../shared}
CALIB=${CALIB:-$SHARED/data/calib.txt}
THREADS=${THREADS:-2}
CALIB_TOKENS=${CALIB_TOKENS:-512}
RUNS=${RUNS:-"rtn gptq watersic llama"}
case "$SHAPE" in
1b) ARGS="--hidden 2048 --layers 16 --ffn 8192 --heads 16 --kv-heads 8 --vocab 8192" ;;
8b) ARGS="--hidden 4096 --layers 32 --ffn 14336 --heads 32 --kv-heads 8 --vocab 8192" ;;
*) echo "scale.sh: unknown shape '$SHAPE' (1b or 8b)" >&2; exit 2 ;;
esac
[ -x /usr/bin/time ] || { echo "scale.sh: needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }
[ -x "$KVANT" ] && [ -x "$GEN" ] || { echo "scale.sh: build first (make): no $KVANT or $GEN" >&2; exit 2; }
mkdir -p "$WORK"
MODEL="$WORK/llama-$SHAPE"
if [ ! -f "$MODEL/model.safetensors.index.json" ]; then
    echo "== generating $MODEL"
    "$GEN" "$MODEL" $ARGS --tokenizer-from "$SHARED/models/proxy-27m"
fi

# measure LABEL JOB INPUT OUTPUT CMD... : one table row from GNU time's report
measure() {
    label=$1 job=$2 input=$3 out=$4
    shift 4
    log="$WORK/$label-$job.log"
    if /usr/bin/time -v -o "$log.time" "$@" >"$log" 2>&1; then
        rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$log.time")
        cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.1f", s}' "$log.time")
        wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.1f", s}' "$log.time")
        size=$(stat -c %s "$out" 2>/dev/null || echo 0)
        printf '| %s | %s | %s | %s MiB | %s s | %s s | %s |\n' "$label" "$job" "$input" "$rss" "$wall" "$cpu" "$size"
    else
        printf '| %s | %s | %s | failed (see %s) | | | |\n' "$label" "$job" "$input" "$log"
    fi
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo), $(uname -sr); threads $THREADS"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| tool | job | input | peak RSS | wall | CPU (user+sys) | output bytes |"
echo "|---|---|---|---|---|---|---|"
for r in $RUNS; do
    case "$r" in
    rtn)
        measure kvant rtn-q4_k_m "hf bf16" "$WORK/kvant-$SHAPE-q4_k_m.gguf" \
            "$KVANT" quantize "$MODEL" -o "$WORK/kvant-$SHAPE-q4_k_m.gguf" --format q4_k_m -t "$THREADS"
        ;;
    gptq)
        measure kvant gptq-int4_g128_asym "hf bf16, $CALIB_TOKENS calib tokens" "$WORK/kvant-$SHAPE-gptq.gguf" \
            "$KVANT" quantize "$MODEL" -o "$WORK/kvant-$SHAPE-gptq.gguf" --format int4_g128_asym --method gptq \
            --calib "$CALIB" --calib-tokens "$CALIB_TOKENS" --no-imatrix -t "$THREADS"
        ;;
    watersic)
        measure kvant watersic-3bit "hf bf16, $CALIB_TOKENS calib tokens" "$WORK/kvant-$SHAPE-watersic.gguf" \
            "$KVANT" quantize "$MODEL" -o "$WORK/kvant-$SHAPE-watersic.gguf" --format f16 --method watersic:bits=3 \
            --calib "$CALIB" --calib-tokens "$CALIB_TOKENS" --no-imatrix -t "$THREADS"
        ;;
    llama)
        LQ=""
        for c in "$LLAMA_CPP_DIR/build/bin/llama-quantize" "$LLAMA_CPP_DIR/bin/llama-quantize" "$LLAMA_CPP_DIR/llama-quantize"; do
            [ -n "$LLAMA_CPP_DIR" ] && [ -x "$c" ] && { LQ=$c; break; }
        done
        if [ -z "$LQ" ]; then
            echo "scale.sh: LLAMA_CPP_DIR not set or without llama-quantize; skipping the llama.cpp rows" >&2
            continue
        fi
        BF16="$WORK/llama-$SHAPE-bf16.gguf"
        [ -f "$BF16" ] || "$KVANT" convert "$MODEL" -o "$BF16" --outtype bf16 >/dev/null
        measure llama-quantize Q4_K_M "gguf bf16" "$WORK/llama-$SHAPE-q4_k_m.gguf" \
            "$LQ" "$BF16" "$WORK/llama-$SHAPE-q4_k_m.gguf" Q4_K_M "$THREADS"
        measure kvant rtn-q4_k_m-from-gguf "gguf bf16" "$WORK/kvant-$SHAPE-q4_k_m-from-gguf.gguf" \
            "$KVANT" quantize "$BF16" -o "$WORK/kvant-$SHAPE-q4_k_m-from-gguf.gguf" --format q4_k_m -t "$THREADS"
        if cmp -s "$WORK/llama-$SHAPE-q4_k_m.gguf" "$WORK/kvant-$SHAPE-q4_k_m-from-gguf.gguf"; then
            echo "(kvant's and llama-quantize's Q4_K_M files are byte-identical)"
        else
            echo "(kvant's and llama-quantize's Q4_K_M files differ: metadata keys at least)"
        fi
        ;;
    *) echo "scale.sh: unknown run '$r' (rtn gptq watersic llama)" >&2; exit 2 ;;
    esac
done
