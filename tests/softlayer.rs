//! The SoftLayer backend against its strict simulator (tests/sims/softlayer.py): the shared
//! conformance suite, then the snapshot behaviours on volumes that exist in the account (this
//! backend cannot order volumes, so the conformance suite's volume-based checks are gated off
//! and are repeated here on simulator-made volumes), through `Ops` as the gRPC services use it.

mod support;
use support::sim;

use snapcsi::backend::softlayer::{SoftLayerBackend, SoftLayerConfig};
use snapcsi::backend::{
    Backend, CreateSnapshot, SnapshotFilter, SnapshotId, VolumeId, conformance,
};
use snapcsi::http::HttpSettings;
use snapcsi::ops::{Ops, SizeRange};
use snapcsi::secret::{Secret, Secrets};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use support::sim::Sim;
use tonic::Code;

const USER: &str = "SL278184";
const KEY: &str = "sim-api-key-0123456789abcdef";

fn start() -> Option<Sim> {
    Sim::start("softlayer.py", &["--username", USER, "--api-key", KEY])
}

fn config(sim: &Sim, key: &str) -> SoftLayerConfig {
    SoftLayerConfig {
        endpoint: format!("{}/rest/v3.1", sim.base()),
        username: USER.into(),
        api_key: Secret::new(key),
        scan_page_size: 2,
        http: HttpSettings {
            backoff_base_ms: 10,
            backoff_cap_ms: 50,
            ..HttpSettings::default()
        },
    }
}

fn backend(sim: &Sim) -> Arc<dyn Backend> {
    Arc::new(
        SoftLayerBackend::new(&config(sim, KEY), Some("test-cluster".into())).expect("backend"),
    )
}

