//! The embedded local backend: the default, needs no cloud.
//!
//! Each volume is a sparse image file under the data directory. A snapshot is a reflink clone
//! of the image (FICLONE: O(1) in the volume size, sharing every extent) where the file system
//! supports it, and a sparse-aware copy elsewhere. A file system mounted from the image is
//! frozen for the instant of the clone, so the snapshot is consistent. Restore and clone use
//! the same clone path. Metadata lives in an embedded ACID store ([`store`]).
//!
//! A group snapshot freezes every mounted member (in volume id order), clones every image,
//! and thaws, so all members hold the same instant relative to the writes to any of them. The
//! members and the group are committed in one transaction after all clones are complete: a
//! failed clone removes the clones already cut, and a crash before the commit leaves only
//! image files no record names, which the start-up sweep removes like any orphan.
//!
//! Data directory layout:
//! ```text
//! meta.redb                 metadata store
//! volumes/<volume id>.img   volume images
//! snapshots/<snap id>.img   snapshot images
//! frozen                    while file systems are frozen for a clone: their mount points, one
//!                           a line; a process killed mid-clone leaves it, and the next start
//!                           thaws them (a frozen file system hangs every writer of the pod)
//! staged/<volume id>        written by the node service while a volume is staged: its staging
//!                           path and whether a file system is mounted there ([`StagedMarker`]),
//!                           read here to freeze it for snapshots
//! ```

pub mod clone;
pub mod extents;
pub mod store;

use crate::backend::metadata::BlockRanges;
use crate::backend::{
    Backend, BackendError, BackendResult, Capabilities, CreateGroupSnapshot, CreateSnapshot,
    CreateVolume, ErrorKind, GroupSnapshot, GroupSnapshotId, Page, PageRequest, Snapshot,
    SnapshotFilter, SnapshotId, Volume, VolumeId, VolumeSource,
};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{GroupRecord, SnapshotRecord, SourceRecord, Store, VolumeRecord};

const VOLUME_PREFIX: &str = "vol-";
const SNAPSHOT_PREFIX: &str = "snap-";
const GROUP_PREFIX: &str = "group-";
/// Volume sizes are whole MiB: loop devices and file systems want aligned sizes.
const GRANULARITY: u64 = 1 << 20;

/// The VolumeSnapshotClass parameter choosing whether a snapshot of a staged volume freezes
/// its file system: `"true"` (default: consistent, writers wait for the clone) or `"false"`
/// (crash-consistent, writers never wait). See the README, "The local backend".
pub const FREEZE_PARAMETER: &str = "freeze";

/// The [`FREEZE_PARAMETER`] of a request.
fn wants_freeze(parameters: &std::collections::BTreeMap<String, String>) -> BackendResult<bool> {
    match parameters.get(FREEZE_PARAMETER).map(String::as_str) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(BackendError::new(
            ErrorKind::InvalidArgument,
            format!("parameters.{FREEZE_PARAMETER}: must be \"true\" or \"false\", got {other:?}"),
        )),
    }
}

/// File locations under the data directory, shared by the controller and node services.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Image of a volume; `None` when `id` is not of the local id form (so it cannot exist
    /// and cannot escape the data directory).
    pub fn volume_image(&self, id: &str) -> Option<PathBuf> {
        valid_id(VOLUME_PREFIX, id).then(|| self.root.join("volumes").join(format!("{id}.img")))
    }

    /// Image of a snapshot; `None` when `id` is not of the local id form.
    pub fn snapshot_image(&self, id: &str) -> Option<PathBuf> {
        valid_id(SNAPSHOT_PREFIX, id).then(|| self.root.join("snapshots").join(format!("{id}.img")))
    }

    /// Marker file the node service keeps while a volume is staged.
    pub fn staged_marker(&self, id: &str) -> Option<PathBuf> {
        valid_id(VOLUME_PREFIX, id).then(|| self.root.join("staged").join(id))
    }

    fn ensure_dirs(&self) -> std::io::Result<()> {
        for dir in ["volumes", "snapshots", "staged"] {
            std::fs::create_dir_all(self.root.join(dir))?;
        }
        Ok(())
    }
}

/// The node service's record of a staged volume (`staged/<volume id>`): the staging path on its
/// first line, then `mount` when a file system of the volume is mounted there or `block` for a
/// bare device. Markers from before the second line existed hold the path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedMarker {
    /// The staging target path the kubelet gave.
    pub staging: PathBuf,
    /// `Some(true)`: a file system is mounted at `staging`; `Some(false)`: a block volume;
    /// `None`: an old marker that does not say.
    pub mounted: Option<bool>,
}

