//! Spawning the Python simulators of tests/sims for integration tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running simulator; stopped (by its own pid) when dropped.
pub struct Sim {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    http: reqwest::Client,
}

impl Sim {
    /// Starts `tests/sims/<script>` with `args`. `None` (with the reason printed) when python3
    /// cannot run here; with `SNAPCSI_REQUIRE_PEERS=1` that is a failure instead.
    pub fn start(script: &str, args: &[&str]) -> Option<Sim> {
        let path = format!("{}/tests/sims/{script}", env!("CARGO_MANIFEST_DIR"));
        let spawned = Command::new("python3")
            .arg(&path)
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let reason = format!("cannot start python3 {path}: {e}");
                if std::env::var("SNAPCSI_REQUIRE_PEERS").as_deref() == Ok("1") {
                    panic!("{reason} (SNAPCSI_REQUIRE_PEERS=1)");
                }
                eprintln!("SKIPPED: {reason}");
                return None;
            }
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the simulator's first line");
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("{script} did not print LISTENING <port>: {line:?}")
            });
        Some(Sim {
            child,
            port,
            http: reqwest::Client::new(),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// POSTs `body` to the control endpoint `path` (e.g. `/_control`) and returns its JSON.
    pub async fn control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base()))
            .json(&body)
            .send()
            .await
            .expect("control call");
        assert!(
            response.status().is_success(),
            "control {path}: {}",
            response.status()
        );
        response.json().await.expect("control answer")
    }

    /// The simulator's call counters (`GET /_control`).
    pub async fn calls(&self, key: &str) -> u64 {
        let doc: serde_json::Value = self
            .http
            .get(format!("{}/_control", self.base()))
            .send()
            .await
            .expect("control call")
            .json()
            .await
            .expect("control answer");
        doc["calls"][key].as_u64().unwrap_or(0)
    }
}

/// Adds fault rules or a snapshot mode through a simulator's `/_faults` endpoint (the one
/// mechanism tests/sims/faults.py gives every simulator).
pub async fn faults(base: &str, body: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/_faults"))
        .json(&body)
        .send()
        .await
        .expect("fault control call");
    assert!(
        response.status().is_success(),
        "/_faults {body}: {}",
        response.status()
    );
}

/// Drops a simulator's fault rules, counters and snapshot mode.
pub async fn reset_faults(base: &str) {
    let response = reqwest::Client::new()
        .post(format!("{base}/_faults/reset"))
        .send()
        .await
        .expect("fault reset call");
    assert!(response.status().is_success(), "/_faults/reset");
}

/// The API requests a simulator saw since its last reset, as `METHOD /path` lines, and the
/// number of faults it fired.
pub async fn seen(base: &str) -> (Vec<String>, u64) {
    let doc: serde_json::Value = reqwest::get(format!("{base}/_faults"))
        .await
        .expect("fault stats call")
        .json()
        .await
        .expect("fault stats");
    let seen = doc["seen"]
        .as_array()
        .expect("seen")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    (seen, doc["fired"].as_u64().unwrap_or(0))
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
