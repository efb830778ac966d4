//! SoftLayer answers sorted into [`ErrorKind`], in one place.
//!
//! SoftLayer's REST errors are `{"error": "<message>", "code": "SoftLayer_Exception_..."}`;
//! the code says more than the HTTP status, so it is looked at first.

use crate::backend::{BackendError, ErrorKind};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    code: Option<String>,
}

/// The error for a non-success answer of `operation` with HTTP `status` and `body`.
pub fn classify(operation: &str, status: u16, body: &[u8]) -> BackendError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (message, code) = match &parsed {
        Some(b) => (
            b.error.trim().to_owned(),
            b.code.clone().unwrap_or_default(),
        ),
        None => (
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            String::new(),
        ),
    };
    let kind = kind_of(status, &code);
    let code_text = if code.is_empty() {
        String::new()
    } else {
        format!("{code}, ")
    };
    BackendError::new(
        kind,
        format!("softlayer {operation}: {message} ({code_text}HTTP {status})"),
    )
}

fn kind_of(status: u16, code: &str) -> ErrorKind {
    match code {
        "SoftLayer_Exception_ObjectNotFound" => return ErrorKind::NotFound,
        // Rate limits lift by themselves: the sidecars retry UNAVAILABLE with backoff.
        "SoftLayer_Exception_WebService_RateLimitExceeded" => return ErrorKind::Throttled,
        "SoftLayer_Exception_Network_Storage_NoSnapshotSpace" => {
            return ErrorKind::FailedPrecondition;
        }
        // An active transaction (provisioning, another snapshot) on the volume: busy.
        "SoftLayer_Exception_Network_Storage_Busy" => return ErrorKind::Conflict,
        _ => {}
    }
    if code.starts_with("SoftLayer_Exception_Permission") {
        return ErrorKind::PermissionDenied;
    }
    match status {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        // Refused before it was handled (RFC 9110 429 and 503).
        429 | 503 => ErrorKind::Throttled,
        // Not documented for SoftLayer; what we send is small, so a 413 is a limit of the
        // account (OpenStack's overLimit meaning), which the snapshotter retries.
        413 => ErrorKind::QuotaExceeded,
        // SoftLayer rejects malformed calls with 400; everything we send is built here, so a
        // 400 is a request the service does not accept for this object.
        400 => ErrorKind::InvalidArgument,
        // SoftLayer answers 500 for server-side exceptions without telling transient from
        // permanent; UNAVAILABLE lets the sidecars retry with backoff, the message keeps the
        // exception code for the operator.
        500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_win_over_statuses() {
        let e = classify(
            "get volume",
            404,
            br#"{"error":"Unable to find object with id of '1'.","code":"SoftLayer_Exception_ObjectNotFound"}"#,
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("Unable to find object"), "{}", e.message);
        let e = classify(
            "create",
            500,
            br#"{"error":"Rate limit exceeded","code":"SoftLayer_Exception_WebService_RateLimitExceeded"}"#,
        );
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert!(e.retryable);
        let e = classify(
            "x",
            401,
            br#"{"error":"Invalid API token.","code":"SoftLayer_Exception_Public"}"#,
        );
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        let e = classify("x", 502, b"<html>bad gateway</html>");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("HTTP 502"));
    }
}
