//! `type = "deltacloud"` keys of the config file.

use crate::http::HttpSettings;
use crate::secret::Secret;
use serde::Deserialize;

/// One Deltacloud server and the cloud behind it, as `[backends.<name>]` with
/// `type = "deltacloud"` describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltacloudConfig {
    /// The API entry point, e.g. `http://localhost:3001/api`.
    pub endpoint: String,
    /// HTTP basic auth user (the cloud's access key, for most drivers).
    pub username: String,
    /// HTTP basic auth password (the cloud's secret key). Never logged.
    pub password: Secret,
    /// `X-Deltacloud-Driver`: the driver (cloud) behind the server, e.g. `ec2`.
    #[serde(default)]
    pub driver: Option<String>,
    /// `X-Deltacloud-Provider`: the provider (region/endpoint) of that driver.
    #[serde(default)]
    pub provider: Option<String>,
    /// `realm_id` of new volumes, unless a StorageClass gives `realm_id`.
    #[serde(default)]
    pub realm_id: Option<String>,
    /// Deltacloud lists have no paging: every list and name lookup reads the whole
    /// collection. Above this many objects the backend refuses to answer (and says so)
    /// rather than hold an unbounded list in memory.
    #[serde(default = "default_max_list")]
    pub max_list_items: usize,
    /// HTTP settings (timeouts, retries, CA bundle).
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_max_list() -> usize {
    10_000
}
