//! The SnapshotSchedule controller: takes the due slot's VolumeSnapshots, prunes by retention,
//! reports status and Events. Only the Lease holder acts.
//!
//! One [`Scheduler::step`] = renew (or acquire) the Lease, then, when leading, reconcile every
//! schedule once. `run` repeats it every interval, waking early for a slot. Time comes from the
//! injected [`Clock`], so tests drive slots and Lease expiry without waiting.

use super::Clock;
use super::crd::{SnapshotSchedule, SnapshotScheduleStatus, ValidSpec, selector_query};
use super::lease::LeaderElector;
use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Label: the schedule's name (shortened with a hash past 63 characters).
pub const LABEL_SCHEDULE: &str = "snapcsi.dev/schedule";
/// Label: the schedule's uid; with [`LABEL_MANAGED_BY`] it marks a snapshot as ours.
pub const LABEL_SCHEDULE_UID: &str = "snapcsi.dev/schedule-uid";
/// Label: the source PVC's name (shortened with a hash past 63 characters).
pub const LABEL_PVC: &str = "snapcsi.dev/pvc";
/// Label: the slot, `YYYYMMDDHHMM` in UTC.
pub const LABEL_SLOT: &str = "snapcsi.dev/slot";
/// Label: who manages the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`] on snapshots this controller creates.
pub const MANAGER: &str = "snapcsi-scheduler";

const SLOT_FORMAT: &str = "%Y%m%d%H%M";

/// The snapshot.storage.k8s.io/v1 VolumeSnapshot resource (no Rust type in k8s-openapi).
pub fn volume_snapshot_resource() -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshot".into(),
        plural: "volumesnapshots".into(),
    }
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// `text` cut to at most `max` bytes and to an alphanumeric last character.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
}

/// A label value for a name: the name when it fits in 63 characters, else a prefix and a hash.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        name.to_owned()
    } else {
        format!("{}-{}", cut(name, 52), short_hash(name))
    }
}

/// The slot as it appears in names and the slot label.
pub fn slot_stamp(slot: Timestamp) -> String {
    slot.to_zoned(TimeZone::UTC)
        .strftime(SLOT_FORMAT)
        .to_string()
}

fn parse_stamp(stamp: &str) -> Option<Timestamp> {
    jiff::civil::DateTime::strptime(SLOT_FORMAT, stamp)
        .ok()?
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The VolumeSnapshot name of (schedule, PVC, slot): `<schedule>-<pvc>-<YYYYMMDDHHMM>`, or,
/// past 253 characters (a DNS subdomain's limit), a prefix of it, a hash of the pair and the
/// slot. The same inputs always give the same name, so a slot is never taken twice.
pub fn snapshot_name(schedule: &str, pvc: &str, slot: Timestamp) -> String {
    let stamp = slot_stamp(slot);
    let full = format!("{schedule}-{pvc}-{stamp}");
    if full.len() <= 253 {
        return full;
    }
    let hash = short_hash(&format!("{schedule}/{pvc}"));
    let head = cut(&full, 253 - stamp.len() - hash.len() - 2);
    format!("{head}-{hash}-{stamp}")
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Namespace to watch; `None` for all.
    pub namespace: Option<String>,
    /// Where the Lease lives.
    pub lease_namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// This replica's holder identity (unique per process).
    pub identity: String,
    /// How long a Lease holder that stops renewing keeps the Lease, in seconds.
    pub lease_duration_seconds: i32,
}

/// What went wrong in a step.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// An API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The Lease was lost in the middle of a round; the new leader finishes it.
    #[error("lost the lease")]
    NotLeading,
}

/// What a step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Whether this replica held the Lease and acted.
    pub leading: bool,
    /// The earliest next slot over all schedules (when leading).
    pub next_slot: Option<Timestamp>,
}

/// The controller. Cheap to build; holds no state but the Lease's.
pub struct Scheduler {
    client: kube::Client,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
    elector: LeaderElector,
    recorder: Recorder,
}

struct Problem {
    reason: &'static str,
    message: String,
}

