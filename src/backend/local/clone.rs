//! Volume image files of the local backend: creating, growing and cloning.
//!
//! Everything here is synchronous and may block on disk I/O for a long time
//! (a fallback copy moves every data byte); async callers run it on
//! `tokio::task::spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// Images hold tenant data and only the driver (root) needs them.
const IMAGE_MODE: u32 = 0o600;

/// Largest request handed to one copy_file_range call; the kernel caps it
/// anyway, and smaller requests keep each syscall short.
const COPY_CHUNK: u64 = 1 << 30;

/// Buffer for the read/write fallback.
const RW_BUFFER: usize = 1 << 20;

/// Granularity at which the fallback copy looks for zero runs to leave as
/// holes: the usual filesystem block size.
const ZERO_CHECK_BLOCK: usize = 4096;

/// How a clone was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMethod {
    /// The clone shares the source's blocks (copy-on-write); it took no
    /// data space and almost no time.
    Reflink,
    /// Every data range was copied; holes were preserved, so the clone
    /// takes as much space as the source's data, not its size.
    SparseCopy,
}

/// Removes a file this module created unless the operation completed.
struct RemoveOnError<'a> {
    path: &'a Path,
    armed: bool,
}

impl<'a> RemoveOnError<'a> {
    fn new(path: &'a Path) -> Self {
        Self { path, armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for RemoveOnError<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = std::fs::remove_file(self.path)
            && e.kind() != ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove partial image");
        }
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(IMAGE_MODE)
        .open(path)
}

/// Makes the directory entry of a new file durable, so that after a crash
/// the driver does not find its metadata claiming an image that vanished.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Clones `src` into a new file `dst`, which must not exist.
///
/// Shares blocks with FICLONE where the filesystem supports it (XFS with
/// reflink, btrfs), and otherwise copies only the data ranges, keeping the
/// holes. `dst` is fsynced before returning. On any error `dst` is removed,
/// so a half-written clone never looks like a finished one; an existing
/// `dst` is never touched.
pub fn clone_file(src: &Path, dst: &Path) -> io::Result<CloneMethod> {
    let method = clone_unsynced(src, dst)?;
    persist(dst)?;
    Ok(method)
}

/// [`clone_file`] without making `dst` durable: the content is complete (every later read
/// sees it) but may still sit in the page cache. For a caller that holds the source's file
/// system frozen, which may thaw as soon as this returns and call [`persist`] after.
pub fn clone_unsynced(src: &Path, dst: &Path) -> io::Result<CloneMethod> {
    let source = File::open(src)?;
    let meta = source.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{} is not a regular file", src.display()),
        ));
    }
    let target = create_new(dst)?;
    let cleanup = RemoveOnError::new(dst);

    let method = match rustix::fs::ioctl_ficlone(&target, &source) {
        Ok(()) => CloneMethod::Reflink,
        Err(e) if reflink_unsupported(e) => {
            tracing::debug!(src = %src.display(), error = %e, "reflink unavailable; copying");
            sparse_copy(&source, &target, meta.len())?;
            CloneMethod::SparseCopy
        }
        Err(e) => return Err(e.into()),
    };
    cleanup.disarm();
    Ok(method)
}

/// Makes a clone made by [`clone_unsynced`] durable: its data and its directory entry. On
/// error `dst` is removed.
pub fn persist(dst: &Path) -> io::Result<()> {
    let cleanup = RemoveOnError::new(dst);
    OpenOptions::new().write(true).open(dst)?.sync_all()?;
    sync_parent(dst)?;
    cleanup.disarm();
    Ok(())
}

/// Errors with which FICLONE says "not possible here" rather than "failed".
fn reflink_unsupported(e: Errno) -> bool {
    // OPNOTSUPP: filesystem without reflink (ext4, tmpfs); XDEV: different
    // filesystems; INVAL: unaligned or otherwise unclonable source; NOTTY:
    // filesystems that do not know the ioctl at all.
    matches!(
        e,
        Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY
    )
}

