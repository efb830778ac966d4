#!/usr/bin/env bash
# csi-sanity's Controller, Node and Identity suites against the driver with the Cinder backend
# on a whole real cloud: Keystone 30, Cinder 29, Nova 34 and Placement 16 from PyPI, started
# here by tests/peers/nova/nova-peer.sh (installed into ~/.cache/snapcsi/ on first use). The
# driver is the node of the cloud's first server (--node-id is that server's id):
# ControllerPublishVolume attaches through Nova, whose fake virt driver (with the peer's
# simulated hypervisor) makes a loop device appear under the disk's by-id name, which the
# node half then finds, formats, mounts and grows. One cloud; the mount access type by default
# (the attach path is the same for block, and the block node path is judged by
# tests/csi-sanity.sh on the local backend): SANITY_ACCESS_TYPES="mount block" runs both.
# Cinder sizes volumes in whole GiB, so the test sizes are 1 GiB and 2 GiB.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-sanity-nova.XXXXXX")
cleanup() {
    "$root/tests/peers/nova/nova-peer.sh" stop "$work/peer" || true
    rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS
"$root/tests/peers/nova/nova-peer.sh" start "$work/peer" </dev/null >"$work/peer-start.log" 2>&1 \
    || { tail -40 "$work/peer-start.log"; echo "sanity-nova: the cloud did not start" >&2; exit 1; }
echo "sanity-nova: Keystone + Cinder + Nova up in $((SECONDS - started))s"
# shellcheck disable=SC1091
source "$work/peer/peer.env"
config=$work/snapcsi.toml
cat >"$config" <<TOML
cluster_id = "sanity"

[backends.cinder]
type = "cinder"
auth_type = "password"
auth_url = "$KEYSTONE_URL"
username = "$KEYSTONE_DEMO_USER"
user_domain_name = "Default"
password = "$KEYSTONE_DEMO_PASSWORD"
project_name = "$KEYSTONE_DEMO_PROJECT"
project_domain_name = "Default"
# csi-sanity never repeats a call the way the attacher does, so wait as long as a busy
# machine's Nova may take instead of answering UNAVAILABLE after the default 60 s.
attach_wait_seconds = 300
detach_wait_seconds = 300
TOML
SANITY_NODE_ID=$NOVA_SERVER_A \
    SNAPCSI_SERVE_ARGS="--config $config --disk-by-id-dir $NOVA_BY_ID_DIR" \
    SANITY_VOLUME_SIZE=$((1 << 30)) SANITY_EXPAND_SIZE=$((2 << 30)) \
    SANITY_ACCESS_TYPES=${SANITY_ACCESS_TYPES:-mount} \
    "$root/tests/csi-sanity.sh" "$@"
