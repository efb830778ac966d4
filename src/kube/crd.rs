//! The `SnapshotSchedule` custom resource (snapcsi.dev/v1alpha1) and the checks of its spec.
//!
//! `snapcsi scheduler crd` prints the CustomResourceDefinition generated from these types;
//! deploy/base/snapshotschedule-crd.yaml is that output (a test fails if they drift).

use super::cron::{Cron, parse_age};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Takes VolumeSnapshots of the PVCs its selector picks, on a cron schedule, and prunes them by
/// count and age.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "snapcsi.dev",
    version = "v1alpha1",
    kind = "SnapshotSchedule",
    namespaced,
    status = "SnapshotScheduleStatus",
    shortname = "snapsched",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","jsonPath":".spec.paused"}"#,
    printcolumn = r#"{"name":"Last","type":"string","jsonPath":".status.lastRun"}"#,
    printcolumn = r#"{"name":"Next","type":"string","jsonPath":".status.nextRun"}"#,
    printcolumn = r#"{"name":"Snapshots","type":"integer","jsonPath":".status.snapshots"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScheduleSpec {
    /// Which PersistentVolumeClaims of this namespace to snapshot. An empty selector picks
    /// every PVC of the namespace.
    pub selector: LabelSelector,
    /// Five-field cron expression (minute hour day-of-month month day-of-week) or a macro
    /// such as `@daily`, evaluated in `timeZone`.
    pub schedule: String,
    /// IANA time zone name, e.g. `Europe/Berlin`. Default: `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// VolumeSnapshotClass of the snapshots. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// When to delete old snapshots. Only ready snapshots this schedule created are deleted.
    #[serde(default)]
    pub retention: Retention,
    /// Take no snapshots and delete none while true.
    #[serde(default)]
    pub paused: bool,
}

/// Retention, per PVC. A snapshot is deleted when either limit says so.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep at most this many ready snapshots per PVC (the newest). At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<i32>,
    /// Delete ready snapshots whose slot is older than this: a number and a unit, `m`, `h`,
    /// `d` or `w`, e.g. `7d` or `1d12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// What the controller last did and will do next.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScheduleStatus {
    /// The slot (RFC 3339) of the last round of snapshots that was taken completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// The next slot (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// VolumeSnapshots this schedule created that still exist.
    #[serde(default)]
    pub snapshots: i32,
    /// Of those, how many are ready to use.
    #[serde(default)]
    pub ready_snapshots: i32,
    /// The spec generation these fields describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: `True` when the spec is valid and the last round succeeded; otherwise the
    /// reason (`InvalidSpec`, `Paused`, `SnapshotFailed`, `NameConflict`) and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A spec that passed every check.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    /// The parsed cron expression.
    pub cron: Cron,
    /// The zone it runs in.
    pub zone: jiff::tz::TimeZone,
    /// Retention by count, if any.
    pub max_count: Option<usize>,
    /// Retention by age in seconds, if any.
    pub max_age_seconds: Option<i64>,
}

impl SnapshotScheduleSpec {
    /// Checks the spec; the error names the field and says what is wrong.
    pub fn validate(&self) -> Result<ValidSpec, String> {
        let cron = Cron::parse(&self.schedule).map_err(|e| format!("spec.schedule: {e}"))?;
        let zone = match self.time_zone.as_deref() {
            None | Some("") => jiff::tz::TimeZone::UTC,
            Some(name) => jiff::tz::TimeZone::get(name)
                .map_err(|_| format!("spec.timeZone: unknown time zone {name:?}"))?,
        };
        let max_count = match self.retention.max_count {
            None => None,
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => {
                return Err(format!(
                    "spec.retention.maxCount: must be at least 1, got {n}"
                ));
            }
        };
        let max_age_seconds = match self.retention.max_age.as_deref() {
            None => None,
            Some(text) => Some(parse_age(text).map_err(|e| format!("spec.retention.maxAge: {e}"))?),
        };
        for (i, req) in self.selector.match_expressions.iter().flatten().enumerate() {
            let needs_values = matches!(req.operator.as_str(), "In" | "NotIn");
            let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
            let known = matches!(
                req.operator.as_str(),
                "In" | "NotIn" | "Exists" | "DoesNotExist"
            );
            if !known || needs_values != has_values {
                return Err(format!(
                    "spec.selector.matchExpressions[{i}]: operator {:?} with {} values",
                    req.operator,
                    if has_values { "some" } else { "no" }
                ));
            }
        }
        Ok(ValidSpec {
            cron,
            zone,
            max_count,
            max_age_seconds,
        })
    }
}

/// The label selector as the API's `labelSelector` query string.
pub fn selector_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.clone().unwrap_or_default().join(",");
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} notin ({values})", req.key),
            "Exists" => req.key.clone(),
            _ => format!("!{}", req.key),
        });
    }
    parts.join(",")
}

/// The CustomResourceDefinition as YAML, as committed under deploy/.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = SnapshotSchedule::crd();
    let yaml = serde_saphyr::to_string(&crd).unwrap_or_else(|e| format!("# {e}\n"));
    format!(
        "# Generated by `snapcsi scheduler crd`; do not edit (tests/scheduler.rs checks it).\n{yaml}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn spec() -> SnapshotScheduleSpec {
        SnapshotScheduleSpec {
            selector: LabelSelector::default(),
            schedule: "0 * * * *".into(),
            time_zone: None,
            volume_snapshot_class_name: None,
            retention: Retention::default(),
            paused: false,
        }
    }

    #[test]
    fn valid_spec() {
        let mut s = spec();
        s.time_zone = Some("America/New_York".into());
        s.retention = Retention {
            max_count: Some(3),
            max_age: Some("7d".into()),
        };
        let v = s.validate().expect("valid");
        assert_eq!(v.max_count, Some(3));
        assert_eq!(v.max_age_seconds, Some(7 * 86_400));
    }

    #[test]
    fn invalid_specs_name_the_field() {
        type Change = Box<dyn Fn(&mut SnapshotScheduleSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|s| s.schedule = "61 * * * *".into()),
                "spec.schedule: minute",
            ),
            (
                Box::new(|s| s.time_zone = Some("Mars/Olympus".into())),
                "spec.timeZone: unknown time zone \"Mars/Olympus\"",
            ),
            (
                Box::new(|s| s.retention.max_count = Some(0)),
                "spec.retention.maxCount: must be at least 1, got 0",
            ),
            (
                Box::new(|s| s.retention.max_age = Some("soon".into())),
                "spec.retention.maxAge",
            ),
            (
                Box::new(|s| {
                    s.selector.match_expressions = Some(vec![LabelSelectorRequirement {
                        key: "app".into(),
                        operator: "In".into(),
                        values: None,
                    }])
                }),
                "spec.selector.matchExpressions[0]",
            ),
        ];
        for (change, needle) in cases {
            let mut s = spec();
            change(&mut s);
            let err = s.validate().expect_err(needle);
            assert!(err.starts_with(needle), "{err} should start with {needle}");
        }
    }

    #[test]
    fn selector_as_query() {
        let s = LabelSelector {
            match_labels: Some([("app".to_owned(), "db".to_owned())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "skip".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_query(&s), "app=db,tier in (a,b),!skip");
    }

    #[test]
    fn crd_is_generated() {
        let yaml = crd_yaml();
        assert!(
            yaml.contains("name: snapshotschedules.snapcsi.dev"),
            "{yaml}"
        );
        assert!(yaml.contains("maxCount"), "{yaml}");
        assert!(yaml.contains("subresources:\n      status: {}"), "{yaml}");
    }
}
