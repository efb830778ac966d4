//! A throwaway Kubernetes control plane for tests: the real etcd and kube-apiserver (the
//! binaries tests/k8s/build-tools.sh builds and caches), on free ports of 127.0.0.1, in a
//! temporary directory, with a token-authenticated admin and a kube Client for it.
//!
//! Binaries come from `ETCD` / `KUBE_APISERVER` / `KUBECTL` / `SNAPSHOT_CRDS` (what
//! build-tools.sh prints) or from their places in ~/.cache/snapcsi. When they are missing the
//! caller is told to skip, unless `SNAPCSI_REQUIRE_PEERS` is set (CI), where that is a failure.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const K8S_VERSION: &str = "v1.36.3";
const ETCD_VERSION: &str = "v3.6.16";
const SNAPSHOTTER_VERSION: &str = "v8.6.0";

/// A running etcd + kube-apiserver, stopped (SIGKILL) and removed on drop.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The kubectl binary.
    pub kubectl: PathBuf,
    /// Directory of the snapshot.storage.k8s.io CRDs.
    pub snapshot_crds: PathBuf,
}

fn cache() -> PathBuf {
    if let Ok(dir) = std::env::var("SNAPCSI_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or("/root".into())).join(".cache")
        });
    home.join("snapcsi")
}

fn tool(env: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(env).map(PathBuf::from).unwrap_or(default)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl ControlPlane {
    /// Starts the control plane, or returns `None` (after saying why, loudly) when its
    /// binaries are missing and `SNAPCSI_REQUIRE_PEERS` is unset.
    pub fn start() -> Option<ControlPlane> {
        let cache = cache();
        let k8s = cache.join("k8s");
        let etcd = tool("ETCD", k8s.join(format!("etcd-{ETCD_VERSION}/etcd")));
        let apiserver = tool(
            "KUBE_APISERVER",
            k8s.join(format!("kubernetes-{K8S_VERSION}/kube-apiserver")),
        );
        let kubectl = tool(
            "KUBECTL",
            k8s.join(format!("kubernetes-{K8S_VERSION}/kubectl")),
        );
        let snapshot_crds = tool(
            "SNAPSHOT_CRDS",
            cache.join(format!(
                "go/mod/github.com/kubernetes-csi/external-snapshotter/client/v8@{SNAPSHOTTER_VERSION}/config/crd"
            )),
        );
        let missing: Vec<&Path> = [&etcd, &apiserver, &kubectl, &snapshot_crds]
            .into_iter()
            .filter(|p| !p.exists())
            .map(PathBuf::as_path)
            .collect();
        if !missing.is_empty() {
            let message = format!(
                "the Kubernetes control plane is not built ({missing:?} missing; run tests/k8s/build-tools.sh)"
            );
            if std::env::var_os("SNAPCSI_REQUIRE_PEERS").is_some() {
                panic!("{message}, and SNAPCSI_REQUIRE_PEERS is set");
            }
            eprintln!("\n*** SKIPPED: {message} ***\n");
            return None;
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let path = &dir.path().to_owned();
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(path.join("sa.key"))
            .arg("2048")
            .stderr(Stdio::null()));
        let token = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(
            path.join("tokens.csv"),
            format!("{token},test-admin,test-admin,system:masters\n"),
        )
        .expect("tokens.csv");
        let kubeconfig = path.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: t\n  context: {{cluster: t, user: admin}}\ncurrent-context: t\n"
            ),
        )
        .expect("kubeconfig");

        let log =
            |name: &str| std::fs::File::create(path.join(format!("{name}.log"))).expect("log file");
        let spawn = |cmd: &mut Command, name: &str| -> Child {
            cmd.stdout(log(name))
                .stderr(log(name))
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}"))
        };
        let mut plane = ControlPlane {
            children: Vec::new(),
            kubeconfig,
            kubectl,
            snapshot_crds,
            dir,
        };
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        plane.children.push(spawn(
            Command::new(&etcd)
                .args(["--name", "t", "--data-dir"])
                .arg(path.join("etcd"))
                .args([
                    "--listen-client-urls",
                    &etcd_url,
                    "--advertise-client-urls",
                    &etcd_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &format!("t={peer_url}")]),
            "etcd",
        ));
        plane.children.push(spawn(
            Command::new(&apiserver)
                .args(["--etcd-servers", &etcd_url])
                .args([
                    "--bind-address",
                    "127.0.0.1",
                    "--advertise-address",
                    "127.0.0.1",
                ])
                .args(["--secure-port", &api_port.to_string()])
                .arg("--cert-dir")
                .arg(path.join("certs"))
                .arg("--token-auth-file")
                .arg(path.join("tokens.csv"))
                .args(["--authorization-mode", "RBAC"])
                .args(["--service-account-issuer", "https://kubernetes.default.svc"])
                .arg("--service-account-key-file")
                .arg(path.join("sa.key"))
                .arg("--service-account-signing-key-file")
                .arg(path.join("sa.key"))
                .args(["--service-cluster-ip-range", "10.96.0.0/24"]),
            "kube-apiserver",
        ));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = plane
                .kubectl()
                .args(["get", "--raw", "/readyz"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(path.join("kube-apiserver.log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
                panic!(
                    "kube-apiserver did not become ready in 120 s; last log lines (reversed):\n{tail}"
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(plane)
    }

    /// A kubectl command for this cluster.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// `kubectl apply -f` each path, then waits until every CRD is established.
    pub fn apply(&self, paths: &[&Path]) {
        for p in paths {
            run(self.kubectl().args(["apply", "-f"]).arg(p));
        }
        run(self.kubectl().args([
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd",
            "--all",
        ]));
    }

    /// A kube Client authenticated as the admin.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The API server drains for a long time on SIGTERM; nothing here needs a clean stop.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
