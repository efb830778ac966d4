//! Apache Deltacloud: snapshots and volumes of whatever cloud a Deltacloud server fronts
//! (picked with `X-Deltacloud-Driver` / `X-Deltacloud-Provider`).
//!
//! Idempotency by name. Deltacloud cannot filter by name, and many drivers do not keep the
//! `name` a client sends: their `<name>` element holds the id. What they keep is the
//! `description`, so snapcsi writes a marker there — `snapcsi:` followed by JSON with the CSI
//! name, the cluster id, the size in GiB and (for a restored volume) the source snapshot —
//! and finds an object by name by reading the whole collection and matching the marker.
//! The cloud, not driver memory, holds the name, so a restart never makes a duplicate, with
//! one limit: a create whose object is not yet listed when the sidecar retries (a cloud with
//! eventually consistent lists) could be repeated. A driver that drops descriptions is
//! detected at the first create (the answer lacks the marker): the object is deleted again
//! and the call fails with UNIMPLEMENTED rather than risk duplicates.
//!
//! Paging. Deltacloud lists have no paging: every list reads the whole collection, sorts it
//! by id and serves the page after the cursor (the last id served), so a deletion between
//! pages never skips an item. Collections larger than `max_list_items` are refused loudly.

pub mod client;
pub mod config;
pub mod error;

use crate::backend::names::{self, Found};
use crate::backend::{
    Backend, BackendError, BackendResult, Capabilities, CreateSnapshot, CreateVolume, ErrorKind,
    Page, PageRequest, Snapshot, SnapshotFilter, SnapshotId, Volume, VolumeId, VolumeSource,
};
use crate::http::HttpClient;
use crate::secret::{Secret, Secrets};
use async_trait::async_trait;
use client::{DeltacloudClient, JsonSnapshot, XmlVolume};
pub use config::DeltacloudConfig;
use error::state_error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

const GIB: u64 = 1 << 30;

/// Request secret that replaces the configured user (CSI `secrets`).
pub const SECRET_USERNAME: &str = "username";
/// Request secret that replaces the configured password.
pub const SECRET_PASSWORD: &str = "password";

/// Parameter prefix of the tags the sidecars add; ignored (no room in a description).
const CSI_PARAMETER_PREFIX: &str = "csi.storage.k8s.io/";
/// StorageClass parameter choosing the realm of a new volume.
const REALM_PARAMETER: &str = "realm_id";

/// Prefix of snapcsi's marker in a `description`.
const MARKER_PREFIX: &str = "snapcsi:";

/// What snapcsi keeps in an object's `description`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Marker {
    /// CSI name.
    #[serde(rename = "n")]
    name: String,
    /// `cluster_id` of the config file.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    /// Size in GiB (a snapshot's is its volume's: the smallest volume it restores into).
    #[serde(rename = "g")]
    gib: u64,
    /// The snapshot a volume was restored from.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

impl Marker {
    fn text(&self) -> BackendResult<String> {
        let json = serde_json::to_string(self)
            .map_err(|e| BackendError::internal(format!("description marker: {e}")))?;
        Ok(format!("{MARKER_PREFIX}{json}"))
    }

    fn parse(description: Option<&str>) -> Option<Marker> {
        let json = description?.trim().strip_prefix(MARKER_PREFIX)?;
        serde_json::from_str(json).ok()
    }
}

/// How a cloud state word reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    Pending,
    Failed,
}

/// The state words Deltacloud passes through from the drivers, in any case.
fn readiness(state: Option<&str>) -> Readiness {
    let Some(state) = state else {
        return Readiness::Pending;
    };
    match state.trim().to_ascii_lowercase().as_str() {
        "completed" | "available" | "in-use" | "in_use" | "ready" => Readiness::Ready,
        "error" | "failed" | "error_deleting" => Readiness::Failed,
        // pending, creating, queued, deleting, and anything new: not usable (yet).
        _ => Readiness::Pending,
    }
}

/// The Deltacloud backend.
pub struct DeltacloudBackend {
    client: DeltacloudClient,
    cluster_id: Option<String>,
    realm_id: Option<String>,
    max_list_items: usize,
}