impl StagedMarker {
    /// Reads a marker's text.
    pub fn parse(text: &str) -> Self {
        let mut lines = text.lines();
        let staging = PathBuf::from(lines.next().unwrap_or_default().trim());
        let mounted = match lines.next().map(str::trim) {
            Some("mount") => Some(true),
            Some("block") => Some(false),
            _ => None,
        };
        Self { staging, mounted }
    }

    /// The marker's text.
    pub fn render(&self) -> Vec<u8> {
        let mut text = self.staging.as_os_str().as_encoded_bytes().to_vec();
        match self.mounted {
            Some(true) => text.extend_from_slice(b"\nmount\n"),
            Some(false) => text.extend_from_slice(b"\nblock\n"),
            None => {}
        }
        text
    }
}

/// Whether `id` is `<prefix><canonical uuid>`.
fn valid_id(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        uuid::Uuid::try_parse(rest).is_ok_and(|u| u.hyphenated().to_string() == rest)
    })
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7())
}

/// Settings of the local backend.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Most bytes that may be provisioned to volumes in total; `None` = the file system's
    /// free space is the only limit.
    pub max_capacity: Option<u64>,
}

/// The local backend.
pub struct LocalBackend {
    layout: Layout,
    store: Arc<Store>,
    max_capacity: Option<u64>,
    /// Held around every clone that freezes file systems. Freezing a file system that another
    /// snapshot already froze fails (EBUSY), so a group and a single snapshot (or two groups)
    /// sharing a mounted volume would fail each other; taking turns costs little since a
    /// frozen clone is a reflink. It also makes lock order between groups a non-issue.
    freeze_turn: tokio::sync::Mutex<()>,
    /// Whether the data directory's file system clones by reflink, probed at the first
    /// GetMetadataDelta: it picks how snapshots are compared (see [`extents`]).
    reflink: tokio::sync::OnceCell<bool>,
    /// Write-held by the start-up sweep of orphan images until it is done; every operation
    /// that creates an image file waits for it (a read), so the sweep never sees an image
    /// whose record is about to be committed. Reads never wait: the driver answers at once,
    /// however many images the sweep has to look at.
    sweep_gate: Arc<tokio::sync::RwLock<()>>,
}

fn io_error(what: impl std::fmt::Display, error: std::io::Error) -> BackendError {
    let kind = match error.raw_os_error() {
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() => ErrorKind::QuotaExceeded,
        _ => ErrorKind::Internal,
    };
    BackendError::new(kind, format!("{what}: {error}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> BackendResult<T> + Send + 'static,
) -> BackendResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::internal(format!("blocking task failed: {e}")))?
}

