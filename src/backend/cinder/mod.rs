//! OpenStack Cinder (Block Storage v3 with microversions, v2, and the v1 dialect Rackspace
//! Cloud Block Storage speaks) as a snapcsi backend.
//!
//! - The CSI name is the Cinder object's `name` (`display_name` in v1) and, in v3, a metadata
//!   tag; `find_*_by_name` uses Cinder's `name` filter, so a restart between a create and its
//!   answer finds the object instead of making a second one.
//! - Nothing blocks for long: a snapshot in `creating` is answered `ready = false` (the
//!   snapshotter calls again); a volume is waited for a bounded time (`volume_wait_seconds`),
//!   after which the provisioner is told "still in progress" (UNAVAILABLE) and calls again.
//! - Lists use Cinder's own `limit`/`marker` paging; the cursor is the marker.

pub mod client;
pub mod config;
pub mod error;
pub mod microversion;
pub mod nova;

use crate::backend::names::{self, Found};
use crate::backend::{
    Backend, BackendError, BackendResult, Capabilities, CreateSnapshot, CreateVolume, ErrorKind,
    Page, PageRequest, PublishContext, PublishVolume, Snapshot, SnapshotFilter, SnapshotId, Volume,
    VolumeId, VolumeSource,
};
use crate::secret::Secrets;
use async_trait::async_trait;
use client::{Answer, CinderClient, SNAPSHOT_IN_USE};
use config::{CinderConfig, Dialect};
use error::bad_status;
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const GIB: u64 = 1 << 30;

/// Metadata key holding the CSI name (v3).
pub const NAME_TAG: &str = "snapcsi.dev/csi-name";
/// Metadata key holding the cluster id (v3).
pub const CLUSTER_TAG: &str = "snapcsi.dev/cluster-id";
/// Parameters with this prefix (the sidecars' `--extra-create-metadata`) become metadata.
const K8S_PREFIX: &str = "csi.storage.k8s.io/";

/// Snapshot statuses that mean "on its way out": hidden from lists and lookups.
const GOING: [&str; 2] = ["deleting", "deleted"];

/// The Cinder backend of one configured instance.
pub struct CinderBackend {
    client: Arc<CinderClient>,
    /// Nova, through which volumes are attached to nodes (see `nova`).
    nova: nova::Nova,
    cluster_id: Option<String>,
    /// Backends acting with request secrets, by a hash of the secrets (their tokens are
    /// cached like this one's).
    scoped: Mutex<HashMap<u64, Arc<CinderBackend>>>,
}

impl CinderBackend {
    /// A backend for `config`; `cluster_id` tags what it creates.
    pub fn new(config: CinderConfig, cluster_id: Option<String>) -> Result<Self, String> {
        config
            .validate()
            .map_err(|e| format!("{}: {}", e.key, e.message))?;
        let client = Arc::new(CinderClient::new(Arc::new(config))?);
        Ok(Self {
            nova: nova::Nova::new(Arc::clone(&client)),
            client,
            cluster_id,
            scoped: Mutex::default(),
        })
    }

    /// The raw client (for call counts in tests and benchmarks).
    pub fn client(&self) -> &CinderClient {
        &self.client
    }

    fn dialect(&self) -> Dialect {
        self.client.config().dialect
    }

