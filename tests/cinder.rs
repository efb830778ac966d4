//! The Cinder backend against the REAL OpenStack Cinder 29.0.0 (and Keystone 30.0.0), started
//! from PyPI by tests/peers/cinder/cinder-peer.sh, and against the strict v2/v1 simulator
//! (tests/sims/cinder.py). Without Python or the package index the tests skip with a reason,
//! unless SNAPCSI_REQUIRE_PEERS=1 (CI), where they fail.

mod support;
use support::{cinder_peer, sim};

use snapcsi::backend::cinder::CinderBackend;
use snapcsi::backend::cinder::config::CinderConfig;
use snapcsi::backend::{Backend, CreateSnapshot, CreateVolume, ErrorKind, PageRequest, VolumeId};
use snapcsi::backend::{SnapshotFilter, conformance};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cinder_peer::{Peer, require_peers, root};

/// One peer at a time: each is a real multi-service Cinder, and the machine is small.
static PEERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(toml_text: &str) -> CinderConfig {
    let table: toml::Table = toml::from_str(toml_text).expect("toml");
    snapcsi::backend::registry::section("test.toml", "t", &table).expect("valid cinder section")
}

fn backend(toml_text: &str) -> Arc<CinderBackend> {
    Arc::new(CinderBackend::new(config(toml_text), Some("test-cluster".into())).expect("backend"))
}

