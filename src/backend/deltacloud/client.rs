//! The raw Deltacloud REST calls snapcsi makes, and the documents they answer with.
//!
//! XML is Deltacloud's default and what the seed documents byte for byte: volumes, the
//! entry point, create answers and errors are read as XML (quick-xml + serde). A snapshot's
//! `state` exists only in the JSON representation, so snapshot reads ask for JSON.

use super::error::classify;
use crate::backend::{BackendError, BackendResult};
use crate::http::{HttpClient, Idempotency};
use crate::secret::Secret;
use serde::Deserialize;

/// Which representation a call asks for (`?format=` and `Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/xml`, Deltacloud's default.
    Xml,
    /// `application/json`.
    Json,
}

impl Format {
    fn query(self) -> &'static str {
        match self {
            Format::Xml => "xml",
            Format::Json => "json",
        }
    }

    fn accept(self) -> &'static str {
        match self {
            Format::Xml => "application/xml",
            Format::Json => "application/json",
        }
    }
}

/// An `<x href='...' id='...'/>` reference.
#[derive(Debug, Clone, Deserialize)]
pub struct XmlRef {
    /// The referenced object's id.
    #[serde(rename = "@id")]
    pub id: String,
}

/// `<storage_snapshot>` as XML gives it (no state: see the module docs).
#[derive(Debug, Clone, Deserialize)]
pub struct XmlSnapshot {
    /// Snapshot id.
    #[serde(rename = "@id")]
    pub id: String,
    /// Holds the id, not a name (Deltacloud's quirk for drivers without snapshot names).
    #[serde(default)]
    pub name: Option<String>,
    /// Free text the driver keeps; snapcsi's marker lives here.
    #[serde(default)]
    pub description: Option<String>,
    /// `Thu Jul 28 21:54:19 UTC 2011`.
    #[serde(default)]
    pub created: Option<String>,
    /// The source volume.
    pub storage_volume: XmlRef,
}

/// `<capacity unit='GB'>10</capacity>`.
#[derive(Debug, Clone, Deserialize)]
pub struct XmlCapacity {
    /// Unit of the value; Deltacloud uses `GB`.
    #[serde(rename = "@unit", default)]
    pub unit: Option<String>,
    /// The number.
    #[serde(rename = "$text")]
    pub value: String,
}

/// `<storage_volume>`.
#[derive(Debug, Clone, Deserialize)]
pub struct XmlVolume {
    /// Volume id.
    #[serde(rename = "@id")]
    pub id: String,
    /// Holds the id for drivers without volume names.
    #[serde(default)]
    pub name: Option<String>,
    /// Free text the driver keeps; snapcsi's marker lives here.
    #[serde(default)]
    pub description: Option<String>,
    /// `Thu Jul 28 21:54:19 UTC 2011`.
    #[serde(default)]
    pub created: Option<String>,
    /// Provisioned size.
    #[serde(default)]
    pub capacity: Option<XmlCapacity>,
    /// `CREATING`, `AVAILABLE`, `IN-USE`, `ERROR`, ...
    #[serde(default)]
    pub state: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct XmlVolumes {
    #[serde(rename = "storage_volume", default)]
    pub(crate) items: Vec<XmlVolume>,
}

/// `<api driver='ec2' version='1.1.3'>`, the entry point.
#[derive(Debug, Deserialize)]
pub struct XmlApi {
    /// The driver the server runs.
    #[serde(rename = "@driver", default)]
    pub driver: Option<String>,
    /// API version.
    #[serde(rename = "@version", default)]
    pub version: Option<String>,
}

/// `<realm id='us-east-1a'>`: where volumes can be created.
#[derive(Debug, Clone, Deserialize)]
pub struct XmlRealm {
    /// Realm id (the `realm_id` of a volume create).
    #[serde(rename = "@id")]
    pub id: String,
    /// `AVAILABLE`, `UNAVAILABLE`, ...
    #[serde(default)]
    pub state: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct XmlRealms {
    #[serde(rename = "realm", default)]
    pub(crate) items: Vec<XmlRealm>,
}

/// A snapshot as JSON gives it, with `state`.
#[derive(Debug, Clone, Deserialize)]
pub struct JsonSnapshot {
    /// Snapshot id.
    pub id: String,
    /// Free text the driver keeps.
    #[serde(default)]
    pub description: Option<String>,
    /// Creation time, as in XML.
    #[serde(default)]
    pub created: Option<String>,
    /// The cloud's own state word, passed through (`completed`, `COMPLETED`, `pending`, ...).
    #[serde(default)]
    pub state: Option<String>,
    /// The source volume.
    pub storage_volume: JsonRef,
}

/// `{"id": ..., "href": ...}`.
#[derive(Debug, Clone, Deserialize)]
pub struct JsonRef {
    /// The referenced object's id.
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JsonSnapshotDoc {
    pub(crate) storage_snapshot: JsonSnapshot,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JsonSnapshotsDoc {
    #[serde(default)]
    pub(crate) storage_snapshots: Vec<JsonSnapshot>,
}

/// The raw API of one Deltacloud server.
#[derive(Debug, Clone)]
pub struct DeltacloudClient {
    http: HttpClient,
    endpoint: String,
    username: String,
    password: Secret,
    driver: Option<String>,
    provider: Option<String>,
}

/// A successful answer.
type Answer = crate::http::Reply;

impl DeltacloudClient {
    /// A client of the entry point `endpoint` (`.../api`).
    pub fn new(
        http: HttpClient,
        endpoint: &str,
        username: String,
        password: Secret,
        driver: Option<String>,
        provider: Option<String>,
    ) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            username,
            password,
            driver,
            provider,
        }
    }

