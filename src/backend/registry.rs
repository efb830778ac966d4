//! Named backend instances from the config file, served as one backend.
//!
//! A config file may name several instances (clouds, regions, the local store). A
//! StorageClass or VolumeSnapshotClass picks one with the `backend` parameter (the configured
//! `default_backend` otherwise). When more than one instance is configured, every id the
//! driver hands out is qualified as `<instance>:<backend id>` so that calls carrying only an id
//! (delete, get, expand) reach the instance that made the object. With one instance, ids are
//! the backend's own.

use crate::backend::metadata::BlockRanges;
use crate::backend::{
    Backend, BackendError, BackendResult, Capabilities, CreateGroupSnapshot, CreateSnapshot,
    CreateVolume, ErrorKind, GroupSnapshot, GroupSnapshotId, Page, PageRequest, PublishContext,
    PublishVolume, Snapshot, SnapshotFilter, SnapshotId, Volume, VolumeId, VolumeSource,
};
use crate::secret::Secrets;
use async_trait::async_trait;
use std::sync::Arc;

/// The parameter (StorageClass / VolumeSnapshotClass) that picks an instance.
pub const BACKEND_PARAMETER: &str = "backend";

/// One named instance.
#[derive(Clone)]
pub struct Instance {
    /// Name from the config file (`[backends.<name>]`).
    pub name: String,
    /// The backend.
    pub backend: Arc<dyn Backend>,
}

/// Several instances as one backend.
#[derive(Clone)]
pub struct Registry {
    instances: Vec<Instance>,
    default: usize,
}

impl Registry {
    /// A registry over `instances` (at least one); `default` indexes the default instance.
    pub fn new(instances: Vec<Instance>, default: usize) -> Result<Self, String> {
        if instances.is_empty() {
            return Err("no backend instance is configured".to_owned());
        }
        if default >= instances.len() {
            return Err("default backend index out of range".to_owned());
        }
        Ok(Self { instances, default })
    }

