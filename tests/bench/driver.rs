//! The drivers under test, each a separate process on a unix socket: snapcsi (local or memory
//! backend, possibly two builds: the current one and a "before" one) and csi-driver-host-path.

use crate::util;
use hyper_util::rt::TokioIo;
use snapcsi::proto::controller_client::ControllerClient;
use snapcsi::proto::identity_client::IdentityClient;
use snapcsi::proto::node_client::NodeClient;
use snapcsi::proto::{self as csi};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// Which program and backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SnapcsiLocal,
    SnapcsiMemory,
    Hostpath,
}

/// One driver build with one backend: a column of the tables.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Column name: "snapcsi", "snapcsi@before", "host-path", with "/memory" for memory.
    pub label: String,
    pub kind: Kind,
    pub bin: PathBuf,
}

impl Variant {
    pub fn is_hostpath(&self) -> bool {
        self.kind == Kind::Hostpath
    }
}

/// A started driver.
pub struct Running {
    pub variant: Variant,
    child: Child,
    pub socket: PathBuf,
    pub channel: Channel,
    /// From spawn to the first Probe answered ready.
    pub start_to_probe: Duration,
}

/// A gRPC channel over a unix socket (one HTTP/2 connection).
pub async fn connect(socket: &Path) -> Result<Channel, String> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://localhost")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| e.to_string())
}

impl Running {
    /// Starts `variant` with its state under `dir` (created), and waits for Probe.
    pub async fn start(variant: &Variant, dir: &Path) -> Result<Running, String> {
        Self::start_with(variant, dir, &[]).await
    }

    /// [`Running::start`] with more flags for snapcsi (`--config ...`).
    pub async fn start_with(
        variant: &Variant,
        dir: &Path,
        extra: &[&str],
    ) -> Result<Running, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let socket = dir.join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        let mut command = Command::new(&variant.bin);
        match variant.kind {
            Kind::SnapcsiLocal | Kind::SnapcsiMemory => {
                command
                    .arg("serve")
                    .arg("--endpoint")
                    .arg(&endpoint)
                    .arg("--data-dir")
                    .arg(dir.join("data"))
                    .arg("--node-id")
                    .arg("bench-node");
                if variant.kind == Kind::SnapcsiMemory {
                    command.args(["--backend", "memory"]);
                }
                command.args(extra);
            }
            Kind::Hostpath => {
                command
                    .arg(format!("--endpoint={endpoint}"))
                    .arg("--nodeid=bench-node")
                    .arg(format!("--statedir={}", dir.join("state").display()))
                    .arg("--drivername=hostpath.csi.k8s.io");
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("driver.log"))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", variant.bin.display()))?;
        let mut running = Running {
            variant: variant.clone(),
            child,
            socket: socket.clone(),
            channel: Endpoint::from_static("http://unused").connect_lazy(),
            start_to_probe: Duration::ZERO,
        };
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = running.child.try_wait() {
                return Err(format!(
                    "{} exited at start ({status}); see {}",
                    variant.label,
                    dir.join("driver.log").display()
                ));
            }
            if socket.exists()
                && let Ok(channel) = connect(&socket).await
            {
                let probe = IdentityClient::new(channel.clone())
                    .probe(csi::ProbeRequest {})
                    .await;
                if probe.is_ok_and(|r| r.into_inner().ready != Some(false)) {
                    running.start_to_probe = started.elapsed();
                    running.channel = channel;
                    return Ok(running);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer Probe within 60 s",
                    variant.label
                ));
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_mib(&self) -> f64 {
        util::rss_mib(self.pid())
    }

    pub fn threads(&self) -> u64 {
        util::threads(self.pid())
    }

    pub fn cpu_seconds(&self) -> f64 {
        util::cpu_seconds(self.pid())
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A mount-access capability for a single-node writer (ext4 unless `fs_type` says otherwise).
pub fn mount_capability(fs_type: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode {
            mode: csi::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(csi::volume_capability::AccessType::Mount(
            csi::volume_capability::MountVolume {
                fs_type: fs_type.to_owned(),
                ..Default::default()
            },
        )),
    }
}

/// CreateVolume of `size` bytes, optionally restored from `snapshot`.
pub async fn create_volume(
    driver: &Running,
    name: &str,
    size: u64,
    snapshot: Option<&str>,
) -> Result<csi::Volume, String> {
    let request = csi::CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: size as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_capability("")],
        volume_content_source: snapshot.map(|id| csi::VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Snapshot(
                csi::volume_content_source::SnapshotSource {
                    snapshot_id: id.to_owned(),
                },
            )),
        }),
        ..Default::default()
    };
    driver
        .controller()
        .create_volume(request)
        .await
        .map_err(|s| format!("CreateVolume {name}: {}", s.message()))?
        .into_inner()
        .volume
        .ok_or_else(|| "CreateVolume: no volume".to_owned())
}

