//! Freezing filesystems so that a copy of their backing image is consistent.
//!
//! A frozen filesystem blocks every writer on the node, so the one property
//! that matters here is that whatever was frozen gets thawed, on every path:
//! errors, panics, and the caller's future being dropped mid-way.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use super::{NodeError, Result, run, run_unchecked, show};

const FSFREEZE: &str = "fsfreeze";

/// Freezes the filesystem mounted at `mount_point`: flushes it and blocks
/// new writes until [`thaw`].
pub async fn freeze(mount_point: &Path) -> Result<()> {
    run(
        "freeze",
        show(mount_point),
        FSFREEZE,
        ["--freeze".as_ref(), mount_point.as_os_str()],
    )
    .await?;
    tracing::info!(mount_point = %mount_point.display(), "froze filesystem");
    Ok(())
}

/// Thaws the filesystem at `mount_point`. A filesystem that is not frozen
/// counts as success, so a retry after a partial failure is harmless.
pub async fn thaw(mount_point: &Path) -> Result<()> {
    let out = run_unchecked(
        "thaw",
        show(mount_point),
        FSFREEZE,
        ["--unfreeze".as_ref(), mount_point.as_os_str()],
    )
    .await?;
    thaw_result(mount_point, &out)
}

/// Synchronous [`thaw`], for threads that must not (or cannot) await.
pub fn thaw_blocking(mount_point: &Path) -> Result<()> {
    let out = std::process::Command::new(FSFREEZE)
        .arg("--unfreeze")
        .arg(mount_point)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NodeError::from_io("thaw", show(mount_point), &e))?;
    thaw_result(mount_point, &out)
}

fn thaw_result(mount_point: &Path, out: &Output) -> Result<()> {
    if out.status.success() {
        tracing::info!(mount_point = %mount_point.display(), "thawed filesystem");
        return Ok(());
    }
    let msg = super::tool_message(FSFREEZE, out);
    // The kernel answers EINVAL to thawing a filesystem that is not frozen.
    if msg.contains("Invalid argument") {
        tracing::debug!(mount_point = %mount_point.display(), "filesystem was not frozen");
        return Ok(());
    }
    Err(NodeError::new("thaw", show(mount_point), msg))
}

/// Filesystems frozen by this process that are still to be thawed.
///
/// Thaw explicitly with [`FrozenGuard::thaw`] or
/// [`FrozenGuard::thaw_blocking`] to learn about failures. Dropping a guard
/// that still holds filesystems thaws them on a separate thread (so dropping
/// inside async code does not block the runtime) and can only log failures.
#[derive(Debug, Default)]
pub struct FrozenGuard {
    frozen: Vec<PathBuf>,
}

impl FrozenGuard {
    /// Freezes `mount_points` in order. If one fails, those already frozen
    /// are thawed before the error is returned.
    ///
    /// Mount points on the same filesystem (bind mounts) are frozen once:
    /// freezing is per filesystem, and a second freeze fails with EBUSY.
    pub async fn freeze(mount_points: &[PathBuf]) -> Result<Self> {
        let mut guard = Self::default();
        let mut seen_devices = HashSet::new();
        for mp in mount_points {
            let meta = match tokio::fs::metadata(mp).await {
                Ok(m) => m,
                Err(e) => {
                    let err = NodeError::from_io("freeze", show(mp), &e);
                    return Err(guard.abort(err).await);
                }
            };
            if !seen_devices.insert(meta.dev()) {
                continue;
            }
            if let Err(e) = freeze(mp).await {
                return Err(guard.abort(e).await);
            }
            guard.frozen.push(mp.clone());
        }
        Ok(guard)
    }

    /// The mount points this guard froze and has not thawed yet.
    pub fn mount_points(&self) -> &[PathBuf] {
        &self.frozen
    }

    /// Thaws everything, newest first, trying all even if one fails.
    pub async fn thaw(mut self) -> Result<()> {
        let frozen = std::mem::take(&mut self.frozen);
        let mut errors = Vec::new();
        for mp in frozen.iter().rev() {
            if let Err(e) = thaw(mp).await {
                errors.push(e);
            }
        }
        combine(errors)
    }

