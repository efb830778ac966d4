#!/usr/bin/env bash
# Installs what snapcsi's tests need on a Debian 12 machine, and nothing when
# everything is already there:
#   - Debian packages for the node path (loop devices, mkfs, resize, freeze);
#   - csi-sanity, pinned, built with `go install` into a version-keyed cache;
#   - the Kubernetes tools of tests/k8s/build-tools.sh (also version-keyed);
#   - a nightly Rust toolchain and cargo-fuzz, pinned, for the fuzz phase.
#
# Idempotent; a second run only checks and takes about a second. Exports
# nothing: the last line printed is the csi-sanity path, and scripts that need
# it source tests/tools/env.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/tools/env.sh
source "$here/env.sh"

log() { printf 'install-prereqs: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- Debian ---
# command -> Debian package that ships it (bookworm).
declare -A pkg_of=(
    [mkfs.xfs]=xfsprogs
    [xfs_growfs]=xfsprogs
    [xfs_io]=xfsprogs
    [xfs_freeze]=xfsprogs
    [mkfs.ext4]=e2fsprogs
    [resize2fs]=e2fsprogs
    [e2fsck]=e2fsprogs
    [tune2fs]=e2fsprogs
    [filefrag]=e2fsprogs
    [losetup]=mount
    [mount]=mount
    [umount]=mount
    [fsfreeze]=util-linux
    [blkid]=util-linux
    [findmnt]=util-linux
    [lsblk]=util-linux
    [blockdev]=util-linux
    [wipefs]=util-linux
    [fallocate]=util-linux
    [truncate]=coreutils
    [timeout]=coreutils
    # the cloud simulators under tests/sims (standard library only)
    [python3]=python3
    [openssl]=openssl
    [curl]=curl
    [shellcheck]=shellcheck
)

missing=()
for cmd in "${!pkg_of[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${pkg_of[$cmd]}")
    fi
done

if ((${#missing[@]} > 0)); then
    mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing Debian packages: ${packages[*]}"
    sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install ${packages[*]} by hand"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    for cmd in "${!pkg_of[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after installing ${pkg_of[$cmd]}"
    done
else
    log "Debian packages: all present"
fi

# Loop devices are how the node path attaches volumes; say early if the kernel
# or the sandbox does not give us any.
if [[ ! -e /dev/loop-control ]]; then
    log "warning: /dev/loop-control is missing; node tests that attach volumes will fail"
fi

# -------------------------------------------------------------- Rust -------
for sub in fmt clippy; do
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        die "cargo $sub is not available (rustup component add ${sub/fmt/rustfmt})"
    fi
done

# ------------------------------------------------------- nightly, cargo-fuzz ---
# cargo-fuzz builds with -Zsanitizer, which only a nightly toolchain accepts.
if ! cargo +nightly --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || die "no nightly toolchain and no rustup to install one"
    log "installing the nightly Rust toolchain (minimal profile)"
    rustup toolchain install nightly --profile minimal >/dev/null \
        || die "rustup could not install the nightly toolchain (the fuzz phase needs it)"
fi
if [[ -x $CARGO_FUZZ ]] && "$CARGO_FUZZ" --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    log "cargo-fuzz $CARGO_FUZZ_VERSION: cached"
else
    log "building cargo-fuzz $CARGO_FUZZ_VERSION"
    install_log=$(mktemp "${TMPDIR:-/tmp}/cargo-fuzz-install.XXXXXX")
    if ! cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" \
        --root "$SNAPCSI_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION" >"$install_log" 2>&1; then
        tail -n 30 "$install_log" >&2
        die "cargo install cargo-fuzz $CARGO_FUZZ_VERSION failed"
    fi
    rm -f "$install_log"
    "$CARGO_FUZZ" --version >/dev/null 2>&1 || die "built $CARGO_FUZZ but it does not run"
fi

# ------------------------------------------------------------ csi-sanity ---
# A binary that exists but does not run (half-written, wrong arch) is rebuilt.
sanity_works() {
    [[ -x $CSI_SANITY ]] && "$CSI_SANITY" -version >/dev/null 2>&1
}

if sanity_works; then
    log "csi-sanity $CSI_SANITY_VERSION: cached"
else
    command -v go >/dev/null 2>&1 || die "go is not on PATH (looked in /usr/local/go/bin too)"
    log "building csi-sanity $CSI_SANITY_VERSION with $(go version | cut -d' ' -f3)"
    mkdir -p "$CSI_SANITY_BIN_DIR" "$SNAPCSI_GOCACHE" "$SNAPCSI_GOMODCACHE"
    # Build outside any module so a go.mod/go.work around the caller cannot
    # interfere; GOTOOLCHAIN=local stops go from trying to fetch another one.
    # -X main.VERSION makes `csi-sanity -version` report the pinned release.
    (
        cd /
        GOBIN=$CSI_SANITY_BIN_DIR \
        GOCACHE=$SNAPCSI_GOCACHE \
        GOMODCACHE=$SNAPCSI_GOMODCACHE \
        GOTOOLCHAIN=local \
        GOFLAGS=-buildvcs=false \
        GO111MODULE=on \
        GOWORK=off \
        CGO_ENABLED=0 \
            go install -ldflags "-X main.VERSION=$CSI_SANITY_VERSION" \
            "$CSI_SANITY_MODULE@$CSI_SANITY_VERSION"
    ) || die "go install $CSI_SANITY_MODULE@$CSI_SANITY_VERSION failed"
    sanity_works || die "built $CSI_SANITY but it does not run"
fi

# Smoke test: the binary prints its version and its specs are all registered
# (a dry run against an endpoint that is never dialled).
"$CSI_SANITY" -version | grep -qF "$CSI_SANITY_VERSION" \
    || die "$CSI_SANITY does not report version $CSI_SANITY_VERSION"
dry=$("$CSI_SANITY" -ginkgo.dry-run -ginkgo.no-color \
    --csi.endpoint=unix:///nonexistent/csi.sock 2>&1) \
    || die "csi-sanity dry run failed: $dry"
grep -qE '^Ran [0-9]+ of [0-9]+ Specs' <<<"$dry" \
    || die "csi-sanity dry run printed no spec summary: $dry"
log "csi-sanity $CSI_SANITY_VERSION ok ($(grep -oE '^Ran [0-9]+ of [0-9]+ Specs' <<<"$dry" | sed 's/^Ran [0-9]* of //'))"

# The Kubernetes pieces (etcd, kube-apiserver, sidecars, snapshot CRDs), cached by version
# under ~/.cache/snapcsi/k8s (a warm call takes well under a second): the test phase's
# tests/scheduler.rs starts a control plane from them, and the e2e phase runs on them.
"$here/../k8s/build-tools.sh" >/dev/null \
    || die "building the Kubernetes tools failed (tests/k8s/build-tools.sh)"
log "kubernetes tools ok"

echo "$CSI_SANITY"