/// Copies the data ranges of `src` (of length `len`) into the empty file
/// `dst` and sets `dst`'s length to `len`, so holes (including a trailing
/// one) stay holes.
fn sparse_copy(src: &File, dst: &File, len: u64) -> io::Result<()> {
    let mut copier = RangeCopier::default();
    let mut pos = 0;
    while pos < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(offset) => offset,
            // Only holes from `pos` to the end of the file.
            Err(Errno::NXIO) => break,
            // A filesystem without hole reporting: treat the rest as data.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => pos,
            Err(e) => return Err(e.into()),
        };
        if data >= len {
            break;
        }
        let hole = match rustix::fs::seek(src, SeekFrom::Hole(data)) {
            Ok(offset) => offset.min(len),
            Err(Errno::INVAL | Errno::OPNOTSUPP) => len,
            Err(e) => return Err(e.into()),
        };
        if hole <= data {
            // A filesystem that answered nonsense: avoid looping forever.
            return Err(io::Error::other(format!(
                "SEEK_HOLE returned {hole} for data at {data}"
            )));
        }
        copier.copy(src, dst, data, hole - data)?;
        pos = hole;
    }
    dst.set_len(len)
}

/// Copies byte ranges between files, switching once to plain reads and
/// writes if the kernel cannot copy between these two files.
#[derive(Default)]
struct RangeCopier {
    use_read_write: bool,
    buffer: Vec<u8>,
}

impl RangeCopier {
    fn copy(&mut self, src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        let mut done = offset;
        while done < end && !self.use_read_write {
            let mut off_in = done;
            let mut off_out = done;
            let want = usize::try_from((end - done).min(COPY_CHUNK)).unwrap_or(usize::MAX);
            match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want)
            {
                // The source shrank under us; what is left reads as zeros.
                Ok(0) => return Ok(()),
                Ok(n) => done += n as u64,
                Err(Errno::INTR) => {}
                Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    self.use_read_write = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if done < end {
            self.read_write(src, dst, done, end)?;
        }
        Ok(())
    }

    fn read_write(&mut self, src: &File, dst: &File, mut pos: u64, end: u64) -> io::Result<()> {
        if self.buffer.is_empty() {
            self.buffer = vec![0; RW_BUFFER];
        }
        while pos < end {
            let want = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(self.buffer.len());
            let n = match src.read_at(&mut self.buffer[..want], pos) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            write_non_zero(dst, &self.buffer[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }
}

/// Writes `chunk` at `pos`, skipping blocks that are all zeros: `dst` is new
/// and already reads as zeros there, and leaving them unwritten keeps
/// allocated-but-zero source ranges sparse in the copy.
fn write_non_zero(dst: &File, chunk: &[u8], pos: u64) -> io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut offset = 0;
    for block in chunk.chunks(ZERO_CHECK_BLOCK) {
        let zero = block.iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(offset),
            (true, Some(start)) => {
                dst.write_all_at(&chunk[start..offset], pos + start as u64)?;
                run_start = None;
            }
            _ => {}
        }
        offset += block.len();
    }
    if let Some(start) = run_start {
        dst.write_all_at(&chunk[start..], pos + start as u64)?;
    }
    Ok(())
}

/// Creates a new sparse image of `size_bytes`; fails if `path` exists.
pub fn create_sparse(path: &Path, size_bytes: u64) -> io::Result<()> {
    let file = create_new(path)?;
    let cleanup = RemoveOnError::new(path);
    file.set_len(size_bytes)?;
    file.sync_all()?;
    sync_parent(path)?;
    cleanup.disarm();
    Ok(())
}

/// Grows the image at `path` to `new_size` bytes and returns its size
/// afterwards. A smaller `new_size` leaves the image alone: shrinking would
/// cut off the end of the filesystem inside it.
pub fn grow(path: &Path, new_size: u64) -> io::Result<u64> {
    let file = OpenOptions::new().write(true).open(path)?;
    let current = file.metadata()?.len();
    if new_size <= current {
        return Ok(current);
    }
    file.set_len(new_size)?;
    file.sync_all()?;
    Ok(new_size)
}

/// Bytes of disk space the file occupies. For a reflinked file this counts
/// shared blocks too, so it overstates what the file alone costs.
pub fn allocated_bytes(path: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(path)?.blocks().saturating_mul(512))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A 64 MiB sparse file with 1 MiB of data spread over 4 extents.
    fn sparse_source(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("src.img");
        create_sparse(&p, 64 * MIB).expect("create source");
        let f = OpenOptions::new().write(true).open(&p).expect("open");
        let block: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8 + 1).collect();
        for (i, offset) in [0, 10 * MIB, 33 * MIB + 4096, 50 * MIB]
            .into_iter()
            .enumerate()
        {
            let mut b = block.clone();
            b[0] = i as u8;
            f.write_all_at(&b, offset).expect("write");
        }
        f.sync_all().expect("sync");
        p
    }

