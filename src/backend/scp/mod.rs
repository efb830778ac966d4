//! The Samsung Cloud Platform (SCP) backend: Virtual Server block volumes and their snapshots
//! through the SCP OpenAPI, every request signed (`signer`), at a pinned API version.
//!
//! Contract notes (issues 4 and 15, seed 003, the SDK's types):
//! - The CSI name is the cloud `name` of the object; snapshots also carry it (and the
//!   cluster id) in their `metadata` object, so a name lookup (`GET /v1/snapshots?name=`)
//!   only takes snapshots this driver made for this cluster. Metadata is read leniently: an
//!   object, or JSON text in a string as older answers carried it.
//! - `ready` follows the status: `available` (and `in-use` for volumes) is ready, the
//!   Cinder-like transitional states are not, an `error*` status is a clear error naming it,
//!   and an undocumented status is "not ready", logged once per status.
//! - A volume is usable only once `available`: CreateVolume (new or restored) and
//!   ControllerExpandVolume wait for it a bounded time (`volume_wait_seconds`), then answer
//!   UNAVAILABLE ("still in progress"), so no call answers a volume the next call refuses.
//! - Several objects of one name: the oldest answers (`backend::names`).
//! - Lists page with the service's `limit`/`marker`; the cursor is the last id returned.

pub mod client;
pub mod config;
pub mod error;
pub mod signer;
/// Dates and timestamps (the crate's one calendar module).
pub use crate::calendar as time;

use crate::backend::names::{self, Found};
use crate::backend::{
    Backend, BackendError, BackendResult, Capabilities, CreateSnapshot, CreateVolume, ErrorKind,
    Page, PageRequest, Snapshot, SnapshotFilter, SnapshotId, Volume, VolumeId, VolumeSource,
};
use crate::http::{HttpClient, Idempotency};
use crate::secret::Secrets;
use async_trait::async_trait;
use client::{
    Answer, Credentials, ScpClient, SnapshotCreateRequest, SnapshotDetail, SnapshotList,
    VolumeCreateRequest, VolumeDetail, VolumeExtendRequest, VolumeList,
};
pub use config::ScpConfig;
use reqwest::Method;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

const GIB: u64 = 1 << 30;
/// `VolumeCreateRequest.size` and `VolumeExtendRequest.size` have a minimum of 8 (GB) in the
/// SDK's OpenAPI types.
const MIN_VOLUME_GB: u64 = 8;

/// Keys of a CSI request's `secrets` this backend reads.
pub const SECRET_ACCESS_KEY: &str = "access_key";
/// See [`SECRET_ACCESS_KEY`].
pub const SECRET_SECRET_KEY: &str = "secret_key";
/// See [`SECRET_ACCESS_KEY`].
pub const SECRET_ACCOUNT_ID: &str = "account_id";

/// Metadata keys written into a snapshot's `metadata` object.
const TAG_NAME: &str = "snapcsi/name";
const TAG_CLUSTER: &str = "snapcsi/cluster";

/// Page size of the name lookups, which walk every object of one name.
const LOOKUP_PAGE: usize = 100;
/// The most items one list call asks for (a page of `max_entries` asks for one more, to know
/// whether another page follows).
const SERVICE_MAX_LIMIT: usize = 1000;

/// A configuration problem found while building the backend: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError {
    /// Key under `backends.<name>`, e.g. `api_version`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

struct Shared {
    client: ScpClient,
    cluster_id: Option<String>,
    volume_type: Option<String>,
    force_snapshot: bool,
    /// How long a volume is waited for to become `available`.
    volume_wait: Duration,
    /// Undocumented statuses already logged.
    unknown_statuses: Mutex<HashSet<String>>,
}

/// The SCP backend (one endpoint, one API version; credentials from the config or a request).
#[derive(Clone)]
pub struct ScpBackend {
    shared: Arc<Shared>,
    credentials: Option<Arc<Credentials>>,
}

