//! The raw SoftLayer REST calls snapcsi makes, and the objects they answer with.
//!
//! URLs are `<endpoint>/<Service>/<id>/<method>.json`; method arguments travel in a POST body
//! `{"parameters": [...]}`; `objectMask`, `objectFilter` and `resultLimit=offset,limit` are
//! query options. Authentication is HTTP basic auth with the API user name and key.

use super::error::classify;
use crate::backend::{BackendError, BackendResult};
use crate::http::{HttpClient, Idempotency, json_body};
use crate::secret::Secret;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Properties of a volume the backend reads.
pub const VOLUME_MASK: &str =
    "mask[id,username,capacityGb,snapshotCapacityGb,nasType,notes,activeTransactionCount]";
/// Properties of a snapshot the backend reads (`parentVolume` names its source).
pub const SNAPSHOT_MASK: &str =
    "mask[id,nasType,capacityGb,createDate,notes,activeTransactionCount,parentVolume[id]]";
/// A volume with its snapshots, for the walk that finds a snapshot by name.
pub const SCAN_MASK: &str = "mask[id,snapshots[id,nasType,capacityGb,createDate,notes,activeTransactionCount,parentVolume[id]]]";
/// Stable order of the account's volumes, so that offsets page reliably.
pub const ORDER_BY_ID: &str = r#"{"iscsiNetworkStorage":{"id":{"operation":"orderBy","options":[{"name":"sort","value":["ASC"]}]}}}"#;

/// A `SoftLayer_Network_Storage` object (a volume or a snapshot), as far as masks ask for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Object id.
    pub id: u64,
    /// Service user name of the volume (`SL01SEVC..._2`).
    #[serde(default)]
    pub username: Option<String>,
    /// Provisioned size in GB (for a snapshot: its volume's).
    #[serde(default, deserialize_with = "number_or_string")]
    pub capacity_gb: Option<u64>,
    /// Snapshot space ordered for a volume, in GB (0: none; snapshots cannot be taken).
    #[serde(default, deserialize_with = "number_or_string")]
    pub snapshot_capacity_gb: Option<u64>,
    /// `ISCSI`, `SNAPSHOT`, ...
    #[serde(default)]
    pub nas_type: Option<String>,
    /// Free text; snapcsi keeps the CSI name and tags there as JSON.
    #[serde(default)]
    pub notes: Option<String>,
    /// ISO 8601 creation time with offset, e.g. `2016-08-11T13:45:39-06:00`.
    #[serde(default)]
    pub create_date: Option<String>,
    /// Transactions (provisioning, snapshot copy) still running on the object.
    #[serde(default, deserialize_with = "number_or_string")]
    pub active_transaction_count: Option<u64>,
    /// The volume a snapshot belongs to.
    #[serde(default)]
    pub parent_volume: Option<IdOnly>,
    /// A volume's snapshots (when masked).
    #[serde(default)]
    pub snapshots: Option<Vec<Storage>>,
}

/// A related object of which only the id was asked for.
#[derive(Debug, Clone, Deserialize)]
pub struct IdOnly {
    /// Object id.
    pub id: u64,
}

impl Storage {
    /// Whether SoftLayer says this object is a snapshot.
    pub fn is_snapshot(&self) -> bool {
        self.nas_type.as_deref() == Some("SNAPSHOT")
    }
}

/// SoftLayer sends some counters as strings (`"snapshotCapacityGb": "10"`): accept both.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a number"))),
    }
}

/// The raw API of one account.
#[derive(Debug, Clone)]
pub struct SoftLayerClient {
    http: HttpClient,
    endpoint: String,
    username: String,
    api_key: Secret,
}

/// Query options of one call.
#[derive(Debug, Default)]
pub struct Options<'a> {
    /// `objectMask`.
    pub mask: Option<&'a str>,
    /// `objectFilter`.
    pub filter: Option<&'a str>,
    /// `resultLimit=offset,limit`.
    pub limit: Option<(usize, usize)>,
}

