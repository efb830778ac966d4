#!/usr/bin/env bash
# snapcsi's benchmarks, side by side with csi-driver-host-path v1.18.0 (the baseline):
#
#     tests/bench/run.sh                  every table at full size (about 20 minutes, 2 cores)
#     tests/bench/run.sh --smoke          every table at toy size (what CI runs; asserts no speed)
#     tests/bench/run.sh --before REV     adds snapcsi built from git revision REV as a third
#                                         driver ("snapcsi@before"), for before/after tables
#     tests/bench/run.sh --tables 2,4 --reps 5
#     tests/bench/run.sh --data-mib 256     table 1 with 256 MiB written instead of 1 GiB
#
# Builds what it runs: host-path from shared/peers (tests/tools/hostpath.sh), ghz from the Go
# module proxy (tests/tools/ghz.sh), both cached by version under ~/.cache/snapcsi; snapcsi's
# release binary (debug for --smoke) and the bench program (tests/bench/bench.rs, cargo
# example `bench`). Prints the tables and writes JSON under results/bench/ (git-ignored).
# Needs root: table 1 mounts loop-backed XFS and ext4 file systems, the drivers mount volumes.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
# shellcheck source=tests/tools/env.sh
source "$root/tests/tools/env.sh"

smoke=0 before="" pass=()
while (($#)); do
    case $1 in
        --smoke) smoke=1; pass+=(--smoke); shift ;;
        --before) before=${2:?--before needs a git revision}; shift 2 ;;
        --tables | --reps | --work | --disk-dir | --data-mib | --t3-counts) pass+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
        *) echo "tests/bench/run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if ((EUID != 0)); then
    echo "tests/bench/run.sh: must run as root (loop devices and mounts)" >&2
    exit 1
fi

hostpath=$("$root/tests/tools/hostpath.sh")
ghz=$("$root/tests/tools/ghz.sh")

target=${CARGO_TARGET_DIR:-$root/target}
if ((smoke)); then
    profile=debug
    cargo build --quiet --bin snapcsi --example bench
else
    profile=release
    cargo build --quiet --release --bin snapcsi --example bench
fi
# A copy: a --before build below shares the target directory (and so reuses every dependency)
# and replaces target/<profile>/snapcsi.
mkdir -p "$target/bench"
cp "$target/$profile/snapcsi" "$target/bench/snapcsi.tmp"
mv -f "$target/bench/snapcsi.tmp" "$target/bench/snapcsi"

if [[ -n $before ]]; then
    rev=$(git rev-parse --verify "$before^{commit}")
    before_bin=$SNAPCSI_CACHE/bench-before/$rev/snapcsi-$profile
    if [[ ! -x $before_bin ]]; then
        tree=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-before.XXXXXX")
        git worktree add --detach "$tree" "$rev" >/dev/null
        echo "building snapcsi at $rev ($profile) for --before" >&2
        flag=()
        [[ $profile == release ]] && flag=(--release)
        (cd "$tree" && CARGO_TARGET_DIR=$target cargo build --quiet "${flag[@]}" --bin snapcsi)
        mkdir -p "$(dirname "$before_bin")"
        cp "$target/$profile/snapcsi" "$before_bin.tmp"
        mv -f "$before_bin.tmp" "$before_bin"
        git worktree remove --force "$tree"
        # Put this tree's binary back where its next (fresh) build expects it.
        cp "$target/bench/snapcsi" "$target/$profile/snapcsi"
    fi
    pass+=(--before "$before_bin")
fi

exec "$target/$profile/examples/bench" \
    --snapcsi "$target/bench/snapcsi" --hostpath "$hostpath" --ghz "$ghz" \
    --out "$root/results/bench" "${pass[@]}"
