//! The raw Cinder API: authentication (Keystone v3, noauth, fixed token), endpoint discovery,
//! microversion negotiation, and one `call` that every operation goes through (with one
//! re-authentication on 401). It knows URLs and JSON, not CSI.

use super::config::{AuthType, CinderConfig, Dialect};
use super::error::classify;
use super::microversion::Microversion;
use crate::backend::{BackendError, BackendResult, ErrorKind};
use crate::http::{HttpClient, Idempotency};
use crate::secret::Secret;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BACKEND: &str = "cinder";

/// 3.66: snapshots of in-use volumes need no `force` (and `force: false` is refused).
pub const SNAPSHOT_IN_USE: Microversion = Microversion::new(3, 66);
/// The highest microversion this client is written against.
pub const HIGHEST_KNOWN: Microversion = SNAPSHOT_IN_USE;

/// An authenticated view of the cloud.
#[derive(Clone)]
pub struct Session {
    token: Secret,
    /// Volume endpoint, e.g. `http://host:8776/v3/<project>`, without a trailing slash.
    pub endpoint: String,
    /// Token expiry; `None` for tokens we cannot renew (noauth, fixed token).
    expires_at: Option<SystemTime>,
    /// When the token was issued (to renew at half-life for short tokens).
    issued_at: SystemTime,
    /// Negotiated microversion (v3 only).
    pub microversion: Option<Microversion>,
    /// The Keystone service catalog (other services of the cloud, e.g. Nova); `None`
    /// without Keystone.
    pub catalog: Option<Arc<Value>>,
    /// The project the token is scoped to, when Keystone said.
    pub project_id: Option<String>,
}

impl Session {
    /// The token this session sends (tests revoke it to check the re-authentication).
    pub fn token(&self) -> &Secret {
        &self.token
    }

    fn fresh(&self, now: SystemTime) -> bool {
        let Some(expires) = self.expires_at else {
            return true;
        };
        let lifetime = expires
            .duration_since(self.issued_at)
            .unwrap_or(Duration::ZERO);
        // Renew five minutes before expiry, or at half-life for tokens shorter than that.
        let margin = Duration::from_secs(300).min(lifetime / 2);
        now + margin < expires
    }
}

/// One Cinder endpoint and its credentials.
pub struct CinderClient {
    http: HttpClient,
    config: Arc<CinderConfig>,
    session: tokio::sync::Mutex<Option<Session>>,
    calls: AtomicU64,
    auth_calls: AtomicU64,
}

/// A Cinder answer with a success status.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body as JSON (`Null` when empty).
    pub body: Value,
}

impl CinderClient {
    /// A client for one configured instance (nothing is sent until the first call).
    pub fn new(config: Arc<CinderConfig>) -> Result<Self, String> {
        let http = HttpClient::new(&config.http, BACKEND)?;
        Ok(Self {
            http,
            config,
            session: tokio::sync::Mutex::new(None),
            calls: AtomicU64::new(0),
            auth_calls: AtomicU64::new(0),
        })
    }

    /// The instance configuration.
    pub fn config(&self) -> &CinderConfig {
        &self.config
    }

    /// HTTP requests sent to Cinder so far (each retry attempt counts).
    pub fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Requests sent to Keystone and to the version document so far.
    pub fn auth_calls(&self) -> u64 {
        self.auth_calls.load(Ordering::Relaxed)
    }

    /// The API version in use, known once a session exists (after the first call): the
    /// negotiated microversion for v3, the dialect otherwise.
    pub fn api_version(&self) -> Option<String> {
        let slot = self.session.try_lock().ok()?;
        let session = slot.as_ref()?;
        Some(match self.config.dialect {
            Dialect::V3 => match session.microversion {
                Some(v) => format!("v3 (microversion {v})"),
                None => "v3 (3.0: the version document was unreadable)".to_owned(),
            },
            Dialect::V2 => "v2".to_owned(),
            Dialect::V1 => "v1 (Rackspace dialect)".to_owned(),
        })
    }

