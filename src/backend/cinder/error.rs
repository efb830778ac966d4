//! The one place Cinder's (and Keystone's) answers become shared [`ErrorKind`]s.
//!
//! Cinder wraps a failure in an object named after the fault, e.g.
//! `{"itemNotFound": {"code": 404, "message": "Volume x could not be found."}}`; Keystone says
//! `{"error": {"code": 401, "title": "Unauthorized", "message": "..."}}`. The message is kept
//! in the gRPC message; request headers (the token) never are.

use crate::backend::{BackendError, ErrorKind};

/// What the answer body said, when it is one of the documented fault shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The fault name (`itemNotFound`, `badRequest`, `overLimit`, `error`, …).
    pub name: String,
    /// The server's message.
    pub message: String,
}

/// Reads a fault body; `None` when the body is not JSON of that shape.
pub fn parse_fault(body: &[u8]) -> Option<Fault> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    object.iter().find_map(|(name, inner)| {
        let message = inner.get("message")?.as_str()?;
        Some(Fault {
            name: name.clone(),
            message: message.to_owned(),
        })
    })
}

/// Lower-case words in a Cinder 400 message that mean "the object's state forbids this",
/// not "your request is malformed". Cinder answers both with `badRequest`.
const STATE_WORDS: [&str; 8] = [
    "status must be",
    "current status",
    "has snapshots",
    "dependent",
    "in-use",
    "attached",
    "must not be migrating",
    "in use",
];

/// Sorts a non-success answer of `operation` into a [`BackendError`].
pub fn classify(operation: &str, status: u16, body: &[u8]) -> BackendError {
    let fault = parse_fault(body);
    let detail = match &fault {
        Some(f) => format!("{} ({status} {})", f.message, f.name),
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                // Unknown body: keep a bounded excerpt, enough to diagnose.
                let excerpt: String = text.chars().take(300).collect();
                format!("HTTP {status}: {excerpt}")
            }
        }
    };
    let message = format!("cinder {operation}: {detail}");
    let name = fault.as_ref().map(|f| f.name.as_str()).unwrap_or("");
    let lower = fault
        .as_ref()
        .map(|f| f.message.to_ascii_lowercase())
        .unwrap_or_default();
    let kind = match (status, name) {
        (404, _) | (_, "itemNotFound") => ErrorKind::NotFound,
        (401, _) => ErrorKind::Unauthorized,
        (403, _) | (_, "forbidden") => ErrorKind::PermissionDenied,
        // Rate limiting: Cinder names both 413 and 429 `overLimit`; the status tells a rate
        // limit (transient, like the other clouds' 429) from a quota.
        (429, _) => ErrorKind::Throttled,
        // Quota: Cinder answers 413 overLimit (older releases) or 413 with a quota message.
        (413, _) | (_, "overLimit") => ErrorKind::QuotaExceeded,
        (409, _) => ErrorKind::Conflict,
        (400, _) if STATE_WORDS.iter().any(|w| lower.contains(w)) => ErrorKind::FailedPrecondition,
        (400, _) | (_, "badRequest") => ErrorKind::InvalidArgument,
        (405 | 501, _) => ErrorKind::Unsupported,
        // RFC 9110: 503 means the request was not handled (overload, maintenance).
        (503, _) => ErrorKind::Throttled,
        (500..=599, _) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    BackendError::new(kind, message)
}

/// Sorts a non-success answer of Nova (the compute API, which attaches Cinder volumes) into a
/// [`BackendError`]. Nova's faults have Cinder's shape (`itemNotFound`, `badRequest`,
/// `conflictingRequest`, `forbidden`), so the same rules hold, with one difference: Nova
/// answers 403 when a server has as many disks as it may have (`[compute]
/// max_disk_devices_to_attach`), which is the node's attach limit (CSI ControllerPublishVolume:
/// RESOURCE_EXHAUSTED), not a permission problem.
pub fn classify_compute(operation: &str, status: u16, body: &[u8]) -> BackendError {
    let mut error = classify(operation, status, body);
    error.message = error.message.replacen("cinder ", "nova ", 1);
    let lower = parse_fault(body)
        .map(|f| f.message.to_ascii_lowercase())
        .unwrap_or_default();
    if status == 403 && lower.contains("maximum allowed number of disk devices") {
        error = BackendError::new(ErrorKind::QuotaExceeded, error.message);
    }
    error
}

/// A snapshot or volume in a Cinder status that can never become usable. FAILED_PRECONDITION:
/// the object's state forbids the call (INTERNAL would blame the driver), and it is not
/// retried as if Cinder were only slow.
pub fn bad_status(what: &str, id: &str, status: &str) -> BackendError {
    BackendError::new(
        ErrorKind::FailedPrecondition,
        format!("cinder {what} {id} is in status {status:?}; it will not become usable"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_sorted_and_keep_the_message() {
        let e = classify(
            "get snapshot",
            404,
            br#"{"itemNotFound": {"code": 404, "message": "Snapshot x could not be found."}}"#,
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("Snapshot x could not be found."), "{e}");
        let e = classify(
            "create volume",
            413,
            br#"{"overLimit": {"code": 413, "message": "VolumeSizeExceedsAvailableQuota"}}"#,
        );
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(e.retryable);
        let e = classify(
            "delete volume",
            400,
            br#"{"badRequest": {"code": 400, "message": "Invalid volume: Volume has snapshots."}}"#,
        );
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        let e = classify(
            "create snapshot",
            400,
            br#"{"badRequest": {"code": 400, "message": "Invalid input: 'x' is not a 'uuid'"}}"#,
        );
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        let e = classify(
            "auth",
            401,
            br#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#,
        );
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("requires authentication"));
        let e = classify(
            "get volume",
            429,
            br#"{"overLimit": {"code": 429, "message": "Rate limit exceeded"}}"#,
        );
        assert_eq!(e.kind, ErrorKind::Throttled, "a rate limit is not a quota");
        assert_eq!(classify("x", 403, b"").kind, ErrorKind::PermissionDenied);
        assert_eq!(classify("x", 503, b"down").kind, ErrorKind::Throttled);
        assert_eq!(classify("x", 502, b"down").kind, ErrorKind::Unavailable);
        assert_eq!(classify("x", 418, b"").kind, ErrorKind::Internal);
    }

    #[test]
    fn nova_attach_answers_are_sorted() {
        let e = classify_compute(
            "attach volume",
            403,
            br#"{"forbidden": {"code": 403, "message": "The maximum allowed number of disk devices (6) to attach to a single instance has been exceeded."}}"#,
        );
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(e.message.starts_with("nova attach volume: "), "{e}");
        assert_eq!(
            classify_compute(
                "attach volume",
                403,
                br#"{"forbidden": {"message": "Policy doesn't allow it"}}"#
            )
            .kind,
            ErrorKind::PermissionDenied
        );
        let e = classify_compute(
            "attach volume",
            400,
            br#"{"badRequest": {"code": 400, "message": "Invalid volume: volume v is already attached to instances: s1"}}"#,
        );
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        let e = classify_compute(
            "get server",
            404,
            br#"{"itemNotFound": {"code": 404, "message": "Instance x could not be found."}}"#,
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        let e = classify_compute(
            "attach volume",
            409,
            br#"{"conflictingRequest": {"code": 409, "message": "Cannot 'attach_volume' instance x while it is in task_state rebooting"}}"#,
        );
        assert_eq!(e.kind, ErrorKind::Conflict);
    }
}
