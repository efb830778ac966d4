//! `ctl snapshot`: create (optionally waiting until ready), delete, list (every page, names
//! shared by several snapshots marked) and get snapshots.

use super::connect::CtlError;
use super::print::{Mark, done, print_marked_snapshots, print_snapshots};
use super::request::parse_param;
use crate::proto as csi;
use crate::proto::controller_client::ControllerClient;
use clap::Subcommand;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;
use tonic::transport::Channel;

/// `ctl snapshot` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a volume.
    Create {
        /// Volume id.
        volume_id: String,
        /// CSI name (the idempotency key).
        #[arg(long)]
        name: String,
        /// Repeat the call until the snapshot is ready to use (as the snapshotter sidecar does).
        #[arg(long)]
        wait: bool,
        /// Parameters, `key=value`, repeatable.
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Delete a snapshot.
    Delete {
        /// Snapshot id.
        snapshot_id: String,
    },
    /// List snapshots (every page).
    List {
        /// Only snapshots of this volume.
        #[arg(long)]
        volume: Option<String>,
    },
    /// One snapshot.
    Get {
        /// Snapshot id.
        snapshot_id: String,
    },
}

/// Runs one `ctl snapshot` subcommand.
pub(super) async fn run(
    command: SnapshotCommand,
    channel: Channel,
    out: &mut impl Write,
    json_out: bool,
) -> Result<(), CtlError> {
    let mut controller = ControllerClient::new(channel);
    match command {
        SnapshotCommand::Create {
            volume_id,
            name,
            wait,
            params,
        } => {
            let request = csi::CreateSnapshotRequest {
                source_volume_id: volume_id,
                name,
                parameters: params.into_iter().collect(),
                ..Default::default()
            };
            let mut snapshot = controller
                .create_snapshot(request.clone())
                .await?
                .into_inner()
                .snapshot
                .unwrap_or_default();
            let started = std::time::Instant::now();
            while wait && !snapshot.ready_to_use {
                eprint!(
                    "\rwaiting for snapshot {} to be ready ({}s)",
                    snapshot.snapshot_id,
                    started.elapsed().as_secs()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                snapshot = controller
                    .create_snapshot(request.clone())
                    .await?
                    .into_inner()
                    .snapshot
                    .unwrap_or_default();
            }
            if wait && started.elapsed() >= Duration::from_secs(1) {
                eprintln!();
            }
            print_snapshots(out, json_out, &[snapshot], false)?;
        }
        SnapshotCommand::Delete { snapshot_id } => {
            controller
                .delete_snapshot(csi::DeleteSnapshotRequest {
                    snapshot_id: snapshot_id.clone(),
                    ..Default::default()
                })
                .await?;
            done(out, json_out, "deleted", "snapshot_id", &snapshot_id)?;
        }
        SnapshotCommand::List { volume } => {
            let mut snapshots = Vec::new();
            let mut names = BTreeMap::new();
            let mut token = String::new();
            loop {
                let answer = controller
                    .list_snapshots(csi::ListSnapshotsRequest {
                        starting_token: token,
                        source_volume_id: volume.clone().unwrap_or_default(),
                        ..Default::default()
                    })
                    .await?;
                names.extend(duplicate_names(answer.metadata()));
                let page = answer.into_inner();
                snapshots.extend(page.entries.into_iter().filter_map(|e| e.snapshot));
                if page.next_token.is_empty() {
                    break;
                }
                token = page.next_token;
            }
            let marks = duplicate_marks(&snapshots, &names);
            if marks.is_empty() {
                print_snapshots(out, json_out, &snapshots, true)?;
            } else {
                print_marked_snapshots(out, json_out, &snapshots, &marks)?;
            }
        }
        SnapshotCommand::Get { snapshot_id } => {
            // GetSnapshot is optional in CSI; ListSnapshots by id works on every driver.
            let page = controller
                .list_snapshots(csi::ListSnapshotsRequest {
                    snapshot_id: snapshot_id.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let Some(snapshot) = page.entries.into_iter().find_map(|e| e.snapshot) else {
                return Err(CtlError {
                    message: format!("NotFound: snapshot {snapshot_id} does not exist"),
                    code: 10 + tonic::Code::NotFound as u8,
                });
            };
            print_snapshots(out, json_out, &[snapshot], false)?;
        }
    }
    Ok(())
}

/// The snapshots a ListSnapshots answer says share their CSI name (id -> name; see
/// `csi::controller::DUPLICATE_NAMES_KEY`).
fn duplicate_names(metadata: &tonic::metadata::MetadataMap) -> BTreeMap<String, String> {
    metadata
        .get_bin(crate::csi::controller::DUPLICATE_NAMES_KEY)
        .and_then(|value| value.to_bytes().ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Marks the listed snapshots that share a CSI name, choosing per name as the driver does
/// (`backend::names::order`: the oldest, then the smallest id).
fn duplicate_marks(
    snapshots: &[csi::Snapshot],
    names: &BTreeMap<String, String>,
) -> HashMap<String, Mark> {
    let mut groups: BTreeMap<&str, Vec<&csi::Snapshot>> = BTreeMap::new();
    for s in snapshots {
        if let Some(name) = names.get(&s.snapshot_id) {
            groups.entry(name.as_str()).or_default().push(s);
        }
    }
    let created = |s: &csi::Snapshot| {
        s.creation_time.as_ref().map(|t| {
            std::time::UNIX_EPOCH
                + Duration::new(
                    u64::try_from(t.seconds).unwrap_or(0),
                    u32::try_from(t.nanos).unwrap_or(0),
                )
        })
    };
    let mut marks = HashMap::new();
    for (name, mut group) in groups {
        group.sort_by(|a, b| {
            crate::backend::names::order(
                (created(a), a.snapshot_id.as_str()),
                (created(b), b.snapshot_id.as_str()),
            )
        });
        let chosen = (group.len() > 1).then(|| group[0].snapshot_id.clone());
        for s in group {
            marks.insert(
                s.snapshot_id.clone(),
                Mark {
                    name: name.to_owned(),
                    answers: chosen.as_ref().map(|c| *c == s.snapshot_id),
                    chosen: chosen.clone(),
                },
            );
        }
    }
    marks
}
