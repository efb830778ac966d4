//! The Deltacloud backend against its strict simulator (tests/sims/deltacloud.py): the shared
//! conformance suite (volumes, snapshots, restore, paging), and the behaviours particular to
//! Deltacloud: state words, name lookup through the description marker across a restart,
//! drivers that drop descriptions, faults, credentials, the list cap.

mod support;
use support::sim;

use snapcsi::backend::deltacloud::{DeltacloudBackend, DeltacloudConfig};
use snapcsi::backend::{Backend, CreateSnapshot, ErrorKind, PageRequest, VolumeId, conformance};
use snapcsi::http::HttpSettings;
use snapcsi::ops::{Ops, SizeRange};
use snapcsi::secret::{Secret, Secrets};
use std::collections::BTreeMap;
use std::sync::Arc;
use support::sim::Sim;
use tonic::Code;

const USER: &str = "dc-user";
const PASSWORD: &str = "dc-password-test";

fn start() -> Option<Sim> {
    Sim::start(
        "deltacloud.py",
        &[
            "--username",
            USER,
            "--password",
            PASSWORD,
            "--driver",
            "ec2",
            "--provider",
            "us-east-1",
            "--realm",
            "us-east-1a",
        ],
    )
}

fn config(sim: &Sim, password: &str) -> DeltacloudConfig {
    DeltacloudConfig {
        endpoint: format!("{}/api", sim.base()),
        username: USER.into(),
        password: Secret::new(password),
        driver: Some("ec2".into()),
        provider: Some("us-east-1".into()),
        realm_id: Some("us-east-1a".into()),
        max_list_items: 10_000,
        http: HttpSettings {
            backoff_base_ms: 10,
            backoff_cap_ms: 50,
            ..HttpSettings::default()
        },
    }
}

fn backend_with(config: &DeltacloudConfig) -> Arc<dyn Backend> {
    Arc::new(DeltacloudBackend::new(config, Some("test-cluster".into())).expect("backend"))
}

fn backend(sim: &Sim) -> Arc<dyn Backend> {
    backend_with(&config(sim, PASSWORD))
}

