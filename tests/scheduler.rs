//! `snapcsi scheduler` against the real kube-apiserver + etcd (started here, on free ports),
//! with the SnapshotSchedule CRD from deploy/ and the snapshot CRDs of external-snapshotter
//! v8.6.0. Time is a fake clock the test moves, so slots, downtime and Lease expiry take no
//! waiting.
//!
//! Nothing else runs in this cluster (no snapshot-controller, no PV binder): the test itself
//! marks PVCs `Bound` and VolumeSnapshots `readyToUse: true` by patching their status, which is
//! what those controllers would do.
//!
//! Without the control-plane binaries the cluster test skips loudly; with
//! `SNAPCSI_REQUIRE_PEERS=1` (CI) it fails instead.

mod support;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use snapcsi::kube::Clock;
use snapcsi::kube::controller::{
    Scheduler, SchedulerConfig, snapshot_name, volume_snapshot_resource,
};
use snapcsi::kube::crd::SnapshotSchedule;
use std::path::Path;
use std::sync::{Arc, Mutex};
use support::cluster::ControlPlane;

/// The clock the test moves.
struct FakeClock(Mutex<Timestamp>);

impl FakeClock {
    fn set(&self, t: Timestamp) {
        *self.0.lock().expect("clock") = t;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock")
    }
}

fn minutes(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

fn at(base: Timestamp, offset: SignedDuration) -> Timestamp {
    base.checked_add(offset).expect("time in range")
}

#[test]
fn committed_crd_matches_the_rust_type() {
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/snapshotschedule-crd.yaml"),
    )
    .expect("deploy/base/snapshotschedule-crd.yaml");
    assert!(
        committed == snapcsi::kube::crd::crd_yaml(),
        "deploy/base/snapshotschedule-crd.yaml is stale: regenerate it with \
         `cargo run -- scheduler crd > deploy/base/snapshotschedule-crd.yaml`"
    );
}

#[test]
fn crd_subcommand_prints_the_committed_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapcsi"))
        .args(["scheduler", "crd"])
        .output()
        .expect("run snapcsi");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        snapcsi::kube::crd::crd_yaml()
    );
}

/// One namespace of one scenario: its clients and helpers.
struct Env {
    client: Client,
    ns: String,
    clock: Arc<FakeClock>,
}

impl Env {
    async fn new(client: &Client, ns: &str, clock: &Arc<FakeClock>) -> Env {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        Env {
            client: client.clone(),
            ns: ns.to_owned(),
            clock: clock.clone(),
        }
    }

    fn scheduler(&self, identity: &str, lease: &str) -> Scheduler {
        Scheduler::new(
            self.client.clone(),
            self.clock.clone(),
            SchedulerConfig {
                namespace: Some(self.ns.clone()),
                lease_namespace: self.ns.clone(),
                lease_name: lease.to_owned(),
                identity: identity.to_owned(),
                lease_duration_seconds: 15,
            },
        )
    }

    fn schedules(&self) -> Api<SnapshotSchedule> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn snapshots(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &volume_snapshot_resource())
    }

    /// A PVC with `labels`, marked Bound (or left Pending) by patching its status.
    async fn pvc(&self, name: &str, labels: serde_json::Value, bound: bool) {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &self.ns);
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "snapcsi",
            },
        }))
        .expect("pvc");
        api.create(&PostParams::default(), &pvc)
            .await
            .expect("create pvc");
        if bound {
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await
            .expect("mark pvc Bound");
        }
    }

    async fn schedule(&self, name: &str, spec: serde_json::Value) -> SnapshotSchedule {
        let object: SnapshotSchedule = serde_json::from_value(json!({
            "apiVersion": "snapcsi.dev/v1alpha1",
            "kind": "SnapshotSchedule",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("schedule");
        self.schedules()
            .create(&PostParams::default(), &object)
            .await
            .expect("create schedule")
    }

    async fn get_schedule(&self, name: &str) -> SnapshotSchedule {
        self.schedules().get(name).await.expect("get schedule")
    }

    /// Names of the VolumeSnapshots in the namespace, sorted.
    async fn snapshot_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .snapshots()
            .list(&ListParams::default())
            .await
            .expect("list snapshots")
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        names.sort();
        names
    }

    /// What snapshot-controller would do once the snapshot is cut.
    async fn mark_ready(&self, name: &str) {
        self.snapshots()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"readyToUse": true}})),
            )
            .await
            .expect("mark snapshot ready");
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        api.list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }
}

