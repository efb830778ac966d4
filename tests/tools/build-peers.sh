#!/usr/bin/env bash
# Builds the peers of changed block tracking from the source archives in the shared peers
# directory, into a version-keyed cache, so a second run only checks:
#   metadata  external-snapshot-metadata v1.1.0: the csi-snapshot-metadata sidecar (offline,
#             vendor/), the snapshot-metadata-lister and -verifier client tools (their other
#             modules come from the Go module proxy), and the SnapshotMetadataService CRD;
#   hostpath  csi-driver-host-path v1.18.0's hostpathplugin (offline), the benchmark baseline.
# The peers directory is $SNAPCSI_PEERS, else <repo>/../shared/peers, else /work/shared/peers.
# Each tool is built in a temporary directory and moved into place, so a half-built tool is
# never taken for a cached one.
#
# Usage: tests/tools/build-peers.sh [metadata] [hostpath]   (default: both)
#        prints `export VAR=path` lines for what it built or found.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
METADATA_VERSION=v1.1.0
HOSTPATH_VERSION=v1.18.0

cache=${SNAPCSI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/snapcsi}
export GOCACHE=$cache/go/build GOMODCACHE=$cache/go/mod GOTOOLCHAIN=local
export PATH=$PATH:/usr/local/go/bin
log() { printf 'build-peers: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

peers_dir() {
    local candidate
    for candidate in "${SNAPCSI_PEERS:-}" "$root/../shared/peers" /work/shared/peers; do
        if [[ -n $candidate && -d $candidate/external-snapshot-metadata ]]; then
            (cd "$candidate" && pwd)
            return
        fi
    done
    die "no peers directory (set SNAPCSI_PEERS; looked in $root/../shared/peers and /work/shared/peers)"
}

# finish TMP OUT: moves a completed build directory into its cached place.
finish() {
    local tmp=$1 out=$2
    mkdir -p "$(dirname "$out")"
    rm -rf "$out.old"
    [[ -e $out ]] && mv "$out" "$out.old"
    mv "$tmp" "$out"
    rm -rf "$out.old"
}

build_metadata() {
    local out=$cache/peers/external-snapshot-metadata-$METADATA_VERSION
    local tools=(csi-snapshot-metadata snapshot-metadata-lister snapshot-metadata-verifier)
    local missing=0 t
    for t in "${tools[@]}"; do [[ -x $out/$t ]] || missing=1; done
    [[ -f $out/snapshotmetadataservice-crd.yaml ]] || missing=1
    if ((missing)); then
        local peers tmp work src
        peers=$(peers_dir)
        mkdir -p "$cache/peers"
        tmp=$(mktemp -d "$cache/peers/.build.XXXXXX")
        work=$(mktemp -d)
        log "building external-snapshot-metadata $METADATA_VERSION (sidecar offline, client tools from the Go module proxy)"
        "$peers/external-snapshot-metadata/build.sh" "$tmp" "$work" >&2
        src=$work/external-snapshot-metadata-${METADATA_VERSION#v}
        for t in snapshot-metadata-lister snapshot-metadata-verifier; do
            # The tools' go.mod wants this module from the proxy, which refuses it: use the
            # unpacked tree (the build.sh header's recipe).
            (cd "$src/tools/$t" \
                && go mod edit -replace github.com/kubernetes-csi/external-snapshot-metadata=../.. \
                    -replace github.com/kubernetes-csi/external-snapshot-metadata/client=../../client \
                && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$tmp/$t" .) >&2
        done
        cp "$src/client/config/crd/cbt.storage.k8s.io_snapshotmetadataservices.yaml" \
            "$tmp/snapshotmetadataservice-crd.yaml"
        rm -rf "$work"
        finish "$tmp" "$out"
    fi
    echo "export CSI_SNAPSHOT_METADATA=$out/csi-snapshot-metadata"
    echo "export SNAPSHOT_METADATA_LISTER=$out/snapshot-metadata-lister"
    echo "export SNAPSHOT_METADATA_VERIFIER=$out/snapshot-metadata-verifier"
    echo "export SNAPSHOT_METADATA_CRD=$out/snapshotmetadataservice-crd.yaml"
}

build_hostpath() {
    local out=$cache/peers/hostpath-$HOSTPATH_VERSION
    if [[ ! -x $out/hostpathplugin ]]; then
        local peers tmp
        peers=$(peers_dir)
        mkdir -p "$cache/peers"
        tmp=$(mktemp -d "$cache/peers/.build.XXXXXX")
        log "building csi-driver-host-path $HOSTPATH_VERSION (offline)"
        "$peers/hostpath/build.sh" "$tmp/hostpathplugin" >&2
        finish "$tmp" "$out"
    fi
    echo "export HOSTPATHPLUGIN=$out/hostpathplugin"
}

what=("$@")
((${#what[@]})) || what=(metadata hostpath)
for w in "${what[@]}"; do
    case $w in
        metadata) build_metadata ;;
        hostpath) build_hostpath ;;
        *) die "unknown peer $w (metadata, hostpath)" ;;
    esac
done