    /// `name` in v2/v3, `display_name` in the v1 dialect.
    fn name_field(&self) -> &'static str {
        match self.dialect() {
            Dialect::V1 => "display_name",
            _ => "name",
        }
    }

    fn description_field(&self) -> &'static str {
        match self.dialect() {
            Dialect::V1 => "display_description",
            _ => "description",
        }
    }

    fn wait(&self, seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    /// Tags for a new object. v3 stores them as metadata; the v2 and v1 documents (seeds 004,
    /// 001) define no metadata on create, so there they go into the description.
    fn tags(&self, name: &str, parameters: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut tags = BTreeMap::new();
        tags.insert(NAME_TAG.to_owned(), name.to_owned());
        if let Some(c) = &self.cluster_id {
            tags.insert(CLUSTER_TAG.to_owned(), c.clone());
        }
        for (k, v) in parameters {
            if k.starts_with(K8S_PREFIX) {
                tags.insert(k.clone(), v.clone());
            }
        }
        tags
    }

    fn describe(&self, what: &str, tags: &BTreeMap<String, String>) -> String {
        let mut text = format!("snapcsi {what}");
        if self.dialect() != Dialect::V3 {
            for (k, v) in tags {
                text.push_str(&format!(" {k}={v}"));
            }
        }
        text
    }

    /// Whether an object found by name is ours: same name and, when both sides know a
    /// cluster id, the same cluster.
    fn ours(&self, object: &Value, name: &str) -> bool {
        if object[self.name_field()].as_str() != Some(name) {
            return false;
        }
        match (&self.cluster_id, object["metadata"][CLUSTER_TAG].as_str()) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => true,
        }
    }

    pub(crate) fn snapshot_of(&self, s: &Value) -> BackendResult<Snapshot> {
        let id = text(s, "id", "snapshot")?;
        let status = s["status"].as_str().unwrap_or("unknown");
        Ok(Snapshot {
            id: SnapshotId::new(id),
            name: s[self.name_field()].as_str().unwrap_or_default().to_owned(),
            source_volume_id: VolumeId::new(text(s, "volume_id", "snapshot")?),
            size_bytes: s["size"].as_u64().unwrap_or(0).saturating_mul(GIB),
            created_at: s["created_at"]
                .as_str()
                .and_then(client::parse_time)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            ready: status == "available",
            group_snapshot_id: None,
        })
    }

    pub(crate) fn volume_of(&self, v: &Value) -> BackendResult<Volume> {
        let id = text(v, "id", "volume")?;
        let source = if let Some(s) = v["snapshot_id"].as_str() {
            Some(VolumeSource::Snapshot(SnapshotId::new(s)))
        } else {
            v["source_volid"]
                .as_str()
                .map(|s| VolumeSource::Volume(VolumeId::new(s)))
        };
        Ok(Volume {
            id: VolumeId::new(id),
            name: v[self.name_field()].as_str().unwrap_or_default().to_owned(),
            size_bytes: v["size"].as_u64().unwrap_or(0).saturating_mul(GIB),
            source,
            // An attached volume is as usable as an available one.
            ready: v["status"] == "available" || v["status"] == "in-use",
            zone: v["availability_zone"].as_str().map(str::to_owned),
        })
    }

    async fn get_raw(&self, kind: Kind, id: &str) -> BackendResult<Option<Value>> {
        if !plausible_id(id) {
            return Ok(None);
        }
        let path = format!("/{}/{}", kind.collection(), encode(id));
        let answer = self
            .client
            .call(kind.get_op(), Method::GET, &path, None, &[404])
            .await?;
        if answer.status == 404 {
            return Ok(None);
        }
        Ok(Some(answer.body[kind.singular()].clone()))
    }

    /// The object of `kind` that answers for `name`: among the not-going ones Cinder's `name`
    /// filter finds, the oldest (`backend::names`; Cinder lists newest first).
    async fn by_name(&self, kind: Kind, name: &str) -> BackendResult<Option<Value>> {
        let path = format!(
            "/{}/detail?{}={}",
            kind.collection(),
            self.name_field(),
            encode(name)
        );
        let answer = self
            .client
            .call(kind.find_op(), Method::GET, &path, None, &[])
            .await?;
        let list = answer.body[kind.collection()]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let found = list
            .into_iter()
            .filter(|o| self.ours(o, name))
            .filter(|o| !GOING.contains(&o["status"].as_str().unwrap_or_default()))
            .map(|o| Found {
                id: o["id"].as_str().unwrap_or_default().to_owned(),
                created_at: o["created_at"].as_str().and_then(client::parse_time),
                object: o,
            })
            .collect();
        Ok(names::pick("cinder", kind.singular(), name, found))
    }

    /// One page of `kind` through Cinder's `limit`/`marker`. Asks for one more than wanted to
    /// know whether another page exists without an empty last page.
    async fn page(
        &self,
        kind: Kind,
        extra: &[(&str, &str)],
        page: &PageRequest,
    ) -> BackendResult<Page<Value>> {
        let mut query = vec![format!("limit={}", page.max_entries.saturating_add(1))];
        if let Some(marker) = &page.cursor {
            if !plausible_id(marker) {
                return Err(BackendError::new(
                    ErrorKind::InvalidCursor,
                    format!("{marker:?} is not a Cinder marker"),
                ));
            }
            query.push(format!("marker={}", encode(marker)));
        }
        for (k, v) in extra {
            query.push(format!("{k}={}", encode(v)));
        }
        let path = format!("/{}/detail?{}", kind.collection(), query.join("&"));
        let answer = match self
            .client
            .call(kind.list_op(), Method::GET, &path, None, &[])
            .await
        {
            // Cinder answers a marker it does not know with 404.
            Err(e) if e.kind == ErrorKind::NotFound && page.cursor.is_some() => {
                return Err(BackendError::new(ErrorKind::InvalidCursor, e.message));
            }
            other => other?,
        };
        Ok(page_of(kind, &answer.body, page.max_entries))
    }

    /// Polls `id` until `done` says so, with backoff, for at most `limit`. Answers the last
    /// state seen (`None`: the object is gone).
    async fn poll(
        &self,
        kind: Kind,
        id: &str,
        limit: Duration,
        done: impl Fn(Option<&Value>) -> bool,
    ) -> BackendResult<Option<Value>> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let current = self.get_raw(kind, id).await?;
            if done(current.as_ref()) || started.elapsed() >= limit {
                return Ok(current);
            }
            tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// A volume found or created, once it settled: ready, still creating (UNAVAILABLE, the
    /// provisioner calls again), or failed (deleted, so the next attempt starts clean).
    async fn settle_volume(&self, volume: Value) -> BackendResult<Volume> {
        let id = text(&volume, "id", "volume")?;
        let settled = if is_settled(&volume) {
            Some(volume)
        } else {
            let limit = self.wait(self.client.config().volume_wait_seconds);
            self.poll(Kind::Volume, &id, limit, |v| v.is_none_or(is_settled))
                .await?
        };
        let Some(volume) = settled else {
            return Err(BackendError::new(
                ErrorKind::Unavailable,
                format!("cinder volume {id} disappeared while being created"),
            ));
        };
        match volume["status"].as_str().unwrap_or("unknown") {
            "available" | "in-use" | "attaching" | "detaching" | "reserved" => {
                self.volume_of(&volume)
            }
            "error" | "error_restoring" | "error_extending" => {
                let status = volume["status"].as_str().unwrap_or("error").to_owned();
                // Never usable: remove it so that the provisioner's next attempt starts over.
                if let Err(e) = self
                    .client
                    .call(
                        "delete failed volume",
                        Method::DELETE,
                        &format!("/volumes/{}", encode(&id)),
                        None,
                        &[404],
                    )
                    .await
                {
                    tracing::warn!(volume = %id, error = %e, "could not delete a failed volume");
                }
                Err(bad_status("volume", &id, &status))
            }
            status => Err(BackendError::new(
                ErrorKind::Unavailable,
                format!(
                    "cinder volume {id} is still {status:?} after {}s; the call will be \
                     repeated",
                    self.client.config().volume_wait_seconds
                ),
            )),
        }
    }

    /// Deletes `id` of `kind` and waits (bounded) until Cinder no longer has it.
    async fn delete_object(&self, kind: Kind, id: &str) -> BackendResult<()> {
        let Some(mut current) = self.get_raw(kind, id).await? else {
            return Ok(());
        };
        let limit = self.wait(self.client.config().delete_wait_seconds);
        if !is_settled(&current) {
            // Cinder refuses to delete what is still being created ("status must be available
            // or error"): a delete right after a create waits for it to settle first.
            match self
                .poll(kind, id, limit, |o| o.is_none_or(is_settled))
                .await?
            {
                None => return Ok(()),
                Some(o) if !is_settled(&o) => {
                    return Err(BackendError::new(
                        ErrorKind::Unavailable,
                        format!(
                            "cinder {} {id} is still {} after {}s; the delete will be repeated",
                            kind.singular(),
                            o["status"],
                            self.client.config().delete_wait_seconds
                        ),
                    ));
                }
                Some(o) => current = o,
            }
        }
        let status = current["status"].as_str().unwrap_or("unknown").to_owned();
        if status == "error_deleting" {
            return Err(BackendError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "cinder {} {id} is in status \"error_deleting\": Cinder failed to delete \
                     it; an operator must reset its state",
                    kind.singular()
                ),
            ));
        }
        if !GOING.contains(&status.as_str()) {
            let path = format!("/{}/{}", kind.collection(), encode(id));
            let answer = self
                .client
                .call(kind.delete_op(), Method::DELETE, &path, None, &[404])
                .await?;
            if answer.status == 404 {
                return Ok(());
            }
        }
        let last = self
            .poll(kind, id, limit, |o| {
                o.is_none_or(|o| o["status"] == "error_deleting")
            })
            .await?;
        match last {
            None => Ok(()),
            Some(o) if o["status"] == "error_deleting" => Err(BackendError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "cinder could not delete {} {id}: its status is \"error_deleting\"",
                    kind.singular()
                ),
            )),
            Some(o) => Err(BackendError::new(
                ErrorKind::Unavailable,
                format!(
                    "cinder {} {id} is still {} after {}s; the delete will be repeated",
                    kind.singular(),
                    o["status"],
                    self.client.config().delete_wait_seconds
                ),
            )),
        }
    }
}

