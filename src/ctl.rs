//! `snapcsi ctl`: talk to any CSI driver over its socket, by hand or from scripts.
//!
//! Human tables by default, `--output json` for scripts. Exit codes scripts can trust:
//! 0 success; 1 the driver could not be reached; 2 bad usage; otherwise 10 + the gRPC code of
//! the failed call (15 NOT_FOUND, 16 ALREADY_EXISTS, 13 INVALID_ARGUMENT, 20 ABORTED, ...).

use crate::proto as csi;
use crate::proto::controller_client::ControllerClient;
use crate::proto::identity_client::IdentityClient;
use crate::values::{Endpoint, parse_endpoint, parse_size};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;
use tonic::transport::{Channel, Uri};

/// `snapcsi ctl` flags. They are global: accepted before the subcommand and after it
/// (`ctl --output json snapshot list` and `ctl snapshot list --output json`).
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// The driver's endpoint: `unix:///path/csi.sock` or `tcp://ip:port`.
    #[arg(long, global = true, env = "CSI_ENDPOINT", default_value = "unix:///tmp/snapcsi.sock", value_parser = parse_endpoint)]
    pub endpoint: Endpoint,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Give up on a call after this many seconds.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// One JSON document.
    Json,
}

/// `ctl` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Plugin name, version, capabilities and readiness.
    Info,
    /// Volume operations.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Snapshot operations.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Create a volume from a snapshot.
    Restore {
        /// Snapshot id.
        snapshot_id: String,
        /// Name of the new volume.
        #[arg(long)]
        name: String,
        /// Size, e.g. `10Gi` (default: the snapshot's size).
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Parameters, `key=value`, repeatable.
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
}

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

fn parse_param(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?}: expected key=value"))
}

/// A failed `ctl` run: its message and exit code.
#[derive(Debug)]
pub struct CtlError {
    /// What to print.
    pub message: String,
    /// The exit code.
    pub code: u8,
}

impl From<tonic::Status> for CtlError {
    fn from(status: tonic::Status) -> Self {
        let code = status.code();
        Self {
            message: format!("{code:?}: {}", status.message()),
            code: 10 + code as u8,
        }
    }
}

async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Channel, CtlError> {
    let unreachable = |e: tonic::transport::Error| CtlError {
        message: format!("cannot reach the driver at {endpoint}: {e}"),
        code: 1,
    };
    match endpoint {
        Endpoint::Tcp(addr) => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(unreachable)?
            .timeout(timeout)
            .connect()
            .await
            .map_err(unreachable),
        Endpoint::Unix(path) => {
            let path = path.clone();
            tonic::transport::Endpoint::from_static("http://localhost")
                .timeout(timeout)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(unreachable)
        }
    }
}

fn timestamp(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| {
        let secs = u64::try_from(t.seconds).unwrap_or(0);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let crate::calendar::Date {
            year: y,
            month: m,
            day: d,
        } = crate::calendar::from_days(i64::try_from(days).unwrap_or(0));
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    })
    .unwrap_or_default()
}

fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn snapshot_json(s: &csi::Snapshot) -> Value {
    json!({
        "snapshot_id": s.snapshot_id,
        "source_volume_id": s.source_volume_id,
        "size_bytes": s.size_bytes,
        "creation_time": timestamp(s.creation_time.as_ref()),
        "ready_to_use": s.ready_to_use,
    })
}

fn volume_json(v: &csi::Volume) -> Value {
    let source = v
        .content_source
        .as_ref()
        .and_then(|s| s.r#type.as_ref())
        .map(|t| match t {
            csi::volume_content_source::Type::Snapshot(s) => json!({"snapshot_id": s.snapshot_id}),
            csi::volume_content_source::Type::Volume(v) => json!({"volume_id": v.volume_id}),
        });
    json!({"volume_id": v.volume_id, "capacity_bytes": v.capacity_bytes, "content_source": source})
}

/// Prints rows as aligned columns under a header.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn snapshot_rows(snapshots: &[csi::Snapshot]) -> Vec<Vec<String>> {
    snapshots
        .iter()
        .map(|s| {
            vec![
                s.snapshot_id.clone(),
                s.source_volume_id.clone(),
                human_size(s.size_bytes),
                if s.ready_to_use { "yes" } else { "no" }.to_owned(),
                timestamp(s.creation_time.as_ref()),
            ]
        })
        .collect()
}

const SNAPSHOT_HEADER: [&str; 5] = ["SNAPSHOT", "VOLUME", "SIZE", "READY", "CREATED"];
const VOLUME_HEADER: [&str; 3] = ["VOLUME", "SIZE", "SOURCE"];