impl LocalBackend {
    /// Opens the data directory, creating it if needed, and starts removing the image files
    /// that no committed record refers to (left by a crash between clone and commit): on the
    /// blocking pool when called in a tokio runtime (operations that create images wait for
    /// it, see `sweep_gate`), inline otherwise.
    pub fn open(config: LocalConfig) -> BackendResult<Self> {
        let layout = Layout::new(&config.data_dir);
        layout
            .ensure_dirs()
            .map_err(|e| io_error(format!("data directory {}", config.data_dir.display()), e))?;
        let store = Arc::new(Store::open(&config.data_dir.join("meta.redb"))?);
        let sweep_gate = Arc::new(tokio::sync::RwLock::new(()));
        let sweeping = Arc::clone(&sweep_gate)
            .try_write_owned()
            .map_err(|e| BackendError::internal(format!("sweep gate: {e}")))?;
        let (sweep_layout, sweep_store) = (layout.clone(), Arc::clone(&store));
        let sweep = move || {
            let started = std::time::Instant::now();
            match sweep_orphans(&sweep_layout, &sweep_store) {
                Ok(removed) => tracing::debug!(
                    removed,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "start-up sweep of orphan images done"
                ),
                // Orphans only waste space; the next start tries again.
                Err(e) => tracing::warn!(error = %e, "start-up sweep of orphan images failed"),
            }
            drop(sweeping);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(sweep)),
            Err(_) => sweep(),
        }
        let backend = Self {
            layout,
            store,
            max_capacity: config.max_capacity,
            freeze_turn: tokio::sync::Mutex::new(()),
            reflink: tokio::sync::OnceCell::new(),
            sweep_gate,
        };
        backend.thaw_left_frozen();
        Ok(backend)
    }

    /// Waits until the start-up sweep is done (see `sweep_gate`).
    async fn swept(&self) {
        drop(self.sweep_gate.read().await);
    }

    /// The freeze journal ([`LocalBackend::frozen_clone`] keeps it while it freezes).
    fn freeze_journal(&self) -> PathBuf {
        self.layout.root.join("frozen")
    }

    /// Thaws what a previous process froze and never thawed: it was killed mid-clone. Only
    /// one process opens the data directory at a time (the store's lock), so every file
    /// system in the journal was frozen by a process that is gone. Thawing one that is not
    /// frozen (the kill came before the freeze) is harmless.
    fn thaw_left_frozen(&self) {
        let journal = self.freeze_journal();
        let Ok(text) = std::fs::read_to_string(&journal) else {
            return;
        };
        for mount_point in text.lines().filter(|l| !l.is_empty()) {
            match crate::node::freeze::thaw_blocking(Path::new(mount_point)) {
                Ok(()) => tracing::warn!(
                    mount_point,
                    "thawed a file system an interrupted snapshot had left frozen"
                ),
                Err(e) => tracing::error!(
                    mount_point,
                    error = %e,
                    "cannot thaw a file system an interrupted snapshot may have left frozen"
                ),
            }
        }
        if let Err(e) = std::fs::remove_file(&journal) {
            tracing::error!(path = %journal.display(), error = %e, "cannot remove the freeze journal");
        }
    }

    /// Runs `work` on the blocking pool with `freeze` frozen around it, one freezer at a time,
    /// recording the mount points in the freeze journal (synced) before freezing and removing
    /// it once they are thawed, so that a crash in between is repaired at the next start. The
    /// inner result is the freeze's own: an error there means a freeze or thaw failed (see
    /// [`crate::node::freeze::with_frozen`]); the outer one, that the journal could not be kept.
    async fn frozen_clone<T: Send + 'static>(
        &self,
        freeze: Vec<PathBuf>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> BackendResult<crate::node::Result<T>> {
        if freeze.is_empty() {
            return tokio::task::spawn_blocking(work)
                .await
                .map(Ok)
                .map_err(|e| BackendError::internal(format!("clone task failed: {e}")));
        }
        let _turn = self.freeze_turn.lock().await;
        let journal = self.freeze_journal();
        let mut text = String::new();
        for mount_point in &freeze {
            text.push_str(&mount_point.display().to_string());
            text.push('\n');
        }
        let write = {
            let journal = journal.clone();
            move || -> std::io::Result<()> {
                let tmp = journal.with_extension("tmp");
                let mut file = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut file, text.as_bytes())?;
                file.sync_all()?;
                std::fs::rename(&tmp, &journal)
            }
        };
        blocking(move || write().map_err(|e| io_error("freeze journal", e))).await?;
        let result = crate::node::freeze::with_frozen(&freeze, work).await;
        // with_frozen thawed on every path it returns from; a failed thaw is in `result`.
        if let Err(e) = tokio::fs::remove_file(&journal).await {
            tracing::error!(path = %journal.display(), error = %e, "cannot remove the freeze journal");
        }
        Ok(result)
    }

    /// The file layout (shared with the node service).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Mount points to freeze while cloning `volume_id`: its staging mount, if staged.
    ///
    /// A volume whose marker says a file system is mounted, at a path that is no mount point
    /// in this process's mount namespace (a controller container without the kubelet
    /// directory), cannot be frozen: FAILED_PRECONDITION, rather than a snapshot that silently
    /// is only crash-consistent.
    async fn mounts_to_freeze(&self, volume_id: &str) -> BackendResult<Vec<PathBuf>> {
        let Some(path) = self.layout.staged_marker(volume_id) else {
            return Ok(Vec::new());
        };
        let read = |path: PathBuf| async move {
            match tokio::fs::read_to_string(&path).await {
                Ok(text) => Ok(Some(StagedMarker::parse(&text))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error(path.display(), e)),
            }
        };
        let Some(marker) = read(path.clone()).await? else {
            return Ok(Vec::new());
        };
        let mounted = crate::node::mount::is_mountpoint(&marker.staging)
            .await
            .map_err(|e| BackendError::internal(e.to_string()))?;
        if mounted {
            return Ok(vec![marker.staging]);
        }
        // Unstaged meanwhile (the node unmounts, then removes the marker): nothing to freeze.
        if marker.mounted == Some(true) && read(path).await?.is_some() {
            return Err(BackendError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "volume {volume_id} is mounted at {} on its node, but that path is no mount \
                     point in this process's mount namespace, so its file system cannot be frozen \
                     for a consistent snapshot: give the controller the kubelet directory \
                     (mountPropagation: HostToContainer) and CAP_SYS_ADMIN, as \
                     deploy/overlays/kind does",
                    marker.staging.display()
                ),
            ));
        }
        Ok(Vec::new())
    }

    /// Clones `src` to `dst`, with the file systems in `freeze` frozen for the clone alone:
    /// the clone is made durable after the thaw, so writers wait only for the FICLONE (or, on
    /// a data directory without reflink, the copy).
    async fn clone_image(
        &self,
        src: PathBuf,
        dst: PathBuf,
        freeze: Vec<PathBuf>,
    ) -> BackendResult<()> {
        let what = format!("clone {} to {}", src.display(), dst.display());
        let method = if freeze.is_empty() {
            let target = dst.clone();
            blocking(move || clone::clone_file(&src, &target).map_err(|e| io_error(&what, e)))
                .await?
        } else {
            let target = dst.clone();
            let cloned = self
                .frozen_clone(freeze, move || clone::clone_unsynced(&src, &target))
                .await?;
            let method = match cloned {
                Ok(Ok(method)) => method,
                Ok(Err(e)) => return Err(io_error(&what, e)),
                Err(e) => {
                    // Frozen, cloned, then the thaw failed: no record will name the clone.
                    discard_image(&dst).await;
                    return Err(BackendError::internal(e.to_string()));
                }
            };
            let target = dst.clone();
            blocking(move || {
                clone::persist(&target)
                    .map(|()| method)
                    .map_err(|e| io_error(&what, e))
            })
            .await?
        };
        tracing::debug!(?method, dst = %dst.display(), "image cloned");
        Ok(())
    }

    /// Clones each `(source, destination)` pair with `freeze` frozen around all the clones
    /// at once (and only them: the clones are made durable after the thaw). All or nothing:
    /// when one clone fails, the destinations already written (and the failed one's partial
    /// file) are removed before the error is returned. The filesystems are thawed on every
    /// path (see [`crate::node::freeze::with_frozen`]).
    async fn clone_group(
        &self,
        pairs: Vec<(PathBuf, PathBuf)>,
        freeze: Vec<PathBuf>,
    ) -> BackendResult<()> {
        let images: Vec<PathBuf> = pairs.iter().map(|(_, dst)| dst.clone()).collect();
        let work = move || -> Result<(), String> {
            for (done, (src, dst)) in pairs.iter().enumerate() {
                if let Err(e) = clone::clone_unsynced(src, dst) {
                    remove_cut(
                        &pairs[..=done]
                            .iter()
                            .map(|(_, d)| d.clone())
                            .collect::<Vec<_>>(),
                    );
                    tracing::warn!(
                        member = done,
                        "group snapshot failed; members already cut were removed"
                    );
                    return Err(format!(
                        "group member {} of {}: clone {} to {}: {e}",
                        done + 1,
                        pairs.len(),
                        src.display(),
                        dst.display()
                    ));
                }
            }
            Ok(())
        };
        let cloned = self.frozen_clone(freeze, work).await?;
        match cloned {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BackendError::internal(e)),
            Err(e) => {
                blocking(move || {
                    remove_cut(&images);
                    Ok(())
                })
                .await?;
                return Err(BackendError::internal(e.to_string()));
            }
        }
        blocking(move || {
            for image in &images {
                if let Err(e) = clone::persist(image) {
                    remove_cut(&images);
                    return Err(io_error(format!("group member {}", image.display()), e));
                }
            }
            Ok(())
        })
        .await
    }

    fn volume_path(&self, id: &str) -> BackendResult<PathBuf> {
        self.layout
            .volume_image(id)
            .ok_or_else(|| BackendError::not_found(format!("volume {id} does not exist")))
    }

    fn snapshot_path(&self, id: &str) -> BackendResult<PathBuf> {
        self.layout
            .snapshot_image(id)
            .ok_or_else(|| BackendError::not_found(format!("snapshot {id} does not exist")))
    }

    fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }
}

