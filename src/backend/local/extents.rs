//! Allocated and changed byte ranges of the local backend's snapshot images, for the CSI
//! SnapshotMetadata service (changed block tracking).
//!
//! - **Allocated**: `SEEK_DATA`/`SEEK_HOLE` over the snapshot image, the file system's own
//!   allocation map. No data is read.
//! - **Changed, on a file system with reflink** (XFS, btrfs): a snapshot is a FICLONE clone of
//!   the volume image, so every extent a later snapshot did not rewrite is still the very same
//!   physical block in both images. The two images' extent maps (FIEMAP) are walked side by
//!   side: a range is unchanged where both map to the same physical bytes (or both are holes),
//!   and changed where they map to different blocks or only one side holds data. No data is
//!   read, so the cost follows the number of extents, not the volume size. Extents whose
//!   physical address the file system says is not comparable (delayed allocation, inline or
//!   encoded data) are compared by content instead.
//! - **Changed elsewhere** (ext4, tmpfs): snapshots are copies that share no block, so both
//!   images are read wherever either holds data and compared [`BLOCK`] bytes at a time. Ranges
//!   that are holes in both are skipped without reading.
//!
//! The scans are synchronous (file I/O and ioctls); [`Ranges`] runs each page on
//! `spawn_blocking`. Every scan holds its images open, so a snapshot deleted while its stream
//! is read still answers consistently until the stream ends.

use crate::backend::metadata::{BlockRanges, ByteRange, MetadataMethod};
use crate::backend::{BackendError, BackendResult};
use async_trait::async_trait;
use fiemap::{Fiemap, FiemapExtentFlags};
use rustix::fs::SeekFrom;
use rustix::io::Errno;
use std::fs::File;
use std::io::{self, ErrorKind as IoKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Granularity of the content comparison: the usual file system block, so a changed range
/// never covers a block the writes did not touch.
pub const BLOCK: u64 = 4096;

/// Bytes read from each image per read call of the content comparison.
const READ_CHUNK: u64 = 1 << 20;

/// Work done by one page call before it hands back (possibly with no range), so that a stream
/// nobody reads any more stops soon: bytes compared by content, or extent steps walked.
const PAGE_READ_BUDGET: u64 = 256 << 20;
const PAGE_STEP_BUDGET: usize = 1 << 16;

/// Extent flags with which FIEMAP says the physical address cannot be compared: the data is
/// not (yet) at a plain block address of its own.
const NOT_COMPARABLE: FiemapExtentFlags = FiemapExtentFlags::UNKNOWN
    .union(FiemapExtentFlags::DELALLOC)
    .union(FiemapExtentFlags::ENCODED)
    .union(FiemapExtentFlags::DATA_ENCRYPTED)
    .union(FiemapExtentFlags::NOT_ALIGNED)
    .union(FiemapExtentFlags::DATA_INLINE)
    .union(FiemapExtentFlags::DATA_TAIL);

/// A synchronous scan producing ranges a page at a time (see [`BlockRanges::next_page`]).
pub trait Scan: Send + 'static {
    /// Up to `max` next ranges; `None`: done.
    fn next_page(&mut self, max: usize) -> io::Result<Option<Vec<ByteRange>>>;
    /// Bytes of image data read so far.
    fn bytes_read(&self) -> u64;
}

/// A [`Scan`] served as [`BlockRanges`], each page on the blocking pool.
pub struct Ranges<S> {
    scan: Option<S>,
    capacity: u64,
    method: MetadataMethod,
    bytes_read: u64,
    what: String,
}

impl<S: Scan> Ranges<S> {
    fn new(scan: S, capacity: u64, method: MetadataMethod, what: String) -> Self {
        Self {
            scan: Some(scan),
            capacity,
            method,
            bytes_read: 0,
            what,
        }
    }
}

#[async_trait]
impl<S: Scan> BlockRanges for Ranges<S> {
    fn capacity_bytes(&self) -> u64 {
        self.capacity
    }

