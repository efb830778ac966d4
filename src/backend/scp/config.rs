//! `type = "scp"` configuration and the API version policy.

use super::time::Date;
use crate::http::HttpSettings;
use crate::secret::Secret;
use serde::Deserialize;

/// The keys of a `[backends.<name>]` table with `type = "scp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScpConfig {
    /// Virtual Server service URL, e.g. `https://virtualserver.kr-west1.e.samsungsdscloud.com`.
    /// When absent it is built from `region` and `env`.
    pub endpoint: Option<String>,
    /// Region, e.g. `kr-west1` (used when `endpoint` is absent).
    pub region: Option<String>,
    /// Environment letter of the service host name, e.g. `e` (used when `endpoint` is absent).
    pub env: Option<String>,
    /// `Scp-Accesskey`; may instead come with each request's `secrets`.
    pub access_key: Option<Secret>,
    /// The key the signature is made with; may instead come with each request's `secrets`.
    pub secret_key: Option<Secret>,
    /// `Scp-AccountId`, sent (and signed) when set.
    pub account_id: Option<Secret>,
    /// `Scp-Api-Version` of the Virtual Server API: `1.3` (default) or `1.2`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Use a version whose Not Before date has passed anyway (warned at every start).
    #[serde(default)]
    pub allow_deprecated_api_version: bool,
    /// `volume_type` of new volumes; the service default when absent.
    pub volume_type: Option<String>,
    /// `Accept-Language` header.
    #[serde(default = "default_language")]
    pub accept_language: String,
    /// `force` of snapshot creation (snapshot a volume that is attached to a server).
    #[serde(default = "default_force")]
    pub force_snapshot: bool,
    /// Longest a CreateVolume (or ControllerExpandVolume) waits for the volume to be
    /// `available` before answering "still in progress" (UNAVAILABLE; the sidecar calls
    /// again and finds the volume by name).
    #[serde(default = "default_volume_wait")]
    pub volume_wait_seconds: u64,
    /// HTTP client settings (`[backends.<name>.http]`).
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_api_version() -> String {
    CURRENT.to_owned()
}

fn default_language() -> String {
    "en-US".to_owned()
}

fn default_force() -> bool {
    true
}

fn default_volume_wait() -> u64 {
    60
}

/// The version a configuration gets when it names none: the CURRENT one.
pub const CURRENT: &str = "1.3";

/// A version's state on the `POST /v1/snapshots` page (seed 003: "State ACTIVE (CURRENT)",
/// "(SUPPORTED)", "(DEPRECATED)").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// The latest, recommended version.
    Current,
    /// Still served, bug fixes only.
    Supported,
    /// "Deprecated versions with Not Before dates that have arrived or expired are no longer
    /// supported."
    Deprecated,
}

/// One row of the seed's version tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionInfo {
    /// `1.0` … `1.3`.
    pub version: &'static str,
    /// Its state.
    pub state: VersionState,
    /// Its "Not Before" date; `-` in the seed is `None`.
    pub not_before: Option<Date>,
}

/// The versions of `POST /v1/snapshots` in seed 003, newest first.
pub const VERSIONS: [VersionInfo; 4] = [
    VersionInfo {
        version: "1.3",
        state: VersionState::Current,
        not_before: None,
    },
    VersionInfo {
        version: "1.2",
        state: VersionState::Supported,
        not_before: Some(Date::new(2026, 8, 31)),
    },
    VersionInfo {
        version: "1.1",
        state: VersionState::Deprecated,
        not_before: Some(Date::new(2026, 5, 31)),
    },
    VersionInfo {
        version: "1.0",
        state: VersionState::Deprecated,
        not_before: Some(Date::new(2025, 12, 31)),
    },
];

/// What the policy decided for a configured version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionDecision {
    /// Use it, nothing to say.
    Use,
    /// Use it, and log this warning at start.
    UseWithWarning(String),
}

