//! The CSI SnapshotMetadata service: the allocated blocks of a snapshot and the changed blocks
//! between two snapshots of one volume (changed block tracking), as gRPC streams.
//!
//! Served (and SNAPSHOT_METADATA_SERVICE advertised by Identity) only when the backend has
//! [`crate::backend::Capabilities::snapshot_metadata`]. Each call is checked here — every
//! error row of the spec's GetMetadataAllocated/GetMetadataDelta tables —, then the backend
//! opens a [`BlockRanges`] and a task pulls it a page at a time into the response stream. A
//! stream the client dropped stops at the next page; memory stays flat for any volume size.
//!
//! Errors (CSI spec, "GetMetadataAllocated Errors" / "GetMetadataDelta Errors"):
//! - missing or otherwise invalid argument -> INVALID_ARGUMENT (empty or oversized ids,
//!   negative `max_results`; for a delta also base and target of different volumes, the same
//!   snapshot twice, or a base that is not older than the target: the target is "a second
//!   snapshot in the same volume, created after the base snapshot");
//! - an unknown `snapshot_id` / `base_snapshot_id` / `target_snapshot_id` -> NOT_FOUND;
//! - an invalid `starting_offset` (negative, or past the end of the snapshot) -> OUT_OF_RANGE;
//! - a snapshot whose backend instance cannot track changes (a config mixing instances) ->
//!   FAILED_PRECONDITION, "changed block tracking is not enabled": take a full backup.

use super::validate;
use crate::backend::metadata::{BlockRanges, ByteRange, MetadataMethod};
use crate::backend::{Snapshot, SnapshotId};
use crate::error::{Error, Result};
use crate::ops::Ops;
use crate::proto::snapshot_metadata_server::SnapshotMetadata;
use crate::proto::{self as csi, BlockMetadataType};
use crate::secret::Secrets;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Tuples per message when the caller leaves `max_results` at 0.
pub const DEFAULT_MAX_RESULTS: usize = 1024;
/// Most tuples per message whatever the caller asks ("the plugin is always free to send less
/// than the requested value"): about 80 KiB, well under gRPC's default 4 MiB message limit.
pub const MAX_RESULTS_CAP: usize = 4096;

/// How block metadata is shaped on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// `VARIABLE_LENGTH`: one tuple per extent or changed run, as long as it is.
    Variable,
    /// `FIXED_LENGTH`: tuples of exactly this many bytes, aligned to it; a range is widened to
    /// the blocks it touches.
    Fixed(u64),
}

impl BlockFormat {
    /// From the `--snapshot-metadata-block-size` flag: 0 = variable length.
    pub fn from_block_size(bytes: u64) -> Self {
        if bytes == 0 {
            BlockFormat::Variable
        } else {
            BlockFormat::Fixed(bytes)
        }
    }

    fn wire_type(self) -> BlockMetadataType {
        match self {
            BlockFormat::Variable => BlockMetadataType::VariableLength,
            BlockFormat::Fixed(_) => BlockMetadataType::FixedLength,
        }
    }

    /// Where the scan starts for a request starting at `offset`: the block holding it when
    /// blocks are fixed ("the plugin may round down this offset to the nearest alignment
    /// boundary").
    fn scan_start(self, offset: u64) -> u64 {
        match self {
            BlockFormat::Variable => offset,
            BlockFormat::Fixed(size) => offset / size * size,
        }
    }
}

/// Turns backend ranges into wire tuples, batched by `max_results`, never ending at or before
/// the starting offset and never repeating a fixed block two adjacent ranges share.
struct Shaper {
    format: BlockFormat,
    starting_offset: u64,
    capacity: u64,
    max: usize,
    /// End of the last tuple emitted: fixed blocks below it were sent already.
    emitted_to: u64,
    batch: Vec<csi::BlockMetadata>,
    tuples: u64,
}

impl Shaper {
    /// Appends a tuple; answers the batch once it holds `max`.
    fn push(&mut self, offset: u64, len: u64) -> Option<Vec<csi::BlockMetadata>> {
        self.batch.push(csi::BlockMetadata {
            byte_offset: i64::try_from(offset).unwrap_or(i64::MAX),
            size_bytes: i64::try_from(len).unwrap_or(i64::MAX),
        });
        self.emitted_to = offset + len;
        self.tuples += 1;
        (self.batch.len() >= self.max).then(|| std::mem::take(&mut self.batch))
    }

