//! An in-memory backend for tests and driver-overhead benchmarks (`--backend memory`).
//!
//! It keeps the same contract as every backend (checked by the conformance suite) but stores
//! nothing on disk and has no node side: volumes cannot be staged or mounted.

use crate::backend::{
    Backend, BackendError, BackendResult, Capabilities, CreateGroupSnapshot, CreateSnapshot,
    CreateVolume, ErrorKind, GroupSnapshot, GroupSnapshotId, Page, PageRequest, Snapshot,
    SnapshotFilter, SnapshotId, Volume, VolumeId,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Default)]
struct State {
    volumes: BTreeMap<String, Volume>,
    volume_names: HashMap<String, String>,
    snapshots: BTreeMap<String, Snapshot>,
    snapshot_names: HashMap<String, String>,
    /// Group id -> (name, member snapshot ids in order, creation time).
    groups: BTreeMap<String, (String, Vec<String>, SystemTime)>,
    group_names: HashMap<String, String>,
    next: u64,
}

impl State {
    fn next_id(&mut self, prefix: &str) -> String {
        self.next += 1;
        // Zero-padded so that string order is creation order, which paging relies on.
        format!("{prefix}{:016}", self.next)
    }

    fn group(&self, id: &str) -> Option<GroupSnapshot> {
        let (name, members, created_at) = self.groups.get(id)?;
        Some(GroupSnapshot {
            id: GroupSnapshotId::new(id),
            name: name.clone(),
            snapshots: members
                .iter()
                .filter_map(|m| self.snapshots.get(m).cloned())
                .collect(),
            created_at: *created_at,
        })
    }
}

/// The in-memory backend.
#[derive(Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
    capacity: Option<u64>,
}

