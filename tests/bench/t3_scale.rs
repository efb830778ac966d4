//! Table 3: scale. Snapshots created through ghz up to each checkpoint (10,000 and 100,000 in
//! the full run), then: creation rate, full paginated walks (page 1,000), per-page latency,
//! RSS before and after, restart time with that state, and the walk after the restart.
//! Both drivers keep their state on XFS in a tmpfs-backed file, so the table measures the
//! drivers' metadata paths rather than the disk's flush latency.

use crate::driver::{self, Running, Variant};
use crate::ghz::Amount;
use crate::scratch::{FsKind, ScratchFs};
use crate::util::{self, Spread, fmt_ms, fmt_spread_ms, percentile, print_table};
use crate::{Config, rotate};
use serde_json::{Value, json};
use std::path::PathBuf;

const WALK_PAGE: i32 = 1000;

#[derive(Default, Clone)]
struct Checkpoint {
    count: usize,
    skipped: Option<String>,
    create_rate: f64,
    create_failures: u64,
    rss_before: f64,
    rss_after_create: f64,
    rss_after_walks: f64,
    walk_ms: Vec<f64>,
    page_p50_ms: f64,
    page_p99_ms: f64,
    restart_ms: Vec<f64>,
    rss_after_restart: f64,
    walk_after_restart_ms: f64,
}

struct State {
    variant: Variant,
    dir: PathBuf,
    driver: Option<Running>,
    volume: String,
    created: usize,
    seconds_per_create: f64,
}

pub async fn run(cfg: &Config) -> Result<Value, String> {
    let load_start = util::loadavg();
    let variants: Vec<Variant> = cfg
        .variants
        .iter()
        .filter(|v| !v.label.ends_with("/memory"))
        .cloned()
        .collect();
    let shm = PathBuf::from("/dev/shm").join(format!("snapcsi-bench-{}", std::process::id()));
    let fs = ScratchFs::create(FsKind::XfsReflink, &shm, &cfg.work.join("t3"), 16 << 30)?;
    let result = run_on(cfg, &variants, &fs).await;
    drop(fs);
    let _ = std::fs::remove_dir_all(&shm);
    let table = result?;
    let load_end = util::loadavg();

    let mut rows = Vec::new();
    let mut out = Vec::new();
    for (label, cps) in &table {
        for cp in cps {
            if let Some(why) = &cp.skipped {
                rows.push(vec![
                    cp.count.to_string(),
                    label.clone(),
                    format!("skipped: {why}"),
                ]);
                out.push(json!({"driver": label, "snapshots": cp.count, "skipped": why}));
                continue;
            }
            let walk = Spread::of(&cp.walk_ms);
            let restart = Spread::of(&cp.restart_ms);
            rows.push(vec![
                cp.count.to_string(),
                label.clone(),
                format!("{:.0}/s", cp.create_rate),
                fmt_spread_ms(walk),
                format!("{} / {}", fmt_ms(cp.page_p50_ms), fmt_ms(cp.page_p99_ms)),
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    cp.rss_before, cp.rss_after_create, cp.rss_after_walks
                ),
                fmt_spread_ms(restart),
                format!("{:.1}", cp.rss_after_restart),
                fmt_ms(cp.walk_after_restart_ms),
            ]);
            out.push(json!({
                "driver": label, "snapshots": cp.count,
                "create_per_s": cp.create_rate, "create_failures": cp.create_failures,
                "rss_mib_before": cp.rss_before, "rss_mib_after_create": cp.rss_after_create,
                "rss_mib_after_walks": cp.rss_after_walks,
                "walk_ms": walk.map(|s| s.json()),
                "page_p50_ms": cp.page_p50_ms, "page_p99_ms": cp.page_p99_ms,
                "restart_to_probe_ms": restart.map(|s| s.json()),
                "rss_mib_after_restart": cp.rss_after_restart,
                "walk_after_restart_ms": cp.walk_after_restart_ms,
            }));
        }
    }
    print_table(
        &format!(
            "Table 3: scale (ghz creates at concurrency 16; walks of pages of {WALK_PAGE}, {} walks; \
             {} restarts; RSS in MiB) (load {load_start} -> {load_end})",
            cfg.reps, cfg.reps
        ),
        &[
            "snapshots",
            "driver",
            "create rate",
            "full walk",
            "page p50 / p99",
            "RSS idle / created / walked",
            "restart to Probe",
            "RSS restarted",
            "walk after restart",
        ],
        &rows,
    );
    Ok(json!({"load_start": load_start, "load_end": load_end, "rows": out}))
}