    /// The current session, authenticating when there is none or its token is about to expire.
    pub async fn session(&self) -> BackendResult<Session> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref()
            && s.fresh(SystemTime::now())
        {
            return Ok(s.clone());
        }
        let session = self.authenticate().await?;
        *slot = Some(session.clone());
        Ok(session)
    }

    /// The HTTP client of this instance (shared with its other services, e.g. Nova).
    pub(crate) fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Forgets the session whose token was refused (another task may have renewed already).
    pub(crate) async fn forget(&self, refused: &Secret) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| &s.token == refused) {
            *slot = None;
        }
    }

    pub(crate) fn renewable(&self) -> bool {
        match self.config.auth_type {
            AuthType::Noauth => false,
            AuthType::Token => self.config.auth_url.is_some(),
            AuthType::Password | AuthType::ApplicationCredential => true,
        }
    }

    /// Sends one API request to `path` (relative to the volume endpoint, with its query) and
    /// returns a success answer; any other answer is sorted by [`classify`], except the
    /// statuses listed in `pass`, which come back as answers for the caller to read.
    pub async fn call(
        &self,
        operation: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        pass: &[u16],
    ) -> BackendResult<Answer> {
        let idempotency = if method == reqwest::Method::POST {
            Idempotency::Once
        } else {
            Idempotency::Idempotent
        };
        let mut reauthenticated = false;
        loop {
            let session = self.session().await?;
            let url = format!("{}{path}", session.endpoint);
            let response = self
                .http
                .send(operation, idempotency, |c| {
                    self.calls.fetch_add(1, Ordering::Relaxed);
                    let mut request = c
                        .request(method.clone(), &url)
                        .header("X-Auth-Token", session.token.expose())
                        .header("Accept", "application/json");
                    if let Some(v) = session.microversion {
                        request = request.header("OpenStack-API-Version", format!("volume {v}"));
                    }
                    if let Some(b) = body {
                        request = request.json(b);
                    }
                    request
                })
                .await?;
            let status = response.status;
            let bytes = &response.body;
            if status == 401 && !reauthenticated && self.renewable() {
                // The token was revoked or expired early: one fresh authentication.
                tracing::info!(operation, "cinder refused the token; authenticating again");
                self.forget(&session.token).await;
                reauthenticated = true;
                continue;
            }
            if (200..300).contains(&status) || pass.contains(&status) {
                return read_answer(operation, status, bytes).inspect_err(|error| {
                    crate::http::log_refusal(
                        "cinder",
                        operation,
                        status,
                        response.request_id(),
                        error,
                    );
                });
            }
            let error = classify(operation, status, bytes);
            crate::http::log_refusal("cinder", operation, status, response.request_id(), &error);
            return Err(error);
        }
    }

    async fn authenticate(&self) -> BackendResult<Session> {
        let c = &self.config;
        let now = SystemTime::now();
        let keystone = match c.auth_type {
            AuthType::Noauth => None,
            AuthType::Token if c.auth_url.is_none() => None,
            _ => Some(self.keystone().await?),
        };
        let mut session = match keystone {
            Some(k) => {
                let endpoint = match &c.endpoint {
                    Some(e) => substitute(e, k.project_id.as_deref())?,
                    None => self.endpoint_in_catalog(&k.catalog)?,
                };
                Session {
                    token: k.token,
                    endpoint,
                    expires_at: k.expires_at,
                    issued_at: now,
                    microversion: None,
                    catalog: Some(Arc::new(k.catalog)),
                    project_id: k.project_id,
                }
            }
            None => {
                let project = c.project_id.as_deref();
                let token = match c.auth_type {
                    AuthType::Noauth => Secret::new(format!(
                        "{}:{}",
                        c.user_id.as_deref().unwrap_or("admin"),
                        project.unwrap_or_default()
                    )),
                    _ => c.token.clone().unwrap_or_else(|| Secret::new("")),
                };
                let endpoint = c.endpoint.as_deref().ok_or_else(|| {
                    BackendError::internal("cinder: no endpoint configured".to_owned())
                })?;
                Session {
                    token,
                    endpoint: substitute(endpoint, project)?,
                    expires_at: None,
                    issued_at: now,
                    microversion: None,
                    catalog: None,
                    project_id: project.map(str::to_owned),
                }
            }
        };
        if c.dialect == Dialect::V3 {
            session.microversion = self.negotiate(&session).await;
        }
        Ok(session)
    }

    /// Keystone v3 `POST /auth/tokens` with the configured method.
    async fn keystone(&self) -> BackendResult<KeystoneToken> {
        let c = &self.config;
        let auth_url = c
            .auth_url
            .as_deref()
            .ok_or_else(|| BackendError::internal("cinder: auth_url is not set".to_owned()))?;
        let url = format!("{}/auth/tokens", auth_url.trim_end_matches('/'));
        let body = self.auth_body();
        self.auth_calls.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .send("keystone auth", Idempotency::Idempotent, |client| {
                client
                    .post(&url)
                    .header("Accept", "application/json")
                    .json(&body)
            })
            .await?;
        let status = response.status;
        let token = response
            .header("X-Subject-Token")
            .map(|t| Secret::new(t.to_owned()));
        if !(200..300).contains(&status) {
            let mut error = classify("keystone auth", status, &response.body);
            error.message = error.message.replacen("cinder ", "", 1);
            if status == 401 {
                error.message = format!("{}; {}", error.message, auth_hint(c));
            }
            crate::http::log_refusal(
                "cinder",
                "keystone auth",
                status,
                response.request_id(),
                &error,
            );
            return Err(error);
        }
        let token = token.ok_or_else(|| {
            BackendError::internal("keystone auth: the answer has no X-Subject-Token header")
        })?;
        let body: Value = crate::http::json_body("cinder", "keystone auth", &response)?;
        let t = &body["token"];
        Ok(KeystoneToken {
            token,
            expires_at: t["expires_at"].as_str().and_then(parse_time),
            project_id: t["project"]["id"].as_str().map(str::to_owned),
            catalog: t["catalog"].clone(),
        })
    }

    fn auth_body(&self) -> Value {
        let c = &self.config;
        let domain = |id: &Option<String>, name: &Option<String>| match (id, name) {
            (Some(id), _) => json!({ "id": id }),
            (None, Some(name)) => json!({ "name": name }),
            (None, None) => json!({ "name": "Default" }),
        };
        let user = || match &c.user_id {
            Some(id) => json!({ "id": id }),
            None => json!({
                "name": c.username,
                "domain": domain(&c.user_domain_id, &c.user_domain_name),
            }),
        };
        let scope = || match (&c.project_id, &c.project_name) {
            (Some(id), _) => Some(json!({ "project": { "id": id } })),
            (None, Some(name)) => Some(json!({ "project": {
                "name": name,
                "domain": domain(&c.project_domain_id, &c.project_domain_name),
            }})),
            (None, None) => None,
        };
        let expose = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
        let (identity, scope) = match c.auth_type {
            AuthType::Password => {
                let mut u = user();
                u["password"] = json!(expose(&c.password));
                (
                    json!({ "methods": ["password"], "password": { "user": u } }),
                    scope(),
                )
            }
            AuthType::ApplicationCredential => {
                let mut ac = match &c.application_credential_id {
                    Some(id) => json!({ "id": id }),
                    None => json!({ "name": c.application_credential_name, "user": user() }),
                };
                ac["secret"] = json!(expose(&c.application_credential_secret));
                // An application credential carries its own project scope.
                (
                    json!({ "methods": ["application_credential"], "application_credential": ac }),
                    None,
                )
            }
            AuthType::Token | AuthType::Noauth => (
                json!({ "methods": ["token"], "token": { "id": expose(&c.token) } }),
                scope(),
            ),
        };
        let mut auth = json!({ "identity": identity });
        if let Some(s) = scope {
            auth["scope"] = s;
        }
        json!({ "auth": auth })
    }

    /// The volume endpoint from a Keystone catalog: service type (the dialect's list, or the
    /// configured one), interface and region.
    fn endpoint_in_catalog(&self, catalog: &Value) -> BackendResult<String> {
        let c = &self.config;
        let configured;
        let types: &[&str] = match &c.service_type {
            Some(t) => {
                configured = [t.as_str()];
                &configured
            }
            None => c.dialect.service_types(),
        };
        self.find_in_catalog(catalog, types)
    }

    /// The endpoint of the first of `types` in a Keystone catalog, on this instance's
    /// interface and region.
    pub(crate) fn find_in_catalog(&self, catalog: &Value, types: &[&str]) -> BackendResult<String> {
        let c = &self.config;
        let services = catalog.as_array().map(Vec::as_slice).unwrap_or_default();
        for wanted in types {
            for service in services.iter().filter(|s| s["type"] == *wanted) {
                let endpoints = service["endpoints"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let found = endpoints.iter().find(|e| {
                    e["interface"] == c.interface.as_str()
                        && c.region.as_deref().is_none_or(|r| {
                            e["region_id"].as_str() == Some(r) || e["region"].as_str() == Some(r)
                        })
                });
                if let Some(url) = found.and_then(|e| e["url"].as_str()) {
                    return Ok(url.trim_end_matches('/').to_owned());
                }
            }
        }
        Err(BackendError::new(
            ErrorKind::FailedPrecondition,
            format!(
                "keystone catalog has no {} endpoint of type {} in region {}",
                c.interface.as_str(),
                types.join(" / "),
                c.region.as_deref().unwrap_or("(any)")
            ),
        ))
    }

    /// Reads the server's version document (the root above `/v3`) and picks the highest
    /// microversion both sides speak, capped by `max_microversion`. `None` (no header) when
    /// the document cannot be read: the server then answers as 3.0.
    async fn negotiate(&self, session: &Session) -> Option<Microversion> {
        let cap = self
            .config
            .max_microversion
            .as_deref()
            .and_then(Microversion::parse)
            .unwrap_or(HIGHEST_KNOWN)
            .min(HIGHEST_KNOWN);
        let root = match session.endpoint.find("/v3") {
            Some(at) => format!("{}/", &session.endpoint[..at]),
            None => format!("{}/", session.endpoint),
        };
        self.auth_calls.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .http
            .send("version document", Idempotency::Idempotent, |c| {
                c.get(&root).header("Accept", "application/json")
            })
            .await;
        let document: Option<Value> = match answer {
            Ok(r) => serde_json::from_slice(&r.body).ok(),
            Err(_) => None,
        };
        let server = document.as_ref().and_then(|d| {
            let versions = match d.get("versions") {
                Some(Value::Array(list)) => list.clone(),
                _ => vec![d.get("version")?.clone()],
            };
            versions
                .iter()
                .filter(|v| v["id"].as_str().is_some_and(|id| id.starts_with("v3")))
                .find_map(|v| Microversion::parse(v["version"].as_str()?))
        });
        match server {
            Some(max) => Some(max.min(cap)),
            None => {
                tracing::warn!(
                    root,
                    "cinder version document unreadable; using the base v3 API (3.0)"
                );
                None
            }
        }
    }
}

