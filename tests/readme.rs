//! README.md, the pages under docs/ and tests/README.md stay true: their commands are run
//! here verbatim through `sh -c`, with only the socket path and the binary's location
//! substituted (and the `<id>` placeholders a reader fills in), their config examples are
//! parsed and built with only their data directory and CA bundle paths changed, and what they
//! say about the code (backends, flags, source directories, test phases, test files) is
//! checked against it. Every document is read at run time, so a page added under docs/ is
//! checked without touching this file.

use serde_json::Value;
use snapcsi::backend::registry::build_instance;
use snapcsi::config::FileConfig;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_snapcsi");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One document: its path relative to the repository root (how errors name it) and its text.
struct Doc {
    path: String,
    text: String,
}

/// One document by its path relative to the repository root.
fn doc(path: &str) -> Doc {
    let text = std::fs::read_to_string(format!("{ROOT}/{path}"))
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
    Doc {
        path: path.to_owned(),
        text,
    }
}

/// Every page under docs/, sorted by name.
fn docs_pages() -> Vec<String> {
    let mut pages: Vec<String> = std::fs::read_dir(format!("{ROOT}/docs"))
        .expect("read docs/")
        .map(|e| {
            e.expect("docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    pages
}

/// Every document a reader is sent to: README.md, every docs/*.md, tests/README.md.
fn all_docs() -> Vec<Doc> {
    let mut paths = vec!["README.md".to_owned()];
    paths.extend(docs_pages());
    paths.push("tests/README.md".to_owned());
    paths.iter().map(|p| doc(p)).collect()
}

/// The bodies of the fenced blocks of one language in every document, each with the path of
/// the document it is in; every document is searched the same way.
fn blocks(docs: &[Doc], lang: &str) -> Vec<(String, String)> {
    let fence = format!("```{lang}");
    let mut out = Vec::new();
    for doc in docs {
        let mut current: Option<String> = None;
        for line in doc.text.lines() {
            match &mut current {
                None if line.trim_start() == fence => current = Some(String::new()),
                Some(body) if line.trim_start() == "```" => {
                    out.push((doc.path.clone(), std::mem::take(body)));
                    current = None;
                }
                Some(body) => {
                    body.push_str(line);
                    body.push('\n');
                }
                None => {}
            }
        }
        assert!(
            current.is_none(),
            "{}: a ```{lang} block is never closed",
            doc.path
        );
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

/// Runs one documented line with `sh -c`, exactly as written except for the socket path
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
    let sh = blocks(&all_docs(), "sh");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("snapcsi.sock");
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).expect("bin dir");
    std::os::unix::fs::symlink(BIN, bin_dir.join("snapcsi")).expect("link the binary");

    // "Run the driver": the README's line, with `cargo run --release --` standing for the
    // built binary; run in the test's directory, so `./snapcsi-data` lands there.
    let (run_doc, run) = sh
        .iter()
        .find_map(|(path, b)| {
            b.lines()
                .find(|l| l.contains("cargo run --release -- serve"))
                .map(|l| (path, l))
        })
        .expect("no document gives the run command (`cargo run --release -- serve`)");
    assert_eq!(
        run_doc, "README.md",
        "the run command belongs in the README"
    );
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
    assert!(
        said_socket,
        "{run_doc}: the driver must print the socket it serves on"
    );
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
    let (session_doc, session) = sh
        .iter()
        .find(|(_, b)| b.contains("snapcsi ctl --endpoint"))
        .expect("no document shows a ctl session (`snapcsi ctl --endpoint`)");
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
            "{session_doc}: command failed ({}): {line}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if line.contains("--output json") {
            let answer: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{session_doc}: {line}: not JSON ({e}): {stdout}"));
            assert!(
                answer.is_array() || answer.is_object(),
                "{session_doc}: {line}: {answer}"
            );
        } else if line.starts_with("snapcsi ctl volume create") {
            volume_id = first_id(&stdout)
                .unwrap_or_else(|| panic!("{session_doc}: {line}: no id in {stdout}"));
        } else if line.starts_with("snapcsi ctl snapshot create") {
            snapshot_id = first_id(&stdout)
                .unwrap_or_else(|| panic!("{session_doc}: {line}: no id in {stdout}"));
        }
        ran += 1;
    }
    assert!(ran >= 7, "{session_doc}: only {ran} ctl lines ran");
    println!("ran the run command of {run_doc} and {ran} ctl lines of {session_doc}");
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
    let (mut checked, mut examples) = (0, 0);
    let mut pages = std::collections::BTreeSet::new();
    for (path, block) in blocks(&all_docs(), "toml") {
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
        let config = FileConfig::parse(&path, &text)
            .unwrap_or_else(|e| panic!("{path}: example does not parse: {e}\n{text}"));
        for (name, table) in &config.backends {
            build_instance(&path, &config, name, table)
                .unwrap_or_else(|e| panic!("{path}: example backend {name}: {e}\n{text}"));
            checked += 1;
        }
        examples += 1;
        pages.insert(path);
    }
    // The configuration page and the four cloud backends' pages each show one.
    assert!(
        examples >= 5 && pages.len() >= 5,
        "only {examples} TOML examples, in {pages:?}"
    );
    assert!(checked >= 7, "only {checked} example backends found");
    println!("built {checked} backends of {examples} TOML examples in {pages:?}");
}

/// The README as a newcomer reads it, and the pages it leads to, checked against the code they
/// describe, so they cannot fall behind again: in README.md the backends of the opening
/// paragraph, the phases tests/run.sh runs, how `snapcsi` gets on PATH and what the test suite
/// needs before it starts; the `--backend` flag in the configuration page; the directories of
/// src/ in the architecture page's diagram; commands run as root without sudo (a minimal
/// Debian has none) in every document; every docs page linked from the README, and every test
/// file in tests/README.md's table.
#[test]
fn the_readme_tells_a_newcomer_what_the_code_does() {
    let docs = all_docs();
    let readme = doc("README.md");
    let intro = readme
        .text
        .split("\n## ")
        .next()
        .expect("opening paragraph");
    let clouds: Vec<String> = std::fs::read_dir(format!("{ROOT}/src/backend"))
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
            .unwrap_or_else(|| panic!("a new backend {cloud}: name it in README.md"));
        assert!(
            intro.contains(shown),
            "README.md: the opening paragraph omits {shown}"
        );
    }
    assert!(
        !intro.contains("roadmap"),
        "README.md: the opening paragraph calls built backends a roadmap:\n{intro}"
    );

    let configuration = doc("docs/configuration.md");
    let backend_flag = configuration
        .text
        .lines()
        .find(|l| l.starts_with("| `--backend`"))
        .unwrap_or_else(|| panic!("{}: no `--backend` row", configuration.path));
    assert!(
        backend_flag.contains("--config"),
        "{}: {backend_flag}",
        configuration.path
    );
    for cloud in &clouds {
        assert!(
            backend_flag.contains(cloud.as_str()),
            "{}: the --backend row omits {cloud}: {backend_flag}",
            configuration.path
        );
    }

    let architecture = doc("docs/architecture.md");
    let diagram = architecture
        .text
        .split("# Architecture")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .unwrap_or_else(|| panic!("{}: no diagram", architecture.path));
    let mut parts = vec!["registry".to_owned()];
    for dir in ["src", "src/backend"] {
        for entry in std::fs::read_dir(format!("{ROOT}/{dir}")).expect(dir) {
            let entry = entry.expect("entry");
            if entry.path().is_dir() {
                parts.push(format!("{}/", entry.file_name().to_string_lossy()));
            }
        }
    }
    for part in &parts {
        assert!(
            diagram.contains(part.as_str()),
            "{}: the diagram omits {part}",
            architecture.path
        );
    }

    let run_sh = std::fs::read_to_string(format!("{ROOT}/tests/run.sh")).expect("tests/run.sh");
    let suite = readme
        .text
        .split("It runs, as timed phases:")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .expect("README.md lists the phases of tests/run.sh");
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
            "phase {name} of tests/run.sh is not in README.md's list"
        );
        phases += 1;
    }
    assert!(phases >= 8, "only {phases} phases found in tests/run.sh");
    assert!(suite.contains("`sanity-<backend>`"), "README.md: {suite}");

    let mut sh_lines = 0;
    for (path, block) in blocks(&docs, "sh") {
        for line in block.lines() {
            assert!(
                !line.trim_start().starts_with("sudo "),
                "{path}: say \"as root\": minimal Debian has no sudo: {line}"
            );
            sh_lines += 1;
        }
    }
    assert!(sh_lines >= 20, "only {sh_lines} lines of sh blocks found");
    assert!(
        readme.text.contains("cargo install --path ."),
        "README.md: how snapcsi gets on PATH"
    );
    for needed in ["**Go**", "**Python 3**", "**nightly**", "**30 GB**"] {
        assert!(
            readme.text.contains(needed),
            "README.md: the prerequisites omit {needed}"
        );
    }

    // No page can be orphaned: the README links every docs page and the tests' README.
    let pages = docs_pages();
    assert!(pages.len() >= 10, "only {} pages under docs/", pages.len());
    for page in pages.iter().map(String::as_str).chain(["tests/README.md"]) {
        assert!(
            readme.text.contains(&format!("]({page})"))
                || readme.text.contains(&format!("]({page}#")),
            "README.md does not link {page}"
        );
    }

    // tests/README.md says what every test file proves, and leads back to the README.
    let tests = doc("tests/README.md");
    assert!(
        tests.text.contains("](../README.md"),
        "{}: no link back to the README",
        tests.path
    );
    let mut files = 0;
    for entry in std::fs::read_dir(format!("{ROOT}/tests")).expect("tests/") {
        let name = entry.expect("tests/ entry").file_name();
        let name = name.to_string_lossy();
        if !name.ends_with(".rs") {
            continue;
        }
        assert!(
            tests
                .text
                .lines()
                .any(|l| l.starts_with(&format!("| `tests/{name}` |"))),
            "{}: the table omits tests/{name}",
            tests.path
        );
        files += 1;
    }
    assert!(files >= 20, "only {files} test files in tests/");
}
