//! `snapcsi ctl`: talk to any CSI driver over its socket, by hand or from scripts.
//!
//! Human tables by default, `--output json` for scripts. Exit codes scripts can trust:
//! 0 success; 1 the driver could not be reached; 2 bad usage; otherwise 10 + the gRPC code of
//! the failed call (15 NOT_FOUND, 16 ALREADY_EXISTS, 13 INVALID_ARGUMENT, 20 ABORTED, ...).
//!
//! One file per noun (`info`, `volume`, `snapshot`, `restore`), each with its flags; beside
//! them `print` (tables and JSON), `connect` (reaching the driver, exit codes) and `request`
//! (what several nouns' requests share). The nouns import only those three; this file only
//! dispatches.

mod connect;
mod info;
mod print;
mod request;
mod restore;
mod snapshot;
mod volume;

pub use connect::CtlError;
pub use restore::RestoreArgs;
pub use snapshot::SnapshotCommand;
pub use volume::VolumeCommand;

use crate::values::{Endpoint, parse_endpoint};
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write;
use std::time::Duration;

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
    Restore(RestoreArgs),
}

/// Runs one `ctl` command, writing its answer to `out` and progress to stderr.
pub async fn run(args: CtlArgs, out: &mut impl Write) -> Result<(), CtlError> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let channel = connect::connect(&args.endpoint, timeout).await?;
    let json_out = args.output == Output::Json;
    match args.command {
        CtlCommand::Info => info::run(channel, out, json_out).await,
        CtlCommand::Volume(command) => volume::run(command, channel, out, json_out).await,
        CtlCommand::Snapshot(command) => snapshot::run(command, channel, out, json_out).await,
        CtlCommand::Restore(args) => restore::run(args, channel, out, json_out).await,
    }
}
