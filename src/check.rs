//! `snapcsi check-config --config FILE`: parse the config, build and authenticate every named
//! backend, and print one clear OK / PROBLEM line per backend with its capabilities and API
//! version. Exit 0 when every backend is fine, 1 when any is not, 2 when the file itself is
//! wrong.

use crate::backend::Capabilities;
use crate::backend::registry::build_instance;
use crate::config::FileConfig;
use std::io::Write;
use std::path::Path;

/// What `check-config` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every backend answered.
    AllOk,
    /// At least one backend has a problem.
    Problems(usize),
    /// The file cannot be used at all.
    BadFile,
}

fn describe(caps: &Capabilities) -> String {
    let mut out = Vec::new();
    for (on, name) in [
        (caps.create_delete_volume, "volumes"),
        (caps.create_delete_snapshot, "snapshots"),
        (caps.restore_snapshot, "restore"),
        (caps.clone_volume, "clone"),
        (caps.expand_volume, "expand"),
        (caps.get_capacity, "capacity"),
        (caps.group_snapshot, "group snapshots"),
        (caps.snapshot_metadata, "changed block tracking"),
        (caps.attach, "attach"),
        (caps.zones, "zones"),
    ] {
        if on {
            out.push(name);
        }
    }
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(", ")
    }
}

/// Checks the config file at `path`, writing one line per backend to `out`.
pub async fn check(path: &Path, out: &mut impl Write) -> std::io::Result<Verdict> {
    let file = path.display().to_string();
    let config = match FileConfig::load(path) {
        Ok(config) => config,
        Err(e) => {
            writeln!(out, "PROBLEM {e}")?;
            return Ok(Verdict::BadFile);
        }
    };
    let mut problems = 0;
    for (name, table) in &config.backends {
        let kind = table.get("type").and_then(|v| v.as_str()).unwrap_or("?");
        let backend = match build_instance(&file, &config, name, table) {
            Ok(backend) => backend,
            Err(e) => {
                problems += 1;
                writeln!(out, "PROBLEM backend {name} ({kind}): {e}")?;
                continue;
            }
        };
        let version = backend
            .api_version()
            .or_else(|| {
                table
                    .get("api_version")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "-".to_owned());
        match backend.health().await {
            Ok(()) => writeln!(
                out,
                "OK      backend {name} ({kind}): api version {version}; capabilities: {}",
                describe(&backend.capabilities())
            )?,
            Err(e) => {
                problems += 1;
                writeln!(out, "PROBLEM backend {name} ({kind}): {e}")?;
            }
        }
    }
    Ok(if problems == 0 {
        Verdict::AllOk
    } else {
        Verdict::Problems(problems)
    })
}
