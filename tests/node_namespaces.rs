//! The controller and the node plugin as deploy/ runs them: two processes sharing the local
//! backend's data directory, each in its own mount namespace. The node stages (mounts) a
//! volume; a snapshot cut by the controller must freeze that file system, which it can only
//! do where the staging mount is visible. A controller that cannot see it refuses with
//! FAILED_PRECONDITION instead of cutting an unfrozen snapshot that merely looks fine (the
//! kubelet e2e found exactly that: the deployed controller saw no mount and never froze).
//!
//! And a controller killed while a file system is frozen for its clone: the next one thaws it.
//!
//! Needs root (loop devices, mounts, `unshare --mount`); skipped otherwise.

mod support;

use snapcsi::proto as csi;
use snapcsi::proto::controller_client::ControllerClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::Driver;
use tonic::Code;

const MIB: i64 = 1 << 20;

fn cap(block: bool) -> csi::VolumeCapability {
    use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode};
    csi::VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })
        }),
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

/// `snapcsi serve --mode controller` as its own process; in a private mount namespace (a copy
/// of this one taken now, which later mounts do not reach) when `unshared`.
struct Controller {
    child: Child,
    client: ControllerClient<tonic::transport::Channel>,
}

impl Controller {
    async fn start(data: &Path, socket: &Path, unshared: bool) -> Self {
        let _ = std::fs::remove_file(socket);
        let binary = env!("CARGO_BIN_EXE_snapcsi");
        let mut cmd = if unshared {
            let mut cmd = Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "--", binary]);
            cmd
        } else {
            Command::new(binary)
        };
        cmd.args(["serve", "--mode", "controller", "--node-id", "test-node"])
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().expect("start the controller process");
        for _ in 0..300 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = ControllerClient::new(support::connect(socket).await);
        Self { child, client }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn snapshot(
    c: &mut ControllerClient<tonic::transport::Channel>,
    name: &str,
    volume: &str,
) -> Result<csi::Snapshot, tonic::Status> {
    c.create_snapshot(csi::CreateSnapshotRequest {
        source_volume_id: volume.into(),
        name: name.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().snapshot.expect("snapshot"))
}

/// The feature line of an ext4 image's superblock.
fn ext4_features(image: &Path) -> String {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(image)
        .output()
        .expect("dumpe2fs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .expect("an ext4 superblock")
        .trim()
        .to_owned()
}

#[tokio::test]
#[ignore = "needs root (loop devices, mounts, unshare): as root, `cargo test --test node_namespaces -- --ignored` (tests/run.sh does)"]
async fn a_controller_that_cannot_see_the_staging_mount_refuses_to_snapshot() {
    assert!(
        support::is_root(),
        "needs root (loop devices, mounts, unshare)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let data = root.join("data");
    let socket = root.join("controller.sock");
    // The node plugin, in this process and mount namespace, on the same data directory.
    let node = Driver::start_in(dir, &["--mode", "node"]).await;
    let _cleanup = support::NodeCleanup(root.clone());
    let mut n = node.node();

    // Started before anything is staged: its namespace never sees the staging mounts.
    let controller = Controller::start(&data, &socket, true).await;
    let mut c = controller.client.clone();
    let mut volumes = Vec::new();
    for (name, block) in [("fs", false), ("blk", true)] {
        let volume = c
            .create_volume(csi::CreateVolumeRequest {
                name: format!("pvc-{name}"),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: 32 * MIB,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap(block)],
                ..Default::default()
            })
            .await
            .expect("create volume")
            .into_inner()
            .volume
            .expect("volume");
        let staging = root.join(format!("stage-{name}"));
        std::fs::create_dir_all(&staging).expect("staging dir");
        n.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(cap(block)),
            ..Default::default()
        })
        .await
        .expect("stage");
        volumes.push((volume.volume_id, staging, block));
    }
    let (fs_volume, fs_staging, _) = volumes[0].clone();
    std::fs::write(fs_staging.join("file"), b"written before the snapshot").expect("write");

    // The mounted file system cannot be frozen from there: refused, naming the staging path.
    let refused = snapshot(&mut c, "snap-unseen", &fs_volume)
        .await
        .expect_err("a snapshot it cannot freeze must be refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&fs_staging.display().to_string())
            && refused.message().contains("cannot be frozen"),
        "{refused:?}"
    );
    // A block volume has no file system to freeze: its snapshot is fine from anywhere.
    snapshot(&mut c, "snap-block", &volumes[1].0)
        .await
        .expect("block snapshot");
    controller.stop();

    // The same controller where the mount is visible freezes it: the clone's journal is clean.
    let controller = Controller::start(&data, &socket, false).await;
    let mut c = controller.client.clone();
    let taken = snapshot(&mut c, "snap-seen", &fs_volume)
        .await
        .expect("snapshot where the mount is visible");
    let image: PathBuf = data
        .join("snapshots")
        .join(format!("{}.img", taken.snapshot_id));
    let features = ext4_features(&image);
    assert!(
        !features.contains("needs_recovery"),
        "the snapshot of a mounted ext4 must be cut frozen: {features}"
    );
    controller.stop();

    for (volume_id, staging, _) in volumes {
        n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id,
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstage");
    }
    node.stop().await;
}

