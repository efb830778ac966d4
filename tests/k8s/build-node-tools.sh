#!/usr/bin/env bash
# Builds what a Kubernetes node needs for tests/k8s/node-e2e.sh, each into a version-keyed
# cache directory under ~/.cache/snapcsi/node/ (built in a temp dir, then moved into place, so
# a half-built tool is never taken for cached), and installs the Debian packages it uses:
#   kubelet, kube-scheduler   k8s.io/kubernetes $K8S_VERSION, from the wrapper module of
#                             tests/k8s/build-tools.sh (the same version as kube-apiserver)
#   containerd, containerd-shim-runc-v2, ctr
#                             github.com/containerd/containerd/v2 $CONTAINERD_VERSION (static)
#   runc                      github.com/opencontainers/runc $RUNC_VERSION (cgo, libseccomp)
#   csi-node-driver-registrar, csi-resizer, livenessprobe
#                             the Go module proxy refuses them: built by the peers'
#                             sidecars/build.sh from the source archives of the versions
#                             deploy/ names ($SNAPCSI_PEERS, else <repo>/../shared/peers, else
#                             /work/shared/peers)
#   Debian: containernetworking-plugins (bridge, host-local, loopback), busybox-static (the
#   workload image), docker.io (builds the Dockerfile), debootstrap (its base images),
#   libseccomp-dev (runc).
#
# Usage: tests/k8s/build-node-tools.sh     prints `export VAR=path` lines for each tool
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# The wrapper-module helpers and K8S_VERSION (build-tools.sh only defines when sourced).
# shellcheck source=tests/k8s/build-tools.sh
source "$here/build-tools.sh"
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
RUNC_VERSION=${RUNC_VERSION:-v1.5.3}
node_cache=$cache/node
log() { printf 'build-node-tools: %s\n' "$*" >&2; }
# timed NAME COMMAND...: runs it, and logs how long it took when it built something.
timed() {
    local name=$1 start=$SECONDS; shift
    "$@"
    log "$name ready ($((SECONDS - start))s)"
}

