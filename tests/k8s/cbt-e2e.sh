#!/usr/bin/env bash
# Changed block tracking end to end, on the cluster tests/k8s/e2e.sh has up (it runs this
# after its own scenarios): the real external-snapshot-metadata sidecar (v1.1.0, built from
# the shared peers by tests/tools/build-peers.sh) in front of snapcsi, and its real client
# tools through it.
#   1. deploy/components/snapshot-metadata, rendered into the kind overlay with a fresh CA,
#      passes the API server's server-side dry run (with the SnapshotMetadataService CRD);
#   2. its RBAC and SnapshotMetadataService are applied for real, and the sidecar runs with a
#      token of the controller's ServiceAccount (so the component's RBAC is what it has), TLS
#      with a certificate of that CA, and snapcsi's CSI socket;
#   3. tests/kube_cbt_e2e.rs writes blocks through the node path, takes two VolumeSnapshots
#      and checks what snapshot-metadata-lister and -verifier get through the sidecar.
# The sidecar listens on every address (`--port` takes no host), and servers here may listen
# on 127.0.0.1 only: it runs in a network namespace of its own, reaching the API server through
# two tests/k8s/bridge.py relays over a unix socket; the client tools join that namespace.
#
# Needs (exported by e2e.sh): KUBECONFIG, KUBECTL, SNAPCSI_E2E_SOCKET, SNAPCSI_E2E_DATA,
# E2E_WORK (a directory e2e.sh cleans up).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
say() { printf 'e2e cbt: %s\n' "$*"; }
: "${KUBECONFIG:?} ${KUBECTL:?} ${SNAPCSI_E2E_SOCKET:?} ${SNAPCSI_E2E_DATA:?} ${E2E_WORK:?}"

eval "$("$root/tests/tools/build-peers.sh" metadata)"
work=$(mktemp -d "$E2E_WORK/cbt.XXXXXX")
pids=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ -f $work/netns-bridge.pid ]]; then
        kill "$(cat "$work/netns-bridge.pid")" 2>/dev/null || true
    fi
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# -- 1. the component, checked by the API server ---------------------------------------------
"$KUBECTL" apply -f "$SNAPSHOT_METADATA_CRD" >"$work/crd.log"
"$KUBECTL" wait --for condition=established --timeout=60s \
    crd/snapshotmetadataservices.cbt.storage.k8s.io >/dev/null

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=snapcsi e2e CA" \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=snapcsi-snapshot-metadata.snapcsi" \
    -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:snapcsi-snapshot-metadata.snapcsi,DNS:snapcsi-snapshot-metadata.snapcsi.svc,IP:127.0.0.1\n' \
    >"$work/san.ext"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days 1 -extfile "$work/san.ext" -out "$work/tls.crt" 2>/dev/null
ca_b64=$(base64 -w0 "$work/ca.crt")

# An overlay that turns the component on, as the README tells users to.
overlay=$work/overlay
mkdir -p "$overlay"
cat >"$overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$overlay" "$root/deploy/overlays/kind")
components:
  - $(realpath --relative-to="$overlay" "$root/deploy/components/snapshot-metadata")
patches:
  - target: {kind: SnapshotMetadataService, name: snapcsi.dev}
    patch: |-
      - op: replace
        path: /spec/caCert
        value: $ca_b64
EOF
"$KUBECTL" kustomize "$overlay" >"$work/render.yaml"
"$KUBECTL" apply --dry-run=server -f "$work/render.yaml" >"$work/dry-run.log"
for kind in SnapshotMetadataService Service ClusterRole ClusterRoleBinding; do
    grep -q "^kind: $kind$" "$work/render.yaml" || { say "render has no $kind"; exit 1; }
done
grep -q 'name: csi-snapshot-metadata' "$work/render.yaml" || { say "no sidecar container"; exit 1; }
say "deploy: kind overlay + snapshot-metadata component renders and passes server-side dry run ($(grep -c . "$work/dry-run.log") objects)"

