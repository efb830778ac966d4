#!/usr/bin/env bash
# Installs the real OpenStack servers the Cinder backend is tested against, into venvs keyed
# by version under ~/.cache/snapcsi/ (a second run only checks and returns at once):
#   venv-cinder-29.0.0    cinder==29.0.0 (+ fixtures, for its fake volume driver), pinned by
#                         constraints-cinder-29.0.0.txt so a new release upstream cannot change
#                         what CI runs
#   venv-keystone-30.0.0  keystone==30.0.0 (only with the argument `keystone`)
#
# Usage: tests/peers/cinder/install.sh [cinder] [keystone]   (default: cinder)
# Prints `VENV <name> <path>` per venv.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/tools/env.sh
# shellcheck disable=SC1091
source "$here/../../tools/env.sh"

CINDER_VERSION=29.0.0
KEYSTONE_VERSION=30.0.0

log() { printf 'cinder-peer install: %s\n' "$*" >&2; }

# venv_install DIR PIP-ARGS... : builds DIR unless a finished build is there. A build that
# was interrupted has no `.snapcsi-complete` stamp and is started over.
venv_install() {
    local dir=$1; shift
    if [[ -e $dir/.snapcsi-complete ]]; then
        return 0
    fi
    command -v python3 >/dev/null || { log "python3 is missing"; exit 1; }
    log "building $dir (first use; cached afterwards)"
    local started=$SECONDS
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
    touch "$dir/.snapcsi-complete"
    log "built $dir in $((SECONDS - started))s"
}

what=("$@")
((${#what[@]})) || what=(cinder)
for w in "${what[@]}"; do
    case $w in
        cinder)
            dir=$SNAPCSI_CACHE/venv-cinder-$CINDER_VERSION
            venv_install "$dir" -c "$here/constraints-cinder-$CINDER_VERSION.txt" \
                "cinder==$CINDER_VERSION" fixtures
            echo "VENV cinder $dir"
            ;;
        keystone)
            dir=$SNAPCSI_CACHE/venv-keystone-$KEYSTONE_VERSION
            venv_install "$dir" "keystone==$KEYSTONE_VERSION"
            echo "VENV keystone $dir"
            ;;
        *) log "unknown peer $w (cinder or keystone)"; exit 2 ;;
    esac
done