impl MemoryBackend {
    /// An empty backend; `capacity` bounds the bytes provisioned to volumes.
    pub fn new(capacity: Option<u64>) -> Self {
        Self {
            state: Mutex::default(),
            capacity,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn page_of<T: Clone>(
    map: &BTreeMap<String, T>,
    page: &PageRequest,
    keep: impl Fn(&T) -> bool,
) -> Page<T> {
    let start = page
        .cursor
        .as_deref()
        .map_or(Bound::Unbounded, Bound::Excluded);
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    for (key, value) in map.range::<str, _>((start, Bound::Unbounded)) {
        if !keep(value) {
            continue;
        }
        if items.len() == page.max_entries {
            more = true;
            break;
        }
        items.push(value.clone());
        last = Some(key.clone());
    }
    Page {
        items,
        next_cursor: if more { last } else { None },
    }
}

fn check_cursor(prefix: &str, page: &PageRequest) -> BackendResult<()> {
    match &page.cursor {
        Some(c) if !c.starts_with(prefix) => Err(BackendError::new(
            ErrorKind::InvalidCursor,
            format!("{c:?} is not a position in this list"),
        )),
        _ => Ok(()),
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            create_delete_volume: true,
            create_delete_snapshot: true,
            restore_snapshot: true,
            clone_volume: true,
            expand_volume: true,
            get_capacity: self.capacity.is_some(),
            size_granularity_bytes: 1,
            min_volume_bytes: 0,
            node_local: false,
            group_snapshot: true,
            snapshot_metadata: false,
            attach: false,
            zones: false,
        }
    }

    async fn health(&self) -> BackendResult<()> {
        Ok(())
    }

    async fn available_capacity(&self) -> BackendResult<Option<u64>> {
        let used: u64 = self.state().volumes.values().map(|v| v.size_bytes).sum();
        Ok(self.capacity.map(|c| c.saturating_sub(used)))
    }

    async fn create_volume(&self, request: &CreateVolume) -> BackendResult<Volume> {
        let mut state = self.state();
        if let Some(capacity) = self.capacity {
            let used: u64 = state.volumes.values().map(|v| v.size_bytes).sum();
            if used.saturating_add(request.size_bytes) > capacity {
                return Err(BackendError::new(
                    ErrorKind::QuotaExceeded,
                    format!("capacity exhausted: {used} of {capacity} bytes provisioned"),
                ));
            }
        }
        let id = state.next_id("mvol-");
        let volume = Volume {
            id: VolumeId::new(&id),
            name: request.name.clone(),
            size_bytes: request.size_bytes,
            source: request.source.clone(),
            ready: true,
            zone: None,
        };
        state.volume_names.insert(request.name.clone(), id.clone());
        state.volumes.insert(id, volume.clone());
        Ok(volume)
    }

    async fn get_volume(&self, id: &VolumeId) -> BackendResult<Option<Volume>> {
        Ok(self.state().volumes.get(id.as_str()).cloned())
    }

    async fn find_volume_by_name(&self, name: &str) -> BackendResult<Option<Volume>> {
        let state = self.state();
        Ok(state
            .volume_names
            .get(name)
            .and_then(|id| state.volumes.get(id))
            .cloned())
    }

    async fn delete_volume(&self, id: &VolumeId) -> BackendResult<()> {
        let mut state = self.state();
        if let Some(volume) = state.volumes.remove(id.as_str()) {
            state.volume_names.remove(&volume.name);
        }
        Ok(())
    }

    async fn expand_volume(&self, id: &VolumeId, new_size_bytes: u64) -> BackendResult<u64> {
        let mut state = self.state();
        let volume = state
            .volumes
            .get_mut(id.as_str())
            .ok_or_else(|| BackendError::not_found(format!("volume {id} does not exist")))?;
        volume.size_bytes = volume.size_bytes.max(new_size_bytes);
        Ok(volume.size_bytes)
    }

    async fn list_volumes(&self, page: &PageRequest) -> BackendResult<Page<Volume>> {
        check_cursor("mvol-", page)?;
        Ok(page_of(&self.state().volumes, page, |_| true))
    }

    async fn create_snapshot(&self, request: &CreateSnapshot) -> BackendResult<Snapshot> {
        let mut state = self.state();
        let size_bytes = state
            .volumes
            .get(request.source_volume_id.as_str())
            .map(|v| v.size_bytes)
            .ok_or_else(|| {
                BackendError::not_found(format!(
                    "source volume {} does not exist",
                    request.source_volume_id
                ))
            })?;
        let id = state.next_id("msnap-");
        let snapshot = Snapshot {
            id: SnapshotId::new(&id),
            name: request.name.clone(),
            source_volume_id: request.source_volume_id.clone(),
            size_bytes,
            created_at: SystemTime::now(),
            ready: true,
            group_snapshot_id: None,
        };
        state
            .snapshot_names
            .insert(request.name.clone(), id.clone());
        state.snapshots.insert(id, snapshot.clone());
        Ok(snapshot)
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> BackendResult<Option<Snapshot>> {
        Ok(self.state().snapshots.get(id.as_str()).cloned())
    }

    async fn find_snapshot_by_name(&self, name: &str) -> BackendResult<Option<Snapshot>> {
        let state = self.state();
        Ok(state
            .snapshot_names
            .get(name)
            .and_then(|id| state.snapshots.get(id))
            .cloned())
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> BackendResult<()> {
        let mut state = self.state();
        if let Some(group) = state
            .snapshots
            .get(id.as_str())
            .and_then(|s| s.group_snapshot_id.as_ref())
        {
            return Err(BackendError::group_member(id, group));
        }
        if let Some(snapshot) = state.snapshots.remove(id.as_str()) {
            state.snapshot_names.remove(&snapshot.name);
        }
        Ok(())
    }

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: &PageRequest,
    ) -> BackendResult<Page<Snapshot>> {
        check_cursor("msnap-", page)?;
        Ok(page_of(&self.state().snapshots, page, |s| {
            filter
                .source_volume_id
                .as_ref()
                .is_none_or(|v| &s.source_volume_id == v)
        }))
    }

    async fn create_group_snapshot(
        &self,
        request: &CreateGroupSnapshot,
    ) -> BackendResult<GroupSnapshot> {
        // One lock for the whole group: no write can land between two members.
        let mut state = self.state();
        let mut sizes = Vec::with_capacity(request.source_volume_ids.len());
        for volume in &request.source_volume_ids {
            let size = state.volumes.get(volume.as_str()).map(|v| v.size_bytes);
            sizes.push(size.ok_or_else(|| {
                BackendError::not_found(format!("source volume {volume} does not exist"))
            })?);
        }
        let group_id = state.next_id("mgrp-");
        let created_at = SystemTime::now();
        let mut members = Vec::with_capacity(sizes.len());
        for (volume, size_bytes) in request.source_volume_ids.iter().zip(sizes) {
            let id = state.next_id("msnap-");
            let snapshot = Snapshot {
                id: SnapshotId::new(&id),
                name: crate::backend::group_member_name(&request.name, volume),
                source_volume_id: volume.clone(),
                size_bytes,
                created_at,
                ready: true,
                group_snapshot_id: Some(GroupSnapshotId::new(&group_id)),
            };
            state
                .snapshot_names
                .insert(snapshot.name.clone(), id.clone());
            state.snapshots.insert(id.clone(), snapshot);
            members.push(id);
        }
        state
            .group_names
            .insert(request.name.clone(), group_id.clone());
        state.groups.insert(
            group_id.clone(),
            (request.name.clone(), members, created_at),
        );
        state
            .group(&group_id)
            .ok_or_else(|| BackendError::internal("group vanished while being created"))
    }

    async fn get_group_snapshot(
        &self,
        id: &GroupSnapshotId,
    ) -> BackendResult<Option<GroupSnapshot>> {
        Ok(self.state().group(id.as_str()))
    }

    async fn find_group_snapshot_by_name(
        &self,
        name: &str,
    ) -> BackendResult<Option<GroupSnapshot>> {
        let state = self.state();
        Ok(state.group_names.get(name).and_then(|id| state.group(id)))
    }

    async fn delete_group_snapshot(&self, id: &GroupSnapshotId) -> BackendResult<()> {
        let mut state = self.state();
        if let Some((name, members, _)) = state.groups.remove(id.as_str()) {
            state.group_names.remove(&name);
            for member in members {
                if let Some(snapshot) = state.snapshots.remove(&member) {
                    state.snapshot_names.remove(&snapshot.name);
                }
            }
        }
        Ok(())
    }
}
