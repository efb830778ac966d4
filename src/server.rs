//! Builds the backend and services from the configuration and serves them over gRPC.

use crate::backend::Backend;
use crate::backend::local::{LocalBackend, LocalConfig};
use crate::backend::memory::MemoryBackend;
use crate::config::{BackendKind, Endpoint, Mode, ServeArgs};
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
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

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
