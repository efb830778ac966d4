//! The storage backend boundary.
//!
//! Every cloud (and the embedded local store) implements [`Backend`]. The trait is small on
//! purpose: it speaks in typed records and plain cursors, and knows nothing about gRPC. The
//! rules every backend shares — idempotency by name, the per-name in-flight guard, opaque page
//! tokens, request validation — live above it, in `crate::ops` and `crate::csi`, once.

pub mod cinder;
pub mod conformance;
pub mod deltacloud;
pub mod local;
pub mod memory;
pub mod metadata;
pub mod names;
pub mod registry;
pub mod scp;
pub mod softlayer;
pub mod types;

pub use types::{
    Capabilities, CreateGroupSnapshot, CreateSnapshot, CreateVolume, DEVICE_KEY, GroupSnapshot,
    GroupSnapshotId, Page, PageRequest, PublishContext, PublishVolume, SERIAL_KEY, Snapshot,
    SnapshotFilter, SnapshotId, Volume, VolumeId, VolumeSource,
};

use crate::secret::Secrets;
use async_trait::async_trait;
use metadata::BlockRanges;
use std::fmt;
use std::sync::Arc;

/// What went wrong in a backend, sorted into the kinds every backend shares.
///
/// `crate::error` turns each kind into exactly one gRPC code; backends only sort their cloud's
/// answers into kinds and keep the cloud's own words in `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// The shared kind, which decides the gRPC code.
    pub kind: ErrorKind,
    /// Whether repeating the same idempotent call may succeed.
    pub retryable: bool,
    /// A human message; never holds a secret.
    pub message: String,
}

/// The kinds of backend failure. Adding one forces `crate::error` to decide its gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// An object with that name exists and is not compatible with the request.
    AlreadyExists,
    /// The request cannot be valid for this backend (bad parameter, unsupported mode).
    InvalidArgument,
    /// The requested size cannot be provided by this backend at all.
    OutOfRange,
    /// Capacity or quota is used up; may succeed later.
    QuotaExceeded,
    /// The object is in a state that forbids the call (in use, has dependents, error state).
    FailedPrecondition,
    /// Another operation on the same object is running.
    Conflict,
    /// A page cursor the backend no longer (or never did) recognise.
    InvalidCursor,
    /// The backend could not be reached or answered with a transient error; whether it acted
    /// on the request is unknown.
    Unavailable,
    /// The cloud refused the request before acting on it (HTTP 429 rate limit, 503 service
    /// unavailable): nothing was done, the same call may succeed later. Unlike `Unavailable`,
    /// a create refused this way leaves no uncertainty (see `ops::intents`).
    Throttled,
    /// Credentials were refused.
    Unauthorized,
    /// Credentials were accepted but may not do this.
    PermissionDenied,
    /// The operation is not supported by this backend.
    Unsupported,
    /// Anything else: a bug or an answer we cannot interpret.
    Internal,
}

