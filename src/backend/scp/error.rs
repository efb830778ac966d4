//! SCP answers sorted into the shared [`ErrorKind`]s — the one place that does it.

use crate::backend::{BackendError, ErrorKind};

/// The longest piece of a cloud message kept in an error.
const MAX_MESSAGE: usize = 400;

/// Codes of 400 answers that refuse a request because of an object's state, not because the
/// request is malformed (issue 15): the same request may succeed once the object changes.
const STATE_CONFLICTS: [&str; 4] = [
    "InvalidVolumeState",
    "InvalidSnapshotState",
    "VolumeInUse",
    "VolumeHasSnapshots",
];

/// The error of a non-2xx answer to `operation`, keeping the service's own message.
///
/// `status` decides the kind, and for a 400 the error code in the body: a state conflict is
/// FAILED_PRECONDITION (the object must change first; CSI DeleteVolume: "volume has
/// snapshots" -> FAILED_PRECONDITION), anything else a malformed request. A 400 to a list
/// that carried a `marker` is decided by the caller (it means the cursor, see `ScpBackend`).
pub fn from_status(operation: &str, status: u16, body: &[u8]) -> BackendError {
    let message = cloud_message(body);
    let kind = match status {
        400 if cloud_code(body).is_some_and(|c| STATE_CONFLICTS.contains(&c.as_str())) => {
            ErrorKind::FailedPrecondition
        }
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

/// The objects of an error body that may carry `code` and `message`: the body itself,
/// `error`, the first of `errors`, or the first of a top-level array (the SDK's
/// `ValidationErrorModel` list: `msg`, `loc`).
fn error_objects(value: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    [
        Some(value),
        value.get("error"),
        value.get("errors").and_then(|e| e.get(0)),
        value.get(0),
    ]
    .into_iter()
    .flatten()
}

/// The error code of an SCP error body (`code`), if it has one.
pub fn cloud_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    error_objects(&value).find_map(|v| v.get("code")?.as_str().map(str::to_owned))
}

/// The message in an SCP error body, or the body's text when it is not the JSON we know.
///
/// The shape the simulator answers (`{"code", "message"}`) is an assumption; other shapes
/// (`{"error": {...}}`, `{"errors": [{...}]}`, `detail`, the SDK's validation list
/// `[{"loc", "msg"}]`) are read too, so that a real service's words reach the operator
/// whatever the wrapper.
pub fn cloud_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let found = parsed.as_ref().and_then(|value| {
        error_objects(value).find_map(|v| {
            let message = v
                .get("message")
                .or_else(|| v.get("detail"))
                .or_else(|| v.get("msg"))
                .and_then(|m| m.as_str())?;
            let place = v
                .get("loc")
                .and_then(|l| l.as_array())
                .map(|parts| {
                    parts
                        .iter()
                        .filter_map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .filter(|p| !p.is_empty());
            let message = match place {
                Some(place) => format!("{place}: {message}"),
                None => message.to_owned(),
            };
            let code = v.get("code").and_then(|c| c.as_str());
            Some(match code {
                Some(code) => format!("{message} ({code})"),
                None => message,
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
    fn state_conflicts_are_preconditions_and_malformed_requests_invalid() {
        for code in STATE_CONFLICTS {
            let body = format!(r#"{{"code":"{code}","message":"volume v is busy"}}"#);
            let err = from_status("delete volume", 400, body.as_bytes());
            assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{code}");
            assert!(err.message.contains(code), "{err}");
        }
        for body in [
            &br#"{"code":"InvalidParameter","message":"size must be between 8 and 16384"}"#[..],
            br#"{"code":"InvalidRequestBody","message":"not JSON"}"#,
            br#"[{"loc":["body","size"],"msg":"ensure this value is greater than 7","type_":"x"}]"#,
            b"",
        ] {
            let err = from_status("create volume", 400, body);
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
        }
        let listed = cloud_message(br#"[{"loc":["body","size"],"msg":"too small"}]"#);
        assert_eq!(listed, "body.size: too small");
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
