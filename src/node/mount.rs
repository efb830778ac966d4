//! Mounting, bind mounting and unmounting, and reading the mount table.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::{NodeError, Result, run, run_unchecked, show};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Upper bound on how many mounts stacked on one target [`unmount`] peels
/// off; a mount that keeps reappearing means something else is mounting.
const MAX_STACKED: usize = 16;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    /// Path inside the source filesystem that is mounted here: `/` for a
    /// whole filesystem, a subdirectory or file for bind mounts.
    pub root: PathBuf,
    /// What was mounted: the device for block filesystems.
    pub source: String,
    pub fstype: String,
    /// Per-mount options ("rw", "nosuid", ...).
    pub options: Vec<String>,
    /// Per-superblock options, shared by every mount of the filesystem.
    pub super_options: Vec<String>,
    /// Writes through this mount fail, because either the mount or the whole
    /// filesystem is read-only.
    pub read_only: bool,
}

/// Parses the contents of a mountinfo file. Malformed lines are skipped:
/// the format is stable, and one odd line must not hide every mount.
pub fn parse_mountinfo(data: &[u8]) -> Vec<MountEntry> {
    data.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    let sep = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
    let root = fields.get(3)?;
    let mount_point = fields.get(4)?;
    let options = fields.get(5)?;
    let fstype = fields.get(sep + 1)?;
    let source = fields.get(sep + 2)?;
    let super_options = fields.get(sep + 3).copied().unwrap_or_default();

    let options = split_options(options);
    let super_options = split_options(super_options);
    let read_only = options.iter().chain(&super_options).any(|o| o == "ro");
    Some(MountEntry {
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
        root: PathBuf::from(OsString::from_vec(unescape(root))),
        source: String::from_utf8_lossy(&unescape(source)).into_owned(),
        fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
        options,
        super_options,
        read_only,
    })
}