    /// The instances, in config order.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    fn qualified(&self) -> bool {
        self.instances.len() > 1
    }

    /// Splits a driver id into (instance index, backend id). `None`: no such instance, so the
    /// object cannot exist.
    pub(crate) fn split<'a>(&self, id: &'a str) -> Option<(usize, &'a str)> {
        if !self.qualified() {
            return Some((0, id));
        }
        let (name, rest) = id.split_once(':')?;
        let index = self.instances.iter().position(|i| i.name == name)?;
        Some((index, rest))
    }

    pub(crate) fn qualify(&self, index: usize, id: &str) -> String {
        if self.qualified() {
            format!("{}:{id}", self.instances[index].name)
        } else {
            id.to_owned()
        }
    }

    fn volume_out(&self, index: usize, mut volume: Volume) -> Volume {
        volume.id = VolumeId::new(self.qualify(index, volume.id.as_str()));
        volume.source = volume.source.map(|s| self.source_out(index, s));
        volume
    }

    fn source_out(&self, index: usize, source: VolumeSource) -> VolumeSource {
        match source {
            VolumeSource::Snapshot(id) => {
                VolumeSource::Snapshot(SnapshotId::new(self.qualify(index, id.as_str())))
            }
            VolumeSource::Volume(id) => {
                VolumeSource::Volume(VolumeId::new(self.qualify(index, id.as_str())))
            }
        }
    }

    fn snapshot_out(&self, index: usize, mut snapshot: Snapshot) -> Snapshot {
        snapshot.id = SnapshotId::new(self.qualify(index, snapshot.id.as_str()));
        snapshot.source_volume_id =
            VolumeId::new(self.qualify(index, snapshot.source_volume_id.as_str()));
        snapshot.group_snapshot_id = snapshot
            .group_snapshot_id
            .map(|g| GroupSnapshotId::new(self.qualify(index, g.as_str())));
        snapshot
    }

    fn group_out(&self, index: usize, mut group: GroupSnapshot) -> GroupSnapshot {
        group.id = GroupSnapshotId::new(self.qualify(index, group.id.as_str()));
        group.snapshots = group
            .snapshots
            .into_iter()
            .map(|s| self.snapshot_out(index, s))
            .collect();
        group
    }

    fn pick(
        &self,
        parameters: &std::collections::BTreeMap<String, String>,
    ) -> BackendResult<usize> {
        match parameters.get(BACKEND_PARAMETER) {
            None => Ok(self.default),
            Some(name) => self
                .instances
                .iter()
                .position(|i| &i.name == name)
                .ok_or_else(|| {
                    BackendError::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "parameters.{BACKEND_PARAMETER}: no backend instance named {name:?} \
                             (configured: {})",
                            self.names()
                        ),
                    )
                }),
        }
    }

    /// One page of a list over every instance in turn. The cursor is
    /// `<instance index>/<that instance's cursor>`; an instance with nothing left hands over
    /// to the next one.
    async fn walk<T: Send>(
        &self,
        page: &PageRequest,
        list: &(dyn Lister<T> + Sync),
    ) -> BackendResult<Page<T>> {
        let (mut index, mut cursor) = match &page.cursor {
            None => (0, None),
            Some(c) => split_cursor(c)
                .filter(|(i, _)| *i < self.instances.len())
                .ok_or_else(|| {
                    BackendError::new(ErrorKind::InvalidCursor, format!("{c:?} is not a position"))
                })?,
        };
        loop {
            let inner = PageRequest {
                cursor: cursor.take(),
                max_entries: page.max_entries,
            };
            let result = list.list(index, inner).await?;
            let last_instance = index + 1 >= self.instances.len();
            match result.next_cursor {
                Some(next) => {
                    return Ok(Page {
                        items: result.items,
                        next_cursor: Some(format!("{index}/{next}")),
                    });
                }
                None if last_instance => {
                    return Ok(Page {
                        items: result.items,
                        next_cursor: None,
                    });
                }
                None if !result.items.is_empty() => {
                    return Ok(Page {
                        items: result.items,
                        next_cursor: Some(format!("{}/", index + 1)),
                    });
                }
                None => index += 1,
            }
        }
    }

    fn names(&self) -> String {
        self.instances
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn not_here(what: &str, id: &str) -> BackendError {
    BackendError::not_found(format!("{what} {id} does not exist"))
}

/// One instance's page of some list, for [`Registry::walk`].
#[async_trait]
trait Lister<T> {
    async fn list(&self, index: usize, page: PageRequest) -> BackendResult<Page<T>>;
}

struct Volumes<'a>(&'a Registry);

#[async_trait]
impl Lister<Volume> for Volumes<'_> {
    async fn list(&self, index: usize, page: PageRequest) -> BackendResult<Page<Volume>> {
        let registry = self.0;
        let result = registry.instances[index]
            .backend
            .list_volumes(&page)
            .await?;
        Ok(Page {
            items: result
                .items
                .into_iter()
                .map(|v| registry.volume_out(index, v))
                .collect(),
            next_cursor: result.next_cursor,
        })
    }
}

struct Snapshots<'a>(&'a Registry, &'a SnapshotFilter);

#[async_trait]
impl Lister<Snapshot> for Snapshots<'_> {
    async fn list(&self, index: usize, page: PageRequest) -> BackendResult<Page<Snapshot>> {
        let registry = self.0;
        let result = registry.instances[index]
            .backend
            .list_snapshots(self.1, &page)
            .await?;
        Ok(Page {
            items: result
                .items
                .into_iter()
                .map(|s| registry.snapshot_out(index, s))
                .collect(),
            next_cursor: result.next_cursor,
        })
    }
}

/// A cursor over the instances: `<instance index>/<instance cursor>` (empty = its first page).
pub(crate) fn split_cursor(cursor: &str) -> Option<(usize, Option<String>)> {
    let (index, rest) = cursor.split_once('/')?;
    let index = index.parse().ok()?;
    Some((index, (!rest.is_empty()).then(|| rest.to_owned())))
}

