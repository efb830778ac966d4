//! The CSI Controller service: volume and snapshot lifecycle.
//!
//! Each RPC validates its request (`validate`), runs through `ops` (idempotency by name,
//! in-flight guard, paging) and converts the answer (`convert`). Capabilities advertised are
//! derived from the backend's [`Capabilities`], so an RPC is advertised exactly when it works;
//! one not advertised (publish/unpublish on a backend that attaches nothing, modify) answers
//! UNIMPLEMENTED as the spec asks.

use super::convert::{self, TOPOLOGY_KEY, ZONE_KEY};
use super::validate::{self, Access};
use super::{call, not_offered};
use crate::backend::{
    Capabilities, CreateSnapshot, PublishVolume, SnapshotFilter, SnapshotId, Volume, VolumeId,
};
use crate::error::{Error, Result};
use crate::ops::Ops;
use crate::proto::controller_server::Controller;
use crate::proto::{self as csi, controller_service_capability as ccap};
use crate::secret::Secrets;
use std::collections::BTreeMap;
use tonic::{Request, Response, Status};

/// Binary metadata of a ListSnapshots answer: the snapshots of the page that share their CSI
/// name with another (`backend::names::page_duplicates`), as a JSON object id -> name, for
/// `snapcsi ctl snapshot list` (CSI's `Snapshot` message carries no name). Absent when none.
pub const DUPLICATE_NAMES_KEY: &str = "snapcsi-duplicate-names-bin";

/// Smallest volume each file system can be created on (mkfs.xfs refuses below 300 MiB).
const XFS_MIN_BYTES: u64 = 300 << 20;
const EXT4_MIN_BYTES: u64 = 16 << 20;

/// The Controller service.
pub struct ControllerService {
    ops: Ops,
    node_id: String,
}

impl ControllerService {
    /// A controller over `ops`; `node_id` is the topology of node-local volumes.
    pub fn new(ops: Ops, node_id: String) -> Self {
        Self { ops, node_id }
    }

    fn caps(&self) -> Capabilities {
        self.ops.backend().capabilities()
    }

    fn topology(&self) -> Option<csi::Topology> {
        self.caps()
            .node_local
            .then(|| convert::node_topology(&self.node_id))
    }

    /// A volume's topology: the node of node-local volumes, the zone of zonal ones.
    fn topology_of(&self, volume: &Volume) -> Option<csi::Topology> {
        let caps = self.caps();
        if caps.node_local {
            return self.topology();
        }
        volume
            .zone
            .as_deref()
            .filter(|_| caps.zones)
            .map(convert::zone_topology)
    }

    /// The zone a new volume goes to: the first preferred topology with a zone, else the
    /// first requisite one (CSI: the SP SHOULD try the preferred topologies in order).
    fn requested_zone(&self, requirement: Option<&csi::TopologyRequirement>) -> Option<String> {
        let requirement = requirement.filter(|_| self.caps().zones)?;
        requirement
            .preferred
            .iter()
            .chain(&requirement.requisite)
            .find_map(|t| t.segments.get(ZONE_KEY).cloned())
    }

