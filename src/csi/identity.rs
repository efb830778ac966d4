//! The CSI Identity service.

use crate::backend::Backend;
use crate::backend::local::Layout;
use crate::error::Error;
use crate::proto::identity_server::Identity;
use crate::proto::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse, plugin_capability,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// How long a Probe answer is reused. The liveness probe and every sidecar call Probe every
/// few seconds, and a backend's health check is a cloud call (an authenticated one, so that a
/// refused password shows): one check answers all the probes of this window.
const PROBE_REUSE: Duration = Duration::from_secs(5);

/// Identity: who we are, what we serve, whether we are ready.
pub struct IdentityService {
    driver_name: String,
    /// The backend, when this process serves the Controller service.
    backend: Option<Arc<dyn Backend>>,
    /// The data directory, when this process serves node-local volumes.
    node_layout: Option<Layout>,
    /// The last check's answer and when it was made. Probes wait on the lock while a check
    /// runs, so probes arriving together make one check.
    last_check: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// Whether this process's node reports an availability zone (cloud disks).
    node_zone: bool,
}

impl IdentityService {
    /// Identity of a process serving the controller (`backend`) and/or node-local volumes.
    pub fn new(
        driver_name: String,
        backend: Option<Arc<dyn Backend>>,
        node_layout: Option<Layout>,
    ) -> Self {
        Self {
            driver_name,
            backend,
            node_layout,
            last_check: tokio::sync::Mutex::default(),
            node_zone: false,
        }
    }

    /// This identity for a node that reports its availability zone in NodeGetInfo.
    pub fn with_node_zone(mut self, node_zone: bool) -> Self {
        self.node_zone = node_zone;
        self
    }

    /// [`Self::check`], or its answer of less than [`PROBE_REUSE`] ago.
    async fn recent_check(&self) -> Result<(), String> {
        let mut last = self.last_check.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < PROBE_REUSE
        {
            return answer.clone();
        }
        let answer = self.check().await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn check(&self) -> Result<(), String> {
        if let Some(backend) = &self.backend {
            backend
                .health()
                .await
                .map_err(|e| format!("backend {} is not ready: {e}", backend.kind()))?;
        }
        if let Some(layout) = &self.node_layout {
            // One stat of a local directory, answered from the dentry cache: inline, since a
            // trip to the blocking pool would cost Probe more than the stat.
            std::fs::metadata(layout.root())
                .map_err(|e| format!("data directory {}: {e}", layout.root().display()))?;
        }
        Ok(())
    }
}

fn service(kind: plugin_capability::service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: self
                .backend
                .iter()
                .map(|b| ("backend".to_owned(), b.kind().to_owned()))
                .collect::<HashMap<_, _>>(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::service::Type;
        let backend = self.backend.as_ref().map(|b| b.capabilities());
        let mut capabilities = Vec::new();
        if self.backend.is_some() {
            capabilities.push(service(Type::ControllerService));
        }
        if backend.is_some_and(|c| c.group_snapshot) {
            // server.rs registers the GroupController service under the same condition.
            capabilities.push(service(Type::GroupControllerService));
        }
        if backend.is_some_and(|c| c.snapshot_metadata) {
            // server.rs registers the SnapshotMetadata service under the same condition.
            capabilities.push(service(Type::SnapshotMetadataService));
        }
        let node_local = self.node_layout.is_some() || backend.is_some_and(|c| c.node_local);
        if node_local || self.node_zone || backend.is_some_and(|c| c.zones) {
            capabilities.push(service(Type::VolumeAccessibilityConstraints));
        }
        if self.node_layout.is_some() || backend.is_some_and(|c| c.expand_volume) {
            // Loop-backed ext4 and xfs grow while mounted.
            capabilities.push(PluginCapability {
                r#type: Some(plugin_capability::Type::VolumeExpansion(
                    plugin_capability::VolumeExpansion {
                        r#type: plugin_capability::volume_expansion::Type::Online as i32,
                    },
                )),
            });
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        match self.recent_check().await {
            Ok(()) => Ok(Response::new(ProbeResponse { ready: Some(true) })),
            Err(reason) => {
                tracing::warn!(%reason, "probe: not ready");
                Err(Error::FailedPrecondition(reason).into())
            }
        }
    }
}
