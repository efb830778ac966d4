//! Secrets never reach a log line or an error message: each cloud backend runs a full cycle
//! against its simulator with the driver logging at `trace`, once with good credentials and
//! once with a wrong secret, and the captured output and every gRPC message are searched for
//! the secret values.

mod support;
use support::sim;

use snapcsi::proto as csi;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_snapcsi");

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver(dir: &Path, config: &str, log: &Path) -> Driver {
    let config_path = dir.join("snapcsi.toml");
    std::fs::write(&config_path, config).expect("config");
    let socket = dir.join("csi.sock");
    let _ = std::fs::remove_file(&socket);
    let child = Command::new(BIN)
        .args([
            "serve",
            "--mode",
            "controller",
            "--log-level",
            "trace",
            "--config",
        ])
        .arg(&config_path)
        .arg("--endpoint")
        .arg(format!("unix://{}", socket.display()))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start snapcsi");
    let mut driver = Driver(child);
    for _ in 0..500 {
        if socket.exists() {
            return driver;
        }
        if let Ok(Some(status)) = driver.0.try_wait() {
            panic!(
                "driver exited early ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("driver socket never appeared");
}

/// Every call a sidecar makes, successful and failing; answers every gRPC message seen.
async fn cycle(socket: &Path) -> Vec<String> {
    let channel = support::connect(socket).await;
    let mut c = csi::controller_client::ControllerClient::new(channel.clone());
    let mut identity = csi::identity_client::IdentityClient::new(channel);
    let mut messages = Vec::new();
    let mut note = |r: Result<String, tonic::Status>| match r {
        Ok(text) => messages.push(text),
        Err(status) => messages.push(status.message().to_owned()),
    };
    note(
        identity
            .probe(csi::ProbeRequest {})
            .await
            .map(|r| format!("{:?}", r.into_inner())),
    );
    let volume = c
        .create_volume(csi::CreateVolumeRequest {
            name: "secret-test-vol".into(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 1 << 30,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![csi::VolumeCapability {
                access_mode: Some(csi::volume_capability::AccessMode { mode: 1 }),
                access_type: Some(csi::volume_capability::AccessType::Mount(Default::default())),
            }],
            ..Default::default()
        })
        .await;
    let volume_id = volume
        .as_ref()
        .ok()
        .and_then(|r| r.get_ref().volume.as_ref().map(|v| v.volume_id.clone()))
        .unwrap_or_else(|| "missing-volume".to_owned());
    note(volume.map(|r| format!("{:?}", r.into_inner())));
    for _ in 0..3 {
        let snapshot = c
            .create_snapshot(csi::CreateSnapshotRequest {
                name: "secret-test-snap".into(),
                source_volume_id: volume_id.clone(),
                ..Default::default()
            })
            .await;
        let id = snapshot
            .as_ref()
            .ok()
            .and_then(|r| r.get_ref().snapshot.as_ref().map(|s| s.snapshot_id.clone()));
        note(snapshot.map(|r| format!("{:?}", r.into_inner())));
        if let Some(id) = id {
            note(
                c.list_snapshots(csi::ListSnapshotsRequest::default())
                    .await
                    .map(|r| format!("{:?}", r.into_inner())),
            );
            note(
                c.get_snapshot(csi::GetSnapshotRequest {
                    snapshot_id: id.clone(),
                    ..Default::default()
                })
                .await
                .map(|r| format!("{:?}", r.into_inner())),
            );
            note(
                c.delete_snapshot(csi::DeleteSnapshotRequest {
                    snapshot_id: id,
                    ..Default::default()
                })
                .await
                .map(|_| String::new()),
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    note(
        c.list_snapshots(csi::ListSnapshotsRequest {
            starting_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .map(|r| format!("{:?}", r.into_inner())),
    );
    note(
        c.delete_volume(csi::DeleteVolumeRequest {
            volume_id,
            ..Default::default()
        })
        .await
        .map(|_| String::new()),
    );
    messages
}

/// `basic_user`: for HTTP basic auth, the user name, so that the base64 of `user:secret` (what
/// an `Authorization` header carries) is searched for too.
async fn no_leak(
    name: &str,
    script: &str,
    sim_args: &[&str],
    config: impl Fn(u16, &str) -> String,
    secret: &str,
    basic_user: Option<&str>,
) {
    let Some(sim) = sim::Sim::start(script, sim_args) else {
        return;
    };
    for (label, used) in [
        ("good", secret.to_owned()),
        ("wrong", format!("{secret}-but-wrong")),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("driver.log");
        let driver = start_driver(dir.path(), &config(sim.port, &used), &log);
        let messages = cycle(&dir.path().join("csi.sock")).await;
        drop(driver);
        let output = std::fs::read_to_string(&log).expect("log");
        assert!(
            output.contains("TRACE"),
            "{name}: nothing was logged at trace level"
        );
        let mut forbidden = vec![used.clone()];
        if let Some(user) = basic_user {
            use base64::Engine;
            let pair = format!("{user}:{used}");
            forbidden.push(base64::engine::general_purpose::STANDARD.encode(pair));
        }
        for text in messages.iter().chain(std::iter::once(&output)) {
            for value in &forbidden {
                assert!(
                    !text.contains(value.as_str()),
                    "{name} ({label} credentials): the secret leaked:\n{text}"
                );
            }
        }
        if name == "scp" && label == "wrong" {
            // The refusal is logged once on our side with the cloud's request id (the
            // simulator answers with an X-Request-Id of the form req-<hex>).
            let refusals: Vec<&str> = output
                .lines()
                .filter(|l| l.contains("the cloud refused a request"))
                .collect();
            assert!(!refusals.is_empty(), "scp: no refusal was logged");
            assert!(
                refusals.iter().all(|l| l.contains("req-")),
                "scp: a refusal was logged without the request id: {refusals:?}"
            );
        }
        println!(
            "{name} ({label} credentials): {} bytes of trace output and {} answers, no secret",
            output.len(),
            messages.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_secret_key_never_leaks() {
    let secret = "scp-secret-Zq8t1LmKx93";
    no_leak(
        "scp",
        "scp.py",
        &["--credential", &format!("leak-ak:{secret}")],
        |port, sk| format!("[backends.scp]\ntype = \"scp\"\nendpoint = \"http://127.0.0.1:{port}\"\naccess_key = \"leak-ak\"\nsecret_key = \"{sk}\"\n"),
        secret,
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softlayer_api_key_never_leaks() {
    let secret = "sl-apikey-7Hq2Wd0pXv5";
    no_leak(
        "softlayer",
        "softlayer.py",
        &["--username", "SL-leak", "--api-key", secret, "--volumes", "1"],
        |port, key| format!("[backends.sl]\ntype = \"softlayer\"\nendpoint = \"http://127.0.0.1:{port}/rest/v3.1\"\nusername = \"SL-leak\"\napi_key = \"{key}\"\n"),
        secret,
        Some("SL-leak"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltacloud_password_never_leaks() {
    let secret = "dc-password-Rt6yU1oP4";
    no_leak(
        "deltacloud",
        "deltacloud.py",
        &["--username", "leak", "--password", secret],
        |port, pw| format!("[backends.dc]\ntype = \"deltacloud\"\nendpoint = \"http://127.0.0.1:{port}/api\"\nusername = \"leak\"\npassword = \"{pw}\"\ndriver = \"ec2\"\nprovider = \"us-east-1\"\nrealm_id = \"us-east-1a\"\n"),
        secret,
        Some("leak"),
    )
    .await;
}
