//! Capacity and usage figures for NodeGetVolumeStats and expansion.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{NodeError, Result, blocking, show};

/// Usage of the filesystem that contains a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub total_bytes: u64,
    /// What an unprivileged writer can still use; excludes blocks reserved
    /// for root, which is what a workload actually sees.
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

/// Usage of the filesystem containing `path`.
///
/// Runs on the blocking pool: statvfs on a filesystem whose device has
/// stopped answering can wait indefinitely.
pub async fn fs_stats(path: &Path) -> Result<FsStats> {
    let p = path.to_path_buf();
    blocking("statfs", show(path), move || {
        let st = rustix::fs::statvfs(&p)
            .map_err(|e| NodeError::from_io("statfs", show(&p), &e.into()))?;
        Ok(from_statvfs(&st))
    })
    .await
}

fn from_statvfs(st: &rustix::fs::StatVfs) -> FsStats {
    // f_frsize is the unit of the block counts; f_bsize is only the
    // preferred I/O size and differs from it on some filesystems.
    let unit = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    FsStats {
        total_bytes: st.f_blocks.saturating_mul(unit),
        available_bytes: st.f_bavail.saturating_mul(unit),
        used_bytes: st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(unit),
        total_inodes: st.f_files,
        free_inodes: st.f_ffree,
        used_inodes: st.f_files.saturating_sub(st.f_ffree),
    }
}

/// Size in bytes of a block device (or of a regular file, e.g. an image).
///
/// Seeking to the end gives the size without an ioctl, and for a device it
/// reflects the kernel's current idea of the capacity, so it shows whether a
/// loop device already picked up a grown backing file.
pub async fn block_size_bytes(device: &Path) -> Result<u64> {
    let dev: PathBuf = device.to_path_buf();
    blocking("get size", show(device), move || {
        let err = |e: std::io::Error| NodeError::from_io("get size", show(&dev), &e);
        let mut f = std::fs::File::open(&dev).map_err(err)?;
        f.seek(SeekFrom::End(0)).map_err(err)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stats_of_tmp_are_consistent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = fs_stats(dir.path()).await.expect("statvfs");
        assert!(s.total_bytes > 0);
        assert!(s.available_bytes <= s.total_bytes);
        assert!(s.used_bytes <= s.total_bytes);
        assert_eq!(s.used_inodes + s.free_inodes, s.total_inodes);
    }

    #[tokio::test]
    async fn size_of_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("img");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(12345).expect("set_len");
        assert_eq!(block_size_bytes(&p).await.expect("size"), 12345);
    }

    #[tokio::test]
    async fn missing_path_is_not_found() {
        let e = fs_stats(Path::new("/nonexistent/snapcsi"))
            .await
            .expect_err("missing");
        assert!(e.is_not_found());
        let e = block_size_bytes(Path::new("/nonexistent/snapcsi"))
            .await
            .expect_err("missing");
        assert!(e.is_not_found());
    }
}