pub async fn delete_volume(driver: &Running, id: &str) -> Result<(), String> {
    driver
        .controller()
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("DeleteVolume {id}: {}", s.message()))
}

/// CreateSnapshot, repeated every 10 ms until the snapshot is ready.
pub async fn snapshot_until_ready(
    driver: &Running,
    name: &str,
    volume: &str,
    parameters: &[(&str, &str)],
) -> Result<csi::Snapshot, tonic::Status> {
    loop {
        let answer = driver
            .controller()
            .create_snapshot(csi::CreateSnapshotRequest {
                name: name.to_owned(),
                source_volume_id: volume.to_owned(),
                parameters: parameters
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .snapshot
            .ok_or_else(|| tonic::Status::internal("CreateSnapshot: no snapshot"))?;
        if answer.ready_to_use {
            return Ok(answer);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn delete_snapshot(driver: &Running, id: &str) -> Result<(), String> {
    driver
        .controller()
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("DeleteSnapshot {id}: {}", s.message()))
}

/// A volume staged and published at `target` on this node.
pub struct Published {
    pub volume_id: String,
    pub staging: PathBuf,
    pub target: PathBuf,
}

pub async fn stage_and_publish(
    driver: &Running,
    volume: &csi::Volume,
    mounts: &Path,
) -> Result<Published, String> {
    let staging = mounts.join(format!("{}-staging", volume.volume_id));
    let target = mounts.join(format!("{}-target", volume.volume_id));
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    driver
        .node()
        .node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(mount_capability("")),
            publish_context: Default::default(),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("NodeStageVolume: {}", s.message()))?;
    driver
        .node()
        .node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(mount_capability("")),
            readonly: false,
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("NodePublishVolume: {}", s.message()))?;
    Ok(Published {
        volume_id: volume.volume_id.clone(),
        staging,
        target,
    })
}

pub async fn unpublish_and_unstage(driver: &Running, published: &Published) -> Result<(), String> {
    driver
        .node()
        .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: published.volume_id.clone(),
            target_path: published.target.display().to_string(),
        })
        .await
        .map_err(|s| format!("NodeUnpublishVolume: {}", s.message()))?;
    driver
        .node()
        .node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: published.volume_id.clone(),
            staging_target_path: published.staging.display().to_string(),
        })
        .await
        .map_err(|s| format!("NodeUnstageVolume: {}", s.message()))?;
    Ok(())
}

/// Walks every page of ListSnapshots with `page` entries: (items, total time, page times).
pub async fn walk_snapshots(
    driver: &Running,
    page: i32,
) -> Result<(usize, Duration, Vec<Duration>), String> {
    let mut client = driver.controller();
    let mut token = String::new();
    let mut items = 0;
    let mut pages = Vec::new();
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let answer = client
            .list_snapshots(csi::ListSnapshotsRequest {
                max_entries: page,
                starting_token: token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("ListSnapshots: {}", s.message()))?
            .into_inner();
        pages.push(t.elapsed());
        items += answer.entries.len();
        if answer.next_token.is_empty() {
            break;
        }
        token = answer.next_token;
    }
    Ok((items, started.elapsed(), pages))
}
