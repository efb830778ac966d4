#!/usr/bin/env bash
# Builds what tests/k8s/node-e2e.sh needs, ahead of it: tests/run.sh starts this in the
# background after its prereqs phase, so the Go and Docker builds use the cores that cargo's
# phases leave idle (tests waiting on servers, single-threaded fuzzing). Both results are
# caches node-e2e.sh then hits: the node tools (build-node-tools.sh, version-keyed, behind a
# lock node-e2e.sh waits on) and the snapcsi image's layers in the docker data root
# (images.sh, behind its own lock).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
start=$SECONDS
"$here/build-node-tools.sh" >/dev/null
echo "node-prebuild: node tools ready after $((SECONDS - start))s"
out=$(mktemp -d "${TMPDIR:-/tmp}/snapcsi-prebuild.XXXXXX")
trap 'rm -rf "$out"' EXIT
"$here/images.sh" "$out" docker
echo "node-prebuild: snapcsi image built after $((SECONDS - start))s"
