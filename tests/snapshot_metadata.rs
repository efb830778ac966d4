//! Changed block tracking through the whole driver: the CSI SnapshotMetadata service over a
//! real unix socket, on volumes written through the node path (NodeStage + NodePublish of a
//! raw block volume: a loop device), on a data directory on loop-mounted XFS with reflink and
//! on ext4.
//!
//! Known blocks are written at known offsets, the volume is snapshotted, then written again
//! (overwrites, new data, a hole punched with BLKDISCARD, the volume grown with
//! ControllerExpandVolume + NodeExpandVolume and written past its old end) and snapshotted
//! again. GetMetadataAllocated of both snapshots and GetMetadataDelta between them must be
//! exactly the model's answer, resumed from a starting offset too, in pages of one tuple, and
//! in FIXED_LENGTH form; the metric label says which method ran (extent maps on XFS with no
//! byte read, content comparison on ext4).
//!
//! Needs root (loop devices, mounts) and mkfs.xfs; skips with a message otherwise, or fails
//! when `SNAPCSI_REQUIRE_PEERS` is set (CI).

mod support;
use support::cbt;

use snapcsi::proto as csi;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::Driver;
use support::cbt::{BLOCK, Device, MIB, Model, block_capability, from_offset};

const VOLUME: u64 = 64 * MIB;
const GROWN: u64 = 96 * MIB;

/// For the `#[ignore]`d tests, asked for with `--ignored` (the `test-root` phase): an
/// environment that cannot run them is a failure that says why, not a pass.
fn privileged() {
    assert!(support::is_root(), "needs root (loop devices and mounts)");
    assert!(
        Path::new("/dev/loop-control").exists(),
        "no /dev/loop-control in this environment"
    );
    assert!(
        Command::new("mkfs.xfs").arg("-V").output().is_ok(),
        "no mkfs.xfs (xfsprogs)"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A file system of `fs` on a loop device over a sparse file in a scratch directory, mounted;
/// unmounted and detached on drop, even after a failed assertion.
struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    fn new(fs: &str) -> (Self, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        std::fs::File::create(&backing)
            .and_then(|f| f.set_len(1 << 30))
            .expect("backing file");
        let scratch = Scratch { dir: Some(dir) };
        let dev = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing));
        match fs {
            "xfs" => run(Command::new("mkfs.xfs")
                .args(["-f", "-q", "-m", "reflink=1"])
                .arg(&dev)),
            _ => run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&dev)),
        };
        run(Command::new("mount").arg(&dev).arg(&mnt));
        // Detached as soon as the file system is unmounted.
        run(Command::new("losetup").args(["-d", &dev]));
        (scratch, mnt)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        support::release_under(dir.path());
    }
}

struct Volume {
    id: String,
    staging: PathBuf,
    target: PathBuf,
}

async fn create_and_publish(driver: &Driver, name: &str, work: &Path) -> Volume {
    let id = driver
        .controller()
        .create_volume(csi::CreateVolumeRequest {
            name: name.into(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: VOLUME as i64,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![block_capability()],
            ..Default::default()
        })
        .await
        .expect("CreateVolume")
        .into_inner()
        .volume
        .expect("volume")
        .volume_id;
    let staging = work.join(format!("{name}-staging"));
    let target = work.join(format!("{name}-target"));
    let mut node = driver.node();
    node.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(block_capability()),
        ..Default::default()
    })
    .await
    .expect("NodeStageVolume");
    node.node_publish_volume(csi::NodePublishVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(block_capability()),
        ..Default::default()
    })
    .await
    .expect("NodePublishVolume");
    Volume {
        id,
        staging,
        target,
    }
}

async fn unpublish(driver: &Driver, volume: &Volume) {
    let mut node = driver.node();
    node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: volume.id.clone(),
        target_path: volume.target.display().to_string(),
    })
    .await
    .expect("NodeUnpublishVolume");
    node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: volume.id.clone(),
        staging_target_path: volume.staging.display().to_string(),
    })
    .await
    .expect("NodeUnstageVolume");
}