#[async_trait]
impl Backend for Registry {
    fn kind(&self) -> &'static str {
        if self.qualified() {
            "registry"
        } else {
            self.instances[0].backend.kind()
        }
    }

    fn capabilities(&self) -> Capabilities {
        // Advertised = what at least one instance does; an instance that cannot do a call
        // answers it with a clear error naming itself.
        self.instances
            .iter()
            .map(|i| i.backend.capabilities())
            .reduce(|a, b| Capabilities {
                create_delete_volume: a.create_delete_volume || b.create_delete_volume,
                create_delete_snapshot: a.create_delete_snapshot || b.create_delete_snapshot,
                restore_snapshot: a.restore_snapshot || b.restore_snapshot,
                clone_volume: a.clone_volume || b.clone_volume,
                expand_volume: a.expand_volume || b.expand_volume,
                get_capacity: a.get_capacity || b.get_capacity,
                size_granularity_bytes: a.size_granularity_bytes.max(b.size_granularity_bytes),
                min_volume_bytes: a.min_volume_bytes.max(b.min_volume_bytes),
                node_local: a.node_local || b.node_local,
                group_snapshot: a.group_snapshot || b.group_snapshot,
                snapshot_metadata: a.snapshot_metadata || b.snapshot_metadata,
                attach: a.attach || b.attach,
                zones: a.zones || b.zones,
            })
            .unwrap_or(self.instances[self.default].backend.capabilities())
    }

    fn creates_outlive_process(&self) -> bool {
        self.instances
            .iter()
            .any(|i| i.backend.creates_outlive_process())
    }

    fn with_secrets(&self, secrets: &Secrets) -> BackendResult<Option<Arc<dyn Backend>>> {
        if secrets.is_empty() {
            return Ok(None);
        }
        let mut changed = false;
        let mut instances = Vec::with_capacity(self.instances.len());
        for instance in &self.instances {
            let backend = match instance.backend.with_secrets(secrets)? {
                Some(scoped) => {
                    changed = true;
                    scoped
                }
                None => Arc::clone(&instance.backend),
            };
            instances.push(Instance {
                name: instance.name.clone(),
                backend,
            });
        }
        Ok(changed.then(|| {
            Arc::new(Registry {
                instances,
                default: self.default,
            }) as Arc<dyn Backend>
        }))
    }

    async fn health(&self) -> BackendResult<()> {
        for instance in &self.instances {
            instance.backend.health().await.map_err(|e| BackendError {
                message: format!("backend {}: {}", instance.name, e.message),
                ..e
            })?;
        }
        Ok(())
    }

    async fn available_capacity(&self) -> BackendResult<Option<u64>> {
        self.instances[self.default]
            .backend
            .available_capacity()
            .await
    }

    async fn create_volume(&self, request: &CreateVolume) -> BackendResult<Volume> {
        let index = self.pick(&request.parameters)?;
        let mut inner = request.clone();
        inner.parameters.remove(BACKEND_PARAMETER);
        inner.source = match &request.source {
            None => None,
            Some(source) => {
                let (id, what) = match source {
                    VolumeSource::Snapshot(id) => (id.as_str(), "source snapshot"),
                    VolumeSource::Volume(id) => (id.as_str(), "source volume"),
                };
                let (source_index, raw) = self.split(id).ok_or_else(|| not_here(what, id))?;
                if source_index != index {
                    return Err(BackendError::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "volume_content_source: {what} {id} lives in backend {}, the new \
                             volume in backend {}",
                            self.instances[source_index].name, self.instances[index].name
                        ),
                    ));
                }
                Some(match source {
                    VolumeSource::Snapshot(_) => VolumeSource::Snapshot(SnapshotId::new(raw)),
                    VolumeSource::Volume(_) => VolumeSource::Volume(VolumeId::new(raw)),
                })
            }
        };
        let volume = self.instances[index].backend.create_volume(&inner).await?;
        Ok(self.volume_out(index, volume))
    }

    async fn get_volume(&self, id: &VolumeId) -> BackendResult<Option<Volume>> {
        let Some((index, raw)) = self.split(id.as_str()) else {
            return Ok(None);
        };
        let found = self.instances[index]
            .backend
            .get_volume(&VolumeId::new(raw))
            .await?;
        Ok(found.map(|v| self.volume_out(index, v)))
    }

    async fn find_volume_by_name(&self, name: &str) -> BackendResult<Option<Volume>> {
        for (index, instance) in self.instances.iter().enumerate() {
            if let Some(v) = instance.backend.find_volume_by_name(name).await? {
                return Ok(Some(self.volume_out(index, v)));
            }
        }
        Ok(None)
    }

    async fn delete_volume(&self, id: &VolumeId) -> BackendResult<()> {
        match self.split(id.as_str()) {
            None => Ok(()),
            Some((index, raw)) => {
                self.instances[index]
                    .backend
                    .delete_volume(&VolumeId::new(raw))
                    .await
            }
        }
    }

    async fn expand_volume(&self, id: &VolumeId, new_size_bytes: u64) -> BackendResult<u64> {
        let (index, raw) = self
            .split(id.as_str())
            .ok_or_else(|| not_here("volume", id.as_str()))?;
        self.instances[index]
            .backend
            .expand_volume(&VolumeId::new(raw), new_size_bytes)
            .await
    }

    async fn publish_volume(&self, request: &PublishVolume) -> BackendResult<PublishContext> {
        let id = request.volume_id.as_str();
        let (index, raw) = self.split(id).ok_or_else(|| not_here("volume", id))?;
        let mut inner = request.clone();
        inner.volume_id = VolumeId::new(raw);
        self.instances[index].backend.publish_volume(&inner).await
    }

    async fn unpublish_volume(&self, volume: &VolumeId, node_id: &str) -> BackendResult<()> {
        match self.split(volume.as_str()) {
            None => Ok(()),
            Some((index, raw)) => {
                self.instances[index]
                    .backend
                    .unpublish_volume(&VolumeId::new(raw), node_id)
                    .await
            }
        }
    }

    async fn node_zone(&self, node_id: &str) -> BackendResult<Option<String>> {
        for instance in self
            .instances
            .iter()
            .filter(|i| i.backend.capabilities().zones)
        {
            if let Some(zone) = instance.backend.node_zone(node_id).await? {
                return Ok(Some(zone));
            }
        }
        Ok(None)
    }

    async fn list_volumes(&self, page: &PageRequest) -> BackendResult<Page<Volume>> {
        if !self.qualified() {
            return self.instances[0].backend.list_volumes(page).await;
        }
        self.walk(page, &Volumes(self)).await
    }

    async fn create_snapshot(&self, request: &CreateSnapshot) -> BackendResult<Snapshot> {
        let id = request.source_volume_id.as_str();
        let (index, raw) = self
            .split(id)
            .ok_or_else(|| not_here("source volume", id))?;
        let mut inner = request.clone();
        inner.source_volume_id = VolumeId::new(raw);
        inner.parameters.remove(BACKEND_PARAMETER);
        let snapshot = self.instances[index]
            .backend
            .create_snapshot(&inner)
            .await?;
        Ok(self.snapshot_out(index, snapshot))
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> BackendResult<Option<Snapshot>> {
        let Some((index, raw)) = self.split(id.as_str()) else {
            return Ok(None);
        };
        let found = self.instances[index]
            .backend
            .get_snapshot(&SnapshotId::new(raw))
            .await?;
        Ok(found.map(|s| self.snapshot_out(index, s)))
    }

    async fn find_snapshot_by_name(&self, name: &str) -> BackendResult<Option<Snapshot>> {
        for (index, instance) in self.instances.iter().enumerate() {
            if let Some(s) = instance.backend.find_snapshot_by_name(name).await? {
                return Ok(Some(self.snapshot_out(index, s)));
            }
        }
        Ok(None)
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> BackendResult<()> {
        match self.split(id.as_str()) {
            None => Ok(()),
            Some((index, raw)) => {
                self.instances[index]
                    .backend
                    .delete_snapshot(&SnapshotId::new(raw))
                    .await
            }
        }
    }

    async fn allocated_blocks(
        &self,
        snapshot: &SnapshotId,
        from: u64,
    ) -> BackendResult<Box<dyn BlockRanges>> {
        let (index, raw) = self
            .split(snapshot.as_str())
            .ok_or_else(|| not_here("snapshot", snapshot.as_str()))?;
        self.instances[index]
            .backend
            .allocated_blocks(&SnapshotId::new(raw), from)
            .await
    }

    async fn changed_blocks(
        &self,
        base: &SnapshotId,
        target: &SnapshotId,
        from: u64,
    ) -> BackendResult<Box<dyn BlockRanges>> {
        let (base_index, base_raw) = self
            .split(base.as_str())
            .ok_or_else(|| not_here("base snapshot", base.as_str()))?;
        let (index, target_raw) = self
            .split(target.as_str())
            .ok_or_else(|| not_here("target snapshot", target.as_str()))?;
        if base_index != index {
            return Err(BackendError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "base_snapshot_id {base} and target_snapshot_id {target} live in different \
                     backend instances, so they cannot be snapshots of one volume"
                ),
            ));
        }
        self.instances[index]
            .backend
            .changed_blocks(
                &SnapshotId::new(base_raw),
                &SnapshotId::new(target_raw),
                from,
            )
            .await
    }

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: &PageRequest,
    ) -> BackendResult<Page<Snapshot>> {
        if !self.qualified() {
            return self.instances[0].backend.list_snapshots(filter, page).await;
        }
        if let Some(volume) = &filter.source_volume_id {
            let Some((index, raw)) = self.split(volume.as_str()) else {
                return Ok(Page {
                    items: Vec::new(),
                    next_cursor: None,
                });
            };
            let inner_filter = SnapshotFilter {
                source_volume_id: Some(VolumeId::new(raw)),
            };
            let result = self.instances[index]
                .backend
                .list_snapshots(&inner_filter, page)
                .await?;
            return Ok(Page {
                items: result
                    .items
                    .into_iter()
                    .map(|s| self.snapshot_out(index, s))
                    .collect(),
                next_cursor: result.next_cursor,
            });
        }
        self.walk(page, &Snapshots(self, filter)).await
    }

    async fn create_group_snapshot(
        &self,
        request: &CreateGroupSnapshot,
    ) -> BackendResult<GroupSnapshot> {
        let mut index = None;
        let mut inner = request.clone();
        inner.parameters.remove(BACKEND_PARAMETER);
        inner.source_volume_ids.clear();
        for volume in &request.source_volume_ids {
            let (i, raw) = self
                .split(volume.as_str())
                .ok_or_else(|| not_here("source volume", volume.as_str()))?;
            if index.is_some_and(|first| first != i) {
                // CSI: "Cannot snapshot multiple volumes together" -> FAILED_PRECONDITION.
                return Err(BackendError::new(
                    ErrorKind::FailedPrecondition,
                    "source_volume_ids: the volumes live in different backend instances; \
                     a group snapshot is taken within one instance",
                ));
            }
            index = Some(i);
            inner.source_volume_ids.push(VolumeId::new(raw));
        }
        let index = index.unwrap_or(self.default);
        let instance = &self.instances[index];
        if !instance.backend.capabilities().group_snapshot {
            // The service is advertised (another instance offers it), so not UNIMPLEMENTED:
            // these volumes "cannot be snapshotted together" -> FAILED_PRECONDITION.
            return Err(BackendError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "source_volume_ids: backend instance {} ({}) does not offer group snapshots",
                    instance.name,
                    instance.backend.kind()
                ),
            ));
        }
        let group = instance.backend.create_group_snapshot(&inner).await?;
        Ok(self.group_out(index, group))
    }

    async fn get_group_snapshot(
        &self,
        id: &GroupSnapshotId,
    ) -> BackendResult<Option<GroupSnapshot>> {
        let Some((index, raw)) = self.split(id.as_str()) else {
            return Ok(None);
        };
        let backend = &self.instances[index].backend;
        if !backend.capabilities().group_snapshot {
            // No group can live there.
            return Ok(None);
        }
        let found = backend
            .get_group_snapshot(&GroupSnapshotId::new(raw))
            .await?;
        Ok(found.map(|g| self.group_out(index, g)))
    }

    async fn find_group_snapshot_by_name(
        &self,
        name: &str,
    ) -> BackendResult<Option<GroupSnapshot>> {
        for (index, instance) in self.instances.iter().enumerate() {
            if !instance.backend.capabilities().group_snapshot {
                continue;
            }
            if let Some(g) = instance.backend.find_group_snapshot_by_name(name).await? {
                return Ok(Some(self.group_out(index, g)));
            }
        }
        Ok(None)
    }

    async fn delete_group_snapshot(&self, id: &GroupSnapshotId) -> BackendResult<()> {
        match self.split(id.as_str()) {
            Some((index, raw)) if self.instances[index].backend.capabilities().group_snapshot => {
                self.instances[index]
                    .backend
                    .delete_group_snapshot(&GroupSnapshotId::new(raw))
                    .await
            }
            // No such instance, or one where no group can live: nothing to delete.
            _ => Ok(()),
        }
    }
}

