//! gRPC end-to-end tests over a real unix socket with the generated clients.
//!
//! The controller tests run on the in-memory backend and on the local backend (no root
//! needed: the controller never mounts); the node tests need root for loop devices and mounts.

mod support;

use snapcsi::proto as csi;
use snapcsi::proto::controller_service_capability::rpc::Type as Rpc;
use snapcsi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use std::collections::HashSet;
use support::Driver;
use tonic::Code;

const MIB: i64 = 1 << 20;

fn mount_cap(fs: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode: 1 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
    }
}

fn block_cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode: 1 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

fn create_volume_request(name: &str, size: i64) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap("")],
        ..Default::default()
    }
}

fn snapshot_request(name: &str, volume: &str) -> csi::CreateSnapshotRequest {
    csi::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: volume.into(),
        ..Default::default()
    }
}

fn expect_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    field: &str,
) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(field),
        "message {:?} must name {field:?}",
        status.message()
    );
}

async fn identity_and_capabilities(driver: &Driver) {
    let info = driver
        .identity()
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.name, "snapcsi.dev");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let probe = driver
        .identity()
        .probe(csi::ProbeRequest {})
        .await
        .expect("probe")
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    let caps = driver
        .controller()
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .expect("caps")
        .into_inner();
    let advertised: HashSet<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type.as_ref().map(|t| match t {
                csi::controller_service_capability::Type::Rpc(rpc) => rpc.r#type,
            })
        })
        .collect();
    for rpc in [
        Rpc::CreateDeleteVolume,
        Rpc::CreateDeleteSnapshot,
        Rpc::ListSnapshots,
        Rpc::GetSnapshot,
        Rpc::CloneVolume,
        Rpc::ExpandVolume,
        Rpc::ListVolumes,
        Rpc::GetVolume,
    ] {
        assert!(advertised.contains(&(rpc as i32)), "{rpc:?} not advertised");
    }
    assert!(
        !advertised.contains(&(Rpc::PublishUnpublishVolume as i32)),
        "publish is not implemented and must not be advertised"
    );
}

