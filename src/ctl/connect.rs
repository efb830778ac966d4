//! Reaching the driver, and the exit code of every way a `ctl` run can fail.

use crate::values::Endpoint;
use std::time::Duration;
use tonic::transport::{Channel, Uri};

/// A failed `ctl` run: its message and exit code.
#[derive(Debug)]
pub struct CtlError {
    /// What to print.
    pub message: String,
    /// The exit code.
    pub code: u8,
}

impl From<tonic::Status> for CtlError {
    fn from(status: tonic::Status) -> Self {
        let code = status.code();
        Self {
            message: format!("{code:?}: {}", status.message()),
            code: 10 + code as u8,
        }
    }
}

/// Writing the answer failed (a closed pipe, a full disk).
impl From<std::io::Error> for CtlError {
    fn from(e: std::io::Error) -> Self {
        Self {
            message: format!("cannot write the answer: {e}"),
            code: 1,
        }
    }
}

/// Connects to the driver, each call bounded by `timeout`; an unreachable driver is exit 1.
pub(super) async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Channel, CtlError> {
    let unreachable = |e: tonic::transport::Error| CtlError {
        message: format!("cannot reach the driver at {endpoint}: {e}"),
        code: 1,
    };
    match endpoint {
        Endpoint::Tcp(addr) => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(unreachable)?
            .timeout(timeout)
            .connect()
            .await
            .map_err(unreachable),
        Endpoint::Unix(path) => {
            let path = path.clone();
            tonic::transport::Endpoint::from_static("http://localhost")
                .timeout(timeout)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(unreachable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_grpc_codes() {
        let e = CtlError::from(tonic::Status::not_found("x"));
        assert_eq!(e.code, 15);
        assert!(e.message.starts_with("NotFound:"));
    }
}
