//! Cinder volumes attached through the REAL Nova 34 (with Placement 16, Keystone 30 and Cinder
//! 29, all from PyPI; tests/peers/nova/nova-peer.sh): one cloud for the whole binary, started
//! once. Nova's fake virt driver attaches nothing, so the peer's launcher simulates the
//! hypervisor: an attach gives the volume a loop device under the guest's by-id name
//! (`virtio-<first 20 characters of the volume id>`), a detach takes it away, an extend grows
//! it (see nova_allinone.py).
//!
//! 1. The backend: publish/unpublish change Cinder's status and attachments and Nova's block
//!    device mappings as a real cloud's do; repeats are idempotent; errors (server not found,
//!    volume in use elsewhere, Nova's disk limit, multi-attach) map to the right kinds; the
//!    times and API calls of one attach and one detach are printed.
//! 2. CSI over a unix socket, node side included (as root): NodeGetInfo names the server and
//!    its zone, CreateVolume honours the zone, stage/publish/expand/unstage run through the
//!    node code on the disk found by serial, data survives a detach and a re-attach.
//! 3. Crash: the driver is killed with SIGKILL during ControllerPublish and during
//!    ControllerUnpublish and restarted; the repeated call ends with exactly one attachment,
//!    then none, in Cinder's and in Nova's own records (`NOVA_CRASH_TRIALS`, default 4 each).
//!
//! `SNAPCSI_NOVA_PEER=DIR` uses a cloud already started with `nova-peer.sh start DIR`.

mod support;

use serde_json::{Value, json};
use snapcsi::backend::cinder::CinderBackend;
use snapcsi::backend::{Backend, CreateVolume, ErrorKind, PublishVolume, SERIAL_KEY, VolumeId};
use snapcsi::proto as csi;
use snapcsi::proto::controller_client::ControllerClient;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cinder_peer::Peer;
use tonic::Code;
use tonic::transport::Channel;

const SCRIPT: &str = "tests/peers/nova/nova-peer.sh";
const GIB: i64 = 1 << 30;

fn cloud() -> Option<Peer> {
    if let Some(dir) = std::env::var_os("SNAPCSI_NOVA_PEER") {
        return Some(Peer::existing(Path::new(&dir), SCRIPT));
    }
    Peer::start_script(SCRIPT, &[])
}

/// The driver's config: Keystone password auth as the demo user; Cinder and Nova both from
/// the catalog.
fn section(peer: &Peer) -> String {
    format!(
        "type = \"cinder\"\nauth_type = \"password\"\nauth_url = \"{}\"\nusername = \"{}\"\n\
         user_domain_name = \"Default\"\npassword = \"{}\"\nproject_name = \"{}\"\n\
         project_domain_name = \"Default\"\nattach_wait_seconds = 300\n\
         detach_wait_seconds = 300\n",
        peer.get("KEYSTONE_URL"),
        peer.get("KEYSTONE_DEMO_USER"),
        peer.get("KEYSTONE_DEMO_PASSWORD"),
        peer.get("KEYSTONE_DEMO_PROJECT"),
    )
}

fn backend(peer: &Peer) -> Arc<CinderBackend> {
    let table: toml::Table = toml::from_str(&section(peer)).expect("toml");
    let config =
        snapcsi::backend::registry::section("test.toml", "cinder", &table).expect("config");
    Arc::new(CinderBackend::new(config, Some("nova-test".into())).expect("backend"))
}

/// The cloud's own view, asked as the demo user (the owner of the servers and volumes).
struct Api {
    http: reqwest::Client,
    token: String,
    cinder: String,
    nova: String,
}

