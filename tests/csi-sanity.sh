#!/usr/bin/env bash
# Runs the upstream csi-sanity suite against an already built snapcsi binary,
# once per volume access type (mount, then block), each against a fresh
# driver with its own temporary directory.
#
# Usage: tests/csi-sanity.sh [extra csi-sanity/ginkgo flags...]
#   e.g. tests/csi-sanity.sh -ginkgo.focus='NodeStage' -ginkgo.v
#
# Environment:
#   SNAPCSI_BIN          driver binary (default: target/debug/snapcsi, or
#                        $CARGO_TARGET_DIR/debug/snapcsi)
#   SANITY_ACCESS_TYPES  access types to test (default: "mount block")
#   SANITY_TIMEOUT       time limit of one csi-sanity run (default: 20m)
#   SANITY_KEEP_TMP      1 = keep the temporary directories even on success
#   SANITY_SHOW_LOG      1 = also stream csi-sanity's output (e.g. with -ginkgo.v)
#   SNAPCSI_SERVE_ARGS   extra words appended to `snapcsi serve ...` (e.g. --config FILE)
#   SANITY_NODE_ID       the driver's --node-id (default sanity-node; a cloud server's id when
#                        the backend attaches volumes to nodes)
#   SANITY_VOLUME_SIZE   --csi.testvolumesize in bytes (default 64 MiB; GiB clouds need 1 GiB)
#   SANITY_EXPAND_SIZE   --csi.testvolumeexpandsize in bytes (default 128 MiB)
#   SANITY_SKIP_NODE     1 = skip csi-sanity's Node Service specs (cloud backends have no
#                        attach path here; the driver still serves a Node service with no
#                        capabilities, which csi-sanity's cleanup calls)
#   SANITY_VOLUME_SIZE   --csi.testvolumesize in bytes (default 64 MiB; a backend that sizes
#                        volumes in whole GiB needs 1073741824, or csi-sanity's specs
#                        that set limit_bytes = required_bytes cannot be met)
#   SANITY_EXPAND_SIZE   --csi.testvolumeexpandsize in bytes (default: twice the volume size)
#   RUST_LOG             passed to the driver (default: info; NO_COLOR=1 is set)
#
# Needs root (loop devices, mount). Exits non-zero if any spec failed, the
# suite did not finish, or the driver died. Full logs stay in the temporary
# directory of a failed run, whose path is printed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/tools/env.sh
source "$root/tests/tools/env.sh"

