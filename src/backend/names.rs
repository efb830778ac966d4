//! One rule for the objects a backend finds by their CSI name (issue 15).
//!
//! A CSI name should name one object, but a cloud can hold two: a create whose answer was lost
//! (the controller restarted and lost its data directory while the create was in flight, a
//! timeout) and that was then sent again. Every backend that finds by name answers with the
//! same one every time — the oldest by creation time, then the smallest id — so a repeated
//! CreateSnapshot never switches from the snapshot it already reported ready to a newer one.
//! The others are not deleted (they may hold data someone relies on): a warning names every id
//! (once per name), `snapcsi_duplicate_names` counts the name, and `snapcsi ctl snapshot list`
//! marks them (see [`page_duplicates`]).
//!
//! The local and memory backends keep a unique name index and cannot hold two.

use crate::backend::Snapshot;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

/// One object found under a name: its id, its creation time if the cloud said, and the object.
#[derive(Debug, Clone)]
pub struct Found<T> {
    /// The cloud's id.
    pub id: String,
    /// When the cloud created it (`None`: unknown, ordered after every known time).
    pub created_at: Option<SystemTime>,
    /// The object itself.
    pub object: T,
}

/// The order objects of one name are chosen in: oldest first, unknown times last, then id.
pub fn order(a: (Option<SystemTime>, &str), b: (Option<SystemTime>, &str)) -> Ordering {
    let time = match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    time.then_with(|| a.1.cmp(b.1))
}

/// The object that answers for `name` among `found`: the first in [`order`]. With more than
/// one, the duplicates are reported (see the module documentation). `backend` and `kind`
/// (`snapshot`, `volume`) label the warning and the metric.
pub fn pick<T>(
    backend: &str,
    kind: &'static str,
    name: &str,
    mut found: Vec<Found<T>>,
) -> Option<T> {
    found.sort_by(|a, b| order((a.created_at, &a.id), (b.created_at, &b.id)));
    if found.len() > 1 {
        let ids: Vec<String> = found.iter().map(|f| f.id.clone()).collect();
        if crate::metrics::metrics().duplicate_name(backend, kind, name, &ids) {
            tracing::warn!(
                backend,
                kind,
                name,
                chosen = %ids[0],
                ids = %ids.join(", "),
                "{} {kind}s carry the CSI name {name:?}: answering with the oldest, {}, every \
                 time; the others ({}) are left alone: delete them once nothing uses them \
                 (logged once per name)",
                ids.len(),
                ids[0],
                ids[1..].join(", ")
            );
        }
    }
    found.into_iter().next().map(|f| f.object)
}

/// Which snapshots of one list page share their CSI name with another snapshot: those with a
/// name twice on the page, and those a lookup already found duplicated. Answers id -> name
/// (what `ctl snapshot list` needs to mark them; CSI's `Snapshot` has no name).
pub fn page_duplicates(page: &[Snapshot]) -> BTreeMap<String, String> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for snapshot in page.iter().filter(|s| !s.name.is_empty()) {
        *by_name.entry(snapshot.name.as_str()).or_default() += 1;
    }
    page.iter()
        .filter(|s| !s.name.is_empty())
        .filter(|s| {
            by_name.get(s.name.as_str()).is_some_and(|n| *n > 1)
                || crate::metrics::metrics()
                    .duplicate_ids("snapshot", &s.name)
                    .is_some_and(|ids| ids.iter().any(|id| id == s.id.as_str()))
        })
        .map(|s| (s.id.to_string(), s.name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
    }

    fn found(id: &str, created_at: Option<SystemTime>) -> Found<String> {
        Found {
            id: id.to_owned(),
            created_at,
            object: id.to_owned(),
        }
    }

    #[test]
    fn the_oldest_answers_then_the_smallest_id_whatever_the_cloud_order() {
        let candidates = vec![
            found("c", at(30)),
            found("z-unknown", None),
            found("b", at(10)),
            found("a", at(10)),
        ];
        let mut orders = vec![candidates.clone()];
        let mut reversed = candidates;
        reversed.reverse();
        orders.push(reversed);
        for order in orders {
            assert_eq!(
                pick("test", "snapshot", "names-unit-dup", order).as_deref(),
                Some("a")
            );
        }
        assert_eq!(
            pick("test", "snapshot", "names-unit-one", vec![found("x", None)]).as_deref(),
            Some("x")
        );
        assert_eq!(
            pick::<String>("test", "snapshot", "names-unit-none", Vec::new()),
            None
        );
    }

    #[test]
    fn duplicates_are_reported_once_per_name_and_counted() {
        let metrics = crate::metrics::metrics();
        let count = || {
            metrics
                .render()
                .lines()
                .find(|l| {
                    l.starts_with("snapcsi_duplicate_names_total{")
                        && l.contains("backend=\"names-unit\"")
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let ids = ["s1".to_owned(), "s2".to_owned()];
        assert!(metrics.duplicate_name("names-unit", "snapshot", "names-unit-x", &ids));
        assert!(!metrics.duplicate_name("names-unit", "snapshot", "names-unit-x", &ids));
        assert_eq!(count(), 1);
        // A third object of the same name is news: warned again, still one name.
        let more = ["s1".to_owned(), "s2".to_owned(), "s3".to_owned()];
        assert!(metrics.duplicate_name("names-unit", "snapshot", "names-unit-x", &more));
        assert_eq!(count(), 1);
        assert!(metrics.duplicate_name("names-unit", "snapshot", "names-unit-y", &ids));
        assert_eq!(count(), 2);
    }

    #[test]
    fn a_page_marks_names_seen_twice() {
        let snapshot = |id: &str, name: &str| Snapshot {
            id: crate::backend::SnapshotId::new(id),
            name: name.to_owned(),
            source_volume_id: crate::backend::VolumeId::new("v"),
            size_bytes: 1,
            created_at: SystemTime::UNIX_EPOCH,
            ready: true,
            group_snapshot_id: None,
        };
        let page = [
            snapshot("1", "names-page-a"),
            snapshot("2", "names-page-b"),
            snapshot("3", "names-page-a"),
            snapshot("4", ""),
            snapshot("5", ""),
        ];
        let marked = page_duplicates(&page);
        assert_eq!(
            marked.into_iter().collect::<Vec<_>>(),
            vec![
                ("1".to_owned(), "names-page-a".to_owned()),
                ("3".to_owned(), "names-page-a".to_owned())
            ]
        );
    }
}
