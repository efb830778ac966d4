//! The local backend's metadata: an embedded ACID store (redb).
//!
//! A record is committed only after its image file is complete and synced, in one transaction
//! with its name index and the capacity counter. A crash at any point therefore leaves either
//! no record (and at worst an orphan file, swept at the next start) or a complete one: never a
//! half object that a name lookup could find.

use crate::backend::{BackendError, BackendResult, ErrorKind};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use std::path::Path;

const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
const VOLUME_NAMES: TableDefinition<&str, &str> = TableDefinition::new("volume_names");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const SNAPSHOT_NAMES: TableDefinition<&str, &str> = TableDefinition::new("snapshot_names");
/// `"<volume id>/<snapshot id>"`, so the snapshots of one volume are one key range.
const SNAPSHOTS_BY_VOLUME: TableDefinition<&str, ()> = TableDefinition::new("snapshots_by_volume");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("group_snapshots");
const GROUP_NAMES: TableDefinition<&str, &str> = TableDefinition::new("group_snapshot_names");
const USED_BYTES: &str = "provisioned_bytes";
/// redb's own page cache. Its default (1 GiB) let the driver's memory grow with every record
/// it ever read (110 MiB after three walks of 100,000 snapshots); the kernel's page cache
/// keeps the file's pages close anyway, so a small cache costs walks little.
const CACHE_BYTES: usize = 4 << 20;

/// Where a volume's content came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceRecord {
    /// Restored from this snapshot id.
    Snapshot(String),
    /// Cloned from this volume id.
    Volume(String),
}

/// A stored volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Volume id (`vol-<uuid v7>`).
    pub id: String,
    /// CSI name.
    pub name: String,
    /// Provisioned size in bytes.
    pub size_bytes: u64,
    /// Content source.
    pub source: Option<SourceRecord>,
}

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Snapshot id (`snap-<uuid v7>`).
    pub id: String,
    /// CSI name.
    pub name: String,
    /// Volume it was cut from.
    pub source_volume_id: String,
    /// Size of the source volume when it was cut.
    pub size_bytes: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_secs: i64,
    /// Creation time, nanoseconds part.
    pub created_nanos: i32,
    /// The group snapshot this one is a member of (absent in records written before groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_snapshot_id: Option<String>,
}

/// A stored group snapshot. Its members are ordinary [`SnapshotRecord`]s carrying its id,
/// committed in the same transaction as the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Group snapshot id (`group-<uuid v7>`).
    pub id: String,
    /// CSI name.
    pub name: String,
    /// Member snapshot ids, in the order of the source volumes in the create request.
    pub snapshot_ids: Vec<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_secs: i64,
    /// Creation time, nanoseconds part.
    pub created_nanos: i32,
}

/// The metadata store.
pub struct Store {
    db: Database,
}