async fn snapshot(driver: &Driver, volume: &str, name: &str) -> String {
    driver
        .controller()
        .create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: volume.into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("CreateSnapshot")
        .into_inner()
        .snapshot
        .expect("snapshot")
        .snapshot_id
}

/// The value of the metric line whose labels include all of `labels`.
fn metric(name: &str, labels: &[&str]) -> Option<f64> {
    snapcsi::metrics::metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn scenario(fs: &str, method: &str) {
    let (_scratch, mnt) = Scratch::new(fs);
    let work = mnt.join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let dir = tempfile::tempdir_in(&mnt).expect("driver dir");
    let driver = Driver::start_in(dir, &["--mode", "all"]).await;

    // Writes through the node path.
    let vol = create_and_publish(&driver, "cbt-vol", &work).await;
    let mut model = Model::new(VOLUME);
    {
        let dev = Device::open(&vol.target);
        dev.write(&mut model, 0, 64 * 1024, 1);
        dev.write(&mut model, MIB, 256 * 1024, 2);
        dev.write(&mut model, 10 * MIB + 12 * 1024, BLOCK, 3);
        dev.write(&mut model, 33 * MIB, 2 * MIB, 4);
        dev.write(&mut model, VOLUME - BLOCK, BLOCK, 5);
        dev.sync();
    }
    let base_model = model.clone();
    let base = snapshot(&driver, &vol.id, "cbt-base").await;

    {
        let dev = Device::open(&vol.target);
        // Overwrite inside a range, new data in a hole, a hole punched into data.
        dev.write(&mut model, MIB + 64 * 1024, 64 * 1024, 6);
        dev.write(&mut model, 20 * MIB, 128 * 1024, 7);
        dev.punch(&mut model, 33 * MIB + 512 * 1024, 256 * 1024);
        dev.sync();
    }
    // Grow the volume, then write past its old end.
    driver
        .controller()
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: vol.id.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: GROWN as i64,
                limit_bytes: 0,
            }),
            volume_capability: Some(block_capability()),
            ..Default::default()
        })
        .await
        .expect("ControllerExpandVolume");
    driver
        .node()
        .node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: vol.id.clone(),
            volume_path: vol.target.display().to_string(),
            staging_target_path: vol.staging.display().to_string(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: GROWN as i64,
                limit_bytes: 0,
            }),
            volume_capability: Some(block_capability()),
            ..Default::default()
        })
        .await
        .expect("NodeExpandVolume");
    model.grow(GROWN);
    {
        let dev = Device::open(&vol.target);
        dev.write(&mut model, 80 * MIB, 64 * 1024, 8);
        dev.write(&mut model, GROWN - 2 * BLOCK, 2 * BLOCK, 9);
        dev.sync();
    }
    let target = snapshot(&driver, &vol.id, "cbt-target").await;
    unpublish(&driver, &vol).await;

    let ch = &driver.channel;
    let variable = csi::BlockMetadataType::VariableLength as i32;

    let a = cbt::allocated(ch, &base, 0, 0)
        .await
        .expect("allocated base");
    assert_eq!((a.block_type, a.capacity), (variable, VOLUME as i64));
    assert_eq!(a.ranges(), base_model.allocated(), "{fs}: allocated(base)");
    let a = cbt::allocated(ch, &target, 0, 0)
        .await
        .expect("allocated target");
    assert_eq!(a.capacity, GROWN as i64);
    assert_eq!(a.ranges(), model.allocated(), "{fs}: allocated(target)");

    let want = model.delta_from(&base_model);
    let d = cbt::delta(ch, &base, &target, 0, 0).await.expect("delta");
    assert_eq!((d.block_type, d.capacity), (variable, GROWN as i64));
    assert_eq!(d.ranges(), want, "{fs}: delta(base, target)");
    println!(
        "{fs}: delta of {} ranges, {} bytes: {:?}",
        want.len(),
        want.iter().map(|r| r.1).sum::<u64>(),
        want
    );

    // One tuple per message, and resumed from inside a changed range.
    let d = cbt::delta(ch, &base, &target, 0, 1)
        .await
        .expect("delta, 1 per message");
    assert_eq!(d.ranges(), want);
    assert_eq!(d.messages, d.tuples.len());
    let resume = MIB + 100 * 1024;
    let d = cbt::delta(ch, &base, &target, resume as i64, 2)
        .await
        .expect("delta resumed");
    assert_eq!(
        d.ranges(),
        from_offset(&want, resume),
        "{fs}: delta from {resume}"
    );
    let a = cbt::allocated(ch, &target, resume as i64, 1)
        .await
        .expect("allocated resumed");
    assert_eq!(a.ranges(), from_offset(&model.allocated(), resume));
    // Resuming at the very end answers nothing.
    let d = cbt::delta(ch, &base, &target, GROWN as i64, 0)
        .await
        .expect("delta at the end");
    assert!(d.tuples.is_empty());

    // Which method ran, by the metric label; extent maps read no data.
    let streams = "snapcsi_snapshot_metadata_streams_total";
    let read = "snapcsi_snapshot_metadata_read_bytes_total";
    let labels = [
        r#"rpc="GetMetadataDelta""#,
        &format!(r#"method="{method}""#),
        r#"code="Ok""#,
    ];
    assert!(
        metric(streams, &labels).is_some_and(|n| n >= 4.0),
        "{fs}: no GetMetadataDelta streams with method={method}:\n{}",
        snapcsi::metrics::metrics().render()
    );
    let bytes = metric(read, &labels).unwrap_or(0.0);
    if method == "extents" {
        assert_eq!(bytes, 0.0, "{fs}: the extent-map delta read {bytes} bytes");
    } else {
        assert!(bytes > 0.0, "{fs}: the content delta read nothing");
    }

    // FIXED_LENGTH: the same answers widened to 64 KiB blocks.
    let dir = driver.stop().await;
    let driver = Driver::start_in(
        dir,
        &["--mode", "all", "--snapshot-metadata-block-size", "64Ki"],
    )
    .await;
    let fixed = 64 * 1024;
    let widen = |ranges: Vec<(u64, u64)>| -> Vec<(u64, u64)> {
        cbt::merged(
            ranges
                .into_iter()
                .map(|(o, l)| {
                    let start = o / fixed * fixed;
                    (start, (o + l).div_ceil(fixed) * fixed - start)
                })
                .collect(),
        )
    };
    let d = cbt::delta(&driver.channel, &base, &target, 0, 3)
        .await
        .expect("fixed delta");
    assert_eq!(d.block_type, csi::BlockMetadataType::FixedLength as i32);
    assert!(d.tuples.iter().all(|&(o, l)| l == fixed && o % fixed == 0));
    assert_eq!(d.ranges(), widen(want.clone()), "{fs}: fixed-length delta");
    let a = cbt::allocated(&driver.channel, &base, 0, 0)
        .await
        .expect("fixed allocated");
    assert_eq!(a.ranges(), widen(base_model.allocated()));
    drop(driver.stop().await);
}

