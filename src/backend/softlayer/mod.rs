//! IBM SoftLayer (classic) Endurance/Performance block storage: snapshots of existing iSCSI
//! volumes through the `SoftLayer_Network_Storage_Iscsi` REST service.
//!
//! What works: CreateSnapshot (`createSnapshot`, the CSI name and tags kept as JSON in the
//! snapshot's `notes`), DeleteSnapshot (`deleteObject`), GetSnapshot and ListSnapshots
//! (`getSnapshotsForVolume` with `resultLimit` paging). Volumes are the account's existing
//! ones (statically provisioned PersistentVolumes whose handle is the SoftLayer volume id).
//!
//! Not offered, and why: creating or deleting volumes, restore and clone all go through
//! `SoftLayer_Product_Order::placeOrder` with package and price ids from the product catalogue
//! (restore is a duplicate-volume order with `duplicateOriginSnapshotId`) and cancellation
//! through billing items; none of that is documented in the seed, so it cannot be simulated
//! faithfully and is not advertised. `restoreFromSnapshot` reverts a volume in place, which
//! CSI has no call for.

pub mod client;
pub mod config;
pub mod error;

use crate::backend::names::{self, Found};
use crate::backend::{
    Backend, BackendError, BackendResult, Capabilities, CreateSnapshot, CreateVolume, ErrorKind,
    Page, PageRequest, Snapshot, SnapshotFilter, SnapshotId, Volume, VolumeId,
};
use crate::http::HttpClient;
use crate::secret::{Secret, Secrets};
use async_trait::async_trait;
use client::{SCAN_MASK, SoftLayerClient, Storage, VOLUME_MASK};
pub use config::SoftLayerConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

const GIB: u64 = 1 << 30;

/// Request secrets that replace the configured credentials (CSI `secrets`).
pub const SECRET_USERNAME: &str = "username";
/// See [`SECRET_USERNAME`].
pub const SECRET_API_KEY: &str = "api_key";

/// Parameter prefix of the tags the external-snapshotter adds; kept in the notes.
const CSI_PARAMETER_PREFIX: &str = "csi.storage.k8s.io/";

/// What snapcsi writes into a snapshot's `notes`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Notes {
    snapcsi: NotesBody,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct NotesBody {
    /// The CSI snapshot name.
    name: String,
    /// The configured `cluster_id`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    /// The sidecar's `csi.storage.k8s.io/...` parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
}

fn parse_notes(notes: Option<&str>) -> Option<NotesBody> {
    serde_json::from_str::<Notes>(notes?)
        .ok()
        .map(|n| n.snapcsi)
}

/// The SoftLayer backend.
pub struct SoftLayerBackend {
    client: SoftLayerClient,
    cluster_id: Option<String>,
    scan_page: usize,
}