impl DeltacloudBackend {
    /// A backend for the server in `config`; `cluster_id` goes into every marker.
    pub fn new(config: &DeltacloudConfig, cluster_id: Option<String>) -> Result<Self, String> {
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| format!("endpoint {:?}: {e}", config.endpoint))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "endpoint {:?}: not an http(s) URL",
                config.endpoint
            ));
        }
        if config.username.trim().is_empty() {
            return Err("username: must not be empty".into());
        }
        if config.max_list_items == 0 {
            return Err("max_list_items: must be at least 1".into());
        }
        let http = HttpClient::new(&config.http, "deltacloud")?;
        Ok(Self {
            client: DeltacloudClient::new(
                http,
                &config.endpoint,
                config.username.clone(),
                config.password.clone(),
                config.driver.clone(),
                config.provider.clone(),
            ),
            cluster_id,
            realm_id: config.realm_id.clone(),
            max_list_items: config.max_list_items,
        })
    }

    fn mine(&self, marker: &Marker) -> bool {
        marker.cluster == self.cluster_id
    }

    pub(crate) fn capped<T>(&self, what: &str, items: Vec<T>) -> BackendResult<Vec<T>> {
        if items.len() > self.max_list_items {
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                format!(
                    "deltacloud: the {what} collection holds {} objects, above max_list_items \
                     {} (Deltacloud has no paging; raise the limit in the config)",
                    items.len(),
                    self.max_list_items
                ),
            ));
        }
        Ok(items)
    }

    pub(crate) fn snapshot_of(&self, s: &JsonSnapshot) -> Snapshot {
        let marker = Marker::parse(s.description.as_deref());
        Snapshot {
            id: SnapshotId::new(&s.id),
            name: marker.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            source_volume_id: VolumeId::new(&s.storage_volume.id),
            size_bytes: marker.map_or(0, |m| m.gib.saturating_mul(GIB)),
            created_at: s
                .created
                .as_deref()
                .and_then(client::parse_created)
                .unwrap_or(std::time::UNIX_EPOCH),
            ready: readiness(s.state.as_deref()) == Readiness::Ready,
            group_snapshot_id: None,
        }
    }

    pub(crate) fn volume_of(v: &XmlVolume) -> Volume {
        let marker = Marker::parse(v.description.as_deref());
        let size = capacity_gib(v).unwrap_or(0).saturating_mul(GIB);
        Volume {
            id: VolumeId::new(&v.id),
            name: marker.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            size_bytes: size,
            source: marker
                .and_then(|m| m.source)
                .map(|s| VolumeSource::Snapshot(SnapshotId::new(s))),
            ready: readiness(v.state.as_deref()) == Readiness::Ready,
            zone: None,
        }
    }

    fn check_parameters(
        parameters: &BTreeMap<String, String>,
        allowed: &[&str],
    ) -> BackendResult<()> {
        for key in parameters.keys() {
            if !key.starts_with(CSI_PARAMETER_PREFIX) && !allowed.contains(&key.as_str()) {
                return Err(BackendError::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "parameters.{key}: not a parameter of the deltacloud backend (known: \
                         {allowed:?})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn capacity_gib(v: &XmlVolume) -> Option<u64> {
    let capacity = v.capacity.as_ref()?;
    let n: f64 = capacity.value.trim().parse().ok()?;
    let gib = match capacity
        .unit
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("GB") | Some("GIB") => n,
        Some("MB") | Some("MIB") => n / 1024.0,
        Some("TB") | Some("TIB") => n * 1024.0,
        Some(_) => return None,
    };
    Some(gib.ceil() as u64)
}

/// Cursor: `after:<id>` — the last id served, in id order.
pub(crate) fn page_by_id<T: Clone>(
    mut items: Vec<(String, T)>,
    page: &PageRequest,
) -> BackendResult<Page<T>> {
    let after = match &page.cursor {
        None => None,
        Some(c) => Some(c.strip_prefix("after:").ok_or_else(|| {
            BackendError::new(
                ErrorKind::InvalidCursor,
                format!("{c:?} is not a position in this Deltacloud list"),
            )
        })?),
    };
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rest = items
        .into_iter()
        .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a))
        .peekable();
    let mut out = Vec::new();
    let mut last = None;
    while out.len() < page.max_entries {
        let Some((id, item)) = rest.next() else {
            break;
        };
        last = Some(id);
        out.push(item);
    }
    let more = rest.peek().is_some();
    Ok(Page {
        items: out,
        next_cursor: if more {
            last.map(|id| format!("after:{id}"))
        } else {
            None
        },
    })
}