apt_packages() {
    # command or file -> Debian package
    local -A pkg_of=(
        [/usr/lib/cni/bridge]=containernetworking-plugins
        [/bin/busybox]=busybox-static
        [/usr/sbin/dockerd]=docker.io
        [/usr/sbin/debootstrap]=debootstrap
        [/usr/include/seccomp.h]=libseccomp-dev
        [/usr/bin/pkg-config]=pkg-config
    )
    local missing=() f
    for f in "${!pkg_of[@]}"; do [[ -e $f ]] || missing+=("${pkg_of[$f]}"); done
    ((${#missing[@]} == 0)) && return
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # docker.io enables its services where systemd runs; node-e2e.sh starts its own daemons.
    for f in "${!pkg_of[@]}"; do [[ -e $f ]] || { log "$f still missing"; exit 1; }; done
}

# go_install_into OUT ENV... -- PKG@VERSION...: `go install` into a temp dir moved to OUT.
go_install_into() {
    local out=$1; shift
    local env=()
    while [[ $1 != -- ]]; do env+=("$1"); shift; done
    shift
    local tmp
    tmp=$(mktemp -d "$node_cache/.tmp.XXXXXX")
    (cd / && env GOBIN="$tmp" GOFLAGS= GOWORK=off "${env[@]}" go install -trimpath "$@")
    rm -rf "$out"
    mv "$tmp" "$out"
}

build_containerd() {
    local out=$node_cache/containerd-$CONTAINERD_VERSION m=github.com/containerd/containerd/v2
    if [[ -x $out/containerd && -x $out/containerd-shim-runc-v2 && -x $out/ctr ]]; then return; fi
    log "building containerd $CONTAINERD_VERSION"
    go_install_into "$out" CGO_ENABLED=0 -- "$m/cmd/containerd@$CONTAINERD_VERSION" \
        "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" "$m/cmd/ctr@$CONTAINERD_VERSION"
}

build_runc() {
    local out=$node_cache/runc-$RUNC_VERSION
    if [[ -x $out/runc ]]; then return; fi
    log "building runc $RUNC_VERSION (cgo, seccomp)"
    go_install_into "$out" CGO_ENABLED=1 -- -tags seccomp \
        "github.com/opencontainers/runc@$RUNC_VERSION"
}

build_kubelet() {
    local out=$node_cache/kubernetes-$K8S_VERSION
    if [[ -x $out/kubelet && -x $out/kube-scheduler ]]; then return; fi
    local staging=v0${K8S_VERSION#v1}
    # Its own wrapper directory: `go build` rewrites go.mod/go.sum, and build-tools.sh may be
    # building kube-apiserver from its wrapper at the same time.
    local dir=$cache/k8s/src/kubernetes-node-$K8S_VERSION map tmp
    map=$(mktemp)
    printf '%s\n' "s#^replace \\([^ ]*\\) => \\./staging/src/[^ ]*#replace \\1 => \\1 $staging#" >"$map"
    wrapper "$dir" k8s.io/kubernetes "$K8S_VERSION" "$map"
    rm -f "$map"
    log "building kubelet, kube-scheduler $K8S_VERSION (first time: many minutes)"
    tmp=$(mktemp -d "$node_cache/.tmp.XXXXXX")
    (cd "$dir" && go build -trimpath -o "$tmp/" k8s.io/kubernetes/cmd/kubelet \
        k8s.io/kubernetes/cmd/kube-scheduler)
    rm -rf "$out"
    mv "$tmp" "$out"
}

peers_dir() {
    local d
    for d in "${SNAPCSI_PEERS:-}" "$root/../shared/peers" /work/shared/peers; do
        [[ -n $d && -x $d/sidecars/build.sh ]] && { echo "$d"; return; }
    done
    log "no peers directory with sidecars/build.sh (set SNAPCSI_PEERS)"
    exit 1
}

# The sidecars of deploy/ that the proxy refuses; the cache key is the source archives' names.
build_sidecars() {
    local peers key='' out tmp work archive
    peers=$(peers_dir)
    for archive in "$peers"/sidecars/*.tar.gz; do
        archive=$(basename "$archive" .tar.gz)
        key=${key:+${key}_}$archive
    done
    out=$node_cache/sidecars-$key
    if [[ -x $out/csi-node-driver-registrar && -x $out/csi-resizer && -x $out/livenessprobe ]]; then
        echo "$out"; return
    fi
    log "building the sidecars $key from $peers/sidecars"
    tmp=$(mktemp -d "$node_cache/.tmp.XXXXXX")
    work=$(mktemp -d)
    "$peers/sidecars/build.sh" "$tmp" "$work" >&2
    rm -rf "$work" "$out"
    mv "$tmp" "$out"
    echo "$out"
}

main_node() {
    mkdir -p "$node_cache"
    # One build at a time: a second caller (node-e2e.sh while tests/run.sh's background
    # prebuild runs) waits here, then finds everything cached.
    local lock
    exec {lock}>"$node_cache/.lock"
    flock "$lock"
    timed "Debian packages" apt_packages
    timed "containerd $CONTAINERD_VERSION" build_containerd
    timed "runc $RUNC_VERSION" build_runc
    local sidecars
    sidecars=$(build_sidecars)
    timed "kubelet, kube-scheduler $K8S_VERSION" build_kubelet
    echo "export KUBELET=$node_cache/kubernetes-$K8S_VERSION/kubelet"
    echo "export KUBE_SCHEDULER=$node_cache/kubernetes-$K8S_VERSION/kube-scheduler"
    echo "export CONTAINERD_BIN_DIR=$node_cache/containerd-$CONTAINERD_VERSION"
    echo "export RUNC=$node_cache/runc-$RUNC_VERSION/runc"
    echo "export CNI_BIN_DIR=/usr/lib/cni"
    echo "export NODE_DRIVER_REGISTRAR=$sidecars/csi-node-driver-registrar"
    echo "export CSI_RESIZER=$sidecars/csi-resizer"
    echo "export LIVENESSPROBE=$sidecars/livenessprobe"
}

main_node "$@"
