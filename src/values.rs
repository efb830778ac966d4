//! Values the command line and the config file share, with their parsers: where to listen or
//! connect (`Endpoint`), byte sizes, the log format. A leaf: it imports nothing from the crate,
//! so every subcommand's arguments (`server`, `ctl`, `kube`) and the config file's sections
//! (`backend::registry`) can use it without importing each other.

use clap::ValueEnum;
use std::path::PathBuf;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