async fn run_on(
    cfg: &Config,
    variants: &[Variant],
    fs: &ScratchFs,
) -> Result<Vec<(String, Vec<Checkpoint>)>, String> {
    let mut states = Vec::new();
    for v in variants {
        let dir = fs.mount.join(v.label.replace('@', "-"));
        let driver = Running::start(v, &dir).await?;
        let vol = driver::create_volume(&driver, "t3-vol", 16 << 20, None).await?;
        states.push(State {
            variant: v.clone(),
            dir,
            driver: Some(driver),
            volume: vol.volume_id,
            created: 0,
            seconds_per_create: 0.0,
        });
    }
    let mut table: Vec<(String, Vec<Checkpoint>)> = variants
        .iter()
        .map(|v| (v.label.clone(), Vec::new()))
        .collect();
    for (round, &target) in cfg.t3_counts.iter().enumerate() {
        for i in rotate(states.len(), round) {
            let cp = checkpoint(cfg, &mut states[i], target, round).await?;
            eprintln!("  t3 {} {} done", target, states[i].variant.label);
            table[i].1.push(cp);
        }
    }
    for s in states {
        if let Some(d) = s.driver {
            d.stop();
        }
    }
    Ok(table)
}

async fn checkpoint(
    cfg: &Config,
    state: &mut State,
    target: usize,
    round: usize,
) -> Result<Checkpoint, String> {
    let mut cp = Checkpoint {
        count: target,
        ..Default::default()
    };
    let wanted = target.saturating_sub(state.created);
    let projected = wanted as f64 * state.seconds_per_create;
    if projected > cfg.t3_budget_s {
        cp.skipped = Some(format!(
            "{wanted} more creates at the measured {:.1} ms each would take about {:.0} s \
             (budget {:.0} s)",
            state.seconds_per_create * 1e3,
            projected,
            cfg.t3_budget_s
        ));
        return Ok(cp);
    }
    let Some(d) = state.driver.take() else {
        return Err("driver not running".to_owned());
    };
    cp.rss_before = d.rss_mib();
    let data = json!({
        "name": format!("t3-{round}-{{{{.RequestNumber}}}}"),
        "source_volume_id": state.volume,
    })
    .to_string();
    let report = cfg.ghz.run(
        &d.socket,
        "csi.v1.Controller/CreateSnapshot",
        &data,
        16,
        &Amount::Requests(wanted as u64),
    )?;
    let ok = *report.statuses.get("OK").unwrap_or(&0);
    cp.create_failures = report.statuses.values().sum::<u64>() - ok;
    if cp.create_failures > 0 {
        eprintln!(
            "  t3 {}: {} creates failed: {:?}",
            state.variant.label, cp.create_failures, report.errors
        );
    }
    state.created += ok as usize;
    cp.create_rate = report.count as f64 / report.total_s;
    state.seconds_per_create = report.total_s / report.count.max(1) as f64;
    cp.rss_after_create = d.rss_mib();
    let mut pages = Vec::new();
    for _ in 0..cfg.reps {
        let (items, took, page_times) = driver::walk_snapshots(&d, WALK_PAGE).await?;
        if items < state.created {
            return Err(format!(
                "{}: the walk found {items} snapshots, {} were created",
                state.variant.label, state.created
            ));
        }
        cp.walk_ms.push(util::ms(took));
        pages.extend(page_times.iter().map(|t| util::ms(*t)));
    }
    pages.sort_by(f64::total_cmp);
    cp.page_p50_ms = percentile(&pages, 50.0);
    cp.page_p99_ms = percentile(&pages, 99.0);
    cp.rss_after_walks = d.rss_mib();
    d.stop();
    let mut restarted = None;
    for _ in 0..cfg.reps {
        if let Some(r) = restarted.take() {
            Running::stop(r);
        }
        let r = Running::start(&state.variant, &state.dir).await?;
        cp.restart_ms.push(util::ms(r.start_to_probe));
        restarted = Some(r);
    }
    let d = restarted.ok_or("no restart")?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    cp.rss_after_restart = d.rss_mib();
    let (_, took, _) = driver::walk_snapshots(&d, WALK_PAGE).await?;
    cp.walk_after_restart_ms = util::ms(took);
    state.driver = Some(d);
    Ok(cp)
}
