//! Detecting, creating and growing filesystems on block devices.

use std::io;
use std::path::Path;

use super::{NodeError, Result, run, run_unchecked, show};

/// Filesystem types this driver can create and grow.
pub const SUPPORTED_FS: &[&str] = &["ext4", "xfs"];

/// blkid's exit status when the device carries no recognisable signature.
const BLKID_NOTHING_FOUND: i32 = 2;

fn unsupported(op: &'static str, target: String, fstype: &str) -> NodeError {
    NodeError::with_kind(
        op,
        target,
        format!(
            "unsupported filesystem type {fstype:?}; supported: {}",
            SUPPORTED_FS.join(", ")
        ),
        io::ErrorKind::InvalidInput,
    )
}

/// The filesystem type on `device`, or `None` if the device is blank.
///
/// The device is probed directly (`-p`), bypassing blkid's cache, which may
/// describe what was there before. A device holding a partition table but no
/// filesystem is an error rather than `None`: it is not blank, and treating
/// it as blank would let a caller format over someone's partitions.
pub async fn detect_fs(device: &Path) -> Result<Option<String>> {
    let target = show(device);
    // blkid reports a missing device with the same status as a blank one.
    if let Err(e) = tokio::fs::metadata(device).await {
        return Err(NodeError::from_io("detect filesystem", target, &e));
    }
    let out = run_unchecked(
        "detect filesystem",
        &target,
        "blkid",
        [
            "-p".as_ref(),
            "-o".as_ref(),
            "export".as_ref(),
            "-s".as_ref(),
            "TYPE".as_ref(),
            "-s".as_ref(),
            "PTTYPE".as_ref(),
            device.as_os_str(),
        ],
    )
    .await?;
    match out.status.code() {
        Some(0) => {}
        Some(BLKID_NOTHING_FOUND) => return Ok(None),
        _ => return Err(super::failure("detect filesystem", target, "blkid", &out)),
    }
    let probe = parse_export(&String::from_utf8_lossy(&out.stdout));
    match probe {
        Probe {
            fstype: Some(t), ..
        } => Ok(Some(t)),
        Probe {
            pttype: Some(pt), ..
        } => Err(NodeError::new(
            "detect filesystem",
            target,
            format!(
                "device holds a {pt} partition table and no filesystem; refusing to treat it as blank"
            ),
        )),
        _ => Ok(None),
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Probe {
    fstype: Option<String>,
    pttype: Option<String>,
}

fn parse_export(stdout: &str) -> Probe {
    let mut probe = Probe::default();
    for line in stdout.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        match key {
            "TYPE" => probe.fstype = Some(value.to_string()),
            "PTTYPE" => probe.pttype = Some(value.to_string()),
            _ => {}
        }
    }
    probe
}

/// Creates a filesystem on `device`, destroying whatever is on it. Callers
/// must have checked with [`detect_fs`] that the device is blank.
///
/// Discard is skipped: the devices are fresh sparse images that already
/// read as zeros, and discarding a large thin device can take minutes.
/// Inode tables are initialised lazily by the kernel after mount (with
/// zero-out requests, which a loop device turns into hole punching), so mkfs
/// stays fast and the image stays sparse.
pub async fn mkfs(device: &Path, fstype: &str) -> Result<()> {
    let target = format!("{} as {fstype}", device.display());
    match fstype {
        "ext4" => {
            run(
                "mkfs",
                &target,
                "mkfs.ext4",
                [
                    "-F".as_ref(),
                    "-q".as_ref(),
                    "-E".as_ref(),
                    "nodiscard,lazy_itable_init=1".as_ref(),
                    device.as_os_str(),
                ],
            )
            .await?;
        }
        "xfs" => {
            run(
                "mkfs",
                &target,
                "mkfs.xfs",
                [
                    "-f".as_ref(),
                    "-q".as_ref(),
                    "-K".as_ref(),
                    device.as_os_str(),
                ],
            )
            .await?;
        }
        other => return Err(unsupported("mkfs", target, other)),
    }
    tracing::info!(device = %device.display(), fstype, "created filesystem");
    Ok(())
}

/// Grows the mounted filesystem on `device` to fill the device. Both
/// supported filesystems grow online, so the volume stays in use.
pub async fn grow_fs(device: &Path, mount_point: &Path, fstype: &str) -> Result<()> {
    let target = format!("{} on {}", device.display(), mount_point.display());
    match fstype {
        "ext4" => {
            run(
                "grow filesystem",
                &target,
                "resize2fs",
                [device.as_os_str()],
            )
            .await
            .map_err(explain_resize_permission)?;
        }
        "xfs" => {
            // xfs_growfs acts on the mounted filesystem, not the device.
            run(
                "grow filesystem",
                &target,
                "xfs_growfs",
                ["-d".as_ref(), mount_point.as_os_str()],
            )
            .await?;
        }
        other => return Err(unsupported("grow filesystem", target, other)),
    }
    tracing::info!(device = %device.display(), mount_point = %mount_point.display(), fstype, "grew filesystem");
    Ok(())
}

/// Before the first mount, grows an ext4 file system that is smaller than its device (a
/// restored or expanded image). Offline growth needs no CAP_SYS_RESOURCE, which online ext4
/// growth does; xfs can only grow mounted, so it is left to [`grow_fs`] after the mount.
pub async fn grow_unmounted(device: &Path, fstype: &str) -> Result<()> {
    if fstype != "ext4" {
        return Ok(());
    }
    let target = show(device);
    let header = run(
        "inspect filesystem",
        &target,
        "dumpe2fs",
        ["-h".as_ref(), device.as_os_str()],
    )
    .await?;
    let text = String::from_utf8_lossy(&header.stdout);
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let (Some(blocks), Some(block_size)) = (field("Block count:"), field("Block size:")) else {
        return Err(NodeError::new(
            "inspect filesystem",
            target,
            "dumpe2fs gave no block count",
        ));
    };
    let device_bytes = super::stats::block_size_bytes(device).await?;
    if blocks.saturating_mul(block_size) + block_size > device_bytes {
        return Ok(());
    }
    // resize2fs wants a checked file system; a clone taken under freeze is consistent, and
    // -p repairs only what is safe to repair without asking. Exit 1 = "errors corrected".
    let check = run_unchecked(
        "check filesystem",
        &target,
        "e2fsck",
        ["-f".as_ref(), "-p".as_ref(), device.as_os_str()],
    )
    .await?;
    if !matches!(check.status.code(), Some(0 | 1)) {
        return Err(super::failure("check filesystem", target, "e2fsck", &check));
    }
    run(
        "grow filesystem",
        &target,
        "resize2fs",
        [device.as_os_str()],
    )
    .await?;
    tracing::info!(device = %target, "grew unmounted ext4 file system to its device");
    Ok(())
}

/// The kernel refuses online ext4 resizing to callers without
/// CAP_SYS_RESOURCE, even root; resize2fs only says "Permission denied",
/// which sends operators looking at file permissions instead.
fn explain_resize_permission(mut e: NodeError) -> NodeError {
    if e.message.contains("Permission denied to resize") {
        e.message
            .push_str(" (online ext4 resize needs the CAP_SYS_RESOURCE capability)");
        e.kind = io::ErrorKind::PermissionDenied;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_output_is_parsed() {
        assert_eq!(
            parse_export("DEVNAME=/dev/loop0\nTYPE=xfs\n"),
            Probe {
                fstype: Some("xfs".into()),
                pttype: None
            }
        );
        assert_eq!(
            parse_export("DEVNAME=/dev/loop0\nPTTYPE=gpt\n"),
            Probe {
                fstype: None,
                pttype: Some("gpt".into())
            }
        );
        assert_eq!(parse_export(""), Probe::default());
    }

    #[tokio::test]
    async fn unsupported_fstype_names_supported_ones() {
        let e = mkfs(Path::new("/dev/null"), "btrfs")
            .await
            .expect_err("btrfs is not supported");
        assert!(e.is_invalid_argument());
        assert!(e.message.contains("ext4, xfs"), "{e}");
        let e = grow_fs(Path::new("/dev/null"), Path::new("/"), "vfat")
            .await
            .expect_err("vfat is not supported");
        assert!(e.message.contains("ext4, xfs"), "{e}");
    }

    #[tokio::test]
    async fn missing_device_is_not_found() {
        let e = detect_fs(Path::new("/dev/snapcsi-none"))
            .await
            .expect_err("no such device");
        assert!(e.is_not_found());
    }
}
