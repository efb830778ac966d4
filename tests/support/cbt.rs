//! Shared pieces of the changed block tracking tests (tests/snapshot_metadata.rs and
//! tests/kube_cbt_e2e.rs): a model of what a block volume holds, writes through the node path
//! (the published block device), and the SnapshotMetadata answers as plain ranges.
//!
//! Every write puts bytes no other write puts anywhere (a per-write seed, varied per block), so
//! "changed" has one meaning for every method: a block whose bytes differ. Writes and holes
//! are whole [`BLOCK`]s at [`BLOCK`]-aligned offsets, which is the granularity the file systems
//! and the driver work at; then the answers must equal the model exactly.

#![allow(dead_code)]

use snapcsi::proto as csi;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use tonic::transport::Channel;

pub const BLOCK: u64 = 4096;
pub const MIB: u64 = 1 << 20;

/// What a block volume holds: for each written block, the seed of the write that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub size: u64,
    blocks: BTreeMap<u64, u64>,
}

/// Deterministic bytes for block `index` of write `seed`: never all zeros, never equal to
/// another (seed, index).
pub fn block_bytes(seed: u64, index: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        | 1;
    let mut out = Vec::with_capacity(BLOCK as usize);
    while out.len() < BLOCK as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Sorted ranges with touching ones merged.
pub fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (offset, len) in ranges {
        if len == 0 {
            continue;
        }
        match out.last_mut() {
            Some((o, l)) if *o + *l >= offset => *l = (*l).max(offset + len - *o),
            _ => out.push((offset, len)),
        }
    }
    out
}

fn runs(indices: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    merged(indices.map(|i| (i * BLOCK, BLOCK)).collect())
}

impl Model {
    /// An empty (all holes) volume of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            blocks: BTreeMap::new(),
        }
    }

    fn indices(offset: u64, len: u64) -> std::ops::Range<u64> {
        assert!(
            offset.is_multiple_of(BLOCK) && len.is_multiple_of(BLOCK),
            "whole blocks only"
        );
        offset / BLOCK..(offset + len) / BLOCK
    }

    /// Records a write of `len` bytes at `offset` by write `seed`.
    pub fn write(&mut self, offset: u64, len: u64, seed: u64) {
        assert!(offset + len <= self.size, "write past the end");
        for i in Self::indices(offset, len) {
            self.blocks.insert(i, seed);
        }
    }

    /// Records a hole punched (discarded) at `offset`.
    pub fn punch(&mut self, offset: u64, len: u64) {
        for i in Self::indices(offset, len) {
            self.blocks.remove(&i);
        }
    }

    /// Records the volume growing to `size`.
    pub fn grow(&mut self, size: u64) {
        assert!(size >= self.size);
        self.size = size;
    }

    /// The allocated ranges: every block holding written data.
    pub fn allocated(&self) -> Vec<(u64, u64)> {
        runs(self.blocks.keys().copied())
    }

    /// The ranges in which `self` differs from `base`: blocks written since, and blocks that
    /// held data in `base` and are holes now.
    pub fn delta_from(&self, base: &Model) -> Vec<(u64, u64)> {
        let mut keys: Vec<u64> = self
            .blocks
            .keys()
            .chain(base.blocks.keys())
            .copied()
            .collect();
        keys.sort_unstable();
        keys.dedup();
        runs(
            keys.into_iter()
                .filter(|i| i * BLOCK < self.size && self.blocks.get(i) != base.blocks.get(i)),
        )
    }

    /// The full content, for comparing an image byte for byte.
    pub fn content(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.size as usize];
        for (&i, &seed) in &self.blocks {
            let at = (i * BLOCK) as usize;
            out[at..at + BLOCK as usize].copy_from_slice(&block_bytes(seed, i));
        }
        out
    }
}

/// A published raw block volume (the bind-mounted device node at the target path).
pub struct Device {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl Device {
    pub fn open(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        Self {
            file,
            path: path.to_owned(),
        }
    }

    /// Writes `len` bytes at `offset` (write `seed`) and records it in `model`.
    pub fn write(&self, model: &mut Model, offset: u64, len: u64, seed: u64) {
        let mut buf = Vec::with_capacity(len as usize);
        for i in offset / BLOCK..(offset + len) / BLOCK {
            buf.extend_from_slice(&block_bytes(seed, i));
        }
        self.file
            .write_all_at(&buf, offset)
            .unwrap_or_else(|e| panic!("write {len} bytes at {offset}: {e}"));
        model.write(offset, len, seed);
    }

