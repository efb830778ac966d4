#!/usr/bin/env bash
# csi-sanity's Controller and Identity suites against the deltacloud backend, served by the
# strict simulator tests/sims/deltacloud.py (driver "ec2", provider "us-east-1"). The backend
# creates and deletes volumes and snapshots and restores snapshots, so csi-sanity's volume
# and snapshot specs run in full; clone and expand are not offered and are skipped by
# csi-sanity itself.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-deltacloud.XXXXXX")
sim_pid=""
cleanup() {
    if [[ -n $sim_pid ]]; then
        kill "$sim_pid" 2>/dev/null || true
        wait "$sim_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

password=sanity-pw-$RANDOM$RANDOM
python3 "$root/tests/sims/deltacloud.py" --port 0 --username sanity --password "$password" \
    --driver ec2 --provider us-east-1 --realm us-east-1a >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
for _ in $(seq 1 100); do
    [[ -s $work/sim.out ]] && break
    kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.err" >&2; exit 1; }
    sleep 0.1
done
port=$(sed -n 's/^LISTENING \([0-9]*\)$/\1/p' "$work/sim.out" | head -n 1)
[[ -n $port ]] || { echo "sanity-deltacloud: simulator did not start" >&2; cat "$work/sim.err" >&2; exit 1; }
echo "sanity-deltacloud: simulator on 127.0.0.1:$port (pid $sim_pid)"

config=$work/config.toml
cat >"$config" <<TOML
cluster_id = "sanity"
[backends.dc]
type = "deltacloud"
endpoint = "http://127.0.0.1:$port/api"
username = "sanity"
password = "$password"
driver = "ec2"
provider = "us-east-1"
realm_id = "us-east-1a"
TOML

# Deltacloud sizes volumes in whole GB: csi-sanity's test volume is 1 GiB.
SANITY_VOLUME_SIZE=$((1 << 30)) \
SANITY_ACCESS_TYPES=mount SANITY_SKIP_NODE=1 SNAPCSI_SERVE_ARGS="--config $config" \
    "$root/tests/csi-sanity.sh" "$@"
