//! Changed block tracking through Kubernetes: the real external-snapshot-metadata sidecar in
//! front of snapcsi, and its real client tools (snapshot-metadata-lister, -verifier) asking it
//! as a backup tool would, with an audience-scoped ServiceAccount token. `tests/k8s/cbt-e2e.sh`
//! (run by tests/k8s/e2e.sh) sets the cluster and the sidecar up and runs this with
//! `SNAPCSI_E2E=1` and `--include-ignored`; plain `cargo test` reports it ignored.
//!
//! A raw block PVC is written through the node path (NodeStage + NodePublish on the driver's
//! socket: there is no kubelet), snapshotted, written again (overwrite, new data, a discarded
//! range), snapshotted again. Through the sidecar: the allocated blocks of both
//! VolumeSnapshots and the delta between them must equal the model; the verifier copies the
//! delta from a restore of the second snapshot onto a restore of the first and finds them
//! equal; bad requests come back with the driver's codes.

mod support;
use support::cbt;

use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use snapcsi::proto as csi;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::cbt::{BLOCK, Device, MIB, Model, block_capability};

const NS: &str = "cbt";
const DRIVER: &str = "snapcsi.dev";
const CLASS: &str = "snapcsi-cbt";
const SIZE: u64 = 32 * MIB;

fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

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

async fn ensure<K>(api: &Api<K>, object: &K)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create {object:?}: {e}"),
    }
}

fn block_pvc(name: &str, source: Option<&str>) -> PersistentVolumeClaim {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Block",
        "storageClassName": CLASS,
        "resources": {"requests": {"storage": format!("{}Mi", SIZE / MIB)}},
    });
    if let Some(snapshot) = source {
        spec["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot", "name": snapshot});
    }
    from_json(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS}, "spec": spec}))
}

async fn bound_handle(client: &Client, name: &str) -> String {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let pv_name = eventually(90, &format!("PVC {name} Bound"), || async {
        let pvc = pvcs.get(name).await.ok()?;
        (pvc.status?.phase.as_deref() == Some("Bound")).then_some(())?;
        pvc.spec?.volume_name
    })
    .await;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .expect("PV");
    pv.spec.expect("spec").csi.expect("CSI PV").volume_handle
}

/// Creates VolumeSnapshot `name` of PVC `pvc` and answers its snapshot handle once ready.
async fn volume_snapshot(client: &Client, name: &str, pvc: &str) -> String {
    let snapshots: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &resource(
            "snapshot.storage.k8s.io",
            "VolumeSnapshot",
            "volumesnapshots",
        ),
    );
    snapshots
        .create(
            &PostParams::default(),
            &from_json(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot", "metadata": {"name": name, "namespace": NS},
                "spec": {"volumeSnapshotClassName": CLASS,
                    "source": {"persistentVolumeClaimName": pvc}}})),
        )
        .await
        .expect("VolumeSnapshot");
    let content = eventually(90, &format!("VolumeSnapshot {name} ready"), || async {
        let s = snapshots.get(name).await.ok()?;
        (s.data["status"]["readyToUse"] == Value::Bool(true)).then_some(())?;
        Some(
            s.data["status"]["boundVolumeSnapshotContentName"]
                .as_str()?
                .to_owned(),
        )
    })
    .await;
    let contents: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource(
            "snapshot.storage.k8s.io",
            "VolumeSnapshotContent",
            "volumesnapshotcontents",
        ),
    );
    let c = contents.get(&content).await.expect("content");
    c.data["status"]["snapshotHandle"]
        .as_str()
        .expect("snapshot handle")
        .to_owned()
}

