//! The answers of `ctl`: aligned tables for people, JSON documents for scripts.

use crate::proto as csi;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;

fn timestamp(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| {
        let secs = u64::try_from(t.seconds).unwrap_or(0);
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let crate::calendar::Date {
            year: y,
            month: m,
            day: d,
        } = crate::calendar::from_days(i64::try_from(days).unwrap_or(0));
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    })
    .unwrap_or_default()
}

pub(super) fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn snapshot_json(s: &csi::Snapshot) -> Value {
    json!({
        "snapshot_id": s.snapshot_id,
        "source_volume_id": s.source_volume_id,
        "size_bytes": s.size_bytes,
        "creation_time": timestamp(s.creation_time.as_ref()),
        "ready_to_use": s.ready_to_use,
    })
}

fn volume_json(v: &csi::Volume) -> Value {
    let source = v
        .content_source
        .as_ref()
        .and_then(|s| s.r#type.as_ref())
        .map(|t| match t {
            csi::volume_content_source::Type::Snapshot(s) => json!({"snapshot_id": s.snapshot_id}),
            csi::volume_content_source::Type::Volume(v) => json!({"volume_id": v.volume_id}),
        });
    json!({"volume_id": v.volume_id, "capacity_bytes": v.capacity_bytes, "content_source": source})
}

/// Prints rows as aligned columns under a header.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn snapshot_rows(snapshots: &[csi::Snapshot]) -> Vec<Vec<String>> {
    snapshots
        .iter()
        .map(|s| {
            vec![
                s.snapshot_id.clone(),
                s.source_volume_id.clone(),
                human_size(s.size_bytes),
                if s.ready_to_use { "yes" } else { "no" }.to_owned(),
                timestamp(s.creation_time.as_ref()),
            ]
        })
        .collect()
}

const SNAPSHOT_HEADER: [&str; 5] = ["SNAPSHOT", "VOLUME", "SIZE", "READY", "CREATED"];
const VOLUME_HEADER: [&str; 3] = ["VOLUME", "SIZE", "SOURCE"];

fn volume_rows(volumes: &[csi::Volume]) -> Vec<Vec<String>> {
    volumes
        .iter()
        .map(|v| {
            let source = match v.content_source.as_ref().and_then(|s| s.r#type.as_ref()) {
                Some(csi::volume_content_source::Type::Snapshot(s)) => {
                    format!("snapshot {}", s.snapshot_id)
                }
                Some(csi::volume_content_source::Type::Volume(v)) => {
                    format!("volume {}", v.volume_id)
                }
                None => String::new(),
            };
            vec![v.volume_id.clone(), human_size(v.capacity_bytes), source]
        })
        .collect()
}

/// The answer to a delete: `deleted <id>`, or `{"<key>": id, "result": "deleted"}`.
pub(super) fn done(
    out: &mut impl Write,
    json_out: bool,
    what: &str,
    key: &str,
    id: &str,
) -> std::io::Result<()> {
    if json_out {
        writeln!(out, "{:#}", json!({key: id, "result": what}))
    } else {
        writeln!(out, "{what} {id}")
    }
}

/// A snapshot that shares its CSI name: the name, and whether it is the one the driver
/// answers for that name (`None`: the others are not in this list).
pub(super) struct Mark {
    pub name: String,
    pub answers: Option<bool>,
    pub chosen: Option<String>,
}

/// A snapshot list with the duplicates marked: a NOTE column, or in JSON `duplicate_name`
/// and `answers_for_name` on the marked ones.
pub(super) fn print_marked_snapshots(
    out: &mut impl Write,
    json_out: bool,
    snapshots: &[csi::Snapshot],
    marks: &HashMap<String, Mark>,
) -> std::io::Result<()> {
    if json_out {
        let docs: Vec<Value> = snapshots
            .iter()
            .map(|s| {
                let mut doc = snapshot_json(s);
                if let (Some(mark), Some(fields)) = (marks.get(&s.snapshot_id), doc.as_object_mut())
                {
                    fields.insert("duplicate_name".into(), json!(mark.name));
                    fields.insert("answers_for_name".into(), json!(mark.answers));
                }
                doc
            })
            .collect();
        return writeln!(out, "{:#}", Value::Array(docs));
    }
    let mut header = SNAPSHOT_HEADER.to_vec();
    header.push("NOTE");
    let rows: Vec<Vec<String>> = snapshot_rows(snapshots)
        .into_iter()
        .zip(snapshots)
        .map(|(mut row, s)| {
            row.push(match marks.get(&s.snapshot_id) {
                None => String::new(),
                Some(Mark {
                    name,
                    answers: Some(true),
                    ..
                }) => format!("name {name:?} also on other snapshots: this one answers"),
                Some(Mark {
                    name,
                    chosen: Some(chosen),
                    ..
                }) => format!("name {name:?}: duplicate of {chosen}"),
                Some(Mark { name, .. }) => {
                    format!("name {name:?} is on another snapshot too (not listed)")
                }
            });
            row
        })
        .collect();
    table(out, &header, &rows)
}

/// Prints items as JSON (an array for a list, one object otherwise) or as a table.
fn print<T>(
    out: &mut impl Write,
    json_out: bool,
    items: &[T],
    list: bool,
    to_json: fn(&T) -> Value,
    header: &[&str],
    rows: fn(&[T]) -> Vec<Vec<String>>,
) -> std::io::Result<()> {
    if json_out {
        let mut docs = items.iter().map(to_json);
        let doc = if list {
            Value::Array(docs.collect())
        } else {
            docs.next().unwrap_or(Value::Null)
        };
        writeln!(out, "{doc:#}")
    } else {
        table(out, header, &rows(items))
    }
}

pub(super) fn print_volumes(
    out: &mut impl Write,
    json_out: bool,
    volumes: &[csi::Volume],
    list: bool,
) -> std::io::Result<()> {
    print(
        out,
        json_out,
        volumes,
        list,
        volume_json,
        &VOLUME_HEADER,
        volume_rows,
    )
}

pub(super) fn print_snapshots(
    out: &mut impl Write,
    json_out: bool,
    snapshots: &[csi::Snapshot],
    list: bool,
) -> std::io::Result<()> {
    print(
        out,
        json_out,
        snapshots,
        list,
        snapshot_json,
        &SNAPSHOT_HEADER,
        snapshot_rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        use crate::calendar::{Date, from_days};
        assert_eq!(from_days(0), Date::new(1970, 1, 1));
        assert_eq!(from_days(20_417), Date::new(2025, 11, 25));
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        let ts = prost_types::Timestamp {
            seconds: 1_764_028_800,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&ts)), "2025-11-25T00:00:00Z");
    }
}