impl SoftLayerClient {
    /// A client of `endpoint` acting as `username`.
    pub fn new(http: HttpClient, endpoint: &str, username: String, api_key: Secret) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            username,
            api_key,
        }
    }

    /// The same endpoint and HTTP client with other credentials.
    pub fn with_credentials(&self, username: String, api_key: Secret) -> Self {
        Self {
            username,
            api_key,
            ..self.clone()
        }
    }

    fn url(&self, service: &str, id: Option<u64>, method: &str) -> String {
        match id {
            Some(id) => format!("{}/{service}/{id}/{method}.json", self.endpoint),
            None => format!("{}/{service}/{method}.json", self.endpoint),
        }
    }

    /// One call; `Ok(None)` when SoftLayer says the object does not exist.
    async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        verb: reqwest::Method,
        url: String,
        options: &Options<'_>,
        parameters: Option<serde_json::Value>,
    ) -> BackendResult<Option<T>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(mask) = options.mask {
            query.push(("objectMask", mask.to_owned()));
        }
        if let Some(filter) = options.filter {
            query.push(("objectFilter", filter.to_owned()));
        }
        if let Some((offset, limit)) = options.limit {
            query.push(("resultLimit", format!("{offset},{limit}")));
        }
        let idempotency = if verb == reqwest::Method::POST {
            Idempotency::Once
        } else {
            Idempotency::Idempotent
        };
        let body = parameters.map(|p| serde_json::json!({ "parameters": p }));
        let response = self
            .http
            .send(operation, idempotency, |c| {
                let mut request = c
                    .request(verb.clone(), &url)
                    .basic_auth(&self.username, Some(self.api_key.expose()))
                    .query(&query);
                if let Some(body) = &body {
                    request = request.json(body);
                }
                request
            })
            .await?;
        let status = response.status;
        if (200..300).contains(&status) {
            return json_body("softlayer", operation, &response).map(Some);
        }
        let error = classify(operation, status, &response.body);
        if error.kind == crate::backend::ErrorKind::NotFound {
            return Ok(None);
        }
        crate::http::log_refusal(
            "softlayer",
            operation,
            status,
            response.request_id(),
            &error,
        );
        Err(error)
    }

    /// `SoftLayer_Account::getObject`: a cheap authenticated call.
    pub async fn account(&self) -> BackendResult<()> {
        let url = self.url("SoftLayer_Account", None, "getObject");
        let options = Options {
            mask: Some("mask[id]"),
            ..Options::default()
        };
        self.call::<serde_json::Value>("get account", reqwest::Method::GET, url, &options, None)
            .await?
            .map(|_| ())
            .ok_or_else(|| BackendError::internal("softlayer get account: the account is missing"))
    }

    /// `SoftLayer_Network_Storage_Iscsi::getObject` of a volume.
    pub async fn volume(&self, id: u64) -> BackendResult<Option<Storage>> {
        let url = self.url("SoftLayer_Network_Storage_Iscsi", Some(id), "getObject");
        let options = Options {
            mask: Some(VOLUME_MASK),
            ..Options::default()
        };
        self.call("get volume", reqwest::Method::GET, url, &options, None)
            .await
    }

    /// `SoftLayer_Account::getIscsiNetworkStorage`, one page in id order.
    pub async fn volumes(
        &self,
        mask: &str,
        offset: usize,
        limit: usize,
    ) -> BackendResult<Vec<Storage>> {
        let url = self.url("SoftLayer_Account", None, "getIscsiNetworkStorage");
        let options = Options {
            mask: Some(mask),
            filter: Some(ORDER_BY_ID),
            limit: Some((offset, limit)),
        };
        Ok(self
            .call("list volumes", reqwest::Method::GET, url, &options, None)
            .await?
            .unwrap_or_default())
    }

    /// `SoftLayer_Network_Storage_Iscsi::createSnapshot(notes)`.
    pub async fn create_snapshot(&self, volume: u64, notes: &str) -> BackendResult<Storage> {
        let url = self.url(
            "SoftLayer_Network_Storage_Iscsi",
            Some(volume),
            "createSnapshot",
        );
        let options = Options {
            mask: Some(SNAPSHOT_MASK),
            ..Options::default()
        };
        self.call(
            "create snapshot",
            reqwest::Method::POST,
            url,
            &options,
            Some(serde_json::json!([notes])),
        )
        .await?
        .ok_or_else(|| {
            BackendError::not_found(format!(
                "softlayer create snapshot: volume {volume} is gone"
            ))
        })
    }

    /// `SoftLayer_Network_Storage_Iscsi::getSnapshotsForVolume`, one page. `None`: no such
    /// volume.
    pub async fn snapshots_for_volume(
        &self,
        volume: u64,
        offset: usize,
        limit: usize,
    ) -> BackendResult<Option<Vec<Storage>>> {
        let url = self.url(
            "SoftLayer_Network_Storage_Iscsi",
            Some(volume),
            "getSnapshotsForVolume",
        );
        let options = Options {
            mask: Some(SNAPSHOT_MASK),
            filter: None,
            limit: Some((offset, limit)),
        };
        self.call("list snapshots", reqwest::Method::GET, url, &options, None)
            .await
    }

    /// `SoftLayer_Network_Storage::getObject` of a snapshot (or whatever object has that id).
    pub async fn storage(&self, id: u64) -> BackendResult<Option<Storage>> {
        let url = self.url("SoftLayer_Network_Storage", Some(id), "getObject");
        let options = Options {
            mask: Some(SNAPSHOT_MASK),
            ..Options::default()
        };
        self.call("get snapshot", reqwest::Method::GET, url, &options, None)
            .await
    }

    /// `SoftLayer_Network_Storage::deleteObject` (HTTP DELETE); `false`: it was already gone.
    pub async fn delete_storage(&self, id: u64) -> BackendResult<bool> {
        let url = self.url("SoftLayer_Network_Storage", Some(id), "deleteObject");
        let answer: Option<serde_json::Value> = self
            .call(
                "delete snapshot",
                reqwest::Method::DELETE,
                url,
                &Options::default(),
                None,
            )
            .await?;
        match answer {
            // `deleteObject` answers a boolean; `false` means the storage was not deleted
            // (the storage back end failed it), which must not read as success.
            Some(serde_json::Value::Bool(false)) => {
                let error = BackendError::new(
                    crate::backend::ErrorKind::FailedPrecondition,
                    format!(
                        "softlayer delete snapshot: deleteObject of {id} answered false: the \
                         storage was not deleted; the delete will be tried again"
                    ),
                );
                tracing::warn!(backend = "softlayer", storage = id, error = %error.message, "delete refused");
                Err(error)
            }
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }
}

