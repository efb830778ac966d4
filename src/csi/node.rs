//! The CSI Node service: stage = find the volume's block device (and format and mount it for
//! file-system volumes), publish = bind mount into the pod's target path. There are two ways
//! to find the device and one path after that: a node-local image is attached to a loop
//! device here; a cloud disk (Cinder through Nova) was attached by the controller and is found
//! by the serial its publish context names (`node::disk`).
//!
//! The node side needs no metadata store: a volume's image sits at a path derived from its id
//! (`Layout`), so the node plugin and the controller can be separate processes sharing the data
//! directory. While a volume is staged, a marker file holds its staging path; the controller
//! reads it to freeze the file system for the instant of a snapshot.

use super::call;
use super::convert;
use super::validate::{self, Access};
use crate::backend::SERIAL_KEY;
use crate::backend::local::{Layout, StagedMarker};
use crate::error::{Error, Result};
use crate::node::{disk, format, loopdev, mount, stats};
use crate::ops::inflight::{Held, InFlight};
use crate::proto::node_server::Node;
use crate::proto::{self as csi, node_service_capability as ncap};
use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Default file system of mount volumes.
pub const DEFAULT_FS: &str = "ext4";

/// How this node finds the disks a cloud attached to it.
#[derive(Debug, Clone)]
pub struct CloudDisks {
    /// Where udev's by-serial links are (`/dev/disk/by-id`).
    pub by_id_dir: PathBuf,
    /// Longest NodeStageVolume waits for the disk to appear.
    pub wait: Duration,
    /// The node's availability zone (NodeGetInfo topology), when known.
    pub zone: Option<String>,
}

/// Where a volume's block device comes from.
enum Disk {
    /// A node-local image, attached to a loop device here.
    Image(PathBuf),
    /// A cloud disk with this serial, attached by the controller.
    Cloud(String),
}

/// The serial of a cloud volume named by id alone (unstage, expand): the backend's own id,
/// without the `<instance>:` prefix a config with several instances adds.
fn serial_of(volume_id: &str) -> &str {
    volume_id.rsplit(':').next().unwrap_or(volume_id)
}

/// The Node service.
pub struct NodeService {
    node_id: String,
    /// `None` when the backend has no node-local images (cloud backends attach elsewhere).
    layout: Option<Layout>,
    /// `Some` when volumes may be cloud disks the controller attaches to this node.
    cloud: Option<CloudDisks>,
    inflight: InFlight,
}

impl NodeService {
    /// A node service for `node_id`, serving images under `layout`.
    pub fn new(node_id: String, layout: Option<Layout>) -> Self {
        Self {
            node_id,
            layout,
            cloud: None,
            inflight: InFlight::default(),
        }
    }

    /// This node service also serving cloud disks found as `cloud` says.
    pub fn with_cloud_disks(mut self, cloud: Option<CloudDisks>) -> Self {
        self.cloud = cloud;
        self
    }

    /// The volume's disk. A publish context with a serial names a cloud disk; otherwise a
    /// node-local image that exists, or (without a context: unstage, expand) a cloud disk
    /// named by the volume id.
    async fn disk(
        &self,
        volume_id: &str,
        context: Option<&HashMap<String, String>>,
    ) -> Result<Disk> {
        if let Some(serial) = context.and_then(|c| c.get(SERIAL_KEY)) {
            if self.cloud.is_none() {
                return Err(Error::FailedPrecondition(format!(
                    "publish_context: volume {volume_id} is a cloud disk, but this node serves                      no cloud backend that attaches disks"
                )));
            }
            return Ok(Disk::Cloud(serial.clone()));
        }
        match self.image(volume_id).await {
            Ok(image) => Ok(Disk::Image(image)),
            Err(e) if context.is_none() && self.cloud.is_some() => {
                tracing::debug!(volume_id, error = %e, "not a local image: a cloud disk");
                Ok(Disk::Cloud(serial_of(volume_id).to_owned()))
            }
            Err(e) => Err(e),
        }
    }

