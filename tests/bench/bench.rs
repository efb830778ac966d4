//! snapcsi's side-by-side benchmark suite against csi-driver-host-path (the baseline), run by
//! `tests/bench/run.sh`, which builds both drivers and the load client and passes their paths.
//! Every table runs every driver in one run, repetitions interleaved (the order rotates each
//! repetition), so that a change in the machine's load hits every driver alike; each table
//! prints the load average at its start and end. Results are printed as tables and written as
//! JSON to `--out`.
//!
//!   bench --snapcsi BIN --hostpath BIN --ghz BIN [--before BIN] [--smoke] [--tables 1,2,3,4,5]
//!         [--out DIR] [--work DIR] [--disk-dir DIR] [--reps N] [--data-mib N]
//!         [--t3-counts N,N]

mod driver;
mod ghz;
mod scratch;
mod t1_snapshot;
mod t2_overhead;
mod t3_scale;
mod t4_footprint;
mod t5_cloud;
mod util;

use driver::{Kind, Variant};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// What to run and at which size.
pub struct Config {
    pub smoke: bool,
    pub reps: usize,
    pub repo: PathBuf,
    pub work: PathBuf,
    /// Where table 1's loop-backed file systems keep their backing files (a real disk).
    pub disk_dir: PathBuf,
    pub variants: Vec<Variant>,
    pub ghz: ghz::Ghz,
    pub tables: BTreeSet<u32>,
    pub t1_sizes: Vec<u64>,
    pub t1_data: u64,
    pub t2_concurrency: Vec<u32>,
    pub t2_duration: String,
    pub t3_counts: Vec<usize>,
    pub t3_budget_s: f64,
}

/// Indices `0..n` starting at `rep % n`: each repetition runs the drivers in another order.
pub fn rotate(n: usize, rep: usize) -> Vec<usize> {
    (0..n).map(|i| (i + rep) % n.max(1)).collect()
}

