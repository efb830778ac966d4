//! README stays true: its commands and config examples are run here as written, with only
//! the socket path, data directory and `<id>` placeholders filled in.

use serde_json::Value;
use snapcsi::backend::registry::build_instance;
use snapcsi::config::FileConfig;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_snapcsi");
const README: &str = include_str!("../README.md");

/// The bodies of the README's fenced blocks of one language.
fn blocks(lang: &str) -> Vec<String> {
    let fence = format!("```{lang}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in README.lines() {
        match &mut current {
            None if line.trim_start() == fence => current = Some(String::new()),
            Some(body) if line.trim_start() == "```" => {
                out.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_run_command_and_the_ctl_session_work_as_written() {
    let sh = blocks("sh");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("snapcsi.sock");
    let data = dir.path().join("snapcsi-data");

    // "Run the driver": the README's `cargo run --release -- serve ...`, as the built binary.
    let run = sh
        .iter()
        .flat_map(|b| b.lines())
        .find(|l| l.contains("cargo run --release -- serve"))
        .expect("README gives the run command");
    let args: Vec<String> = run
        .split("-- ")
        .nth(1)
        .expect("arguments after --")
        .split_whitespace()
        .map(|a| {
            a.replace(
                "unix:///tmp/snapcsi.sock",
                &format!("unix://{}", socket.display()),
            )
            .replace("./snapcsi-data", &data.display().to_string())
        })
        .collect();
    let mut child = Command::new(BIN)
        .args(&args)
        .args(["--mode", "controller"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the driver");
    let stderr = child.stderr.take().expect("stderr");
    let _server = Server(child);
    let mut said_socket = false;
    for line in BufReader::new(stderr).lines().take(50) {
        let line = line.expect("log line");
        if line.contains("serving CSI") && line.contains(&socket.display().to_string()) {
            said_socket = true;
            break;
        }
    }
    assert!(said_socket, "the driver must print the socket it serves on");

    // The ctl session, line by line, ids carried from one command to the next.
    let session = sh
        .iter()
        .find(|b| b.contains("snapcsi ctl --endpoint"))
        .expect("README shows a ctl session");
    let endpoint = format!("unix://{}", socket.display());
    let (mut volume_id, mut snapshot_id) = (String::new(), String::new());
    let mut ran = 0;
    for line in session.lines().filter(|l| l.starts_with("snapcsi ctl")) {
        let line = line
            .replace("unix:///tmp/snapcsi.sock", &endpoint)
            .replace("<volume-id>", &volume_id)
            .replace("<snapshot-id>", &snapshot_id);
        let mut words: Vec<&str> = line.split_whitespace().skip(2).collect();
        words.retain(|w| *w != "--output" && *w != "json");
        let out = Command::new(BIN)
            .args(["ctl", "--output", "json"])
            .args(&words)
            .env("CSI_ENDPOINT", &endpoint)
            .output()
            .expect("run ctl");
        assert!(
            out.status.success(),
            "README command failed: {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
        if let Some(id) = answer["volume_id"].as_str()
            && volume_id.is_empty()
        {
            volume_id = id.to_owned();
        }
        if let Some(id) = answer["snapshot_id"].as_str() {
            snapshot_id = id.to_owned();
        }
        ran += 1;
    }
    assert!(ran >= 7, "only {ran} ctl lines ran");
}

#[test]
fn every_config_example_is_valid() {
    let data = tempfile::tempdir().expect("tempdir");
    // A real CA certificate for the examples' `ca_bundle` keys.
    let ca = data.path().join("ca.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=readme",
        ])
        .arg("-keyout")
        .arg(data.path().join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut checked = 0;
    for block in blocks("toml") {
        // Only the data directory and CA bundle paths are changed, so that no example writes
        // outside the test and every file an example names exists.
        let text: String = block
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("data_dir") {
                    format!("data_dir = \"{}\"", data.path().display())
                } else if l.trim_start().starts_with("ca_bundle") {
                    format!("ca_bundle = \"{}\"", ca.display())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = FileConfig::parse("README.md", &text)
            .unwrap_or_else(|e| panic!("README example does not parse: {e}\n{text}"));
        for (name, table) in &config.backends {
            build_instance("README.md", &config, name, table)
                .unwrap_or_else(|e| panic!("README example backend {name}: {e}\n{text}"));
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} example backends found");
}