fn volume_rows(volumes: &[csi::Volume]) -> Vec<Vec<String>> {
    volumes
        .iter()
        .map(|v| {
            let source = match v.content_source.as_ref().and_then(|s| s.r#type.as_ref()) {
                Some(csi::volume_content_source::Type::Snapshot(s)) => {
                    format!("snapshot {}", s.snapshot_id)
                }
                Some(csi::volume_content_source::Type::Volume(v)) => {
                    format!("volume {}", v.volume_id)
                }
                None => String::new(),
            };
            vec![v.volume_id.clone(), human_size(v.capacity_bytes), source]
        })
        .collect()
}

fn capability(mode: bool) -> csi::VolumeCapability {
    use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode: 1 }),
        access_type: Some(if mode {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
    }
}

/// Runs one `ctl` command, writing its answer to `out` and progress to stderr.
pub async fn run(args: CtlArgs, out: &mut impl Write) -> Result<(), CtlError> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let channel = connect(&args.endpoint, timeout).await?;
    let mut controller = ControllerClient::new(channel.clone());
    let json_out = args.output == Output::Json;
    let io = |e: std::io::Error| CtlError {
        message: format!("cannot write the answer: {e}"),
        code: 1,
    };
    match args.command {
        CtlCommand::Info => {
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
                writeln!(out, "{doc:#}").map_err(io)?;
            } else {
                writeln!(out, "name:         {}", info.name).map_err(io)?;
                writeln!(out, "version:      {}", info.vendor_version).map_err(io)?;
                writeln!(out, "ready:        {ready}").map_err(io)?;
                writeln!(out, "capabilities: {}", caps.join(", ")).map_err(io)?;
            }
        }
        CtlCommand::Volume(VolumeCommand::Create {
            name,
            size,
            block,
            fs_type,
            params,
        }) => {
            let mut cap = capability(block);
            if let Some(csi::volume_capability::AccessType::Mount(m)) = &mut cap.access_type {
                m.fs_type = fs_type;
            }
            let volume = controller
                .create_volume(csi::CreateVolumeRequest {
                    name,
                    capacity_range: size.map(|s| csi::CapacityRange {
                        required_bytes: i64::try_from(s).unwrap_or(i64::MAX),
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
            print_volumes(out, json_out, &[volume], false).map_err(io)?;
        }
        CtlCommand::Volume(VolumeCommand::Delete { volume_id }) => {
            controller
                .delete_volume(csi::DeleteVolumeRequest {
                    volume_id: volume_id.clone(),
                    ..Default::default()
                })
                .await?;
            done(out, json_out, "deleted", "volume_id", &volume_id).map_err(io)?;
        }
        CtlCommand::Volume(VolumeCommand::List) => {
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
            print_volumes(out, json_out, &volumes, true).map_err(io)?;
        }
        CtlCommand::Volume(VolumeCommand::Expand { volume_id, size }) => {
            let answer = controller
                .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                    volume_id: volume_id.clone(),
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: i64::try_from(size).unwrap_or(i64::MAX),
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            if json_out {
                let doc = json!({"volume_id": volume_id, "capacity_bytes": answer.capacity_bytes,
                    "node_expansion_required": answer.node_expansion_required});
                writeln!(out, "{doc:#}").map_err(io)?;
            } else {
                writeln!(
                    out,
                    "volume {volume_id} is now {}",
                    human_size(answer.capacity_bytes)
                )
                .map_err(io)?;
            }
        }
        CtlCommand::Snapshot(SnapshotCommand::Create {
            volume_id,
            name,
            wait,
            params,
        }) => {
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
            print_snapshots(out, json_out, &[snapshot], false).map_err(io)?;
        }
        CtlCommand::Snapshot(SnapshotCommand::Delete { snapshot_id }) => {
            controller
                .delete_snapshot(csi::DeleteSnapshotRequest {
                    snapshot_id: snapshot_id.clone(),
                    ..Default::default()
                })
                .await?;
            done(out, json_out, "deleted", "snapshot_id", &snapshot_id).map_err(io)?;
        }
        CtlCommand::Snapshot(SnapshotCommand::List { volume }) => {
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
                print_snapshots(out, json_out, &snapshots, true).map_err(io)?;
            } else {
                print_marked_snapshots(out, json_out, &snapshots, &marks).map_err(io)?;
            }
        }
        CtlCommand::Snapshot(SnapshotCommand::Get { snapshot_id }) => {
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
            print_snapshots(out, json_out, &[snapshot], false).map_err(io)?;
        }
        CtlCommand::Restore {
            snapshot_id,
            name,
            size,
            params,
        } => {
            // Without --size, the snapshot's own size: a driver may read a request with no
            // capacity as "its default size" and refuse a larger snapshot (csi-driver-host-path
            // does). A driver that cannot list snapshots gets no size, as before.
            // Without --size, ask for the snapshot's size: a request with no capacity is
            // refused by drivers that read it as 0 bytes (csi-driver-host-path does).
            let size = match size {
                Some(s) => Some(i64::try_from(s).unwrap_or(i64::MAX)),
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
            print_volumes(out, json_out, &[volume], false).map_err(io)?;
        }
    }
    Ok(())
}

fn done(
    out: &mut impl Write,
    json_out: bool,
    what: &str,
    key: &str,
    id: &str,
) -> std::io::Result<()> {
    if json_out {
        writeln!(out, "{:#}", json!({key: id, "result": what}))
    } else {
        writeln!(out, "{what} {id}")
    }
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

/// A snapshot that shares its CSI name: the name, and whether it is the one the driver
/// answers for that name (`None`: the others are not in this list).
struct Mark {
    name: String,
    answers: Option<bool>,
    chosen: Option<String>,
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

/// A snapshot list with the duplicates marked: a NOTE column, or in JSON `duplicate_name`
/// and `answers_for_name` on the marked ones.
fn print_marked_snapshots(
    out: &mut impl Write,
    json_out: bool,
    snapshots: &[csi::Snapshot],
    marks: &HashMap<String, Mark>,
) -> std::io::Result<()> {
    if json_out {
        let docs: Vec<Value> = snapshots
            .iter()
            .map(|s| {
                let mut doc = snapshot_json(s);
                if let (Some(mark), Some(fields)) = (marks.get(&s.snapshot_id), doc.as_object_mut())
                {
                    fields.insert("duplicate_name".into(), json!(mark.name));
                    fields.insert("answers_for_name".into(), json!(mark.answers));
                }
                doc
            })
            .collect();
        return writeln!(out, "{:#}", Value::Array(docs));
    }
    let mut header = SNAPSHOT_HEADER.to_vec();
    header.push("NOTE");
    let rows: Vec<Vec<String>> = snapshot_rows(snapshots)
        .into_iter()
        .zip(snapshots)
        .map(|(mut row, s)| {
            row.push(match marks.get(&s.snapshot_id) {
                None => String::new(),
                Some(Mark {
                    name,
                    answers: Some(true),
                    ..
                }) => format!("name {name:?} also on other snapshots: this one answers"),
                Some(Mark {
                    name,
                    chosen: Some(chosen),
                    ..
                }) => format!("name {name:?}: duplicate of {chosen}"),
                Some(Mark { name, .. }) => {
                    format!("name {name:?} is on another snapshot too (not listed)")
                }
            });
            row
        })
        .collect();
    table(out, &header, &rows)
}

/// Prints items as JSON (an array for a list, one object otherwise) or as a table.
fn print<T>(
    out: &mut impl Write,
    json_out: bool,
    items: &[T],
    list: bool,
    to_json: fn(&T) -> Value,
    header: &[&str],
    rows: fn(&[T]) -> Vec<Vec<String>>,
) -> std::io::Result<()> {
    if json_out {
        let mut docs = items.iter().map(to_json);
        let doc = if list {
            Value::Array(docs.collect())
        } else {
            docs.next().unwrap_or(Value::Null)
        };
        writeln!(out, "{doc:#}")
    } else {
        table(out, header, &rows(items))
    }
}

fn print_volumes(
    out: &mut impl Write,
    json_out: bool,
    volumes: &[csi::Volume],
    list: bool,
) -> std::io::Result<()> {
    print(
        out,
        json_out,
        volumes,
        list,
        volume_json,
        &VOLUME_HEADER,
        volume_rows,
    )
}

fn print_snapshots(
    out: &mut impl Write,
    json_out: bool,
    snapshots: &[csi::Snapshot],
    list: bool,
) -> std::io::Result<()> {
    print(
        out,
        json_out,
        snapshots,
        list,
        snapshot_json,
        &SNAPSHOT_HEADER,
        snapshot_rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        use crate::calendar::{Date, from_days};
        assert_eq!(from_days(0), Date::new(1970, 1, 1));
        assert_eq!(from_days(20_417), Date::new(2025, 11, 25));
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        let ts = prost_types::Timestamp {
            seconds: 1_764_028_800,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&ts)), "2025-11-25T00:00:00Z");
    }

    #[test]
    fn exit_codes_follow_grpc_codes() {
        let e = CtlError::from(tonic::Status::not_found("x"));
        assert_eq!(e.code, 15);
        assert!(e.message.starts_with("NotFound:"));
    }
}
