#!/bin/sh
# scripts/check.sh — `make check`, the README's test command and CI's (.ci/run): the whole suite, the whole suite
# again under AddressSanitizer + UndefinedBehaviorSanitizer (`make asan`), and, when clang is installed, a smoke
# run of every libFuzzer target over its seed corpus and regression inputs (`make test-fuzz`, FUZZ_SECONDS each,
# default 5). Each part's log is in build/check-PART.log; the last line sums the parts: "N passed, N failed"
# (fuzz targets count one each). Exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/.."
make="${MAKE:-make} --no-print-directory"
jobs=${CHECK_JOBS:--j2}
secs=${FUZZ_SECONDS:-5}
mkdir -p build
passed=0 failed=0 skipped=0 parts=""

# The closing line of a suite log ("N passed, N failed[, N skipped]") added to the totals; a part that did
# not get as far as its closing line (build error, crashed runner) counts as one failure.
add_suite() {
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "build/check-$1.log" | tail -n 1)
    if [ -z "$line" ]; then
        failed=$((failed + 1))
        parts="$parts $1: no result (see build/check-$1.log);"
        return
    fi
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + ${s:-0}))
    [ "$2" -ne 0 ] && [ "$f" -eq 0 ] && failed=$((failed + 1))
    parts="$parts $1: $line;"
}

echo "== check: the suite"
$make $jobs test > build/check-test.log 2>&1
rc=$?
grep -E '^ *FAIL|^[0-9]+ passed, [0-9]+ failed' build/check-test.log
add_suite test $rc

echo "== check: the suite under ASan + UBSan"
$make $jobs asan > build/check-asan.log 2>&1
rc=$?
grep -E '^ *FAIL|ERROR: AddressSanitizer|runtime error|^[0-9]+ passed, [0-9]+ failed' build/check-asan.log | head -n 20
add_suite asan $rc

if command -v "${FUZZ_CC:-clang}" > /dev/null 2>&1; then
    echo "== check: fuzz targets, ${secs} s each"
    # a fixed libFuzzer seed: the smoke replays the same mutations on every run, so CI finds regressions, not
    # new random inputs (those come from the long runs of docs/fuzzing.md); FUZZ_ARGS overrides it
    FUZZ_ARGS="${FUZZ_ARGS:--seed=1}" $make $jobs test-fuzz FUZZ_SECONDS="$secs" > build/check-fuzz.log 2>&1
    rc=$?
    grep -E '^fuzz ' build/check-fuzz.log
    fp=$(grep -cE '^fuzz .*: ok' build/check-fuzz.log)
    ff=$(grep -cE '^fuzz .*: FAILED' build/check-fuzz.log)
    [ "$rc" -ne 0 ] && [ "$ff" -eq 0 ] && ff=1
    passed=$((passed + fp)) failed=$((failed + ff))
    parts="$parts fuzz: $fp passed, $ff failed;"
else
    echo "== check: no clang, fuzz targets skipped (scripts/install-deps.sh installs it as root)"
    skipped=$((skipped + 1))
    parts="$parts fuzz: skipped (no clang);"
fi

echo "check:$parts"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