impl ScpBackend {
    /// Builds the backend from its config section. `today` decides the version policy
    /// ([`config::check_version`]); its warnings are logged here, i.e. at every start.
    pub fn new(
        config: ScpConfig,
        cluster_id: Option<String>,
        today: time::Date,
    ) -> Result<Self, SetupError> {
        let setup = |key: &'static str, message: String| SetupError { key, message };
        match config::check_version(
            &config.api_version,
            today,
            config.allow_deprecated_api_version,
        )
        .map_err(|m| setup("api_version", m))?
        {
            config::VersionDecision::Use => {}
            config::VersionDecision::UseWithWarning(warning) => {
                tracing::warn!(backend = "scp", "{warning}");
            }
        }
        let endpoint = match (&config.endpoint, &config.region, &config.env) {
            (Some(endpoint), _, _) => endpoint.clone(),
            (None, Some(region), Some(env)) => {
                format!("https://virtualserver.{region}.{env}.samsungsdscloud.com")
            }
            _ => {
                return Err(setup(
                    "endpoint",
                    "missing: set endpoint (the Virtual Server URL), or region and env".into(),
                ));
            }
        };
        let base = reqwest::Url::parse(&endpoint)
            .map_err(|e| setup("endpoint", format!("{endpoint:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "https" | "http") || base.host().is_none() {
            return Err(setup(
                "endpoint",
                format!("{endpoint:?}: expected https://host[:port]"),
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(setup(
                "endpoint",
                format!("{endpoint:?}: no query or fragment"),
            ));
        }
        if base.scheme() == "http" {
            tracing::warn!(
                backend = "scp",
                endpoint = %base,
                "the SCP endpoint is plain http: requests are signed but not encrypted"
            );
        }
        let credentials = match (config.access_key, config.secret_key) {
            (Some(access_key), Some(secret_key)) => {
                if access_key.is_empty() || secret_key.is_empty() {
                    return Err(setup(
                        "access_key",
                        "access_key and secret_key must not be empty".into(),
                    ));
                }
                Some(Arc::new(Credentials {
                    access_key,
                    secret_key,
                    account_id: config.account_id.filter(|a| !a.is_empty()),
                }))
            }
            (None, None) => {
                if config.account_id.is_some() {
                    return Err(setup(
                        "account_id",
                        "set with access_key and secret_key only".into(),
                    ));
                }
                None
            }
            (Some(_), None) => {
                return Err(setup(
                    "secret_key",
                    "missing: access_key and secret_key go together".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(setup(
                    "access_key",
                    "missing: access_key and secret_key go together".into(),
                ));
            }
        };
        let http = HttpClient::new(&config.http, "scp").map_err(|m| setup("http", m))?;
        let client = ScpClient::new(http, base, &config.api_version, &config.accept_language)
            .map_err(|m| setup("api_version", m))?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                cluster_id,
                volume_type: config.volume_type,
                force_snapshot: config.force_snapshot,
                volume_wait: Duration::from_secs(config.volume_wait_seconds),
                unknown_statuses: Mutex::default(),
            }),
            credentials,
        })
    }

    fn client(&self) -> &ScpClient {
        &self.shared.client
    }

    fn credentials(&self) -> BackendResult<&Credentials> {
        self.credentials.as_deref().ok_or_else(|| {
            BackendError::new(
                ErrorKind::Unauthorized,
                format!(
                    "scp: no credentials: set access_key and secret_key in the backend's config \
                     or in the request secrets ({SECRET_ACCESS_KEY}, {SECRET_SECRET_KEY})"
                ),
            )
        })
    }

    async fn call(
        &self,
        operation: &'static str,
        idempotency: Idempotency,
        method: Method,
        url: reqwest::Url,
        body: Option<Vec<u8>>,
    ) -> BackendResult<(Answer, &Credentials)> {
        let credentials = self.credentials()?;
        let answer = self
            .client()
            .call(credentials, operation, idempotency, method, url, body)
            .await?;
        Ok((answer, credentials))
    }

    /// A GET of one object: `Ok(None)` on 404.
    async fn get_one<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        segments: &[&str],
    ) -> BackendResult<Option<T>> {
        let url = self.client().url(segments, &[]);
        let (answer, credentials) = self
            .call(operation, Idempotency::Idempotent, Method::GET, url, None)
            .await?;
        match answer.status {
            200..=299 => client::parse(operation, &answer).map(Some),
            404 => Ok(None),
            _ => Err(self.client().failure(credentials, operation, &answer)),
        }
    }

    /// A DELETE: gone already (404) is success.
    async fn delete_one(&self, operation: &'static str, segments: &[&str]) -> BackendResult<()> {
        let url = self.client().url(segments, &[]);
        let (answer, credentials) = self
            .call(
                operation,
                Idempotency::Idempotent,
                Method::DELETE,
                url,
                None,
            )
            .await?;
        match answer.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.client().failure(credentials, operation, &answer)),
        }
    }

    /// One page of a list; `marker` resumes after that id. A marker the service refuses is
    /// an invalid cursor.
    async fn list_page<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        collection: &str,
        mut query: Vec<(&'static str, String)>,
        limit: usize,
        marker: Option<&str>,
    ) -> BackendResult<T> {
        query.push(("limit", limit.to_string()));
        if let Some(marker) = marker {
            query.push(("marker", marker.to_owned()));
        }
        let url = self.client().url(&["v1", collection], &query);
        let (answer, credentials) = self
            .call(operation, Idempotency::Idempotent, Method::GET, url, None)
            .await?;
        match answer.status {
            200..=299 => client::parse(operation, &answer),
            400 | 404 if marker.is_some() => Err(BackendError::new(
                ErrorKind::InvalidCursor,
                format!(
                    "scp {operation}: the service refused the page marker: {}",
                    error::cloud_message(&answer.body)
                ),
            )),
            _ => Err(self.client().failure(credentials, operation, &answer)),
        }
    }

    fn note_unknown(&self, what: &str, status: &str) {
        let mut seen = self
            .shared
            .unknown_statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if seen.insert(format!("{what}:{status}")) {
            tracing::warn!(
                backend = "scp",
                what,
                status,
                "undocumented {what} status; treating it as not ready (logged once)"
            );
        }
    }

    /// The metadata object of a new snapshot: the CSI name and the cluster.
    fn metadata_for(&self, name: &str) -> BTreeMap<&'static str, String> {
        let mut tags = BTreeMap::new();
        tags.insert(TAG_NAME, name.to_owned());
        if let Some(cluster) = &self.shared.cluster_id {
            tags.insert(TAG_CLUSTER, cluster.clone());
        }
        tags
    }

    /// The CSI name a snapshot was created with, if this driver (for this cluster) made it.
    /// The metadata is an object (the SDK's type); a string holding JSON text (what older
    /// answers, and this driver before issue 15, wrote) is read as well.
    fn owned_name(&self, detail: &SnapshotDetail) -> Option<String> {
        let tags = match &detail.metadata {
            Some(serde_json::Value::String(text)) => serde_json::from_str(text).ok()?,
            Some(serde_json::Value::Object(map)) => serde_json::Value::Object(map.clone()),
            _ => return None,
        };
        let name = tags.get(TAG_NAME)?.as_str()?;
        let cluster = tags.get(TAG_CLUSTER).and_then(|c| c.as_str());
        (cluster == self.shared.cluster_id.as_deref()).then(|| name.to_owned())
    }

    /// A snapshot from the service's detail. `strict`: an error status is an error (get and
    /// name lookups); otherwise it is listed as not ready.
    pub(crate) fn snapshot_from(
        &self,
        detail: SnapshotDetail,
        strict: bool,
    ) -> BackendResult<Snapshot> {
        let status = detail.status.as_deref().unwrap_or("");
        let ready = match status {
            "available" => true,
            "creating" | "deleting" | "restoring" | "backing-up" | "unmanaging" => false,
            status if status.starts_with("error") => {
                if strict {
                    return Err(BackendError::new(
                        ErrorKind::FailedPrecondition,
                        format!(
                            "scp: snapshot {} is in status {status:?}: the service failed to \
                             make it; delete it and take a new one",
                            detail.id
                        ),
                    ));
                }
                tracing::warn!(backend = "scp", snapshot = %detail.id, status, "snapshot in an error status");
                false
            }
            other => {
                self.note_unknown("snapshot", other);
                false
            }
        };
        let created_at = detail
            .created_at
            .as_deref()
            .and_then(time::parse_rfc3339)
            .unwrap_or(UNIX_EPOCH);
        let name = self
            .owned_name(&detail)
            .or(detail.name.clone())
            .unwrap_or_default();
        Ok(Snapshot {
            id: SnapshotId::new(detail.id),
            name,
            source_volume_id: VolumeId::new(detail.volume_id),
            size_bytes: gib_to_bytes(detail.size)?,
            created_at,
            ready,
            group_snapshot_id: None,
        })
    }

    /// Waits (at most `volume_wait_seconds`) until the volume is usable and answers it; a
    /// volume still busy then is UNAVAILABLE (the sidecar calls again and finds it by name),
    /// a failed one the error of [`Self::volume_from`].
    async fn settle_volume(&self, detail: VolumeDetail) -> BackendResult<Volume> {
        let limit = self.shared.volume_wait;
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        let mut current = detail;
        loop {
            let state = current.state.clone();
            let id = current.id.clone();
            let volume = self.volume_from(current, true)?;
            if volume.ready {
                return Ok(volume);
            }
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(BackendError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "scp volume {id} is still {state:?} after {}s; the call will be repeated",
                        limit.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            current = self
                .get_one::<VolumeDetail>("get volume", &["v1", "volumes", &id])
                .await?
                .ok_or_else(|| {
                    BackendError::new(
                        ErrorKind::Unavailable,
                        format!("scp volume {id} disappeared while it was {state:?}"),
                    )
                })?;
        }
    }

    /// Every object a name lookup of `collection` finds, page after page (the SDK's `name`
    /// filter), kept when `keep` says so.
    async fn all_named<L, T>(
        &self,
        operation: &'static str,
        collection: &str,
        name: &str,
        items: impl Fn(L) -> Vec<T>,
        id: impl Fn(&T) -> String,
        keep: impl Fn(&T) -> bool,
    ) -> BackendResult<Vec<T>>
    where
        L: serde::de::DeserializeOwned,
    {
        let mut marker: Option<String> = None;
        let mut kept = Vec::new();
        loop {
            let page: L = self
                .list_page(
                    operation,
                    collection,
                    vec![("name", name.to_owned())],
                    LOOKUP_PAGE,
                    marker.as_deref(),
                )
                .await?;
            let page = items(page);
            let full = page.len() >= LOOKUP_PAGE;
            marker = page.last().map(&id);
            kept.extend(page.into_iter().filter(|item| keep(item)));
            if !full || marker.is_none() {
                return Ok(kept);
            }
        }
    }

    /// A volume from the service's detail; `strict` as in [`Self::snapshot_from`].
    pub(crate) fn volume_from(&self, detail: VolumeDetail, strict: bool) -> BackendResult<Volume> {
        let ready = match detail.state.as_str() {
            "available" | "in-use" => true,
            "creating" | "downloading" | "extending" | "attaching" | "detaching" | "reserved"
            | "maintenance" | "deleting" | "retyping" | "uploading" | "restoring-backup"
            | "backing-up" => false,
            state if state.starts_with("error") => {
                if strict {
                    return Err(BackendError::new(
                        ErrorKind::FailedPrecondition,
                        format!(
                            "scp: volume {} is in state {:?}: the service failed it",
                            detail.id, detail.state
                        ),
                    ));
                }
                false
            }
            other => {
                self.note_unknown("volume", other);
                false
            }
        };
        Ok(Volume {
            id: VolumeId::new(detail.id),
            name: detail.name.unwrap_or_default(),
            size_bytes: gib_to_bytes(detail.size)?,
            source: detail
                .snapshot_id
                .filter(|s| !s.is_empty())
                .map(|s| VolumeSource::Snapshot(SnapshotId::new(s))),
            ready,
            zone: None,
        })
    }
}