/// One page of `kind` from a list answer that was asked for `max_entries + 1` items: the
/// objects that are not going away, and the marker of the next page when there is one.
pub(crate) fn page_of(kind: Kind, body: &Value, max_entries: usize) -> Page<Value> {
    let mut raw = body[kind.collection()]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has_next_link = body[format!("{}_links", kind.collection())]
        .as_array()
        .is_some_and(|links| links.iter().any(|l| l["rel"] == "next"));
    let more = if raw.len() > max_entries {
        raw.truncate(max_entries);
        true
    } else {
        // The server capped the page below what we asked for (osapi_max_limit).
        has_next_link && !raw.is_empty()
    };
    let next_cursor = if more {
        raw.last().and_then(|o| o["id"].as_str()).map(str::to_owned)
    } else {
        None
    };
    let items = raw
        .into_iter()
        .filter(|o| !GOING.contains(&o["status"].as_str().unwrap_or_default()))
        .collect();
    Page { items, next_cursor }
}

fn is_settled(v: &Value) -> bool {
    !matches!(
        v["status"].as_str(),
        Some("creating" | "downloading" | "extending" | "restoring-backup")
    )
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Volume,
    Snapshot,
}

impl Kind {
    fn collection(self) -> &'static str {
        match self {
            Kind::Volume => "volumes",
            Kind::Snapshot => "snapshots",
        }
    }
    fn singular(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Snapshot => "snapshot",
        }
    }
    fn get_op(self) -> &'static str {
        match self {
            Kind::Volume => "get volume",
            Kind::Snapshot => "get snapshot",
        }
    }
    fn find_op(self) -> &'static str {
        match self {
            Kind::Volume => "find volume by name",
            Kind::Snapshot => "find snapshot by name",
        }
    }
    fn list_op(self) -> &'static str {
        match self {
            Kind::Volume => "list volumes",
            Kind::Snapshot => "list snapshots",
        }
    }
    fn delete_op(self) -> &'static str {
        match self {
            Kind::Volume => "delete volume",
            Kind::Snapshot => "delete snapshot",
        }
    }
}