fn db_error(error: impl std::fmt::Display) -> BackendError {
    BackendError::internal(format!("local metadata store: {error}"))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> BackendResult<T> {
    serde_json::from_slice(bytes).map_err(|e| db_error(format!("corrupt record: {e}")))
}

fn encode<T: Serialize>(record: &T) -> BackendResult<Vec<u8>> {
    serde_json::to_vec(record).map_err(db_error)
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> BackendResult<Self> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                BackendError::new(
                    ErrorKind::Unavailable,
                    format!("cannot open metadata store {}: {e}", path.display()),
                )
            })?;
        let txn = db.begin_write().map_err(db_error)?;
        {
            txn.open_table(VOLUMES).map_err(db_error)?;
            txn.open_table(VOLUME_NAMES).map_err(db_error)?;
            txn.open_table(SNAPSHOTS).map_err(db_error)?;
            txn.open_table(SNAPSHOT_NAMES).map_err(db_error)?;
            txn.open_table(SNAPSHOTS_BY_VOLUME).map_err(db_error)?;
            txn.open_table(COUNTERS).map_err(db_error)?;
            txn.open_table(GROUPS).map_err(db_error)?;
            txn.open_table(GROUP_NAMES).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        Ok(Self { db })
    }

    /// A read transaction that succeeds: the store answers.
    pub fn check(&self) -> BackendResult<()> {
        let txn = self.db.begin_read().map_err(db_error)?;
        txn.open_table(COUNTERS).map_err(db_error)?;
        Ok(())
    }

    /// Bytes provisioned to volumes.
    pub fn used_bytes(&self) -> BackendResult<u64> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(COUNTERS).map_err(db_error)?;
        Ok(table
            .get(USED_BYTES)
            .map_err(db_error)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The volume with this id.
    pub fn volume(&self, id: &str) -> BackendResult<Option<VolumeRecord>> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(VOLUMES).map_err(db_error)?;
        let found = table.get(id).map_err(db_error)?;
        found.map(|v| decode(v.value())).transpose()
    }

    /// The volume with this CSI name.
    pub fn volume_by_name(&self, name: &str) -> BackendResult<Option<VolumeRecord>> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let names = txn.open_table(VOLUME_NAMES).map_err(db_error)?;
        let Some(id) = names.get(name).map_err(db_error)? else {
            return Ok(None);
        };
        let table = txn.open_table(VOLUMES).map_err(db_error)?;
        let found = table.get(id.value()).map_err(db_error)?;
        found.map(|v| decode(v.value())).transpose()
    }

    /// Commits a new volume if the name is free and the capacity allows it. `max_bytes` is the
    /// provisioning limit (`None` = unlimited).
    pub fn insert_volume(
        &self,
        record: &VolumeRecord,
        max_bytes: Option<u64>,
    ) -> BackendResult<()> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut names = txn.open_table(VOLUME_NAMES).map_err(db_error)?;
            if names.get(record.name.as_str()).map_err(db_error)?.is_some() {
                return Err(BackendError::new(
                    ErrorKind::AlreadyExists,
                    format!("volume name {:?} is taken", record.name),
                ));
            }
            let mut counters = txn.open_table(COUNTERS).map_err(db_error)?;
            let used = counters
                .get(USED_BYTES)
                .map_err(db_error)?
                .map(|v| v.value())
                .unwrap_or(0);
            let new_used = used.saturating_add(record.size_bytes);
            check_capacity(used, new_used, max_bytes)?;
            counters.insert(USED_BYTES, new_used).map_err(db_error)?;
            names
                .insert(record.name.as_str(), record.id.as_str())
                .map_err(db_error)?;
            let mut volumes = txn.open_table(VOLUMES).map_err(db_error)?;
            volumes
                .insert(record.id.as_str(), encode(record)?.as_slice())
                .map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    /// Records a new size for a volume, within the capacity limit.
    pub fn resize_volume(
        &self,
        id: &str,
        new_size: u64,
        max_bytes: Option<u64>,
    ) -> BackendResult<()> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut volumes = txn.open_table(VOLUMES).map_err(db_error)?;
            let mut record: VolumeRecord = match volumes.get(id).map_err(db_error)? {
                Some(v) => decode(v.value())?,
                None => {
                    return Err(BackendError::not_found(format!(
                        "volume {id} does not exist"
                    )));
                }
            };
            let mut counters = txn.open_table(COUNTERS).map_err(db_error)?;
            let used = counters
                .get(USED_BYTES)
                .map_err(db_error)?
                .map(|v| v.value())
                .unwrap_or(0);
            let grown = new_size.saturating_sub(record.size_bytes);
            let new_used = used.saturating_add(grown);
            check_capacity(used, new_used, max_bytes)?;
            counters.insert(USED_BYTES, new_used).map_err(db_error)?;
            record.size_bytes = record.size_bytes.max(new_size);
            volumes
                .insert(id, encode(&record)?.as_slice())
                .map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    /// Removes a volume record; answers the removed record, if there was one.
    pub fn remove_volume(&self, id: &str) -> BackendResult<Option<VolumeRecord>> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let removed = {
            let mut volumes = txn.open_table(VOLUMES).map_err(db_error)?;
            let removed: Option<VolumeRecord> = match volumes.remove(id).map_err(db_error)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            if let Some(record) = &removed {
                let mut names = txn.open_table(VOLUME_NAMES).map_err(db_error)?;
                names.remove(record.name.as_str()).map_err(db_error)?;
                let mut counters = txn.open_table(COUNTERS).map_err(db_error)?;
                let used = counters
                    .get(USED_BYTES)
                    .map_err(db_error)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                counters
                    .insert(USED_BYTES, used.saturating_sub(record.size_bytes))
                    .map_err(db_error)?;
            }
            removed
        };
        txn.commit().map_err(db_error)?;
        Ok(removed)
    }

    /// Up to `limit` volumes after `after` (exclusive), in id order (= creation order).
    pub fn volumes_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<VolumeRecord>, bool)> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(VOLUMES).map_err(db_error)?;
        page_after(&table, after, limit)
    }

    /// Whether a volume record with this id exists (the orphan sweep at start-up).
    pub fn has_volume(&self, id: &str) -> BackendResult<bool> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(VOLUMES).map_err(db_error)?;
        Ok(table.get(id).map_err(db_error)?.is_some())
    }

    /// Whether a snapshot record with this id exists (the orphan sweep at start-up).
    pub fn has_snapshot(&self, id: &str) -> BackendResult<bool> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
        Ok(table.get(id).map_err(db_error)?.is_some())
    }

    /// The snapshot with this id.
    pub fn snapshot(&self, id: &str) -> BackendResult<Option<SnapshotRecord>> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
        let found = table.get(id).map_err(db_error)?;
        found.map(|v| decode(v.value())).transpose()
    }

    /// The snapshot with this CSI name.
    pub fn snapshot_by_name(&self, name: &str) -> BackendResult<Option<SnapshotRecord>> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let names = txn.open_table(SNAPSHOT_NAMES).map_err(db_error)?;
        let Some(id) = names.get(name).map_err(db_error)? else {
            return Ok(None);
        };
        let table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
        let found = table.get(id.value()).map_err(db_error)?;
        found.map(|v| decode(v.value())).transpose()
    }

    /// Commits a new snapshot if its name is free.
    pub fn insert_snapshot(&self, record: &SnapshotRecord) -> BackendResult<()> {
        let txn = self.db.begin_write().map_err(db_error)?;
        put_snapshot(&txn, record)?;
        txn.commit().map_err(db_error)
    }

    /// Commits a group snapshot and all its members in one transaction, if the group's and
    /// every member's name are free: a crash leaves all of them or none.
    pub fn insert_group(
        &self,
        group: &GroupRecord,
        members: &[SnapshotRecord],
    ) -> BackendResult<()> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut names = txn.open_table(GROUP_NAMES).map_err(db_error)?;
            if names.get(group.name.as_str()).map_err(db_error)?.is_some() {
                return Err(BackendError::new(
                    ErrorKind::AlreadyExists,
                    format!("group snapshot name {:?} is taken", group.name),
                ));
            }
            names
                .insert(group.name.as_str(), group.id.as_str())
                .map_err(db_error)?;
            let mut groups = txn.open_table(GROUPS).map_err(db_error)?;
            groups
                .insert(group.id.as_str(), encode(group)?.as_slice())
                .map_err(db_error)?;
        }
        for member in members {
            put_snapshot(&txn, member)?;
        }
        txn.commit().map_err(db_error)
    }

    /// The group snapshot with this id and its members.
    pub fn group(&self, id: &str) -> BackendResult<Option<(GroupRecord, Vec<SnapshotRecord>)>> {
        let txn = self.db.begin_read().map_err(db_error)?;
        read_group(&txn, id)
    }

    /// The group snapshot with this CSI name and its members.
    pub fn group_by_name(
        &self,
        name: &str,
    ) -> BackendResult<Option<(GroupRecord, Vec<SnapshotRecord>)>> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let names = txn.open_table(GROUP_NAMES).map_err(db_error)?;
        let Some(id) = names.get(name).map_err(db_error)? else {
            return Ok(None);
        };
        read_group(&txn, id.value())
    }

    /// Removes a group snapshot and its member records in one transaction; answers the
    /// removed member records (whose images the caller then deletes).
    pub fn remove_group(&self, id: &str) -> BackendResult<Option<Vec<SnapshotRecord>>> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let removed = {
            let mut groups = txn.open_table(GROUPS).map_err(db_error)?;
            let group: Option<GroupRecord> = match groups.remove(id).map_err(db_error)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            match group {
                None => None,
                Some(group) => {
                    let mut names = txn.open_table(GROUP_NAMES).map_err(db_error)?;
                    names.remove(group.name.as_str()).map_err(db_error)?;
                    let mut members = Vec::with_capacity(group.snapshot_ids.len());
                    for member in &group.snapshot_ids {
                        if let Some(record) = take_snapshot(&txn, member)? {
                            members.push(record);
                        }
                    }
                    Some(members)
                }
            }
        };
        txn.commit().map_err(db_error)?;
        Ok(removed)
    }

    /// Removes a snapshot record; answers the removed record, if there was one. A group
    /// member is refused (it goes with its group only) and stays untouched.
    pub fn remove_snapshot(&self, id: &str) -> BackendResult<Option<SnapshotRecord>> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let removed = take_snapshot(&txn, id)?;
        if let Some(record) = &removed
            && let Some(group) = &record.group_snapshot_id
        {
            // Dropping the transaction uncommitted aborts the removal.
            return Err(BackendError::group_member(
                &crate::backend::SnapshotId::new(id),
                &crate::backend::GroupSnapshotId::new(group.as_str()),
            ));
        }
        txn.commit().map_err(db_error)?;
        Ok(removed)
    }

    /// Up to `limit` snapshots after `after` (exclusive) in id order, optionally only those of
    /// one volume. Reads only the page it answers, never the whole table.
    pub fn snapshots_page(
        &self,
        volume: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<SnapshotRecord>, bool)> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let snapshots = txn.open_table(SNAPSHOTS).map_err(db_error)?;
        let Some(volume) = volume else {
            return page_after(&snapshots, after, limit);
        };
        let by_volume = txn.open_table(SNAPSHOTS_BY_VOLUME).map_err(db_error)?;
        let prefix = format!("{volume}/");
        let start_key = format!("{prefix}{}", after.unwrap_or(""));
        let start = if after.is_some() {
            Bound::Excluded(start_key.as_str())
        } else {
            Bound::Included(start_key.as_str())
        };
        let mut items = Vec::with_capacity(limit.min(1024));
        for entry in by_volume
            .range::<&str>((start, Bound::Unbounded))
            .map_err(db_error)?
        {
            let (key, _) = entry.map_err(db_error)?;
            let Some(snapshot_id) = key.value().strip_prefix(&prefix) else {
                break;
            };
            if items.len() == limit {
                return Ok((items, true));
            }
            if let Some(value) = snapshots.get(snapshot_id).map_err(db_error)? {
                items.push(decode(value.value())?);
            }
        }
        Ok((items, false))
    }
}

