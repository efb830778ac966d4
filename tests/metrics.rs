//! The Prometheus endpoint: scraped after a run, the numbers moved. Its own test binary, so the
//! process-wide counters see only this test's calls.

mod support;

use snapcsi::proto as csi;
use support::Driver;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_rpcs_codes_and_snapshots() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let driver = Driver::start(&[
        "--backend",
        "memory",
        "--mode",
        "controller",
        "--metrics-addr",
        &addr,
    ])
    .await;
    let mut c = driver.controller();
    let volume = c
        .create_volume(csi::CreateVolumeRequest {
            name: "pvc-metrics".into(),
            volume_capabilities: vec![csi::VolumeCapability {
                access_mode: Some(csi::volume_capability::AccessMode { mode: 1 }),
                access_type: Some(csi::volume_capability::AccessType::Block(
                    csi::volume_capability::BlockVolume {},
                )),
            }],
            ..Default::default()
        })
        .await
        .expect("volume")
        .into_inner()
        .volume
        .expect("volume");
    for _ in 0..3 {
        c.create_snapshot(csi::CreateSnapshotRequest {
            name: "snap-metrics".into(),
            source_volume_id: volume.volume_id.clone(),
            ..Default::default()
        })
        .await
        .expect("snapshot");
    }
    let missing = c
        .get_snapshot(csi::GetSnapshotRequest {
            snapshot_id: "nope".into(),
            ..Default::default()
        })
        .await;
    assert!(missing.is_err());

    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert_eq!(
        sample(
            &body,
            r#"snapcsi_rpc_requests_total{method="CreateSnapshot",backend="memory",code="Ok"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &body,
            r#"snapcsi_rpc_requests_total{method="GetSnapshot",backend="memory",code="NotFound"}"#
        ),
        1.0
    );
    // Three calls, one snapshot: idempotent repeats are not creations.
    assert_eq!(
        sample(
            &body,
            r#"snapcsi_snapshots_created_total{backend="memory"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &body,
            r#"snapcsi_rpc_duration_seconds_count{method="CreateSnapshot",backend="memory",code="Ok"}"#
        ),
        3.0
    );
    assert_eq!(sample(&body, "snapcsi_in_flight_operations "), 0.0);
    let not_found = reqwest::get(format!("http://{addr}/other"))
        .await
        .expect("get");
    assert_eq!(not_found.status().as_u16(), 404);
}

/// Every family's HELP and TYPE lines are there from the first scrape, before any RPC: a
/// dashboard or alert written against them finds them on a driver that has served nothing yet.
/// The real binary, so no other test's calls are in its (process-wide) registry.
#[test]
fn every_family_is_exposed_before_the_first_rpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("csi.sock");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_snapcsi"))
        .args(["serve", "--backend", "memory", "--mode", "controller"])
        .arg("--endpoint")
        .arg(format!("unix://{}", socket.display()))
        .args(["--metrics-addr", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start snapcsi");
    let mut body = None;
    for _ in 0..250 {
        if let Ok(mut stream) = std::net::TcpStream::connect(&addr) {
            use std::io::{Read, Write};
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("send");
            let mut text = String::new();
            stream.read_to_string(&mut text).expect("read");
            body = Some(text);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let body = body.expect("the metrics endpoint never answered");
    for (family, kind) in [
        ("snapcsi_rpc_requests", "counter"),
        ("snapcsi_rpc_duration_seconds", "histogram"),
        ("snapcsi_cloud_requests", "counter"),
        ("snapcsi_cloud_request_duration_seconds", "histogram"),
        ("snapcsi_snapshots_created", "counter"),
        ("snapcsi_snapshots_deleted", "counter"),
        ("snapcsi_in_flight_operations", "gauge"),
    ] {
        assert!(
            body.contains(&format!("\n# TYPE {family} {kind}\n")),
            "no TYPE line for {family} before the first RPC:\n{body}"
        );
        assert!(
            body.contains(&format!("\n# HELP {family} ")),
            "no HELP line for {family} before the first RPC:\n{body}"
        );
    }
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
}