    /// The same server with other credentials.
    pub fn with_credentials(&self, username: String, password: Secret) -> Self {
        Self {
            username,
            password,
            ..self.clone()
        }
    }

    /// One call; `Ok(None)` for 404.
    async fn call(
        &self,
        operation: &'static str,
        verb: reqwest::Method,
        path: &str,
        format: Format,
        form: Option<&[(&str, &str)]>,
    ) -> BackendResult<Option<Answer>> {
        let url = format!("{}{path}", self.endpoint);
        let idempotency = if verb == reqwest::Method::POST {
            Idempotency::Once
        } else {
            Idempotency::Idempotent
        };
        let response = self
            .http
            .send(operation, idempotency, |c| {
                let mut request = c
                    .request(verb.clone(), &url)
                    .basic_auth(&self.username, Some(self.password.expose()))
                    .query(&[("format", format.query())])
                    .header(reqwest::header::ACCEPT, format.accept());
                if let Some(driver) = &self.driver {
                    request = request.header("X-Deltacloud-Driver", driver);
                }
                if let Some(provider) = &self.provider {
                    request = request.header("X-Deltacloud-Provider", provider);
                }
                if let Some(form) = form {
                    request = request.form(form);
                }
                request
            })
            .await?;
        let status = response.status;
        let content_type = response
            .header(reqwest::header::CONTENT_TYPE.as_str())
            .unwrap_or("");
        if (200..300).contains(&status) {
            return Ok(Some(response));
        }
        if status == 404 {
            return Ok(None);
        }
        let error = classify(operation, status, content_type, &response.body);
        crate::http::log_refusal(
            "deltacloud",
            operation,
            status,
            response.request_id(),
            &error,
        );
        Err(error)
    }

    fn xml<T: serde::de::DeserializeOwned>(
        operation: &'static str,
        answer: &Answer,
    ) -> BackendResult<T> {
        Self::parse_xml(operation, &answer.body).inspect_err(|error| {
            crate::http::log_refusal(
                "deltacloud",
                operation,
                answer.status,
                answer.request_id(),
                error,
            );
        })
    }

    /// The body-to-type step of `xml`, without the log line (the fuzz targets call it). A body
    /// that is not the documented XML was garbled on its way (see `http::json_body`): in
    /// progress, not failed.
    pub(crate) fn parse_xml<T: serde::de::DeserializeOwned>(
        operation: &str,
        body: &[u8],
    ) -> BackendResult<T> {
        std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(|text| quick_xml::de::from_str(text).map_err(|e| e.to_string()))
            .map_err(|e| {
                BackendError::new(
                    crate::backend::ErrorKind::Unavailable,
                    format!("deltacloud {operation}: the answer is not the documented XML: {e}"),
                )
            })
    }

    fn json<T: serde::de::DeserializeOwned>(
        operation: &'static str,
        answer: &Answer,
    ) -> BackendResult<T> {
        crate::http::json_body("deltacloud", operation, answer)
    }

    /// `GET /api/realms`: a small collection that, unlike the entry point `GET /api`, needs
    /// the credentials (the cloud under Deltacloud is asked), so a refused password shows.
    pub async fn realms(&self) -> BackendResult<Vec<XmlRealm>> {
        let answer = self
            .call(
                "list realms",
                reqwest::Method::GET,
                "/realms",
                Format::Xml,
                None,
            )
            .await?
            .ok_or_else(|| {
                BackendError::not_found(format!(
                    "deltacloud: no realms collection at {}/realms (is the endpoint the \
                     Deltacloud API entry point, .../api?)",
                    self.endpoint
                ))
            })?;
        Ok(Self::xml::<XmlRealms>("list realms", &answer)?.items)
    }

