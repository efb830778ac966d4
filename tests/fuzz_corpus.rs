//! Replays the committed fuzz corpus (`tests/fuzz/corpus/<target>/`) through the same entry
//! points the cargo-fuzz targets call (`snapcsi::fuzzing`), on the stable toolchain, so plain
//! `cargo test` keeps the corpus meaningful: no input may panic, and the seed files whose
//! name starts with `good-` must still give the answer they were written for (a token
//! decodes, a config is accepted, a cloud body yields objects); `bad-` files must be refused.

use std::path::{Path, PathBuf};

const TARGETS: [&str; 7] = [
    "page_token",
    "id",
    "config",
    "cinder",
    "scp",
    "softlayer",
    "deltacloud",
];

/// Every file of one target's corpus, sorted, with its name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fuzz",
        "corpus",
        target,
    ]
    .iter()
    .collect();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = file_name(&path);
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn every_target_has_a_corpus_with_good_seeds() {
    for target in TARGETS {
        let files = corpus(target);
        assert!(
            files.iter().any(|(name, _)| name.starts_with("good-")),
            "{target}: no good- seed"
        );
    }
}

#[test]
fn page_tokens_decode_or_are_aborted() {
    for (name, data) in corpus("page_token") {
        let answer = snapcsi::fuzzing::page_token(&data);
        if name.starts_with("good-") {
            let cursor = answer.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(cursor.is_some_and(|c| !c.is_empty()), "{name}");
        } else if name.starts_with("bad-") {
            let e = answer.expect_err(&name);
            assert_eq!(e.code(), tonic::Code::Aborted, "{name}");
        }
    }
}

#[test]
fn ids_are_read_without_escaping() {
    for (name, data) in corpus("id") {
        let accepted = snapcsi::fuzzing::id(&data);
        if name.starts_with("good-") {
            assert!(accepted > 0, "{name}: no reader took the id");
        }
    }
    // The traversal seed must not be a local path.
    let layout = snapcsi::backend::local::Layout::new("/data");
    assert_eq!(layout.volume_image("vol-../../etc/passwd"), None);
}

#[test]
fn config_files_are_accepted_or_name_a_key() {
    for (name, data) in corpus("config") {
        let answer = snapcsi::fuzzing::config(&data);
        if name.starts_with("good-") {
            let sections = answer.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!sections.is_empty(), "{name}");
        } else if name.starts_with("bad-") {
            let e = answer.expect_err(&name);
            assert!(!e.key.is_empty(), "{name}: {e}");
        }
    }
}

/// A cloud's corpus: no panic anywhere, and each `good-` body yields objects with ids.
fn cloud(target: &str, parse: fn(&[u8]) -> snapcsi::fuzzing::Parsed) {
    for (name, data) in corpus(target) {
        let parsed = parse(&data);
        if name.starts_with("good-") && !name.starts_with("good-entry-point") {
            assert!(
                !parsed.snapshots.is_empty() || !parsed.volumes.is_empty(),
                "{target} {name}: the body gave no snapshot and no volume"
            );
        }
        for s in &parsed.snapshots {
            assert!(!s.id.as_str().is_empty(), "{target} {name}: {s:?}");
        }
        for v in &parsed.volumes {
            assert!(!v.id.as_str().is_empty(), "{target} {name}: {v:?}");
        }
    }
}

#[test]
fn cinder_bodies() {
    cloud("cinder", snapcsi::fuzzing::cinder);
    // A known seed reads to the documented values (seed 004's snapshot, sizes in GiB).
    let parsed = snapcsi::fuzzing::cinder(&corpus_file("cinder", "good-snapshot"));
    let s = &parsed.snapshots[0];
    assert_eq!(s.id.as_str(), "ffa9bc5e-1172-4021-acaf-cdcd78a9584d");
    assert_eq!(s.size_bytes, 1 << 30);
    assert!(!s.ready, "creating is not ready");
}

#[test]
fn scp_bodies() {
    cloud("scp", snapcsi::fuzzing::scp);
    let parsed = snapcsi::fuzzing::scp(&corpus_file("scp", "good-snapshots-page"));
    assert!(
        parsed
            .snapshots
            .iter()
            .any(|s| s.name == "snap-1" && s.ready),
        "{parsed:?}"
    );
}

#[test]
fn softlayer_bodies() {
    cloud("softlayer", snapcsi::fuzzing::softlayer);
    let parsed = snapcsi::fuzzing::softlayer(&corpus_file("softlayer", "good-snapshot"));
    let s = &parsed.snapshots[0];
    assert_eq!(
        (s.id.as_str(), s.source_volume_id.as_str()),
        ("13430037", "8744521")
    );
    assert_eq!(s.name, "snap-1");
}

#[test]
fn deltacloud_bodies() {
    cloud("deltacloud", snapcsi::fuzzing::deltacloud);
    let parsed = snapcsi::fuzzing::deltacloud(&corpus_file("deltacloud", "good-volume.xml"));
    let v = &parsed.volumes[0];
    assert_eq!((v.id.as_str(), v.size_bytes), ("vol-1", 10 << 30));
    assert!(v.ready);
}

fn corpus_file(target: &str, name: &str) -> Vec<u8> {
    corpus(target)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{target}/{name} is missing"))
        .1
}
