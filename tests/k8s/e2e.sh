#!/usr/bin/env bash
# VolumeSnapshot end to end on real Kubernetes pieces, all on 127.0.0.1, no Docker, no kubelet:
#   etcd + kube-apiserver + kube-controller-manager (PV binder), the snapshot CRDs,
#   snapshot-controller, csi-provisioner and csi-snapshotter sidecars, and snapcsi (local
#   backend) on a unix socket shared with the sidecars.
# Then: every manifest in deploy/ is applied with --dry-run=server (schemas checked by the real
# API server), and the scenarios in tests/kube_e2e.rs and tests/kube_group_e2e.rs (group
# snapshots: CSIVolumeGroupSnapshot feature gate on both snapshot controllers) run against it,
# then a SnapshotSchedule with the `snapcsi scheduler` binary (tests/kube_scheduler_e2e.rs),
# then changed block tracking through the real external-snapshot-metadata sidecar
# (tests/k8s/cbt-e2e.sh).
#
# Usage: tests/k8s/e2e.sh   (root; builds the tools on first use, cached by version)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
say() { printf 'e2e: %s\n' "$*"; }
phase_start=$SECONDS
phase() { say "phase $1: $((SECONDS - phase_start))s"; phase_start=$SECONDS; }

eval "$("$root/tests/k8s/build-tools.sh")"
phase "build-tools"

work=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-e2e.XXXXXX")
pids=()
cleanup() {
    local pid i
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # kube-apiserver drains for a long time on SIGTERM: give everyone 5 s, then SIGKILL.
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Anything the driver left mounted or attached under the work dir.
    findmnt -rn -o TARGET | grep "^$work" | sort -r | xargs -r -n1 umount 2>/dev/null || true
    losetup -l -n -O NAME,BACK-FILE | awk -v p="$work" 'index($2, p) == 1 {print $1}' \
        | xargs -r -n1 losetup -d 2>/dev/null || true
    if [[ ${E2E_KEEP:-0} == 1 || ${failed:-0} == 1 ]]; then
        say "logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local i
    for ((i = 0; i < limit * 5; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    say "timed out waiting for $what"
    return 1
}
start() { # start NAME COMMAND...: runs in the background, log in $work/NAME.log
    local name=$1; shift
    "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
}

etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
openssl rsa -in "$work/sa.key" -pubout -out "$work/sa.pub" 2>/dev/null
token=$(head -c 24 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9')
echo "$token,e2e-admin,e2e-admin,system:masters" >"$work/tokens.csv"
cat >"$work/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$api_port
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $token
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
EOF
export KUBECONFIG=$work/kubeconfig

start etcd "$ETCD" --name e2e --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port"
wait_for 30 etcd curl -sf "http://127.0.0.1:$etcd_port/health"
start kube-apiserver "$KUBE_APISERVER" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$work/certs" --token-auth-file "$work/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$work/sa.pub" \
    --service-account-signing-key-file "$work/sa.key" --service-cluster-ip-range 10.96.0.0/24 \
    --allow-privileged=true
wait_for 90 kube-apiserver "$KUBECTL" get --raw /readyz
phase "control plane up"

start kube-controller-manager "$KUBE_CONTROLLER_MANAGER" --kubeconfig "$KUBECONFIG" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --controllers persistentvolume-binder-controller,persistentvolume-protection-controller,persistentvolumeclaim-protection-controller,serviceaccount-controller
for crd in "$SNAPSHOT_CRDS"/*storage.k8s.io_*.yaml; do
    "$KUBECTL" apply -f "$crd" >>"$work/crds.log"
done
# snapcsi's own SnapshotSchedule CRD, so deploy/kind/example-schedule.yaml can be dry-run.
"$KUBECTL" apply -f deploy/base/snapshotschedule-crd.yaml >>"$work/crds.log"
"$KUBECTL" wait --for condition=established --timeout=60s crd --all >/dev/null
start snapshot-controller "$SNAPSHOT_CONTROLLER" --kubeconfig "$KUBECONFIG" --leader-election=false \
    --feature-gates=CSIVolumeGroupSnapshot=true

cargo build --quiet
socket=$work/csi.sock
start snapcsi "${CARGO_TARGET_DIR:-$root/target}/debug/snapcsi" serve --endpoint "unix://$socket" \
    --data-dir "$work/data" --node-id e2e-node --mode all
wait_for 30 "snapcsi socket" test -S "$socket"
start csi-provisioner "$CSI_PROVISIONER" --kubeconfig "$KUBECONFIG" --csi-address "$socket" \
    --feature-gates Topology=true --extra-create-metadata --leader-election=false --timeout 60s
start csi-snapshotter "$CSI_SNAPSHOTTER" --kubeconfig "$KUBECONFIG" --csi-address "$socket" \
    --extra-create-metadata --leader-election=false --timeout 60s \
    --feature-gates=CSIVolumeGroupSnapshot=true
phase "sidecars up"

# Every manifest of every overlay, checked by the real API server. The namespace must exist
# for a server-side dry run of namespaced objects.
"$KUBECTL" create namespace snapcsi --save-config >/dev/null
for overlay in deploy/overlays/*/; do
    "$KUBECTL" kustomize "$overlay" >"$work/render-$(basename "$overlay").yaml"
    "$KUBECTL" apply --dry-run=server -f "$work/render-$(basename "$overlay").yaml" >"$work/dry-run-$(basename "$overlay").log"
    say "deploy: $(basename "$overlay") renders and passes server-side dry run ($(grep -c . "$work/dry-run-$(basename "$overlay").log") objects)"
done
# The kind example manifests too (their pods need the default service account, which the
# service-account controller would make; this cluster runs only the PV controllers).
"$KUBECTL" create serviceaccount default -n default >/dev/null 2>&1 || true
for manifest in deploy/kind/*.yaml; do
    "$KUBECTL" apply --dry-run=server -f "$manifest" >>"$work/dry-run-examples.log"
done
say "deploy: kind example manifests pass server-side dry run"
phase "deploy dry-run"

failed=1
# The scenarios are #[ignore]d (plain `cargo test` has no cluster and reports them ignored, not
# passed): --include-ignored runs them here.
SNAPCSI_E2E=1 SNAPCSI_E2E_SOCKET=$socket cargo test --quiet --test kube_e2e -- --include-ignored --nocapture
phase "scenario"
# After kube_e2e (which ends by checking the backend is empty): a VolumeGroupSnapshot of two
# labelled PVCs, both members restored.
SNAPCSI_E2E=1 SNAPCSI_E2E_SOCKET=$socket SNAPCSI_E2E_DATA=$work/data \
    cargo test --quiet --test kube_group_e2e -- --include-ignored --nocapture
phase "group scenario"
# `snapcsi scheduler` (real clock) -> VolumeSnapshot -> the sidecars above -> ready. Last: it
# reuses kube_e2e's classes and leaves its snapshots behind.
SNAPCSI_E2E=1 cargo test --quiet --test kube_scheduler_e2e -- --include-ignored --nocapture
phase "scheduled snapshot"
# ---- changed block tracking (SnapshotMetadata): its own script, on this cluster -------------
# The real external-snapshot-metadata sidecar in front of snapcsi, its component dry-run and
# its client tools: tests/k8s/cbt-e2e.sh and tests/kube_cbt_e2e.rs.
SNAPCSI_E2E_SOCKET=$socket SNAPCSI_E2E_DATA=$work/data E2E_WORK=$work "$root/tests/k8s/cbt-e2e.sh"
phase "changed block tracking"
# ---------------------------------------------------------------------------------------------
failed=0
say "all green"
