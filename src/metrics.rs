//! Prometheus metrics (prometheus-client) and the `--metrics-addr` endpoint.
//!
//! The metric set is process-wide on purpose: the cloud-call counters sit inside the one HTTP
//! client every backend builds for itself, and threading a handle through every backend's
//! constructor would make telemetry part of each backend's API. This is the one process-wide
//! value in the crate; everything else is passed explicitly.

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Labels of a CSI call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// RPC name, e.g. `CreateSnapshot`.
    pub method: String,
    /// Backend kind.
    pub backend: String,
    /// gRPC code name, e.g. `Ok`, `NotFound`.
    pub code: String,
}

/// Labels of a cloud API call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudLabels {
    /// Backend kind.
    pub backend: String,
    /// Operation, e.g. `create_snapshot`.
    pub operation: String,
    /// HTTP status, or `error` for a transport failure.
    pub status: String,
}

/// Labels of a SnapshotMetadata stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetadataLabels {
    /// `GetMetadataAllocated` or `GetMetadataDelta`.
    pub rpc: String,
    /// Backend kind.
    pub backend: String,
    /// How the ranges were found: `allocation`, `extents` (extent maps, no data read) or
    /// `data` (both snapshots read and compared).
    pub method: String,
    /// gRPC code name the stream ended with.
    pub code: String,
}

/// Labels naming a backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// Backend kind.
    pub backend: String,
}

/// Labels of a kind of object in a backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// Backend kind.
    pub backend: String,
    /// `snapshot` or `volume`.
    pub kind: String,
}

/// The most duplicated names remembered (each is a warning already given); beyond it a name
/// is warned about on every lookup rather than remembered without bound.
const MAX_DUPLICATE_NAMES: usize = 4096;

