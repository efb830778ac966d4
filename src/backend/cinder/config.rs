//! `type = "cinder"` instance keys, checked at start-up with the key named on every error.

use super::microversion::Microversion;
use crate::http::HttpSettings;
use crate::secret::{Secret, Secrets};
use serde::Deserialize;

/// The Cinder API dialect an instance speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Block Storage v3 with microversions (`OpenStack-API-Version: volume 3.x`).
    V3,
    /// Block Storage v2 (`/v2/{tenant_id}`, `name`/`description`, 202 on create).
    V2,
    /// The v1 dialect Rackspace Cloud Block Storage speaks (`display_name`,
    /// `display_description`, 200 on create).
    V1,
}

impl Dialect {
    /// The catalog service types to try, best first.
    pub fn service_types(self) -> &'static [&'static str] {
        match self {
            Dialect::V3 => &["block-storage", "volumev3", "volume"],
            Dialect::V2 => &["volumev2", "block-storage", "volume"],
            Dialect::V1 => &["volume", "block-storage"],
        }
    }

    /// The URL path segment of the API version.
    pub fn segment(self) -> &'static str {
        match self {
            Dialect::V3 => "v3",
            Dialect::V2 => "v2",
            Dialect::V1 => "v1",
        }
    }
}

/// How the instance authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// Cinder's `auth_strategy = noauth` (tests): the token is `<user_id>:<project_id>`.
    Noauth,
    /// A fixed token: with `auth_url`, a Keystone token exchanged for a catalog (token
    /// method); without, sent as it is to `endpoint` (Rackspace-style).
    Token,
    /// Keystone v3 password method.
    Password,
    /// Keystone v3 application credential method.
    ApplicationCredential,
}

impl AuthType {
    /// The config file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Noauth => "noauth",
            AuthType::Token => "token",
            AuthType::Password => "password",
            AuthType::ApplicationCredential => "application_credential",
        }
    }
}

/// Which catalog endpoint interface to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// The public endpoint (default).
    #[default]
    Public,
    /// The internal endpoint.
    Internal,
    /// The admin endpoint.
    Admin,
}

impl Interface {
    /// The catalog's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
}

/// The keys of one `[backends.<name>]` table with `type = "cinder"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CinderConfig {
    /// API dialect (default `v3`).
    #[serde(default = "default_dialect")]
    pub dialect: Dialect,
    /// How to authenticate.
    pub auth_type: AuthType,
    /// Keystone v3 URL, e.g. `https://keystone.example:5000/v3`.
    pub auth_url: Option<String>,
    /// Fixed volume endpoint, e.g. `https://cinder.example:8776/v3/{project_id}`; skips the
    /// catalog. `{project_id}` / `$(project_id)s` / `$(tenant_id)s` are replaced.
    pub endpoint: Option<String>,
    /// User name (password method, or an application credential given by name).
    pub username: Option<String>,
    /// User id.
    pub user_id: Option<String>,
    /// Domain of the user, by name.
    pub user_domain_name: Option<String>,
    /// Domain of the user, by id.
    pub user_domain_id: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Project (tenant) by name.
    pub project_name: Option<String>,
    /// Project (tenant) id; in noauth and fixed-token modes the id in the URL.
    pub project_id: Option<String>,
    /// Domain of the project, by name.
    pub project_domain_name: Option<String>,
    /// Domain of the project, by id.
    pub project_domain_id: Option<String>,
    /// Application credential id.
    pub application_credential_id: Option<String>,
    /// Application credential name (with `username`/`user_id` and the user's domain).
    pub application_credential_name: Option<String>,
    /// Application credential secret.
    pub application_credential_secret: Option<Secret>,
    /// A pre-issued token.
    pub token: Option<Secret>,
    /// Catalog region.
    pub region: Option<String>,
    /// Catalog interface (default `public`).
    #[serde(default)]
    pub interface: Interface,
    /// Catalog service type to use instead of the dialect's list.
    pub service_type: Option<String>,
    /// Highest v3 microversion to use (default: the highest both sides speak, up to 3.66).
    pub max_microversion: Option<String>,
    /// Longest a CreateVolume waits for `available` before answering "still in progress".
    #[serde(default = "default_volume_wait")]
    pub volume_wait_seconds: u64,
    /// Longest a delete waits for the object to be gone before answering "still in progress".
    #[serde(default = "default_delete_wait")]
    pub delete_wait_seconds: u64,
    /// Volume type for volumes whose class names none.
    pub default_volume_type: Option<String>,
    /// Availability zone for volumes whose class and topology name none.
    pub default_availability_zone: Option<String>,
    /// HTTP client settings (timeouts, CA bundle, retries).
    #[serde(default)]
    pub http: HttpSettings,
    /// Attach volumes to nodes (Nova servers) through Nova: ControllerPublishVolume (default
    /// true; needs Keystone's catalog or `compute_endpoint`, and the v3 or v2 dialect).
    #[serde(default = "yes")]
    pub attach: bool,
    /// Fixed Nova endpoint, e.g. `https://nova.example:8774/v2.1`; skips the catalog's
    /// `compute` entry. `{project_id}` placeholders are replaced.
    pub compute_endpoint: Option<String>,
    /// Highest compute microversion to use (default: the highest both sides speak, up to
    /// 2.89).
    pub max_compute_microversion: Option<String>,
    /// Longest ControllerPublishVolume waits for the volume to be `in-use` on the server.
    #[serde(default = "default_attach_wait")]
    pub attach_wait_seconds: u64,
    /// Longest ControllerUnpublishVolume waits for the attachment to be gone.
    #[serde(default = "default_attach_wait")]
    pub detach_wait_seconds: u64,
    /// Report volumes' availability zones as CSI topology, and place new volumes in the zone
    /// the topology requirement asks for (default true, with `attach`). Cinder's and Nova's
    /// zone names must then be the same; set false on clouds where they differ.
    #[serde(default = "yes")]
    pub topology: bool,
}

