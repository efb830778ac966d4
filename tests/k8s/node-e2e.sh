#!/usr/bin/env bash
# snapcsi on a real node: pods mount snapcsi volumes through a real kubelet.
#
#   control plane (host processes, as the cluster around a driver is): etcd, kube-apiserver
#     (Node,RBAC authorization), kube-controller-manager (default controllers), kube-scheduler,
#     snapshot-controller (group snapshots on), all on 127.0.0.1
#   node (host processes, as a node's own daemons are): containerd v2 + runc, kubelet
#     (cgroupfs, `failCgroupV1: false`), registered as node `e2e-node`
#   pod network: a bridge of this run (snapcsie<N>, 10.244.<N>.1/24, no uplink, no default route
#     in pods) through the CNI bridge + host-local plugins; the node's InternalIP is the bridge's
#     address, since the kubelet refuses a loopback node IP
#   snapcsi: deploy/overlays/e2e (= the kind overlay + what this node needs) as pods of the image
#     built from our Dockerfile, the real sidecars in images made here (tests/k8s/images.sh),
#     the node plugin registered by node-driver-registrar through the kubelet's plugin watcher
# then the scenarios of tests/k8s/node-scenarios.sh, each printing `scenario <name>: OK`.
#
# Usage: tests/k8s/node-e2e.sh   (root; builds the tools on first use, cached by version)
#   E2E_KEEP=1        keep the work directory (logs) even on success
#   SCENARIOS="a b"   run only these scenarios (default: all)
#   E2E_SNAPCSI_ARCHIVE=DIR/snapcsi.tar   use that archive (from an earlier images.sh) instead
#                     of building the Dockerfile: for iterating on the scenarios only
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
say() { printf 'node-e2e: %s\n' "$*"; }
t0=$SECONDS
step_start=$SECONDS
step() { say "step $1: $((SECONDS - step_start))s"; step_start=$SECONDS; }

# Built here or by the caller (tests/run.sh builds the node tools in the background).
eval "$("$root/tests/k8s/build-tools.sh")"
eval "$("$root/tests/k8s/build-node-tools.sh")"
step "tools"

work=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-node.XXXXXX")
run=$(mktemp -d /run/snapcsi-node.XXXXXX)
kubelet_root=$work/kubelet
data=$work/snapcsi-data
failed=1
pids=()
cgroup_dirs=()
declare -A pid_of=()

start() { # start NAME COMMAND...: runs in the background, log in $work/NAME.log
    local name=$1; shift
    "$@" >>"$work/$name.log" 2>&1 &
    pids+=($!)
    pid_of[$name]=$!
}
ctr() { "$CONTAINERD_BIN_DIR/ctr" --address "$run/containerd.sock" -n k8s.io "$@"; }
stop_pid() { # stop_pid PID: TERM, 5 s, KILL
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    set +e
    if ((failed)) && [[ -n ${KUBECONFIG:-} ]]; then
        "$KUBECTL" get pods -A -o wide >"$work/pods-at-failure.txt" 2>&1
        "$KUBECTL" get events -A --sort-by=.lastTimestamp >"$work/events-at-failure.txt" 2>&1
        local pod
        for pod in $("$KUBECTL" get pods -n snapcsi -o name 2>/dev/null); do
            "$KUBECTL" logs -n snapcsi "$pod" --all-containers --prefix >"$work/logs-${pod#pod/}.txt" 2>&1
        done
    fi
    [[ -n ${images_pid:-} ]] && kill "$images_pid" 2>/dev/null
    # Pods first, through the kubelet, so the driver unpublishes and unstages what it can.
    if [[ -n ${pid_of[kubelet]:-} ]] && kill -0 "${pid_of[kubelet]}" 2>/dev/null; then
        "$KUBECTL" delete pods --all -n default --grace-period=1 --wait=false >/dev/null 2>&1
        "$KUBECTL" wait --for=delete pods --all -n default --timeout=60s >/dev/null 2>&1
        stop_pid "${pid_of[kubelet]}"
    fi
    # Then every container left (the driver's): their shims exit with their last task.
    if [[ -S $run/containerd.sock ]]; then
        local task
        for task in $(ctr tasks ls -q 2>/dev/null); do
            ctr tasks kill -s SIGKILL "$task" >/dev/null 2>&1
        done
        sleep 1
        for task in $(ctr tasks ls -q 2>/dev/null); do ctr tasks delete -f "$task" >/dev/null 2>&1; done
        for task in $(ctr containers ls -q 2>/dev/null); do ctr containers delete "$task" >/dev/null 2>&1; done
    fi
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
    # What the driver or the runtime left: mounts, loop devices, the bridge.
    local mount
    findmnt -rn -o TARGET | grep -E "^($work|$run)" | sort -r | while read -r mount; do
        fsfreeze --unfreeze "$mount" 2>/dev/null
        umount -l "$mount" 2>/dev/null
    done
    # Loop devices on our images: by inode, since the kernel names a file attached inside a
    # container by its path there.
    local inodes
    inodes=" $(find "$work" -name '*.img' -printf '%i ' 2>/dev/null)"
    losetup -l -n -O NAME,BACK-INO | while read -r dev ino; do
        [[ $inodes == *" $ino "* ]] && losetup -d "$dev" 2>/dev/null
    done
    [[ -n ${bridge:-} ]] && ip link del "$bridge" 2>/dev/null
    for dir in "${cgroup_dirs[@]}"; do find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null; done
    rm -rf "$run"
    if [[ ${E2E_KEEP:-0} == 1 || $failed == 1 ]]; then
        say "logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- images ---
# The images are built while the control plane starts; joined before the node needs them.
images=$work/images
"$root/tests/k8s/images.sh" "$images" >"$work/images.log" 2>&1 &
images_pid=$!

# ------------------------------------------------------------ network ---
# A /24 of 10.244.0.0/16 that no route on this machine uses yet.
for ((i = 0; i < 50; i++)); do
    n=$((RANDOM % 250 + 1))
    [[ -z $(ip route show "10.244.$n.0/24") ]] && ! ip link show "snapcsie$n" >/dev/null 2>&1 && break
done
bridge=snapcsie$n
node_ip=10.244.$n.1
ip link add "$bridge" type bridge
ip addr add "$node_ip/24" dev "$bridge"
ip link set "$bridge" up
# The bridge's address is set above; isGateway stays off so the plugin neither readdresses it
# nor turns on the host's IP forwarding. Pods get no default route: they reach their subnet.
mkdir -p "$work/cni/net.d"
cat >"$work/cni/net.d/10-snapcsi-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "snapcsi-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.$n.0/24", "gateway": "$node_ip"}]],
        "dataDir": "$work/cni/ipam"
      }
    }
  ]
}
EOF

