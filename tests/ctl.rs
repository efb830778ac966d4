//! `snapcsi ctl` as a user runs it: the real binary against a running driver (snapcsi here;
//! csi-driver-host-path too when `HOSTPATH_PLUGIN` points at its binary), checking output and
//! exit codes.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_snapcsi");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_socket(socket: &Path) {
    for _ in 0..300 {
        if socket.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{} never appeared", socket.display());
}

fn ctl(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["ctl", "--endpoint", endpoint])
        .args(args)
        .output()
        .expect("run snapcsi ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(endpoint: &str, args: &[&str]) -> Value {
    let mut full = vec!["--output", "json"];
    full.extend_from_slice(args);
    let (code, stdout, stderr) = ctl(endpoint, &full);
    assert_eq!(code, 0, "ctl {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The same session against any driver: create, snapshot, list, get, restore, delete.
fn session(endpoint: &str, volume_size: &str) {
    let volume = json(
        endpoint,
        &["volume", "create", "ctl-vol", "--size", volume_size],
    );
    let volume_id = volume["volume_id"].as_str().expect("volume_id").to_owned();
    let snapshot = json(
        endpoint,
        &[
            "snapshot", "create", &volume_id, "--name", "ctl-snap", "--wait",
        ],
    );
    let snapshot_id = snapshot["snapshot_id"]
        .as_str()
        .expect("snapshot_id")
        .to_owned();
    assert_eq!(snapshot["ready_to_use"], true);
    assert_eq!(snapshot["source_volume_id"], volume_id.as_str());

    let listed = json(endpoint, &["snapshot", "list", "--volume", &volume_id]);
    assert!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .any(|s| s["snapshot_id"] == snapshot_id.as_str())
    );
    let got = json(endpoint, &["snapshot", "get", &snapshot_id]);
    assert_eq!(got["snapshot_id"], snapshot_id.as_str());

    let (code, table, _) = ctl(endpoint, &["snapshot", "list"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("SNAPSHOT"), "table header: {table}");
    assert!(table.contains(&snapshot_id));

    let restored = json(
        endpoint,
        &["restore", &snapshot_id, "--name", "ctl-restored"],
    );
    assert_eq!(
        restored["content_source"]["snapshot_id"],
        snapshot_id.as_str()
    );
    let restored_id = restored["volume_id"].as_str().expect("id").to_owned();

    // Exit codes scripts can rely on: 10 + the gRPC code.
    let (code, _, stderr) = ctl(endpoint, &["snapshot", "get", "does-not-exist"]);
    assert_eq!(code, 15, "NOT_FOUND must exit 15: {stderr}");
    let (code, _, stderr) = ctl(endpoint, &["snapshot", "create", &volume_id, "--name", ""]);
    assert_eq!(code, 13, "INVALID_ARGUMENT must exit 13: {stderr}");

    json(endpoint, &["snapshot", "delete", &snapshot_id]);
    json(endpoint, &["volume", "delete", &restored_id]);
    json(endpoint, &["volume", "delete", &volume_id]);
    let left = json(endpoint, &["snapshot", "list"]);
    assert!(
        left.as_array()
            .expect("array")
            .iter()
            .all(|s| s["snapshot_id"] != snapshot_id.as_str())
    );
}

#[test]
fn ctl_against_snapcsi() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let _server = Server(
        Command::new(BIN)
            .args([
                "serve",
                "--backend",
                "memory",
                "--mode",
                "controller",
                "--endpoint",
                &endpoint,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start snapcsi"),
    );
    wait_for_socket(&socket);
    let info = json(&endpoint, &["info"]);
    assert_eq!(info["name"], "snapcsi.dev");
    session(&endpoint, "64Mi");

    // Usage errors exit 2; an unreachable driver exits 1.
    let (code, _, _) = ctl(&endpoint, &["volume", "frobnicate"]);
    assert_eq!(code, 2);
    let (code, _, stderr) = ctl("unix:///nonexistent/csi.sock", &["info"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot reach the driver"), "{stderr}");
}

#[test]
fn ctl_against_hostpath() {
    // tests/run.sh builds csi-driver-host-path from shared/peers (tests/tools/hostpath.sh) and
    // sets HOSTPATH_PLUGIN; by hand: HOSTPATH_PLUGIN=$(tests/tools/hostpath.sh) cargo test ...
    let require = std::env::var("SNAPCSI_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    let skip = |why: &str| {
        assert!(!require, "SNAPCSI_REQUIRE_PEERS=1 but {why}");
        eprintln!("SKIPPED ctl_against_hostpath: {why}");
    };
    let plugin = match std::env::var("HOSTPATH_PLUGIN") {
        Ok(p) if !p.is_empty() => p,
        _ => return skip("HOSTPATH_PLUGIN is not set (tests/tools/hostpath.sh builds it)"),
    };
    if !rustix::process::geteuid().is_root() {
        return skip("host-path needs root");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("hp.sock");
    let endpoint = format!("unix://{}", socket.display());
    let state = dir.path().join("state");
    let _server = Server(
        Command::new(plugin)
            .arg(format!("--endpoint={endpoint}"))
            .arg("--nodeid=ctl-node")
            .arg(format!("--statedir={}", state.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hostpathplugin"),
    );
    wait_for_socket(&socket);
    let info = json(&endpoint, &["info"]);
    assert_eq!(info["name"], "hostpath.csi.k8s.io");
    session(&endpoint, "1Mi");
}