/// The state a controller killed mid-clone leaves (the kubelet e2e's scenario h found it): the
/// volume's file system still frozen, so every writer in the pod hangs and every later freeze
/// fails with EBUSY. The freeze journal names what was frozen; the next start thaws it.
#[tokio::test]
#[ignore = "needs root (loop devices, mounts, unshare): as root, `cargo test --test node_namespaces -- --ignored` (tests/run.sh does)"]
async fn a_file_system_left_frozen_by_a_killed_controller_is_thawed_at_start() {
    assert!(
        support::is_root(),
        "needs root (loop devices, mounts, fsfreeze)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let data = root.join("data");
    let socket = root.join("controller.sock");
    let node = Driver::start_in(dir, &["--mode", "node"]).await;
    let _cleanup = support::NodeCleanup(root.clone());
    let mut n = node.node();
    let controller = Controller::start(&data, &socket, false).await;
    let mut c = controller.client.clone();
    let volume = c
        .create_volume(csi::CreateVolumeRequest {
            name: "pvc-frozen".into(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 32 * MIB,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![cap(false)],
            ..Default::default()
        })
        .await
        .expect("create volume")
        .into_inner()
        .volume
        .expect("volume");
    let staging = root.join("stage");
    std::fs::create_dir_all(&staging).expect("staging dir");
    n.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap(false)),
        ..Default::default()
    })
    .await
    .expect("stage");
    // Thaws even when an assertion fails, so no test leaves a frozen mount behind.
    struct Thaw(PathBuf);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = Command::new("fsfreeze")
                .arg("--unfreeze")
                .arg(&self.0)
                .status();
        }
    }
    let _thaw = Thaw(staging.clone());

    // The controller dies while the file system is frozen for its clone: frozen, journal kept.
    controller.stop();
    let frozen = Command::new("fsfreeze")
        .arg("--freeze")
        .arg(&staging)
        .status()
        .expect("fsfreeze");
    assert!(frozen.success());
    std::fs::write(data.join("frozen"), format!("{}\n", staging.display())).expect("journal");

    let controller = Controller::start(&data, &socket, false).await;
    let mut c = controller.client.clone();
    let taken = snapshot(&mut c, "snap-after-crash", &volume.volume_id)
        .await
        .expect("the restarted controller thaws, then freezes and snapshots again");
    assert!(taken.ready_to_use);
    assert!(
        !data.join("frozen").exists(),
        "the journal goes once its file systems are thawed"
    );
    // And the pod's writes go through again (a frozen file system would block this one).
    let file = staging.join("after");
    let write = tokio::task::spawn_blocking(move || std::fs::write(file, b"thawed"));
    tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("a write to the volume must not hang: it is still frozen")
        .expect("join")
        .expect("write");
    controller.stop();
    n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: volume.volume_id,
        staging_target_path: staging.display().to_string(),
    })
    .await
    .expect("unstage");
    node.stop().await;
}
