#!/usr/bin/env bash
# Changed block tracking benchmark: GetMetadataDelta of snapcsi against csi-driver-host-path
# v1.18.0, side by side, for a 10 GiB and a 50 GiB raw block volume with 64 MiB rewritten
# between the two snapshots (tests/bench/delta.rs measures; this prepares and cleans up).
#
# Both drivers keep their volumes and snapshots on one XFS file system with reflink, made on a
# loop device over a sparse file (so a 50 GiB volume costs only the bytes written; host-path
# fallocates its block volumes, which on XFS allocates unwritten extents, not data). Host-path
# is built from the shared peers and cached by version (tests/tools/build-peers.sh hostpath).
#
# Usage: [SNAPCSI_BENCH_PROFILE=dev] tests/bench/delta.sh [--smoke] [--sizes 10,50]
#            [--changed-mib 64] [--reps 3]
#   --smoke   1 and 2 GiB, one repetition, answers checked, no goal check (about a minute)
# Root (loop devices, mounts). Prints a table and the host-path/snapcsi ratio per size; exits 1
# when the goal (snapcsi flat in size, >= 100x faster at the largest) is missed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
say() { printf 'bench delta: %s\n' "$*"; }
((EUID == 0)) || { say "must run as root (loop devices, mounts)"; exit 1; }

eval "$("$root/tests/tools/build-peers.sh" hostpath)"

smoke=0
for a in "$@"; do [[ $a == --smoke ]] && smoke=1; done
# The file system must hold the largest volume twice over (volume + host-path's copy-on-write
# snapshots share extents, but the volume itself is fallocated): sparse, so it costs nothing.
fs_size=$((smoke ? 16 : 160))G

work=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-bench-delta.XXXXXX")
dev=""
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    set +e
    local m
    # Volumes the drivers left published or attached under the work dir, then the file system.
    findmnt -rn -o TARGET | grep "^$work/mnt/" | sort -r | while read -r m; do umount "$m"; done
    losetup -l -n -O NAME,BACK-FILE | awk -v p="$work/mnt/" 'index($2, p) == 1 {print $1}' \
        | xargs -r -n1 losetup -d 2>/dev/null
    if mountpoint -q "$work/mnt"; then umount "$work/mnt" || umount -l "$work/mnt"; fi
    if [[ -n $dev ]]; then losetup -d "$dev" 2>/dev/null; fi
    rm -rf "$work"
}
trap cleanup EXIT

truncate -s "$fs_size" "$work/fs.img"
dev=$(losetup --find --show "$work/fs.img")
mkfs.xfs -f -q -m reflink=1 "$dev"
mkdir "$work/mnt"
mount "$dev" "$work/mnt"
say "XFS (reflink=1) on $dev over a sparse $fs_size file, mounted at $work/mnt"

# The real numbers from the release build (SNAPCSI_BENCH_PROFILE=dev: the debug build, slower
# for snapcsi, when a release build is not worth its time); a smoke run uses the debug one.
profile=(--profile "${SNAPCSI_BENCH_PROFILE:-bench}")
((smoke)) && profile=(--profile dev)
cargo bench --quiet "${profile[@]}" --bench delta -- --dir "$work/mnt" --hostpath "$HOSTPATHPLUGIN" "$@"