# ------------------------------------------------------------ control plane ---
etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
openssl genrsa -out "$work/sa.key" 2048 2>/dev/null
openssl rsa -in "$work/sa.key" -pubout -out "$work/sa.pub" 2>/dev/null
admin_token=$(head -c 24 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9')
node_token=$(head -c 24 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9')
{
    echo "$admin_token,e2e-admin,e2e-admin,system:masters"
    echo "$node_token,system:node:e2e-node,system:node:e2e-node,system:nodes"
} >"$work/tokens.csv"
kubeconfig() { # kubeconfig TOKEN
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$api_port
    insecure-skip-tls-verify: true
users:
- name: user
  user:
    token: $1
contexts:
- name: e2e
  context: {cluster: e2e, user: user}
current-context: e2e
EOF
}
kubeconfig "$admin_token" >"$work/kubeconfig"
kubeconfig "$node_token" >"$work/kubelet.kubeconfig"
export KUBECONFIG=$work/kubeconfig

start etcd "$ETCD" --name e2e --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$peer_port" --unsafe-no-fsync
wait_for 30 etcd curl -sf "http://127.0.0.1:$etcd_port/health"
start kube-apiserver "$KUBE_APISERVER" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$work/certs" --token-auth-file "$work/tokens.csv" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$work/sa.pub" \
    --service-account-signing-key-file "$work/sa.key" --service-cluster-ip-range 10.96.0.0/24 \
    --kubelet-preferred-address-types InternalIP --allow-privileged=true
wait_for 90 kube-apiserver "$KUBECTL" get --raw /readyz
# The self-signed serving certificate is what pods must trust (kube-root-ca.crt).
start kube-controller-manager "$KUBE_CONTROLLER_MANAGER" --kubeconfig "$KUBECONFIG" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --root-ca-file "$work/certs/apiserver.crt"
start kube-scheduler "$KUBE_SCHEDULER" --kubeconfig "$KUBECONFIG" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0
for crd in "$SNAPSHOT_CRDS"/*storage.k8s.io_*.yaml; do
    "$KUBECTL" apply -f "$crd" >>"$work/crds.log"
done
"$KUBECTL" wait --for condition=established --timeout=60s crd --all >/dev/null
start snapshot-controller "$SNAPSHOT_CONTROLLER" --kubeconfig "$KUBECONFIG" --leader-election=false \
    --feature-gates=CSIVolumeGroupSnapshot=true
step "control plane"

# ------------------------------------------------------------ node ---
cat >"$work/containerd.toml" <<EOF
version = 3
root = "$work/containerd"
state = "$run/containerd"
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'snapcsi.dev/e2e/pause:1'
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under = '$run/netns'
  # This machine gives even root no CAP_SYS_RESOURCE: no oom_score_adj below our own (0),
  # where containerd would give each pod sandbox -998.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$RUNC'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['$CNI_BIN_DIR']
    conf_dir = '$work/cni/net.d'
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
EOF
# Our shim before any other containerd's on PATH (docker.io brings Debian's).
start containerd env PATH="$CONTAINERD_BIN_DIR:$PATH" "$CONTAINERD_BIN_DIR/containerd" \
    --config "$work/containerd.toml"
wait_for 30 containerd ctr version

wait "$images_pid" || { cat "$work/images.log"; say "building the images failed"; exit 1; }
sed 's/^/node-e2e: /' "$work/images.log"
for image in "$images"/*.tar; do
    ctr images import "$image" >>"$work/import.log" 2>&1
done
busybox_image=$(cat "$images/busybox.name")
image_mb=$(($(cat "$images/snapcsi.size") / 1000000))
step "images"

# The kubelet's pods live under a cgroup of this run: two kubelets sharing /kubepods would
# each kill the other's pods as orphans.
cgroup_root=/snapcsi-e2e-$n
cgroup_dirs=()
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    cgroup_dirs=("/sys/fs/cgroup$cgroup_root")
    mkdir -p "${cgroup_dirs[0]}"
    sed 's/\([a-z_]*\)/+\1/g' /sys/fs/cgroup/cgroup.subtree_control >"${cgroup_dirs[0]}/cgroup.subtree_control"
else
    for dir in /sys/fs/cgroup/*/; do
        [[ -e $dir/cgroup.procs && $dir != */unified/ ]] || continue
        dir=${dir%/}$cgroup_root
        cgroup_dirs+=("$dir")
        mkdir -p "$dir"
        # A new cpuset has no CPU and no memory node until given its parent's.
        if [[ -e $dir/cpuset.cpus ]]; then
            cat "$(dirname "$dir")/cpuset.cpus" >"$dir/cpuset.cpus"
            cat "$(dirname "$dir")/cpuset.mems" >"$dir/cpuset.mems"
        fi
    done
fi
kubelet_port=$(free_port); healthz_port=$(free_port)
cat >"$work/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine is on cgroup v1, which kubelet >= 1.35 refuses unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
failSwapOn: false
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$run/containerd.sock
# Images exist only as imported here: never collect them, never evict for a busy shared disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
resolvConf: ""
syncFrequency: 10s
fileCheckFrequency: 10s
EOF
kubelet_args=(--config "$work/kubelet.yaml" --kubeconfig "$work/kubelet.kubeconfig"
    --root-dir "$kubelet_root" --cert-dir "$work/kubelet-pki" --hostname-override e2e-node
    --node-ip "$node_ip" --v 2)
start kubelet "$KUBELET" "${kubelet_args[@]}"
wait_for 60 "node e2e-node Ready" "$KUBECTL" wait --for condition=Ready node/e2e-node --timeout=1s
step "node"

# ------------------------------------------------------------ snapcsi ---
"$KUBECTL" kustomize deploy/overlays/e2e \
    | sed -E -e "s#/var/lib/kubelet#$kubelet_root#g" -e "s#^( +)path: /var/lib/snapcsi\$#\\1path: $data#" \
        -e "s#@API_PORT@#$api_port#g" >"$work/snapcsi.yaml"
"$KUBECTL" apply -f "$work/snapcsi.yaml" >"$work/deploy.log"
"$KUBECTL" -n snapcsi rollout status daemonset/snapcsi-node --timeout=120s
"$KUBECTL" -n snapcsi rollout status deployment/snapcsi-controller --timeout=120s
"$KUBECTL" -n snapcsi rollout status deployment/snapcsi-scheduler --timeout=120s
# node-driver-registrar -> kubelet plugin watcher -> CSINode.
wait_for 60 "snapcsi.dev in CSINode e2e-node" \
    sh -c "'$KUBECTL' get csinode e2e-node -o jsonpath='{.spec.drivers[*].name}' | grep -qx snapcsi.dev"
step "snapcsi deployed"

# ------------------------------------------------------------ scenarios ---
cargo build --quiet
SNAPCSI_BIN=${CARGO_TARGET_DIR:-$root/target}/debug/snapcsi
restart_kubelet() {
    stop_pid "${pid_of[kubelet]}"
    start kubelet "$KUBELET" "${kubelet_args[@]}"
}
# shellcheck source=tests/k8s/node-scenarios.sh
source "$root/tests/k8s/node-scenarios.sh"
run_scenarios
step "scenarios"
failed=0
say "all green in $((SECONDS - t0))s; image snapcsi:dev ${image_mb} MB"
