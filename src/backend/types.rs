//! Typed records that cross the backend boundary.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id the backend issued (or a caller passed; backends check the form).
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as the CSI wire carries it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A backend volume id (the CSI `volume_id`).
    VolumeId
);
id_type!(
    /// A backend snapshot id (the CSI `snapshot_id`).
    SnapshotId
);
id_type!(
    /// A backend group snapshot id (the CSI `group_snapshot_id`).
    GroupSnapshotId
);

/// What a backend can do. The CSI capabilities advertised are derived from this, so a
/// capability is advertised exactly when the backend implements it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Volumes can be created and deleted.
    pub create_delete_volume: bool,
    /// Snapshots can be created and deleted.
    pub create_delete_snapshot: bool,
    /// A volume can be created from a snapshot.
    pub restore_snapshot: bool,
    /// A volume can be created as a copy of another volume.
    pub clone_volume: bool,
    /// A volume can be grown.
    pub expand_volume: bool,
    /// Free capacity is known.
    pub get_capacity: bool,
    /// Volume sizes are rounded up to this many bytes (1 GiB for most clouds).
    pub size_granularity_bytes: u64,
    /// The smallest volume the backend makes (0: none); smaller requests get this size, or
    /// OUT_OF_RANGE when their limit is below it (SCP: 8 GB, `VolumeCreateRequest.size`).
    pub min_volume_bytes: u64,
    /// Whether volumes live on one node (topology = that node) rather than in a cloud zone.
    pub node_local: bool,
    /// Several volumes can be snapshotted together, write-order consistent (CSI
    /// GroupController); the group calls of [`crate::backend::Backend`] work.
    pub group_snapshot: bool,
    /// The allocated and changed byte ranges of snapshots can be listed (CSI SnapshotMetadata,
    /// changed block tracking); `allocated_blocks` and `changed_blocks` work.
    pub snapshot_metadata: bool,
    /// Volumes are attached to a node by the controller (CSI ControllerPublishVolume /
    /// ControllerUnpublishVolume); the publish calls of [`crate::backend::Backend`] work.
    pub attach: bool,
    /// Volumes live in an availability zone ([`Volume::zone`]), CreateVolume places them in
    /// the zone the topology requirement asks for, and nodes report their zone.
    pub zones: bool,
}

/// Where a new volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// Restore of a snapshot.
    Snapshot(SnapshotId),
    /// Clone of a volume.
    Volume(VolumeId),
}

/// A request to create a volume. Sizes are already rounded and checked by the caller.
#[derive(Debug, Clone)]
pub struct CreateVolume {
    /// The CSI name (idempotency key).
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Optional content source.
    pub source: Option<VolumeSource>,
    /// StorageClass parameters, minus the ones the driver consumed itself.
    pub parameters: BTreeMap<String, String>,
    /// Availability zone the topology requirement picked (backends with
    /// [`Capabilities::zones`]); a zone named in `parameters` wins.
    pub zone: Option<String>,
}

/// A request to attach a volume to a node (CSI ControllerPublishVolume).
#[derive(Debug, Clone)]
pub struct PublishVolume {
    /// The volume.
    pub volume_id: VolumeId,
    /// The node, as its NodeGetInfo named it (a Nova server id for Cinder).
    pub node_id: String,
    /// Whether the capability is a multi-node access mode (the volume may then be attached
    /// to several nodes, if the cloud allows it).
    pub multi_node: bool,
}

/// What ControllerPublishVolume tells the node: the CSI `publish_context`.
pub type PublishContext = BTreeMap<String, String>;

/// The publish context key holding the serial the disk shows on the node.
pub const SERIAL_KEY: &str = "snapcsi.dev/serial";
/// The publish context key holding the device name the cloud reported (advisory only).
pub const DEVICE_KEY: &str = "snapcsi.dev/device";

/// A volume as the backend knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Backend id.
    pub id: VolumeId,
    /// CSI name it was created with.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Content source it was created from.
    pub source: Option<VolumeSource>,
    /// Whether the volume can be used yet (clouds create asynchronously).
    pub ready: bool,
    /// Availability zone (backends with [`Capabilities::zones`]).
    pub zone: Option<String>,
}

/// A request to create a snapshot.
#[derive(Debug, Clone)]
pub struct CreateSnapshot {
    /// The CSI name (idempotency key).
    pub name: String,
    /// The volume to snapshot.
    pub source_volume_id: VolumeId,
    /// VolumeSnapshotClass parameters, minus the ones the driver consumed itself.
    pub parameters: BTreeMap<String, String>,
}

/// A snapshot as the backend knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Backend id.
    pub id: SnapshotId,
    /// CSI name it was created with.
    pub name: String,
    /// The volume it was cut from.
    pub source_volume_id: VolumeId,
    /// Size in bytes (the minimum size of a volume restored from it).
    pub size_bytes: u64,
    /// When the point-in-time copy was taken.
    pub created_at: SystemTime,
    /// Whether it can be used as a volume source yet.
    pub ready: bool,
    /// The group snapshot this snapshot was cut as a member of; such a snapshot is deleted
    /// only with its group.
    pub group_snapshot_id: Option<GroupSnapshotId>,
}

/// A request to snapshot several volumes together.
#[derive(Debug, Clone)]
pub struct CreateGroupSnapshot {
    /// The CSI name (idempotency key).
    pub name: String,
    /// The volumes to snapshot, each once, in the caller's order.
    pub source_volume_ids: Vec<VolumeId>,
    /// VolumeGroupSnapshotClass parameters, minus the ones the driver consumed itself.
    pub parameters: BTreeMap<String, String>,
}

/// A group snapshot: member snapshots cut at one point in time relative to the writes to
/// their volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// Backend id.
    pub id: GroupSnapshotId,
    /// CSI name it was created with.
    pub name: String,
    /// One snapshot per source volume, in the order the volumes were given at creation.
    pub snapshots: Vec<Snapshot>,
    /// When the group was cut.
    pub created_at: SystemTime,
}

impl GroupSnapshot {
    /// Whether every member can be used as a volume source (CSI: false if any one is not).
    pub fn ready(&self) -> bool {
        self.snapshots.iter().all(|s| s.ready)
    }

    /// The source volumes, in member order.
    pub fn source_volume_ids(&self) -> Vec<VolumeId> {
        self.snapshots
            .iter()
            .map(|s| s.source_volume_id.clone())
            .collect()
    }
}

/// Which snapshots a list call wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Only snapshots of this volume.
    pub source_volume_id: Option<VolumeId>,
}

/// A page request: resume after `cursor`, return at most `max_entries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Backend cursor from the previous page, `None` for the first page.
    pub cursor: Option<String>,
    /// Upper bound on the items returned; always at least 1.
    pub max_entries: usize,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in the backend's stable order.
    pub items: Vec<T>,
    /// Cursor for the next page; `None` when this is the last.
    pub next_cursor: Option<String>,
}
