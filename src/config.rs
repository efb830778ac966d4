//! Command line -> one typed configuration.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// snapcsi: a CSI driver for volume snapshots.
#[derive(Debug, Parser)]
#[command(name = "snapcsi", version, about, long_about = None)]
pub struct Cli {
    /// What to run (default: `serve`).
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the CSI gRPC services (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Talk to a CSI driver over its socket (any driver, not only snapcsi).
    Ctl(crate::ctl::CtlArgs),
    /// Parse a config file, authenticate to every backend in it and report each one.
    CheckConfig {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the SnapshotSchedule controller (`scheduler crd` prints its CRD).
    Scheduler(crate::kube::SchedulerArgs),
}

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

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
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

/// The config file: named backend instances and what they share.
///
/// ```toml
/// default_backend = "east"     # used when a class names no `backend` parameter
/// cluster_id = "prod-1"        # tags cloud objects so several clusters can share a project
///
/// [backends.east]
/// type = "local"               # each type has its own keys (README "Configuration")
/// data_dir = "/var/lib/snapcsi"
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Instance used when a request names none; default: the only instance.
    pub default_backend: Option<String>,
    /// Identifies this cluster in cloud-side tags.
    pub cluster_id: Option<String>,
    /// Named instances; each table has a `type` key and that type's own keys.
    pub backends: std::collections::BTreeMap<String, toml::Table>,
}

/// A config file problem, naming the file, the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {key}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// Dotted key path, e.g. `backends.east.auth_url`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl FileConfig {
    /// Reads and checks a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: e.to_string(),
        })?;
        Self::parse(&file, &text)
    }

    /// Parses config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: e
                .span()
                .map(|span| key_at(text, span.start))
                .unwrap_or_else(|| "(document)".into()),
            message: e.message().to_owned(),
        })?;
        if config.backends.is_empty() {
            return Err(ConfigError {
                file: file.to_owned(),
                key: "backends".into(),
                message: "no backend instance is defined: add a [backends.<name>] table".into(),
            });
        }
        for name in config.backends.keys() {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(ConfigError {
                    file: file.to_owned(),
                    key: format!("backends.{name}"),
                    message: "instance names use only a-z, 0-9 and '-'".into(),
                });
            }
        }
        if let Some(default) = &config.default_backend
            && !config.backends.contains_key(default)
        {
            return Err(ConfigError {
                file: file.to_owned(),
                key: "default_backend".into(),
                message: format!("no [backends.{default}] table"),
            });
        }
        if config.default_backend.is_none() && config.backends.len() > 1 {
            return Err(ConfigError {
                file: file.to_owned(),
                key: "default_backend".into(),
                message: "several instances are defined: say which one is the default".into(),
            });
        }
        Ok(config)
    }
}

/// The dotted key of the table or key that holds byte offset `at` in TOML text (best effort:
/// the last `[table]` header before it plus the key on its line).
fn key_at(text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let table = before
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        })
        .map(str::to_owned);
    let line = before.rsplit('\n').next().unwrap_or("");
    let line_end = text[at.min(text.len())..].split('\n').next().unwrap_or("");
    let full = format!("{line}{line_end}");
    let key = full
        .split_once('=')
        .map(|(k, _)| k.trim().to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let table = table.filter(|t| !t.is_empty());
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t,
        (None, Some(k)) => k,
        (None, None) => "(document)".into(),
    }
}

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// Parses `unix:///path`, `unix:/path`, a bare absolute path, or `tcp://host:port`.
pub fn parse_endpoint(value: &str) -> Result<Endpoint, String> {
    if let Some(rest) = value.strip_prefix("unix://") {
        return unix_path(rest, value);
    }
    if let Some(rest) = value.strip_prefix("unix:") {
        return unix_path(rest, value);
    }
    if let Some(rest) = value.strip_prefix("tcp://") {
        return rest
            .parse()
            .map(Endpoint::Tcp)
            .map_err(|e| format!("{value:?}: not a host:port address ({e})"));
    }
    if value.starts_with('/') {
        return unix_path(value, value);
    }
    Err(format!(
        "{value:?}: expected unix:///path/to/socket or tcp://ip:port"
    ))
}

fn unix_path(path: &str, original: &str) -> Result<Endpoint, String> {
    if path.is_empty() {
        return Err(format!("{original:?}: the socket path is empty"));
    }
    Ok(Endpoint::Unix(PathBuf::from(path)))
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

/// Parses a byte size: `1073741824`, `512Mi`, `10Gi`, `1Ti`, `500M`, `2G`.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?}: expected a size such as 1073741824, 512Mi or 10Gi"))?;
    let multiplier: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "{value:?}: unknown unit {other:?} (use Ki, Mi, Gi, Ti)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{value:?}: too large"))
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

/// Parses the command line, treating a missing subcommand as `serve`.
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let is_command = matches!(
        first,
        "serve" | "ctl" | "check-config" | "scheduler" | "help"
    );
    let is_top_flag = matches!(first, "-h" | "--help" | "-V" | "--version");
    if !is_command && !is_top_flag {
        args.insert(1.min(args.len()), "serve".into());
    }
    Cli::try_parse_from(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_the_default_command() {
        let cli = parse_args(["snapcsi", "--endpoint", "unix:///tmp/x.sock"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("serve expected");
        };
        assert_eq!(args.endpoint, Endpoint::Unix("/tmp/x.sock".into()));
        assert_eq!(args.driver_name, "snapcsi.dev");
        assert_eq!(args.mode, Mode::All);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            vec!["snapcsi", "--endpoint", "http://x"],
            vec!["snapcsi", "--driver-name", "-bad-"],
            vec!["snapcsi", "--max-capacity", "12Zi"],
            vec!["snapcsi", "--no-such-flag"],
            vec!["snapcsi", "serve", "--mode", "sideways"],
        ] {
            let err = parse_args(args.clone()).expect_err("must fail");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn config_errors_name_the_file_and_key() {
        let err = FileConfig::parse(
            "x.toml",
            "[backends.east]\ntype = \"local\"\ndata_dir = 5\n[backends.west]\ntype = \"local\"\n",
        )
        .expect_err("no default");
        assert_eq!(err.key, "default_backend");
        assert!(
            err.to_string()
                .starts_with("config x.toml: default_backend:")
        );
        let err = FileConfig::parse(
            "x.toml",
            "defualt_backend = \"a\"\n[backends.a]\ntype=\"local\"\n",
        )
        .expect_err("typo");
        assert!(err.message.contains("defualt_backend"), "{err}");
        let err = FileConfig::parse("x.toml", "[backends.Bad_Name]\ntype = \"local\"\n")
            .expect_err("bad name");
        assert_eq!(err.key, "backends.Bad_Name");
        let ok = FileConfig::parse("x.toml", "[backends.a]\ntype = \"local\"\n").expect("valid");
        assert_eq!(ok.backends.len(), 1);
    }

    #[test]
    fn sizes_and_endpoints() {
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(
            parse_endpoint("tcp://127.0.0.1:9000"),
            Ok(Endpoint::Tcp("127.0.0.1:9000".parse().expect("addr")))
        );
        assert_eq!(
            parse_endpoint("unix:/run/csi.sock"),
            Ok(Endpoint::Unix("/run/csi.sock".into()))
        );
        assert!(parse_driver_name("snapcsi.dev").is_ok());
        assert!(parse_driver_name("1snap").is_err());
        assert!(parse_driver_name("snap.").is_err());
    }
}