/// A metric family exposed from the start: prometheus-client leaves out the HELP and TYPE lines
/// of a family until its first sample, so a scrape before the first RPC (or the first cloud
/// call) would not show what the driver exports, and dashboards and alerts written against it
/// would see "no such metric" instead of an empty family.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// Every metric the driver exports.
pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    cloud_requests: Family<CloudLabels, Counter>,
    cloud_seconds: Family<CloudLabels, Histogram, fn() -> Histogram>,
    snapshots_created: Family<BackendLabels, Counter>,
    snapshots_deleted: Family<BackendLabels, Counter>,
    duplicate_names: Family<ObjectLabels, Counter>,
    /// (kind, CSI name) -> the ids last warned about, chosen first (see `backend::names`).
    duplicates: Mutex<HashMap<(&'static str, String), Vec<String>>>,
    in_flight: Gauge,
    metadata_streams: Family<MetadataLabels, Counter>,
    metadata_bytes_read: Family<MetadataLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("snapcsi");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_seconds = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let cloud_requests = Family::<CloudLabels, Counter>::default();
        let cloud_seconds =
            Family::<CloudLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let snapshots_created = Family::<BackendLabels, Counter>::default();
        let snapshots_deleted = Family::<BackendLabels, Counter>::default();
        let duplicate_names = Family::<ObjectLabels, Counter>::default();
        let in_flight = Gauge::default();
        let metadata_streams = Family::<MetadataLabels, Counter>::default();
        let metadata_bytes_read = Family::<MetadataLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "CSI calls answered",
            Declared(rpc_requests.clone()),
        );
        registry.register(
            "rpc_duration_seconds",
            "CSI call latency",
            Declared(rpc_seconds.clone()),
        );
        registry.register(
            "cloud_requests",
            "Cloud API calls made",
            Declared(cloud_requests.clone()),
        );
        registry.register(
            "cloud_request_duration_seconds",
            "Cloud API call latency",
            Declared(cloud_seconds.clone()),
        );
        registry.register(
            "snapshots_created",
            "Snapshots created (not counting idempotent repeats)",
            Declared(snapshots_created.clone()),
        );
        registry.register(
            "snapshots_deleted",
            "Snapshots deleted",
            Declared(snapshots_deleted.clone()),
        );
        registry.register(
            "duplicate_names",
            "CSI names found on more than one cloud object (each name counted once)",
            Declared(duplicate_names.clone()),
        );
        registry.register(
            "in_flight_operations",
            "Operations holding an in-flight guard",
            in_flight.clone(),
        );
        registry.register(
            "snapshot_metadata_streams",
            "SnapshotMetadata streams answered, by how the ranges were found",
            Declared(metadata_streams.clone()),
        );
        registry.register(
            "snapshot_metadata_read_bytes",
            "Bytes of snapshot data read to answer SnapshotMetadata streams",
            Declared(metadata_bytes_read.clone()),
        );
        Self {
            registry,
            rpc_requests,
            rpc_seconds,
            cloud_requests,
            cloud_seconds,
            snapshots_created,
            snapshots_deleted,
            duplicate_names,
            duplicates: Mutex::default(),
            in_flight,
            metadata_streams,
            metadata_bytes_read,
        }
    }

    /// Records one answered CSI call.
    pub fn rpc(&self, method: &str, backend: &str, code: tonic::Code, elapsed: Duration) {
        let labels = RpcLabels {
            method: method.to_owned(),
            backend: backend.to_owned(),
            code: format!("{code:?}"),
        };
        self.rpc_requests.get_or_create(&labels).inc();
        self.rpc_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Records one cloud API call (`status` 0 = transport failure).
    pub fn cloud(&self, backend: &str, operation: &str, status: u16, elapsed: Duration) {
        let labels = CloudLabels {
            backend: backend.to_owned(),
            operation: operation.to_owned(),
            status: if status == 0 {
                "error".to_owned()
            } else {
                status.to_string()
            },
        };
        self.cloud_requests.get_or_create(&labels).inc();
        self.cloud_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a snapshot the backend created.
    pub fn snapshot_created(&self, backend: &str) {
        self.snapshots_created
            .get_or_create(&BackendLabels {
                backend: backend.to_owned(),
            })
            .inc();
    }

    /// Counts a snapshot deletion.
    pub fn snapshot_deleted(&self, backend: &str) {
        self.snapshots_deleted
            .get_or_create(&BackendLabels {
                backend: backend.to_owned(),
            })
            .inc();
    }

    /// Records that a lookup found `ids` (chosen first) under the CSI name `name`; counts the
    /// name the first time. Answers whether this is news to warn about: the name was not
    /// known as duplicated, or other objects carry it now.
    pub fn duplicate_name(
        &self,
        backend: &str,
        kind: &'static str,
        name: &str,
        ids: &[String],
    ) -> bool {
        let mut known = self.duplicates.lock().unwrap_or_else(|p| p.into_inner());
        let key = (kind, name.to_owned());
        match known.get_mut(&key) {
            Some(last) if last.as_slice() == ids => false,
            Some(last) => {
                *last = ids.to_vec();
                true
            }
            None => {
                self.duplicate_names
                    .get_or_create(&ObjectLabels {
                        backend: backend.to_owned(),
                        kind: kind.to_owned(),
                    })
                    .inc();
                if known.len() < MAX_DUPLICATE_NAMES {
                    known.insert(key, ids.to_vec());
                }
                true
            }
        }
    }

    /// The ids (chosen first) a lookup last found under `name`, if it found more than one.
    pub fn duplicate_ids(&self, kind: &'static str, name: &str) -> Option<Vec<String>> {
        let known = self.duplicates.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&(kind, name.to_owned())).cloned()
    }

    /// Records one finished SnapshotMetadata stream: how its ranges were found (`method`) and
    /// how many bytes of snapshot data that read.
    pub fn snapshot_metadata(
        &self,
        rpc: &str,
        backend: &str,
        method: &str,
        code: tonic::Code,
        bytes_read: u64,
    ) {
        let labels = MetadataLabels {
            rpc: rpc.to_owned(),
            backend: backend.to_owned(),
            method: method.to_owned(),
            code: format!("{code:?}"),
        };
        self.metadata_streams.get_or_create(&labels).inc();
        self.metadata_bytes_read
            .get_or_create(&labels)
            .inc_by(bytes_read);
    }

    /// An operation took an in-flight guard.
    pub fn operation_started(&self) {
        self.in_flight.inc();
    }

    /// An operation released its in-flight guard.
    pub fn operation_finished(&self) {
        self.in_flight.dec();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Serves `GET /metrics` on a bound listener until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::TokioIo;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics on /metrics");
    }
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    if request.uri().path() == "/metrics" {
                        Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(http_body_util::Full::new(bytes::Bytes::from(
                                metrics().render(),
                            )))
                    } else {
                        Response::builder().status(StatusCode::NOT_FOUND).body(
                            http_body_util::Full::new(bytes::Bytes::from_static(
                                b"not found: try /metrics\n",
                            )),
                        )
                    }
                },
            );
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}
