//! Table 1: snapshot and restore against volume size, on XFS with reflink and on ext4, with
//! the data written through each driver's own node path; and snapshots taken while a writer
//! is active (success, the writer's longest stall).

use crate::driver::{self, Running, Variant};
use crate::scratch::{FsKind, ScratchFs, unmount_under};
use crate::util::{self, Spread, fmt_spread, fmt_spread_ms, print_table, ratio};
use crate::{Config, rotate};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The class parameter that takes a snapshot without freezing (crash-consistent).
pub const CRASH_CONSISTENT: (&str, &str) = ("freeze", "false");

/// What one snapshot-and-restore repetition measured.
#[derive(Default)]
struct Sample {
    snapshot_ms: Vec<f64>,
    restore_ms: Vec<f64>,
    disk_mib: Vec<f64>,
    cpu_s: Vec<f64>,
    failures: Vec<String>,
}

/// A writer repetition.
#[derive(Default)]
struct WriterSample {
    snapshot_ms: Vec<f64>,
    ok: usize,
    tried: usize,
    stall_ms: Vec<f64>,
    control_stall_ms: Vec<f64>,
    failures: Vec<String>,
}

/// Fills `path` with `bytes` of data that compresses about 2:1 (each 4 KiB block: 2 KiB of
/// pseudo-random bytes, then 2 KiB of zeros) and syncs it.
fn write_data(path: &Path, bytes: u64, seed: u64) -> Result<(), String> {
    let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut state = seed | 1;
    let mut chunk = vec![0u8; MIB as usize];
    let mut written = 0;
    while written < bytes {
        for block in chunk.chunks_mut(4096) {
            for word in block[..2048].chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
            }
        }
        let n = (bytes - written).min(MIB) as usize;
        file.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        written += n as u64;
    }
    file.sync_all().map_err(|e| e.to_string())
}

/// A thread writing 64 KiB every 2 ms (32 MiB/s) over a 256 MiB region of a file, timing
/// each write.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, Duration)>>,
}

