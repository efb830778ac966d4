//! Cloud disks on the node: a volume the controller attached (Nova) appears as a new disk,
//! which udev names after its serial under `/dev/disk/by-id`. Nova gives a volume's disk the
//! volume id as serial; a virtio-blk disk shows at most 20 characters of it
//! (`virtio-<first 20 characters>`), QEMU's SCSI disk the whole id
//! (`scsi-0QEMU_QEMU_HARDDISK_<id>`).

use super::{NodeError, Result, show};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where udev puts the by-serial links.
pub const BY_ID_DIR: &str = "/dev/disk/by-id";

/// The by-id names a disk with `serial` may have, most common first.
pub fn by_id_names(serial: &str) -> Vec<String> {
    let short: String = serial.chars().take(20).collect();
    let mut names = vec![
        format!("virtio-{short}"),
        format!("scsi-0QEMU_QEMU_HARDDISK_{serial}"),
    ];
    if short != serial {
        names.push(format!("scsi-0QEMU_QEMU_HARDDISK_{short}"));
    }
    names
}

/// The device of the disk with `serial` (the by-id link resolved), waiting up to `wait` for
/// it to appear: the hypervisor adds the disk and udev makes the link a moment after the
/// cloud says the volume is attached.
pub async fn find_by_serial(dir: &Path, serial: &str, wait: Duration) -> Result<PathBuf> {
    if serial.is_empty() || serial.contains('/') || serial.contains('\0') {
        return Err(NodeError::with_kind(
            "find disk",
            serial,
            "not a disk serial",
            io::ErrorKind::InvalidInput,
        ));
    }
    let started = Instant::now();
    let names = by_id_names(serial);
    let mut pause = Duration::from_millis(50);
    loop {
        for name in &names {
            let link = dir.join(name);
            match tokio::fs::canonicalize(&link).await {
                Ok(device) => return Ok(device),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(NodeError::from_io("find disk", show(&link), &e)),
            }
        }
        if started.elapsed() >= wait {
            return Err(NodeError::with_kind(
                "find disk",
                serial,
                format!(
                    "no disk with this serial appeared under {} within {}s (looked for {})",
                    show(dir),
                    wait.as_secs(),
                    names.join(", ")
                ),
                io::ErrorKind::NotFound,
            ));
        }
        tokio::time::sleep(pause.min(wait.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Asks the kernel to re-read the size of `device` after the cloud grew the volume. A SCSI
/// disk learns it only through a rescan; virtio-blk (and loop devices, whose owner refreshes
/// them) need nothing.
pub async fn rescan(device: &Path) -> Result<()> {
    let Some(name) = device.file_name() else {
        return Ok(());
    };
    let rescan = Path::new("/sys/class/block")
        .join(name)
        .join("device/rescan");
    if tokio::fs::metadata(&rescan).await.is_err() {
        return Ok(());
    }
    tokio::fs::write(&rescan, b"1")
        .await
        .map_err(|e| NodeError::from_io("rescan", show(device), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_bus_rules() {
        let id = "6f74cbd3-a80b-4c73-bc6e-ee7684c49516";
        assert_eq!(
            by_id_names(id),
            [
                "virtio-6f74cbd3-a80b-4c73-b",
                "scsi-0QEMU_QEMU_HARDDISK_6f74cbd3-a80b-4c73-bc6e-ee7684c49516",
                "scsi-0QEMU_QEMU_HARDDISK_6f74cbd3-a80b-4c73-b",
            ]
        );
        assert_eq!(by_id_names("short").len(), 2);
    }

    #[tokio::test]
    async fn a_link_that_appears_late_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("vdb");
        std::fs::write(&target, b"").expect("device stand-in");
        let link = dir.path().join("scsi-0QEMU_QEMU_HARDDISK_vol-1");
        let (target2, link2) = (target.clone(), link.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            std::os::unix::fs::symlink(&target2, &link2).expect("link");
        });
        let found = find_by_serial(dir.path(), "vol-1", Duration::from_secs(5))
            .await
            .expect("found");
        assert_eq!(found, target.canonicalize().expect("canonical"));
        let missing = find_by_serial(dir.path(), "vol-2", Duration::from_millis(200))
            .await
            .expect_err("never appears");
        assert!(missing.is_not_found());
        assert!(missing.message.contains("virtio-vol-2"), "{missing}");
        let bad = find_by_serial(dir.path(), "../x", Duration::ZERO)
            .await
            .expect_err("no path tricks");
        assert!(bad.is_invalid_argument());
    }
}