    /// Adds `range` until a batch is full: answers that batch, if any, and what is left of
    /// the range to add next. One call holds at most one batch however long the range (a
    /// 50 GiB run is 13 million 4 KiB tuples), so memory stays flat.
    fn add(&mut self, range: ByteRange) -> (Option<Vec<csi::BlockMetadata>>, Option<ByteRange>) {
        let end = range.end().min(self.capacity);
        if end <= self.starting_offset || end <= range.offset {
            return (None, None);
        }
        match self.format {
            BlockFormat::Variable => {
                let start = range.offset.max(self.starting_offset);
                (self.push(start, end - start), None)
            }
            BlockFormat::Fixed(size) => {
                // The first block not sent yet that ends after the starting offset.
                let mut block = (range.offset / size * size)
                    .max(self.emitted_to)
                    .max(self.starting_offset / size * size);
                while block < end {
                    let full = self.push(block, size);
                    block += size;
                    if full.is_some() {
                        let rest = (block < end).then(|| ByteRange::new(block, end - block));
                        return (full, rest);
                    }
                }
                (None, None)
            }
        }
    }
}

/// The SnapshotMetadata service.
pub struct MetadataService {
    ops: Ops,
    format: BlockFormat,
}

/// A checked request, ready to stream.
struct Plan {
    rpc: &'static str,
    ranges: Box<dyn BlockRanges>,
    starting_offset: u64,
    max: usize,
    subject: String,
}

impl MetadataService {
    /// The service over `ops`, whose backend supports snapshot metadata.
    pub fn new(ops: Ops, format: BlockFormat) -> Self {
        Self { ops, format }
    }