    fn method(&self) -> MetadataMethod {
        self.method
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    async fn next_page(&mut self, max: usize) -> BackendResult<Option<Vec<ByteRange>>> {
        let Some(mut scan) = self.scan.take() else {
            return Err(BackendError::internal(format!(
                "{}: the scan failed earlier and cannot go on",
                self.what
            )));
        };
        let max = max.max(1);
        let (scan, page) = tokio::task::spawn_blocking(move || {
            let page = scan.next_page(max);
            (scan, page)
        })
        .await
        .map_err(|e| BackendError::internal(format!("{}: scan task failed: {e}", self.what)))?;
        self.bytes_read = scan.bytes_read();
        match page {
            Ok(page) => {
                self.scan = Some(scan);
                Ok(page)
            }
            Err(e) => Err(BackendError::internal(format!("{}: {e}", self.what))),
        }
    }
}

fn open_image(path: &Path, what: &str) -> BackendResult<(File, u64)> {
    let file = File::open(path).map_err(|e| match e.kind() {
        IoKind::NotFound => BackendError::not_found(format!("{what} does not exist")),
        _ => BackendError::internal(format!("{what}: {}: {e}", path.display())),
    })?;
    let len = file
        .metadata()
        .map_err(|e| BackendError::internal(format!("{what}: {}: {e}", path.display())))?
        .len();
    Ok((file, len))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> BackendResult<T> + Send + 'static,
) -> BackendResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::internal(format!("blocking task failed: {e}")))?
}

/// The allocated ranges of the snapshot image at `path` (`what` names it in errors), from byte
/// `from` on.
pub async fn allocated(
    path: PathBuf,
    what: String,
    from: u64,
) -> BackendResult<Box<dyn BlockRanges>> {
    blocking(move || {
        let (file, len) = open_image(&path, &what)?;
        let scan = AllocatedScan::new(file, len, from);
        Ok(
            Box::new(Ranges::new(scan, len, MetadataMethod::Allocation, what))
                as Box<dyn BlockRanges>,
        )
    })
    .await
}

/// The ranges where the image at `target` differs from the one at `base`, from byte `from` on:
/// by extent maps when `reflink` (the images are clones of one another), by content otherwise.
pub async fn changed(
    base: PathBuf,
    target: PathBuf,
    what: String,
    from: u64,
    reflink: bool,
) -> BackendResult<Box<dyn BlockRanges>> {
    blocking(move || {
        let (base_file, base_len) = open_image(&base, "base snapshot")?;
        let (target_file, target_len) = open_image(&target, "target snapshot")?;
        let ranges: Box<dyn BlockRanges> = if reflink {
            let scan = ExtentDelta::new(base_file, base_len, target_file, target_len, from);
            Box::new(Ranges::new(scan, target_len, MetadataMethod::Extents, what))
        } else {
            let scan = DataDelta::new(base_file, base_len, target_file, target_len, from);
            Box::new(Ranges::new(scan, target_len, MetadataMethod::Data, what))
        };
        Ok(ranges)
    })
    .await
}

/// Whether files in `dir` can be cloned with FICLONE (the file system shares extents). Two
/// empty probe files are made and removed; any failure counts as "no".
pub fn supports_reflink(dir: &Path) -> bool {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let src = dir.join(format!(".reflink-probe-{id}-a"));
    let dst = dir.join(format!(".reflink-probe-{id}-b"));
    let result = (|| -> io::Result<bool> {
        // FICLONE reads the source: it must be open for reading.
        let source = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&src)?;
        source.write_all_at(&[0u8; BLOCK as usize], 0)?;
        let target = File::create(&dst)?;
        Ok(rustix::fs::ioctl_ficlone(&target, &source).is_ok())
    })();
    for p in [&src, &dst] {
        if let Err(e) = std::fs::remove_file(p)
            && e.kind() != IoKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "reflink probe file not removed");
        }
    }
    match result {
        Ok(yes) => yes,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "reflink probe failed; comparing snapshots by content");
            false
        }
    }
}