/// The snapshot story a sidecar drives: create, repeat, conflict, list, get, restore, delete.
async fn snapshot_story(driver: &Driver) {
    let mut controller = driver.controller();
    let volume = controller
        .create_volume(create_volume_request("pvc-story", 32 * MIB))
        .await
        .expect("create volume")
        .into_inner()
        .volume
        .expect("volume");
    let other = controller
        .create_volume(create_volume_request("pvc-story-other", 32 * MIB))
        .await
        .expect("create other")
        .into_inner()
        .volume
        .expect("volume");

    let snapshot = controller
        .create_snapshot(snapshot_request("snap-story", &volume.volume_id))
        .await
        .expect("create snapshot")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert!(snapshot.ready_to_use);
    assert_eq!(snapshot.source_volume_id, volume.volume_id);
    assert!(snapshot.size_bytes >= 32 * MIB);
    assert!(snapshot.creation_time.is_some());

    let repeat = controller
        .create_snapshot(snapshot_request("snap-story", &volume.volume_id))
        .await
        .expect("repeat")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert_eq!(
        repeat.snapshot_id, snapshot.snapshot_id,
        "repeat made a duplicate"
    );
    expect_code(
        controller
            .create_snapshot(snapshot_request("snap-story", &other.volume_id))
            .await,
        Code::AlreadyExists,
        "name",
    );
    expect_code(
        controller
            .create_snapshot(snapshot_request("snap-missing-src", "no-such-volume"))
            .await,
        Code::NotFound,
        "no-such-volume",
    );

    // Two more snapshots, then a paged walk of one entry per page.
    let mut ids = HashSet::from([snapshot.snapshot_id.clone()]);
    for name in ["snap-story-2", "snap-story-3"] {
        let s = controller
            .create_snapshot(snapshot_request(name, &volume.volume_id))
            .await
            .expect("create")
            .into_inner()
            .snapshot
            .expect("snapshot");
        ids.insert(s.snapshot_id);
    }
    let mut seen = HashSet::new();
    let mut token = String::new();
    loop {
        let page = controller
            .list_snapshots(csi::ListSnapshotsRequest {
                max_entries: 1,
                starting_token: token.clone(),
                source_volume_id: volume.volume_id.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.entries.len() <= 1);
        for entry in page.entries {
            assert!(seen.insert(entry.snapshot.expect("snapshot").snapshot_id));
        }
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(seen, ids);
    expect_code(
        controller
            .list_snapshots(csi::ListSnapshotsRequest {
                starting_token: "not-a-token".into(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        "starting_token",
    );
    expect_code(
        controller
            .list_snapshots(csi::ListSnapshotsRequest {
                max_entries: -1,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "max_entries",
    );

    let got = controller
        .get_snapshot(csi::GetSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert_eq!(got.snapshot_id, snapshot.snapshot_id);

    // Restore sets content_source in the answer.
    let mut restore = create_volume_request("pvc-restored", 0);
    restore.capacity_range = None;
    restore.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: snapshot.snapshot_id.clone(),
            },
        )),
    });
    let restored = controller
        .create_volume(restore.clone())
        .await
        .expect("restore")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(restored.content_source, restore.volume_content_source);
    assert!(restored.capacity_bytes >= snapshot.size_bytes);
    let mut too_small = restore.clone();
    too_small.name = "pvc-restored-small".into();
    too_small.capacity_range = Some(csi::CapacityRange {
        required_bytes: MIB,
        limit_bytes: MIB,
    });
    expect_code(
        controller.create_volume(too_small).await,
        Code::OutOfRange,
        "",
    );

    for id in &ids {
        for _ in 0..2 {
            controller
                .delete_snapshot(csi::DeleteSnapshotRequest {
                    snapshot_id: id.clone(),
                    ..Default::default()
                })
                .await
                .expect("delete snapshot (twice: idempotent)");
        }
    }
    expect_code(
        controller
            .get_snapshot(csi::GetSnapshotRequest {
                snapshot_id: snapshot.snapshot_id.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &snapshot.snapshot_id,
    );
    for id in [&volume.volume_id, &other.volume_id, &restored.volume_id] {
        controller
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("delete volume");
    }
    let left = controller
        .list_volumes(csi::ListVolumesRequest::default())
        .await
        .expect("list volumes")
        .into_inner();
    assert!(left.entries.is_empty(), "volumes left: {:?}", left.entries);
}

/// Requests that can never be valid: the right code and a message naming the field.
async fn bad_input(driver: &Driver) {
    let mut c = driver.controller();
    expect_code(
        c.create_snapshot(snapshot_request("", "v")).await,
        Code::InvalidArgument,
        "name",
    );
    expect_code(
        c.create_snapshot(snapshot_request("s", "")).await,
        Code::InvalidArgument,
        "source_volume_id",
    );
    expect_code(
        c.create_snapshot(snapshot_request(&"n".repeat(300), "v"))
            .await,
        Code::InvalidArgument,
        "name",
    );
    expect_code(
        c.delete_snapshot(csi::DeleteSnapshotRequest::default())
            .await,
        Code::InvalidArgument,
        "snapshot_id",
    );
    expect_code(
        c.get_snapshot(csi::GetSnapshotRequest::default()).await,
        Code::InvalidArgument,
        "snapshot_id",
    );
    let mut no_caps = create_volume_request("v", MIB);
    no_caps.volume_capabilities.clear();
    expect_code(
        c.create_volume(no_caps).await,
        Code::InvalidArgument,
        "volume_capabilities",
    );
    let mut bad_mode = create_volume_request("v", MIB);
    bad_mode.volume_capabilities[0].access_mode = Some(AccessMode { mode: 42 });
    expect_code(
        c.create_volume(bad_mode).await,
        Code::InvalidArgument,
        "volume_capabilities",
    );
    let mut bad_fs = create_volume_request("v", MIB);
    bad_fs.volume_capabilities = vec![mount_cap("ntfs")];
    expect_code(c.create_volume(bad_fs).await, Code::InvalidArgument, "ntfs");
    let mut negative = create_volume_request("v", MIB);
    negative.capacity_range = Some(csi::CapacityRange {
        required_bytes: -5,
        limit_bytes: 0,
    });
    expect_code(
        c.create_volume(negative).await,
        Code::InvalidArgument,
        "required_bytes",
    );
    let mut missing_source = create_volume_request("v-src", MIB);
    missing_source.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Volume(
            csi::volume_content_source::VolumeSource {
                volume_id: "missing".into(),
            },
        )),
    });
    expect_code(
        c.create_volume(missing_source).await,
        Code::NotFound,
        "missing",
    );
    expect_code(
        c.controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: "missing".into(),
        })
        .await,
        Code::NotFound,
        "missing",
    );
    expect_code(
        c.controller_publish_volume(csi::ControllerPublishVolumeRequest::default())
            .await,
        Code::Unimplemented,
        "ControllerPublishVolume",
    );
    expect_code(
        c.list_volumes(csi::ListVolumesRequest {
            starting_token: "x".into(),
            ..Default::default()
        })
        .await,
        Code::Aborted,
        "starting_token",
    );
}

