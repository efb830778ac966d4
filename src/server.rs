//! `snapcsi serve`: its flags (`ServeArgs`), and the backend and services they describe,
//! served over gRPC.

use crate::backend::Backend;
use crate::backend::local::{LocalBackend, LocalConfig};
use crate::backend::memory::MemoryBackend;
use crate::csi::controller::ControllerService;
use crate::csi::group::GroupService;
use crate::csi::identity::IdentityService;
use crate::csi::metadata::{BlockFormat, MetadataService};
use crate::csi::node::{CloudDisks, NodeService};
use crate::ops::Ops;
use crate::proto::controller_server::ControllerServer;
use crate::proto::group_controller_server::GroupControllerServer;
use crate::proto::identity_server::IdentityServer;
use crate::proto::node_server::NodeServer;
use crate::proto::snapshot_metadata_server::SnapshotMetadataServer;
use crate::values::{Endpoint, LogFormat, parse_endpoint, parse_size};
use clap::ValueEnum;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

/// Which CSI services this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Identity + Controller (the controller Deployment).
    Controller,
    /// Identity + Node (the node DaemonSet).
    Node,
    /// All three (one process on one machine, csi-sanity, kind).
    All,
}

/// Storage backends built into this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Sparse image files under --data-dir (the default; needs no cloud).
    Local,
    /// Nothing on disk, no node side: for tests and benchmarks only.
    Memory,
}

/// `snapcsi serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Where to listen: `unix:///path/to/csi.sock` or `tcp://127.0.0.1:10000`.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///tmp/snapcsi.sock", value_parser = parse_endpoint)]
    pub endpoint: Endpoint,

    /// Driver name reported by GetPluginInfo (the CSIDriver object's name).
    #[arg(long, default_value = "snapcsi.dev", value_parser = parse_driver_name)]
    pub driver_name: String,

    /// This node's id (default: the host name).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// Which services to serve.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    pub mode: Mode,

    /// Built-in backend when no --config is given. The cloud backends (cinder, scp,
    /// softlayer, deltacloud) need endpoints and credentials, so they come only through
    /// --config.
    #[arg(long, value_enum, default_value_t = BackendKind::Local)]
    pub backend: BackendKind,

    /// Config file (TOML) with named backend instances; see README "Configuration".
    #[arg(long, env = "SNAPCSI_CONFIG")]
    pub config: Option<PathBuf>,

    /// Data directory of the local backend.
    #[arg(long, default_value = "./snapcsi-data")]
    pub data_dir: PathBuf,

    /// Most bytes the local backend provisions to volumes in total, e.g. `100Gi` (default:
    /// the data directory's free space).
    #[arg(long, value_parser = parse_size)]
    pub max_capacity: Option<u64>,

    /// Size of a volume whose request gives none, e.g. `1Gi`.
    #[arg(long, default_value = "1Gi", value_parser = parse_size)]
    pub default_volume_size: u64,

    /// Seconds a cloud create whose outcome is unknown (the driver restarted or the call timed
    /// out) keeps a repeated call from creating a second object; the journal of such creates
    /// lives in `<data-dir>/intents`.
    #[arg(long, default_value_t = 60)]
    pub create_grace_seconds: u64,

    /// Shape of SnapshotMetadata answers (changed block tracking): 0 = VARIABLE_LENGTH, one
    /// tuple per extent or changed run; otherwise FIXED_LENGTH tuples of this many bytes (a
    /// multiple of 4096, e.g. `64Ki`), aligned to it.
    #[arg(long, default_value = "0", value_parser = parse_block_size)]
    pub snapshot_metadata_block_size: u64,

    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. `127.0.0.1:9090`.
    /// Off when not given.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Permissions of the unix socket (octal).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    pub socket_mode: u32,

    /// Where the node finds cloud disks by serial (udev's by-id links).
    #[arg(long, default_value = crate::node::disk::BY_ID_DIR)]
    pub disk_by_id_dir: PathBuf,

    /// Longest NodeStageVolume waits for an attached cloud disk to appear.
    #[arg(long, default_value_t = 30)]
    pub disk_wait_seconds: u64,

    /// The cloud's metadata service, asked for this node's server id and zone when
    /// `--node-id` is not a server id (cloud backends that attach disks).
    #[arg(long, default_value = crate::node::instance::METADATA_URL)]
    pub metadata_url: String,

    /// A mounted config drive to read the same from when the metadata service does not
    /// answer (default: the disk labelled `config-2`, mounted read-only for the read).
    #[arg(long)]
    pub config_drive: Option<PathBuf>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `snapcsi=debug` (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// CSI allows at most 63 characters, alphanumeric at both ends, with dashes, dots and
/// alphanumerics between; csi-sanity is stricter (a letter at both ends), and so are we.
pub fn parse_driver_name(value: &str) -> Result<String, String> {
    let ok_len = value.len() >= 2 && value.len() <= 63;
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphabetic());
    let inner = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok_len && inner && ends(value.chars().next()) && ends(value.chars().last()) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?}: a driver name has 2 to 63 characters, begins and ends with a letter, and \
             holds only letters, digits, '-' and '.'"
        ))
    }
}