/// What to check when Keystone answers 401. Keystone gives the same words for a wrong
/// password, an unknown user or project, a project the user has no role on, and a wrong or
/// expired application credential (it does not tell a caller which, on purpose), so the hint
/// lists every cause for the method in use, naming the configured identity (never a secret).
fn auth_hint(c: &CinderConfig) -> String {
    let shown = |value: &Option<String>| value.as_deref().map(|v| format!("{v:?}"));
    let either =
        |id: &Option<String>, name: &Option<String>, what: &str| match (shown(id), shown(name)) {
            (Some(id), _) => format!("{what} id {id}"),
            (None, Some(name)) => format!("{what} {name}"),
            (None, None) => format!("{what} (none configured)"),
        };
    let domain = |id: &Option<String>, name: &Option<String>| match (shown(id), shown(name)) {
        (Some(id), _) => format!("domain id {id}"),
        (None, Some(name)) => format!("domain {name}"),
        (None, None) => "domain \"Default\"".to_owned(),
    };
    let user = format!(
        "{} in {}",
        either(&c.user_id, &c.username, "user"),
        domain(&c.user_domain_id, &c.user_domain_name)
    );
    let project = if c.project_id.is_some() || c.project_name.is_some() {
        format!(
            "{} in {}",
            either(&c.project_id, &c.project_name, "project"),
            domain(&c.project_domain_id, &c.project_domain_name)
        )
    } else {
        "the project (none configured: the token is unscoped and has no catalog)".to_owned()
    };
    let checks = match c.auth_type {
        AuthType::Password => vec![
            format!("{user} exists and is enabled"),
            "the password is this user's".to_owned(),
            format!("{project} exists (name and domain, or id) and is enabled"),
            "the user has a role (e.g. member) on that project".to_owned(),
        ],
        AuthType::ApplicationCredential => vec![
            match (&c.application_credential_id, &c.application_credential_name) {
                (Some(id), _) => format!("application credential id {id:?} exists"),
                (None, Some(name)) => {
                    format!("application credential {name:?} exists and belongs to {user}")
                }
                (None, None) => "an application credential id or name is given".to_owned(),
            },
            "application_credential_secret is the secret shown once when it was created".to_owned(),
            "it has not expired and was not deleted".to_owned(),
            "its user still has the credential's roles on its project".to_owned(),
        ],
        AuthType::Token | AuthType::Noauth => vec![
            "the token has not expired and was not revoked".to_owned(),
            format!("{project} exists and is enabled"),
            "the token's user has a role on that project".to_owned(),
        ],
    };
    format!(
        "Keystone says the same for every cause; with auth_type = \"{}\" check: {}",
        c.auth_type.as_str(),
        checks.join("; ")
    )
}

