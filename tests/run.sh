#!/usr/bin/env bash
# The whole snapcsi test suite, from a fresh machine:
#
#     tests/run.sh
#
# Phases, each timed:
#   prereqs  tests/tools/install-prereqs.sh (Debian packages, csi-sanity, Kubernetes tools,
#            nightly, cargo-fuzz)
#   fmt      cargo fmt --all -- --check
#   lint     tests/tools/lint.sh (hadolint on the Dockerfile, shellcheck on every script)
#   clippy   cargo clippy --all-targets -- -D warnings
#   test     cargo test   (unit, integration and doc tests)
#   test-root cargo test -- --ignored for the tests that need root (grpc, group,
#            reflink, ctl against csi-driver-host-path, node_namespaces, snapshot_metadata)
#   fuzz     tests/tools/fuzz.sh (every cargo-fuzz target of tests/fuzz, FUZZ_SECONDS each,
#            15 here; fails on any crash artifact; the long run is README's separate command)
#   build    cargo build  (the debug binary csi-sanity drives)
#   sanity   tests/csi-sanity.sh (csi-sanity, mount and block access types)
#   sanity-* tests/sanity-<backend>.sh (csi-sanity Controller+Identity per cloud backend)
#   e2e      tests/k8s/e2e.sh (real kube-apiserver + sidecars, VolumeSnapshot and
#            VolumeGroupSnapshot scenarios; changed block tracking through the real
#            external-snapshot-metadata sidecar, built from ../shared/peers on first use)
#   bench    tests/bench/run.sh --smoke (every benchmark table at toy size against
#            csi-driver-host-path; asserts that it completes and prints, nothing about speed)
#   node-e2e tests/k8s/node-e2e.sh (a real kubelet + containerd node, snapcsi deployed from
#            deploy/ as pods of the image our Dockerfile builds, scenarios a-h); its tools and
#            images build in the background from the end of prereqs on (log: node-prebuild)
#
# A failing fmt, clippy or test phase does not stop the later ones, so one run
# reports everything; a failing prereqs phase stops the run, and a failing
# build skips sanity. Exits 0 only if every phase passed. Must run as root:
# the node service attaches loop devices and mounts filesystems.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=tests/tools/env.sh
source "$root/tests/tools/env.sh"

if ((EUID != 0)); then
    echo "tests/run.sh: must run as root (loop devices and mounts); try: sudo tests/run.sh" >&2
    exit 1
fi
command -v cargo >/dev/null 2>&1 || { echo "tests/run.sh: cargo not found on PATH" >&2; exit 1; }

logs=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-run.XXXXXX")
trap 'rm -rf "$logs"' EXIT

names=() times=() states=()
failed=0

# phase NAME COMMAND... : runs COMMAND with its output shown and saved to
# $logs/NAME.log, and records how long it took and whether it passed.
phase() {
    local name=$1; shift
    local start=$SECONDS rc=0
    echo
    echo ">> phase $name: $*"
    "$@" 2>&1 | tee "$logs/$name.log" || rc=$?
    local took=$((SECONDS - start))
    names+=("$name") times+=("$took")
    if ((rc == 0)); then
        states+=("ok")
        echo "== phase $name: ${took}s"
    else
        states+=("FAILED (exit $rc)")
        echo "== phase $name: ${took}s FAILED (exit $rc)"
        failed=1
    fi
    return "$rc"
}

skip() {
    names+=("$1") times+=("-") states+=("skipped: $2")
    echo
    echo "== phase $1: skipped ($2)"
}

summary() {
    echo
    echo "== summary"
    local i t
    for i in "${!names[@]}"; do
        t=${times[$i]}
        [[ $t == - ]] || t=${t}s
        printf '   %-8s %6s  %s\n' "${names[$i]}" "$t" "${states[$i]}"
    done
    printf '   %-8s %6s\n' total "$((SECONDS - run_start))s"
}

