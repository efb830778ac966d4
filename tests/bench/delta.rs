//! Benchmark: GetMetadataDelta (changed block tracking) of snapcsi against csi-driver-host-path
//! v1.18.0 (the reference driver, `--enable-snapshot-metadata`), side by side in one run, on
//! one file system (XFS with reflink on a loop device; tests/bench/delta.sh prepares it).
//!
//! For each volume size and each driver: a raw block volume is created and published (node
//! path), data is written at spread offsets and fsynced, snapshot A; `--changed-mib` MiB are
//! rewritten in 1 MiB pieces at spread offsets, snapshot B; then GetMetadataDelta(A, B) is
//! timed over the whole stream and the bytes the driver process read meanwhile are taken from
//! its /proc/<pid>/io (`rchar`: every byte read by read-family calls). Both answers must cover
//! every rewritten MiB; snapcsi's must be exactly them.
//!
//! Usage (root; normally through tests/bench/delta.sh):
//!   cargo bench --bench delta -- --dir DIR --hostpath BIN [--sizes 10,50] [--changed-mib 64]
//!       [--reps 3] [--smoke]
//! `--smoke`: sizes 1 and 2 GiB, one repetition, correctness only (no goal check).
//! Goal (checked otherwise, exit 1 when missed): snapcsi's time flat in volume size (largest
//! size within 3x of the smallest) and at least 100x faster than host-path at the largest.

use snapcsi::proto as csi;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Written before the first snapshot, in this many pieces spread over the volume.
const BASE_PIECES: u64 = 64;

struct Args {
    dir: PathBuf,
    hostpath: PathBuf,
    sizes_gib: Vec<u64>,
    changed_mib: u64,
    base_mib: u64,
    reps: usize,
    smoke: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: PathBuf::new(),
        hostpath: PathBuf::new(),
        sizes_gib: vec![10, 50],
        changed_mib: 64,
        base_mib: 256,
        reps: 3,
        smoke: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--dir" => args.dir = PathBuf::from(value()),
            "--hostpath" => args.hostpath = PathBuf::from(value()),
            "--sizes" => {
                args.sizes_gib = value()
                    .split(',')
                    .map(|s| s.parse().expect("sizes in GiB"))
                    .collect();
            }
            "--changed-mib" => args.changed_mib = value().parse().expect("MiB"),
            "--reps" => args.reps = value().parse().expect("count"),
            "--smoke" => args.smoke = true,
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    if args.smoke {
        args.sizes_gib = vec![1, 2];
        args.base_mib = 64;
        args.reps = 1;
    }
    assert!(
        !args.dir.as_os_str().is_empty() && !args.hostpath.as_os_str().is_empty(),
        "usage: delta --dir DIR --hostpath HOSTPATHPLUGIN [--sizes 10,50] [--smoke]"
    );
    args
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Snapcsi,
    Hostpath,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Snapcsi => "snapcsi",
            Kind::Hostpath => "host-path",
        }
    }
}

struct Driver {
    child: Child,
    channel: Channel,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://localhost")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect to the driver socket")
}

async fn start(kind: Kind, args: &Args, dir: &Path) -> Driver {
    std::fs::create_dir_all(dir).expect("driver dir");
    let socket = dir.join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let log = std::fs::File::create(dir.join("driver.log")).expect("log");
    let mut cmd = match kind {
        Kind::Snapcsi => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_snapcsi"));
            c.args([
                "serve",
                "--mode",
                "all",
                "--node-id",
                "bench",
                "--log-format",
                "json",
            ])
            .args(["--endpoint", &endpoint])
            .arg("--data-dir")
            .arg(dir.join("data"));
            c
        }
        Kind::Hostpath => {
            let mut c = Command::new(&args.hostpath);
            c.args(["--drivername", "hostpath.csi.k8s.io", "--nodeid", "bench"])
                .args(["--endpoint", &endpoint, "--enable-snapshot-metadata"])
                .arg("--statedir")
                .arg(dir.join("state"));
            c
        }
    };
    let child = cmd
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", kind.name()));
    for _ in 0..300 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = connect(&socket).await;
    Driver { child, channel }
}

fn block_cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: 1 }),
        access_type: Some(csi::volume_capability::AccessType::Block(
            csi::volume_capability::BlockVolume {},
        )),
    }
}

/// `rchar` of a process: bytes it read with read-family calls (page cache or not).
fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .expect("read /proc/<pid>/io (needs root)")
        .lines()
        .find_map(|l| l.strip_prefix("rchar: ")?.trim().parse().ok())
        .expect("rchar")
}

