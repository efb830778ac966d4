//! Crash safety of the local backend: the driver runs as a child process and is killed with
//! SIGKILL at a random moment during CreateSnapshot, DeleteSnapshot or CreateVolume from a
//! snapshot; it is restarted and the interrupted call is repeated the way the sidecars repeat
//! it, until it succeeds. After every trial exactly the expected objects exist (no duplicate,
//! no orphan image left behind), and the store opens cleanly.
//!
//! Three targets: the local backend (files and store checked on disk too, and no loop device
//! or mount left behind), the SCP backend against its simulator (a snapshot takes 0.1 s there,
//! so kills land while it is creating), and the REAL Cinder 29 with `FAKE_DELAY` (every create
//! and delete in its driver takes that long; Cinder itself is asked how many objects carry
//! each name, so a duplicate cannot hide behind the driver's own listing).
//! `CRASH_TRIALS` sets the number of trials per target (default 15, and 10 for Cinder, whose
//! trials take seconds each; `CRASH_CINDER_TRIALS` sets Cinder's alone). The full run is
//! `CRASH_TRIALS=200 cargo test --release --test crash -- --nocapture`.

mod support;
use support::sim;

use support::cinder_peer::Peer;

use snapcsi::proto as csi;
use snapcsi::proto::controller_client::ControllerClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_snapcsi");
const MIB: i64 = 1 << 20;
const CREATE_GRACE: Duration = Duration::from_secs(5);

struct Driver {
    child: Child,
    channel: Channel,
}

