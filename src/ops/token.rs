//! Opaque pagination tokens.
//!
//! A backend pages with its own cursor (a Cinder marker, a local key). The CSI `next_token`
//! wraps it so callers cannot mistake it for an id, and so that a token from another driver, a
//! truncated token or garbage is recognised and answered with ABORTED, as the spec asks.

use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "snapcsi1:";

/// Wraps a backend cursor into a CSI token.
pub fn encode(cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PREFIX}{cursor}"))
}

/// Unwraps a CSI `starting_token`; an empty token means the first page.
pub fn decode(token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::BadToken(format!("{token:?} was not issued by this driver"));
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    match text.strip_prefix(PREFIX) {
        Some(cursor) if !cursor.is_empty() => Ok(Some(cursor.to_owned())),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let token = encode("0199-abc");
        assert_eq!(decode(&token).expect("valid"), Some("0199-abc".to_owned()));
        assert_eq!(decode("").expect("empty"), None);
    }

    #[test]
    fn garbage_is_rejected_as_bad_token() {
        for garbage in [
            "x",
            "not a token!",
            "c25hcGNzaTE6",
            &URL_SAFE_NO_PAD.encode("other:1"),
        ] {
            let err = decode(garbage).expect_err(garbage);
            assert_eq!(err.code(), tonic::Code::Aborted, "{garbage}");
            assert!(err.to_string().starts_with("starting_token:"));
        }
    }
}
