//! Creates whose outcome is unknown.
//!
//! Idempotency by name has one gap: a create request the cloud has received but not yet
//! committed. If this process dies (or its HTTP call times out) in that window, the repeated
//! call looks the name up, finds nothing — the cloud is still working on the first request —
//! and would create a second object. The crash harness found exactly that against the real
//! Cinder (tests/crash.rs).
//!
//! So before a cloud create is sent, an *intent* for its name is written to the data
//! directory, and it is removed once the cloud's answer is known. A repeated call that finds no
//! object while a younger-than-`grace` intent exists answers UNAVAILABLE (the sidecars retry)
//! instead of creating again; once the first object shows up, the lookup returns it, and once
//! `grace` has passed without one, the create is sent again. Backends whose objects live in
//! this process's own store (`node_local`) never need this: their creates cannot outlive the
//! process.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The journal of creates sent whose answer has not arrived.
#[derive(Clone, Debug)]
pub struct Intents {
    dir: Option<PathBuf>,
    grace: Duration,
    pending: Arc<Mutex<HashMap<String, SystemTime>>>,
}

impl Intents {
    /// A journal kept only in memory (covers timeouts within one process, not restarts).
    pub fn in_memory(grace: Duration) -> Self {
        Self {
            dir: None,
            grace,
            pending: Arc::default(),
        }
    }

    /// A journal kept in `dir` (created if missing), loaded now so intents of a previous run
    /// are honoured.
    pub fn open(dir: &Path, grace: Duration) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut pending = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            // "<unix milliseconds>\n<key>"; a torn file (a crash while writing it) counts as
            // sent now, which only makes the next attempt wait longer.
            let (when, key) = text.split_once('\n').unwrap_or(("", ""));
            let when = when
                .parse::<u64>()
                .ok()
                .map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms));
            if key.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            pending.insert(key.to_owned(), when);
        }
        Ok(Self {
            dir: Some(dir.to_owned()),
            grace,
            pending: Arc::new(Mutex::new(pending)),
        })
    }

    /// How long ago a create of `key` with an unknown outcome was sent, if that is less than
    /// the grace period; older intents are forgotten.
    pub fn unsettled(&self, key: &str) -> Option<Duration> {
        let mut pending = self.lock();
        let sent = *pending.get(key)?;
        let age = SystemTime::now()
            .duration_since(sent)
            .unwrap_or(Duration::ZERO);
        if age < self.grace {
            return Some(age);
        }
        pending.remove(key);
        drop(pending);
        self.remove_file(key);
        None
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Records that a create of `key` is about to be sent; durable before it returns.
    pub fn record(&self, key: &str) -> std::io::Result<()> {
        let now = SystemTime::now();
        if let Some(dir) = &self.dir {
            let ms = now
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let mut file = std::fs::File::create(dir.join(file_name(key)))?;
            file.write_all(format!("{ms}\n{key}").as_bytes())?;
            file.sync_all()?;
            // The new directory entry must survive a power loss too.
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.lock().insert(key.to_owned(), now);
        Ok(())
    }

    /// Forgets `key`: the cloud's answer is known (the object exists or was refused).
    pub fn settle(&self, key: &str) {
        if self.lock().remove(key).is_some() {
            self.remove_file(key);
        }
    }

    fn remove_file(&self, key: &str) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(file_name(key)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SystemTime>> {
        // A panic elsewhere cannot leave the map half-updated (single inserts and removes).
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Names are caller-chosen text; the file name is a digest of the key.
fn file_name(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_survives_a_restart_until_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let grace = Duration::from_secs(60);
        let first = Intents::open(dir.path(), grace).expect("open");
        first.record("snapshot a").expect("record");
        first.record("volume b").expect("record");
        first.settle("volume b");
        drop(first);

        let second = Intents::open(dir.path(), grace).expect("reopen");
        assert!(second.unsettled("snapshot a").is_some());
        assert!(second.unsettled("volume b").is_none());
        second.settle("snapshot a");
        let third = Intents::open(dir.path(), grace).expect("reopen");
        assert!(third.unsettled("snapshot a").is_none());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn an_intent_older_than_the_grace_period_is_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let intents = Intents::open(dir.path(), Duration::from_millis(30)).expect("open");
        intents.record("snapshot a").expect("record");
        assert!(intents.unsettled("snapshot a").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(intents.unsettled("snapshot a").is_none());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn a_torn_intent_file_counts_as_sent_now() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("x"), "garbage\nsnapshot a").expect("write");
        std::fs::write(dir.path().join("y"), "").expect("write");
        let intents = Intents::open(dir.path(), Duration::from_secs(60)).expect("open");
        let age = intents.unsettled("snapshot a").expect("pending");
        assert!(age < Duration::from_secs(5));
        assert!(!dir.path().join("y").exists(), "an empty intent is dropped");
    }
}