/// Writes a new snapshot record with its indexes, if its name is free.
fn put_snapshot(txn: &redb::WriteTransaction, record: &SnapshotRecord) -> BackendResult<()> {
    let mut names = txn.open_table(SNAPSHOT_NAMES).map_err(db_error)?;
    if names.get(record.name.as_str()).map_err(db_error)?.is_some() {
        return Err(BackendError::new(
            ErrorKind::AlreadyExists,
            format!("snapshot name {:?} is taken", record.name),
        ));
    }
    names
        .insert(record.name.as_str(), record.id.as_str())
        .map_err(db_error)?;
    let mut by_volume = txn.open_table(SNAPSHOTS_BY_VOLUME).map_err(db_error)?;
    let key = format!("{}/{}", record.source_volume_id, record.id);
    by_volume.insert(key.as_str(), ()).map_err(db_error)?;
    let mut snapshots = txn.open_table(SNAPSHOTS).map_err(db_error)?;
    snapshots
        .insert(record.id.as_str(), encode(record)?.as_slice())
        .map_err(db_error)?;
    Ok(())
}

/// Removes a snapshot record with its indexes; answers it, if there was one.
fn take_snapshot(txn: &redb::WriteTransaction, id: &str) -> BackendResult<Option<SnapshotRecord>> {
    let mut snapshots = txn.open_table(SNAPSHOTS).map_err(db_error)?;
    let removed: Option<SnapshotRecord> = match snapshots.remove(id).map_err(db_error)? {
        Some(v) => Some(decode(v.value())?),
        None => None,
    };
    if let Some(record) = &removed {
        let mut names = txn.open_table(SNAPSHOT_NAMES).map_err(db_error)?;
        names.remove(record.name.as_str()).map_err(db_error)?;
        let mut by_volume = txn.open_table(SNAPSHOTS_BY_VOLUME).map_err(db_error)?;
        let key = format!("{}/{}", record.source_volume_id, record.id);
        by_volume.remove(key.as_str()).map_err(db_error)?;
    }
    Ok(removed)
}

