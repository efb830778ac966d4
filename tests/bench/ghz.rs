//! One gRPC load client for every driver: ghz, run against the driver's unix socket with the
//! CSI proto file this repository pins.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where ghz and the proto are.
#[derive(Debug, Clone)]
pub struct Ghz {
    pub bin: PathBuf,
    pub proto_dir: PathBuf,
}

/// How much load.
#[derive(Debug, Clone)]
pub enum Amount {
    /// A fixed number of requests.
    Requests(u64),
    /// For this long (ghz syntax, e.g. "2s"), the first `skip` requests left out of the stats.
    Duration { length: String, skip: u64 },
}

/// What ghz measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub count: u64,
    pub rps: f64,
    /// Latency percentiles in ms (ghz: over every answer, errors included with
    /// `--count-errors`).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub total_s: f64,
    /// Answers by gRPC status name.
    pub statuses: BTreeMap<String, u64>,
    /// The first distinct error messages, for the log.
    pub errors: Vec<String>,
}

impl Report {
    pub fn ok_share(&self) -> f64 {
        let total: u64 = self.statuses.values().sum();
        if total == 0 {
            return 0.0;
        }
        *self.statuses.get("OK").unwrap_or(&0) as f64 / total as f64
    }
}

impl Ghz {
    /// Runs `method` ("csi.v1.Identity/Probe") with `data` (JSON; ghz templates such as
    /// `{{.RequestNumber}}` allowed) at `concurrency` over one connection.
    pub fn run(
        &self,
        socket: &Path,
        method: &str,
        data: &str,
        concurrency: u32,
        amount: &Amount,
    ) -> Result<Report, String> {
        let mut command = Command::new(&self.bin);
        command
            .arg("--insecure")
            .arg("--proto")
            .arg(self.proto_dir.join("csi.proto"))
            .arg("--import-paths")
            .arg(&self.proto_dir)
            .arg("--call")
            .arg(method)
            .arg("--data")
            .arg(data)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--connections")
            .arg("1")
            .arg("--count-errors")
            .arg("--timeout")
            .arg("60s")
            .arg("--format")
            .arg("json");
        match amount {
            Amount::Requests(n) => {
                command
                    .arg("--total")
                    .arg((*n).max(u64::from(concurrency)).to_string());
            }
            Amount::Duration { length, skip } => {
                // "wait": the requests in flight when the time is up are answered and
                // counted, not cut off (which ghz reports as UNAVAILABLE).
                command
                    .arg("--duration")
                    .arg(length)
                    .arg("--duration-stop")
                    .arg("wait")
                    .arg("--skipFirst")
                    .arg(skip.to_string());
            }
        }
        command.arg(format!("unix://{}", socket.display()));
        let out = command.output().map_err(|e| format!("ghz: {e}"))?;
        let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "ghz printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        parse(&report)
    }
}

fn parse(report: &Value) -> Result<Report, String> {
    let percentile = |p: u64| -> f64 {
        report["latencyDistribution"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["percentage"].as_u64() == Some(p)))
            .and_then(|e| e["latency"].as_f64())
            .map_or(f64::NAN, |ns| ns / 1e6)
    };
    let statuses: BTreeMap<String, u64> = report["statusCodeDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    if statuses.is_empty() {
        return Err(format!(
            "ghz answered no status: {}",
            report.to_string().chars().take(400).collect::<String>()
        ));
    }
    let errors = report["errorDistribution"]
        .as_object()
        .map(|m| m.keys().take(3).cloned().collect())
        .unwrap_or_default();
    Ok(Report {
        count: report["count"].as_u64().unwrap_or(0),
        rps: report["rps"].as_f64().unwrap_or(f64::NAN),
        p50_ms: percentile(50),
        p99_ms: percentile(99),
        total_s: report["total"].as_f64().map_or(f64::NAN, |ns| ns / 1e9),
        statuses,
        errors,
    })
}
