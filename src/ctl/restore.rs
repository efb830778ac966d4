//! `ctl restore`: create a volume from a snapshot.

use super::connect::CtlError;
use super::print::print_volumes;
use super::request::{bytes, capability, parse_param};
use crate::proto as csi;
use crate::proto::controller_client::ControllerClient;
use crate::values::parse_size;
use clap::Args;
use std::io::Write;
use tonic::transport::Channel;

/// `ctl restore` flags.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Name of the new volume.
    #[arg(long)]
    pub name: String,
    /// Size, e.g. `10Gi` (default: the snapshot's size).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Parameters, `key=value`, repeatable.
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
}

/// Runs `ctl restore`, with progress on stderr.
pub(super) async fn run(
    args: RestoreArgs,
    channel: Channel,
    out: &mut impl Write,
    json_out: bool,
) -> Result<(), CtlError> {
    let RestoreArgs {
        snapshot_id,
        name,
        size,
        params,
    } = args;
    let mut controller = ControllerClient::new(channel);
    // Without --size, ask for the snapshot's own size: a driver may read a request with no
    // capacity as 0 bytes or as its default size and refuse a larger snapshot
    // (csi-driver-host-path does). A driver that cannot list snapshots gets no size.
    let size = match size {
        Some(s) => Some(bytes(s)),
        None => controller
            .list_snapshots(csi::ListSnapshotsRequest {
                snapshot_id: snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().entries.into_iter().find_map(|e| e.snapshot))
            .map(|s| s.size_bytes)
            .filter(|&bytes| bytes > 0),
    };
    eprintln!("restoring snapshot {snapshot_id} into volume {name:?} ...");
    let started = std::time::Instant::now();
    let volume = controller
        .create_volume(csi::CreateVolumeRequest {
            name,
            capacity_range: size.map(|required_bytes| csi::CapacityRange {
                required_bytes,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability(false)],
            parameters: params.into_iter().collect(),
            volume_content_source: Some(csi::VolumeContentSource {
                r#type: Some(csi::volume_content_source::Type::Snapshot(
                    csi::volume_content_source::SnapshotSource { snapshot_id },
                )),
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .volume
        .unwrap_or_default();
    eprintln!("restored in {:.1}s", started.elapsed().as_secs_f64());
    print_volumes(out, json_out, &[volume], false)?;
    Ok(())
}