impl Scheduler {
    /// A scheduler talking to `client`, reading time from `clock`.
    pub fn new(client: kube::Client, clock: Arc<dyn Clock>, config: SchedulerConfig) -> Self {
        let elector = LeaderElector::new(
            client.clone(),
            &config.lease_namespace,
            &config.lease_name,
            &config.identity,
            config.lease_duration_seconds,
            clock.clone(),
        );
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(config.identity.clone()),
            },
        );
        Scheduler {
            client,
            clock,
            config,
            elector,
            recorder,
        }
    }

    /// The Lease elector (tests and shutdown use it).
    pub fn elector(&self) -> &LeaderElector {
        &self.elector
    }

    fn schedules(&self) -> Api<SnapshotSchedule> {
        match &self.config.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Renews or acquires the Lease; when leading, reconciles every schedule once.
    pub async fn step(&self) -> Result<StepOutcome, SchedulerError> {
        if !self.elector.try_lead().await? {
            return Ok(StepOutcome {
                leading: false,
                next_slot: None,
            });
        }
        let mut next_slot: Option<Timestamp> = None;
        for schedule in self.schedules().list(&ListParams::default()).await? {
            match self.reconcile(&schedule).await {
                Ok(next) => {
                    next_slot = match (next_slot, next) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
                Err(SchedulerError::NotLeading) => return Err(SchedulerError::NotLeading),
                Err(e) => tracing::warn!(
                    schedule = %schedule.name_any(),
                    namespace = schedule.namespace().unwrap_or_default(),
                    error = %e,
                    "reconcile failed; retried next step"
                ),
            }
        }
        Ok(StepOutcome {
            leading: true,
            next_slot,
        })
    }

    /// Steps every `interval` (sooner when a slot is due) until `shutdown`, then gives up the
    /// Lease.
    pub async fn run(&self, interval: std::time::Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let mut wait = interval;
            match self.step().await {
                Ok(StepOutcome {
                    next_slot: Some(next),
                    ..
                }) => {
                    let until = next.duration_since(self.clock.now());
                    if let Ok(until) = std::time::Duration::try_from(until) {
                        wait = wait.min(until + std::time::Duration::from_millis(50));
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduler step failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut shutdown => break,
            }
        }
        if let Err(e) = self.elector.release().await {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }

    /// Publishes an Event about `schedule`; `snapshot` names the VolumeSnapshot it concerns,
    /// which also keeps events about different snapshots from being merged into one series.
    async fn event(
        &self,
        schedule: &SnapshotSchedule,
        type_: EventType,
        reason: &str,
        note: String,
        snapshot: Option<&str>,
    ) {
        let secondary = snapshot.map(|name| ObjectReference {
            api_version: Some("snapshot.storage.k8s.io/v1".into()),
            kind: Some("VolumeSnapshot".into()),
            name: Some(name.into()),
            namespace: schedule.namespace(),
            ..ObjectReference::default()
        });
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary,
        };
        if let Err(e) = self
            .recorder
            .publish(&event, &schedule.object_ref(&()))
            .await
        {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    fn ensure_leading(&self) -> Result<(), SchedulerError> {
        if self.elector.is_leading() {
            Ok(())
        } else {
            Err(SchedulerError::NotLeading)
        }
    }

    /// One schedule: validate, take the due slot, prune, write status. Returns the next slot.
    pub async fn reconcile(
        &self,
        schedule: &SnapshotSchedule,
    ) -> Result<Option<Timestamp>, SchedulerError> {
        let namespace = schedule.namespace().unwrap_or_default();
        let old = schedule.status.clone().unwrap_or_default();
        let mut status = old.clone();
        status.observed_generation = schedule.metadata.generation;
        let now = self.clock.now();

        let valid = match schedule.spec.validate() {
            Ok(valid) => valid,
            Err(message) => {
                status.next_run = None;
                let changed = set_ready(&mut status, false, "InvalidSpec", &message, now);
                if changed {
                    self.event(schedule, EventType::Warning, "InvalidSpec", message, None)
                        .await;
                }
                self.write_status(schedule, &old, status).await?;
                return Ok(None);
            }
        };
        let next = valid.cron.next_after(now, &valid.zone);
        status.next_run = next.map(|t| t.to_string());
        let snapshots: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &namespace, &volume_snapshot_resource());

        if schedule.spec.paused {
            set_ready(
                &mut status,
                false,
                "Paused",
                "spec.paused is true: no snapshots are taken or deleted",
                now,
            );
        } else {
            let mut problems = Vec::new();
            if let Some(slot) = due_slot(schedule, &old, &valid, now) {
                problems = self.take_slot(schedule, &snapshots, slot).await?;
                if problems.is_empty() {
                    status.last_run = Some(slot.to_string());
                }
            }
            match problems.first() {
                None => {
                    let message = match next {
                        Some(next) => format!("next slot {next}"),
                        None => "no further slot".to_owned(),
                    };
                    set_ready(&mut status, true, "Scheduled", &message, now);
                }
                Some(first) => {
                    let message = problems
                        .iter()
                        .map(|p| p.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                    set_ready(&mut status, false, first.reason, &message, now);
                }
            }
        }

        // One list serves pruning and the counts; objects being deleted no longer count.
        let mut owned = self.owned(schedule, &snapshots).await?;
        owned.retain(|s| s.metadata.deletion_timestamp.is_none());
        if !schedule.spec.paused {
            let pruned = self
                .prune(schedule, &snapshots, &owned, &valid, now)
                .await?;
            owned.retain(|s| !pruned.contains(&s.name_any()));
        }
        status.snapshots = owned.len() as i32;
        status.ready_snapshots = owned.iter().filter(|s| is_ready(s)).count() as i32;
        self.write_status(schedule, &old, status).await?;
        Ok(next)
    }

    /// Creates the slot's VolumeSnapshot for every selected, bound PVC. AlreadyExists of our
    /// own object means the slot was already taken (a restart, another leader).
    async fn take_slot(
        &self,
        schedule: &SnapshotSchedule,
        snapshots: &Api<DynamicObject>,
        slot: Timestamp,
    ) -> Result<Vec<Problem>, SchedulerError> {
        let namespace = schedule.namespace().unwrap_or_default();
        let name = schedule.name_any();
        let uid = schedule.uid().unwrap_or_default();
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        let selector = selector_query(&schedule.spec.selector);
        let mut params = ListParams::default();
        if !selector.is_empty() {
            params = params.labels(&selector);
        }
        let mut problems = Vec::new();
        for pvc in pvcs.list(&params).await? {
            let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            if !bound || pvc.metadata.deletion_timestamp.is_some() {
                tracing::info!(pvc = %pvc.name_any(), "skipping a PVC that is not Bound");
                continue;
            }
            let pvc_name = pvc.name_any();
            let snapshot_name = snapshot_name(&name, &pvc_name, slot);
            let mut spec = json!({ "source": { "persistentVolumeClaimName": pvc_name } });
            if let Some(class) = &schedule.spec.volume_snapshot_class_name {
                spec["volumeSnapshotClassName"] = json!(class);
            }
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "metadata": {
                    "name": snapshot_name,
                    "namespace": namespace,
                    "labels": {
                        LABEL_SCHEDULE: label_value(&name),
                        LABEL_SCHEDULE_UID: uid,
                        LABEL_PVC: label_value(&pvc_name),
                        LABEL_SLOT: slot_stamp(slot),
                        LABEL_MANAGED_BY: MANAGER,
                    },
                },
                "spec": spec,
            }))
            .map_err(kube::Error::SerdeError)?;
            self.ensure_leading()?;
            match snapshots.create(&PostParams::default(), &object).await {
                Ok(_) => {
                    tracing::info!(snapshot = %snapshot_name, pvc = %pvc_name, %slot, "created VolumeSnapshot");
                    self.event(
                        schedule,
                        EventType::Normal,
                        "SnapshotCreated",
                        format!("created VolumeSnapshot {snapshot_name} of PVC {pvc_name} for slot {slot}"),
                        Some(&snapshot_name),
                    )
                    .await;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let existing = snapshots.get(&snapshot_name).await?;
                    if !is_ours(&existing, &uid)
                        || existing.data["spec"]["source"]["persistentVolumeClaimName"]
                            != json!(pvc_name)
                    {
                        let message = format!(
                            "VolumeSnapshot {snapshot_name} exists and was not made by this schedule for PVC {pvc_name}"
                        );
                        self.event(
                            schedule,
                            EventType::Warning,
                            "NameConflict",
                            message.clone(),
                            Some(&snapshot_name),
                        )
                        .await;
                        problems.push(Problem {
                            reason: "NameConflict",
                            message,
                        });
                    }
                }
                Err(kube::Error::Api(s)) => {
                    let message = format!(
                        "creating VolumeSnapshot {snapshot_name} of PVC {pvc_name}: {}",
                        s.message
                    );
                    self.event(
                        schedule,
                        EventType::Warning,
                        "SnapshotFailed",
                        message.clone(),
                        Some(&snapshot_name),
                    )
                    .await;
                    problems.push(Problem {
                        reason: "SnapshotFailed",
                        message,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(problems)
    }

    async fn owned(
        &self,
        schedule: &SnapshotSchedule,
        snapshots: &Api<DynamicObject>,
    ) -> Result<Vec<DynamicObject>, SchedulerError> {
        let uid = schedule.uid().unwrap_or_default();
        let params = ListParams::default().labels(&format!(
            "{LABEL_SCHEDULE_UID}={uid},{LABEL_MANAGED_BY}={MANAGER}"
        ));
        let list = snapshots.list(&params).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|s| is_ours(s, &uid))
            .collect())
    }

    /// Deletes, per PVC, the ready snapshots beyond `maxCount` (oldest first) or older than
    /// `maxAge` (by slot). Snapshots not ready, or not ours, are never deleted. `owned` is
    /// this schedule's snapshots ([`Scheduler::owned`]); returns the names deleted.
    async fn prune(
        &self,
        schedule: &SnapshotSchedule,
        snapshots: &Api<DynamicObject>,
        owned: &[DynamicObject],
        valid: &ValidSpec,
        now: Timestamp,
    ) -> Result<BTreeSet<String>, SchedulerError> {
        let mut pruned = BTreeSet::new();
        if valid.max_count.is_none() && valid.max_age_seconds.is_none() {
            return Ok(pruned);
        }
        let mut by_pvc: BTreeMap<String, Vec<(Timestamp, String)>> = BTreeMap::new();
        for snapshot in owned {
            if !is_ready(snapshot) || snapshot.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let labels = snapshot.labels();
            let (Some(pvc), Some(slot)) = (
                labels.get(LABEL_PVC).cloned(),
                labels.get(LABEL_SLOT).and_then(|s| parse_stamp(s)),
            ) else {
                continue;
            };
            by_pvc
                .entry(pvc)
                .or_default()
                .push((slot, snapshot.name_any()));
        }
        for (pvc, mut list) in by_pvc {
            list.sort_by(|a, b| b.cmp(a));
            for (index, (slot, name)) in list.iter().enumerate() {
                let too_many = valid.max_count.is_some_and(|max| index >= max);
                let too_old = valid.max_age_seconds.is_some_and(|age| {
                    slot.checked_add(SignedDuration::from_secs(age))
                        .is_ok_and(|end| end < now)
                });
                if !(too_many || too_old) {
                    continue;
                }
                self.ensure_leading()?;
                match snapshots.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {
                        pruned.insert(name.clone());
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        pruned.insert(name.clone());
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                let why = if too_many { "maxCount" } else { "maxAge" };
                tracing::info!(snapshot = %name, pvc = %pvc, why, "pruned VolumeSnapshot");
                self.event(
                    schedule,
                    EventType::Normal,
                    "SnapshotPruned",
                    format!("deleted VolumeSnapshot {name} (slot {slot}) by retention {why}"),
                    Some(name),
                )
                .await;
            }
        }
        Ok(pruned)
    }

    async fn write_status(
        &self,
        schedule: &SnapshotSchedule,
        old: &SnapshotScheduleStatus,
        status: SnapshotScheduleStatus,
    ) -> Result<(), SchedulerError> {
        if &status == old && schedule.status.is_some() {
            return Ok(());
        }
        let api: Api<SnapshotSchedule> = Api::namespaced(
            self.client.clone(),
            &schedule.namespace().unwrap_or_default(),
        );
        // A merge patch keeps fields it does not mention: an absent next slot (invalid spec)
        // must be sent as null to clear the old one.
        let mut value = serde_json::to_value(&status).map_err(kube::Error::SerdeError)?;
        if status.next_run.is_none() {
            value["nextRun"] = Value::Null;
        }
        api.patch_status(
            &schedule.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": value })),
        )
        .await?;
        Ok(())
    }
}

/// The slot to take now, if any: the latest slot at or before `now` that is later than both
/// the last completed round and the schedule's creation. After downtime that is one slot, the
/// most recent; the ones before it are skipped.
fn due_slot(
    schedule: &SnapshotSchedule,
    status: &SnapshotScheduleStatus,
    valid: &ValidSpec,
    now: Timestamp,
) -> Option<Timestamp> {
    let slot = valid.cron.latest_at_or_before(now, &valid.zone)?;
    let last = status
        .last_run
        .as_deref()
        .and_then(|s| s.parse::<Timestamp>().ok());
    let created = schedule.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let after = last.max(created);
    (after.is_none_or(|a| slot > a)).then_some(slot)
}

fn is_ours(snapshot: &DynamicObject, uid: &str) -> bool {
    let labels = snapshot.labels();
    labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGER)
        && labels.get(LABEL_SCHEDULE_UID).map(String::as_str) == Some(uid)
}

fn is_ready(snapshot: &DynamicObject) -> bool {
    snapshot.data["status"]["readyToUse"] == Value::Bool(true)
}

/// Sets the `Ready` condition; true when it changed (reason, status or message).
fn set_ready(
    status: &mut SnapshotScheduleStatus,
    ready: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let value = if ready { "True" } else { "False" };
    let previous = status.conditions.iter().find(|c| c.type_ == "Ready");
    if previous.is_some_and(|c| c.status == value && c.reason == reason && c.message == message) {
        return false;
    }
    let last_transition_time = match previous {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: "Ready".into(),
        status: value.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time,
        observed_generation: status.observed_generation,
    };
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.push(condition);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn names_are_deterministic_and_valid() {
        let slot = ts("2026-11-25T03:30:00Z");
        assert_eq!(
            snapshot_name("nightly", "db", slot),
            "nightly-db-202611250330"
        );
        let long_pvc = "p".repeat(253);
        let a = snapshot_name("nightly", &long_pvc, slot);
        assert_eq!(a, snapshot_name("nightly", &long_pvc, slot));
        assert!(a.len() <= 253, "{}", a.len());
        assert!(a.ends_with("-202611250330"), "{a}");
        // Two long names that share the prefix still differ.
        let b = snapshot_name("nightly", &format!("{long_pvc}x"), slot);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn label_values_fit() {
        assert_eq!(label_value("db"), "db");
        let long = format!("{}-{}", "a".repeat(60), "b".repeat(60));
        let v = label_value(&long);
        assert!(v.len() <= 63, "{v}");
        assert_ne!(v, label_value(&format!("{long}c")));
        assert_eq!(
            parse_stamp(&slot_stamp(ts("2026-01-02T03:04:00Z"))),
            Some(ts("2026-01-02T03:04:00Z"))
        );
    }

    #[test]
    fn ready_condition_keeps_transition_time() {
        let mut status = SnapshotScheduleStatus::default();
        let t0 = ts("2026-01-01T00:00:00Z");
        let t1 = ts("2026-01-01T01:00:00Z");
        assert!(set_ready(&mut status, true, "Scheduled", "next a", t0));
        assert!(!set_ready(&mut status, true, "Scheduled", "next a", t1));
        assert!(set_ready(&mut status, true, "Scheduled", "next b", t1));
        assert_eq!(status.conditions[0].last_transition_time, Time(t0));
        assert!(set_ready(&mut status, false, "Paused", "paused", t1));
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.conditions[0].last_transition_time, Time(t1));
    }
}