impl Driver {
    async fn start(dir: &Path, config: Option<&Path>) -> Driver {
        let socket = dir.join("csi.sock");
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--mode", "controller", "--endpoint"])
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-dir")
            .arg(dir.join("data"))
            // A create killed before or while it reached the cloud holds its name for this
            // long (see ops::intents); short here so a trial takes seconds, long enough for the
            // simulator and Cinder to commit a create they received (a duplicate fails the
            // trial, so too short a value cannot hide one).
            .args([
                "--create-grace-seconds",
                &CREATE_GRACE.as_secs().to_string(),
            ]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start snapcsi");
        // A live socket file from the killed process may still be there: wait for one that
        // accepts connections.
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                let channel = support::connect(&socket).await;
                return Driver { child, channel };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("driver did not come up");
    }

    fn client(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// A small xorshift so trials are reproducible from their number.
fn random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[derive(Debug, Clone, Copy)]
enum Op {
    CreateSnapshot,
    DeleteSnapshot,
    Restore,
}

/// The CSI names of one trial's objects (unique per trial: the Cinder peer is shared).
#[derive(Debug, Clone)]
struct Names {
    source: String,
    snapshot: String,
    restored: String,
}

impl Names {
    fn of(trial: u64) -> Names {
        Names {
            source: format!("crash-source-{trial}"),
            snapshot: format!("crash-snap-{trial}"),
            restored: format!("crash-restored-{trial}"),
        }
    }
}

async fn create_snapshot(
    c: &mut ControllerClient<Channel>,
    names: &Names,
    volume: &str,
) -> Result<String, tonic::Status> {
    c.create_snapshot(csi::CreateSnapshotRequest {
        name: names.snapshot.clone(),
        source_volume_id: volume.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().snapshot.unwrap_or_default().snapshot_id)
}

async fn restore(
    c: &mut ControllerClient<Channel>,
    names: &Names,
    snapshot: &str,
) -> Result<String, tonic::Status> {
    c.create_volume(csi::CreateVolumeRequest {
        name: names.restored.clone(),
        volume_capabilities: vec![csi::VolumeCapability {
            access_mode: Some(csi::volume_capability::AccessMode { mode: 1 }),
            access_type: Some(csi::volume_capability::AccessType::Block(
                csi::volume_capability::BlockVolume {},
            )),
        }],
        volume_content_source: Some(csi::VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Snapshot(
                csi::volume_content_source::SnapshotSource {
                    snapshot_id: snapshot.into(),
                },
            )),
        }),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().volume.unwrap_or_default().volume_id)
}

/// Creates the trial's snapshot and repeats the call until it is ready to use.
async fn ready_snapshot(c: &mut ControllerClient<Channel>, names: &Names, volume: &str) -> String {
    for _ in 0..400 {
        let snapshot = c
            .create_snapshot(csi::CreateSnapshotRequest {
                name: names.snapshot.clone(),
                source_volume_id: volume.into(),
                ..Default::default()
            })
            .await
            .expect("setup snapshot")
            .into_inner()
            .snapshot
            .unwrap_or_default();
        if snapshot.ready_to_use {
            return snapshot.snapshot_id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("setup snapshot never became ready");
}

async fn run_op(
    c: &mut ControllerClient<Channel>,
    op: Op,
    names: &Names,
    volume: &str,
    snapshot: &str,
) -> Result<(), tonic::Status> {
    match op {
        Op::CreateSnapshot => create_snapshot(c, names, volume).await.map(drop),
        Op::DeleteSnapshot => c
            .delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: snapshot.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Op::Restore => restore(c, names, snapshot).await.map(drop),
    }
}

/// Which backend a trial runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The embedded local backend (files and store checked on disk too).
    Local,
    /// The SCP backend against its simulator (a fresh one per trial), snapshots taking 0.1 s.
    Scp,
    /// The Cinder backend against the real Cinder (one peer for all trials, FAKE_DELAY set).
    Cinder,
}

async fn trial(number: u64, target: Target, peer: Option<&Peer>) -> (Op, bool) {
    let names = Names::of(number);
    let mut seed = number.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let op = [Op::CreateSnapshot, Op::DeleteSnapshot, Op::Restore][(number % 3) as usize];
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let local = target == Target::Local;
    let simulator = match target {
        Target::Local | Target::Cinder => None,
        Target::Scp => Some(
            sim::Sim::start(
                "scp.py",
                &[
                    "--credential",
                    "crash-ak:crash-sk",
                    "--snapshot-delay",
                    "0.1",
                ],
            )
            .expect("the SCP simulator"),
        ),
    };
    let config_text = match (&simulator, peer) {
        (Some(sim), _) => Some(format!(
            "[backends.scp]\ntype = \"scp\"\nendpoint = \"http://127.0.0.1:{}\"\n\
             access_key = \"crash-ak\"\nsecret_key = \"crash-sk\"\n",
            sim.port
        )),
        (None, Some(peer)) => Some(format!(
            "[backends.cinder]\n{}",
            peer.noauth_toml()
                .replace("[http]", "[backends.cinder.http]")
        )),
        (None, None) => None,
    };
    let config = config_text.map(|text| {
        let path = dir.path().join("snapcsi.toml");
        std::fs::write(&path, text).expect("config");
        path
    });
    let config = config.as_deref();

    // Setup: a volume holding 32 MiB of data (so a clone on this file system takes a while),
    // and a snapshot of it for the delete and restore trials.
    let driver = Driver::start(dir.path(), config).await;
    let mut c = driver.client();
    let volume = c
        .create_volume(csi::CreateVolumeRequest {
            name: names.source.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: if local { 64 * MIB } else { 1 << 30 },
                limit_bytes: 0,
            }),
            volume_capabilities: vec![csi::VolumeCapability {
                access_mode: Some(csi::volume_capability::AccessMode { mode: 1 }),
                access_type: Some(csi::volume_capability::AccessType::Block(
                    csi::volume_capability::BlockVolume {},
                )),
            }],
            ..Default::default()
        })
        .await
        .expect("source volume")
        .into_inner()
        .volume
        .expect("volume")
        .volume_id;
    let image = data.join("volumes").join(format!("{volume}.img"));
    let chunk: Vec<u8> = (0..(32 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    if local {
        std::fs::write(&image, &chunk).expect("fill source");
    }
    let snapshot = match op {
        Op::CreateSnapshot => String::new(),
        _ => ready_snapshot(&mut c, &names, &volume).await,
    };

    // The interrupted call: kill at a random moment within its first ~150 ms (Cinder: 1 s,
    // its API takes tens of milliseconds per request and its driver FAKE_DELAY per object).
    let window = if target == Target::Cinder {
        1_000_000
    } else {
        150_000
    };
    let delay = Duration::from_micros(random(&mut seed) % window);
    let call = {
        let mut c = c.clone();
        let (names, volume, snapshot) = (names.clone(), volume.clone(), snapshot.clone());
        tokio::spawn(async move { run_op(&mut c, op, &names, &volume, &snapshot).await })
    };
    tokio::time::sleep(delay).await;
    let finished_before_kill = call.is_finished();
    driver.kill();
    let _ = call.await;

    // Restart and repeat the call until it succeeds, as the sidecars do.
    let driver = Driver::start(dir.path(), config).await;
    let mut c = driver.client();
    let deadline = std::time::Instant::now() + CREATE_GRACE + Duration::from_secs(30);
    loop {
        match run_op(&mut c, op, &names, &volume, &snapshot).await {
            Ok(()) => break,
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Aborted | tonic::Code::Unavailable
                ) && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("trial {number} {op:?}: repeat failed: {status:?}"),
        }
    }
    let (want_snapshots, want_volumes) = match op {
        Op::CreateSnapshot => (1, 1),
        Op::DeleteSnapshot => (0, 1),
        Op::Restore => (1, 2),
    };
    if let Some(peer) = peer {
        // Cinder's own count of each name: a second object with a name is a duplicate, an
        // object left after a delete is lost work, one missing is lost data.
        let want_restored = usize::from(op == Op::Restore);
        settle(
            peer,
            "snapshots",
            &names.snapshot,
            want_snapshots,
            number,
            op,
        )
        .await;
        settle(peer, "volumes", &names.source, 1, number, op).await;
        settle(peer, "volumes", &names.restored, want_restored, number, op).await;
        cleanup(&mut c, peer, &names, &volume).await;
        driver.kill();
        return (op, finished_before_kill);
    }

    // Exactly the expected objects, in the store and on disk.
    let snapshots = c
        .list_snapshots(csi::ListSnapshotsRequest::default())
        .await
        .expect("list snapshots")
        .into_inner()
        .entries;
    let volumes = c
        .list_volumes(csi::ListVolumesRequest::default())
        .await
        .expect("list volumes")
        .into_inner()
        .entries;
    assert_eq!(
        snapshots.len(),
        want_snapshots,
        "trial {number} {op:?}: snapshots {snapshots:?}"
    );
    assert_eq!(
        volumes.len(),
        want_volumes,
        "trial {number} {op:?}: volumes {volumes:?}"
    );
    driver.kill();
    if !local {
        return (op, finished_before_kill);
    }
    // A clean start sweeps anything a crash left; after it, files match records exactly.
    let driver = Driver::start(dir.path(), None).await;
    support::eventually(|| {
        files(&data.join("snapshots")).len() == want_snapshots
            && files(&data.join("volumes")).len() == want_volumes
    })
    .await;
    assert_eq!(
        files(&data.join("snapshots")).len(),
        want_snapshots,
        "trial {number} {op:?}: orphan snapshot images"
    );
    assert_eq!(
        files(&data.join("volumes")).len(),
        want_volumes,
        "trial {number} {op:?}: orphan volume images"
    );
    if op == Op::Restore {
        let restored = restore(&mut driver.client(), &names, &snapshot)
            .await
            .expect("idempotent restore");
        let bytes = std::fs::read(data.join("volumes").join(format!("{restored}.img")))
            .expect("restored image");
        assert_eq!(
            &bytes[..chunk.len()],
            &chunk[..],
            "trial {number}: restored content differs"
        );
    }
    driver.kill();
    leaked_kernel_objects(dir.path(), number, op);
    (op, finished_before_kill)
}

/// Fails the trial if a loop device is backed by a file of the trial's directory, or if
/// anything is mounted below it.
fn leaked_kernel_objects(dir: &Path, number: u64, op: Op) {
    let dir = dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing) {
            assert!(
                !file.starts_with(&dir),
                "trial {number} {op:?}: loop device {} left on {file}",
                entry.path().display()
            );
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&dir),
        "trial {number} {op:?}: a mount is left below {dir}"
    );
}

/// Waits until Cinder has exactly `want` objects of `collection` named `name` (deletes and
/// creates finish FAKE_DELAY after the API answered), then asserts it.
async fn settle(peer: &Peer, collection: &str, name: &str, want: usize, number: u64, op: Op) {
    let mut have = peer.count_named(collection, name).await;
    for _ in 0..300 {
        if have == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        have = peer.count_named(collection, name).await;
    }
    assert_eq!(
        have, want,
        "trial {number} {op:?}: Cinder {collection} named {name}"
    );
}

/// Deletes a Cinder trial's objects through the driver (snapshot before its volume: Cinder
/// refuses to delete a volume that has snapshots) so the shared peer stays within its quotas.
async fn cleanup(c: &mut ControllerClient<Channel>, peer: &Peer, names: &Names, volume: &str) {
    let snapshots = c
        .list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: volume.into(),
            ..Default::default()
        })
        .await
        .expect("list the trial's snapshots")
        .into_inner()
        .entries;
    for entry in snapshots {
        let id = entry.snapshot.unwrap_or_default().snapshot_id;
        c.delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: id,
            ..Default::default()
        })
        .await
        .expect("delete the trial's snapshot");
    }
    settle(peer, "snapshots", &names.snapshot, 0, 0, Op::DeleteSnapshot).await;
    let volumes = c
        .list_volumes(csi::ListVolumesRequest::default())
        .await
        .expect("list volumes")
        .into_inner()
        .entries;
    for entry in volumes {
        let id = entry.volume.unwrap_or_default().volume_id;
        // Other trials' volumes are gone already; this trial's are the source and maybe the
        // restored one, which has no snapshots, so every delete succeeds.
        c.delete_volume(csi::DeleteVolumeRequest {
            volume_id: id,
            ..Default::default()
        })
        .await
        .expect("delete the trial's volume");
    }
    settle(peer, "volumes", &names.source, 0, 0, Op::DeleteSnapshot).await;
    settle(peer, "volumes", &names.restored, 0, 0, Op::Restore).await;
}

