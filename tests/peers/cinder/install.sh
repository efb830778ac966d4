#!/usr/bin/env bash
# Installs the real OpenStack servers the Cinder backend is tested against, into venvs keyed
# by version under ~/.cache/snapcsi/ (a second run only checks and returns at once):
#   venv-cinder-29.0.0    cinder==29.0.0 (+ fixtures, for its fake volume driver), pinned by
#                         constraints-cinder-29.0.0.txt so a new release upstream cannot change
#                         what CI runs
#   venv-keystone-30.0.0  keystone==30.0.0 (only with the argument `keystone`)
#   venv-nova-34.0.0      nova==34.0.0 + openstack-placement==16.0.0 (only with `nova`; for
#                         tests/peers/nova), pinned by constraints-nova-34.0.0.txt
#
# Usage: tests/peers/cinder/install.sh [cinder] [keystone] [nova]   (default: cinder)
# Prints `VENV <name> <path>` per venv.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/tools/env.sh
# shellcheck disable=SC1091
source "$here/../../tools/env.sh"

CINDER_VERSION=29.0.0
KEYSTONE_VERSION=30.0.0
NOVA_VERSION=34.0.0
PLACEMENT_VERSION=16.0.0

log() { printf 'cinder-peer install: %s\n' "$*" >&2; }

# venv_install DIR PIP-ARGS... : builds DIR unless a finished build is there. A build that
# was interrupted has no `.snapcsi-complete` stamp and is started over. A venv cannot be moved
# once built (its scripts name their interpreter by path), so instead of building aside, one
# lock per venv keeps two test runs from building the same one at once.
venv_install() {
    local dir=$1; shift
    if [[ -e $dir/.snapcsi-complete ]]; then
        return 0
    fi
    mkdir -p "$(dirname "$dir")"
    exec {lock}>"$dir.lock"
    flock "$lock"
    if [[ -e $dir/.snapcsi-complete ]]; then
        exec {lock}>&-
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
    exec {lock}>&-
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
        nova)
            dir=$SNAPCSI_CACHE/venv-nova-$NOVA_VERSION
            venv_install "$dir" -c "$here/constraints-nova-$NOVA_VERSION.txt" \
                "nova==$NOVA_VERSION" "openstack-placement==$PLACEMENT_VERSION"
            echo "VENV nova $dir"
            ;;
        *) log "unknown peer $w (cinder, keystone or nova)"; exit 2 ;;
    esac
done
