//! Log lines as an operator gets them: colour (ANSI escapes) only on a terminal, and never
//! with `NO_COLOR` set; a pipe, a file or `kubectl logs` gets plain text. The real binary, its
//! stderr once a pipe and once a pty (util-linux `script`).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_snapcsi");
const ESC: char = '\u{1b}';

/// `snapcsi serve` with a config file that does not exist: it logs one error and exits at
/// once, through the same logging set-up as a serving driver.
fn args(dir: &std::path::Path) -> Vec<String> {
    vec![
        "serve".into(),
        "--config".into(),
        dir.join("missing.toml").display().to_string(),
        "--endpoint".into(),
        format!("unix://{}", dir.join("csi.sock").display()),
    ]
}

/// What the binary wrote to a terminal: `script` gives it a pty and copies the output.
fn on_a_terminal(no_color: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let line = std::iter::once(BIN.to_owned())
        .chain(args(dir.path()))
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script.args(["-q", "-e", "-c", &line, "/dev/null"]);
    script.env_remove("NO_COLOR").env_remove("RUST_LOG");
    if let Some(v) = no_color {
        script.env("NO_COLOR", v);
    }
    let out = script.output().expect("run script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("snapcsi stopped"),
        "no log line on the pty: {text:?}"
    );
    text
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(args(dir.path()))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .output()
        .expect("run snapcsi");
    let piped = String::from_utf8_lossy(&out.stderr);
    assert!(piped.contains("snapcsi stopped"), "{piped}");
    assert!(
        !piped.contains(ESC),
        "colour codes in logs written to a pipe: {piped:?}"
    );

    let tty = on_a_terminal(None);
    assert!(tty.contains(ESC), "no colour on a terminal: {tty:?}");
    for value in ["1", "true"] {
        let plain = on_a_terminal(Some(value));
        assert!(
            !plain.contains(ESC),
            "colour despite NO_COLOR={value}: {plain:?}"
        );
    }
    // An empty NO_COLOR is the same as none (no-color.org).
    assert!(on_a_terminal(Some("")).contains(ESC));
}