impl SoftLayerBackend {
    /// A backend for the account in `config`; `cluster_id` tags what it creates.
    pub fn new(config: &SoftLayerConfig, cluster_id: Option<String>) -> Result<Self, String> {
        if config.username.trim().is_empty() {
            return Err("username: must not be empty".into());
        }
        if config.api_key.is_empty() {
            return Err("api_key: must not be empty".into());
        }
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| format!("endpoint {:?}: {e}", config.endpoint))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "endpoint {:?}: not an http(s) URL",
                config.endpoint
            ));
        }
        let http = HttpClient::new(&config.http, "softlayer")?;
        Ok(Self {
            client: SoftLayerClient::new(
                http,
                &config.endpoint,
                config.username.clone(),
                config.api_key.clone(),
            ),
            cluster_id,
            scan_page: config.scan_page_size.clamp(1, 1000),
        })
    }

    fn mine(&self, notes: &NotesBody) -> bool {
        notes.cluster == self.cluster_id
    }

    /// The snapshot record of a SoftLayer snapshot object; `volume` when the caller knows it.
    pub(crate) fn snapshot_of(&self, storage: &Storage, volume: Option<u64>) -> Option<Snapshot> {
        if !storage.is_snapshot() {
            return None;
        }
        let source = storage.parent_volume.as_ref().map(|p| p.id).or(volume)?;
        let name = parse_notes(storage.notes.as_deref())
            .map(|n| n.name)
            .unwrap_or_default();
        Some(Snapshot {
            id: SnapshotId::new(storage.id.to_string()),
            name,
            source_volume_id: VolumeId::new(source.to_string()),
            size_bytes: storage.capacity_gb.unwrap_or(0).saturating_mul(GIB),
            created_at: storage
                .create_date
                .as_deref()
                .and_then(client::parse_iso8601)
                .unwrap_or(std::time::UNIX_EPOCH),
            // A snapshot whose copy transaction still runs is not usable yet.
            ready: storage.active_transaction_count.unwrap_or(0) == 0,
            group_snapshot_id: None,
        })
    }

    pub(crate) fn volume_of(storage: &Storage) -> Option<Volume> {
        if storage.is_snapshot() {
            return None;
        }
        Some(Volume {
            id: VolumeId::new(storage.id.to_string()),
            name: storage.username.clone().unwrap_or_default(),
            size_bytes: storage.capacity_gb.unwrap_or(0).saturating_mul(GIB),
            source: None,
            ready: storage.active_transaction_count.unwrap_or(0) == 0,
            zone: None,
        })
    }

    fn tags(parameters: &BTreeMap<String, String>) -> BackendResult<BTreeMap<String, String>> {
        let mut tags = BTreeMap::new();
        for (key, value) in parameters {
            if !key.starts_with(CSI_PARAMETER_PREFIX) {
                return Err(BackendError::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "parameters.{key}: SoftLayer snapshots take no parameters (only the \
                         sidecar's {CSI_PARAMETER_PREFIX}* tags, kept in the notes)"
                    ),
                ));
            }
            tags.insert(key.clone(), value.clone());
        }
        Ok(tags)
    }

    /// One page of every snapshot of the account: volume by volume in id order. The cursor is
    /// `v<volume offset>.<snapshot offset>`.
    async fn list_all_snapshots(&self, page: &PageRequest) -> BackendResult<Page<Snapshot>> {
        let (mut volume_offset, mut snapshot_offset) = match &page.cursor {
            None => (0, 0),
            Some(c) => parse_all_cursor(c).ok_or_else(|| bad_cursor(c))?,
        };
        let mut items = Vec::new();
        loop {
            let volumes = self.client.volumes("mask[id]", volume_offset, 1).await?;
            let Some(volume) = volumes.first() else {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            };
            let want = page.max_entries - items.len();
            let snapshots = self
                .client
                .snapshots_for_volume(volume.id, snapshot_offset, want + 1)
                .await?
                .unwrap_or_default();
            let more_here = snapshots.len() > want;
            items.extend(
                snapshots
                    .iter()
                    .take(want)
                    .filter_map(|s| self.snapshot_of(s, Some(volume.id))),
            );
            if more_here {
                return Ok(Page {
                    items,
                    next_cursor: Some(format!("v{volume_offset}.{}", snapshot_offset + want)),
                });
            }
            volume_offset += 1;
            snapshot_offset = 0;
            if items.len() == page.max_entries {
                return Ok(Page {
                    items,
                    next_cursor: Some(format!("v{volume_offset}.0")),
                });
            }
        }
    }
}

pub(crate) fn parse_all_cursor(cursor: &str) -> Option<(usize, usize)> {
    let (v, s) = cursor.strip_prefix('v')?.split_once('.')?;
    Some((v.parse().ok()?, s.parse().ok()?))
}

pub(crate) fn parse_offset_cursor(cursor: &str) -> Option<usize> {
    cursor.strip_prefix('o')?.parse().ok()
}

fn bad_cursor(cursor: &str) -> BackendError {
    BackendError::new(
        ErrorKind::InvalidCursor,
        format!("{cursor:?} is not a position in this SoftLayer list"),
    )
}

/// SoftLayer ids are integers: anything else names no object.
pub(crate) fn numeric(id: &str) -> Option<u64> {
    id.parse().ok()
}