fn gib_to_bytes(gib: u64) -> BackendResult<u64> {
    gib.checked_mul(GIB)
        .ok_or_else(|| BackendError::internal(format!("scp: size {gib} GB is out of range")))
}

/// A cursor is an id this backend returned; the service's ids are UUIDs.
pub(crate) fn check_cursor(cursor: Option<&str>) -> BackendResult<()> {
    match cursor {
        Some(c) if uuid::Uuid::parse_str(c).is_err() => Err(BackendError::new(
            ErrorKind::InvalidCursor,
            format!("{c:?} is not a position in an SCP list"),
        )),
        _ => Ok(()),
    }
}

/// Asks for one more than wanted to learn whether a next page exists (up to the service's
/// page limit, where the last id of a full page is the cursor).
pub(crate) fn page_limit(max_entries: usize) -> usize {
    if max_entries < SERVICE_MAX_LIMIT {
        max_entries + 1
    } else {
        SERVICE_MAX_LIMIT
    }
}

pub(crate) fn page_of<T>(
    mut items: Vec<T>,
    max_entries: usize,
    id: impl Fn(&T) -> String,
) -> Page<T> {
    let asked = page_limit(max_entries);
    let more = items.len() > max_entries || (asked == max_entries && items.len() == asked);
    items.truncate(max_entries);
    let next_cursor = if more { items.last().map(id) } else { None };
    Page { items, next_cursor }
}

