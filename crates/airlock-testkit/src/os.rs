//! Ports, temp dirs, and running commands as a service user.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

/// A TCP port on 127.0.0.1 nobody listens on right now (bound, then
/// closed): for a server a test starts, or for a store that is down.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temp dir named `<prefix>…`, removed on drop; the name says which
/// fixture left it should the process be killed.
pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// A temp dir that `user` owns when the tests run as root (a server's data
/// directory and socket go in it).
pub(crate) fn temp_dir_for(user: &str, prefix: &str) -> TempDir {
    let dir = temp_dir(prefix);
    chown(user, dir.path());
    dir
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `cmd args…`, through `runuser -u user` when the tests run as root.
pub(crate) fn as_user(user: &str, cmd: &str, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--", cmd]).args(args);
        c
    } else {
        let mut c = Command::new(cmd);
        c.args(args);
        c
    }
}

/// Gives `path` and everything under it to `user` (its group of the same
/// name) when the tests run as root.
pub(crate) fn chown(user: &str, path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:{user}"))
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "chown -R {user} {}", path.display());
    }
}
