//! Snapshot metadata at the backend boundary: which byte ranges of a snapshot hold data, and
//! which differ between two snapshots of one volume (changed block tracking, the CSI
//! SnapshotMetadata service).
//!
//! A backend with [`crate::backend::Capabilities::snapshot_metadata`] opens a
//! [`BlockRanges`] for a call; the gRPC layer (`crate::csi::metadata`) pulls it a page at a
//! time and streams the pages. Pulling in pages keeps memory flat for any volume size and lets
//! an abandoned stream stop the work between two pages.

use crate::backend::BackendResult;
use async_trait::async_trait;

/// A byte range `[offset, offset + len)` of a volume or snapshot image; `len > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl ByteRange {
    /// The range `[offset, offset + len)`.
    pub fn new(offset: u64, len: u64) -> Self {
        Self { offset, len }
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// How a backend found the ranges it reports; logged and used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMethod {
    /// Allocated ranges from the file system's allocation map (`SEEK_DATA`/`SEEK_HOLE`); no
    /// data read.
    Allocation,
    /// Changed ranges from the two images' extent maps (FIEMAP): an extent both images still
    /// share did not change. No data read.
    Extents,
    /// Changed ranges found by reading both images where either holds data and comparing.
    Data,
}

impl MetadataMethod {
    /// The label: `allocation`, `extents` or `data`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetadataMethod::Allocation => "allocation",
            MetadataMethod::Extents => "extents",
            MetadataMethod::Data => "data",
        }
    }
}

/// Ranges of one snapshot image (allocated) or of a pair (changed), in increasing order and
/// never overlapping, produced a page at a time from the offset the backend was asked for.
#[async_trait]
pub trait BlockRanges: Send {
    /// Size in bytes of the (target) snapshot image: the CSI `volume_capacity_bytes`.
    fn capacity_bytes(&self) -> u64;

    /// How the ranges are found.
    fn method(&self) -> MetadataMethod;

    /// Bytes of image data read so far (0 for the methods that read none).
    fn bytes_read(&self) -> u64;

    /// The next ranges, at most `max` (> 0). `Ok(None)`: no more ranges. `Ok(Some(v))` with
    /// `v` possibly empty: the backend did a bounded amount of work and will go on at the next
    /// call, so the caller can stop between two calls when nobody listens any more. No range
    /// ends at or before the starting offset; the first may begin before it.
    async fn next_page(&mut self, max: usize) -> BackendResult<Option<Vec<ByteRange>>>;
}