#[async_trait]
impl Backend for DeltacloudBackend {
    fn kind(&self) -> &'static str {
        "deltacloud"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            create_delete_volume: true,
            create_delete_snapshot: true,
            restore_snapshot: true,
            // Deltacloud has no volume copy and no resize call.
            clone_volume: false,
            expand_volume: false,
            get_capacity: false,
            size_granularity_bytes: GIB,
            min_volume_bytes: 0,
            node_local: false,
            group_snapshot: false,
            snapshot_metadata: false,
            attach: false,
            zones: false,
        }
    }

    fn with_secrets(&self, secrets: &Secrets) -> BackendResult<Option<Arc<dyn Backend>>> {
        match (secrets.get(SECRET_USERNAME), secrets.get(SECRET_PASSWORD)) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) if !user.is_empty() => {
                Ok(Some(Arc::new(DeltacloudBackend {
                    client: self
                        .client
                        .with_credentials(user.expose().to_owned(), Secret::new(password.expose())),
                    cluster_id: self.cluster_id.clone(),
                    realm_id: self.realm_id.clone(),
                    max_list_items: self.max_list_items,
                })))
            }
            _ => Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "secrets: the deltacloud backend needs both {SECRET_USERNAME:?} and \
                     {SECRET_PASSWORD:?} or neither; got keys {:?}",
                    secrets.keys().collect::<Vec<_>>()
                ),
            )),
        }
    }

    /// One authenticated call (`GET /api/realms`; the entry point answers without
    /// credentials, so it cannot tell a refused password), which also shows whether the
    /// configured `realm_id` exists.
    async fn health(&self) -> BackendResult<()> {
        let realms = self.client.realms().await?;
        match &self.realm_id {
            Some(wanted) if !realms.iter().any(|r| &r.id == wanted) => Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "deltacloud: realm_id {wanted:?} is not a realm of this cloud (realms: {})",
                    realms
                        .iter()
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }

    async fn available_capacity(&self) -> BackendResult<Option<u64>> {
        Ok(None)
    }

    async fn create_volume(&self, request: &CreateVolume) -> BackendResult<Volume> {
        Self::check_parameters(&request.parameters, &[REALM_PARAMETER])?;
        let gib = request.size_bytes.div_ceil(GIB).max(1);
        let source = match &request.source {
            None => None,
            Some(VolumeSource::Snapshot(id)) => Some(id.as_str().to_owned()),
            Some(VolumeSource::Volume(_)) => {
                return Err(BackendError::new(
                    ErrorKind::Unsupported,
                    "deltacloud cannot clone volumes",
                ));
            }
        };
        let marker = Marker {
            name: request.name.clone(),
            cluster: self.cluster_id.clone(),
            gib,
            source: source.clone(),
        };
        let description = marker.text()?;
        let capacity = gib.to_string();
        let realm = request
            .parameters
            .get(REALM_PARAMETER)
            .or(self.realm_id.as_ref());
        let mut form: Vec<(&str, &str)> = vec![
            ("capacity", &capacity),
            ("name", &request.name),
            ("description", &description),
        ];
        if let Some(realm) = realm {
            form.push(("realm_id", realm));
        }
        if let Some(source) = &source {
            form.push(("snapshot_id", source));
        }
        let created = self.client.create_volume(&form).await.map_err(|e| {
            if e.kind == ErrorKind::NotFound {
                BackendError::not_found(format!(
                    "source snapshot {} does not exist",
                    source.as_deref().unwrap_or("")
                ))
            } else {
                e
            }
        })?;
        if Marker::parse(created.description.as_deref()).as_ref() != Some(&marker) {
            // Without the marker the volume could never be found by name again.
            self.client.delete_volume(&created.id).await?;
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                "deltacloud: the driver does not keep volume descriptions, so a volume cannot \
                 be found by its CSI name after a restart; refusing to create volumes",
            ));
        }
        if readiness(created.state.as_deref()) == Readiness::Failed {
            return Err(state_error("volume", &created.id, created.state.as_deref()));
        }
        Ok(Self::volume_of(&created))
    }

    async fn get_volume(&self, id: &VolumeId) -> BackendResult<Option<Volume>> {
        Ok(self
            .client
            .volume(id.as_str())
            .await?
            .map(|v| Self::volume_of(&v)))
    }

    async fn find_volume_by_name(&self, name: &str) -> BackendResult<Option<Volume>> {
        let volumes = self.capped("storage_volumes", self.client.volumes().await?)?;
        let found = volumes
            .iter()
            .filter(|v| {
                Marker::parse(v.description.as_deref())
                    .is_some_and(|m| m.name == name && self.mine(&m))
            })
            .map(|v| Found {
                id: v.id.clone(),
                created_at: v.created.as_deref().and_then(client::parse_created),
                object: v,
            })
            .collect();
        // Should an earlier race have made two, always answer with the same one.
        match names::pick("deltacloud", "volume", name, found) {
            None => Ok(None),
            Some(v) if readiness(v.state.as_deref()) == Readiness::Failed => {
                Err(state_error("volume", &v.id, v.state.as_deref()))
            }
            Some(v) => Ok(Some(Self::volume_of(v))),
        }
    }

    async fn delete_volume(&self, id: &VolumeId) -> BackendResult<()> {
        self.client.delete_volume(id.as_str()).await.map(|_| ())
    }

    async fn expand_volume(&self, _id: &VolumeId, _new_size_bytes: u64) -> BackendResult<u64> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "deltacloud has no call to resize a volume",
        ))
    }

    async fn list_volumes(&self, page: &PageRequest) -> BackendResult<Page<Volume>> {
        let volumes = self.capped("storage_volumes", self.client.volumes().await?)?;
        page_by_id(
            volumes
                .iter()
                .map(|v| (v.id.clone(), Self::volume_of(v)))
                .collect(),
            page,
        )
    }

    async fn create_snapshot(&self, request: &CreateSnapshot) -> BackendResult<Snapshot> {
        Self::check_parameters(&request.parameters, &[])?;
        let volume_id = request.source_volume_id.as_str();
        let missing =
            || BackendError::not_found(format!("source volume {volume_id} does not exist"));
        let volume = self.client.volume(volume_id).await?.ok_or_else(missing)?;
        let marker = Marker {
            name: request.name.clone(),
            cluster: self.cluster_id.clone(),
            gib: capacity_gib(&volume).unwrap_or(0),
            source: None,
        };
        let description = marker.text()?;
        let created = self
            .client
            .create_snapshot(volume_id, &request.name, &description)
            .await?;
        if Marker::parse(created.description.as_deref()).as_ref() != Some(&marker) {
            self.client.delete_snapshot(&created.id).await?;
            return Err(BackendError::new(
                ErrorKind::Unsupported,
                "deltacloud: the driver does not keep snapshot descriptions, so a snapshot \
                 cannot be found by its CSI name after a restart; refusing to create snapshots",
            ));
        }
        // The XML answer has no state: read it back as JSON. If that read fails, the
        // snapshot is reported not ready and the sidecar's next call finds it by name.
        match self.client.snapshot(&created.id).await {
            Ok(Some(current)) => {
                if readiness(current.state.as_deref()) == Readiness::Failed {
                    return Err(state_error(
                        "snapshot",
                        &current.id,
                        current.state.as_deref(),
                    ));
                }
                Ok(self.snapshot_of(&current))
            }
            Ok(None) | Err(_) => Ok(Snapshot {
                id: SnapshotId::new(&created.id),
                name: request.name.clone(),
                source_volume_id: VolumeId::new(&created.storage_volume.id),
                size_bytes: marker.gib.saturating_mul(GIB),
                created_at: created
                    .created
                    .as_deref()
                    .and_then(client::parse_created)
                    .unwrap_or(std::time::UNIX_EPOCH),
                ready: false,
                group_snapshot_id: None,
            }),
        }
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> BackendResult<Option<Snapshot>> {
        Ok(self
            .client
            .snapshot(id.as_str())
            .await?
            .map(|s| self.snapshot_of(&s)))
    }

    async fn find_snapshot_by_name(&self, name: &str) -> BackendResult<Option<Snapshot>> {
        let snapshots = self.capped("storage_snapshots", self.client.snapshots().await?)?;
        let found = snapshots
            .iter()
            .filter(|s| {
                Marker::parse(s.description.as_deref())
                    .is_some_and(|m| m.name == name && self.mine(&m))
            })
            .map(|s| Found {
                id: s.id.clone(),
                created_at: s.created.as_deref().and_then(client::parse_created),
                object: s,
            })
            .collect();
        match names::pick("deltacloud", "snapshot", name, found) {
            None => Ok(None),
            Some(s) if readiness(s.state.as_deref()) == Readiness::Failed => {
                Err(state_error("snapshot", &s.id, s.state.as_deref()))
            }
            Some(s) => Ok(Some(self.snapshot_of(s))),
        }
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> BackendResult<()> {
        self.client.delete_snapshot(id.as_str()).await.map(|_| ())
    }

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: &PageRequest,
    ) -> BackendResult<Page<Snapshot>> {
        let snapshots = self.capped("storage_snapshots", self.client.snapshots().await?)?;
        page_by_id(
            snapshots
                .iter()
                .filter(|s| {
                    filter
                        .source_volume_id
                        .as_ref()
                        .is_none_or(|v| v.as_str() == s.storage_volume.id)
                })
                .map(|s| (s.id.clone(), self.snapshot_of(s)))
                .collect(),
            page,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_readiness_in_any_case() {
        for ready in ["COMPLETED", "completed", "available", "AVAILABLE", "IN-USE"] {
            assert_eq!(readiness(Some(ready)), Readiness::Ready, "{ready}");
        }
        for pending in [
            "pending",
            "PENDING",
            "creating",
            "CREATING",
            "something-new",
        ] {
            assert_eq!(readiness(Some(pending)), Readiness::Pending, "{pending}");
        }
        assert_eq!(readiness(Some("ERROR")), Readiness::Failed);
        assert_eq!(readiness(None), Readiness::Pending);
    }

    #[test]
    fn marker_round_trips_and_ignores_other_descriptions() {
        let marker = Marker {
            name: "pvc-1".into(),
            cluster: Some("c".into()),
            gib: 3,
            source: Some("snap-1".into()),
        };
        let text = marker.text().expect("text");
        assert!(text.starts_with(MARKER_PREFIX));
        assert_eq!(Marker::parse(Some(&text)), Some(marker));
        assert_eq!(Marker::parse(Some("backup of db")), None);
        assert_eq!(Marker::parse(None), None);
    }

    #[test]
    fn pages_resume_after_the_last_id() {
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("id-{i}"), i)).collect();
        let first = page_by_id(
            items.clone(),
            &PageRequest {
                cursor: None,
                max_entries: 2,
            },
        )
        .expect("page");
        assert_eq!(first.items, vec![0, 1]);
        let cursor = first.next_cursor.expect("more");
        // id-2 deleted between pages: nothing is skipped.
        let rest: Vec<_> = items.into_iter().filter(|(id, _)| id != "id-2").collect();
        let second = page_by_id(
            rest,
            &PageRequest {
                cursor: Some(cursor),
                max_entries: 5,
            },
        )
        .expect("page");
        assert_eq!(second.items, vec![3, 4]);
        assert_eq!(second.next_cursor, None);
        let bad = page_by_id(
            Vec::<(String, u32)>::new(),
            &PageRequest {
                cursor: Some("garbage".into()),
                max_entries: 1,
            },
        );
        assert_eq!(bad.err().map(|e| e.kind), Some(ErrorKind::InvalidCursor));
    }
}
