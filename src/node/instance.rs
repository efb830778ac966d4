//! Which cloud server this node is. ControllerPublishVolume attaches a volume to the Nova
//! server whose id NodeGetInfo reported, so a node serving cloud disks reports its server id:
//! `--node-id` when that is a server id (a UUID), else what the instance's metadata says, from
//! the metadata service (`<url>/openstack/latest/meta_data.json`) or from a config drive
//! (the same file on the ISO labelled `config-2`). Both are optional in Nova; when neither
//! answers, start-up fails with an error naming both.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The metadata service's link-local address (Nova's and every OpenStack cloud's).
pub const METADATA_URL: &str = "http://169.254.169.254";

/// The metadata document's path, relative to the service or the config drive's root.
const META_DATA: &str = "openstack/latest/meta_data.json";

/// This node as a cloud server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The server id (Nova's `uuid`).
    pub server_id: String,
    /// Its availability zone, when the metadata says.
    pub zone: Option<String>,
}

/// Whether `id` has the form of a Nova server id (a UUID: 8-4-4-4-12 hexadecimal digits).
pub fn is_server_id(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Reads `meta_data.json` (`uuid`, `availability_zone`).
pub fn parse_meta_data(bytes: &[u8]) -> Result<Instance, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("meta_data.json is not JSON: {e}"))?;
    let server_id = value["uuid"]
        .as_str()
        .filter(|u| is_server_id(u))
        .ok_or("meta_data.json has no server uuid")?
        .to_owned();
    let zone = value["availability_zone"]
        .as_str()
        .filter(|z| !z.is_empty())
        .map(str::to_owned);
    Ok(Instance { server_id, zone })
}

/// The instance as the metadata service at `base` describes it.
pub async fn from_metadata_service(base: &str) -> Result<Instance, String> {
    let url = format!("{}/{META_DATA}", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let answer = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !answer.status().is_success() {
        return Err(format!("{url}: HTTP {}", answer.status().as_u16()));
    }
    let body = answer.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    parse_meta_data(&body).map_err(|e| format!("{url}: {e}"))
}

/// The instance as a config drive describes it: `dir` when given (a mounted config drive),
/// else the disk labelled `config-2`, mounted read-only for the read.
pub async fn from_config_drive(dir: Option<&Path>) -> Result<Instance, String> {
    if let Some(dir) = dir {
        return read_drive(dir).await;
    }
    let device = ["/dev/disk/by-label/config-2", "/dev/disk/by-label/CONFIG-2"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no disk labelled config-2")?;
    let mount_point =
        std::env::temp_dir().join(format!("snapcsi-config-drive-{}", std::process::id()));
    tokio::fs::create_dir_all(&mount_point)
        .await
        .map_err(|e| format!("mount point {}: {e}", mount_point.display()))?;
    // Nova writes config drives as ISO 9660 (or vfat when so configured).
    let mut mounted = Err(String::new());
    for fs in ["iso9660", "vfat"] {
        mounted = crate::node::mount::mount_fs(&device, &mount_point, fs, true, &[])
            .await
            .map_err(|e| e.to_string());
        if mounted.is_ok() {
            break;
        }
    }
    if let Err(e) = mounted {
        let _ = tokio::fs::remove_dir(&mount_point).await;
        return Err(e);
    }
    let read = read_drive(&mount_point).await;
    if let Err(e) = crate::node::mount::unmount(&mount_point).await {
        tracing::warn!(error = %e, "could not unmount the config drive");
    } else {
        let _ = tokio::fs::remove_dir(&mount_point).await;
    }
    read
}

async fn read_drive(dir: &Path) -> Result<Instance, String> {
    let path = dir.join(META_DATA);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    parse_meta_data(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The instance from the metadata service at `url`, else from the config drive.
pub async fn discover(url: &str, config_drive: Option<&Path>) -> Result<Instance, String> {
    let service = match from_metadata_service(url).await {
        Ok(found) => return Ok(found),
        Err(e) => e,
    };
    match from_config_drive(config_drive).await {
        Ok(found) => Ok(found),
        Err(drive) => Err(format!(
            "neither the metadata service nor a config drive answered (metadata service: \
             {service}; config drive: {drive})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_are_uuids() {
        assert!(is_server_id("6f74cbd3-a80b-4c73-bc6e-ee7684c49516"));
        assert!(!is_server_id("worker-1"));
        assert!(!is_server_id("6f74cbd3-a80b-4c73-bc6e-ee7684c4951"));
        assert!(!is_server_id("6f74cbd3-a80b-4c73-bc6e-ee7684c4951g"));
    }

    #[test]
    fn meta_data_is_read() {
        let found = parse_meta_data(
            br#"{"uuid": "6f74cbd3-a80b-4c73-bc6e-ee7684c49516", "availability_zone": "az1", "hostname": "w1"}"#,
        )
        .expect("parses");
        assert_eq!(found.server_id, "6f74cbd3-a80b-4c73-bc6e-ee7684c49516");
        assert_eq!(found.zone.as_deref(), Some("az1"));
        assert!(parse_meta_data(br#"{"hostname": "w1"}"#).is_err());
        assert!(parse_meta_data(b"<html>").is_err());
    }

    #[tokio::test]
    async fn metadata_service_then_config_drive() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 2048];
                let n = stream.read(&mut buffer).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let body = r#"{"uuid": "11111111-2222-3333-4444-555555555555", "availability_zone": "nova"}"#;
                let answer = if request.starts_with("GET /openstack/latest/meta_data.json ") {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let found = discover(&url, None).await.expect("metadata service");
        assert_eq!(found.server_id, "11111111-2222-3333-4444-555555555555");
        assert_eq!(found.zone.as_deref(), Some("nova"));

        // No metadata service (a closed port): the config drive answers.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        let drive = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(drive.path().join("openstack/latest")).expect("dirs");
        std::fs::write(
            drive.path().join(META_DATA),
            br#"{"uuid": "aaaaaaaa-2222-3333-4444-555555555555"}"#,
        )
        .expect("meta_data.json");
        let found = discover(&closed, Some(drive.path()))
            .await
            .expect("config drive");
        assert_eq!(found.server_id, "aaaaaaaa-2222-3333-4444-555555555555");
        assert_eq!(found.zone, None);

        // Neither: one error naming both.
        let empty = tempfile::tempdir().expect("tempdir");
        let error = discover(&closed, Some(empty.path()))
            .await
            .expect_err("nothing answers");
        assert!(
            error.contains("metadata service") && error.contains("config drive"),
            "{error}"
        );
    }
}