async fn ready_volume(b: &CinderBackend, name: &str) -> VolumeId {
    let v = b
        .create_volume(&CreateVolume {
            name: name.into(),
            size_bytes: 1,
            source: None,
            parameters: BTreeMap::new(),
            zone: None,
        })
        .await
        .expect("create volume");
    assert!(
        v.ready,
        "create_volume answers once the volume is available"
    );
    v.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cinder_noauth() {
    let _one = PEERS.lock().await;
    let Some(peer) = Peer::start(&[]) else { return };
    let b = backend(&peer.noauth_toml());
    let passed = conformance::run(b.clone() as Arc<dyn Backend>, "conf").await;
    assert_eq!(passed, Ok(9), "{passed:?}");

    // The negotiated microversion is the highest both speak, capped at 3.66.
    let session = b.client().session().await.expect("session");
    assert_eq!(
        session.microversion.map(|m| m.to_string()).as_deref(),
        Some("3.66")
    );

    // Tags: the CSI name, the cluster id and the snapshotter's extra metadata.
    let volume = ready_volume(&b, "tags-src").await;
    let mut parameters = BTreeMap::new();
    parameters.insert(
        "csi.storage.k8s.io/volumesnapshot/name".to_owned(),
        "nightly".to_owned(),
    );
    parameters.insert(
        "csi.storage.k8s.io/volumesnapshot/namespace".to_owned(),
        "team-a".to_owned(),
    );
    parameters.insert("force".to_owned(), "true".to_owned());
    let snap = b
        .create_snapshot(&CreateSnapshot {
            name: "tagged".into(),
            source_volume_id: volume.clone(),
            parameters,
        })
        .await
        .expect("create snapshot");
    let url = format!(
        "{}/v3/{}/snapshots/{}",
        peer.get("CINDER_URL"),
        peer.get("CINDER_PROJECT"),
        snap.id
    );
    let raw: serde_json::Value = reqwest::Client::new()
        .get(url)
        .header(
            "X-Auth-Token",
            format!("admin:{}", peer.get("CINDER_PROJECT")),
        )
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let metadata = &raw["snapshot"]["metadata"];
    assert_eq!(metadata["snapcsi.dev/csi-name"], "tagged", "{raw}");
    assert_eq!(metadata["snapcsi.dev/cluster-id"], "test-cluster");
    assert_eq!(
        metadata["csi.storage.k8s.io/volumesnapshot/namespace"],
        "team-a"
    );

    // An unknown class parameter is refused before anything is sent.
    let err = b
        .create_snapshot(&CreateSnapshot {
            name: "bad-param".into(),
            source_volume_id: volume.clone(),
            parameters: [("forse".to_owned(), "true".to_owned())].into(),
        })
        .await
        .expect_err("unknown parameter");
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("forse"), "{err}");

    // A marker Cinder does not know (404) is a bad cursor (ABORTED).
    let err = b
        .list_snapshots(
            &SnapshotFilter::default(),
            &PageRequest {
                cursor: Some("00000000-0000-0000-0000-000000000000".into()),
                max_entries: 2,
            },
        )
        .await
        .expect_err("bad marker");
    assert_eq!(err.kind, ErrorKind::InvalidCursor, "{err}");

    // A volume with snapshots cannot be deleted: FAILED_PRECONDITION naming the reason.
    let err = b.delete_volume(&volume).await.expect_err("has snapshots");
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");

    // The fake driver's hooks: create fails -> status error -> a clear error naming it.
    let failing = b
        .create_snapshot(&CreateSnapshot {
            name: "fail-snap".into(),
            source_volume_id: volume.clone(),
            parameters: BTreeMap::new(),
        })
        .await;
    let mut err = None;
    if failing.is_ok() {
        for _ in 0..100 {
            match b.find_snapshot_by_name("fail-snap").await {
                Err(e) => {
                    err = Some(e);
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    } else {
        err = failing.err();
    }
    let err = err.expect("a snapshot in status error is reported");
    assert!(err.message.contains("\"error\""), "{err}");

    // Delete fails -> error_deleting -> FAILED_PRECONDITION naming the status.
    let doomed = b
        .create_snapshot(&CreateSnapshot {
            name: "faildel-snap".into(),
            source_volume_id: volume.clone(),
            parameters: BTreeMap::new(),
        })
        .await
        .expect("create");
    for _ in 0..100 {
        if b.get_snapshot(&doomed.id)
            .await
            .expect("get")
            .is_some_and(|s| s.ready)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = b
        .delete_snapshot(&doomed.id)
        .await
        .expect_err("error_deleting");
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message.contains("error_deleting"), "{err}");

    // A volume that fails to create is removed and reported; the next attempt starts clean.
    let err = b
        .create_volume(&CreateVolume {
            name: "fail-vol".into(),
            size_bytes: 1,
            source: None,
            parameters: BTreeMap::new(),
            zone: None,
        })
        .await
        .expect_err("fail- volume");
    assert!(err.message.contains("\"error\""), "{err}");

    // Two objects of one name (issue 15): the oldest answers, every time.
    duplicate_names(&b).await;

    // The restart test needs the driver binary and this peer.
    kill_nine_restart(&peer, &b).await;
}

/// The value of `snapcsi_duplicate_names_total` for `backend` and `kind`.
fn duplicate_count(backend: &str, kind: &str) -> u64 {
    snapcsi::metrics::metrics()
        .render()
        .lines()
        .find(|l| {
            l.starts_with("snapcsi_duplicate_names_total{")
                && l.contains(&format!("backend=\"{backend}\""))
                && l.contains(&format!("kind=\"{kind}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Issue 15: after a controller restart that lost its data directory while a create was in
/// flight, Cinder held two snapshots of one name and every later CreateSnapshot answered the
/// newer one (Cinder lists newest first), not the one already reported ready. The oldest
/// answers, always; the duplicate is counted once.
async fn duplicate_names(b: &Arc<CinderBackend>) {
    let ops = snapcsi::ops::Ops::new(b.clone() as Arc<dyn Backend>, 1 << 30);
    let volume = ready_volume(b, "dup-src").await;
    let request = CreateSnapshot {
        name: "dup-snap".into(),
        source_volume_id: volume.clone(),
        parameters: BTreeMap::new(),
    };
    let first = ops.create_snapshot(request.clone()).await.expect("create");
    // The lost answer: the same create reaches Cinder again (a second apart, so that the
    // creation times differ at any precision).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = b
        .create_snapshot(&request)
        .await
        .expect("the re-sent create");
    assert_ne!(first.id, second.id);
    let counted = duplicate_count("cinder", "snapshot");
    for _ in 0..3 {
        let again = ops.create_snapshot(request.clone()).await.expect("repeat");
        assert_eq!(again.id, first.id, "the answer moved to the newer snapshot");
    }
    assert_eq!(duplicate_count("cinder", "snapshot"), counted + 1);

    let volume_request = CreateVolume {
        name: "dup-vol".into(),
        size_bytes: 1,
        source: None,
        parameters: BTreeMap::new(),
        zone: None,
    };
    let older = b.create_volume(&volume_request).await.expect("volume");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newer = b
        .create_volume(&volume_request)
        .await
        .expect("the re-sent create");
    assert_ne!(older.id, newer.id);
    for _ in 0..2 {
        let found = b
            .find_volume_by_name("dup-vol")
            .await
            .expect("find")
            .expect("found");
        assert_eq!(found.id, older.id, "the answer moved to the newer volume");
    }
    for id in [&first.id, &second.id] {
        b.delete_snapshot(id).await.expect("delete snapshot");
    }
    for id in [&older.id, &newer.id, &volume] {
        b.delete_volume(id).await.expect("delete volume");
    }
}

/// kill -9 the driver right after its CreateSnapshot POST reached Cinder, start it again,
/// repeat the CSI call: exactly one Cinder snapshot exists.
async fn kill_nine_restart(peer: &Peer, b: &CinderBackend) {
    use snapcsi::proto::controller_client::ControllerClient;
    let volume = ready_volume(b, "restart-src").await;
    let proxy = cinder_peer::HoldingProxy::start(peer.get("CINDER_URL")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("snapcsi.toml");
    let toml_text = format!(
        "[backends.c]\ntype = \"cinder\"\nauth_type = \"noauth\"\n\
         endpoint = \"{}/v3/{{project_id}}\"\nproject_id = \"{}\"\n",
        proxy.url(),
        peer.get("CINDER_PROJECT")
    );
    std::fs::write(&config_path, toml_text).expect("config");
    let name = "snapshot-restart-1";
    let request = snapcsi::proto::CreateSnapshotRequest {
        source_volume_id: volume.to_string(),
        name: name.into(),
        ..Default::default()
    };

    let mut first = cinder_peer::DriverProcess::start(dir.path(), &config_path, "a").await;
    let channel = support::connect(&first.socket).await;
    let mut client = ControllerClient::new(channel);
    let pending = {
        let request = request.clone();
        tokio::spawn(async move { client.create_snapshot(request).await })
    };
    proxy.wait_for_create().await;
    first.kill9();
    let _ = pending.await;
    assert_eq!(
        peer.count_named("snapshots", name).await,
        1,
        "the POST reached Cinder before the kill"
    );

    proxy.release();
    let second = cinder_peer::DriverProcess::start(dir.path(), &config_path, "b").await;
    let mut client = ControllerClient::new(support::connect(&second.socket).await);
    let mut answer = None;
    for _ in 0..100 {
        let a = client
            .create_snapshot(request.clone())
            .await
            .expect("repeated CreateSnapshot")
            .into_inner();
        let ready = a.snapshot.as_ref().is_some_and(|s| s.ready_to_use);
        answer = a.snapshot;
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("a snapshot");
    assert!(answer.ready_to_use);
    assert_eq!(
        peer.count_named("snapshots", name).await,
        1,
        "exactly one Cinder snapshot after the restart"
    );
    println!(
        "restart test: one snapshot {} after kill -9",
        answer.snapshot_id
    );
}

/// FAKE_DELAY=2: how many Cinder calls and how long one CreateSnapshot takes until ready, as
/// the snapshotter drives it (repeat the call while ready_to_use is false).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cinder_fake_delay_numbers() {
    let _one = PEERS.lock().await;
    let Some(peer) = Peer::start(&[("FAKE_DELAY", "2")]) else {
        return;
    };
    let b = backend(&peer.noauth_toml());
    let ops = snapcsi::ops::Ops::new(b.clone() as Arc<dyn Backend>, 1 << 30);
    let volume = ready_volume(&b, "delay-src").await;
    b.client().session().await.expect("session");
    let before = b.client().api_calls();
    let started = Instant::now();
    let mut calls_of_csi = 0;
    let request = CreateSnapshot {
        name: "delay-snap".into(),
        source_volume_id: volume.clone(),
        parameters: BTreeMap::new(),
    };
    let mut first_answer = None;
    let snapshot = loop {
        let t = Instant::now();
        let s = ops.create_snapshot(request.clone()).await.expect("create");
        calls_of_csi += 1;
        first_answer.get_or_insert(t.elapsed());
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "CreateSnapshot must not block while Cinder is creating ({:?})",
            t.elapsed()
        );
        if s.ready {
            break s;
        }
        if calls_of_csi == 1 {
            assert!(!s.ready, "with FAKE_DELAY=2 the first answer is not ready");
        }
        // The external-snapshotter's first retry comes after about 100 ms, doubling.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let took = started.elapsed();
    let cinder_calls = b.client().api_calls() - before;
    println!(
        "NUMBERS: CreateSnapshot until ready with FAKE_DELAY=2: {took:?}, {calls_of_csi} CSI \
         calls, {cinder_calls} Cinder API calls (first answer in {:?})",
        first_answer.unwrap_or_default()
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // First call: name lookup + volume lookup + POST; each later call: one name lookup.
    assert_eq!(cinder_calls, 3 + (calls_of_csi - 1));
    // Deleting waits (bounded) while Cinder is still deleting.
    b.delete_snapshot(&snapshot.id).await.expect("delete");
    assert!(b.get_snapshot(&snapshot.id).await.expect("get").is_none());
    b.delete_volume(&volume).await.expect("delete volume");
}

/// The real Keystone in front of the real Cinder: every auth method, catalog discovery, one
/// re-authentication on 401, credentials from request secrets, and no secret in any error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_keystone_auth_methods() {
    let _one = PEERS.lock().await;
    let Some(peer) = Peer::start(&[("KEYSTONE", "1")]) else {
        return;
    };
    let auth_url = peer.get("KEYSTONE_URL");
    let password = peer.get("KEYSTONE_DEMO_PASSWORD");
    let mut exercised = Vec::new();

    // Password, user and project by name + domain; endpoint from the catalog.
    let by_name = format!(
        "type = \"cinder\"\nauth_type = \"password\"\nauth_url = \"{auth_url}\"\n\
         username = \"demo\"\nuser_domain_name = \"Default\"\npassword = \"{password}\"\n\
         project_name = \"demo\"\nproject_domain_name = \"Default\"\nregion = \"RegionOne\"\n"
    );
    let b = backend(&by_name);
    let passed = conformance::run(b.clone() as Arc<dyn Backend>, "ks").await;
    assert_eq!(passed, Ok(9), "{passed:?}");
    let session = b.client().session().await.expect("session");
    assert!(
        session
            .endpoint
            .ends_with(&format!("/v3/{}", peer.get("KEYSTONE_DEMO_PROJECT_ID"))),
        "catalog endpoint {}",
        session.endpoint
    );
    exercised.push("password (user and project by name + domain)");

    // `snapcsi check-config` on the same cloud: good credentials OK, a wrong password a
    // PROBLEM line (exit 1) that does not repeat the password.
    let check = |body: String| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("check.toml");
        std::fs::write(&path, format!("[backends.east]\n{body}")).expect("config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapcsi"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("run check-config");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check(by_name.clone());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("OK      backend east (cinder)"), "{out}");
    let wrong = by_name.replace(
        &format!("password = \"{password}\""),
        "password = \"not-the-password\"",
    );
    let (code, out) = check(wrong);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("PROBLEM backend east (cinder)"), "{out}");
    assert!(!out.contains("not-the-password"), "{out}");
    check_config_explains_keystone(&peer, &by_name, password).await;

    // One re-authentication when Cinder refuses a revoked token.
    let revoked = session.token().expose().to_owned();
    let status = reqwest::Client::new()
        .delete(format!("{auth_url}/auth/tokens"))
        .header("X-Auth-Token", peer.get("KEYSTONE_ADMIN_TOKEN"))
        .header("X-Subject-Token", &revoked)
        .send()
        .await
        .expect("revoke")
        .status();
    assert_eq!(status.as_u16(), 204, "token revocation");
    let before = b.client().auth_calls();
    b.health().await.expect("health after revocation");
    assert!(b.client().auth_calls() > before, "a new token was fetched");
    let renewed = b.client().session().await.expect("session");
    assert_ne!(renewed.token().expose(), revoked);

    // Password by ids.
    let by_id = format!(
        "type = \"cinder\"\nauth_type = \"password\"\nauth_url = \"{auth_url}\"\n\
         user_id = \"{}\"\npassword = \"{password}\"\nproject_id = \"{}\"\n",
        peer.get("KEYSTONE_DEMO_USER_ID"),
        peer.get("KEYSTONE_DEMO_PROJECT_ID")
    );
    backend(&by_id).health().await.expect("password by id");
    exercised.push("password (user and project by id)");

    // Application credential by id, and by name + user.
    let secret = peer.get("KEYSTONE_APPCRED_SECRET");
    let ac_id = format!(
        "type = \"cinder\"\nauth_type = \"application_credential\"\nauth_url = \"{auth_url}\"\n\
         application_credential_id = \"{}\"\napplication_credential_secret = \"{secret}\"\n",
        peer.get("KEYSTONE_APPCRED_ID")
    );
    let ac = backend(&ac_id);
    let volume = ready_volume(&ac, "appcred-src").await;
    let snap = ac
        .create_snapshot(&CreateSnapshot {
            name: "appcred-snap".into(),
            source_volume_id: volume.clone(),
            parameters: BTreeMap::new(),
        })
        .await
        .expect("snapshot with an application credential");
    ac.delete_snapshot(&snap.id).await.expect("delete snapshot");
    ac.delete_volume(&volume).await.expect("delete volume");
    exercised.push("application credential (id + secret)");
    let ac_name = format!(
        "type = \"cinder\"\nauth_type = \"application_credential\"\nauth_url = \"{auth_url}\"\n\
         application_credential_name = \"{}\"\nusername = \"demo\"\n\
         user_domain_id = \"default\"\napplication_credential_secret = \"{secret}\"\n",
        peer.get("KEYSTONE_APPCRED_NAME")
    );
    backend(&ac_name).health().await.expect("appcred by name");
    exercised.push("application credential (name + user + secret)");

    // A pre-issued token: through Keystone (token method, scoped), and sent as it is to a
    // fixed endpoint (no Keystone call at all, Rackspace-style).
    let token = renewed.token().expose().to_owned();
    let via_keystone = format!(
        "type = \"cinder\"\nauth_type = \"token\"\nauth_url = \"{auth_url}\"\ntoken = \"{token}\"\n\
         project_id = \"{}\"\n",
        peer.get("KEYSTONE_DEMO_PROJECT_ID")
    );
    backend(&via_keystone).health().await.expect("token method");
    exercised.push("token (Keystone token method)");
    let fixed = format!(
        "type = \"cinder\"\nauth_type = \"token\"\ntoken = \"{token}\"\n\
         endpoint = \"{}/v3/{{project_id}}\"\nproject_id = \"{}\"\n",
        peer.get("CINDER_URL"),
        peer.get("KEYSTONE_DEMO_PROJECT_ID")
    );
    let f = backend(&fixed);
    f.health().await.expect("fixed token and endpoint");
    assert_eq!(f.client().auth_calls(), 1, "only the version document");
    exercised.push("token (fixed, no Keystone)");

    // A wrong password: UNAUTHENTICATED, and the password is in no message.
    let wrong = by_name.replace(password, "not-the-password-xyzzy");
    let err = backend(&wrong).health().await.expect_err("wrong password");
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    assert!(!err.message.contains("xyzzy"), "{err}");
    assert!(!format!("{:?}", config(&wrong)).contains("xyzzy"));

    // A region the catalog does not have: a clear error naming what was looked for.
    let err = backend(&by_name.replace("RegionOne", "Atlantis"))
        .health()
        .await
        .expect_err("no such region");
    assert!(err.message.contains("Atlantis"), "{err}");

    // Request secrets override the configured identity (multi-tenant classes).
    let configured = backend(&wrong);
    let secrets =
        snapcsi::secret::Secrets::from_map([("password".to_owned(), password.to_owned())].into());
    let scoped = configured
        .with_secrets(&secrets)
        .expect("valid secrets")
        .expect("secrets apply");
    scoped.health().await.expect("credentials from the request");
    let again = configured
        .with_secrets(&secrets)
        .expect("valid")
        .expect("applies");
    assert!(Arc::ptr_eq(&scoped, &again), "scoped backends are cached");
    exercised.push("password from CSI request secrets");

    println!(
        "NUMBERS: Keystone auth methods exercised: {}",
        exercised.join("; ")
    );
}

/// `snapcsi check-config` against the real Keystone and Cinder, as an operator reads it: the
/// negotiated API version on an OK line; for each of Keystone's indistinguishable 401s (wrong
/// password, unknown project, a project the user has no role on, a wrong application
/// credential secret) what to check for the auth method in use; and one line per backend even
/// where the server answers an HTML page.
async fn check_config_explains_keystone(peer: &Peer, by_name: &str, password: &str) {
    let auth_url = peer.get("KEYSTONE_URL");
    let created = reqwest::Client::new()
        .post(format!("{auth_url}/projects"))
        .header("X-Auth-Token", peer.get("KEYSTONE_ADMIN_TOKEN"))
        .json(&serde_json::json!({"project": {"name": "norole", "domain_id": "default"}}))
        .send()
        .await
        .expect("create a project without roles")
        .status();
    assert_eq!(created.as_u16(), 201, "project norole");
    let appcred = |secret: &str| {
        format!(
            "type = \"cinder\"\nauth_type = \"application_credential\"\nauth_url = \"{auth_url}\"\n\
             application_credential_id = \"{}\"\napplication_credential_secret = \"{secret}\"\n",
            peer.get("KEYSTONE_APPCRED_ID")
        )
    };
    let project = |name: &str| {
        by_name.replace(
            "project_name = \"demo\"",
            &format!("project_name = \"{name}\""),
        )
    };
    // Keystone's root has no API under /nope: its web server answers a page, not JSON.
    let keystone_root = auth_url.trim_end_matches("/v3");
    let instances = [
        ("good", by_name.to_owned()),
        (
            "wrong-password",
            by_name.replace(
                &format!("password = \"{password}\""),
                "password = \"xyzzy-wrong\"",
            ),
        ),
        ("unknown-project", project("no-such-project")),
        ("role-less-project", project("norole")),
        ("bad-appcred-secret", appcred("xyzzy-not-the-secret")),
        ("appcred", appcred(peer.get("KEYSTONE_APPCRED_SECRET"))),
        (
            "html",
            by_name.replace(auth_url, &format!("{keystone_root}/nope/v3")),
        ),
    ];
    let mut text = "default_backend = \"good\"\n".to_owned();
    for (name, body) in &instances {
        text.push_str(&format!("[backends.{name}]\n{body}"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("check.toml");
    std::fs::write(&path, &text).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_snapcsi"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("check-config on the real Keystone + Cinder:\n{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(!stdout.contains("xyzzy"), "a secret leaked: {stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        instances.len(),
        "one line per backend:\n{stdout}"
    );
    let line = |name: &str| {
        let prefix = format!("backend {name} (cinder): ");
        *lines
            .iter()
            .find(|l| l.contains(&prefix))
            .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"))
    };
    for ok in ["good", "appcred"] {
        let l = line(ok);
        assert!(l.starts_with("OK "), "{l}");
        // The microversion negotiated with Cinder 29 (which speaks up to 3.71), capped at 3.66.
        assert!(l.contains("api version v3 (microversion 3.66);"), "{l}");
    }
    for name in ["wrong-password", "unknown-project", "role-less-project"] {
        let l = line(name);
        assert!(l.starts_with("PROBLEM "), "{l}");
        assert!(l.contains("401"), "{l}");
        for cause in [
            "auth_type = \"password\"",
            "user \"demo\" in domain \"Default\" exists",
            "the password is this user's",
            "project \"",
            "has a role",
        ] {
            assert!(l.contains(cause), "{name}: the hint lacks {cause:?}: {l}");
        }
    }
    let l = line("role-less-project");
    assert!(
        l.contains("project \"norole\" in domain \"Default\""),
        "{l}"
    );
    let l = line("bad-appcred-secret");
    assert!(l.starts_with("PROBLEM ") && l.contains("401"), "{l}");
    for cause in [
        "auth_type = \"application_credential\"",
        "application_credential_secret",
        "expired",
    ] {
        assert!(l.contains(cause), "the hint lacks {cause:?}: {l}");
    }
    assert!(!l.contains("password is"), "{l}");
    let l = line("html");
    assert!(l.starts_with("PROBLEM "), "{l}");
    assert!(l.contains("HTML page"), "{l}");
}

/// The strict simulator of the v2 API (seed 004) and the Rackspace v1 dialect (seed 001).
struct Sim {
    child: std::process::Child,
    port: u16,
}

impl Sim {
    fn start(dialect: &str) -> Option<Sim> {
        use std::io::BufRead;
        let spawned = Command::new("python3")
            .arg(root().join("tests/sims/cinder.py"))
            .args(["--dialect", dialect, "--port", "0", "--token", "sim-token"])
            .args(["--tenant", "5a1e5a1e", "--delay", "0.3"])
            .stdout(std::process::Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                assert!(!require_peers(), "python3 for the simulator: {e}");
                eprintln!("SKIPPED: python3 is not available: {e}");
                return None;
            }
        };
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("simulator said {line:?}"));
        Some(Sim { child, port })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn toml(&self, dialect: &str, token: &str) -> String {
        format!(
            "type = \"cinder\"\ndialect = \"{dialect}\"\nauth_type = \"token\"\ntoken = \"{token}\"\n\
             endpoint = \"{}/{dialect}/{{project_id}}\"\nproject_id = \"5a1e5a1e\"\n\
             volume_wait_seconds = 2\n[http]\nbackoff_base_ms = 20\nbackoff_cap_ms = 100\n",
            self.url()
        )
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post_raw(url: String, token: &str, body: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("X-Auth-Token", token)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_v2_and_v1_dialects() {
    for dialect in ["v2", "v1"] {
        let Some(sim) = Sim::start(dialect) else {
            return;
        };
        let b = backend(&sim.toml(dialect, "sim-token"));
        let passed = conformance::run(b.clone() as Arc<dyn Backend>, dialect).await;
        assert_eq!(passed, Ok(9), "{dialect}: {passed:?}");
        assert_eq!(b.capabilities().expand_volume, dialect == "v2");

        // The simulator is strict: the other dialect's field names and a missing token fail.
        let volume = ready_volume(&b, &format!("{dialect}-strict")).await;
        let base = format!("{}/{dialect}/5a1e5a1e/snapshots", sim.url());
        let (right, wrong) = if dialect == "v2" {
            ("name", "display_name")
        } else {
            ("display_name", "name")
        };
        let body =
            |field: &str| format!(r#"{{"snapshot": {{"{field}": "x", "volume_id": "{volume}"}}}}"#);
        assert_eq!(post_raw(base.clone(), "sim-token", &body(wrong)).await, 400);
        assert_eq!(post_raw(base.clone(), "wrong", &body(right)).await, 401);
        let created = post_raw(base.clone(), "sim-token", &body(right)).await;
        assert_eq!(created, if dialect == "v2" { 202 } else { 200 });

        // Wrong token configured: UNAUTHENTICATED.
        let err = backend(&sim.toml(dialect, "stale"))
            .health()
            .await
            .expect_err("bad token");
        assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");

        // Transient faults are retried on reads (503, then 429 with Retry-After).
        sim::faults(
            &sim.url(),
            serde_json::json!({"rules": [{"fault": "status", "status": 503, "count": 2}]}),
        )
        .await;
        assert!(b.get_volume(&volume).await.expect("retried").is_some());
        sim::faults(
            &sim.url(),
            serde_json::json!({"rules": [{"fault": "status", "status": 429, "retry_after": 1}]}),
        )
        .await;
        assert!(b.get_volume(&volume).await.expect("retried").is_some());
        // ... but never on a create: the caller repeats the CSI call, found by name.
        sim::faults(
            &sim.url(),
            serde_json::json!({"rules": [{"fault": "status", "status": 503}]}),
        )
        .await;
        let err = b
            .create_snapshot(&CreateSnapshot {
                name: format!("{dialect}-once"),
                source_volume_id: volume.clone(),
                parameters: BTreeMap::new(),
            })
            .await
            .expect_err("503 on create");
        // 503: refused before acting, so not an unknown outcome (UNAVAILABLE to the sidecar).
        assert_eq!(err.kind, ErrorKind::Throttled, "{err}");

        // A create stuck in `creating`: CreateVolume answers "still in progress" after its
        // bounded wait (the provisioner calls again), not an endless block.
        sim::faults(&sim.url(), serde_json::json!({"snapshots": "stuck"})).await;
        let started = Instant::now();
        let err = b
            .create_volume(&CreateVolume {
                name: format!("{dialect}-stuck"),
                size_bytes: 1,
                source: None,
                parameters: BTreeMap::new(),
                zone: None,
            })
            .await
            .expect_err("stuck");
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let snap = b
            .create_snapshot(&CreateSnapshot {
                name: format!("{dialect}-stuck-snap"),
                source_volume_id: volume.clone(),
                parameters: BTreeMap::new(),
            })
            .await
            .expect("create answers at once");
        assert!(!snap.ready, "a creating snapshot is not ready_to_use");
        sim::faults(&sim.url(), serde_json::json!({"snapshots": "normal"})).await;

        if dialect == "v1" {
            let err = b
                .create_snapshot(&CreateSnapshot {
                    name: "v1-force".into(),
                    source_volume_id: volume.clone(),
                    parameters: [("force".to_owned(), "true".to_owned())].into(),
                })
                .await
                .expect_err("no force in v1");
            assert_eq!(err.kind, ErrorKind::InvalidArgument);
        }
        let stats: serde_json::Value = reqwest::get(format!("{}/_sim/stats", sim.url()))
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        println!("{dialect} simulator: {} API requests", stats["requests"]);
    }
}

#[test]
fn config_errors_name_the_file_and_key() {
    let text = "[backends.east]\ntype = \"cinder\"\nauth_type = \"password\"\n\
                username = \"u\"\nuser_domain_name = \"Default\"\npassword = \"hunter2\"\n\
                project_id = \"p\"\n";
    let file = snapcsi::config::FileConfig::parse("snap.toml", text).expect("parses");
    let err = snapcsi::backend::registry::build("snap.toml", &file)
        .err()
        .expect("no auth_url");
    assert_eq!(err.key, "backends.east.auth_url", "{err}");
    assert!(err.to_string().starts_with("config snap.toml:"), "{err}");
    assert!(!err.to_string().contains("hunter2"));
    let typo = text.replace("auth_type", "auth_typ");
    let file = snapcsi::config::FileConfig::parse("snap.toml", &typo).expect("parses");
    let err = snapcsi::backend::registry::build("snap.toml", &file)
        .err()
        .expect("unknown key");
    assert!(err.to_string().contains("auth_typ"), "{err}");
    let dialect = format!("{text}auth_url = \"http://k/v3\"\ndialect = \"v4\"\n");
    let file = snapcsi::config::FileConfig::parse("snap.toml", &dialect).expect("parses");
    let err = snapcsi::backend::registry::build("snap.toml", &file)
        .err()
        .expect("bad dialect");
    assert!(err.to_string().contains("v4"), "{err}");
    let ok = format!("{text}auth_url = \"http://k/v3\"\n");
    let file = snapcsi::config::FileConfig::parse("snap.toml", &ok).expect("parses");
    assert!(snapcsi::backend::registry::build("snap.toml", &file).is_ok());
}

/// Group snapshots are a documented limit of the Cinder backend (README "Group snapshots"):
/// Cinder 29 runs `group_snapshots` (3.14+) with a driver lacking consistent group snapshots,
/// its fake driver included, as one snapshot after the other, which is not the write-order
/// consistency CSI requires. So the capability is off, the backend call answers Unsupported
/// naming the backend, and the driver neither serves nor advertises the GroupController.
#[tokio::test]
async fn group_snapshots_are_not_offered_and_say_why() {
    let toml_text = "type = \"cinder\"\nauth_type = \"noauth\"\n\
                     endpoint = \"http://127.0.0.1:9/v3/{project_id}\"\nproject_id = \"p\"\n";
    let b = backend(toml_text);
    assert!(!b.capabilities().group_snapshot);
    let err = b
        .create_group_snapshot(&snapcsi::backend::CreateGroupSnapshot {
            name: "g".into(),
            source_volume_ids: vec![VolumeId::new("v")],
            parameters: BTreeMap::new(),
        })
        .await
        .expect_err("not offered");
    assert_eq!(err.kind, ErrorKind::Unsupported);
    assert!(err.message.contains("cinder"), "{}", err.message);

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("snapcsi.toml");
    std::fs::write(&config_path, format!("[backends.c]\n{toml_text}")).expect("config");
    let driver = support::Driver::start(&[
        "--config",
        config_path.to_str().expect("utf-8 path"),
        "--mode",
        "controller",
    ])
    .await;
    let caps = driver
        .identity()
        .get_plugin_capabilities(snapcsi::proto::GetPluginCapabilitiesRequest {})
        .await
        .expect("plugin capabilities")
        .into_inner();
    let group_service =
        snapcsi::proto::plugin_capability::service::Type::GroupControllerService as i32;
    assert!(
        !caps.capabilities.iter().any(|c| matches!(
            &c.r#type,
            Some(snapcsi::proto::plugin_capability::Type::Service(s)) if s.r#type == group_service
        )),
        "{caps:?}"
    );
    let status =
        snapcsi::proto::group_controller_client::GroupControllerClient::new(driver.channel.clone())
            .create_volume_group_snapshot(snapcsi::proto::CreateVolumeGroupSnapshotRequest {
                name: "g".into(),
                source_volume_ids: vec!["v".into()],
                ..Default::default()
            })
            .await
            .expect_err("not served");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}
