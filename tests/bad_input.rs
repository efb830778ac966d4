//! Bad input, as a table: every controller and node RPC × {missing, empty, oversized, malformed
//! id, garbage token, unknown capability, conflicting values} -> the spec's code and a message
//! naming the field; never INTERNAL, never a panic (a panic would drop the connection and
//! fail every later row).

mod support;

use snapcsi::proto as csi;
use snapcsi::proto::volume_capability::{AccessMode, AccessType, MountVolume};
use support::Driver;
use tonic::Code;

fn cap(mode: i32, fs: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
    }
}

fn good_cap() -> csi::VolumeCapability {
    cap(1, "")
}

type Case = (&'static str, Result<(), tonic::Status>, Code, &'static str);

fn done<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Status> {
    r.map(drop)
}

#[tokio::test]
async fn every_rpc_rejects_bad_input_with_the_right_code() {
    let driver = Driver::start(&["--mode", "all"]).await;
    let mut c = driver.controller();
    let mut g =
        snapcsi::proto::group_controller_client::GroupControllerClient::new(driver.channel.clone());
    let mut n = driver.node();
    let long = "x".repeat(300);
    let huge = "y".repeat(5000);
    let volume = c
        .create_volume(csi::CreateVolumeRequest {
            name: "table-vol".into(),
            volume_capabilities: vec![good_cap()],
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 16 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("volume")
        .into_inner()
        .volume
        .expect("volume")
        .volume_id;

    let other = c
        .create_volume(csi::CreateVolumeRequest {
            name: "table-other".into(),
            volume_capabilities: vec![good_cap()],
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 16 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("volume")
        .into_inner()
        .volume
        .expect("volume")
        .volume_id;
    // Snapshots for the SnapshotMetadata rows: two of `volume` (a then b) and one of another.
    let snap = |volume: String, name: &'static str| {
        let mut c = c.clone();
        async move {
            c.create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: volume,
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("snapshot")
            .into_inner()
            .snapshot
            .expect("snapshot")
            .snapshot_id
        }
    };
    let snap_a = snap(volume.clone(), "table-snap-a").await;
    let snap_b = snap(volume.clone(), "table-snap-b").await;
    let snap_other = snap(other, "table-snap-other").await;
    let mut m = snapcsi::proto::snapshot_metadata_client::SnapshotMetadataClient::new(
        driver.channel.clone(),
    );
    let unknown_snapshot = "snap-0190a000-0000-7000-8000-000000000000".to_owned();
    let allocated = |snapshot_id: &str, starting_offset: i64, max_results: i32| {
        csi::GetMetadataAllocatedRequest {
            snapshot_id: snapshot_id.into(),
            starting_offset,
            max_results,
            ..Default::default()
        }
    };
    let delta = |base: &str, target: &str, starting_offset: i64, max_results: i32| {
        csi::GetMetadataDeltaRequest {
            base_snapshot_id: base.into(),
            target_snapshot_id: target.into(),
            starting_offset,
            max_results,
            ..Default::default()
        }
    };

    let cases: Vec<Case> =
        vec![
        // GetMetadataAllocated (CSI "GetMetadataAllocated Errors")
        (
            "GetMetadataAllocated missing snapshot_id",
            done(m.get_metadata_allocated(allocated("", 0, 0)).await),
            Code::InvalidArgument,
            "snapshot_id",
        ),
        (
            "GetMetadataAllocated oversized snapshot_id",
            done(m.get_metadata_allocated(allocated(&huge, 0, 0)).await),
            Code::InvalidArgument,
            "snapshot_id",
        ),
        (
            "GetMetadataAllocated malformed snapshot_id",
            done(m.get_metadata_allocated(allocated("../etc/passwd", 0, 0)).await),
            Code::NotFound,
            "snapshot_id",
        ),
        (
            "GetMetadataAllocated unknown snapshot",
            done(m.get_metadata_allocated(allocated(&unknown_snapshot, 0, 0)).await),
            Code::NotFound,
            "snapshot_id",
        ),
        (
            "GetMetadataAllocated a volume id as snapshot_id",
            done(m.get_metadata_allocated(allocated(&volume, 0, 0)).await),
            Code::NotFound,
            "snapshot_id",
        ),
        (
            "GetMetadataAllocated negative starting_offset",
            done(m.get_metadata_allocated(allocated(&snap_a, -1, 0)).await),
            Code::OutOfRange,
            "starting_offset",
        ),
        (
            "GetMetadataAllocated starting_offset past the end",
            done(m.get_metadata_allocated(allocated(&snap_a, (16 << 20) + 1, 0)).await),
            Code::OutOfRange,
            "starting_offset",
        ),
        (
            "GetMetadataAllocated negative max_results",
            done(m.get_metadata_allocated(allocated(&snap_a, 0, -5)).await),
            Code::InvalidArgument,
            "max_results",
        ),
        // GetMetadataDelta (CSI "GetMetadataDelta Errors")
        (
            "GetMetadataDelta missing base_snapshot_id",
            done(m.get_metadata_delta(delta("", &snap_b, 0, 0)).await),
            Code::InvalidArgument,
            "base_snapshot_id",
        ),
        (
            "GetMetadataDelta missing target_snapshot_id",
            done(m.get_metadata_delta(delta(&snap_a, "", 0, 0)).await),
            Code::InvalidArgument,
            "target_snapshot_id",
        ),
        (
            "GetMetadataDelta oversized target_snapshot_id",
            done(m.get_metadata_delta(delta(&snap_a, &huge, 0, 0)).await),
            Code::InvalidArgument,
            "target_snapshot_id",
        ),
        (
            "GetMetadataDelta unknown base",
            done(m.get_metadata_delta(delta(&unknown_snapshot, &snap_b, 0, 0)).await),
            Code::NotFound,
            "base_snapshot_id",
        ),
        (
            "GetMetadataDelta unknown target",
            done(m.get_metadata_delta(delta(&snap_a, &unknown_snapshot, 0, 0)).await),
            Code::NotFound,
            "target_snapshot_id",
        ),
        (
            "GetMetadataDelta base and target the same snapshot",
            done(m.get_metadata_delta(delta(&snap_a, &snap_a, 0, 0)).await),
            Code::InvalidArgument,
            "target_snapshot_id",
        ),
        (
            "GetMetadataDelta snapshots of different volumes",
            done(m.get_metadata_delta(delta(&snap_a, &snap_other, 0, 0)).await),
            Code::InvalidArgument,
            "target_snapshot_id",
        ),
        (
            "GetMetadataDelta base newer than target",
            done(m.get_metadata_delta(delta(&snap_b, &snap_a, 0, 0)).await),
            Code::InvalidArgument,
            "base_snapshot_id",
        ),
        (
            "GetMetadataDelta negative starting_offset",
            done(m.get_metadata_delta(delta(&snap_a, &snap_b, -4096, 0)).await),
            Code::OutOfRange,
            "starting_offset",
        ),
        (
            "GetMetadataDelta starting_offset past the end",
            done(m.get_metadata_delta(delta(&snap_a, &snap_b, i64::MAX, 0)).await),
            Code::OutOfRange,
            "starting_offset",
        ),
        (
            "GetMetadataDelta negative max_results",
            done(m.get_metadata_delta(delta(&snap_a, &snap_b, 0, i32::MIN)).await),
            Code::InvalidArgument,
            "max_results",
        ),
        // CreateVolume
        (
            "CreateVolume missing name",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    volume_capabilities: vec![good_cap()],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "name",
        ),
        (
            "CreateVolume oversized name",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: long.clone(),
                    volume_capabilities: vec![good_cap()],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "name",
        ),
        (
            "CreateVolume control chars in name",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "a\u{0}b".into(),
                    volume_capabilities: vec![good_cap()],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "name",
        ),
        (
            "CreateVolume no capabilities",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_capabilities",
        ),
        (
            "CreateVolume unknown access mode",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![cap(77, "")],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "access_mode",
        ),
        (
            "CreateVolume UNKNOWN access mode",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![cap(0, "")],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "access_mode",
        ),
        (
            "CreateVolume no access type",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![csi::VolumeCapability {
                        access_mode: Some(AccessMode { mode: 1 }),
                        access_type: None,
                    }],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "access_type",
        ),
        (
            "CreateVolume unknown fs",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![cap(1, "zfs")],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "fs_type",
        ),
        (
            "CreateVolume multi-node",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![cap(5, "")],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_capabilities",
        ),
        (
            "CreateVolume required > limit",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![good_cap()],
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: 10 << 20,
                        limit_bytes: 5 << 20,
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::OutOfRange,
            "capacity_range",
        ),
        (
            "CreateVolume negative limit",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![good_cap()],
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: 0,
                        limit_bytes: -1,
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "limit_bytes",
        ),
        (
            "CreateVolume xfs below its minimum",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v-xfs".into(),
                    volume_capabilities: vec![cap(1, "xfs")],
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: 16 << 20,
                        limit_bytes: 16 << 20,
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::OutOfRange,
            "limit_bytes",
        ),
        (
            "CreateVolume empty content source",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![good_cap()],
                    volume_content_source: Some(csi::VolumeContentSource { r#type: None }),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_content_source",
        ),
        (
            "CreateVolume empty source snapshot id",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![good_cap()],
                    volume_content_source: Some(csi::VolumeContentSource {
                        r#type: Some(csi::volume_content_source::Type::Snapshot(
                            csi::volume_content_source::SnapshotSource {
                                snapshot_id: String::new(),
                            },
                        )),
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "snapshot_id",
        ),
        (
            "CreateVolume malformed source snapshot",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v".into(),
                    volume_capabilities: vec![good_cap()],
                    volume_content_source: Some(csi::VolumeContentSource {
                        r#type: Some(csi::volume_content_source::Type::Snapshot(
                            csi::volume_content_source::SnapshotSource {
                                snapshot_id: "../../etc/passwd".into(),
                            },
                        )),
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "../../etc/passwd",
        ),
        (
            "CreateVolume requisite topology elsewhere",
            done(
                c.create_volume(csi::CreateVolumeRequest {
                    name: "v-topo".into(),
                    volume_capabilities: vec![good_cap()],
                    accessibility_requirements: Some(csi::TopologyRequirement {
                        requisite: vec![csi::Topology {
                            segments: [(
                                "topology.snapcsi.dev/node".to_owned(),
                                "other-node".to_owned(),
                            )]
                            .into(),
                        }],
                        preferred: vec![],
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::ResourceExhausted,
            "accessibility_requirements",
        ),
        // DeleteVolume, ControllerGetVolume, Expand, Validate
        (
            "DeleteVolume missing id",
            done(c.delete_volume(csi::DeleteVolumeRequest::default()).await),
            Code::InvalidArgument,
            "volume_id",
        ),
        (
            "DeleteVolume oversized id",
            done(
                c.delete_volume(csi::DeleteVolumeRequest {
                    volume_id: huge.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_id",
        ),
        (
            "ControllerGetVolume malformed id",
            done(
                c.controller_get_volume(csi::ControllerGetVolumeRequest {
                    volume_id: "vol-not-a-uuid".into(),
                })
                .await,
            ),
            Code::NotFound,
            "vol-not-a-uuid",
        ),
        (
            "ControllerExpandVolume no range",
            done(
                c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "capacity_range",
        ),
        (
            "ControllerExpandVolume missing volume",
            done(
                c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
                    volume_id: "gone".into(),
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: 1 << 30,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "gone",
        ),
        (
            "ControllerExpandVolume beyond limit",
            done(
                c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
                    volume_id: volume.clone(),
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: (32 << 20) + 1,
                        limit_bytes: 32 << 20,
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::OutOfRange,
            "limit_bytes",
        ),
        (
            "ValidateVolumeCapabilities no caps",
            done(
                c.validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_capabilities",
        ),
        (
            "ValidateVolumeCapabilities missing volume",
            done(
                c.validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
                    volume_id: "gone".into(),
                    volume_capabilities: vec![good_cap()],
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "gone",
        ),
        // Snapshots
        (
            "CreateSnapshot missing name",
            done(
                c.create_snapshot(csi::CreateSnapshotRequest {
                    source_volume_id: volume.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "name",
        ),
        (
            "CreateSnapshot missing source",
            done(
                c.create_snapshot(csi::CreateSnapshotRequest {
                    name: "s".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "source_volume_id",
        ),
        (
            "CreateSnapshot oversized name",
            done(
                c.create_snapshot(csi::CreateSnapshotRequest {
                    name: long.clone(),
                    source_volume_id: volume.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "name",
        ),
        (
            "CreateSnapshot malformed source",
            done(
                c.create_snapshot(csi::CreateSnapshotRequest {
                    name: "s".into(),
                    source_volume_id: "vol-%%%".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "vol-%%%",
        ),
        (
            "DeleteSnapshot missing id",
            done(
                c.delete_snapshot(csi::DeleteSnapshotRequest::default())
                    .await,
            ),
            Code::InvalidArgument,
            "snapshot_id",
        ),
        (
            "GetSnapshot missing id",
            done(c.get_snapshot(csi::GetSnapshotRequest::default()).await),
            Code::InvalidArgument,
            "snapshot_id",
        ),
        (
            "GetSnapshot malformed id",
            done(
                c.get_snapshot(csi::GetSnapshotRequest {
                    snapshot_id: "snap-zzz".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "snap-zzz",
        ),
        (
            "ListSnapshots garbage token",
            done(
                c.list_snapshots(csi::ListSnapshotsRequest {
                    starting_token: "\u{1F4A9}garbage".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::Aborted,
            "starting_token",
        ),
        (
            "ListSnapshots token of a volume list",
            done(
                c.list_snapshots(csi::ListSnapshotsRequest {
                    starting_token:
                        "c25hcGNzaTE6dm9sLTAxOTkxYWFhLTAwMDAtNzAwMC04MDAwLTAwMDAwMDAwMDAwMA".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::Aborted,
            "starting_token",
        ),
        (
            "ListSnapshots negative max",
            done(
                c.list_snapshots(csi::ListSnapshotsRequest {
                    max_entries: -3,
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "max_entries",
        ),
        (
            "ListVolumes garbage token",
            done(
                c.list_volumes(csi::ListVolumesRequest {
                    starting_token: "nope".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::Aborted,
            "starting_token",
        ),
        (
            "ListVolumes negative max",
            done(
                c.list_volumes(csi::ListVolumesRequest {
                    max_entries: -1,
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "max_entries",
        ),
        (
            "GetCapacity unknown capability",
            done(
                c.get_capacity(csi::GetCapacityRequest {
                    volume_capabilities: vec![cap(99, "")],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "access_mode",
        ),
        (
            "ControllerPublishVolume (not offered)",
            done(
                c.controller_publish_volume(csi::ControllerPublishVolumeRequest::default())
                    .await,
            ),
            Code::Unimplemented,
            "not supported by the local backend",
        ),
        // GroupController
        (
            "CreateVolumeGroupSnapshot missing name",
            done(
                g.create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                    source_volume_ids: vec![volume.clone()],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "name",
        ),
        (
            "CreateVolumeGroupSnapshot oversized name",
            done(
                g.create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                    name: long.clone(),
                    source_volume_ids: vec![volume.clone()],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "name",
        ),
        (
            "CreateVolumeGroupSnapshot no source volumes",
            done(
                g.create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                    name: "table-group".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "source_volume_ids",
        ),
        (
            "CreateVolumeGroupSnapshot volume listed twice",
            done(
                g.create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                    name: "table-group".into(),
                    source_volume_ids: vec![volume.clone(), volume.clone()],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "source_volume_ids",
        ),
        (
            "CreateVolumeGroupSnapshot oversized volume id",
            done(
                g.create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                    name: "table-group".into(),
                    source_volume_ids: vec![huge.clone()],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "source_volume_ids",
        ),
        (
            "CreateVolumeGroupSnapshot unknown volume",
            done(
                g.create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                    name: "table-group".into(),
                    source_volume_ids: vec!["vol-unknown".into()],
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "vol-unknown",
        ),
        (
            "GetVolumeGroupSnapshot missing id",
            done(
                g.get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest::default())
                    .await,
            ),
            Code::InvalidArgument,
            "group_snapshot_id",
        ),
        (
            "GetVolumeGroupSnapshot unknown id",
            done(
                g.get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest {
                    group_snapshot_id: "group-unknown".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "group-unknown",
        ),
        (
            "GetVolumeGroupSnapshot empty member id",
            done(
                g.get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest {
                    group_snapshot_id: "group-unknown".into(),
                    snapshot_ids: vec![String::new()],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "snapshot_ids",
        ),
        (
            "DeleteVolumeGroupSnapshot missing id",
            done(
                g.delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest::default())
                    .await,
            ),
            Code::InvalidArgument,
            "group_snapshot_id",
        ),
        (
            "DeleteVolumeGroupSnapshot oversized id",
            done(
                g.delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest {
                    group_snapshot_id: huge.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "group_snapshot_id",
        ),
        // Node
        (
            "NodeStageVolume missing id",
            done(
                n.node_stage_volume(csi::NodeStageVolumeRequest {
                    staging_target_path: "/tmp/x".into(),
                    volume_capability: Some(good_cap()),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_id",
        ),
        (
            "NodeStageVolume missing path",
            done(
                n.node_stage_volume(csi::NodeStageVolumeRequest {
                    volume_id: volume.clone(),
                    volume_capability: Some(good_cap()),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "staging_target_path",
        ),
        (
            "NodeStageVolume missing capability",
            done(
                n.node_stage_volume(csi::NodeStageVolumeRequest {
                    volume_id: volume.clone(),
                    staging_target_path: "/tmp/x".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_capability",
        ),
        (
            "NodeStageVolume NUL in path",
            done(
                n.node_stage_volume(csi::NodeStageVolumeRequest {
                    volume_id: volume.clone(),
                    staging_target_path: "/tmp/a\u{0}b".into(),
                    volume_capability: Some(good_cap()),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "staging_target_path",
        ),
        (
            "NodeStageVolume unknown volume",
            done(
                n.node_stage_volume(csi::NodeStageVolumeRequest {
                    volume_id: "vol-gone".into(),
                    staging_target_path: "/tmp/x".into(),
                    volume_capability: Some(good_cap()),
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "vol-gone",
        ),
        (
            "NodePublishVolume missing target",
            done(
                n.node_publish_volume(csi::NodePublishVolumeRequest {
                    volume_id: volume.clone(),
                    staging_target_path: "/tmp/x".into(),
                    volume_capability: Some(good_cap()),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "target_path",
        ),
        (
            "NodePublishVolume oversized path",
            done(
                n.node_publish_volume(csi::NodePublishVolumeRequest {
                    volume_id: volume.clone(),
                    staging_target_path: "/tmp/x".into(),
                    target_path: huge.clone(),
                    volume_capability: Some(good_cap()),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "target_path",
        ),
        (
            "NodePublishVolume not staged",
            done(
                n.node_publish_volume(csi::NodePublishVolumeRequest {
                    volume_id: volume.clone(),
                    staging_target_path: "/nonexistent/stage".into(),
                    target_path: "/nonexistent/target".into(),
                    volume_capability: Some(good_cap()),
                    ..Default::default()
                })
                .await,
            ),
            Code::FailedPrecondition,
            "staging_target_path",
        ),
        (
            "NodeUnpublishVolume missing id",
            done(
                n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                    target_path: "/tmp/x".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_id",
        ),
        (
            "NodeUnstageVolume missing path",
            done(
                n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "staging_target_path",
        ),
        (
            "NodeGetVolumeStats missing path",
            done(
                n.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_path",
        ),
        (
            "NodeGetVolumeStats path missing",
            done(
                n.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                    volume_id: volume.clone(),
                    volume_path: "/nonexistent/path".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "volume_path",
        ),
        (
            "NodeExpandVolume missing path",
            done(
                n.node_expand_volume(csi::NodeExpandVolumeRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "volume_path",
        ),
        (
            "NodeExpandVolume unknown capability",
            done(
                n.node_expand_volume(csi::NodeExpandVolumeRequest {
                    volume_id: volume.clone(),
                    volume_path: "/tmp".into(),
                    volume_capability: Some(cap(42, "")),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "access_mode",
        ),
    ];
    let mut failures = Vec::new();
    for (name, result, code, field) in &cases {
        match result {
            Ok(()) => failures.push(format!("{name}: succeeded, expected {code:?}")),
            Err(status) => {
                if status.code() == Code::Internal {
                    failures.push(format!(
                        "{name}: INTERNAL for a caller's mistake: {status:?}"
                    ));
                } else if status.code() != *code || !status.message().contains(field) {
                    failures.push(format!(
                        "{name}: got {:?} {:?}, expected {code:?} naming {field:?}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!(
        "bad input: {} rows, every one answered with the expected code and field",
        cases.len()
    );
}