# -- 2. RBAC and the SnapshotMetadataService for real; the sidecar -----------------------------
# Only the access-control objects and the service object: no kubelet runs pods here.
awk -v keep='^kind: (ServiceAccount|ClusterRole|ClusterRoleBinding|Role|RoleBinding|SnapshotMetadataService)$' '
    /^---$/ { if (doc != "" && ok) printf "%s---\n", doc; doc = ""; ok = 0; next }
    { doc = doc $0 "\n"; if ($0 ~ keep) ok = 1 }
    END { if (doc != "" && ok) printf "%s", doc }' "$work/render.yaml" >"$work/apply.yaml"
"$KUBECTL" apply -f "$work/apply.yaml" >"$work/apply.log"
port=50051
"$KUBECTL" patch snapshotmetadataservice snapcsi.dev --type merge \
    -p "{\"spec\":{\"address\":\"127.0.0.1:$port\"}}" >/dev/null

server=$("$KUBECTL" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
api_port=${server##*:}
token=$("$KUBECTL" create token snapcsi-controller -n snapcsi --duration 1h)
cat >"$work/sidecar.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}
users:
- name: snapcsi-controller
  user: {token: "$token"}
contexts:
- name: e2e
  context: {cluster: e2e, user: snapcsi-controller}
current-context: e2e
EOF

python3 "$root/tests/k8s/bridge.py" "unix:$work/api.sock" "tcp:127.0.0.1:$api_port" \
    >"$work/bridge.log" 2>&1 &
pids+=($!)
for ((i = 0; i < 100; i++)); do [[ -S $work/api.sock ]] && break; sleep 0.1; done
# unshare execs the shell in a new network namespace (only lo); the shell starts the inner
# relay and becomes the sidecar, so $! is the sidecar and the namespace lives as long as it.
# shellcheck disable=SC2016  # the inner script expands its own arguments
unshare --net -- bash -c '
    set -e
    ip link set lo up
    python3 "$1" "tcp:127.0.0.1:$2" "unix:$3/api.sock" >"$3/netns-bridge.log" 2>&1 &
    echo $! >"$3/netns-bridge.pid"
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break
        sleep 0.1
    done
    shift 3
    exec "$@"' cbt-netns "$root/tests/k8s/bridge.py" "$api_port" "$work" \
    "$CSI_SNAPSHOT_METADATA" --kubeconfig "$work/sidecar.kubeconfig" \
    --csi-address "$SNAPCSI_E2E_SOCKET" --port "$port" \
    --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" \
    --http-endpoint 127.0.0.1:8080 --v=4 \
    >"$work/sidecar.log" 2>&1 &
sidecar=$!
pids+=("$sidecar")
ready=0
for ((i = 0; i < 150; i++)); do
    if nsenter -t "$sidecar" -n curl -sf http://127.0.0.1:8080/health >/dev/null 2>&1; then
        ready=1
        break
    fi
    kill -0 "$sidecar" 2>/dev/null || break
    sleep 0.2
done
if ((!ready)); then
    say "the sidecar did not become ready; its log:"
    tail -n 30 "$work/sidecar.log"
    exit 1
fi
say "sidecar $(basename "$CSI_SNAPSHOT_METADATA") up (pid $sidecar, own network namespace, TLS, controller ServiceAccount token)"

# -- 3. the scenario ----------------------------------------------------------------------------
status=0
SNAPCSI_E2E=1 SNAPCSI_CBT_NETNS=$sidecar SNAPCSI_CBT_WORK=$work \
    SNAPSHOT_METADATA_LISTER=$SNAPSHOT_METADATA_LISTER \
    SNAPSHOT_METADATA_VERIFIER=$SNAPSHOT_METADATA_VERIFIER \
    cargo test --quiet --test kube_cbt_e2e -- --include-ignored --nocapture || status=$?
if ((status)); then
    say "failed; the sidecar's last log lines:"
    tail -n 40 "$work/sidecar.log"
fi
exit "$status"