impl Api {
    async fn new(peer: &Peer) -> Api {
        let http = reqwest::Client::new();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": peer.get("KEYSTONE_DEMO_USER"), "domain": {"id": "default"},
                "password": peer.get("KEYSTONE_DEMO_PASSWORD")}}},
            "scope": {"project": {"name": peer.get("KEYSTONE_DEMO_PROJECT"),
                                  "domain": {"id": "default"}}}}});
        let answer = http
            .post(format!("{}/auth/tokens", peer.get("KEYSTONE_URL")))
            .json(&body)
            .send()
            .await
            .expect("keystone");
        let token = answer
            .headers()
            .get("X-Subject-Token")
            .expect("token")
            .to_str()
            .expect("text")
            .to_owned();
        Api {
            http,
            token,
            cinder: format!(
                "{}/v3/{}",
                peer.get("CINDER_URL"),
                peer.get("KEYSTONE_DEMO_PROJECT_ID")
            ),
            nova: peer.get("NOVA_URL").to_owned(),
        }
    }

    async fn get(&self, url: String, version: &str) -> Value {
        self.http
            .get(url)
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", version)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn volume(&self, id: &str) -> Value {
        self.get(format!("{}/volumes/{id}", self.cinder), "volume 3.66")
            .await["volume"]
            .clone()
    }

    /// Cinder's attachment records of a volume, reserved ones included (3.27+).
    async fn attachments(&self, id: &str) -> usize {
        let body = self
            .get(
                format!("{}/attachments?volume_id={id}", self.cinder),
                "volume 3.66",
            )
            .await;
        body["attachments"].as_array().map_or(0, Vec::len)
    }

    /// The volumes Nova has on a server (its block device mappings, root disk excluded).
    async fn server_volumes(&self, server: &str) -> Vec<String> {
        let body = self
            .get(
                format!("{}/servers/{server}/os-volume_attachments", self.nova),
                "compute 2.89",
            )
            .await;
        body["volumeAttachments"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a["volumeId"].as_str().map(str::to_owned))
            .collect()
    }

    /// Asserts the volume is attached to exactly `servers`, in Cinder and in Nova.
    async fn assert_attached(&self, volume: &str, servers: &[&str], all: &[&str]) {
        let v = self.volume(volume).await;
        let mut cinder: Vec<&str> = v["attachments"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a["server_id"].as_str())
            .collect();
        cinder.sort_unstable();
        let mut want = servers.to_vec();
        want.sort_unstable();
        assert_eq!(cinder, want, "cinder attachments of {volume}: {v}");
        let status = if servers.is_empty() {
            "available"
        } else {
            "in-use"
        };
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(
            self.attachments(volume).await,
            servers.len(),
            "attachment records of {volume}"
        );
        for server in all {
            let on = self.server_volumes(server).await;
            let count = on.iter().filter(|x| *x == volume).count();
            assert_eq!(
                count,
                usize::from(servers.contains(server)),
                "nova's attachments of {volume} on {server}: {on:?}"
            );
        }
    }
}

/// A volume name unique to this run (a cloud reused through SNAPCSI_NOVA_PEER keeps the
/// volumes of a run that failed half-way).
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

async fn create(b: &CinderBackend, name: &str, parameters: &[(&str, &str)]) -> VolumeId {
    b.create_volume(&CreateVolume {
        name: unique(name),
        size_bytes: 1,
        source: None,
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        zone: None,
    })
    .await
    .expect("create volume")
    .id
}

