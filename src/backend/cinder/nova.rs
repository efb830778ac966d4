//! Cinder volumes reach nodes through Nova: ControllerPublishVolume attaches a volume to the
//! node's Nova server (`POST /servers/{id}/os-volume_attachments`), ControllerUnpublishVolume
//! detaches it, each waiting (bounded) until Cinder shows the result.
//!
//! - Nova is found in the same Keystone catalog as Cinder (service type `compute`), or at the
//!   configured `compute_endpoint`, with the same token; its microversion is negotiated from
//!   its version document like Cinder's.
//! - The attachment itself is the source of truth, never this process's memory: a repeated
//!   publish (after a timeout, or a crash between the POST and its answer) first asks Nova
//!   whether the server already has the volume, and only then attaches; a repeated unpublish
//!   asks the same and only then detaches. So a kill -9 at any point leaves at most the one
//!   attachment, which the repeat finds.
//! - A volume attached to another server is refused (FAILED_PRECONDITION) unless its volume
//!   type allows multi-attach (Cinder's `multiattach` flag) and the capability is a
//!   multi-node mode. Nova's per-server disk limit is RESOURCE_EXHAUSTED.

use super::client::{Answer, CinderClient, read_answer, substitute};
use super::error::{bad_status, classify_compute};
use super::microversion::Microversion;
use super::{CinderBackend, Kind, encode, plausible_id};
use crate::backend::{
    BackendError, BackendResult, DEVICE_KEY, ErrorKind, PublishContext, PublishVolume, SERIAL_KEY,
};
use crate::http::Idempotency;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// 2.89: attachment answers carry `attachment_id` and `bdm_uuid` (2.60+ attaches multi-attach
/// volumes at all).
pub const HIGHEST_KNOWN: Microversion = Microversion::new(2, 89);

/// Nova as seen by one Cinder instance.
pub struct Nova {
    cinder: Arc<CinderClient>,
    compute: tokio::sync::OnceCell<Compute>,
    calls: AtomicU64,
}

#[derive(Debug, Clone)]
struct Compute {
    endpoint: String,
    microversion: Option<Microversion>,
}

impl Nova {
    /// Nova for the instance behind `cinder` (nothing is sent until the first call).
    pub fn new(cinder: Arc<CinderClient>) -> Self {
        Self {
            cinder,
            compute: tokio::sync::OnceCell::new(),
            calls: AtomicU64::new(0),
        }
    }

    /// HTTP requests sent to Nova so far (version document included).
    pub fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn compute(&self) -> BackendResult<&Compute> {
        self.compute
            .get_or_try_init(|| async {
                let session = self.cinder.session().await?;
                let config = self.cinder.config();
                let endpoint = match (&config.compute_endpoint, &session.catalog) {
                    (Some(e), _) => substitute(e, session.project_id.as_deref())?,
                    (None, Some(catalog)) => self.cinder.find_in_catalog(catalog, &["compute"])?,
                    (None, None) => {
                        return Err(BackendError::new(
                            ErrorKind::FailedPrecondition,
                            "cinder: attaching needs Nova: set compute_endpoint or use Keystone \
                             (its catalog's compute service)",
                        ));
                    }
                };
                let microversion = self.negotiate(&endpoint).await;
                Ok(Compute {
                    endpoint,
                    microversion,
                })
            })
            .await
    }

