//! A string that must never be shown: cloud keys, passwords, tokens.
//!
//! `Debug` and `Display` print `<redacted>`, so a secret inside a config struct, an error or a
//! log field cannot leak by formatting; the value is reachable only through [`Secret::expose`],
//! which makes every use greppable.

use serde::Deserialize;
use std::fmt;

/// A secret string.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `secrets` map of a CSI request, with every value wrapped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(std::collections::BTreeMap<String, Secret>);

impl Secrets {
    /// Wraps a request's secrets map.
    pub fn from_map(map: std::collections::HashMap<String, String>) -> Self {
        Self(map.into_iter().map(|(k, v)| (k, Secret::new(v))).collect())
    }

    /// The secret under `key`.
    pub fn get(&self, key: &str) -> Option<&Secret> {
        self.0.get(key)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys (never the values), for messages.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        let secrets = Secrets::from_map([("password".to_owned(), "hunter2".to_owned())].into());
        assert!(!format!("{secrets:?}").contains("hunter2"));
        assert_eq!(secrets.get("password").map(Secret::expose), Some("hunter2"));
    }
}