fn request(name: &str, volume: &VolumeId) -> CreateSnapshot {
    CreateSnapshot {
        name: name.into(),
        source_volume_id: volume.clone(),
        parameters: BTreeMap::new(),
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, snapcsi::error::Error>) -> Code {
    r.expect_err("expected an error").code()
}

async fn new_volume(ops: &Ops, name: &str) -> VolumeId {
    ops.create_volume(
        name,
        SizeRange {
            required: 1 << 30,
            limit: 0,
        },
        None,
        BTreeMap::new(),
        0,
    )
    .await
    .expect("create volume")
    .id
}

#[tokio::test]
async fn deltacloud_conforms() {
    let Some(sim) = start() else { return };
    let passed = conformance::run(backend(&sim), "dc").await;
    assert_eq!(passed, Ok(9), "{passed:?}");
}

#[tokio::test]
async fn deltacloud_conforms_with_slow_upper_case_states() {
    let Some(sim) = start() else { return };
    sim.control(
        "/_control",
        serde_json::json!({"pending_seconds": 0.3, "ready_state": "COMPLETED",
                           "pending_state": "PENDING"}),
    )
    .await;
    let passed = conformance::run(backend(&sim), "dc-slow").await;
    assert_eq!(passed, Ok(9), "{passed:?}");
}

#[tokio::test]
async fn pending_then_ready_and_a_restart_never_duplicates() {
    let Some(sim) = start() else { return };
    let first = Ops::new(backend(&sim), 1 << 30);
    let volume = new_volume(&first, "v").await;
    sim.control("/_control", serde_json::json!({"pending_seconds": 0.5}))
        .await;
    let pending = first
        .create_snapshot(request("s", &volume))
        .await
        .expect("create");
    assert!(!pending.ready, "ready while the cloud says pending");
    assert_eq!(pending.size_bytes, 1 << 30);
    // A new process finds the snapshot through the description marker.
    let restarted = Ops::new(backend(&sim), 1 << 30);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let done = restarted
        .create_snapshot(request("s", &volume))
        .await
        .expect("repeat");
    assert_eq!(done.id, pending.id);
    assert!(done.ready);
    assert_eq!(sim.calls("POST /api/storage_snapshots").await, 1);
    // Same for volumes.
    let again = new_volume(&restarted, "v").await;
    assert_eq!(again, volume);
    assert_eq!(sim.calls("POST /api/storage_volumes").await, 1);
}

#[tokio::test]
async fn an_error_state_is_a_clear_error() {
    let Some(sim) = start() else { return };
    let ops = Ops::new(backend(&sim), 1 << 30);
    let volume = new_volume(&ops, "v").await;
    sim::faults(&sim.base(), serde_json::json!({"snapshots": "error"})).await;
    let err = ops
        .create_snapshot(request("broken", &volume))
        .await
        .expect_err("error state");
    assert!(err.to_string().contains("\"error\""), "{err}");
    // The sidecar's next call finds it by name and gets the same clear error, no duplicate.
    let again = ops
        .create_snapshot(request("broken", &volume))
        .await
        .expect_err("still error");
    assert!(again.to_string().contains("state"), "{again}");
    assert_eq!(sim.calls("POST /api/storage_snapshots").await, 1);
}

#[tokio::test]
async fn a_driver_that_drops_descriptions_is_refused_without_leftovers() {
    let Some(sim) = start() else { return };
    let ops = Ops::new(backend(&sim), 1 << 30);
    let volume = new_volume(&ops, "v").await;
    sim.control("/_control", serde_json::json!({"keep_descriptions": false}))
        .await;
    assert_eq!(
        code(ops.create_snapshot(request("s", &volume)).await),
        Code::Unimplemented
    );
    let (left, _) = ops
        .list_snapshots(None, &Default::default(), 0, "")
        .await
        .expect("list");
    assert!(
        left.is_empty(),
        "the unfindable snapshot was left: {left:?}"
    );
}

#[tokio::test]
async fn faults_credentials_driver_and_cap() {
    let Some(sim) = start() else { return };
    let ops = Ops::new(backend(&sim), 1 << 30);
    let volume = new_volume(&ops, "v").await;
    // Reads are retried through 503 and 502.
    sim::faults(
        &sim.base(),
        serde_json::json!({"rules": [{"fault": "status", "status": 503}, {"fault": "status", "status": 502}]}),
    )
    .await;
    ops.get_volume(&volume).await.expect("retried");
    // A create is sent once: a 500 (backend error) is UNAVAILABLE, and the retry works.
    sim::faults(
        &sim.base(),
        serde_json::json!({"rules": [{"fault": "status", "status": 500}]}),
    )
    .await;
    assert_eq!(
        code(ops.create_snapshot(request("f", &volume)).await),
        Code::Unavailable
    );
    ops.create_snapshot(request("f", &volume))
        .await
        .expect("second try");
    // A slow server beyond the timeout is UNAVAILABLE.
    let mut slow = config(&sim, PASSWORD);
    slow.http.timeout_seconds = 1;
    slow.http.max_attempts = 1;
    sim::faults(
        &sim.base(),
        serde_json::json!({"rules": [{"fault": "timeout", "seconds": 1.5}]}),
    )
    .await;
    let err = backend_with(&slow).health().await.expect_err("timeout");
    assert_eq!(err.kind, ErrorKind::Unavailable);

    // Wrong password: UNAUTHENTICATED without the password in the message.
    let wrong = backend_with(&config(&sim, "not-the-password-xyz"));
    let err = wrong.health().await.expect_err("refused");
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(!err.message.contains("not-the-password-xyz"));
    let scoped = wrong
        .with_secrets(&Secrets::from_map(
            [
                ("username".to_owned(), USER.to_owned()),
                ("password".to_owned(), PASSWORD.to_owned()),
            ]
            .into(),
        ))
        .expect("secrets")
        .expect("scoped");
    scoped.health().await.expect("request secrets work");
    // Another driver than the server runs: the server's 400 is INVALID_ARGUMENT.
    let mut other = config(&sim, PASSWORD);
    other.driver = Some("openstack".into());
    let err = backend_with(&other).health().await.expect_err("bad driver");
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("openstack"), "{}", err.message);

    // Deltacloud has no paging: past max_list_items the backend says so.
    new_volume(&ops, "w").await;
    let mut capped = config(&sim, PASSWORD);
    capped.max_list_items = 1;
    let err = backend_with(&capped)
        .list_volumes(&PageRequest {
            cursor: None,
            max_entries: 10,
        })
        .await
        .expect_err("cap");
    assert!(err.message.contains("max_list_items"), "{}", err.message);

    // Not offered: clone and expand.
    let caps = ops.backend().capabilities();
    assert!(caps.restore_snapshot && !caps.clone_volume && !caps.expand_volume);
}

