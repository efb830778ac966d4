//! Entry points of the fuzz targets (`tests/fuzz`) and of their corpus replay test
//! (`tests/fuzz_corpus.rs`). Not an API: built only with the `fuzzing` feature, which the fuzz
//! crate enables and `cargo test` enables through this crate's dev-dependency on itself.
//!
//! Each function takes raw bytes and runs them through the functions production runs on the
//! same input (a page token, an id, a config file, a cloud's answer body), then checks what
//! every answer must satisfy. It panics only when such a check fails or when the code under
//! test panics: either is a finding. No state is kept between calls except backends built once
//! (they hold no data: only the settings the parsers read).

use crate::backend::registry::{self, Instance, Registry, Section};
use crate::backend::{BackendError, Snapshot, Volume};
use crate::config::{ConfigError, FileConfig};
use crate::ops::token;
use std::path::Component;
use std::sync::{Arc, OnceLock};

/// What a cloud entry point made of one answer body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Snapshots built from the body (over every path that reads snapshots).
    pub snapshots: Vec<Snapshot>,
    /// Volumes built from the body.
    pub volumes: Vec<Volume>,
}

/// Statuses each cloud's error classifier is asked about for every body.
const ERROR_STATUSES: [u16; 8] = [400, 401, 403, 404, 409, 413, 500, 503];

/// A classified cloud error must say which cloud and operation it comes from.
fn check_error(cloud: &str, error: &BackendError) {
    assert!(
        error.message.starts_with(&format!("{cloud} ")),
        "{cloud} error does not name its cloud: {:?}",
        error.message
    );
}

/// A page token as a ListSnapshots/ListVolumes `starting_token`: decoded, and the cursor it
/// carries read by every backend's cursor parser. Answers the decoded cursor.
pub fn page_token(data: &[u8]) -> crate::error::Result<Option<String>> {
    // The proto field is a string: gRPC hands over valid UTF-8 only.
    let text = String::from_utf8_lossy(data);
    let decoded = token::decode(&text);
    match &decoded {
        Ok(None) => assert!(text.is_empty(), "a non-empty token decoded to no cursor"),
        Ok(Some(cursor)) => {
            assert!(!cursor.is_empty(), "a token decoded to an empty cursor");
            let again = token::decode(&token::encode(cursor)).expect("own token decodes");
            assert_eq!(again.as_deref(), Some(cursor.as_str()), "cursor round trip");
            cursors(cursor);
        }
        Err(e) => {
            assert_eq!(e.code(), tonic::Code::Aborted, "bad token: {e}");
            assert!(e.to_string().starts_with("starting_token:"), "{e}");
        }
    }
    // Any cursor this driver wraps comes back unchanged.
    if !text.is_empty() {
        let own = token::decode(&token::encode(&text)).expect("own token decodes");
        assert_eq!(own.as_deref(), Some(&*text), "encode/decode round trip");
    }
    decoded
}

/// Every backend's reading of a cursor taken from a token.
fn cursors(cursor: &str) {
    if let Some((_, rest)) = registry::split_cursor(cursor) {
        let rest = rest.unwrap_or_default();
        assert!(cursor.ends_with(&format!("/{rest}")), "{cursor:?}");
    }
    if let Err(e) = crate::backend::scp::check_cursor(Some(cursor)) {
        assert_eq!(e.kind, crate::backend::ErrorKind::InvalidCursor, "{e:?}");
    }
    let _ = crate::backend::softlayer::parse_all_cursor(cursor);
    let _ = crate::backend::softlayer::parse_offset_cursor(cursor);
    if crate::backend::cinder::plausible_id(cursor) {
        assert!(cursor.len() <= 64 && cursor.is_ascii(), "{cursor:?}");
    }
}

fn memory_registry(names: &[&str]) -> Registry {
    let instances = names
        .iter()
        .map(|name| Instance {
            name: (*name).to_owned(),
            backend: Arc::new(crate::backend::memory::MemoryBackend::new(None)),
        })
        .collect();
    Registry::new(instances, 0).expect("instances")
}

