#!/usr/bin/env bash
# Installs ghz (the gRPC load client of tests/bench) from the Go module proxy, once per
# version, and prints the binary's path:
#
#     GHZ=$(tests/tools/ghz.sh)
#
# Cached as ~/.cache/snapcsi/bin/ghz-<version>/ghz, installed into a temporary directory and
# moved into place.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/tools/env.sh
source "$root/tests/tools/env.sh"

GHZ_VERSION=v0.120.0

dir=$SNAPCSI_CACHE/bin/ghz-$GHZ_VERSION
bin=$dir/ghz
if [[ ! -x $bin ]]; then
    command -v go >/dev/null 2>&1 || { echo "ghz.sh: go not found" >&2; exit 1; }
    mkdir -p "$SNAPCSI_CACHE/bin"
    tmp=$(mktemp -d "$SNAPCSI_CACHE/bin/.ghz.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "ghz.sh: installing ghz $GHZ_VERSION" >&2
    GOBIN=$tmp GOCACHE=$SNAPCSI_GOCACHE GOMODCACHE=$SNAPCSI_GOMODCACHE GOFLAGS=-buildvcs=false \
        go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" >&2
    mkdir -p "$dir"
    mv -f "$tmp/ghz" "$bin"
fi
echo "$bin"
