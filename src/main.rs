//! The `snapcsi` binary: parse flags, start logging, serve. No logic lives here.

use snapcsi::cli::{self, Command};
use snapcsi::logging::init as init_logging;
use snapcsi::values::LogFormat;
use std::process::ExitCode;

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match cli::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format, &args.log_level);
            match snapcsi::server::serve(args, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "snapcsi stopped");
                    eprintln!("snapcsi: {e}");
                    // A wrong config file is a usage error, like a wrong flag.
                    if matches!(e, snapcsi::server::ServeError::Config(_)) {
                        ExitCode::from(2)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
        Command::CheckConfig { config } => {
            init_logging(LogFormat::Text, "warn");
            let mut stdout = std::io::stdout().lock();
            match snapcsi::check::check(&config, &mut stdout).await {
                Ok(snapcsi::check::Verdict::AllOk) => ExitCode::SUCCESS,
                Ok(snapcsi::check::Verdict::Problems(_)) => ExitCode::from(1),
                Ok(snapcsi::check::Verdict::BadFile) => ExitCode::from(2),
                Err(e) => {
                    eprintln!("snapcsi check-config: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Scheduler(args) => {
            if let Some(snapcsi::kube::SchedulerAction::Crd) = args.action {
                print!("{}", snapcsi::kube::crd::crd_yaml());
                return ExitCode::SUCCESS;
            }
            init_logging(args.log_format, &args.log_level);
            match snapcsi::kube::run(args, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "scheduler stopped");
                    eprintln!("snapcsi scheduler: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ctl(args) => {
            let mut stdout = std::io::stdout().lock();
            match snapcsi::ctl::run(args, &mut stdout).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("snapcsi ctl: {}", e.message);
                    ExitCode::from(e.code)
                }
            }
        }
    }
}