async fn step(scheduler: &Scheduler) -> bool {
    scheduler.step().await.expect("step").leading
}

fn ready_condition(schedule: &SnapshotSchedule) -> (String, String, String) {
    let status = schedule.status.clone().expect("status written");
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// A slot boundary of `*/10 * * * *` comfortably after the schedule's creation.
fn first_slot(schedule: &SnapshotSchedule) -> Timestamp {
    let created = schedule
        .metadata
        .creation_timestamp
        .as_ref()
        .expect("creationTimestamp")
        .0;
    let ten = 600;
    let secs = created.as_second() / ten * ten + ten;
    Timestamp::from_second(secs).expect("slot")
}

async fn slots_restart_and_downtime(client: &Client, clock: &Arc<FakeClock>) {
    let env = Env::new(client, "slots", clock).await;
    env.pvc("db-0", json!({"app": "db"}), true).await;
    env.pvc("db-1", json!({"app": "db"}), true).await;
    env.pvc("db-pending", json!({"app": "db"}), false).await;
    env.pvc("web", json!({"app": "web"}), true).await;
    let schedule = env
        .schedule(
            "every10",
            json!({"selector": {"matchLabels": {"app": "db"}}, "schedule": "*/10 * * * *",
                   "volumeSnapshotClassName": "snapcsi"}),
        )
        .await;
    let s0 = first_slot(&schedule);
    let a = env.scheduler("replica-a", "slots-lease");

    clock.set(at(s0, minutes(-1)));
    assert!(step(&a).await, "a lone replica leads");
    assert!(env.snapshot_names().await.is_empty(), "no slot is due yet");
    let status = env.get_schedule("every10").await.status.expect("status");
    assert_eq!(status.next_run, Some(s0.to_string()));
    assert_eq!(
        ready_condition(&env.get_schedule("every10").await).0,
        "True"
    );

    clock.set(at(s0, SignedDuration::from_secs(1)));
    step(&a).await;
    let expected = vec![
        snapshot_name("every10", "db-0", s0),
        snapshot_name("every10", "db-1", s0),
    ];
    assert_eq!(
        env.snapshot_names().await,
        expected,
        "one snapshot per bound, selected PVC"
    );
    assert_eq!(
        expected[0],
        format!("every10-db-0-{}", s0.strftime("%Y%m%d%H%M"))
    );
    let created = env.snapshots().get(&expected[0]).await.expect("snapshot");
    let labels = created.labels();
    assert_eq!(labels["snapcsi.dev/schedule"], "every10");
    assert_eq!(labels["snapcsi.dev/pvc"], "db-0");
    assert_eq!(
        labels["snapcsi.dev/schedule-uid"],
        schedule.uid().expect("uid")
    );
    assert_eq!(
        created.data["spec"]["source"]["persistentVolumeClaimName"],
        "db-0"
    );
    assert_eq!(created.data["spec"]["volumeSnapshotClassName"], "snapcsi");
    let status = env.get_schedule("every10").await.status.expect("status");
    assert_eq!(status.last_run, Some(s0.to_string()));
    assert_eq!(status.next_run, Some(at(s0, minutes(10)).to_string()));
    assert_eq!(status.snapshots, 2);
    assert_eq!(env.events("SnapshotCreated").await.len(), 2);

    // The same step again takes nothing new.
    step(&a).await;
    assert_eq!(env.snapshot_names().await, expected);

    // Restart: a new process (new identity) after the old one gave up the Lease.
    a.elector().release().await.expect("release");
    let b = env.scheduler("replica-b", "slots-lease");
    assert!(step(&b).await);
    assert_eq!(
        env.snapshot_names().await,
        expected,
        "a restart does not double a slot"
    );
    // A crash between the create and the status write: the status forgets the slot, the
    // names make the repeat a no-op.
    env.schedules()
        .patch_status(
            "every10",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastRun": null}})),
        )
        .await
        .expect("forget lastRun");
    assert!(step(&b).await);
    assert_eq!(
        env.snapshot_names().await,
        expected,
        "AlreadyExists counts as taken"
    );
    let status = env.get_schedule("every10").await.status.expect("status");
    assert_eq!(status.last_run, Some(s0.to_string()));
    assert_eq!(
        ready_condition(&env.get_schedule("every10").await).0,
        "True"
    );

    // Downtime over three slots (s0+10, +20, +30): one snapshot per PVC, the latest slot.
    let s3 = at(s0, minutes(30));
    clock.set(at(s3, SignedDuration::from_secs(20)));
    step(&b).await;
    let mut expected_after = expected.clone();
    expected_after.push(snapshot_name("every10", "db-0", s3));
    expected_after.push(snapshot_name("every10", "db-1", s3));
    expected_after.sort();
    assert_eq!(
        env.snapshot_names().await,
        expected_after,
        "after downtime: one slot, not three"
    );
    let status = env.get_schedule("every10").await.status.expect("status");
    assert_eq!(status.last_run, Some(s3.to_string()));
    eprintln!("scenario slots/restart/downtime: ok");
}

async fn retention(client: &Client, clock: &Arc<FakeClock>) {
    let env = Env::new(client, "retention", clock).await;
    env.pvc("data", json!({"app": "db"}), true).await;
    let schedule = env
        .schedule(
            "keep",
            json!({"selector": {}, "schedule": "*/10 * * * *",
                   "retention": {"maxCount": 2, "maxAge": "35m"}}),
        )
        .await;
    let s0 = first_slot(&schedule);
    let name = |k: i64| snapshot_name("keep", "data", at(s0, minutes(10 * k)));
    // Look-alikes that are not ours: another schedule's uid, and one made by hand. Both ready
    // and old: retention must never touch them.
    for (foreign, labels) in [
        (
            "foreign-uid",
            json!({"snapcsi.dev/schedule": "keep", "snapcsi.dev/schedule-uid": "not-this-one",
                   "snapcsi.dev/pvc": "data", "snapcsi.dev/slot": "200001010000",
                   "app.kubernetes.io/managed-by": "snapcsi-scheduler"}),
        ),
        ("by-hand", json!({"snapcsi.dev/pvc": "data"})),
    ] {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": foreign, "labels": labels},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
        }))
        .expect("snapshot");
        env.snapshots()
            .create(&PostParams::default(), &object)
            .await
            .expect("create foreign snapshot");
        env.mark_ready(foreign).await;
    }
    let s = env.scheduler("r", "retention-lease");
    for k in 0..4 {
        clock.set(at(s0, minutes(10 * k) + SignedDuration::from_secs(1)));
        step(&s).await;
    }
    let mut all = vec![
        name(0),
        name(1),
        name(2),
        name(3),
        "by-hand".into(),
        "foreign-uid".into(),
    ];
    all.sort();
    assert_eq!(
        env.snapshot_names().await,
        all,
        "nothing ready, nothing pruned"
    );

    // Ready: slots 0, 1, 2; slot 3 is still being cut. maxCount 2 of the ready ones: slot 0 goes.
    for k in 0..3 {
        env.mark_ready(&name(k)).await;
    }
    step(&s).await;
    let mut left = vec![
        name(1),
        name(2),
        name(3),
        "by-hand".into(),
        "foreign-uid".into(),
    ];
    left.sort();
    assert_eq!(
        env.snapshot_names().await,
        left,
        "maxCount keeps the 2 newest ready"
    );

    // s0+50m: slot 5 is taken (4 was missed); maxAge 35m removes slot 1 (40 min old).
    clock.set(at(s0, minutes(50) + SignedDuration::from_secs(1)));
    step(&s).await;
    let mut left = vec![
        name(2),
        name(3),
        name(5),
        "by-hand".into(),
        "foreign-uid".into(),
    ];
    left.sort();
    assert_eq!(env.snapshot_names().await, left, "maxAge by slot time");

    // s0+56m: slot 2 is 36 min old and ready -> goes; slot 3 is older than... no: 26 min, and
    // slot 5 is not ready -> both stay whatever the limits.
    env.mark_ready(&name(3)).await;
    clock.set(at(s0, minutes(56)));
    step(&s).await;
    let mut left = vec![name(3), name(5), "by-hand".into(), "foreign-uid".into()];
    left.sort();
    assert_eq!(env.snapshot_names().await, left);
    let status = env.get_schedule("keep").await.status.expect("status");
    assert_eq!((status.snapshots, status.ready_snapshots), (2, 1));
    assert_eq!(env.events("SnapshotPruned").await.len(), 3);

    // A snapshot not ready is kept even past maxAge.
    clock.set(at(s0, minutes(200)));
    step(&s).await;
    let names = env.snapshot_names().await;
    assert!(
        names.contains(&name(5)),
        "not-ready slot 5 kept past maxAge: {names:?}"
    );
    assert!(
        !names.contains(&name(3)),
        "ready slot 3 pruned past maxAge: {names:?}"
    );
    assert!(names.contains(&"foreign-uid".to_owned()) && names.contains(&"by-hand".to_owned()));
    eprintln!("scenario retention: ok");
}