    fn kind(&self) -> &'static str {
        self.ops.backend().kind()
    }

    /// The snapshot `id` sent in `field`, NOT_FOUND naming the field when missing.
    async fn snapshot(&self, ops: &Ops, field: &'static str, id: &str) -> Result<Snapshot> {
        let id = SnapshotId::new(validate::id(field, id)?);
        match ops.get_snapshot(&id).await {
            Err(Error::NotFound { .. }) => Err(Error::NotFound {
                what: match field {
                    "base_snapshot_id" => "base_snapshot_id: snapshot",
                    "target_snapshot_id" => "target_snapshot_id: snapshot",
                    _ => "snapshot_id: snapshot",
                },
                id: id.to_string(),
            }),
            other => other,
        }
    }

    async fn allocated_plan(&self, req: csi::GetMetadataAllocatedRequest) -> Result<Plan> {
        let starting_offset = offset(req.starting_offset)?;
        let max = max_results(req.max_results)?;
        let ops = self.ops.scoped(&Secrets::from_map(req.secrets))?;
        let snapshot = self.snapshot(&ops, "snapshot_id", &req.snapshot_id).await?;
        let ranges = ops
            .backend()
            .allocated_blocks(&snapshot.id, self.format.scan_start(starting_offset))
            .await?;
        check_offset(starting_offset, ranges.capacity_bytes())?;
        Ok(Plan {
            rpc: "GetMetadataAllocated",
            ranges,
            starting_offset,
            max,
            subject: format!("snapshot {}", snapshot.id),
        })
    }

    async fn delta_plan(&self, req: csi::GetMetadataDeltaRequest) -> Result<Plan> {
        let starting_offset = offset(req.starting_offset)?;
        let max = max_results(req.max_results)?;
        let base_id = validate::id("base_snapshot_id", &req.base_snapshot_id)?;
        let target_id = validate::id("target_snapshot_id", &req.target_snapshot_id)?;
        if base_id == target_id {
            return Err(Error::invalid(
                "target_snapshot_id",
                "is the base_snapshot_id itself; the target must be a later snapshot of the \
                 same volume",
            ));
        }
        let ops = self.ops.scoped(&Secrets::from_map(req.secrets))?;
        let base = self.snapshot(&ops, "base_snapshot_id", base_id).await?;
        let target = self.snapshot(&ops, "target_snapshot_id", target_id).await?;
        if base.source_volume_id != target.source_volume_id {
            return Err(Error::invalid(
                "target_snapshot_id",
                format!(
                    "snapshot {} is of volume {}, but base_snapshot_id {} is of volume {}: a \
                     delta compares two snapshots of one volume",
                    target.id, target.source_volume_id, base.id, base.source_volume_id
                ),
            ));
        }
        if base.created_at >= target.created_at {
            return Err(Error::invalid(
                "base_snapshot_id",
                format!(
                    "snapshot {} was not taken before target_snapshot_id {}: the base must be \
                     the older snapshot",
                    base.id, target.id
                ),
            ));
        }
        let ranges = ops
            .backend()
            .changed_blocks(
                &base.id,
                &target.id,
                self.format.scan_start(starting_offset),
            )
            .await?;
        check_offset(starting_offset, ranges.capacity_bytes())?;
        Ok(Plan {
            rpc: "GetMetadataDelta",
            ranges,
            starting_offset,
            max,
            subject: format!("delta {}..{}", base.id, target.id),
        })
    }

    /// Streams a plan's ranges as messages made by `message`.
    fn stream<M: Send + 'static>(
        &self,
        plan: Plan,
        message: fn(BlockMetadataType, i64, Vec<csi::BlockMetadata>) -> M,
    ) -> ReceiverStream<std::result::Result<M, Status>> {
        let (tx, rx) = mpsc::channel(2);
        let backend = self.kind();
        let format = self.format;
        // The stream outlives this call: it keeps the RPC's span (rpc, request_id) for its log.
        tokio::spawn(pump(plan, format, backend, tx, message).instrument(tracing::Span::current()));
        ReceiverStream::new(rx)
    }

    /// The answer of an RPC whose checks failed before any message: logged and counted like
    /// every call.
    fn refuse<T>(
        &self,
        rpc: &'static str,
        started: Instant,
        error: Error,
    ) -> std::result::Result<T, Status> {
        let code = error.code();
        crate::metrics::metrics().rpc(rpc, self.kind(), code, started.elapsed());
        let status = Status::from(error);
        tracing::warn!(rpc, code = ?status.code(), message = status.message(), "request failed");
        Err(status)
    }
}

/// `starting_offset` as bytes: negative is an invalid offset (OUT_OF_RANGE).
fn offset(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| {
        Error::OutOfRange(format!(
            "starting_offset: must not be negative, got {value}"
        ))
    })
}

/// CSI "Invalid `starting_offset`": past the end of the snapshot -> OUT_OF_RANGE. An offset
/// equal to the size is the resume point after the last byte: an empty answer.
fn check_offset(offset: u64, capacity: u64) -> Result<()> {
    if offset > capacity {
        return Err(Error::OutOfRange(format!(
            "starting_offset: {offset} is past the end of the snapshot ({capacity} bytes)"
        )));
    }
    Ok(())
}

fn max_results(value: i32) -> Result<usize> {
    match usize::try_from(value) {
        Err(_) => Err(Error::invalid(
            "max_results",
            format!("must not be negative, got {value}"),
        )),
        Ok(0) => Ok(DEFAULT_MAX_RESULTS),
        Ok(n) => Ok(n.min(MAX_RESULTS_CAP)),
    }
}