fn publish(volume: &VolumeId, node: &str, multi_node: bool) -> PublishVolume {
    PublishVolume {
        volume_id: volume.clone(),
        node_id: node.to_owned(),
        multi_node,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nova_attaches_cinder_volumes() {
    let Some(peer) = cloud() else {
        return;
    };
    let api = Api::new(&peer).await;
    backend_attach_detach(&peer, &api).await;
    csi_and_node(&peer, &api).await;
    crash_trials(&peer, &api).await;
}

/// Part 1: the backend against Nova and Cinder.
async fn backend_attach_detach(peer: &Peer, api: &Api) {
    let (a, b_server, c) = (
        peer.get("NOVA_SERVER_A"),
        peer.get("NOVA_SERVER_B"),
        peer.get("NOVA_SERVER_C"),
    );
    let servers = [a, b_server, c];
    let b = backend(peer);
    let caps = b.capabilities();
    assert!(caps.attach && caps.zones, "{caps:?}");
    assert_eq!(
        b.node_zone(a).await.expect("zone").as_deref(),
        Some(peer.get("NOVA_ZONE"))
    );

    let v = create(&b, "nova-backend-1", &[]).await;
    let calls = || b.client().api_calls() + b.nova_calls();
    b.node_zone(a)
        .await
        .expect("warm: token, endpoints, microversions");
    let before = calls();
    let started = Instant::now();
    let context = b
        .publish_volume(&publish(&v, a, false))
        .await
        .expect("attach");
    let attach = started.elapsed();
    let attach_calls = calls() - before;
    assert_eq!(context[SERIAL_KEY], v.as_str());
    api.assert_attached(v.as_str(), &[a], &servers).await;
    assert!(
        Path::new(peer.get("NOVA_BY_ID_DIR"))
            .join(format!("virtio-{}", &v.as_str()[..20]))
            .exists(),
        "the simulated hypervisor plugged the disk"
    );

    let before = calls();
    let again = b
        .publish_volume(&publish(&v, a, false))
        .await
        .expect("repeat");
    let repeat_calls = calls() - before;
    assert_eq!(again, context, "a repeat answers the same context");
    api.assert_attached(v.as_str(), &[a], &servers).await;

    let e = b
        .publish_volume(&publish(&v, b_server, false))
        .await
        .expect_err("attached elsewhere");
    assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e}");
    let e = b
        .publish_volume(&publish(&v, b_server, true))
        .await
        .expect_err("not a multi-attach type");
    assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e}");
    assert!(e.message.contains("multi-attach"), "{e}");
    let missing = VolumeId::new("00000000-0000-4000-8000-000000000000");
    let e = b
        .publish_volume(&publish(&missing, a, false))
        .await
        .expect_err("no such volume");
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let v2 = create(&b, "nova-backend-2", &[]).await;
    for node in ["00000000-0000-4000-8000-000000000001", "some-fake-node-id"] {
        let e = b
            .publish_volume(&publish(&v2, node, false))
            .await
            .expect_err("no such server");
        assert_eq!(e.kind, ErrorKind::NotFound, "{node}: {e}");
    }
    let e = b.delete_volume(&v).await.expect_err("attached");
    assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e}");

    let before = calls();
    let started = Instant::now();
    b.unpublish_volume(&v, a).await.expect("detach");
    let detach = started.elapsed();
    let detach_calls = calls() - before;
    api.assert_attached(v.as_str(), &[], &servers).await;
    b.unpublish_volume(&v, a).await.expect("repeat detach");
    b.unpublish_volume(&v, "00000000-0000-4000-8000-000000000001")
        .await
        .expect("detach from a missing server");
    b.unpublish_volume(&missing, a)
        .await
        .expect("detach of a missing volume");
    println!(
        "nova attach: {} ms, {attach_calls} API calls (Cinder + Nova; a repeat: {repeat_calls}); \
         detach: {} ms, {detach_calls} API calls",
        attach.as_millis(),
        detach.as_millis()
    );

    // Zones: the topology's zone reaches Cinder; one Cinder does not know is refused.
    let zoned = b
        .create_volume(&CreateVolume {
            name: unique("nova-zoned"),
            size_bytes: 1,
            source: None,
            parameters: BTreeMap::new(),
            zone: Some(peer.get("NOVA_ZONE").to_owned()),
        })
        .await
        .expect("zoned volume");
    assert_eq!(zoned.zone.as_deref(), Some(peer.get("NOVA_ZONE")));
    let e = b
        .create_volume(&CreateVolume {
            name: unique("nova-nowhere"),
            size_bytes: 1,
            source: None,
            parameters: BTreeMap::new(),
            zone: Some("nowhere".into()),
        })
        .await
        .expect_err("unknown zone");
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");

    // Multi-attach: allowed by the volume type and a multi-node mode, on two servers.
    let shared = create(&b, "nova-shared", &[("type", peer.get("MULTIATTACH_TYPE"))]).await;
    b.publish_volume(&publish(&shared, a, true))
        .await
        .expect("first server");
    b.publish_volume(&publish(&shared, b_server, true))
        .await
        .expect("second server");
    api.assert_attached(shared.as_str(), &[a, b_server], &servers)
        .await;
    let e = b
        .publish_volume(&publish(&shared, c, false))
        .await
        .expect_err("single-node mode");
    assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e}");
    // An unset node: detached from every server (CSI ControllerUnpublishVolume).
    b.unpublish_volume(&shared, "")
        .await
        .expect("detach from all");
    api.assert_attached(shared.as_str(), &[], &servers).await;

    // Nova's disk limit: NOVA_MAX_DISKS disks (the root disk included), then RESOURCE_EXHAUSTED.
    let max: usize = peer.get("NOVA_MAX_DISKS").parse().expect("number");
    let mut filled = Vec::new();
    // Nova lists the root disk among the server's volumes; `max` counts it too.
    let present = api.server_volumes(c).await.len();
    for i in present..=max {
        let volume = create(&b, &format!("nova-limit-{i}"), &[]).await;
        let result = b.publish_volume(&publish(&volume, c, false)).await;
        filled.push(volume);
        if i < max {
            result.expect("below the limit");
        } else {
            let e = result.expect_err("over the limit");
            assert_eq!(e.kind, ErrorKind::QuotaExceeded, "{e}");
            let status: tonic::Status = snapcsi::error::Error::from(e).into();
            assert_eq!(status.code(), Code::ResourceExhausted);
        }
    }
    for volume in filled.iter().chain([&v, &v2, &shared, &zoned.id]) {
        b.unpublish_volume(volume, c).await.expect("detach");
        b.delete_volume(volume).await.expect("delete");
    }
}

