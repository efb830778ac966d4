//! `ctl info`: plugin name, version, controller capabilities and readiness.

use super::connect::CtlError;
use crate::proto as csi;
use crate::proto::controller_client::ControllerClient;
use crate::proto::identity_client::IdentityClient;
use serde_json::json;
use std::io::Write;
use tonic::transport::Channel;

/// Runs `ctl info`.
pub(super) async fn run(
    channel: Channel,
    out: &mut impl Write,
    json_out: bool,
) -> Result<(), CtlError> {
    let mut controller = ControllerClient::new(channel.clone());
    let mut identity = IdentityClient::new(channel);
    let info = identity
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await?
        .into_inner();
    let ready = match identity.probe(csi::ProbeRequest {}).await {
        Ok(r) => r.into_inner().ready.unwrap_or(true).to_string(),
        Err(status) => format!("no ({})", status.message()),
    };
    let caps: Vec<String> = match controller
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
    {
        Ok(r) => r
            .into_inner()
            .capabilities
            .iter()
            .filter_map(|c| match &c.r#type {
                Some(csi::controller_service_capability::Type::Rpc(rpc)) => {
                    csi::controller_service_capability::rpc::Type::try_from(rpc.r#type)
                        .ok()
                        .map(|t| t.as_str_name().to_owned())
                }
                None => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    if json_out {
        let doc = json!({"name": info.name, "vendor_version": info.vendor_version,
            "ready": ready, "controller_capabilities": caps});
        writeln!(out, "{doc:#}")?;
    } else {
        writeln!(out, "name:         {}", info.name)?;
        writeln!(out, "version:      {}", info.vendor_version)?;
        writeln!(out, "ready:        {ready}")?;
        writeln!(out, "capabilities: {}", caps.join(", "))?;
    }
    Ok(())
}
