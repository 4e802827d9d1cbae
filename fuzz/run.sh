#!/usr/bin/env bash
# Runs cargo-fuzz targets for a bounded time each, starting from the seed corpus in the
# repository (fuzz/corpus/<target>); what libFuzzer finds on the way goes to a scratch
# directory, never into the repository. A crash stops the run with libFuzzer's report and the
# input in fuzz/artifacts/<target>/ (docs/fuzzing.md says how to reproduce it).
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 15 s, every target)
# The fuzz crate builds in $CARGO_TARGET_DIR/fuzz (default ~/.cache/rtcbox-target/fuzz), so it
# never thrashes the main build's artefacts (other flags, other toolchain).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-15}"
[ $# -gt 0 ] && shift
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/rtcbox-target}/fuzz"
# No sanitizer: rtcbox forbids unsafe code, and without ASan the build and the runs are about
# twice as fast; `-s address` is for long runs (docs/fuzzing.md).
flags=(--sanitizer none --target-dir "$target_dir")
# The commit only names the binary's version: fixed, so a new commit does not rebuild rtcbox.
export RTCBOX_GIT_COMMIT=fuzz

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build "${flags[@]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if cargo +nightly fuzz run "${flags[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -o 'number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        echo "$target: $runs runs in $seconds s, no failure"
    else
        tail -n 80 "$log"
        echo "fuzz target $target failed: the input is in fuzz/artifacts/$target (docs/fuzzing.md)"
        exit 1
    fi
done