#[async_trait]
impl Backend for ScpBackend {
    fn kind(&self) -> &'static str {
        "scp"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            create_delete_volume: true,
            create_delete_snapshot: true,
            restore_snapshot: true,
            // The Virtual Server API has no volume-from-volume copy.
            clone_volume: false,
            expand_volume: true,
            // No capacity call in the API used here.
            get_capacity: false,
            size_granularity_bytes: GIB,
            min_volume_bytes: MIN_VOLUME_GB * GIB,
            node_local: false,
            group_snapshot: false,
            snapshot_metadata: false,
            attach: false,
            zones: false,
        }
    }

    fn with_secrets(&self, secrets: &Secrets) -> BackendResult<Option<Arc<dyn Backend>>> {
        let access_key = secrets.get(SECRET_ACCESS_KEY);
        let secret_key = secrets.get(SECRET_SECRET_KEY);
        let account_id = secrets.get(SECRET_ACCOUNT_ID);
        let (access_key, secret_key) = match (access_key, secret_key) {
            (None, None) => {
                if account_id.is_some() {
                    return Err(BackendError::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "secrets: {SECRET_ACCOUNT_ID} given without {SECRET_ACCESS_KEY} and \
                             {SECRET_SECRET_KEY}"
                        ),
                    ));
                }
                return Ok(None);
            }
            (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => (a.clone(), s.clone()),
            _ => {
                return Err(BackendError::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "secrets: {SECRET_ACCESS_KEY} and {SECRET_SECRET_KEY} go together and \
                         must not be empty (keys given: {})",
                        secrets.keys().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        };
        Ok(Some(Arc::new(ScpBackend {
            shared: Arc::clone(&self.shared),
            credentials: Some(Arc::new(Credentials {
                access_key,
                secret_key,
                account_id: account_id.filter(|a| !a.is_empty()).cloned(),
            })),
        })))
    }

    fn api_version(&self) -> Option<String> {
        Some(self.shared.client.api_version().to_owned())
    }

    async fn health(&self) -> BackendResult<()> {
        if self.credentials.is_none() {
            // Credentials come with each request: nothing can be checked without one.
            return Ok(());
        }
        self.list_page::<SnapshotList>("health", "snapshots", Vec::new(), 1, None)
            .await
            .map(|_| ())
    }

    async fn available_capacity(&self) -> BackendResult<Option<u64>> {
        Ok(None)
    }

    async fn create_volume(&self, request: &CreateVolume) -> BackendResult<Volume> {
        let snapshot_id = match &request.source {
            None => None,
            Some(VolumeSource::Snapshot(id)) => Some(id.as_str()),
            Some(VolumeSource::Volume(_)) => {
                return Err(BackendError::new(
                    ErrorKind::Unsupported,
                    "scp: volumes cannot be cloned from volumes; take a snapshot and restore it",
                ));
            }
        };
        let size = request.size_bytes.div_ceil(GIB).max(MIN_VOLUME_GB);
        let body = client::body(&VolumeCreateRequest {
            name: &request.name,
            size,
            volume_type: self.shared.volume_type.as_deref(),
            snapshot_id,
        })?;
        let url = self.client().url(&["v1", "volumes"], &[]);
        let operation = "create volume";
        let (answer, credentials) = self
            .call(operation, Idempotency::Once, Method::POST, url, Some(body))
            .await?;
        match answer.status {
            200..=299 => self.settle_volume(client::parse(operation, &answer)?).await,
            // A restore source that vanished between the lookup and the create.
            404 if snapshot_id.is_some() => Err(BackendError::not_found(format!(
                "source snapshot {} does not exist: {}",
                snapshot_id.unwrap_or_default(),
                error::cloud_message(&answer.body)
            ))),
            _ => Err(self.client().failure(credentials, operation, &answer)),
        }
    }

    async fn get_volume(&self, id: &VolumeId) -> BackendResult<Option<Volume>> {
        match self
            .get_one::<VolumeDetail>("get volume", &["v1", "volumes", id.as_str()])
            .await?
        {
            Some(detail) => self.volume_from(detail, true).map(Some),
            None => Ok(None),
        }
    }

    async fn find_volume_by_name(&self, name: &str) -> BackendResult<Option<Volume>> {
        let found = self
            .all_named(
                "find volume by name",
                "volumes",
                name,
                |list: VolumeList| list.volumes,
                |v| v.id.clone(),
                |v| v.name.as_deref() == Some(name),
            )
            .await?;
        let found = found
            .into_iter()
            .map(|v| Found {
                id: v.id.clone(),
                created_at: v.created_at.as_deref().and_then(time::parse_rfc3339),
                object: v,
            })
            .collect();
        match names::pick("scp", "volume", name, found) {
            None => Ok(None),
            // A repeated CreateVolume: wait for the volume like the first call did.
            Some(v) => self.settle_volume(v).await.map(Some),
        }
    }

    async fn delete_volume(&self, id: &VolumeId) -> BackendResult<()> {
        self.delete_one("delete volume", &["v1", "volumes", id.as_str()])
            .await
    }

    async fn expand_volume(&self, id: &VolumeId, new_size_bytes: u64) -> BackendResult<u64> {
        let size = new_size_bytes.div_ceil(GIB).max(MIN_VOLUME_GB);
        let body = client::body(&VolumeExtendRequest { size })?;
        let url = self
            .client()
            .url(&["v1", "volumes", id.as_str(), "size"], &[]);
        let operation = "extend volume";
        let (answer, credentials) = self
            .call(
                operation,
                Idempotency::Idempotent,
                Method::PUT,
                url,
                Some(body),
            )
            .await?;
        let failure = match answer.status {
            200..=299 => None,
            404 => {
                return Err(BackendError::not_found(format!(
                    "volume {id} does not exist"
                )));
            }
            // A PUT repeated after its lost answer is refused ("not greater than the current
            // size", or the volume is still `extending`): decided by the volume below.
            400 => Some(self.client().failure(credentials, operation, &answer)),
            _ => return Err(self.client().failure(credentials, operation, &answer)),
        };
        let detail = self
            .get_one::<VolumeDetail>("get volume", &["v1", "volumes", id.as_str()])
            .await?
            .ok_or_else(|| BackendError::not_found(format!("volume {id} does not exist")))?;
        if let Some(failure) = failure
            && detail.size < size
        {
            // Not grown. A volume busy in another operation (`extending`, `creating`)
            // refuses the extend for now: "still in progress" (the resizer gives up on
            // FAILED_PRECONDITION, which is for a refusal that lasts).
            let busy = matches!(self.volume_from(detail.clone(), false), Ok(v) if !v.ready)
                && !detail.state.starts_with("error");
            if busy {
                return Err(BackendError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "scp volume {id} is {:?}: it cannot be extended until that ends; \
                             the call will be repeated ({})",
                        detail.state, failure.message
                    ),
                ));
            }
            return Err(failure);
        }
        // The volume is `extending`: the expansion is done once it is usable again.
        let volume = self.settle_volume(detail).await?;
        Ok(volume.size_bytes)
    }

    async fn list_volumes(&self, page: &PageRequest) -> BackendResult<Page<Volume>> {
        check_cursor(page.cursor.as_deref())?;
        let list: VolumeList = self
            .list_page(
                "list volumes",
                "volumes",
                Vec::new(),
                page_limit(page.max_entries),
                page.cursor.as_deref(),
            )
            .await?;
        let volumes = list
            .volumes
            .into_iter()
            .map(|v| self.volume_from(v, false))
            .collect::<BackendResult<Vec<_>>>()?;
        Ok(page_of(volumes, page.max_entries, |v| {
            v.id.as_str().to_owned()
        }))
    }

    async fn create_snapshot(&self, request: &CreateSnapshot) -> BackendResult<Snapshot> {
        let metadata = self.metadata_for(&request.name);
        let body = client::body(&SnapshotCreateRequest {
            name: &request.name,
            volume_id: request.source_volume_id.as_str(),
            description: "created by snapcsi",
            force: self.shared.force_snapshot,
            metadata: &metadata,
        })?;
        let url = self.client().url(&["v1", "snapshots"], &[]);
        let operation = "create snapshot";
        let (answer, credentials) = self
            .call(operation, Idempotency::Once, Method::POST, url, Some(body))
            .await?;
        match answer.status {
            // Seed 003: 202 Accepted with the snapshot detail.
            200..=299 => self.snapshot_from(client::parse(operation, &answer)?, true),
            404 => Err(BackendError::not_found(format!(
                "source volume {} does not exist: {}",
                request.source_volume_id,
                error::cloud_message(&answer.body)
            ))),
            _ => Err(self.client().failure(credentials, operation, &answer)),
        }
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> BackendResult<Option<Snapshot>> {
        match self
            .get_one::<SnapshotDetail>("get snapshot", &["v1", "snapshots", id.as_str()])
            .await?
        {
            Some(detail) => self.snapshot_from(detail, true).map(Some),
            None => Ok(None),
        }
    }

    async fn find_snapshot_by_name(&self, name: &str) -> BackendResult<Option<Snapshot>> {
        let found = self
            .all_named(
                "find snapshot by name",
                "snapshots",
                name,
                |list: SnapshotList| list.snapshots,
                |s| s.id.clone(),
                |s| self.owned_name(s).as_deref() == Some(name),
            )
            .await?;
        let found = found
            .into_iter()
            .map(|s| Found {
                id: s.id.clone(),
                created_at: s.created_at.as_deref().and_then(time::parse_rfc3339),
                object: s,
            })
            .collect();
        names::pick("scp", "snapshot", name, found)
            .map(|s| self.snapshot_from(s, true))
            .transpose()
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> BackendResult<()> {
        let segments = ["v1", "snapshots", id.as_str()];
        self.delete_one("delete snapshot", &segments).await?;
        // The service may accept a delete and fail it afterwards (a Cinder-like
        // `error_deleting`): confirm, so that a snapshot left behind is an error the sidecar
        // retries rather than a silent leak.
        match self
            .get_one::<SnapshotDetail>("confirm snapshot delete", &segments)
            .await?
        {
            Some(detail)
                if detail
                    .status
                    .as_deref()
                    .is_some_and(|s| s.starts_with("error")) =>
            {
                Err(BackendError::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "scp: snapshot {id} is in status {:?} after its delete: the service failed \
                     to delete it; the delete will be tried again",
                        detail.status.unwrap_or_default()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: &PageRequest,
    ) -> BackendResult<Page<Snapshot>> {
        check_cursor(page.cursor.as_deref())?;
        let mut query = Vec::new();
        if let Some(volume) = &filter.source_volume_id {
            query.push(("volume_id", volume.as_str().to_owned()));
        }
        let list: SnapshotList = self
            .list_page(
                "list snapshots",
                "snapshots",
                query,
                page_limit(page.max_entries),
                page.cursor.as_deref(),
            )
            .await?;
        let snapshots = list
            .snapshots
            .into_iter()
            .map(|s| self.snapshot_from(s, false))
            .collect::<BackendResult<Vec<_>>>()?;
        Ok(page_of(snapshots, page.max_entries, |s| {
            s.id.as_str().to_owned()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_asks_one_more_and_cuts() {
        assert_eq!(page_limit(2), 3);
        assert_eq!(page_limit(1000), 1000);
        let page = page_of(vec![1, 2, 3], 2, |i| i.to_string());
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        let last = page_of(vec![1, 2], 2, |i| i.to_string());
        assert_eq!(last.next_cursor, None);
        let full = page_of((0..1000).collect(), 1000, |i| i.to_string());
        assert_eq!(full.next_cursor.as_deref(), Some("999"));
        assert!(check_cursor(Some("garbage")).is_err());
        assert!(check_cursor(Some("3f500f00-ed80-4566-a057-e31760226f9a")).is_ok());
    }
}
