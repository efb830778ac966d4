//! Faults from the cloud (issue 8), one table run against every cloud backend's simulator
//! (SCP, SoftLayer, Deltacloud, Cinder v2), through `Ops` and `error.rs` as the gRPC services
//! see them. Every fault is injected with the one mechanism the simulators share
//! (tests/sims/faults.py). For each row the test checks the gRPC code, how many requests the
//! simulator saw on the faulted route (retries only for idempotent calls, and bounded), how
//! long the call took (the backoff is capped, also against a server's Retry-After), and what
//! was logged: a refused call exactly one "the cloud refused a request" line carrying the
//! cloud's request id, a transport failure one "request failed; giving up" line, a success
//! neither.
//! Then the object faults: a snapshot stuck in `creating`, one that ends in `error`, and one
//! left in `error_deleting` by its delete, followed by a delete that succeeds.

mod support;
use support::sim;

use snapcsi::backend::{CreateSnapshot, SnapshotId, VolumeId};
use snapcsi::ops::{Ops, SizeRange};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::cinder_peer::Peer;
use support::sim::Sim;
use tonic::Code;

/// HTTP settings of every backend here: a 1 s timeout, 3 attempts, backoff capped at 100 ms.
const HTTP: &str =
    "timeout_seconds = 1\nmax_attempts = 3\nbackoff_base_ms = 20\nbackoff_cap_ms = 100\n";
const ATTEMPTS: usize = 3;
/// How long a create with an unknown outcome is waited for before another is sent (the
/// driver's `--create-grace-seconds`, 60 s by default).
const GRACE: Duration = Duration::from_secs(1);

fn ops(backend: Arc<dyn snapcsi::backend::Backend>) -> Ops {
    Ops::new(backend, 1 << 30).with_intents(snapcsi::ops::intents::Intents::in_memory(GRACE))
}

// ------------------------------------------------------------------ log capture ---

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Takes what was logged since the last call.
    fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.0.lock().expect("log buffer"));
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

// ---------------------------------------------------------------------- clouds ---

/// One backend against its simulator, with a ready source volume.
struct Cloud {
    name: &'static str,
    sim: Sim,
    ops: Ops,
    volume: VolumeId,
    /// The request-id header the simulator sends (from the cloud's seed where it names one).
    request_id_header: &'static str,
    /// Path prefix of a GET of the source volume.
    volume_path: String,
    /// Path prefix of the POST that creates a snapshot of it.
    create_path: String,
    /// Snapshot modes the cloud has (see tests/sims/faults.py).
    modes: &'static [&'static str],
    /// Where the admin `os-reset_status` action is sent, and with which token (Cinder).
    admin: Option<(String, String)>,
    /// The real server behind the fault proxy, if any; stopped after the proxy.
    _peer: Option<Peer>,
}

fn settings() -> snapcsi::http::HttpSettings {
    toml::from_str(HTTP).expect("http settings")
}