fn split_options(field: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(&unescape(field))
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect()
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash
/// (`\040`, `\011`, `\012`, `\134`). Anything else is kept as it is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(&[a, b, c]) = field.get(i + 1..i + 4)
            && [a, b, c].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = u32::from(a - b'0') * 64 + u32::from(b - b'0') * 8 + u32::from(c - b'0');
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

async fn read_mount_table() -> Result<Vec<MountEntry>> {
    let data = tokio::fs::read(MOUNTINFO)
        .await
        .map_err(|e| NodeError::from_io("read mount table", MOUNTINFO, &e))?;
    Ok(parse_mountinfo(&data))
}

/// The form of `path` that the kernel prints in the mount table.
///
/// A path that cannot be resolved (missing, or on a dead mount that fails
/// every lookup) is still compared in its absolute, unresolved form, so a
/// stale mount can still be found and removed.
async fn resolve(path: &Path) -> PathBuf {
    match tokio::fs::canonicalize(path).await {
        Ok(p) => p,
        Err(_) => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// The mount whose mount point is exactly `path`, or `None` if `path` is not
/// a mount point. When several mounts are stacked there, the top one (the
/// one that is visible) is returned.
pub async fn mount_info(path: &Path) -> Result<Option<MountEntry>> {
    let wanted = resolve(path).await;
    let table = read_mount_table().await?;
    Ok(table.into_iter().rev().find(|m| m.mount_point == wanted))
}

pub async fn is_mountpoint(path: &Path) -> Result<bool> {
    Ok(mount_info(path).await?.is_some())
}

/// Mounts the filesystem on `device` at `target`.
///
/// XFS mounts always get `nouuid`: a volume restored from a reflinked
/// snapshot carries the same filesystem UUID as its origin, and XFS refuses
/// to mount a second filesystem with a UUID that is already mounted.
pub async fn mount_fs(
    device: &Path,
    target: &Path,
    fstype: &str,
    read_only: bool,
    extra_options: &[String],
) -> Result<()> {
    let what = format!("{} on {}", device.display(), target.display());
    if fstype.is_empty() || fstype.contains([',', ' ']) {
        return Err(NodeError::with_kind(
            "mount",
            what,
            format!("invalid filesystem type {fstype:?}"),
            io::ErrorKind::InvalidInput,
        ));
    }
    let mut options = vec![if read_only { "ro" } else { "rw" }.to_string()];
    if fstype == "xfs" && !extra_options.iter().any(|o| o == "nouuid") {
        options.push("nouuid".to_string());
    }
    options.extend(extra_options.iter().filter(|o| !o.is_empty()).cloned());
    let options = options.join(",");
    let args: [&OsStr; 6] = [
        "-t".as_ref(),
        fstype.as_ref(),
        "-o".as_ref(),
        options.as_ref(),
        device.as_os_str(),
        target.as_os_str(),
    ];
    run("mount", &what, "mount", args).await?;
    tracing::info!(device = %device.display(), target = %target.display(), fstype, %options, "mounted filesystem");
    Ok(())
}

/// Bind mounts `source` (a directory, a file, or a device node) onto
/// `target`, which must already exist and be of the same kind (a directory
/// for a directory, a regular file for anything else).
///
/// A read-only bind needs a second step, because the kernel ignores "ro" on
/// the initial bind. If that step fails the bind is removed again, so a
/// writable mount is never left behind where a read-only one was asked for.
pub async fn bind_mount(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    let what = format!("{} on {}", source.display(), target.display());
    run(
        "bind mount",
        &what,
        "mount",
        ["--bind".as_ref(), source.as_os_str(), target.as_os_str()],
    )
    .await?;
    if read_only {
        let remount = run(
            "remount read-only",
            &what,
            "mount",
            [
                "-o".as_ref(),
                "remount,bind,ro".as_ref(),
                target.as_os_str(),
            ],
        )
        .await;
        if let Err(e) = remount {
            if let Err(undo) = unmount(target).await {
                tracing::error!(error = %undo, "cannot remove writable bind mount after failed read-only remount");
            }
            return Err(e);
        }
    }
    tracing::info!(source = %source.display(), target = %target.display(), read_only, "bind mounted");
    Ok(())
}

/// Unmounts `target` until it is no longer a mount point. Not being mounted
/// (or not existing) is success. Never detaches lazily: a busy mount is an
/// error the caller must see, not a leak hidden behind a vanished path.
pub async fn unmount(target: &Path) -> Result<()> {
    let what = show(target);
    for _ in 0..MAX_STACKED {
        let Some(entry) = mount_info(target).await? else {
            return Ok(());
        };
        // Unmount the resolved path, so a symlinked target cannot make
        // umount act on something else than what we just looked up.
        let out =
            run_unchecked("unmount", &what, "umount", [entry.mount_point.as_os_str()]).await?;
        if out.status.success() {
            tracing::info!(target = %what, "unmounted");
            continue;
        }
        let msg = super::tool_message("umount", &out);
        // Lost a race with another unmount: look again.
        if msg.contains("not mounted") {
            continue;
        }
        let kind = if msg.contains("busy") {
            io::ErrorKind::ResourceBusy
        } else {
            io::ErrorKind::Other
        };
        return Err(NodeError::with_kind("unmount", what, msg, kind));
    }
    Err(NodeError::with_kind(
        "unmount",
        what,
        format!("still mounted after {MAX_STACKED} unmounts"),
        io::ErrorKind::ResourceBusy,
    ))
}

/// Every mount point at or below `prefix`, deepest first, so unmounting in
/// the returned order never hits a parent that is kept busy by a child.
pub async fn mounts_under(prefix: &Path) -> Result<Vec<PathBuf>> {
    let prefix = resolve(prefix).await;
    let table = read_mount_table().await?;
    Ok(select_under(&table, &prefix))
}

fn select_under(table: &[MountEntry], prefix: &Path) -> Vec<PathBuf> {
    // Later lines are newer mounts; walking them first keeps a mount that
    // was stacked over another ahead of it.
    let mut points: Vec<PathBuf> = Vec::new();
    for m in table.iter().rev() {
        if m.mount_point.starts_with(prefix) && !points.contains(&m.mount_point) {
            points.push(m.mount_point.clone());
        }
    }
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 27 0:21 / /proc rw,relatime - proc proc rw
29 27 7:3 / /var/lib/kubelet/plugins/x\\040y rw,relatime shared:1 master:2 - ext4 /dev/loop3 rw,stripe=16
30 29 7:3 /sub /mnt/bind\\134dir ro,relatime - ext4 /dev/loop3 rw
31 27 0:5 /loop3 /pods/vol/dev rw,nosuid - devtmpfs udev rw,size=10k
32 27 7:4 / /mnt/rofs rw - xfs /dev/loop4 ro,nouuid
garbage line
33 27 7:5 / /pods/vol rw - ext4 /dev/loop5 rw
34 33 7:6 / /pods/vol rw - ext4 /dev/loop6 rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let t = parse_mountinfo(SAMPLE);
        assert_eq!(t.len(), 7);
        let m = &t[1];
        assert_eq!(m.mount_point, Path::new("/var/lib/kubelet/plugins/x y"));
        assert_eq!(m.source, "/dev/loop3");
        assert_eq!(m.fstype, "ext4");
        assert_eq!(m.options, vec!["rw", "relatime"]);
        assert_eq!(m.super_options, vec!["rw", "stripe=16"]);
        assert!(!m.read_only);
        assert_eq!(t[2].mount_point, Path::new("/mnt/bind\\dir"));
        assert_eq!(t[2].root, Path::new("/sub"));
        assert!(t[2].read_only);
        assert_eq!(t[3].root, Path::new("/loop3"));
    }

    #[test]
    fn read_only_superblock_makes_mount_read_only() {
        let t = parse_mountinfo(SAMPLE);
        assert!(t[4].read_only);
    }

    #[test]
    fn unescape_leaves_non_octal_alone() {
        assert_eq!(unescape(b"a\\040b"), b"a b");
        assert_eq!(unescape(b"a\\011b\\012"), b"a\tb\n");
        assert_eq!(unescape(b"a\\9xyz\\"), b"a\\9xyz\\");
        assert_eq!(unescape(b"\\04"), b"\\04");
        // 0o777 does not fit a byte: keep it literally.
        assert_eq!(unescape(b"\\777"), b"\\777");
    }

    #[test]
    fn mounts_under_lists_deepest_first_without_duplicates() {
        let t = parse_mountinfo(SAMPLE);
        let under = select_under(&t, Path::new("/pods"));
        assert_eq!(
            under,
            vec![PathBuf::from("/pods/vol/dev"), PathBuf::from("/pods/vol")]
        );
        assert!(select_under(&t, Path::new("/pod")).is_empty());
    }

    #[tokio::test]
    async fn root_is_a_mountpoint_and_missing_path_is_not() {
        assert!(is_mountpoint(Path::new("/")).await.expect("read mountinfo"));
        assert!(
            !is_mountpoint(Path::new("/nonexistent/snapcsi"))
                .await
                .expect("read mountinfo")
        );
        unmount(Path::new("/nonexistent/snapcsi"))
            .await
            .expect("unmounting a missing path is a no-op");
    }
}