/// A SnapshotMetadata block size: 0 (variable length) or a multiple of 4096 up to 1 GiB.
fn parse_block_size(value: &str) -> Result<u64, String> {
    let size = parse_size(value)?;
    if size != 0 && (!size.is_multiple_of(4096) || size > 1 << 30) {
        return Err(format!(
            "{value:?}: a block size is 0 (variable length) or a multiple of 4096 up to 1Gi"
        ));
    }
    Ok(size)
}

fn parse_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{value:?}: expected an octal mode such as 660"))
}

/// A failure to start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The backend could not be opened.
    #[error("backend: {0}")]
    Backend(#[from] crate::backend::BackendError),
    /// The endpoint could not be bound.
    #[error("endpoint {endpoint}: {message}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The data directory cannot hold the journal of creates (see `ops::intents`).
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The directory.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The config file is wrong.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The node serves cloud disks but cannot tell which cloud server it is.
    #[error("node identity: {0}")]
    NodeIdentity(String),
}

/// The cloud instances of the config file that attach disks to nodes, built (they hold no
/// store: only an HTTP client) so that a node-only process can ask its cloud for its zone.
fn attaching_instances(path: &Path) -> Result<Vec<Arc<dyn Backend>>, ServeError> {
    use crate::backend::registry::{Section, build_instance, parse_section};
    let file = path.display().to_string();
    let config = crate::config::FileConfig::load(path)?;
    let mut out = Vec::new();
    for (name, table) in &config.backends {
        if let Section::Cinder(c) = parse_section(&file, name, table)?
            && c.attaches()
        {
            out.push(build_instance(&file, &config, name, table)?);
        }
    }
    Ok(out)
}

/// This node as a cloud server: its id (reported by NodeGetInfo, attached to by the
/// controller) and zone. `--node-id` when it is a server id, with the zone from the cloud;
/// else the metadata service or the config drive (see `node::instance`).
async fn cloud_node(
    args: &ServeArgs,
    clouds: &[Arc<dyn Backend>],
) -> Result<(String, CloudDisks), ServeError> {
    use crate::node::instance;
    let (server_id, mut zone) = match &args.node_id {
        Some(id) if instance::is_server_id(id) => (id.clone(), None),
        given => {
            let found = instance::discover(&args.metadata_url, args.config_drive.as_deref())
                .await
                .map_err(|e| {
                    ServeError::NodeIdentity(format!(
                        "{} is not a Nova server id (a UUID), and {e}; pass the server id                          with --node-id",
                        given
                            .as_deref()
                            .map_or("no --node-id was given".to_owned(), |g| format!(
                                "--node-id {g:?}"
                            ))
                    ))
                })?;
            (found.server_id, found.zone)
        }
    };
    if zone.is_none() {
        for cloud in clouds {
            match cloud.node_zone(&server_id).await {
                Ok(Some(z)) => {
                    zone = Some(z);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(server = %server_id, error = %e, "the cloud did not tell this node's zone")
                }
            }
        }
    }
    if zone.is_none() {
        tracing::warn!(server = %server_id, "this node's availability zone is unknown; NodeGetInfo reports no zone");
    }
    Ok((
        server_id,
        CloudDisks {
            by_id_dir: args.disk_by_id_dir.clone(),
            wait: std::time::Duration::from_secs(args.disk_wait_seconds),
            zone,
        },
    ))
}

/// This host's name, the default node id.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Opens the configured backend: the config file's instances when `--config` is given,
/// otherwise the one `--backend`. Answers the data directory of node-local images too.
pub fn open_backend(
    args: &ServeArgs,
) -> Result<(Arc<dyn Backend>, Option<std::path::PathBuf>), ServeError> {
    if let Some(path) = &args.config {
        let config = crate::config::FileConfig::load(path)?;
        let registry = crate::backend::registry::build(&path.display().to_string(), &config)?;
        return Ok((Arc::new(registry), local_data_dir(&config)));
    }
    Ok(match args.backend {
        BackendKind::Local => (
            Arc::new(LocalBackend::open(LocalConfig {
                data_dir: args.data_dir.clone(),
                max_capacity: args.max_capacity,
            })?),
            Some(args.data_dir.clone()),
        ),
        BackendKind::Memory => (Arc::new(MemoryBackend::new(args.max_capacity)), None),
    })
}

/// The data directory of the config's local instance (the default one first), which the node
/// service serves images from.
fn local_data_dir(config: &crate::config::FileConfig) -> Option<std::path::PathBuf> {
    let is_local = |t: &toml::Table| t.get("type").and_then(|v| v.as_str()) == Some("local");
    let default = config
        .default_backend
        .as_ref()
        .and_then(|d| config.backends.get(d))
        .filter(|t| is_local(t));
    default
        .or_else(|| config.backends.values().find(|t| is_local(t)))
        .and_then(|t| t.get("data_dir")?.as_str().map(std::path::PathBuf::from))
}