async fn ready_volume(ops: &Ops, name: &str) -> VolumeId {
    let range = SizeRange {
        required: 1 << 30,
        limit: 0,
    };
    let id = ops
        .create_volume(name, range, None, BTreeMap::new(), 0)
        .await
        .expect("create volume")
        .id;
    for _ in 0..100 {
        if ops.get_volume(&id).await.expect("get volume").ready {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("volume {id} never became ready");
}

async fn scp() -> Option<Cloud> {
    let sim = Sim::start(
        "scp.py",
        &[
            "--credential",
            "AK-faults:SK-faults",
            "--today",
            "2026-11-25",
        ],
    )?;
    let config: snapcsi::backend::scp::ScpConfig = toml::from_str(&format!(
        "endpoint = \"{}\"\naccess_key = \"AK-faults\"\nsecret_key = \"SK-faults\"\n[http]\n{HTTP}",
        sim.base()
    ))
    .expect("scp config");
    let today = snapcsi::backend::scp::time::Date::new(2026, 11, 25);
    let backend = snapcsi::backend::scp::ScpBackend::new(config, Some("faults".into()), today)
        .expect("scp backend");
    let ops = ops(Arc::new(backend));
    let volume = ready_volume(&ops, "faults-src").await;
    Some(Cloud {
        name: "scp",
        admin: None,
        _peer: None,
        request_id_header: "x-request-id",
        volume_path: format!("/v1/volumes/{volume}"),
        create_path: "/v1/snapshots".into(),
        modes: &["stuck", "error", "error_deleting"],
        sim,
        ops,
        volume,
    })
}

async fn softlayer() -> Option<Cloud> {
    let sim = Sim::start(
        "softlayer.py",
        &["--username", "SL-faults", "--api-key", "k-faults"],
    )?;
    let config = snapcsi::backend::softlayer::SoftLayerConfig {
        endpoint: format!("{}/rest/v3.1", sim.base()),
        username: "SL-faults".into(),
        api_key: snapcsi::secret::Secret::new("k-faults"),
        scan_page_size: 50,
        http: settings(),
    };
    let backend =
        snapcsi::backend::softlayer::SoftLayerBackend::new(&config, Some("faults".into()))
            .expect("softlayer backend");
    let made = sim
        .control(
            "/_control/volumes",
            serde_json::json!({"capacityGb": 20, "snapshotCapacityGb": 100}),
        )
        .await;
    let volume = VolumeId::new(made["id"].as_u64().expect("volume id").to_string());
    let base = "/rest/v3.1/SoftLayer_Network_Storage_Iscsi";
    Some(Cloud {
        name: "softlayer",
        admin: None,
        _peer: None,
        request_id_header: "x-request-id",
        volume_path: format!("{base}/{volume}/getObject"),
        create_path: format!("{base}/{volume}/createSnapshot"),
        // SoftLayer snapshots have no status, so no `error` (tests/sims/softlayer.py).
        modes: &["stuck", "error_deleting"],
        ops: ops(Arc::new(backend)),
        sim,
        volume,
    })
}

async fn deltacloud() -> Option<Cloud> {
    let sim = Sim::start(
        "deltacloud.py",
        &["--username", "dc-faults", "--password", "pw-faults"],
    )?;
    let config = snapcsi::backend::deltacloud::DeltacloudConfig {
        endpoint: format!("{}/api", sim.base()),
        username: "dc-faults".into(),
        password: snapcsi::secret::Secret::new("pw-faults"),
        driver: Some("ec2".into()),
        provider: Some("us-east-1".into()),
        realm_id: Some("us-east-1a".into()),
        max_list_items: 10_000,
        http: settings(),
    };
    let backend =
        snapcsi::backend::deltacloud::DeltacloudBackend::new(&config, Some("faults".into()))
            .expect("deltacloud backend");
    let ops = ops(Arc::new(backend));
    let volume = ready_volume(&ops, "faults-src").await;
    Some(Cloud {
        name: "deltacloud",
        admin: None,
        _peer: None,
        request_id_header: "x-request-id",
        volume_path: format!("/api/storage_volumes/{volume}"),
        create_path: "/api/storage_snapshots".into(),
        // Deltacloud has no `error_deleting` (tests/sims/deltacloud.py).
        modes: &["stuck", "error"],
        sim,
        ops,
        volume,
    })
}

async fn cinder() -> Option<Cloud> {
    let sim = Sim::start(
        "cinder.py",
        &[
            "--dialect",
            "v2",
            "--token",
            "sim-token",
            "--tenant",
            "5a1e5a1e",
            "--delay",
            "0.1",
        ],
    )?;
    let text = format!(
        "type = \"cinder\"\ndialect = \"v2\"\nauth_type = \"token\"\ntoken = \"sim-token\"\n\
         endpoint = \"{}/v2/{{project_id}}\"\nproject_id = \"5a1e5a1e\"\n\
         volume_wait_seconds = 5\ndelete_wait_seconds = 5\n[http]\n{HTTP}",
        sim.base()
    );
    let table: toml::Table = toml::from_str(&text).expect("toml");
    let config =
        snapcsi::backend::registry::section("faults.toml", "c", &table).expect("cinder section");
    let backend = snapcsi::backend::cinder::CinderBackend::new(config, Some("faults".into()))
        .expect("cinder backend");
    let ops = ops(Arc::new(backend));
    let volume = ready_volume(&ops, "faults-src").await;
    Some(Cloud {
        name: "cinder",
        admin: Some((
            format!("{}/v2/5a1e5a1e", sim.base()),
            "sim-token".to_owned(),
        )),
        _peer: None,
        // Cinder answers with x-openstack-request-id (the v1 dialect: X-Compute-Request-Id,
        // seed 001).
        request_id_header: "x-openstack-request-id",
        volume_path: format!("/v2/5a1e5a1e/volumes/{volume}"),
        create_path: "/v2/5a1e5a1e/snapshots".into(),
        modes: &["stuck", "error", "error_deleting"],
        sim,
        ops,
        volume,
    })
}

/// The REAL Cinder 29 (tests/peers/cinder), reached through tests/sims/faultproxy.py, which
/// injects the HTTP-level faults into its real answers.
async fn real_cinder() -> Option<Cloud> {
    let peer = Peer::start(&[])?;
    let upstream = peer.get("CINDER_URL").to_owned();
    let project = peer.get("CINDER_PROJECT").to_owned();
    let sim = Sim::start("faultproxy.py", &["--upstream", &upstream])?;
    let text = format!(
        "type = \"cinder\"\nauth_type = \"noauth\"\nendpoint = \"{}/v3/{{project_id}}\"\n\
         project_id = \"{project}\"\nvolume_wait_seconds = 30\ndelete_wait_seconds = 10\n\
         [http]\n{HTTP}",
        sim.base()
    );
    let table: toml::Table = toml::from_str(&text).expect("toml");
    let config =
        snapcsi::backend::registry::section("faults.toml", "c", &table).expect("cinder section");
    let backend = snapcsi::backend::cinder::CinderBackend::new(config, Some("faults".into()))
        .expect("cinder backend");
    let ops = ops(Arc::new(backend));
    let volume = ready_volume(&ops, "faults-src").await;
    Some(Cloud {
        name: "real cinder",
        request_id_header: "x-openstack-request-id",
        volume_path: format!("/v3/{project}/volumes/{volume}"),
        create_path: format!("/v3/{project}/snapshots"),
        // States are forced on the real server with os-reset_status instead.
        modes: &[],
        admin: Some((
            format!("{upstream}/v3/{project}"),
            format!("admin:{project}"),
        )),
        _peer: Some(peer),
        sim,
        ops,
        volume,
    })
}

// ------------------------------------------------------------------------ table ---

/// What a row's call leaves in the log.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Logged {
    /// Nothing at warn level about a failure.
    Nothing,
    /// One "the cloud refused a request" line with the request id.
    Refusal,
    /// One "request failed; giving up" line (no answer, so no request id).
    Transport,
}

struct Row {
    what: &'static str,
    rule: serde_json::Value,
    /// The CSI code, `None` for success.
    code: Option<Code>,
    /// Requests the simulator sees on the faulted route.
    requests: usize,
    /// The call finishes within this (the capped backoff).
    within: Duration,
    logged: Logged,
}

fn read_rows() -> Vec<Row> {
    use serde_json::json;
    let s = Duration::from_secs;
    vec![
        Row {
            what: "500 on a read: not retried, UNAVAILABLE",
            rule: json!({"fault": "status", "status": 500}),
            code: Some(Code::Unavailable),
            requests: 1,
            within: s(1),
            logged: Logged::Refusal,
        },
        Row {
            what: "502 twice on a read: retried, then success",
            rule: json!({"fault": "status", "status": 502, "count": 2}),
            code: None,
            requests: 3,
            within: s(1),
            logged: Logged::Nothing,
        },
        Row {
            what: "503 twice with Retry-After 30: retried after the capped wait, then success",
            rule: json!({"fault": "status", "status": 503, "count": 2, "retry_after": 30}),
            code: None,
            requests: 3,
            within: s(1),
            logged: Logged::Nothing,
        },
        Row {
            what: "429 for longer than the retries: UNAVAILABLE after max_attempts",
            rule: json!({"fault": "status", "status": 429, "count": -1}),
            code: Some(Code::Unavailable),
            requests: ATTEMPTS,
            within: s(1),
            logged: Logged::Refusal,
        },
        Row {
            what: "413 on a read: RESOURCE_EXHAUSTED, not retried",
            rule: json!({"fault": "status", "status": 413}),
            code: Some(Code::ResourceExhausted),
            requests: 1,
            within: s(1),
            logged: Logged::Refusal,
        },
        Row {
            what: "connection reset twice on a read: retried, then success",
            rule: json!({"fault": "reset", "count": 2}),
            code: None,
            requests: 3,
            within: s(1),
            logged: Logged::Nothing,
        },
        Row {
            what: "connection reset on every read: UNAVAILABLE after max_attempts",
            rule: json!({"fault": "reset", "count": -1}),
            code: Some(Code::Unavailable),
            requests: ATTEMPTS,
            within: s(1),
            logged: Logged::Transport,
        },
        Row {
            what: "no answer within the timeout on a read: retried, then success",
            rule: json!({"fault": "timeout", "seconds": 3}),
            code: None,
            requests: 2,
            within: s(3),
            logged: Logged::Nothing,
        },
        Row {
            what: "a body that trickles past the timeout on a read: retried, then success",
            rule: json!({"fault": "slow_body", "seconds": 0.5}),
            code: None,
            requests: 2,
            within: s(3),
            logged: Logged::Nothing,
        },
        Row {
            what: "a malformed body on a read: UNAVAILABLE, logged with the request id",
            rule: json!({"fault": "malformed"}),
            code: Some(Code::Unavailable),
            requests: 1,
            within: s(1),
            logged: Logged::Refusal,
        },
    ]
}

/// Faults on the create: never retried blindly. `found` says whether the object was made
/// before the answer was lost, so that the repeated CSI call must find it by name.
struct CreateRow {
    what: &'static str,
    rule: serde_json::Value,
    code: Code,
    found: bool,
    /// The cloud said it did not act (429, 503): the repeat may create at once, without
    /// waiting out the create grace (ops::intents).
    refused_before_acting: bool,
    logged: Logged,
}

fn create_rows() -> Vec<CreateRow> {
    use serde_json::json;
    vec![
        CreateRow {
            what: "503 on the create",
            rule: json!({"fault": "status", "status": 503}),
            code: Code::Unavailable,
            found: false,
            refused_before_acting: true,
            logged: Logged::Refusal,
        },
        CreateRow {
            what: "502 on the create",
            rule: json!({"fault": "status", "status": 502}),
            code: Code::Unavailable,
            found: false,
            refused_before_acting: false,
            logged: Logged::Refusal,
        },
        CreateRow {
            what: "429 on the create",
            rule: json!({"fault": "status", "status": 429, "retry_after": 0}),
            code: Code::Unavailable,
            found: false,
            refused_before_acting: true,
            logged: Logged::Refusal,
        },
        CreateRow {
            what: "413 on the create",
            rule: json!({"fault": "status", "status": 413}),
            code: Code::ResourceExhausted,
            found: false,
            refused_before_acting: false,
            logged: Logged::Refusal,
        },
        CreateRow {
            what: "the connection reset before the create was read",
            rule: json!({"fault": "reset", "after": false}),
            code: Code::Unavailable,
            found: false,
            refused_before_acting: false,
            logged: Logged::Transport,
        },
        CreateRow {
            what: "the create made, its answer lost to a reset",
            rule: json!({"fault": "reset", "after": true}),
            code: Code::Unavailable,
            found: true,
            refused_before_acting: false,
            logged: Logged::Transport,
        },
        CreateRow {
            what: "the create made, its answer later than the timeout",
            rule: json!({"fault": "timeout", "seconds": 2}),
            code: Code::Unavailable,
            found: true,
            refused_before_acting: false,
            logged: Logged::Transport,
        },
        CreateRow {
            what: "the create made, its answer trickling past the timeout",
            rule: json!({"fault": "slow_body", "seconds": 0.5}),
            code: Code::Unavailable,
            found: true,
            refused_before_acting: false,
            logged: Logged::Transport,
        },
        CreateRow {
            what: "the create made, its answer malformed",
            rule: json!({"fault": "malformed"}),
            code: Code::Unavailable,
            found: true,
            refused_before_acting: false,
            logged: Logged::Refusal,
        },
    ]
}

fn check_logged(cloud: &str, what: &str, logs: &str, expected: Logged) {
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("the cloud refused a request"))
        .collect();
    let transport: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("request failed; giving up"))
        .collect();
    let (want_refusals, want_transport) = match expected {
        Logged::Nothing => (0, 0),
        Logged::Refusal => (1, 0),
        Logged::Transport => (0, 1),
    };
    assert_eq!(
        (refusals.len(), transport.len()),
        (want_refusals, want_transport),
        "{cloud}: {what}: refusal and transport-failure lines logged:\n{logs}"
    );
    for line in refusals {
        assert!(
            line.contains("request_id=\"req-") || line.contains("request_id=req-"),
            "{cloud}: {what}: the refusal is logged without the cloud's request id: {line}"
        );
    }
}

