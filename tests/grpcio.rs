//! The real Python grpcio as a CSI client, with grpcio's default channel options, on every
//! form of unix target it accepts. grpcio sends the socket path, percent-encoded, as the
//! HTTP/2 `:authority`; before src/authority.rs every call was reset (`RST_STREAM`), so
//! GetPluginInfo answered UNAVAILABLE.
//!
//! grpcio comes from PyPI into a venv keyed by version (tests/peers/grpcio/install.sh, about
//! 10 s once, then cached under ~/.cache/snapcsi). No network or no python3 is a failure, not a
//! skip: this test runs nowhere without them.

mod support;

use std::process::Command;
use support::Driver;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn python() -> String {
    let out = Command::new(format!("{ROOT}/tests/peers/grpcio/install.sh"))
        .output()
        .expect("run tests/peers/grpcio/install.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpcio could not be installed (python3 and PyPI are needed):\n{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = stdout
        .lines()
        .find_map(|l| l.strip_prefix("VENV grpcio "))
        .unwrap_or_else(|| panic!("install.sh printed no venv: {stdout}"));
    format!("{venv}/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_with_default_options_on_a_unix_socket() {
    let python = python();
    // A space in the directory: grpcio percent-encodes it too (`%20`).
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::Builder::new()
        .prefix("grpcio sock")
        .tempdir_in(parent.path())
        .expect("tempdir");
    let driver = Driver::start_in(dir, &["--backend", "memory", "--mode", "controller"]).await;
    let path = driver.socket.display().to_string();
    for (i, target) in [format!("unix:{path}"), format!("unix://{path}")]
        .iter()
        .enumerate()
    {
        let client = Command::new(&python)
            .arg(format!("{ROOT}/tests/peers/grpcio/client.py"))
            .args([target.as_str(), "snapcsi.dev", &format!("grpcio-{i}")])
            .output()
            .expect("run the grpcio client");
        let stdout = String::from_utf8_lossy(&client.stdout);
        println!("{target}:\n{stdout}");
        assert!(
            client.status.success(),
            "grpcio on {target}:\n{stdout}{}",
            String::from_utf8_lossy(&client.stderr)
        );
        assert!(stdout.contains("every call answered"), "{stdout}");
    }
    // Our own (tonic) client on the same socket still works, through the same wrapper.
    let info = driver
        .identity()
        .get_plugin_info(snapcsi::proto::GetPluginInfoRequest {})
        .await
        .expect("tonic client")
        .into_inner();
    assert_eq!(info.name, "snapcsi.dev");
}
