//! The one HTTP client setup every cloud backend uses: TLS (rustls, system roots plus an
//! optional CA bundle; `insecure` only when asked for, and warned about), timeouts, and the one
//! retry policy (capped exponential backoff with full jitter, for idempotent calls only).
//!
//! A create (POST) is never retried here: a lost answer to a create is recovered by the caller
//! looking the name up first (the sidecar repeats the CSI call; `ops` finds the object by
//! name), which is the only way a retry cannot make a duplicate.

use crate::backend::{BackendError, ErrorKind};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// HTTP settings of one backend instance (a `[backends.<name>.http]` table in the config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Whole-request timeout in seconds.
    pub timeout_seconds: u64,
    /// Connect timeout in seconds.
    pub connect_timeout_seconds: u64,
    /// Extra CA certificates (PEM) to trust besides the system roots.
    pub ca_bundle: Option<PathBuf>,
    /// Skip TLS certificate verification. Never the default; logged as a warning at start.
    pub insecure: bool,
    /// Attempts of an idempotent call, the first one included.
    pub max_attempts: u32,
    /// First backoff, in milliseconds; doubled per attempt.
    pub backoff_base_ms: u64,
    /// Longest backoff, in milliseconds.
    pub backoff_cap_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeout_seconds: 30,
            connect_timeout_seconds: 5,
            ca_bundle: None,
            insecure: false,
            max_attempts: 4,
            backoff_base_ms: 200,
            backoff_cap_ms: 5_000,
        }
    }
}

/// Whether repeating a request is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// GET, DELETE, PUT of a whole state: retried on transient failures.
    Idempotent,
    /// A create: sent once.
    Once,
}

/// An HTTP client of one backend instance.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    settings: HttpSettings,
    backend: &'static str,
}

/// Headers in which clouds return their request id, for the log line of a failure.
const REQUEST_ID_HEADERS: [&str; 4] = [
    "x-openstack-request-id",
    "x-compute-request-id",
    "x-request-id",
    "x-amzn-requestid",
];