impl Writer {
    fn start(path: PathBuf) -> Result<Writer, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let block = vec![0x5au8; 64 << 10];
            let region = 256 * MIB;
            let mut offset = 0;
            let mut samples = Vec::new();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                if file.write_all_at(&block, offset).is_err() {
                    break;
                }
                samples.push((t, t.elapsed()));
                offset = (offset + block.len() as u64) % region;
                next += Duration::from_millis(2);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            samples
        });
        Ok(Writer { stop, handle })
    }

    fn finish(self) -> Vec<(Instant, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// The longest write that overlapped `[from, to]`, in ms.
fn longest_stall(samples: &[(Instant, Duration)], from: Instant, to: Instant) -> f64 {
    samples
        .iter()
        .filter(|(t, d)| *t <= to && *t + *d >= from)
        .map(|(_, d)| util::ms(*d))
        .fold(0.0, f64::max)
}

struct Setup {
    driver: Running,
    published: driver::Published,
}

async fn snapshot_once(
    setup: &Setup,
    fs: &Path,
    name: &str,
    sample: &mut Sample,
) -> Result<(), String> {
    let d = &setup.driver;
    let used0 = util::fs_used_bytes(fs);
    let cpu0 = d.cpu_seconds();
    let t = Instant::now();
    let snap = driver::snapshot_until_ready(d, name, &setup.published.volume_id, &[]).await;
    let took = t.elapsed();
    let cpu1 = d.cpu_seconds();
    let snap = match snap {
        Ok(s) => s,
        Err(status) => {
            let message = status.message().lines().next().unwrap_or_default();
            sample
                .failures
                .push(format!("{:?}: {message}", status.code()));
            return Ok(());
        }
    };
    let used1 = util::fs_used_bytes(fs);
    sample.snapshot_ms.push(util::ms(took));
    sample.cpu_s.push(cpu1 - cpu0);
    sample
        .disk_mib
        .push((used1 as f64 - used0 as f64) / MIB as f64);
    let size = u64::try_from(snap.size_bytes).unwrap_or(0);
    let t = Instant::now();
    let restored = driver::create_volume(
        d,
        &format!("{name}-restored"),
        size,
        Some(&snap.snapshot_id),
    )
    .await?;
    sample.restore_ms.push(util::ms(t.elapsed()));
    driver::delete_volume(d, &restored.volume_id).await?;
    driver::delete_snapshot(d, &snap.snapshot_id).await?;
    Ok(())
}

async fn snapshot_with_writer(
    setup: &Setup,
    name: &str,
    parameters: &[(&str, &str)],
    sample: &mut WriterSample,
) -> Result<(), String> {
    let writer = Writer::start(setup.published.target.join("writer.dat"))?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let from = Instant::now();
    let snap =
        driver::snapshot_until_ready(&setup.driver, name, &setup.published.volume_id, parameters)
            .await;
    let to = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = writer.finish();
    sample.tried += 1;
    sample.stall_ms.push(longest_stall(&samples, from, to));
    sample.control_stall_ms.push(longest_stall(
        &samples,
        from - Duration::from_millis(500),
        from,
    ));
    match snap {
        Ok(s) => {
            sample.ok += 1;
            sample.snapshot_ms.push(util::ms(to - from));
            driver::delete_snapshot(&setup.driver, &s.snapshot_id).await?;
        }
        Err(status) => {
            let message: String = status
                .message()
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(120)
                .collect();
            sample
                .failures
                .push(format!("{:?}: {message}", status.code()));
        }
    }
    Ok(())
}

pub async fn run(cfg: &Config) -> Result<Value, String> {
    let variants: Vec<Variant> = cfg
        .variants
        .iter()
        .filter(|v| !v.label.ends_with("/memory"))
        .cloned()
        .collect();
    let mut result = serde_json::Map::new();
    for kind in [FsKind::XfsReflink, FsKind::Ext4] {
        let load_start = util::loadavg();
        let mount = cfg.work.join(format!("t1-{}", kind.name()));
        let fs = ScratchFs::create(kind, &cfg.disk_dir, &mount, 256 * GIB)?;
        let mounts = cfg.work.join(format!("t1-{}-mnt", kind.name()));
        let outcome = run_on(cfg, &variants, &fs, &mounts).await;
        unmount_under(&mounts);
        drop(fs);
        let (table, writers) = outcome?;
        let load_end = util::loadavg();
        print_sizes(cfg, kind, &variants, &table, &load_start, &load_end);
        print_writers(cfg, kind, &writers, &load_start, &load_end);
        result.insert(
            kind.name().to_owned(),
            json!({
                "load_start": load_start, "load_end": load_end,
                "data_bytes": cfg.t1_data,
                "by_size": table_json(&table),
                "writer": writers_json(&writers),
            }),
        );
    }
    Ok(Value::Object(result))
}

type SizeTable = BTreeMap<(u64, String), Sample>;
type WriterTable = BTreeMap<String, WriterSample>;

async fn run_on(
    cfg: &Config,
    variants: &[Variant],
    fs: &ScratchFs,
    mounts: &Path,
) -> Result<(SizeTable, WriterTable), String> {
    let mut drivers = Vec::new();
    for v in variants {
        drivers.push(Running::start(v, &fs.mount.join(v.label.replace('@', "-"))).await?);
    }
    let mut table = SizeTable::new();
    let mut writers = WriterTable::new();
    let writer_size = cfg.t1_sizes[cfg.t1_sizes.len() / 2];
    for &size in &cfg.t1_sizes {
        let mut setups = Vec::new();
        for d in drivers.drain(..) {
            let vol = driver::create_volume(&d, &format!("t1-{size}"), size, None).await?;
            let published = driver::stage_and_publish(
                &d,
                &vol,
                &mounts.join(d.variant.label.replace('@', "-")),
            )
            .await?;
            write_data(
                &published.target.join("data"),
                cfg.t1_data,
                0x9e37_79b9_7f4a_7c15,
            )?;
            setups.push(Setup {
                driver: d,
                published,
            });
        }
        for rep in 0..cfg.reps {
            for i in rotate(setups.len(), rep) {
                let s = &setups[i];
                let name = format!("t1-{size}-{rep}");
                let sample = table
                    .entry((size, s.driver.variant.label.clone()))
                    .or_default();
                snapshot_once(s, &fs.mount, &name, sample).await?;
                eprintln!(
                    "  t1 {} {} GiB {}: rep {rep} done",
                    fs.kind.name(),
                    size as f64 / GIB as f64,
                    s.driver.variant.label
                );
            }
        }
        if size == writer_size {
            for rep in 0..cfg.reps {
                for i in rotate(setups.len(), rep) {
                    let s = &setups[i];
                    let label = s.driver.variant.label.clone();
                    let modes: Vec<(String, Vec<(&str, &str)>)> =
                        if s.driver.variant.is_hostpath() || label.contains('@') {
                            vec![(label.clone(), vec![])]
                        } else {
                            vec![
                                (format!("{label} (frozen, default)"), vec![]),
                                (format!("{label} (freeze=false)"), vec![CRASH_CONSISTENT]),
                            ]
                        };
                    for (row, params) in modes {
                        let sample = writers.entry(row).or_default();
                        snapshot_with_writer(
                            s,
                            &format!("t1-w-{rep}-{}", params.len()),
                            &params,
                            sample,
                        )
                        .await?;
                    }
                }
            }
        }
        for s in setups {
            driver::unpublish_and_unstage(&s.driver, &s.published).await?;
            driver::delete_volume(&s.driver, &s.published.volume_id).await?;
            drivers.push(s.driver);
        }
    }
    for d in drivers {
        d.stop();
    }
    Ok((table, writers))
}

fn size_label(size: u64) -> String {
    if size >= GIB {
        format!("{} GiB", size / GIB)
    } else {
        format!("{} MiB", size / MIB)
    }
}

fn print_sizes(
    cfg: &Config,
    kind: FsKind,
    variants: &[Variant],
    table: &SizeTable,
    load_start: &str,
    load_end: &str,
) {
    let baseline = variants
        .iter()
        .find(|v| v.is_hostpath())
        .map(|v| v.label.clone());
    let mut rows = Vec::new();
    for &size in &cfg.t1_sizes {
        let base = baseline
            .as_ref()
            .and_then(|b| table.get(&(size, b.clone())));
        for v in variants {
            let Some(s) = table.get(&(size, v.label.clone())) else {
                continue;
            };
            let snap = Spread::of(&s.snapshot_ms);
            let restore = Spread::of(&s.restore_ms);
            let (snap_ratio, restore_ratio) = match base {
                Some(b) if !v.is_hostpath() => (
                    ratio(Spread::of(&b.snapshot_ms), snap),
                    ratio(Spread::of(&b.restore_ms), restore),
                ),
                _ => ("".to_owned(), "".to_owned()),
            };
            rows.push(vec![
                size_label(size),
                v.label.clone(),
                fmt_spread_ms(snap),
                snap_ratio,
                fmt_spread_ms(restore),
                restore_ratio,
                fmt_spread(Spread::of(&s.disk_mib), 1),
                fmt_spread(Spread::of(&s.cpu_s), 2),
                if s.failures.is_empty() {
                    format!("{}/{}", s.snapshot_ms.len(), s.snapshot_ms.len())
                } else {
                    format!(
                        "{}/{} ({})",
                        s.snapshot_ms.len(),
                        s.snapshot_ms.len() + s.failures.len(),
                        s.failures[0]
                    )
                },
            ]);
        }
    }
    print_table(
        &format!(
            "Table 1 ({}): CreateSnapshot until ready and restore, {} written through the node \
             path; median [min–max] of {} reps; ratio = host-path / snapcsi (load {load_start} -> {load_end})",
            kind.name(),
            size_label(cfg.t1_data),
            cfg.reps
        ),
        &[
            "volume",
            "driver",
            "snapshot",
            "x faster",
            "restore",
            "x faster",
            "disk MiB/snap",
            "CPU s/snap",
            "ok",
        ],
        &rows,
    );
}

fn print_writers(
    cfg: &Config,
    kind: FsKind,
    writers: &WriterTable,
    load_start: &str,
    load_end: &str,
) {
    let rows: Vec<Vec<String>> = writers
        .iter()
        .map(|(label, s)| {
            vec![
                label.clone(),
                format!("{}/{}", s.ok, s.tried),
                fmt_spread_ms(Spread::of(&s.snapshot_ms)),
                fmt_spread_ms(Spread::of(&s.stall_ms)),
                fmt_spread_ms(Spread::of(&s.control_stall_ms)),
                s.failures.first().cloned().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &format!(
            "Table 1w ({}): snapshot of a published {} volume while a writer writes 32 MiB/s; \
             longest single write during the snapshot vs in the 500 ms before (load {load_start} -> {load_end})",
            kind.name(),
            size_label(cfg.t1_sizes[cfg.t1_sizes.len() / 2]),
        ),
        &[
            "driver",
            "ok",
            "snapshot",
            "writer stall",
            "stall without snapshot",
            "first failure",
        ],
        &rows,
    );
}

fn table_json(table: &SizeTable) -> Value {
    let rows: Vec<Value> = table
        .iter()
        .map(|((size, label), s)| {
            json!({
                "size_bytes": size, "driver": label,
                "snapshot_ms": Spread::of(&s.snapshot_ms).map(|x| x.json()),
                "restore_ms": Spread::of(&s.restore_ms).map(|x| x.json()),
                "disk_mib_per_snapshot": Spread::of(&s.disk_mib).map(|x| x.json()),
                "cpu_s_per_snapshot": Spread::of(&s.cpu_s).map(|x| x.json()),
                "failures": s.failures,
                "raw_snapshot_ms": s.snapshot_ms,
            })
        })
        .collect();
    Value::Array(rows)
}

fn writers_json(writers: &WriterTable) -> Value {
    let rows: Vec<Value> = writers
        .iter()
        .map(|(label, s)| {
            json!({
                "driver": label, "ok": s.ok, "tried": s.tried,
                "snapshot_ms": Spread::of(&s.snapshot_ms).map(|x| x.json()),
                "writer_stall_ms": Spread::of(&s.stall_ms).map(|x| x.json()),
                "control_stall_ms": Spread::of(&s.control_stall_ms).map(|x| x.json()),
                "failures": s.failures,
            })
        })
        .collect();
    Value::Array(rows)
}