#[tokio::test]
#[ignore = "needs root (loop devices, mounts): as root, `cargo test --test snapshot_metadata -- --ignored` (tests/run.sh does)"]
async fn xfs_reflink_snapshots_answer_exactly_by_extent_maps() {
    privileged();
    scenario("xfs", "extents").await;
}

#[tokio::test]
#[ignore = "needs root (loop devices, mounts): as root, `cargo test --test snapshot_metadata -- --ignored` (tests/run.sh does)"]
async fn ext4_snapshots_answer_exactly_by_content() {
    privileged();
    scenario("ext4", "data").await;
}

async fn advertised(driver: &Driver) -> bool {
    use csi::plugin_capability::{Type, service};
    driver
        .identity()
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .expect("GetPluginCapabilities")
        .into_inner()
        .capabilities
        .iter()
        .any(|c| {
            matches!(&c.r#type, Some(Type::Service(s))
                if s.r#type == service::Type::SnapshotMetadataService as i32)
        })
}

#[tokio::test]
async fn advertised_and_served_only_where_the_backend_can() {
    // Local: advertised, and an empty volume's snapshots answer empty streams.
    let driver = Driver::start(&["--mode", "controller"]).await;
    assert!(advertised(&driver).await, "local backend: not advertised");
    let mut c = driver.controller();
    let volume = c
        .create_volume(csi::CreateVolumeRequest {
            name: "empty".into(),
            volume_capabilities: vec![block_capability()],
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 8 << 20,
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
    let a = snapshot(&driver, &volume, "empty-a").await;
    let b = snapshot(&driver, &volume, "empty-b").await;
    let answer = cbt::allocated(&driver.channel, &a, 0, 0)
        .await
        .expect("allocated");
    assert!(answer.tuples.is_empty());
    let answer = cbt::delta(&driver.channel, &a, &b, 0, 0)
        .await
        .expect("delta");
    assert!(answer.tuples.is_empty());
    drop(driver.stop().await);

    // Memory: neither advertised nor served.
    let driver = Driver::start(&["--mode", "controller", "--backend", "memory"]).await;
    assert!(!advertised(&driver).await, "memory backend: advertised");
    let err = cbt::allocated(&driver.channel, "snap-x", 0, 0)
        .await
        .expect_err("not served");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn an_instance_without_tracking_answers_failed_precondition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_backend = \"disk\"\n\n[backends.disk]\ntype = \"local\"\ndata_dir = \"{}\"\n\n\
             [backends.scratch]\ntype = \"memory\"\n",
            dir.path().join("disk").display()
        ),
    )
    .expect("config");
    let driver = Driver::start(&[
        "--mode",
        "controller",
        "--config",
        &config.display().to_string(),
    ])
    .await;
    assert!(
        advertised(&driver).await,
        "one instance tracks changes: advertised"
    );
    let volume = driver
        .controller()
        .create_volume(csi::CreateVolumeRequest {
            name: "in-memory".into(),
            volume_capabilities: vec![block_capability()],
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 8 << 20,
                limit_bytes: 0,
            }),
            parameters: [("backend".to_owned(), "scratch".to_owned())].into(),
            ..Default::default()
        })
        .await
        .expect("volume")
        .into_inner()
        .volume
        .expect("volume")
        .volume_id;
    let a = snapshot(&driver, &volume, "mem-a").await;
    let b = snapshot(&driver, &volume, "mem-b").await;
    for result in [
        cbt::allocated(&driver.channel, &a, 0, 0).await.map(drop),
        cbt::delta(&driver.channel, &a, &b, 0, 0).await.map(drop),
    ] {
        let err = result.expect_err("the memory instance cannot track changes");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("full backup"), "{err:?}");
    }
}

/// The block model the tests judge answers by is itself right.
mod model_tests {
    use super::cbt::*;

    #[test]
    fn model_delta_covers_writes_punches_and_growth() {
        let mut base = Model::new(16 * BLOCK);
        base.write(0, 4 * BLOCK, 1);
        base.write(8 * BLOCK, BLOCK, 2);
        let mut target = base.clone();
        target.write(2 * BLOCK, BLOCK, 3);
        target.punch(8 * BLOCK, BLOCK);
        target.grow(32 * BLOCK);
        target.write(20 * BLOCK, 2 * BLOCK, 4);
        assert_eq!(base.allocated(), vec![(0, 4 * BLOCK), (8 * BLOCK, BLOCK)]);
        assert_eq!(
            target.delta_from(&base),
            vec![
                (2 * BLOCK, BLOCK),
                (8 * BLOCK, BLOCK),
                (20 * BLOCK, 2 * BLOCK)
            ]
        );
    }
}
