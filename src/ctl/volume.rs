//! `ctl volume`: create, delete, list (every page) and expand volumes.

use super::connect::CtlError;
use super::print::{done, human_size, print_volumes};
use super::request::{bytes, capability, parse_param};
use crate::proto as csi;
use crate::proto::controller_client::ControllerClient;
use crate::values::parse_size;
use clap::Subcommand;
use serde_json::json;
use std::io::Write;
use tonic::transport::Channel;

/// `ctl volume` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        /// CSI name (the idempotency key).
        name: String,
        /// Size, e.g. `1Gi`.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Block access instead of a mounted file system.
        #[arg(long)]
        block: bool,
        /// File system type of a mount volume.
        #[arg(long, default_value = "")]
        fs_type: String,
        /// Parameters, `key=value`, repeatable.
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Delete a volume.
    Delete {
        /// Volume id.
        volume_id: String,
    },
    /// List volumes (every page).
    List,
    /// Grow a volume.
    Expand {
        /// Volume id.
        volume_id: String,
        /// New size, e.g. `20Gi`.
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
}

/// Runs one `ctl volume` subcommand.
pub(super) async fn run(
    command: VolumeCommand,
    channel: Channel,
    out: &mut impl Write,
    json_out: bool,
) -> Result<(), CtlError> {
    let mut controller = ControllerClient::new(channel);
    match command {
        VolumeCommand::Create {
            name,
            size,
            block,
            fs_type,
            params,
        } => {
            let mut cap = capability(block);
            if let Some(csi::volume_capability::AccessType::Mount(m)) = &mut cap.access_type {
                m.fs_type = fs_type;
            }
            let volume = controller
                .create_volume(csi::CreateVolumeRequest {
                    name,
                    capacity_range: size.map(|s| csi::CapacityRange {
                        required_bytes: bytes(s),
                        limit_bytes: 0,
                    }),
                    volume_capabilities: vec![cap],
                    parameters: params.into_iter().collect(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .volume
                .unwrap_or_default();
            print_volumes(out, json_out, &[volume], false)?;
        }
        VolumeCommand::Delete { volume_id } => {
            controller
                .delete_volume(csi::DeleteVolumeRequest {
                    volume_id: volume_id.clone(),
                    ..Default::default()
                })
                .await?;
            done(out, json_out, "deleted", "volume_id", &volume_id)?;
        }
        VolumeCommand::List => {
            let mut volumes = Vec::new();
            let mut token = String::new();
            loop {
                let page = controller
                    .list_volumes(csi::ListVolumesRequest {
                        max_entries: 0,
                        starting_token: token,
                    })
                    .await?
                    .into_inner();
                volumes.extend(page.entries.into_iter().filter_map(|e| e.volume));
                if page.next_token.is_empty() {
                    break;
                }
                token = page.next_token;
            }
            print_volumes(out, json_out, &volumes, true)?;
        }
        VolumeCommand::Expand { volume_id, size } => {
            let answer = controller
                .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                    volume_id: volume_id.clone(),
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: bytes(size),
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            if json_out {
                let doc = json!({"volume_id": volume_id, "capacity_bytes": answer.capacity_bytes,
                    "node_expansion_required": answer.node_expansion_required});
                writeln!(out, "{doc:#}")?;
            } else {
                writeln!(
                    out,
                    "volume {volume_id} is now {}",
                    human_size(answer.capacity_bytes)
                )?;
            }
        }
    }
    Ok(())
}
