//! The behaviour suite every backend must pass, gated by
//! [`Capabilities`](crate::backend::Capabilities), never by backend name. It drives the backend
//! through [`Ops`] — the same path the gRPC services take — so idempotency, paging and error
//! kinds are checked as a sidecar sees them.
//!
//! Each check is a plain async function returning `Err(description)` on the first broken
//! promise; [`run`] runs them all and reports every failure.

use crate::backend::{
    Backend, CreateGroupSnapshot, CreateSnapshot, GroupSnapshotId, SnapshotFilter, SnapshotId,
    VolumeId, VolumeSource,
};
use crate::error::Error;
use crate::ops::{Ops, SizeRange};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tonic::Code;

type Check = Result<(), String>;

const MIB: u64 = 1 << 20;

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Check {
    if condition { Ok(()) } else { Err(what()) }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, Error>) -> Result<Code, String> {
    match result {
        Ok(value) => Err(format!("expected an error, got {value:?}")),
        Err(e) => Ok(e.code()),
    }
}

fn fail(context: &str) -> impl FnOnce(Error) -> String + '_ {
    move |e| format!("{context}: {e}")
}

/// Runs the whole suite; `prefix` makes names unique per run (backends may be shared).
pub async fn run(backend: Arc<dyn Backend>, prefix: &str) -> Result<usize, Vec<String>> {
    let ops = Ops::new(backend, 64 * MIB);
    let mut checks: Vec<(&str, Check)> = vec![
        ("health", health(&ops).await),
        ("volume lifecycle", volume_lifecycle(&ops, prefix).await),
        ("snapshot lifecycle", snapshot_lifecycle(&ops, prefix).await),
        (
            "snapshot idempotency",
            snapshot_idempotency(&ops, prefix).await,
        ),
        ("snapshot paging", snapshot_paging(&ops, prefix).await),
        ("volume paging", volume_paging(&ops, prefix).await),
        ("restore and clone", restore_and_clone(&ops, prefix).await),
        ("expand", expand(&ops, prefix).await),
        ("missing objects", missing_objects(&ops).await),
    ];
    // Counted only where offered, so the totals of backends without groups stay as they were.
    if ops.backend().capabilities().group_snapshot {
        checks.push(("group snapshots", group_snapshots(&ops, prefix).await));
    }
    let total = checks.len();
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|e| format!("{name}: {e}")))
        .collect();
    if failures.is_empty() {
        Ok(total)
    } else {
        Err(failures)
    }
}

async fn health(ops: &Ops) -> Check {
    ops.backend()
        .health()
        .await
        .map_err(|e| format!("health check failed: {e}"))
}