impl HttpClient {
    /// Builds the client; a bad CA bundle is a configuration error.
    pub fn new(settings: &HttpSettings, backend: &'static str) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_seconds.max(1)))
            .connect_timeout(Duration::from_secs(settings.connect_timeout_seconds.max(1)))
            .user_agent(concat!("snapcsi/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_bundle {
            let pem =
                std::fs::read(path).map_err(|e| format!("ca_bundle {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_bundle {}: not a PEM bundle: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "ca_bundle {}: holds no certificate",
                    path.display()
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if settings.insecure {
            tracing::warn!(
                backend,
                "TLS certificate verification is OFF for this backend (insecure = true)"
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            client,
            settings: settings.clone(),
            backend,
        })
    }

    /// The underlying client, to build requests with.
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request built by `build` and reads its whole answer, retrying idempotent ones
    /// on transport failures (refused or reset connections, timeouts, a body that breaks off
    /// or trickles past the timeout) and on 429/502/503/504, with capped exponential backoff
    /// and full jitter (or the server's `Retry-After`, capped the same way). Any answer that
    /// is not retried is returned as it is, for the backend to sort; a transport failure that
    /// is not retried becomes `Unavailable` and is logged here, once.
    pub async fn send(
        &self,
        operation: &'static str,
        idempotency: Idempotency,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, BackendError> {
        let attempts = match idempotency {
            Idempotency::Idempotent => self.settings.max_attempts.max(1),
            Idempotency::Once => 1,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= attempts;
            let started = std::time::Instant::now();
            let (status, reply) = match build(&self.client).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    match response.bytes().await {
                        Ok(body) => (
                            status,
                            Ok(Reply {
                                status,
                                headers,
                                body: body.to_vec(),
                            }),
                        ),
                        Err(error) => (status, Err((error, Some(headers)))),
                    }
                }
                Err(error) => (0, Err((error, None))),
            };
            crate::metrics::metrics().cloud(self.backend, operation, status, started.elapsed());
            match reply {
                Ok(reply) => {
                    let transient = matches!(status, 429 | 502 | 503 | 504);
                    if !transient || last {
                        return Ok(reply);
                    }
                    let wait = reply
                        .retry_after()
                        .map_or_else(|| self.backoff(attempt), |w| w.min(self.max_wait()));
                    tracing::warn!(
                        backend = self.backend,
                        operation,
                        status,
                        request_id = reply.request_id().unwrap_or("-"),
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "transient answer; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err((error, headers)) => {
                    let message = describe(&error);
                    let request_id = headers
                        .as_ref()
                        .and_then(request_id_of)
                        .unwrap_or("-")
                        .to_owned();
                    if last {
                        tracing::warn!(
                            backend = self.backend,
                            operation,
                            status,
                            request_id,
                            attempt,
                            error = %message,
                            "request failed; giving up"
                        );
                        let what = if headers.is_some() {
                            "reading the answer failed: "
                        } else {
                            ""
                        };
                        return Err(BackendError::new(
                            ErrorKind::Unavailable,
                            format!("{} {operation}: {what}{message}", self.backend),
                        ));
                    }
                    let wait = self.backoff(attempt);
                    tracing::warn!(
                        backend = self.backend,
                        operation,
                        status,
                        request_id,
                        attempt,
                        error = %message,
                        wait_ms = wait.as_millis() as u64,
                        "transport failure; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Full jitter: a uniform wait in [0, min(cap, base * 2^(attempt-1))].
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .settings
            .backoff_base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let ceiling = exp.min(self.settings.backoff_cap_ms).max(1);
        Duration::from_millis(fastrand::u64(0..=ceiling))
    }

    /// The cap on any single wait, also applied to a server's `Retry-After`.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.settings.backoff_cap_ms)
    }
}

/// A whole answer: status, headers and the body, read inside the retry loop so that a body
/// that breaks off is retried like any other transport failure.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Answer headers.
    pub headers: reqwest::header::HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The cloud's request id, if it sent one.
    pub fn request_id(&self) -> Option<&str> {
        request_id_of(&self.headers)
    }

    fn retry_after(&self) -> Option<Duration> {
        let seconds: u64 = self
            .header(reqwest::header::RETRY_AFTER.as_str())?
            .trim()
            .parse()
            .ok()?;
        Some(Duration::from_secs(seconds))
    }
}

fn request_id_of(headers: &reqwest::header::HeaderMap) -> Option<&str> {
    REQUEST_ID_HEADERS
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok())
}

/// Logs a cloud's refusal once, with the cloud's request id, at the one place a backend turns
/// the answer into an error (expected answers such as a 404 on delete are not refusals).
pub fn log_refusal(
    backend: &'static str,
    operation: &'static str,
    status: u16,
    request_id: Option<&str>,
    error: &BackendError,
) {
    tracing::warn!(
        backend,
        operation,
        status,
        request_id = request_id.unwrap_or("-"),
        kind = ?error.kind,
        error = %error.message,
        "the cloud refused a request"
    );
}

/// A transport error without the URL's query string (it may carry a signature or token).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut text = error.to_string();
    match error.url() {
        Some(url) => {
            let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
            text = text.replace(url.as_str(), &shown);
            format!("{kind} {shown}: {text}")
        }
        None => format!("{kind}: {text}"),
    }
}

/// Parses a JSON answer body. A success answer that is not the documented JSON is logged once
/// with the cloud's request id and is `Unavailable`: the answer was garbled on its way (a proxy
/// page, a truncated body), and for a create the object may well exist, so the caller must
/// treat the call as still in progress (the next call looks the name up) rather than failed.
pub fn json_body<T: serde::de::DeserializeOwned>(
    backend: &'static str,
    operation: &'static str,
    reply: &Reply,
) -> Result<T, BackendError> {
    parse_json(backend, operation, &reply.body).inspect_err(|error| {
        log_refusal(backend, operation, reply.status, reply.request_id(), error);
    })
}

/// The body-to-type step of [`json_body`], without the log line (the fuzz targets call it).
pub fn parse_json<T: serde::de::DeserializeOwned>(
    backend: &str,
    operation: &str,
    bytes: &[u8],
) -> Result<T, BackendError> {
    serde_json::from_slice(bytes).map_err(|e| {
        BackendError::new(
            ErrorKind::Unavailable,
            format!("{backend} {operation}: the answer is not the documented JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let client = HttpClient::new(
            &HttpSettings {
                backoff_base_ms: 100,
                backoff_cap_ms: 1_000,
                ..HttpSettings::default()
            },
            "test",
        )
        .expect("client");
        for attempt in 1..30 {
            let wait = client.backoff(attempt);
            assert!(
                wait <= Duration::from_millis(1_000),
                "attempt {attempt}: {wait:?}"
            );
        }
        let waits: std::collections::HashSet<_> = (0..50).map(|_| client.backoff(5)).collect();
        assert!(waits.len() > 1, "no jitter");
    }

    #[test]
    fn a_bad_ca_bundle_is_a_config_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").expect("write");
        let settings = HttpSettings {
            ca_bundle: Some(path),
            ..HttpSettings::default()
        };
        let err = HttpClient::new(&settings, "test").expect_err("must fail");
        assert!(err.contains("ca_bundle"), "{err}");
    }
}
