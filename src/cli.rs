//! The command line: the clap tree of every subcommand. Each subcommand's flags live with it
//! (`server::ServeArgs`, `ctl::CtlArgs`, `kube::SchedulerArgs`); this module only assembles
//! them, and nothing in the crate imports it (the binary does).

use clap::{Parser, Subcommand};
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
    Serve(crate::server::ServeArgs),
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
    use crate::server::Mode;
    use crate::values::Endpoint;

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
}