/// Seconds since the Unix epoch of an ISO 8601 time with offset (`2016-08-11T13:45:39-06:00`,
/// also `Z` and fractional seconds).
pub fn parse_iso8601(text: &str) -> Option<std::time::SystemTime> {
    let text = text.trim();
    let (date, rest) = text.split_once('T')?;
    let mut d = date.split('-');
    // Every number is bounded before any arithmetic: the text comes from the cloud.
    let year: i64 = d.next()?.parse().ok().filter(|y| (0..=9999).contains(y))?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (clock, offset_seconds) = if let Some(clock) = rest.strip_suffix('Z') {
        (clock, 0i64)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (clock, offset) = rest.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, m) = offset[1..].split_once(':')?;
        let h: i64 = h.parse().ok().filter(|h| (0..=23).contains(h))?;
        let m: i64 = m.parse().ok().filter(|m| (0..=59).contains(m))?;
        (clock, sign * (h * 3600 + m * 60))
    };
    let clock = clock.split('.').next()?;
    let mut c = clock.split(':');
    let hour: i64 = c.next()?.parse().ok()?;
    let minute: i64 = c.next()?.parse().ok()?;
    let second: i64 = c.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return None;
    }
    let seconds = crate::calendar::to_days(crate::calendar::Date::new(year, month, day)) * 86_400
        + hour * 3600
        + minute * 60
        + second
        - offset_seconds;
    u64::try_from(seconds)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn out_of_range_dates_are_refused_not_overflowed() {
        for text in [
            "9223372036854775807-08-11T13:45:39-06:00",
            "2016-08-11T13:45:39-9999999999999999:00",
            "2016-08-11T13:45:-9223372036854775808Z",
        ] {
            assert_eq!(parse_iso8601(text), None, "{text}");
        }
    }

    #[test]
    fn parses_the_seed_dates() {
        let t = parse_iso8601("2016-08-11T13:45:39-06:00").expect("parses");
        // 2016-08-11T19:45:39Z
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_470_944_739));
        assert_eq!(
            parse_iso8601("1970-01-01T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::ZERO)
        );
        assert_eq!(parse_iso8601("yesterday"), None);
    }

    #[test]
    fn reads_the_seed_snapshot() {
        let text = r#"{"accountId": 1, "capacityGb": 20, "createDate": "2016-08-11T13:09:41-06:00",
            "guestId": null, "id": 13429199, "nasType": "SNAPSHOT", "propertyCount": 0,
            "snapshotCapacityGb": "10", "username": "SL01SEVCxxxxx_2"}"#;
        let s: Storage = serde_json::from_str(text).expect("parses");
        assert!(s.is_snapshot());
        assert_eq!(s.capacity_gb, Some(20));
        assert_eq!(s.snapshot_capacity_gb, Some(10));
    }
}