struct Args {
    smoke: bool,
    snapcsi: Option<PathBuf>,
    before: Option<PathBuf>,
    hostpath: Option<PathBuf>,
    ghz: Option<PathBuf>,
    out: PathBuf,
    work: Option<PathBuf>,
    disk_dir: Option<PathBuf>,
    tables: Option<String>,
    reps: Option<usize>,
    data_mib: Option<u64>,
    t3_counts: Option<Vec<usize>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        smoke: false,
        snapcsi: None,
        before: None,
        hostpath: None,
        ghz: None,
        out: PathBuf::from("results/bench"),
        work: None,
        disk_dir: None,
        tables: None,
        reps: None,
        data_mib: None,
        t3_counts: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--smoke" => args.smoke = true,
            "--snapcsi" => args.snapcsi = Some(value()?.into()),
            "--before" => args.before = Some(value()?.into()),
            "--hostpath" => args.hostpath = Some(value()?.into()),
            "--ghz" => args.ghz = Some(value()?.into()),
            "--out" => args.out = value()?.into(),
            "--work" => args.work = Some(value()?.into()),
            "--disk-dir" => args.disk_dir = Some(value()?.into()),
            "--tables" => args.tables = Some(value()?),
            "--data-mib" => {
                args.data_mib = Some(value()?.parse().map_err(|e| format!("--data-mib: {e}"))?)
            }
            "--t3-counts" => {
                args.t3_counts = Some(
                    value()?
                        .split(',')
                        .map(|n| n.trim().parse().map_err(|e| format!("--t3-counts: {e}")))
                        .collect::<Result<_, _>>()?,
                )
            }
            "--reps" => args.reps = Some(value()?.parse().map_err(|e| format!("--reps: {e}"))?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn config(args: Args, work: PathBuf) -> Result<Config, String> {
    let need = |p: Option<PathBuf>, flag: &str| p.ok_or_else(|| format!("{flag} is required"));
    let snapcsi = need(args.snapcsi, "--snapcsi")?;
    let hostpath = need(args.hostpath, "--hostpath")?;
    let mut variants = vec![Variant {
        label: "snapcsi".into(),
        kind: Kind::SnapcsiLocal,
        bin: snapcsi.clone(),
    }];
    if let Some(before) = &args.before {
        variants.push(Variant {
            label: "snapcsi@before".into(),
            kind: Kind::SnapcsiLocal,
            bin: before.clone(),
        });
    }
    variants.push(Variant {
        label: "snapcsi/memory".into(),
        kind: Kind::SnapcsiMemory,
        bin: snapcsi,
    });
    if let Some(before) = args.before {
        variants.push(Variant {
            label: "snapcsi@before/memory".into(),
            kind: Kind::SnapcsiMemory,
            bin: before,
        });
    }
    variants.push(Variant {
        label: "host-path".into(),
        kind: Kind::Hostpath,
        bin: hostpath,
    });
    let tables = match args.tables {
        None => (1..=5).collect(),
        Some(list) => list
            .split(',')
            .map(|t| {
                t.trim()
                    .parse::<u32>()
                    .map_err(|e| format!("--tables {t:?}: {e}"))
            })
            .collect::<Result<_, _>>()?,
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let smoke = args.smoke;
    Ok(Config {
        smoke,
        reps: args.reps.unwrap_or(if smoke { 1 } else { 3 }),
        ghz: ghz::Ghz {
            bin: need(args.ghz, "--ghz")?,
            proto_dir: repo.join("proto"),
        },
        repo,
        disk_dir: args.disk_dir.unwrap_or_else(|| work.join("disk")),
        work,
        variants,
        tables,
        t1_sizes: if smoke {
            vec![64 * MIB, 128 * MIB]
        } else {
            vec![2 * GIB, 10 * GIB, 50 * GIB]
        },
        t1_data: args
            .data_mib
            .map_or(if smoke { 8 * MIB } else { GIB }, |m| m * MIB),
        t2_concurrency: if smoke { vec![1, 16] } else { vec![1, 16, 64] },
        t2_duration: "2s".into(),
        t3_counts: args.t3_counts.unwrap_or_else(|| {
            if smoke {
                vec![100, 300]
            } else {
                vec![10_000, 100_000]
            }
        }),
        t3_budget_s: if smoke { 60.0 } else { 240.0 },
    })
}

async fn run(cfg: &Config) -> Value {
    let mut tables = serde_json::Map::new();
    for t in &cfg.tables {
        let started = std::time::Instant::now();
        eprintln!("== table {t}");
        let result = match t {
            1 => t1_snapshot::run(cfg).await,
            2 => t2_overhead::run(cfg).await,
            3 => t3_scale::run(cfg).await,
            4 => t4_footprint::run(cfg).await,
            5 => t5_cloud::run(cfg).await,
            other => Err(format!("there is no table {other}")),
        };
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("== table {t}: {seconds:.0} s");
        let value = match result {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("seconds".into(), json!(seconds));
                }
                v
            }
            Err(e) => {
                println!("\nTable {t}: FAILED: {e}");
                json!({"error": e, "seconds": seconds})
            }
        };
        tables.insert(format!("table{t}"), value);
    }
    Value::Object(tables)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let out_dir = args.out.clone();
    let temp = match &args.work {
        Some(_) => None,
        None => match tempfile::Builder::new().prefix("snapcsi-bench-").tempdir() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("bench: temp dir: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let work = args
        .work
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_path_buf()))
        .unwrap_or_default();
    let cfg = match config(args, work) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let uname = rustix::system::uname();
    let started = std::time::SystemTime::now();
    let load_start = util::loadavg();
    println!(
        "snapcsi benchmarks ({}): {} on {} {}, {} cores; load average {load_start}",
        if cfg.smoke {
            "smoke, toy sizes"
        } else {
            "full"
        },
        cfg.variants
            .iter()
            .map(|v| format!("{} = {}", v.label, v.bin.display()))
            .collect::<Vec<_>>()
            .join(", "),
        uname.sysname().to_string_lossy(),
        uname.release().to_string_lossy(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let tables = run(&cfg).await;
    scratch::unmount_under(&cfg.work);
    let load_end = util::loadavg();
    let failed: Vec<String> = tables
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| v.get("error").is_some())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let seconds = started.elapsed().map_or(0.0, |d| d.as_secs_f64());
    let report = json!({
        "smoke": cfg.smoke,
        "started_unix": started.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "seconds": seconds,
        "kernel": uname.release().to_string_lossy(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "load_start": load_start, "load_end": load_end,
        "reps": cfg.reps,
        "drivers": cfg.variants.iter().map(|v| json!({"label": v.label, "bin": v.bin})).collect::<Vec<_>>(),
        "tables": tables,
    });
    let stamp = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let file = out_dir.join(format!(
        "bench-{}{stamp}.json",
        if cfg.smoke { "smoke-" } else { "" }
    ));
    let written = std::fs::create_dir_all(&out_dir).and_then(|_| {
        std::fs::write(
            &file,
            serde_json::to_vec_pretty(&report).unwrap_or_default(),
        )
    });
    println!();
    match written {
        Ok(()) => println!("results: {}", file.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", file.display()),
    }
    println!("total {seconds:.0} s; load average {load_start} -> {load_end}");
    drop(temp);
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench: failed tables: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