async fn route_count(cloud: &Cloud, method: &str, prefix: &str) -> usize {
    let (seen, _) = sim::seen(&cloud.sim.base()).await;
    let wanted = format!("{method} {prefix}");
    seen.iter().filter(|l| l.starts_with(&wanted)).count()
}

fn snapshot_request(cloud: &Cloud, name: &str) -> CreateSnapshot {
    CreateSnapshot {
        name: name.into(),
        source_volume_id: cloud.volume.clone(),
        parameters: BTreeMap::new(),
    }
}

async fn run_table(cloud: &Cloud, logs: &Logs) {
    let base = cloud.sim.base();

    // The simulator sends the request-id header the backend's documents name.
    let raw = reqwest::get(format!("{base}{}", cloud.volume_path))
        .await
        .expect("raw GET");
    assert!(
        raw.headers().contains_key(cloud.request_id_header),
        "{}: no {} header in {:?}",
        cloud.name,
        cloud.request_id_header,
        raw.headers()
    );

    for row in read_rows() {
        sim::reset_faults(&base).await;
        let mut rule = row.rule.clone();
        rule["method"] = "GET".into();
        rule["path"] = cloud.volume_path.clone().into();
        sim::faults(&base, serde_json::json!({ "rules": [rule] })).await;
        logs.take();
        let started = Instant::now();
        let result = cloud.ops.get_volume(&cloud.volume).await;
        let took = started.elapsed();
        let label = format!("{}: {}", cloud.name, row.what);
        match (row.code, result) {
            (None, Ok(v)) => assert_eq!(v.id, cloud.volume, "{label}"),
            (Some(code), Err(e)) => assert_eq!(e.code(), code, "{label}: {e}"),
            (want, got) => panic!("{label}: expected {want:?}, got {got:?}"),
        }
        let requests = route_count(cloud, "GET", &cloud.volume_path).await;
        assert_eq!(requests, row.requests, "{label}: requests on the route");
        assert!(took < row.within, "{label}: took {took:?}");
        check_logged(cloud.name, row.what, &logs.take(), row.logged);
        println!("{label}: ok ({requests} requests, {took:?})");
    }

    for (i, row) in create_rows().into_iter().enumerate() {
        sim::reset_faults(&base).await;
        let name = format!("faults-{}-{i}", cloud.name);
        let mut rule = row.rule.clone();
        rule["method"] = "POST".into();
        rule["path"] = cloud.create_path.clone().into();
        sim::faults(&base, serde_json::json!({ "rules": [rule] })).await;
        logs.take();
        let label = format!("{}: {}", cloud.name, row.what);
        let started = Instant::now();
        let err = cloud
            .ops
            .create_snapshot(snapshot_request(cloud, &name))
            .await
            .expect_err(&label);
        let took = started.elapsed();
        assert_eq!(err.code(), row.code, "{label}: {err}");
        assert_eq!(
            route_count(cloud, "POST", &cloud.create_path).await,
            1,
            "{label}: a create is sent once"
        );
        assert!(took < Duration::from_secs(3), "{label}: took {took:?}");
        check_logged(cloud.name, row.what, &logs.take(), row.logged);
        // The sidecar calls again: the name is looked up first, so no duplicate. After an
        // UNAVAILABLE the outcome is unknown (ops::intents): until the object shows up, or the
        // grace period passes without it, the repeat answers UNAVAILABLE and sends nothing.
        let mut waited = 0;
        let again = loop {
            match cloud
                .ops
                .create_snapshot(snapshot_request(cloud, &name))
                .await
            {
                Ok(s) => break s,
                Err(e)
                    if e.code() == Code::Unavailable
                        && !row.found
                        && !row.refused_before_acting
                        && waited < 40 =>
                {
                    assert_eq!(row.code, Code::Unavailable, "{label}: the repeat: {e}");
                    assert!(e.to_string().contains("outcome is unknown"), "{label}: {e}");
                    assert_eq!(
                        route_count(cloud, "POST", &cloud.create_path).await,
                        1,
                        "{label}: nothing is created while the first create may yet appear"
                    );
                    waited += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{label}: the repeated call: {e}"),
            }
        };
        if row.code == Code::Unavailable && !row.found && !row.refused_before_acting {
            assert!(waited > 0, "{label}: created again without waiting");
        }
        let posts = route_count(cloud, "POST", &cloud.create_path).await;
        let expected = if row.found { 1 } else { 2 };
        assert_eq!(posts, expected, "{label}: creates sent in all");
        // A third call finds the same object.
        let third = cloud
            .ops
            .create_snapshot(snapshot_request(cloud, &name))
            .await
            .unwrap_or_else(|e| panic!("{label}: the third call: {e}"));
        assert_eq!(third.id, again.id, "{label}: one snapshot for the name");
        assert_eq!(
            route_count(cloud, "POST", &cloud.create_path).await,
            expected,
            "{label}: no duplicate"
        );
        println!("{label}: ok ({:?}, {posts} creates in all)", row.code);
    }
    sim::reset_faults(&base).await;
}

async fn ready_snapshot(cloud: &Cloud, name: &str) -> SnapshotId {
    for _ in 0..100 {
        let s = cloud
            .ops
            .create_snapshot(snapshot_request(cloud, name))
            .await
            .expect("create snapshot");
        if s.ready {
            return s.id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{}: snapshot {name} never became ready", cloud.name);
}

/// Cinder's admin action `os-reset_status`: puts a snapshot into `status` (on the real
/// server, how an operator forces or repairs a state).
async fn reset_status(cloud: &Cloud, id: &SnapshotId, status: &str) {
    let (api, token) = cloud.admin.as_ref().expect("an admin endpoint");
    let response = reqwest::Client::new()
        .post(format!("{api}/snapshots/{id}/action"))
        .header("X-Auth-Token", token)
        .json(&serde_json::json!({"os-reset_status": {"status": status}}))
        .send()
        .await
        .expect("reset status");
    assert_eq!(
        response.status().as_u16(),
        202,
        "{}: os-reset_status {status}",
        cloud.name
    );
}

/// What an operator does to a snapshot left in `error_deleting` before it can be deleted
/// again, where the cloud needs it (Cinder refuses to delete `error_deleting`).
async fn repair(cloud: &Cloud, id: &SnapshotId) {
    if cloud.admin.is_some() {
        reset_status(cloud, id, "error").await;
    }
}

/// The states forced on the real Cinder with `os-reset_status`: `creating` (stuck),
/// `error`, `error_deleting` and then a delete that succeeds.
async fn run_reset_status(cloud: &Cloud) {
    let id = ready_snapshot(cloud, "forced").await;
    reset_status(cloud, &id, "creating").await;
    for _ in 0..2 {
        let again = cloud
            .ops
            .create_snapshot(snapshot_request(cloud, "forced"))
            .await
            .expect("stuck repeat");
        assert_eq!(again.id, id, "{}: stuck", cloud.name);
        assert!(
            !again.ready,
            "{}: a creating snapshot reads as ready",
            cloud.name
        );
    }
    println!(
        "{}: forced to creating: not ready, same snapshot",
        cloud.name
    );
    reset_status(cloud, &id, "error").await;
    let err = cloud
        .ops
        .create_snapshot(snapshot_request(cloud, "forced"))
        .await
        .expect_err("error status");
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "{}: {err}",
        cloud.name
    );
    assert!(
        err.to_string().contains("\"error\""),
        "{}: {err}",
        cloud.name
    );
    println!("{}: forced to error: {err}", cloud.name);
    reset_status(cloud, &id, "error_deleting").await;
    let err = cloud
        .ops
        .delete_snapshot(&id)
        .await
        .expect_err("error_deleting");
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "{}: {err}",
        cloud.name
    );
    assert!(
        err.to_string().contains("error_deleting"),
        "{}: {err}",
        cloud.name
    );
    println!("{}: forced to error_deleting: {err}", cloud.name);
    reset_status(cloud, &id, "available").await;
    cloud
        .ops
        .delete_snapshot(&id)
        .await
        .unwrap_or_else(|e| panic!("{}: the later delete: {e}", cloud.name));
    for _ in 0..100 {
        match cloud.ops.get_snapshot(&id).await {
            Err(e) if e.code() == Code::NotFound => {
                println!("{}: repaired, then deleted", cloud.name);
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{}: snapshot {id} was never deleted", cloud.name);
}

async fn run_modes(cloud: &Cloud, logs: &Logs) {
    let base = cloud.sim.base();
    let posts = || route_count(cloud, "POST", &cloud.create_path);

    // Stuck in `creating`: ready_to_use = false, the same snapshot on every call.
    sim::reset_faults(&base).await;
    sim::faults(&base, serde_json::json!({"snapshots": "stuck"})).await;
    let first = cloud
        .ops
        .create_snapshot(snapshot_request(cloud, "modes-stuck"))
        .await
        .expect("stuck create");
    for _ in 0..3 {
        let again = cloud
            .ops
            .create_snapshot(snapshot_request(cloud, "modes-stuck"))
            .await
            .expect("stuck repeat");
        assert_eq!(again.id, first.id, "{}: stuck", cloud.name);
        assert!(
            !again.ready,
            "{}: a stuck snapshot reads as ready",
            cloud.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(posts().await, 1, "{}: stuck: one create", cloud.name);
    println!("{}: stuck in creating: ok", cloud.name);

    if cloud.modes.contains(&"error") {
        sim::reset_faults(&base).await;
        sim::faults(&base, serde_json::json!({"snapshots": "error"})).await;
        let mut last = None;
        for _ in 0..40 {
            match cloud
                .ops
                .create_snapshot(snapshot_request(cloud, "modes-error"))
                .await
            {
                Ok(s) => assert!(
                    !s.ready,
                    "{}: a failing snapshot reads as ready",
                    cloud.name
                ),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = last.unwrap_or_else(|| panic!("{}: the error status never surfaced", cloud.name));
        assert_eq!(
            err.code(),
            Code::FailedPrecondition,
            "{}: {err}",
            cloud.name
        );
        assert!(err.to_string().contains("error"), "{}: {err}", cloud.name);
        assert_eq!(
            posts().await,
            1,
            "{}: error: not retried by creating again",
            cloud.name
        );
        println!("{}: error status: ok ({err})", cloud.name);
    } else {
        println!("{}: no `error` snapshot status to simulate", cloud.name);
    }

    if cloud.modes.contains(&"error_deleting") {
        sim::reset_faults(&base).await;
        let id = ready_snapshot(cloud, "modes-error-deleting").await;
        sim::faults(&base, serde_json::json!({"snapshots": "error_deleting"})).await;
        logs.take();
        let err = cloud
            .ops
            .delete_snapshot(&id)
            .await
            .expect_err("error_deleting");
        assert_eq!(
            err.code(),
            Code::FailedPrecondition,
            "{}: {err}",
            cloud.name
        );
        assert!(
            err.to_string().contains("error_deleting") || err.to_string().contains("false"),
            "{}: {err}",
            cloud.name
        );
        repair(cloud, &id).await;
        cloud
            .ops
            .delete_snapshot(&id)
            .await
            .unwrap_or_else(|e| panic!("{}: the later delete: {e}", cloud.name));
        let gone = cloud.ops.get_snapshot(&id).await.expect_err("deleted");
        assert_eq!(gone.code(), Code::NotFound, "{}", cloud.name);
        println!(
            "{}: error_deleting, then a successful delete: ok ({err})",
            cloud.name
        );
    } else {
        println!("{}: no `error_deleting` state to simulate", cloud.name);
    }
    sim::reset_faults(&base).await;
}

async fn run(cloud: Option<Cloud>) {
    let Some(cloud) = cloud else { return };
    let (logs, _guard) = capture();
    let started = Instant::now();
    run_table(&cloud, &logs).await;
    if cloud.modes.is_empty() {
        run_reset_status(&cloud).await;
    } else {
        run_modes(&cloud, &logs).await;
    }
    println!("{}: every fault in {:?}", cloud.name, started.elapsed());
}

#[tokio::test]
async fn scp_faults() {
    run(scp().await).await;
}

#[tokio::test]
async fn softlayer_faults() {
    run(softlayer().await).await;
}

#[tokio::test]
async fn deltacloud_faults() {
    run(deltacloud().await).await;
}

#[tokio::test]
async fn cinder_faults() {
    run(cinder().await).await;
}

/// The same table against the real Cinder behind the fault proxy, then its states forced
/// with `os-reset_status`.
#[tokio::test]
async fn real_cinder_faults() {
    run(real_cinder().await).await;
}
