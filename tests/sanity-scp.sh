#!/usr/bin/env bash
# csi-sanity's Controller and Identity suites against the SCP backend, talking to the strict
# SCP simulator (tests/sims/scp.py) started here on 127.0.0.1 and stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command -v python3 >/dev/null 2>&1 || { echo "sanity-scp.sh: python3 is missing (run tests/tools/install-prereqs.sh)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-scp.XXXXXX")
sim_pid=""
cleanup() {
    if [[ -n $sim_pid ]]; then
        kill "$sim_pid" 2>/dev/null || true
        wait "$sim_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

access_key="sanity-ak-$RANDOM$RANDOM"
secret_key="sanity-sk-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"

# Volumes are `creating` (and `extending`) for SCP_VOLUME_DELAY seconds before `available`,
# as on the service: CreateVolume and ControllerExpandVolume must wait for them. Snapshots are
# ready at once: csi-sanity does not wait for ready_to_use before restoring a snapshot.
volume_delay=${SCP_VOLUME_DELAY:-0.5}
python3 "$root/tests/sims/scp.py" --port 0 --credential "$access_key:$secret_key" \
    --volume-delay "$volume_delay" >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
port=""
for _ in $(seq 1 100); do
    if read -r word value <"$work/sim.out" 2>/dev/null && [[ $word == LISTENING ]]; then
        port=$value
        break
    fi
    kill -0 "$sim_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $port ]]; then
    echo "sanity-scp.sh: the simulator did not start" >&2
    cat "$work/sim.err" >&2
    exit 1
fi
echo "sanity-scp.sh: SCP simulator on 127.0.0.1:$port (pid $sim_pid), volumes creating for ${volume_delay}s"

config=$work/snapcsi-scp.toml
cat >"$config" <<TOML
cluster_id = "sanity"

[backends.scp]
type = "scp"
endpoint = "http://127.0.0.1:$port"
access_key = "$access_key"
secret_key = "$secret_key"
api_version = "1.3"
TOML

# SCP sizes volumes in whole GB (GiB), at least 8 (VolumeCreateRequest.size minimum): test
# with 8 GiB volumes grown to 16 GiB.
SANITY_VOLUME_SIZE=$((8 << 30)) SANITY_EXPAND_SIZE=$((16 << 30)) \
SANITY_ACCESS_TYPES=mount SANITY_SKIP_NODE=1 SNAPCSI_SERVE_ARGS="--config $config" \
    "$root/tests/csi-sanity.sh" "$@"
