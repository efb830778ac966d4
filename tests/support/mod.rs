//! What the integration tests share (tests/README.md maps each test to what it proves). Here:
//! an in-process driver on a real unix socket and the generated CSI clients connected to it.
//! Beside it: `sim` starts the Python cloud simulators of tests/sims, `cinder_peer` the real
//! Keystone + Cinder (+ Nova) of tests/peers, `cluster` a real kube-apiserver + etcd, `cbt` the
//! block model the changed-block tests judge answers by.

#![allow(dead_code)]

pub mod cbt;
pub mod cinder_peer;
pub mod cluster;
pub mod sim;

use hyper_util::rt::TokioIo;
use snapcsi::cli::{self, Command};
use snapcsi::proto::controller_client::ControllerClient;
use snapcsi::proto::identity_client::IdentityClient;
use snapcsi::proto::node_client::NodeClient;
use std::path::{Path, PathBuf};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Uri};

/// A driver serving on a unix socket in a temporary directory.
pub struct Driver {
    dir: Option<tempfile::TempDir>,
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub channel: Channel,
}

impl Driver {
    /// Starts `snapcsi serve` in-process with `extra` flags (endpoint and data dir are set).
    pub async fn start(extra: &[&str]) -> Driver {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, extra).await
    }

    /// Like [`Driver::start`] but in a given directory (its `data` subdirectory is the data dir).
    pub async fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Driver {
        let socket = dir.path().join("csi.sock");
        let data = dir.path().join("data");
        let endpoint = format!("unix://{}", socket.display());
        let mut args = vec![
            "snapcsi".to_owned(),
            "serve".to_owned(),
            "--endpoint".to_owned(),
            endpoint,
            "--data-dir".to_owned(),
            data.display().to_string(),
            "--node-id".to_owned(),
            "test-node".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let Command::Serve(serve) = cli::parse_args(args).expect("valid flags").command else {
            panic!("serve expected");
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            snapcsi::server::serve(serve, shutdown)
                .await
                .expect("serve");
        });
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let channel = connect(&socket).await;
        Driver {
            dir: Some(dir),
            socket,
            stop: Some(stop),
            task: Some(task),
            channel,
        }
    }

    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }

    /// A path inside the driver's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.as_ref().expect("running").path().join(name)
    }

    /// Stops the server and waits for it (keeps the directory).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.dir.take().expect("running")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A gRPC channel over a unix socket.
pub async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://localhost")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect to the driver socket")
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// For the tests marked `#[ignore = "needs root ..."]`: asked for with `--ignored` but not
/// root is a failure that says so, not a pass.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (loop devices and mounts): run it as root"
    );
}

/// Unmounts everything under a directory and detaches loop devices of images under it, even
/// when a test panics half way (a leaked mount or loop device outlives the test process).
pub struct NodeCleanup(pub PathBuf);

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        release_under(&self.0);
    }
}

/// Unmounts everything mounted under `prefix` (deepest first), detaches the loop devices whose
/// backing file is under it, then unmounts what those devices kept busy (lazily if it still
/// is). The teardown of every root test that mounts.
pub fn release_under(prefix: &Path) {
    let prefix = prefix.display().to_string();
    let points = || -> Vec<String> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut p: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        p.sort_by_key(|p| std::cmp::Reverse(p.len()));
        p
    };
    let umount = |p: &str| {
        std::process::Command::new("umount")
            .arg(p)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // Published targets first; then the volumes' loop devices (their images may live on a
    // scratch file system, which stays busy while they are attached); then the rest.
    for p in points() {
        umount(&p);
    }
    let listing = std::process::Command::new("losetup")
        .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in listing.lines() {
        let mut words = line.split_whitespace();
        if let (Some(dev), Some(file)) = (words.next(), words.next())
            && file.starts_with(&prefix)
        {
            let _ = std::process::Command::new("losetup")
                .args(["-d", dev])
                .output();
        }
    }
    for p in points() {
        if !umount(&p) {
            eprintln!("teardown: {p} busy; detaching it lazily");
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&p)
                .output();
        }
    }
}

/// Waits up to 10 s for `done()` and answers whether it came true. The local backend sweeps
/// orphan images in the background after it starts: a test that checks the sweep's outcome
/// waits with this first, then asserts as usual.
pub async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done()
}
