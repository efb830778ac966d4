#!/usr/bin/env bash
# csi-sanity's Controller and Identity suites against the in-memory backend, configured
# through a config file: the path every cloud backend takes (tests/sanity-<backend>.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
config=$(mktemp "${TMPDIR:-/tmp}/snapcsi-memory.XXXXXX.toml")
trap 'rm -f "$config"' EXIT
cat >"$config" <<'TOML'
[backends.mem]
type = "memory"
TOML
SANITY_ACCESS_TYPES=mount SANITY_SKIP_NODE=1 SNAPCSI_SERVE_ARGS="--config $config" \
    "$root/tests/csi-sanity.sh" "$@"
