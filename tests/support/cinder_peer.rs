//! Test helpers of tests/cinder.rs and tests/crash.rs: the real Cinder peer, a driver as a
//! separate process (so it can be killed with SIGKILL) and an HTTP relay that holds back
//! Cinder's answer to the first snapshot create.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn require_peers() -> bool {
    std::env::var("SNAPCSI_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// A started real Cinder (tests/peers/cinder/cinder-peer.sh) (and maybe Keystone), or the
/// whole cloud of tests/peers/nova/nova-peer.sh; stopped on drop.
pub struct Peer {
    dir: Option<tempfile::TempDir>,
    env: BTreeMap<String, String>,
    script: &'static str,
}

impl Peer {
    /// Starts a peer with `vars` (FAKE_DELAY, KEYSTONE). `None`: skipped (reason printed).
    pub fn start(vars: &[(&str, &str)]) -> Option<Peer> {
        Self::start_script("tests/peers/cinder/cinder-peer.sh", vars)
    }

    /// A peer already started by `script start DIR` (to iterate on a test without starting
    /// the cloud each time); left running.
    pub fn existing(dir: &Path, script: &'static str) -> Peer {
        Peer {
            dir: None,
            env: read_env(&dir.join("peer.env")),
            script,
        }
    }

    /// Starts the peer of `script` (relative to the crate root).
    pub fn start_script(script: &'static str, vars: &[(&str, &str)]) -> Option<Peer> {
        let dir = tempfile::Builder::new()
            .prefix("snapcsi-peer-")
            .tempdir()
            .expect("tempdir");
        let script_path = root().join(script);
        let script_name = script;
        let script = script_path;
        let mut command = Command::new(&script);
        command.arg("start").arg(dir.path());
        for (k, v) in vars {
            command.env(k, v);
        }
        let output = command.output();
        let ok = matches!(&output, Ok(o) if o.status.success());
        if !ok {
            let why = match &output {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            let _ = Command::new(&script).arg("stop").arg(dir.path()).status();
            if require_peers() {
                panic!("SNAPCSI_REQUIRE_PEERS=1 but the Cinder peer did not start:\n{why}");
            }
            eprintln!("SKIPPED: the Cinder peer did not start:\n{why}");
            return None;
        }
        let env = read_env(&dir.path().join("peer.env"));
        Some(Peer {
            dir: Some(dir),
            env,
            script: script_name,
        })
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("peer.env has no {key}"))
    }

    /// A noauth v3 config of this peer.
    pub fn noauth_toml(&self) -> String {
        format!(
            "type = \"cinder\"\nauth_type = \"noauth\"\nendpoint = \"{}/v3/{{project_id}}\"\n\
             project_id = \"{}\"\n[http]\nmax_attempts = 2\n",
            self.get("CINDER_URL"),
            self.get("CINDER_PROJECT")
        )
    }
    /// How many objects of `collection` ("snapshots" or "volumes") named `name` Cinder
    /// has, in any state, by its own name filter.
    pub async fn count_named(&self, collection: &str, name: &str) -> usize {
        let project = self.get("CINDER_PROJECT");
        let url = format!(
            "{}/v3/{project}/{collection}/detail?name={name}",
            self.get("CINDER_URL")
        );
        let body: serde_json::Value = reqwest::Client::new()
            .get(url)
            .header("X-Auth-Token", format!("admin:{project}"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        body[collection].as_array().map_or(0, Vec::len)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new(root().join(self.script))
                .arg("stop")
                .arg(dir.path())
                .status();
        }
    }
}

fn read_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .expect("peer.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `snapcsi serve` in its own process.
pub struct DriverProcess {
    child: Option<Child>,
    pub socket: PathBuf,
}

impl DriverProcess {
    /// Starts the driver binary with `config`; waits for its socket.
    pub async fn start(dir: &Path, config: &Path, tag: &str) -> DriverProcess {
        let socket = dir.join(format!("{tag}.sock"));
        let log = std::fs::File::create(dir.join(format!("{tag}.log"))).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_snapcsi"))
            .arg("serve")
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-dir")
            .arg(dir.join(format!("data-{tag}")))
            .arg("--node-id")
            .arg("restart-test")
            .arg("--mode")
            .arg("controller")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn the driver");
        for _ in 0..300 {
            if socket.exists() {
                return DriverProcess {
                    child: Some(child),
                    socket,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("driver socket {} never appeared", socket.display());
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Relays HTTP/1.1 to `upstream`; the answer to the first `POST …/snapshots` is held back
/// (the request itself reaches Cinder) until [`HoldingProxy::release`].
pub struct HoldingProxy {
    port: u16,
    state: Arc<State>,
}

struct State {
    upstream: String,
    armed: AtomicBool,
    created: Notify,
    released: Notify,
    seen: AtomicBool,
}

impl HoldingProxy {
    /// Listens on 127.0.0.1 (a free port).
    pub async fn start(upstream: &str) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            armed: AtomicBool::new(true),
            created: Notify::new(),
            released: Notify::new(),
            seen: AtomicBool::new(false),
        });
        let s = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(relay(stream, Arc::clone(&s)));
            }
        });
        HoldingProxy { port, state }
    }

    /// The relay's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the held create reached Cinder.
    pub async fn wait_for_create(&self) {
        if self.state.seen.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::timeout(Duration::from_secs(30), self.state.created.notified())
            .await
            .expect("the driver never sent its snapshot create");
    }

    /// Lets held answers go (their connection is gone by then) and relays the rest normally.
    pub fn release(&self) {
        self.state.released.notify_waiters();
    }
}

async fn relay(stream: TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let client = reqwest::Client::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_owned(), path.to_owned());
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_owned();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().unwrap_or(0);
                } else if !["host", "connection"]
                    .iter()
                    .any(|x| k.eq_ignore_ascii_case(x))
                {
                    headers.push((k, v));
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return;
        };
        let mut request = client.request(m, format!("{}{path}", state.upstream));
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let Ok(answer) = request.body(body).send().await else {
            return;
        };
        let status = answer.status();
        let content_type = answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let bytes = answer.bytes().await.unwrap_or_default();
        let create = method == "POST" && path.trim_end_matches('/').ends_with("/snapshots");
        if create && state.armed.swap(false, Ordering::SeqCst) {
            state.seen.store(true, Ordering::SeqCst);
            state.created.notify_one();
            // Cinder made the snapshot; the driver never hears about it.
            state.released.notified().await;
            return;
        }
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("OK"),
            bytes.len()
        );
        if write.write_all(head.as_bytes()).await.is_err() || write.write_all(&bytes).await.is_err()
        {
            return;
        }
    }
}
