//! Table 2: driver overhead. Probe, GetPluginInfo, an idempotent CreateSnapshot (a name that
//! exists) and a ListSnapshots page of 100, through ghz at several concurrencies, every
//! driver in turn, repetitions interleaved.

use crate::driver::{self, Running};
use crate::ghz::{Amount, Report};
use crate::util::{self, Spread, fmt_spread, fmt_spread_ms, print_table};
use crate::{Config, rotate};
use serde_json::{Value, json};
use std::collections::BTreeMap;

struct Rpc {
    name: &'static str,
    method: &'static str,
}

const RPCS: [Rpc; 4] = [
    Rpc {
        name: "Probe",
        method: "csi.v1.Identity/Probe",
    },
    Rpc {
        name: "GetPluginInfo",
        method: "csi.v1.Identity/GetPluginInfo",
    },
    Rpc {
        name: "CreateSnapshot (exists)",
        method: "csi.v1.Controller/CreateSnapshot",
    },
    Rpc {
        name: "ListSnapshots (100)",
        method: "csi.v1.Controller/ListSnapshots",
    },
];

/// Snapshots each driver holds, so that a page of 100 is full.
const LISTED: usize = 120;

pub async fn run(cfg: &Config) -> Result<Value, String> {
    let load_start = util::loadavg();
    let mut drivers = Vec::new();
    let mut volumes = Vec::new();
    for v in &cfg.variants {
        let d = Running::start(
            v,
            &cfg.work.join("t2").join(v.label.replace(['@', '/'], "-")),
        )
        .await?;
        let vol = driver::create_volume(&d, "t2-vol", 16 << 20, None).await?;
        driver::snapshot_until_ready(&d, "t2-exists", &vol.volume_id, &[])
            .await
            .map_err(|s| format!("{}: CreateSnapshot: {}", v.label, s.message()))?;
        for i in 0..LISTED {
            driver::snapshot_until_ready(&d, &format!("t2-list-{i}"), &vol.volume_id, &[])
                .await
                .map_err(|s| format!("{}: CreateSnapshot: {}", v.label, s.message()))?;
        }
        volumes.push(vol.volume_id);
        drivers.push(d);
    }
    let amount = if cfg.smoke {
        Amount::Requests(40)
    } else {
        Amount::Duration {
            length: cfg.t2_duration.clone(),
            skip: 0,
        }
    };
    // (rpc, concurrency, driver) -> reports
    let mut reports: BTreeMap<(usize, u32, String), Vec<Report>> = BTreeMap::new();
    for (r, rpc) in RPCS.iter().enumerate() {
        for &c in &cfg.t2_concurrency {
            for rep in 0..cfg.reps {
                for i in rotate(drivers.len(), rep) {
                    let d: &Running = &drivers[i];
                    let data = match r {
                        2 => {
                            json!({"name": "t2-exists", "source_volume_id": volumes[i]}).to_string()
                        }
                        3 => json!({"max_entries": 100}).to_string(),
                        _ => "{}".to_owned(),
                    };
                    let amount = match &amount {
                        Amount::Duration { length, .. } => Amount::Duration {
                            length: length.clone(),
                            skip: u64::from(c) * 4,
                        },
                        other => other.clone(),
                    };
                    let report = cfg.ghz.run(&d.socket, rpc.method, &data, c, &amount)?;
                    reports
                        .entry((r, c, d.variant.label.clone()))
                        .or_default()
                        .push(report);
                }
            }
            eprintln!("  t2 {} c={c} done", rpc.name);
        }
    }
    let load_end = util::loadavg();
    for d in drivers {
        d.stop();
    }

    let baseline = cfg
        .variants
        .iter()
        .find(|v| v.is_hostpath())
        .map(|v| v.label.clone());
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for (r, rpc) in RPCS.iter().enumerate() {
        for &c in &cfg.t2_concurrency {
            let base_rps = baseline
                .as_ref()
                .and_then(|b| reports.get(&(r, c, b.clone())))
                .and_then(|rs| Spread::of(&rs.iter().map(|x| x.rps).collect::<Vec<_>>()));
            for v in &cfg.variants {
                let Some(rs) = reports.get(&(r, c, v.label.clone())) else {
                    continue;
                };
                let p50 = Spread::of(&rs.iter().map(|x| x.p50_ms).collect::<Vec<_>>());
                let p99 = Spread::of(&rs.iter().map(|x| x.p99_ms).collect::<Vec<_>>());
                let rps = Spread::of(&rs.iter().map(|x| x.rps).collect::<Vec<_>>());
                let ok = Spread::of(&rs.iter().map(|x| 100.0 * x.ok_share()).collect::<Vec<_>>());
                let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
                for x in rs {
                    for (k, n) in &x.statuses {
                        *statuses.entry(k.clone()).or_default() += n;
                    }
                }
                let vs = match (base_rps, rps) {
                    (Some(b), Some(o)) if !v.is_hostpath() && b.median > 0.0 => {
                        format!("{:.2}x", o.median / b.median)
                    }
                    _ => String::new(),
                };
                rows.push(vec![
                    rpc.name.to_owned(),
                    c.to_string(),
                    v.label.clone(),
                    fmt_spread_ms(p50),
                    fmt_spread_ms(p99),
                    fmt_spread(rps, 0),
                    vs,
                    fmt_spread(ok, 0),
                    statuses
                        .iter()
                        .filter(|(k, _)| k.as_str() != "OK")
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]);
                out.push(json!({
                    "rpc": rpc.name, "concurrency": c, "driver": v.label,
                    "p50_ms": p50.map(|s| s.json()), "p99_ms": p99.map(|s| s.json()),
                    "rps": rps.map(|s| s.json()), "ok_percent": ok.map(|s| s.json()),
                    "statuses": statuses,
                    "errors": rs.iter().flat_map(|x| x.errors.clone()).take(3).collect::<Vec<_>>(),
                }));
            }
        }
    }
    print_table(
        &format!(
            "Table 2: driver overhead through ghz (one connection), {} per run, median [min–max] of {} reps; \
             RPS vs host-path = snapcsi RPS / host-path RPS (load {load_start} -> {load_end})",
            match &amount {
                Amount::Requests(n) => format!("{n} requests"),
                Amount::Duration { length, .. } => length.clone(),
            },
            cfg.reps
        ),
        &[
            "RPC",
            "conc",
            "driver",
            "p50",
            "p99",
            "RPS",
            "RPS vs host-path",
            "OK %",
            "other answers",
        ],
        &rows,
    );
    Ok(json!({"load_start": load_start, "load_end": load_end, "rows": out}))
}