async fn new_volume(ops: &Ops, name: &str) -> Result<crate::backend::Volume, String> {
    let volume = ops
        .create_volume(
            name,
            SizeRange {
                required: 16 * MIB,
                limit: 0,
            },
            None,
            BTreeMap::new(),
            0,
        )
        .await
        .map_err(fail("create volume"))?;
    // Clouds create asynchronously; the suite waits a bounded time for `ready`.
    for _ in 0..300 {
        let current = ops
            .get_volume(&volume.id)
            .await
            .map_err(fail("get volume"))?;
        if current.ready {
            return Ok(current);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(format!("volume {} never became ready", volume.id))
}

async fn ready_snapshot(
    ops: &Ops,
    name: &str,
    volume: &VolumeId,
) -> Result<crate::backend::Snapshot, String> {
    for _ in 0..300 {
        let snapshot = ops
            .create_snapshot(CreateSnapshot {
                name: name.to_owned(),
                source_volume_id: volume.clone(),
                parameters: BTreeMap::new(),
            })
            .await
            .map_err(fail("create snapshot"))?;
        if snapshot.ready {
            return Ok(snapshot);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(format!("snapshot {name} never became ready"))
}

async fn volume_lifecycle(ops: &Ops, prefix: &str) -> Check {
    if !ops.backend().capabilities().create_delete_volume {
        return Ok(());
    }
    let name = format!("{prefix}-vol-life");
    let volume = new_volume(ops, &name).await?;
    ensure(volume.size_bytes >= 16 * MIB, || {
        format!("size {} < 16 MiB", volume.size_bytes)
    })?;
    ensure(volume.name == name, || {
        format!("name {:?} != {name:?}", volume.name)
    })?;
    let again = ops
        .create_volume(
            &name,
            SizeRange {
                required: 16 * MIB,
                limit: 0,
            },
            None,
            BTreeMap::new(),
            0,
        )
        .await
        .map_err(fail("repeat create"))?;
    ensure(again.id == volume.id, || {
        "a repeated create made a second volume".into()
    })?;
    let conflict = ops
        .create_volume(
            &name,
            SizeRange {
                required: 1 << 40,
                limit: 1 << 40,
            },
            None,
            BTreeMap::new(),
            0,
        )
        .await;
    ensure(code_of(conflict)? == Code::AlreadyExists, || {
        "incompatible repeat is not ALREADY_EXISTS".into()
    })?;
    ops.delete_volume(&volume.id)
        .await
        .map_err(fail("delete"))?;
    ops.delete_volume(&volume.id)
        .await
        .map_err(fail("second delete"))?;
    let gone = ops.get_volume(&volume.id).await;
    ensure(code_of(gone)? == Code::NotFound, || {
        "deleted volume still found".into()
    })
}

async fn snapshot_lifecycle(ops: &Ops, prefix: &str) -> Check {
    let caps = ops.backend().capabilities();
    if !caps.create_delete_snapshot || !caps.create_delete_volume {
        return Ok(());
    }
    let volume = new_volume(ops, &format!("{prefix}-snap-life-src")).await?;
    let name = format!("{prefix}-snap-life");
    let snapshot = ready_snapshot(ops, &name, &volume.id).await?;
    ensure(snapshot.source_volume_id == volume.id, || {
        "wrong source volume".into()
    })?;
    ensure(snapshot.size_bytes >= volume.size_bytes, || {
        "snapshot smaller than its volume".into()
    })?;
    let got = ops.get_snapshot(&snapshot.id).await.map_err(fail("get"))?;
    ensure(got.id == snapshot.id && got.name == name, || {
        "get answered another snapshot".into()
    })?;
    let (listed, _) = ops
        .list_snapshots(Some(&snapshot.id), &SnapshotFilter::default(), 0, "")
        .await
        .map_err(fail("list by id"))?;
    ensure(listed.len() == 1 && listed[0].id == snapshot.id, || {
        format!("list by id gave {listed:?}")
    })?;
    ops.delete_snapshot(&snapshot.id)
        .await
        .map_err(fail("delete"))?;
    ops.delete_snapshot(&snapshot.id)
        .await
        .map_err(fail("second delete"))?;
    ensure(
        code_of(ops.get_snapshot(&snapshot.id).await)? == Code::NotFound,
        || "deleted snapshot still found".into(),
    )?;
    ops.delete_volume(&volume.id)
        .await
        .map_err(fail("delete volume"))
}

async fn snapshot_idempotency(ops: &Ops, prefix: &str) -> Check {
    let caps = ops.backend().capabilities();
    if !caps.create_delete_snapshot || !caps.create_delete_volume {
        return Ok(());
    }
    let a = new_volume(ops, &format!("{prefix}-idem-a")).await?;
    let b = new_volume(ops, &format!("{prefix}-idem-b")).await?;
    let name = format!("{prefix}-idem-snap");
    let first = ready_snapshot(ops, &name, &a.id).await?;
    let second = ready_snapshot(ops, &name, &a.id).await?;
    ensure(first.id == second.id, || {
        "same name and source made two snapshots".into()
    })?;
    let other = ops
        .create_snapshot(CreateSnapshot {
            name: name.clone(),
            source_volume_id: b.id.clone(),
            parameters: BTreeMap::new(),
        })
        .await;
    ensure(code_of(other)? == Code::AlreadyExists, || {
        "same name, other source is not ALREADY_EXISTS".into()
    })?;
    let missing = ops
        .create_snapshot(CreateSnapshot {
            name: format!("{prefix}-idem-missing"),
            source_volume_id: VolumeId::new("no-such-volume"),
            parameters: BTreeMap::new(),
        })
        .await;
    ensure(code_of(missing)? == Code::NotFound, || {
        "snapshot of a missing volume is not NOT_FOUND".into()
    })?;
    ops.delete_snapshot(&first.id)
        .await
        .map_err(fail("delete"))?;
    ops.delete_volume(&a.id).await.map_err(fail("delete a"))?;
    ops.delete_volume(&b.id).await.map_err(fail("delete b"))
}

async fn snapshot_paging(ops: &Ops, prefix: &str) -> Check {
    let caps = ops.backend().capabilities();
    if !caps.create_delete_snapshot || !caps.create_delete_volume {
        return Ok(());
    }
    let volume = new_volume(ops, &format!("{prefix}-page-src")).await?;
    let mut made = HashSet::new();
    for i in 0..5 {
        made.insert(
            ready_snapshot(ops, &format!("{prefix}-page-{i}"), &volume.id)
                .await?
                .id,
        );
    }
    let filter = SnapshotFilter {
        source_volume_id: Some(volume.id.clone()),
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let (items, next) = ops
            .list_snapshots(None, &filter, 2, &token)
            .await
            .map_err(fail("list page"))?;
        ensure(items.len() <= 2, || {
            format!("page of {} > max_entries 2", items.len())
        })?;
        seen.extend(items.into_iter().map(|s| s.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    let unique: HashSet<SnapshotId> = seen.iter().cloned().collect();
    ensure(unique.len() == seen.len(), || {
        "a snapshot was listed twice".into()
    })?;
    ensure(unique == made, || {
        format!("paged walk saw {unique:?}, made {made:?}")
    })?;
    let bad = ops.list_snapshots(None, &filter, 2, "garbage-token").await;
    ensure(code_of(bad)? == Code::Aborted, || {
        "a garbage token is not ABORTED".into()
    })?;
    for id in &made {
        ops.delete_snapshot(id).await.map_err(fail("delete"))?;
    }
    ops.delete_volume(&volume.id)
        .await
        .map_err(fail("delete volume"))
}

async fn volume_paging(ops: &Ops, prefix: &str) -> Check {
    if !ops.backend().capabilities().create_delete_volume {
        return Ok(());
    }
    let mut made = HashSet::new();
    for i in 0..3 {
        made.insert(new_volume(ops, &format!("{prefix}-vpage-{i}")).await?.id);
    }
    let mut seen = HashSet::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let (items, next) = ops
            .list_volumes(1, &token)
            .await
            .map_err(fail("list page"))?;
        ensure(items.len() <= 1, || "page larger than max_entries 1".into())?;
        for item in items {
            ensure(seen.insert(item.id.clone()), || {
                format!("volume {} listed twice", item.id)
            })?;
        }
        if next.is_empty() {
            break;
        }
        token = next;
    }
    ensure(made.is_subset(&seen), || {
        "a paged walk missed a volume".into()
    })?;
    for id in &made {
        ops.delete_volume(id).await.map_err(fail("delete"))?;
    }
    Ok(())
}

async fn restore_and_clone(ops: &Ops, prefix: &str) -> Check {
    let caps = ops.backend().capabilities();
    if !caps.create_delete_volume {
        return Ok(());
    }
    let volume = new_volume(ops, &format!("{prefix}-rc-src")).await?;
    let mut cleanup_volumes = vec![volume.id.clone()];
    let mut cleanup_snapshot = None;
    if caps.restore_snapshot && caps.create_delete_snapshot {
        let snapshot = ready_snapshot(ops, &format!("{prefix}-rc-snap"), &volume.id).await?;
        let source = Some(VolumeSource::Snapshot(snapshot.id.clone()));
        let restored = ops
            .create_volume(
                &format!("{prefix}-rc-restored"),
                SizeRange::default(),
                source.clone(),
                BTreeMap::new(),
                0,
            )
            .await
            .map_err(fail("restore"))?;
        ensure(restored.source == source, || {
            "restored volume lost its source".into()
        })?;
        ensure(restored.size_bytes >= snapshot.size_bytes, || {
            "restored volume smaller than snapshot".into()
        })?;
        let too_small = ops
            .create_volume(
                &format!("{prefix}-rc-small"),
                SizeRange {
                    required: MIB,
                    limit: MIB,
                },
                source,
                BTreeMap::new(),
                0,
            )
            .await;
        ensure(code_of(too_small)? == Code::OutOfRange, || {
            "restore below snapshot size is not OUT_OF_RANGE".into()
        })?;
        let missing = ops
            .create_volume(
                &format!("{prefix}-rc-missing"),
                SizeRange::default(),
                Some(VolumeSource::Snapshot(SnapshotId::new("no-such-snapshot"))),
                BTreeMap::new(),
                0,
            )
            .await;
        ensure(code_of(missing)? == Code::NotFound, || {
            "restore of a missing snapshot is not NOT_FOUND".into()
        })?;
        cleanup_volumes.push(restored.id);
        cleanup_snapshot = Some(snapshot.id);
    }
    if caps.clone_volume {
        let source = Some(VolumeSource::Volume(volume.id.clone()));
        let clone = ops
            .create_volume(
                &format!("{prefix}-rc-clone"),
                SizeRange::default(),
                source.clone(),
                BTreeMap::new(),
                0,
            )
            .await
            .map_err(fail("clone"))?;
        ensure(clone.source == source, || "clone lost its source".into())?;
        cleanup_volumes.push(clone.id);
    }
    if let Some(id) = cleanup_snapshot {
        ops.delete_snapshot(&id)
            .await
            .map_err(fail("delete snapshot"))?;
    }
    for id in cleanup_volumes.iter().rev() {
        ops.delete_volume(id).await.map_err(fail("delete volume"))?;
    }
    Ok(())
}

async fn expand(ops: &Ops, prefix: &str) -> Check {
    let caps = ops.backend().capabilities();
    if !caps.expand_volume || !caps.create_delete_volume {
        return Ok(());
    }
    let volume = new_volume(ops, &format!("{prefix}-expand")).await?;
    let wanted = volume.size_bytes + 16 * MIB;
    let size = ops
        .expand_volume(
            &volume.id,
            SizeRange {
                required: wanted,
                limit: 0,
            },
        )
        .await
        .map_err(fail("expand"))?;
    ensure(size >= wanted, || format!("expanded to {size} < {wanted}"))?;
    let again = ops
        .expand_volume(
            &volume.id,
            SizeRange {
                required: wanted,
                limit: 0,
            },
        )
        .await
        .map_err(fail("repeat expand"))?;
    ensure(again == size, || "repeated expand changed the size".into())?;
    let missing = ops
        .expand_volume(
            &VolumeId::new("no-such-volume"),
            SizeRange {
                required: wanted,
                limit: 0,
            },
        )
        .await;
    ensure(code_of(missing)? == Code::NotFound, || {
        "expand of a missing volume is not NOT_FOUND".into()
    })?;
    ops.delete_volume(&volume.id).await.map_err(fail("delete"))
}

async fn missing_objects(ops: &Ops) -> Check {
    ops.delete_volume(&VolumeId::new("no-such-volume"))
        .await
        .map_err(fail("delete of a missing volume must succeed"))?;
    ops.delete_snapshot(&SnapshotId::new("no-such-snapshot"))
        .await
        .map_err(fail("delete of a missing snapshot must succeed"))?;
    let (items, _) = ops
        .list_snapshots(
            Some(&SnapshotId::new("no-such-snapshot")),
            &SnapshotFilter::default(),
            0,
            "",
        )
        .await
        .map_err(fail("list by a missing id"))?;
    ensure(items.is_empty(), || {
        "list by a missing id is not empty".into()
    })
}

fn group_request(name: &str, volumes: &[&VolumeId]) -> CreateGroupSnapshot {
    CreateGroupSnapshot {
        name: name.to_owned(),
        source_volume_ids: volumes.iter().map(|v| (*v).clone()).collect(),
        parameters: BTreeMap::new(),
    }
}

async fn group_snapshots(ops: &Ops, prefix: &str) -> Check {
    let caps = ops.backend().capabilities();
    if !caps.create_delete_volume {
        return Ok(());
    }
    let a = new_volume(ops, &format!("{prefix}-grp-a")).await?;
    let b = new_volume(ops, &format!("{prefix}-grp-b")).await?;
    let name = format!("{prefix}-grp");
    let group = ops
        .create_group_snapshot(group_request(&name, &[&a.id, &b.id]))
        .await
        .map_err(fail("create group"))?;
    let sources = group.source_volume_ids();
    ensure(sources == [a.id.clone(), b.id.clone()], || {
        format!("members are of {sources:?}, not of [a, b] in order")
    })?;
    ensure(
        group
            .snapshots
            .iter()
            .all(|s| s.group_snapshot_id.as_ref() == Some(&group.id)),
        || "a member does not carry the group id".into(),
    )?;
    let mut ready = group.ready();
    for _ in 0..300 {
        if ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        ready = ops
            .get_group_snapshot(&group.id, &[])
            .await
            .map_err(fail("get group"))?
            .ready();
    }
    ensure(ready, || format!("group {} never became ready", group.id))?;

    // Idempotency by name: same volumes in another order is the same group; others are not.
    let again = ops
        .create_group_snapshot(group_request(&name, &[&b.id, &a.id]))
        .await
        .map_err(fail("repeat create"))?;
    ensure(again.id == group.id, || {
        "same name and volumes made a second group".into()
    })?;
    let other = ops
        .create_group_snapshot(group_request(&name, &[&a.id]))
        .await;
    ensure(code_of(other)? == Code::AlreadyExists, || {
        "same name, other volumes is not ALREADY_EXISTS".into()
    })?;
    let missing_volume = VolumeId::new("no-such-volume");
    let missing = ops
        .create_group_snapshot(group_request(
            &format!("{prefix}-grp-missing"),
            &[&a.id, &missing_volume],
        ))
        .await;
    ensure(code_of(missing)? == Code::NotFound, || {
        "group with a missing volume is not NOT_FOUND".into()
    })?;

    // Members are ordinary snapshots for reads, but are deleted only with their group.
    let member_ids: Vec<SnapshotId> = group.snapshots.iter().map(|s| s.id.clone()).collect();
    let got = ops
        .get_group_snapshot(&group.id, &member_ids)
        .await
        .map_err(fail("get group with its member ids"))?;
    ensure(got.id == group.id && got.name == name, || {
        "get answered another group".into()
    })?;
    let wrong = ops.get_group_snapshot(&group.id, &member_ids[..1]).await;
    ensure(code_of(wrong)? == Code::InvalidArgument, || {
        "get with a wrong member list is not INVALID_ARGUMENT".into()
    })?;
    let filter = SnapshotFilter {
        source_volume_id: Some(a.id.clone()),
    };
    let (listed, _) = ops
        .list_snapshots(None, &filter, 0, "")
        .await
        .map_err(fail("list snapshots of a"))?;
    ensure(
        listed
            .iter()
            .any(|s| s.id == member_ids[0] && s.group_snapshot_id.as_ref() == Some(&group.id)),
        || format!("member of a not listed with its group id: {listed:?}"),
    )?;
    let refused = ops.delete_snapshot(&member_ids[0]).await;
    ensure(code_of(refused)? == Code::InvalidArgument, || {
        "stand-alone delete of a member is not INVALID_ARGUMENT".into()
    })?;
    ops.get_snapshot(&member_ids[0])
        .await
        .map_err(fail("member after the refused delete"))?;
    if caps.restore_snapshot {
        let restored = ops
            .create_volume(
                &format!("{prefix}-grp-restore"),
                SizeRange::default(),
                Some(VolumeSource::Snapshot(member_ids[1].clone())),
                BTreeMap::new(),
                0,
            )
            .await
            .map_err(fail("restore from a member"))?;
        ops.delete_volume(&restored.id)
            .await
            .map_err(fail("delete restored"))?;
    }

    let wrong = ops.delete_group_snapshot(&group.id, &member_ids[1..]).await;
    ensure(code_of(wrong)? == Code::InvalidArgument, || {
        "delete with a wrong member list is not INVALID_ARGUMENT".into()
    })?;
    ops.delete_group_snapshot(&group.id, &member_ids)
        .await
        .map_err(fail("delete group"))?;
    ops.delete_group_snapshot(&group.id, &member_ids)
        .await
        .map_err(fail("second delete of the group"))?;
    for member in &member_ids {
        ensure(
            code_of(ops.get_snapshot(member).await)? == Code::NotFound,
            || format!("member {member} outlived its group"),
        )?;
    }
    ensure(
        code_of(ops.get_group_snapshot(&group.id, &[]).await)? == Code::NotFound,
        || "deleted group still found".into(),
    )?;
    let unknown = GroupSnapshotId::new("no-such-group");
    ops.delete_group_snapshot(&unknown, &[])
        .await
        .map_err(fail("delete of a missing group must succeed"))?;
    ensure(
        code_of(ops.get_group_snapshot(&unknown, &[]).await)? == Code::NotFound,
        || "get of a missing group is not NOT_FOUND".into(),
    )?;
    ops.delete_volume(&a.id).await.map_err(fail("delete a"))?;
    ops.delete_volume(&b.id).await.map_err(fail("delete b"))
}