impl BackendError {
    /// An error of `kind` with the default retry hint for that kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let retryable = matches!(
            kind,
            ErrorKind::Unavailable
                | ErrorKind::Throttled
                | ErrorKind::Conflict
                | ErrorKind::QuotaExceeded
        );
        Self {
            kind,
            retryable,
            message: message.into(),
        }
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The answer of a group call on a backend without [`Capabilities::group_snapshot`].
    pub fn no_groups(kind: &str) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            format!("group snapshots are not supported by the {kind} backend"),
        )
    }

    /// The refusal of a stand-alone delete of a group member (CSI DeleteSnapshot: "Snapshot
    /// is part of a group" -> INVALID_ARGUMENT; the member goes with its group only).
    pub fn group_member(snapshot: &SnapshotId, group: &GroupSnapshotId) -> Self {
        Self::new(
            ErrorKind::InvalidArgument,
            format!(
                "snapshot_id: snapshot {snapshot} is a member of group snapshot {group}; \
                 delete the group (DeleteVolumeGroupSnapshot) instead"
            ),
        )
    }

    /// The answer of a snapshot metadata call on a backend without
    /// [`Capabilities::snapshot_metadata`]. CSI GetMetadataDelta: "Changed block tracking is not
    /// enabled" -> FAILED_PRECONDITION ("the caller should perform a full backup instead").
    pub fn no_metadata(kind: &str) -> Self {
        Self::new(
            ErrorKind::FailedPrecondition,
            format!(
                "snapshot metadata (changed block tracking) is not available for snapshots of \
                 the {kind} backend: take a full backup instead"
            ),
        )
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for BackendError {}

/// The name a group member is stored under: unique per group and volume, so the member can
/// be found by name like any snapshot.
pub fn group_member_name(group_name: &str, volume: &VolumeId) -> String {
    format!("{group_name}/{volume}")
}

/// Result of a backend call.
pub type BackendResult<T> = Result<T, BackendError>;

/// A storage backend: where volumes and snapshots live.
///
/// Contract shared by every implementation (checked by [`conformance`]):
/// - `get_*` and `find_*_by_name` answer `Ok(None)` for a missing object, never an error;
/// - `delete_*` of a missing object is `Ok(())`;
/// - `create_*` may assume the caller already looked the name up and holds the name's
///   in-flight guard; it must store the name with the object (as the cloud's name or a tag) so
///   that a later `find_*_by_name` finds it even after a restart;
/// - list calls return at most `page.max_entries` items and a cursor that resumes right after
///   the last item returned, in a stable order;
/// - with [`Capabilities::group_snapshot`], a group's members are committed all or none, carry
///   the group id, are listed like any snapshot, and `delete_snapshot` of a member is refused
///   with [`ErrorKind::InvalidArgument`] (CSI: a member is deleted with its group only).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Short backend kind, e.g. `local`; used in logs and metrics.
    fn kind(&self) -> &'static str;

    /// What this backend can do; the CSI capabilities advertised are derived from it.
    fn capabilities(&self) -> Capabilities;

    /// The backend acting with the credentials a CSI request carries in its `secrets`
    /// (multi-tenant clusters: each namespace's snapshot class points at its own secret).
    /// `Ok(None)` means "act as configured"; the default ignores secrets.
    fn with_secrets(&self, _secrets: &Secrets) -> BackendResult<Option<Arc<dyn Backend>>> {
        Ok(None)
    }

    /// Whether a create can still complete after this process died because a remote service
    /// carries it out; `ops` then journals creates (see `ops::intents`). Backends whose
    /// objects live in this process's own store (`node_local`) say no.
    fn creates_outlive_process(&self) -> bool {
        !self.capabilities().node_local
    }

    /// The cloud API version this backend speaks (negotiated or configured), for operators.
    /// A negotiated one may be known only after the first call (`health`).
    fn api_version(&self) -> Option<String> {
        None
    }

    /// A cheap check that the backend can serve requests (used by CSI Probe).
    async fn health(&self) -> BackendResult<()>;

    /// Free capacity in bytes, if the backend knows it.
    async fn available_capacity(&self) -> BackendResult<Option<u64>>;

    /// Creates a volume, empty or from a source.
    async fn create_volume(&self, request: &CreateVolume) -> BackendResult<Volume>;

    /// The volume with this id, if any.
    async fn get_volume(&self, id: &VolumeId) -> BackendResult<Option<Volume>>;

    /// The volume created with this CSI name, if any.
    async fn find_volume_by_name(&self, name: &str) -> BackendResult<Option<Volume>>;

    /// Deletes a volume; missing is success.
    async fn delete_volume(&self, id: &VolumeId) -> BackendResult<()>;

    /// Grows a volume to at least `new_size_bytes`; returns the new size.
    async fn expand_volume(&self, id: &VolumeId, new_size_bytes: u64) -> BackendResult<u64>;

    /// One page of volumes.
    async fn list_volumes(&self, page: &PageRequest) -> BackendResult<Page<Volume>>;

    /// Creates a snapshot of a volume.
    async fn create_snapshot(&self, request: &CreateSnapshot) -> BackendResult<Snapshot>;

    /// The snapshot with this id, if any.
    async fn get_snapshot(&self, id: &SnapshotId) -> BackendResult<Option<Snapshot>>;

    /// The snapshot created with this CSI name, if any.
    async fn find_snapshot_by_name(&self, name: &str) -> BackendResult<Option<Snapshot>>;

    /// Deletes a snapshot; missing is success.
    async fn delete_snapshot(&self, id: &SnapshotId) -> BackendResult<()>;

    /// One page of snapshots matching `filter`.
    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: &PageRequest,
    ) -> BackendResult<Page<Snapshot>>;

    /// Snapshots `request.source_volume_ids` together, write-order consistent: every member
    /// is cut at one instant relative to the writes to all the volumes. All or nothing: when
    /// one member fails, those already cut are removed before the error is returned.
    /// The caller has checked the name is free and holds its in-flight guard.
    async fn create_group_snapshot(
        &self,
        _request: &CreateGroupSnapshot,
    ) -> BackendResult<GroupSnapshot> {
        Err(BackendError::no_groups(self.kind()))
    }

    /// The group snapshot with this id, if any.
    async fn get_group_snapshot(
        &self,
        _id: &GroupSnapshotId,
    ) -> BackendResult<Option<GroupSnapshot>> {
        Err(BackendError::no_groups(self.kind()))
    }

    /// The group snapshot created with this CSI name, if any.
    async fn find_group_snapshot_by_name(
        &self,
        _name: &str,
    ) -> BackendResult<Option<GroupSnapshot>> {
        Err(BackendError::no_groups(self.kind()))
    }

    /// Deletes a group snapshot and all its members; missing is success.
    async fn delete_group_snapshot(&self, _id: &GroupSnapshotId) -> BackendResult<()> {
        Err(BackendError::no_groups(self.kind()))
    }

    /// The allocated ranges of a snapshot's image, from byte `from` on
    /// ([`Capabilities::snapshot_metadata`]). A missing snapshot is [`ErrorKind::NotFound`].
    async fn allocated_blocks(
        &self,
        _snapshot: &SnapshotId,
        _from: u64,
    ) -> BackendResult<Box<dyn BlockRanges>> {
        Err(BackendError::no_metadata(self.kind()))
    }

    /// The ranges in which `target` differs from `base`, from byte `from` on. The caller has
    /// checked that both are snapshots of one volume and `base` is the older; a missing one is
    /// [`ErrorKind::NotFound`]. Ranges past the end of a smaller `base` that hold data in
    /// `target` (the volume grew) are changed.
    async fn changed_blocks(
        &self,
        _base: &SnapshotId,
        _target: &SnapshotId,
        _from: u64,
    ) -> BackendResult<Box<dyn BlockRanges>> {
        Err(BackendError::no_metadata(self.kind()))
    }

    /// Attaches a volume to a node and waits (bounded) until the cloud says it is attached
    /// there; answers what the node needs to find the disk. Idempotent: a volume already
    /// attached to that node answers the same context. With [`Capabilities::attach`].
    async fn publish_volume(&self, _request: &PublishVolume) -> BackendResult<PublishContext> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            format!(
                "the {} backend does not attach volumes to nodes",
                self.kind()
            ),
        ))
    }

    /// Detaches a volume from a node and waits (bounded) until it is gone there. A volume or
    /// node that does not exist, or a volume not attached there, is success.
    async fn unpublish_volume(&self, _volume: &VolumeId, _node_id: &str) -> BackendResult<()> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            format!(
                "the {} backend does not attach volumes to nodes",
                self.kind()
            ),
        ))
    }

    /// The availability zone of a node, as the cloud knows it (`None`: unknown to this
    /// backend). With [`Capabilities::zones`].
    async fn node_zone(&self, _node_id: &str) -> BackendResult<Option<String>> {
        Ok(None)
    }
}