/// Removes the image files no committed record names; answers how many. Group members are
/// committed only with their group, so a member image with no record (a crash mid-group) is
/// swept like any other orphan. Streams the directories and looks each id up, so memory does
/// not grow with the number of images.
fn sweep_orphans(layout: &Layout, store: &Store) -> BackendResult<usize> {
    let mut removed = 0;
    for (dir, is_volume) in [("volumes", true), ("snapshots", false)] {
        let dir = layout.root.join(dir);
        let entries = std::fs::read_dir(&dir).map_err(|e| io_error(dir.display(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(dir.display(), e))?;
            let file_name = entry.file_name();
            let name = file_name.to_string_lossy();
            let id = name.strip_suffix(".img").unwrap_or(&name);
            let known = if is_volume {
                store.has_volume(id)?
            } else {
                store.has_snapshot(id)?
            };
            if known {
                continue;
            }
            tracing::warn!(path = %entry.path().display(), "removing orphan image left by an interrupted operation");
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                // A delete of a committed object removed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(entry.path().display(), e)),
            }
        }
    }
    Ok(removed)
}

/// Removes an image no committed record refers to (any more). A failure is only logged: the
/// file is then an orphan, which the next start sweeps.
async fn discard_image(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "image not removed"),
    }
}

/// Removes the images of a group cut that will not be committed. A failure is only logged:
/// the file is then an orphan, which the next start sweeps.
fn remove_cut(images: &[PathBuf]) {
    for image in images {
        if let Err(e) = std::fs::remove_file(image)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %image.display(), error = %e, "rollback: image not removed");
        }
    }
}