    async fn publish_inner(
        &self,
        req: csi::ControllerPublishVolumeRequest,
    ) -> Result<csi::ControllerPublishVolumeResponse> {
        self.require(self.caps().attach, "ControllerPublishVolume")?;
        let volume_id = VolumeId::new(validate::id("volume_id", &req.volume_id)?);
        let node_id = validate::id("node_id", &req.node_id)?.to_owned();
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::invalid("volume_capability", "must be set"))?;
        let (_, single_node) = validate::capability("volume_capability", cap)?;
        let context = self
            .ops
            .scoped(&Secrets::from_map(req.secrets))?
            .publish_volume(PublishVolume {
                volume_id,
                node_id,
                multi_node: !single_node,
            })
            .await?;
        Ok(csi::ControllerPublishVolumeResponse {
            publish_context: context.into_iter().collect(),
        })
    }

    async fn unpublish_inner(
        &self,
        req: csi::ControllerUnpublishVolumeRequest,
    ) -> Result<csi::ControllerUnpublishVolumeResponse> {
        self.require(self.caps().attach, "ControllerUnpublishVolume")?;
        let volume_id = VolumeId::new(validate::id("volume_id", &req.volume_id)?);
        // CSI: an empty node_id means "from every node it is published to".
        self.ops
            .scoped(&Secrets::from_map(req.secrets))?
            .unpublish_volume(&volume_id, &req.node_id)
            .await?;
        Ok(csi::ControllerUnpublishVolumeResponse {})
    }

    fn require(&self, offered: bool, rpc: &'static str) -> Result<()> {
        if offered {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "{rpc} is not supported by the {} backend",
                self.ops.backend().kind()
            )))
        }
    }

    /// Whether a node-local volume can satisfy the topology requirement.
    fn topology_admits(&self, requirement: Option<&csi::TopologyRequirement>) -> bool {
        let Some(requirement) = requirement else {
            return true;
        };
        if !self.caps().node_local || requirement.requisite.is_empty() {
            return true;
        }
        requirement.requisite.iter().any(|t| {
            t.segments
                .get(TOPOLOGY_KEY)
                .is_some_and(|node| node == &self.node_id)
        })
    }

    async fn create_volume_inner(
        &self,
        req: csi::CreateVolumeRequest,
    ) -> Result<csi::CreateVolumeResponse> {
        let name = validate::name("name", &req.name)?;
        let caps = validate::capabilities("volume_capabilities", &req.volume_capabilities)?;
        if let Some((_, _)) = caps.iter().find(|(_, single)| !single) {
            return Err(Error::invalid(
                "volume_capabilities",
                "multi-node access modes are not supported: volumes attach to one node",
            ));
        }
        let size = validate::capacity(req.capacity_range.as_ref())?;
        let source = convert::volume_source(req.volume_content_source.as_ref())?;
        let caps_offered = self.caps();
        match &source {
            Some(crate::backend::VolumeSource::Snapshot(_)) if !caps_offered.restore_snapshot => {
                return Err(Error::invalid(
                    "volume_content_source.snapshot",
                    "this backend cannot restore snapshots",
                ));
            }
            Some(crate::backend::VolumeSource::Volume(_)) if !caps_offered.clone_volume => {
                return Err(Error::invalid(
                    "volume_content_source.volume",
                    "this backend cannot clone volumes",
                ));
            }
            _ => {}
        }
        if !self.topology_admits(req.accessibility_requirements.as_ref()) {
            return Err(Error::ResourceExhausted(format!(
                "accessibility_requirements: volumes of this backend live on node {:?}, which \
                 is not among the requisite topologies",
                self.node_id
            )));
        }
        let min_size = caps
            .iter()
            .map(|(access, _)| match access {
                Access::Mount { fs_type, .. } if fs_type == "xfs" => XFS_MIN_BYTES,
                Access::Mount { .. } => EXT4_MIN_BYTES,
                Access::Block => 0,
            })
            .max()
            .unwrap_or(0);
        let parameters: BTreeMap<String, String> = req.parameters.into_iter().collect();
        let zone = self.requested_zone(req.accessibility_requirements.as_ref());
        let volume = self
            .ops
            .scoped(&Secrets::from_map(req.secrets))?
            .create_volume_in(name, size, source, parameters, min_size, zone)
            .await?;
        Ok(csi::CreateVolumeResponse {
            volume: Some(convert::volume(&volume, self.topology_of(&volume).as_ref())),
        })
    }

    async fn validate_inner(
        &self,
        req: csi::ValidateVolumeCapabilitiesRequest,
    ) -> Result<csi::ValidateVolumeCapabilitiesResponse> {
        let id = VolumeId::new(validate::id("volume_id", &req.volume_id)?);
        let caps = validate::capabilities("volume_capabilities", &req.volume_capabilities)?;
        self.ops.get_volume(&id).await?;
        if caps.iter().any(|(_, single)| !single) {
            return Ok(csi::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: "multi-node access modes are not supported".to_owned(),
            });
        }
        Ok(csi::ValidateVolumeCapabilitiesResponse {
            confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: req.mutable_parameters,
            }),
            message: String::new(),
        })
    }

    async fn get_capacity_inner(
        &self,
        req: csi::GetCapacityRequest,
    ) -> Result<csi::GetCapacityResponse> {
        self.require(self.caps().get_capacity, "GetCapacity")?;
        for cap in &req.volume_capabilities {
            validate::capability("volume_capabilities", cap)?;
        }
        let here = req.accessible_topology.as_ref().is_none_or(|t| {
            !self.caps().node_local
                || t.segments
                    .get(TOPOLOGY_KEY)
                    .is_none_or(|node| node == &self.node_id)
        });
        let available = if here {
            self.ops.backend().available_capacity().await?.unwrap_or(0)
        } else {
            0
        };
        Ok(csi::GetCapacityResponse {
            available_capacity: convert::bytes(available),
            maximum_volume_size: None,
            minimum_volume_size: None,
        })
    }

    async fn create_snapshot_inner(
        &self,
        req: csi::CreateSnapshotRequest,
    ) -> Result<csi::CreateSnapshotResponse> {
        self.require(self.caps().create_delete_snapshot, "CreateSnapshot")?;
        let name = validate::name("name", &req.name)?;
        let source = validate::id("source_volume_id", &req.source_volume_id)?;
        let snapshot = self
            .ops
            .scoped(&Secrets::from_map(req.secrets))?
            .create_snapshot(CreateSnapshot {
                name: name.to_owned(),
                source_volume_id: VolumeId::new(source),
                parameters: req.parameters.into_iter().collect(),
            })
            .await?;
        Ok(csi::CreateSnapshotResponse {
            snapshot: Some(convert::snapshot(&snapshot)),
        })
    }

    async fn list_snapshots_inner(
        &self,
        req: csi::ListSnapshotsRequest,
    ) -> Result<(csi::ListSnapshotsResponse, BTreeMap<String, String>)> {
        self.require(self.caps().create_delete_snapshot, "ListSnapshots")?;
        let snapshot_id = (!req.snapshot_id.is_empty())
            .then(|| validate::id("snapshot_id", &req.snapshot_id).map(SnapshotId::new))
            .transpose()?;
        let filter = SnapshotFilter {
            source_volume_id: (!req.source_volume_id.is_empty())
                .then(|| validate::id("source_volume_id", &req.source_volume_id).map(VolumeId::new))
                .transpose()?,
        };
        let (items, next_token) = self
            .ops
            .scoped(&Secrets::from_map(req.secrets))?
            .list_snapshots(
                snapshot_id.as_ref(),
                &filter,
                req.max_entries,
                &req.starting_token,
            )
            .await?;
        let duplicates = crate::backend::names::page_duplicates(&items);
        let response = csi::ListSnapshotsResponse {
            entries: items
                .iter()
                .map(|s| csi::list_snapshots_response::Entry {
                    snapshot: Some(convert::snapshot(s)),
                })
                .collect(),
            next_token,
        };
        Ok((response, duplicates))
    }

    async fn list_volumes_inner(
        &self,
        req: csi::ListVolumesRequest,
    ) -> Result<csi::ListVolumesResponse> {
        self.require(self.caps().create_delete_volume, "ListVolumes")?;
        let (items, next_token) = self
            .ops
            .list_volumes(req.max_entries, &req.starting_token)
            .await?;
        Ok(csi::ListVolumesResponse {
            entries: items
                .iter()
                .map(|v| csi::list_volumes_response::Entry {
                    volume: Some(convert::volume(v, self.topology_of(v).as_ref())),
                    status: None,
                })
                .collect(),
            next_token,
        })
    }

    async fn expand_inner(
        &self,
        req: csi::ControllerExpandVolumeRequest,
    ) -> Result<csi::ControllerExpandVolumeResponse> {
        self.require(self.caps().expand_volume, "ControllerExpandVolume")?;
        let id = VolumeId::new(validate::id("volume_id", &req.volume_id)?);
        let range = validate::capacity(req.capacity_range.as_ref())?;
        if range.required == 0 && range.limit == 0 {
            return Err(Error::invalid("capacity_range", "must be set"));
        }
        if let Some(cap) = &req.volume_capability {
            validate::capability("volume_capability", cap)?;
        }
        let size = self
            .ops
            .scoped(&Secrets::from_map(req.secrets))?
            .expand_volume(&id, range)
            .await?;
        Ok(csi::ControllerExpandVolumeResponse {
            capacity_bytes: convert::bytes(size),
            // Node-local images back a loop device whose size and file system the node must
            // refresh (block volumes too: the loop device caches its size); an attached cloud
            // disk's file system must grow on the node as well.
            node_expansion_required: self.caps().node_local || self.caps().attach,
        })
    }
}