async fn paused(client: &Client, clock: &Arc<FakeClock>) {
    let env = Env::new(client, "paused", clock).await;
    env.pvc("data", json!({}), true).await;
    let schedule = env
        .schedule(
            "hold",
            json!({"selector": {}, "schedule": "*/10 * * * *", "paused": true}),
        )
        .await;
    let s0 = first_slot(&schedule);
    let s = env.scheduler("p", "paused-lease");
    clock.set(at(s0, SignedDuration::from_secs(1)));
    step(&s).await;
    assert!(env.snapshot_names().await.is_empty(), "paused: no snapshot");
    let (status, reason, _) = ready_condition(&env.get_schedule("hold").await);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Paused"));

    env.schedules()
        .patch(
            "hold",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .expect("unpause");
    step(&s).await;
    assert_eq!(
        env.snapshot_names().await,
        vec![snapshot_name("hold", "data", s0)]
    );
    let hold = env.get_schedule("hold").await;
    assert_eq!(ready_condition(&hold).1, "Scheduled");
    assert_eq!(
        hold.status.expect("status").observed_generation,
        hold.metadata.generation
    );
    eprintln!("scenario paused: ok");
}

async fn invalid_specs(client: &Client, clock: &Arc<FakeClock>) {
    let env = Env::new(client, "invalid", clock).await;
    env.pvc("data", json!({}), true).await;
    let good = env
        .schedule("good", json!({"selector": {}, "schedule": "*/10 * * * *"}))
        .await;
    env.schedule(
        "bad-cron",
        json!({"selector": {}, "schedule": "61 * * * *"}),
    )
    .await;
    env.schedule(
        "bad-zone",
        json!({"selector": {}, "schedule": "@daily", "timeZone": "Mars/Olympus_Mons"}),
    )
    .await;
    env.schedule(
        "bad-count",
        json!({"selector": {}, "schedule": "@daily", "retention": {"maxCount": 0}}),
    )
    .await;
    let s0 = first_slot(&good);
    let s = env.scheduler("i", "invalid-lease");
    clock.set(at(s0, SignedDuration::from_secs(1)));
    step(&s).await;
    step(&s).await;
    for (name, field) in [
        (
            "bad-cron",
            "spec.schedule: minute field: 61 is outside 0-59",
        ),
        (
            "bad-zone",
            "spec.timeZone: unknown time zone \"Mars/Olympus_Mons\"",
        ),
        (
            "bad-count",
            "spec.retention.maxCount: must be at least 1, got 0",
        ),
    ] {
        let (status, reason, message) = ready_condition(&env.get_schedule(name).await);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidSpec"),
            "{name}"
        );
        assert_eq!(message, field, "{name}");
    }
    // A schedule that becomes invalid loses its next run and says why.
    assert!(
        env.get_schedule("good")
            .await
            .status
            .expect("status")
            .next_run
            .is_some()
    );
    env.schedules()
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"retention": {"maxAge": "forever"}}})),
        )
        .await
        .expect("break the good schedule");
    step(&s).await;
    let broken = env.get_schedule("good").await;
    assert_eq!(ready_condition(&broken).1, "InvalidSpec");
    assert!(
        ready_condition(&broken)
            .2
            .starts_with("spec.retention.maxAge: ")
    );
    assert_eq!(broken.status.expect("status").next_run, None);
    env.schedules()
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"retention": {"maxAge": null}}})),
        )
        .await
        .expect("repair the good schedule");
    step(&s).await;
    assert_eq!(ready_condition(&env.get_schedule("good").await).0, "True");
    let events = env.events("InvalidSpec").await;
    assert_eq!(
        events.len(),
        4,
        "one Warning per bad spec (3 schedules + the broken one), not one per step"
    );
    assert!(events.iter().all(|e| e.type_.as_deref() == Some("Warning")));
    // The good schedule next to them still runs.
    assert_eq!(
        env.snapshot_names().await,
        vec![snapshot_name("good", "data", s0)]
    );
    eprintln!("scenario invalid spec: ok");
}

