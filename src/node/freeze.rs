//! Freezing filesystems so that a copy of their backing image is consistent.
//!
//! A frozen filesystem blocks every writer on the node, so two properties matter here: the
//! frozen window is as short as it can be, and whatever was frozen gets thawed, on every path:
//! errors, panics, and the caller's future being dropped mid-way.
//!
//! Freezing is the `FIFREEZE`/`FITHAW` ioctl pair on the mount point, called directly (no
//! `fsfreeze` process is spawned: two of those cost tens of milliseconds). `FIFREEZE` writes
//! back every dirty page and the journal before it returns, while new writes already wait; so
//! the filesystem is first flushed with `syncfs` while writers still run, and the freeze then
//! has only the last moments' writes left to flush.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::io::Errno;
use rustix::ioctl::{NoArg, Opcode, opcode};

use super::{NodeError, Result, blocking, show};

/// `FIFREEZE` and `FITHAW` from linux/fs.h: `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)`.
const FIFREEZE: Opcode = opcode::read_write::<std::ffi::c_int>(b'X', 119);
const FITHAW: Opcode = opcode::read_write::<std::ffi::c_int>(b'X', 120);

/// Calls the argument-less filesystem ioctl `OPCODE` (FIFREEZE or FITHAW) on `dir`.
///
/// The one `unsafe` of the crate: rustix has no safe wrapper for these two ioctls.
#[allow(unsafe_code)]
fn fs_ioctl<const OPCODE: Opcode>(dir: &File) -> rustix::io::Result<()> {
    // SAFETY: `OPCODE` is FIFREEZE or FITHAW. The kernel's handlers for both (fs/ioctl.c,
    // ioctl_fsfreeze and ioctl_fsthaw) never read or write the argument, so passing none
    // (NoArg: a null pointer) cannot make the kernel touch our memory; `dir` is an open
    // descriptor for the duration of the call.
    unsafe { rustix::ioctl::ioctl(dir, NoArg::<OPCODE>::new()) }
}

fn open_mount_point(op: &'static str, mount_point: &Path) -> Result<File> {
    File::open(mount_point).map_err(|e| NodeError::from_io(op, show(mount_point), &e))
}

fn errno_error(op: &'static str, mount_point: &Path, errno: Errno) -> NodeError {
    let io = std::io::Error::from(errno);
    let message = match errno {
        Errno::BUSY => format!("{io} (the filesystem is already frozen)"),
        Errno::OPNOTSUPP => format!("{io} (this filesystem cannot be frozen)"),
        Errno::PERM => format!("{io} (freezing needs CAP_SYS_ADMIN)"),
        _ => io.to_string(),
    };
    NodeError::with_kind(op, show(mount_point), message, io.kind())
}

/// Flushes the filesystem at `dir` (`syncfs`), so that a freeze that follows is short.
fn flush(mount_point: &Path, dir: &File) -> Result<()> {
    rustix::fs::syncfs(dir).map_err(|e| errno_error("flush", mount_point, e))
}

/// FIFREEZE on an open mount point.
fn freeze_fd(mount_point: &Path, dir: &File) -> Result<()> {
    fs_ioctl::<FIFREEZE>(dir).map_err(|e| errno_error("freeze", mount_point, e))
}

/// FITHAW on an open mount point; a filesystem that is not frozen counts as success (the
/// kernel answers EINVAL), so a retry after a partial failure is harmless.
fn thaw_fd(mount_point: &Path, dir: &File) -> Result<()> {
    match fs_ioctl::<FITHAW>(dir) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL) => {
            tracing::debug!(mount_point = %mount_point.display(), "filesystem was not frozen");
            Ok(())
        }
        Err(e) => Err(errno_error("thaw", mount_point, e)),
    }
}

/// Freezes the filesystem mounted at `mount_point`: flushes it and blocks new writes until
/// [`thaw`].
pub async fn freeze(mount_point: &Path) -> Result<()> {
    let mp = mount_point.to_path_buf();
    blocking("freeze", show(mount_point), move || {
        let dir = open_mount_point("freeze", &mp)?;
        flush(&mp, &dir)?;
        freeze_fd(&mp, &dir)?;
        tracing::info!(mount_point = %mp.display(), "froze filesystem");
        Ok(())
    })
    .await
}

/// Thaws the filesystem at `mount_point`. A filesystem that is not frozen counts as success.
pub async fn thaw(mount_point: &Path) -> Result<()> {
    let mp = mount_point.to_path_buf();
    blocking("thaw", show(mount_point), move || {
        let dir = open_mount_point("thaw", &mp)?;
        thaw_fd(&mp, &dir)
    })
    .await
}