#[tokio::test]
async fn memory_backend_over_grpc() {
    let driver = Driver::start(&["--backend", "memory", "--mode", "controller"]).await;
    identity_and_capabilities(&driver).await;
    snapshot_story(&driver).await;
    bad_input(&driver).await;
}

#[tokio::test]
async fn local_backend_controller_over_grpc() {
    let driver = Driver::start(&["--mode", "controller"]).await;
    identity_and_capabilities(&driver).await;
    snapshot_story(&driver).await;
    bad_input(&driver).await;
}

#[tokio::test]
async fn concurrent_creates_of_one_name_make_one_snapshot() {
    let driver = Driver::start(&["--mode", "controller"]).await;
    let volume = driver
        .controller()
        .create_volume(create_volume_request("pvc-race", 16 * MIB))
        .await
        .expect("volume")
        .into_inner()
        .volume
        .expect("volume");
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut c = driver.controller();
        let id = volume.volume_id.clone();
        tasks.push(tokio::spawn(async move {
            c.create_snapshot(snapshot_request("snap-race", &id)).await
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(r) => {
                ids.insert(r.into_inner().snapshot.expect("snapshot").snapshot_id);
            }
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert!(ids.len() <= 1, "duplicates: {ids:?}");
    let all = driver
        .controller()
        .list_snapshots(csi::ListSnapshotsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.entries.len(), 1, "exactly one snapshot must exist");
}

#[tokio::test]
async fn local_state_survives_a_restart() {
    let driver = Driver::start(&["--mode", "controller"]).await;
    let volume = driver
        .controller()
        .create_volume(create_volume_request("pvc-restart", 16 * MIB))
        .await
        .expect("volume")
        .into_inner()
        .volume
        .expect("volume");
    let snapshot = driver
        .controller()
        .create_snapshot(snapshot_request("snap-restart", &volume.volume_id))
        .await
        .expect("snapshot")
        .into_inner()
        .snapshot
        .expect("snapshot");
    let dir = driver.stop().await;
    // An orphan image (as a crash between clone and commit leaves) is swept at start.
    let orphan = dir
        .path()
        .join("data/snapshots/snap-0190f2a0-0000-7000-8000-000000000000.img");
    std::fs::write(&orphan, b"half").expect("orphan");
    let driver = Driver::start_in(dir, &["--mode", "controller"]).await;
    support::eventually(|| !orphan.exists()).await;
    assert!(!orphan.exists(), "orphan image was not swept");
    let again = driver
        .controller()
        .create_snapshot(snapshot_request("snap-restart", &volume.volume_id))
        .await
        .expect("repeat after restart")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert_eq!(again.snapshot_id, snapshot.snapshot_id);
}

#[tokio::test]
async fn capacity_limit_is_enforced() {
    let driver = Driver::start(&["--mode", "controller", "--max-capacity", "64Mi"]).await;
    let mut c = driver.controller();
    let capacity = c
        .get_capacity(csi::GetCapacityRequest::default())
        .await
        .expect("capacity")
        .into_inner();
    assert_eq!(capacity.available_capacity, 64 * MIB);
    c.create_volume(create_volume_request("pvc-cap-1", 48 * MIB))
        .await
        .expect("fits");
    let status = c
        .create_volume(create_volume_request("pvc-cap-2", 32 * MIB))
        .await
        .expect_err("over capacity");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let capacity = c
        .get_capacity(csi::GetCapacityRequest::default())
        .await
        .expect("capacity")
        .into_inner();
    assert_eq!(capacity.available_capacity, 16 * MIB);
}

/// Writes a file into a mounted volume, snapshots it (with the file system frozen), restores
/// the snapshot into a new volume and reads the same bytes back; then the same for a block
/// volume. Needs root.
#[tokio::test]
#[ignore = "needs root (loop devices, mounts): as root, `cargo test --test grpc -- --ignored` (tests/run.sh does)"]
async fn node_publish_snapshot_restore_round_trip() {
    support::require_root();
    let driver = Driver::start(&[]).await;
    let _cleanup = support::NodeCleanup(driver.path(""));
    let mut c = driver.controller();
    let mut n = driver.node();
    let stage = driver.path("stage");
    let target = driver.path("target");

    for (name, cap) in [("fs", mount_cap("ext4")), ("blk", block_cap())] {
        let is_block = matches!(cap.access_type, Some(AccessType::Block(_)));
        let mut req = create_volume_request(&format!("pvc-{name}"), 32 * MIB);
        req.volume_capabilities = vec![cap.clone()];
        let volume = c
            .create_volume(req.clone())
            .await
            .expect("volume")
            .into_inner()
            .volume
            .expect("volume");
        let publish = |volume_id: String, readonly: bool| csi::NodePublishVolumeRequest {
            volume_id,
            staging_target_path: stage.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(cap.clone()),
            readonly,
            ..Default::default()
        };
        let stage_req = |volume_id: String| csi::NodeStageVolumeRequest {
            volume_id,
            staging_target_path: stage.display().to_string(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        };
        let node = n.clone();
        let unpublish_unstage = |volume_id: String| {
            let mut n = node.clone();
            let stage = stage.clone();
            let target = target.clone();
            async move {
                n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                    volume_id: volume_id.clone(),
                    target_path: target.display().to_string(),
                })
                .await
                .expect("unpublish");
                assert!(!target.exists(), "target path must be removed");
                n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
                    volume_id,
                    staging_target_path: stage.display().to_string(),
                })
                .await
                .expect("unstage");
            }
        };
        std::fs::create_dir_all(&stage).expect("stage dir");
        n.node_stage_volume(stage_req(volume.volume_id.clone()))
            .await
            .expect("stage");
        n.node_publish_volume(publish(volume.volume_id.clone(), false))
            .await
            .expect("publish");
        let payload = format!("snapcsi round trip {name}\n").repeat(1000);
        if is_block {
            use std::io::{Seek, SeekFrom, Write};
            let mut dev = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .expect("open block target");
            dev.seek(SeekFrom::Start(4096)).expect("seek");
            dev.write_all(payload.as_bytes()).expect("write");
            dev.sync_all().expect("sync");
        } else {
            std::fs::write(target.join("data.txt"), &payload).expect("write file");
        }
        // Snapshot while staged and published: the controller freezes the file system.
        let snapshot = c
            .create_snapshot(snapshot_request(&format!("snap-{name}"), &volume.volume_id))
            .await
            .expect("snapshot")
            .into_inner()
            .snapshot
            .expect("snapshot");
        assert!(snapshot.ready_to_use);
        // Writes after the snapshot must not reach it.
        if !is_block {
            std::fs::write(target.join("data.txt"), "changed after the snapshot")
                .expect("overwrite");
        }
        let stats = n
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: volume.volume_id.clone(),
                volume_path: target.display().to_string(),
                ..Default::default()
            })
            .await
            .expect("stats")
            .into_inner();
        assert!(stats.usage.iter().any(|u| u.total > 0), "{stats:?}");
        unpublish_unstage(volume.volume_id.clone()).await;

        let mut restore = req.clone();
        restore.name = format!("pvc-{name}-restored");
        restore.capacity_range = Some(csi::CapacityRange {
            required_bytes: 64 * MIB,
            limit_bytes: 0,
        });
        restore.volume_content_source = Some(csi::VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Snapshot(
                csi::volume_content_source::SnapshotSource {
                    snapshot_id: snapshot.snapshot_id.clone(),
                },
            )),
        });
        let restored = c
            .create_volume(restore)
            .await
            .expect("restore")
            .into_inner()
            .volume
            .expect("volume");
        assert_eq!(restored.capacity_bytes, 64 * MIB);
        n.node_stage_volume(stage_req(restored.volume_id.clone()))
            .await
            .expect("stage restored");
        n.node_publish_volume(publish(restored.volume_id.clone(), true))
            .await
            .expect("publish restored read-only");
        if is_block {
            use std::io::{Read, Seek, SeekFrom};
            let mut dev = std::fs::File::open(&target).expect("open");
            dev.seek(SeekFrom::Start(4096)).expect("seek");
            let mut back = vec![0u8; payload.len()];
            dev.read_exact(&mut back).expect("read");
            assert_eq!(back, payload.as_bytes());
        } else {
            let back = std::fs::read_to_string(target.join("data.txt")).expect("read");
            assert_eq!(back, payload, "restored file differs");
            let err = std::fs::write(target.join("new.txt"), "x").expect_err("read-only");
            assert_eq!(err.raw_os_error(), Some(30), "EROFS expected, got {err}");
            let fs = n
                .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                    volume_id: restored.volume_id.clone(),
                    volume_path: target.display().to_string(),
                    ..Default::default()
                })
                .await
                .expect("stats")
                .into_inner();
            let bytes = fs.usage.iter().find(|u| u.unit == 1).expect("bytes usage");
            assert!(
                bytes.total > 40 * MIB,
                "file system was not grown to the restored size: {bytes:?}"
            );
        }
        unpublish_unstage(restored.volume_id.clone()).await;
        for id in [&restored.volume_id, &volume.volume_id] {
            c.delete_volume(csi::DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("delete");
        }
        c.delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id,
            ..Default::default()
        })
        .await
        .expect("delete snapshot");
    }
    let data = driver.path("data");
    let leaked = std::process::Command::new("losetup")
        .args(["-j"])
        .arg(data.join("volumes"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(leaked.trim().is_empty(), "loop devices leaked: {leaked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_names_on_one_volume_make_sixty_four_snapshots() {
    let driver = Driver::start(&["--mode", "controller"]).await;
    let volume = driver
        .controller()
        .create_volume(create_volume_request("pvc-many", 16 * MIB))
        .await
        .expect("volume")
        .into_inner()
        .volume
        .expect("volume");
    let run = async {
        let mut tasks = Vec::new();
        for i in 0..64 {
            let mut c = driver.controller();
            let id = volume.volume_id.clone();
            tasks.push(tokio::spawn(async move {
                c.create_snapshot(snapshot_request(&format!("snap-many-{i}"), &id))
                    .await
                    .map(|r| r.into_inner().snapshot.expect("snapshot").snapshot_id)
            }));
        }
        let mut ids = HashSet::new();
        for task in tasks {
            ids.insert(
                task.await
                    .expect("task")
                    .expect("every distinct name succeeds"),
            );
        }
        ids
    };
    let ids = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("no deadlock");
    assert_eq!(ids.len(), 64);
    let listed = driver
        .controller()
        .list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: volume.volume_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.entries.len(), 64);
}

/// A delete racing a repeated create of the same snapshot: whatever the order, the store and
/// the images on disk agree, and at most one snapshot of that name exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_racing_create_leaves_a_consistent_state() {
    let driver = Driver::start(&["--mode", "controller"]).await;
    let volume = driver
        .controller()
        .create_volume(create_volume_request("pvc-race-delete", 16 * MIB))
        .await
        .expect("volume")
        .into_inner()
        .volume
        .expect("volume");
    let snapshots_dir = driver.path("data/snapshots");
    let run = async {
        for round in 0..20 {
            let name = format!("snap-race-delete-{round}");
            let first = driver
                .controller()
                .create_snapshot(snapshot_request(&name, &volume.volume_id))
                .await
                .expect("create")
                .into_inner()
                .snapshot
                .expect("snapshot")
                .snapshot_id;
            let mut deleter = driver.controller();
            let mut creator = driver.controller();
            let delete = tokio::spawn(async move {
                deleter
                    .delete_snapshot(csi::DeleteSnapshotRequest {
                        snapshot_id: first,
                        ..Default::default()
                    })
                    .await
            });
            let id = volume.volume_id.clone();
            let create =
                tokio::spawn(
                    async move { creator.create_snapshot(snapshot_request(&name, &id)).await },
                );
            for result in [
                delete.await.expect("task").map(drop),
                create.await.expect("task").map(drop),
            ] {
                if let Err(status) = result {
                    assert_eq!(status.code(), Code::Aborted, "{status:?}");
                }
            }
            let listed = driver
                .controller()
                .list_snapshots(csi::ListSnapshotsRequest::default())
                .await
                .expect("list")
                .into_inner()
                .entries
                .len();
            let files = std::fs::read_dir(&snapshots_dir).expect("dir").count();
            assert_eq!(listed, files, "round {round}: store and disk disagree");
            // Clean up for the next round.
            for entry in driver
                .controller()
                .list_snapshots(csi::ListSnapshotsRequest::default())
                .await
                .expect("list")
                .into_inner()
                .entries
            {
                driver
                    .controller()
                    .delete_snapshot(csi::DeleteSnapshotRequest {
                        snapshot_id: entry.snapshot.expect("snapshot").snapshot_id,
                        ..Default::default()
                    })
                    .await
                    .expect("delete");
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("no deadlock");
}

/// gRPC reflection answers `list` (what `grpcurl -unix <socket> list` asks) with the CSI
/// services, so the socket can be explored without a copy of the proto.
#[tokio::test]
async fn reflection_lists_the_csi_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let driver = Driver::start(&["--backend", "memory", "--mode", "all"]).await;
    let mut client = ServerReflectionClient::new(driver.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list answer: {answer:?}");
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in ["csi.v1.Identity", "csi.v1.Controller", "csi.v1.Node"] {
        assert!(names.contains(service), "{service} missing from {names:?}");
    }
}
