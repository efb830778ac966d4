#!/usr/bin/env bash
# Builds every container image the node e2e (and deploy/kind/up.sh here) runs, with no registry:
#   snapcsi:dev        from our Dockerfile, by Debian's docker.io daemon started here on its own
#                      data root (~/.cache/snapcsi/docker, so base images and layers are cached
#                      across runs); its two base images are made here first if missing:
#                      debian:bookworm-slim (debootstrap --variant=minbase) and
#                      rust:1.95-bookworm (that + gcc + this machine's Rust 1.95 toolchain
#                      and CA bundle)
#   the sidecars       registry.k8s.io/sig-storage/<name>:<version>, one static binary each on an
#                      empty base (the binaries of build-tools.sh and build-node-tools.sh)
#   pause, busybox     snapcsi.dev/e2e/pause:1 (tests/k8s/pause.c, static) and
#                      snapcsi.dev/e2e/busybox:<version> (Debian's busybox-static)
# Each lands as an OCI or docker archive in OUT_DIR, ready for `ctr images import`.
#
# Usage: tests/k8s/images.sh OUT_DIR [static|docker]   (root; the static images need the
#        exports of build-tools.sh and build-node-tools.sh in the environment; default: both)
set -euo pipefail

out=${1:?usage: images.sh OUT_DIR [static|docker]}
which=${2:-all}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${SNAPCSI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/snapcsi}
rust_version=$(rustc --version | awk '{print $2}')
rust_image=rust:${rust_version%.*}-bookworm
debian_image=debian:bookworm-slim
say() { printf 'images: %s\n' "$*" >&2; }
mkdir -p "$out"
start=$SECONDS

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# ------------------------------------------------------------ static images ---
pack() { python3 "$here/oci-image.py" "$@"; }
sidecar() { # sidecar BINARY IMAGE
    local name
    name=$(basename "$1")
    pack "$out/$name.tar" "$2" --entrypoint "[\"/$name\"]" "$1=/$name"
}
static_images() {
    sidecar "$CSI_PROVISIONER" registry.k8s.io/sig-storage/csi-provisioner:v6.3.0
    sidecar "$CSI_SNAPSHOTTER" registry.k8s.io/sig-storage/csi-snapshotter:v8.6.0
    sidecar "$CSI_RESIZER" registry.k8s.io/sig-storage/csi-resizer:v2.2.0
    sidecar "$LIVENESSPROBE" registry.k8s.io/sig-storage/livenessprobe:v2.17.0
    sidecar "$NODE_DRIVER_REGISTRAR" registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.17.0
    gcc -static -Os -s -o "$scratch/pause" "$here/pause.c"
    pack "$out/pause.tar" snapcsi.dev/e2e/pause:1 --entrypoint '["/pause"]' "$scratch/pause=/pause"
    mkdir -p "$scratch/busybox/bin" "$scratch/busybox/tmp"
    chmod 1777 "$scratch/busybox/tmp"
    cp /bin/busybox "$scratch/busybox/bin/"
    local applet version
    for applet in $(/bin/busybox --list); do
        [[ $applet == busybox ]] || ln -s busybox "$scratch/busybox/bin/$applet"
    done
    version=$(/bin/busybox | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p')
    pack "$out/busybox.tar" "snapcsi.dev/e2e/busybox:$version" --cmd '["sh"]' \
        "$scratch/busybox/bin=/bin" "$scratch/busybox/tmp=/tmp"
    echo "snapcsi.dev/e2e/busybox:$version" >"$out/busybox.name"
    say "sidecar, pause and busybox images packed ($((SECONDS - start))s)"
}
[[ $which == docker ]] || static_images
[[ $which == static ]] && exit 0
# Iterating on the scenarios only: an archive of snapcsi:dev made earlier by this script.
if [[ -n ${E2E_SNAPCSI_ARCHIVE:-} ]]; then
    say "snapcsi:dev taken from $E2E_SNAPCSI_ARCHIVE (E2E_SNAPCSI_ARCHIVE), not built"
    cp "$E2E_SNAPCSI_ARCHIVE" "$out/snapcsi.tar"
    cp "$(dirname "$E2E_SNAPCSI_ARCHIVE")/snapcsi.size" "$out/snapcsi.size"
    exit 0
fi

# --------------------------------------------------------------- docker ---
# One daemon per data root: a second run waits for the first one's lock.
docker_root=$cache/docker
mkdir -p "$docker_root"
exec {lock}>"$cache/docker.lock"
flock "$lock"
run=$(mktemp -d /run/snapcsi-docker.XXXXXX)
export DOCKER_HOST=unix://$run/docker.sock
docker=/usr/bin/docker
[[ -x $docker ]] || docker=docker
dockerd --data-root "$docker_root" --exec-root "$run/exec" --pidfile "$run/docker.pid" \
    -H "$DOCKER_HOST" --iptables=false --ip-masq=false --bridge=none \
    >"$out/dockerd.log" 2>&1 &
dockerd_pid=$!
stop_docker() {
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    # dockerd leaves its network namespace mounted under the exec root.
    findmnt -rn -o TARGET | grep "^$run/" | xargs -r -n1 umount 2>/dev/null || true
    rm -rf "$run" "$scratch"
}
trap stop_docker EXIT
trap 'exit 130' INT TERM
for ((i = 0; i < 150; i++)); do
    "$docker" version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -n 20 "$out/dockerd.log" >&2; exit 1; }
    sleep 0.2
