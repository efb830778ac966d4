//! Loop devices that expose volume image files as block devices.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{NodeError, Result, run, run_unchecked, show};

const LOSETUP: &str = "losetup";

/// How long [`detach`] waits for the kernel to release a device. Detaching
/// a device that something still holds open only marks it for automatic
/// release, and short-lived openers such as udev's blkid probe are common.
const DETACH_SETTLE: Duration = Duration::from_secs(2);
const DETACH_POLL: Duration = Duration::from_millis(50);

/// Attaches `image` to a free loop device and returns the device path.
///
/// Direct I/O stays off explicitly (whatever losetup's default becomes):
/// it requires the device's logical block size to match the backing
/// filesystem's, and it bypasses the page cache that makes reading the holes
/// of sparse images cheap.
pub async fn attach(image: &Path, read_only: bool) -> Result<PathBuf> {
    let target = show(image);
    if let Err(e) = tokio::fs::metadata(image).await {
        return Err(NodeError::from_io("losetup attach", target, &e));
    }
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--find".as_ref(),
        "--show".as_ref(),
        "--direct-io=off".as_ref(),
    ];
    if read_only {
        args.push("--read-only".as_ref());
    }
    args.push(image.as_os_str());
    let out = run("losetup attach", &target, LOSETUP, args).await?;
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !dev.starts_with("/dev/") {
        return Err(NodeError::new(
            "losetup attach",
            target,
            format!("unexpected output from losetup: {dev:?}"),
        ));
    }
    tracing::info!(image = %image.display(), device = %dev, read_only, "attached loop device");
    Ok(PathBuf::from(dev))
}

/// All loop devices backed by `image`, in the order losetup lists them.
///
/// losetup matches on device and inode number as well as on the name, so a
/// path reached through a symlink or another bind mount still matches.
pub async fn find_by_backing_file(image: &Path) -> Result<Vec<PathBuf>> {
    let target = show(image);
    // losetup cannot stat a missing file, and nothing can be attached under
    // a name that does not exist any more: report "none".
    match tokio::fs::metadata(image).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NodeError::from_io("losetup find", target, &e)),
    }
    let args = [
        "--list".as_ref(),
        "--noheadings".as_ref(),
        "--output".as_ref(),
        "NAME".as_ref(),
        "--associated".as_ref(),
        image.as_os_str(),
    ];
    let out = run("losetup find", &target, LOSETUP, args).await?;
    Ok(parse_names(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_names(stdout: &str) -> Vec<PathBuf> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/dev/"))
        .map(PathBuf::from)
        .collect()
}

/// Detaches `dev`. A device that is already free or does not exist counts
/// as success, so retries after a crash are harmless.
///
/// If something still holds the device open (a mount, an open file
/// descriptor), the kernel only schedules the detach for when the last user
/// goes away; this returns a `ResourceBusy` error in that case so callers do
/// not believe the device is gone.
pub async fn detach(dev: &Path) -> Result<()> {
    let target = show(dev);
    let out = run_unchecked(
        "losetup detach",
        &target,
        LOSETUP,
        ["--detach".as_ref(), dev.as_os_str()],
    )
    .await?;
    if !out.status.success() {
        let msg = super::tool_message(LOSETUP, &out);
        // ENXIO: a loop device node with nothing attached; ENODEV/ENOENT: no
        // such device at all.
        if msg.contains("No such device") || msg.contains("No such file or directory") {
            tracing::debug!(device = %target, "loop device already detached");
            return Ok(());
        }
        return Err(NodeError::new("losetup detach", target, msg));
    }
    wait_released(dev).await?;
    tracing::info!(device = %target, "detached loop device");
    Ok(())
}

/// Waits until the kernel reports no backing file for `dev`.
async fn wait_released(dev: &Path) -> Result<()> {
    let Some(name) = dev.file_name() else {
        return Ok(());
    };
    // Device nodes may be symlinks (/dev/disk/by-...): sysfs is keyed by the
    // kernel name, so resolve first.
    let name = match tokio::fs::canonicalize(dev).await {
        Ok(p) => p.file_name().map(|n| n.to_os_string()),
        Err(_) => Some(name.to_os_string()),
    };
    let Some(name) = name else { return Ok(()) };
    let backing = Path::new("/sys/block")
        .join(&name)
        .join("loop")
        .join("backing_file");
    let deadline = tokio::time::Instant::now() + DETACH_SETTLE;
    loop {
        match tokio::fs::try_exists(&backing).await {
            Ok(false) => return Ok(()),
            // Without a readable sysfs we cannot tell; trust losetup.
            Err(_) => return Ok(()),
            Ok(true) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NodeError::with_kind(
                "losetup detach",
                show(dev),
                "device is still in use; the kernel will release it when its last user closes it",
                io::ErrorKind::ResourceBusy,
            ));
        }
        tokio::time::sleep(DETACH_POLL).await;
    }
}

/// Detaches every loop device backed by `image`. Tries all of them even if
/// one fails, and returns the first failure.
pub async fn detach_all_for(image: &Path) -> Result<()> {
    let mut first_err = None;
    for dev in find_by_backing_file(image).await? {
        if let Err(e) = detach(&dev).await {
            tracing::warn!(error = %e, "failed to detach loop device");
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Makes the kernel re-read the size of the backing file after it grew, so
/// the filesystem on the device can be grown next.
pub async fn refresh_capacity(dev: &Path) -> Result<()> {
    run(
        "losetup set-capacity",
        show(dev),
        LOSETUP,
        ["--set-capacity".as_ref(), dev.as_os_str()],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_parsed_and_noise_skipped() {
        let out = "/dev/loop0\n  /dev/loop12 \n\nlosetup: warning\n";
        assert_eq!(
            parse_names(out),
            vec![PathBuf::from("/dev/loop0"), PathBuf::from("/dev/loop12")]
        );
    }

    #[tokio::test]
    async fn missing_image_has_no_devices() {
        let found = find_by_backing_file(Path::new("/nonexistent/snapcsi.img"))
            .await
            .expect("missing file is not an error");
        assert!(found.is_empty());
    }

    #[tokio::test]
    async fn attaching_missing_image_is_not_found() {
        let e = attach(Path::new("/nonexistent/snapcsi.img"), false)
            .await
            .expect_err("cannot attach a missing file");
        assert!(e.is_not_found());
    }
}
