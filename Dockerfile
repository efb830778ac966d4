# snapcsi image: one binary, run as the controller (non-root) or the node plugin (privileged).
#
# Build:  docker build -t snapcsi:dev .
# The node plugin needs util-linux (losetup, mount, fsfreeze, blkid), e2fsprogs and xfsprogs.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so editing the driver does not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked || true
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && install -m 0755 target/release/snapcsi /snapcsi

FROM debian:bookworm-slim
# Debian's point releases replace package versions; pinning them would break the build at
# the next point release, so the base image tag is what pins the runtime.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux mount e2fsprogs xfsprogs ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /snapcsi /usr/local/bin/snapcsi
# The controller runs as this user; the node DaemonSet overrides it with a privileged root
# container, as CSI node plugins must be to attach loop devices and mount.
RUN useradd --system --uid 65532 --no-create-home snapcsi
USER 65532
ENTRYPOINT ["/usr/local/bin/snapcsi"]
CMD ["serve", "--endpoint", "unix:///csi/csi.sock"]
