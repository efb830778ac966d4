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

# Delays of 0: csi-sanity does not wait for ready_to_use before restoring a snapshot.
python3 "$root/tests/sims/scp.py" --port 0 --credential "$access_key:$secret_key" \
    >"$work/sim.out" 2>"$work/sim.err" &
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
echo "sanity-scp.sh: SCP simulator on 127.0.0.1:$port (pid $sim_pid)"

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

# SCP sizes volumes in whole GB (GiB): test with 1 GiB volumes grown to 2 GiB.
SANITY_VOLUME_SIZE=$((1 << 30)) SANITY_EXPAND_SIZE=$((2 << 30)) \
SANITY_ACCESS_TYPES=mount SANITY_SKIP_NODE=1 SNAPCSI_SERVE_ARGS="--config $config" \
    "$root/tests/csi-sanity.sh" "$@"