/// A byte size in the config file: an integer, or a string such as `"100Gi"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => crate::values::parse_size(&t)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// `type = "local"` keys.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// Where images and metadata live.
    pub data_dir: std::path::PathBuf,
    /// Bytes the instance may provision in total.
    pub max_capacity: Option<ByteSize>,
}

/// `type = "memory"` keys.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    /// Bytes the instance may provision in total.
    pub capacity: Option<ByteSize>,
}

/// Deserializes one instance's table into its type's section, naming the key on error.
pub fn section<T: serde::de::DeserializeOwned>(
    file: &str,
    name: &str,
    table: &toml::Table,
) -> Result<T, crate::config::ConfigError> {
    let mut table = table.clone();
    table.remove("type");
    T::deserialize(toml::Value::Table(table)).map_err(|e| crate::config::ConfigError {
        file: file.to_owned(),
        key: format!("backends.{name}"),
        message: e.message().to_owned(),
    })
}

/// Builds every instance of a config file into one registry. Every problem is reported at
/// start-up, naming the file, the key and what is wrong.
pub fn build(
    file: &str,
    config: &crate::config::FileConfig,
) -> Result<Registry, crate::config::ConfigError> {
    use crate::config::ConfigError;
    let error = |key: String, message: String| ConfigError {
        file: file.to_owned(),
        key,
        message,
    };
    let mut instances = Vec::new();
    for (name, table) in &config.backends {
        instances.push(Instance {
            name: name.clone(),
            backend: build_instance(file, config, name, table)?,
        });
    }
    let default = match &config.default_backend {
        Some(d) => instances.iter().position(|i| &i.name == d).unwrap_or(0),
        None => 0,
    };
    Registry::new(instances, default).map_err(|m| error("backends".into(), m))
}