/// Serves until `shutdown` completes.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut node_id = args.node_id.clone().unwrap_or_else(hostname);
    let serves_controller = args.mode != Mode::Node;
    let serves_node = args.mode != Mode::Controller;
    // The node plugin needs no metadata store, so a node-only process never opens one: the
    // controller process may hold it on the same data directory.
    let (backend, layout) = if serves_controller {
        let (backend, data_dir) = open_backend(&args)?;
        (
            Some(backend),
            data_dir.map(crate::backend::local::Layout::new),
        )
    } else {
        let data_dir = match &args.config {
            Some(path) => local_data_dir(&crate::config::FileConfig::load(path)?),
            None => (args.backend == BackendKind::Local).then(|| args.data_dir.clone()),
        };
        (None, data_dir.map(crate::backend::local::Layout::new))
    };
    let ops = match &backend {
        None => None,
        Some(b) => {
            let grace = std::time::Duration::from_secs(args.create_grace_seconds);
            let journal = args.data_dir.join("intents");
            let intents = crate::ops::intents::Intents::open(&journal, grace).map_err(|e| {
                ServeError::DataDir {
                    path: journal.display().to_string(),
                    message: e.to_string(),
                }
            })?;
            Some(Ops::new(Arc::clone(b), args.default_volume_size).with_intents(intents))
        }
    };

    // A node that serves cloud disks reports its cloud server id and zone.
    let mut cloud = None;
    if serves_node {
        let clouds = match (&backend, &args.config) {
            (Some(b), _) if b.capabilities().attach => vec![Arc::clone(b)],
            (None, Some(path)) => attaching_instances(path)?,
            _ => Vec::new(),
        };
        if !clouds.is_empty() {
            let (server_id, disks) = cloud_node(&args, &clouds).await?;
            tracing::info!(server = %server_id, zone = ?disks.zone, "this node is a cloud server");
            node_id = server_id;
            cloud = Some(disks);
        }
    }

    if let Some(addr) = args.metrics_addr {
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Endpoint {
                    endpoint: format!("metrics {addr}"),
                    message: e.to_string(),
                })?;
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let request_ids = Arc::new(AtomicU64::new(0));
    let mut router = tonic::transport::Server::builder()
        .trace_fn(move |request| {
            let id = request_ids.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::info_span!("rpc", rpc = %request.uri().path(), request_id = id)
        })
        .add_service(reflection)
        .add_service(IdentityServer::new(
            IdentityService::new(
                args.driver_name.clone(),
                backend.clone(),
                layout.clone().filter(|_| serves_node),
            )
            .with_node_zone(cloud.as_ref().is_some_and(|c| c.zone.is_some())),
        ));
    if let Some(ops) = ops {
        // Registered only when the backend can do it: Identity advertises exactly this.
        if ops.backend().capabilities().group_snapshot {
            router = router.add_service(GroupControllerServer::new(GroupService::new(ops.clone())));
        }
        if ops.backend().capabilities().snapshot_metadata {
            router = router.add_service(SnapshotMetadataServer::new(MetadataService::new(
                ops.clone(),
                BlockFormat::from_block_size(args.snapshot_metadata_block_size),
            )));
        }
        router = router.add_service(ControllerServer::new(ControllerService::new(
            ops,
            node_id.clone(),
        )));
    }
    if serves_node {
        router = router.add_service(NodeServer::new(
            NodeService::new(node_id.clone(), layout).with_cloud_disks(cloud),
        ));
    }

    tracing::info!(
        endpoint = %args.endpoint,
        driver = %args.driver_name,
        backend = ?args.backend,
        mode = ?args.mode,
        node_id = %node_id,
        version = env!("CARGO_PKG_VERSION"),
        "serving CSI"
    );
    match &args.endpoint {
        Endpoint::Unix(path) => {
            let listener =
                bind_unix(path, args.socket_mode).map_err(|message| ServeError::Endpoint {
                    endpoint: args.endpoint.to_string(),
                    message,
                })?;
            // Any client's `:authority` is accepted on the socket (see `authority`).
            let incoming = UnixListenerStream::new(listener)
                .map(|accepted| accepted.map(crate::authority::AnyAuthority::new));
            let result = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            let _ = std::fs::remove_file(path);
            result?;
        }
        Endpoint::Tcp(addr) => {
            tracing::warn!(%addr, "serving CSI over TCP: anyone who can reach this port can manage volumes");
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| ServeError::Endpoint {
                        endpoint: args.endpoint.to_string(),
                        message: e.to_string(),
                    })?;
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds a unix socket, replacing a stale socket file (one nobody listens on) but never a
/// live socket or a file that is not a socket.
fn bind_unix(path: &Path, mode: u32) -> Result<tokio::net::UnixListener, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err("another process is serving on this socket".to_owned());
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket: {e}"))?;
        }
        Ok(_) => {
            return Err("the path exists and is not a socket; refusing to replace it".to_owned());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set socket mode {mode:o}: {e}"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names() {
        assert!(parse_driver_name("snapcsi.dev").is_ok());
        assert!(parse_driver_name("1snap").is_err());
        assert!(parse_driver_name("snap.").is_err());
    }
}
