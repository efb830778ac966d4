//! Operating-system operations used by the CSI Node service: loop devices,
//! mounts, filesystem creation and growth, freezing and usage statistics.
//!
//! Everything that can block (external tools, syscalls that may wait on I/O)
//! is exposed as an `async fn` so that gRPC handlers never stall a runtime
//! worker thread.

pub mod disk;
pub mod format;
pub mod freeze;
pub mod instance;
pub mod loopdev;
pub mod mount;
pub mod stats;

pub use freeze::{FrozenGuard, with_frozen};
pub use mount::MountEntry;
pub use stats::FsStats;

use std::ffi::OsStr;
use std::fmt::Display;
use std::io;
use std::process::{Output, Stdio};

use tokio::process::Command;

/// How long stderr of a failed tool may get inside an error message; some
/// tools (mkfs.xfs) print their entire usage text on a bad size.
const MAX_MESSAGE_LEN: usize = 2048;

/// Failure of one node operation.
///
/// `op` names the operation ("mount", "losetup", ...), `target` the objects
/// it acted on, and `message` what the kernel or the tool said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} {target}: {message}")]
pub struct NodeError {
    pub op: &'static str,
    pub target: String,
    pub message: String,
    /// Classification so callers can map errors to gRPC codes without
    /// matching on tool-specific text.
    pub kind: io::ErrorKind,
}

pub type Result<T> = std::result::Result<T, NodeError>;

impl NodeError {
    pub fn new(op: &'static str, target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::with_kind(op, target, message, io::ErrorKind::Other)
    }

    pub fn with_kind(
        op: &'static str,
        target: impl Into<String>,
        message: impl Into<String>,
        kind: io::ErrorKind,
    ) -> Self {
        Self {
            op,
            target: target.into(),
            message: message.into(),
            kind,
        }
    }

    pub(crate) fn from_io(op: &'static str, target: impl Into<String>, err: &io::Error) -> Self {
        Self::with_kind(op, target, err.to_string(), err.kind())
    }

    /// True when the object the operation acted on does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == io::ErrorKind::NotFound
    }

    /// True when the failure is an invalid request (unsupported filesystem
    /// type, bad size, ...) rather than a transient OS condition.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            self.kind,
            io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
        )
    }
}

/// Formats a path for error messages and logs.
pub(crate) fn show(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Runs an external tool and returns its output if it exited with status 0.
///
/// The C locale is forced so that the messages we sometimes match on (and
/// that end up in errors shown to operators) are stable.
pub(crate) async fn run<I, S>(
    op: &'static str,
    target: impl Display,
    program: &str,
    args: I,
) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run_unchecked(op, &target, program, args).await?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(failure(op, target, program, &output))
    }
}

/// Like [`run`] but returns the output whatever the exit status, for tools
/// whose non-zero statuses carry meaning (blkid, umount, fsfreeze).
pub(crate) async fn run_unchecked<I, S>(
    op: &'static str,
    target: impl Display,
    program: &str,
    args: I,
) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tracing::debug!(op, %target, program, "running node tool");
    cmd.output().await.map_err(|e| {
        let kind = match e.kind() {
            // A missing binary is a broken node image, not a missing volume:
            // keep it from looking like "object not found" to callers.
            io::ErrorKind::NotFound => io::ErrorKind::Unsupported,
            k => k,
        };
        NodeError::with_kind(
            op,
            target.to_string(),
            format!("cannot run {program}: {e}"),
            kind,
        )
    })
}

/// Builds the error for a tool that exited unsuccessfully.
pub(crate) fn failure(
    op: &'static str,
    target: impl Display,
    program: &str,
    output: &Output,
) -> NodeError {
    NodeError::new(op, target.to_string(), tool_message(program, output))
}

/// The most useful text a failed tool produced: stderr, else stdout, else
/// the exit status.
pub(crate) fn tool_message(program: &str, output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if !stderr.trim().is_empty() {
        stderr
    } else {
        stdout
    };
    let text = strip_usage(text.trim());
    if text.is_empty() {
        return format!("{program} failed with {}", output.status);
    }
    truncate(text)
}

/// Drops a trailing usage text, which only hides the real complaint.
fn strip_usage(text: &str) -> &str {
    match text.find("\nUsage:") {
        Some(i) => text[..i].trim_end(),
        None => text,
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_LEN {
        return text.to_string();
    }
    let mut end = MAX_MESSAGE_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Awaits a `spawn_blocking` task, turning a panic or cancellation into a
/// [`NodeError`] instead of propagating it into the gRPC handler.
pub(crate) async fn blocking<T, F>(op: &'static str, target: String, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(NodeError::new(
            op,
            target,
            format!("worker task failed: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn display_matches_tool_style() {
        let e = NodeError::new("mount", "/dev/loop3 on /x", "wrong fs type");
        assert_eq!(e.to_string(), "mount /dev/loop3 on /x: wrong fs type");
        assert!(!e.is_not_found());
    }

    #[test]
    fn message_prefers_stderr_and_strips_usage() {
        let out = Output {
            status: ExitStatus::from_raw(1 << 8),
            stdout: b"ignored".to_vec(),
            stderr: b"Filesystem must be larger than 300MB.\nUsage: mkfs.xfs\n  -b size\n".to_vec(),
        };
        assert_eq!(
            tool_message("mkfs.xfs", &out),
            "Filesystem must be larger than 300MB."
        );
    }

    #[test]
    fn message_falls_back_to_status() {
        let out = Output {
            status: ExitStatus::from_raw(3 << 8),
            stdout: Vec::new(),
            stderr: b"  \n".to_vec(),
        };
        assert!(tool_message("x", &out).starts_with("x failed with"));
    }

    #[test]
    fn long_messages_are_truncated_on_char_boundary() {
        let text = "é".repeat(MAX_MESSAGE_LEN);
        let t = truncate(&text);
        assert!(t.len() <= MAX_MESSAGE_LEN + 3);
        assert!(t.ends_with("..."));
    }

    #[tokio::test]
    async fn missing_tool_is_not_reported_as_not_found() {
        let e = run("probe", "x", "/nonexistent/snapcsi-tool", ["a"])
            .await
            .expect_err("tool does not exist");
        assert!(!e.is_not_found());
        assert!(e.message.contains("cannot run"));
    }
}
