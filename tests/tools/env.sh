#!/usr/bin/env bash
# Meant to be sourced (running it does nothing useful).
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# Shared settings for snapcsi's test scripts. Source it, do not run it:
#
#     source tests/tools/env.sh
#
# It defines (as plain shell variables, nothing is exported):
#   CSI_SANITY_VERSION   pinned csi-test release
#   CSI_SANITY_MODULE    Go package that `go install` builds
#   SNAPCSI_CACHE        root of snapcsi's tool cache (~/.cache/snapcsi)
#   CSI_SANITY_BIN_DIR   version-keyed GOBIN for csi-sanity
#   CSI_SANITY           full path of the csi-sanity binary
#   SNAPCSI_GOCACHE      GOCACHE used when building the tools
#   SNAPCSI_GOMODCACHE   GOMODCACHE used when building the tools
#   CARGO_FUZZ_VERSION   pinned cargo-fuzz release (the fuzz phase)
#   CARGO_FUZZ           full path of the cargo-fuzz binary
#   FUZZ_TARGET_DIR      target dir of the fuzz crate (tests/fuzz), kept across runs
#                        (the caller may set it)
# and puts the usual homes of cargo (~/.cargo/bin) and go (/usr/local/go/bin)
# on PATH when they exist, because CI starts with a minimal environment.

CSI_SANITY_VERSION=v5.6.0
CSI_SANITY_MODULE=github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity

_snapcsi_home=${HOME:-/root}
SNAPCSI_CACHE=${XDG_CACHE_HOME:-$_snapcsi_home/.cache}/snapcsi
CSI_SANITY_BIN_DIR=$SNAPCSI_CACHE/bin/csi-sanity-$CSI_SANITY_VERSION
CSI_SANITY=$CSI_SANITY_BIN_DIR/csi-sanity
SNAPCSI_GOCACHE=$SNAPCSI_CACHE/go/build
SNAPCSI_GOMODCACHE=$SNAPCSI_CACHE/go/mod
CARGO_FUZZ_VERSION=0.13.1
CARGO_FUZZ=$SNAPCSI_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION/bin/cargo-fuzz
# Outside the work tree: CI starts from a fresh clone, and the sanitizer build of snapcsi and
# its dependencies (minutes on 2 cores) is then reused from the previous run.
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$SNAPCSI_CACHE/fuzz-target}

for _snapcsi_dir in "$_snapcsi_home/.cargo/bin" /usr/local/go/bin "$_snapcsi_home/go/bin"; do
    if [[ -d $_snapcsi_dir && ":$PATH:" != *":$_snapcsi_dir:"* ]]; then
        PATH=$_snapcsi_dir:$PATH
    fi
done
unset _snapcsi_dir _snapcsi_home