fn yes() -> bool {
    true
}

fn default_attach_wait() -> u64 {
    60
}

fn default_dialect() -> Dialect {
    Dialect::V3
}

fn default_volume_wait() -> u64 {
    60
}

fn default_delete_wait() -> u64 {
    10
}

/// A configuration problem: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The key, relative to the instance table.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn missing(key: &'static str, why: &str) -> KeyError {
    KeyError {
        key,
        message: format!("missing: {why}"),
    }
}

impl CinderConfig {
    /// Whether this instance attaches volumes through Nova: `attach`, a dialect with the
    /// attachment fields (v3, v2), and a way to find Nova (Keystone's catalog or
    /// `compute_endpoint`).
    pub fn attaches(&self) -> bool {
        let keystone = match self.auth_type {
            AuthType::Noauth => false,
            AuthType::Token => self.auth_url.is_some(),
            AuthType::Password | AuthType::ApplicationCredential => true,
        };
        self.attach && self.dialect != Dialect::V1 && (keystone || self.compute_endpoint.is_some())
    }

    /// Checks that the keys together describe one usable way to reach Cinder.
    pub fn validate(&self) -> Result<(), KeyError> {
        let keystone = match self.auth_type {
            AuthType::Noauth => false,
            AuthType::Token => self.auth_url.is_some(),
            AuthType::Password | AuthType::ApplicationCredential => true,
        };
        if keystone {
            let url = self
                .auth_url
                .as_deref()
                .ok_or_else(|| missing("auth_url", "Keystone v3 URL for this auth_type"))?;
            check_url("auth_url", url)?;
        } else {
            let endpoint = self.endpoint.as_deref().ok_or_else(|| {
                missing(
                    "endpoint",
                    "without Keystone the volume endpoint must be given",
                )
            })?;
            if self.project_id.is_none() && needs_project(endpoint) {
                return Err(missing(
                    "project_id",
                    "the endpoint has a {project_id} placeholder",
                ));
            }
        }
        if let Some(endpoint) = &self.endpoint {
            check_url("endpoint", endpoint)?;
        }
        match self.auth_type {
            AuthType::Noauth => {
                if self.project_id.is_none() {
                    return Err(missing("project_id", "noauth sends <user>:<project_id>"));
                }
            }
            AuthType::Token => {
                if self.token.as_ref().is_none_or(Secret::is_empty) {
                    return Err(missing("token", "auth_type = \"token\""));
                }
            }
            AuthType::Password => {
                if self.password.as_ref().is_none_or(Secret::is_empty) {
                    return Err(missing("password", "auth_type = \"password\""));
                }
                self.check_user("username")?;
                self.check_project()?;
            }
            AuthType::ApplicationCredential => {
                if self
                    .application_credential_secret
                    .as_ref()
                    .is_none_or(Secret::is_empty)
                {
                    return Err(missing(
                        "application_credential_secret",
                        "auth_type = \"application_credential\"",
                    ));
                }
                if self.application_credential_id.is_none() {
                    if self.application_credential_name.is_none() {
                        return Err(missing(
                            "application_credential_id",
                            "give application_credential_id, or application_credential_name \
                             with the user",
                        ));
                    }
                    self.check_user("username")?;
                }
            }
        }
        if let Some(v) = &self.max_microversion {
            let parsed = Microversion::parse(v);
            if parsed.is_none_or(|m| m.major != 3) {
                return Err(KeyError {
                    key: "max_microversion",
                    message: format!("{v:?} is not a 3.x microversion"),
                });
            }
        }
        if let Some(endpoint) = &self.compute_endpoint {
            check_url("compute_endpoint", endpoint)?;
        }
        if let Some(v) = &self.max_compute_microversion {
            let parsed = Microversion::parse(v);
            if parsed.is_none_or(|m| m.major != 2) {
                return Err(KeyError {
                    key: "max_compute_microversion",
                    message: format!("{v:?} is not a 2.x compute microversion"),
                });
            }
        }
        if self.dialect != Dialect::V3 && self.max_microversion.is_some() {
            return Err(KeyError {
                key: "max_microversion",
                message: "only the v3 dialect has microversions".into(),
            });
        }
        Ok(())
    }