/// The next data range of `file` (of length `len`) at or after `pos`, clipped to `len`.
fn next_data(file: &File, len: u64, pos: u64) -> io::Result<Option<(u64, u64)>> {
    if pos >= len {
        return Ok(None);
    }
    let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
        Ok(offset) => offset,
        // Only holes from `pos` to the end.
        Err(Errno::NXIO) => return Ok(None),
        // No hole reporting: all data.
        Err(Errno::INVAL | Errno::OPNOTSUPP) => pos,
        Err(e) => return Err(e.into()),
    };
    if data >= len {
        return Ok(None);
    }
    let hole = match rustix::fs::seek(file, SeekFrom::Hole(data)) {
        Ok(offset) => offset.min(len),
        Err(Errno::INVAL | Errno::OPNOTSUPP) => len,
        Err(e) => return Err(e.into()),
    };
    if hole <= data {
        return Err(io::Error::other(format!(
            "SEEK_HOLE answered {hole} for data at {data}"
        )));
    }
    Ok(Some((data, hole)))
}

/// Allocated ranges by `SEEK_DATA`/`SEEK_HOLE`.
pub struct AllocatedScan {
    file: File,
    len: u64,
    pos: u64,
}

impl AllocatedScan {
    /// A scan of `file` (of length `len`) from byte `from`.
    pub fn new(file: File, len: u64, from: u64) -> Self {
        Self {
            file,
            len,
            pos: from,
        }
    }
}

impl Scan for AllocatedScan {
    fn next_page(&mut self, max: usize) -> io::Result<Option<Vec<ByteRange>>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((data, hole)) = next_data(&self.file, self.len, self.pos)? else {
                self.pos = self.len;
                break;
            };
            out.push(ByteRange::new(data, hole - data));
            self.pos = hole;
        }
        Ok((!out.is_empty()).then_some(out))
    }

    fn bytes_read(&self) -> u64 {
        0
    }
}

/// Collects changed ranges, merging adjacent ones; a range is handed out once an unchanged
/// byte (or the end) closes it, so a range never splits across two pages.
#[derive(Default)]
struct Collector {
    open: Option<ByteRange>,
    out: Vec<ByteRange>,
}

impl Collector {
    fn changed(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        match &mut self.open {
            Some(open) if open.end() == start => open.len += end - start,
            _ => {
                self.close();
                self.open = Some(ByteRange::new(start, end - start));
            }
        }
    }

    fn close(&mut self) {
        if let Some(range) = self.open.take() {
            self.out.push(range);
        }
    }

    fn take(&mut self) -> Vec<ByteRange> {
        std::mem::take(&mut self.out)
    }
}

/// Buffers and counters of the content comparison.
struct Comparer {
    base: Vec<u8>,
    target: Vec<u8>,
    bytes_read: u64,
}

impl Comparer {
    fn new() -> Self {
        Self {
            base: Vec::new(),
            target: Vec::new(),
            bytes_read: 0,
        }
    }

    /// Compares `[start, end)` of the two images ([`BLOCK`] at a time), telling `into` which
    /// blocks differ. A side without data there (`*_data` false) reads as zeros without I/O.
    fn compare(
        &mut self,
        base: (&File, u64, bool),
        target: (&File, u64, bool),
        start: u64,
        end: u64,
        into: &mut Collector,
    ) -> io::Result<()> {
        if self.base.is_empty() {
            self.base = vec![0; READ_CHUNK as usize];
            self.target = vec![0; READ_CHUNK as usize];
        }
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(READ_CHUNK) as usize;
            self.bytes_read += fill(base, pos, &mut self.base[..n])?;
            self.bytes_read += fill(target, pos, &mut self.target[..n])?;
            let mut at = 0usize;
            while at < n {
                // Blocks are aligned to absolute offsets, whatever `start` is.
                let abs = pos + at as u64;
                let block_end = ((abs / BLOCK) + 1) * BLOCK;
                let stop = ((block_end - pos) as usize).min(n);
                if self.base[at..stop] == self.target[at..stop] {
                    into.close();
                } else {
                    into.changed(abs, pos + stop as u64);
                }
                at = stop;
            }
            pos += n as u64;
        }
        Ok(())
    }
}

