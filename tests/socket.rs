//! The unix socket: created with the configured mode (0660 by default), a stale socket file
//! (nobody listening) is replaced, a live one or a file that is not a socket is never touched.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_snapcsi");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(socket: &Path, extra: &[&str]) -> Server {
    Server(
        Command::new(BIN)
            .args([
                "serve",
                "--backend",
                "memory",
                "--mode",
                "controller",
                "--endpoint",
            ])
            .arg(format!("unix://{}", socket.display()))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start snapcsi"),
    )
}

fn wait_listening(socket: &Path) {
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} is not accepting connections", socket.display());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn socket_mode_stale_and_live_sockets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("csi.sock");

    let first = serve(&socket, &[]);
    wait_listening(&socket);
    assert_eq!(mode(&socket), 0o660, "default socket mode");

    // A second driver on a live socket refuses to start and leaves it alone.
    let second = Command::new(BIN)
        .args([
            "serve",
            "--backend",
            "memory",
            "--mode",
            "controller",
            "--endpoint",
        ])
        .arg(format!("unix://{}", socket.display()))
        .output()
        .expect("run second");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another process is serving"));
    wait_listening(&socket);

    // Killed without cleanup: the socket file stays, stale; the next start replaces it.
    drop(first);
    assert!(
        std::fs::symlink_metadata(&socket)
            .expect("stale")
            .file_type()
            .is_socket()
    );
    let _third = serve(&socket, &["--socket-mode", "600"]);
    wait_listening(&socket);
    assert_eq!(mode(&socket), 0o600, "configured socket mode");

    // A regular file at the socket path is never replaced.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").expect("file");
    let refused = Command::new(BIN)
        .args([
            "serve",
            "--backend",
            "memory",
            "--mode",
            "controller",
            "--endpoint",
        ])
        .arg(format!("unix://{}", file.display()))
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read(&file).expect("file kept"), b"keep me");
}
