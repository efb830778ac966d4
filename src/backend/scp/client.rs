//! The raw SCP Virtual Server OpenAPI: signed requests and the JSON shapes the backend reads.
//!
//! Paths, fields and headers come from seed 003 (`POST /v1/snapshots`, its body and its 202
//! answer), the SCP SDK facts quoted in issue 4 (the other snapshot and volume calls, the
//! signing headers) and the types of the SDK generated from the service's OpenAPI
//! (library/virtualserver, issue 15), which outrank a seed's example value. Nothing here
//! decides what an answer means for CSI; `super` does.

use super::error;
use super::signer::{self, CLIENT_TYPE, SigningInput};
use crate::backend::{BackendError, BackendResult, ErrorKind};
use crate::http::{HttpClient, Idempotency};
use crate::secret::Secret;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The credentials one request is signed with.
#[derive(Clone)]
pub struct Credentials {
    /// `Scp-Accesskey`.
    pub access_key: Secret,
    /// HMAC key of `Scp-Signature`.
    pub secret_key: Secret,
    /// `Scp-AccountId`, when the account needs naming.
    pub account_id: Option<Secret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Replaces every credential in `text` (a cloud message may echo a header back).
    fn scrub(&self, text: String) -> String {
        let mut text = text;
        let values = [
            Some(&self.secret_key),
            Some(&self.access_key),
            self.account_id.as_ref(),
        ];
        for value in values.into_iter().flatten() {
            // Very short values would redact ordinary words; real keys are long.
            if value.expose().len() >= 4 {
                text = text.replace(value.expose(), "<redacted>");
            }
        }
        text
    }
}

/// An answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body as received.
    pub body: Vec<u8>,
    /// The cloud's request id, if it sent one.
    pub request_id: Option<String>,
}

/// The Virtual Server API of one endpoint.
#[derive(Debug, Clone)]
pub struct ScpClient {
    http: HttpClient,
    base: Url,
    api_version: HeaderValue,
    accept_language: HeaderValue,
}

/// `SnapshotCreateRequest` (seed 003 request body; field types from the SDK).
#[derive(Debug, Serialize)]
pub struct SnapshotCreateRequest<'a> {
    /// Snapshot name: the CSI name.
    pub name: &'a str,
    /// The volume to snapshot.
    pub volume_id: &'a str,
    /// Free text.
    pub description: &'a str,
    /// Snapshot even when attached.
    pub force: bool,
    /// An object (`map[string]interface{}` in the SDK; the seed's `"metadata": ""` example
    /// is not what the service takes) with string values: the CSI name and the cluster.
    pub metadata: &'a BTreeMap<&'static str, String>,
}

/// `SnapshotDetailResponse`, the fields the backend reads.
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotDetail {
    /// Snapshot id.
    pub id: String,
    /// Cloud name (nullable).
    #[serde(default)]
    pub name: Option<String>,
    /// Source volume.
    pub volume_id: String,
    /// Size in GB (GiB).
    pub size: u64,
    /// `creating`, `available`, `error`, … (nullable in the SDK: absent reads as not ready).
    #[serde(default)]
    pub status: Option<String>,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_at: Option<String>,
    /// An object in the SDK; older answers carried JSON text in a string: any JSON value is
    /// accepted and read leniently (`ScpBackend::owned_name`).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// `GET /v1/snapshots` answer: `{count, snapshots[]}`.
#[derive(Debug, Deserialize)]
pub struct SnapshotList {
    /// The page.
    pub snapshots: Vec<SnapshotDetail>,
}

/// `POST /v1/volumes` body.
#[derive(Debug, Serialize)]
pub struct VolumeCreateRequest<'a> {
    /// Volume name: the CSI name.
    pub name: &'a str,
    /// Size in GB (GiB).
    pub size: u64,
    /// Volume type; the service default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<&'a str>,
    /// Restore source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<&'a str>,
}

/// `PUT /v1/volumes/{id}/size` body.
#[derive(Debug, Serialize)]
pub struct VolumeExtendRequest {
    /// New size in GB (GiB).
    pub size: u64,
}

/// A volume (`VolumeShowResponse` of the SCP SDK), the fields the backend reads.
#[derive(Debug, Clone, Deserialize)]
pub struct VolumeDetail {
    /// Volume id.
    pub id: String,
    /// Cloud name.
    #[serde(default)]
    pub name: Option<String>,
    /// Size in GB (GiB).
    pub size: u64,
    /// `creating`, `available`, `in-use`, `error`, … (the SDK calls it `state`).
    pub state: String,
    /// The snapshot it was restored from.
    #[serde(default)]
    pub snapshot_id: Option<String>,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `GET /v1/volumes` answer: `{count, volumes[]}`.
#[derive(Debug, Deserialize)]
pub struct VolumeList {
    /// The page.
    pub volumes: Vec<VolumeDetail>,
}

impl ScpClient {
    /// The `Scp-Api-Version` value this client sends, e.g. `virtualserver 1.3`.
    pub fn api_version(&self) -> &str {
        self.api_version.to_str().unwrap_or("")
    }

