//! Loop-backed scratch file systems (XFS with reflink, ext4) that both drivers keep their data
//! on, and the teardown of everything the run mounted or attached under its work directory.

use crate::util::run;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    XfsReflink,
    Ext4,
}

impl FsKind {
    pub fn name(self) -> &'static str {
        match self {
            FsKind::XfsReflink => "xfs-reflink",
            FsKind::Ext4 => "ext4",
        }
    }
}

/// A file system in a sparse file under `dir`, mounted at `dir/mnt`; unmounted on drop.
pub struct ScratchFs {
    pub kind: FsKind,
    pub mount: PathBuf,
    backing: PathBuf,
}

impl ScratchFs {
    /// Makes a `size`-byte file system of `kind` in `backing_dir` (the backing file's place:
    /// a real disk, or tmpfs when only metadata speed matters) mounted at `mount`.
    pub fn create(
        kind: FsKind,
        backing_dir: &Path,
        mount: &Path,
        size: u64,
    ) -> Result<ScratchFs, String> {
        std::fs::create_dir_all(backing_dir).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(mount).map_err(|e| e.to_string())?;
        let backing = backing_dir.join(format!("{}.img", kind.name()));
        let file = std::fs::File::create(&backing).map_err(|e| e.to_string())?;
        file.set_len(size).map_err(|e| e.to_string())?;
        drop(file);
        let image = backing.display().to_string();
        match kind {
            FsKind::XfsReflink => run("mkfs.xfs", &["-q", "-f", "-m", "reflink=1", &image])?,
            FsKind::Ext4 => run("mkfs.ext4", &["-q", "-F", &image])?,
        };
        run(
            "mount",
            &["-o", "loop", &image, &mount.display().to_string()],
        )?;
        Ok(ScratchFs {
            kind,
            mount: mount.to_path_buf(),
            backing,
        })
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        unmount_under(&self.mount);
        let _ = run("umount", &[&self.mount.display().to_string()]);
        let _ = std::fs::remove_file(&self.backing);
    }
}

/// Unmounts every mount point under `prefix` (deepest first) and detaches the loop devices
/// whose backing files are under it, so a failed run leaves no kernel state behind. The
/// mount at `prefix` itself is left alone.
pub fn unmount_under(prefix: &Path) {
    let prefix = format!("{}/", prefix.display());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        if run("umount", &[&point]).is_err() {
            let _ = run("umount", &["-l", &point]);
        }
    }
    let listing = run("losetup", &["-l", "-n", "-O", "NAME,BACK-FILE"]).unwrap_or_default();
    for line in listing.lines() {
        let mut words = line.split_whitespace();
        if let (Some(dev), Some(file)) = (words.next(), words.next())
            && file.starts_with(&prefix)
        {
            let _ = run("losetup", &["-d", dev]);
        }
    }
}
