#!/usr/bin/env bash
# Builds csi-driver-host-path's hostpathplugin (the baseline of tests/bench and a peer of
# tests/ctl.rs) from the offline source in shared/peers/hostpath, once per version, and prints
# the binary's path:
#
#     HOSTPATH_PLUGIN=$(tests/tools/hostpath.sh)
#
# The peers directory is $SNAPCSI_PEERS, else <repo>/../shared/peers, else /work/shared/peers.
# The binary is cached as ~/.cache/snapcsi/bin/hostpathplugin-<version>/hostpathplugin; it is
# built in a temporary directory and moved into place, so a half-built one is never seen.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/tools/env.sh
source "$root/tests/tools/env.sh"

HOSTPATH_VERSION=v1.18.0

peers=${SNAPCSI_PEERS:-}
if [[ -z $peers ]]; then
    for candidate in "$root/../shared/peers" /work/shared/peers; do
        if [[ -d $candidate/hostpath ]]; then
            peers=$candidate
            break
        fi
    done
fi
dir=$SNAPCSI_CACHE/bin/hostpathplugin-$HOSTPATH_VERSION
bin=$dir/hostpathplugin
if [[ ! -x $bin ]]; then
    [[ -n $peers && -x $peers/hostpath/build.sh ]] || {
        echo "hostpath.sh: no shared/peers/hostpath/build.sh (set SNAPCSI_PEERS)" >&2
        exit 1
    }
    command -v go >/dev/null 2>&1 || { echo "hostpath.sh: go not found" >&2; exit 1; }
    mkdir -p "$SNAPCSI_CACHE/bin"
    tmp=$(mktemp -d "$SNAPCSI_CACHE/bin/.hostpathplugin.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "hostpath.sh: building hostpathplugin $HOSTPATH_VERSION from $peers/hostpath" >&2
    GOCACHE=$SNAPCSI_GOCACHE GOMODCACHE=$SNAPCSI_GOMODCACHE \
        "$peers/hostpath/build.sh" "$tmp/out/hostpathplugin" "$tmp/work" >&2
    chmod -R u+w "$tmp/work" 2>/dev/null || true
    rm -rf "$tmp/work"
    mkdir -p "$dir"
    # Another build may have finished first: either binary is the same version.
    mv -f "$tmp/out/hostpathplugin" "$bin"
fi
echo "$bin"