fn mount_cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: 1 }),
        access_type: Some(csi::volume_capability::AccessType::Mount(
            csi::volume_capability::MountVolume::default(),
        )),
    }
}

/// xfs for the node half: it grows online with CAP_SYS_ADMIN alone, where online ext4 growth
/// needs CAP_SYS_RESOURCE, which some sandboxes (this one's CI among them) take away.
fn xfs_cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: 1 }),
        access_type: Some(csi::volume_capability::AccessType::Mount(
            csi::volume_capability::MountVolume {
                fs_type: "xfs".into(),
                ..Default::default()
            },
        )),
    }
}

/// Part 2: CSI over a socket, node side included.
async fn csi_and_node(peer: &Peer, api: &Api) {
    let a = peer.get("NOVA_SERVER_A");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("snapcsi.toml");
    std::fs::write(&config, format!("[backends.cinder]\n{}", section(peer))).expect("config");
    let socket = dir.path().join("csi.sock");
    let args: Vec<String> = [
        "snapcsi",
        "serve",
        "--endpoint",
        &format!("unix://{}", socket.display()),
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--config",
        &config.display().to_string(),
        "--node-id",
        a,
        "--disk-by-id-dir",
        peer.get("NOVA_BY_ID_DIR"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let snapcsi::cli::Command::Serve(serve) =
        snapcsi::cli::parse_args(args).expect("flags").command
    else {
        panic!("serve");
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        snapcsi::server::serve(serve, async {
            let _ = stopped.await;
        })
        .await
        .expect("serve")
    });
    for _ in 0..600 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = support::connect(&socket).await;
    let mut identity = snapcsi::proto::identity_client::IdentityClient::new(channel.clone());
    let mut controller = ControllerClient::new(channel.clone());
    let mut node = snapcsi::proto::node_client::NodeClient::new(channel.clone());

    let plugin = identity
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .expect("plugin caps")
        .into_inner();
    let topology_cap = csi::plugin_capability::service::Type::VolumeAccessibilityConstraints;
    assert!(
        plugin.capabilities.iter().any(|c| matches!(&c.r#type,
            Some(csi::plugin_capability::Type::Service(s)) if s.r#type == topology_cap as i32)),
        "{plugin:?}"
    );
    let caps = controller
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .expect("caps")
        .into_inner();
    let publish_cap = csi::controller_service_capability::rpc::Type::PublishUnpublishVolume;
    assert!(
        caps.capabilities.iter().any(|c| matches!(&c.r#type,
            Some(csi::controller_service_capability::Type::Rpc(r)) if r.r#type == publish_cap as i32)),
        "{caps:?}"
    );
    let info = node
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.node_id, a);
    let zone = peer.get("NOVA_ZONE");
    let topology = info.accessible_topology.expect("topology");
    assert_eq!(topology.segments["topology.snapcsi.dev/zone"], zone);

    let volume = controller
        .create_volume(csi::CreateVolumeRequest {
            name: unique("nova-csi-1"),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: GIB,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![xfs_cap()],
            accessibility_requirements: Some(csi::TopologyRequirement {
                requisite: vec![topology.clone()],
                preferred: vec![topology.clone()],
            }),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(volume.accessible_topology, vec![topology.clone()]);
    let id = volume.volume_id.clone();
    let publish_req = |node_id: &str| csi::ControllerPublishVolumeRequest {
        volume_id: id.clone(),
        node_id: node_id.to_owned(),
        volume_capability: Some(xfs_cap()),
        ..Default::default()
    };
    let context = controller
        .controller_publish_volume(publish_req(a))
        .await
        .expect("publish")
        .into_inner()
        .publish_context;
    assert_eq!(context[SERIAL_KEY], id);
    for (node_id, code) in [
        (peer.get("NOVA_SERVER_B"), Code::FailedPrecondition),
        ("some-fake-node-id", Code::FailedPrecondition),
    ] {
        let status = controller
            .controller_publish_volume(publish_req(node_id))
            .await
            .expect_err("attached to A");
        assert_eq!(status.code(), code, "{node_id}: {status:?}");
    }
    let status = controller
        .controller_publish_volume(csi::ControllerPublishVolumeRequest {
            volume_id: "00000000-0000-4000-8000-000000000000".into(),
            ..publish_req(a)
        })
        .await
        .expect_err("no such volume");
    assert_eq!(status.code(), Code::NotFound);

    if support::is_root() {
        let staging = dir.path().join("staging");
        let target = dir.path().join("target");
        let stage =
            |context: std::collections::HashMap<String, String>| csi::NodeStageVolumeRequest {
                volume_id: id.clone(),
                publish_context: context,
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(xfs_cap()),
                ..Default::default()
            };
        let node_publish =
            |context: std::collections::HashMap<String, String>| csi::NodePublishVolumeRequest {
                volume_id: id.clone(),
                publish_context: context,
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(xfs_cap()),
                ..Default::default()
            };
        node.node_stage_volume(stage(context.clone()))
            .await
            .expect("stage");
        node.node_publish_volume(node_publish(context.clone()))
            .await
            .expect("node publish");
        std::fs::write(target.join("hello"), b"from a pod").expect("write through the mount");
        let expanded = controller
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: id.clone(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: 2 * GIB,
                    limit_bytes: 0,
                }),
                volume_capability: Some(xfs_cap()),
                ..Default::default()
            })
            .await
            .expect("controller expand")
            .into_inner();
        assert!(expanded.node_expansion_required);
        // Cinder tells Nova, Nova's driver grows the disk: wait for the device to grow.
        let mut grown = 0;
        for _ in 0..100 {
            grown = node
                .node_expand_volume(csi::NodeExpandVolumeRequest {
                    volume_id: id.clone(),
                    volume_path: target.display().to_string(),
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: 2 * GIB,
                        limit_bytes: 0,
                    }),
                    volume_capability: Some(xfs_cap()),
                    ..Default::default()
                })
                .await
                .expect("node expand")
                .into_inner()
                .capacity_bytes;
            if grown >= 2 * GIB {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(grown, 2 * GIB, "the disk grew to the new size");
        let stats = node
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: id.clone(),
                volume_path: target.display().to_string(),
                ..Default::default()
            })
            .await
            .expect("stats")
            .into_inner();
        assert!(
            stats.usage[0].total > GIB * 3 / 2,
            "the file system grew: {stats:?}"
        );
        node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: id.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .expect("node unpublish");
        node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstage");
        controller
            .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                volume_id: id.clone(),
                node_id: a.into(),
                ..Default::default()
            })
            .await
            .expect("unpublish");
        let link = PathBuf::from(peer.get("NOVA_BY_ID_DIR")).join(format!("virtio-{}", &id[..20]));
        assert!(!link.exists(), "the disk left the node");
        // Attached again: the data is still there.
        let context = controller
            .controller_publish_volume(publish_req(a))
            .await
            .expect("publish again")
            .into_inner()
            .publish_context;
        node.node_stage_volume(stage(context.clone()))
            .await
            .expect("stage again");
        node.node_publish_volume(node_publish(context))
            .await
            .expect("node publish again");
        assert_eq!(
            std::fs::read(target.join("hello")).expect("read"),
            b"from a pod"
        );
        node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: id.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .expect("node unpublish");
        node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstage");
    } else {
        println!("SKIPPED: the node half (stage/publish/expand on the attached disk) needs root");
    }
    controller
        .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
            volume_id: id.clone(),
            node_id: a.into(),
            ..Default::default()
        })
        .await
        .expect("unpublish");
    api.assert_attached(&id, &[], &[a]).await;
    controller
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let _ = stop.send(());
    let _ = server.await;
}

