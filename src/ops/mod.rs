//! The rules every backend shares, applied once above the [`Backend`] trait: idempotency by
//! name, the per-key in-flight guard and opaque pagination.
//!
//! The backend — not this process's memory — is the source of truth for names, so a restart
//! between a create and its answer never produces a second object: the repeated call finds the
//! first one by name.

pub mod inflight;
pub mod intents;
pub mod token;

use crate::backend::{
    Backend, BackendError, BackendResult, CreateGroupSnapshot, CreateSnapshot, CreateVolume,
    ErrorKind, GroupSnapshot, GroupSnapshotId, Page, PageRequest, Snapshot, SnapshotFilter,
    SnapshotId, Volume, VolumeId, VolumeSource,
};
use crate::error::{Error, Result};
use inflight::{Held, InFlight};
use intents::Intents;
use std::sync::Arc;
use std::time::Duration;

/// How long a create with an unknown outcome keeps a repeated call from creating again,
/// unless the server is given another value.
pub const DEFAULT_CREATE_GRACE: Duration = Duration::from_secs(60);

/// Largest page a list call returns, whatever `max_entries` says (0 means "driver decides").
pub const MAX_PAGE: usize = 1000;

/// The requested size of a new volume, as CSI's `capacity_range` gives it (0 = unset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeRange {
    /// `required_bytes`: the volume must be at least this big.
    pub required: u64,
    /// `limit_bytes`: the volume must be at most this big.
    pub limit: u64,
}

impl SizeRange {
    /// Whether a volume of `size` bytes satisfies the range.
    pub fn admits(&self, size: u64) -> bool {
        size >= self.required && (self.limit == 0 || size <= self.limit)
    }
}

/// Idempotent, guarded operations over one backend.
#[derive(Clone)]
pub struct Ops {
    backend: Arc<dyn Backend>,
    inflight: InFlight,
    intents: Intents,
    default_volume_size: u64,
}

impl Ops {
    /// Wraps a backend; `default_volume_size` is used when a request gives no size.
    pub fn new(backend: Arc<dyn Backend>, default_volume_size: u64) -> Self {
        Self {
            backend,
            inflight: InFlight::default(),
            intents: Intents::in_memory(DEFAULT_CREATE_GRACE),
            default_volume_size,
        }
    }

    /// Uses `intents` as the journal of creates with an unknown outcome (a durable one in the
    /// data directory in the server; see [`intents`]).
    pub fn with_intents(mut self, intents: Intents) -> Self {
        self.intents = intents;
        self
    }

    /// These operations acting with the credentials in a request's `secrets` (see
    /// [`Backend::with_secrets`]); the in-flight guard stays shared.
    pub fn scoped(&self, secrets: &crate::secret::Secrets) -> Result<Ops> {
        match self.backend.with_secrets(secrets)? {
            None => Ok(self.clone()),
            Some(backend) => Ok(Ops {
                backend,
                inflight: self.inflight.clone(),
                intents: self.intents.clone(),
                default_volume_size: self.default_volume_size,
            }),
        }
    }