async fn two_replicas(client: &Client, clock: &Arc<FakeClock>) {
    let env = Env::new(client, "replicas", clock).await;
    env.pvc("data", json!({}), true).await;
    let schedule = env
        .schedule("ha", json!({"selector": {}, "schedule": "*/10 * * * *"}))
        .await;
    let s0 = first_slot(&schedule);
    let a = env.scheduler("replica-a", "ha-lease");
    let b = env.scheduler("replica-b", "ha-lease");

    clock.set(at(s0, minutes(-1)));
    assert!(step(&a).await, "a acquires the free Lease");
    assert!(!step(&b).await, "b follows");
    assert!(env.snapshot_names().await.is_empty(), "no slot due yet");
    clock.set(at(s0, SignedDuration::from_secs(1)));
    assert!(step(&a).await, "a renews");
    assert_eq!(
        env.snapshot_names().await,
        vec![snapshot_name("ha", "data", s0)]
    );
    assert!(
        !step(&b).await,
        "b still follows: a renewed within the lease"
    );
    assert_eq!(
        env.snapshot_names().await.len(),
        1,
        "the follower took nothing"
    );

    // a stops renewing. 10 s later (within the 15 s lease) b must still wait.
    clock.set(at(s0, SignedDuration::from_secs(11)));
    assert!(!step(&b).await, "the lease has not expired yet");
    // a's own view: past its renew deadline (2/3 of 15 s) it no longer acts.
    assert!(
        !a.elector().is_leading(),
        "a stops acting before its lease expires"
    );
    // s0+10m: long expired. b takes over and takes the slot.
    let s1 = at(s0, minutes(10));
    clock.set(at(s1, SignedDuration::from_secs(1)));
    assert!(step(&b).await, "b takes over the expired Lease");
    let mut expected = vec![
        snapshot_name("ha", "data", s0),
        snapshot_name("ha", "data", s1),
    ];
    expected.sort();
    assert_eq!(env.snapshot_names().await, expected);
    // a comes back: b holds a fresh Lease, so a follows.
    assert!(!step(&a).await, "a follows after b took over");
    assert_eq!(env.snapshot_names().await, expected);
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let spec = leases
        .get("ha-lease")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));

    // Two replicas racing for a free Lease: exactly one wins (resourceVersion / create 409).
    for round in 0..5 {
        let lease = format!("race-{round}");
        let c = env.scheduler("replica-c", &lease);
        let d = env.scheduler("replica-d", &lease);
        let (x, y) = tokio::join!(c.elector().try_lead(), d.elector().try_lead());
        let (x, y) = (x.expect("c"), y.expect("d"));
        assert!(x ^ y, "round {round}: exactly one leader, got c={x} d={y}");
    }
    // And racing to take over an expired one.
    for round in 0..5 {
        let lease = format!("takeover-{round}");
        let old = env.scheduler("replica-old", &lease);
        clock.set(at(s1, minutes(100 * round)));
        assert!(old.elector().try_lead().await.expect("old"));
        clock.set(at(s1, minutes(100 * round + 1)));
        let c = env.scheduler("replica-c", &lease);
        let d = env.scheduler("replica-d", &lease);
        let (x, y) = tokio::join!(c.elector().try_lead(), d.elector().try_lead());
        let (x, y) = (x.expect("c"), y.expect("d"));
        assert!(
            x ^ y,
            "takeover round {round}: exactly one leader, got c={x} d={y}"
        );
    }
    eprintln!("scenario two replicas: ok");
}