/// The driver as a child process (controller only), to be killed with SIGKILL.
struct Controller {
    child: Child,
    channel: Channel,
}

impl Controller {
    async fn start(dir: &Path, config: &Path) -> Controller {
        let socket = dir.join("csi.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_snapcsi"))
            .args(["serve", "--mode", "controller", "--endpoint"])
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start snapcsi");
        for _ in 0..600 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                let channel = support::connect(&socket).await;
                return Controller { child, channel };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("driver did not come up");
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call, killed at a random moment, then repeated on a fresh process until it succeeds.
async fn killed_then_repeated(
    dir: &Path,
    config: &Path,
    delay: Duration,
    call: impl Fn(ControllerClient<Channel>) -> tokio::task::JoinHandle<Result<(), tonic::Status>>,
) -> bool {
    let driver = Controller::start(dir, config).await;
    let running = call(ControllerClient::new(driver.channel.clone()));
    tokio::time::sleep(delay).await;
    let finished = running.is_finished();
    driver.kill();
    let _ = running.await;
    let driver = Controller::start(dir, config).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match call(ControllerClient::new(driver.channel.clone()))
            .await
            .expect("task")
        {
            Ok(()) => break,
            Err(s)
                if matches!(s.code(), Code::Unavailable | Code::Aborted)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("repeat failed: {s:?}"),
        }
    }
    driver.kill();
    !finished
}

