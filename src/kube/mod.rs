//! Kubernetes-side pieces (kube-rs): the `snapcsi scheduler` controller for the
//! `SnapshotSchedule` custom resource, with Lease-based leader election.

pub mod controller;
pub mod crd;
pub mod cron;
pub mod lease;

use jiff::Timestamp;

/// Where the controller reads the time. Injected so tests can move time forward.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// `snapcsi scheduler` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// `crd` prints the SnapshotSchedule CustomResourceDefinition instead of running.
    #[command(subcommand)]
    pub action: Option<SchedulerAction>,

    /// Only handle schedules in this namespace (default: all namespaces).
    #[arg(long)]
    pub namespace: Option<String>,

    /// Namespace of the leader-election Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "snapcsi")]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, default_value = "snapcsi-scheduler")]
    pub lease_name: String,

    /// Seconds a leader that stops renewing keeps the Lease (at least 2).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(i32).range(2..=3600))]
    pub lease_duration: i32,

    /// Seconds between steps (Lease renewal, then every schedule); a due slot wakes it early.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,

    /// Log format.
    #[arg(long, value_enum, default_value_t = crate::values::LogFormat::Text)]
    pub log_format: crate::values::LogFormat,

    /// Log filter (RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// `snapcsi scheduler` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SchedulerAction {
    /// Print the SnapshotSchedule CRD (YAML), as committed in deploy/base.
    Crd,
}

/// This process's Lease holder identity: the pod name (or host name) and a random suffix, so
/// a restarted pod with the same name never mistakes the old holder's Lease for its own.
pub fn holder_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "snapcsi-scheduler".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// Runs the controller with the in-cluster (or KUBECONFIG) credentials until `shutdown`.
pub async fn run(
    args: SchedulerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), kube::Error> {
    // Polled from the start (signal handlers installed now), not only once the first step is
    // done: a SIGTERM during that step must still end in a clean stop that releases the Lease.
    let stop = tokio::spawn(shutdown);
    let client = kube::Client::try_default().await?;
    let config = controller::SchedulerConfig {
        namespace: args.namespace,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity: holder_identity(),
        lease_duration_seconds: args.lease_duration,
    };
    tracing::info!(identity = %config.identity, lease = %config.lease_name, "scheduler starting");
    let scheduler = controller::Scheduler::new(client, std::sync::Arc::new(SystemClock), config);
    scheduler
        .run(std::time::Duration::from_secs(args.interval), async {
            let _ = stop.await;
        })
        .await;
    Ok(())
}