# Adds up what the test runners reported: cargo's "test result:" lines and
# csi-sanity.sh's closing "csi-sanity: N passed, N failed, N skipped" line. The
# phases test-root (--ignored) and e2e (--include-ignored, on test binaries that
# hold only ignored tests) run only tests that the test phase reported ignored:
# each one they ran counts once, as passed or failed, and no longer as skipped.
count_tests() {
    local p=0 f=0 s=0 line log
    for log in test test-root e2e; do
        [[ -f $logs/$log.log ]] || continue
        while read -r line; do
            [[ $line =~ ([0-9]+)\ passed\;\ ([0-9]+)\ failed\;\ ([0-9]+)\ ignored ]] || continue
            p=$((p + BASH_REMATCH[1])) f=$((f + BASH_REMATCH[2]))
            if [[ $log == test ]]; then
                s=$((s + BASH_REMATCH[3]))
            else
                s=$((s - BASH_REMATCH[1] - BASH_REMATCH[2] + BASH_REMATCH[3]))
            fi
        done < <(grep -E '^test result: ' "$logs/$log.log" || true)
    done
    for log in "$logs"/sanity*.log; do
        [[ -f $log ]] || continue
        line=$(grep -E '^csi-sanity: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
        if [[ $line =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed,\ ([0-9]+)\ skipped ]]; then
            p=$((p + BASH_REMATCH[1])) f=$((f + BASH_REMATCH[2])) s=$((s + BASH_REMATCH[3]))
        fi
    done
    # A phase that failed without a failing test (build error, fmt, clippy,
    # crash) must not read as "0 failed".
    if ((failed && f == 0)); then
        local i
        for i in "${!states[@]}"; do
            [[ ${states[$i]} != FAILED* ]] || f=$((f + 1))
        done
    fi
    echo "tests: $p passed, $f failed, $s skipped"
}

run_start=$SECONDS
echo "tests/run.sh in $root on $(uname -sr), $(nproc) cores; CI=${CI:-}"

if ! phase prereqs "$root/tests/tools/install-prereqs.sh"; then
    summary
    echo "tests/run.sh: prerequisites could not be installed; stopping" >&2
    exit 1
fi
echo "cargo: $(cargo --version); rustc: $(rustc --version)"
# Background work joined by a later phase (it waits on the same version-keyed cache lock).
"$root/tests/k8s/node-prebuild.sh" >"$logs/node-prebuild.log" 2>&1 &

phase fmt cargo fmt --all -- --check || true
phase lint "$root/tests/tools/lint.sh" || true
phase clippy cargo clippy --all-targets -- -D warnings || true
# Tests that need a peer (the real Cinder and Keystone, the Python simulators) fail instead
# of skipping when it cannot be had.
# tests/scheduler.rs starts etcd + kube-apiserver itself: the tool paths (built by prereqs).
eval "$("$root/tests/k8s/build-tools.sh")"
# tests/ctl.rs also drives csi-driver-host-path (built from shared/peers, cached by version).
HOSTPATH_PLUGIN=$("$root/tests/tools/hostpath.sh") || HOSTPATH_PLUGIN=""
export HOSTPATH_PLUGIN
phase test env SNAPCSI_REQUIRE_PEERS=1 cargo test --no-fail-fast || true
# The tests that need root are #[ignore]d (plain `cargo test` reports them ignored, never
# passed); this run is root, so run them.
phase test-root cargo test --test grpc --test group --test reflink --test ctl \
    --test node_namespaces --test snapshot_metadata -- --ignored || true
# Bounded fuzzing of the parsers of untrusted input (tokens, ids, config, cloud answers).
phase fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-15}" FUZZ_BUILD="${FUZZ_BUILD:-dev}" \
    "$root/tests/tools/fuzz.sh" || true
if phase build cargo build; then
    phase sanity env SNAPCSI_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/snapcsi" \
        "$root/tests/csi-sanity.sh" || true
    # One more csi-sanity phase per cloud backend: tests/sanity-<backend>.sh starts that
    # backend's real server or simulator and runs the Controller and Identity suites.
    for script in "$root"/tests/sanity-*.sh; do
        [[ -e $script ]] || continue
        name=$(basename "$script" .sh)
        phase "$name" env SNAPCSI_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/snapcsi" \
            "$script" || true
    done
    # Kubernetes for real: builds etcd, kube-apiserver, the sidecars (cached by version) and
    # runs the VolumeSnapshot scenario on them.
    phase e2e "$root/tests/k8s/e2e.sh" || true
    sed 's/^/node-prebuild (background): /' "$logs/node-prebuild.log" || true
    phase node-e2e "$root/tests/k8s/node-e2e.sh" || true
    phase bench "$root/tests/bench/run.sh" --smoke || true
else
    skip sanity "build failed"
fi

summary
if ((failed)); then
    echo "tests/run.sh: FAILED"
else
    echo "tests/run.sh: all phases passed"
fi
# The plain closing line: every test and spec that ran, over cargo test and
# both csi-sanity runs.
count_tests
exit "$failed"