    /// `GET /api/storage_snapshots` (JSON, for `state`): the whole collection.
    pub async fn snapshots(&self) -> BackendResult<Vec<JsonSnapshot>> {
        let answer = self
            .call(
                "list snapshots",
                reqwest::Method::GET,
                "/storage_snapshots",
                Format::Json,
                None,
            )
            .await?;
        match answer {
            Some(a) => Ok(Self::json::<JsonSnapshotsDoc>("list snapshots", &a)?.storage_snapshots),
            None => Ok(Vec::new()),
        }
    }

    /// `GET /api/storage_snapshots/:id` (JSON, for `state`).
    pub async fn snapshot(&self, id: &str) -> BackendResult<Option<JsonSnapshot>> {
        let path = format!("/storage_snapshots/{}", segment(id));
        match self
            .call(
                "get snapshot",
                reqwest::Method::GET,
                &path,
                Format::Json,
                None,
            )
            .await?
        {
            Some(a) => Ok(Some(
                Self::json::<JsonSnapshotDoc>("get snapshot", &a)?.storage_snapshot,
            )),
            None => Ok(None),
        }
    }

    /// `POST /api/storage_snapshots` (form: `volume_id`, `name`, `description`) -> 201 with
    /// the new snapshot as XML and its `Location`.
    pub async fn create_snapshot(
        &self,
        volume_id: &str,
        name: &str,
        description: &str,
    ) -> BackendResult<XmlSnapshot> {
        let form = [
            ("volume_id", volume_id),
            ("name", name),
            ("description", description),
        ];
        let answer = self
            .call(
                "create snapshot",
                reqwest::Method::POST,
                "/storage_snapshots",
                Format::Xml,
                Some(&form),
            )
            .await?
            .ok_or_else(|| {
                BackendError::not_found(format!("source volume {volume_id} does not exist"))
            })?;
        let snapshot: XmlSnapshot = Self::xml("create snapshot", &answer)?;
        check_location(
            "create snapshot",
            answer.header(reqwest::header::LOCATION.as_str()),
            &snapshot.id,
        )?;
        Ok(snapshot)
    }

    /// `DELETE /api/storage_snapshots/:id` -> 204; `false` when it was already gone.
    pub async fn delete_snapshot(&self, id: &str) -> BackendResult<bool> {
        self.delete("delete snapshot", "storage_snapshots", id)
            .await
    }

    /// `GET /api/storage_volumes`: the whole collection.
    pub async fn volumes(&self) -> BackendResult<Vec<XmlVolume>> {
        let answer = self
            .call(
                "list volumes",
                reqwest::Method::GET,
                "/storage_volumes",
                Format::Xml,
                None,
            )
            .await?;
        match answer {
            Some(a) => Ok(Self::xml::<XmlVolumes>("list volumes", &a)?.items),
            None => Ok(Vec::new()),
        }
    }

    /// `GET /api/storage_volumes/:id`.
    pub async fn volume(&self, id: &str) -> BackendResult<Option<XmlVolume>> {
        let path = format!("/storage_volumes/{}", segment(id));
        match self
            .call("get volume", reqwest::Method::GET, &path, Format::Xml, None)
            .await?
        {
            Some(a) => Ok(Some(Self::xml("get volume", &a)?)),
            None => Ok(None),
        }
    }

    /// `POST /api/storage_volumes` (form: `capacity` in GB, `realm_id`, `snapshot_id`,
    /// `name`, `description`) -> 201 with the new volume as XML.
    pub async fn create_volume(&self, form: &[(&str, &str)]) -> BackendResult<XmlVolume> {
        let answer = self
            .call(
                "create volume",
                reqwest::Method::POST,
                "/storage_volumes",
                Format::Xml,
                Some(form),
            )
            .await?
            .ok_or_else(|| BackendError::not_found("deltacloud create volume: source not found"))?;
        let volume: XmlVolume = Self::xml("create volume", &answer)?;
        check_location(
            "create volume",
            answer.header(reqwest::header::LOCATION.as_str()),
            &volume.id,
        )?;
        Ok(volume)
    }