    /// Like [`FrozenGuard::thaw`], for code already on a blocking thread.
    pub fn thaw_blocking(mut self) -> Result<()> {
        thaw_all_blocking(std::mem::take(&mut self.frozen))
    }

    async fn abort(self, cause: NodeError) -> NodeError {
        if let Err(e) = self.thaw().await {
            tracing::error!(error = %e, "failed to thaw after a failed freeze");
            return NodeError::new(
                cause.op,
                cause.target,
                format!("{}; additionally: {e}", cause.message),
            );
        }
        cause
    }
}

impl Drop for FrozenGuard {
    fn drop(&mut self) {
        let frozen = std::mem::take(&mut self.frozen);
        if frozen.is_empty() {
            return;
        }
        tracing::warn!(
            ?frozen,
            "frozen filesystems left without explicit thaw; thawing now"
        );
        let report = |r: Result<()>| {
            if let Err(e) = r {
                tracing::error!(error = %e, "failed to thaw filesystems");
            }
        };
        // A failed spawn consumes the closure, so keep a copy to thaw with
        // inline: blocking this thread briefly beats a node-wide write hang.
        let fallback = frozen.clone();
        let spawned = std::thread::Builder::new()
            .name("snapcsi-thaw".into())
            .spawn(move || report(thaw_all_blocking(frozen)));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start thaw thread; thawing inline");
            report(thaw_all_blocking(fallback));
        }
    }
}

fn thaw_all_blocking(frozen: Vec<PathBuf>) -> Result<()> {
    let errors = frozen
        .iter()
        .rev()
        .filter_map(|mp| thaw_blocking(mp).err())
        .collect();
    combine(errors)
}

fn combine(mut errors: Vec<NodeError>) -> Result<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let targets: Vec<&str> = errors.iter().map(|e| e.target.as_str()).collect();
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Err(NodeError::new(
                "thaw",
                targets.join(", "),
                messages.join("; "),
            ))
        }
    }
}

/// Freezes every filesystem in `mount_points` (in order), runs `f` on the
/// blocking thread pool, and thaws every filesystem it froze.
///
/// Thawing happens on the blocking thread right after `f` returns, not back
/// in the caller: if the caller's future is dropped while `f` runs, the
/// filesystems must still stay frozen until `f` is done (otherwise a clone
/// could capture a half-written state), and must still be thawed after.
/// If `f` panics, the guard thaws during unwinding and an error is returned.
///
/// A failure to thaw is returned as an error even though `f` ran: a frozen
/// filesystem hangs every writer, so it must not go unnoticed.
pub async fn with_frozen<T, F>(mount_points: &[PathBuf], f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let guard = FrozenGuard::freeze(mount_points).await?;
    let task = tokio::task::spawn_blocking(move || {
        let value = f();
        (value, guard.thaw_blocking())
    });
    match task.await {
        Ok((value, Ok(()))) => Ok(value),
        Ok((_, Err(e))) => Err(e),
        Err(e) => {
            let targets: Vec<String> = mount_points.iter().map(|p| show(p)).collect();
            Err(NodeError::new(
                "run while frozen",
                targets.join(", "),
                format!("task failed: {e}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_to_freeze_still_runs_f() {
        let v = with_frozen(&[], || 41 + 1).await.expect("no freeze needed");
        assert_eq!(v, 42);
    }

    #[tokio::test]
    async fn missing_mount_point_fails_before_f_runs() {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let e = with_frozen(&[PathBuf::from("/nonexistent/snapcsi")], move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await
        .expect_err("cannot freeze a missing path");
        assert!(e.is_not_found());
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn several_thaw_errors_are_combined() {
        let e = combine(vec![
            NodeError::new("thaw", "/a", "x"),
            NodeError::new("thaw", "/b", "y"),
        ])
        .expect_err("two errors");
        assert_eq!(e.target, "/a, /b");
        assert!(e.message.contains("thaw /a: x") && e.message.contains("thaw /b: y"));
    }
}