fn rpc_cap(kind: ccap::rpc::Type) -> csi::ControllerServiceCapability {
    csi::ControllerServiceCapability {
        r#type: Some(ccap::Type::Rpc(ccap::Rpc {
            r#type: kind as i32,
        })),
    }
}

/// The controller RPC capabilities a backend with `caps` supports.
pub fn controller_capabilities(caps: &Capabilities) -> Vec<ccap::rpc::Type> {
    use ccap::rpc::Type;
    let mut out = Vec::new();
    if caps.create_delete_volume {
        out.extend([Type::CreateDeleteVolume, Type::ListVolumes, Type::GetVolume]);
    }
    if caps.create_delete_snapshot {
        out.extend([
            Type::CreateDeleteSnapshot,
            Type::ListSnapshots,
            Type::GetSnapshot,
        ]);
    }
    if caps.clone_volume {
        out.push(Type::CloneVolume);
    }
    if caps.expand_volume {
        out.push(Type::ExpandVolume);
    }
    if caps.get_capacity {
        out.push(Type::GetCapacity);
    }
    if caps.attach {
        out.push(Type::PublishUnpublishVolume);
    }
    out
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<csi::CreateVolumeRequest>,
    ) -> std::result::Result<Response<csi::CreateVolumeResponse>, Status> {
        call(
            "CreateVolume",
            self.ops.backend().kind(),
            self.create_volume_inner(request.into_inner()),
        )
        .await
    }

    async fn delete_volume(
        &self,
        request: Request<csi::DeleteVolumeRequest>,
    ) -> std::result::Result<Response<csi::DeleteVolumeResponse>, Status> {
        let result = async {
            let req = request.into_inner();
            let id = VolumeId::new(validate::id("volume_id", &req.volume_id)?);
            self.ops
                .scoped(&Secrets::from_map(req.secrets))?
                .delete_volume(&id)
                .await?;
            Ok(csi::DeleteVolumeResponse {})
        };
        call("DeleteVolume", self.ops.backend().kind(), result).await
    }

    async fn controller_publish_volume(
        &self,
        request: Request<csi::ControllerPublishVolumeRequest>,
    ) -> std::result::Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        call(
            "ControllerPublishVolume",
            self.ops.backend().kind(),
            self.publish_inner(request.into_inner()),
        )
        .await
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> std::result::Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        call(
            "ControllerUnpublishVolume",
            self.ops.backend().kind(),
            self.unpublish_inner(request.into_inner()),
        )
        .await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> std::result::Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        call(
            "ValidateVolumeCapabilities",
            self.ops.backend().kind(),
            self.validate_inner(request.into_inner()),
        )
        .await
    }

    async fn list_volumes(
        &self,
        request: Request<csi::ListVolumesRequest>,
    ) -> std::result::Result<Response<csi::ListVolumesResponse>, Status> {
        call(
            "ListVolumes",
            self.ops.backend().kind(),
            self.list_volumes_inner(request.into_inner()),
        )
        .await
    }

    async fn get_capacity(
        &self,
        request: Request<csi::GetCapacityRequest>,
    ) -> std::result::Result<Response<csi::GetCapacityResponse>, Status> {
        call(
            "GetCapacity",
            self.ops.backend().kind(),
            self.get_capacity_inner(request.into_inner()),
        )
        .await
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = controller_capabilities(&self.caps())
            .into_iter()
            .map(rpc_cap)
            .collect();
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<csi::CreateSnapshotRequest>,
    ) -> std::result::Result<Response<csi::CreateSnapshotResponse>, Status> {
        call(
            "CreateSnapshot",
            self.ops.backend().kind(),
            self.create_snapshot_inner(request.into_inner()),
        )
        .await
    }

    async fn delete_snapshot(
        &self,
        request: Request<csi::DeleteSnapshotRequest>,
    ) -> std::result::Result<Response<csi::DeleteSnapshotResponse>, Status> {
        let result = async {
            self.require(self.caps().create_delete_snapshot, "DeleteSnapshot")?;
            let req = request.into_inner();
            let id = SnapshotId::new(validate::id("snapshot_id", &req.snapshot_id)?);
            self.ops
                .scoped(&Secrets::from_map(req.secrets))?
                .delete_snapshot(&id)
                .await?;
            Ok(csi::DeleteSnapshotResponse {})
        };
        call("DeleteSnapshot", self.ops.backend().kind(), result).await
    }

    async fn list_snapshots(
        &self,
        request: Request<csi::ListSnapshotsRequest>,
    ) -> std::result::Result<Response<csi::ListSnapshotsResponse>, Status> {
        let (answer, duplicates) = call(
            "ListSnapshots",
            self.ops.backend().kind(),
            self.list_snapshots_inner(request.into_inner()),
        )
        .await?
        .into_inner();
        let mut answer = Response::new(answer);
        if !duplicates.is_empty()
            && let Ok(json) = serde_json::to_vec(&duplicates)
        {
            answer.metadata_mut().insert_bin(
                DUPLICATE_NAMES_KEY,
                tonic::metadata::MetadataValue::from_bytes(&json),
            );
        }
        Ok(answer)
    }

    async fn get_snapshot(
        &self,
        request: Request<csi::GetSnapshotRequest>,
    ) -> std::result::Result<Response<csi::GetSnapshotResponse>, Status> {
        let result = async {
            self.require(self.caps().create_delete_snapshot, "GetSnapshot")?;
            let req = request.into_inner();
            let id = SnapshotId::new(validate::id("snapshot_id", &req.snapshot_id)?);
            let snapshot = self
                .ops
                .scoped(&Secrets::from_map(req.secrets))?
                .get_snapshot(&id)
                .await?;
            Ok(csi::GetSnapshotResponse {
                snapshot: Some(convert::snapshot(&snapshot)),
            })
        };
        call("GetSnapshot", self.ops.backend().kind(), result).await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<csi::ControllerExpandVolumeRequest>,
    ) -> std::result::Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        call(
            "ControllerExpandVolume",
            self.ops.backend().kind(),
            self.expand_inner(request.into_inner()),
        )
        .await
    }

    async fn controller_get_volume(
        &self,
        request: Request<csi::ControllerGetVolumeRequest>,
    ) -> std::result::Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        let result = async {
            let req = request.into_inner();
            let id = VolumeId::new(validate::id("volume_id", &req.volume_id)?);
            let volume = self.ops.get_volume(&id).await?;
            Ok(csi::ControllerGetVolumeResponse {
                volume: Some(convert::volume(&volume, self.topology_of(&volume).as_ref())),
                status: Some(csi::controller_get_volume_response::VolumeStatus {
                    published_node_ids: Vec::new(),
                    volume_condition: None,
                }),
            })
        };
        call("ControllerGetVolume", self.ops.backend().kind(), result).await
    }

    async fn controller_modify_volume(
        &self,
        _request: Request<csi::ControllerModifyVolumeRequest>,
    ) -> std::result::Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        call("ControllerModifyVolume", self.ops.backend().kind(), async {
            not_offered("ControllerModifyVolume")
        })
        .await
    }
}
