//! snapcsi: a Kubernetes CSI driver for volume snapshots, with pluggable storage backends.
//!
//! Requests flow one way: `csi` (gRPC services, validation, conversion) -> `ops` (idempotency,
//! in-flight guard, paging) -> `backend` (the storage boundary). Errors become gRPC statuses
//! in exactly one place, `error`.

pub mod authority;
pub mod backend;
pub mod calendar;
pub mod check;
pub mod cli;
pub mod config;
pub mod csi;
pub mod ctl;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod kube;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod secret;
pub mod server;
pub mod values;

/// The CSI wire contract, generated from `proto/csi.proto` by `build.rs`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("csi.v1");

    /// Encoded file descriptor set of the proto, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/csi_descriptor.bin"));
}
