//! Table 4: footprint. Start to the first Probe answered ready (fresh, empty state), idle RSS
//! and threads one second later, and the size of the binary (as built, and stripped).

use crate::driver::Running;
use crate::util::{self, Spread, fmt_spread, fmt_spread_ms, print_table, ratio};
use crate::{Config, rotate};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
struct Sample {
    start_ms: Vec<f64>,
    rss_mib: Vec<f64>,
    threads: Vec<f64>,
}

/// (as built, stripped) sizes in MiB.
fn binary_sizes(bin: &std::path::Path, scratch: &std::path::Path) -> (f64, f64) {
    let size = |p: &std::path::Path| {
        std::fs::metadata(p).map_or(f64::NAN, |m| m.len() as f64 / (1 << 20) as f64)
    };
    let copy = scratch.join(format!(
        "stripped-{}",
        bin.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let stripped = std::fs::copy(bin, &copy)
        .ok()
        .and_then(|_| util::run("strip", &[&copy.display().to_string()]).ok())
        .map_or(f64::NAN, |_| size(&copy));
    let _ = std::fs::remove_file(&copy);
    (size(bin), stripped)
}

pub async fn run(cfg: &Config) -> Result<Value, String> {
    let load_start = util::loadavg();
    let mut samples: BTreeMap<String, Sample> = BTreeMap::new();
    for rep in 0..cfg.reps {
        for i in rotate(cfg.variants.len(), rep) {
            let v = &cfg.variants[i];
            let dir = cfg
                .work
                .join("t4")
                .join(format!("{}-{rep}", v.label.replace(['@', '/'], "-")));
            let d = Running::start(v, &dir).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let s = samples.entry(v.label.clone()).or_default();
            s.start_ms.push(util::ms(d.start_to_probe));
            s.rss_mib.push(d.rss_mib());
            s.threads.push(d.threads() as f64);
            d.stop();
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let load_end = util::loadavg();
    let base = cfg
        .variants
        .iter()
        .find(|v| v.is_hostpath())
        .and_then(|v| samples.get(&v.label));
    let base_bin = cfg
        .variants
        .iter()
        .find(|v| v.is_hostpath())
        .map(|v| binary_sizes(&v.bin, &cfg.work));
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for v in &cfg.variants {
        let Some(s) = samples.get(&v.label) else {
            continue;
        };
        let (built, stripped) = binary_sizes(&v.bin, &cfg.work);
        let start = Spread::of(&s.start_ms);
        let rss = Spread::of(&s.rss_mib);
        let threads = Spread::of(&s.threads);
        let (start_ratio, rss_ratio, bin_ratio) = match (base, base_bin) {
            (Some(b), Some((_, b_stripped))) if !v.is_hostpath() => (
                ratio(Spread::of(&b.start_ms), start),
                ratio(Spread::of(&b.rss_mib), rss),
                format!("{:.2}x", b_stripped / stripped),
            ),
            _ => (String::new(), String::new(), String::new()),
        };
        rows.push(vec![
            v.label.clone(),
            fmt_spread_ms(start),
            start_ratio,
            fmt_spread(rss, 1),
            rss_ratio,
            fmt_spread(threads, 0),
            format!("{built:.1}"),
            format!("{stripped:.1}"),
            bin_ratio,
        ]);
        out.push(json!({
            "driver": v.label,
            "start_to_probe_ms": start.map(|x| x.json()),
            "idle_rss_mib": rss.map(|x| x.json()),
            "threads": threads.map(|x| x.json()),
            "binary_mib": built, "binary_stripped_mib": stripped,
        }));
    }
    print_table(
        &format!(
            "Table 4: footprint, fresh state, median [min–max] of {} starts; ratios = host-path / snapcsi \
             (load {load_start} -> {load_end})",
            cfg.reps
        ),
        &[
            "driver",
            "start to Probe",
            "x",
            "idle RSS MiB",
            "x",
            "threads",
            "binary MiB",
            "stripped MiB",
            "x",
        ],
        &rows,
    );
    Ok(json!({"load_start": load_start, "load_end": load_end, "rows": out}))
}