done
"$docker" version >/dev/null
say "dockerd $("$docker" version -f '{{.Server.Version}}') up on $docker_root ($((SECONDS - start))s)"

# The recipe's version: base images made by an older recipe are made again.
base_recipe=2
label=dev.snapcsi.base-recipe=$base_recipe
made_here() { # made_here IMAGE: made by this recipe
    [[ $("$docker" image inspect -f '{{index .Config.Labels "dev.snapcsi.base-recipe"}}' "$1" 2>/dev/null) == "$base_recipe" ]]
}
if ! made_here "$debian_image"; then
    # The mirror this machine's apt uses (deb822 or one-line sources).
    mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | sed -n 's/^URIs: *//p; s/^deb \(http[^ ]*\) bookworm .*/\1/p' | grep -v security | head -n 1 || true)
    say "making $debian_image with debootstrap from ${mirror:=http://deb.debian.org/debian}"
    debootstrap --variant=minbase bookworm "$scratch/debian" "$mirror" >"$out/debootstrap.log" 2>&1 \
        || { tail -n 20 "$out/debootstrap.log" >&2; exit 1; }
    rm -rf "$scratch/debian/var/cache/apt/archives/"*.deb "$scratch/debian/var/lib/apt/lists/"*
    tar -C "$scratch/debian" -c . | "$docker" import --change "LABEL $label" \
        --change 'CMD ["bash"]' - "$debian_image" >/dev/null
    rm -rf "$scratch/debian"
fi
if ! made_here "$rust_image"; then
    say "making $rust_image from $debian_image and $(rustc --print sysroot)"
    mkdir -p "$scratch/rust/toolchain"
    sysroot=$(rustc --print sysroot)
    cp -a "$sysroot/bin" "$sysroot/lib" "$scratch/rust/toolchain/"
    rm -rf "$scratch/rust/toolchain/bin/"{rust-gdb,rust-gdbgui,rust-lldb}
    # This machine's trust: the registries may be reached through a TLS proxy of its own.
    cp /etc/ssl/certs/ca-certificates.crt "$scratch/rust/"
    cat >"$scratch/rust/Dockerfile" <<EOF
FROM $debian_image
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
LABEL $label
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
    "$docker" build --network host -q -t "$rust_image" "$scratch/rust" >/dev/null
    rm -rf "$scratch/rust"
fi
say "base images $debian_image, $rust_image ready ($((SECONDS - start))s)"

build_start=$SECONDS
# The build and tools stages are tagged too: their layers are then no dangling images, so the
# prune below keeps them and the next build reuses the compiled dependencies and the apt layer.
for target in build tools ""; do
    "$docker" build --network host --build-arg "RUST_IMAGE=$rust_image" \
        --build-arg "DEBIAN_IMAGE=$debian_image" ${target:+--target "$target"} \
        -t "snapcsi${target:+-stage}:${target:-dev}" "$root" >>"$out/docker-build.log" 2>&1 \
        || { tail -n 40 "$out/docker-build.log" >&2; exit 1; }
done
size=$("$docker" image inspect -f '{{.Size}}' snapcsi:dev)
say "snapcsi:dev built from the Dockerfile in $((SECONDS - build_start))s: $((size / 1000000)) MB ($size bytes)"
echo "$size" >"$out/snapcsi.size"
# The image runs: its binary answers from the empty base.
"$docker" run --rm --network none snapcsi:dev --version >"$out/snapcsi.version"
say "snapcsi:dev runs: $(cat "$out/snapcsi.version")"
"$docker" save snapcsi:dev -o "$out/snapcsi.tar"
# Layers of earlier builds that no tag holds any more would fill the cache.
"$docker" image prune -f >/dev/null
say "all images in $out ($((SECONDS - start))s)"