/// Part 3: kill -9 during ControllerPublish and ControllerUnpublish.
async fn crash_trials(peer: &Peer, api: &Api) {
    let trials: u64 = std::env::var("NOVA_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let a = peer.get("NOVA_SERVER_A").to_owned();
    let servers = [
        peer.get("NOVA_SERVER_A"),
        peer.get("NOVA_SERVER_B"),
        peer.get("NOVA_SERVER_C"),
    ];
    let b = backend(peer);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("snapcsi.toml");
    std::fs::write(&config, format!("[backends.cinder]\n{}", section(peer))).expect("config");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut interrupted = 0;
    for trial in 0..trials {
        let volume = create(&b, &format!("nova-crash-{trial}"), &[]).await;
        for publishing in [true, false] {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // The attach takes a second or two here: kill within its first 2.5 s.
            let delay = Duration::from_millis(seed % 2500);
            let (id, node) = (volume.as_str().to_owned(), a.clone());
            let killed = killed_then_repeated(dir.path(), &config, delay, move |mut c| {
                let (id, node) = (id.clone(), node.clone());
                tokio::spawn(async move {
                    if publishing {
                        c.controller_publish_volume(csi::ControllerPublishVolumeRequest {
                            volume_id: id,
                            node_id: node,
                            volume_capability: Some(mount_cap()),
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                    } else {
                        c.controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                            volume_id: id,
                            node_id: node,
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                    }
                })
            })
            .await;
            interrupted += u64::from(killed);
            let want: &[&str] = if publishing { &[servers[0]] } else { &[] };
            api.assert_attached(volume.as_str(), want, &servers).await;
        }
        b.delete_volume(&volume).await.expect("delete");
    }
    println!(
        "nova crash: {trials} trials x (publish, unpublish), {interrupted} calls killed mid-way; \
         each ended with one attachment, then none"
    );
    assert!(
        interrupted > 0 || trials == 0,
        "no call was killed mid-way: the trials prove nothing"
    );
}
