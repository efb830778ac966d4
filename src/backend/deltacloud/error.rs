//! Deltacloud answers sorted into [`ErrorKind`], in one place.
//!
//! Errors come as XML (`<error status='404' url='...'><kind>not_found</kind><message>...`) or,
//! when JSON was asked for, `{"error": {"status": 404, "kind": ..., "message": ...}}`. Both
//! are read with a real parser; the server's message is kept.

use crate::backend::{BackendError, ErrorKind};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
struct ErrorDoc {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JsonError {
    error: ErrorDoc,
}

/// The error for a non-success answer of `operation`.
pub fn classify(operation: &str, status: u16, content_type: &str, body: &[u8]) -> BackendError {
    let doc = if content_type.contains("json") {
        serde_json::from_slice::<JsonError>(body)
            .ok()
            .map(|j| j.error)
    } else {
        std::str::from_utf8(body)
            .ok()
            .and_then(|text| quick_xml::de::from_str::<ErrorDoc>(text).ok())
    };
    let doc = doc.unwrap_or_default();
    let message = doc
        .message
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("HTTP {status} without an error document"));
    let kind_text = doc.kind.map(|k| format!("{k}, ")).unwrap_or_default();
    BackendError::new(
        kind_of(status),
        format!("deltacloud {operation}: {message} ({kind_text}HTTP {status})"),
    )
}

fn kind_of(status: u16) -> ErrorKind {
    match status {
        400 | 422 => ErrorKind::InvalidArgument,
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        // The driver under the server does not offer this collection or method.
        405 | 501 => ErrorKind::Unsupported,
        409 => ErrorKind::Conflict,
        // Not documented for Deltacloud; what we send is small, so a 413 is a limit of the
        // cloud behind it (OpenStack's overLimit meaning), which the snapshotter retries.
        413 => ErrorKind::QuotaExceeded,
        // Refused before it was handled (RFC 9110 429 and 503): retry with backoff.
        429 | 503 => ErrorKind::Throttled,
        // Deltacloud reports a failure of the cloud behind it as 500 (backend error) or 502
        // (provider error), and 504 when the cloud timed out: retry with backoff.
        500 | 502 | 504 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

/// A snapshot or volume in a state that can never become usable. FAILED_PRECONDITION: the
/// object's state forbids the call (INTERNAL would blame the driver); not retried as if the
/// cloud were only slow.
pub fn state_error(what: &str, id: &str, state: Option<&str>) -> BackendError {
    BackendError::new(
        ErrorKind::FailedPrecondition,
        format!(
            "deltacloud: {what} {id} is in state {:?} at the cloud; delete it and create it again",
            state.unwrap_or("")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_error_formats() {
        let xml = b"<?xml version='1.0' encoding='utf-8' ?>\n<error status='404' url='/api/storage_snapshots/x'><kind>not_found</kind><message>Storage snapshot 'x' not found</message></error>";
        let e = classify("get snapshot", 404, "application/xml", xml);
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(
            e.message.contains("Storage snapshot 'x' not found"),
            "{}",
            e.message
        );
        let json =
            br#"{"error":{"status":401,"kind":"not_authorized","message":"Not authorized"}}"#;
        let e = classify("list", 401, "application/json", json);
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert!(e.message.contains("Not authorized"));
        let e = classify("list", 503, "text/html", b"<html>down</html>");
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert!(e.retryable);
    }
}