impl PartialEq for Op {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

fn count_from(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

async fn trials(target: Target, peer: Option<&Peer>) {
    // Seconds per trial against a real Cinder: fewer by default (CI).
    let default = if target == Target::Cinder { 10 } else { 15 };
    let mut trials = count_from("CRASH_TRIALS").unwrap_or(default);
    if target == Target::Cinder {
        trials = count_from("CRASH_CINDER_TRIALS").unwrap_or(trials);
    }
    let mut interrupted = 0;
    for number in 0..trials {
        let (_, finished) = trial(number, target, peer).await;
        if !finished {
            interrupted += 1;
        }
    }
    println!(
        "crash {target:?}: {trials} trials, {interrupted} killed mid-call, 0 duplicates, 0 orphans, 0 lost"
    );
    assert!(
        interrupted > 0,
        "no trial killed the driver during a call: the test proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loses_and_duplicates_nothing() {
    trials(Target::Local, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loses_and_duplicates_nothing_on_scp() {
    trials(Target::Scp, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loses_and_duplicates_nothing_on_real_cinder() {
    let delay = std::env::var("CRASH_CINDER_DELAY").unwrap_or_else(|_| "0.5".into());
    let Some(peer) = Peer::start(&[("FAKE_DELAY", &delay)]) else {
        return;
    };
    println!("crash Cinder: FAKE_DELAY={delay}");
    trials(Target::Cinder, Some(&peer)).await;
}
