#!/bin/sh
# study_section.sh SPEC [SECTION] — regenerates one section of docs/RESULTS.md from a study spec kept in
# bench/studies (docs/study.md): runs `kvant study SPEC` (resuming: finished cells are not run again), writes
# its report into docs/results/NAME/ and splices the report (headings moved two levels down, image links
# relative to docs/) into docs/RESULTS.md between <!-- study:NAME:begin --> and <!-- study:NAME:end -->.
# The report records the commit and the command. Environment: KVANT (default build/kvant), THREADS (default:
# the spec's), JOBS, LLAMA_CPP_DIR (enables the llama.cpp reference cells).
set -eu
spec=${1:?usage: sh scripts/study_section.sh bench/studies/NAME.json [SECTION]}
name=${2:-$(basename "$spec" .json)}
KVANT=${KVANT:-build/kvant}
dir=docs/results/$name
args=""
[ -n "${THREADS:-}" ] && args="$args -t $THREADS"
[ -n "${JOBS:-}" ] && args="$args --jobs $JOBS"
# shellcheck disable=SC2086 # args: options word-split on purpose
"$KVANT" study "$spec" $args --report "$dir" > /dev/null
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT INT TERM
sed -e 's/^## /#### /' -e 's/^# /### /' -e "s#](\([a-z_]*\.\(png\|svg\)\))#](results/$name/\1)#g" "$dir/report.md" > "$tmp"
python3 scripts/splice_results.py docs/RESULTS.md "study:$name" "$tmp"
echo "docs/RESULTS.md: section study:$name from $spec ($dir/report.md)"
