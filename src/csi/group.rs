//! The CSI GroupController service: write-order consistent snapshots of several volumes.
//!
//! Served (and GROUP_CONTROLLER_SERVICE advertised by Identity) only when the backend has
//! [`crate::backend::Capabilities::group_snapshot`], so no RPC here ever answers UNIMPLEMENTED
//! while advertised. Each RPC validates its request, runs through `ops` (idempotency by name,
//! in-flight guard, member-list checks) and converts the answer.

use super::{call, convert, validate};
use crate::backend::{CreateGroupSnapshot, GroupSnapshotId, SnapshotId, VolumeId};
use crate::error::Result;
use crate::ops::Ops;
use crate::proto::group_controller_server::GroupController;
use crate::proto::{self as csi, group_controller_service_capability as gcap};
use crate::secret::Secrets;
use tonic::{Request, Response, Status};

/// The GroupController service.
pub struct GroupService {
    ops: Ops,
}

impl GroupService {
    /// A group controller over `ops`, whose backend supports group snapshots.
    pub fn new(ops: Ops) -> Self {
        Self { ops }
    }

    fn kind(&self) -> &'static str {
        self.ops.backend().kind()
    }

    async fn create_inner(
        &self,
        req: csi::CreateVolumeGroupSnapshotRequest,
    ) -> Result<csi::CreateVolumeGroupSnapshotResponse> {
        let name = validate::name("name", &req.name)?;
        let sources = validate::distinct_ids("source_volume_ids", &req.source_volume_ids)?;
        let group = self
            .ops
            .scoped(&Secrets::from_map(req.secrets))?
            .create_group_snapshot(CreateGroupSnapshot {
                name: name.to_owned(),
                source_volume_ids: sources.into_iter().map(VolumeId::new).collect(),
                parameters: req.parameters.into_iter().collect(),
            })
            .await?;
        Ok(csi::CreateVolumeGroupSnapshotResponse {
            group_snapshot: Some(convert::group_snapshot(&group)),
        })
    }

    async fn delete_inner(
        &self,
        req: csi::DeleteVolumeGroupSnapshotRequest,
    ) -> Result<csi::DeleteVolumeGroupSnapshotResponse> {
        let id = GroupSnapshotId::new(validate::id("group_snapshot_id", &req.group_snapshot_id)?);
        let members = member_ids(&req.snapshot_ids)?;
        self.ops
            .scoped(&Secrets::from_map(req.secrets))?
            .delete_group_snapshot(&id, &members)
            .await?;
        Ok(csi::DeleteVolumeGroupSnapshotResponse {})
    }

    async fn get_inner(
        &self,
        req: csi::GetVolumeGroupSnapshotRequest,
    ) -> Result<csi::GetVolumeGroupSnapshotResponse> {
        let id = GroupSnapshotId::new(validate::id("group_snapshot_id", &req.group_snapshot_id)?);
        let members = member_ids(&req.snapshot_ids)?;
        let group = self
            .ops
            .scoped(&Secrets::from_map(req.secrets))?
            .get_group_snapshot(&id, &members)
            .await?;
        Ok(csi::GetVolumeGroupSnapshotResponse {
            group_snapshot: Some(convert::group_snapshot(&group)),
        })
    }
}

fn member_ids(values: &[String]) -> Result<Vec<SnapshotId>> {
    Ok(validate::ids("snapshot_ids", values)?
        .into_iter()
        .map(SnapshotId::new)
        .collect())
}

#[tonic::async_trait]
impl GroupController for GroupService {
    async fn group_controller_get_capabilities(
        &self,
        _request: Request<csi::GroupControllerGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<csi::GroupControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(csi::GroupControllerGetCapabilitiesResponse {
            capabilities: vec![csi::GroupControllerServiceCapability {
                r#type: Some(gcap::Type::Rpc(gcap::Rpc {
                    r#type: gcap::rpc::Type::CreateDeleteGetVolumeGroupSnapshot as i32,
                })),
            }],
        }))
    }

    async fn create_volume_group_snapshot(
        &self,
        request: Request<csi::CreateVolumeGroupSnapshotRequest>,
    ) -> std::result::Result<Response<csi::CreateVolumeGroupSnapshotResponse>, Status> {
        call(
            "CreateVolumeGroupSnapshot",
            self.kind(),
            self.create_inner(request.into_inner()),
        )
        .await
    }

    async fn delete_volume_group_snapshot(
        &self,
        request: Request<csi::DeleteVolumeGroupSnapshotRequest>,
    ) -> std::result::Result<Response<csi::DeleteVolumeGroupSnapshotResponse>, Status> {
        call(
            "DeleteVolumeGroupSnapshot",
            self.kind(),
            self.delete_inner(request.into_inner()),
        )
        .await
    }

    async fn get_volume_group_snapshot(
        &self,
        request: Request<csi::GetVolumeGroupSnapshotRequest>,
    ) -> std::result::Result<Response<csi::GetVolumeGroupSnapshotResponse>, Status> {
        call(
            "GetVolumeGroupSnapshot",
            self.kind(),
            self.get_inner(request.into_inner()),
        )
        .await
    }
}