    /// `DELETE /api/storage_volumes/:id` -> 204; `false` when it was already gone.
    pub async fn delete_volume(&self, id: &str) -> BackendResult<bool> {
        self.delete("delete volume", "storage_volumes", id).await
    }

    /// `DELETE /api/<collection>/:id`; `false` when the object was already gone.
    async fn delete(
        &self,
        operation: &'static str,
        collection: &str,
        id: &str,
    ) -> BackendResult<bool> {
        let path = format!("/{collection}/{}", segment(id));
        let answer = self
            .call(operation, reqwest::Method::DELETE, &path, Format::Xml, None)
            .await?;
        Ok(answer.is_some())
    }
}

/// 201 Created carries the new object's URL in `Location`; it must name the object the body
/// describes.
pub(crate) fn check_location(
    operation: &str,
    location: Option<&str>,
    id: &str,
) -> BackendResult<()> {
    match location {
        Some(l) if l.trim_end_matches('/').rsplit('/').next() == Some(id) => Ok(()),
        Some(l) => Err(BackendError::internal(format!(
            "deltacloud {operation}: Location {l} does not name the new object {id}"
        ))),
        None => Err(BackendError::internal(format!(
            "deltacloud {operation}: 201 Created without a Location header"
        ))),
    }
}

/// An id as one URL path segment (ids come from callers: no `/`, `?` or `..` may escape).
pub(crate) fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}

/// A Deltacloud time (`Thu Jul 28 21:54:19 UTC 2011`, Ruby's `Time#to_s` of old).
pub fn parse_created(text: &str) -> Option<std::time::SystemTime> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [_weekday, month, day, clock, zone, year] = words.as_slice() else {
        return None;
    };
    if *zone != "UTC" && *zone != "GMT" {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let day: u32 = day.parse().ok()?;
    // Every number is bounded before any arithmetic: the text comes from the cloud.
    let year: i64 = year.parse().ok().filter(|y| (0..=9999).contains(y))?;
    let mut c = clock.split(':');
    let hour: i64 = c.next()?.parse().ok()?;
    let minute: i64 = c.next()?.parse().ok()?;
    let second: i64 = c.next()?.parse().ok()?;
    if !(1..=31).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return None;
    }
    let seconds = crate::calendar::to_days(crate::calendar::Date::new(year, month, day)) * 86_400
        + hour * 3600
        + minute * 60
        + second;
    u64::try_from(seconds)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn out_of_range_times_are_refused_not_overflowed() {
        for text in [
            "Thu Jul 28 21:54:19 UTC 9223372036854775807",
            "Thu Jul 28 21:54:-9223372036854775808 UTC 2011",
        ] {
            assert_eq!(parse_created(text), None, "{text}");
        }
    }

    #[test]
    fn reads_the_seed_xml() {
        let list = "<?xml version='1.0' encoding='utf-8' ?>
<storage_snapshot href='http://localhost:3001/api/storage_snapshots/snap-45b8d024' id='snap-45b8d024'>
  <created>Thu Jul 28 21:54:19 UTC 2011</created>
  <storage_volume href='http://localhost:3001/api/storage_volumes/vol-0bc0de60' id='vol-0bc0de60'></storage_volume>
</storage_snapshot>";
        let s: XmlSnapshot = quick_xml::de::from_str(list).expect("parses");
        assert_eq!(s.id, "snap-45b8d024");
        assert_eq!(s.storage_volume.id, "vol-0bc0de60");
        assert_eq!(
            s.created.as_deref().and_then(parse_created),
            Some(UNIX_EPOCH + Duration::from_secs(1_311_890_059))
        );
        let volumes = "<storage_volumes><storage_volume id='vol-1'><name>vol-1</name>\
            <capacity unit='GB'>10</capacity><state>AVAILABLE</state></storage_volume>\
            <storage_volume id='vol-2'><capacity unit='GB'>1</capacity></storage_volume>\
            </storage_volumes>";
        let v: XmlVolumes = quick_xml::de::from_str(volumes).expect("parses");
        assert_eq!(v.items.len(), 2);
        assert_eq!(
            v.items[0].capacity.as_ref().map(|c| c.value.as_str()),
            Some("10")
        );
        let empty: XmlVolumes =
            quick_xml::de::from_str("<storage_volumes></storage_volumes>").expect("parses");
        assert!(empty.items.is_empty());
    }

    #[test]
    fn ids_cannot_escape_their_segment() {
        assert_eq!(segment("snap-1"), "snap-1");
        assert_eq!(segment("../x?y"), "..%2Fx%3Fy");
        assert_eq!(segment(".."), "%2E%2E");
    }
}
