//! The deployment artifacts (`deploy/`): the Kubernetes manifests rendered
//! with kustomize and validated against the Kubernetes schemas, their
//! security settings, the Compose file against the Compose specification,
//! the Dockerfile's non-root static image, and every shipped policy through
//! `airlock policy check` (`deploy/check.py` does the checking).

use std::process::Command;

#[test]
fn deploy_manifests_render_validate_and_ship_valid_policies() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new("python3")
        .arg("deploy/check.py")
        .current_dir(root)
        .env("AIRLOCK", env!("CARGO_BIN_EXE_airlock"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("check:"))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert!(summary.contains(" 0 failed"), "{summary}");
    // Nothing that should run here was skipped but the Helm render (no
    // helm on this machine).
    let skipped: Vec<&str> = stdout.lines().filter(|l| l.starts_with("skip")).collect();
    assert!(
        skipped.iter().all(|l| l.contains("helm")),
        "{skipped:?}\n{stdout}"
    );
}