/// Pulls pages from the backend and sends them until the end, an error, or a client that is
/// gone; then logs one line naming the method (how the ranges were found) and records the
/// metrics.
async fn pump<M: Send + 'static>(
    mut plan: Plan,
    format: BlockFormat,
    backend: &'static str,
    tx: mpsc::Sender<std::result::Result<M, Status>>,
    message: fn(BlockMetadataType, i64, Vec<csi::BlockMetadata>) -> M,
) {
    let started = Instant::now();
    let capacity = plan.ranges.capacity_bytes();
    let wire_capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
    let wire_type = format.wire_type();
    let mut shaper = Shaper {
        format,
        starting_offset: plan.starting_offset,
        capacity,
        max: plan.max,
        emitted_to: 0,
        batch: Vec::with_capacity(plan.max),
        tuples: 0,
    };
    let mut ranges = 0u64;
    let mut code = tonic::Code::Ok;
    let mut messages = 0u64;
    'pages: loop {
        if tx.is_closed() {
            code = tonic::Code::Cancelled;
            break;
        }
        let page = match plan.ranges.next_page(plan.max).await {
            Ok(Some(page)) => page,
            Ok(None) => break,
            Err(e) => {
                let status = Status::from(Error::from(e));
                code = status.code();
                tracing::warn!(rpc = plan.rpc, subject = %plan.subject, code = ?code, message = status.message(), "snapshot metadata stream failed");
                let _ = tx.send(Err(status)).await;
                break;
            }
        };
        ranges += page.len() as u64;
        for range in page {
            let mut rest = Some(range);
            while let Some(range) = rest {
                let (full, left) = shaper.add(range);
                rest = left;
                let Some(batch) = full else { continue };
                messages += 1;
                if tx
                    .send(Ok(message(wire_type, wire_capacity, batch)))
                    .await
                    .is_err()
                {
                    code = tonic::Code::Cancelled;
                    break 'pages;
                }
            }
        }
    }
    if code == tonic::Code::Ok && !shaper.batch.is_empty() {
        let batch = std::mem::take(&mut shaper.batch);
        messages += 1;
        if tx
            .send(Ok(message(wire_type, wire_capacity, batch)))
            .await
            .is_err()
        {
            code = tonic::Code::Cancelled;
        }
    }
    let method = plan.ranges.method();
    let bytes_read = plan.ranges.bytes_read();
    let elapsed = started.elapsed();
    tracing::info!(
        rpc = plan.rpc,
        subject = %plan.subject,
        method = method.as_str(),
        ranges,
        tuples = shaper.tuples,
        messages,
        bytes_read,
        capacity,
        elapsed_ms = elapsed.as_millis() as u64,
        code = ?code,
        "snapshot metadata streamed ({})",
        describe(method)
    );
    let metrics = crate::metrics::metrics();
    metrics.rpc(plan.rpc, backend, code, elapsed);
    metrics.snapshot_metadata(plan.rpc, backend, method.as_str(), code, bytes_read);
}

fn describe(method: MetadataMethod) -> &'static str {
    match method {
        MetadataMethod::Allocation => "allocated ranges from the file system's allocation map",
        MetadataMethod::Extents => "changed ranges from the extent maps, no data read",
        MetadataMethod::Data => "changed ranges by reading and comparing both snapshots",
    }
}

fn allocated_message(
    block_metadata_type: BlockMetadataType,
    volume_capacity_bytes: i64,
    block_metadata: Vec<csi::BlockMetadata>,
) -> csi::GetMetadataAllocatedResponse {
    csi::GetMetadataAllocatedResponse {
        block_metadata_type: block_metadata_type as i32,
        volume_capacity_bytes,
        block_metadata,
    }
}

fn delta_message(
    block_metadata_type: BlockMetadataType,
    volume_capacity_bytes: i64,
    block_metadata: Vec<csi::BlockMetadata>,
) -> csi::GetMetadataDeltaResponse {
    csi::GetMetadataDeltaResponse {
        block_metadata_type: block_metadata_type as i32,
        volume_capacity_bytes,
        block_metadata,
    }
}

type Stream<M> = ReceiverStream<std::result::Result<M, Status>>;

#[tonic::async_trait]
impl SnapshotMetadata for MetadataService {
    type GetMetadataAllocatedStream = Stream<csi::GetMetadataAllocatedResponse>;
    type GetMetadataDeltaStream = Stream<csi::GetMetadataDeltaResponse>;

    async fn get_metadata_allocated(
        &self,
        request: Request<csi::GetMetadataAllocatedRequest>,
    ) -> std::result::Result<Response<Self::GetMetadataAllocatedStream>, Status> {
        let started = Instant::now();
        match self.allocated_plan(request.into_inner()).await {
            Ok(plan) => Ok(Response::new(self.stream(plan, allocated_message))),
            Err(e) => self.refuse("GetMetadataAllocated", started, e),
        }
    }

