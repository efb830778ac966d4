//! The gRPC surface: the CSI Identity, Controller, GroupController, SnapshotMetadata and Node
//! services.

pub mod controller;
pub mod convert;
pub mod group;
pub mod identity;
pub mod metadata;
pub mod node;
pub mod validate;

use crate::error::{Error, Result};
use tonic::{Response, Status};

/// Turns a call's result into its gRPC answer, logging every error once, on our side, with
/// the code the sidecar will see.
pub(crate) fn answer<T>(
    rpc: &'static str,
    result: Result<T>,
) -> std::result::Result<Response<T>, Status> {
    match result {
        Ok(message) => Ok(Response::new(message)),
        Err(error) => {
            let status = Status::from(error);
            tracing::warn!(rpc, code = ?status.code(), message = status.message(), "request failed");
            Err(status)
        }
    }
}

/// Runs one RPC's work, records its metrics (count and latency by method, backend and code)
/// and turns its result into the gRPC answer.
pub(crate) async fn call<T>(
    rpc: &'static str,
    backend: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> std::result::Result<Response<T>, Status> {
    let started = std::time::Instant::now();
    let result = work.await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(e) => e.code(),
    };
    crate::metrics::metrics().rpc(rpc, backend, code, started.elapsed());
    answer(rpc, result)
}

/// The answer of an RPC whose capability this driver never advertises.
pub(crate) fn not_offered<T>(rpc: &'static str) -> Result<T> {
    Err(Error::Unsupported(format!(
        "{rpc} is not offered: its capability is not advertised"
    )))
}
