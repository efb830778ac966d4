//! The shared backend behaviour suite (`snapcsi::backend::conformance`) against every backend
//! that can run here without a cloud. Cloud backends join with their real servers or
//! simulators as they land.

use snapcsi::backend::conformance;
use snapcsi::backend::local::{LocalBackend, LocalConfig};
use snapcsi::backend::memory::MemoryBackend;
use std::sync::Arc;

#[tokio::test]
async fn local_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = LocalBackend::open(LocalConfig {
        data_dir: dir.path().join("data"),
        max_capacity: None,
    })
    .expect("open local backend");
    let passed = conformance::run(Arc::new(backend), "local").await;
    assert_eq!(passed, Ok(10), "{passed:?}");
    // Everything the suite made was deleted: no image is left behind.
    for sub in ["volumes", "snapshots"] {
        let left: Vec<_> = std::fs::read_dir(dir.path().join("data").join(sub))
            .expect("read dir")
            .collect();
        assert!(left.is_empty(), "{sub} left behind: {left:?}");
    }
}

#[tokio::test]
async fn memory_backend_conforms() {
    let passed = conformance::run(Arc::new(MemoryBackend::new(None)), "memory").await;
    assert_eq!(passed, Ok(10), "{passed:?}");
}
