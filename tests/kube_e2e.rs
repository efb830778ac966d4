//! The VolumeSnapshot story on a real kube-apiserver with the real sidecars, driven with the
//! kube and k8s-openapi crates. `tests/k8s/e2e.sh` starts the cluster and runs this test with
//! `SNAPCSI_E2E=1 ... -- --include-ignored`; plain `cargo test` reports it ignored.
//!
//! There is no kubelet: what it and node-driver-registrar would publish for the node (the Node
//! object's topology label and the CSINode entry) is created here, and StorageClasses bind
//! immediately since no pod is ever scheduled.

mod support;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use snapcsi::proto as csi;
use std::time::Duration;

const NS: &str = "default";
const DRIVER: &str = "snapcsi.dev";

fn snapshot_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

/// Polls `check` every 250 ms until it answers `Some`, for at most `seconds`.
async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn bound_volume_handle(
    pvcs: &Api<PersistentVolumeClaim>,
    pvs: &Api<PersistentVolume>,
    name: &str,
) -> (String, String) {
    let pv_name = eventually(90, &format!("PVC {name} Bound"), || async {
        let pvc = pvcs.get(name).await.ok()?;
        let status = pvc.status?;
        (status.phase.as_deref() == Some("Bound")).then_some(())?;
        pvc.spec?.volume_name
    })
    .await;
    let pv = pvs.get(&pv_name).await.expect("PV");
    let spec = pv.spec.expect("PV spec");
    let handle = spec.csi.expect("CSI PV").volume_handle;
    let capacity = spec
        .capacity
        .and_then(|c| c.get("storage").map(|q| q.0.clone()))
        .unwrap_or_default();
    (handle, capacity)
}

async fn ready_snapshot(
    snapshots: &Api<DynamicObject>,
    contents: &Api<DynamicObject>,
    name: &str,
) -> String {
    let content_name = eventually(90, &format!("VolumeSnapshot {name} readyToUse"), || async {
        let snapshot = snapshots.get(name).await.ok()?;
        let status = snapshot.data.get("status")?;
        (status.get("readyToUse")? == &Value::Bool(true)).then_some(())?;
        status
            .get("boundVolumeSnapshotContentName")?
            .as_str()
            .map(str::to_owned)
    })
    .await;
    let content = contents.get(&content_name).await.expect("content");
    content.data["status"]["snapshotHandle"]
        .as_str()
        .expect("snapshot handle")
        .to_owned()
}

fn pvc(name: &str, size: &str, data_source: Option<&str>) -> PersistentVolumeClaim {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "snapcsi-e2e",
        "resources": {"requests": {"storage": size}},
    });
    if let Some(snapshot) = data_source {
        spec["dataSource"] = json!({
            "apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot",
            "name": snapshot,
        });
    }
    from_json(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS}, "spec": spec}))
}