async fn volume(sim: &Sim, snapshot_space: u64) -> VolumeId {
    let v = sim
        .control(
            "/_control/volumes",
            serde_json::json!({"capacityGb": 20, "snapshotCapacityGb": snapshot_space}),
        )
        .await;
    VolumeId::new(v["id"].as_u64().expect("volume id").to_string())
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

#[tokio::test]
async fn softlayer_conforms() {
    let Some(sim) = start() else { return };
    // Volumes of other tenants' making exist in the account; the suite must cope.
    volume(&sim, 10).await;
    let passed = conformance::run(backend(&sim), "sl").await;
    assert_eq!(passed, Ok(9), "{passed:?}");
}

#[tokio::test]
async fn snapshot_lifecycle_idempotency_and_paging_on_existing_volumes() {
    let Some(sim) = start() else { return };
    let ops = Ops::new(backend(&sim), 1 << 30);
    let a = volume(&sim, 10).await;
    let b = volume(&sim, 10).await;

    let first = ops
        .create_snapshot(request("s1", &a))
        .await
        .expect("create");
    assert!(first.ready);
    assert_eq!(first.source_volume_id, a);
    assert_eq!(first.size_bytes, 20 << 30);
    assert_eq!(first.name, "s1");
    let again = ops
        .create_snapshot(request("s1", &a))
        .await
        .expect("repeat");
    assert_eq!(
        again.id, first.id,
        "same name and volume made a second snapshot"
    );
    assert_eq!(
        code(ops.create_snapshot(request("s1", &b)).await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(
            ops.create_snapshot(request("s9", &VolumeId::new("123")))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        sim.calls("SoftLayer_Network_Storage_Iscsi::createSnapshot")
            .await,
        1
    );

    let got = ops.get_snapshot(&first.id).await.expect("get");
    assert_eq!(
        (got.id.clone(), got.name.as_str()),
        (first.id.clone(), "s1")
    );
    let (by_id, _) = ops
        .list_snapshots(Some(&first.id), &SnapshotFilter::default(), 0, "")
        .await
        .expect("list by id");
    assert_eq!(by_id.len(), 1);

    // Paging of one volume's snapshots (resultLimit), and of the whole account.
    let mut made: HashSet<SnapshotId> = [first.id.clone()].into();
    for i in 0..4 {
        made.insert(
            ops.create_snapshot(request(&format!("p{i}"), &a))
                .await
                .expect("create")
                .id,
        );
    }
    let other = ops
        .create_snapshot(request("on-b", &b))
        .await
        .expect("create");
    let filter = SnapshotFilter {
        source_volume_id: Some(a.clone()),
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = ops
            .list_snapshots(None, &filter, 2, &token)
            .await
            .expect("page");
        assert!(items.len() <= 2);
        seen.extend(items.into_iter().map(|s| s.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), made);
    let mut all = HashSet::new();
    let mut token = String::new();
    loop {
        let (items, next) = ops
            .list_snapshots(None, &SnapshotFilter::default(), 2, &token)
            .await
            .expect("page");
        for s in items {
            assert!(all.insert(s.id.clone()), "{} listed twice", s.id);
        }
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert!(made.is_subset(&all) && all.contains(&other.id), "{all:?}");
    assert_eq!(
        code(ops.list_snapshots(None, &filter, 2, "garbage-token").await),
        Code::Aborted
    );

    // Delete twice, then NOT_FOUND; a volume id passed as a snapshot id deletes nothing.
    ops.delete_snapshot(&first.id).await.expect("delete");
    ops.delete_snapshot(&first.id).await.expect("second delete");
    assert_eq!(code(ops.get_snapshot(&first.id).await), Code::NotFound);
    ops.delete_snapshot(&SnapshotId::new(a.as_str()))
        .await
        .expect("delete of a non-snapshot id");
    assert!(ops.get_volume(&a).await.is_ok(), "the volume was deleted");
    ops.delete_snapshot(&SnapshotId::new("not-a-number"))
        .await
        .expect("delete of a malformed id");
}

#[tokio::test]
async fn not_ready_while_the_copy_transaction_runs_and_a_restart_finds_it_by_name() {
    let Some(sim) = start() else { return };
    let a = volume(&sim, 10).await;
    sim.control("/_control", serde_json::json!({"transaction_seconds": 0.6}))
        .await;
    let first = Ops::new(backend(&sim), 1 << 30);
    let pending = first
        .create_snapshot(request("slow", &a))
        .await
        .expect("create");
    assert!(!pending.ready, "ready while the transaction runs");
    // A new driver process (no shared memory) finds it by the name kept in the notes.
    let restarted = Ops::new(backend(&sim), 1 << 30);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let done = restarted
        .create_snapshot(request("slow", &a))
        .await
        .expect("repeat");
    assert_eq!(done.id, pending.id);
    assert!(done.ready);
    assert_eq!(
        sim.calls("SoftLayer_Network_Storage_Iscsi::createSnapshot")
            .await,
        1
    );
    // Another cluster's snapshot of the same name is not ours.
    let elsewhere = Ops::new(
        Arc::new(SoftLayerBackend::new(&config(&sim, KEY), Some("other".into())).expect("b")),
        1 << 30,
    );
    let theirs = elsewhere
        .create_snapshot(request("slow", &a))
        .await
        .expect("create in another cluster");
    assert_ne!(theirs.id, pending.id);
}

#[tokio::test]
async fn no_snapshot_space_is_failed_precondition() {
    let Some(sim) = start() else { return };
    let ops = Ops::new(backend(&sim), 1 << 30);
    let bare = volume(&sim, 0).await;
    let err = ops
        .create_snapshot(request("s", &bare))
        .await
        .expect_err("no snapshot space");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.to_string().contains("snapshot space must be ordered"),
        "{err}"
    );
    assert_eq!(
        sim.calls("SoftLayer_Network_Storage_Iscsi::createSnapshot")
            .await,
        0
    );
}

#[tokio::test]
async fn faults_credentials_and_unsupported_calls() {
    let Some(sim) = start() else { return };
    let ops = Ops::new(backend(&sim), 1 << 30);
    let a = volume(&sim, 10).await;
    // Transient 503s and a rate limit on reads are retried by the one HTTP policy.
    sim::faults(
        &sim.base(),
        serde_json::json!({"rules": [{"fault": "status", "status": 503}, {"fault": "status", "status": 429}]}),
    )
    .await;
    ops.get_volume(&a)
        .await
        .expect("retried through 503 and 429");
    // A create is never retried: a 500 becomes UNAVAILABLE (the sidecar calls again).
    sim::faults(
        &sim.base(),
        serde_json::json!({"rules": [{"fault": "status", "status": 500}]}),
    )
    .await;
    assert_eq!(
        code(ops.create_snapshot(request("f", &a)).await),
        Code::Unavailable
    );
    let made = ops
        .create_snapshot(request("f", &a))
        .await
        .expect("second try");
    assert!(made.ready);

    // Wrong key: UNAUTHENTICATED, and the key is in no message.
    let wrong = SoftLayerBackend::new(&config(&sim, "wrong-key-do-not-print"), None).expect("b");
    let err = wrong.health().await.expect_err("refused");
    assert_eq!(err.kind, snapcsi::backend::ErrorKind::Unauthorized);
    assert!(
        !err.message.contains("wrong-key-do-not-print"),
        "{}",
        err.message
    );
    // Request secrets replace the configured credentials.
    let scoped = wrong
        .with_secrets(&Secrets::from_map(
            [
                ("username".to_owned(), USER.to_owned()),
                ("api_key".to_owned(), KEY.to_owned()),
            ]
            .into(),
        ))
        .expect("secrets")
        .expect("scoped backend");
    scoped
        .health()
        .await
        .expect("secrets from the request work");
    let half = wrong.with_secrets(&Secrets::from_map(
        [("username".to_owned(), USER.to_owned())].into(),
    ));
    assert!(half.is_err());

    // Not offered: volume creation (and so restore/clone), expand.
    let caps = ops.backend().capabilities();
    assert!(!caps.create_delete_volume && !caps.restore_snapshot && !caps.expand_volume);
    assert_eq!(
        code(
            ops.create_volume("v", SizeRange::default(), None, BTreeMap::new(), 0)
                .await
        ),
        Code::Unimplemented
    );
    // Unknown snapshot parameters are refused, the sidecar's tags are kept.
    let mut bad = request("p", &a);
    bad.parameters.insert("tier".into(), "gold".into());
    assert_eq!(code(ops.create_snapshot(bad).await), Code::InvalidArgument);
    let mut tagged = request("p", &a);
    tagged.parameters.insert(
        "csi.storage.k8s.io/volumesnapshot/name".into(),
        "daily".into(),
    );
    ops.create_snapshot(tagged).await.expect("tags are fine");
}

/// Issue 15: should two snapshots carry one CSI name (a create re-sent after its answer was
/// lost), the lookup answers the oldest, every time, not the first its scan meets. Here the
/// newer one sits on the volume the scan visits first.
#[tokio::test]
async fn two_snapshots_of_one_name_answer_the_oldest() {
    let Some(sim) = start() else { return };
    let backend = backend(&sim);
    let scanned_first = volume(&sim, 10).await;
    let scanned_later = volume(&sim, 10).await;
    let older = backend
        .create_snapshot(&request("sl-dup", &scanned_later))
        .await
        .expect("create");
    // createDate has whole seconds.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let newer = backend
        .create_snapshot(&request("sl-dup", &scanned_first))
        .await
        .expect("the re-sent create");
    assert_ne!(older.id, newer.id);
    for _ in 0..2 {
        let found = backend
            .find_snapshot_by_name("sl-dup")
            .await
            .expect("find")
            .expect("found");
        assert_eq!(found.id, older.id, "the answer is not the oldest snapshot");
    }
}