    async fn get_metadata_delta(
        &self,
        request: Request<csi::GetMetadataDeltaRequest>,
    ) -> std::result::Result<Response<Self::GetMetadataDeltaStream>, Status> {
        let started = Instant::now();
        match self.delta_plan(request.into_inner()).await {
            Ok(plan) => Ok(Response::new(self.stream(plan, delta_message))),
            Err(e) => self.refuse("GetMetadataDelta", started, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(
        format: BlockFormat,
        from: u64,
        max: usize,
        ranges: &[(u64, u64)],
    ) -> Vec<Vec<(i64, i64)>> {
        let mut shaper = Shaper {
            format,
            starting_offset: from,
            capacity: 1 << 30,
            max,
            emitted_to: 0,
            batch: Vec::new(),
            tuples: 0,
        };
        let mut out = Vec::new();
        for &(o, l) in ranges {
            let mut rest = Some(ByteRange::new(o, l));
            while let Some(range) = rest {
                let (full, left) = shaper.add(range);
                // Never more than one batch held at a time.
                assert!(shaper.batch.len() < max);
                out.extend(full);
                rest = left;
            }
        }
        if !shaper.batch.is_empty() {
            out.push(std::mem::take(&mut shaper.batch));
        }
        out.into_iter()
            .map(|b| {
                b.into_iter()
                    .map(|t| (t.byte_offset, t.size_bytes))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn variable_length_keeps_ranges_and_clips_to_the_starting_offset() {
        let got = shape(
            BlockFormat::Variable,
            5000,
            2,
            &[(0, 4096), (4096, 8192), (20000, 10)],
        );
        assert_eq!(got, vec![vec![(5000, 7288), (20000, 10)]]);
    }

    #[test]
    fn fixed_length_widens_to_blocks_without_repeating_a_shared_block() {
        // [100, 5000) touches blocks 0 and 4096; [6000, 9000) touches 4096 (sent) and 8192.
        let got = shape(
            BlockFormat::Fixed(4096),
            0,
            10,
            &[(100, 4900), (6000, 3000)],
        );
        assert_eq!(got, vec![vec![(0, 4096), (4096, 4096), (8192, 4096)]]);
    }

    #[test]
    fn fixed_length_skips_blocks_ending_before_the_starting_offset() {
        let got = shape(BlockFormat::Fixed(4096), 9000, 10, &[(0, 16384)]);
        // Block 8192 holds offset 9000: it ends after it, so it is sent.
        assert_eq!(got, vec![vec![(8192, 4096), (12288, 4096)]]);
    }

    #[test]
    fn a_huge_run_is_shaped_a_batch_at_a_time() {
        // 1 GiB in 4 KiB blocks from an offset: 262144 - 2 tuples, in batches of 1000.
        let got = shape(BlockFormat::Fixed(4096), 8192, 1000, &[(0, 1 << 30)]);
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), (1 << 18) - 2);
        assert!(got.iter().all(|b| b.len() <= 1000));
        assert_eq!(got[0][0], (8192, 4096));
    }

    #[test]
    fn batches_never_exceed_max_results() {
        let got = shape(BlockFormat::Fixed(4096), 0, 3, &[(0, 7 * 4096)]);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 1]);
        let flat: Vec<i64> = got.concat().into_iter().map(|(o, _)| o).collect();
        assert_eq!(flat, (0..7).map(|i| i * 4096).collect::<Vec<i64>>());
    }

    #[test]
    fn offsets_and_max_results_are_checked() {
        assert!(matches!(offset(-1), Err(Error::OutOfRange(_))));
        assert_eq!(offset(0).ok(), Some(0));
        assert!(matches!(check_offset(11, 10), Err(Error::OutOfRange(_))));
        assert!(check_offset(10, 10).is_ok());
        assert!(matches!(
            max_results(-1),
            Err(Error::InvalidArgument {
                field: "max_results",
                ..
            })
        ));
        assert_eq!(max_results(0).ok(), Some(DEFAULT_MAX_RESULTS));
        assert_eq!(max_results(i32::MAX).ok(), Some(MAX_RESULTS_CAP));
    }
}