/// An id from a request (`volume_id`, `snapshot_id`, a content source): the local backend's
/// paths, the `<instance>:<id>` split of a multi-instance config, and each cloud's id check.
/// Answers how many of the readers accepted the id.
pub fn id(data: &[u8]) -> usize {
    static ONE: OnceLock<Registry> = OnceLock::new();
    static TWO: OnceLock<Registry> = OnceLock::new();
    let id = String::from_utf8_lossy(data);
    let mut accepted = 0;

    let layout = crate::backend::local::Layout::new("/data");
    for path in [
        layout.volume_image(&id),
        layout.snapshot_image(&id),
        layout.staged_marker(&id),
    ]
    .into_iter()
    .flatten()
    {
        accepted += 1;
        let components: Vec<_> = path.components().collect();
        assert_eq!(components.len(), 4, "{}", path.display());
        assert!(
            components
                .iter()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
            "{} leaves the data directory",
            path.display()
        );
        assert!(path.starts_with("/data"), "{}", path.display());
    }

    let one = ONE.get_or_init(|| memory_registry(&["only"]));
    assert_eq!(
        one.split(&id),
        Some((0, &*id)),
        "one instance: ids are the backend's"
    );
    let two = TWO.get_or_init(|| memory_registry(&["east", "west-2"]));
    if let Some((index, raw)) = two.split(&id) {
        accepted += 1;
        assert_eq!(two.qualify(index, raw), id, "split then qualify");
    }
    for index in 0..2 {
        let qualified = two.qualify(index, &id);
        assert_eq!(
            two.split(&qualified),
            Some((index, &*id)),
            "qualify then split"
        );
    }

    if crate::backend::cinder::plausible_id(&id) {
        accepted += 1;
        assert!(id.len() <= 64 && id.is_ascii(), "{id:?}");
    }
    if crate::backend::scp::check_cursor(Some(&id)).is_ok() {
        accepted += 1;
    }
    if crate::backend::softlayer::numeric(&id).is_some() {
        accepted += 1;
    }
    let segment = crate::backend::deltacloud::client::segment(&id);
    assert!(
        !segment.contains(['/', '?', '#']) && segment != "." && segment != "..",
        "{id:?} escapes its URL segment as {segment:?}"
    );
    accepted
}

/// A config file: the TOML document, then every instance's section (read and checked
/// without opening anything). Answers the sections, or the first error.
pub fn config(data: &[u8]) -> Result<Vec<Section>, ConfigError> {
    const FILE: &str = "fuzz.toml";
    // `FileConfig::load` refuses a file that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(Vec::new());
    };
    let checked = |e: ConfigError| {
        assert!(!e.key.is_empty(), "error without a key: {e}");
        assert!(e.to_string().starts_with("config fuzz.toml: "), "{e}");
        e
    };
    let config = FileConfig::parse(FILE, text).map_err(checked)?;
    assert!(!config.backends.is_empty());
    let mut sections = Vec::new();
    for (name, table) in &config.backends {
        let section = registry::parse_section(FILE, name, table).map_err(checked);
        if let Err(e) = &section {
            assert!(e.key.starts_with(&format!("backends.{name}")), "{e}");
        }
        sections.push(section?);
    }
    Ok(sections)
}

fn cinder_backends() -> &'static [crate::backend::cinder::CinderBackend; 2] {
    static BACKENDS: OnceLock<[crate::backend::cinder::CinderBackend; 2]> = OnceLock::new();
    BACKENDS.get_or_init(|| {
        let build = |extra: &str| {
            let text = format!(
                "type = \"cinder\"\nauth_type = \"noauth\"\n\
                 endpoint = \"http://127.0.0.1:9/v3/p\"\nproject_id = \"p\"\n{extra}"
            );
            let table: toml::Table = toml::from_str(&text).expect("toml");
            let Section::Cinder(config) =
                registry::parse_section("fuzz.toml", "cinder", &table).expect("section")
            else {
                unreachable!("type is cinder")
            };
            crate::backend::cinder::CinderBackend::new(*config, Some("fuzz".into()))
                .expect("backend")
        };
        [build(""), build("dialect = \"v1\"")]
    })
}