/// The production loop (`Scheduler::run`) on the fake clock: it picks a slot up by itself and
/// gives the Lease up when told to stop.
async fn run_loop(client: &Client, clock: &Arc<FakeClock>) {
    let env = Env::new(client, "runloop", clock).await;
    env.pvc("data", json!({}), true).await;
    let schedule = env
        .schedule("loop", json!({"selector": {}, "schedule": "*/10 * * * *"}))
        .await;
    let s0 = first_slot(&schedule);
    clock.set(at(s0, minutes(-1)));
    let scheduler = env.scheduler("runner", "loop-lease");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        scheduler
            .run(std::time::Duration::from_millis(200), async {
                let _ = stopped.await;
            })
            .await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(env.snapshot_names().await.is_empty());
    clock.set(at(s0, SignedDuration::from_secs(1)));
    let expected = vec![snapshot_name("loop", "data", s0)];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.snapshot_names().await != expected {
        assert!(
            std::time::Instant::now() < deadline,
            "run() did not take the slot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity);
    assert_eq!(
        holder(leases.get("loop-lease").await.expect("lease")).as_deref(),
        Some("runner")
    );
    stop.send(()).expect("stop");
    task.await.expect("run() ends on shutdown");
    assert_eq!(
        holder(leases.get("loop-lease").await.expect("lease")),
        None,
        "released on stop"
    );
    eprintln!("scenario run loop: ok");
}

/// The binary: `snapcsi scheduler` with KUBECONFIG takes the Lease in --lease-namespace and
/// gives it up on SIGTERM.
async fn binary(plane: &ControlPlane, client: &Client, clock: &Arc<FakeClock>) {
    let env = Env::new(client, "binary", clock).await;
    // A named zone with no zoneinfo on the machine (as in the container image): the binary's
    // bundled time zone database must answer.
    env.schedule(
        "zoned",
        json!({"selector": {}, "schedule": "0 3 * * *", "timeZone": "Asia/Kolkata"}),
    )
    .await;
    let no_zoneinfo = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_snapcsi"))
        .env("TZDIR", no_zoneinfo.path())
        .args([
            "scheduler",
            "--lease-namespace",
            "binary",
            "--namespace",
            "binary",
            "--interval",
            "1",
        ])
        .env("KUBECONFIG", &plane.kubeconfig)
        .env("POD_NAME", "binary-pod")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start snapcsi scheduler");
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let holder = loop {
        let held = leases
            .get_opt("snapcsi-scheduler")
            .await
            .expect("get lease")
            .and_then(|l| l.spec.and_then(|s| s.holder_identity));
        if let Some(h) = held {
            break h;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the binary never took the Lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        holder.starts_with("binary-pod_"),
        "identity is pod name + suffix: {holder}"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).expect("pid"),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status:?}");
    let released = leases
        .get("snapcsi-scheduler")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(released, None, "the Lease is released on SIGTERM");
    eprintln!("scenario binary: ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_on_a_real_api_server() {
    let Some(plane) = ControlPlane::start() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crds = [
        plane
            .snapshot_crds
            .join("snapshot.storage.k8s.io_volumesnapshotclasses.yaml"),
        plane
            .snapshot_crds
            .join("snapshot.storage.k8s.io_volumesnapshotcontents.yaml"),
        plane
            .snapshot_crds
            .join("snapshot.storage.k8s.io_volumesnapshots.yaml"),
        root.join("deploy/base/snapshotschedule-crd.yaml"),
    ];
    plane.apply(&crds.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    // The example in deploy/kind is accepted by the API server's schema for the CRD.
    let out = plane
        .kubectl()
        .args(["apply", "--dry-run=server", "-f"])
        .arg(root.join("deploy/kind/example-schedule.yaml"))
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let client = plane.client().await;
    let clock = Arc::new(FakeClock(Mutex::new(Timestamp::now())));
    slots_restart_and_downtime(&client, &clock).await;
    retention(&client, &clock).await;
    paused(&client, &clock).await;
    invalid_specs(&client, &clock).await;
    two_replicas(&client, &clock).await;
    run_loop(&client, &clock).await;
    binary(&plane, &client, &clock).await;
}

#[test]
fn docs_example_is_the_deployed_example_and_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/scheduled-snapshots.md"))
        .expect("docs/scheduled-snapshots.md");
    let block = page
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|b| b.contains("kind: SnapshotSchedule"))
        .expect("docs/scheduled-snapshots.md has a SnapshotSchedule example");
    let from_readme: SnapshotSchedule =
        serde_saphyr::from_str(block).expect("the docs example parses");
    let file =
        std::fs::read_to_string(root.join("deploy/kind/example-schedule.yaml")).expect("example");
    let from_file: SnapshotSchedule = serde_saphyr::from_str(&file).expect("example parses");
    assert_eq!(from_readme.spec, from_file.spec);
    assert_eq!(from_readme.metadata.name, from_file.metadata.name);
    let valid = from_readme
        .spec
        .validate()
        .expect("the example is a valid spec");
    assert_eq!(valid.max_count, Some(7));
    assert_eq!(valid.max_age_seconds, Some(30 * 86_400));
}
