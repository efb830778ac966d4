//! The one place where errors become gRPC statuses.
//!
//! Everything the CSI services can fail with is an [`Error`]; `From<Error> for Status` below is
//! the only mapping to codes, an exhaustive match so that a new kind cannot slip through
//! unmapped. The codes are chosen for how the Kubernetes sidecars react to them (DESIGN.md):
//! the provisioner retries UNAVAILABLE/ABORTED/DEADLINE_EXCEEDED as "still in progress", the
//! snapshotter retries RESOURCE_EXHAUSTED, the resizer gives up on FAILED_PRECONDITION.

use crate::backend::{BackendError, ErrorKind};
use crate::node::NodeError;
use tonic::{Code, Status};

/// A failure of a CSI call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent a request that can never be valid; `field` names the proto field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Proto field name, e.g. `volume_capabilities`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The object the caller named does not exist.
    #[error("{what} {id} does not exist")]
    NotFound {
        /// `volume`, `snapshot`, `source snapshot`, …
        what: &'static str,
        /// The id as the caller sent it.
        id: String,
    },
    /// A path the caller named does not exist.
    #[error("{field}: path {path} does not exist")]
    PathNotFound {
        /// Proto field name.
        field: &'static str,
        /// The path.
        path: String,
    },
    /// The name is taken by an object incompatible with the request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request asks for a size the driver cannot provide.
    #[error("{0}")]
    OutOfRange(String),
    /// Another call for the same name or object is in flight (CSI: ABORTED, "operation pending").
    #[error("an operation on {0} is already in progress")]
    InFlight(String),
    /// A `starting_token` that was not issued by this driver or no longer resumes a list.
    #[error("starting_token: {0}")]
    BadToken(String),
    /// The object's state forbids the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Capacity is used up.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A failure reported by the storage backend.
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// A failure of an operating-system operation on the node.
    #[error("{0}")]
    Node(#[from] NodeError),
    /// The RPC is not offered by this driver or backend (its capability is not advertised).
    #[error("{0}")]
    Unsupported(String),
    /// A bug or an unexpected condition on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound { .. } | Error::PathNotFound { .. } => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::OutOfRange(_) => Code::OutOfRange,
            // CSI: "an operation is pending for the specified volume" -> ABORTED.
            Error::InFlight(_) => Code::Aborted,
            // CSI ListVolumes/ListSnapshots: an invalid starting_token -> ABORTED.
            Error::BadToken(_) => Code::Aborted,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Backend(e) => backend_code(e.kind),
            Error::Node(_) => Code::Internal,
            // CSI: an RPC whose capability is not advertised answers UNIMPLEMENTED.
            Error::Unsupported(_) => Code::Unimplemented,
            Error::Internal(_) => Code::Internal,
        }
    }
}

fn backend_code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::OutOfRange => Code::OutOfRange,
        // The snapshotter and provisioner retry RESOURCE_EXHAUSTED with backoff.
        ErrorKind::QuotaExceeded => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        // A cloud-side "busy" is the same situation as our own in-flight guard.
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::InvalidCursor => Code::Aborted,
        // UNAVAILABLE makes every sidecar retry, which is right for a transient cloud fault.
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Throttled => Code::Unavailable,
        ErrorKind::Unauthorized => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unsupported => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

/// Result of a CSI call before it becomes a gRPC answer.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_mistakes_never_map_to_internal() {
        let errors = [
            Error::invalid("name", "must not be empty"),
            Error::NotFound {
                what: "volume",
                id: "x".into(),
            },
            Error::BadToken("garbage".into()),
            Error::InFlight("snapshot s1".into()),
            Error::OutOfRange("too big".into()),
        ];
        let codes: Vec<Code> = errors.iter().map(Error::code).collect();
        assert_eq!(
            codes,
            [
                Code::InvalidArgument,
                Code::NotFound,
                Code::Aborted,
                Code::Aborted,
                Code::OutOfRange
            ]
        );
    }

    #[test]
    fn message_names_the_field() {
        let status: Status = Error::invalid("snapshot_id", "must not be empty").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "snapshot_id: must not be empty");
    }

    #[test]
    fn backend_kinds_keep_their_message() {
        let status: Status = Error::from(BackendError::new(
            ErrorKind::QuotaExceeded,
            "quota of 10 used",
        ))
        .into();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "quota of 10 used");
    }
}