/// A Cinder answer body (JSON): as a success answer read into a snapshot, a volume and a page
/// of each, in the v3 and v1 dialects; and as an error answer with several statuses.
pub fn cinder(data: &[u8]) -> Parsed {
    use crate::backend::cinder::{Kind, client, error, page_of};
    let mut parsed = Parsed::default();
    for status in ERROR_STATUSES {
        check_error("cinder", &error::classify("fuzz", status, data));
    }
    let answer = match client::read_answer("fuzz", 200, data) {
        Ok(answer) => answer,
        Err(e) => {
            check_error("cinder", &e);
            return parsed;
        }
    };
    let body = &answer.body;
    for backend in cinder_backends() {
        parsed
            .snapshots
            .extend(backend.snapshot_of(&body["snapshot"]).ok());
        parsed
            .volumes
            .extend(backend.volume_of(&body["volume"]).ok());
        for max_entries in [1, 1000] {
            let page = page_of(Kind::Snapshot, body, max_entries);
            assert!(page.items.len() <= max_entries);
            for item in &page.items {
                parsed.snapshots.extend(backend.snapshot_of(item).ok());
            }
            let page = page_of(Kind::Volume, body, max_entries);
            assert!(page.items.len() <= max_entries);
            for item in &page.items {
                parsed.volumes.extend(backend.volume_of(item).ok());
            }
        }
    }
    parsed
}

fn scp_backend() -> &'static crate::backend::scp::ScpBackend {
    static BACKEND: OnceLock<crate::backend::scp::ScpBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let config: crate::backend::scp::ScpConfig = toml::from_str(
            "endpoint = \"http://127.0.0.1:9\"\naccess_key = \"a\"\nsecret_key = \"s\"",
        )
        .expect("toml");
        crate::backend::scp::ScpBackend::new(
            config,
            Some("fuzz".into()),
            crate::backend::scp::time::Date::today(),
        )
        .expect("backend")
    })
}

/// An SCP answer body (JSON): a snapshot and a volume detail (strict, as get and create
/// read them, and lenient, as lists do), a page of each, and the error of several statuses.
pub fn scp(data: &[u8]) -> Parsed {
    use crate::backend::scp::client::{
        self, Answer, SnapshotDetail, SnapshotList, VolumeDetail, VolumeList,
    };
    use crate::backend::scp::{error, page_of};
    let backend = scp_backend();
    let mut parsed = Parsed::default();
    for status in ERROR_STATUSES {
        check_error("scp", &error::from_status("fuzz", status, data));
    }
    let answer = Answer {
        status: 200,
        body: data.to_vec(),
        request_id: None,
    };
    if let Ok(detail) = client::parse::<SnapshotDetail>("fuzz", &answer) {
        parsed
            .snapshots
            .extend(backend.snapshot_from(detail.clone(), true).ok());
        parsed
            .snapshots
            .extend(backend.snapshot_from(detail, false).ok());
    }
    if let Ok(detail) = client::parse::<VolumeDetail>("fuzz", &answer) {
        parsed
            .volumes
            .extend(backend.volume_from(detail.clone(), true).ok());
        parsed
            .volumes
            .extend(backend.volume_from(detail, false).ok());
    }
    for max_entries in [1, 1000] {
        if let Ok(list) = client::parse::<SnapshotList>("fuzz", &answer) {
            let items: Vec<_> = list
                .snapshots
                .into_iter()
                .filter_map(|s| backend.snapshot_from(s, false).ok())
                .collect();
            let page = page_of(items, max_entries, |s| s.id.to_string());
            assert!(page.items.len() <= max_entries);
            parsed.snapshots.extend(page.items);
        }
        if let Ok(list) = client::parse::<VolumeList>("fuzz", &answer) {
            let items: Vec<_> = list
                .volumes
                .into_iter()
                .filter_map(|v| backend.volume_from(v, false).ok())
                .collect();
            let page = page_of(items, max_entries, |v| v.id.to_string());
            assert!(page.items.len() <= max_entries);
            parsed.volumes.extend(page.items);
        }
    }
    parsed
}

fn softlayer_backend() -> &'static crate::backend::softlayer::SoftLayerBackend {
    static BACKEND: OnceLock<crate::backend::softlayer::SoftLayerBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let config: crate::backend::softlayer::SoftLayerConfig =
            toml::from_str("username = \"u\"\napi_key = \"k\"").expect("toml");
        crate::backend::softlayer::SoftLayerBackend::new(&config, Some("fuzz".into()))
            .expect("backend")
    })
}

