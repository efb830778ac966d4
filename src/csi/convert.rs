//! Domain records <-> CSI messages.

use crate::backend::{GroupSnapshot, Snapshot, Volume, VolumeSource};
use crate::error::{Error, Result};
use crate::proto;
use crate::proto::volume_content_source;
use std::collections::HashMap;
use std::time::UNIX_EPOCH;

/// The topology key of node-local volumes: the node they live on.
pub const TOPOLOGY_KEY: &str = "topology.snapcsi.dev/node";
/// The topology key of cloud volumes: the availability zone they (and the nodes that can
/// attach them) are in.
pub const ZONE_KEY: &str = "topology.snapcsi.dev/zone";

/// The topology of a volume or node in availability zone `zone`.
pub fn zone_topology(zone: &str) -> proto::Topology {
    proto::Topology {
        segments: HashMap::from([(ZONE_KEY.to_owned(), zone.to_owned())]),
    }
}

/// A CSI content source from a domain source.
pub fn content_source(source: &VolumeSource) -> proto::VolumeContentSource {
    let kind = match source {
        VolumeSource::Snapshot(id) => {
            volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
                snapshot_id: id.to_string(),
            })
        }
        VolumeSource::Volume(id) => {
            volume_content_source::Type::Volume(volume_content_source::VolumeSource {
                volume_id: id.to_string(),
            })
        }
    };
    proto::VolumeContentSource { r#type: Some(kind) }
}

/// A domain source from a CSI content source; an empty source or id is invalid.
pub fn volume_source(source: Option<&proto::VolumeContentSource>) -> Result<Option<VolumeSource>> {
    use crate::backend::{SnapshotId, VolumeId};
    let Some(source) = source else {
        return Ok(None);
    };
    match &source.r#type {
        None => Err(Error::invalid(
            "volume_content_source",
            "neither snapshot nor volume is set",
        )),
        Some(volume_content_source::Type::Snapshot(s)) => {
            let id =
                super::validate::id("volume_content_source.snapshot.snapshot_id", &s.snapshot_id)?;
            Ok(Some(VolumeSource::Snapshot(SnapshotId::new(id))))
        }
        Some(volume_content_source::Type::Volume(v)) => {
            let id = super::validate::id("volume_content_source.volume.volume_id", &v.volume_id)?;
            Ok(Some(VolumeSource::Volume(VolumeId::new(id))))
        }
    }
}

/// Byte counts travel as int64 on the wire.
pub fn bytes(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The topology a node-local volume is accessible from.
pub fn node_topology(node_id: &str) -> proto::Topology {
    proto::Topology {
        segments: HashMap::from([(TOPOLOGY_KEY.to_owned(), node_id.to_owned())]),
    }
}

/// A CSI volume from a domain volume.
pub fn volume(volume: &Volume, topology: Option<&proto::Topology>) -> proto::Volume {
    proto::Volume {
        capacity_bytes: bytes(volume.size_bytes),
        volume_id: volume.id.to_string(),
        volume_context: HashMap::new(),
        content_source: volume.source.as_ref().map(content_source),
        accessible_topology: topology.into_iter().cloned().collect(),
    }
}

/// A CSI snapshot from a domain snapshot.
pub fn snapshot(snapshot: &Snapshot) -> proto::Snapshot {
    proto::Snapshot {
        size_bytes: bytes(snapshot.size_bytes),
        snapshot_id: snapshot.id.to_string(),
        source_volume_id: snapshot.source_volume_id.to_string(),
        creation_time: Some(timestamp(snapshot.created_at)),
        ready_to_use: snapshot.ready,
        group_snapshot_id: snapshot
            .group_snapshot_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

/// A CSI group snapshot from a domain group snapshot.
pub fn group_snapshot(group: &GroupSnapshot) -> proto::VolumeGroupSnapshot {
    proto::VolumeGroupSnapshot {
        group_snapshot_id: group.id.to_string(),
        snapshots: group.snapshots.iter().map(snapshot).collect(),
        creation_time: Some(timestamp(group.created_at)),
        ready_to_use: group.ready(),
    }
}

fn timestamp(time: std::time::SystemTime) -> prost_types::Timestamp {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}