/// One instance's table, read into its type's section and checked, before anything is opened.
#[derive(Debug)]
pub enum Section {
    /// `type = "local"`.
    Local(LocalSection),
    /// `type = "memory"`.
    Memory(MemorySection),
    /// `type = "softlayer"`.
    SoftLayer(crate::backend::softlayer::SoftLayerConfig),
    /// `type = "deltacloud"`.
    Deltacloud(crate::backend::deltacloud::DeltacloudConfig),
    /// `type = "scp"`.
    Scp(crate::backend::scp::ScpConfig),
    /// `type = "cinder"` (boxed: by far the largest section).
    Cinder(Box<crate::backend::cinder::config::CinderConfig>),
}

/// Reads one named instance's table (`type` plus that type's keys) without side effects: no
/// directory is created, no file read, nothing sent.
pub fn parse_section(
    file: &str,
    name: &str,
    table: &toml::Table,
) -> Result<Section, crate::config::ConfigError> {
    use crate::config::ConfigError;
    let error = |key: String, message: String| ConfigError {
        file: file.to_owned(),
        key,
        message,
    };
    let kind = table.get("type").and_then(|v| v.as_str()).ok_or_else(|| {
        error(
            format!("backends.{name}.type"),
            "missing (e.g. type = \"local\")".into(),
        )
    })?;
    Ok(match kind {
        "local" => Section::Local(section(file, name, table)?),
        "memory" => Section::Memory(section(file, name, table)?),
        "softlayer" => Section::SoftLayer(section(file, name, table)?),
        "deltacloud" => Section::Deltacloud(section(file, name, table)?),
        "scp" => Section::Scp(section(file, name, table)?),
        "cinder" => {
            let s: crate::backend::cinder::config::CinderConfig = section(file, name, table)?;
            s.validate()
                .map_err(|e| error(format!("backends.{name}.{}", e.key), e.message))?;
            Section::Cinder(Box::new(s))
        }
        other => {
            return Err(error(
                format!("backends.{name}.type"),
                format!(
                    "unknown backend type {other:?} (known: local, memory, scp, softlayer, \
                     deltacloud, cinder)"
                ),
            ));
        }
    })
}

