//! Per-key in-flight guard.
//!
//! CSI: "If there is already an operation pending for the specified volume/snapshot, the Plugin
//! SHOULD return ABORTED." The guard is keyed (by CSI name, by volume id, …) so unrelated calls
//! never wait on each other; a second call for a key that is busy fails at once instead of
//! queueing, and the sidecar retries it later.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A set of keys with an operation in flight.
#[derive(Debug, Default, Clone)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Held while an operation on its key runs; releases the key when dropped.
#[derive(Debug)]
pub struct Held {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    /// Claims `key`, or `None` if an operation on it is already running.
    pub fn try_hold(&self, key: impl Into<String>) -> Option<Held> {
        let key = key.into();
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !keys.insert(key.clone()) {
            return None;
        }
        crate::metrics::metrics().operation_started();
        Some(Held {
            keys: Arc::clone(&self.keys),
            key,
        })
    }

    /// How many keys are held right now.
    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.remove(&self.key);
        crate::metrics::metrics().operation_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_hold_of_a_busy_key_fails_until_released() {
        let inflight = InFlight::default();
        let first = inflight.try_hold("snapshot/a").expect("free key");
        assert!(inflight.try_hold("snapshot/a").is_none());
        assert!(
            inflight.try_hold("snapshot/b").is_some(),
            "other keys are independent"
        );
        drop(first);
        assert!(inflight.try_hold("snapshot/a").is_some());
        assert!(inflight.is_empty());
    }
}
