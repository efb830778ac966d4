#!/usr/bin/env bash
# One-command snapcsi on kind (needs Docker, kind and kubectl on the machine):
#   builds the image, loads it into the kind cluster, installs the snapshot CRDs and the
#   snapshot-controller, deploys the `kind` overlay (local backend), then runs the example:
#   PVC -> pod writes a file -> VolumeSnapshot -> readyToUse -> PVC from the snapshot ->
#   pod reads the same file.
#
# Usage: deploy/kind/up.sh [cluster-name]     (default cluster: snapcsi; created if missing)
#
# Needs a registry (kind's node image, the base images of our Dockerfile) and GitHub (the CRDs
# and snapshot-controller manifests below). Where neither can be reached (this project's CI),
# tests/k8s/node-e2e.sh runs the same overlay and these example manifests on a real kubelet
# (its scenario `kind-example`); there kind v0.33.0 stops at `kind create cluster` pulling
# kindest/node, and `kind build node-image` at pulling kindest/base (and, given a base, at its
# `ctr content fetch` of etcd, coredns, pause and kindnetd).
set -euo pipefail

cluster=${1:-snapcsi}
snapshotter_version=${SNAPSHOTTER_VERSION:-v8.6.0}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
say() { printf 'kind: %s\n' "$*"; }
for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || { say "$tool is needed"; exit 1; }
done

if ! kind get clusters | grep -qx "$cluster"; then
    say "creating cluster $cluster"
    kind create cluster --name "$cluster"
fi
kubectl config use-context "kind-$cluster" >/dev/null

say "building image snapcsi:dev"
docker build -t snapcsi:dev "$root"
kind load docker-image snapcsi:dev --name "$cluster"

say "installing snapshot CRDs and snapshot-controller $snapshotter_version"
base=https://raw.githubusercontent.com/kubernetes-csi/external-snapshotter/$snapshotter_version
for crd in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
    kubectl apply -f "$base/client/config/crd/snapshot.storage.k8s.io_$crd.yaml"
done
for crd in volumegroupsnapshotclasses volumegroupsnapshotcontents volumegroupsnapshots; do
    kubectl apply -f "$base/client/config/crd/groupsnapshot.storage.k8s.io_$crd.yaml"
done
kubectl apply -f "$base/deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml"
kubectl apply -f "$base/deploy/kubernetes/snapshot-controller/setup-snapshot-controller.yaml"
# Group snapshots (VolumeGroupSnapshot) are behind a feature gate of snapshot-controller.
kubectl -n kube-system patch deployment snapshot-controller --type json -p \
    '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--feature-gates=CSIVolumeGroupSnapshot=true"}]'

say "deploying snapcsi (overlay kind)"
kubectl apply -k "$root/deploy/overlays/kind"
kubectl -n snapcsi rollout status deployment/snapcsi-controller --timeout=180s
kubectl -n snapcsi rollout status daemonset/snapcsi-node --timeout=180s

say "running the example"
kubectl apply -f "$root/deploy/kind/example.yaml"
kubectl wait --for=condition=Ready pod/snapcsi-writer --timeout=180s
kubectl exec snapcsi-writer -- sh -c 'echo "hello from snapcsi" > /data/hello.txt && sync'
kubectl apply -f "$root/deploy/kind/example-snapshot.yaml"
kubectl wait --for=jsonpath='{.status.readyToUse}'=true volumesnapshot/snapcsi-example --timeout=120s
kubectl apply -f "$root/deploy/kind/example-restore.yaml"
kubectl wait --for=condition=Ready pod/snapcsi-reader --timeout=180s
got=$(kubectl exec snapcsi-reader -- cat /data/hello.txt)
if [[ $got == "hello from snapcsi" ]]; then
    say "restored volume holds the file written before the snapshot: OK"
else
    say "restored volume holds '$got', expected 'hello from snapcsi'"
    exit 1
fi