say() { printf 'csi-sanity.sh: %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }

if ((EUID != 0)); then
    die "must run as root (the node service attaches loop devices and mounts)"
fi

SNAPCSI_BIN=${SNAPCSI_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/snapcsi}
[[ -x $SNAPCSI_BIN ]] || die "driver binary $SNAPCSI_BIN not found or not executable (run: cargo build)"
SNAPCSI_BIN=$(cd "$(dirname "$SNAPCSI_BIN")" && pwd)/$(basename "$SNAPCSI_BIN")

if [[ ! -x $CSI_SANITY ]]; then
    "$root/tests/tools/install-prereqs.sh" >/dev/null
fi
[[ -x $CSI_SANITY ]] || die "csi-sanity missing at $CSI_SANITY (run tests/tools/install-prereqs.sh)"

read -ra access_types <<<"${SANITY_ACCESS_TYPES:-mount block}"
read -ra serve_args <<<"${SNAPCSI_SERVE_ARGS:-}"
mode_args=()
if [[ ${SANITY_SKIP_NODE:-0} == 1 ]]; then
    mode_args=(-ginkgo.skip="Node Service")
fi
sanity_timeout=${SANITY_TIMEOUT:-20m}
volume_size=${SANITY_VOLUME_SIZE:-$((64 * 1024 * 1024))}
expand_size=${SANITY_EXPAND_SIZE:-$((2 * volume_size))}
socket_wait=30

# State of the run in progress, for the EXIT trap.
tmp=""
driver_pid=""
leaked=0  # mounts + loop devices the last clean_tmp had to remove

# Mount points at or below $1, deepest first.
mounts_under() {
    findmnt -rn -o TARGET | awk -v p="$1" 'index($0, p "/") == 1 || $0 == p' \
        | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-
}

# Loop devices whose backing file lives below $1.
loops_under() {
    losetup -l -n -O NAME,BACK-FILE 2>/dev/null \
        | awk -v p="$1/" '{ dev = $1; $1 = ""; sub(/^ /, ""); if (index($0, p) == 1) print dev }'
}

stop_driver() {
    [[ -n $driver_pid ]] || return 0
    if kill -0 "$driver_pid" 2>/dev/null; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$driver_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$driver_pid" 2>/dev/null; then
            say "driver did not stop within 10 s of SIGTERM; killing it"
        fi
    fi
    # The driver runs in its own process group: take any helper it left too.
    kill -KILL -- "-$driver_pid" 2>/dev/null || true
    wait "$driver_pid" 2>/dev/null || true
    driver_pid=""
}

# Unmounts everything below $tmp and detaches loop devices backed by files in
# it. Returns non-zero if something could not be cleaned.
clean_tmp() {
    [[ -n $tmp && -d $tmp ]] || return 0
    local m dev left=0 pass
    leaked=0
    for pass in 1 2 3 4 5; do
        mapfile -t ms < <(mounts_under "$tmp")
        ((${#ms[@]} > 0)) || break
        for m in "${ms[@]}"; do
            if ((pass == 1)); then
                say "cleanup: unmounting leftover $m"
                leaked=$((leaked + 1))
            fi
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
    for dev in $(loops_under "$tmp"); do
        say "cleanup: detaching leftover $dev"
        leaked=$((leaked + 1))
        losetup -d "$dev" 2>/dev/null || true
    done
    if [[ -n $(mounts_under "$tmp") ]]; then
        say "cleanup: mounts remain under $tmp:"; mounts_under "$tmp" | sed 's/^/    /'
        left=1
    fi
    if [[ -n $(loops_under "$tmp") ]]; then
        say "cleanup: loop devices remain for files under $tmp:"; loops_under "$tmp" | sed 's/^/    /'
        left=1
    fi
    return "$left"
}

# Stops the driver, cleans the run's directory, and deletes it unless the run
# failed or SANITY_KEEP_TMP=1.
finish_run() {
    local keep=$1
    stop_driver
    local clean=0
    clean_tmp || clean=1
    if [[ -n $tmp && -d $tmp ]]; then
        if [[ $keep == 1 || ${SANITY_KEEP_TMP:-0} == 1 || $clean != 0 ]]; then
            say "kept $tmp"
        else
            rm -rf --one-file-system "$tmp"
        fi
    fi
    tmp=""
    return "$clean"
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
on_exit() {
    local rc=$?
    if [[ -n $tmp || -n $driver_pid ]]; then
        finish_run 1 || true
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

print_tail() { # file lines title
    [[ -s $1 ]] || return 0
    printf -- '----- %s (last %s lines of %s) -----\n' "$3" "$2" "$1"
    tail -n "$2" "$1"
    printf -- '----- end of %s -----\n' "$3"
}

# Ginkgo's closing lines, e.g.
#   Ran 62 of 103 Specs in 41.2 seconds
#   FAIL! -- 60 Passed | 2 Failed | 1 Pending | 40 Skipped
total_passed=0 total_failed=0 total_skipped=0
results=()
overall=0

run_one() {
    local at=$1; shift
    local rc=0 died=0 ok=1

    tmp=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-sanity-$at.XXXXXX")
    local sock=$tmp/csi.sock log=$tmp/csi-sanity.log dlog=$tmp/driver.log
    if ((${#sock} > 100)); then # sun_path holds 108 bytes
        die "socket path $sock is too long for a unix socket; set TMPDIR to a shorter directory"
    fi
    # csi-sanity creates (os.Mkdir) and removes mnt/ and stage/ around every
    # spec and fails if they already exist: only their parent is made here.
    mkdir -p "$tmp/data"

    say "[$at] starting driver: $SNAPCSI_BIN serve --endpoint unix://$sock --data-dir $tmp/data --node-id ${SANITY_NODE_ID:-sanity-node} --mode all${serve_args[*]:+ ${serve_args[*]}}"
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} setsid "$SNAPCSI_BIN" serve \
        --endpoint "unix://$sock" \
        --data-dir "$tmp/data" \
        --node-id "${SANITY_NODE_ID:-sanity-node}" \
        --mode all \
        "${serve_args[@]}" \
        </dev/null >"$dlog" 2>&1 &
    driver_pid=$!

    local waited=0
    while [[ ! -S $sock ]]; do
        if ! kill -0 "$driver_pid" 2>/dev/null; then
            wait "$driver_pid" && rc=0 || rc=$?
            driver_pid=""
            say "[$at] FAIL: driver exited (status $rc) before creating $sock"
            print_tail "$dlog" 40 "driver log"
            results+=("[$at] driver did not start")
            total_failed=$((total_failed + 1))
            finish_run 1 || true
            return 1
        fi
        if ((waited >= socket_wait * 10)); then
            say "[$at] FAIL: $sock did not appear within ${socket_wait}s"
            print_tail "$dlog" 40 "driver log"
            results+=("[$at] driver socket never appeared")
            total_failed=$((total_failed + 1))
            finish_run 1 || true
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    say "[$at] driver up (pid $driver_pid) after $((waited / 10)).$((waited % 10))s; running csi-sanity $CSI_SANITY_VERSION (log: $log)"

    local started=$SECONDS
    local sanity=(
        timeout --kill-after=30s "$sanity_timeout" "$CSI_SANITY"
        --csi.endpoint="unix://$sock"
        --csi.mountdir="$tmp/mnt"
        --csi.stagingdir="$tmp/stage"
        --csi.testvolumeaccesstype="$at"
        --csi.testvolumesize="$volume_size"
        --csi.testvolumeexpandsize="$expand_size"
        -ginkgo.no-color
        -ginkgo.junit-report="$tmp/junit.xml"
        "${mode_args[@]}"
        "$@"
    )
    if [[ ${SANITY_SHOW_LOG:-0} == 1 ]]; then
        "${sanity[@]}" </dev/null 2>&1 | tee "$log" || rc=$?
    else
        "${sanity[@]}" </dev/null >"$log" 2>&1 || rc=$?
    fi
    local took=$((SECONDS - started))

    if ! kill -0 "$driver_pid" 2>/dev/null; then
        died=1
        local status=0
        wait "$driver_pid" || status=$?
        driver_pid=""
        say "[$at] the driver exited during the run (status $status)"
    fi

    local ran summary
    ran=$(grep -E '^Ran [0-9]+ of [0-9]+ Specs' "$log" | tail -n 1 || true)
    summary=$(grep -E '^(SUCCESS|FAIL)! .*-- [0-9]+ Passed \| [0-9]+ Failed' "$log" | tail -n 1 || true)
    printf '== csi-sanity [%s]: %s\n' "$at" "${ran:-no "Ran N of M Specs" line (suite did not finish)}"
    printf '== csi-sanity [%s]: %s\n' "$at" "${summary:-no summary line}"

    local p=0 f=0 s=0 total=0 nran=0
    if [[ $ran =~ ^Ran\ ([0-9]+)\ of\ ([0-9]+) ]]; then
        nran=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
        s=$((total - nran))
    fi
    if [[ $summary =~ ([0-9]+)\ Passed\ \|\ ([0-9]+)\ Failed ]]; then
        p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
    fi

    if ((rc != 0)); then
        ok=0
        ((rc == 124 || rc == 137)) && say "[$at] csi-sanity hit the ${sanity_timeout} time limit"
    fi
    if [[ -z $summary || -z $ran ]]; then
        ok=0
    fi
    if ((died)); then
        ok=0
        say "[$at] FAIL: the driver died during the run"
    fi
    # A run that failed without a failed spec (crash, timeout, dead driver)
    # still counts as one failure.
    if ((!ok && f == 0)); then
        f=1
    fi
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    total_skipped=$((total_skipped + s))

    if ((ok)); then
        results+=("[$at] ok in ${took}s: $summary")
        finish_run 0 || { results+=("[$at] FAILED: mounts or loop devices under the run's directory could not be removed"); return 1; }
        # Not a failure, but every volume was deleted by now: the driver
        # should not have left anything attached.
        ((leaked == 0)) || results+=("[$at] warning: the driver left $leaked mount(s)/loop device(s) behind after the suite")
        return 0
    fi

    local why="exit $rc"
    ((died)) && why+=", driver died"
    results+=("[$at] FAILED in ${took}s ($why): ${summary:-no summary}")
    # Ginkgo lists the failed specs at the very end ("Summarizing N Failures").
    if grep -q '^Summarizing [0-9]* Failure' "$log"; then
        sed -n '/^Summarizing [0-9]* Failure/,$p' "$log" | head -n 60
    fi
    print_tail "$log" 80 "csi-sanity log"
    print_tail "$dlog" 40 "driver log"
    finish_run 1 || true
    return 1
}

say "driver: $SNAPCSI_BIN"
say "csi-sanity: $CSI_SANITY"
for at in "${access_types[@]}"; do
    case $at in
        mount | block) ;;
        *) die "unknown access type '$at' in SANITY_ACCESS_TYPES (mount or block)" ;;
    esac
    run_one "$at" "$@" || overall=1
done

echo "== csi-sanity results:"
printf '   %s\n' "${results[@]}"
# Plain closing line: specs passed and failed over all access types; skipped
# counts the specs that did not run (skipped by capability, pending, filtered).
echo "csi-sanity: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit "$overall"