    /// The block device of a cloud disk, waiting up to `wait` for it.
    async fn cloud_device(&self, serial: &str, wait: Duration) -> Result<PathBuf> {
        let dir = self
            .cloud
            .as_ref()
            .map_or_else(|| PathBuf::from(disk::BY_ID_DIR), |c| c.by_id_dir.clone());
        Ok(disk::find_by_serial(&dir, serial, wait).await?)
    }

    fn stage_wait(&self) -> Duration {
        self.cloud
            .as_ref()
            .map_or(Duration::from_secs(30), |c| c.wait)
    }

    fn hold(&self, volume_id: &str) -> Result<Held> {
        let key = format!("volume {volume_id} on this node");
        self.inflight
            .try_hold(key.clone())
            .ok_or(Error::InFlight(key))
    }

    /// The image of an existing volume, NOT_FOUND otherwise.
    async fn image(&self, volume_id: &str) -> Result<PathBuf> {
        let layout = self.layout.as_ref().ok_or_else(|| {
            Error::FailedPrecondition("this backend has no node-local volumes".to_owned())
        })?;
        let not_found = || Error::NotFound {
            what: "volume",
            id: volume_id.to_owned(),
        };
        let image = layout.volume_image(volume_id).ok_or_else(not_found)?;
        match tokio::fs::metadata(&image).await {
            Ok(_) => Ok(image),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found()),
            Err(e) => Err(Error::Internal(format!("{}: {e}", image.display()))),
        }
    }

    fn marker(&self, volume_id: &str) -> Option<PathBuf> {
        self.layout.as_ref()?.staged_marker(volume_id)
    }

    async fn stage(
        &self,
        req: csi::NodeStageVolumeRequest,
    ) -> Result<csi::NodeStageVolumeResponse> {
        let volume_id = validate::id("volume_id", &req.volume_id)?;
        let staging = PathBuf::from(validate::path(
            "staging_target_path",
            &req.staging_target_path,
        )?);
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::invalid("volume_capability", "must be set"))?;
        let (access, _) = validate::capability("volume_capability", cap)?;
        let disk = self.disk(volume_id, Some(&req.publish_context)).await?;
        let _held = self.hold(volume_id)?;
        let device = match &disk {
            Disk::Image(image) => attached_or_attach(image).await?,
            Disk::Cloud(serial) => self.cloud_device(serial, self.stage_wait()).await?,
        };
        let mounted = matches!(access, Access::Mount { .. });
        if let Access::Mount { fs_type, flags } = access
            && !mount::is_mountpoint(&staging).await?
        {
            create_dir(&staging).await?;
            let fs_type = ensure_filesystem(volume_id, &device, fs_type).await?;
            // A restored or expanded image is larger than the file system inside it: ext4
            // grows before the mount, xfs (which only grows mounted) after it.
            format::grow_unmounted(&device, &fs_type).await?;
            mount::mount_fs(&device, &staging, &fs_type, false, &flags).await?;
            if fs_type == "xfs" {
                format::grow_fs(&device, &staging, &fs_type).await?;
            }
        }
        if let Disk::Image(_) = disk
            && let Some(marker) = self.marker(volume_id)
        {
            let record = StagedMarker {
                staging,
                mounted: Some(mounted),
            };
            write_marker(&marker, &record).await?;
        }
        Ok(csi::NodeStageVolumeResponse {})
    }

    async fn unstage(
        &self,
        req: csi::NodeUnstageVolumeRequest,
    ) -> Result<csi::NodeUnstageVolumeResponse> {
        let volume_id = validate::id("volume_id", &req.volume_id)?;
        let staging = PathBuf::from(validate::path(
            "staging_target_path",
            &req.staging_target_path,
        )?);
        let image = match self.disk(volume_id, None).await {
            Ok(Disk::Image(image)) => Some(image),
            Ok(Disk::Cloud(_)) => None,
            // A node-local image that is gone: what is left of it here still goes.
            Err(e) => {
                let layout = self.layout.as_ref().ok_or(e)?;
                Some(
                    layout
                        .volume_image(volume_id)
                        .ok_or_else(|| Error::NotFound {
                            what: "volume",
                            id: volume_id.to_owned(),
                        })?,
                )
            }
        };
        let _held = self.hold(volume_id)?;
        if mount::is_mountpoint(&staging).await? {
            mount::unmount(&staging).await?;
        }
        // A cloud disk stays attached: the controller detaches it (ControllerUnpublish).
        let Some(image) = image else {
            return Ok(csi::NodeUnstageVolumeResponse {});
        };
        loopdev::detach_all_for(&image).await?;
        if let Some(marker) = self.marker(volume_id) {
            match tokio::fs::remove_file(&marker).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Internal(format!("{}: {e}", marker.display()))),
            }
        }
        Ok(csi::NodeUnstageVolumeResponse {})
    }

    async fn publish(
        &self,
        req: csi::NodePublishVolumeRequest,
    ) -> Result<csi::NodePublishVolumeResponse> {
        let volume_id = validate::id("volume_id", &req.volume_id)?;
        let staging = PathBuf::from(validate::path(
            "staging_target_path",
            &req.staging_target_path,
        )?);
        let target = PathBuf::from(validate::path("target_path", &req.target_path)?);
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::invalid("volume_capability", "must be set"))?;
        let (access, _) = validate::capability("volume_capability", cap)?;
        let disk = self.disk(volume_id, Some(&req.publish_context)).await?;
        let _held = self.hold(volume_id)?;
        if mount::is_mountpoint(&target).await? {
            return Ok(csi::NodePublishVolumeResponse {});
        }
        match access {
            Access::Mount { .. } => {
                if !mount::is_mountpoint(&staging).await? {
                    return Err(Error::FailedPrecondition(format!(
                        "staging_target_path: volume {volume_id} is not staged at {}",
                        staging.display()
                    )));
                }
                create_dir(&target).await?;
                mount::bind_mount(&staging, &target, req.readonly).await?;
            }
            Access::Block => {
                let image = match disk {
                    Disk::Image(image) => image,
                    Disk::Cloud(serial) => {
                        // The disk was there at stage; a short wait covers a re-plug.
                        let device = self.cloud_device(&serial, Duration::from_secs(5)).await?;
                        create_file(&target).await?;
                        mount::bind_mount(&device, &target, req.readonly).await?;
                        return Ok(csi::NodePublishVolumeResponse {});
                    }
                };
                let staged = loopdev::find_by_backing_file(&image).await?;
                if staged.is_empty() {
                    return Err(Error::FailedPrecondition(format!(
                        "volume {volume_id} is not staged: no loop device is attached"
                    )));
                }
                // A read-only bind mount does not stop writes through a device node; a
                // read-only loop device does. Unstage detaches it with the others.
                let device = if req.readonly {
                    loopdev::attach(&image, true).await?
                } else {
                    staged[0].clone()
                };
                create_file(&target).await?;
                mount::bind_mount(&device, &target, req.readonly).await?;
            }
        }
        Ok(csi::NodePublishVolumeResponse {})
    }

    async fn unpublish(
        &self,
        req: csi::NodeUnpublishVolumeRequest,
    ) -> Result<csi::NodeUnpublishVolumeResponse> {
        let volume_id = validate::id("volume_id", &req.volume_id)?;
        let target = PathBuf::from(validate::path("target_path", &req.target_path)?);
        let _held = self.hold(volume_id)?;
        if mount::is_mountpoint(&target).await? {
            mount::unmount(&target).await?;
        }
        // CSI: the plugin removes the file or directory it created at target_path.
        let removed = match tokio::fs::symlink_metadata(&target).await {
            Ok(meta) if meta.is_dir() => tokio::fs::remove_dir(&target).await,
            Ok(_) => tokio::fs::remove_file(&target).await,
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Internal(format!("{}: {e}", target.display()))),
        }
        Ok(csi::NodeUnpublishVolumeResponse {})
    }

    async fn volume_stats(
        &self,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse> {
        use csi::volume_usage::Unit;
        let volume_id = validate::id("volume_id", &req.volume_id)?;
        let path = PathBuf::from(validate::path("volume_path", &req.volume_path)?);
        self.disk(volume_id, None).await?;
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::PathNotFound {
                    field: "volume_path",
                    path: path.display().to_string(),
                });
            }
            Err(e) => return Err(Error::Internal(format!("{}: {e}", path.display()))),
        };
        let usage = if meta.file_type().is_block_device() {
            let total = stats::block_size_bytes(&path).await?;
            vec![csi::VolumeUsage {
                available: 0,
                total: convert::bytes(total),
                used: 0,
                unit: Unit::Bytes as i32,
            }]
        } else {
            if !mount::is_mountpoint(&path).await? {
                return Err(Error::PathNotFound {
                    field: "volume_path",
                    path: format!("{} (no volume is mounted there)", path.display()),
                });
            }
            let fs = stats::fs_stats(&path).await?;
            vec![
                csi::VolumeUsage {
                    available: convert::bytes(fs.available_bytes),
                    total: convert::bytes(fs.total_bytes),
                    used: convert::bytes(fs.used_bytes),
                    unit: Unit::Bytes as i32,
                },
                csi::VolumeUsage {
                    available: convert::bytes(fs.free_inodes),
                    total: convert::bytes(fs.total_inodes),
                    used: convert::bytes(fs.used_inodes),
                    unit: Unit::Inodes as i32,
                },
            ]
        };
        Ok(csi::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: None,
        })
    }

    async fn expand(
        &self,
        req: csi::NodeExpandVolumeRequest,
    ) -> Result<csi::NodeExpandVolumeResponse> {
        let volume_id = validate::id("volume_id", &req.volume_id)?;
        let path = PathBuf::from(validate::path("volume_path", &req.volume_path)?);
        validate::capacity(req.capacity_range.as_ref())?;
        let access = req
            .volume_capability
            .as_ref()
            .map(|cap| validate::capability("volume_capability", cap).map(|(a, _)| a))
            .transpose()?;
        let disk = self.disk(volume_id, None).await?;
        let _held = self.hold(volume_id)?;
        if tokio::fs::metadata(&path).await.is_err() {
            return Err(Error::PathNotFound {
                field: "volume_path",
                path: path.display().to_string(),
            });
        }
        let image = match disk {
            Disk::Image(image) => image,
            Disk::Cloud(serial) => {
                // The cloud grew the volume (os-extend) and the hypervisor the disk; the
                // kernel may need to re-read its size, then the file system grows into it.
                let device = self.cloud_device(&serial, Duration::from_secs(5)).await?;
                disk::rescan(&device).await?;
                if !matches!(access, Some(Access::Block))
                    && let Some(entry) = mount::mount_info(&path).await?
                    && Path::new(&entry.source) == device
                {
                    format::grow_fs(&device, &path, &entry.fstype).await?;
                }
                let size = stats::block_size_bytes(&device).await?;
                return Ok(csi::NodeExpandVolumeResponse {
                    capacity_bytes: convert::bytes(size),
                });
            }
        };
        let devices = loopdev::find_by_backing_file(&image).await?;
        for device in &devices {
            loopdev::refresh_capacity(device).await?;
        }
        if !matches!(access, Some(Access::Block))
            && let Some(entry) = mount::mount_info(&path).await?
            && devices.contains(&PathBuf::from(&entry.source))
        {
            format::grow_fs(Path::new(&entry.source), &path, &entry.fstype).await?;
        }
        let size = tokio::fs::metadata(&image)
            .await
            .map_err(|e| Error::Internal(format!("{}: {e}", image.display())))?
            .len();
        Ok(csi::NodeExpandVolumeResponse {
            capacity_bytes: convert::bytes(size),
        })
    }
}

