//! `snapcsi check-config --config FILE`: parse the config, build and authenticate every named
//! backend, and print one clear OK / PROBLEM line per backend with its capabilities and API
//! version. Exit 0 when every backend is fine, 1 when any is not, 2 when the file itself is
//! wrong.

use crate::backend::Capabilities;
use crate::backend::registry::build_instance;
use crate::config::FileConfig;
use std::io::Write;
use std::path::Path;

/// What `check-config` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every backend answered.
    AllOk,
    /// At least one backend has a problem.
    Problems(usize),
    /// The file cannot be used at all.
    BadFile,
}

fn describe(caps: &Capabilities) -> String {
    let mut out = Vec::new();
    for (on, name) in [
        (caps.create_delete_volume, "volumes"),
        (caps.create_delete_snapshot, "snapshots"),
        (caps.restore_snapshot, "restore"),
        (caps.clone_volume, "clone"),
        (caps.expand_volume, "expand"),
        (caps.get_capacity, "capacity"),
        (caps.group_snapshot, "group snapshots"),
        (caps.snapshot_metadata, "changed block tracking"),
        (caps.attach, "attach"),
        (caps.zones, "zones"),
    ] {
        if on {
            out.push(name);
        }
    }
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(", ")
    }
}

/// A problem as one line of at most [`MAX_PROBLEM`] characters, whatever the server answered:
/// an HTML page (a proxy's or a web server's error page, a URL that is not the API) becomes
/// its text and a word on what that usually means; line breaks and control characters become
/// spaces.
fn one_line(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    let html = lower.contains("<html") || lower.contains("<!doctype") || lower.contains("<body");
    let mut text = String::with_capacity(message.len());
    let mut in_tag = false;
    for c in message.chars() {
        match c {
            '<' if html => in_tag = true,
            '>' if html && in_tag => {
                in_tag = false;
                text.push(' ');
            }
            _ if in_tag => {}
            c if c.is_control() || c.is_whitespace() => text.push(' '),
            c => text.push(c),
        }
    }
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if html {
        line.push_str(
            " (the server answered an HTML page, not the API: check the endpoint or auth_url)",
        );
    }
    if line.chars().count() > MAX_PROBLEM {
        line = line.chars().take(MAX_PROBLEM - 1).collect::<String>() + "…";
    }
    line
}

/// Longest PROBLEM text, in characters.
const MAX_PROBLEM: usize = 1000;

/// Checks the config file at `path`, writing one line per backend to `out`.
pub async fn check(path: &Path, out: &mut impl Write) -> std::io::Result<Verdict> {
    let file = path.display().to_string();
    let config = match FileConfig::load(path) {
        Ok(config) => config,
        Err(e) => {
            writeln!(out, "PROBLEM {e}")?;
            return Ok(Verdict::BadFile);
        }
    };
    let mut problems = 0;
    for (name, table) in &config.backends {
        let kind = table.get("type").and_then(|v| v.as_str()).unwrap_or("?");
        let backend = match build_instance(&file, &config, name, table) {
            Ok(backend) => backend,
            Err(e) => {
                problems += 1;
                let problem = one_line(&e.to_string());
                writeln!(out, "PROBLEM backend {name} ({kind}): {problem}")?;
                continue;
            }
        };
        // Health first: a negotiated version (Cinder's microversion) is known only after it.
        let health = backend.health().await;
        let version = backend
            .api_version()
            .or_else(|| {
                table
                    .get("api_version")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "-".to_owned());
        match health {
            Ok(()) => writeln!(
                out,
                "OK      backend {name} ({kind}): api version {version}; capabilities: {}",
                describe(&backend.capabilities())
            )?,
            Err(e) => {
                problems += 1;
                let problem = one_line(&e.to_string());
                writeln!(out, "PROBLEM backend {name} ({kind}): {problem}")?;
            }
        }
    }
    Ok(if problems == 0 {
        Verdict::AllOk
    } else {
        Verdict::Problems(problems)
    })
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_problem_is_one_line() {
        let page = "cinder health: HTTP 404: <!doctype html>\n<html lang=en>\n<title>404 Not \
                    Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found.</p>";
        let line = one_line(page);
        assert!(!line.contains('\n') && !line.contains('<'), "{line}");
        assert!(
            line.starts_with("cinder health: HTTP 404: 404 Not Found Not Found"),
            "{line}"
        );
        assert!(line.contains("HTML page"), "{line}");
        assert_eq!(one_line("a\r\n\tb  c"), "a b c");
        assert_eq!(one_line("x < y and y > z"), "x < y and y > z");
        assert!(one_line(&"x".repeat(5000)).chars().count() <= 1000);
    }
}
