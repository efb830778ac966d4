//! `snapcsi check-config`: the real binary on config files with good and bad backends. The
//! SCP simulator (tests/sims/scp.py) stands in for a cloud that authenticates.

mod support;
use support::sim;

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_snapcsi");

fn check(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapcsi.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn good_and_bad_backends_each_get_a_line() {
    let Some(sim) = sim::Sim::start("scp.py", &["--credential", "good-ak:good-sk"]) else {
        return;
    };
    let data = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("http://127.0.0.1:{}", sim.port);
    let good = format!(
        "default_backend = \"local\"\n\
         [backends.local]\ntype = \"local\"\ndata_dir = \"{}\"\n\
         [backends.scp]\ntype = \"scp\"\nendpoint = \"{endpoint}\"\naccess_key = \"good-ak\"\nsecret_key = \"good-sk\"\n",
        data.path().display()
    );
    let (code, out) = check(&good);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK      backend local (local)"), "{out}");
    assert!(
        out.contains("OK      backend scp (scp): api version virtualserver 1.3"),
        "{out}"
    );
    assert!(out.contains("snapshots"), "{out}");

    let bad = good.replace(
        "secret_key = \"good-sk\"",
        "secret_key = \"wrong-secret-value\"",
    );
    let (code, out) = check(&bad);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("OK      backend local"), "{out}");
    assert!(out.contains("PROBLEM backend scp (scp)"), "{out}");
    assert!(
        !out.contains("wrong-secret-value"),
        "a secret leaked: {out}"
    );

    let typo = good.replace("access_key", "acess_key");
    let (code, out) = check(&typo);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("PROBLEM backend scp (scp): config"), "{out}");
    assert!(out.contains("acess_key"), "the unknown key is named: {out}");

    let (code, out) = check("[backends]\n");
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("PROBLEM config "), "{out}");
}

/// Issue 15: Deltacloud's entry point answers without credentials, so a check that only read
/// it said OK for a refused password. The check makes one authenticated call.
#[test]
fn a_refused_deltacloud_password_is_a_problem() {
    let Some(sim) = sim::Sim::start(
        "deltacloud.py",
        &["--username", "dc-user", "--password", "dc-right-password"],
    ) else {
        return;
    };
    let config = |password: &str| {
        format!(
            "[backends.dc]\ntype = \"deltacloud\"\nendpoint = \"{}/api\"\n\
             username = \"dc-user\"\npassword = \"{password}\"\n",
            sim.base()
        )
    };
    let (code, out) = check(&config("dc-right-password"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK      backend dc (deltacloud)"), "{out}");
    let (code, out) = check(&config("dc-wrong-password"));
    assert_eq!(code, 1, "a refused password passed the check: {out}");
    assert!(out.contains("PROBLEM backend dc (deltacloud)"), "{out}");
    assert!(out.contains("401"), "{out}");
    assert!(!out.contains("dc-wrong-password"), "a secret leaked: {out}");
}