    /// The backend underneath.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Operations in flight right now.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    fn hold(&self, key: String) -> Result<Held> {
        self.inflight
            .try_hold(key.clone())
            .ok_or(Error::InFlight(key))
    }

    /// Before a create is sent: refuses while an earlier create of `key` may still complete
    /// in the cloud (UNAVAILABLE, so the sidecar repeats the call and the next lookup finds
    /// that object), then journals this one.
    fn begin_create(&self, key: &str) -> Result<()> {
        if !self.backend.creates_outlive_process() {
            return Ok(());
        }
        if let Some(age) = self.intents.unsettled(key) {
            return Err(Error::Backend(BackendError::new(
                ErrorKind::Unavailable,
                format!(
                    "name: a create of {key} was sent {:.1}s ago and its outcome is unknown \
                     (the driver restarted or the call timed out); waiting up to {}s for that \
                     object to appear before creating another",
                    age.as_secs_f64(),
                    self.intents.grace().as_secs()
                ),
            )));
        }
        self.intents.record(key).map_err(|e| {
            Error::Internal(format!(
                "recording the create of {key} in the data directory: {e}"
            ))
        })
    }

    /// After a create: forgets the journal entry unless the outcome is still unknown (a
    /// transport failure, a timeout or a server error: the object may yet appear). A refusal
    /// before acting (`Throttled`: 429, 503) or any other answer settles it.
    fn end_create<T>(&self, key: &str, result: &BackendResult<T>) {
        let unknown = matches!(
            result,
            Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Internal)
        );
        if !unknown {
            self.intents.settle(key);
        }
    }

    /// CreateSnapshot: the existing snapshot of that name if it has the same source,
    /// ALREADY_EXISTS if it has another, otherwise a new snapshot.
    pub async fn create_snapshot(&self, request: CreateSnapshot) -> Result<Snapshot> {
        let key = format!("snapshot {:?}", request.name);
        let answer = |existing: Snapshot| {
            self.intents.settle(&key);
            if existing.source_volume_id == request.source_volume_id {
                return Ok(existing);
            }
            Err(Error::AlreadyExists(format!(
                "name: snapshot {:?} already exists as {} of volume {}, not of volume {}",
                request.name, existing.id, existing.source_volume_id, request.source_volume_id
            )))
        };
        let guard = format!("snapshot name {}", request.name);
        let Some(_held) = self.inflight.try_hold(guard.clone()) else {
            // Another call for this name is in flight. A snapshot that already exists is
            // answered anyway (repeats of a finished create are never refused); only a create
            // that may still be running is ABORTED.
            return match self.backend.find_snapshot_by_name(&request.name).await? {
                Some(existing) => answer(existing),
                None => Err(Error::InFlight(guard)),
            };
        };
        if let Some(existing) = self.backend.find_snapshot_by_name(&request.name).await? {
            return answer(existing);
        }
        if self
            .backend
            .get_volume(&request.source_volume_id)
            .await?
            .is_none()
        {
            return Err(Error::NotFound {
                what: "source volume",
                id: request.source_volume_id.to_string(),
            });
        }
        self.begin_create(&key)?;
        let snapshot = self.backend.create_snapshot(&request).await;
        self.end_create(&key, &snapshot);
        let snapshot = snapshot?;
        crate::metrics::metrics().snapshot_created(self.backend.kind());
        Ok(snapshot)
    }

    /// DeleteSnapshot: success also when the snapshot is already gone.
    pub async fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        let _held = self.hold(format!("snapshot {id}"))?;
        self.backend.delete_snapshot(id).await?;
        crate::metrics::metrics().snapshot_deleted(self.backend.kind());
        Ok(())
    }

    /// GetSnapshot: NOT_FOUND when missing.
    pub async fn get_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        self.backend
            .get_snapshot(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "snapshot",
                id: id.to_string(),
            })
    }

    /// ListSnapshots, one page. A `snapshot_id` filter is answered by a direct lookup.
    pub async fn list_snapshots(
        &self,
        snapshot_id: Option<&SnapshotId>,
        filter: &SnapshotFilter,
        max_entries: i32,
        starting_token: &str,
    ) -> Result<(Vec<Snapshot>, String)> {
        let page = page_request(max_entries, starting_token)?;
        if let Some(id) = snapshot_id {
            // CSI: a snapshot_id that matches nothing is an empty answer, not NOT_FOUND.
            let found = self.backend.get_snapshot(id).await?;
            let matching = found.into_iter().filter(|s| {
                filter
                    .source_volume_id
                    .as_ref()
                    .is_none_or(|v| &s.source_volume_id == v)
            });
            return Ok((matching.collect(), String::new()));
        }
        let result = self.backend.list_snapshots(filter, &page).await;
        Ok(wrap_page(result.map_err(cursor_error)?))
    }

    /// CreateVolumeGroupSnapshot: the existing group of that name if it has the same source
    /// volumes (in any order), ALREADY_EXISTS if it has others, otherwise a new group.
    pub async fn create_group_snapshot(
        &self,
        request: CreateGroupSnapshot,
    ) -> Result<GroupSnapshot> {
        let _held = self.hold(format!("group snapshot name {}", request.name))?;
        let wanted = sorted(request.source_volume_ids.iter());
        if let Some(existing) = self
            .backend
            .find_group_snapshot_by_name(&request.name)
            .await?
        {
            let has = existing.source_volume_ids();
            if sorted(has.iter()) == wanted {
                return Ok(existing);
            }
            return Err(Error::AlreadyExists(format!(
                "name: group snapshot {:?} already exists as {} of volumes [{}], not of [{}]",
                request.name,
                existing.id,
                wanted_list(has.iter()),
                wanted_list(request.source_volume_ids.iter()),
            )));
        }
        for volume in &request.source_volume_ids {
            if self.backend.get_volume(volume).await?.is_none() {
                return Err(Error::NotFound {
                    what: "source volume",
                    id: volume.to_string(),
                });
            }
        }
        let group = self.backend.create_group_snapshot(&request).await?;
        for _ in &group.snapshots {
            crate::metrics::metrics().snapshot_created(self.backend.kind());
        }
        Ok(group)
    }

    /// GetVolumeGroupSnapshot: NOT_FOUND when missing; `snapshot_ids`, when given, must be
    /// exactly the group's members (CSI: a mismatch is INVALID_ARGUMENT).
    pub async fn get_group_snapshot(
        &self,
        id: &GroupSnapshotId,
        snapshot_ids: &[SnapshotId],
    ) -> Result<GroupSnapshot> {
        let group = self
            .backend
            .get_group_snapshot(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "group snapshot",
                id: id.to_string(),
            })?;
        check_members(&group, snapshot_ids)?;
        Ok(group)
    }

    /// DeleteVolumeGroupSnapshot: deletes the group and its members; success also when the
    /// group is already gone. `snapshot_ids`, when given, must match the members.
    pub async fn delete_group_snapshot(
        &self,
        id: &GroupSnapshotId,
        snapshot_ids: &[SnapshotId],
    ) -> Result<()> {
        let _held = self.hold(format!("group snapshot {id}"))?;
        let Some(group) = self.backend.get_group_snapshot(id).await? else {
            return Ok(());
        };
        check_members(&group, snapshot_ids)?;
        self.backend.delete_group_snapshot(id).await?;
        for _ in &group.snapshots {
            crate::metrics::metrics().snapshot_deleted(self.backend.kind());
        }
        Ok(())
    }

    /// CreateVolume with idempotency by name. `size` is the caller's range; `granularity` is
    /// applied by rounding up.
    pub async fn create_volume(
        &self,
        name: &str,
        size: SizeRange,
        source: Option<VolumeSource>,
        parameters: std::collections::BTreeMap<String, String>,
        min_size: u64,
    ) -> Result<Volume> {
        self.create_volume_in(name, size, source, parameters, min_size, None)
            .await
    }

    /// [`Ops::create_volume`] in the availability `zone` the topology requirement picked.
    pub async fn create_volume_in(
        &self,
        name: &str,
        size: SizeRange,
        source: Option<VolumeSource>,
        parameters: std::collections::BTreeMap<String, String>,
        min_size: u64,
        zone: Option<String>,
    ) -> Result<Volume> {
        let key = format!("volume {name:?}");
        let answer = |existing: Volume| {
            self.intents.settle(&key);
            if existing.source == source && size.admits(existing.size_bytes) {
                return Ok(existing);
            }
            Err(Error::AlreadyExists(format!(
                "name: volume {name:?} already exists as {} with size {} and source {:?}, \
                 incompatible with this request",
                existing.id, existing.size_bytes, existing.source
            )))
        };
        let guard = format!("volume name {name}");
        let Some(_held) = self.inflight.try_hold(guard.clone()) else {
            // As for snapshots: an existing volume is answered, a create in flight ABORTED.
            return match self.backend.find_volume_by_name(name).await? {
                Some(existing) => answer(existing),
                None => Err(Error::InFlight(guard)),
            };
        };
        if let Some(existing) = self.backend.find_volume_by_name(name).await? {
            return answer(existing);
        }
        let source_size = match &source {
            None => None,
            Some(VolumeSource::Snapshot(id)) => {
                let snapshot =
                    self.backend
                        .get_snapshot(id)
                        .await?
                        .ok_or_else(|| Error::NotFound {
                            what: "source snapshot",
                            id: id.to_string(),
                        })?;
                if !snapshot.ready {
                    return Err(Error::Backend(crate::backend::BackendError::new(
                        ErrorKind::Unavailable,
                        format!("source snapshot {id} is not ready yet"),
                    )));
                }
                Some(snapshot.size_bytes)
            }
            Some(VolumeSource::Volume(id)) => {
                let volume = self
                    .backend
                    .get_volume(id)
                    .await?
                    .ok_or_else(|| Error::NotFound {
                        what: "source volume",
                        id: id.to_string(),
                    })?;
                Some(volume.size_bytes)
            }
        };
        let size_bytes = self.choose_size(size, source_size, min_size)?;
        let request = CreateVolume {
            name: name.to_owned(),
            size_bytes,
            source,
            parameters,
            zone,
        };
        self.begin_create(&key)?;
        let volume = self.backend.create_volume(&request).await;
        self.end_create(&key, &volume);
        Ok(volume?)
    }

    fn choose_size(&self, range: SizeRange, source_size: Option<u64>, min: u64) -> Result<u64> {
        let capabilities = self.backend.capabilities();
        let granularity = capabilities.size_granularity_bytes.max(1);
        let min = min.max(capabilities.min_volume_bytes);
        if let Some(source) = source_size
            && range.limit != 0
            && range.limit < source
        {
            return Err(Error::OutOfRange(format!(
                "capacity_range.limit_bytes {} is smaller than the source ({source} bytes)",
                range.limit
            )));
        }
        let wanted = if range.required > 0 {
            range.required
        } else if range.limit > 0 {
            range.limit.min(self.default_volume_size)
        } else {
            self.default_volume_size
        };
        let wanted = wanted.max(source_size.unwrap_or(0)).max(min);
        let rounded = wanted
            .div_ceil(granularity)
            .checked_mul(granularity)
            .ok_or_else(|| Error::OutOfRange(format!("capacity {wanted} bytes is too large")))?;
        if range.limit != 0 && rounded > range.limit {
            return Err(Error::OutOfRange(format!(
                "capacity_range: {wanted} bytes rounded up to the backend's granularity of \
                 {granularity} bytes (and the file system's and backend's minimum of {min}) \
                 is {rounded}, above limit_bytes {}",
                range.limit
            )));
        }
        Ok(rounded)
    }

    /// ControllerPublishVolume: attaches the volume to the node (idempotent in the backend).
    pub async fn publish_volume(
        &self,
        request: crate::backend::PublishVolume,
    ) -> Result<crate::backend::PublishContext> {
        let _held = self.hold(format!("volume {}", request.volume_id))?;
        Ok(self.backend.publish_volume(&request).await?)
    }

    /// ControllerUnpublishVolume: detaches the volume from the node; success when it is not
    /// attached there (or either is gone).
    pub async fn unpublish_volume(&self, volume: &VolumeId, node_id: &str) -> Result<()> {
        let _held = self.hold(format!("volume {volume}"))?;
        Ok(self.backend.unpublish_volume(volume, node_id).await?)
    }

    /// DeleteVolume: success also when the volume is already gone.
    pub async fn delete_volume(&self, id: &VolumeId) -> Result<()> {
        let _held = self.hold(format!("volume {id}"))?;
        Ok(self.backend.delete_volume(id).await?)
    }

    /// The volume with this id, NOT_FOUND when missing.
    pub async fn get_volume(&self, id: &VolumeId) -> Result<Volume> {
        self.backend
            .get_volume(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "volume",
                id: id.to_string(),
            })
    }

    /// ControllerExpandVolume: grows to at least `required`; a volume already that big is
    /// left alone (idempotent).
    pub async fn expand_volume(&self, id: &VolumeId, range: SizeRange) -> Result<u64> {
        let _held = self.hold(format!("volume {id}"))?;
        let volume = self.get_volume(id).await?;
        if volume.size_bytes >= range.required {
            return Ok(volume.size_bytes);
        }
        let granularity = self.backend.capabilities().size_granularity_bytes.max(1);
        let target = range.required.div_ceil(granularity) * granularity;
        if range.limit != 0 && target > range.limit {
            return Err(Error::OutOfRange(format!(
                "capacity_range: {} bytes rounded up to {target} is above limit_bytes {}",
                range.required, range.limit
            )));
        }
        Ok(self.backend.expand_volume(id, target).await?)
    }

    /// ListVolumes, one page.
    pub async fn list_volumes(
        &self,
        max_entries: i32,
        starting_token: &str,
    ) -> Result<(Vec<Volume>, String)> {
        let page = page_request(max_entries, starting_token)?;
        let result = self.backend.list_volumes(&page).await;
        Ok(wrap_page(result.map_err(cursor_error)?))
    }
}