fn to_volume(record: VolumeRecord) -> Volume {
    Volume {
        id: VolumeId::new(record.id),
        name: record.name,
        size_bytes: record.size_bytes,
        source: record.source.map(|s| match s {
            SourceRecord::Snapshot(id) => VolumeSource::Snapshot(SnapshotId::new(id)),
            SourceRecord::Volume(id) => VolumeSource::Volume(VolumeId::new(id)),
        }),
        ready: true,
        zone: None,
    }
}

fn to_time(secs: i64, nanos: i32) -> SystemTime {
    UNIX_EPOCH
        + Duration::new(
            u64::try_from(secs).unwrap_or(0),
            u32::try_from(nanos).unwrap_or(0),
        )
}

fn from_time(time: SystemTime) -> (i64, i32) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    (
        i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    )
}

fn to_group((group, members): (GroupRecord, Vec<SnapshotRecord>)) -> GroupSnapshot {
    GroupSnapshot {
        id: GroupSnapshotId::new(group.id),
        name: group.name,
        snapshots: members.into_iter().map(to_snapshot).collect(),
        created_at: to_time(group.created_secs, group.created_nanos),
    }
}

fn to_snapshot(record: SnapshotRecord) -> Snapshot {
    let created_at = to_time(record.created_secs, record.created_nanos);
    Snapshot {
        id: SnapshotId::new(record.id),
        name: record.name,
        source_volume_id: VolumeId::new(record.source_volume_id),
        size_bytes: record.size_bytes,
        created_at,
        ready: true,
        group_snapshot_id: record.group_snapshot_id.map(GroupSnapshotId::new),
    }
}