/// Runs a client tool of external-snapshot-metadata inside the sidecar's network namespace, as
/// the `backup` ServiceAccount of the test namespace.
fn tool(env: &str, args: &[&str]) -> std::process::Output {
    let netns = std::env::var("SNAPCSI_CBT_NETNS").expect("SNAPCSI_CBT_NETNS");
    let binary = std::env::var(env).unwrap_or_else(|_| panic!("{env}"));
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    Command::new("nsenter")
        .args(["-t", &netns, "-n", "--"])
        .arg(&binary)
        .args(["-kubeconfig", &kubeconfig, "-n", NS])
        .args([
            "-service-account",
            "backup",
            "-service-account-namespace",
            NS,
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {binary}: {e}"))
}

/// The lister's answer (`-o json`): type, capacity and tuples of every record.
fn list(args: &[&str]) -> (i64, i64, Vec<(u64, u64)>) {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let out = tool("SNAPSHOT_METADATA_LISTER", &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "snapshot-metadata-lister {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("lister output is not JSON ({e}): {stdout}"));
    let (mut kind, mut capacity, mut tuples) = (0, 0, Vec::new());
    for record in &records {
        kind = record["block_metadata_type"].as_i64().unwrap_or(0);
        capacity = record["volume_capacity_bytes"].as_i64().unwrap_or(0);
        for t in record["block_metadata"].as_array().into_iter().flatten() {
            // Zero-valued fields are left out of the JSON (omitempty).
            let offset = t["byte_offset"].as_u64().unwrap_or(0);
            let len = t["size_bytes"].as_u64().unwrap_or(0);
            tuples.push((offset, len));
        }
    }
    (kind, capacity, tuples)
}

fn image(volume: &str) -> PathBuf {
    let data = PathBuf::from(std::env::var("SNAPCSI_E2E_DATA").expect("SNAPCSI_E2E_DATA"));
    data.join("volumes").join(format!("{volume}.img"))
}

#[tokio::test]
#[ignore = "needs the cluster and sidecar tests/k8s/cbt-e2e.sh starts: run through it (it passes --include-ignored)"]
async fn changed_blocks_through_the_real_sidecar() {
    // Asked for with --ignored but outside cbt-e2e.sh: fail rather than write into whatever
    // cluster KUBECONFIG names.
    assert!(
        std::env::var_os("SNAPCSI_E2E").is_some(),
        "run through tests/k8s/e2e.sh, which starts the cluster and the sidecar and sets SNAPCSI_E2E=1"
    );
    let socket = std::env::var("SNAPCSI_E2E_SOCKET").expect("SNAPCSI_E2E_SOCKET");
    let work = PathBuf::from(std::env::var("SNAPCSI_CBT_WORK").expect("SNAPCSI_CBT_WORK"));
    let channel = support::connect(Path::new(&socket)).await;
    let client = Client::try_default().await.expect("kubeconfig");

    // The namespace, a backup ServiceAccount allowed what the component's client role allows,
    // the node objects topology needs, and the classes.
    ensure(
        &Api::<Namespace>::all(client.clone()),
        &from_json(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})),
    )
    .await;
    ensure(
        &Api::<ServiceAccount>::namespaced(client.clone(), NS),
        &from_json(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "backup", "namespace": NS}})),
    )
    .await;
    ensure(
        &Api::<RoleBinding>::namespaced(client.clone(), NS),
        &from_json(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "backup-snapshot-metadata", "namespace": NS},
            "subjects": [{"kind": "ServiceAccount", "name": "backup", "namespace": NS}],
            "roleRef": {"kind": "ClusterRole", "name": "snapcsi-snapshot-metadata-client",
                "apiGroup": "rbac.authorization.k8s.io"}}),
        ),
    )
    .await;
    ensure(
        &Api::<Node>::all(client.clone()),
        &from_json(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "e2e-node", "labels": {"topology.snapcsi.dev/node": "e2e-node"}}})),
    )
    .await;
    ensure(
        &Api::<CSINode>::all(client.clone()),
        &from_json(json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
            "metadata": {"name": "e2e-node"},
            "spec": {"drivers": [{"name": DRIVER, "nodeID": "e2e-node",
                "topologyKeys": ["topology.snapcsi.dev/node"]}]}})),
    )
    .await;
    ensure(
        &Api::<StorageClass>::all(client.clone()),
        &from_json(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": CLASS}, "provisioner": DRIVER,
            "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}),
        ),
    )
    .await;
    ensure(
        &Api::<DynamicObject>::all_with(
            client.clone(),
            &resource(
                "snapshot.storage.k8s.io",
                "VolumeSnapshotClass",
                "volumesnapshotclasses",
            ),
        ),
        &from_json(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass", "metadata": {"name": CLASS},
            "driver": DRIVER, "deletionPolicy": "Delete"})),
    )
    .await;

    // A raw block PVC, written through the node path.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let post = PostParams::default();
    pvcs.create(&post, &block_pvc("cbt-src", None))
        .await
        .expect("pvc");
    let volume = bound_handle(&client, "cbt-src").await;
    let staging = work.join("staging");
    let target = work.join("target");
    let mut node = csi::node_client::NodeClient::new(channel.clone());
    node.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: volume.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(block_capability()),
        ..Default::default()
    })
    .await
    .expect("NodeStageVolume");
    node.node_publish_volume(csi::NodePublishVolumeRequest {
        volume_id: volume.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(block_capability()),
        ..Default::default()
    })
    .await
    .expect("NodePublishVolume");
    let mut model = Model::new(SIZE);
    {
        let dev = Device::open(&target);
        dev.write(&mut model, 0, 128 * 1024, 11);
        dev.write(&mut model, 4 * MIB, MIB, 12);
        dev.write(&mut model, 9 * MIB + 8 * BLOCK, BLOCK, 13);
        dev.write(&mut model, SIZE - 64 * 1024, 64 * 1024, 14);
        dev.sync();
    }
    let first_model = model.clone();
    let first = volume_snapshot(&client, "cbt-1", "cbt-src").await;
    {
        let dev = Device::open(&target);
        dev.write(&mut model, 4 * MIB + 256 * 1024, 128 * 1024, 15);
        dev.write(&mut model, 16 * MIB, 512 * 1024, 16);
        dev.punch(&mut model, 0, 64 * 1024);
        dev.sync();
    }
    let second = volume_snapshot(&client, "cbt-2", "cbt-src").await;
    node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: volume.clone(),
        target_path: target.display().to_string(),
    })
    .await
    .expect("NodeUnpublishVolume");
    node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: volume.clone(),
        staging_target_path: staging.display().to_string(),
    })
    .await
    .expect("NodeUnstageVolume");
    println!(
        "e2e cbt: PVC cbt-src ({volume}) written, VolumeSnapshots cbt-1 ({first}), cbt-2 ({second})"
    );

    // Through the sidecar, as a backup tool.
    let variable = csi::BlockMetadataType::VariableLength as i64;
    let (kind, capacity, tuples) = list(&["-s", "cbt-1"]);
    assert_eq!((kind, capacity), (variable, SIZE as i64));
    assert_eq!(
        cbt::merged(tuples),
        first_model.allocated(),
        "allocated(cbt-1)"
    );
    let (_, _, tuples) = list(&["-s", "cbt-2", "-max-results", "1"]);
    assert_eq!(cbt::merged(tuples), model.allocated(), "allocated(cbt-2)");
    let want = model.delta_from(&first_model);
    let (kind, capacity, tuples) = list(&["-s", "cbt-2", "-p", "cbt-1"]);
    assert_eq!((kind, capacity), (variable, SIZE as i64));
    assert_eq!(cbt::merged(tuples), want, "delta(cbt-1, cbt-2) by name");
    let (_, _, tuples) = list(&["-s", "cbt-2", "-P", &first, "-max-results", "2"]);
    assert_eq!(cbt::merged(tuples), want, "delta(cbt-1, cbt-2) by handle");
    let resume = 4 * MIB + 300 * 1024;
    let (_, _, tuples) = list(&[
        "-s",
        "cbt-2",
        "-p",
        "cbt-1",
        "-starting-offset",
        &resume.to_string(),
    ]);
    assert_eq!(
        cbt::merged(tuples),
        cbt::from_offset(&want, resume),
        "delta resumed at {resume}"
    );
    println!(
        "e2e cbt: through the sidecar, allocated(cbt-1), allocated(cbt-2) and delta(cbt-1, cbt-2) \
         = {want:?} match the blocks written"
    );

    // The driver's refusals reach the client with their codes.
    let refused = |args: &[&str], code: &str| {
        let out = tool("SNAPSHOT_METADATA_LISTER", args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(code),
            "{args:?}: expected {code}, got {stderr}"
        );
    };
    refused(
        &[
            "-s",
            "cbt-2",
            "-P",
            "snap-00000000-0000-7000-8000-000000000000",
        ],
        "NotFound",
    );
    refused(&["-s", "cbt-1", "-P", &second], "InvalidArgument");
    refused(
        &["-s", "cbt-2", "-starting-offset", &(SIZE + 1).to_string()],
        "OutOfRange",
    );

    // The verifier: a restore of cbt-1 plus the delta copied from a restore of cbt-2 must equal
    // the restore of cbt-2; and the allocated blocks of cbt-2 alone rebuild it on zeros.
    pvcs.create(&post, &block_pvc("cbt-restore-1", Some("cbt-1")))
        .await
        .expect("restore pvc");
    pvcs.create(&post, &block_pvc("cbt-restore-2", Some("cbt-2")))
        .await
        .expect("restore pvc");
    let restore_1 = image(&bound_handle(&client, "cbt-restore-1").await);
    let restore_2 = image(&bound_handle(&client, "cbt-restore-2").await);
    assert!(
        std::fs::read(&restore_2).expect("read restore") == model.content(),
        "the restore of cbt-2 does not hold what was written"
    );
    let verify = |args: &[&str]| {
        let out = tool("SNAPSHOT_METADATA_VERIFIER", args);
        assert!(
            out.status.success(),
            "snapshot-metadata-verifier {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let src = restore_2.display().to_string();
    verify(&[
        "-s",
        "cbt-2",
        "-p",
        "cbt-1",
        "-src",
        &src,
        "-tgt",
        &restore_1.display().to_string(),
    ]);
    let zeros = work.join("zeros.img");
    std::fs::File::create(&zeros)
        .and_then(|f| f.set_len(SIZE))
        .expect("zero image");
    verify(&[
        "-s",
        "cbt-2",
        "-src",
        &src,
        "-tgt",
        &zeros.display().to_string(),
    ]);
    // A control, so the two passes above mean something: a delta that misses changes (resumed
    // past the first ones) laid on zeros does not rebuild cbt-2, and the verifier says so.
    let fresh = work.join("zeros-control.img");
    std::fs::File::create(&fresh)
        .and_then(|f| f.set_len(SIZE))
        .expect("zero image");
    let out = tool(
        "SNAPSHOT_METADATA_VERIFIER",
        &[
            "-s",
            "cbt-2",
            "-p",
            "cbt-1",
            "-starting-offset",
            &(8 * MIB).to_string(),
            "-src",
            &src,
            "-tgt",
            &fresh.display().to_string(),
        ],
    );
    assert!(
        !out.status.success(),
        "the verifier accepted an incomplete copy"
    );
    println!(
        "e2e cbt: snapshot-metadata-verifier rebuilt cbt-2 from cbt-1 + delta and from zeros + allocated"
    );

    // Clean up what this test made.
    let snapshots: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &resource(
            "snapshot.storage.k8s.io",
            "VolumeSnapshot",
            "volumesnapshots",
        ),
    );
    let dp = DeleteParams::default();
    for name in ["cbt-1", "cbt-2"] {
        snapshots.delete(name, &dp).await.expect("delete snapshot");
    }
    for name in ["cbt-restore-1", "cbt-restore-2", "cbt-src"] {
        pvcs.delete(name, &dp).await.expect("delete pvc");
    }
}
