//! SCP answers sorted into the shared [`ErrorKind`]s — the one place that does it.

use crate::backend::{BackendError, ErrorKind};

/// The longest piece of a cloud message kept in an error.
const MAX_MESSAGE: usize = 400;

/// The error of a non-2xx answer to `operation`, keeping the service's own message.
///
/// `status` decides the kind; a 400 to a list that carried a `marker` is decided by the
/// caller (it means the cursor, see `ScpBackend`).
pub fn from_status(operation: &str, status: u16, body: &[u8]) -> BackendError {
    let message = cloud_message(body);
    let kind = match status {
        // Seed 003 documents 400 Bad Request and 401 Unauthorized for POST /v1/snapshots.
        400 | 422 => ErrorKind::InvalidArgument,
        // A refused signature, access key or timestamp: UNAUTHENTICATED for the caller.
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        // The object is busy in another operation (Cinder-like state conflict): retry later.
        409 => ErrorKind::Conflict,
        // A quota answer (Cinder: 413 for "VolumeLimitExceeded").
        413 => ErrorKind::QuotaExceeded,
        // Rate limited even after the HTTP client's retries: transient, the sidecars retry.
        // Rate limited or down for maintenance (RFC 9110: the request was not handled) even
        // after the HTTP client's retries: transient, the sidecars retry.
        429 | 503 => ErrorKind::Throttled,
        // The service failed: transient from our side, UNAVAILABLE makes the sidecars retry
        // with backoff instead of giving up.
        500 | 502 | 504 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    let what = match status {
        401 => {
            "request refused as unauthenticated (check access_key, secret_key, account_id \
                and the clock)"
        }
        403 => "request refused: not permitted",
        429 => "rate limited",
        _ => "request failed",
    };
    BackendError::new(
        kind,
        format!("scp {operation}: HTTP {status}, {what}: {message}"),
    )
}

/// The message in an SCP error body, or the body's text when it is not the JSON we know.
///
/// The shape the simulator answers (`{"code", "message"}`) is an assumption; other shapes
/// (`{"error": {...}}`, `{"errors": [{...}]}`, `detail`) are read too, so that a real
/// service's words reach the operator whatever the wrapper.
pub fn cloud_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let found = parsed.as_ref().and_then(|value| {
        let candidates = [
            Some(value),
            value.get("error"),
            value.get("errors").and_then(|e| e.get(0)),
        ];
        candidates.into_iter().flatten().find_map(|v| {
            let message = v
                .get("message")
                .or_else(|| v.get("detail"))
                .and_then(|m| m.as_str())?;
            let code = v.get("code").and_then(|c| c.as_str());
            Some(match code {
                Some(code) => format!("{message} ({code})"),
                None => message.to_owned(),
            })
        })
    });
    let message = found.unwrap_or_else(|| text.trim().to_owned());
    let message = if message.is_empty() {
        "(empty body)".to_owned()
    } else {
        message
    };
    truncate(message)
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_kinds() {
        let cases = [
            (400, ErrorKind::InvalidArgument),
            (401, ErrorKind::Unauthorized),
            (403, ErrorKind::PermissionDenied),
            (404, ErrorKind::NotFound),
            (409, ErrorKind::Conflict),
            (413, ErrorKind::QuotaExceeded),
            (429, ErrorKind::Throttled),
            (500, ErrorKind::Unavailable),
            (503, ErrorKind::Throttled),
            (418, ErrorKind::Internal),
        ];
        for (status, kind) in cases {
            assert_eq!(from_status("op", status, b"").kind, kind, "{status}");
        }
    }

    #[test]
    fn keeps_the_cloud_message() {
        let err = from_status(
            "create snapshot",
            400,
            br#"{"code":"InvalidParameter","message":"volume_id is required"}"#,
        );
        assert!(err.message.contains("volume_id is required"), "{err}");
        assert!(err.message.contains("InvalidParameter"), "{err}");
        assert!(err.message.contains("create snapshot"), "{err}");
        let nested = cloud_message(br#"{"errors":[{"detail":"nope"}]}"#);
        assert_eq!(nested, "nope");
        assert_eq!(cloud_message(b"plain text\n"), "plain text");
        assert_eq!(
            cloud_message(&[b'x'; 1000]).chars().count(),
            MAX_MESSAGE + 1
        );
    }
}