/// Issue 15: the entry point answers without credentials, so a health check that only reads it
/// calls a backend with a refused password healthy. Health makes one authenticated call, and
/// CSI Probe (called every few seconds by the liveness probe and the sidecars) reuses a recent
/// answer instead of calling the cloud each time.
#[tokio::test]
async fn health_needs_the_password_and_probe_reuses_a_recent_answer() {
    use snapcsi::csi::identity::IdentityService;
    use snapcsi::proto::ProbeRequest;
    use snapcsi::proto::identity_server::Identity;

    let Some(sim) = start() else { return };
    let wrong = backend_with(&config(&sim, "not-the-password-xyz"));
    let err = wrong
        .health()
        .await
        .expect_err("a refused password is not healthy");
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{}", err.message);
    assert!(!err.message.contains("not-the-password-xyz"));

    let good = backend(&sim);
    good.health().await.expect("healthy");
    assert_eq!(
        sim.calls("GET /api/realms").await,
        1,
        "one authenticated call"
    );
    // A configured realm the cloud does not have is found by the same call.
    let mut elsewhere = config(&sim, PASSWORD);
    elsewhere.realm_id = Some("eu-west-9z".into());
    let err = backend_with(&elsewhere)
        .health()
        .await
        .expect_err("unknown realm");
    assert!(err.message.contains("eu-west-9z"), "{}", err.message);
    assert!(err.message.contains("us-east-1a"), "{}", err.message);

    // Probe: ten in a row, and ten at once, make one cloud call.
    let before = sim.calls("GET /api/realms").await;
    let identity = Arc::new(IdentityService::new("test".into(), Some(good), None));
    for _ in 0..10 {
        let ready = identity
            .probe(tonic::Request::new(ProbeRequest {}))
            .await
            .expect("probe")
            .into_inner()
            .ready;
        assert_eq!(ready, Some(true));
    }
    let together = (0..10).map(|_| {
        let identity = Arc::clone(&identity);
        tokio::spawn(async move { identity.probe(tonic::Request::new(ProbeRequest {})).await })
    });
    for probe in together {
        probe.await.expect("join").expect("probe");
    }
    assert_eq!(
        sim.calls("GET /api/realms").await - before,
        1,
        "probes reuse the answer"
    );
    // A refused password makes Probe fail, naming the refusal.
    let refused = IdentityService::new("test".into(), Some(wrong), None);
    let status = refused
        .probe(tonic::Request::new(ProbeRequest {}))
        .await
        .expect_err("not ready");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("unauthenticated") || status.message().contains("401"),
        "{}",
        status.message()
    );
}

/// Issue 15: two objects of one CSI name (a create re-sent after its answer was lost) answer
/// the oldest, every time. EC2's ids are random, so the smallest id is not the oldest.
#[tokio::test]
async fn two_objects_of_one_name_answer_the_oldest_not_the_smallest_id() {
    let Some(sim) = start() else { return };
    let marker = |name: &str| format!(r#"snapcsi:{{"n":"{name}","c":"test-cluster","g":1}}"#);
    sim.control(
        "/_control/seed",
        serde_json::json!({"volumes": [
            {"id": "vol-f00d0001", "description": marker("dc-dup-vol"),
             "created": "Mon Jan 05 10:00:00 UTC 2026"},
            {"id": "vol-0bad0002", "description": marker("dc-dup-vol"),
             "created": "Mon Jan 05 10:00:07 UTC 2026"},
        ]}),
    )
    .await;
    sim.control(
        "/_control/seed",
        serde_json::json!({"snapshots": [
            {"id": "snap-f00d0001", "volume_id": "vol-f00d0001",
             "description": marker("dc-dup-snap"), "created": "Mon Jan 05 10:01:00 UTC 2026"},
            {"id": "snap-0bad0002", "volume_id": "vol-f00d0001",
             "description": marker("dc-dup-snap"), "created": "Mon Jan 05 10:01:09 UTC 2026"},
        ]}),
    )
    .await;
    let backend = backend(&sim);
    for _ in 0..2 {
        let volume = backend
            .find_volume_by_name("dc-dup-vol")
            .await
            .expect("find")
            .expect("found");
        assert_eq!(volume.id.as_str(), "vol-f00d0001", "not the oldest volume");
        let snapshot = backend
            .find_snapshot_by_name("dc-dup-snap")
            .await
            .expect("find")
            .expect("found");
        assert_eq!(
            snapshot.id.as_str(),
            "snap-f00d0001",
            "not the oldest snapshot"
        );
    }
}
