#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (shared/fuzz/fuzz_targets) with libFuzzer, one
# target after another, and fails if any target crashes, panics, hangs or runs out of memory.
#
#   scripts/fuzz.sh              every target for 30 s
#   scripts/fuzz.sh 300          every target for 300 s
#   scripts/fuzz.sh 60 result    only the named targets
#
# Seeds come from shared/fuzz/corpus/<target>/ and are only read. What the fuzzer learns goes
# to target/fuzz/corpus/<target>/ (kept between runs, so a later run starts where the last
# one stopped), failing inputs to target/fuzz/artifacts/<target>/. To replay one:
#   RUSTC_BOOTSTRAP=1 target/tools/bin/cargo-fuzz fuzz run --fuzz-dir shared/fuzz \
#       --target-dir target/fuzz -s none -a <target> <file>
# A fixed failure gets a regression unit test in the crate of the parser at fault.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
if [ $# -gt 0 ]; then
    shift
fi
case $seconds in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

tools=$PWD/target/tools
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    cargo install cargo-fuzz@0.13.2 --locked --root "$tools"
fi
export PATH=$tools/bin:$PATH
# cargo-fuzz passes nightly-only flags (-Z...); the stable toolchain takes them this way.
export RUSTC_BOOTSTRAP=1

fuzz_dir=shared/fuzz
out=$PWD/target/fuzz
# No sanitizer: the code under test forbids `unsafe`, and AddressSanitizer would halve the
# executions per second on a small machine. Debug assertions on: overflow checks are what
# finds arithmetic on hostile numbers.
flags=(--fuzz-dir "$fuzz_dir" --target-dir "$out/build" --sanitizer none --debug-assertions)

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
fi

cargo fuzz build "${flags[@]}"

failed=()
mkdir -p "$out/logs"
for t in "${targets[@]}"; do
    mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
    log=$out/logs/$t.log
    echo "== $t: ${seconds}s (log: $log)"
    # New entries go to the first corpus directory (the scratch one); the repository's seeds
    # are only read. One process, one job: the machine is shared.
    if cargo fuzz run "${flags[@]}" --jobs 1 "$t" "$out/corpus/$t" "$fuzz_dir/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -dict="$fuzz_dir/dict/cni.dict" -artifact_prefix="$out/artifacts/$t/" \
        >"$log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" || true
    else
        failed+=("$t")
        # The panic or the sanitizer's report, without libFuzzer's progress lines.
        grep -vE '^(#[0-9]|"|INFO:|MS:|base unit:|0x|Base64:|\s+at /rustc/)' "$log" | tail -n 60 >&2
    fi
done
# cargo-fuzz makes an (empty) artifacts directory beside the targets; ours are under target/.
find "$fuzz_dir/artifacts" -depth -type d -empty -delete 2>/dev/null || true

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed for: ${failed[*]} (inputs in $out/artifacts/)" >&2
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no failure"