/// The file system on `device`, creating `wanted` (or the default) when there is none.
async fn ensure_filesystem(volume_id: &str, device: &Path, wanted: String) -> Result<String> {
    match format::detect_fs(device).await? {
        Some(existing) if !wanted.is_empty() && existing != wanted => {
            Err(Error::FailedPrecondition(format!(
                "volume_capability: volume {volume_id} holds a {existing} file system, not \
                 {wanted}"
            )))
        }
        Some(existing) => Ok(existing),
        None => {
            let fs = if wanted.is_empty() {
                DEFAULT_FS.to_owned()
            } else {
                wanted
            };
            format::mkfs(device, &fs).await?;
            Ok(fs)
        }
    }
}

async fn attached_or_attach(image: &Path) -> Result<PathBuf> {
    if let Some(device) = loopdev::find_by_backing_file(image)
        .await?
        .into_iter()
        .next()
    {
        return Ok(device);
    }
    Ok(loopdev::attach(image, false).await?)
}

async fn create_dir(path: &Path) -> Result<()> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", path.display())))
}

async fn create_file(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir(parent).await?;
    }
    match tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Internal(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the staged marker atomically (temp file + rename), so a crash never leaves a torn one.
async fn write_marker(marker: &Path, record: &StagedMarker) -> Result<()> {
    let tmp = marker.with_extension("tmp");
    let write = async {
        tokio::fs::write(&tmp, record.render()).await?;
        tokio::fs::rename(&tmp, marker).await
    };
    write
        .await
        .map_err(|e| Error::Internal(format!("{}: {e}", marker.display())))
}

impl NodeService {
    /// This node's topology: the node itself for node-local volumes, its availability zone
    /// for cloud disks.
    fn topology(&self) -> Option<csi::Topology> {
        let mut segments = HashMap::new();
        if self.layout.is_some() {
            segments.extend(convert::node_topology(&self.node_id).segments);
        }
        if let Some(zone) = self.cloud.as_ref().and_then(|c| c.zone.as_deref()) {
            segments.extend(convert::zone_topology(zone).segments);
        }
        (!segments.is_empty()).then_some(csi::Topology { segments })
    }
}

fn node_cap(kind: ncap::rpc::Type) -> csi::NodeServiceCapability {
    csi::NodeServiceCapability {
        r#type: Some(ncap::Type::Rpc(ncap::Rpc {
            r#type: kind as i32,
        })),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<csi::NodeStageVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodeStageVolumeResponse>, Status> {
        call("NodeStageVolume", "node", self.stage(request.into_inner())).await
    }

    async fn node_unstage_volume(
        &self,
        request: Request<csi::NodeUnstageVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        call(
            "NodeUnstageVolume",
            "node",
            self.unstage(request.into_inner()),
        )
        .await
    }

    async fn node_publish_volume(
        &self,
        request: Request<csi::NodePublishVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodePublishVolumeResponse>, Status> {
        call(
            "NodePublishVolume",
            "node",
            self.publish(request.into_inner()),
        )
        .await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        call(
            "NodeUnpublishVolume",
            "node",
            self.unpublish(request.into_inner()),
        )
        .await
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> std::result::Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        call(
            "NodeGetVolumeStats",
            "node",
            self.volume_stats(request.into_inner()),
        )
        .await
    }

    async fn node_expand_volume(
        &self,
        request: Request<csi::NodeExpandVolumeRequest>,
    ) -> std::result::Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        call(
            "NodeExpandVolume",
            "node",
            self.expand(request.into_inner()),
        )
        .await
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        use ncap::rpc::Type;
        let capabilities = if self.layout.is_some() || self.cloud.is_some() {
            [
                Type::StageUnstageVolume,
                Type::GetVolumeStats,
                Type::ExpandVolume,
            ]
            .into_iter()
            .map(node_cap)
            .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<csi::NodeGetInfoRequest>,
    ) -> std::result::Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: self.topology(),
        }))
    }
}