fn sorted<'a, T: Ord + 'a>(items: impl Iterator<Item = &'a T>) -> Vec<&'a T> {
    let mut items: Vec<&T> = items.collect();
    items.sort();
    items
}

fn wanted_list<'a, T: std::fmt::Display + 'a>(items: impl Iterator<Item = &'a T>) -> String {
    items
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// CSI Get/DeleteVolumeGroupSnapshot: `snapshot_ids` the caller sends must be the group's
/// members; an empty list is not checked (csi-sanity's calls with a made-up id send none).
fn check_members(group: &GroupSnapshot, snapshot_ids: &[SnapshotId]) -> Result<()> {
    if snapshot_ids.is_empty() {
        return Ok(());
    }
    let members: Vec<&SnapshotId> = sorted(group.snapshots.iter().map(|s| &s.id));
    let mut given = sorted(snapshot_ids.iter());
    given.dedup();
    if members == given {
        return Ok(());
    }
    Err(Error::invalid(
        "snapshot_ids",
        format!(
            "[{}] are not the members of group snapshot {}: [{}]",
            wanted_list(snapshot_ids.iter()),
            group.id,
            wanted_list(members.into_iter()),
        ),
    ))
}

fn page_request(max_entries: i32, starting_token: &str) -> Result<PageRequest> {
    let max_entries = match usize::try_from(max_entries) {
        Ok(0) => MAX_PAGE,
        Ok(n) => n.min(MAX_PAGE),
        Err(_) => {
            return Err(Error::invalid(
                "max_entries",
                format!("must not be negative, got {max_entries}"),
            ));
        }
    };
    Ok(PageRequest {
        cursor: token::decode(starting_token)?,
        max_entries,
    })
}

fn wrap_page<T>(page: Page<T>) -> (Vec<T>, String) {
    let next = page.next_cursor.as_deref().map(token::encode);
    (page.items, next.unwrap_or_default())
}

fn cursor_error(error: crate::backend::BackendError) -> Error {
    if error.kind == ErrorKind::InvalidCursor {
        Error::BadToken(error.message)
    } else {
        Error::Backend(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    fn snapshot_request(name: &str, volume: &VolumeId) -> CreateSnapshot {
        CreateSnapshot {
            name: name.into(),
            source_volume_id: volume.clone(),
            parameters: Default::default(),
        }
    }

    /// While another call holds a name's guard, a repeat for a snapshot that already exists
    /// is answered (OK, or ALREADY_EXISTS for another source); a name that does not exist yet
    /// is ABORTED, since its create may be the one in flight.
    #[tokio::test]
    async fn an_existing_snapshot_is_answered_while_its_guard_is_held() {
        let ops = Ops::new(Arc::new(MemoryBackend::new(None)), 1 << 20);
        let volume = ops
            .create_volume("v", SizeRange::default(), None, Default::default(), 0)
            .await
            .expect("volume")
            .id;
        let other = ops
            .create_volume("w", SizeRange::default(), None, Default::default(), 0)
            .await
            .expect("volume")
            .id;
        let created = ops
            .create_snapshot(snapshot_request("a", &volume))
            .await
            .expect("created");
        let _a = ops.inflight.try_hold("snapshot name a").expect("free");
        let _b = ops.inflight.try_hold("snapshot name b").expect("free");
        let _v = ops.inflight.try_hold("volume name v").expect("free");
        let again = ops
            .create_snapshot(snapshot_request("a", &volume))
            .await
            .expect("an existing snapshot is answered without the guard");
        assert_eq!(again.id, created.id);
        let conflict = ops
            .create_snapshot(snapshot_request("a", &other))
            .await
            .expect_err("another source");
        assert_eq!(conflict.code(), tonic::Code::AlreadyExists, "{conflict}");
        let busy = ops
            .create_snapshot(snapshot_request("b", &volume))
            .await
            .expect_err("a create of b may be in flight");
        assert_eq!(busy.code(), tonic::Code::Aborted, "{busy}");
        let volume_again = ops
            .create_volume("v", SizeRange::default(), None, Default::default(), 0)
            .await
            .expect("an existing volume is answered without the guard");
        assert_eq!(volume_again.id, volume);
    }

    /// A create journaled by a process that died holds its name for the grace period, then
    /// the name is free again; an object found by name settles the journal at once.
    #[tokio::test]
    async fn an_unsettled_create_holds_its_name_until_the_grace_period_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let grace = Duration::from_millis(300);
        let ops = Ops::new(Arc::new(MemoryBackend::new(None)), 1 << 20)
            .with_intents(Intents::open(dir.path(), grace).expect("journal"));
        let volume = ops
            .create_volume("v", SizeRange::default(), None, Default::default(), 0)
            .await
            .expect("volume")
            .id;

        // The previous process journaled "a" and died before the answer.
        Intents::open(dir.path(), grace)
            .expect("journal")
            .record("snapshot \"a\"")
            .expect("record");
        let ops = ops.with_intents(Intents::open(dir.path(), grace).expect("reopen"));
        let refused = ops
            .create_snapshot(snapshot_request("a", &volume))
            .await
            .expect_err("a create of the same name may still appear");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
        assert!(refused.to_string().contains("\"a\""), "{refused}");
        tokio::time::sleep(grace).await;
        let created = ops
            .create_snapshot(snapshot_request("a", &volume))
            .await
            .expect("after the grace period the name is free");

        // "a" now exists: a stale journal entry for it is settled by the lookup.
        Intents::open(dir.path(), grace)
            .expect("journal")
            .record("snapshot \"a\"")
            .expect("record");
        let ops = ops.with_intents(Intents::open(dir.path(), grace).expect("reopen"));
        let again = ops
            .create_snapshot(snapshot_request("a", &volume))
            .await
            .expect("found by name");
        assert_eq!(again.id, created.id);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