    /// A client of the service at `base`, speaking `api_version` (e.g. `1.3`).
    pub fn new(
        http: HttpClient,
        base: Url,
        api_version: &str,
        accept_language: &str,
    ) -> Result<Self, String> {
        let api_version = HeaderValue::from_str(&format!("virtualserver {api_version}"))
            .map_err(|_| format!("api_version {api_version:?} cannot be a header value"))?;
        let accept_language = HeaderValue::from_str(accept_language)
            .map_err(|_| format!("accept_language {accept_language:?} cannot be a header value"))?;
        Ok(Self {
            http,
            base,
            api_version,
            accept_language,
        })
    }

    /// The URL of `segments` (each percent-encoded as one path segment) with `query`.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// The signed headers of one attempt.
    fn headers(
        &self,
        credentials: &Credentials,
        method: &Method,
        url: &Url,
    ) -> BackendResult<HeaderMap> {
        let timestamp = signer::timestamp_now();
        let account_id = credentials
            .account_id
            .as_ref()
            .map(Secret::expose)
            .unwrap_or("");
        let signature = signer::sign(
            credentials.secret_key.expose(),
            &SigningInput {
                method: method.as_str(),
                url: url.as_str(),
                timestamp: &timestamp,
                access_key: credentials.access_key.expose(),
                account_id,
                client_type: CLIENT_TYPE,
            },
        );
        let secret_header = |value: &str, what: &str| {
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                BackendError::new(
                    ErrorKind::InvalidArgument,
                    format!("scp: the {what} holds characters a header cannot carry"),
                )
            })?;
            value.set_sensitive(true);
            Ok::<_, BackendError>(value)
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("scp-accesskey"),
            secret_header(credentials.access_key.expose(), "access key")?,
        );
        headers.insert(
            HeaderName::from_static("scp-signature"),
            secret_header(&signature, "signature")?,
        );
        headers.insert(
            HeaderName::from_static("scp-timestamp"),
            secret_header(&timestamp, "timestamp")?,
        );
        headers.insert(
            HeaderName::from_static("scp-clienttype"),
            HeaderValue::from_static(CLIENT_TYPE),
        );
        headers.insert(
            HeaderName::from_static("scp-api-version"),
            self.api_version.clone(),
        );
        headers.insert(
            reqwest::header::ACCEPT_LANGUAGE,
            self.accept_language.clone(),
        );
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        if !account_id.is_empty() {
            headers.insert(
                HeaderName::from_static("scp-accountid"),
                secret_header(account_id, "account id")?,
            );
        }
        Ok(headers)
    }

    /// Sends one signed request (signed afresh for every attempt) and returns the answer,
    /// whatever its status; transport failures are `Unavailable`.
    pub async fn call(
        &self,
        credentials: &Credentials,
        operation: &'static str,
        idempotency: Idempotency,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> BackendResult<Answer> {
        // Header problems are found before sending, once.
        self.headers(credentials, &method, &url)?;
        let response = self
            .http
            .send(operation, idempotency, |client| {
                let mut request = client.request(method.clone(), url.clone());
                if let Ok(headers) = self.headers(credentials, &method, &url) {
                    request = request.headers(headers);
                }
                if let Some(body) = &body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone());
                }
                request
            })
            .await?;
        let status = response.status;
        tracing::debug!(operation, method = %method, path = url.path(), status, "scp call");
        Ok(Answer {
            status,
            request_id: response.request_id().map(str::to_owned),
            body: response.body,
        })
    }

    /// The error of a failed answer, with every credential scrubbed from the cloud's words.
    pub fn failure(
        &self,
        credentials: &Credentials,
        operation: &'static str,
        answer: &Answer,
    ) -> BackendError {
        let mut err = error::from_status(operation, answer.status, &answer.body);
        err.message = credentials.scrub(err.message);
        crate::http::log_refusal(
            "scp",
            operation,
            answer.status,
            answer.request_id.as_deref(),
            &err,
        );
        err
    }
}

/// Parses a JSON answer body, naming the operation when it is not the documented shape (then
/// `Unavailable`, logged once with the request id: see `http::json_body`).
pub fn parse<T: serde::de::DeserializeOwned>(
    operation: &'static str,
    answer: &Answer,
) -> BackendResult<T> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        let error = BackendError::new(
            ErrorKind::Unavailable,
            format!(
                "scp {operation}: the answer (HTTP {}) is not the documented JSON: {e}",
                answer.status
            ),
        );
        crate::http::log_refusal(
            "scp",
            operation,
            answer.status,
            answer.request_id.as_deref(),
            &error,
        );
        error
    })
}

/// JSON text of a request body.
pub fn body<T: Serialize>(value: &T) -> BackendResult<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| BackendError::internal(format!("scp: encoding a request body: {e}")))
}