#[tokio::test]
#[ignore = "needs the throwaway cluster tests/k8s/e2e.sh starts: run through it (it passes --include-ignored)"]
async fn volume_snapshot_end_to_end() {
    // Asked for with --ignored but outside e2e.sh: fail rather than write into whatever
    // cluster KUBECONFIG names.
    assert!(
        std::env::var_os("SNAPCSI_E2E").is_some(),
        "run through tests/k8s/e2e.sh, which starts the throwaway cluster and sets SNAPCSI_E2E=1"
    );
    let socket = std::env::var("SNAPCSI_E2E_SOCKET").expect("SNAPCSI_E2E_SOCKET");
    let channel = support::connect(std::path::Path::new(&socket)).await;
    let mut driver = csi::controller_client::ControllerClient::new(channel);
    let client = Client::try_default().await.expect("kubeconfig");
    let post = PostParams::default();

    // What kubelet and node-driver-registrar would publish for the node.
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&post, &from_json(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "e2e-node", "labels": {"topology.snapcsi.dev/node": "e2e-node"}}})))
        .await
        .expect("node");
    let csinodes: Api<CSINode> = Api::all(client.clone());
    csinodes
        .create(
            &post,
            &from_json(json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
            "metadata": {"name": "e2e-node"},
            "spec": {"drivers": [{"name": DRIVER, "nodeID": "e2e-node",
                "topologyKeys": ["topology.snapcsi.dev/node"]}]}})),
        )
        .await
        .expect("csinode");
    let classes: Api<StorageClass> = Api::all(client.clone());
    classes
        .create(
            &post,
            &from_json(
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "snapcsi-e2e"}, "provisioner": DRIVER,
            "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": true}),
            ),
        )
        .await
        .expect("storage class");
    let snapshot_classes: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &snapshot_resource("VolumeSnapshotClass", "volumesnapshotclasses"),
    );
    snapshot_classes
        .create(
            &post,
            &from_json(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass", "metadata": {"name": "snapcsi-e2e"},
            "driver": DRIVER, "deletionPolicy": "Delete"})),
        )
        .await
        .expect("snapshot class");

    // PVC -> provisioned and Bound.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    pvcs.create(&post, &pvc("source", "64Mi", None))
        .await
        .expect("pvc");
    let (source_handle, _) = bound_volume_handle(&pvcs, &pvs, "source").await;
    println!("e2e: PVC source bound to volume {source_handle}");

    // VolumeSnapshot -> readyToUse with a content carrying our snapshot handle.
    let snapshots: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &snapshot_resource("VolumeSnapshot", "volumesnapshots"),
    );
    let contents: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &snapshot_resource("VolumeSnapshotContent", "volumesnapshotcontents"),
    );
    snapshots
        .create(
            &post,
            &from_json(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot", "metadata": {"name": "snap-1", "namespace": NS},
            "spec": {"volumeSnapshotClassName": "snapcsi-e2e",
                "source": {"persistentVolumeClaimName": "source"}}})),
        )
        .await
        .expect("volume snapshot");
    let handle = ready_snapshot(&snapshots, &contents, "snap-1").await;
    let ours = driver
        .get_snapshot(csi::GetSnapshotRequest {
            snapshot_id: handle.clone(),
            ..Default::default()
        })
        .await
        .expect("the driver knows the snapshot handle")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert_eq!(ours.source_volume_id, source_handle);
    println!("e2e: VolumeSnapshot snap-1 ready as {handle}");

    // PVC from the snapshot -> Bound at the requested (larger) size, restored from it.
    pvcs.create(&post, &pvc("restored", "128Mi", Some("snap-1")))
        .await
        .expect("restore pvc");
    let (restored_handle, capacity) = bound_volume_handle(&pvcs, &pvs, "restored").await;
    assert_eq!(capacity, "128Mi", "restored size");
    let restored = driver
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: restored_handle.clone(),
        })
        .await
        .expect("restored volume")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(restored.capacity_bytes, 128 << 20);
    assert_eq!(
        restored.content_source,
        Some(csi::VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Snapshot(
                csi::volume_content_source::SnapshotSource {
                    snapshot_id: handle.clone()
                }
            ))
        })
    );
    println!("e2e: PVC restored bound to {restored_handle} (128Mi, from {handle})");

    // A pre-provisioned snapshot: made outside Kubernetes, imported by its handle.
    let made = driver
        .create_snapshot(csi::CreateSnapshotRequest {
            name: "made-outside".into(),
            source_volume_id: source_handle.clone(),
            ..Default::default()
        })
        .await
        .expect("snapshot outside kubernetes")
        .into_inner()
        .snapshot
        .expect("snapshot");
    contents
        .create(
            &post,
            &from_json(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent", "metadata": {"name": "static-content"},
            "spec": {"driver": DRIVER, "deletionPolicy": "Delete",
                "source": {"snapshotHandle": made.snapshot_id},
                "volumeSnapshotRef": {"name": "static", "namespace": NS}}})),
        )
        .await
        .expect("static content");
    snapshots
        .create(
            &post,
            &from_json(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot", "metadata": {"name": "static", "namespace": NS},
            "spec": {"source": {"volumeSnapshotContentName": "static-content"}}})),
        )
        .await
        .expect("static snapshot");
    let static_handle = ready_snapshot(&snapshots, &contents, "static").await;
    assert_eq!(static_handle, made.snapshot_id);
    println!("e2e: pre-provisioned snapshot {static_handle} ready");

    // Delete everything: the backend must end up holding nothing.
    let dp = DeleteParams::default();
    for name in ["snap-1", "static"] {
        snapshots.delete(name, &dp).await.expect("delete snapshot");
    }
    for name in ["restored", "source"] {
        pvcs.delete(name, &dp).await.expect("delete pvc");
    }
    eventually(120, "the backend to hold nothing", || {
        let mut driver = driver.clone();
        async move {
            let snaps = driver
                .list_snapshots(csi::ListSnapshotsRequest::default())
                .await
                .ok()?
                .into_inner();
            let vols = driver
                .list_volumes(csi::ListVolumesRequest::default())
                .await
                .ok()?
                .into_inner();
            (snaps.entries.is_empty() && vols.entries.is_empty()).then_some(())
        }
    })
    .await;
    println!("e2e: everything deleted; the backend holds nothing");
}