    fn check_user(&self, key: &'static str) -> Result<(), KeyError> {
        if self.user_id.is_some() {
            return Ok(());
        }
        if self.username.is_none() {
            return Err(missing(
                key,
                "give username (with user_domain_*) or user_id",
            ));
        }
        if self.user_domain_name.is_none() && self.user_domain_id.is_none() {
            return Err(missing(
                "user_domain_name",
                "a user given by name needs user_domain_name or user_domain_id",
            ));
        }
        Ok(())
    }

    fn check_project(&self) -> Result<(), KeyError> {
        if self.project_id.is_some() {
            return Ok(());
        }
        if self.project_name.is_none() {
            return Err(missing(
                "project_name",
                "give project_name (with project_domain_*) or project_id",
            ));
        }
        if self.project_domain_name.is_none() && self.project_domain_id.is_none() {
            return Err(missing(
                "project_domain_name",
                "a project given by name needs project_domain_name or project_domain_id",
            ));
        }
        Ok(())
    }

    /// The keys a CSI request's `secrets` may override (multi-tenant classes).
    pub const SECRET_KEYS: [&'static str; 16] = [
        "auth_url",
        "endpoint",
        "region",
        "username",
        "user_id",
        "user_domain_name",
        "user_domain_id",
        "password",
        "project_name",
        "project_id",
        "project_domain_name",
        "project_domain_id",
        "application_credential_id",
        "application_credential_name",
        "application_credential_secret",
        "token",
    ];

    /// This configuration with the credentials a request carries; `None` when the secrets
    /// hold none of [`Self::SECRET_KEYS`]. `auth_type` may be overridden too.
    pub fn with_secrets(&self, secrets: &Secrets) -> Result<Option<CinderConfig>, KeyError> {
        let touched = secrets
            .keys()
            .any(|k| k == "auth_type" || Self::SECRET_KEYS.contains(&k));
        if !touched {
            return Ok(None);
        }
        let mut c = self.clone();
        let text = |k: &str| secrets.get(k).map(|s| s.expose().to_owned());
        if let Some(t) = text("auth_type") {
            c.auth_type = match t.as_str() {
                "noauth" => AuthType::Noauth,
                "token" => AuthType::Token,
                "password" => AuthType::Password,
                "application_credential" => AuthType::ApplicationCredential,
                other => {
                    return Err(KeyError {
                        key: "auth_type",
                        message: format!(
                            "secrets: unknown auth_type {other:?} (noauth, token, password, \
                             application_credential)"
                        ),
                    });
                }
            };
            // A different method: the configured identity does not carry over.
            c.password = None;
            c.token = None;
            c.application_credential_secret = None;
            c.application_credential_id = None;
            c.application_credential_name = None;
        }
        macro_rules! take {
            ($($field:ident),*) => {$(
                if let Some(v) = text(stringify!($field)) { c.$field = Some(v); }
            )*};
        }
        take!(
            auth_url,
            endpoint,
            region,
            username,
            user_id,
            user_domain_name,
            user_domain_id,
            project_name,
            project_id,
            project_domain_name,
            project_domain_id,
            application_credential_id,
            application_credential_name
        );
        // A user or project named in the secrets replaces the configured one entirely.
        if secrets.get("username").is_some() && secrets.get("user_id").is_none() {
            c.user_id = None;
        }
        if secrets.get("project_name").is_some() && secrets.get("project_id").is_none() {
            c.project_id = None;
        }
        for (key, slot) in [
            ("password", &mut c.password),
            ("token", &mut c.token),
            (
                "application_credential_secret",
                &mut c.application_credential_secret,
            ),
        ] {
            if let Some(s) = secrets.get(key) {
                *slot = Some(s.clone());
            }
        }
        c.validate().map_err(|e| KeyError {
            key: e.key,
            message: format!("secrets: {}", e.message),
        })?;
        Ok(Some(c))
    }
}

fn needs_project(endpoint: &str) -> bool {
    endpoint.contains("{project_id}")
        || endpoint.contains("$(project_id)s")
        || endpoint.contains("$(tenant_id)s")
}

fn check_url(key: &'static str, url: &str) -> Result<(), KeyError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(u) => Err(KeyError {
            key,
            message: format!("scheme {:?} is not http or https", u.scheme()),
        }),
        Err(e) => Err(KeyError {
            key,
            message: format!("{url:?} is not a URL: {e}"),
        }),
    }
}
