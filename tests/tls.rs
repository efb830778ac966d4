//! TLS towards a cloud: certificate verification is on by default, a custom CA bundle works,
//! and `insecure = true` is the only way around verification. A self-signed CA (made here with
//! the openssl command) signs the certificate of the SCP simulator served over HTTPS.

mod support;
use support::sim;

use snapcsi::backend::ErrorKind;
use snapcsi::backend::registry::build_instance;
use snapcsi::config::FileConfig;
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=snapcsi test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
}

async fn health(port: u16, http: &str) -> Result<(), snapcsi::backend::BackendError> {
    let text = format!(
        "[backends.tls]\ntype = \"scp\"\nendpoint = \"https://127.0.0.1:{port}\"\n\
         access_key = \"tls-ak\"\nsecret_key = \"tls-sk\"\n[backends.tls.http]\nmax_attempts = 1\n{http}\n"
    );
    let config = FileConfig::parse("tls.toml", &text).expect("config");
    let backend =
        build_instance("tls.toml", &config, "tls", &config.backends["tls"]).expect("backend");
    backend.health().await
}

#[tokio::test]
async fn verification_is_on_by_default_and_a_ca_bundle_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_pki(dir.path());
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    let Some(sim) = sim::Sim::start(
        "scp.py",
        &[
            "--credential",
            "tls-ak:tls-sk",
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    ) else {
        return;
    };

    let refused = health(sim.port, "")
        .await
        .expect_err("an unknown CA must be refused");
    assert_eq!(refused.kind, ErrorKind::Unavailable, "{refused:?}");

    let ca = dir.path().join("ca.pem");
    health(sim.port, &format!("ca_bundle = \"{}\"", ca.display()))
        .await
        .expect("the CA bundle makes the certificate trusted");

    health(sim.port, "insecure = true")
        .await
        .expect("insecure skips verification");
}
