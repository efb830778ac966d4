//! The SCP backend against its strict simulator (`tests/sims/scp.py`, spawned here on
//! 127.0.0.1): the shared conformance suite, the version policy, signatures and tampering,
//! the simulator's strictness, injected faults and per-request credentials.
//!
//! Needs `python3` (installed by tests/tools/install-prereqs.sh). Without it these tests skip
//! with a printed reason, unless SNAPCSI_REQUIRE_PEERS=1 (CI), where they fail.

use snapcsi::backend::scp::config::ScpConfig;
use snapcsi::backend::scp::signer::{self, SigningInput};
use snapcsi::backend::scp::time::Date;
use snapcsi::backend::scp::{ScpBackend, SetupError};
use snapcsi::backend::{
    Backend, BackendError, CreateSnapshot, ErrorKind, PageRequest, SnapshotFilter, VolumeId,
    VolumeSource,
};
use snapcsi::ops::{Ops, SizeRange};
use snapcsi::secret::Secrets;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

mod support;
use support::sim;

const AK: &str = "AK-sim-0001";
const SK: &str = "SK-sim-secret-0001/+=";
const AK2: &str = "AK-sim-0002";
const SK2: &str = "SK-sim-secret-0002";
const TODAY: Date = Date::new(2026, 11, 25);

