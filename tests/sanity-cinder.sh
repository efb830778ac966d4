#!/usr/bin/env bash
# csi-sanity's Controller and Identity suites against the driver with the Cinder backend,
# talking to the REAL OpenStack Cinder 29.0.0 (noauth, fake volume driver) started here by
# tests/peers/cinder/cinder-peer.sh (installed into ~/.cache/snapcsi/ on first use).
# The Node suites are skipped: a cloud volume has no attach path on this machine.
# Cinder sizes volumes in whole GiB, so the test sizes are 1 GiB and 2 GiB (the defaults of
# tests/csi-sanity.sh, 64 and 128 MiB, cannot be met exactly by a GiB cloud; later flags win).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-sanity-cinder.XXXXXX")
cleanup() {
    "$root/tests/peers/cinder/cinder-peer.sh" stop "$work/peer" || true
    rm -rf "$work"
}
trap cleanup EXIT
"$root/tests/peers/cinder/cinder-peer.sh" start "$work/peer" </dev/null
# shellcheck disable=SC1091
source "$work/peer/peer.env"
config=$work/snapcsi.toml
cat >"$config" <<TOML
cluster_id = "sanity"

[backends.cinder]
type = "cinder"
auth_type = "noauth"
endpoint = "$CINDER_URL/v3/{project_id}"
project_id = "$CINDER_PROJECT"
TOML
SANITY_ACCESS_TYPES=mount SANITY_SKIP_NODE=1 SNAPCSI_SERVE_ARGS="--config $config" \
    "$root/tests/csi-sanity.sh" \
    --csi.testvolumesize=$((1 << 30)) --csi.testvolumeexpandsize=$((2 << 30)) "$@"
