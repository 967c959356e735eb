//! The NATS cluster configurations `deploy/` ships are checked with the `nats-server` that is
//! installed (`nats-server -c FILE -t`), as an operator would before starting a node.
//!
//! - `deploy/nats/nats-{1,2,3}.conf` (nats-server 2.9: R3 replication, fsync on an interval)
//!   must be valid.
//! - `deploy/nats/sync-always/nats-{1,2,3}.conf` (2.10 and later: `sync_interval: always`)
//!   must be valid on 2.10 or later; on 2.9 the only thing the server may refuse in them is
//!   the `sync_interval` it does not know yet, so everything else in them is checked too.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats")
}

/// `nats-server -c file -t`: whether it passed, and what it printed.
fn check(file: &Path) -> (bool, String) {
    let output = Command::new(closeloop_testkit::nats_server_binary())
        .arg("-c")
        .arg(file)
        .arg("-t")
        .output()
        .expect("run nats-server -t (install it with: apt-get install nats-server)");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The installed server's (major, minor) version.
fn server_version() -> (u32, u32) {
    let output = Command::new(closeloop_testkit::nats_server_binary())
        .arg("--version")
        .output()
        .expect("run nats-server --version");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    // "nats-server: v2.9.10"
    let version = text
        .split('v')
        .next_back()
        .expect("a version")
        .trim()
        .to_owned();
    let mut parts = version.split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
        _ => panic!("cannot read the nats-server version from {text:?}"),
    }
}

#[test]
fn the_nats_cluster_configs_for_2_9_are_valid() {
    for node in 1..=3 {
        let file = deploy_dir().join(format!("nats-{node}.conf"));
        let (passed, printed) = check(&file);
        assert!(passed, "{}: {printed}", file.display());
    }
}

#[test]
fn the_nats_cluster_configs_with_an_fsync_per_message_differ_only_in_it() {
    let newer = server_version() >= (2, 10);
    for node in 1..=3 {
        let file = deploy_dir().join(format!("sync-always/nats-{node}.conf"));
        let text = std::fs::read_to_string(&file).expect("read the config");
        assert!(
            text.lines()
                .any(|line| line.trim() == "sync_interval: always"),
            "{} sets no sync_interval: always",
            file.display()
        );
        let (passed, printed) = check(&file);
        if newer {
            assert!(passed, "{}: {printed}", file.display());
        } else {
            assert!(
                !passed && printed.contains("unknown field \"sync_interval\""),
                "{}: on nats-server 2.9 only sync_interval may be refused, but: {printed}",
                file.display()
            );
            // Without that one line, the rest must be a valid 2.9 configuration.
            let without: String = text
                .lines()
                .filter(|line| line.trim() != "sync_interval: always")
                .map(|line| format!("{line}\n"))
                .collect();
            let trimmed = tempfile::NamedTempFile::new().expect("temp file");
            std::fs::write(trimmed.path(), without).expect("write the config");
            let (passed, printed) = check(trimmed.path());
            assert!(
                passed,
                "{} without sync_interval: {printed}",
                file.display()
            );
        }
    }
}