/// Bytes that differ per call, so every write is a change.
fn piece(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

struct Sample {
    method: Option<String>,
    size: u64,
    kind: Kind,
    seconds: Vec<f64>,
    bytes_read: u64,
    tuples: usize,
    reported: u64,
}

/// One driver, one size: volume, writes, two snapshots, the timed deltas.
async fn measure(kind: Kind, args: &Args, size: u64) -> Sample {
    let dir = args.dir.join(format!("{}-{}g", kind.name(), size / GIB));
    let driver = start(kind, args, &dir).await;
    let mut controller = csi::controller_client::ControllerClient::new(driver.channel.clone());
    let mut node = csi::node_client::NodeClient::new(driver.channel.clone());
    let volume = controller
        .create_volume(csi::CreateVolumeRequest {
            name: format!("bench-{}", size / GIB),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: size as i64,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![block_cap()],
            ..Default::default()
        })
        .await
        .expect("CreateVolume")
        .into_inner()
        .volume
        .expect("volume")
        .volume_id;
    let staging = dir.join("staging");
    let target = dir.join("target");
    std::fs::create_dir_all(&staging).expect("staging dir");
    node.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: volume.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(block_cap()),
        ..Default::default()
    })
    .await
    .expect("NodeStageVolume");
    node.node_publish_volume(csi::NodePublishVolumeRequest {
        volume_id: volume.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(block_cap()),
        ..Default::default()
    })
    .await
    .expect("NodePublishVolume");

    let device = std::fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .expect("open the published device");
    let base_piece = args.base_mib * MIB / BASE_PIECES;
    for i in 0..BASE_PIECES {
        let offset = i * (size / BASE_PIECES) / MIB * MIB;
        device
            .write_all_at(&piece(i + 1, base_piece), offset)
            .expect("write");
    }
    device.sync_all().expect("fsync");
    let snapshot = |name: &'static str| {
        let mut controller = controller.clone();
        let volume = volume.clone();
        async move {
            controller
                .create_snapshot(csi::CreateSnapshotRequest {
                    source_volume_id: volume,
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
    };
    let base = snapshot("bench-a").await;
    // The change: 1 MiB pieces at spread offsets, half inside the data written before (an
    // overwrite), half in holes.
    let mut changed = Vec::new();
    let pieces = args.changed_mib;
    for i in 0..pieces {
        let offset = if i % 2 == 0 {
            (i / 2) * (size / BASE_PIECES) / MIB * MIB
        } else {
            (i * (size / pieces) + size / (2 * pieces)) / MIB * MIB
        };
        device
            .write_all_at(&piece(1000 + i, MIB), offset)
            .expect("write");
        changed.push(offset);
    }
    device.sync_all().expect("fsync");
    drop(device);
    changed.sort_unstable();
    changed.dedup();
    let target_snapshot = snapshot("bench-b").await;
    node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: volume.clone(),
        target_path: target.display().to_string(),
    })
    .await
    .expect("NodeUnpublishVolume");
    node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: volume.clone(),
        staging_target_path: staging.display().to_string(),
    })
    .await
    .expect("NodeUnstageVolume");

    let reps = match kind {
        Kind::Snapcsi => args.reps.max(1),
        // A full read of both snapshots each time: once is enough to know.
        Kind::Hostpath => 1,
    };
    let pid = driver.child.id();
    let mut seconds = Vec::new();
    let mut bytes_read = 0;
    let mut tuples = Vec::new();
    for _ in 0..reps {
        let mut client =
            csi::snapshot_metadata_client::SnapshotMetadataClient::new(driver.channel.clone());
        let before = rchar(pid);
        let started = Instant::now();
        let mut stream = client
            .get_metadata_delta(csi::GetMetadataDeltaRequest {
                base_snapshot_id: base.clone(),
                target_snapshot_id: target_snapshot.clone(),
                ..Default::default()
            })
            .await
            .expect("GetMetadataDelta")
            .into_inner();
        tuples.clear();
        while let Some(message) = stream.message().await.expect("delta stream") {
            tuples.extend(
                message
                    .block_metadata
                    .iter()
                    .map(|b| (b.byte_offset as u64, b.size_bytes as u64)),
            );
        }
        seconds.push(started.elapsed().as_secs_f64());
        bytes_read = rchar(pid) - before;
    }
    // Every rewritten MiB is reported (host-path answers FIXED_LENGTH 4 KiB tuples: touching
    // ones are merged first); snapcsi reports exactly those.
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &(o, l) in &tuples {
        match runs.last_mut() {
            Some((ro, rl)) if *ro + *rl == o => *rl += l,
            _ => runs.push((o, l)),
        }
    }
    let covered = |offset: u64| {
        runs.iter()
            .any(|&(o, l)| o <= offset && offset + MIB <= o + l)
    };
    let missing: Vec<u64> = changed.iter().copied().filter(|&o| !covered(o)).collect();
    assert!(
        missing.is_empty(),
        "{} at {} GiB missed changed MiB at {missing:?}",
        kind.name(),
        size / GIB
    );
    let reported: u64 = tuples.iter().map(|t| t.1).sum();
    if kind == Kind::Snapcsi {
        assert_eq!(
            reported,
            changed.len() as u64 * MIB,
            "snapcsi reported more than what changed"
        );
    }

    for id in [&base, &target_snapshot] {
        controller
            .delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("DeleteSnapshot");
    }
    controller
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: volume,
            ..Default::default()
        })
        .await
        .expect("DeleteVolume");
    drop(driver);
    // snapcsi's log line names the method that ran.
    let log = std::fs::read_to_string(dir.join("driver.log")).unwrap_or_default();
    let method = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["rpc"] == "GetMetadataDelta")
        .find_map(|v| v["method"].as_str().map(str::to_owned));
    if method.is_none() && kind == Kind::Snapcsi {
        eprintln!("no method in the snapcsi log; its lines about streams:");
        for line in log.lines().filter(|l| l.contains("streamed")) {
            eprintln!("  {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Sample {
        method,
        size,
        kind,
        seconds,
        bytes_read,
        tuples: tuples.len(),
        reported,
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= GIB => format!("{:.2} GiB", b as f64 / GIB as f64),
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b => format!("{b} B"),
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    println!(
        "delta bench: GetMetadataDelta after {} MiB rewritten (1 MiB pieces) on top of {} MiB \
         written; snapcsi {} vs csi-driver-host-path v1.18.0 ({}); file system under {}",
        args.changed_mib,
        args.base_mib,
        env!("CARGO_PKG_VERSION"),
        args.hostpath.display(),
        args.dir.display()
    );
    let mut samples = Vec::new();
    for &gib in &args.sizes_gib {
        for kind in [Kind::Snapcsi, Kind::Hostpath] {
            let s = measure(kind, &args, gib * GIB).await;
            println!(
                "  {:>4} GiB  {:<9}  {:>10.4} s (median of {})  read {:>10}  {:>5} tuples  {} reported{}",
                gib,
                kind.name(),
                median(&s.seconds),
                s.seconds.len(),
                human(s.bytes_read),
                s.tuples,
                human(s.reported),
                s.method
                    .as_deref()
                    .map(|m| format!("  (method {m})"))
                    .unwrap_or_default()
            );
            samples.push(s);
        }
    }
    let time = |kind: Kind, size: u64| {
        samples
            .iter()
            .find(|s| s.kind == kind && s.size == size)
            .map(|s| median(&s.seconds))
            .expect("sample")
    };
    let (small, large) = (
        args.sizes_gib[0] * GIB,
        *args.sizes_gib.last().expect("a size") * GIB,
    );
    for &gib in &args.sizes_gib {
        let size = gib * GIB;
        println!(
            "  ratio at {gib} GiB: host-path / snapcsi = {:.0}x",
            time(Kind::Hostpath, size) / time(Kind::Snapcsi, size)
        );
    }
    let flat = time(Kind::Snapcsi, large) / time(Kind::Snapcsi, small);
    let speedup = time(Kind::Hostpath, large) / time(Kind::Snapcsi, large);
    println!(
        "  snapcsi time at {} GiB / at {} GiB = {flat:.2} (host-path: {:.2})",
        large / GIB,
        small / GIB,
        time(Kind::Hostpath, large) / time(Kind::Hostpath, small)
    );
    if args.smoke {
        println!("delta bench: smoke run, answers checked, no goal check");
        return;
    }
    let met = flat < 3.0 && speedup >= 100.0;
    println!(
        "delta bench: goal (snapcsi flat within 3x, >= 100x host-path at {} GiB): {}",
        large / GIB,
        if met { "met" } else { "NOT met" }
    );
    if !met {
        std::process::exit(1);
    }
}