/// Synchronous [`thaw`], for threads that must not (or cannot) await (the start-up repair of a
/// freeze an interrupted process left behind).
pub fn thaw_blocking(mount_point: &Path) -> Result<()> {
    let dir = open_mount_point("thaw", mount_point)?;
    thaw_fd(mount_point, &dir)
}

/// Filesystems frozen by this process that are still to be thawed.
///
/// Thaw explicitly with [`FrozenGuard::thaw_blocking`] to learn about failures. Dropping a
/// guard that still holds filesystems thaws them (FITHAW does not wait on I/O) and can only
/// log failures.
#[derive(Debug, Default)]
pub struct FrozenGuard {
    /// Mount point and an open descriptor on it, in freeze order.
    frozen: Vec<(PathBuf, File)>,
    since: Option<Instant>,
}

impl FrozenGuard {
    /// Flushes every filesystem of `mount_points`, then freezes them in order. If one fails,
    /// those already frozen are thawed before the error is returned. Blocks (call it from a
    /// blocking thread).
    ///
    /// Mount points on the same filesystem (bind mounts) are frozen once: freezing is per
    /// filesystem, and a second freeze fails with EBUSY.
    pub fn freeze_blocking(mount_points: &[PathBuf]) -> Result<Self> {
        let mut opened = Vec::new();
        let mut seen_devices = HashSet::new();
        for mp in mount_points {
            let dir = open_mount_point("freeze", mp)?;
            let dev = dir
                .metadata()
                .map_err(|e| NodeError::from_io("freeze", show(mp), &e))?
                .dev();
            if seen_devices.insert(dev) {
                opened.push((mp.clone(), dir));
            }
        }
        for (mp, dir) in &opened {
            flush(mp, dir)?;
        }
        let mut guard = Self::default();
        for (mp, dir) in opened {
            if let Err(e) = freeze_fd(&mp, &dir) {
                return Err(guard.abort(e));
            }
            guard.since.get_or_insert_with(Instant::now);
            guard.frozen.push((mp, dir));
        }
        Ok(guard)
    }

    /// Thaws everything, newest first, trying all even if one fails.
    pub fn thaw_blocking(mut self) -> Result<()> {
        self.thaw_all()
    }

    fn thaw_all(&mut self) -> Result<()> {
        let frozen = std::mem::take(&mut self.frozen);
        let errors: Vec<NodeError> = frozen
            .iter()
            .rev()
            .filter_map(|(mp, dir)| thaw_fd(mp, dir).err())
            .collect();
        if let Some(since) = self.since.take()
            && !frozen.is_empty()
        {
            let points: Vec<String> = frozen.iter().map(|(mp, _)| show(mp)).collect();
            tracing::info!(
                mount_points = %points.join(", "),
                frozen_ms = since.elapsed().as_secs_f64() * 1e3,
                "thawed filesystems"
            );
        }
        combine(errors)
    }

    fn abort(mut self, cause: NodeError) -> NodeError {
        if let Err(e) = self.thaw_all() {
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
        if self.frozen.is_empty() {
            return;
        }
        tracing::warn!("frozen filesystems left without explicit thaw; thawing now");
        if let Err(e) = self.thaw_all() {
            tracing::error!(error = %e, "failed to thaw filesystems");
        }
    }
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

/// Flushes and freezes every filesystem in `mount_points` (in order), runs `f`, and thaws
/// every filesystem it froze: all on one thread of the blocking pool.
///
/// Everything happens in that one blocking task, not in the caller: if the caller's future is
/// dropped while `f` runs, the filesystems must still stay frozen until `f` is done (otherwise
/// a clone could capture a half-written state), and must still be thawed after. If `f`
/// panics, the guard thaws during unwinding and an error is returned.
///
/// A failure to thaw is returned as an error even though `f` ran: a frozen filesystem hangs
/// every writer, so it must not go unnoticed.
pub async fn with_frozen<T, F>(mount_points: &[PathBuf], f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let points = mount_points.to_vec();
    let targets: Vec<String> = mount_points.iter().map(|p| show(p)).collect();
    blocking("run while frozen", targets.join(", "), move || {
        let guard = FrozenGuard::freeze_blocking(&points)?;
        let value = f();
        guard.thaw_blocking().map(|()| value)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_linux() {
        // linux/fs.h, as the kernel headers spell them out on x86_64 and aarch64.
        assert_eq!(FIFREEZE as u64, 0xc004_5877);
        assert_eq!(FITHAW as u64, 0xc004_5878);
    }

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