fn check_cursor(prefix: &str, cursor: Option<&str>) -> BackendResult<()> {
    match cursor {
        Some(c) if !valid_id(prefix, c) => Err(BackendError::new(
            ErrorKind::InvalidCursor,
            format!("{c:?} is not a position in this list"),
        )),
        _ => Ok(()),
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            create_delete_volume: true,
            create_delete_snapshot: true,
            restore_snapshot: true,
            clone_volume: true,
            expand_volume: true,
            get_capacity: true,
            size_granularity_bytes: GRANULARITY,
            min_volume_bytes: 0,
            node_local: true,
            group_snapshot: true,
            snapshot_metadata: true,
            attach: false,
            zones: false,
        }
    }

    async fn health(&self) -> BackendResult<()> {
        // One trip to the blocking pool for both checks: each trip is a thread hand-off that
        // costs Probe more than the checks themselves.
        let store = self.store();
        let volumes = self.layout.root.join("volumes");
        blocking(move || {
            store.check()?;
            std::fs::metadata(&volumes).map_err(|e| io_error(volumes.display(), e))?;
            Ok(())
        })
        .await
    }

    async fn available_capacity(&self) -> BackendResult<Option<u64>> {
        let store = self.store();
        let used = blocking(move || store.used_bytes()).await?;
        let root = self.layout.root.clone();
        let fs_free = crate::node::stats::fs_stats(&root)
            .await
            .map_err(|e| BackendError::internal(e.to_string()))?
            .available_bytes;
        Ok(Some(match self.max_capacity {
            Some(max) => max.saturating_sub(used),
            None => fs_free,
        }))
    }

    async fn create_volume(&self, request: &CreateVolume) -> BackendResult<Volume> {
        self.swept().await;
        let id = new_id(VOLUME_PREFIX);
        let path = self.volume_path(&id)?;
        let size = request.size_bytes;
        if let Some(max) = self.max_capacity {
            let store = self.store();
            let used = blocking(move || store.used_bytes()).await?;
            if used.saturating_add(size) > max {
                return Err(BackendError::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "local capacity exhausted: {used} of {max} bytes provisioned, \
                         {size} more requested"
                    ),
                ));
            }
        }
        let source = match &request.source {
            None => {
                let p = path.clone();
                blocking(move || {
                    clone::create_sparse(&p, size).map_err(|e| io_error(p.display(), e))
                })
                .await?;
                None
            }
            Some(VolumeSource::Snapshot(snapshot)) => {
                let src = self.snapshot_path(snapshot.as_str())?;
                self.clone_image(src, path.clone(), Vec::new()).await?;
                Some(SourceRecord::Snapshot(snapshot.to_string()))
            }
            Some(VolumeSource::Volume(volume)) => {
                let src = self.volume_path(volume.as_str())?;
                let freeze = self.mounts_to_freeze(volume.as_str()).await?;
                self.clone_image(src, path.clone(), freeze).await?;
                Some(SourceRecord::Volume(volume.to_string()))
            }
        };
        let record = VolumeRecord {
            id: id.clone(),
            name: request.name.clone(),
            size_bytes: size,
            source,
        };
        let store = self.store();
        let max = self.max_capacity;
        let p = path.clone();
        let committed = blocking(move || {
            if record.source.is_some() {
                clone::grow(&p, size).map_err(|e| io_error(p.display(), e))?;
            }
            store.insert_volume(&record, max)?;
            Ok(record)
        })
        .await;
        match committed {
            Ok(record) => Ok(to_volume(record)),
            Err(e) => {
                discard_image(&path).await;
                Err(e)
            }
        }
    }

    async fn get_volume(&self, id: &VolumeId) -> BackendResult<Option<Volume>> {
        if !valid_id(VOLUME_PREFIX, id.as_str()) {
            return Ok(None);
        }
        let store = self.store();
        let id = id.to_string();
        Ok(blocking(move || store.volume(&id)).await?.map(to_volume))
    }

    async fn find_volume_by_name(&self, name: &str) -> BackendResult<Option<Volume>> {
        let store = self.store();
        let name = name.to_owned();
        Ok(blocking(move || store.volume_by_name(&name))
            .await?
            .map(to_volume))
    }

    async fn delete_volume(&self, id: &VolumeId) -> BackendResult<()> {
        let Some(path) = self.layout.volume_image(id.as_str()) else {
            return Ok(());
        };
        if let Some(marker) = self.layout.staged_marker(id.as_str())
            && let Ok(staged) = tokio::fs::read_to_string(&marker).await
        {
            return Err(BackendError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "volume {id} is still staged at {} on this node: unstage it first",
                    StagedMarker::parse(&staged).staging.display()
                ),
            ));
        }
        let store = self.store();
        let key = id.to_string();
        let removed = blocking(move || store.remove_volume(&key)).await?;
        if removed.is_some() {
            discard_image(&path).await;
        }
        Ok(())
    }

    async fn expand_volume(&self, id: &VolumeId, new_size_bytes: u64) -> BackendResult<u64> {
        let path = self.volume_path(id.as_str())?;
        let store = self.store();
        let key = id.to_string();
        let max = self.max_capacity;
        blocking(move || {
            // Record first: a crash after it leaves a file smaller than recorded, which the
            // repeated expand call (the resizer repeats until success) grows.
            store.resize_volume(&key, new_size_bytes, max)?;
            clone::grow(&path, new_size_bytes).map_err(|e| io_error(path.display(), e))?;
            Ok(new_size_bytes)
        })
        .await
    }

    async fn list_volumes(&self, page: &PageRequest) -> BackendResult<Page<Volume>> {
        check_cursor(VOLUME_PREFIX, page.cursor.as_deref())?;
        let store = self.store();
        let (cursor, limit) = (page.cursor.clone(), page.max_entries);
        let (items, more) = blocking(move || store.volumes_page(cursor.as_deref(), limit)).await?;
        let next_cursor = more.then(|| items.last().map(|v| v.id.clone())).flatten();
        Ok(Page {
            items: items.into_iter().map(to_volume).collect(),
            next_cursor,
        })
    }

    async fn create_snapshot(&self, request: &CreateSnapshot) -> BackendResult<Snapshot> {
        let freeze = wants_freeze(&request.parameters)?;
        self.swept().await;
        let source_id = request.source_volume_id.to_string();
        let store = self.store();
        let key = source_id.clone();
        let Some(volume) = blocking(move || store.volume(&key)).await? else {
            return Err(BackendError::not_found(format!(
                "source volume {source_id} does not exist"
            )));
        };
        let id = new_id(SNAPSHOT_PREFIX);
        let path = self.snapshot_path(&id)?;
        let src = self.volume_path(&source_id)?;
        let freeze = if freeze {
            self.mounts_to_freeze(&source_id).await?
        } else {
            Vec::new()
        };
        let created_at = SystemTime::now();
        self.clone_image(src, path.clone(), freeze).await?;
        let (created_secs, created_nanos) = from_time(created_at);
        let record = SnapshotRecord {
            id,
            name: request.name.clone(),
            source_volume_id: source_id,
            size_bytes: volume.size_bytes,
            created_secs,
            created_nanos,
            group_snapshot_id: None,
        };
        let store = self.store();
        let committed = blocking(move || {
            store.insert_snapshot(&record)?;
            Ok(record)
        })
        .await;
        match committed {
            Ok(record) => Ok(to_snapshot(record)),
            Err(e) => {
                discard_image(&path).await;
                Err(e)
            }
        }
    }

    async fn get_snapshot(&self, id: &SnapshotId) -> BackendResult<Option<Snapshot>> {
        if !valid_id(SNAPSHOT_PREFIX, id.as_str()) {
            return Ok(None);
        }
        let store = self.store();
        let id = id.to_string();
        Ok(blocking(move || store.snapshot(&id))
            .await?
            .map(to_snapshot))
    }

    async fn find_snapshot_by_name(&self, name: &str) -> BackendResult<Option<Snapshot>> {
        let store = self.store();
        let name = name.to_owned();
        Ok(blocking(move || store.snapshot_by_name(&name))
            .await?
            .map(to_snapshot))
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> BackendResult<()> {
        let Some(path) = self.layout.snapshot_image(id.as_str()) else {
            return Ok(());
        };
        let store = self.store();
        let key = id.to_string();
        let removed = blocking(move || store.remove_snapshot(&key)).await?;
        if removed.is_some() {
            discard_image(&path).await;
        }
        Ok(())
    }

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: &PageRequest,
    ) -> BackendResult<Page<Snapshot>> {
        check_cursor(SNAPSHOT_PREFIX, page.cursor.as_deref())?;
        let volume = match &filter.source_volume_id {
            Some(v) if !valid_id(VOLUME_PREFIX, v.as_str()) => {
                return Ok(Page {
                    items: Vec::new(),
                    next_cursor: None,
                });
            }
            other => other.as_ref().map(|v| v.to_string()),
        };
        let store = self.store();
        let (cursor, limit) = (page.cursor.clone(), page.max_entries);
        let (items, more) =
            blocking(move || store.snapshots_page(volume.as_deref(), cursor.as_deref(), limit))
                .await?;
        let next_cursor = more.then(|| items.last().map(|s| s.id.clone())).flatten();
        Ok(Page {
            items: items.into_iter().map(to_snapshot).collect(),
            next_cursor,
        })
    }

    async fn create_group_snapshot(
        &self,
        request: &CreateGroupSnapshot,
    ) -> BackendResult<GroupSnapshot> {
        self.swept().await;
        let group_id = new_id(GROUP_PREFIX);
        let mut members = Vec::with_capacity(request.source_volume_ids.len());
        let mut pairs = Vec::with_capacity(request.source_volume_ids.len());
        for volume_id in &request.source_volume_ids {
            let store = self.store();
            let key = volume_id.to_string();
            let Some(volume) = blocking(move || store.volume(&key)).await? else {
                return Err(BackendError::not_found(format!(
                    "source volume {volume_id} does not exist"
                )));
            };
            let id = new_id(SNAPSHOT_PREFIX);
            pairs.push((self.volume_path(&volume.id)?, self.snapshot_path(&id)?));
            members.push(SnapshotRecord {
                id,
                name: crate::backend::group_member_name(&request.name, volume_id),
                source_volume_id: volume.id,
                size_bytes: volume.size_bytes,
                created_secs: 0,
                created_nanos: 0,
                group_snapshot_id: Some(group_id.clone()),
            });
        }
        // One order for every group (volume ids sorted): stable, and the same on every node.
        let mut by_id: Vec<&str> = members
            .iter()
            .map(|m| m.source_volume_id.as_str())
            .collect();
        by_id.sort_unstable();
        let mut freeze = Vec::new();
        for volume_id in by_id {
            freeze.extend(self.mounts_to_freeze(volume_id).await?);
        }
        let (created_secs, created_nanos) = from_time(SystemTime::now());
        let images: Vec<PathBuf> = pairs.iter().map(|(_, dst)| dst.clone()).collect();
        self.clone_group(pairs, freeze).await?;
        for member in &mut members {
            member.created_secs = created_secs;
            member.created_nanos = created_nanos;
        }
        let group = GroupRecord {
            id: group_id,
            name: request.name.clone(),
            snapshot_ids: members.iter().map(|m| m.id.clone()).collect(),
            created_secs,
            created_nanos,
        };
        let store = self.store();
        let committed = blocking(move || {
            store.insert_group(&group, &members)?;
            Ok((group, members))
        })
        .await;
        match committed {
            Ok(records) => Ok(to_group(records)),
            Err(e) => {
                for image in &images {
                    discard_image(image).await;
                }
                Err(e)
            }
        }
    }

    async fn get_group_snapshot(
        &self,
        id: &GroupSnapshotId,
    ) -> BackendResult<Option<GroupSnapshot>> {
        if !valid_id(GROUP_PREFIX, id.as_str()) {
            return Ok(None);
        }
        let store = self.store();
        let id = id.to_string();
        Ok(blocking(move || store.group(&id)).await?.map(to_group))
    }

    async fn find_group_snapshot_by_name(
        &self,
        name: &str,
    ) -> BackendResult<Option<GroupSnapshot>> {
        let store = self.store();
        let name = name.to_owned();
        Ok(blocking(move || store.group_by_name(&name))
            .await?
            .map(to_group))
    }

    async fn delete_group_snapshot(&self, id: &GroupSnapshotId) -> BackendResult<()> {
        if !valid_id(GROUP_PREFIX, id.as_str()) {
            return Ok(());
        }
        let store = self.store();
        let key = id.to_string();
        let removed = blocking(move || store.remove_group(&key)).await?;
        for member in removed.unwrap_or_default() {
            if let Ok(path) = self.snapshot_path(&member.id) {
                discard_image(&path).await;
            }
        }
        Ok(())
    }

    async fn allocated_blocks(
        &self,
        snapshot: &SnapshotId,
        from: u64,
    ) -> BackendResult<Box<dyn BlockRanges>> {
        let path = self.snapshot_path(snapshot.as_str())?;
        extents::allocated(path, format!("snapshot {snapshot}"), from).await
    }

    async fn changed_blocks(
        &self,
        base: &SnapshotId,
        target: &SnapshotId,
        from: u64,
    ) -> BackendResult<Box<dyn BlockRanges>> {
        let base_path = self.snapshot_path(base.as_str())?;
        let target_path = self.snapshot_path(target.as_str())?;
        let snapshots = self.layout.root.join("snapshots");
        let reflink = *self
            .reflink
            .get_or_init(|| async move {
                let yes =
                    tokio::task::spawn_blocking(move || extents::supports_reflink(&snapshots))
                        .await
                        .unwrap_or(false);
                tracing::info!(
                    reflink = yes,
                    "snapshot deltas compare {}",
                    if yes {
                        "extent maps (FIEMAP)"
                    } else {
                        "content"
                    }
                );
                yes
            })
            .await;
        extents::changed(
            base_path,
            target_path,
            format!("delta {base}..{target}"),
            from,
            reflink,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_parameter_is_true_false_or_absent() {
        let with = |v: &str| {
            std::collections::BTreeMap::from([(FREEZE_PARAMETER.to_owned(), v.to_owned())])
        };
        assert!(wants_freeze(&Default::default()).expect("absent"));
        assert!(wants_freeze(&with("true")).expect("true"));
        assert!(!wants_freeze(&with("false")).expect("false"));
        let err = wants_freeze(&with("no")).expect_err("bad value");
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("parameters.freeze"), "{}", err.message);
    }

    #[test]
    fn staged_markers_round_trip_and_old_ones_still_parse() {
        for mounted in [Some(true), Some(false), None] {
            let marker = StagedMarker {
                staging: PathBuf::from("/var/lib/kubelet/plugins/kubernetes.io/csi/x/globalmount"),
                mounted,
            };
            let text = String::from_utf8(marker.render()).expect("utf-8");
            assert_eq!(StagedMarker::parse(&text), marker, "{text:?}");
        }
        // Written before the access kind was recorded: the path alone, no newline.
        let old = StagedMarker::parse("/stage/vol-1");
        assert_eq!(old.staging, PathBuf::from("/stage/vol-1"));
        assert_eq!(old.mounted, None);
    }

    #[test]
    fn ids_must_be_canonical() {
        let id = new_id(VOLUME_PREFIX);
        assert!(valid_id(VOLUME_PREFIX, &id));
        assert!(!valid_id(SNAPSHOT_PREFIX, &id));
        assert!(!valid_id(VOLUME_PREFIX, "vol-../../etc/passwd"));
        assert!(!valid_id(VOLUME_PREFIX, &id.to_uppercase()));
        let layout = Layout::new("/data");
        assert!(layout.volume_image("some-id").is_none());
        assert_eq!(
            layout.volume_image(&id),
            Some(PathBuf::from(format!("/data/volumes/{id}.img")))
        );
    }
}
