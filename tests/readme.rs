//! README stays true: its commands are run here verbatim through `sh -c`, with only the socket
//! path and the binary's location substituted (and the `<id>` placeholders a reader fills in),
//! and its config examples are parsed and built with only their data directory and CA bundle
//! paths changed.

use serde_json::Value;
use snapcsi::backend::registry::build_instance;
use snapcsi::config::FileConfig;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_snapcsi");
const README: &str = include_str!("../README.md");

/// The bodies of the README's fenced blocks of one language.
fn blocks(lang: &str) -> Vec<String> {
    let fence = format!("```{lang}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in README.lines() {
        match &mut current {
            None if line.trim_start() == fence => current = Some(String::new()),
            Some(body) if line.trim_start() == "```" => {
                out.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one README line with `sh -c`, exactly as written except for the socket path
/// (`/tmp/snapcsi.sock` -> the test's own; `CSI_ENDPOINT` points the lines that rely on the
/// default there too) and the binary location (`snapcsi` is found on PATH, where a directory
/// holding a link to the built binary comes first).
fn shell(line: &str, bin_dir: &Path, socket: &Path, cwd: &Path) -> Command {
    let line = line.replace("/tmp/snapcsi.sock", &socket.display().to_string());
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(line)
        .current_dir(cwd)
        .env("PATH", path)
        .env("CSI_ENDPOINT", format!("unix://{}", socket.display()));
    command
}

/// The first cell of the first row under a table's header line: the id a `create` printed.
fn first_id(table: &str) -> Option<String> {
    let row = table.lines().nth(1)?;
    row.split_whitespace().next().map(str::to_owned)
}

#[test]
fn the_run_command_and_the_ctl_session_work_as_written() {
    let sh = blocks("sh");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("snapcsi.sock");
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).expect("bin dir");
    std::os::unix::fs::symlink(BIN, bin_dir.join("snapcsi")).expect("link the binary");

    // "Run the driver": the README's line, with `cargo run --release --` standing for the
    // built binary; run in the test's directory, so `./snapcsi-data` lands there.
    let run = sh
        .iter()
        .flat_map(|b| b.lines())
        .find(|l| l.contains("cargo run --release -- serve"))
        .expect("README gives the run command");
    let run = run.replace("cargo run --release --", "exec snapcsi");
    let mut child = shell(&run, &bin_dir, &socket, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the driver");
    let stderr = child.stderr.take().expect("stderr");
    let _server = Server(child);
    let mut said_socket = false;
    for line in BufReader::new(stderr).lines().take(50) {
        let line = line.expect("log line");
        if line.contains("serving CSI") && line.contains(&socket.display().to_string()) {
            said_socket = true;
            break;
        }
    }
    assert!(said_socket, "the driver must print the socket it serves on");
    for _ in 0..250 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        dir.path().join("snapcsi-data").is_dir(),
        "--data-dir ./snapcsi-data is used"
    );

    // The ctl session, line by line as written, ids carried from one command to the next
    // (read from the table a `create` prints, or from the JSON a line asks for).
    let session = sh
        .iter()
        .find(|b| b.contains("snapcsi ctl --endpoint"))
        .expect("README shows a ctl session");
    let (mut volume_id, mut snapshot_id) = (String::new(), String::new());
    let mut ran = 0;
    for line in session.lines().filter(|l| l.starts_with("snapcsi ctl")) {
        let line = line
            .replace("<volume-id>", &volume_id)
            .replace("<snapshot-id>", &snapshot_id);
        let out = shell(&line, &bin_dir, &socket, dir.path())
            .output()
            .expect("run ctl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "README command failed ({}): {line}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if line.contains("--output json") {
            let answer: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{line}: not JSON ({e}): {stdout}"));
            assert!(answer.is_array() || answer.is_object(), "{line}: {answer}");
        } else if line.starts_with("snapcsi ctl volume create") {
            volume_id = first_id(&stdout).unwrap_or_else(|| panic!("{line}: no id in {stdout}"));
        } else if line.starts_with("snapcsi ctl snapshot create") {
            snapshot_id = first_id(&stdout).unwrap_or_else(|| panic!("{line}: no id in {stdout}"));
        }
        ran += 1;
    }
    assert!(ran >= 7, "only {ran} ctl lines ran");
    assert!(!volume_id.is_empty() && !snapshot_id.is_empty());
}

#[test]
fn every_config_example_is_valid() {
    let data = tempfile::tempdir().expect("tempdir");
    // A real CA certificate for the examples' `ca_bundle` keys.
    let ca = data.path().join("ca.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=readme",
        ])
        .arg("-keyout")
        .arg(data.path().join("ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut checked = 0;
    for block in blocks("toml") {
        // Only the data directory and CA bundle paths are changed, so that no example writes
        // outside the test and every file an example names exists.
        let text: String = block
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("data_dir") {
                    format!("data_dir = \"{}\"", data.path().display())
                } else if l.trim_start().starts_with("ca_bundle") {
                    format!("ca_bundle = \"{}\"", ca.display())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = FileConfig::parse("README.md", &text)
            .unwrap_or_else(|e| panic!("README example does not parse: {e}\n{text}"));
        for (name, table) in &config.backends {
            build_instance("README.md", &config, name, table)
                .unwrap_or_else(|e| panic!("README example backend {name}: {e}\n{text}"));
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} example backends found");
}

/// The README as a newcomer reads it, checked against the code it describes, so it cannot fall
/// behind again: the phases tests/run.sh runs, the directories of src/ in the architecture
/// diagram, the backends in the opening paragraph and the `--backend` flag, commands run as
/// root without sudo (a minimal Debian has none), how `snapcsi` gets on PATH, and what the
/// test suite needs before it starts.
#[test]
fn the_readme_tells_a_newcomer_what_the_code_does() {
    let root = env!("CARGO_MANIFEST_DIR");
    let intro = README.split("\n## ").next().expect("opening paragraph");
    let clouds: Vec<String> = std::fs::read_dir(format!("{root}/src/backend"))
        .expect("src/backend")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir() && e.file_name() != "local")
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(clouds.len() >= 4, "{clouds:?}");
    let names = [
        ("cinder", "Cinder"),
        ("scp", "SCP"),
        ("softlayer", "SoftLayer"),
        ("deltacloud", "Deltacloud"),
    ];
    for cloud in &clouds {
        let (_, shown) = names
            .iter()
            .find(|(dir, _)| dir == cloud)
            .unwrap_or_else(|| panic!("a new backend {cloud}: name it in the README"));
        assert!(intro.contains(shown), "the opening paragraph omits {shown}");
    }
    assert!(
        !intro.contains("roadmap"),
        "the opening paragraph calls built backends a roadmap:\n{intro}"
    );

    let backend_flag = README
        .lines()
        .find(|l| l.starts_with("| `--backend`"))
        .expect("the --backend row");
    assert!(backend_flag.contains("--config"), "{backend_flag}");
    for cloud in &clouds {
        assert!(
            backend_flag.contains(cloud.as_str()),
            "{cloud}: {backend_flag}"
        );
    }

    let diagram = README
        .split("## Architecture")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("the architecture diagram");
    let mut parts = vec!["registry".to_owned()];
    for dir in ["src", "src/backend"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).expect(dir) {
            let entry = entry.expect("entry");
            if entry.path().is_dir() {
                parts.push(format!("{}/", entry.file_name().to_string_lossy()));
            }
        }
    }
    for part in &parts {
        assert!(diagram.contains(part.as_str()), "the diagram omits {part}");
    }

    let run_sh = std::fs::read_to_string(format!("{root}/tests/run.sh")).expect("tests/run.sh");
    let suite = README
        .split("It runs, as timed phases:")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .expect("the README lists the phases of tests/run.sh");
    let mut phases = 0;
    for line in run_sh.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // `phase NAME COMMAND...` calls: at the start of a line or after `if` / `if !`.
        let Some(at) = words.iter().position(|w| *w == "phase") else {
            continue;
        };
        if !words[..at].iter().all(|w| *w == "if" || *w == "!") {
            continue;
        }
        let Some(name) = words.get(at + 1).filter(|n| !n.starts_with('"')) else {
            continue;
        };
        assert!(
            suite.contains(&format!("`{name}`")),
            "phase {name} of tests/run.sh is not in the README's list"
        );
        phases += 1;
    }
    assert!(phases >= 8, "only {phases} phases found in tests/run.sh");
    assert!(suite.contains("`sanity-<backend>`"), "{suite}");

    for block in blocks("sh") {
        for line in block.lines() {
            assert!(
                !line.trim_start().starts_with("sudo "),
                "say \"as root\": minimal Debian has no sudo: {line}"
            );
        }
    }
    assert!(
        README.contains("cargo install --path ."),
        "how snapcsi gets on PATH"
    );
    for needed in ["**Go**", "**Python 3**", "**nightly**", "**25 GB**"] {
        assert!(README.contains(needed), "the prerequisites omit {needed}");
    }
}
