#!/usr/bin/env bash
# csi-sanity's Controller and Identity suites against the softlayer backend, served by the
# strict simulator tests/sims/softlayer.py.
#
# What csi-sanity can cover here: the softlayer backend cannot order volumes (see README,
# "Backend: softlayer"), so it advertises CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS and
# GET_SNAPSHOT but not CREATE_DELETE_VOLUME. csi-sanity skips every volume spec by itself;
# its snapshot specs that first make a volume with CreateVolume cannot run and are skipped
# below by name (they would fail on UNIMPLEMENTED, not on snapshot behaviour). Everything
# else runs: argument checks, ListSnapshots (empty, unknown ids, paging on no data),
# GetSnapshot/DeleteSnapshot of unknown ids, ValidateVolumeCapabilities of
# unknown volumes, Identity. The snapshot behaviours those skipped
# specs check are covered against the same simulator by tests/softlayer.rs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-softlayer.XXXXXX")
sim_pid=""
cleanup() {
    if [[ -n $sim_pid ]]; then
        kill "$sim_pid" 2>/dev/null || true
        wait "$sim_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

api_key=sanity-key-$RANDOM$RANDOM
python3 "$root/tests/sims/softlayer.py" --port 0 --username SL-sanity --api-key "$api_key" \
    --volumes 2 >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
for _ in $(seq 1 100); do
    [[ -s $work/sim.out ]] && break
    kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.err" >&2; exit 1; }
    sleep 0.1
done
port=$(sed -n 's/^LISTENING \([0-9]*\)$/\1/p' "$work/sim.out" | head -n 1)
[[ -n $port ]] || { echo "sanity-softlayer: simulator did not start" >&2; cat "$work/sim.err" >&2; exit 1; }
echo "sanity-softlayer: simulator on 127.0.0.1:$port (pid $sim_pid)"

config=$work/config.toml
cat >"$config" <<TOML
cluster_id = "sanity"
[backends.sl]
type = "softlayer"
endpoint = "http://127.0.0.1:$port/rest/v3.1"
username = "SL-sanity"
api_key = "$api_key"
TOML

# Specs that need CreateVolume (see the header): the snapshot ones, and two
# ValidateVolumeCapabilities specs, which csi-sanity runs whatever the capabilities.
needs_volumes='should return snapshots that match the specified snapshot id|should return snapshots that match the specified source volume id|check the presence of new snapshots in the snapshot list|should return next token when a limited number of entries are requested|should return snapshot that match the specified snapshot id|DeleteSnapshot \[Controller Server\] should return appropriate values|with already existing name and same source volume ID|with already existing name and different source volume ID|creating snapshot with maximum-length name|ValidateVolumeCapabilities.*(should fail when no volume capabilities are provided|should return appropriate values)'
SANITY_ACCESS_TYPES=mount SANITY_SKIP_NODE=1 SNAPCSI_SERVE_ARGS="--config $config" \
    "$root/tests/csi-sanity.sh" -ginkgo.skip="$needs_volumes" "$@"