#[async_trait]
impl Backend for SoftLayerBackend {
    fn kind(&self) -> &'static str {
        "softlayer"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Ordering, cancelling, duplicating (restore/clone) and resizing volumes go
            // through SoftLayer_Product_Order and billing items, which the seed does not
            // document: not offered (see the module docs and README).
            create_delete_volume: false,
            create_delete_snapshot: true,
            restore_snapshot: false,
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
        let user = secrets.get(SECRET_USERNAME);
        let key = secrets.get(SECRET_API_KEY);
        match (user, key) {
            (None, None) => Ok(None),
            (Some(user), Some(key)) if !user.is_empty() && !key.is_empty() => {
                Ok(Some(Arc::new(SoftLayerBackend {
                    client: self
                        .client
                        .with_credentials(user.expose().to_owned(), Secret::new(key.expose())),
                    cluster_id: self.cluster_id.clone(),
                    scan_page: self.scan_page,
                })))
            }
            _ => Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "secrets: the softlayer backend needs both {SECRET_USERNAME:?} and \
                     {SECRET_API_KEY:?} (non-empty) or neither; got keys {:?}",
                    secrets.keys().collect::<Vec<_>>()
                ),
            )),
        }
    }

    async fn health(&self) -> BackendResult<()> {
        self.client.account().await
    }

    async fn available_capacity(&self) -> BackendResult<Option<u64>> {
        Ok(None)
    }

    async fn create_volume(&self, _request: &CreateVolume) -> BackendResult<Volume> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "the softlayer backend cannot order volumes (SoftLayer_Product_Order is not \
             supported); provision the volume in SoftLayer and use a static PersistentVolume",
        ))
    }

    async fn get_volume(&self, id: &VolumeId) -> BackendResult<Option<Volume>> {
        let Some(id) = numeric(id.as_str()) else {
            return Ok(None);
        };
        Ok(self
            .client
            .volume(id)
            .await?
            .as_ref()
            .and_then(Self::volume_of))
    }

    async fn find_volume_by_name(&self, _name: &str) -> BackendResult<Option<Volume>> {
        // This backend never creates volumes, so no volume carries a CSI name.
        Ok(None)
    }

    async fn delete_volume(&self, id: &VolumeId) -> BackendResult<()> {
        // Deleting what does not exist succeeds, as for every backend; an existing volume
        // is not this driver's to cancel.
        if self.get_volume(id).await?.is_none() {
            return Ok(());
        }
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "the softlayer backend does not cancel volumes (billing items are not supported)",
        ))
    }

    async fn expand_volume(&self, _id: &VolumeId, _new_size_bytes: u64) -> BackendResult<u64> {
        Err(BackendError::new(
            ErrorKind::Unsupported,
            "the softlayer backend does not resize volumes (an upgrade order is not supported)",
        ))
    }

    async fn list_volumes(&self, page: &PageRequest) -> BackendResult<Page<Volume>> {
        let offset = match &page.cursor {
            None => 0,
            Some(c) => parse_offset_cursor(c).ok_or_else(|| bad_cursor(c))?,
        };
        let mut found = self
            .client
            .volumes(VOLUME_MASK, offset, page.max_entries + 1)
            .await?;
        let more = found.len() > page.max_entries;
        found.truncate(page.max_entries);
        Ok(Page {
            items: found.iter().filter_map(Self::volume_of).collect(),
            next_cursor: more.then(|| format!("o{}", offset + page.max_entries)),
        })
    }

    async fn create_snapshot(&self, request: &CreateSnapshot) -> BackendResult<Snapshot> {
        let tags = Self::tags(&request.parameters)?;
        let missing = || {
            BackendError::not_found(format!(
                "source volume {} does not exist",
                request.source_volume_id
            ))
        };
        let volume_id = numeric(request.source_volume_id.as_str()).ok_or_else(missing)?;
        let volume = self.client.volume(volume_id).await?.ok_or_else(missing)?;
        if volume.is_snapshot() {
            return Err(missing());
        }
        if volume.snapshot_capacity_gb.unwrap_or(0) == 0 {
            return Err(BackendError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "volume {volume_id} has no snapshot space (snapshotCapacityGb 0): snapshot \
                     space must be ordered for it first (a 'Storage Snapshot Space' upgrade)"
                ),
            ));
        }
        let notes = serde_json::to_string(&Notes {
            snapcsi: NotesBody {
                name: request.name.clone(),
                cluster: self.cluster_id.clone(),
                tags,
            },
        })
        .map_err(|e| BackendError::internal(format!("notes: {e}")))?;
        let created = self.client.create_snapshot(volume_id, &notes).await?;
        self.snapshot_of(&created, Some(volume_id)).ok_or_else(|| {
            BackendError::internal(format!(
                "softlayer create snapshot: the answer (object {}) is not a snapshot",
                created.id
            ))
        })
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> BackendResult<Option<Snapshot>> {
        let Some(id) = numeric(id.as_str()) else {
            return Ok(None);
        };
        Ok(self
            .client
            .storage(id)
            .await?
            .and_then(|s| self.snapshot_of(&s, None)))
    }

    async fn find_snapshot_by_name(&self, name: &str) -> BackendResult<Option<Snapshot>> {
        // SoftLayer cannot filter snapshots by notes: walk the account's volumes, a page at a
        // time, with their snapshots' notes (one call per `scan_page_size` volumes).
        // Every match is collected: should two carry the name, the oldest answers.
        let mut offset = 0;
        let mut found = Vec::new();
        loop {
            let volumes = self
                .client
                .volumes(SCAN_MASK, offset, self.scan_page)
                .await?;
            for volume in &volumes {
                for snapshot in volume.snapshots.iter().flatten() {
                    let Some(notes) = parse_notes(snapshot.notes.as_deref()) else {
                        continue;
                    };
                    if notes.name != name || !self.mine(&notes) {
                        continue;
                    }
                    if let Some(object) = self.snapshot_of(snapshot, Some(volume.id)) {
                        found.push(Found {
                            id: object.id.to_string(),
                            created_at: snapshot
                                .create_date
                                .as_deref()
                                .and_then(client::parse_iso8601),
                            object,
                        });
                    }
                }
            }
            if volumes.len() < self.scan_page {
                return Ok(names::pick("softlayer", "snapshot", name, found));
            }
            offset += volumes.len();
        }
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> BackendResult<()> {
        let Some(id) = numeric(id.as_str()) else {
            return Ok(());
        };
        // Never delete a volume handed in as a snapshot id: look first.
        match self.client.storage(id).await? {
            Some(object) if object.is_snapshot() => {
                self.client.delete_storage(id).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: &PageRequest,
    ) -> BackendResult<Page<Snapshot>> {
        let Some(volume) = &filter.source_volume_id else {
            return self.list_all_snapshots(page).await;
        };
        let offset = match &page.cursor {
            None => 0,
            Some(c) => parse_offset_cursor(c).ok_or_else(|| bad_cursor(c))?,
        };
        let empty = Page {
            items: Vec::new(),
            next_cursor: None,
        };
        let Some(volume_id) = numeric(volume.as_str()) else {
            return Ok(empty);
        };
        let Some(mut found) = self
            .client
            .snapshots_for_volume(volume_id, offset, page.max_entries + 1)
            .await?
        else {
            return Ok(empty);
        };
        let more = found.len() > page.max_entries;
        found.truncate(page.max_entries);
        Ok(Page {
            items: found
                .iter()
                .filter_map(|s| self.snapshot_of(s, Some(volume_id)))
                .collect(),
            next_cursor: more.then(|| format!("o{}", offset + page.max_entries)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_foreign_notes_are_ignored() {
        let text = serde_json::to_string(&Notes {
            snapcsi: NotesBody {
                name: "snap-1".into(),
                cluster: Some("c1".into()),
                tags: BTreeMap::new(),
            },
        })
        .expect("serializes");
        let back = parse_notes(Some(&text)).expect("parses");
        assert_eq!(back.name, "snap-1");
        assert_eq!(back.cluster.as_deref(), Some("c1"));
        assert!(parse_notes(Some("nightly backup")).is_none());
        assert!(parse_notes(None).is_none());
    }

    #[test]
    fn cursors_are_checked() {
        assert_eq!(parse_all_cursor("v3.7"), Some((3, 7)));
        assert_eq!(parse_all_cursor("garbage"), None);
        assert_eq!(parse_offset_cursor("o12"), Some(12));
        assert_eq!(parse_offset_cursor("12"), None);
    }
}