/// Reads `buf.len()` bytes at `pos` from one side, zeros past its end or where it has no data.
/// Answers the bytes actually read.
fn fill((file, len, has_data): (&File, u64, bool), pos: u64, buf: &mut [u8]) -> io::Result<u64> {
    buf.fill(0);
    if !has_data || pos >= len {
        return Ok(0);
    }
    let want = ((len - pos).min(buf.len() as u64)) as usize;
    let mut done = 0;
    while done < want {
        match file.read_at(&mut buf[done..want], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done as u64)
}

/// Changed ranges by content: both images read where either holds data.
pub struct DataDelta {
    base: File,
    base_len: u64,
    target: File,
    target_len: u64,
    pos: u64,
    collector: Collector,
    comparer: Comparer,
}

impl DataDelta {
    /// A comparison of `target` against `base` from byte `from` to the end of `target`.
    pub fn new(base: File, base_len: u64, target: File, target_len: u64, from: u64) -> Self {
        Self {
            base,
            base_len,
            target,
            target_len,
            pos: from,
            collector: Collector::default(),
            comparer: Comparer::new(),
        }
    }
}

impl Scan for DataDelta {
    fn next_page(&mut self, max: usize) -> io::Result<Option<Vec<ByteRange>>> {
        let end = self.target_len;
        let budget_end = self.comparer.bytes_read + PAGE_READ_BUDGET;
        while self.pos < end
            && self.collector.out.len() < max
            && self.comparer.bytes_read < budget_end
        {
            let b = next_data(&self.base, self.base_len.min(end), self.pos)?;
            let t = next_data(&self.target, end, self.pos)?;
            let first = [b, t].into_iter().flatten().map(|(s, _)| s).min();
            let Some(first) = first else {
                // Holes in both to the end: unchanged.
                self.collector.close();
                self.pos = end;
                break;
            };
            if first > self.pos {
                self.collector.close();
                self.pos = first;
                continue;
            }
            let inside = |span: Option<(u64, u64)>| span.is_some_and(|(s, _)| s <= self.pos);
            let (b_in, t_in) = (inside(b), inside(t));
            // Up to where the data/hole pattern of both sides changes next.
            let boundary = |span: Option<(u64, u64)>, within: bool| match span {
                Some((_, e)) if within => e,
                Some((s, _)) => s,
                None => u64::MAX,
            };
            let stop = boundary(b, b_in)
                .min(boundary(t, t_in))
                .min(end)
                .min(self.pos + READ_CHUNK);
            self.comparer.compare(
                (&self.base, self.base_len, b_in),
                (&self.target, self.target_len, t_in),
                self.pos,
                stop,
                &mut self.collector,
            )?;
            self.pos = stop;
        }
        if self.pos >= end {
            self.collector.close();
        }
        let out = self.collector.take();
        if out.is_empty() && self.pos >= end {
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn bytes_read(&self) -> u64 {
        self.comparer.bytes_read
    }
}

/// What a file holds over a stretch of its extent map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stretch {
    /// Reads as zeros: a hole, an unwritten (preallocated) extent, or past the end.
    Zeros,
    /// Data at this physical byte address (for the first byte of the stretch).
    At(u64),
    /// Data whose address cannot be compared; compare by content.
    Opaque,
}

/// One extent of an extent map.
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    /// Offset in the file.
    pub logical: u64,
    /// Bytes.
    pub length: u64,
    /// Byte address on the device.
    pub physical: u64,
    /// FIEMAP flags.
    pub flags: FiemapExtentFlags,
}

/// A file's extents in increasing logical order.
pub type Extents = Box<dyn Iterator<Item = io::Result<Extent>> + Send>;

/// The extent map of `file` from FIEMAP.
pub fn fiemap_extents(file: Arc<File>) -> Extents {
    Box::new(Fiemap::new(file).map(|extent| {
        extent.map(|e| Extent {
            logical: e.fe_logical,
            length: e.fe_length,
            physical: e.fe_physical,
            flags: e.fe_flags,
        })
    }))
}

/// One image's extent map, walked forward.
struct ExtentMap {
    extents: Extents,
    current: Option<Extent>,
    done: bool,
    len: u64,
}

impl ExtentMap {
    fn new(extents: Extents, len: u64) -> Self {
        Self {
            extents,
            current: None,
            done: false,
            len,
        }
    }

    fn advance(&mut self) -> io::Result<()> {
        self.current = match self.extents.next() {
            None => {
                self.done = true;
                None
            }
            Some(extent) => Some(extent?),
        };
        Ok(())
    }

    /// What the file holds at `pos`, and up to where that stays so.
    fn at(&mut self, pos: u64) -> io::Result<(u64, Stretch)> {
        if pos >= self.len {
            return Ok((u64::MAX, Stretch::Zeros));
        }
        loop {
            match self.current {
                None if self.done => return Ok((self.len, Stretch::Zeros)),
                None => self.advance()?,
                Some(e) if e.logical.saturating_add(e.length) <= pos => self.advance()?,
                Some(e) if e.logical > pos => return Ok((e.logical.min(self.len), Stretch::Zeros)),
                Some(e) => {
                    let end = e.logical.saturating_add(e.length).min(self.len);
                    let what = if e.flags.intersects(NOT_COMPARABLE) {
                        Stretch::Opaque
                    } else if e.flags.contains(FiemapExtentFlags::UNWRITTEN) {
                        Stretch::Zeros
                    } else {
                        Stretch::At(e.physical + (pos - e.logical))
                    };
                    return Ok((end, what));
                }
            }
        }
    }
}

/// Changed ranges by extent maps: two clones of one image differ only where their extents
/// map to different physical blocks.
pub struct ExtentDelta {
    base: ExtentMap,
    target: ExtentMap,
    base_file: Arc<File>,
    target_file: Arc<File>,
    base_len: u64,
    target_len: u64,
    pos: u64,
    collector: Collector,
    comparer: Comparer,
}

impl ExtentDelta {
    /// A comparison of `target` against `base` from byte `from` to the end of `target`.
    pub fn new(base: File, base_len: u64, target: File, target_len: u64, from: u64) -> Self {
        let (base, target) = (Arc::new(base), Arc::new(target));
        let base_extents = fiemap_extents(Arc::clone(&base));
        let target_extents = fiemap_extents(Arc::clone(&target));
        Self::with_extents(
            (base, base_len, base_extents),
            (target, target_len, target_extents),
            from,
        )
    }

    /// A comparison over given extent maps (the files serve extents that must be compared by
    /// content).
    pub fn with_extents(
        (base, base_len, base_extents): (Arc<File>, u64, Extents),
        (target, target_len, target_extents): (Arc<File>, u64, Extents),
        from: u64,
    ) -> Self {
        Self {
            base: ExtentMap::new(base_extents, base_len),
            target: ExtentMap::new(target_extents, target_len),
            base_file: base,
            target_file: target,
            base_len,
            target_len,
            pos: from,
            collector: Collector::default(),
            comparer: Comparer::new(),
        }
    }
}

impl Scan for ExtentDelta {
    fn next_page(&mut self, max: usize) -> io::Result<Option<Vec<ByteRange>>> {
        let end = self.target_len;
        let budget_end = self.comparer.bytes_read + PAGE_READ_BUDGET;
        let mut steps = 0;
        while self.pos < end
            && self.collector.out.len() < max
            && steps < PAGE_STEP_BUDGET
            && self.comparer.bytes_read < budget_end
        {
            steps += 1;
            let (base_end, base) = self.base.at(self.pos)?;
            let (target_end, target) = self.target.at(self.pos)?;
            let stop = base_end.min(target_end).min(end);
            match (base, target) {
                (Stretch::Zeros, Stretch::Zeros) => self.collector.close(),
                (Stretch::At(a), Stretch::At(b)) if a == b => self.collector.close(),
                (Stretch::Opaque, _) | (_, Stretch::Opaque) => {
                    // Bounded per step so the page budget holds.
                    let stop = stop.min(self.pos + READ_CHUNK);
                    self.comparer.compare(
                        (&self.base_file, self.base_len, base != Stretch::Zeros),
                        (&self.target_file, self.target_len, target != Stretch::Zeros),
                        self.pos,
                        stop,
                        &mut self.collector,
                    )?;
                    self.pos = stop;
                    continue;
                }
                _ => self.collector.changed(self.pos, stop),
            }
            self.pos = stop;
        }
        if self.pos >= end {
            self.collector.close();
        }
        let out = self.collector.take();
        if out.is_empty() && self.pos >= end {
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn bytes_read(&self) -> u64 {
        self.comparer.bytes_read
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    const K: u64 = 1024;

    /// A sparse file of `len` bytes with `writes` (offset, len, byte) and `punches` applied.
    fn image(dir: &Path, name: &str, len: u64, writes: &[(u64, u64, u8)]) -> PathBuf {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .expect("create");
        file.set_len(len).expect("set_len");
        for &(offset, n, byte) in writes {
            file.write_all_at(&vec![byte; n as usize], offset)
                .expect("write");
        }
        file.sync_all().expect("sync");
        path
    }

    fn punch(path: &Path, offset: u64, len: u64) {
        let file = OpenOptions::new().write(true).open(path).expect("open");
        rustix::fs::fallocate(
            &file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .expect("punch hole");
        file.sync_all().expect("sync");
    }

    fn open(path: &Path) -> (File, u64) {
        let file = File::open(path).expect("open");
        let len = file.metadata().expect("stat").len();
        (file, len)
    }

    /// Every page of a scan, each at most `max` long.
    fn drain(scan: &mut dyn Scan, max: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for _ in 0..100_000 {
            match scan.next_page(max).expect("page") {
                None => return out,
                Some(page) => {
                    assert!(page.len() <= max, "page of {} > {max}", page.len());
                    out.extend(page.into_iter().map(|r| (r.offset, r.len)));
                }
            }
        }
        panic!("the scan never ended");
    }

    #[test]
    fn allocated_ranges_follow_the_data_from_the_starting_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = image(
            dir.path(),
            "snap.img",
            1024 * K,
            &[(0, 8 * K, 1), (64 * K, 16 * K, 2), (1020 * K, 4 * K, 3)],
        );
        let want = vec![(0, 8 * K), (64 * K, 16 * K), (1020 * K, 4 * K)];
        let (file, len) = open(&path);
        assert_eq!(drain(&mut AllocatedScan::new(file, len, 0), 100), want);
        let (file, len) = open(&path);
        assert_eq!(drain(&mut AllocatedScan::new(file, len, 0), 1), want);
        let (file, len) = open(&path);
        assert_eq!(
            drain(&mut AllocatedScan::new(file, len, 70 * K), 100),
            vec![(70 * K, 10 * K), (1020 * K, 4 * K)]
        );
        let (file, len) = open(&path);
        assert_eq!(drain(&mut AllocatedScan::new(file, len, len), 100), vec![]);
    }

    #[test]
    fn content_comparison_finds_overwrites_holes_and_growth() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base_writes = [(0, 64 * K, 1), (128 * K, 64 * K, 2)];
        let base = image(dir.path(), "base.img", 256 * K, &base_writes);
        // The target: the base grown to 512 KiB, with one block overwritten, one rewritten
        // with the bytes it had (not a change), one punched out and new data past the old end.
        let target = image(
            dir.path(),
            "target.img",
            512 * K,
            &[
                (0, 64 * K, 1),
                (128 * K, 64 * K, 2),
                (16 * K, 4 * K, 3),
                (40 * K, 4 * K, 1),
                (300 * K, 8 * K, 4),
            ],
        );
        punch(&target, 128 * K, 4 * K);
        let want = vec![(16 * K, 4 * K), (128 * K, 4 * K), (300 * K, 8 * K)];
        for max in [1, 100] {
            let ((b, bl), (t, tl)) = (open(&base), open(&target));
            let mut scan = DataDelta::new(b, bl, t, tl, 0);
            assert_eq!(drain(&mut scan, max), want);
            // Only where either side holds data: 128 KiB of the base, 136 of the target.
            assert!(scan.bytes_read() > 0, "nothing read");
            assert!(scan.bytes_read() <= 264 * K, "read {}", scan.bytes_read());
        }
        let ((b, bl), (t, tl)) = (open(&base), open(&target));
        assert_eq!(
            drain(&mut DataDelta::new(b, bl, t, tl, 130 * K), 100),
            vec![(130 * K, 2 * K), (300 * K, 8 * K)]
        );
        let ((b, bl), (t, tl)) = (open(&base), open(&base));
        assert_eq!(drain(&mut DataDelta::new(b, bl, t, tl, 0), 100), vec![]);
    }

    fn extents(list: &[(u64, u64, u64, FiemapExtentFlags)]) -> Extents {
        let list: Vec<io::Result<Extent>> = list
            .iter()
            .map(|&(logical, length, physical, flags)| {
                Ok(Extent {
                    logical,
                    length,
                    physical,
                    flags,
                })
            })
            .collect();
        Box::new(list.into_iter())
    }

    const NONE: FiemapExtentFlags = FiemapExtentFlags::empty();

    #[test]
    fn extent_maps_differ_where_physical_blocks_differ() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = image(dir.path(), "empty.img", 512 * K, &[]);
        let file = || Arc::new(File::open(&empty).expect("open"));
        const P: u64 = 1 << 30;
        let base = extents(&[(0, 64 * K, P, NONE), (128 * K, 64 * K, 2 * P, NONE)]);
        let target = extents(&[
            // Shared, one block copied on write, shared again.
            (0, 16 * K, P, NONE),
            (16 * K, 4 * K, 9 * P, NONE),
            (20 * K, 44 * K, P + 20 * K, NONE),
            // [128K, 132K) punched out; the rest still shared.
            (132 * K, 60 * K, 2 * P + 4 * K, NONE),
            // New data past the base's end (the volume grew).
            (300 * K, 8 * K, 7 * P, NONE),
            // Preallocated but never written: reads as zeros like the base's hole.
            (400 * K, 20 * K, 8 * P, FiemapExtentFlags::UNWRITTEN),
        ]);
        let mut scan =
            ExtentDelta::with_extents((file(), 256 * K, base), (file(), 512 * K, target), 0);
        assert_eq!(
            drain(&mut scan, 100),
            vec![(16 * K, 4 * K), (128 * K, 4 * K), (300 * K, 8 * K)]
        );
        assert_eq!(
            scan.bytes_read(),
            0,
            "extent maps are compared without reading"
        );

        // The same physical blocks at another logical offset are a change.
        let base = extents(&[(0, 64 * K, P, NONE)]);
        let target = extents(&[(0, 64 * K, P + 4 * K, NONE)]);
        let mut scan =
            ExtentDelta::with_extents((file(), 64 * K, base), (file(), 64 * K, target), 8 * K);
        assert_eq!(drain(&mut scan, 1), vec![(8 * K, 56 * K)]);
    }

    #[test]
    fn extents_without_a_comparable_address_are_compared_by_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = image(dir.path(), "base.img", 64 * K, &[(0, 64 * K, 1)]);
        let target = image(
            dir.path(),
            "target.img",
            64 * K,
            &[(0, 64 * K, 1), (8 * K, 4 * K, 2)],
        );
        let open_arc = |p: &Path| Arc::new(File::open(p).expect("open"));
        let mut scan = ExtentDelta::with_extents(
            (
                open_arc(&base),
                64 * K,
                extents(&[(0, 64 * K, 1 << 30, NONE)]),
            ),
            (
                open_arc(&target),
                64 * K,
                extents(&[(0, 64 * K, 0, FiemapExtentFlags::DELALLOC)]),
            ),
            0,
        );
        assert_eq!(drain(&mut scan, 100), vec![(8 * K, 4 * K)]);
        assert_eq!(scan.bytes_read(), 128 * K);
    }

    #[test]
    fn the_reflink_probe_agrees_with_a_clone_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let probed = supports_reflink(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        let src = image(dir.path(), "src.img", 64 * K, &[(0, 64 * K, 7)]);
        let dst = dir.path().join("dst.img");
        let method = crate::backend::local::clone::clone_file(&src, &dst).expect("clone");
        assert_eq!(
            probed,
            method == crate::backend::local::clone::CloneMethod::Reflink,
            "the probe and a real clone disagree about reflink"
        );
    }

    #[test]
    fn real_extent_maps_of_one_file_show_no_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = image(
            dir.path(),
            "a.img",
            256 * K,
            &[(0, 64 * K, 1), (128 * K, 4 * K, 2)],
        );
        let ((a, al), (b, bl)) = (open(&path), open(&path));
        let mut scan = ExtentDelta::new(a, al, b, bl, 0);
        match scan.next_page(10) {
            Ok(page) => assert_eq!(page.unwrap_or_default(), vec![]),
            // A file system without FIEMAP (tmpfs on old kernels) cannot run this check.
            Err(e) if e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) => {}
            Err(e) => panic!("fiemap: {e}"),
        }
    }
}
