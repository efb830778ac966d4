//! The config file (`--config`, TOML): named backend instances and what they share, checked as
//! it is read. Each instance's own keys are typed by its backend (`backend::registry`).

/// The config file: named backend instances and what they share.
///
/// ```toml
/// default_backend = "east"     # used when a class names no `backend` parameter
/// cluster_id = "prod-1"        # tags cloud objects so several clusters can share a project
///
/// [backends.east]
/// type = "local"               # each type has its own keys (README "Configuration")
/// data_dir = "/var/lib/snapcsi"
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Instance used when a request names none; default: the only instance.
    pub default_backend: Option<String>,
    /// Identifies this cluster in cloud-side tags.
    pub cluster_id: Option<String>,
    /// Named instances; each table has a `type` key and that type's own keys.
    pub backends: std::collections::BTreeMap<String, toml::Table>,
}

/// A config file problem, naming the file, the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {key}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// Dotted key path, e.g. `backends.east.auth_url`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl FileConfig {
    /// Reads and checks a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: e.to_string(),
        })?;
        Self::parse(&file, &text)
    }

    /// Parses config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: e
                .span()
                .map(|span| key_at(text, span.start))
                .unwrap_or_else(|| "(document)".into()),
            message: e.message().to_owned(),
        })?;
        if config.backends.is_empty() {
            return Err(ConfigError {
                file: file.to_owned(),
                key: "backends".into(),
                message: "no backend instance is defined: add a [backends.<name>] table".into(),
            });
        }
        for name in config.backends.keys() {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(ConfigError {
                    file: file.to_owned(),
                    key: format!("backends.{name}"),
                    message: "instance names use only a-z, 0-9 and '-'".into(),
                });
            }
        }
        if let Some(default) = &config.default_backend
            && !config.backends.contains_key(default)
        {
            return Err(ConfigError {
                file: file.to_owned(),
                key: "default_backend".into(),
                message: format!("no [backends.{default}] table"),
            });
        }
        if config.default_backend.is_none() && config.backends.len() > 1 {
            return Err(ConfigError {
                file: file.to_owned(),
                key: "default_backend".into(),
                message: "several instances are defined: say which one is the default".into(),
            });
        }
        Ok(config)
    }
}

/// The dotted key of the table or key that holds byte offset `at` in TOML text (best effort:
/// the last `[table]` header before it plus the key on its line).
fn key_at(text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let table = before
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        })
        .map(str::to_owned);
    let line = before.rsplit('\n').next().unwrap_or("");
    let line_end = text[at.min(text.len())..].split('\n').next().unwrap_or("");
    let full = format!("{line}{line_end}");
    let key = full
        .split_once('=')
        .map(|(k, _)| k.trim().to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let table = table.filter(|t| !t.is_empty());
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t,
        (None, Some(k)) => k,
        (None, None) => "(document)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn config_errors_name_the_file_and_key() {
        let err = FileConfig::parse(
            "x.toml",
            "[backends.east]\ntype = \"local\"\ndata_dir = 5\n[backends.west]\ntype = \"local\"\n",
        )
        .expect_err("no default");
        assert_eq!(err.key, "default_backend");
        assert!(
            err.to_string()
                .starts_with("config x.toml: default_backend:")
        );
        let err = FileConfig::parse(
            "x.toml",
            "defualt_backend = \"a\"\n[backends.a]\ntype=\"local\"\n",
        )
        .expect_err("typo");
        assert!(err.message.contains("defualt_backend"), "{err}");
        let err = FileConfig::parse("x.toml", "[backends.Bad_Name]\ntype = \"local\"\n")
            .expect_err("bad name");
        assert_eq!(err.key, "backends.Bad_Name");
        let ok = FileConfig::parse("x.toml", "[backends.a]\ntype = \"local\"\n").expect("valid");
        assert_eq!(ok.backends.len(), 1);
    }
}