fn text(o: &Value, key: &str, what: &str) -> BackendResult<String> {
    o[key].as_str().map(str::to_owned).ok_or_else(|| {
        BackendError::internal(format!("cinder answered a {what} without a {key:?} string"))
    })
}

/// Cinder ids are UUIDs; anything else cannot name an object (and must not reach a URL
/// unchecked).
pub(crate) fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Percent-encodes a query or path value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_bool(key: &str, value: &str) -> BackendResult<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(BackendError::new(
            ErrorKind::InvalidArgument,
            format!("parameters.{key}: {value:?} is not true or false"),
        )),
    }
}

fn unknown_parameter(key: &str, known: &str) -> BackendError {
    BackendError::new(
        ErrorKind::InvalidArgument,
        format!("parameters.{key}: not a Cinder parameter (known: {known}, {K8S_PREFIX}*)"),
    )
}

fn gib_of(bytes: u64) -> u64 {
    bytes.div_ceil(GIB).max(1)
}

#[async_trait]
impl Backend for CinderBackend {
    fn kind(&self) -> &'static str {
        "cinder"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            create_delete_volume: true,
            create_delete_snapshot: true,
            restore_snapshot: true,
            clone_volume: true,
            // os-extend is a v2/v3 volume action; the v1 dialect has none.
            expand_volume: self.dialect() != Dialect::V1,
            // Free space is an admin-only scheduler statistic in Cinder.
            get_capacity: false,
            size_granularity_bytes: GIB,
            min_volume_bytes: 0,
            node_local: false,
            group_snapshot: false,
            snapshot_metadata: false,
            attach: self.client.config().attaches(),
            zones: self.client.config().attaches() && self.client.config().topology,
        }
    }

    fn with_secrets(&self, secrets: &Secrets) -> BackendResult<Option<Arc<dyn Backend>>> {
        let config = self.client.config().with_secrets(secrets).map_err(|e| {
            BackendError::new(
                ErrorKind::InvalidArgument,
                format!("{}: {}", e.key, e.message),
            )
        })?;
        let Some(config) = config else {
            return Ok(None);
        };
        // Key the cache by every secret value that shaped the config; the hash stays in memory.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for key in secrets.keys() {
            key.hash(&mut hasher);
            if let Some(v) = secrets.get(key) {
                v.expose().hash(&mut hasher);
            }
        }
        let key = hasher.finish();
        let mut cache = self.scoped.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = cache.get(&key) {
            return Ok(Some(Arc::clone(b) as Arc<dyn Backend>));
        }
        let backend = Arc::new(
            CinderBackend::new(config, self.cluster_id.clone())
                .map_err(|m| BackendError::new(ErrorKind::InvalidArgument, m))?,
        );
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&backend));
        Ok(Some(backend as Arc<dyn Backend>))
    }

    fn api_version(&self) -> Option<String> {
        self.client.api_version()
    }

    async fn health(&self) -> BackendResult<()> {
        self.client
            .call("health", Method::GET, "/snapshots?limit=1", None, &[])
            .await
            .map(|_| ())
    }

    async fn available_capacity(&self) -> BackendResult<Option<u64>> {
        Ok(None)
    }

    async fn create_volume(&self, request: &CreateVolume) -> BackendResult<Volume> {
        let config = self.client.config();
        let mut volume_type = config.default_volume_type.clone();
        // The topology's zone, unless the class names one; the configured default last.
        let mut zone = request
            .zone
            .clone()
            .filter(|_| config.topology)
            .or_else(|| config.default_availability_zone.clone());
        for (k, v) in &request.parameters {
            match k.as_str() {
                "type" | "volume_type" => volume_type = Some(v.clone()),
                "availability" | "availability_zone" => zone = Some(v.clone()),
                _ if k.starts_with(K8S_PREFIX) => {}
                _ => {
                    return Err(unknown_parameter(
                        k,
                        "type, volume_type, availability, availability_zone",
                    ));
                }
            }
        }
        let tags = self.tags(&request.name, &request.parameters);
        let mut body = Map::new();
        body.insert(self.name_field().into(), json!(request.name));
        body.insert(
            self.description_field().into(),
            json!(self.describe("volume", &tags)),
        );
        body.insert("size".into(), json!(gib_of(request.size_bytes)));
        if self.dialect() == Dialect::V3 {
            body.insert("metadata".into(), json!(tags));
        }
        if let Some(t) = volume_type {
            body.insert("volume_type".into(), json!(t));
        }
        if let Some(z) = zone {
            body.insert("availability_zone".into(), json!(z));
        }
        match &request.source {
            Some(VolumeSource::Snapshot(id)) => {
                body.insert("snapshot_id".into(), json!(id.as_str()));
            }
            Some(VolumeSource::Volume(id)) => {
                body.insert("source_volid".into(), json!(id.as_str()));
            }
            None => {}
        }
        let body = json!({ "volume": body });
        let answer: Answer = self
            .client
            .call("create volume", Method::POST, "/volumes", Some(&body), &[])
            .await?;
        let created = answer.body["volume"].clone();
        self.settle_volume(created).await
    }

    async fn get_volume(&self, id: &VolumeId) -> BackendResult<Option<Volume>> {
        match self.get_raw(Kind::Volume, id.as_str()).await? {
            Some(v) if !GOING.contains(&v["status"].as_str().unwrap_or_default()) => {
                Ok(Some(self.volume_of(&v)?))
            }
            _ => Ok(None),
        }
    }

    async fn find_volume_by_name(&self, name: &str) -> BackendResult<Option<Volume>> {
        match self.by_name(Kind::Volume, name).await? {
            None => Ok(None),
            // A repeated CreateVolume: wait for the first one like the first call did.
            Some(v) => self.settle_volume(v).await.map(Some),
        }
    }

    async fn delete_volume(&self, id: &VolumeId) -> BackendResult<()> {
        self.delete_object(Kind::Volume, id.as_str()).await
    }

    async fn expand_volume(&self, id: &VolumeId, new_size_bytes: u64) -> BackendResult<u64> {
        if self.dialect() == Dialect::V1 {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                "the Cinder v1 dialect has no volume extend action",
            ));
        }
        let gib = gib_of(new_size_bytes);
        let path = format!("/volumes/{}/action", encode(id.as_str()));
        let body = json!({ "os-extend": { "new_size": gib } });
        match self
            .client
            .call("extend volume", Method::POST, &path, Some(&body), &[])
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(BackendError::not_found(format!(
                    "volume {id} does not exist ({})",
                    e.message
                )));
            }
            Err(e) => return Err(e),
        }
        let limit = self.wait(self.client.config().volume_wait_seconds);
        let last = self
            .poll(Kind::Volume, id.as_str(), limit, |v| {
                v.is_none_or(|v| v["status"] != "extending")
            })
            .await?;
        match last {
            None => Err(BackendError::not_found(format!(
                "volume {id} disappeared while being extended"
            ))),
            Some(v) if v["status"] == "extending" => Err(BackendError::new(
                ErrorKind::Unavailable,
                format!("cinder volume {id} is still extending; the call will be repeated"),
            )),
            Some(v) if v["status"] == "error_extending" => {
                Err(bad_status("volume", id.as_str(), "error_extending"))
            }
            Some(v) => {
                let size = v["size"].as_u64().unwrap_or(0);
                if size < gib {
                    return Err(BackendError::internal(format!(
                        "cinder volume {id} is {size} GiB after extending to {gib} GiB"
                    )));
                }
                Ok(size * GIB)
            }
        }
    }

    async fn list_volumes(&self, page: &PageRequest) -> BackendResult<Page<Volume>> {
        let raw = self.page(Kind::Volume, &[], page).await?;
        Ok(Page {
            items: raw
                .items
                .iter()
                .map(|v| self.volume_of(v))
                .collect::<BackendResult<_>>()?,
            next_cursor: raw.next_cursor,
        })
    }

    async fn create_snapshot(&self, request: &CreateSnapshot) -> BackendResult<Snapshot> {
        let mut force = false;
        let mut description = None;
        for (k, v) in &request.parameters {
            match k.as_str() {
                "force" => force = parse_bool(k, v)?,
                "description" => description = Some(v.clone()),
                _ if k.starts_with(K8S_PREFIX) => {}
                _ => return Err(unknown_parameter(k, "force, description")),
            }
        }
        let tags = self.tags(&request.name, &request.parameters);
        let description = match description {
            Some(d) if self.dialect() == Dialect::V3 => d,
            Some(d) => format!("{d} ({})", self.describe("snapshot", &tags)),
            None => self.describe("snapshot", &tags),
        };
        let mut body = Map::new();
        body.insert(self.name_field().into(), json!(request.name));
        body.insert(self.description_field().into(), json!(description));
        body.insert("volume_id".into(), json!(request.source_volume_id.as_str()));
        if self.dialect() == Dialect::V3 {
            body.insert("metadata".into(), json!(tags));
        }
        if force && self.dialect() == Dialect::V1 {
            // Seed 001 documents no `force` on the v1 dialect's snapshot create.
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                "parameters.force: the Cinder v1 dialect has no force flag; detach the volume \
                 or use the v2/v3 dialect",
            ));
        }
        if force {
            // 3.66+: in-use volumes are snapshotted without the flag (and `force: false` is
            // refused); earlier, and in v2/v1, the flag is what allows it.
            let microversion = self.client.session().await?.microversion;
            let needs_flag =
                self.dialect() != Dialect::V3 || microversion.is_none_or(|m| m < SNAPSHOT_IN_USE);
            if needs_flag {
                body.insert("force".into(), json!(true));
            }
        }
        let body = json!({ "snapshot": body });
        let answer = self
            .client
            .call(
                "create snapshot",
                Method::POST,
                "/snapshots",
                Some(&body),
                &[],
            )
            .await?;
        let created = &answer.body["snapshot"];
        let snapshot = self.snapshot_of(created)?;
        if created["status"] == "error" {
            return Err(bad_status("snapshot", snapshot.id.as_str(), "error"));
        }
        Ok(snapshot)
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> BackendResult<Option<Snapshot>> {
        match self.get_raw(Kind::Snapshot, id.as_str()).await? {
            Some(s) if !GOING.contains(&s["status"].as_str().unwrap_or_default()) => {
                Ok(Some(self.snapshot_of(&s)?))
            }
            _ => Ok(None),
        }
    }

    async fn publish_volume(&self, request: &PublishVolume) -> BackendResult<PublishContext> {
        self.attach(request).await
    }

    async fn unpublish_volume(&self, volume: &VolumeId, node_id: &str) -> BackendResult<()> {
        self.detach(volume.as_str(), node_id).await
    }

    async fn node_zone(&self, node_id: &str) -> BackendResult<Option<String>> {
        self.server_zone(node_id).await
    }

    async fn find_snapshot_by_name(&self, name: &str) -> BackendResult<Option<Snapshot>> {
        let Some(s) = self.by_name(Kind::Snapshot, name).await? else {
            return Ok(None);
        };
        let snapshot = self.snapshot_of(&s)?;
        match s["status"].as_str().unwrap_or("unknown") {
            "error" | "error_deleting" => Err(bad_status(
                "snapshot",
                snapshot.id.as_str(),
                s["status"].as_str().unwrap_or("error"),
            )),
            _ => Ok(Some(snapshot)),
        }
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> BackendResult<()> {
        self.delete_object(Kind::Snapshot, id.as_str()).await
    }

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: &PageRequest,
    ) -> BackendResult<Page<Snapshot>> {
        let volume = filter.source_volume_id.as_ref().map(|v| v.as_str());
        if volume.is_some_and(|v| !plausible_id(v)) {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        let extra: Vec<(&str, &str)> = volume.map(|v| ("volume_id", v)).into_iter().collect();
        let raw = self.page(Kind::Snapshot, &extra, page).await?;
        Ok(Page {
            items: raw
                .items
                .iter()
                .map(|s| self.snapshot_of(s))
                .collect::<BackendResult<_>>()?,
            next_cursor: raw.next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded() {
        assert_eq!(encode("a b/c&d"), "a%20b%2Fc%26d");
        assert_eq!(encode("snap-1_x.y~"), "snap-1_x.y~");
    }

    #[test]
    fn sizes_round_up_to_gib() {
        assert_eq!(gib_of(1), 1);
        assert_eq!(gib_of(GIB), 1);
        assert_eq!(gib_of(GIB + 1), 2);
    }

    #[test]
    fn only_uuid_like_ids_reach_a_url() {
        assert!(plausible_id("6f74cbd3-a80b-4c73-bc6e-ee7684c49516"));
        assert!(!plausible_id("../volumes"));
        assert!(!plausible_id(""));
    }
}