    fn assert_same_content(a: &Path, b: &Path) {
        let (fa, fb) = (
            File::open(a).expect("open a"),
            File::open(b).expect("open b"),
        );
        let len = fa.metadata().expect("meta").len();
        assert_eq!(len, fb.metadata().expect("meta").len(), "lengths differ");
        let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(MIB) as usize;
            fa.read_exact_at(&mut ba[..n], pos).expect("read a");
            fb.read_exact_at(&mut bb[..n], pos).expect("read b");
            assert!(ba[..n] == bb[..n], "content differs in MiB at {pos}");
            pos += n as u64;
        }
    }

    #[test]
    fn sparse_copy_keeps_holes_and_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = sparse_source(dir.path());
        let dst = dir.path().join("dst.img");
        let (s, d) = (
            File::open(&src).expect("open"),
            create_new(&dst).expect("create"),
        );
        sparse_copy(&s, &d, 64 * MIB).expect("copy");
        d.sync_all().expect("sync");
        let allocated = allocated_bytes(&dst).expect("stat");
        assert!(allocated >= MIB, "copy lost data: {allocated}");
        assert!(
            allocated <= 2 * MIB,
            "copy filled holes: {allocated} bytes allocated"
        );
        assert_same_content(&src, &dst);
    }

    #[test]
    fn read_write_fallback_keeps_holes_and_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = sparse_source(dir.path());
        let dst = dir.path().join("dst.img");
        let (s, d) = (
            File::open(&src).expect("open"),
            create_new(&dst).expect("create"),
        );
        let mut copier = RangeCopier {
            use_read_write: true,
            buffer: Vec::new(),
        };
        // Copy the whole file as if it were all data: zero runs must still
        // not be written.
        copier.copy(&s, &d, 0, 64 * MIB).expect("copy");
        d.set_len(64 * MIB).expect("set_len");
        d.sync_all().expect("sync");
        assert!(allocated_bytes(&dst).expect("stat") <= 2 * MIB);
        assert_same_content(&src, &dst);
    }

    #[test]
    fn clone_file_copies_content_and_keeps_trailing_hole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = sparse_source(dir.path());
        let dst = dir.path().join("clone.img");
        let method = clone_file(&src, &dst).expect("clone");
        assert_same_content(&src, &dst);
        if method == CloneMethod::SparseCopy {
            assert!(allocated_bytes(&dst).expect("stat") <= 2 * MIB);
        }
    }

    #[test]
    fn clone_onto_existing_file_fails_and_leaves_it_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = sparse_source(dir.path());
        let dst = dir.path().join("existing.img");
        std::fs::write(&dst, b"keep me").expect("write");
        let err = clone_file(&src, &dst).expect_err("dst exists");
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&dst).expect("read"), b"keep me");
    }

    #[test]
    fn clone_of_missing_source_creates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dst = dir.path().join("clone.img");
        let err = clone_file(&dir.path().join("none"), &dst).expect_err("no source");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(!dst.exists());
    }

    #[test]
    fn clone_of_directory_is_rejected_and_dst_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dst = dir.path().join("clone.img");
        let err = clone_file(dir.path(), &dst).expect_err("not a file");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!dst.exists());
    }

    #[test]
    fn empty_and_fully_sparse_sources_clone() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, size) in [("empty", 0), ("holes", 8 * MIB)] {
            let src = dir.path().join(name);
            create_sparse(&src, size).expect("create");
            let dst = dir.path().join(format!("{name}.clone"));
            clone_file(&src, &dst).expect("clone");
            assert_eq!(std::fs::metadata(&dst).expect("stat").len(), size);
            assert_eq!(allocated_bytes(&dst).expect("stat"), 0);
        }
    }

    #[test]
    fn create_sparse_refuses_existing_and_grow_never_shrinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("vol.img");
        create_sparse(&p, 4 * MIB).expect("create");
        assert_eq!(allocated_bytes(&p).expect("stat"), 0);
        let err = create_sparse(&p, MIB).expect_err("exists");
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::metadata(&p).expect("stat").len(), 4 * MIB);

        assert_eq!(grow(&p, 8 * MIB).expect("grow"), 8 * MIB);
        assert_eq!(grow(&p, MIB).expect("no shrink"), 8 * MIB);
        assert_eq!(std::fs::metadata(&p).expect("stat").len(), 8 * MIB);
        assert_eq!(allocated_bytes(&p).expect("stat"), 0);
    }
}