/// A SoftLayer answer body (JSON): one storage object (a snapshot or a volume), a list of
/// them with their snapshots (the name scan), and the error of several statuses.
pub fn softlayer(data: &[u8]) -> Parsed {
    use crate::backend::softlayer::client::Storage;
    use crate::backend::softlayer::{SoftLayerBackend, error};
    let backend = softlayer_backend();
    let mut parsed = Parsed::default();
    for status in ERROR_STATUSES {
        check_error("softlayer", &error::classify("fuzz", status, data));
    }
    if let Ok(storage) = crate::http::parse_json::<Storage>("softlayer", "fuzz", data) {
        parsed.snapshots.extend(backend.snapshot_of(&storage, None));
        parsed.volumes.extend(SoftLayerBackend::volume_of(&storage));
    }
    if let Ok(list) = crate::http::parse_json::<Vec<Storage>>("softlayer", "fuzz", data) {
        for volume in &list {
            parsed.volumes.extend(SoftLayerBackend::volume_of(volume));
            for snapshot in volume.snapshots.iter().flatten() {
                parsed
                    .snapshots
                    .extend(backend.snapshot_of(snapshot, Some(volume.id)));
            }
        }
    }
    parsed
}

fn deltacloud_backend() -> &'static crate::backend::deltacloud::DeltacloudBackend {
    static BACKEND: OnceLock<crate::backend::deltacloud::DeltacloudBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let config: crate::backend::deltacloud::DeltacloudConfig = toml::from_str(
            "endpoint = \"http://127.0.0.1:9/api\"\nusername = \"u\"\npassword = \"p\"",
        )
        .expect("toml");
        crate::backend::deltacloud::DeltacloudBackend::new(&config, Some("fuzz".into()))
            .expect("backend")
    })
}

/// A Deltacloud answer body: as XML (the entry point, a volume, the volume collection, a
/// created snapshot), as JSON (a snapshot, the snapshot collection), each collection paged,
/// and as an XML or JSON error document with several statuses.
pub fn deltacloud(data: &[u8]) -> Parsed {
    use crate::backend::PageRequest;
    use crate::backend::deltacloud::client::{
        DeltacloudClient as C, JsonSnapshotDoc, JsonSnapshotsDoc, XmlApi, XmlRealms, XmlSnapshot,
        XmlVolume, XmlVolumes,
    };
    use crate::backend::deltacloud::{DeltacloudBackend, error, page_by_id};
    let backend = deltacloud_backend();
    let mut parsed = Parsed::default();
    for status in ERROR_STATUSES {
        for content_type in ["application/xml", "application/json"] {
            check_error(
                "deltacloud",
                &error::classify("fuzz", status, content_type, data),
            );
        }
    }
    let first = PageRequest {
        cursor: None,
        max_entries: 1,
    };
    let _ = C::parse_xml::<XmlApi>("fuzz", data);
    let _ = C::parse_xml::<XmlRealms>("fuzz", data);
    if let Ok(v) = C::parse_xml::<XmlVolume>("fuzz", data) {
        parsed.volumes.push(DeltacloudBackend::volume_of(&v));
    }
    if let Ok(s) = C::parse_xml::<XmlSnapshot>("fuzz", data) {
        let location = format!("http://127.0.0.1:9/api/storage_snapshots/{}", s.id);
        // An id that is not one path segment cannot match its Location: refused, not taken.
        let checked =
            crate::backend::deltacloud::client::check_location("fuzz", Some(&location), &s.id);
        assert_eq!(
            checked.is_ok(),
            !s.id.is_empty() && !s.id.contains('/'),
            "{:?}",
            s.id
        );
    }
    if let Ok(list) = C::parse_xml::<XmlVolumes>("fuzz", data)
        && let Ok(items) = backend.capped("storage_volumes", list.items)
    {
        let volumes: Vec<_> = items
            .iter()
            .map(|v| (v.id.clone(), DeltacloudBackend::volume_of(v)))
            .collect();
        let page = page_by_id(volumes, &first).expect("no cursor");
        assert!(page.items.len() <= 1);
        parsed.volumes.extend(page.items);
    }
    if let Ok(doc) = crate::http::parse_json::<JsonSnapshotDoc>("deltacloud", "fuzz", data) {
        parsed
            .snapshots
            .push(backend.snapshot_of(&doc.storage_snapshot));
    }
    if let Ok(doc) = crate::http::parse_json::<JsonSnapshotsDoc>("deltacloud", "fuzz", data)
        && let Ok(items) = backend.capped("storage_snapshots", doc.storage_snapshots)
    {
        let snapshots: Vec<_> = items
            .iter()
            .map(|s| (s.id.clone(), backend.snapshot_of(s)))
            .collect();
        let page = page_by_id(snapshots, &first).expect("no cursor");
        assert!(page.items.len() <= 1);
        parsed.snapshots.extend(page.items);
    }
    parsed
}