/// Builds one named instance from its table (`type` plus that type's keys).
pub fn build_instance(
    file: &str,
    config: &crate::config::FileConfig,
    name: &str,
    table: &toml::Table,
) -> Result<Arc<dyn Backend>, crate::config::ConfigError> {
    use crate::config::ConfigError;
    let error = |key: String, message: String| ConfigError {
        file: file.to_owned(),
        key,
        message,
    };
    let backend: Arc<dyn Backend> = match parse_section(file, name, table)? {
        Section::Local(s) => Arc::new(
            crate::backend::local::LocalBackend::open(crate::backend::local::LocalConfig {
                data_dir: s.data_dir,
                max_capacity: s.max_capacity.map(|b| b.0),
            })
            .map_err(|e| error(format!("backends.{name}.data_dir"), e.message))?,
        ),
        Section::Memory(s) => Arc::new(crate::backend::memory::MemoryBackend::new(
            s.capacity.map(|b| b.0),
        )),
        Section::SoftLayer(s) => Arc::new(
            crate::backend::softlayer::SoftLayerBackend::new(&s, config.cluster_id.clone())
                .map_err(|m| error(format!("backends.{name}"), m))?,
        ),
        Section::Deltacloud(s) => Arc::new(
            crate::backend::deltacloud::DeltacloudBackend::new(&s, config.cluster_id.clone())
                .map_err(|m| error(format!("backends.{name}"), m))?,
        ),
        Section::Scp(s) => Arc::new(
            crate::backend::scp::ScpBackend::new(
                s,
                config.cluster_id.clone(),
                crate::backend::scp::time::Date::today(),
            )
            .map_err(|e| error(format!("backends.{name}.{}", e.key), e.message))?,
        ),
        Section::Cinder(s) => Arc::new(
            crate::backend::cinder::CinderBackend::new(*s, config.cluster_id.clone())
                .map_err(|m| error(format!("backends.{name}"), m))?,
        ),
    };
    Ok(backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance;

    #[tokio::test]
    async fn two_instances_conform_and_route_by_parameter() {
        let config = crate::config::FileConfig::parse(
            "t.toml",
            "default_backend = \"a\"\n[backends.a]\ntype = \"memory\"\n[backends.b]\ntype = \"memory\"\n",
        )
        .expect("config");
        let registry = build("t.toml", &config).expect("registry");
        let registry: Arc<dyn Backend> = Arc::new(registry);
        assert_eq!(conformance::run(Arc::clone(&registry), "reg").await, Ok(10));
        let request = CreateVolume {
            name: "in-b".into(),
            size_bytes: 1,
            source: None,
            parameters: [(BACKEND_PARAMETER.to_owned(), "b".to_owned())].into(),
            zone: None,
        };
        let volume = registry.create_volume(&request).await.expect("create");
        assert!(volume.id.as_str().starts_with("b:"), "{}", volume.id);
        assert!(
            registry
                .get_volume(&volume.id)
                .await
                .expect("get")
                .is_some()
        );
        let in_a = registry
            .create_volume(&CreateVolume {
                name: "in-a".into(),
                parameters: Default::default(),
                ..request.clone()
            })
            .await
            .expect("create in a");
        let across = registry
            .create_group_snapshot(&CreateGroupSnapshot {
                name: "across".into(),
                source_volume_ids: vec![in_a.id.clone(), volume.id.clone()],
                parameters: Default::default(),
            })
            .await
            .expect_err("a group cannot span instances");
        assert_eq!(across.kind, ErrorKind::FailedPrecondition);
        let group = registry
            .create_group_snapshot(&CreateGroupSnapshot {
                name: "within-b".into(),
                source_volume_ids: vec![volume.id.clone()],
                parameters: Default::default(),
            })
            .await
            .expect("group within b");
        assert!(group.id.as_str().starts_with("b:"), "{}", group.id);
        assert_eq!(
            group.snapshots[0].group_snapshot_id.as_ref(),
            Some(&group.id)
        );
        let found = registry
            .get_group_snapshot(&group.id)
            .await
            .expect("get group");
        assert_eq!(found.map(|g| g.id), Some(group.id));
        let unknown = CreateVolume {
            parameters: [(BACKEND_PARAMETER.to_owned(), "zz".to_owned())].into(),
            ..request
        };
        let err = registry
            .create_volume(&unknown)
            .await
            .expect_err("unknown instance");
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("zz"));
    }

    /// With a group-capable and a group-less instance, the service is advertised, so a group
    /// on the group-less one is FAILED_PRECONDITION (never UNIMPLEMENTED), and its ids hold
    /// no group.
    #[tokio::test]
    async fn groups_on_an_instance_without_them_are_a_failed_precondition() {
        let config = crate::config::FileConfig::parse(
            "t.toml",
            "default_backend = \"m\"\n[backends.m]\ntype = \"memory\"\n[backends.c]\n\
             type = \"cinder\"\nauth_type = \"noauth\"\n\
             endpoint = \"http://127.0.0.1:9/v3/{project_id}\"\nproject_id = \"p\"\n",
        )
        .expect("config");
        let registry = build("t.toml", &config).expect("registry");
        assert!(registry.capabilities().group_snapshot);
        let err = registry
            .create_group_snapshot(&CreateGroupSnapshot {
                name: "g".into(),
                source_volume_ids: vec![VolumeId::new("c:some-volume")],
                parameters: Default::default(),
            })
            .await
            .expect_err("cinder offers no groups");
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(
            err.message.contains("instance c (cinder)"),
            "{}",
            err.message
        );
        let id = GroupSnapshotId::new("c:some-group");
        assert_eq!(registry.get_group_snapshot(&id).await, Ok(None));
        assert_eq!(registry.delete_group_snapshot(&id).await, Ok(()));
        assert_eq!(registry.find_group_snapshot_by_name("g").await, Ok(None));
    }

    #[test]
    fn cloud_sections_build_and_name_their_keys() {
        let config = crate::config::FileConfig::parse(
            "t.toml",
            "default_backend = \"sl\"\n[backends.sl]\ntype = \"softlayer\"\nusername = \"u\"\n\
             api_key = \"k\"\n[backends.dc]\ntype = \"deltacloud\"\n\
             endpoint = \"http://127.0.0.1:1/api\"\nusername = \"u\"\npassword = \"p\"\n\
             driver = \"ec2\"\n",
        )
        .expect("config");
        let registry = build("t.toml", &config).expect("registry");
        let kinds: Vec<&str> = registry
            .instances()
            .iter()
            .map(|i| i.backend.kind())
            .collect();
        assert_eq!(kinds, ["deltacloud", "softlayer"]);
        let config = crate::config::FileConfig::parse(
            "t.toml",
            "[backends.sl]\ntype = \"softlayer\"\nusername = \"u\"\n",
        )
        .expect("parses");
        let err = build("t.toml", &config).err().expect("missing api_key");
        assert!(err.to_string().contains("api_key"), "{err}");
    }

    #[test]
    fn unknown_keys_and_types_are_named() {
        let config = crate::config::FileConfig::parse(
            "t.toml",
            "[backends.a]\ntype = \"local\"\ndata_dir = \"/tmp/x\"\nmax_capacty = 5\n",
        )
        .expect("parses");
        let err = build("t.toml", &config).err().expect("unknown key");
        assert!(err.to_string().contains("backends.a"), "{err}");
        assert!(err.to_string().contains("max_capacty"), "{err}");
        let config = crate::config::FileConfig::parse("t.toml", "[backends.a]\ntype = \"ceph\"\n")
            .expect("parses");
        let err = build("t.toml", &config).err().expect("unknown type");
        assert_eq!(err.key, "backends.a.type");
    }
}
