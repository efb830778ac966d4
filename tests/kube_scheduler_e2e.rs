//! A SnapshotSchedule through the whole real chain: the `snapcsi scheduler` binary (real
//! clock) creates the slot's VolumeSnapshot, the real snapshot-controller and csi-snapshotter
//! have snapcsi cut it, and it becomes readyToUse. `tests/k8s/e2e.sh` runs this after
//! tests/kube_e2e.rs, whose StorageClass and VolumeSnapshotClass `snapcsi-e2e` (and Node,
//! CSINode) it reuses; plain `cargo test` reports it ignored (e2e.sh runs it with `--include-ignored`).

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use snapcsi::kube::controller::{snapshot_name, volume_snapshot_resource};
use snapcsi::kube::crd::SnapshotSchedule;
use std::time::{Duration, Instant};

const NS: &str = "scheduled";

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

/// Stops the scheduler process when the test ends, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs the throwaway cluster tests/k8s/e2e.sh starts: run through it (it passes --include-ignored)"]
async fn scheduled_snapshot_through_the_real_chain() {
    // Asked for with --ignored but outside e2e.sh: fail rather than write into whatever
    // cluster KUBECONFIG names.
    assert!(
        std::env::var_os("SNAPCSI_E2E").is_some(),
        "run through tests/k8s/e2e.sh, which starts the throwaway cluster and sets SNAPCSI_E2E=1"
    );
    let client = Client::try_default().await.expect("kubeconfig");
    let post = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&post, &from_json(json!({"metadata": {"name": NS}})))
        .await
        .expect("namespace");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    pvcs.create(
        &post,
        &from_json(
            json!({"metadata": {"name": "data", "labels": {"app": "sched"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "snapcsi-e2e",
                "resources": {"requests": {"storage": "64Mi"}}}}),
        ),
    )
    .await
    .expect("pvc");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pvc = pvcs.get("data").await.expect("pvc");
        if pvc.status.and_then(|s| s.phase).as_deref() == Some("Bound") {
            break;
        }
        assert!(Instant::now() < deadline, "PVC data never Bound");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let schedules: Api<SnapshotSchedule> = Api::namespaced(client.clone(), NS);
    let schedule = schedules
        .create(
            &post,
            &from_json(
                json!({"apiVersion": "snapcsi.dev/v1alpha1", "kind": "SnapshotSchedule",
                "metadata": {"name": "minutely"},
                "spec": {"selector": {"matchLabels": {"app": "sched"}}, "schedule": "* * * * *",
                    "volumeSnapshotClassName": "snapcsi-e2e", "retention": {"maxCount": 1}}}),
            ),
        )
        .await
        .expect("schedule");
    let uid = schedule.uid().expect("uid");

    let _scheduler = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_snapcsi"))
            .args([
                "scheduler",
                "--namespace",
                NS,
                "--lease-namespace",
                NS,
                "--interval",
                "1",
            ])
            .spawn()
            .expect("start snapcsi scheduler"),
    );

    // The first slot is at most a minute away; then the real sidecars cut the snapshot.
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &volume_snapshot_resource());
    let started = Instant::now();
    let ready = loop {
        let list = snapshots
            .list(&ListParams::default().labels(&format!("snapcsi.dev/schedule-uid={uid}")))
            .await
            .expect("list snapshots");
        if let Some(s) = list
            .items
            .iter()
            .find(|s| s.data["status"]["readyToUse"] == json!(true))
        {
            break s.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "no scheduled snapshot became ready: {:?}",
            list.items
                .iter()
                .map(|s| (s.name_any(), s.data["status"].clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let slot_label = ready.labels()["snapcsi.dev/slot"].clone();
    let slot: jiff::Timestamp = format!(
        "{}-{}-{}T{}:{}:00Z",
        &slot_label[0..4],
        &slot_label[4..6],
        &slot_label[6..8],
        &slot_label[8..10],
        &slot_label[10..12]
    )
    .parse()
    .expect("slot label");
    assert_eq!(ready.name_any(), snapshot_name("minutely", "data", slot));
    let handle = ready.data["status"]["boundVolumeSnapshotContentName"].clone();
    println!(
        "e2e: scheduled VolumeSnapshot {} ready after {:.0?} (content {handle})",
        ready.name_any(),
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = schedules.get("minutely").await.expect("schedule").status;
        let status = status.unwrap_or_default();
        if status.ready_snapshots >= 1 && status.last_run.is_some() {
            println!(
                "e2e: schedule status: lastRun {:?}, nextRun {:?}, {} snapshot(s), {} ready",
                status.last_run, status.next_run, status.snapshots, status.ready_snapshots
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never counted the ready snapshot"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Clean up through the API: the schedule first, so nothing new is taken.
    let dp = DeleteParams::default();
    schedules
        .delete("minutely", &dp)
        .await
        .expect("delete schedule");
    for s in snapshots
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        snapshots
            .delete(&s.name_any(), &dp)
            .await
            .expect("delete snapshot");
    }
    pvcs.delete("data", &dp).await.expect("delete pvc");
}
