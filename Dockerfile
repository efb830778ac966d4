# snapcsi image: one binary, run as the controller (non-root), the node plugin (privileged) or
# the SnapshotSchedule controller, on an empty base holding only what it runs.
#
# Build:  docker build -t snapcsi:dev .
# The two base images are named by build args, so a machine without a registry can use images
# made locally (tests/k8s/base-images.sh makes both with debootstrap and the host's Rust):
#   --build-arg RUST_IMAGE=rust:1.95-bookworm  --build-arg DEBIAN_IMAGE=debian:bookworm-slim
# The build and tools stages fetch crates and Debian packages (cargo, apt-get), so the build
# needs those registries (`--network host` where the daemon runs without a bridge).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first, so editing the driver does not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked || true
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && install -m 0755 target/release/snapcsi /snapcsi

# The node plugin runs util-linux (losetup, mount, umount, blkid, fsfreeze), e2fsprogs and
# xfsprogs: they are installed here and copied, with exactly the libraries they load, into the
# root of the runtime image (deploy/image/slim-rootfs.sh).
FROM ${DEBIAN_IMAGE} AS tools
# Debian's point releases replace package versions; pinning them would break the build at
# the next point release, so the base image tag is what pins the runtime.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux mount e2fsprogs xfsprogs ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /snapcsi /usr/local/bin/snapcsi
COPY deploy/image/slim-rootfs.sh /slim-rootfs.sh
RUN /slim-rootfs.sh /rootfs /usr/local/bin/snapcsi

FROM scratch
COPY --from=tools /rootfs /
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin
# The controller and the scheduler run as this user; the node DaemonSet overrides it with a
# privileged root container, as CSI node plugins must be to attach loop devices and mount.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/snapcsi"]
CMD ["serve", "--endpoint", "unix:///csi/csi.sock"]