/// The version policy: the CURRENT version by default; a SUPPORTED one when pinned; a
/// DEPRECATED one whose Not Before date has arrived is refused (the seed: "no longer
/// supported"), unless `allow_deprecated` is set, which is warned about at every start.
///
/// A Not Before date on a SUPPORTED version (1.2: 2026-08-31) does not refuse it: the seed
/// attaches "no longer supported" to deprecated versions only. It is warned about, since the
/// version is on its way out.
pub fn check_version(
    version: &str,
    today: Date,
    allow_deprecated: bool,
) -> Result<VersionDecision, String> {
    let known = VERSIONS
        .iter()
        .map(|v| v.version)
        .collect::<Vec<_>>()
        .join(", ");
    let info = VERSIONS
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| {
            format!("api_version {version:?} is not a Virtual Server API version (known: {known})")
        })?;
    let passed = info.not_before.filter(|date| *date <= today);
    match (info.state, passed) {
        (VersionState::Current, _) => Ok(VersionDecision::Use),
        (VersionState::Supported, None) => Ok(VersionDecision::UseWithWarning(format!(
            "SCP API version virtualserver {version} is SUPPORTED (bug fixes only); \
             {CURRENT} is CURRENT"
        ))),
        (VersionState::Supported, Some(date)) => Ok(VersionDecision::UseWithWarning(format!(
            "SCP API version virtualserver {version} is SUPPORTED but its Not Before date {date} \
             has passed; move to {CURRENT} before it is deprecated"
        ))),
        (VersionState::Deprecated, None) => Ok(VersionDecision::UseWithWarning(format!(
            "SCP API version virtualserver {version} is DEPRECATED and stops being served on its \
             Not Before date {}; move to {CURRENT}",
            info.not_before.map(|d| d.to_string()).unwrap_or_default()
        ))),
        (VersionState::Deprecated, Some(date)) if allow_deprecated => {
            Ok(VersionDecision::UseWithWarning(format!(
                "SCP API version virtualserver {version} is DEPRECATED and its Not Before date \
                 {date} has passed: SCP no longer supports it. Using it anyway because \
                 allow_deprecated_api_version = true; expect its calls to be refused; move to \
                 {CURRENT}"
            )))
        }
        (VersionState::Deprecated, Some(date)) => Err(format!(
            "api_version {version} is DEPRECATED and its Not Before date {date} has passed \
             (today is {today}): SCP no longer supports it. Use {CURRENT} (or set \
             allow_deprecated_api_version = true to try it anyway)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: Date = Date::new(2026, 11, 25);

    #[test]
    fn current_is_the_default_and_used_silently() {
        let config: ScpConfig = toml::from_str("endpoint = \"https://x\"").expect("parses");
        assert_eq!(config.api_version, "1.3");
        assert!(!config.allow_deprecated_api_version);
        assert_eq!(check_version("1.3", TODAY, false), Ok(VersionDecision::Use));
    }

    #[test]
    fn supported_can_be_pinned_with_a_warning() {
        let Ok(VersionDecision::UseWithWarning(w)) = check_version("1.2", TODAY, false) else {
            panic!("1.2 must be usable");
        };
        assert!(w.contains("2026-08-31"), "{w}");
        let Ok(VersionDecision::UseWithWarning(w)) =
            check_version("1.2", Date::new(2026, 1, 1), false)
        else {
            panic!("1.2 must be usable");
        };
        assert!(w.contains("SUPPORTED"), "{w}");
    }

    #[test]
    fn deprecated_past_its_date_is_refused_naming_the_date() {
        for (version, date) in [("1.0", "2025-12-31"), ("1.1", "2026-05-31")] {
            let err = check_version(version, TODAY, false).expect_err("refused");
            assert!(err.contains(date), "{err}");
            assert!(err.contains("allow_deprecated_api_version"), "{err}");
        }
        // The day itself counts: "Not Before dates that have arrived or expired".
        assert!(check_version("1.0", Date::new(2025, 12, 31), false).is_err());
        // Before its date a deprecated version still works, with a warning.
        assert!(matches!(
            check_version("1.1", Date::new(2026, 5, 30), false),
            Ok(VersionDecision::UseWithWarning(_))
        ));
    }

    #[test]
    fn the_override_uses_it_with_a_warning() {
        let Ok(VersionDecision::UseWithWarning(w)) = check_version("1.0", TODAY, true) else {
            panic!("override must allow it");
        };
        assert!(w.contains("2025-12-31") && w.contains("DEPRECATED"), "{w}");
    }

    #[test]
    fn unknown_versions_are_refused() {
        let err = check_version("2.0", TODAY, true).expect_err("unknown");
        assert!(err.contains("1.3"), "{err}");
    }
}