    /// Discards `len` bytes at `offset` (the loop device punches a hole in its image) and
    /// records it in `model`.
    pub fn punch(&self, model: &mut Model, offset: u64, len: u64) {
        self.sync();
        let out = std::process::Command::new("blkdiscard")
            .args([
                "--offset",
                &offset.to_string(),
                "--length",
                &len.to_string(),
            ])
            .arg(&self.path)
            .output()
            .expect("run blkdiscard (util-linux)");
        assert!(
            out.status.success(),
            "blkdiscard: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        model.punch(offset, len);
    }

    /// Flushes the device's page cache to the image: what a snapshot of a raw block volume
    /// sees is what reached the image.
    pub fn sync(&self) {
        self.file.sync_all().expect("fsync the block device");
    }
}

/// A stream's answer: type, capacity and tuples, each message's size checked against `max`.
#[derive(Debug)]
pub struct Answer {
    pub block_type: i32,
    pub capacity: i64,
    pub tuples: Vec<(u64, u64)>,
    pub messages: usize,
}

impl Answer {
    /// The tuples with touching ones merged (variable-length answers may split a run anywhere).
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        merged(self.tuples.clone())
    }
}

fn check_message(
    answer: &mut Answer,
    block_type: i32,
    capacity: i64,
    metadata: &[csi::BlockMetadata],
    max: usize,
) {
    if answer.messages == 0 {
        answer.block_type = block_type;
        answer.capacity = capacity;
    }
    assert_eq!(
        answer.block_type, block_type,
        "block_metadata_type changed mid-stream"
    );
    assert_eq!(
        answer.capacity, capacity,
        "volume_capacity_bytes changed mid-stream"
    );
    assert!(
        max == 0 || metadata.len() <= max,
        "{} tuples > max_results {max}",
        metadata.len()
    );
    for m in metadata {
        assert!(m.size_bytes > 0, "empty tuple {m:?}");
        let (offset, len) = (m.byte_offset as u64, m.size_bytes as u64);
        if let Some(&(po, pl)) = answer.tuples.last() {
            assert!(
                po + pl <= offset,
                "tuples overlap or go backwards: ({po},{pl}) then {m:?}"
            );
        }
        answer.tuples.push((offset, len));
    }
    answer.messages += 1;
}

/// GetMetadataAllocated, the whole stream.
pub async fn allocated(
    channel: &Channel,
    snapshot_id: &str,
    starting_offset: i64,
    max_results: i32,
) -> Result<Answer, tonic::Status> {
    let mut client = csi::snapshot_metadata_client::SnapshotMetadataClient::new(channel.clone());
    let stream = client
        .get_metadata_allocated(csi::GetMetadataAllocatedRequest {
            snapshot_id: snapshot_id.into(),
            starting_offset,
            max_results,
            ..Default::default()
        })
        .await?
        .into_inner();
    collect(stream, max_results, |m| {
        (
            m.block_metadata_type,
            m.volume_capacity_bytes,
            &m.block_metadata,
        )
    })
    .await
}

/// GetMetadataDelta, the whole stream.
pub async fn delta(
    channel: &Channel,
    base: &str,
    target: &str,
    starting_offset: i64,
    max_results: i32,
) -> Result<Answer, tonic::Status> {
    let mut client = csi::snapshot_metadata_client::SnapshotMetadataClient::new(channel.clone());
    let stream = client
        .get_metadata_delta(csi::GetMetadataDeltaRequest {
            base_snapshot_id: base.into(),
            target_snapshot_id: target.into(),
            starting_offset,
            max_results,
            ..Default::default()
        })
        .await?
        .into_inner();
    collect(stream, max_results, |m| {
        (
            m.block_metadata_type,
            m.volume_capacity_bytes,
            &m.block_metadata,
        )
    })
    .await
}

/// Reads a metadata stream to its end, checking every message (`check_message`); `fields`
/// picks the block type, capacity and tuples out of either response type.
async fn collect<M>(
    mut stream: tonic::Streaming<M>,
    max_results: i32,
    fields: impl Fn(&M) -> (i32, i64, &Vec<csi::BlockMetadata>),
) -> Result<Answer, tonic::Status> {
    let mut answer = Answer {
        block_type: 0,
        capacity: 0,
        tuples: Vec::new(),
        messages: 0,
    };
    while let Some(message) = stream.message().await? {
        let (block_type, capacity, tuples) = fields(&message);
        check_message(
            &mut answer,
            block_type,
            capacity,
            tuples,
            max_results as usize,
        );
    }
    Ok(answer)
}

/// The part of `ranges` at or after `from` (what a stream resumed at `from` must answer).
pub fn from_offset(ranges: &[(u64, u64)], from: u64) -> Vec<(u64, u64)> {
    ranges
        .iter()
        .filter(|(o, l)| o + l > from)
        .map(|&(o, l)| {
            if o < from {
                (from, o + l - from)
            } else {
                (o, l)
            }
        })
        .collect()
}

/// A raw block capability (single-node writer).
pub fn block_capability() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: 1 }),
        access_type: Some(csi::volume_capability::AccessType::Block(
            csi::volume_capability::BlockVolume {},
        )),
    }
}
