#!/usr/bin/env bash
# Builds the real Kubernetes pieces the end-to-end test runs, from the Go module proxy, into a
# version-keyed cache (~/.cache/snapcsi/k8s/<tool>-<version>/), so a second run takes seconds:
#   etcd, kube-apiserver, kube-controller-manager, kubectl, snapshot-controller,
#   csi-snapshotter, csi-provisioner, and the snapshot CRDs.
# Modules whose go.mod has `replace` lines pointing into their own repository cannot be
# `go install`-ed; each is built from a throwaway wrapper module that requires it and maps
# every such local path to the published module of the same release.
#
# Usage: tests/k8s/build-tools.sh        prints `export VAR=path` lines for each tool
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.6.0}
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v6.3.0}

cache=${SNAPCSI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/snapcsi}
export GOCACHE=$cache/go/build GOMODCACHE=$cache/go/mod GOFLAGS=-mod=mod GOTOOLCHAIN=local
export PATH=$PATH:/usr/local/go/bin
log() { printf 'build-tools: %s\n' "$*" >&2; }

# The go.mod of module@version, from the proxy.
gomod_of() { go mod download -json "$1" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p'; }

# wrapper DIR MODULE VERSION LOCALMAP: a module requiring MODULE@VERSION with its replace
# lines copied, local paths rewritten by LOCALMAP (a sed script mapping `X => ./path` lines).
wrapper() {
    local dir=$1 module=$2 version=$3 localmap=$4
    mkdir -p "$dir"
    local mod
    mod=$(gomod_of "$module@$version")
    {
        echo "module snapcsi.dev/build/$(basename "$dir")"
        echo
        sed -n 's/^go \(.*\)/go \1/p' "$mod" | head -n 1
        echo
        echo "require $module $version"
        echo
        # Single-line and block replace directives, normalised to `replace A => B V`.
        awk '/^replace \(/{inblock=1; next} inblock && /^\)/{inblock=0; next}
             inblock {print "replace " $0; next} /^replace /{print}' "$mod" \
            | sed -e 's/^replace[[:space:]]*/replace /' | sed -f "$localmap" \
            | grep -v '=> \.' || true
    } >"$dir/go.mod"
    echo 'package main' >"$dir/main.go"
    echo 'func main() {}' >>"$dir/main.go"
}

build_k8s() {
    local out=$cache/k8s/kubernetes-$K8S_VERSION
    if [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kubectl ]]; then
        echo "$out"; return
    fi
    local staging=v0${K8S_VERSION#v1}
    local dir=$cache/k8s/src/kubernetes-$K8S_VERSION map
    map=$(mktemp)
    # k8s.io/api => ./staging/src/k8s.io/api   becomes   k8s.io/api => k8s.io/api v0.36.3
    printf '%s\n' "s#^replace \\([^ ]*\\) => \\./staging/src/[^ ]*#replace \\1 => \\1 $staging#" >"$map"
    wrapper "$dir" k8s.io/kubernetes "$K8S_VERSION" "$map"
    rm -f "$map"
    log "building kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION (first time: many minutes)"
    (cd "$dir" && go build -trimpath -o "$out/" k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
    echo "$out"
}

build_etcd() {
    local out=$cache/k8s/etcd-$ETCD_VERSION
    if [[ -x $out/etcd ]]; then echo "$out"; return; fi
    local dir=$cache/k8s/src/etcd-$ETCD_VERSION map
    map=$(mktemp)
    # go.etcd.io/etcd/api/v3 => ../api   becomes   ... => go.etcd.io/etcd/api/v3 v3.6.x
    printf '%s\n' "s#^replace \\([^ ]*\\) => \\.\\./[^ ]*#replace \\1 => \\1 $ETCD_VERSION#" >"$map"
    wrapper "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$map"
    rm -f "$map"
    log "building etcd $ETCD_VERSION"
    (cd "$dir" && go build -trimpath -o "$out/etcd" go.etcd.io/etcd/server/v3)
    echo "$out"
}

build_csi_module() { # build_csi_module NAME MODULE VERSION CLIENTMAP CMD...
    local name=$1 module=$2 version=$3 localmap=$4; shift 4
    local out=$cache/k8s/$name-$version missing=0 cmd
    for cmd in "$@"; do [[ -x $out/$(basename "$cmd") ]] || missing=1; done
    if ((!missing)); then echo "$out"; return; fi
    local dir=$cache/k8s/src/$name-$version
    wrapper "$dir" "$module" "$version" "$localmap"
    log "building $name $version"
    local pkgs=()
    for cmd in "$@"; do pkgs+=("$module/$cmd"); done
    (cd "$dir" && go build -trimpath -o "$out/" "${pkgs[@]}")
    echo "$out"
}

main() {
    local map k8s etcd snap prov crds
    k8s=$(build_k8s)
    etcd=$(build_etcd)
    map=$(mktemp)
    echo "s#^replace github.com/kubernetes-csi/external-snapshotter/client/v8 => \\./client#replace github.com/kubernetes-csi/external-snapshotter/client/v8 => github.com/kubernetes-csi/external-snapshotter/client/v8 $SNAPSHOTTER_VERSION#" >"$map"
    snap=$(build_csi_module external-snapshotter github.com/kubernetes-csi/external-snapshotter/v8 \
        "$SNAPSHOTTER_VERSION" "$map" cmd/snapshot-controller cmd/csi-snapshotter)
    echo 's#^$##' >"$map"
    prov=$(build_csi_module external-provisioner github.com/kubernetes-csi/external-provisioner/v6 \
        "$PROVISIONER_VERSION" "$map" cmd/csi-provisioner)
    rm -f "$map"
    crds=$(go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION" \
        | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/config/crd
    [[ -d $crds ]] || { log "no CRDs at $crds"; exit 1; }
    echo "export KUBE_APISERVER=$k8s/kube-apiserver"
    echo "export KUBE_CONTROLLER_MANAGER=$k8s/kube-controller-manager"
    echo "export KUBECTL=$k8s/kubectl"
    echo "export ETCD=$etcd/etcd"
    echo "export SNAPSHOT_CONTROLLER=$snap/snapshot-controller"
    echo "export CSI_SNAPSHOTTER=$snap/csi-snapshotter"
    echo "export CSI_PROVISIONER=$prov/csi-provisioner"
    echo "export SNAPSHOT_CRDS=$crds"
}

# Sourced by tests/k8s/build-node-tools.sh for its helpers; run, it builds and prints.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