/// A running simulator; killed on drop.
struct Sim {
    child: Child,
    port: u16,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require_peers() -> bool {
    std::env::var("SNAPCSI_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// Starts the simulator, or `None` (skip) when python3 is missing and peers are optional.
fn start_sim(extra: &[&str]) -> Option<Sim> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sims/scp.py");
    let mut args = vec![
        script.to_owned(),
        "--port".into(),
        "0".into(),
        "--credential".into(),
        format!("{AK}:{SK}"),
        "--credential".into(),
        format!("{AK2}:{SK2}:acct-2"),
        "--today".into(),
        TODAY.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let spawned = Command::new("python3")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if !require_peers() => {
            eprintln!("SKIP: cannot run python3 for the SCP simulator ({e})");
            return None;
        }
        Err(e) => panic!("SNAPCSI_REQUIRE_PEERS=1 but python3 cannot run: {e}"),
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the simulator's first line");
    let port = line
        .strip_prefix("LISTENING ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("simulator did not announce its port: {line:?}"));
    Some(Sim { child, port })
}

impl Sim {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn faults(&self, body: serde_json::Value) {
        sim::faults(&self.url(), body).await;
    }

    async fn reset_faults(&self) {
        sim::reset_faults(&self.url()).await;
    }

    async fn fired(&self) -> u64 {
        sim::seen(&self.url()).await.1
    }

    async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("{}/_sim/stats", self.url()))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }
}

/// Quick retries so that fault tests do not wait.
const FAST_HTTP: &str = "[http]\nbackoff_base_ms = 10\nbackoff_cap_ms = 50\n";

fn config(endpoint: &str, extra: &str) -> ScpConfig {
    let text = format!(
        "endpoint = \"{endpoint}\"\naccess_key = \"{AK}\"\nsecret_key = \"{SK}\"\n{extra}\n"
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("config {text}: {e}"))
}

fn build(endpoint: &str, extra: &str, cluster: Option<&str>) -> ScpBackend {
    ScpBackend::new(config(endpoint, extra), cluster.map(str::to_owned), TODAY).expect("backend")
}

fn code(error: BackendError) -> (Code, String) {
    let message = error.message.clone();
    (snapcsi::error::Error::from(error).code(), message)
}

async fn new_volume(ops: &Ops, name: &str) -> snapcsi::backend::Volume {
    let volume = ops
        .create_volume(
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
        .expect("create volume");
    for _ in 0..100 {
        if ops.get_volume(&volume.id).await.expect("get").ready {
            return volume;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("volume {} never became ready", volume.id);
}

fn snapshot_request(name: &str, volume: &snapcsi::backend::Volume) -> CreateSnapshot {
    CreateSnapshot {
        name: name.to_owned(),
        source_volume_id: volume.id.clone(),
        parameters: BTreeMap::new(),
    }
}

#[tokio::test]
async fn scp_backend_conforms_against_the_simulator() {
    let Some(sim) = start_sim(&["--snapshot-delay", "0.3", "--volume-delay", "0.2"]) else {
        return;
    };
    let backend = build(&sim.url(), "", Some("conformance-cluster"));
    let passed = snapcsi::backend::conformance::run(Arc::new(backend), "scp").await;
    assert_eq!(passed, Ok(9), "{passed:?}");
    // Every request named the CURRENT version explicitly.
    let stats = sim.stats().await;
    assert_eq!(stats["without_version"], 0, "{stats}");
    let versions = stats["versions"].as_object().expect("versions");
    assert_eq!(versions.keys().collect::<Vec<_>>(), vec!["1.3"], "{stats}");
}

#[tokio::test]
async fn snapshots_are_not_ready_while_creating_and_the_name_survives_in_metadata() {
    let Some(sim) = start_sim(&["--snapshot-delay", "0.5"]) else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(build(&sim.url(), "", Some("c1")));
    let ops = Ops::new(Arc::clone(&backend), 1 << 30);
    let volume = new_volume(&ops, "meta-src").await;
    let first = ops
        .create_snapshot(snapshot_request("meta-snap", &volume))
        .await
        .expect("create");
    assert!(!first.ready, "a 0.5 s snapshot is ready at once");
    // A fresh backend (a restart) finds it by name through the metadata tag.
    let restarted: Arc<dyn Backend> = Arc::new(build(&sim.url(), "", Some("c1")));
    let found = restarted
        .find_snapshot_by_name("meta-snap")
        .await
        .expect("find")
        .expect("found after restart");
    assert_eq!(found.id, first.id);
    // Another cluster sharing the account does not take it for its own.
    let other = build(&sim.url(), "", Some("c2"));
    assert!(
        other
            .find_snapshot_by_name("meta-snap")
            .await
            .expect("find")
            .is_none()
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let again = ops
        .create_snapshot(snapshot_request("meta-snap", &volume))
        .await
        .expect("repeat");
    assert_eq!(again.id, first.id);
    assert!(again.ready);
    // The 1 GiB claim got the service's minimum volume of 8 GB.
    assert_eq!(again.size_bytes, 8 << 30);
}

#[tokio::test]
async fn version_policy_at_start_and_on_the_wire() {
    // Refused at start, naming the date, without the override (no simulator needed).
    for (version, date) in [("1.0", "2025-12-31"), ("1.1", "2026-05-31")] {
        let err = ScpBackend::new(
            config(
                "http://127.0.0.1:9",
                &format!("api_version = \"{version}\""),
            ),
            None,
            TODAY,
        )
        .err()
        .expect("refused");
        assert_eq!(err.key, "api_version");
        assert!(err.message.contains(date), "{err:?}");
    }
    // Through the config file, the error names the file and key.
    let file = snapcsi::config::FileConfig::parse(
        "t.toml",
        "[backends.s]\ntype = \"scp\"\nendpoint = \"http://127.0.0.1:9\"\napi_version = \"1.0\"\n",
    )
    .expect("parses");
    let err = snapcsi::backend::registry::build("t.toml", &file)
        .err()
        .expect("refused");
    assert_eq!(err.key, "backends.s.api_version");
    assert!(err.to_string().contains("2025-12-31"), "{err}");

    let Some(sim) = start_sim(&[]) else {
        return;
    };
    // 1.2 (SUPPORTED) can be pinned and is what goes on the wire.
    let pinned = build(&sim.url(), "api_version = \"1.2\"", None);
    pinned.health().await.expect("1.2 works");
    let stats = sim.stats().await;
    assert_eq!(stats["versions"]["1.2"], 1, "{stats}");
    // With the override, 1.0 starts, and the service refuses it the way the seed says.
    let forced = build(
        &sim.url(),
        "api_version = \"1.0\"\nallow_deprecated_api_version = true",
        None,
    );
    let err = forced.health().await.expect_err("the service refuses 1.0");
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("no longer supported"), "{err}");
    assert!(err.message.contains("20251231"), "{err}");
}

type Rewrite = Arc<dyn Fn(String) -> String + Send + Sync>;

/// A TCP proxy that rewrites each request's head (request line and headers) after the
/// driver signed it, then passes everything else through unchanged.
async fn tamper_proxy(upstream: SocketAddr, rewrite: Rewrite) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let rewrite = Arc::clone(&rewrite);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match inbound.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = rewrite(String::from_utf8_lossy(&head).into_owned());
                let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                if outbound.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

/// Rewrites the value of header `name` (case-insensitive), or adds it when absent.
fn set_header(head: &str, name: &str, value: impl Fn(&str) -> String) -> String {
    let mut found = false;
    let mut lines: Vec<String> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .map(|line| match line.split_once(':') {
            Some((key, old)) if key.eq_ignore_ascii_case(name) => {
                found = true;
                format!("{key}: {}", value(old.trim()))
            }
            _ => line.to_owned(),
        })
        .collect();
    if !found {
        lines.push(format!("{name}: {}", value("")));
    }
    lines.join("\r\n") + "\r\n\r\n"
}

fn request_line(head: &str, edit: impl Fn(&str) -> String) -> String {
    let (first, rest) = head.split_once("\r\n").expect("request line");
    format!("{}\r\n{rest}", edit(first))
}

#[tokio::test]
async fn tampered_requests_are_refused_and_surface_as_unauthenticated() {
    let Some(sim) = start_sim(&[]) else {
        return;
    };
    let upstream = sim.addr();
    let variants: Vec<(&str, Rewrite)> = vec![
        (
            "query changed",
            Arc::new(|h: String| request_line(&h, |l| l.replace("limit=3", "limit=30"))),
        ),
        (
            "path changed",
            Arc::new(|h: String| request_line(&h, |l| l.replace("/v1/volumes", "/v1/snapshots"))),
        ),
        (
            "method changed",
            Arc::new(|h: String| request_line(&h, |l| l.replacen("GET", "DELETE", 1))),
        ),
        (
            "Host changed (the signed URL's host)",
            Arc::new(|h: String| set_header(&h, "host", |v| v.replace("127.0.0.1", "localhost"))),
        ),
        (
            "Scp-Timestamp changed",
            Arc::new(|h: String| {
                set_header(&h, "scp-timestamp", |v| {
                    (v.parse::<u64>().unwrap_or(0) + 1).to_string()
                })
            }),
        ),
        (
            "Scp-Accesskey changed",
            Arc::new(|h: String| set_header(&h, "scp-accesskey", |_| AK2.to_owned())),
        ),
        (
            "Scp-AccountId added",
            Arc::new(|h: String| set_header(&h, "scp-accountid", |_| "acct-x".to_owned())),
        ),
        (
            "Scp-ClientType changed",
            Arc::new(|h: String| set_header(&h, "scp-clienttype", |_| "OpenApi".to_owned())),
        ),
        (
            "Scp-Signature changed",
            Arc::new(|h: String| {
                set_header(&h, "scp-signature", |v| {
                    let mut s = v.to_owned();
                    let flipped = if s.starts_with('A') { "B" } else { "A" };
                    s.replace_range(0..1, flipped);
                    s
                })
            }),
        ),
    ];
    // The proxy itself does not break anything: untouched requests pass.
    let identity = tamper_proxy(upstream, Arc::new(|h| h)).await;
    let clean = build(&format!("http://{identity}"), "", None);
    clean
        .list_volumes(&PageRequest {
            cursor: None,
            max_entries: 2,
        })
        .await
        .expect("an untampered request through the proxy succeeds");

    for (what, rewrite) in variants {
        let proxy = tamper_proxy(upstream, rewrite).await;
        // A fresh backend per variant: its own connection, so the rewrite hits the request.
        let backend = build(&format!("http://{proxy}"), "", None);
        let before = sim.stats().await["rejected"]["401"].as_u64().unwrap_or(0);
        let err = backend
            .list_volumes(&PageRequest {
                cursor: None,
                max_entries: 2,
            })
            .await
            .expect_err(what);
        let (code, message) = code(err);
        assert_eq!(code, Code::Unauthenticated, "{what}: {message}");
        assert!(message.contains("unauthenticated"), "{what}: {message}");
        assert!(
            !message.contains(SK),
            "{what}: the secret leaked: {message}"
        );
        let after = sim.stats().await["rejected"]["401"].as_u64().unwrap_or(0);
        assert_eq!(after, before + 1, "{what}: the simulator did not refuse it");
    }
}

/// A signed request made by hand (for what the backend never sends).
async fn raw(
    sim: &Sim,
    method: reqwest::Method,
    path: &str,
    timestamp: String,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let url = format!("{}{path}", sim.url());
    let signature = signer::sign(
        SK,
        &SigningInput {
            method: method.as_str(),
            url: &url,
            timestamp: &timestamp,
            access_key: AK,
            account_id: "",
            client_type: signer::CLIENT_TYPE,
        },
    );
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .header("Scp-Accesskey", AK)
        .header("Scp-Timestamp", &timestamp)
        .header("Scp-ClientType", signer::CLIENT_TYPE)
        .header("Scp-Signature", signature)
        .header("Scp-Api-Version", "virtualserver 1.3")
        .header("Accept-Language", "en-US");
    if let Some((content_type, text)) = body {
        request = request
            .header("Content-Type", content_type)
            .body(text.to_owned());
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn the_simulator_is_strict() {
    let Some(sim) = start_sim(&[]) else {
        return;
    };
    let now = signer::timestamp_now;
    // A correct hand-signed request passes: the checks below fail for their own reason.
    let (status, body) = raw(
        &sim,
        reqwest::Method::GET,
        "/v1/snapshots?limit=1",
        now(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Timestamp older than the 15 minute window.
    let old = (now().parse::<u64>().expect("ms") - 16 * 60 * 1000).to_string();
    let (status, body) = raw(&sim, reqwest::Method::GET, "/v1/snapshots", old, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("15 minutes"), "{body}");
    let post = |ctype: &'static str, text: &'static str| {
        let sim = &sim;
        async move {
            raw(
                sim,
                reqwest::Method::POST,
                "/v1/snapshots",
                now(),
                Some((ctype, text)),
            )
            .await
        }
    };
    let cases = [
        (
            "application/json",
            r#"{"name":"x","volume_id":"v","colour":"red"}"#,
            "unknown field",
        ),
        (
            "application/json",
            r#"{"name":"x","volume_id":"v","force":"yes"}"#,
            "must be bool",
        ),
        ("application/json", r#"{"name":"x"}"#, "is required"),
        (
            "application/json",
            r#"{"name":1,"volume_id":"v"}"#,
            "must be str",
        ),
        // SnapshotCreateRequest.metadata is an object in the SDK, not JSON text.
        (
            "application/json",
            r#"{"name":"x","volume_id":"v","metadata":"{}"}"#,
            "must be object/null",
        ),
        (
            "application/json",
            r#"{"name":"x","volume_id":"v","metadata":{"k":1}}"#,
            "must be a string",
        ),
        (
            "application/json",
            r#"{"name":"x.y","volume_id":"v"}"#,
            "name must have",
        ),
        (
            "text/plain",
            r#"{"name":"x","volume_id":"v"}"#,
            "Content-Type",
        ),
        (
            "application/json; charset=latin-1",
            r#"{"name":"x","volume_id":"v"}"#,
            "UTF-8",
        ),
        ("application/json", "not json", "not UTF-8 JSON"),
    ];
    for (ctype, text, expected) in cases {
        let (status, body) = post(ctype, text).await;
        assert_eq!(status, 400, "{text}: {body}");
        assert!(body.contains(expected), "{text}: {body}");
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("SCP-style body");
        assert!(parsed["code"].is_string() && parsed["message"].is_string());
    }
    let (status, body) = raw(
        &sim,
        reqwest::Method::GET,
        "/v1/volumes?colour=red",
        now(),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = raw(
        &sim,
        reqwest::Method::GET,
        "/v1/volumes?limit=x",
        now(),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // VolumeCreateRequest.size has a minimum of 8 (GB) in the SDK.
    let (status, body) = raw(
        &sim,
        reqwest::Method::POST,
        "/v1/volumes",
        now(),
        Some(("application/json", r#"{"name":"small","size":1}"#)),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("between 8 and"), "{body}");
    // The SDK's list filters are accepted; `count` comes with `with_count=true` only.
    let (status, body) = raw(
        &sim,
        reqwest::Method::GET,
        "/v1/snapshots?with_count=true&name=x",
        now(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"count\": 0"), "{body}");
}

/// Adds objects through the simulator's control endpoint (`/_sim/seed`); answers their ids.
async fn seed(sim: &Sim, body: serde_json::Value) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{}/_sim/seed", sim.url()))
        .json(&body)
        .send()
        .await
        .expect("seed")
        .json()
        .await
        .expect("seed answer")
}

fn one_gib() -> SizeRange {
    SizeRange {
        required: 1 << 30,
        limit: 0,
    }
}

#[tokio::test]
async fn snapshot_metadata_is_an_object_and_string_metadata_still_reads() {
    let Some(sim) = start_sim(&[]) else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(build(&sim.url(), "", Some("c1")));
    let ops = Ops::new(Arc::clone(&backend), 1 << 30);
    let volume = new_volume(&ops, "meta-object-src").await;
    let snapshot = ops
        .create_snapshot(snapshot_request("meta-object", &volume))
        .await
        .expect("create: the service takes metadata as an object");
    let (status, body) = raw(
        &sim,
        reqwest::Method::GET,
        &format!("/v1/snapshots/{}", snapshot.id),
        signer::timestamp_now(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        detail["metadata"],
        serde_json::json!({"snapcsi/name": "meta-object", "snapcsi/cluster": "c1"}),
        "{body}"
    );
    // An older answer carried the tags as JSON text in a string: still read as ours.
    seed(
        &sim,
        serde_json::json!({"snapshots": [{
            "name": "legacy-snap",
            "volume_id": volume.id.as_str(),
            "metadata": "{\"snapcsi/name\":\"legacy-snap\",\"snapcsi/cluster\":\"c1\"}",
        }]}),
    )
    .await;
    let found = backend
        .find_snapshot_by_name("legacy-snap")
        .await
        .expect("find")
        .expect("string metadata is read");
    assert_eq!(found.name, "legacy-snap");
    let other = build(&sim.url(), "", Some("c2"));
    assert!(
        other
            .find_snapshot_by_name("legacy-snap")
            .await
            .expect("find")
            .is_none(),
        "another cluster's snapshot taken for ours"
    );
}

/// Issue 15: two objects of one CSI name (a create re-sent after its answer was lost) answer
/// the oldest, every time, whatever order the service lists them in (here newest first).
#[tokio::test]
async fn two_objects_of_one_name_answer_the_oldest() {
    let Some(sim) = start_sim(&[]) else {
        return;
    };
    let volumes = seed(
        &sim,
        serde_json::json!({"volumes": [
            {"name": "scp-dup-vol", "created_at": "2026-01-05T10:00:07.000000Z"},
            {"name": "scp-dup-vol", "created_at": "2026-01-05T10:00:00.000000Z"},
        ]}),
    )
    .await;
    let newer_volume = volumes["volumes"][0].as_str().expect("id").to_owned();
    let older_volume = volumes["volumes"][1].as_str().expect("id").to_owned();
    let tags = serde_json::json!({"snapcsi/name": "scp-dup-snap", "snapcsi/cluster": "c1"});
    let snapshots = seed(
        &sim,
        serde_json::json!({"snapshots": [
            {"name": "scp-dup-snap", "volume_id": older_volume, "metadata": tags,
             "created_at": "2026-01-05T10:01:09.000000Z"},
            {"name": "scp-dup-snap", "volume_id": older_volume, "metadata": tags,
             "created_at": "2026-01-05T10:01:00.000000Z"},
        ]}),
    )
    .await;
    let older_snapshot = snapshots["snapshots"][1].as_str().expect("id").to_owned();
    let backend = build(&sim.url(), "", Some("c1"));
    for _ in 0..2 {
        let volume = backend
            .find_volume_by_name("scp-dup-vol")
            .await
            .expect("find")
            .expect("found");
        assert_eq!(volume.id.as_str(), older_volume, "not the oldest volume");
        assert_ne!(volume.id.as_str(), newer_volume);
        let snapshot = backend
            .find_snapshot_by_name("scp-dup-snap")
            .await
            .expect("find")
            .expect("found");
        assert_eq!(
            snapshot.id.as_str(),
            older_snapshot,
            "not the oldest snapshot"
        );
    }
}

#[tokio::test]
async fn create_volume_answers_only_available_volumes() {
    let Some(sim) = start_sim(&["--volume-delay", "1.0"]) else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(build(&sim.url(), "", None));
    let ops = Ops::new(Arc::clone(&backend), 1 << 30);
    let started = Instant::now();
    let volume = ops
        .create_volume("wait-new", one_gib(), None, BTreeMap::new(), 0)
        .await
        .expect("create volume");
    assert!(
        volume.ready,
        "CreateVolume answered a volume still creating"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // VolumeCreateRequest.size is at least 8 GB: a 1 GiB claim gets 8 GiB, not a 400.
    assert_eq!(volume.size_bytes, 8 << 30);
    // The next call on the volume is accepted at once.
    let snapshot = backend
        .create_snapshot(&snapshot_request("wait-snap", &volume))
        .await
        .expect("snapshot of the volume CreateVolume answered");
    assert!(snapshot.ready);
    let restored = ops
        .create_volume(
            "wait-restored",
            one_gib(),
            Some(VolumeSource::Snapshot(snapshot.id.clone())),
            BTreeMap::new(),
            0,
        )
        .await
        .expect("restore");
    assert!(restored.ready, "a restore answered a volume still creating");
    backend
        .create_snapshot(&snapshot_request("wait-snap-2", &restored))
        .await
        .expect("snapshot of the restored volume");
}

#[tokio::test]
async fn create_volume_gives_up_waiting_as_unavailable_and_finds_it_later() {
    let Some(sim) = start_sim(&["--volume-delay", "2.5"]) else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(build(&sim.url(), "volume_wait_seconds = 1", None));
    let ops = Ops::new(Arc::clone(&backend), 1 << 30);
    let err = ops
        .create_volume("slow-vol", one_gib(), None, BTreeMap::new(), 0)
        .await
        .expect_err("still creating after the wait");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("creating"), "{err}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let volume = ops
        .create_volume("slow-vol", one_gib(), None, BTreeMap::new(), 0)
        .await
        .expect("the repeated call finds the first volume");
    assert!(volume.ready);
    let listed = backend
        .list_volumes(&PageRequest {
            cursor: None,
            max_entries: 50,
        })
        .await
        .expect("list");
    let named: Vec<_> = listed
        .items
        .iter()
        .filter(|v| v.name == "slow-vol")
        .collect();
    assert_eq!(named.len(), 1, "the repeat made a second volume: {named:?}");
}

#[tokio::test]
async fn state_conflicts_are_failed_precondition_and_only_malformed_requests_invalid() {
    let Some(sim) = start_sim(&["--volume-delay", "1.5"]) else {
        return;
    };
    let now = signer::timestamp_now;
    let backend: Arc<dyn Backend> = Arc::new(build(&sim.url(), "", None));
    let ops = Ops::new(Arc::clone(&backend), 1 << 30);

    // A volume made by hand (nobody waited for it) is still `creating`.
    let (status, body) = raw(
        &sim,
        reqwest::Method::POST,
        "/v1/volumes",
        now(),
        Some(("application/json", r#"{"name":"raw-creating","size":8}"#)),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let raw_id: serde_json::Value = serde_json::from_str(&body).expect("json");
    let early = CreateSnapshot {
        name: "early".into(),
        source_volume_id: VolumeId::new(raw_id["id"].as_str().expect("id")),
        parameters: BTreeMap::new(),
    };
    let (c, message) = code(
        backend
            .create_snapshot(&early)
            .await
            .expect_err("a creating volume"),
    );
    assert!(
        matches!(c, Code::FailedPrecondition | Code::Unavailable),
        "{c:?}: {message}"
    );

    // A volume still `extending`: the resizer must be told to come back, not to give up.
    let volume = new_volume(&ops, "conflict-src").await;
    let (status, body) = raw(
        &sim,
        reqwest::Method::PUT,
        &format!("/v1/volumes/{}/size", volume.id),
        now(),
        Some(("application/json", r#"{"size":16}"#)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (c, message) = code(
        backend
            .expand_volume(&volume.id, 24 << 30)
            .await
            .expect_err("still extending"),
    );
    assert_eq!(c, Code::Unavailable, "{message}");
    assert!(message.contains("extending"), "{message}");

    // A volume with snapshots.
    let mut settled = false;
    for _ in 0..40 {
        settled = backend
            .get_volume(&volume.id)
            .await
            .expect("get")
            .is_some_and(|v| v.ready);
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "the extend never ended");
    ops.create_snapshot(snapshot_request("conflict-snap", &volume))
        .await
        .expect("snapshot");
    let err = ops
        .delete_volume(&volume.id)
        .await
        .expect_err("a volume with snapshots");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("VolumeHasSnapshots"), "{err}");

    // An attached volume.
    let attached = new_volume(&ops, "conflict-attached").await;
    let (status, body) = raw(
        &sim,
        reqwest::Method::POST,
        &format!("/v1/volumes/{}/servers", attached.id),
        now(),
        Some(("application/json", r#"{"server_id":"srv-1"}"#)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let err = ops
        .delete_volume(&attached.id)
        .await
        .expect_err("an attached volume");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("VolumeInUse"), "{err}");

    // A malformed request stays INVALID_ARGUMENT: a name outside the service's pattern.
    let err = ops
        .create_snapshot(snapshot_request("bad.name", &volume))
        .await
        .expect_err("malformed");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("name"), "{err}");
}

#[tokio::test]
async fn injected_faults_are_retried_or_surfaced_clearly() {
    let Some(sim) = start_sim(&[]) else {
        return;
    };
    let page = PageRequest {
        cursor: None,
        max_entries: 5,
    };
    let backend = build(&sim.url(), FAST_HTTP, None);

    // Two 503s on an idempotent call: retried by the one retry policy, then success.
    sim.faults(serde_json::json!({"rules": [
        {"fault": "status", "status": 503, "count": 2, "method": "GET", "path": "/v1/volumes"}
    ]}))
    .await;
    backend
        .list_volumes(&page)
        .await
        .expect("retried through 503s");
    assert_eq!(sim.fired().await, 2);

    // A 500 is not retried and becomes UNAVAILABLE with the service's words.
    sim.reset_faults().await;
    sim.faults(serde_json::json!({"rules": [{"fault": "status", "status": 500, "method": "GET"}]}))
        .await;
    let (c, message) = code(backend.list_volumes(&page).await.expect_err("500"));
    assert_eq!(c, Code::Unavailable, "{message}");
    assert!(message.contains("HTTP 500"), "{message}");
    assert_eq!(sim.fired().await, 1);

    // 429 for longer than the retries last: UNAVAILABLE, "rate limited".
    sim.reset_faults().await;
    sim.faults(serde_json::json!({"rules": [
        {"fault": "status", "status": 429, "count": -1, "retry_after": 0}
    ]}))
    .await;
    let limited = build(&sim.url(), &format!("{FAST_HTTP}max_attempts = 2\n"), None);
    let (c, message) = code(limited.list_volumes(&page).await.expect_err("429"));
    assert_eq!(c, Code::Unavailable, "{message}");
    assert!(message.contains("rate limited"), "{message}");
    assert_eq!(sim.fired().await, 2);

    // A slow answer beyond the timeout: UNAVAILABLE, "timed out".
    sim.reset_faults().await;
    sim.faults(serde_json::json!({"rules": [{"fault": "timeout", "seconds": 2.5}]}))
        .await;
    let impatient = build(
        &sim.url(),
        &format!("{FAST_HTTP}timeout_seconds = 1\nmax_attempts = 1\n"),
        None,
    );
    let (c, message) = code(impatient.list_volumes(&page).await.expect_err("slow"));
    assert_eq!(c, Code::Unavailable, "{message}");
    assert!(message.contains("timed out"), "{message}");
    sim.reset_faults().await;

    // A snapshot stuck in `creating`: never ready, never duplicated.
    let ops = Ops::new(Arc::new(build(&sim.url(), FAST_HTTP, None)), 1 << 30);
    let volume = new_volume(&ops, "fault-src").await;
    sim.faults(serde_json::json!({"snapshots": "stuck"})).await;
    let stuck = ops
        .create_snapshot(snapshot_request("stuck-snap", &volume))
        .await
        .expect("create");
    for _ in 0..3 {
        let again = ops
            .create_snapshot(snapshot_request("stuck-snap", &volume))
            .await
            .expect("repeat");
        assert_eq!(again.id, stuck.id);
        assert!(!again.ready, "a stuck snapshot reads as ready");
    }
    // A snapshot the service fails: a clear error naming the status, not a retry loop.
    sim.faults(serde_json::json!({"snapshots": "error"})).await;
    let err = ops
        .create_snapshot(snapshot_request("failed-snap", &volume))
        .await
        .expect_err("error status");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("\"error\""), "{err}");
}

#[tokio::test]
async fn credentials_from_request_secrets() {
    let Some(sim) = start_sim(&[]) else {
        return;
    };
    let page = PageRequest {
        cursor: None,
        max_entries: 1,
    };
    let bare: ScpConfig = toml::from_str(&format!("endpoint = \"{}\"", sim.url())).expect("config");
    let backend = ScpBackend::new(bare, None, TODAY).expect("no credentials is allowed");
    backend
        .health()
        .await
        .expect("nothing to check without credentials");
    let (c, message) = code(
        backend
            .list_volumes(&page)
            .await
            .expect_err("no credentials"),
    );
    assert_eq!(c, Code::Unauthenticated, "{message}");
    assert!(message.contains("no credentials"), "{message}");

    let secrets = |pairs: &[(&str, &str)]| {
        Secrets::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    // The second credential is bound to account acct-2 in the simulator.
    let scoped = backend
        .with_secrets(&secrets(&[
            ("access_key", AK2),
            ("secret_key", SK2),
            ("account_id", "acct-2"),
        ]))
        .expect("valid secrets")
        .expect("a scoped backend");
    scoped
        .list_volumes(&page)
        .await
        .expect("request credentials work");

    let wrong = backend
        .with_secrets(&secrets(&[
            ("access_key", AK2),
            ("secret_key", "not-the-key"),
        ]))
        .expect("valid shape")
        .expect("scoped");
    let (c, message) = code(wrong.list_volumes(&page).await.expect_err("wrong key"));
    assert_eq!(c, Code::Unauthenticated, "{message}");
    assert!(message.contains("signature"), "{message}");
    assert!(!message.contains("not-the-key"), "{message}");

    let half = backend
        .with_secrets(&secrets(&[("access_key", AK2)]))
        .err()
        .expect("half a credential");
    assert_eq!(half.kind, ErrorKind::InvalidArgument);
    assert!(!half.message.contains(AK2), "{}", half.message);
    assert!(
        backend
            .with_secrets(&secrets(&[("unrelated", "x")]))
            .expect("ignored")
            .is_none()
    );
}

#[tokio::test]
async fn bad_cursors_are_invalid_cursors() {
    let Some(sim) = start_sim(&[]) else {
        return;
    };
    let backend = build(&sim.url(), "", None);
    for cursor in ["garbage", "3f500f00-ed80-4566-a057-e31760226f9a"] {
        let err = backend
            .list_snapshots(
                &SnapshotFilter::default(),
                &PageRequest {
                    cursor: Some(cursor.to_owned()),
                    max_entries: 2,
                },
            )
            .await
            .expect_err(cursor);
        assert_eq!(err.kind, ErrorKind::InvalidCursor, "{cursor}: {err}");
    }
}

#[test]
fn setup_errors_name_their_key() {
    let missing: ScpConfig =
        toml::from_str("access_key = \"a\"\nsecret_key = \"b\"").expect("toml");
    let err: SetupError = ScpBackend::new(missing, None, TODAY)
        .err()
        .expect("no endpoint");
    assert_eq!(err.key, "endpoint");
    let half: ScpConfig =
        toml::from_str("endpoint = \"https://x.example\"\naccess_key = \"a\"").expect("toml");
    let err = ScpBackend::new(half, None, TODAY).err().expect("half");
    assert_eq!(err.key, "secret_key");
    let unknown = toml::from_str::<ScpConfig>("endpoint = \"https://x\"\nsecret = \"b\"");
    assert!(unknown.is_err());
    let derived: ScpConfig = toml::from_str("region = \"kr-west1\"\nenv = \"e\"").expect("toml");
    assert!(ScpBackend::new(derived, None, TODAY).is_ok());
}
