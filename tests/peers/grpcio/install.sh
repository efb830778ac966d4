#!/usr/bin/env bash
# Installs the real Python grpcio (the client of tests/grpcio.rs) into a venv keyed by version,
# ~/.cache/snapcsi/venv-grpcio-<version>. It is built in a temporary directory beside it and
# moved into place when complete, so a half-built venv is never taken for a cached one (several
# runs may build at once; the first to finish wins). A second run only checks and returns.
#
# Usage: tests/peers/grpcio/install.sh     Prints `VENV grpcio <path>`; use <path>/bin/python.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/tools/env.sh
# shellcheck disable=SC1091
source "$here/../../tools/env.sh"

GRPCIO_VERSION=1.85.1
dir=$SNAPCSI_CACHE/venv-grpcio-$GRPCIO_VERSION

log() { printf 'grpcio install: %s\n' "$*" >&2; }

if [[ ! -x $dir/bin/python ]]; then
    command -v python3 >/dev/null || { log "python3 is missing"; exit 1; }
    log "building $dir (first use; cached afterwards)"
    started=$SECONDS
    mkdir -p "$SNAPCSI_CACHE"
    tmp=$(mktemp -d "$SNAPCSI_CACHE/.venv-grpcio.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    python3 -m venv "$tmp/venv"
    # Only bin/python is used afterwards: it keeps working after the move (the venv is found
    # through pyvenv.cfg beside it), unlike the scripts whose first line names the build path.
    "$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "grpcio==$GRPCIO_VERSION"
    "$tmp/venv/bin/python" -c 'import grpc' # the wheel loads on this machine
    mv -T "$tmp/venv" "$dir" 2>/dev/null || log "another run installed $dir first"
    log "built $dir in $((SECONDS - started))s"
fi
echo "VENV grpcio $dir"