/// A group and its member records, read in one transaction.
fn read_group(
    txn: &redb::ReadTransaction,
    id: &str,
) -> BackendResult<Option<(GroupRecord, Vec<SnapshotRecord>)>> {
    let groups = txn.open_table(GROUPS).map_err(db_error)?;
    let Some(value) = groups.get(id).map_err(db_error)? else {
        return Ok(None);
    };
    let group: GroupRecord = decode(value.value())?;
    let snapshots = txn.open_table(SNAPSHOTS).map_err(db_error)?;
    let mut members = Vec::with_capacity(group.snapshot_ids.len());
    for member in &group.snapshot_ids {
        let value = snapshots
            .get(member.as_str())
            .map_err(db_error)?
            .ok_or_else(|| {
                db_error(format!(
                    "group {id} names member {member}, which has no record"
                ))
            })?;
        members.push(decode(value.value())?);
    }
    Ok(Some((group, members)))
}

/// Up to `limit` records of `table` after key `after` (exclusive), in key order, and whether
/// more follow. Reads only what it answers.
fn page_after<T: for<'de> Deserialize<'de>>(
    table: &redb::ReadOnlyTable<&str, &[u8]>,
    after: Option<&str>,
    limit: usize,
) -> BackendResult<(Vec<T>, bool)> {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut items = Vec::with_capacity(limit.min(1024));
    for entry in table
        .range::<&str>((start, Bound::Unbounded))
        .map_err(db_error)?
    {
        let (_, value) = entry.map_err(db_error)?;
        if items.len() == limit {
            return Ok((items, true));
        }
        items.push(decode(value.value())?);
    }
    Ok((items, false))
}

fn check_capacity(used: u64, new_used: u64, max_bytes: Option<u64>) -> BackendResult<()> {
    match max_bytes {
        Some(max) if new_used > max => Err(BackendError::new(
            ErrorKind::QuotaExceeded,
            format!(
                "local capacity exhausted: {} of {max} bytes provisioned, {} more requested \
                 (raise --max-capacity or delete volumes)",
                used,
                new_used - used
            ),
        )),
        _ => Ok(()),
    }
}
