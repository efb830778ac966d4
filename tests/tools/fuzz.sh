#!/usr/bin/env bash
# Runs every cargo-fuzz target of tests/fuzz for a bounded time, one after the other (the
# machine's cores are shared), and fails if any of them finds a crash, a panic, a leak or a
# hang. Each run starts from the committed corpus (tests/fuzz/corpus/<target>/); what it finds
# on the way goes to a scratch directory, so the work tree is not changed. A crash input is
# kept in tests/fuzz/artifacts/<target>/ (git-ignored) for `cargo fuzz run <target> FILE`.
#
#     FUZZ_SECONDS=60 tests/tools/fuzz.sh            # every target, 60 s each (the default)
#     FUZZ_SECONDS=600 tests/tools/fuzz.sh cinder    # one target, longer
#
# Needs the nightly toolchain and cargo-fuzz from tests/tools/install-prereqs.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
# shellcheck source=tests/tools/env.sh
source "$root/tests/tools/env.sh"

seconds=${FUZZ_SECONDS:-60}
# FUZZ_BUILD=dev builds the targets without optimisation (cargo fuzz --dev): a few minutes
# instead of a quarter of an hour on 2 cores from cold, at a lower rate of executions. CI's
# short runs use it; the long runs keep the optimised build (the default, release).
build=${FUZZ_BUILD:-release}
case $build in
    release) profile=() ;;
    dev) profile=(--dev) ;;
    *) echo "fuzz.sh: FUZZ_BUILD must be release or dev" >&2; exit 2 ;;
esac
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: FUZZ_SECONDS must be a positive integer" >&2; exit 2; }
[[ -x $CARGO_FUZZ ]] || { echo "fuzz.sh: $CARGO_FUZZ is missing; run tests/tools/install-prereqs.sh" >&2; exit 1; }

PATH=$(dirname "$CARGO_FUZZ"):$PATH
fuzz=(cargo +nightly fuzz)
export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir tests/fuzz)
fi
((${#targets[@]} > 0)) || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# Debug assertions on: an arithmetic overflow on cloud input is a finding too.
echo "fuzz: building ${#targets[*]} targets (nightly, ASan, debug assertions, $build) in $CARGO_TARGET_DIR"
"${fuzz[@]}" build --fuzz-dir tests/fuzz --debug-assertions "${profile[@]}"

# How many crash inputs a target has kept (none, also when its directory does not exist yet).
artifact_count() { find "tests/fuzz/artifacts/$1" -type f 2>/dev/null | wc -l || true; }

failed=()
for target in "${targets[@]}"; do
    artifacts=tests/fuzz/artifacts/$target
    before=$(artifact_count "$target")
    mkdir -p "$scratch/$target"
    echo "fuzz: $target for ${seconds}s"
    rc=0
    "${fuzz[@]}" run --fuzz-dir tests/fuzz --debug-assertions "${profile[@]}" "$target" \
        "$scratch/$target" "tests/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1 || rc=$?
    grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec)' \
        "$scratch/$target.log" | sed "s/^/fuzz: $target: /" || true
    after=$(artifact_count "$target")
    if ((rc != 0 || after > before)); then
        echo "fuzz: $target FAILED (exit $rc, $((after - before)) new artifacts in $artifacts)"
        tail -n 60 "$scratch/$target.log"
        failed+=("$target")
    fi
done

if ((${#failed[@]} > 0)); then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[*]} targets, ${seconds}s each, no crash"