    /// Nova's version document sits at the root above `/v2.1`; the highest microversion both
    /// sides speak, capped by `max_compute_microversion`. `None` (no header: the base 2.1 API)
    /// when it cannot be read.
    async fn negotiate(&self, endpoint: &str) -> Option<Microversion> {
        let cap = self
            .cinder
            .config()
            .max_compute_microversion
            .as_deref()
            .and_then(Microversion::parse)
            .unwrap_or(HIGHEST_KNOWN)
            .min(HIGHEST_KNOWN);
        let root = match endpoint.find("/v2") {
            Some(at) => format!("{}/", &endpoint[..at]),
            None => format!("{endpoint}/"),
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .cinder
            .http()
            .send("compute version document", Idempotency::Idempotent, |c| {
                c.get(&root).header("Accept", "application/json")
            })
            .await
            .ok()?;
        let document: Value = serde_json::from_slice(&answer.body).ok()?;
        let versions = match document.get("versions") {
            Some(Value::Array(list)) => list.clone(),
            _ => vec![document.get("version")?.clone()],
        };
        let server = versions
            .iter()
            .filter(|v| v["id"] == "v2.1")
            .find_map(|v| Microversion::parse(v["version"].as_str()?));
        match server {
            Some(max) => Some(max.min(cap)),
            None => {
                tracing::warn!(root, "nova version document unreadable; using compute 2.1");
                None
            }
        }
    }

    /// One Nova request (path relative to the compute endpoint); like the Cinder client's
    /// `call`: one re-authentication on 401, the statuses in `pass` come back as answers.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        pass: &[u16],
    ) -> BackendResult<Answer> {
        let compute = self.compute().await?.clone();
        let idempotency = if method == Method::POST {
            Idempotency::Once
        } else {
            Idempotency::Idempotent
        };
        let url = format!("{}{path}", compute.endpoint);
        let mut reauthenticated = false;
        loop {
            let session = self.cinder.session().await?;
            let response = self
                .cinder
                .http()
                .send(operation, idempotency, |c| {
                    self.calls.fetch_add(1, Ordering::Relaxed);
                    let mut request = c
                        .request(method.clone(), &url)
                        .header("X-Auth-Token", session.token().expose())
                        .header("Accept", "application/json");
                    if let Some(v) = compute.microversion {
                        request = request.header("OpenStack-API-Version", format!("compute {v}"));
                    }
                    if let Some(b) = body {
                        request = request.json(b);
                    }
                    request
                })
                .await?;
            let status = response.status;
            if status == 401 && !reauthenticated && self.cinder.renewable() {
                tracing::info!(operation, "nova refused the token; authenticating again");
                self.cinder.forget(session.token()).await;
                reauthenticated = true;
                continue;
            }
            if (200..300).contains(&status) || pass.contains(&status) {
                return read_answer(operation, status, &response.body);
            }
            let error = classify_compute(operation, status, &response.body);
            crate::http::log_refusal("nova", operation, status, response.request_id(), &error);
            return Err(error);
        }
    }

    /// The server, `None` when Nova has none of that id.
    async fn server(&self, server: &str) -> BackendResult<Option<Value>> {
        let answer = self
            .call(
                "get server",
                Method::GET,
                &format!("/servers/{}", encode(server)),
                None,
                &[404],
            )
            .await?;
        Ok((answer.status != 404).then(|| answer.body["server"].clone()))
    }

    /// Nova's record of `volume` on `server` (its block device mapping), `None` when the
    /// server does not have it (or does not exist).
    async fn attachment(&self, server: &str, volume: &str) -> BackendResult<Option<Value>> {
        let answer = self
            .call(
                "get volume attachment",
                Method::GET,
                &format!(
                    "/servers/{}/os-volume_attachments/{}",
                    encode(server),
                    encode(volume)
                ),
                None,
                &[404],
            )
            .await?;
        Ok((answer.status != 404).then(|| answer.body["volumeAttachment"].clone()))
    }
}

/// The servers a Cinder volume is attached to, from its `attachments`.
fn attached_servers(volume: &Value) -> Vec<&str> {
    volume["attachments"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["server_id"].as_str())
        .collect()
}

fn attached_to(volume: &Value, server: &str) -> Option<Value> {
    volume["attachments"]
        .as_array()?
        .iter()
        .find(|a| a["server_id"] == server)
        .cloned()
}

fn no_volume(volume: &str) -> BackendError {
    BackendError::not_found(format!("volume {volume} does not exist"))
}

fn no_node(server: &str) -> BackendError {
    BackendError::not_found(format!(
        "node_id: node {server} is not a Nova server of this project"
    ))
}