struct KeystoneToken {
    token: Secret,
    expires_at: Option<SystemTime>,
    project_id: Option<String>,
    catalog: Value,
}

/// The [`Answer`] of a success (or passed-through) status: the body as JSON, `Null` when empty.
/// A body that is not JSON is `Unavailable` (garbled on its way, see `http::json_body`).
pub fn read_answer(operation: &str, status: u16, bytes: &[u8]) -> BackendResult<Answer> {
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        crate::http::parse_json("cinder", operation, bytes)?
    };
    Ok(Answer { status, body })
}

/// Replaces the project placeholders of a configured endpoint.
pub(crate) fn substitute(endpoint: &str, project: Option<&str>) -> BackendResult<String> {
    let mut out = endpoint.trim_end_matches('/').to_owned();
    for placeholder in ["{project_id}", "$(project_id)s", "$(tenant_id)s"] {
        if out.contains(placeholder) {
            let p = project.ok_or_else(|| {
                BackendError::new(
                    ErrorKind::InvalidArgument,
                    format!("cinder endpoint {endpoint} needs a project id"),
                )
            })?;
            out = out.replace(placeholder, p);
        }
    }
    Ok(out)
}

/// Parses the ISO 8601 times OpenStack answers with: `2013-02-25T03:56:53.081642` (UTC when no
/// zone is given), `…Z`, `…+01:00`.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-');
    // Every field is bounded before any arithmetic: the text comes from the cloud.
    let year: i64 = d.next()?.parse().ok().filter(|y| (0..=9999).contains(y))?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    // Split off the zone: `Z`, `+hh:mm`, `-hh:mm`, or nothing.
    let (clock, offset_seconds) = if let Some(rest) = time.strip_suffix('Z') {
        (rest, 0i64)
    } else if let Some(at) = time.rfind(['+', '-']) {
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zone = &zone[1..];
        let (h, m) = zone
            .split_once(':')
            .unwrap_or((zone.get(..2)?, zone.get(2..)?));
        let h = two_digits(h).filter(|h| *h <= 23)?;
        let m = if m.is_empty() {
            0
        } else {
            two_digits(m).filter(|m| *m <= 59)?
        };
        (clock, sign * (h * 3600 + m * 60))
    } else {
        (time, 0)
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':');
    let hour = two_digits(t.next()?)?;
    let minute = two_digits(t.next()?)?;
    let second = two_digits(t.next().unwrap_or("0"))?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // ASCII digits only, so bytes are characters; beyond nanoseconds is dropped.
        let digits = &fraction[..fraction.len().min(9)];
        let scale = 10u32.pow(9 - digits.len() as u32);
        digits.parse::<u32>().ok()? * scale
    };
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// One or two ASCII digits (no sign, no space), as the clock and zone fields are written.
fn two_digits(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_times_are_refused_not_overflowed() {
        // Found by the cinder fuzz target: these overflowed (or underflowed) in debug builds.
        for text in [
            "2013-02-25T03:56:53+9999999999999999:00",
            "9223372036854775807-02-25T03:56:53Z",
            "2013-02-25T03:56:53.\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            "2013-02-25T-1:56:53",
            "2013-02-25T03:56:9999999999",
        ] {
            assert_eq!(parse_time(text), None, "{text}");
        }
        assert!(parse_time("2013-02-25T03:56:53.123456789123+01:00").is_some());
    }

    #[test]
    fn times_parse() {
        let t = parse_time("2013-02-25T03:56:53.081642").expect("parses");
        let d = t.duration_since(UNIX_EPOCH).expect("after epoch");
        assert_eq!(d.as_secs(), 1_361_764_613);
        assert_eq!(d.subsec_micros(), 81_642);
        let z = parse_time("2013-02-25T03:56:53Z").expect("parses");
        let plus = parse_time("2013-02-25T04:56:53+01:00").expect("parses");
        assert_eq!(z, plus);
        assert!(parse_time("yesterday").is_none());
        assert!(parse_time("2013-13-25T03:56:53").is_none());
    }

    #[test]
    fn placeholders_are_replaced() {
        assert_eq!(
            substitute("http://h:8776/v3/$(project_id)s/", Some("p1")).expect("ok"),
            "http://h:8776/v3/p1"
        );
        assert!(substitute("http://h/v3/{project_id}", None).is_err());
    }

    #[test]
    fn sessions_renew_before_expiry() {
        let now = SystemTime::now();
        let s = Session {
            token: Secret::new("t"),
            endpoint: String::new(),
            expires_at: Some(now + Duration::from_secs(3600)),
            issued_at: now,
            microversion: None,
            catalog: None,
            project_id: None,
        };
        assert!(s.fresh(now));
        assert!(!s.fresh(now + Duration::from_secs(3400)));
        let short = Session {
            expires_at: Some(now + Duration::from_secs(60)),
            ..s
        };
        assert!(short.fresh(now + Duration::from_secs(20)));
        assert!(!short.fresh(now + Duration::from_secs(31)));
    }
}
