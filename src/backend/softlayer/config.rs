//! `type = "softlayer"` keys of the config file.

use crate::http::HttpSettings;
use crate::secret::Secret;
use serde::Deserialize;

/// The public endpoint of the SoftLayer REST API, version 3.1.
pub const DEFAULT_ENDPOINT: &str = "https://api.softlayer.com/rest/v3.1";

/// One SoftLayer account, as `[backends.<name>]` with `type = "softlayer"` describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftLayerConfig {
    /// Base URL of the REST API, up to and including the version (`.../rest/v3.1`).
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The API user name (HTTP basic auth user).
    pub username: String,
    /// The API key (HTTP basic auth password). Never logged.
    pub api_key: Secret,
    /// Volumes per page when the backend walks the account's volumes (snapshot lookup by
    /// name, unfiltered snapshot lists).
    #[serde(default = "default_scan_page")]
    pub scan_page_size: usize,
    /// HTTP settings (timeouts, retries, CA bundle).
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_owned()
}

fn default_scan_page() -> usize {
    50
}