impl CinderBackend {
    fn attach_wait(&self) -> Duration {
        Duration::from_secs(self.client.config().attach_wait_seconds)
    }

    fn detach_wait(&self) -> Duration {
        Duration::from_secs(self.client.config().detach_wait_seconds)
    }

    /// ControllerPublishVolume: see the module documentation.
    pub(super) async fn attach(&self, request: &PublishVolume) -> BackendResult<PublishContext> {
        let volume_id = request.volume_id.as_str();
        let server = request.node_id.as_str();
        if !plausible_id(volume_id) {
            return Err(no_volume(volume_id));
        }
        if !plausible_id(server) {
            return Err(no_node(server));
        }
        let Some(volume) = self.get_raw(Kind::Volume, volume_id).await? else {
            return Err(no_volume(volume_id));
        };
        let others: Vec<&str> = attached_servers(&volume)
            .into_iter()
            .filter(|s| *s != server)
            .collect();
        if !others.is_empty() {
            let shareable = volume["multiattach"] == true;
            if !(shareable && request.multi_node) {
                let why = if shareable {
                    "the capability is a single-node access mode"
                } else {
                    "its volume type does not allow multi-attach"
                };
                return Err(BackendError::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "volume {volume_id} is attached to server {} and cannot be attached to \
                         {server} too: {why}",
                        others.join(", ")
                    ),
                ));
            }
        }
        if let Some(done) = attached_to(&volume, server)
            && volume["status"] == "in-use"
        {
            return Ok(context(volume_id, &done));
        }
        if self.nova.attachment(server, volume_id).await?.is_none() {
            if self.nova.server(server).await?.is_none() {
                return Err(no_node(server));
            }
            let status = volume["status"].as_str().unwrap_or("unknown");
            match status {
                "available" | "in-use" => {}
                "detaching" | "attaching" | "reserved" | "creating" | "extending" => {
                    return Err(BackendError::new(
                        ErrorKind::Unavailable,
                        format!(
                            "cinder volume {volume_id} is {status:?}; the attach will be \
                             repeated once it settles"
                        ),
                    ));
                }
                other => return Err(bad_status("volume", volume_id, other)),
            }
            let body = json!({ "volumeAttachment": { "volumeId": volume_id } });
            self.nova
                .call(
                    "attach volume",
                    Method::POST,
                    &format!("/servers/{}/os-volume_attachments", encode(server)),
                    Some(&body),
                    &[],
                )
                .await?;
        }
        let last = self
            .poll(Kind::Volume, volume_id, self.attach_wait(), |v| {
                v.is_none_or(|v| {
                    (v["status"] == "in-use" && attached_to(v, server).is_some())
                        || v["status"].as_str().is_some_and(|s| s.starts_with("error"))
                })
            })
            .await?;
        let Some(volume) = last else {
            return Err(no_volume(volume_id));
        };
        if let Some(done) = attached_to(&volume, server)
            && volume["status"] == "in-use"
        {
            return Ok(context(volume_id, &done));
        }
        let status = volume["status"].as_str().unwrap_or("unknown");
        if status.starts_with("error") {
            return Err(bad_status("volume", volume_id, status));
        }
        // Nova rolls a failed attach back (the block device mapping goes); the repeat
        // attaches again. Either way the caller repeats.
        let pending = self.nova.attachment(server, volume_id).await?.is_some();
        Err(BackendError::new(
            ErrorKind::Unavailable,
            if pending {
                format!(
                    "volume {volume_id} is still being attached to server {server} (status \
                     {status:?} after {}s); the call will be repeated",
                    self.attach_wait().as_secs()
                )
            } else {
                format!(
                    "nova did not attach volume {volume_id} to server {server} (volume status \
                     {status:?}); the call will be repeated"
                )
            },
        ))
    }

    /// ControllerUnpublishVolume: see the module documentation. An empty `server` detaches
    /// the volume from every server (CSI: an unset node_id).
    pub(super) async fn detach(&self, volume_id: &str, server: &str) -> BackendResult<()> {
        if !server.is_empty() {
            return self.detach_from(volume_id, server).await;
        }
        if !plausible_id(volume_id) {
            return Ok(());
        }
        let Some(volume) = self.get_raw(Kind::Volume, volume_id).await? else {
            return Ok(());
        };
        for server in attached_servers(&volume) {
            self.detach_from(volume_id, server).await?;
        }
        Ok(())
    }

    async fn detach_from(&self, volume_id: &str, server: &str) -> BackendResult<()> {
        if !plausible_id(volume_id) || !plausible_id(server) {
            return Ok(());
        }
        if self.nova.attachment(server, volume_id).await?.is_some() {
            let path = format!(
                "/servers/{}/os-volume_attachments/{}",
                encode(server),
                encode(volume_id)
            );
            match self
                .nova
                .call("detach volume", Method::DELETE, &path, None, &[404])
                .await
            {
                Ok(_) => {}
                // A detach already under way (a repeat after a crash or a timeout): Nova
                // refuses a second one because the volume is `detaching`; wait for the first.
                Err(e) if matches!(e.kind, ErrorKind::FailedPrecondition | ErrorKind::Conflict) => {
                    tracing::info!(volume = volume_id, server, error = %e, "detach already in progress");
                }
                Err(e) => return Err(e),
            }
        }
        let started = Instant::now();
        let limit = self.detach_wait();
        let mut pause = Duration::from_millis(100);
        loop {
            let volume = self.get_raw(Kind::Volume, volume_id).await?;
            let cinder_done = volume
                .as_ref()
                .is_none_or(|v| attached_to(v, server).is_none() && v["status"] != "detaching");
            // Nova drops its block device mapping last.
            if cinder_done && self.nova.attachment(server, volume_id).await?.is_none() {
                return Ok(());
            }
            if started.elapsed() >= limit {
                let status = volume
                    .as_ref()
                    .map_or("gone", |v| v["status"].as_str().unwrap_or("unknown"));
                return Err(BackendError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "volume {volume_id} is still attached to server {server} (status \
                         {status:?} after {}s); the call will be repeated",
                        limit.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(pause.min(limit.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// The availability zone of a Nova server.
    pub(super) async fn server_zone(&self, server: &str) -> BackendResult<Option<String>> {
        if !plausible_id(server) {
            return Err(no_node(server));
        }
        let found = self
            .nova
            .server(server)
            .await?
            .ok_or_else(|| no_node(server))?;
        Ok(found["OS-EXT-AZ:availability_zone"]
            .as_str()
            .filter(|z| !z.is_empty())
            .map(str::to_owned))
    }

    /// Requests sent to Nova so far.
    pub fn nova_calls(&self) -> u64 {
        self.nova.api_calls()
    }
}

/// The publish context: the serial the disk shows in the guest (Nova gives virtio and SCSI
/// disks the volume id as serial) and the device Nova reported, which is only a hint (the
/// guest kernel names disks itself).
fn context(volume_id: &str, attachment: &Value) -> PublishContext {
    let mut context = PublishContext::new();
    context.insert(SERIAL_KEY.to_owned(), volume_id.to_owned());
    if let Some(device) = attachment["device"].as_str().filter(|d| !d.is_empty()) {
        context.insert(DEVICE_KEY.to_owned(), device.to_owned());
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_are_read_from_the_volume() {
        let v = json!({"status": "in-use", "attachments": [
            {"server_id": "s1", "device": "/dev/vdb", "attachment_id": "a1"},
            {"server_id": "s2", "device": "/dev/vdc"}]});
        assert_eq!(attached_servers(&v), ["s1", "s2"]);
        let a = attached_to(&v, "s2").expect("attached to s2");
        let c = context("vol-1", &a);
        assert_eq!(c[SERIAL_KEY], "vol-1");
        assert_eq!(c[DEVICE_KEY], "/dev/vdc");
        assert!(attached_to(&json!({"attachments": []}), "s1").is_none());
        assert!(attached_servers(&json!({})).is_empty());
    }
}
